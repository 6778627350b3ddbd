//! `wasmos plugin new` and `wasmos plugin build`: a plugin project in Rust,
//! Python or C that builds with one command and installs with the next.
//!
//! The project carries what it builds against — the WIT contract and the
//! language's Wasmos library (the Rust SDK, `sdk/python`, `sdk/c`) — copied
//! from this binary, so it builds anywhere without a checkout of Wasmos
//! and keeps building against the contract it was made for.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use wasmos_core::plugin::{PluginKind, PluginManifest, WORLD_VERSION};

/// The plugin's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    C,
}

/// The plugin's world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Framework,
    Placement,
    Isolator,
    HealthCheck,
}

impl Kind {
    fn plugin_kind(self) -> PluginKind {
        match self {
            Kind::Framework => PluginKind::Framework,
            Kind::Placement => PluginKind::Placement,
            Kind::Isolator => PluginKind::Isolator,
            Kind::HealthCheck => PluginKind::HealthCheck,
        }
    }
}

/// The contract, as this binary serves it.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("framework.wit", include_str!("../../../wit/framework.wit")),
    ("placement.wit", include_str!("../../../wit/placement.wit")),
    ("isolator.wit", include_str!("../../../wit/isolator.wit")),
    ("health.wit", include_str!("../../../wit/health.wit")),
];

const RUST_SDK: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../../../sdk/src/lib.rs")),
    (
        "framework.rs",
        include_str!("../../../sdk/src/framework.rs"),
    ),
    ("health.rs", include_str!("../../../sdk/src/health.rs")),
    ("http.rs", include_str!("../../../sdk/src/http.rs")),
    ("isolator.rs", include_str!("../../../sdk/src/isolator.rs")),
    ("kv.rs", include_str!("../../../sdk/src/kv.rs")),
    ("log.rs", include_str!("../../../sdk/src/log.rs")),
    ("offers.rs", include_str!("../../../sdk/src/offers.rs")),
    (
        "placement.rs",
        include_str!("../../../sdk/src/placement.rs"),
    ),
];

const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../sdk/python/wasmos/__init__.py"),
    ),
    ("log.py", include_str!("../../../sdk/python/wasmos/log.py")),
    (
        "framework.py",
        include_str!("../../../sdk/python/wasmos/framework.py"),
    ),
    ("kv.py", include_str!("../../../sdk/python/wasmos/kv.py")),
    (
        "http.py",
        include_str!("../../../sdk/python/wasmos/http.py"),
    ),
    (
        "offers.py",
        include_str!("../../../sdk/python/wasmos/offers.py"),
    ),
    (
        "placement.py",
        include_str!("../../../sdk/python/wasmos/placement.py"),
    ),
    (
        "isolator.py",
        include_str!("../../../sdk/python/wasmos/isolator.py"),
    ),
    (
        "health.py",
        include_str!("../../../sdk/python/wasmos/health.py"),
    ),
];

const PYTHON_FAKES: &str = include_str!("../../../sdk/python/tests/fakes.py");

const C_SDK: &[(&str, &str)] = &[
    ("wasmos.h", include_str!("../../../sdk/c/wasmos.h")),
    ("internal.h", include_str!("../../../sdk/c/internal.h")),
    ("common.c", include_str!("../../../sdk/c/common.c")),
    ("health.c", include_str!("../../../sdk/c/health.c")),
    ("isolator.c", include_str!("../../../sdk/c/isolator.c")),
    ("placement.c", include_str!("../../../sdk/c/placement.c")),
    ("framework.c", include_str!("../../../sdk/c/framework.c")),
    ("build.sh", include_str!("../../../sdk/c/build.sh")),
];

/// The starting code of a plugin of `kind` in `lang`, with `{{name}}`
/// where the plugin's name goes.
fn template(lang: Lang, kind: Kind) -> (&'static str, Option<&'static str>) {
    match (lang, kind) {
        (Lang::Rust, Kind::Framework) => (
            include_str!("../../../examples/framework-template/src/lib.rs"),
            None,
        ),
        (Lang::Rust, Kind::Placement) => (
            include_str!("../../../examples/placement-template/src/lib.rs"),
            None,
        ),
        (Lang::Rust, Kind::Isolator) => (
            include_str!("../../../examples/isolator-template/src/lib.rs"),
            None,
        ),
        (Lang::Rust, Kind::HealthCheck) => (
            include_str!("../../../examples/health-check-template/src/lib.rs"),
            None,
        ),
        (Lang::Python, Kind::Framework) => (
            include_str!("../templates/python/framework.py"),
            Some(include_str!("../templates/python/test_framework.py")),
        ),
        (Lang::Python, Kind::Placement) => (
            include_str!("../templates/python/placement.py"),
            Some(include_str!("../templates/python/test_placement.py")),
        ),
        (Lang::Python, Kind::Isolator) => (
            include_str!("../templates/python/isolator.py"),
            Some(include_str!("../templates/python/test_isolator.py")),
        ),
        (Lang::Python, Kind::HealthCheck) => (
            include_str!("../templates/python/health-check.py"),
            Some(include_str!("../templates/python/test_health-check.py")),
        ),
        (Lang::C, Kind::Framework) => (include_str!("../templates/c/framework.c"), None),
        (Lang::C, Kind::Placement) => (include_str!("../templates/c/placement.c"), None),
        (Lang::C, Kind::Isolator) => (include_str!("../templates/c/isolator.c"), None),
        (Lang::C, Kind::HealthCheck) => (include_str!("../templates/c/health-check.c"), None),
    }
}

/// The manifest a new plugin starts with.
fn manifest(name: &str, kind: Kind, lang: Lang) -> PluginManifest {
    let lang_name = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::C => "C",
    };
    let (what, config, operators): (&str, &[(&str, &str)], &[&str]) = match kind {
        Kind::Framework => (
            "a framework: POST /run launches a task that echoes `greeting`",
            &[("greeting", "hello from a Wasm framework")],
            &[],
        ),
        Kind::Placement => (
            "a placement plugin: [field, AVOID, value] keeps tasks off agents with that value",
            &[],
            &["AVOID"],
        ),
        Kind::Isolator => (
            "an isolator: caps open files for every task at `limit`",
            &[("limit", "4096")],
            &[],
        ),
        Kind::HealthCheck => (
            "a health check: healthy when GET <path> answers 2xx with `expect` in its body",
            &[],
            &[],
        ),
    };
    PluginManifest {
        name: name.to_string(),
        version: "0.1.0".into(),
        kind: kind.plugin_kind(),
        world_version: WORLD_VERSION.into(),
        description: format!("{what} (written in {lang_name})."),
        capabilities: Vec::new(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        http_prefixes: Vec::new(),
        event_streams: Vec::new(),
        operators: operators.iter().map(|o| o.to_string()).collect(),
        tick_ms: None,
    }
}

/// The files of a new plugin project, by path relative to its directory.
pub fn files(name: &str, kind: Kind, lang: Lang) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let m = manifest(name, kind, lang);
    m.validate()
        .map_err(|e| anyhow::anyhow!("{e}; e.g. `wasmos plugin new my-plugin ...`"))?;
    let (code, test) = template(lang, kind);
    let world = kind.plugin_kind().to_string();
    let fill = |s: &str| {
        s.replace("{{name}}", name)
            .replace("{{world}}", &world)
            .replace("{{crate}}", &name.replace('-', "_"))
    };
    let mut out: Vec<(PathBuf, String)> = vec![(
        "plugin.toml".into(),
        toml::to_string(&m).context("writing plugin.toml")?,
    )];
    for (file, text) in WIT {
        out.push((Path::new("wasmos/wit").join(file), text.to_string()));
    }
    match lang {
        Lang::Rust => {
            // The template's own names stay in its prose; the plugin's is
            // in plugin.toml.
            let code = code
                .replace(
                    "Copy this directory to start your own.",
                    "Made by `wasmos plugin new`.",
                )
                .lines()
                .map(|l| {
                    if l.starts_with("//! Build: ") {
                        "//! Build: `wasmos plugin build .` (or `./build.sh`)."
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n";
            out.push(("src/lib.rs".into(), code));
            out.push(("Cargo.toml".into(), fill(RUST_CARGO)));
            out.push(("tests/manifest.rs".into(), fill(RUST_TEST)));
            out.push(("wasmos/sdk/Cargo.toml".into(), RUST_SDK_CARGO.to_string()));
            for (file, text) in RUST_SDK {
                out.push((Path::new("wasmos/sdk/src").join(file), text.to_string()));
            }
            out.push(("build.sh".into(), fill(RUST_BUILD)));
            out.push(("test.sh".into(), fill(RUST_TESTS)));
            out.push((".gitignore".into(), "/target\n/*.wasm\n".into()));
        }
        Lang::Python => {
            out.push(("app.py".into(), fill(code)));
            if let Some(t) = test {
                out.push(("test_app.py".into(), fill(t)));
            }
            for (file, text) in PYTHON_SDK {
                out.push((
                    Path::new("wasmos/python/wasmos").join(file),
                    text.to_string(),
                ));
            }
            out.push(("wasmos/python/fakes.py".into(), PYTHON_FAKES.to_string()));
            out.push(("build.sh".into(), fill(PYTHON_BUILD)));
            out.push(("test.sh".into(), fill(PYTHON_TESTS)));
            out.push((
                ".gitignore".into(),
                "/*.wasm\n/.bindings\n__pycache__/\n".into(),
            ));
        }
        Lang::C => {
            out.push(("plugin.c".into(), fill(code)));
            for (file, text) in C_SDK {
                out.push((Path::new("wasmos/c").join(file), text.to_string()));
            }
            out.push(("build.sh".into(), fill(C_BUILD)));
            out.push(("test.sh".into(), fill(C_TESTS)));
            out.push((".gitignore".into(), "/*.wasm\n".into()));
        }
    }
    out.push(("README.md".into(), fill(README)));
    Ok(out)
}

/// `wasmos plugin new NAME --kind K --lang L [--dir DIR]`.
pub fn new(name: &str, kind: Kind, lang: Lang, dir: Option<&Path>) -> anyhow::Result<()> {
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        bail!(
            "{} exists; give another name or --dir, or remove it first",
            dir.display()
        );
    }
    let files = files(name, kind, lang)?;
    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&full, text).with_context(|| format!("writing {}", full.display()))?;
        if full.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let d = dir.display();
    println!(
        "made {name} ({} plugin in {lang:?}) in {d}",
        kind.plugin_kind()
    );
    println!("  build:   wasmos plugin build {d}");
    println!("  test:    {d}/test.sh");
    println!("  install: wasmos plugin install {d}");
    Ok(())
}

/// `wasmos plugin build [DIR]`: runs the project's build script, then
/// checks that it left the component where `plugin install DIR` finds it.
pub fn build(dir: &Path) -> anyhow::Result<()> {
    let manifest_path = dir.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "no plugin.toml in {}: run this in a plugin made by `wasmos plugin new`, or give its directory",
            dir.display()
        )
    })?;
    let m: PluginManifest = toml::from_str(&text)
        .with_context(|| format!("{} is not a plugin manifest", manifest_path.display()))?;
    let Ok(script) = std::fs::canonicalize(dir.join("build.sh")) else {
        bail!(
            "{} has no build.sh; build the component yourself and install it with --component",
            dir.display()
        );
    };
    eprintln!(
        "building {} {} ({}) with {}",
        m.name,
        m.version,
        m.kind,
        script.display()
    );
    let status = std::process::Command::new(&script)
        .current_dir(dir)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its output above says why",
            script.display()
        );
    }
    let out = dir.join(format!("{}.wasm", m.name));
    let size = std::fs::metadata(&out)
        .with_context(|| format!("the build did not write {}", out.display()))?
        .len();
    println!("built {} ({} KB)", out.display(), size.div_ceil(1024));
    println!("install it with: wasmos plugin install {}", dir.display());
    Ok(())
}

const RUST_CARGO: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
wasmos-sdk = { path = "wasmos/sdk" }
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A project of its own, even inside another workspace.
[workspace]
"#;

const RUST_SDK_CARGO: &str = r#"[package]
name = "wasmos-sdk"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = { version = "0.61", default-features = false, features = ["macros", "realloc"] }
serde = { version = "1", features = ["derive", "rc"] }
serde_json = "1"
"#;

const RUST_TEST: &str = r#"//! The manifest and the SDK agree on the contract's version (a plugin
//! built for another one is refused at install).

#[test]
fn the_manifest_names_the_world_version_the_sdk_builds_against() {
    let manifest = include_str!("../plugin.toml");
    let want = format!("world_version = \"{}\"", wasmos_sdk::WORLD_VERSION);
    assert!(manifest.contains(&want), "plugin.toml lacks {want}");
    assert!(manifest.contains("name = \"{{name}}\""));
}
"#;

const RUST_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm (needs Rust and `rustup target add wasm32-wasip2`).
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
  || { echo "error: the wasm32-wasip2 target is missing; rustup target add wasm32-wasip2" >&2; exit 1; }
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm" {{name}}.wasm
"#;

const RUST_TESTS: &str = r#"#!/usr/bin/env bash
# Runs {{name}}'s tests on the host.
set -euo pipefail
cd "$(dirname "$0")"
exec cargo test
"#;

const PYTHON_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py (pip install componentize-py==0.25.1,
# or set COMPONENTIZE_PY to its path).
set -euo pipefail
cd "$(dirname "$0")"
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "error: componentize-py not found; pip install componentize-py==0.25.1" >&2; exit 1; }
"$cpy" -d wasmos/wit -w {{world}} componentize -p wasmos/python -p . app -o {{name}}.wasm
"#;

const PYTHON_TESTS: &str = r#"#!/usr/bin/env bash
# Runs {{name}}'s unit tests on CPython against a fake host (the world's
# generated bindings, with wasmos/python/fakes.py in place of the host).
set -euo pipefail
cd "$(dirname "$0")"
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "error: componentize-py not found; pip install componentize-py==0.25.1" >&2; exit 1; }
rm -rf .bindings
"$cpy" -d wasmos/wit -w {{world}} bindings .bindings >/dev/null
PYTHONPATH=".bindings:wasmos/python:." exec "${PYTHON:-python3}" -m unittest discover -p 'test_*.py' -v
"#;

const C_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm; the tools it needs are listed at the top of
# wasmos/c/build.sh.
set -euo pipefail
cd "$(dirname "$0")"
WIT_DIR="$PWD/wasmos/wit" exec wasmos/c/build.sh {{world}} {{name}}.wasm plugin.c
"#;

const C_TESTS: &str = r#"#!/usr/bin/env bash
# Builds {{name}} and checks that the component is one of the {{world}}
# world, as the host will.
set -euo pipefail
cd "$(dirname "$0")"
./build.sh
wit="$(wasm-tools component wit {{name}}.wasm)"
grep -q "import wasmos:plugin/log@" <<<"$wit" || { echo "error: {{name}}.wasm does not import the log interface" >&2; exit 1; }
echo "{{name}}.wasm is a {{world}} component"
"#;

const README: &str = r#"# {{name}}

A Wasmos {{world}} plugin, made by `wasmos plugin new`.

    wasmos plugin build .       # or ./build.sh: writes {{name}}.wasm
    ./test.sh                   # its tests
    wasmos plugin install .     # on the cluster `wasmos login` points at

Installing it again under the same name, after a change, replaces it.
`wasmos/` holds what it builds against: the WIT contract (`wasmos/wit`)
and the Wasmos library for its language; the plugin guide in Wasmos'
README says what each world may do.
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_and_world_gets_a_manifest_the_host_accepts_and_its_library() {
        for lang in [Lang::Rust, Lang::Python, Lang::C] {
            for kind in [
                Kind::Framework,
                Kind::Placement,
                Kind::Isolator,
                Kind::HealthCheck,
            ] {
                let files = files("my-plugin", kind, lang).unwrap();
                let get = |p: &str| {
                    files
                        .iter()
                        .find(|(f, _)| f == Path::new(p))
                        .map(|(_, t)| t.as_str())
                        .unwrap_or_else(|| panic!("{lang:?} {kind:?} lacks {p}"))
                };
                let m: PluginManifest = toml::from_str(get("plugin.toml")).unwrap();
                m.validate().unwrap();
                assert_eq!(m.kind, kind.plugin_kind());
                assert!(get("build.sh").contains("my-plugin.wasm"));
                assert!(get("wasmos/wit/types.wit").contains("wasmos:plugin@"));
                let code = match lang {
                    Lang::Rust => get("src/lib.rs"),
                    Lang::Python => get("app.py"),
                    Lang::C => get("plugin.c"),
                };
                assert!(!code.contains("{{"), "{lang:?} {kind:?}: {code}");
                if lang == Lang::Python {
                    assert!(get("test_app.py").contains("import app"));
                    assert!(get("wasmos/python/wasmos/offers.py").contains("class Packer"));
                }
            }
        }
    }

    #[test]
    fn a_bad_name_is_refused_with_what_to_do() {
        let bad = files("My Plugin", Kind::Framework, Lang::Rust).unwrap_err();
        assert!(bad.to_string().contains("a-z, 0-9 and `-`"), "{bad}");
    }
}
