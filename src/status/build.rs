//! [`build`]: the listed objects in, the [`Status`] screen as data out. Pure: the clock is in
//! [`Listed`], every object comes in as the API server returned it. Each part of the screen is
//! decided in [`super::parts`] (the warm pool) or [`super::admission`] (the webhook).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;

use super::model::*;
use super::parts::is_ready;
use super::{Part, READY_SECONDS_ANNOTATION, START_ANNOTATION};
use crate::core::mutation::Rules;

/// The screen, from what was listed at `listed.now`.
pub fn build(listed: &Listed) -> Status {
    let tenant_names = tenant_namespaces(listed);
    let tenants = match &tenant_names {
        Ok(names) => tenants(listed, names),
        Err(part) => part.clone().map(|_| unreachable_tenants()),
    };
    let names = tenant_names.as_ref().ok();
    Status {
        namespace: listed.namespace.clone(),
        config: listed.config_source.clone(),
        generated_at: Timestamp::from_second(listed.now.as_second())
            .unwrap_or(listed.now)
            .to_string(),
        tenants,
        warm_nodes: super::parts::warm_nodes(listed, names),
        images_left_out: super::parts::images_left_out(listed),
        prewarmer: super::parts::prewarmer(listed),
        webhook: super::admission::webhook(listed),
        failures: super::parts::failures(listed, names),
    }
}

fn unreachable_tenants() -> Tenants {
    Tenants {
        total: 0,
        by_start: BTreeMap::new(),
        pods_ready: 0,
        pods_total: 0,
        warm_seconds: None,
        cold_seconds: None,
        escaped: Vec::new(),
        list: Vec::new(),
    }
}

/// The tenant namespaces (with the namespace objects), or why they are not known.
fn tenant_namespaces(listed: &Listed) -> Result<BTreeMap<String, Namespace>, Part<()>> {
    let namespaces = listed.namespaces.read()?;
    let selector = listed
        .config
        .tenants
        .selector(Some(&listed.namespace))
        .map_err(|e| Part::Failed {
            error: format!("tenants.namespacePatterns: {e}"),
        })?;
    let empty = BTreeMap::new();
    Ok(namespaces
        .iter()
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
            selector
                .decide(&name, labels)
                .is_tenant()
                .then(|| (name, ns.clone()))
        })
        .collect())
}

fn tenants(listed: &Listed, names: &BTreeMap<String, Namespace>) -> Part<Tenants> {
    let pods = match listed.pods.read() {
        Ok(pods) => pods,
        Err(missing) => return missing,
    };
    let rules = Rules::from_config(&listed.config);
    // namespace -> (ready, total, escaped)
    let mut counts: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let mut escaped = Vec::new();
    for pod in pods {
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            continue;
        };
        let gone = pod.metadata.deletion_timestamp.is_some() || super::parts::terminated(pod);
        if !names.contains_key(ns) || gone {
            continue;
        }
        let entry = counts.entry(ns).or_default();
        entry.1 += 1;
        if is_ready(pod) {
            entry.0 += 1;
        }
        let unsteered = serde_json::to_value(pod)
            .map(|v| crate::core::unsteered::is_unsteered(&v, &rules))
            .unwrap_or(false);
        if unsteered {
            entry.2 += 1;
            escaped.push(UnsteeredPod {
                namespace: ns.to_owned(),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            });
        }
    }
    let mut list: Vec<Tenant> = names
        .iter()
        .map(|(name, ns)| {
            let annotations = ns.metadata.annotations.as_ref();
            let get = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
            let created = ns.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let age = created.map(|c| listed.now.duration_since(c));
            let start = start_of(
                get(START_ANNOTATION),
                age,
                &listed.config.tenants.time_to_ready,
            );
            let ready_seconds = get(READY_SECONDS_ANNOTATION)
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0);
            let (ready, total, escaped) = counts.get(name.as_str()).copied().unwrap_or_default();
            Tenant {
                name: name.clone(),
                start,
                ready_seconds,
                pods_ready: ready,
                pods_total: total,
                escaped,
                age_seconds: created.map_or(0, |c| (listed.now - c).get_seconds().max(0)),
            }
        })
        .collect();
    list.sort_by(|a, b| a.age_seconds.cmp(&b.age_seconds).then(a.name.cmp(&b.name)));
    let mut by_start = BTreeMap::new();
    for t in &list {
        *by_start.entry(t.start).or_insert(0) += 1;
    }
    let spread = |start: Start| {
        let mut s: Vec<f64> = list
            .iter()
            .filter(|t| t.start == start)
            .filter_map(|t| t.ready_seconds)
            .collect();
        s.sort_by(f64::total_cmp);
        let max = *s.last()?;
        Some(Spread {
            median: s[s.len() / 2],
            max,
        })
    };
    escaped.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    Part::Read(Tenants {
        total: list.len(),
        by_start,
        pods_ready: list.iter().map(|t| t.pods_ready).sum(),
        pods_total: list.iter().map(|t| t.pods_total).sum(),
        warm_seconds: spread(Start::Warm),
        cold_seconds: spread(Start::Cold),
        escaped,
        list,
    })
}

/// A tenant's start from its `warmpool.io/start` annotation and, with none, whether the
/// reconciler is still to write one: it measures only with `timeToReady` on and gives up at the
/// timeout (then writes `not-ready`), so a tenant older than that with no annotation never gets
/// one.
fn start_of(
    annotation: Option<&str>,
    age: Option<jiff::SignedDuration>,
    time_to_ready: &crate::config::TimeToReady,
) -> Start {
    match annotation {
        Some("warm") => Start::Warm,
        Some("cold") => Start::Cold,
        Some("not-ready") => Start::NotReady,
        _ if !time_to_ready.enabled => Start::NotMeasured,
        // The reconciler's own deadline check runs at most a resync late: a minute's grace.
        _ if age
            .is_some_and(|a| a > time_to_ready.timeout() + jiff::SignedDuration::from_mins(1)) =>
        {
            Start::NotMeasured
        }
        _ => Start::Measuring,
    }
}
