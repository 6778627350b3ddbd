//! Framework plugins: schedulers that run inside the leading master.

/// Bindings generated from `wit/` (the `framework` world).
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "framework",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_framework_world",
        default_bindings_module: "wasmos_sdk::framework::bindings",
        runtime_path: "wasmos_sdk::rt",
    });
}

pub use bindings::wasmos::plugin::placement_service;
pub use bindings::wasmos::plugin::placement_types::Constraint;
pub use bindings::wasmos::plugin::types::{
    Command, Container, DiscoveryPort, DockerInfo, DockerNetwork, DockerVolume, FetchUri,
    HealthCheck, HttpRequest, HttpResponse, KeyValue, Offer, OfferedVolume, PersistentVolume,
    PortMapping, PortRange, Resources, TaskSpec, TaskState, TaskStatus, Volume, VolumeSource,
};
pub use bindings::wasmos::plugin::{driver, placement_service::Rule};

impl Rule {
    /// A rule from Marathon's form: `[field, operator]` or
    /// `[field, operator, value]` (an empty value counts as none).
    pub fn from_marathon(parts: &[String]) -> Result<Rule, String> {
        let (field, op, value) = match parts {
            [field, op] => (field, op, None),
            [field, op, value] => (field, op, Some(value)),
            _ => return Err("Each constraint must have either 2 or 3 fields".into()),
        };
        if field.is_empty() || op.is_empty() {
            return Err("a constraint needs a field and an operator".into());
        }
        Ok(Rule {
            constraint: Constraint {
                field: field.clone(),
                operator: op.to_ascii_uppercase(),
                value: value.filter(|v| !v.is_empty()).cloned(),
            },
            plugin: None,
        })
    }
}

pub use crate::http::{Request, Response};

/// A scheduler. Every method but `init` has a default, so implement only
/// what the framework needs.
pub trait Framework: Sized + 'static {
    /// Builds the framework on a new instance. Read durable state from
    /// [`crate::kv`] here.
    fn init(config: crate::Config) -> Result<Self, String>;

    /// New offers. The default declines them all for 5 seconds.
    fn offers(&mut self, offers: Vec<Offer>) {
        let ids: Vec<String> = offers.into_iter().map(|o| o.id).collect();
        if !ids.is_empty() {
            driver::decline(&ids, None);
        }
    }

    /// A task's status changed.
    fn status(&mut self, _update: TaskStatus) {}

    /// About once a second.
    fn tick(&mut self, _now_ms: u64) {}

    /// A request to `/frameworks/<name>/...`. The default answers 404.
    fn http(&mut self, _request: Request) -> Response {
        Response::error(404, "no such endpoint")
    }
}

/// Whether a task state is terminal (the task will not change again).
pub fn is_terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Finished
            | TaskState::Failed
            | TaskState::Killed
            | TaskState::Error
            | TaskState::Lost
            | TaskState::Dropped
            | TaskState::Gone
            | TaskState::GoneByOperator
    )
}

/// The Mesos name of a state, e.g. `TASK_RUNNING`.
pub fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Staging => "TASK_STAGING",
        TaskState::Starting => "TASK_STARTING",
        TaskState::Running => "TASK_RUNNING",
        TaskState::Killing => "TASK_KILLING",
        TaskState::Finished => "TASK_FINISHED",
        TaskState::Failed => "TASK_FAILED",
        TaskState::Killed => "TASK_KILLED",
        TaskState::Error => "TASK_ERROR",
        TaskState::Lost => "TASK_LOST",
        TaskState::Dropped => "TASK_DROPPED",
        TaskState::Unreachable => "TASK_UNREACHABLE",
        TaskState::Gone => "TASK_GONE",
        TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
        TaskState::Unknown => "TASK_UNKNOWN",
    }
}

/// Every task state, in Mesos' order.
pub const TASK_STATES: [TaskState; 14] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Killing,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Error,
    TaskState::Lost,
    TaskState::Dropped,
    TaskState::Unreachable,
    TaskState::Gone,
    TaskState::GoneByOperator,
    TaskState::Unknown,
];

/// Whether the state Mesos names `name` (e.g. `TASK_KILLED`) is terminal;
/// for frameworks that keep states by name.
pub fn is_terminal_name(name: &str) -> bool {
    TASK_STATES
        .iter()
        .any(|s| state_name(*s) == name && is_terminal(*s))
}

/// Asks the master for offers only while the framework has something to
/// launch: `revive` when it starts wanting, `suppress` when it stops, and
/// nothing while that does not change.
#[derive(Debug, Default)]
pub struct OfferInterest {
    suppressed: Option<bool>,
}

impl OfferInterest {
    /// Asks for offers while `want` holds, and for none once it stops.
    pub fn want(&mut self, want: bool) {
        if self.suppressed != Some(!want) {
            if want {
                driver::revive();
            } else {
                driver::suppress();
            }
            self.suppressed = Some(!want);
        }
    }

    /// New work arrived: revive now, even while already asking, so that
    /// offers declined a moment ago (while other tasks waited for
    /// placement) come back at once instead of after their refuse filter.
    pub fn more(&mut self) {
        driver::revive();
        self.suppressed = Some(false);
    }
}

#[doc(hidden)]
pub mod __private {
    use super::bindings::KeyValue;
    pub fn config(kvs: Vec<KeyValue>) -> crate::Config {
        kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
    }
}

/// Exports a [`Framework`] implementation as the plugin's component.
#[macro_export]
macro_rules! export_framework {
    ($t:ty) => {
        const _: () = {
            use $crate::framework::bindings as __b;
            use $crate::framework::Framework as _;

            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(None) };
            }

            fn with<R>(f: impl FnOnce(&mut $t) -> R) -> ::core::option::Option<R> {
                INSTANCE.with(|i| i.borrow_mut().as_mut().map(f))
            }

            struct __WasmosFramework;

            impl __b::Guest for __WasmosFramework {
                fn init(config: ::std::vec::Vec<__b::KeyValue>) -> ::core::result::Result<(), ::std::string::String> {
                    let fw = <$t>::init($crate::framework::__private::config(config))?;
                    INSTANCE.with(|i| *i.borrow_mut() = Some(fw));
                    Ok(())
                }
                fn offers(offers: ::std::vec::Vec<__b::Offer>) {
                    with(|fw| fw.offers(offers));
                }
                fn status(update: __b::TaskStatus) {
                    with(|fw| fw.status(update));
                }
                fn tick(now_ms: u64) {
                    with(|fw| fw.tick(now_ms));
                }
                fn handle_http(request: __b::HttpRequest) -> __b::HttpResponse {
                    with(|fw| fw.http($crate::http::Request::from(request)).into())
                        .unwrap_or_else(|| $crate::http::Response::error(503, "plugin not initialized").into())
                }
            }

            $crate::framework::bindings::__export_framework_world!(__WasmosFramework with_types_in $crate::framework::bindings);
        };
    };
}
