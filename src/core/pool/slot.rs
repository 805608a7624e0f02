//! How much room one tenant takes: a pod's requests counted as the scheduler counts them, summed
//! per namespace, and `prewarmer.slot: auto` as the largest tenant — cut down to fit on one warm
//! node, and moved only when it changes by more than [`HYSTERESIS_PERCENT`]. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube_quantity::ParsedQuantity;

use crate::config::SlotResources;

/// CPU and memory requests in integer units (millicores, bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requests {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Requests {
    pub const ZERO: Requests = Requests {
        cpu_millis: 0,
        memory_bytes: 0,
    };

    /// Reads `cpu` and `memory` from a resource list; anything else (GPUs, ephemeral storage) is
    /// not part of a slot, and an unparsable quantity counts as zero (the API server has already
    /// validated what it stored).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Requests {
        let Some(list) = list else {
            return Requests::ZERO;
        };
        Requests {
            cpu_millis: list.get("cpu").and_then(cpu_millis).unwrap_or(0),
            memory_bytes: list.get("memory").and_then(memory_bytes).unwrap_or(0),
        }
    }

    pub fn saturating_add(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    /// The larger of each resource on its own.
    pub fn max(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }

    /// The smaller of each resource on its own.
    pub fn min(self, other: Requests) -> Requests {
        Requests {
            cpu_millis: self.cpu_millis.min(other.cpu_millis),
            memory_bytes: self.memory_bytes.min(other.memory_bytes),
        }
    }

    /// As a slot: CPU in millicores, memory rounded up to whole MiB (so that byte-level noise in
    /// tenants' requests does not roll the prewarmer).
    pub fn to_slot(self) -> SlotResources {
        const MIB: u64 = 1024 * 1024;
        SlotResources {
            cpu: Quantity(format!("{}m", self.cpu_millis)),
            memory: Quantity(format!("{}Mi", self.memory_bytes.div_ceil(MIB))),
        }
    }
}

/// A quantity in millicores, rounded up as the API server rounds CPU requests.
pub fn cpu_millis(q: &Quantity) -> Option<u64> {
    let value = ParsedQuantity::try_from(q).ok()?.to_bytes_f64()?;
    non_negative_ceil(value * 1000.0)
}

/// A quantity in bytes, rounded up.
pub fn memory_bytes(q: &Quantity) -> Option<u64> {
    let value = ParsedQuantity::try_from(q).ok()?.to_bytes_f64()?;
    non_negative_ceil(value)
}

fn non_negative_ceil(value: f64) -> Option<u64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    // Binary floating point turns 0.3 cores into 300.00000000000006 millicores: shave that off
    // before rounding up. `as` saturates, it cannot panic.
    Some((value - 1e-6).ceil().max(0.0) as u64)
}

/// One container as far as requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerRequests {
    pub requests: Requests,
    /// An init container with `restartPolicy: Always` (a sidecar): it keeps running next to the
    /// app containers.
    pub sidecar: bool,
}

/// The requests the scheduler reserves for a pod (`k8s.io/component-helpers/resource`
/// `PodRequests`): the app containers' sum (plus sidecars), or the largest init container (plus
/// the sidecars started before it) if that is more, resource by resource; pod-level requests
/// replace the containers' aggregate where set; the RuntimeClass overhead comes on top.
pub fn pod_requests(
    containers: &[Requests],
    init_containers: &[ContainerRequests],
    pod_level: Option<Requests>,
    overhead: Requests,
) -> Requests {
    let mut running = containers
        .iter()
        .fold(Requests::ZERO, |sum, c| sum.saturating_add(*c));
    let mut sidecars = Requests::ZERO;
    let mut init_peak = Requests::ZERO;
    for init in init_containers {
        let during_this_init = if init.sidecar {
            running = running.saturating_add(init.requests);
            sidecars = sidecars.saturating_add(init.requests);
            sidecars
        } else {
            init.requests.saturating_add(sidecars)
        };
        init_peak = init_peak.max(during_this_init);
    }
    let mut total = running.max(init_peak);
    if let Some(pod) = pod_level {
        // Pod-level resources (PodLevelResources) win for each resource they set.
        if pod.cpu_millis > 0 {
            total.cpu_millis = pod.cpu_millis;
        }
        if pod.memory_bytes > 0 {
            total.memory_bytes = pod.memory_bytes;
        }
    }
    total.saturating_add(overhead)
}

/// `prewarmer.slot: auto`: the largest tenant's summed pod requests, each resource on its own
/// (the slot must fit any one tenant, whichever of CPU or memory it is hungriest for). A resource
/// that no tenant requests falls back to `fallback`, and so does everything while no tenant pod
/// is observed.
pub fn auto_slot(per_tenant: impl IntoIterator<Item = Requests>, fallback: &Requests) -> Requests {
    let largest = per_tenant
        .into_iter()
        .fold(Requests::ZERO, |largest, t| largest.max(t));
    Requests {
        cpu_millis: if largest.cpu_millis == 0 {
            fallback.cpu_millis
        } else {
            largest.cpu_millis
        },
        memory_bytes: if largest.memory_bytes == 0 {
            fallback.memory_bytes
        } else {
            largest.memory_bytes
        },
    }
}

/// How far (in per cent of the current value) the auto slot's target must move, resource by
/// resource, before the slot follows: a tenant's HPA step or a roll-out's surge does not resize
/// (and re-roll) the placeholders.
pub const HYSTERESIS_PERCENT: u64 = 10;

const MIB: u64 = 1024 * 1024;

/// The slot after one observation, from the slot so far (`None` at start) and the target.
pub fn with_hysteresis(current: Option<Requests>, target: Requests) -> Requests {
    let Some(current) = current else {
        return target;
    };
    let settle = |current: u64, target: u64| {
        let moved = u128::from(current.abs_diff(target)) * 100;
        if current == 0 || moved > u128::from(current) * u128::from(HYSTERESIS_PERCENT) {
            target
        } else {
            current
        }
    };
    Requests {
        cpu_millis: settle(current.cpu_millis, target.cpu_millis),
        memory_bytes: settle(current.memory_bytes, target.memory_bytes),
    }
}

/// `slot` cut down so that one placeholder fits on one warm node: for each node the slot capped
/// by its allocatable (memory in whole MiB, as slots are written), and of those the one that
/// keeps the largest share of the slot (the smaller of its CPU and memory shares; ties to the
/// larger node). Also returns that node's allocatable. No node known: unchanged, `None`.
pub fn fit_on_a_node(
    slot: Requests,
    nodes: impl IntoIterator<Item = Requests>,
) -> (Requests, Option<Requests>) {
    // share(a) >= share(b) compares min(a.cpu/s.cpu, a.mem/s.mem) without division.
    let share = |capped: Requests| -> (u128, u128) {
        let cpu = (
            u128::from(capped.cpu_millis),
            u128::from(slot.cpu_millis.max(1)),
        );
        let mem = (
            u128::from(capped.memory_bytes),
            u128::from(slot.memory_bytes.max(1)),
        );
        if cpu.0 * mem.1 <= mem.0 * cpu.1 {
            cpu
        } else {
            mem
        }
    };
    let mut best: Option<(Requests, Requests)> = None;
    for node in nodes {
        let node = Requests {
            cpu_millis: node.cpu_millis,
            memory_bytes: node.memory_bytes / MIB * MIB,
        };
        let capped = slot.min(node);
        let better = match best {
            None => true,
            Some((kept, kept_node)) => {
                let (a, b) = (share(capped), share(kept));
                let (lhs, rhs) = (a.0 * b.1, b.0 * a.1);
                lhs > rhs || (lhs == rhs && node > kept_node)
            }
        };
        if better {
            best = Some((capped, node));
        }
    }
    match best {
        Some((capped, node)) => (capped, Some(node)),
        None => (slot, None),
    }
}

/// One step of `prewarmer.slot: auto`: the largest tenant (`target`) fitted on a warm node, with
/// hysteresis against the slot so far — but never larger than the node it was fitted to. True
/// when the node cut the target down.
pub fn auto_slot_step(
    current: Option<Requests>,
    target: Requests,
    nodes: impl IntoIterator<Item = Requests>,
) -> (Requests, bool) {
    let (fit, node) = fit_on_a_node(target, nodes);
    let mut next = with_hysteresis(current, fit);
    if let Some(node) = node {
        next = next.min(node);
    }
    (next, fit != target)
}

/// A fixed slot from the configuration, in integer units.
pub fn slot_requests(slot: &SlotResources) -> Requests {
    Requests {
        cpu_millis: cpu_millis(&slot.cpu).unwrap_or(0),
        memory_bytes: memory_bytes(&slot.memory).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: u64 = 1024 * 1024;

    fn r(cpu_millis: u64, memory_mi: u64) -> Requests {
        Requests {
            cpu_millis,
            memory_bytes: memory_mi * MI,
        }
    }

    fn init(requests: Requests) -> ContainerRequests {
        ContainerRequests {
            requests,
            sidecar: false,
        }
    }

    fn sidecar(requests: Requests) -> ContainerRequests {
        ContainerRequests {
            requests,
            sidecar: true,
        }
    }

    #[test]
    fn quantities_become_integer_units() {
        let q = |s: &str| Quantity(s.into());
        assert_eq!(cpu_millis(&q("640m")), Some(640));
        assert_eq!(cpu_millis(&q("1")), Some(1000));
        assert_eq!(cpu_millis(&q("0.3")), Some(300));
        assert_eq!(cpu_millis(&q("1.5")), Some(1500));
        assert_eq!(
            cpu_millis(&q("100u")),
            Some(1),
            "rounded up like the API server"
        );
        assert_eq!(memory_bytes(&q("2150Mi")), Some(2150 * MI));
        assert_eq!(memory_bytes(&q("1G")), Some(1_000_000_000));
        assert_eq!(memory_bytes(&q("128974848")), Some(128_974_848));
        assert_eq!(cpu_millis(&q("lots")), None);
        let list: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), q("250m")),
            ("memory".to_string(), q("64Mi")),
            ("nvidia.com/gpu".to_string(), q("1")),
        ]
        .into();
        assert_eq!(Requests::from_list(Some(&list)), r(250, 64));
        assert_eq!(Requests::from_list(None), Requests::ZERO);
    }

    #[test]
    fn app_containers_are_summed() {
        assert_eq!(
            pod_requests(&[r(100, 100), r(200, 50)], &[], None, Requests::ZERO),
            r(300, 150)
        );
    }

    #[test]
    fn the_largest_init_container_wins_when_it_is_bigger_resource_by_resource() {
        // max(max(init), sum(containers)) per resource: CPU from the init container, memory from
        // the app containers.
        assert_eq!(
            pod_requests(
                &[r(100, 300), r(100, 300)],
                &[init(r(500, 100)), init(r(50, 50))],
                None,
                Requests::ZERO
            ),
            r(500, 600)
        );
    }

    #[test]
    fn sidecars_count_with_the_app_and_under_later_init_containers() {
        // A sidecar (restartPolicy: Always) runs next to the app containers and next to every
        // init container that starts after it.
        let got = pod_requests(
            &[r(100, 100)],
            &[init(r(300, 10)), sidecar(r(50, 20)), init(r(400, 10))],
            None,
            Requests::ZERO,
        );
        // running: 100+50 = 150m / 120Mi; init peak: max(300, 50, 400+50) = 450m, memory max(10, 20, 30) = 30
        assert_eq!(got, r(450, 120));
    }

    #[test]
    fn pod_level_requests_and_overhead() {
        let got = pod_requests(
            &[r(100, 100)],
            &[],
            Some(Requests {
                cpu_millis: 1000,
                memory_bytes: 0,
            }),
            r(10, 5),
        );
        assert_eq!(got, r(1010, 105));
    }

    #[test]
    fn auto_slot_is_the_largest_tenant_per_resource_with_a_fallback() {
        let fallback = r(640, 2150);
        assert_eq!(auto_slot([], &fallback), fallback);
        assert_eq!(
            auto_slot([r(700, 1000), r(300, 3000)], &fallback),
            r(700, 3000)
        );
        assert_eq!(auto_slot([r(200, 0)], &fallback), r(200, 2150));
    }

    #[test]
    fn slots_are_written_in_millicores_and_whole_mebibytes() {
        let slot = Requests {
            cpu_millis: 640,
            memory_bytes: 2150 * MI + 1,
        }
        .to_slot();
        assert_eq!(slot.cpu, Quantity("640m".into()));
        assert_eq!(slot.memory, Quantity("2151Mi".into()));
        assert_eq!(
            slot_requests(&SlotResources::default()),
            r(640, 2150),
            "the default slot round-trips"
        );
    }

    #[test]
    fn the_auto_slot_moves_only_past_the_hysteresis() {
        let current = r(1000, 1000);
        assert_eq!(
            with_hysteresis(None, r(1000, 1000)),
            r(1000, 1000),
            "at start"
        );
        // 10 % or less, either way: kept.
        assert_eq!(with_hysteresis(Some(current), r(1100, 900)), current);
        assert_eq!(with_hysteresis(Some(current), r(1050, 1000)), current);
        // More: followed, resource by resource.
        assert_eq!(with_hysteresis(Some(current), r(1101, 1000)), r(1101, 1000));
        assert_eq!(with_hysteresis(Some(current), r(1000, 899)), r(1000, 899));
        assert_eq!(with_hysteresis(Some(current), r(1200, 950)), r(1200, 1000));
        assert_eq!(with_hysteresis(Some(r(0, 0)), r(5, 5)), r(5, 5));
        // An HPA stepping a tenant up by 50m at a time moves the slot every third step or so,
        // not at every one.
        let mut slot = None;
        let mut changes = 0;
        for step in 0..20u64 {
            let target = r(1000 + 50 * step, 1000);
            let next = with_hysteresis(slot, target);
            if slot.is_some() && Some(next) != slot {
                changes += 1;
            }
            slot = Some(next);
        }
        // 1000 → 1150 → 1300 → 1450 → 1600 → 1800 over 20 steps.
        assert_eq!(changes, 5);
    }

    #[test]
    fn the_auto_slot_fits_on_the_largest_warm_node() {
        let slot = r(6000, 24 * 1024);
        assert_eq!(
            fit_on_a_node(slot, []),
            (slot, None),
            "no node known: no cap"
        );
        // A node larger than the slot: unchanged.
        let big = r(16000, 64 * 1024);
        assert_eq!(fit_on_a_node(slot, [r(2000, 8192), big]), (slot, Some(big)));
        // Only smaller nodes: cut down to the one that keeps the most of the slot.
        let c5 = r(7910, 14 * 1024); // 2xlarge-ish: all the CPU, 58 % of the memory
        let r5 = r(3920, 30 * 1024); // 65 % of the CPU, all the memory
        assert_eq!(
            fit_on_a_node(slot, [c5, r5]),
            (r(3920, 24 * 1024), Some(r5))
        );
        // Allocatable memory is used in whole MiB, since slots are written in MiB.
        let odd = Requests {
            cpu_millis: 1930,
            memory_bytes: 7 * 1024 * MI + 123_456,
        };
        let (fit, node) = fit_on_a_node(slot, [odd]);
        assert_eq!(fit, r(1930, 7 * 1024));
        assert_eq!(fit.to_slot().memory, Quantity("7168Mi".into()));
        assert_eq!(node, Some(r(1930, 7 * 1024)));
    }

    #[test]
    fn a_step_caps_first_then_holds_but_never_past_the_node() {
        let node = r(4000, 16 * 1024);
        // The largest tenant grows past the node: capped, and says so.
        assert_eq!(
            auto_slot_step(Some(r(3000, 8192)), r(9000, 8192), [node]),
            (r(4000, 8192), true)
        );
        // Within the hysteresis of the capped value: held.
        assert_eq!(
            auto_slot_step(Some(r(3800, 8192)), r(9000, 8192), [node]),
            (r(3800, 8192), true)
        );
        // The node shrinks a little (the pool was replaced by a smaller type): the slot follows
        // at once though the change is under the hysteresis, or it would not fit.
        let smaller = r(3900, 16 * 1024);
        assert_eq!(
            auto_slot_step(Some(r(4000, 8192)), r(9000, 8192), [smaller]),
            (r(3900, 8192), true)
        );
        // A tenant shrinking a little below a node that has room: held, not capped.
        assert_eq!(
            auto_slot_step(Some(r(2000, 8192)), r(1900, 8000), [node]),
            (r(2000, 8192), false)
        );
        // No warm node yet: the target, with hysteresis.
        assert_eq!(
            auto_slot_step(Some(r(2000, 8192)), r(2100, 8192), []),
            (r(2000, 8192), false)
        );
    }
}
