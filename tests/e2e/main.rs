//! warmpool end to end: the real binaries against the local control plane of
//! tests/cluster/cluster.sh (etcd, kube-apiserver, scheduler, controller manager), with fake
//! nodes, real nodes (kubelets and containerd, tests/cluster/node.sh) and the real Karpenter
//! (its KWOK provider) where a behaviour depends on them. One module per subject; the harness is
//! the `support` crate (tests/support).
//!
//! Subjects run one after another, the tests of one subject side by side: each test enters its
//! subject first ([`support::subject::enter`]), as when every subject was a test binary of its
//! own. Tests of a subject share the cluster by unique names; across subjects some install
//! cluster-wide objects (the chart's webhook configurations, NodePools, PriorityClasses) that
//! another subject's assertions would see.
//!
//! Without a control plane the tests print SKIP, except in CI (`CI=true`), where they fail.

mod arrivals;
mod dry_run;
mod faults;
mod in_cluster;
mod karpenter;
mod least_privilege;
mod observability;
mod real_nodes;
mod reconcile;
mod rollout;
mod scheduling;
mod selection;
mod spare_capacity;
mod status;
mod unsteered;
mod webhook;

const BIN: &str = env!("CARGO_BIN_EXE_warmpool");
