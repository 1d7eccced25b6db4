//! Every example in `README.md` and `docs/*.md` is run or checked, so the documentation
//! cannot drift from the binary it describes.
//!
//! Fenced blocks and the HTML comment on the line before them (`docs/testing.md` says the
//! same for writers of the pages):
//!
//! - ```` ```yaml ````: a whole configuration; it must pass `switchyard check`. Each
//!   `${VAR}` it uses gets a placeholder, and every file it names under `/etc/switchyard/` is
//!   made here (certificates and keys issued by a test CA) and the path pointed at it.
//!   - `<!-- fragment -->`: part of one; each sink its routes name is defined as a `log`
//!     sink first.
//!   - `<!-- excerpt: PATH -->`: its lines must appear, in order and together, in `PATH`.
//! - ```` ```sh ````: run with `sh -e` in a scratch folder holding a copy of `routes.yaml`,
//!   the `switchyard` built for these tests first on the `PATH`; it must exit 0. Blocks that
//!   cannot run here are in [`NOT_RUN`] with the reason.
//!   - `<!-- synopsis -->`: the form of commands; each `--flag` must be in that command's
//!     `--help`.
//!   - `<!-- tour: STEP -->`: the README's tour, run by [`the_readme_tour_runs_as_written`]
//!     against daemons started here on ephemeral ports.
//!
//! Other fences (`jsonc`, plain text) show output and are not run. Relative links between
//! the pages must lead to a file, and `#anchor`s to a heading of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use crate::support::certs::TestCa;
use crate::support::process::{free_port, Daemon, BIN};
use crate::support::{wait_until, TestSink};

/// `sh` blocks that are not run, each with the reason: (page, first line of the block, why).
const NOT_RUN: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo run --release     # serves on 0.0.0.0:8080 with the default routes.yaml",
        "builds the project and runs the whole suite; the tour test serves the same \
         routes.yaml with the binary this suite built",
    ),
    (
        "docs/testing.md",
        "cargo test              # the whole suite",
        "it is this suite",
    ),
    (
        "docs/delivery.md",
        "cargo build --release --bin switchyard --example adaptive_bench",
        "a release build and a benchmark of about a minute, not a test",
    ),
    (
        "docs/performance.md",
        "cargo build --release --example saga_bench",
        "a release build and a measurement, not a test",
    ),
    (
        "docs/security.md",
        "az eventgrid event-subscription create --name orders-to-switchyard \\",
        "needs the Azure CLI and an Azure subscription",
    ),
    (
        "docs/security.md",
        "curl -i \"https://switchyard.example.com/events?aeg-sas-key=$EVENTGRID_WEBHOOK_KEY\" \\",
        "needs a deployment at a public name; tests/it/ingress.rs sends the same validation \
         event to a local daemon",
    ),
];

/// The tour's steps, in the README's order.
const TOUR: &[&str] = &[
    "start",
    "send",
    "archive",
    "serve-tour",
    "send-order",
    "watch",
    "dead-letters",
    "receiver",
    "replay",
    "delivered",
];

/// A fenced block of a page.
#[derive(Debug, Clone)]
struct Block {
    /// The page, relative to the repository root.
    page: String,
    /// Line of the opening fence (1-based).
    line: usize,
    /// The fence's info string (`yaml`, `sh`, …).
    lang: String,
    /// The text of the `<!-- … -->` comment on the line before the fence, if any.
    marker: Option<String>,
    /// The block's text, without the indentation of its fence.
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{}", self.page, self.line)
    }

    fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every page of `docs/`, relative to the root.
fn pages() -> Vec<String> {
    let mut pages: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| format!("docs/{}", path.file_name().expect("name").to_string_lossy()))
        .collect();
    pages.sort();
    pages.insert(0, "README.md".to_owned());
    pages
}

fn read(page: &str) -> String {
    std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("read {page}: {e}"))
}

/// The fenced blocks of `text`.
fn blocks_of(page: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(lang) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let marker = i
            .checked_sub(1)
            .and_then(|prev| lines[prev].trim().strip_prefix("<!--"))
            .and_then(|comment| comment.strip_suffix("-->"))
            .map(|comment| comment.trim().to_owned());
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            let line = lines[i];
            body.push(line.get(indent.min(leading_spaces(line))..).unwrap_or(""));
            i += 1;
        }
        assert!(
            i < lines.len(),
            "{page}:{}: the block is not closed",
            start + 1
        );
        blocks.push(Block {
            page: page.to_owned(),
            line: start + 1,
            lang: lang.trim().to_owned(),
            marker,
            text: body.join("\n") + "\n",
        });
        i += 1;
    }
    blocks
}

fn leading_spaces(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Every fenced block of every page.
fn all_blocks() -> Vec<Block> {
    pages()
        .iter()
        .flat_map(|page| blocks_of(page, &read(page)))
        .collect()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The directory of the `switchyard` binary, for `PATH`.
fn bin_dir() -> &'static Path {
    Path::new(BIN).parent().expect("the binary's directory")
}

fn path_with_bin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", bin_dir().display())
}

// === YAML examples ===

/// A value for `${name}` that its place accepts: Standard Webhooks secrets are `whsec_` and
/// base64.
fn placeholder(name: &str) -> &'static str {
    if name.contains("WHSEC") {
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    } else {
        "docs-example-value"
    }
}

/// The `${NAME}` references of `text` without a default.
fn variables(text: &str) -> Vec<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(inside, _)| inside))
        .filter(|inside| !inside.contains(":-"))
        .map(str::to_owned)
        .collect()
}

/// Makes every `/etc/switchyard/…` file that `yaml` names under `dir` and returns `yaml` with
/// its paths pointed there: `*ca*.pem` a CA certificate, `NAME.key` the key of the
/// certificate `NAME.crt` or `NAME.pem` (one pair per name).
fn provide_files(yaml: &str, dir: &Path, ca: &TestCa) -> String {
    const PREFIX: &str = "/etc/switchyard/";
    let mut pairs: BTreeMap<String, crate::support::certs::Issued> = BTreeMap::new();
    for (start, _) in yaml.match_indices(PREFIX) {
        let rest = &yaml[start + PREFIX.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "._/-".contains(c)))
            .unwrap_or(rest.len());
        let relative = &rest[..end];
        let file = dir.join("etc/switchyard").join(relative);
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
        let pem = if stem.contains("ca") {
            ca.pem.clone()
        } else {
            let key = format!("{}/{stem}", file.parent().expect("parent").display());
            let pair = pairs
                .entry(key)
                .or_insert_with(|| ca.server(1, crate::support::certs::Validity::Current));
            if ext == "key" {
                pair.key.clone()
            } else {
                pair.cert.clone()
            }
        };
        std::fs::write(&file, pem).expect("write file");
    }
    yaml.replace(PREFIX, &format!("{}/etc/switchyard/", dir.display()))
}

/// Adds a `log` sink for every sink that the routes (or dead-letter and fallback settings)
/// name and the fragment does not define.
fn complete_fragment(yaml: &str) -> String {
    let mut docs = YamlLoader::load_from_str(yaml).expect("the fragment is YAML");
    let Some(Yaml::Hash(top)) = docs.pop() else {
        panic!("a fragment is a mapping");
    };
    let mut top = top;
    let mut named = Vec::new();
    if let Some(Yaml::Array(routes)) = top.get(&Yaml::String("routes".into())) {
        for route in routes {
            if let Yaml::Array(to) = &route["to"] {
                named.extend(to.iter().filter_map(Yaml::as_str).map(str::to_owned));
            }
        }
    }
    let sinks_key = Yaml::String("sinks".into());
    let mut sinks = match top.remove(&sinks_key) {
        Some(Yaml::Hash(sinks)) => sinks,
        _ => yaml_rust2::yaml::Hash::new(),
    };
    for (_, sink) in &sinks {
        for key in ["dead_letter", "fallback"] {
            if let Some(name) = sink[key].as_str() {
                named.push(name.to_owned());
            }
        }
    }
    for name in named {
        let key = Yaml::String(name);
        if !sinks.contains_key(&key) {
            let mut log = yaml_rust2::yaml::Hash::new();
            log.insert(
                Yaml::String("log".into()),
                Yaml::Hash(yaml_rust2::yaml::Hash::new()),
            );
            sinks.insert(key, Yaml::Hash(log));
        }
    }
    top.insert(sinks_key, Yaml::Hash(sinks));
    let mut out = String::new();
    YamlEmitter::new(&mut out)
        .dump(&Yaml::Hash(top))
        .expect("emit YAML");
    out
}

/// `switchyard check` on `yaml`, written to `dir`, with placeholders for its variables.
fn check(yaml: &str, dir: &Path) -> Output {
    let path = dir.join("example.yaml");
    std::fs::write(&path, yaml).expect("write example");
    let vars: Vec<(String, &str)> = variables(yaml)
        .into_iter()
        .map(|name| {
            let value = placeholder(&name);
            (name, value)
        })
        .collect();
    std::process::Command::new(BIN)
        .current_dir(dir)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .envs(vars)
        .output()
        .expect("run switchyard check")
}

/// `true` when `needle`'s lines appear together, in order, in `haystack`.
fn contains_lines(haystack: &str, needle: &str) -> bool {
    let hay: Vec<&str> = haystack.lines().collect();
    let want: Vec<&str> = needle.lines().collect();
    !want.is_empty()
        && hay
            .windows(want.len())
            .any(|window| window == want.as_slice())
}

#[test]
fn every_yaml_example_passes_check() {
    let ca = TestCa::new("docs example CA");
    let mut failures = Vec::new();
    let mut checked = 0;
    for block in all_blocks().into_iter().filter(|b| b.lang == "yaml") {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = match block.marker.as_deref() {
            Some(marker) if marker.starts_with("excerpt:") => {
                let file = marker["excerpt:".len()..].trim();
                let whole = read(file);
                if !contains_lines(&whole, &block.text) {
                    failures.push(format!("{}: not an excerpt of {file}", block.at()));
                }
                checked += 1;
                continue;
            }
            Some("fragment") => complete_fragment(&block.text),
            None => block.text.clone(),
            Some(other) => {
                failures.push(format!("{}: unknown marker `{other}`", block.at()));
                continue;
            }
        };
        let yaml = provide_files(&yaml, dir.path(), &ca);
        let out = check(&yaml, dir.path());
        if !out.status.success() {
            failures.push(format!("{}: {}\n{yaml}", block.at(), text(&out)));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(checked >= 12, "only {checked} yaml examples found");
}

// === Shell examples ===

/// The reason a block is not run, if [`NOT_RUN`] lists it.
fn not_run_reason(block: &Block) -> Option<&'static str> {
    NOT_RUN
        .iter()
        .find(|(page, first, _)| *page == block.page && *first == block.first_line())
        .map(|(_, _, why)| *why)
}

/// Joins backslash continuations: one entry per command line.
fn command_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    lines
}

/// For a synopsis line `switchyard a b|c NAME [--x] …`: the subcommand paths it names
/// (`[a b]`, `[a c]`) and its `--flags`.
fn synopsis(line: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("switchyard"), "a synopsis line: {line}");
    let mut paths = vec![Vec::new()];
    for word in words {
        let is_command = word
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || c == '|')
            && !word.starts_with('-');
        if !is_command {
            break;
        }
        paths = paths
            .into_iter()
            .flat_map(|path| {
                word.split('|').map(move |alt| {
                    let mut path = path.clone();
                    path.push(alt.to_owned());
                    path
                })
            })
            .collect();
    }
    let flags = line
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect();
    (paths, flags)
}

fn help(path: &[String]) -> String {
    let out = std::process::Command::new(BIN)
        .args(path)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(
        out.status.success(),
        "switchyard {path:?} --help: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `script` with `sh -e` in `dir`, the tests' binary first on the `PATH`.
fn run_sh(script: &str, dir: &Path, env: &[(&str, String)]) -> Output {
    std::process::Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path_with_bin())
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .output()
        .expect("run sh")
}

#[test]
fn every_sh_example_runs_or_says_why_not() {
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut synopses = 0;
    let blocks: Vec<Block> = all_blocks()
        .into_iter()
        .filter(|b| b.lang == "sh")
        .collect();
    for block in &blocks {
        match block.marker.as_deref() {
            Some(marker) if marker.starts_with("tour:") => continue,
            Some("synopsis") => {
                for line in command_lines(&block.text) {
                    let (paths, flags) = synopsis(&line);
                    for path in paths {
                        let help = help(&path);
                        for flag in &flags {
                            if !help.contains(flag.as_str()) {
                                failures.push(format!(
                                    "{}: `switchyard {}` has no {flag}",
                                    block.at(),
                                    path.join(" ")
                                ));
                            }
                        }
                    }
                }
                synopses += 1;
                continue;
            }
            Some(other) => {
                failures.push(format!("{}: unknown marker `{other}`", block.at()));
                continue;
            }
            None => {}
        }
        if let Some(why) = not_run_reason(block) {
            eprintln!("not run: {}: {why}", block.at());
            continue;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(root().join("routes.yaml"), dir.path().join("routes.yaml"))
            .expect("copy routes.yaml");
        let out = run_sh(&block.text, dir.path(), &[]);
        if !out.status.success() {
            failures.push(format!("{}:\n{}\n{}", block.at(), block.text, text(&out)));
        }
        ran += 1;
    }
    for (page, first, _) in NOT_RUN {
        let matches = blocks
            .iter()
            .filter(|b| b.page == *page && b.first_line() == *first)
            .count();
        if matches != 1 {
            failures.push(format!(
                "NOT_RUN names `{first}` in {page}, which matches {matches} blocks"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran >= 1 && synopses >= 1, "ran {ran}, synopses {synopses}");
}

#[test]
fn a_synopsis_names_only_flags_its_command_has() {
    let (paths, flags) = synopsis("switchyard sinks pause|resume NAME [--admin URL] [--bogus]");
    assert_eq!(paths, [["sinks", "pause"], ["sinks", "resume"]]);
    assert_eq!(flags, ["--admin", "--bogus"]);
    assert!(help(&paths[0]).contains("--admin"));
    assert!(!help(&paths[0]).contains("--bogus"));
}

// === Links ===

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside fenced blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut anchors = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            anchors.push(slug(line.trim_start_matches('#')));
        }
    }
    anchors
}

#[test]
fn links_between_pages_resolve() {
    let mut failures = Vec::new();
    let mut links = 0;
    for page in pages() {
        let text = read(&page);
        let dir = Path::new(&page).parent().unwrap_or(Path::new(""));
        for (at, _) in text.match_indices("](") {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file: PathBuf = if file.is_empty() {
                PathBuf::from(&page)
            } else {
                dir.join(file)
            };
            links += 1;
            // Read as bytes: a link may lead to an image.
            let Ok(linked) = std::fs::read(root().join(&file)) else {
                failures.push(format!("{page}: ({target}): no file {}", file.display()));
                continue;
            };
            let linked = String::from_utf8_lossy(&linked);
            if !anchor.is_empty() && !anchors(&linked).iter().any(|a| a == anchor) {
                failures.push(format!("{page}: ({target}): no heading #{anchor}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(links >= 10, "only {links} links found");
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(slug(" CESQL (`sql`)"), "cesql-sql");
    assert_eq!(slug(" routes.yaml"), "routesyaml");
    assert_eq!(
        slug(" NATS JetStream: many instances, one queue"),
        "nats-jetstream-many-instances-one-queue"
    );
}

// === The tour ===

/// The ports of one tour run, and the text substitutions that point the tour at them.
#[derive(Debug, Clone, Copy)]
struct Ports {
    ingress: u16,
    admin: u16,
    receiver: u16,
}

impl Ports {
    fn apply(self, script: &str) -> String {
        script
            .replace("localhost:8080", &format!("127.0.0.1:{}", self.ingress))
            .replace("localhost:9090", &format!("127.0.0.1:{}", self.admin))
            .replace("localhost:9001", &format!("127.0.0.1:{}", self.receiver))
    }

    /// What the daemon gets instead of the files' fixed ports; with `webhook`, also the
    /// tour's webhook sink URL.
    fn daemon_env(self, webhook: bool) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("SWITCHYARD_LISTEN", format!("127.0.0.1:{}", self.ingress)),
            (
                "SWITCHYARD_ADMIN_LISTEN",
                format!("127.0.0.1:{}", self.admin),
            ),
        ];
        if webhook {
            let url = format!("http://127.0.0.1:{}/orders", self.receiver);
            env.push(("SWITCHYARD_SINKS__WEBHOOK__HTTP__URL", url));
        }
        env
    }
}

/// The tour's blocks by step, checked against [`TOUR`].
fn tour_steps() -> BTreeMap<String, String> {
    let blocks: Vec<(String, String)> = blocks_of("README.md", &read("README.md"))
        .into_iter()
        .filter_map(|b| {
            let step = b
                .marker
                .as_deref()?
                .strip_prefix("tour:")?
                .trim()
                .to_owned();
            Some((step, b.text))
        })
        .collect();
    let order: Vec<&str> = blocks.iter().map(|(step, _)| step.as_str()).collect();
    assert_eq!(
        order, TOUR,
        "the README's tour steps changed: update TOUR and the test"
    );
    blocks.into_iter().collect()
}

/// Runs one tour step as `sh -e`, pointed at `ports` (the admin URL in the environment, where
/// a user with the default `admin_listen` needs none); it must succeed.
async fn run_step(script: &str, dir: &Path, ports: Ports) -> String {
    let out = try_step(script, dir, ports).await;
    assert!(out.status.success(), "{script}\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn try_step(script: &str, dir: &Path, ports: Ports) -> Output {
    tokio::process::Command::new("sh")
        .arg("-e")
        .arg("-c")
        .arg(ports.apply(script))
        .current_dir(dir)
        .env("PATH", path_with_bin())
        .env(
            "SWITCHYARD_ADMIN_URL",
            format!("http://127.0.0.1:{}", ports.admin),
        )
        .output()
        .await
        .expect("run sh")
}

/// Reruns a step until it succeeds and its output satisfies `done` (bounded), returning that
/// output.
async fn run_step_until(
    script: &str,
    dir: &Path,
    ports: Ports,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        let out = try_step(script, dir, ports).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && done(&stdout) {
            return stdout;
        }
        last = text(&out);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{script}\nnever printed what the README says; last:\n{last}");
}

/// The webhook's `outcome="retry"` count in a metrics scrape (0 when absent).
fn webhook_retries(out: &str) -> u64 {
    out.lines()
        .find_map(|line| {
            line.strip_prefix(r#"switchyard_deliveries_total{sink="webhook",outcome="retry"} "#)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `switchyard serve --config X` from a step's text: the configuration it names.
fn served_config(step: &str) -> PathBuf {
    let config = step
        .trim()
        .strip_prefix("switchyard serve --config ")
        .unwrap_or_else(|| panic!("the step serves a configuration: {step}"));
    PathBuf::from(config)
}

async fn start_daemon(dir: &Path, config: &Path, ports: Ports, log: &Path) -> Daemon {
    let env = ports.daemon_env(config.ends_with("tour.yaml"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start_in(Some(dir), config, ports.ingress, &env, Some(log)).await
}

#[tokio::test]
async fn the_readme_tour_runs_as_written() {
    let steps = tour_steps();
    let step = |name: &str| steps[name].as_str();
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    std::fs::copy(root().join("routes.yaml"), dir.join("routes.yaml")).expect("copy");
    std::fs::create_dir_all(dir.join("examples/configs")).expect("mkdir");
    let tour_yaml = "examples/configs/tour.yaml";
    std::fs::copy(root().join(tour_yaml), dir.join(tour_yaml)).expect("copy");
    let ports = Ports {
        ingress: free_port(),
        admin: free_port(),
        receiver: free_port(),
    };

    // 1. `cargo run --release` serves routes.yaml: the test serves it with the binary it built.
    assert_eq!(step("start").trim(), "cargo run --release");
    let log = dir.join("daemon.log");
    let mut daemon = start_daemon(dir, Path::new("routes.yaml"), ports, &log).await;

    // 2. The event is accepted, logged by `console` and appended by `archive`.
    let sent = run_step(step("send"), dir, ports).await;
    assert!(sent.contains("HTTP/1.1 202 Accepted"), "{sent}");
    wait_until(
        "the console sink logs order-1",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            log.lines()
                .any(|l| l.contains("Event received") && l.contains("order-1"))
        },
    )
    .await;
    let archived = run_step_until(step("archive"), dir, ports, |out| {
        out.contains(r#""id":"order-1""#)
    })
    .await;
    assert!(
        archived.contains(r#""type":"Contoso.Orders.Created""#),
        "{archived}"
    );

    // 3. Ctrl-C (the test sends SIGTERM, the same graceful stop), then the tour's file, with
    // nothing listening on the webhook's port.
    daemon.terminate();
    let config = served_config(step("serve-tour"));
    let log = dir.join("daemon-tour.log");
    let _daemon = start_daemon(dir, &config, ports, &log).await;
    let sent = run_step(step("send-order"), dir, ports).await;
    assert!(sent.contains("202 Accepted"), "{sent}");
    let watched = run_step_until(step("watch"), dir, ports, |out| {
        out.contains("Connection refused") && webhook_retries(out) >= 1
    })
    .await;
    assert!(watched.contains("webhook"), "{watched}");
    let dead = run_step_until(step("dead-letters"), dir, ports, |out| {
        out.contains("MaxDeliveryAttemptsExceeded") && out.contains("deadletterreason")
    })
    .await;
    assert!(
        dead.contains("order-3") && dead.contains("webhook"),
        "{dead}"
    );

    // 4. The receiver is `baseline_ingest --mode sink`, which `cargo test` need not build: a
    // test sink answering 200 listens on its port instead.
    assert!(step("receiver").contains("--mode sink 127.0.0.1:9001"));
    let receiver = TestSink::start_on(ports.receiver).await;
    let replayed = run_step(step("replay"), dir, ports).await;
    assert_eq!(replayed.trim(), "replayed 1");
    wait_until("the receiver gets order-3", Duration::from_secs(10), || {
        receiver.count_matching(|r| r.header("ce-id") == Some("order-3")) == 1
    })
    .await;
    // The test sink has no `/count` (it answers the GET with an empty 200): the delivery was
    // asserted on what it received, above.
    let after = run_step(step("delivered"), dir, ports).await;
    assert!(
        !after.contains("order-3"),
        "the dead letter is gone: {after}"
    );
    assert_eq!(
        receiver.count_matching(|r| r.header("ce-id") == Some("order-3")),
        1,
        "delivered once"
    );
}

// === JSON shapes ===

/// The JSON documents of a `jsonc` block: each starts after a `//` line; `/* … */` comments
/// are dropped.
fn jsonc_documents(text: &str) -> Vec<serde_json::Value> {
    let mut documents = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("//")) {
        if line.trim_start().starts_with("//") {
            if !current.trim().is_empty() {
                let json = serde_json::from_str(&current)
                    .unwrap_or_else(|e| panic!("not JSON ({e}):\n{current}"));
                documents.push(json);
            }
            current.clear();
            continue;
        }
        let mut line = line.to_owned();
        while let Some(start) = line.find("/*") {
            let end = line[start..]
                .find("*/")
                .map_or(line.len(), |e| start + e + 2);
            line.replace_range(start..end, "");
        }
        current.push_str(&line);
        current.push('\n');
    }
    documents
}

/// Where `doc` has a key, or a kind of value, that `actual` lacks (a `null` on either side
/// stands for any value).
fn shape_differences(doc: &serde_json::Value, actual: &serde_json::Value, at: &str) -> Vec<String> {
    use serde_json::Value;
    match (doc, actual) {
        (Value::Null, _) | (_, Value::Null) => Vec::new(),
        (Value::Object(doc), Value::Object(actual)) => doc
            .iter()
            .flat_map(|(key, value)| match actual.get(key) {
                Some(found) => shape_differences(value, found, &format!("{at}.{key}")),
                None => vec![format!("{at}.{key} is not in the output")],
            })
            .collect(),
        (Value::Array(doc), Value::Array(actual)) => doc
            .iter()
            .zip(actual)
            .enumerate()
            .flat_map(|(i, (d, a))| shape_differences(d, a, &format!("{at}[{i}]")))
            .collect(),
        (d, a) if std::mem::discriminant(d) == std::mem::discriminant(a) => Vec::new(),
        (d, a) => vec![format!("{at}: the docs show {d}, the output has {a}")],
    }
}

#[test]
fn the_documented_json_shapes_are_what_check_and_explain_print() {
    let block = blocks_of("docs/operations.md", &read("docs/operations.md"))
        .into_iter()
        .find(|b| b.lang == "jsonc")
        .expect("docs/operations.md shows the JSON shapes");
    let documents = jsonc_documents(&block.text);
    let [check_doc, explain_doc] = documents.as_slice() else {
        panic!("two documents, check's and explain's: {documents:?}");
    };
    // A configuration with every part the documented shapes show.
    let yaml = r#"
admin: { token: "${TOKEN}" }
spool: { backend: embedded, path: /var/lib/switchyard }
sources: { github: { preset: github, secret: "${SECRET}" } }
schedules:
  - { name: nightly, cron: "0 0 3 * * *", event: { type: Nightly.Report, source: /cron } }
sinks: { hook: { http: { url: "https://example.com/in" } } }
routes:
  - { name: orders, match: { types: ["Orders.*"] }, sql: "subject LIKE '/eu/%'", to: [hook] }
  - { name: users, match: { types: ["Users.*"] }, to: [hook] }
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let event = dir.path().join("event.json");
    let body = r#"{"specversion":"1.0","id":"e1","type":"Orders.Created","source":"/shop","subject":"/eu/1"}"#;
    std::fs::write(&event, body).expect("write event");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .env("TOKEN", "t")
            .env("SECRET", "s")
            .output()
            .expect("run switchyard");
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON document")
    };
    let check = run(&[
        "check".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    let explain = run(&[
        "explain".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        event.as_os_str(),
    ]);
    let mut differences = shape_differences(check_doc, &check, "check");
    differences.extend(shape_differences(explain_doc, &explain, "explain"));
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The values that the shapes' example shows, for this configuration.
    assert_eq!(check["routes"][0]["sql"], "subject LIKE '/eu/%'");
    assert_eq!(explain["events"][0]["routes"][0]["sql"]["value"], true);
    assert_eq!(
        explain["events"][0]["routes"][1]["reason"],
        explain_doc["events"][0]["routes"][1]["reason"]
    );
}
