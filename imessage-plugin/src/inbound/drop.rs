//! Why a row was not routed (channel-behaviour.md §2): one code per reason, counted in the
//! account's `drops` statistics under its wire name.

macro_rules! drop_codes {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )+) => {
        /// A drop reason; [`DropCode::as_str`] is the name logs and statistics show.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropCode {
            $( $(#[$doc])* $variant, )+
        }

        impl DropCode {
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(DropCode::$variant => $wire,)+
                }
            }
        }
    };
}

drop_codes! {
    Duplicate = "duplicate",
    Stale = "stale",
    /// A tapback row for a host that does not take reaction events.
    Reaction = "reaction",
    FromMe = "from_me",
    SelfChatMirror = "self_chat_mirror",
    Echo = "echo",
    MissingSender = "missing_sender",
    MissingChatId = "missing_chat_id",
    Reflection = "reflection",
    Empty = "empty",
    GroupDisabled = "group_disabled",
    GroupNotAllowed = "group_not_allowed",
    GroupNotConfigured = "group_not_configured",
    DmDisabled = "dm_disabled",
    DmNotAllowed = "dm_not_allowed",
    PairingPending = "pairing_pending",
    UnauthorizedCommand = "unauthorized_command",
    ConfigMalformed = "config_malformed",
    ConfigDisabled = "config_disabled",
    ConfigWritesDisabled = "config_writes_disabled",
    NoMention = "no_mention",
    LoopLimited = "loop_limited",
    ReactionDisabled = "reaction_disabled",
    ReactionNotOwn = "reaction_not_own",
    // Decided by the watcher, after the pipeline.
    /// A row imsg sent that does not decode.
    Malformed = "malformed",
    /// A row whose processing panicked.
    Quarantined = "quarantined",
    DeliveryFailed = "delivery_failed",
    /// The host refused a reaction event.
    ReactionRefused = "reaction_refused",
}

impl DropCode {
    /// Rows that say nothing about the conversation's activity: our own, an echo of our own,
    /// and rows already seen or too old. Every other row, dropped or not, is someone writing
    /// (the rate limiter's unanswered counts reset, actions.md §6.2).
    pub fn is_own_or_replayed(self) -> bool {
        matches!(
            self,
            DropCode::FromMe | DropCode::Echo | DropCode::Duplicate | DropCode::Stale
        )
    }
}
