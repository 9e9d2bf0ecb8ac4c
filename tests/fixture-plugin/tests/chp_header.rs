//! The committed header is what cbindgen (pinned) generates from libimessage's exports
//! (`imessage-plugin/src/plugin/ffi.rs`), and the fixture's copy of the template (`src/chp.rs`)
//! generates the very same header, so the header describes both libraries and a change to
//! one copy's declarations or docs without the other fails here.
//! `CHP_BLESS=1 cargo test -p fixture-plugin --test chp_header` rewrites it from libimessage.

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(source: &Path) -> String {
    let config_path = crate_dir().join("../../plugin-abi/include/cbindgen.toml");
    let config = cbindgen::Config::from_file(&config_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", config_path.display()));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(source)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen on {}: {e}", source.display()))
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn the_committed_header_matches_libimessage_and_the_template() {
    let header = crate_dir().join("../../plugin-abi/include/channel_plugin.h");
    let libimessage = crate_dir().join("../../imessage-plugin/src/plugin/ffi.rs");
    let generated = generate(&libimessage);
    assert!(
        generated.contains("chp_instance *chp_new(const char *options_json);"),
        "{} declares chp_new",
        libimessage.display()
    );
    if std::env::var_os("CHP_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("writing the header");
    }
    let committed = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
    assert!(
        committed == generated,
        "{} differs from what {} generates; rerun with CHP_BLESS=1 and commit it",
        header.display(),
        libimessage.display()
    );
    let template = crate_dir().join("src/chp.rs");
    assert!(
        generate(&template) == generated,
        "{} and {} must declare and document the chp_* functions identically",
        template.display(),
        libimessage.display()
    );
}
