//! The container image ships ONE statically linked `warmpool` binary (Dockerfile): the image
//! cache copies it into images that may have no libc at all (distroless, scratch) and runs it
//! there. Docker cannot run here, so this test builds the binary with the Dockerfile's very
//! command, once (cargo keeps it under target/x86_64-unknown-linux-gnu/release), and proves it:
//! no program interpreter, no shared library needed, and it runs with an empty environment in an
//! empty root directory.

use std::path::Path;
use std::process::{Command, Stdio};

use support::process::{output_with_stdin, succeed};
use support::static_build;

use static_build::{CARGO_BUILD, RUSTFLAGS, TARGET, build_static};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn dockerfile_builds_the_binary_this_test_checks() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    // Joined continuation lines, so the check does not depend on line breaks.
    let flat = dockerfile.replace("\\\n", " ");
    let flat: String = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    // One build command for every architecture, its Rust target picked from buildx's
    // TARGETARCH: amd64 must map to the target this test builds, arm64 to aarch64.
    let amd64 = format!("amd64) RUST_TARGET={TARGET};");
    assert!(
        flat.contains(&amd64),
        "the Dockerfile maps TARGETARCH amd64 to {TARGET}: `{amd64}`"
    );
    assert!(
        flat.contains("arm64) RUST_TARGET=aarch64-unknown-linux-gnu;"),
        "the Dockerfile maps TARGETARCH arm64 to aarch64-unknown-linux-gnu"
    );
    assert_eq!(
        flat.matches("RUST_TARGET=").count(),
        3,
        "two architectures mapped (amd64, arm64) and one written to /target.env, no other"
    );
    assert!(
        flat.contains(r#"case "$TARGETARCH" in"#) && flat.contains("ARG TARGETARCH"),
        "the target comes from buildx's TARGETARCH"
    );
    // For amd64, $RUST_TARGET is TARGET: the command then is exactly the one this test runs.
    let amd64_build = flat.replace("$RUST_TARGET", TARGET);
    assert!(
        amd64_build.contains(&format!(
            r#"RUSTFLAGS="{RUSTFLAGS}" cargo {}"#,
            CARGO_BUILD.join(" ")
        )),
        "the Dockerfile runs RUSTFLAGS=\"{RUSTFLAGS}\" `cargo {}` for amd64",
        CARGO_BUILD.join(" ")
    );
    assert!(amd64_build.contains(&format!("cp target/{TARGET}/release/warmpool /warmpool")));
    assert!(
        !flat.contains("--platform=linux/amd64"),
        "no stage is pinned to amd64 (buildx --platform linux/amd64,linux/arm64)"
    );
    let last_from = dockerfile
        .lines()
        .rfind(|l| l.starts_with("FROM "))
        .expect("a FROM line");
    assert!(
        last_from.contains("distroless/static") || last_from.contains(" scratch"),
        "the final stage has no libc: {last_from}"
    );
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/warmpool"]"#));
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "numeric non-root user"
    );
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        "target/ stays out of the context"
    );
}

/// What the dynamic loader would need: the program interpreter and the DT_NEEDED libraries.
#[derive(Debug, Default)]
struct Linking {
    interpreter: Option<String>,
    needed: Vec<String>,
}

/// A minimal ELF64 little-endian reader: program headers, PT_INTERP, PT_DYNAMIC's DT_NEEDED.
fn linking(elf: &[u8]) -> Linking {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    assert_eq!(elf[5], 1, "not little-endian");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NULL: usize = 0;
    const DT_NEEDED: usize = 1;
    let mut out = Linking::default();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (p_type, offset, size) = (u32_at(ph), u64_at(ph + 8), u64_at(ph + 32));
        match p_type {
            PT_INTERP => {
                let raw = &elf[offset..offset + size];
                out.interpreter = Some(String::from_utf8_lossy(raw).trim_end_matches('\0').into());
            }
            PT_DYNAMIC => {
                // A static-pie binary keeps a dynamic section for its own relocations, but
                // needs no library: count the DT_NEEDED entries.
                for entry in (offset..offset + size).step_by(16) {
                    match u64_at(entry) {
                        DT_NULL => break,
                        DT_NEEDED => out.needed.push(format!("string #{}", u64_at(entry + 8))),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn elf_reader_tells_static_from_dynamic() {
    // A binary of this machine that is surely dynamically linked: the test's own executable.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let dynamic = linking(&me);
    assert!(dynamic.interpreter.is_some(), "{dynamic:?}");
    assert!(!dynamic.needed.is_empty(), "{dynamic:?}");
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn release_binary_is_statically_linked_and_runs_without_any_library() {
    let binary = build_static();
    let elf = std::fs::read(&binary).expect("read the binary");
    let found = linking(&elf);
    assert_eq!(
        found.interpreter, None,
        "the binary asks for a dynamic loader"
    );
    assert!(
        found.needed.is_empty(),
        "the binary needs shared libraries: {found:?}"
    );
    if let Ok(out) = Command::new("file").arg(&binary).output() {
        let says = String::from_utf8_lossy(&out.stdout);
        eprintln!("file: {says}");
        assert!(
            says.contains("statically linked") || says.contains("static-pie linked"),
            "{says}"
        );
    }

    // An empty root with nothing but the binary: no /lib, no /etc, no environment.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::copy(&binary, root.path().join("warmpool")).expect("copy");
    let in_chroot = Command::new("chroot")
        .arg(root.path())
        .args(["/warmpool", "--version"])
        .env_clear()
        .output();
    let (how, out) = match in_chroot {
        Ok(out) if out.status.success() => ("chroot into an empty directory", out),
        other => {
            // Not root (or no chroot): an empty environment in an empty working directory.
            eprintln!("chroot unavailable ({other:?}): running with env -i in an empty directory");
            let out = Command::new(root.path().join("warmpool"))
                .arg("--version")
                .env_clear()
                .current_dir(root.path())
                .output()
                .expect("run the binary");
            ("empty environment", out)
        }
    };
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.contains(env!("CARGO_PKG_VERSION")),
        "{how}: `warmpool --version` failed: {version} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{how}: {}", version.trim());

    // More than --version: the real mutation path (JSON in, JSON patch out), still no library.
    if how.starts_with("chroot") {
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}"#;
        let out = output_with_stdin(
            Command::new("chroot")
                .arg(root.path())
                .args([
                    "/warmpool",
                    "mutate",
                    "--namespace",
                    "demo-1",
                    "-f",
                    "-",
                    "-o",
                    "patch",
                ])
                .env_clear(),
            pod.as_bytes(),
        );
        let patch = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            patch.contains("workload-type") && patch.contains("cargocats"),
            "{patch}"
        );

        // The image cache: `warmpool install-noop DIR` (in warmpool's own image) copies the binary
        // into the shared emptyDir, then each cached image runs `/warmpool-cache/warmpool hold`
        // (until SIGTERM), whatever it contains: here an image with nothing else at all.
        let image = tempfile::tempdir().expect("tempdir");
        let cache = image.path().join("warmpool-cache");
        std::fs::create_dir(&cache).unwrap();
        succeed(
            Command::new(&binary)
                .arg("install-noop")
                .arg(&cache)
                .env_clear(),
            "warmpool install-noop",
        );
        succeed(
            Command::new("chroot")
                .arg(image.path())
                .args(["/warmpool-cache/warmpool", "noop"])
                .env_clear(),
            "noop in an empty image",
        );
        let mut hold = Command::new("chroot")
            .arg(image.path())
            .args(["/warmpool-cache/warmpool", "hold"])
            .env_clear()
            .stderr(Stdio::piped())
            .spawn()
            .expect("chroot runs");
        // Its line says the SIGTERM handler is in place.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(hold.stderr.take().expect("piped")),
            &mut line,
        )
        .expect("hold's stderr");
        assert!(line.contains("until SIGTERM"), "hold said {line:?}");
        assert_eq!(
            hold.try_wait().expect("try_wait"),
            None,
            "hold keeps running"
        );
        let kill = Command::new("kill")
            .args(["-TERM", &hold.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let status = hold.wait().expect("hold ends");
        assert!(status.success(), "hold on SIGTERM: {status}");
    }
}
