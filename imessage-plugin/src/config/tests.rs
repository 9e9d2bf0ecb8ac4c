//! The config cases of channel-behaviour.md §12 (1–19), plus the error format of §1.1.

use serde_json::{json, Value};

use super::*;

/// Parses `config`; one it accepts must validate against the config schema too.
fn load(config: Value) -> Result<Config, Vec<String>> {
    let result = parse(&config);
    if result.is_ok() {
        let channel = read::lookup(&config, &["channels", "imessage"]).unwrap_or(&Value::Null);
        schema::tests::assert_valid(channel, "a config the config tests load");
    }
    result
}

fn section(channel: Value) -> Value {
    json!({ "channels": { "imessage": channel } })
}

fn errors(config: Value) -> Vec<String> {
    match load(config) {
        Ok(_) => panic!("expected the config to be rejected"),
        Err(e) => e,
    }
}

fn assert_error(config: Value, want: &str) {
    let errs = errors(config);
    assert!(errs.iter().any(|e| e == want), "want {want:?} in {errs:#?}");
}

fn assert_error_at(config: Value, path: &str) {
    let errs = errors(config);
    assert!(
        errs.iter().any(|e| e.starts_with(&format!("{path}: "))),
        "want an error at {path} in {errs:#?}"
    );
}

#[test]
fn case_01_defaults() {
    let cfg = load(section(json!({}))).unwrap();
    assert_eq!(cfg.accounts.len(), 1);
    let a = &cfg.accounts[0];
    assert_eq!(a.id, "default");
    assert_eq!(a.dm_policy, DmPolicy::Pairing);
    assert_eq!(a.group_policy, GroupPolicy::Allowlist);
    assert_eq!(a.cli_path, "imsg");
    assert_eq!(a.service, "auto");
    assert_eq!(a.region, "US");
    assert_eq!(a.text_chunk_limit, 4000);
    assert_eq!(a.chunk_mode, ChunkMode::Length);
    assert_eq!(a.media_max_mb, 16);
    assert!(!a.include_attachments);
    assert_eq!(a.probe_timeout_ms, 10_000);
    assert_eq!(a.send_timeout_ms, 150_000);
    assert_eq!(
        a.attachment_roots,
        vec![DEFAULT_ATTACHMENT_ROOT.to_string()]
    );
    assert!(a.catchup.enabled);
    assert!(!cfg.warnings.iter().any(|w| w == MISSING_SECTION_WARNING));
}

#[test]
fn case_02_missing_section_warns_once() {
    let cfg = load(json!({})).unwrap();
    assert_eq!(cfg.accounts[0].id, "default");
    let n = cfg
        .warnings
        .iter()
        .filter(|w| *w == MISSING_SECTION_WARNING)
        .count();
    assert_eq!(n, 1);
}

#[test]
fn case_03_open_requires_star() {
    assert_error(
        section(json!({"dmPolicy": "open", "allowFrom": ["+15550001111"]})),
        "channels.imessage.allowFrom: dmPolicy \"open\" requires \"*\" in allowFrom",
    );
    assert!(load(section(json!({"dmPolicy": "open", "allowFrom": ["*"]}))).is_ok());
}

#[test]
fn case_04_allowlist_requires_entries() {
    assert_error(
        section(json!({"dmPolicy": "allowlist"})),
        "channels.imessage.allowFrom: dmPolicy \"allowlist\" requires at least one allowFrom entry",
    );
}

#[test]
fn case_05_cross_rule_path_names_the_account() {
    assert_error_at(
        section(json!({"allowFrom": ["*"], "dmPolicy": "open",
            "accounts": {"work": {"dmPolicy": "allowlist", "allowFrom": []}}})),
        "channels.imessage.accounts.work.allowFrom",
    );
}

#[test]
fn case_06_accounts_inherit() {
    let cfg = load(section(json!({"allowFrom": ["+15550001111"],
        "accounts": {"work": {"dmPolicy": "allowlist"}}})))
    .unwrap();
    assert_eq!(cfg.accounts.len(), 1, "no implicit default account");
    assert_eq!(
        cfg.accounts[0].allow_from,
        vec![AllowEntry::Handle("+15550001111".into())]
    );
    assert_eq!(cfg.default_account, "work");
}

#[test]
fn case_07_cli_path() {
    assert_error_at(
        section(json!({"cliPath": "imsg; rm -rf ~"})),
        "channels.imessage.cliPath",
    );
    assert_error_at(
        section(json!({"cliPath": "-imsg"})),
        "channels.imessage.cliPath",
    );
    assert!(load(section(json!({"cliPath": "/Applications/My Tools/imsg"}))).is_ok());
    assert!(load(section(json!({"cliPath": "~/bin/imsg-ssh"}))).is_ok());
}

#[test]
fn case_08_remote_host() {
    assert_error_at(
        section(json!({"remoteHost": "bot@mac -oProxyCommand=x"})),
        "channels.imessage.remoteHost",
    );
    assert!(load(section(json!({"remoteHost": "bot@[fe80::1%en0]"}))).is_ok());
}

#[test]
fn case_09_attachment_roots() {
    for bad in [json!(["./att"]), json!(["/"]), json!(["/Users/b*/x"])] {
        assert_error_at(
            section(json!({"attachmentRoots": bad})),
            "channels.imessage.attachmentRoots[0]",
        );
    }
    assert!(load(section(json!({"attachmentRoots":
        ["/Users/*/Library/Messages/Attachments", "/Volumes/relay/att"]})))
    .is_ok());
}

#[test]
fn media_local_roots_are_absolute_and_the_account_overrides_the_channel() {
    assert_error(
        section(json!({"mediaLocalRoots": ["/srv/out", "out"]})),
        "channels.imessage.mediaLocalRoots[1]: must be an absolute path",
    );
    assert_error(
        section(json!({"accounts": {"work": {"mediaLocalRoots": [7]}}})),
        "channels.imessage.accounts.work.mediaLocalRoots[0]: must be an absolute path",
    );
    let cfg = load(section(json!({"mediaLocalRoots": ["/srv/out"],
        "accounts": {"work": {"mediaLocalRoots": ["/srv/work"]}, "home": {}}})))
    .unwrap();
    let roots = |id: &str| {
        let a = cfg.accounts.iter().find(|a| a.id == id).unwrap();
        a.media_local_roots.clone()
    };
    assert_eq!(roots("work"), Some(vec!["/srv/work".to_string()]));
    assert_eq!(roots("home"), Some(vec!["/srv/out".to_string()]));
    let unset = load(section(json!({}))).unwrap();
    assert_eq!(unset.accounts[0].media_local_roots, None);
}

#[test]
fn case_10_group_keys() {
    let cfg = load(section(
        json!({"groups": {"42": {}, "chat_guid:iMessage;+;chat4242": {},
        "chat_identifier:chat99": {}, "*": {}}}),
    ))
    .unwrap();
    assert_eq!(cfg.accounts[0].groups.as_ref().unwrap().len(), 4);
    assert_error(
        section(json!({"groups": {"team": {}}})),
        "channels.imessage.groups[\"team\"]: group key must be a chat id (digits), \"chat_guid:…\", \"chat_identifier:…\" or \"*\"",
    );
    assert_error(
        section(json!({"groups": {"42": {"requireMention": true, "bogus": 1}}})),
        "channels.imessage.groups[\"42\"].bogus: unknown field",
    );
}

#[test]
fn case_11_allow_entries() {
    assert_error_at(
        section(json!({"allowFrom": ["chat_id:abc"]})),
        "channels.imessage.allowFrom[0]",
    );
    let cfg = load(section(json!({"allowFrom": [15550001111u64]}))).unwrap();
    assert_eq!(
        cfg.accounts[0].allow_from,
        vec![AllowEntry::Handle("+15550001111".into())]
    );
    assert!(cfg.warnings.iter().any(|w| w
        == "allowFrom entry \"15550001111\" was read as \"+15550001111\"; write phone numbers with + and the country code"));
}

#[test]
fn case_12_field_reasons() {
    let cases = [
        (json!({"mediaMaxMb": 0}), "channels.imessage.mediaMaxMb: must be an integer from 1 to 100"),
        (json!({"textChunkLimit": 10}), "channels.imessage.textChunkLimit: must be an integer from 50 to 20000"),
        (json!({"chunkMode": "paragraph"}), "channels.imessage.chunkMode: must be \"length\" or \"newline\""),
        (json!({"sendReadReceipts": "yes"}), "channels.imessage.sendReadReceipts: expected true or false"),
        (json!({"reactionNotifications": "some"}), "channels.imessage.reactionNotifications: must be one of \"off\", \"own\", \"all\""),
        (json!({"streaming": {"chunkMode": "paragraph"}}), "channels.imessage.streaming.chunkMode: must be \"length\" or \"newline\""),
        (json!({"chunkMode": "length", "streaming": {"chunkMode": "newline"}}), "channels.imessage.streaming.chunkMode: conflicts with channels.imessage.chunkMode"),
        (json!({"service": "iMessage"}), "channels.imessage.service: must be one of \"imessage\", \"sms\", \"auto\""),
        (json!({"dmPolicy": "sometimes"}), "channels.imessage.dmPolicy: must be one of \"pairing\", \"allowlist\", \"open\", \"disabled\""),
        (json!({"region": "USA"}), "channels.imessage.region: must be a two-letter country code such as \"US\""),
        (json!({"enabled": "yes"}), "channels.imessage.enabled: expected true or false"),
        (json!({"allowFrom": "x"}), "channels.imessage.allowFrom: expected an array"),
        (json!({"dbPath": ""}), "channels.imessage.dbPath: must be a non-empty path without line breaks"),
        (json!({"name": "a\nb"}), "channels.imessage.name: must be 1 to 64 characters without line breaks"),
        (json!({"catchup": {"maxAgeMinutes": 0}}), "channels.imessage.catchup.maxAgeMinutes: must be an integer from 1 to 1440"),
    ];
    for (channel, want) in cases {
        assert_error(section(channel), want);
    }
}

#[test]
fn case_13_unknown_and_compat_keys() {
    assert_error(
        section(json!({"foo": 1})),
        "channels.imessage.foo: unknown field",
    );
    let cfg = load(section(json!({"historyLimit": 20}))).unwrap();
    let n = cfg
        .warnings
        .iter()
        .filter(|w| {
            *w == "channels.imessage.historyLimit is accepted for compatibility but has no effect in this plugin"
        })
        .count();
    assert_eq!(n, 1);
}

#[test]
fn case_212_formatting_and_action_gates() {
    assert_error(
        section(json!({"textFormatting": "html"})),
        "channels.imessage.textFormatting: must be one of \"native\", \"plain\", \"off\"",
    );
    assert_error(
        section(json!({"actions": {"fly": true}})),
        "channels.imessage.actions.fly: unknown field",
    );
    assert_error(
        section(json!({"actions": {"edit": "yes"}})),
        "channels.imessage.actions.edit: expected true or false",
    );
    assert_error(
        section(json!({"actions": []})),
        "channels.imessage.actions: expected an object",
    );
    let cfg = load(section(
        json!({"actions": {"sendWithEffect": true, "unsend": false}}),
    ))
    .unwrap();
    let warned = cfg
        .warnings
        .iter()
        .filter(|w| {
            *w == "channels.imessage.actions.sendWithEffect is accepted for compatibility but has no effect in this plugin"
        })
        .count();
    assert_eq!(warned, 1);
    let a = &cfg.accounts[0];
    assert_eq!(
        a.actions,
        crate::config::ActionGates {
            reactions: true,
            edit: true,
            unsend: false
        }
    );
    assert_eq!(a.text_formatting, crate::config::TextFormatting::Native);
}

#[test]
fn case_212_rate_limit() {
    assert_error(
        section(json!({"rateLimit": {"chatBurst": 0}})),
        "channels.imessage.rateLimit.chatBurst: must be an integer from 1 to 100",
    );
    assert_error(
        section(json!({"rateLimit": {"foo": 1}})),
        "channels.imessage.rateLimit.foo: unknown field",
    );
    assert_error(
        section(json!({"rateLimit": {"maxWaitMs": 600001}})),
        "channels.imessage.rateLimit.maxWaitMs: must be an integer from 0 to 600000",
    );
    let cfg = load(section(
        json!({"rateLimit": {"maxUnanswered": 0, "exemptAllowFrom": false}}),
    ))
    .unwrap();
    let l = cfg.accounts[0].rate_limit;
    assert_eq!(l.max_unanswered, 0);
    assert!(!l.exempt_allow_from);
    assert_eq!(l.chat_burst, 5, "unset keys keep their defaults");
    assert_error(
        section(json!({"trackedSends": "on"})),
        "channels.imessage.trackedSends: must be \"auto\" or \"off\"",
    );
}

#[test]
fn case_14_default_account_must_exist() {
    assert_error(
        section(json!({"defaultAccount": "home", "accounts": {"work": {}}})),
        "channels.imessage.defaultAccount: no account named \"home\"",
    );
}

#[test]
fn case_15_duplicate_account_ids() {
    assert_error_at(
        section(json!({"accounts": {"Work": {}, "work": {}}})),
        "channels.imessage.accounts",
    );
}

#[test]
fn case_16_bad_mention_regex() {
    let errs = errors(json!({"messages": {"groupChat": {"mentionPatterns": ["(unclosed"]}}}));
    assert!(
        errs.iter().any(|e| e
            .starts_with("messages.groupChat.mentionPatterns[0]: invalid regular expression: ")
            && !e.contains('\n')),
        "{errs:?}"
    );
    // Look-around is not supported by the regex syntax, so it is a config error too.
    assert!(load(json!({"messages": {"groupChat": {"mentionPatterns": ["(?=x)"]}}})).is_err());
}

#[test]
fn case_17_dm_scope() {
    assert_error_at(
        json!({"session": {"dmScope": "per-user"}}),
        "session.dmScope",
    );
}

#[test]
fn case_18_disabled_channel_disables_accounts() {
    let cfg = load(section(
        json!({"enabled": false, "accounts": {"work": {"enabled": true}}}),
    ))
    .unwrap();
    assert!(cfg.accounts.iter().all(|a| !a.enabled));
}

#[test]
fn case_19_binding_to_unknown_agent() {
    assert_error(
        json!({"agents": {"list": [{"id": "main"}]},
            "bindings": [{"agentId": "ghost", "match": {"channel": "imessage"}}]}),
        "bindings[0].agentId: no agent \"ghost\" in agents.list",
    );
}

#[test]
fn account_fields_not_allowed_inside_accounts() {
    assert_error(
        section(json!({"accounts": {"work": {"accounts": {}}}})),
        "channels.imessage.accounts.work.accounts: only allowed in channels.imessage",
    );
}

#[test]
fn errors_are_collected_not_first_only() {
    let errs = errors(section(
        json!({"mediaMaxMb": 0, "chunkMode": "x", "foo": 1}),
    ));
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn accounts_replace_lists_and_maps_wholesale() {
    let cfg = load(section(
        json!({"allowFrom": ["+15550001111"], "groups": {"*": {"requireMention": false}},
        "accounts": {"work": {"allowFrom": ["+15550003333"], "groups": {"42": {}}}, "home": {}}}),
    ))
    .unwrap();
    let work = cfg.account("work").unwrap();
    assert_eq!(
        work.allow_from,
        vec![AllowEntry::Handle("+15550003333".into())]
    );
    assert_eq!(work.groups.as_ref().unwrap().len(), 1);
    let home = cfg.account("home").unwrap();
    assert_eq!(
        home.allow_from,
        vec![AllowEntry::Handle("+15550001111".into())]
    );
    assert_eq!(cfg.default_account, "home", "first in sorted order");
}

#[test]
fn open_dms_without_group_allow_from_warn_about_groups_issue_21() {
    let warning = "account default: allowFrom holds \"*\" and groupAllowFrom is not set: any member of any group chat can trigger the agent; set groupAllowFrom to choose group senders";
    let warned = |channel: Value| {
        load(section(channel))
            .unwrap()
            .warnings
            .iter()
            .any(|w| w == warning)
    };
    assert!(warned(json!({"dmPolicy": "open", "allowFrom": ["*"]})));
    // An explicit group sender list, or no groups at all, is a choice: no warning.
    assert!(!warned(
        json!({"dmPolicy": "open", "allowFrom": ["*"], "groupAllowFrom": ["+15550001111"]})
    ));
    assert!(!warned(
        json!({"dmPolicy": "open", "allowFrom": ["*"], "groupPolicy": "disabled"})
    ));
    assert!(!warned(json!({"allowFrom": ["+15550001111"]})));
}

#[test]
fn globals_are_read() {
    let cfg = load(json!({
        "session": {"dmScope": "per-peer"},
        "messages": {"groupChat": {"mentionPatterns": ["@bot\\b"]}, "responsePrefix": "PFX"},
        "commands": {"config": true},
        "agents": {"list": [{"id": "Main"}, {"id": "Ops", "default": true, "groupChat": {"mentionPatterns": []}}]},
        "bindings": [{"agentId": "ops", "match": {"channel": "iMessage", "peer": {"kind": "group", "id": "chat_id:42"}}},
                     {"agentId": "nobody", "match": {"channel": "telegram"}}],
    }))
    .unwrap();
    let g = &cfg.globals;
    assert_eq!(g.dm_scope, "per-peer");
    assert_eq!(g.default_agent, "ops");
    assert!(g.commands_config);
    assert_eq!(g.response_prefix.as_deref(), Some("PFX"));
    assert_eq!(g.mention_patterns.as_ref().unwrap().len(), 1);
    assert!(g.mention_patterns.as_ref().unwrap()[0].is_match("hi @BOT"));
    assert_eq!(g.agents[1].mention_patterns.as_ref().unwrap().len(), 0);
    assert_eq!(g.bindings.len(), 1, "non-imessage bindings are not read");
    assert_eq!(g.bindings[0].peer, Some(Peer::Group(42)));
}

#[test]
fn streaming_chunk_mode_is_an_alias_of_chunk_mode() {
    let parse =
        |channel: Value| crate::config::parse(&json!({"channels": {"imessage": channel}})).unwrap();
    let cfg = parse(json!({"streaming": {"chunkMode": "newline", "mode": "partial"}}));
    assert_eq!(cfg.accounts[0].chunk_mode, ChunkMode::Newline);
    assert!(cfg
        .warnings
        .iter()
        .any(|w| w.contains("channels.imessage.streaming.mode is accepted for compatibility")));
    // Both set to the same value is no conflict; an account's alias overrides the channel.
    let cfg = parse(
        json!({"chunkMode": "newline", "streaming": {"chunkMode": "newline"},
        "accounts": {"a": {"streaming": {"chunkMode": "length"}}}}),
    );
    assert_eq!(cfg.accounts[0].chunk_mode, ChunkMode::Length);
}

#[test]
fn typing_modes_follow_agent_then_defaults_then_session() {
    let parse = |v: Value| crate::config::parse(&v);
    let cfg = parse(json!({"channels": {"imessage": {}},
        "session": {"typingMode": "message"},
        "agents": {"defaults": {"typingMode": "thinking"},
            "list": [{"id": "main"}, {"id": "quiet", "typingMode": "never"}]}}))
    .unwrap();
    assert_eq!(
        cfg.globals.typing_mode("main"),
        crate::config::TypingMode::Thinking
    );
    assert_eq!(
        cfg.globals.typing_mode("quiet"),
        crate::config::TypingMode::Never
    );
    let cfg =
        parse(json!({"channels": {"imessage": {}}, "session": {"typingMode": "message"}})).unwrap();
    assert_eq!(
        cfg.globals.typing_mode("main"),
        crate::config::TypingMode::Message
    );
    let cfg = parse(json!({"channels": {"imessage": {}}})).unwrap();
    assert_eq!(
        cfg.globals.typing_mode("main"),
        crate::config::TypingMode::Instant
    );
    let errors = parse(json!({"channels": {"imessage": {}},
        "agents": {"defaults": {"typingMode": "sometimes"}}}))
    .unwrap_err();
    assert_eq!(
        errors,
        vec!["agents.defaults.typingMode: must be one of \"never\", \"instant\", \"thinking\", \"message\""]
    );
}
