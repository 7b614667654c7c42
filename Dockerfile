# syntax=docker/dockerfile:1
#
# capms-manager, the capms operator, in a distroless image that runs as non-root.
#
#   docker build -t ghcr.io/capms/capms-manager:v0.1.0 .
#
# The build stage compiles the one binary from the whole workspace (cargo needs every member
# to resolve it) with the committed Cargo.lock; the runtime stage has no shell and no package
# manager, only glibc and libgcc (`cc`), which the Rust binary links against.

FROM rust:1.95-bookworm AS builder
# aws-lc-sys (the TLS crypto provider) builds with the C compiler the image has; CMake is its
# fallback on targets without a prepared build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and build outputs between builds; the binary is copied out
# because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p capms-operator --bin capms-manager \
    && cp target/release/capms-manager /usr/local/bin/capms-manager

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/capms-manager /usr/local/bin/capms-manager
# The `nonroot` user of distroless; the Deployment's securityContext asks for the same id.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/capms-manager"]
CMD ["run"]
