//! Records which system call the bundled SQLite commits with, so that the daemon can say so at
//! start. `libsqlite3-sys` compiles SQLite with the flags in `LIBSQLITE3_FLAGS`, and Cargo
//! gives every build script of one build the same environment: the repository's
//! `.cargo/config.toml` sets `-DHAVE_FDATASYNC=1`, which a `cargo install --git` (or any build
//! that does not read that file) lacks, and SQLite then falls back to `fsync`.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBSQLITE3_FLAGS");
    println!("cargo:rerun-if-changed=build.rs");
    let flags = std::env::var("LIBSQLITE3_FLAGS").unwrap_or_default();
    let sync = if uses_fdatasync(&flags) {
        "fdatasync"
    } else {
        "fsync"
    };
    println!("cargo:rustc-env=SWITCHYARD_SQLITE_SYNC={sync}");
}

/// Whether SQLite's unix layer keeps `fdatasync` rather than defining it as `fsync`: it does
/// when `HAVE_FDATASYNC` is defined non-zero, or `fdatasync` is defined as a macro.
fn uses_fdatasync(flags: &str) -> bool {
    let mut result = false;
    for flag in flags.split_whitespace() {
        let flag = flag.strip_prefix("-D").unwrap_or(flag);
        match flag.split_once('=') {
            Some(("HAVE_FDATASYNC", value)) => result = value.trim() != "0",
            None if flag == "HAVE_FDATASYNC" => result = true,
            Some(("fdatasync", _)) => result = true,
            _ if flag == "-UHAVE_FDATASYNC" => result = false,
            _ => {}
        }
    }
    result
}
