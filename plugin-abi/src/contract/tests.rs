//! The typed contract reads and writes exactly the JSON the plugin and host-stub exchange
//! today. The examples are the plugin's own `json!` replies, the spec's examples and what
//! host-stub sends.

use std::collections::BTreeSet;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};

use super::*;
use crate::types::{PluginError, SendReceipt};

/// `wire` parses as `T` and writes back as the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(wire: Value) -> T {
    let typed: T = serde_json::from_value(wire.clone())
        .unwrap_or_else(|e| panic!("{wire} does not parse: {e}"));
    assert_eq!(serde_json::to_value(&typed).unwrap(), wire, "round trip");
    typed
}

/// The reply of `C` for `wire`, checked to round trip.
fn reply<C: Call>(wire: Value) -> C::Reply {
    round_trip::<C::Reply>(wire)
}

#[test]
fn method_names_are_the_plugins_list_in_order() {
    // `describe().methods` of the iMessage plugin (its METHODS constant) today.
    let plugin = [
        "config.validate",
        "config.reload",
        "pairing.list",
        "pairing.approve",
        "pairing.revoke",
        "target.normalize",
        "capabilities.get",
        "chat.typing",
        "chat.read",
        "message.react",
        "message.edit",
        "message.unsend",
        "send.reconcile",
        "config.schema",
    ];
    let ours: Vec<&str> = CallMethod::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(ours, plugin);
    for m in CallMethod::ALL {
        assert_eq!(CallMethod::parse(m.as_str()).unwrap(), *m);
        assert_eq!(serde_json::to_value(m).unwrap(), json!(m.as_str()));
        assert_eq!(m.to_string(), m.as_str());
    }
}

#[test]
fn a_description_offers_what_it_lists() {
    let description: crate::types::PluginDescription = serde_json::from_value(json!({
        "id": "imessage", "name": "iMessage", "version": "0.1.0", "abiVersion": "0.1.1",
        "methods": ["pairing.list", "chat.dance"]
    }))
    .unwrap();
    assert!(description.offers(CallMethod::PairingList));
    assert!(!description.offers(CallMethod::ChatTyping));
}

#[test]
fn an_unknown_method_is_the_plugins_unknown_method_error() {
    let e = CallMethod::parse("chat.dance").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownMethod));
    assert_eq!(e.message, "not supported by this plugin: chat.dance");
    let e = CallRequest::decode("Pairing.List", json!({})).unwrap_err();
    assert!(e.is(ErrorCode::UnknownMethod), "names are case-sensitive");
    let e = HostMethod::parse("config.delete").unwrap_err();
    assert_eq!(
        (e.code(), e.message.as_str()),
        (
            Some(ErrorCode::UnknownMethod),
            "this host does not support config.delete"
        )
    );
}

#[test]
fn error_codes_are_todays_strings() {
    // Every code the plugin, plugin-abi and host-stub produce or match today.
    let today = [
        "config_invalid",
        "state_dir_unsafe",
        "not_started",
        "invalid_request",
        "invalid_target",
        "unknown_method",
        "bad_payload",
        "panic",
        "internal",
        "failed",
        "imsg_unavailable",
        "disabled",
        "unsupported",
        "not_own_message",
        "too_late",
        "rate_limited",
        "outcome_unknown",
        "refused",
        "config_writes_disabled",
        "bad_request",
        "not_running",
        "gateway_unreachable",
    ];
    let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(ours, today);
    let distinct: BTreeSet<&str> = ours.iter().copied().collect();
    assert_eq!(distinct.len(), ours.len(), "no code listed twice");
    for code in ErrorCode::ALL {
        assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(*code));
        assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        let wire = PluginError::new(*code, "x").to_wire();
        assert_eq!(PluginError::from_wire(&wire).code(), Some(*code));
    }
    assert_eq!(
        "no_such_code".parse::<ErrorCode>().unwrap_err().to_string(),
        "unknown error code \"no_such_code\""
    );
    assert_eq!(PluginError::new("from_the_future", "x").code(), None);
}

#[test]
fn plugin_errors_keep_their_wire_shape() {
    let e = PluginError::new(
        ErrorCode::TooLate,
        "iMessage unsend is only possible within 2 minutes of sending",
    );
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"code": "too_late", "message": "iMessage unsend is only possible within 2 minutes of sending"})
    );
    assert!(e.is(ErrorCode::TooLate) && !e.is(ErrorCode::Failed));
}

#[test]
fn config_methods_round_trip() {
    let config = json!({"channels": {"imessage": {"dmPolicy": "pairing"}}});
    let request = round_trip::<ConfigValidate>(config.clone());
    assert_eq!(request.0, config, "the config passes through untouched");
    round_trip::<ConfigReload>(config);
    reply::<ConfigValidate>(
        json!({"ok": true, "warnings": ["channels.imessage.x is accepted for compatibility but has no effect in this plugin"]}),
    );
    let r = reply::<ConfigReload>(
        json!({"updated": ["default"], "restarted": [], "started": ["work"], "stopped": [], "warnings": []}),
    );
    assert_eq!(r.started, vec!["work"]);
}

#[test]
fn pairing_methods_round_trip() {
    // host-stub sends `accountId: null` today; the typed request omits it, which the
    // plugin reads the same way.
    let list: PairingList = serde_json::from_value(json!({"accountId": null})).unwrap();
    assert_eq!(serde_json::to_value(&list).unwrap(), json!({}));
    round_trip::<PairingList>(json!({"accountId": "work"}));
    let rows = reply::<PairingList>(json!([{
        "code": "K7M2QX9D", "senderId": "+15550002222", "accountId": "default",
        "createdAt": "2026-05-16T09:45:00.000Z", "expiresAt": "2026-05-16T10:45:00.000Z",
        "lastSeenAt": "2026-05-16T09:46:00.000Z"
    }]));
    assert_eq!(rows.0[0].sender_id, "+15550002222");
    reply::<PairingList>(json!([]));

    let approve = round_trip::<PairingApprove>(
        json!({"code": "K7M2QX9D", "accountId": "default", "notify": true}),
    );
    assert!(approve.notify);
    let bare: PairingApprove = serde_json::from_value(json!({"code": "k7m2qx9d"})).unwrap();
    assert_eq!((bare.account_id, bare.notify), (None, false));
    reply::<PairingApprove>(json!({"accountId": "default", "senderId": "+15550002222"}));

    round_trip::<PairingRevoke>(json!({"senderId": "+15550002222", "accountId": "default"}));
    reply::<PairingRevoke>(
        json!({"accountId": "default", "senderId": "+15550002222", "removed": false}),
    );
}

#[test]
fn target_and_capabilities_round_trip() {
    round_trip::<TargetNormalize>(json!({"to": "chat_id:42"}));
    let absent: TargetNormalize = decode(CallMethod::TargetNormalize, json!({})).unwrap();
    assert_eq!(absent.to, "", "an absent target reads as empty, as today");
    for selector in [
        json!({"chat_id": 42}),
        json!({"chat_guid": "iMessage;-;+15550001111"}),
        json!({"chat_identifier": "chat123"}),
        json!({"to": "+15550001111"}),
    ] {
        reply::<TargetNormalize>(selector);
    }
    round_trip::<CapabilitiesGet>(json!({"accountId": "default", "refresh": true}));
    let caps = reply::<CapabilitiesGet>(json!({
        "accountId": "default", "imsgVersion": "0.15.10", "profile": "strict",
        "protocolVersion": 1, "databaseReady": true, "bridgeReady": false,
        "checkedAt": "2026-05-16T09:50:00.000Z",
        "features": {"typing": false, "tapback": true},
        "reasons": {"typing": "the imsg private API bridge is not running (run imsg launch)"}
    }));
    assert_eq!(caps.profile, ImsgProfile::Strict);
    // Lenient servers have no protocol version: written as null, not omitted.
    reply::<CapabilitiesGet>(json!({
        "accountId": "default", "imsgVersion": null, "profile": "lenient",
        "protocolVersion": null, "databaseReady": true, "bridgeReady": true,
        "checkedAt": "2026-05-16T09:50:00.000Z", "features": {}, "reasons": {}
    }));
}

#[test]
fn chat_methods_round_trip() {
    round_trip::<ChatTyping>(
        json!({"accountId": "default", "to": "imessage:+15550001111", "on": true}),
    );
    reply::<ChatTyping>(json!({"ok": true, "accountId": "default", "typing": true, "sent": true}));
    reply::<ChatTyping>(
        json!({"ok": true, "accountId": "default", "typing": true, "sent": false, "reason": "typingMode is never"}),
    );
    round_trip::<ChatRead>(json!({"accountId": "default", "to": "chat_id:42"}));
    reply::<ChatRead>(json!({"ok": true, "accountId": "default", "sent": true}));
    reply::<ChatRead>(
        json!({"ok": true, "accountId": "default", "sent": false, "reason": "this imsg build does not offer read"}),
    );
}

#[test]
fn message_actions_round_trip() {
    let react = round_trip::<MessageReact>(json!({
        "accountId": "default", "to": "imessage:+15550001111", "messageId": "D0",
        "reaction": "love", "remove": false, "partIndex": 0
    }));
    assert_eq!(react.message.part_index, Some(0));
    // What host-stub sent before it was typed: nulls for what it did not have.
    let old: MessageReact = serde_json::from_value(json!({
        "accountId": null, "to": "chat_id:7", "messageId": "G0",
        "reaction": null, "emoji": "🎉", "remove": false
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(&old).unwrap(),
        json!({"to": "chat_id:7", "messageId": "G0", "emoji": "🎉", "remove": false})
    );
    reply::<MessageReact>(
        json!({"ok": true, "accountId": "default", "messageId": "D0", "reaction": "love", "removed": false}),
    );
    reply::<MessageReact>(
        json!({"ok": true, "accountId": "default", "messageId": "G0", "emoji": "🎉", "removed": false}),
    );
    reply::<MessageReact>(
        json!({"ok": true, "accountId": "default", "messageId": "D0", "removed": true,
        "reactions": ["love", "like", "dislike", "laugh", "emphasize", "question"]}),
    );

    round_trip::<MessageEdit>(
        json!({"accountId": "default", "to": "imessage:+15550001111", "messageId": "S1", "text": "See you at **8**", "partIndex": 0}),
    );
    reply::<MessageEdit>(
        json!({"ok": true, "accountId": "default", "messageId": "S1", "edits": 1}),
    );
    round_trip::<MessageUnsend>(
        json!({"accountId": "default", "to": "chat_id:42", "messageId": "S1"}),
    );
    reply::<MessageUnsend>(json!({"ok": true, "accountId": "default", "messageId": "S1"}));
}

#[test]
fn send_reconcile_round_trips() {
    round_trip::<SendReconcile>(json!({"accountId": "default", "idempotencyKey": "q-42"}));
    let receipt: SendReceipt = reply::<SendReconcile>(json!({
        "ok": false, "accountId": "default", "idempotencyKey": "q-42",
        "messageIds": ["902213b2-bb8f-5b99-9e86-fbaac70123aa", null], "chunks": 2, "replayed": true,
        "parts": [
            {"kind": "text", "outcome": "sent", "messageId": "902213b2-bb8f-5b99-9e86-fbaac70123aa",
             "attemptId": "902213b2-bb8f-5b99-9e86-fbaac70123aa", "reconciled": true, "transport": "bridge"},
            {"kind": "text", "outcome": "not_sent", "messageId": null,
             "attemptId": "524a9759-afba-59cb-802d-2dd8b7a42cbe",
             "error": "rate limited: waited 30000 ms for a send slot", "retryAfterMs": 2400}
        ]
    }));
    assert!(receipt.replayed);
}

#[test]
fn config_write_is_the_plugins_payload() {
    // The plugin's `/config set|unset` payloads, with the account it adds.
    let set = round_trip::<ConfigWrite>(
        json!({"op": "set", "path": "channels.imessage.textChunkLimit", "value": 3000, "accountId": "default"}),
    );
    assert_eq!(set.edit.path(), "channels.imessage.textChunkLimit");
    assert_eq!(set.edit.op(), "set");
    let null = round_trip::<ConfigWrite>(json!({"op": "set", "path": "a.b", "value": null}));
    assert_eq!(
        null.edit,
        ConfigEdit::Set {
            path: "a.b".into(),
            value: Value::Null
        }
    );
    let unset =
        round_trip::<ConfigWrite>(json!({"op": "unset", "path": "channels.imessage.dmPolicy"}));
    assert_eq!(unset.edit.op(), "unset");
    let bad = serde_json::from_value::<ConfigWrite>(json!({"op": "delete", "path": "x"}));
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("unknown variant `delete`"));
    assert_eq!(
        serde_json::to_value(HostMethod::ConfigWrite).unwrap(),
        json!("config.write")
    );
}

#[test]
fn pairing_host_requests_are_the_bridges_payloads() {
    // What the OpenClaw channel package reads and answers (examples/openclaw-channel).
    let upsert = round_trip::<PairingUpsert>(json!(
        {"senderId": "+15550002222", "chatId": 8, "meta": {}, "accountId": "default"}
    ));
    assert_eq!(upsert.sender_id, "+15550002222");
    assert_eq!(upsert.chat_id, Some(8));
    let bare = round_trip::<PairingUpsert>(json!({"senderId": "a@example.com", "meta": {}}));
    assert_eq!((bare.chat_id, bare.account_id), (None, None));
    let created = round_trip::<PairingUpsertReply>(json!({"code": "K7M2QX9D", "created": true}));
    assert!(created.created);
    // OpenClaw's queue-full answer may carry no code: read as "not created".
    let full: PairingUpsertReply = serde_json::from_value(json!({"code": ""})).unwrap();
    assert_eq!((full.code.as_str(), full.created), ("", false));
    round_trip::<PairingAllowFrom>(json!({"accountId": "default"}));
    let allow = round_trip::<PairingAllowFromReply>(json!({"allowFrom": ["+15550002222"]}));
    assert_eq!(allow.allow_from, ["+15550002222"]);
    let empty: PairingAllowFromReply = serde_json::from_value(json!({})).unwrap();
    assert!(empty.allow_from.is_empty());
    for (method, wire) in [
        (HostMethod::PairingUpsert, "pairing.upsert"),
        (HostMethod::PairingAllowFrom, "pairing.allowFrom"),
    ] {
        assert_eq!(serde_json::to_value(method).unwrap(), json!(wire));
        assert_eq!(HostMethod::parse(wire).unwrap(), method);
        assert_eq!(method.as_str(), wire);
        assert!(HostMethod::ALL.contains(&method));
    }
    assert_eq!(crate::types::features::PAIRING_HOST, "pairing.host");
}

#[test]
fn decode_names_the_field_at_fault() {
    let e =
        CallRequest::decode("chat.typing", json!({"to": "chat_id:1", "on": "yes"})).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    assert!(
        e.message
            .starts_with("chat.typing: invalid type: string \"yes\", expected a boolean"),
        "{}",
        e.message
    );
    let e = CallRequest::decode("pairing.revoke", json!({})).unwrap_err();
    assert_eq!(e.message, "pairing.revoke: missing field `senderId`");
    let e = CallRequest::decode(
        "message.edit",
        json!({"to": "chat_id:1", "messageId": "S1", "text": "x", "partIndex": -1}),
    )
    .unwrap_err();
    assert!(
        e.message.contains("invalid value: integer `-1`"),
        "{}",
        e.message
    );
}

#[test]
fn decode_reads_a_missing_payload_as_empty() {
    // A host that passes no payload: `{}` for the requests, the value itself for a config.
    assert_eq!(
        CallRequest::decode("pairing.list", Value::Null).unwrap(),
        CallRequest::PairingList(PairingList::default())
    );
    assert_eq!(
        CallRequest::decode("config.validate", Value::Null).unwrap(),
        CallRequest::ConfigValidate(ConfigValidate(Value::Null))
    );
    let e = CallRequest::decode("chat.read", Value::Null).unwrap_err();
    assert_eq!(e.message, "chat.read: missing field `to`");
    for m in CallMethod::ALL {
        if let Ok(request) = CallRequest::decode(m.as_str(), Value::Null) {
            assert_eq!(request.method(), *m);
        }
    }
}
