//! Configuration and start-up errors of the real binary: every invalid configuration key or
//! value (a table that covers every key of the configuration, checked against the keys of the
//! defaults), certificates that are missing, unreadable or not what they claim, ports in use,
//! and bad arguments — for `warmpool webhook`, `warmpool reconcile` and `warmpool mutate`.
//!
//! Each must end the process at once with a non-zero exit (1, not a panic's 101 or a signal) and
//! one line on stderr, `error: ...`, that names the offending path or file and the fix.
//! Already proved in tests/webhook/server.rs and not repeated: a missing certificate or key, a
//! key of another certificate, a key given as certificate, `--listen` in use, one bad config.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::loopback;

use loopback::certs;

use super::BIN;
const POD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pod.yaml");

/// Runs the binary with a deadline (a start-up error must not wait for anything).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("WARMPOOL_CONFIG")
        .env_remove("WARMPOOL_NAMESPACE")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("warmpool runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "{args:?} still running after 20 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Asserts exit 1 and one `error: ` line containing each of `expected`; returns the line.
fn assert_one_line_error(what: &str, out: &Output, expected: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit {:?}, stderr: {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{what}: {line}");
    for e in expected {
        assert!(line.contains(e), "{what}: `{e}` missing from: {line}");
    }
    line.to_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Invalid configuration: the table

/// One invalid configuration: the YAML, the path the error must name, and a word of the
/// problem it must say.
struct Case {
    yaml: &'static str,
    path: &'static str,
    says: &'static str,
}

const fn case(yaml: &'static str, path: &'static str, says: &'static str) -> Case {
    Case { yaml, path, says }
}

/// Every key of the configuration with a wrong value, and an unknown key at every level.
const CASES: &[Case] = &[
    // The document itself.
    case("nope: 1", "nope", "unknown field"),
    case("- a list", "invalid config", "expected mapping"),
    case("42", "invalid config", "expected mapping"),
    case(
        "pool: {affinity: required",
        "invalid config",
        "unclosed bracket",
    ),
    case(
        "pool:\n\taffinity: required\n",
        "invalid config",
        "line 2 column 2: tabs",
    ),
    case(
        "pool: {affinity: required, affinity: preferred}",
        "pool",
        "duplicate",
    ),
    // tenants
    case(
        "tenants: {patterns: [a]}",
        "tenants.patterns",
        "unknown field",
    ),
    case("tenants: []", "tenants", "expected mapping"),
    case(
        "tenants: {namespacePatterns: demo-*}",
        "tenants.namespacePatterns",
        "expected sequence",
    ),
    case(
        "tenants: {namespacePatterns: ['demo-[']}",
        "tenants.namespacePatterns[0]",
        "unclosed",
    ),
    case(
        "tenants: {namespacePatterns: [ok-*, '{a,b']}",
        "tenants.namespacePatterns[1]",
        "unclosed",
    ),
    case(
        "tenants: {namespacePatterns: [[nested]]}",
        "tenants.namespacePatterns[0]",
        "expected string",
    ),
    case(
        "tenants: {timeToReady: 5}",
        "tenants.timeToReady",
        "expected mapping",
    ),
    case(
        "tenants: {timeToReady: {windw: 1m}}",
        "tenants.timeToReady.windw",
        "unknown field",
    ),
    case(
        "tenants: {timeToReady: {enabled: maybe}}",
        "tenants.timeToReady.enabled",
        "invalid boolean",
    ),
    case(
        "tenants: {timeToReady: {window: soon}}",
        "tenants.timeToReady.window",
        "is not a duration",
    ),
    case(
        "tenants: {timeToReady: {window: 5m, timeout: 2m}}",
        "tenants.timeToReady.timeout",
        "shorter than tenants.timeToReady.window",
    ),
    case(
        "tenants: {timeToReady: {timeout: 2d}}",
        "tenants.timeToReady.timeout",
        "longer than a day",
    ),
    case(
        "tenants: {repair: delete}",
        "tenants.repair",
        "expected one of none, evict",
    ),
    case(
        "pricing: {cpuCoreHour: 0.04, memoryGiBHour: -1}",
        "pricing.memoryGiBHour",
        "not a price",
    ),
    case(
        "pricing: {cpuCoreHour: 0.04}",
        "pricing",
        "missing field `memoryGiBHour`",
    ),
    // pool
    case("pool: {size: 3}", "pool.size", "unknown field"),
    case(
        "pool: {nodeLabel: {key: a, value: b, op: In}}",
        "pool.nodeLabel.op",
        "unknown field",
    ),
    case(
        "pool: {nodeLabel: {key: a}}",
        "pool.nodeLabel",
        "missing field `value`",
    ),
    case(
        "pool: {nodeLabel: {key: 'bad key', value: x}}",
        "pool.nodeLabel.key",
        "not a valid label key",
    ),
    case(
        "pool: {nodeLabel: {key: 'Example.com/pool', value: x}}",
        "pool.nodeLabel.key",
        "not a valid label key",
    ),
    case(
        "pool: {nodeLabel: {key: '/pool', value: x}}",
        "pool.nodeLabel.key",
        "not a valid label key",
    ),
    case(
        "pool: {nodeLabel: {key: '', value: x}}",
        "pool.nodeLabel.key",
        "not a valid label key",
    ),
    case(
        "pool: {nodeLabel: {key: a, value: '-x'}}",
        "pool.nodeLabel.value",
        "not a valid label value",
    ),
    case(
        "pool: {nodeLabel: {key: a, value: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx}}",
        "pool.nodeLabel.value",
        "not a valid label value",
    ),
    case(
        "pool: {nodeLabel: {key: a, value: [b]}}",
        "pool.nodeLabel.value",
        "expected string",
    ),
    case(
        "pool: {affinity: sometimes}",
        "pool.affinity",
        "unknown variant",
    ),
    case(
        "pool: {affinity: Required}",
        "pool.affinity",
        "unknown variant",
    ),
    case(
        "pool: {tolerations: {key: a}}",
        "pool.tolerations",
        "expected sequence",
    ),
    case(
        "pool: {tolerations: [{key: a, tolerance: 1}]}",
        "pool.tolerations[0].tolerance",
        "unknown field",
    ),
    case(
        "pool: {tolerations: [{key: [a]}]}",
        "pool.tolerations[0].key",
        "expected string",
    ),
    case(
        "pool: {tolerations: [{operator: Equal, value: x}]}",
        "pool.tolerations[0].key",
        "required when operator is Equal",
    ),
    case(
        "pool: {tolerations: [{key: a, operator: Sometimes}]}",
        "pool.tolerations[0].operator",
        "unknown variant",
    ),
    case(
        "pool: {tolerations: [{key: a, operator: Exists, value: b}]}",
        "pool.tolerations[0].value",
        "must be empty when operator is Exists",
    ),
    case(
        "pool: {tolerations: [{key: a, value: {x: 1}}]}",
        "pool.tolerations[0].value",
        "expected string",
    ),
    case(
        "pool: {tolerations: [{key: a, effect: Never}]}",
        "pool.tolerations[0].effect",
        "unknown variant",
    ),
    case(
        "pool: {tolerations: [{key: a}, {key: b, effect: NoSchedule, tolerationSeconds: 30}]}",
        "pool.tolerations[1].tolerationSeconds",
        "only allowed with effect NoExecute",
    ),
    case(
        "pool: {tolerations: [{key: a, effect: NoExecute, tolerationSeconds: soon}]}",
        "pool.tolerations[0].tolerationSeconds",
        "invalid i64",
    ),
    // prewarmer
    case(
        "prewarmer: {spareSlot: 2}",
        "prewarmer.spareSlot",
        "unknown field",
    ),
    case(
        "prewarmer: {spareSlots: -1}",
        "prewarmer.spareSlots",
        "expected a u32",
    ),
    case(
        "prewarmer: {spareSlots: many}",
        "prewarmer.spareSlots",
        "expected u32 or",
    ),
    case(
        "prewarmer: {spareSlots: 99999999999}",
        "prewarmer.spareSlots",
        "expected a u32",
    ),
    case(
        "prewarmer: {spareSlots: {auto: {min: 5, max: 2}}}",
        "prewarmer.spareSlots.auto.min",
        "more than max",
    ),
    case(
        "prewarmer: {spareSlots: {auto: {max: -1}}}",
        "prewarmer.spareSlots.auto.max",
        "invalid u32",
    ),
    case(
        "prewarmer: {spareSlots: {auto: {span: soon}}}",
        "prewarmer.spareSlots.auto.span",
        "not a duration",
    ),
    case(
        "prewarmer: {spareSlots: {auto: {lookback: 60d}}}",
        "prewarmer.spareSlots.auto.lookback",
        "longer than 31 days",
    ),
    case(
        "prewarmer: {spareSlots: {auto: {min: 1}, max: 3}}",
        "prewarmer.spareSlots.max",
        "unknown field",
    ),
    case(
        "prewarmer: {scaleDown: {step: 0}}",
        "prewarmer.scaleDown.step",
        "at least 1",
    ),
    case(
        "prewarmer: {scaleDown: {every: 5}}",
        "prewarmer.scaleDown.every",
        "not a duration",
    ),
    case(
        "prewarmer: {scaleDown: {quietFor: 3d}}",
        "prewarmer.scaleDown.quietFor",
        "longer than a day",
    ),
    case(
        "prewarmer: {scaleDown: {rate: 1}}",
        "prewarmer.scaleDown.rate",
        "unknown field",
    ),
    case("prewarmer: {slot: manual}", "prewarmer.slot", "auto"),
    case("prewarmer: {slot: 3}", "prewarmer.slot", "auto"),
    case(
        "prewarmer: {slot: {cpu: 1, memory: 1Gi, gpu: 1}}",
        "prewarmer.slot",
        "unknown field `gpu`",
    ),
    case(
        "prewarmer: {slot: {cpu: lots, memory: 1Gi}}",
        "prewarmer.slot.cpu",
        "not a Kubernetes quantity",
    ),
    case(
        "prewarmer: {slot: {cpu: '0', memory: 1Gi}}",
        "prewarmer.slot.cpu",
        "greater than zero",
    ),
    case(
        "prewarmer: {slot: {cpu: 500m, memory: 2 GB}}",
        "prewarmer.slot.memory",
        "not a Kubernetes quantity",
    ),
    case(
        "prewarmer: {slot: {cpu: 500m, memory: '-1Gi'}}",
        "prewarmer.slot.memory",
        "greater than zero",
    ),
    case(
        "prewarmer: {doNotDisrupt: maybe}",
        "prewarmer.doNotDisrupt",
        "invalid boolean",
    ),
    case(
        "prewarmer: {image: ''}",
        "prewarmer.image",
        "must not be empty",
    ),
    case(
        "prewarmer: {image: {name: pause}}",
        "prewarmer.image",
        "expected string",
    ),
    case(
        "prewarmer: {schedule: weekly}",
        "prewarmer.schedule",
        "expected sequence",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 1h}]}",
        "prewarmer.schedule[0]",
        "missing field `spareSlots`",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 1h, spareSlots: 2, \
         size: 3}]}",
        "prewarmer.schedule[0].size",
        "unknown field",
    ),
    case(
        "prewarmer: {schedule: [{name: '', cron: '0 9 * * *', duration: 1h, spareSlots: 2}]}",
        "prewarmer.schedule[0].name",
        "must not be empty",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 1h, spareSlots: 2}, \
         {name: a, cron: '0 10 * * *', duration: 1h, spareSlots: 3}]}",
        "prewarmer.schedule[1].name",
        "already the name of prewarmer.schedule[0]",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 1h, spareSlots: 2}, \
         {name: b, cron: '0 9 * * 1-8', duration: 1h, spareSlots: 3}]}",
        "prewarmer.schedule[1].cron",
        "0 9 * * 1-8",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * *', duration: 1h, spareSlots: 2}]}",
        "prewarmer.schedule[0].cron",
        "not a 5-field cron expression",
    ),
    case(
        "prewarmer: {schedule: [{name: a, timezone: Europe/Berlln, cron: '0 9 * * *', \
         duration: 1h, spareSlots: 2}]}",
        "prewarmer.schedule[0].timezone",
        "unknown time zone `Europe/Berlln`",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 0m, spareSlots: 2}]}",
        "prewarmer.schedule[0].duration",
        "must be longer than 0",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: '-4h', spareSlots: 2}]}",
        "prewarmer.schedule[0].duration",
        "is negative",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 200h, spareSlots: 2}]}",
        "prewarmer.schedule[0].duration",
        "longer than a week",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 1h, spareSlots: -2}]}",
        "prewarmer.schedule[0].spareSlots",
        "invalid u32",
    ),
    case(
        "prewarmer: {schedule: [{name: a, cron: '0 9 * * *', duration: 1h, spareSlots: 2, \
         leadTime: early}]}",
        "prewarmer.schedule[0].leadTime",
        "not a duration",
    ),
    // imageCache
    case(
        "imageCache: {maxImage: 3}",
        "imageCache.maxImage",
        "unknown field",
    ),
    case(
        "imageCache: {discover: 'yes please'}",
        "imageCache.discover",
        "invalid boolean",
    ),
    case(
        "tenants: {excludeNamespaces: [Kube_System]}",
        "tenants.excludeNamespaces[0]",
        "is not a namespace name",
    ),
    case(
        "tenants: {namespaceMatchExpressions: [{key: team, operator: In}]}",
        "tenants.namespaceMatchExpressions[0]",
        "needs at least one value",
    ),
    case(
        "tenants: {namespaceMatchExpressions: [{key: team, operator: Equals, values: [a]}]}",
        "tenants.namespaceMatchExpressions[0]",
        "is not an operator",
    ),
    case(
        "tenants: {namespaceMatchExpressions: [{key: warmpool.io/tenant, operator: Exists}]}",
        "tenants.namespaceMatchExpressions[0].key",
        "the tenant label is warmpool's own",
    ),
    case(
        "tenants: {namespaceMatchExpressions: [{key: team, operator: In, values: ['a b']}]}",
        "tenants.namespaceMatchExpressions[0].values",
        "not a valid label value",
    ),
    case(
        "imageCache: {discoverPerNamespace: many}",
        "imageCache.discoverPerNamespace",
        "invalid u32",
    ),
    case(
        "imageCache: {discoverRegistries: ['https://ghcr.io']}",
        "imageCache.discoverRegistries[0]",
        "without a scheme",
    ),
    case(
        "imageCache: {discoverRegistries: [acme]}",
        "imageCache.discoverRegistries[0]",
        "is not a registry",
    ),
    case(
        "imageCache: {maxBytesPerNode: lots}",
        "imageCache.maxBytesPerNode",
        "not a Kubernetes quantity",
    ),
    case(
        "imageCache: {maxBytesPerNode: 0}",
        "imageCache.maxBytesPerNode",
        "greater than zero",
    ),
    case(
        "imageCache: {maxImages: -3}",
        "imageCache.maxImages",
        "invalid u32",
    ),
    case(
        "imageCache: {maxImages: 0, images: [a]}",
        "imageCache.maxImages",
        "raise it or empty the list",
    ),
    case(
        "imageCache: {images: busybox}",
        "imageCache.images",
        "expected sequence",
    ),
    case(
        "imageCache: {images: [busybox, 'has space']}",
        "imageCache.images[1]",
        "not an image reference",
    ),
    case(
        "imageCache: {images: ['']}",
        "imageCache.images[0]",
        "not an image reference",
    ),
    case(
        "imageCache: {images: [nginx, 'ghcr.io/Acme/web:1']}",
        "imageCache.images[1]",
        "`ghcr.io/Acme/web:1` is not an image reference: repository name must be lowercase",
    ),
    case(
        "imageCache: {images: ['nginx:a/b']}",
        "imageCache.images[0]",
        "invalid reference format",
    ),
    case(
        "imageCache: {imagePullSecrets: 3}",
        "imageCache.imagePullSecrets",
        "expected sequence",
    ),
    case(
        "imageCache: {imagePullSecrets: [{name: regcred}]}",
        "imageCache.imagePullSecrets[0]",
        "expected string",
    ),
    case(
        "imageCache: {toolImage: ' '}",
        "imageCache.toolImage",
        "must not be empty",
    ),
    case(
        "imageCache: {architectures: []}",
        "imageCache.architectures",
        "at least one architecture",
    ),
    case(
        "imageCache: {architectures: [amd64, x86_64]}",
        "imageCache.architectures[1]",
        "`x86_64` is not a kubernetes.io/arch value",
    ),
];

/// The dotted paths of every key of the default configuration (list items as `[0]`).
fn default_keys() -> BTreeSet<String> {
    fn walk(v: &Value, at: String, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(path.clone());
                    walk(child, path, out);
                }
            }
            Value::Array(a) => {
                if let Some(first) = a.first() {
                    walk(first, format!("{at}[0]"), out);
                }
            }
            _ => {}
        }
    }
    let defaults = serde_json::to_value(warmpool::config::Config::default()).unwrap();
    let mut keys = BTreeSet::new();
    walk(&defaults, String::new(), &mut keys);
    // Optional keys the defaults leave out.
    keys.insert("pool.tolerations[0].tolerationSeconds".into());
    keys
}

/// The table has a case for every key: a new key without a case fails here.
#[test]
fn the_table_covers_every_configuration_key() {
    let named: BTreeSet<String> = CASES
        .iter()
        .map(|c| {
            // `pool.tolerations[1].x` counts for `pool.tolerations[0].x`.
            let mut p = c.path.to_owned();
            for i in 1..10 {
                p = p.replace(&format!("[{i}]"), "[0]");
            }
            p
        })
        .collect();
    let missing: Vec<String> = default_keys()
        .into_iter()
        .filter(|k| {
            !named
                .iter()
                .any(|n| n == k || n.starts_with(&format!("{k}.")))
        })
        .filter(|k| !named.contains(&format!("{k}[0]")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys without an invalid-value case: {missing:?}"
    );
}

/// Every case, with each of the three subcommands that read a configuration.
#[test]
fn every_invalid_configuration_stops_each_subcommand_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    certs(BIN, dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let mut report = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let file = dir.path().join(format!("config-{i}.yaml"));
        std::fs::write(&file, c.yaml).unwrap();
        let commands: [(&str, Vec<&str>); 3] = [
            (
                "webhook",
                vec![
                    "webhook",
                    "--config",
                    s(&file),
                    "--tls-cert",
                    s(&cert),
                    "--tls-key",
                    s(&key),
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "127.0.0.1:0",
                ],
            ),
            (
                "reconcile",
                vec![
                    "reconcile",
                    "--config",
                    s(&file),
                    "--namespace",
                    "warmpool",
                    "--metrics-listen",
                    "127.0.0.1:0",
                ],
            ),
            (
                "mutate",
                vec![
                    "mutate",
                    "--config",
                    s(&file),
                    "--namespace",
                    "demo-1",
                    "-f",
                    POD,
                ],
            ),
        ];
        for (name, args) in commands {
            let what = format!("{name} with {:?}", c.yaml);
            // A kubeconfig that does not exist: a configuration that passed by mistake would
            // fail on it with another message.
            let out = run(&args, &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
            let line = assert_one_line_error(
                &what,
                &out,
                &[c.path, c.says, "fix the file given by --config"],
            );
            if name == "webhook" {
                report.push(line);
            }
        }
    }
    eprintln!(
        "{} invalid configurations × 3 subcommands; the webhook's lines:",
        CASES.len()
    );
    for line in report {
        eprintln!("  {line}");
    }
}

#[test]
fn a_config_file_that_cannot_be_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let not_utf8 = dir.path().join("latin1.yaml");
    std::fs::write(&not_utf8, b"pool: {affinity: r\xe9quired}\n").unwrap();
    let dangling = dir.path().join("dangling.yaml");
    std::os::unix::fs::symlink(dir.path().join("gone.yaml"), &dangling).unwrap();
    let cases = [
        (dir.path().join("missing.yaml"), "No such file"),
        (dir.path().to_path_buf(), "Is a directory"),
        (not_utf8, "UTF-8"),
        (dangling, "No such file"),
    ];
    for (file, says) in cases {
        for args in [
            vec![
                "mutate",
                "--config",
                s(&file),
                "--namespace",
                "demo-1",
                "-f",
                POD,
            ],
            vec!["reconcile", "--config", s(&file), "--namespace", "warmpool"],
        ] {
            let out = run(&args, &[]);
            assert_one_line_error(
                &format!("{args:?}"),
                &out,
                &["cannot read config file", s(&file), says, "--config"],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates, ports and arguments

fn webhook_args<'a>(
    cert: &'a Path,
    key: &'a Path,
    listen: &'a str,
    metrics: &'a str,
) -> Vec<&'a str> {
    vec![
        "webhook",
        "--tls-cert",
        s(cert),
        "--tls-key",
        s(key),
        "--listen",
        listen,
        "--metrics-listen",
        metrics,
    ]
}

/// Files that exist but cannot be used: the process runs as root in CI, so "unreadable" is a
/// directory or a dangling symlink where the file should be, not a permission.
#[test]
fn unreadable_or_empty_certificates_stop_the_webhook_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    certs(BIN, dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let a_dir = dir.path().join("a-directory");
    std::fs::create_dir(&a_dir).unwrap();
    let dangling = dir.path().join("dangling.key");
    std::os::unix::fs::symlink(dir.path().join("..data/tls.key"), &dangling).unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let truncated = dir.path().join("truncated.key");
    let key_text = std::fs::read_to_string(&key).unwrap();
    std::fs::write(&truncated, &key_text[..key_text.len() / 2]).unwrap();
    let cases: [(&Path, &Path, &[&str]); 6] = [
        (
            &cert,
            &a_dir,
            &["cannot read the TLS key", "a-directory", "--tls-key"],
        ),
        (
            &cert,
            &dangling,
            &["cannot read the TLS key", "dangling.key", "--tls-key"],
        ),
        (
            &a_dir,
            &key,
            &[
                "cannot read the TLS certificate",
                "a-directory",
                "--tls-cert",
            ],
        ),
        (
            &empty,
            &key,
            &["empty.pem", "no PEM certificate", "--tls-cert"],
        ),
        (
            &cert,
            &empty,
            &["empty.pem", "no PEM private key", "--tls-key"],
        ),
        (
            &cert,
            &truncated,
            &["truncated.key", "no PEM private key", "--tls-key"],
        ),
    ];
    for (cert, key, expected) in cases {
        let args = webhook_args(cert, key, "127.0.0.1:0", "127.0.0.1:0");
        let out = run(&args, &[]);
        let line = assert_one_line_error(&format!("{args:?}"), &out, expected);
        eprintln!("{line}");
    }
}

#[test]
fn a_metrics_port_in_use_stops_webhook_and_reconciler_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    certs(BIN, dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();

    let args = webhook_args(&cert, &key, "127.0.0.1:0", &taken);
    let out = run(&args, &[]);
    let line = assert_one_line_error(
        "webhook --metrics-listen taken",
        &out,
        &[&taken, "--metrics-listen", "in use", "choose another"],
    );
    eprintln!("{line}");

    let args = [
        "reconcile",
        "--namespace",
        "warmpool",
        "--metrics-listen",
        &taken,
    ];
    let out = run(&args, &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
    let line = assert_one_line_error(
        "reconcile --metrics-listen taken",
        &out,
        &[&taken, "--metrics-listen", "in use"],
    );
    eprintln!("{line}");
}

#[test]
fn the_reconciler_without_a_usable_kubeconfig_or_namespace_stops_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("kubeconfig");
    std::fs::write(&garbage, "this: [is not a kubeconfig").unwrap();
    for (env, args, expected) in [
        (
            vec![("KUBECONFIG", "/nonexistent/kubeconfig")],
            vec![
                "reconcile",
                "--namespace",
                "warmpool",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            vec!["Kubernetes client", "KUBECONFIG"],
        ),
        (
            vec![("KUBECONFIG", s(&garbage))],
            vec![
                "reconcile",
                "--namespace",
                "warmpool",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            vec!["Kubernetes client", "KUBECONFIG"],
        ),
        (
            vec![("KUBECONFIG", "/nonexistent/kubeconfig")],
            vec![
                "reconcile",
                "--namespace",
                " ",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            vec!["--namespace"],
        ),
    ] {
        let out = run(&args, &env);
        let line = assert_one_line_error(&format!("{args:?} {env:?}"), &out, &expected);
        eprintln!("{line}");
    }
}

/// Bad arguments are clap's: exit 2, the problem on the first line, no panic.
#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    certs(BIN, dir.path());
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            webhook_args(&cert, &key, "localhost:x", "127.0.0.1:0"),
            "--listen",
        ),
        (
            webhook_args(&cert, &key, "127.0.0.1:0", "9090"),
            "--metrics-listen",
        ),
        (vec!["webhook", "--tls-key", s(&key)], "--tls-cert"),
        (
            vec!["reconcile", "--namespace", "w", "--resync", "0s"],
            "--resync",
        ),
        (
            vec!["reconcile", "--namespace", "w", "--resync", "5 weeks"],
            "--resync",
        ),
        (
            vec!["reconcile", "--namespace", "w", "--lease-duration", "x"],
            "--lease-duration",
        ),
        (
            vec!["reconcile", "--namespace", "w", "--concurrency", "0"],
            "--concurrency",
        ),
        (vec!["reconcile"], "--namespace"),
        (
            vec!["mutate", "--namespace", "demo-1", "-o", "xml", "-f", POD],
            "--output",
        ),
        (vec!["certs", "--out", s(dir.path())], "--dns"),
        (vec!["nonsense"], "nonsense"),
    ];
    for (args, expected) in cases {
        let out = run(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}
