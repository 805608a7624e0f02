//! The real `warmpool webhook` binary, with certificates from `warmpool certs`, spoken to over
//! real TLS by a rustls client (hyper's HTTP/1 and HTTP/2 clients over tokio-rustls).
//!
//! Each test starts its own server on ports the kernel picks (`--listen 127.0.0.1:0`) and reads
//! the bound addresses from its JSON "webhook listening" log line; every wait has a deadline.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use support::loopback::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::BIN;

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test]
async fn fixtures_are_answered_with_their_uid_and_a_patch_that_applies() {
    let (webhook, ca) = Webhook::start(BIN);

    let input = fixture("pod-create.json");
    let reply = post(webhook.addr, &ca, input.clone()).await;
    assert_eq!(reply.status, 200);
    let out = reply.json();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], request_uid(&input).as_str());
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(out["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = serde_json::from_slice::<Value>(&input).unwrap()["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"];
    assert!(
        terms[0]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["key"] == "workload-type" && e["values"][0] == "cargocats"),
        "{pod}"
    );
    assert!(
        pod["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "workload-type" && t["effect"] == "NoSchedule"),
        "{pod}"
    );
    assert!(pod["metadata"]["annotations"]["warmpool.io/injected"].is_string());

    // UPDATE and a non-Pod pass unchanged, with their own uid.
    for name in ["pod-update.json", "configmap-create.json"] {
        let input = fixture(name);
        let reply = post(webhook.addr, &ca, input.clone()).await;
        assert_eq!(reply.status, 200, "{name}");
        let out = reply.json();
        assert_eq!(
            out["response"]["uid"],
            request_uid(&input).as_str(),
            "{name}"
        );
        assert_eq!(out["response"]["allowed"], true, "{name}");
        assert!(out["response"].get("patch").is_none(), "{name}: {out}");
    }

    // A large pod (~90 KiB of review) is answered like any other.
    let input = fixture("pod-create-large.json");
    let reply = post(webhook.addr, &ca, input.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["response"]["uid"],
        request_uid(&input).as_str()
    );
}

#[tokio::test]
async fn bad_bodies_get_a_json_4xx_and_the_server_keeps_answering() {
    let (webhook, ca) = Webhook::start(BIN);
    let bad: [(&str, &[u8]); 4] = [
        ("malformed", b"{\"kind\": \"AdmissionReview\", "),
        ("empty", b""),
        ("wrong shape", b"{\"kind\":\"Pod\"}"),
        ("not JSON at all", b"\x00\xff\xfe"),
    ];
    for (what, body) in bad {
        let reply = post(webhook.addr, &ca, body.to_vec()).await;
        assert_json_error(&reply, 400);
        eprintln!("{what}: {}", reply.json()["error"]);
    }

    // Over 3 MiB: 413 with a JSON body, on HTTP/1.1 and on HTTP/2.
    let huge = vec![b' '; 4 * 1024 * 1024];
    for proto in [Proto::H1, Proto::H2] {
        let reply = send(webhook.addr, &ca, proto, "POST", "/mutate", huge.clone())
            .await
            .unwrap();
        assert_json_error(&reply, 413);
    }
    // The same without a Content-Length (chunked): cut off at the limit while reading.
    let tls = tls_connect(webhook.addr, &ca, Proto::H1).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let chunks = (0..64).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![
            b' ';
            64 * 1024
        ])))
    });
    let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let request = http::Request::post("/mutate")
        .header(http::header::HOST, "localhost")
        .body(body)
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(
        response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some()
    );
    assert_json_error(&read_reply(response).await.unwrap(), 413);

    // Unknown routes and methods are JSON errors too.
    let reply = send(webhook.addr, &ca, Proto::H1, "GET", "/nope", Vec::new())
        .await
        .unwrap();
    assert_json_error(&reply, 404);
    let reply = send(webhook.addr, &ca, Proto::H1, "GET", "/mutate", Vec::new())
        .await
        .unwrap();
    assert_json_error(&reply, 405);

    // Still up and still right.
    let reply = post(webhook.addr, &ca, fixture("pod-create.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn plaintext_http_to_the_tls_port_gets_no_http_response() {
    let (webhook, ca) = Webhook::start(BIN);
    let mut tcp = TcpStream::connect(webhook.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed the connection"
    );
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // TLS on the same port is fine.
    let reply = send(webhook.addr, &ca, Proto::H1, "GET", "/healthz", Vec::new())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn http2_is_negotiated_and_served() {
    let (webhook, ca) = Webhook::start(BIN);
    let tls = tls_connect(webhook.addr, &ca, Proto::H2).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);

    let reply = send(webhook.addr, &ca, Proto::H2, "GET", "/readyz", Vec::new())
        .await
        .unwrap();
    assert_eq!((reply.status, reply.version), (200, http::Version::HTTP_2));
    let input = fixture("pod-create.json");
    let reply = send(
        webhook.addr,
        &ca,
        Proto::H2,
        "POST",
        "/mutate",
        input.clone(),
    )
    .await
    .unwrap();
    assert_eq!((reply.status, reply.version), (200, http::Version::HTTP_2));
    assert_eq!(
        reply.json()["response"]["uid"],
        request_uid(&input).as_str()
    );
}

/// Kubernetes updates a mounted Secret by writing a new `..<timestamp>` directory and renaming
/// a `..data` symlink onto it; `tls.crt` and `tls.key` are symlinks through `..data`.
#[tokio::test]
async fn a_certificate_rotated_by_symlink_swap_is_served_to_new_connections() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let swap_to = |generation: &str| {
        std::os::unix::fs::symlink(generation, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    };
    certs(BIN, &root.join("..v1"));
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file)).unwrap();
    }
    let webhook = Webhook::start_with(BIN, &root.join("tls.crt"), &root.join("tls.key"), &[]);
    let (ca1, ca2) = (root.join("..v1/ca.crt"), root.join("..v2/ca.crt"));
    let healthz = |ca: PathBuf, proto| async move {
        send(webhook.addr, &ca, proto, "GET", "/healthz", Vec::new()).await
    };
    assert_eq!(healthz(ca1.clone(), Proto::H1).await.unwrap().status, 200);

    // An HTTP/2 connection opened before the rotation.
    let io = TokioIo::new(tls_connect(webhook.addr, &ca1, Proto::H2).await.unwrap());
    let (mut open, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(connection);

    certs(BIN, &root.join("..v2"));
    swap_to("..v2");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match healthz(ca2.clone(), Proto::H1).await {
            Ok(reply) if reply.status == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "new certificate not served within 10s: {other:?} {:?}",
                webhook.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // New connections no longer get the old certificate…
    assert!(healthz(ca1.clone(), Proto::H1).await.is_err());
    // …while the connection opened before keeps working.
    let request = request(
        Proto::H2,
        webhook.addr,
        "POST",
        "/mutate",
        fixture("pod-create.json"),
    );
    let reply = read_reply(open.send_request(request).await.unwrap())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);

    // A broken pair (a key that is not PEM) is not served: the previous one stays.
    certs(BIN, &root.join("..v3"));
    std::fs::write(root.join("..v3/tls.key"), b"not a key").unwrap();
    swap_to("..v3");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = admin_get(webhook.metrics, "/metrics").await.unwrap();
        if series(
            &metrics,
            "warmpool_webhook_certificate_reloads_total{result=\"failure\"}",
        ) >= 1.0
        {
            assert_eq!(
                series(
                    &metrics,
                    "warmpool_webhook_certificate_reloads_total{result=\"success\"}"
                ),
                1.0,
                "{metrics}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broken pair not noticed: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(healthz(ca2.clone(), Proto::H1).await.unwrap().status, 200);
    assert!(
        webhook
            .logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("still serving the previous one")),
        "{:?}",
        webhook.logs()
    );
}

#[tokio::test]
async fn metrics_count_reviews_by_outcome_and_injections() {
    let (webhook, ca) = Webhook::start(BIN);
    post(webhook.addr, &ca, fixture("pod-create.json")).await;
    post(webhook.addr, &ca, fixture("pod-create.json")).await;
    post(webhook.addr, &ca, fixture("pod-update.json")).await;
    post(webhook.addr, &ca, b"{".to_vec()).await;

    let (status, metrics) = admin_get(webhook.metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let reviews = |outcome: &str| {
        series(
            &metrics,
            &format!("warmpool_webhook_reviews_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(reviews("patched"), 2.0, "{metrics}");
    assert_eq!(reviews("ignored"), 1.0, "{metrics}");
    assert_eq!(reviews("malformed"), 1.0, "{metrics}");
    assert_eq!(
        series(
            &metrics,
            "warmpool_webhook_injections_total{what=\"tolerations\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        series(&metrics, "warmpool_webhook_review_duration_seconds_count"),
        4.0,
        "{metrics}"
    );
    assert_eq!(admin_get(webhook.metrics, "/readyz").await.unwrap().0, 200);
    assert_eq!(admin_get(webhook.metrics, "/healthz").await.unwrap().0, 200);

    // One JSON log line per patched review, inside a span with the review's identity.
    let logs = webhook.logs();
    let patched: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "pod patched")
        .collect();
    assert_eq!(patched.len(), 2, "{logs:?}");
    let span = &patched[0]["span"];
    assert_eq!(span["name"], "review");
    assert_eq!(span["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(span["namespace"], "demo-1");
    assert_eq!(span["decision"], "patched");
    assert!(
        span["pod"].is_string() && span["duration_us"].is_u64(),
        "{span}"
    );
}

/// SIGTERM with no grace period (`--shutdown-grace 0`): unready at once, no new connections,
/// the request in flight is answered, exit 0.
#[tokio::test]
async fn sigterm_turns_unready_drains_the_request_in_flight_and_exits_zero() {
    let (mut webhook, ca) = Webhook::start_args(BIN, &["--shutdown-grace", "0"]);
    assert_eq!(admin_get(webhook.metrics, "/readyz").await.unwrap().0, 200);

    // A request whose body is only half sent when the signal arrives.
    let body = fixture("pod-create.json");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut tls = tls_connect(webhook.addr, &ca, Proto::H1).await.unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    webhook.sigterm();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, _) = admin_get(webhook.metrics, "/readyz").await.unwrap();
        if status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "still ready after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No new connections while draining.
    let refused = send(webhook.addr, &ca, Proto::H1, "GET", "/healthz", Vec::new()).await;
    assert!(refused.is_err(), "{refused:?}");

    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .expect("no answer to the request in flight")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(&request_uid(&body)), "{answer}");

    let status = webhook.wait(Duration::from_secs(15));
    assert!(status.success(), "{status}: {:?}", webhook.logs());
    assert!(
        webhook
            .logs()
            .iter()
            .any(|l| l.contains("\"drained\":true")),
        "{:?}",
        webhook.logs()
    );
}

#[tokio::test]
async fn start_up_problems_fail_fast_with_one_line_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    certs(BIN, &dir.path().join("a"));
    certs(BIN, &dir.path().join("b"));
    let path = |p: &str| dir.path().join(p).into_os_string();
    let listen = |addr: &str| -> Vec<OsString> {
        vec![
            "--listen".into(),
            addr.into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let with = |cert: &str, key: &str, more: Vec<OsString>| -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--tls-cert".into(),
            path(cert),
            "--tls-key".into(),
            path(key),
        ];
        args.extend(more);
        args
    };
    let bad_config = dir.path().join("config.yaml");
    std::fs::write(&bad_config, "pool:\n  affinity: sometimes\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();

    let listen_taken = [taken.as_str(), "--listen"];
    let cases: Vec<(Vec<OsString>, &[&str])> = vec![
        (
            with("a/missing.crt", "a/tls.key", listen("127.0.0.1:0")),
            &["missing.crt", "--tls-cert"],
        ),
        (
            with("a/tls.crt", "a/missing.key", listen("127.0.0.1:0")),
            &["missing.key", "--tls-key"],
        ),
        (
            with("a/tls.crt", "b/tls.key", listen("127.0.0.1:0")),
            &["does not belong", "b/tls.key"],
        ),
        (
            with("a/tls.key", "a/tls.key", listen("127.0.0.1:0")),
            &["no PEM certificate"],
        ),
        (
            with("a/tls.crt", "a/tls.key", listen(&taken)),
            &listen_taken,
        ),
        (
            {
                let mut args = with("a/tls.crt", "a/tls.key", listen("127.0.0.1:0"));
                args.extend(["--config".into(), bad_config.clone().into_os_string()]);
                args
            },
            &["pool.affinity", "--config"],
        ),
    ];
    for (args, expected) in cases {
        let stderr = start_failure(BIN, &args);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{args:?}: {stderr} lacks {e}");
        }
    }
}

/// Clients that stall are cut off by the handshake, header-read and request deadlines (2 s, 2 s,
/// 4 s), well before the API server's own timeout, and the server keeps answering the others.
#[tokio::test]
async fn stalled_clients_are_cut_off_by_the_deadlines() {
    let (webhook, ca) = Webhook::start(BIN);
    let silent_tcp = async {
        let mut tcp = TcpStream::connect(webhook.addr).await.unwrap();
        let (answer, after) = read_until_closed(&mut tcp, Duration::from_secs(6)).await;
        assert!(answer.is_empty());
        after
    };
    let half_headers = async {
        let mut tls = tls_connect(webhook.addr, &ca, Proto::H1).await.unwrap();
        tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let (answer, after) = read_until_closed(&mut tls, Duration::from_secs(6)).await;
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        after
    };
    let half_body = half_a_body_gets_the_deadlines_503(&webhook, &ca, "4s");
    let (silent_tcp, half_headers, half_body) = tokio::join!(silent_tcp, half_headers, half_body);
    for (what, after, deadline) in [
        ("silent TCP", silent_tcp, 2),
        ("half headers", half_headers, 2),
        ("half body", half_body, 4),
    ] {
        assert!(
            after >= Duration::from_secs(deadline) - Duration::from_millis(500)
                && after < Duration::from_secs(deadline + 2),
            "{what} cut off after {after:?}, expected about {deadline}s"
        );
    }
    let reply = post(webhook.addr, &ca, fixture("pod-create.json")).await;
    assert_eq!(reply.status, 200);
    let (_, metrics) = admin_get(webhook.metrics, "/metrics").await.unwrap();
    assert_eq!(
        series(
            &metrics,
            "warmpool_webhook_reviews_total{outcome=\"timeout\"}"
        ),
        1.0,
        "{metrics}"
    );
}

/// SIGTERM with a grace period (as in a rollout, while the endpoints still send reviews here):
/// unready at once on both /readyz, yet new connections are accepted and reviews answered, over
/// HTTP/1.1 and HTTP/2, and a connection opened before keeps serving; when the grace is over the
/// port closes, the open HTTP/2 connection is told to go away (GOAWAY), and the process exits 0.
/// Each phase is logged, in order.
#[tokio::test]
async fn after_sigterm_reviews_are_served_unready_through_the_grace_period_then_the_port_closes() {
    // Long enough for the checks below to run inside it on a loaded machine; the test asserts
    // from the logs that they did.
    let (mut webhook, ca) = Webhook::start_args(BIN, &["--shutdown-grace", "8s"]);
    let io = TokioIo::new(tls_connect(webhook.addr, &ca, Proto::H2).await.unwrap());
    let (mut open, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);

    webhook.sigterm();
    wait_unready(&webhook).await;
    let https_readyz = send(webhook.addr, &ca, Proto::H1, "GET", "/readyz", Vec::new())
        .await
        .unwrap();
    assert_eq!(https_readyz.status, 503, "HTTPS /readyz during the grace");

    let body = fixture("pod-create.json");
    for proto in [Proto::H1, Proto::H2] {
        let reply = send(webhook.addr, &ca, proto, "POST", "/mutate", body.clone())
            .await
            .unwrap_or_else(|e| panic!("{proto:?} review during the grace: {e}"));
        assert_eq!(reply.status, 200, "{proto:?}");
        assert_eq!(reply.json()["response"]["uid"], request_uid(&body).as_str());
        assert!(reply.json()["response"]["patch"].is_string(), "{proto:?}");
    }
    let reply = read_reply(
        open.send_request(request(
            Proto::H2,
            webhook.addr,
            "POST",
            "/mutate",
            body.clone(),
        ))
        .await
        .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "the connection opened before the signal");
    let logs = webhook.logs();
    assert!(
        log_index(&logs, "grace period over").is_none(),
        "the checks above ran after the grace period, not during it: {logs:?}"
    );

    // Then the port closes…
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(webhook.addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => assert!(
                Instant::now() < deadline,
                "port still open 20 s after SIGTERM: {:?}",
                webhook.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // …the connection opened before is closed by the drain (GOAWAY), so its client reconnects
    // (in a cluster: to another pod)…
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the HTTP/2 connection is closed by the drain")
        .unwrap()
        .unwrap();
    // …and the process exits 0, having said each phase.
    let status = webhook.wait(Duration::from_secs(15));
    assert!(status.success(), "{status}: {:?}", webhook.logs());
    let logs = webhook.logs();
    let phases: Vec<Option<usize>> = [
        "shutdown requested; not ready, still serving during the grace period while the endpoints drop this pod",
        "grace period over",
        "stopped accepting; draining in-flight requests",
        "webhook stopped",
    ]
    .iter()
    .map(|m| log_index(&logs, m))
    .collect();
    assert!(
        phases.iter().all(Option::is_some) && phases.is_sorted(),
        "phases {phases:?} in {logs:?}"
    );
}

/// A second SIGTERM during the grace period ends it at once: the webhook stops accepting,
/// drains and exits without waiting out a grace period of ten minutes.
#[tokio::test]
async fn a_second_sigterm_cuts_the_grace_period_short() {
    let (mut webhook, ca) = Webhook::start_args(BIN, &["--shutdown-grace", "10m"]);
    webhook.sigterm();
    wait_unready(&webhook).await;
    let reply = post(webhook.addr, &ca, fixture("pod-create.json")).await;
    assert_eq!(reply.status, 200, "served during the grace");

    webhook.sigterm();
    let status = webhook.wait(Duration::from_secs(20));
    assert!(status.success(), "{status}: {:?}", webhook.logs());
    let logs = webhook.logs();
    assert!(
        log_index(&logs, "second shutdown signal; grace period cut short").is_some()
            && log_index(&logs, "grace period over").is_none(),
        "{logs:?}"
    );
}

/// `--request-timeout` sets the whole-request deadline (the chart passes 80% of the API
/// server's `timeoutSeconds`): a body that stops half way gets the 503 of that deadline.
#[tokio::test]
async fn the_request_deadline_follows_the_flag() {
    let (webhook, ca) = Webhook::start_args(BIN, &["--request-timeout", "1500ms"]);
    half_a_body_gets_the_deadlines_503(&webhook, &ca, "1.5s").await;
}

/// Sends a review's headers and only the first 100 bytes of its body, then reads until the
/// server closes (at most 8 s): it must answer the 503 of its request deadline, which names
/// `deadline` ("4s"). Returns how long the server took.
async fn half_a_body_gets_the_deadlines_503(
    webhook: &Webhook,
    ca: &Path,
    deadline: &str,
) -> Duration {
    let body = fixture("pod-create.json");
    let mut tls = tls_connect(webhook.addr, ca, Proto::H1).await.unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..100]).await.unwrap();
    tls.flush().await.unwrap();
    let (answer, after) = read_until_closed(&mut tls, Duration::from_secs(8)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let error = format!("{{\"error\":\"request not completed within {deadline}\"}}");
    assert!(answer.contains(&error), "{answer}");
    after
}

/// The served certificate's notAfter is a gauge, and a certificate that expires within 30 days
/// is warned about at start (the daily check and the reload say it again).
#[tokio::test]
async fn the_certificate_expiry_is_a_gauge_and_a_near_expiry_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args([
            "certs",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--days",
            "10",
        ])
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let webhook = Webhook::start_with(
        BIN,
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        &[],
    );
    let (_, metrics) = admin_get(webhook.metrics, "/metrics").await.unwrap();
    let expiry = series(
        &metrics,
        "warmpool_webhook_certificate_expiry_timestamp_seconds",
    );
    let left = expiry - started;
    assert!(
        (10.0 * 86_400.0 - 300.0..=10.0 * 86_400.0 + 300.0).contains(&left),
        "notAfter {expiry} is {left} s from now: {metrics}"
    );
    let logs = webhook.logs();
    let warning = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "the serving TLS certificate expires soon; renew it before then (the Secret mounted at --tls-cert/--tls-key is re-read without a restart)")
        .unwrap_or_else(|| panic!("no expiry warning: {logs:?}"));
    assert_eq!(warning["level"], "WARN");
    // Ten days from the moment `certs` ran, whole days left when the webhook started.
    assert!(
        matches!(warning["days_left"].as_i64(), Some(9 | 10)),
        "{warning}"
    );
    assert!(warning["not_after"].is_string(), "{warning}");
    let listening = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "webhook listening")
        .unwrap();
    assert_eq!(listening["certificate_expires"], warning["not_after"]);
}
