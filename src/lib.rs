//! warmpool: new Kubernetes tenants start on warm nodes with their images already pulled.
//!
//! The tree is the architecture. Every decision is a pure function in [`core`] (no API client, no
//! tokio, no clock or environment reads: instants and observations are parameters), unit-tested
//! without a cluster; the rest are thin shells around it:
//!
//! - [`core`]: is this namespace a tenant, what patch does this pod need, how many placeholders
//!   now, which images to cache, what the objects written look like, how a tenant's start went.
//! - [`config`]: the configuration file's shapes, its validation and the one duration grammar.
//! - [`webhook`]: the HTTPS server and the AdmissionReview codec around [`core::mutation`].
//! - [`reconcile`]: the leader loop, the watches ([`reconcile::watches`]) and one job per object it
//!   writes ([`reconcile::jobs`]), on shared plumbing ([`reconcile::base`]).
//! - [`status`]: `warmpool status`, read (collect) → decided (model) → printed (render).
//! - [`kubectl`]: manifests as kubectl reads and writes them, for `warmpool mutate`.
//! - [`telemetry`]: logs, metrics, the admin endpoints and shutdown.
//! - [`cli`]: one module per subcommand, its flags and the shell that runs it.

pub mod cli;
pub mod config;
pub mod core;
pub mod kubectl;
pub mod reconcile;
pub mod status;
pub mod telemetry;
pub mod webhook;
