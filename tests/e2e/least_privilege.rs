//! Least privilege, measured: the API calls `warmpool reconcile` really makes, against the RBAC
//! the chart grants.
//!
//! The chart's ServiceAccount, ClusterRole, Role and bindings (rendered by `helm template`) are
//! created on the local control plane; the real reconciler then runs with that ServiceAccount's
//! token and nothing else, through a recording proxy in this test that forwards every request
//! to the API server and notes its verb, resource, name, namespace and status. The reconciler is
//! driven through every path that needs a permission: start-up as the chart's pod (its own
//! Pod → ReplicaSet → Deployment), leader election, tenant enrolment with an Event, tenant pods,
//! drift repair, and objects whose immutable fields differ (deleted and re-created).
//!
//! Then, both ways:
//! - every call was allowed (no 403) and is covered by a granted rule — names included where
//!   the rule names its objects, and namespaced writes only in warmpool's own namespace;
//! - every granted (resource, verb) was used, except those listed in [`GRANTED_NOT_EXERCISED`]
//!   with the reason the test cannot make the code use them.
//!
//! tests/chart/ proves the chart's rules against a written list and that the reconciler works
//! with them; this test derives the list from the code's behaviour instead.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt as _, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use support::cluster::{client, client_from, eventually, kubeconfig, repo_root};
use support::reconciler::Run;

use super::BIN;
use support::reconciler::config;
use warmpool::config::Config;

/// Granted, used by the code, and not reachable by this test — with the reason.
const GRANTED_NOT_EXERCISED: &[(&str, &str, &str, &str)] = &[(
    "events.k8s.io",
    "events",
    "patch",
    "kube-runtime's Recorder patches an Event only when the same one repeats (a series); \
         the reconciler records one Event per enrolment",
)];

/// The tests of this file one at a time: the main one replaces the cluster-wide PriorityClass
/// and needs its own reconciler to be the one that repairs it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test gives the PriorityClass another (immutable) value, so the reconciler must delete and
/// re-create it: that exercises the PriorityClass `get` and `delete` it is granted.
const PRIORITY_CLASS_CONFLICT: bool = true;

// ---------------------------------------------------------------------------------------------
// The chart's RBAC

fn helm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WARMPOOL_TEST_HELM")
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new(repo_root().join("tests/tools/helm.sh"))
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )),
        other if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("helm is required in CI: {other:?}")
        }
        other => {
            eprintln!("SKIP: no helm (tests/tools/helm.sh): {other:?}");
            None
        }
    }
}

/// The chart rendered for `release` in `namespace`: the documents of the RBAC kinds.
fn rendered_rbac(helm: &Path, release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let chart = repo_root().join("charts/warmpool");
    let out = std::process::Command::new(helm)
        .args(["template", release])
        .arg(chart)
        .args(["--namespace", namespace])
        .args(values)
        // The reconciler's own grants only: the read-only role of `warmpool status` is bound
        // to people, not to its ServiceAccount (tests/chart/rbac.rs checks it).
        .args(["--set", "statusRole.create=false"])
        .output()
        .expect("helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|doc| {
            matches!(
                doc["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect()
}

/// One RBAC rule, flattened.
#[derive(Debug, Clone)]
struct Grant {
    group: String,
    resource: String,
    names: Vec<String>,
    verbs: Vec<String>,
    /// `None` for a ClusterRole (everywhere), else the Role's namespace.
    namespace: Option<String>,
}

fn grants(docs: &[Value]) -> Vec<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for doc in docs {
        let namespace = match doc["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(doc["metadata"]["namespace"].as_str().unwrap().to_owned()),
            _ => continue,
        };
        for rule in doc["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    out.push(Grant {
                        group: group.clone(),
                        resource,
                        names: strings(&rule["resourceNames"]),
                        verbs: strings(&rule["verbs"]),
                        namespace: namespace.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Creates the chart's RBAC objects (the ClusterRole and its binding are deleted on drop).
struct Installed {
    cluster_names: Vec<String>,
}

impl Installed {
    async fn create(client: &Client, docs: &[Value]) -> Installed {
        let pp = PostParams::default();
        let mut cluster_names = Vec::new();
        for doc in docs {
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
            let created = match doc["kind"].as_str().unwrap() {
                "ServiceAccount" => Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                "Role" => Api::<Role>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                "RoleBinding" => Api::<RoleBinding>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                "ClusterRole" => {
                    cluster_names.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
                    Api::<ClusterRole>::all(client.clone())
                        .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                        .await
                        .map(|_| ())
                }
                "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                other => panic!("unexpected {other}"),
            };
            created.unwrap_or_else(|e| panic!("create {}: {e}", doc["kind"]));
        }
        Installed { cluster_names }
    }
}

impl Drop for Installed {
    /// The cluster-wide objects go, also when the test fails (kubectl: a kube client cannot be
    /// used from a destructor of the test's runtime).
    fn drop(&mut self) {
        let (Some(kubeconfig), false) = (kubeconfig(), self.cluster_names.is_empty()) else {
            return;
        };
        let kubectl = std::process::Command::new(repo_root().join("tests/cluster/cluster.sh"))
            .arg("kubectl-path")
            .output();
        if let Ok(out) = kubectl {
            let kubectl = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            for kind in ["clusterrolebinding", "clusterrole"] {
                let _ = std::process::Command::new(&kubectl)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["delete", kind, "--wait=false", "--ignore-not-found"])
                    .args(&self.cluster_names)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The recording proxy

/// One request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    group: String,
    resource: String,
    verb: String,
    /// The object's name: from the path, or from a `metadata.name=` field selector.
    name: String,
    /// Empty for cluster-scoped requests.
    namespace: String,
    status: u16,
    /// Asked for metadata only (`Accept: …;as=PartialObjectMetadata…`).
    metadata_only: bool,
}

/// Splits an API path into (group, namespace, resource, name, subresource).
fn parse_path(path: &str) -> Option<(String, String, String, String, String)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let get = |i: usize| rest.get(i).map(|s| s.to_string()).unwrap_or_default();
    Some(match rest {
        // /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]
        ["namespaces", _, _, ..] => (group, get(1), get(2), get(3), get(4)),
        // /api/v1/namespaces[/{name}], /apis/g/v/{resource}[/{name}[/{sub}]]
        [_, ..] => (group, String::new(), get(0), get(1), get(2)),
        [] => return None,
    })
}

fn classify(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    status: u16,
) -> Vec<Call> {
    let metadata_only = headers.get_all(http::header::ACCEPT).iter().any(|v| {
        v.to_str()
            .unwrap_or_default()
            .contains("as=PartialObjectMetadata")
    });
    let Some((group, namespace, resource, mut name, sub)) = parse_path(uri.path()) else {
        return Vec::new();
    };
    let resource = if sub.is_empty() {
        resource
    } else {
        format!("{resource}/{sub}")
    };
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default();
    let verb = match (method.as_str(), name.is_empty()) {
        ("GET", false) => "get",
        ("GET", true) if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) => {
            "watch"
        }
        ("GET", true) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "delete",
        ("DELETE", true) => "deletecollection",
        _ => "other",
    };
    if name.is_empty()
        && let Some(selector) = query.get("fieldSelector")
        && let Some(n) = selector.strip_prefix("metadata.name=")
        && !n.contains(',')
    {
        name = n.to_owned();
    }
    let call = Call {
        group,
        resource,
        verb: verb.to_owned(),
        name,
        namespace,
        status,
        metadata_only,
    };
    // A server-side apply that creates its object is authorised as a create as well.
    let mut calls = vec![call.clone()];
    if verb == "patch" && status == 201 {
        calls.push(Call {
            verb: "create".into(),
            ..call
        });
    }
    calls
}

/// `a=b&c=d%3De` → pairs, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (decode(k), decode(v))))
        .collect()
}

type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves plain HTTP on 127.0.0.1 and forwards every request with `upstream` (which carries
/// the ServiceAccount's token), recording it. Returns the port.
async fn start_proxy(upstream: Client, calls: Arc<Mutex<Vec<Call>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Bounded by the test: the task ends with the test's runtime.
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (upstream, calls) = (upstream.clone(), Arc::clone(&calls));
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: http::Request<Incoming>| {
                        let (upstream, calls) = (upstream.clone(), Arc::clone(&calls));
                        async move { Ok::<_, Infallible>(forward(upstream, calls, request).await) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    port
}

async fn forward(
    upstream: Client,
    calls: Arc<Mutex<Vec<Call>>>,
    request: http::Request<Incoming>,
) -> http::Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "authorization" | "content-length" | "connection"
        ) {
            builder = builder.header(name, value);
        }
    }
    let forwarded = builder
        .body(kube::client::Body::from(body.to_vec()))
        .unwrap();
    match upstream.send(forwarded).await {
        Ok(response) => {
            let status = response.status().as_u16();
            calls.lock().unwrap().extend(classify(
                &parts.method,
                &parts.uri,
                &parts.headers,
                status,
            ));
            response.map(|b| b.map_err(|e| Box::new(e) as _).boxed_unsync())
        }
        Err(e) => {
            let body = http_body_util::Full::new(Bytes::from(format!("proxy: {e}")))
                .map_err(|never| match never {})
                .boxed_unsync();
            http::Response::builder().status(502).body(body).unwrap()
        }
    }
}

/// A kubeconfig for `server` with a token, or no credentials at all.
fn write_kubeconfig(path: &Path, server: &str, ca: Option<&str>, token: Option<&str>) {
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca {
        cluster["certificate-authority-data"] = json!(ca);
    }
    let user = token.map_or(json!({}), |t| json!({"token": t}));
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    std::fs::write(path, serde_saphyr::to_string(&config).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The test

/// An object of warmpool's, as a stranger left it: our name and managed-by label, another
/// selector (immutable), so that applying ours fails and the reconciler must re-create it.
fn conflicting(kind: &str, name: &str) -> Value {
    let template = json!({
        "metadata": {"labels": {"app": "stranger"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    });
    json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "warmpool"}},
        "spec": {
            "selector": {"matchLabels": {"app": "stranger"}},
            "template": template,
        },
    })
}

/// Every list and watch of namespaces and of the three written objects asked the API server for
/// metadata only; those of pods and nodes (spec and status are needed) did not.
fn assert_metadata_only(calls: &BTreeSet<Call>) {
    let watched: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c.verb.as_str(), "list" | "watch"))
        .collect();
    for resource in ["namespaces", "deployments", "daemonsets", "priorityclasses"] {
        let of: Vec<&&Call> = watched.iter().filter(|c| c.resource == resource).collect();
        assert!(!of.is_empty(), "no list/watch of {resource}");
        for c in of {
            assert!(c.metadata_only, "a full list/watch of {resource}: {c:?}");
        }
    }
}

/// A reconciler whose configuration needs no tenant pod and no node (no discovery, a fixed slot)
/// opens no watch of either: the cluster's pods are never streamed to it, only the image cache's
/// own pods in warmpool's namespace (what each warm node holds).
#[tokio::test]
async fn only_what_the_configuration_needs_is_watched() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    // The tenants' time to Ready (on by default) needs both watches; off, nothing does.
    let config = config(|c| {
        c.image_cache.discover = false;
        c.tenants.time_to_ready.enabled = false;
    });
    let run = Run::new(&client, BIN.as_ref(), config).await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    // The admin's credentials: permissions are not the question here.
    let port = start_proxy(client.clone(), Arc::clone(&calls)).await;
    let proxy_kubeconfig = run.dir.path().join("proxy.kubeconfig");
    write_kubeconfig(
        &proxy_kubeconfig,
        &format!("http://127.0.0.1:{port}"),
        None,
        None,
    );
    let tenant = run.tenant("1");
    run.create_namespace(&tenant, &[]).await;
    let proxy = proxy_kubeconfig.to_str().unwrap();
    let mut rec = run.spawn("watches", &[], &[("KUBECONFIG", proxy)]);
    rec.wait_ready(Duration::from_secs(60)).await;
    eventually("the tenant enrolled", Duration::from_secs(30), || async {
        let t = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get(&tenant)
            .await
            .ok()?;
        (t.labels().get("warmpool.io/tenant").map(String::as_str) == Some("enabled")).then_some(())
    })
    .await;
    rec.terminate();
    let calls: BTreeSet<Call> = calls.lock().unwrap().iter().cloned().collect();
    let pods_or_nodes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.group.is_empty() && matches!(c.resource.as_str(), "pods" | "nodes"))
        .filter(|c| !(c.resource == "pods" && c.namespace == run.namespace))
        .collect();
    assert!(
        pods_or_nodes.is_empty(),
        "pods or nodes read though nothing needs them: {pods_or_nodes:?}\n{}",
        rec.logs()
    );
    assert_metadata_only(&calls);
    run.cleanup().await;
}

#[tokio::test]
async fn the_reconciler_uses_exactly_the_permissions_the_chart_grants() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let _serial = SERIAL.lock().await;
    let Some(helm) = helm() else { return };
    // slot: auto, so that the warm nodes are watched too; spareSlots auto, so that arrivals are
    // recorded (the chart then grants the ConfigMap warmpool-arrivals); repair: evict, so that
    // escaped tenant pods are evicted (the chart then grants pods/eviction).
    let run = Run::new(
        &client,
        BIN.as_ref(),
        Config::from_yaml(
            "prewarmer: {slot: auto, spareSlots: {auto: {max: 3}}}\ntenants: {repair: evict}",
        )
        .expect("the test's configuration"),
    )
    .await;
    let ns = run.namespace.clone();
    let docs = rendered_rbac(
        &helm,
        &run.id,
        &ns,
        &[
            "--set",
            "prewarmer.spareSlots.auto.max=3",
            "--set",
            "tenants.repair=evict",
        ],
    );
    let granted = grants(&docs);
    let sa = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .expect("a ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let _installed = Installed::create(&client, &docs).await;

    // warmpool's own Deployment, whose pod the reconciler plays (POD_NAME), as the chart's.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let own: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "warmpool"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "warmpool-under-test"}},
            "template": {
                "metadata": {"labels": {"app": "warmpool-under-test"}},
                "spec": {"containers": [{"name": "warmpool", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &own)
        .await
        .expect("own Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = eventually("the Deployment's pod", Duration::from_secs(60), || async {
        let list = pods
            .list(&ListParams::default().labels("app=warmpool-under-test"))
            .await
            .ok()?;
        list.items.into_iter().next().map(|p| p.name_any())
    })
    .await;

    // Objects whose immutable fields differ from what the reconciler wants.
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(conflicting("Deployment", "warmpool-prewarmer")).unwrap(),
        )
        .await
        .expect("conflicting prewarmer");
    daemonsets
        .create(
            &PostParams::default(),
            &serde_json::from_value(conflicting("DaemonSet", "warmpool-image-cache")).unwrap(),
        )
        .await
        .expect("conflicting image cache");
    // The PriorityClass is cluster-wide: removed, so that the reconciler creates it; with
    // PRIORITY_CLASS_CONFLICT, replaced by one with another value (immutable).
    let priority_classes: Api<PriorityClass> = Api::all(client.clone());
    let _ = priority_classes
        .delete("warmpool-placeholder", &DeleteParams::default())
        .await;
    eventually(
        "the PriorityClass gone",
        Duration::from_secs(30),
        || async {
            priority_classes
                .get_opt("warmpool-placeholder")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    if PRIORITY_CLASS_CONFLICT {
        let stranger: PriorityClass = serde_json::from_value(json!({
            "metadata": {"name": "warmpool-placeholder", "labels": {"app.kubernetes.io/managed-by": "warmpool"}},
            "value": -11,
            "preemptionPolicy": "Never",
        }))
        .unwrap();
        priority_classes
            .create(&PostParams::default(), &stranger)
            .await
            .expect("conflicting PriorityClass");
    }

    // The ServiceAccount's token, and the proxy that uses it.
    let token: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .unwrap();
    let token = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create_token_request(&sa, &PostParams::default(), &token)
        .await
        .expect("a token for the ServiceAccount")
        .status
        .expect("token status")
        .token;
    let admin: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig().unwrap()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let sa_kubeconfig = run.dir.path().join("sa.kubeconfig");
    write_kubeconfig(
        &sa_kubeconfig,
        cluster["server"].as_str().unwrap(),
        cluster["certificate-authority-data"].as_str(),
        Some(&token),
    );
    let calls = Arc::new(Mutex::new(Vec::new()));
    let port = start_proxy(client_from(&sa_kubeconfig).await, Arc::clone(&calls)).await;
    let proxy_kubeconfig = run.dir.path().join("proxy.kubeconfig");
    write_kubeconfig(
        &proxy_kubeconfig,
        &format!("http://127.0.0.1:{port}"),
        None,
        None,
    );

    let tenant = run.tenant("1");
    run.create_namespace(&tenant, &[]).await;
    let proxy = proxy_kubeconfig.to_str().unwrap();
    let mut rec = run.spawn(
        "least-privilege",
        &["--lease-duration", "4s"],
        &[
            ("KUBECONFIG", proxy),
            ("POD_NAME", &pod),
            ("POD_NAMESPACE", &ns),
        ],
    );
    rec.wait_ready(Duration::from_secs(60)).await;
    let selector_of = |spec: Option<Value>| {
        spec.and_then(|s| {
            s["selector"]["matchLabels"]["app"]
                .as_str()
                .map(str::to_owned)
        })
    };
    eventually(
        "conflicting objects re-created, tenant enrolled",
        Duration::from_secs(90),
        || async {
            let d = deployments.get_opt("warmpool-prewarmer").await.ok()??;
            let ds = daemonsets.get_opt("warmpool-image-cache").await.ok()??;
            let pc = priority_classes
                .get_opt("warmpool-placeholder")
                .await
                .ok()??;
            let stranger = Some("stranger".to_owned());
            (selector_of(serde_json::to_value(d.spec).ok()) != stranger
                && selector_of(serde_json::to_value(ds.spec).ok()) != stranger
                && pc.value == -10)
                .then_some(())?;
            let t = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .get(&tenant)
                .await
                .ok()?;
            (t.labels().get("warmpool.io/tenant").map(String::as_str) == Some("enabled"))
                .then_some(())
        },
    )
    .await;
    // A tenant pod, and drift: the prewarmer deleted, repaired.
    run.create_pod(
        &tenant,
        "app",
        json!({"containers": [{"name": "a", "image": "busybox:1.36"}]}),
    )
    .await;
    // A tenant pod that escaped the webhook (there is none here), owned by a ReplicaSet, then one
    // the webhook steered (its annotation and the pool's placement): the webhook is back, so the
    // escaped one is evicted (pods/eviction) and its ReplicaSet makes another.
    let replicasets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), &tenant);
    let escaped = json!({
        "metadata": {"name": "escaped"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "escaped"}},
            "template": {
                "metadata": {"labels": {"app": "escaped"}},
                "spec": {"automountServiceAccountToken": false,
                         "containers": [{"name": "a", "image": "busybox:1.36"}]},
            },
        },
    });
    replicasets
        .create(
            &PostParams::default(),
            &serde_json::from_value(escaped).unwrap(),
        )
        .await
        .expect("the escaped pods' ReplicaSet");
    let tenant_pods: Api<Pod> = Api::namespaced(client.clone(), &tenant);
    let first = eventually("the escaped pod", Duration::from_secs(60), || async {
        let list = tenant_pods
            .list(&ListParams::default().labels("app=escaped"))
            .await
            .ok()?;
        list.items.into_iter().next().map(|p| p.name_any())
    })
    .await;
    let steered: Pod = serde_json::from_value(json!({
        "metadata": {"name": "steered", "annotations": {"warmpool.io/injected": "node-affinity,tolerations"}},
        "spec": {
            "automountServiceAccountToken": false,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "workload-type", "operator": "In", "values": [run.pool]}]}]}}},
            "tolerations": [{"key": "workload-type", "operator": "Equal", "value": run.pool,
                             "effect": "NoSchedule"}],
            "containers": [{"name": "a", "image": "busybox:1.36"}],
        },
    }))
    .unwrap();
    tenant_pods
        .create(&PostParams::default(), &steered)
        .await
        .expect("a steered pod");
    eventually(
        "the escaped pod evicted",
        Duration::from_secs(60),
        || async {
            let list = tenant_pods
                .list(&ListParams::default().labels("app=escaped"))
                .await
                .ok()?;
            (!list
                .items
                .iter()
                .any(|p| p.name_any() == first && p.metadata.deletion_timestamp.is_none()))
            .then_some(())
        },
    )
    .await;
    deployments
        .delete("warmpool-prewarmer", &DeleteParams::default())
        .await
        .expect("delete the prewarmer");
    eventually(
        "the prewarmer repaired",
        Duration::from_secs(60),
        || async {
            let d = deployments.get_opt("warmpool-prewarmer").await.ok()??;
            d.metadata.deletion_timestamp.is_none().then_some(())
        },
    )
    .await;
    // The arrivals record written (created by server-side apply)...
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the arrivals record written",
        Duration::from_secs(60),
        || async {
            let cm = configmaps.get_opt("warmpool-arrivals").await.ok()??;
            cm.data?.get("arrivals")?.contains(&tenant).then_some(())
        },
    )
    .await;
    // Long enough for a few Lease renewals and a resync.
    tokio::time::sleep(Duration::from_secs(6)).await;
    rec.terminate();
    // ...and read by the next leadership term.
    let mut next = run.spawn(
        "least-privilege-2",
        &["--lease-duration", "4s"],
        &[
            ("KUBECONFIG", proxy),
            ("POD_NAME", &pod),
            ("POD_NAMESPACE", &ns),
        ],
    );
    next.wait_ready(Duration::from_secs(60)).await;
    eventually(
        "the next term read the arrivals record",
        Duration::from_secs(60),
        || async { next.logs().contains("arrivals record read").then_some(()) },
    )
    .await;
    next.terminate();
    let logs = rec.logs() + &next.logs();
    let calls: BTreeSet<Call> = calls.lock().unwrap().iter().cloned().collect();

    // 1. Every call allowed, and covered by a granted rule.
    let covers = |g: &Grant, c: &Call| {
        g.group == c.group
            && g.resource == c.resource
            && g.verbs.contains(&c.verb)
            && (g.names.is_empty() || g.names.contains(&c.name))
            && g.namespace.as_ref().is_none_or(|n| *n == c.namespace)
    };
    let mut report = Vec::new();
    for c in &calls {
        assert_ne!(c.status, 403, "refused: {c:?}\n{logs}");
        assert!(
            granted.iter().any(|g| covers(g, c)),
            "a call no rule grants: {c:?}"
        );
        report.push(format!(
            "{} {}/{} {}{}→ {}",
            c.verb,
            if c.group.is_empty() { "core" } else { &c.group },
            c.resource,
            if c.namespace.is_empty() {
                String::new()
            } else {
                format!(
                    "ns={} ",
                    if c.namespace == ns {
                        "own"
                    } else {
                        "tenant/other"
                    }
                )
            },
            if c.name.is_empty() {
                String::new()
            } else {
                format!("name={} ", c.name)
            },
            c.status
        ));
    }
    // Writes into namespaces other than its own: only Events, and evictions of tenants' pods.
    for c in &calls {
        let write = matches!(c.verb.as_str(), "create" | "update" | "patch" | "delete");
        if write && !c.namespace.is_empty() && c.namespace != ns {
            let what = (c.group.as_str(), c.resource.as_str());
            let eviction_of_a_tenant_pod =
                what == ("", "pods/eviction") && c.namespace.starts_with(&run.tenant_prefix);
            assert!(
                what == ("events.k8s.io", "events") || eviction_of_a_tenant_pod,
                "a write outside warmpool's namespace: {c:?}"
            );
        }
    }

    // 1b. Namespaces and the written objects are watched for their metadata only.
    assert_metadata_only(&calls);

    // 2. Every granted (group, resource, verb) used, or excused.
    let mut unused = Vec::new();
    for g in &granted {
        for verb in &g.verbs {
            let used = calls.iter().any(|c| {
                c.group == g.group && c.resource == g.resource && &c.verb == verb && c.status < 400
            });
            let excused = GRANTED_NOT_EXERCISED
                .iter()
                .any(|(gr, r, v, _)| *gr == g.group && *r == g.resource && v == verb);
            if !used && !excused {
                unused.push(format!("{}/{} {verb}", g.group, g.resource));
            }
        }
    }
    report.dedup();
    eprintln!(
        "least privilege: {} distinct calls by the reconciler, all granted:\n  {}",
        calls.len(),
        report.join("\n  ")
    );
    for (g, r, v, why) in GRANTED_NOT_EXERCISED {
        eprintln!("granted, not exercised here: {g}/{r} {v}: {why}");
    }
    assert!(
        unused.is_empty(),
        "granted by the chart but never used by the reconciler: {unused:?}"
    );
    run.cleanup().await;
}
