#!/bin/sh
# remora-iptables: sets up the traffic capture of a pod for the Remora sidecar, the way Istio's
# `istio-iptables` (pilot-agent istio-iptables, run by the istio-init container) does for Envoy:
# the same flags (letters and long names) with the same meanings and defaults, the same chains,
# and the same rules in the same order (tools/istio-iptables/pkg/capture/run.go). IPv4.
#
# It runs once per pod, in the pod's network namespace, before the app and the sidecar start
# (the remora-init initContainer, with NET_ADMIN and NET_RAW). Every rule below carries a
# comment saying why it is there. docker/README.md describes the capture in plain words.
#
# Chains (REDIRECT mode, the default), in the nat table:
#   PREROUTING -> ISTIO_INBOUND -> ISTIO_IN_REDIRECT (REDIRECT to the inbound port, 15006)
#   OUTPUT     -> ISTIO_OUTPUT  -> ISTIO_REDIRECT    (REDIRECT to the outbound port, 15001)
# TPROXY mode (-m TPROXY) diverts inbound in the mangle table instead (ISTIO_INBOUND ->
# ISTIO_DIVERT / ISTIO_TPROXY) plus a policy route for the mark; --redirect-dns adds
# ISTIO_OUTPUT_DNS (nat and raw) sending DNS to the agent's port 15053.
#
# Re-running it replaces the capture (it removes what it finds first), so it is idempotent.
# `--clean` (Istio: --cleanup-only) only removes it. `--dry-run` prints the commands instead
# of running them, and needs neither root nor iptables.
#
# POSIX sh (dash, busybox ash): no bashisms.
set -euf # -f: no globbing, so a "*" given to an option stays a "*"

prog=remora-iptables

usage() {
  cat <<'EOF'
usage: iptables.sh [options]            set up the capture (replacing any previous one)
       iptables.sh --clean [--dry-run]  remove the capture

Options (istio-iptables' letters, long names and defaults; --name=value also works):
  -p, --envoy-port PORT          outbound capture port: the app's outgoing TCP goes here (15001)
  -z, --inbound-capture-port PORT
                                 inbound capture port: incoming TCP goes here (15006)
  -e, --inbound-tunnel-port PORT inbound tunnel port (HBONE), never captured (15008)
  -u, --proxy-uid UID[,UID]      the proxy's UID(s): their traffic is never captured (1337)
  -g, --proxy-gid GID[,GID]      the proxy's GID(s): their traffic is never captured (1337)
  -m, --istio-inbound-interception-mode REDIRECT|TPROXY
                                 how inbound connections reach the proxy (REDIRECT)
  -t, --istio-inbound-tproxy-mark MARK
                                 TPROXY: the packet mark of diverted traffic (1337)
  -r, --istio-inbound-tproxy-route-table TABLE
                                 TPROXY: the routing table for marked packets (133)
  -b, --istio-inbound-ports PORTS
                                 inbound ports to capture, comma-separated, or '*' for all ('*');
                                 an empty value turns inbound capture off
  -d, --istio-local-exclude-ports PORTS
                                 inbound ports NOT captured when -b is '*' (15090,15021,15020)
  -o, --istio-local-outbound-ports-exclude PORTS
                                 outbound ports NOT captured (none)
  -q, --istio-outbound-ports PORTS
                                 outbound ports captured whatever the destination (none)
  -i, --istio-service-cidr CIDRS outbound IP ranges captured, comma-separated, or '*' ('*');
                                 an empty value captures no outbound traffic but -q's ports
  -x, --istio-service-exclude-cidr CIDRS
                                 outbound IP ranges NOT captured (none)
  -c, --istio-exclude-interfaces IFACES
                                 interfaces whose traffic is never captured, either way (none)
  -k, --kube-virt-interfaces IFACES
                                 virtual interfaces (KubeVirt VMs) whose inbound traffic is
                                 captured as outbound (none)
      --redirect-dns             send the app's DNS (UDP and TCP port 53) for the nameservers of
                                 /etc/resolv.conf to the agent's DNS proxy on 15053
      --capture-all-dns          with --redirect-dns: all port-53 traffic, any server
      --drop-invalid             drop packets conntrack finds INVALID (mangle PREROUTING)
      --run-validation           after setting up, check that every rule is in place (exit
                                 126, istio-validation's code, when one is missing)
      --log_output_level LEVELS  pilot-agent's log levels (e.g. default:info); 'none' or
                                 'error' silence this script's progress messages
  -n, --dry-run                  print the commands instead of running them
      --clean, --cleanup-only    remove the ISTIO_* chains, the jumps to them and the rules
                                 this script adds to built-in chains, then exit
  -h, --help                     this help

Environment:
  IPTABLES       the iptables binary (default iptables; e.g. iptables-legacy, iptables-nft).
                 Its -save companion (${IPTABLES}-save) is used to find old jumps to remove.
  RESOLV_CONF    the resolver configuration read by --redirect-dns (default /etc/resolv.conf)

Only IPv4 is captured: IPv6 ranges and nameservers are reported and ignored.
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
  [ "$QUIET" = 1 ] || echo "$prog: $*" >&2
}

# ---------------------------------------------------------------------------------------------
# Options

PROXY_PORT=15001
INBOUND_CAPTURE_PORT=15006
INBOUND_TUNNEL_PORT=15008
PROXY_UID=1337
PROXY_GID=1337
INTERCEPTION_MODE=REDIRECT
TPROXY_MARK=1337
TPROXY_ROUTE_TABLE=133
INBOUND_PORTS_INCLUDE='*'
INBOUND_PORTS_EXCLUDE=15090,15021,15020
OUTBOUND_PORTS_EXCLUDE=
OUTBOUND_PORTS_INCLUDE=
OUTBOUND_IP_RANGES_INCLUDE='*'
OUTBOUND_IP_RANGES_EXCLUDE=
EXCLUDE_INTERFACES=
KUBE_VIRT_INTERFACES=
REDIRECT_DNS=0
CAPTURE_ALL_DNS=0
DROP_INVALID=0
RUN_VALIDATION=0
LOG_LEVEL=default:info
QUIET=0
DRY_RUN=0
CLEAN=0
IPTABLES=${IPTABLES:-iptables}
RESOLV_CONF=${RESOLV_CONF:-/etc/resolv.conf}
# The DNS proxy of the agent (istio-agent's port; Remora's DNS proxy listens there too).
DNS_PORT=15053
# TPROXY: the mark of the proxy's own connections to the app over lo (Istio's OutboundMark).
OUTBOUND_MARK=1338

# A flag that takes a value: "-p 1", "--envoy-port 1" or "--envoy-port=1". Sets VALUE and
# SHIFT (how many arguments it used); fails clearly when the value is missing.
take_value() { # option has_inline inline_value next_arg_count [next_arg]
  if [ "$2" = 1 ]; then
    VALUE=$3
    SHIFT=1
  else
    [ "$4" -ge 2 ] || die "option $1 needs a value (see --help)"
    VALUE=$5
    SHIFT=2
  fi
}

# A boolean flag: "--redirect-dns" or "--redirect-dns=true|false". Sets VALUE to 1 or 0.
take_bool() { # option has_inline inline_value
  VALUE=1
  if [ "$2" = 1 ]; then
    case $3 in
      true | 1) VALUE=1 ;;
      false | 0) VALUE=0 ;;
      *) die "option $1: '$3' is not true or false" ;;
    esac
  fi
}

while [ $# -gt 0 ]; do
  arg=$1
  opt=$arg
  inline=0
  inline_value=
  case $arg in
    --*=*)
      opt=${arg%%=*}
      inline=1
      inline_value=${arg#*=}
      ;;
  esac
  next=${2-}
  case $opt in
    -p | --envoy-port) take_value "$opt" $inline "$inline_value" $# "$next"; PROXY_PORT=$VALUE ;;
    -z | --inbound-capture-port) take_value "$opt" $inline "$inline_value" $# "$next"; INBOUND_CAPTURE_PORT=$VALUE ;;
    -e | --inbound-tunnel-port) take_value "$opt" $inline "$inline_value" $# "$next"; INBOUND_TUNNEL_PORT=$VALUE ;;
    -u | --proxy-uid) take_value "$opt" $inline "$inline_value" $# "$next"; PROXY_UID=$VALUE ;;
    -g | --proxy-gid) take_value "$opt" $inline "$inline_value" $# "$next"; PROXY_GID=$VALUE ;;
    -m | --istio-inbound-interception-mode) take_value "$opt" $inline "$inline_value" $# "$next"; INTERCEPTION_MODE=$VALUE ;;
    -t | --istio-inbound-tproxy-mark) take_value "$opt" $inline "$inline_value" $# "$next"; TPROXY_MARK=$VALUE ;;
    -r | --istio-inbound-tproxy-route-table) take_value "$opt" $inline "$inline_value" $# "$next"; TPROXY_ROUTE_TABLE=$VALUE ;;
    -b | --istio-inbound-ports) take_value "$opt" $inline "$inline_value" $# "$next"; INBOUND_PORTS_INCLUDE=$VALUE ;;
    -d | --istio-local-exclude-ports) take_value "$opt" $inline "$inline_value" $# "$next"; INBOUND_PORTS_EXCLUDE=$VALUE ;;
    -o | --istio-local-outbound-ports-exclude) take_value "$opt" $inline "$inline_value" $# "$next"; OUTBOUND_PORTS_EXCLUDE=$VALUE ;;
    -q | --istio-outbound-ports) take_value "$opt" $inline "$inline_value" $# "$next"; OUTBOUND_PORTS_INCLUDE=$VALUE ;;
    -i | --istio-service-cidr) take_value "$opt" $inline "$inline_value" $# "$next"; OUTBOUND_IP_RANGES_INCLUDE=$VALUE ;;
    -x | --istio-service-exclude-cidr) take_value "$opt" $inline "$inline_value" $# "$next"; OUTBOUND_IP_RANGES_EXCLUDE=$VALUE ;;
    -c | --istio-exclude-interfaces) take_value "$opt" $inline "$inline_value" $# "$next"; EXCLUDE_INTERFACES=$VALUE ;;
    -k | --kube-virt-interfaces) take_value "$opt" $inline "$inline_value" $# "$next"; KUBE_VIRT_INTERFACES=$VALUE ;;
    --log_output_level) take_value "$opt" $inline "$inline_value" $# "$next"; LOG_LEVEL=$VALUE ;;
    --redirect-dns) take_bool "$opt" $inline "$inline_value"; REDIRECT_DNS=$VALUE; SHIFT=1 ;;
    --capture-all-dns) take_bool "$opt" $inline "$inline_value"; CAPTURE_ALL_DNS=$VALUE; SHIFT=1 ;;
    --drop-invalid) take_bool "$opt" $inline "$inline_value"; DROP_INVALID=$VALUE; SHIFT=1 ;;
    --run-validation) take_bool "$opt" $inline "$inline_value"; RUN_VALIDATION=$VALUE; SHIFT=1 ;;
    -n | --dry-run) take_bool "$opt" $inline "$inline_value"; DRY_RUN=$VALUE; SHIFT=1 ;;
    --clean | --cleanup-only) take_bool "$opt" $inline "$inline_value"; CLEAN=$VALUE; SHIFT=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
  shift "$SHIFT"
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

check_interfaces() { # what list
  for i in $(split "$2"); do
    case $i in
      *[!A-Za-z0-9_.@-]* | -*) die "$1: '$i' is not an interface name" ;;
    esac
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
check_port "-e (inbound tunnel port)" "$INBOUND_TUNNEL_PORT"
check_ids "-u (proxy UID)" "$PROXY_UID"
check_ids "-g (proxy GID)" "$PROXY_GID"
case $INTERCEPTION_MODE in
  REDIRECT | TPROXY) ;;
  *) die "-m (inbound interception mode): '$INTERCEPTION_MODE' is not REDIRECT or TPROXY" ;;
esac
is_number "$TPROXY_MARK" || die "-t (TPROXY mark): '$TPROXY_MARK' is not a number"
is_number "$TPROXY_ROUTE_TABLE" || die "-r (TPROXY route table): '$TPROXY_ROUTE_TABLE' is not a number"
[ "$INBOUND_PORTS_INCLUDE" = '*' ] || check_ports "-b (inbound ports)" "$INBOUND_PORTS_INCLUDE"
check_ports "-d (inbound ports excluded)" "$INBOUND_PORTS_EXCLUDE"
check_ports "-o (outbound ports excluded)" "$OUTBOUND_PORTS_EXCLUDE"
check_ports "-q (outbound ports included)" "$OUTBOUND_PORTS_INCLUDE"
check_interfaces "-c (excluded interfaces)" "$EXCLUDE_INTERFACES"
check_interfaces "-k (virtual interfaces)" "$KUBE_VIRT_INTERFACES"
[ -n "$LOG_LEVEL" ] || die "--log_output_level: a level is needed (e.g. default:info)"
case $LOG_LEVEL in
  none | *:none | error | *:error) QUIET=1 ;;
esac
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

# --redirect-dns: the IPv4 nameservers of resolv.conf (as istio-iptables reads them), unless
# --capture-all-dns takes all port-53 traffic.
DNS_SERVERS=
if [ "$REDIRECT_DNS" = 1 ] && [ "$CAPTURE_ALL_DNS" = 0 ]; then
  if [ -r "$RESOLV_CONF" ]; then
    for ns in $(sed -n 's/^[[:space:]]*nameserver[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "$RESOLV_CONF"); do
      case $ns in
        *:*) warn "--redirect-dns: IPv6 nameserver '$ns' ignored: this script captures IPv4 only" ;;
        *) check_ipv4_cidr "nameserver in $RESOLV_CONF" "$ns"; DNS_SERVERS="$DNS_SERVERS $ns" ;;
      esac
    done
  fi
  if [ -z "$DNS_SERVERS" ]; then
    # istio-iptables' behaviour and message.
    warn "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided ($RESOLV_CONF). DNS capture disabled."
    REDIRECT_DNS=0
  fi
fi

# ---------------------------------------------------------------------------------------------
# Running iptables

NAT_CHAINS="ISTIO_INBOUND ISTIO_REDIRECT ISTIO_IN_REDIRECT ISTIO_OUTPUT ISTIO_OUTPUT_DNS"
MANGLE_CHAINS="ISTIO_DIVERT ISTIO_TPROXY ISTIO_INBOUND ISTIO_DROP"
RAW_CHAINS="ISTIO_OUTPUT_DNS ISTIO_INBOUND"

# What `ipt` does: add the rules (add), delete the ones this configuration adds to built-in
# chains (delete: the ISTIO_* chains themselves are flushed and deleted afterwards), or
# check that each is in place (check, for --run-validation).
OP=add
MISSING=0

is_builtin() {
  case $1 in
    PREROUTING | INPUT | OUTPUT | FORWARD | POSTROUTING) return 0 ;;
    *) return 1 ;;
  esac
}

# ipt TABLE -N CHAIN | TABLE -A CHAIN RULE… | TABLE -I CHAIN POS RULE…: one change to the
# table, printed instead under --dry-run. On failure the command and iptables' own message
# are shown, then whatever was set up is removed again (a half-applied capture is worse than
# none) and the script exits 1.
ipt() {
  table=$1
  shift
  case $OP in
    delete)
      case $1 in
        -N) return 0 ;;
        -A) chain=$2; shift 2 ;;
        -I) chain=$2; shift 3 ;;
      esac
      is_builtin "$chain" || return 0
      if [ "$DRY_RUN" = 1 ]; then
        echo "$IPTABLES -t $table -D $chain $*"
      else
        while ipt_quiet "$table" -D "$chain" "$@"; do :; done
      fi
      return 0
      ;;
    check)
      case $1 in
        -N) ipt_quiet "$table" -S "$2" || { warn "validation: chain $table/$2 is missing"; MISSING=1; }; return 0 ;;
        -A) chain=$2; shift 2 ;;
        -I) chain=$2; shift 3 ;;
      esac
      ipt_quiet "$table" -C "$chain" "$@" || { warn "validation: rule missing: -t $table -A $chain $*"; MISSING=1; }
      return 0
      ;;
  esac
  if [ "$DRY_RUN" = 1 ]; then
    echo "$IPTABLES -t $table $*"
    return 0
  fi
  if ! out=$("$IPTABLES" -t "$table" "$@" 2>&1); then
    echo "$prog: error: '$IPTABLES -t $table $*' failed: $out" >&2
    if [ "$CLEAN" = 0 ]; then
      echo "$prog: removing the partial capture" >&2
      CLEAN=1
      remove_capture || true
    fi
    exit 1
  fi
}

# ipt_quiet TABLE ARGS…: a change that may legitimately fail (the thing is already gone).
ipt_quiet() {
  t=$1
  shift
  "$IPTABLES" -t "$t" "$@" >/dev/null 2>&1
}

# iproute ARGS…: `ip` for the TPROXY policy route, printed under --dry-run; in delete mode
# failures are fine.
iproute() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "ip $*"
  elif [ "$OP" = delete ]; then
    ip "$@" >/dev/null 2>&1 || true
  elif [ "$OP" = add ]; then
    out=$(ip "$@" 2>&1) || die "'ip $*' failed: $out"
  fi
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
  if [ "$INTERCEPTION_MODE" = TPROXY ] && ! command -v ip >/dev/null 2>&1; then
    die "-m TPROXY needs 'ip' (iproute2) for the policy route: apt-get install iproute2"
  fi
}

# Removes the capture: the rules this configuration adds to the built-in chains, any other
# jump from a built-in chain to an ISTIO_* chain (a capture set up with other flags, or by
# Istio's own istio-iptables), then the ISTIO_* chains of the nat, mangle and raw tables.
# Missing pieces are fine: removing twice is a no-op.
remove_capture() {
  saved_op=$OP
  OP=delete
  add_capture
  OP=$saved_op
  for table in nat mangle raw; do
    case $table in
      nat) chains=$NAT_CHAINS ;;
      mangle) chains=$MANGLE_CHAINS ;;
      raw) chains=$RAW_CHAINS ;;
    esac
    if [ "$DRY_RUN" = 1 ]; then
      for c in $chains; do echo "$IPTABLES -t $table -F $c"; done
      for c in $chains; do echo "$IPTABLES -t $table -X $c"; done
      continue
    fi
    jumps=
    if command -v "$IPTABLES-save" >/dev/null 2>&1; then
      jumps=$("$IPTABLES-save" -t "$table" 2>/dev/null | grep -E '^-A (PREROUTING|OUTPUT|INPUT|FORWARD|POSTROUTING) .*-j ISTIO_[A-Z_]+( |$)' || true)
    fi
    if [ -n "$jumps" ]; then
      printf '%s\n' "$jumps" | while IFS= read -r rule; do
        # iptables-save prints each rule as the arguments that would add it: the same words
        # after -D delete it. eval keeps any quoted argument (a --comment) in one piece.
        eval "ipt_quiet $table -D ${rule#-A }" || warn "could not remove '$rule'"
      done
    fi
    for c in $chains; do
      if ipt_quiet "$table" -S "$c"; then ipt_quiet "$table" -F "$c" || warn "could not flush $table/$c"; fi
    done
    for c in $chains; do
      if ipt_quiet "$table" -S "$c"; then ipt_quiet "$table" -X "$c" || warn "could not delete $table/$c"; fi
    done
  done
}

# ---------------------------------------------------------------------------------------------
# The capture, in istio-iptables' order (run.go: Run). Also walked by remove_capture (OP=delete)
# and --run-validation (OP=check).

add_capture() {
  tproxy=0
  [ "$INTERCEPTION_MODE" = TPROXY ] && tproxy=1

  # Chains first (iptables-restore's -N lines): nat, then mangle and raw when used.
  for c in ISTIO_INBOUND ISTIO_REDIRECT ISTIO_IN_REDIRECT ISTIO_OUTPUT; do ipt nat -N "$c"; done
  [ "$REDIRECT_DNS" = 1 ] && ipt nat -N ISTIO_OUTPUT_DNS
  if [ "$tproxy" = 1 ] && [ -n "$INBOUND_PORTS_INCLUDE" ]; then
    for c in ISTIO_DIVERT ISTIO_TPROXY ISTIO_INBOUND; do ipt mangle -N "$c"; done
  fi
  [ "$DROP_INVALID" = 1 ] && ipt mangle -N ISTIO_DROP
  if [ "$REDIRECT_DNS" = 1 ]; then
    ipt raw -N ISTIO_OUTPUT_DNS
    ipt raw -N ISTIO_INBOUND
  fi

  # --- Interfaces never captured (-c), and virtual interfaces (-k) --------------------------

  for nic in $(split "$EXCLUDE_INTERFACES"); do
    # Traffic through an excluded interface is left alone in both directions.
    ipt nat -A PREROUTING -i "$nic" -j RETURN
    ipt nat -A OUTPUT -o "$nic" -j RETURN
  done
  if [ "$tproxy" = 1 ]; then
    for nic in $(split "$EXCLUDE_INTERFACES"); do
      ipt mangle -A PREROUTING -i "$nic" -j RETURN
      ipt mangle -A OUTPUT -o "$nic" -j RETURN
    done
  fi
  for nic in $(split "$KUBE_VIRT_INTERFACES"); do
    # A VM's interface: its traffic is not inbound to the pod (it is the VM's outbound,
    # captured further down with ISTIO_REDIRECT), so it skips the inbound capture.
    ipt nat -I PREROUTING 1 -i "$nic" -j RETURN
  done

  if [ "$DROP_INVALID" = 1 ]; then
    # Out-of-window packets are dropped rather than answered with a reset that would kill
    # the connection (Istio's INVALID_DROP).
    ipt mangle -A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP
    ipt mangle -A ISTIO_DROP -j DROP
  fi

  # --- ISTIO_REDIRECT / ISTIO_IN_REDIRECT: where captured connections go --------------------

  # The tunnel port (HBONE, 15008) is the sidecar's own: never redirect it.
  ipt nat -A ISTIO_INBOUND -p tcp --dport "$INBOUND_TUNNEL_PORT" -j RETURN
  # Outbound: the app's outgoing TCP goes to the sidecar's outbound listener (a REDIRECT in
  # OUTPUT rewrites the destination to 127.0.0.1:PORT; the original one stays only in the
  # connection's conntrack entry: packages/proxy/src/listener/original-dst.ts reads it).
  ipt nat -A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports "$PROXY_PORT"
  # Inbound: TCP arriving for the pod goes to the sidecar's inbound listener (a REDIRECT in
  # PREROUTING rewrites the destination to the receiving interface's address:PORT), which
  # forwards to the app on 127.0.0.1. Also the target of the proxy-to-itself rule below.
  ipt nat -A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports "$INBOUND_CAPTURE_PORT"

  # --- Inbound: PREROUTING -> ISTIO_INBOUND ------------------------------------------------

  if [ -n "$INBOUND_PORTS_INCLUDE" ]; then
    if [ "$tproxy" = 1 ]; then
      # TPROXY: inbound packets are not rewritten. A new connection is handed to the
      # sidecar's transparent socket on the inbound port (its local address is then the
      # original destination), marked so that the policy route below delivers it locally;
      # the packets of an established one are marked (ISTIO_DIVERT) for the same route.
      ipt mangle -A ISTIO_DIVERT -j MARK --set-mark "$TPROXY_MARK"
      ipt mangle -A ISTIO_DIVERT -j ACCEPT
      ipt mangle -A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark "$TPROXY_MARK/0xffffffff" --on-port "$INBOUND_CAPTURE_PORT"
      inbound_table=mangle
    else
      inbound_table=nat
    fi
    # Every TCP packet entering the pod from outside is looked at by ISTIO_INBOUND.
    # (Packets the pod sends itself, even to its own IP over lo, do not pass PREROUTING
    # in the nat table: they are handled in OUTPUT below.)
    ipt "$inbound_table" -A PREROUTING -p tcp -j ISTIO_INBOUND
    if [ "$INBOUND_PORTS_INCLUDE" = '*' ]; then
      for port in $(split "$INBOUND_PORTS_EXCLUDE"); do
        # Excluded port (by default the sidecar's own 15090 metrics, 15021 health and
        # 15020 agent ports): the kubelet's probes and Prometheus reach them directly.
        ipt "$inbound_table" -A ISTIO_INBOUND -p tcp --dport "$port" -j RETURN
      done
      if [ "$tproxy" = 1 ]; then
        ipt mangle -A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
        ipt mangle -A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
      else
        # Everything else inbound goes through the sidecar.
        ipt nat -A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
      fi
    else
      for port in $(split "$INBOUND_PORTS_INCLUDE"); do
        # Only the listed ports go through the sidecar; others reach the pod untouched.
        if [ "$tproxy" = 1 ]; then
          ipt mangle -A ISTIO_INBOUND -p tcp --dport "$port" -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
          ipt mangle -A ISTIO_INBOUND -p tcp --dport "$port" -j ISTIO_TPROXY
        else
          ipt nat -A ISTIO_INBOUND -p tcp --dport "$port" -j ISTIO_IN_REDIRECT
        fi
      done
    fi
  fi

  # --- Outbound: OUTPUT -> ISTIO_OUTPUT -----------------------------------------------------

  # Everything the pod sends is looked at by ISTIO_OUTPUT (UDP only matters to the DNS rules:
  # the redirects themselves are TCP-only).
  ipt nat -A OUTPUT -j ISTIO_OUTPUT

  for port in $(split "$OUTBOUND_PORTS_EXCLUDE"); do
    # Excluded destination port: never captured, whoever connects. First, so that it wins
    # over the loopback rules below.
    ipt nat -A ISTIO_OUTPUT -p tcp --dport "$port" -j RETURN
    ipt nat -A ISTIO_OUTPUT -p udp --dport "$port" -j RETURN
  done

  # 127.0.0.6 is the source address Envoy uses for inbound passthrough connections to the
  # app: those are already proxied, never capture them again.
  ipt nat -A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN

  # Istio's rule: when -i explicitly lists a loopback range, the app's own loopback traffic
  # is meant to be captured, so the "app over lo is not captured" rules are left out.
  loopback_included=0
  if printf '%s\n' "$INCLUDE_CIDRS" | grep -q '^127\.'; then loopback_included=1; fi

  for uid in $(split "$PROXY_UID"); do
    # The app calling itself through a service VIP: app -> sidecar outbound -> (the
    # endpoint is this pod's own IP, so the kernel routes it over lo) -> must go through the
    # sidecar's inbound side like any other caller. With DNS capture, port 53 is left out:
    # the agent's upstream queries must not loop through the inbound side.
    if [ "$REDIRECT_DNS" = 1 ]; then
      ipt nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports "53,$INBOUND_TUNNEL_PORT" -m owner --uid-owner "$uid" -j ISTIO_IN_REDIRECT
    else
      ipt nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport "$INBOUND_TUNNEL_PORT" -m owner --uid-owner "$uid" -j ISTIO_IN_REDIRECT
    fi
    if [ "$loopback_included" = 0 ]; then
      # The app calling itself over lo (localhost, or its own pod IP): not captured, the
      # same as without a sidecar (TCP to a local DNS server excepted under --redirect-dns).
      if [ "$REDIRECT_DNS" = 1 ]; then
        ipt nat -A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner "$uid" -j RETURN
      else
        ipt nat -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner "$uid" -j RETURN
      fi
    fi
    # The proxy's own connections (to upstreams, to the app) are never captured: without
    # this rule every connection the sidecar opens would come back to it, forever.
    ipt nat -A ISTIO_OUTPUT -m owner --uid-owner "$uid" -j RETURN
  done

  for gid in $(split "$PROXY_GID"); do
    # The same three rules by group, for a proxy whose UID differs but whose GID is the
    # proxy's (Istio sets both; a process may change one without the other). Istio keeps
    # the port-53 exception out of the first one for groups.
    ipt nat -A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport "$INBOUND_TUNNEL_PORT" -m owner --gid-owner "$gid" -j ISTIO_IN_REDIRECT
    if [ "$loopback_included" = 0 ]; then
      if [ "$REDIRECT_DNS" = 1 ]; then
        ipt nat -A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner "$gid" -j RETURN
      else
        ipt nat -A ISTIO_OUTPUT -o lo -m owner ! --gid-owner "$gid" -j RETURN
      fi
    fi
    ipt nat -A ISTIO_OUTPUT -m owner --gid-owner "$gid" -j RETURN
  done

  if [ "$REDIRECT_DNS" = 1 ]; then
    add_dns_capture
  fi

  # Connections to 127.0.0.1 are the app talking to a local process (or to the sidecar's
  # ports on purpose, e.g. http_proxy=127.0.0.1:15001): not captured.
  ipt nat -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN

  for cidr in $EXCLUDE_CIDRS; do
    # Excluded destination range (-x): reached directly. Before the inclusions, so it wins.
    ipt nat -A ISTIO_OUTPUT -d "$cidr" -j RETURN
  done

  for port in $(split "$OUTBOUND_PORTS_INCLUDE"); do
    # Included destination port (-q): captured whatever the destination address.
    ipt nat -A ISTIO_OUTPUT -p tcp --dport "$port" -j ISTIO_REDIRECT
  done

  if [ "$INCLUDE_CIDRS" = '*' ]; then
    # Everything else the app sends goes through the sidecar.
    ipt nat -A ISTIO_OUTPUT -j ISTIO_REDIRECT
    for nic in $(split "$KUBE_VIRT_INTERFACES"); do
      # What a VM sends through its interface is its outbound traffic: to the sidecar.
      ipt nat -I PREROUTING 1 -i "$nic" -j ISTIO_REDIRECT
    done
  else
    for cidr in $INCLUDE_CIDRS; do
      for nic in $(split "$KUBE_VIRT_INTERFACES"); do
        ipt nat -I PREROUTING 1 -i "$nic" -d "$cidr" -j ISTIO_REDIRECT
      done
      # Only the listed ranges (typically the cluster's service and pod CIDRs) go through
      # the sidecar; anything else leaves the pod directly (end of chain: no capture).
      ipt nat -A ISTIO_OUTPUT -d "$cidr" -j ISTIO_REDIRECT
    done
  fi

  if [ "$tproxy" = 1 ]; then
    add_tproxy_marks
  fi
}

# --redirect-dns (run.go: SetupDNSRedir): the app's DNS goes to the agent's DNS proxy, and
# conntrack zones keep the two legs of a UDP query apart.
add_dns_capture() {
  ipt raw -A OUTPUT -j ISTIO_OUTPUT_DNS
  ipt nat -A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
  if [ "$CAPTURE_ALL_DNS" = 1 ]; then
    # Any server: all TCP and UDP to port 53.
    ipt nat -A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports "$DNS_PORT"
    ipt nat -A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port "$DNS_PORT"
  else
    # Only the nameservers of resolv.conf: a local resolver (dnsmasq) forwarding to another
    # server must not loop back to the agent.
    for s in $DNS_SERVERS; do
      ipt nat -A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d "$s/32" -j REDIRECT --to-ports "$DNS_PORT"
    done
    for s in $DNS_SERVERS; do
      ipt nat -A ISTIO_OUTPUT_DNS -p udp --dport 53 -d "$s/32" -j REDIRECT --to-port "$DNS_PORT"
    done
  fi
  # Conntrack zones: the proxy's queries upstream (zone 1) and its answers to the app
  # (zone 2) must not share entries with the app's own query (UDP conntrack races).
  for uid in $(split "$PROXY_UID"); do
    ipt raw -A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner "$uid" -j CT --zone 1
    ipt raw -A ISTIO_OUTPUT_DNS -p udp --sport "$DNS_PORT" -m owner --uid-owner "$uid" -j CT --zone 2
  done
  for gid in $(split "$PROXY_GID"); do
    ipt raw -A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner "$gid" -j CT --zone 1
    ipt raw -A ISTIO_OUTPUT_DNS -p udp --sport "$DNS_PORT" -m owner --gid-owner "$gid" -j CT --zone 2
  done
  ipt raw -A PREROUTING -j ISTIO_INBOUND
  if [ "$CAPTURE_ALL_DNS" = 1 ]; then
    ipt raw -A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2
    ipt raw -A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1
  else
    for s in $DNS_SERVERS; do
      ipt raw -A ISTIO_OUTPUT_DNS -p udp --dport 53 -d "$s/32" -j CT --zone 2
      ipt raw -A ISTIO_INBOUND -p udp --sport 53 -s "$s/32" -j CT --zone 1
    done
  fi
}

# TPROXY mode's marks (run.go, end of Run) and policy route (tools/common/tproxy).
add_tproxy_marks() {
  # The mark set on diverted packets is kept on the connection, so the replies of the
  # sidecar's transparent socket are routed back the same way.
  ipt mangle -A PREROUTING -p tcp -m mark --mark "$TPROXY_MARK" -j CONNMARK --save-mark
  # Already marked (sidecar -> app): not marked again.
  ipt mangle -A OUTPUT -p tcp -o lo -m mark --mark "$TPROXY_MARK" -j RETURN
  for uid in $(split "$PROXY_UID"); do
    # The sidecar's outbound side calling this pod (app -> VIP -> sidecar -> pod IP over
    # lo) is marked so that the inbound side still diverts it.
    ipt mangle -A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner "$uid" -j MARK --set-mark "$OUTBOUND_MARK"
  done
  for gid in $(split "$PROXY_GID"); do
    ipt mangle -A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner "$gid" -j MARK --set-mark "$OUTBOUND_MARK"
  done
  ipt mangle -A OUTPUT -p tcp -m connmark --mark "$TPROXY_MARK" -j CONNMARK --restore-mark
  if [ -n "$INBOUND_PORTS_INCLUDE" ]; then
    # Loops: what is already marked, the inbound passthrough (127.0.0.6) and the app calling
    # itself over lo (not marked 1338 by the sidecar) are not diverted.
    ipt mangle -I ISTIO_INBOUND 1 -p tcp -m mark --mark "$TPROXY_MARK" -j RETURN
    ipt mangle -I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN
    ipt mangle -I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark "$OUTBOUND_MARK" -j RETURN
    # Marked packets are delivered locally, to the transparent socket.
    if [ "$OP" = delete ]; then
      iproute -f inet rule del fwmark "$TPROXY_MARK" lookup "$TPROXY_ROUTE_TABLE"
      iproute -f inet route flush table "$TPROXY_ROUTE_TABLE"
    elif [ "$OP" = add ]; then
      iproute -f inet rule add fwmark "$TPROXY_MARK" lookup "$TPROXY_ROUTE_TABLE"
      iproute -f inet route add local 0.0.0.0/0 dev lo table "$TPROXY_ROUTE_TABLE"
    fi
  fi
}

# ---------------------------------------------------------------------------------------------

if [ "$DRY_RUN" = 0 ]; then preflight; fi

if [ "$CLEAN" = 1 ]; then
  remove_capture
  [ "$DRY_RUN" = 1 ] || info "capture removed"
  exit 0
fi

# Replace, never add to, a previous capture: that is what makes a re-run safe.
if [ "$DRY_RUN" = 0 ]; then remove_capture; fi
add_capture
if [ "$DRY_RUN" = 0 ]; then
  info "capture set up ($INTERCEPTION_MODE): outbound -> :$PROXY_PORT, inbound -> :$INBOUND_CAPTURE_PORT, proxy uid $PROXY_UID gid $PROXY_GID"
  # The final tables in the init container's log, as istio-init prints them.
  if [ "$QUIET" = 0 ] && command -v "$IPTABLES-save" >/dev/null 2>&1; then "$IPTABLES-save" >&2 || true; fi
fi

if [ "$RUN_VALIDATION" = 1 ] && [ "$DRY_RUN" = 0 ]; then
  # istio-validation makes a connection through the rules and reads its original destination
  # back; a shell cannot, so this checks each rule of the plan with `iptables -C` instead.
  OP=check
  add_capture
  if [ "$MISSING" = 1 ]; then
    echo "$prog: error: iptables validation failed; the workload is not ready for the mesh" >&2
    exit 126
  fi
  info "validation passed, iptables rules established"
fi
