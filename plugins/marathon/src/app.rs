//! The Marathon app definition: parsing with Marathon's defaults, its
//! validation (422 with details by path), and its JSON output.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::ids;

/// The role Marathon runs in (its `mesos_role` setting), which apps use
/// unless they name `*`.
static FRAMEWORK_ROLE: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

/// Sets the role Marathon runs in (at start and on a configuration change).
pub fn set_framework_role(role: &str) {
    *FRAMEWORK_ROLE.lock().unwrap_or_else(|p| p.into_inner()) = role.to_string();
}

fn framework_role() -> String {
    let r = FRAMEWORK_ROLE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if r.is_empty() { "*".into() } else { r }
}

/// One validation error: the JSON path and what is wrong there.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub path: String,
    pub error: String,
}

impl Invalid {
    pub fn new(path: &str, error: impl Into<String>) -> Invalid {
        Invalid {
            path: path.into(),
            error: error.into(),
        }
    }
}

/// Marathon's 422 body: `{"message":"Object is not valid","details":[...]}`.
pub fn invalid_body(errors: &[Invalid]) -> Value {
    let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in errors {
        by_path.entry(&e.path).or_default().push(&e.error);
    }
    json!({
        "message": "Object is not valid",
        "details": by_path
            .into_iter()
            .map(|(p, errs)| json!({ "path": p, "errors": errs }))
            .collect::<Vec<_>>(),
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

/// `"disabled"` or when an unreachable instance is replaced and forgotten.
#[derive(Debug, Clone, PartialEq)]
pub enum Unreachable {
    Disabled,
    Enabled {
        inactive_after: f64,
        expunge_after: f64,
    },
}

impl Unreachable {
    fn parse(v: &Value) -> Result<Unreachable, String> {
        match v {
            Value::String(s) if s == "disabled" => Ok(Unreachable::Disabled),
            Value::Object(o) => {
                let num = |a: &str, b: &str| -> Result<f64, String> {
                    match o.get(a).or_else(|| o.get(b)) {
                        None | Some(Value::Null) => Ok(0.0),
                        Some(v) => v
                            .as_f64()
                            .filter(|n| *n >= 0.0)
                            .ok_or_else(|| format!("{a} must be a number >= 0")),
                    }
                };
                let inactive_after =
                    num("inactiveAfterSeconds", "unreachableInactiveAfterSeconds")?;
                let expunge_after = num("expungeAfterSeconds", "unreachableExpungeAfterSeconds")?;
                if inactive_after > expunge_after {
                    return Err(
                        "inactiveAfterSeconds must be less or equal to expungeAfterSeconds".into(),
                    );
                }
                Ok(Unreachable::Enabled {
                    inactive_after,
                    expunge_after,
                })
            }
            _ => Err("must be \"disabled\" or {inactiveAfterSeconds, expungeAfterSeconds}".into()),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Unreachable::Disabled => json!("disabled"),
            Unreachable::Enabled {
                inactive_after,
                expunge_after,
            } => {
                json!({ "inactiveAfterSeconds": num_json(*inactive_after), "expungeAfterSeconds": num_json(*expunge_after) })
            }
        }
    }
}

/// A port the app's tasks get on their host (host networking).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortDefinition {
    #[serde(default)]
    pub port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A container port published on a host port (bridge networking).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default)]
    pub container_port: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    #[serde(default)]
    pub service_port: u32,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn tcp() -> String {
    "tcp".into()
}

/// `container.docker`, with the fields Wasmos acts on; the rest is kept
/// as given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Docker {
    pub image: String,
    #[serde(default)]
    pub force_pull_image: bool,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub parameters: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type", default = "docker_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<Docker>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub volumes: Vec<Value>,
}

fn docker_type() -> String {
    "DOCKER".into()
}

/// A health check in Marathon's form; `plugin`/`config` name any installed
/// health-check plugin (a Wasmos extension).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckDef {
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Value>,
    #[serde(default = "d300")]
    pub grace_period_seconds: f64,
    #[serde(default = "d60")]
    pub interval_seconds: f64,
    #[serde(default = "d20")]
    pub timeout_seconds: f64,
    #[serde(default = "d3")]
    pub max_consecutive_failures: u32,
    #[serde(default = "d15")]
    pub delay_seconds: f64,
    #[serde(default)]
    pub ignore_http1xx: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

fn http() -> String {
    "HTTP".into()
}
fn d300() -> f64 {
    300.0
}
fn d60() -> f64 {
    60.0
}
fn d20() -> f64 {
    20.0
}
fn d15() -> f64 {
    15.0
}
fn d3() -> u32 {
    3
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

/// One of `container.volumes`, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeDef {
    /// A local persistent volume (`persistent.size` MiB of reserved disk).
    Persistent {
        container_path: String,
        size_mb: f64,
    },
    /// A directory of the agent (`hostPath`); for a Docker container a
    /// relative one is a directory of the sandbox.
    Host {
        container_path: String,
        host_path: String,
        read_only: bool,
    },
    /// A Docker named volume (`external`, provider `dvdi`).
    External {
        container_path: String,
        name: String,
        driver: String,
        options: BTreeMap<String, String>,
        read_only: bool,
    },
}

/// Checks `container.volumes`, writing each back in its full form (`mode`
/// always set, as Marathon does). `docker`: the app runs in a Docker
/// container.
fn parse_volumes(volumes: &mut [Value], docker: bool, errs: &mut Vec<Invalid>) -> Vec<VolumeDef> {
    let mut out = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    for (i, v) in volumes.iter_mut().enumerate() {
        let at = |f: &str| format!("/container/volumes({i}){f}");
        let Some(o) = v.as_object_mut() else {
            errs.push(Invalid::new(&at(""), "error.expected.jsobject"));
            continue;
        };
        let Some(container_path) = o
            .get("containerPath")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
        else {
            errs.push(Invalid::new(&at("/containerPath"), "must not be empty"));
            continue;
        };
        if paths.contains(&container_path) {
            errs.push(Invalid::new(
                &at("/containerPath"),
                "volumes must have unique container paths",
            ));
        }
        paths.push(container_path.clone());
        let mode = match o.get("mode") {
            None => "RW".to_string(),
            Some(Value::String(m)) if m.eq_ignore_ascii_case("RW") => "RW".into(),
            Some(Value::String(m)) if m.eq_ignore_ascii_case("RO") => "RO".into(),
            Some(_) => {
                errs.push(Invalid::new(&at("/mode"), "must be RW or RO"));
                "RW".into()
            }
        };
        o.insert("mode".into(), json!(mode));
        let read_only = mode == "RO";
        let kinds = ["persistent", "hostPath", "external", "secret"]
            .iter()
            .filter(|k| o.get(**k).is_some_and(|v| !v.is_null()))
            .count();
        if kinds != 1 {
            errs.push(Invalid::new(
                &at(""),
                "a volume has exactly one of persistent, hostPath or external",
            ));
            continue;
        }
        let relative_single = !container_path.contains('/')
            && container_path != "."
            && container_path != ".."
            && !container_path.chars().any(char::is_control);
        if o.get("secret").is_some() {
            errs.push(Invalid::new(
                &at("/secret"),
                "secret volumes are not supported yet",
            ));
        } else if let Some(p) = o.get("persistent") {
            let size = p.get("size").and_then(Value::as_f64);
            match size {
                Some(n) if n.is_finite() && n > 0.0 && n.fract() == 0.0 => {}
                _ => errs.push(Invalid::new(
                    &at("/persistent/size"),
                    "must be a whole number of MiB above 0",
                )),
            }
            match p.get("type").and_then(Value::as_str) {
                None | Some("root") => {}
                Some(t) => errs.push(Invalid::new(
                    &at("/persistent/type"),
                    format!(
                        "{t} disks are not supported: volumes are made of the agents' root disk"
                    ),
                )),
            }
            if read_only {
                errs.push(Invalid::new(&at("/mode"), "a persistent volume is RW"));
            }
            if !relative_single {
                errs.push(Invalid::new(
                    &at("/containerPath"),
                    "a persistent volume's containerPath is one directory name below the sandbox (e.g. data), without /",
                ));
            }
            out.push(VolumeDef::Persistent {
                container_path,
                size_mb: size.unwrap_or(0.0),
            });
        } else if let Some(h) = o.get("hostPath") {
            let Some(host_path) = h.as_str().filter(|h| !h.is_empty()).map(str::to_string) else {
                errs.push(Invalid::new(&at("/hostPath"), "must be a non-empty string"));
                continue;
            };
            let abs_ok = |p: &str| {
                p.len() > 1
                    && p[1..]
                        .split('/')
                        .all(|s| !s.is_empty() && s != "." && s != "..")
            };
            let rel_ok = |p: &str| p.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
            let host_ok = if host_path.starts_with('/') {
                abs_ok(&host_path)
            } else {
                docker && rel_ok(&host_path)
            };
            if !host_ok {
                errs.push(Invalid::new(
                    &at("/hostPath"),
                    if docker {
                        "must be an absolute path of the agent, or a directory of the sandbox, without . or .."
                    } else {
                        "must be an absolute path of the agent, without . or .."
                    },
                ));
            }
            let cp_ok = if container_path.starts_with('/') {
                docker && abs_ok(&container_path)
            } else {
                rel_ok(&container_path)
            };
            if !cp_ok {
                errs.push(Invalid::new(
                    &at("/containerPath"),
                    if docker {
                        "must be a path without . or .."
                    } else {
                        "must be relative to the sandbox, without . or .. (a task on the host sees the host's own filesystem)"
                    },
                ));
            }
            out.push(VolumeDef::Host {
                container_path,
                host_path,
                read_only,
            });
        } else if let Some(e) = o.get("external") {
            if !docker {
                errs.push(Invalid::new(
                    &at("/external"),
                    "external volumes are Docker volumes here: they need a DOCKER container",
                ));
            }
            let name = e
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                errs.push(Invalid::new(&at("/external/name"), "must not be empty"));
            }
            match e.get("provider").and_then(Value::as_str) {
                None | Some("dvdi") => {}
                Some(p) => errs.push(Invalid::new(
                    &at("/external/provider"),
                    format!("provider {p} is not supported; use dvdi (a Docker volume driver)"),
                )),
            }
            let mut options: BTreeMap<String, String> = BTreeMap::new();
            if let Some(m) = e.get("options").and_then(Value::as_object) {
                for (k, v) in m {
                    match v.as_str() {
                        Some(v) => {
                            options.insert(k.clone(), v.to_string());
                        }
                        None => errs.push(Invalid::new(
                            &at(&format!("/external/options/{k}")),
                            "must be a string",
                        )),
                    }
                }
            }
            let driver = options
                .remove("dvdi/driver")
                .unwrap_or_else(|| "local".to_string());
            out.push(VolumeDef::External {
                container_path,
                name,
                driver,
                options,
                read_only,
            });
        }
    }
    out
}

/// An app, as stored and as served (minus what GET embeds).
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub instances: u32,
    pub container: Option<Container>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub constraints: Vec<Vec<String>>,
    pub health_checks: Vec<HealthCheckDef>,
    pub upgrade_strategy: UpgradeStrategy,
    pub backoff_seconds: f64,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: f64,
    pub port_definitions: Vec<PortDefinition>,
    pub require_ports: bool,
    pub dependencies: Vec<String>,
    pub user: Option<String>,
    pub executor: String,
    pub role: String,
    pub task_kill_grace_period_seconds: Option<f64>,
    pub kill_selection: String,
    pub unreachable: Unreachable,
    /// `host` or `container/bridge`.
    pub network_mode: String,
    /// Whose resources its tasks may take (see [`App::accepted_roles`]).
    pub accepted_resource_roles: Option<Vec<String>>,
    /// Files fetched into each task's sandbox.
    pub fetch: Vec<Fetch>,
    pub readiness_checks: Vec<ReadinessCheck>,
    /// The index of the port the readiness check names.
    pub readiness_port: Option<usize>,
    /// `container.volumes`, checked.
    pub volumes: Vec<VolumeDef>,
    pub version: String,
    pub version_info: Option<VersionInfo>,
}

/// Fields a definition may hold that Wasmos cannot honour yet: refused,
/// rather than silently ignored.
const UNSUPPORTED: &[(&str, &str)] = &[(
    "secrets",
    "secrets are not supported yet; pass values through env",
)];

fn num_json(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// Reads the field `key` of `o` as `T`, recording an error by path.
fn field<T: serde::de::DeserializeOwned>(
    o: &Map<String, Value>,
    key: &str,
    errs: &mut Vec<Invalid>,
) -> Option<T> {
    match o.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(Invalid::new(&format!("/{key}"), type_error(&e.to_string())));
                None
            }
        },
    }
}

fn type_error(msg: &str) -> String {
    // serde's "invalid type: string \"x\", expected f64 at line 1 column 3"
    msg.split(" at line ").next().unwrap_or(msg).to_string()
}

impl App {
    /// Builds an app from a JSON definition, applying Marathon's defaults
    /// and checks. `id` is the canonical id (from the path or the body).
    /// A new or changed app may use only Marathon's role or `*`
    /// (unreserved resources alone, by default). Apps already stored keep
    /// theirs when Marathon's role changes.
    pub fn check_role(&self) -> Result<(), Vec<Invalid>> {
        let own = framework_role();
        if self.role == own || self.role == "*" {
            return Ok(());
        }
        Err(vec![Invalid::new(
            "/role",
            format!(
                "role {} is not allowed: Marathon runs in role {own} (its mesos_role setting); an app may use {own} or *",
                self.role
            ),
        )])
    }

    /// New or changed constraints must be ones the installed placement
    /// plugins evaluate and accept (Marathon refuses an unknown operator
    /// with 422; here the placement plugins decide what is known). An
    /// app whose constraints stay as they were (`before`) keeps them even
    /// if a plugin has gone away: it can still be scaled, rolled back or
    /// reverted.
    pub fn check_constraints(&self, before: Option<&App>) -> Result<(), Vec<Invalid>> {
        if self.constraints.is_empty()
            || before.is_some_and(|b| b.constraints == self.constraints)
            || !cfg!(target_arch = "wasm32")
        {
            return Ok(());
        }
        let rules: Vec<wasmos_sdk::framework::Rule> = self
            .constraints
            .iter()
            .filter_map(|c| wasmos_sdk::framework::Rule::from_marathon(c).ok())
            .collect();
        wasmos_sdk::framework::placement_service::validate(&rules)
            .map_err(|why| vec![Invalid::new("/constraints", why)])
    }

    /// Whether it has persistent volumes (its tasks are resident).
    pub fn resident(&self) -> bool {
        self.volumes
            .iter()
            .any(|v| matches!(v, VolumeDef::Persistent { .. }))
    }

    /// The roles whose resources its tasks may take:
    /// `acceptedResourceRoles`, else its role's reservations and then
    /// unreserved resources (Marathon's default).
    pub fn accepted_roles(&self) -> Vec<String> {
        match &self.accepted_resource_roles {
            Some(r) if !r.is_empty() => r.clone(),
            _ if self.role == "*" => vec!["*".into()],
            _ => vec![self.role.clone(), "*".into()],
        }
    }

    pub fn from_json(id: &str, v: &Value) -> Result<App, Vec<Invalid>> {
        let Some(o) = v.as_object() else {
            return Err(vec![Invalid::new("/", "error.expected.jsobject")]);
        };
        let mut errs = Vec::new();
        if let Err(e) = ids::check(id) {
            errs.push(Invalid::new("/id", e));
        }
        for (key, why) in UNSUPPORTED {
            let present = match o.get(*key) {
                None | Some(Value::Null) => false,
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(m)) => !m.is_empty(),
                Some(_) => true,
            };
            if present {
                errs.push(Invalid::new(&format!("/{key}"), *why));
            }
        }
        let cmd: Option<String> = field(o, "cmd", &mut errs);
        let args: Vec<String> = field(o, "args", &mut errs).unwrap_or_default();
        let container: Option<Container> = field(o, "container", &mut errs);
        if cmd.is_some() && !args.is_empty() {
            errs.push(Invalid::new(
                "/",
                "AppDefinition must either contain a 'cmd' or 'args', not both.",
            ));
        }
        if cmd.as_deref().is_some_and(|c| c.trim().is_empty()) {
            errs.push(Invalid::new("/cmd", "must not be empty"));
        }
        if cmd.is_none() && args.is_empty() && container.is_none() {
            errs.push(Invalid::new(
                "/",
                "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.",
            ));
        }
        let num = |key: &str, default: f64, min: f64, errs: &mut Vec<Invalid>| -> f64 {
            match o.get(key) {
                None | Some(Value::Null) => default,
                Some(v) => match v.as_f64() {
                    Some(n) if n.is_finite() && n >= min => n,
                    Some(_) => {
                        errs.push(Invalid::new(
                            &format!("/{key}"),
                            format!("got {v}, expected {min} or more"),
                        ));
                        default
                    }
                    None => {
                        errs.push(Invalid::new(&format!("/{key}"), "error.expected.jsnumber"));
                        default
                    }
                },
            }
        };
        let cpus = num("cpus", 1.0, 0.001, &mut errs);
        let mem = num("mem", 128.0, 0.0, &mut errs);
        let disk = num("disk", 0.0, 0.0, &mut errs);
        let gpus = num("gpus", 0.0, 0.0, &mut errs) as u32;
        let instances = num("instances", 1.0, 0.0, &mut errs);
        if instances.fract() != 0.0 || instances > 100_000.0 {
            errs.push(Invalid::new(
                "/instances",
                "must be a whole number up to 100000",
            ));
        }
        let backoff_seconds = num("backoffSeconds", 1.0, 0.0, &mut errs);
        let backoff_factor = num("backoffFactor", 1.15, 1.0, &mut errs);
        let max_launch_delay_seconds = num("maxLaunchDelaySeconds", 300.0, 0.0, &mut errs);
        let task_kill_grace_period_seconds = match o.get("taskKillGracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(_) => Some(num("taskKillGracePeriodSeconds", 0.0, 0.0, &mut errs)),
        };

        let env = parse_env(o.get("env"), &mut errs);
        let labels: BTreeMap<String, String> = field(o, "labels", &mut errs).unwrap_or_default();
        let constraints = parse_constraints(o.get("constraints"), &mut errs);
        let health_checks: Vec<HealthCheckDef> =
            field(o, "healthChecks", &mut errs).unwrap_or_default();
        for (i, h) in health_checks.iter().enumerate() {
            if let Err(e) = check_health(h) {
                errs.push(Invalid::new(&format!("/healthChecks({i})"), e));
            }
        }
        if health_checks.len() > 1 {
            errs.push(Invalid::new(
                "/healthChecks",
                "Wasmos runs one health check per app; give one",
            ));
        }
        let upgrade_strategy: UpgradeStrategy =
            field(o, "upgradeStrategy", &mut errs).unwrap_or_default();
        for (name, v) in [
            (
                "minimumHealthCapacity",
                upgrade_strategy.minimum_health_capacity,
            ),
            (
                "maximumOverCapacity",
                upgrade_strategy.maximum_over_capacity,
            ),
        ] {
            if v > 1.0 {
                errs.push(Invalid::new(
                    &format!("/upgradeStrategy/{name}"),
                    "is greater than 1",
                ));
            } else if v < 0.0 {
                errs.push(Invalid::new(
                    &format!("/upgradeStrategy/{name}"),
                    "is less than 0",
                ));
            }
        }
        let unreachable = match o.get("unreachableStrategy") {
            None | Some(Value::Null) => Unreachable::Enabled {
                inactive_after: 0.0,
                expunge_after: 0.0,
            },
            Some(v) => Unreachable::parse(v).unwrap_or_else(|e| {
                errs.push(Invalid::new("/unreachableStrategy", e));
                Unreachable::Disabled
            }),
        };
        let kill_selection: String =
            field(o, "killSelection", &mut errs).unwrap_or_else(|| "YOUNGEST_FIRST".into());
        if !matches!(kill_selection.as_str(), "YOUNGEST_FIRST" | "OLDEST_FIRST") {
            errs.push(Invalid::new(
                "/killSelection",
                "must be YOUNGEST_FIRST or OLDEST_FIRST",
            ));
        }

        // Networking: `networks` (>= 1.5) or the legacy docker.network.
        let mut network_mode = "host".to_string();
        let legacy_network = o
            .get("container")
            .and_then(|c| c.get("docker"))
            .and_then(|d| d.get("network"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let networks: Option<Vec<Value>> = field(o, "networks", &mut errs);
        if let (Some(n), Some(_)) = (&networks, &legacy_network)
            && !n.is_empty()
        {
            errs.push(Invalid::new(
                "/container/docker/network",
                "must not specify both container.docker.network and networks",
            ));
        }
        if let Some(n) = legacy_network {
            match n.as_str() {
                "HOST" => {}
                "BRIDGE" => network_mode = "container/bridge".into(),
                other => errs.push(Invalid::new(
                    "/container/docker/network",
                    format!("network {other} is not supported here; use HOST or BRIDGE"),
                )),
            }
        }
        if let Some(nets) = &networks {
            if nets.len() > 1 {
                errs.push(Invalid::new(
                    "/networks",
                    "one network per app is supported",
                ));
            }
            if let Some(n) = nets.first() {
                match n.get("mode").and_then(Value::as_str).unwrap_or("host") {
                    "host" => {}
                    "container/bridge" => network_mode = "container/bridge".into(),
                    other => errs.push(Invalid::new(
                        "/networks(0)/mode",
                        format!("mode {other} is not supported here; use host or container/bridge"),
                    )),
                }
            }
        }
        let mut container = container;
        let mut volumes = Vec::new();
        if let Some(c) = &mut container {
            if !matches!(c.kind.as_str(), "DOCKER" | "MESOS") {
                errs.push(Invalid::new("/container/type", "must be DOCKER or MESOS"));
            }
            match &c.docker {
                Some(d) if d.image.trim().is_empty() => {
                    errs.push(Invalid::new("/container/docker/image", "must not be empty"))
                }
                // A MESOS container without an image runs on the host
                // (with its volumes).
                None if c.kind == "MESOS" => {}
                None => errs.push(Invalid::new(
                    "/container/docker",
                    "a container needs docker.image (an image the agents' Docker engine has or can pull)",
                )),
                _ => {}
            }
            let docker = c.docker.is_some();
            volumes = parse_volumes(&mut c.volumes, docker, &mut errs);
            // Legacy docker.portMappings move to container.portMappings.
            let legacy_maps = o
                .get("container")
                .and_then(|c| c.get("docker"))
                .and_then(|d| d.get("portMappings"))
                .cloned();
            if let Some(m) = legacy_maps.filter(|m| !m.is_null()) {
                if !c.port_mappings.is_empty() {
                    errs.push(Invalid::new(
                        "/container/docker/portMappings",
                        "cannot be combined with container.portMappings",
                    ));
                } else {
                    match serde_json::from_value(m) {
                        Ok(m) => c.port_mappings = m,
                        Err(e) => errs.push(Invalid::new(
                            "/container/docker/portMappings",
                            type_error(&e.to_string()),
                        )),
                    }
                }
            }
        }
        let port_mappings = container
            .as_ref()
            .map(|c| c.port_mappings.len())
            .unwrap_or(0);
        if port_mappings > 0 && network_mode == "host" {
            errs.push(Invalid::new(
                "/container/portMappings",
                "portMappings are not allowed with host-networking",
            ));
        }
        if container.as_ref().is_none_or(|c| c.docker.is_none()) && network_mode != "host" {
            errs.push(Invalid::new(
                "/networks",
                "bridge networking needs a Docker container",
            ));
        }
        let ports: Option<Vec<u32>> = field(o, "ports", &mut errs);
        let port_defs: Option<Vec<PortDefinition>> = field(o, "portDefinitions", &mut errs);
        let port_definitions = match (ports, port_defs) {
            (Some(p), Some(d)) if !p.is_empty() && !d.is_empty() => {
                errs.push(Invalid::new(
                    "/",
                    "cannot specify both ports and port definitions",
                ));
                d
            }
            (_, Some(d)) if !d.is_empty() || o.contains_key("portDefinitions") => d,
            (Some(p), _) => p
                .into_iter()
                .map(|port| PortDefinition {
                    port,
                    protocol: "tcp".into(),
                    name: None,
                    labels: BTreeMap::new(),
                })
                .collect(),
            _ if network_mode == "host" => vec![PortDefinition {
                port: 0,
                protocol: "tcp".into(),
                name: Some("default".into()),
                labels: BTreeMap::new(),
            }],
            _ => Vec::new(),
        };
        if network_mode != "host"
            && !port_definitions.is_empty()
            && o.contains_key("portDefinitions")
        {
            errs.push(Invalid::new(
                "/portDefinitions",
                "portDefinitions are only allowed with host-networking",
            ));
        }
        let mut seen = Vec::new();
        for (i, p) in port_definitions.iter().enumerate() {
            if p.port > 65535 {
                errs.push(Invalid::new(
                    &format!("/portDefinitions({i})/port"),
                    "must be a port number",
                ));
            }
            if p.port != 0 {
                if seen.contains(&p.port) {
                    errs.push(Invalid::new("/portDefinitions", "ports must be unique"));
                }
                seen.push(p.port);
            }
            if !matches!(p.protocol.as_str(), "tcp" | "udp" | "udp,tcp") {
                errs.push(Invalid::new(
                    &format!("/portDefinitions({i})/protocol"),
                    "must be tcp, udp or udp,tcp",
                ));
            }
        }
        let names: Vec<&String> = port_definitions
            .iter()
            .filter_map(|p| p.name.as_ref())
            .collect();
        if names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n))
        {
            errs.push(Invalid::new(
                "/portDefinitions",
                "Port names must be unique.",
            ));
        }
        let require_ports: bool = field(o, "requirePorts", &mut errs).unwrap_or(false);
        if require_ports && port_definitions.iter().any(|p| p.port == 0) {
            errs.push(Invalid::new(
                "/requirePorts",
                "requirePorts needs every portDefinitions port set (not 0)",
            ));
        }
        let dependencies: Vec<String> = field::<Vec<String>>(o, "dependencies", &mut errs)
            .unwrap_or_default()
            .into_iter()
            .map(|d| ids::canonical(&d, &ids::parent(id)))
            .collect();
        if dependencies.iter().any(|d| d == id) {
            errs.push(Invalid::new(
                "/dependencies",
                "an app cannot depend on itself",
            ));
        }
        let user: Option<String> = field(o, "user", &mut errs);
        let executor: String = field(o, "executor", &mut errs).unwrap_or_default();
        if !executor.is_empty() && executor != "//cmd" {
            errs.push(Invalid::new(
                "/executor",
                "only the command executor (\"\" or //cmd) is supported",
            ));
        }
        // Marathon's own role unless the app names one (see
        // `App::check_role`).
        let role: String = field(o, "role", &mut errs).unwrap_or_else(framework_role);
        let accepted_resource_roles: Option<Vec<String>> =
            field(o, "acceptedResourceRoles", &mut errs);
        match &accepted_resource_roles {
            Some(r) if r.is_empty() => errs.push(Invalid::new(
                "/acceptedResourceRoles",
                "must not be empty; leave it out to accept the app's role and *",
            )),
            Some(r) => {
                for x in r.iter().filter(|x| *x != "*" && **x != role) {
                    errs.push(Invalid::new(
                        "/acceptedResourceRoles",
                        format!("{x} is neither * nor the app's role ({role})"),
                    ));
                }
            }
            None => {}
        }
        let fetch = parse_fetch(o, &mut errs);
        let readiness_checks: Vec<ReadinessCheck> =
            field(o, "readinessChecks", &mut errs).unwrap_or_default();
        if readiness_checks.len() > 1 {
            errs.push(Invalid::new(
                "/readinessChecks",
                "at most one readiness check per app",
            ));
        }
        let port_names: Vec<Option<String>> = if network_mode == "host" {
            port_definitions.iter().map(|p| p.name.clone()).collect()
        } else {
            container
                .as_ref()
                .map(|c| c.port_mappings.iter().map(|m| m.name.clone()).collect())
                .unwrap_or_default()
        };
        for (i, r) in readiness_checks.iter().enumerate() {
            let path = format!("/readinessChecks({i})");
            if r.protocol != "HTTP" {
                errs.push(Invalid::new(
                    &format!("{path}/protocol"),
                    "only HTTP readiness checks are supported",
                ));
            }
            if !port_names
                .iter()
                .any(|n| n.as_deref() == Some(r.port_name.as_str()))
            {
                errs.push(Invalid::new(
                    &format!("{path}/portName"),
                    format!(
                        "no port is named {:?} in portDefinitions or portMappings",
                        r.port_name
                    ),
                ));
            }
            if r.timeout_seconds >= r.interval_seconds || r.timeout_seconds <= 0.0 {
                errs.push(Invalid::new(
                    &format!("{path}/timeoutSeconds"),
                    "must be above 0 and less than intervalSeconds",
                ));
            }
        }
        let readiness_port = readiness_checks.first().and_then(|r| {
            port_names
                .iter()
                .position(|n| n.as_deref() == Some(r.port_name.as_str()))
        });
        // Apps with persistent volumes (Marathon's resident apps) restart
        // in place: their tasks are killed before replacements start on
        // the volumes, and an unreachable one is waited for.
        let resident = volumes
            .iter()
            .any(|v| matches!(v, VolumeDef::Persistent { .. }));
        let mut upgrade_strategy = upgrade_strategy;
        let mut unreachable = unreachable;
        if resident {
            if role == "*" {
                errs.push(Invalid::new(
                    "/container/volumes",
                    "persistent volumes take disk reserved for the app's role, and this app's role is *: give Marathon a role (wasmos plugin configure marathon mesos_role=ROLE) and the app that role",
                ));
            }
            if o.get("upgradeStrategy").is_none_or(Value::is_null) {
                upgrade_strategy = UpgradeStrategy {
                    minimum_health_capacity: 0.5,
                    maximum_over_capacity: 0.0,
                };
            } else {
                if upgrade_strategy.maximum_over_capacity > 0.0 {
                    errs.push(Invalid::new(
                        "/upgradeStrategy/maximumOverCapacity",
                        "must be 0 for an app with persistent volumes (a new task takes over an old one's volume)",
                    ));
                }
                if upgrade_strategy.minimum_health_capacity > 0.5 {
                    errs.push(Invalid::new(
                        "/upgradeStrategy/minimumHealthCapacity",
                        "must be at most 0.5 for an app with persistent volumes",
                    ));
                }
            }
            if o.get("unreachableStrategy").is_none_or(Value::is_null) {
                unreachable = Unreachable::Disabled;
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(App {
            id: id.to_string(),
            cmd,
            args,
            cpus,
            mem,
            disk,
            gpus,
            instances: instances as u32,
            container,
            env,
            labels,
            constraints,
            health_checks,
            upgrade_strategy,
            backoff_seconds,
            backoff_factor,
            max_launch_delay_seconds,
            port_definitions,
            require_ports,
            dependencies,
            user,
            executor,
            role,
            task_kill_grace_period_seconds,
            kill_selection,
            unreachable,
            network_mode,
            accepted_resource_roles,
            fetch,
            readiness_checks,
            readiness_port,
            volumes,
            version: String::new(),
            version_info: None,
        })
    }

    /// The definition as Marathon 1.10 writes it (keys MP accepts only).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        if let Some(c) = &self.cmd {
            o.insert("cmd".into(), json!(c));
        }
        if !self.args.is_empty() {
            o.insert("args".into(), json!(self.args));
        }
        for (k, v) in [
            ("cpus", self.cpus),
            ("mem", self.mem),
            ("disk", self.disk),
            ("backoffSeconds", self.backoff_seconds),
            ("backoffFactor", self.backoff_factor),
            ("maxLaunchDelaySeconds", self.max_launch_delay_seconds),
        ] {
            o.insert(k.into(), num_json(v));
        }
        o.insert("gpus".into(), json!(self.gpus));
        o.insert("instances".into(), json!(self.instances));
        o.insert("executor".into(), json!(self.executor));
        if let Some(c) = &self.container {
            let mut c = serde_json::to_value(c).unwrap_or(Value::Null);
            if self.network_mode == "host"
                && let Some(m) = c.as_object_mut()
            {
                m.remove("portMappings");
            }
            o.insert("container".into(), c);
        }
        if !self.env.is_empty() {
            o.insert("env".into(), json!(self.env));
        }
        o.insert("labels".into(), json!(self.labels));
        if !self.constraints.is_empty() {
            o.insert("constraints".into(), json!(self.constraints));
        }
        if !self.health_checks.is_empty() {
            o.insert("healthChecks".into(), json!(self.health_checks));
        }
        o.insert(
            "upgradeStrategy".into(),
            json!({
                "minimumHealthCapacity": num_json(self.upgrade_strategy.minimum_health_capacity),
                "maximumOverCapacity": num_json(self.upgrade_strategy.maximum_over_capacity),
            }),
        );
        if self.network_mode == "host" {
            o.insert("portDefinitions".into(), json!(self.port_definitions));
        }
        o.insert("requirePorts".into(), json!(self.require_ports));
        if !self.dependencies.is_empty() {
            o.insert("dependencies".into(), json!(self.dependencies));
        }
        if let Some(u) = &self.user {
            o.insert("user".into(), json!(u));
        }
        o.insert("role".into(), json!(self.role));
        if let Some(g) = self.task_kill_grace_period_seconds {
            o.insert("taskKillGracePeriodSeconds".into(), num_json(g));
        }
        o.insert("killSelection".into(), json!(self.kill_selection));
        o.insert("unreachableStrategy".into(), self.unreachable.to_json());
        o.insert("networks".into(), json!([{ "mode": self.network_mode }]));
        if let Some(r) = &self.accepted_resource_roles {
            o.insert("acceptedResourceRoles".into(), json!(r));
        }
        if !self.fetch.is_empty() {
            o.insert("fetch".into(), json!(self.fetch));
        }
        if !self.readiness_checks.is_empty() {
            o.insert("readinessChecks".into(), json!(self.readiness_checks));
        }
        o.insert("version".into(), json!(self.version));
        if let Some(vi) = &self.version_info {
            o.insert("versionInfo".into(), json!(vi));
        }
        Value::Object(o)
    }

    /// Whether `other` differs from this app only in `instances` (a scale,
    /// not a restart).
    pub fn same_config(&self, other: &App) -> bool {
        let strip = |a: &App| {
            let mut a = a.clone();
            a.instances = 0;
            a.version = String::new();
            a.version_info = None;
            a
        };
        strip(self) == strip(other)
    }

    /// The ports of the app's definition that the cluster assigns (0 =
    /// pick one) or fixes: portDefinitions or portMappings' servicePort.
    pub fn service_ports(&self) -> Vec<u32> {
        if self.network_mode == "host" {
            self.port_definitions.iter().map(|p| p.port).collect()
        } else {
            self.container
                .as_ref()
                .map(|c| c.port_mappings.iter().map(|m| m.service_port).collect())
                .unwrap_or_default()
        }
    }

    /// Writes assigned service ports back into the definition.
    pub fn set_service_ports(&mut self, ports: &[u32]) {
        if self.network_mode == "host" {
            for (p, v) in self.port_definitions.iter_mut().zip(ports) {
                p.port = *v;
            }
        } else if let Some(c) = &mut self.container {
            for (m, v) in c.port_mappings.iter_mut().zip(ports) {
                m.service_port = *v;
            }
        }
    }
}

/// A file fetched into the sandbox (`fetch`, or the older `uris`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    pub uri: String,
    #[serde(default = "yes")]
    pub extract: bool,
    #[serde(default)]
    pub executable: bool,
    #[serde(default)]
    pub cache: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

fn yes() -> bool {
    true
}

/// Marathon's readiness check (HTTP, on a named port).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessCheck {
    #[serde(default = "readiness_name")]
    pub name: String,
    #[serde(default = "http")]
    pub protocol: String,
    #[serde(default = "slash")]
    pub path: String,
    pub port_name: String,
    #[serde(default = "d30")]
    pub interval_seconds: f64,
    #[serde(default = "d10")]
    pub timeout_seconds: f64,
    #[serde(default = "ok_200")]
    pub http_status_codes_for_ready: Vec<u16>,
    #[serde(default)]
    pub preserve_last_response: bool,
}

fn readiness_name() -> String {
    "readinessCheck".into()
}
fn slash() -> String {
    "/".into()
}
fn d30() -> f64 {
    30.0
}
fn d10() -> f64 {
    10.0
}
fn ok_200() -> Vec<u16> {
    vec![200]
}

/// `fetch`, or `uris` turned into fetches (archives extracted, as
/// Marathon guesses from the extension); both at once is an error.
fn parse_fetch(o: &Map<String, Value>, errs: &mut Vec<Invalid>) -> Vec<Fetch> {
    let fetch: Option<Vec<Fetch>> = field(o, "fetch", errs);
    let uris: Option<Vec<String>> = field(o, "uris", errs);
    let out = match (fetch, uris) {
        (Some(f), Some(u)) if !f.is_empty() && !u.is_empty() => {
            errs.push(Invalid::new(
                "/",
                "cannot specify both uris and fetch fields",
            ));
            Vec::new()
        }
        (Some(f), _) if !f.is_empty() => f,
        (_, Some(u)) => u
            .into_iter()
            .map(|uri| Fetch {
                extract: [
                    ".tgz", ".tar.gz", ".tar", ".zip", ".tbz2", ".tar.bz2", ".txz", ".tar.xz",
                ]
                .iter()
                .any(|x| uri.ends_with(x)),
                uri,
                executable: false,
                cache: false,
                dest_path: None,
            })
            .collect(),
        _ => Vec::new(),
    };
    for (i, f) in out.iter().enumerate() {
        let ok = ["http://", "https://", "file://"]
            .iter()
            .any(|s| f.uri.starts_with(s));
        if !ok {
            errs.push(Invalid::new(
                &format!("/fetch({i})/uri"),
                "only http://, https:// and file:// URIs can be fetched",
            ));
        }
        if let Some(d) = &f.dest_path
            && (d.starts_with('/') || d.split('/').any(|s| s == ".."))
        {
            errs.push(Invalid::new(
                &format!("/fetch({i})/destPath"),
                "must be a relative path without ..",
            ));
        }
    }
    out
}

fn parse_env(v: Option<&Value>, errs: &mut Vec<Invalid>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                match v {
                    Value::String(s) => {
                        env.insert(k.clone(), s.clone());
                    }
                    Value::Number(n) => {
                        env.insert(k.clone(), n.to_string());
                    }
                    Value::Bool(b) => {
                        env.insert(k.clone(), b.to_string());
                    }
                    Value::Object(s) if s.contains_key("secret") => errs.push(Invalid::new(
                        &format!("/env/{k}"),
                        "secrets are not supported yet; pass the value itself",
                    )),
                    _ => errs.push(Invalid::new(
                        &format!("/env/{k}"),
                        "error.expected.jsstring",
                    )),
                }
            }
        }
        Some(_) => errs.push(Invalid::new("/env", "error.expected.jsobject")),
    }
    env
}

fn parse_constraints(v: Option<&Value>, errs: &mut Vec<Invalid>) -> Vec<Vec<String>> {
    let Some(Value::Array(list)) = v else {
        if v.is_some_and(|v| !v.is_null()) {
            errs.push(Invalid::new("/constraints", "error.expected.jsarray"));
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let Some(parts) = c.as_array() else {
            errs.push(Invalid::new(
                &format!("/constraints({i})"),
                "Each constraint must have either 2 or 3 fields",
            ));
            continue;
        };
        let strings: Option<Vec<String>> = parts
            .iter()
            .map(|p| match p {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect();
        match strings {
            Some(s) if s.len() == 2 || s.len() == 3 => {
                let mut s = s;
                s[1] = s[1].to_ascii_uppercase();
                if s.len() == 3 && s[2].is_empty() {
                    s.pop();
                }
                out.push(s);
            }
            _ => errs.push(Invalid::new(
                &format!("/constraints({i})"),
                "Each constraint must have either 2 or 3 fields",
            )),
        }
    }
    out
}

fn check_health(h: &HealthCheckDef) -> Result<(), String> {
    if h.plugin.is_none() {
        match h.protocol.as_str() {
            "HTTP" | "MESOS_HTTP" | "TCP" | "MESOS_TCP" => {}
            "COMMAND" => {
                let cmd = match &h.command {
                    Some(Value::String(c)) => Some(c.as_str()),
                    Some(Value::Object(o)) => o.get("value").and_then(Value::as_str),
                    _ => None,
                };
                if cmd.is_none_or(|c| c.trim().is_empty()) {
                    return Err("a COMMAND health check needs command: {\"value\": \"...\"}".into());
                }
            }
            "HTTPS" | "MESOS_HTTPS" => {}
            other => return Err(format!("protocol {other} is not a health check protocol")),
        }
    }
    if h.interval_seconds <= 0.0 || h.timeout_seconds <= 0.0 {
        return Err("intervalSeconds and timeoutSeconds must be above 0".into());
    }
    Ok(())
}

/// Merges a partial update into an app's JSON: top-level keys of `patch`
/// replace those of `base`; the read-only keys clients echo back are dropped.
pub fn merge(base: &Value, patch: &Value) -> Value {
    let mut out = base.as_object().cloned().unwrap_or_default();
    if let Some(p) = patch.as_object() {
        for (k, v) in p {
            if READ_ONLY.contains(&k.as_str()) || k == "id" {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
    }
    // A body switching to `ports` or to other networking replaces what
    // would otherwise conflict with the stored form.
    if patch.get("ports").is_some() {
        out.remove("portDefinitions");
    }
    if patch.get("container").is_some() && patch.get("networks").is_none() {
        let legacy = patch
            .get("container")
            .and_then(|c| c.get("docker"))
            .and_then(|d| d.get("network"))
            .is_some();
        if legacy {
            out.remove("networks");
        }
    }
    Value::Object(out)
}

/// Keys GET adds that clients send back in PUT bodies.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];

/// A definition's JSON with the read-only keys removed.
pub fn writable(v: &Value) -> Value {
    merge(&json!({}), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_app_gets_marathons_defaults() {
        let v = json!({"cmd": "sleep 3600", "cpus": 0.1, "id": "test-trivial-app", "instances": 5, "mem": 16});
        let a = App::from_json("/test-trivial-app", &v).unwrap();
        assert_eq!(a.instances, 5);
        assert_eq!(a.backoff_factor, 1.15);
        assert_eq!(a.max_launch_delay_seconds, 300.0);
        assert_eq!(a.port_definitions.len(), 1);
        assert_eq!(a.kill_selection, "YOUNGEST_FIRST");
        let out = a.to_json();
        assert_eq!(out["upgradeStrategy"]["minimumHealthCapacity"], 1);
        assert_eq!(out["unreachableStrategy"]["inactiveAfterSeconds"], 0);
        assert_eq!(out["networks"][0]["mode"], "host");
        assert!(out.get("args").is_none(), "empty collections are omitted");
        assert_eq!(out["labels"], json!({}), "labels are always written");
    }

    #[test]
    fn invalid_definitions_say_what_is_wrong_by_path() {
        let v = json!({"cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}, "constraints": [["hostname"]], "cpus": "a"});
        let errs = App::from_json("/x", &v).unwrap_err();
        let body = invalid_body(&errs);
        assert_eq!(body["message"], "Object is not valid");
        let paths: Vec<&str> = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert!(
            paths.contains(&"/upgradeStrategy/minimumHealthCapacity"),
            "{paths:?}"
        );
        assert!(paths.contains(&"/constraints(0)"), "{paths:?}");
        assert!(paths.contains(&"/cpus"), "{paths:?}");
        assert!(
            App::from_json("/x", &json!({"id": "x"})).is_err(),
            "no cmd, args or container"
        );
        assert!(App::from_json("/Bad", &json!({"cmd": "x"})).is_err());
        assert!(
            App::from_json("/x", &json!({"cmd": "x", "fetch": [{"uri": "ftp://a/b"}]})).is_err()
        );
    }

    #[test]
    fn legacy_docker_networking_is_translated() {
        let v = json!({"container": {"type": "DOCKER", "docker": {"image": "nginx", "network": "BRIDGE",
            "portMappings": [{"containerPort": 80, "hostPort": 0}]}}});
        let a = App::from_json("/web", &v).unwrap();
        assert_eq!(a.network_mode, "container/bridge");
        assert_eq!(a.service_ports(), vec![0]);
        assert!(a.port_definitions.is_empty());
        let out = a.to_json();
        assert_eq!(out["container"]["portMappings"][0]["containerPort"], 80);
        assert!(out.get("portDefinitions").is_none());
    }

    #[test]
    fn only_instances_changing_is_a_scale() {
        let a = App::from_json("/x", &json!({"cmd": "x"})).unwrap();
        let mut b = a.clone();
        b.instances = 7;
        assert!(a.same_config(&b));
        b.cmd = Some("y".into());
        assert!(!a.same_config(&b));
    }

    #[test]
    fn partial_updates_keep_absent_fields_and_drop_read_only_ones() {
        let base = json!({"id": "/x", "cmd": "a", "mem": 64});
        let m = merge(&base, &json!({"instances": 3, "tasks": [], "version": "v"}));
        assert_eq!(m["cmd"], "a");
        assert_eq!(m["instances"], 3);
        assert!(m.get("tasks").is_none() && m.get("version").is_none());
    }

    #[test]
    fn an_app_uses_marathons_role_or_star_and_accepts_only_those() {
        // Tests share the process: only this one changes the role.
        set_framework_role("prod");
        let a = App::from_json("/x", &json!({"cmd": "x"})).unwrap();
        assert_eq!(a.role, "prod");
        assert_eq!(a.accepted_roles(), vec!["prod", "*"]);
        assert!(a.check_role().is_ok());
        let star = App::from_json("/x", &json!({"cmd": "x", "role": "*"})).unwrap();
        assert_eq!(star.accepted_roles(), vec!["*"]);
        let other = App::from_json("/x", &json!({"cmd": "x", "role": "other"})).unwrap();
        assert_eq!(other.check_role().unwrap_err()[0].path, "/role");
        let only = App::from_json(
            "/x",
            &json!({"cmd": "x", "acceptedResourceRoles": ["prod"]}),
        )
        .unwrap();
        assert_eq!(only.accepted_roles(), vec!["prod"]);
        for bad in [json!([]), json!(["other"])] {
            let errs = App::from_json("/x", &json!({"cmd": "x", "acceptedResourceRoles": bad}))
                .unwrap_err();
            assert_eq!(errs[0].path, "/acceptedResourceRoles", "{errs:?}");
        }
        set_framework_role("*");
    }

    #[test]
    fn volumes_are_checked_and_written_back_in_full() {
        let v = json!({"cmd": "x", "role": "db", "container": {"type": "MESOS", "volumes": [
            {"containerPath": "data", "persistent": {"size": 64}},
            {"containerPath": "logs", "hostPath": "/var/log/app", "mode": "ro"}]}});
        let a = App::from_json("/x", &v).unwrap();
        assert!(a.resident());
        // A resident app restarts in place and waits for its agent.
        assert_eq!(a.upgrade_strategy.minimum_health_capacity, 0.5);
        assert_eq!(a.upgrade_strategy.maximum_over_capacity, 0.0);
        assert_eq!(a.unreachable, Unreachable::Disabled);
        assert_eq!(
            a.volumes[1],
            VolumeDef::Host {
                container_path: "logs".into(),
                host_path: "/var/log/app".into(),
                read_only: true
            }
        );
        let out = a.to_json();
        assert_eq!(out["container"]["volumes"][0]["mode"], "RW");
        assert_eq!(out["container"]["volumes"][1]["mode"], "RO");
        let docker = json!({"container": {"type": "DOCKER", "docker": {"image": "busybox"}, "volumes": [
            {"containerPath": "/var/lib/db", "external": {"name": "dbdata", "provider": "dvdi",
             "options": {"dvdi/driver": "rexray", "size": "5"}}}]}});
        let d = App::from_json("/y", &docker).unwrap();
        assert!(!d.resident());
        assert_eq!(
            d.volumes[0],
            VolumeDef::External {
                container_path: "/var/lib/db".into(),
                name: "dbdata".into(),
                driver: "rexray".into(),
                options: [("size".to_string(), "5".to_string())].into(),
                read_only: false
            }
        );

        let bad = json!({"cmd": "x", "role": "*", "container": {"type": "MESOS", "volumes": [
            {"containerPath": "a/b", "persistent": {"size": 0, "type": "mount"}},
            {"containerPath": "/abs", "hostPath": "rel"},
            {"containerPath": "c", "external": {"name": "v"}},
            {"containerPath": "d", "secret": "s"},
            {"containerPath": "e"},
            {"containerPath": "c", "hostPath": "/srv", "mode": "RX"}]}});
        let errs = App::from_json("/x", &bad).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "/container/volumes(0)/containerPath",
            "/container/volumes(0)/persistent/size",
            "/container/volumes(0)/persistent/type",
            "/container/volumes(1)/hostPath",
            "/container/volumes(1)/containerPath",
            "/container/volumes(2)/external",
            "/container/volumes(3)/secret",
            "/container/volumes(4)",
            "/container/volumes(5)/containerPath",
            "/container/volumes(5)/mode",
            "/container/volumes",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let over = json!({"cmd": "x", "role": "db",
            "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5},
            "container": {"type": "MESOS", "volumes": [
                {"containerPath": "data", "persistent": {"size": 1}}]}});
        let errs = App::from_json("/x", &over).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/upgradeStrategy/maximumOverCapacity",
                "/upgradeStrategy/minimumHealthCapacity"
            ]
        );
    }
}
