//! The host side of the `isolator` world: an isolator computes how a
//! container is set up; the agent validates what it asks for and enforces
//! it. The plugin makes no system call of its own.

use std::collections::BTreeMap;

use wasmos_core::Resources;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use crate::bindings::isolator::wasmos::plugin::isolator_types as it;
use crate::bindings::isolator::{Isolator, IsolatorPre};
use crate::bindings::{log, types as wit};
use crate::convert::{config_to_wit, pairs_from_wit, pairs_to_wit, resources_to_wit};
use crate::sandbox::{Common, HostData, Sandbox, World, link, wasi_view};
use crate::{CallError, LoadError, PluginHealth, PluginRuntime};

/// The container an isolator is asked about.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub container_id: String,
    pub task_id: String,
    pub framework_id: String,
    pub user: Option<String>,
    pub resources: Resources,
    pub labels: BTreeMap<String, String>,
    pub environment: BTreeMap<String, String>,
}

/// A resource limit asked for by an isolator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// A bind mount asked for by an isolator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// Cgroup limits asked for by an isolator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_mb: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids_max: Option<u64>,
}

/// What an isolator asks for (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adjustments {
    pub environment: BTreeMap<String, String>,
    pub rlimits: Vec<Rlimit>,
    pub cgroup: CgroupLimits,
    pub mounts: Vec<Mount>,
}

impl Adjustments {
    /// Adds `other` (a later isolator) on top of `self`.
    pub fn merge(&mut self, other: Adjustments) {
        self.environment.extend(other.environment);
        for r in other.rlimits {
            self.rlimits.retain(|x| x.name != r.name);
            self.rlimits.push(r);
        }
        let c = other.cgroup;
        self.cgroup.memory_mb = c.memory_mb.or(self.cgroup.memory_mb);
        self.cgroup.cpu_shares = c.cpu_shares.or(self.cgroup.cpu_shares);
        self.cgroup.pids_max = c.pids_max.or(self.cgroup.pids_max);
        self.mounts.extend(other.mounts);
    }

    pub fn is_empty(&self) -> bool {
        *self == Adjustments::default()
    }
}

/// Why an isolator did not produce adjustments.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IsolatorError {
    #[error("isolator {plugin} refused the container: {message}")]
    Refused { plugin: String, message: String },
    #[error(transparent)]
    Call(#[from] CallError),
}

pub struct IsolatorHost {
    common: Common,
}

wasi_view!(IsolatorHost);

impl HostData for IsolatorHost {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

impl wit::Host for IsolatorHost {}
impl it::Host for IsolatorHost {}

impl log::Host for IsolatorHost {
    fn log(&mut self, level: log::Level, message: String) {
        self.common.log(level, message);
    }
}

pub(crate) struct IsolatorWorld {
    pre: IsolatorPre<IsolatorHost>,
}

impl World for IsolatorWorld {
    type Host = IsolatorHost;
    type Bindings = Isolator;

    fn new_host(&self, plugin: &str, memory_limit: usize) -> IsolatorHost {
        IsolatorHost {
            common: Common::new(plugin, memory_limit),
        }
    }

    fn instantiate(&self, store: &mut Store<IsolatorHost>) -> wasmtime::Result<Isolator> {
        self.pre.instantiate(store)
    }

    fn init(
        &self,
        b: &Isolator,
        store: &mut Store<IsolatorHost>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        b.call_init(store, &config_to_wit(config))
    }
}

fn pre(
    runtime: &PluginRuntime,
    component: &Component,
) -> Result<IsolatorPre<IsolatorHost>, LoadError> {
    let pre = link(runtime, "isolator", component, |l| {
        wasmtime_wasi::p2::add_to_linker_sync(l)?;
        Isolator::add_to_linker::<_, HasSelf<_>>(l, |h| h)
    })?;
    IsolatorPre::new(pre).map_err(|e| LoadError::WrongWorld {
        world: "isolator".into(),
        message: format!("{e:#}"),
    })
}

/// Checks that a component is an isolator this host can run.
pub fn check(runtime: &PluginRuntime, component: &Component) -> Result<(), LoadError> {
    pre(runtime, component).map(|_| ())
}

/// A sandboxed isolator.
pub struct IsolatorInstance {
    sandbox: Sandbox<IsolatorWorld>,
}

impl IsolatorInstance {
    pub fn new(
        runtime: &PluginRuntime,
        name: &str,
        component: &Component,
        config: BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let world = IsolatorWorld {
            pre: pre(runtime, component)?,
        };
        Ok(IsolatorInstance {
            sandbox: Sandbox::new(runtime, name, world, config),
        })
    }

    pub fn name(&self) -> &str {
        self.sandbox.name()
    }

    pub fn health(&self) -> (PluginHealth, Option<String>) {
        self.sandbox.health()
    }

    /// Restarts the plugin with a new configuration, forgetting failures.
    pub fn reset(&mut self, config: BTreeMap<String, String>) {
        self.sandbox.reset(config);
    }

    /// Asks what the container needs.
    pub fn prepare(&mut self, c: &ContainerInfo) -> Result<Adjustments, IsolatorError> {
        let spec = it::ContainerSpec {
            container_id: c.container_id.clone(),
            task_id: c.task_id.clone(),
            framework_id: c.framework_id.clone(),
            user: c.user.clone(),
            resources: resources_to_wit(&c.resources),
            labels: pairs_to_wit(&c.labels),
            environment: pairs_to_wit(&c.environment),
        };
        let r = self
            .sandbox
            .call(|i, store, _| i.call_prepare(store, &spec))?;
        let a = r.map_err(|message| IsolatorError::Refused {
            plugin: self.name().to_string(),
            message,
        })?;
        Ok(Adjustments {
            environment: pairs_from_wit(a.environment),
            rlimits: a
                .rlimits
                .into_iter()
                .map(|r| Rlimit {
                    name: r.name,
                    soft: r.soft,
                    hard: r.hard,
                })
                .collect(),
            cgroup: CgroupLimits {
                memory_mb: a.cgroup.memory_mb,
                cpu_shares: a.cgroup.cpu_shares,
                pids_max: a.cgroup.pids_max,
            },
            mounts: a
                .mounts
                .into_iter()
                .map(|m| Mount {
                    source: m.source,
                    target: m.target,
                    read_only: m.read_only,
                })
                .collect(),
        })
    }

    /// Tells the isolator the container is gone.
    pub fn cleanup(&mut self, container_id: &str) -> Result<(), CallError> {
        self.sandbox
            .call(|i, store, _| i.call_cleanup(store, container_id))
    }
}
