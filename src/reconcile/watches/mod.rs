//! The narrow watch caches the jobs read.
pub mod drift;
pub mod namespaces;
pub mod nodes;
pub mod pods;
