//! Sandbox files, read over HTTP (as Mesos' `/files/read` and
//! `/files/browse`). A path is resolved inside the task's sandbox and must
//! stay there: no absolute paths, no `..`, no symlink that leads out.

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

/// Resolves `rel` inside the sandbox of `task` under `root`.
pub fn resolve(root: &Path, task: &TaskId, rel: &str) -> Result<PathBuf, FilesError> {
    let sandbox = root.join(task.as_str());
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
    let sandbox = sandbox
        .canonicalize()
        .map_err(|_| FilesError::NotFound(format!("task {task} has no sandbox on this agent")))?;
    let full = sandbox
        .join(rel_path)
        .canonicalize()
        .map_err(|_| FilesError::NotFound(format!("no file {rel:?} in the sandbox of {task}")))?;
    if !full.starts_with(&sandbox) {
        return Err(FilesError::BadPath(format!(
            "path {rel:?} leads out of the sandbox"
        )));
    }
    Ok(full)
}

/// Reads up to `length` bytes from `offset`; returns them and the file's size.
pub fn read(path: &Path, offset: u64, length: Option<u64>) -> Result<(Vec<u8>, u64), FilesError> {
    let io = |e: std::io::Error| FilesError::Io(e.to_string());
    let meta = std::fs::metadata(path).map_err(io)?;
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
    let mut f = std::fs::File::open(path).map_err(io)?;
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

/// Lists a directory inside the sandbox; paths are relative to the sandbox.
pub fn browse(sandbox: &Path, dir: &Path) -> Result<Vec<Entry>, FilesError> {
    let io = |e: std::io::Error| FilesError::Io(e.to_string());
    let sandbox = sandbox.canonicalize().map_err(io)?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotADirectory => {
            FilesError::BadPath("not a directory; use files/read".into())
        }
        _ => io(e),
    })? {
        let e = e.map_err(io)?;
        let meta = e.metadata().map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        let path = e.path();
        out.push(Entry {
            path: path
                .strip_prefix(&sandbox)
                .unwrap_or(&path)
                .display()
                .to_string(),
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
        std::os::unix::fs::symlink(sb.join("stdout"), sb.join("inside")).unwrap();
        (root, task)
    }

    #[test]
    fn paths_that_leave_the_sandbox_are_refused() {
        let (root, task) = setup();
        for bad in ["../secret", "/etc/passwd", "sub/../../secret", "escape"] {
            let r = resolve(root.path(), &task, bad);
            assert!(matches!(r, Err(FilesError::BadPath(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn paths_inside_the_sandbox_are_read_in_ranges() {
        let (root, task) = setup();
        let p = resolve(root.path(), &task, "stdout").unwrap();
        assert_eq!(read(&p, 6, None).unwrap(), (b"world".to_vec(), 11));
        assert_eq!(read(&p, 0, Some(5)).unwrap().0, b"hello");
        assert!(read(&p, 99, None).unwrap().0.is_empty());
        let via_link = resolve(root.path(), &task, "inside").unwrap();
        assert_eq!(read(&via_link, 0, None).unwrap().0, b"hello world");
        assert!(matches!(
            resolve(root.path(), &task, "missing"),
            Err(FilesError::NotFound(_))
        ));
    }

    #[test]
    fn listings_are_relative_to_the_sandbox() {
        let (root, task) = setup();
        let sb = root.path().join("t1");
        let dir = resolve(root.path(), &task, ".").unwrap();
        let names: Vec<String> = browse(&sb, &dir)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(names, vec!["escape", "inside", "stdout", "sub"]);
    }
}
