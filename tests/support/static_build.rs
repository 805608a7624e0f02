//! The statically linked release `warmpool`, built with the Dockerfile's very command: what
//! tests/cli/static_binary.rs proves static and what the real nodes' image cache runs (the tool
//! image). Cargo keeps it under target/x86_64-unknown-linux-gnu/release, so only the first
//! build takes minutes.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::repo_root;

/// The build of the Dockerfile's `RUN` line (glibc, statically linked).
pub const RUSTFLAGS: &str = "-C target-feature=+crt-static";
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
pub const CARGO_BUILD: [&str; 7] = [
    "build",
    "--release",
    "--locked",
    "--target",
    TARGET,
    "--bin",
    "warmpool",
];

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// Builds (or finds up to date) the release binary exactly as the Dockerfile does; its path.
/// At the lowest CPU priority: on a 2-core machine a release build beside a running control
/// plane must not starve it (tests run around it).
pub fn build_static() -> PathBuf {
    eprintln!(
        "building: RUSTFLAGS=\"{RUSTFLAGS}\" cargo {} (first time: several minutes)",
        CARGO_BUILD.join(" ")
    );
    let status = Command::new("nice")
        .args(["-n", "19", env!("CARGO")])
        .args(CARGO_BUILD)
        .current_dir(repo_root())
        .env("RUSTFLAGS", RUSTFLAGS)
        // These would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove(format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            TARGET.to_uppercase().replace('-', "_")
        ))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("nice and cargo run");
    assert!(status.success(), "the Dockerfile's build command failed");
    let binary = target_dir().join(TARGET).join("release/warmpool");
    assert!(binary.is_file(), "{} was not built", binary.display());
    binary
}
