//! The HTTPS admission server and the review logic behind it.

pub mod body_budget;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;
