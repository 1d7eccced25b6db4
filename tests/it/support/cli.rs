//! The compiled binary as a command: files for it to read, `check` on a routes file, and a
//! subcommand's exit code and output.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::process::BIN;

/// Writes `text` to the file `name` in `dir`; its path.
pub(crate) fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// `switchyard check --config <path>`, run to the end.
pub(crate) fn check(path: &Path) -> Output {
    Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run check")
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
