//! The names warmpool gives the objects it writes and the labels and annotations it puts on
//! them: one place, read by the builders, the jobs, `warmpool status` and the tests.

/// The field manager of every server-side apply the reconciler sends.
pub const FIELD_MANAGER: &str = "warmpool";
/// The PriorityClass of the placeholder pods (cluster-scoped).
pub const PRIORITY_CLASS: &str = "warmpool-placeholder";
/// The Deployment of placeholder pods, in warmpool's namespace.
pub const PREWARMER: &str = "warmpool-prewarmer";
/// The DaemonSet that pre-pulls images on warm nodes, in warmpool's namespace.
pub const IMAGE_CACHE: &str = "warmpool-image-cache";
/// With `imageCache.imagePullSecrets`, the DaemonSet that holds the discovered images, pulled
/// with no credentials ([`crate::core::pool::desired::cache_sets`]).
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
