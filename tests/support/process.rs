//! Running a program to its end from a test, where its failure is the test's failure.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Runs `command` to its end and returns its output. Panics, naming it `what` and showing its
/// stderr, when it cannot be started or does not succeed.
pub fn succeed(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `command` to its end with `input` on its standard input; its output (stdout and stderr
/// captured), whether it succeeded or not. Panics when it cannot be started.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("writes stdin");
    child.wait_with_output().expect("waits for its end")
}
