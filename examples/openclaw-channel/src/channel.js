// The OpenClaw channel object for `imessage`, backed by the Rust library through
// `host-stub serve` children (see bridge.js). Shapes follow ChannelPlugin in OpenClaw
// 2026.9.6 (dist/types.plugin-*.d.ts); see NOTES.md for where each one is documented.

import path from "node:path";
import os from "node:os";

import { AccountBridge } from "./bridge.js";
import { locate } from "./locate.js";
import { listAccountIds, toSendRequest, toSnapshot } from "./map.js";
import { probe } from "./probe.js";

/** Running accounts of this gateway process, by account id (for outbound sends). */
/** @type {Map<string, AccountBridge>} */
export const running = new Map();

/** Where the package keeps its journals and the children's state. @param {any} cfg */
export function stateRoot(cfg, env = process.env) {
  const fromCfg = cfg?.plugins?.entries?.["imessage-rs"]?.config?.stateDir;
  if (typeof fromCfg === "string" && fromCfg) return path.resolve(fromCfg);
  const base = env.OPENCLAW_STATE_DIR || path.join(os.homedir(), ".openclaw");
  return path.join(base, "imessage-rs");
}

/** @param {any} cfg @param {string | null | undefined} accountId */
function resolveAccount(cfg, accountId) {
  const id = accountId || listAccountIds(cfg)[0];
  const section = cfg?.channels?.imessage ?? {};
  const acc = section.accounts?.[id] ?? {};
  // Two stat calls, synchronous because OpenClaw's resolveAccount is; the loop probe times them.
  const where = probe.slice("locate", () => locate(cfg));
  return {
    accountId: id,
    enabled: section.enabled !== false && acc.enabled !== false,
    configured: Boolean(cfg?.channels?.imessage) && !where.error,
    error: where.error,
    paths: where,
  };
}

/** @param {{ accountId?: string | null }} ctx */
function bridgeFor(ctx) {
  const id = ctx.accountId || "default";
  const b = running.get(id);
  if (!b) throw new Error(`iMessage account ${id} is not running in this gateway`);
  return b;
}

/** An OpenClaw delivery result from the library's SendReceipt. @param {any} receipt */
function toResult(receipt) {
  const ids = (receipt?.messageIds ?? []).filter(Boolean);
  return { channel: "imessage", messageId: String(ids[ids.length - 1] ?? ""), meta: { chunks: receipt?.chunks, replayed: receipt?.replayed } };
}

/** OpenClaw's durable delivery id, when it gave one, makes a retried send idempotent. @param {any} ctx */
function outboundKey(ctx) {
  return ctx.deliveryQueueId ? `openclaw-out:${ctx.deliveryQueueId}:${ctx.deliveryPartIndex ?? 0}` : undefined;
}

/** Starts one account and keeps it until the abort signal (restarting a crashed child). @param {any} ctx */
async function startAccount(ctx) {
  probe.start();
  const account = ctx.account ?? resolveAccount(ctx.cfg, ctx.accountId);
  if (account.error) {
    ctx.setStatus?.({ ...ctx.getStatus?.(), accountId: ctx.accountId, running: false, lastError: account.error });
    throw new Error(account.error);
  }
  let delay = 1000;
  while (!ctx.abortSignal?.aborted) {
    const bridge = new AccountBridge({
      accountId: ctx.accountId,
      cfg: ctx.cfg,
      hostStub: account.paths.hostStub.path,
      library: account.paths.library.path,
      stateDir: stateRoot(ctx.cfg),
      channelRuntime: ctx.channelRuntime,
      system: ctx.runtime?.system ?? pluginRuntime?.system,
      log: ctx.log,
      onStatus: (patch) => ctx.setStatus?.({ ...ctx.getStatus?.(), ...patch }),
    });
    try {
      await bridge.start();
      running.set(ctx.accountId, bridge);
      ctx.setStatus?.({ ...ctx.getStatus?.(), accountId: ctx.accountId, running: true, connected: true, lastError: null, lastStartAt: Date.now() });
      delay = 1000;
      const aborted = new Promise((resolve) => ctx.abortSignal?.addEventListener("abort", resolve, { once: true }));
      const exit = await Promise.race([aborted.then(() => null), bridge.exited]);
      if (exit) throw new Error(`host-stub serve exited (${exit.signal ?? `code ${exit.code}`})`);
    } catch (e) {
      const msg = /** @type {any} */ (e)?.message ?? String(e);
      ctx.log?.error?.(`imessage ${ctx.accountId}: ${msg}`);
      ctx.setStatus?.({ ...ctx.getStatus?.(), accountId: ctx.accountId, connected: false, lastError: msg });
    } finally {
      if (running.get(ctx.accountId) === bridge) running.delete(ctx.accountId);
      await bridge.stop().catch(() => {});
    }
    if (ctx.abortSignal?.aborted) break;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 4, 30_000);
  }
  ctx.setStatus?.({ ...ctx.getStatus?.(), accountId: ctx.accountId, running: false, connected: false, lastStopAt: Date.now() });
}

/** The plugin runtime handed to register (system events, pairing). @type {any} */
let pluginRuntime = null;
/** @param {any} rt */
export function setRuntime(rt) {
  pluginRuntime = rt;
}

/**
 * A probe from the CLI: one short-lived child, started without watching, asked for status.
 * @param {{ account: any, cfg: any, timeoutMs: number }} p
 */
async function probeAccount({ account, cfg, timeoutMs }) {
  if (account.error) return { ok: false, error: account.error };
  const live = running.get(account.accountId);
  const bridge =
    live ??
    new AccountBridge({
      accountId: account.accountId,
      cfg,
      hostStub: account.paths.hostStub.path,
      library: account.paths.library.path,
      stateDir: path.join(stateRoot(cfg), "probe"),
    });
  const timer = new Promise((_, reject) => setTimeout(() => reject(new Error(`probe timed out after ${timeoutMs} ms`)), timeoutMs).unref());
  try {
    if (!live) await Promise.race([bridge.start(), timer]);
    const report = await Promise.race([bridge.status(true), timer]);
    const s = (report?.accounts ?? []).find((/** @type {any} */ a) => a.accountId === account.accountId) ?? report?.accounts?.[0];
    return { ok: Boolean(s?.probe?.ok ?? s?.lastProbe?.ok), status: s };
  } catch (e) {
    return { ok: false, error: /** @type {any} */ (e)?.message ?? String(e) };
  } finally {
    if (!live) await bridge.stop(2000).catch(() => {});
  }
}

/** @type {any} */
export const imessageChannel = {
  id: "imessage",
  meta: {
    id: "imessage",
    label: "iMessage",
    selectionLabel: "iMessage (imessage-rs)",
    docsPath: "/channels/imessage",
    blurb: "iMessage through the imessage-rs library: exactly-once delivery, quarantine, rate limits.",
  },
  capabilities: { chatTypes: ["direct", "group"], media: true, reactions: true },
  reload: { configPrefixes: ["channels.imessage"] },
  config: {
    listAccountIds,
    resolveAccount,
    defaultAccountId: (/** @type {any} */ cfg) => listAccountIds(cfg)[0],
    inspectAccount: (/** @type {any} */ cfg, /** @type {string} */ id) => {
      const a = resolveAccount(cfg, id);
      return { enabled: a.enabled, configured: a.configured, lastError: a.error ?? undefined };
    },
    isEnabled: (/** @type {any} */ account) => account.enabled,
    isConfigured: (/** @type {any} */ account) => account.configured,
  },
  pairing: {
    idLabel: "iMessage handle",
    notifyApproval: async (/** @type {any} */ p) => {
      const b = running.get(p.accountId || "default");
      await b?.send({ to: p.id, text: "You have been approved. Send a message to start." });
    },
  },
  gateway: {
    startAccount,
    stopAccount: async (/** @type {any} */ ctx) => {
      await running.get(ctx.accountId)?.stop();
    },
  },
  status: {
    defaultRuntime: { accountId: "default", running: false, connected: false, lastError: null },
    probeAccount,
    buildAccountSnapshot: ({ account, runtime, probe }) => {
      /** @type {any} */
      const p = probe;
      const fromProbe = p?.status ? toSnapshot(p.status) : {};
      return {
        accountId: account.accountId,
        enabled: account.enabled,
        configured: account.configured,
        ...runtime,
        ...fromProbe,
        ...(p && !p.ok && p.error ? { lastError: p.error } : {}),
        ...(account.error ? { lastError: account.error, configured: false } : {}),
      };
    },
  },
  outbound: {
    deliveryMode: "direct",
    sendText: async (/** @type {any} */ ctx) => {
      const req = toSendRequest({ text: ctx.text, replyToId: ctx.replyToId ?? undefined }, { accountId: ctx.accountId || "default", to: ctx.to, idempotencyKey: outboundKey(ctx) });
      if (!req) throw new Error("sendText: nothing to send");
      return toResult(await bridgeFor(ctx).send(req));
    },
    sendMedia: async (/** @type {any} */ ctx) => {
      const req = toSendRequest({ text: ctx.text, mediaUrl: ctx.mediaUrl, replyToId: ctx.replyToId ?? undefined }, { accountId: ctx.accountId || "default", to: ctx.to, idempotencyKey: outboundKey(ctx) });
      if (!req) throw new Error("sendMedia: nothing to send");
      return toResult(await bridgeFor(ctx).send(req));
    },
  },
};
