// The C ABI of a channel plugin library (plugin-abi/include/channel_plugin.h) for Node, through
// koffi: the ten chp_* functions, and `Channel`, which speaks the JSON-RPC protocol
// (spec/host-protocol.md §1) without ever blocking the event loop.
//
// Non-blocking, and why it holds: chp_post never blocks; chp_next_message is only called with
// timeout 0; the wakeup fd is watched by libuv's own epoll through a net.Socket on a dup of
// it, so no thread (main or pool) ever parks waiting on the plugin. chp_call (blocking) and
// koffi's `.async` (libuv's shared thread pool) are never used. chp_free joins the plugin's
// threads, so it blocks briefly; it is called once, after plugin.closed.

import net from 'node:net';
import koffi from 'koffi';

/** The C ABI major version this module speaks (channel_plugin.h CHP_ABI_VERSION_MAJOR). */
export const ABI_VERSION_MAJOR = 1;

/** chp_post's return codes, by name (channel_plugin.h). */
const POST_ERRORS = {
  '-1': 'the instance is closed',
  '-2': 'NULL or non-UTF-8 argument',
  '-3': 'too many requests queued (maxQueued)',
  '-4': 'a panic was caught',
};

/**
 * The library's functions. Every `char *` it returns is copied into a JS string, then freed
 * with chp_string_free (a koffi disposable type), so no caller ever sees or leaks a pointer.
 *
 * @typedef {object} ChpLibrary
 * @property {() => number} abiVersion
 * @property {() => string | null} describe
 * @property {(options: string | null) => bigint | null} new
 * @property {() => string | null} lastError
 * @property {(h: bigint, message: string) => number} post
 * @property {(h: bigint, timeoutMs: number) => string | null} nextMessage
 * @property {(h: bigint) => number} wakeupFd
 * @property {(h: bigint, method: string, params: string | null) => string | null} call
 * @property {(h: bigint) => void} free
 */

/**
 * Loads a channel plugin library and declares its C ABI. Refuses a library whose ABI major
 * differs from this module's.
 *
 * @param {string} path the library file (libimessage.so, libimessage.dylib, …)
 * @returns {ChpLibrary}
 */
export function loadLibrary(path) {
  let lib;
  try {
    lib = koffi.load(path);
  } catch (e) {
    throw new Error(`loading the plugin library ${path}: ${e.message}`);
  }
  const stringFree = lib.func('void chp_string_free(void *s)');
  // Copies the string, then hands the pointer back to the library that allocated it.
  const owned = koffi.disposable('str', (ptr) => {
    if (ptr) stringFree(ptr);
  });
  const handle = koffi.pointer(koffi.opaque());
  const fn = (name, ret, args) => {
    try {
      return lib.func(name, ret, args);
    } catch (e) {
      throw new Error(`${path} does not export ${name} (is it a channel plugin with the C ABI?): ${e.message}`);
    }
  };
  const chp = {
    abiVersion: fn('chp_abi_version', 'uint32_t', []),
    describe: fn('chp_describe', owned, []),
    new: fn('chp_new', handle, ['str']),
    lastError: fn('chp_last_error', owned, []),
    post: fn('chp_post', 'int32_t', [handle, 'str']),
    nextMessage: fn('chp_next_message', owned, [handle, 'int32_t']),
    wakeupFd: fn('chp_wakeup_fd', 'int32_t', [handle]),
    call: fn('chp_call', owned, [handle, 'str', 'str']),
    free: fn('chp_free', 'void', [handle]),
  };
  const major = chp.abiVersion() >>> 16;
  if (major !== ABI_VERSION_MAJOR) {
    throw new Error(`${path}: C ABI major ${major}, this host speaks ${ABI_VERSION_MAJOR}`);
  }
  return chp;
}

/** dup(2) from the process itself: the socket below must own a descriptor of its own. */
const dup = koffi.load(null).func('int dup(int fd)');

/**
 * One plugin instance spoken to over JSON-RPC. Host requests are promises resolved by the
 * plugin's responses; plugin requests and notifications go to `onMessage`, whose return
 * value (or promise) for a request becomes the response.
 */
export class Channel {
  /**
   * @param {ChpLibrary} chp
   * @param {object} [options] chp_new's options (`ackTimeoutMs`, `maxQueued`)
   */
  constructor(chp, options) {
    this.chp = chp;
    const h = chp.new(options ? JSON.stringify(options) : null);
    if (!h) throw new Error(`chp_new failed: ${chp.lastError() ?? 'no reason given'}`);
    this.h = h;
    this.nextId = 1;
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void, method: string}>} */
    this.pending = new Map();
    /** @type {(message: any) => any} */
    this.onMessage = () => undefined;
    this.closed = false;
    this.whenClosed = new Promise((resolve) => (this.markClosed = resolve));
    this.watch();
  }

  /** Watches the wakeup fd with libuv's poller; each readable edge drains the queue. */
  watch() {
    const fd = this.chp.wakeupFd(this.h);
    if (fd < 0) throw new Error('chp_wakeup_fd: this platform has no wakeup fd');
    const own = dup(fd);
    if (own < 0) throw new Error(`dup of wakeup fd ${fd} failed`);
    // The socket reads (and so discards) the wakeup bytes; closing it closes only the dup.
    this.socket = new net.Socket({ fd: own, readable: true, writable: false });
    this.socket.on('data', () => this.drain());
    this.socket.on('error', (e) => console.error(`[chp] wakeup fd: ${e.message}`));
    // Messages queued before the watch began may have left no byte unread.
    setImmediate(() => this.drain());
  }

  /** Takes every queued plugin message without waiting (timeout 0). */
  drain() {
    while (!this.closed) {
      const text = this.chp.nextMessage(this.h, 0);
      if (text === null) return;
      let message;
      try {
        message = JSON.parse(text);
      } catch (e) {
        console.error(`[chp] unreadable message from the plugin: ${e.message}: ${text}`);
        continue;
      }
      this.dispatch(message);
    }
  }

  /** @param {any} message one JSON-RPC object from the plugin */
  dispatch(message) {
    if (message.method === undefined) {
      const waiter = this.pending.get(message.id);
      if (!waiter) {
        console.error(`[chp] a response to id ${JSON.stringify(message.id)} nobody asked for`);
        return;
      }
      this.pending.delete(message.id);
      if (message.error) {
        const e = message.error;
        waiter.reject(Object.assign(new Error(`${waiter.method}: ${e.message} (${e.code})`), { rpc: e }));
      } else {
        waiter.resolve(message.result);
      }
      return;
    }
    if (message.method === 'plugin.closed') {
      this.closed = true;
      this.socket.destroy();
      for (const [, w] of this.pending) w.reject(new Error(`${w.method}: the plugin closed`));
      this.pending.clear();
      this.markClosed();
    }
    if (message.id === undefined) {
      // A throwing handler must not become an unhandled rejection (which ends Node).
      Promise.resolve()
        .then(() => this.onMessage(message))
        .catch((e) => console.error(`[chp] handling ${message.method}: ${e.message}`));
      return;
    }
    this.answer(message).catch((e) => console.error(`[chp] answering ${message.method}: ${e.message}`));
  }

  /**
   * Answers a plugin request with what `onMessage` returns, or its error; `undefined` means
   * the host does not know the method (-32601), never a silent success.
   */
  async answer(request) {
    let reply;
    try {
      const result = await this.onMessage(request);
      reply =
        result === undefined
          ? { error: { code: -32601, message: `${request.method}: not handled by this host` } }
          : { result };
    } catch (e) {
      reply = { error: { code: e.code ?? -32000, message: e.message } };
    }
    if (this.closed) return; // too late: the plugin counts it as refused anyway
    this.post({ jsonrpc: '2.0', id: request.id, ...reply });
  }

  /**
   * A host → plugin request; resolves with its result, rejects with its error.
   *
   * @param {string} method
   * @param {any} [params]
   * @returns {Promise<any>}
   */
  request(method, params = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      try {
        this.post({ jsonrpc: '2.0', id, method, params });
      } catch (e) {
        this.pending.delete(id);
        reject(e);
      }
    });
  }

  /** @param {any} message */
  post(message) {
    const rc = this.chp.post(this.h, JSON.stringify(message));
    if (rc !== 0) {
      const what = message.method ?? `the response to ${message.id}`;
      throw new Error(`chp_post of ${what}: ${rc} (${POST_ERRORS[rc] ?? 'unknown code'})`);
    }
  }

  /** Frees the instance (blocks until its threads are joined): after plugin.closed only. */
  free() {
    if (this.h) {
      this.socket.destroy();
      this.chp.free(this.h);
      this.h = null;
    }
  }
}
