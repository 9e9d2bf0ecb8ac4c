//! `host-stub gateway`: start every configured channel, print routed messages as JSON lines,
//! optionally answer them with the echo agent, and stop cleanly on SIGINT or SIGTERM.

use std::sync::mpsc;
use std::sync::Arc;

use plugin_abi::contract::{ConfigReload, ErrorCode};
use plugin_abi::types::SendRequest;

use crate::channel::Channel;
use crate::failure::Failure;
use crate::loader;
use crate::settings::Settings;
use crate::signals;
use host_stub::sink::{Reply, Sink};

/// SIGHUP: re-read the config file and hand it to every channel (`config.reload`). A bad
/// file is reported and the running config stays in force.
fn reload(settings: &Settings, channels: &[Channel]) {
    let config = match crate::settings::read_json5(&settings.config_path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: config not reloaded: {}", e.message());
            return;
        }
    };
    for channel in channels {
        match channel.client.invoke(&ConfigReload(config.clone())) {
            Ok(outcome) => {
                let outcome = serde_json::to_string(&outcome).unwrap_or_default();
                tracing::info!(channel = %channel.id, %outcome, "config reloaded")
            }
            Err(e) if e.is(ErrorCode::ConfigInvalid) => {
                for line in &e.errors {
                    tracing::error!("{}: {line}", settings.config_path.display());
                }
                tracing::error!(channel = %channel.id, "config not reloaded; the previous one stays in force");
            }
            Err(e) => tracing::warn!(channel = %channel.id, "config not reloaded: {e}"),
        }
    }
}

pub fn run(settings: &Settings, echo: bool, log_level: &str) -> Result<(), Failure> {
    host_stub::private::check_state_dir(&settings.state_dir).map_err(Failure::runtime)?;
    let signals = signals::block();
    let libraries = loader::load_all(&settings.plugins_dir)?;
    let configured = settings
        .config
        .get("channels")
        .and_then(|c| c.as_object())
        .cloned()
        .unwrap_or_default();

    let (tx, rx) = mpsc::channel::<Reply>();
    let sink = Arc::new(Sink::new(
        Box::new(std::io::stdout()),
        &settings.state_dir.join("host-stub"),
        echo.then_some(tx),
    ));

    let mut channels: Vec<Channel> = Vec::new();
    for library in &libraries {
        let Ok(plugin) = &library.outcome else {
            continue;
        };
        if !configured.contains_key(&plugin.description.id) {
            tracing::info!(
                channel = %plugin.description.id,
                "plugin loaded but not configured under channels; not started"
            );
            continue;
        }
        let channel = Channel::create(plugin, Some(sink.clone()), &settings.config_path)?;
        match channel.start(
            &settings.config,
            &settings.config_path,
            &settings.state_dir,
            true,
            log_level,
        ) {
            Ok(report) => {
                tracing::info!(channel = %channel.id, accounts = report.accounts.len(), "channel started");
                channels.push(channel);
            }
            Err(e) => {
                for started in &channels {
                    started.stop();
                }
                return Err(e);
            }
        }
    }
    if channels.is_empty() {
        tracing::warn!(
            "no channel started: none of the loaded plugins is configured under channels"
        );
    }
    let channels = Arc::new(channels);
    // The CLI reaches this gateway through its control socket (issue 13).
    let socket = crate::control::socket_path(&settings.state_dir);
    let control = match crate::control::Server::start(&socket, channels.clone()) {
        Ok(server) => {
            tracing::info!(path = %socket.display(), "control socket ready");
            Some(server)
        }
        Err(crate::control::NotServing::OtherGateway(pid)) => {
            tracing::warn!(
                "another gateway (pid {pid}) answers on {}; the CLI will talk to that one",
                socket.display()
            );
            None
        }
        Err(crate::control::NotServing::Io(e)) => {
            tracing::warn!("no control socket: {e}; CLI commands will run one-shot");
            None
        }
    };

    let replier = {
        let channels = channels.clone();
        std::thread::Builder::new()
            .name("echo-agent".into())
            .spawn(move || {
                for reply in rx {
                    let Some(channel) = channels.iter().find(|c| c.id == reply.channel) else {
                        continue;
                    };
                    let request = SendRequest {
                        account_id: Some(reply.account_id),
                        to: reply.to,
                        text: Some(reply.text),
                        ..Default::default()
                    };
                    match channel.client.send(&request) {
                        Ok(receipt) if receipt.ok => {
                            tracing::debug!(chunks = receipt.chunks, "echo reply sent")
                        }
                        // The parts' errors and the plugin's error may quote the target
                        // (a handle) or the text: the details go to debug only.
                        Ok(receipt) => {
                            tracing::warn!(
                                parts = receipt.parts.len(),
                                "echo reply not fully sent (details at debug level)"
                            );
                            tracing::debug!(parts = ?receipt.parts, "echo reply not fully sent")
                        }
                        Err(e) => {
                            tracing::warn!(code = %e.code, "echo reply failed (details at debug level)");
                            tracing::debug!("echo reply failed: {e}")
                        }
                    }
                }
            })
            .map_err(|e| Failure::runtime(format!("starting the echo agent: {e}")))?
    };

    loop {
        let signal = signals.wait();
        if signal != "SIGHUP" {
            tracing::info!("{signal} received; stopping");
            break;
        }
        reload(settings, &channels);
    }
    if let Some(control) = control {
        control.close();
    }
    for channel in channels.iter() {
        channel.stop();
    }
    // Closing the reply queue ends the echo agent once it has drained.
    if let Ok(mut replies) = sink.replies.lock() {
        replies.take();
    }
    let _ = replier.join();
    Ok(())
}
