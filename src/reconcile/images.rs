//! Which images the cache DaemonSet holds. Pure.
//!
//! Every reference is first put in its canonical form, the one the kubelet and containerd pull
//! and store: `nginx`, `nginx:latest` and `docker.io/library/nginx:latest` are one image
//! (`docker.io/library/nginx:latest`), so they take one slot, and a tenant pod asking for
//! `nginx` finds the cached image present. The grammar is the distribution library's, which
//! Docker and containerd use ([`reference`]); a reference it cannot parse is kept as given (the
//! kubelet will report it; configured ones are rejected by `Config::validate`).
//!
//! The configured list comes first (it is what the operator asked for, in the order given);
//! discovered images fill the remaining room, most used first; the result is capped at
//! `imageCache.maxImages` and then sorted, so that the same set always yields the same DaemonSet
//! and an unchanged set never rolls it.

mod reference;

use std::collections::{BTreeSet, HashMap};

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

/// How many tenant pods run each discovered image, by canonical reference (a pod that lists an
/// image twice, in any spelling, counts once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUsage(HashMap<String, u32>);

impl ImageUsage {
    /// Counts one pod's images (its containers' and init containers').
    pub fn add_pod<'a>(&mut self, images: impl IntoIterator<Item = &'a str>) {
        let distinct: BTreeSet<String> = images
            .into_iter()
            .filter(|i| !i.trim().is_empty())
            .map(canonical)
            .collect();
        for image in distinct {
            *self.0.entry(image).or_insert(0) += 1;
        }
    }

    /// Counts one pod's images, already canonical and distinct ([`super::observed::PodSummary`]).
    pub fn add_canonical(&mut self, images: &[String]) {
        for image in images {
            match self.0.get_mut(image) {
                Some(n) => *n += 1,
                None => {
                    self.0.insert(image.clone(), 1);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Most used first; equal counts by name, so that the order never depends on hashing.
    fn ranked(&self) -> Vec<(&str, u32)> {
        let mut ranked: Vec<(&str, u32)> = self.0.iter().map(|(i, n)| (i.as_str(), *n)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        ranked
    }
}

/// The images to cache, in canonical form: `configured` ∪ `discovered`, de-duplicated after
/// normalisation, at most `max` of them (configured ones first, then the most used discovered
/// ones), sorted by name.
pub fn select_images(configured: &[String], discovered: &ImageUsage, max: usize) -> Vec<String> {
    let mut chosen: BTreeSet<String> = BTreeSet::new();
    let candidates = configured
        .iter()
        .filter(|i| !i.trim().is_empty())
        .map(|i| canonical(i))
        .chain(discovered.ranked().into_iter().map(|(i, _)| i.to_owned()));
    for image in candidates {
        if chosen.len() >= max {
            break;
        }
        chosen.insert(image);
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(pods: &[&[&str]]) -> ImageUsage {
        let mut u = ImageUsage::default();
        for pod in pods {
            u.add_pod(pod.iter().copied());
        }
        u
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
        let u = usage(&[&["Nginx:1"], &["Nginx:1"]]);
        assert_eq!(select_images(&[], &u, 5), strings(&["Nginx:1"]));
    }

    #[test]
    fn spellings_of_one_image_take_one_slot() {
        let configured = strings(&["nginx", "docker.io/library/mysql:9"]);
        let discovered = usage(&[
            &["nginx:latest", "mysql:9"],
            &["docker.io/library/nginx:latest"],
            &["index.docker.io/library/nginx"],
        ]);
        assert_eq!(discovered.len(), 2);
        assert_eq!(
            select_images(&configured, &discovered, 20),
            hub(&["mysql:9", "nginx:latest"])
        );
        // The configured spellings alone, and room for two: both, once each.
        let twice = strings(&[
            "nginx",
            "nginx:latest",
            "docker.io/library/nginx:latest",
            "a:1",
        ]);
        assert_eq!(
            select_images(&twice, &ImageUsage::default(), 2),
            hub(&["a:1", "nginx:latest"])
        );
    }

    #[test]
    fn a_pod_naming_one_image_twice_counts_once_whatever_the_spelling() {
        let u = usage(&[&["x:1", "docker.io/library/x:1"], &["y:1"], &["y"]]);
        // x:1 is used by one pod, y:1 and y:latest by one each: ties by name.
        assert_eq!(select_images(&[], &u, 1), hub(&["x:1"]));
        let u = usage(&[&["x:1", "docker.io/library/x:1"], &["y"], &["y:latest"]]);
        assert_eq!(select_images(&[], &u, 1), hub(&["y:latest"]));
    }

    #[test]
    fn union_is_deduplicated_and_sorted() {
        let configured = strings(&["mysql:9", "b/dataservice:v1.1"]);
        let discovered = usage(&[&["nginx:1", "mysql:9"], &["a/agent:2"]]);
        assert_eq!(
            select_images(&configured, &discovered, 20),
            strings(&[
                "docker.io/a/agent:2",
                "docker.io/b/dataservice:v1.1",
                "docker.io/library/mysql:9",
                "docker.io/library/nginx:1",
            ])
        );
    }

    #[test]
    fn a_pod_counts_once_per_image() {
        let u = usage(&[&["x:1", "x:1", " x:1 "], &["y:1"], &["y:1"]]);
        // y is used by two pods, x by one: with room for one, y wins.
        assert_eq!(select_images(&[], &u, 1), hub(&["y:1"]));
    }

    #[test]
    fn the_cap_keeps_configured_images_then_the_most_used() {
        let configured = strings(&["z-configured:1"]);
        let discovered = usage(&[
            &["rare:1", "common:1", "mid:1"],
            &["common:1", "mid:1"],
            &["common:1"],
        ]);
        assert_eq!(
            select_images(&configured, &discovered, 3),
            hub(&["common:1", "mid:1", "z-configured:1"])
        );
        assert_eq!(
            select_images(&configured, &discovered, 1),
            hub(&["z-configured:1"])
        );
        assert!(select_images(&configured, &discovered, 0).is_empty());
        // More configured images than room: the first ones listed are kept.
        assert_eq!(
            select_images(&strings(&["c:1", "a:1", "b:1"]), &ImageUsage::default(), 2),
            hub(&["a:1", "c:1"])
        );
    }

    #[test]
    fn ties_are_broken_by_name_so_the_choice_is_stable() {
        let a = usage(&[&["b:1"], &["a:1"], &["c:1"]]);
        let b = usage(&[&["c:1"], &["b:1"], &["a:1"]]);
        assert_eq!(select_images(&[], &a, 2), hub(&["a:1", "b:1"]));
        assert_eq!(select_images(&[], &a, 2), select_images(&[], &b, 2));
    }

    #[test]
    fn the_same_set_in_any_order_gives_the_same_list() {
        let configured = strings(&["m:1", "k:1"]);
        let one = usage(&[&["x:1", "y:1"], &["z:1"]]);
        let two = usage(&[&["z:1"], &["y:1", "x:1"]]);
        let first = select_images(&configured, &one, 20);
        assert_eq!(first, select_images(&configured, &two, 20));
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(first, sorted);
    }

    #[test]
    fn blank_entries_are_ignored() {
        let u = usage(&[&["", "  ", "a:1"]]);
        assert_eq!(u.len(), 1);
        assert_eq!(select_images(&strings(&[" "]), &u, 5), hub(&["a:1"]));
    }
}
