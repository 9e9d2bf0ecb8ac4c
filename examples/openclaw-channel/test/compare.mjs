// Same inbound rows, same config, two gateways: OpenClaw + this package (imessage-rs) and
// OpenClaw + the official @openclaw/imessage, each with its own OPENCLAW_HOME, port and imsg-sim.
// For every case (test/compare-cases.json) it records the outcome on each side (dispatched with
// a session key, system event, pairing reply, or dropped), prints a table and tags each
// difference as a documented deliberate one or a real divergence (exit 1 if any).
// Run through tests/openclaw-compare.sh (it installs Node 24 + openclaw first).
//
// How an outcome is read (both sides go through OpenClaw's core, so the markers are the same):
// - dispatched: the gateway's diagnostic line `message processed: ... messageId=<guid> ...
//   sessionKey=<key>` (logged with --verbose; `message received` marks the turn's start);
// - system event (tapback): the official plugin logs `reaction system event queued session=<key>`;
//   this package journals the event with its session key (state dir journal.jsonl);
// - pairing: a send to the row's chat (imsg-sim's record) that carries a pairing code;
// - a command's fate: OpenClaw's command handler logs `Ignoring /<cmd> from unauthorized sender`
//   when the CommandAuthorized flag (and its owner checks) refuse it; a status card when not;
// - dropped: none of those once the case is settled. Settled = a barrier DM sent after the case
//   (from an allowed sender, in its own chat) has been processed and answered, and every turn
//   that started has finished. No fixed sleeps.
// A case with `config` restarts both gateways with that patch for it and the cases after it.
import { execFile, spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";
import { findLibrary, waitFor } from "./harness.mjs";

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "..");
const { values: args } = parseArgs({
  options: {
    openclaw: { type: "string" },
    "bin-dir": { type: "string" },
    cases: { type: "string", default: path.join(here, "compare-cases.json") },
    only: { type: "string" },
  },
});
if (!args.openclaw || !args["bin-dir"]) {
  console.log("compare: FAIL usage: compare.mjs --openclaw <openclaw.mjs> --bin-dir <dir with host-stub, imsg-sim, libimessage.so> [--cases file] [--only regex]");
  process.exit(2);
}
const ocBin = String(args.openclaw);
const binDir = path.resolve(String(args["bin-dir"]));
const library = findLibrary(binDir);
const spec = JSON.parse(readFileSync(String(args.cases), "utf8"));
const only = args.only ? new RegExp(String(args.only), "i") : null;
const t0 = Date.now();
const step = (/** @type {string} */ m) => console.log(`compare: ${m} (${Math.round((Date.now() - t0) / 1000)} s)`);
const root = mkdtempSync(path.join(os.tmpdir(), "imessage-openclaw-compare-"));
/** @type {Side[]} */
const sides = [];
const fail = (/** @type {string} */ m) => {
  for (const s of sides) s.gateway?.kill("SIGKILL");
  console.log(`compare: FAIL ${m}`);
  process.exit(1);
};

/**
 * One gateway and everything it owns.
 * @typedef {{ name: string, label: string, home: string, env: NodeJS.ProcessEnv,
 *   sim: { scenario: string, inbox: string, record: string, journal: string },
 *   gateway: import("node:child_process").ChildProcess | null, log: string, port: number,
 *   reactions: Map<string, string> }} Side
 */

/** @param {string} name @param {string} label @returns {Side} */
function makeSide(name, label) {
  const home = path.join(root, name);
  mkdirSync(home, { recursive: true });
  const sim = { scenario: path.join(home, "scenario.json"), inbox: path.join(home, "inbox.jsonl"), record: path.join(home, "record.jsonl"), journal: path.join(home, "chat.journal") };
  writeFileSync(sim.inbox, "");
  writeFileSync(sim.scenario, JSON.stringify({ clock: { start: "now", mode: "running" }, chats: spec.chats, messages: [], control: { inbox: sim.inbox, record: sim.record, shared: sim.journal } }));
  const env = { ...process.env, OPENCLAW_HOME: home, IMESSAGE_HOST_STUB: "", IMESSAGE_PLUGIN_LIBRARY: "" };
  return { name, label, home, env, sim, gateway: null, log: path.join(home, "gateway.log"), port: 0, reactions: new Map() };
}

const oc = (/** @type {Side} */ s, /** @type {string[]} */ a, timeout = 300_000) => run(process.execPath, [ocBin, ...a], { env: s.env, timeout, maxBuffer: 1 << 24 });
const firstLine = (/** @type {any} */ e) => String(e?.stderr || e?.stdout || e?.message || e).trim().split("\n")[0];


const freePort = () => new Promise((resolve) => { const srv = net.createServer().listen(0, () => { const p = /** @type {any} */ (srv.address()).port; srv.close(() => resolve(p)); }); });

// --- install: ours linked from the repo, the official one from the npm registry ---

/** @param {Side} s */
async function installOurs(s) {
  await oc(s, ["plugins", "install", "-l", pkg, "--force", "--accept-capabilities"]).catch((e) => fail(`${s.label}: plugins install -l: ${firstLine(e)}`));
}

/**
 * A registry install of the package named in OpenClaw's official catalog is recorded as
 * trusted-official (dist/installed-plugin-record-match-*.mjs, resolvePluginTrust); a linked
 * folder is not, and then openChannelIngressQueue refuses to run.
 * @param {Side} s
 */
async function installOfficial(s) {
  await oc(s, ["plugins", "install", "@openclaw/imessage"]).catch((e) => fail(`${s.label}: openclaw plugins install @openclaw/imessage (npm registry): ${firstLine(e)}`));
  const info = JSON.parse((await oc(s, ["plugins", "inspect", "imessage", "--json"])).stdout);
  const trust = info?.plugin?.trust ?? {};
  if (trust.reason !== "trusted-official") fail(`${s.label}: installed but not trusted (${JSON.stringify(trust)}); its ingress queue would refuse to start`);
  step(`${s.label}: ${info.plugin.packageName}@${info.plugin.version} installed from ${trust.installSource} (${trust.installSpec}), trust=${trust.reason}`);
}

/** Deep merge of plain objects; arrays and scalars in `over` replace. @param {any} base @param {any} over */
function merge(base, over) {
  if (!over || typeof over !== "object" || Array.isArray(over) || !base || typeof base !== "object" || Array.isArray(base)) return structuredClone(over);
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = k in base ? merge(base[k], v) : structuredClone(v);
  return out;
}

/** @param {Side} s @param {any} config the shared part (spec.config plus any case's patch) */
function configure(s, config) {
  const cfgPath = path.join(s.home, ".openclaw", "openclaw.json");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
  if (s.name === "ours") {
    cfg.plugins.entries["imessage-rs"].config = { library, hostStub: path.join(binDir, "host-stub"), stateDir: path.join(s.home, "imessage-rs") };
  }
  cfg.gateway = { mode: "local", port: s.port, auth: { mode: "token", token: "compare-token" } };
  const shared = structuredClone(config);
  shared.channels.imessage = { ...shared.channels.imessage, cliPath: path.join(binDir, "imsg-sim"), dbPath: s.sim.scenario };
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, ...shared }, null, 2));
}

/** @param {Side} s */
function startGateway(s) {
  // --verbose: the diagnostic `message received/processed` lines are debug level.
  s.gateway = spawn(process.execPath, [ocBin, "gateway", "run", "--port", String(s.port), "--allow-unconfigured", "--verbose"], { env: s.env, stdio: ["ignore", "pipe", "pipe"] });
  s.gateway.stdout?.on("data", (d) => appendFileSync(s.log, d));
  s.gateway.stderr?.on("data", (d) => appendFileSync(s.log, d));
  s.gateway.on("exit", (code, sig) => { if (!stopping) fail(`${s.label}: gateway exited (${code ?? sig}); see ${s.log}`); });
}
let stopping = false;
for (const sig of /** @type {const} */ (["SIGINT", "SIGTERM"])) process.on(sig, () => fail(`stopped by ${sig}`));

// --- readers over the gateway log, imsg-sim's record and chat journal ---

const readJsonLines = (/** @type {string} */ f) => (existsSync(f) ? readFileSync(f, "utf8").split("\n").filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return {}; } }) : []);
const logText = (/** @type {Side} */ s) => (existsSync(s.log) ? readFileSync(s.log, "utf8").replace(/\x1b\[[0-9;]*m/g, "") : "");
/** Every send imsg-sim was asked to make, in order. @param {Side} s */
const sends = (s) => readJsonLines(s.sim.record).filter((r) => r.effect === "send").map((r) => r.params ?? {});
/** Rows imsg-sim holds (inbound and the ones our sends wrote). @param {Side} s */
const simRows = (s) => readJsonLines(s.sim.journal).map((e) => e.row).filter(Boolean);
const esc = (/** @type {string} */ v) => v.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** @param {string} log @param {string} guid */
function processed(log, guid) {
  const m = log.match(new RegExp(`message processed: channel=imessage chatId=(\\S+) messageId=${esc(guid)} sessionId=\\S+ sessionKey=(\\S+) outcome=(\\S+)`));
  return m ? { chatId: m[1], sessionKey: m[2], result: m[3] } : null;
}
/**
 * A turn started in the row's chat since the case began (`log` is the part after that). The
 * package logs the row's guid as messageId, the official plugin another number, so the chat is
 * what both share; the barrier has a chat of its own and cases run one at a time.
 * @param {string} log @param {number} chatId
 */
const received = (log, chatId) => log.includes(`message received: channel=imessage chatId=chat_id:${chatId} `);

/** The session key a tapback went to, if it became a system event. @param {Side} s @param {string} guid @param {string} target */
function reactionEvent(s, guid, target) {
  if (s.name === "official") {
    const m = logText(s).match(new RegExp(`reaction system event (?:queued|deduped) session=(\\S+) target=${esc(target)}\\b`));
    return m?.[1] ?? null;
  }
  // The package journals each event it takes before acknowledging it; remember what we saw
  // (a channel reload compacts the journal).
  for (const e of readJsonLines(path.join(s.home, "imessage-rs", "default", "journal.jsonl"))) {
    const ev = e?.event;
    if (e?.t === "taken" && ev?.type === "reaction") s.reactions.set(String(ev.messageId), String(ev.sessionKey));
  }
  return s.reactions.get(guid) ?? null;
}

/** Why the official plugin dropped a row, when it says so (it names the row id). @param {Side} s @param {string} guid */
function dropReason(s, guid) {
  const row = simRows(s).find((r) => r.guid === guid);
  if (!row) return null;
  const m = logText(s).match(new RegExp(`dropped inbound message account=\\S+ reason="([^"]+)" chat_id=\\S+ group=\\S+ message_id=${row.id}\\b`));
  return m?.[1] ?? null;
}

/** What a reply text is, in a word. @param {string} t */
function replyKind(t) {
  if (/pairing code|code:|approve/i.test(t)) return "pairing-code";
  if (/OpenClaw/.test(t) && /(model|session|context|tokens)/i.test(t)) return "status-card";
  if (/authenticat|api key|no model|provider|401/i.test(t)) return "agent-failure";
  return `text:${t.slice(0, 40).replace(/\s+/g, " ")}`;
}
/** How a send addressed its conversation. @param {Record<string, unknown>} p */
const target = (p) => ["chat_id", "chat_guid", "chat_identifier", "to"].filter((k) => p[k] !== undefined).map((k) => `${k}=${p[k]}`).join(",") + (p.service ? ` service=${p.service}` : "");

// --- one case on one side ---

let seq = 0;
const guidFor = (/** @type {number} */ n) => `C0FFEE00-0000-4000-8000-${String(n).padStart(12, "0")}`;

/** Finds the code OpenClaw's pairing store holds for a handle and approves it. @param {Side} s @param {string} handle */
async function approve(s, handle) {
  const list = JSON.parse((await oc(s, ["pairing", "list", "imessage", "--json"])).stdout || "{}");
  const reqs = Array.isArray(list) ? list : (list.requests ?? list.pending ?? []);
  const req = reqs.find((/** @type {any} */ r) => JSON.stringify(r).includes(handle));
  if (!req?.code) return `no pending pairing request for ${handle} in openclaw pairing list imessage`;
  await oc(s, ["pairing", "approve", "imessage", req.code]);
  return null;
}

/**
 * Inserts the case row and a barrier, waits until both have settled, and reads the outcome.
 * @param {Side} s @param {any} c @param {string} guid @param {Record<string, string>} caseGuids
 */
async function runCase(s, c, guid, caseGuids) {
  let note = c.approve ? await approve(s, c.approve) : null;
  const row = { ...c.row, guid };
  delete row.reply_to_case;
  delete row.reaction_on_bot_reply;
  let botReply = "";
  if (c.row.reply_to_case !== undefined) row.reply_to_guid = caseGuids[c.row.reply_to_case];
  if (c.row.reaction_on_bot_reply) {
    botReply = simRows(s).filter((r) => r.from_me && r.chat_id === c.row.chat_id).at(-1)?.guid ?? "";
    if (!botReply) note = `no bot reply in chat ${c.row.chat_id} to react to`;
    row.reaction = { type: c.row.reaction_on_bot_reply, target_guid: botReply };
  }
  const sent0 = sends(s).length;
  const log0 = logText(s).length;
  const barrier = guidFor(100_000 + seq);
  appendFileSync(s.sim.inbox, `${JSON.stringify({ op: "insert", row })}\n`);
  appendFileSync(s.sim.inbox, `${JSON.stringify({ op: "insert", row: { ...spec.barrier, guid: barrier, text: `barrier ${seq}` } })}\n`);
  const bChat = spec.barrier.chat_id;
  await waitFor(`${s.label}: the barrier processed and answered`, () => processed(logText(s), barrier) && sends(s).slice(sent0).some((p) => p.chat_id === bChat), 240_000);
  await waitFor(`${s.label}: the case's turn finished`, () => { const l = logText(s); return !received(l.slice(log0), c.row.chat_id) || processed(l, guid); }, 240_000);
  // OpenClaw's command handler names a refused command (not the chat); cases run one at a time.
  const refused = /Ignoring \/\S+ from unauthorized sender/.test(logText(s).slice(log0));
  return { ...classify(s, c, guid, botReply, sent0, note), refused };
}

/** @param {Side} s @param {any} c @param {string} guid @param {string} botReply @param {number} sent0 @param {string | null} note */
function classify(s, c, guid, botReply, sent0, note) {
  const after = sends(s).slice(sent0).filter((p) => p.chat_id !== spec.barrier.chat_id);
  const replies = after.filter((p) => p.chat_id === c.row.chat_id);
  const kinds = replies.map((p) => replyKind(String(p.text ?? "")));
  const how = [...new Set(replies.map(target))].join(" | ");
  // A send outside the row's chat (e.g. to a handle) while the case ran: shown, not compared.
  const elsewhere = after.filter((p) => p.chat_id !== c.row.chat_id).map((p) => `${replyKind(String(p.text ?? ""))} via ${target(p)}`);
  const base = { replies: kinds, target: how, note: [note, ...elsewhere.map((e) => `also sent ${e}`)].filter(Boolean).join("; ") || null };
  const p = processed(logText(s), guid);
  if (p) return { ...base, outcome: "dispatched", sessionKey: p.sessionKey, detail: `outcome=${p.result}` };
  if (c.row.reaction_on_bot_reply) {
    const key = reactionEvent(s, guid, botReply);
    if (key) return { ...base, outcome: "system-event", sessionKey: key };
  }
  if (kinds.includes("pairing-code")) return { ...base, outcome: "pairing" };
  return { ...base, outcome: "dropped", detail: dropReason(s, guid) ?? undefined };
}

// --- main ---

const ours = makeSide("ours", "imessage-rs");
const official = makeSide("official", "@openclaw/imessage");
sides.push(ours, official);
step(`homes under ${root} (each side: gateway.log, record.jsonl, chat.journal)`);
await Promise.all([installOurs(ours), installOfficial(official)]);
/** How many watch subscriptions imsg-sim has answered. @param {Side} s */
const subscriptions = (s) => readJsonLines(s.sim.record).filter((r) => r.dir === "out" && String(r.line).includes('"subscription"')).length;
/** (Re)starts both gateways with `config` and waits for each to subscribe anew. @param {any} config */
async function startAll(config) {
  stopping = true;
  await Promise.all(sides.map((s) => new Promise((resolve) => {
    const g = s.gateway;
    if (!g || g.exitCode !== null || g.signalCode !== null) return resolve(null);
    g.once("exit", resolve);
    g.kill("SIGTERM");
  })));
  stopping = false;
  const before = sides.map(subscriptions);
  for (const s of sides) {
    s.port ||= /** @type {number} */ (await freePort());
    configure(s, config);
    startGateway(s);
  }
  await Promise.all(sides.map((s, i) => waitFor(`${s.label}: imsg-sim's watch.subscribe`, () => subscriptions(s) > before[i], 240_000))).catch((e) => fail(e.message));
  step("both gateways subscribed to imsg-sim");
}
let config = spec.config;
await startAll(config);

/** @type {Record<string, string>} */
const caseGuids = {};
const results = [];
for (const [i, c] of spec.cases.entries()) {
  const guid = guidFor(i + 1);
  caseGuids[i] = guid;
  if (only && !only.test(c.name)) continue;
  if (c.config) {
    config = merge(config, c.config);
    step(`restarting both gateways with ${JSON.stringify(c.config)}`);
    await startAll(config);
  }
  seq++;
  const [a, b] = await Promise.all(sides.map((s) => runCase(s, c, guid, caseGuids))).catch((e) => fail(`case "${c.name}": ${e.message}`));
  results.push({ name: c.name, expect: c.expect, deliberate: c.deliberate, why: c.why, ours: a, official: b });
  step(`case ${i + 1} "${c.name}": imessage-rs ${a.outcome} ${a.sessionKey ?? ""} / official ${b.outcome} ${b.sessionKey ?? ""}`);
}
stopping = true;
for (const s of sides) s.gateway?.kill("SIGTERM");
process.exitCode = report(results);

/** Prints the table and the differences; 1 if any difference is not a documented one. @param {any[]} rows */
function report(rows) {
  const cell = (/** @type {any} */ r) => [r.outcome, r.sessionKey, r.detail, r.refused ? "command refused by OpenClaw (unauthorized)" : "", r.replies.length ? `replies=${r.replies.join("+")}` : "", r.target ? `via ${r.target}` : "", r.note ? `(${r.note})` : ""].filter(Boolean).join(" ");
  // Outcome and session key; for a command, also whether OpenClaw answered it (status card) or
  // refused it as unauthorized (the CommandAuthorized flag each plugin handed over).
  const card = (/** @type {any} */ x) => `${x.replies.includes("status-card")}/${x.refused}`;
  const same = (/** @type {any} */ r) => r.ours.outcome === r.official.outcome && (r.ours.sessionKey ?? "") === (r.official.sessionKey ?? "") && card(r.ours) === card(r.official);
  let real = 0;
  console.log("\n| # | case | expected | imessage-rs | @openclaw/imessage | verdict |\n|---|---|---|---|---|---|");
  for (const [i, r] of rows.entries()) {
    const verdict = same(r) ? "same" : r.deliberate ? `deliberate: ${r.deliberate}` : "DIVERGENCE";
    if (verdict === "DIVERGENCE") real++;
    console.log(`| ${i + 1} | ${r.name} | ${r.expect} | ${cell(r.ours)} | ${cell(r.official)} | ${verdict} |`);
  }
  for (const [i, r] of rows.entries()) {
    if (!same(r)) console.log(`- case ${i + 1} (${r.deliberate ? `deliberate: ${r.deliberate}` : "DIVERGENCE"}): imessage-rs ${r.ours.outcome}, official ${r.official.outcome}${r.why ? `; ${r.why}` : ""}`);
  }
  writeFileSync(path.join(root, "compare-result.json"), JSON.stringify(rows, null, 2));
  console.log(`\ncompare: ${rows.length} case(s), ${rows.filter(same).length} same, ${rows.filter((r) => !same(r) && r.deliberate).length} deliberate difference(s), ${real} divergence(s); details in ${path.join(root, "compare-result.json")}`);
  return real ? 1 : 0;
}
