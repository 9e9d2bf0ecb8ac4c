//! Property tests for every function that takes outside text (issue 10): handles, targets,
//! allowlist entries, mention and command matching, the sanitiser, chunking, the reflection
//! guard, the wrapper-script parser, attachment paths, timestamps, imsg lines and config
//! values. Arbitrary Unicode never panics, and the invariants hold.

use imessage::config::allow::{self, Parsed};
use imessage::config::ChunkMode;
use imessage::outbound::chunk;
use imessage::{attachments, echo, handle, message, outbound, policy, remote, timeutil};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Value};
use unicode_segmentation::UnicodeSegmentation;

/// Characters that broke or could break byte-index code: multi-byte letters, combining marks,
/// emoji with ZWJ and skin tones, flags, RTL and zero-width marks, NUL, U+FFFD (what a lone
/// surrogate becomes), CR/LF, and the ASCII that the parsers look for.
const TRICKY: &[&str] = &[
    "é",
    "e\u{301}",
    "😀",
    "👩\u{200d}👩\u{200d}👧",
    "👍🏽",
    "🇫🇷",
    "\u{200f}",
    "\u{200b}",
    "\u{202e}",
    "\0",
    "\u{fffd}",
    "\r\n",
    "\n",
    "\n\n",
    " ",
    "\t",
    "+",
    "@",
    ":",
    "/",
    ".",
    "-",
    "(",
    ")",
    "1",
    "5",
    "9",
    "a",
    "Z",
    "sms:",
    "imessage:",
    "auto:",
    "chat_id:",
    "chat_guid:",
    "chat_identifier:",
    "ssh",
    "#",
    "\"",
    "'",
    "`",
    "```",
    "~~~",
    "*",
    "..",
    "@bot",
    "/status",
    "stop",
    "/config set ",
    "=",
    "NO_REPLY",
    "[[reply_to_current]]",
];

fn tricky_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(prop::sample::select(TRICKY), 0..max).prop_map(|v| v.concat()),
    ]
}

fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn without_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// A JSON value of any shape, for config fields.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_text(8).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(tricky_text(3), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CONFIG_FIELDS: &[&str] = &[
    "cliPath",
    "dbPath",
    "remoteHost",
    "dmPolicy",
    "allowFrom",
    "groupPolicy",
    "groupAllowFrom",
    "groups",
    "textChunkLimit",
    "chunkMode",
    "mediaMaxMb",
    "includeAttachments",
    "attachmentRoots",
    "remoteAttachmentRoots",
    "catchup",
    "service",
    "region",
    "accounts",
    "defaultAccount",
    "probeTimeoutMs",
    "sendTimeoutMs",
    "enabled",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_normalised_handle_normalises_to_itself(raw in tricky_text(12)) {
        let (rest, _) = handle::strip_service_prefixes(&raw);
        prop_assert!(raw.contains(rest));
        if let Some(n) = handle::normalize(&raw) {
            prop_assert_eq!(handle::normalize(&n), Some(n.clone()));
        }
        let _ = handle::normalize_sender(&raw);
    }

    #[test]
    fn targets_parse_or_are_refused(raw in tricky_text(12)) {
        if let Ok(target) = outbound::target::parse(&raw) {
            let mut params = serde_json::Map::new();
            target.write_params(&mut params);
            let _ = target.echo_scope();
            let _ = target.service("imessage");
        }
    }

    #[test]
    fn allowlist_entries_round_trip_through_their_stored_form(raw in tricky_text(12)) {
        if let Parsed::Entry(entry, _) = allow::parse_entry(&raw) {
            match allow::parse_entry(&entry.stored()) {
                Parsed::Entry(again, _) => prop_assert_eq!(again, entry),
                Parsed::Invalid => prop_assert!(false, "{:?} does not parse back", entry.stored()),
            }
        }
    }

    #[test]
    fn mention_and_command_matching_never_panic(text in tricky_text(16), group in any::<bool>()) {
        let patterns = [Regex::new(r"(?i)@bot\b").unwrap(), Regex::new("é+").unwrap()];
        let _ = policy::strip_invisible(&text);
        let _ = policy::is_mentioned(&text, &patterns);
        let _ = policy::is_control_command(&text, group, &patterns, &policy::CommandNames::default());
        if let Some(command) = policy::config_command(&text, group, &patterns) {
            let _ = command.request();
        }
    }

    #[test]
    fn the_sanitiser_never_panics_nor_leaves_three_newlines(text in tricky_text(24)) {
        let out = outbound::sanitize::sanitize(&text);
        prop_assert!(!out.contains("\n\n\n"), "{:?}", out);
    }

    #[test]
    fn chunks_rejoin_to_the_input_within_the_limit(
        text in tricky_text(40),
        limit in 1usize..24,
        newline in any::<bool>(),
    ) {
        let mode = if newline { ChunkMode::Newline } else { ChunkMode::Length };
        let chunks = chunk::chunk(&text, limit, mode);
        for c in &chunks {
            prop_assert!(!c.is_empty());
            // Over the limit only when the chunk is one cluster that alone is longer.
            prop_assert!(
                utf16_len(c) <= limit || c.graphemes(true).count() == 1,
                "{:?} is over {} units", c, limit
            );
        }
        prop_assert_eq!(without_whitespace(&chunks.concat()), without_whitespace(&text));
    }

    #[test]
    fn chunk_cuts_never_split_a_cluster(text in tricky_text(40), limit in 1usize..12) {
        // Every chunk is a run of whole clusters of the input. The one exception is the
        // whitespace trimmed at a cut, which may have led a cluster (" " + a spacing mark).
        let clusters: Vec<&str> = text.graphemes(true).collect();
        let whole_or_trimmed = |g: &str| {
            clusters.iter().any(|c| {
                c.strip_suffix(g)
                    .is_some_and(|lead| lead.chars().all(char::is_whitespace))
            })
        };
        for c in chunk::chunk(&text, limit, ChunkMode::Length) {
            for g in c.graphemes(true) {
                prop_assert!(whole_or_trimmed(g), "{:?} is not a cluster of the input", g);
            }
        }
    }

    #[test]
    fn the_reflection_guard_never_panics(text in tricky_text(24)) {
        let _ = echo::is_reflection(&text);
        let _ = echo::strip_code(&text);
        let _ = echo::normalize_text(&text);
        let _ = echo::Scope::parse(&text);
    }

    #[test]
    fn wrapper_scripts_never_panic(lines in prop::collection::vec(tricky_text(10), 0..6)) {
        let _ = remote::detect_in(&lines.join("\n"));
        let _ = remote::detect_in(&format!("#!/bin/sh\nexec ssh {} imsg \"$@\"\n", lines.concat()));
    }

    #[test]
    fn attachment_paths_stay_inside_their_roots(path in tricky_text(12), root in tricky_text(6)) {
        let path = format!("/{path}");
        if attachments::inside_root(&path, &root) {
            prop_assert!(!path.contains("/../") && !path.contains('\0'));
        }
        let _ = attachments::mime_from_extension(&path);
        let safe = remote::safe_file_chars(&path);
        prop_assert!(safe.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        // The file on the Mac is one shell-safe name directly inside its own folder.
        let place = remote::upload::remote_place(&path, "0123456789abcdef");
        prop_assert_eq!(place.dir.as_str(), "/tmp/imsg-out-0123456789abcdef");
        let name = place.file.strip_prefix("/tmp/imsg-out-0123456789abcdef/").unwrap_or("");
        prop_assert!(!name.is_empty() && !name.contains('/'), "{}", place.file);
        prop_assert!(!imessage::config::rules::needs_sftp(&place.file));
    }

    #[test]
    fn timestamps_and_imsg_lines_never_panic(text in tricky_text(16)) {
        let _ = timeutil::parse_ms(&text);
        let _ = message::parse_message_line(&text);
        let line = json!({"jsonrpc": "2.0", "method": "message", "params": {"message": {
            "id": 1, "sender": text, "chat_identifier": text, "reply_to_sender": text,
            "destination_caller_id": text, "text": text, "created_at": text,
        }}}).to_string();
        let (_, m) = message::parse_message_line(&line).expect("well-typed");
        let _ = m.created_ms();
        let _ = m.dedupe_key();
    }

    #[test]
    fn any_config_value_is_accepted_or_named_in_an_error(
        field in prop::sample::select(CONFIG_FIELDS),
        value in any_json(),
    ) {
        let config = json!({"channels": {"imessage": {field: value}}});
        if let Err(errors) = imessage::config::parse(&config) {
            prop_assert!(!errors.is_empty());
            prop_assert!(
                errors.iter().all(|e| e.starts_with("channels.imessage")),
                "{:?}", errors
            );
        }
    }
}
