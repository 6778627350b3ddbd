//! The agent's link to the master: registration (with the tasks it runs),
//! heartbeats, and registering again when the master changes or forgets it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmos_core::AgentId;
use wasmos_core::protocol::{self, Heartbeat, HeartbeatReply, RegisterAgent, Registered};

use crate::Agent;

/// What the agent keeps about itself across restarts.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    agent_id: AgentId,
    boot_id: String,
}

const IDENTITY_FILE: &str = "agent.json";

/// Forgets the agent id of earlier runs: an agent with a new certificate
/// is a new agent (the masters bind an agent id to the certificate it
/// registered with).
pub(crate) fn forget_identity(data_dir: &Path) {
    match std::fs::remove_file(data_dir.join(IDENTITY_FILE)) {
        Ok(()) => tracing::info!("a new certificate: registering as a new agent"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::error!(error = %e, "cannot forget the agent's old id"),
    }
}

/// The newest leader term the agent has seen, and the cluster it belongs
/// to: kept across restarts (and reboots), so that a restarted agent still
/// refuses a deposed leader's commands.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SeenTerm {
    pub cluster_id: Option<String>,
    pub term: u64,
}

const TERM_FILE: &str = "term.json";

pub(crate) fn load_term(data_dir: &Path) -> SeenTerm {
    let path = data_dir.join(TERM_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::error!(path = %path.display(), error = %e, "the saved leader term is unreadable; starting from term 0 (a deposed leader could be followed until the current one is heard from); it is written again at the next registration");
            SeenTerm::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SeenTerm::default(),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the saved leader term; starting from term 0");
            SeenTerm::default()
        }
    }
}

/// Writes `seen` durably.
pub(crate) fn save_term(data_dir: &Path, seen: &SeenTerm) -> std::io::Result<()> {
    wasmos_core::durable::write(&data_dir.join(TERM_FILE), &serde_json::to_vec(seen)?)
}

/// The agent id from an earlier run on this boot. After a reboot the old
/// id (and the tasks it had) are not trusted: the agent registers anew.
pub(crate) fn load_identity(data_dir: &Path, boot_id: &str) -> Option<AgentId> {
    let text = std::fs::read_to_string(data_dir.join(IDENTITY_FILE)).ok()?;
    let id: Identity = serde_json::from_str(&text).ok()?;
    if id.boot_id != boot_id {
        tracing::info!(old = %id.agent_id, "the machine rebooted since the last run; registering as a new agent");
        return None;
    }
    Some(id.agent_id)
}

fn save_identity(data_dir: &Path, agent_id: &AgentId, boot_id: &str) {
    let id = Identity {
        agent_id: agent_id.clone(),
        boot_id: boot_id.to_string(),
    };
    let path = data_dir.join(IDENTITY_FILE);
    let saved = serde_json::to_vec(&id)
        .map_err(std::io::Error::from)
        .and_then(|b| wasmos_core::durable::write(&path, &b));
    if let Err(e) = saved {
        tracing::error!(path = %path.display(), error = %e, "cannot save the agent's identity: after a restart it registers as a new agent; check the data directory's disk");
    }
}

#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Unreachable(#[from] crate::masters::Unreachable),
    #[error("bad answer from the master at {url}: {why}")]
    Decode { url: String, why: String },
    #[error("the master refused: {status} {body}")]
    Refused { status: u16, body: String },
}

impl Agent {
    async fn post<T: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, LinkError> {
        let body = serde_json::to_vec(body).map_err(|e| LinkError::Decode {
            url: path.to_string(),
            why: e.to_string(),
        })?;
        let resp = self
            .masters
            .send(reqwest::Method::POST, path, Some(body))
            .await?;
        let url = resp.url().to_string();
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(LinkError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        resp.json().await.map_err(|e| LinkError::Decode {
            url,
            why: e.to_string(),
        })
    }

    /// The ports of this agent's range (reserved ones included) that
    /// something on the host is bound to (read off the async threads).
    async fn bound_ports(&self) -> wasmos_core::PortSet {
        let range = self.info.resources.ports.clone();
        tokio::task::spawn_blocking(move || crate::resources::bound_ports(&range))
            .await
            .unwrap_or_default()
    }

    async fn register_once(&self) -> Result<Registered, LinkError> {
        // Isolators and health checks first: once registered, launches
        // may arrive, and none may run without the cluster's isolators.
        self.ensure_plugins()
            .await
            .map_err(|why| LinkError::Refused {
                status: 0,
                body: format!("cannot fetch the cluster's plugins: {why}"),
            })?;
        let req = RegisterAgent {
            agent_id: self.agent_id(),
            info: self.info.clone(),
            tasks: self.report(),
            bound_ports: self.bound_ports().await,
        };
        self.post(protocol::paths::REGISTER, &req).await
    }

    /// Registers, then heartbeats; registers again whenever the master
    /// answers that it does not know this agent, or a new master leads.
    pub(crate) async fn master_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let mut backoff = Duration::from_millis(200);
            let mut warned = false;
            let reg = loop {
                match self.register_once().await {
                    Ok(r) => break r,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "cannot register with the master; retrying");
                            warned = true;
                        } else {
                            tracing::debug!(error = %e, "registration retry failed");
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            };
            {
                let mut cluster = self.cluster_id.lock().unwrap_or_else(|p| p.into_inner());
                if cluster.as_deref().is_some_and(|c| c != reg.cluster_id) {
                    // A different cluster: its terms are not comparable.
                    tracing::warn!(cluster = %reg.cluster_id, "the master belongs to another cluster than before; following its terms");
                    self.term.store(reg.term, Ordering::Release);
                } else {
                    self.term.fetch_max(reg.term, Ordering::AcqRel);
                }
                *cluster = Some(reg.cluster_id.clone());
            }
            self.persist_term();
            save_identity(&self.config.data_dir, &reg.agent_id, &self.info.boot_id);
            *self.agent_id.write().unwrap_or_else(|p| p.into_inner()) = Some(reg.agent_id.clone());
            *self.master_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(reg.master_id.clone());
            let interval = Duration::from_millis(reg.heartbeat_interval_ms.clamp(100, 60_000));
            *self
                .heartbeat_interval
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = interval;
            tracing::info!(agent_id = %reg.agent_id, term = reg.term, "registered with the master");
            for orphan in &reg.orphans {
                let grace = self
                    .lock_tasks()
                    .get(orphan)
                    .map(|t| t.spec.kill_grace_ms())
                    .unwrap_or(0);
                tracing::warn!(task = %orphan, "killing a task the master does not know");
                let _ = self.kill(orphan, grace);
            }
            self.registered.notify_waiters();
            self.updates_wake.notify_one();
            self.sync_plugins(&reg.plugins).await;
            if let Some(keep) = &reg.volumes {
                self.collect_volumes(keep);
            }

            let mut failures = 0u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.changed() => return,
                }
                let hb = Heartbeat {
                    agent_id: reg.agent_id.clone(),
                    plugins: self.plugin_reports(),
                    bound_ports: self.bound_ports().await,
                };
                match self
                    .post::<_, HeartbeatReply>(protocol::paths::HEARTBEAT, &hb)
                    .await
                {
                    Ok(reply) => {
                        if failures > 0 {
                            tracing::info!("the master answers again");
                        }
                        failures = 0;
                        self.sync_plugins(&reply.plugins).await;
                        if let Some(keep) = &reply.volumes {
                            self.collect_volumes(keep);
                        }
                        if reply.reregister
                            || reply.master_id != reg.master_id
                            || reply.term != reg.term
                        {
                            tracing::info!(term = reply.term, "registering again with the master");
                            break;
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(error = %e, "heartbeat failed; the master may be down");
                        }
                    }
                }
            }
        }
    }
}
