//! `warmpool reconcile`: keeps the warm pool in place. I/O only; every decision it acts on is
//! in [`crate::core`].
//!
//! Data flows one way: namespace, pod and node events → the [`watches`] caches → a pure decision
//! in `core` → server-side apply by one of the [`jobs`], written only while this replica holds
//! the Lease ([`base::lease`]).
//!
//! - [`leader`]: the leader loop (election, one [`session`] per leadership term, shutdown).
//! - [`session`]: one leadership term: the watches wired to the jobs.
//! - [`watches`]: [`watches::pods`] (the narrow pod index), [`watches::nodes`] (the warm nodes'
//!   allocatable), [`watches::namespaces`] (a namespace cut down to what the reconciler reads),
//!   [`watches::drift`] (the written objects, re-triggering the workloads).
//! - [`jobs`], one writer each, named after the decision it acts on:
//!   [`jobs::enrolment`] labels namespaces; [`jobs::workloads`] applies the PriorityClass, the
//!   prewarmer and the image cache; [`jobs::spare`] keeps the spare slots in force (a timer at
//!   each change, its Event and gauges); [`jobs::arrivals`] records tenants' arrivals;
//!   [`jobs::image_cache`] reports what the cache holds on each node; [`jobs::tenant_ready`]
//!   times each new tenant to Ready; [`jobs::placeholders`] watches the headroom and the
//!   placeholders with no node; [`jobs::unsteered`] finds (and with `tenants.repair: evict`
//!   evicts) tenant pods that escaped the webhook.
//! - [`base`]: the shared [`base::context::Context`], server-side apply, the Lease, per-object
//!   backoff, warmpool's own Deployment, metrics, errors by kind, the clock.

pub mod base;
pub mod jobs;
pub mod leader;
pub mod session;
pub mod watches;

pub use crate::reconcile::base::context::{PodIdentity, Settings};
pub use crate::reconcile::base::error::Error;
pub use leader::run;
