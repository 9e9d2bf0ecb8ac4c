//! The stable ABI between a gateway ("the host") and its channel plugins, and the contract
//! both sides keep. A host author needs nothing but these docs.
//!
//! A plugin is a dynamic library that exports one [`PluginModRef`] root module. The host loads
//! it with a layout and version check ([`host::load`]), creates a plugin instance with
//! [`PluginMod::new`], handing it a [`HostCallbacks`] trait object, and then drives it through
//! the small, frozen [`ChannelPlugin`] method set:
//!
//! | host → plugin | takes | answers |
//! |---|---|---|
//! | `describe` | – | [`types::PluginDescription`] (id, versions, the `call` methods) |
//! | `start` | [`types::StartContext`] (the whole config, the state folder, host features) | [`types::StartReport`]; `config_invalid` with every problem, `state_dir_unsafe` |
//! | `send` | [`types::SendRequest`] | [`types::SendReceipt`] (see "Sends" below) |
//! | `status` | [`types::StatusRequest`] | [`types::StatusReport`] |
//! | `call` | a method name and its JSON payload | its reply: every method in [`contract`] |
//! | `stop` | – | – (children reaped, tasks joined) |
//!
//! | plugin → host | takes | answers |
//! |---|---|---|
//! | `deliver` | [`types::InboundEvent`] | `Ok` = durably taken (see "Delivery" below) |
//! | `log` | [`types::LogRecord`] | – |
//! | `request` | a [`contract::HostMethod`] and its payload (`config.write`; `pairing.upsert`, `pairing.allowFrom` under `pairing.host`) | its reply, or an error |
//!
//! Everything that crosses the boundary is either an `abi_stable` FFI-safe type or a JSON
//! string whose shape is one of the serde types in [`types`] and [`contract`]. Every error is a
//! [`types::PluginError`] whose code is one of [`contract::ErrorCode`]. New abilities arrive as
//! new [`ChannelPlugin::call`] method names and as new optional JSON fields, never as new trait
//! methods: a host whose trait grew refuses every plugin built against the older trait.
//!
//! Rules both sides rely on:
//! - No futures, runtime handles, channels or tracing objects cross: the library has its own
//!   copies of std, tokio and tracing.
//! - Host → plugin calls block; host callbacks only enqueue and return, and never call back
//!   into the plugin (a host that must ask a plugin something from a callback, such as
//!   validating a config, asks a second, never-started instance).
//! - A panic must never unwind across the boundary (it aborts the process). Plugins get this
//!   for free by implementing [`guard::Plugin`] and exporting [`guard::Guarded`]; a caught
//!   panic is a `panic` error and the instance keeps serving.
//!
//! # Delivery: what `Ok` promises, batches, retries and order
//!
//! The plugin hands inbound events to [`HostCallbacks::deliver`] as JSON
//! ([`types::InboundEvent`]). Returning `Ok` is the acknowledgement: the host has durably
//! taken responsibility for every event in that call, and only then does the plugin move its
//! catch-up cursor past them. Returning an error acknowledges nothing; the plugin delivers the
//! same events again, with the same `messageId`s, after 1 s, 4 s and 16 s; after the fourth
//! refusal it logs an error, counts each routed message as `delivery_failed` and moves on, so
//! one bad message cannot block the account. Deliveries of one account are sequential and in
//! the order the messages arrived: the next is made only after the previous one was answered,
//! and a refused delivery holds back the ones after it.
//!
//! **Opting in to batches (group commit).** A host that lists
//! [`types::features::BATCH_DELIVERY`] in [`types::StartContext::host`] may receive a
//! [`types::InboundEvent::Batch`]: several events in one call, at most `maxBatch` of them
//! (default [`types::features::DEFAULT_MAX_BATCH`]), all from one account, in the order they
//! would have come one by one. One `Ok` acknowledges them all, so a host that syncs to disk
//! syncs once per batch instead of once per message. Nothing waits for a batch to fill: a
//! batch is sent as soon as no further message is ready, and a single ready message comes as a
//! plain `message` event. A host that does not list the feature keeps the base contract: one
//! `message` event per call. Other abilities are opted into the same way
//! ([`types::HostFeatures`]); the plugin ignores feature names it does not know.
//!
//! ```text
//! StartContext { host: HostFeatures { features: ["deliver.batch"], maxBatch: 256, .. }, .. }
//! deliver({"type":"batch","events":[{"type":"message","messageId":"A",..},{..,"messageId":"B"}]})
//!   -> Ok   // A and B are the host's now; one fsync covered both
//! ```
//!
//! **Redelivery after a crash.** The cursor is persisted shortly after the acknowledgement,
//! so a crash of either side can deliver an acknowledged event again, with the same
//! `messageId`. Hosts keep the ids they have taken (host-stub keeps the last 10,000 per
//! account) and acknowledge a repeat without acting on it again; together this gives one turn
//! per message. A host that prints or forwards before it records the ids can, when killed
//! between the two, repeat at most the events of the one delivery in flight; it never loses
//! one.
//!
//! # Sends: idempotency keys, rate limits, outcomes
//!
//! [`ChannelPlugin::send`] answers a [`types::SendReceipt`] with one [`types::SendPart`] per
//! text chunk or file, in order. A part's `outcome`:
//!
//! | outcome | what happened | retry? |
//! |---|---|---|
//! | `sent` | imsg confirmed it; `messageId` is its GUID (or `rowid:<n>`, or `null`) | – |
//! | `failed` | imsg answered with an error; `error` quotes it | yes |
//! | `unknown` | written, but no definite answer (timeout after `sendTimeoutMs`, imsg's −32001, the sender process died): it may have been delivered | never blindly |
//! | `not_sent` | nothing was written (rate limited, the sender process could not start, an earlier part was `unknown`) | yes |
//!
//! After an `unknown` part the remaining parts are `not_sent` (`an earlier part has an unknown
//! outcome`), and the plugin itself never sends such a part again. A target that does not
//! parse is refused as a whole with `invalid_target`, a bad request with `invalid_request`.
//!
//! A host that wants retries to be safe sets [`types::SendRequest::idempotency_key`] (1–200
//! characters, no control characters): a repeat of the key never sends a part twice (the
//! plugin keeps a ledger across restarts), answers `replayed: true`, and a repeat with other
//! content is refused with `invalid_request`. Parts the plugin could settle by asking the
//! channel carry `reconciled: true`; `call("send.reconcile", {"idempotencyKey": …})` asks
//! again later ([`contract::SendReconcile`]). A part held back by the outbound rate limits is
//! `not_sent` with an error starting `rate limited:` and, where waiting helps, `retryAfterMs`.
//!
//! ```text
//! send({"to":"chat_id:7","text":"on my way","idempotencyKey":"q-42"})
//!   -> {"ok":true,"idempotencyKey":"q-42","parts":[{"kind":"text","outcome":"sent",
//!       "messageId":"902213b2-…","attemptId":"902213b2-…"}],…}
//! send(same request again)
//!   -> {…,"replayed":true,…}   // nothing written to the channel
//! ```

// `#[sabi_trait]` expands to impls that trip these lints; they can only be silenced here.
#![allow(non_local_definitions, unused_braces)]

pub mod chp;
pub mod contract;
pub mod guard;
pub mod host;
pub mod state_dir;
pub mod types;

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RStr, RString},
    StableAbi,
};

/// The ABI version: the version of this crate. abi_stable refuses a plugin whose major version
/// differs (or, for 0.y, whose minor is lower than the host's) before any code runs.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Host → plugin. Every method is blocking and returns JSON text; errors are the JSON of
/// [`types::PluginError`]. The method set is frozen (see the crate docs).
#[sabi_trait]
pub trait ChannelPlugin: Send + Sync {
    /// JSON of [`types::PluginDescription`].
    fn describe(&self) -> RString;

    /// Takes [`types::StartContext`], returns [`types::StartReport`]. Validates the config;
    /// on any config error nothing is started.
    fn start(&self, ctx: RStr<'_>) -> RResult<RString, RString>;

    /// Stops every account: children killed and reaped, tasks joined, runtime shut down.
    fn stop(&self) -> RResult<(), RString>;

    /// Takes [`types::SendRequest`], returns [`types::SendReceipt`].
    fn send(&self, request: RStr<'_>) -> RResult<RString, RString>;

    /// Takes [`types::StatusRequest`], returns [`types::StatusReport`].
    fn status(&self, request: RStr<'_>) -> RResult<RString, RString>;

    /// Extension point: `method` names an ability listed in the description's `methods`;
    /// `payload` and the result are JSON ([`contract`] has every method's types). Unknown
    /// methods fail with code `unknown_method`.
    fn call(&self, method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, RString>;
}

/// Plugin → host. Implementations must not panic, must not block for long and must never call
/// back into the plugin.
#[sabi_trait]
pub trait HostCallbacks: Send + Sync {
    /// Hands the host one [`types::InboundEvent`] (JSON). Returning `ROk` means the host has
    /// durably taken responsibility for it (the plugin then advances its catch-up cursor).
    fn deliver(&self, event: RStr<'_>) -> RResult<(), RString>;

    /// One [`types::LogRecord`] (JSON). The host decides format and level.
    fn log(&self, record: RStr<'_>);

    /// Plugin → host requests ([`contract::HostMethod`], e.g. `config.write`); JSON in, JSON
    /// out. A host answers a method it does not know with `unknown_method`.
    fn request(&self, method: RStr<'_>, payload: RStr<'_>) -> RResult<RString, RString>;
}

/// An owned plugin instance as the host holds it.
pub type PluginBox = ChannelPlugin_TO<'static, RBox<()>>;
/// The host's callbacks as the plugin holds them.
pub type HostBox = HostCallbacks_TO<'static, RBox<()>>;

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// JSON of [`types::PluginDescription`], without creating an instance.
    pub describe: extern "C" fn() -> RString,

    /// Creates a plugin instance bound to the host's callbacks. Errors are
    /// [`types::PluginError`] JSON.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(HostBox) -> RResult<PluginBox, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "channel_plugin";
    const NAME: &'static str = "channel_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
