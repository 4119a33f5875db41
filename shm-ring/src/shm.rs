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
//! - **M6 (truncation guard)**: every reader mapping ([`UncheckedMap`], then
//!   [`ReaderMap`]) is a [`GuardedMap`]: registered, with its page-rounded range, in the
//!   fixed-size lock-free [`REGISTRY`] *before* any byte of it is read, and unregistered
//!   *before* it is unmapped. A process-wide SIGBUS handler, installed once before the
//!   first registration, handles a fault (kernel-generated `si_code > 0`) whose `si_addr`
//!   lies inside a registered range by setting that entry's `truncated` flag and then
//!   mapping anonymous zero pages over the whole range (`mmap(MAP_FIXED | MAP_PRIVATE |
//!   MAP_ANONYMOUS, PROT_READ)`), then returning: the faulting load is retried and reads
//!   0. The handler uses only atomics, `mmap`, `sigaction` and `raise` (async-signal-safe
//!   on Linux) and saves/restores `errno`. A fault outside every registered range goes
//!   to the handler that was installed before ours (Rust's own stack-overflow handler,
//!   usually); if there was none, the default action is restored and the fault repeats,
//!   so the process dies exactly as it would have without us. Because the zero pages
//!   replace the *whole* range at once (one `mmap` under the kernel's mmap lock), every
//!   seqlock check (M5) that saw any replaced byte also sees a replaced seq (0), so a
//!   truncated ring never yields a frame; `reader.rs` additionally checks the flag after
//!   every header or slot read and reports `ReadError::Truncated`. A mapping cannot be
//!   dropped while a thread reads it (it is borrowed), so a registered range never
//!   names memory that another object reuses.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

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

/// Most reader mappings one process can hold at once (M6). Opening one more fails with
/// a typed error instead of mapping a ring without the truncation guard.
pub(crate) const MAX_GUARDED_MAPPINGS: usize = 4096;

/// Tags in the low two bits of [`Entry::state`]; the bits above count registrations,
/// so a handler that reads an entry while it is being reused notices (seqlock-like).
const TAG_MASK: u64 = 0b11;
const FREE: u64 = 0;
const BUSY: u64 = 1;
const ACTIVE: u64 = 2;

/// One guarded mapping. Read by the SIGBUS handler with atomic loads only.
struct Entry {
    state: AtomicU64,
    start: AtomicUsize,
    len: AtomicUsize,
    truncated: AtomicBool,
}

/// The registry of guarded reader mappings (M6). A fixed array, so the signal handler
/// never allocates, locks or follows a pointer that could be freed.
static REGISTRY: [Entry; MAX_GUARDED_MAPPINGS] = [const {
    Entry {
        state: AtomicU64::new(FREE),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        truncated: AtomicBool::new(false),
    }
}; MAX_GUARDED_MAPPINGS];

/// The SIGBUS disposition found when the guard was installed (`sa_sigaction` and
/// `sa_flags`), for faults that are not ours.
static PREVIOUS_ACTION: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_FLAGS: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// Why a reader mapping could not be made.
#[derive(Debug)]
pub(crate) enum MapError {
    /// `mmap` or installing the SIGBUS handler failed.
    Io(io::Error),
    /// [`MAX_GUARDED_MAPPINGS`] reader mappings are open already.
    RegistryFull,
}

impl From<io::Error> for MapError {
    fn from(e: io::Error) -> MapError {
        MapError::Io(e)
    }
}

fn register(start: usize, len: usize) -> Option<usize> {
    for (index, e) in REGISTRY.iter().enumerate() {
        let s = e.state.load(Ordering::Relaxed);
        if s & TAG_MASK != FREE
            || e.state
                .compare_exchange(
                    s,
                    (s & !TAG_MASK) | BUSY,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            continue;
        }
        e.start.store(start, Ordering::Relaxed);
        e.len.store(len, Ordering::Relaxed);
        e.truncated.store(false, Ordering::Relaxed);
        let generation = (s >> 2).wrapping_add(1);
        e.state.store((generation << 2) | ACTIVE, Ordering::Release);
        return Some(index);
    }
    None
}

fn unregister(index: usize) {
    let e = &REGISTRY[index];
    let s = e.state.load(Ordering::Relaxed);
    e.state.store((s & !TAG_MASK) | FREE, Ordering::Release);
}

/// The registered mapping containing `addr`: `(index, start, len)`. Atomics only.
fn find(addr: usize) -> Option<(usize, usize, usize)> {
    for (index, e) in REGISTRY.iter().enumerate() {
        let before = e.state.load(Ordering::Acquire);
        if before & TAG_MASK != ACTIVE {
            continue;
        }
        let start = e.start.load(Ordering::Relaxed);
        let len = e.len.load(Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Acquire);
        if e.state.load(Ordering::Relaxed) != before {
            continue;
        }
        if addr >= start && addr - start < len {
            return Some((index, start, len));
        }
    }
    None
}

/// The process-wide SIGBUS handler (M6).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; __errno_location always returns a valid pointer.
    let saved_errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; si_addr is
    // the faulting address for the fault codes (si_code > 0) this handler acts on.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    let fault = code > 0;
    if fault {
        if let Some((index, start, len)) = find(addr) {
            // Flag first: any reader that sees a zero page also sees the flag.
            REGISTRY[index].truncated.store(true, Ordering::SeqCst);
            // SAFETY: [start, start + len) is a reader mapping registered by a live
            // GuardedMap (M6: it is unregistered before it is unmapped); replacing its
            // pages with read-only zero pages keeps every reference into it valid
            // (same address, same length, readable, plain bytes and atomics).
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                // SAFETY: as above.
                unsafe { *libc::__errno_location() = saved_errno };
                return;
            }
        }
    }
    forward(sig, info, ctx, fault);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Hands a SIGBUS that is not ours to the previous disposition.
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void, fault: bool) {
    let action = PREVIOUS_ACTION.load(Ordering::Relaxed);
    let flags = PREVIOUS_FLAGS.load(Ordering::Relaxed) as libc::c_int;
    if action == libc::SIG_IGN && !fault {
        return; // an ignored kill(SIGBUS) stays ignored
    }
    if action != libc::SIG_DFL && action != libc::SIG_IGN {
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: `action` is the sa_sigaction of a handler installed with
            // SA_SIGINFO, so it has this signature; the arguments are the kernel's.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(action) };
            f(sig, info, ctx);
        } else {
            // SAFETY: a handler installed without SA_SIGINFO takes the signal number.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(action) };
            f(sig);
        }
        return;
    }
    // Default action: restore it. A fault repeats when this handler returns and kills
    // the process as it would have; a sent signal is raised again (delivered once the
    // handler returns and unblocks it).
    // SAFETY: a zeroed sigaction with SIG_DFL is a valid argument; sigaction and raise
    // are async-signal-safe.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
        if !fault {
            libc::raise(sig);
        }
    }
}

fn install_guard() -> io::Result<()> {
    INSTALL.call_once(|| {
        // SAFETY: plain sigaction calls with valid, initialised structs.
        let result = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
            } else {
                PREVIOUS_ACTION.store(old.sa_sigaction, Ordering::Relaxed);
                PREVIOUS_FLAGS.store(old.sa_flags as usize, Ordering::Relaxed);
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigbus as *const () as usize;
                // SA_ONSTACK: use the thread's alternate stack when it has one (Rust
                // threads do), so a fault near the stack limit can still be handled.
                // No SA_NODEFER: a fault inside the handler itself must kill, not recurse.
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                if libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) != 0 {
                    Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
                } else {
                    Ok(())
                }
            }
        };
        let _ = INSTALLED.set(result);
    });
    match INSTALLED.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(code)) => Err(io::Error::from_raw_os_error(*code)),
        None => Err(io::Error::other("SIGBUS guard not installed")),
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A read-only mapping registered with the SIGBUS guard (M6) for its whole life.
#[derive(Debug)]
struct GuardedMap {
    /// Unmapped when the fields drop, after `Drop for GuardedMap` unregistered it.
    map: MmapRaw,
    entry: usize,
}

impl GuardedMap {
    fn new(map: MmapRaw) -> Result<GuardedMap, MapError> {
        install_guard()?;
        let page = page_size();
        let len = map.len().div_ceil(page) * page;
        let entry = register(map.as_ptr() as usize, len).ok_or(MapError::RegistryFull)?;
        Ok(GuardedMap { map, entry })
    }

    fn truncated(&self) -> bool {
        REGISTRY[self.entry].truncated.load(Ordering::SeqCst)
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        unregister(self.entry);
    }
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
    map: GuardedMap,
}

impl UncheckedMap {
    /// Maps all `len` bytes of `file` read-only (`PROT_READ`, `MAP_SHARED`) and
    /// registers the mapping with the truncation guard (M6). The caller has checked
    /// `len >= FIXED_HEADER_LEN` on the open file.
    pub(crate) fn new(file: &File, len: u64) -> Result<UncheckedMap, MapError> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len < FIXED_HEADER_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too small").into());
        }
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw_read_only(file)?;
        Ok(UncheckedMap {
            map: GuardedMap::new(map)?,
        })
    }

    /// A copy of bytes 0..128, for validation.
    pub(crate) fn fixed_header(&self) -> [u8; FIXED_HEADER_LEN] {
        // SAFETY: M1: the mapping is at least FIXED_HEADER_LEN bytes (checked in new).
        // Volatile because another process could (wrongly) change it; it is a copy
        // of plain bytes that is validated afterwards. M6: a truncated file reads zeros.
        unsafe { std::ptr::read_volatile(self.map.map.as_ptr().cast::<[u8; FIXED_HEADER_LEN]>()) }
    }

    /// Whether the file was found truncated under this mapping (M6).
    pub(crate) fn truncated(&self) -> bool {
        self.map.truncated()
    }

    /// Attaches a layout validated from [`UncheckedMap::fixed_header`].
    pub(crate) fn check(self, layout: Layout) -> io::Result<ReaderMap> {
        checked(&self.map.map, &layout)?;
        Ok(ReaderMap {
            map: self.map,
            layout,
        })
    }
}

/// A reader's read-only mapping with a validated layout.
#[derive(Debug)]
pub(crate) struct ReaderMap {
    map: GuardedMap,
    layout: Layout,
}

impl ReaderMap {
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether the file was truncated under this mapping, which now reads zeros (M6).
    /// Checked by `reader.rs` after every header or slot read.
    pub(crate) fn truncated(&self) -> bool {
        self.map.truncated()
    }

    fn base(&self) -> *const u8 {
        self.map.map.as_ptr()
    }

    pub(crate) fn live(&self) -> &LiveHeader {
        // SAFETY: M2/M3 (loads only: nothing in reader.rs stores or RMWs through it —
        // the mapping is PROT_READ, a store would fault, which is a bug, not UB).
        // M6: if the file is truncated the range stays mapped (zero pages).
        unsafe { &*self.base().add(LIVE_HEADER_OFFSET).cast::<LiveHeader>() }
    }

    pub(crate) fn slot(&self, slot: u32) -> &SlotHeader {
        assert!(slot < self.layout.slots, "slot index checked by caller");
        let offset = self.layout.slot_header_offset(slot);
        // SAFETY: M2/M3, loads only; M6.
        unsafe { &*self.base().add(offset).cast::<SlotHeader>() }
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
        // them when validation fails. M6: they may turn into zeros on truncation.
        unsafe { std::slice::from_raw_parts(self.base().add(offset), len) }
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
    use proto_schema::pixel::{FrameGeometry, PixelFormat};
    use std::sync::atomic::Ordering;

    #[test]
    fn fixed_header_bytes_equal_repr_c_image() {
        let g = FrameGeometry::packed(64, 32, PixelFormat::I420).unwrap();
        let l = Layout::for_writer(3, &g).unwrap();
        let h = FixedHeader::new(&l, &g, 0x1234_5678_9abc_def0, 99, 4242);
        // SAFETY: FixedHeader is repr(C), Copy, and has no padding (size 128 is
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

    fn mapped_ring() -> (tempfile::NamedTempFile, Layout, WriterMap) {
        let g = FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap();
        let l = Layout::for_writer(2, &g).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(l.file_size).unwrap();
        let mut w = WriterMap::new(file.as_file(), l).unwrap();
        w.write_fixed(&FixedHeader::new(&l, &g, 7, 0, 1).to_bytes());
        w.live().notify.store(9, Ordering::Release);
        w.slot_data_mut(1).fill(0xAB);
        (file, l, w)
    }

    /// M6: a fault on a truncated reader mapping is absorbed (zeros, flag set), the
    /// futex on a truncated page reports EFAULT as `Wake::Fault`, and the registry
    /// entry is released on drop.
    #[test]
    fn truncation_guard_maps_zeros_and_sets_the_flag() {
        let (file, l, w) = mapped_ring();
        let r = UncheckedMap::new(file.as_file(), l.file_size)
            .unwrap()
            .check(l)
            .unwrap();
        assert!(!r.truncated());
        assert_eq!(r.slot_bytes(1, 4), [0xAB; 4]);
        assert_eq!(r.live().notify.load(Ordering::Acquire), 9);
        file.as_file().set_len(0).unwrap();
        // The kernel cannot fault the futex page in: EFAULT, not a signal.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        assert_eq!(
            crate::notify::wait_while(&r.live().notify, 9, deadline),
            crate::notify::Wake::Fault
        );
        assert!(!r.truncated(), "no user-space access yet");
        // This load faults (SIGBUS); the guard maps zeros over the whole range.
        assert_eq!(r.slot_bytes(1, 4), [0; 4]);
        assert!(r.truncated());
        assert_eq!(r.live().notify.load(Ordering::Acquire), 0);
        assert_eq!(r.slot(0).seq.load(Ordering::Acquire), 0);
        let entry = r.map.entry;
        drop(r);
        assert_eq!(
            REGISTRY[entry].state.load(Ordering::Acquire) & TAG_MASK,
            FREE
        );
        // The writer's mapping is not guarded; leak it rather than touch its dead pages.
        std::mem::forget(w);
    }

    #[test]
    fn registry_reuses_entries_and_finds_ranges() {
        // Kernel-half addresses: no user mapping can ever fault there, so these fake
        // entries cannot catch a real fault of a test running beside this one.
        let (x, y) = (0xffff_f000_0000_0000_usize, 0xffff_f100_0000_0000_usize);
        let a = register(x, 0x2000).unwrap();
        let b = register(y, 0x1000).unwrap();
        assert_ne!(a, b);
        assert_eq!(find(x + 0x1fff), Some((a, x, 0x2000)));
        assert_eq!(find(x + 0x2000), None);
        assert_eq!(find(y), Some((b, y, 0x1000)));
        unregister(a);
        assert_eq!(find(x), None);
        unregister(b);
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
