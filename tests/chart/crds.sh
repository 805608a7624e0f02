#!/usr/bin/env bash
# Prints (one per line, on stdout) the paths of the upstream CustomResourceDefinitions that the
# chart's optional kinds need, taken from the projects' own Go modules on the Go module proxy
# (downloaded once into the Go module cache; a second run downloads nothing):
#
#   karpenter.sh/v1 NodePool               github.com/aws/karpenter-provider-aws  pkg/apis/crds/
#   karpenter.k8s.aws/v1 EC2NodeClass      (the provider's copy of the NodePool CRD carries the
#                                           AWS label restrictions, so it is the one used)
#   cert-manager.io/v1 Issuer, Certificate github.com/cert-manager/cert-manager   deploy/crds/
#   monitoring.coreos.com/v1 ServiceMonitor, PrometheusRule
#                                          github.com/prometheus-operator/prometheus-operator
#                                                                   example/prometheus-operator-crd/
#
# EKS Auto Mode's NodeClass (eks.amazonaws.com) has no public module, and the chart never renders
# one (it only refers to the built-in `default` NodeClass by name), so none is needed.
#
# Usage: tests/chart/crds.sh | xargs -n1 kubectl apply --server-side -f
set -euo pipefail

# Newest releases whose go.mod the Go toolchain here accepts (later patch releases require a newer
# Go than the machine's 1.26.8). Karpenter 1.14 serves karpenter.sh/v1 only.
KARPENTER_AWS=github.com/aws/karpenter-provider-aws@v1.14.0
CERT_MANAGER=github.com/cert-manager/cert-manager@v1.21.2
# The newest release the Go module proxy serves (`go list -m -versions
# github.com/prometheus-operator/prometheus-operator`).
PROMETHEUS_OPERATOR=github.com/prometheus-operator/prometheus-operator@v0.85.0

log() { printf 'crds.sh: %s\n' "$*" >&2; }
die() { printf 'crds.sh: error: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "the 'go' command is needed to fetch the CRDs from the Go module proxy"

# module_dir MODULE@VERSION → the module's directory in the Go module cache.
module_dir() {
    local json dir
    json=$(cd "${TMPDIR:-/tmp}" && env GOWORK=off GOFLAGS=-mod=mod go mod download -json "$1" 2>&1) \
        || die "go mod download $1 failed: $json"
    dir=$(sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' <<<"$json")
    [[ -d $dir ]] || die "go mod download $1 gave no directory: $json"
    echo "$dir"
}

log "resolving $KARPENTER_AWS, $CERT_MANAGER and $PROMETHEUS_OPERATOR (Go module cache)"
karpenter=$(module_dir "$KARPENTER_AWS")
certmanager=$(module_dir "$CERT_MANAGER")
promoperator=$(module_dir "$PROMETHEUS_OPERATOR")

for f in \
    "$karpenter/pkg/apis/crds/karpenter.sh_nodepools.yaml" \
    "$karpenter/pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml" \
    "$certmanager/deploy/crds/cert-manager.io_issuers.yaml" \
    "$certmanager/deploy/crds/cert-manager.io_certificates.yaml" \
    "$promoperator/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" \
    "$promoperator/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"; do
    [[ -f $f ]] || die "$f is missing from the module (a newer release moved it?)"
    echo "$f"
done
