//! Packet segments: the compressed video a frame kernel keeps for event clips.
//!
//! `frame-kernel --clip-dir DIR` writes the camera's compressed packets, exactly as the
//! demuxer delivered them (no re-encode), into short segment files `DIR/<unix
//! ns>.seg`, each starting at a keyframe; `core-agent`'s clip recorder reads them and
//! remuxes the packets of an event's interval into an MP4. This module is the contract
//! between the two: the file layout, a writer of its records and an incremental parser
//! that tolerates a file cut anywhere (a killed writer leaves a partial record at the
//! end, which is simply never complete).
//!
//! Layout (integers little-endian):
//!
//! ```text
//! header  : magic "FBSEG\x01\0\0" (8) | codec_id u32 | width u32 | height u32
//!           | time_base num i32 | den i32 | pix_fmt i32 | profile i32 | level i32
//!           | extradata_len u32 | extradata
//! record  : tag u8, then
//!   1 packet : len u32 | pts i64 | dts i64 | duration i64 | flags u8 | data[len]
//!   2 anchor : pts_ns i64 | capture_unix_ns u64
//! ```
//!
//! `pts`/`dts`/`duration` are in the header's time base, [`NO_TS`] when absent; `flags`
//! bit 0 marks a keyframe. An **anchor** ties the stream's clock to the capture clock:
//! the frame with presentation time `pts_ns` (stream time, ns) was published into the
//! ring at `capture_unix_ns` (the ring's capture clock, Unix ns). A segment never spans
//! two connections or two loops of a file, so one anchor maps every packet of it:
//! `capture(p) = capture_unix_ns + (pts_ns(p) - pts_ns)`.

use thiserror::Error;

/// Magic bytes at the start of every segment file.
pub const MAGIC: [u8; 8] = *b"FBSEG\x01\0\0";
/// File name extension of a segment.
pub const EXTENSION: &str = "seg";
/// Timestamp value meaning "none".
pub const NO_TS: i64 = i64::MIN;
/// Largest codec extradata accepted.
pub const MAX_EXTRADATA: usize = 1 << 20;
/// Largest packet accepted (a 4K intra frame is a few MiB).
pub const MAX_PACKET: usize = 32 << 20;
/// Packet flag: keyframe.
pub const FLAG_KEY: u8 = 1;

const TAG_PACKET: u8 = 1;
const TAG_ANCHOR: u8 = 2;
const HEADER_FIXED: usize = 8 + 4 * 9;
const PACKET_HEAD: usize = 1 + 4 + 8 * 3 + 1;
const ANCHOR_LEN: usize = 1 + 16;

/// The stream's codec parameters, enough to mux its packets again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    /// FFmpeg `AVCodecID` (same FFmpeg build on both sides).
    pub codec_id: u32,
    /// Coded width.
    pub width: u32,
    /// Coded height.
    pub height: u32,
    /// Time base of the packet timestamps, `(num, den)`, both positive.
    pub time_base: (i32, i32),
    /// FFmpeg `AVPixelFormat` of the decoded frames (`-1` unknown).
    pub pix_fmt: i32,
    /// Codec profile (`-99` unknown).
    pub profile: i32,
    /// Codec level (`-99` unknown).
    pub level: i32,
    /// Codec extradata (H.264: the `avcC` box with SPS/PPS).
    pub extradata: Vec<u8>,
}

/// One compressed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPacket {
    /// Presentation timestamp (time base units) or [`NO_TS`].
    pub pts: i64,
    /// Decode timestamp or [`NO_TS`].
    pub dts: i64,
    /// Duration, 0 when unknown.
    pub duration: i64,
    /// Keyframe.
    pub key: bool,
    /// The packet's bytes.
    pub data: Vec<u8>,
}

/// Maps stream time to capture time for the whole segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Presentation time of a published frame, stream ns.
    pub pts_ns: i64,
    /// When that frame was published, Unix ns.
    pub capture_unix_ns: u64,
}

impl Anchor {
    /// Capture time (Unix ns) of stream time `pts_ns`, saturating.
    pub fn capture_of(&self, pts_ns: i64) -> i64 {
        let base = i64::try_from(self.capture_unix_ns).unwrap_or(i64::MAX);
        base.saturating_add(pts_ns.saturating_sub(self.pts_ns))
    }
}

/// A record after the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A packet.
    Packet(SegmentPacket),
    /// A stream-to-capture time anchor.
    Anchor(Anchor),
}

/// Why segment bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SegmentError {
    /// The file does not start with [`MAGIC`].
    #[error("not a segment file (bad magic)")]
    BadMagic,
    /// A time base with a zero or negative part.
    #[error("invalid time base {num}/{den}")]
    BadTimeBase {
        /// Numerator.
        num: i32,
        /// Denominator.
        den: i32,
    },
    /// Extradata longer than [`MAX_EXTRADATA`].
    #[error("extradata of {0} bytes is larger than the limit")]
    ExtradataTooLarge(usize),
    /// A packet longer than [`MAX_PACKET`].
    #[error("packet of {0} bytes is larger than the limit")]
    PacketTooLarge(usize),
    /// An unknown record tag.
    #[error("unknown record tag {0}")]
    UnknownTag(u8),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_FIXED + self.extradata.len());
        v.extend_from_slice(&MAGIC);
        for x in [self.codec_id, self.width, self.height] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        for x in [
            self.time_base.0,
            self.time_base.1,
            self.pix_fmt,
            self.profile,
            self.level,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&(self.extradata.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.extradata);
        v
    }

    /// Parses a header from the start of `b`: `Ok(None)` while `b` is too short,
    /// else the header and its length.
    pub fn parse(b: &[u8]) -> Result<Option<(SegmentHeader, usize)>, SegmentError> {
        if b.len() < MAGIC.len() {
            return if MAGIC.starts_with(b) {
                Ok(None)
            } else {
                Err(SegmentError::BadMagic)
            };
        }
        if b[..8] != MAGIC {
            return Err(SegmentError::BadMagic);
        }
        if b.len() < HEADER_FIXED {
            return Ok(None);
        }
        let (num, den) = (i32_at(b, 20), i32_at(b, 24));
        if num <= 0 || den <= 0 {
            return Err(SegmentError::BadTimeBase { num, den });
        }
        let n = u32_at(b, 40) as usize;
        if n > MAX_EXTRADATA {
            return Err(SegmentError::ExtradataTooLarge(n));
        }
        if b.len() < HEADER_FIXED + n {
            return Ok(None);
        }
        Ok(Some((
            SegmentHeader {
                codec_id: u32_at(b, 8),
                width: u32_at(b, 12),
                height: u32_at(b, 16),
                time_base: (num, den),
                pix_fmt: i32_at(b, 28),
                profile: i32_at(b, 32),
                level: i32_at(b, 36),
                extradata: b[HEADER_FIXED..HEADER_FIXED + n].to_vec(),
            },
            HEADER_FIXED + n,
        )))
    }

    /// `ts` (time base units) in ns, saturating; `None` for [`NO_TS`].
    pub fn ts_to_ns(&self, ts: i64) -> Option<i64> {
        if ts == NO_TS {
            return None;
        }
        let (num, den) = self.time_base;
        let ns = i128::from(ts) * 1_000_000_000 * i128::from(num) / i128::from(den);
        Some(ns.clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX)) as i64)
    }

    /// `ns` in time base units (rounded to nearest), saturating.
    pub fn ns_to_ts(&self, ns: i64) -> i64 {
        let (num, den) = self.time_base;
        let d = 1_000_000_000i128 * i128::from(num);
        let t = (i128::from(ns) * i128::from(den) + d / 2).div_euclid(d);
        t.clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX)) as i64
    }
}

impl Record {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Packet(p) => {
                let mut v = Vec::with_capacity(PACKET_HEAD + p.data.len());
                v.push(TAG_PACKET);
                v.extend_from_slice(&(p.data.len() as u32).to_le_bytes());
                for x in [p.pts, p.dts, p.duration] {
                    v.extend_from_slice(&x.to_le_bytes());
                }
                v.push(if p.key { FLAG_KEY } else { 0 });
                v.extend_from_slice(&p.data);
                v
            }
            Record::Anchor(a) => {
                let mut v = Vec::with_capacity(ANCHOR_LEN);
                v.push(TAG_ANCHOR);
                v.extend_from_slice(&a.pts_ns.to_le_bytes());
                v.extend_from_slice(&a.capture_unix_ns.to_le_bytes());
                v
            }
        }
    }

    /// Parses the record at the start of `b`: `Ok(None)` while it is incomplete (the
    /// writer has not written all of it yet, or never will), else the record and its
    /// length.
    pub fn parse(b: &[u8]) -> Result<Option<(Record, usize)>, SegmentError> {
        let Some(&tag) = b.first() else {
            return Ok(None);
        };
        match tag {
            TAG_PACKET => {
                if b.len() < PACKET_HEAD {
                    return Ok(None);
                }
                let n = u32_at(b, 1) as usize;
                if n > MAX_PACKET {
                    return Err(SegmentError::PacketTooLarge(n));
                }
                if b.len() < PACKET_HEAD + n {
                    return Ok(None);
                }
                Ok(Some((
                    Record::Packet(SegmentPacket {
                        pts: i64_at(b, 5),
                        dts: i64_at(b, 13),
                        duration: i64_at(b, 21),
                        key: b[29] & FLAG_KEY != 0,
                        data: b[PACKET_HEAD..PACKET_HEAD + n].to_vec(),
                    }),
                    PACKET_HEAD + n,
                )))
            }
            TAG_ANCHOR => {
                if b.len() < ANCHOR_LEN {
                    return Ok(None);
                }
                Ok(Some((
                    Record::Anchor(Anchor {
                        pts_ns: i64_at(b, 1),
                        capture_unix_ns: u64_at(b, 9),
                    }),
                    ANCHOR_LEN,
                )))
            }
            other => Err(SegmentError::UnknownTag(other)),
        }
    }
}

/// The segment file name for a segment opened at `unix_ns`: zero-padded, so names
/// sort in time order.
pub fn file_name(unix_ns: u64) -> String {
    format!("{unix_ns:020}.{EXTENSION}")
}

/// The open time encoded in a segment file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            codec_id: 27,
            width: 960,
            height: 540,
            time_base: (1, 12800),
            pix_fmt: 0,
            profile: 100,
            level: 31,
            extradata: vec![1, 2, 3, 4],
        }
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = header();
        let b = h.encode();
        assert_eq!(
            SegmentHeader::parse(&b).unwrap(),
            Some((h.clone(), b.len()))
        );
        for cut in 0..b.len() {
            assert_eq!(SegmentHeader::parse(&b[..cut]).unwrap(), None, "cut {cut}");
        }
        assert_eq!(
            SegmentHeader::parse(b"XXXXXXXXXXXXXXXX"),
            Err(SegmentError::BadMagic)
        );
        let mut bad = h.clone();
        bad.time_base = (0, 1);
        assert!(matches!(
            SegmentHeader::parse(&bad.encode()),
            Err(SegmentError::BadTimeBase { .. })
        ));
        assert_eq!(Record::parse(&[9, 0, 0]), Err(SegmentError::UnknownTag(9)));
    }

    #[test]
    fn time_mapping() {
        let h = header();
        assert_eq!(h.ts_to_ns(512), Some(40_000_000));
        assert_eq!(h.ts_to_ns(NO_TS), None);
        assert_eq!(h.ns_to_ts(40_000_000), 512);
        let a = Anchor {
            pts_ns: 1_000,
            capture_unix_ns: 5_000,
        };
        assert_eq!(a.capture_of(1_500), 5_500);
        assert_eq!(a.capture_of(0), 4_000);
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.seg"), None);
        assert_eq!(parse_file_name("0000000000000000004a.seg"), None);
    }

    fn record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (
                any::<i64>(),
                any::<i64>(),
                any::<i64>(),
                any::<bool>(),
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(pts, dts, duration, key, data)| Record::Packet(
                    SegmentPacket {
                        pts,
                        dts,
                        duration,
                        key,
                        data
                    }
                )),
            (any::<i64>(), any::<u64>()).prop_map(|(pts_ns, capture_unix_ns)| Record::Anchor(
                Anchor {
                    pts_ns,
                    capture_unix_ns
                }
            )),
        ]
    }

    proptest! {
        /// Records written one after the other parse back in order, and any prefix of
        /// the stream (a file cut by a killed writer) yields exactly the complete
        /// records before the cut, never an error or a wrong record.
        #[test]
        fn records_round_trip_and_any_cut_is_a_clean_prefix(
            recs in proptest::collection::vec(record(), 0..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for r in &recs {
                bytes.extend(r.encode());
                ends.push(bytes.len());
            }
            let cut = if bytes.is_empty() { 0 } else { cut.index(bytes.len() + 1) };
            let mut at = 0;
            let mut got = Vec::new();
            while let Some((r, n)) = Record::parse(&bytes[at..cut]).unwrap() {
                got.push(r);
                at += n;
            }
            let complete = ends.iter().filter(|e| **e <= cut).count();
            prop_assert_eq!(&got[..], &recs[..complete]);
        }

        /// Parsing arbitrary bytes never panics.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = SegmentHeader::parse(&b);
            let _ = Record::parse(&b);
        }

        /// ns -> ts -> ns is exact to within half a tick, and the anchor mapping is
        /// monotonic in the stream time.
        #[test]
        fn time_base_mapping_is_close_and_monotonic(
            ts in -1_000_000_000i64..1_000_000_000,
            d in 0i64..1_000_000,
            den in 1i32..100_000,
        ) {
            let mut h = header();
            h.time_base = (1, den);
            let ns = h.ts_to_ns(ts).unwrap();
            prop_assert_eq!(h.ns_to_ts(ns), ts);
            let a = Anchor { pts_ns: 7, capture_unix_ns: 1_700_000_000_000_000_000 };
            prop_assert!(a.capture_of(ns) <= a.capture_of(ns + d));
        }
    }
}
