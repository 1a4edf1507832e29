#!/bin/sh
# Builds Remora's images with podman, without a registry:
#
#   1. the base, localhost/debian:bookworm-slim: a `debootstrap --variant=minbase bookworm`
#      root filesystem (kept in the cache directory, made once), trimmed the way Debian's
#      bookworm-slim is (no apt lists or caches, no docs, man pages or locales), imported
#      with `podman import`;
#   2. remora:TAG from docker/Dockerfile (the proxy), and remora-init:TAG from
#      docker/init.Dockerfile (the iptables init container), both FROM that base;
#   3. the images' sizes.
#
# usage: sh docker/build.sh [--tag TAG] [--cache-dir DIR] [--mirror URL] [--base IMAGE]
#                           [--only remora|init|base] [--no-cache]
#
#   --tag TAG        image tag (default dev): remora:TAG, remora-init:TAG
#   --cache-dir DIR  where the debootstrapped root filesystem is kept
#                    (default ${XDG_CACHE_HOME:-~/.cache}/remora; outside the repository)
#   --mirror URL     Debian mirror for debootstrap (default the one of /etc/apt, else
#                    http://deb.debian.org/debian)
#   --base IMAGE     the base image's name (default localhost/debian:bookworm-slim); an
#                    existing image of that name is used as it is
#   --only WHAT      build one image only
#   --no-cache       rebuild every step of the Dockerfiles
#
# Environment:
#   PODMAN           the podman command (default: podman, with `--runtime runc
#                    --cgroup-manager=cgroupfs` on hosts with hybrid cgroups (v1 + v2), where
#                    crun refuses to run; Debian's runc works there)
#   NPMRC, NPM_CA    the npm configuration and CA certificate the build's `npm`/`pnpm` use
#                    (default: `npm config get userconfig` / `npm config get cafile` when npm is
#                    installed); passed as build secrets, mounted for the install step only
#                    and never stored in a layer
#
# Needs root (podman's rootful storage; debootstrap), podman, and debootstrap unless the base
# image exists: `apt-get install podman buildah runc debootstrap`.
set -eu
cd "$(dirname "$0")/.."

tag=dev
cache_dir=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/remora
mirror=
base=localhost/debian:bookworm-slim
only=all
no_cache=
die() { echo "docker/build.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --cache-dir) cache_dir=${2:?--cache-dir needs a value}; shift 2 ;;
    --mirror) mirror=${2:?--mirror needs a value}; shift 2 ;;
    --base) base=${2:?--base needs a value}; shift 2 ;;
    --only) only=${2:?--only needs a value}; shift 2
      case "$only" in remora|init|base) ;; *) die "--only takes remora, init or base, got '$only'" ;; esac ;;
    --no-cache) no_cache=--no-cache; shift ;;
    -h|--help) sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

if [ -z "${PODMAN:-}" ]; then
  PODMAN=podman
  # Hybrid cgroups: the v2 hierarchy mounted beside v1 ones. crun refuses these; runc with
  # the cgroupfs manager runs.
  if [ -d /sys/fs/cgroup/unified ] && [ -x /usr/sbin/runc ]; then PODMAN="podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs"; fi
fi
command -v podman >/dev/null || die "podman is not installed (apt-get install podman buildah runc)"
[ "$(id -u)" = 0 ] || die "run as root: the images go to podman's rootful storage, which the pod scripts use"

# --- 1. the base image
if ! $PODMAN image exists "$base"; then
  command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap), and there is no image $base"
  if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\/*\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
    [ -n "$mirror" ] || mirror=$(sed -n 's/^deb *\(http[^ ]*\) *bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
  fi
  rootfs=$cache_dir/bookworm-minbase
  if [ ! -d "$rootfs" ]; then
    echo "docker/build.sh: debootstrap --variant=minbase bookworm from $mirror into $rootfs" >&2
    mkdir -p "$cache_dir"
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase bookworm "$rootfs.tmp" "$mirror" >&2
    # What bookworm-slim leaves out: package lists and caches (every build step runs
    # apt-get update first), docs, man pages, locales.
    rm -rf "$rootfs.tmp"/var/lib/apt/lists/* "$rootfs.tmp"/var/cache/apt/* "$rootfs.tmp"/var/cache/debconf/*-old \
      "$rootfs.tmp"/var/log/* "$rootfs.tmp"/usr/share/doc/* "$rootfs.tmp"/usr/share/man/* "$rootfs.tmp"/usr/share/info/* \
      "$rootfs.tmp"/usr/share/locale/*
    mv "$rootfs.tmp" "$rootfs"
  fi
  echo "docker/build.sh: importing $rootfs as $base" >&2
  tar -C "$rootfs" -c . | $PODMAN import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$base" >/dev/null
fi
[ "$only" = base ] && { $PODMAN images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$base"; exit 0; }

# --- 2. the images
# Raising rlimits can be refused (a container's nofile above the host's hard limit): keep the
# build steps' at a value every host allows.
build="$PODMAN build --format docker --build-arg BASE=$base --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 $no_cache"

if [ "$only" = all ] || [ "$only" = remora ]; then
  npmrc=${NPMRC:-$(npm config get userconfig 2>/dev/null || true)}
  npm_ca=${NPM_CA:-$(npm config get cafile 2>/dev/null || true)}
  secrets=
  # An absent secret is an empty file: the Dockerfile then keeps npm's defaults.
  empty=$(mktemp); trap 'rm -f "$empty"' EXIT
  if [ -n "$npmrc" ] && [ -f "$npmrc" ]; then secrets="--secret id=npmrc,src=$npmrc"; else secrets="--secret id=npmrc,src=$empty"; fi
  if [ -n "$npm_ca" ] && [ "$npm_ca" != null ] && [ -f "$npm_ca" ]; then secrets="$secrets --secret id=npm-ca,src=$npm_ca"; else secrets="$secrets --secret id=npm-ca,src=$empty"; fi
  start=$(date +%s)
  # shellcheck disable=SC2086
  $build $secrets --ignorefile docker/Dockerfile.dockerignore -f docker/Dockerfile -t "remora:$tag" .
  echo "docker/build.sh: remora:$tag built in $(( $(date +%s) - start )) s" >&2
fi
if [ "$only" = all ] || [ "$only" = init ]; then
  start=$(date +%s)
  $build -f docker/init.Dockerfile -t "remora-init:$tag" docker
  echo "docker/build.sh: remora-init:$tag built in $(( $(date +%s) - start )) s" >&2
fi

# --- 3. sizes (uncompressed, as `podman images` counts them)
$PODMAN images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "(/|^)(remora|remora-init):$tag |^${base} " || true
