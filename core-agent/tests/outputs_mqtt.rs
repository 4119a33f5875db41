//! MQTT sink end to end: the real system (kernel, yolox_nano model server, agent) on
//! the real footage with a counting line, a real `mosquitto` on a free loopback port,
//! and a subscriber. Checks: every event of `events.jsonl` arrives, in order, on
//! `framebus/<camera>/events`; the broker stopped and started mid-run loses nothing
//! within the buffer bound while results keep coming; a broker that is never there
//! leaves the system running with `/health` saying so; each camera's retained status
//! is back after a broker restart that lost it, and a removed camera's is cleared.

mod common;
mod outputs_support;

use std::time::Duration;

use common::{assets, bin_dir, serial, wait_for, Agent, Dirs};
use core_agent::analytics::counts::CountRow;
use core_agent::analytics::events::Event;
use core_agent::outputs::payload::CameraStatusMessage;
use outputs_support::{
    free_port, health, jsonl_event_ids, pipeline_config, retained_now, Mosquitto, Subscriber,
};

fn mqtt_table(url: &str) -> String {
    format!(
        "[brokers.mqtt]\nurl = \"{url}\"\nclient_id = \"framebus-test\"\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\nconnect_timeout_ms = 1000\ndrain_timeout_ms = 5000\nstatus_interval_ms = 200\n\n"
    )
}

#[test]
fn subscriber_sees_every_event_in_order_across_a_broker_restart() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let mut broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "framebus/#");
    let dirs = Dirs::new();
    let config = pipeline_config(&dirs, &assets, &mqtt_table(&broker.url()));
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));

    // Connected, announced, first events through.
    wait_for(Duration::from_secs(90), "3 events on the broker", || {
        (sub.event_ids("framebus/walk/events").len() >= 3).then_some(())
    });
    assert_eq!(
        sub.on("framebus/available").first().map(String::as_str),
        Some("online")
    );
    let (code, h) = health(&agent);
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["brokers"][0]["state"], "connected", "{h}");

    // Broker away: the pipeline keeps going, events pile up in the buffer.
    broker.stop();
    let results_at_stop = agent.results().len();
    let events_at_stop = jsonl_event_ids(agent.dir.path()).len();
    wait_for(
        Duration::from_secs(60),
        "events while the broker is away",
        || (jsonl_event_ids(agent.dir.path()).len() >= events_at_stop + 5).then_some(()),
    );
    let (code, h) = health(&agent);
    assert_eq!(code, 200, "a broker away degrades, never fails, the agent");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["brokers"][0]["state"], "reconnecting", "{h}");
    assert!(h["brokers"][0]["last_error"].is_string(), "{h}");
    assert!(h["brokers"][0]["buffered"].as_u64().unwrap() >= 1, "{h}");
    assert!(
        agent.results().len() > results_at_stop,
        "results stopped while the broker was away"
    );

    // Back: everything buffered goes out, in order.
    broker.restart();
    wait_for(
        Duration::from_secs(60),
        "the buffered events delivered",
        || {
            let want = jsonl_event_ids(agent.dir.path());
            let got = sub.event_ids("framebus/walk/events");
            (got.len() >= want.len().min(events_at_stop + 5)).then_some(())
        },
    );
    let metrics = agent.http("GET", "/metrics", None).1;
    assert!(
        metrics.contains("framebus_broker_connected{sink=\"mqtt\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("framebus_broker_dropped_total{sink=\"mqtt\"} 0"),
        "{metrics}"
    );
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");

    // After the drain at shutdown: exactly the events of events.jsonl, same order.
    let want = jsonl_event_ids(agent.dir.path());
    let got = wait_for(Duration::from_secs(10), "the last events", || {
        let got = sub.event_ids("framebus/walk/events");
        (got.len() >= want.len()).then_some(got)
    });
    assert!(want.len() >= events_at_stop + 5, "{} events", want.len());
    assert_eq!(got, want, "MQTT events differ from events.jsonl");
    // Payloads are the events.jsonl objects.
    for p in sub.on("framebus/walk/events") {
        let e: Event = serde_json::from_str(&p).unwrap();
        assert_eq!(e.camera, "walk");
    }
    // Counts rows (5 s intervals) and the retained camera status came too.
    let rows: Vec<CountRow> = sub
        .on("framebus/walk/counts")
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(rows.iter().any(|r| r.rule == "mid"), "{} rows", rows.len());
    let states: Vec<CameraStatusMessage> = sub
        .on("framebus/walk/status")
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(states.iter().any(|s| s.state == "live"), "{states:?}");
    // A clean stop says offline.
    assert_eq!(
        sub.on("framebus/available").last().map(String::as_str),
        Some("offline")
    );
}

#[test]
fn broker_never_reachable_leaves_the_system_running_and_health_says_so() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    // Nothing listens on this port.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let dirs = Dirs::new();
    let config = pipeline_config(&dirs, &assets, &mqtt_table(&url));
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    wait_for(Duration::from_secs(90), "results and events", || {
        (agent.results().len() >= 20 && !jsonl_event_ids(agent.dir.path()).is_empty()).then_some(())
    });
    let (code, h) = health(&agent);
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    let b = &h["brokers"][0];
    assert_eq!(b["sink"], "mqtt", "{h}");
    assert_ne!(b["state"], "connected", "{h}");
    assert!(
        b["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{h}"
    );
    assert!(b["reconnects"].as_u64().unwrap() >= 1, "{h}");
    let metrics = agent.http("GET", "/metrics", None).1;
    assert!(
        metrics.contains("framebus_broker_connected{sink=\"mqtt\"} 0"),
        "{metrics}"
    );
    // Shutdown does not wait for a broker that is not there.
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

/// The retained `framebus/<camera>/status` payloads a new subscriber gets now.
fn retained_statuses(port: u16) -> std::collections::BTreeMap<String, CameraStatusMessage> {
    retained_now(port, "framebus/#", "framebus/zz-test/marker")
        .into_iter()
        .filter_map(|(topic, payload)| {
            let camera = topic.strip_prefix("framebus/")?.strip_suffix("/status")?;
            let status = serde_json::from_str(&payload).ok()?;
            Some((camera.to_owned(), status))
        })
        .collect()
}

/// Issue 25, item 5b: a broker restarted without persistence has lost the retained
/// camera statuses; the agent publishes them again when it reconnects (the states did
/// not change, so before the fix nothing was sent). A removed camera's retained status
/// is cleared (it stayed `live` forever).
#[test]
fn camera_status_is_retained_again_after_a_forgetful_broker_and_cleared_on_removal() {
    let _serial = serial();
    bin_dir();
    let mut broker = Mosquitto::start_forgetful();
    let dirs = Dirs::new();
    let mut config = dirs.agent_table();
    for id in ["door", "gate"] {
        config += &format!(
            "[[cameras]]\nid = \"{id}\"\nsource = \"rtsp://127.0.0.1:1/{id}\"\nenabled = false\n\n"
        );
    }
    config += &mqtt_table(&broker.url());
    let agent = Agent::start(dirs, &config, &[]);
    let port = broker.port;
    wait_for(Duration::from_secs(30), "both statuses retained", || {
        let s = retained_statuses(port);
        (s.len() == 2 && s.values().all(|m| m.state == "stopped")).then_some(())
    });

    // The broker forgets everything; the agent reconnects and says it again.
    broker.stop();
    broker.restart();
    let s = wait_for(
        Duration::from_secs(30),
        "both statuses retained again after the broker restart",
        || {
            let s = retained_statuses(port);
            (s.len() == 2).then_some(s)
        },
    );
    assert_eq!(s["door"].camera, "door");
    assert_eq!(s["gate"].state, "stopped");
    let (_, h) = health(&agent);
    assert_eq!(h["brokers"][0]["state"], "connected", "{h}");

    // Removed: a new subscriber gets no retained status for it, the other one stays.
    let (code, body) = agent.http("DELETE", "/cameras/gate", None);
    assert!((200..300).contains(&code), "{code} {body}");
    wait_for(
        Duration::from_secs(10),
        "gate's retained status cleared",
        || {
            let s = retained_statuses(port);
            (!s.contains_key("gate") && s.contains_key("door")).then_some(())
        },
    );
}
