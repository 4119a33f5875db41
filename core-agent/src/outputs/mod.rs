//! Broker outputs: events, counts rows, camera status and (optionally) detections to
//! an MQTT broker, and events to Redis Streams.
//!
//! Each broker is a sink behind the analytics writer's [`EventSink`] interface, like
//! the `events.jsonl` file; the sink only pushes into the broker's own bounded
//! [`DeliveryBuffer`] and returns, so the writer thread (and every stream agent
//! before it) never waits on a broker. A worker thread per broker connects,
//! reconnects with exponential backoff plus jitter ([`broker_backoff`]), and sends the
//! buffer in order, removing an item only once the broker confirmed it. Overflow
//! policy: the buffer drops its **oldest** item, counted in
//! `framebus_broker_dropped_total`. Topics and payloads: `docs/events.md`.
//!
//! A broker that is down never stops the system: `/health` stays `200` and says
//! `"status": "degraded"` with each sink's state and last error (a liveness probe
//! must not restart the agent because a broker is away; `/ready` is unchanged).

pub mod buffer;
pub mod mqtt;
pub mod payload;
pub mod redis_streams;
pub mod tls;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Serialize;

use crate::analytics::counts::CountRow;
use crate::analytics::events::Event;
use crate::analytics::sink::EventSink;
use crate::config::outputs::BrokerSettings;
use crate::results::{ResultRecord, Sink, SinkError};
use buffer::DeliveryBuffer;
pub use payload::{Item, ItemKind};

/// Connection state of one broker sink, as `/health` and `/status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Not connected yet (first attempt under way).
    Connecting,
    /// Connected.
    Connected,
    /// The last attempt or the connection failed; the next attempt is scheduled.
    Reconnecting,
    /// Shut down.
    Stopped,
}

#[derive(Debug, Clone)]
struct LinkInfo {
    state: LinkState,
    last_error: Option<String>,
    since_unix_ms: u64,
}

/// What one broker sink shares with the API: state, counters, buffer.
#[derive(Debug)]
pub struct BrokerLink {
    /// `mqtt` or `redis`.
    pub kind: &'static str,
    /// `host:port` (no credentials).
    pub target: String,
    info: Mutex<LinkInfo>,
    connected: AtomicBool,
    reconnects: AtomicU64,
    /// Items awaiting delivery.
    pub buffer: DeliveryBuffer<Item>,
    /// The latest retained item per camera (its MQTT status), published again by the
    /// worker after every (re)connect: a broker restarted without persistence has lost
    /// it, and the state may not change again for hours.
    retained: Mutex<std::collections::BTreeMap<Arc<str>, Item>>,
}

/// One sink's state as `/health` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// `mqtt` or `redis`.
    pub sink: &'static str,
    /// `host:port`.
    pub target: String,
    /// Connection state.
    pub state: LinkState,
    /// The last connection error, if the last attempt failed or the link was lost
    /// (cleared by a good connection).
    pub last_error: Option<String>,
    /// Since when the state holds, Unix ms.
    pub since_unix_ms: u64,
    /// Items waiting in the buffer.
    pub buffered: usize,
    /// Items the broker confirmed.
    pub delivered: u64,
    /// Items dropped because the buffer was full.
    pub dropped: u64,
    /// Connection attempts after a failure or a lost connection.
    pub reconnects: u64,
}

impl BrokerLink {
    /// A link to `target` with a buffer of `capacity` items.
    pub fn new(kind: &'static str, target: String, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            kind,
            target,
            info: Mutex::new(LinkInfo {
                state: LinkState::Connecting,
                last_error: None,
                since_unix_ms: unix_now_ms(),
            }),
            connected: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            buffer: DeliveryBuffer::new(capacity),
            retained: Mutex::default(),
        })
    }

    /// Sends `item` and keeps it as its camera's retained state (see [`Self::retained`]).
    pub fn push_retained(&self, item: Item) {
        let mut kept = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        kept.insert(item.camera.clone(), item.clone());
        self.buffer.push(item);
    }

    /// Forgets `camera`'s retained state and sends an empty retained status, which
    /// clears it on the broker (a removed camera must not stay `live` there).
    pub fn clear_retained(&self, camera: &str) {
        let mut kept = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        kept.remove(camera);
        self.buffer.push(Item::status_cleared(camera));
    }

    /// Every camera's retained item, for the worker to publish after a connect (before
    /// the buffer, which may hold newer ones: those then win).
    pub fn retained(&self) -> Vec<Item> {
        let kept = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        kept.values().cloned().collect()
    }

    fn set(&self, state: LinkState, error: Option<String>) {
        let mut i = self.info.lock().unwrap_or_else(|e| e.into_inner());
        self.connected
            .store(state == LinkState::Connected, Ordering::Relaxed);
        if i.state != state {
            i.since_unix_ms = unix_now_ms();
        }
        match &state {
            LinkState::Connected => i.last_error = None,
            _ if error.is_some() => i.last_error = error,
            _ => {}
        }
        i.state = state;
    }

    /// The worker connected.
    pub fn connected(&self) {
        self.set(LinkState::Connected, None);
    }

    /// A connection attempt failed or the connection was lost with `error`.
    pub fn failed(&self, error: String) {
        self.set(LinkState::Reconnecting, Some(error));
    }

    /// The worker starts another connection attempt after a failure.
    pub fn count_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// The worker stopped.
    pub fn stopped(&self) {
        self.set(LinkState::Stopped, None);
    }

    /// Whether the link is up now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Its report.
    pub fn report(&self) -> LinkReport {
        let i = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
        LinkReport {
            sink: self.kind,
            target: self.target.clone(),
            state: i.state,
            last_error: i.last_error,
            since_unix_ms: i.since_unix_ms,
            buffered: self.buffer.len(),
            delivered: self.buffer.delivered(),
            dropped: self.buffer.dropped(),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// Why a broker sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    /// The password could not be read.
    #[error("{sink}: {source}")]
    Secret {
        /// `mqtt` or `redis`.
        sink: &'static str,
        /// Underlying error.
        source: crate::config::outputs::SecretError,
    },
    /// The settings were refused by the client library.
    #[error("{sink}: {reason}")]
    Settings {
        /// `mqtt` or `redis`.
        sink: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration (`mqtts://`) could not be built from its files.
    #[error("{sink}: {source}")]
    Tls {
        /// `mqtt`.
        sink: &'static str,
        /// Underlying error.
        #[source]
        source: tls::TlsError,
    },
    /// The worker thread could not be started.
    #[error("{sink}: cannot start the worker thread: {source}")]
    Thread {
        /// `mqtt` or `redis`.
        sink: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A metric family: name, kind, help, value of one sink.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LinkReport) -> String,
);

/// The running broker sinks.
#[derive(Debug, Default)]
pub struct Brokers {
    /// The MQTT link, if configured.
    pub mqtt: Option<Arc<BrokerLink>>,
    /// The Redis link, if configured.
    pub redis: Option<Arc<BrokerLink>>,
    /// MQTT topic prefix.
    pub mqtt_prefix: String,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Brokers {
    /// Starts a worker per configured broker.
    pub fn start(settings: &BrokerSettings) -> Result<Arc<Self>, BrokerStartError> {
        let mut b = Brokers::default();
        let mut threads = Vec::new();
        if let Some(m) = &settings.mqtt {
            let (link, t) = mqtt::start(m)?;
            b.mqtt = Some(link);
            b.mqtt_prefix = m.topic_prefix.clone();
            threads.push(t);
        }
        if let Some(r) = &settings.redis {
            let (link, t) = redis_streams::start(r)?;
            b.redis = Some(link);
            threads.push(t);
        }
        b.threads = Mutex::new(threads);
        Ok(Arc::new(b))
    }

    /// Every link.
    pub fn links(&self) -> impl Iterator<Item = &Arc<BrokerLink>> {
        self.mqtt.iter().chain(self.redis.iter())
    }

    /// Whether any sink is configured.
    pub fn is_empty(&self) -> bool {
        self.mqtt.is_none() && self.redis.is_none()
    }

    /// Every sink's report.
    pub fn reports(&self) -> Vec<LinkReport> {
        self.links().map(|l| l.report()).collect()
    }

    /// Whether every configured sink is connected.
    pub fn all_connected(&self) -> bool {
        self.links().all(|l| l.is_connected())
    }

    /// An [`EventSink`] for the analytics writer feeding every link, or `None`.
    pub fn event_sink(&self) -> Option<Box<dyn EventSink>> {
        (!self.is_empty()).then(|| {
            Box::new(BrokerEventSink {
                mqtt: self.mqtt.clone(),
                redis: self.redis.clone(),
            }) as Box<dyn EventSink>
        })
    }

    /// Closes the buffers, lets each worker drain (bounded by its `drain_timeout_ms`
    /// while connected) and joins them.
    pub fn finish(&self) {
        for l in self.links() {
            l.buffer.close();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Appends the broker families to a Prometheus text exposition.
    pub fn prometheus(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        let reports = self.reports();
        let families: [Family; 5] = [
            (
                "framebus_broker_delivered_total",
                "counter",
                "Items (events, counts rows, status, detections) the broker confirmed.",
                |r| r.delivered.to_string(),
            ),
            (
                "framebus_broker_dropped_total",
                "counter",
                "Items dropped because the sink's buffer was full (oldest first).",
                |r| r.dropped.to_string(),
            ),
            (
                "framebus_broker_reconnects_total",
                "counter",
                "Connection attempts after a failure or a lost connection.",
                |r| r.reconnects.to_string(),
            ),
            (
                "framebus_broker_connected",
                "gauge",
                "1 while the sink is connected to its broker.",
                |r| u8::from(r.state == LinkState::Connected).to_string(),
            ),
            (
                "framebus_broker_buffered",
                "gauge",
                "Items waiting in the sink's buffer.",
                |r| r.buffered.to_string(),
            ),
        ];
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for r in &reports {
                let _ = writeln!(out, "{name}{{sink=\"{}\"}} {}", r.sink, value(r));
            }
        }
    }
}

/// The analytics writer's view of the brokers: pushes, never waits.
#[derive(Debug)]
struct BrokerEventSink {
    mqtt: Option<Arc<BrokerLink>>,
    redis: Option<Arc<BrokerLink>>,
}

impl EventSink for BrokerEventSink {
    fn name(&self) -> &str {
        "brokers"
    }
    fn write(&mut self, event: &Event) -> Result<(), SinkError> {
        let item = Item::event(event).map_err(|source| SinkError::Encode {
            sink: "brokers".into(),
            source,
        })?;
        if let Some(m) = &self.mqtt {
            m.buffer.push(item.clone());
        }
        if let Some(r) = &self.redis {
            r.buffer.push(item);
        }
        Ok(())
    }
    fn write_row(&mut self, row: &CountRow) -> Result<(), SinkError> {
        if let Some(m) = &self.mqtt {
            let item = Item::counts(row).map_err(|source| SinkError::Encode {
                sink: "brokers".into(),
                source,
            })?;
            m.buffer.push(item);
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A result sink publishing `<prefix><camera>/detections` (QoS 0), at most one record
/// per camera per `interval_ms` of capture time; the others are skipped (counted in
/// nothing: they are a preview, not a record).
#[derive(Debug)]
pub struct DetectionsSink {
    link: Arc<BrokerLink>,
    interval_ms: u64,
    last: std::collections::HashMap<String, u64>,
}

impl DetectionsSink {
    /// Detections to `link`, rate-limited per camera.
    pub fn new(link: Arc<BrokerLink>, interval_ms: u64) -> Self {
        Self {
            link,
            interval_ms,
            last: Default::default(),
        }
    }

    /// Whether a record of `camera` captured at `unix_ms` is published.
    fn admit(&mut self, camera: &str, unix_ms: u64) -> bool {
        match self.last.get_mut(camera) {
            Some(at) if unix_ms < at.saturating_add(self.interval_ms) && unix_ms >= *at => false,
            Some(at) => {
                *at = unix_ms;
                true
            }
            None => {
                self.last.insert(camera.to_owned(), unix_ms);
                true
            }
        }
    }
}

impl Sink for DetectionsSink {
    fn name(&self) -> &str {
        "mqtt:detections"
    }
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        if record.reused || !self.admit(&record.camera, record.capture_unix_ms) {
            return Ok(());
        }
        let item = Item::detections(record).map_err(|source| SinkError::Encode {
            sink: "mqtt:detections".into(),
            source,
        })?;
        self.link.buffer.push(item);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Pushes each camera's state to the MQTT link (retained `<camera>/status`) when it
/// changed, checked every `every`, until `shutdown`; a camera gone from the system gets
/// its retained status cleared.
pub fn spawn_status(
    shared: Arc<crate::system::Shared>,
    link: Arc<BrokerLink>,
    every: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut last: std::collections::HashMap<String, (String, bool)> = Default::default();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let cameras = crate::status::cameras(&shared);
            last.retain(|id, _| {
                let here = cameras.iter().any(|c| &c.id == id);
                if !here {
                    link.clear_retained(id);
                }
                here
            });
            for c in cameras {
                let now = (c.state.clone(), c.running);
                if last.get(&c.id) == Some(&now) {
                    continue;
                }
                let msg = payload::CameraStatusMessage {
                    camera: c.id.clone(),
                    state: c.state.clone(),
                    running: c.running,
                    unix_ms: unix_now_ms(),
                };
                if let Ok(item) = Item::status(&msg) {
                    link.push_retained(item);
                }
                last.insert(c.id, now);
            }
        }
    });
}

fn unix_now_ms() -> u64 {
    crate::clock::UnixNanos::now().get() / 1_000_000
}

/// The reconnect schedule of one broker connection (`[brokers.defaults]`
/// `backoff_initial_ms` / `backoff_max_ms`): doubling, with equal jitter into `[d/2, d)`
/// so agents restarted together do not hit a broker in lock step (see
/// [`proto_schema::backoff`]).
pub fn broker_backoff(initial_ms: u64, max_ms: u64) -> proto_schema::backoff::Backoff {
    use proto_schema::backoff::{Backoff, BackoffPolicy, SplitMix64, Spread};
    Backoff::new(
        BackoffPolicy {
            initial: std::time::Duration::from_millis(initial_ms),
            max: std::time::Duration::from_millis(max_ms),
            spread: Spread::Equal,
        },
        SplitMix64::from_entropy(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_are_rate_limited_per_camera_by_capture_time() {
        let link = BrokerLink::new("mqtt", "x:1".into(), 10);
        let mut s = DetectionsSink::new(link, 1000);
        assert!(s.admit("a", 10_000));
        assert!(!s.admit("a", 10_500));
        assert!(s.admit("b", 10_500));
        assert!(s.admit("a", 11_000));
        // A clock step back re-arms instead of muting the camera.
        assert!(s.admit("a", 5_000));
    }

    /// Issue 25, item 5b: what the worker republishes after a connect is each camera's
    /// latest status, and a cleared camera is not among them (its empty retained
    /// message goes out through the buffer).
    #[test]
    fn the_retained_status_is_the_latest_per_camera_until_cleared() {
        let link = BrokerLink::new("mqtt", "x:1".into(), 10);
        let status = |camera: &str, state: &str| {
            Item::status(&payload::CameraStatusMessage {
                camera: camera.into(),
                state: state.into(),
                running: true,
                unix_ms: 1,
            })
            .unwrap()
        };
        link.push_retained(status("a", "starting"));
        link.push_retained(status("b", "live"));
        link.push_retained(status("a", "live"));
        let kept: Vec<(String, String)> = link
            .retained()
            .iter()
            .map(|i| (i.camera.to_string(), i.json.to_string()))
            .collect();
        assert_eq!(kept.len(), 2);
        assert!(
            kept[0].0 == "a" && kept[0].1.contains("\"live\""),
            "{kept:?}"
        );
        link.clear_retained("b");
        let kept = link.retained();
        assert_eq!(kept.len(), 1);
        assert_eq!(&*kept[0].camera, "a");
        // Everything went through the buffer, the clearing last: empty and retained.
        assert_eq!(link.buffer.len(), 4);
        let last = link.buffer.peek_from(0, 4).pop().unwrap().1;
        assert_eq!(
            (last.kind, &*last.camera, &*last.json),
            (ItemKind::Status, "b", "")
        );
        assert_eq!(last.topic("framebus/"), "framebus/b/status");
    }

    #[test]
    fn link_state_keeps_the_last_error_until_connected() {
        let l = BrokerLink::new("redis", "127.0.0.1:1".into(), 4);
        l.failed("connection refused".into());
        l.count_reconnect();
        let r = l.report();
        assert_eq!(r.state, LinkState::Reconnecting);
        assert_eq!(r.last_error.as_deref(), Some("connection refused"));
        assert_eq!(r.reconnects, 1);
        l.connected();
        assert!(l.is_connected());
        assert_eq!(l.report().last_error, None);
    }

    #[test]
    fn metrics_name_every_sink() {
        let b = Brokers {
            mqtt: Some(BrokerLink::new("mqtt", "h:1".into(), 2)),
            ..Default::default()
        };
        let l = b.mqtt.as_ref().unwrap();
        for i in 0..3 {
            l.buffer.push(
                Item::status(&payload::CameraStatusMessage {
                    camera: format!("c{i}"),
                    state: "live".into(),
                    running: true,
                    unix_ms: 0,
                })
                .unwrap(),
            );
        }
        let mut out = String::new();
        b.prometheus(&mut out);
        assert!(
            out.contains("framebus_broker_dropped_total{sink=\"mqtt\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("framebus_broker_connected{sink=\"mqtt\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("framebus_broker_buffered{sink=\"mqtt\"} 2"),
            "{out}"
        );
    }
}
