# syntax=docker/dockerfile:1
# The init container image: docker/iptables.sh and iptables, nothing else. Build with
# docker/ as the context:
#
#   docker build -f docker/init.Dockerfile -t remora-init:dev docker
#
# It runs once per pod, before the app and the sidecar, as root with NET_ADMIN and NET_RAW
# (docker/k8s/productpage.yaml), and sets up the capture in the pod's network namespace.
# docker/build.sh builds it with podman FROM its debootstrapped base.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
# Debian's iptables defaults to the nf_tables backend; IPTABLES=iptables-legacy (same
# package) selects the legacy one for kernels without nf_tables.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY iptables.sh /usr/local/bin/remora-iptables
RUN chmod 0755 /usr/local/bin/remora-iptables
ENTRYPOINT ["/usr/local/bin/remora-iptables"]
