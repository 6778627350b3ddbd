//! A Chronos job definition: parsed leniently from Chronos' job JSON,
//! written back with every field and Chronos' defaults.
//!
//! Chronos' hand-written deserializer takes what it knows and ignores the
//! rest: missing fields get defaults, numbers may arrive as strings, `0`
//! resources mean the configured default. Where its input is not usable at
//! all (a `cpus` of `"lots"`, a constraint operator it would silently drop,
//! a container it cannot run) this module refuses it with a message naming
//! the field instead.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Where a job's runs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `schedule` (ISO 8601 repeating interval) in `time_zone`.
    Scheduled { schedule: String, time_zone: String },
    /// Runs after its parents succeed.
    Dependent { parents: Vec<String> },
}

/// A file fetched into the run's sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetch {
    pub uri: String,
    pub executable: bool,
    pub cache: bool,
    pub extract: bool,
    pub output_file: Option<String>,
}

/// A Docker container to run the job in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub image: String,
    /// `HOST` or `BRIDGE`.
    pub network: String,
    pub force_pull_image: bool,
    /// Directories of the agent mounted into the container.
    #[serde(default)]
    pub volumes: Vec<HostVolume>,
}

/// One of `container.volumes`: an agent's directory (`hostPath`, mounted
/// only beneath the agent's `--host-volumes`) at `containerPath`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostVolume {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// A job as its owner defined it (server-kept counters live elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDef {
    pub name: String,
    pub command: String,
    pub shell: bool,
    pub retries: u32,
    pub owner: String,
    pub owner_name: String,
    pub description: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub disabled: bool,
    pub soft_error: bool,
    pub data_processing_job_type: bool,
    pub high_priority: bool,
    pub run_as_user: String,
    pub concurrent: bool,
    /// Seconds a run may take before it is killed and counted failed; 0
    /// for no limit.
    pub max_completion_time: u64,
    pub fetch: Vec<Fetch>,
    /// Given as the deprecated `uris` (echoed in that form too).
    pub uris_given: bool,
    pub environment_variables: Vec<(String, String)>,
    pub arguments: Vec<String>,
    pub container: Option<Container>,
    /// `[attribute, EQUALS|LIKE|UNLIKE, value]`.
    pub constraints: Vec<[String; 3]>,
    pub kind: Kind,
    /// Chronos 2.x: missed occurrences older than this (ISO 8601) are
    /// skipped; None coalesces them (3.x).
    pub epsilon: Option<String>,
    /// Chronos 2.x's `async`, kept to echo it.
    pub async_: bool,
}

/// Counters a client may send back with a job (Chronos takes them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CountersIn {
    pub success_count: Option<u64>,
    pub error_count: Option<u64>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub errors_since_last_success: Option<u64>,
}

/// What the server keeps about a job's results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub success_count: u64,
    pub error_count: u64,
    pub last_success: String,
    pub last_error: String,
    pub errors_since_last_success: u64,
}

impl Counters {
    /// Takes what the client sent, keeping the rest.
    pub fn merge(&mut self, c: &CountersIn) {
        if let Some(v) = c.success_count {
            self.success_count = v;
        }
        if let Some(v) = c.error_count {
            self.error_count = v;
        }
        if let Some(v) = &c.last_success {
            self.last_success = v.clone();
        }
        if let Some(v) = &c.last_error {
            self.last_error = v.clone();
        }
        if let Some(v) = c.errors_since_last_success {
            self.errors_since_last_success = v;
        }
    }

    /// `success`, `failure` or `fresh`, as Chronos' graph shows a job
    /// (timestamps compare as text: they share one format).
    pub fn status(&self) -> &'static str {
        match (self.last_success.is_empty(), self.last_error.is_empty()) {
            (true, true) => "fresh",
            (true, false) => "failure",
            (false, true) => "success",
            (false, false) if self.last_success > self.last_error => "success",
            _ => "failure",
        }
    }
}

/// Defaults from the plugin's configuration (Chronos' command-line flags).
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub user: String,
    /// The epsilon of jobs posted through the 2.x prefix.
    pub epsilon: String,
}

/// Which endpoint a job arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Iso8601,
    Dependency,
}

/// The characters Chronos allows in a job name (`[\w.-]+`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if !ok || name == "." || name == ".." {
        return Err(format!(
            "the job's name {name:?} is invalid. Allowed names: '([\\w\\.-]+)', at most 200 characters"
        ));
    }
    Ok(())
}

fn text(v: &Value, field: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(format!("{field} must be a string")),
    }
}

fn number(v: &Value, field: &str) -> Result<Option<f64>, String> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(x) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
        Some(_) => Err(format!("{field} must not be negative")),
        None => Err(format!("{field} must be a number, got {v}")),
    }
}

fn whole(v: &Value, field: &str) -> Result<Option<u64>, String> {
    match number(v, field)? {
        None => Ok(None),
        Some(x) if x.fract() == 0.0 && x <= 1e15 => Ok(Some(x as u64)),
        Some(_) => Err(format!("{field} must be a whole number, got {v}")),
    }
}

fn flag(v: &Value, field: &str) -> Result<Option<bool>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        _ => Err(format!("{field} must be true or false, got {v}")),
    }
}

fn texts(v: &Value, field: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                text(x, &format!("{field}[{i}]"))?
                    .ok_or_else(|| format!("{field}[{i}] must be a string"))
            })
            .collect(),
        _ => Err(format!("{field} must be a list of strings")),
    }
}

impl JobDef {
    /// Parses a job posted to `endpoint`. `legacy` is the 2.x prefix.
    pub fn parse(
        body: &Value,
        endpoint: Endpoint,
        legacy: bool,
        defaults: &Defaults,
        now_iso: &str,
    ) -> Result<(JobDef, CountersIn), String> {
        let Value::Object(o) = body else {
            return Err("a job is a JSON object".into());
        };
        let get = |k: &str| o.get(k).unwrap_or(&Value::Null);
        let name = text(get("name"), "name")?.ok_or("a job needs a name")?;
        check_name(&name)?;
        let resource = |k: &str, default: f64| -> Result<f64, String> {
            Ok(number(get(k), k)?.filter(|x| *x > 0.0).unwrap_or(default))
        };
        let executor = text(get("executor"), "executor")?.unwrap_or_default();
        if !executor.is_empty() {
            return Err(format!(
                "executor {executor:?}: custom executors are not supported; leave it empty for the command executor"
            ));
        }
        let uris = texts(get("uris"), "uris")?;
        let fetch_given = !matches!(get("fetch"), Value::Null)
            && get("fetch").as_array().is_none_or(|a| !a.is_empty());
        if !uris.is_empty() && fetch_given {
            return Err(format!(
                "Tried to add both uri (deprecated) and fetch parameters on {name}"
            ));
        }
        let fetch = if uris.is_empty() {
            parse_fetch(get("fetch"))?
        } else {
            uris.iter()
                .map(|u| Fetch {
                    uri: u.clone(),
                    executable: false,
                    cache: false,
                    extract: true,
                    output_file: None,
                })
                .collect()
        };
        let parents = match get("parents") {
            Value::Null => None,
            v => Some(texts(v, "parents")?),
        };
        let schedule = text(get("schedule"), "schedule")?;
        let time_zone = text(get("scheduleTimeZone"), "scheduleTimeZone")?.unwrap_or_default();
        let kind = match (endpoint, parents) {
            (Endpoint::Dependency, Some(p)) if !p.is_empty() => {
                for (i, parent) in p.iter().enumerate() {
                    check_name(parent).map_err(|e| format!("parents[{i}]: {e}"))?;
                }
                if p.contains(&name) {
                    return Err(format!("job {name} cannot be its own parent"));
                }
                let mut unique = p.clone();
                unique.sort();
                unique.dedup();
                Kind::Dependent { parents: unique }
            }
            (Endpoint::Dependency, _) => {
                return Err("Error, parent does not exist: a dependent job needs a non-empty list of parents".into());
            }
            (Endpoint::Iso8601, Some(p)) if !p.is_empty() => {
                return Err("a job with parents is a dependent job: post it to /dependency".into());
            }
            (Endpoint::Iso8601, _) => Kind::Scheduled {
                // Chronos: a job with neither runs once, now.
                schedule: schedule.unwrap_or_else(|| format!("R1/{now_iso}/PT24H")),
                time_zone,
            },
        };
        let epsilon = match text(get("epsilon"), "epsilon")? {
            Some(e) if !e.trim().is_empty() => {
                crate::schedule::duration_ms(&e).map_err(|m| format!("epsilon: {m}"))?;
                Some(e.trim().to_ascii_uppercase())
            }
            _ if legacy => Some(defaults.epsilon.clone()),
            _ => None,
        };
        let def = JobDef {
            command: text(get("command"), "command")?.unwrap_or_default(),
            shell: flag(get("shell"), "shell")?.unwrap_or(true),
            retries: whole(get("retries"), "retries")?.map_or(2, |r| r.min(1000) as u32),
            owner: text(get("owner"), "owner")?.unwrap_or_default(),
            owner_name: text(get("ownerName"), "ownerName")?.unwrap_or_default(),
            description: text(get("description"), "description")?.unwrap_or_default(),
            cpus: resource("cpus", defaults.cpus)?,
            mem: resource("mem", defaults.mem)?,
            disk: resource("disk", defaults.disk)?,
            disabled: flag(get("disabled"), "disabled")?.unwrap_or(false),
            soft_error: flag(get("softError"), "softError")?.unwrap_or(false),
            data_processing_job_type: flag(get("dataProcessingJobType"), "dataProcessingJobType")?
                .unwrap_or(false),
            high_priority: flag(get("highPriority"), "highPriority")?.unwrap_or(false),
            run_as_user: text(get("runAsUser"), "runAsUser")?
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| defaults.user.clone()),
            concurrent: flag(get("concurrent"), "concurrent")?.unwrap_or(false),
            max_completion_time: whole(get("maxCompletionTime"), "maxCompletionTime")?.unwrap_or(0),
            fetch,
            uris_given: !uris.is_empty(),
            environment_variables: parse_env(get("environmentVariables"))?,
            arguments: texts(get("arguments"), "arguments")?,
            container: parse_container(get("container"))?,
            constraints: parse_constraints(get("constraints"))?,
            kind,
            epsilon,
            async_: flag(get("async"), "async")?.unwrap_or(false),
            name,
        };
        if def.command.trim().is_empty() && def.container.is_none() {
            return Err(format!(
                "job {}: command is empty (a job without a container needs a command)",
                def.name
            ));
        }
        let counters = CountersIn {
            success_count: whole(get("successCount"), "successCount")?,
            error_count: whole(get("errorCount"), "errorCount")?,
            last_success: text(get("lastSuccess"), "lastSuccess")?,
            last_error: text(get("lastError"), "lastError")?,
            errors_since_last_success: whole(
                get("errorsSinceLastSuccess"),
                "errorsSinceLastSuccess",
            )?,
        };
        Ok((def, counters))
    }

    pub fn parents(&self) -> &[String] {
        match &self.kind {
            Kind::Dependent { parents } => parents,
            Kind::Scheduled { .. } => &[],
        }
    }

    /// The job as Chronos writes it (`legacy`: the 2.x shape, with
    /// `epsilon` and `async`); `schedule` is the current canonical one.
    pub fn to_json(&self, c: &Counters, schedule: Option<&str>, legacy: bool) -> Value {
        let fetch: Vec<Value> = self
            .fetch
            .iter()
            .map(|f| {
                let mut v = json!({
                    "uri": f.uri, "executable": f.executable, "cache": f.cache, "extract": f.extract,
                });
                if let Some(o) = &f.output_file {
                    v["output_file"] = json!(o);
                }
                v
            })
            .collect();
        let uris: Vec<&str> = self.fetch.iter().map(|f| f.uri.as_str()).collect();
        let mut o = Map::new();
        let mut put = |k: &str, v: Value| {
            o.insert(k.to_string(), v);
        };
        put("name", json!(self.name));
        put("command", json!(self.command));
        put("shell", json!(self.shell));
        put("executor", json!(""));
        put("executorFlags", json!(""));
        put("taskInfoData", json!(""));
        put("retries", json!(self.retries));
        put("owner", json!(self.owner));
        put("ownerName", json!(self.owner_name));
        put("description", json!(self.description));
        put("successCount", json!(c.success_count));
        put("errorCount", json!(c.error_count));
        put("lastSuccess", json!(c.last_success));
        put("lastError", json!(c.last_error));
        put("cpus", json!(self.cpus));
        put("disk", json!(self.disk));
        put("mem", json!(self.mem));
        put("disabled", json!(self.disabled));
        put("softError", json!(self.soft_error));
        put(
            "dataProcessingJobType",
            json!(self.data_processing_job_type),
        );
        put("errorsSinceLastSuccess", json!(c.errors_since_last_success));
        put("fetch", Value::Array(fetch));
        put("uris", json!(uris));
        put(
            "environmentVariables",
            Value::Array(
                self.environment_variables
                    .iter()
                    .map(|(n, v)| json!({ "name": n, "value": v }))
                    .collect(),
            ),
        );
        put("arguments", json!(self.arguments));
        put("highPriority", json!(self.high_priority));
        put("runAsUser", json!(self.run_as_user));
        put("concurrent", json!(self.concurrent));
        put("maxCompletionTime", json!(self.max_completion_time));
        put("constraints", json!(self.constraints));
        if let Some(c) = &self.container {
            put(
                "container",
                json!({
                    "type": "DOCKER", "image": c.image, "network": c.network,
                    "networkInfos": [], "forcePullImage": c.force_pull_image,
                    "volumes": c.volumes.iter().map(|v| json!({
                        "hostPath": v.host_path, "containerPath": v.container_path,
                        "mode": if v.read_only { "RO" } else { "RW" },
                    })).collect::<Vec<_>>(),
                    "parameters": [],
                }),
            );
        }
        match &self.kind {
            Kind::Scheduled { time_zone, .. } => {
                put("schedule", json!(schedule.unwrap_or("")));
                put("scheduleTimeZone", json!(time_zone));
            }
            Kind::Dependent { parents } => put("parents", json!(parents)),
        }
        if legacy {
            put("epsilon", json!(self.epsilon.as_deref().unwrap_or("PT60S")));
            put("async", json!(self.async_));
        }
        Value::Object(o)
    }
}

fn parse_fetch(v: &Value) -> Result<Vec<Fetch>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("fetch must be a list of {\"uri\": ...}".into()),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let field = |k: &str| f.get(k).unwrap_or(&Value::Null);
            let uri = text(field("uri"), &format!("fetch[{i}].uri"))?
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| format!("fetch[{i}] needs a uri"))?;
            Ok(Fetch {
                uri,
                executable: flag(field("executable"), &format!("fetch[{i}].executable"))?
                    .unwrap_or(false),
                cache: flag(field("cache"), &format!("fetch[{i}].cache"))?.unwrap_or(false),
                extract: flag(field("extract"), &format!("fetch[{i}].extract"))?.unwrap_or(true),
                output_file: text(field("output_file"), &format!("fetch[{i}].output_file"))?
                    .filter(|o| !o.is_empty()),
            })
        })
        .collect()
}

fn parse_env(v: &Value) -> Result<Vec<(String, String)>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("environmentVariables must be a list of {\"name\", \"value\"}".into()),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let name = text(e.get("name").unwrap_or(&Value::Null), "name")?
                .filter(|n| !n.is_empty() && !n.contains('='))
                .ok_or_else(|| format!("environmentVariables[{i}] needs a name without `=`"))?;
            let value = text(
                e.get("value").unwrap_or(&Value::Null),
                &format!("environmentVariables[{i}].value"),
            )?
            .unwrap_or_default();
            Ok((name, value))
        })
        .collect()
}

fn parse_container(v: &Value) -> Result<Option<Container>, String> {
    let Value::Object(o) = v else {
        return match v {
            Value::Null => Ok(None),
            _ => Err("container must be an object".into()),
        };
    };
    let get = |k: &str| o.get(k).unwrap_or(&Value::Null);
    // Chronos reads a container only when it has an image.
    let Some(image) = text(get("image"), "container.image")?.filter(|i| !i.trim().is_empty())
    else {
        return Ok(None);
    };
    if image.contains(char::is_whitespace) {
        return Err(format!(
            "container.image {image:?} is not an image reference"
        ));
    }
    let kind = text(get("type"), "container.type")?
        .unwrap_or_else(|| "DOCKER".into())
        .to_ascii_uppercase();
    if kind != "DOCKER" {
        return Err(format!(
            "container.type {kind}: only DOCKER containers run here (through the agent's Docker engine)"
        ));
    }
    let network = text(get("network"), "container.network")?
        .unwrap_or_else(|| "HOST".into())
        .to_ascii_uppercase();
    if network != "HOST" && network != "BRIDGE" {
        return Err(format!(
            "container.network {network}: use HOST or BRIDGE (user networks are not supported yet)"
        ));
    }
    for unsupported in ["parameters", "networkInfos"] {
        if get(unsupported).as_array().is_some_and(|a| !a.is_empty()) {
            return Err(format!(
                "container.{unsupported} is not supported yet; remove it (a job's files can come through fetch)"
            ));
        }
    }
    let volumes = match get("volumes") {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_volume(i, v))
            .collect::<Result<Vec<_>, String>>()?,
        _ => return Err("container.volumes must be a list".into()),
    };
    Ok(Some(Container {
        image,
        network,
        force_pull_image: flag(get("forcePullImage"), "container.forcePullImage")?.unwrap_or(false),
        volumes,
    }))
}

/// `{"hostPath", "containerPath", "mode"}` (mode RW or RO, any case; RW
/// when absent). External volumes are refused.
fn parse_volume(i: usize, v: &Value) -> Result<HostVolume, String> {
    let at = format!("container.volumes[{i}]");
    if v.get("external").is_some_and(|e| !e.is_null()) {
        return Err(format!(
            "{at}: external volumes are not supported; mount an agent directory with hostPath"
        ));
    }
    let path = |k: &str| -> Result<String, String> {
        let p = v
            .get(k)
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("{at}.{k} is required"))?;
        let segments_ok = p
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .all(|s| s != "." && s != "..");
        if !segments_ok {
            return Err(format!("{at}.{k} {p:?} must not hold . or .."));
        }
        // Trailing slashes (`/logs/`) are the directory itself.
        Ok(if p.len() > 1 {
            p.trim_end_matches('/').to_string()
        } else {
            p.to_string()
        })
    };
    let read_only = match v.get("mode").and_then(Value::as_str) {
        None => false,
        Some(m) if m.eq_ignore_ascii_case("RW") => false,
        Some(m) if m.eq_ignore_ascii_case("RO") => true,
        Some(m) => return Err(format!("{at}.mode {m:?} must be RW or RO")),
    };
    Ok(HostVolume {
        host_path: path("hostPath")?,
        container_path: path("containerPath")?,
        read_only,
    })
}

fn parse_constraints(v: &Value) -> Result<Vec<[String; 3]>, String> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err("constraints must be a list of [attribute, operator, value]".into()),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let parts = texts(c, &format!("constraints[{i}]"))?;
            let [attr, op, value] = <[String; 3]>::try_from(parts).map_err(|_| {
                format!("constraints[{i}] must be [attribute, EQUALS|LIKE|UNLIKE, value]")
            })?;
            let op = op.to_ascii_uppercase();
            if !matches!(op.as_str(), "EQUALS" | "LIKE" | "UNLIKE") {
                return Err(format!(
                    "constraints[{i}]: operator {op} is not one of Chronos' EQUALS, LIKE, UNLIKE"
                ));
            }
            if attr.is_empty() {
                return Err(format!("constraints[{i}] needs an attribute"));
            }
            Ok([attr, op, value])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            cpus: 0.1,
            mem: 128.0,
            disk: 256.0,
            user: "root".into(),
            epsilon: "PT60S".into(),
        }
    }

    fn parse(v: Value, e: Endpoint) -> Result<JobDef, String> {
        JobDef::parse(&v, e, false, &defaults(), "2026-01-01T00:00:00.000Z").map(|(d, _)| d)
    }

    #[test]
    fn the_chronos_python_job_gets_chronos_defaults() {
        let d = parse(
            json!({"command": "echo 1", "name": "myjob", "owner": "", "disabled": false,
                   "schedule": "R0/2014-01-01T00:00:00Z/PT60M"}),
            Endpoint::Iso8601,
        )
        .unwrap();
        let out = d.to_json(
            &Counters::default(),
            Some("R0/2014-01-01T00:00:00.000Z/PT60M"),
            false,
        );
        let want = json!({"name":"myjob","command":"echo 1","shell":true,"executor":"","executorFlags":"",
            "taskInfoData":"","retries":2,"owner":"","ownerName":"","description":"","successCount":0,
            "errorCount":0,"lastSuccess":"","lastError":"","cpus":0.1,"disk":256.0,"mem":128.0,
            "disabled":false,"softError":false,"dataProcessingJobType":false,"errorsSinceLastSuccess":0,
            "fetch":[],"uris":[],"environmentVariables":[],"arguments":[],"highPriority":false,
            "runAsUser":"root","concurrent":false,"maxCompletionTime":0,"constraints":[],
            "schedule":"R0/2014-01-01T00:00:00.000Z/PT60M","scheduleTimeZone":""});
        assert_eq!(out, want);
        let legacy = d.to_json(&Counters::default(), Some(""), true);
        assert_eq!(legacy["epsilon"], "PT60S");
        assert_eq!(legacy["async"], false);
    }

    #[test]
    fn numbers_and_flags_may_arrive_as_strings_and_zero_means_default() {
        let d = parse(
            json!({"name": "j", "command": "x", "cpus": "0.5", "mem": 0, "retries": "3",
                   "shell": "false", "unknown": {"ignored": true}}),
            Endpoint::Iso8601,
        )
        .unwrap();
        assert_eq!((d.cpus, d.mem, d.retries, d.shell), (0.5, 128.0, 3, false));
        let e = parse(
            json!({"name": "j", "command": "x", "cpus": "lots"}),
            Endpoint::Iso8601,
        )
        .unwrap_err();
        assert!(e.contains("cpus"), "{e}");
    }

    #[test]
    fn names_follow_chronos_rules() {
        for bad in ["job with spaces", "", "a/b", "..", "x\u{e9}"] {
            let e = parse(json!({"name": bad, "command": "x"}), Endpoint::Iso8601).unwrap_err();
            assert!(e.contains("name"), "{bad}: {e}");
        }
        assert!(
            parse(
                json!({"name": "a.b-c_1", "command": "x"}),
                Endpoint::Iso8601
            )
            .is_ok()
        );
    }

    #[test]
    fn uris_and_fetch_together_are_refused_and_each_mirrors_the_other() {
        let e = parse(
            json!({"name": "j", "command": "x", "uris": ["http://a/b"], "fetch": [{"uri": "http://c"}]}),
            Endpoint::Iso8601,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "Tried to add both uri (deprecated) and fetch parameters on j"
        );
        let d = parse(
            json!({"name": "j", "command": "x", "uris": ["http://a/b"]}),
            Endpoint::Iso8601,
        )
        .unwrap();
        let out = d.to_json(&Counters::default(), Some(""), false);
        assert_eq!(out["uris"], json!(["http://a/b"]));
        assert_eq!(out["fetch"][0]["uri"], "http://a/b");
    }

    #[test]
    fn endpoints_and_kinds_agree() {
        let dep = parse(
            json!({"name": "c", "command": "x", "parents": ["b", "a", "a"]}),
            Endpoint::Dependency,
        )
        .unwrap();
        assert_eq!(dep.parents(), ["a", "b"]);
        assert!(
            parse(
                json!({"name": "c", "command": "x", "parents": []}),
                Endpoint::Dependency
            )
            .is_err()
        );
        assert!(
            parse(
                json!({"name": "c", "command": "x", "parents": ["c"]}),
                Endpoint::Dependency
            )
            .is_err()
        );
        assert!(
            parse(
                json!({"name": "c", "command": "x", "parents": ["a"]}),
                Endpoint::Iso8601
            )
            .is_err()
        );
        let once = parse(json!({"name": "c", "command": "x"}), Endpoint::Iso8601).unwrap();
        assert_eq!(
            once.kind,
            Kind::Scheduled {
                schedule: "R1/2026-01-01T00:00:00.000Z/PT24H".into(),
                time_zone: String::new()
            }
        );
    }

    #[test]
    fn constraints_and_containers_outside_what_runs_are_refused() {
        assert!(parse(
            json!({"name": "j", "command": "x", "constraints": [["rack", "EQUALS", "r1"], ["host", "like", "a.*"]]}),
            Endpoint::Iso8601
        )
        .is_ok());
        let e = parse(
            json!({"name": "j", "command": "x", "constraints": [["rack", "GROUP_BY", "2"]]}),
            Endpoint::Iso8601,
        )
        .unwrap_err();
        assert!(e.contains("GROUP_BY"), "{e}");
        let d = parse(
            json!({"name": "j", "command": "", "container": {"type": "docker", "image": "busybox", "network": "bridge"}}),
            Endpoint::Iso8601,
        )
        .unwrap();
        assert_eq!(d.container.unwrap().network, "BRIDGE");
        let e = parse(
            json!({"name": "j", "command": "x", "container": {"type": "MESOS", "image": "busybox"}}),
            Endpoint::Iso8601,
        )
        .unwrap_err();
        assert!(e.contains("DOCKER"), "{e}");
        let e = parse(
            json!({"name": "j", "command": "x", "container": {"image": "b", "volumes": [{"hostPath": "/"}]}}),
            Endpoint::Iso8601,
        )
        .unwrap_err();
        assert!(e.contains("container.volumes[0].containerPath"), "{e}");
        for (bad, why) in [
            (
                json!({"hostPath": "/a", "containerPath": "/b", "mode": "RX"}),
                "mode",
            ),
            (
                json!({"hostPath": "/a/../etc", "containerPath": "/b"}),
                "..",
            ),
            (
                json!({"containerPath": "/b", "external": {"name": "v"}}),
                "external",
            ),
        ] {
            let e = parse(
                json!({"name": "j", "command": "x", "container": {"image": "b", "volumes": [bad]}}),
                Endpoint::Iso8601,
            )
            .unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let j = parse(
            json!({"name": "j", "command": "x", "container": {"image": "b", "volumes": [
                {"hostPath": "/logs/", "containerPath": "/var/log/", "mode": "ro"}]}}),
            Endpoint::Iso8601,
        )
        .unwrap();
        assert_eq!(
            j.container.unwrap().volumes,
            vec![HostVolume {
                host_path: "/logs".into(),
                container_path: "/var/log".into(),
                read_only: true
            }]
        );
        assert!(parse(json!({"name": "j", "command": " "}), Endpoint::Iso8601).is_err());
    }

    #[test]
    fn status_compares_the_last_success_and_error() {
        let mut c = Counters::default();
        assert_eq!(c.status(), "fresh");
        c.last_error = "2026-01-01T00:00:00.000Z".into();
        assert_eq!(c.status(), "failure");
        c.last_success = "2026-01-01T00:00:01.000Z".into();
        assert_eq!(c.status(), "success");
    }
}
