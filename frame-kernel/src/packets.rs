//! Packet keeping for event clips (`--clip-dir`): the camera's compressed packets,
//! as demuxed (no re-encode), in short keyframe-aligned segment files (format:
//! [`proto_schema::segment`]), of which only the last few seconds are kept.
//!
//! Why files and not a second shared-memory ring: segments survive a kernel restart
//! (a clip being recorded when the kernel dies continues from the next kernel's
//! segments), cost one `write(2)` per packet, and the recorder reads them at its own
//! pace without a seqlock protocol for variable-sized packets.
//!
//! - A segment starts at a keyframe, at the first keyframe of every session (connection
//!   or file loop: timestamps jump there, so a segment never spans two) and at the
//!   first keyframe after [`MIN_SEGMENT`]. Packets before a session's first keyframe
//!   are not kept (nothing could decode them).
//! - The first frame published from a segment writes its [`Anchor`]: that frame's
//!   stream time and the ring's capture time, which maps every packet of the segment
//!   onto the capture clock.
//! - Bounds: the oldest segment goes once the next one starts `keep` or more before
//!   now (so `keep` of history is always there), or while the directory holds more than
//!   `max_bytes` or [`MAX_SEGMENTS`] segments. A segment that grows past half of
//!   `max_bytes` (a camera that sends no keyframe) is closed, and packets are dropped
//!   until the next keyframe.
//! - A write error (disk full) never reaches decoding: it is counted and logged (at
//!   most every 10 s), the segment is closed and keeping starts again at the next
//!   keyframe.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto_schema::segment::{self, Anchor, Record, SegmentHeader, SegmentPacket};

/// Shortest segment: a new one starts at the first keyframe after this.
pub const MIN_SEGMENT: Duration = Duration::from_secs(2);
/// Most segments kept in the directory.
pub const MAX_SEGMENTS: usize = 256;
/// Mode of segment files: owner read/write, group read.
pub const FILE_MODE: u32 = 0o640;

/// Where and how much to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepSettings {
    /// The camera's segment directory (created 0750 if missing).
    pub dir: PathBuf,
    /// History always kept (the clips' pre-roll plus a margin).
    pub keep: Duration,
    /// Most bytes of segments in the directory.
    pub max_bytes: u64,
}

/// Why packet keeping could not start.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The segment directory cannot be created or is not one this process owns.
    #[error("clip segment directory {path}: {reason}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

#[derive(Debug)]
struct Open {
    file: File,
    path: PathBuf,
    opened_ns: u64,
    bytes: u64,
    anchored: bool,
}

#[derive(Debug)]
struct Kept {
    opened_ns: u64,
    path: PathBuf,
    bytes: u64,
}

/// The segment writer of one camera.
pub struct PacketKeeper {
    settings: KeepSettings,
    unix_ns: Box<dyn Fn() -> u64 + Send>,
    header: Option<SegmentHeader>,
    current: Option<Open>,
    /// Every segment in the directory, oldest first (the open one last).
    kept: VecDeque<Kept>,
    /// Write errors so far.
    errors: u64,
    /// Packets not kept (before a keyframe, after an error, oversized segment).
    dropped: u64,
    last_warning_ns: u64,
}

impl std::fmt::Debug for PacketKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketKeeper")
            .field("settings", &self.settings)
            .field("segments", &self.kept.len())
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl PacketKeeper {
    /// Opens `settings.dir` (creating it 0750), adopting segments already there (a
    /// previous kernel's: a clip may be reading them) and removing any dated in the
    /// future (left from before a clock step).
    pub fn open(
        settings: KeepSettings,
        unix_ns: Box<dyn Fn() -> u64 + Send>,
    ) -> Result<Self, KeepError> {
        shm_ring::owned_dir::ensure_owned_dir(&settings.dir).map_err(|e| KeepError::Dir {
            path: settings.dir.clone(),
            reason: e.to_string(),
        })?;
        let now = unix_ns();
        let mut kept: Vec<Kept> = std::fs::read_dir(&settings.dir)
            .map_err(|e| KeepError::Dir {
                path: settings.dir.clone(),
                reason: e.to_string(),
            })?
            .flatten()
            .filter_map(|e| {
                let opened_ns = segment::parse_file_name(e.file_name().to_str()?)?;
                let bytes = e.metadata().ok()?.len();
                Some(Kept {
                    opened_ns,
                    path: e.path(),
                    bytes,
                })
            })
            .collect();
        kept.retain(|k| {
            let future = k.opened_ns > now;
            if future {
                let _ = std::fs::remove_file(&k.path);
            }
            !future
        });
        kept.sort_by_key(|k| k.opened_ns);
        let mut keeper = PacketKeeper {
            settings,
            unix_ns,
            header: None,
            current: None,
            kept: kept.into(),
            errors: 0,
            dropped: 0,
            last_warning_ns: 0,
        };
        keeper.prune(now);
        Ok(keeper)
    }

    /// A new session (connection or file loop) with these codec parameters: the open
    /// segment ends; the next keyframe starts one.
    pub fn start_session(&mut self, header: SegmentHeader) {
        self.current = None;
        self.header = Some(header);
    }

    /// [`PacketKeeper::on_packet`] for an FFmpeg packet of the video stream (missing
    /// timestamps kept as [`segment::NO_TS`]).
    pub fn on_av_packet(&mut self, packet: &ffmpeg_next::Packet) {
        let ts = |t: Option<i64>| t.unwrap_or(segment::NO_TS);
        self.on_packet(
            packet.is_key(),
            ts(packet.pts()),
            ts(packet.dts()),
            packet.duration(),
            packet.data().unwrap_or_default(),
        );
    }

    /// One demuxed packet of the video stream (timestamps in the header's time base).
    pub fn on_packet(&mut self, key: bool, pts: i64, dts: i64, duration: i64, data: &[u8]) {
        let now = (self.unix_ns)();
        let cut = match &self.current {
            None => true,
            Some(o) => {
                now.saturating_sub(o.opened_ns) >= MIN_SEGMENT.as_nanos() as u64
                    || o.bytes > self.settings.max_bytes / 2
            }
        };
        if cut {
            if !key {
                if self
                    .current
                    .as_ref()
                    .is_some_and(|o| o.bytes > self.settings.max_bytes / 2)
                {
                    self.current = None;
                }
                if self.current.is_none() {
                    self.dropped += 1;
                    return;
                }
            } else if !self.start_segment(now) {
                self.dropped += 1;
                return;
            }
        }
        let record = Record::Packet(SegmentPacket {
            pts,
            dts,
            duration,
            key,
            data: data.to_vec(),
        });
        self.write(&record.encode(), now);
    }

    /// A frame of stream time `pts_ns` was published at `capture_unix_ns`: the open
    /// segment's anchor, if it has none yet.
    pub fn on_published(&mut self, pts_ns: Option<i64>, capture_unix_ns: u64) {
        let (Some(pts_ns), Some(o)) = (pts_ns, self.current.as_ref()) else {
            return;
        };
        if o.anchored {
            return;
        }
        let record = Record::Anchor(Anchor {
            pts_ns,
            capture_unix_ns,
        });
        let now = (self.unix_ns)();
        if self.write(&record.encode(), now) {
            if let Some(o) = self.current.as_mut() {
                o.anchored = true;
            }
        }
    }

    /// Write errors so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Packets not kept so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Segments in the directory.
    pub fn segments(&self) -> usize {
        self.kept.len()
    }

    fn start_segment(&mut self, now: u64) -> bool {
        self.current = None;
        let Some(header) = &self.header else {
            return false;
        };
        // Names must be unique and increasing even if the clock stands still or steps
        // back.
        let opened_ns = self
            .kept
            .back()
            .map_or(now, |k| now.max(k.opened_ns.saturating_add(1)));
        let path = self.settings.dir.join(segment::file_name(opened_ns));
        let bytes = header.encode();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .and_then(|mut f| f.write_all(&bytes).map(|()| f));
        match file {
            Ok(file) => {
                self.kept.push_back(Kept {
                    opened_ns,
                    path: path.clone(),
                    bytes: bytes.len() as u64,
                });
                self.current = Some(Open {
                    file,
                    path,
                    opened_ns,
                    bytes: bytes.len() as u64,
                    anchored: false,
                });
                self.prune(now);
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                self.error(&path, &e, now);
                false
            }
        }
    }

    fn write(&mut self, bytes: &[u8], now: u64) -> bool {
        let Some(o) = self.current.as_mut() else {
            return false;
        };
        match o.file.write_all(bytes) {
            Ok(()) => {
                o.bytes += bytes.len() as u64;
                if let Some(k) = self.kept.back_mut() {
                    k.bytes = o.bytes;
                }
                true
            }
            Err(e) => {
                let path = o.path.clone();
                self.current = None;
                self.error(&path, &e, now);
                false
            }
        }
    }

    fn error(&mut self, path: &Path, e: &std::io::Error, now: u64) {
        self.errors += 1;
        if now.saturating_sub(self.last_warning_ns) >= 10_000_000_000 || self.errors == 1 {
            self.last_warning_ns = now;
            tracing::warn!(
                path = %path.display(),
                error = %e,
                errors = self.errors,
                "clip segment not written; packets are kept again from the next keyframe"
            );
        }
    }

    /// Removes the oldest segments beyond the bounds. The open segment is never
    /// removed.
    fn prune(&mut self, now: u64) {
        let keep_ns = self.settings.keep.as_nanos() as u64;
        loop {
            let total: u64 = self.kept.iter().map(|k| k.bytes).sum();
            let open_is_front = self
                .current
                .as_ref()
                .zip(self.kept.front())
                .is_some_and(|(o, k)| o.path == k.path);
            if self.kept.is_empty() || open_is_front {
                return;
            }
            let old_enough = self
                .kept
                .get(1)
                .is_some_and(|next| next.opened_ns.saturating_add(keep_ns) <= now);
            if !(old_enough || total > self.settings.max_bytes || self.kept.len() > MAX_SEGMENTS) {
                return;
            }
            if let Some(k) = self.kept.pop_front() {
                if let Err(e) = std::fs::remove_file(&k.path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        self.error(&k.path, &e, now);
                    }
                }
            }
        }
    }
}

/// The codec parameters of `stream` as a segment header.
pub fn header_of(stream: &ffmpeg_next::Stream<'_>) -> SegmentHeader {
    let tb = stream.time_base();
    let params = stream.parameters();
    // SAFETY: `params` wraps the stream's AVCodecParameters, valid while `stream` (and
    // its input) is borrowed; only plain fields are read, and extradata is read within
    // its stated size when non-null.
    unsafe {
        let p = &*params.as_ptr();
        let extradata = if p.extradata.is_null() || p.extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(p.extradata, p.extradata_size as usize).to_vec()
        };
        SegmentHeader {
            codec_id: p.codec_id as u32,
            width: u32::try_from(p.width).unwrap_or(0),
            height: u32::try_from(p.height).unwrap_or(0),
            time_base: (tb.numerator().max(1), tb.denominator().max(1)),
            pix_fmt: p.format,
            profile: p.profile,
            level: p.level,
            extradata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    const S: u64 = 1_000_000_000;

    fn header() -> SegmentHeader {
        SegmentHeader {
            codec_id: 27,
            width: 64,
            height: 32,
            time_base: (1, 1000),
            pix_fmt: 0,
            profile: 100,
            level: 31,
            extradata: vec![1, 2, 3],
        }
    }

    fn keeper(dir: &Path, keep_s: u64, max_bytes: u64) -> (PacketKeeper, Arc<AtomicU64>) {
        keeper_at(dir, keep_s, max_bytes, 1_000 * S)
    }

    fn keeper_at(
        dir: &Path,
        keep_s: u64,
        max_bytes: u64,
        start_ns: u64,
    ) -> (PacketKeeper, Arc<AtomicU64>) {
        let clock = Arc::new(AtomicU64::new(start_ns));
        let c = clock.clone();
        let k = PacketKeeper::open(
            KeepSettings {
                dir: dir.join("cam"),
                keep: Duration::from_secs(keep_s),
                max_bytes,
            },
            Box::new(move || c.load(Ordering::Relaxed)),
        )
        .unwrap();
        (k, clock)
    }

    fn segments(dir: &Path) -> Vec<(u64, Vec<Record>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("cam"))
            .unwrap()
            .flatten()
            .map(|e| {
                let name = e.file_name().into_string().unwrap();
                let b = std::fs::read(e.path()).unwrap();
                let (_, mut at) = SegmentHeader::parse(&b).unwrap().unwrap();
                let mut recs = Vec::new();
                while let Some((r, n)) = Record::parse(&b[at..]).unwrap() {
                    recs.push(r);
                    at += n;
                }
                (segment::parse_file_name(&name).unwrap(), recs)
            })
            .collect();
        v.sort_by_key(|s| s.0);
        v
    }

    /// 25 fps, a keyframe every `gop` frames, `n` frames, one published frame per
    /// packet.
    fn feed(k: &mut PacketKeeper, clock: &AtomicU64, n: i64, gop: i64, first: i64) {
        for i in first..first + n {
            k.on_packet(i % gop == 0, i * 40, i * 40, 40, &[i as u8; 100]);
            k.on_published(Some(i * 40_000_000), clock.load(Ordering::Relaxed));
            clock.fetch_add(40_000_000, Ordering::Relaxed);
        }
    }

    #[test]
    fn segments_start_at_keyframes_carry_an_anchor_and_are_bounded_in_time() {
        let d = tempfile::tempdir().unwrap();
        let (mut k, clock) = keeper(d.path(), 5, 1 << 30);
        k.start_session(header());
        // Starts mid-GOP: the packets before the first keyframe are dropped.
        feed(&mut k, &clock, 1000, 50, 10);
        assert_eq!(k.dropped(), 40);
        let segs = segments(d.path());
        for (_, recs) in &segs {
            assert!(
                matches!(&recs[0], Record::Packet(p) if p.key),
                "segment must start at a keyframe"
            );
            assert!(matches!(recs[1], Record::Anchor(_)));
        }
        // 2 s GOPs, keep 5 s: the segments cover the last 5 s and at most one GOP more.
        let now = clock.load(Ordering::Relaxed);
        assert!(segs[0].0 <= now - 5 * S, "{segs:?}");
        assert!(segs[1].0 > now - 5 * S);
        assert!(segs.len() <= 4, "{}", segs.len());
        assert_eq!(k.errors(), 0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("cam"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o750);
        let f = std::fs::read_dir(d.path().join("cam"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            f.metadata().unwrap().permissions().mode() & 0o777,
            FILE_MODE
        );
    }

    #[test]
    fn a_new_session_starts_a_new_segment_and_bytes_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let (mut k, clock) = keeper(d.path(), 3600, 20_000);
        k.start_session(header());
        feed(&mut k, &clock, 30, 10, 0);
        k.start_session(header());
        // The loop restarts the stream's timestamps at 0.
        feed(&mut k, &clock, 30, 10, 0);
        let segs = segments(d.path());
        assert_eq!(segs.len(), 2, "one per session (each < 2 s)");
        let total: u64 = std::fs::read_dir(d.path().join("cam"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= 20_000);
        // Far more than max_bytes: still bounded.
        feed(&mut k, &clock, 2000, 10, 30);
        let total: u64 = std::fs::read_dir(d.path().join("cam"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= 20_000 + 20_000 / 2, "{total}");
    }

    #[test]
    fn restart_adopts_old_segments_and_removes_future_ones() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut k, clock) = keeper(d.path(), 5, 1 << 30);
            k.start_session(header());
            feed(&mut k, &clock, 100, 25, 0);
        }
        let before = segments(d.path()).len();
        std::fs::write(
            d.path().join("cam").join(segment::file_name(u64::MAX / 2)),
            b"x",
        )
        .unwrap();
        // Restarted 1 s after the last packet.
        let (k, _) = keeper_at(d.path(), 5, 1 << 30, 1_005 * S);
        assert_eq!(k.segments(), before);
        assert_eq!(segments(d.path()).len(), before);
    }

    #[test]
    fn a_write_error_is_counted_and_keeping_resumes_at_the_next_keyframe() {
        let d = tempfile::tempdir().unwrap();
        let (mut k, clock) = keeper(d.path(), 5, 1 << 30);
        k.start_session(header());
        feed(&mut k, &clock, 5, 25, 0);
        // Replace the open file by one on /dev/full: the next write fails.
        if let Some(o) = k.current.as_mut() {
            o.file = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap();
        }
        feed(&mut k, &clock, 30, 25, 5);
        assert_eq!(k.errors(), 1);
        assert!(k.current.is_some(), "a keyframe started a new segment");
    }
}
