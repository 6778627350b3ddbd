//! Mesos v1 messages in their JSON form (stout's protobuf↔JSON mapping:
//! proto field names, enum names as strings, `bytes` as base64, IDs as
//! `{"value": ...}`), and their translation to and from Wasmos' own types.
//!
//! Parsing is lenient where Mesos is (unknown keys and `null` are
//! ignored) and strict where it is not (a missing required field is an
//! error naming it).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use wasmos_core::container::{ContainerInfo, DockerInfo, DockerNetwork, PortMapping};
use wasmos_core::reservation::{self, RoleResources, Volume, VolumeMount, check_reservation_role};
use wasmos_core::resources::{PortRange, PortSet, Scalar};
use wasmos_core::task::{FetchUri, HostVolume};
use wasmos_core::{
    AgentId, CommandSpec, ExecutorId, ExecutorKind, ExecutorSpec, HealthCheckSpec, Offer,
    Resources, TaskId, TaskSpec, TaskStatus,
};

/// `null` reads as the type's default (stout ignores `null`).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `{"value": "..."}`: every Mesos ID.
#[derive(Debug, Clone, Deserialize)]
pub struct Id {
    pub value: String,
}

/// An ID in its JSON form.
pub fn id(v: impl std::fmt::Display) -> Value {
    json!({ "value": v.to_string() })
}

/// `mesos.v1.scheduler.Call`, the parts Wasmos reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Call {
    pub framework_id: Option<Id>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub subscribe: Option<Subscribe>,
    pub accept: Option<Accept>,
    pub decline: Option<Decline>,
    pub revive: Option<Roles>,
    pub suppress: Option<Roles>,
    pub kill: Option<Kill>,
    pub shutdown: Option<Shutdown>,
    pub acknowledge: Option<Acknowledge>,
    pub reconcile: Option<Reconcile>,
    pub message: Option<Value>,
    pub request: Option<Value>,
    pub update_framework: Option<Subscribe>,
    pub accept_inverse_offers: Option<InverseOfferIds>,
    pub decline_inverse_offers: Option<InverseOfferIds>,
}

/// `Call.AcceptInverseOffers` / `DeclineInverseOffers`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InverseOfferIds {
    #[serde(deserialize_with = "nullable")]
    pub inverse_offer_ids: Vec<Id>,
    pub filters: Option<Filters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Subscribe {
    pub framework_info: Option<FrameworkInfo>,
    #[serde(deserialize_with = "nullable")]
    pub suppressed_roles: Vec<String>,
}

/// `mesos.v1.FrameworkInfo`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct FrameworkInfo {
    pub user: Option<String>,
    pub name: Option<String>,
    pub id: Option<Id>,
    pub failover_timeout: Option<f64>,
    pub checkpoint: Option<bool>,
    pub role: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub roles: Vec<String>,
    pub hostname: Option<String>,
    pub principal: Option<String>,
    pub webui_url: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl FrameworkInfo {
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.kind.as_deref() == Some(name))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Filters {
    pub refuse_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Accept {
    #[serde(deserialize_with = "nullable")]
    pub offer_ids: Vec<Id>,
    #[serde(deserialize_with = "nullable")]
    pub operations: Vec<Operation>,
    pub filters: Option<Filters>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Decline {
    #[serde(deserialize_with = "nullable")]
    pub offer_ids: Vec<Id>,
    pub filters: Option<Filters>,
}

/// `Offer.Operation`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub id: Option<Id>,
    pub launch: Option<Launch>,
    pub launch_group: Option<Value>,
    pub reserve: Option<ResourcesOp>,
    pub unreserve: Option<ResourcesOp>,
    pub create: Option<ResourcesOp>,
    pub destroy: Option<ResourcesOp>,
}

/// The body of RESERVE / UNRESERVE (`resources`, and RESERVE's `source`)
/// and CREATE / DESTROY (`volumes`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResourcesOp {
    #[serde(deserialize_with = "nullable")]
    pub resources: Vec<Resource>,
    #[serde(deserialize_with = "nullable")]
    pub source: Vec<Resource>,
    #[serde(deserialize_with = "nullable")]
    pub volumes: Vec<Resource>,
}

/// Reserved resources of RESERVE or UNRESERVE as one role's bundle: every
/// resource must be reserved, all for the same role.
pub fn reserved_bundle(list: &[Resource]) -> Result<(String, Resources), String> {
    if list.is_empty() {
        return Err("no resources given".into());
    }
    let parsed = resource_list(list)?;
    if !parsed.volumes.is_empty() {
        return Err("persistent volumes are made with CREATE, not RESERVE".into());
    }
    let mut roles = parsed.reserved.into_iter();
    match (roles.next(), roles.next()) {
        (Some((role, r)), None) if r == parsed.all => Ok((role, r)),
        (None, _) => Err("the resources name no role to reserve for".into()),
        _ => Err("every resource must be reserved for one and the same role".into()),
    }
}

/// The volumes of CREATE or DESTROY.
pub fn volume_list(list: &[Resource]) -> Result<Vec<Volume>, String> {
    let parsed = resource_list(list)?;
    if parsed.volumes.is_empty() || !parsed.all.is_empty() {
        return Err(
            "volumes must be disk resources with disk.persistence.id and disk.volume.container_path"
                .into(),
        );
    }
    Ok(parsed.volumes)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Launch {
    /// As given: a custom executor gets each TaskInfo whole.
    #[serde(deserialize_with = "nullable")]
    pub task_infos: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Roles {
    #[serde(deserialize_with = "nullable")]
    pub roles: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Kill {
    pub task_id: Option<Id>,
    pub agent_id: Option<Id>,
    pub kill_policy: Option<KillPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Shutdown {
    pub executor_id: Option<Id>,
    pub agent_id: Option<Id>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Acknowledge {
    pub agent_id: Option<Id>,
    pub task_id: Option<Id>,
    /// base64 of the update's 16-byte UUID.
    pub uuid: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reconcile {
    #[serde(deserialize_with = "nullable")]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReconcileTask {
    pub task_id: Option<Id>,
    pub agent_id: Option<Id>,
}

/// `mesos.v1.TaskInfo`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskInfo {
    pub name: Option<String>,
    pub task_id: Option<Id>,
    pub agent_id: Option<Id>,
    #[serde(deserialize_with = "nullable")]
    pub resources: Vec<Resource>,
    pub executor: Option<Value>,
    pub command: Option<CommandInfo>,
    pub container: Option<ContainerInfoV1>,
    pub health_check: Option<HealthCheck>,
    pub check: Option<Value>,
    pub kill_policy: Option<KillPolicy>,
    pub labels: Option<Labels>,
    pub data: Option<String>,
    pub discovery: Option<Value>,
}

/// `mesos.v1.Resource`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Resource {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub scalar: Option<ScalarValue>,
    pub ranges: Option<RangesValue>,
    pub role: Option<String>,
    pub reservation: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    pub reservations: Vec<Value>,
    pub disk: Option<Value>,
    pub revocable: Option<Value>,
    pub shared: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ScalarValue {
    pub value: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangesValue {
    #[serde(deserialize_with = "nullable")]
    pub range: Vec<RangeValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeValue {
    pub begin: u64,
    pub end: u64,
}

/// `mesos.v1.CommandInfo`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CommandInfo {
    #[serde(deserialize_with = "nullable")]
    pub uris: Vec<UriInfo>,
    pub environment: Option<Environment>,
    /// Defaults to true.
    pub shell: Option<bool>,
    pub value: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub arguments: Vec<String>,
    pub user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UriInfo {
    pub value: Option<String>,
    pub executable: Option<bool>,
    /// Defaults to true.
    pub extract: Option<bool>,
    pub cache: Option<bool>,
    pub output_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Environment {
    #[serde(deserialize_with = "nullable")]
    pub variables: Vec<Variable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Variable {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerInfoV1 {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub docker: Option<DockerInfoV1>,
    pub mesos: Option<MesosInfoV1>,
    #[serde(deserialize_with = "nullable")]
    pub volumes: Vec<Value>,
    #[serde(deserialize_with = "nullable")]
    pub network_infos: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MesosInfoV1 {
    pub image: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DockerInfoV1 {
    pub image: Option<String>,
    pub network: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub port_mappings: Vec<PortMappingV1>,
    pub privileged: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub parameters: Vec<Value>,
    pub force_pull_image: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PortMappingV1 {
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: Option<String>,
}

/// `mesos.v1.HealthCheck`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub command: Option<CommandInfo>,
    pub http: Option<HttpCheck>,
    pub tcp: Option<TcpCheck>,
    pub delay_seconds: Option<f64>,
    pub interval_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
    pub consecutive_failures: Option<u32>,
    pub grace_period_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HttpCheck {
    pub scheme: Option<String>,
    pub port: Option<u32>,
    pub path: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub statuses: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TcpCheck {
    pub port: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KillPolicy {
    pub grace_period: Option<DurationInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DurationInfo {
    pub nanoseconds: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Labels {
    #[serde(deserialize_with = "nullable")]
    pub labels: Vec<Label>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Label {
    pub key: Option<String>,
    pub value: Option<String>,
}

/// A list of Mesos resources in Wasmos' terms: the sum of everything but
/// volumes, the part of it reserved by role, and the persistent volumes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResourceList {
    pub all: Resources,
    pub reserved: RoleResources,
    pub volumes: Vec<Volume>,
    /// How each volume is mounted (`RO` is read-only).
    pub read_only: Vec<bool>,
}

impl ResourceList {
    /// The volumes as a task mounts them.
    pub fn mounts(&self) -> Vec<VolumeMount> {
        self.volumes
            .iter()
            .zip(&self.read_only)
            .map(|(v, ro)| VolumeMount {
                id: v.id.clone(),
                role: v.role.clone(),
                container_path: v.container_path.clone(),
                read_only: *ro,
                uuid: String::new(),
                create_mb: None,
            })
            .collect()
    }
}

/// The role a resource is reserved for (`None`: unreserved), in either
/// format: `role` (pre-refinement) or the `reservations` stack.
fn reservation_role(res: &Resource, name: &str) -> Result<Option<String>, String> {
    if res.reservations.len() > 1 {
        return Err(format!(
            "resource {name}: refined reservations (more than one in `reservations`) are not supported"
        ));
    }
    let role = match res.reservations.first() {
        Some(r) => Some(
            r["role"]
                .as_str()
                .ok_or_else(|| format!("resource {name}: a reservation needs a role"))?
                .to_string(),
        ),
        None => res.role.clone().filter(|r| r != "*"),
    };
    if let Some(r) = &role {
        check_reservation_role(r).map_err(|e| format!("resource {name}: {e}"))?;
    }
    Ok(role)
}

/// Reads a list of Mesos resources; names Wasmos does not offer, and
/// revocable or shared resources, are refused.
pub fn resource_list(list: &[Resource]) -> Result<ResourceList, String> {
    let mut out = ResourceList::default();
    let mut ports: Vec<PortRange> = Vec::new();
    for res in list {
        let name = res.name.as_deref().unwrap_or("");
        if res.revocable.is_some() || res.shared.is_some() {
            return Err(format!(
                "resource {name}: revocable and shared resources are not offered by this cluster"
            ));
        }
        let role = reservation_role(res, name)?;
        let scalar = |field: &'static str| -> Result<Scalar, String> {
            let v = res
                .scalar
                .as_ref()
                .ok_or_else(|| format!("resource {name} must be SCALAR with a scalar value"))?
                .value;
            Scalar::from_f64(field, v).map_err(|e| e.to_string())
        };
        let mut one = Resources::default();
        match name {
            "cpus" => one.cpus = scalar("cpus")?,
            "mem" => one.mem = scalar("mem")?,
            "disk" => {
                let disk = scalar("disk")?;
                if let Some(d) = res.disk.as_ref().filter(|d| !d["persistence"].is_null()) {
                    let role = role.clone().ok_or_else(|| {
                        "a persistent volume must be on reserved disk (give the resource a role)"
                            .to_string()
                    })?;
                    let volume = Volume {
                        id: d["persistence"]["id"]
                            .as_str()
                            .ok_or("disk.persistence.id is required")?
                            .to_string(),
                        role,
                        disk,
                        container_path: d["volume"]["container_path"]
                            .as_str()
                            .ok_or("a persistent volume needs disk.volume.container_path")?
                            .to_string(),
                        principal: d["persistence"]["principal"].as_str().map(String::from),
                        uuid: String::new(),
                    };
                    volume.validate()?;
                    out.read_only
                        .push(d["volume"]["mode"].as_str() == Some("RO"));
                    out.volumes.push(volume);
                    continue;
                }
                one.disk = disk;
            }
            "gpus" => {
                let g = scalar("gpus")?.as_f64();
                if g.fract() != 0.0 {
                    return Err(format!("gpus must be a whole number, got {g}"));
                }
                one.gpus = g as u32;
            }
            "ports" => {
                let ranges = res
                    .ranges
                    .as_ref()
                    .ok_or("resource ports must be RANGES with ranges")?;
                let mut mine = Vec::new();
                for range in &ranges.range {
                    let (Ok(begin), Ok(end)) =
                        (u16::try_from(range.begin), u16::try_from(range.end))
                    else {
                        return Err(format!(
                            "port range {}-{} is outside 0-65535",
                            range.begin, range.end
                        ));
                    };
                    mine.push(PortRange { begin, end });
                }
                ports.extend(mine.iter().copied());
                one.ports = PortSet::from_ranges(mine).map_err(|e| e.to_string())?;
            }
            "" => return Err("a resource has no name".into()),
            other => {
                return Err(format!(
                    "resource {other:?} is not offered by this cluster (it offers cpus, mem, disk, gpus and ports)"
                ));
            }
        }
        if let Some(role) = &role {
            reservation::add(&mut out.reserved, role, &one);
        }
        one.ports = PortSet::default();
        out.all = out.all.add(&one);
    }
    out.all.ports = PortSet::from_ranges(ports).map_err(|e| e.to_string())?;
    Ok(out)
}

/// How reserved resources are written for one framework: the `role` and
/// `reservation` fields (pre-refinement), or the `reservations` stack for
/// frameworks with RESERVATION_REFINEMENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationFormat {
    PreRefinement,
    Refinement,
}

impl ReservationFormat {
    /// The format a framework reads, by its capabilities.
    pub fn of(info: &wasmos_core::FrameworkInfo) -> Self {
        if info
            .capabilities
            .iter()
            .any(|c| c == "RESERVATION_REFINEMENT")
        {
            ReservationFormat::Refinement
        } else {
            ReservationFormat::PreRefinement
        }
    }
}

/// How a bundle is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind<'a> {
    Unreserved,
    Static(&'a str),
    Dynamic(&'a str),
}

/// One bundle in Mesos' JSON form.
fn bundle_json(r: &Resources, kind: Kind<'_>, format: ReservationFormat) -> Vec<Value> {
    let tag = |mut v: Value| {
        match (kind, format) {
            (Kind::Unreserved, _) => v["role"] = json!("*"),
            // Pre-refinement, a static reservation is the role alone; a
            // dynamic one also has `reservation`.
            (Kind::Static(role), ReservationFormat::PreRefinement) => v["role"] = json!(role),
            (Kind::Dynamic(role), ReservationFormat::PreRefinement) => {
                v["role"] = json!(role);
                v["reservation"] = json!({});
            }
            (Kind::Static(role), ReservationFormat::Refinement) => {
                v["reservations"] = json!([{"type": "STATIC", "role": role}]);
            }
            (Kind::Dynamic(role), ReservationFormat::Refinement) => {
                v["reservations"] = json!([{"type": "DYNAMIC", "role": role}]);
            }
        }
        v
    };
    let scalar =
        |name: &str, v: f64| tag(json!({"name": name, "type": "SCALAR", "scalar": {"value": v}}));
    let mut out = Vec::new();
    for (name, v, always) in [
        ("cpus", r.cpus.as_f64(), true),
        ("mem", r.mem.as_f64(), true),
        ("disk", r.disk.as_f64(), true),
        ("gpus", f64::from(r.gpus), false),
    ] {
        // Unreserved bundles always name cpus, mem and disk (tools expect
        // them); reserved ones only what they hold.
        if v > 0.0 || (always && kind == Kind::Unreserved) {
            out.push(scalar(name, v));
        }
    }
    if !r.ports.is_empty() {
        let ranges: Vec<Value> = r
            .ports
            .ranges()
            .iter()
            .map(|p| json!({"begin": p.begin, "end": p.end}))
            .collect();
        out.push(tag(
            json!({"name": "ports", "type": "RANGES", "ranges": {"range": ranges}}),
        ));
    }
    out
}

/// Resources `r` reserved for `role`, of which `statik` static, in Mesos'
/// JSON form.
pub fn role_json(
    role: &str,
    r: &Resources,
    statik: &Resources,
    format: ReservationFormat,
) -> Vec<Value> {
    let mut out = bundle_json(statik, Kind::Static(role), format);
    out.extend(bundle_json(
        &r.saturating_sub(statik),
        Kind::Dynamic(role),
        format,
    ));
    out
}

/// Resources in Mesos' JSON form (unreserved: role `*`).
pub fn resources_json(r: &Resources) -> Vec<Value> {
    bundle_json(r, Kind::Unreserved, ReservationFormat::PreRefinement)
}

/// A persistent volume in Mesos' JSON form: a reserved disk resource with
/// its persistence id and mount path.
pub fn volume_json(v: &Volume, format: ReservationFormat) -> Value {
    let mut disk = bundle_json(&v.resources(), Kind::Dynamic(&v.role), format)
        .pop()
        .unwrap_or_else(|| json!({}));
    let mut persistence = json!({"id": v.id});
    if let Some(p) = &v.principal {
        persistence["principal"] = json!(p);
    }
    disk["disk"] = json!({"persistence": persistence,
        "volume": {"mode": "RW", "container_path": v.container_path}});
    disk
}

/// Resources, some reserved by role (`statik`: the static part of
/// `reserved`), and volumes, in Mesos' JSON form: the unreserved part
/// first, then each role's.
pub fn resource_list_json(
    all: &Resources,
    reserved: &RoleResources,
    statik: &RoleResources,
    volumes: &[Volume],
    format: ReservationFormat,
) -> Vec<Value> {
    let unreserved = all.saturating_sub(&reservation::total(reserved));
    let mut out = bundle_json(&unreserved, Kind::Unreserved, format);
    for (role, r) in reserved {
        let fixed = statik.get(role).cloned().unwrap_or_default();
        out.extend(role_json(role, r, &fixed, format));
    }
    out.extend(volumes.iter().map(|v| volume_json(v, format)));
    out
}

/// An offer as `mesos.v1.Offer`.
pub fn offer_json(o: &Offer, format: ReservationFormat) -> Value {
    let attributes: Vec<Value> = o
        .attributes
        .iter()
        .map(|(k, v)| json!({"name": k, "type": "TEXT", "text": {"value": v}}))
        .collect();
    let mut offer = json!({
        "id": id(&o.id),
        "framework_id": id(&o.framework_id),
        "agent_id": id(&o.agent_id),
        "hostname": o.hostname,
        "resources": resource_list_json(&o.resources, &o.reserved, &o.static_reserved, &o.volumes, format),
    });
    if !attributes.is_empty() {
        offer["attributes"] = Value::Array(attributes);
    }
    offer
}

/// A status update as `mesos.v1.TaskStatus`. `with_uuid`: updates the
/// framework must acknowledge carry their uuid (and always the agent's id);
/// ones the master makes up on the spot (reconciliation) do not.
pub fn status_json(s: &TaskStatus, with_uuid: bool) -> Value {
    let mut v = json!({
        "task_id": id(&s.task_id),
        "state": s.state.as_str(),
        "source": match s.source {
            wasmos_core::Source::Master => "SOURCE_MASTER",
            wasmos_core::Source::Agent => "SOURCE_AGENT",
            wasmos_core::Source::Executor => "SOURCE_EXECUTOR",
        },
        "timestamp": s.timestamp,
    });
    if let Some(a) = &s.agent_id {
        v["agent_id"] = id(a);
    }
    // `Other` (a reason a newer agent sent) has no Mesos name.
    if let Some(r) = s.reason.filter(|r| *r != wasmos_core::Reason::Other) {
        v["reason"] = json!(r.as_str());
    }
    if let Some(m) = &s.message {
        v["message"] = json!(m);
    }
    if let Some(h) = s.healthy {
        v["healthy"] = json!(h);
    }
    if let Some(d) = &s.data {
        v["data"] = json!(d);
    }
    if let Some(e) = &s.executor_id {
        v["executor_id"] = json!({"value": e.as_str()});
    }
    if with_uuid {
        v["uuid"] = json!(base64::engine::general_purpose::STANDARD.encode(s.uuid.as_bytes()));
    }
    v
}

/// An acknowledgement's uuid: base64 of 16 bytes.
pub fn parse_uuid(b64: &str) -> Result<uuid::Uuid, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("uuid is not base64: {e}"))?;
    uuid::Uuid::from_slice(&bytes).map_err(|_| "uuid must be 16 bytes".to_string())
}

/// The Wasmos task for a Mesos TaskInfo launched by a framework whose
/// default task user is `framework_user`, or why it cannot run here.
pub fn task_spec(t: &TaskInfo, framework_user: &str) -> Result<TaskSpec, String> {
    let task_id = t
        .task_id
        .as_ref()
        .ok_or("task_id is required")
        .and_then(|i| TaskId::new(i.value.clone()).map_err(|_| "task_id is not a valid id"))?;
    let name = t.name.clone().ok_or("name is required")?;
    if t.agent_id.is_none() {
        return Err("agent_id is required".into());
    }
    let executor = match &t.executor {
        Some(_) if t.command.is_some() => {
            return Err("a task has a command or an executor, not both".into());
        }
        Some(e) => Some(executor_spec(e, framework_user)?),
        None => None,
    };
    if let Some(e) = executor {
        if e.kind == ExecutorKind::Default {
            return Err(
                "the default executor runs task groups: launch it with LAUNCH_GROUP".into(),
            );
        }
        return custom_executor_task(t, task_id, name, e);
    }
    let command_info = t
        .command
        .as_ref()
        .ok_or("a task needs a command (or an executor)")?;
    let mut command = command(command_info)?;
    if command.user.is_none() && !framework_user.is_empty() {
        command.user = Some(framework_user.to_string());
    }
    let fetch = uris(command_info)?;
    let list = resource_list(&t.resources)?;
    let resources = list.all.clone();
    let (container, host_volumes) = match &t.container {
        None => (None, Vec::new()),
        Some(c) => {
            let (host, named) = container_volumes(c)?;
            let mut container = container(c, &resources)?;
            if let Some(ContainerInfo::Docker { docker }) = container.as_mut() {
                docker.volumes = named;
            }
            (container, host)
        }
    };
    if container.is_none() && command.value.is_empty() {
        return Err("command.value is required".into());
    }
    let labels = labels(t);
    let kill_grace_period_ms = kill_grace_ms(t);
    let health_check = t.health_check.as_ref().map(health_check).transpose()?;
    if t.check.is_some() {
        return Err("checks (TaskInfo.check) are not supported; use health_check".into());
    }
    Ok(TaskSpec {
        task_id,
        name,
        resources,
        command,
        labels,
        kill_grace_period_ms,
        health_check,
        container,
        fetch,
        readiness_check: None,
        reserved: list.reserved.clone(),
        volumes: list.mounts(),
        executor: None,
        group: None,
        task_info: None,
        accepted_roles: Vec::new(),
        host_volumes,
        discovery: discovery(t),
    })
}

/// A TaskInfo's `discovery.ports` (their `VIP_<n>` labels put a port behind
/// a virtual IP).
fn discovery(t: &TaskInfo) -> Vec<wasmos_core::task::DiscoveryPort> {
    let Some(ports) = t
        .discovery
        .as_ref()
        .and_then(|d| d["ports"]["ports"].as_array())
    else {
        return Vec::new();
    };
    ports
        .iter()
        .filter_map(|p| {
            Some(wasmos_core::task::DiscoveryPort {
                number: u16::try_from(p["number"].as_u64()?).ok()?,
                name: p["name"].as_str().map(str::to_string),
                protocol: p["protocol"].as_str().unwrap_or("tcp").to_ascii_lowercase(),
                labels: p["labels"]["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| {
                        Some((
                            l["key"].as_str()?.to_string(),
                            l["value"].as_str()?.to_string(),
                        ))
                    })
                    .collect(),
                service_port: None,
            })
        })
        .collect()
}

/// A task its custom executor runs: the agent keeps its resources and
/// hands the TaskInfo to the executor.
fn custom_executor_task(
    t: &TaskInfo,
    task_id: TaskId,
    name: String,
    executor: ExecutorSpec,
) -> Result<TaskSpec, String> {
    let list = resource_list(&t.resources)?;
    if !list.volumes.is_empty() || t.container.is_some() || t.health_check.is_some() {
        return Err(
            "a task run by a custom executor cannot have volumes, a container or a health check of its own".into(),
        );
    }
    Ok(TaskSpec {
        task_id,
        name,
        resources: list.all.clone(),
        command: CommandSpec::default(),
        labels: labels(t),
        kill_grace_period_ms: kill_grace_ms(t),
        health_check: None,
        container: None,
        fetch: Vec::new(),
        readiness_check: None,
        reserved: list.reserved,
        volumes: Vec::new(),
        executor: Some(executor),
        group: None,
        task_info: None,
        accepted_roles: Vec::new(),
        host_volumes: Vec::new(),
        discovery: Vec::new(),
    })
}

fn labels(t: &TaskInfo) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    for l in t.labels.iter().flat_map(|l| &l.labels) {
        if let Some(k) = &l.key {
            labels.insert(k.clone(), l.value.clone().unwrap_or_default());
        }
    }
    labels
}

fn kill_grace_ms(t: &TaskInfo) -> Option<u64> {
    t.kill_policy
        .as_ref()
        .and_then(|k| k.grace_period.as_ref())
        .map(|d| u64::try_from(d.nanoseconds.max(0)).unwrap_or(0) / 1_000_000)
        .map(|ms| ms.min(wasmos_core::task::MAX_KILL_GRACE_MS))
}

/// `mesos.v1.ExecutorInfo`, the parts Wasmos reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExecutorInfo {
    #[serde(rename = "type")]
    kind: Option<String>,
    executor_id: Option<Id>,
    name: Option<String>,
    command: Option<CommandInfo>,
    container: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    resources: Vec<Resource>,
    shutdown_grace_period: Option<DurationInfo>,
}

/// The executor an ExecutorInfo describes, run as the framework's
/// `framework_user` unless its command names a user.
pub fn executor_spec(v: &Value, framework_user: &str) -> Result<ExecutorSpec, String> {
    let e: ExecutorInfo = serde_json::from_value(v.clone())
        .map_err(|err| format!("executor is not a valid ExecutorInfo: {err}"))?;
    let executor_id = e
        .executor_id
        .as_ref()
        .ok_or("executor.executor_id is required")
        .and_then(|i| {
            ExecutorId::new(i.value.clone()).map_err(|_| "executor_id is not a valid id")
        })?;
    let kind = match (e.kind.as_deref(), &e.command) {
        (Some("DEFAULT"), _) => ExecutorKind::Default,
        (Some("CUSTOM"), _) | (None | Some("UNKNOWN"), Some(_)) => ExecutorKind::Custom,
        (None | Some("UNKNOWN"), None) => {
            return Err("executor.type is required (DEFAULT, or CUSTOM with a command)".into());
        }
        (Some(other), _) => return Err(format!("executor.type {other} is not known")),
    };
    if e.container.is_some() {
        return Err(
            "executors in containers are not supported; run the executor on the host".into(),
        );
    }
    let list = resource_list(&e.resources)?;
    if !list.reserved.is_empty() || !list.volumes.is_empty() {
        return Err(
            "an executor's resources must be unreserved (give reserved resources to its tasks)"
                .into(),
        );
    }
    let (command, fetch) = match &e.command {
        None => (None, Vec::new()),
        Some(c) => {
            let mut cmd = command(c)?;
            if cmd.user.is_none() && !framework_user.is_empty() {
                cmd.user = Some(framework_user.to_string());
            }
            (Some(cmd), uris(c)?)
        }
    };
    let spec = ExecutorSpec {
        executor_id,
        kind,
        name: e.name.unwrap_or_default(),
        command,
        resources: list.all,
        fetch,
        shutdown_grace_period_ms: e
            .shutdown_grace_period
            .map(|d| u64::try_from(d.nanoseconds.max(0)).unwrap_or(0) / 1_000_000),
        info: Some(v.to_string()),
    };
    spec.validate()?;
    Ok(spec)
}

fn uris(c: &CommandInfo) -> Result<Vec<FetchUri>, String> {
    c.uris
        .iter()
        .map(|u| -> Result<FetchUri, String> {
            let uri = u.value.clone().ok_or("a URI needs a value")?;
            Ok(FetchUri {
                uri,
                extract: u.extract.unwrap_or(true),
                executable: u.executable.unwrap_or(false),
                dest_path: u.output_file.clone(),
            })
        })
        .collect()
}

/// The tasks of a LAUNCH_GROUP operation (`launch_group` as given), all
/// to its executor, or why the group is invalid (each task's id, for
/// refusing them).
pub fn task_group(
    group: &Value,
    framework_user: &str,
) -> Result<Vec<TaskSpec>, (Vec<String>, String)> {
    let raw_tasks: Vec<Value> = group["task_group"]["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<String> = raw_tasks
        .iter()
        .filter_map(|t| t["task_id"]["value"].as_str().map(str::to_string))
        .collect();
    let fail = |why: String| (ids.clone(), why);
    if raw_tasks.is_empty() {
        return Err(fail("task_group.tasks is empty".into()));
    }
    let executor = executor_spec(&group["executor"], framework_user).map_err(fail)?;
    let mut out = Vec::new();
    for raw in &raw_tasks {
        let t: TaskInfo = serde_json::from_value(raw.clone())
            .map_err(|e| fail(format!("a task is not a valid TaskInfo: {e}")))?;
        if let Some(e) = &t.executor
            && e["executor_id"]["value"].as_str() != Some(executor.executor_id.as_str())
        {
            return Err(fail("a task of the group names another executor".into()));
        }
        let mut info = t;
        info.executor = None;
        let mut spec = match executor.kind {
            ExecutorKind::Default => {
                if info
                    .container
                    .as_ref()
                    .is_some_and(|c| !c.network_infos.is_empty())
                {
                    return Err(fail(
                        "tasks of a group cannot set container.network_infos".into(),
                    ));
                }
                task_spec(&info, framework_user).map_err(|e| fail(e.to_string()))?
            }
            ExecutorKind::Custom => {
                if info.command.is_some() {
                    info.executor = Some(group["executor"].clone());
                    info.command = None;
                }
                let id = info
                    .task_id
                    .as_ref()
                    .and_then(|i| TaskId::new(i.value.clone()).ok())
                    .ok_or_else(|| fail("a task's task_id is missing or not a valid id".into()))?;
                let name = info
                    .name
                    .clone()
                    .ok_or_else(|| fail("a task's name is required".into()))?;
                custom_executor_task(&info, id, name, executor.clone()).map_err(fail)?
            }
        };
        spec.executor = Some(executor.clone());
        spec.task_info = (executor.kind == ExecutorKind::Custom).then(|| raw.to_string());
        out.push(spec);
    }
    let first = out[0].task_id.clone();
    for t in &mut out {
        t.group = Some(first.clone());
    }
    Ok(out)
}

fn command(c: &CommandInfo) -> Result<CommandSpec, String> {
    let mut env = BTreeMap::new();
    for v in c.environment.iter().flat_map(|e| &e.variables) {
        let name = v
            .name
            .clone()
            .ok_or("an environment variable needs a name")?;
        if v.kind.as_deref().is_some_and(|k| k != "VALUE") {
            return Err(format!(
                "environment variable {name}: only VALUE variables are supported (no secrets)"
            ));
        }
        env.insert(name, v.value.clone().unwrap_or_default());
    }
    Ok(CommandSpec {
        shell: c.shell.unwrap_or(true),
        value: c.value.clone().unwrap_or_default(),
        arguments: c.arguments.clone(),
        env,
        user: c.user.clone().filter(|u| !u.is_empty()),
    })
}

/// A ContainerInfo's volumes: host paths (`host_path`, or a `HOST_PATH`
/// source) and Docker volumes (`DOCKER_VOLUME`, DOCKER containers only).
fn container_volumes(
    c: &ContainerInfoV1,
) -> Result<(Vec<HostVolume>, Vec<wasmos_core::container::DockerVolume>), String> {
    let docker = c.kind.as_deref() == Some("DOCKER");
    let mut host = Vec::new();
    let mut named = Vec::new();
    for (i, v) in c.volumes.iter().enumerate() {
        let at = format!("container.volumes[{i}]");
        let container_path = v["container_path"]
            .as_str()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("{at}.container_path is required"))?
            .to_string();
        let read_only = match v["mode"].as_str() {
            None | Some("RW") => false,
            Some("RO") => true,
            Some(m) => return Err(format!("{at}.mode {m} is neither RW nor RO")),
        };
        let source = &v["source"];
        match (v["host_path"].as_str(), source["type"].as_str()) {
            (legacy @ Some(_), None) | (legacy @ None, Some("HOST_PATH")) => {
                let path = match legacy {
                    Some(path) => path,
                    None => source["host_path"]["path"]
                        .as_str()
                        .ok_or_else(|| format!("{at}.source.host_path.path is required"))?,
                };
                host.push(HostVolume {
                    host_path: path.to_string(),
                    container_path,
                    read_only,
                });
            }
            (None, Some("DOCKER_VOLUME")) if docker => {
                let d = &source["docker_volume"];
                let options = d["driver_options"]["parameter"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        Some((
                            p["key"].as_str()?.to_string(),
                            p["value"].as_str()?.to_string(),
                        ))
                    })
                    .collect();
                named.push(wasmos_core::container::DockerVolume {
                    name: d["name"]
                        .as_str()
                        .ok_or_else(|| format!("{at}.source.docker_volume.name is required"))?
                        .to_string(),
                    driver: d["driver"].as_str().unwrap_or("").to_string(),
                    options,
                    container_path,
                    read_only,
                });
            }
            (None, Some("DOCKER_VOLUME")) => {
                return Err(format!("{at}: DOCKER_VOLUME needs a DOCKER container"));
            }
            (_, Some(other)) => {
                return Err(format!(
                    "{at}: volume source {other} is not supported (HOST_PATH and DOCKER_VOLUME are)"
                ));
            }
            (None, None) => {
                return Err(format!("{at} needs host_path or a source"));
            }
        }
    }
    Ok((host, named))
}

fn container(c: &ContainerInfoV1, resources: &Resources) -> Result<Option<ContainerInfo>, String> {
    if !c.network_infos.is_empty() {
        return Err("container network_infos are not supported; use docker.network".into());
    }
    match c.kind.as_deref() {
        Some("MESOS") => {
            if c.mesos.as_ref().is_some_and(|m| m.image.is_some()) {
                return Err(
                    "MESOS containers with an image are not supported; use a DOCKER container"
                        .into(),
                );
            }
            Ok(None)
        }
        Some("DOCKER") => {
            let d = c.docker.as_ref().ok_or("a DOCKER container needs docker")?;
            let image = d.image.clone().ok_or("docker.image is required")?;
            if d.privileged == Some(true) {
                return Err("privileged Docker containers are not allowed".into());
            }
            if !d.parameters.is_empty() {
                return Err("docker.parameters are not supported".into());
            }
            let network = match d.network.as_deref().unwrap_or("HOST") {
                "HOST" => DockerNetwork::Host,
                "BRIDGE" => DockerNetwork::Bridge,
                "NONE" => DockerNetwork::None,
                other => return Err(format!("docker.network {other} is not supported")),
            };
            // Wasmos publishes the n-th mapping on the task's n-th port:
            // the mappings' host ports must be the task's first ports.
            let mut mappings: Vec<&PortMappingV1> = d.port_mappings.iter().collect();
            mappings.sort_by_key(|m| m.host_port);
            let task_ports: Vec<u16> = resources.ports.ports().collect();
            let mut port_mappings = Vec::new();
            for (i, m) in mappings.iter().enumerate() {
                if task_ports.get(i).map(|p| u32::from(*p)) != Some(m.host_port) {
                    return Err(format!(
                        "port mapping to host port {} needs that port among the task's lowest ports resources",
                        m.host_port
                    ));
                }
                let container_port = u16::try_from(m.container_port)
                    .map_err(|_| format!("container_port {} is not a port", m.container_port))?;
                port_mappings.push(PortMapping {
                    container_port,
                    protocol: m.protocol.clone().unwrap_or_else(|| "tcp".into()),
                });
            }
            Ok(Some(ContainerInfo::Docker {
                docker: DockerInfo {
                    image,
                    network,
                    port_mappings,
                    force_pull_image: d.force_pull_image.unwrap_or(false),
                    volumes: Vec::new(),
                },
            }))
        }
        other => Err(format!(
            "container type {} is not supported (DOCKER or MESOS)",
            other.unwrap_or("(none)")
        )),
    }
}

fn health_check(h: &HealthCheck) -> Result<HealthCheckSpec, String> {
    let mut config = BTreeMap::new();
    let port = |p: Option<u32>| -> Result<String, String> {
        p.filter(|p| (1..=65535).contains(p))
            .map(|p| p.to_string())
            .ok_or_else(|| "a health check needs a port between 1 and 65535".to_string())
    };
    let plugin = match h.kind.as_deref() {
        Some("HTTP") => {
            let http = h.http.as_ref().ok_or("an HTTP health check needs http")?;
            config.insert("port".into(), port(http.port)?);
            config.insert(
                "path".into(),
                http.path.clone().unwrap_or_else(|| "/".into()),
            );
            if let Some(s) = &http.scheme {
                config.insert("scheme".into(), s.to_lowercase());
            }
            let statuses = if http.statuses.is_empty() {
                "200-399".to_string()
            } else {
                http.statuses
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            config.insert("statuses".into(), statuses);
            "health-http"
        }
        Some("TCP") => {
            let tcp = h.tcp.as_ref().ok_or("a TCP health check needs tcp")?;
            config.insert("port".into(), port(tcp.port)?);
            "health-tcp"
        }
        Some("COMMAND") => {
            let c = h
                .command
                .as_ref()
                .and_then(|c| c.value.clone())
                .ok_or("a COMMAND health check needs command.value")?;
            config.insert("command".into(), c);
            "health-command"
        }
        other => {
            return Err(format!(
                "health check type {} is not supported (HTTP, TCP or COMMAND)",
                other.unwrap_or("(none)")
            ));
        }
    };
    let mut spec = HealthCheckSpec::new(plugin);
    spec.config = config;
    if let Some(v) = h.delay_seconds {
        spec.delay_seconds = v;
    }
    if let Some(v) = h.interval_seconds {
        spec.interval_seconds = v;
    }
    if let Some(v) = h.timeout_seconds {
        spec.timeout_seconds = v;
    }
    if let Some(v) = h.grace_period_seconds {
        spec.grace_period_seconds = v;
    }
    if let Some(v) = h.consecutive_failures {
        spec.max_consecutive_failures = v;
    }
    spec.validate()?;
    Ok(spec)
}

/// The agent a TaskInfo names.
pub fn task_agent(t: &TaskInfo) -> Option<AgentId> {
    t.agent_id
        .as_ref()
        .and_then(|a| AgentId::new(a.value.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(json: Value) -> Result<TaskSpec, String> {
        let t: TaskInfo = serde_json::from_value(json).unwrap();
        task_spec(&t, "nobody")
    }

    #[test]
    fn a_task_for_a_custom_executor_keeps_the_executor_and_runs_as_the_framework_user() {
        let exec = json!({"executor_id": {"value": "e1"}, "name": "mine",
            "command": {"value": "./executor", "uris": [{"value": "http://h/executor"}]},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]});
        let spec = task(
            json!({"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a-S0"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
            "executor": exec, "data": "aGk="}),
        )
        .unwrap();
        let e = spec.executor.unwrap();
        assert_eq!(e.kind, ExecutorKind::Custom);
        assert_eq!(e.executor_id.as_str(), "e1");
        assert_eq!(e.command.unwrap().user.as_deref(), Some("nobody"));
        assert_eq!(e.fetch.len(), 1);
        assert_eq!(e.resources, "cpus:0.1".parse().unwrap());
        assert!(e.info.unwrap().contains("\"mine\""));
        // A command and an executor; a default executor outside a group;
        // an executor in a container: each refused with the reason.
        for (extra, why) in [
            (
                json!({"command": {"value": "x"}, "executor": {"executor_id": {"value": "e"}, "command": {"value": "y"}}}),
                "not both",
            ),
            (
                json!({"executor": {"type": "DEFAULT", "executor_id": {"value": "e"}}}),
                "LAUNCH_GROUP",
            ),
            (
                json!({"executor": {"executor_id": {"value": "e"}, "command": {"value": "y"}, "container": {"type": "MESOS"}}}),
                "container",
            ),
            (
                json!({"executor": {"executor_id": {"value": "e/x"}, "command": {"value": "y"}}}),
                "executor_id",
            ),
        ] {
            let mut t = json!({"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]});
            for (k, v) in extra.as_object().unwrap() {
                t[k] = v.clone();
            }
            let err = task(t).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_task_group_goes_whole_to_its_executor_or_is_refused_whole() {
        let member = |id: &str, cmd: Option<&str>| {
            let mut t = json!({"name": id, "task_id": {"value": id}, "agent_id": {"value": "a"},
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]});
            if let Some(c) = cmd {
                t["command"] = json!({"value": c});
            }
            t
        };
        let group = |tasks: Vec<Value>| {
            json!({"executor": {"type": "DEFAULT",
            "executor_id": {"value": "pod"}, "resources": []}, "task_group": {"tasks": tasks}})
        };
        let specs = task_group(
            &group(vec![
                member("a", Some("true")),
                member("b", Some("sleep 1")),
            ]),
            "nobody",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        for s in &specs {
            assert_eq!(s.group.as_ref().map(TaskId::as_str), Some("a"));
            assert_eq!(s.executor.as_ref().unwrap().kind, ExecutorKind::Default);
        }
        let (ids, why) = task_group(
            &group(vec![member("a", Some("true")), member("b", None)]),
            "nobody",
        )
        .unwrap_err();
        assert_eq!(ids, vec!["a".to_string(), "b".to_string()]);
        assert!(why.contains("command"), "{why}");
        let (_, why) = task_group(&group(vec![]), "nobody").unwrap_err();
        assert!(why.contains("empty"), "{why}");
    }

    #[test]
    fn a_mesos_command_task_becomes_a_wasmos_task_with_the_framework_user() {
        let spec = task(json!({
            "name": "t1", "task_id": {"value": "t1"}, "agent_id": {"value": "a-S0"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}}
            ],
            "command": {"value": "sleep 100", "environment": {"variables": [{"name": "A", "value": "1"}]},
                        "uris": [{"value": "http://h/x.tgz"}]},
            "kill_policy": {"grace_period": {"nanoseconds": 2_000_000_000i64}},
            "labels": {"labels": [{"key": "k", "value": "v"}]},
            "unknown_field": null
        }))
        .unwrap();
        assert_eq!(
            spec.resources.to_string(),
            "cpus:0.5;mem:64;disk:0;ports:[31000-31001]"
        );
        assert!(spec.command.shell, "shell defaults to true");
        assert_eq!(spec.command.user.as_deref(), Some("nobody"));
        assert_eq!(spec.command.env["A"], "1");
        assert!(spec.fetch[0].extract, "extract defaults to true");
        assert_eq!(spec.kill_grace_period_ms, Some(2000));
        assert_eq!(spec.labels["k"], "v");
    }

    #[test]
    fn what_wasmos_cannot_run_is_refused_with_the_reason() {
        let base = || {
            json!({"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
                   "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}],
                   "command": {"value": "true"}})
        };
        let mut v = base();
        v["executor"] = json!({"executor_id": {"value": "e"}});
        assert!(task(v).unwrap_err().contains("executor"));
        let mut v = base();
        v["resources"][0]["revocable"] = json!({});
        assert!(task(v).unwrap_err().contains("revocable"));
        let mut v = base();
        v["resources"][0]["name"] = json!("fpgas");
        assert!(task(v).unwrap_err().contains("fpgas"));
        let mut v = base();
        v["task_id"] = json!({"value": "../x"});
        assert!(task(v).unwrap_err().contains("task_id"));
        let mut v = base();
        v["container"] = json!({"type": "DOCKER", "docker": {"image": "x", "privileged": true}});
        assert!(task(v).unwrap_err().contains("privileged"));
    }

    #[test]
    fn reserved_resources_and_volumes_read_in_both_formats_and_write_per_framework() {
        let spec = task(
            json!({"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
            "command": {"value": "true"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "role": "db",
                 "reservation": {"principal": "p"}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 64},
                 "reservations": [{"type": "DYNAMIC", "role": "db"}]},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}, "role": "*"},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 10}, "role": "db",
                 "disk": {"persistence": {"id": "v1"},
                          "volume": {"container_path": "data", "mode": "RO"}}}]}),
        )
        .unwrap();
        assert_eq!(spec.resources.to_string(), "cpus:1;mem:96;disk:0");
        assert_eq!(spec.reserved["db"].to_string(), "cpus:1;mem:64;disk:0");
        assert_eq!(
            spec.volumes,
            vec![VolumeMount {
                id: "v1".into(),
                role: "db".into(),
                container_path: "data".into(),
                read_only: true,
                uuid: String::new(),
                create_mb: None,
            }]
        );
        // A volume on unreserved disk, or refined reservations, are refused.
        let bad = |r: Value| {
            task(
                json!({"name": "t", "task_id": {"value": "t"}, "agent_id": {"value": "a"},
                "command": {"value": "true"}, "resources": [r]}),
            )
            .unwrap_err()
        };
        assert!(
            bad(
                json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 1},
            "disk": {"persistence": {"id": "v"}, "volume": {"container_path": "d"}}})
            )
            .contains("reserved")
        );
        assert!(
            bad(
                json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 1},
            "reservations": [{"role": "a"}, {"role": "a/b"}]})
            )
            .contains("refined")
        );

        let mut reserved = RoleResources::new();
        reserved.insert("db".into(), "cpus:1".parse().unwrap());
        let volume = Volume {
            id: "v1".into(),
            role: "db".into(),
            disk: Scalar::whole(10),
            container_path: "data".into(),
            principal: None,
            uuid: String::new(),
        };
        let all: Resources = "cpus:2;mem:100".parse().unwrap();
        let old = resource_list_json(
            &all,
            &reserved,
            &RoleResources::new(),
            std::slice::from_ref(&volume),
            ReservationFormat::PreRefinement,
        );
        assert!(
            old.iter()
                .any(|r| r["name"] == "cpus" && r["role"] == "*" && r["scalar"]["value"] == 1.0)
        );
        assert!(old.iter().any(|r| r["name"] == "cpus" && r["role"] == "db"));
        assert!(
            old.iter()
                .any(|r| r["disk"]["persistence"]["id"] == "v1" && r["role"] == "db")
        );
        let new = resource_list_json(
            &all,
            &reserved,
            &RoleResources::new(),
            &[volume],
            ReservationFormat::Refinement,
        );
        // Static reservations carry no `reservation` (pre-refinement) and
        // say STATIC (refinement).
        let statik: RoleResources = [("db".to_string(), "cpus:1".parse().unwrap())].into();
        let both = resource_list_json(
            &all,
            &reserved,
            &statik,
            &[],
            ReservationFormat::PreRefinement,
        );
        let db: Vec<&Value> = both.iter().filter(|r| r["role"] == "db").collect();
        assert_eq!(db.len(), 1, "{both:?}");
        assert!(db[0].get("reservation").is_none(), "{both:?}");
        let both = resource_list_json(&all, &reserved, &statik, &[], ReservationFormat::Refinement);
        assert!(
            both.iter()
                .any(|r| r["reservations"][0]["type"] == "STATIC"),
            "{both:?}"
        );
        assert!(
            new.iter()
                .any(|r| r["name"] == "cpus" && r["reservations"][0]["role"] == "db")
        );
        // What is written reads back the same.
        let list: Vec<Resource> = serde_json::from_value(Value::Array(new)).unwrap();
        let back = resource_list(&list).unwrap();
        assert_eq!(back.all, all);
        assert_eq!(back.reserved, reserved);
        assert_eq!(back.volumes[0].id, "v1");
    }

    #[test]
    fn docker_port_mappings_follow_the_tasks_ports() {
        let spec = task(json!({
            "name": "w", "task_id": {"value": "w"}, "agent_id": {"value": "a"},
            "resources": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                          {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31006}]}}],
            "command": {"shell": false},
            "container": {"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE",
                "port_mappings": [{"host_port": 31006, "container_port": 81}, {"host_port": 31005, "container_port": 80}]}}
        }))
        .unwrap();
        let d = spec.container.unwrap();
        let d = d.docker().unwrap();
        assert_eq!(d.port_mappings[0].container_port, 80);
        assert_eq!(d.port_mappings[1].container_port, 81);
    }

    #[test]
    fn container_volumes_become_host_and_docker_volumes() {
        let base = |container: Value| {
            json!({"name": "w", "task_id": {"value": "w"}, "agent_id": {"value": "a"},
                "resources": [{"name": "mem", "type": "SCALAR", "scalar": {"value": 32}}],
                "command": {"value": "true"}, "container": container})
        };
        let spec = task(base(
            json!({"type": "DOCKER", "docker": {"image": "busybox"}, "volumes": [
            {"container_path": "/etc/app", "host_path": "/srv/app", "mode": "RO"},
            {"container_path": "logs", "mode": "RW",
             "source": {"type": "HOST_PATH", "host_path": {"path": "/var/log/app"}}},
            {"container_path": "/data", "mode": "RW", "source": {"type": "DOCKER_VOLUME",
             "docker_volume": {"driver": "local", "name": "appdata",
              "driver_options": {"parameter": [{"key": "o", "value": "bind"}]}}}}]}),
        ))
        .unwrap();
        assert_eq!(spec.host_volumes.len(), 2);
        assert!(spec.host_volumes[0].read_only);
        assert_eq!(spec.host_volumes[1].host_path, "/var/log/app");
        let d = spec.container.as_ref().unwrap().docker().unwrap();
        assert_eq!(d.volumes[0].name, "appdata");
        assert_eq!(d.volumes[0].options["o"], "bind");
        // A task on the host mounts below its sandbox; a Docker volume
        // needs Docker; other sources are refused by name.
        for (bad, why) in [
            (
                json!({"type": "MESOS", "volumes": [{"container_path": "/etc", "host_path": "/srv"}]}),
                "relative",
            ),
            (
                json!({"type": "MESOS", "volumes": [{"container_path": "d", "source": {"type": "DOCKER_VOLUME", "docker_volume": {"name": "x"}}}]}),
                "DOCKER container",
            ),
            (
                json!({"type": "MESOS", "volumes": [{"container_path": "d", "source": {"type": "SANDBOX_PATH"}}]}),
                "SANDBOX_PATH",
            ),
        ] {
            // (A spec's form is checked with the offers, by validate.)
            let err = task(base(bad))
                .and_then(|t| t.validate().map_err(|e| e.to_string()))
                .unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn statuses_carry_a_uuid_only_when_they_need_an_acknowledgement() {
        let mut s = crate::leader::master_status(
            &TaskId::new("t").unwrap(),
            Some(&AgentId::new("a").unwrap()),
            wasmos_core::TaskState::Running,
            wasmos_core::Reason::Other,
            String::new(),
            1.5,
        );
        s.source = wasmos_core::Source::Agent;
        s.uuid = uuid::Uuid::from_u128(7);
        let with = status_json(&s, true);
        assert_eq!(parse_uuid(with["uuid"].as_str().unwrap()).unwrap(), s.uuid);
        assert_eq!(with["agent_id"]["value"], "a");
        assert_eq!(with["state"], "TASK_RUNNING");
        assert_eq!(with["source"], "SOURCE_AGENT");
        assert!(
            with.get("reason").is_none(),
            "REASON_OTHER has no Mesos name"
        );
        assert!(status_json(&s, false).get("uuid").is_none());
        assert!(parse_uuid("AAAA").is_err());
    }
}
