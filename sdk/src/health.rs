//! Health checks: judge a task on the agent, through probes the host makes
//! (and allows only towards the task's own host and ports).

/// Bindings generated from `wit/` (the `health-check` world).
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "health-check",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_health_world",
        default_bindings_module: "wasmos_sdk::health::bindings",
        runtime_path: "wasmos_sdk::rt",
        with: {
            "wasmos:plugin/types@0.5.0": crate::framework::bindings::wasmos::plugin::types,
            "wasmos:plugin/log@0.5.0": crate::framework::bindings::wasmos::plugin::log,
            "wasmos:plugin/clock@0.5.0": crate::framework::bindings::wasmos::plugin::clock,
        },
    });
}

pub use crate::framework::bindings::wasmos::plugin::types::KeyValue;
pub use bindings::wasmos::plugin::health_types::{CheckResult, CheckTarget};
pub use bindings::wasmos::plugin::probe;

impl CheckTarget {
    /// A parameter of the check.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.config
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }

    /// The port to check: `port` if given, else the task's port at
    /// `port-index` (default 0).
    pub fn port(&self) -> Result<u16, String> {
        if let Some(p) = self.param("port") {
            return p
                .parse()
                .map_err(|_| format!("port {p:?} is not a port number"));
        }
        let index: usize = match self.param("port-index") {
            Some(i) => i
                .parse()
                .map_err(|_| format!("port-index {i:?} is not a number"))?,
            None => 0,
        };
        self.ports.get(index).copied().ok_or_else(|| {
            format!(
                "the task has no port at index {index} (it has {})",
                self.ports.len()
            )
        })
    }
}

impl CheckResult {
    pub fn healthy(message: impl Into<String>) -> Self {
        CheckResult {
            healthy: true,
            message: message.into(),
        }
    }

    pub fn unhealthy(message: impl Into<String>) -> Self {
        CheckResult {
            healthy: false,
            message: message.into(),
        }
    }
}

/// A health check.
pub trait HealthCheck: Sized + 'static {
    fn init(config: crate::Config) -> Result<Self, String>;

    /// Checks the task once.
    fn check(&mut self, target: CheckTarget) -> CheckResult;
}

/// Exports a [`HealthCheck`] implementation as the plugin's component.
#[macro_export]
macro_rules! export_health_check {
    ($t:ty) => {
        const _: () = {
            use $crate::health::bindings as __b;
            use $crate::health::HealthCheck as _;

            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(None) };
            }

            struct __WasmosHealth;

            impl __b::Guest for __WasmosHealth {
                fn init(config: ::std::vec::Vec<$crate::health::KeyValue>) -> ::core::result::Result<(), ::std::string::String> {
                    let h = <$t>::init($crate::framework::__private::config(config))?;
                    INSTANCE.with(|s| *s.borrow_mut() = Some(h));
                    Ok(())
                }
                fn check(target: $crate::health::CheckTarget) -> $crate::health::CheckResult {
                    INSTANCE.with(|s| match s.borrow_mut().as_mut() {
                        Some(h) => h.check(target),
                        None => $crate::health::CheckResult::unhealthy("plugin not initialized"),
                    })
                }
            }

            $crate::health::bindings::__export_health_world!(__WasmosHealth with_types_in $crate::health::bindings);
        };
    };
}
