//! Isolators: compute how a container is set up (environment, resource
//! limits, cgroup limits, mounts); the agent validates and enforces.

/// Bindings generated from `wit/` (the `isolator` world).
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "isolator",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_isolator_world",
        default_bindings_module: "wasmos_sdk::isolator::bindings",
        runtime_path: "wasmos_sdk::rt",
        with: {
            "wasmos:plugin/types@0.5.0": crate::framework::bindings::wasmos::plugin::types,
            "wasmos:plugin/log@0.5.0": crate::framework::bindings::wasmos::plugin::log,
        },
    });
}

pub use crate::framework::bindings::wasmos::plugin::types::KeyValue;
pub use bindings::wasmos::plugin::isolator_types::{
    Adjustments, CgroupLimits, ContainerSpec, Mount, Rlimit,
};

impl Adjustments {
    /// Nothing to change.
    pub fn none() -> Adjustments {
        Adjustments {
            environment: Vec::new(),
            rlimits: Vec::new(),
            cgroup: CgroupLimits {
                memory_mb: None,
                cpu_shares: None,
                pids_max: None,
            },
            mounts: Vec::new(),
        }
    }
}

impl ContainerSpec {
    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }
}

/// An isolator.
pub trait Isolator: Sized + 'static {
    fn init(config: crate::Config) -> Result<Self, String>;

    /// What the container needs; an error stops the launch with its message.
    fn prepare(&mut self, spec: ContainerSpec) -> Result<Adjustments, String>;

    /// The container ended.
    fn cleanup(&mut self, _container_id: String) {}
}

/// Exports an [`Isolator`] implementation as the plugin's component.
#[macro_export]
macro_rules! export_isolator {
    ($t:ty) => {
        const _: () = {
            use $crate::isolator::bindings as __b;
            use $crate::isolator::Isolator as _;

            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(None) };
            }

            struct __WasmosIsolator;

            impl __b::Guest for __WasmosIsolator {
                fn init(config: ::std::vec::Vec<$crate::isolator::KeyValue>) -> ::core::result::Result<(), ::std::string::String> {
                    let i = <$t>::init($crate::framework::__private::config(config))?;
                    INSTANCE.with(|s| *s.borrow_mut() = Some(i));
                    Ok(())
                }
                fn prepare(spec: $crate::isolator::ContainerSpec) -> ::core::result::Result<$crate::isolator::Adjustments, ::std::string::String> {
                    INSTANCE.with(|s| match s.borrow_mut().as_mut() {
                        Some(i) => i.prepare(spec),
                        None => Err("plugin not initialized".into()),
                    })
                }
                fn cleanup(container_id: ::std::string::String) {
                    INSTANCE.with(|s| {
                        if let Some(i) = s.borrow_mut().as_mut() {
                            i.cleanup(container_id)
                        }
                    })
                }
            }

            $crate::isolator::bindings::__export_isolator_world!(__WasmosIsolator with_types_in $crate::isolator::bindings);
        };
    };
}
