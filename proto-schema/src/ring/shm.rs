//! The only module of the ring with `unsafe`: it turns a mapped ring file into typed
//! references (header atomics, slot headers) and byte slices (slot data).
//!
//! # Invariants
//!
//! - **M1 (mapping)**: a [`WriterMap`] / [`ReaderMap`] owns a `memmap2::MmapRaw` of the
//!   whole ring file, `MAP_SHARED`. Its base is page-aligned and stays mapped until the
//!   value is dropped. Nothing here ever shrinks the file; the ring format forbids it
//!   (a process with write access that truncates a live ring makes readers fault with
//!   SIGBUS, which is why rings are created `0640`, never writable by others).
//! - **M2 (bounds)**: the [`Layout`] stored beside the mapping was validated
//!   ([`Layout::for_writer`] or [`Layout::from_header`]) and `map.len() >= file_size`
//!   is checked at construction. Hence the 256-byte header, all `slots` slot headers
//!   (64-byte aligned, inside `data_offset`) and every slot's `slot_capacity` data bytes
//!   lie inside the mapping and never overlap each other. The reader's layout is its own
//!   copy, so later changes to the shared header cannot move its bounds.
//! - **M3 (atomics)**: the live header and slot headers are only ever accessed as
//!   `AtomicU32`/`AtomicU64`/`AtomicI64`, which have the size and alignment of the plain
//!   integers (asserted in `layout`), at 8-byte aligned offsets (M2). Through a
//!   [`ReaderMap`] (mapped `PROT_READ`) they are only *loaded*: plain atomic loads of
//!   native width are valid on read-only memory.
//! - **M4 (writer data)**: [`WriterMap::slot_data_mut`] hands out `&mut [u8]` for one
//!   slot, borrowed from `&mut self`, so within this mapping no other reference to those
//!   bytes exists while it lives. Readers, even in the same process, use their *own*
//!   mapping at a different address; from this process's point of view they observe the
//!   page the way another process would.
//! - **M5 (reader data)**: [`ReaderMap::slot_bytes`] hands a `&[u8]` of slot data to a
//!   closure while the writer (another mapping, usually another process) may be
//!   rewriting those bytes. The closure may therefore observe bytes that change under
//!   it, i.e. a torn frame. This is the seqlock contract: such bytes are only ever
//!   plain `u8` (every bit pattern valid), the closure must not rely on them being
//!   stable (e.g. never use one as an unchecked index), and the caller (`reader.rs`)
//!   re-validates the slot's seq after the closure and **discards its result** if the
//!   slot changed. A result is only returned when the seq was equal, even and non-zero
//!   before and after, so no byte the closure saw can belong to another frame.

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};

use super::layout::{FixedHeader, Layout, LiveHeader, SlotHeader, LIVE_HEADER_OFFSET};

/// Header bytes a reader copies before anything is validated.
pub(crate) const FIXED_HEADER_LEN: usize = std::mem::size_of::<FixedHeader>();

fn checked(map: &MmapRaw, layout: &Layout) -> io::Result<()> {
    let needed = usize::try_from(layout.file_size).unwrap_or(usize::MAX);
    let data_end = (layout.data_offset as u128)
        + (layout.slots as u128 - 1) * (layout.slot_stride as u128)
        + layout.slot_capacity as u128;
    let table_end = layout.slot_table_offset as u128
        + layout.slots as u128 * std::mem::size_of::<SlotHeader>() as u128;
    let consistent = layout.slots > 0
        && layout.slot_table_offset.is_multiple_of(8)
        && layout.slot_table_offset as usize >= LIVE_HEADER_OFFSET + 128
        && table_end <= layout.data_offset as u128
        && layout.slot_stride >= layout.slot_capacity
        && data_end <= layout.file_size as u128;
    if !consistent || map.len() < needed {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "mapping smaller than the ring layout or layout inconsistent",
        ));
    }
    Ok(())
}

/// The writer's read-write mapping of a ring file.
#[derive(Debug)]
pub(crate) struct WriterMap {
    map: MmapRaw,
    layout: Layout,
}

impl WriterMap {
    /// Maps `file` (opened read-write, already `layout.file_size` long) shared and
    /// pre-faulted, so the first publishes do not pay page faults.
    pub(crate) fn new(file: &File, layout: Layout) -> io::Result<WriterMap> {
        let map = MmapOptions::new()
            .len(usize::try_from(layout.file_size).map_err(io::Error::other)?)
            .populate()
            .map_raw(file)?;
        checked(&map, &layout)?;
        Ok(WriterMap { map, layout })
    }

    pub(crate) fn slots(&self) -> u32 {
        self.layout.slots
    }

    /// Stores the fixed header (bytes 0..128). Called before the file gets its name.
    pub(crate) fn write_fixed(&mut self, bytes: &[u8; FIXED_HEADER_LEN]) {
        // SAFETY: M1/M2: bytes 0..128 are inside the mapping; `&mut self` means no
        // reference into them exists in this process.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.as_mut_ptr(), bytes.len());
        }
    }

    pub(crate) fn live(&self) -> &LiveHeader {
        // SAFETY: M2/M3: 128..256 is inside the mapping, 8-aligned, and only accessed as
        // the atomics of LiveHeader; the reference lives no longer than the mapping.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(LIVE_HEADER_OFFSET)
                .cast::<LiveHeader>()
        }
    }

    pub(crate) fn slot(&self, slot: u32) -> &SlotHeader {
        assert!(slot < self.layout.slots, "slot index checked by caller");
        let offset = self.layout.slot_header_offset(slot);
        // SAFETY: M2/M3: the slot header is inside the slot table, 8-aligned, accessed
        // only atomically.
        unsafe { &*self.map.as_ptr().add(offset).cast::<SlotHeader>() }
    }

    /// All `slot_capacity` data bytes of `slot`.
    pub(crate) fn slot_data_mut(&mut self, slot: u32) -> &mut [u8] {
        assert!(slot < self.layout.slots, "slot index checked by caller");
        let offset = self.layout.slot_data_offset(slot);
        // SAFETY: M2: the range is inside the mapping and disjoint from every header;
        // M4: unique in this process for the lifetime of `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_mut_ptr().add(offset),
                self.layout.slot_capacity as usize,
            )
        }
    }
}

/// A reader's read-only mapping of a ring file whose header is not yet validated.
#[derive(Debug)]
pub(crate) struct UncheckedMap {
    map: MmapRaw,
}

impl UncheckedMap {
    /// Maps all `len` bytes of `file` read-only (`PROT_READ`, `MAP_SHARED`). The caller
    /// has checked `len >= FIXED_HEADER_LEN` on the open file.
    pub(crate) fn new(file: &File, len: u64) -> io::Result<UncheckedMap> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len < FIXED_HEADER_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too small"));
        }
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw_read_only(file)?;
        Ok(UncheckedMap { map })
    }

    /// A copy of bytes 0..128, for validation.
    pub(crate) fn fixed_header(&self) -> [u8; FIXED_HEADER_LEN] {
        // SAFETY: M1: the mapping is at least FIXED_HEADER_LEN bytes (checked in new).
        // Volatile because another process could (wrongly) change it; it is a copy
        // of plain bytes that is validated afterwards.
        unsafe { std::ptr::read_volatile(self.map.as_ptr().cast::<[u8; FIXED_HEADER_LEN]>()) }
    }

    /// Attaches a layout validated from [`UncheckedMap::fixed_header`].
    pub(crate) fn check(self, layout: Layout) -> io::Result<ReaderMap> {
        checked(&self.map, &layout)?;
        Ok(ReaderMap {
            map: self.map,
            layout,
        })
    }
}

/// A reader's read-only mapping with a validated layout.
#[derive(Debug)]
pub(crate) struct ReaderMap {
    map: MmapRaw,
    layout: Layout,
}

impl ReaderMap {
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    pub(crate) fn live(&self) -> &LiveHeader {
        // SAFETY: M2/M3 (loads only: nothing in reader.rs stores or RMWs through it —
        // the mapping is PROT_READ, a store would fault, which is a bug, not UB).
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(LIVE_HEADER_OFFSET)
                .cast::<LiveHeader>()
        }
    }

    pub(crate) fn slot(&self, slot: u32) -> &SlotHeader {
        assert!(slot < self.layout.slots, "slot index checked by caller");
        let offset = self.layout.slot_header_offset(slot);
        // SAFETY: M2/M3, loads only.
        unsafe { &*self.map.as_ptr().add(offset).cast::<SlotHeader>() }
    }

    /// The first `len` data bytes of `slot`, which may be modified concurrently (M5):
    /// only for use inside the seqlock read protocol of `reader.rs`.
    pub(crate) fn slot_bytes(&self, slot: u32, len: usize) -> &[u8] {
        assert!(slot < self.layout.slots, "slot index checked by caller");
        assert!(
            len as u64 <= self.layout.slot_capacity,
            "len clamped by caller"
        );
        let offset = self.layout.slot_data_offset(slot);
        // SAFETY: M2: inside the mapping. M5: the bytes may change concurrently; every
        // caller validates the slot seq afterwards and discards what it derived from
        // them when validation fails.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }
}

// The maps are plain memory regions; all shared state in them is accessed via atomics
// (M3) or under the seqlock protocol (M4/M5), so moving or sharing them across threads
// adds nothing a second process does not already do.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<WriterMap>();
    send_sync::<ReaderMap>();
    send_sync::<AtomicU64>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixel::{FrameGeometry, PixelFormat};
    use std::sync::atomic::Ordering;

    #[test]
    fn fixed_header_bytes_equal_repr_c_image() {
        let g = FrameGeometry::packed(64, 32, PixelFormat::I420).unwrap();
        let l = Layout::for_writer(3, &g).unwrap();
        let h = FixedHeader::new(&l, &g, 0x1234_5678_9abc_def0, 99, 4242);
        // SAFETY (test): FixedHeader is repr(C), Copy, and has no padding (size 128 is
        // asserted to equal the sum of its fields), so its bytes are all initialised.
        let image: [u8; 128] = unsafe { std::mem::transmute(h) };
        assert_eq!(image, h.to_bytes());
    }

    #[test]
    fn writer_and_reader_maps_share_bytes() {
        let g = FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap();
        let l = Layout::for_writer(2, &g).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(l.file_size).unwrap();
        let mut w = WriterMap::new(&file, l).unwrap();
        let h = FixedHeader::new(&l, &g, 7, 0, 1);
        w.write_fixed(&h.to_bytes());
        w.slot_data_mut(1)[..4].copy_from_slice(b"abcd");
        w.slot(1).seq.store(2, Ordering::Release);
        w.live().write_seq.store(5, Ordering::Release);

        let u = UncheckedMap::new(&file, l.file_size).unwrap();
        assert_eq!(FixedHeader::from_bytes(&u.fixed_header()), h);
        let r = u.check(l).unwrap();
        assert_eq!(r.slot_bytes(1, 4), b"abcd");
        assert_eq!(r.slot(1).seq.load(Ordering::Acquire), 2);
        assert_eq!(r.live().write_seq.load(Ordering::Acquire), 5);
    }

    #[test]
    fn check_rejects_a_mapping_shorter_than_the_layout() {
        let g = FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap();
        let l = Layout::for_writer(2, &g).unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(l.file_size - 4096).unwrap();
        let u = UncheckedMap::new(&file, l.file_size - 4096).unwrap();
        assert!(u.check(l).is_err());
    }
}
