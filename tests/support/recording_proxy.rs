//! A recording proxy between a process and the API server: it forwards every request and notes
//! what RBAC sees of it (group, resource, verb, name, namespace, status, metadata only), so a
//! test can compare the calls a process really makes with what it is granted.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use kube::Client;
use serde_json::json;

/// One request as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// The object's name: from the path, or from a `metadata.name=` field selector.
    pub name: String,
    /// Empty for cluster-scoped requests.
    pub namespace: String,
    pub status: u16,
    /// Asked for metadata only (`Accept: …;as=PartialObjectMetadata…`).
    pub metadata_only: bool,
}

/// Splits an API path into (group, namespace, resource, name, subresource).
pub fn parse_path(path: &str) -> Option<(String, String, String, String, String)> {
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

pub fn classify(
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
pub fn url_pairs(query: &str) -> Vec<(String, String)> {
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

pub type ProxyBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Serves plain HTTP on 127.0.0.1 and forwards every request with `upstream` (which carries
/// the ServiceAccount's token), recording it. Returns the port.
pub async fn start_proxy(upstream: Client, calls: Arc<Mutex<Vec<Call>>>) -> u16 {
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

pub async fn forward(
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
pub fn write_kubeconfig(path: &Path, server: &str, ca: Option<&str>, token: Option<&str>) {
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
