//! Frame references: from `(ring, generation, slot, seq)` in a request to an open,
//! validated ring.
//!
//! Only rings this system owns can be named: the name must follow the ring name rule (no
//! `/`, no `..`), the file is `<ring_dir>/<name>.ring` and is opened by `RingReader` with
//! `O_NOFOLLOW` (a symlink is refused) and checked for owner (this process's uid or root,
//! or a uid or group trusted by `--trust-ring-uid`/`--trust-ring-gid`), mode (not
//! writable by group or others), the ring magic, version and size. Owner and mode of an
//! open ring are checked again (one `fstat` of its descriptor) at most once per
//! [`RING_RECHECK_INTERVAL`], so a ring that was `chmod`ed or `chown`ed after the open
//! is dropped and answered `unknown_ring`, as it would have been at the open.
//! Opened readers are cached by name and dropped once the file under that name is no
//! longer the one mapped (the writer removed or recreated the ring) or the file was found
//! truncated (the read failed with `ReadError::Truncated`, answered `unknown_ring`), so a
//! recreated ring is reopened and its new generation seen; a request naming another generation than the
//! current file's is `stale_frame`. The slot's sequence is checked before and after the read by
//! `RingReader::read`, in the worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto_schema::error::{ErrorBody, ErrorCode};
use proto_schema::message::{FrameMeta, FrameRef};
use proto_schema::pixel::FrameGeometry;
use shm_ring::{self as ring, RingReader, RingTrust};

/// Most rings kept open at once; opening one more evicts an arbitrary cached ring (it is
/// reopened on its next request).
pub const MAX_OPEN_RINGS: usize = 1024;

/// How often, at most, the owner and mode of an open ring are checked again (one `fstat`
/// per ring, on a request that names it): a `chmod 0666` or `chown` of a live ring is
/// refused within this time (docs/ring-format.md §6.1).
pub const RING_RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a frame reference was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameRefError {
    /// The ring name breaks the name rule (path traversal, separators, length).
    #[error("ring name {ring:?} breaks the ring name rule")]
    BadName {
        /// The name as sent.
        ring: String,
    },
    /// No usable ring of that name in the ring directory (missing, a symlink, not a ring,
    /// owned by an untrusted uid, writable by others, or truncated).
    #[error("ring {ring:?} cannot be opened in {dir}: {source}")]
    UnknownRing {
        /// Ring name.
        ring: String,
        /// The ring directory.
        dir: PathBuf,
        /// The open error.
        #[source]
        source: Arc<ring::RingOpenError>,
    },
    /// The ring exists but in another generation than the request names.
    #[error("ring {ring:?} is at generation {current}, request names {requested}")]
    WrongGeneration {
        /// Ring name.
        ring: String,
        /// Generation in the request.
        requested: u64,
        /// Generation of the ring file now.
        current: u64,
    },
    /// The slot index is outside the ring.
    #[error("ring {ring:?} has {slots} slots, request names slot {slot}")]
    SlotOutOfRange {
        /// Ring name.
        ring: String,
        /// Requested slot.
        slot: u32,
        /// Slots in the ring.
        slots: u32,
    },
    /// The request's frame metadata disagrees with the ring geometry.
    #[error(
        "ring {ring:?} holds {}x{} {} strides {:?}, request says {}x{} {} strides {:?}",
        ring_geometry.width, ring_geometry.height, ring_geometry.format, ring_geometry.strides,
        meta.width, meta.height, meta.format, meta.strides
    )]
    GeometryMismatch {
        /// Ring name.
        ring: String,
        /// The ring's geometry.
        ring_geometry: FrameGeometry,
        /// What the request claims.
        meta: Box<FrameMeta>,
    },
}

impl FrameRefError {
    /// The wire error code (the mapping lives in [`crate::wire_code`]).
    pub fn code(&self) -> ErrorCode {
        crate::wire_code::WireCode::wire_code(self)
    }

    /// The wire error body.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

/// A validated reference: the open ring and its geometry.
#[derive(Debug, Clone)]
pub struct ResolvedFrame {
    /// The ring, shared with the cache.
    pub reader: Arc<RingReader>,
    /// The ring geometry (equal to the request's metadata).
    pub geometry: FrameGeometry,
}

/// An open ring and when its owner and mode were last checked.
#[derive(Debug)]
struct Cached {
    reader: Arc<RingReader>,
    checked: Instant,
}

/// Opens and caches rings of one directory.
#[derive(Debug)]
pub struct FrameResolver {
    dir: PathBuf,
    trust: RingTrust,
    recheck: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

impl FrameResolver {
    /// A resolver for rings in `dir` owned by this uid or root.
    pub fn new(dir: PathBuf) -> Self {
        Self::with_trust(dir, RingTrust::new())
    }

    /// A resolver for rings in `dir` whose owners `trust` accepts, rechecked every
    /// [`RING_RECHECK_INTERVAL`].
    pub fn with_trust(dir: PathBuf, trust: RingTrust) -> Self {
        FrameResolver {
            dir,
            trust,
            recheck: RING_RECHECK_INTERVAL,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The same resolver with another recheck interval (tests).
    pub fn recheck_every(mut self, interval: Duration) -> Self {
        self.recheck = interval;
        self
    }

    /// The ring directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Rings open now.
    pub fn open_rings(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unknown(&self, name: &str, e: ring::RingOpenError) -> FrameRefError {
        FrameRefError::UnknownRing {
            ring: name.to_owned(),
            dir: self.dir.clone(),
            source: Arc::new(e),
        }
    }

    fn open(&self, name: &str) -> Result<Arc<RingReader>, FrameRefError> {
        let reader = RingReader::open_with(&self.dir, name, &self.trust)
            .map_err(|e| self.unknown(name, e))?;
        let reader = Arc::new(reader);
        let mut cache = self.lock();
        if cache.len() >= MAX_OPEN_RINGS && !cache.contains_key(name) {
            if let Some(victim) = cache.keys().next().cloned() {
                cache.remove(&victim);
            }
        }
        let cached = Cached {
            reader: Arc::clone(&reader),
            checked: Instant::now(),
        };
        cache.insert(name.to_owned(), cached);
        Ok(reader)
    }

    /// The cached reader of `name`, its owner and mode checked again when the last
    /// check is older than the recheck interval. A ring that is no longer trusted
    /// leaves the cache and is refused with the error an open would give.
    fn cached(&self, name: &str) -> Result<Option<Arc<RingReader>>, FrameRefError> {
        let mut cache = self.lock();
        let Some(entry) = cache.get_mut(name) else {
            return Ok(None);
        };
        if entry.checked.elapsed() < self.recheck {
            return Ok(Some(Arc::clone(&entry.reader)));
        }
        match entry.reader.check_trust(&self.trust) {
            Ok(()) => {
                entry.checked = Instant::now();
                Ok(Some(Arc::clone(&entry.reader)))
            }
            Err(e) => {
                cache.remove(name);
                drop(cache);
                tracing::warn!(ring = name, error = %e, "open ring no longer trusted; dropped");
                Err(self.unknown(name, e))
            }
        }
    }

    /// Validates `frame` and `meta` and returns the open ring. Does not read the slot.
    pub fn resolve(
        &self,
        frame: &FrameRef,
        meta: &FrameMeta,
    ) -> Result<ResolvedFrame, FrameRefError> {
        let name = frame.ring.as_str();
        if ring::validate_ring_name(name).is_err() {
            return Err(FrameRefError::BadName {
                ring: name.to_owned(),
            });
        }
        let cached = self.cached(name)?;
        let mut reader = match cached {
            // A cached mapping of a file that was removed, replaced or truncated is
            // dropped (one `stat` per request), so dead rings do not pin memory.
            Some(r) if r.is_current() && !r.truncated() => r,
            Some(_) => {
                self.lock().remove(name);
                self.open(name)?
            }
            None => self.open(name)?,
        };
        if reader.generation() != frame.generation && !reader.is_current() {
            // Recreated between the check above and now: look once more.
            reader = self.open(name)?;
        }
        if reader.generation() != frame.generation {
            return Err(FrameRefError::WrongGeneration {
                ring: name.to_owned(),
                requested: frame.generation,
                current: reader.generation(),
            });
        }
        let geometry = reader.geometry();
        let slots = reader.slots();
        if frame.slot >= slots {
            return Err(FrameRefError::SlotOutOfRange {
                ring: name.to_owned(),
                slot: frame.slot,
                slots,
            });
        }
        if !meta.matches_geometry(&geometry) {
            return Err(FrameRefError::GeometryMismatch {
                ring: name.to_owned(),
                ring_geometry: geometry,
                meta: Box::new(meta.clone()),
            });
        }
        Ok(ResolvedFrame { reader, geometry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::pixel::PixelFormat;
    use shm_ring::RingWriter;

    fn writer(dir: &std::path::Path, name: &str) -> RingWriter {
        let g = FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap();
        let mut w = RingWriter::builder(name)
            .dir(dir)
            .slots(2)
            .geometry(g)
            .create()
            .unwrap();
        let mut slot = w.begin_write();
        slot.data_mut().fill(1);
        slot.publish(0, 0);
        w
    }

    fn reference(w: &RingWriter, name: &str) -> (FrameRef, FrameMeta) {
        let frame = FrameRef {
            ring: name.into(),
            generation: w.generation(),
            slot: 0,
            seq: 2,
        };
        (frame, FrameMeta::from_geometry(0, &w.geometry(), 0))
    }

    #[test]
    fn resolves_and_caches() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path(), "cam");
        let r = FrameResolver::new(dir.path().to_path_buf());
        let (f, m) = reference(&w, "cam");
        let a = r.resolve(&f, &m).unwrap();
        let b = r.resolve(&f, &m).unwrap();
        assert!(Arc::ptr_eq(&a.reader, &b.reader));
        assert_eq!(a.geometry, w.geometry());
        assert_eq!(r.open_rings(), 1);
    }

    #[test]
    fn refuses_bad_names_missing_rings_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path(), "cam");
        let r = FrameResolver::new(dir.path().to_path_buf());
        let (mut f, m) = reference(&w, "cam");
        f.ring = "../cam".into();
        assert_eq!(
            r.resolve(&f, &m).unwrap_err().code(),
            ErrorCode::InvalidMessage
        );
        f.ring = "nosuch".into();
        assert_eq!(
            r.resolve(&f, &m).unwrap_err().code(),
            ErrorCode::UnknownRing
        );
        std::os::unix::fs::symlink(w.path(), dir.path().join("link.ring")).unwrap();
        f.ring = "link".into();
        assert_eq!(
            r.resolve(&f, &m).unwrap_err().code(),
            ErrorCode::UnknownRing
        );
        assert_eq!(r.open_rings(), 0);
    }

    #[test]
    fn generation_slot_and_geometry_checks() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path(), "cam");
        let r = FrameResolver::new(dir.path().to_path_buf());
        let (f, m) = reference(&w, "cam");
        let mut wrong = f.clone();
        wrong.generation += 1;
        assert!(matches!(
            r.resolve(&wrong, &m),
            Err(FrameRefError::WrongGeneration { .. })
        ));
        let mut slot = f.clone();
        slot.slot = 2;
        assert_eq!(
            r.resolve(&slot, &m).unwrap_err().code(),
            ErrorCode::InvalidMessage
        );
        let mut meta = m.clone();
        meta.width = 32;
        meta.strides = [32, 32, 0];
        assert_eq!(
            r.resolve(&f, &meta).unwrap_err().code(),
            ErrorCode::GeometryMismatch
        );
    }

    /// Issue 25, gap 6: a ring `chmod`ed writable by others after the open is refused
    /// at the next recheck (at most one `fstat` per interval), leaves the cache, and
    /// stays refused on reopen; restored, it is served again.
    #[test]
    fn rechecks_owner_and_mode_of_open_rings() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let w = writer(dir.path(), "cam");
        let (f, m) = reference(&w, "cam");
        let set_mode = |mode| {
            std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        // A long interval: the chmod is not seen yet (the rate is bounded).
        let slow =
            FrameResolver::new(dir.path().to_path_buf()).recheck_every(Duration::from_secs(3600));
        slow.resolve(&f, &m).unwrap();
        // Every request rechecks.
        let r = FrameResolver::new(dir.path().to_path_buf()).recheck_every(Duration::ZERO);
        r.resolve(&f, &m).unwrap();
        set_mode(0o666);
        slow.resolve(&f, &m).unwrap();
        let e = r.resolve(&f, &m).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnknownRing);
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        assert_eq!(r.open_rings(), 0);
        assert_eq!(
            r.resolve(&f, &m).unwrap_err().code(),
            ErrorCode::UnknownRing
        );
        set_mode(0o640);
        r.resolve(&f, &m).unwrap();
        assert_eq!(RING_RECHECK_INTERVAL, Duration::from_secs(1));
    }

    /// A recreated ring (new file, new generation) is picked up; the old generation is
    /// stale; a removed ring is unknown and leaves the cache.
    #[test]
    fn follows_recreated_and_removed_rings() {
        let dir = tempfile::tempdir().unwrap();
        let r = FrameResolver::new(dir.path().to_path_buf());
        let w1 = writer(dir.path(), "cam");
        let (f1, m) = reference(&w1, "cam");
        r.resolve(&f1, &m).unwrap();
        drop(w1); // closes and unlinks
        let w2 = writer(dir.path(), "cam");
        let (f2, _) = reference(&w2, "cam");
        assert_ne!(f1.generation, f2.generation);
        assert_eq!(
            r.resolve(&f1, &m).unwrap_err().code(),
            ErrorCode::StaleFrame
        );
        let resolved = r.resolve(&f2, &m).unwrap();
        assert_eq!(resolved.reader.generation(), f2.generation);
        drop(w2);
        assert_eq!(
            r.resolve(&f2, &m).unwrap_err().code(),
            ErrorCode::UnknownRing
        );
        assert_eq!(r.open_rings(), 0);
    }
}
