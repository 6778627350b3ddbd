//! Sandbox files, read over HTTP (as Mesos' `/files/read` and
//! `/files/browse`). A path is resolved inside the task's sandbox and must
//! stay there: no absolute paths, no `..`, no symlink that leads out.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use wasmos_core::TaskId;

/// The most bytes one read returns.
pub const MAX_READ: u64 = 4 << 20;
/// What one read returns when no length is given.
pub const DEFAULT_READ: u64 = 64 << 10;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Io(String),
}

/// Opens `rel` inside the sandbox of `task` under `root`. The kernel
/// resolves it beneath the sandbox (openat2 with `RESOLVE_BENEATH`), so no
/// `..`, absolute symlink or symlink swapped in meanwhile can lead out.
pub fn open(root: &Path, task: &TaskId, rel: &str) -> Result<File, FilesError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let rel_path = Path::new(rel);
    for c in rel_path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(FilesError::BadPath(format!(
                    "path {rel:?} must not contain `..`"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(FilesError::BadPath(format!(
                    "path {rel:?} must be relative to the sandbox"
                )));
            }
        }
    }
    if rel.contains('\0') {
        return Err(FilesError::BadPath("path must not contain NUL".into()));
    }
    let sandbox = File::open(root.join(task.as_str()))
        .map_err(|_| FilesError::NotFound(format!("task {task} has no sandbox on this agent")))?;
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        // Non-blocking: a FIFO in the sandbox must not hang the agent.
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match nix::fcntl::openat2(&sandbox, rel, how) {
        Ok(fd) => Ok(File::from(fd)),
        Err(nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP) => Err(FilesError::BadPath(
            format!("path {rel:?} leads out of the sandbox"),
        )),
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Err(FilesError::NotFound(
            format!("no file {rel:?} in the sandbox of {task}"),
        )),
        Err(e) => Err(FilesError::Io(format!("cannot open {rel:?}: {e}"))),
    }
}

/// Reads up to `length` bytes from `offset`; returns them and the file's size.
pub fn read(file: &File, offset: u64, length: Option<u64>) -> Result<(Vec<u8>, u64), FilesError> {
    let io = |e: std::io::Error| FilesError::Io(e.to_string());
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(FilesError::BadPath(
            "that is a directory; use files/browse".into(),
        ));
    }
    let size = meta.len();
    let length = length.unwrap_or(DEFAULT_READ).min(MAX_READ);
    if offset >= size {
        return Ok((Vec::new(), size));
    }
    let mut f = file;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::with_capacity(length.min(size - offset) as usize);
    f.take(length).read_to_end(&mut buf).map_err(io)?;
    Ok((buf, size))
}

/// One entry of a directory listing.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    pub mode: String,
    pub mtime: f64,
}

/// Lists `dir` (opened with [`open`] from `rel`); paths are relative to
/// the sandbox.
pub fn browse(dir: &File, rel: &str) -> Result<Vec<Entry>, FilesError> {
    use std::os::fd::AsRawFd as _;
    let io = |e: std::io::Error| FilesError::Io(e.to_string());
    if !dir.metadata().map_err(io)?.is_dir() {
        return Err(FilesError::BadPath(
            "not a directory; use files/read".into(),
        ));
    }
    // The open directory itself, not its name: nothing can be swapped in.
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let base: PathBuf = Path::new(rel)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut out = Vec::new();
    for e in std::fs::read_dir(&listing).map_err(io)? {
        let e = e.map_err(io)?;
        // Not followed: a symlink is listed as itself.
        let meta = std::fs::symlink_metadata(e.path()).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        out.push(Entry {
            path: base.join(e.file_name()).display().to_string(),
            size: meta.len(),
            is_dir: meta.is_dir(),
            mode: format!("{:o}", meta.permissions().mode() & 0o7777),
            mtime: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, TaskId) {
        let root = tempfile::tempdir().unwrap();
        let task = TaskId::new("t1").unwrap();
        let sb = root.path().join("t1");
        std::fs::create_dir_all(sb.join("sub")).unwrap();
        std::fs::write(sb.join("stdout"), b"hello world").unwrap();
        std::fs::write(root.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), sb.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../secret", sb.join("sub/up")).unwrap();
        std::os::unix::fs::symlink("stdout", sb.join("inside")).unwrap();
        (root, task)
    }

    #[test]
    fn paths_that_leave_the_sandbox_are_refused() {
        let (root, task) = setup();
        for bad in [
            "../secret",
            "/etc/passwd",
            "sub/../../secret",
            "escape",
            "sub/up/x",
        ] {
            let r = open(root.path(), &task, bad);
            assert!(matches!(r, Err(FilesError::BadPath(_))), "{bad}: {r:?}");
        }
        // A relative link that climbs out is refused by the kernel too.
        let r = open(root.path(), &task, "sub/up");
        assert!(r.is_err(), "{r:?}");
    }

    #[test]
    fn paths_inside_the_sandbox_are_read_in_ranges() {
        let (root, task) = setup();
        let f = open(root.path(), &task, "stdout").unwrap();
        assert_eq!(read(&f, 6, None).unwrap(), (b"world".to_vec(), 11));
        assert_eq!(read(&f, 0, Some(5)).unwrap().0, b"hello");
        assert!(read(&f, 99, None).unwrap().0.is_empty());
        let via_link = open(root.path(), &task, "inside").unwrap();
        assert_eq!(read(&via_link, 0, None).unwrap().0, b"hello world");
        assert!(matches!(
            open(root.path(), &task, "missing"),
            Err(FilesError::NotFound(_))
        ));
    }

    #[test]
    fn listings_are_relative_to_the_sandbox() {
        let (root, task) = setup();
        let dir = open(root.path(), &task, ".").unwrap();
        let names: Vec<String> = browse(&dir, ".")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, vec!["escape", "inside", "stdout", "sub"]);
        let sub = open(root.path(), &task, "sub").unwrap();
        let names: Vec<String> = browse(&sub, "sub")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, vec!["sub/up"]);
    }
}
