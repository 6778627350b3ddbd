//! Builds the plugins the end-to-end tests install (misbehaving ones, one
//! of another world version, the example template) from source, and tells
//! the tests where they are (`WASMOS_TEST_PLUGINS`). Nothing built here is
//! committed.

use std::path::PathBuf;

const PLUGINS: &[&str] = &[
    "wasmos-test-misbehave",
    "wasmos-test-misbehave-isolator",
    "wasmos-test-wrong-version",
    "wasmos-example-framework",
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("..");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    wasmos_plugin_build::rerun_if_changed(&root, &["tests/plugins", "examples", "sdk", "wit"]);
    let built = wasmos_plugin_build::build(&root, PLUGINS).unwrap_or_else(|e| panic!("{e}"));
    for path in built {
        let name = path.file_name().expect("a file name");
        std::fs::copy(&path, out_dir.join(name))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", path.display()));
    }
    // The WASI preview1 adapter that turns a wasi-libc module (the C
    // example) into a component, matching the host's wasmtime.
    let adapter = out_dir.join("wasi_snapshot_preview1.reactor.wasm");
    std::fs::write(
        &adapter,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", adapter.display()));
    println!("cargo:rustc-env=WASMOS_TEST_PLUGINS={}", out_dir.display());
}
