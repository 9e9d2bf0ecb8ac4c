#!/usr/bin/env node
// Checks that a channel plugin library loads through its C ABI: prints its `describe`, then
// one instance's `status` (asked over the wakeup fd, as the gateway does), as JSON lines,
// then stops and frees the instance.
//
//   node probe.mjs target/debug/libimessage.so

import { Channel, loadLibrary } from './chp.mjs';

async function main() {
  const library = process.argv[2];
  if (!library) throw new Error('usage: probe.mjs LIBRARY');
  const chp = loadLibrary(library);
  const described = chp.describe();
  if (described === null) throw new Error(`chp_describe failed: ${chp.lastError()}`);
  console.log(JSON.stringify({ abiVersion: chp.abiVersion(), describe: JSON.parse(described) }));
  const channel = new Channel(chp);
  channel.onMessage = () => undefined;
  // A plugin may refuse status before `start` (libimessage does): that answer is printed too.
  const status = await channel.request('status', {}).catch((e) => ({ error: e.rpc ?? e.message }));
  console.log(JSON.stringify({ status }));
  await channel.request('stop');
  await channel.whenClosed;
  channel.free();
  console.log(JSON.stringify({ closed: true }));
}

main().catch((e) => {
  process.stderr.write(`probe: ${e.message}\n`);
  process.exit(1);
});
