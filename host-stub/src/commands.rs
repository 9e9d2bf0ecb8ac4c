//! The CLI commands that act through a channel: `pairing list|approve|revoke`,
//! `channels status`, `message send`. When a gateway runs on the same state folder they go
//! through its control socket, so they see its live state and use its sender process;
//! otherwise each starts the channel without a watcher (one-shot), does its call, and stops
//! it. Output and exit status are the same either way.

use plugin_abi::types::{PluginError, SendReceipt, SendRequest, StatusReport, StatusRequest};
use serde_json::{json, Value};

use crate::channel::Channel;
use crate::control::{Gateway, Op};
use crate::failure::Failure;
use crate::loader;
use crate::settings::Settings;

/// Runs `op` in the running gateway when one answers, else `one_shot` on a fresh instance.
fn through<T: serde::de::DeserializeOwned>(
    settings: &Settings,
    channel_id: &str,
    log_level: &str,
    what: &str,
    op: Op,
    one_shot: impl FnOnce(&Channel) -> Result<T, PluginError>,
) -> Result<T, Failure> {
    match Gateway::find(&settings.state_dir)? {
        Some(gateway) => {
            tracing::debug!(pid = gateway.pid, "{what}: through the running gateway");
            let value = gateway
                .request(channel_id, op)
                .map_err(|e| call_failure(what, e))?;
            serde_json::from_value(value).map_err(|e| {
                Failure::runtime(format!("{what}: unexpected answer from the gateway: {e}"))
            })
        }
        None => with_channel(settings, channel_id, log_level, |c| {
            one_shot(c).map_err(|e| call_failure(what, e))
        }),
    }
}

/// A plugin `call`, through the running gateway when one answers.
fn call(
    settings: &Settings,
    channel_id: &str,
    log_level: &str,
    what: &str,
    method: &str,
    payload: Value,
) -> Result<Value, Failure> {
    let op = Op::Call {
        method: method.to_string(),
        payload: payload.clone(),
    };
    through(settings, channel_id, log_level, what, op, |c| {
        c.client.call(method, &payload)
    })
}

/// Runs `f` on a started, non-watching instance of `channel`'s plugin.
fn with_channel<T>(
    settings: &Settings,
    channel_id: &str,
    log_level: &str,
    f: impl FnOnce(&Channel) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let libraries = loader::load_all(&settings.plugins_dir)?;
    let plugin = loader::find(&libraries, channel_id, &settings.plugins_dir)?;
    run_on(settings, plugin, log_level, f)
}

/// Starts `plugin` without a watcher, runs `f`, and stops it again.
fn run_on<T>(
    settings: &Settings,
    plugin: &plugin_abi::host::LoadedPlugin,
    log_level: &str,
    f: impl FnOnce(&Channel) -> Result<T, Failure>,
) -> Result<T, Failure> {
    host_stub::private::check_state_dir(&settings.state_dir).map_err(Failure::runtime)?;
    let channel = Channel::create(plugin, None, &settings.config_path)?;
    channel.start(
        &settings.config,
        &settings.config_path,
        &settings.state_dir,
        false,
        log_level,
    )?;
    let outcome = f(&channel);
    channel.stop();
    outcome
}

fn call_failure(what: &str, e: PluginError) -> Failure {
    match e.code.as_str() {
        "unknown_method" => Failure::runtime(format!(
            "{what} is not supported by this plugin: {}",
            e.message
        )),
        // The plugin's refusals name their reason (disabled in config, not our message, too
        // late, the bridge is not running, …).
        "invalid_request" | "invalid_target" | "bad_payload" | "unsupported" | "disabled"
        | "not_own_message" | "too_late" | "rate_limited" => {
            Failure::runtime(format!("{what}: {}", e.message))
        }
        _ => Failure::runtime(format!("{what} failed: {e}")),
    }
}

pub fn pairing_list(
    settings: &Settings,
    channel: &str,
    account: Option<&str>,
    as_json: bool,
    log_level: &str,
) -> Result<(), Failure> {
    let requests = call(
        settings,
        channel,
        log_level,
        "pairing list",
        "pairing.list",
        json!({ "accountId": account }),
    )?;
    if as_json {
        println!("{requests}");
        return Ok(());
    }
    let rows = requests.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no pending pairing requests");
    }
    for r in rows {
        let field = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        println!(
            "{}\t{}\taccount {}\texpires {}",
            field("code"),
            field("senderId"),
            field("accountId"),
            field("expiresAt")
        );
    }
    Ok(())
}

pub fn pairing_approve(
    settings: &Settings,
    channel: &str,
    code: &str,
    account: Option<&str>,
    notify: bool,
    log_level: &str,
) -> Result<(), Failure> {
    let approved = call(
        settings,
        channel,
        log_level,
        "pairing approve",
        "pairing.approve",
        json!({ "code": code, "accountId": account, "notify": notify }),
    )?;
    let field = |k: &str| {
        approved
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    println!(
        "approved {} on account {}",
        field("senderId"),
        field("accountId")
    );
    Ok(())
}

pub fn pairing_revoke(
    settings: &Settings,
    channel: &str,
    sender: &str,
    account: Option<&str>,
    log_level: &str,
) -> Result<(), Failure> {
    let revoked = call(
        settings,
        channel,
        log_level,
        "pairing revoke",
        "pairing.revoke",
        json!({ "senderId": sender, "accountId": account }),
    )?;
    let field = |k: &str| {
        revoked
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if revoked.get("removed").and_then(Value::as_bool) == Some(true) {
        println!(
            "revoked {} on account {}",
            field("senderId"),
            field("accountId")
        );
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{} was not approved on account {}",
            field("senderId"),
            field("accountId")
        )))
    }
}

pub fn channels_status(
    settings: &Settings,
    probe: bool,
    account: Option<&str>,
    as_json: bool,
    log_level: &str,
) -> Result<(), Failure> {
    let gateway = Gateway::find(&settings.state_dir)?;
    let libraries = loader::load_all(&settings.plugins_dir)?;
    let configured: Vec<String> = settings
        .config
        .get("channels")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut all_ok = true;
    for id in &configured {
        let Ok(plugin) = loader::find(&libraries, id, &settings.plugins_dir) else {
            tracing::warn!("channel {id} is configured but no plugin provides it");
            all_ok = false;
            continue;
        };
        let request = StatusRequest {
            probe,
            account_id: account.map(str::to_string),
        };
        let report: StatusReport = match &gateway {
            Some(g) => g
                .request(id, Op::Status { request })
                .and_then(|v| {
                    serde_json::from_value(v)
                        .map_err(|e| PluginError::new("bad_payload", e.to_string()))
                })
                .map_err(|e| call_failure("channels status", e))?,
            None => run_on(settings, plugin, log_level, |channel| {
                channel
                    .client
                    .status(&request)
                    .map_err(|e| call_failure("channels status", e))
            })?,
        };
        for account in report.accounts {
            if probe && account.enabled && !account.probe.as_ref().is_some_and(|p| p.ok) {
                all_ok = false;
            }
            let mut row = serde_json::to_value(&account).unwrap_or(Value::Null);
            if let Some(obj) = row.as_object_mut() {
                obj.insert("channel".into(), Value::from(id.clone()));
            }
            rows.push(row);
        }
    }
    // Live state only comes from a running gateway; say plainly when there is none.
    let gateway_field = match &gateway {
        Some(g) => json!({"running": true, "pid": g.pid}),
        None => json!({"running": false}),
    };
    if as_json {
        println!("{}", json!({ "channels": rows, "gateway": gateway_field }));
    } else {
        match &gateway {
            Some(g) => println!("gateway running (pid {}): live state", g.pid),
            None => println!(
                "no gateway is running on {}: the states below are not live (start `host-stub gateway`)",
                settings.state_dir.display()
            ),
        }
        for row in &rows {
            let s = |k: &str| {
                row.get(k)
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default()
            };
            let mut line = format!(
                "{}/{}\tenabled={}\tstate={}",
                s("channel"),
                s("accountId"),
                s("enabled"),
                s("state")
            );
            if let Some(p) = row.get("probe") {
                let ok = p.get("ok").and_then(Value::as_bool).unwrap_or(false);
                if ok {
                    line.push_str("\tprobe ok");
                } else {
                    line.push_str(&format!(
                        "\tprobe FAILED {}: {}",
                        p.get("code").and_then(Value::as_str).unwrap_or("?"),
                        p.get("error").and_then(Value::as_str).unwrap_or("")
                    ));
                }
                if let Some(ms) = p.get("elapsedMs") {
                    line.push_str(&format!(" ({ms} ms)"));
                }
            }
            println!("{line}");
        }
        if rows.is_empty() {
            println!("no channel accounts configured");
        }
    }
    if probe && !all_ok {
        return Err(Failure::runtime(
            "at least one enabled account failed its probe",
        ));
    }
    Ok(())
}

pub struct SendArgs<'a> {
    pub channel: &'a str,
    pub target: &'a str,
    pub text: Option<&'a str>,
    pub media: &'a [String],
    pub reply_to: Option<&'a str>,
    pub account: Option<&'a str>,
    pub chunk_mode: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub as_json: bool,
}

pub fn message_send(
    settings: &Settings,
    args: SendArgs<'_>,
    log_level: &str,
) -> Result<(), Failure> {
    let request = SendRequest {
        account_id: args.account.map(str::to_string),
        to: args.target.to_string(),
        text: args.text.map(str::to_string),
        media: args.media.to_vec(),
        reply_to_id: args.reply_to.map(str::to_string),
        chunk_mode: args.chunk_mode.map(str::to_string),
        idempotency_key: args.idempotency_key.map(str::to_string),
        ..Default::default()
    };
    let receipt: SendReceipt = through(
        settings,
        args.channel,
        log_level,
        &format!("sending to {}", args.target),
        Op::Send {
            request: request.clone(),
        },
        |c| c.client.send(&request),
    )?;
    print_receipt(&receipt, args.as_json)
}

/// A receipt on stdout (`--json`: as is); exit 1 unless every part was sent.
fn print_receipt(receipt: &SendReceipt, as_json: bool) -> Result<(), Failure> {
    if as_json {
        println!("{}", serde_json::to_string(&receipt).unwrap_or_default());
    } else {
        for (i, part) in receipt.parts.iter().enumerate() {
            println!(
                "part {}: {} {}{}",
                i + 1,
                part.kind,
                part.outcome,
                part.message_id
                    .as_deref()
                    .map(|id| format!(" ({id})"))
                    .unwrap_or_default()
            );
        }
        if receipt.replayed {
            println!("replayed: parts already sent under this idempotency key were not sent again");
        }
    }
    if !receipt.ok {
        let why: Vec<String> = receipt
            .parts
            .iter()
            .filter(|p| p.outcome != "sent")
            .map(|p| {
                format!(
                    "{} {}: {}",
                    p.kind,
                    p.outcome,
                    p.error.as_deref().unwrap_or("")
                )
            })
            .collect();
        return Err(Failure::runtime(format!(
            "not every part was sent: {}",
            why.join("; ")
        )));
    }
    Ok(())
}

/// `message react|edit|unsend`: one message action through the channel's `call`.
pub struct ActionArgs<'a> {
    pub channel: &'a str,
    /// `message.react`, `message.edit` or `message.unsend`.
    pub method: &'a str,
    pub payload: Value,
    pub as_json: bool,
}

pub fn message_action(
    settings: &Settings,
    args: ActionArgs<'_>,
    log_level: &str,
) -> Result<(), Failure> {
    let verb = args.method.trim_start_matches("message.");
    let id = args.payload["messageId"].as_str().unwrap_or("").to_string();
    let result = call(
        settings,
        args.channel,
        log_level,
        &format!("{verb} {id}"),
        args.method,
        args.payload,
    )?;
    if args.as_json {
        println!("{result}");
        return Ok(());
    }
    let line = match args.method {
        "message.react" => {
            let what = result
                .get("reaction")
                .or_else(|| result.get("emoji"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| result.get("reactions").map(|r| r.to_string()))
                .unwrap_or_default();
            if result["removed"] == json!(true) {
                format!("removed {what} from {id}")
            } else {
                format!("reacted {what} to {id}")
            }
        }
        "message.edit" => format!("edited {id} (edit {})", result["edits"]),
        _ => format!("unsent {id}"),
    };
    println!("{line}");
    Ok(())
}

/// `message reconcile`: one reconciliation pass over an idempotency key (`send.reconcile`).
pub fn message_reconcile(
    settings: &Settings,
    channel: &str,
    key: &str,
    account: Option<&str>,
    as_json: bool,
    log_level: &str,
) -> Result<(), Failure> {
    let value = call(
        settings,
        channel,
        log_level,
        &format!("reconciling {key}"),
        "send.reconcile",
        json!({"accountId": account, "idempotencyKey": key}),
    )?;
    let receipt: SendReceipt = serde_json::from_value(value)
        .map_err(|e| Failure::runtime(format!("reconciling {key}: unexpected answer: {e}")))?;
    print_receipt(&receipt, as_json)
}
