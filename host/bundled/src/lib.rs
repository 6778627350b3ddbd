//! The plugins compiled into the `wasmos` binary, so the binary is all an
//! operator copies to a machine. `build.rs` builds them from `plugins/` for
//! wasm32-wasip2; masters install them into the cluster state on first
//! start (and upgrade them when this binary carries a newer version).

use wasmos_core::PluginManifest;

/// A plugin carried by this binary.
#[derive(Debug, Clone)]
pub struct BundledPlugin {
    pub manifest: PluginManifest,
    pub component: &'static [u8],
}

/// A bundled plugin's manifest and component, by its directory and crate.
macro_rules! bundled {
    ($dir:literal, $krate:literal) => {
        (
            include_str!(concat!("../../../plugins/", $dir, "/plugin.toml")),
            include_bytes!(concat!(env!("OUT_DIR"), "/", $krate, ".wasm")),
        )
    };
}

const RAW: &[(&str, &[u8])] = &[
    bundled!("exec", "wasmos_plugin_exec"),
    bundled!("constraints", "wasmos_plugin_constraints"),
    bundled!("health-http", "wasmos_plugin_health_http"),
    bundled!("health-tcp", "wasmos_plugin_health_tcp"),
    bundled!("health-command", "wasmos_plugin_health_command"),
    bundled!("labels", "wasmos_plugin_labels"),
    bundled!("marathon", "wasmos_plugin_marathon"),
    bundled!("chronos", "wasmos_plugin_chronos"),
];

/// Every bundled plugin, manifests parsed and validated.
pub fn all() -> Vec<BundledPlugin> {
    RAW.iter()
        .map(|(toml_text, component)| {
            let manifest: PluginManifest = toml::from_str(toml_text)
                .unwrap_or_else(|e| panic!("a bundled plugin.toml does not parse: {e}"));
            if let Err(e) = manifest.validate() {
                panic!("bundled plugin manifest is invalid: {e}");
            }
            BundledPlugin {
                manifest,
                component,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bundled_plugins_are_components_with_valid_manifests() {
        let all = super::all();
        let names: Vec<&str> = all.iter().map(|p| p.manifest.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "exec",
                "constraints",
                "health-http",
                "health-tcp",
                "health-command",
                "labels",
                "marathon",
                "chronos"
            ]
        );
        for p in all {
            // The component-model preamble: magic, then layer 1 / version 0x0d.
            assert_eq!(&p.component[..4], b"\0asm", "{}", p.manifest.name);
            assert_eq!(
                p.component[6], 1,
                "{} is a core module, not a component",
                p.manifest.name
            );
        }
    }
}
