//! What the image cache holds on each node, and tags that moved.
pub mod moved_tags;
pub mod report;
