//! One subject of a test crate at a time, the tests of that subject side by side.
//!
//! The end-to-end tests were a test binary per subject, run one after another; in one binary
//! libtest runs them on as many threads as there are cores, whatever their module. Some subjects
//! change what the whole cluster sees (the chart's webhook configurations, NodePools,
//! PriorityClasses, real nodes joining and leaving) and assert on what another subject's tests
//! would disturb, so a test first enters its subject: it waits while another subject has tests
//! running, then runs beside the tests of its own.

use std::sync::{Condvar, Mutex, PoisonError};

/// The subject running now and how many of its tests are.
static RUNNING: Mutex<(Option<&'static str>, usize)> = Mutex::new((None, 0));
static LEFT: Condvar = Condvar::new();

/// Held for the length of a test; the subject is free when the last of its tests drops it.
#[must_use = "the subject is left when this is dropped"]
pub struct Subject(());

/// Waits until no other subject has a test running, then enters `subject` (the test's
/// `module_path!()`).
pub fn enter(subject: &'static str) -> Subject {
    let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    while running.0.is_some_and(|current| current != subject) {
        running = LEFT.wait(running).unwrap_or_else(PoisonError::into_inner);
    }
    running.0 = Some(subject);
    running.1 += 1;
    Subject(())
}

impl Drop for Subject {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
        running.1 -= 1;
        if running.1 == 0 {
            running.0 = None;
            LEFT.notify_all();
        }
    }
}
