#!/usr/bin/env node
// A stand-in for `host-stub serve` (spec: host protocol §1/§4) that drives the package's side
// of the protocol until the real one lands: it delivers what FAKE_SERVE_EVENTS lists (a JSON
// array of InboundEvents, one deliver each, each after the previous was answered) and writes
// every message it receives to FAKE_SERVE_RECORD as JSON lines.
import { appendFileSync } from "node:fs";
import readline from "node:readline";

const record = process.env.FAKE_SERVE_RECORD;
const events = JSON.parse(process.env.FAKE_SERVE_EVENTS ?? "[]");
const log = (/** @type {unknown} */ m) => record && appendFileSync(record, `${JSON.stringify(m)}\n`);
const out = (/** @type {unknown} */ m) => process.stdout.write(`${JSON.stringify(m)}\n`);
log({ argv: process.argv.slice(2) });
let nextId = 1000;
/** @type {Map<number, (m: any) => void>} */
const waiting = new Map();
const request = (/** @type {string} */ method, /** @type {unknown} */ params) =>
  new Promise((resolve) => {
    const id = nextId++;
    waiting.set(id, resolve);
    out({ jsonrpc: "2.0", id, method, params });
  });

async function deliverAll() {
  for (const ev of events) log({ deliverAnswer: await request("deliver", ev), messageId: ev.messageId ?? ev.type });
  log({ delivered: events.length });
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  const m = JSON.parse(line);
  log({ in: m });
  if (m.method === undefined) {
    waiting.get(m.id)?.(m);
    waiting.delete(m.id);
  } else if (m.method === "describe") out({ jsonrpc: "2.0", id: m.id, result: { id: "imessage", protocolVersion: "1.0", methods: [] } });
  else if (m.method === "start") {
    out({ jsonrpc: "2.0", id: m.id, result: { accounts: [{ accountId: "default", enabled: true, watching: true }], warnings: [] } });
    deliverAll();
  } else if (m.method === "send") out({ jsonrpc: "2.0", id: m.id, result: { ok: true, accountId: "default", messageIds: ["S1"], chunks: 1, parts: [], replayed: false } });
  else if (m.method === "status") out({ jsonrpc: "2.0", id: m.id, result: { accounts: [{ accountId: "default", state: "watching", probe: { ok: true } }] } });
  else if (m.method === "stop") {
    out({ jsonrpc: "2.0", id: m.id, result: {} });
    out({ jsonrpc: "2.0", method: "plugin.closed", params: {} });
    process.exit(0);
  } else out({ jsonrpc: "2.0", id: m.id, error: { code: -32601, message: "method not found" } });
}
