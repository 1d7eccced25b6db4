//! Every configuration in `examples/configs/` passes `switchyard check` with exactly the
//! variables its header exports, and its header says how to run it.
//!
//! A file's header is its leading comment block. It exports each variable the file needs as
//! `#   export NAME='value'` and shows `switchyard serve --config examples/configs/<file>`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The examples docs/configuration.md lists; more may exist, and each is checked the same way.
const NAMED: &[&str] = &[
    "eventgrid-target.yaml",
    "sidecar.yaml",
    "fanout-filters.yaml",
    "nats-cluster.yaml",
    "sources.yaml",
    "delivery-control.yaml",
    "signed-webhooks.yaml",
    "schedules.yaml",
    "tour.yaml",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `*.yaml` file in `examples/configs/`, sorted by name.
fn example_files() -> Vec<PathBuf> {
    let dir = root().join("examples/configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// The leading comment block's lines, without their `#`.
fn header(text: &str) -> Vec<&str> {
    text.lines()
        .map_while(|line| line.strip_prefix('#'))
        .collect()
}

/// The `export NAME='value'` lines of a header, as (name, value).
fn exports(header: &[&str]) -> Vec<(String, String)> {
    header
        .iter()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .map(|assignment| {
            let (name, value) = assignment
                .split_once('=')
                .unwrap_or_else(|| panic!("`export {assignment}` has no `=`"));
            let value = value.trim_matches('\'');
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// The `${NAME}` references of `text` that have no `:-default`.
fn required_variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(inside, _)| inside))
        .filter(|inside| !inside.contains(":-"))
        .map(str::to_owned)
        .collect()
}

/// `switchyard check --config <path>` from the repository root, with only `vars` set.
fn check(path: &Path, vars: &[(String, String)]) -> Output {
    Command::new(BIN)
        .current_dir(root())
        .arg("check")
        .arg("--config")
        .arg(path.strip_prefix(root()).expect("under the repository"))
        .env_clear()
        .envs(vars.iter().map(|(name, value)| (name, value)))
        .output()
        .expect("run switchyard check")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_named_examples_exist() {
    let names: Vec<String> = example_files().iter().map(|p| file_name(p)).collect();
    assert!(!names.is_empty(), "examples/configs/ holds no *.yaml file");
    for named in NAMED {
        assert!(
            names.iter().any(|n| n == named),
            "examples/configs/{named} is missing (found {names:?})"
        );
    }
}

#[test]
fn every_example_passes_check_with_the_variables_its_header_exports() {
    let files = example_files();
    assert!(!files.is_empty(), "examples/configs/ holds no *.yaml file");
    for path in files {
        let name = file_name(&path);
        let text = std::fs::read_to_string(&path).expect("read example");
        let vars = exports(&header(&text));
        let out = check(&path, &vars);
        assert!(
            out.status.success(),
            "switchyard check --config examples/configs/{name} exited {:?}:\n{}",
            out.status.code(),
            stderr(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(": OK"), "{name}: {stdout}");
    }
}

#[test]
fn every_example_header_says_what_it_shows_and_how_to_run_it() {
    for path in example_files() {
        let name = file_name(&path);
        let text = std::fs::read_to_string(&path).expect("read example");
        let header = header(&text);
        assert!(
            header.len() >= 3,
            "{name}: starts with a comment saying what it shows and how to run it"
        );
        let run = format!("switchyard serve --config examples/configs/{name}");
        assert!(
            header.iter().any(|line| line.trim() == run),
            "{name}: the header shows `{run}`"
        );
        let exported: BTreeSet<String> = exports(&header).into_iter().map(|(n, _)| n).collect();
        let required = required_variables(&text);
        assert!(
            required.is_subset(&exported),
            "{name}: the header exports {exported:?} but the file needs {required:?}"
        );
    }
}

#[test]
fn without_its_variables_an_example_fails_check_naming_each() {
    let mut checked = 0;
    for path in example_files() {
        let name = file_name(&path);
        let text = std::fs::read_to_string(&path).expect("read example");
        let required = required_variables(&text);
        if required.is_empty() {
            continue;
        }
        let out = check(&path, &[]);
        assert_eq!(out.status.code(), Some(64), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        for var in &required {
            assert!(
                err.contains(&format!("environment variable {var} is not set")),
                "{name}: the error names {var}:\n{err}"
            );
        }
        checked += 1;
    }
    assert!(
        checked > 0,
        "some example takes its secrets from the environment"
    );
}
