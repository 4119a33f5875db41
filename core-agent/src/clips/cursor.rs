//! Reading a camera's packet segments in order while the kernel writes them: each
//! packet with its capture times (through its segment's anchor), across segment
//! boundaries, file loops and kernel restarts.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proto_schema::segment::{self, Anchor, Record, SegmentError, SegmentHeader, SegmentPacket};

/// Packets of a segment held while its anchor has not been written yet (the kernel
/// writes it when the segment's first frame is published, a few packets in); beyond
/// this the oldest are dropped.
pub const MAX_UNANCHORED: usize = 1024;
/// Bytes read from a segment per call.
const READ_CHUNK: usize = 1 << 20;

/// A packet placed on the capture clock.
#[derive(Debug, Clone)]
pub struct TimedPacket {
    /// The packet as kept.
    pub packet: SegmentPacket,
    /// Capture time of its presentation, Unix ns.
    pub pts_cap: i64,
    /// Capture time of its decoding, Unix ns.
    pub dts_cap: i64,
    /// The codec parameters of its segment.
    pub header: Arc<SegmentHeader>,
}

/// Why the segments could not be read (the clip ends there).
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// Listing the segment directory failed.
    #[error("{path}: cannot list segments: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct Seg {
    name_ns: u64,
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    header: Option<Arc<SegmentHeader>>,
    anchor: Option<Anchor>,
    unanchored: VecDeque<SegmentPacket>,
    broken: bool,
}

/// Tails the segments of one camera from a start time on.
#[derive(Debug)]
pub struct Cursor {
    dir: PathBuf,
    start_ns: u64,
    seg: Option<Seg>,
    /// Name (open time) of the last segment entered.
    last_name: Option<u64>,
    /// Packets dropped (no anchor, corrupt data).
    pub dropped: u64,
}

fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CursorError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // The kernel has not created it yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CursorError::List {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut v: Vec<(u64, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((segment::parse_file_name(e.file_name().to_str()?)?, e.path())))
        .collect();
    v.sort();
    Ok(v)
}

/// The segment to start in: the last one opened at or before `start_ns` (it holds the
/// keyframe at or before the start), else the oldest.
pub fn start_segment(names: &[u64], start_ns: u64) -> Option<usize> {
    if names.is_empty() {
        return None;
    }
    Some(names.iter().rposition(|n| *n <= start_ns).unwrap_or(0))
}

impl Cursor {
    /// A cursor over `dir` from `start_ns` (Unix ns) on.
    pub fn new(dir: PathBuf, start_ns: u64) -> Self {
        Cursor {
            dir,
            start_ns,
            seg: None,
            last_name: None,
            dropped: 0,
        }
    }

    /// The next packet, `Ok(None)` when none is available yet.
    pub fn next_packet(&mut self) -> Result<Option<TimedPacket>, CursorError> {
        loop {
            if self.seg.is_none() && !self.enter_next()? {
                return Ok(None);
            }
            let Some(seg) = self.seg.as_mut() else {
                return Ok(None);
            };
            if let (Some(anchor), Some(header)) = (seg.anchor, seg.header.clone()) {
                while let Some(p) = seg.unanchored.pop_front() {
                    if let Some(t) = timed(p, &anchor, &header) {
                        return Ok(Some(t));
                    }
                }
            }
            match seg.parse_one() {
                Ok(Some(Record::Packet(p))) => match (seg.anchor, seg.header.clone()) {
                    (Some(a), Some(h)) => {
                        if let Some(t) = timed(p, &a, &h) {
                            return Ok(Some(t));
                        }
                    }
                    _ => {
                        if seg.unanchored.len() >= MAX_UNANCHORED {
                            seg.unanchored.pop_front();
                            self.dropped += 1;
                        }
                        seg.unanchored.push_back(p);
                    }
                },
                Ok(Some(Record::Anchor(a))) => {
                    seg.anchor.get_or_insert(a);
                }
                Ok(None) => {
                    // Nothing complete buffered: read more, else move on if a newer
                    // segment exists (this one will never grow again).
                    if !seg.broken && seg.fill() {
                        continue;
                    }
                    let newer = list(&self.dir)?.iter().any(|(n, _)| *n > seg.name_ns);
                    if !newer {
                        return Ok(None);
                    }
                    self.dropped += seg.unanchored.len() as u64;
                    self.seg = None;
                }
                Err(e) => {
                    tracing::warn!(segment = %seg.path.display(), error = %e, "corrupt clip segment; skipped from here");
                    seg.broken = true;
                    seg.buf.clear();
                }
            }
        }
    }

    /// Opens the next segment to read; `false` when there is none yet.
    fn enter_next(&mut self) -> Result<bool, CursorError> {
        let all = list(&self.dir)?;
        let candidates: Vec<&(u64, PathBuf)> = match self.last_name {
            None => {
                let names: Vec<u64> = all.iter().map(|(n, _)| *n).collect();
                match start_segment(&names, self.start_ns) {
                    Some(i) => all[i..].iter().collect(),
                    None => Vec::new(),
                }
            }
            Some(last) => all.iter().filter(|(n, _)| *n > last).collect(),
        };
        for (name_ns, path) in candidates {
            self.last_name = Some(*name_ns);
            // A segment removed since the listing (kept history moved on): the next.
            if let Ok(file) = File::open(path) {
                self.seg = Some(Seg {
                    name_ns: *name_ns,
                    path: path.clone(),
                    file,
                    buf: Vec::new(),
                    header: None,
                    anchor: None,
                    unanchored: VecDeque::new(),
                    broken: false,
                });
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn timed(p: SegmentPacket, a: &Anchor, h: &Arc<SegmentHeader>) -> Option<TimedPacket> {
    let pts = h.ts_to_ns(p.pts);
    let dts = h.ts_to_ns(p.dts);
    let (pts, dts) = match (pts, dts) {
        (Some(p), Some(d)) => (p, d),
        (Some(p), None) => (p, p),
        (None, Some(d)) => (d, d),
        (None, None) => return None,
    };
    Some(TimedPacket {
        pts_cap: a.capture_of(pts),
        dts_cap: a.capture_of(dts),
        packet: p,
        header: h.clone(),
    })
}

impl Seg {
    /// Parses the header (once) and then one record from the buffer.
    fn parse_one(&mut self) -> Result<Option<Record>, SegmentError> {
        if self.header.is_none() {
            match SegmentHeader::parse(&self.buf)? {
                Some((h, n)) => {
                    self.header = Some(Arc::new(h));
                    self.buf.drain(..n);
                }
                None => return Ok(None),
            }
        }
        match Record::parse(&self.buf)? {
            Some((r, n)) => {
                self.buf.drain(..n);
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }

    /// Reads what the kernel appended; whether anything came.
    fn fill(&mut self) -> bool {
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let n = self.file.read(&mut self.buf[len..]).unwrap_or(0);
        self.buf.truncate(len + n);
        n > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header() -> SegmentHeader {
        SegmentHeader {
            codec_id: 27,
            width: 64,
            height: 32,
            time_base: (1, 1000),
            pix_fmt: 0,
            profile: 100,
            level: 31,
            extradata: vec![1],
        }
    }

    fn packet(ms: i64, key: bool) -> Record {
        Record::Packet(SegmentPacket {
            pts: ms,
            dts: ms,
            duration: 40,
            key,
            data: vec![1, 2, 3],
        })
    }

    #[test]
    fn start_segment_is_the_last_at_or_before() {
        assert_eq!(start_segment(&[], 5), None);
        assert_eq!(start_segment(&[10, 20, 30], 5), Some(0));
        assert_eq!(start_segment(&[10, 20, 30], 20), Some(1));
        assert_eq!(start_segment(&[10, 20, 30], 29), Some(1));
        assert_eq!(start_segment(&[10, 20, 30], 99), Some(2));
    }

    /// Two sessions whose stream timestamps both start at 0 (a file loop), the first
    /// one cut mid-record (a killed kernel): the packets come out in order on the
    /// capture clock, the partial record is skipped, the packet before the anchor
    /// waits for it.
    #[test]
    fn packets_follow_the_capture_clock_across_segments() {
        let d = tempfile::tempdir().unwrap();
        const S: u64 = 1_000_000_000;
        let t0 = 1_700_000_000 * S;
        let mut a = File::create(d.path().join(segment::file_name(t0))).unwrap();
        a.write_all(&header().encode()).unwrap();
        a.write_all(&packet(0, true).encode()).unwrap();
        a.write_all(
            &Record::Anchor(Anchor {
                pts_ns: 0,
                capture_unix_ns: t0,
            })
            .encode(),
        )
        .unwrap();
        a.write_all(&packet(40, false).encode()).unwrap();
        let partial = packet(80, false).encode();
        a.write_all(&partial[..partial.len() - 1]).unwrap();

        let mut c = Cursor::new(d.path().to_path_buf(), t0);
        let got: Vec<i64> = std::iter::from_fn(|| c.next_packet().unwrap())
            .map(|t| t.pts_cap - t0 as i64)
            .collect();
        assert_eq!(got, [0, 40_000_000]);

        let t1 = t0 + 5 * S;
        let mut b = File::create(d.path().join(segment::file_name(t1))).unwrap();
        b.write_all(&header().encode()).unwrap();
        b.write_all(&packet(0, true).encode()).unwrap();
        b.write_all(&packet(40, false).encode()).unwrap();
        assert!(c.next_packet().unwrap().is_none(), "no anchor yet");
        b.write_all(
            &Record::Anchor(Anchor {
                pts_ns: 40_000_000,
                capture_unix_ns: t1 + 40_000_000,
            })
            .encode(),
        )
        .unwrap();
        let got: Vec<(i64, bool)> = std::iter::from_fn(|| c.next_packet().unwrap())
            .map(|t| (t.pts_cap - t0 as i64, t.packet.key))
            .collect();
        assert_eq!(got, [(5_000_000_000, true), (5_040_000_000, false)]);
    }
}
