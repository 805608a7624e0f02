#!/usr/bin/env bash
# The local registry of the real-node tests and the demo: the CNCF distribution registry
# (Debian's docker-registry) on a free 127.0.0.1 port, its storage under the cluster dir, with the
# images of images.sh pushed into it (skopeo, no Docker).
#
#   tests/cluster/cluster.sh registry up            start it if it is not running, push the images;
#                                                   prints the env lines below (stdout)
#   tests/cluster/cluster.sh registry env           the same lines, if it is up
#   tests/cluster/cluster.sh registry address       127.0.0.1:PORT
#   tests/cluster/cluster.sh registry push-binary FILE
#                                                   an image holding only FILE (images.sh
#                                                   binary-image), pushed; prints its full name
#   tests/cluster/cluster.sh registry down          stop it, remove its storage (idempotent)
#
# `registry up` / `env` print, one per line:
#   WARMPOOL_REGISTRY=127.0.0.1:PORT
#   WARMPOOL_IMAGE_DATASERVICE=127.0.0.1:PORT/workshop-images/dataservice:v1.1
#   WARMPOOL_IMAGE_FRONTGATESERVICE=127.0.0.1:PORT/workshop-images/frontgateservice:v1
#   WARMPOOL_IMAGE_MYSQL=127.0.0.1:PORT/dockerhub-images/library/mysql:9
#   WARMPOOL_IMAGE_PAUSE=127.0.0.1:PORT/warmpool-local/pause:1
#   WARMPOOL_IMAGE_HTTP_PORT=8080        (what the CargoCATs look-alikes serve GET / on)
#   WARMPOOL_PRIVATE_REGISTRY=127.0.0.1:PORT2
#   WARMPOOL_PRIVATE_IMAGE=127.0.0.1:PORT2/tenant-a/app:1
#   WARMPOOL_PRIVATE_USER=tenant-a
#   WARMPOOL_PRIVATE_PASSWORD=…
# Nodes do not pull from it directly: each node has a rate-limiting proxy in front of it (node.sh).
#
# A second registry, the private one, requires authentication (htpasswd, HTTP Basic: what the
# kubelet answers with a pod's imagePullSecrets) for every pull and push; it holds one image,
# tenant-a's app (the pause image under another name). Nodes pull from it directly (node.sh). It
# proves that the image cache lends no credentials: a tenant without them cannot get it through
# warmpool.
set -euo pipefail

PROG=registry.sh
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REG_DIR=$CLUSTER_DIR/registry
PIDFILE=$REG_DIR/registry.pid
PRIVATE_PIDFILE=$REG_DIR/private.pid
PRIVATE_USER=tenant-a
PRIVATE_PASSWORD=tenant-a-secret
# bcrypt (the only scheme the registry's htpasswd takes) of PRIVATE_PASSWORD, made once with
# python3 -c "import crypt; print(crypt.crypt('tenant-a-secret', crypt.mksalt(crypt.METHOD_BLOWFISH)))"
# shellcheck disable=SC2016 # a bcrypt hash: its dollars are literal
PRIVATE_HTPASSWD='$2b$12$8J1MGaSeiBe3lRMd1ZYsjOeejJXchRng99gJ7U.gFZIbkqzHolU2O'
PRIVATE_IMAGE=tenant-a/app:1
LOCK=$(dirname "$CLUSTER_DIR")/.$(basename "$CLUSTER_DIR").registry.lock

registry_pid() { pid_of "$PIDFILE" docker-registry; }
private_pid() { pid_of "$PRIVATE_PIDFILE" docker-registry; }

load_env() {
    [[ -f $REG_DIR/registry.env ]] || return 1
    # shellcheck disable=SC1091
    source "$REG_DIR/registry.env"
    registry_pid >/dev/null && private_pid >/dev/null
}

v2_ok() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/v2/" 2>/dev/null) == 200 ]]; }
# The private registry: 401 to anyone without its credentials, 200 with them.
v2_private_ok() {
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$1/v2/" 2>/dev/null) == 401 ]] &&
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -u "$PRIVATE_USER:$PRIVATE_PASSWORD" "http://$1/v2/" 2>/dev/null) == 200 ]]
}

print_env() {
    local a=$REGISTRY_ADDR
    echo "WARMPOOL_REGISTRY=$a"
    echo "WARMPOOL_IMAGE_DATASERVICE=$a/workshop-images/dataservice:v1.1"
    echo "WARMPOOL_IMAGE_FRONTGATESERVICE=$a/workshop-images/frontgateservice:v1"
    echo "WARMPOOL_IMAGE_MYSQL=$a/dockerhub-images/library/mysql:9"
    echo "WARMPOOL_IMAGE_PAUSE=$a/warmpool-local/pause:1"
    echo "WARMPOOL_IMAGE_HTTP_PORT=8080"
    echo "WARMPOOL_PRIVATE_REGISTRY=$PRIVATE_ADDR"
    echo "WARMPOOL_PRIVATE_IMAGE=$PRIVATE_ADDR/$PRIVATE_IMAGE"
    echo "WARMPOOL_PRIVATE_USER=$PRIVATE_USER"
    echo "WARMPOOL_PRIVATE_PASSWORD=$PRIVATE_PASSWORD"
}

push() {
    local layout=$1 name=$2
    skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
        "oci:$layout:${name##*:}" "docker://$REGISTRY_ADDR/$name" >&2 \
        || die "skopeo could not push $name to $REGISTRY_ADDR"
}

# start_one NAME PIDFILE CHECK [AUTH-YAML]: a registry on a free port, its storage under
# $REG_DIR/NAME, up when CHECK ADDRESS succeeds; sets ADDR.
start_one() {
    local name=$1 pidfile=$2 check=$3 auth=${4:-} port attempt i
    mkdir -p "$REG_DIR/$name"
    for attempt in 1 2 3; do
        port=$(free_ports 1)
        cat >"$REG_DIR/$name.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REG_DIR/$name
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: warmpool-local-$RANDOM$RANDOM
$auth
EOF
        start_daemon "$pidfile" "$REG_DIR/$name.log" /usr/bin/docker-registry serve "$REG_DIR/$name.yml"
        for i in $(seq 100); do
            "$check" "127.0.0.1:$port" && break
            pid_of "$pidfile" docker-registry >/dev/null || break
            sleep 0.1
        done
        if "$check" "127.0.0.1:$port"; then
            ADDR=127.0.0.1:$port
            return 0
        fi
        log "$name registry did not come up on 127.0.0.1:$port (attempt $attempt): $(tail -n 3 "$REG_DIR/$name.log")"
        stop_daemon "$pidfile" docker-registry "$name registry"
    done
    die "the $name registry would not start (log: $REG_DIR/$name.log)"
}

start_registry() {
    start_one data "$PIDFILE" v2_ok
    REGISTRY_ADDR=$ADDR
    printf '%s:%s\n' "$PRIVATE_USER" "$PRIVATE_HTPASSWD" >"$REG_DIR/private.htpasswd"
    start_one private "$PRIVATE_PIDFILE" v2_private_ok "auth:
  htpasswd:
    realm: warmpool-private
    path: $REG_DIR/private.htpasswd"
    PRIVATE_ADDR=$ADDR
    printf 'REGISTRY_ADDR=%s\nPRIVATE_ADDR=%s\n' "$REGISTRY_ADDR" "$PRIVATE_ADDR" >"$REG_DIR/registry.env"
}

do_up() {
    if load_env && v2_ok "$REGISTRY_ADDR" && v2_private_ok "$PRIVATE_ADDR" && [[ -f $REG_DIR/.pushed ]]; then
        return 0
    fi
    local start=$SECONDS images name layout
    prerequisites
    images=$("$SCRIPT_DIR/images.sh" build)
    log "images: $images"
    stop_daemon "$PIDFILE" docker-registry registry
    stop_daemon "$PRIVATE_PIDFILE" docker-registry "private registry"
    rm -rf "$REG_DIR"
    start_registry
    # shellcheck disable=SC1091
    source "$REG_DIR/registry.env"
    while read -r name layout; do
        push "$layout" "$name"
        if [[ $name == warmpool-local/pause:* ]]; then
            skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
                --dest-creds "$PRIVATE_USER:$PRIVATE_PASSWORD" \
                "oci:$layout:${name##*:}" "docker://$PRIVATE_ADDR/$PRIVATE_IMAGE" >&2 \
                || die "skopeo could not push $PRIVATE_IMAGE to the private registry $PRIVATE_ADDR"
        fi
    done < <("$SCRIPT_DIR/images.sh" list)
    touch "$REG_DIR/.pushed"
    log "registry up on $REGISTRY_ADDR with the test images ($((SECONDS - start))s)"
}

cmd_up() {
    with_lock "$LOCK" do_up
    load_env || die "registry is not up"
    print_env
}

cmd_env() {
    load_env || die "registry is not up (run: tests/cluster/cluster.sh registry up)"
    print_env
}

cmd_address() {
    load_env || die "registry is not up (run: tests/cluster/cluster.sh registry up)"
    echo "$REGISTRY_ADDR"
}

cmd_push_binary() {
    local file=$1 out name layout
    load_env || die "registry is not up (run: tests/cluster/cluster.sh registry up)"
    out=$("$SCRIPT_DIR/images.sh" binary-image "$file")
    read -r name layout <<<"$out"
    push "$layout" "$name"
    echo "$REGISTRY_ADDR/$name"
}

do_down() {
    stop_daemon "$PIDFILE" docker-registry registry
    stop_daemon "$PRIVATE_PIDFILE" docker-registry "private registry"
    rm -rf "$REG_DIR"
}

case ${1:-} in
up) cmd_up ;;
env) cmd_env ;;
address) cmd_address ;;
push-binary)
    [[ -n ${2:-} ]] || die "usage: $0 push-binary FILE"
    cmd_push_binary "$2"
    ;;
down) with_lock "$LOCK" do_down ;;
prerequisites) prerequisites ;;
*)
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
