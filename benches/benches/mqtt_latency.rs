//! Event → MQTT message on a subscriber, on loopback (issue 13: p99 ≤ 50 ms).
//!
//! A real `mosquitto` on a free loopback port, the agent's own MQTT sink
//! (`core_agent::outputs::Brokers`, the same code the writer thread calls) and a QoS 1
//! subscriber. Each event is written through the sink's `EventSink::write` (what the
//! analytics writer thread does) and timed until the subscriber has it. Events are
//! paced (`FRAMEBUS_MQTT_BENCH_GAP_MS`, default 5 ms) so the number is the path's
//! latency, not a queue built by the benchmark itself. Prints p50 / p99 / max.
//!
//! Baseline, measured in the same run and interleaved event by event (so both see the
//! same load on a shared box): the same JSON published by a bare `rumqttc` client at
//! QoS 1 straight to the same broker and subscriber. The ratio of the two p99 is what
//! the agent's sink adds (buffer, worker wake-up, window) over the client library.
//!
//! `cargo bench -p benches --bench mqtt_latency` (`FRAMEBUS_MQTT_BENCH_EVENTS`,
//! default 2000; a smoke run: 200).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use core_agent::analytics::events::{Event, EventKind};
use core_agent::config::outputs::{BrokerSettings, MqttSettings};
use core_agent::outputs::Brokers;
use rumqttc::{Client, MqttOptions, Packet, QoS};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env_num("FRAMEBUS_MQTT_BENCH_EVENTS", 2000);
    let gap = Duration::from_millis(env_num("FRAMEBUS_MQTT_BENCH_GAP_MS", 5));
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"),
    )
    .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (apt-get install mosquitto)");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Subscriber: arrival time per event id.
    let arrived: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (sub, mut conn) = Client::new(opts, 64);
    sub.subscribe("framebus/+/events", QoS::AtLeastOnce)
        .unwrap();
    sub.subscribe("baseline/+/events", QoS::AtLeastOnce)
        .unwrap();
    let a = arrived.clone();
    let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(Packet::SubAck(ack))) => {
                    let _ = subscribed_tx.send(ack.pkid);
                }
                Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                        if let Some(id) = v["id"].as_str() {
                            a.lock().unwrap().insert(id.to_owned(), now);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    for _ in 0..2 {
        subscribed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
    }

    // The baseline publisher: a bare rumqttc client, its event loop on a thread.
    let mut opts = MqttOptions::new("bench-baseline", "127.0.0.1", port);
    opts.set_max_packet_size(1 << 20, 1 << 20).set_inflight(100);
    let (raw, mut raw_conn) = Client::new(opts, 256);
    let (raw_up_tx, raw_up_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for ev in raw_conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = raw_up_tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    raw_up_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("baseline client connected");

    let brokers = Brokers::start(&BrokerSettings {
        mqtt: Some(MqttSettings {
            url: format!("mqtt://127.0.0.1:{port}"),
            ..MqttSettings::default()
        }),
        redis: None,
    })
    .unwrap();
    let link = brokers.mqtt.clone().unwrap();
    let t0 = Instant::now();
    while !link.is_connected() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sink did not connect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut sink = brokers.event_sink().unwrap();
    let mut sent: Vec<(String, Instant)> = Vec::with_capacity(n as usize);
    let mut base_sent: Vec<(String, Instant)> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let e = Event {
            id: format!("bench-{i}"),
            kind: EventKind::LineCrossed,
            camera: "cam".into(),
            model: "m".into(),
            rule: "door".into(),
            track: i,
            class: "person".into(),
            score: 0.9,
            bbox: [0.1, 0.2, 0.3, 0.4],
            direction: None,
            dwell_ms: None,
            capture_ts_ns: i,
            capture_unix_ms: i,
            frame_id: i,
            frame: None,
            suppressed: 0,
            clip: None,
        };
        let at = Instant::now();
        sink.write(&e).unwrap();
        sent.push((e.id.clone(), at));
        std::thread::sleep(gap / 2);
        // The baseline: the same JSON through a bare client.
        let mut b = e;
        b.id = format!("base-{i}");
        let payload = serde_json::to_vec(&b).unwrap();
        let at = Instant::now();
        raw.publish("baseline/cam/events", QoS::AtLeastOnce, false, payload)
            .unwrap();
        base_sent.push((b.id, at));
        std::thread::sleep(gap / 2);
    }
    let t0 = Instant::now();
    while arrived.lock().unwrap().len() < sent.len() + base_sent.len()
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let arrived = arrived.lock().unwrap().clone();
    let stats = |what: &str, sent: &[(String, Instant)]| -> f64 {
        let mut lat: Vec<f64> = sent
            .iter()
            .filter_map(|(id, at)| arrived.get(id).map(|r| (*r - *at).as_secs_f64() * 1e3))
            .collect();
        assert!(!lat.is_empty(), "{what}: nothing arrived");
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
        println!(
            "{what} -> subscriber, {} of {n} events, {} ms apart: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            lat.len(),
            gap.as_millis(),
            pct(0.50),
            pct(0.99),
            pct(1.0)
        );
        pct(0.99)
    };
    let sink_p99 = stats("mqtt event (agent sink)", &sent);
    let base_p99 = stats("baseline (bare rumqttc publish)", &base_sent);
    println!(
        "p99 ratio sink / baseline: {:.2} (sink adds {:.3} ms at p99)",
        sink_p99 / base_p99,
        sink_p99 - base_p99
    );
    let _ = raw.disconnect();
    brokers.finish();
    let _ = broker.kill();
    let _ = broker.wait();
}
