#!/bin/sh
# Runs a pod with podman the way Kubernetes runs one with Remora injected, and shows the
# capture at work. On one podman bridge network (remora-demo, 10.89.77.0/24):
#
#   remora-demo-upstream  (10.89.77.10) a server outside the pod: python3 -m http.server 8000
#   remora-demo           (10.89.77.20) the pod, its own network namespace, with
#     remora-demo-init      init container: remora-init (docker/iptables.sh), Istio's default
#                           flags, root with NET_ADMIN and NET_RAW only
#     remora-demo-sidecar   remora:TAG, `sidecar -c /etc/remora --app-port 8080`, config files
#                           mounted read-only; the entrypoint opens conntrack as root, then
#                           runs as UID/GID 1337 with no capabilities
#     remora-demo-app       the app, UID 1000: python3 -m http.server 8080
#
# The sidecar's config (written to STATE_DIR/mesh, mounted at /etc/remora): a ServiceEntry
# `upstream.demo` with the VIP 10.96.0.20 (an address nobody has, like a ClusterIP) and the
# endpoint 10.89.77.10:8000; the pod's /etc/hosts maps upstream.demo to the VIP.
#
# usage: sh docker/pod.sh [up|check|down|all] [--tag TAG]
#   up     builds remora-demo-app:TAG (python3 on the base image) if missing, creates the
#          network, the upstream and the pod, waits until the sidecar is healthy
#   check  outbound: the app fetches http://upstream.demo:8000/ (captured: 15001 → Remora →
#          the endpoint); inbound: the upstream fetches http://10.89.77.20:8080/ (captured:
#          15006 → Remora → the app); prints both answers, the sidecar's access log, its
#          UID and capabilities; exit status 1 if an answer is missing
#   down   removes the containers, the pod and the network
#   all    up, check, down (the default)
#
# Needs root and the images of docker/build.sh (remora:TAG, remora-init:TAG, and its base
# localhost/debian:bookworm-slim). PODMAN overrides the podman command, as in build.sh.
set -eu
cd "$(dirname "$0")/.."

action=all
tag=dev
while [ $# -gt 0 ]; do
  case "$1" in
    up|check|down|all) action=$1; shift ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    -h|--help) sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "docker/pod.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ -z "${PODMAN:-}" ]; then
  PODMAN=podman
  if [ -d /sys/fs/cgroup/unified ] && [ -x /usr/sbin/runc ]; then PODMAN="podman --runtime /usr/sbin/runc --cgroup-manager=cgroupfs"; fi
fi
# Raising rlimits can be refused: every container keeps values any host allows. The pod's
# infra container takes no --ulimit, so its default comes from a containers.conf of our own
# (CONTAINERS_CONF, unless one is set already).
limits="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
base=localhost/debian:bookworm-slim
net=remora-demo
pod=remora-demo
pod_ip=10.89.77.20
upstream_ip=10.89.77.10
vip=10.96.0.20
state_dir=${STATE_DIR:-${TMPDIR:-/tmp}/remora-demo}
say() { echo "docker/pod.sh: $*" >&2; }
if [ -z "${CONTAINERS_CONF:-}" ]; then
  conf_dir=${TMPDIR:-/tmp}/remora-demo-podman
  mkdir -p "$conf_dir"
  printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n' > "$conf_dir/containers.conf"
  CONTAINERS_CONF=$conf_dir/containers.conf
  export CONTAINERS_CONF
fi

down() {
  $PODMAN pod rm -f -t 0 "$pod" >/dev/null 2>&1 || true
  $PODMAN rm -f -t 0 remora-demo-upstream >/dev/null 2>&1 || true
  $PODMAN network rm -f "$net" >/dev/null 2>&1 || true
  rm -rf "$state_dir"
}

up() {
  for image in "remora:$tag" "remora-init:$tag" "$base"; do
    $PODMAN image exists "$image" || { say "no image $image: run sh docker/build.sh first"; exit 1; }
  done
  if ! $PODMAN image exists "remora-demo-app:$tag"; then
    say "building remora-demo-app:$tag (python3 on $base)"
    printf '%s\n' \
      "FROM $base" \
      'RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*' \
      'RUN mkdir -p /srv/app /srv/upstream && echo "hello from the app" > /srv/app/index.html && echo "hello from the upstream" > /srv/upstream/index.html' \
      | $PODMAN build $limits -t "remora-demo-app:$tag" -f - docker >&2
  fi
  down
  mkdir -p "$state_dir/mesh"
  cat > "$state_dir/mesh/upstream.yaml" <<EOF
# The server outside the pod, as a Kubernetes Service would be: a VIP and an endpoint.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: upstream, namespace: demo }
spec:
  hosts: [upstream.demo]
  addresses: [$vip]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - { number: 8000, name: http, protocol: HTTP }
  endpoints:
  - { address: $upstream_ip, labels: { app: upstream } }
---
# The pod's own workload: names the inbound side in metrics and the access log.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: app, namespace: demo }
spec:
  hosts: [app.demo]
  location: MESH_INTERNAL
  resolution: STATIC
  workloadSelector:
    labels: { app: demo }
  ports:
  - { number: 8080, name: http, protocol: HTTP }
EOF
  # The sidecar runs as 1337: the files must be readable by it.
  chmod 0755 "$state_dir" "$state_dir/mesh"
  chmod 0644 "$state_dir/mesh/upstream.yaml"

  $PODMAN network create --subnet 10.89.77.0/24 "$net" >/dev/null
  $PODMAN run -d $limits --name remora-demo-upstream --network "$net" --ip "$upstream_ip" --user 1000:1000 \
    "remora-demo-app:$tag" python3 -m http.server 8000 --directory /srv/upstream >/dev/null
  $PODMAN pod create --name "$pod" --network "$net" --ip "$pod_ip" --add-host "upstream.demo:$vip" >/dev/null
  # Kubernetes' init container: runs to completion before the others start.
  $PODMAN create $limits --pod "$pod" --name remora-demo-init --init-ctr once \
    --cap-drop all --cap-add NET_ADMIN,NET_RAW \
    "remora-init:$tag" -p 15001 -z 15006 -u 1337 -g 1337 -b '*' -d 15090,15021,15020 >/dev/null
  # Root at the start (the entrypoint opens conntrack, then setpriv changes to 1337 and drops
  # every capability); SETUID/SETGID for the change, SETPCAP to empty the bounding set.
  $PODMAN create $limits --pod "$pod" --name remora-demo-sidecar \
    --cap-drop all --cap-add SETUID,SETGID,SETPCAP --read-only \
    -v "$state_dir/mesh:/etc/remora:ro" \
    -e POD_NAMESPACE=demo -e SERVICE_ACCOUNT=demo -e ISTIO_META_WORKLOAD_NAME=demo-v1 \
    ${REMORA_CONNTRACK:+-e REMORA_CONNTRACK="$REMORA_CONNTRACK"} \
    "remora:$tag" sidecar -c /etc/remora --app-port 8080 --labels app=demo,version=v1 >/dev/null
  $PODMAN create $limits --pod "$pod" --name remora-demo-app --user 1000:1000 \
    "remora-demo-app:$tag" python3 -m http.server 8080 --directory /srv/app >/dev/null
  $PODMAN pod start "$pod" >/dev/null
  i=0
  until $PODMAN healthcheck run remora-demo-sidecar >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 60 ] || [ "$($PODMAN inspect -f '{{.State.Running}}' remora-demo-sidecar)" != true ]; then
      say "the sidecar did not become ready; its log:"; $PODMAN logs remora-demo-sidecar >&2; exit 1
    fi
    sleep 0.5
  done
  say "pod $pod up: the sidecar is ready"
}

fetch() { # container url
  $PODMAN exec "$1" python3 -c 'import sys, urllib.request
r = urllib.request.urlopen(sys.argv[1], timeout=5)
print(r.status, r.read().decode().strip())' "$2"
}

check() {
  status=0
  pid=$($PODMAN inspect -f '{{.State.Pid}}' remora-demo-sidecar)
  echo "== the capture the init container left (iptables -t nat -S ISTIO_OUTPUT, in the pod's namespace)"
  if command -v nsenter >/dev/null && command -v iptables >/dev/null; then
    nsenter --net="/proc/$pid/ns/net" iptables -t nat -S ISTIO_OUTPUT || true
  else
    echo "(needs nsenter and iptables on the host)"
  fi
  echo "== outbound: the app (UID 1000) fetches http://upstream.demo:8000/ ($vip, captured)"
  out=$(fetch remora-demo-app "http://upstream.demo:8000/") || status=1
  echo "$out"
  [ "$out" = "200 hello from the upstream" ] || status=1
  echo "== inbound: the upstream fetches http://$pod_ip:8080/ (the pod's app port, captured)"
  in=$(fetch remora-demo-upstream "http://$pod_ip:8080/") || status=1
  echo "$in"
  [ "$in" = "200 hello from the app" ] || status=1
  echo "== the sidecar's access log"
  $PODMAN logs remora-demo-sidecar 2>/dev/null | grep -E '^\[' || true
  echo "== the sidecar's process (PID 1 of its container)"
  tr '\0' ' ' < "/proc/$pid/cmdline"; echo
  grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' "/proc/$pid/status"
  for fd in /proc/"$pid"/fd/*; do
    case "$(readlink "$fd")" in */nf_conntrack) echo "conntrack table open on descriptor ${fd##*/}" ;; esac
  done
  return $status
}

case "$action" in
  up) up ;;
  check) check ;;
  down) down ;;
  all)
    up
    rc=0; check || rc=$?
    down
    exit $rc ;;
esac
