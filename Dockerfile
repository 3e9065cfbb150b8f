# osb-gateway container image (needs BuildKit: Docker 23+ uses it by
# default; on older Docker set DOCKER_BUILDKIT=1).
#
#   docker build -t osb-gateway .
#
# The demo (gateway and sample broker in one process, plain HTTP):
#   docker run --rm -p 8080:8080 -p 8081:8081 osb-gateway
#
# Production: the configuration read-only, the registry and captures on a
# writable volume (the admin API writes the registry back), secrets from
# the environment:
#   docker run -p 8443:8443 \
#       -v /etc/osb-gateway:/etc/osb-gateway:ro -v osb-data:/var/lib/osb-gateway \
#       -e OSB_GATEWAY_CONFIG=/etc/osb-gateway/gateway.toml -e OSB_GATEWAY_SECRET_KEY \
#       osb-gateway serve
# with registry.file = "/var/lib/osb-gateway/registry.toml" in gateway.toml
# (see deploy/kubernetes/ for the same on Kubernetes).
#
# Base images are pinned; bump them deliberately (and pin by digest where
# your registry policy asks for it: `--build-arg RUNTIME_IMAGE=debian@sha256:...`).
ARG RUST_IMAGE=rust:1.95.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:12.12-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# NB: dependency caching is BuildKit cache mounts: the crates.io download
# cache and the target directory survive between builds, so after a
# source edit only osb-gateway itself is compiled again (dependencies
# stay compiled, not only downloaded). The binary is copied out of the
# cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin osb-gateway \
    && cp target/release/osb-gateway /osb-gateway \
    && strip /osb-gateway

FROM ${RUNTIME_IMAGE}
# ca-certificates: the system roots brokers' certificates are checked
# against. Nothing else: the health check is the binary itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/osb-gateway --create-home osb
COPY --from=build /osb-gateway /usr/local/bin/osb-gateway
COPY config/ /usr/share/osb-gateway/examples/
USER 10001:10001
# The writable place: the registry, the capture store and its spool.
WORKDIR /var/lib/osb-gateway
VOLUME ["/var/lib/osb-gateway"]
# 8443 platform listener (TLS), 9443 admin listener (TLS); the demo uses
# 8080 and 8081.
EXPOSE 8443 9443 8080 8081
# `health` asks the admin listener's /readyz: the address, TLS and the
# certificate to trust come from OSB_GATEWAY_CONFIG when set, else the
# demo's http://127.0.0.1:8081.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["osb-gateway", "health", "--timeout", "4s"]
ENTRYPOINT ["osb-gateway"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:8081"]
