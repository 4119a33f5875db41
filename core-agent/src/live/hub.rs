//! One encoder per watched camera, shared by all its MJPEG viewers.
//!
//! The first viewer of a camera creates its [`Hub`] and the hub's thread; every viewer
//! holds a [`Viewer`] (dropping it leaves). The thread encodes the newest frame at the
//! highest rate a viewer asked for and publishes it on a watch channel: bounded to
//! one frame, a slow viewer skips to the newest (overflow policy: older frames are
//! replaced, never queued). When the last viewer leaves, the hub is removed and its
//! thread ends at its next tick: no viewer, no encoding.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use shm_ring::{RingReader, RingState};
use tokio::sync::watch;

use super::{lock, Jpeg, LiveError, LiveShared, Target};
use crate::system::Shared;

/// What viewers of a hub see.
#[derive(Debug, Clone)]
pub enum Feed {
    /// No frame encoded yet.
    Waiting,
    /// The newest frame.
    Frame(Arc<Jpeg>),
    /// The camera stopped, was removed, or the agent is shutting down: streams end.
    Gone(String),
}

/// Longest sleep of the encoder thread between checks of its stop flag.
const NAP: Duration = Duration::from_millis(100);

/// The encoder of one camera.
#[derive(Debug)]
pub struct Hub {
    camera: String,
    /// Viewer id -> the rate it asked for.
    viewers: Mutex<BTreeMap<u64, f64>>,
    stop: AtomicBool,
    feed: watch::Sender<Feed>,
}

impl Hub {
    /// Viewers now.
    pub fn viewers(&self) -> usize {
        lock(&self.viewers).len()
    }

    fn fps(&self) -> f64 {
        lock(&self.viewers).values().copied().fold(0.0, f64::max)
    }
}

/// One MJPEG viewer; leaves its hub when dropped.
#[derive(Debug)]
pub struct Viewer {
    live: Arc<LiveShared>,
    hub: Arc<Hub>,
    id: u64,
    /// The hub's frames.
    pub feed: watch::Receiver<Feed>,
    /// This viewer's rate.
    pub fps: f64,
}

static NEXT_VIEWER: AtomicU64 = AtomicU64::new(1);

/// Joins camera `camera`'s hub at `fps` (already capped), starting the hub if it is
/// the first viewer. Refused with the camera's state (unknown, stopped) or when it has
/// `max_viewers` already.
pub fn join(shared: &Arc<Shared>, camera: &str, fps: f64) -> Result<Viewer, LiveError> {
    Target::of(shared, camera)?;
    let live = shared.live.clone();
    let mut hubs = lock(&live.hubs);
    let hub = match hubs.get(camera) {
        Some(h) => h.clone(),
        None => {
            let (feed, _) = watch::channel(Feed::Waiting);
            let hub = Arc::new(Hub {
                camera: camera.to_owned(),
                viewers: Mutex::default(),
                stop: AtomicBool::new(false),
                feed,
            });
            let (h, weak) = (hub.clone(), Arc::downgrade(shared));
            std::thread::Builder::new()
                .name(format!("live-{camera}"))
                .spawn(move || run(&h, &weak))
                .map_err(|source| LiveError::Thread {
                    camera: camera.to_owned(),
                    source,
                })?;
            hubs.insert(camera.to_owned(), hub.clone());
            hub
        }
    };
    let mut viewers = lock(&hub.viewers);
    if viewers.len() >= live.settings.max_viewers {
        let empty = viewers.is_empty();
        drop(viewers);
        if empty {
            // Only with max_viewers = 0, which validation refuses; do not leak a hub.
            hub.stop.store(true, Ordering::Release);
            hubs.remove(camera);
        }
        return Err(LiveError::TooManyViewers {
            camera: camera.to_owned(),
            max: live.settings.max_viewers,
        });
    }
    let id = NEXT_VIEWER.fetch_add(1, Ordering::Relaxed);
    viewers.insert(id, fps);
    drop(viewers);
    drop(hubs);
    Ok(Viewer {
        feed: hub.feed.subscribe(),
        live,
        hub,
        id,
        fps,
    })
}

impl Drop for Viewer {
    fn drop(&mut self) {
        // Under the hubs lock, so a viewer joining now either sees the hub with this
        // viewer still in it, or no hub (and starts a new one).
        let mut hubs = lock(&self.live.hubs);
        let mut viewers = lock(&self.hub.viewers);
        viewers.remove(&self.id);
        if viewers.is_empty() {
            self.hub.stop.store(true, Ordering::Release);
            if hubs
                .get(&self.hub.camera)
                .is_some_and(|h| Arc::ptr_eq(h, &self.hub))
            {
                hubs.remove(&self.hub.camera);
            }
        }
    }
}

/// When the next frame is due, given the previous due time, the period and now: one
/// period after the previous one, or one period from now if that is already past (a
/// late encoder does not burst to catch up).
pub fn next_due(prev: Instant, period: Duration, now: Instant) -> Instant {
    let next = prev + period;
    if next <= now {
        now + period
    } else {
        next
    }
}

/// The period of `fps` (at least 1 ms, at most 10 s).
pub fn period(fps: f64) -> Duration {
    if fps.is_finite() && fps > 0.0 {
        Duration::from_secs_f64((1.0 / fps).clamp(0.001, 10.0))
    } else {
        Duration::from_secs(10)
    }
}

fn run(hub: &Hub, shared: &Weak<Shared>) {
    let mut due = Instant::now();
    let mut reader: Option<RingReader> = None;
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    let mut last = None;
    while !hub.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < due {
            std::thread::sleep((due - now).min(NAP));
            continue;
        }
        due = next_due(due, period(hub.fps()), now);
        let Some(sh) = shared.upgrade() else { break };
        if sh.shutting_down.load(Ordering::Relaxed) {
            hub.feed.send_replace(Feed::Gone("shutting down".into()));
            break;
        }
        let target = match Target::of(&sh, &hub.camera) {
            Ok(t) => t,
            Err(e) => {
                hub.feed.send_replace(Feed::Gone(e.to_string()));
                reader = None;
                continue;
            }
        };
        let live = sh.live.clone();
        drop(sh);
        let reopen = reader.as_ref().is_none_or(|r| {
            r.name() != target.ring || r.state() == RingState::Closed || !r.is_current()
        });
        if reopen {
            reader = RingReader::open(&live.ring_dir, &target.ring)
                .inspect_err(|e| tracing::debug!(camera = %hub.camera, "live view: {e}"))
                .ok();
            last = None;
        }
        let Some(r) = reader.as_ref() else { continue };
        // Nothing new (same frame, same results): no encoding.
        let key = r
            .latest()
            .map(|f| (r.generation(), f.frame_id, live.store.version()));
        if key.is_some() && key == last {
            continue;
        }
        match live.render(r, &target, &mut buf, &mut out) {
            Ok(j) => {
                last = key;
                hub.feed.send_replace(Feed::Frame(Arc::new(j)));
            }
            Err(e) => tracing::debug!(camera = %hub.camera, "live view: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_due_one_period_apart_without_bursts() {
        let t0 = Instant::now();
        let p = Duration::from_millis(200);
        assert_eq!(next_due(t0, p, t0), t0 + p);
        // On time or slightly late: keeps the phase.
        assert_eq!(
            next_due(t0 + p, p, t0 + p + Duration::from_millis(5)),
            t0 + 2 * p
        );
        // A full period late: one period from now, no catch-up burst.
        let late = t0 + Duration::from_millis(950);
        assert_eq!(next_due(t0 + p, p, late), late + p);
    }

    #[test]
    fn periods_are_bounded() {
        assert_eq!(period(5.0), Duration::from_millis(200));
        assert_eq!(period(0.0), Duration::from_secs(10));
        assert_eq!(period(f64::NAN), Duration::from_secs(10));
        assert_eq!(period(1e9), Duration::from_millis(1));
    }
}
