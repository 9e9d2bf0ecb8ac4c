// Scenarios of issue 24 in a real OpenClaw gateway with this package linked and imsg-sim as
// `cliPath`. Run through tests/openclaw-e2e.sh (which installs Node 24 + openclaw first).
// Checks go through the simulator's record (what imsg was asked to send), as the Rust e2e
// tests do (tests/tests/common/sim.rs). Every wait is on a positive marker with a deadline.
import { execFile, spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";

const run = promisify(execFile);
const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: args } = parseArgs({ options: { openclaw: { type: "string" }, "bin-dir": { type: "string" } } });
const binDir = path.resolve(String(args["bin-dir"]));
const ocBin = String(args.openclaw);
const t0 = Date.now();
const step = (/** @type {string} */ m) => console.log(`openclaw-e2e: ${m} (${Math.round((Date.now() - t0) / 1000)} s)`);
let passed = 0;
/** @type {import("node:child_process").ChildProcess | null} */
let gateway = null;
const fail = (/** @type {string} */ m) => {
  gateway?.kill("SIGKILL");
  console.log(`openclaw-e2e: FAIL ${m}`);
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
};
const ok = (/** @type {string} */ name) => {
  passed++;
  step(`ok ${name}`);
};
let failed = 0;
/** Runs one scenario; a failure is one line and the next scenario still runs. */
async function scenario(/** @type {string} */ name, /** @type {() => Promise<void>} */ body) {
  try {
    await body();
    ok(name);
  } catch (e) {
    failed++;
    step(`FAIL ${name}: ${/** @type {any} */ (e)?.message ?? e}`);
  }
}

const home = mkdtempSync(path.join(os.tmpdir(), "imessage-openclaw-e2e-"));
const env = { ...process.env, OPENCLAW_HOME: home, IMESSAGE_HOST_STUB: "", IMESSAGE_PLUGIN_LIBRARY: "" };
const oc = (/** @type {string[]} */ a, timeout = 120_000) => run(process.execPath, [ocBin, ...a], { env, timeout, maxBuffer: 1 << 24 });

// --- simulator files (same layout as tests/tests/common/sim.rs) ---
const sim = {
  scenario: path.join(home, "scenario.json"),
  inbox: path.join(home, "inbox.jsonl"),
  record: path.join(home, "record.jsonl"),
  journal: path.join(home, "chat.journal"),
};
const OWNER = "+15550001111";
const STRANGER = "+15550002222";
writeFileSync(sim.inbox, "");
writeFileSync(sim.scenario, JSON.stringify({
  clock: { start: "now", mode: "running" },
  chats: [
    { id: 7, identifier: OWNER, guid: `iMessage;-;${OWNER}`, service: "iMessage", participants: [OWNER] },
    { id: 8, identifier: STRANGER, guid: `iMessage;-;${STRANGER}`, service: "iMessage", participants: [STRANGER] },
    { id: 42, identifier: "chat4242", guid: "iMessage;+;chat4242", name: "Team", service: "iMessage", participants: [OWNER, "+15550003333"] },
    ...Array.from({ length: 12 }, (_, i) => ({ id: 100 + i, identifier: `+1555010${String(i).padStart(4, "0")}`, guid: `iMessage;-;+1555010${String(i).padStart(4, "0")}`, service: "iMessage", participants: [`+1555010${String(i).padStart(4, "0")}`] })),
  ],
  messages: [],
  control: { inbox: sim.inbox, record: sim.record, shared: sim.journal },
}));
const insert = (/** @type {Record<string, unknown>} */ row) => appendFileSync(sim.inbox, `${JSON.stringify({ op: "insert", row })}\n`);
const record = () => (existsSync(sim.record) ? readFileSync(sim.record, "utf8").split("\n").filter(Boolean).map((l) => { try { return JSON.parse(l); } catch { return {}; } }) : []);
const sends = () => record().filter((r) => r.effect === "send").map((r) => r.params ?? {});
/** @param {string} what @param {() => unknown} cond @param {number} ms */
async function waitFor(what, cond, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// --- 1. the package installs as a linked plugin ---
await oc(["plugins", "install", "-l", pkg, "--force", "--accept-capabilities"]).catch((e) => fail(`plugins install: ${String(e.stderr || e.message).split("\n")[0]}`));
const inspect = await oc(["plugins", "inspect", "imessage-rs", "--runtime"]);
if (!/Status: loaded/.test(inspect.stdout)) fail(`plugin imessage-rs did not load: ${inspect.stdout.split("\n").slice(0, 5).join(" | ")}`);
ok("package installed and loaded (openclaw plugins inspect imessage-rs)");

// --- 2. config: our library, host-stub and imsg-sim ---
const port = await new Promise((resolve) => { const s = net.createServer().listen(0, () => { const p = /** @type {any} */ (s.address()).port; s.close(() => resolve(p)); }); });
const token = "e2e-token";
const cfgPath = path.join(home, ".openclaw", "openclaw.json");
const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
cfg.plugins.entries["imessage-rs"].config = { library: path.join(binDir, "libimessage.so"), hostStub: path.join(binDir, "host-stub"), stateDir: path.join(home, "imessage-rs") };
cfg.gateway = { mode: "local", port, auth: { mode: "token", token } };
cfg.channels = { imessage: { cliPath: path.join(binDir, "imsg-sim"), dbPath: sim.scenario, allowFrom: [OWNER, ...Array.from({ length: 12 }, (_, i) => `+1555010${String(i).padStart(4, "0")}`)], dmPolicy: "pairing", groupPolicy: "open" } };
cfg.messages = { groupChat: { mentionPatterns: ["@bot\\b"] } };
writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));

// --- 3. does host-stub serve exist yet? (one line, then stop: nothing below can pass without it) ---
const probeDir = path.join(home, "probe-plugins");
mkdirSync(probeDir, { recursive: true });
symlinkSync(path.join(binDir, "libimessage.so"), path.join(probeDir, "libimessage.so"));
const serveProbe = await new Promise((resolve) => {
  const c = spawn(path.join(binDir, "host-stub"), ["--plugins", probeDir, "--state-dir", path.join(home, "probe-state"), "serve"], { stdio: ["pipe", "pipe", "pipe"] });
  let out = "", err = "";
  c.stdout.on("data", (d) => (out += d));
  c.stderr.on("data", (d) => (err += d));
  c.on("error", (e) => resolve(`cannot run host-stub: ${e.message}`));
  c.on("exit", () => resolve(out.includes('"jsonrpc"') ? null : `host-stub serve is not available: ${err.trim().split("\n")[0] || "no JSON-RPC answer"}`));
  c.stdin.end(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "describe", params: {} })}\n`);
  setTimeout(() => c.kill(), 10_000).unref();
});
if (serveProbe) fail(String(serveProbe));
ok("host-stub serve answers describe");

// --- 4. the gateway ---
function startGateway() {
  gateway = spawn(process.execPath, [ocBin, "gateway", "run", "--port", String(port), "--allow-unconfigured"], { env, stdio: ["ignore", "pipe", "pipe"] });
  const log = path.join(home, "gateway.log");
  gateway.stdout?.on("data", (d) => appendFileSync(log, d));
  gateway.stderr?.on("data", (d) => appendFileSync(log, d));
}
const status = async () => (await oc(["channels", "status", "--probe", "--json"]).catch((e) => ({ stdout: e.stdout ?? "" }))).stdout;
const connected = async () => /"connected":\s*true/.test(await status());
startGateway();
await waitFor("the account connected (openclaw channels status --probe)", connected, 180_000).catch((e) => fail(e.message));
ok("channels status --probe shows the account connected");

await scenario("stranger's DM gets a pairing code; pairing list shows it; approve admits the sender", async () => {
  insert({ chat_id: 8, handle: STRANGER, text: "hello?" });
  const codeSend = await waitFor("a pairing reply to the stranger", () => sends().find((s) => JSON.stringify(s).includes(STRANGER) && /code/i.test(JSON.stringify(s))), 60_000);
  const list = (await oc(["pairing", "list", "imessage", "--json"])).stdout;
  const code = (list.match(/"code"\s*:\s*"([A-Z0-9]+)"/) ?? [])[1];
  if (!code || !JSON.stringify(codeSend).includes(code)) throw new Error(`pairing list does not show the code that was sent (${JSON.stringify(codeSend).slice(0, 200)}): ${list.replace(/\s+/g, " ").slice(0, 200)}`);
  await oc(["pairing", "approve", "imessage", code]);
  const before = sends().length;
  insert({ chat_id: 8, handle: STRANGER, text: "now?" });
  await waitFor("a reply to the approved sender (agent-failure reply proves dispatch)", () => sends().slice(before).some((s) => JSON.stringify(s).includes(STRANGER)), 90_000);
});

await scenario("group message without mention dropped, with mention dispatched", async () => {
  const g0 = sends().length;
  insert({ chat_id: 42, handle: "+15550003333", text: "no mention here" });
  insert({ chat_id: 42, handle: "+15550003333", text: "@bot hi" });
  await waitFor("a reply in the group", () => sends().slice(g0).some((s) => JSON.stringify(s).includes("chat4242")), 90_000);
  const n = sends().slice(g0).filter((s) => JSON.stringify(s).includes("chat4242")).length;
  if (n !== 1) throw new Error(`expected one group reply, got ${n}`);
});

await scenario("owner's /status answered by OpenClaw", async () => {
  const s0 = sends().length;
  insert({ chat_id: 7, handle: OWNER, text: "/status" });
  await waitFor("an answer to /status", () => sends().slice(s0).some((s) => JSON.stringify(s).includes(OWNER)), 60_000);
});

await scenario("SIGKILL during a 50-message burst: exactly one reply per message after restart", async () => {
  const b0 = sends().length;
  for (let i = 0; i < 50; i++) {
    const h = `+1555010${String(i % 12).padStart(4, "0")}`;
    insert({ chat_id: 100 + (i % 12), handle: h, text: `burst ${i}` });
  }
  await waitFor("the 6th burst reply", () => sends().length - b0 >= 6, 120_000);
  gateway?.kill("SIGKILL");
  startGateway();
  await waitFor("one reply per burst message", () => sends().length - b0 >= 50, 600_000);
  // Settle on a positive marker: the account is connected again and a probe round-trip has
  // passed, so any duplicate already queued would have been sent by now.
  await waitFor("the restarted account connected", connected, 180_000);
  if (sends().length - b0 !== 50) throw new Error(`expected 50 replies, got ${sends().length - b0}`);
});

gateway?.kill("SIGTERM");
step(`done in ${Math.round((Date.now() - t0) / 1000)} s`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
