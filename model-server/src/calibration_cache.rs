//! The last calibration's choice, kept in a file so that a restarted server (a crash,
//! a hot reload of another model, an agent restart) loads with it at once instead of
//! spending `--calibration-ms` again.
//!
//! The choice is reused only when everything that decided it is unchanged: the model
//! file (device, inode, size, modification time), the cores the server may use, the
//! device, spinning, the `--threads/--instances/--max-batch` settings, and this binary's
//! version. Anything else, and a file that is missing, too large, unparsable or holds
//! values out of range, means calibrating again (a warning says why, never an error).
//! The file is written with mode 0600 through a temporary file and a rename, so a
//! reader never sees half of it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use proto_schema::calibration::CalibrationRun;
use serde::{Deserialize, Serialize};

/// Largest cache file read.
pub const MAX_CACHE_BYTES: u64 = 64 * 1024;

/// What decided a calibration; equal keys mean its choice still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheKey {
    /// model-server's version.
    pub server_version: String,
    /// The model file: device and inode.
    pub model_dev_ino: (u64, u64),
    /// The model file's size.
    pub model_len: u64,
    /// The model file's modification time, ns since the epoch.
    pub model_mtime_ns: i128,
    /// Cores the server may use.
    pub cores: u32,
    /// `cpu` or `cuda`.
    pub device: String,
    /// `--spin`.
    pub spin: bool,
    /// `--threads`, `--instances`, `--max-batch` as given.
    pub settings: [String; 3],
}

impl CacheKey {
    /// The key of `model` under these settings, or why it cannot be made.
    pub fn of(
        model: &Path,
        cores: usize,
        device: &str,
        spin: bool,
        settings: [String; 3],
    ) -> std::io::Result<CacheKey> {
        let m = std::fs::metadata(model)?;
        Ok(CacheKey {
            server_version: env!("CARGO_PKG_VERSION").to_owned(),
            model_dev_ino: (m.dev(), m.ino()),
            model_len: m.len(),
            model_mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            cores: cores as u32,
            device: device.to_owned(),
            spin,
            settings,
        })
    }
}

/// One cached choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedChoice {
    /// What it was measured under.
    pub key: CacheKey,
    /// Intra-op threads per instance.
    pub threads: u32,
    /// Instances.
    pub instances: u32,
    /// Largest batch.
    pub max_batch: u32,
    /// When it was measured, Unix ms.
    pub calibrated_unix_ms: u64,
    /// The measurements behind it (shown again in `status.calibration`).
    pub runs: Vec<CalibrationRun>,
}

/// Why a cached choice was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheMiss {
    /// No file yet (the first start).
    #[error("no cache file yet")]
    Missing,
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Io(#[source] std::io::Error),
    /// Larger than [`MAX_CACHE_BYTES`].
    #[error("{0} bytes, larger than {MAX_CACHE_BYTES}")]
    TooLarge(u64),
    /// Not a cached choice.
    #[error("not a calibration cache: {0}")]
    Malformed(#[source] serde_json::Error),
    /// Measured under something else (another model file, cores, settings, version).
    #[error("measured under other conditions")]
    Stale,
    /// Values no calibration could have chosen here.
    #[error("out of range: {threads} threads x {instances} instances, batch {max_batch}")]
    OutOfRange {
        /// Threads.
        threads: u32,
        /// Instances.
        instances: u32,
        /// Batch.
        max_batch: u32,
    },
}

/// The choice in `path` if it was measured under `key` and is in range for `cores`.
pub fn load(path: &Path, key: &CacheKey, max_instances: u32) -> Result<CachedChoice, CacheMiss> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheMiss::Missing),
        Err(e) => return Err(CacheMiss::Io(e)),
    };
    let len = file.metadata().map_err(CacheMiss::Io)?.len();
    if len > MAX_CACHE_BYTES {
        return Err(CacheMiss::TooLarge(len));
    }
    let choice: CachedChoice =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(CacheMiss::Malformed)?;
    check(&choice, key, max_instances)?;
    Ok(choice)
}

/// Whether `choice` holds for `key`.
pub fn check(choice: &CachedChoice, key: &CacheKey, max_instances: u32) -> Result<(), CacheMiss> {
    if &choice.key != key {
        return Err(CacheMiss::Stale);
    }
    let (t, i, b) = (choice.threads, choice.instances, choice.max_batch);
    let in_range = t >= 1
        && i >= 1
        && i <= max_instances
        && u64::from(t) * u64::from(i) <= u64::from(key.cores.max(1))
        && (1..=crate::config::MAX_BATCH as u32).contains(&b);
    if !in_range {
        return Err(CacheMiss::OutOfRange {
            threads: t,
            instances: i,
            max_batch: b,
        });
    }
    Ok(())
}

/// Writes `choice` to `path` (mode 0600, atomically).
pub fn store(path: &Path, choice: &CachedChoice) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(choice).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path) -> CacheKey {
        let model = dir.join("m.onnx");
        std::fs::write(&model, b"model bytes").unwrap();
        CacheKey::of(
            &model,
            4,
            "cpu",
            false,
            ["auto".into(), "auto".into(), "auto".into()],
        )
        .unwrap()
    }

    fn choice(key: CacheKey) -> CachedChoice {
        CachedChoice {
            key,
            threads: 2,
            instances: 2,
            max_batch: 1,
            calibrated_unix_ms: 1,
            runs: vec![],
        }
    }

    #[test]
    fn a_stored_choice_is_loaded_under_the_same_key_only() {
        let d = tempfile::tempdir().unwrap();
        let k = key(d.path());
        let path = d.path().join("m.calibration.json");
        assert!(matches!(load(&path, &k, 8), Err(CacheMiss::Missing)));
        store(&path, &choice(k.clone())).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path, &k, 8).unwrap(), choice(k.clone()));
        // Another core count, setting or model file: calibrate again.
        let mut other = k.clone();
        other.cores = 8;
        assert!(matches!(load(&path, &other, 8), Err(CacheMiss::Stale)));
        let mut other = k.clone();
        other.settings[2] = "4".into();
        assert!(matches!(load(&path, &other, 8), Err(CacheMiss::Stale)));
        std::fs::write(d.path().join("m.onnx"), b"a replaced model").unwrap();
        let replaced = CacheKey::of(
            &d.path().join("m.onnx"),
            4,
            "cpu",
            false,
            ["auto".into(), "auto".into(), "auto".into()],
        )
        .unwrap();
        assert!(matches!(load(&path, &replaced, 8), Err(CacheMiss::Stale)));
    }

    #[test]
    fn bad_files_are_misses_not_errors() {
        let d = tempfile::tempdir().unwrap();
        let k = key(d.path());
        let path = d.path().join("c.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(load(&path, &k, 8), Err(CacheMiss::Malformed(_))));
        std::fs::write(&path, vec![b' '; MAX_CACHE_BYTES as usize + 1]).unwrap();
        assert!(matches!(load(&path, &k, 8), Err(CacheMiss::TooLarge(_))));
        for (t, i, b) in [(0, 1, 1), (4, 2, 1), (1, 9, 1), (1, 1, 0)] {
            let mut c = choice(k.clone());
            (c.threads, c.instances, c.max_batch) = (t, i, b);
            std::fs::remove_file(&path).unwrap();
            store(&path, &c).unwrap();
            assert!(
                matches!(load(&path, &k, 8), Err(CacheMiss::OutOfRange { .. })),
                "{t} {i} {b}"
            );
        }
        // A symlink is not followed.
        let link = d.path().join("link.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(load(&link, &k, 8), Err(CacheMiss::Io(_))));
    }
}
