//! Clip retention per camera: clips older than `max_age` go, then the oldest while the
//! camera's clips hold more than `max_bytes`. Decided by a pure function
//! ([`plan`]) on (modification time, size), so the policy is tested without files.

use std::path::{Path, PathBuf};

/// One finished clip on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipFile {
    /// Its path.
    pub path: PathBuf,
    /// Modification time (when it was finished), Unix ns.
    pub mtime_ns: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// The clips to delete: those older than `max_age_ns` at `now_ns`, then the oldest
/// until the rest hold at most `max_bytes`.
pub fn plan(
    mut clips: Vec<ClipFile>,
    now_ns: u64,
    max_age_ns: u64,
    max_bytes: u64,
) -> Vec<ClipFile> {
    clips.sort_by(|a, b| a.mtime_ns.cmp(&b.mtime_ns).then(a.path.cmp(&b.path)));
    let mut total: u64 = clips.iter().map(|c| c.bytes).sum();
    let mut out = Vec::new();
    for c in clips {
        if now_ns.saturating_sub(c.mtime_ns) > max_age_ns || total > max_bytes {
            total -= c.bytes;
            out.push(c);
        }
    }
    out
}

/// Whether `path` is a real folder (not a symlink to one).
fn real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// The finished clips (`*.mp4`, not the `.part` files being written) of one camera
/// folder: `<camera>/<date>/<id>.mp4`. Symlinks are never followed nor listed (one
/// planted in the tree must not make retention delete or count anything outside it).
pub fn scan(camera_dir: &Path) -> Vec<ClipFile> {
    let mut out = Vec::new();
    if !real_dir(camera_dir) {
        return out;
    }
    let Ok(days) = std::fs::read_dir(camera_dir) else {
        return out;
    };
    for day in days.flatten() {
        if !day.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(day.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            if path.extension().is_none_or(|e| e != "mp4")
                || !f.file_type().is_ok_and(|t| t.is_file())
            {
                continue;
            }
            let Ok(m) = f.metadata() else { continue };
            let mtime_ns = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as u64);
            out.push(ClipFile {
                path,
                mtime_ns,
                bytes: m.len(),
            });
        }
    }
    out
}

/// Applies [`plan`] to `camera_dir`, removing date folders left empty. Returns the
/// number of clips deleted.
pub fn enforce(camera_dir: &Path, now_ns: u64, max_age_ns: u64, max_bytes: u64) -> usize {
    let doomed = plan(scan(camera_dir), now_ns, max_age_ns, max_bytes);
    for c in &doomed {
        if let Err(e) = std::fs::remove_file(&c.path) {
            tracing::warn!(clip = %c.path.display(), error = %e, "clip retention: cannot delete");
        }
        if let Some(day) = c.path.parent() {
            // Fails while the folder still holds clips: that is the point.
            let _ = std::fs::remove_dir(day);
        }
    }
    doomed.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clip(name: &str, mtime_ns: u64, bytes: u64) -> ClipFile {
        ClipFile {
            path: name.into(),
            mtime_ns,
            bytes,
        }
    }

    #[test]
    fn age_then_bytes_oldest_first() {
        let clips = vec![
            clip("c", 300, 10),
            clip("a", 100, 10),
            clip("b", 200, 10),
            clip("d", 400, 10),
        ];
        let names = |v: Vec<ClipFile>| -> Vec<String> {
            v.into_iter()
                .map(|c| c.path.display().to_string())
                .collect()
        };
        assert_eq!(
            names(plan(clips.clone(), 400, 1000, 100)),
            Vec::<String>::new()
        );
        assert_eq!(names(plan(clips.clone(), 400, 250, 100)), ["a"]);
        assert_eq!(names(plan(clips.clone(), 400, 1000, 20)), ["a", "b"]);
        assert_eq!(names(plan(clips, 400, 250, 15)), ["a", "b", "c"]);
    }

    #[test]
    fn enforce_deletes_files_and_empty_day_folders() {
        let d = tempfile::tempdir().unwrap();
        let day = d.path().join("2026-01-01");
        std::fs::create_dir(&day).unwrap();
        std::fs::write(day.join("x.mp4"), vec![0u8; 100]).unwrap();
        std::fs::write(day.join(".y.mp4.part"), vec![0u8; 100]).unwrap();
        assert_eq!(scan(d.path()).len(), 1, "parts are not clips");
        assert_eq!(enforce(d.path(), u64::MAX, 1, u64::MAX), 1);
        assert!(day.exists(), "the part file keeps its folder");
        std::fs::remove_file(day.join(".y.mp4.part")).unwrap();
        std::fs::write(day.join("z.mp4"), vec![0u8; 100]).unwrap();
        assert_eq!(enforce(d.path(), 0, u64::MAX, 10), 1);
        assert!(!day.exists());
    }

    proptest! {
        /// What stays is within both bounds (unless a single clip is larger than the
        /// byte bound, then nothing stays), and every deleted clip is no newer than
        /// every kept one.
        #[test]
        fn kept_clips_are_within_bounds_and_newest(
            sizes in proptest::collection::vec((0u64..1000, 1u64..100), 0..30),
            max_age in 0u64..1000,
            max_bytes in 0u64..2000,
        ) {
            let clips: Vec<ClipFile> = sizes
                .iter()
                .enumerate()
                .map(|(i, (t, b))| clip(&format!("{i}"), *t, *b))
                .collect();
            let gone = plan(clips.clone(), 1000, max_age, max_bytes);
            let kept: Vec<&ClipFile> = clips.iter().filter(|c| !gone.contains(c)).collect();
            let total: u64 = kept.iter().map(|c| c.bytes).sum();
            prop_assert!(total <= max_bytes);
            for k in &kept {
                prop_assert!(1000 - k.mtime_ns <= max_age);
                for g in &gone {
                    prop_assert!(g.mtime_ns <= k.mtime_ns);
                }
            }
        }
    }
}
