//! Which images the cache DaemonSet holds. Pure.
//!
//! The configured list comes first (it is what the operator asked for, in the order given);
//! discovered images fill the remaining room, most used first; the result is capped at
//! `imageCache.maxImages` and then sorted, so that the same set always yields the same DaemonSet
//! and an unchanged set never rolls it.

use std::collections::{BTreeSet, HashMap};

/// How many tenant pods run each discovered image (a pod that lists an image twice counts once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUsage(HashMap<String, u32>);

impl ImageUsage {
    /// Counts one pod's images (its containers' and init containers').
    pub fn add_pod<'a>(&mut self, images: impl IntoIterator<Item = &'a str>) {
        let distinct: BTreeSet<&str> = images
            .into_iter()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        for image in distinct {
            match self.0.get_mut(image) {
                Some(n) => *n = n.saturating_add(1),
                None => {
                    self.0.insert(image.to_owned(), 1);
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

/// The images to cache: `configured` ∪ `discovered`, de-duplicated, at most `max` of them
/// (configured ones first, then the most used discovered ones), sorted by name.
pub fn select_images(configured: &[String], discovered: &ImageUsage, max: usize) -> Vec<String> {
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    let candidates = configured
        .iter()
        .map(|i| i.trim())
        .filter(|i| !i.is_empty())
        .chain(discovered.ranked().into_iter().map(|(i, _)| i));
    for image in candidates {
        if chosen.len() >= max {
            break;
        }
        chosen.insert(image);
    }
    chosen.into_iter().map(str::to_owned).collect()
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

    #[test]
    fn union_is_deduplicated_and_sorted() {
        let configured = strings(&["mysql:9", "b/dataservice:v1.1"]);
        let discovered = usage(&[&["nginx:1", "mysql:9"], &["a/agent:2"]]);
        assert_eq!(
            select_images(&configured, &discovered, 20),
            strings(&["a/agent:2", "b/dataservice:v1.1", "mysql:9", "nginx:1"])
        );
    }

    #[test]
    fn a_pod_counts_once_per_image() {
        let u = usage(&[&["x:1", "x:1", " x:1 "], &["y:1"], &["y:1"]]);
        // y is used by two pods, x by one: with room for one, y wins.
        assert_eq!(select_images(&[], &u, 1), strings(&["y:1"]));
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
            strings(&["common:1", "mid:1", "z-configured:1"])
        );
        assert_eq!(
            select_images(&configured, &discovered, 1),
            strings(&["z-configured:1"])
        );
        assert!(select_images(&configured, &discovered, 0).is_empty());
        // More configured images than room: the first ones listed are kept.
        assert_eq!(
            select_images(&strings(&["c:1", "a:1", "b:1"]), &ImageUsage::default(), 2),
            strings(&["a:1", "c:1"])
        );
    }

    #[test]
    fn ties_are_broken_by_name_so_the_choice_is_stable() {
        let a = usage(&[&["b:1"], &["a:1"], &["c:1"]]);
        let b = usage(&[&["c:1"], &["b:1"], &["a:1"]]);
        assert_eq!(select_images(&[], &a, 2), strings(&["a:1", "b:1"]));
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
        assert_eq!(select_images(&strings(&[" "]), &u, 5), strings(&["a:1"]));
    }
}
