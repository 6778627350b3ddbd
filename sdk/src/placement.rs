//! Placement plugins: decide which agents may take a task, and which are
//! better.
//!
//! The SDK keeps the plugin's view of the agents ([`Agents`]) up to date
//! from the host's deltas; implement [`Placement::filter`] (and optionally
//! `score` and `validate`) against it, then call [`export_placement!`].

/// Bindings generated from `wit/` (the `placement` world).
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "placement",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_placement_world",
        default_bindings_module: "wasmos_sdk::placement::bindings",
        runtime_path: "wasmos_sdk::rt",
        with: {
            "wasmos:plugin/types@0.5.0": crate::framework::bindings::wasmos::plugin::types,
            "wasmos:plugin/log@0.5.0": crate::framework::bindings::wasmos::plugin::log,
            "wasmos:plugin/placement-types@0.5.0": crate::framework::bindings::wasmos::plugin::placement_types,
        },
    });
}

pub use crate::framework::bindings::wasmos::plugin::placement_types::{
    AgentChange, AgentView, Candidate, Constraint, PlacementTask,
};
pub use crate::framework::bindings::wasmos::plugin::types::{KeyValue, Resources};

/// The agents, as the host last described them, by index.
#[derive(Debug, Default)]
pub struct Agents {
    by_index: Vec<Option<AgentView>>,
    version: u64,
}

impl Agents {
    /// Applies the host's changes.
    pub fn apply(&mut self, changes: Vec<AgentChange>) {
        if !changes.is_empty() {
            self.version += 1;
        }
        for c in changes {
            match c {
                AgentChange::Upsert(a) => {
                    let i = a.index as usize;
                    if self.by_index.len() <= i {
                        self.by_index.resize_with(i + 1, || None);
                    }
                    self.by_index[i] = Some(a);
                }
                AgentChange::Removed(i) => {
                    if let Some(slot) = self.by_index.get_mut(i as usize) {
                        *slot = None;
                    }
                }
            }
        }
    }

    /// Changes whenever the agents do: caches built from the agents (an
    /// index of a field's values, say) are valid while it stays the same.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// One more than the highest index in use.
    pub fn capacity(&self) -> usize {
        self.by_index.len()
    }

    /// The agent at `index`.
    pub fn get(&self, index: u32) -> Option<&AgentView> {
        self.by_index.get(index as usize).and_then(Option::as_ref)
    }

    /// Every known agent.
    pub fn iter(&self) -> impl Iterator<Item = &AgentView> {
        self.by_index.iter().flatten()
    }

    /// How many agents are known.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AgentView {
    /// The value of `field` on this agent: `hostname` (or `@hostname`) is
    /// the host name, anything else an attribute (`@zone` → `zone`).
    pub fn field(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(self.hostname.as_str()),
            other => {
                let name = other.strip_prefix('@').unwrap_or(other);
                self.attributes
                    .iter()
                    .find(|kv| kv.key == name)
                    .map(|kv| kv.value.as_str())
            }
        }
    }
}

/// A placement plugin.
pub trait Placement: Sized + 'static {
    fn init(config: crate::Config) -> Result<Self, String>;

    /// Checks constraints before they are used. The default accepts all.
    fn validate(&self, _constraints: &[Constraint]) -> Result<(), String> {
        Ok(())
    }

    /// For each candidate, whether the task may go there (one entry per
    /// candidate, in order).
    fn filter(
        &mut self,
        agents: &Agents,
        task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<bool>;

    /// For each candidate, how good a place it is. The default is 0 for all.
    fn score(
        &mut self,
        _agents: &Agents,
        _task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<f64> {
        vec![0.0; candidates.len()]
    }
}

#[doc(hidden)]
pub mod __private {
    pub use super::Agents;
}

/// Exports a [`Placement`] implementation as the plugin's component.
#[macro_export]
macro_rules! export_placement {
    ($t:ty) => {
        const _: () = {
            use $crate::placement::bindings as __b;
            use $crate::placement::Placement as _;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<($t, $crate::placement::__private::Agents)>> =
                    const { ::core::cell::RefCell::new(None) };
            }

            struct __WasmosPlacement;

            impl __b::Guest for __WasmosPlacement {
                fn init(config: ::std::vec::Vec<$crate::placement::KeyValue>) -> ::core::result::Result<(), ::std::string::String> {
                    let p = <$t>::init($crate::framework::__private::config(config))?;
                    STATE.with(|s| *s.borrow_mut() = Some((p, Default::default())));
                    Ok(())
                }
                fn agents_changed(changes: ::std::vec::Vec<$crate::placement::AgentChange>) {
                    STATE.with(|s| {
                        if let Some((_, agents)) = s.borrow_mut().as_mut() {
                            agents.apply(changes);
                        }
                    });
                }
                fn validate(constraints: ::std::vec::Vec<$crate::placement::Constraint>) -> ::core::result::Result<(), ::std::string::String> {
                    STATE.with(|s| match s.borrow().as_ref() {
                        Some((p, _)) => p.validate(&constraints),
                        None => Err("plugin not initialized".into()),
                    })
                }
                fn filter(task: $crate::placement::PlacementTask, candidates: ::std::vec::Vec<$crate::placement::Candidate>) -> ::std::vec::Vec<bool> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some((p, agents)) => p.filter(agents, &task, &candidates),
                        None => vec![false; candidates.len()],
                    })
                }
                fn score(task: $crate::placement::PlacementTask, candidates: ::std::vec::Vec<$crate::placement::Candidate>) -> ::std::vec::Vec<f64> {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        Some((p, agents)) => p.score(agents, &task, &candidates),
                        None => vec![0.0; candidates.len()],
                    })
                }
            }

            $crate::placement::bindings::__export_placement_world!(__WasmosPlacement with_types_in $crate::placement::bindings);
        };
    };
}
