//! The arrivals the spare slots are sized from ([`crate::core::spare::arrivals`], pure), as the reconciler
//! keeps them: in memory, fed by the namespace watch (a tenant's `creationTimestamp`), and, with
//! `prewarmer.spareSlots: {auto: ...}`, in the ConfigMap [`ARRIVALS`] of warmpool's namespace,
//! so that they outlive their namespaces and the reconciler.
//!
//! The ConfigMap is read once per leadership term and written by server-side apply at most once
//! per [`FLUSH_EVERY`], and only when an arrival was added: a burst of a thousand tenants costs
//! one write, not a thousand, and at any rate of arrivals the record costs at most
//! `1 + elapsed / FLUSH_EVERY` writes (2 a minute). What a crash can lose is the arrivals of the
//! last [`FLUSH_EVERY`] whose namespaces are also deleted before the next leader starts (the
//! others are read again from their namespaces).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::core::names::{ARRIVALS, FIELD_MANAGER};
use crate::core::pool::desired;
use crate::core::spare::arrivals::{Arrivals, MAX_ARRIVALS};
use crate::reconcile::base::context::{Context, lock};

/// The data key of the record in the ConfigMap.
pub const DATA_KEY: &str = "arrivals";
/// The record is written at most this often.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// The arrivals known to this leadership term.
pub struct Book {
    state: Mutex<State>,
    /// Woken when an arrival is added (the flusher waits on it).
    added: Notify,
    /// How long arrivals are kept: the lookback, and at least the scale-down's quiet time.
    keep: SignedDuration,
    /// Written to the ConfigMap (`spareSlots: {auto: ...}`); otherwise memory only.
    persist: bool,
}

struct State {
    arrivals: Arrivals,
    /// Arrivals added since the last write.
    unsaved: bool,
}

impl Book {
    /// A book for `keep`, empty; `persist` only with `spareSlots: {auto: ...}`.
    pub fn new(arrivals: Arrivals, keep: SignedDuration, persist: bool) -> Book {
        Book {
            state: Mutex::new(State {
                arrivals,
                unsaved: false,
            }),
            added: Notify::new(),
            keep,
            persist,
        }
    }

    /// Notes the tenants seen now (their creation instants on the reconciler's clock); true
    /// when one was new.
    pub fn note<'a>(
        &self,
        tenants: impl IntoIterator<Item = (Timestamp, &'a str)>,
        now: Timestamp,
    ) -> bool {
        let oldest = now.checked_sub(self.keep).unwrap_or(now);
        let mut state = lock(&self.state);
        let mut added = false;
        for (at, name) in tenants {
            // Older than what is kept: it would be pruned at once.
            if at > oldest && state.arrivals.insert(at, name) {
                added = true;
            }
        }
        if added {
            state.arrivals.prune(now, self.keep, MAX_ARRIVALS);
            state.unsaved = true;
            drop(state);
            self.added.notify_one();
        }
        added
    }

    /// Runs `f` on the arrivals known now.
    pub fn with<T>(&self, f: impl FnOnce(&Arrivals) -> T) -> T {
        f(&lock(&self.state).arrivals)
    }
}

/// The book of a leadership term: with `persist`, the ConfigMap's record (read once; missing or
/// unreadable is an empty record, with a warning for the latter).
pub async fn load(ctx: &Context, keep: SignedDuration, persist: bool) -> Book {
    if !persist {
        return Book::new(Arrivals::default(), keep, false);
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let arrivals = match api.get_opt(ARRIVALS).await {
        Ok(Some(cm)) => {
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get(DATA_KEY))
                .map_or("", String::as_str);
            let (arrivals, skipped) = Arrivals::decode(text);
            if skipped > 0 {
                tracing::warn!(
                    configmap = ARRIVALS,
                    skipped,
                    "lines of the arrivals record that do not read as `<unix seconds> <namespace>` were left out"
                );
            }
            tracing::info!(
                configmap = ARRIVALS,
                arrivals = arrivals.len(),
                "arrivals record read"
            );
            arrivals
        }
        Ok(None) => {
            tracing::info!(
                configmap = ARRIVALS,
                "no arrivals record yet: it is written once tenants arrive"
            );
            Arrivals::default()
        }
        Err(e) => {
            tracing::warn!(configmap = ARRIVALS, error = %e, "cannot read the arrivals record; starting from the tenants that exist");
            Arrivals::default()
        }
    };
    Book::new(arrivals, keep, true)
}

/// The ConfigMap holding `arrivals`.
pub fn record(ctx: &Context, arrivals: &Arrivals) -> ConfigMap {
    let mut metadata = desired::named(ARRIVALS, &ctx.settings.namespace, "arrivals");
    metadata.owner_references = ctx.owner.clone().map(|o| vec![o]);
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(DATA_KEY.to_owned(), arrivals.encode())])),
        ..ConfigMap::default()
    }
}

/// Writes the record whenever arrivals were added, at most once per [`FLUSH_EVERY`]; runs for
/// the leadership term (never returns unless the book does not persist).
pub async fn flush(ctx: Arc<Context>, book: Arc<Book>) {
    if !book.persist {
        return futures::future::pending().await;
    }
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut last: Option<Instant> = None;
    loop {
        book.added.notified().await;
        if let Some(at) = last {
            tokio::time::sleep_until(at + FLUSH_EVERY).await;
        }
        let body = {
            let mut state = lock(&book.state);
            if !state.unsaved {
                continue;
            }
            state.unsaved = false;
            state.arrivals.prune(
                crate::reconcile::base::clock::now(),
                book.keep,
                MAX_ARRIVALS,
            );
            record(&ctx, &state.arrivals)
        };
        last = Some(Instant::now());
        let started = Instant::now();
        let action = || format!("write the arrivals record ConfigMap {ARRIVALS}");
        let result = ctx
            .write(action, api.patch(ARRIVALS, &params, &Patch::Apply(&body)))
            .await
            .map(|_| ());
        ctx.metrics
            .observe_run("arrivals", started.elapsed(), &result);
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in = ?FLUSH_EVERY, "cannot write the arrivals record");
            lock(&book.state).unsaved = true;
            book.added.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn only_new_arrivals_within_what_is_kept_are_noted() {
        let book = Book::new(Arrivals::default(), SignedDuration::from_hours(24), true);
        let now = ts("2026-11-30T10:00:00Z");
        let seen = [
            (ts("2026-11-30T09:00:00Z"), "demo-1"),
            (ts("2026-11-28T09:00:00Z"), "demo-old"),
        ];
        assert!(book.note(seen, now));
        assert_eq!(
            book.with(Arrivals::len),
            1,
            "the old one is past what is kept"
        );
        assert!(!book.note(seen, now), "seen again: nothing new");
        assert!(lock(&book.state).unsaved);
    }
}
