//! The HTTPS admission server and the review logic behind it.

pub mod review;
