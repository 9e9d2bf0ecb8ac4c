//! The one place that implements the ABI: the exported root module. Every entry point is
//! guarded against panics (see `plugin_abi::guard`); domain code never sees abi_stable types.

use abi_stable::export_root_module;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RString};
use plugin_abi::guard::{guarded, Guarded, Host};
use plugin_abi::{ChannelPlugin_TO, HostBox, PluginBox, PluginMod, PluginModRef};

use crate::plugin::ImessagePlugin;

#[export_root_module]
fn root_module() -> PluginModRef {
    PluginMod { describe, new }.leak_into_prefix()
}

extern "C" fn describe() -> RString {
    let text = guarded("describe", || {
        serde_json::to_string(&crate::plugin::description())
            .map_err(|e| plugin_abi::types::PluginError::new("internal", e.to_string()))
    });
    match text {
        Ok(t) => t.into(),
        Err(e) => e.to_wire().into(),
    }
}

extern "C" fn new(callbacks: HostBox) -> RResult<PluginBox, RString> {
    match guarded("new", || Ok(ImessagePlugin::new(Host::new(callbacks)))) {
        Ok(plugin) => ROk(ChannelPlugin_TO::from_value(Guarded(plugin), TD_Opaque)),
        Err(e) => RErr(e.to_wire().into()),
    }
}
