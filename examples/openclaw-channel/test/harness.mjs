// Helpers shared by the OpenClaw end-to-end test (e2e.mjs) and the parity check (compare.mjs).
import { existsSync } from "node:fs";
import path from "node:path";

/**
 * Polls `cond` until it returns something truthy (returned), or throws naming `what` after `ms`.
 * @template T @param {string} what @param {() => T | Promise<T>} cond @param {number} ms @param {number} [every]
 */
export async function waitFor(what, cond, ms, every = 200) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/**
 * The built libimessage in `binDir`. `cargo test --workspace` leaves the library (a
 * dev-dependency of the tests) in deps/ only, and deps/ always holds the newest build (a `cargo
 * build` writes there before copying it up). @param {string} binDir
 */
export function findLibrary(binDir) {
  return [path.join(binDir, "deps"), binDir].map((d) => path.join(d, "libimessage.so")).find((f) => existsSync(f)) ?? path.join(binDir, "libimessage.so");
}
