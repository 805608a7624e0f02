//! Leader election on the Lease `warmpool-reconciler`: one replica writes, the others wait.
//!
//! A small implementation on `coordination.k8s.io/v1` with the rules of client-go's
//! leaderelection: the Lease is created only if absent; every change is a `replace` guarded by the
//! `resourceVersion` read just before (two replicas can never both win); a holder is presumed gone
//! once its record has not changed for `leaseDurationSeconds`, measured on this replica's own
//! monotonic clock from when a read that showed the record *returned* (no trust in other
//! machines' wall clocks, and a slow read never makes the holder look older than it is).
//!
//! "Stops writing at once": leadership is a deadline, not a flag. A successful renewal whose read
//! started at `t` makes this replica the leader until `t + duration − margin` (client-go's
//! proportions: a 15 s lease is trusted for 10 s), which is before any other replica can presume
//! it gone; every write checks [`LeaderGate::is_leader`] first and is cut off after
//! [`LeaseSettings::write_timeout`], so a write started at the last instant of leadership has
//! landed, or been abandoned, while the Lease is still this replica's (what remains of the margin
//! covers clock-rate differences). [`LeaderGate::lost`] wakes the controller the moment the
//! deadline passes without a renewal, so a replica cut off from the API server stops even while
//! its renew request still hangs. The Lease records whole seconds, so the duration must be whole
//! seconds: what the holder trusts is exactly what the others read.
//!
//! (`kube-lease-manager` 0.13 supports kube 5, but while its renewals fail it keeps reporting
//! leadership until a later read succeeds, and its parameters panic when invalid; this module is
//! the "small careful implementation" instead.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::Error;
use crate::core::names::{MANAGED_BY, MANAGED_BY_LABEL};

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
    /// Set on the Lease when this replica creates it (warmpool's Deployment, in a pod), so that
    /// `helm uninstall` takes the Lease with it.
    pub owner: Option<OwnerReference>,
}

impl LeaseSettings {
    /// client-go's proportions: renew three times per lease duration, retry every 2 s (less for
    /// very short leases, as in the tests). The duration is whole seconds, at least 3.
    pub fn new(name: &str, identity: &str, duration: Duration) -> Result<LeaseSettings, Error> {
        if duration < Duration::from_secs(3) {
            return Err(Error::Settings(format!(
                "the lease duration must be at least 3s, not {duration:?}"
            )));
        }
        if duration.subsec_nanos() != 0 || i32::try_from(duration.as_secs()).is_err() {
            return Err(Error::Settings(format!(
                "the lease duration must be a whole number of seconds (the Lease records \
                 seconds), not {duration:?}"
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
            owner: None,
        })
    }

    /// The owner of the Lease this replica creates.
    pub fn owned_by(self, owner: Option<OwnerReference>) -> LeaseSettings {
        LeaseSettings { owner, ..self }
    }

    /// What the holder keeps back of each renewal: a third of the lease (client-go: 15 s lease,
    /// 10 s renew deadline).
    pub fn margin(&self) -> Duration {
        self.duration / 3
    }

    /// How long a successful renewal lets this replica write, from the start of the read that
    /// preceded it.
    pub fn valid_for(&self) -> Duration {
        self.duration - self.margin()
    }

    /// How long one write may take before it is cut off: the margin less a twentieth of the
    /// lease for clock-rate differences between machines, so that `valid_for + write_timeout`
    /// stays under the lease duration.
    pub fn write_timeout(&self) -> Duration {
        self.margin() - self.duration / 20
    }

    fn duration_seconds(&self) -> i32 {
        // Whole seconds that fit, by construction.
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX)
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

    /// When the current leadership ends, if this replica leads.
    pub fn deadline(&self) -> Option<Instant> {
        *self.until.borrow()
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

/// This replica's monotonic clock (a fake one in the tests).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Runs the election for one replica.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    gate: LeaderGate,
    seen: Option<(Seen, Instant)>,
    clock: Clock,
}

impl Elector {
    pub fn new(api: Api<Lease>, settings: LeaseSettings, gate: LeaderGate) -> Elector {
        Elector::with_clock(api, settings, gate, Arc::new(Instant::now))
    }

    pub fn with_clock(
        api: Api<Lease>,
        settings: LeaseSettings,
        gate: LeaderGate,
        clock: Clock,
    ) -> Elector {
        Elector {
            api,
            settings,
            gate,
            seen: None,
            clock,
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
        // Our own leadership counts from before the read (the earliest the renewal can count
        // from); what others hold counts from when the read returned (the latest we know of it).
        let started = (self.clock)();
        let name = self.settings.name.clone();
        let current = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("read Lease {name}"), e))?;
        let read = (self.clock)();
        let Some(mut lease) = current else {
            return self.create(started).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder_gone = self.note_record(&spec, read);
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
                    let now = (self.clock)();
                    self.note_record(spec, now);
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
                owner_references: self.settings.owner.clone().map(|o| vec![o]),
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
    fn note_record(&mut self, spec: &LeaseSpec, now: Instant) -> bool {
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
        assert!(LeaseSettings::new("l", "me", Duration::from_secs(2)).is_err());
        assert!(LeaseSettings::new("l", "", Duration::from_secs(15)).is_err());
        // The Lease records whole seconds: what the holder trusts must be what others read.
        let e = LeaseSettings::new("l", "me", Duration::from_millis(4500)).unwrap_err();
        assert!(e.to_string().contains("whole number of seconds"), "{e}");
        let s = LeaseSettings::new("l", "me", Duration::from_secs(15)).unwrap();
        assert_eq!(s.renew_every, Duration::from_secs(5));
        assert_eq!(s.retry_every, Duration::from_secs(2));
        assert_eq!(s.duration_seconds(), 15);
        // client-go's 15 s lease / 10 s renew deadline; a write cut off at 4.25 s.
        assert_eq!(s.valid_for(), Duration::from_secs(10));
        assert_eq!(s.write_timeout(), Duration::from_millis(4250));
        for secs in [3, 4, 15, 60, 3600] {
            let s = LeaseSettings::new("l", "me", Duration::from_secs(secs)).unwrap();
            // A write started at the last instant of leadership is over before anyone else can
            // presume this replica gone, with a twentieth to spare for clock rates.
            assert!(
                s.valid_for() + s.write_timeout() + s.duration / 20 <= s.duration,
                "{secs}s"
            );
            assert!(s.write_timeout() > Duration::ZERO, "{secs}s");
            assert!(
                s.renew_every < s.valid_for(),
                "{secs}s: renewed before it runs out"
            );
        }
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

    /// An API server holding one Lease, in process: each read or write "takes" the time set for
    /// it by moving the fake clock on, so the tests need no real waiting.
    struct FakeLeases {
        lease: std::sync::Mutex<Option<serde_json::Value>>,
        now: std::sync::Mutex<Instant>,
        /// How long each next read takes (the last one repeats).
        read_delays: std::sync::Mutex<Vec<Duration>>,
        write_delay: Duration,
        writes: std::sync::atomic::AtomicU32,
    }

    impl FakeLeases {
        fn new(lease: Option<serde_json::Value>) -> Arc<FakeLeases> {
            Arc::new(FakeLeases {
                lease: std::sync::Mutex::new(lease),
                now: std::sync::Mutex::new(Instant::now()),
                read_delays: std::sync::Mutex::new(vec![Duration::ZERO]),
                write_delay: Duration::ZERO,
                writes: std::sync::atomic::AtomicU32::new(0),
            })
        }

        fn now(&self) -> Instant {
            *self.now.lock().unwrap()
        }

        fn advance(&self, by: Duration) {
            *self.now.lock().unwrap() += by;
        }

        fn clock(self: &Arc<Self>) -> Clock {
            let me = self.clone();
            Arc::new(move || me.now())
        }

        fn client(self: &Arc<Self>) -> kube::Client {
            let me = self.clone();
            let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
                let me = me.clone();
                async move { Ok::<_, std::convert::Infallible>(me.answer(request).await) }
            });
            kube::Client::new(service, "ns")
        }

        async fn answer(
            &self,
            request: http::Request<kube::client::Body>,
        ) -> http::Response<http_body_util::Full<hyper::body::Bytes>> {
            use http_body_util::BodyExt;
            let method = request.method().clone();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let reply = |code: u16, value: serde_json::Value| {
                http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(hyper::body::Bytes::from(
                        value.to_string(),
                    )))
                    .unwrap()
            };
            let not_found = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
            let mut lease = self.lease.lock().unwrap();
            match method.as_str() {
                "GET" => {
                    let delay = {
                        let mut delays = self.read_delays.lock().unwrap();
                        if delays.len() > 1 {
                            delays.remove(0)
                        } else {
                            delays[0]
                        }
                    };
                    self.advance(delay);
                    match lease.clone() {
                        Some(l) => reply(200, l),
                        None => reply(404, not_found),
                    }
                }
                "PUT" | "POST" => {
                    self.advance(self.write_delay);
                    self.writes
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut written: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let rv: u64 = lease
                        .as_ref()
                        .and_then(|l| l["metadata"]["resourceVersion"].as_str()?.parse().ok())
                        .unwrap_or(0);
                    written["metadata"]["resourceVersion"] = (rv + 1).to_string().into();
                    *lease = Some(written.clone());
                    reply(200, written)
                }
                _ => reply(405, not_found),
            }
        }
    }

    fn held_by(holder: &str, seconds: i32) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "l", "namespace": "ns", "resourceVersion": "7"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                     "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 3},
        })
    }

    fn elector(fake: &Arc<FakeLeases>, seconds: u64) -> (Elector, LeaderGate) {
        let gate = LeaderGate::default();
        let settings = LeaseSettings::new("l", "me", Duration::from_secs(seconds)).unwrap();
        let elector = Elector::with_clock(
            Api::namespaced(fake.client(), "ns"),
            settings,
            gate.clone(),
            fake.clock(),
        );
        (elector, gate)
    }

    #[tokio::test]
    async fn a_holder_is_presumed_gone_a_lease_after_the_read_that_saw_it_returned() {
        let fake = FakeLeases::new(Some(held_by("other", 10)));
        let (mut elector, gate) = elector(&fake, 10);
        let start = fake.now();
        // The first read takes 3 s; the record it returns is only known from its answer on.
        *fake.read_delays.lock().unwrap() = vec![Duration::from_secs(3), Duration::ZERO];
        assert!(!elector.try_once().await.unwrap());
        assert!(gate.sees_other_leader());
        // 11 s after that read began, 8 s after it returned: the holder may still be renewing.
        fake.advance(Duration::from_secs(8));
        assert_eq!(fake.now() - start, Duration::from_secs(11));
        assert!(!elector.try_once().await.unwrap(), "taken 2 s too early");
        assert_eq!(fake.writes.load(std::sync::atomic::Ordering::SeqCst), 0);
        // 10 s after the answer: the record has not changed for a whole lease.
        fake.advance(Duration::from_secs(2));
        assert!(elector.try_once().await.unwrap());
        let lease = fake.lease.lock().unwrap().clone().unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "me");
        assert_eq!(lease["spec"]["leaseTransitions"], 4);
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 10);
    }

    #[tokio::test]
    async fn leadership_counts_from_before_the_read_and_keeps_a_margin_for_a_write() {
        let fake = FakeLeases::new(Some(held_by("me", 15)));
        let (mut elector, gate) = elector(&fake, 15);
        *fake.read_delays.lock().unwrap() = vec![Duration::from_secs(2)];
        let started = fake.now();
        assert!(elector.try_once().await.unwrap());
        // Renewed; trusted for 10 s from the moment the read was sent, though the renewal was
        // only written 2 s later.
        assert_eq!(gate.deadline(), Some(started + Duration::from_secs(10)));
        let lease = fake.lease.lock().unwrap().clone().unwrap();
        assert_eq!(
            lease["spec"]["leaseDurationSeconds"], 15,
            "the exact duration the holder trusts"
        );
    }

    #[tokio::test]
    async fn a_missing_lease_is_created_and_held() {
        let fake = FakeLeases::new(None);
        let (mut elector, gate) = elector(&fake, 4);
        let started = fake.now();
        assert!(elector.try_once().await.unwrap());
        assert_eq!(
            gate.deadline(),
            Some(started + Duration::from_secs(4) - Duration::from_secs(4) / 3)
        );
        let lease = fake.lease.lock().unwrap().clone().unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "me");
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 4);
    }

    #[tokio::test]
    async fn a_lease_created_in_a_pod_is_owned_by_warmpools_deployment() {
        let fake = FakeLeases::new(None);
        let owner = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "warmpool".into(),
            uid: "uid-1".into(),
            ..OwnerReference::default()
        };
        let settings = LeaseSettings::new("l", "me", Duration::from_secs(4))
            .unwrap()
            .owned_by(Some(owner));
        let mut elector = Elector::with_clock(
            Api::namespaced(fake.client(), "ns"),
            settings,
            LeaderGate::default(),
            fake.clock(),
        );
        assert!(elector.try_once().await.unwrap());
        let lease = fake.lease.lock().unwrap().clone().unwrap();
        assert_eq!(
            lease["metadata"]["ownerReferences"],
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "warmpool", "uid": "uid-1"}])
        );
    }
}
