#!/usr/bin/env bash
# Parity check: the same inbound rows and config through OpenClaw 2026.9.6 + this package and
# through OpenClaw 2026.9.6 + the official @openclaw/imessage (installed from the npm registry,
# which OpenClaw records as trusted-official), both driven by imsg-sim. Prints a table of
# outcomes and tags every difference. Run by hand: `bash tests/openclaw-compare.sh` (not in CI).
#   IMESSAGE_OPENCLAW_CACHE  cache of Node 24 + openclaw + npm's cache (default ~/.cache/imessage-openclaw)
#   IMESSAGE_BIN_DIR         folder with host-stub, imsg-sim, libimessage.so (default: build debug)
#   COMPARE_ONLY             regex: run only the cases whose name matches
set -euo pipefail
tag=openclaw-compare
source "$(dirname "$0")/openclaw-env.sh"
# OpenClaw installs @openclaw/imessage with npm for each run's fresh OPENCLAW_HOME; keep npm's
# download cache beside the rest so later runs reuse it.
export npm_config_cache="$cache/npm-cache"

exec node "$repo/examples/openclaw-channel/test/compare.mjs" --openclaw "$oc_bin" --bin-dir "$IMESSAGE_BIN_DIR" ${COMPARE_ONLY:+--only "$COMPARE_ONLY"}
