//! The client against in-memory streams standing in for imsg.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A fake imsg: what the client writes, and a writer for what imsg answers.
struct Fake {
    requests: tokio::io::Lines<BufReader<tokio::io::DuplexStream>>,
    out: tokio::io::DuplexStream,
}

fn pair() -> (Started, Fake) {
    let (client_out, imsg_in) = tokio::io::duplex(1 << 16);
    let (imsg_out, client_in) = tokio::io::duplex(1 << 16);
    let started = RpcClient::from_io(client_in, client_out);
    (
        started,
        Fake {
            requests: BufReader::new(imsg_in).lines(),
            out: imsg_out,
        },
    )
}

impl Fake {
    async fn next_request(&mut self) -> Value {
        let line = self.requests.next_line().await.unwrap().unwrap();
        serde_json::from_str(&line).unwrap()
    }
    async fn say(&mut self, line: &str) {
        self.out.write_all(line.as_bytes()).await.unwrap();
        self.out.write_all(b"\n").await.unwrap();
    }
}

#[test]
fn replies_are_matched_by_id_not_order() {
    rt().block_on(async {
        let (started, mut imsg) = pair();
        let client = started.client.clone();
        let a = tokio::spawn({
            let c = client.clone();
            async move {
                c.request("chats.list", json!({"limit": 1}), Duration::from_secs(5))
                    .await
            }
        });
        let first = imsg.next_request().await;
        let b = tokio::spawn({
            let c = client.clone();
            async move {
                c.request(
                    "messages.history",
                    json!({"chat_id": 2}),
                    Duration::from_secs(5),
                )
                .await
            }
        });
        let second = imsg.next_request().await;
        assert_eq!(first["jsonrpc"], "2.0");
        assert_eq!(first["id"], 1, "ids start at 1");
        assert_eq!(second["id"], 2);
        assert_eq!(first["params"], json!({"limit": 1}));
        // Answer out of order, with reordered members and escaped slashes.
        imsg.say(r#"{"result":{"which":"second","p":"a\/b"},"id":2,"jsonrpc":"2.0"}"#)
            .await;
        imsg.say(r#"{"jsonrpc":"2.0","id":1,"result":{"which":"first"}}"#)
            .await;
        assert_eq!(a.await.unwrap().unwrap()["which"], "first");
        let b = b.await.unwrap().unwrap();
        assert_eq!(b["which"], "second");
        assert_eq!(b["p"], "a/b");
    });
}

#[test]
fn notifications_noise_and_errors() {
    rt().block_on(async {
        let (mut started, mut imsg) = pair();
        let client = started.client.clone();
        imsg.say("some banner text").await;
        imsg.say(r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":1,"message":{"id":"not a number"}}}"#).await;
        imsg.say(r#"{"jsonrpc":"2.0","method":"bridge.event","params":{}}"#).await;
        imsg.say(r#"{"jsonrpc":"2.0","method":"message","params":{"subscription":2,"message":{"id":5,"guid":"G5","text":"hi"}}}"#).await;
        // A message notification that is not a valid message says why (the consumer counts it
        // as malformed); a valid one arrives parsed.
        match started.events.recv().await.unwrap() {
            Event::Message {
                subscription,
                message: Err(bad),
            } => {
                assert_eq!(subscription, Some(1));
                assert_eq!(bad.keys, vec!["id".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(started.events.recv().await.unwrap(), Event::Notification { .. }));
        match started.events.recv().await.unwrap() {
            Event::Message {
                subscription,
                message: Ok(message),
            } => {
                assert_eq!(subscription, Some(2));
                assert_eq!(message.guid.as_deref(), Some("G5"));
            }
            other => panic!("{other:?}"),
        }
        let call = tokio::spawn(async move { client.request("send", json!({}), Duration::from_secs(5)).await });
        imsg.next_request().await;
        imsg.say(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"Internal error","data":"AppleScript failed: x"}}"#).await;
        match call.await.unwrap() {
            Err(CallError::Rpc(e)) => {
                assert_eq!(e.code, -32603);
                assert!(e.text().contains("AppleScript failed"));
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn timeouts_and_late_replies() {
    rt().block_on(async {
        let (started, mut imsg) = pair();
        let client = started.client.clone();
        let err = client
            .request("chats.list", json!({}), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { ref method, .. } if method == "chats.list"));
        imsg.next_request().await;
        // A late reply for the timed-out id is dropped; the next call still works.
        imsg.say(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).await;
        let next = tokio::spawn({
            let c = client.clone();
            async move {
                c.request("chats.list", json!({}), Duration::from_secs(5))
                    .await
            }
        });
        let req = imsg.next_request().await;
        assert_eq!(req["id"], 2, "ids are never reused");
        imsg.say(r#"{"jsonrpc":"2.0","id":2,"result":{"ok":true}}"#)
            .await;
        assert_eq!(next.await.unwrap().unwrap()["ok"], true);
    });
}

#[test]
fn end_of_stream_fails_every_pending_request_at_once() {
    rt().block_on(async {
        let (started, mut imsg) = pair();
        let client = started.client.clone();
        let calls: Vec<_> = (0..3)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(
                    async move { c.request("send", json!({}), Duration::from_secs(60)).await },
                )
            })
            .collect();
        for _ in 0..3 {
            imsg.next_request().await;
        }
        let began = std::time::Instant::now();
        drop(imsg);
        for call in calls {
            assert!(matches!(
                call.await.unwrap(),
                Err(CallError::ChildExited { .. })
            ));
        }
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "failed at once, not at the timeout"
        );
        assert!(client.dead().is_some());
        assert!(matches!(
            client
                .request("chats.list", json!({}), Duration::from_secs(1))
                .await,
            Err(CallError::ChildExited { .. })
        ));
    });
}

#[test]
fn permission_banner_fails_requests_immediately() {
    rt().block_on(async {
        let (started, mut imsg) = pair();
        let client = started.client.clone();
        let call = tokio::spawn({
            let c = client.clone();
            async move {
                c.request("chats.list", json!({}), Duration::from_secs(60))
                    .await
            }
        });
        imsg.next_request().await;
        imsg.say("\u{26a0}\u{fe0f}  Permission Error: Cannot access Messages database")
            .await;
        assert!(matches!(
            call.await.unwrap(),
            Err(CallError::PermissionDenied(_))
        ));
        assert!(matches!(
            client
                .request("chats.list", json!({}), Duration::from_secs(1))
                .await,
            Err(CallError::PermissionDenied(_))
        ));
    });
}

#[test]
fn spawned_child_missing_binary_is_a_spawn_error() {
    rt().block_on(async {
        let err = RpcClient::spawn(&SpawnConfig::rpc("/nonexistent/imsg", None))
            .err()
            .unwrap();
        assert_eq!(
            err,
            CallError::Spawn("imsg not found at /nonexistent/imsg".into())
        );
    });
}

/// The probe and the watcher decide "Full Disk Access" by this one rule: a child that exited
/// saying so counts, as does −32002 or the text in an error; a timeout does not.
#[test]
fn permission_failures_are_one_decision() {
    let exited = |stderr: &str| CallError::ChildExited {
        status: "exit status: 1".into(),
        stderr: stderr.into(),
    };
    assert!(exited("Error: authorization denied (Full Disk Access)").is_permission());
    assert!(!exited("disk I/O error (code: 10)").is_permission());
    assert!(CallError::PermissionDenied("x".into()).is_permission());
    let rpc = |code, message: &str| {
        CallError::Rpc(RpcError {
            code,
            message: message.into(),
            data: None,
        })
    };
    assert!(rpc(-32002, "database unavailable").is_permission());
    assert!(rpc(-32603, "requires Full Disk Access permission").is_permission());
    assert!(!rpc(-32603, "boom").is_permission());
    let timeout = CallError::Timeout {
        method: "watch.subscribe".into(),
        after: Duration::from_secs(1),
    };
    assert!(!timeout.is_permission());
}
