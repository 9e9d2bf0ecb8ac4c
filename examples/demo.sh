#!/usr/bin/env bash
# The demo: host-stub (a small gateway) loads libimessage from a plugins folder and talks to
# imsg-sim, a simulated Mac, so it runs on any machine. The simulator receives a few messages
# a second or two after start; routed messages print as JSON lines on stdout, the built-in
# echo agent answers them, and the pairing request of an unknown sender is logged on stderr.
#
#   ./examples/demo.sh              runs until Ctrl-C
#   DEMO_SECONDS=8 ./examples/demo.sh   stops by itself after 8 seconds
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --workspace --bins --lib
# Where cargo put them: `target/` unless CARGO_TARGET_DIR or a cargo config says otherwise.
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release"

case "$(uname -s)" in
    Darwin) lib=libimessage.dylib ;;
    *) lib=libimessage.so ;;
esac

work="$(mktemp -d "${TMPDIR:-/tmp}/imessage-demo.XXXXXX")"
mkdir -p "$work/plugins"
cp "$bin/$lib" "$work/plugins/"
# Every simulator process of this run (watcher, sender) shares one database journal.
export IMSG_SIM_SHARED="$work/chat.journal"
cat > "$work/gateway.json5" <<JSON5
{
  plugins: { dir: "./plugins" },
  stateDir: "./state",
  channels: {
    imessage: {
      cliPath: "$bin/imsg-sim",
      // imsg-sim reads a .json5 --db path as its scenario.
      dbPath: "$PWD/examples/demo/scenario.json5",
      allowFrom: ["+15550001111"],
    },
  },
  messages: { groupChat: { mentionPatterns: ["@bot\\\\b"] } },
}
JSON5
echo "demo folder: $work (config, plugins, state)" >&2

run=("$bin/host-stub" --config "$work/gateway.json5" gateway --reply echo)
if [ -n "${DEMO_SECONDS:-}" ]; then
    exec timeout --preserve-status -s INT "$DEMO_SECONDS" "${run[@]}"
else
    exec "${run[@]}"
fi
