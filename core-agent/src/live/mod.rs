//! Live view: `GET /cameras/{id}/snapshot.jpg` and `GET /cameras/{id}/stream.mjpeg`.
//!
//! A frame is the newest one in the camera's ring (read-only, like every reader),
//! copied once into the JPEG encoder's input buffer; the slot's seqlock is checked
//! after the copy (a torn copy is thrown away and the newer frame read instead,
//! [`frame::read_latest`]); then the camera's newest result ([`store`], fed from the
//! result path after the analytics stage) is drawn into that buffer — boxes with class
//! and track id — with the camera's counting lines and zones ([`draw`]), and the buffer
//! is encoded ([`jpeg`]: libjpeg-turbo, straight from the YUV planes).
//!
//! Work only while someone watches: an MJPEG viewer joins its camera's [`hub`]; the
//! first viewer starts one encoder thread for the camera, every viewer of the camera
//! gets the same encoded JPEGs (a watch channel: a slow viewer skips to the newest
//! frame, nothing queues), and the thread ends when the last viewer leaves. The
//! encoder runs at the highest rate any viewer asked for (each viewer is paced to its
//! own rate), and skips encoding when neither the frame nor the result changed. A
//! snapshot encodes one frame on request. Viewers per camera are capped
//! (`[live] max_viewers`, one more: 503), and so are snapshots being encoded at once
//! ([`MAX_SNAPSHOTS`], one more: 503).
//!
//! A stopped camera answers 503 (its ring is gone with its kernel, and an old frame
//! shown as live would mislead); a stream ends when its camera stops.

pub mod draw;
pub mod frame;
pub mod http;
pub mod hub;
pub mod jpeg;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use shm_ring::{RingOpenError, RingReader};

use crate::config::analytics::CameraAnalytics;
use crate::config::live::LiveSettings;
use crate::system::Shared;
use draw::{LineMark, Overlay, ZoneMark};
use frame::FrameError;
use store::LatestStore;

/// Snapshots being encoded at once, all cameras together.
pub const MAX_SNAPSHOTS: usize = 4;

/// Why a live view request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No camera with that id (404).
    #[error("no camera {0:?}")]
    UnknownCamera(String),
    /// The camera exists but does not run (503).
    #[error("camera {0:?} is not running")]
    Stopped(String),
    /// The camera already has `max` viewers (503).
    #[error("camera {camera:?} has {max} viewers already (live.max_viewers)")]
    TooManyViewers {
        /// Camera id.
        camera: String,
        /// The cap.
        max: usize,
    },
    /// [`MAX_SNAPSHOTS`] snapshots are being encoded (503).
    #[error("{0} snapshots are being encoded already; try again")]
    Busy(usize),
    /// The camera's ring cannot be opened (its kernel is starting or restarting: 503).
    #[error("camera {camera:?}: {source}")]
    Ring {
        /// Camera id.
        camera: String,
        /// Underlying error.
        source: RingOpenError,
    },
    /// No frame could be read or encoded (503).
    #[error("camera {camera:?}: {source}")]
    Frame {
        /// Camera id.
        camera: String,
        /// Underlying error.
        source: FrameError,
    },
    /// The agent is shutting down (503).
    #[error("shutting down")]
    ShuttingDown,
    /// The camera's encoder thread could not be started (500).
    #[error("camera {camera:?}: cannot start the live view encoder: {source}")]
    Thread {
        /// Camera id.
        camera: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// What the live view needs of a running camera.
#[derive(Debug, Clone)]
pub struct Target {
    /// Camera id.
    pub camera: String,
    /// Its ring's name.
    pub ring: String,
    /// Its analytics rules (lines and zones drawn).
    pub rules: Option<CameraAnalytics>,
}

impl Target {
    /// The camera `id` of `shared`, if it runs.
    pub fn of(shared: &Shared, id: &str) -> Result<Target, LiveError> {
        let view = shared.view();
        let cam = view
            .cameras
            .get(id)
            .ok_or_else(|| LiveError::UnknownCamera(id.to_owned()))?;
        if !cam.running {
            return Err(LiveError::Stopped(id.to_owned()));
        }
        Ok(Target {
            camera: id.to_owned(),
            ring: cam.config.ring_name().to_owned(),
            rules: cam.config.analytics.as_deref().cloned(),
        })
    }

    fn marks(&self) -> (Vec<LineMark>, Vec<ZoneMark>) {
        let Some(r) = &self.rules else {
            return (vec![], vec![]);
        };
        (
            r.lines
                .iter()
                .map(|l| LineMark {
                    name: l.name.clone(),
                    from: l.from,
                    to: l.to,
                })
                .collect(),
            r.zones
                .iter()
                .map(|z| ZoneMark {
                    name: z.name.clone(),
                    polygon: z.polygon.clone(),
                })
                .collect(),
        )
    }
}

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct Jpeg {
    /// The JPEG file.
    pub data: bytes::Bytes,
    /// Ring generation of the frame.
    pub generation: u64,
    /// Frame id in the ring.
    pub frame_id: u64,
    /// Frame id of the newest result drawn on it.
    pub result_frame_id: Option<u64>,
}

/// Live view state shared by the API handlers and the encoder threads.
#[derive(Debug)]
pub struct LiveShared {
    /// `[live]`.
    pub settings: LiveSettings,
    /// Where the rings are.
    pub ring_dir: PathBuf,
    /// Newest result per camera.
    pub store: Arc<LatestStore>,
    hubs: Mutex<HashMap<String, Arc<hub::Hub>>>,
    encoded: Mutex<BTreeMap<String, u64>>,
    snapshots: Arc<tokio::sync::Semaphore>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveShared {
    /// Live view state for rings in `ring_dir`.
    pub fn new(settings: LiveSettings, ring_dir: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            settings,
            ring_dir,
            store: Arc::default(),
            hubs: Mutex::default(),
            encoded: Mutex::default(),
            snapshots: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOTS)),
        })
    }

    /// Reads the newest frame of `reader` into `buf`, draws the overlay and encodes it
    /// into `out`; counts the frame in `framebus_live_frames_encoded_total`.
    pub fn render(
        &self,
        reader: &RingReader,
        target: &Target,
        buf: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Jpeg, FrameError> {
        let info = frame::read_latest(reader, buf)?;
        let drawn = self
            .store
            .drawn(&target.camera, reader.generation(), info.capture_ts_ns);
        let (lines, zones) = target.marks();
        let overlay = Overlay {
            boxes: drawn.boxes,
            lines,
            zones,
        };
        frame::draw_and_encode(
            reader.name(),
            &reader.geometry(),
            buf,
            &overlay,
            self.settings.jpeg_quality,
            out,
        )?;
        *lock(&self.encoded)
            .entry(target.camera.clone())
            .or_insert(0) += 1;
        Ok(Jpeg {
            data: bytes::Bytes::copy_from_slice(out),
            generation: reader.generation(),
            frame_id: info.frame_id,
            result_frame_id: drawn.result_frame_id,
        })
    }

    /// Frames encoded so far, all cameras.
    pub fn frames_encoded(&self) -> u64 {
        lock(&self.encoded).values().sum()
    }

    /// MJPEG viewers of `camera` now.
    pub fn viewers(&self, camera: &str) -> usize {
        lock(&self.hubs).get(camera).map_or(0, |h| h.viewers())
    }

    /// Appends the live view families to a Prometheus text exposition.
    pub fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let l = crate::metrics::prom_label;
        let _ = writeln!(out, "# HELP framebus_live_frames_encoded_total Live view JPEG frames encoded (snapshots and MJPEG).\n# TYPE framebus_live_frames_encoded_total counter");
        for (cam, n) in lock(&self.encoded).iter() {
            let _ = writeln!(
                out,
                "framebus_live_frames_encoded_total{{camera=\"{}\"}} {n}",
                l(cam)
            );
        }
        let _ = writeln!(
            out,
            "# HELP framebus_live_viewers MJPEG viewers now.\n# TYPE framebus_live_viewers gauge"
        );
        let hubs: Vec<(String, usize)> = lock(&self.hubs)
            .iter()
            .map(|(c, h)| (c.clone(), h.viewers()))
            .collect();
        for (cam, n) in hubs {
            let _ = writeln!(out, "framebus_live_viewers{{camera=\"{}\"}} {n}", l(&cam));
        }
    }
}
