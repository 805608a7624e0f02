#!/usr/bin/env bash
# The real Karpenter beside the local control plane: Karpenter core with its own KWOK cloud
# provider (`sigs.k8s.io/karpenter/kwok`), and KWOK faking the kubelets of the Nodes it launches.
# Both run as local processes against `cluster.sh up`'s API server. Everything warmpool depends
# on is provider-independent core (batching, bin-packing, registration, taint and label sync,
# drift, do-not-disrupt, budgets, consolidation); the cloud (instance boot) is what is emulated.
#
# Karpenter's main is built with a provider of ours around the KWOK one
# (tests/cluster/karpenter-local): a NodePool whose KWOKNodeClass is labelled
# warmpool.io/real-nodes=true gets REAL nodes (a kubelet and a containerd each, node.sh, as root:
# they pull images and run probes); every other NodeClaim goes to the KWOK provider unchanged.
#
#   tests/cluster/cluster.sh karpenter build     build once (cached outside the repo)
#   tests/cluster/cluster.sh karpenter up [--boot-delay DURATION] [--max-nodes N]
#                                               build if needed, apply Karpenter's CRDs, start
#                                               both, apply the KWOKNodeClasses `warmpool-kwok`
#                                               (KWOK nodes) and `warmpool-real` (real nodes, at
#                                               most N at once, default 3), whose
#                                               nodeRegistrationDelay is the emulated instance boot
#                                               (default 0s); wait until ready; the LAST stdout
#                                               line is the KWOK class's name
#   tests/cluster/cluster.sh karpenter down      remove Karpenter's nodes, stop both (idempotent;
#                                               `cluster.sh down` does it too)
#   tests/cluster/cluster.sh karpenter status    exit 0 if both run
#   tests/cluster/cluster.sh karpenter crds-dir  print the cached CRD folder
#
# Instance types: the AWS catalogue of Karpenter's kwok examples (`aws_instance_types.json`:
# m5.large, m6i.xlarge, ... with on-demand and spot offerings in four zones; its Linux entries),
# so that the chart's NodePool requirements (instance types, capacity type, arch) work unchanged;
# real nodes are of the one type `local-half` (what is left of this machine for one node).
# Run-time state: pids and logs beside the control plane's, in <cluster dir>/{pids,logs}/.
#
# Environment overrides (all optional): WARMPOOL_CACHE, WARMPOOL_CLUSTER_DIR (as cluster.sh),
# WARMPOOL_KARPENTER_LOG_LEVEL (default info).
set -euo pipefail
PROG=karpenter.sh
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- pinned versions ------------------------------------------------------------------------
# v1.14.1: the newest release whose `go` line (1.26.6) the machines' Go 1.26.8 accepts; v1.14.3
# and v1.15.0 ask for 1.26.10 / 1.26.9 and `go get` refuses them. karpenter.sh/v1 APIs, as the
# chart renders.
KARPENTER_VERSION=v1.14.1
# The KWOK release whose stages Karpenter's own kwok tests load.
KWOK_VERSION=v0.8.0

VERSION_DIR=$CACHE_ROOT/karpenter-$KARPENTER_VERSION-kwok-$KWOK_VERSION
BIN_DIR=$VERSION_DIR/bin
DATA_DIR=$VERSION_DIR/data
NODE_CLASS=warmpool-kwok

kubectl_bin() { "$SCRIPT_DIR/cluster.sh" kubectl-path; }
kubectl_admin() { "$(kubectl_bin)" --kubeconfig "$CLUSTER_DIR/admin.kubeconfig" --request-timeout=10s "$@"; }
go_env() { env GOWORK=off GOFLAGS=-buildvcs=false "$@"; }

# Not buildable is a failure in CI and a loud skip (exit 3) elsewhere, as for real nodes.
cannot_build() {
    if [[ ${CI:-} == true ]]; then
        die "Karpenter is required in CI (CI=true) but cannot be built: $*"
    fi
    printf '%s\n' "$PROG: SKIP: Karpenter cannot be built here: $*" >&2
    exit 3
}

# =============================================================================================
# build
# =============================================================================================

built() { [[ -x $BIN_DIR/kwok && -s $DATA_DIR/stages.yaml ]] && local_built; }

# The real-node provider's sources, and the stamp of the ones its binary was built from.
LOCAL_SRC=$SCRIPT_DIR/karpenter-local
local_sources_sum() { cat "$LOCAL_SRC"/*.go | sha256sum | cut -c1-16; }
local_built() {
    [[ -x $BIN_DIR/karpenter && $(cat "$BIN_DIR/.karpenter.sum" 2>/dev/null) == "$(local_sources_sum)" ]]
}

# Karpenter's main with the real-node provider around its KWOK one (tests/cluster/karpenter-local),
# rebuilt when those sources change; the module graph is Karpenter's own (its go.mod decides
# every version).
build_karpenter() {
    local_built && return 0
    local src=$VERSION_DIR/src/karpenter start=$SECONDS sum
    sum=$(local_sources_sum)
    rm -rf "$src"
    mkdir -p "$src" "$BIN_DIR"
    cp "$LOCAL_SRC"/*.go "$src/"
    printf 'module warmpool.local/karpenter-local\n\ngo 1.26.6\n\nrequire sigs.k8s.io/karpenter %s\n' "$KARPENTER_VERSION" >"$src/go.mod"
    log "building Karpenter $KARPENTER_VERSION (KWOK provider + real nodes, tests/cluster/karpenter-local; first time: a few minutes on 2 cores)…"
    (cd "$src" && go_env go mod tidy) || cannot_build "go mod tidy failed for tests/cluster/karpenter-local"
    local tmp=$BIN_DIR/.karpenter.tmp.$$
    if ! (cd "$src" && go_env go build -trimpath -ldflags=-s -o "$tmp" .); then
        rm -f "$tmp"
        cannot_build "go build of tests/cluster/karpenter-local failed"
    fi
    mv -f "$tmp" "$BIN_DIR/karpenter"
    echo "$sum" >"$BIN_DIR/.karpenter.sum"
    log "built karpenter in $((SECONDS - start))s"
}

# module_dir MODULE@VERSION — where the Go module cache holds it (downloading it if needed).
module_dir() {
    local dir
    dir=$(cd "$VERSION_DIR" && go_env go mod download -json "$1" |
        sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
    [[ -d $dir ]] || cannot_build "go mod download $1 gave no module folder"
    echo "$dir"
}

# build_one NAME MODULE VERSION PACKAGE — a wrapper module per binary (their dependency graphs
# differ), built into a temp name and renamed, so an interrupted build is never taken as done.
build_one() {
    local name=$1 module=$2 version=$3 pkg=$4 src=$VERSION_DIR/src/$1 start=$SECONDS
    [[ -x $BIN_DIR/$name ]] && return 0
    mkdir -p "$src" "$BIN_DIR"
    printf 'module warmpool.local/%s-build\n\ngo 1.26.6\n\nrequire %s %s\n' "$name" "$module" "$version" >"$src/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$src/tools.go"
    log "resolving $module@$version on the Go module proxy"
    (cd "$src" && go_env go mod tidy) || cannot_build "go mod tidy failed for $module@$version"
    log "building $name $version (first time: a few minutes on 2 cores)…"
    local tmp=$BIN_DIR/.$name.tmp.$$
    if ! (cd "$src" && go_env go build -trimpath -ldflags=-s -o "$tmp" "$pkg"); then
        rm -f "$tmp"
        cannot_build "go build $pkg failed"
    fi
    mv -f "$tmp" "$BIN_DIR/$name"
    log "built $name in $((SECONDS - start))s"
}

# The CRDs, the instance types and KWOK's stages, copied out of the module cache so that `up`
# needs no `go` command once built.
copy_data() {
    local karpenter kwok
    karpenter=$(module_dir "sigs.k8s.io/karpenter@$KARPENTER_VERSION")
    kwok=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
    rm -rf "$DATA_DIR.tmp"
    mkdir -p "$DATA_DIR.tmp/crds"
    cp "$karpenter"/pkg/apis/crds/*.yaml "$karpenter"/kwok/apis/crds/*.yaml "$DATA_DIR.tmp/crds/"
    # Two translations, as Karpenter's AWS provider makes them: EC2's architecture names to
    # Kubernetes' (x86_64 is amd64; i386 has no node image), and Linux instances only (on AWS the
    # node class's AMI decides the OS; the catalogue lists each type for Windows too, at the same
    # price, which Karpenter would otherwise launch for a pod that names no OS).
    python3 - "$karpenter/kwok/examples/aws_instance_types.json" "$DATA_DIR.tmp/instance-types.json" <<'PY' ||
import json, sys
arch = {"x86_64": "amd64", "arm64": "arm64"}
types = []
for t in json.load(open(sys.argv[1])):
    if "linux" in t.get("operatingSystems", []) and t.get("architecture") in arch:
        t["architecture"] = arch[t["architecture"]]
        t["operatingSystems"] = ["linux"]
        types.append(t)
json.dump(types, open(sys.argv[2], "w"))
PY
        cannot_build "cannot filter Karpenter's instance types (python3 needed)"
    # What kwokctl loads by default: nodes Ready at once with a lease heartbeat, pods Running and
    # Ready at once, deleted pods removed. KWOK refuses to start without a stage.
    local f first=1
    for f in "$kwok"/kustomize/stage/node/fast/node-*.yaml \
        "$kwok"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
        "$kwok"/kustomize/stage/pod/fast/pod-*.yaml; do
        ((first)) || echo '---'
        first=0
        cat "$f"
    done >"$DATA_DIR.tmp/stages.yaml"
    chmod -R u+w "$DATA_DIR.tmp"
    rm -rf "$DATA_DIR"
    mv "$DATA_DIR.tmp" "$DATA_DIR"
}

do_build() {
    built && return 0
    command -v go >/dev/null || cannot_build "the 'go' command is missing"
    local start=$SECONDS
    mkdir -p "$VERSION_DIR"
    log "building Karpenter $KARPENTER_VERSION (kwok provider) and KWOK $KWOK_VERSION into $BIN_DIR"
    build_karpenter
    build_one kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
    copy_data
    built || die "build finished but $BIN_DIR or $DATA_DIR is incomplete"
    log "build done in $((SECONDS - start))s"
}

cmd_build() { with_lock "$VERSION_DIR.lock" do_build; }

# =============================================================================================
# up / down
# =============================================================================================

PIDS=$CLUSTER_DIR/pids
LOGS=$CLUSTER_DIR/logs

running() {
    pid_of "$PIDS/karpenter.pid" "karpenter*" >/dev/null && pid_of "$PIDS/kwok.pid" kwok >/dev/null
}

karpenter_ready() {
    # shellcheck disable=SC1091
    source "$CLUSTER_DIR/karpenter.env"
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$KARPENTER_HEALTH_PORT/readyz") == 200 ]] &&
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz") == 200 ]]
}

# wait_until WHAT SECONDS CHECK...
# Both processes exist. Not `running`: start_daemon writes the pid of the shell that then execs
# (through `env`, for Karpenter) into the program, so right after a start the name check can see
# bash or env and take a live Karpenter for a dead one.
started() {
    local f pid
    for f in "$PIDS/karpenter.pid" "$PIDS/kwok.pid"; do
        pid=$(cat "$f" 2>/dev/null) || return 1
        [[ $pid =~ ^[0-9]+$ && -d /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    done
}

wait_until() {
    local what=$1 deadline=$((SECONDS + $2)); shift 2
    until "$@"; do
        if ! started; then
            tail -n 30 "$LOGS/karpenter.log" "$LOGS/kwok.log" >&2 2>/dev/null || true
            die "Karpenter or KWOK exited while waiting for $what (logs: $LOGS/karpenter.log, kwok.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$LOGS/karpenter.log" "$LOGS/kwok.log" >&2 2>/dev/null || true
            die "timed out waiting for $what (logs: $LOGS/karpenter.log, kwok.log)"
        fi
        sleep 0.3
    done
}

apply_node_class() {
    kubectl_admin apply --server-side --force-conflicts --field-manager=warmpool-tests -f - >/dev/null <<EOF
apiVersion: karpenter.kwok.sh/v1alpha1
kind: KWOKNodeClass
metadata:
  name: $NODE_CLASS
spec:
  nodeRegistrationDelay: $BOOT_DELAY
---
apiVersion: karpenter.kwok.sh/v1alpha1
kind: KWOKNodeClass
metadata:
  name: warmpool-real
  labels: {warmpool.io/real-nodes: "true"}
spec:
  nodeRegistrationDelay: $BOOT_DELAY
EOF
}

do_up() {
    local start=$SECONDS
    if ! [[ -s $CLUSTER_DIR/admin.kubeconfig ]] || ! "$SCRIPT_DIR/cluster.sh" status >/dev/null; then
        die "the control plane is not up: run tests/cluster/cluster.sh up first"
    fi
    if running && karpenter_ready 2>/dev/null && [[ $(sed -n 's/^MAX_NODES=//p' "$CLUSTER_DIR/karpenter.env") == "$MAX_NODES" ]]; then
        apply_node_class
        log "already up (KWOKNodeClass $NODE_CLASS, boot delay $BOOT_DELAY)"
        return 0
    fi
    stop_both
    log "applying Karpenter's CRDs"
    kubectl_admin apply --server-side --force-conflicts --field-manager=warmpool-tests \
        -f "$DATA_DIR/crds" >/dev/null
    kubectl_admin wait --for=condition=Established --timeout=60s \
        crd/nodepools.karpenter.sh crd/nodeclaims.karpenter.sh crd/kwoknodeclasses.karpenter.kwok.sh >/dev/null

    local ports
    ports=$(free_ports 3)
    read -r KARPENTER_METRICS_PORT KARPENTER_HEALTH_PORT KWOK_PORT <<<"$ports"
    cat >"$CLUSTER_DIR/karpenter.env" <<EOF
KARPENTER_METRICS_PORT=$KARPENTER_METRICS_PORT
KARPENTER_HEALTH_PORT=$KARPENTER_HEALTH_PORT
KWOK_PORT=$KWOK_PORT
MAX_NODES=$MAX_NODES
EOF
    # KWOK fakes only the Nodes Karpenter's kwok provider launches (it annotates them so): the
    # project's fake nodes and real kubelets are left alone.
    start_daemon "$PIDS/kwok.pid" "$LOGS/kwok.log" "$BIN_DIR/kwok" \
        --kubeconfig="$CLUSTER_DIR/admin.kubeconfig" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --server-address="127.0.0.1:$KWOK_PORT" \
        --cidr=10.250.0.0/16 \
        --node-ip=10.250.255.254 \
        --config="$DATA_DIR/stages.yaml"
    # No leader election (one replica; a missed renewal on a loaded machine would make it exit).
    start_daemon "$PIDS/karpenter.pid" "$LOGS/karpenter.log" env \
        KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig" \
        DISABLE_LEADER_ELECTION=true \
        METRICS_PORT="$KARPENTER_METRICS_PORT" \
        HEALTH_PROBE_PORT="$KARPENTER_HEALTH_PORT" \
        LOG_LEVEL="${WARMPOOL_KARPENTER_LOG_LEVEL:-info}" \
        INSTANCE_TYPES_FILE_PATH="$DATA_DIR/instance-types.json" \
        WARMPOOL_NODE_SCRIPT="$SCRIPT_DIR/cluster.sh" \
        WARMPOOL_CLUSTER_DIR="$CLUSTER_DIR" \
        WARMPOOL_MAX_NODES="$MAX_NODES" \
        "$BIN_DIR/karpenter"
    wait_until "Karpenter /readyz and KWOK /healthz" 120 karpenter_ready
    apply_node_class
    log "up in $((SECONDS - start))s (KWOKNodeClasses $NODE_CLASS and warmpool-real, boot delay $BOOT_DELAY; at most $MAX_NODES real nodes; logs in $LOGS)"
}

stop_both() {
    stop_daemon "$PIDS/karpenter.pid" "karpenter*" Karpenter
    stop_daemon "$PIDS/kwok.pid" kwok KWOK
}

# Karpenter's Nodes and NodeClaims carry its termination finalizer: delete them while it still
# runs (it drains and lets go), then strip what is left, so no object outlives it.
do_down() {
    if [[ -s $CLUSTER_DIR/admin.kubeconfig ]] && "$SCRIPT_DIR/cluster.sh" status >/dev/null 2>&1 &&
        kubectl_admin get crd nodeclaims.karpenter.sh >/dev/null 2>&1; then
        if running; then
            kubectl_admin delete nodeclaims --all --wait=true --timeout=30s >/dev/null 2>&1 ||
                log "NodeClaims not all gone within 30s (their finalizers are removed below)"
        fi
        local kind obj
        for kind in nodeclaims nodes; do
            for obj in $(kubectl_admin get "$kind" -l karpenter.sh/nodepool -o name 2>/dev/null); do
                kubectl_admin patch "$obj" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
                kubectl_admin delete "$obj" --wait=false >/dev/null 2>&1 || true
            done
        done
    fi
    stop_both
    rm -f "$CLUSTER_DIR/karpenter.env"
}

cmd_up() {
    exec 3>&1 1>&2
    BOOT_DELAY=0s
    while (($#)); do
        case $1 in
        --boot-delay) BOOT_DELAY=${2:?--boot-delay needs a duration, e.g. 15s}; shift 2 ;;
        --max-nodes) MAX_NODES=${2:?--max-nodes needs a number}; shift 2 ;;
        *) die "karpenter up: unknown argument '$1' (expected --boot-delay DURATION, --max-nodes N)" ;;
        esac
    done
    [[ $MAX_NODES =~ ^[1-9][0-9]*$ ]] || die "--max-nodes '$MAX_NODES' is not a positive number"
    [[ $BOOT_DELAY =~ ^[0-9]+(ms|s|m)$ ]] || die "--boot-delay '$BOOT_DELAY' is not a duration like 0s, 500ms or 15s"
    cmd_build
    with_lock "$CLUSTER_DIR.karpenter.lock" do_up
    echo "$NODE_CLASS" >&3
}

cmd_down() {
    with_lock "$CLUSTER_DIR.karpenter.lock" do_down
    log "down"
}

cmd_status() {
    if running; then
        echo "up: Karpenter $KARPENTER_VERSION (pid $(<"$PIDS/karpenter.pid")), KWOK $KWOK_VERSION (pid $(<"$PIDS/kwok.pid")); logs in $LOGS"
        return 0
    fi
    echo "down"
    return 1
}

usage() {
    sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

MAX_NODES=3
case ${1:-} in
build) cmd_build ;;
up) shift; cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
crds-dir) echo "$DATA_DIR/crds" ;;
*) usage ;;
esac
