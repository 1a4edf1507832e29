#!/bin/sh
# The image's entrypoint: runs `remora "$@"` as UID/GID 1337 with no capabilities.
#
# Started as root (the image has no USER), it keeps root only for what needs it:
#
#   - `remora sidecar`: opens /proc/net/nf_conntrack (mode 0440, owner root) on descriptor 3
#     and passes `--conntrack-fd 3`. In REDIRECT mode the NAT'd connection's original
#     destination is only in conntrack; the kernel checks the file's permissions at open, so
#     the descriptor stays readable after the UID change. Not opened when the arguments say
#     `--interception-mode NONE|TPROXY` or pass `--conntrack-fd` themselves; when the file
#     cannot be opened (no conntrack in the kernel), remora starts without it and says so.
#     REMORA_CONNTRACK=off skips it.
#   - then `setpriv` switches to UID/GID 1337 (REMORA_UID/REMORA_GID), the proxy's UID that
#     the init container's iptables rules let through uncaptured, clears the supplementary
#     groups, the inheritable and ambient capabilities, the bounding set (when CAP_SETPCAP
#     allows it) and sets no_new_privs; the UID change itself clears the permitted and
#     effective sets. Nothing is left to regain a capability with.
#
# Started as any other UID (Kubernetes `runAsUser: 1337`, `podman run --user`), it runs remora
# as it is: no conntrack descriptor (the proxy then treats captured connections as not
# redirected and logs why), nothing to drop.
set -eu
REMORA=/usr/local/bin/remora
uid=${REMORA_UID:-1337}
gid=${REMORA_GID:-1337}

current=
while read -r key real _; do
  if [ "$key" = Uid: ]; then current=$real; break; fi
done < /proc/self/status
if [ "$current" != 0 ]; then exec "$REMORA" "$@"; fi

if [ "${1:-}" = sidecar ]; then
  want_conntrack=yes
  [ "${REMORA_CONNTRACK:-on}" = off ] && want_conntrack=no
  prev=
  for arg in "$@"; do
    case "$arg" in
      --conntrack-fd|--conntrack-fd=*) want_conntrack=no ;;
      --interception-mode=NONE|--interception-mode=TPROXY) want_conntrack=no ;;
      NONE|TPROXY) [ "$prev" = --interception-mode ] && want_conntrack=no ;;
    esac
    prev=$arg
  done
  if [ "$want_conntrack" = yes ]; then
    if { exec 3</proc/net/nf_conntrack; } 2>/dev/null; then
      shift
      set -- sidecar --conntrack-fd 3 "$@"
    else
      echo "remora-entrypoint: cannot open /proc/net/nf_conntrack (no conntrack in this kernel or network namespace); starting without it" >&2
    fi
  fi
fi

# CAP_SETPCAP (bit 8) in the effective set: the bounding set can be emptied too.
drop_bounding=
while read -r key caps; do
  if [ "$key" = CapEff: ]; then
    if [ $(( 0x$caps & 0x100 )) -ne 0 ]; then drop_bounding=--bounding-set=-all; fi
    break
  fi
done < /proc/self/status

# shellcheck disable=SC2086
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all --ambient-caps=-all $drop_bounding --no-new-privs -- "$REMORA" "$@"
