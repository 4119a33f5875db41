//! Change detection for hot reload: polls files' size, modification time and inode. A
//! change is reported once the new state has held for one more poll, so a file that is
//! still being written is not loaded half-way.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Size in bytes.
    pub len: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Inode (changes when the file is replaced by a rename).
    pub ino: u64,
}

impl FileStamp {
    /// The stamp of `path` now, `None` if it cannot be read.
    pub fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ino: m.ino(),
        })
    }
}

/// Watches one file.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    current: Option<FileStamp>,
    pending: Option<Option<FileStamp>>,
}

impl FileWatch {
    /// Starts watching `path` from its present state.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let current = FileStamp::of(&path);
        Self {
            path,
            current,
            pending: None,
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Polls the file; `true` when a change has settled (seen unchanged on two polls).
    pub fn poll(&mut self) -> bool {
        self.observe(FileStamp::of(&self.path))
    }

    /// [`FileWatch::poll`] with the stamp given (for tests).
    pub fn observe(&mut self, now: Option<FileStamp>) -> bool {
        if now == self.current {
            self.pending = None;
            return false;
        }
        match self.pending {
            Some(p) if p == now => {
                self.current = now;
                self.pending = None;
                // A file that disappeared is not a version to load; wait for it to return.
                now.is_some()
            }
            _ => {
                self.pending = Some(now);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(len: u64, mtime_ns: i128) -> Option<FileStamp> {
        Some(FileStamp {
            len,
            mtime_ns,
            ino: 1,
        })
    }

    #[test]
    fn a_change_fires_once_after_it_settles() {
        let mut w = FileWatch {
            path: "x".into(),
            current: stamp(10, 1),
            pending: None,
        };
        assert!(!w.observe(stamp(10, 1)));
        assert!(!w.observe(stamp(5, 2)), "still being written");
        assert!(!w.observe(stamp(20, 3)), "still being written");
        assert!(w.observe(stamp(20, 3)), "settled");
        assert!(!w.observe(stamp(20, 3)), "fires only once");
    }

    #[test]
    fn a_missing_file_does_not_fire_until_it_returns() {
        let mut w = FileWatch {
            path: "x".into(),
            current: stamp(10, 1),
            pending: None,
        };
        assert!(!w.observe(None));
        assert!(!w.observe(None));
        assert!(!w.observe(stamp(10, 9)));
        assert!(w.observe(stamp(10, 9)));
    }

    #[test]
    fn a_real_rewrite_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.onnx");
        std::fs::write(&p, b"one").unwrap();
        let mut w = FileWatch::new(&p);
        assert!(!w.poll());
        std::fs::write(&p, b"second version").unwrap();
        assert!(!w.poll());
        assert!(w.poll());
    }
}
