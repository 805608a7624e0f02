# syntax=docker/dockerfile:1
#
# The warmpool image: ONE statically linked `warmpool` binary (webhook, reconciler, mutate, certs,
# and the no-op that the image cache runs inside every cached image) on distroless/static, as
# a non-root user. "Statically linked" matters: the image-cache DaemonSet copies this binary into
# images that may have no libc at all (distroless, scratch), and it must run there.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/warmpool/warmpool:0.1.0 --push .
#   docker build -t warmpool .          # the builder's own architecture only
#
# Both architectures are compiled on the builder's platform (no emulation): buildx's TARGETARCH
# picks the Rust target (amd64 -> x86_64-unknown-linux-gnu, arm64 -> aarch64-unknown-linux-gnu),
# and for the other architecture Debian's cross gcc links it. The chart's
# imageCache.architectures (default [amd64, arm64]) must list what the image is built for: the
# image cache runs this binary on every warm node it goes to.
#
# The build command below is the one tests/cli/static_binary.rs runs and checks for amd64 (no
# PT_INTERP, no DT_NEEDED, runs with an empty environment in an empty root), so the test proves
# what ships. glibc with crt-static rather than musl: the musl target cannot be installed
# everywhere we build, and warmpool resolves no host names through NSS (the API server is
# reached by the KUBERNETES_SERVICE_HOST address, listeners bind IP addresses).

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
ARG BUILDARCH
# The Rust target of TARGETARCH (in /target.env) and, when it is not the builder's, its linker.
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) RUST_TARGET=x86_64-unknown-linux-gnu; GNU=x86_64-linux-gnu; CROSS="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) RUST_TARGET=aarch64-unknown-linux-gnu; GNU=aarch64-linux-gnu; CROSS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "error: TARGETARCH=$TARGETARCH: the image is built for amd64 and arm64 only" >&2; exit 1 ;; \
    esac; \
    echo "RUST_TARGET=$RUST_TARGET" > /target.env; \
    rustup target add "$RUST_TARGET"; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $CROSS; \
      rm -rf /var/lib/apt/lists/*; \
      upper=$(echo "$RUST_TARGET" | tr 'a-z-' 'A-Z_'); lower=$(echo "$RUST_TARGET" | tr '-' '_'); \
      echo "export CARGO_TARGET_${upper}_LINKER=$GNU-gcc CC_${lower}=$GNU-gcc AR_${lower}=$GNU-ar" >> /target.env; \
    fi
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=warmpool-target-${TARGETARCH} \
    . /target.env \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target $RUST_TARGET --bin warmpool \
 && cp target/$RUST_TARGET/release/warmpool /warmpool \
 && if readelf -lW /warmpool | grep -q 'program interpreter'; then \
        echo 'error: /warmpool is dynamically linked' >&2; exit 1; \
    fi \
 && if [ "$TARGETARCH" = "$BUILDARCH" ]; then /warmpool --version; fi

# The target platform's distroless (a multi-arch image).
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="warmpool" \
      org.opencontainers.image.description="Warm nodes and pre-pulled images for new Kubernetes tenants" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /warmpool /warmpool
# distroless "nonroot" (numeric, so runAsNonRoot can verify it).
USER 65532:65532
ENTRYPOINT ["/warmpool"]
