// One OpenClaw account = one `host-stub serve` child running one library instance. The child
// is the crash boundary: a fault in the library ends the child, never the gateway, and the
// account restarts it with backoff. All I/O here is asynchronous pipes and files.

import { spawn } from "node:child_process";
import { promises as fs } from "node:fs";
import path from "node:path";

import { Journal } from "./journal.js";
import { probe } from "./probe.js";
import { configForAccount, eventId, flatten, replyKey, toMsgContext, toSendRequest } from "./map.js";
import { HandlerError, RpcPeer } from "./rpc.js";

/** Host features we speak (plugin_abi::types::features); the library ignores unknown ones. */
export const HOST_FEATURES = ["deliver.batch", "event.reaction", "pairing.host"];

/** Attempts per turn whose dispatch failed before it is given up (backoff 1 s, 2 s, 4 s, 8 s). */
export const TURN_ATTEMPTS = 5;
/**
 * Attempts for a turn OpenClaw declined to run: busy (its restart recovery holds the session,
 * ~5 s without a model) or a duplicate of a turn its recovery already owns (retrying cannot
 * help; it blocks the session's queue). Backoff 1–16 s, ~31 s in all: a compromise measured
 * without a model; a recovery that runs a long model turn can outlast it (see NOTES.md).
 */
export const NOT_RUN_ATTEMPTS = 6;

/** How long a stop waits for turns in flight before it stops the child (OpenClaw itself defers a restart until replies complete). */
export const STOP_DRAIN_MS = 60_000;

/** True when every promise settled within `ms`. @param {Promise<unknown>[]} ps @param {number} ms */
async function settledWithin(ps, ms) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const late = new Promise((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([Promise.allSettled(ps).then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** OpenClaw settled the dispatch without running the turn or sending anything. */
class NotRun extends Error {}

/** A send target without the channel prefix OpenClaw may add. @param {unknown} to */
const conversation = (to) => String(to ?? "").replace(/^imessage:/i, "");

/**
 * @typedef {{ info?: (m: string) => void, warn?: (m: string) => void, error?: (m: string) => void, debug?: (m: string) => void }} Log
 * @typedef {{
 *   accountId: string, cfg: any, hostStub: string, library: string, stateDir: string,
 *   channelRuntime?: any, system?: any, log?: Log,
 *   onStatus?: (patch: Record<string, unknown>) => void,
 *   retryBaseMs?: number,
 * }} BridgeOptions
 */

/**
 * Replies the dispatcher failed to deliver, from the settled receipt OpenClaw returns
 * (`settledReceipt.counts.<kind>.failedBeforeSend|failedAfterSend`); 0 when it gave none.
 * @param {any} result
 */
export function failedSends(result) {
  const counts = result?.settledReceipt?.counts ?? {};
  return Object.values(counts).reduce((n, /** @type {any} */ c) => n + (Number(c?.failedBeforeSend) || 0) + (Number(c?.failedAfterSend) || 0), 0);
}

export class AccountBridge {
  /** @param {BridgeOptions} o */
  constructor(o) {
    this.o = o;
    this.log = o.log ?? {};
    this.dir = path.join(o.stateDir, o.accountId);
    this.journal = new Journal(path.join(this.dir, "journal.jsonl"));
    /** @type {import("node:child_process").ChildProcess | null} */
    this.child = null;
    /** @type {RpcPeer | null} */
    this.rpc = null;
    /** @type {Map<string, Promise<void>>} per-session chains: one turn at a time per session */
    this.sessions = new Map();
    /** @type {string[]} */
    this.finished = [];
    this.flushing = Promise.resolve();
    /** @type {Set<string>} conversations sent to since this start (by us or OpenClaw's outbound adapter) */
    this.sentTo = new Set();
  }

  /** Spawns the child, starts the library, and replays turns a crash left unfinished. */
  async start() {
    await this.journal.load();
    // Taken before this start: snapshot now, since deliveries may arrive (and be journaled)
    // in the same read as the answer to `start`, and those must not run twice.
    const replay = this.journal.unfinished();
    const plugins = await this.#pluginsDir();
    const child = spawn(this.o.hostStub, ["--plugins", plugins, "--state-dir", this.dir, "serve", "--channel", "imessage"], {
      cwd: this.dir,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child = child;
    this.down = false;
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        this.down = true;
        resolve({ code, signal });
      }),
    );
    // `on`, not `once`: a second 'error' (a failed kill, say) unheard would crash the gateway.
    child.on("error", (e) => this.rpc?.close(new Error(`cannot run ${this.o.hostStub}: ${e.message}`)));
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (d) => this.log.debug?.(`[imessage ${this.o.accountId}] ${String(d).trimEnd()}`));
    if (!child.stdout || !child.stdin) throw new Error("host-stub serve has no stdio");
    this.closed = new Promise((resolve) => (this.onClosed = resolve));
    this.rpc = new RpcPeer(child.stdout, child.stdin, {
      onRequest: (m, p) => this.#onRequest(m, p),
      onNotification: (m, p) => this.#onNotification(m, p),
      onProtocolError: (line, why) => this.log.warn?.(`imessage bridge: ignored a line (${why}): ${line.slice(0, 200)}`),
    });
    const description = await this.rpc.request("describe", {});
    const report = await this.rpc.request("start", {
      config: probe.slice("map.configForAccount", () => configForAccount(this.o.cfg, this.o.accountId)),
      stateDir: this.dir,
      watch: true,
      host: { features: HOST_FEATURES },
    });
    for (const w of report?.warnings ?? []) this.log.warn?.(`imessage: ${w}`);
    if (replay.length) {
      const answered = replay.filter((r) => r.replies.length > 0).length;
      this.log.info?.(`imessage ${this.o.accountId}: replaying ${replay.length} turn(s) acknowledged before a restart (${answered} already answered by OpenClaw: their journaled replies are re-sent, not dispatched again)`);
    }
    for (const { id, event, replies } of replay) this.#schedule(id, event, replies, true);
    return description;
  }

  /** @param {Record<string, unknown>} req a SendRequest */
  send(req) {
    if (!this.rpc) return Promise.reject(new Error(`iMessage account ${this.o.accountId} is not running`));
    this.sentTo.add(conversation(req.to));
    return this.rpc.request("send", { accountId: this.o.accountId, ...req });
  }

  /** @param {boolean} probe */
  status(probe) {
    if (!this.rpc) return Promise.reject(new Error(`iMessage account ${this.o.accountId} is not running`));
    return this.rpc.request("status", { probe, accountId: this.o.accountId });
  }

  /**
   * Stops the account: no new turn starts; turns in flight finish first (bounded by
   * `drainMs`) so their replies still reach the live child and the journal; then the library
   * and the child stop (bounded by `graceMs`), and the journal closes. Idempotent: OpenClaw's
   * `stopAccount` and the account loop's own cleanup both call it during a hot reload, and the
   * second call must wait for the first rather than tear down what it is still using.
   * Turns that did not start are left open in the journal and replay at the next start.
   */
  stop(graceMs = 10_000, drainMs = STOP_DRAIN_MS) {
    this.stopping ??= this.#stop(graceMs, drainMs);
    return this.stopping;
  }

  /** @param {number} graceMs @param {number} drainMs */
  async #stop(graceMs, drainMs) {
    this.down = true;
    const child = this.child;
    const rpc = this.rpc;
    if (!child || !rpc) return;
    if (!(await settledWithin([...this.sessions.values()], drainMs))) {
      this.log.warn?.(`imessage ${this.o.accountId}: turns still running ${drainMs} ms after stop; their unsent replies replay at the next start`);
    }
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    try {
      await rpc.request("stop", {}).catch(() => {});
      await Promise.race([this.closed, this.exited]);
      child.stdin?.end();
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
    // A turn that outlived the drain fails its send now (the child is gone) and settles open;
    // its journal entries must still land, so the journal closes after it.
    await Promise.allSettled([...this.sessions.values()]);
    await this.flushing;
    await this.journal.close();
    rpc.close(new Error("stopped"));
    this.rpc = null;
    this.child = null;
  }

  /** host-stub serve scans a folder; give it one holding only our library. */
  async #pluginsDir() {
    const dir = path.join(this.dir, "plugins");
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const link = path.join(dir, path.basename(this.o.library));
    await fs.rm(link, { force: true });
    await fs.symlink(this.o.library, link);
    return dir;
  }

  /** @param {string} method @param {any} params */
  async #onRequest(method, params) {
    if (method === "deliver") return this.#deliver(params);
    if (method === "host.request") return this.#hostRequest(params?.method, params?.payload);
    throw new HandlerError(-32601, `method not found: ${method}`);
  }

  /** @param {string} method @param {any} params */
  #onNotification(method, params) {
    if (method === "plugin.closed") this.onClosed?.();
    else if (method === "log") {
      const level = String(params?.level ?? "info").toLowerCase();
      const line = `[imessage ${this.o.accountId}] ${params?.message ?? JSON.stringify(params)}`;
      (level === "error" ? this.log.error : level === "warn" ? this.log.warn : level === "info" ? this.log.info : this.log.debug)?.(line);
    }
  }

  /**
   * The acknowledgement: journal first (one fsync per delivery), then answer, so the
   * library moves its cursor only past events we hold durably. Turns run after the answer.
   * @param {any} params an InboundEvent
   */
  async #deliver(params) {
    const fresh = [];
    for (const ev of flatten(params)) {
      if (ev?.type !== "message" && ev?.type !== "reaction") continue;
      const id = eventId(ev);
      if (!this.journal.seen(id) && !fresh.some((f) => f.id === id)) fresh.push({ id, event: ev });
    }
    await this.journal.take(fresh);
    setImmediate(probe.wrap("bridge.schedule", () => fresh.forEach(({ id, event }) => this.#schedule(id, event))));
    return {};
  }

  /**
   * @param {string} id @param {any} ev @param {unknown[]} [replies] journaled before a restart
   * @param {boolean} [replayed] taken before this start and not finished then
   */
  #schedule(id, ev, replies = [], replayed = false) {
    const key = String(ev?.sessionKey ?? id);
    const prev = this.sessions.get(key) ?? Promise.resolve();
    const next = prev
      .then(() => this.#runTurnWithRetry(id, ev, replies, replayed))
      // Not settled (the child went away): left open in the journal, replayed at the next start.
      // Handed over: already journaled done at adoption.
      .then((outcome) => (outcome === "settled" ? this.#finish(id) : undefined));
    this.sessions.set(key, next);
    next.then(() => {
      if (this.sessions.get(key) === next) this.sessions.delete(key);
    });
  }

  /** Marks ids done, batching whatever finished meanwhile into one fsync. @param {string} id */
  #finish(id) {
    this.finished.push(id);
    this.flushing = this.flushing.then(async () => {
      const ids = this.finished.splice(0);
      await this.journal.finish(ids).catch((e) => this.log.error?.(`imessage: journal: ${e.message}`));
    });
    return this.flushing;
  }

  /**
   * A dispatch that throws has not finished its turn (for example OpenClaw's own restart
   * recovery holding the session right after a crash: "restart recovery claim changed before
   * agent adoption"), so it is tried again; replies already sent reuse their idempotency keys.
   * After the last attempt the turn is given up (logged, marked done) so one poison message
   * cannot replay at every start.
   *
   * Once OpenClaw adopts the turn (its agent run starts: it has recorded the user message and
   * its own restart-recovery claim in its session store), the turn is journaled done at once:
   * after a crash OpenClaw's restart recovery resumes it, and a replay from here would run it
   * a second time. Outcome: "settled" | "handed-over" | "open" (the child went away; the turn
   * stays in the journal and replays at the next start).
   *
   * A turn with `replies` journaled before a restart is not dispatched: OpenClaw ran it and
   * handed us its reply (and has recorded it as finished, so it would refuse it as a duplicate);
   * the journaled send requests are sent again under their keys instead.
   *
   * A replayed turn that OpenClaw still declines after the last attempt, with no reply
   * journaled and never adopted, is one OpenClaw recorded as finished in its session store
   * just before the crash, with its reply not yet handed to us (seen in the SIGKILL e2e: its
   * restart-recovery record lists the turn as terminal, so it refuses it as a duplicate
   * forever, and nothing of it was ever sent). Unless OpenClaw has sent anything to that
   * conversation since this start (then its own restart recovery took the turn: it sends "I'm
   * continuing your interrupted request" and refuses our replay meanwhile; running it again
   * would answer it twice, as one e2e run showed), it is run once more under a fresh `MessageSid`
   * (`<messageId>:replay`), so OpenClaw takes it as a new turn; its reply keeps the message's
   * own idempotency keys, so the library never sends twice what it already sent.
   * @param {string} id @param {any} ev @param {unknown[]} [replies] @param {boolean} [replayed]
   */
  async #runTurnWithRetry(id, ev, replies = [], replayed = false) {
    const turn = { adopted: false };
    let rerun = false;
    const handOver = () => {
      if (turn.adopted) return;
      turn.adopted = true;
      this.#finish(id);
    };
    for (let attempt = 1; ; attempt++) {
      // Stopping: a turn that has not started stays open in the journal for the next start.
      if (this.down) return turn.adopted ? "handed-over" : "open";
      try {
        if (replies.length) await this.#resend(id, replies);
        else await this.#runTurn(id, ev, handOver);
        return turn.adopted ? "handed-over" : "settled";
      } catch (e) {
        const msg = /** @type {any} */ (e)?.message ?? String(e);
        const limit = e instanceof NotRun ? NOT_RUN_ATTEMPTS : TURN_ATTEMPTS;
        if (this.down) {
          this.log.warn?.(`imessage: turn for ${id} left for replay at the next start: ${msg}`);
          return turn.adopted ? "handed-over" : "open";
        }
        if (attempt >= limit && e instanceof NotRun && replayed && !rerun && !turn.adopted && !replies.length && !this.sentTo.has(conversation(ev.to))) {
          this.log.warn?.(`imessage: OpenClaw ended the turn for ${id} before the restart without handing over its reply, and refuses it as a duplicate now; running it once more as ${ev.messageId}:replay`);
          rerun = true;
          ev = { ...ev, messageSid: `${ev.messageId}:replay` };
          attempt = 0;
          continue;
        }
        if (attempt >= limit) {
          this.log.error?.(`imessage: turn for ${id} failed after ${attempt} attempt(s), giving up: ${msg}`);
          return turn.adopted ? "handed-over" : "settled";
        }
        this.log.warn?.(`imessage: turn for ${id} not done (attempt ${attempt} of ${limit}), retrying: ${msg}`);
        await new Promise((r) => setTimeout(r, Math.min((this.o.retryBaseMs ?? 500) * 2 ** attempt, 30_000)));
      }
    }
  }

  /**
   * Sends the replies journaled for a turn before a restart, under their own keys: the send
   * ledger answers an already-sent key without sending it again.
   * @param {string} id @param {unknown[]} replies
   */
  async #resend(id, replies) {
    let replayed = 0;
    for (const req of replies) {
      const r = await this.send(/** @type {Record<string, unknown>} */ (req));
      if (r?.replayed) replayed++;
    }
    this.o.onStatus?.({ lastOutboundAt: Date.now() });
    this.log.info?.(`imessage: turn for ${id} was answered before the restart; re-sent its ${replies.length} journaled reply payload(s) (${replayed} already sent)`);
  }

  /** @param {string} id journal id @param {any} ev @param {() => void} [onAdopted] */
  async #runTurn(id, ev, onAdopted) {
    this.o.onStatus?.({ lastInboundAt: Date.now() });
    if (ev.type === "reaction") {
      // A tapback is context for the next turn, not a turn of its own (as in OpenClaw).
      this.o.system?.enqueueSystemEvent?.(ev.text, { sessionKey: ev.sessionKey, contextKey: ev.contextKey });
      return;
    }
    const rt = this.o.channelRuntime;
    if (!rt?.reply?.dispatchReplyWithBufferedBlockDispatcher) throw new Error("OpenClaw gave no channel runtime to dispatch with");
    const raw = probe.slice("map.toMsgContext", () => toMsgContext(ev));
    const ctx = rt.reply.finalizeInboundContext ? rt.reply.finalizeInboundContext(raw) : raw;
    let index = 0;
    /** @type {unknown} */
    let undelivered = null;
    let adopted = false;
    const result = await rt.reply.dispatchReplyWithBufferedBlockDispatcher({
      ctx,
      cfg: this.o.cfg,
      replyOptions: {
        onAgentRunStart: () => {
          adopted = true;
          onAdopted?.();
        },
      },
      dispatcherOptions: {
        deliver: async (/** @type {any} */ payload) => {
          const i = index++;
          const req = probe.slice("map.toSendRequest", () =>
            toSendRequest(payload, {
              accountId: this.o.accountId,
              to: ev.to,
              idempotencyKey: replyKey(this.o.accountId, ev.messageId, i),
            }),
          );
          if (req) {
            // Durable before it is sent: OpenClaw has already recorded this turn as finished
            // and will not answer it again after a crash (see journal.js).
            await this.journal.reply(id, i, req);
            await this.send(req);
          }
          this.o.onStatus?.({ lastOutboundAt: Date.now() });
        },
        // OpenClaw reports a failed deliver here (and in the settled receipt) and settles the
        // dispatch normally; the turn must not be marked done then, or the reply would be lost.
        onError: (/** @type {any} */ e) => {
          undelivered ??= e;
        },
      },
    });
    if (undelivered || failedSends(result) > 0) throw new Error(`a reply to ${ev.messageId} was not sent: ${/** @type {any} */ (undelivered)?.message ?? "the dispatcher reported a failed delivery"}`);
    // Busy (its restart recovery holds the session), duplicate or aborted: OpenClaw returns
    // without an agent run or a reply, and (for busy) releases its dedupe claim, expecting the
    // channel to deliver the message again.
    if (!adopted && index === 0) throw new NotRun(`OpenClaw did not run the turn for ${ev.messageId} (no agent run, no reply)`);
    this.log.debug?.(`imessage: turn for ${ev.messageId} settled, ${index} reply payload(s), adopted=${adopted}`);
  }

  /**
   * `pairing.host`: the library keeps its pairing requests and allow store in OpenClaw's
   * pairing runtime, so `openclaw pairing list/approve imessage` see and change them.
   * @param {string} method @param {any} payload
   */
  async #hostRequest(method, payload) {
    const pairing = this.o.channelRuntime?.pairing;
    const accountId = this.o.accountId;
    // The e2e test reads this line to tell "the library does not use pairing.host yet" apart
    // from a broken mapping.
    this.log.info?.(`imessage ${accountId}: host.request ${method}`);
    if (method === "pairing.upsert" && pairing?.upsertPairingRequest) {
      const senderId = String(payload?.senderId ?? "");
      if (!senderId) throw new HandlerError(-32602, "pairing.upsert: senderId is required");
      return pairing.upsertPairingRequest({ channel: "imessage", accountId, id: senderId, meta: payload?.meta ?? {} });
    }
    if (method === "pairing.allowFrom" && pairing?.readAllowFromStore) {
      return { allowFrom: await pairing.readAllowFromStore({ channel: "imessage", accountId }) };
    }
    throw new HandlerError(-32601, `host method not supported: ${method}`);
  }
}
