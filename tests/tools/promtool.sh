#!/usr/bin/env bash
# Installs the pinned promtool (Prometheus' rule and config checker) from its official Go module
# (github.com/prometheus/prometheus/cmd/promtool) with `go install`, once, into
# ~/.cache/warmpool/promtool-<version>/, and prints the path of the `promtool` binary as the LAST
# stdout line. A second run builds nothing. The chart tests run `promtool check rules` on the
# PrometheusRule the chart renders.
#
#   PROMTOOL=$(tests/tools/promtool.sh)
#
# Progress goes to stderr; on failure it exits non-zero with a one-line reason.
# Environment overrides: WARMPOOL_CACHE (cache root, default ~/.cache/warmpool).
set -euo pipefail

# The Prometheus module's tags are v0.3MM.P for Prometheus 3.MM.P (v0.316.0 is 3.16.0): the
# latest release on the Go module proxy when pinned (`go list -m -versions
# github.com/prometheus/prometheus`).
PROMTOOL_MODULE_VERSION=v0.316.0
PROMETHEUS_VERSION=3.16.0

CACHE_ROOT=${WARMPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warmpool}
DIR=$CACHE_ROOT/promtool-$PROMTOOL_MODULE_VERSION
PROMTOOL=$DIR/promtool
PKG=github.com/prometheus/prometheus/cmd/promtool

log() { printf 'promtool.sh: %s\n' "$*" >&2; }
die() { printf 'promtool.sh: error: %s\n' "$*" >&2; exit 1; }
# GOWORK/GOFLAGS of the caller must not leak into the build.
go_env() { (cd "$DIR" && env GOWORK=off GOFLAGS=-buildvcs=false "$@"); }

install_promtool() {
    [[ -x $PROMTOOL ]] && return 0
    command -v go >/dev/null || die "the 'go' command is needed to install promtool $PROMETHEUS_VERSION (go install $PKG@$PROMTOOL_MODULE_VERSION)"
    local tmp start=$SECONDS ldflags
    tmp=$(mktemp -d "$DIR/.gobin.XXXXXX")
    log "installing promtool $PROMETHEUS_VERSION ($PKG@$PROMTOOL_MODULE_VERSION) with go install (first time, several minutes)…"
    # What Prometheus' own build stamps, so `promtool --version` names the release.
    ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
    ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
    if ! go_env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
        "$PKG@$PROMTOOL_MODULE_VERSION" >&2; then
        rm -rf "$tmp"
        die "go install $PKG@$PROMTOOL_MODULE_VERSION failed (is the Go module proxy reachable?)"
    fi
    [[ -x $tmp/promtool ]] || { rm -rf "$tmp"; die "go install finished but produced no promtool binary"; }
    # Rename into place: an interrupted install never leaves a half-written $PROMTOOL.
    mv -f "$tmp/promtool" "$PROMTOOL"
    rm -rf "$tmp"
    log "installed promtool $PROMETHEUS_VERSION in $((SECONDS - start))s"
}

mkdir -p "$DIR"
# Serialise concurrent callers (cargo runs tests in parallel threads).
exec 9>"$DIR/.lock"
flock 9
install_promtool
flock -u 9
"$PROMTOOL" --version >/dev/null 2>&1 || die "$PROMTOOL does not run; remove $DIR and retry"
echo "$PROMTOOL"
