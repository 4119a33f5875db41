//! Byte layout of a ring file: the `#[repr(C)]` structs mapped at fixed offsets, their
//! offset assertions, and the arithmetic that places slots. `docs/ring-format.md` is the
//! same layout in prose; the `const` assertions below keep the two from drifting apart.
//!
//! File = [`FixedHeader`] (0..128) + [`LiveHeader`] (128..256) + slot table
//! (`slot_count` x [`SlotHeader`], 64 bytes each, from 256) + padding to `data_offset`
//! (a multiple of [`DATA_ALIGN`]) + `slot_count` x `slot_stride` bytes of frame data.
//! All integers are native-endian, which is little-endian on every supported target.

use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};

use proto_schema::pixel::{FrameGeometry, PixelFormat};

#[cfg(not(target_endian = "little"))]
compile_error!("the ring format is little-endian; big-endian targets are not supported");

/// First 8 bytes of every ring file.
pub const MAGIC: [u8; 8] = *b"FBUSRING";
/// Layout version written by this code. Version 2 (issue 18) is version 1 with
/// `generation` limited to [`MAX_GENERATION`], so clients whose numbers are IEEE doubles
/// can echo it in `frame.generation`; the bytes are otherwise identical.
pub const LAYOUT_VERSION: u32 = 2;
/// Oldest layout version readers still accept (`MIN_LAYOUT_VERSION..=LAYOUT_VERSION`).
pub const MIN_LAYOUT_VERSION: u32 = 1;
/// Largest `generation` of a layout-2 ring: `2^53 - 1`, the largest integer every IEEE
/// double represents exactly (and the largest "safe integer" of JavaScript).
pub const MAX_GENERATION: u64 = (1 << 53) - 1;
/// Bytes of [`FixedHeader`] + [`LiveHeader`]; the slot table starts here.
pub const HEADER_SIZE: u32 = 256;
/// Bytes of one [`SlotHeader`].
pub const SLOT_HEADER_SIZE: u32 = 64;
/// Alignment the writer uses for `data_offset` and `slot_stride` (one page).
pub const DATA_ALIGN: u64 = 4096;
/// Alignment every reader requires of `data_offset` and `slot_stride`.
pub const MIN_DATA_ALIGN: u64 = 64;
/// Fewest slots a ring may have (one being written, one readable).
pub const MIN_SLOTS: u32 = 2;
/// Most slots a ring may have.
pub const MAX_SLOTS: u32 = 1024;

/// Header fields written once by the creating writer before the file becomes visible
/// under its name, never changed afterwards. Readers copy it once at open.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Number of slots.
    pub slot_count: u32,
    /// [`SLOT_HEADER_SIZE`].
    pub slot_header_size: u32,
    /// Offset of slot 0's header (= `header_size`).
    pub slot_table_offset: u64,
    /// Offset of slot 0's data.
    pub data_offset: u64,
    /// Bytes from one slot's data to the next.
    pub slot_stride: u64,
    /// Usable bytes of each slot's data (≥ `frame_size`).
    pub slot_capacity: u64,
    /// Total file length.
    pub file_size: u64,
    /// Random non-zero id of this ring incarnation.
    pub generation: u64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// [`PixelFormat::code`].
    pub format: u32,
    /// Bytes of one frame.
    pub frame_size: u32,
    /// Per-plane row strides.
    pub strides: [u32; 3],
    /// Per-plane offsets inside a frame.
    pub offsets: [u32; 3],
    /// CLOCK_REALTIME (Unix epoch) nanoseconds when the ring was created.
    pub created_unix_ns: u64,
    /// Process id of the creating writer.
    pub writer_pid: u32,
    /// Zero.
    pub reserved0: u32,
}

/// Header fields that change while the ring is live; only ever accessed atomically.
#[repr(C)]
#[derive(Debug)]
pub struct LiveHeader {
    /// Publishes completed so far; publish `n` (1-based) went to slot `(n-1) % slot_count`.
    pub write_seq: AtomicU64,
    /// Futex word: incremented (wrapping) after every publish and on close.
    pub notify: AtomicU32,
    /// [`super::RingState`] as u32.
    pub state: AtomicU32,
    /// CLOCK_MONOTONIC nanoseconds of the writer's last heartbeat or publish.
    pub heartbeat_ns: AtomicU64,
    /// Counters the writer maintains.
    pub counters: RingCountersHandle,
    /// Zero; room for later fields.
    pub reserved: [AtomicU64; 7],
}

/// The writer's counters, living in the ring header. Obtained from
/// [`super::RingWriter::counters`]; the reader sees them through
/// [`super::RingReader::header`].
#[repr(C)]
#[derive(Debug)]
pub struct RingCountersHandle {
    pub(crate) frames_decoded: AtomicU64,
    pub(crate) frames_published: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) last_frame_ns: AtomicU64,
    pub(crate) fps_milli: AtomicU32,
    pub(crate) reserved: AtomicU32,
}

/// Per-slot header: the seqlock word and the metadata of the frame in the slot.
#[repr(C)]
#[derive(Debug)]
pub struct SlotHeader {
    /// Seqlock: 0 never written, odd while being written, `2n` once publish `n` is stable.
    pub seq: AtomicU64,
    /// Frame id assigned by the writer (publish number - 1).
    pub frame_id: AtomicU64,
    /// Presentation timestamp in nanoseconds (stream time base, may be negative).
    pub pts_ns: AtomicI64,
    /// Capture timestamp in nanoseconds (CLOCK_REALTIME by convention).
    pub capture_ts_ns: AtomicU64,
    /// Bytes of frame data in the slot (= `frame_size`).
    pub payload_len: AtomicU32,
    /// Zero.
    pub reserved0: AtomicU32,
    /// Zero.
    pub reserved: [AtomicU64; 3],
}

// Offsets are part of the on-disk contract (docs/ring-format.md); changing any of them
// requires a new LAYOUT_VERSION.
const _: () = {
    assert!(size_of::<FixedHeader>() == 128);
    assert!(offset_of!(FixedHeader, magic) == 0);
    assert!(offset_of!(FixedHeader, layout_version) == 8);
    assert!(offset_of!(FixedHeader, header_size) == 12);
    assert!(offset_of!(FixedHeader, slot_count) == 16);
    assert!(offset_of!(FixedHeader, slot_header_size) == 20);
    assert!(offset_of!(FixedHeader, slot_table_offset) == 24);
    assert!(offset_of!(FixedHeader, data_offset) == 32);
    assert!(offset_of!(FixedHeader, slot_stride) == 40);
    assert!(offset_of!(FixedHeader, slot_capacity) == 48);
    assert!(offset_of!(FixedHeader, file_size) == 56);
    assert!(offset_of!(FixedHeader, generation) == 64);
    assert!(offset_of!(FixedHeader, width) == 72);
    assert!(offset_of!(FixedHeader, height) == 76);
    assert!(offset_of!(FixedHeader, format) == 80);
    assert!(offset_of!(FixedHeader, frame_size) == 84);
    assert!(offset_of!(FixedHeader, strides) == 88);
    assert!(offset_of!(FixedHeader, offsets) == 100);
    assert!(offset_of!(FixedHeader, created_unix_ns) == 112);
    assert!(offset_of!(FixedHeader, writer_pid) == 120);
    assert!(offset_of!(FixedHeader, reserved0) == 124);

    assert!(size_of::<LiveHeader>() == 128);
    assert!(offset_of!(LiveHeader, write_seq) == 0);
    assert!(offset_of!(LiveHeader, notify) == 8);
    assert!(offset_of!(LiveHeader, state) == 12);
    assert!(offset_of!(LiveHeader, heartbeat_ns) == 16);
    assert!(offset_of!(LiveHeader, counters) == 24);
    assert!(offset_of!(LiveHeader, reserved) == 72);
    assert!(align_of::<LiveHeader>() == 8);

    assert!(size_of::<RingCountersHandle>() == 48);
    assert!(offset_of!(RingCountersHandle, frames_decoded) == 0);
    assert!(offset_of!(RingCountersHandle, frames_published) == 8);
    assert!(offset_of!(RingCountersHandle, decode_errors) == 16);
    assert!(offset_of!(RingCountersHandle, reconnects) == 24);
    assert!(offset_of!(RingCountersHandle, last_frame_ns) == 32);
    assert!(offset_of!(RingCountersHandle, fps_milli) == 40);

    assert!(size_of::<SlotHeader>() == SLOT_HEADER_SIZE as usize);
    assert!(align_of::<SlotHeader>() == 8);
    assert!(offset_of!(SlotHeader, seq) == 0);
    assert!(offset_of!(SlotHeader, frame_id) == 8);
    assert!(offset_of!(SlotHeader, pts_ns) == 16);
    assert!(offset_of!(SlotHeader, capture_ts_ns) == 24);
    assert!(offset_of!(SlotHeader, payload_len) == 32);

    assert!(size_of::<FixedHeader>() + size_of::<LiveHeader>() == HEADER_SIZE as usize);
    // Atomics in the mapping rely on these having plain integer representation.
    assert!(size_of::<AtomicU64>() == 8 && align_of::<AtomicU64>() == 8);
    assert!(size_of::<AtomicU32>() == 4 && align_of::<AtomicU32>() == 4);
};

/// Absolute offset of [`LiveHeader`] in the file.
pub const LIVE_HEADER_OFFSET: usize = size_of::<FixedHeader>();

/// Where everything is, derived from a validated [`FixedHeader`]. The reader keeps its own
/// copy so that bounds never depend on shared memory read later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Number of slots.
    pub slots: u32,
    /// Offset of slot 0's header.
    pub slot_table_offset: u64,
    /// Offset of slot 0's data.
    pub data_offset: u64,
    /// Bytes between slots' data.
    pub slot_stride: u64,
    /// Usable bytes per slot.
    pub slot_capacity: u64,
    /// Total file size.
    pub file_size: u64,
}

/// Why a layout could not be computed or a header is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutProblem {
    /// A field holds a value outside what this version allows.
    Field {
        /// Header field name.
        field: &'static str,
        /// The value found.
        value: u64,
        /// What was expected.
        expected: &'static str,
    },
    /// The ring size overflows u64/usize.
    Overflow,
}

impl std::fmt::Display for LayoutProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutProblem::Field {
                field,
                value,
                expected,
            } => write!(f, "header field {field} = {value}, expected {expected}"),
            LayoutProblem::Overflow => f.write_str("ring size overflows the address space"),
        }
    }
}

pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(value.checked_add(align - 1)? & !(align - 1))
}

impl Layout {
    /// The layout a writer creates for `slots` slots of `geometry`.
    pub fn for_writer(slots: u32, geometry: &FrameGeometry) -> Result<Layout, LayoutProblem> {
        let table_end = u64::from(HEADER_SIZE) + u64::from(slots) * u64::from(SLOT_HEADER_SIZE);
        let data_offset = align_up(table_end, DATA_ALIGN).ok_or(LayoutProblem::Overflow)?;
        let slot_capacity = u64::from(geometry.frame_size);
        let slot_stride = align_up(slot_capacity, DATA_ALIGN).ok_or(LayoutProblem::Overflow)?;
        let file_size = slot_stride
            .checked_mul(u64::from(slots))
            .and_then(|d| d.checked_add(data_offset))
            .filter(|&s| usize::try_from(s).is_ok() && s <= i64::MAX as u64)
            .ok_or(LayoutProblem::Overflow)?;
        Ok(Layout {
            slots,
            slot_table_offset: u64::from(HEADER_SIZE),
            data_offset,
            slot_stride,
            slot_capacity,
            file_size,
        })
    }

    /// Checks every structural field of a header read from a file (not the magic,
    /// version or geometry, which have their own errors) and returns its layout.
    pub fn from_header(h: &FixedHeader) -> Result<Layout, LayoutProblem> {
        let bad = |field, value: u64, expected| {
            Err(LayoutProblem::Field {
                field,
                value,
                expected,
            })
        };
        if h.header_size != HEADER_SIZE {
            return bad("header_size", h.header_size.into(), "256");
        }
        if h.slot_header_size != SLOT_HEADER_SIZE {
            return bad("slot_header_size", h.slot_header_size.into(), "64");
        }
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&h.slot_count) {
            return bad("slot_count", h.slot_count.into(), "2..=1024");
        }
        if h.slot_table_offset != u64::from(HEADER_SIZE) {
            return bad("slot_table_offset", h.slot_table_offset, "256");
        }
        let table_end =
            u64::from(HEADER_SIZE) + u64::from(h.slot_count) * u64::from(SLOT_HEADER_SIZE);
        if h.data_offset < table_end || !h.data_offset.is_multiple_of(MIN_DATA_ALIGN) {
            return bad(
                "data_offset",
                h.data_offset,
                "a multiple of 64 past the slot table",
            );
        }
        if h.slot_capacity < u64::from(h.frame_size) {
            return bad("slot_capacity", h.slot_capacity, "at least frame_size");
        }
        if h.slot_stride < h.slot_capacity || !h.slot_stride.is_multiple_of(MIN_DATA_ALIGN) {
            return bad(
                "slot_stride",
                h.slot_stride,
                "a multiple of 64 no smaller than slot_capacity",
            );
        }
        let end = h
            .slot_stride
            .checked_mul(u64::from(h.slot_count))
            .and_then(|d| d.checked_add(h.data_offset))
            .filter(|&s| usize::try_from(s).is_ok())
            .ok_or(LayoutProblem::Overflow)?;
        if h.file_size != end {
            return bad(
                "file_size",
                h.file_size,
                "data_offset + slot_count * slot_stride",
            );
        }
        if h.generation == 0 {
            return bad("generation", 0, "non-zero");
        }
        // Layout 1 allowed any non-zero u64; from layout 2 on it fits in 53 bits.
        if h.layout_version >= 2 && h.generation > MAX_GENERATION {
            return bad("generation", h.generation, "at most 2^53 - 1 (layout 2)");
        }
        Ok(Layout {
            slots: h.slot_count,
            slot_table_offset: h.slot_table_offset,
            data_offset: h.data_offset,
            slot_stride: h.slot_stride,
            slot_capacity: h.slot_capacity,
            file_size: h.file_size,
        })
    }

    /// Offset of slot `slot`'s header. Caller guarantees `slot < self.slots`.
    pub fn slot_header_offset(&self, slot: u32) -> usize {
        debug_assert!(slot < self.slots);
        (self.slot_table_offset + u64::from(slot) * u64::from(SLOT_HEADER_SIZE)) as usize
    }

    /// Offset of slot `slot`'s data. Caller guarantees `slot < self.slots`.
    pub fn slot_data_offset(&self, slot: u32) -> usize {
        debug_assert!(slot < self.slots);
        (self.data_offset + u64::from(slot) * self.slot_stride) as usize
    }
}

impl FixedHeader {
    /// The header a writer stores for a new ring.
    pub fn new(
        layout: &Layout,
        geometry: &FrameGeometry,
        generation: u64,
        created_unix_ns: u64,
        writer_pid: u32,
    ) -> FixedHeader {
        FixedHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: HEADER_SIZE,
            slot_count: layout.slots,
            slot_header_size: SLOT_HEADER_SIZE,
            slot_table_offset: layout.slot_table_offset,
            data_offset: layout.data_offset,
            slot_stride: layout.slot_stride,
            slot_capacity: layout.slot_capacity,
            file_size: layout.file_size,
            generation,
            width: geometry.width,
            height: geometry.height,
            format: geometry.format.code(),
            frame_size: geometry.frame_size,
            strides: geometry.strides,
            offsets: geometry.offsets,
            created_unix_ns,
            writer_pid,
            reserved0: 0,
        }
    }

    /// Decodes the first 128 bytes of a ring file (no validation).
    pub fn from_bytes(b: &[u8; 128]) -> FixedHeader {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        FixedHeader {
            magic: b[0..8].try_into().expect("8 bytes"),
            layout_version: u32_at(8),
            header_size: u32_at(12),
            slot_count: u32_at(16),
            slot_header_size: u32_at(20),
            slot_table_offset: u64_at(24),
            data_offset: u64_at(32),
            slot_stride: u64_at(40),
            slot_capacity: u64_at(48),
            file_size: u64_at(56),
            generation: u64_at(64),
            width: u32_at(72),
            height: u32_at(76),
            format: u32_at(80),
            frame_size: u32_at(84),
            strides: [u32_at(88), u32_at(92), u32_at(96)],
            offsets: [u32_at(100), u32_at(104), u32_at(108)],
            created_unix_ns: u64_at(112),
            writer_pid: u32_at(120),
            reserved0: u32_at(124),
        }
    }

    /// Encodes the header as its 128 on-file bytes.
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        let mut put = |o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        put(0, &self.magic);
        put(8, &self.layout_version.to_le_bytes());
        put(12, &self.header_size.to_le_bytes());
        put(16, &self.slot_count.to_le_bytes());
        put(20, &self.slot_header_size.to_le_bytes());
        put(24, &self.slot_table_offset.to_le_bytes());
        put(32, &self.data_offset.to_le_bytes());
        put(40, &self.slot_stride.to_le_bytes());
        put(48, &self.slot_capacity.to_le_bytes());
        put(56, &self.file_size.to_le_bytes());
        put(64, &self.generation.to_le_bytes());
        put(72, &self.width.to_le_bytes());
        put(76, &self.height.to_le_bytes());
        put(80, &self.format.to_le_bytes());
        put(84, &self.frame_size.to_le_bytes());
        for i in 0..3 {
            put(88 + 4 * i, &self.strides[i].to_le_bytes());
            put(100 + 4 * i, &self.offsets[i].to_le_bytes());
        }
        put(112, &self.created_unix_ns.to_le_bytes());
        put(120, &self.writer_pid.to_le_bytes());
        put(124, &self.reserved0.to_le_bytes());
        b
    }

    /// The frame geometry the header declares; `None` for an unknown format code.
    /// Not validated: call [`FrameGeometry::validate`].
    pub fn geometry(&self) -> Option<FrameGeometry> {
        Some(FrameGeometry {
            width: self.width,
            height: self.height,
            format: PixelFormat::from_code(self.format)?,
            strides: self.strides,
            offsets: self.offsets,
            frame_size: self.frame_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> FrameGeometry {
        FrameGeometry::packed(960, 540, PixelFormat::Nv12).unwrap()
    }

    #[test]
    fn writer_layout_is_page_aligned() {
        let l = Layout::for_writer(8, &geometry()).unwrap();
        assert_eq!(l.slot_table_offset, 256);
        assert_eq!(l.data_offset, 4096);
        assert_eq!(l.slot_capacity, 777_600);
        assert_eq!(l.slot_stride, 778_240);
        assert_eq!(l.file_size, 4096 + 8 * 778_240);
        let big = Layout::for_writer(MAX_SLOTS, &geometry()).unwrap();
        assert_eq!(big.data_offset, align_up(256 + 1024 * 64, 4096).unwrap());
    }

    #[test]
    fn header_bytes_round_trip_and_match_repr_c() {
        let l = Layout::for_writer(4, &geometry()).unwrap();
        let h = FixedHeader::new(&l, &geometry(), 0xfeed, 7, 42);
        let bytes = h.to_bytes();
        assert_eq!(FixedHeader::from_bytes(&bytes), h);
        assert_eq!(&bytes[0..8], b"FBUSRING");
        assert_eq!(Layout::from_header(&h).unwrap(), l);
        assert_eq!(h.geometry().unwrap(), geometry());
    }

    #[test]
    fn from_header_rejects_inconsistent_fields() {
        let l = Layout::for_writer(4, &geometry()).unwrap();
        let good = FixedHeader::new(&l, &geometry(), 1, 0, 1);
        type Mutation = Box<dyn Fn(&mut FixedHeader)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("header_size", Box::new(|h| h.header_size = 512)),
            ("slot_header_size", Box::new(|h| h.slot_header_size = 32)),
            ("slot_count", Box::new(|h| h.slot_count = 0)),
            ("slot_count", Box::new(|h| h.slot_count = 5000)),
            ("slot_table_offset", Box::new(|h| h.slot_table_offset = 0)),
            ("data_offset", Box::new(|h| h.data_offset = 300)),
            ("slot_capacity", Box::new(|h| h.slot_capacity = 10)),
            ("slot_stride", Box::new(|h| h.slot_stride -= 64 * 100)),
            ("file_size", Box::new(|h| h.file_size += 4096)),
            ("generation", Box::new(|h| h.generation = 0)),
            (
                "generation",
                Box::new(|h| h.generation = MAX_GENERATION + 1),
            ),
        ];
        for (field, mutate) in cases {
            let mut h = good;
            mutate(&mut h);
            match Layout::from_header(&h) {
                Err(LayoutProblem::Field { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a field error, got {other:?}"),
            }
        }
        let mut huge = good;
        huge.slot_stride = u64::MAX - 63;
        assert_eq!(Layout::from_header(&huge), Err(LayoutProblem::Overflow));
    }
}
