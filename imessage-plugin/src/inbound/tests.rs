//! The inbound acceptance behaviours of channel-behaviour.md §12 (cases 20–104, 143–148),
//! table-driven over the pure pipeline. The test clock is `NOW`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::config;
use crate::imsg::message::ImsgMessage;

const NOW: i64 = 1_800_000_000_000;

fn iso(ms: i64) -> String {
    timeutil::format_ms(ms)
}

fn c0() -> Value {
    json!({
        "channels": {"imessage": {"allowFrom": ["+15550001111"]}},
        "messages": {"groupChat": {"mentionPatterns": ["@bot\\b"]}},
    })
}

/// `base` with `channels.imessage` fields merged in.
fn with_channel(mut base: Value, fields: Value) -> Value {
    for (k, v) in fields.as_object().unwrap() {
        base["channels"]["imessage"][k] = v.clone();
    }
    base
}

fn d0() -> Value {
    json!({"id":500,"guid":"D0","chat_id":7,"chat_guid":"iMessage;-;+15550001111","chat_identifier":"+15550001111","chat_name":"","sender":"+15550001111","is_from_me":false,"is_group":false,"text":"hello","created_at":iso(NOW),"attachments":[],"destination_caller_id":"+15559990000"})
}

fn g0() -> Value {
    json!({"id":600,"guid":"G0","chat_id":42,"chat_guid":"iMessage;+;chat4242","chat_identifier":"chat4242","chat_name":"Team","sender":"+15550001111","is_from_me":false,"is_group":true,"text":"@bot status?","created_at":iso(NOW),"attachments":[],"destination_caller_id":"+15559990000"})
}

fn stranger() -> Value {
    merge(
        d0(),
        json!({"guid":"S1","chat_id":8,"chat_guid":"iMessage;-;+15550002222","chat_identifier":"+15550002222","sender":"+15550002222","text":"hi"}),
    )
}

fn merge(mut base: Value, over: Value) -> Value {
    for (k, v) in over.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

struct Harness {
    inbound: Inbound,
    allow_store: Vec<String>,
    newest: Option<i64>,
    seen: std::collections::HashSet<String>,
}

fn harness_for(config: Value, account: &str) -> Harness {
    let cfg = Arc::new(config::parse(&config).unwrap_or_else(|e| panic!("{e:?}")));
    let acct = cfg.account(account).unwrap().clone();
    Harness {
        inbound: Inbound::new(
            cfg,
            acct,
            Arc::new(std::sync::Mutex::new(EchoRegistry::in_memory())),
            false,
            NOW - 60_000,
            Default::default(),
        ),
        allow_store: Vec::new(),
        newest: None,
        seen: Default::default(),
    }
}

fn harness(config: Value) -> Harness {
    harness_for(config, "default")
}

impl Harness {
    fn run_at(&mut self, message: Value, now: i64) -> Verdict {
        let m: ImsgMessage = serde_json::from_value(message).expect("test message parses");
        let key = m.dedupe_key();
        let seen = self.seen.contains(&key);
        let v = self.inbound.evaluate(&Input {
            message: &m,
            key: &key,
            seen,
            created_ms: m.created_ms(),
            newest_ms: self.newest,
            allow_store: &self.allow_store,
            now_ms: now,
        });
        self.seen.insert(key);
        v
    }

    fn run(&mut self, message: Value) -> Verdict {
        self.run_at(message, NOW)
    }

    fn routed(&mut self, message: Value) -> RoutedMessage {
        match self.run(message) {
            Verdict::Route(a) => a.message,
            other => panic!("expected routed, got {other:?}"),
        }
    }

    fn dropped(&mut self, message: Value) -> &'static str {
        match self.run(message) {
            Verdict::Drop(code) => code,
            Verdict::Pairing { .. } => "pairing_pending",
            Verdict::Refuse { code, .. } => code,
            Verdict::Route(a) => panic!("expected a drop, got routed {:?}", a.message),
            Verdict::React(r) => panic!("expected a drop, got a reaction {r:?}"),
        }
    }

    fn sent(&mut self, scope: &str, text: &str, guid: Option<&str>, rowid: Option<i64>, at: i64) {
        let mut echo = self.inbound.echo.lock().unwrap();
        let t = echo.begin(&echo::Scope::parse(scope).expect("a scope"), text);
        echo.finish(t, guid, rowid, at);
    }
}

fn r_d0() -> Value {
    json!({"sessionKey":"agent:main:main","agentId":"main","accountId":"default","chatType":"direct","to":"chat_id:7","senderId":"+15550001111","text":"hello","messageId":"D0","wasMentioned":true,"commandAuthorized":true,"replyTo":null,"media":[]})
}

fn r_g0() -> Value {
    json!({"sessionKey":"agent:main:imessage:group:42","agentId":"main","accountId":"default","chatType":"group","to":"chat_id:42","senderId":"+15550001111","text":"@bot status?","messageId":"G0","wasMentioned":true,"commandAuthorized":true,"replyTo":null,"media":[]})
}

/// The always-present fields of a routed message equal `want`.
fn assert_routed(got: &RoutedMessage, want: Value) {
    let got = serde_json::to_value(got).unwrap();
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&got[k], v, "field {k}: got {got}");
    }
}

// Parsing, dedupe, stale.

#[test]
fn case_22_duplicate() {
    let mut h = harness(c0());
    assert_routed(&h.routed(d0()), r_d0());
    assert_eq!(h.dropped(d0()), "duplicate");
}

#[test]
fn cases_26_27_29_stale() {
    let mut h = harness(c0());
    assert_eq!(
        h.dropped(merge(d0(), json!({"created_at": iso(NOW - 3 * 3_600_000)}))),
        "stale"
    );
    h.newest = Some(NOW - 60_000);
    assert_eq!(
        h.dropped(merge(
            d0(),
            json!({"guid":"a","created_at": iso(NOW - 40 * 60_000)})
        )),
        "stale"
    );
    h.routed(merge(
        d0(),
        json!({"guid":"b","created_at": iso(NOW - 10 * 60_000)}),
    ));
    h.routed(merge(
        d0(),
        json!({"guid":"c","created_at": "yesterday-ish"}),
    ));
}

#[test]
fn case_31_reaction() {
    assert_eq!(
        harness(c0()).dropped(merge(d0(), json!({"is_reaction": true}))),
        "reaction"
    );
}

// Own messages, echo, self-chat, reflection, loops.

#[test]
fn cases_34_35_36_from_me() {
    let mut h = harness(c0());
    assert_eq!(
        h.dropped(merge(d0(), json!({"is_from_me": true}))),
        "from_me"
    );
    assert_eq!(
        h.dropped(merge(g0(), json!({"is_from_me": true}))),
        "from_me"
    );
    let no_dest = merge(
        d0(),
        json!({"guid":"x","is_from_me": true, "destination_caller_id": null}),
    );
    assert_eq!(h.dropped(no_dest), "from_me");
}

fn self_note() -> Value {
    merge(
        d0(),
        json!({"guid":"N1","sender":"+15559990000","chat_identifier":"+15559990000","chat_guid":"iMessage;-;+15559990000","destination_caller_id":"+15559990000","is_from_me":true,"text":"note to self"}),
    )
}

#[test]
fn cases_37_38_self_chat() {
    let mut h = harness(with_channel(c0(), json!({"allowFrom": ["+15559990000"]})));
    let r = h.routed(self_note());
    assert_eq!(r.to, "chat_id:7");
    assert_eq!(r.text, "note to self");
    // Its mirror: not from me, another guid, same text and created_at.
    assert_eq!(
        h.dropped(merge(self_note(), json!({"guid":"N1M","is_from_me":false}))),
        "self_chat_mirror"
    );
    let later = merge(
        self_note(),
        json!({"guid":"N1L","is_from_me":false,"created_at": iso(NOW + 1000)}),
    );
    h.routed(later);
}

#[test]
fn cases_39_40_self_chat_echoes() {
    let mut h = harness(with_channel(c0(), json!({"allowFrom": ["+15559990000"]})));
    h.sent("handle:+15559990000", "Done.", Some("S1"), None, NOW);
    assert_eq!(
        h.dropped(merge(self_note(), json!({"guid":"S1","text":"Done."}))),
        "echo"
    );
    // A send still in flight: pending text matches in a self-chat.
    let _pending = h
        .inbound
        .echo
        .lock()
        .unwrap()
        .begin(&echo::Scope::Handle("+15559990000".into()), "Done again.");
    let mirror = merge(
        self_note(),
        json!({"guid":"S1M","is_from_me":false,"text":"Done again."}),
    );
    assert_eq!(h.dropped(mirror), "echo");
}

#[test]
fn cases_41_to_48_echoes() {
    let mut h = harness(c0());
    h.sent("chat:42", "x", Some("OUT1"), None, NOW);
    assert_eq!(h.dropped(merge(g0(), json!({"guid":"OUT1"}))), "echo");
    h.sent("chat:42", "y", None, Some(901), NOW);
    assert_eq!(
        h.dropped(merge(g0(), json!({"guid":"R901","id":901}))),
        "echo"
    );
    h.sent("handle:+15550001111", "Hello", Some("OUT2"), None, NOW);
    h.routed(merge(d0(), json!({"guid":"U9","text":"Hello"})));
    assert_eq!(
        h.dropped(merge(
            d0(),
            json!({"guid":"U10","reply_to_guid":"OUT2","text":"Hello"})
        )),
        "echo"
    );
    let r = h.routed(merge(
        d0(),
        json!({"guid":"U11","reply_to_guid":"OUT2","text":"Hello to you"}),
    ));
    assert_eq!(r.reply_to.unwrap().id.as_deref(), Some("OUT2"));
    // No-id sends: text fallback for 4 s, only in the same conversation.
    h.sent("handle:+15550001111", "On it", None, None, NOW);
    assert_eq!(
        h.dropped_at(
            merge(d0(), json!({"guid":"U12","text":"On it"})),
            NOW + 3000
        ),
        "echo"
    );
    h.routed_at(
        merge(d0(), json!({"guid":"U13","text":"On it"})),
        NOW + 5000,
    );
    h.sent("handle:+15550001111", "hello world", None, None, NOW);
    assert_eq!(
        h.dropped(merge(
            d0(),
            json!({"guid":"U14","text":"\u{0}hello  world\r\n"})
        )),
        "echo"
    );
    h.sent("chat:42", "ok", None, None, NOW);
    h.routed(merge(g0(), json!({"guid":"U15","chat_id":43,"chat_guid":"iMessage;+;chat43","chat_identifier":"chat43","text":"@bot ok"})));
}

impl Harness {
    fn dropped_at(&mut self, m: Value, now: i64) -> &'static str {
        match self.run_at(m, now) {
            Verdict::Drop(c) => c,
            other => panic!("expected drop, got {other:?}"),
        }
    }
    fn routed_at(&mut self, m: Value, now: i64) -> RoutedMessage {
        match self.run_at(m, now) {
            Verdict::Route(a) => a.message,
            other => panic!("expected routed, got {other:?}"),
        }
    }
}

#[test]
fn case_48_chunk_text_from_the_user_is_routed() {
    let mut h = harness(c0());
    for (i, chunk) in ["part one", "part two", "part three"].iter().enumerate() {
        h.sent(
            "handle:+15550001111",
            chunk,
            Some(&format!("C{i}")),
            None,
            NOW,
        );
    }
    h.routed(merge(d0(), json!({"guid":"USER","text":"part two"})));
}

#[test]
fn cases_49_50_reflection() {
    let mut h = harness(c0());
    assert_eq!(
        h.dropped(merge(d0(), json!({"text":"<thinking>plan</thinking> ok"}))),
        "reflection"
    );
    for (i, t) in [
        "`<thinking>` is a tag",
        "I was thinking",
        "<final draft, see below",
    ]
    .iter()
    .enumerate()
    {
        h.routed(merge(d0(), json!({"guid": format!("ok{i}"), "text": t})));
    }
    for (i, t) in [
        "Here is my <final answer>",
        "x +#+#+# y",
        "assistant to=functions.run",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            h.dropped(merge(d0(), json!({"guid": format!("r{i}"), "text": t}))),
            "reflection"
        );
    }
}

#[test]
fn cases_51_52_loop_limiter() {
    let mut h = harness(c0());
    for i in 0..5 {
        let g = format!("E{i}");
        h.sent("chat:42", "x", Some(&g), None, NOW);
        assert_eq!(
            h.dropped_at(merge(g0(), json!({"guid": g})), NOW + i * 1000),
            "echo"
        );
    }
    assert_eq!(
        h.dropped_at(merge(g0(), json!({"guid":"G1"})), NOW + 5000),
        "loop_limited"
    );
    h.routed_at(d0(), NOW + 5000);
    h.routed_at(merge(g0(), json!({"guid":"G2"})), NOW + 4000 + 60_001);

    let mut h = harness(c0());
    for i in 0..10 {
        assert_eq!(
            h.dropped(merge(
                d0(),
                json!({"guid": format!("F{i}"), "is_from_me": true})
            )),
            "from_me"
        );
    }
    h.routed(d0());
}

// DM access and pairing.

#[test]
fn cases_53_54_63_to_69_dm_access() {
    assert_routed(&harness(c0()).routed(d0()), r_d0());
    match harness(c0()).run(stranger()) {
        Verdict::Pairing { sender_id, chat_id } => {
            assert_eq!(sender_id, "+15550002222");
            assert_eq!(chat_id, Some(8));
        }
        other => panic!("{other:?}"),
    }
    let allowlist = with_channel(c0(), json!({"dmPolicy": "allowlist"}));
    assert_eq!(
        harness(allowlist.clone()).dropped(stranger()),
        "dm_not_allowed"
    );
    let mut h = harness(allowlist);
    h.allow_store = vec!["+15550002222".into()];
    assert_eq!(
        h.dropped(stranger()),
        "dm_not_allowed",
        "case 64: the store only counts under pairing"
    );
    assert_eq!(
        harness(with_channel(c0(), json!({"dmPolicy": "disabled"}))).dropped(d0()),
        "dm_disabled"
    );
    let r = harness(with_channel(
        c0(),
        json!({"dmPolicy": "open", "allowFrom": ["*"]}),
    ))
    .routed(stranger());
    assert_eq!(r.sender_id, "+15550002222");
    assert!(!r.command_authorized);
    let r = harness(with_channel(
        c0(),
        json!({"allowFrom": ["Bob@Example.com"]}),
    ))
    .routed(merge(
        d0(),
        json!({"sender":"bob@example.COM","chat_identifier":"bob@example.com"}),
    ));
    assert_eq!(r.sender_id, "bob@example.com");
    assert_eq!(r.to, "chat_id:7");
    harness(with_channel(
        c0(),
        json!({"allowFrom": ["+1 (555) 000-1111"]}),
    ))
    .routed(d0());
    let mut h = harness(with_channel(c0(), json!({"allowFrom": ["chat_id:8"]})));
    assert!(!h.routed(stranger()).command_authorized);
    assert!(matches!(
        h.run(merge(stranger(), json!({"guid":"S2","chat_id":9}))),
        Verdict::Pairing { .. }
    ));
}

#[test]
fn case_58_paired_sender_is_routed_and_authorized() {
    let mut h = harness(c0());
    h.allow_store = vec!["+15550002222".into()];
    assert!(h.routed(stranger()).command_authorized);
}

#[test]
fn case_70_group_strangers_never_pair() {
    let v = harness(c0()).run(merge(g0(), json!({"sender":"+15550002222"})));
    assert!(matches!(v, Verdict::Drop("group_not_allowed")), "{v:?}");
}

// Groups, mentions, commands.

#[test]
fn cases_71_to_80_groups() {
    assert_routed(&harness(c0()).routed(g0()), r_g0());
    assert_eq!(
        harness(c0()).dropped(merge(g0(), json!({"text":"hello team"}))),
        "no_mention"
    );
    assert!(
        harness(c0())
            .routed(merge(g0(), json!({"text":"@BOT hi"})))
            .was_mentioned
    );
    assert!(
        harness(c0())
            .routed(merge(g0(), json!({"text":"@\u{200b}bot hi"})))
            .was_mentioned
    );
    let r = harness(with_channel(
        c0(),
        json!({"groups": {"*": {"requireMention": false}}}),
    ))
    .routed(merge(g0(), json!({"text":"hello"})));
    assert!(!r.was_mentioned);
    let mut h = harness(with_channel(
        c0(),
        json!({"groups": {"42": {"requireMention": false}, "*": {}}}),
    ));
    h.routed(merge(g0(), json!({"text":"hello"})));
    assert_eq!(
        h.dropped(merge(g0(), json!({"guid":"x","chat_id":43,"text":"hello"}))),
        "no_mention"
    );
    let mut h = harness(with_channel(c0(), json!({"groups": {"99": {}}})));
    for i in 0..3 {
        assert_eq!(
            h.dropped(merge(g0(), json!({"guid": format!("g{i}")}))),
            "group_not_configured"
        );
    }
    assert_eq!(h.inbound.warned_groups.len(), 1, "one warning per chat");
    harness(with_channel(
        c0(),
        json!({"groups": {"chat_guid:iMessage;+;chat4242": {"requireMention": false}}}),
    ))
    .routed(merge(g0(), json!({"text":"hello"})));
    assert_eq!(
        harness(with_channel(c0(), json!({"groupPolicy": "disabled"}))).dropped(g0()),
        "group_disabled"
    );
    assert_eq!(
        harness(with_channel(c0(), json!({"groupAllowFrom": []}))).dropped(g0()),
        "group_not_allowed"
    );
    assert_eq!(
        harness(c0()).dropped(merge(g0(), json!({"sender":"+15550003333"}))),
        "group_not_allowed"
    );
}

#[test]
fn cases_81_to_86_group_commands() {
    let conv = with_channel(c0(), json!({"groupAllowFrom": ["chat_id:42"]}));
    let r = harness(conv.clone()).routed(merge(g0(), json!({"sender":"+15550003333"})));
    assert_eq!(r.sender_id, "+15550003333");
    assert!(!r.command_authorized);
    assert_eq!(
        harness(conv.clone()).dropped(merge(
            g0(),
            json!({"sender":"+15550003333","text":"/status"})
        )),
        "unauthorized_command"
    );
    let r = harness(c0()).routed(merge(g0(), json!({"text":"/status"})));
    assert!(r.was_mentioned && r.command_authorized);
    assert_eq!(
        harness(c0())
            .routed(merge(g0(), json!({"text":"@bot /reset"})))
            .text,
        "@bot /reset"
    );
    // §9.1 (revised by issue 11; case 85's "STOP" predates it): a bare stop word in a group
    // is a command only when it was addressed.
    assert_eq!(
        harness(c0()).dropped(merge(g0(), json!({"text":"STOP"}))),
        "no_mention"
    );
    assert!(
        harness(c0())
            .routed(merge(g0(), json!({"text":"@bot STOP"})))
            .was_mentioned
    );
    // OpenClaw's built-in names are commands: the owner's /whoami needs no mention.
    let r = harness(c0()).routed(merge(g0(), json!({"text":"/whoami"})));
    assert!(r.was_mentioned && r.command_authorized);
    assert_eq!(
        harness(c0()).dropped(merge(g0(), json!({"text":"stop it now"}))),
        "no_mention"
    );
    assert_eq!(
        harness(c0()).dropped(merge(g0(), json!({"text":"/statusx"}))),
        "no_mention"
    );
    let mut h = harness(conv);
    h.allow_store = vec!["+15550003333".into()];
    assert!(
        h.routed(merge(
            g0(),
            json!({"sender":"+15550003333","text":"/status"})
        ))
        .command_authorized
    );
}

#[test]
fn cases_87_88_89_mention_patterns() {
    let none = json!({"channels": {"imessage": {"allowFrom": ["+15550001111"]}}});
    let mut h = harness(none);
    for i in 0..3 {
        assert!(
            !h.routed(merge(
                g0(),
                json!({"guid": format!("n{i}"), "text":"hello"})
            ))
            .was_mentioned
        );
    }
    assert!(h.inbound.warned_no_patterns);
    let agent_empty = merge(
        c0(),
        json!({"agents": {"list": [{"id":"main","groupChat":{"mentionPatterns":[]}}]}}),
    );
    harness(agent_empty).routed(merge(g0(), json!({"text":"hello"})));
    let agent_own = merge(
        c0(),
        json!({"agents": {"list": [{"id":"main","groupChat":{"mentionPatterns":["^hey clawd"]}}]}}),
    );
    let mut h = harness(agent_own);
    assert_eq!(
        h.dropped(merge(g0(), json!({"text":"@bot hi"}))),
        "no_mention"
    );
    h.routed(merge(g0(), json!({"guid":"x","text":"Hey Clawd, hi"})));
}

#[test]
fn cases_90_to_95_classification() {
    let r = harness(with_channel(
        c0(),
        json!({"groups": {"2": {"requireMention": false}}}),
    ))
    .routed(merge(
        g0(),
        json!({"chat_id":2,"is_group":false,"chat_guid":"iMessage;-;+15550001111","text":"hi"}),
    ));
    assert_eq!(r.chat_type, "group");
    assert_eq!(r.session_key, "agent:main:imessage:group:2");
    assert_eq!(r.to, "chat_id:2");
    assert_routed(
        &harness(c0()).routed(merge(g0(), json!({"is_group": false}))),
        r_g0(),
    );
    assert_eq!(
        harness(c0()).dropped(merge(g0(), json!({"chat_id": null}))),
        "missing_chat_id"
    );
    assert!(
        !harness(with_channel(c0(), json!({"groupPolicy":"open"})))
            .routed(merge(g0(), json!({"sender":"+15550003333"})))
            .command_authorized
    );
    assert_eq!(
        harness(c0()).dropped(merge(d0(), json!({"sender":"  "}))),
        "missing_sender"
    );
    assert_eq!(
        harness(c0()).dropped(merge(d0(), json!({"text":"  \u{fffc} "}))),
        "empty"
    );
}

// Routing.

#[test]
fn cases_96_to_104_routing() {
    let scope = |s: &str| merge(c0(), json!({"session": {"dmScope": s}}));
    assert_eq!(
        harness(scope("per-peer")).routed(d0()).session_key,
        "agent:main:direct:+15550001111"
    );
    assert_eq!(
        harness(scope("per-channel-peer")).routed(d0()).session_key,
        "agent:main:imessage:direct:+15550001111"
    );
    let work = with_channel(
        scope("per-account-channel-peer"),
        json!({"accounts": {"work": {}}}),
    );
    let r = harness_for(work, "work").routed(d0());
    assert_eq!(
        r.session_key,
        "agent:main:imessage:work:direct:+15550001111"
    );
    assert_eq!(r.account_id, "work");
    let email = with_channel(scope("per-peer"), json!({"allowFrom": ["Bob@Example.com"]}));
    assert_eq!(
        harness(email)
            .routed(merge(d0(), json!({"sender":"Bob@Example.com"})))
            .session_key,
        "agent:main:direct:bob@example.com"
    );
    let agents = merge(
        c0(),
        json!({"agents": {"list": [{"id":"Main"},{"id":"Ops","default":true}]}}),
    );
    let r = harness(agents).routed(d0());
    assert_eq!(
        (r.agent_id.as_str(), r.session_key.as_str()),
        ("ops", "agent:ops:main")
    );
    let family = merge(
        c0(),
        json!({"agents": {"list": [{"id":"main"},{"id":"family"}]},
        "bindings": [{"agentId":"family","match":{"channel":"imessage","peer":{"kind":"group","id":"42"}}}]}),
    );
    assert_eq!(
        harness(family.clone()).routed(g0()).session_key,
        "agent:family:imessage:group:42"
    );
    let r = harness(family).routed(merge(
        g0(),
        json!({"chat_id":43,"chat_guid":"iMessage;+;chat43"}),
    ));
    assert_eq!(r.agent_id, "main");
    // §4.3 (revised): a DM with a chat id is answered in that chat, whatever its service;
    // without one, an SMS chat GUID still picks `sms:` (case 103).
    assert_eq!(
        harness(c0())
            .routed(merge(d0(), json!({"chat_guid":"SMS;-;+15550001111"})))
            .to,
        "chat_id:7"
    );
    assert_eq!(
        harness(c0())
            .routed(merge(
                d0(),
                json!({"chat_guid":"SMS;-;+15550001111","chat_id":null})
            ))
            .to,
        "sms:+15550001111"
    );
    assert_eq!(
        harness(c0())
            .routed(merge(d0(), json!({"chat_id":null})))
            .to,
        "imessage:+15550001111"
    );
    let r = harness(c0()).routed(merge(d0(), json!({"reply_to_guid":"P1","reply_to_text":" lunch? ","reply_to_sender":"+1 555 000 4444"})));
    let reply = r.reply_to.unwrap();
    assert_eq!(
        (
            reply.id.as_deref(),
            reply.text.as_deref(),
            reply.sender.as_deref()
        ),
        (Some("P1"), Some("lunch?"), Some("+15550004444"))
    );
}

#[test]
fn case_102_multi_account_bindings() {
    let cfg = json!({
        "channels": {"imessage": {"allowFrom": ["+15550001111","+15550003333"], "accounts": {"default": {}, "work": {}}}},
        "agents": {"list": [{"id":"main"},{"id":"ops"},{"id":"family"}]},
        "bindings": [{"agentId":"ops","match":{"channel":"imessage","accountId":"work"}},
                     {"agentId":"family","match":{"channel":"imessage","peer":{"kind":"direct","id":"+1 555 000 1111"}}}],
    });
    assert_eq!(
        harness_for(cfg.clone(), "work").routed(d0()).agent_id,
        "family"
    );
    let other = merge(d0(), json!({"sender":"+15550003333"}));
    assert_eq!(
        harness_for(cfg.clone(), "work")
            .routed(other.clone())
            .agent_id,
        "ops"
    );
    assert_eq!(harness_for(cfg, "default").routed(other).agent_id, "main");
}

// Control commands and configWrites.

#[test]
fn cases_143_to_148_config_writes() {
    let set = |t: &str| merge(d0(), json!({"text": t}));
    let on = merge(c0(), json!({"commands": {"config": true}}));
    assert!(
        harness(on.clone())
            .routed(set("/config set channels.imessage.textChunkLimit 2000"))
            .command_authorized
    );
    match harness(with_channel(on.clone(), json!({"configWrites": false})))
        .run(set("/config set x 1"))
    {
        Verdict::Refuse { code, to, text } => {
            assert_eq!(code, "config_writes_disabled");
            assert_eq!(to, "chat_id:7");
            assert_eq!(text, policy::CONFIG_WRITES_DISABLED_REPLY);
        }
        other => panic!("{other:?}"),
    }
    let accounts = with_channel(
        on.clone(),
        json!({"accounts": {"default": {}, "work": {"configWrites": false}}}),
    );
    assert_eq!(
        harness_for(accounts.clone(), "work").dropped(set("/config set x 1")),
        "config_writes_disabled"
    );
    harness_for(accounts.clone(), "default").routed(set("/config set x 1"));
    assert_eq!(
        harness_for(accounts, "default").dropped(set(
            "/config set channels.imessage.accounts.work.mediaMaxMb 4"
        )),
        "config_writes_disabled"
    );
    let open = with_channel(on, json!({"dmPolicy": "open", "allowFrom": ["*"]}));
    assert!(matches!(
        harness(open).run(merge(stranger(), json!({"text":"/config set x 1"}))),
        Verdict::Drop("unauthorized_command")
    ));
    match harness(c0()).run(set("/config unset x")) {
        Verdict::Refuse { code, text, .. } => {
            assert_eq!(code, "config_disabled");
            assert_eq!(text, policy::CONFIG_DISABLED_REPLY);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_write_forms_and_usage_section_9_2() {
    let set = |t: &str| merge(d0(), json!({"text": t}));
    let on = merge(c0(), json!({"commands": {"config": true}}));
    // OpenClaw's `path=value` form: the verdict carries the host's payload.
    match harness(on.clone()).run(set("/config set textChunkLimit=3000")) {
        Verdict::Route(accepted) => assert_eq!(
            accepted.config_write,
            Some(json!({"op": "set", "path": "textChunkLimit", "value": 3000}))
        ),
        other => panic!("{other:?}"),
    }
    for malformed in ["/config set =3", "/config set", "/config unset a=b"] {
        match harness(on.clone()).run(set(malformed)) {
            Verdict::Refuse { code, text, to } => {
                assert_eq!(code, "config_malformed", "{malformed}");
                assert_eq!(text, "Usage: /config set path=value");
                assert_eq!(to, "chat_id:7");
            }
            other => panic!("{malformed}: {other:?}"),
        }
    }
    // A plain message carries no config write.
    match harness(on).run(d0()) {
        Verdict::Route(accepted) => assert_eq!(accepted.config_write, None),
        other => panic!("{other:?}"),
    }
}

/// Case 147: a stranger's `/config` under `dmPolicy: "open"` is dropped before anything of
/// its value is parsed, whatever the value, and the next DM is routed.
#[test]
fn case_147_a_strangers_config_command_is_refused_unparsed() {
    let open = with_channel(
        merge(c0(), json!({"commands": {"config": true}})),
        json!({"dmPolicy": "open", "allowFrom": ["*"]}),
    );
    let mut h = harness(open);
    let nested = |n: usize| format!("/config set a={}{}", "[".repeat(n), "]".repeat(n));
    for (i, text) in [
        "/config set x 1".to_string(),
        nested(5_000),
        nested(500_000),
    ]
    .into_iter()
    .enumerate()
    {
        let m = merge(stranger(), json!({"guid": format!("S{i}"), "text": text}));
        assert_eq!(h.dropped(m), "unauthorized_command");
    }
    h.routed(merge(stranger(), json!({"guid": "S9"})));
    // The owner's oversized value is refused by its size, unparsed, with the usage reply.
    let mut owner = harness(merge(c0(), json!({"commands": {"config": true}})));
    match owner.run(merge(d0(), json!({"text": nested(5_000)}))) {
        Verdict::Refuse { code, text, .. } => {
            assert_eq!(code, "config_malformed");
            assert_eq!(text, policy::CONFIG_OVERSIZED_REPLY);
        }
        other => panic!("{other:?}"),
    }
}

/// Case 147a: command authorization is not ownership. A `groupAllowFrom`-only member and a
/// pairing-approved contact may run commands but never `/config`; the owner may.
#[test]
fn case_147a_config_needs_the_owner() {
    let config = with_channel(
        merge(c0(), json!({"commands": {"config": true}})),
        json!({"groupAllowFrom": ["+15550003333"]}),
    );
    let member = json!({"guid": "G5", "sender": "+15550003333"});
    let write = r#"@bot /config set channels.imessage.allowFrom=["+15550003333"]"#;
    let mut h = harness(config.clone());
    let status = h.routed(merge(
        g0(),
        merge(member.clone(), json!({"text": "@bot /status"})),
    ));
    assert!(status.command_authorized && !status.sender_is_owner);
    assert_eq!(
        h.dropped(merge(
            g0(),
            merge(member, json!({"guid": "G6", "text": write}))
        )),
        "unauthorized_command"
    );
    // Approved through pairing: authorized for commands, refused for `/config`, no reply.
    let mut h = harness(config.clone());
    h.allow_store = vec!["+15550002222".into()];
    let paired = h.routed(merge(stranger(), json!({"text": "/status"})));
    assert!(paired.command_authorized && !paired.sender_is_owner);
    assert_eq!(
        h.dropped(merge(
            stranger(),
            json!({"guid": "S2", "text": "/config set x 1"})
        )),
        "unauthorized_command"
    );
    // The owner.
    let routed = harness(config.clone()).routed(merge(
        d0(),
        json!({"text": "/config set channels.imessage.textChunkLimit=3000"}),
    ));
    assert!(routed.sender_is_owner && routed.command_authorized);
    // `commands.ownerAllowFrom` replaces `allowFrom` as the owner list; entries of other
    // channels and `"*"` are no owners.
    let owners = merge(
        config,
        json!({"commands": {"config": true, "ownerAllowFrom": ["telegram:123", "*", "imessage:+1 555 000 3333"]}}),
    );
    let mut h = harness(owners);
    assert!(
        !h.routed(d0()).sender_is_owner,
        "allowFrom no longer decides"
    );
    assert!(
        h.routed(merge(g0(), json!({"guid": "G7", "sender": "+15550003333"})))
            .sender_is_owner
    );
}

/// Case 147b: a parent path replaces every scope below it, so every `configWrites` below
/// must allow it.
#[test]
fn case_147b_parent_paths_need_every_scope() {
    let config = with_channel(
        merge(c0(), json!({"commands": {"config": true}})),
        json!({"configWrites": false, "accounts": {"default": {"configWrites": true}}}),
    );
    for text in [
        r#"/config set channels.imessage={"dmPolicy":"open"}"#,
        "/config set channels={}",
        "/config set channels.imessage.accounts={}",
        "/config unset channels.imessage",
        "/config set channels.imessage.dmPolicy=open",
    ] {
        match harness(config.clone()).run(merge(d0(), json!({"text": text}))) {
            Verdict::Refuse {
                code, text: reply, ..
            } => {
                assert_eq!(code, "config_writes_disabled", "{text}");
                assert_eq!(reply, policy::CONFIG_WRITES_DISABLED_REPLY);
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // The account's own scope and paths outside the channel follow their own values.
    let mut h = harness(config);
    h.routed(merge(
        d0(),
        json!({"text": "/config set channels.imessage.accounts.default.textChunkLimit=3000"}),
    ));
    h.routed(merge(
        d0(),
        json!({"guid": "D1", "text": "/config set messages.responsePrefix=[bot]"}),
    ));
    // One account that refuses is enough to refuse a parent.
    let one_off = with_channel(
        merge(c0(), json!({"commands": {"config": true}})),
        json!({"accounts": {"default": {}, "work": {"configWrites": false}}}),
    );
    assert_eq!(
        harness(one_off).dropped(merge(d0(), json!({"text": "/config set channels={}"}))),
        "config_writes_disabled"
    );
}

/// Case 147c: SMS and RCS sender ids can be forged: such rows are routed but never
/// command-authorized nor owner, unless `allowSmsCommands` is on (channel or account).
#[test]
fn case_147c_sms_rows_are_never_trusted_by_default() {
    let sms = |guid_prefix: &str| {
        merge(
            d0(),
            json!({"chat_guid": format!("{guid_prefix};-;+15550001111"), "text": "/status"}),
        )
    };
    for service in ["SMS", "RCS", "sms"] {
        let routed = harness(c0()).routed(sms(service));
        assert!(!routed.command_authorized, "{service}");
        assert!(!routed.sender_is_owner, "{service}");
    }
    let config = merge(c0(), json!({"commands": {"config": true}}));
    assert_eq!(
        harness(config.clone()).dropped(merge(sms("SMS"), json!({"text": "/config set x 1"}))),
        "unauthorized_command"
    );
    for on in [
        with_channel(c0(), json!({"allowSmsCommands": true})),
        with_channel(
            c0(),
            json!({"accounts": {"default": {"allowSmsCommands": true}}}),
        ),
    ] {
        let routed = harness(on).routed(sms("SMS"));
        assert!(routed.command_authorized && routed.sender_is_owner);
    }
    // The same number over iMessage is trusted as before.
    let routed = harness(c0()).routed(merge(d0(), json!({"text": "/status"})));
    assert!(routed.command_authorized && routed.sender_is_owner);
}

/// Issue 21: echo and reflection drops run before access, so a group member the allowlist
/// refuses must not feed the loop limiter and mute the bot for the owner.
#[test]
fn refused_senders_cannot_mute_a_group() {
    let mut h = harness(c0());
    for i in 0..10 {
        let m = merge(
            g0(),
            json!({"guid": format!("X{i}"), "sender": "+15550009999", "text": "<thinking>x</thinking>"}),
        );
        assert_eq!(h.dropped_at(m, NOW + i * 1000), "reflection");
    }
    h.routed_at(merge(g0(), json!({"guid": "G1"})), NOW + 10_000);
    // An admitted sender's reflections still count (cases 51/52 cover echoes).
    let mut h = harness(c0());
    for i in 0..5 {
        let m = merge(
            g0(),
            json!({"guid": format!("Y{i}"), "text": "<thinking>x</thinking>"}),
        );
        assert_eq!(h.dropped_at(m, NOW + i * 1000), "reflection");
    }
    assert_eq!(
        h.dropped_at(merge(g0(), json!({"guid": "G2"})), NOW + 5000),
        "loop_limited"
    );
}

#[test]
fn drops_are_counted_by_reason() {
    let mut h = harness(c0());
    h.routed(d0());
    h.dropped(d0());
    h.dropped(merge(g0(), json!({"text":"hello"})));
    assert_eq!(h.inbound.stats.drops.get("duplicate"), Some(&1));
    assert_eq!(h.inbound.stats.drops.get("no_mention"), Some(&1));
}
