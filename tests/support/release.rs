//! The chart installed for real (`helm install` against the local control plane), for the
//! in-cluster tests and the demo: warmpool's own pods on real nodes, from the image of the
//! static release binary in the local registry.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};

use super::cluster::{eventually_explained, kubeconfig, repo_root};
use super::real_nodes::{RealCluster, is_ready};

/// A release of `charts/warmpool`; uninstalled when dropped unless [`ChartRelease::uninstall`]
/// ran (a failing test included).
#[derive(Debug)]
pub struct ChartRelease {
    pub name: String,
    pub namespace: String,
    helm: PathBuf,
    kubeconfig: PathBuf,
    installed: bool,
}

/// The values a cluster without internet access needs: warmpool's image (the static release
/// binary, pushed into the local registry), the placeholders' pause image and the cached images,
/// all from the local registry.
pub fn local_image_values(cluster: &RealCluster) -> Vec<String> {
    let image = cluster.tool_image();
    let (repository, tag) = image.rsplit_once(':').expect("image name:tag");
    let r = &cluster.registry;
    vec![
        "--set".into(),
        format!("image.repository={repository}"),
        // A tag of digits only would be read as a number.
        "--set-string".into(),
        format!("image.tag={tag}"),
        "--set".into(),
        format!("prewarmer.image={}", r.pause),
        "--set-json".into(),
        format!(
            r#"imageCache.images=["{}","{}","{}"]"#,
            r.dataservice, r.frontgateservice, r.mysql
        ),
    ]
}

/// `args` as one shell line a person can copy (`helm` for the binary's path).
pub fn command_line(args: &[String]) -> String {
    let quote = |a: &String| {
        if a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
        {
            a.clone()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    // The chart by the path a person at the repository's root would type.
    let chart = chart();
    let shown = |a: &String| {
        if *a == chart {
            "charts/warmpool".to_owned()
        } else {
            quote(a)
        }
    };
    std::iter::once("helm".to_owned())
        .chain(args.iter().map(shown))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ChartRelease {
    /// The `helm install` arguments for release `name` in `namespace` with `values`.
    pub fn install_args(name: &str, namespace: &str, values: &[String]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "install".into(),
            name.into(),
            chart(),
            "--namespace".into(),
            namespace.into(),
        ];
        args.extend(values.iter().cloned());
        args
    }

    /// Runs `helm install` with `args` (from [`ChartRelease::install_args`], with more flags
    /// if wanted); panics with Helm's output when it fails.
    pub fn install(name: &str, namespace: &str, args: &[String]) -> ChartRelease {
        let mut release = ChartRelease {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            helm: super::helm::helm(),
            kubeconfig: kubeconfig().expect("the control plane's kubeconfig"),
            installed: false,
        };
        // Installed from the first attempt on: a half-done install is uninstalled too.
        release.installed = true;
        release.helm(args);
        release
    }

    /// Runs `helm ARGS` against the control plane; its stdout. Panics when Helm fails.
    pub fn helm(&self, args: &[String]) -> String {
        let out = Command::new(&self.helm)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "{} failed:\n{}{}",
            command_line(args),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm upgrade` of the release with `values` (the chart from this checkout).
    pub fn upgrade(&self, values: &[String]) -> String {
        let mut args: Vec<String> = vec![
            "upgrade".into(),
            self.name.clone(),
            chart(),
            "--namespace".into(),
            self.namespace.clone(),
        ];
        args.extend(values.iter().cloned());
        self.helm(&args)
    }

    /// `helm uninstall --wait`; its output.
    pub fn uninstall(&mut self) -> String {
        let out = self.helm(&[
            "uninstall".into(),
            self.name.clone(),
            "--namespace".into(),
            self.namespace.clone(),
            "--wait".into(),
        ]);
        self.installed = false;
        out
    }

    /// The chart's name for its objects (`<release>-warmpool`, or `warmpool` for a release of
    /// that name).
    pub fn fullname(&self) -> String {
        if self.name.contains("warmpool") {
            self.name.clone()
        } else {
            format!("{}-warmpool", self.name)
        }
    }

    /// The release's own pods (webhook + reconciler), those terminating included.
    pub async fn pods(&self, client: &Client) -> Vec<Pod> {
        let selector = format!(
            "app.kubernetes.io/name=warmpool,app.kubernetes.io/instance={}",
            self.name
        );
        Api::<Pod>::namespaced(client.clone(), &self.namespace)
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    /// Waits until exactly `replicas` pods of the release exist and every one is Ready through
    /// its own probes; `explain` is the failure's detail.
    pub async fn wait_ready<E, EFut>(
        &self,
        client: &Client,
        replicas: usize,
        timeout: Duration,
        explain: E,
    ) -> Vec<Pod>
    where
        E: FnOnce() -> EFut,
        EFut: std::future::Future<Output = String>,
    {
        eventually_explained(
            &format!("the {replicas} pods of release {} Ready", self.name),
            timeout,
            || async {
                let pods = self.pods(client).await;
                (pods.len() == replicas && pods.iter().all(is_ready)).then_some(pods)
            },
            explain,
        )
        .await
    }

    /// Waits until the webhook Service's EndpointSlices list exactly `pods` as ready: the
    /// addresses the API server calls (`--enable-aggregator-routing`). A pod's readiness reaches
    /// them through the EndpointSlice controller a moment after the pod's status, and a review
    /// sent meanwhile would find no endpoint (the chart fails open: the pod unmutated).
    pub async fn wait_in_rotation(&self, client: &Client, pods: &[Pod], timeout: Duration) {
        let mut want: Vec<String> = pods
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        want.sort();
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &self.namespace);
        let selector = format!("kubernetes.io/service-name={}", self.fullname());
        let seen = std::sync::Mutex::new(Vec::new());
        eventually_explained(
            &format!("the webhook Service's ready endpoints = the pods {want:?}"),
            timeout,
            || async {
                let list = slices
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                let mut ready: Vec<String> = list
                    .items
                    .iter()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .flat_map(|e| e.addresses.iter().cloned())
                    .collect();
                ready.sort();
                ready.dedup();
                let done = ready == want;
                *seen.lock().unwrap() = ready;
                done.then_some(())
            },
            || async { format!("ready endpoints: {:?}", seen.lock().unwrap()) },
        )
        .await;
    }
}

impl Drop for ChartRelease {
    fn drop(&mut self) {
        if self.installed {
            let _ = Command::new(&self.helm)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["uninstall", &self.name, "--namespace", &self.namespace])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The chart of this checkout.
pub fn chart() -> String {
    repo_root().join("charts/warmpool").display().to_string()
}
