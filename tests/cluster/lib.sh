# shellcheck shell=bash
# Shared by node.sh and registry.sh (sourced): logging, locks, daemons by PID, prerequisites.
# The caller sets PROG (its name in messages) and CLUSTER_DIR.

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || (cd "$SCRIPT_DIR/../.." && pwd))
CACHE_ROOT=${WARMPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warmpool}
# shellcheck disable=SC2034 # used by the scripts that source this file
CLUSTER_DIR=${WARMPOOL_CLUSTER_DIR:-$REPO/target/cluster}

log() { printf '%s\n' "$PROG: $*" >&2; }
die() { printf '%s\n' "$PROG: error: $*" >&2; exit 1; }

# Real nodes cannot run here (not root, no package source, ...). In CI that is a failure; elsewhere
# one loud line and exit code 3, which the tests turn into a SKIP.
cannot_run() {
    if [[ ${CI:-} == true ]]; then
        die "real nodes are required in CI (CI=true) but cannot run: $*"
    fi
    printf '%s\n' "$PROG: SKIP: real nodes cannot run here: $*" >&2
    exit 3
}

# with_lock FILE CMD... — run CMD holding an exclusive flock on FILE. fd 8 (cluster.sh uses 9,
# and may call us while holding it); every daemon we start closes it (start_daemon).
with_lock() {
    local file=$1; shift
    mkdir -p "$(dirname "$file")"
    exec 8>"$file"
    flock 8
    "$@"
    exec 8>&-
}

# The Debian packages real nodes and the registry need (and shellcheck, for tests/all.sh's lint
# gate), and the command that proves each.
PACKAGES=(containerd runc containernetworking-plugins docker-registry skopeo umoci busybox-static iptables gcc shellcheck)
declare -A PACKAGE_PROBE=(
    [containerd]=/usr/bin/containerd [runc]=/usr/sbin/runc
    [containernetworking-plugins]=/usr/lib/cni/bridge [docker-registry]=/usr/bin/docker-registry
    [skopeo]=/usr/bin/skopeo [umoci]=/usr/bin/umoci [busybox-static]=/bin/busybox
    [iptables]=/usr/sbin/iptables [gcc]=/usr/bin/gcc [shellcheck]=/usr/bin/shellcheck
)

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        if [[ ! -x ${PACKAGE_PROBE[$p]} ]] || ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            echo "$p"
        fi
    done
}

# Installs what is missing with apt-get (one `apt-get update`, then the packages), without
# starting any of their services: a policy-rc.d that refuses every start is put in place for the
# install if there is none (and removed after), so no system containerd or registry listens.
do_prerequisites() {
    [[ $(id -u) == 0 ]] || cannot_run "not root (a kubelet and containerd need root)"
    local missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || cannot_run "packages missing (${missing[*]}) and no apt-get"
    local start=$SECONDS policy=/usr/sbin/policy-rc.d made_policy=0
    log "installing ${missing[*]} (apt-get; once)…"
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local ok=1
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2; then
        ok=0
    elif ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Use-Pty=0 "${missing[@]}" >&2; then
        ok=0
    fi
    ((made_policy)) && rm -f "$policy"
    ((ok)) || cannot_run "apt-get could not install: ${missing[*]}"
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || cannot_run "still missing after apt-get: ${missing[*]}"
    log "installed in $((SECONDS - start))s"
}

prerequisites() { with_lock "$CACHE_ROOT/.apt.lock" do_prerequisites; }

# Free TCP ports on 127.0.0.1 (bound all at once, then released).
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

# start_daemon PIDFILE LOGFILE CMD... — detached (own session), stdin /dev/null, output to LOGFILE,
# every inherited fd above 2 closed (the caller's stdout pipe, our locks), pid written by the
# child itself before exec.
start_daemon() {
    local pidfile=$1 logfile=$2; shift 2
    rm -f "$pidfile"
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
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
    die "$* did not start (see $logfile)"
}

# pid_of PIDFILE NAME — the pid in PIDFILE if that process is alive and its program is NAME (a
# glob: "python3*").
pid_of() {
    local pidfile=$1 name=$2 pid argv0
    [[ -s $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    IFS= read -r -d '' argv0 <"/proc/$pid/cmdline" || true
    # shellcheck disable=SC2053 # NAME is a pattern
    [[ $argv0 == $name || $argv0 == */$name ]] || return 1
    echo "$pid"
}

# stop_pid PID WHAT [SECONDS] — SIGTERM, wait, then SIGKILL.
stop_pid() {
    local pid=$1 what=$2 wait=${3:-10} i
    [[ -d /proc/$pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait * 10; i++)); do
        [[ -d /proc/$pid ]] || return 0
        # A zombie of ours (we are its parent only when not detached) counts as gone.
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && return 0
        sleep 0.1
    done
    log "$what (pid $pid) did not stop on SIGTERM within ${wait}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do [[ -d /proc/$pid ]] || return 0; sleep 0.1; done
}

# stop_daemon PIDFILE NAME WHAT [SECONDS]
stop_daemon() {
    local pid
    if pid=$(pid_of "$1" "$2"); then
        stop_pid "$pid" "$3" "${4:-10}"
    fi
    rm -f "$1"
}
