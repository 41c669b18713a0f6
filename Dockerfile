# syntax=docker/dockerfile:1
# coworking-analytics: one static-ish Rust binary on Debian slim.
#
# Build:  docker build -t coworking-analytics:dev .
# Run:    docker run --rm -p 5153:5153 -e DATABASE_URL=postgres://... coworking-analytics:dev
# The base images are pinned by tag; buildspec.yml builds this file unchanged, and scripts/container-check builds
# and runs it locally with buildah/podman.

# --- build stage -----------------------------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS build
# pq-sys builds libpq from source (feature "bundled") and links OpenSSL through pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config=1.8.* libssl-dev=3.* make=4.* \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies in their own layer: build them against placeholder sources, so that a change under src/ does not
# rebuild the AWS SDK. Only Cargo.toml and Cargo.lock invalidate this layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src scripts/bench \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > scripts/bench/refresh.rs \
 && cargo build --release --locked --no-default-features --bin coworking-analytics \
 && rm -rf src scripts

COPY src ./src
COPY migrations ./migrations
COPY db ./db
COPY scripts/bench/refresh.rs ./scripts/bench/refresh.rs
# The placeholder build left fresher artefacts for the crate itself; touching the sources forces its rebuild.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --no-default-features --bin coworking-analytics \
 && cp target/release/coworking-analytics /usr/local/bin/coworking-analytics

# --- runtime stage ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# libssl3: the bundled libpq's TLS; ca-certificates: TLS to RDS and to CloudWatch.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl3=3.* ca-certificates=2023* \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=build /usr/local/bin/coworking-analytics /usr/local/bin/coworking-analytics
# The service writes nothing to disk: logs go to stdout, state to PostgreSQL. It runs with a read-only root.
USER 10001:10001
ENV APP_PORT=5153 \
    LOG_LEVEL=info
EXPOSE 5153
# Kubernetes probes /health_check and /readiness_check; the image carries no curl, so no HEALTHCHECK here.
ENTRYPOINT ["/usr/local/bin/coworking-analytics"]
CMD ["serve"]
