// Finds the two files the bridge needs: the `host-stub` binary (which runs `serve`) and the
// `libimessage` library it loads. Each comes from the plugin config, else an environment
// variable, else the repository's release build, so a checkout works with no config at all.

import { constants, accessSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root: this package lives in `examples/openclaw-channel/src`. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** @param {NodeJS.Platform} platform */
export function librarySuffix(platform) {
  return platform === "darwin" ? "dylib" : "so";
}

/**
 * @typedef {{ library?: string, hostStub?: string }} PluginSettings
 * @typedef {{ path: string, source: string }} Choice
 */

/**
 * Picks the paths without touching the disk (pure: config, then env, then the default).
 * @param {PluginSettings} settings
 * @param {Record<string, string | undefined>} env
 * @param {NodeJS.Platform} platform
 * @returns {{ library: Choice, hostStub: Choice }}
 */
export function choosePaths(settings, env, platform) {
  const release = path.join(REPO_ROOT, "target", "release");
  const pick = (/** @type {string | undefined} */ cfg, /** @type {string} */ key, /** @type {string} */ envName, /** @type {string} */ fallback) => {
    if (typeof cfg === "string" && cfg.trim()) return { path: path.resolve(cfg), source: `plugins.entries.imessage-rs.config.${key}` };
    const fromEnv = env[envName];
    if (fromEnv && fromEnv.trim()) return { path: path.resolve(fromEnv), source: envName };
    return { path: fallback, source: "default" };
  };
  return {
    library: pick(settings.library, "library", "IMESSAGE_PLUGIN_LIBRARY", path.join(release, `libimessage.${librarySuffix(platform)}`)),
    hostStub: pick(settings.hostStub, "hostStub", "IMESSAGE_HOST_STUB", path.join(release, "host-stub")),
  };
}

/**
 * Checks one chosen file; returns null when usable, else one line naming the path and where
 * it came from (this line is what `openclaw channels status` shows).
 * @param {string} what
 * @param {Choice} choice
 * @param {boolean} executable
 */
export function checkFile(what, choice, executable) {
  let st;
  try {
    st = statSync(choice.path);
  } catch {
    return `${what} not found at ${choice.path} (from ${choice.source})`;
  }
  if (!st.isFile()) return `${what} at ${choice.path} is not a file (from ${choice.source})`;
  try {
    accessSync(choice.path, executable ? constants.X_OK : constants.R_OK);
  } catch {
    return `${what} at ${choice.path} is not ${executable ? "executable" : "readable"} (from ${choice.source})`;
  }
  return null;
}

/**
 * The plugin's own settings from an OpenClaw config (`plugins.entries.imessage-rs.config`).
 * @param {any} cfg
 * @returns {PluginSettings}
 */
export function pluginSettings(cfg) {
  const c = cfg?.plugins?.entries?.["imessage-rs"]?.config;
  return c && typeof c === "object" ? c : {};
}

/**
 * Resolves and checks both paths; `error` is one line when either is unusable.
 * @param {any} cfg
 * @param {Record<string, string | undefined>} [env]
 */
export function locate(cfg, env = process.env) {
  const chosen = choosePaths(pluginSettings(cfg), env, process.platform);
  const error =
    checkFile("iMessage host-stub", chosen.hostStub, true) ?? checkFile("iMessage library", chosen.library, false);
  return { ...chosen, error };
}
