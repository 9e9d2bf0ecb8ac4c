#!/usr/bin/env bash
# End-to-end: the imessage-rs OpenClaw channel package inside a real OpenClaw 2026.9.6 gateway,
# driven through imsg-sim. One command: `bash tests/openclaw-e2e.sh`.
#   IMESSAGE_OPENCLAW_CACHE  cache of Node 24 + openclaw (default ~/.cache/imessage-openclaw)
#   IMESSAGE_BIN_DIR         folder with host-stub, imsg-sim, libimessage.so (default: build debug)
set -euo pipefail
tag=openclaw-e2e
source "$(dirname "$0")/openclaw-env.sh"

# 3. The package's own tests (no OpenClaw needed), then the scenarios in a real gateway.
node --test "$repo/examples/openclaw-channel/test/unit.test.mjs"
step "package unit tests passed"
exec node "$repo/examples/openclaw-channel/test/e2e.mjs" --openclaw "$oc_bin" --bin-dir "$IMESSAGE_BIN_DIR"
