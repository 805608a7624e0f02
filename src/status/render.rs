//! The [`Status`] as the text screen or as JSON. Pure.

use std::fmt::Write as _;

use super::Part;
use super::model::{LeftOutImages, Start, Status, Tenant, Tenants, WarmNode, Webhook};

/// Tenants listed on the text screen unless `--tenants` asks for all.
pub const TENANT_ROWS: usize = 10;
/// Failures listed on the text screen.
pub const FAILURE_ROWS: usize = 8;

pub fn json(status: &Status) -> String {
    // A Status is plain data: serialising it cannot fail.
    serde_json::to_string_pretty(status).unwrap_or_default() + "\n"
}

fn unreadable<T>(part: &Part<T>) -> Option<String> {
    match part {
        Part::Read(_) => None,
        Part::Unreadable { needs } => Some(format!("not readable: needs {needs}")),
        Part::Failed { error } => Some(format!("not read: {error}")),
    }
}

/// `42s`, `3m`, `5h`, `2d`.
pub fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The text screen; `all_tenants` lists every tenant instead of the ten that matter most.
pub fn text(status: &Status, all_tenants: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "warmpool status of namespace {} at {} (config: {})",
        status.namespace, status.generated_at, status.config
    );
    tenants(&mut out, &status.tenants, all_tenants);
    warm_nodes(&mut out, &status.warm_nodes);
    images_left_out(&mut out, &status.images_left_out);
    prewarmer(&mut out, status);
    webhook(&mut out, &status.webhook);
    failures(&mut out, status);
    out
}

fn tenants(out: &mut String, part: &Part<Tenants>, all: bool) {
    let t = match part {
        Part::Read(t) => t,
        other => {
            let _ = writeln!(out, "\nTENANTS  {}", unreadable(other).unwrap_or_default());
            return;
        }
    };
    let count = |s: Start| t.by_start.get(&s).copied().unwrap_or(0);
    // Only where some are: with time to Ready on (the default) every tenant is measured.
    let unmeasured = match count(Start::NotMeasured) {
        0 => String::new(),
        n => format!(", unmeasured {n}"),
    };
    let _ = writeln!(
        out,
        "\nTENANTS  {} (warm {}, cold {}, not-ready {}, measuring {}{unmeasured})   pods Ready {}/{}   \
         escaped pods {}",
        t.total,
        count(Start::Warm),
        count(Start::Cold),
        count(Start::NotReady),
        count(Start::Measuring),
        t.pods_ready,
        t.pods_total,
        t.escaped.len()
    );
    let spread = |name: &str, s: &Option<super::model::Spread>| {
        s.map(|s| format!("{name} median {:.1} s (max {:.1} s)", s.median, s.max))
    };
    let spreads: Vec<String> = [
        spread("warm", &t.warm_seconds),
        spread("cold", &t.cold_seconds),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !spreads.is_empty() {
        let _ = writeln!(out, "  time to Ready: {}", spreads.join(", "));
    }
    if t.list.is_empty() {
        let _ = writeln!(
            out,
            "  no tenant namespace (tenants.namespacePatterns, or label warmpool.io/tenant=enabled)"
        );
        return;
    }
    let rows = if all {
        t.list.iter().collect()
    } else {
        chosen(&t.list)
    };
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "  {:width$}  {:10}  {:>8}  {:>7}  {:>7}  {:>5}",
        "NAME", "START", "READY IN", "PODS", "ESCAPED", "AGE"
    );
    for r in &rows {
        let ready_in = r
            .ready_seconds
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
        let _ = writeln!(
            out,
            "  {:width$}  {:10}  {:>8}  {:>7}  {:>7}  {:>5}",
            r.name,
            r.start.label(),
            ready_in,
            format!("{}/{}", r.pods_ready, r.pods_total),
            r.escaped,
            age(r.age_seconds)
        );
    }
    if rows.len() < t.list.len() {
        let _ = writeln!(
            out,
            "  ... {} more (shown: those needing attention, then the slowest, then the newest; \
             all: --tenants or -o json)",
            t.list.len() - rows.len()
        );
    }
    for e in t.escaped.iter().take(TENANT_ROWS) {
        let node = e.node.as_deref().unwrap_or("no node yet");
        let _ = writeln!(out, "  escaped: {}/{} on {node}", e.namespace, e.pod);
    }
    if t.escaped.len() > TENANT_ROWS {
        let _ = writeln!(
            out,
            "  ... {} more escaped pods (-o json)",
            t.escaped.len() - TENANT_ROWS
        );
    }
    if !t.escaped.is_empty() {
        let _ = writeln!(
            out,
            "    -> admitted without the webhook (down, or not registered): delete them so that \
             their controllers re-create them through it"
        );
    }
}

/// The tenants worth a row: needing attention (escaped pods, not Ready), then the slowest
/// measured, then the newest; at most [`TENANT_ROWS`], in that order.
pub fn chosen(list: &[Tenant]) -> Vec<&Tenant> {
    let attention = |t: &Tenant| {
        t.escaped > 0
            || t.start == Start::NotReady
            || (t.start != Start::Measuring && t.pods_ready < t.pods_total)
    };
    let mut slowest: Vec<&Tenant> = list.iter().filter(|t| t.ready_seconds.is_some()).collect();
    slowest.sort_by(|a, b| {
        b.ready_seconds
            .unwrap_or(0.0)
            .total_cmp(&a.ready_seconds.unwrap_or(0.0))
    });
    let mut rows: Vec<&Tenant> = Vec::new();
    // `list` is newest first.
    for t in list
        .iter()
        .filter(|t| attention(t))
        .chain(slowest.into_iter().take(TENANT_ROWS / 2))
        .chain(list.iter())
    {
        if rows.len() == TENANT_ROWS {
            break;
        }
        if !rows.iter().any(|r| r.name == t.name) {
            rows.push(t);
        }
    }
    rows
}

fn warm_nodes(out: &mut String, part: &Part<Vec<WarmNode>>) {
    let nodes = match part {
        Part::Read(n) => n,
        other => {
            let _ = writeln!(
                out,
                "\nWARM NODES  {}",
                unreadable(other).unwrap_or_default()
            );
            return;
        }
    };
    let _ = writeln!(out, "\nWARM NODES  {}", nodes.len());
    if nodes.is_empty() {
        let _ = writeln!(
            out,
            "  none carries the pool label (pool.nodeLabel): tenants start cold; is the NodePool \
             up (nodePool.enabled) and the label right?"
        );
        return;
    }
    let width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "  {:width$}  {:5}  {:>10}  {:>12}  {:>11}  IMAGES",
        "NAME", "READY", "FREE SLOTS", "PLACEHOLDERS", "TENANT PODS"
    );
    let opt = |n: Option<String>| n.unwrap_or_else(|| "?".into());
    for n in nodes {
        let images = match &n.images {
            None => "no image-cache pod".to_owned(),
            Some(i) if i.failed.is_empty() => format!("{}/{} present", i.present, i.wanted),
            Some(i) => format!(
                "{}/{} present, cannot pull: {}",
                i.present,
                i.wanted,
                i.failed.join(", ")
            ),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {:5}  {:>10}  {:>12}  {:>11}  {images}",
            n.name,
            if n.ready { "yes" } else { "NO" },
            opt(n.free_slots.map(|s| s.to_string())),
            opt(n.placeholders.map(|s| s.to_string())),
            opt(n.tenant_pods.map(|s| s.to_string())),
        );
    }
    if nodes.iter().any(|n| n.free_slots.is_none()) {
        let _ = writeln!(out, "  ?: pods {}", unreadable_pods_hint());
    }
}

/// One line, and only when the cache left something out (or that cannot be read).
fn images_left_out(out: &mut String, part: &Part<Vec<LeftOutImages>>) {
    let text = match part {
        Part::Read(left_out) if left_out.is_empty() => return,
        Part::Read(left_out) => left_out
            .iter()
            .map(|l| format!("{} {} ({})", l.images, l.reason, l.why))
            .collect::<Vec<_>>()
            .join(", "),
        other => unreadable(other).unwrap_or_default(),
    };
    let _ = writeln!(out, "  images the cache left out: {text}");
}

fn unreadable_pods_hint() -> &'static str {
    "not readable (needs list pods, all namespaces)"
}

fn prewarmer(out: &mut String, status: &Status) {
    match &status.prewarmer {
        Part::Read(Some(p)) => {
            let window = match p.window.as_deref() {
                None => "no schedule".to_owned(),
                Some("none") => "schedule: no window in force".to_owned(),
                Some(w) => format!("schedule window `{w}` in force"),
            };
            let _ = writeln!(
                out,
                "\nPREWARMER  spare slots {} wanted, {} ready; one slot {}; {window}",
                p.wanted,
                p.ready,
                p.slot.as_deref().unwrap_or("?")
            );
            let gib = p.reserved_memory_bytes as f64 / (1024.0 * 1024.0 * 1024.0);
            let cost = p.monthly_cost.as_ref().map_or_else(
                || " (set pricing for a monthly estimate)".to_owned(),
                |c| {
                    format!(
                        " ≈ {:.0} {}/month at the configured prices",
                        c.amount, c.currency
                    )
                },
            );
            let _ = writeln!(
                out,
                "  reserved: {:.2} CPU, {gib:.1} GiB{cost}",
                p.reserved_cpu_millicores as f64 / 1000.0
            );
            if let Some(h) = &p.headroom {
                let latest = h
                    .latest_seconds
                    .map_or_else(|| "?".to_owned(), |s| format!("{s:.1} s"));
                let _ = writeln!(
                    out,
                    "  headroom: back {latest} after the latest preemption (at {}); {} restore(s) \
                     in the last hour",
                    h.latest_at, h.last_hour
                );
            }
            match p.pending.as_deref() {
                Some(pending) if !pending.is_empty() => {
                    let _ = writeln!(
                        out,
                        "  {} placeholder(s) have no node: kubectl -n {} describe pod {} \
                         (Karpenter's FailedScheduling says why; warmpool's PlaceholdersPending \
                         Event too)",
                        pending.len(),
                        status.namespace,
                        pending[0]
                    );
                }
                _ if p.ready < p.wanted => {
                    let _ = writeln!(
                        out,
                        "  {} placeholder(s) not ready: kubectl -n {} get pods -l \
                         app.kubernetes.io/name=warmpool-prewarmer",
                        p.wanted - p.ready,
                        status.namespace
                    );
                }
                _ => {}
            }
            for finding in p.node_pool_findings.iter().flatten() {
                let _ = writeln!(out, "  ! {finding}");
            }
        }
        Part::Read(None) => {
            let chart = match &status.webhook.deployment {
                Part::Read(Some(d)) => d.name.as_str(),
                _ => "warmpool",
            };
            let _ = writeln!(
                out,
                "\nPREWARMER  no Deployment warmpool-prewarmer in {}: is the reconciler running \
                 and leading? (kubectl -n {} logs deploy/{chart} -c reconciler)",
                status.namespace, status.namespace
            );
        }
        other => {
            let _ = writeln!(
                out,
                "\nPREWARMER  {}",
                unreadable(other).unwrap_or_default()
            );
        }
    }
}

fn webhook(out: &mut String, w: &Webhook) {
    let _ = writeln!(out, "\nWEBHOOK");
    let line = match &w.deployment {
        Part::Read(Some(d)) => format!(
            "Deployment {}: {}/{} replicas ready",
            d.name, d.ready, d.wanted
        ),
        Part::Read(None) => {
            "no Deployment labelled app.kubernetes.io/name=warmpool (or running `webhook`) here"
                .to_owned()
        }
        other => format!("Deployment: {}", unreadable(other).unwrap_or_default()),
    };
    let _ = writeln!(out, "  {line}");
    let line = match &w.certificate {
        Part::Read(Some(c)) => {
            let source = match &c.served_by {
                Some(pod) => format!("Secret {}, as pod {pod} serves it", c.secret),
                None => format!("Secret {}", c.secret),
            };
            match (&c.not_after, c.days_left) {
                (Some(at), Some(days)) if days < 0 => {
                    format!("certificate ({source}) EXPIRED at {at}: renew it now")
                }
                (Some(at), Some(days)) => {
                    let soon = if days < 14 { ": renew it soon" } else { "" };
                    format!("certificate ({source}) expires {at} ({days} days){soon}")
                }
                _ => match &c.served_by {
                    Some(pod) => format!(
                        "certificate: pod {pod} reports no expiry (it could not read its \
                         certificate: see its log)"
                    ),
                    None => format!("certificate: Secret {} holds no readable tls.crt", c.secret),
                },
            }
        }
        Part::Read(None) => {
            "certificate: unknown (no webhook Deployment to name its Secret)".into()
        }
        other => format!(
            "certificate: {} (the chart's status role reads it from a Ready webhook pod's \
             metrics instead of the Secret, which holds the key; the gauge \
             warmpool_webhook_certificate_expiry_timestamp_seconds shows it too)",
            unreadable(other).unwrap_or_default()
        ),
    };
    let _ = writeln!(out, "  {line}");
    match &w.configurations {
        Part::Read(list) if list.is_empty() => {
            let _ = writeln!(
                out,
                "  no MutatingWebhookConfiguration of this warmpool: no pod is steered, every new \
                 tenant pod escapes (helm upgrade restores it)"
            );
        }
        Part::Read(list) => {
            for c in list {
                let policy = c.failure_policy.join(",");
                let note = if c.failure_policy.iter().any(|p| p == "Ignore") {
                    " (fails open: pods created while the webhook is down escape it)"
                } else {
                    " (fails closed: tenant pods wait while the webhook is down)"
                };
                let _ = writeln!(
                    out,
                    "  MutatingWebhookConfiguration {}: {} entries, failurePolicy {policy}{note}",
                    c.name,
                    c.entries.len()
                );
            }
        }
        other => {
            let _ = writeln!(
                out,
                "  MutatingWebhookConfiguration: {}",
                unreadable(other).unwrap_or_default()
            );
        }
    }
}

fn failures(out: &mut String, status: &Status) {
    let list = match &status.failures {
        Part::Read(l) => l,
        other => {
            let _ = writeln!(
                out,
                "\nRECENT FAILURES  {}",
                unreadable(other).unwrap_or_default()
            );
            return;
        }
    };
    if list.is_empty() {
        let _ = writeln!(out, "\nRECENT FAILURES (Warning Events, last hour)  none");
        return;
    }
    let _ = writeln!(
        out,
        "\nRECENT FAILURES (Warning Events, last hour)  {}",
        list.len()
    );
    for f in list.iter().take(FAILURE_ROWS) {
        let message: String = f.message.chars().take(120).collect();
        let _ = writeln!(
            out,
            "  {} {} x{} in {} ({}): {message}\n    -> {}",
            f.reason, f.object, f.count, f.namespace, f.last_seen, f.remedy
        );
    }
    if list.len() > FAILURE_ROWS {
        let _ = writeln!(out, "  ... {} more (-o json)", list.len() - FAILURE_ROWS);
    }
}
