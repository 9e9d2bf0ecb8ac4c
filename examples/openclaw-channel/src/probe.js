// An optional check that the package never holds OpenClaw's event loop. With
// IMESSAGE_RS_LOOP_PROBE=<file>, every running gateway appends one JSON line per second to the
// file: the event-loop delay of that second (perf_hooks.monitorEventLoopDelay: the whole
// process, so OpenClaw's own work shows too) and the longest synchronous slice the package
// itself ran (measured around its callbacks with the main thread's CPU clock, so a busy
// machine that preempts us does not inflate it). The e2e test asserts a bound on the second
// and reports the first. Unset, `slice` is a plain call and nothing is measured or written.

import { promises as fs } from "node:fs";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";

/** Timer interval of the delay histogram; a recorded value is this interval plus the delay. */
export const RESOLUTION_MS = 10;
/** One line per window. */
export const WINDOW_MS = 1000;

/** CPU time of the calling thread in ms (process-wide where threadCpuUsage is missing). */
function threadCpuMs() {
  const u = typeof process.threadCpuUsage === "function" ? process.threadCpuUsage() : process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Longest synchronous slices, by callback name, over one window (pure bookkeeping). */
export class SliceStats {
  constructor() {
    this.reset();
  }
  reset() {
    this.count = 0;
    this.cpuMs = 0;
    this.maxCpuMs = 0;
    this.maxWallMs = 0;
    /** @type {string | null} */
    this.worst = null;
  }
  /** @param {string} name @param {number} cpuMs @param {number} wallMs */
  record(name, cpuMs, wallMs) {
    this.count++;
    this.cpuMs += cpuMs;
    if (cpuMs > this.maxCpuMs) {
      this.maxCpuMs = cpuMs;
      this.worst = name;
    }
    this.maxWallMs = Math.max(this.maxWallMs, wallMs);
  }
}

const round = (/** @type {number} */ ms) => Math.round(ms * 100) / 100;

/**
 * One window's line. The histogram records whole timer intervals, so the delay is the
 * recorded value minus the resolution.
 * @param {{ max: number, mean: number, count: number, percentile: (p: number) => number }} h nanoseconds
 * @param {SliceStats} s
 * @param {number} now epoch ms
 */
export function windowLine(h, s, now, pid = process.pid) {
  const delay = (/** @type {number} */ ns) => (h.count ? round(Math.max(0, ns / 1e6 - RESOLUTION_MS)) : 0);
  return {
    t: now,
    pid,
    loop: { maxMs: delay(h.max), p99Ms: delay(h.percentile(99)), meanMs: delay(h.mean), samples: h.count },
    pkg: { slices: s.count, cpuMs: round(s.cpuMs), maxCpuMs: round(s.maxCpuMs), maxWallMs: round(s.maxWallMs), worst: s.worst },
  };
}

export class LoopProbe {
  /** @param {string | undefined} file */
  constructor(file) {
    this.file = file || null;
    this.stats = new SliceStats();
    /** @type {ReturnType<typeof monitorEventLoopDelay> | null} */
    this.hist = null;
    this.writing = Promise.resolve();
  }

  /** Starts measuring (once per process; only gateways that run an account call it). */
  start() {
    if (!this.file || this.hist) return;
    this.hist = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.hist.enable();
    setInterval(() => this.#flush(), WINDOW_MS).unref();
  }

  /**
   * Runs `fn` and, when probing, records its synchronous time (for an async function: up to
   * its first await, which is all it holds the loop for before it yields).
   * @template T @param {string} name @param {() => T} fn @returns {T}
   */
  slice(name, fn) {
    if (!this.hist) return fn();
    const cpu0 = threadCpuMs();
    const wall0 = performance.now();
    try {
      return fn();
    } finally {
      this.stats.record(name, threadCpuMs() - cpu0, performance.now() - wall0);
    }
  }

  /** @template {(...a: any[]) => any} F @param {string} name @param {F} fn @returns {F} */
  wrap(name, fn) {
    return /** @type {F} */ ((/** @type {any[]} */ ...a) => this.slice(name, () => fn(...a)));
  }

  #flush() {
    const h = this.hist;
    if (!h || !this.file) return;
    const line = `${JSON.stringify(windowLine(h, this.stats, Date.now()))}\n`;
    h.reset();
    this.stats.reset();
    const file = this.file;
    // Appends are chained so lines keep their order; a failure is reported once per window,
    // never thrown into OpenClaw.
    this.writing = this.writing.then(() => fs.appendFile(file, line).catch((e) => console.error(`imessage-rs loop probe: cannot append to ${file}: ${e.message}`)));
  }
}

/** The process's probe: off unless IMESSAGE_RS_LOOP_PROBE names a file. */
export const probe = new LoopProbe(process.env.IMESSAGE_RS_LOOP_PROBE);
