//! `host-stub message send` end to end (issue 5): chunking, paragraphs, media caps, bad
//! targets, and a send that never answers.

use crate::common;

use std::time::{Duration, Instant};

use common::sim::SimEnv;
use serde_json::{json, Value};

/// `host-stub message send --channel imessage <args…>`.
fn send(env: &SimEnv, args: &[&str]) -> std::process::Output {
    let mut all = vec!["message", "send", "--channel", "imessage"];
    all.extend_from_slice(args);
    env.gw.run(&all)
}

fn words(n: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("word{i} "));
        i += 1;
    }
    s.truncate(n);
    s.trim_end().to_string()
}

#[test]
fn long_text_is_sent_as_chunks_with_a_receipt() {
    let env = SimEnv::new(json!({}), json!({}));
    let text = words(9000);
    let out = send(&env, &["--target", "chat_id:42", "--text", &text, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let receipt: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(receipt["ok"], true);
    assert_eq!(receipt["chunks"], 3);
    let ids = receipt["messageIds"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter()
            .all(|id| id.as_str().is_some_and(|s| !s.is_empty())),
        "{ids:?}"
    );
    let sends = env.sends();
    assert_eq!(sends.len(), 3);
    let mut rejoined = Vec::new();
    for s in &sends {
        assert_eq!(s["chat_id"], 42);
        let t = s["text"].as_str().unwrap();
        assert!(
            t.chars().count() <= 4000,
            "{} characters",
            t.chars().count()
        );
        rejoined.push(t.to_string());
    }
    assert_eq!(rejoined.join(" "), text, "in order, split only at spaces");
}

#[test]
fn newline_mode_packs_whole_paragraphs() {
    // OpenClaw 2026.9's location of the setting, read as an alias of chunkMode (§1.2).
    let env = SimEnv::new(
        json!({}),
        json!({"channels": {"imessage": {"textChunkLimit": 50, "streaming": {"chunkMode": "newline"}}}}),
    );
    let text = "First paragraph.\n\nSecond one,\nwith two lines.\n\n\n```\ncode\n\nstill code\n```";
    let out = send(&env, &["--target", "chat_id:42", "--text", text]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let texts: Vec<String> = env
        .sends()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    // §7.5: paragraphs are packed up to the limit (45 units, then the fence would pass 50);
    // a fence with a blank line inside stays one paragraph.
    assert_eq!(
        texts,
        vec![
            "First paragraph.\n\nSecond one,\nwith two lines.",
            "```\ncode\n\nstill code\n```"
        ]
    );
}

#[test]
fn oversized_media_is_refused_before_anything_is_sent() {
    let env = SimEnv::new(json!({}), json!({}));
    let big = env.path("big.mov");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(20 * 1024 * 1024)
        .unwrap();
    let out = send(
        &env,
        &[
            "--target",
            "chat_id:42",
            "--text",
            "look",
            "--media",
            big.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(
        err.contains("media too large") && err.contains("big.mov"),
        "{err}"
    );
    assert!(env.sends().is_empty(), "not even the text was sent");
}

#[test]
fn text_then_file_parts() {
    let env = SimEnv::new(json!({}), json!({}));
    let photo = env.path("a.jpg");
    std::fs::write(&photo, b"jpeg bytes").unwrap();
    let out = send(
        &env,
        &[
            "--target",
            "chat_id:42",
            "--text",
            "see photo",
            "--media",
            photo.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(
        env.sends(),
        vec![
            json!({"chat_id": 42, "text": "see photo", "service": "auto", "region": "US"}),
            json!({"chat_id": 42, "text": "", "file": photo.display().to_string(), "service": "auto", "region": "US"}),
        ]
    );
}

#[test]
fn a_bad_target_exits_non_zero_naming_it() {
    let env = SimEnv::new(json!({}), json!({}));
    let out = send(&env, &["--target", "chat_id:abc", "--text", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = common::stderr(&out);
    assert!(err.contains("chat_id:abc"), "{err}");
    assert!(err.contains("chat_id must be a positive integer"), "{err}");
    assert!(
        env.record().is_empty(),
        "no imsg process was asked anything"
    );
}

#[test]
fn a_send_that_never_answers_is_unknown_and_never_repeated() {
    let env = SimEnv::new(
        json!({"faults": {"delay_ms": {"send": 600000}}}),
        json!({"channels": {"imessage": {"sendTimeoutMs": 10000}}}),
    );
    // The configured 10 s (the least sendTimeoutMs takes), capped for the test.
    env.gw.set_timings("sendTimeoutMs=1000");
    // Two chunks: the first never answers, so the second is not attempted (case 128).
    let text = words(5000);
    let started = Instant::now();
    let out = send(&env, &["--target", "chat_id:42", "--text", &text, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_secs(1));
    let receipt: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(receipt["ok"], false);
    assert_eq!(receipt["chunks"], 2);
    assert_eq!(receipt["parts"][0]["outcome"], "unknown");
    assert_eq!(receipt["parts"][1]["outcome"], "not_sent");
    assert_eq!(
        env.send_requests().len(),
        1,
        "exactly one send request, no retry"
    );
}

#[test]
fn a_bad_test_timing_fails_the_start_naming_it() {
    let env = SimEnv::new(json!({}), json!({}));
    env.gw.set_timings("statusPollMs=300,statusPoll=5");
    let out = send(&env, &["--target", "chat_id:7", "--text", "hi", "--json"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        common::stderr(&out).contains("IMESSAGE_TEST_TIMINGS: unknown key \"statusPoll\""),
        "{}",
        common::stderr(&out)
    );
    assert!(env.send_requests().is_empty());
}

#[test]
fn a_threaded_reply_without_the_bridge_is_sent_unthreaded_on_a_strict_server_e5() {
    // Strict imsg (≥ 0.14) refuses `reply_to` without the bridge with −32602; the reply must
    // still go out, once, without threading (actions.md §10 E5).
    let env = SimEnv::new(json!({"profile": "strict"}), json!({}));
    let out = send(
        &env,
        &[
            "--target",
            "chat_id:7",
            "--text",
            "threaded?",
            "--reply-to",
            "PARENT-GUID",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let receipt: Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert_eq!(receipt["ok"], true);
    let requests = env.send_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["params"]["reply_to"], "PARENT-GUID");
    assert!(requests[1]["params"].get("reply_to").is_none());
    // The refused attempt wrote no row; the retry wrote one.
    let written: Vec<Value> = env
        .record()
        .into_iter()
        .filter(|r| r["effect"] == "send" && r["rows"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    assert_eq!(written.len(), 1, "sent exactly once: {written:?}");
    assert_eq!(written[0]["params"]["text"], "threaded?");
    assert!(written[0]["params"].get("reply_to").is_none());
    // With the bridge up, the reply is threaded.
    let env = SimEnv::new(json!({"profile": "strict", "bridge": "ready"}), json!({}));
    let out = send(
        &env,
        &[
            "--target",
            "chat_id:7",
            "--text",
            "threaded",
            "--reply-to",
            "P2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert_eq!(env.send_requests().len(), 1);
    assert_eq!(env.sends()[0]["reply_to"], "P2");
}

#[test]
fn a_strict_send_whose_row_never_matched_is_unknown_and_not_retried_e8() {
    // Newer strict imsg waits for the sent row and answers −32001 when it cannot match one
    // (actions.md §10 E8): the part may have gone out, so it is `unknown`, sent once.
    let env = SimEnv::new(
        json!({"profile": "strict", "send": {"mode": "unverified"}}),
        json!({}),
    );
    let (out, receipt) = env.send_json("chat_id:7", "did it go?", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert_eq!(receipt["parts"][0]["outcome"], "unknown");
    assert_eq!(env.send_requests().len(), 1, "never retried");
}
