//! The committed header is what cbindgen (pinned) generates from `src/chp.rs`.
//! `CHP_BLESS=1 cargo test -p fixture-plugin --test chp_header` rewrites it.

use std::path::PathBuf;

fn generate() -> String {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config_path = crate_dir.join("../../plugin-abi/include/cbindgen.toml");
    let config = cbindgen::Config::from_file(&config_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", config_path.display()));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/chp.rs"))
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn the_committed_header_matches_the_source() {
    let header =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugin-abi/include/channel_plugin.h");
    let generated = generate();
    if std::env::var_os("CHP_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("writing the header");
    }
    let committed = std::fs::read_to_string(&header)
        .unwrap_or_else(|e| panic!("reading {}: {e}", header.display()));
    assert!(
        committed == generated,
        "{} differs from what src/chp.rs generates; rerun with CHP_BLESS=1 and commit it",
        header.display()
    );
}
