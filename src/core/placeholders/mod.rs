//! Placeholders' headroom and what the warm NodePools mean for them.
pub mod headroom;
pub mod node_pools;
