//! host-stub: a small, real gateway for channel plugins.
//!
//! It loads every plugin library in its plugins folder through `plugin-abi`, reads a JSON5
//! config, starts each configured channel, prints each routed message as one JSON line on
//! stdout (logs go to stderr), and can answer with a built-in echo agent so a round trip runs
//! without a language model. `host-stub --help` lists the commands; README.md has the exit
//! statuses and the gateway's output.

mod channel;
mod commands;
mod config_write;
mod control;
mod failure;
mod gateway;
mod loader;
mod serve;
mod settings;
mod signals;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use failure::Failure;
use settings::{GlobalArgs, Settings};

#[derive(Parser)]
#[command(
    name = "host-stub",
    version,
    about = "A minimal gateway that loads channel plugins"
)]
struct Cli {
    /// The gateway config (JSON5) [default: $HOST_STUB_CONFIG, else ./gateway.json5]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Folder scanned for plugin libraries [default: config plugins.dir, else ./plugins]
    #[arg(long, global = true, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Where plugins keep state [default: config stateDir, else $HOST_STUB_STATE_DIR, else ~/.host-stub]
    #[arg(long = "state-dir", global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// stderr log level: error, warn, info, debug, trace [default: info, or RUST_LOG]
    #[arg(long = "log-level", global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReplyMode {
    None,
    Echo,
}

#[derive(Subcommand)]
enum Command {
    /// Start every configured channel and print routed messages until SIGINT/SIGTERM
    Gateway {
        #[arg(long, value_enum, default_value = "none")]
        reply: ReplyMode,
    },
    /// Pending DM pairing requests
    Pairing {
        #[command(subcommand)]
        action: PairingAction,
    },
    /// Channel accounts and their health
    Channels {
        #[command(subcommand)]
        action: ChannelsAction,
    },
    /// Send through a channel
    Message {
        #[command(subcommand)]
        action: MessageAction,
    },
    /// The plugin libraries in the plugins folder
    Plugins {
        #[command(subcommand)]
        action: PluginsAction,
    },
    /// One channel over JSON-RPC on stdin/stdout (spec/host-protocol.md §4)
    Serve {
        #[arg(long, default_value = "imessage")]
        channel: String,
        /// Instance options as JSON: {"ackTimeoutMs": 30000, "maxQueued": 10000}
        #[arg(long, value_name = "JSON")]
        options: Option<String>,
    },
}

#[derive(Subcommand)]
enum PairingAction {
    /// List pending requests
    List {
        channel: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request by its code
    Approve {
        channel: String,
        code: String,
        #[arg(long)]
        account: Option<String>,
        /// Tell the sender they were approved
        #[arg(long)]
        notify: bool,
    },
    /// Remove a sender that pairing approved
    Revoke {
        channel: String,
        sender: String,
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Subcommand)]
enum ChannelsAction {
    /// Configured accounts; with --probe, check each one end to end
    Status {
        #[arg(long)]
        probe: bool,
        /// Only this account
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum MessageAction {
    /// Send one message (through the running gateway when one answers)
    Send {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        text: Option<String>,
        #[arg(long = "media", value_name = "PATH")]
        media: Vec<String>,
        #[arg(long = "reply-to", value_name = "ID")]
        reply_to: Option<String>,
        #[arg(long)]
        account: Option<String>,
        /// Override the account's chunkMode for this message
        #[arg(long = "chunk-mode", value_parser = ["length", "newline"])]
        chunk_mode: Option<String>,
        /// Makes a retry safe: a repeat with the same key never sends a part twice
        #[arg(long = "idempotency-key", value_name = "KEY")]
        idempotency_key: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Add or remove a tapback on a message
    React {
        #[command(flatten)]
        on: MessageRef,
        /// love, like, dislike, laugh, emphasize or question (or an alias such as 👍, +1)
        #[arg(long, conflicts_with = "emoji")]
        reaction: Option<String>,
        /// An emoji: a classic one is sent as its kind, any other as a custom tapback
        #[arg(long)]
        emoji: Option<String>,
        /// Remove the tapback (every kind when none is named)
        #[arg(long)]
        remove: bool,
    },
    /// Edit a message this account sent (iMessage: within 15 minutes, at most 5 times)
    Edit {
        #[command(flatten)]
        on: MessageRef,
        #[arg(long)]
        text: String,
    },
    /// Settle the parts of an idempotent send whose outcome was unknown, by asking imsg
    Reconcile {
        #[arg(long)]
        channel: String,
        #[arg(long = "idempotency-key", value_name = "KEY")]
        idempotency_key: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take back a message this account sent (iMessage: within 2 minutes)
    Unsend {
        #[command(flatten)]
        on: MessageRef,
    },
}

/// The message a `react`, `edit` or `unsend` acts on.
#[derive(clap::Args)]
struct MessageRef {
    #[arg(long)]
    channel: String,
    #[arg(long)]
    target: String,
    #[arg(long = "message-id", value_name = "ID")]
    message_id: String,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    json: bool,
}

impl MessageRef {
    /// The `call` request's common members.
    fn message(&self) -> plugin_abi::contract::MessageRef {
        plugin_abi::contract::MessageRef {
            account_id: self.account.clone(),
            to: self.target.clone(),
            message_id: self.message_id.clone(),
            part_index: None,
        }
    }
}

#[derive(Subcommand)]
enum PluginsAction {
    /// Each library found, and whether it loaded
    List {
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(level: Option<&str>) -> String {
    let directive = level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // The plugin only needs the most verbose level; a directive list passes its last level.
    directive
        .rsplit([',', '='])
        .next()
        .unwrap_or("info")
        .to_string()
}

fn run(cli: Cli, log_level: &str) -> Result<(), Failure> {
    let globals = GlobalArgs {
        config: cli.config.as_deref(),
        plugins: cli.plugins.as_deref(),
        state_dir: cli.state_dir.as_deref(),
    };
    let settings =
        |required: bool| -> Result<Settings, Failure> { settings::resolve(globals, required) };
    match cli.command {
        Command::Gateway { reply } => gateway::run(
            &settings(true)?,
            matches!(reply, ReplyMode::Echo),
            log_level,
        ),
        Command::Serve { channel, options } => {
            serve::run(&settings(false)?, &channel, options.as_deref())
        }
        Command::Plugins {
            action: PluginsAction::List { json },
        } => {
            let s = settings(false)?;
            let libraries = loader::load_all(&s.plugins_dir)?;
            if json {
                println!("{}", loader::list_json(&libraries));
            } else {
                print!("{}", loader::list_text(&libraries));
            }
            Ok(())
        }
        Command::Pairing {
            action:
                PairingAction::List {
                    channel,
                    account,
                    json,
                },
        } => commands::pairing_list(
            &settings(true)?,
            &channel,
            account.as_deref(),
            json,
            log_level,
        ),
        Command::Pairing {
            action:
                PairingAction::Approve {
                    channel,
                    code,
                    account,
                    notify,
                },
        } => commands::pairing_approve(
            &settings(true)?,
            &channel,
            &code,
            account.as_deref(),
            notify,
            log_level,
        ),
        Command::Pairing {
            action:
                PairingAction::Revoke {
                    channel,
                    sender,
                    account,
                },
        } => commands::pairing_revoke(
            &settings(true)?,
            &channel,
            &sender,
            account.as_deref(),
            log_level,
        ),
        Command::Channels {
            action:
                ChannelsAction::Status {
                    probe,
                    account,
                    json,
                },
        } => {
            commands::channels_status(&settings(true)?, probe, account.as_deref(), json, log_level)
        }
        Command::Message {
            action:
                MessageAction::Send {
                    channel,
                    target,
                    text,
                    media,
                    reply_to,
                    account,
                    chunk_mode,
                    idempotency_key,
                    json,
                },
        } => commands::message_send(
            &settings(true)?,
            commands::SendArgs {
                channel: &channel,
                target: &target,
                text: text.as_deref(),
                media: &media,
                reply_to: reply_to.as_deref(),
                account: account.as_deref(),
                chunk_mode: chunk_mode.as_deref(),
                idempotency_key: idempotency_key.as_deref(),
                as_json: json,
            },
            log_level,
        ),
        Command::Message {
            action:
                MessageAction::Reconcile {
                    channel,
                    idempotency_key,
                    account,
                    json,
                },
        } => commands::message_reconcile(
            &settings(true)?,
            &channel,
            &idempotency_key,
            account.as_deref(),
            json,
            log_level,
        ),
        Command::Message { action } => {
            use plugin_abi::contract::{MessageEdit, MessageReact, MessageUnsend};
            let (on, action) = match action {
                MessageAction::Send { .. } | MessageAction::Reconcile { .. } => {
                    unreachable!("matched above")
                }
                MessageAction::React {
                    on,
                    reaction,
                    emoji,
                    remove,
                } => {
                    if reaction.is_none() && emoji.is_none() && !remove {
                        return Err(Failure::usage(
                            "message react needs --reaction KIND or --emoji E (or --remove)",
                        ));
                    }
                    let message = on.message();
                    let react = MessageReact {
                        message,
                        reaction,
                        emoji,
                        remove,
                    };
                    (on, commands::Action::React(react))
                }
                MessageAction::Edit { on, text } => {
                    let message = on.message();
                    (on, commands::Action::Edit(MessageEdit { message, text }))
                }
                MessageAction::Unsend { on } => {
                    let message = on.message();
                    (on, commands::Action::Unsend(MessageUnsend { message }))
                }
            };
            commands::message_action(
                &settings(true)?,
                commands::ActionArgs {
                    channel: &on.channel,
                    action,
                    as_json: on.json,
                },
                log_level,
            )
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let log_level = init_logging(cli.log_level.as_deref());
    if let Err(failure) = run(cli, &log_level) {
        eprintln!("host-stub: {}", failure.message());
        std::process::exit(failure.exit_code());
    }
}
