// Pure translations between the library's wire types (plugin_abi::types, camelCase JSON) and
// OpenClaw's shapes. The library has already decided policy (who is admitted, mention gating,
// command authority, the session key); these functions only carry its decision across.

/**
 * @typedef {{ sessionKey: string, agentId: string, accountId: string, chatType: string, to: string,
 *   senderId: string, text: string, messageId: string, wasMentioned: boolean,
 *   commandAuthorized: boolean, senderIsOwner?: boolean, messageSid?: string,
 *   replyTo?: { id?: string|null, text?: string|null, sender?: string|null } | null,
 *   media: { path: string, mime: string, size: number }[], createdAt?: string, chatName?: string,
 *   chatId?: number }} RoutedMessage
 * @typedef {{ sessionKey: string, text: string, contextKey: string, messageId: string, accountId: string, to: string }} ReactionEvent
 */

/** Events in one `deliver` (a batch flattened; unknown types kept so they can be skipped). @param {any} ev */
export function flatten(ev) {
  if (ev && ev.type === "batch" && Array.isArray(ev.events)) return ev.events.flatMap(flatten);
  return [ev];
}

/** The journal id of an event: kind and account keep a message and a tapback apart. @param {any} ev */
export function eventId(ev) {
  const id = typeof ev?.messageId === "string" ? ev.messageId : "";
  return `${ev?.type ?? "?"}:${ev?.accountId ?? "?"}:${id}`;
}

/**
 * OpenClaw's inbound context for one routed message (the fields of MsgContext in
 * dist/cli-backend.types-*.d.ts). `SessionKey` and `AgentId` are the library's route.
 * @param {RoutedMessage} m
 */
export function toMsgContext(m) {
  const group = m.chatType === "group";
  const media = (m.media ?? []).map((x) => ({ path: x.path, contentType: x.mime, messageId: m.messageId }));
  /** @type {Record<string, unknown>} */
  const ctx = {
    Body: m.text,
    BodyForAgent: m.text,
    CommandBody: m.text,
    BodyForCommands: m.text,
    From: `imessage:${m.senderId}`,
    To: m.to,
    SessionKey: m.sessionKey,
    AgentId: m.agentId,
    AccountId: m.accountId,
    // `messageSid` only when a replayed turn must be run again under a fresh id (bridge.js).
    MessageSid: m.messageSid ?? m.messageId,
    ChatType: group ? "group" : "direct",
    ConversationLabel: group ? (m.chatName ?? m.to) : m.senderId,
    SenderId: m.senderId,
    Provider: "imessage",
    Surface: "imessage",
    OriginatingChannel: "imessage",
    OriginatingTo: m.to,
    WasMentioned: Boolean(m.wasMentioned),
    CommandAuthorized: Boolean(m.commandAuthorized),
    SenderIsOwner: Boolean(m.senderIsOwner),
  };
  if (group && m.chatName) ctx.GroupSubject = m.chatName;
  if (media.length) ctx.media = media;
  if (m.replyTo?.id) {
    ctx.ReplyToId = m.replyTo.id;
    if (m.replyTo.text) ctx.ReplyToBody = m.replyTo.text;
    if (m.replyTo.sender) ctx.ReplyToSender = m.replyTo.sender;
  }
  const ts = m.createdAt ? Date.parse(m.createdAt) : NaN;
  if (Number.isFinite(ts)) ctx.Timestamp = ts;
  return ctx;
}

/**
 * The idempotency key of the reply at `index` of the turn for `messageId`: the same turn
 * replayed after a crash produces the same keys, so the library sends each reply once.
 * @param {string} accountId @param {string} messageId @param {number} index
 */
export function replyKey(accountId, messageId, index) {
  return `openclaw:${accountId}:${messageId}:${index}`;
}

/**
 * A `send` request for one OpenClaw reply payload; null when it carries nothing to send.
 * @param {{ text?: string, mediaUrl?: string, mediaUrls?: string[], replyToId?: string }} payload
 * @param {{ accountId: string, to: string, idempotencyKey?: string, replyToId?: string }} route
 */
export function toSendRequest(payload, route) {
  const media = [...(payload.mediaUrls ?? []), ...(payload.mediaUrl ? [payload.mediaUrl] : [])];
  const text = typeof payload.text === "string" && payload.text.trim() ? payload.text : undefined;
  if (!text && media.length === 0) return null;
  /** @type {Record<string, unknown>} */
  const req = { accountId: route.accountId, to: route.to, media };
  if (text) req.text = text;
  const replyToId = payload.replyToId ?? route.replyToId;
  if (replyToId) req.replyToId = replyToId;
  if (route.idempotencyKey) req.idempotencyKey = route.idempotencyKey;
  return req;
}

/**
 * OpenClaw's account snapshot from the library's AccountStatus (plugin_abi::types).
 * `blocked` is Full Disk Access missing on the Mac; its reason is the library's last error.
 * @param {any} s
 */
export function toSnapshot(s) {
  const state = String(s?.state ?? "stopped");
  const lifecycle = /** @type {const} */ ({
    starting: "starting",
    watching: "ready",
    recovering: "recovering",
    blocked: "blocked",
    duplicate_source: "blocked",
    stopped: "stopped",
  })[state];
  const at = (/** @type {unknown} */ v) => (typeof v === "string" && Number.isFinite(Date.parse(v)) ? Date.parse(v) : null);
  return {
    accountId: String(s?.accountId ?? "default"),
    name: s?.name || undefined,
    enabled: s?.enabled !== false,
    configured: s?.configured !== false,
    running: state !== "stopped",
    connected: state === "watching",
    statusState: state,
    lifecycle: lifecycle ?? "recovering",
    lastError: s?.lastError ?? s?.probe?.error ?? null,
    lastInboundAt: at(s?.lastInboundAt),
    lastOutboundAt: at(s?.lastOutboundAt),
  };
}

/**
 * The config handed to one child: the whole OpenClaw config (the library reads `session`,
 * `messages`, `agents`, `bindings`, `commands` as OpenClaw does), with `channels.imessage`
 * narrowed to the one account this child runs, so each child watches exactly one account.
 * @param {any} cfg @param {string} accountId
 */
export function configForAccount(cfg, accountId) {
  const section = cfg?.channels?.imessage ?? {};
  const accounts = section.accounts && typeof section.accounts === "object" ? section.accounts : {};
  /** @type {Record<string, unknown>} */
  const narrowed = { ...section };
  const others = Object.keys(accounts).filter((id) => id !== accountId);
  if (others.length) {
    narrowed.accounts = Object.fromEntries(
      Object.entries(accounts).map(([id, acc]) => [id, id === accountId ? acc : { ...acc, enabled: false }]),
    );
  }
  if (accountId !== "default" && accounts[accountId]) narrowed.defaultAccount = accountId;
  return { ...cfg, channels: { ...cfg?.channels, imessage: narrowed } };
}

/** Account ids as the library resolves them: named accounts, else the one `default`. @param {any} cfg */
export function listAccountIds(cfg) {
  const accounts = cfg?.channels?.imessage?.accounts;
  const ids = accounts && typeof accounts === "object" ? Object.keys(accounts) : [];
  return ids.length ? ids : ["default"];
}
