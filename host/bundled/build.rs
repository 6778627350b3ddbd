//! Builds the bundled plugins (`plugins/*`) for wasm32-wasip2 and copies
//! each component into OUT_DIR, where `src/lib.rs` embeds it.

use std::path::PathBuf;

/// The bundled plugins' packages.
const PLUGINS: &[&str] = &[
    "wasmos-plugin-exec",
    "wasmos-plugin-constraints",
    "wasmos-plugin-health-http",
    "wasmos-plugin-health-tcp",
    "wasmos-plugin-health-command",
    "wasmos-plugin-labels",
    "wasmos-plugin-marathon",
    "wasmos-plugin-chronos",
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    wasmos_plugin_build::rerun_if_changed(&root, &["plugins", "sdk", "wit"]);
    let built = wasmos_plugin_build::build(&root, PLUGINS).unwrap_or_else(|e| panic!("{e}"));
    for path in built {
        let name = path.file_name().expect("a file name");
        std::fs::copy(&path, out_dir.join(name))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", path.display()));
    }
}
