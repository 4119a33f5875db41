//! A read-only view of a ring: validated open, latest-frame lookup, seqlock-checked
//! reads and copies, and futex-based waiting for new frames.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{ReadError, RingOpenError};
use super::layout::{
    FixedHeader, Layout, HEADER_SIZE, LAYOUT_VERSION, LIVE_HEADER_OFFSET, MAGIC, MIN_LAYOUT_VERSION,
};
use super::notify::{self, Wake};
use super::shm::{MapError, ReaderMap, UncheckedMap, MAX_GUARDED_MAPPINGS};
use super::{ring_path, validate_ring_name, FrameInfo, RingCounters, RingState};
use crate::owned_dir::{effective_uid, is_trusted_owner};
use proto_schema::pixel::FrameGeometry;

/// How often [`RingReader::latest`] / [`RingReader::slot_info`] retry when the writer
/// changes the slot under them before giving up for this call.
const SNAPSHOT_RETRIES: usize = 8;

/// The header's live fields, loaded one by one (not a single atomic snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderSnapshot {
    /// Ring incarnation id.
    pub generation: u64,
    /// Writer-declared state.
    pub state: RingState,
    /// Pid of the creating writer.
    pub writer_pid: u32,
    /// CLOCK_MONOTONIC ns of the writer's last heartbeat/publish (compare with
    /// [`proto_schema::time::MonoNanos`]).
    pub heartbeat_ns: u64,
    /// Publishes completed.
    pub write_seq: u64,
    /// Slot count.
    pub slots: u32,
    /// Writer counters.
    pub counters: RingCounters,
}

/// Result of [`RingReader::wait_for_publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// `write_seq` differs from the value passed in; here is the new one.
    Published(u64),
    /// Nothing was published before the timeout.
    TimedOut,
    /// The writer closed the ring and nothing new was published.
    Closed,
}

/// Permission bits a ring file must not have: write for its group or for others. Only
/// the writer (the owner) may change, and above all truncate, a ring.
pub const FORBIDDEN_RING_MODE_BITS: u32 = 0o022;

/// Which owners of a ring file a reader accepts.
///
/// The default ([`RingTrust::new`]) trusts this process's effective uid and root, the
/// owners [`crate::owned_dir::is_trusted_owner`] accepts: the frame kernel normally runs
/// as the same service user as its readers. A writer running as another uid (a kernel
/// started by another service account, an outside program writing its own frames) must
/// be allowed explicitly, by uid with [`RingTrust::allow_uid`] or by the file's group
/// with [`RingTrust::allow_gid`]; any other owner is refused with
/// [`RingOpenError::UntrustedOwner`].
///
/// Trusting a group trusts every member of it: a user can give a file only a group it
/// belongs to (`chown(2)` without `CAP_CHOWN`), so a ring whose group is `gid` was made
/// by a member of that group (or by root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingTrust {
    extra_uids: Vec<u32>,
    extra_gids: Vec<u32>,
}

impl RingTrust {
    /// Trusts this process's effective uid and root.
    pub fn new() -> RingTrust {
        RingTrust::default()
    }

    /// Also trusts rings owned by `uid`.
    pub fn allow_uid(mut self, uid: u32) -> RingTrust {
        if !self.extra_uids.contains(&uid) {
            self.extra_uids.push(uid);
        }
        self
    }

    /// Also trusts rings whose group is `gid`, whoever owns them.
    pub fn allow_gid(mut self, gid: u32) -> RingTrust {
        if !self.extra_gids.contains(&gid) {
            self.extra_gids.push(gid);
        }
        self
    }

    /// Whether a ring owned by `uid` is accepted (by its owner alone).
    pub fn trusts(&self, uid: u32) -> bool {
        is_trusted_owner(uid) || self.extra_uids.contains(&uid)
    }

    /// Whether a file owned by `uid` with group `gid` is accepted: a trusted owner, or
    /// a trusted group.
    pub fn trusts_file(&self, uid: u32, gid: u32) -> bool {
        self.trusts(uid) || self.extra_gids.contains(&gid)
    }

    /// Every trusted uid, sorted (for error messages).
    pub fn trusted_uids(&self) -> Vec<u32> {
        let mut uids = vec![0, effective_uid()];
        uids.extend_from_slice(&self.extra_uids);
        uids.sort_unstable();
        uids.dedup();
        uids
    }

    /// The trusted groups, sorted (empty by default).
    pub fn trusted_gids(&self) -> Vec<u32> {
        let mut gids = self.extra_gids.clone();
        gids.sort_unstable();
        gids
    }

    /// Checks the owner and mode of an open ring file (its `fstat`): a trusted owner or
    /// group, not writable by group or others.
    fn check_meta(&self, path: &Path, meta: &fs::Metadata) -> Result<(), RingOpenError> {
        if !self.trusts_file(meta.uid(), meta.gid()) {
            return Err(RingOpenError::UntrustedOwner {
                path: path.to_path_buf(),
                owner: meta.uid(),
                group: meta.gid(),
                trusted: self.trusted_uids(),
                trusted_gids: self.trusted_gids(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & FORBIDDEN_RING_MODE_BITS != 0 {
            return Err(RingOpenError::WritableByOthers {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok(())
    }
}

/// A read-only mapping of one ring. Cheap to share between threads (`&self` methods);
/// each reader opens its own mapping.
#[derive(Debug)]
pub struct RingReader {
    name: Arc<str>,
    path: PathBuf,
    /// Kept open for `writer_alive` and `is_current`.
    file: File,
    ino: (u64, u64),
    map: ReaderMap,
    geometry: FrameGeometry,
    generation: u64,
    writer_pid: u32,
}

impl RingReader {
    /// Opens `<dir>/<name>.ring` read-only (`O_RDONLY | O_NOFOLLOW`, `PROT_READ`),
    /// checks the open file (owned by this process's uid or root, see [`RingTrust`];
    /// not writable by group or others) and validates its header: magic, layout
    /// version, structural fields, geometry, and that the file is exactly as long as
    /// the header says.
    ///
    /// The mapping is guarded against a later truncation of the file: reads then fail
    /// with [`ReadError::Truncated`] instead of killing the process with SIGBUS.
    pub fn open(dir: impl AsRef<Path>, name: &str) -> Result<RingReader, RingOpenError> {
        RingReader::open_with(dir, name, &RingTrust::new())
    }

    /// [`RingReader::open`] with an explicit set of trusted ring owners.
    pub fn open_with(
        dir: impl AsRef<Path>,
        name: &str,
        trust: &RingTrust,
    ) -> Result<RingReader, RingOpenError> {
        let (path, file, meta) = open_trusted(dir.as_ref(), name, trust)?;
        let unchecked = UncheckedMap::new(&file, meta.len()).map_err(|e| match e {
            MapError::Io(source) => RingOpenError::Io {
                path: path.clone(),
                op: "mmap",
                source,
            },
            MapError::RegistryFull => RingOpenError::TooManyMappings {
                path: path.clone(),
                max: MAX_GUARDED_MAPPINGS,
            },
        })?;
        let fixed = FixedHeader::from_bytes(&unchecked.fixed_header());
        if unchecked.truncated() {
            return Err(RingOpenError::Truncated { path });
        }
        let (layout, geometry) = validate_header(&path, &fixed, meta.len())?;
        let map = unchecked
            .check(layout)
            .map_err(|source| RingOpenError::Io {
                path: path.clone(),
                op: "map layout",
                source,
            })?;
        Ok(RingReader {
            name: name.into(),
            path,
            file,
            ino: (meta.dev(), meta.ino()),
            map,
            geometry,
            generation: fixed.generation,
            writer_pid: fixed.writer_pid,
        })
    }

    /// Ring name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path the ring was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ring incarnation id; compare with `FrameRef::generation`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Geometry of every frame.
    pub fn geometry(&self) -> FrameGeometry {
        self.geometry
    }

    /// Slot count.
    pub fn slots(&self) -> u32 {
        self.map.layout().slots
    }

    /// Pid of the writer that created the ring.
    pub fn writer_pid(&self) -> u32 {
        self.writer_pid
    }

    /// Writer-declared state; [`RingState::Closed`] once the file was found truncated
    /// (the ring will never publish to this reader again).
    pub fn state(&self) -> RingState {
        let state = RingState::from_u32(self.map.live().state.load(Ordering::Acquire));
        if self.map.truncated() {
            RingState::Closed
        } else {
            state
        }
    }

    /// Publishes completed so far (0 once the file was found truncated).
    pub fn write_seq(&self) -> u64 {
        let n = self.map.live().write_seq.load(Ordering::Acquire);
        if self.map.truncated() {
            0
        } else {
            n
        }
    }

    /// Whether the ring file was found truncated under this reader (a read faulted on a
    /// page past its end). Such a reader never yields a frame again: drop and reopen.
    /// See also [`RingReader::check_intact`].
    pub fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// `Err(ReadError::Truncated)` when the ring file was truncated under this reader:
    /// either a read already faulted ([`RingReader::truncated`]) or the open file is
    /// now shorter than the header says (one `fstat`; catches a truncation that no read
    /// has touched yet).
    pub fn check_intact(&self) -> Result<(), ReadError> {
        self.intact()?;
        match self.file.metadata() {
            Ok(m) if m.len() < self.map.layout().file_size => Err(self.truncated_error()),
            _ => Ok(()),
        }
    }

    /// The header's live fields. On a truncated ring: `state` is
    /// [`RingState::Closed`] and the live fields are 0 (use [`RingReader::try_header`]
    /// to get the typed error instead).
    pub fn header(&self) -> HeaderSnapshot {
        self.try_header().unwrap_or(HeaderSnapshot {
            generation: self.generation,
            state: RingState::Closed,
            writer_pid: self.writer_pid,
            heartbeat_ns: 0,
            write_seq: 0,
            slots: self.slots(),
            counters: RingCounters::default(),
        })
    }

    /// The header's live fields, or [`ReadError::Truncated`].
    pub fn try_header(&self) -> Result<HeaderSnapshot, ReadError> {
        let live = self.map.live();
        let h = HeaderSnapshot {
            generation: self.generation,
            state: RingState::from_u32(live.state.load(Ordering::Acquire)),
            writer_pid: self.writer_pid,
            heartbeat_ns: live.heartbeat_ns.load(Ordering::Relaxed),
            write_seq: live.write_seq.load(Ordering::Acquire),
            slots: self.slots(),
            counters: live.counters.snapshot(),
        };
        self.intact()?;
        Ok(h)
    }

    /// The most recently published frame, or `None` if nothing was published yet (or
    /// the writer lapped the ring repeatedly during this call), or the ring was
    /// truncated (see [`RingReader::try_latest`]).
    pub fn latest(&self) -> Option<FrameInfo> {
        self.try_latest().ok().flatten()
    }

    /// [`RingReader::latest`], with [`ReadError::Truncated`] for a truncated ring.
    pub fn try_latest(&self) -> Result<Option<FrameInfo>, ReadError> {
        let slots = u64::from(self.slots());
        for _ in 0..SNAPSHOT_RETRIES {
            let n = self.write_seq();
            self.intact()?;
            if n == 0 {
                return Ok(None);
            }
            let slot = ((n - 1) % slots) as u32;
            // A stable seq here is publish n or a newer one that reused the slot.
            if let Some(info) = self.slot_info(slot) {
                return Ok(Some(info));
            }
        }
        self.intact()?;
        Ok(None)
    }

    /// Metadata of the frame now in `slot`, or `None` if the slot is out of range,
    /// empty, being written, or the ring was truncated.
    pub fn slot_info(&self, slot: u32) -> Option<FrameInfo> {
        if slot >= self.slots() || self.map.truncated() {
            return None;
        }
        let h = self.map.slot(slot);
        for _ in 0..SNAPSHOT_RETRIES {
            let seq = h.seq.load(Ordering::Acquire);
            if seq == 0 || !seq.is_multiple_of(2) {
                return None;
            }
            let info = FrameInfo {
                slot,
                seq,
                frame_id: h.frame_id.load(Ordering::Relaxed),
                pts_ns: h.pts_ns.load(Ordering::Relaxed),
                capture_ts_ns: h.capture_ts_ns.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if h.seq.load(Ordering::Relaxed) == seq {
                // A truncation replaces the whole mapping with zeros, so a frame seen
                // with a stable non-zero seq is real unless the flag is set by now.
                return (!self.map.truncated()).then_some(info);
            }
        }
        None
    }

    /// Runs `f` over the bytes of frame `seq` in `slot` and returns its result only if
    /// the slot held that frame, unchanged, for the whole call.
    ///
    /// `f` reads shared memory the writer may be overwriting: it can see a torn mix of
    /// two frames. It must not panic or misbehave on any byte content (treat the bytes
    /// as untrusted), and must not keep the slice. When the slot changed during the
    /// call, `f`'s result is dropped and [`ReadError::Stale`] returned, so a torn frame
    /// is never returned as good.
    pub fn read<T>(&self, slot: u32, seq: u64, f: impl FnOnce(&[u8]) -> T) -> Result<T, ReadError> {
        self.read_inner(slot, seq, f).map(|(_, out)| out)
    }

    /// Copies frame `seq` of `slot` into `buf` (replacing its contents) and returns its
    /// metadata. On error `buf` is left empty.
    pub fn copy_into(
        &self,
        slot: u32,
        seq: u64,
        buf: &mut Vec<u8>,
    ) -> Result<FrameInfo, ReadError> {
        buf.clear();
        match self.read_inner(slot, seq, |bytes| buf.extend_from_slice(bytes)) {
            Ok((info, ())) => Ok(info),
            Err(e) => {
                buf.clear();
                Err(e)
            }
        }
    }

    /// Blocks until `write_seq` differs from `last_seen_write_seq`, the ring is closed,
    /// or `timeout` passes. Sleeps on the header's futex word: no polling. A truncated
    /// ring reads as [`WaitOutcome::Closed`] (see [`RingReader::try_wait_for_publish`]).
    pub fn wait_for_publish(&self, last_seen_write_seq: u64, timeout: Duration) -> WaitOutcome {
        self.try_wait_for_publish(last_seen_write_seq, timeout)
            .unwrap_or(WaitOutcome::Closed)
    }

    /// [`RingReader::wait_for_publish`], with [`ReadError::Truncated`] for a ring whose
    /// file was truncated before or during the wait.
    pub fn try_wait_for_publish(
        &self,
        last_seen_write_seq: u64,
        timeout: Duration,
    ) -> Result<WaitOutcome, ReadError> {
        let live = self.map.live();
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        loop {
            // Load the word before checking: a publish after this load changes the word,
            // so the futex wait below returns at once instead of missing it.
            let word = live.notify.load(Ordering::Acquire);
            let write_seq = live.write_seq.load(Ordering::Acquire);
            self.intact()?;
            if write_seq != last_seen_write_seq {
                return Ok(WaitOutcome::Published(write_seq));
            }
            if self.state() == RingState::Closed {
                return Ok(WaitOutcome::Closed);
            }
            match notify::wait_while(&live.notify, word, deadline) {
                Wake::Changed => {}
                Wake::TimedOut => {
                    let write_seq = live.write_seq.load(Ordering::Acquire);
                    self.intact()?;
                    return Ok(if write_seq != last_seen_write_seq {
                        WaitOutcome::Published(write_seq)
                    } else if self.state() == RingState::Closed {
                        WaitOutcome::Closed
                    } else {
                        WaitOutcome::TimedOut
                    });
                }
                Wake::Fault => {
                    // The kernel could not fault the futex page in (EFAULT): the file
                    // was truncated under it. Touch the word so the guard maps zeros
                    // and sets the flag (a no-op if the page is fine after all).
                    let _ = live.notify.load(Ordering::Acquire);
                    self.intact()?;
                    std::thread::sleep(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(1)),
                    );
                }
            }
        }
    }

    /// Whether a writer process still holds the ring's lock. `false` after a clean
    /// close and after the writer died (even by SIGKILL). Briefly takes a shared lock.
    pub fn writer_alive(&self) -> bool {
        if self.state() == RingState::Closed {
            return false;
        }
        match self.file.try_lock_shared() {
            Ok(()) => {
                let _ = self.file.unlock();
                false
            }
            Err(fs::TryLockError::WouldBlock) => true,
            // Cannot tell; assume alive rather than declare a live ring dead.
            Err(fs::TryLockError::Error(_)) => true,
        }
    }

    /// Checks the open file's owner and mode again (one `fstat` of the descriptor held
    /// since the open): the same rules as [`RingReader::open_with`] with `trust`. The
    /// checks at open do not cover a later `chmod` or `chown` of the live file; a
    /// reader that keeps a ring open calls this now and then (model-server: at most
    /// once a second per ring) and drops the ring on an error.
    pub fn check_trust(&self, trust: &RingTrust) -> Result<(), RingOpenError> {
        let meta = self.file.metadata().map_err(|source| RingOpenError::Io {
            path: self.path.clone(),
            op: "fstat",
            source,
        })?;
        trust.check_meta(&self.path, &meta)
    }

    /// Whether `<dir>/<name>.ring` still names the file this reader mapped. `false` once
    /// the writer unlinked it or a new ring replaced it (reopen to follow).
    pub fn is_current(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.ino)
    }

    fn read_inner<T>(
        &self,
        slot: u32,
        seq: u64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<(FrameInfo, T), ReadError> {
        let layout = self.map.layout();
        if slot >= layout.slots {
            return Err(ReadError::SlotOutOfRange {
                ring: self.name.clone(),
                slot,
                slots: layout.slots,
            });
        }
        if seq == 0 || !seq.is_multiple_of(2) {
            return Err(ReadError::InvalidSeq {
                ring: self.name.clone(),
                slot,
                seq,
            });
        }
        let closed = self.state() == RingState::Closed;
        // After the load: the first touch of a truncated ring faults here.
        self.intact()?;
        if closed {
            return Err(ReadError::WriterGone {
                ring: self.name.clone(),
            });
        }
        let h = self.map.slot(slot);
        // Seqlock read: Acquire pairs with the writer's Release store of the even seq.
        let before = h.seq.load(Ordering::Acquire);
        self.intact()?;
        if before == 0 {
            return Err(ReadError::Empty {
                ring: self.name.clone(),
                slot,
            });
        }
        if before != seq {
            return Err(self.stale(slot, seq, before));
        }
        let info = FrameInfo {
            slot,
            seq,
            frame_id: h.frame_id.load(Ordering::Relaxed),
            pts_ns: h.pts_ns.load(Ordering::Relaxed),
            capture_ts_ns: h.capture_ts_ns.load(Ordering::Relaxed),
        };
        let len = u64::from(h.payload_len.load(Ordering::Relaxed));
        let out = f(self
            .map
            .slot_bytes(slot, len.min(layout.slot_capacity) as usize));
        // Acquire fence: if `f` saw any byte of a newer write, the writer's odd store
        // (ordered before that byte by its Release fence) is visible to the load below.
        fence(Ordering::Acquire);
        let after = h.seq.load(Ordering::Relaxed);
        // A truncation during `f` zeroed the mapping (so `after` is 0): report it as
        // such, and never return what `f` derived from the zeros.
        self.intact()?;
        if after != seq {
            return Err(self.stale(slot, seq, after));
        }
        if len > layout.slot_capacity {
            return Err(ReadError::BadPayloadLength {
                ring: self.name.clone(),
                slot,
                len,
                capacity: layout.slot_capacity,
            });
        }
        Ok((info, out))
    }

    fn intact(&self) -> Result<(), ReadError> {
        if self.map.truncated() {
            Err(self.truncated_error())
        } else {
            Ok(())
        }
    }

    fn truncated_error(&self) -> ReadError {
        ReadError::Truncated {
            ring: self.name.clone(),
        }
    }

    fn stale(&self, slot: u32, expected_seq: u64, found_seq: u64) -> ReadError {
        ReadError::Stale {
            ring: self.name.clone(),
            slot,
            expected_seq,
            found_seq,
        }
    }
}

fn open_error(path: &Path, e: io::Error) -> RingOpenError {
    let path = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound => RingOpenError::NotFound { path },
        io::ErrorKind::PermissionDenied => RingOpenError::PermissionDenied { path },
        _ if e.raw_os_error() == Some(libc::ELOOP) => RingOpenError::Symlink { path },
        _ => RingOpenError::Io {
            path,
            op: "open",
            source: e,
        },
    }
}

/// Opens a ring file read-only and checks it before anything reads it: a regular file
/// (no symlink followed), owned by a trusted uid, not writable by group or others, at
/// least a header long.
fn open_trusted(
    dir: &Path,
    name: &str,
    trust: &RingTrust,
) -> Result<(PathBuf, File, fs::Metadata), RingOpenError> {
    validate_ring_name(name)?;
    let path = ring_path(dir, name);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| open_error(&path, e))?;
    let meta = file.metadata().map_err(|source| RingOpenError::Io {
        path: path.clone(),
        op: "fstat",
        source,
    })?;
    if !meta.is_file() {
        return Err(RingOpenError::NotARegularFile { path });
    }
    trust.check_meta(&path, &meta)?;
    if meta.len() < u64::from(HEADER_SIZE) {
        return Err(RingOpenError::TooSmall {
            path,
            len: meta.len(),
            need: u64::from(HEADER_SIZE),
        });
    }
    Ok((path, file, meta))
}

/// The header of a ring, read with `pread` into a 256-byte buffer instead of mapping the
/// ring: what a health probe needs every few hundred ms, without an mmap/munmap pair
/// (and its page-table work) each time. The file gets the same checks as
/// [`RingReader::open_with`] (owner, mode, magic, version, structure, geometry, length).
/// `pread` copies bytes with no atomicity promise, so a field the writer updates during
/// the copy could come back torn: the live header is read until two reads in a row
/// agree (the heartbeat moves every few hundred ms, so the second read nearly always
/// does), and [`RingOpenError::Unstable`] after a few tries.
pub fn peek_header(
    dir: impl AsRef<Path>,
    name: &str,
    trust: &RingTrust,
) -> Result<HeaderSnapshot, RingOpenError> {
    use std::os::unix::fs::FileExt;
    let (path, file, meta) = open_trusted(dir.as_ref(), name, trust)?;
    let mut buf = [0u8; HEADER_SIZE as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|source| RingOpenError::Io {
            path: path.clone(),
            op: "pread header",
            source,
        })?;
    let fixed_bytes: &[u8; 128] = buf[..128].try_into().expect("128 bytes");
    let fixed = FixedHeader::from_bytes(fixed_bytes);
    validate_header(&path, &fixed, meta.len())?;
    let mut last = live_fields(&fixed, &buf[LIVE_HEADER_OFFSET..]);
    for _ in 0..PEEK_RETRIES {
        let mut live = [0u8; HEADER_SIZE as usize - LIVE_HEADER_OFFSET];
        file.read_exact_at(&mut live, LIVE_HEADER_OFFSET as u64)
            .map_err(|source| RingOpenError::Io {
                path: path.clone(),
                op: "pread header",
                source,
            })?;
        let now = live_fields(&fixed, &live);
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Err(RingOpenError::Unstable { path })
}

/// Reads of the live header [`peek_header`] makes to see two that agree.
const PEEK_RETRIES: usize = 8;

/// The live header's fields from their bytes (`live` starts at the live header).
fn live_fields(fixed: &FixedHeader, live: &[u8]) -> HeaderSnapshot {
    let u32_at = |o: usize| u32::from_le_bytes(live[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(live[o..o + 8].try_into().expect("8 bytes"));
    // Offsets pinned by the const assertions in layout.rs.
    HeaderSnapshot {
        generation: fixed.generation,
        state: RingState::from_u32(u32_at(12)),
        writer_pid: fixed.writer_pid,
        heartbeat_ns: u64_at(16),
        write_seq: u64_at(0),
        slots: fixed.slot_count,
        counters: RingCounters {
            frames_decoded: u64_at(24),
            frames_published: u64_at(32),
            decode_errors: u64_at(40),
            reconnects: u64_at(48),
            last_frame_ns: u64_at(56),
            fps_milli: u32_at(64),
        },
    }
}

fn validate_header(
    path: &Path,
    fixed: &FixedHeader,
    file_len: u64,
) -> Result<(Layout, FrameGeometry), RingOpenError> {
    let path = || path.to_path_buf();
    if fixed.magic != MAGIC {
        return Err(RingOpenError::BadMagic {
            path: path(),
            found: fixed.magic,
        });
    }
    // Layout 1 rings (any non-zero generation) are still read: nothing they held changed.
    if !(MIN_LAYOUT_VERSION..=LAYOUT_VERSION).contains(&fixed.layout_version) {
        return Err(RingOpenError::UnsupportedVersion {
            path: path(),
            found: fixed.layout_version,
            supported: LAYOUT_VERSION,
        });
    }
    let layout = Layout::from_header(fixed).map_err(|p| RingOpenError::BadHeader {
        path: path(),
        problem: p.to_string(),
    })?;
    let geometry = fixed.geometry().ok_or_else(|| RingOpenError::BadHeader {
        path: path(),
        problem: format!("unknown pixel format code {}", fixed.format),
    })?;
    geometry
        .validate()
        .map_err(|source| RingOpenError::BadGeometry {
            path: path(),
            source,
        })?;
    if layout.file_size != file_len {
        return Err(RingOpenError::SizeMismatch {
            path: path(),
            expected: layout.file_size,
            actual: file_len,
        });
    }
    Ok((layout, geometry))
}
