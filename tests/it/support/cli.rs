//! The compiled binary as a command: files for it to read, `check` and `explain` on a routes
//! file, and a subcommand's exit code and output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::BIN;

/// Writes `text` to the file `name` in `dir`; its path.
pub(crate) fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// `switchyard check --config <path>`, which must refuse the file (exit 64); its stderr.
pub(crate) fn check_refused(path: &Path) -> String {
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    stderr
}

/// `switchyard explain --config <config> <event>`, which must succeed; its stdout.
pub(crate) fn explain(config: &Path, event: &Path) -> String {
    let out = Command::new(BIN)
        .arg("explain")
        .arg("--config")
        .arg(config)
        .arg(event)
        .output()
        .expect("run explain");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs the binary with `args`; its exit code, stdout and stderr.
pub(crate) async fn run<I, S>(args: I) -> (Option<i32>, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .output()
        .await
        .expect("run the binary");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}
