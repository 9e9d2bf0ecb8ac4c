// The package's own durability, because OpenClaw's durable ingress queue is closed to
// untrusted (linked or third-party) plugins in 2026.9.6. The journal is what lets us answer
// the library's `deliver` (which moves its cursor) before the turn has run:
//
//   deliver(batch) -> append "taken" for each new id, one fsync -> ack -> dispatch each ->
//   append "done" (one fsync per settled batch)
//
// All appends go through one group commit (at most one write + fsync in flight; whatever
// arrives meanwhile shares the next fsync), on libuv's pool, never on the event loop.
//
// A crash after the ack leaves "taken" without "done": `unfinished()` hands those back at the
// next start, so nothing acknowledged is lost. A redelivery of an id already taken (the
// library replays after a crash before our ack reached it) is acknowledged without a turn.
// A crash between a turn's replies and its "done" replays that turn; its replies then reuse
// the same idempotency keys, so the library's send ledger sends nothing twice.
//
// Each reply payload OpenClaw hands to `deliver` is journaled ("reply", with its send request)
// before it goes to the library. OpenClaw records a turn as finished (its restart-recovery
// "terminal" source id) before the dispatcher delivers the reply, and refuses that message
// ever after as a duplicate; a crash in between would otherwise lose the reply. At the next
// start a turn with journaled replies is not dispatched again: its replies are re-sent under
// their keys (the send ledger drops any already sent) and it is marked done.

import { promises as fs } from "node:fs";
import path from "node:path";

import { probe } from "./probe.js";

/** How many finished ids we remember for de-duplication (host-stub keeps the same number). */
export const REMEMBER_DONE = 10_000;

/**
 * @typedef {{ t: "taken", id: string, event: unknown } | { t: "reply", id: string, i: number, req: unknown } | { t: "done", id: string }} Entry
 */

/**
 * Folds journal lines into state (pure). A torn last line (crash mid-write) is skipped.
 * @param {string} text
 */
export function replay(text) {
  /** @type {Map<string, unknown>} */
  const open = new Map();
  /** @type {Map<string, Map<number, unknown>>} reply payloads journaled for open ids */
  const replies = new Map();
  /** @type {string[]} */
  const done = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let e;
    try {
      e = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof e?.id !== "string") continue;
    if (e.t === "taken") open.set(e.id, e.event);
    else if (e.t === "reply") {
      if (!open.has(e.id) || !Number.isInteger(e.i)) continue;
      if (!replies.has(e.id)) replies.set(e.id, new Map());
      replies.get(e.id)?.set(e.i, e.req);
    } else if (e.t === "done") {
      open.delete(e.id);
      replies.delete(e.id);
      done.push(e.id);
    }
  }
  return { open, replies, done: done.slice(-REMEMBER_DONE) };
}

export class Journal {
  /** @param {string} file */
  constructor(file) {
    this.file = file;
    /** @type {Map<string, unknown>} taken, not yet done */
    this.open = new Map();
    /** @type {Map<string, Map<number, unknown>>} reply send requests of open ids, by payload index */
    this.replies = new Map();
    /** @type {Set<string>} */
    this.done = new Set();
    this.lines = 0;
    /** @type {import("node:fs/promises").FileHandle | null} */
    this.fh = null;
    /** @type {{ text: string, count: number, waiters: { resolve: () => void, reject: (e: Error) => void }[] } | null} the next commit, still open */
    this.batch = null;
    /** The commit in progress (one write + one fsync at a time). */
    this.writer = Promise.resolve();
    this.fsyncs = 0;
  }

  /** Reads the journal, compacts it to what still matters, and opens it for appending. */
  async load() {
    await fs.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const text = await fs.readFile(this.file, "utf8").catch((e) => {
      if (e.code === "ENOENT") return "";
      throw new Error(`cannot read journal ${this.file}: ${e.message}`);
    });
    const state = probe.slice("journal.replay", () => replay(text));
    this.open = state.open;
    this.replies = state.replies;
    this.done = new Set(state.done);
    await this.#compact();
    this.fh = await fs.open(this.file, "a", 0o600);
  }

  /** @param {string} id */
  seen(id) {
    return this.open.has(id) || this.done.has(id);
  }

  /**
   * Events acknowledged before a crash whose turn never finished, in arrival order, each with
   * the reply send requests journaled for it (in payload order; empty if none reached us).
   */
  unfinished() {
    return [...this.open.entries()].map(([id, event]) => ({
      id,
      event,
      replies: [...(this.replies.get(id) ?? new Map()).entries()].sort((a, b) => a[0] - b[0]).map(([, req]) => req),
    }));
  }

  /**
   * Records one reply payload of an open turn durably (one fsync), before it is sent.
   * @param {string} id @param {number} i payload index @param {unknown} req the send request
   */
  async reply(id, i, req) {
    if (!this.open.has(id)) return;
    if (!this.replies.has(id)) this.replies.set(id, new Map());
    this.replies.get(id)?.set(i, req);
    await this.#append([{ t: "reply", id, i, req }]);
  }

  /** Records new events durably (one fsync for all). @param {{ id: string, event: unknown }[]} items */
  async take(items) {
    if (items.length === 0) return;
    for (const it of items) this.open.set(it.id, it.event);
    await this.#append(items.map((it) => ({ t: "taken", id: it.id, event: it.event })));
  }

  /** @param {string[]} ids */
  async finish(ids) {
    if (ids.length === 0) return;
    for (const id of ids) {
      this.open.delete(id);
      this.replies.delete(id);
      this.done.add(id);
    }
    if (this.done.size > REMEMBER_DONE * 2) {
      this.done = probe.slice("journal.trim", () => new Set([...this.done].slice(-REMEMBER_DONE)));
    }
    await this.#append(ids.map((id) => ({ t: "done", id })));
  }

  async close() {
    await this.writer;
    await this.fh?.close();
    this.fh = null;
  }

  /**
   * Group commit: entries appended while a commit is in flight join the next one, so the
   * package holds at most one of libuv's pool threads (write, then fsync) however many turns
   * finish at once, and one fsync covers them all. Resolves once the entries are durable.
   * @param {Entry[]} entries
   * @returns {Promise<void>}
   */
  #append(entries) {
    if (!this.fh) return Promise.reject(new Error(`journal ${this.file} is not open`));
    const text = probe.slice("journal.encode", () => entries.map((e) => `${JSON.stringify(e)}\n`).join(""));
    return new Promise((resolve, reject) => {
      if (!this.batch) {
        this.batch = { text: "", count: 0, waiters: [] };
        this.writer = this.writer.then(() => this.#commit());
      }
      this.batch.text += text;
      this.batch.count += entries.length;
      this.batch.waiters.push({ resolve, reject });
    });
  }

  /** Writes and fsyncs the open batch; never rejects (its waiters get the error). */
  async #commit() {
    const b = this.batch;
    this.batch = null;
    if (!b) return;
    try {
      if (!this.fh) throw new Error(`journal ${this.file} is not open`);
      await this.fh.write(b.text);
      await this.fh.sync();
      this.fsyncs++;
      this.lines += b.count;
      for (const w of b.waiters) w.resolve();
    } catch (e) {
      const err = new Error(`cannot append to journal ${this.file}: ${/** @type {any} */ (e)?.message ?? e}`);
      for (const w of b.waiters) w.reject(err);
    }
  }

  /** Rewrites the file with only open entries and the remembered done ids (write, fsync, rename). */
  async #compact() {
    const tmp = `${this.file}.tmp`;
    const body = probe.slice("journal.compact", () => [
      ...[...this.done].map((id) => JSON.stringify({ t: "done", id })),
      ...[...this.open.entries()].map(([id, event]) => JSON.stringify({ t: "taken", id, event })),
      ...[...this.replies.entries()].flatMap(([id, byIndex]) => [...byIndex.entries()].map(([i, req]) => JSON.stringify({ t: "reply", id, i, req }))),
    ].join("\n"));
    const fh = await fs.open(tmp, "w", 0o600);
    try {
      await fh.write(body ? `${body}\n` : "");
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, this.file);
    this.lines = body ? body.split("\n").length : 0;
  }
}
