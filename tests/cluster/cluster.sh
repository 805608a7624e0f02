#!/usr/bin/env bash
# A real, local Kubernetes control plane for the demo and the end-to-end tests:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1,
# no kubelet, no containers, no docker.
#
#   tests/cluster/cluster.sh build         build the pinned binaries once (cached outside the repo)
#   tests/cluster/cluster.sh up            build if needed, start, wait until healthy;
#                                          the LAST stdout line is the admin kubeconfig path
#   tests/cluster/cluster.sh down          stop the real nodes and the registry, then what `up`
#                                          started, remove its data (idempotent)
#   tests/cluster/cluster.sh status        say whether it is up (exit 0 if up, 1 if not)
#   tests/cluster/cluster.sh kubectl-path  print the cached kubectl path
#   tests/cluster/cluster.sh bin-dir       print the cached bin dir
#   tests/cluster/cluster.sh node up NAME [--warm] [...]   a real node (kubelet + containerd), see
#   tests/cluster/cluster.sh node down NAME                node.sh for its options
#   tests/cluster/cluster.sh registry up|down|address|env  the local registry and its images
#   tests/cluster/cluster.sh karpenter up|down|build|status   the real Karpenter (kwok provider)
#                                                   and KWOK beside it, see karpenter.sh
#
# Usage from a shell or a test harness:  KUBECONFIG=$(tests/cluster/cluster.sh up)
#
# Binaries are built with the `go` command from the Go module proxy (the only network
# here; no prebuilt downloads) and cached in ~/.cache/warmpool/k8s-<version>/bin/.
# Run-time state (certs, kubeconfigs, etcd data, logs, pids) lives in <repo>/target/cluster/.
#
# Environment overrides (all optional):
#   WARMPOOL_CACHE           cache root            (default ~/.cache/warmpool)
#   WARMPOOL_CLUSTER_DIR     run-time state dir    (default <repo>/target/cluster)
#   WARMPOOL_CLUSTER_TIMEOUT seconds to wait for health in `up` (default 120)
set -euo pipefail

# ---- pinned versions ------------------------------------------------------------------------
# Kubernetes 1.34 because the Rust side uses k8s-openapi 0.29 with feature `v1_34`; latest
# v1.34 patch on the module proxy when pinned (`go list -m -versions k8s.io/kubernetes`).
K8S_VERSION=v1.34.4
# kubeadm pairs 1.34 with etcd 3.6; 1.31+ needs health endpoints that only etcd >= 3.5.11 has.
# Latest v3.6 on the proxy when pinned (`go list -m -versions go.etcd.io/etcd/server/v3`).
ETCD_VERSION=v3.6.16

# ---- paths ----------------------------------------------------------------------------------
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$SCRIPT_DIR/../.." && pwd))
CACHE_ROOT=${WARMPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warmpool}
VERSION_DIR=$CACHE_ROOT/k8s-$K8S_VERSION
BIN_DIR=$VERSION_DIR/bin
CLUSTER_DIR=${WARMPOOL_CLUSTER_DIR:-$REPO/target/cluster}
# The lock lives beside the cluster dir, not in it, because `down` removes the cluster dir.
LOCK_FILE=$(dirname "$CLUSTER_DIR")/.$(basename "$CLUSTER_DIR").lock
TIMEOUT=${WARMPOOL_CLUSTER_TIMEOUT:-120}

# All built from one wrapper module; `up` needs the first four, `node up` the kubelet.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
CONTROL_PLANE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

log() { printf '%s\n' "cluster.sh: $*" >&2; }
die() { printf '%s\n' "cluster.sh: error: $*" >&2; exit 1; }

# Serialise concurrent callers (cargo test runs tests in parallel threads and each may call
# `up`). fd 9 holds the lock; every daemon we start closes fd 9 (see start_daemon), otherwise
# the daemons would keep the lock held for as long as they run.
with_lock() {
    local file=$1; shift
    mkdir -p "$(dirname "$file")"
    exec 9>"$file"
    flock 9
    "$@"
    exec 9>&-
}

# =============================================================================================
# build
# =============================================================================================

# The bin dir is named after the Kubernetes version; etcd's version is recorded in a stamp
# written after its binary, so bumping ETCD_VERSION rebuilds etcd.
etcd_present() { [[ -x $BIN_DIR/etcd && $(cat "$BIN_DIR/.etcd.version" 2>/dev/null) == "$ETCD_VERSION" ]]; }

# binaries_present [NAME...]: the named Kubernetes binaries (default: all of them) and etcd.
binaries_present() {
    local b
    (($#)) || set -- "${K8S_BINARIES[@]}"
    for b in "$@"; do
        [[ -x $BIN_DIR/$b ]] || return 1
    done
    etcd_present
}

# `go build` must not pick up a go.work or a GOFLAGS=-mod=vendor from the caller.
go_env() { env GOWORK=off GOFLAGS=-buildvcs=false "$@"; }

# k8s.io/kubernetes is not meant to be consumed as a module: its go.mod requires every staging
# module (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and replaces them with ./staging/...,
# and replace lines of a dependency are ignored. So the wrapper module replaces each of them
# with the published v0.<minor>.<patch> of the same release. The list is generated from that
# release's own go.mod because it changes between releases.
prepare_k8s_module() {
    local dir=$1 json gomod staging minor_patch m
    log "resolving k8s.io/kubernetes@$K8S_VERSION on the Go module proxy"
    json=$(cd "$VERSION_DIR" && go_env go mod download -json "k8s.io/kubernetes@$K8S_VERSION") \
        || die "go mod download k8s.io/kubernetes@$K8S_VERSION failed"
    gomod=$(sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p' <<<"$json")
    [[ -f $gomod ]] || die "could not find the go.mod of k8s.io/kubernetes@$K8S_VERSION in: $json"
    # "\tk8s.io/api v0.0.0" lines of the require block (or "require k8s.io/x v0.0.0").
    staging=$(awk '{ if ($1 == "require") { $1 = ""; $0 = $0 } }
                   $1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod" | sort -u)
    [[ -n $staging ]] || die "no k8s.io/* v0.0.0 staging modules found in $gomod"
    minor_patch=v0.${K8S_VERSION#v1.}
    {
        echo "module warmpool.local/k8s-build"
        echo
        # Same go/godebug lines as the release so the binaries get the same GODEBUG defaults.
        grep -E '^(go|godebug) ' "$gomod"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        echo "replace ("
        for m in $staging; do echo "	$m => $m $minor_patch"; done
        echo ")"
    } >"$dir/go.mod"
    # Keep the commands' packages (and so their dependencies) in the module graph for tidy.
    # Importing main packages is fine here: this file is never compiled (build tag).
    {
        echo "//go:build tools"
        echo
        echo "package tools"
        echo
        echo "import ("
        for b in "${K8S_BINARIES[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
        echo ")"
    } >"$dir/tools.go"
    log "go mod tidy for Kubernetes $K8S_VERSION ($(wc -w <<<"$staging") staging modules replaced with $minor_patch)"
    (cd "$dir" && go_env go mod tidy) || die "go mod tidy failed in $dir"
}

prepare_etcd_module() {
    local dir=$1
    cat >"$dir/go.mod" <<EOF
module warmpool.local/etcd-build

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$dir/tools.go"
    log "go mod tidy for etcd $ETCD_VERSION"
    (cd "$dir" && go_env go mod tidy) || die "go mod tidy failed in $dir"
}

# Build one binary into a temp file next to its final place, then rename: an interrupted build
# leaves no file under the final name, so it is never taken as done.
go_build_one() {
    local moddir=$1 name=$2 pkg=$3 ldflags=$4 tmp start
    tmp=$BIN_DIR/.$name.tmp.$$
    start=$SECONDS
    log "building $name (first time, several minutes)…"
    if ! (cd "$moddir" && go_env go build -trimpath -ldflags="$ldflags" -o "$tmp" "$pkg"); then
        rm -f "$tmp"
        die "building $name ($pkg) failed"
    fi
    mv -f "$tmp" "$BIN_DIR/$name"
    log "built $name in $((SECONDS - start))s"
}

# do_build [NAME...]: build whichever of the named Kubernetes binaries (default: all) and etcd
# are missing. The wrapper module always names every command, so the module graph (and the
# dependency versions) is the same whichever binary a build was started for.
do_build() {
    local wanted=("$@")
    ((${#wanted[@]})) || wanted=("${K8S_BINARIES[@]}")
    if binaries_present "${wanted[@]}"; then
        return 0
    fi
    command -v go >/dev/null || die "the 'go' command is needed to build the control plane"
    mkdir -p "$BIN_DIR"
    rm -f "$BIN_DIR"/.*.tmp.* 2>/dev/null || true
    local start=$SECONDS
    log "building Kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $BIN_DIR"

    local b k8s_mod=$VERSION_DIR/src/kubernetes etcd_mod=$VERSION_DIR/src/etcd
    # Without these -X flags the binaries report v0.0.0-master; the API server would then
    # advertise a bogus /version and kubectl would warn about version skew.
    local major=1 minor=${K8S_VERSION#v1.}
    minor=${minor%%.*}
    local x="" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        x+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
        x+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done

    local need_k8s=0
    for b in "${wanted[@]}"; do [[ -x $BIN_DIR/$b ]] || need_k8s=1; done
    if ((need_k8s)); then
        mkdir -p "$k8s_mod"
        prepare_k8s_module "$k8s_mod"
        for b in "${wanted[@]}"; do
            # (an `if`, not `||`: set -e stays in force inside go_build_one)
            if [[ ! -x $BIN_DIR/$b ]]; then
                go_build_one "$k8s_mod" "$b" "k8s.io/kubernetes/cmd/$b" "-s$x"
            fi
        done
    fi
    if ! etcd_present; then
        mkdir -p "$etcd_mod"
        prepare_etcd_module "$etcd_mod"
        # The root of the server module is etcd's `main` package.
        go_build_one "$etcd_mod" etcd go.etcd.io/etcd/server/v3 -s
        echo "$ETCD_VERSION" >"$BIN_DIR/.etcd.version"
    fi
    binaries_present "${wanted[@]}" || die "build finished but binaries are missing in $BIN_DIR"
    log "build done in $((SECONDS - start))s"
}

# cmd_build [NAME...]: `build` builds everything, `up` the control plane, `node up` the kubelet.
cmd_build() { with_lock "$VERSION_DIR/.build.lock" do_build "$@"; }

# =============================================================================================
# up
# =============================================================================================

# Free TCP ports on 127.0.0.1: bind port 0 for all of them at once (so they differ), then
# release. A tiny race with other programs remains; the start-up wait would catch it.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# openssl helpers ----------------------------------------------------------------------------
gen_ca() {
    local d=$1
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
        -keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=warmpool-local-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# gen_cert DIR NAME SUBJECT EXT_USAGE [SAN]
gen_cert() {
    local d=$1 name=$2 subj=$3 usage=$4 san=${5:-}
    local ext=$d/$name.ext
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [[ -n $san ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$d/$name.key" -out "$d/$name.csr" \
        -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$d/$name.crt" 2>/dev/null
    rm -f "$d/$name.csr" "$ext"
}

gen_certs() {
    local d=$CLUSTER_DIR/certs
    mkdir -p "$d"
    chmod 700 "$d"
    gen_ca "$d"
    # The API server is reached as 127.0.0.1 / localhost from here, and under its in-cluster
    # names by anything that reads the `kubernetes` Service (10.0.0.1 = first IP of the range).
    gen_cert "$d" apiserver "/CN=kube-apiserver" serverAuth \
        "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # O=system:masters: cluster-admin without any RBAC object.
    gen_cert "$d" admin "/O=system:masters/CN=admin" clientAuth
    # The bootstrap RBAC policy grants these user names what each component needs.
    gen_cert "$d" controller-manager "/CN=system:kube-controller-manager" clientAuth
    gen_cert "$d" scheduler "/CN=system:kube-scheduler" clientAuth
    # How the API server authenticates to kubelets (logs, exec, port-forward): system:masters,
    # which the kubelets' webhook authorizer allows everything.
    gen_cert "$d" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    # Service-account tokens are signed with sa.key and verified with sa.pub.
    openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
    openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
}

# write_kubeconfig FILE CERT_NAME USER — certs embedded so the file works from anywhere
# (kubectl, kube-rs) without relative-path surprises.
write_kubeconfig() {
    local file=$1 cert=$2 user=$3 d=$CLUSTER_DIR/certs
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: warmpool
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$d/$cert.crt")
    client-key-data: $(base64 -w0 <"$d/$cert.key")
contexts:
- name: warmpool
  context:
    cluster: warmpool
    user: $user
current-context: warmpool
EOF
    chmod 600 "$file"
}

# Start a daemon detached from the calling shell: its own session (setsid) so it survives the
# shell/cargo process that ran `up`, stdin from /dev/null, output to its log, and every other
# inherited fd closed. The last part matters: fd 3 is the caller's stdout (see cmd_up) and fd 9
# our lock; a daemon holding either would make `$(cluster.sh up)` wait for EOF forever or keep
# the lock held. The child writes its own pid before exec, so the pid file is right even if
# setsid had to fork.
start_daemon() {
    local name=$1; shift
    local pidfile=$CLUSTER_DIR/pids/$name.pid logfile=$CLUSTER_DIR/logs/$name.log
    rm -f "$pidfile"
    log "starting $name"
    # shellcheck disable=SC2016
    setsid bash -c '
        for fd in /proc/$$/fd/*; do
            fd=${fd##*/}
            if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then eval "exec $fd>&-"; fi
        done
        echo $$ >"$0"
        exec "$@"' "$pidfile" "$@" \
        </dev/null >>"$logfile" 2>&1 &
    local i
    for i in $(seq 50); do [[ -s $pidfile ]] && return 0; sleep 0.1; done
    die "$name did not start (see $logfile)"
}

# Is the process in the pid file alive and really that component (pids get reused)? Matched on
# the program name rather than the full path so that processes started from another cache
# (an older pinned version) are still recognised and stopped. Zombies have an empty cmdline.
pid_alive() {
    local name=$1 pidfile=$CLUSTER_DIR/pids/$1.pid pid argv0
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" || true
    [[ $argv0 == */"$name" ]]
}

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$CLUSTER_DIR/admin.kubeconfig" --request-timeout=5s "$@"; }

readyz_ok() {
    local d=$CLUSTER_DIR/certs
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$d/ca.crt" \
        --cert "$d/admin.crt" --key "$d/admin.key" \
        "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null) == 200 ]]
}

etcd_ok() {
    [[ $(curl -s --max-time 3 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null) == *'"health":"true"'* ]]
}

# healthz_ok PORT — the controller manager's or the scheduler's /healthz (self-signed serving
# certificate; /healthz needs no credentials).
healthz_ok() {
    [[ $(curl -sk --max-time 3 "https://127.0.0.1:$1/healthz" 2>/dev/null) == ok ]]
}

default_sa_exists() { kubectl_admin -n default get serviceaccount default >/dev/null 2>&1; }

# wait_for WHAT COMPONENT CHECK... — poll until CHECK succeeds or the deadline; on timeout
# (or if the component died) show the tail of its log and fail.
wait_for() {
    local what=$1 comp=$2; shift 2
    while ! "$@"; do
        if ! pid_alive "$comp"; then
            tail -n 40 "$CLUSTER_DIR/logs/$comp.log" >&2 || true
            die "$comp exited while waiting for $what (log: $CLUSTER_DIR/logs/$comp.log)"
        fi
        if ((SECONDS >= DEADLINE)); then
            tail -n 40 "$CLUSTER_DIR/logs/$comp.log" >&2 || true
            die "timed out after ${TIMEOUT}s waiting for $what (log: $CLUSTER_DIR/logs/$comp.log)"
        fi
        sleep 0.5
    done
    log "$what: ok ($((SECONDS - UP_START))s)"
}

load_ports() {
    [[ -f $CLUSTER_DIR/ports.env ]] || return 1
    # shellcheck disable=SC1091
    source "$CLUSTER_DIR/ports.env"
}

healthy() {
    load_ports || return 1
    local c
    for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
    readyz_ok
}

start_cluster() {
    local ports
    ports=$(free_ports 5) || die "could not pick free ports (python3 needed)"
    read -r ETCD_PORT ETCD_PEER_PORT APISERVER_PORT KCM_PORT SCHED_PORT <<<"$ports"
    mkdir -p "$CLUSTER_DIR"/{logs,pids,etcd}
    chmod 700 "$CLUSTER_DIR/etcd"
    cat >"$CLUSTER_DIR/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
EOF
    gen_certs
    write_kubeconfig "$CLUSTER_DIR/admin.kubeconfig" admin admin
    write_kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
    write_kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" scheduler system:kube-scheduler
    local c=$CLUSTER_DIR/certs

    # Plain http on loopback is enough for a throw-away etcd; no fsync makes it fast.
    start_daemon etcd "$BIN_DIR/etcd" \
        --name=warmpool \
        --data-dir="$CLUSTER_DIR/etcd" \
        --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="warmpool=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync \
        --log-level=warn
    wait_for "etcd /health" etcd etcd_ok

    # The --kubelet-* flags matter only with real nodes (`node up`): the API server reaches a
    # kubelet at its InternalIP (its bridge address) with a system:masters client certificate;
    # without InternalIP first it would resolve the node's name with the VM's outside DNS.
    # --endpoint-reconciler-type=none: the `kubernetes` Endpoints may not hold a loopback IP, so
    # the default reconciler would log an error every 10s; nothing in this cluster needs them.
    # TaintNodesByCondition is off: it adds node.kubernetes.io/not-ready:NoSchedule to every new
    # Node, and only the node lifecycle controller (off, see below) would ever remove it, so
    # fake Nodes would stay unschedulable. Taints a test puts on its Nodes are kept as given.
    # --enable-aggregator-routing: the API server calls an admission webhook's Service (the
    # chart's clientConfig.service) at the addresses of its EndpointSlices, the Ready pods' own IPs
    # on their node's bridge, instead of its ClusterIP: no kube-proxy needed (and none runs).
    start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
        --bind-address=127.0.0.1 \
        --advertise-address=127.0.0.1 \
        --secure-port="$APISERVER_PORT" \
        --tls-cert-file="$c/apiserver.crt" \
        --tls-private-key-file="$c/apiserver.key" \
        --client-ca-file="$c/ca.crt" \
        --authorization-mode=Node,RBAC \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$c/sa.pub" \
        --service-account-signing-key-file="$c/sa.key" \
        --service-cluster-ip-range=10.0.0.0/24 \
        --allow-privileged=true \
        --kubelet-client-certificate="$c/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$c/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types=InternalIP \
        --disable-admission-plugins=TaintNodesByCondition \
        --endpoint-reconciler-type=none \
        --enable-aggregator-routing=true \
        --profiling=false
    wait_for "kube-apiserver /readyz" kube-apiserver readyz_ok

    # node-lifecycle-controller is off: it would taint the fake Nodes (no kubelet heartbeats)
    # unreachable and evict their pods. Everything else in '*' stays, notably the garbage
    # collector (owner-reference cleanup) and the service-account/token controllers.
    # Both serve HTTPS on a free port of their own. No leader election (one of each): with it,
    # a lease renewal that misses its 10 s deadline on a loaded 2-core machine makes the
    # component exit ("leaderelection lost"), and every later test would wait for pods that no
    # controller creates or schedules. --authentication-skip-lookup with our CA:
    # otherwise they read the requestheader CA from kube-system/extension-apiserver-authentication,
    # which this API server (no front proxy) does not set, and log errors about it.
    start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig="$CLUSTER_DIR/controller-manager.kubeconfig" \
        --authentication-skip-lookup=true \
        --client-ca-file="$c/ca.crt" \
        --bind-address=127.0.0.1 \
        --secure-port="$KCM_PORT" \
        --controllers='*,-node-lifecycle-controller' \
        --service-account-private-key-file="$c/sa.key" \
        --root-ca-file="$c/ca.crt" \
        --use-service-account-credentials=true \
        --service-cluster-ip-range=10.0.0.0/24 \
        --leader-elect=false \
        --profiling=false

    start_daemon kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig="$CLUSTER_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig="$CLUSTER_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig="$CLUSTER_DIR/scheduler.kubeconfig" \
        --authentication-skip-lookup=true \
        --client-ca-file="$c/ca.crt" \
        --bind-address=127.0.0.1 \
        --secure-port="$SCHED_PORT" \
        --leader-elect=false \
        --profiling=false

    wait_for "kube-controller-manager /healthz" kube-controller-manager healthz_ok "$KCM_PORT"
    wait_for "kube-scheduler /healthz" kube-scheduler healthz_ok "$SCHED_PORT"
    # The ServiceAccount admission plugin rejects pods in a namespace until the service-account
    # controller has created its `default` ServiceAccount; wait for it in `default` so pods can
    # be created there right after `up` (other namespaces: the caller waits, see README).
    wait_for "default ServiceAccount" kube-controller-manager default_sa_exists
}

do_up() {
    UP_START=$SECONDS
    if healthy; then
        log "already up (kubectl: $BIN_DIR/kubectl)"
        return 0
    fi
    if [[ -e $CLUSTER_DIR ]]; then
        log "found a stale or broken cluster in $CLUSTER_DIR: tearing it down first"
        do_down
    fi
    DEADLINE=$((SECONDS + TIMEOUT))
    # If start-up fails, stop what was started (no half cluster left running) but keep the
    # logs in $CLUSTER_DIR/logs for diagnosis; the next `up` or `down` removes them.
    trap 'stop_all; log "start-up failed; logs kept in $CLUSTER_DIR/logs"' EXIT
    start_cluster
    trap - EXIT
    log "up in $((SECONDS - UP_START))s (kubectl: $BIN_DIR/kubectl)"
}

cmd_up() {
    # stdout is kept for the one line callers parse; everything else (including the output
    # of go and openssl) goes to stderr.
    exec 3>&1 1>&2
    cmd_build "${CONTROL_PLANE_BINARIES[@]}"
    with_lock "$LOCK_FILE" do_up
    echo "$CLUSTER_DIR/admin.kubeconfig" >&3
}

# =============================================================================================
# down / status
# =============================================================================================

stop_component() {
    local name=$1 pidfile=$CLUSTER_DIR/pids/$1.pid pid i
    if pid_alive "$name"; then
        pid=$(<"$pidfile")
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            pid_alive "$name" || break
            sleep 0.1
        done
        if pid_alive "$name"; then
            log "$name did not stop on SIGTERM within 10s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 50); do pid_alive "$name" || break; sleep 0.1; done
        fi
    fi
    rm -f "$pidfile"
}

stop_all() {
    local i
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        stop_component "${COMPONENTS[i]}"
    done
}

do_down() {
    # Karpenter first, while the API server still answers: its Nodes and NodeClaims carry its
    # finalizer. Then real nodes and the registry: a node's down deletes its Node through the API
    # server and must put the host back as it found it (see node.sh).
    if [[ -e $CLUSTER_DIR/karpenter.env ]]; then
        WARMPOOL_CLUSTER_DIR=$CLUSTER_DIR "$SCRIPT_DIR/karpenter.sh" down || log "karpenter down failed (continuing)"
    fi
    if [[ -d $CLUSTER_DIR/nodes ]]; then
        WARMPOOL_CLUSTER_DIR=$CLUSTER_DIR "$SCRIPT_DIR/node.sh" down-all || log "node down-all failed (continuing)"
    fi
    if [[ -d $CLUSTER_DIR/registry ]]; then
        WARMPOOL_CLUSTER_DIR=$CLUSTER_DIR "$SCRIPT_DIR/registry.sh" down || log "registry down failed (continuing)"
    fi
    stop_all
    rm -rf "$CLUSTER_DIR"
}

cmd_down() {
    with_lock "$LOCK_FILE" do_down
    log "down"
}

cmd_status() {
    local c
    if healthy; then
        echo "up: https://127.0.0.1:$APISERVER_PORT (kubeconfig $CLUSTER_DIR/admin.kubeconfig)"
        return 0
    fi
    if [[ -d $CLUSTER_DIR/pids ]]; then
        for c in "${COMPONENTS[@]}"; do
            if pid_alive "$c"; then
                echo "$c: running"
            else
                echo "$c: not running; the end of $CLUSTER_DIR/logs/$c.log:"
                tail -n 8 "$CLUSTER_DIR/logs/$c.log" 2>/dev/null | sed 's/^/  /'
            fi
        done
        echo "not healthy"
    else
        echo "down"
    fi
    return 1
}

cmd_kubectl_path() {
    echo "$BIN_DIR/kubectl"
    [[ -x $BIN_DIR/kubectl ]] || die "kubectl is not built yet: run '$0 build' (or up)"
}

usage() {
    sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

case ${1:-} in
build) shift; cmd_build "$@" ;;
node) shift; WARMPOOL_CLUSTER_DIR=$CLUSTER_DIR exec "$SCRIPT_DIR/node.sh" "$@" ;;
registry) shift; WARMPOOL_CLUSTER_DIR=$CLUSTER_DIR exec "$SCRIPT_DIR/registry.sh" "$@" ;;
karpenter) shift; WARMPOOL_CLUSTER_DIR=$CLUSTER_DIR exec "$SCRIPT_DIR/karpenter.sh" "$@" ;;
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
kubectl-path) cmd_kubectl_path ;;
bin-dir) echo "$BIN_DIR" ;;
*) usage ;;
esac
