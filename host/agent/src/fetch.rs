//! Mesos' fetcher: the files a task asks for (`fetch`) are put into its
//! sandbox before it starts — downloaded over HTTP(S) or copied from the
//! agent's disk, unpacked when they are archives, made executable, and
//! owned by the task's user. A file that cannot be fetched fails the task
//! before it runs. `file://` reads only beneath the directories the agent
//! is told to allow (`--fetch-allow`; none by default), so a task cannot
//! copy the agent's own files (its secrets, `/etc/shadow`) into its sandbox.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
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
pub(crate) async fn fetch_all(
    spec: &TaskSpec,
    sandbox: &Path,
    allow: &[PathBuf],
) -> Result<(), String> {
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
        fetch_one(&client, f, sandbox, owner.as_ref(), limit, allow)
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
    allow: &[PathBuf],
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
        let src = open_allowed(path, allow)?;
        let meta = src
            .metadata()
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
        let mut src = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(src), limit + 1);
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let copied = tokio::io::copy(&mut src, &mut file)
            .await
            .map_err(|e| format!("cannot copy {path}: {e}"))?;
        if copied > limit {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(format!("more than the limit of {limit} bytes"));
        }
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
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

/// Opens a `file://` path for reading if it lies beneath one of the
/// allowed directories. The kernel resolves it from that directory
/// (`openat2` with `RESOLVE_BENEATH`), so neither `..` nor a symbolic link
/// can lead out of it, and nothing can be swapped between a check and the
/// open. Opened non-blocking: a FIFO does not hang the launch (it is then
/// refused as not a file).
fn open_allowed(path: &str, allow: &[PathBuf]) -> Result<std::fs::File, String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?} is not an absolute path"));
    }
    for dir in allow {
        let Ok(rel) = p.strip_prefix(dir) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            return Err(format!("{path} is a directory"));
        }
        let d = std::fs::File::open(dir)
            .map_err(|e| format!("cannot open the allowed directory {}: {e}", dir.display()))?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        return match openat2(&d, rel, how) {
            Ok(fd) => Ok(std::fs::File::from(fd)),
            Err(nix::errno::Errno::EXDEV) => Err(format!(
                "{path} leads out of {} (through `..` or a symbolic link); file:// fetches read only beneath the directories the agent allows",
                dir.display()
            )),
            Err(e) => Err(format!("{path} on this agent: {}", e.desc())),
        };
    }
    if allow.is_empty() {
        Err(format!(
            "{path}: this agent allows no file:// fetches; serve the file over http(s), or start the agent with --fetch-allow DIR to let tasks read files beneath DIR"
        ))
    } else {
        let dirs: Vec<String> = allow.iter().map(|d| d.display().to_string()).collect();
        Err(format!(
            "{path} is not beneath a directory this agent allows file:// fetches from ({}); move it there or serve it over http(s)",
            dirs.join(", ")
        ))
    }
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
        let err = fetch_one(&client, &f, dir.path(), None, 1 << 20, &[])
            .await
            .unwrap_err();
        assert!(err.starts_with("cannot download"), "{err}");
        assert!(!err.to_lowercase().contains("scheme"), "{err}");
    }

    /// `file://` reads only beneath an allowed directory: not outside it,
    /// not through `..`, not through a symbolic link leading out, and not
    /// at all when nothing is allowed.
    #[tokio::test]
    async fn file_fetches_stay_beneath_the_allowed_directories() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("shared");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("ok.txt"), "fine\n").unwrap();
        std::fs::write(root.path().join("secret"), "s3cret\n").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), allowed.join("link")).unwrap();
        std::os::unix::fs::symlink("ok.txt", allowed.join("inside-link")).unwrap();
        nix::unistd::mkfifo(&allowed.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let allow = vec![allowed.clone()];
        let client = reqwest::Client::new();
        let fetch = |uri: String| {
            let client = client.clone();
            let allow = allow.clone();
            async move {
                let sandbox = tempfile::tempdir().unwrap();
                let f = FetchUri {
                    uri,
                    extract: false,
                    executable: false,
                    dest_path: Some("got".into()),
                };
                fetch_one(&client, &f, sandbox.path(), None, 1 << 20, &allow)
                    .await
                    .map(|()| std::fs::read_to_string(sandbox.path().join("got")).unwrap())
            }
        };
        let a = allowed.display();
        assert_eq!(fetch(format!("file://{a}/ok.txt")).await.unwrap(), "fine\n");
        assert_eq!(
            fetch(format!("file://{a}/inside-link")).await.unwrap(),
            "fine\n"
        );
        let out = fetch(format!("file://{}/secret", root.path().display()))
            .await
            .unwrap_err();
        assert!(
            out.contains("not beneath a directory this agent allows"),
            "{out}"
        );
        let dots = fetch(format!("file://{a}/../secret")).await.unwrap_err();
        assert!(dots.contains("leads out of"), "{dots}");
        let link = fetch(format!("file://{a}/link")).await.unwrap_err();
        assert!(link.contains("leads out of"), "{link}");
        let fifo = fetch(format!("file://{a}/fifo")).await.unwrap_err();
        assert!(fifo.contains("is not a file"), "{fifo}");

        let sandbox = tempfile::tempdir().unwrap();
        let f = FetchUri {
            uri: format!("file://{a}/ok.txt"),
            extract: false,
            executable: false,
            dest_path: None,
        };
        let none = fetch_one(&client, &f, sandbox.path(), None, 1 << 20, &[])
            .await
            .unwrap_err();
        assert!(none.contains("--fetch-allow DIR"), "{none}");
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
