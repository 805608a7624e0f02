//! How many placeholders to keep now: windows, arrivals, gentle scale-down, the decision.
pub mod arrivals;
pub mod decide;
pub mod scale_down;
pub mod windows;
