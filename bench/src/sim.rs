//! Simulated agents: many agents in this process, speaking the real
//! master↔agent protocol (`wasmos_core::protocol`) to a real master —
//! register, heartbeat, take launches and kills, and report each task
//! RUNNING at once and FINISHED after its lifetime, every update retried
//! until the master acknowledges it. No process runs: what is measured is
//! the master and its frameworks, not a containerizer.
//!
//! One HTTPS listener serves every simulated agent, each under its own path
//! (`/a/<n>`), which is the endpoint it registers with. They share one
//! agent certificate from the cluster CA, which the bench holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use wasmos_core::agent::AgentInfo;
use wasmos_core::protocol::{
    Heartbeat, HeartbeatReply, KillTask, LaunchTasks, RegisterAgent, Registered, ReportedTask,
    StatusUpdate, paths,
};
use wasmos_core::{AgentId, FrameworkId, Resources, TaskId, TaskSpec, TaskState, TaskStatus};

/// A task as the simulation saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub spec: TaskSpec,
    /// Which simulated agent it was launched on.
    pub agent: usize,
    /// When the launch reached the simulated agent (and it reported RUNNING).
    pub running_at: SystemTime,
}

/// A task's end reported by a simulated agent: its resources are free.
#[derive(Debug, Clone, Copy)]
pub struct Freed {
    /// The simulated agent.
    pub agent: usize,
    /// When the agent sent the terminal update (the first try).
    pub sent: Instant,
    /// When the master acknowledged it (committed).
    pub acked: Instant,
}

struct Shared {
    master: String,
    http: reqwest::Client,
    ids: Mutex<Vec<Option<AgentId>>>,
    /// The newest term each agent has seen.
    terms: Mutex<Vec<u64>>,
    lifetime: Duration,
    /// Lifetimes are drawn uniformly from `lifetime × [1 − spread, 1 +
    /// spread]` (0: every task lives `lifetime`).
    spread: Mutex<f64>,
    seen: Mutex<Vec<Seen>>,
    freed: Mutex<Vec<Freed>>,
    /// Updates given up on (never acknowledged after every try).
    gave_up: std::sync::atomic::AtomicU64,
    /// Tasks that have not finished yet, to kill.
    live: Mutex<HashMap<TaskId, (usize, FrameworkId)>>,
}

/// Simulated agents, running until dropped.
pub struct SimAgents {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for SimAgents {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A simulated agent's resources: `cpus`, `mem` (MiB) and `disk` (MiB),
/// no GPUs or ports.
pub fn resources(cpus: f64, mem: f64, disk: f64) -> anyhow::Result<Resources> {
    Ok(Resources {
        cpus: wasmos_core::Scalar::from_f64("cpus", cpus)?,
        mem: wasmos_core::Scalar::from_f64("mem", mem)?,
        disk: wasmos_core::Scalar::from_f64("disk", disk)?,
        gpus: 0,
        ports: Default::default(),
    })
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl SimAgents {
    /// Starts `n` agents, each offering `resources`, registered with the
    /// master at `master`; their tasks run for `lifetime`.
    pub async fn start(
        master: &str,
        pki: &crate::pki::Pki,
        n: usize,
        resources: Resources,
        lifetime: Duration,
    ) -> anyhow::Result<SimAgents> {
        Self::start_with(master, pki, n, resources, lifetime, |_| BTreeMap::new()).await
    }

    /// [`SimAgents::start`] with agent `i`'s attributes `attributes(i)`
    /// (its hostname is `sim-<i>`).
    pub async fn start_with(
        master: &str,
        pki: &crate::pki::Pki,
        n: usize,
        resources: Resources,
        lifetime: Duration,
        attributes: impl Fn(usize) -> BTreeMap<String, String>,
    ) -> anyhow::Result<SimAgents> {
        let keys = pki.keys(wasmos_tls::Identity::Agent("simulated".into()))?;
        let shared = Arc::new(Shared {
            master: master.trim_end_matches('/').to_string(),
            http: pki
                .client_as(keys.clone(), wasmos_tls::Expect::Master)?
                .timeout(Duration::from_secs(10))
                // A real agent keeps its connection to the master: so may
                // each simulated one (with fewer kept, the master spent its
                // time in TLS handshakes at 10,000 agents).
                .pool_max_idle_per_host(n.max(256))
                .build()?,
            ids: Mutex::new(vec![None; n]),
            terms: Mutex::new(vec![0; n]),
            lifetime,
            spread: Mutex::new(0.0),
            seen: Mutex::new(Vec::new()),
            freed: Mutex::new(Vec::new()),
            gave_up: Default::default(),
            live: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route(&format!("/a/{{n}}{}", paths::LAUNCH), post(launch))
            .route(&format!("/a/{{n}}{}", paths::KILL), post(kill))
            // As much as a real agent takes in one launch.
            .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = wasmos_tls::Listener::tls(listener, pki.server_config(keys)?)?;
        let mut tasks = vec![tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })];
        for i in 0..n {
            let info = AgentInfo {
                hostname: format!("sim-{i}"),
                endpoint: format!("https://{addr}/a/{i}"),
                resources: resources.clone(),
                reserved: Default::default(),
                attributes: attributes(i),
                boot_id: "simulated".into(),
                version: "sim".into(),
            };
            let s = shared.clone();
            let interval = register(&s, i, &info).await?;
            tasks.push(tokio::spawn(heartbeats(s, i, info, interval)));
        }
        Ok(SimAgents { shared, tasks })
    }

    /// From now on, tasks live `lifetime × [1 − spread, 1 + spread]`,
    /// uniformly drawn (`spread` in 0..=1), so that ends do not come in
    /// waves.
    pub fn set_lifetime_spread(&self, spread: f64) {
        *self.shared.spread.lock().unwrap_or_else(|p| p.into_inner()) = spread.clamp(0.0, 1.0);
    }

    /// Agent `i`'s id, once it has registered.
    pub fn agent_id(&self, i: usize) -> Option<AgentId> {
        self.shared
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
            .flatten()
    }

    /// Every task end the master has acknowledged so far.
    pub fn freed(&self) -> Vec<Freed> {
        self.shared
            .freed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Updates the master never acknowledged after every try.
    pub fn gave_up(&self) -> u64 {
        self.shared
            .gave_up
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every task launched so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn register(s: &Shared, i: usize, info: &AgentInfo) -> anyhow::Result<Duration> {
    let agent_id = s.ids.lock().unwrap_or_else(|p| p.into_inner())[i].clone();
    // Coming back (to a new leader, after a timeout), it reports what it
    // runs, as a real agent does: else the master takes its tasks for lost.
    let tasks = s
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, (n, _))| *n == i)
        .map(|(task_id, (_, framework_id))| ReportedTask {
            task_id: task_id.clone(),
            framework_id: framework_id.clone(),
            state: TaskState::Running,
        })
        .collect();
    let req = RegisterAgent {
        agent_id,
        info: info.clone(),
        tasks,
        bound_ports: Default::default(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = s
            .http
            .post(format!("{}{}", s.master, paths::REGISTER))
            .json(&req)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let reg: Registered = r.json().await.context("the master's registration reply")?;
                s.ids.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(reg.agent_id);
                s.terms.lock().unwrap_or_else(|p| p.into_inner())[i] = reg.term;
                return Ok(Duration::from_millis(reg.heartbeat_interval_ms.max(100)));
            }
            _ if Instant::now() > deadline => {
                anyhow::bail!("simulated agent {i} could not register with {}", s.master)
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn heartbeats(s: Arc<Shared>, i: usize, info: AgentInfo, mut every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(agent_id) = s.ids.lock().unwrap_or_else(|p| p.into_inner())[i].clone() else {
            continue;
        };
        let reply = s
            .http
            .post(format!("{}{}", s.master, paths::HEARTBEAT))
            .json(&Heartbeat {
                agent_id,
                plugins: Vec::new(),
                bound_ports: Default::default(),
            })
            .send()
            .await;
        let again = match reply {
            Ok(r) if r.status().is_success() => r
                .json::<HeartbeatReply>()
                .await
                .map(|h| h.reregister)
                .unwrap_or(true),
            _ => false,
        };
        if again && let Ok(d) = register(&s, i, &info).await {
            every = d;
        }
    }
}

async fn launch(
    State(s): State<Arc<Shared>>,
    Path(n): Path<usize>,
    axum::Json(msg): axum::Json<LaunchTasks>,
) -> StatusCode {
    let current = s
        .terms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(n)
        .copied();
    match current {
        None => return StatusCode::NOT_FOUND,
        Some(t) if msg.term < t => return StatusCode::CONFLICT,
        Some(_) => {}
    }
    if let Some(t) = s.terms.lock().unwrap_or_else(|p| p.into_inner()).get_mut(n) {
        *t = msg.term;
    }
    for spec in msg.tasks {
        // A launch sent again (its answer was lost) is the same task.
        if s.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&spec.task_id)
        {
            continue;
        }
        let at = SystemTime::now();
        s.seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
            spec: spec.clone(),
            agent: n,
            running_at: at,
        });
        s.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(spec.task_id.clone(), (n, msg.framework_id.clone()));
        let s = s.clone();
        let fw = msg.framework_id.clone();
        let spread = *s.spread.lock().unwrap_or_else(|p| p.into_inner());
        let lifetime = s
            .lifetime
            .mul_f64(1.0 - spread + 2.0 * spread * rand::random::<f64>());
        tokio::spawn(async move {
            report(&s, n, &fw, &spec.task_id, TaskState::Running, None).await;
            tokio::time::sleep(lifetime).await;
            let still = s
                .live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&spec.task_id)
                .is_some();
            if still {
                report(&s, n, &fw, &spec.task_id, TaskState::Finished, Some(0)).await;
            }
        });
    }
    StatusCode::ACCEPTED
}

async fn kill(
    State(s): State<Arc<Shared>>,
    Path(n): Path<usize>,
    axum::Json(msg): axum::Json<KillTask>,
) -> StatusCode {
    let entry = s
        .live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&msg.task_id);
    match entry {
        Some((_, fw)) => {
            let s = s.clone();
            tokio::spawn(async move {
                report(&s, n, &fw, &msg.task_id, TaskState::Killed, None).await;
            });
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

/// Sends one status update until the master acknowledges it.
async fn report(
    s: &Shared,
    n: usize,
    fw: &FrameworkId,
    task: &TaskId,
    state: TaskState,
    exit_code: Option<i32>,
) {
    let Some(agent_id) = s
        .ids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(n)
        .cloned()
        .flatten()
    else {
        return;
    };
    let update = StatusUpdate {
        agent_id: agent_id.clone(),
        framework_id: fw.clone(),
        status: TaskStatus {
            task_id: task.clone(),
            state,
            agent_id: Some(agent_id),
            source: wasmos_core::task::Source::Executor,
            reason: None,
            message: None,
            exit_code,
            signal: None,
            healthy: None,
            ready: None,
            timestamp: now_secs(),
            uuid: uuid::Uuid::new_v4(),
            data: None,
            executor_id: None,
        },
    };
    let sent = Instant::now();
    let mut wait = Duration::from_millis(100);
    for _ in 0..100 {
        let ok = s
            .http
            .post(format!("{}{}", s.master, paths::STATUS))
            .json(&update)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            if state == TaskState::Finished {
                s.freed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Freed {
                        agent: n,
                        sent,
                        acked: Instant::now(),
                    });
            }
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(2));
    }
    s.gave_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
