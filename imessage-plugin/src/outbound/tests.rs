//! The outbound planning cases of channel-behaviour.md §12 (105–127).

use serde_json::json;

use super::*;
use crate::config;

fn account(channel: serde_json::Value) -> AccountConfig {
    config::parse(&json!({"channels": {"imessage": channel}}))
        .unwrap()
        .accounts[0]
        .clone()
}

fn req(to: &str, text: &str) -> SendRequest {
    SendRequest {
        to: to.into(),
        text: Some(text.into()),
        ..Default::default()
    }
}

fn params(p: &Plan) -> Vec<serde_json::Value> {
    p.parts.iter().map(|part| p.params(part, true)).collect()
}

#[test]
fn send_params_cases_105_to_110() {
    let a = account(json!({}));
    let cases = [
        (
            "chat_id:42",
            json!({"chat_id":42,"text":"hi","service":"auto","region":"US"}),
        ),
        (
            "imessage:+1 (555) 000-1111",
            json!({"to":"+15550001111","text":"hi","service":"imessage","region":"US"}),
        ),
        (
            "sms:+15550001111",
            json!({"to":"+15550001111","text":"hi","service":"sms","region":"US"}),
        ),
        (
            "chat_guid:iMessage;+;chat4242",
            json!({"chat_guid":"iMessage;+;chat4242","text":"hi","service":"auto","region":"US"}),
        ),
        (
            "chat_identifier:chat4242",
            json!({"chat_identifier":"chat4242","text":"hi","service":"auto","region":"US"}),
        ),
        (
            "imessage:chat_id:42",
            json!({"chat_id":42,"text":"hi","service":"auto","region":"US"}),
        ),
    ];
    for (to, want) in cases {
        assert_eq!(
            params(&plan(&req(to, "hi"), &a, None, None).unwrap()),
            vec![want],
            "{to}"
        );
    }
    let gb = account(json!({"service": "imessage", "region": "GB"}));
    assert_eq!(
        params(&plan(&req("Bob@Example.com", "hi"), &gb, None, None).unwrap()),
        vec![json!({"to":"bob@example.com","text":"hi","service":"imessage","region":"GB"})]
    );
}

#[test]
fn invalid_targets_case_111() {
    let a = account(json!({}));
    for to in [
        "chat_id:4a",
        "chat_id:0",
        "",
        "sms:",
        "chat_guid:",
        "Bob Smith",
    ] {
        assert!(
            matches!(
                plan(&req(to, "hi"), &a, None, None),
                Err(Rejected::InvalidTarget(_))
            ),
            "{to:?}"
        );
    }
}

#[test]
fn reply_to_cases_112_113() {
    let a = account(json!({}));
    let mut r = req("chat_id:42", &"word ".repeat(2000));
    r.reply_to_id = Some(" [abc]\u{0} ".into());
    let p = plan(&r, &a, None, None).unwrap();
    assert!(p.parts.len() > 1);
    for v in params(&p) {
        assert_eq!(v["reply_to"], "abc");
    }
    r.reply_to_id = Some("[]".into());
    assert!(params(&plan(&r, &a, None, None).unwrap())[0]
        .get("reply_to")
        .is_none());
    let p = plan(
        &req("chat_id:42", "[[reply_to:65]] Great question"),
        &a,
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        params(&p),
        vec![json!({"chat_id":42,"text":"Great question","service":"auto","region":"US"})]
    );
}

#[test]
fn sanitised_and_empty_cases_114_to_116() {
    let a = account(json!({}));
    let text = |t: &str| {
        plan(&req("chat_id:42", t), &a, None, None).unwrap().parts[0]
            .text
            .clone()
    };
    assert_eq!(
        text("<thinking>x</thinking>The answer is 42."),
        "The answer is 42."
    );
    assert_eq!(
        text("<thinking>hidden</thinking>\nVisible reply\nassistant:"),
        "Visible reply"
    );
    assert_eq!(
        plan(&req("chat_id:42", "[[reply_to_current]]"), &a, None, None),
        Err(Rejected::InvalidRequest("nothing to send".into()))
    );
}

#[test]
fn prefix_case_117() {
    let a = account(json!({}));
    assert_eq!(
        plan(&req("chat_id:42", "final reply"), &a, Some("PFX"), None)
            .unwrap()
            .parts[0]
            .text,
        "PFX final reply"
    );
    let w = account(json!({"responsePrefix": "[w]"}));
    assert_eq!(
        plan(&req("chat_id:42", "final reply"), &w, Some("PFX"), None)
            .unwrap()
            .parts[0]
            .text,
        "[w] final reply"
    );
    let small = account(json!({"textChunkLimit": 50}));
    let p = plan(
        &req("chat_id:42", &"word ".repeat(15)),
        &small,
        Some("PFX"),
        None,
    )
    .unwrap();
    assert_eq!(p.chunks, 2);
    assert!(p.parts[0].text.starts_with("PFX "));
    assert!(!p.parts[1].text.starts_with("PFX"));
}

#[test]
fn media_cases_124_to_127() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("a.jpg");
    std::fs::write(&photo, b"jpeg").unwrap();
    let a = account(json!({}));
    let mut r = req("chat_id:42", "see photo");
    r.media = vec![photo.display().to_string()];
    let p = plan(&r, &a, Some("PFX"), None).unwrap();
    assert_eq!(
        params(&p),
        vec![
            json!({"chat_id":42,"text":"PFX see photo","service":"auto","region":"US"}),
            json!({"chat_id":42,"text":"","file":photo.display().to_string(),"service":"auto","region":"US"}),
        ]
    );
    // Media only: empty text, no prefix.
    let mut only = req("chat_id:42", "");
    only.media = vec![format!("file://{}", photo.display())];
    let p = plan(&only, &a, Some("PFX"), None).unwrap();
    assert_eq!(
        p.parts,
        vec![Part {
            text: String::new(),
            file: Some(photo.display().to_string()),
            ranges: Vec::new(),
        }]
    );

    let three = account(json!({"mediaMaxMb": 3}));
    let exact = dir.path().join("exact.bin");
    std::fs::File::create(&exact)
        .unwrap()
        .set_len(3_145_728)
        .unwrap();
    let over = dir.path().join("over.bin");
    std::fs::File::create(&over)
        .unwrap()
        .set_len(3_145_729)
        .unwrap();
    let with = |p: &std::path::Path| SendRequest {
        media: vec![p.display().to_string()],
        ..req("chat_id:42", "x")
    };
    assert!(plan(&with(&exact), &three, None, None).is_ok());
    match plan(&with(&over), &three, None, None) {
        Err(Rejected::InvalidRequest(m)) => assert!(m.starts_with("media too large: "), "{m}"),
        other => panic!("{other:?}"),
    }
    match plan(&with(&dir.path().join("missing.png")), &a, None, None) {
        Err(Rejected::InvalidRequest(m)) => assert!(m.starts_with("media not found: ")),
        other => panic!("{other:?}"),
    }
    let mut url = req("chat_id:42", "x");
    url.media = vec!["https://example.com/a.png".into()];
    assert_eq!(
        plan(&url, &a, None, None),
        Err(Rejected::InvalidRequest("unsupported media URL".into()))
    );
}

#[test]
fn with_media_roots_one_item_outside_rejects_the_whole_request() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir(base.join("out")).unwrap();
    let inside = base.join("out/a.jpg");
    let outside = base.join("b.jpg");
    std::fs::write(&inside, b"jpeg").unwrap();
    std::fs::write(&outside, b"jpeg").unwrap();
    let a = account(json!({}));
    let roots = vec![base.join("out").display().to_string()];
    let mut r = req("chat_id:42", "two photos");
    r.media = vec![format!("file://{}", inside.display())];
    let p = plan(&r, &a, None, Some(&roots)).unwrap();
    assert_eq!(p.parts[1].file.as_deref(), inside.to_str());
    r.media.push(outside.display().to_string());
    match plan(&r, &a, None, Some(&roots)) {
        Err(Rejected::InvalidRequest(m)) => {
            assert!(m.starts_with("media outside the allowed roots: "), "{m}");
            assert!(m.contains(&roots[0]), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Without roots in force the same request plans as before.
    assert!(plan(&r, &a, None, None).is_ok());
}

fn formatting_of(p: &Plan) -> Vec<(String, Option<serde_json::Value>)> {
    params(p)
        .into_iter()
        .map(|v| {
            (
                v["text"].as_str().unwrap().to_string(),
                v.get("text_formatting").cloned(),
            )
        })
        .collect()
}

#[test]
fn markdown_becomes_native_ranges_case_203() {
    let a = account(json!({}));
    let p = plan(&req("chat_id:42", "**bold** text"), &a, None, None).unwrap();
    assert_eq!(
        formatting_of(&p),
        vec![(
            "bold text".into(),
            Some(json!([{"start":0,"length":4,"styles":["bold"]}]))
        )]
    );
    // No ranges, no key.
    let p = plan(&req("chat_id:42", "plain"), &a, None, None).unwrap();
    assert_eq!(formatting_of(&p), vec![("plain".into(), None)]);
}

#[test]
fn ranges_survive_chunking_and_the_prefix_case_205() {
    let a = account(json!({"textChunkLimit": 50}));
    let text = format!("**{}**", "a".repeat(60));
    let p = plan(&req("chat_id:42", &text), &a, None, None).unwrap();
    assert_eq!(
        formatting_of(&p),
        vec![
            (
                "a".repeat(50),
                Some(json!([{"start":0,"length":50,"styles":["bold"]}]))
            ),
            (
                "a".repeat(10),
                Some(json!([{"start":0,"length":10,"styles":["bold"]}]))
            ),
        ]
    );
    let p = plan(&req("chat_id:42", "**hi**"), &a, Some("PFX"), None).unwrap();
    assert_eq!(
        formatting_of(&p),
        vec![(
            "PFX hi".into(),
            Some(json!([{"start":4,"length":2,"styles":["bold"]}]))
        )]
    );
    // Packed paragraphs (newline mode): each paragraph's ranges land where it is in the chunk.
    let n = account(json!({"chunkMode": "newline"}));
    let p = plan(&req("chat_id:42", "*one*\n\n\n**two**"), &n, None, None).unwrap();
    assert_eq!(
        formatting_of(&p),
        vec![(
            "one\n\ntwo".into(),
            Some(json!([
                {"start":0,"length":3,"styles":["italic"]},
                {"start":5,"length":3,"styles":["bold"]}
            ]))
        )]
    );
}

#[test]
fn plain_off_and_the_request_override_case_206() {
    let plain = account(json!({"textFormatting": "plain"}));
    let p = plan(&req("chat_id:42", "**bold** text"), &plain, None, None).unwrap();
    assert_eq!(formatting_of(&p), vec![("bold text".into(), None)]);
    let off = account(json!({"textFormatting": "off"}));
    let p = plan(&req("chat_id:42", "**bold** text"), &off, None, None).unwrap();
    assert_eq!(formatting_of(&p), vec![("**bold** text".into(), None)]);
    let native = account(json!({}));
    let mut r = req("chat_id:42", "**bold** text");
    r.text_formatting = Some("off".into());
    let p = plan(&r, &native, None, None).unwrap();
    assert_eq!(formatting_of(&p), vec![("**bold** text".into(), None)]);
    r.text_formatting = Some("html".into());
    assert_eq!(
        plan(&r, &native, None, None).unwrap_err(),
        Rejected::InvalidRequest("textFormatting must be \"native\", \"plain\" or \"off\"".into())
    );
    // A marker-only text that converts to nothing is nothing to send.
    assert_eq!(
        plan(&req("chat_id:42", "<u></u>"), &native, None, None).unwrap_err(),
        Rejected::InvalidRequest("nothing to send".into())
    );
}
