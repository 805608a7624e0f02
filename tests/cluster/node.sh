#!/usr/bin/env bash
# Real nodes for the local control plane: one kubelet + one containerd per node, on this host, as
# ../shared/REAL-NODES.md describes (the configuration tried and measured on this machine kind).
#
#   tests/cluster/cluster.sh node up NAME [--warm] [--pool [KEY=]VALUE] [--label K=V]...
#                                    [--taint K=V:EFFECT]... [--reserve cpu=C,memory=M]
#                                    [--rate RATE] [--provider-id ID] [--timeout SECONDS]
#       start node NAME and wait until its Node is Ready; the LAST stdout line is NAME.
#       --warm      the pool's label and taint: workload-type=cargocats and
#                   workload-type=cargocats:NoSchedule, or --pool's (a bare VALUE keeps the key
#                   workload-type; default from $WARMPOOL_POOL)
#       --label, --taint  more labels / taints (repeatable, warm or not)
#       --reserve   the kubelet's systemReserved: every node reports the whole VM (2 CPU, 24 GiB),
#                   so two nodes count it twice; reserve to make allocatable match a share
#       --rate      bandwidth from the registry to this node (default $WARMPOOL_REGISTRY_RATE or
#                   25MB, bytes/s; 0 = unlimited): the node's own rate-limiting proxy
#       --provider-id  the Node's spec.providerID (a Karpenter NodeClaim's, karpenter.sh up
#                   --real-nodes)
#   tests/cluster/cluster.sh node down NAME         stop it, delete its Node, undo what it did to
#                                                   the host (idempotent)
#   tests/cluster/cluster.sh node down-all          every node of this cluster dir
#   tests/cluster/cluster.sh node restart-kubelet NAME   stop the kubelet and start it again
#                                                   (containerd and the pods keep running)
#   tests/cluster/cluster.sh node list              NAME per line, of this cluster dir
#   tests/cluster/cluster.sh node socket NAME       its containerd socket (ctr --address SOCK
#                                                   -n k8s.io images ls)
#   tests/cluster/cluster.sh node prerequisites     install what is missing (apt-get), check root
#
# Exit code 3 with one "SKIP:" line on stderr: real nodes cannot run here (not root, no package
# source); under CI=true that is a failure (exit 1) instead. Progress goes to stderr.
#
# Per node, under a short root of its own (/var/tmp/wpn/HASH, linked as <cluster dir>/nodes/NAME;
# removed by `down`; logs kept in
# <cluster dir>/logs/nodes/NAME/ until `cluster.sh down`): containerd's root, state and socket,
# the kubelet's root, cert and log dirs, the node's client certificate (CN=system:node:NAME,
# O=system:nodes, from the cluster's CA), its CNI config. On the host: bridge wpbrN holding
# 10.244.N.1/24 (N = 1, 2, ... per node, IPv6 off), cgroup /warmpool-NAME in every hierarchy, a
# rate-limiting proxy on a free 127.0.0.1 port. Network containment: pods get only their link
# route (no default route, ip_forward stays 0, no masquerade), resolv.conf says 127.0.0.1, and a
# pull of any image outside the local registry goes to 127.0.0.1:1 and fails at once. The one
# exception is the API server, for in-cluster clients (a pod's service-account config): pods get a
# route to the `kubernetes` Service's address (10.0.0.1) through the bridge, and the host turns
# that address, coming in on the bridge, into the API server's 127.0.0.1 port (one DNAT rule and
# route_localnet on this bridge alone): what kube-proxy does for that Service, for no other.
# Host-wide state shared by all nodes (sysctls the kubelet sets, the fixed paths it cannot be told
# to move, iptables chains) is recorded under /run/warmpool-nodes when the first node starts and
# put back when the last one stops.
set -euo pipefail

PROG=node.sh
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODES_DIR=$CLUSTER_DIR/nodes
HOST_DIR=/run/warmpool-nodes
NODE_TIMEOUT=${WARMPOOL_NODE_TIMEOUT:-120}
CNI_BIN=/usr/lib/cni
# The sysctls the kubelet sets at start (protectKernelDefaults: false).
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
# Paths the kubelet, containerd and mount(8) (its utab) use whatever they are told; removed when
# the last node stops, if they were not there before the first one started.
FIXED_PATHS=(/var/lib/kubelet /var/lib/kubelet/device-plugins /var/log/containers /var/lib/cni
    /var/lib/cni/results /run/containerd /run/containerd/s /run/containerd/fifo /run/containerd/runc
    /run/mount)
# Chains the kubelet makes with makeIPTablesUtilChains (off here; removed if found anyway).
IPT_CHAINS=(KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT)
NODE_LABEL=warmpool.test/real-node
# The system python (a version manager's shim would exec something else under the pid we keep).
PYTHON=$(command -v /usr/bin/python3 || command -v python3)

kubectl_admin() {
    "$BIN_DIR/kubectl" --kubeconfig "$CLUSTER_DIR/admin.kubeconfig" --request-timeout=10s "$@"
}

BIN_DIR=$("$SCRIPT_DIR/cluster.sh" bin-dir)

valid_name() { [[ $1 =~ ^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$ ]]; }

# ---- host-wide state (all nodes of all cluster dirs), under a lock on /run itself -----------

# An exclusive flock on the /run directory: nothing to create, so nothing left behind.
host_lock() { exec 7</run; flock 7; }
host_unlock() { exec 7<&-; }

host_nodes() { compgen -G "$HOST_DIR/index-*" || true; }

snapshot_host() {
    mkdir -p "$HOST_DIR"
    local s p f t chains
    {
        for s in "${SYSCTLS[@]}"; do echo "sysctl $s $(sysctl -n "$s")"; done
        for p in "${FIXED_PATHS[@]}"; do [[ -e $p ]] || echo "absent $p"; done
        for f in iptables ip6tables; do
            command -v "$f-save" >/dev/null || continue
            for t in filter nat mangle; do
                chains=$("$f-save" -t "$t" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | tr '\n' ' ')
                echo "chains $f $t $chains"
            done
        done
    } >"$HOST_DIR/host.state"
    log "host state recorded in $HOST_DIR/host.state (put back when the last node stops)"
}

# Remove chain CHAIN of TABLE (and the rules that jump to it) unless it was there before.
drop_chain() {
    local f=$1 t=$2 c=$3 before=$4 rule
    [[ " $before " == *" $c "* ]] && return 0
    "$f-save" -t "$t" 2>/dev/null | grep -q "^:$c " || return 0
    while read -r rule; do
        [[ -n $rule ]] || continue
        # shellcheck disable=SC2086 # a rule is a list of arguments
        "$f" -t "$t" -D ${rule#-A } 2>/dev/null || true
    done < <("$f-save" -t "$t" | grep -- "^-A .* -j $c\( \|$\)" || true)
    "$f" -t "$t" -F "$c" 2>/dev/null || true
    "$f" -t "$t" -X "$c" 2>/dev/null || true
    log "removed iptables chain $c ($f, table $t)"
}

restore_host() {
    local state=$HOST_DIR/host.state kind a b rest p c
    if [[ -f $state ]]; then
        while read -r kind a b rest; do
            case $kind in
            sysctl)
                if [[ $(sysctl -n "$a") != "$b" ]]; then
                    sysctl -q -w "$a=$b" >/dev/null && log "restored $a=$b"
                fi
                ;;
            chains)
                for c in "${IPT_CHAINS[@]}"; do drop_chain "$a" "$b" "$c" "$rest"; done
                ;;
            esac
        done <"$state"
        # Deepest first, so that a path absent before goes whole, with what it holds.
        while read -r p; do
            if [[ -e $p || -L $p ]]; then
                rm -rf "$p"
                log "removed $p (not there before the first node)"
            fi
        done < <(awk '$1 == "absent" { print length($2), $2 }' "$state" | sort -rn | cut -d' ' -f2-)
    fi
    rm -rf "$HOST_DIR"
}

# Picks the first free N (bridge wpbrN, pods 10.244.N.0/24) and registers the node under it.
allocate_index() {
    local n
    for n in $(seq 1 250); do
        [[ -e $HOST_DIR/index-$n ]] && continue
        ip link show "wpbr$n" >/dev/null 2>&1 && continue
        [[ -n $(ip -4 route show "10.244.$n.0/24" 2>/dev/null) ]] && continue
        [[ -n $(ip -4 addr show to "10.244.$n.0/24" 2>/dev/null) ]] && continue
        echo "$NODE_DIR" >"$HOST_DIR/index-$n"
        echo "$n"
        return 0
    done
    die "no free pod range 10.244.N.0/24 left"
}

# ---- up -------------------------------------------------------------------------------------

# A node's files live under a short root of its own, whatever the checkout's path: the kubelet
# and containerd bind Unix sockets under them (the kubelet's pod-resources socket is
# <root-dir>/pod-resources/<n>), and a socket path longer than 107 bytes fails to bind ("bind:
# invalid argument"): a checkout a few directories deep used to reach 108. The root is named
# after a hash of the cluster dir and the node name, so two clones never share one;
# <cluster dir>/nodes/NAME is a symlink to it.
SHORT_ROOT=${WARMPOOL_NODE_ROOT:-/var/tmp/wpn}

short_dir() {
    local hash
    hash=$(printf '%s' "$CLUSTER_DIR/$1" | sha256sum | cut -c1-12)
    echo "$SHORT_ROOT/$hash"
}

node_vars() {
    NAME=$1
    valid_name "$NAME" || die "invalid node name '$NAME' (a DNS label of at most 40 characters)"
    NODE_DIR=$(short_dir "$NAME")
    # Beside the link, in the cluster dir (`cluster.sh down` removes it), not in the short root.
    NODE_LOCK=$NODES_DIR/.$NAME.lock
    NODE_LOGS=$CLUSTER_DIR/logs/nodes/$NAME
    SOCK=$NODE_DIR/containerd.sock
    CGROUP=warmpool-$NAME
}

load_node_env() {
    [[ -f $NODE_DIR/node.env ]] || return 1
    # shellcheck disable=SC1091
    source "$NODE_DIR/node.env"
}

kubelet_pid() { pid_of "$NODE_DIR/pids/kubelet.pid" kubelet; }
containerd_pid() { pid_of "$NODE_DIR/pids/containerd.pid" containerd; }

cgroup_mounts() { awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo | sort -u; }

make_cgroups() {
    local m
    while read -r m; do
        mkdir -p "$m/$CGROUP"
        if [[ -f $m/cpuset.cpus ]]; then
            cat "$m/cpuset.cpus" >"$m/$CGROUP/cpuset.cpus"
            cat "$m/cpuset.mems" >"$m/$CGROUP/cpuset.mems"
        fi
    done < <(awk '$9 == "cgroup" { print $5 }' /proc/self/mountinfo | sort -u)
}

make_bridge() {
    local br=$BRIDGE
    ip link add "$br" type bridge
    # No IPv6 on the bridge (no link-local address, no router solicitations).
    if [[ -e /proc/sys/net/ipv6/conf/$br/disable_ipv6 ]]; then
        echo 1 >"/proc/sys/net/ipv6/conf/$br/disable_ipv6"
    fi
    ip addr add "$NODE_IP/24" dev "$br"
    ip link set "$br" up
}

# The `kubernetes` Service (first address of the cluster's service range, port 443) as pods see
# it in KUBERNETES_SERVICE_HOST/PORT. Traffic to it from this bridge is delivered to the API
# server on loopback, which needs route_localnet on the bridge (a per-interface setting that goes
# with the bridge). Nothing is forwarded: ip_forward stays 0.
API_SERVICE_IP=10.0.0.1
api_server_rule() {
    local port
    # shellcheck disable=SC1091 # written by cluster.sh up
    port=$(source "$CLUSTER_DIR/ports.env" && echo "$APISERVER_PORT")
    echo "PREROUTING -i $BRIDGE -d $API_SERVICE_IP/32 -p tcp --dport 443" \
        "-m comment --comment warmpool-node-$BRIDGE -j DNAT --to-destination 127.0.0.1:$port"
}

route_api_server() {
    sysctl -q -w "net.ipv4.conf.$BRIDGE.route_localnet=1" >/dev/null
    # shellcheck disable=SC2046 # a rule is a list of arguments
    iptables -t nat -A $(api_server_rule)
}

# Every rule of this bridge (by its comment), whatever port it was made with.
unroute_api_server() {
    local rule
    while read -r rule; do
        [[ -n $rule ]] || continue
        # shellcheck disable=SC2086 # a rule is a list of arguments
        iptables -t nat -D ${rule#-A } 2>/dev/null || true
    done < <(iptables-save -t nat 2>/dev/null | grep -- "--comment warmpool-node-$BRIDGE " || true)
}

gen_node_cert() {
    local d=$NODE_DIR/certs ca=$CLUSTER_DIR/certs
    mkdir -p "$d"
    chmod 700 "$d"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=clientAuth" >"$d/node.ext"
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout "$d/node.key" -out "$d/node.csr" \
        -subj "/O=system:nodes/CN=system:node:$NAME" 2>/dev/null
    # A serial of its own (no .srl file written into the cluster's certs dir by parallel ups).
    openssl x509 -req -in "$d/node.csr" -CA "$ca/ca.crt" -CAkey "$ca/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$d/node.ext" \
        -out "$d/node.crt" 2>/dev/null
    rm -f "$d/node.csr" "$d/node.ext"
    local server
    server=$(sed -n 's/^ *server: //p' "$CLUSTER_DIR/admin.kubeconfig" | head -1)
    cat >"$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: warmpool
  cluster:
    server: $server
    certificate-authority: $ca/ca.crt
users:
- name: system:node:$NAME
  user:
    client-certificate: $d/node.crt
    client-key: $d/node.key
contexts:
- name: warmpool
  context: {cluster: warmpool, user: "system:node:$NAME"}
current-context: warmpool
EOF
    chmod 600 "$NODE_DIR/kubelet.kubeconfig"
}

start_proxy() {
    rm -f "$NODE_DIR/proxy.port"
    start_daemon "$NODE_DIR/pids/proxy.pid" "$NODE_LOGS/proxy.log" \
        "$PYTHON" "$REPO/tests/tools/ratelimit_proxy.py" --upstream "$WARMPOOL_REGISTRY" \
        --rate "$RATE" --port-file "$NODE_DIR/proxy.port"
    local i
    for i in $(seq 100); do
        [[ -s $NODE_DIR/proxy.port ]] && break
        sleep 0.1
    done
    [[ -s $NODE_DIR/proxy.port ]] || die "the rate-limiting proxy did not start: $(tail -n 5 "$NODE_LOGS/proxy.log")"
    PROXY_PORT=$(<"$NODE_DIR/proxy.port")
}

write_containerd_config() {
    local d=$NODE_DIR
    mkdir -p "$d/containerd" "$d/cni/net.d" "$d/cni/ipam" "$d/certs.d/$WARMPOOL_REGISTRY" "$d/certs.d/_default"
    # The local registry, through this node's rate-limited proxy.
    cat >"$d/certs.d/$WARMPOOL_REGISTRY/hosts.toml" <<EOF
server = "http://127.0.0.1:$PROXY_PORT"

[host."http://127.0.0.1:$PROXY_PORT"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
    # The private registry (registry.sh): pulled from directly, with the credentials of the pod's
    # imagePullSecrets that the kubelet passes along, or refused.
    if [[ -n ${WARMPOOL_PRIVATE_REGISTRY:-} ]]; then
        mkdir -p "$d/certs.d/$WARMPOOL_PRIVATE_REGISTRY"
        cat >"$d/certs.d/$WARMPOOL_PRIVATE_REGISTRY/hosts.toml" <<EOF
server = "http://$WARMPOOL_PRIVATE_REGISTRY"

[host."http://$WARMPOOL_PRIVATE_REGISTRY"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
EOF
    fi
    # Every other registry (docker.io for an unqualified name, any public one): a closed port on
    # loopback, so such a pull fails at once and nothing ever leaves the machine.
    cat >"$d/certs.d/_default/hosts.toml" <<EOF
server = "http://127.0.0.1:1"

[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
    cat >"$d/containerd/config.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
oom_score = 0

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$WARMPOOL_IMAGE_PAUSE"
  # Without it every sandbox fails (runc cannot write the negative oom_score_adj the kubelet asks
  # for: no CAP_SYS_RESOURCE here). OOM-kill order between QoS classes is therefore not real.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_concurrent_downloads = 3

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$d/cni/net.d"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
EOF
    # The node's own bridge and range; no gateway on the pod side, no masquerade, no default
    # route: pods have their link route and one to the API server's Service address (via the
    # bridge, where route_api_server delivers it to the API server).
    cat >"$d/cni/net.d/10-warmpool.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$SUBNET", "rangeStart": "10.244.$INDEX.10", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$API_SERVICE_IP/32"}],
        "dataDir": "$d/cni/ipam"
      }
    }
  ]
}
EOF
}

start_containerd() {
    start_daemon "$NODE_DIR/pids/containerd.pid" "$NODE_LOGS/containerd.log" \
        /usr/bin/containerd --config "$NODE_DIR/containerd/config.toml"
    local i
    for i in $(seq 150); do
        if ctr --address "$SOCK" version >/dev/null 2>&1; then return 0; fi
        containerd_pid >/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$NODE_LOGS/containerd.log" >&2 || true
    die "containerd of $NAME did not start (log: $NODE_LOGS/containerd.log)"
}

yaml_taints() {
    local t k v e
    for t in "${TAINTS[@]}"; do
        k=${t%%=*}
        v=${t#*=}
        e=${v##*:}
        v=${v%:*}
        printf '  - {key: "%s", value: "%s", effect: "%s"}\n' "$k" "$v" "$e"
    done
}

write_kubelet_config() {
    local d=$NODE_DIR k=$NODE_DIR/kubelet
    mkdir -p "$k/root" "$k/pki" "$k/pod-logs" "$k/volume-plugins"
    echo "nameserver 127.0.0.1" >"$d/resolv.conf"
    {
        cat <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $HEALTHZ_PORT
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $CLUSTER_DIR/certs/ca.crt}
authorization: {mode: Webhook}
resolvConf: $d/resolv.conf
# No cluster DNS runs here; naming 127.0.0.1 keeps pods' resolv.conf where it is anyway and
# spares every pod a Warning Event MissingClusterDNS (noise in \`warmpool status\` failures).
clusterDNS: [127.0.0.1]
clusterDomain: cluster.local
serializeImagePulls: false
podLogsDir: $k/pod-logs
volumePluginDir: $k/volume-plugins
makeIPTablesUtilChains: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
nodeStatusUpdateFrequency: 5s
# This disk is shared with everything else on the VM: evict only when it is really full.
evictionHard: {memory.available: 100Mi, nodefs.available: 3%, imagefs.available: 3%}
imageGCHighThresholdPercent: 97
imageGCLowThresholdPercent: 95
EOF
        # A cloud provider's instance (Karpenter's tests/cluster/karpenter-local) registers
        # with the provider ID Karpenter knows its NodeClaim by.
        if [[ -n $PROVIDER_ID ]]; then
            echo "providerID: \"$PROVIDER_ID\""
        fi
        if ((${#TAINTS[@]})); then
            echo "registerWithTaints:"
            yaml_taints
        fi
        if [[ -n $RESERVE ]]; then
            echo "systemReserved:"
            local r kv
            IFS=, read -ra r <<<"$RESERVE"
            for kv in "${r[@]}"; do printf '  %s: "%s"\n' "${kv%%=*}" "${kv#*=}"; done
        fi
    } >"$k/config.yaml"
}

start_kubelet() {
    local labels args
    labels=$(IFS=,; echo "${LABELS[*]}")
    args=("$BIN_DIR/kubelet"
        --config="$NODE_DIR/kubelet/config.yaml"
        --kubeconfig="$NODE_DIR/kubelet.kubeconfig"
        --root-dir="$NODE_DIR/kubelet/root"
        --cert-dir="$NODE_DIR/kubelet/pki"
        --hostname-override="$NAME"
        --node-ip="$NODE_IP"
        --node-labels="$labels"
        --v=1)
    # Kept for restart-kubelet, one argument a line.
    printf '%s\n' "${args[@]}" >"$NODE_DIR/kubelet.args"
    start_daemon "$NODE_DIR/pids/kubelet.pid" "$NODE_LOGS/kubelet.log" "${args[@]}"
}

node_ready() {
    [[ $(kubectl_admin get node "$NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# The Ready condition of the Node: "STATUS HEARTBEAT".
ready_condition() {
    kubectl_admin get node "$NAME" -o 'jsonpath={range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null
}

# Ready as reported by THIS kubelet: its healthz answers and the Node is Ready with a heartbeat
# other than OLD (the last one of the kubelet before a restart: the condition stays True).
node_ready_anew() {
    local old=$1 got status beat
    [[ $(curl -s --max-time 2 "http://127.0.0.1:$HEALTHZ_PORT/healthz" 2>/dev/null) == ok ]] || return 1
    got=$(ready_condition) || return 1
    read -r status beat <<<"$got"
    [[ $status == True && -n $beat && $beat != "$old" ]]
}

# wait_ready [OLD-HEARTBEAT]
wait_ready() {
    local deadline=$((SECONDS + NODE_TIMEOUT)) start=$SECONDS old=${1:-}
    until node_ready_anew "$old"; do
        if ! kubelet_pid >/dev/null; then
            tail -n 30 "$NODE_LOGS/kubelet.log" >&2 || true
            die "the kubelet of $NAME exited (log: $NODE_LOGS/kubelet.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$NODE_LOGS/kubelet.log" >&2 || true
            die "node $NAME not Ready after ${NODE_TIMEOUT}s (log: $NODE_LOGS/kubelet.log)"
        fi
        sleep 0.2
    done
    log "node $NAME Ready $((SECONDS - start))s after the kubelet started"
}

control_plane_ok() {
    [[ -f $CLUSTER_DIR/admin.kubeconfig && -f $CLUSTER_DIR/certs/ca.key ]] || return 1
    kubectl_admin get --raw /readyz >/dev/null 2>&1
}

parse_up_args() {
    WARM=0 POOL=${WARMPOOL_POOL:-cargocats} RESERVE="" RATE=${WARMPOOL_REGISTRY_RATE:-25MB} PROVIDER_ID=""
    LABELS=("$NODE_LABEL=true") TAINTS=()
    while (($#)); do
        case $1 in
        --warm) WARM=1 ;;
        --pool) POOL=${2:?--pool needs a value}; shift ;;
        --label) LABELS+=("${2:?--label needs K=V}"); shift ;;
        --taint) TAINTS+=("${2:?--taint needs K=V:EFFECT}"); shift ;;
        --reserve) RESERVE=${2:?--reserve needs cpu=C,memory=M}; shift ;;
        --rate) RATE=${2:?--rate needs a value}; shift ;;
        --provider-id) PROVIDER_ID=${2:?--provider-id needs a value}; shift ;;
        --timeout) NODE_TIMEOUT=${2:?--timeout needs seconds}; shift ;;
        *) die "unknown option for node up: $1" ;;
        esac
        shift
    done
    if ((WARM)); then
        local key=workload-type value=$POOL
        if [[ $POOL == *=* ]]; then key=${POOL%%=*} value=${POOL#*=}; fi
        LABELS+=("$key=$value")
        TAINTS+=("$key=$value:NoSchedule")
    fi
    local t
    for t in "${TAINTS[@]}"; do
        [[ $t =~ ^[^=]+=[^:]*:(NoSchedule|PreferNoSchedule|NoExecute)$ ]] || die "bad taint '$t' (K=V:EFFECT)"
    done
    for t in "${LABELS[@]}"; do [[ $t == ?*=* ]] || die "bad label '$t' (K=V)"; done
}

do_up() {
    local up_start=$SECONDS
    if [[ -d $NODE_DIR ]]; then
        if kubelet_pid >/dev/null && containerd_pid >/dev/null && node_ready; then
            log "node $NAME is already up"
            return 0
        fi
        log "found a stale node $NAME: taking it down first"
        do_down
    fi
    if [[ -d /sys/fs/cgroup/pids/$CGROUP ]]; then
        die "cgroup /$CGROUP exists already: a node named $NAME runs from another cluster dir?"
    fi
    mkdir -p "$NODE_DIR/pids" "$NODE_LOGS"
    ln -sfn "$NODE_DIR" "$NODES_DIR/$NAME"
    host_lock
    [[ -n $(host_nodes) ]] || snapshot_host
    INDEX=$(allocate_index)
    host_unlock
    BRIDGE=wpbr$INDEX SUBNET=10.244.$INDEX.0/24 NODE_IP=10.244.$INDEX.1 CNI_NET=warmpool-br$INDEX
    HEALTHZ_PORT=$(free_ports 1)
    cat >"$NODE_DIR/node.env" <<EOF
INDEX=$INDEX
BRIDGE=$BRIDGE
SUBNET=$SUBNET
NODE_IP=$NODE_IP
CNI_NET=$CNI_NET
HEALTHZ_PORT=$HEALTHZ_PORT
EOF
    # Anything failing from here on takes the half-made node down again (logs are kept).
    trap 'log "node up $NAME failed; taking it down (logs kept in $NODE_LOGS)"; do_down' EXIT
    log "node $NAME: bridge $BRIDGE, pods $SUBNET, cgroup /$CGROUP, registry $WARMPOOL_REGISTRY at $RATE"
    make_bridge
    route_api_server
    make_cgroups
    gen_node_cert
    start_proxy
    echo "PROXY_PORT=$PROXY_PORT" >>"$NODE_DIR/node.env"
    write_containerd_config
    start_containerd
    write_kubelet_config
    start_kubelet
    wait_ready
    trap - EXIT
    log "node $NAME up in $((SECONDS - up_start))s (labels: ${LABELS[*]}; taints: ${TAINTS[*]:-none})"
}

cmd_up() {
    (($#)) || die "usage: node up NAME [--warm] [...]"
    node_vars "$1"
    shift
    parse_up_args "$@"
    exec 3>&1 1>&2
    prerequisites
    control_plane_ok || die "the control plane of $CLUSTER_DIR is not up (run: tests/cluster/cluster.sh up)"
    "$SCRIPT_DIR/cluster.sh" build kubelet
    local line
    while IFS= read -r line; do
        [[ $line == WARMPOOL_*=* ]] && export "${line?}"
    done < <("$SCRIPT_DIR/registry.sh" up)
    [[ -n ${WARMPOOL_REGISTRY:-} ]] || die "registry up printed no address"
    mkdir -p "$NODES_DIR"
    with_lock "$NODE_LOCK" do_up
    echo "$NAME" >&3
}

# ---- down -----------------------------------------------------------------------------------

# Every process in the node's cgroup tree (its pods' containers and sandboxes).
cgroup_pids() {
    local m
    while read -r m; do
        [[ -d $m/$CGROUP ]] || continue
        find "$m/$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null || true
    done < <(cgroup_mounts)
}

# containerd's shims of this node: they name its socket on their command line.
shim_pids() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}
        pid=${pid%/cmdline}
        if { tr "\\0" "\\n" <"$f"; } 2>/dev/null | grep -qxF -- "$SOCK"; then
            [[ $({ tr "\\0" " " <"$f"; } 2>/dev/null) == *containerd-shim* ]] && echo "$pid"
        fi
    done
}

kill_pods() {
    local i pids
    for i in $(seq 50); do
        mapfile -t pids < <(cgroup_pids | sort -u)
        ((${#pids[@]})) || break
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.1
    done
    mapfile -t pids < <(shim_pids)
    if ((${#pids[@]})); then
        kill -KILL "${pids[@]}" 2>/dev/null || true
        for i in $(seq 50); do
            mapfile -t pids < <(shim_pids)
            ((${#pids[@]})) || break
            sleep 0.1
        done
    fi
}

unmount_under() {
    local dir=$1 m i
    for i in 1 2 3; do
        local mounts=()
        mapfile -t mounts < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-)
        ((${#mounts[@]})) || return 0
        for m in "${mounts[@]}"; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done
    done
}

remove_cgroups() {
    local m i
    while read -r m; do
        [[ -d $m/$CGROUP ]] || continue
        for i in $(seq 20); do
            find "$m/$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $m/$CGROUP ]] || break
            sleep 0.1
        done
        [[ -d $m/$CGROUP ]] && log "could not remove cgroup $m/$CGROUP"
    done < <(cgroup_mounts)
    return 0
}

# Per-node leftovers in the shared fixed paths: container log links into our pod-logs dir, CNI
# results of our network.
remove_node_leftovers() {
    local l
    if [[ -d /var/log/containers ]]; then
        for l in /var/log/containers/*; do
            [[ -L $l && $(readlink "$l") == "$NODE_DIR/"* ]] && rm -f "$l"
        done
    fi
    if [[ -n ${CNI_NET:-} && -d /var/lib/cni/results ]]; then
        rm -f /var/lib/cni/results/"$CNI_NET"-*
    fi
    # runc's state of our containers (the shims were killed, so nobody ran `runc delete`).
    local task
    for task in "$NODE_DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/; do
        [[ -d $task ]] || continue
        task=${task%/}
        rm -rf "/run/containerd/runc/$(basename "$(dirname "$task")")/$(basename "$task")"
    done
    return 0
}

do_down() {
    trap - EXIT
    load_node_env || true
    local pid
    if pid=$(kubelet_pid); then
        log "stopping the kubelet of $NAME (pid $pid)"
        stop_pid "$pid" "kubelet of $NAME"
    fi
    rm -f "$NODE_DIR/pids/kubelet.pid"
    # No node lifecycle controller here: the Node goes with its kubelet, and so do its pods
    # (their controllers make new ones elsewhere at once).
    if control_plane_ok; then
        kubectl_admin delete node "$NAME" --ignore-not-found --wait=false >/dev/null 2>&1 || true
        kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$NAME" \
            --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    fi
    kill_pods
    stop_daemon "$NODE_DIR/pids/containerd.pid" containerd "containerd of $NAME"
    stop_daemon "$NODE_DIR/pids/proxy.pid" "python3*" "proxy of $NAME" 5
    # Anything the shims were still holding, then the mounts (rootfs overlays, netns, volumes).
    kill_pods
    unmount_under "$NODE_DIR"
    if [[ -n ${BRIDGE:-} ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
        local veth
        while read -r veth; do
            if [[ -n $veth ]]; then ip link del "$veth" 2>/dev/null || true; fi
        done < <(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1)
        ip link del "$BRIDGE" 2>/dev/null || true
    fi
    if [[ -n ${BRIDGE:-} ]]; then unroute_api_server; fi
    remove_cgroups
    remove_node_leftovers
    rm -rf "$NODE_DIR"
    rm -f "$NODES_DIR/$NAME"
    host_lock
    if [[ -n ${INDEX:-} ]]; then rm -f "$HOST_DIR/index-$INDEX"; fi
    # Entries of nodes whose dir is gone (a crashed run) do not keep the host state held.
    local f
    for f in $(host_nodes); do [[ -d $(<"$f") ]] || rm -f "$f"; done
    if [[ -d $HOST_DIR && -z $(host_nodes) ]]; then
        log "last node down: putting the host back as it was"
        restore_host
    fi
    host_unlock
    log "node $NAME down"
}

cmd_down() {
    (($#)) || die "usage: node down NAME"
    node_vars "$1"
    exec 1>&2
    mkdir -p "$NODES_DIR"
    with_lock "$NODE_LOCK" do_down
}

cmd_down_all() {
    local d
    [[ -d $NODES_DIR ]] || return 0
    for d in "$NODES_DIR"/*/; do
        [[ -d $d ]] || continue
        (cmd_down "$(basename "$d")") || log "node down $(basename "$d") failed"
    done
    # Links whose node root is gone already (a crashed run).
    for d in "$NODES_DIR"/*; do
        if [[ -L $d && ! -e $d ]]; then rm -f "$d"; fi
    done
    rmdir "$NODES_DIR" 2>/dev/null || true
}

# ---- the rest -------------------------------------------------------------------------------

do_restart_kubelet() {
    load_node_env || die "node $NAME is not up"
    local pid old_beat
    old_beat=$(ready_condition | cut -s -d' ' -f2)
    if pid=$(kubelet_pid); then
        log "stopping the kubelet of $NAME (pid $pid); containerd and the pods keep running"
        stop_pid "$pid" "kubelet of $NAME"
    fi
    # The Node object stays: this is a kubelet restart, not a node leaving.
    local args
    [[ -s $NODE_DIR/kubelet.args ]] || die "no saved kubelet arguments for $NAME"
    mapfile -t args <"$NODE_DIR/kubelet.args"
    start_daemon "$NODE_DIR/pids/kubelet.pid" "$NODE_LOGS/kubelet.log" "${args[@]}"
    wait_ready "$old_beat"
}

cmd_restart_kubelet() {
    (($#)) || die "usage: node restart-kubelet NAME"
    node_vars "$1"
    exec 1>&2
    with_lock "$NODE_LOCK" do_restart_kubelet
}

cmd_list() {
    local d
    [[ -d $NODES_DIR ]] || return 0
    for d in "$NODES_DIR"/*/; do [[ -d $d ]] && basename "$d"; done
    return 0
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) shift; cmd_down "$@" ;;
down-all) cmd_down_all ;;
restart-kubelet) shift; cmd_restart_kubelet "$@" ;;
list) cmd_list ;;
socket)
    node_vars "${2:?usage: node socket NAME}"
    [[ -S $SOCK ]] || die "node $NAME is not up"
    echo "$SOCK"
    ;;
prerequisites) prerequisites ;;
*)
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
