//! One module per subcommand: its arguments and the thin shell that runs it.

pub mod certs;
pub mod mutate;
pub mod reconcile;
pub mod render;
pub mod status;
pub mod webhook;
