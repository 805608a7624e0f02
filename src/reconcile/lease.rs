//! Leader election on the Lease `warmpool-reconciler`: one replica writes, the others wait.
//!
//! A small implementation on `coordination.k8s.io/v1` with the rules of client-go's
//! leaderelection: the Lease is created only if absent; every change is a `replace` guarded by the
//! `resourceVersion` read just before (two replicas can never both win); a holder is presumed gone
//! once its record has not changed for `leaseDurationSeconds`, measured on this replica's own
//! monotonic clock from when it saw the record change (no trust in other machines' wall clocks).
//!
//! "Stops writing at once": leadership is a deadline, not a flag. A successful renewal started at
//! `t` makes this replica the leader until `t + duration − margin`, which is before any other
//! replica can presume it gone; every write checks [`LeaderGate::is_leader`] first, and
//! [`LeaderGate::lost`] wakes the controller the moment the deadline passes without a renewal,
//! so a replica cut off from the API server stops even while its renew request still hangs.
//!
//! (`kube-lease-manager` 0.13 supports kube 5, but while its renewals fail it keeps reporting
//! leadership until a later read succeeds, and its parameters panic when invalid; this module is
//! the "small careful implementation" instead.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::Error;
use super::{MANAGED_BY, MANAGED_BY_LABEL};

/// Timing and names of the election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub identity: String,
    /// How long a holder's record stays valid without a renewal.
    pub duration: Duration,
    /// How often the holder renews (well under `duration`).
    pub renew_every: Duration,
    /// How often a non-holder looks again.
    pub retry_every: Duration,
}

impl LeaseSettings {
    /// client-go's proportions: renew three times per lease duration, retry every 2 s (less for
    /// very short leases, as in the tests).
    pub fn new(name: &str, identity: &str, duration: Duration) -> Result<LeaseSettings, Error> {
        if duration < Duration::from_secs(2) {
            return Err(Error::Settings(format!(
                "the lease duration must be at least 2s, not {duration:?}"
            )));
        }
        if identity.is_empty() {
            return Err(Error::Settings("the lease identity is empty".into()));
        }
        Ok(LeaseSettings {
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            renew_every: duration / 3,
            retry_every: (duration / 4).min(Duration::from_secs(2)),
        })
    }

    /// How long a successful renewal lets this replica write: the lease duration less a twentieth
    /// for clock-rate differences between machines.
    pub fn valid_for(&self) -> Duration {
        self.duration - self.duration / 20
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Whether this replica may write now. Cheap to clone and to check.
#[derive(Debug, Clone)]
pub struct LeaderGate {
    until: Arc<watch::Sender<Option<Instant>>>,
    other_leader: Arc<AtomicBool>,
}

impl Default for LeaderGate {
    fn default() -> Self {
        LeaderGate {
            until: Arc::new(watch::Sender::new(None)),
            other_leader: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl LeaderGate {
    /// True while a renewal is in force.
    pub fn is_leader(&self) -> bool {
        matches!(*self.until.borrow(), Some(until) if Instant::now() < until)
    }

    /// `Err(NotLeader)` unless this replica may write now; `action` names the withheld write.
    pub fn ensure(&self, action: impl FnOnce() -> String) -> Result<(), Error> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader { action: action() })
        }
    }

    /// True when the last look at the Lease found it held by another, live replica.
    pub fn sees_other_leader(&self) -> bool {
        self.other_leader.load(Ordering::Acquire)
    }

    fn extend(&self, until: Instant) {
        self.other_leader.store(false, Ordering::Release);
        self.until.send_replace(Some(until));
    }

    fn revoke(&self) {
        self.until.send_replace(None);
    }

    /// Resolves as soon as this replica is the leader.
    pub async fn acquired(&self) {
        let mut rx = self.until.subscribe();
        loop {
            if self.is_leader() {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Resolves the moment leadership ends: revoked, or its deadline passed without a renewal.
    pub async fn lost(&self) {
        let mut rx = self.until.subscribe();
        loop {
            let until = *rx.borrow_and_update();
            match until {
                Some(until) if Instant::now() < until => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
                _ => return,
            }
        }
    }
}

/// What to do with the Lease record as read. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder is presumed gone: take it.
    Acquire,
    /// Someone else holds it: wait.
    Wait,
}

/// `holder_gone` is true when the holder's record has not changed for its lease duration.
pub fn decide(spec: &LeaseSpec, me: &str, holder_gone: bool) -> Step {
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => Step::Renew,
        None | Some("") => Step::Acquire,
        Some(_) if holder_gone => Step::Acquire,
        Some(_) => Step::Wait,
    }
}

/// The record as last seen, and since when (our clock).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: Option<i32>,
}

/// Runs the election for one replica.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    gate: LeaderGate,
    seen: Option<(Seen, Instant)>,
}

impl Elector {
    pub fn new(api: Api<Lease>, settings: LeaseSettings, gate: LeaderGate) -> Elector {
        Elector {
            api,
            settings,
            gate,
            seen: None,
        }
    }

    /// Keeps trying to hold the Lease until `stop` resolves, then gives it up (so that another
    /// replica takes over at once instead of after the lease duration).
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let attempt = tokio::time::timeout(self.settings.renew_every, self.try_once());
            let result = tokio::select! {
                r = attempt => r,
                () = &mut stop => break,
            };
            let ok = match result {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.settings.name, error = %e, "lease check failed");
                    false
                }
                Err(_) => {
                    tracing::warn!(lease = %self.settings.name, "lease check timed out");
                    false
                }
            };
            // A leader renews on schedule; after a failure (leader or not) it tries again soon,
            // while its current renewal still holds.
            let wait = if ok && self.gate.is_leader() {
                self.settings.renew_every
            } else {
                self.settings.retry_every
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => break,
            }
        }
        self.release().await;
    }

    /// One read and, if due, one write; true when this replica holds the Lease afterwards.
    async fn try_once(&mut self) -> Result<bool, Error> {
        let started = Instant::now();
        let name = self.settings.name.clone();
        let current = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("read Lease {name}"), e))?;
        let Some(mut lease) = current else {
            return self.create(started).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder_gone = self.observe(&spec, started);
        let now = MicroTime(Timestamp::now());
        let mut next = spec.clone();
        match decide(&spec, &self.settings.identity, holder_gone) {
            Step::Wait => {
                self.gate.revoke();
                self.gate.other_leader.store(true, Ordering::Release);
                return Ok(false);
            }
            Step::Renew => {
                next.renew_time = Some(now);
                next.lease_duration_seconds = Some(self.settings.duration_seconds());
            }
            Step::Acquire => {
                tracing::info!(
                    lease = %name,
                    previous = spec.holder_identity.as_deref().unwrap_or(""),
                    "taking the lease"
                );
                next.holder_identity = Some(self.settings.identity.clone());
                next.acquire_time = Some(now.clone());
                next.renew_time = Some(now);
                next.lease_duration_seconds = Some(self.settings.duration_seconds());
                next.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
        }
        lease.spec = Some(next);
        // `lease` carries the resourceVersion just read: the API server refuses the write (409)
        // if anyone changed the Lease in between.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                if let Some(spec) = &written.spec {
                    self.observe(spec, started);
                }
                self.gate.extend(started + self.settings.valid_for());
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.gate.revoke();
                Ok(false)
            }
            Err(e) => Err(Error::kube(format!("update Lease {name}"), e)),
        }
    }

    async fn create(&mut self, started: Instant) -> Result<bool, Error> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                labels: Some([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_duration_seconds: Some(self.settings.duration_seconds()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => {
                tracing::info!(lease = %self.settings.name, "created the lease and hold it");
                self.gate.extend(started + self.settings.valid_for());
                Ok(true)
            }
            // Another replica created it first: look again next round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(Error::kube(
                format!("create Lease {}", self.settings.name),
                e,
            )),
        }
    }

    /// Notes the record; true when it has not changed for its lease duration.
    fn observe(&mut self, spec: &LeaseSpec, now: Instant) -> bool {
        let seen = Seen {
            holder: spec.holder_identity.clone(),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
        };
        let since = match &self.seen {
            Some((previous, since)) if *previous == seen => *since,
            _ => now,
        };
        self.seen = Some((seen, since));
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.duration, Duration::from_secs);
        now.duration_since(since) >= duration
    }

    /// Gives the Lease up if this replica holds it: stop writing first, then clear the holder.
    async fn release(&mut self) {
        let held = self.gate.is_leader();
        self.gate.revoke();
        if !held {
            return;
        }
        let name = self.settings.name.clone();
        let result = async {
            let Some(mut lease) = self.api.get_opt(&name).await? else {
                return Ok(());
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(spec);
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(Duration::from_secs(5), result).await {
            Ok(Ok(())) => tracing::info!(lease = %name, "released the lease"),
            Ok(Err(e)) => tracing::warn!(lease = %name, error = %e, "could not release the lease"),
            Err(_) => tracing::warn!(lease = %name, "releasing the lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn who_acts_on_the_record() {
        assert_eq!(decide(&spec(Some("me")), "me", false), Step::Renew);
        assert_eq!(decide(&spec(Some("me")), "me", true), Step::Renew);
        assert_eq!(decide(&spec(None), "me", false), Step::Acquire);
        assert_eq!(decide(&spec(Some("")), "me", false), Step::Acquire);
        assert_eq!(decide(&spec(Some("other")), "me", false), Step::Wait);
        assert_eq!(decide(&spec(Some("other")), "me", true), Step::Acquire);
    }

    #[test]
    fn settings_are_checked_and_proportioned() {
        assert!(LeaseSettings::new("l", "me", Duration::from_secs(1)).is_err());
        assert!(LeaseSettings::new("l", "", Duration::from_secs(15)).is_err());
        let s = LeaseSettings::new("l", "me", Duration::from_secs(15)).unwrap();
        assert_eq!(s.renew_every, Duration::from_secs(5));
        assert_eq!(s.retry_every, Duration::from_secs(2));
        assert!(s.valid_for() < s.duration);
        assert_eq!(s.duration_seconds(), 15);
    }

    #[tokio::test]
    async fn the_gate_closes_by_itself_when_the_deadline_passes() {
        let ms = Duration::from_millis;
        let gate = LeaderGate::default();
        assert!(!gate.is_leader());
        assert!(gate.ensure(|| "apply".into()).is_err());
        gate.extend(Instant::now() + ms(400));
        assert!(gate.is_leader());
        gate.acquired().await;
        let lost = gate.lost();
        tokio::pin!(lost);
        // Renewed halfway: still leading past the first deadline.
        tokio::time::sleep(ms(200)).await;
        gate.extend(Instant::now() + ms(400));
        tokio::select! {
            () = &mut lost => panic!("lost while renewed"),
            () = tokio::time::sleep(ms(300)) => {}
        }
        assert!(gate.is_leader());
        // No renewal: lost at the deadline, without anyone revoking.
        tokio::time::timeout(ms(2000), &mut lost)
            .await
            .expect("lost() resolves at the deadline");
        assert!(!gate.is_leader());
        assert!(
            matches!(gate.ensure(|| "apply x".into()), Err(Error::NotLeader { action }) if action == "apply x")
        );
    }

    #[tokio::test]
    async fn revoking_wakes_lost_at_once() {
        let gate = LeaderGate::default();
        gate.extend(Instant::now() + Duration::from_secs(3600));
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.lost().await })
        };
        tokio::task::yield_now().await;
        gate.revoke();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
