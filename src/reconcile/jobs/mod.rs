//! One writer each, fed by the watches; decisions come from crate::core.
pub mod arrivals;
pub mod enrolment;
pub mod image_cache;
pub mod placeholders;
pub mod spare;
pub mod tenant_ready;
pub mod unsteered;
pub mod workloads;
