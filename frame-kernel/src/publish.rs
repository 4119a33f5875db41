//! The ring glue: creating the camera's ring, writing frames into its slots, keeping its
//! header (state, counters, heartbeat) current.
//!
//! The writer sits behind a mutex shared by the decode loop (held only while a frame is
//! converted into its slot) and the heartbeat thread, which keeps `heartbeat_ns` and the
//! fps counter moving every [`HEARTBEAT_INTERVAL`] even while the decode loop is blocked
//! on a dead camera. The heartbeat is a watchdog too: if the decode loop shows no sign
//! of life (no loop iteration and no FFmpeg interrupt poll) for [`HUNG_AFTER`] beyond its
//! longest deadline, the heartbeat stops so readers see a dead writer rather than a
//! healthy-looking one.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use proto_schema::pixel::FrameGeometry;
use shm_ring::{FrameInfo, RingCreateError, RingState, RingWriter};

use crate::config::Config;
use proto_schema::time::{duration_ns, Clock, MonoNanos};

/// How often the heartbeat thread refreshes the header.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// Grace beyond the decode loop's longest deadline before it counts as hung.
pub const HUNG_AFTER: Duration = Duration::from_secs(2);
/// The fps counter's averaging window.
pub const FPS_WINDOW: Duration = Duration::from_secs(1);

/// Ring settings taken from the configuration.
#[derive(Debug, Clone)]
pub struct RingSettings {
    /// Ring name.
    pub name: String,
    /// Ring directory.
    pub dir: PathBuf,
    /// Slot count.
    pub slots: u32,
    /// Leave the file on exit.
    pub keep: bool,
}

impl RingSettings {
    /// From a validated config.
    pub fn from_config(c: &Config) -> Self {
        RingSettings {
            name: c.ring_name.clone(),
            dir: c.ring_dir.clone(),
            slots: c.slots,
            keep: c.keep_ring,
        }
    }
}

/// The camera's ring, once created.
#[derive(Debug)]
pub struct Output {
    settings: RingSettings,
    writer: Mutex<Option<RingWriter>>,
    /// Clock ns of the decode loop's last iteration.
    progress_ns: AtomicU64,
}

impl Output {
    /// No ring yet; see [`Output::ensure`].
    pub fn new(settings: RingSettings, now_ns: u64) -> Self {
        Output {
            settings,
            writer: Mutex::new(None),
            progress_ns: AtomicU64::new(now_ns),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<RingWriter>> {
        // A panic while holding the lock cannot leave the writer inconsistent beyond an
        // unpublished slot (which readers already treat as stale), so keep going.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates the ring with `geometry` unless it exists; returns the ring's geometry.
    /// A stale ring left by a killed kernel is replaced (new generation).
    pub fn ensure(&self, geometry: FrameGeometry) -> Result<FrameGeometry, RingCreateError> {
        let mut w = self.lock();
        if let Some(w) = w.as_ref() {
            return Ok(w.geometry());
        }
        let writer = RingWriter::builder(self.settings.name.clone())
            .dir(self.settings.dir.clone())
            .slots(self.settings.slots)
            .geometry(geometry)
            .keep_on_drop(self.settings.keep)
            .create()?;
        tracing::info!(
            ring = %writer.path().display(),
            generation = format_args!("{:016x}", writer.generation()),
            width = geometry.width,
            height = geometry.height,
            format = %geometry.format,
            slots = writer.slots(),
            "ring created"
        );
        *w = Some(writer);
        Ok(geometry)
    }

    /// The ring's geometry, if it exists.
    pub fn geometry(&self) -> Option<FrameGeometry> {
        self.lock().as_ref().map(RingWriter::geometry)
    }

    /// Stores `state` in the header if it differs (waking readers).
    pub fn set_state(&self, state: RingState) {
        if let Some(w) = self.lock().as_ref() {
            if w.state() != state {
                w.set_state(state);
            }
        }
    }

    /// The header state, if the ring exists.
    pub fn state(&self) -> Option<RingState> {
        self.lock().as_ref().map(RingWriter::state)
    }

    /// Counts a decoded frame.
    pub fn add_decoded(&self) {
        if let Some(w) = self.lock().as_ref() {
            w.counters().add_decoded();
        }
    }

    /// Counts a decode error.
    pub fn add_decode_error(&self) {
        if let Some(w) = self.lock().as_ref() {
            w.counters().add_decode_error();
        }
    }

    /// Counts a reconnect attempt.
    pub fn add_reconnect(&self) {
        if let Some(w) = self.lock().as_ref() {
            w.counters().add_reconnect();
        }
    }

    /// Records that the decode loop is alive.
    pub fn mark_progress(&self, now_ns: u64) {
        self.progress_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Writes one frame: `fill` gets the slot's bytes and the ring geometry. On success
    /// the frame is published; on error the slot is abandoned unpublished (readers see
    /// it as stale) and the error returned. `Ok(None)` if there is no ring yet.
    pub fn publish<E>(
        &self,
        pts_ns: i64,
        capture_ts_ns: impl FnOnce() -> u64,
        fill: impl FnOnce(&mut [u8], &FrameGeometry) -> Result<(), E>,
    ) -> Result<Option<FrameInfo>, E> {
        let mut guard = self.lock();
        let Some(writer) = guard.as_mut() else {
            return Ok(None);
        };
        let geometry = writer.geometry();
        let mut slot = writer.begin_write();
        fill(slot.data_mut(), &geometry)?;
        Ok(Some(slot.publish(pts_ns, capture_ts_ns())))
    }

    /// Closes the ring: state `Closed`, readers woken, file removed unless kept.
    pub fn close(&self) {
        if let Some(w) = self.lock().take() {
            let path = w.path().to_path_buf();
            drop(w);
            tracing::info!(ring = %path.display(), kept = self.settings.keep, "ring closed");
        }
    }

    /// One heartbeat: refresh `heartbeat_ns` (unless the decode loop looks hung) and
    /// the fps counter. Returns whether the writer counted as alive.
    pub fn heartbeat(
        &self,
        now_ns: u64,
        hung_after_ns: u64,
        last_poll_ns: u64,
        fps: &mut FpsMeter,
    ) -> bool {
        let guard = self.lock();
        let Some(w) = guard.as_ref() else {
            return true;
        };
        let last_sign = self.progress_ns.load(Ordering::Relaxed).max(last_poll_ns);
        let alive = now_ns.saturating_sub(last_sign) < hung_after_ns;
        if alive {
            w.heartbeat();
        }
        let published = w.counters().snapshot().frames_published;
        w.counters().set_fps_milli(fps.sample(now_ns, published));
        alive
    }
}

/// Frame rate over a sliding window of (time, frames published) samples.
#[derive(Debug, Clone)]
pub struct FpsMeter {
    window_ns: u64,
    samples: VecDeque<(u64, u64)>,
}

impl FpsMeter {
    /// A meter averaging over `window`.
    pub fn new(window: Duration) -> Self {
        FpsMeter {
            window_ns: duration_ns(window),
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample and returns the rate in frames per 1000 s over the window.
    pub fn sample(&mut self, now_ns: u64, count: u64) -> u32 {
        self.samples.push_back((now_ns, count));
        // Keep exactly one sample at or before the window start, as the reference.
        while self.samples.len() > 2 && self.samples[1].0 <= now_ns.saturating_sub(self.window_ns) {
            self.samples.pop_front();
        }
        let (t0, c0) = self.samples[0];
        let dt = now_ns.saturating_sub(t0);
        if dt == 0 {
            return 0;
        }
        let frames = count.saturating_sub(c0) as u128;
        let milli = frames * 1_000_000_000_000 / u128::from(dt);
        u32::try_from(milli).unwrap_or(u32::MAX)
    }
}

/// Runs heartbeats until `stop`; `longest_deadline` is the longest a healthy decode
/// loop may block (open or stall timeout).
pub fn heartbeat_loop(
    output: &Output,
    clock: &dyn Clock,
    last_poll_ns: &dyn Fn() -> u64,
    longest_deadline: Duration,
    stop: &AtomicBool,
) {
    let hung_after = duration_ns(longest_deadline + HUNG_AFTER);
    let mut fps = FpsMeter::new(FPS_WINDOW);
    let mut reported_hung = false;
    loop {
        let now = clock.now().get();
        let alive = output.heartbeat(now, hung_after, last_poll_ns(), &mut fps);
        if !alive && !reported_hung {
            tracing::error!("decode loop shows no sign of life; heartbeat withheld");
        }
        reported_hung = !alive;
        let next = now + duration_ns(HEARTBEAT_INTERVAL);
        if !clock.sleep_until(MonoNanos(next), &|| stop.load(Ordering::Relaxed)) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::pixel::PixelFormat;
    use shm_ring::RingReader;

    const MS: u64 = 1_000_000;

    #[test]
    fn fps_over_a_sliding_window() {
        let mut m = FpsMeter::new(Duration::from_secs(1));
        assert_eq!(m.sample(0, 0), 0);
        // 25 fps for 2 s, sampled every 200 ms.
        let mut last = 0;
        for i in 1..=10u64 {
            last = m.sample(i * 200 * MS, i * 5);
        }
        assert_eq!(last, 25_000);
        // Stream stops: after a full window without frames the rate is 0.
        for i in 11..=16u64 {
            last = m.sample(i * 200 * MS, 50);
        }
        assert_eq!(last, 0);
        assert!(m.samples.len() <= 7);
    }

    fn settings(dir: &std::path::Path, keep: bool) -> RingSettings {
        RingSettings {
            name: "cam-test".into(),
            dir: dir.to_path_buf(),
            slots: 4,
            keep,
        }
    }

    #[test]
    fn publish_state_counters_and_close() {
        let d = tempfile::tempdir().unwrap();
        let out = Output::new(settings(d.path(), false), 0);
        // No ring yet: publish is a no-op.
        assert_eq!(out.publish(0, || 1, |_, _| Ok::<_, ()>(())), Ok(None));
        let g = FrameGeometry::packed(4, 2, PixelFormat::Nv12).unwrap();
        assert_eq!(out.ensure(g).unwrap(), g);
        // A second ensure keeps the first geometry.
        let other = FrameGeometry::packed(8, 8, PixelFormat::Nv12).unwrap();
        assert_eq!(out.ensure(other).unwrap(), g);
        let reader = RingReader::open(d.path(), "cam-test").unwrap();
        assert_eq!(reader.header().state, RingState::Starting);

        out.add_decoded();
        let info = out
            .publish(
                40,
                || 77,
                |buf, geo| {
                    assert_eq!(geo.frame_size as usize, buf.len());
                    buf.fill(9);
                    Ok::<_, ()>(())
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            (info.frame_id, info.pts_ns, info.capture_ts_ns),
            (0, 40, 77)
        );
        assert_eq!(
            reader.read(info.slot, info.seq, |b| b.to_vec()).unwrap(),
            vec![9u8; 12]
        );

        // A failed fill publishes nothing.
        assert_eq!(out.publish(80, || 0, |_, _| Err("bad")), Err("bad"));
        assert_eq!(reader.latest(), Some(info));

        out.set_state(RingState::Live);
        out.add_decode_error();
        out.add_reconnect();
        let mut fps = FpsMeter::new(FPS_WINDOW);
        assert!(out.heartbeat(100 * MS, 1000 * MS, 0, &mut fps));
        let h = reader.header();
        assert_eq!(h.state, RingState::Live);
        assert_eq!(
            (
                h.counters.frames_decoded,
                h.counters.frames_published,
                h.counters.decode_errors,
                h.counters.reconnects
            ),
            (1, 1, 1, 1)
        );
        out.close();
        assert_eq!(reader.header().state, RingState::Closed);
        assert!(!shm_ring::ring_path(d.path(), "cam-test").exists());
    }

    #[test]
    fn heartbeat_is_withheld_when_the_decode_loop_hangs() {
        let d = tempfile::tempdir().unwrap();
        let out = Output::new(settings(d.path(), true), 0);
        out.ensure(FrameGeometry::packed(2, 2, PixelFormat::Nv12).unwrap())
            .unwrap();
        let mut fps = FpsMeter::new(FPS_WINDOW);
        out.mark_progress(1_000 * MS);
        assert!(out.heartbeat(1_500 * MS, 1_000 * MS, 0, &mut fps));
        assert!(!out.heartbeat(2_500 * MS, 1_000 * MS, 0, &mut fps));
        // An FFmpeg interrupt poll is a sign of life too.
        assert!(out.heartbeat(2_500 * MS, 1_000 * MS, 2_400 * MS, &mut fps));
        out.close();
        // keep_on_drop: the closed ring stays for inspection.
        let r = RingReader::open(d.path(), "cam-test").unwrap();
        assert_eq!(r.header().state, RingState::Closed);
    }
}
