//! The webhook without a cluster: AdmissionReview handling on the fixtures (`review`), the
//! whole review path fuzzed (`fuzz_review`), the real `warmpool webhook` over real TLS on
//! 127.0.0.1 (`server`), and hostile clients against it (`hostile`). The harness is the
//! `support` crate (tests/support: `loopback`, `tls`, `hostile`).

mod fuzz_review;
mod hostile;
mod review;
mod server;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
