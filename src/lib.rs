//! warmpool: new Kubernetes tenants start on warm nodes with their images already pulled.
//!
//! The library holds every decision as a pure function (`tenant`, `mutation`,
//! `reconcile::desired`, `scheduling`) and thin I/O shells around them (`webhook`,
//! `reconcile`); the binary in `main.rs` only parses the command line.

pub mod arrivals;
pub mod capacity;
pub mod certs;
pub mod clock;
pub mod commands;
pub mod config;
pub mod duration;
pub mod escape;
pub mod manifest;
pub mod mutation;
pub mod plain_http;
pub mod pricing;
pub mod reconcile;
pub mod scale_down;
pub mod scheduling;
pub mod status;
pub mod telemetry;
pub mod tenant;
pub mod webhook;
