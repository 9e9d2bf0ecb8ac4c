"""A small real gateway in Python over the channel plugin C ABI (chp.py).

    python3 gateway.py <config.json> <state-dir> <delivered.jsonl> [library]

The library is the last argument or $CHP_LIBRARY (e.g. plugins/libimessage.so); the config
is the gateway config as plain JSON ({"channels": {"imessage": {...}}}). The gateway starts
the plugin asking for batches, prints every routed message as one JSON line on stdout,
appends each delivery to <delivered.jsonl> and fsyncs it (once per delivery or batch)
before it acknowledges, and answers each message with an echo agent: a `send` of
"echo: <text>" whose idempotency key is derived from the messageId, so a redelivered message
is never answered twice. Plugin logs go to stderr. SIGINT, SIGTERM or EOF on stdin posts
`stop`; the gateway drains until `plugin.closed`, frees the instance and exits 0.

asyncio, standard library only, Python 3.9+. Nothing here blocks the event loop: the loop
waits on chp_wakeup_fd with add_reader and drains with chp_next_message(h, 0); requests are
posted, and their responses matched by id.
"""

import asyncio
import itertools
import json
import os
import signal
import sys
from typing import Any, Dict, List, Optional

import chp


def message_events(event: dict) -> List[dict]:
    """The routed messages of a delivery (a batch holds several); other types are skipped."""
    if event.get("type") == "batch":
        return [m for e in event.get("events", []) for m in message_events(e)]
    return [event] if event.get("type") == "message" else []


def echo_request(message: dict) -> dict:
    """The echo agent's reply to one routed message."""
    return {
        "accountId": message["accountId"],
        "to": message["to"],
        "text": f"echo: {message['text']}",
        "idempotencyKey": f"echo:{message['messageId']}",
    }


class Gateway:
    def __init__(self, instance: chp.Instance, delivered_path: str, echo: bool = True):
        self.h = instance
        self.echo = echo
        self.delivered = open(delivered_path, "ab")
        self.ids = itertools.count(1)
        self.pending: Dict[Any, asyncio.Future] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self.stopping = False

    def request(self, method: str, params: dict) -> "asyncio.Future":
        """Posts a request; the future gets the response (result or error object)."""
        rid = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[rid] = future
        self.h.post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return future

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.request("stop", {})

    def on_wakeup(self, fd: int) -> None:
        """The wakeup fd is readable: discard its bytes, then drain the queue."""
        try:
            while os.read(fd, 256):
                pass
        except BlockingIOError:
            pass
        while not self.closed.done():
            message = self.h.next_message(0)
            if message is None:
                break
            self.handle(message)

    def handle(self, message: dict) -> None:
        method = message.get("method")
        if method == "log":
            print("log:", json.dumps(message.get("params")), file=sys.stderr, flush=True)
        elif method == "plugin.closed":
            print("gateway: plugin.closed", file=sys.stderr, flush=True)
            self.closed.set_result(None)
        elif method == "deliver":
            self.deliver(message["id"], message.get("params") or {})
        elif method is not None and "id" in message:
            # `host.request` (config.write, …) or anything newer: this host implements none.
            if method == "host.request":
                method = (message.get("params") or {}).get("method")
            self.h.post({"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": -32601, "message": f"this host does not implement {method}"}})
        elif message.get("id") in self.pending:
            self.pending.pop(message["id"]).set_result(message)
        else:
            print("gateway: ignored:", json.dumps(message), file=sys.stderr, flush=True)

    def deliver(self, rid: Any, event: dict) -> None:
        """Durable first (one write, one fsync), then the acknowledgement, then the replies.
        A failed write refuses it, and the plugin delivers the same events again later."""
        messages = message_events(event)
        lines = "".join(json.dumps(m, separators=(",", ":")) + "\n" for m in messages)
        try:
            self.delivered.write(lines.encode("utf-8"))
            self.delivered.flush()
            os.fsync(self.delivered.fileno())
        except OSError as e:
            print(f"gateway: writing {self.delivered.name}: {e}: refused", file=sys.stderr)
            self.h.post({"jsonrpc": "2.0", "id": rid, "error": {
                "code": -32000, "message": "the host could not store it"}})
            return
        sys.stdout.write(lines)
        sys.stdout.flush()
        self.h.post({"jsonrpc": "2.0", "id": rid, "result": {}})
        for m in messages if self.echo else ():
            sent = self.request("send", echo_request(m))
            sent.add_done_callback(report_failure("send"))


def report_failure(what: str):
    def callback(future: "asyncio.Future") -> None:
        response = future.result()
        if "error" in response:
            print(f"gateway: {what} failed: {json.dumps(response['error'])}", file=sys.stderr)
    return callback


def watch_stdin_eof(loop: asyncio.AbstractEventLoop, gateway: Gateway) -> None:
    """EOF on stdin is stop, as for `host-stub serve` (a /dev/null or file stdin is not watched)."""
    def on_input() -> None:
        if not os.read(0, 4096):
            loop.remove_reader(0)
            gateway.stop()
    try:
        loop.add_reader(0, on_input)
    except (OSError, ValueError):
        pass  # epoll refuses regular files and /dev/null: signals still stop it


async def run(instance: chp.Instance, config: dict, state_dir: str, delivered: str) -> int:
    loop = asyncio.get_running_loop()
    gateway = Gateway(instance, delivered)
    fd = instance.wakeup_fd()
    loop.add_reader(fd, gateway.on_wakeup, fd)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.stop)
    watch_stdin_eof(loop, gateway)
    started = await gateway.request("start", {
        "config": config, "stateDir": state_dir, "logLevel": "info",
        "host": {"features": ["deliver.batch"]},
    })
    failed = "error" in started
    print(f"gateway: start: {json.dumps(started)}", file=sys.stderr, flush=True)
    if failed:
        gateway.stop()
    await gateway.closed
    loop.remove_reader(fd)
    return 1 if failed else 0


def main(argv: List[str]) -> int:
    if sys.version_info < (3, 9):
        print(f"gateway: needs Python 3.9 or later, this is {sys.version.split()[0]}", file=sys.stderr)
        return 2
    library: Optional[str] = argv[4] if len(argv) > 4 else os.environ.get("CHP_LIBRARY")
    if len(argv) < 4 or not library:
        print("usage: gateway.py <config.json> <state-dir> <delivered.jsonl> [library]"
              " (or set CHP_LIBRARY)", file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        print(f"gateway: reading {argv[1]}: {e}", file=sys.stderr)
        return 1
    try:
        instance = chp.Library(library).new()
    except chp.ChpError as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(instance, config, argv[2], argv[3]))
    finally:
        instance.free()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
