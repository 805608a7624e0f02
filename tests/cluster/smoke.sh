#!/usr/bin/env bash
# Smoke test of the local control plane (and a worked example of fake nodes):
#   - /readyz answers
#   - a fake Node (capacity + Ready condition set through the status subresource) gets a Pod
#     bound to it by the real scheduler
#   - a Deployment gets a ReplicaSet and Pods from the controller manager, scheduled too
#   - deleting the Deployment lets the garbage collector remove its ReplicaSet and Pods
#     (owner references), which needs the fake-kubelet part for bound pods (see below)
# Leaves the cluster up; removes what it created. Usage: tests/cluster/smoke.sh
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBECONFIG=$("$SCRIPT_DIR/cluster.sh" up)
export KUBECONFIG
KUBECTL=$("$SCRIPT_DIR/cluster.sh" kubectl-path)
k() { "$KUBECTL" "$@"; }

NS=smoke-$$
NODE=smoke-node-$$
step() { printf '%s\n' "smoke: $*" >&2; }
fail() { printf '%s\n' "smoke: FAILED: $*" >&2; exit 1; }

# until SECONDS CMD... — poll CMD until it succeeds
until_ok() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

cleanup() {
    k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
    k delete node "$NODE" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

[[ $(k get --raw /readyz) == ok ]] || fail "/readyz"
step "/readyz ok"

k create namespace "$NS" >/dev/null
# Pods are refused until the service-account controller has made the namespace's `default` SA.
until_ok 30 k -n "$NS" get serviceaccount default >/dev/null 2>&1 || fail "no default ServiceAccount in $NS"

# A fake node: the Node object, then status (capacity, allocatable, Ready) via the subresource.
k create -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE
  labels: {kubernetes.io/hostname: $NODE, warmpool.test/fake: "true"}
EOF
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
k patch node "$NODE" --subresource=status --type=merge -p "$(cat <<EOF
{"status": {
  "capacity":    {"cpu": "4", "memory": "16Gi", "pods": "110"},
  "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "fake node", "lastHeartbeatTime": "$now", "lastTransitionTime": "$now"}]
}}
EOF
)" >/dev/null
step "fake node $NODE ready"

pod_node() { k -n "$NS" get pod "$1" -o 'jsonpath={.spec.nodeName}'; }
k -n "$NS" create -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: single}
spec:
  nodeSelector: {kubernetes.io/hostname: $NODE}
  containers: [{name: c, image: busybox, resources: {requests: {cpu: 100m, memory: 64Mi}}}]
EOF
until_ok 30 test -n "$(pod_node single)" || fail "pod not scheduled: $(k -n "$NS" get pod single -o yaml)"
[[ $(pod_node single) == "$NODE" ]] || fail "pod bound to $(pod_node single), wanted $NODE"
step "pod bound to $NODE by the scheduler"

k -n "$NS" create deployment web --image=busybox --replicas=2 >/dev/null
count() { k -n "$NS" get "$1" -l app=web -o name | wc -l; }
bound() { k -n "$NS" get pods -l app=web -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c "^$NODE$"; }
until_ok 60 test "$(count replicaset)" -eq 1 || fail "no ReplicaSet for the Deployment"
until_ok 60 test "$(bound)" -eq 2 || fail "Deployment pods not created/bound: $(k -n "$NS" get pods -o wide)"
step "Deployment -> ReplicaSet -> 2 pods bound to $NODE"

# Without a kubelet, a bound pod that is deleted keeps its deletionTimestamp until the kubelet
# would finish it; play that part: force-delete (grace period 0) terminating pods.
fake_kubelet_reap() {
    local p
    for p in $(k -n "$NS" get pods -o 'jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name}{" "}{end}'); do
        k -n "$NS" delete pod "$p" --grace-period=0 --force >/dev/null 2>&1 || true
    done
}
k -n "$NS" delete deployment web --wait=false >/dev/null
gone() { fake_kubelet_reap; [[ $(count replicaset) -eq 0 && $(count pod) -eq 0 ]]; }
until_ok 60 gone || fail "garbage collector left: $(k -n "$NS" get rs,pods -o wide)"
step "garbage collector removed the ReplicaSet and its pods"

echo "smoke: all ok"
