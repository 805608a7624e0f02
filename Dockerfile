# syntax=docker/dockerfile:1
#
# The warmpool image: ONE statically linked `warmpool` binary (webhook, reconciler, mutate, certs,
# and the no-op that the image cache runs inside every cached image) on distroless/static, as
# a non-root user. "Statically linked" matters: the image-cache DaemonSet copies this binary into
# images that may have no libc at all (distroless, scratch), and it must run there.
#
#   docker build -t ghcr.io/warmpool/warmpool:0.1.0 .
#
# The build command below is the one tests/static_binary.rs runs and checks (no PT_INTERP, no
# DT_NEEDED, runs with an empty environment in an empty root), so the test proves what ships.
# glibc with crt-static rather than musl: the musl target cannot be installed everywhere we
# build, and warmpool resolves no host names through NSS (the API server is reached by the
# KUBERNETES_SERVICE_HOST address, listeners bind IP addresses).
#
# The binary is x86_64, so the image is linux/amd64.

ARG RUST_VERSION=1.95

FROM --platform=linux/amd64 docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin warmpool \
 && cp target/x86_64-unknown-linux-gnu/release/warmpool /warmpool \
 && if readelf -lW /warmpool | grep -q 'program interpreter'; then \
        echo 'error: /warmpool is dynamically linked' >&2; exit 1; \
    fi \
 && /warmpool --version

FROM --platform=linux/amd64 gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="warmpool" \
      org.opencontainers.image.description="Warm nodes and pre-pulled images for new Kubernetes tenants" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /warmpool /warmpool
# distroless "nonroot" (numeric, so runAsNonRoot can verify it).
USER 65532:65532
ENTRYPOINT ["/warmpool"]
