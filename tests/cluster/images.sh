#!/usr/bin/env bash
# The container images of the real-node tests and the demo, built WITHOUT Docker (umoci), as OCI
# layouts cached outside the repo; registry.sh pushes them into each run's local registry.
#
#   tests/cluster/images.sh build            build the CargoCATs look-alikes and the pause image
#                                            once; prints the cache dir (one OCI layout per image)
#   tests/cluster/images.sh list             "REPOSITORY:TAG LAYOUT-DIR" per image (after build)
#   tests/cluster/images.sh binary-image FILE [USER]
#                                            an image holding only FILE as /NAME (its entrypoint),
#                                            cached by FILE's sha256; prints "REPO:TAG LAYOUT-DIR"
#
# The CargoCATs look-alikes (named as the real ones, under the local registry):
#   workshop-images/dataservice:v1.1        100 MB
#   workshop-images/frontgateservice:v1      60 MB
#   dockerhub-images/library/mysql:9        150 MB
# each = a busybox-static layer (busybox `httpd -f -p 8080` as the entrypoint: GET / answers 200,
# for an httpGet readiness probe) + one layer of random bytes of the size above (random, so it
# neither compresses nor deduplicates: a pull costs its size). And warmpool-local/pause:1: a static
# C program (images/pause.c) that sleeps and exits 0 on SIGTERM, user 65535 — containerd's
# sandbox image and the placeholders' image.
#
# Cached in $WARMPOOL_CACHE/images-<hash>/ (default ~/.cache/warmpool), the hash over this file,
# pause.c and the versions of busybox-static, umoci and gcc: rebuilt only when one changes.
# Needs umoci, busybox-static and gcc (node.sh installs them).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${WARMPOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/warmpool}

# name (registry path) : tag : payload size in MB (10^6 bytes)
CARGOCATS_IMAGES=(
    "workshop-images/dataservice:v1.1:100"
    "workshop-images/frontgateservice:v1:60"
    "dockerhub-images/library/mysql:9:150"
)
PAUSE_IMAGE=warmpool-local/pause:1
HTTP_PORT=8080

log() { printf '%s\n' "images.sh: $*" >&2; }
die() { printf '%s\n' "images.sh: error: $*" >&2; exit 1; }

need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "'$t' is missing (tests/cluster/node.sh prerequisites installs it)"
    done
}

inputs_hash() {
    {
        cat "${BASH_SOURCE[0]}" "$SCRIPT_DIR/images/pause.c"
        dpkg-query -W -f='${Version}\n' busybox-static umoci gcc 2>/dev/null || true
    } | sha256sum | cut -c1-16
}

IMAGES_DIR=$CACHE_ROOT/images-$(inputs_hash)

# layout_dir NAME:TAG — one OCI layout per image, named after its repository and tag.
layout_dir() { echo "$IMAGES_DIR/$(tr '/:' '__' <<<"$1")"; }

# new_image LAYOUT TAG — an empty image (linux/amd64, no layers) in a fresh layout.
new_image() {
    rm -rf "$1"
    umoci init --layout "$1"
    umoci new --image "$1:$2"
}

# A rootfs with busybox-static and the applet links a service needs, and a page to serve.
busybox_rootfs() {
    local dir=$1 title=$2 applet
    mkdir -p "$dir/bin" "$dir/www" "$dir/tmp" "$dir/etc"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in sh httpd sleep cat ls echo wget true false env; do
        ln -sf busybox "$dir/bin/$applet"
    done
    printf '<h1>%s</h1>\n<p>warmpool test image (busybox httpd)</p>\n' "$title" >"$dir/www/index.html"
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/etc/group"
    chmod 1777 "$dir/tmp"
}

build_cargocats_image() {
    local spec=$1 name tag size layout work
    size=${spec##*:}
    spec=${spec%:*}
    tag=${spec##*:}
    name=${spec%:*}
    layout=$(layout_dir "$name:$tag")
    work=$(mktemp -d "$IMAGES_DIR/.work.XXXXXX")
    log "building $name:$tag ($size MB of random bytes + busybox httpd)…"
    busybox_rootfs "$work/rootfs" "$name:$tag"
    head -c "$((size * 1000000))" /dev/urandom >"$work/payload"
    new_image "$layout" "$tag"
    umoci insert --image "$layout:$tag" "$work/rootfs" /
    umoci insert --image "$layout:$tag" "$work/payload" /data/payload.bin
    umoci config --image "$layout:$tag" \
        --config.entrypoint /bin/busybox \
        --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd "$HTTP_PORT" \
        --config.cmd -h --config.cmd /www \
        --config.exposedports "$HTTP_PORT/tcp" \
        --config.workingdir / \
        --config.label "org.opencontainers.image.title=$name" \
        --config.label "org.opencontainers.image.description=warmpool test look-alike, $size MB"
    umoci gc --layout "$layout"
    rm -rf "$work"
}

build_pause_image() {
    local layout work tag=${PAUSE_IMAGE##*:}
    layout=$(layout_dir "$PAUSE_IMAGE")
    work=$(mktemp -d "$IMAGES_DIR/.work.XXXXXX")
    log "building $PAUSE_IMAGE (static C, exits on SIGTERM)…"
    mkdir -p "$work/rootfs"
    gcc -static -O2 -s -o "$work/rootfs/pause" "$SCRIPT_DIR/images/pause.c"
    new_image "$layout" "$tag"
    umoci insert --image "$layout:$tag" "$work/rootfs" /
    umoci config --image "$layout:$tag" --config.entrypoint /pause --config.user 65535:65535
    umoci gc --layout "$layout"
    rm -rf "$work"
}

do_build() {
    [[ -f $IMAGES_DIR/.done ]] && return 0
    need umoci gcc
    [[ -x /bin/busybox ]] || die "/bin/busybox (busybox-static) is missing"
    local ldd_says
    ldd_says=$(LC_ALL=C ldd /bin/busybox 2>&1 || true)
    if [[ $ldd_says != *"not a dynamic"* ]]; then
        die "/bin/busybox is not statically linked (install busybox-static)"
    fi
    local start=$SECONDS spec
    mkdir -p "$IMAGES_DIR"
    rm -rf "$IMAGES_DIR"/.work.*
    log "building the test images into $IMAGES_DIR (once; ~300 MB)"
    for spec in "${CARGOCATS_IMAGES[@]}"; do build_cargocats_image "$spec"; done
    build_pause_image
    touch "$IMAGES_DIR/.done"
    # Builds for older inputs are of no further use.
    local old
    for old in "$CACHE_ROOT"/images-*; do
        [[ $old == "$IMAGES_DIR" ]] || rm -rf "$old"
    done
    log "images built in $((SECONDS - start))s"
}

with_lock() {
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.images.lock"
    flock 9
    "$@"
    exec 9>&-
}

cmd_list() {
    [[ -f $IMAGES_DIR/.done ]] || die "images not built: run '$0 build'"
    local spec
    for spec in "${CARGOCATS_IMAGES[@]}"; do
        spec=${spec%:*}
        echo "$spec $(layout_dir "$spec")"
    done
    echo "$PAUSE_IMAGE $(layout_dir "$PAUSE_IMAGE")"
}

# binary-image FILE [USER]: warmpool-local/<basename>:<sha12> with FILE as /<basename>.
do_binary_image() {
    local file=$1 user=${2:-65532:65532} base sha dir tag layout work
    [[ -f $file ]] || die "no such file: $file"
    need umoci
    base=$(basename "$file")
    sha=$(sha256sum "$file" | cut -c1-12)
    tag=$sha
    dir=$CACHE_ROOT/binary-images
    layout=$dir/$base-$sha
    if [[ ! -f $layout/.done ]]; then
        mkdir -p "$dir"
        # Older builds of the same binary are of no further use.
        rm -rf "${dir:?}/$base"-*
        work=$(mktemp -d "$dir/.work.XXXXXX")
        log "building image warmpool-local/$base:$tag from $file"
        mkdir -p "$work/rootfs"
        cp "$file" "$work/rootfs/$base"
        chmod 755 "$work/rootfs/$base"
        new_image "$layout" "$tag"
        umoci insert --image "$layout:$tag" "$work/rootfs" /
        umoci config --image "$layout:$tag" --config.entrypoint "/$base" --config.user "$user"
        umoci gc --layout "$layout"
        rm -rf "$work"
        touch "$layout/.done"
    fi
    echo "warmpool-local/$base:$tag $layout"
}

case ${1:-} in
build)
    with_lock do_build
    echo "$IMAGES_DIR"
    ;;
list) cmd_list ;;
binary-image)
    shift
    (($#)) || die "usage: $0 binary-image FILE [USER]"
    with_lock do_binary_image "$@"
    ;;
*)
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
