// One JSON-RPC 2.0 peer over a pair of streams, one JSON object per line (the stdio bridge of
// `host-stub serve`). Both sides send requests: ours get ids from our own counter, theirs are
// answered through `onRequest`. Everything is asynchronous stream I/O on the event loop; no
// call here blocks it.

import { probe } from "./probe.js";

/**
 * @typedef {{ code: number, message: string, data?: unknown }} RpcErrorObject
 * @typedef {(method: string, params: any) => Promise<unknown>} RequestHandler
 * @typedef {(method: string, params: any) => void} NotificationHandler
 */

export class RpcError extends Error {
  /** @param {string} method @param {RpcErrorObject} error */
  constructor(method, error) {
    const data = /** @type {any} */ (error.data);
    const detail = data && typeof data === "object" && typeof data.message === "string" ? `: ${data.message}` : "";
    super(`${method} failed (${error.code}) ${error.message}${detail}`);
    this.code = error.code;
    this.data = error.data;
  }
}

/** Splits a byte stream into lines; a partial line waits for the rest. */
export class LineSplitter {
  constructor() {
    this.rest = "";
  }
  /** @param {string} chunk @returns {string[]} */
  push(chunk) {
    const parts = (this.rest + chunk).split("\n");
    this.rest = parts.pop() ?? "";
    return parts.filter((l) => l.trim() !== "");
  }
}

export class RpcPeer {
  /**
   * @param {NodeJS.ReadableStream} input what the other side writes
   * @param {NodeJS.WritableStream} output where we write
   * @param {{ onRequest: RequestHandler, onNotification: NotificationHandler, onProtocolError?: (line: string, why: string) => void }} handlers
   */
  constructor(input, output, handlers) {
    this.output = output;
    this.handlers = handlers;
    this.nextId = 1;
    /** @type {Map<number, { method: string, resolve: (v: any) => void, reject: (e: Error) => void }>} */
    this.pending = new Map();
    this.closed = false;
    const splitter = new LineSplitter();
    input.setEncoding?.("utf8");
    // Everything the child sends starts here: splitting, parsing, and the synchronous start of
    // each handler (the loop probe times it, see probe.js).
    input.on(
      "data",
      probe.wrap("rpc.data", (chunk) => {
        for (const line of splitter.push(String(chunk))) this.#receive(line);
      }),
    );
    input.on("end", () => this.close(new Error("the bridge closed its output")));
    input.on("error", (e) => this.close(e));
    // A write to a child that has just exited fails with EPIPE, emitted as an 'error' event;
    // unheard, it would take the whole gateway down with it.
    output.on?.("error", (e) => this.close(new Error(`cannot write to the bridge: ${e.message}`)));
  }

  /** @param {string} method @param {unknown} params @returns {Promise<any>} */
  request(method, params) {
    if (this.closed) return Promise.reject(new Error(`cannot send ${method}: the bridge is closed`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { method, resolve, reject });
      this.#write({ jsonrpc: "2.0", id, method, params });
    });
  }

  /** Fails every outstanding request; later requests fail at once. @param {Error} why */
  close(why) {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new Error(`${p.method} not answered: ${why.message}`));
    this.pending.clear();
  }

  /** @param {unknown} msg */
  #write(msg) {
    if (this.closed) return;
    probe.slice("rpc.write", () => this.output.write(`${JSON.stringify(msg)}\n`));
  }

  /** @param {string} line */
  #receive(line) {
    let msg;
    try {
      msg = JSON.parse(line);
    } catch {
      this.handlers.onProtocolError?.(line, "not JSON");
      return;
    }
    if (msg === null || typeof msg !== "object") {
      this.handlers.onProtocolError?.(line, "not an object");
    } else if (typeof msg.method === "string" && msg.id !== undefined && msg.id !== null) {
      this.#answer(msg.id, msg.method, msg.params);
    } else if (typeof msg.method === "string") {
      this.handlers.onNotification(msg.method, msg.params);
    } else {
      this.#settle(msg, line);
    }
  }

  /** @param {unknown} id @param {string} method @param {unknown} params */
  async #answer(id, method, params) {
    try {
      const result = await this.handlers.onRequest(method, params);
      this.#write({ jsonrpc: "2.0", id, result: result ?? {} });
    } catch (e) {
      const err = /** @type {any} */ (e);
      const code = typeof err?.rpcCode === "number" ? err.rpcCode : -32000;
      this.#write({ jsonrpc: "2.0", id, error: { code, message: String(err?.message ?? err) } });
    }
  }

  /** @param {any} msg @param {string} line */
  #settle(msg, line) {
    const p = typeof msg.id === "number" ? this.pending.get(msg.id) : undefined;
    if (!p) {
      // A late answer to a request we gave up on; the protocol says to ignore it.
      this.handlers.onProtocolError?.(line, "response to an unknown id");
      return;
    }
    this.pending.delete(msg.id);
    if (msg.error) p.reject(new RpcError(p.method, msg.error));
    else p.resolve(msg.result);
  }
}

/** An error that answers a request with a specific JSON-RPC code. */
export class HandlerError extends Error {
  /** @param {number} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.rpcCode = code;
  }
}
