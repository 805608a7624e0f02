//! `warmpool reconcile`: keeps the warm pool in place.
//!
//! Data flows one way: namespace and pod events → [`observed`] state (tenants, their images and
//! requests) → [`desired`] objects (pure builders) → server-side apply by the [`controller`], which
//! writes only while this replica holds the [`lease`].
//!
//! - [`tenants`]: whether a namespace gets the `warmpool.io/tenant=enabled` label (pure).
//! - [`slot`]: a pod's requests as the scheduler counts them; `prewarmer.slot: auto` (pure).
//! - [`images`]: which images the cache holds, capped and sorted (pure).
//! - [`desired`]: the PriorityClass, the prewarmer Deployment, the image-cache DaemonSet (pure).
//! - [`observed`]: the narrow watch caches and their reduction to [`observed::Observed`].
//! - [`controller`]: kube-runtime wiring, server-side apply, backoff, Events, readiness.
//! - [`lease`]: leader election on the Lease `warmpool-reconciler`.
//! - [`owner`]: warmpool's own Deployment, found from the pod's identity (downward API).
//! - [`metrics`]: the Prometheus metrics; [`error`]: what can fail, by kind.

pub mod backoff;
pub mod controller;
pub mod desired;
pub mod error;
pub mod images;
pub mod lease;
pub mod metrics;
pub mod observed;
pub mod owner;
pub mod slot;
pub mod tenants;

pub use controller::{Settings, run};
pub use error::Error;

/// The field manager of every server-side apply the reconciler sends.
pub const FIELD_MANAGER: &str = "warmpool";
/// The PriorityClass of the placeholder pods (cluster-scoped).
pub const PRIORITY_CLASS: &str = "warmpool-placeholder";
/// The Deployment of placeholder pods, in warmpool's namespace.
pub const PREWARMER: &str = "warmpool-prewarmer";
/// The DaemonSet that pre-pulls images on warm nodes, in warmpool's namespace.
pub const IMAGE_CACHE: &str = "warmpool-image-cache";
/// The Lease that elects the one replica that writes.
pub const LEASE: &str = "warmpool-reconciler";

/// Carried by every object the reconciler writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "warmpool";
/// Keeps Karpenter from consolidating the nodes that hold placeholders.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

/// Where the cache DaemonSet's first init container puts the static no-op program.
pub const CACHE_DIR: &str = "/warmpool-cache";
/// The file name of that program inside [`CACHE_DIR`]: a copy of the `warmpool` binary, run as
/// `warmpool noop` (exits 0 at once).
pub const NOOP_BINARY: &str = "warmpool";
