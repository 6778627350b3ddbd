//! The shared vocabulary of Wasmos: ids, resources, tasks and their states,
//! agents, frameworks, offers, plugin manifests, and the messages masters and
//! agents exchange.
//!
//! Pure data: no I/O, no async runtime, no clock. Everything that validates
//! input lives next to the type it guards (an id that parses cannot escape a
//! directory; resources that parse are finite and non-negative), so each
//! layer above can take a parsed value as trusted.

pub mod agent;
pub mod bytes;
pub mod container;
pub mod durable;
pub mod framework;
pub mod ids;
pub mod limits;
pub mod offer;
pub mod plugin;
pub mod protocol;
pub mod reservation;
pub mod resources;
pub mod task;

pub use agent::{AgentInfo, AgentState};
pub use framework::{FrameworkInfo, FrameworkKind};
pub use ids::{AgentId, ExecutorId, FrameworkId, IdError, OfferId, TaskId};
pub use offer::Offer;
pub use plugin::{PluginKind, PluginManifest};
pub use reservation::{RoleResources, Volume, VolumeMount};
pub use resources::{PortRange, PortSet, ResourceError, Resources, Scalar};
pub use task::{
    CommandSpec, ExecutorKind, ExecutorSpec, HealthCheckSpec, PlacedTask, Reason, Source, TaskSpec,
    TaskState, TaskStatus,
};

/// This release's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
