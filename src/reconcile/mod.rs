//! `warmpool reconcile`: keeps the warm pool in place.
//!
//! Data flows one way: namespace and pod events → [`observed`] state (tenants, their images and
//! requests) → [`desired`] objects (pure builders) → server-side apply, written only while this
//! replica holds the [`lease`].
//!
//! Pure decisions:
//! - [`enrolment`]: whether a namespace gets (or loses) the `warmpool.io/tenant=enabled` label.
//! - [`slot`]: a pod's requests as the scheduler counts them; `prewarmer.slot: auto`.
//! - [`images`]: which images the cache holds, capped and sorted.
//! - [`desired`]: the PriorityClass, the prewarmer Deployment, the image-cache DaemonSet.
//! - [`headroom`]: a placeholder's preemption until one is Running again, and placeholders
//!   with no node; [`node_pools`]: what the warm Karpenter NodePools' settings mean for them.
//! - [`tenant_ready`]: which pods count for a new tenant, when they were all Ready, warm or cold.
//! - [`observed`]: the narrow watch caches and their reduction to [`observed::Observed`];
//!   [`nodes`]: the warm nodes' allocatable; [`namespace_cache`]: a namespace cut down to what
//!   the reconciler reads of it.
//!
//! The I/O shells, by job:
//! - [`leader`]: the leader loop (election, one [`session`] per leadership term, shutdown).
//! - [`session`]: one leadership term: the watches wired to the queues.
//! - [`enroller`]: labels namespaces and records Events.
//! - [`drift`]: the watches of the written objects that re-trigger the workloads.
//! - [`workloads`]: applies the three objects from the latest observation.
//! - [`schedule`]: the spare slots kept (decided by the pure [`spare`]: the schedule of
//!   [`crate::capacity`], the arrivals of [`crate::arrivals`], the gentle scale-down of
//!   [`crate::scale_down`]), a timer at each change, its Event and gauges.
//! - [`arrivals`]: the tenants' arrivals, in memory and (with `spareSlots: {auto: ...}`) in the
//!   ConfigMap [`ARRIVALS`], written at most every 30 s.
//! - [`cache_health`]: what the image cache holds on each node (pure report), exported as
//!   metrics, with an Event for an image that cannot be pulled and for a tag that names
//!   different images on different nodes ([`moved_tags`], pure).
//! - [`ready_watch`]: each new tenant's pods watched until Ready; the histogram, Event and
//!   annotations of its time to Ready.
//! - [`placeholders`]: the placeholder pods watched for the headroom (histogram, Events), the
//!   ones with no node (gauge, Karpenter's reason) and the warm NodePools' findings.
//! - [`unsteered`]: tenant pods that escaped the webhook (decided by [`crate::escape`]):
//!   gauge, an Event each, evicted with `tenants.repair: evict`.
//! - [`apply`]: server-side apply, and delete-and-re-create on an immutable field.
//! - [`context`]: [`Settings`] and the one [`context::Context`] they all share.
//! - [`lease`]: leader election on the Lease `warmpool-reconciler`; [`owner`]: warmpool's own
//!   Deployment; [`backoff`]: per-object retries; [`metrics`]; [`error`]: what can fail, by kind.

pub mod apply;
pub mod arrivals;
pub mod backoff;
pub mod cache_health;
pub mod context;
pub mod desired;
pub mod drift;
pub mod enroller;
pub mod enrolment;
pub mod error;
pub mod headroom;
pub mod images;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod moved_tags;
pub mod namespace_cache;
pub mod node_pools;
pub mod nodes;
pub mod observed;
pub mod owner;
pub mod placeholders;
pub mod ready_watch;
pub mod schedule;
pub mod session;
pub mod slot;
pub mod spare;
pub mod start_phases;
pub mod tenant_ready;
pub mod unsteered;
pub mod workloads;

pub use context::{PodIdentity, Settings};
pub use error::Error;
pub use leader::run;

/// The field manager of every server-side apply the reconciler sends.
pub const FIELD_MANAGER: &str = "warmpool";
/// The PriorityClass of the placeholder pods (cluster-scoped).
pub const PRIORITY_CLASS: &str = "warmpool-placeholder";
/// The Deployment of placeholder pods, in warmpool's namespace.
pub const PREWARMER: &str = "warmpool-prewarmer";
/// The DaemonSet that pre-pulls images on warm nodes, in warmpool's namespace.
pub const IMAGE_CACHE: &str = "warmpool-image-cache";
/// With `imageCache.imagePullSecrets`, the DaemonSet that holds the discovered images, pulled
/// with no credentials ([`desired::cache_sets`]).
pub const IMAGE_CACHE_DISCOVERED: &str = "warmpool-image-cache-discovered";
/// On the image-cache DaemonSet: what tenants run that the cache leaves out, by reason
/// (`max-images=3 byte-budget=1`); absent when nothing is.
pub const IMAGES_LEFT_OUT: &str = "warmpool.io/images-left-out";
/// The Lease that elects the one replica that writes.
pub const LEASE: &str = "warmpool-reconciler";
/// The ConfigMap, in warmpool's namespace, recording tenants' arrivals for
/// `prewarmer.spareSlots: {auto: ...}` (written only with that setting).
pub const ARRIVALS: &str = "warmpool-arrivals";

/// Carried by every object the reconciler writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "warmpool";
/// On placeholders only with `prewarmer.doNotDisrupt` (off by default): it keeps Karpenter from
/// consolidating their nodes, and holds up drift and expiry.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";

/// On the prewarmer Deployment when `prewarmer.schedule` has windows: the name of the window
/// whose `spareSlots` are in force, or [`NO_WINDOW`] while none raises them. Absent without a
/// schedule.
pub const SCHEDULE_WINDOW: &str = "warmpool.io/schedule-window";
/// The [`SCHEDULE_WINDOW`] value outside every window: `prewarmer.spareSlots` is in force.
pub const NO_WINDOW: &str = "none";

/// Where the cache DaemonSet's init container puts the static `warmpool` binary.
pub const CACHE_DIR: &str = "/warmpool-cache";
/// The file name of that copy inside [`CACHE_DIR`], run as `warmpool hold` by the container of
/// every cached image (waits for SIGTERM).
pub const NOOP_BINARY: &str = "warmpool";
