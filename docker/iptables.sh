#!/bin/sh
# remora-iptables: sets up the traffic capture of a pod for the Remora sidecar, the way Istio's
# `istio-iptables` (pilot-agent istio-iptables, run by the istio-init container) does for Envoy:
# same defaults, same flag letters, same chain names, same rules (REDIRECT mode, IPv4).
#
# It runs once per pod, in the pod's network namespace, before the app and the sidecar start
# (the remora-init initContainer, with NET_ADMIN and NET_RAW). Every rule below carries a
# comment saying why it is there. docker/README.md describes the capture in plain words.
#
# Chains, all in the nat table:
#   PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT (REDIRECT to the inbound port, 15006)
#   OUTPUT     -> ISTIO_OUTPUT  -> ISTIO_REDIRECT    (REDIRECT to the outbound port, 15001)
#
# Re-running it replaces the chains (it removes what it finds first), so it is idempotent.
# `--clean` only removes them. `--dry-run` prints the iptables commands instead of running
# them, and needs neither root nor iptables.
#
# POSIX sh (dash, busybox ash): no bashisms.
set -euf # -f: no globbing, so a "*" given to an option stays a "*"

prog=remora-iptables

usage() {
  cat <<'EOF'
usage: iptables.sh [options]            set up the capture (replacing any previous one)
       iptables.sh --clean [--dry-run]  remove the capture

Options (Istio's istio-iptables letters and defaults):
  -p PORT        outbound capture port: the app's outgoing TCP is redirected here (default 15001)
  -z PORT        inbound capture port: incoming TCP to the pod is redirected here (default 15006)
  -u UID[,UID]   the proxy's UID(s): their traffic is never captured (default 1337)
  -g GID[,GID]   the proxy's GID(s): their traffic is never captured (default 1337)
  -b PORTS       inbound ports to capture, comma-separated, or '*' for all (default '*');
                 an empty value turns inbound capture off
  -d PORTS       inbound ports NOT to capture when -b is '*' (default 15090,15021,15020)
  -o PORTS       outbound ports NOT to capture (default none)
  -q PORTS       outbound ports to capture whatever the destination (default none)
  -i CIDRS       outbound IP ranges to capture, comma-separated, or '*' for all (default '*');
                 an empty value captures no outbound traffic except the ports of -q
  -x CIDRS       outbound IP ranges NOT to capture (default none)
  -t PORT        inbound tunnel port (HBONE), never captured (default 15008)
  -n, --dry-run  print the iptables commands instead of running them
      --clean    remove the ISTIO_* chains and the jumps to them, then exit
  -h, --help     this help

Environment:
  IPTABLES       the iptables binary (default iptables; e.g. iptables-legacy, iptables-nft).
                 Its -save companion (${IPTABLES}-save) is used to find old jumps to remove.

Only IPv4 is captured: IPv6 ranges given to -i/-x are reported and ignored.
EOF
}

die() {
  echo "$prog: error: $*" >&2
  exit 1
}

warn() {
  echo "$prog: warning: $*" >&2
}

info() {
  echo "$prog: $*" >&2
}

# ---------------------------------------------------------------------------------------------
# Options

PROXY_PORT=15001
INBOUND_CAPTURE_PORT=15006
PROXY_UID=1337
PROXY_GID=1337
INBOUND_PORTS_INCLUDE='*'
INBOUND_PORTS_EXCLUDE=15090,15021,15020
OUTBOUND_PORTS_EXCLUDE=
OUTBOUND_PORTS_INCLUDE=
OUTBOUND_IP_RANGES_INCLUDE='*'
OUTBOUND_IP_RANGES_EXCLUDE=
INBOUND_TUNNEL_PORT=15008
DRY_RUN=0
CLEAN=0
IPTABLES=${IPTABLES:-iptables}

# needs_value OPTION "$@": the option takes a value; fail clearly when it is missing.
needs_value() {
  [ $# -ge 3 ] || die "option $1 needs a value (see --help)"
}

while [ $# -gt 0 ]; do
  case $1 in
    -p) needs_value "$1" "$@"; PROXY_PORT=$2; shift 2 ;;
    -z) needs_value "$1" "$@"; INBOUND_CAPTURE_PORT=$2; shift 2 ;;
    -u) needs_value "$1" "$@"; PROXY_UID=$2; shift 2 ;;
    -g) needs_value "$1" "$@"; PROXY_GID=$2; shift 2 ;;
    -b) needs_value "$1" "$@"; INBOUND_PORTS_INCLUDE=$2; shift 2 ;;
    -d) needs_value "$1" "$@"; INBOUND_PORTS_EXCLUDE=$2; shift 2 ;;
    -o) needs_value "$1" "$@"; OUTBOUND_PORTS_EXCLUDE=$2; shift 2 ;;
    -q) needs_value "$1" "$@"; OUTBOUND_PORTS_INCLUDE=$2; shift 2 ;;
    -i) needs_value "$1" "$@"; OUTBOUND_IP_RANGES_INCLUDE=$2; shift 2 ;;
    -x) needs_value "$1" "$@"; OUTBOUND_IP_RANGES_EXCLUDE=$2; shift 2 ;;
    -t) needs_value "$1" "$@"; INBOUND_TUNNEL_PORT=$2; shift 2 ;;
    -n | --dry-run) DRY_RUN=1; shift ;;
    --clean) CLEAN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# Lists are comma-separated; spaces around items are allowed ("15090, 15021").
split() {
  printf '%s\n' "$1" | tr ',' '\n' | tr -d ' \t' | sed '/^$/d'
}

is_number() {
  case $1 in
    '' | *[!0-9]*) return 1 ;;
    *) return 0 ;;
  esac
}

check_port() { # what value
  if ! is_number "$2" || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
    die "$1: '$2' is not a port (1-65535)"
  fi
}

check_ports() { # what list
  for p in $(split "$2"); do check_port "$1" "$p"; done
}

check_ids() { # what list
  [ -n "$(split "$2")" ] || die "$1: at least one id is needed"
  for id in $(split "$2"); do
    is_number "$id" || die "$1: '$id' is not a numeric id"
  done
}

# An IPv4 CIDR: a.b.c.d/n, each octet 0-255 and n 0-32. A bare address means /32.
check_ipv4_cidr() { # what value
  what=$1
  value=$2
  addr=${value%/*}
  if [ "$addr" = "$value" ]; then bits=32; else bits=${value#*/}; fi
  is_number "$bits" && [ "$bits" -le 32 ] || die "$what: '$value': prefix length must be 0-32"
  old_ifs=$IFS
  IFS=.
  # shellcheck disable=SC2086 # splitting on the dots is the point
  set -- $addr
  IFS=$old_ifs
  [ $# -eq 4 ] || die "$what: '$value' is not an IPv4 address or CIDR"
  for octet in "$@"; do
    is_number "$octet" && [ "$octet" -le 255 ] || die "$what: '$value' is not an IPv4 address or CIDR"
  done
}

# Prints the IPv4 CIDRs of a list (normalised to a.b.c.d/n); reports and drops IPv6 ones.
ipv4_cidrs() { # what list
  for c in $(split "$2"); do
    case $c in
      *:*) warn "$1: IPv6 range '$c' ignored: this script captures IPv4 only" ;;
      *)
        check_ipv4_cidr "$1" "$c"
        case $c in */*) echo "$c" ;; *) echo "$c/32" ;; esac
        ;;
    esac
  done
}

check_port "-p (outbound capture port)" "$PROXY_PORT"
check_port "-z (inbound capture port)" "$INBOUND_CAPTURE_PORT"
check_port "-t (inbound tunnel port)" "$INBOUND_TUNNEL_PORT"
check_ids "-u (proxy UID)" "$PROXY_UID"
check_ids "-g (proxy GID)" "$PROXY_GID"
[ "$INBOUND_PORTS_INCLUDE" = '*' ] || check_ports "-b (inbound ports)" "$INBOUND_PORTS_INCLUDE"
check_ports "-d (inbound ports excluded)" "$INBOUND_PORTS_EXCLUDE"
check_ports "-o (outbound ports excluded)" "$OUTBOUND_PORTS_EXCLUDE"
check_ports "-q (outbound ports included)" "$OUTBOUND_PORTS_INCLUDE"
case $OUTBOUND_IP_RANGES_EXCLUDE in
  *'*'*) die "-x (outbound ranges excluded): '*' is not allowed; to capture no outbound traffic use -i ''" ;;
esac
# Validate (and normalise) the ranges now, so a typo fails before any rule is touched.
if [ "$OUTBOUND_IP_RANGES_INCLUDE" = '*' ]; then
  INCLUDE_CIDRS='*'
else
  INCLUDE_CIDRS=$(ipv4_cidrs "-i (outbound ranges)" "$OUTBOUND_IP_RANGES_INCLUDE")
fi
EXCLUDE_CIDRS=$(ipv4_cidrs "-x (outbound ranges excluded)" "$OUTBOUND_IP_RANGES_EXCLUDE")

# ---------------------------------------------------------------------------------------------
# Running iptables

CHAINS="ISTIO_INBOUND ISTIO_REDIRECT ISTIO_IN_REDIRECT ISTIO_OUTPUT"

# ipt ARGS…: one change to the nat table; printed instead under --dry-run. On failure the
# command and iptables' own message are shown, then whatever was set up is removed again
# (a half-applied capture is worse than none) and the script exits 1.
ipt() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "$IPTABLES -t nat $*"
    return 0
  fi
  if ! out=$("$IPTABLES" -t nat "$@" 2>&1); then
    echo "$prog: error: '$IPTABLES -t nat $*' failed: $out" >&2
    if [ "$CLEAN" = 0 ]; then
      echo "$prog: removing the partial capture" >&2
      CLEAN=1
      remove_capture || true
    fi
    exit 1
  fi
}

# ipt_quiet ARGS…: a change that may legitimately fail (the thing is already gone).
ipt_quiet() {
  "$IPTABLES" -t nat "$@" >/dev/null 2>&1
}

chain_exists() {
  ipt_quiet -S "$1"
}

# Preconditions, checked before anything runs so the messages say what to fix.
preflight() {
  command -v "$IPTABLES" >/dev/null 2>&1 ||
    die "'$IPTABLES' not found: install iptables (Debian/Ubuntu: apt-get install iptables) or set IPTABLES to its path"
  # iptables needs CAP_NET_ADMIN in the pod's network namespace: root in a container without
  # the capability gets "Permission denied" from the kernel, so check the capability itself
  # (bit 12 of the effective set) rather than the UID.
  capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status 2>/dev/null || true)
  if [ -n "$capeff" ]; then
    if [ $(((0x$capeff >> 12) & 1)) -ne 1 ]; then
      if [ "$(id -u)" -ne 0 ]; then
        die "must run as root (or with CAP_NET_ADMIN): running as UID $(id -u) without it"
      fi
      die "CAP_NET_ADMIN is missing: run as root with capabilities NET_ADMIN and NET_RAW (Kubernetes: securityContext.capabilities.add: [NET_ADMIN, NET_RAW])"
    fi
  elif [ "$(id -u)" -ne 0 ]; then
    die "must run as root (or with CAP_NET_ADMIN)"
  fi
  if ! out=$("$IPTABLES" -t nat -S PREROUTING 2>&1); then
    die "cannot use the nat table with '$IPTABLES': $out"
  fi
}

# Removes the jumps from PREROUTING/OUTPUT to the ISTIO_* chains (whatever their match, so a
# capture set up by another version, or by Istio's own istio-iptables, goes too), then flushes
# and deletes the chains. Missing pieces are fine: removing twice is a no-op.
remove_capture() {
  if [ "$DRY_RUN" = 1 ]; then
    # Without privileges there is nothing to read: print the removals this script's own
    # rules would need.
    echo "$IPTABLES -t nat -D PREROUTING -p tcp -j ISTIO_INBOUND"
    echo "$IPTABLES -t nat -D OUTPUT -p tcp -j ISTIO_OUTPUT"
    for c in $CHAINS; do echo "$IPTABLES -t nat -F $c"; done
    for c in $CHAINS; do echo "$IPTABLES -t nat -X $c"; done
    return 0
  fi
  jumps=
  if command -v "$IPTABLES-save" >/dev/null 2>&1; then
    jumps=$("$IPTABLES-save" -t nat 2>/dev/null | grep -E '^-A (PREROUTING|OUTPUT) .*-j ISTIO_(INBOUND|OUTPUT|REDIRECT|IN_REDIRECT)( |$)' || true)
  fi
  if [ -n "$jumps" ]; then
    printf '%s\n' "$jumps" | while IFS= read -r rule; do
      # iptables-save prints each rule as the arguments that would add it: the same words
      # after -D delete it. eval keeps any quoted argument (a --comment) in one piece.
      eval "ipt_quiet -D ${rule#-A }" || warn "could not remove '$rule'"
    done
  fi
  # Without iptables-save (or if it missed something), delete the jumps this script adds.
  while ipt_quiet -D PREROUTING -p tcp -j ISTIO_INBOUND; do :; done
  while ipt_quiet -D OUTPUT -p tcp -j ISTIO_OUTPUT; do :; done
  while ipt_quiet -D OUTPUT -j ISTIO_OUTPUT; do :; done
  for c in $CHAINS; do
    if chain_exists "$c"; then ipt -F "$c"; fi
  done
  for c in $CHAINS; do
    if chain_exists "$c"; then ipt -X "$c"; fi
  done
}

# ---------------------------------------------------------------------------------------------
# The capture

add_capture() {
  for c in $CHAINS; do ipt -N "$c"; done

  # --- ISTIO_REDIRECT / ISTIO_IN_REDIRECT: where captured connections go --------------------

  # Outbound: the app's outgoing TCP goes to the sidecar's outbound listener (a REDIRECT in
  # OUTPUT rewrites the destination to 127.0.0.1:PORT). The sidecar routes it by the Host
  # header (see docker/README.md: Node.js cannot read the original destination).
  ipt -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports "$PROXY_PORT"
  # Inbound: TCP arriving for the pod goes to the sidecar's inbound listener (a REDIRECT in
  # PREROUTING rewrites the destination to the receiving interface's address:PORT), which
  # forwards to the app on 127.0.0.1.
  ipt -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports "$INBOUND_CAPTURE_PORT"

  # --- Inbound: PREROUTING -> ISTIO_INBOUND ------------------------------------------------

  # The tunnel port (HBONE, 15008) is the sidecar's own: never redirect it.
  ipt -A ISTIO_INBOUND -p tcp --dport "$INBOUND_TUNNEL_PORT" -j RETURN
  if [ -n "$INBOUND_PORTS_INCLUDE" ]; then
    # Every TCP packet entering the pod from outside is looked at by ISTIO_INBOUND.
    # (Packets the pod sends itself, even to its own IP over lo, do not pass PREROUTING
    # in the nat table: they are handled in OUTPUT below.)
    ipt -A PREROUTING -p tcp -j ISTIO_INBOUND
    if [ "$INBOUND_PORTS_INCLUDE" = '*' ]; then
      for port in $(split "$INBOUND_PORTS_EXCLUDE"); do
        # Excluded port (by default the sidecar's own 15090 metrics, 15021 health and
        # 15020 agent ports): the kubelet's probes and Prometheus reach them directly.
        ipt -A ISTIO_INBOUND -p tcp --dport "$port" -j RETURN
      done
      # Everything else inbound goes through the sidecar.
      ipt -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
    else
      for port in $(split "$INBOUND_PORTS_INCLUDE"); do
        # Only the listed ports go through the sidecar; others reach the pod untouched.
        ipt -A ISTIO_INBOUND -p tcp --dport "$port" -j ISTIO_IN_REDIRECT
      done
    fi
  fi

  # --- Outbound: OUTPUT -> ISTIO_OUTPUT -----------------------------------------------------

  # Every TCP connection opened inside the pod is looked at by ISTIO_OUTPUT (UDP, DNS among
  # it, is left alone: Remora does not capture DNS).
  ipt -A OUTPUT -p tcp -j ISTIO_OUTPUT

  for port in $(split "$OUTBOUND_PORTS_EXCLUDE"); do
    # Excluded destination port: never captured, whoever connects. First, so that it wins
    # over the loopback rules below.
    ipt -A ISTIO_OUTPUT -p tcp --dport "$port" -j RETURN
  done

  # 127.0.0.6 is the source address Envoy uses for inbound passthrough connections to the
  # app: those are already proxied, never capture them again.
  ipt -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN

  # Istio's rule: when -i explicitly lists a loopback range, the app's own loopback traffic
  # is meant to be captured, so the "app over lo is not captured" rules are left out.
  loopback_included=0
  if printf '%s\n' "$INCLUDE_CIDRS" | grep -q '^127\.'; then loopback_included=1; fi

  for uid in $(split "$PROXY_UID"); do
    # The app calling itself through a service VIP: app -> sidecar outbound -> (the
    # endpoint is this pod's own IP, so the kernel routes it over lo) -> must go through the
    # sidecar's inbound side like any other caller, so the proxy's connection over lo to a
    # non-127.0.0.1 address is sent to the inbound listener. The tunnel port is left alone.
    ipt -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport "$INBOUND_TUNNEL_PORT" -m owner --uid-owner "$uid" -j ISTIO_IN_REDIRECT
    if [ "$loopback_included" = 0 ]; then
      # The app calling itself over lo (localhost, or its own pod IP): not captured, the
      # same as without a sidecar. Skipped when -i asks for loopback ranges to be captured.
      ipt -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner "$uid" -j RETURN
    fi
    # The proxy's own connections (to upstreams, to the app) are never captured: without
    # this rule every connection the sidecar opens would come back to it, forever.
    ipt -A ISTIO_OUTPUT -m owner --uid-owner "$uid" -j RETURN
  done

  for gid in $(split "$PROXY_GID"); do
    # The same three rules by group, for a proxy whose UID differs but whose GID is the
    # proxy's (Istio sets both; a process may change one without the other).
    ipt -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport "$INBOUND_TUNNEL_PORT" -m owner --gid-owner "$gid" -j ISTIO_IN_REDIRECT
    if [ "$loopback_included" = 0 ]; then
      ipt -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner "$gid" -j RETURN
    fi
    ipt -A ISTIO_OUTPUT -m owner --gid-owner "$gid" -j RETURN
  done

  # Connections to 127.0.0.1 are the app talking to a local process (or to the sidecar's
  # ports on purpose, e.g. http_proxy=127.0.0.1:15001): not captured.
  ipt -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN

  for cidr in $EXCLUDE_CIDRS; do
    # Excluded destination range (-x): reached directly. Before the inclusions, so it wins.
    ipt -A ISTIO_OUTPUT -d "$cidr" -j RETURN
  done

  for port in $(split "$OUTBOUND_PORTS_INCLUDE"); do
    # Included destination port (-q): captured whatever the destination address.
    ipt -A ISTIO_OUTPUT -p tcp --dport "$port" -j ISTIO_REDIRECT
  done

  if [ "$INCLUDE_CIDRS" = '*' ]; then
    # Everything else the app sends goes through the sidecar.
    ipt -A ISTIO_OUTPUT -j ISTIO_REDIRECT
  else
    for cidr in $INCLUDE_CIDRS; do
      # Only the listed ranges (typically the cluster's service and pod CIDRs) go through
      # the sidecar; anything else leaves the pod directly (end of chain: no capture).
      ipt -A ISTIO_OUTPUT -d "$cidr" -j ISTIO_REDIRECT
    done
  fi
}

# ---------------------------------------------------------------------------------------------

if [ "$DRY_RUN" = 0 ]; then preflight; fi

if [ "$CLEAN" = 1 ]; then
  remove_capture
  [ "$DRY_RUN" = 1 ] || info "capture removed (chains $CHAINS)"
  exit 0
fi

# Replace, never add to, a previous capture: that is what makes a re-run safe.
if [ "$DRY_RUN" = 0 ]; then remove_capture; fi
add_capture
if [ "$DRY_RUN" = 0 ]; then
  info "capture set up: outbound -> :$PROXY_PORT, inbound -> :$INBOUND_CAPTURE_PORT, proxy uid $PROXY_UID gid $PROXY_GID"
  # The final table in the init container's log, as istio-init prints it.
  if command -v "$IPTABLES-save" >/dev/null 2>&1; then "$IPTABLES-save" -t nat >&2 || true; fi
fi
