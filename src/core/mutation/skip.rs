//! Why a pod is left as it is, and the annotations that say so: read by the pod view and decided
//! by the mutation.

/// Annotation listing what warmpool injected into a pod.
pub const INJECTED_ANNOTATION: &str = "warmpool.io/injected";
/// Annotation that makes warmpool leave a pod alone.
pub const SKIP_ANNOTATION: &str = "warmpool.io/skip";
/// Annotation the kubelet puts on mirror pods of static pods.
pub(crate) const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Why a pod was left as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("pod is already bound to node `{0}`")]
    AlreadyBound(String),
    #[error("pod is annotated {SKIP_ANNOTATION}=true")]
    OptedOut,
    #[error("mirror pods of static pods cannot be changed")]
    MirrorPod,
    #[error("pod is pinned to one node ({0}); steering it to the pool would leave it Pending")]
    NodePinned(String),
    #[error("the pod's own node affinity or nodeSelector excludes nodes labelled {0}")]
    ExcludesPool(String),
    #[error("unexpected shape at {0}; the pod is left unchanged")]
    UnexpectedShape(&'static str),
}

impl SkipReason {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SkipReason::AlreadyBound(_) => "bound",
            SkipReason::OptedOut => "skip_annotation",
            SkipReason::MirrorPod => "mirror_pod",
            SkipReason::NodePinned(_) => "node_pinned",
            SkipReason::ExcludesPool(_) => "excludes_pool",
            SkipReason::UnexpectedShape(_) => "unexpected_shape",
        }
    }
}
