//! Plugins as OCI artifacts: push to and pull from any registry that speaks
//! the distribution API (Docker's registry, Harbor, GHCR, ...).
//!
//! The layout is the CNCF Wasm OCI artifact: an OCI image manifest whose
//! config is `application/vnd.wasm.config.v0+json` and whose single layer
//! is the component, `application/wasm`. The plugin's own manifest rides
//! in the image manifest's annotations (`dev.wasmos.plugin.manifest`), so a
//! registry lists plugins without anyone pulling a layer. Everything pulled
//! is checked against its digest; a reference pinned by digest
//! (`...@sha256:...`) pins the whole artifact.
//!
//! References: `oci://registry/repository[:tag][@digest]` over HTTPS, or
//! `oci+http://...` for a registry without TLS (a local one). Registries
//! must allow anonymous access for now.
//!
//! Signatures ([`sign`]) are cosign's, stored beside the artifact.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmos_core::PluginManifest;

pub mod sign;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The annotation that carries the plugin's manifest (JSON).
pub const PLUGIN_ANNOTATION: &str = "dev.wasmos.plugin.manifest";
/// The largest component pulled.
pub const MAX_COMPONENT: u64 = 64 << 20;

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(
        "{0:?} is not an OCI reference like oci://registry.example.org/plugins/name:1.0 (or oci+http:// for a registry without TLS)"
    )]
    BadReference(String),
    #[error("cannot reach the registry {registry}: {why}")]
    Unreachable { registry: String, why: String },
    #[error(
        "the registry {registry} wants credentials; Wasmos pulls and pushes anonymously for now"
    )]
    Unauthorized { registry: String },
    #[error(
        "the registry has no {what} for {reference}; check the repository and tag (`wasmos plugin push` puts plugins there)"
    )]
    NotFound { what: String, reference: String },
    #[error("the registry answered {status} for the {what}: {body}")]
    Registry {
        status: u16,
        what: String,
        body: String,
    },
    #[error("{reference} is not a Wasmos plugin artifact: {why}")]
    NotAPlugin { reference: String, why: String },
    #[error("{reference} is not {kind}: {why}")]
    WrongArtifact {
        reference: String,
        kind: &'static str,
        why: String,
    },
    #[error("{what} is over {max} bytes: refusing it")]
    TooLarge { what: String, max: u64 },
    #[error("{what} has digest {actual}, not {expected}: refusing it")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
}

/// A place in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl FromStr for Reference {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self, OciError> {
        let bad = || OciError::BadReference(s.to_string());
        let (scheme, rest) = if let Some(r) = s.strip_prefix("oci://") {
            ("https", r)
        } else if let Some(r) = s.strip_prefix("oci+http://") {
            ("http", r)
        } else {
            return Err(bad());
        };
        let (registry, path) = rest.split_once('/').ok_or_else(bad)?;
        if registry.is_empty() || registry.contains(['@', '?', '#']) {
            return Err(bad());
        }
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or_else(bad)?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad());
                }
                (p, Some(d.to_ascii_lowercase()))
            }
            None => (path, None),
        };
        // The tag is after the last `:` of the last path segment.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|seg| {
                !seg.is_empty()
                    && seg.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        let tag_ok = tag.as_deref().is_none_or(|t| {
            !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
        if !repo_ok || !tag_ok {
            return Err(bad());
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            scheme: scheme.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.scheme == "http" {
            "oci+http"
        } else {
            "oci"
        };
        write!(f, "{prefix}://{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    fn base(&self) -> String {
        format!("{}://{}/v2/{}", self.scheme, self.registry, self.repository)
    }

    /// The tag or digest manifests are fetched by (the digest if pinned).
    fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// This reference pinned to `digest`.
    pub fn pinned(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

/// `sha256:<hex>`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// A pulled plugin.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub manifest: PluginManifest,
    pub component: Vec<u8>,
    /// The image manifest's digest (what pins this artifact).
    pub digest: String,
}

/// RFC 3339 UTC time, for the config's `created`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn unreachable(r: &Reference, e: reqwest::Error) -> OciError {
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    OciError::Unreachable {
        registry: r.registry.clone(),
        why: cause.to_string(),
    }
}

async fn check(
    r: &Reference,
    what: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, OciError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    match status.as_u16() {
        401 | 403 => Err(OciError::Unauthorized {
            registry: r.registry.clone(),
        }),
        404 => Err(OciError::NotFound {
            what: what.to_string(),
            reference: r.to_string(),
        }),
        s => Err(OciError::Registry {
            status: s,
            what: what.to_string(),
            body: resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(500)
                .collect(),
        }),
    }
}

/// The largest image manifest read.
const MAX_MANIFEST: u64 = 4 << 20;

/// Reads a checked response's body, refusing one over `max` bytes however
/// large the registry says it is.
async fn read_limited(
    r: &Reference,
    what: &str,
    resp: reqwest::Response,
    max: u64,
) -> Result<Vec<u8>, OciError> {
    let mut resp = check(r, what, resp).await?;
    let too_large = || OciError::TooLarge {
        what: format!("the {what} of {r}"),
        max,
    };
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| unreachable(r, e))? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Uploads a blob unless the registry has it.
async fn put_blob(
    client: &reqwest::Client,
    r: &Reference,
    bytes: &[u8],
) -> Result<String, OciError> {
    let d = digest(bytes);
    let head = client
        .head(format!("{}/blobs/{d}", r.base()))
        .send()
        .await
        .map_err(|e| unreachable(r, e))?;
    if head.status().is_success() {
        return Ok(d);
    }
    let start = client
        .post(format!("{}/blobs/uploads/", r.base()))
        .send()
        .await
        .map_err(|e| unreachable(r, e))?;
    let start = check(r, "blob upload", start).await?;
    let location = start
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| OciError::Registry {
            status: start.status().as_u16(),
            what: "blob upload".into(),
            body: "no Location header".into(),
        })?
        .to_string();
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        location
    } else {
        format!("{}://{}{location}", r.scheme, r.registry)
    };
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("digest={d}"));
    let put = client
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| unreachable(r, e))?;
    check(r, "blob upload", put).await?;
    Ok(d)
}

/// An artifact of one layer: its config and layer media types, and what
/// it is called in errors.
struct Kind {
    config: &'static str,
    layer: &'static str,
    name: &'static str,
    max: u64,
}

const PLUGIN: Kind = Kind {
    config: CONFIG_MEDIA_TYPE,
    layer: LAYER_MEDIA_TYPE,
    name: "a Wasmos plugin artifact",
    max: MAX_COMPONENT,
};

/// The config media type of a package catalogue's index artifact.
pub const INDEX_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasmos.catalogue.config.v1+json";
/// Its one layer: a Universe repository index (JSON).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.dcos.universe.repo+json";
/// The largest index pulled.
pub const MAX_INDEX: u64 = 32 << 20;

const INDEX: Kind = Kind {
    config: INDEX_CONFIG_MEDIA_TYPE,
    layer: INDEX_MEDIA_TYPE,
    name: "a package catalogue index",
    max: MAX_INDEX,
};

/// Pushes an artifact of one layer under `tag`; returns the image
/// manifest's digest.
async fn push_artifact(
    client: &reqwest::Client,
    r: &Reference,
    tag: &str,
    kind: &Kind,
    config: &serde_json::Value,
    layer: &[u8],
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<String, OciError> {
    let layer_digest = put_blob(client, r, layer).await?;
    let mut config = config.clone();
    config["layerDigests"] = serde_json::json!([layer_digest]);
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = put_blob(client, r, &config_bytes).await?;
    let image = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: Descriptor {
            media_type: kind.config.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            annotations: Default::default(),
        },
        layers: vec![Descriptor {
            media_type: kind.layer.into(),
            digest: layer_digest,
            size: layer.len() as u64,
            annotations: Default::default(),
        }],
        annotations,
    };
    let body = serde_json::to_vec(&image).unwrap_or_default();
    let resp = client
        .put(format!("{}/manifests/{tag}", r.base()))
        .header(reqwest::header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
        .body(body.clone())
        .send()
        .await
        .map_err(|e| unreachable(r, e))?;
    check(r, "manifest", resp).await?;
    Ok(digest(&body))
}

/// Pulls an artifact of one layer of `kind`, checking every digest;
/// returns its image manifest, its layer and the manifest's digest.
async fn pull_artifact(
    client: &reqwest::Client,
    r: &Reference,
    kind: &Kind,
) -> Result<(ImageManifest, Vec<u8>, String), OciError> {
    let not_it = |why: &str| {
        if kind.name == PLUGIN.name {
            OciError::NotAPlugin {
                reference: r.to_string(),
                why: why.to_string(),
            }
        } else {
            OciError::WrongArtifact {
                reference: r.to_string(),
                kind: kind.name,
                why: why.to_string(),
            }
        }
    };
    let resp = client
        .get(format!("{}/manifests/{}", r.base(), r.manifest_ref()))
        .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPE)
        .send()
        .await
        .map_err(|e| unreachable(r, e))?;
    let body = read_limited(r, "manifest", resp, MAX_MANIFEST).await?;
    let manifest_digest = digest(&body);
    if let Some(want) = &r.digest
        && want != &manifest_digest
    {
        return Err(OciError::DigestMismatch {
            what: "the manifest".into(),
            expected: want.clone(),
            actual: manifest_digest,
        });
    }
    let image: ImageManifest = serde_json::from_slice(&body)
        .map_err(|e| not_it(&format!("not an OCI image manifest ({e})")))?;
    if image.config.media_type != kind.config {
        return Err(not_it(&format!(
            "its config is {}, not {}",
            image.config.media_type, kind.config
        )));
    }
    let [layer] = image.layers.as_slice() else {
        return Err(not_it("it must have exactly one layer"));
    };
    if layer.media_type != kind.layer {
        return Err(not_it(&format!(
            "its layer is {}, not {}",
            layer.media_type, kind.layer
        )));
    }
    if layer.size > kind.max {
        return Err(not_it(&format!("its layer is over {} MiB", kind.max >> 20)));
    }
    let resp = client
        .get(format!("{}/blobs/{}", r.base(), layer.digest))
        .send()
        .await
        .map_err(|e| unreachable(r, e))?;
    let bytes = read_limited(r, "layer", resp, kind.max).await?;
    let actual = digest(&bytes);
    if actual != layer.digest {
        return Err(OciError::DigestMismatch {
            what: "the layer".into(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok((image, bytes, manifest_digest))
}

/// Pushes a plugin; returns the image manifest's digest.
pub async fn push(
    client: &reqwest::Client,
    r: &Reference,
    manifest: &PluginManifest,
    component: &[u8],
) -> Result<String, OciError> {
    let tag = r.tag.clone().unwrap_or_else(|| manifest.version.clone());
    let config = serde_json::json!({
        "created": rfc3339(SystemTime::now()),
        "author": "wasmos",
        "architecture": "wasm",
        "os": "wasip2",
        "component": {
            "target": format!("wasmos:plugin/{}@{}", manifest.kind, manifest.world_version),
            "exports": [],
            "imports": [],
        },
    });
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        PLUGIN_ANNOTATION.to_string(),
        serde_json::to_string(manifest).unwrap_or_default(),
    );
    annotations.insert(
        "org.opencontainers.image.title".into(),
        manifest.name.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.version".into(),
        manifest.version.clone(),
    );
    annotations.insert(
        "org.opencontainers.image.description".into(),
        manifest.description.clone(),
    );
    push_artifact(client, r, &tag, &PLUGIN, &config, component, annotations).await
}

/// Pulls a plugin, checking every digest.
pub async fn pull(client: &reqwest::Client, r: &Reference) -> Result<Pulled, OciError> {
    let (image, component, digest) = pull_artifact(client, r, &PLUGIN).await?;
    let not_plugin = |why: &str| OciError::NotAPlugin {
        reference: r.to_string(),
        why: why.to_string(),
    };
    let manifest: PluginManifest = image
        .annotations
        .get(PLUGIN_ANNOTATION)
        .ok_or_else(|| not_plugin(&format!("no {PLUGIN_ANNOTATION} annotation")))
        .and_then(|m| {
            serde_json::from_str(m).map_err(|e| not_plugin(&format!("its plugin manifest: {e}")))
        })?;
    Ok(Pulled {
        manifest,
        component,
        digest,
    })
}

/// Pushes a package catalogue's index (Universe repository JSON) under
/// the reference's tag (`latest` without one); returns the manifest's
/// digest.
pub async fn push_index(
    client: &reqwest::Client,
    r: &Reference,
    index: &[u8],
) -> Result<String, OciError> {
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let config = serde_json::json!({"created": rfc3339(SystemTime::now()), "author": "wasmos"});
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        "org.opencontainers.image.title".into(),
        "package catalogue".into(),
    );
    push_artifact(client, r, &tag, &INDEX, &config, index, annotations).await
}

/// Pulls a package catalogue's index, checking every digest; returns it
/// and the manifest's digest.
pub async fn pull_index(
    client: &reqwest::Client,
    r: &Reference,
) -> Result<(Vec<u8>, String), OciError> {
    let (_, index, digest) = pull_artifact(client, r, &INDEX).await?;
    Ok((index, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_tags_digests_and_ports() {
        let r: Reference = "oci://registry.example.org/plugins/health:1.0"
            .parse()
            .unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.registry.as_str()),
            ("https", "registry.example.org")
        );
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("plugins/health", Some("1.0"))
        );
        let r: Reference = "oci+http://127.0.0.1:5000/p/x".parse().unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.registry.as_str(), r.tag.as_deref()),
            ("http", "127.0.0.1:5000", Some("latest"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r: Reference = format!("oci://h:1/p/x@{d}").parse().unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (None, Some(d.as_str()))
        );
        assert_eq!(r.to_string(), format!("oci://h:1/p/x@{d}"));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "registry/x:1",
            "oci://",
            "oci://host",
            "oci://host/UPPER",
            "oci://host/x@sha256:short",
            "oci://host/x:bad tag",
            "oci://host//x",
            "http://host/x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }

    #[test]
    fn created_times_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_260_000);
        assert_eq!(rfc3339(t), "2026-11-21T11:20:00Z");
    }
}
