//! The I/O shell of `warmpool status`: a fixed number of read calls, whatever the number of
//! tenants, run concurrently in three rounds (the API server and warmpool's Deployments; the
//! configuration they name; then namespaces, pods, warm nodes, Events, webhook configurations,
//! the image cache's DaemonSets and the serving Secret, all at once). A call that is refused becomes a [`Part`] saying which
//! permission would show it; only an unreachable API server fails the command.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::Part;
use super::admission::{served_expiry, serving_pod, tls_secret_name, webhook_deployment};
use super::model::Listed;
use crate::config::{Config, ConfigError};
use crate::core::placeholders::node_pools;
use crate::reconcile::session::{node_label_selector, pod_field_selector};

/// Why the screen cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot reach the Kubernetes API server: {0}")]
    Unreachable(String),
    #[error("the Kubernetes API server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("invalid --config: {0}")]
    Config(#[from] ConfigError),
}

/// One call's deadline: a slow part is reported, not waited for.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The chart's ConfigMap when the webhook Deployment does not name one.
pub const DEFAULT_CONFIGMAP: &str = "warmpool";

/// What a refused or failed call means for its part. `needs` is the permission, as a person
/// would grant it (`list pods (all namespaces)`).
fn part_of<T>(
    result: Result<Result<T, kube::Error>, tokio::time::error::Elapsed>,
    needs: &str,
) -> Part<T> {
    match result {
        Ok(Ok(t)) => Part::Read(t),
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Part::Unreadable {
            needs: needs.to_owned(),
        },
        Ok(Err(e)) => Part::Failed {
            error: crate::status::collect::one_line(&e.to_string()),
        },
        Err(_) => Part::Failed {
            error: format!("no answer within {CALL_TIMEOUT:?}"),
        },
    }
}

pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn list<K>(api: Api<K>, params: ListParams, needs: String) -> Part<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let result = tokio::time::timeout(CALL_TIMEOUT, api.list(&params)).await;
    part_of(result.map(|r| r.map(|l| l.items)), &needs)
}

async fn get_opt<K>(api: Api<K>, name: &str, needs: String) -> Part<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    part_of(
        tokio::time::timeout(CALL_TIMEOUT, api.get_opt(name)).await,
        &needs,
    )
}

/// Lists everything the screen shows. `config` is the `--config` file's, if given.
pub async fn collect(
    client: &Client,
    namespace: &str,
    config: Option<(Config, String)>,
) -> Result<Listed, CollectError> {
    let started = Instant::now();
    let ns = namespace;
    // Round 1: is the API server there (GET /version needs no permission), and warmpool's
    // Deployments (the webhook's names its ConfigMap and Secret).
    let version = tokio::time::timeout(Duration::from_secs(10), client.apiserver_version());
    let deployments = list(
        Api::<Deployment>::namespaced(client.clone(), ns),
        ListParams::default(),
        format!("list deployments in {ns}"),
    );
    let (version, deployments) = tokio::join!(version, deployments);
    match version {
        Err(_) => return Err(CollectError::Timeout(Duration::from_secs(10))),
        Ok(Err(e)) => return Err(CollectError::Unreachable(one_line(&e.to_string()))),
        Ok(Ok(_)) => {}
    }
    let webhook = deployments
        .ok()
        .and_then(|d| webhook_deployment(d).cloned());

    // Round 2: the configuration, unless given.
    let given_config = config.as_ref().map(|_| ());
    let (config, config_source) = match config {
        Some(given) => given,
        None => {
            let name = webhook
                .as_ref()
                .and_then(config_map_name)
                .unwrap_or_else(|| DEFAULT_CONFIGMAP.to_owned());
            let got = get_opt(
                Api::<ConfigMap>::namespaced(client.clone(), ns),
                &name,
                format!("get configmaps {name} in {ns}"),
            )
            .await;
            from_config_map(got, ns, &name)
        }
    };

    // Round 3: everything else at once.
    let pods = Api::<Pod>::all(client.clone());
    // Unlike the reconciler's, warmpool's own and the system namespaces' pods are read too:
    // they take room on the warm nodes (placeholders, the image cache, DaemonSets).
    let live = pod_field_selector(ns)
        .split(',')
        .filter(|p| p.starts_with("status.phase"))
        .collect::<Vec<_>>()
        .join(",");
    let secret_name = webhook.as_ref().and_then(tls_secret_name);
    let secret = async {
        match &secret_name {
            None => None,
            Some(name) => Some((
                name.clone(),
                get_opt(
                    Api::<Secret>::namespaced(client.clone(), ns),
                    name,
                    format!("get secrets {name} in {ns}"),
                )
                .await,
            )),
        }
    };
    let (namespaces, pods, nodes, events, webhook_configurations, tls_secret) = tokio::join!(
        list(
            Api::<Namespace>::all(client.clone()),
            ListParams::default(),
            "list namespaces".into()
        ),
        list(
            pods,
            ListParams::default().fields(&live),
            "list pods (all namespaces)".into()
        ),
        list(
            Api::<Node>::all(client.clone()),
            ListParams::default().labels(&node_label_selector(&config)),
            "list nodes".into()
        ),
        list(
            Api::<Event>::all(client.clone()),
            ListParams::default().fields("type=Warning"),
            "list events (all namespaces)".into()
        ),
        list(
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            ListParams::default(),
            "list mutatingwebhookconfigurations.admissionregistration.k8s.io".into()
        ),
        secret,
    );
    let (headroom_events, node_pools, daemon_sets) = tokio::join!(
        list(
            Api::<Event>::namespaced(client.clone(), ns),
            ListParams::default().fields("reason=HeadroomRestored"),
            format!("list events in {ns}")
        ),
        list_node_pools(client),
        list(
            Api::<DaemonSet>::namespaced(client.clone(), ns),
            ListParams::default(),
            format!("list daemonsets in {ns}")
        ),
    );
    // Round 4, only when the Secret may not be read: what a webhook pod serves.
    let serving = match (&tls_secret, &webhook, &pods) {
        (Some((_, Part::Unreadable { .. })), Some(d), Part::Read(pods)) => serving_pod(d, pods),
        _ => None,
    };
    let served_certificate = match serving {
        Some((pod, port)) => Some((
            pod.clone(),
            served_certificate(client, ns, &pod, port).await,
        )),
        None => None,
    };
    let calls = 2
        + usize::from(given_config.is_none())
        + 8
        + usize::from(secret_name.is_some())
        + usize::from(served_certificate.is_some());
    Ok(Listed {
        namespace: ns.to_owned(),
        config,
        config_source,
        now: jiff::Timestamp::now(),
        namespaces,
        pods,
        nodes,
        deployments,
        daemon_sets,
        events,
        headroom_events,
        node_pools,
        webhook_configurations,
        tls_secret,
        served_certificate,
        calls,
        elapsed: started.elapsed(),
    })
}

/// The certificate expiry webhook pod `pod` reports on its metrics port, through the API
/// server's pod proxy (`get pods/proxy`: the chart's status role has it, not the Secret).
async fn served_certificate(client: &Client, ns: &str, pod: &str, port: i32) -> Part<Option<i64>> {
    let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/metrics");
    let result = match http::Request::get(&path).body(Vec::new()) {
        Ok(request) => tokio::time::timeout(CALL_TIMEOUT, client.request_text(request))
            .await
            .map(|r| r.map(|text| served_expiry(&text))),
        Err(e) => Ok(Err(kube::Error::HttpError(e))),
    };
    part_of(result, &format!("get pods/proxy in {ns}"))
}

/// Karpenter's NodePools as JSON; `None` when the cluster has no NodePool API.
async fn list_node_pools(client: &Client) -> Part<Option<Vec<serde_json::Value>>> {
    let gvk = GroupVersionKind::gvk(node_pools::GROUP, node_pools::VERSION, node_pools::KIND);
    let resource = ApiResource::from_gvk_with_plural(&gvk, node_pools::PLURAL);
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let result = tokio::time::timeout(CALL_TIMEOUT, api.list(&ListParams::default())).await;
    let result = result.map(|r| match r {
        Ok(list) => Ok(Some(
            list.items
                .iter()
                .filter_map(|np| serde_json::to_value(np).ok())
                .collect(),
        )),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    });
    part_of(result, "list nodepools.karpenter.sh")
}

/// The ConfigMap mounted as the webhook Deployment's volume `config`.
fn config_map_name(deployment: &Deployment) -> Option<String> {
    let config_map = super::admission::volume(deployment, "config")?
        .config_map
        .as_ref()?;
    Some(config_map.name.clone())
}

/// The chart's configuration from its ConfigMap, else the defaults, saying which.
pub fn from_config_map(got: Part<Option<ConfigMap>>, ns: &str, name: &str) -> (Config, String) {
    let defaults = |why: String| (Config::default(), format!("built-in defaults ({why})"));
    match got {
        Part::Read(Some(cm)) => match cm.data.as_ref().and_then(|d| d.get("config.yaml")) {
            Some(text) => match Config::from_yaml(text) {
                Ok(config) => (config, format!("ConfigMap {ns}/{name}")),
                Err(e) => defaults(format!(
                    "ConfigMap {ns}/{name}: {}",
                    one_line(&e.to_string())
                )),
            },
            None => defaults(format!("ConfigMap {ns}/{name} has no config.yaml")),
        },
        Part::Read(None) => defaults(format!(
            "no ConfigMap {ns}/{name}; --config FILE to give one"
        )),
        Part::Unreadable { needs } => defaults(format!("ConfigMap not readable: needs {needs}")),
        Part::Failed { error } => defaults(format!("ConfigMap {ns}/{name} not read: {error}")),
    }
}
