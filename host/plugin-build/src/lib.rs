//! Builds plugin crates for `wasm32-wasip2` from a build script, with a
//! nested cargo in its own target directory (so it never waits on the
//! outer build's lock, and stays incremental across builds).
//!
//! Used by `host/bundled` (the plugins the binary carries) and `tests`
//! (the misbehaving and example plugins the tests install).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `packages` of the workspace at `root` with the `plugin` profile;
/// returns each package's component, in order.
pub fn build(root: &Path, packages: &[&str]) -> Result<Vec<PathBuf>, String> {
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--target", "wasm32-wasip2", "--profile", "plugin"])
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    scrub_env(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build plugins: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("wasm32-wasip2")
            && (stderr.contains("not installed")
                || stderr.contains("can't find crate for `core`")
                || stderr.contains("can't find crate for `std`"))
        {
            return Err(format!(
                "\n\nThe plugins build for wasm32-wasip2, and that target is not installed.\nRun `rustup target add wasm32-wasip2` (./dev up and ./dev test do it for you), then build again.\n\n{stderr}"
            ));
        }
        return Err(format!(
            "\n\nbuilding plugins {packages:?} failed:\n{stderr}"
        ));
    }
    Ok(packages
        .iter()
        .map(|p| {
            target_dir
                .join("wasm32-wasip2/plugin")
                .join(format!("{}.wasm", p.replace('-', "_")))
        })
        .collect())
}

/// Tells cargo to build again when plugin sources change.
pub fn rerun_if_changed(root: &Path, dirs: &[&str]) {
    for dir in dirs {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
}

/// Removes what the outer build set for its own compilation, so the nested
/// build compiles for its own target with its own flags (and not through
/// clippy-driver when the outer build is `cargo clippy`).
fn scrub_env(cmd: &mut Command) {
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let drop = k.starts_with("CARGO_CFG_")
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_FEATURE_")
            || matches!(
                k.as_str(),
                "CARGO_TARGET_DIR"
                    | "CARGO_BUILD_TARGET"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTDOCFLAGS"
                    | "RUSTFLAGS"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_WRAPPER"
                    | "CARGO_MAKEFLAGS"
                    | "MAKEFLAGS"
                    | "MFLAGS"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_CRATE_NAME"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTC_LINKER"
            );
        if drop {
            cmd.env_remove(&k);
        }
    }
}
