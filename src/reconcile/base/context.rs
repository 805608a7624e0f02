//! What every part of the reconciler shares: how it was started ([`Settings`]) and the one
//! [`Context`] that lives as long as the process (as in kube-rs's controller-rs: client,
//! recorder, metrics, plus the election gate, the backoff and readiness).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use super::backoff::Backoff;
use super::error::Error;
use super::lease::LeaderGate;
use super::metrics::Metrics;
use crate::config::Config;
use crate::core::pool::PoolObject;
use crate::core::spare::decide::KeptSlots;
use crate::core::spare::windows::Window;
use crate::core::tenant::TenantSelector;
use crate::telemetry::Readiness;

/// How the reconciler runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// warmpool's own namespace: the prewarmer, the image cache and the Lease live there.
    pub namespace: String,
    pub config: Config,
    /// How often everything is re-applied even without an event.
    pub resync: Duration,
    /// How many namespaces are enrolled at the same time.
    pub concurrency: u16,
    /// This replica's name in the Lease.
    pub identity: String,
    pub lease_duration: Duration,
    /// The pod this runs in (downward API), to find warmpool's own Deployment; `None` outside a
    /// cluster, and then no owner references are written.
    pub pod: Option<PodIdentity>,
}

#[derive(Debug, Clone)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
}

/// What lives as long as the process, shared by every leadership term.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub selector: TenantSelector,
    /// The field manager of the enrolment labels ([`crate::core::enrolment::field_manager`]).
    pub enrolment_manager: String,
    /// warmpool's own Deployment, when running in its pod.
    pub owner: Option<OwnerReference>,
    pub metrics: Metrics,
    /// For Events that may repeat (kube's recorder turns a repeat into a series, and so keeps
    /// every Event it sent for 6 minutes).
    pub recorder: Recorder,
    /// Who reports warmpool's Events ([`Context::recorder_once`]).
    pub reporter: Reporter,
    /// Every write checks it first.
    pub gate: LeaderGate,
    /// Every write is cut off after this ([`super::lease::LeaseSettings::write_timeout`]).
    pub write_timeout: Duration,
    /// Per-object exponential backoff, keyed by [`PoolObject::label`] or `namespace/<name>`.
    pub backoff: Backoff,
    pub readiness: Readiness,
    /// The workload objects applied at least once (readiness once all are).
    pub synced: Mutex<BTreeSet<PoolObject>>,
    /// `prewarmer.schedule`, compiled.
    pub windows: Vec<Window>,
    /// The spare slots the prewarmer was last kept with ([`crate::reconcile::jobs::spare::kept`]).
    pub spare_kept: Mutex<Option<KeptSlots>>,
}

impl Context {
    /// A recorder for an Event that is sent once per object (a tenant's enrolment, its time to
    /// Ready): nothing to make a series of, so nothing kept once it is sent. Through the shared
    /// [`Context::recorder`], 10,000 enrolments would keep 10,000 Events in memory.
    pub fn recorder_once(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// One write to the API server, made only while this replica leads and abandoned after
    /// [`Context::write_timeout`], so that it lands (or not at all) before another replica can
    /// take the Lease over. `action` names it in errors.
    pub async fn write<T>(
        &self,
        action: impl Fn() -> String,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        self.gate.ensure(&action)?;
        match tokio::time::timeout(self.write_timeout, request).await {
            Ok(result) => result.map_err(|e| Error::kube(action(), e)),
            Err(_) => Err(Error::WriteTimeout {
                action: action(),
                after: self.write_timeout,
            }),
        }
    }
}

/// A poisoned lock still holds consistent data here (every critical section is a plain update).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
