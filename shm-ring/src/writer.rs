//! The single writer of a ring: creation (lock, stale-ring removal, atomic install),
//! writing frames straight into slots, publishing, and closing.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proto_schema::time::{MonoNanos, UnixNanos};

use super::error::RingCreateError;
use super::layout::{FixedHeader, Layout, MAGIC, MAX_GENERATION, MAX_SLOTS, MIN_SLOTS};
use super::layout::{LiveHeader, RingCountersHandle};
use super::shm::{WriterMap, FIXED_HEADER_LEN};
use super::{notify, ring_path, validate_ring_name, FrameInfo, RingState, DEFAULT_RING_DIR};
use proto_schema::pixel::FrameGeometry;

/// Default number of slots.
pub const DEFAULT_SLOTS: u32 = 8;
/// Default file mode of a ring: owner read-write, group read.
pub const DEFAULT_MODE: u32 = 0o640;

/// How often creation re-checks a lock that is held, and how long it waits between
/// checks, before reporting [`RingCreateError::AlreadyOwned`]. A held lock can be
/// transient: a reader probing [`super::RingReader::writer_alive`] or a concurrent
/// stale-ring cleanup holds it for microseconds.
const OWNED_RECHECKS: u32 = 5;
const OWNED_RECHECK_DELAY: Duration = Duration::from_millis(2);
/// Upper bound on install attempts when the ring path keeps changing under us.
const INSTALL_ATTEMPTS: u32 = 64;

/// Settings for a new ring; see [`RingWriter::builder`].
#[derive(Debug, Clone)]
pub struct RingWriterBuilder {
    name: String,
    dir: PathBuf,
    slots: u32,
    geometry: Option<FrameGeometry>,
    mode: u32,
    keep_on_drop: bool,
}

impl RingWriterBuilder {
    /// Directory holding the ring file. Default [`DEFAULT_RING_DIR`] (`/dev/shm`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    /// Number of slots, `2..=1024`. Default [`DEFAULT_SLOTS`] (8).
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = slots;
        self
    }

    /// Layout of every frame in the ring. Required.
    pub fn geometry(mut self, geometry: FrameGeometry) -> Self {
        self.geometry = Some(geometry);
        self
    }

    /// File permission bits, set exactly (umask does not apply). Default
    /// [`DEFAULT_MODE`] (`0o640`). Modes writable by group or others are refused:
    /// readers refuse such rings ([`super::FORBIDDEN_RING_MODE_BITS`]).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Leave the file in place when the writer is dropped (state `Closed`). Default
    /// `false`: the file is unlinked; readers keep their mapping until they drop it.
    pub fn keep_on_drop(mut self, keep: bool) -> Self {
        self.keep_on_drop = keep;
        self
    }

    /// Creates the ring and becomes its only writer.
    ///
    /// The ring is built under a hidden temporary name, locked, sized and given its
    /// header, and only then linked to `<dir>/<name>.ring`, so a reader never sees a
    /// half-initialised ring. If a ring file already exists and its lock is free, its
    /// writer died: the new ring atomically replaces it. If the lock is held,
    /// [`RingCreateError::AlreadyOwned`].
    pub fn create(self) -> Result<RingWriter, RingCreateError> {
        validate_ring_name(&self.name)?;
        let name = self.name;
        let geometry = self
            .geometry
            .ok_or_else(|| RingCreateError::MissingGeometry { name: name.clone() })?;
        geometry
            .validate()
            .map_err(|source| RingCreateError::InvalidGeometry {
                name: name.clone(),
                source,
            })?;
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&self.slots) {
            return Err(RingCreateError::InvalidSlotCount {
                name,
                slots: self.slots,
                min: MIN_SLOTS,
                max: MAX_SLOTS,
            });
        }
        if self.mode & !0o777 != 0 || self.mode & super::FORBIDDEN_RING_MODE_BITS != 0 {
            return Err(RingCreateError::InvalidMode {
                name,
                mode: self.mode,
            });
        }
        let layout =
            Layout::for_writer(self.slots, &geometry).map_err(|_| RingCreateError::TooLarge {
                name: name.clone(),
                slots: self.slots,
                frame_size: geometry.frame_size,
            })?;
        let path = ring_path(&self.dir, &name);

        sweep_temp_files(&self.dir, &name);
        let (file, temp) = create_temp(&self.dir, &name, self.mode, &layout)?;
        let io_err = |op| {
            let path = temp.0.clone();
            move |source| RingCreateError::Io { path, op, source }
        };
        let mut map = WriterMap::new(&file, layout).map_err(io_err("mmap"))?;
        let generation = random_generation();
        let pid = std::process::id();
        let fixed = FixedHeader::new(&layout, &geometry, generation, UnixNanos::now().get(), pid);
        map.write_fixed(&fixed.to_bytes());
        let live = map.live();
        live.state
            .store(RingState::Starting as u32, Ordering::Relaxed);
        live.heartbeat_ns
            .store(MonoNanos::now().get(), Ordering::Relaxed);
        // The link/rename below is a syscall, so every store above is visible to any
        // process that opens the ring by name afterwards.
        let replaced = install(&temp.0, &path)?;
        temp.disarm();
        if let Some(old_pid) = replaced {
            tracing::warn!(
                ring = %name,
                path = %path.display(),
                old_pid = ?old_pid,
                "replaced stale ring left by a dead writer"
            );
        }
        let meta = file.metadata().map_err(|source| RingCreateError::Io {
            path: path.clone(),
            op: "fstat",
            source,
        })?;
        Ok(RingWriter {
            name: name.into(),
            path,
            _lock: file,
            ino: (meta.dev(), meta.ino()),
            map,
            geometry,
            generation,
            write_seq: 0,
            keep_on_drop: self.keep_on_drop,
        })
    }
}

/// The only writer of one ring file. Not `Clone`: writes need `&mut self`.
#[derive(Debug)]
pub struct RingWriter {
    name: Arc<str>,
    path: PathBuf,
    /// Holds the exclusive `flock` for the writer's lifetime (released on close).
    _lock: File,
    ino: (u64, u64),
    map: WriterMap,
    geometry: FrameGeometry,
    generation: u64,
    /// Publishes completed (mirror of the header's `write_seq`; only we change it).
    write_seq: u64,
    keep_on_drop: bool,
}

impl RingWriter {
    /// Starts configuring the ring named `name` (see [`super::validate_ring_name`]).
    pub fn builder(name: impl Into<String>) -> RingWriterBuilder {
        RingWriterBuilder {
            name: name.into(),
            dir: PathBuf::from(DEFAULT_RING_DIR),
            slots: DEFAULT_SLOTS,
            geometry: None,
            mode: DEFAULT_MODE,
            keep_on_drop: false,
        }
    }

    /// Ring name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the ring file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Geometry of every frame.
    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    /// Random id of this ring incarnation, `1..=MAX_GENERATION` (53 bits, so IEEE-double
    /// clients can echo it); a recreated ring gets a new one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.map.slots()
    }

    /// Publishes completed so far.
    pub fn write_seq(&self) -> u64 {
        self.write_seq
    }

    /// Current state as stored in the header.
    pub fn state(&self) -> RingState {
        RingState::from_u32(self.live().state.load(Ordering::Relaxed))
    }

    /// Stores `state` in the header (e.g. `Live` after the first frame, `Reconnecting`
    /// while the source is away) and wakes waiting readers so they can look.
    pub fn set_state(&self, state: RingState) {
        let live = self.live();
        live.state.store(state as u32, Ordering::Release);
        live.notify.fetch_add(1, Ordering::Release);
        notify::wake_all(&live.notify);
    }

    /// Records that the writer is alive now (CLOCK_MONOTONIC). Every publish does this
    /// too; call it while no frames flow (e.g. reconnecting).
    pub fn heartbeat(&self) {
        self.live()
            .heartbeat_ns
            .store(MonoNanos::now().get(), Ordering::Relaxed);
    }

    /// The counters in the header.
    pub fn counters(&self) -> &RingCountersHandle {
        &self.live().counters
    }

    /// Claims the next slot for writing: its seq becomes odd, so readers treat it as
    /// unavailable until [`SlotWriter::publish`]. Dropping the [`SlotWriter`] without
    /// publishing aborts: the slot stays invalid and the next `begin_write` reuses it.
    pub fn begin_write(&mut self) -> SlotWriter<'_> {
        let n = self.write_seq + 1;
        let slot = ((n - 1) % u64::from(self.slots())) as u32;
        self.map.slot(slot).seq.store(2 * n - 1, Ordering::Relaxed);
        // Orders the odd store before every data store that follows: a reader that sees
        // any of the new bytes also sees the odd seq when it re-checks.
        fence(Ordering::Release);
        SlotWriter {
            writer: self,
            slot,
            n,
        }
    }

    fn live(&self) -> &LiveHeader {
        self.map.live()
    }
}

impl Drop for RingWriter {
    fn drop(&mut self) {
        if !self.keep_on_drop && same_file(&self.path, self.ino) {
            if let Err(e) = fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not unlink ring");
            }
        }
        // After the unlink, so a woken reader that reopens by name does not find this
        // closed ring again.
        self.set_state(RingState::Closed);
        // `file` drops after this, releasing the lock.
    }
}

/// One slot being written. Write the frame into [`SlotWriter::data_mut`], then
/// [`SlotWriter::publish`]. Dropping it unpublished aborts the write.
#[derive(Debug)]
pub struct SlotWriter<'a> {
    writer: &'a mut RingWriter,
    slot: u32,
    n: u64,
}

impl SlotWriter<'_> {
    /// Slot index being written.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The seq the slot will carry once published.
    pub fn seq(&self) -> u64 {
        2 * self.n
    }

    /// The frame id this frame will get (publishes before it, counted from 0).
    pub fn frame_id(&self) -> u64 {
        self.n - 1
    }

    /// The slot's bytes in the shared mapping: exactly `geometry().frame_size` long,
    /// laid out per the geometry's strides and offsets. Holds the previous frame's
    /// bytes (or zeros); write every byte the consumer reads.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.writer.geometry.frame_size as usize;
        &mut self.writer.map.slot_data_mut(self.slot)[..len]
    }

    /// Makes the frame visible to readers and wakes them. `pts_ns` is the stream
    /// presentation time, `capture_ts_ns` the capture wall-clock time (Unix ns).
    pub fn publish(self, pts_ns: i64, capture_ts_ns: u64) -> FrameInfo {
        let SlotWriter { writer, slot, n } = self;
        let frame_id = n - 1;
        let seq = 2 * n;
        let header = writer.map.slot(slot);
        header.frame_id.store(frame_id, Ordering::Relaxed);
        header.pts_ns.store(pts_ns, Ordering::Relaxed);
        header.capture_ts_ns.store(capture_ts_ns, Ordering::Relaxed);
        header
            .payload_len
            .store(writer.geometry.frame_size, Ordering::Relaxed);
        // Release: the data and metadata stores above happen-before any reader's
        // Acquire load that sees the even seq.
        header.seq.store(seq, Ordering::Release);

        let live = writer.map.live();
        live.write_seq.store(n, Ordering::Release);
        let now = MonoNanos::now().get();
        live.counters
            .frames_published
            .fetch_add(1, Ordering::Relaxed);
        live.counters.last_frame_ns.store(now, Ordering::Relaxed);
        live.heartbeat_ns.store(now, Ordering::Relaxed);
        live.notify.fetch_add(1, Ordering::Release);
        notify::wake_all(&live.notify);
        writer.write_seq = n;
        FrameInfo {
            slot,
            seq,
            frame_id,
            pts_ns,
            capture_ts_ns,
        }
    }
}

impl RingCountersHandle {
    /// Counts one decoded frame (published or not).
    pub fn add_decoded(&self) {
        self.frames_decoded.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one decode error.
    pub fn add_decode_error(&self) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one reconnect of the source.
    pub fn add_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Stores the measured frame rate, in frames per 1000 seconds.
    pub fn set_fps_milli(&self, fps_milli: u32) {
        self.fps_milli.store(fps_milli, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> super::RingCounters {
        super::RingCounters {
            frames_decoded: self.frames_decoded.load(Ordering::Relaxed),
            frames_published: self.frames_published.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            fps_milli: self.fps_milli.load(Ordering::Relaxed),
            last_frame_ns: self.last_frame_ns.load(Ordering::Relaxed),
        }
    }
}

/// Removes a temporary file on drop unless disarmed.
struct TempPath(PathBuf);

impl TempPath {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn temp_prefix(name: &str) -> String {
    format!(".{name}.ring.")
}

fn open_rw_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

fn same_file(path: &Path, ino: (u64, u64)) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == ino)
}

fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// Creates, locks, chmods and sizes a fresh hidden file `.<name>.ring.<pid>.<rand>.tmp`.
fn create_temp(
    dir: &Path,
    name: &str,
    mode: u32,
    layout: &Layout,
) -> Result<(File, TempPath), RingCreateError> {
    let mut last_err = None;
    for _ in 0..8 {
        let temp = dir.join(format!(
            "{}{}.{:016x}.tmp",
            temp_prefix(name),
            std::process::id(),
            random_generation()
        ));
        let io_err = |op, source| RingCreateError::Io {
            path: temp.clone(),
            op,
            source,
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", e)),
        };
        let guard = TempPath(temp.clone());
        match file.try_lock() {
            Ok(()) => {}
            // A concurrent sweep grabbed it first and will unlink it: try a new name.
            Err(fs::TryLockError::WouldBlock) => {
                last_err = Some(io_err("lock", io::ErrorKind::WouldBlock.into()));
                continue;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", e)),
        }
        let id = file_id(&file).map_err(|e| io_err("fstat", e))?;
        if !same_file(&temp, id) {
            continue;
        }
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| io_err("fchmod", e))?;
        file.set_len(layout.file_size)
            .map_err(|e| io_err("ftruncate", e))?;
        return Ok((file, guard));
    }
    Err(last_err.unwrap_or_else(|| RingCreateError::Io {
        path: dir.to_path_buf(),
        op: "create temporary ring",
        source: io::Error::other("no free temporary name"),
    }))
}

/// Best effort: removes temporary files of `name` whose creator died mid-creation
/// (their lock is free).
fn sweep_temp_files(dir: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if !file_name.starts_with(&prefix) || !file_name.ends_with(".tmp") {
            continue;
        }
        let path = entry.path();
        let Ok(file) = open_rw_nofollow(&path) else {
            continue;
        };
        let is_file = file.metadata().is_ok_and(|m| m.is_file());
        if is_file && file.try_lock().is_ok() {
            if let Ok(id) = file_id(&file) {
                if same_file(&path, id) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }
}

/// Puts the prepared, locked `temp` file at `path`. Returns `Some(old pid)` when a stale
/// ring was replaced, `None` when the path was free.
fn install(temp: &Path, path: &Path) -> Result<Option<Option<u32>>, RingCreateError> {
    let io_err = |op, source| RingCreateError::Io {
        path: path.to_path_buf(),
        op,
        source,
    };
    let mut busy_checks = 0;
    for _ in 0..INSTALL_ATTEMPTS {
        let existing = match open_rw_nofollow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::hard_link(temp, path) {
                Ok(()) => {
                    let _ = fs::remove_file(temp);
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("link", e)),
            },
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EISDIR))
                    || e.kind() == io::ErrorKind::IsADirectory =>
            {
                return Err(RingCreateError::NotARegularFile {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(io_err("open existing ring", e)),
        };
        let meta = existing
            .metadata()
            .map_err(|e| io_err("fstat existing ring", e))?;
        if !meta.is_file() {
            return Err(RingCreateError::NotARegularFile {
                path: path.to_path_buf(),
            });
        }
        match existing.try_lock() {
            Ok(()) => {
                // Stale: its writer is gone. We hold its lock, so no other creator can
                // replace it between this check and the rename.
                if !same_file(path, (meta.dev(), meta.ino())) {
                    continue;
                }
                let old_pid = read_writer_pid(&existing);
                fs::rename(temp, path).map_err(|e| io_err("rename over stale ring", e))?;
                return Ok(Some(old_pid));
            }
            Err(fs::TryLockError::WouldBlock) => {
                if busy_checks < OWNED_RECHECKS {
                    busy_checks += 1;
                    std::thread::sleep(OWNED_RECHECK_DELAY);
                    continue;
                }
                return Err(RingCreateError::AlreadyOwned {
                    path: path.to_path_buf(),
                    pid: read_writer_pid(&existing),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock existing ring", e)),
        }
    }
    Err(io_err(
        "install",
        io::Error::other("ring path kept changing during creation"),
    ))
}

/// The writer pid from a ring file's header, if it has a valid magic.
fn read_writer_pid(file: &File) -> Option<u32> {
    let mut bytes = [0u8; FIXED_HEADER_LEN];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let header = FixedHeader::from_bytes(&bytes);
    (header.magic == MAGIC).then_some(header.writer_pid)
}

/// A random id in `1..=MAX_GENERATION` (layout 2: 53 bits, exact in an IEEE double).
fn random_generation() -> u64 {
    let mut bytes = [0u8; 8];
    let filled = rustix::rand::getrandom(&mut bytes[..], rustix::rand::GetRandomFlags::empty())
        .is_ok_and(|n| n == bytes.len());
    let value = if filled {
        u64::from_le_bytes(bytes)
    } else {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one((
            UnixNanos::now().get(),
            MonoNanos::now().get(),
            std::process::id(),
        ))
    };
    (value & MAX_GENERATION).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::pixel::PixelFormat;

    fn geometry() -> FrameGeometry {
        FrameGeometry::packed(32, 16, PixelFormat::Nv12).unwrap()
    }

    #[test]
    fn builder_validates_settings() {
        let dir = tempfile::tempdir().unwrap();
        let b = || RingWriter::builder("cam1").dir(dir.path());
        assert!(matches!(
            b().create(),
            Err(RingCreateError::MissingGeometry { .. })
        ));
        assert!(matches!(
            RingWriter::builder("../x")
                .dir(dir.path())
                .geometry(geometry())
                .create(),
            Err(RingCreateError::InvalidName(_))
        ));
        assert!(matches!(
            b().geometry(geometry()).slots(1).create(),
            Err(RingCreateError::InvalidSlotCount { slots: 1, .. })
        ));
        for mode in [0o666, 0o660, 0o642] {
            assert!(matches!(
                b().geometry(geometry()).mode(mode).create(),
                Err(RingCreateError::InvalidMode { .. })
            ));
        }
        assert!(matches!(
            b().geometry(geometry()).mode(0o4640).create(),
            Err(RingCreateError::InvalidMode { .. })
        ));
        let mut bad = geometry();
        bad.frame_size = 1;
        assert!(matches!(
            b().geometry(bad).create(),
            Err(RingCreateError::InvalidGeometry { .. })
        ));
        // Nothing was left behind by the failures.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn mode_is_exact_and_file_is_unlinked_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o600, 0o644] {
            let w = RingWriter::builder("cam")
                .dir(dir.path())
                .geometry(geometry())
                .mode(mode)
                .create()
                .unwrap();
            let meta = fs::metadata(w.path()).unwrap();
            assert_eq!(meta.mode() & 0o7777, mode);
            let path = w.path().to_path_buf();
            drop(w);
            assert!(!path.exists());
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn keep_on_drop_leaves_a_closed_ring() {
        let dir = tempfile::tempdir().unwrap();
        let w = RingWriter::builder("keep")
            .dir(dir.path())
            .geometry(geometry())
            .keep_on_drop(true)
            .create()
            .unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let mut bytes = [0u8; 256];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut bytes, 0)
            .unwrap();
        let state = u32::from_le_bytes(bytes[140..144].try_into().unwrap());
        assert_eq!(state, RingState::Closed as u32);
    }

    #[test]
    fn frame_ids_seqs_and_slots_advance() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RingWriter::builder("seq")
            .dir(dir.path())
            .slots(3)
            .geometry(geometry())
            .create()
            .unwrap();
        assert_eq!(w.state(), RingState::Starting);
        assert_ne!(w.generation(), 0);
        for i in 0..7u64 {
            let mut s = w.begin_write();
            assert_eq!(s.data_mut().len(), geometry().frame_size as usize);
            s.data_mut().fill(i as u8);
            let info = s.publish(i as i64 * 10, 1000 + i);
            assert_eq!(info.frame_id, i);
            assert_eq!(info.seq, 2 * (i + 1));
            assert_eq!(info.slot, (i % 3) as u32);
        }
        assert_eq!(w.write_seq(), 7);
        assert_eq!(w.counters().snapshot().frames_published, 7);
        // An aborted write re-targets the same slot and frame id next time.
        let (slot, id) = {
            let aborted = w.begin_write();
            (aborted.slot(), aborted.frame_id())
        };
        let again = w.begin_write();
        assert_eq!((again.slot(), again.frame_id()), (slot, id));
    }

    #[test]
    fn temp_files_of_dead_creators_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let orphan = dir.path().join(".sweep.ring.1.00000000000000aa.tmp");
        fs::write(&orphan, b"half-made").unwrap();
        let unrelated = dir.path().join(".other.ring.1.00000000000000aa.tmp");
        fs::write(&unrelated, b"x").unwrap();
        let w = RingWriter::builder("sweep")
            .dir(dir.path())
            .geometry(geometry())
            .create()
            .unwrap();
        assert!(!orphan.exists());
        assert!(unrelated.exists());
        drop(w);
    }
}
