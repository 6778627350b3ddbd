//! Conversions between Wasmos' own types and the WIT records, in one place.
//! What comes from a plugin is validated on the way in.

use std::collections::BTreeMap;

use wasmos_core::container::{ContainerInfo, DockerInfo, DockerNetwork, DockerVolume, PortMapping};
use wasmos_core::task::HostVolume;
use wasmos_core::{
    CommandSpec, HealthCheckSpec, Offer, PortRange, PortSet, Resources, Scalar, TaskId, TaskSpec,
    TaskState, TaskStatus, VolumeMount,
};

use crate::bindings::types as wit;

pub(crate) fn pairs_to_wit<'a>(
    m: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<wit::KeyValue> {
    m.into_iter()
        .map(|(k, v)| wit::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

pub(crate) fn pairs_from_wit(kvs: Vec<wit::KeyValue>) -> BTreeMap<String, String> {
    kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

pub(crate) fn resources_from_wit(r: wit::Resources) -> Result<Resources, String> {
    let ports = PortSet::from_ranges(r.ports.into_iter().map(|p| PortRange {
        begin: p.begin,
        end: p.end,
    }))
    .map_err(|e| e.to_string())?;
    Ok(Resources {
        cpus: Scalar::from_f64("cpus", r.cpus).map_err(|e| e.to_string())?,
        mem: Scalar::from_f64("mem", r.mem).map_err(|e| e.to_string())?,
        disk: Scalar::from_f64("disk", r.disk).map_err(|e| e.to_string())?,
        gpus: r.gpus,
        ports,
    })
}

pub(crate) fn resources_to_wit(r: &Resources) -> wit::Resources {
    wit::Resources {
        cpus: r.cpus.as_f64(),
        mem: r.mem.as_f64(),
        disk: r.disk.as_f64(),
        gpus: r.gpus,
        ports: r
            .ports
            .ranges()
            .iter()
            .map(|p| wit::PortRange {
                begin: p.begin,
                end: p.end,
            })
            .collect(),
    }
}

fn health_from_wit(h: wit::HealthCheck) -> HealthCheckSpec {
    HealthCheckSpec {
        plugin: h.plugin,
        config: pairs_from_wit(h.config),
        delay_seconds: h.delay_seconds,
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        grace_period_seconds: h.grace_period_seconds,
        max_consecutive_failures: h.max_consecutive_failures,
    }
}

fn container_from_wit(c: wit::Container) -> ContainerInfo {
    match c {
        wit::Container::Docker(d) => ContainerInfo::Docker {
            docker: DockerInfo {
                image: d.image,
                network: match d.network {
                    wit::DockerNetwork::Host => DockerNetwork::Host,
                    wit::DockerNetwork::Bridge => DockerNetwork::Bridge,
                    wit::DockerNetwork::None => DockerNetwork::None,
                },
                port_mappings: d
                    .port_mappings
                    .into_iter()
                    .map(|m| PortMapping {
                        container_port: m.container_port,
                        protocol: m.protocol,
                    })
                    .collect(),
                force_pull_image: d.force_pull_image,
                volumes: Vec::new(),
            },
        },
    }
}

/// A plugin task's volumes, sorted into the task spec: persistent ones
/// (their role and whether to create them decided by the master), host
/// paths, and Docker named volumes (into the Docker container).
fn volumes_from_wit(spec: &mut TaskSpec, volumes: Vec<wit::Volume>) -> Result<(), String> {
    for v in volumes {
        match v.source {
            wit::VolumeSource::Persistent(p) => spec.volumes.push(VolumeMount {
                create_mb: Some(
                    Scalar::from_f64("volume size", p.size_mb)
                        .map_err(|e| format!("volume {}: {e}", p.id))?,
                ),
                id: p.id,
                role: String::new(),
                container_path: v.container_path,
                read_only: v.read_only,
                uuid: String::new(),
            }),
            wit::VolumeSource::Host(host_path) => spec.host_volumes.push(HostVolume {
                host_path,
                container_path: v.container_path,
                read_only: v.read_only,
            }),
            wit::VolumeSource::Docker(d) => {
                let Some(ContainerInfo::Docker { docker }) = spec.container.as_mut() else {
                    return Err(format!(
                        "task {}: docker volume {} needs a Docker container",
                        spec.task_id, d.name
                    ));
                };
                docker.volumes.push(DockerVolume {
                    name: d.name,
                    driver: d.driver,
                    options: pairs_from_wit(d.options),
                    container_path: v.container_path,
                    read_only: v.read_only,
                });
            }
        }
    }
    Ok(())
}

/// A task a plugin wants launched, checked as the master would.
pub(crate) fn task_from_wit(t: wit::TaskSpec) -> Result<TaskSpec, String> {
    let task_id =
        TaskId::new(t.task_id.clone()).map_err(|e| format!("task id {:?}: {e}", t.task_id))?;
    let mut spec = TaskSpec {
        resources: resources_from_wit(t.resources).map_err(|e| format!("task {task_id}: {e}"))?,
        name: t.name,
        command: CommandSpec {
            shell: t.command.shell,
            value: t.command.value,
            arguments: t.command.arguments,
            env: pairs_from_wit(t.command.environment),
            user: t.command.user,
        },
        labels: pairs_from_wit(t.labels),
        kill_grace_period_ms: t.kill_grace_period_ms,
        health_check: t.health_check.map(health_from_wit),
        container: t.container.map(container_from_wit),
        fetch: t
            .fetch
            .into_iter()
            .map(|f| wasmos_core::task::FetchUri {
                uri: f.uri,
                extract: f.extract,
                executable: f.executable,
                dest_path: f.dest_path,
            })
            .collect(),
        readiness_check: t.readiness_check.map(health_from_wit),
        reserved: Default::default(),
        volumes: Vec::new(),
        executor: None,
        group: None,
        task_info: None,
        accepted_roles: t.accepted_roles,
        host_volumes: Vec::new(),
        discovery: t
            .discovery
            .into_iter()
            .map(|d| wasmos_core::task::DiscoveryPort {
                number: d.number,
                name: d.name,
                protocol: d.protocol,
                labels: pairs_from_wit(d.labels),
                service_port: d.service_port,
            })
            .collect(),
        task_id,
    };
    volumes_from_wit(&mut spec, t.volumes)?;
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

pub(crate) fn offer_to_wit(o: &Offer) -> wit::Offer {
    wit::Offer {
        id: o.id.to_string(),
        agent_id: o.agent_id.to_string(),
        hostname: o.hostname.clone(),
        // Everything offered, reserved parts included: a plugin's tasks
        // take the reserved parts of their accepted roles first (the
        // allocator assigns them).
        resources: resources_to_wit(&o.resources),
        attributes: pairs_to_wit(&o.attributes),
        reserved: o
            .reserved
            .iter()
            .map(|(role, r)| wit::RoleResources {
                role: role.clone(),
                resources: resources_to_wit(r),
            })
            .collect(),
        volumes: o
            .volumes
            .iter()
            .map(|v| wit::OfferedVolume {
                id: v.id.clone(),
                role: v.role.clone(),
                size_mb: v.disk.as_f64(),
                container_path: v.container_path.clone(),
            })
            .collect(),
    }
}

fn state_to_wit(s: TaskState) -> wit::TaskState {
    match s {
        TaskState::Staging => wit::TaskState::Staging,
        TaskState::Starting => wit::TaskState::Starting,
        TaskState::Running => wit::TaskState::Running,
        TaskState::Killing => wit::TaskState::Killing,
        TaskState::Finished => wit::TaskState::Finished,
        TaskState::Failed => wit::TaskState::Failed,
        TaskState::Killed => wit::TaskState::Killed,
        TaskState::Error => wit::TaskState::Error,
        TaskState::Lost => wit::TaskState::Lost,
        TaskState::Dropped => wit::TaskState::Dropped,
        TaskState::Unreachable => wit::TaskState::Unreachable,
        TaskState::Gone => wit::TaskState::Gone,
        TaskState::GoneByOperator => wit::TaskState::GoneByOperator,
        TaskState::Unknown => wit::TaskState::Unknown,
    }
}

pub(crate) fn status_to_wit(s: &TaskStatus) -> wit::TaskStatus {
    wit::TaskStatus {
        task_id: s.task_id.to_string(),
        state: state_to_wit(s.state),
        agent_id: s.agent_id.as_ref().map(|a| a.to_string()),
        message: s.message.clone(),
        reason: s.reason.map(|r| r.as_str()),
        exit_code: s.exit_code,
        healthy: s.healthy,
        ready: s.ready,
        timestamp: s.timestamp,
        uuid: s.uuid.to_string(),
    }
}

pub(crate) fn config_to_wit(config: &[(String, String)]) -> Vec<wit::KeyValue> {
    config
        .iter()
        .map(|(k, v)| wit::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}
