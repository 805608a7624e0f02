//! The [`Status`] screen as data, built from the listed objects by [`super::build`]. Pure: the clock is
//! an argument, every object comes in as the API server returned it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, Secret};
use serde::Serialize;

use super::Part;
use crate::config::Config;

/// Everything `warmpool status` listed (or could not).
#[derive(Debug, Clone)]
pub struct Listed {
    /// warmpool's own namespace.
    pub namespace: String,
    pub config: Config,
    /// Where the configuration came from, as the screen says it.
    pub config_source: String,
    pub now: Timestamp,
    pub namespaces: Part<Vec<Namespace>>,
    /// Every pod not terminated, all namespaces.
    pub pods: Part<Vec<Pod>>,
    /// The warm nodes (the pool label).
    pub nodes: Part<Vec<Node>>,
    /// The Deployments of warmpool's namespace.
    pub deployments: Part<Vec<Deployment>>,
    /// The DaemonSets of warmpool's namespace (the image cache's).
    pub daemon_sets: Part<Vec<DaemonSet>>,
    /// Warning Events, all namespaces.
    pub events: Part<Vec<Event>>,
    /// warmpool's `HeadroomRestored` Events (its namespace).
    pub headroom_events: Part<Vec<Event>>,
    /// Karpenter's NodePools, as JSON; `None`: no NodePool API (no Karpenter).
    pub node_pools: Part<Option<Vec<serde_json::Value>>>,
    pub webhook_configurations: Part<Vec<MutatingWebhookConfiguration>>,
    /// The webhook's serving Secret: its name (from the Deployment) and what reading it gave.
    pub tls_secret: Option<(String, Part<Option<Secret>>)>,
    /// When the Secret may not be read: the certificate expiry a Ready webhook pod reports in
    /// its metrics (read through the API server's pod proxy), by pod name; `None` inside the
    /// part when the pod reports none.
    pub served_certificate: Option<(String, Part<Option<i64>>)>,
    /// How many API calls it took, and how long.
    pub calls: usize,
    pub elapsed: std::time::Duration,
}

/// The whole screen.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub namespace: String,
    pub config: String,
    pub generated_at: String,
    pub tenants: Part<Tenants>,
    pub warm_nodes: Part<Vec<WarmNode>>,
    /// Images the cache left out, by reason, as the reconciler last recorded them.
    pub images_left_out: Part<Vec<LeftOutImages>>,
    pub prewarmer: Part<Option<Prewarmer>>,
    pub webhook: Webhook,
    pub failures: Part<Vec<Failure>>,
}

/// How a tenant started, as the reconciler recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    Warm,
    Cold,
    NotReady,
    /// Not recorded yet: the reconciler writes it once its pods are Ready after the window.
    Measuring,
    /// Never to be recorded: `tenants.timeToReady` is off, or the tenant was past its timeout
    /// with no figure (made before warmpool ran, or while no reconciler led).
    NotMeasured,
}

impl Start {
    pub fn label(self) -> &'static str {
        match self {
            Start::Warm => "warm",
            Start::Cold => "cold",
            Start::NotReady => "not-ready",
            Start::Measuring => "measuring",
            Start::NotMeasured => "unmeasured",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenants {
    pub total: usize,
    /// Tenants by start: warm, cold, not-ready, measuring, unmeasured.
    pub by_start: BTreeMap<Start, usize>,
    pub pods_ready: usize,
    pub pods_total: usize,
    /// Median and largest time to Ready of the warm and of the cold tenants.
    pub warm_seconds: Option<Spread>,
    pub cold_seconds: Option<Spread>,
    pub escaped: Vec<UnsteeredPod>,
    /// Every tenant, newest first.
    pub list: Vec<Tenant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    pub name: String,
    pub start: Start,
    pub ready_seconds: Option<f64>,
    pub pods_ready: usize,
    pub pods_total: usize,
    pub escaped: usize,
    pub age_seconds: i64,
}

/// A tenant pod the webhook never steered ([`crate::core::unsteered::is_unsteered`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsteeredPod {
    pub namespace: String,
    pub pod: String,
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmNode {
    pub name: String,
    pub ready: bool,
    /// Slots free beside every pod on it (placeholders included); `None`: pods not readable.
    pub free_slots: Option<u64>,
    /// Placeholders on it: each one a slot a tenant takes at once by preemption.
    pub placeholders: Option<usize>,
    pub tenant_pods: Option<usize>,
    /// The image cache's images present on it, of those it wants.
    pub images: Option<NodeImages>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeImages {
    pub present: usize,
    pub wanted: usize,
    /// Images that cannot be pulled there.
    pub failed: Vec<String>,
}

/// Images the cache left out for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeftOutImages {
    /// `unusable`, `registry`, `per-namespace`, `max-images`, `byte-budget`.
    pub reason: String,
    pub images: u32,
    /// Which setting left them out, one line.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prewarmer {
    /// Spare slots wanted (spec.replicas) and ready (status.readyReplicas).
    pub wanted: i32,
    pub ready: i32,
    /// The `warmpool.io/schedule-window` in force (`none`), absent without a schedule.
    pub window: Option<String>,
    /// One slot's requests, as the placeholders ask for them.
    pub slot: Option<String>,
    /// What the wanted placeholders reserve: CPU millicores and memory bytes.
    pub reserved_cpu_millicores: u64,
    pub reserved_memory_bytes: u64,
    /// With `pricing` in the configuration: what that reservation costs per month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_cost: Option<MonthlyCost>,
    /// The headroom got back after tenants took it (the reconciler's `HeadroomRestored`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom: Option<HeadroomRestores>,
    /// Placeholders with no node now (`None`: pods not readable).
    pub pending: Option<Vec<String>>,
    /// What the warm Karpenter NodePools' settings mean for the placeholders, one line each
    /// (`None`: no Karpenter, or not readable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_pool_findings: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeadroomRestores {
    /// Restores in the last hour.
    pub last_hour: usize,
    /// The latest: seconds from the preemption to a placeholder Running again, and when.
    pub latest_seconds: Option<f64>,
    pub latest_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonthlyCost {
    pub amount: f64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub deployment: Part<Option<WebhookDeployment>>,
    pub certificate: Part<Option<Certificate>>,
    pub configurations: Part<Vec<WebhookConfiguration>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeployment {
    pub name: String,
    pub wanted: i32,
    pub ready: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    pub secret: String,
    /// The webhook pod whose metrics gave the expiry (when the Secret was not readable).
    pub served_by: Option<String>,
    /// RFC 3339; `None` when tls.crt is missing or not a certificate.
    pub not_after: Option<String>,
    pub days_left: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfiguration {
    pub name: String,
    pub entries: Vec<String>,
    /// The entries' failurePolicy (one value when they agree).
    pub failure_policy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub namespace: String,
    pub reason: String,
    /// `Kind/name` of the object the Event is about.
    pub object: String,
    pub count: i32,
    pub last_seen: String,
    pub message: String,
    /// What to do next, one line.
    pub remedy: String,
}

/// The names of tenant namespaces, for the other parts.
pub(super) type TenantNames = BTreeMap<String, Namespace>;
