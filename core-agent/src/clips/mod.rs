//! Event clips with pre-roll: `clips/<camera>/<YYYY-MM-DD>/<event-id>.mp4`, remuxed
//! (no re-encode) from the packets the camera's frame kernel keeps in segment files
//! (`frame-kernel --clip-dir`, format `proto_schema::segment`).
//!
//! - [`Clips::claim`] runs in the analytics stage when an event is created: if the
//!   camera records clips of that event type, the event gets its `clip` path at once.
//!   An event of a track whose clip is still being recorded extends that clip
//!   (`post_roll_s` after the new event, at most `max_clip_s` in all) and carries its
//!   path; otherwise a new clip starts. At most `max_active` clips per camera are
//!   recorded at once; an event beyond that gets no clip and is counted.
//! - One recorder thread ([`Recorder`]) writes every clip: from the keyframe at or
//!   before `event - pre_roll_s` to the first packet decoded after the clip's end, on
//!   the capture clock (so a file loop or a kernel restart in the middle only shows as
//!   a jump in the picture, never as timestamps going back). A clip is written to a
//!   hidden `.<id>.mp4.part` (0640) and renamed when complete, so
//!   `GET /events/{id}/clip.mp4` never serves half a file. It polls the segments every
//!   [`POLL`], so a clip is finished about one frame plus one poll after its end.
//! - A clip whose camera sends nothing ends [`GIVE_UP`] after its end, with what it
//!   has. Errors (disk full, a write error, no footage) never stop anything else: they
//!   are counted per camera in `/metrics` and the last one is shown in `/health`.
//!   A clip that fails is whole or absent: its `.part` is removed. One that failed for
//!   its output (disk full, an I/O error; not missing footage) also marks the clips
//!   sink degraded in `/health` and is counted in `framebus_sink_dropped_total`, until
//!   the next clip is written or the folder has space again (see [`crate::sinks`]).
//! - Retention ([`retention`]) runs after every clip and every minute.

pub mod cursor;
pub mod http;
pub mod mux;
pub mod retention;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use proto_schema::segment::SegmentHeader;
use serde::Serialize;

use crate::analytics::events::Event;
use crate::config::clips::ClipsSettings;
use crate::sinks::{LossReason, SinkHandle, SinkHealth, SinkKind};
use cursor::{Cursor, TimedPacket};
use mux::{Mp4Writer, MuxError};

/// How often the recorder looks for new packets.
pub const POLL: Duration = Duration::from_millis(50);
/// A clip whose camera sends nothing ends this long after its end.
pub const GIVE_UP: Duration = Duration::from_secs(10);
/// Finished clips remembered for `GET /events/{id}/clip.mp4` (older ones are found
/// on disk).
pub const REMEMBERED: usize = 4096;
/// Packets held before a clip's start is reached (one GOP at most; cleared at every
/// keyframe before the start).
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// Mode of clip files.
pub const FILE_MODE: u32 = 0o640;
/// Mode of clip folders.
pub const DIR_MODE: u32 = 0o750;
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Why a clip failed.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// A folder or the clip file could not be created.
    #[error("camera {camera}: {path}: {source}")]
    Create {
        /// Camera id.
        camera: String,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Muxing failed (disk full, I/O error, unsupported codec).
    #[error("camera {camera}: {source}")]
    Mux {
        /// Camera id.
        camera: String,
        /// The muxer's error.
        source: MuxError,
    },
    /// The segments could not be read.
    #[error("camera {camera}: {source}")]
    Read {
        /// Camera id.
        camera: String,
        /// The cursor's error.
        source: cursor::CursorError,
    },
    /// The finished clip could not be renamed into place.
    #[error("camera {camera}: cannot move {path} into place: {source}")]
    Rename {
        /// Camera id.
        camera: String,
        /// The final path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Nothing of the clip's interval was kept (the kernel keeps no packets, or its
    /// camera was down all along).
    #[error("camera {camera}: clip {id}: no footage kept for its interval")]
    NoFootage {
        /// Camera id.
        camera: String,
        /// Event id.
        id: String,
    },
}

impl ClipError {
    /// Why the clip file could not be written (disk full, an I/O error), or `None`
    /// when the failure is not the output's (no footage, unreadable segments, a codec
    /// a clip does not carry).
    pub fn write_failure(&self) -> Option<LossReason> {
        match self {
            ClipError::Create { source, .. } | ClipError::Rename { source, .. } => {
                Some(LossReason::of(source))
            }
            ClipError::Mux {
                source:
                    MuxError::Open { error, .. }
                    | MuxError::Write { error, .. }
                    | MuxError::Finish { error, .. },
                ..
            } => Some(match error {
                ffmpeg_next::Error::Other { errno } => LossReason::of_errno(Some(*errno)),
                _ => LossReason::Io,
            }),
            ClipError::Mux {
                source: MuxError::Codec { .. },
                ..
            }
            | ClipError::Read { .. }
            | ClipError::NoFootage { .. } => None,
        }
    }

    fn camera(&self) -> &str {
        match self {
            ClipError::Create { camera, .. }
            | ClipError::Mux { camera, .. }
            | ClipError::Read { camera, .. }
            | ClipError::Rename { camera, .. }
            | ClipError::NoFootage { camera, .. } => camera,
        }
    }
}

/// Where a clip stands, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipState {
    /// Being recorded.
    Recording,
    /// Written: this file.
    Ready(PathBuf),
    /// Failed, or unknown.
    Missing,
}

#[derive(Debug, Clone)]
struct Active {
    camera: String,
    track: u64,
    rel: String,
    start_ns: u64,
    end_ns: u64,
    hard_end_ns: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Clips being recorded, by event id (the first event of the clip).
    active: HashMap<String, Active>,
    /// Event ids that joined an active clip: their clip's id.
    joined: HashMap<String, String>,
    /// Clips claimed but not yet picked up by the recorder.
    new: VecDeque<String>,
    /// Finished clips by every event id they carry: the relative path.
    finished: HashMap<String, String>,
    finished_order: VecDeque<String>,
    /// Errors per camera, and the last one (camera, message, Unix ms).
    errors: BTreeMap<String, u64>,
    last_error: Option<(String, String, u64)>,
}

/// Counters and the last error, for `/metrics` and `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct ClipsHealth {
    /// Clips written.
    pub written: u64,
    /// Clips being recorded.
    pub recording: usize,
    /// Events refused a clip (too many at once).
    pub refused: u64,
    /// Failed clips per camera.
    pub errors: BTreeMap<String, u64>,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// How long after its end (the post-roll's end on the capture clock) each written
    /// clip was finished and readable, ms (0 when it was readable at its end already).
    pub finish_delay_ms: FinishDelay,
}

/// Finish delays of the written clips (see [`ClipsHealth::finish_delay_ms`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FinishDelay {
    /// Clips measured.
    pub count: u64,
    /// The last clip's delay, ms.
    pub last: f64,
    /// The largest delay, ms.
    pub max: f64,
    /// The mean delay, ms.
    pub mean: f64,
}

/// Running finish-delay totals.
#[derive(Debug, Default)]
struct DelayTotals {
    count: u64,
    sum_ns: u64,
    max_ns: u64,
    last_ns: u64,
}

impl DelayTotals {
    fn add(&mut self, ns: u64) {
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        self.last_ns = ns;
    }

    fn report(&self) -> FinishDelay {
        let ms = |ns: u64| ns as f64 / 1e6;
        FinishDelay {
            count: self.count,
            last: ms(self.last_ns),
            max: ms(self.max_ns),
            mean: if self.count == 0 {
                0.0
            } else {
                ms(self.sum_ns) / self.count as f64
            },
        }
    }
}

/// The clips of every camera: claims from the analytics stage, state for the API.
#[derive(Debug)]
pub struct Clips {
    settings: ClipsSettings,
    state: Mutex<State>,
    wake: Condvar,
    stop: AtomicBool,
    written: AtomicU64,
    refused: AtomicU64,
    delays: Mutex<DelayTotals>,
    unix_ns: fn() -> u64,
    /// The clips as a sink: a clip that cannot be written (disk full) degrades
    /// `/health` until the next one is (see [`crate::sinks`]).
    health: SinkHandle,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Capture time of an event, Unix ns (the ring stamps Unix time; an older writer's
/// monotonic stamp falls back to the Unix ms).
fn event_unix_ns(e: &Event) -> u64 {
    if e.capture_ts_ns >= 1_000_000_000_000_000_000 {
        e.capture_ts_ns
    } else {
        e.capture_unix_ms.saturating_mul(1_000_000)
    }
}

fn secs_ns(s: f64) -> u64 {
    (s * 1e9).round().max(0.0) as u64
}

/// Whether `path` (under `root`) is a regular file reached through real folders only:
/// no component between `root` and the file, the file included, is a symlink.
pub fn real_clip(root: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    let mut parts = rel.components().peekable();
    while let Some(c) = parts.next() {
        if !matches!(c, std::path::Component::Normal(_)) {
            return false;
        }
        at.push(c);
        let Ok(m) = std::fs::symlink_metadata(&at) else {
            return false;
        };
        let want = if parts.peek().is_some() {
            m.file_type().is_dir()
        } else {
            m.file_type().is_file()
        };
        if !want {
            return false;
        }
    }
    true
}

/// Opens the clip at `path` for reading without following a symlink at its last
/// component (`O_NOFOLLOW`; [`real_clip`] checked the folders), and checks that what
/// was opened is a regular file.
pub fn open_clip(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Whether `id` may name an event's clip: the event id alphabet only (hex, digits,
/// `-`), so it can never be a path.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
}

impl Clips {
    /// Clips under `settings`; `None` when no camera records clips. Creates the clips
    /// and buffer folders (0750). Reports to `health` as `clips:<dir>`.
    pub fn new(
        settings: ClipsSettings,
        health: &SinkHealth,
    ) -> Result<Option<Arc<Self>>, ClipError> {
        if !settings.any() {
            return Ok(None);
        }
        let h = health.register(SinkKind::Clips, format!("clips:{}", settings.dir.display()));
        Self::build(settings, || crate::clock::UnixNanos::now().get(), h)
    }

    /// [`Clips::new`] on a given Unix clock, reporting to no register.
    pub fn with_clock(
        settings: ClipsSettings,
        unix_ns: fn() -> u64,
    ) -> Result<Option<Arc<Self>>, ClipError> {
        let h = SinkHandle::detached(SinkKind::Clips, format!("clips:{}", settings.dir.display()));
        Self::build(settings, unix_ns, h)
    }

    fn build(
        settings: ClipsSettings,
        unix_ns: fn() -> u64,
        health: SinkHandle,
    ) -> Result<Option<Arc<Self>>, ClipError> {
        if !settings.any() {
            return Ok(None);
        }
        for dir in [
            settings.dir.clone(),
            settings.dir.join(crate::config::clips::BUFFER_DIR),
        ] {
            shm_ring::owned_dir::ensure_owned_dir(&dir).map_err(|e| ClipError::Create {
                camera: "*".into(),
                path: dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        Ok(Some(Arc::new(Clips {
            settings,
            state: Mutex::default(),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            written: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            delays: Mutex::default(),
            unix_ns,
            health,
        })))
    }

    /// The settings.
    pub fn settings(&self) -> &ClipsSettings {
        &self.settings
    }

    /// Gives `event` its clip if its camera records clips of its type (see the module
    /// docs).
    pub fn claim(&self, event: &mut Event) {
        let s = &self.settings;
        if !s.enabled_for(&event.camera) || !s.types.contains(&event.kind) {
            return;
        }
        let at = event_unix_ns(event);
        let end = at.saturating_add(secs_ns(s.post_roll_s));
        let mut st = lock(&self.state);
        let running = st
            .active
            .iter_mut()
            .find(|(_, a)| a.camera == event.camera && a.track == event.track && a.end_ns >= at);
        if let Some((id, a)) = running {
            a.end_ns = a.end_ns.max(end).min(a.hard_end_ns);
            event.clip = Some(a.rel.clone());
            let id = id.clone();
            st.joined.insert(event.id.clone(), id);
            return;
        }
        let camera_active = st
            .active
            .values()
            .filter(|a| a.camera == event.camera)
            .count();
        if camera_active >= s.max_active || !valid_id(&event.id) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start_ns = at.saturating_sub(secs_ns(s.pre_roll_s));
        let date = crate::analytics::counts::utc_date(at / 1_000_000);
        let rel = format!("{}/{date}/{}.mp4", event.camera, event.id);
        st.active.insert(
            event.id.clone(),
            Active {
                camera: event.camera.clone(),
                track: event.track,
                rel: rel.clone(),
                start_ns,
                end_ns: end,
                hard_end_ns: start_ns.saturating_add(secs_ns(s.max_clip_s)),
            },
        );
        st.new.push_back(event.id.clone());
        drop(st);
        event.clip = Some(rel);
        self.wake.notify_all();
    }

    /// Where the clip of event `id` stands.
    pub fn state_of(&self, id: &str) -> ClipState {
        if !valid_id(id) {
            return ClipState::Missing;
        }
        let st = lock(&self.state);
        let owner = st.joined.get(id).map_or(id, String::as_str);
        if st.active.contains_key(owner) {
            return ClipState::Recording;
        }
        if let Some(rel) = st.finished.get(id) {
            let p = self.settings.dir.join(rel);
            return if real_clip(&self.settings.dir, &p) {
                ClipState::Ready(p)
            } else {
                ClipState::Missing
            };
        }
        drop(st);
        // Not remembered (older, or from before a restart): `<camera>/<date>/<id>.mp4`.
        self.find_on_disk(id)
            .map_or(ClipState::Missing, ClipState::Ready)
    }

    fn find_on_disk(&self, id: &str) -> Option<PathBuf> {
        let name = format!("{id}.mp4");
        for cam in std::fs::read_dir(&self.settings.dir).ok()?.flatten() {
            // Real folders only: a symlink planted in the tree is never followed.
            if cam.file_name().to_string_lossy().starts_with('.')
                || !cam.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            for day in std::fs::read_dir(cam.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let p = day.path().join(&name);
                if day.file_type().is_ok_and(|t| t.is_dir()) && real_clip(&self.settings.dir, &p) {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Counters and the last error.
    pub fn health(&self) -> ClipsHealth {
        let st = lock(&self.state);
        ClipsHealth {
            written: self.written.load(Ordering::Relaxed),
            recording: st.active.len(),
            refused: self.refused.load(Ordering::Relaxed),
            errors: st.errors.clone(),
            last_error: st
                .last_error
                .as_ref()
                .map(|(_, m, at)| format!("{m} (at {})", crate::analytics::counts::utc_time(*at))),
            finish_delay_ms: lock(&self.delays).report(),
        }
    }

    /// Appends the clip families to a Prometheus text exposition.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let h = self.health();
        let _ = writeln!(
            out,
            "# HELP framebus_clips_written_total Event clips written.\n# TYPE framebus_clips_written_total counter\nframebus_clips_written_total {}",
            h.written
        );
        let _ = writeln!(
            out,
            "# HELP framebus_clips_recording Event clips being recorded.\n# TYPE framebus_clips_recording gauge\nframebus_clips_recording {}",
            h.recording
        );
        let _ = writeln!(
            out,
            "# HELP framebus_clips_refused_total Events that got no clip (max_active clips already recording).\n# TYPE framebus_clips_refused_total counter\nframebus_clips_refused_total {}",
            h.refused
        );
        let _ = writeln!(
            out,
            "# HELP framebus_clip_errors_total Event clips that failed (write error, disk full, no footage).\n# TYPE framebus_clip_errors_total counter"
        );
        for (cam, n) in &h.errors {
            let cam = cam.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "framebus_clip_errors_total{{camera=\"{cam}\"}} {n}");
        }
        let d = lock(&self.delays);
        let _ = writeln!(
            out,
            "# HELP framebus_clip_finish_delay_seconds Time from a clip's end (post-roll end, capture clock) to the clip finished and readable.\n# TYPE framebus_clip_finish_delay_seconds summary\nframebus_clip_finish_delay_seconds_sum {}\nframebus_clip_finish_delay_seconds_count {}",
            d.sum_ns as f64 / 1e9,
            d.count
        );
        let _ = writeln!(
            out,
            "# HELP framebus_clip_finish_delay_max_seconds Largest clip finish delay.\n# TYPE framebus_clip_finish_delay_max_seconds gauge\nframebus_clip_finish_delay_max_seconds {}",
            d.max_ns as f64 / 1e9
        );
    }

    /// Asks the recorder to finish every clip with what it has and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    fn finished(&self, ids: &[String], result: &Result<PathBuf, ClipError>, owner: &str) {
        let mut st = lock(&self.state);
        let active = st.active.remove(owner);
        let joined: Vec<String> = st
            .joined
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(e, _)| e.clone())
            .collect();
        for e in &joined {
            st.joined.remove(e);
        }
        match result {
            Ok(_) => {
                self.health.wrote(1);
                self.written.fetch_add(1, Ordering::Relaxed);
                if let Some(a) = active {
                    for id in ids.iter().chain(&joined) {
                        st.finished.insert(id.clone(), a.rel.clone());
                        st.finished_order.push_back(id.clone());
                    }
                }
                while st.finished_order.len() > REMEMBERED {
                    if let Some(old) = st.finished_order.pop_front() {
                        st.finished.remove(&old);
                    }
                }
            }
            Err(e) => {
                if let Some(reason) = e.write_failure() {
                    self.health.failed(0, 1, reason, &e.to_string());
                }
                *st.errors.entry(e.camera().to_owned()).or_insert(0) += 1;
                st.last_error = Some((
                    e.camera().to_owned(),
                    e.to_string(),
                    (self.unix_ns)() / 1_000_000,
                ));
            }
        }
    }
}

/// One clip being written.
struct Job {
    id: String,
    camera: String,
    part: PathBuf,
    path: PathBuf,
    start_ns: u64,
    cursor: Cursor,
    header: Option<Arc<SegmentHeader>>,
    mux: Option<Mp4Writer>,
    pending: Vec<TimedPacket>,
    pending_bytes: usize,
    started: bool,
    t0: i64,
    last_dts: Option<i64>,
    /// Largest pts written so far, and the shift added to every packet since a keyframe
    /// came at or before it: a restarted kernel stamps its first frames with capture
    /// times that can fall among the previous run's reordered (B) frames, and two frames
    /// of one presentation time would not decode cleanly.
    max_pts: Option<i64>,
    shift: i64,
    /// `max_pts` when the latest keyframe came: a later non-key packet presented at or
    /// before it is a leading frame of a run that started among frames already written.
    run_floor: Option<i64>,
    written: u64,
}

/// A packet's (dts, pts) in the clip, after `shift`: a keyframe at or before the
/// largest pts written (`max_pts`) starts a new run one frame after it, and the shift
/// that takes carries over to the packets that follow.
fn next_stamps(
    dts: i64,
    pts: i64,
    key: bool,
    duration: i64,
    shift: &mut i64,
    max_pts: Option<i64>,
) -> (i64, i64) {
    let (mut dts, mut pts) = (dts + *shift, pts + *shift);
    if let Some(max) = max_pts.filter(|&m| key && pts <= m) {
        let step = max + duration.max(1) - pts;
        *shift += step;
        dts += step;
        pts += step;
    }
    (dts, pts)
}

/// Whether a non-key packet presented at `pts` comes at or before `run_floor`, the
/// largest presentation time written before the latest keyframe.
fn leading_of_earlier_time(pts: i64, run_floor: Option<i64>) -> bool {
    run_floor.is_some_and(|floor| pts <= floor)
}

enum Step {
    Running,
    Done,
}

impl Job {
    fn new(root: &Path, a: &Active, id: &str, settings: &ClipsSettings) -> Result<Job, ClipError> {
        let path = root.join(&a.rel);
        let create = |path: &Path, source| ClipError::Create {
            camera: a.camera.clone(),
            path: path.to_path_buf(),
            source,
        };
        let day = path.parent().unwrap_or(root);
        for dir in [day.parent().unwrap_or(root), day] {
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
                Ok(()) => {}
                // A real folder only: never write through a symlink planted in the tree.
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) => {}
                Err(e) => return Err(create(dir, e)),
            }
        }
        let part = day.join(format!(".{id}.mp4.part"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&part)
            .map_err(|e| create(&part, e))?;
        Ok(Job {
            id: id.to_owned(),
            camera: a.camera.clone(),
            part,
            path,
            start_ns: a.start_ns,
            cursor: Cursor::new(settings.buffer_dir(&a.camera), a.start_ns),
            header: None,
            mux: None,
            pending: Vec::new(),
            pending_bytes: 0,
            started: false,
            t0: 0,
            last_dts: None,
            max_pts: None,
            shift: 0,
            run_floor: None,
            written: 0,
        })
    }

    /// Reads what is available and writes what belongs to the clip; `Done` once a
    /// packet beyond `end_ns` came, the codec changed, or `give_up` is true.
    fn step(&mut self, end_ns: u64, give_up: bool) -> Result<Step, ClipError> {
        let end = i64::try_from(end_ns).unwrap_or(i64::MAX);
        let start = i64::try_from(self.start_ns).unwrap_or(i64::MAX);
        for _ in 0..4096 {
            let next = self
                .cursor
                .next_packet()
                .map_err(|source| ClipError::Read {
                    camera: self.camera.clone(),
                    source,
                })?;
            let Some(t) = next else {
                return Ok(if give_up { Step::Done } else { Step::Running });
            };
            if self.header.as_ref().is_some_and(|h| **h != *t.header) {
                tracing::info!(camera = %self.camera, clip = %self.id, "codec parameters changed; clip ends here");
                return Ok(Step::Done);
            }
            if t.dts_cap > end {
                self.flush()?;
                return Ok(Step::Done);
            }
            if self.started {
                self.write(&t)?;
                continue;
            }
            // Before the start: keep the packets from the last keyframe at or before
            // it.
            if t.packet.key && t.pts_cap <= start {
                self.pending.clear();
                self.pending_bytes = 0;
            }
            if self.pending.is_empty() && !t.packet.key {
                continue;
            }
            if self.pending_bytes + t.packet.data.len() > MAX_PENDING_BYTES {
                self.pending.clear();
                self.pending_bytes = 0;
                continue;
            }
            self.header.get_or_insert_with(|| t.header.clone());
            let past_start = t.pts_cap > start;
            self.pending_bytes += t.packet.data.len();
            self.pending.push(t);
            if past_start {
                self.flush()?;
            }
        }
        Ok(Step::Running)
    }

    fn flush(&mut self) -> Result<(), ClipError> {
        self.started = true;
        for t in std::mem::take(&mut self.pending) {
            self.write(&t)?;
        }
        self.pending_bytes = 0;
        Ok(())
    }

    fn write(&mut self, t: &TimedPacket) -> Result<(), ClipError> {
        let mux_err = |camera: &str, source| ClipError::Mux {
            camera: camera.to_owned(),
            source,
        };
        if self.mux.is_none() {
            self.header.get_or_insert_with(|| t.header.clone());
            self.t0 = t.dts_cap.min(t.pts_cap);
            self.mux = Some(
                Mp4Writer::create(&self.part, &t.header).map_err(|e| mux_err(&self.camera, e))?,
            );
        }
        let h = &t.header;
        let (mut dts, mut pts) = next_stamps(
            h.ns_to_ts(t.dts_cap - self.t0),
            h.ns_to_ts(t.pts_cap - self.t0),
            t.packet.key,
            t.packet.duration,
            &mut self.shift,
            self.max_pts,
        );
        if t.packet.key {
            self.run_floor = self.max_pts;
        } else if leading_of_earlier_time(pts, self.run_floor) {
            // A restarted kernel's open-GOP leading frame: it refers to pictures of the
            // previous run and would present at a time a written frame already has.
            // Decoders drop such frames after a random access point; so does the clip.
            return Ok(());
        }
        if let Some(last) = self.last_dts {
            // Anchors of two segments may disagree by a frame's jitter.
            dts = dts.max(last + 1);
        }
        pts = pts.max(dts);
        self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
        self.last_dts = Some(dts);
        if let Some(m) = self.mux.as_mut() {
            m.write(&t.packet, pts, dts, t.packet.duration)
                .map_err(|e| mux_err(&self.camera, e))?;
        }
        self.written += 1;
        Ok(())
    }

    /// Writes the trailer and moves the clip into place.
    fn finish(mut self) -> Result<PathBuf, ClipError> {
        let result = (|| {
            let Some(m) = self.mux.take() else {
                return Err(ClipError::NoFootage {
                    camera: self.camera.clone(),
                    id: self.id.clone(),
                });
            };
            m.finish().map_err(|source| ClipError::Mux {
                camera: self.camera.clone(),
                source,
            })?;
            std::fs::rename(&self.part, &self.path).map_err(|source| ClipError::Rename {
                camera: self.camera.clone(),
                path: self.path.clone(),
                source,
            })?;
            Ok(self.path.clone())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.part);
        }
        result
    }

    fn abandon(self) {
        drop(self.mux);
        let _ = std::fs::remove_file(&self.part);
    }
}

/// The recorder thread.
#[derive(Debug)]
pub struct Recorder {
    clips: Arc<Clips>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Starts the recorder thread.
    pub fn start(clips: Arc<Clips>) -> std::io::Result<Recorder> {
        let c = clips.clone();
        let thread = std::thread::Builder::new()
            .name("clips".into())
            .spawn(move || run(&c))?;
        Ok(Recorder {
            clips,
            thread: Some(thread),
        })
    }

    /// Finishes every clip with what it has, and joins the thread.
    pub fn finish(mut self) {
        self.clips.stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("clip recorder thread panicked");
            }
        }
    }
}

fn run(clips: &Clips) {
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    let mut last_retention = 0u64;
    loop {
        let stopping = clips.stop.load(Ordering::Relaxed);
        let (new, ends): (Vec<(String, Active)>, HashMap<String, u64>) = {
            let mut st = lock(&clips.state);
            let new = std::mem::take(&mut st.new)
                .into_iter()
                .filter_map(|id| st.active.get(&id).map(|a| (id, a.clone())))
                .collect();
            let ends = st
                .active
                .iter()
                .map(|(id, a)| (id.clone(), a.end_ns))
                .collect();
            (new, ends)
        };
        for (id, a) in new {
            match Job::new(&clips.settings.dir, &a, &id, &clips.settings) {
                Ok(j) => {
                    jobs.insert(id, j);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "clip not started");
                    clips.finished(&[], &Err(e), &id);
                }
            }
        }
        let now = (clips.unix_ns)();
        let mut done = Vec::new();
        for (id, job) in jobs.iter_mut() {
            let end = ends.get(id).copied().unwrap_or(0);
            let give_up = stopping || now > end.saturating_add(GIVE_UP.as_nanos() as u64);
            match job.step(end, give_up) {
                Ok(Step::Running) => {}
                Ok(Step::Done) => done.push((id.clone(), None)),
                Err(e) => done.push((id.clone(), Some(e))),
            }
        }
        let mut retention: Vec<String> = Vec::new();
        for (id, err) in done {
            let Some(job) = jobs.remove(&id) else {
                continue;
            };
            let camera = job.camera.clone();
            let result = match err {
                None => job.finish(),
                Some(e) => {
                    job.abandon();
                    Err(e)
                }
            };
            match &result {
                Ok(p) => {
                    // Finished and readable (renamed into place) this long after the
                    // clip's end on the capture clock.
                    let end = ends.get(&id).copied().unwrap_or(now);
                    let delay_ns = (clips.unix_ns)().saturating_sub(end);
                    lock(&clips.delays).add(delay_ns);
                    tracing::info!(
                        camera = %camera,
                        clip = %p.display(),
                        finish_delay_ms = delay_ns as f64 / 1e6,
                        "clip written"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "clip failed"),
            }
            clips.finished(std::slice::from_ref(&id), &result, &id);
            retention.push(camera);
        }
        if now.saturating_sub(last_retention) >= RETENTION_EVERY.as_nanos() as u64 {
            last_retention = now;
            retention.extend(
                std::fs::read_dir(&clips.settings.dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.')),
            );
        }
        // A quiet clips folder that ran out of space is healthy again once it has
        // room (probed at most once a second).
        clips.health.recover_if_space(&clips.settings.dir);
        retention.sort();
        retention.dedup();
        for cam in retention {
            let s = &clips.settings;
            retention::enforce(
                &s.dir.join(&cam),
                now,
                s.max_age_s.saturating_mul(1_000_000_000),
                s.max_bytes,
            );
        }
        if stopping && jobs.is_empty() {
            return;
        }
        let st = lock(&clips.state);
        if st.new.is_empty() && !clips.stop.load(Ordering::Relaxed) {
            let _ = clips.wake.wait_timeout(st, POLL);
        }
    }
}

#[cfg(test)]
mod tests;
