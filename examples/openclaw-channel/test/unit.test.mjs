// Unit and protocol tests that need neither OpenClaw nor the Rust build:
//   node --test examples/openclaw-channel/test/unit.test.mjs
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { PassThrough, Writable } from "node:stream";
import { fileURLToPath } from "node:url";

import { AccountBridge, failedSends } from "../src/bridge.js";
import { Journal, replay } from "../src/journal.js";
import { checkFile, choosePaths } from "../src/locate.js";
import { configForAccount, eventId, replyKey, toMsgContext, toSnapshot } from "../src/map.js";
import { LoopProbe, RESOLUTION_MS, SliceStats, windowLine } from "../src/probe.js";
import { RpcPeer } from "../src/rpc.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const tmp = () => mkdtempSync(path.join(os.tmpdir(), "imessage-oc-"));

/** @param {string} id @param {Record<string, unknown>} [over] */
const dm = (id, over = {}) => ({
  type: "message", sessionKey: "agent:main:main", agentId: "main", accountId: "default", chatType: "direct",
  to: "+15550001111", senderId: "+15550001111", text: "hi", messageId: id, wasMentioned: false,
  commandAuthorized: true, senderIsOwner: true, replyTo: null, media: [], ...over,
});

test("paths: config beats env beats the repository default, and a missing file names its path", () => {
  const env = { IMESSAGE_PLUGIN_LIBRARY: "/env/lib.so", IMESSAGE_HOST_STUB: "/env/hs" };
  const c = choosePaths({ library: "/cfg/lib.so" }, env, "linux");
  assert.equal(c.library.path, "/cfg/lib.so");
  assert.equal(c.hostStub.path, "/env/hs");
  const d = choosePaths({}, {}, "darwin");
  assert.match(d.library.path, /target\/release\/libimessage\.dylib$/);
  assert.equal(checkFile("iMessage library", c.library, false), "iMessage library not found at /cfg/lib.so (from plugins.entries.imessage-rs.config.library)");
});

test("inbound context carries the library's decision unchanged", () => {
  const ctx = toMsgContext(dm("M1", { chatType: "group", wasMentioned: true, commandAuthorized: false, senderIsOwner: false, chatName: "Team", replyTo: { id: "P1", text: "earlier", sender: "+1" }, media: [{ path: "/a.jpg", mime: "image/jpeg", size: 3 }] }));
  assert.equal(ctx.SessionKey, "agent:main:main");
  assert.equal(ctx.AgentId, "main");
  assert.equal(ctx.ChatType, "group");
  assert.equal(ctx.WasMentioned, true);
  assert.equal(ctx.CommandAuthorized, false);
  assert.equal(ctx.SenderIsOwner, false);
  assert.equal(ctx.ReplyToId, "P1");
  assert.deepEqual(ctx.media, [{ path: "/a.jpg", contentType: "image/jpeg", messageId: "M1" }]);
  assert.equal(replyKey("default", "M1", 2), "openclaw:default:M1:2");
});

test("status maps blocked and the last error", () => {
  const s = toSnapshot({ accountId: "default", state: "blocked", lastError: "Full Disk Access is not granted" });
  assert.equal(s.lifecycle, "blocked");
  assert.equal(s.connected, false);
  assert.equal(s.lastError, "Full Disk Access is not granted");
  assert.equal(toSnapshot({ state: "watching" }).connected, true);
});

test("each child sees only its own account enabled", () => {
  const cfg = { session: { dmScope: "main" }, channels: { imessage: { cliPath: "imsg", accounts: { home: {}, work: { allowFrom: ["+1"] } } } } };
  const c = configForAccount(cfg, "work");
  assert.equal(c.channels.imessage.accounts.home.enabled, false);
  assert.deepEqual(c.channels.imessage.accounts.work, { allowFrom: ["+1"] });
  assert.equal(c.session.dmScope, "main");
});

test("journal: taken-but-unfinished entries survive a reopen, done ones are remembered, a torn line is skipped", async () => {
  const file = path.join(tmp(), "j", "journal.jsonl");
  const j = new Journal(file);
  await j.load();
  await j.take([{ id: "a", event: dm("a") }, { id: "b", event: dm("b") }]);
  await j.finish(["a"]);
  await j.close();
  writeFileSync(file, `${readFileSync(file, "utf8")}{"t":"done","id":"b"`); // crash mid-write
  const again = new Journal(file);
  await again.load();
  assert.deepEqual(again.unfinished().map((u) => u.id), ["b"]);
  assert.equal(again.seen("a"), true);
  assert.equal(replay('{"t":"taken","id":"x","event":1}\n{"t":"done","id":"x"}\n').open.size, 0);
  await again.close();
});

/** Runs the bridge against fake-serve with `events`; returns the record and what was dispatched. */
async function runBridge(/** @type {string} */ dir, /** @type {unknown[]} */ events, /** @type {any} */ dispatch = null, /** @type {Record<string, unknown>} */ extra = {}) {
  const record = path.join(dir, `record-${Date.now()}.jsonl`);
  process.env.FAKE_SERVE_RECORD = record;
  process.env.FAKE_SERVE_EVENTS = JSON.stringify(events);
  /** @type {any[]} */
  const dispatched = [];
  const bridge = new AccountBridge({
    accountId: "default", cfg: { channels: { imessage: {} } }, hostStub: path.join(here, "fake-serve.mjs"),
    library: path.join(dir, "libimessage.so"), stateDir: dir, ...extra,
    channelRuntime: { reply: { dispatchReplyWithBufferedBlockDispatcher: async (/** @type {any} */ p) => {
      dispatched.push(p.ctx);
      if (dispatch) return dispatch(p, dispatched.length, bridge);
      await p.dispatcherOptions.deliver({ text: `reply to ${p.ctx.MessageSid}` });
    } } },
  });
  await bridge.start();
  const lines = () => (existsSync(record) ? readFileSync(record, "utf8").trim().split("\n").map((l) => JSON.parse(l)) : []);
  // Wait on a positive marker (every delivery answered, every turn settled); 30 s deadlines
  // leave room for a loaded machine.
  for (let i = 0; i < 3000 && !lines().some((l) => l.delivered !== undefined); i++) await new Promise((r) => setTimeout(r, 10));
  for (let i = 0; i < 3000 && bridge.sessions.size > 0; i++) await new Promise((r) => setTimeout(r, 10));
  await bridge.stop();
  return { lines: lines(), dispatched };
}

test("bridge: acknowledges after journaling, runs one turn per message id, sends replies with derived keys", async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, "libimessage.so"), "");
  const first = await runBridge(dir, [dm("M1"), { type: "batch", events: [dm("M2"), dm("M1")] }]);
  assert.deepEqual(first.dispatched.map((c) => c.MessageSid), ["M1", "M2"]);
  const answers = first.lines.filter((l) => l.deliverAnswer).map((l) => l.deliverAnswer);
  assert.ok(answers.every((a) => a.result && !a.error), "every deliver acknowledged");
  const sends = first.lines.filter((l) => l.in?.method === "send").map((l) => l.in.params);
  assert.deepEqual(sends.map((s) => s.idempotencyKey), ["openclaw:default:M1:0", "openclaw:default:M2:0"]);
  assert.equal(sends[0].to, "+15550001111");
  const start = first.lines.find((l) => l.in?.method === "start").in.params;
  assert.ok(start.host.features.includes("deliver.batch"));
  // The library replays M2 after a restart (our ack was lost): acknowledged, no second turn.
  const second = await runBridge(dir, [dm("M2"), dm("M3")]);
  assert.deepEqual(second.dispatched.map((c) => c.MessageSid), ["M3"]);
});

test("bridge: turns acknowledged but unfinished before a crash run at the next start", async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, "libimessage.so"), "");
  const j = new Journal(path.join(dir, "default", "journal.jsonl"));
  await j.load();
  await j.take([{ id: eventId(dm("M9")), event: dm("M9") }]);
  await j.close();
  const run = await runBridge(dir, []);
  assert.deepEqual(run.dispatched.map((c) => c.MessageSid), ["M9"]);
});

test("bridge: a turn answered before a crash (reply journaled, done not) is not dispatched again; its reply is re-sent under its key", async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, "libimessage.so"), "");
  // Like OpenClaw after a SIGKILL between recording the turn as finished and our send: the
  // reply reached deliver (journaled) but not the library; OpenClaw would refuse the turn now.
  const first = await runBridge(dir, [dm("M7")]);
  assert.deepEqual(first.dispatched.map((c) => c.MessageSid), ["M7"]);
  const j = new Journal(path.join(dir, "default", "journal.jsonl"));
  await j.load();
  await j.take([{ id: eventId(dm("M8")), event: dm("M8") }]);
  await j.reply(eventId(dm("M8")), 0, { accountId: "default", to: "+15550001111", media: [], text: "answer", idempotencyKey: "openclaw:default:M8:0" });
  await j.reply("not-open", 0, { text: "ignored" });
  await j.close();
  const again = new Journal(path.join(dir, "default", "journal.jsonl"));
  await again.load();
  assert.deepEqual(again.unfinished().map((u) => [u.id, u.replies.length]), [[eventId(dm("M8")), 1]], "replies survive compaction, only for open ids");
  await again.close();
  const run = await runBridge(dir, [], async () => {
    throw new Error("must not dispatch a turn OpenClaw already answered");
  });
  assert.deepEqual(run.dispatched, []);
  const sends = run.lines.filter((l) => l.in?.method === "send").map((l) => l.in.params);
  assert.deepEqual(sends.map((s) => [s.idempotencyKey, s.text]), [["openclaw:default:M8:0", "answer"]]);
  const last = new Journal(path.join(dir, "default", "journal.jsonl"));
  await last.load();
  assert.deepEqual(last.unfinished(), []);
  assert.equal(last.replies.size, 0);
  await last.close();
  assert.equal(replay('{"t":"taken","id":"x","event":1}\n{"t":"reply","id":"x","i":0,"req":{}}\n{"t":"done","id":"x"}\n').replies.size, 0);
});

test("bridge: a turn whose dispatch throws, or whose reply failed to send, runs again with the same reply keys", async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, "libimessage.so"), "");
  // Like OpenClaw: the first attempt fails before the agent adopts the session (it throws);
  // the second reports a failed deliver through onError and the receipt, settling normally.
  const run = await runBridge(dir, [dm("M5")], async (/** @type {any} */ p, /** @type {number} */ n) => {
    if (n === 1) throw new Error("restart recovery claim changed before agent adoption");
    await p.dispatcherOptions.deliver({ text: "first" });
    if (n === 2) {
      p.dispatcherOptions.onError(new Error("send failed"));
      return { settledReceipt: { counts: { final: { delivered: 0, failedBeforeSend: 1 } } } };
    }
    return { settledReceipt: { counts: { final: { delivered: 1, failedBeforeSend: 0 } } } };
  });
  assert.deepEqual(run.dispatched.map((c) => c.MessageSid), ["M5", "M5", "M5"]);
  const keys = run.lines.filter((l) => l.in?.method === "send").map((l) => l.in.params.idempotencyKey);
  assert.deepEqual(keys, ["openclaw:default:M5:0", "openclaw:default:M5:0"]);
  const again = new Journal(path.join(dir, "default", "journal.jsonl"));
  await again.load();
  assert.deepEqual(again.unfinished(), [], "done once the reply went out");
  await again.close();
  assert.equal(failedSends({ settledReceipt: { counts: { block: { failedAfterSend: 1 }, final: { failedBeforeSend: 2 } } } }), 3);
  assert.equal(failedSends(undefined), 0);
});

test("bridge: a stop during a turn lets it finish through the live child; a turn queued behind it stays open; a second stop waits for the first", async () => {
  // Seen in the e2e: a pairing approval hot-reloads the channel while a turn runs; OpenClaw's
  // stopAccount and the account loop both stopped the bridge, the second crashed on the
  // first's teardown, and the turn's reply hit a closed journal and was lost.
  const dir = tmp();
  writeFileSync(path.join(dir, "libimessage.so"), "");
  const record = path.join(dir, "record.jsonl");
  process.env.FAKE_SERVE_RECORD = record;
  process.env.FAKE_SERVE_EVENTS = JSON.stringify([dm("M1"), dm("M2")]); // one session: M2 waits for M1
  const lines = () => (existsSync(record) ? readFileSync(record, "utf8").trim().split("\n").map((l) => JSON.parse(l)) : []);
  /** @type {(v?: unknown) => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = r));
  /** @type {string[]} */
  const dispatched = [];
  const bridge = new AccountBridge({
    accountId: "default", cfg: { channels: { imessage: {} } }, hostStub: path.join(here, "fake-serve.mjs"),
    library: path.join(dir, "libimessage.so"), stateDir: dir,
    channelRuntime: { reply: { dispatchReplyWithBufferedBlockDispatcher: async (/** @type {any} */ p) => {
      dispatched.push(p.ctx.MessageSid);
      await gate;
      await p.dispatcherOptions.deliver({ text: `reply to ${p.ctx.MessageSid}` });
    } } },
  });
  await bridge.start();
  for (let i = 0; i < 3000 && !(dispatched.length && lines().some((l) => l.delivered !== undefined)); i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(dispatched, ["M1"], "M1 in flight, M2 delivered and queued");
  const first = bridge.stop();
  const second = bridge.stop();
  assert.equal(first, second, "one stop, shared");
  release();
  await Promise.all([first, second]);
  assert.deepEqual(dispatched, ["M1"], "no turn starts once stopping");
  const methods = lines().filter((l) => l.in?.method).map((l) => l.in.method);
  assert.deepEqual(methods.filter((m) => m === "send" || m === "stop"), ["send", "stop"], "the reply went out before the child was stopped");
  const j = new Journal(path.join(dir, "default", "journal.jsonl"));
  await j.load();
  assert.deepEqual(j.unfinished().map((u) => u.id), [eventId(dm("M2"))], "M1 done, M2 left for the next start");
  await j.close();
});

test("rpc: a write to a bridge that has gone (EPIPE) closes the peer and fails what is pending; it never throws into the host", async () => {
  // Seen in the e2e: a host.request answered just after the child exited crashed the gateway
  // with an unhandled 'error' event (write EPIPE).
  const input = new PassThrough();
  const output = new Writable({ write: (_chunk, _enc, cb) => cb(Object.assign(new Error("write EPIPE"), { code: "EPIPE" })) });
  const peer = new RpcPeer(input, output, { onRequest: async () => ({}), onNotification: () => {} });
  await assert.rejects(peer.request("status", {}), /status not answered: cannot write to the bridge: write EPIPE/);
  assert.equal(peer.closed, true);
  await assert.rejects(peer.request("send", {}), /cannot send send: the bridge is closed/);
  input.write(`${JSON.stringify({ jsonrpc: "2.0", id: 9, method: "host.request", params: {} })}\n`);
  await new Promise((r) => setImmediate(r));
});

test("journal: appends made while an fsync is in flight share the next one, and each resolves only once durable", async () => {
  const file = path.join(tmp(), "j", "journal.jsonl");
  const j = new Journal(file);
  await j.load();
  const fh = /** @type {any} */ (j.fh);
  const sync = fh.sync.bind(fh);
  let durable = ""; // the file as of the last completed fsync
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  let inFlight = false;
  fh.sync = async () => {
    inFlight = true;
    if (j.fsyncs === 0) await gate; // hold the first fsync so later appends pile up behind it
    await sync();
    durable = readFileSync(file, "utf8");
    inFlight = false;
  };
  /** @type {string[]} */
  const early = [];
  const check = (/** @type {string} */ entry) => () => {
    if (!durable.includes(entry)) early.push(entry);
  };
  const first = j.take([{ id: "m0", event: 0 }]).then(check('"id":"m0"'));
  for (let i = 0; i < 100 && !inFlight; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(inFlight, "the first commit reached its fsync");
  const more = Array.from({ length: 20 }, (_, k) =>
    k % 2 ? j.reply(`m${k - 1}`, 0, { k }).then(check(`"t":"reply","id":"m${k - 1}"`)) : j.take([{ id: `m${k}`, event: k }]).then(check(`"t":"taken","id":"m${k}"`)),
  );
  release();
  await Promise.all([first, ...more]);
  await j.finish(["m0", "m2"]);
  assert.deepEqual(early, [], "no append resolved before an fsync covered its entry");
  assert.equal(j.fsyncs, 3, "one fsync for m0, one for the 20 appends made meanwhile, one for finish");
  assert.equal(durable.split("\n").filter(Boolean).length, 1 + 20 + 2);
  await j.close();
  const again = new Journal(file);
  await again.load();
  assert.deepEqual(again.unfinished().map((u) => [u.id, u.replies.length]), [4, 6, 8, 10, 12, 14, 16, 18].map((k) => [`m${k}`, 1]));
  await again.close();
});

test("journal: a failed write rejects its appends with the file named, and later appends still work", async () => {
  const file = path.join(tmp(), "j", "journal.jsonl");
  const j = new Journal(file);
  await j.load();
  const fh = /** @type {any} */ (j.fh);
  const write = fh.write.bind(fh);
  fh.write = async () => {
    fh.write = write;
    throw new Error("ENOSPC");
  };
  await assert.rejects(j.take([{ id: "a", event: 1 }]), new RegExp(`cannot append to journal ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: ENOSPC`));
  await j.take([{ id: "b", event: 2 }]);
  await j.close();
  assert.match(readFileSync(file, "utf8"), /"id":"b"/);
});

test("loop probe: off by default; on, it times slices on the thread CPU clock and writes one line per window", async () => {
  const off = new LoopProbe(undefined);
  off.start();
  assert.equal(off.slice("x", () => 7), 7);
  assert.equal(off.stats.count, 0, "nothing measured when IMESSAGE_RS_LOOP_PROBE is unset");

  const stats = new SliceStats();
  stats.record("a", 1, 5);
  stats.record("b", 3, 4);
  const h = { max: 35e6, mean: 12e6, count: 90, percentile: () => 20e6 };
  const line = windowLine(h, stats, 1000, 42);
  assert.deepEqual(line, { t: 1000, pid: 42, loop: { maxMs: 35 - RESOLUTION_MS, p99Ms: 20 - RESOLUTION_MS, meanMs: 12 - RESOLUTION_MS, samples: 90 }, pkg: { slices: 2, cpuMs: 4, maxCpuMs: 3, maxWallMs: 5, worst: "b" } });
  assert.equal(windowLine({ ...h, count: 0 }, new SliceStats(), 0).loop.maxMs, 0, "an empty histogram is no delay");

  const file = path.join(tmp(), "probe.jsonl");
  const on = new LoopProbe(file);
  on.start();
  // The histogram measures between its own timer ticks: let it tick before blocking the loop.
  for (let i = 0; i < 100 && (on.hist?.count ?? 0) < 2; i++) await new Promise((r) => setTimeout(r, 10));
  // Burns 30 ms of this thread's CPU (not wall time: a loaded machine would preempt it).
  const cpuMs = () => {
    const u = process.threadCpuUsage();
    return (u.user + u.system) / 1000;
  };
  const busy = on.wrap("busy", (/** @type {number} */ ms) => {
    const end = cpuMs() + ms;
    while (cpuMs() < end);
    return ms;
  });
  assert.equal(busy(30), 30);
  assert.throws(() => on.slice("throws", () => { throw new Error("boom"); }), /boom/);
  assert.equal(on.stats.worst, "busy");
  assert.ok(on.stats.maxCpuMs >= 29, `a 30 ms busy loop measured ${on.stats.maxCpuMs} ms of CPU`);
  assert.equal(on.stats.count, 2, "a throwing slice is still counted");
  // Wait on the positive marker: the first window's line.
  for (let i = 0; i < 100 && !(existsSync(file) && readFileSync(file, "utf8").includes("\n")); i++) await new Promise((r) => setTimeout(r, 50));
  const first = JSON.parse(readFileSync(file, "utf8").split("\n")[0]);
  assert.equal(first.pkg.worst, "busy");
  assert.ok(first.loop.maxMs >= 15, `the busy loop held the event loop; the probe saw ${first.loop.maxMs} ms`);
});

test("bridge: a replayed turn OpenClaw keeps refusing (finished before the crash, its reply never handed over) runs once more under a fresh MessageSid with the message's own reply key", async () => {
  const dir = tmp();
  writeFileSync(path.join(dir, "libimessage.so"), "");
  const j = new Journal(path.join(dir, "default", "journal.jsonl"));
  await j.load();
  await j.take([{ id: eventId(dm("M6")), event: dm("M6") }]);
  await j.close();
  // Like OpenClaw 2026.9.6 after a SIGKILL between recording the turn terminal and handing
  // over its reply: every dispatch of that MessageSid settles without a run or a reply.
  const refuse = async (/** @type {any} */ p) => {
    if (p.ctx.MessageSid === "M6") return {};
    await p.dispatcherOptions.deliver({ text: `reply to ${p.ctx.MessageSid}` });
  };
  const run = await runBridge(dir, [dm("M4")], refuse, { retryBaseMs: 1 });
  const m6 = run.dispatched.filter((c) => c.MessageSid.startsWith("M6")).map((c) => c.MessageSid);
  assert.deepEqual(m6, [...Array(6).fill("M6"), "M6:replay"], "six refusals, then one run under the fresh id");
  const sends = run.lines.filter((l) => l.in?.method === "send").map((l) => l.in.params);
  assert.deepEqual(sends.map((s) => [s.idempotencyKey, s.text]).sort(), [
    ["openclaw:default:M4:0", "reply to M4"],
    ["openclaw:default:M6:0", "reply to M6:replay"],
  ]);
  // OpenClaw's restart recovery took the turn (it sent its notice to that conversation through
  // the outbound adapter while refusing our replay): no second run.
  const dir3 = tmp();
  writeFileSync(path.join(dir3, "libimessage.so"), "");
  const j3 = new Journal(path.join(dir3, "default", "journal.jsonl"));
  await j3.load();
  await j3.take([{ id: eventId(dm("M6")), event: dm("M6") }]);
  await j3.close();
  let noticed = false;
  const recovered = await runBridge(dir3, [], async (/** @type {any} */ p, /** @type {number} */ _n, /** @type {any} */ bridge) => {
    if (!noticed) {
      noticed = true;
      await bridge.send({ to: "imessage:+15550001111", text: "I'm continuing your interrupted request", idempotencyKey: "recovery:1" });
    }
    return refuse(p);
  }, { retryBaseMs: 1 });
  assert.deepEqual(recovered.dispatched.map((c) => c.MessageSid), Array(6).fill("M6"));
  // A live (not replayed) turn OpenClaw declines is given up as before: no fresh id.
  const dir2 = tmp();
  writeFileSync(path.join(dir2, "libimessage.so"), "");
  const live = await runBridge(dir2, [dm("M6")], refuse, { retryBaseMs: 1 });
  assert.deepEqual(live.dispatched.map((c) => c.MessageSid), Array(6).fill("M6"));
});
