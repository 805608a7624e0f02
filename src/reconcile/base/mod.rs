//! What every job shares: context, lease, apply, backoff, errors, metrics, clock.
pub mod apply;
pub mod backoff;
pub mod clock;
pub mod context;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod owner;
