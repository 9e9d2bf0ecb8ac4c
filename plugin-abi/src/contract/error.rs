//! Every error code either side puts in [`PluginError::code`], in one enum.
//!
//! The wire keeps the code a string (an older host or plugin may send one this list does not
//! know yet); [`PluginError::code`] reads it back as an [`ErrorCode`] when it is one of these.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::types::PluginError;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )+) => {
        /// A [`PluginError`] code. Serialised as the snake_case string shown on each variant.
        ///
        /// Grouped by who produces it: the plugin (any method), the chat actions, the host
        /// callbacks (plugin → host), and host-stub's own control socket.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* #[serde(rename = $wire)] $variant, )+
        }

        impl ErrorCode {
            /// Every code, in the order of this list.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire string (`"invalid_request"`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)+
                }
            }
        }

        impl FromStr for ErrorCode {
            type Err = UnknownErrorCode;

            fn from_str(code: &str) -> Result<Self, Self::Err> {
                match code {
                    $($wire => Ok(ErrorCode::$variant),)+
                    other => Err(UnknownErrorCode(other.to_string())),
                }
            }
        }
    };
}

error_codes! {
    // The plugin, any method.
    /// `start`, `config.validate`, `config.reload` (and a host's `config.write`): the config has
    /// errors. [`PluginError::errors`] holds every one as `<path>: <reason>`; nothing was
    /// started or changed.
    ConfigInvalid = "config_invalid",
    /// `start`: the state directory, or one of the plugin's folders in it, cannot be used or
    /// is not private (another user owns it, or others may write to it); nothing was started.
    StateDirUnsafe = "state_dir_unsafe",
    /// `send`, `status` or a `call` that needs a running plugin, before `start` or after
    /// `stop`.
    NotStarted = "not_started",
    /// The request is wrong: a missing or mistyped field (the message names it), an unknown
    /// or disabled account, `start` twice, an unknown pairing code, an idempotency key reused
    /// with other content or never recorded. Repeating the same request fails the same way.
    InvalidRequest = "invalid_request",
    /// A `to` that is not a phone number, email address or chat target; the message quotes the
    /// target and the reason.
    InvalidTarget = "invalid_target",
    /// A `call` method the plugin does not list in `describe().methods`, or a plugin → host
    /// request method the host does not know.
    UnknownMethod = "unknown_method",
    /// A payload that is not JSON or not the expected shape where the boundary decodes it
    /// (a plugin's `start`/`send`/`status` argument, an answer, a `config.write` request).
    BadPayload = "bad_payload",
    /// The other side panicked in this call; the panic was caught at the boundary and the
    /// instance keeps serving.
    Panic = "panic",
    /// Something broke inside the plugin (a state file could not be read or written, a value
    /// could not be encoded), or the other side answered with text that is not a
    /// [`PluginError`].
    Internal = "internal",
    /// imsg refused the action with an error response (`imsg <code> <message>: <data>`), a
    /// read receipt failed, or a host could not apply a `config.write` (reading or writing
    /// the file). Nothing was done; a retry may succeed.
    Failed = "failed",
    /// `capabilities.get`: imsg could not be asked what it can do (not installed, not
    /// starting, no answer).
    ImsgUnavailable = "imsg_unavailable",

    // The chat actions (`message.react`, `message.edit`, `message.unsend`).
    /// The action's gate is off in config (`actions.reactions`, `actions.edit`,
    /// `actions.unsend`): `iMessage <react|edit|unsend> is disabled in config.`
    Disabled = "disabled",
    /// imsg or the conversation cannot do it: the capability is missing (the message gives
    /// the reason), a custom emoji without `tapback.emoji` ≥ 2, edit or unsend on SMS. Also
    /// `pairing.list/approve/revoke` when the host keeps pairing (`pairing.host`).
    Unsupported = "unsupported",
    /// Edit or unsend of a message this account did not send (within the last 12 hours).
    NotOwnMessage = "not_own_message",
    /// Edit after 15 minutes or a sixth edit; unsend after 2 minutes.
    TooLate = "too_late",
    /// The outbound rate limits hold the action back: `rate limited: <reason>; retry after
    /// <n> ms`.
    RateLimited = "rate_limited",
    /// The request was written but no definite answer came (timeout, imsg's −32001, the
    /// child died, a bridge stall): it may have taken effect. Never retry it blindly
    /// (repeating a tapback can remove it).
    OutcomeUnknown = "outcome_unknown",

    // The host callbacks (plugin → host).
    /// The host's `deliver` refused the events: nothing was acknowledged and the plugin
    /// delivers them again later.
    Refused = "refused",
    /// A host refuses a `config.write` because `configWrites` is false for the account or a
    /// scope the path changes; the file is unchanged.
    ConfigWritesDisabled = "config_writes_disabled",

    // host-stub's control socket (the CLI talking to a running `host-stub gateway`).
    /// The control request is not valid JSON, or speaks another control protocol version.
    BadRequest = "bad_request",
    /// The control request names a channel the running gateway does not run.
    NotRunning = "not_running",
    /// The running gateway did not answer the control request.
    GatewayUnreachable = "gateway_unreachable",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets `PluginError::new(ErrorCode::Failed, …)` take the typed code.
impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> String {
        code.as_str().to_string()
    }
}

/// A code string that is not in [`ErrorCode`] (from a newer or foreign peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownErrorCode(pub String);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown error code \"{}\"", self.0)
    }
}

impl std::error::Error for UnknownErrorCode {}

impl PluginError {
    /// The code as an [`ErrorCode`]; `None` when the peer sent one this version does not know.
    pub fn code(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }

    /// Whether the code is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }
}
