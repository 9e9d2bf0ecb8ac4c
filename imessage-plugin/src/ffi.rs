//! The one place that implements the ABI: the exported root module. Every entry point is
//! guarded against panics by `plugin_abi::guard`; domain code never sees abi_stable types.

plugin_abi::export_plugin!(
    crate::plugin::description,
    crate::plugin::ImessagePlugin::new
);
