"""A small real gateway in Python over the channel plugin C ABI (chp.py).

    python3 gateway.py <config.json> <state-dir> <delivered.jsonl> [library]

The library is the last argument or $CHP_LIBRARY (e.g. plugins/libimessage.so); the config
is the gateway config as plain JSON ({"channels": {"imessage": {...}}}). The gateway starts
the plugin asking for batches, appends each delivery's routed messages to <delivered.jsonl>
as JSON lines (each the plugin's own text of that message) and fsyncs it (once per delivery
or batch) before it acknowledges, prints the same lines on stdout, and answers each message
with an echo agent: a `send` of "echo: <text>" whose idempotency key is derived from the
messageId, so a redelivered message is never answered twice. Plugin logs go to stderr. SIGINT, SIGTERM or EOF on stdin posts
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
from typing import Any, Callable, Dict, List, Optional, Tuple

import chp


def message_events(event: dict) -> List[dict]:
    """The routed messages of a delivery (a batch holds several); other types are skipped."""
    if event.get("type") == "batch":
        return [m for e in event.get("events", []) for m in message_events(e)]
    return [event] if event.get("type") == "message" else []


# A gateway stores what it was sent. `decode` parses a message once and keeps the exact text
# of each delivered event, so the stored and printed lines are the plugin's own JSON, byte for
# byte, and no message is serialised again (json.dumps per message was most of the host's work).
_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"
Kept = List[Tuple[Any, str]]


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _expect(text: str, i: int, char: str) -> int:
    i = _skip(text, i)
    if text[i] != char:
        raise ValueError(f"expected {char!r} at character {i}, found {text[i]!r}")
    return _skip(text, i + 1)


def _object(text: str, i: int, member: Callable[[str, int], Tuple[Any, int]]) -> Tuple[dict, int]:
    """The object at text[i] and the index after it; member(key, j) decodes the value at j."""
    obj: Dict[str, Any] = {}
    i = _expect(text, i, "{")
    if text[i] == "}":
        return obj, i + 1
    while True:
        key, i = _DECODER.raw_decode(text, i)
        if not isinstance(key, str):
            raise ValueError(f"an object key is not a string at character {i}")
        obj[key], i = member(key, _expect(text, i, ":"))
        i = _skip(text, i)
        if text[i] == "}":
            return obj, i + 1
        i = _expect(text, i, ",")


def _array(text: str, i: int, kept: Kept) -> Tuple[list, int]:
    """The array at text[i] and the index after it; each element also goes to kept with its text."""
    items: list = []
    i = _expect(text, i, "[")
    if text[i] == "]":
        return items, i + 1
    while True:
        item, end = _DECODER.raw_decode(text, i)
        items.append(item)
        kept.append((item, text[i:end]))
        # The plugin's JSON is compact: `,{` between elements, taken without the calls below.
        if text[end] == "," and text[end + 1] not in _SPACE:
            i = end + 1
            continue
        i = _skip(text, end)
        if text[i] == "]":
            return items, i + 1
        i = _expect(text, i, ",")


def decode(text: str) -> Tuple[Any, Kept]:
    """One plugin → host message (what json.loads gives) and the events it carries, each with
    its JSON text: each of `params.events` for a batch, else `params` itself. ValueError when
    the text is not JSON."""
    start = _skip(text, 0)
    if not text.startswith("{", start):
        return json.loads(text), []
    kept: Kept = []

    def params_member(key: str, i: int) -> Tuple[Any, int]:
        if key == "events" and text.startswith("[", i):
            return _array(text, i, kept)
        return _DECODER.raw_decode(text, i)

    def member(key: str, i: int) -> Tuple[Any, int]:
        if key != "params" or not text.startswith("{", i):
            return _DECODER.raw_decode(text, i)
        params, end = _object(text, i, params_member)
        if "events" not in params:
            kept.append((params, text[i:end]))
        return params, end

    try:
        message, end = _object(text, start, member)
    except IndexError:
        raise ValueError(f"the message ends early ({len(text)} characters)") from None
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data after the message at character {end}")
    return message, kept


def routed_lines(kept: Kept) -> Tuple[List[dict], bytes]:
    """The routed messages among delivered events, and their JSON lines (UTF-8) as the plugin
    wrote them (its JSON is compact: one line each); other event types are skipped."""
    messages: List[dict] = []
    lines: List[str] = []
    for event, text in kept:
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "message":
            messages.append(event)
            lines.append(text)
        elif kind == "batch":
            # A batch inside a batch: the plugin never sends one, but it would still be stored.
            for m in message_events(event):
                messages.append(m)
                lines.append(json.dumps(m, separators=(",", ":"), ensure_ascii=False))
    return messages, ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


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
            text = self.h.next_text(0)
            if text is None:
                break
            self.handle(*decode(text))

    def handle(self, message: dict, kept: Kept) -> None:
        """One plugin → host message; kept: its delivered events with their text (decode)."""
        method = message.get("method")
        if method == "log":
            print("log:", json.dumps(message.get("params")), file=sys.stderr, flush=True)
        elif method == "plugin.closed":
            print("gateway: plugin.closed", file=sys.stderr, flush=True)
            self.closed.set_result(None)
        elif method == "deliver":
            self.deliver(message["id"], kept)
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

    def deliver(self, rid: Any, kept: Kept) -> None:
        """Durable first (one write, one fsync), then the acknowledgement, then the replies.
        A failed write refuses it, and the plugin delivers the same events again later."""
        messages, lines = routed_lines(kept)
        try:
            self.delivered.write(lines)
            self.delivered.flush()
            os.fsync(self.delivered.fileno())
        except OSError as e:
            print(f"gateway: writing {self.delivered.name}: {e}: refused", file=sys.stderr)
            self.h.post({"jsonrpc": "2.0", "id": rid, "error": {
                "code": -32000, "message": "the host could not store it"}})
            return
        # Acknowledged before printed: the plugin prepares the next delivery meanwhile.
        self.h.post({"jsonrpc": "2.0", "id": rid, "result": {}})
        sys.stdout.buffer.write(lines)
        sys.stdout.buffer.flush()
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
