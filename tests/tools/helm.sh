#!/usr/bin/env bash
# Installs the pinned Helm 3 from its official Go module (helm.sh/helm/v3) with `go install`,
# once, into ~/.cache/warmpool/helm-<version>/, and prints the path of the `helm` binary as the
# LAST stdout line. A second run builds nothing.
#
#   HELM=$(tests/tools/helm.sh)
#
# Progress goes to stderr; on failure it exits non-zero with a one-line reason.
# Environment overrides: WARMPOOL_CACHE (cache root, default ~/.cache/warmpool).
set -euo pipefail

# Latest v3 on the Go module proxy when pinned (`go list -m -versions helm.sh/helm/v3`).
HELM_VERSION=v3.22.0

CACHE_ROOT=${WARMPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warmpool}
DIR=$CACHE_ROOT/helm-$HELM_VERSION
HELM=$DIR/helm

log() { printf 'helm.sh: %s\n' "$*" >&2; }
die() { printf 'helm.sh: error: %s\n' "$*" >&2; exit 1; }
# GOWORK/GOFLAGS of the caller must not leak into the build.
go_env() { (cd "$DIR" && env GOWORK=off GOFLAGS=-buildvcs=false "$@"); }

install_helm() {
    [[ -x $HELM ]] && return 0
    command -v go >/dev/null || die "the 'go' command is needed to install Helm $HELM_VERSION (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION)"
    local tmp start=$SECONDS json gomod client_go major minor ldflags p
    tmp=$(mktemp -d "$DIR/.gobin.XXXXXX")
    log "installing Helm $HELM_VERSION with go install (first time, a few minutes)…"
    # Stamp in what Helm's own Makefile stamps: its version, and the Kubernetes version that
    # `helm template`/`helm lint` assume without a cluster (client-go v0.N → 1.N). Without the
    # latter a `go install`ed Helm assumes Kubernetes 1.20.
    json=$(go_env go mod download -json "helm.sh/helm/v3@$HELM_VERSION") \
        || die "go mod download helm.sh/helm/v3@$HELM_VERSION failed (is the Go module proxy reachable?)"
    gomod=$(sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' <<<"$json")
    client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod" 2>/dev/null || true)
    [[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "cannot read the k8s.io/client-go version from the go.mod of helm.sh/helm/v3@$HELM_VERSION ($gomod)"
    major=1 minor=${BASH_REMATCH[1]}
    ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        ldflags+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
    done
    if ! go_env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2; then
        rm -rf "$tmp"
        die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed (is the Go module proxy reachable?)"
    fi
    [[ -x $tmp/helm ]] || { rm -rf "$tmp"; die "go install finished but produced no helm binary"; }
    # Rename into place: an interrupted install never leaves a half-written $HELM.
    mv -f "$tmp/helm" "$HELM"
    rm -rf "$tmp"
    log "installed $("$HELM" version --short 2>/dev/null || echo "$HELM_VERSION") in $((SECONDS - start))s"
}

mkdir -p "$DIR"
# Serialise concurrent callers (cargo runs tests in parallel threads).
exec 9>"$DIR/.lock"
flock 9
install_helm
flock -u 9
"$HELM" version --short >/dev/null 2>&1 || die "$HELM does not run; remove $DIR and retry"
echo "$HELM"
