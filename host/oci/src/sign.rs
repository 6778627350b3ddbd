//! Signed plugins, in cosign's key-based formats, so that other tools sign
//! and verify what Wasmos does:
//!
//! - An artifact in a registry is signed by its manifest's digest. The
//!   signature lives beside it in the same repository, under the tag
//!   `sha256-<hex>.sig`: an OCI image manifest whose layers are "simple
//!   signing" payloads (`application/vnd.dev.cosign.simplesigning.v1+json`,
//!   a JSON claim naming the digest) with the base64 signature of each in
//!   the layer's `dev.cosignproject.cosign/signature` annotation. That is
//!   what `cosign sign --key` writes and `cosign verify --key` reads.
//! - A component uploaded from a file is signed as a blob: the base64
//!   signature of its bytes, as `cosign sign-blob --key` writes it.
//!
//! Keys are ECDSA P-256 with SHA-256 (cosign's default): private keys are
//! unencrypted PKCS#8 PEM (`wasmos plugin keygen`, or `openssl genpkey
//! -algorithm EC -pkeyopt ec_paramgen_curve:P-256`), public keys PEM
//! SubjectPublicKeyInfo (`cosign.pub` as cosign writes it). rcgen reads and
//! writes the keys and signs; ring verifies.

use std::collections::BTreeMap;

use base64::Engine as _;
use rcgen::{PublicKeyData as _, SigningKey as _};
use serde::{Deserialize, Serialize};

use wasmos_core::PluginManifest;

use crate::{Descriptor, ImageManifest, MANIFEST_MEDIA_TYPE, OciError, Reference, check, digest};

/// A signature layer's media type.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that carries a signature (base64).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a simple signing payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The largest payload read, and the most signatures read for one digest
/// (each is checked against every trusted key).
const MAX_PAYLOAD: u64 = 64 << 10;
const MAX_SIGNATURES: usize = 16;

/// What is wrong with a key or a signature, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error(
        "{what}: cosign's encrypted private keys are not read; use an unencrypted PKCS#8 key (`wasmos plugin keygen`, or `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`), which `cosign import-key-pair` also takes"
    )]
    EncryptedKey { what: String },
    #[error(
        "{what} is not an ECDSA P-256 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): {why}; make one with `wasmos plugin keygen`"
    )]
    BadPrivateKey { what: String, why: String },
    #[error(
        "{what} is not an ECDSA P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`, as cosign.pub): {why}"
    )]
    BadPublicKey { what: String, why: String },
    #[error(
        "the cluster trusts no plugin signing keys, so no plugin can be installed; add one with `wasmos plugin trust add NAME KEY.pub`"
    )]
    NoTrustedKeys,
    #[error(
        "{what} is not signed; sign it with `wasmos plugin sign` and a key the cluster trusts (`wasmos plugin trust list`)"
    )]
    Unsigned { what: String },
    #[error(
        "{what} is signed, but by no key the cluster trusts: {why}; sign it with a trusted key (`wasmos plugin trust list`), or trust the signer's public key with `wasmos plugin trust add`"
    )]
    Untrusted { what: String, why: String },
}

/// A private key that signs plugins.
pub struct SigningKey(rcgen::KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SigningKey({})", self.public().fingerprint())
    }
}

impl SigningKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<SigningKey, SignError> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(SigningKey)
            .map_err(|e| SignError::BadPrivateKey {
                what: "a new key".into(),
                why: e.to_string(),
            })
    }

    /// Reads a PKCS#8 PEM private key; `what` names it in errors (a path).
    pub fn from_pem(pem: &str, what: &str) -> Result<SigningKey, SignError> {
        if pem.contains("ENCRYPTED SIGSTORE PRIVATE KEY") || pem.contains("ENCRYPTED COSIGN") {
            return Err(SignError::EncryptedKey { what: what.into() });
        }
        let bad = |why: String| SignError::BadPrivateKey {
            what: what.into(),
            why,
        };
        if pem.contains("BEGIN EC PRIVATE KEY") {
            return Err(bad(
                "it is a SEC1 key; convert it with `openssl pkcs8 -topk8 -nocrypt`".into(),
            ));
        }
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(bad("it is another kind of key".into()));
        }
        Ok(SigningKey(key))
    }

    /// PKCS#8 PEM: the secret, for a 0600 file.
    pub fn private_pem(&self) -> String {
        self.0.serialize_pem()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            spki: self.0.subject_public_key_info(),
            point: self.0.der_bytes().to_vec(),
        }
    }

    /// The base64 ECDSA signature (ASN.1 DER, SHA-256) of `message`.
    pub fn sign(&self, message: &[u8]) -> String {
        // rcgen signs with ring; a P-256 key signs any message.
        let der = self.0.sign(message).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(der)
    }
}

/// A public key that verifies plugin signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// DER SubjectPublicKeyInfo.
    spki: Vec<u8>,
    /// The uncompressed point.
    point: Vec<u8>,
}

impl PublicKey {
    /// Reads a PEM public key (`cosign.pub`); `what` names it in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<PublicKey, SignError> {
        let bad = |why: String| SignError::BadPublicKey {
            what: what.into(),
            why,
        };
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(bad("no PUBLIC KEY block".into()));
        }
        let spki = rcgen::SubjectPublicKeyInfo::from_pem(pem).map_err(|e| bad(e.to_string()))?;
        if spki.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(bad("it is another kind of key".into()));
        }
        Ok(PublicKey {
            spki: spki.subject_public_key_info(),
            point: spki.der_bytes().to_vec(),
        })
    }

    /// PEM, as cosign writes `cosign.pub`.
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// `sha256:<hex>` of the DER key: how operators tell keys apart.
    pub fn fingerprint(&self) -> String {
        digest(&self.spki)
    }

    /// Whether `signature` (base64 of an ASN.1 ECDSA signature) is this
    /// key's over `message`.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
            return false;
        };
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &self.point,
        )
        .verify(message, &der)
        .is_ok()
    }
}

/// The keys a cluster trusts, by name.
pub type TrustedKeys = [(String, PublicKey)];

/// What an uploaded plugin's signature covers: its whole manifest (name,
/// kind, prefixes, default configuration) and its component's digest, as
/// canonical JSON. `wasmos plugin sign` writes it beside the signature,
/// so that `cosign verify-blob` checks the pair.
pub fn upload_statement(manifest: &PluginManifest, component: &[u8]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Statement<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        manifest: &'a PluginManifest,
        component: String,
    }
    serde_json::to_vec(&Statement {
        kind: UPLOAD_STATEMENT_TYPE,
        manifest,
        component: digest(component),
    })
    .unwrap_or_default()
}

/// The `type` of an upload statement.
pub const UPLOAD_STATEMENT_TYPE: &str = "wasmos plugin upload";

/// Checks an uploaded plugin's signature (of its [`upload_statement`]);
/// returns the name of the trusted key that made it.
pub fn verify_upload(
    keys: &TrustedKeys,
    manifest: &PluginManifest,
    component: &[u8],
    signature: Option<&str>,
) -> Result<String, SignError> {
    let what = format!("{} {}", manifest.name, manifest.version);
    if keys.is_empty() {
        return Err(SignError::NoTrustedKeys);
    }
    if signature.is_none_or(|s| s.trim().is_empty()) {
        return Err(SignError::Unsigned { what });
    }
    verify_blob(
        keys,
        &what,
        &upload_statement(manifest, component),
        signature,
    )
}

/// Checks a blob signature (`cosign sign-blob`) over `bytes`; returns the
/// name of the trusted key that made it.
pub fn verify_blob(
    keys: &TrustedKeys,
    what: &str,
    bytes: &[u8],
    signature: Option<&str>,
) -> Result<String, SignError> {
    if keys.is_empty() {
        return Err(SignError::NoTrustedKeys);
    }
    let Some(signature) = signature.filter(|s| !s.trim().is_empty()) else {
        return Err(SignError::Unsigned { what: what.into() });
    };
    keys.iter()
        .find(|(_, k)| k.verify(bytes, signature))
        .map(|(n, _)| n.clone())
        .ok_or_else(|| SignError::Untrusted {
            what: what.into(),
            why: "the signature does not verify with any of them".into(),
        })
}

/// A simple signing payload: the claim a registry signature signs.
#[derive(Debug, Serialize, Deserialize)]
struct SimpleSigning {
    critical: Critical,
    #[serde(default)]
    optional: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The payload that signs `digest` in `r`'s repository.
fn payload(r: &Reference, digest: &str) -> Vec<u8> {
    let p = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: format!("{}/{}", r.registry, r.repository),
            },
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            kind: SIGNATURE_TYPE.to_string(),
        },
        optional: None,
    };
    serde_json::to_vec(&p).unwrap_or_default()
}

/// The tag the signatures of `digest` live under.
pub fn signature_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
}

/// One signature read from a registry.
#[derive(Debug, Clone)]
pub struct Signature {
    pub payload: Vec<u8>,
    /// Base64.
    pub signature: String,
}

/// Checks registry signatures of the artifact with manifest `digest`;
/// returns the name of the trusted key that signed it.
pub fn verify_artifact(
    keys: &TrustedKeys,
    what: &str,
    digest: &str,
    signatures: &[Signature],
) -> Result<String, SignError> {
    if keys.is_empty() {
        return Err(SignError::NoTrustedKeys);
    }
    if signatures.is_empty() {
        return Err(SignError::Unsigned { what: what.into() });
    }
    let mut why = Vec::new();
    for s in signatures {
        let Some((name, _)) = keys
            .iter()
            .find(|(_, k)| k.verify(&s.payload, &s.signature))
        else {
            why.push("a signature does not verify with any of them".to_string());
            continue;
        };
        match serde_json::from_slice::<SimpleSigning>(&s.payload) {
            Ok(p) if p.critical.kind != SIGNATURE_TYPE => {
                why.push(format!("a signature is a {:?}", p.critical.kind));
            }
            Ok(p) if p.critical.image.docker_manifest_digest != digest => why.push(format!(
                "a signature by a trusted key is for {}, not {digest}",
                p.critical.image.docker_manifest_digest
            )),
            Ok(_) => return Ok(name.clone()),
            Err(e) => why.push(format!(
                "a signed payload is not a simple signing claim ({e})"
            )),
        }
    }
    why.dedup();
    Err(SignError::Untrusted {
        what: what.into(),
        why: why.join("; "),
    })
}

/// Reads the signature manifest of `digest`, if there is one.
async fn signature_manifest(
    client: &reqwest::Client,
    r: &Reference,
    digest: &str,
) -> Result<Option<ImageManifest>, OciError> {
    let resp = client
        .get(format!("{}/manifests/{}", r.base(), signature_tag(digest)))
        .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPE)
        .send()
        .await
        .map_err(|e| crate::unreachable(r, e))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body = crate::read_limited(r, "signature manifest", resp, crate::MAX_MANIFEST).await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| OciError::NotAPlugin {
            reference: format!("{r} (its signatures, {})", signature_tag(digest)),
            why: format!("not an OCI image manifest ({e})"),
        })
}

/// The signatures stored beside the artifact with manifest `digest`
/// (none if the registry has none).
pub async fn signatures(
    client: &reqwest::Client,
    r: &Reference,
    digest: &str,
) -> Result<Vec<Signature>, OciError> {
    let Some(m) = signature_manifest(client, r, digest).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for layer in m
        .layers
        .iter()
        .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE && l.size <= MAX_PAYLOAD)
        .take(MAX_SIGNATURES)
    {
        let Some(sig) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        out.push(Signature {
            payload: payload_of(client, r, layer).await?,
            signature: sig.clone(),
        });
    }
    Ok(out)
}

/// The payload a signature layer points at, checked against its digest.
async fn payload_of(
    client: &reqwest::Client,
    r: &Reference,
    layer: &Descriptor,
) -> Result<Vec<u8>, OciError> {
    let resp = client
        .get(format!("{}/blobs/{}", r.base(), layer.digest))
        .send()
        .await
        .map_err(|e| crate::unreachable(r, e))?;
    let payload = crate::read_limited(r, "signature payload", resp, MAX_PAYLOAD).await?;
    let actual = crate::digest(&payload);
    if actual != layer.digest {
        return Err(OciError::DigestMismatch {
            what: "a signature payload".into(),
            expected: layer.digest.clone(),
            actual,
        });
    }
    Ok(payload)
}

/// Signs the artifact with manifest `digest` in `r`'s repository and
/// stores the signature beside it (adding to the signatures there).
pub async fn sign_artifact(
    client: &reqwest::Client,
    r: &Reference,
    digest: &str,
    key: &SigningKey,
) -> Result<(), OciError> {
    let payload = payload(r, digest);
    let signature = key.sign(&payload);
    let layer_digest = crate::put_blob(client, r, &payload).await?;
    let mut layers: Vec<Descriptor> = signature_manifest(client, r, digest)
        .await?
        .map(|m| m.layers)
        .unwrap_or_default();
    // A key signs a digest once: its earlier signature is replaced.
    let public = key.public();
    let mut kept = Vec::new();
    for l in layers.drain(..) {
        let mine = match l.annotations.get(SIGNATURE_ANNOTATION) {
            Some(s) if l.media_type == SIMPLE_SIGNING_MEDIA_TYPE => {
                public.verify(&payload_of(client, r, &l).await?, s)
            }
            _ => false,
        };
        if !mine {
            kept.push(l);
        }
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(SIGNATURE_ANNOTATION.to_string(), signature);
    kept.push(Descriptor {
        media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
        digest: layer_digest,
        size: payload.len() as u64,
        annotations,
    });
    let config = serde_json::json!({
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": kept.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(),
        },
    });
    let config_bytes = serde_json::to_vec(&config).unwrap_or_default();
    let config_digest = crate::put_blob(client, r, &config_bytes).await?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: Descriptor {
            media_type: OCI_CONFIG_MEDIA_TYPE.into(),
            digest: config_digest,
            size: config_bytes.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers: kept,
        annotations: BTreeMap::new(),
    };
    let body = serde_json::to_vec(&manifest).unwrap_or_default();
    let resp = client
        .put(format!("{}/manifests/{}", r.base(), signature_tag(digest)))
        .header(reqwest::header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
        .body(body)
        .send()
        .await
        .map_err(|e| crate::unreachable(r, e))?;
    check(r, "signature manifest", resp).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        "oci+http://127.0.0.1:5000/plugins/hello:1.0"
            .parse()
            .unwrap()
    }

    #[test]
    fn keys_round_trip_through_pem_and_sign_verifiably() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(&key.private_pem(), "k").unwrap();
        let public = PublicKey::from_pem(&key.public().to_pem(), "k.pub").unwrap();
        assert_eq!(public, again.public());
        let sig = again.sign(b"component bytes");
        assert!(public.verify(b"component bytes", &sig));
        assert!(!public.verify(b"other bytes", &sig));
        assert!(!public.verify(b"component bytes", "not base64!"));
        assert!(
            format!("{key:?}").contains("sha256:"),
            "debug shows no secret"
        );
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn other_key_formats_are_refused_with_what_to_do() {
        let enc = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nabc\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n";
        let e = SigningKey::from_pem(enc, "cosign.key").unwrap_err();
        assert!(e.to_string().contains("import-key-pair"), "{e}");
        let e = SigningKey::from_pem("garbage", "k").unwrap_err();
        assert!(e.to_string().contains("wasmos plugin keygen"), "{e}");
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(SigningKey::from_pem(&ed.serialize_pem(), "k").is_err());
        assert!(PublicKey::from_pem(&ed.public_key_pem(), "k.pub").is_err());
        let key = SigningKey::generate().unwrap();
        let e = PublicKey::from_pem(&key.private_pem(), "k.pub").unwrap_err();
        assert!(e.to_string().contains("BEGIN PUBLIC KEY"), "{e}");
    }

    #[test]
    fn blob_signatures_verify_only_with_a_trusted_key() {
        let (a, b) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let keys = vec![("ops".to_string(), a.public())];
        let sig = a.sign(b"wasm");
        assert_eq!(verify_blob(&keys, "x", b"wasm", Some(&sig)).unwrap(), "ops");
        assert!(matches!(
            verify_blob(&keys, "x", b"wasm", None),
            Err(SignError::Unsigned { .. })
        ));
        assert!(matches!(
            verify_blob(&keys, "x", b"wasm", Some(&b.sign(b"wasm"))),
            Err(SignError::Untrusted { .. })
        ));
        assert!(matches!(
            verify_blob(&keys, "x", b"tampered", Some(&sig)),
            Err(SignError::Untrusted { .. })
        ));
        assert_eq!(
            verify_blob(&[], "x", b"wasm", Some(&sig)),
            Err(SignError::NoTrustedKeys)
        );
    }

    #[test]
    fn an_upload_signature_covers_the_manifest_as_well_as_the_component() {
        let key = SigningKey::generate().unwrap();
        let keys = vec![("ops".to_string(), key.public())];
        let manifest: PluginManifest = serde_json::from_value(serde_json::json!({
            "name": "guard", "version": "1.0.0", "kind": "isolator", "world_version": "0.5.0",
            "config": {"mode": "strict"}
        }))
        .unwrap();
        let sig = key.sign(&upload_statement(&manifest, b"wasm"));
        assert_eq!(
            verify_upload(&keys, &manifest, b"wasm", Some(&sig)).unwrap(),
            "ops"
        );
        // The same signed component under another name or configuration,
        // or another component under the signed manifest: refused.
        let mut renamed = manifest.clone();
        renamed.name = "labels".into();
        let mut relaxed = manifest.clone();
        relaxed.config.insert("mode".into(), "off".into());
        for (m, c) in [
            (&renamed, &b"wasm"[..]),
            (&relaxed, &b"wasm"[..]),
            (&manifest, &b"other"[..]),
        ] {
            assert!(matches!(
                verify_upload(&keys, m, c, Some(&sig)),
                Err(SignError::Untrusted { .. })
            ));
        }
        assert!(matches!(
            verify_upload(&keys, &manifest, b"wasm", Some(" ")),
            Err(SignError::Unsigned { .. })
        ));
        let statement: serde_json::Value =
            serde_json::from_slice(&upload_statement(&manifest, b"wasm")).unwrap();
        assert_eq!(statement["type"], UPLOAD_STATEMENT_TYPE);
        assert_eq!(statement["component"], digest(b"wasm"));
    }

    #[test]
    fn artifact_signatures_must_name_the_digest_and_verify() {
        let key = SigningKey::generate().unwrap();
        let keys = vec![("ops".to_string(), key.public())];
        let r = reference();
        let d = digest(b"manifest");
        let p = payload(&r, &d);
        let good = Signature {
            signature: key.sign(&p),
            payload: p,
        };
        assert_eq!(
            verify_artifact(&keys, "x", &d, std::slice::from_ref(&good)).unwrap(),
            "ops"
        );
        // A valid signature of another artifact does not carry over.
        let other = digest(b"other manifest");
        let e = verify_artifact(&keys, "x", &other, std::slice::from_ref(&good)).unwrap_err();
        assert!(e.to_string().contains("not sha256:"), "{e}");
        // A payload changed after signing.
        let tampered = Signature {
            payload: payload(&r, &other),
            signature: good.signature.clone(),
        };
        assert!(verify_artifact(&keys, "x", &other, &[tampered]).is_err());
        assert!(matches!(
            verify_artifact(&keys, "x", &d, &[]),
            Err(SignError::Unsigned { .. })
        ));
        // The payload is cosign's simple signing claim.
        let v: serde_json::Value = serde_json::from_slice(&good.payload).unwrap();
        assert_eq!(v["critical"]["type"], SIGNATURE_TYPE);
        assert_eq!(v["critical"]["image"]["docker-manifest-digest"], d);
        assert_eq!(
            v["critical"]["identity"]["docker-reference"],
            "127.0.0.1:5000/plugins/hello"
        );
        assert!(v["optional"].is_null());
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", &d[7..]));
    }
}
