"""The Python rows of bench-gateway (tests/src/bin/bench-gateway.rs): a Python host run the way
a user runs one, through the C ABI and through the stdio bridge, and the loop they are
compared with.

    python_host.py chp      LIBRARY CONFIG STATE_DIR DELIVERED MAX_BATCH [--echo]
    python_host.py serve    HOST_STUB PLUGINS CONFIG STATE_DIR DELIVERED MAX_BATCH [--echo]
    python_host.py baseline ROUTED DURABLE STARTED BATCH

`chp` is examples/python-host itself: chp.py and gateway.py's asyncio Gateway (wakeup fd,
add_reader), started asking for batches. `serve` drives `host-stub serve` over its stdin and
stdout with a plain blocking loop. Both parse each message once (gateway.decode) and append
each delivery's routed messages, as the plugin's own JSON text, to DELIVERED with one write and
one fsync, acknowledge, then print them as JSON lines on stdout; with --echo they answer every
message as gateway.py's echo agent does. SIGINT stops them
(`stop`, then `plugin.closed`); at exit they print `deliveries D messages M cpu S` on stderr (S:
the main thread's CPU seconds, the Python host's own work).

`baseline` is the floor: it reads ROUTED (the routed JSON lines a host printed), parses each
line, and every BATCH lines writes them to DURABLE, fsyncs and prints them: the hosts' JSON
and durable work without the transport. It writes its start time (unix ns) to STARTED just
before its loop, as imsg-sim does before a burst.
"""

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "python-host"))

import chp  # noqa: E402  (the path above first)
import gateway  # noqa: E402


def start_params(config: dict, state_dir: str, max_batch: int) -> dict:
    # logLevel warn, as bench-gateway runs `host-stub gateway --log-level warn`.
    return {
        "config": config,
        "stateDir": state_dir,
        "logLevel": "warn",
        "host": {"features": ["deliver.batch"], "maxBatch": max_batch},
    }


def read_config(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def report(deliveries: int, messages: int) -> None:
    # thread_time: the host's own Python work (the loop runs on the main thread), without
    # the plugin's threads that share the process in chp mode.
    print(f"deliveries {deliveries} messages {messages} cpu {time.thread_time():.3f}",
          file=sys.stderr, flush=True)


class CountingGateway(gateway.Gateway):
    """gateway.py's Gateway, counting deliveries for the mean batch size."""

    deliveries = 0
    messages = 0

    def deliver(self, rid, kept: gateway.Kept) -> None:
        self.deliveries += 1
        self.messages += len(kept)
        super().deliver(rid, kept)


async def chp_host(instance: chp.Instance, args: List[str], echo: bool) -> int:
    config, state_dir, delivered, max_batch = read_config(args[0]), args[1], args[2], int(args[3])
    loop = asyncio.get_running_loop()
    gw = CountingGateway(instance, delivered, echo=echo)
    fd = instance.wakeup_fd()
    loop.add_reader(fd, gw.on_wakeup, fd)
    loop.add_signal_handler(signal.SIGINT, gw.stop)
    started = await gw.request("start", start_params(config, state_dir, max_batch))
    failed = "error" in started
    if failed:
        print(f"python_host: start: {json.dumps(started)}", file=sys.stderr, flush=True)
        gw.stop()
    await gw.closed
    loop.remove_reader(fd)
    report(gw.deliveries, gw.messages)
    return 1 if failed else 0


def run_chp(args: List[str], echo: bool) -> int:
    instance = chp.Library(args[0]).new()
    try:
        return asyncio.run(chp_host(instance, args[1:], echo))
    finally:
        instance.free()


class Bridge:
    """A host speaking to `host-stub serve`: one JSON-RPC message per line each way."""

    def __init__(self, proc: subprocess.Popen, delivered: str, echo: bool):
        self.proc = proc
        self.durable = open(delivered, "ab")
        self.echo = echo
        self.ids = itertools.count(1)
        self.deliveries = 0
        self.messages = 0

    def post(self, message: dict) -> int:
        self.proc.stdin.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        self.proc.stdin.flush()
        return message.get("id", 0)

    def request(self, method: str, params: dict) -> int:
        rid = next(self.ids)
        return self.post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})

    def deliver(self, rid, kept: gateway.Kept) -> None:
        """Durable first (one write, one fsync), then acknowledged, then printed."""
        messages, lines = gateway.routed_lines(kept)
        self.durable.write(lines)
        self.durable.flush()
        os.fsync(self.durable.fileno())
        self.post({"jsonrpc": "2.0", "id": rid, "result": {}})
        sys.stdout.buffer.write(lines)
        sys.stdout.buffer.flush()
        self.deliveries += 1
        self.messages += len(kept)
        for m in messages if self.echo else ():
            self.request("send", gateway.echo_request(m))

    def handle(self, line: bytes, start_id: int) -> bool:
        """Takes one message from the bridge; False once the session is over."""
        message, kept = gateway.decode(line.decode("utf-8"))
        method = message.get("method")
        if method == "deliver":
            self.deliver(message["id"], kept)
        elif method == "plugin.closed":
            return False
        elif method == "log":
            print("log:", json.dumps(message.get("params")), file=sys.stderr, flush=True)
        elif method is not None and "id" in message:
            self.post({"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": -32601, "message": f"this host does not implement {method}"}})
        elif "error" in message:
            print(f"python_host: {json.dumps(message)}", file=sys.stderr, flush=True)
            return message.get("id") != start_id
        return True


def run_serve(args: List[str], echo: bool) -> int:
    host_stub, plugins, config, state_dir, delivered, max_batch = args[:6]
    proc = subprocess.Popen(
        [host_stub, "--plugins", plugins, "--state-dir", state_dir, "--log-level", "warn",
         "serve", "--channel", "imessage"],
        # A batch is one line of ~100 KiB: read it in large chunks, not 8 KiB ones.
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1 << 20)
    bridge = Bridge(proc, delivered, echo)
    start_id = bridge.request("start", start_params(read_config(config), state_dir, int(max_batch)))
    try:
        for line in proc.stdout:
            if not bridge.handle(line, start_id):
                break
    except KeyboardInterrupt:
        # EOF on the bridge's stdin is `stop`; drain until `plugin.closed`.
        proc.stdin.close()
        for line in proc.stdout:
            if json.loads(line).get("method") == "plugin.closed":
                break
    if not proc.stdin.closed:
        proc.stdin.close()
    code = proc.wait()
    report(bridge.deliveries, bridge.messages)
    return code


def run_baseline(args: List[str]) -> int:
    routed, durable_path, started, batch = args[0], args[1], args[2], int(args[3])
    out = sys.stdout.buffer
    with open(routed, "rb") as src, open(durable_path, "ab") as durable:
        pending: List[bytes] = []

        def commit() -> None:
            data = b"".join(pending)
            durable.write(data)
            durable.flush()
            os.fsync(durable.fileno())
            out.write(data)
            out.flush()
            pending.clear()

        with open(started, "w") as f:
            f.write(str(time.time_ns()))
        for line in src:
            json.loads(line)
            pending.append(line)
            if len(pending) >= batch:
                commit()
        commit()
    return 0


def main(argv: List[str]) -> int:
    echo = "--echo" in argv
    args = [a for a in argv[1:] if a != "--echo"]
    # mode → (runner, argument count after the mode)
    modes = {
        "chp": (lambda rest: run_chp(rest, echo), 5),
        "serve": (lambda rest: run_serve(rest, echo), 6),
        "baseline": (run_baseline, 4),
    }
    mode = modes.get(args[0]) if args else None
    if mode is None or len(args) - 1 != mode[1]:
        print(__doc__, file=sys.stderr)
        return 2
    return mode[0](args[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
