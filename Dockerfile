# Sluice in a container: a multi-stage build, a small Debian runtime image.
#
#   docker build -t sluice .
#   docker run -d --name sluice -p 9092:9092 -p 9644:9644 --ulimit memlock=-1 \
#       -v sluice-data:/var/lib/sluice sluice
#
# Every `sluice start` flag may be set as SLUICE_<FLAG> (-e SLUICE_WAL_SIZE=4GiB). Clients are
# told to connect to 127.0.0.1:9092 (the listener's address, 0.0.0.0, advertised as loopback), which
# suits `-p 9092:9092` on one host; on a network of containers or hosts set
# SLUICE_ADVERTISED_ADDRESS to the name clients reach the broker by. More listeners (TLS, SASL):
# set SLUICE_LISTENERS (see the README's Security section), which replaces the image's one.
#
# io_uring: Docker 25 and later block the io_uring system calls in their default seccomp
# profile, and the broker cannot run without them; there, add
# `--security-opt seccomp=unconfined` (or a profile that allows io_uring_setup,
# io_uring_enter and io_uring_register). --ulimit memlock=-1 lets glommio lock its I/O buffers
# (3 x shards x 10 MiB); with less, the broker shrinks them and logs a warning.
#
# The base images are arguments so that a build can name a mirror or a pinned digest.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Without the release profile's debug info (line tables for profiling, 200 MB of the binary);
# symbols stay, so a backtrace still names functions.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo
# Without the hwloc feature: `sluice tune` then reads the CPU topology from /sys, and the
# runtime image needs no hwloc library (with its dependencies, 80 MB).
RUN cargo build --release --locked --bin sluice \
    && install -D -m 755 target/release/sluice /out/sluice \
    && rm -rf target

FROM ${RUNTIME_IMAGE}
RUN useradd --system --home-dir /var/lib/sluice --create-home sluice
COPY --from=build /out/sluice /usr/local/bin/sluice
USER sluice
WORKDIR /var/lib/sluice
ENV SLUICE_LISTENERS=PLAINTEXT://0.0.0.0:9092 \
    SLUICE_ADMIN_LISTEN=0.0.0.0:9644 \
    SLUICE_DATA_DIR=/var/lib/sluice
VOLUME /var/lib/sluice
EXPOSE 9092 9644
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
    CMD ["sluice", "cluster", "health", "--brokers", "127.0.0.1:9092"]
# SIGTERM (docker stop) drains connections and syncs the WAL; give it time before SIGKILL
# (docker stop -t 60).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["start"]
