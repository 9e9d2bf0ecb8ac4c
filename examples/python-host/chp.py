"""ctypes binding of the channel plugin C ABI (plugin-abi/include/channel_plugin.h).

Standard library only, Python 3.9+. Every `char *` the library returns is copied into a
Python `str` and freed with `chp_string_free` at once; errors become exceptions:

    lib = Library("plugins/libimessage.so")
    print(lib.describe()["id"])
    with lib.new({"ackTimeoutMs": 30000}) as h:
        print(h.call("status", {}))           # blocking: not on the thread that acks
        h.post({"jsonrpc": "2.0", "id": 1, "method": "start", "params": {...}})
        message = h.next_message(0)           # dict, or None when nothing is queued

The functions are safe to call from any thread, except `free` (spec/host-protocol.md §2).
"""

import ctypes
import json
from typing import Any, Optional

ABI_MAJOR = 1

#: What a non-zero `chp_post` return means.
POST_ERRORS = {
    -1: "the instance is closed",
    -2: "NULL or not UTF-8",
    -3: "too many requests queued (drain and retry)",
    -4: "the plugin panicked",
}


class ChpError(Exception):
    """A failure of the C ABI itself (loading, chp_new, chp_post)."""

    def __init__(self, message: str, code: Optional[int] = None):
        super().__init__(message)
        self.code = code


class RpcError(Exception):
    """A JSON-RPC error response: `code` (-32601 …), `message`, `data` (a PluginError)."""

    def __init__(self, error: dict):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.data = error.get("data")


def _encode(value: Any) -> bytes:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text.encode("utf-8")


class Library:
    """One loaded plugin library. It is never unloaded (the C ABI forbids dlclose)."""

    def __init__(self, path: str):
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise ChpError(f"loading {path}: {e}") from e
        # Returned strings are c_void_p, not c_char_p: ctypes would copy a c_char_p and lose
        # the pointer chp_string_free needs.
        signatures = {
            "chp_abi_version": ([], ctypes.c_uint32),
            "chp_describe": ([], ctypes.c_void_p),
            "chp_new": ([ctypes.c_char_p], ctypes.c_void_p),
            "chp_last_error": ([], ctypes.c_void_p),
            "chp_post": ([ctypes.c_void_p, ctypes.c_char_p], ctypes.c_int32),
            "chp_next_message": ([ctypes.c_void_p, ctypes.c_int32], ctypes.c_void_p),
            "chp_wakeup_fd": ([ctypes.c_void_p], ctypes.c_int32),
            "chp_call": ([ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_void_p),
            "chp_free": ([ctypes.c_void_p], None),
            "chp_string_free": ([ctypes.c_void_p], None),
        }
        for name, (argtypes, restype) in signatures.items():
            try:
                f = getattr(lib, name)
            except AttributeError as e:
                raise ChpError(f"{path} does not export {name}") from e
            f.argtypes, f.restype = argtypes, restype
        self._lib = lib
        self.path = path
        version = lib.chp_abi_version()
        if version >> 16 != ABI_MAJOR:
            raise ChpError(
                f"{path} has C ABI {version >> 16}.{version & 0xFFFF}, this binding speaks {ABI_MAJOR}.x"
            )

    def take(self, pointer: Optional[int]) -> Optional[str]:
        """The text of a returned string (None for NULL), freed right away."""
        if not pointer:
            return None
        try:
            return ctypes.string_at(pointer).decode("utf-8")
        finally:
            self._lib.chp_string_free(pointer)

    def abi_version(self) -> int:
        return self._lib.chp_abi_version()

    def describe(self) -> dict:
        text = self.take(self._lib.chp_describe())
        if text is None:
            raise ChpError(f"chp_describe failed: {self.last_error()}")
        return json.loads(text)

    def last_error(self) -> Optional[dict]:
        text = self.take(self._lib.chp_last_error())
        return None if text is None else json.loads(text)

    def new(self, options: Optional[dict] = None) -> "Instance":
        raw = None if options is None else _encode(options)
        handle = self._lib.chp_new(raw)
        if not handle:
            error = self.last_error() or {}
            raise ChpError(f"chp_new: {error.get('message', 'no reason given')}")
        return Instance(self, handle)


class Instance:
    """One plugin instance. `free()` (or leaving a `with` block) is the last call."""

    def __init__(self, library: Library, handle: int):
        self._library = library
        self._lib = library._lib
        self._handle: Optional[int] = handle

    def _h(self) -> int:
        if self._handle is None:
            raise ChpError("the instance was freed")
        return self._handle

    def post(self, message: Any) -> None:
        """Hands the plugin one JSON-RPC message (a dict or JSON text); never blocks."""
        rc = self._lib.chp_post(self._h(), _encode(message))
        if rc != 0:
            raise ChpError(f"chp_post: {POST_ERRORS.get(rc, f'returned {rc}')}", rc)

    def next_message(self, timeout_ms: int = 0) -> Optional[dict]:
        """The next plugin → host message, or None (0: do not wait, negative: wait)."""
        text = self.next_text(timeout_ms)
        return None if text is None else json.loads(text)

    def next_text(self, timeout_ms: int = 0) -> Optional[str]:
        """next_message's JSON text, undecoded: for a host that keeps what it was sent."""
        return self._library.take(self._lib.chp_next_message(self._h(), timeout_ms))

    def wakeup_fd(self) -> int:
        return self._lib.chp_wakeup_fd(self._h())

    def call(self, method: str, params: Any = None) -> Any:
        """A blocking request: its result, or RpcError. Not on the thread that acks."""
        raw = None if params is None else _encode(params)
        text = self._library.take(self._lib.chp_call(self._h(), method.encode("utf-8"), raw))
        if text is None:
            raise ChpError("chp_call returned NULL")
        response = json.loads(text)
        if "error" in response:
            raise RpcError(response["error"])
        return response.get("result")

    def free(self) -> None:
        """Stops the instance if needed (bounded), joins its threads and frees it."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            self._lib.chp_free(handle)

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()
