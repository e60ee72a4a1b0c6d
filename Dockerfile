# syntax=docker/dockerfile:1
# One image with the `tally` binary: every service is a subcommand (`tally ingest`,
# `tally project`, `tally query`, `tally schema`, ...). Not built on the machines Tally is
# developed on (no Docker engine there); the Rust side builds with the same command in CI.

# ---- build: Rust 1.95 (the workspace's rust-version); librdkafka and SQLite compile from
# source with the C toolchain (no cmake needed).
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tally \
 && cp target/release/tally /usr/local/bin/tally

# ---- runtime: Debian slim, a non-root user, the binary, and curl for health checks.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/tally --create-home tally
COPY --from=build /usr/local/bin/tally /usr/local/bin/tally
USER 10001:10001
WORKDIR /var/lib/tally
# Containers listen on every interface; the defaults (127.0.0.1) suit a laptop.
ENV TALLY_HTTP_LISTEN=0.0.0.0:8080 \
    TALLY_ADMIN_LISTEN=0.0.0.0:8081 \
    TALLY_QUERY_LISTEN=0.0.0.0:8082
EXPOSE 8080 8081 8082 8083 8084
ENTRYPOINT ["tally"]
CMD ["--help"]
