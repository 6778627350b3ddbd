//! Plugins on a running cluster: install, configure, remove — and bringing
//! what runs in line with what the state says.
//!
//! A plugin is checked before it is recorded: its manifest, its world
//! version, and that its component links against the world of its kind
//! (so a framework that is really an isolator, or one built for another
//! `wasmos:plugin` version, is refused with a clear message and nothing
//! changes). Once committed, every master runs the frameworks and
//! placement plugins from the state, and agents fetch the isolators and
//! health checks (their heartbeat reply carries a fingerprint of the list).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use wasmos_core::protocol::{AgentPlugin, plugins_fingerprint};
use wasmos_core::{AgentState, FrameworkId, FrameworkInfo, PluginKind, PluginManifest};
use wasmos_runtime::placement::PlacementAgent;
use wasmos_runtime::{LoadError, PluginRuntime};
use wasmos_state::{Command, PluginRecord, Response};

use crate::error::ApiError;
use crate::frameworks::FrameworkMsg;
use crate::leader::{Leader, now_secs};
use crate::views::PluginView;

/// The largest component accepted (Python components are 18-35 MB).
pub const MAX_COMPONENT: usize = 64 << 20;

/// `POST /api/wasmos/v1/plugins`: either a manifest and a component, or
/// `from`, an OCI reference the master pulls.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<PluginManifest>,
    /// The component, base64.
    #[serde(
        default,
        with = "optional_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub component: Option<Vec<u8>>,
    /// `oci://registry/repository:tag` (or `oci+http://` for a registry
    /// without TLS), optionally pinned with `@sha256:...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Overrides of the manifest's default configuration.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Where it came from, for display (a path).
    #[serde(default)]
    pub source: String,
    /// With `manifest` and `component`: the base64 signature of the
    /// component's bytes by a key the cluster trusts (`cosign sign-blob`'s
    /// format; `wasmos plugin sign` makes it). A plugin from a registry is
    /// signed there instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Optional bytes as base64.
mod optional_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => wasmos_core::bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct B(#[serde(with = "wasmos_core::bytes")] Vec<u8>);
        Ok(Option::<B>::deserialize(d)?.map(|b| b.0))
    }
}

/// Compiles `bytes` and checks it against the world of `kind`.
pub fn check_component(
    runtime: &PluginRuntime,
    kind: PluginKind,
    bytes: &[u8],
) -> Result<(), LoadError> {
    let c = runtime.compile(bytes)?;
    match kind {
        PluginKind::Framework => wasmos_runtime::framework::check(runtime, &c),
        PluginKind::Placement => wasmos_runtime::placement::check(runtime, &c),
        PluginKind::Isolator => wasmos_runtime::isolator::check(runtime, &c),
        PluginKind::HealthCheck => wasmos_runtime::health::check(runtime, &c),
    }
}

fn check_config(config: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in config {
        if k.is_empty() || k.len() > 256 {
            return Err(ApiError::BadRequest(format!(
                "config key {k:?} must be 1-256 bytes"
            )));
        }
        if v.len() > 64 * 1024 {
            return Err(ApiError::BadRequest(format!(
                "config value of {k} is over 64 KiB"
            )));
        }
    }
    Ok(())
}

/// Runs a signature check off the async threads (it hashes and verifies);
/// a refusal is the caller's problem (400), with the reason.
async fn check_signature(
    f: impl FnOnce() -> Result<String, wasmos_oci::sign::SignError> + Send + 'static,
) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// A registry's failure as an API error: what the caller gave is wrong
/// (400), or the registry is (502).
fn oci_error(e: wasmos_oci::OciError) -> ApiError {
    match e {
        wasmos_oci::OciError::BadReference(_)
        | wasmos_oci::OciError::NotFound { .. }
        | wasmos_oci::OciError::NotAPlugin { .. }
        | wasmos_oci::OciError::WrongArtifact { .. }
        | wasmos_oci::OciError::TooLarge { .. }
        | wasmos_oci::OciError::DigestMismatch { .. } => ApiError::BadRequest(e.to_string()),
        other => ApiError::BadGateway(other.to_string()),
    }
}

impl Leader {
    /// The public keys the cluster trusts to sign plugins, by name.
    pub fn trusted_keys(&self) -> Vec<(String, wasmos_oci::sign::PublicKey)> {
        self.store.read(|s| {
            s.acl
                .plugin_keys
                .values()
                .filter_map(|k| {
                    // Checked when added; a key that no longer parses
                    // trusts nothing.
                    match wasmos_oci::sign::PublicKey::from_pem(&k.public_key, &k.name) {
                        Ok(p) => Some((k.name.clone(), p)),
                        Err(e) => {
                            tracing::warn!("trusted key {} is unreadable: {e}", k.name);
                            None
                        }
                    }
                })
                .collect()
        })
    }

    /// Installs bundled plugins never installed before, and upgrades the
    /// bundled ones whose bytes this binary carries newer. A plugin an
    /// operator removed, or replaced with their own, is left alone.
    pub(crate) async fn install_bundled(
        &self,
        bundled: Vec<(PluginManifest, &'static [u8])>,
    ) -> anyhow::Result<()> {
        let mut cmds = Vec::new();
        for (manifest, component) in bundled {
            let digest = wasmos_runtime::digest(component);
            let (current, seen) = self.store.read(|s| {
                (
                    s.plugins
                        .get(&manifest.name)
                        .map(|p| (p.digest.clone(), p.source.clone(), p.config.clone())),
                    s.bundled_seen.contains(&manifest.name),
                )
            });
            let config = match current {
                Some((d, _, _)) if d == digest => continue,
                Some((_, source, _)) if source != "bundled" => continue,
                Some((_, _, config)) => config,
                None if seen => continue,
                None => BTreeMap::new(),
            };
            tracing::info!(plugin = %manifest.name, version = %manifest.version, "installing bundled plugin");
            cmds.push(Command::InstallPlugin {
                record: Box::new(PluginRecord {
                    manifest,
                    digest,
                    component: wasmos_core::bytes::Blob(component.to_vec()),
                    config,
                    installed_at: now_secs(),
                    source: "bundled".into(),
                    // Trusted as part of the binary.
                    signed_by: None,
                }),
            });
        }
        for r in self.store.propose(cmds).await? {
            if let Response::Rejected { reason } = r {
                anyhow::bail!("bundled plugin refused: {reason}");
            }
        }
        Ok(())
    }

    /// Installs (or upgrades) a plugin on the running cluster.
    pub async fn install_plugin(&self, req: InstallRequest) -> Result<PluginView, ApiError> {
        let record = self.prepare_plugin(req).await?;
        self.commit_plugin(record).await
    }

    /// A plugin checked for installing (pulled, its signature verified,
    /// its component linked against its world), not yet recorded.
    pub async fn prepare_plugin(&self, req: InstallRequest) -> Result<PluginRecord, ApiError> {
        let InstallRequest {
            manifest,
            component,
            from,
            config,
            source,
            signature,
        } = req;
        let keys = self.trusted_keys();
        if keys.is_empty() {
            return Err(ApiError::BadRequest(
                wasmos_oci::sign::SignError::NoTrustedKeys.to_string(),
            ));
        }
        let (manifest, component, source, signer) = match (manifest, component, from) {
            (Some(m), Some(c), None) => {
                // The caller names its source; `bundled` means the binary's own.
                let source = if source == "bundled" {
                    "upload".to_string()
                } else {
                    source
                };
                let (m2, c2) = (m.clone(), c.clone());
                let signer = check_signature(move || {
                    wasmos_oci::sign::verify_upload(&keys, &m2, &c2, signature.as_deref())
                })
                .await?;
                (m, c, source, signer)
            }
            (None, None, Some(reference)) if signature.is_none() => {
                let r: wasmos_oci::Reference = reference
                    .parse()
                    .map_err(|e: wasmos_oci::OciError| ApiError::BadRequest(e.to_string()))?;
                tracing::info!(%r, "pulling plugin");
                let pulled = wasmos_oci::pull(&self.registry, &r)
                    .await
                    .map_err(oci_error)?;
                let pinned = r.pinned(&pulled.digest).to_string();
                let signatures = wasmos_oci::sign::signatures(&self.registry, &r, &pulled.digest)
                    .await
                    .map_err(oci_error)?;
                let (what, digest) = (pinned.clone(), pulled.digest.clone());
                let signer = check_signature(move || {
                    wasmos_oci::sign::verify_artifact(&keys, &what, &digest, &signatures)
                })
                .await?;
                (pulled.manifest, pulled.component, pinned, signer)
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "give either manifest, component and signature, or from (an OCI reference, signed in its registry)".into(),
                ));
            }
        };
        manifest
            .validate()
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        check_config(&config)?;
        if component.len() > MAX_COMPONENT {
            return Err(ApiError::BadRequest(format!(
                "the component is over {} MiB",
                MAX_COMPONENT >> 20
            )));
        }
        let runtime = self.runtime.clone();
        let kind = manifest.kind;
        let bytes = component.clone();
        tokio::task::spawn_blocking(move || check_component(&runtime, kind, &bytes))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::BadRequest(format!("plugin {} refused: {e}", manifest.name)))?;
        Ok(PluginRecord {
            digest: wasmos_runtime::digest(&component),
            manifest,
            component: wasmos_core::bytes::Blob(component),
            config,
            installed_at: now_secs(),
            source: if source.is_empty() {
                "upload".into()
            } else {
                source
            },
            signed_by: Some(signer),
        })
    }

    /// Records a plugin [`Leader::prepare_plugin`] checked: every master
    /// or agent that runs its kind starts it.
    pub async fn commit_plugin(&self, record: PluginRecord) -> Result<PluginView, ApiError> {
        let name = record.manifest.name.clone();
        let signer = record.signed_by.clone().unwrap_or_default();
        match self
            .store
            .propose_one(Command::InstallPlugin {
                record: Box::new(record),
            })
            .await?
        {
            Response::Ok => {}
            Response::Rejected { reason } => return Err(ApiError::Conflict(reason)),
            other => return Err(ApiError::Internal(format!("unexpected {other:?}"))),
        }
        tracing::info!(plugin = %name, signed_by = %signer, "plugin installed");
        self.plugin_view(&name)
            .ok_or_else(|| ApiError::Internal("installed plugin vanished".into()))
    }

    /// Removes a plugin. A framework with live tasks is removed only with
    /// `force`, which kills its tasks first.
    pub async fn remove_plugin(&self, name: &str, force: bool) -> Result<(), ApiError> {
        let kind = self
            .store
            .read(|s| s.plugins.get(name).map(|p| p.manifest.kind))
            .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))?;
        if kind == PluginKind::Framework {
            let fw = FrameworkId::new(name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let live: Vec<_> = self.store.read(|s| {
                s.tasks
                    .values()
                    .filter(|t| t.framework_id == fw && !t.state().is_terminal())
                    .map(|t| t.spec.task_id.clone())
                    .collect()
            });
            if !live.is_empty() && !force {
                return Err(ApiError::Conflict(format!(
                    "framework {name} has {} live tasks; kill them first, or remove with force=true to kill them",
                    live.len()
                )));
            }
            for t in &live {
                if let Err(e) = self.kill_task(t).await {
                    tracing::warn!(task = %t, error = %e, "kill on framework removal failed");
                }
            }
        }
        match self
            .store
            .propose_one(Command::RemovePlugin {
                name: name.to_string(),
            })
            .await?
        {
            Response::Ok => Ok(()),
            Response::Rejected { reason } => Err(ApiError::NotFound(reason)),
            other => Err(ApiError::Internal(format!("unexpected {other:?}"))),
        }
    }

    /// Puts back the version a plugin had before its last upgrade; the
    /// replaced version becomes the one a next rollback returns to.
    pub async fn rollback_plugin(&self, name: &str) -> Result<PluginView, ApiError> {
        match self
            .store
            .propose_one(Command::RollbackPlugin {
                name: name.to_string(),
            })
            .await?
        {
            Response::Ok => {}
            Response::Rejected { reason } if reason.starts_with("no plugin named") => {
                return Err(ApiError::NotFound(reason));
            }
            Response::Rejected { reason } => return Err(ApiError::Conflict(reason)),
            other => return Err(ApiError::Internal(format!("unexpected {other:?}"))),
        }
        let v = self
            .plugin_view(name)
            .ok_or_else(|| ApiError::Internal("rolled back plugin vanished".into()))?;
        tracing::info!(plugin = %name, version = %v.version, "plugin rolled back");
        Ok(v)
    }

    /// Sets (`Some`) or clears (`None`) configuration overrides.
    pub async fn configure_plugin(
        self: &Arc<Self>,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
    ) -> Result<PluginView, ApiError> {
        let mut config = self
            .store
            .read(|s| s.plugins.get(name).map(|p| p.config.clone()))
            .ok_or_else(|| ApiError::NotFound(format!("no plugin {name}")))?;
        for (k, v) in changes {
            match v {
                Some(v) => {
                    config.insert(k, v);
                }
                None => {
                    config.remove(&k);
                }
            }
        }
        check_config(&config)?;
        match self
            .store
            .propose_one(Command::ConfigurePlugin {
                name: name.to_string(),
                config,
            })
            .await?
        {
            Response::Ok => {}
            Response::Rejected { reason } => return Err(ApiError::NotFound(reason)),
            other => return Err(ApiError::Internal(format!("unexpected {other:?}"))),
        }
        // In effect before the answer: a framework plugin's reconfiguration
        // is queued ahead of any request the caller sends next (the
        // dispatcher's own reconcile, spawned, could come after them).
        self.reconcile_plugins().await;
        self.plugin_view(name)
            .ok_or_else(|| ApiError::Internal("configured plugin vanished".into()))
    }

    /// A plugin as the API shows it, with its health where this master
    /// runs it.
    pub fn plugin_view(&self, name: &str) -> Option<PluginView> {
        let mut v = self.store.read(|s| {
            s.plugins
                .get(name)
                .map(|p| PluginView::new(p, s.previous_plugins.get(name)))
        })?;
        let health = match v.kind {
            PluginKind::Framework => FrameworkId::new(name)
                .ok()
                .and_then(|id| self.frameworks_read().get(&id).map(|h| h.health())),
            PluginKind::Placement => self.placement.health(name),
            PluginKind::Isolator | PluginKind::HealthCheck => {
                if let Some((h, last_error)) = self.agents.plugin_health(name) {
                    v.health = Some(h);
                    v.last_error = last_error;
                }
                None
            }
        };
        if let Some((h, last_error)) = health {
            v.health = serde_json::to_value(h)
                .ok()
                .and_then(|x| x.as_str().map(String::from));
            v.last_error = last_error;
        }
        v.stats = match v.kind {
            PluginKind::Framework | PluginKind::Placement => self.runtime.observed.stats(name),
            PluginKind::Isolator | PluginKind::HealthCheck => self.agents.plugin_stats(name),
        };
        Some(v)
    }

    /// Where the log lines of a plugin of `kind` are kept on this leader:
    /// its own for frameworks and placement plugins, what the agents'
    /// heartbeats carried for isolators and health checks.
    pub fn plugin_log_source(&self, kind: PluginKind) -> &wasmos_runtime::observe::Observed {
        match kind {
            PluginKind::Framework | PluginKind::Placement => &self.runtime.observed,
            PluginKind::Isolator | PluginKind::HealthCheck => &self.agents.plugin_logs,
        }
    }

    /// The plugins agents run, and their fingerprint.
    pub fn agent_plugins(&self) -> (Vec<AgentPlugin>, String) {
        let list: Vec<AgentPlugin> = self.store.read(|s| {
            s.plugins
                .values()
                .filter(|p| {
                    matches!(
                        p.manifest.kind,
                        PluginKind::Isolator | PluginKind::HealthCheck
                    )
                })
                .map(|p| AgentPlugin {
                    name: p.manifest.name.clone(),
                    kind: p.manifest.kind,
                    version: p.manifest.version.clone(),
                    digest: p.digest.clone(),
                    config: p.effective_config(),
                })
                .collect()
        });
        let fp = plugins_fingerprint(&list);
        (list, fp)
    }

    /// Gives the placement plugins the current agents.
    pub(crate) fn sync_placement_agents(&self) {
        let agents = self.store.read(|s| {
            s.agents
                .values()
                .filter(|a| a.state == AgentState::Active)
                .map(|a| PlacementAgent {
                    id: a.id.to_string(),
                    hostname: a.info.hostname.clone(),
                    attributes: a.info.attributes.clone(),
                    resources: a.info.resources.clone(),
                })
                .collect()
        });
        self.placement.set_agents(agents);
    }

    /// Brings the running frameworks and placement plugins in line with
    /// the state.
    pub async fn reconcile_plugins(self: &Arc<Self>) {
        let _guard = self.reconcile_lock.lock().await;
        self.reconcile_placement().await;
        self.reconcile_frameworks().await;
    }

    async fn reconcile_placement(&self) {
        let desired: BTreeMap<String, PluginRecord> = self.store.read(|s| {
            s.plugins
                .values()
                .filter(|p| p.manifest.kind == PluginKind::Placement)
                .map(|p| (p.manifest.name.clone(), p.clone()))
                .collect()
        });
        for (name, _) in self.placement.installed() {
            if !desired.contains_key(&name) {
                tracing::info!(plugin = %name, "removing placement plugin");
                self.placement.remove(&name);
            }
        }
        for (name, record) in desired {
            let runtime = self.runtime.clone();
            let bytes = record.component.0.clone();
            let compiled = tokio::task::spawn_blocking(move || runtime.compile(&bytes)).await;
            let result = match compiled {
                Ok(Ok(c)) => self
                    .placement
                    .install(
                        &name,
                        &record.digest,
                        &c,
                        record.manifest.operators.clone(),
                        record.effective_config(),
                    )
                    .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = result {
                tracing::error!(plugin = %name, error = %e, "cannot load placement plugin");
            }
        }
    }

    async fn reconcile_frameworks(self: &Arc<Self>) {
        let desired: BTreeMap<FrameworkId, PluginRecord> = self.store.read(|s| {
            s.plugins
                .values()
                .filter(|p| p.manifest.kind == PluginKind::Framework)
                .filter_map(|p| Some((FrameworkId::new(p.manifest.name.clone()).ok()?, p.clone())))
                .collect()
        });
        let running: Vec<(FrameworkId, String, BTreeMap<String, String>)> = self
            .frameworks_read()
            .iter()
            .filter(|(_, h)| h.link.is_none())
            .map(|(id, h)| (id.clone(), h.digest.clone(), h.config.clone()))
            .collect();
        for (id, digest, config) in running {
            match desired.get(&id) {
                Some(p) if p.digest == digest => {
                    let want = p.effective_config();
                    if want != config
                        && let Some(h) = self.frameworks_write().get_mut(&id)
                    {
                        h.config = want.clone();
                        h.send(FrameworkMsg::Reconfigure(want));
                    }
                    // Its role follows its configuration.
                    if let Err(e) = self.record_plugin_framework(&id, p).await {
                        tracing::error!(framework = %id, error = %e, "cannot record the framework's new role");
                    }
                }
                _ => {
                    tracing::info!(framework = %id, "stopping framework plugin");
                    self.frameworks_write().remove(&id);
                    self.alloc_wakeup.notify_one();
                }
            }
        }
        for (id, record) in desired {
            if self.frameworks_read().contains_key(&id) {
                continue;
            }
            if let Err(e) = self.record_plugin_framework(&id, &record).await {
                tracing::error!(framework = %id, error = %e, "cannot register framework");
                continue;
            }
            match crate::frameworks::spawn(self.clone(), id.clone(), record).await {
                Ok(handle) => {
                    tracing::info!(framework = %id, "framework plugin started");
                    self.frameworks_write().insert(id, handle);
                    self.alloc_wakeup.notify_one();
                }
                Err(e) => {
                    tracing::error!(framework = %id, error = %e, "cannot start framework plugin")
                }
            }
        }
    }
}

impl Leader {
    /// Records a framework plugin's info (its role follows its
    /// configuration) unless the state has it already.
    async fn record_plugin_framework(
        &self,
        id: &FrameworkId,
        record: &wasmos_state::PluginRecord,
    ) -> Result<(), wasmos_store::StoreError> {
        let info = plugin_framework_info(record);
        if self
            .store
            .read(|s| s.frameworks.get(id).is_some_and(|f| f.info == info))
        {
            return Ok(());
        }
        self.store
            .propose_one(Command::RegisterFramework {
                framework_id: id.clone(),
                info,
                now: now_secs(),
            })
            .await
            .map(|_| ())
    }
}

/// A framework plugin as the state records it.
fn plugin_framework_info(record: &wasmos_state::PluginRecord) -> FrameworkInfo {
    FrameworkInfo::plugin(&record.manifest.name, &plugin_role(record))
}

/// A framework plugin's role: its `mesos_role` configuration (Marathon's
/// and Chronos' `--mesos_role`), `*` when it has none or an invalid one.
fn plugin_role(record: &wasmos_state::PluginRecord) -> String {
    match record.effective_config().get("mesos_role") {
        Some(r) if wasmos_core::reservation::check_role(r).is_ok() => r.clone(),
        Some(r) => {
            tracing::warn!(plugin = %record.manifest.name, role = %r, "mesos_role is not a valid role; the framework runs in role *");
            "*".into()
        }
        None => "*".into(),
    }
}
