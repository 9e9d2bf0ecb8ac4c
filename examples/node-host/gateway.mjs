#!/usr/bin/env node
// A small Node gateway over a channel plugin's C ABI (libimessage or any other): it starts
// the channel with a gateway config, prints every routed message as one JSON line on stdout
// after appending it to a journal and fsyncing it, then acknowledges the delivery, and with
// --echo answers each message through `send` with an idempotency key derived from its
// messageId. SIGINT, SIGTERM or EOF on stdin stop it: stop → plugin.closed → chp_free.
//
//   node gateway.mjs --library target/debug/libimessage.so --config gateway.json \
//       --state-dir state [--echo] [--log-level info] [--options '{"ackTimeoutMs": 30000}']
//
// The config file is JSON (the gateway config with `channels.imessage`; JSON5 needs a
// parser this example does not depend on). Everything but routed messages goes to stderr.

import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Channel, loadLibrary } from './chp.mjs';

const USAGE = 'usage: gateway.mjs --library FILE --config FILE --state-dir DIR [--echo] [--log-level LEVEL] [--options JSON]';

/** @param {string} text */
const note = (text) => process.stderr.write(`[gateway] ${text}\n`);

/** @returns {{library: string, config: string, stateDir: string, echo: boolean, logLevel: string, options: object | undefined}} */
function readArgs() {
  const { values } = parseArgs({
    options: {
      library: { type: 'string' },
      config: { type: 'string' },
      'state-dir': { type: 'string' },
      echo: { type: 'boolean', default: false },
      'log-level': { type: 'string', default: 'info' },
      options: { type: 'string' },
    },
  });
  for (const required of ['library', 'config', 'state-dir']) {
    if (!values[required]) throw new Error(`--${required} is required\n${USAGE}`);
  }
  let options;
  if (values.options) {
    try {
      options = JSON.parse(values.options);
    } catch (e) {
      throw new Error(`--options: not JSON: ${e.message}`);
    }
  }
  return {
    library: values.library,
    config: values.config,
    stateDir: values['state-dir'],
    echo: values.echo,
    logLevel: values['log-level'],
    options,
  };
}

/**
 * The delivered events, one JSON line each, appended and fsynced before an acknowledgement:
 * after a crash the plugin delivers unacknowledged events again, and the ids read back here
 * let the gateway acknowledge those without printing them twice.
 */
class Journal {
  /** @param {string} file */
  static async open(file) {
    await fs.mkdir(path.dirname(file), { recursive: true });
    const seen = new Set();
    const text = await fs.readFile(file, 'utf8').catch((e) => (e.code === 'ENOENT' ? '' : Promise.reject(e)));
    for (const line of text.split('\n')) {
      try {
        seen.add(Journal.key(JSON.parse(line)));
      } catch {
        // A line cut short by a crash: its event was never acknowledged, so it comes again.
      }
    }
    return new Journal(await fs.open(file, 'a'), seen);
  }

  /** @param {any} event */
  static key(event) {
    return `${event.accountId}\n${event.messageId}`;
  }

  constructor(handle, seen) {
    this.handle = handle;
    this.seen = seen;
    this.tail = Promise.resolve();
  }

  /**
   * Appends the events not seen before and fsyncs them (one write and one sync for a whole
   * batch); resolves with those events. Appends run one after another.
   *
   * @param {any[]} events
   * @returns {Promise<any[]>}
   */
  record(events) {
    const run = this.tail.then(async () => {
      const fresh = events.filter((e) => !this.seen.has(Journal.key(e)));
      if (fresh.length === 0) return fresh;
      await this.handle.appendFile(fresh.map((e) => `${JSON.stringify(e)}\n`).join(''));
      await this.handle.sync();
      for (const e of fresh) this.seen.add(Journal.key(e));
      return fresh;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }
}

/**
 * A key that makes the echo of one message a single send, also across restarts (1–200
 * characters, whatever the messageId's length).
 *
 * @param {any} message
 */
export function echoKey(message) {
  const digest = createHash('sha256').update(`${message.accountId}\n${message.messageId}`).digest('hex');
  return `echo-${digest.slice(0, 40)}`;
}

/** Handles one plugin → host message; a request's return value is its response. */
function handler(channel, journal, echo) {
  return async (message) => {
    switch (message.method) {
      case 'deliver': {
        const event = message.params;
        const events = event.type === 'batch' ? event.events : [event];
        const fresh = await journal.record(events);
        for (const e of fresh) process.stdout.write(`${JSON.stringify(e)}\n`);
        if (echo) fresh.filter((e) => e.type === 'message').forEach((m) => sendEcho(channel, m));
        return {}; // the acknowledgement: every event in it is durable
      }
      case 'log': {
        const r = message.params;
        process.stderr.write(`[${r.level}] ${r.target}: ${r.message}\n`);
        return undefined;
      }
      case 'plugin.closed':
        note('plugin.closed');
        return undefined;
      default:
        // host.request methods (config.write, …) this gateway does not implement.
        throw Object.assign(new Error(`${message.method}: not supported by this gateway`), { code: -32601 });
    }
  };
}

/** Answers a message with `echo: <text>`; a failure is reported, never fatal. */
function sendEcho(channel, message) {
  const request = {
    accountId: message.accountId,
    to: message.to,
    text: `echo: ${message.text}`,
    idempotencyKey: echoKey(message),
  };
  channel.request('send', request).then(
    (receipt) => note(`echo sent to ${message.to}: ${receipt.ok ? 'ok' : JSON.stringify(receipt.parts)}`),
    (e) => note(`echo to ${message.to} failed: ${e.message}`),
  );
}

/** Stops the channel once: stop → plugin.closed → chp_free. */
function stopper(channel, journal) {
  let stopping;
  return (why, exitCode = 0) => {
    stopping ??= (async () => {
      note(`stopping (${why})`);
      await channel.request('stop').catch((e) => note(`stop: ${e.message}`));
      await channel.whenClosed;
      channel.free();
      await journal.handle.close();
      process.stdin.destroy();
      process.exitCode ||= exitCode;
    })();
    return stopping;
  };
}

async function main() {
  const args = readArgs();
  const config = JSON.parse(await fs.readFile(args.config, 'utf8'));
  const chp = loadLibrary(args.library);
  const described = JSON.parse(chp.describe() ?? 'null');
  if (!described) throw new Error(`chp_describe failed: ${chp.lastError()}`);
  const channel = new Channel(chp, args.options);
  const journal = await Journal.open(path.join(args.stateDir, 'node-host', `${described.id}-delivered.jsonl`));
  channel.onMessage = handler(channel, journal, args.echo);
  const stop = stopper(channel, journal);
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.stdin.on('end', () => stop('EOF on stdin'));
  process.stdin.resume();
  const context = {
    config,
    stateDir: args.stateDir,
    watch: true,
    logLevel: args.logLevel,
    host: { features: ['deliver.batch'] },
  };
  try {
    const report = await channel.request('start', context);
    note(`started ${described.id} ${described.version}: ${JSON.stringify(report)}`);
  } catch (e) {
    note(`start failed: ${e.message}${e.rpc?.data ? ` ${JSON.stringify(e.rpc.data)}` : ''}`);
    await stop('start failed', 1);
  }
}

main().catch((e) => {
  note(e.message);
  process.exit(2);
});
