# Tollgate in a container: a multi-stage build (the Rust toolchain stays in the build
# stage) and a small runtime image running as an unprivileged user.
#
#   docker build -t tollgate .
#   docker run --rm -p 8080:8080 -p 8081:8081 -p 8090:8090 tollgate serve --demo \
#     --admin-listen 0.0.0.0:8090
#
# The image holds only the binary, CA certificates (for https backends and JWKS URLs)
# and a writable /var/lib/tollgate for the embedded SQLite store.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tollgate && strip target/release/tollgate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/tollgate --create-home tollgate
COPY --from=build /src/target/release/tollgate /usr/local/bin/tollgate
USER 10001
WORKDIR /var/lib/tollgate
ENV TOLLGATE_STORE=sqlite:///var/lib/tollgate/tollgate.db \
    TOLLGATE_LOG_FORMAT=json
EXPOSE 8080 8081 8090
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve"]
