//! Which images the cache holds. Pure.
//!
//! Every reference is first put in its canonical form, the one the kubelet and containerd pull
//! and store: `nginx`, `nginx:latest` and `docker.io/library/nginx:latest` are one image
//! (`docker.io/library/nginx:latest`), so they take one slot, and a tenant pod asking for
//! `nginx` finds the cached image present. The grammar is the distribution library's, which
//! Docker and containerd use (`reference`).
//!
//! Tenants do not trust each other, so discovery is bounded and fair: only references the
//! grammar accepts, at most [`MAX_REFERENCE_BYTES`] long and [`MAX_IMAGES_PER_POD`] per pod, are
//! read (by [`crate::reconcile::watches::pods`], from containers that pulled them); each tenant namespace
//! nominates at most `imageCache.discoverPerNamespace` of its images (optionally only from
//! `imageCache.discoverRegistries`), and images are ranked by how many namespaces nominate them,
//! so that one tenant with many pods or many images cannot push out what the others run.
//!
//! The configured list comes first (it is what the operator asked for, in the order given);
//! discovered images fill the remaining room, the most widely used first; the result is capped at
//! `imageCache.maxImages`, then cut to `imageCache.maxBytesPerNode` (the largest discovered image
//! dropped first), and sorted, so that the same set always yields the same DaemonSet and an
//! unchanged set never rolls it. What was left out, and why, is counted ([`LeftOut`]).

mod reference;

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// `image` in its canonical form (`registry/repository[:tag][@digest]`, `docker.io` and
/// `library/` filled in for Docker Hub, `:latest` when there is neither tag nor digest), or why
/// it is not an image reference. Surrounding whitespace is ignored.
pub fn normalize(image: &str) -> Result<String, String> {
    let trimmed = image.trim();
    match reference::canonical(trimmed) {
        Ok(canonical) => Ok(canonical),
        Err(e) => {
            // The grammar reports an upper-case repository only as a bad format; say what it is.
            let lower = trimmed.to_ascii_lowercase();
            let reason = if lower != trimmed && reference::canonical(&lower).is_ok() {
                "repository name must be lowercase".to_owned()
            } else {
                e.to_string()
            };
            Err(reason)
        }
    }
}

/// [`normalize`]d, or trimmed and otherwise as given when it does not parse.
pub fn canonical(image: &str) -> String {
    normalize(image).unwrap_or_else(|_| image.trim().to_owned())
}

/// The longest reference discovery reads; longer ones are left out ([`LeftOut::Unusable`]).
/// Real references are far shorter (a repository name is at most 255 bytes, a tag 128, a
/// sha512 digest 135); the bound keeps what one tenant pod can make warmpool hold small.
pub const MAX_REFERENCE_BYTES: usize = 512;

/// The most distinct images discovery reads from one pod; the rest are left out.
pub const MAX_IMAGES_PER_POD: usize = 32;

/// `image` in canonical form if discovery may read it: not blank, at most
/// [`MAX_REFERENCE_BYTES`] and an image reference.
pub fn discoverable(image: &str) -> Option<String> {
    let trimmed = image.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_REFERENCE_BYTES {
        return None;
    }
    reference::canonical(trimmed).ok()
}

/// Why an image tenant pods run is not cached. The label of `warmpool_image_cache_left_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeftOut {
    /// Not an image reference, longer than [`MAX_REFERENCE_BYTES`], or past a pod's
    /// [`MAX_IMAGES_PER_POD`]th image (counted per reference, not per image).
    Unusable,
    /// Its registry is not in `imageCache.discoverRegistries`.
    Registry,
    /// Not among the `imageCache.discoverPerNamespace` most used images of any tenant namespace.
    PerNamespace,
    /// No room left under `imageCache.maxImages`.
    MaxImages,
    /// Would take the images on a warm node past `imageCache.maxBytesPerNode`.
    ByteBudget,
}

impl LeftOut {
    pub const ALL: [LeftOut; 5] = [
        LeftOut::Unusable,
        LeftOut::Registry,
        LeftOut::PerNamespace,
        LeftOut::MaxImages,
        LeftOut::ByteBudget,
    ];

    pub fn label(self) -> &'static str {
        match self {
            LeftOut::Unusable => "unusable",
            LeftOut::Registry => "registry",
            LeftOut::PerNamespace => "per-namespace",
            LeftOut::MaxImages => "max-images",
            LeftOut::ByteBudget => "byte-budget",
        }
    }

    /// What would let these images in, for a person reading `warmpool status`.
    pub fn remedy(self) -> &'static str {
        match self {
            LeftOut::Unusable => {
                "not pullable references, longer than 512 bytes, or past 32 images in one pod"
            }
            LeftOut::Registry => "not from imageCache.discoverRegistries",
            LeftOut::PerNamespace => "past imageCache.discoverPerNamespace in every namespace",
            LeftOut::MaxImages => "past imageCache.maxImages",
            LeftOut::ByteBudget => "past imageCache.maxBytesPerNode",
        }
    }

    /// Reads back the `warmpool.io/images-left-out` annotation (`max-images=3 byte-budget=1`);
    /// anything it does not recognise is skipped (another version may know more reasons).
    pub fn parse_counts(text: &str) -> Vec<(LeftOut, u32)> {
        text.split_whitespace()
            .filter_map(|pair| {
                let (reason, count) = pair.split_once('=')?;
                let reason = LeftOut::ALL.into_iter().find(|r| r.label() == reason)?;
                Some((reason, count.parse().ok()?))
            })
            .collect()
    }
}

/// What discovery may take: each namespace's `per_namespace` most used images, from the
/// `registries` listed (registry hosts, or `host/path` prefixes; empty: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub per_namespace: usize,
    pub registries: Vec<String>,
}

impl Discovery {
    /// Whether a canonical reference comes from an allowed registry: `ghcr.io/acme` allows
    /// `ghcr.io/acme/web:1` and `ghcr.io/acme/team/web:1`, never `ghcr.io/acme-evil/web:1`.
    pub fn allows(&self, image: &str) -> bool {
        self.registries.is_empty()
            || self.registries.iter().any(|r| {
                let prefix = r.trim_end_matches('/');
                image
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// One discovered image across the tenants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    /// Tenant namespaces that nominate it (it is among their most used).
    namespaces: u32,
    /// Tenant pods that run it.
    pods: u32,
    /// From an allowed registry.
    allowed: bool,
}

/// The images tenant pods run, namespace by namespace ([`ImageUsage::add_namespace`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUsage {
    images: HashMap<String, Usage>,
    /// References discovery refused to read ([`LeftOut::Unusable`]).
    unusable: u32,
}

impl ImageUsage {
    /// Adds one tenant namespace: `pods` are its pods' images (canonical, distinct per pod).
    /// It nominates its `discovery.per_namespace` most used allowed images (ties by name).
    pub fn add_namespace<'a>(
        &mut self,
        pods: impl IntoIterator<Item = &'a [String]>,
        discovery: &Discovery,
    ) {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for images in pods {
            for image in images {
                *counts.entry(image.as_str()).or_insert(0) += 1;
            }
        }
        let mut candidates: Vec<(&str, u32)> = Vec::with_capacity(counts.len());
        for (image, pods) in counts {
            let allowed = discovery.allows(image);
            let usage = self.images.entry(image.to_owned()).or_default();
            usage.pods = usage.pods.saturating_add(pods);
            usage.allowed = allowed;
            if allowed {
                candidates.push((image, pods));
            }
        }
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (image, _) in candidates.into_iter().take(discovery.per_namespace) {
            if let Some(usage) = self.images.get_mut(image) {
                usage.namespaces = usage.namespaces.saturating_add(1);
            }
        }
    }

    /// Counts references that discovery refused to read.
    pub fn add_unusable(&mut self, references: u32) {
        self.unusable = self.unusable.saturating_add(references);
    }

    /// Distinct images seen.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Nominated images, the most widely used first: by namespaces, then pods, then name (so
    /// that the order never depends on hashing).
    fn ranked(&self) -> Vec<&str> {
        let mut ranked: Vec<(&str, &Usage)> = self
            .images
            .iter()
            .filter(|(_, u)| u.namespaces > 0)
            .map(|(i, u)| (i.as_str(), u))
            .collect();
        ranked.sort_by(|a, b| {
            (b.1.namespaces, b.1.pods)
                .cmp(&(a.1.namespaces, a.1.pods))
                .then_with(|| a.0.cmp(b.0))
        });
        ranked.into_iter().map(|(i, _)| i).collect()
    }
}

/// How much the cache may hold.
#[derive(Clone, Copy)]
pub struct Limits<'a> {
    /// `imageCache.maxImages`.
    pub max_images: usize,
    /// `imageCache.maxBytesPerNode`, if set.
    pub bytes_per_node: Option<u64>,
    /// An image's size as the warm nodes report it (`status.images[].sizeBytes`), if known.
    pub size_of: &'a dyn Fn(&str) -> Option<u64>,
}

impl Limits<'_> {
    /// At most `max_images`, no byte budget.
    pub fn count(max_images: usize) -> Limits<'static> {
        Limits {
            max_images,
            bytes_per_node: None,
            size_of: &|_| None,
        }
    }
}

/// The images to cache and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Canonical references, sorted by name.
    pub images: Vec<String>,
    /// How many images (for [`LeftOut::Unusable`]: references) were left out, by reason.
    pub left_out: BTreeMap<LeftOut, u32>,
}

/// The images to cache, in canonical form: `configured` ∪ `discovered`, de-duplicated after
/// normalisation, at most `limits.max_images` of them (configured ones first, then the most
/// widely used discovered ones), then, past the byte budget, the largest discovered images of
/// known size dropped until it fits (configured images count, but are never dropped; the room a
/// dropped image frees is not refilled, so the choice does not swing as sizes become known).
pub fn select_images(
    configured: &[String],
    discovered: &ImageUsage,
    limits: Limits<'_>,
) -> Selection {
    let mut left_out: BTreeMap<LeftOut, u32> = BTreeMap::new();
    let mut leave_out = |reason: LeftOut, n: u32| {
        if n > 0 {
            let count = left_out.entry(reason).or_insert(0);
            *count = count.saturating_add(n);
        }
    };
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let mut from_discovery: Vec<String> = Vec::new();
    for image in configured.iter().filter(|i| !i.trim().is_empty()) {
        if chosen.len() >= limits.max_images {
            break;
        }
        chosen.insert(canonical(image));
    }
    for image in discovered.ranked() {
        if chosen.contains(image) {
            continue;
        }
        if chosen.len() >= limits.max_images {
            leave_out(LeftOut::MaxImages, 1);
            continue;
        }
        chosen.insert(image.to_owned());
        from_discovery.push(image.to_owned());
    }
    if let Some(budget) = limits.bytes_per_node {
        let size = |i: &str| (limits.size_of)(i).unwrap_or(0);
        let mut total: u64 = chosen.iter().map(|i| size(i)).fold(0, u64::saturating_add);
        // Largest last, ties by name: dropped from the end.
        from_discovery.sort_by(|a, b| size(a).cmp(&size(b)).then_with(|| b.cmp(a)));
        while total > budget {
            let Some(largest) = from_discovery.pop() else {
                break;
            };
            if size(&largest) == 0 {
                break;
            }
            total -= size(&largest);
            chosen.remove(&largest);
            leave_out(LeftOut::ByteBudget, 1);
        }
    }
    for (image, usage) in &discovered.images {
        if usage.namespaces == 0 && !chosen.contains(image) {
            let reason = if usage.allowed {
                LeftOut::PerNamespace
            } else {
                LeftOut::Registry
            };
            leave_out(reason, 1);
        }
    }
    leave_out(LeftOut::Unusable, discovered.unusable);
    Selection {
        images: chosen.into_iter().collect(),
        left_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each tenant namespace's pods, each pod's images (canonical, as discovery reads them).
    fn usage_with(namespaces: &[&[&[&str]]], discovery: &Discovery) -> ImageUsage {
        let mut u = ImageUsage::default();
        for pods in namespaces {
            let pods: Vec<Vec<String>> = pods
                .iter()
                .map(|p| p.iter().map(|i| canonical(i)).collect())
                .collect();
            u.add_namespace(pods.iter().map(Vec::as_slice), discovery);
        }
        u
    }

    fn any(per_namespace: usize) -> Discovery {
        Discovery {
            per_namespace,
            registries: Vec::new(),
        }
    }

    fn usage(namespaces: &[&[&[&str]]]) -> ImageUsage {
        usage_with(namespaces, &any(5))
    }

    fn select(configured: &[&str], discovered: &ImageUsage, max: usize) -> Vec<String> {
        select_images(&strings(configured), discovered, Limits::count(max)).images
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The canonical form of the official Docker Hub image `name` (`x:1`).
    fn hub(names: &[&str]) -> Vec<String> {
        names
            .iter()
            .map(|n| format!("docker.io/library/{n}"))
            .collect()
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_are_normalised_as_docker_and_containerd_do() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:latest", "docker.io/library/nginx:latest"),
            (
                "docker.io/library/nginx:latest",
                "docker.io/library/nginx:latest",
            ),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            (
                "index.docker.io/library/nginx:1.27",
                "docker.io/library/nginx:1.27",
            ),
            ("  nginx:1.27 ", "docker.io/library/nginx:1.27"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("registry:5000/x/y:1", "registry:5000/x/y:1"),
            ("localhost/team/app", "localhost/team/app:latest"),
            (
                "771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/dataservice:v1.1",
                "771960604435.dkr.ecr.eu-west-1.amazonaws.com/workshop-images/dataservice:v1.1",
            ),
            ("ghcr.io/acme/web:V1-rc", "ghcr.io/acme/web:V1-rc"),
        ];
        for (given, want) in cases {
            assert_eq!(normalize(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn a_digest_is_kept() {
        assert_eq!(
            normalize(&format!("nginx@{DIGEST}")),
            Ok(format!("docker.io/library/nginx@{DIGEST}"))
        );
        assert_eq!(
            normalize(&format!("gcr.io/distroless/static:nonroot@{DIGEST}")),
            Ok(format!("gcr.io/distroless/static:nonroot@{DIGEST}"))
        );
    }

    #[test]
    fn what_does_not_parse_is_reported_and_kept_as_given() {
        for bad in [
            "",
            "has space",
            "Nginx:1",
            "ghcr.io/Acme/web:1",
            ":1",
            "nginx@sha256:0123456789abcdef0123456789abcdef0123",
            "nginx:bad/tag",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            normalize("ghcr.io/Acme/web:1").unwrap_err(),
            "repository name must be lowercase"
        );
        assert_eq!(
            normalize("nginx@sha256:0123456789abcdef0123456789abcdef0123").unwrap_err(),
            "invalid checksum digest length"
        );
        assert_eq!(canonical(" Nginx:1 "), "Nginx:1");
        assert_eq!(discoverable(" Nginx:1 "), None);
    }

    #[test]
    fn discovery_reads_only_references_it_can_pull_and_bounds_their_length() {
        assert_eq!(
            discoverable(" nginx ").as_deref(),
            Some("docker.io/library/nginx:latest")
        );
        for refused in ["", "  ", "has space", "Nginx:1", "nginx:bad/tag"] {
            assert_eq!(discoverable(refused), None, "{refused:?}");
        }
        // Long but valid (a repository of 250 bytes and a tag of 128): 403 bytes, read.
        let long = format!("ghcr.io/{}:{}", "a".repeat(250), "t".repeat(128));
        assert!(long.len() <= MAX_REFERENCE_BYTES && discoverable(&long).is_some());
        // Past the bound, whatever it is: never parsed, never kept.
        let huge = format!("ghcr.io/{}:1", "a/".repeat(400));
        assert!(huge.len() > MAX_REFERENCE_BYTES);
        assert_eq!(discoverable(&huge), None);
        assert_eq!(discoverable(&"x".repeat(1 << 20)), None);
    }

    #[test]
    fn spellings_of_one_image_take_one_slot() {
        let discovered = usage(&[&[&["nginx:latest", "mysql:9"]], &[&["nginx"]]]);
        assert_eq!(discovered.len(), 2);
        assert_eq!(
            select(&["nginx", "docker.io/library/mysql:9"], &discovered, 20),
            hub(&["mysql:9", "nginx:latest"])
        );
        // The configured spellings alone, and room for two: both, once each.
        assert_eq!(
            select(
                &[
                    "nginx",
                    "nginx:latest",
                    "docker.io/library/nginx:latest",
                    "a:1"
                ],
                &ImageUsage::default(),
                2
            ),
            hub(&["a:1", "nginx:latest"])
        );
    }

    #[test]
    fn union_is_deduplicated_and_sorted() {
        let discovered = usage(&[&[&["nginx:1", "mysql:9"]], &[&["a/agent:2"]]]);
        assert_eq!(
            select(&["mysql:9", "b/dataservice:v1.1"], &discovered, 20),
            strings(&[
                "docker.io/a/agent:2",
                "docker.io/b/dataservice:v1.1",
                "docker.io/library/mysql:9",
                "docker.io/library/nginx:1",
            ])
        );
    }

    #[test]
    fn images_are_ranked_by_how_many_tenants_run_them_not_by_pod_count() {
        // Tenant `a` runs `noisy` in 50 pods; `shared` runs in one pod of each of three tenants.
        let fifty: Vec<&[&str]> = vec![&["noisy:1"]; 50];
        let discovered = usage(&[&fifty, &[&["shared:1"]], &[&["shared:1"]], &[&["shared:1"]]]);
        assert_eq!(select(&[], &discovered, 1), hub(&["shared:1"]));
        // Among images of as many tenants, the one in more pods first.
        let discovered = usage(&[&[&["x:1"], &["x:1"], &["y:1"]], &[&["y:1"], &["x:1"]]]);
        assert_eq!(select(&[], &discovered, 1), hub(&["x:1"]));
    }

    #[test]
    fn a_tenant_nominates_at_most_its_cap_of_its_most_used_images() {
        // Tenant `a` runs six images, `b` one: with a cap of two, `a` nominates its two most used
        // (ties by name) and `b`'s image is cached although `a`'s others have more pods.
        let a: &[&[&str]] = &[
            &["a1:1", "a2:1", "a3:1", "a4:1", "a5:1", "a6:1"],
            &["a3:1", "a4:1", "a5:1"],
            &["a3:1", "a4:1"],
        ];
        let discovered = usage_with(&[a, &[&["b:1"]]], &any(2));
        let picked = select_images(&[], &discovered, Limits::count(20));
        assert_eq!(picked.images, hub(&["a3:1", "a4:1", "b:1"]));
        assert_eq!(
            picked.left_out,
            BTreeMap::from([(LeftOut::PerNamespace, 4)])
        );
        // An image left out of one tenant's nomination is cached when another nominates it.
        let discovered = usage_with(&[a, &[&["a6:1"]]], &any(2));
        assert_eq!(
            select_images(&[], &discovered, Limits::count(20)).images,
            hub(&["a3:1", "a4:1", "a6:1"])
        );
        // A cap of 0: nothing is discovered.
        assert!(select(&[], &usage_with(&[a], &any(0)), 20).is_empty());
    }

    #[test]
    fn only_allowed_registries_are_discovered_and_a_prefix_ends_at_a_slash() {
        let discovery = Discovery {
            per_namespace: 1,
            registries: strings(&["ghcr.io/acme/", "registry.local:5000"]),
        };
        assert!(discovery.allows("ghcr.io/acme/web:1"));
        assert!(discovery.allows("ghcr.io/acme/team/web:1"));
        assert!(discovery.allows("registry.local:5000/x:1"));
        assert!(!discovery.allows("ghcr.io/acme-evil/web:1"));
        assert!(!discovery.allows("ghcr.io/acmeweb:1"));
        assert!(!discovery.allows("docker.io/library/nginx:1"));
        // The refused image does not use up the tenant's one nomination.
        let discovered = usage_with(
            &[&[&["nginx:1"], &["nginx:1"], &["ghcr.io/acme/web:1"]]],
            &discovery,
        );
        let picked = select_images(&[], &discovered, Limits::count(20));
        assert_eq!(picked.images, strings(&["ghcr.io/acme/web:1"]));
        assert_eq!(picked.left_out, BTreeMap::from([(LeftOut::Registry, 1)]));
        // Configured images are the operator's: the allow-list is for discovery only.
        assert_eq!(
            select_images(&strings(&["nginx:1"]), &discovered, Limits::count(20)).images,
            strings(&["docker.io/library/nginx:1", "ghcr.io/acme/web:1"])
        );
    }

    #[test]
    fn the_cap_keeps_configured_images_then_the_most_used() {
        let discovered = usage(&[
            &[&["rare:1", "common:1", "mid:1"]],
            &[&["common:1", "mid:1"]],
            &[&["common:1"]],
        ]);
        let picked = select_images(&strings(&["z-configured:1"]), &discovered, Limits::count(3));
        assert_eq!(picked.images, hub(&["common:1", "mid:1", "z-configured:1"]));
        assert_eq!(picked.left_out, BTreeMap::from([(LeftOut::MaxImages, 1)]));
        assert_eq!(
            select(&["z-configured:1"], &discovered, 1),
            hub(&["z-configured:1"])
        );
        assert!(select(&["z-configured:1"], &discovered, 0).is_empty());
        // More configured images than room: the first ones listed are kept.
        assert_eq!(
            select(&["c:1", "a:1", "b:1"], &ImageUsage::default(), 2),
            hub(&["a:1", "c:1"])
        );
    }

    #[test]
    fn past_the_byte_budget_the_largest_discovered_images_go_first() {
        let gib = 1u64 << 30;
        let sizes = |i: &str| match i {
            "docker.io/library/configured:1" => Some(3 * gib),
            "docker.io/library/big:1" => Some(5 * gib),
            "docker.io/library/mid:1" => Some(2 * gib),
            "docker.io/library/small:1" => Some(gib),
            _ => None,
        };
        let discovered = usage(&[
            &[&["big:1", "mid:1", "small:1", "unknown:1"]],
            &[&["big:1"]],
        ]);
        let limits = |budget: u64| Limits {
            max_images: 20,
            bytes_per_node: Some(budget),
            size_of: &sizes,
        };
        let configured = strings(&["configured:1"]);
        // 3 + 5 + 2 + 1 = 11 GiB known; the unknown image counts once a node reports its size.
        let all = select_images(&configured, &discovered, limits(11 * gib));
        assert_eq!(all.images.len(), 5);
        assert!(all.left_out.is_empty());
        // 6 GiB: `big` goes although it is the most used; 6 GiB then fit.
        let six = select_images(&configured, &discovered, limits(6 * gib));
        assert_eq!(
            six.images,
            hub(&["configured:1", "mid:1", "small:1", "unknown:1"])
        );
        assert_eq!(six.left_out, BTreeMap::from([(LeftOut::ByteBudget, 1)]));
        // Below the configured images alone: every discovered image of known size goes, the
        // configured one stays.
        let tiny = select_images(&configured, &discovered, limits(gib));
        assert_eq!(tiny.images, hub(&["configured:1", "unknown:1"]));
        assert_eq!(tiny.left_out, BTreeMap::from([(LeftOut::ByteBudget, 3)]));
    }

    #[test]
    fn unusable_references_are_counted() {
        let mut u = usage(&[&[&["a:1"]]]);
        u.add_unusable(3);
        u.add_unusable(u32::MAX);
        let picked = select_images(&[], &u, Limits::count(5));
        assert_eq!(picked.images, hub(&["a:1"]));
        assert_eq!(
            picked.left_out,
            BTreeMap::from([(LeftOut::Unusable, u32::MAX)])
        );
    }

    #[test]
    fn ties_are_broken_by_name_so_the_choice_is_stable() {
        let a = usage(&[&[&["b:1"]], &[&["a:1"]], &[&["c:1"]]]);
        let b = usage(&[&[&["c:1"]], &[&["b:1"]], &[&["a:1"]]]);
        assert_eq!(select(&[], &a, 2), hub(&["a:1", "b:1"]));
        assert_eq!(select(&[], &a, 2), select(&[], &b, 2));
    }

    #[test]
    fn the_same_set_in_any_order_gives_the_same_list() {
        let one = usage(&[&[&["x:1", "y:1"]], &[&["z:1"]]]);
        let two = usage(&[&[&["z:1"]], &[&["y:1", "x:1"]]]);
        let first = select(&["m:1", "k:1"], &one, 20);
        assert_eq!(first, select(&["m:1", "k:1"], &two, 20));
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(first, sorted);
    }

    #[test]
    fn blank_configured_entries_are_ignored() {
        let u = usage(&[&[&["a:1"]]]);
        assert_eq!(select(&[" "], &u, 5), hub(&["a:1"]));
    }
}
