//! What the Karpenter NodePools that make warm nodes mean for the placeholders (pure).
//!
//! warmpool does not own the NodePool (the chart may render one; many platforms keep their
//! own), but two of its settings decide whether warm capacity works at all:
//! - `consolidationPolicy: WhenEmptyOrUnderutilized` (Karpenter's default when the field is
//!   absent) lets Karpenter replace a warm node that holds placeholders with a cheaper one,
//!   evicting them: the headroom is gone for a node's boot every time (seen 45 s after the node
//!   came up). `WhenEmpty` keeps nodes that hold placeholders.
//! - `limits` reached: no more warm nodes, so placeholders stay Pending and the headroom the
//!   prewarmer promises is not there.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use crate::core::pool::slot::{cpu_millis, memory_bytes};

/// Karpenter's API of NodePools.
pub const GROUP: &str = "karpenter.sh";
pub const VERSION: &str = "v1";
pub const KIND: &str = "NodePool";
pub const PLURAL: &str = "nodepools";

/// Karpenter's default when `spec.disruption.consolidationPolicy` is absent.
const DEFAULT_POLICY: &str = "WhenEmptyOrUnderutilized";

/// One NodePool that makes warm nodes, cut down to what is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPool {
    pub name: String,
    pub consolidation_policy: String,
    /// Resource → (in use by its nodes, limit), for the limited resources.
    pub limits: BTreeMap<String, (String, String)>,
}

/// Reads `node_pool` when it makes nodes labelled `key=value` (its template's labels, or a
/// requirement `key In [value]`), else `None`.
pub fn read(node_pool: &Value, key: &str, value: &str) -> Option<WarmPool> {
    let template = &node_pool["spec"]["template"];
    let labelled = template["metadata"]["labels"][key].as_str() == Some(value);
    let required = template["spec"]["requirements"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| {
            r["key"].as_str() == Some(key)
                && r["operator"].as_str() == Some("In")
                && r["values"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(value)))
        });
    if !labelled && !required {
        return None;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let used = &node_pool["status"]["resources"];
    let limits = node_pool["spec"]["limits"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(resource, limit)| {
            let limit = text(limit)?;
            let used = text(&used[resource]).unwrap_or_else(|| "0".into());
            Some((resource.clone(), (used, limit)))
        })
        .collect();
    Some(WarmPool {
        name: node_pool["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        consolidation_policy: node_pool["spec"]["disruption"]["consolidationPolicy"]
            .as_str()
            .unwrap_or(DEFAULT_POLICY)
            .to_owned(),
        limits,
    })
}

/// Something about the warm NodePools a platform engineer must hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `WhenEmptyOrUnderutilized`: Karpenter replaces warm nodes that hold placeholders.
    ReplacesWarmNodes { pool: String },
    /// Its nodes use all of a limited resource: no more warm nodes. `(resource, used, limit)`.
    AtLimits {
        pool: String,
        resources: Vec<(String, String, String)>,
    },
}

impl Finding {
    /// The `finding` label of `warmpool_prewarmer_node_pool_findings`.
    pub fn label(&self) -> &'static str {
        match self {
            Finding::ReplacesWarmNodes { .. } => "replaces_warm_nodes",
            Finding::AtLimits { .. } => "at_limits",
        }
    }

    /// What it means and what to do, for an Event, a log line and `warmpool status`.
    pub fn message(&self) -> String {
        match self {
            Finding::ReplacesWarmNodes { pool } => format!(
                "NodePool {pool} has consolidationPolicy WhenEmptyOrUnderutilized: Karpenter \
                 replaces warm nodes that hold placeholders with cheaper ones, evicting them, and \
                 the headroom is gone until the new node is up; set consolidationPolicy: \
                 WhenEmpty (the chart's nodePool default)"
            ),
            Finding::AtLimits { pool, resources } => {
                let used: Vec<String> = resources
                    .iter()
                    .map(|(r, used, limit)| format!("{r} {used} of {limit}"))
                    .collect();
                format!(
                    "NodePool {pool} is at its limits ({}): Karpenter launches no more warm \
                     nodes, so placeholders that need one stay Pending; raise spec.limits \
                     (nodePool.limits) or lower the spare slots",
                    used.join(", ")
                )
            }
        }
    }
}

/// The labels of every finding, for the gauges (each present, at 0 when none).
pub const FINDINGS: [&str; 2] = ["replaces_warm_nodes", "at_limits"];

/// What to say about these warm NodePools.
pub fn findings(pools: &[WarmPool]) -> Vec<Finding> {
    let mut out = Vec::new();
    for pool in pools {
        if pool.consolidation_policy == DEFAULT_POLICY {
            out.push(Finding::ReplacesWarmNodes {
                pool: pool.name.clone(),
            });
        }
        let reached: Vec<(String, String, String)> = pool
            .limits
            .iter()
            .filter(|(resource, (used, limit))| at_limit(resource, used, limit))
            .map(|(r, (used, limit))| (r.clone(), used.clone(), limit.clone()))
            .collect();
        if !reached.is_empty() {
            out.push(Finding::AtLimits {
                pool: pool.name.clone(),
                resources: reached,
            });
        }
    }
    out
}

/// Whether `used` leaves no room under `limit`: Karpenter launches a node only if the limit
/// still holds with it, so the smallest warm node needs room too; at the limit, none fits.
/// CPU compares in millicores, everything else in whole units (bytes, nodes, GPUs).
fn at_limit(resource: &str, used: &str, limit: &str) -> bool {
    let amount = |q: &str| {
        let q = Quantity(q.to_owned());
        if resource == "cpu" {
            cpu_millis(&q)
        } else {
            memory_bytes(&q)
        }
    };
    match (amount(used), amount(limit)) {
        (Some(used), Some(limit)) => used >= limit,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_pool(labels: Value, disruption: Value, limits: Value, resources: Value) -> Value {
        json!({
            "metadata": {"name": "warm"},
            "spec": {
                "template": {"metadata": {"labels": labels}, "spec": {"requirements": []}},
                "disruption": disruption,
                "limits": limits
            },
            "status": {"resources": resources}
        })
    }

    #[test]
    fn only_node_pools_that_make_warm_nodes_are_read() {
        let mine = node_pool(
            json!({"workload-type": "cargocats"}),
            json!({"consolidationPolicy": "WhenEmpty"}),
            json!({"cpu": "8", "memory": "32Gi"}),
            json!({"cpu": "4", "memory": "16Gi", "nodes": "2"}),
        );
        let pool = read(&mine, "workload-type", "cargocats").unwrap();
        assert_eq!(pool.consolidation_policy, "WhenEmpty");
        assert_eq!(pool.limits["cpu"], ("4".into(), "8".into()));
        assert_eq!(read(&mine, "workload-type", "other"), None);
        let by_requirement = json!({"metadata": {"name": "r"}, "spec": {"template": {"spec": {
            "requirements": [{"key": "workload-type", "operator": "In", "values": ["cargocats"]}]
        }}}});
        let pool = read(&by_requirement, "workload-type", "cargocats").unwrap();
        assert_eq!(
            pool.consolidation_policy, "WhenEmptyOrUnderutilized",
            "Karpenter's default when absent"
        );
        assert!(pool.limits.is_empty());
    }

    #[test]
    fn underutilized_consolidation_and_reached_limits_are_found() {
        let pools = [
            WarmPool {
                name: "a".into(),
                consolidation_policy: "WhenEmptyOrUnderutilized".into(),
                limits: BTreeMap::new(),
            },
            WarmPool {
                name: "b".into(),
                consolidation_policy: "WhenEmpty".into(),
                limits: [
                    ("cpu".to_owned(), ("4".to_owned(), "4".to_owned())),
                    ("memory".to_owned(), ("16Gi".to_owned(), "64Gi".to_owned())),
                    ("nodes".to_owned(), ("1".to_owned(), "3".to_owned())),
                ]
                .into(),
            },
            WarmPool {
                name: "c".into(),
                consolidation_policy: "WhenEmpty".into(),
                limits: [("cpu".to_owned(), ("3900m".to_owned(), "4".to_owned()))].into(),
            },
        ];
        let found = findings(&pools);
        assert_eq!(
            found,
            [
                Finding::ReplacesWarmNodes { pool: "a".into() },
                Finding::AtLimits {
                    pool: "b".into(),
                    resources: vec![("cpu".into(), "4".into(), "4".into())]
                }
            ]
        );
        assert!(
            found[0]
                .message()
                .contains("set consolidationPolicy: WhenEmpty")
        );
        assert!(
            found[1]
                .message()
                .starts_with("NodePool b is at its limits (cpu 4 of 4)"),
            "{}",
            found[1].message()
        );
        assert!(
            !at_limit("cpu", "nonsense", "4"),
            "an unreadable quantity finds nothing"
        );
        assert!(at_limit("nodes", "3", "3"));
    }
}
