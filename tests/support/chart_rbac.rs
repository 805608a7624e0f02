//! The chart's RBAC for a test: rendered by `helm template`, read into the grants it makes, and
//! installed on the local control plane (removed when dropped).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::cluster::{kubeconfig, repo_root};

pub fn helm() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WARMPOOL_TEST_HELM")
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    let out = std::process::Command::new(repo_root().join("tests/tools/helm.sh"))
        .stderr(std::process::Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )),
        other if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("helm is required in CI: {other:?}")
        }
        other => {
            eprintln!("SKIP: no helm (tests/tools/helm.sh): {other:?}");
            None
        }
    }
}

/// The chart rendered for `release` in `namespace`: the documents of the RBAC kinds.
pub fn rendered_rbac(helm: &Path, release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let chart = repo_root().join("charts/warmpool");
    let out = std::process::Command::new(helm)
        .args(["template", release])
        .arg(chart)
        .args(["--namespace", namespace])
        .args(values)
        // The reconciler's own grants only: the read-only role of `warmpool status` is bound
        // to people, not to its ServiceAccount (tests/chart/rbac.rs checks it).
        .args(["--set", "statusRole.create=false"])
        .output()
        .expect("helm template");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|doc| {
            matches!(
                doc["kind"].as_str(),
                Some(
                    "ServiceAccount"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "Role"
                        | "RoleBinding"
                )
            )
        })
        .collect()
}

/// One RBAC rule, flattened.
#[derive(Debug, Clone)]
pub struct Grant {
    pub group: String,
    pub resource: String,
    pub names: Vec<String>,
    pub verbs: Vec<String>,
    /// `None` for a ClusterRole (everywhere), else the Role's namespace.
    pub namespace: Option<String>,
}

pub fn grants(docs: &[Value]) -> Vec<Grant> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for doc in docs {
        let namespace = match doc["kind"].as_str() {
            Some("ClusterRole") => None,
            Some("Role") => Some(doc["metadata"]["namespace"].as_str().unwrap().to_owned()),
            _ => continue,
        };
        for rule in doc["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    out.push(Grant {
                        group: group.clone(),
                        resource,
                        names: strings(&rule["resourceNames"]),
                        verbs: strings(&rule["verbs"]),
                        namespace: namespace.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Creates the chart's RBAC objects (the ClusterRole and its binding are deleted on drop).
pub struct Installed {
    pub cluster_names: Vec<String>,
}

impl Installed {
    pub async fn create(client: &Client, docs: &[Value]) -> Installed {
        let pp = PostParams::default();
        let mut cluster_names = Vec::new();
        for doc in docs {
            let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
            let created = match doc["kind"].as_str().unwrap() {
                "ServiceAccount" => Api::<ServiceAccount>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                "Role" => Api::<Role>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                "RoleBinding" => Api::<RoleBinding>::namespaced(client.clone(), ns)
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                "ClusterRole" => {
                    cluster_names.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
                    Api::<ClusterRole>::all(client.clone())
                        .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                        .await
                        .map(|_| ())
                }
                "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone())
                    .create(&pp, &serde_json::from_value(doc.clone()).unwrap())
                    .await
                    .map(|_| ()),
                other => panic!("unexpected {other}"),
            };
            created.unwrap_or_else(|e| panic!("create {}: {e}", doc["kind"]));
        }
        Installed { cluster_names }
    }
}

impl Drop for Installed {
    /// The cluster-wide objects go, also when the test fails (kubectl: a kube client cannot be
    /// used from a destructor of the test's runtime).
    fn drop(&mut self) {
        let (Some(kubeconfig), false) = (kubeconfig(), self.cluster_names.is_empty()) else {
            return;
        };
        let kubectl = std::process::Command::new(repo_root().join("tests/cluster/cluster.sh"))
            .arg("kubectl-path")
            .output();
        if let Ok(out) = kubectl {
            let kubectl = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            for kind in ["clusterrolebinding", "clusterrole"] {
                let _ = std::process::Command::new(&kubectl)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["delete", kind, "--wait=false", "--ignore-not-found"])
                    .args(&self.cluster_names)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}
