//! Mesos' fetcher: the files a task asks for (`fetch`) are put into its
//! sandbox before it starts — downloaded over HTTP(S) or copied from the
//! agent's disk, unpacked when they are archives, made executable, and
//! owned by the task's user. A file that cannot be fetched fails the task
//! before it runs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use wasmos_core::TaskSpec;
use wasmos_core::task::FetchUri;

/// The most one file may weigh when the task asks for no disk.
const DEFAULT_LIMIT: u64 = 1 << 30;
/// How long one download may take.
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(600);

/// Archives `extract` unpacks (others are kept as they are, as Mesos does).
fn archive_kind(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".zip") {
        Some("zip")
    } else if [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
    ]
    .iter()
    .any(|x| n.ends_with(x))
    {
        Some("tar")
    } else {
        None
    }
}

/// Fetches every file of the task into `sandbox`, in order.
pub(crate) async fn fetch_all(spec: &TaskSpec, sandbox: &Path) -> Result<(), String> {
    if spec.fetch.is_empty() {
        return Ok(());
    }
    let owner = match &spec.command.user {
        Some(u) => Some(
            nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .ok_or_else(|| format!("unknown user {u}"))?,
        ),
        None => None,
    };
    let disk = spec.resources.disk.as_f64();
    let limit = if disk > 0.0 {
        (disk * 1024.0 * 1024.0) as u64
    } else {
        DEFAULT_LIMIT
    };
    let client = reqwest::Client::builder()
        .timeout(DOWNLOAD_DEADLINE)
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    for f in &spec.fetch {
        fetch_one(&client, f, sandbox, owner.as_ref(), limit)
            .await
            .map_err(|e| format!("fetch {}: {e}", f.uri))?;
        tracing::debug!(task = %spec.task_id, uri = %f.uri, "fetched");
    }
    if let Some(u) = &owner {
        chown_tree(sandbox, u).await?;
    }
    Ok(())
}

async fn fetch_one(
    client: &reqwest::Client,
    f: &FetchUri,
    sandbox: &Path,
    owner: Option<&nix::unistd::User>,
    limit: u64,
) -> Result<(), String> {
    let rel = f.dest()?;
    let dest = sandbox.join(&rel);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.fetching",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    if let Some(path) = f.uri.strip_prefix("file://") {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| format!("{path} on this agent: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{path} is not a file"));
        }
        if meta.len() > limit {
            return Err(format!("{} bytes is over the limit of {limit}", meta.len()));
        }
        // A task with a user gets only what that user could read.
        if let Some(u) = owner {
            use std::os::unix::fs::MetadataExt as _;
            let readable = meta.mode() & 0o004 != 0
                || (meta.uid() == u.uid.as_raw() && meta.mode() & 0o400 != 0)
                || (meta.gid() == u.gid.as_raw() && meta.mode() & 0o040 != 0);
            if !readable {
                return Err(format!("{path} is not readable by user {}", u.name));
            }
        }
        tokio::fs::copy(path, &tmp)
            .await
            .map_err(|e| format!("cannot copy {path}: {e}"))?;
    } else {
        let mut resp = client
            .get(&f.uri)
            .send()
            .await
            .map_err(|e| format!("cannot download: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the server answered {}", resp.status()));
        }
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut total = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("download cut short: {e}"))?
        {
            total += chunk.len() as u64;
            if total > limit {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(format!("more than the limit of {limit} bytes"));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    tokio::fs::rename(&tmp, &dest)
        .await
        .map_err(|e| format!("cannot move it to {}: {e}", dest.display()))?;
    if f.executable {
        tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| format!("cannot make {} executable: {e}", dest.display()))?;
    }
    if f.extract
        && let Some(kind) = archive_kind(&rel)
    {
        extract(kind, &dest, sandbox).await?;
    }
    Ok(())
}

/// Unpacks an archive into the sandbox (GNU tar and unzip keep members
/// inside it: leading `/` and `..` are stripped or refused).
async fn extract(kind: &str, archive: &Path, into: &Path) -> Result<(), String> {
    let mut cmd = if kind == "zip" {
        let mut c = tokio::process::Command::new("unzip");
        c.arg("-o").arg("-q").arg(archive).arg("-d").arg(into);
        c
    } else {
        let mut c = tokio::process::Command::new("tar");
        c.arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into)
            .arg("--no-same-owner");
        c
    };
    let out = cmd.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("cannot unpack: {kind} is not installed on this agent; install it, or fetch with extract off")
        } else {
            format!("cannot unpack: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "cannot unpack: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Gives the sandbox and everything in it to the task's user.
async fn chown_tree(dir: &Path, u: &nix::unistd::User) -> Result<(), String> {
    let out = tokio::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", u.uid, u.gid))
        .arg(dir)
        .output()
        .await
        .map_err(|e| format!("cannot chown the sandbox: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot chown the sandbox: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_is_spoken() {
        // Nothing listens on port 9: the error is the connection's, not
        // "scheme not supported".
        let client = reqwest::Client::new();
        let f = FetchUri {
            uri: "https://127.0.0.1:9/x".into(),
            extract: false,
            executable: false,
            dest_path: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_one(&client, &f, dir.path(), None, 1 << 20)
            .await
            .unwrap_err();
        assert!(err.starts_with("cannot download"), "{err}");
        assert!(!err.to_lowercase().contains("scheme"), "{err}");
    }

    #[test]
    fn archives_are_known_by_their_extension() {
        assert_eq!(archive_kind("app.tar.gz"), Some("tar"));
        assert_eq!(archive_kind("x/app.TGZ"), Some("tar"));
        assert_eq!(archive_kind("app.zip"), Some("zip"));
        assert_eq!(archive_kind("run.sh"), None);
    }

    #[test]
    fn destinations_come_from_the_uri_or_dest_path_and_stay_inside() {
        let f = |uri: &str, dest: Option<&str>| FetchUri {
            uri: uri.into(),
            extract: false,
            executable: false,
            dest_path: dest.map(str::to_string),
        };
        assert_eq!(f("http://h/a/b.tgz?x=1", None).dest().unwrap(), "b.tgz");
        assert_eq!(f("file:///srv/run.sh", None).dest().unwrap(), "run.sh");
        assert_eq!(f("http://h/x", Some("bin/x")).dest().unwrap(), "bin/x");
        assert!(f("http://h/", None).dest().is_err());
        assert!(f("http://h/x", Some("../x")).dest().is_err());
        assert!(f("http://h/x", Some("/etc/x")).dest().is_err());
    }
}
