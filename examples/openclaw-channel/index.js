// OpenClaw entry of the imessage-rs channel package (plain ESM, no build step).
import { defineChannelPluginEntry } from "openclaw/plugin-sdk/channel-core";

import { imessageChannel, setRuntime } from "./src/channel.js";

export default defineChannelPluginEntry({
  id: "imessage-rs",
  name: "iMessage (imessage-rs)",
  description: "iMessage channel backed by the imessage-rs library through host-stub serve",
  plugin: imessageChannel,
  setRuntime,
});
