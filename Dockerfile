# osb-gateway container image.
#   docker build -t osb-gateway .
#   docker run -p 8443:8443 -v /etc/osb-gateway:/etc/osb-gateway:ro \
#       -v osb-data:/var/lib/osb-gateway osb-gateway
# The config volume holds gateway.toml, the registry and TLS files; the
# registry's env: secrets come from the container environment.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies are downloaded first, so a source edit does not download
# them again (they are still compiled in the next step). Cargo wants every
# target Cargo.toml names to exist, hence the stubs.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/osb-gateway benches examples config \
    && echo 'fn main() {}' > src/bin/osb-gateway/main.rs && touch src/lib.rs \
    && touch benches/routing.rs benches/capture.rs \
    && touch config/gateway.dev.toml config/registry.dev.toml \
    && cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin osb-gateway \
    && strip target/release/osb-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/osb-gateway --create-home osb
COPY --from=build /src/target/release/osb-gateway /usr/local/bin/osb-gateway
COPY config/ /usr/share/osb-gateway/examples/
USER osb
VOLUME ["/etc/osb-gateway", "/var/lib/osb-gateway"]
EXPOSE 8443
ENTRYPOINT ["osb-gateway"]
CMD ["serve", "--config", "/etc/osb-gateway/gateway.toml"]
