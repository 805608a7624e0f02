//! Per-object exponential backoff (kube-runtime has none built in): after the n-th failure in a
//! row an object waits `base · 2ⁿ⁻¹` (capped at `max`, plus up to 20 % jitter so that objects that
//! failed together do not retry together) before it is tried again, whatever triggers it; a
//! success forgets the object.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The delay after `failures` failures in a row (≥ 1), without jitter.
pub fn delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << exponent).min(max)
}

/// Up to 20 % more, derived from the key and the failure count (stable, so testable).
fn jitter(delay: Duration, key: &str, failures: u32) -> Duration {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes().chain(failures.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    delay + delay.mul_f64(f64::from(hash % 1000) / 5000.0)
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    retry_at: Instant,
}

/// The failure counts of the objects that are failing now.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failure of `key`; returns how long to wait before the next attempt.
    pub fn failed(&self, key: &str, now: Instant) -> Duration {
        let mut entries = self.entries();
        let entry = entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            retry_at: now,
        });
        entry.failures = entry.failures.saturating_add(1);
        let wait = jitter(
            delay(self.base, self.max, entry.failures),
            key,
            entry.failures,
        );
        entry.retry_at = now + wait;
        wait
    }

    /// Forgets `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.entries().remove(key);
    }

    /// How long `key` must still wait, if it is backing off.
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let entries = self.entries();
        let entry = entries.get(key)?;
        (entry.retry_at > now).then(|| entry.retry_at - now)
    }

    /// How many failures in a row `key` has had.
    pub fn failures(&self, key: &str) -> u32 {
        self.entries().get(key).map_or(0, |e| e.failures)
    }

    /// Drops the entries of objects that no longer exist.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.entries().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn delays_double_up_to_the_cap() {
        let max = Duration::from_secs(60);
        let got: Vec<u64> = (1..=9).map(|n| delay(S, max, n).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(delay(S, max, u32::MAX), max, "no overflow");
        assert_eq!(delay(S, max, 0), S);
    }

    #[test]
    fn jitter_adds_at_most_a_fifth_and_is_stable() {
        for n in 1..50 {
            let d = Duration::from_secs(10);
            let j = jitter(d, "demo-1", n);
            assert!(j >= d && j <= d.mul_f64(1.2), "{j:?}");
            assert_eq!(j, jitter(d, "demo-1", n));
        }
        assert_ne!(
            jitter(Duration::from_secs(10), "demo-1", 1),
            jitter(Duration::from_secs(10), "demo-2", 1)
        );
    }

    #[test]
    fn failures_hold_an_object_and_success_releases_it() {
        let b = Backoff::new(S, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(b.remaining("x", now), None);
        let first = b.failed("x", now);
        assert!(first >= S && first < 2 * S);
        assert!(b.remaining("x", now).is_some());
        assert_eq!(b.remaining("x", now + first), None);
        let second = b.failed("x", now);
        assert!(second >= 2 * S, "{second:?}");
        assert_eq!(b.failures("x"), 2);
        assert_eq!(b.failures("y"), 0, "objects back off independently");
        b.succeeded("x");
        assert_eq!(b.failures("x"), 0);
        assert_eq!(b.remaining("x", now), None);
        b.failed("gone", now);
        b.retain(|k| k != "gone");
        assert_eq!(b.failures("gone"), 0);
    }
}
