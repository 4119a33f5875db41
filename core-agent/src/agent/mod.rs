//! Stream agents: one per camera. An agent waits for its kernel's ring, wakes on the
//! ring's publish notification once a subscription's next slot is due ([`waiter`]),
//! passes the frame through every subscription's FPS gate (slots phased per model,
//! [`phase`]) and, when enabled, the camera's motion gate ([`motion`]), sends due frames
//! (by reference: ring, generation, slot, sequence) to the model servers over persistent
//! Unix-socket connections, and turns the answers into result records. A still frame
//! within the keep-alive interval is answered with the last result instead (a record
//! marked `reused`).
//!
//! Freshest-frame policy: at most `max_in_flight` requests per (camera, model); a due
//! frame that finds the limit reached, the server not ready or the connection down is
//! skipped (a missed slot), never queued. `stale_frame`, `overloaded`, timeouts and dead
//! connections are counted and the agent goes on with the next frame.

pub mod gate;
pub mod link;
pub mod motion;
pub mod phase;
pub mod waiter;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_schema::message::{Detection, FrameMeta, FrameRef, InferenceRequest, Request, Response};
use proto_schema::PROTOCOL_VERSION;
use shm_ring::{FrameInfo, RingReader};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::{MonoNanos, UnixNanos};
use crate::config::MotionConfig;
use crate::metrics::{locked, CameraMetrics, Metrics, ModelMetrics, RingView, SubMetrics};
use crate::peer::ExpectedPeer;
use crate::results::{Latencies, ResultQueue, ResultRecord};
use crate::supervisor::{ProcState, ProcStatus};
use gate::{FpsGate, Verdict};
use link::{Link, LinkEvent, Pending};
use motion::{Motion, MotionDetector};
use phase::{PhaseLease, PhaseRegistry};
use waiter::{Due, RingWaiter, Wake};

/// One subscription as the agent runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubSpec {
    /// Model id.
    pub model: String,
    /// The model server's socket.
    pub socket: PathBuf,
    /// Target rate.
    pub fps: f64,
    /// Class names kept (empty: all).
    pub classes: Vec<String>,
    /// Requests in flight at most.
    pub max_in_flight: u32,
}

/// What an agent needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// Camera id.
    pub camera: String,
    /// Ring directory.
    pub ring_dir: PathBuf,
    /// Ring name.
    pub ring: String,
    /// Subscriptions of this camera.
    pub subs: Vec<SubSpec>,
    /// A request without an answer after this long is given up.
    pub request_timeout: Duration,
    /// At stop, how long answers already asked for are awaited.
    pub drain_timeout: Duration,
    /// Largest message accepted from a server.
    pub max_message: usize,
    /// The camera's motion gate.
    pub motion: MotionConfig,
}

/// The owner's side of a running agent.
#[derive(Debug)]
pub struct AgentHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AgentHandle {
    /// Starts the agent. `models[i]` is the status of `spec.subs[i].model`'s server;
    /// each subscription leases its phase from `phases` (shared by all agents) while the
    /// agent runs.
    pub fn spawn(
        spec: AgentSpec,
        kernel: watch::Receiver<ProcStatus>,
        models: Vec<watch::Receiver<ProcStatus>>,
        metrics: &Metrics,
        results: Arc<ResultQueue>,
        phases: &Arc<PhaseRegistry>,
    ) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let cam = metrics.camera(&spec.camera);
        let (events_tx, events_rx) = mpsc::channel(64 * spec.subs.len().max(1));
        let subs = spec
            .subs
            .iter()
            .zip(models)
            .enumerate()
            .map(|(i, (s, status))| {
                let phase = phases.lease(&s.model);
                Sub {
                    gate: FpsGate::with_phase(s.fps, phase.phase()),
                    _phase: phase,
                    link: Link::new(i, s.socket.clone(), spec.max_message),
                    metrics: cam.sub(&s.model),
                    model: metrics.model(&s.model),
                    seen_epoch: 0,
                    status,
                    spec: s.clone(),
                    last_inferred_ts: None,
                    last_result: None,
                }
            })
            .collect();
        let motion = spec
            .motion
            .enabled
            .then(|| MotionDetector::new(&spec.motion));
        let agent = Agent {
            spec,
            kernel,
            subs,
            cam,
            results,
            events_tx,
            events_rx,
            stop: stop_rx,
            next_id: 1,
            stopping: false,
            last_frame: None,
            sampled: None,
            due: Arc::new(Due::default()),
            retry: false,
            motion,
            judged: None,
        };
        Self {
            stop,
            task: tokio::spawn(agent.run()),
        }
    }

    /// Stops sending, waits for answers in flight (up to the drain timeout), and ends.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Sub {
    spec: SubSpec,
    gate: FpsGate,
    /// Held while the agent runs: dropping it frees the position for another camera.
    _phase: PhaseLease,
    link: Link,
    metrics: Arc<SubMetrics>,
    model: Arc<ModelMetrics>,
    status: watch::Receiver<ProcStatus>,
    seen_epoch: u64,
    /// Capture time of the last frame sent for inference (the keep-alive clock).
    last_inferred_ts: Option<u64>,
    /// The last result: its frame's capture time and detections (reused on still frames).
    last_result: Option<(u64, Vec<Detection>)>,
}

struct Agent {
    spec: AgentSpec,
    kernel: watch::Receiver<ProcStatus>,
    subs: Vec<Sub>,
    cam: Arc<CameraMetrics>,
    results: Arc<ResultQueue>,
    events_tx: mpsc::Sender<LinkEvent>,
    events_rx: mpsc::Receiver<LinkEvent>,
    stop: watch::Receiver<bool>,
    next_id: u64,
    stopping: bool,
    last_frame: Option<(u64, u64)>,
    sampled: Option<(Instant, u64, u64)>,
    /// When the next frame is worth a wake-up, for the ring's waiter.
    due: Arc<Due>,
    /// A slot was missed for want of room: offer the freshest frame again once room
    /// may have come (an answer, a closed connection, a tick).
    retry: bool,
    motion: Option<MotionDetector>,
    /// The motion verdict of the last frame judged, by (generation, frame id): a frame
    /// offered twice is judged once (judging folds it into the background).
    judged: Option<((u64, u64), Motion)>,
}

enum RingEnd {
    Stop,
    Reopen,
}

const SEND_TIMEOUT: Duration = Duration::from_millis(500);
const TICK: Duration = Duration::from_millis(100);
const SAMPLE_EVERY: u32 = 10;

impl Agent {
    fn stop_requested(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) {
        let mut opened = 0u64;
        loop {
            let Some(epoch) = self.wait_kernel_ready().await else {
                break;
            };
            let reader = match RingReader::open(&self.spec.ring_dir, &self.spec.ring) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(camera = %self.spec.camera, "ring not open yet: {e}");
                    if self.pause(Duration::from_millis(100)).await {
                        break;
                    }
                    continue;
                }
            };
            // A new ring: every frame is worth a look until a gate says otherwise.
            self.due.set(0, 0);
            // One reader per camera: the waiter thread waits on it, the agent reads it.
            let reader = Arc::new(reader);
            let (waiter, wake) = match RingWaiter::start(reader.clone(), self.due.clone()) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(camera = %self.spec.camera, "cannot start the ring waiter: {e}");
                    if self.pause(Duration::from_secs(1)).await {
                        break;
                    }
                    continue;
                }
            };
            opened += 1;
            if opened > 1 {
                self.cam.ring_reopens.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(camera = %self.spec.camera, generation = %format!("{:016x}", reader.generation()), "ring open");
            self.sampled = None;
            let end = self.serve(&reader, wake, epoch).await;
            drop(waiter);
            locked(&self.cam.ring).state = "absent".into();
            if matches!(end, RingEnd::Stop) {
                break;
            }
        }
        self.drain().await;
        for sub in &mut self.subs {
            sub.link.disconnect();
        }
    }

    /// Sleeps unless asked to stop; `true` if asked.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stop_requested(),
            _ = self.stop.changed() => true,
        }
    }

    /// Waits for the kernel to be ready; its ready epoch, or `None` when stopping.
    async fn wait_kernel_ready(&mut self) -> Option<u64> {
        loop {
            if self.stop_requested() {
                return None;
            }
            {
                let st = self.kernel.borrow_and_update();
                if st.state == ProcState::Ready {
                    return Some(st.ready_epoch);
                }
            }
            tokio::select! {
                r = self.kernel.changed() => if r.is_err() { return None },
                r = self.stop.changed() => if r.is_err() || self.stop_requested() { return None },
            }
        }
    }

    async fn serve(
        &mut self,
        reader: &RingReader,
        mut wake: watch::Receiver<Wake>,
        epoch: u64,
    ) -> RingEnd {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u32;
        let mut ring_gone = false;
        self.sample(reader);
        loop {
            tokio::select! {
                biased;
                r = self.stop.changed() => {
                    if r.is_err() || self.stop_requested() {
                        return RingEnd::Stop;
                    }
                }
                r = self.kernel.changed() => {
                    if r.is_err() {
                        return RingEnd::Stop;
                    }
                    if self.kernel.borrow_and_update().ready_epoch != epoch {
                        return RingEnd::Reopen;
                    }
                }
                Some(event) = self.events_rx.recv() => {
                    self.on_event(event);
                    if self.retry && !ring_gone {
                        self.retry_missed(reader).await;
                    }
                }
                r = wake.changed(), if !ring_gone => {
                    let w = *wake.borrow_and_update();
                    if r.is_err() || w.closed {
                        if reader.check_intact().is_err() {
                            tracing::warn!(camera = %self.spec.camera, "ring file truncated; dropping the mapping and reopening");
                            return RingEnd::Reopen;
                        }
                        // Wait for the kernel's next ready epoch (a new ring).
                        tracing::info!(camera = %self.spec.camera, "ring closed by its writer");
                        ring_gone = true;
                    } else {
                        self.cam.wakeups.fetch_add(1, Ordering::Relaxed);
                        if let Some(info) = w.frame {
                            self.on_frame(reader, info).await;
                        }
                        // `latest()` is None on a truncated ring (no garbage frame is sent).
                        if reader.truncated() {
                            tracing::warn!(camera = %self.spec.camera, "ring file truncated; dropping the mapping and reopening");
                            return RingEnd::Reopen;
                        }
                    }
                }
                _ = tick.tick() => {
                    self.expire();
                    if self.retry && !ring_gone {
                        self.retry_missed(reader).await;
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(SAMPLE_EVERY) {
                        self.sample(reader);
                        // The kernel may replace its ring without restarting (new frame
                        // size after a reconnect): follow the file.
                        if !reader.is_current() {
                            tracing::info!(camera = %self.spec.camera, "ring replaced");
                            return RingEnd::Reopen;
                        }
                        if let Err(e) = reader.check_intact() {
                            tracing::warn!(camera = %self.spec.camera, "{e}; reopening");
                            return RingEnd::Reopen;
                        }
                    }
                }
            }
        }
    }

    fn sample(&mut self, reader: &RingReader) {
        let h = reader.header();
        let c = &h.counters;
        let now = Instant::now();
        let fps = match self.sampled {
            Some((t, frames, generation)) if generation == reader.generation() && now > t => {
                c.frames_decoded.saturating_sub(frames) as f64 / now.duration_since(t).as_secs_f64()
            }
            _ => f64::from(c.fps_milli) / 1000.0,
        };
        self.sampled = Some((now, c.frames_decoded, reader.generation()));
        *locked(&self.cam.ring) = RingView {
            state: format!("{:?}", h.state).to_ascii_lowercase(),
            generation: reader.generation(),
            frames_decoded: c.frames_decoded,
            decode_errors: c.decode_errors,
            reconnects: c.reconnects,
            fps_decoded: if c.fps_milli > 0 {
                f64::from(c.fps_milli) / 1000.0
            } else {
                fps
            },
        };
    }

    fn expire(&mut self) {
        for sub in &mut self.subs {
            let n = sub.link.expire(self.spec.request_timeout) as u64;
            if n > 0 {
                sub.metrics.timeouts.fetch_add(n, Ordering::Relaxed);
                sub.model.failures.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// A frame the waiter saw (read once, by the waiter).
    async fn on_frame(&mut self, reader: &RingReader, info: FrameInfo) {
        let key = (reader.generation(), info.frame_id);
        if self.last_frame == Some(key) {
            return;
        }
        self.last_frame = Some(key);
        self.cam.frames_seen.fetch_add(1, Ordering::Relaxed);
        if self.stopping {
            return;
        }
        self.offer(reader, info).await;
    }

    /// Offers the freshest frame again after a slot was missed for want of room.
    async fn retry_missed(&mut self, reader: &RingReader) {
        self.retry = false;
        if self.stopping {
            return;
        }
        if let Some(info) = reader.latest() {
            self.offer(reader, info).await;
        }
    }

    /// The motion verdict on `info`, judged once per frame.
    fn motion_of(&mut self, reader: &RingReader, info: &FrameInfo) -> Option<Motion> {
        let detector = self.motion.as_mut()?;
        let key = (reader.generation(), info.frame_id);
        if let Some((k, m)) = self.judged {
            if k == key {
                return Some(m);
            }
        }
        let geometry = reader.geometry();
        let size = detector.size_for(&geometry);
        // A torn or overwritten frame gives no decision (and leaves the background).
        let m = match reader.read(info.slot, info.seq, |bytes| {
            detector.capture(bytes, &geometry)
        }) {
            Ok(true) => detector.judge_captured(size),
            _ => Motion::Unknown,
        };
        self.judged = Some((key, m));
        Some(m)
    }

    /// Passes one frame through every subscription's gates, sends the due ones, and
    /// tells the waiter when the next frame is worth a wake-up.
    async fn offer(&mut self, reader: &RingReader, info: FrameInfo) {
        let geometry = reader.geometry();
        let motion = if self.subs.iter().any(|s| s.gate.is_due(info.capture_ts_ns)) {
            self.motion_of(reader, &info)
        } else {
            None
        };
        let keepalive = self.spec.motion.keepalive_fps;
        for i in 0..self.subs.len() {
            let sub = &mut self.subs[i];
            if !sub.gate.is_due(info.capture_ts_ns) {
                continue;
            }
            if let Some(m) = motion {
                let skip = motion::may_skip(
                    m,
                    sub.last_result.is_some(),
                    sub.last_inferred_ts,
                    info.capture_ts_ns,
                    keepalive,
                );
                if skip && sub.gate.offer(info.capture_ts_ns, true) == Verdict::Send {
                    if let Some(last) = &sub.last_result {
                        let record = reused_record(
                            &self.spec.camera,
                            &sub.spec,
                            info.frame_id,
                            info.capture_ts_ns,
                            last,
                        );
                        sub.metrics.motion_skipped.fetch_add(1, Ordering::Relaxed);
                        self.results.push(record);
                    }
                    continue;
                }
            }
            let (ready, server_pid) = {
                let st = sub.status.borrow();
                if st.ready_epoch != sub.seen_epoch {
                    // A new server process: any connection is to the old, dead one.
                    sub.seen_epoch = st.ready_epoch;
                    let lost = sub.link.disconnect() as u64;
                    sub.metrics.disconnects.fetch_add(lost, Ordering::Relaxed);
                    sub.link.reset_retry();
                }
                (st.state == ProcState::Ready, st.pid)
            };
            let mut can_send = ready && sub.link.in_flight.len() < sub.spec.max_in_flight as usize;
            if can_send {
                // The pid the supervisor spawned: only that process may answer.
                let expected = server_pid.map_or(ExpectedPeer::ServiceUid, ExpectedPeer::Pid);
                match sub.link.ensure_connected(&self.events_tx, expected).await {
                    Ok(()) => {}
                    Err(e @ link::LinkError::Peer(_)) => {
                        sub.model.peer_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(camera = %self.spec.camera, model = %sub.spec.model, "{e}");
                        can_send = false;
                    }
                    Err(e) => {
                        tracing::debug!(camera = %self.spec.camera, model = %sub.spec.model, "{e}");
                        can_send = false;
                    }
                }
            }
            let verdict = sub.gate.offer(info.capture_ts_ns, can_send);
            sub.metrics
                .missed
                .store(sub.gate.missed(), Ordering::Relaxed);
            if verdict == Verdict::Missed {
                self.retry = true;
            }
            if verdict != Verdict::Send {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let sent_ts_ns = MonoNanos::now().get();
            let frame = FrameRef {
                ring: self.spec.ring.clone(),
                generation: reader.generation(),
                slot: info.slot,
                seq: info.seq,
            };
            let request = Request::Infer(InferenceRequest {
                v: PROTOCOL_VERSION,
                id,
                camera_id: self.spec.camera.clone(),
                model_id: sub.spec.model.clone(),
                frame: frame.clone(),
                meta: FrameMeta::from_geometry(info.frame_id, &geometry, info.capture_ts_ns),
                sent_ts_ns,
                deadline_ts_ns: Some(sent_ts_ns + self.spec.request_timeout.as_nanos() as u64),
            });
            match sub.link.send(&request, SEND_TIMEOUT).await {
                Ok(()) => {
                    sub.link.in_flight.insert(
                        id,
                        Pending {
                            frame_id: info.frame_id,
                            capture_ts_ns: info.capture_ts_ns,
                            sent_at: Instant::now(),
                            frame: Some(frame),
                        },
                    );
                    sub.metrics.sent.fetch_add(1, Ordering::Relaxed);
                    sub.model.requests.fetch_add(1, Ordering::Relaxed);
                    sub.last_inferred_ts = Some(info.capture_ts_ns);
                }
                Err(e) => {
                    let lost = sub.link.disconnect() as u64 + 1;
                    sub.metrics.disconnects.fetch_add(lost, Ordering::Relaxed);
                    sub.model.failures.fetch_add(lost, Ordering::Relaxed);
                    tracing::debug!(camera = %self.spec.camera, model = %sub.spec.model, "{e}");
                }
            }
        }
        self.set_due();
    }

    /// Tells the waiter the capture time of the next slot start of any subscription.
    fn set_due(&self) {
        let at = self
            .subs
            .iter()
            .map(|s| s.gate.next_due_ns())
            .min()
            .unwrap_or(0);
        // Farther ahead than two of the longest intervals (plus a second) means the
        // capture clock jumped: the waiter then wakes for every frame again.
        let horizon = self
            .subs
            .iter()
            .map(|s| s.gate.interval_ns())
            .max()
            .unwrap_or(0)
            .saturating_mul(2)
            .saturating_add(1_000_000_000);
        self.due.set(at, horizon);
    }

    fn on_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Closed { sub, conn, reason } => {
                let Some(s) = self.subs.get_mut(sub) else {
                    return;
                };
                if conn == s.link.conn() && s.link.is_connected() {
                    let lost = s.link.disconnect() as u64;
                    s.metrics.disconnects.fetch_add(lost, Ordering::Relaxed);
                    s.model.failures.fetch_add(lost, Ordering::Relaxed);
                    tracing::info!(camera = %self.spec.camera, model = %s.spec.model, lost, "connection closed: {reason}");
                }
            }
            LinkEvent::Answer {
                sub,
                conn,
                response,
            } => {
                let camera = self.spec.camera.clone();
                let Some(s) = self.subs.get_mut(sub) else {
                    return;
                };
                if conn != s.link.conn() {
                    return;
                }
                match response {
                    Response::InferResult(r) => {
                        // Unknown ids were already given up (timeout): ignore the late answer.
                        let Some(p) = s.link.in_flight.remove(&r.id) else {
                            return;
                        };
                        if let Some(err) = r.error {
                            s.metrics.count_error(err.code);
                            s.model.failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(camera = %camera, model = %s.spec.model, frame = p.frame_id, "{err}");
                            return;
                        }
                        let capture_ts_ns = p.capture_ts_ns;
                        let record =
                            make_record(&camera, &s.spec, p, r.frame_id, r.timings, r.detections);
                        s.last_result = Some((capture_ts_ns, record.detections.clone()));
                        let now = Instant::now();
                        let m = &s.metrics;
                        m.results.fetch_add(1, Ordering::Relaxed);
                        m.people
                            .store(record.count_of("person") as u64, Ordering::Relaxed);
                        m.detections
                            .store(record.detections.len() as u64, Ordering::Relaxed);
                        locked(&m.latency).record(record.latency_ms.capture_to_result);
                        locked(&m.rate).mark(now);
                        s.model.results.fetch_add(1, Ordering::Relaxed);
                        locked(&s.model.round_trip).record(record.latency_ms.request_to_result);
                        locked(&s.model.server).record(record.latency_ms.server_total);
                        locked(&s.model.inference).record(record.latency_ms.inference);
                        self.results.push(record);
                    }
                    Response::Error { id, error, .. } => {
                        if let Some(id) = id {
                            s.link.in_flight.remove(&id);
                        }
                        s.metrics.count_error(error.code);
                        s.model.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(camera = %camera, model = %s.spec.model, "server refused a request: {error}");
                        if error.code.closes_connection() {
                            let lost = s.link.disconnect() as u64;
                            s.metrics.disconnects.fetch_add(lost, Ordering::Relaxed);
                        }
                    }
                    other => {
                        tracing::debug!(camera = %camera, "unexpected {} answer", other.type_name())
                    }
                }
            }
        }
    }

    async fn drain(&mut self) {
        self.stopping = true;
        let deadline = tokio::time::Instant::now() + self.spec.drain_timeout;
        while self.subs.iter().any(|s| !s.link.in_flight.is_empty()) {
            tokio::select! {
                Some(event) = self.events_rx.recv() => self.on_event(event),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let left: usize = self.subs.iter().map(|s| s.link.in_flight.len()).sum();
        if left > 0 {
            tracing::warn!(camera = %self.spec.camera, left, "stopped with answers outstanding");
        }
    }
}

fn make_record(
    camera: &str,
    spec: &SubSpec,
    p: Pending,
    frame_id: u64,
    t: proto_schema::message::Timings,
    mut detections: Vec<proto_schema::message::Detection>,
) -> ResultRecord {
    if !spec.classes.is_empty() {
        detections.retain(|d| spec.classes.contains(&d.class_name));
    }
    let age_ns = UnixNanos(p.capture_ts_ns).age().as_nanos() as u64;
    let unix_ns = UnixNanos::now().get();
    ResultRecord {
        camera: camera.to_owned(),
        model: spec.model.clone(),
        frame_id,
        capture_ts_ns: p.capture_ts_ns,
        capture_unix_ms: unix_ns.saturating_sub(age_ns) / 1_000_000,
        result_unix_ms: unix_ns / 1_000_000,
        latency_ms: Latencies {
            capture_to_result: age_ns as f64 / 1e6,
            request_to_result: p.sent_at.elapsed().as_secs_f64() * 1e3,
            server_total: t.total_us as f64 / 1e3,
            inference: t.inference_us as f64 / 1e3,
        },
        detections,
        frame: p.frame,
        reused: false,
        result_age_ms: None,
        track_ids: Vec::new(),
        events: Vec::new(),
    }
}

/// The record of a still frame answered with the subscription's last result (`last`:
/// its frame's capture time and detections), without inference.
fn reused_record(
    camera: &str,
    spec: &SubSpec,
    frame_id: u64,
    capture_ts_ns: u64,
    last: &(u64, Vec<Detection>),
) -> ResultRecord {
    let age_ns = UnixNanos(capture_ts_ns).age().as_nanos() as u64;
    let unix_ns = UnixNanos::now().get();
    ResultRecord {
        camera: camera.to_owned(),
        model: spec.model.clone(),
        frame_id,
        capture_ts_ns,
        capture_unix_ms: unix_ns.saturating_sub(age_ns) / 1_000_000,
        result_unix_ms: unix_ns / 1_000_000,
        latency_ms: Latencies {
            capture_to_result: age_ns as f64 / 1e6,
            ..Latencies::default()
        },
        detections: last.1.clone(),
        frame: None,
        reused: true,
        result_age_ms: Some(capture_ts_ns.saturating_sub(last.0) as f64 / 1e6),
        track_ids: Vec::new(),
        events: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::message::{Detection, InferenceResponse, Timings};
    use proto_schema::pixel::{FrameGeometry, PixelFormat};
    use shm_ring::{RingState, RingWriter};

    /// A model server stand-in: answers every request at once with one person.
    async fn fake_server(listener: tokio::net::UnixListener) {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = framebus_client::Connection::with_default_limit(stream);
                while let Ok(Some(request)) = conn.read_request().await {
                    let Request::Infer(req) = request else {
                        return;
                    };
                    let answer = Response::InferResult(InferenceResponse {
                        v: PROTOCOL_VERSION,
                        id: req.id,
                        model_id: req.model_id.clone(),
                        camera_id: req.camera_id.clone(),
                        frame_id: req.meta.frame_id,
                        detections: vec![det("person")],
                        timings: Timings::default(),
                        error: None,
                    });
                    if conn.write_message(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    struct Run {
        frames: u64,
        wakeups: u64,
        sent: u64,
        missed: u64,
        skipped: u64,
        records: Vec<ResultRecord>,
    }

    /// Runs one agent on a real ring fed at 25 fps for `frames` frames (real time: the
    /// waiter sleeps on the real clock), with a 5 fps subscription.
    async fn run_agent(frames: u64, server_ready: bool, motion: MotionConfig, moving: bool) -> Run {
        run_agents(1, frames, server_ready, motion, moving)
            .await
            .remove(0)
    }

    /// [`run_agent`] for `cameras` cameras of one model, their frames published at the
    /// same instants, their phases from one registry.
    async fn run_agents(
        cameras: usize,
        frames: u64,
        server_ready: bool,
        motion: MotionConfig,
        moving: bool,
    ) -> Vec<Run> {
        let dir = tempfile::tempdir().unwrap();
        let g = FrameGeometry::packed(64, 32, PixelFormat::Nv12).unwrap();
        let socket = dir.path().join("m.sock");
        let server = tokio::spawn(fake_server(
            tokio::net::UnixListener::bind(&socket).unwrap(),
        ));
        let status = |ready: bool| ProcStatus {
            state: if ready {
                ProcState::Ready
            } else {
                ProcState::Starting
            },
            ready_epoch: 1,
            ..ProcStatus::default()
        };
        let (_k, kernel) = watch::channel(status(true));
        let (_m, model) = watch::channel(status(server_ready));
        let metrics = Metrics::default();
        let results = ResultQueue::new(4096);
        let phases = PhaseRegistry::new();
        let mut rings = Vec::new();
        let mut agents = Vec::new();
        for c in 0..cameras {
            let name = format!("cam{c}");
            let ring = RingWriter::builder(name.clone())
                .dir(dir.path())
                .slots(8)
                .geometry(g)
                .create()
                .unwrap();
            ring.set_state(RingState::Live);
            rings.push(ring);
            let spec = AgentSpec {
                camera: name.clone(),
                ring_dir: dir.path().to_path_buf(),
                ring: name,
                subs: vec![SubSpec {
                    model: "m".into(),
                    socket: socket.clone(),
                    fps: 5.0,
                    classes: vec![],
                    max_in_flight: 1,
                }],
                request_timeout: Duration::from_secs(2),
                drain_timeout: Duration::from_secs(1),
                max_message: 1 << 20,
                motion: motion.clone(),
            };
            agents.push(AgentHandle::spawn(
                spec,
                kernel.clone(),
                vec![model.clone()],
                &metrics,
                results.clone(),
                &phases,
            ));
        }
        // Let the agents open their rings before the first frame.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..frames {
            let now = UnixNanos::now().get();
            for ring in &mut rings {
                let mut slot = ring.begin_write();
                let data = slot.data_mut();
                data.fill(100);
                if moving {
                    // A bright bar sweeping across the luma plane.
                    let x = (i as usize * 3) % 60;
                    for y in 0..32 {
                        data[y * 64 + x..y * 64 + x + 4].fill(250);
                    }
                }
                slot.publish(i as i64 * 40_000_000, now);
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        for agent in agents {
            agent.stop().await;
        }
        server.abort();
        let mut records = Vec::new();
        while let Some(batch) = results.pop_all(Duration::ZERO).filter(|b| !b.is_empty()) {
            records.extend(batch);
        }
        (0..cameras)
            .map(|c| {
                let id = format!("cam{c}");
                let cam = metrics.camera(&id);
                let sub = cam.sub("m");
                Run {
                    frames,
                    wakeups: cam.wakeups.load(Ordering::Relaxed),
                    sent: sub.sent.load(Ordering::Relaxed),
                    missed: sub.missed.load(Ordering::Relaxed),
                    skipped: sub.motion_skipped.load(Ordering::Relaxed),
                    records: records.iter().filter(|r| r.camera == id).cloned().collect(),
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cameras_of_one_model_send_in_their_own_phase() {
        // Two cameras publishing at the same instants: the first one's slots start on
        // multiples of 200 ms, the second one's 100 ms later.
        let runs = run_agents(2, 50, true, MotionConfig::default(), true).await;
        const SLOT: u64 = 200_000_000;
        for (c, run) in runs.iter().enumerate() {
            let phase = c as u64 * SLOT / 2;
            let offsets: Vec<u64> = run
                .records
                .iter()
                .map(|r| (r.capture_ts_ns + SLOT - phase) % SLOT / 1_000_000)
                .collect();
            println!("camera {c}: sent frames {offsets:?} ms after its slot starts");
            assert!(offsets.len() >= 4, "{offsets:?}");
            // After the very first frame (sent at once, wherever its slot stood): the
            // first frame at or after the slot start, within a frame interval or two,
            // never in the other camera's half of the interval.
            assert!(
                offsets[1..].iter().all(|&o| o < 100),
                "camera {c}: {offsets:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_25fps_camera_gated_to_5_wakes_the_agent_per_slot_not_per_frame() {
        let r = run_agent(75, true, MotionConfig::default(), true).await;
        println!(
            "wake-ups: {} for {} frames published ({:.2} per frame; before: 1 per frame), {} sent, {} missed",
            r.wakeups,
            r.frames,
            r.wakeups as f64 / r.frames as f64,
            r.sent,
            r.missed
        );
        // 3 s at 5 fps: about 15 slots. Every wake-up was for a due frame...
        assert!(r.sent >= 5, "{} sent", r.sent);
        assert!(
            r.wakeups <= r.sent + r.missed + 2,
            "{} wake-ups, {} sent",
            r.wakeups,
            r.sent
        );
        // ...so far fewer than one per frame (about 1 in 5).
        assert!(
            r.wakeups * 2 < r.frames,
            "{} wake-ups for {} frames",
            r.wakeups,
            r.frames
        );
        assert_eq!(r.missed, 0);
        assert_eq!(r.records.len() as u64, r.sent);
        assert!(r
            .records
            .iter()
            .all(|x| !x.reused && x.count_of("person") == 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_that_is_down_costs_one_wake_up_and_one_missed_slot_per_slot() {
        let r = run_agent(75, false, MotionConfig::default(), true).await;
        println!(
            "model down: {} wake-ups, {} missed for {} frames",
            r.wakeups, r.missed, r.frames
        );
        assert_eq!(r.sent, 0);
        // About 15 slots had frames; each is missed once, none twice.
        assert!((5..=17).contains(&r.missed), "{} missed", r.missed);
        assert!(
            r.wakeups * 2 < r.frames,
            "{} wake-ups for {} frames",
            r.wakeups,
            r.frames
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_still_scene_reuses_results_within_the_keepalive() {
        let motion = MotionConfig {
            enabled: true,
            keepalive_fps: 1.0,
            ..MotionConfig::default()
        };
        let r = run_agent(75, true, motion.clone(), false).await;
        let reused: Vec<&ResultRecord> = r.records.iter().filter(|x| x.reused).collect();
        println!(
            "still scene: {} inferences, {} reused ({} counted as saved)",
            r.sent,
            reused.len(),
            r.skipped
        );
        assert_eq!(reused.len() as u64, r.skipped);
        assert!(r.skipped > r.sent, "{} saved, {} sent", r.skipped, r.sent);
        for x in &reused {
            let age = x.result_age_ms.unwrap();
            // Never older than the keep-alive interval (1 s) allows.
            assert!((0.0..1_000.0).contains(&age), "{age}");
            assert_eq!(x.count_of("person"), 1);
        }
        // Motion: nothing is reused.
        let moving = run_agent(50, true, motion, true).await;
        assert_eq!(moving.skipped, 0);
        assert!(moving.records.iter().all(|x| !x.reused));
    }

    fn det(name: &str) -> Detection {
        Detection {
            class_id: 0,
            class_name: name.into(),
            confidence: 0.9,
            bbox: [0.1, 0.1, 0.2, 0.2],
        }
    }

    #[test]
    fn records_carry_latencies_and_keep_only_subscribed_classes() {
        let spec = SubSpec {
            model: "m".into(),
            socket: "/s".into(),
            fps: 5.0,
            classes: vec!["person".into()],
            max_in_flight: 1,
        };
        let captured = UnixNanos::now().get() - 40_000_000;
        let p = Pending {
            frame_id: 7,
            capture_ts_ns: captured,
            sent_at: Instant::now(),
            frame: None,
        };
        let t = Timings {
            total_us: 12_000,
            inference_us: 9_000,
            ..Timings::default()
        };
        let r = make_record(
            "cam",
            &spec,
            p.clone(),
            7,
            t,
            vec![det("person"), det("car"), det("person")],
        );
        assert_eq!(
            (r.camera.as_str(), r.model.as_str(), r.frame_id),
            ("cam", "m", 7)
        );
        assert_eq!(r.detections.len(), 2);
        assert_eq!(r.count_of("person"), 2);
        assert!(r.latency_ms.capture_to_result >= 40.0, "{:?}", r.latency_ms);
        assert_eq!(
            (r.latency_ms.server_total, r.latency_ms.inference),
            (12.0, 9.0)
        );
        assert!(r.capture_unix_ms <= r.result_unix_ms);
        let all = SubSpec {
            classes: vec![],
            ..spec
        };
        assert_eq!(
            make_record("cam", &all, p, 7, t, vec![det("car")])
                .detections
                .len(),
            1
        );
    }
}
