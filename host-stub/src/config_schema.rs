//! `host-stub config schema [--channel ID]`: the JSON Schema of `channels.<ID>`, as the plugin
//! answers `config.schema` (spec/host-protocol.md §5), pretty-printed on stdout. Needs no
//! config and starts nothing.

use plugin_abi::contract::{Call, ConfigSchema};
use plugin_abi::host;
use serde_json::json;

use crate::channel::ValidatorHost;
use crate::failure::Failure;
use crate::loader;
use crate::settings::Settings;

pub fn print(settings: &Settings, channel: &str) -> Result<(), Failure> {
    let method = ConfigSchema::METHOD;
    let libraries = loader::load_all(&settings.plugins_dir)?;
    let plugin = loader::find(&libraries, channel, &settings.plugins_dir)?;
    if !plugin.description.offers(method) {
        return Err(Failure::runtime(format!(
            "{}: the {channel} plugin has no config schema (it does not list {method})",
            plugin.path.display()
        )));
    }
    let client = plugin
        .instantiate(host::callbacks(ValidatorHost))
        .map_err(|e| {
            Failure::runtime(format!(
                "{}: creating the plugin failed: {e}",
                plugin.path.display()
            ))
        })?;
    let schema = client
        .call(method.as_str(), &json!({}))
        .map_err(|e| Failure::runtime(format!("{method} failed: {e}")))?;
    let text = serde_json::to_string_pretty(&schema)
        .map_err(|e| Failure::runtime(format!("{method}: encoding the schema: {e}")))?;
    println!("{text}");
    Ok(())
}
