//! The configuration file: its shape, the CargoCATs defaults, and validation that names the
//! offending path (`prewarmer.slot.cpu: ...`) so a bad ConfigMap fails at start, not at 3 a.m.

pub mod duration;
use std::path::Path;

use k8s_openapi::api::core::v1::Toleration as K8sToleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube_quantity::ParsedQuantity;
use serde::{Deserialize, Deserializer, Serialize};

use crate::core::tenant::{RuleError, TenantSelector};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `path` is the dotted path of the offending key (`prewarmer.slot`), empty for the root.
    #[error("invalid config{}: {message}", at(path))]
    Invalid { path: String, message: String },
}

fn at(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

impl ConfigError {
    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration. Every key is optional; `Config::default()` is the CargoCATs setup.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    pub tenants: Tenants,
    pub pool: Pool,
    pub prewarmer: Prewarmer,
    pub image_cache: ImageCache,
    /// Optional prices of the warm nodes' CPU and memory: `warmpool status` then estimates what
    /// the spare slots cost per month ([`crate::core::pricing`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing: Option<crate::core::pricing::Pricing>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Tenants {
    /// Shell-style globs (`demo-*`, `team-?`, `[ab]-*`) matched against namespace names.
    pub namespace_patterns: Vec<String>,
    /// Namespaces that are never tenants, whatever their name or label (besides the system ones
    /// and warmpool's own). The chart also keeps the webhook from being called for their pods.
    pub exclude_namespaces: Vec<String>,
    /// Label-selector requirements a tenant namespace's labels must also satisfy (`In`,
    /// `NotIn`, `Exists`, `DoesNotExist`), e.g. to roll warmpool out team by team. The chart
    /// adds the same requirements to the webhook's `namespaceSelector`.
    pub namespace_match_expressions: Vec<LabelSelectorRequirement>,
    /// How a new tenant's time to Ready is measured ([`crate::core::tenant_ready`]).
    pub time_to_ready: TimeToReady,
    /// What the reconciler does with tenant pods that escaped the webhook
    /// ([`crate::core::unsteered`]): always an Event and a gauge; `evict` also evicts those a
    /// controller owns, so that they come back through the webhook.
    pub repair: Repair,
}

impl Tenants {
    /// The tenant rule of this configuration (patterns, exclusions, label requirements): the
    /// one the webhook, the reconciler, `status` and `mutate` all apply.
    pub fn selector(&self, own_namespace: Option<&str>) -> Result<TenantSelector, RuleError> {
        TenantSelector::with_exclusions(
            &self.namespace_patterns,
            &self.exclude_namespaces,
            &self.namespace_match_expressions,
            own_namespace,
        )
    }
}

/// `tenants.repair`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Repair {
    #[default]
    None,
    Evict,
}

impl Default for Tenants {
    fn default() -> Self {
        Tenants {
            namespace_patterns: vec!["demo-*".into()],
            exclude_namespaces: Vec::new(),
            namespace_match_expressions: Vec::new(),
            time_to_ready: TimeToReady::default(),
            repair: Repair::None,
        }
    }
}

/// `tenants.timeToReady`: a new tenant is measured from its namespace's creation to every pod
/// made within `window` of it Ready; not all Ready after `timeout`, it is reported not Ready.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TimeToReady {
    /// Off: no measurement, and no pod, node or Event watch for it.
    pub enabled: bool,
    pub window: String,
    pub timeout: String,
}

impl Default for TimeToReady {
    fn default() -> Self {
        TimeToReady {
            enabled: true,
            window: "1m".into(),
            timeout: "10m".into(),
        }
    }
}

impl TimeToReady {
    const LONGEST: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

    fn parse(text: &str) -> Result<jiff::SignedDuration, String> {
        crate::config::duration::parse_at_most(text, Self::LONGEST, "a day")
    }

    /// The window (validated; the default if it does not parse).
    pub fn window(&self) -> jiff::SignedDuration {
        Self::parse(&self.window).unwrap_or(jiff::SignedDuration::from_mins(1))
    }

    /// The timeout (validated; the default if it does not parse).
    pub fn timeout(&self) -> jiff::SignedDuration {
        Self::parse(&self.timeout).unwrap_or(jiff::SignedDuration::from_mins(10))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let at = |key: &str| format!("tenants.timeToReady.{key}");
        let window =
            Self::parse(&self.window).map_err(|m| ConfigError::invalid(at("window"), m))?;
        let timeout =
            Self::parse(&self.timeout).map_err(|m| ConfigError::invalid(at("timeout"), m))?;
        if timeout < window {
            return Err(ConfigError::invalid(
                at("timeout"),
                format!(
                    "`{}` is shorter than tenants.timeToReady.window (`{}`)",
                    self.timeout, self.window
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Pool {
    /// The label that the warm nodes carry and that tenant pods are steered to.
    pub node_label: NodeLabel,
    pub affinity: AffinityMode,
    pub tolerations: Vec<Toleration>,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            node_label: NodeLabel::default(),
            affinity: AffinityMode::Required,
            tolerations: vec![Toleration {
                key: Some("workload-type".into()),
                operator: TolerationOperator::Equal,
                value: Some("cargocats".into()),
                effect: Some(TaintEffect::NoSchedule),
                toleration_seconds: None,
            }],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLabel {
    pub key: String,
    pub value: String,
}

impl Default for NodeLabel {
    fn default() -> Self {
        NodeLabel {
            key: "workload-type".into(),
            value: "cargocats".into(),
        }
    }
}

/// How strongly tenant pods are tied to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityMode {
    /// `requiredDuringSchedulingIgnoredDuringExecution`: tenants run on warm nodes or not at all.
    Required,
    /// `preferredDuringSchedulingIgnoredDuringExecution` with weight 100.
    Preferred,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TolerationOperator {
    Equal,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A toleration as Kubernetes spells it, with the enumerations checked at load time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default = "equal")]
    pub operator: TolerationOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

fn equal() -> TolerationOperator {
    TolerationOperator::Equal
}

impl Toleration {
    /// The Kubernetes object, as it is written into pod specs.
    pub fn to_k8s(&self) -> K8sToleration {
        K8sToleration {
            key: self.key.clone(),
            operator: Some(
                match self.operator {
                    TolerationOperator::Equal => "Equal",
                    TolerationOperator::Exists => "Exists",
                }
                .into(),
            ),
            value: self.value.clone(),
            effect: self.effect.map(|e| {
                match e {
                    TaintEffect::NoSchedule => "NoSchedule",
                    TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                    TaintEffect::NoExecute => "NoExecute",
                }
                .into()
            }),
            toleration_seconds: self.toleration_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Prewarmer {
    /// Placeholder replicas, each reserving one tenant slot on the warm nodes: a number, or
    /// sized from real arrivals (`{auto: {min, max, span, lookback}}`, [`crate::core::spare::arrivals`]).
    pub spare_slots: SpareSlots,
    pub slot: Slot,
    /// With `slot: auto`: the slot never grows past this, resource by resource (the largest warm
    /// node caps it as well). Absent: only the node caps it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_max: Option<SlotResources>,
    /// Annotate placeholders `karpenter.sh/do-not-disrupt: "true"`. Off by default (0.2): it
    /// blocks consolidation and makes drift and expiry wait for the NodePool's
    /// `terminationGracePeriod`, while `consolidationPolicy: WhenEmpty` already keeps nodes that
    /// hold placeholders.
    pub do_not_disrupt: bool,
    pub image: String,
    /// Windows that raise `spareSlots` (a workshop on weekday mornings): the slots in force are
    /// the largest of `spareSlots` and the values of the windows warm at that instant
    /// ([`crate::core::spare::windows`]). Empty by default: `spareSlots` always.
    pub schedule: Vec<crate::core::spare::windows::WindowSpec>,
    /// Gentle scale-down ([`crate::core::spare::scale_down`]); absent: the target at once, as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<crate::core::spare::scale_down::ScaleDownSpec>,
}

/// `prewarmer.spareSlots`: a fixed number, or sized from real arrivals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SpareSlots {
    Fixed(u32),
    Auto {
        auto: crate::core::spare::arrivals::AutoSpec,
    },
}

impl SpareSlots {
    /// The slots with no arrival known (`warmpool render`, and before the first observation):
    /// the number, or `auto.min`.
    pub fn without_arrivals(&self) -> u32 {
        match self {
            SpareSlots::Fixed(n) => *n,
            SpareSlots::Auto { auto } => auto.min,
        }
    }

    /// `auto`, compiled (`None` for a number, or if it does not compile: only when
    /// [`Config::validate`] was skipped).
    pub fn auto(&self) -> Option<crate::core::spare::arrivals::Auto> {
        match self {
            SpareSlots::Fixed(_) => None,
            SpareSlots::Auto { auto } => crate::core::spare::arrivals::Auto::compile(auto).ok(),
        }
    }
}

impl<'de> Deserialize<'de> for SpareSlots {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct AutoOnly {
            auto: crate::core::spare::arrivals::AutoSpec,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SpareSlots;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("u32 or {auto: {min, max, span, lookback}}")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SpareSlots, E> {
                u32::try_from(v)
                    .map(SpareSlots::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &"a u32"))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SpareSlots, E> {
                u64::try_from(v)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &"a u32"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SpareSlots, A::Error> {
                AutoOnly::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|a| SpareSlots::Auto { auto: a.auto })
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Prewarmer {
    /// The schedule, compiled. A validated configuration compiles whole; a window that does not
    /// (only if [`Config::validate`] was skipped) is left out.
    pub fn windows(&self) -> Vec<crate::core::spare::windows::Window> {
        self.schedule
            .iter()
            .filter_map(|w| crate::core::spare::windows::Window::compile(w).ok())
            .collect()
    }

    /// The windows' names, in the order configured (the labels of the window gauge).
    pub fn window_names(&self) -> Vec<&str> {
        self.schedule.iter().map(|w| w.name.as_str()).collect()
    }

    /// The spare slots in force at `now`: `spareSlots`, raised by the windows warm then.
    /// With `spareSlots: {auto: ...}`, `auto.min` stands for the arrival-sized value (no
    /// arrival is known offline).
    pub fn in_force(&self, now: jiff::Timestamp) -> crate::core::spare::windows::InForce {
        crate::core::spare::windows::in_force(
            self.spare_slots.without_arrivals(),
            &self.windows(),
            now,
        )
    }

    /// `scaleDown`, compiled (`None` without it, or if it does not compile: only when
    /// [`Config::validate`] was skipped).
    pub fn scale_down(&self) -> Option<crate::core::spare::scale_down::ScaleDown> {
        let spec = self.scale_down.as_ref()?;
        crate::core::spare::scale_down::ScaleDown::compile(spec, self.default_quiet()).ok()
    }

    /// How long after the last arrival nothing is scaled down when `scaleDown.quietFor` is not
    /// set: `spareSlots.auto.span`, else 15 minutes.
    pub fn default_quiet(&self) -> jiff::SignedDuration {
        self.spare_slots
            .auto()
            .map_or(jiff::SignedDuration::from_mins(15), |a| a.span)
    }
}

impl Default for Prewarmer {
    fn default() -> Self {
        Prewarmer {
            spare_slots: SpareSlots::Fixed(1),
            slot: Slot::Fixed(SlotResources::default()),
            slot_max: None,
            do_not_disrupt: false,
            image: "registry.k8s.io/pause:3.10".into(),
            schedule: Vec::new(),
            scale_down: None,
        }
    }
}

/// The room one placeholder reserves: fixed, or the largest tenant's requests observed live.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Slot {
    #[serde(serialize_with = "serialize_auto")]
    Auto,
    Fixed(SlotResources),
}

fn serialize_auto<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("auto")
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SlotVisitor;
        impl<'de> serde::de::Visitor<'de> for SlotVisitor {
            type Value = Slot;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#""auto" or {cpu: 640m, memory: 2150Mi}"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Slot, E> {
                if v == "auto" {
                    Ok(Slot::Auto)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Slot, A::Error> {
                SlotResources::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Slot::Fixed)
            }
        }
        d.deserialize_any(SlotVisitor)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlotResources {
    pub cpu: Quantity,
    pub memory: Quantity,
}

impl Default for SlotResources {
    fn default() -> Self {
        SlotResources {
            cpu: Quantity("640m".into()),
            memory: Quantity("2150Mi".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ImageCache {
    /// Add the images that tenant pods run to the configured list.
    pub discover: bool,
    /// Each tenant namespace nominates at most this many of its images (its most used).
    pub discover_per_namespace: u32,
    /// Discover only images from these registries (`ghcr.io`, or `host/path` prefixes such as
    /// `ghcr.io/acme`); empty: any registry.
    pub discover_registries: Vec<String>,
    pub max_images: u32,
    /// At most this many bytes of cached images per warm node (sizes as the nodes report them):
    /// past it, the largest discovered images are left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_node: Option<Quantity>,
    pub images: Vec<String>,
    /// Secrets (in warmpool's namespace) used to pull private images onto warm nodes.
    pub image_pull_secrets: Vec<String>,
    /// The image holding the static `warmpool` binary that the cache copies into every cached
    /// image, so that images with no shell (distroless, scratch) can be pulled and run.
    pub tool_image: String,
    /// The CPU architectures (`kubernetes.io/arch`, GOARCH names) the tool image is built for:
    /// the cache DaemonSet runs only on warm nodes of these.
    pub architectures: Vec<String>,
}

/// The `kubernetes.io/arch` values `imageCache.architectures` accepts: the GOARCH names of the
/// architectures Kubernetes ships node binaries or images for.
pub const KNOWN_ARCHITECTURES: &[&str] = &[
    "amd64", "arm64", "arm", "ppc64le", "s390x", "riscv64", "386", "loong64", "mips64le",
];

/// The image that `helm install` deploys; the chart sets `imageCache.toolImage` to it.
pub const DEFAULT_TOOL_IMAGE: &str =
    concat!("ghcr.io/warmpool/warmpool:", env!("CARGO_PKG_VERSION"));

impl Default for ImageCache {
    fn default() -> Self {
        let ecr = "771960604435.dkr.ecr.eu-west-1.amazonaws.com";
        ImageCache {
            discover: true,
            discover_per_namespace: 5,
            discover_registries: Vec::new(),
            max_images: 20,
            max_bytes_per_node: None,
            images: vec![
                format!("{ecr}/workshop-images/dataservice:v1.1"),
                format!("{ecr}/workshop-images/frontgateservice:v1"),
                format!("{ecr}/dockerhub-images/library/mysql:9"),
            ],
            image_pull_secrets: Vec::new(),
            tool_image: DEFAULT_TOOL_IMAGE.into(),
            // What the Dockerfile builds (`docker buildx build --platform linux/amd64,linux/arm64`).
            architectures: vec!["amd64".into(), "arm64".into()],
        }
    }
}

impl Config {
    /// Loads `path`, or the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Ok(Config::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_yaml(&text)
            }
        }
    }

    /// Parses and validates a YAML document. An empty document is the defaults.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = crate::kubectl::yaml::read_typed(text)
            .map_err(|e| ConfigError::invalid(e.path, e.message))?
            .unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: globs compile, quantities parse, names are names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tenants.time_to_ready.validate()?;
        if let Some((key, message)) = self.pricing.as_ref().and_then(|p| p.problem()) {
            return Err(ConfigError::invalid(format!("pricing.{key}"), message));
        }
        for (i, pattern) in self.tenants.namespace_patterns.iter().enumerate() {
            crate::core::tenant::compile_glob(pattern).map_err(|e| {
                ConfigError::invalid(format!("tenants.namespacePatterns[{i}]"), e.to_string())
            })?;
        }
        for (i, name) in self.tenants.exclude_namespaces.iter().enumerate() {
            if !is_namespace_name(name) {
                return Err(ConfigError::invalid(
                    format!("tenants.excludeNamespaces[{i}]"),
                    format!(
                        "`{name}` is not a namespace name (at most 63 of `a-z0-9-`, starting and \
                         ending alphanumeric)"
                    ),
                ));
            }
        }
        for (i, requirement) in self.tenants.namespace_match_expressions.iter().enumerate() {
            let at = format!("tenants.namespaceMatchExpressions[{i}]");
            if !is_label_key(&requirement.key)
                || requirement.key == crate::core::tenant::TENANT_LABEL
            {
                return Err(ConfigError::invalid(
                    format!("{at}.key"),
                    format!(
                        "`{}` is not a label key warmpool can select on (the tenant label is \
                         warmpool's own)",
                        requirement.key
                    ),
                ));
            }
            for value in requirement.values.iter().flatten() {
                if !is_label_value(value) {
                    return Err(ConfigError::invalid(
                        format!("{at}.values"),
                        format!("`{value}` is not a valid label value"),
                    ));
                }
            }
            crate::core::tenant::compile_requirement(requirement)
                .map_err(|message| ConfigError::invalid(at, message))?;
        }
        let label = &self.pool.node_label;
        if !is_label_key(&label.key) {
            return Err(ConfigError::invalid(
                "pool.nodeLabel.key",
                format!("`{}` is not a valid label key", label.key),
            ));
        }
        if !is_label_value(&label.value) {
            return Err(ConfigError::invalid(
                "pool.nodeLabel.value",
                format!("`{}` is not a valid label value", label.value),
            ));
        }
        for (i, t) in self.pool.tolerations.iter().enumerate() {
            let path = format!("pool.tolerations[{i}]");
            match t.operator {
                TolerationOperator::Exists if t.value.is_some() => {
                    return Err(ConfigError::invalid(
                        path + ".value",
                        "must be empty when operator is Exists",
                    ));
                }
                TolerationOperator::Equal if t.key.is_none() => {
                    return Err(ConfigError::invalid(
                        path + ".key",
                        "is required when operator is Equal",
                    ));
                }
                _ => {}
            }
            if t.toleration_seconds.is_some() && t.effect != Some(TaintEffect::NoExecute) {
                return Err(ConfigError::invalid(
                    path + ".tolerationSeconds",
                    "is only allowed with effect NoExecute",
                ));
            }
        }
        if let Slot::Fixed(slot) = &self.prewarmer.slot {
            check_quantity("prewarmer.slot.cpu", &slot.cpu)?;
            check_quantity("prewarmer.slot.memory", &slot.memory)?;
        }
        if let Some(max) = &self.prewarmer.slot_max {
            check_quantity("prewarmer.slotMax.cpu", &max.cpu)?;
            check_quantity("prewarmer.slotMax.memory", &max.memory)?;
        }
        if self.prewarmer.image.trim().is_empty() {
            return Err(ConfigError::invalid("prewarmer.image", "must not be empty"));
        }
        for (i, spec) in self.prewarmer.schedule.iter().enumerate() {
            let path = format!("prewarmer.schedule[{i}]");
            crate::core::spare::windows::Window::compile(spec)
                .map_err(|e| ConfigError::invalid(format!("{path}.{}", e.field), e.message))?;
            if let Some(first) = self.prewarmer.schedule[..i]
                .iter()
                .position(|w| w.name == spec.name)
            {
                return Err(ConfigError::invalid(
                    format!("{path}.name"),
                    format!(
                        "`{}` is already the name of prewarmer.schedule[{first}]: names must be \
                         unique (they show in the prewarmer's annotation and in metrics)",
                        spec.name
                    ),
                ));
            }
            if !is_label_value(&spec.name) {
                return Err(ConfigError::invalid(
                    format!("{path}.name"),
                    format!(
                        "`{}` is not a valid annotation and label value (at most 63 of \
                         `A-Za-z0-9_.-`, starting and ending alphanumeric)",
                        spec.name
                    ),
                ));
            }
        }
        if let SpareSlots::Auto { auto } = &self.prewarmer.spare_slots {
            crate::core::spare::arrivals::Auto::compile(auto).map_err(|e| {
                ConfigError::invalid(format!("prewarmer.spareSlots.auto.{}", e.field), e.message)
            })?;
        }
        if let Some(spec) = &self.prewarmer.scale_down {
            crate::core::spare::scale_down::ScaleDown::compile(
                spec,
                self.prewarmer.default_quiet(),
            )
            .map_err(|e| {
                ConfigError::invalid(format!("prewarmer.scaleDown.{}", e.field), e.message)
            })?;
        }
        if self.image_cache.max_images == 0 && !self.image_cache.images.is_empty() {
            return Err(ConfigError::invalid(
                "imageCache.maxImages",
                "is 0 but imageCache.images lists images: raise it or empty the list",
            ));
        }
        for (i, image) in self.image_cache.images.iter().enumerate() {
            // Parsed as the kubelet and containerd parse it (`nginx` is
            // docker.io/library/nginx:latest): what they cannot pull is refused here.
            let reason = if image.trim().is_empty() || image.contains(char::is_whitespace) {
                Some("it is empty or contains whitespace".to_owned())
            } else {
                crate::core::pool::images::normalize(image).err()
            };
            if let Some(reason) = reason {
                return Err(ConfigError::invalid(
                    format!("imageCache.images[{i}]"),
                    format!("`{image}` is not an image reference: {reason}"),
                ));
            }
        }
        for (i, registry) in self.image_cache.discover_registries.iter().enumerate() {
            let host = registry.split('/').next().unwrap_or_default();
            if registry.trim().is_empty()
                || registry.contains(char::is_whitespace)
                || registry.contains("://")
                || !host.contains(['.', ':']) && host != "localhost"
            {
                return Err(ConfigError::invalid(
                    format!("imageCache.discoverRegistries[{i}]"),
                    format!(
                        "`{registry}` is not a registry: write its host as images name it \
                         (`docker.io`, `ghcr.io`, `registry.local:5000`), optionally with a path \
                         prefix (`ghcr.io/acme`), without a scheme"
                    ),
                ));
            }
        }
        if let Some(bytes) = &self.image_cache.max_bytes_per_node {
            check_quantity("imageCache.maxBytesPerNode", bytes)?;
        }
        if self.image_cache.tool_image.trim().is_empty() {
            return Err(ConfigError::invalid(
                "imageCache.toolImage",
                "must not be empty",
            ));
        }
        if self.image_cache.architectures.is_empty() {
            return Err(ConfigError::invalid(
                "imageCache.architectures",
                "must list at least one architecture (those imageCache.toolImage is built for), \
                 or the image cache runs on no node",
            ));
        }
        for (i, arch) in self.image_cache.architectures.iter().enumerate() {
            if !KNOWN_ARCHITECTURES.contains(&arch.as_str()) {
                return Err(ConfigError::invalid(
                    format!("imageCache.architectures[{i}]"),
                    format!(
                        "`{arch}` is not a kubernetes.io/arch value: one of {}",
                        KNOWN_ARCHITECTURES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn check_quantity(path: &str, q: &Quantity) -> Result<(), ConfigError> {
    let parsed: ParsedQuantity = q.try_into().map_err(|_| {
        ConfigError::invalid(path, format!("`{}` is not a Kubernetes quantity", q.0))
    })?;
    if parsed.to_bytes_f64().unwrap_or(0.0) <= 0.0 {
        return Err(ConfigError::invalid(path, "must be greater than zero"));
    }
    Ok(())
}

/// `[prefix/]name`, as Kubernetes accepts label keys.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// A DNS-1123 label, as namespace names are.
fn is_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// At most 63 characters of `[A-Za-z0-9_.-]`, starting and ending alphanumeric (or empty).
fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn scalars_read_as_kubectl_reads_them_in_manifests() {
        // YAML 1.1 booleans, as `warmpool mutate` reads a manifest; a string stays as written.
        let c = Config::from_yaml(
            "imageCache: {discover: no}\nprewarmer: {doNotDisrupt: on}\n\
             pool: {nodeLabel: {key: team, value: yes}}\n",
        )
        .unwrap();
        assert!(!c.image_cache.discover);
        assert!(c.prewarmer.do_not_disrupt);
        assert_eq!(c.pool.node_label.value, "yes");
        // Anchors and merge keys, as in manifests.
        let c = Config::from_yaml(
            "prewarmer:\n  slot: &slot {cpu: 500m, memory: 1Gi}\n  slotMax: {<<: *slot, cpu: '2'}\n",
        )
        .unwrap();
        let max = c.prewarmer.slot_max.expect("slotMax");
        assert_eq!((max.cpu.0.as_str(), max.memory.0.as_str()), ("2", "1Gi"));
        let two = Config::from_yaml("tenants: {}\n---\npool: {}\n").unwrap_err();
        assert!(two.to_string().contains("2 YAML documents"), "{two}");
    }

    #[test]
    fn empty_document_is_the_cargocats_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.tenants.namespace_patterns, ["demo-*"]);
        assert_eq!(c.pool.node_label.key, "workload-type");
        assert_eq!(c.pool.affinity, AffinityMode::Required);
        assert_eq!(c.prewarmer.spare_slots, SpareSlots::Fixed(1));
        assert_eq!(
            c.prewarmer.slot,
            Slot::Fixed(SlotResources {
                cpu: Quantity("640m".into()),
                memory: Quantity("2150Mi".into())
            })
        );
        assert_eq!(c.image_cache.images.len(), 3);
        assert_eq!(c.image_cache.max_images, 20);
        assert_eq!(c.image_cache.architectures, ["amd64", "arm64"]);
    }

    #[test]
    fn the_design_example_parses_to_the_defaults() {
        let yaml = r#"
tenants:
  namespacePatterns: ["demo-*"]
pool:
  nodeLabel: {key: workload-type, value: cargocats}
  affinity: required
  tolerations:
    - {key: workload-type, operator: Equal, value: cargocats, effect: NoSchedule}
prewarmer:
  spareSlots: 1
  slot: {cpu: 640m, memory: 2150Mi}
  doNotDisrupt: false
  image: registry.k8s.io/pause:3.10
imageCache:
  discover: true
  maxImages: 20
  images:
    - 771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/dataservice:v1.1
    - 771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/frontgateservice:v1
    - 771960604435.dkr.ecr.eu-west-1.amazonaws.com/dockerhub-images/library/mysql:9
"#;
        assert_eq!(Config::from_yaml(yaml).unwrap(), Config::default());
    }

    #[test]
    fn partial_sections_keep_the_other_defaults() {
        let c = Config::from_yaml(
            "prewarmer: {spareSlots: 3, slot: auto}\npool: {affinity: preferred}",
        )
        .unwrap();
        assert_eq!(c.prewarmer.spare_slots, SpareSlots::Fixed(3));
        assert_eq!(c.prewarmer.slot, Slot::Auto);
        assert!(!c.prewarmer.do_not_disrupt, "0.2: off by default");
        assert_eq!(c.pool.affinity, AffinityMode::Preferred);
        assert_eq!(c.pool.tolerations, Pool::default().tolerations);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let e = err("prewarmer:\n  spareSlot: 2\n");
        assert!(e.contains("`prewarmer.spareSlot`"), "{e}");
        let e = err("imageCache: {images: [a], maxImage: 3}");
        assert!(e.contains("maxImage"), "{e}");
        let e = err("nope: 1");
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values_name_the_offending_path() {
        let e = err("pool: {affinity: sometimes}");
        assert!(e.contains("`pool.affinity`"), "{e}");
        let e = err("prewarmer: {slot: {cpu: lots, memory: 1Gi}}");
        assert!(
            e.contains("`prewarmer.slot.cpu`") && e.contains("lots"),
            "{e}"
        );
        let e = err("prewarmer: {slot: manual}");
        assert!(e.contains("`prewarmer.slot`") && e.contains("auto"), "{e}");
        let e = err("prewarmer: {slot: {cpu: '0', memory: 1Gi}}");
        assert!(
            e.contains("`prewarmer.slot.cpu`") && e.contains("greater than zero"),
            "{e}"
        );
        let e = err("prewarmer: {spareSlots: -1}");
        assert!(e.contains("`prewarmer.spareSlots`"), "{e}");
        let e = err("tenants: {namespacePatterns: ['demo-[']}");
        assert!(e.contains("`tenants.namespacePatterns[0]`"), "{e}");
        let e = err("pool: {tolerations: [{key: a, operator: Sometimes}]}");
        assert!(e.contains("`pool.tolerations[0].operator`"), "{e}");
        let e = err("pool: {tolerations: [{key: a, operator: Exists, value: b}]}");
        assert!(e.contains("`pool.tolerations[0].value`"), "{e}");
        let e = err("pool: {nodeLabel: {key: 'bad key', value: x}}");
        assert!(e.contains("`pool.nodeLabel.key`"), "{e}");
        let e = err("imageCache: {images: ['has space']}");
        assert!(e.contains("`imageCache.images[0]`"), "{e}");
        let e = err("imageCache: {images: [nginx, 'ghcr.io/Acme/web:1']}");
        assert!(
            e.contains("`imageCache.images[1]`")
                && e.contains("`ghcr.io/Acme/web:1` is not an image reference")
                && e.contains("lowercase"),
            "{e}"
        );
        let e = err("imageCache: {images: ['nginx@sha256:0123456789abcdef0123456789abcdef0']}");
        assert!(
            e.contains("`imageCache.images[0]`") && e.contains("digest"),
            "{e}"
        );
        let e = err("imageCache: {images: ['nginx:a/b']}");
        assert!(
            e.contains("`imageCache.images[0]`") && e.contains("invalid reference format"),
            "{e}"
        );
        let e = err("- a list");
        assert!(e.starts_with("invalid config"), "{e}");
    }

    #[test]
    fn image_references_are_accepted_in_every_spelling_docker_accepts() {
        let c = Config::from_yaml(
            "imageCache:\n  images:\n    - nginx\n    - nginx:latest\n    - bitnami/redis:7\n    - registry:5000/x/y:1\n    - gcr.io/distroless/static@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        // Kept as written in the configuration; the reconciler caches the canonical forms.
        assert_eq!(c.image_cache.images[0], "nginx");
        assert_eq!(c.image_cache.images.len(), 5);
    }

    #[test]
    fn architectures_are_known_goarch_names() {
        let c = Config::from_yaml("imageCache: {architectures: [arm64]}").unwrap();
        assert_eq!(c.image_cache.architectures, ["arm64"]);
        let c =
            Config::from_yaml("imageCache: {architectures: [amd64, arm, ppc64le, s390x, riscv64]}")
                .unwrap();
        assert_eq!(c.image_cache.architectures.len(), 5);
        let e = err("imageCache: {architectures: []}");
        assert!(
            e.contains("`imageCache.architectures`") && e.contains("at least one"),
            "{e}"
        );
        let e = err("imageCache: {architectures: [amd64, x86_64]}");
        assert!(
            e.contains("`imageCache.architectures[1]`")
                && e.contains("`x86_64` is not a kubernetes.io/arch value")
                && e.contains("amd64, arm64"),
            "{e}"
        );
        let e = err("imageCache: {architectures: amd64}");
        assert!(e.contains("`imageCache.architectures`"), "{e}");
    }

    #[test]
    fn label_syntax() {
        assert!(is_label_key("workload-type"));
        assert!(is_label_key("example.com/pool"));
        assert!(!is_label_key("/pool"));
        assert!(!is_label_key("Example.com/pool"));
        assert!(!is_label_key(""));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
        assert!(!is_label_value(&"x".repeat(64)));
    }

    #[test]
    fn tolerations_become_kubernetes_objects() {
        let t = Pool::default().tolerations[0].to_k8s();
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            serde_json::json!({"key": "workload-type", "operator": "Equal", "value": "cargocats", "effect": "NoSchedule"})
        );
    }

    const WORKSHOP: &str = include_str!("../../examples/workshop.yaml");

    /// The tests write configurations built as `Config` values: what is written back must read
    /// as the same configuration, every section set.
    #[test]
    fn a_configuration_written_back_reads_the_same() {
        let every_section = "tenants: {namespacePatterns: [demo-*, lab-?], excludeNamespaces: [demo-x], \
             namespaceMatchExpressions: [{key: team, operator: In, values: [a]}], repair: evict, \
             timeToReady: {enabled: true, window: 5m}}\n\
             prewarmer: {slot: auto, spareSlots: {auto: {min: 1, max: 10, span: 15m, lookback: 7d}}, \
             scaleDown: {step: 2, every: 5m, quietFor: 10m}, doNotDisrupt: true, \
             schedule: [{name: w, cron: '0 9 * * 1-5', timezone: Europe/Berlin, duration: 1h30m, \
             spareSlots: 3, leadTime: 15m}]}\n\
             imageCache: {discover: false, images: [r/a:1], maxImages: 7, discoverRegistries: [example.com]}\n";
        for yaml in [every_section, WORKSHOP, ""] {
            let config = Config::from_yaml(yaml).unwrap();
            let written = serde_saphyr::to_string(&config).unwrap();
            assert_eq!(Config::from_yaml(&written).unwrap(), config, "{written}");
        }
    }

    #[test]
    fn the_workshop_schedule_of_issue_14_parses_and_sets_the_slots_in_force() {
        let c = Config::from_yaml(WORKSHOP).unwrap();
        assert_eq!(c.prewarmer.schedule.len(), 1);
        assert_eq!(c.prewarmer.windows().len(), 1);
        // Monday 2026-11-30, 08:45 in Berlin (UTC+1): warm 15 minutes ahead.
        let f = c
            .prewarmer
            .in_force("2026-11-30T07:45:00Z".parse().unwrap());
        assert_eq!(
            (f.slots, f.window.as_deref()),
            (30, Some("workshop-mornings"))
        );
        let f = c
            .prewarmer
            .in_force("2026-11-30T13:00:00Z".parse().unwrap());
        assert_eq!((f.slots, f.window), (1, None));
        // Without a schedule: spareSlots, and nothing ever changes.
        let f = Config::default().prewarmer.in_force(jiff::Timestamp::now());
        assert_eq!((f.slots, f.window, f.next_change), (1, None, None));
    }

    #[test]
    fn time_to_ready_has_defaults_and_bad_durations_name_their_path() {
        let c = Config::default();
        assert_eq!(
            c.tenants.time_to_ready.window(),
            jiff::SignedDuration::from_mins(1)
        );
        assert_eq!(
            c.tenants.time_to_ready.timeout(),
            jiff::SignedDuration::from_mins(10)
        );
        assert_eq!(c.tenants.repair, Repair::None);
        let c =
            Config::from_yaml("tenants: {timeToReady: {window: 10s, timeout: 2m}, repair: evict}")
                .unwrap();
        assert_eq!(c.tenants.repair, Repair::Evict);
        assert!(err("tenants: {repair: delete}").contains("tenants.repair"));
        assert_eq!(
            c.tenants.time_to_ready.window(),
            jiff::SignedDuration::from_secs(10)
        );
        for (yaml, path) in [
            ("{window: soon}", "tenants.timeToReady.window"),
            ("{timeout: -1m}", "tenants.timeToReady.timeout"),
            ("{timeout: 2d}", "tenants.timeToReady.timeout"),
            ("{window: 5m, timeout: 2m}", "tenants.timeToReady.timeout"),
            ("{windo: 5m}", "tenants.timeToReady.windo"),
        ] {
            let e = err(&format!("tenants: {{timeToReady: {yaml}}}"));
            assert!(e.contains(path), "{yaml}: {e}");
        }
    }

    #[test]
    fn bad_windows_name_their_path_under_prewarmer_schedule() {
        let window = |fields: &str| {
            let slots = if fields.contains("spareSlots") {
                ""
            } else {
                ", spareSlots: 3"
            };
            err(&format!(
                "prewarmer: {{schedule: [{{name: a, cron: '0 9 * * *', duration: 1h, spareSlots: 2}}, \
                 {{{fields}{slots}}}]}}"
            ))
        };
        for (fields, path, says) in [
            (
                "name: b, cron: '0 9 * *', duration: 1h",
                "prewarmer.schedule[1].cron",
                "5-field",
            ),
            (
                "name: b, cron: '0 25 * * *', duration: 1h",
                "prewarmer.schedule[1].cron",
                "0 25",
            ),
            (
                "name: b, cron: '0 9 * * *', duration: 1h, timezone: Mars/Olympus",
                "prewarmer.schedule[1].timezone",
                "unknown time zone",
            ),
            (
                "name: b, cron: '0 9 * * *', duration: 0s",
                "prewarmer.schedule[1].duration",
                "longer than 0",
            ),
            (
                "name: b, cron: '0 9 * * *', duration: '-1h'",
                "prewarmer.schedule[1].duration",
                "negative",
            ),
            (
                "name: b, cron: '0 9 * * *', duration: 1h, leadTime: soon",
                "prewarmer.schedule[1].leadTime",
                "not a duration",
            ),
            (
                "name: a, cron: '0 10 * * *', duration: 1h",
                "prewarmer.schedule[1].name",
                "already the name of prewarmer.schedule[0]",
            ),
            (
                "name: 'two words', cron: '0 10 * * *', duration: 1h",
                "prewarmer.schedule[1].name",
                "not a valid annotation",
            ),
            (
                "name: b, cron: '0 9 * * *', duration: 1h, spareSlots: -2",
                "prewarmer.schedule[1].spareSlots",
                "invalid u32",
            ),
            (
                "name: b, cron: '0 9 * * *', duration: 1h, slots: 2",
                "prewarmer.schedule[1].slots",
                "unknown field",
            ),
        ] {
            let e = window(fields);
            assert!(
                e.contains(&format!("`{path}`")) && e.contains(says),
                "{fields}: {e}"
            );
        }
    }

    #[test]
    fn spare_slots_are_a_number_or_sized_from_arrivals_and_scale_down_is_opt_in() {
        let c = Config::from_yaml(
            "prewarmer:\n  spareSlots: {auto: {min: 2, max: 30, span: 10m, lookback: 3d}}\n  \
             scaleDown: {step: 2, every: 1m}\n",
        )
        .unwrap();
        let auto = c.prewarmer.spare_slots.auto().unwrap();
        assert_eq!((auto.min, auto.max), (2, 30));
        assert_eq!(auto.span, jiff::SignedDuration::from_mins(10));
        assert_eq!(c.prewarmer.spare_slots.without_arrivals(), 2);
        let down = c.prewarmer.scale_down().unwrap();
        assert_eq!(down.step, 2);
        assert_eq!(
            down.quiet_for,
            jiff::SignedDuration::from_mins(10),
            "the span"
        );
        let c = Config::from_yaml("prewarmer: {spareSlots: {auto: {}}}").unwrap();
        assert_eq!(
            c.prewarmer.spare_slots,
            SpareSlots::Auto {
                auto: crate::core::spare::arrivals::AutoSpec::default()
            }
        );
        assert!(c.prewarmer.scale_down().is_none(), "off by default");
        let c = Config::from_yaml("prewarmer: {scaleDown: {}}").unwrap();
        assert_eq!(
            c.prewarmer.scale_down().unwrap().quiet_for,
            jiff::SignedDuration::from_mins(15)
        );
        // The configuration the chart renders reads back the same.
        let c = Config::from_yaml(
            "prewarmer: {spareSlots: {auto: {max: 9}}, scaleDown: {quietFor: 2m}}",
        )
        .unwrap();
        let again = Config::from_yaml(
            &crate::kubectl::yaml::to_yaml(&serde_json::to_value(&c).unwrap()).unwrap(),
        )
        .unwrap();
        assert_eq!(again, c);
        for (yaml, path, says) in [
            (
                "prewarmer: {spareSlots: {auto: {min: 5, max: 2}}}",
                "prewarmer.spareSlots.auto.min",
                "more than max",
            ),
            (
                "prewarmer: {spareSlots: {auto: {span: soon}}}",
                "prewarmer.spareSlots.auto.span",
                "not a duration",
            ),
            (
                "prewarmer: {spareSlots: {auto: {lookback: 1m}}}",
                "prewarmer.spareSlots.auto.lookback",
                "shorter than span",
            ),
            (
                "prewarmer: {spareSlots: {auto: {mn: 1}}}",
                "prewarmer.spareSlots.auto.mn",
                "unknown field",
            ),
            (
                "prewarmer: {spareSlots: {manual: 1}}",
                "prewarmer.spareSlots.manual",
                "unknown field",
            ),
            (
                "prewarmer: {spareSlots: lots}",
                "prewarmer.spareSlots",
                "auto",
            ),
            (
                "prewarmer: {scaleDown: {step: 0}}",
                "prewarmer.scaleDown.step",
                "at least 1",
            ),
            (
                "prewarmer: {scaleDown: {every: 0s}}",
                "prewarmer.scaleDown.every",
                "longer than 0",
            ),
            (
                "prewarmer: {scaleDown: {quietFor: later}}",
                "prewarmer.scaleDown.quietFor",
                "not a duration",
            ),
        ] {
            let e = err(yaml);
            assert!(
                e.contains(&format!("`{path}`")) && e.contains(says),
                "{yaml}: {e}"
            );
        }
    }
}
