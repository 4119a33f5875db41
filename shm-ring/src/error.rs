//! One error enum per ring operation: naming, creating (writer), opening (reader) and
//! reading a slot. Every variant carries the ring name or path it is about.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use proto_schema::pixel::GeometryError;

/// Why a ring name is refused: the one name rule of `proto_schema::name`.
pub use proto_schema::name::NameError as RingNameError;

/// Why [`super::RingWriterBuilder::create`] failed. Nothing is left behind on failure.
#[derive(Debug, thiserror::Error)]
pub enum RingCreateError {
    /// The ring name is invalid.
    #[error(transparent)]
    InvalidName(#[from] RingNameError),
    /// No geometry was given to the builder.
    #[error("ring {name}: no frame geometry set")]
    MissingGeometry {
        /// Ring name.
        name: String,
    },
    /// The geometry is inconsistent.
    #[error("ring {name}: invalid geometry: {source}")]
    InvalidGeometry {
        /// Ring name.
        name: String,
        /// What is wrong with it.
        source: GeometryError,
    },
    /// Slot count outside `2..=1024`.
    #[error("ring {name}: {slots} slots requested, allowed {min}..={max}")]
    InvalidSlotCount {
        /// Ring name.
        name: String,
        /// Requested count.
        slots: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// The file mode has bits outside `0o777` or lets group or others write (`0o022`),
    /// which readers refuse.
    #[error(
        "ring {name}: file mode {mode:#o} not allowed (permission bits only, not writable by \
         group or others)"
    )]
    InvalidMode {
        /// Ring name.
        name: String,
        /// Requested mode.
        mode: u32,
    },
    /// slots x frame size does not fit the address space.
    #[error("ring {name}: {slots} slots of {frame_size} bytes overflow the address space")]
    TooLarge {
        /// Ring name.
        name: String,
        /// Slot count.
        slots: u32,
        /// Bytes per frame.
        frame_size: u32,
    },
    /// Another live writer holds the ring's lock.
    #[error("ring {path}: already owned by a live writer (pid {pid:?})", path = path.display())]
    AlreadyOwned {
        /// Ring file path.
        path: PathBuf,
        /// The owner's pid from the ring header, when readable.
        pid: Option<u32>,
    },
    /// Something other than a regular file (a symlink, directory, ...) sits at the ring
    /// path; it is left alone.
    #[error("ring {path}: exists and is not a regular file", path = path.display())]
    NotARegularFile {
        /// Ring file path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("ring {path}: {op} failed: {source}", path = path.display())]
    Io {
        /// File the call was about.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Why [`super::RingReader::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RingOpenError {
    /// The ring name is invalid.
    #[error(transparent)]
    InvalidName(#[from] RingNameError),
    /// No ring file by that name.
    #[error("ring {path}: not found", path = path.display())]
    NotFound {
        /// Ring file path.
        path: PathBuf,
    },
    /// The path is a symbolic link; rings are never followed through links.
    #[error("ring {path}: is a symbolic link, refused", path = path.display())]
    Symlink {
        /// Ring file path.
        path: PathBuf,
    },
    /// The path is not a regular file.
    #[error("ring {path}: not a regular file", path = path.display())]
    NotARegularFile {
        /// Ring file path.
        path: PathBuf,
    },
    /// The file is shorter than the fixed header.
    #[error("ring {path}: {len} bytes, shorter than the {need}-byte header", path = path.display())]
    TooSmall {
        /// Ring file path.
        path: PathBuf,
        /// File length.
        len: u64,
        /// Minimum length.
        need: u64,
    },
    /// The first 8 bytes are not `FBUSRING`.
    #[error("ring {path}: bad magic {found:02x?}", path = path.display())]
    BadMagic {
        /// Ring file path.
        path: PathBuf,
        /// The bytes found.
        found: [u8; 8],
    },
    /// A layout version this reader does not understand.
    #[error(
        "ring {path}: layout version {found}, this reader supports {oldest}..={supported}",
        path = path.display(),
        oldest = super::layout::MIN_LAYOUT_VERSION
    )]
    UnsupportedVersion {
        /// Ring file path.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Newest version this code reads (it reads every version from
        /// [`super::layout::MIN_LAYOUT_VERSION`] up to this one).
        supported: u32,
    },
    /// A structural header field is inconsistent.
    #[error("ring {path}: corrupt header: {problem}", path = path.display())]
    BadHeader {
        /// Ring file path.
        path: PathBuf,
        /// Which field and why.
        problem: String,
    },
    /// The declared geometry is invalid.
    #[error("ring {path}: invalid geometry: {source}", path = path.display())]
    BadGeometry {
        /// Ring file path.
        path: PathBuf,
        /// What is wrong with it.
        source: GeometryError,
    },
    /// The file's length differs from the header's `file_size` (truncated or padded).
    #[error("ring {path}: header says {expected} bytes, file has {actual}", path = path.display())]
    SizeMismatch {
        /// Ring file path.
        path: PathBuf,
        /// `file_size` from the header.
        expected: u64,
        /// Real length.
        actual: u64,
    },
    /// Reading the file was not permitted.
    #[error("ring {path}: permission denied", path = path.display())]
    PermissionDenied {
        /// Ring file path.
        path: PathBuf,
    },
    /// The file is owned by a uid the reader does not trust (neither this process's
    /// effective uid, nor root, nor a uid or group allowed through
    /// [`super::RingTrust`]): another local user may have planted it to feed or
    /// truncate the reader.
    #[error(
        "ring {path}: owned by uid {owner} (group {group}), trusted owners are uids \
         {trusted:?}{}; refusing a ring another user could have created",
        groups_note(.trusted_gids),
        path = path.display()
    )]
    UntrustedOwner {
        /// Ring file path.
        path: PathBuf,
        /// The file's owner.
        owner: u32,
        /// The file's group.
        group: u32,
        /// The uids the reader trusts.
        trusted: Vec<u32>,
        /// The groups the reader trusts (empty unless allowed explicitly).
        trusted_gids: Vec<u32>,
    },
    /// The file is writable by its group or by others (`mode & 0o022 != 0`): someone
    /// besides the writer could rewrite or truncate it under the reader.
    #[error(
        "ring {path}: mode {mode:#o} is writable by group or others; rings must be 0640 or \
         tighter",
        path = path.display()
    )]
    WritableByOthers {
        /// Ring file path.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The header's live fields kept changing between reads of
    /// [`super::peek_header`] (a writer publishing faster than a few reads take).
    #[error("ring {path}: header changing too fast to read", path = path.display())]
    Unstable {
        /// Ring file path.
        path: PathBuf,
    },
    /// The file was truncated while it was being opened (after its size was checked);
    /// the truncation guard caught the fault.
    #[error("ring {path}: truncated while being opened", path = path.display())]
    Truncated {
        /// Ring file path.
        path: PathBuf,
    },
    /// This process already holds the most guarded ring mappings it can (see
    /// `docs/ring-format.md`, "Ownership and trust"); close a reader first.
    #[error("ring {path}: {max} ring mappings open in this process already", path = path.display())]
    TooManyMappings {
        /// Ring file path.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// Another system call failed.
    #[error("ring {path}: {op} failed: {source}", path = path.display())]
    Io {
        /// Ring file path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Why [`super::RingReader::read`] / [`super::RingReader::copy_into`] returned no frame.
/// None of these is a fault of the reader; the frame is simply not available any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The slot was overwritten, is being written, or was rewritten during the read;
    /// whatever the reader saw has been discarded.
    #[error("ring {ring}: slot {slot} stale (wanted seq {expected_seq}, found {found_seq})")]
    Stale {
        /// Ring name.
        ring: Arc<str>,
        /// Slot index.
        slot: u32,
        /// Seq the caller asked for.
        expected_seq: u64,
        /// Seq found in the slot (odd = being written).
        found_seq: u64,
    },
    /// The slot index is not below the ring's slot count.
    #[error("ring {ring}: slot {slot} out of range (ring has {slots} slots)")]
    SlotOutOfRange {
        /// Ring name.
        ring: Arc<str>,
        /// Requested slot.
        slot: u32,
        /// Slot count.
        slots: u32,
    },
    /// The requested seq is 0 or odd, so it can never name a published frame.
    #[error("ring {ring}: seq {seq} for slot {slot} never names a published frame")]
    InvalidSeq {
        /// Ring name.
        ring: Arc<str>,
        /// Requested slot.
        slot: u32,
        /// Requested seq.
        seq: u64,
    },
    /// Nothing was ever published into the slot.
    #[error("ring {ring}: slot {slot} never written")]
    Empty {
        /// Ring name.
        ring: Arc<str>,
        /// Slot index.
        slot: u32,
    },
    /// The writer closed the ring; its frames are no longer served.
    #[error("ring {ring}: writer closed the ring")]
    WriterGone {
        /// Ring name.
        ring: Arc<str>,
    },
    /// The ring file was truncated under this reader's mapping (by its owner or root:
    /// nobody else may write it). The mapping now reads zeros and never yields a frame
    /// again; drop the reader and reopen the ring later.
    #[error("ring {ring}: file truncated under the reader; reopen it")]
    Truncated {
        /// Ring name.
        ring: Arc<str>,
    },
    /// The slot header claims more bytes than the slot holds (a corrupt ring).
    #[error("ring {ring}: slot {slot} payload length {len} exceeds capacity {capacity}")]
    BadPayloadLength {
        /// Ring name.
        ring: Arc<str>,
        /// Slot index.
        slot: u32,
        /// Declared length.
        len: u64,
        /// Slot capacity.
        capacity: u64,
    },
}

/// `" and groups [..]"` when groups are trusted, else nothing (for
/// [`RingOpenError::UntrustedOwner`]).
fn groups_note(gids: &[u32]) -> String {
    if gids.is_empty() {
        String::new()
    } else {
        format!(" and groups {gids:?}")
    }
}
