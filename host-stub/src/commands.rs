//! The CLI commands that act through a channel: `pairing list|approve|revoke`,
//! `channels status`, `message send`. When a gateway runs on the same state folder they go
//! through its control socket, so they see its live state and use its sender process;
//! otherwise each starts the channel without a watcher (one-shot), does its call, and stops
//! it. Output and exit status are the same either way.

use plugin_abi::contract::{
    Call, ErrorCode, MessageEdit, MessageReact, MessageRef, MessageUnsend, PairingApprove,
    PairingList, PairingRevoke, SendReconcile,
};
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

/// A plugin `call`, through the running gateway when one answers: the answer as the plugin
/// wrote it (what `--json` prints) and as its typed reply.
fn call<C: Call>(
    settings: &Settings,
    channel_id: &str,
    log_level: &str,
    what: &str,
    request: &C,
) -> Result<(Value, C::Reply), Failure> {
    let payload = serde_json::to_value(request)
        .map_err(|e| Failure::runtime(format!("{what}: encoding the request: {e}")))?;
    let method = C::METHOD.as_str();
    let op = Op::Call {
        method: method.to_string(),
        payload: payload.clone(),
    };
    let answer: Value = through(settings, channel_id, log_level, what, op, |c| {
        c.client.call(method, &payload)
    })?;
    let reply = serde_json::from_value(answer.clone())
        .map_err(|e| Failure::runtime(format!("{what}: unexpected answer from {method}: {e}")))?;
    Ok((answer, reply))
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
    use ErrorCode as C;
    match e.code() {
        Some(C::UnknownMethod) => Failure::runtime(format!(
            "{what} is not supported by this plugin: {}",
            e.message
        )),
        // The plugin's refusals name their reason (disabled in config, not our message, too
        // late, the bridge is not running, …).
        Some(
            C::InvalidRequest
            | C::InvalidTarget
            | C::BadPayload
            | C::Unsupported
            | C::Disabled
            | C::NotOwnMessage
            | C::TooLate
            | C::RateLimited,
        ) => Failure::runtime(format!("{what}: {}", e.message)),
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
    let request = PairingList {
        account_id: account.map(str::to_string),
    };
    let (answer, requests) = call(settings, channel, log_level, "pairing list", &request)?;
    if as_json {
        println!("{answer}");
        return Ok(());
    }
    if requests.0.is_empty() {
        println!("no pending pairing requests");
    }
    for r in requests.0 {
        println!(
            "{}\t{}\taccount {}\texpires {}",
            r.code, r.sender_id, r.account_id, r.expires_at
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
    let request = PairingApprove {
        code: code.to_string(),
        account_id: account.map(str::to_string),
        notify,
    };
    let (_, approved) = call(settings, channel, log_level, "pairing approve", &request)?;
    println!(
        "approved {} on account {}",
        approved.sender_id, approved.account_id
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
    let request = PairingRevoke {
        sender_id: sender.to_string(),
        account_id: account.map(str::to_string),
    };
    let (_, revoked) = call(settings, channel, log_level, "pairing revoke", &request)?;
    if revoked.removed {
        println!(
            "revoked {} on account {}",
            revoked.sender_id, revoked.account_id
        );
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "{} was not approved on account {}",
            revoked.sender_id, revoked.account_id
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
                        .map_err(|e| PluginError::new(ErrorCode::BadPayload, e.to_string()))
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
pub enum Action {
    React(MessageReact),
    Edit(MessageEdit),
    Unsend(MessageUnsend),
}

impl Action {
    fn message(&self) -> &MessageRef {
        match self {
            Action::React(r) => &r.message,
            Action::Edit(e) => &e.message,
            Action::Unsend(u) => &u.message,
        }
    }
}

pub struct ActionArgs<'a> {
    pub channel: &'a str,
    pub action: Action,
    pub as_json: bool,
}

pub fn message_action(
    settings: &Settings,
    args: ActionArgs<'_>,
    log_level: &str,
) -> Result<(), Failure> {
    let id = args.action.message().message_id.clone();
    let (channel, log) = (args.channel, log_level);
    let (answer, line) = match &args.action {
        Action::React(request) => {
            let (answer, r) = call(settings, channel, log, &format!("react {id}"), request)?;
            let what = r
                .reaction
                .or(r.emoji)
                .or_else(|| r.reactions.map(|all| json!(all).to_string()))
                .unwrap_or_default();
            let line = if r.removed {
                format!("removed {what} from {id}")
            } else {
                format!("reacted {what} to {id}")
            };
            (answer, line)
        }
        Action::Edit(request) => {
            let (answer, r) = call(settings, channel, log, &format!("edit {id}"), request)?;
            (answer, format!("edited {id} (edit {})", r.edits))
        }
        Action::Unsend(request) => {
            let (answer, _) = call(settings, channel, log, &format!("unsend {id}"), request)?;
            (answer, format!("unsent {id}"))
        }
    };
    if args.as_json {
        println!("{answer}");
    } else {
        println!("{line}");
    }
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
    let request = SendReconcile {
        account_id: account.map(str::to_string),
        idempotency_key: key.to_string(),
    };
    let what = format!("reconciling {key}");
    let (_, receipt): (Value, SendReceipt) = call(settings, channel, log_level, &what, &request)?;
    print_receipt(&receipt, as_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: &str) -> String {
        let e = PluginError::new(code, "iMessage edit is only possible within 15 minutes");
        call_failure("edit S1", e).message().to_string()
    }

    #[test]
    fn refusals_read_as_their_reason_and_other_errors_as_failures() {
        // A refusal names its reason after what was asked.
        for code in [
            ErrorCode::TooLate,
            ErrorCode::InvalidTarget,
            ErrorCode::Disabled,
        ] {
            assert_eq!(
                failure(code.as_str()),
                "edit S1: iMessage edit is only possible within 15 minutes",
                "{code}"
            );
        }
        assert!(failure("unknown_method").starts_with("edit S1 is not supported by this plugin"));
        // A breakage, or a code from a newer plugin, is a failure of the command.
        for code in ["internal", "outcome_unknown", "from_a_newer_plugin"] {
            assert!(failure(code).starts_with("edit S1 failed: "), "{code}");
        }
    }
}
