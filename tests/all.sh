#!/usr/bin/env bash
# Every test of warmpool, on a fresh machine or a warm one: builds what is missing (the local
# Kubernetes control plane from the Go module proxy, Helm, promtool, Karpenter and KWOK), starts
# the control plane and Karpenter beside it,
# runs the lint gates, the unit, integration and end-to-end tests, and stops the control plane again.
# In CI (CI=true) a missing prerequisite is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
started=$SECONDS

step "toolchain: $(cargo --version), $(go version 2>/dev/null || echo 'go: missing')"

step "Debian packages the real nodes, the registry and the lints need (apt-get, once)"
tests/cluster/cluster.sh node prerequisites

step "local control plane (first run builds Kubernetes from the Go module proxy: several minutes)"
kubeconfig=$(tests/cluster/cluster.sh up)
trap 'tests/cluster/cluster.sh down >/dev/null 2>&1 || true' EXIT
export WARMPOOL_TEST_KUBECONFIG="$kubeconfig"

if [ -x tests/tools/helm.sh ]; then
  step "helm (built from its Go module once, then cached)"
  WARMPOOL_TEST_HELM=$(tests/tools/helm.sh)
  export WARMPOOL_TEST_HELM
fi

if [ -x tests/tools/promtool.sh ]; then
  step "promtool (built from its Go module once, then cached; checks the chart's alerts)"
  WARMPOOL_TEST_PROMTOOL=$(tests/tools/promtool.sh)
  export WARMPOOL_TEST_PROMTOOL
fi

step "Karpenter and KWOK beside the control plane (built from the Go module proxy once, then cached)"
tests/cluster/cluster.sh karpenter up >/dev/null

step "formatting, lints, every shell script, the API docs' links and the pure core"
mapfile -t scripts < <(git ls-files '*.sh')
shellcheck --external-sources --severity=info "${scripts[@]}" .ci/run
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --locked
tests/tools/layers.sh

step "docs: links resolve and the marked commands run"
cargo build --locked --bin warmpool
tests/tools/docs-check.sh

step "unit, integration and end-to-end tests"
cargo test --all-targets --locked

step "all tests passed in $((SECONDS - started)) s"
