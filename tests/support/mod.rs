//! Helpers shared by the end-to-end tests and the demo: the local control plane, fake nodes,
//! and the real `warmpool` processes under test.
#![allow(dead_code)]

pub mod cluster;
pub mod fakelet;
pub mod helm;
pub mod karpenter;
pub mod loopback;
pub mod objects;
pub mod real_nodes;
pub mod reconciler;
pub mod release;
pub mod scenario;
pub mod static_build;
pub mod tls;
pub mod webhook;
