//! The objects the reconciler writes ([`PoolObject`]), built from what it observed: the
//! PriorityClass, the prewarmer and the image cache ([`desired`]), the placeholder's slot
//! ([`slot`]) and the images to cache ([`images`]).

pub mod desired;
pub mod images;
pub mod slot;

/// The objects the workloads controller keeps, each with its own backoff and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PoolObject {
    PriorityClass,
    Deployment,
    DaemonSet,
    /// The DaemonSet of discovered images, with `imageCache.imagePullSecrets` only (deleted
    /// otherwise: [`desired::cache_sets`]).
    DiscoveredDaemonSet,
}

impl PoolObject {
    pub const ALL: [PoolObject; 4] = [
        PoolObject::PriorityClass,
        PoolObject::Deployment,
        PoolObject::DaemonSet,
        PoolObject::DiscoveredDaemonSet,
    ];

    /// The `target` label of the metrics, and the backoff key.
    pub fn label(self) -> &'static str {
        match self {
            PoolObject::PriorityClass => "priorityclass",
            PoolObject::Deployment => "deployment",
            PoolObject::DaemonSet => "daemonset",
            PoolObject::DiscoveredDaemonSet => "daemonset-discovered",
        }
    }

    /// Whether a spec change shows in `metadata.generation` (not for a PriorityClass: it has no
    /// status and the API server keeps its generation on update).
    pub fn tracks_generation(self) -> bool {
        !matches!(self, PoolObject::PriorityClass)
    }
}
