//! The command line as a user runs it: `warmpool certs`, `mutate` and `render`, every
//! configuration and start-up error, and the statically linked release binary the image ships.

mod certs;
mod config_errors;
mod mutate;
mod render;
mod static_binary;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
