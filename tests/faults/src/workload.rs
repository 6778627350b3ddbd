//! The clients that run while the nemesis works: register clients
//! (variables read, written and compare-and-set), task clients (`exec`
//! submissions whose tasks mark a file each time they run) and an observer
//! of task states. Each asks a master picked at random (a follower
//! redirects to the leader) and records what it learned.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::Method;
use reqwest::header::LOCATION;
use serde_json::{Value, json};

use crate::history::{Event, Recorder};
use crate::linear::RegOp;

/// What every client shares.
#[derive(Clone)]
pub struct Ctx {
    pub masters: Vec<String>,
    pub http: reqwest::Client,
    pub rec: Recorder,
    pub stop: Arc<AtomicBool>,
}

impl Ctx {
    pub(crate) fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
    pub(crate) fn master(&self, rng: &mut ChaCha8Rng) -> &str {
        &self.masters[rng.random_range(0..self.masters.len())]
    }
}

/// What a request came to.
pub(crate) enum Answer {
    /// An HTTP answer.
    Status(u16, Value),
    /// Never reached a master that could act on it: nothing happened.
    NotSent(String),
    /// Sent, answer unknown (timeout, connection cut).
    Unknown(String),
}

/// Sends a request, following followers' redirects to the leader by hand
/// (as the CLI does): an HTTP client following a redirect to another host
/// drops the Authorization header.
pub(crate) async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Answer {
    let mut url = url.to_string();
    for _ in 0..4 {
        let mut r = http.request(method.clone(), &url);
        if let Some(b) = body {
            r = r.json(b);
        }
        match r.send().await {
            Ok(resp) if resp.status().is_redirection() => {
                match resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    Some(l) => url = l.to_string(),
                    None => return Answer::Status(resp.status().as_u16(), Value::Null),
                }
            }
            Ok(resp) => {
                let code = resp.status().as_u16();
                return match resp.bytes().await {
                    Ok(b) => Answer::Status(
                        code,
                        serde_json::from_slice(&b)
                            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into())),
                    ),
                    Err(e) => Answer::Unknown(format!("{code}, then the body: {e}")),
                };
            }
            Err(e) if e.is_connect() => return Answer::NotSent(e.to_string()),
            Err(e) => return Answer::Unknown(e.to_string()),
        }
    }
    Answer::NotSent(format!("redirected more than 3 times, last to {url}"))
}

/// A request a master refused outright (4xx but a 404 read, a refused swap
/// or 429): nothing happened, and the workload sends only valid requests,
/// so the checker reports it.
fn refused(ctx: &Ctx, client: usize, request: String, code: u16, v: &Value) {
    ctx.rec.push(Event::Refused {
        client,
        at: ctx.rec.now(),
        request,
        answer: format!("{code} {v}"),
    });
}

fn var_url(master: &str, key: &str) -> String {
    format!("{master}/api/wasmos/v1/vars/{key}")
}

/// Reads `key`: records the read; returns (value, modify index) when known.
pub async fn read_once(
    ctx: &Ctx,
    client: usize,
    master: &str,
    key: &str,
) -> Option<(Option<String>, Option<u64>)> {
    let call = ctx.rec.now();
    let a = send(&ctx.http, Method::GET, &var_url(master, key), None).await;
    let now = ctx.rec.now();
    let (ret, value, index, error) = match a {
        Answer::Status(200, v) => (
            Some(now),
            v["items"]["v"].as_str().map(str::to_string),
            v["modify_index"].as_u64(),
            None,
        ),
        Answer::Status(404, _) => (Some(now), None, None, None),
        Answer::NotSent(_) | Answer::Status(429, _) => return None,
        Answer::Status(code @ 400..=499, v) => {
            refused(ctx, client, format!("read {key}"), code, &v);
            return None;
        }
        Answer::Status(code, v) => (None, None, None, Some(format!("{code} {v}"))),
        Answer::Unknown(e) => (None, None, None, Some(e)),
    };
    ctx.rec.push(Event::Register {
        client,
        key: key.to_string(),
        call,
        ret,
        gave_up: ret.is_none().then_some(now),
        op: RegOp::Read {
            value: value.clone(),
        },
        error,
    });
    ret.map(|_| (value, index))
}

/// Writes `value` to `key` (only if its modify index is `cas`, when given:
/// a 409 is a swap refused) and records it.
async fn write(
    ctx: &Ctx,
    client: usize,
    master: &str,
    key: &str,
    value: &str,
    cas: Option<(String, u64)>,
) {
    let mut url = var_url(master, key);
    if let Some((_, i)) = &cas {
        url.push_str(&format!("?cas={i}"));
    }
    let call = ctx.rec.now();
    let body = json!({"items": {"v": value}});
    let a = send(&ctx.http, Method::PUT, &url, Some(&body)).await;
    let now = ctx.rec.now();
    let (ret, swapped, error) = match a {
        Answer::Status(200, _) => (Some(now), true, None),
        Answer::Status(409, _) if cas.is_some() => (Some(now), false, None),
        Answer::NotSent(_) | Answer::Status(429, _) => return,
        Answer::Status(code @ 400..=499, v) => {
            refused(ctx, client, format!("write {key} = {value}"), code, &v);
            return;
        }
        Answer::Status(code, v) => (None, true, Some(format!("{code} {v}"))),
        Answer::Unknown(e) => (None, true, Some(e)),
    };
    let op = match cas {
        Some((from, _)) => RegOp::Cas {
            from,
            to: value.to_string(),
            swapped,
        },
        None => RegOp::Write {
            value: value.to_string(),
        },
    };
    ctx.rec.push(Event::Register {
        client,
        key: key.to_string(),
        call,
        ret,
        gave_up: ret.is_none().then_some(now),
        op,
        error,
    });
}

/// Reads, writes and swaps the registers `keys` until stopped.
pub async fn registers(ctx: Ctx, client: usize, keys: Vec<String>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0u64;
    while ctx.running() {
        let key = &keys[rng.random_range(0..keys.len())];
        let master = ctx.master(&mut rng).to_string();
        n += 1;
        let value = format!("c{client}-{n}");
        match rng.random_range(0..10) {
            0..4 => {
                read_once(&ctx, client, &master, key).await;
            }
            4..7 => write(&ctx, client, &master, key, &value, None).await,
            _ => {
                if let Some((Some(from), Some(index))) = read_once(&ctx, client, &master, key).await
                {
                    write(&ctx, client, &master, key, &value, Some((from, index))).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
    }
}

/// Submits `exec` tasks until stopped. Each task appends a line to
/// `<runs>/<id>` when it starts: the number of times it ran, from its own
/// side. A submission whose answer is lost is sent again (a 409 "already
/// exists" then means the first one went through) for up to 20 s.
pub async fn tasks(ctx: Ctx, client: usize, runs: PathBuf, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0u64;
    while ctx.running() {
        n += 1;
        let id = format!("t{client}-{n}");
        let secs = [0, 1, 2, 20][rng.random_range(0..4)];
        let body = json!({
            "id": id,
            "cmd": format!("echo ran >> {}/{id}; sleep {secs}", runs.display()),
            "cpus": 0.05,
            "mem": 16,
        });
        let call = ctx.rec.now();
        let mut sent = false;
        let (acked, answer) = loop {
            let master = ctx.master(&mut rng).to_string();
            let a = send(
                &ctx.http,
                Method::POST,
                &format!("{master}/frameworks/exec/tasks"),
                Some(&body),
            )
            .await;
            let last = match a {
                Answer::Status(201, _) => break (true, "201".to_string()),
                Answer::Status(409, v) if sent && v.to_string().contains("already exists") => {
                    break (true, format!("409 on a retry: {v}"));
                }
                Answer::Status(code @ 400..=499, v) if code != 409 && code != 429 => {
                    refused(&ctx, client, format!("submit {id}"), code, &v);
                    break (false, format!("{code} {v}"));
                }
                Answer::Status(code, v) => {
                    sent = true;
                    format!("{code} {v}")
                }
                Answer::NotSent(e) => e,
                Answer::Unknown(e) => {
                    sent = true;
                    e
                }
            };
            if ctx.rec.now() - call > 20_000_000_000 {
                break (false, format!("gave up: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        ctx.rec.push(Event::Submit {
            client,
            task: id,
            call,
            ret: ctx.rec.now(),
            acked,
            answer,
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..800))).await;
    }
}

/// `exec`'s tasks as a master shows them: (id, state).
pub async fn exec_tasks(http: &reqwest::Client, master: &str) -> Option<Vec<(String, String)>> {
    let Answer::Status(200, v) = send(
        http,
        Method::GET,
        &format!("{master}/frameworks/exec/tasks"),
        None,
    )
    .await
    else {
        return None;
    };
    let list = v.as_array().or_else(|| v["tasks"].as_array())?;
    Some(
        list.iter()
            .filter_map(|t| {
                Some((
                    t["id"].as_str()?.to_string(),
                    t["state"].as_str()?.to_string(),
                ))
            })
            .collect(),
    )
}

/// Reads the tasks' states every half second until stopped, recording
/// each change it sees.
pub async fn observe(ctx: Ctx, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last: std::collections::HashMap<String, String> = Default::default();
    while ctx.running() {
        let master = ctx.master(&mut rng).to_string();
        if let Some(list) = exec_tasks(&ctx.http, &master).await {
            let at = ctx.rec.now();
            for (task, state) in list {
                if last.get(&task) != Some(&state) {
                    last.insert(task.clone(), state.clone());
                    ctx.rec.push(Event::TaskState { at, task, state });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The run's Chronos job: due every [`CHRONOS_PERIOD_MS`] from its start,
/// never retried; each run appends the instant it was due for
/// (`CHRONOS_JOB_RUN_TIME`) and when it ran, as the machine's uptime
/// (which no faked wall clock touches), to `<runs>/chronos-beat`.
pub const CHRONOS_JOB: &str = "faults-beat";
pub const CHRONOS_PERIOD_MS: u64 = 3000;

fn chronos_body(runs: &std::path::Path, start_ms: u64, disabled: bool) -> Value {
    let start = jiff::Timestamp::from_millisecond(start_ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default();
    json!({
        "name": CHRONOS_JOB,
        "command": format!(
            "echo $CHRONOS_JOB_RUN_TIME $(cut -d' ' -f1 /proc/uptime) >> {}/chronos-beat",
            runs.display()
        ),
        "schedule": format!("R/{start}/PT{}S", CHRONOS_PERIOD_MS / 1000),
        "retries": 0,
        "cpus": 0.05,
        "mem": 16,
        "owner": "faults@example.com",
        "disabled": disabled,
    })
}

/// Adds (or, `disabled`, stops) the run's Chronos job through `master`,
/// until a master says 204 (a minute at most).
pub async fn chronos_job(
    http: &reqwest::Client,
    master: &str,
    runs: &std::path::Path,
    start_ms: u64,
    disabled: bool,
) -> anyhow::Result<()> {
    let body = chronos_body(runs, start_ms, disabled);
    let url = format!("{master}/v1/scheduler/iso8601");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let last = match send(http, Method::POST, &url, Some(&body)).await {
            Answer::Status(204, _) => return Ok(()),
            Answer::Status(code, v) => format!("{code} {v}"),
            Answer::NotSent(e) | Answer::Unknown(e) => e,
        };
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the Chronos job was not saved within a minute: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The run's Chronos job as `master` shows it: (successCount, errorCount,
/// runs in flight).
pub async fn chronos_counts(http: &reqwest::Client, master: &str) -> Option<(u64, u64, usize)> {
    let Answer::Status(200, job) = send(
        http,
        Method::GET,
        &format!("{master}/v1/scheduler/job/{CHRONOS_JOB}"),
        None,
    )
    .await
    else {
        return None;
    };
    let Answer::Status(200, detail) = send(
        http,
        Method::GET,
        &format!("{master}/frameworks/chronos/jobs/{CHRONOS_JOB}"),
        None,
    )
    .await
    else {
        return None;
    };
    Some((
        job["successCount"].as_u64()?,
        job["errorCount"].as_u64()?,
        detail["active"].as_array()?.len(),
    ))
}
