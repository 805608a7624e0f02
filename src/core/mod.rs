//! Every decision warmpool makes, pure: no API client, no tokio, no clock or environment reads
//! (instants and observations come in as parameters), so each is unit-tested without a cluster.
//!
//! - [`tenant`]: is this namespace a tenant? [`enrolment`]: does it get (or lose) the label?
//! - [`mutation`]: what patch does this pod need (with the scheduler model it is judged by)?
//! - [`unsteered`]: did a tenant pod escape the webhook, and is it to be evicted?
//! - [`spare`]: how many placeholders to keep now (windows, arrivals, gentle scale-down).
//! - [`pool`]: the objects written (PriorityClass, prewarmer, image cache), the slot, the images.
//! - [`placeholders`]: a placeholder's headroom, and what the warm NodePools mean for them.
//! - [`image_cache`]: tags that name different images on different nodes.
//! - [`tenant_ready`], [`start_phases`]: a new tenant's time to Ready, warm or cold, and where it
//!   went.
//! - [`pricing`]: what the warm capacity costs.
//! - [`names`]: the names of the objects, labels and annotations warmpool writes.

pub mod enrolment;
pub mod image_cache;
pub mod mutation;
pub mod names;
pub mod placeholders;
pub mod pool;
pub mod pricing;
pub mod spare;
pub mod start_phases;
pub mod tenant;
pub mod tenant_ready;
pub mod unsteered;
