//! The objects the reconciler keeps in place, built by pure functions of the configuration and
//! what was observed. Whatever is not set here is not owned by the field manager `warmpool`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    DeploymentStrategy, RollingUpdateDaemonSet, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EmptyDirVolumeSource, LocalObjectReference, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::images::{LeftOut, canonical};
use crate::config::{Config, SlotResources};
use crate::core::names::{
    CACHE_DIR, DO_NOT_DISRUPT, IMAGE_CACHE, IMAGE_CACHE_DISCOVERED, IMAGES_LEFT_OUT, MANAGED_BY,
    MANAGED_BY_LABEL, NO_WINDOW, NOOP_BINARY, PREWARMER, PRIORITY_CLASS, SCHEDULE_WINDOW,
};
use crate::core::spare::windows::InForce;

/// The placeholders' priority: below every real pod (0), so that any tenant preempts them.
pub const PLACEHOLDER_PRIORITY: i32 = -10;
/// The user and group the pods run as (the conventional `nobody` of the `pause` image).
pub const RUN_AS: i64 = 65535;
/// The emptyDir that carries the no-op program from the first init container to the others.
const CACHE_VOLUME: &str = "warmpool-cache";

const NAME_LABEL: &str = "app.kubernetes.io/name";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

/// The labels of every object of one component; the first entry (`app.kubernetes.io/name`) is
/// also the pod selector, which Kubernetes never lets change.
pub fn labels(name: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), name.to_owned()),
        (COMPONENT_LABEL.to_owned(), component.to_owned()),
        (PART_OF_LABEL.to_owned(), "warmpool".to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ])
}

/// The label selector of the pods of component `name` (`app.kubernetes.io/name=NAME`).
pub fn pod_selector(name: &str) -> String {
    format!("{NAME_LABEL}={name}")
}

/// The label selector of the image cache's pods, of both DaemonSets ([`cache_sets`]).
pub fn cache_pod_selector() -> String {
    format!("{NAME_LABEL} in ({IMAGE_CACHE},{IMAGE_CACHE_DISCOVERED})")
}

/// Whether a pod's `app.kubernetes.io/name` is one of the image cache's.
pub fn is_cache_pod(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(NAME_LABEL))
        .is_some_and(|n| n == IMAGE_CACHE || n == IMAGE_CACHE_DISCOVERED)
}

fn selector(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(NAME_LABEL.to_owned(), name.to_owned())])),
        ..LabelSelector::default()
    }
}

fn meta(
    name: &str,
    namespace: Option<&str>,
    component: &str,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(name, component)),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..ObjectMeta::default()
    }
}

/// The metadata of another object of warmpool's in its namespace (the arrivals record).
pub fn named(name: &str, namespace: &str, component: &str) -> ObjectMeta {
    meta(name, Some(namespace), component, None)
}

/// PriorityClass `warmpool-placeholder`: value -10, never preempts, not the global default.
/// Cluster-scoped, so it carries no owner reference (a namespaced owner is not allowed); the
/// chart owns it too.
pub fn priority_class() -> PriorityClass {
    PriorityClass {
        metadata: meta(PRIORITY_CLASS, None, "placeholder", None),
        value: PLACEHOLDER_PRIORITY,
        preemption_policy: Some("Never".into()),
        global_default: Some(false),
        description: Some(
            "warmpool placeholder pods: hold room on warm nodes until any real pod preempts them"
                .into(),
        ),
    }
}

/// Deployment `warmpool-prewarmer`: `spare.slots` pause pods (`prewarmer.spareSlots`, raised by
/// the schedule's windows: [`crate::config::Prewarmer::in_force`] at the instant of interest),
/// each requesting `slot`, pinned to the pool and preemptible by every tenant. With a schedule,
/// the annotation [`SCHEDULE_WINDOW`] names the window in force (or [`NO_WINDOW`]).
pub fn prewarmer(
    config: &Config,
    namespace: &str,
    slot: &SlotResources,
    spare: &InForce,
    owner: Option<&OwnerReference>,
) -> Deployment {
    let mut template_meta = ObjectMeta {
        labels: Some(labels(PREWARMER, "prewarmer")),
        ..ObjectMeta::default()
    };
    if config.prewarmer.do_not_disrupt {
        template_meta.annotations = Some(BTreeMap::from([(
            DO_NOT_DISRUPT.to_owned(),
            "true".to_owned(),
        )]));
    }
    let pause = Container {
        name: "pause".into(),
        image: Some(config.prewarmer.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: Some(requests(&slot.cpu, &slot.memory)),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let mut metadata = meta(PREWARMER, Some(namespace), "prewarmer", owner);
    if !config.prewarmer.schedule.is_empty() {
        let window = spare.window.as_deref().unwrap_or(NO_WINDOW);
        metadata.annotations = Some(BTreeMap::from([(
            SCHEDULE_WINDOW.to_owned(),
            window.to_owned(),
        )]));
    }
    Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(spare.slots).unwrap_or(i32::MAX)),
            selector: selector(PREWARMER),
            // Never surge: one placeholder too many is a whole node too many.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(0)),
                    max_unavailable: Some(IntOrString::Int(1)),
                }),
            }),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(PodSpec {
                    priority_class_name: Some(PRIORITY_CLASS.into()),
                    // Preemption frees the room at once.
                    termination_grace_period_seconds: Some(0),
                    containers: vec![pause],
                    ..pool_pod_spec(config, Vec::new())
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// What one image-cache DaemonSet holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSet {
    pub name: &'static str,
    /// Canonical references, in the order the DaemonSet lists them.
    pub images: Vec<String>,
    /// Pulled with `imageCache.imagePullSecrets`.
    pub with_pull_secrets: bool,
    /// What tenants run that the cache leaves out ([`IMAGES_LEFT_OUT`]).
    pub left_out: BTreeMap<LeftOut, u32>,
}

/// The image-cache DaemonSets: the one that always exists, and the one for discovered images
/// when it must be apart. Pure.
///
/// A pod's `imagePullSecrets` serve every image in it, so a cache pod that held a tenant's
/// image and warmpool's secrets would pull that image with warmpool's credentials: a tenant
/// could name a private image it has no right to and have warmpool put it on every warm node
/// (the kubelet of Kubernetes 1.34 and older then lets any pod there run it). So with pull
/// secrets the configured images (the operator's) stay in [`IMAGE_CACHE`] with them and the
/// discovered ones go to [`IMAGE_CACHE_DISCOVERED`], which has none. Without secrets, or without
/// discovery, one DaemonSet holds every image.
pub fn cache_sets(
    config: &Config,
    images: &[String],
    left_out: &BTreeMap<LeftOut, u32>,
) -> (CacheSet, Option<CacheSet>) {
    let set = |name, images: Vec<String>, with_pull_secrets| CacheSet {
        name,
        images,
        with_pull_secrets,
        left_out: if name == IMAGE_CACHE {
            left_out.clone()
        } else {
            BTreeMap::new()
        },
    };
    if config.image_cache.image_pull_secrets.is_empty() {
        return (set(IMAGE_CACHE, images.to_vec(), false), None);
    }
    if !config.image_cache.discover {
        // Every image is configured: all with the secrets, no second DaemonSet.
        return (set(IMAGE_CACHE, images.to_vec(), true), None);
    }
    let configured: BTreeSet<String> = config
        .image_cache
        .images
        .iter()
        .map(|i| canonical(i))
        .collect();
    let (theirs, discovered): (Vec<String>, Vec<String>) =
        images.iter().cloned().partition(|i| configured.contains(i));
    (
        set(IMAGE_CACHE, theirs, true),
        Some(set(IMAGE_CACHE_DISCOVERED, discovered, false)),
    )
}

/// `max-images=3 byte-budget=1`: the [`IMAGES_LEFT_OUT`] annotation.
fn left_out_text(left_out: &BTreeMap<LeftOut, u32>) -> String {
    left_out
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{}={n}", reason.label()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An image-cache DaemonSet ([`cache_sets`]): on every warm node, after an init container that copies
/// the static `warmpool` into an emptyDir, a pause container and one container per image that
/// runs that copy's `hold` (it waits for SIGTERM, so images without a shell work too). Regular
/// containers start independently: an image that cannot be pulled leaves its own container in
/// `ImagePullBackOff` and every other image is still pulled, and a running container keeps its
/// image safe from the kubelet's image garbage collection. The images are listed in the order
/// given (see [`super::images`]).
pub fn image_cache(
    config: &Config,
    namespace: &str,
    set: &CacheSet,
    owner: Option<&OwnerReference>,
) -> DaemonSet {
    let images = &set.images;
    let cache_mount = |read_only: bool| VolumeMount {
        name: CACHE_VOLUME.into(),
        mount_path: CACHE_DIR.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    };
    let tiny = || requests(&Quantity("5m".into()), &Quantity("16Mi".into()));
    let init_containers = vec![Container {
        name: "install-noop".into(),
        image: Some(config.image_cache.tool_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        // The tool image's entrypoint is `warmpool`: it copies itself into the emptyDir.
        args: Some(vec!["install-noop".into(), CACHE_DIR.into()]),
        volume_mounts: Some(vec![cache_mount(false)]),
        resources: Some(tiny()),
        security_context: Some(container_security()),
        ..Container::default()
    }];
    let mut containers = vec![Container {
        name: "pause".into(),
        image: Some(config.prewarmer.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: Some(tiny()),
        security_context: Some(container_security()),
        ..Container::default()
    }];
    let hold = format!("{CACHE_DIR}/{NOOP_BINARY}");
    for (name, image) in cache_container_names(images).into_iter().zip(images) {
        containers.push(Container {
            name,
            image: Some(image.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec![hold.clone(), "hold".into()]),
            args: Some(Vec::new()),
            volume_mounts: Some(vec![cache_mount(true)]),
            resources: Some(tiny()),
            security_context: Some(container_security()),
            ..Container::default()
        });
    }
    let pull_secrets: Vec<LocalObjectReference> = config
        .image_cache
        .image_pull_secrets
        .iter()
        .filter(|_| set.with_pull_secrets)
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();
    let mut metadata = meta(set.name, Some(namespace), "image-cache", owner);
    let left_out = left_out_text(&set.left_out);
    if !left_out.is_empty() {
        metadata.annotations = Some(BTreeMap::from([(IMAGES_LEFT_OUT.to_owned(), left_out)]));
    }
    DaemonSet {
        metadata,
        spec: Some(DaemonSetSpec {
            selector: selector(set.name),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("25%".into())),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(set.name, "image-cache")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    termination_grace_period_seconds: Some(0),
                    image_pull_secrets: (!pull_secrets.is_empty()).then_some(pull_secrets),
                    init_containers: Some(init_containers),
                    containers,
                    volumes: Some(vec![Volume {
                        name: CACHE_VOLUME.into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity("256Mi".into())),
                            ..EmptyDirVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    // Only nodes the tool image (the first init container) can run on.
                    ..pool_pod_spec(config, vec![architectures(config)])
                }),
            },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// The well-known node label the kubelet sets to its GOARCH.
pub const ARCH_LABEL: &str = "kubernetes.io/arch";

/// `kubernetes.io/arch In [imageCache.architectures]`: the image cache's `install-noop` runs the
/// tool image's binary, so a node of another architecture could not start it.
fn architectures(config: &Config) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: ARCH_LABEL.into(),
        operator: "In".into(),
        values: Some(config.image_cache.architectures.clone()),
    }
}

/// What every warm-pool pod shares: the pool's required node affinity (with `also` ANDed into its
/// term) and tolerations, no service-account token, no service links, a non-root
/// RuntimeDefault-seccomp pod.
fn pool_pod_spec(config: &Config, also: Vec<NodeSelectorRequirement>) -> PodSpec {
    let label = &config.pool.node_label;
    let mut expressions = vec![NodeSelectorRequirement {
        key: label.key.clone(),
        operator: "In".into(),
        values: Some(vec![label.value.clone()]),
    }];
    expressions.extend(also);
    PodSpec {
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(expressions),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        }),
        tolerations: Some(config.pool.tolerations.iter().map(|t| t.to_k8s()).collect()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

fn requests(cpu: &Quantity, memory: &Quantity) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), cpu.clone()),
            ("memory".to_owned(), memory.clone()),
        ])),
        ..ResourceRequirements::default()
    }
}

/// What the name of every cached image's container starts with.
pub const CACHE_CONTAINER_PREFIX: &str = "cache-";

/// One container name per image: `cache-<short name>-<8 hex of a stable hash>`, a valid DNS
/// label that stays the same for the same image whatever else is cached.
pub fn cache_container_names(images: &[String]) -> Vec<String> {
    let mut taken = BTreeSet::new();
    images
        .iter()
        .map(|image| {
            let base = format!(
                "{CACHE_CONTAINER_PREFIX}{}-{:08x}",
                short_name(image),
                fnv1a32(image)
            );
            let mut name = base.clone();
            let mut n = 2;
            while !taken.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// The last path segment of an image reference without tag or digest, as DNS-label characters,
/// at most 30 of them.
fn short_name(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repo = last.split(':').next().unwrap_or(last);
    let mut out = String::new();
    for c in repo.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 30 {
            break;
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "image".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// FNV-1a, folded to 32 bits: a hash that never changes between Rust releases (unlike
/// `DefaultHasher`), so names stay put across upgrades.
fn fnv1a32(s: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((hash >> 32) ^ (hash & 0xffff_ffff)) as u32
}

/// The prewarmer Deployment, which its Events are about (the placeholders' Events and the spare slots').
pub fn prewarmer_reference(namespace: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some(PREWARMER.into()),
        namespace: Some(namespace.to_owned()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What is in force outside every window: `prewarmer.spareSlots`.
    fn base(config: &Config) -> InForce {
        InForce {
            slots: config.prewarmer.spare_slots.without_arrivals(),
            window: None,
            next_change: None,
        }
    }

    #[test]
    fn the_left_out_annotation_reads_back() {
        let counts = BTreeMap::from([
            (LeftOut::Registry, 0),
            (LeftOut::MaxImages, 3),
            (LeftOut::ByteBudget, 1),
        ]);
        let text = left_out_text(&counts);
        assert_eq!(text, "max-images=3 byte-budget=1");
        assert_eq!(
            LeftOut::parse_counts(&text),
            [(LeftOut::MaxImages, 3), (LeftOut::ByteBudget, 1)]
        );
        // A reason from another version, or a count that is not one, is skipped.
        assert_eq!(
            LeftOut::parse_counts("later-reason=2 max-images=x per-namespace=4 junk"),
            [(LeftOut::PerNamespace, 4)]
        );
    }

    #[test]
    fn the_prewarmer_keeps_the_slots_in_force_and_names_the_window() {
        let config = Config::from_yaml(
            "prewarmer:\n  spareSlots: 1\n  schedule:\n    - {name: workshop-mornings, \
             timezone: Europe/Berlin, cron: '0 9 * * 1-5', duration: 4h, spareSlots: 30, \
             leadTime: 15m}\n",
        )
        .unwrap();
        let slot = SlotResources::default();
        let at = |t: &str| {
            let spare = config.prewarmer.in_force(t.parse().unwrap());
            serde_json::to_value(prewarmer(&config, "ns", &slot, &spare, None)).unwrap()
        };
        // Monday 2026-11-30 08:45 in Berlin: warm.
        let open = at("2026-11-30T07:45:00Z");
        assert_eq!(open["spec"]["replicas"], 30);
        assert_eq!(
            open["metadata"]["annotations"],
            json!({"warmpool.io/schedule-window": "workshop-mornings"})
        );
        // 13:00 in Berlin: closed, the base value and `none`.
        let closed = at("2026-11-30T12:00:00Z");
        assert_eq!(closed["spec"]["replicas"], 1);
        assert_eq!(
            closed["metadata"]["annotations"],
            json!({"warmpool.io/schedule-window": "none"})
        );
        // Only the replicas and the annotation differ.
        let (mut a, mut b) = (open, closed);
        for d in [&mut a, &mut b] {
            d["spec"]["replicas"] = json!(null);
            d["metadata"]["annotations"] = json!(null);
        }
        assert_eq!(a, b);
        // Without a schedule: no annotation at all (nothing changes for those who have none).
        let plain = Config::default();
        let got =
            serde_json::to_value(prewarmer(&plain, "ns", &slot, &base(&plain), None)).unwrap();
        assert!(got["metadata"].get("annotations").is_none(), "{got}");
    }

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "warmpool".into(),
            uid: "0000-1111".into(),
            ..OwnerReference::default()
        }
    }

    fn security() -> serde_json::Value {
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": 65535,
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    }

    fn pool_spec() -> serde_json::Value {
        json!({
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "workload-type", "operator": "In", "values": ["cargocats"]}
                ]}]
            }}},
            "tolerations": [
                {"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"}
            ],
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65535,
                "runAsGroup": 65535,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        })
    }

    fn merge(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    }

    fn labels_json(name: &str, component: &str) -> serde_json::Value {
        json!({
            "app.kubernetes.io/name": name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/part-of": "warmpool",
            "app.kubernetes.io/managed-by": "warmpool",
        })
    }

    #[test]
    fn the_priority_class() {
        assert_eq!(
            serde_json::to_value(priority_class()).unwrap(),
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {
                    "name": "warmpool-placeholder",
                    "labels": labels_json("warmpool-placeholder", "placeholder"),
                },
                "value": -10,
                "preemptionPolicy": "Never",
                "globalDefault": false,
                "description": "warmpool placeholder pods: hold room on warm nodes until any real pod preempts them",
            })
        );
    }

    #[test]
    fn the_prewarmer_with_the_default_configuration() {
        let config = Config::default();
        let slot = SlotResources::default();
        let got = serde_json::to_value(prewarmer(
            &config,
            "warmpool-system",
            &slot,
            &base(&config),
            Some(&owner()),
        ))
        .unwrap();
        let pod_spec = merge(
            pool_spec(),
            json!({
                "priorityClassName": "warmpool-placeholder",
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "pause",
                    "image": "registry.k8s.io/pause:3.10",
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {"requests": {"cpu": "640m", "memory": "2150Mi"}},
                    "securityContext": security(),
                }],
            }),
        );
        assert_eq!(
            got,
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": "warmpool-prewarmer",
                    "namespace": "warmpool-system",
                    "labels": labels_json("warmpool-prewarmer", "prewarmer"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "warmpool", "uid": "0000-1111"}],
                },
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "warmpool-prewarmer"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                    "revisionHistoryLimit": 2,
                    "template": {
                        // No karpenter.sh/do-not-disrupt: off by default.
                        "metadata": {"labels": labels_json("warmpool-prewarmer", "prewarmer")},
                        "spec": pod_spec,
                    },
                },
            })
        );
    }

    #[test]
    fn the_prewarmer_follows_the_configuration() {
        let config = Config::from_yaml(
            "pool:\n  nodeLabel: {key: pool, value: warm}\n  tolerations: [{key: dedicated, operator: Exists}]\n\
             prewarmer: {spareSlots: 3, doNotDisrupt: true, image: 'example.com/pause:1'}\n",
        )
        .unwrap();
        let slot = SlotResources {
            cpu: Quantity("2".into()),
            memory: Quantity("4Gi".into()),
        };
        let got =
            serde_json::to_value(prewarmer(&config, "ns", &slot, &base(&config), None)).unwrap();
        assert_eq!(got["spec"]["replicas"], 3);
        assert!(got["metadata"].get("ownerReferences").is_none());
        assert_eq!(
            got["spec"]["template"]["metadata"]["annotations"],
            json!({"karpenter.sh/do-not-disrupt": "true"})
        );
        let spec = &got["spec"]["template"]["spec"];
        assert_eq!(
            spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchExpressions"],
            json!([{"key": "pool", "operator": "In", "values": ["warm"]}])
        );
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "dedicated", "operator": "Exists"}])
        );
        assert_eq!(spec["containers"][0]["image"], "example.com/pause:1");
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"requests": {"cpu": "2", "memory": "4Gi"}})
        );
    }

    /// The set [`cache_sets`] keeps in `warmpool-image-cache`, nothing left out.
    fn one_set(config: &Config, images: &[String]) -> CacheSet {
        let mut config = config.clone();
        config.image_cache.images = images.to_vec();
        cache_sets(&config, images, &BTreeMap::new()).0
    }

    #[test]
    fn with_pull_secrets_discovered_images_are_pulled_without_them() {
        let mut config = Config::default();
        config.image_cache.images = vec!["private.example.com/ours:1".into(), "mysql:9".into()];
        let images: Vec<String> = [
            "docker.io/library/mysql:9",
            "docker.io/library/nginx:1",
            "private.example.com/ours:1",
            "private.example.com/theirs:1",
        ]
        .map(String::from)
        .to_vec();
        let left_out = BTreeMap::from([(LeftOut::MaxImages, 2), (LeftOut::Registry, 0)]);
        // No secrets: one DaemonSet holds everything.
        let (one, none) = cache_sets(&config, &images, &left_out);
        assert_eq!((one.name, &one.images, none), (IMAGE_CACHE, &images, None));
        let ds = serde_json::to_value(image_cache(&config, "ns", &one, None)).unwrap();
        assert!(
            ds["spec"]["template"]["spec"]
                .get("imagePullSecrets")
                .is_none()
        );
        assert_eq!(
            ds["metadata"]["annotations"],
            json!({"warmpool.io/images-left-out": "max-images=2"})
        );
        // Secrets without discovery: every image is configured, one DaemonSet with them.
        config.image_cache.image_pull_secrets = vec!["ecr".into()];
        config.image_cache.discover = false;
        let (all, none) = cache_sets(&config, &images, &left_out);
        assert_eq!(
            (all.images.len(), all.with_pull_secrets, none),
            (4, true, None)
        );
        // Secrets: the configured images keep them; the discovered ones go to a DaemonSet of
        // their own, with none.
        config.image_cache.discover = true;
        let (ours, theirs) = cache_sets(&config, &images, &left_out);
        let theirs = theirs.expect("a DaemonSet for the discovered images");
        assert_eq!(
            ours.images,
            ["docker.io/library/mysql:9", "private.example.com/ours:1"]
        );
        assert_eq!(
            theirs.images,
            ["docker.io/library/nginx:1", "private.example.com/theirs:1"]
        );
        let ours = serde_json::to_value(image_cache(&config, "ns", &ours, None)).unwrap();
        let theirs = serde_json::to_value(image_cache(&config, "ns", &theirs, None)).unwrap();
        assert_eq!(
            ours["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": "ecr"}])
        );
        assert!(
            theirs["spec"]["template"]["spec"]
                .get("imagePullSecrets")
                .is_none()
        );
        assert_eq!(theirs["metadata"]["name"], IMAGE_CACHE_DISCOVERED);
        assert_eq!(
            theirs["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/name": IMAGE_CACHE_DISCOVERED}),
            "selectors apart: the two DaemonSets never claim each other's pods"
        );
        assert_eq!(
            theirs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
            "image-cache"
        );
        assert!(theirs["metadata"].get("annotations").is_none());
        for ds in [&ours, &theirs] {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(ds["spec"]["template"]["metadata"]["labels"].clone())
                    .unwrap();
            assert!(is_cache_pod(Some(&labels)));
        }
        assert!(!is_cache_pod(Some(&labels(PREWARMER, "prewarmer"))));
    }

    #[test]
    fn the_image_cache() {
        let mut config = Config::default();
        config.image_cache.image_pull_secrets = vec!["ecr".into()];
        config.image_cache.tool_image = "example.com/warmpool:1".into();
        let images = vec![
            "a.example.com/team/dataservice:v1.1".to_string(),
            "gcr.io/distroless/static@sha256:abcd".to_string(),
        ];
        let got = serde_json::to_value(image_cache(
            &config,
            "warmpool-system",
            &one_set(&config, &images),
            None,
        ))
        .unwrap();
        let names = cache_container_names(&images);
        let tiny = json!({"requests": {"cpu": "5m", "memory": "16Mi"}});
        let cache = |name: &str, image: &str| {
            json!({
                "name": name,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/warmpool-cache/warmpool", "hold"],
                "args": [],
                "volumeMounts": [{"name": "warmpool-cache", "mountPath": "/warmpool-cache", "readOnly": true}],
                "resources": tiny,
                "securityContext": security(),
            })
        };
        let pod_spec = merge(
            pool_spec(),
            json!({
                // The pool's term, and only the architectures the tool image is built for.
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "workload-type", "operator": "In", "values": ["cargocats"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
                    ]}]
                }}},
                "terminationGracePeriodSeconds": 0,
                "imagePullSecrets": [{"name": "ecr"}],
                "initContainers": [
                    {
                        "name": "install-noop",
                        "image": "example.com/warmpool:1",
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["install-noop", "/warmpool-cache"],
                        "volumeMounts": [{"name": "warmpool-cache", "mountPath": "/warmpool-cache", "readOnly": false}],
                        "resources": tiny,
                        "securityContext": security(),
                    },
                ],
                "containers": [
                    {
                        "name": "pause",
                        "image": "registry.k8s.io/pause:3.10",
                        "imagePullPolicy": "IfNotPresent",
                        "resources": tiny,
                        "securityContext": security(),
                    },
                    cache(&names[0], &images[0]),
                    cache(&names[1], &images[1]),
                ],
                "volumes": [{"name": "warmpool-cache", "emptyDir": {"sizeLimit": "256Mi"}}],
            }),
        );
        assert_eq!(
            got,
            json!({
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {
                    "name": "warmpool-image-cache",
                    "namespace": "warmpool-system",
                    "labels": labels_json("warmpool-image-cache", "image-cache"),
                },
                "spec": {
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "warmpool-image-cache"}},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 0}},
                    "revisionHistoryLimit": 2,
                    "template": {
                        "metadata": {"labels": labels_json("warmpool-image-cache", "image-cache")},
                        "spec": pod_spec,
                    },
                },
            })
        );
    }

    #[test]
    fn the_image_cache_goes_only_to_the_configured_architectures_of_the_pool() {
        let mut config = Config::default();
        config.pool.node_label.key = "example.com/pool".into();
        config.pool.node_label.value = "gold".into();
        config.image_cache.architectures = vec!["arm64".into()];
        let got =
            serde_json::to_value(image_cache(&config, "ns", &one_set(&config, &[]), None)).unwrap();
        let required = &got["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
        // One term: both expressions must hold (ANDed), not either (ORed terms).
        assert_eq!(
            required,
            &json!({"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "example.com/pool", "operator": "In", "values": ["gold"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
            ]}]})
        );
        // The placeholders are not restricted: pause images are multi-arch.
        let prewarmer = serde_json::to_value(prewarmer(
            &config,
            "ns",
            &SlotResources::default(),
            &base(&config),
            None,
        ))
        .unwrap();
        let terms = &prewarmer["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        assert_eq!(
            terms,
            &json!([{"matchExpressions": [
                {"key": "example.com/pool", "operator": "In", "values": ["gold"]},
            ]}])
        );
    }

    #[test]
    fn no_pull_secrets_and_no_images_leave_a_pause_pod_with_the_installer() {
        let got = serde_json::to_value(image_cache(
            &Config::default(),
            "ns",
            &one_set(&Config::default(), &[]),
            None,
        ))
        .unwrap();
        let spec = &got["spec"]["template"]["spec"];
        assert!(spec.get("imagePullSecrets").is_none());
        assert_eq!(spec["initContainers"].as_array().map(Vec::len), Some(1));
        assert_eq!(spec["containers"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn cache_container_names_are_stable_valid_and_unique() {
        let images: Vec<String> = vec![
            "771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/dataservice:v1.1".into(),
            "771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/dataservice:v1.2".into(),
            "docker.io/library/MySQL_Server:9".into(),
            "registry:5000/___:1".into(),
            format!("x/{}:1", "a".repeat(100)),
        ];
        let names = cache_container_names(&images);
        assert_eq!(names, cache_container_names(&images), "deterministic");
        assert_eq!(
            cache_container_names(&images[1..2]),
            names[1..2],
            "a name does not depend on the other images"
        );
        assert!(names[0].starts_with("cache-dataservice-"), "{names:?}");
        assert!(names[2].starts_with("cache-mysql-server-"), "{names:?}");
        assert!(names[3].starts_with("cache-image-"), "{names:?}");
        assert_ne!(names[0], names[1]);
        for name in &names {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-'), "{name}");
        }
        let twice = cache_container_names(&["a:1".to_string(), "a:1".to_string()]);
        assert_ne!(twice[0], twice[1]);
    }
}
