//! Real brokers for the output tests: `mosquitto` and `redis-server` (Debian packages,
//! installed by scripts/setup.sh) on free loopback ports, stopped on drop; an MQTT
//! subscriber recording everything; the real-footage pipeline config.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use crate::common::{kill, wait_for};

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> u16 {
    framebus_testkit::net::free_port().expect("a free loopback port")
}

/// `GET /health`: the status code and the body as JSON (`Null` when it is not JSON).
pub fn health(agent: &crate::common::Agent) -> (u16, serde_json::Value) {
    let (code, body) = agent.http("GET", "/health", None);
    (
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A `mosquitto` on `127.0.0.1:<port>` with persistence in its temp dir, so a stop
/// (SIGTERM saves the database) and a start keep the subscriber's session and queue.
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    persistence: bool,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_with(true)
    }

    /// One without persistence: a restart loses every retained message and session.
    pub fn start_forgetful() -> Mosquitto {
        Mosquitto::start_with(false)
    }

    fn start_with(persistence: bool) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("framebus-mqtt")
            .tempdir()
            .unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
            persistence,
        };
        m.restart();
        m
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        std::fs::write(
            self.conf(),
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\nuser root\npersistence {}\npersistence_location {}/\nmax_queued_messages 100000\nmax_inflight_messages 100\n",
                self.port,
                self.persistence,
                self.dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.conf())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto; scripts/setup.sh does)");
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), "mosquitto to listen", || {
            port_open(port).then_some(())
        });
    }

    /// SIGTERM (it saves its database) and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(c.id(), libc::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `redis-server` on `127.0.0.1:<port>`, no persistence.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server; scripts/setup.sh does)");
        wait_for(Duration::from_secs(10), "redis-server to listen", || {
            port_open(port).then_some(())
        });
        Redis { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one MQTT subscriber received: (topic, payload, retained).
pub type Received = Arc<Mutex<Vec<(String, String, bool)>>>;

/// A QoS 1 subscriber to `filter` with a persistent session (`clean_session =
/// false`), so messages published while it reconnects after a broker restart are
/// queued for it. Runs on its own thread until the returned client is dropped.
pub struct Subscriber {
    pub received: Received,
    client: Client,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str) -> Subscriber {
        let mut opts = MqttOptions::new("framebus-test-sub", "127.0.0.1", port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut conn) = Client::new(opts, 64);
        let received: Received = Default::default();
        let r = received.clone();
        let c = client.clone();
        let filter = filter.to_owned();
        let thread = std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if !ack.session_present {
                            let _ = c.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        r.lock().unwrap().push((
                            p.topic.clone(),
                            String::from_utf8_lossy(&p.payload).into_owned(),
                            p.retain,
                        ));
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    // Broker away: the next iteration reconnects; do not spin.
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Subscriber {
            received,
            client,
            thread: Some(thread),
        }
    }

    /// Payloads received on `topic`, in order.
    pub fn on(&self, topic: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == topic)
            .map(|(_, p, _)| p.clone())
            .collect()
    }

    /// Event ids received on `topic` in order, each kept at its first arrival (QoS 1
    /// is at-least-once: a resend after a reconnect can repeat one).
    pub fn event_ids(&self, topic: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.on(topic)
            .iter()
            .filter_map(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .filter(|id| seen.insert(id.clone()))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The retained messages a new subscriber to `filter` gets now: (topic, payload) in
/// arrival order. A fresh clean session subscribes, then publishes a marker under the
/// filter; the broker delivers the retained messages before the marker, so all of them
/// are in once the marker arrives (no fixed wait).
pub fn retained_now(port: u16, filter: &str, marker_topic: &str) -> Vec<(String, String)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "framebus-test-retained-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 16);
    let marker = format!(
        "marker-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for ev in conn.iter() {
        assert!(
            std::time::Instant::now() < deadline,
            "no marker back from the broker"
        );
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.try_subscribe(filter, QoS::AtLeastOnce).unwrap();
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                client
                    .try_publish(marker_topic, QoS::AtLeastOnce, false, marker.clone())
                    .unwrap();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                if p.topic == marker_topic && payload == marker {
                    break;
                }
                if p.retain {
                    got.push((p.topic.clone(), payload));
                }
            }
            Ok(_) => {}
            Err(e) => panic!("retained subscriber: {e}"),
        }
    }
    let _ = client.disconnect();
    got
}

/// Event ids of `events.jsonl` in `dir`, in file order.
pub fn jsonl_event_ids(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

/// The real pipeline of `tests/analytics.rs`: the people footage played as a live
/// camera `walk` (looping, so a run can last as long as a test needs), `yolox_nano` at
/// 5 fps, a counting line, presence events (many events), 5 s counts intervals;
/// `brokers` appended.
pub fn pipeline_config(dirs: &crate::common::Dirs, assets: &Path, brokers: &str) -> String {
    let video = assets.join("video/people_walk_540p.mp4");
    let mut config = dirs.agent_table();
    config += "[analytics]\ninterval_s = 5\ncooldown_s = 0\n\n";
    config += &format!(
        "[[cameras]]\nid = \"walk\"\nsource = \"{}\"\nfps = 25\nring_slots = 32\nloop = true\n\n",
        video.display()
    );
    config += "[cameras.analytics]\n[cameras.analytics.tracker]\nmin_hits = 2\n\n";
    config += "[[cameras.analytics.lines]]\nname = \"mid\"\nfrom = [0.5, 0.25]\nto = [0.5, 0.75]\nclasses = [\"person\"]\nanchor = \"center\"\nhysteresis = 0.01\ncooldown_s = 0\n\n";
    config += &format!(
        "[[models]]\nid = \"yolox\"\npath = \"{}\"\n\n[[subscriptions]]\ncamera = \"walk\"\nmodel = \"yolox\"\nfps = 5\n\n",
        assets.join("models/yolox_nano.onnx").display()
    );
    config += brokers;
    config
}
