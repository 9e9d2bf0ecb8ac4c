//! The smallest third-party host: load `libimessage`, start it, print what it routes.
//!
//! Usage: minimal-host <path/to/libimessage.so> <config.json> [state-dir]
//! The config is plain JSON with the gateway's shape (`{"channels":{"imessage":{…}}}`).
//! Runs until stdin closes (press Ctrl-D), then stops the plugin cleanly.

use plugin_abi::host::{self, Host};
use plugin_abi::types::StartContext;

struct Printer;

impl Host for Printer {
    // Called on the plugin's threads: take the message and return quickly.
    fn deliver(&self, event: &str) -> Result<(), String> {
        println!("{event}");
        Ok(())
    }

    fn log(&self, record: &str) {
        eprintln!("{record}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: minimal-host <libimessage> <config.json> [state-dir]".into());
    }
    let plugin = host::load(args[1].as_ref())?;
    eprintln!(
        "loaded {} {}",
        plugin.description.id, plugin.description.version
    );
    let client = plugin.instantiate(host::callbacks(Printer))?;
    let config = serde_json::from_str(&std::fs::read_to_string(&args[2])?)?;
    let state_dir = args.get(3).cloned().unwrap_or_else(|| "./state".into());
    client.start(&StartContext {
        config,
        state_dir,
        watch: true,
        log_level: Some("info".into()),
        host: Default::default(),
    })?;
    // Block until stdin closes; the plugin works on its own threads meanwhile.
    std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    client.stop()?;
    Ok(())
}
