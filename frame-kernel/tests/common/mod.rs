//! Helpers of frame-kernel's integration tests: the real `frame-kernel` binary and ring
//! readers. Assets, fake cameras, ffmpeg and temp dirs come from `framebus-testkit`.
#![allow(dead_code, unused_imports)]

pub mod soak;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use framebus_testkit::camera::RtspCamera;
use framebus_testkit::process::ChildGuard;
use proto_schema::segment::{self, Record, SegmentHeader};
use shm_ring::{FrameInfo, ReadError, RingReader, RingState, WaitOutcome};

pub use framebus_testkit::camera::camera_python;
pub use framebus_testkit::dirs::ring_dir;
pub use framebus_testkit::ffmpeg::{ffmpeg_cli, frames as ffmpeg_frames, has_content, hash};
pub use framebus_testkit::{asset, assets_dir, missing};

pub const KERNEL: &str = env!("CARGO_BIN_EXE_frame-kernel");
pub const CLIP: &str = framebus_testkit::assets::PEOPLE_WALK;

/// A running `frame-kernel`; killed on drop. Its log goes to a file, printed on
/// failure paths by `log()`.
pub struct Kernel {
    pub child: ChildGuard,
    pub log: PathBuf,
}

impl Kernel {
    pub fn start(args: &[&str], log_dir: &Path, tag: &str) -> Kernel {
        let log = log_dir.join(format!("kernel-{tag}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(KERNEL)
            .args(args)
            .env("FRAMEBUS_LOG", "info,frame_kernel=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn frame-kernel");
        Kernel {
            child: ChildGuard::new(child),
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        self.child.signal(sig);
    }

    /// SIGTERM and wait (up to 10 s) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("kernel did not exit after SIGTERM\n{}", self.log()))
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    pub fn fd_count(&self) -> usize {
        soak::read_proc(self.pid() as u32).map_or(0, |(_, _, fds)| fds)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        soak::read_proc(self.pid() as u32).map_or(0, |(rss, _, _)| rss)
    }

    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).map_or(0, |d| d.count())
    }
}

/// The project's fake RTSP camera (tools/fake_rtsp_camera.py); stopped on drop.
pub type Camera = RtspCamera;

/// Converted clips are cached across test runs here (one conversion per target dir).
pub fn camera_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fake-camera-cache")
}

/// Starts the camera serving `name=source` pairs on `port` (0 = free port) and waits
/// for READY (the first run converts the mp4, which can take a while).
pub fn start_camera(py: &Path, port: u16, cams: &[(&str, &Path)]) -> Camera {
    let mut b = RtspCamera::builder(py)
        .port(port)
        .cache(camera_cache())
        .timeout(Duration::from_secs(180));
    for (name, src) in cams {
        b = b.camera(name, *src);
    }
    b.start().unwrap_or_else(|e| panic!("fake camera: {e}"))
}

/// Waits until `<dir>/<name>.ring` opens.
pub fn open_ring(dir: &Path, name: &str, timeout: Duration) -> RingReader {
    let end = Instant::now() + timeout;
    loop {
        match RingReader::open(dir, name) {
            Ok(r) => return r,
            Err(e) if Instant::now() > end => panic!("ring {name} never appeared: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Polls the ring header until `pred` holds; returns when it did.
pub fn wait_until(
    reader: &RingReader,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&RingReader) -> bool,
) -> Instant {
    let end = Instant::now() + timeout;
    loop {
        if pred(reader) {
            return Instant::now();
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}; header {:?}",
            reader.header()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn state(reader: &RingReader) -> RingState {
    reader.header().state
}

/// Follows the ring and returns every frame it manages to copy, in publish order,
/// until `n` frames were seen (read or missed) or `timeout`.
pub fn collect_frames(
    reader: &RingReader,
    n: usize,
    timeout: Duration,
) -> Vec<(FrameInfo, Vec<u8>)> {
    let end = Instant::now() + timeout;
    let slots = u64::from(reader.slots());
    let mut out = Vec::new();
    let mut next = 1u64; // publish numbers are 1-based: seq = 2 * n
    let mut seen = 0usize;
    while seen < n && Instant::now() < end {
        let ws = match reader.wait_for_publish(next - 1, Duration::from_millis(200)) {
            WaitOutcome::Published(ws) => ws,
            WaitOutcome::TimedOut => continue,
            WaitOutcome::Closed => break,
        };
        while next <= ws && seen < n {
            let slot = ((next - 1) % slots) as u32;
            let mut buf = Vec::new();
            match reader.copy_into(slot, 2 * next, &mut buf) {
                Ok(info) => out.push((info, buf)),
                Err(ReadError::Stale { .. }) => {}
                Err(e) => panic!("read: {e}"),
            }
            next += 1;
            seen += 1;
        }
    }
    out
}

/// A segment file's header and records (`--clip-dir`).
pub fn read_segment(path: &Path) -> (SegmentHeader, Vec<Record>) {
    let b = std::fs::read(path).unwrap();
    let (h, mut at) = SegmentHeader::parse(&b).unwrap().unwrap();
    let mut recs = Vec::new();
    while let Some((r, n)) = Record::parse(&b[at..]).unwrap() {
        recs.push(r);
        at += n;
    }
    (h, recs)
}

/// The segment files of `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(segment::parse_file_name)
                        .is_some()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
