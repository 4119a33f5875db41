//! Redis Streams sink end to end: the real system on the real footage with a counting
//! line and a real `redis-server` on a free loopback port. `XRANGE` returns every
//! event of `events.jsonl`, in order, with the documented fields; the pub/sub mirror
//! carries the same JSON.

mod common;
mod outputs_support;

use std::time::Duration;

use common::{assets, bin_dir, serial, wait_for, Agent, Dirs};
use core_agent::analytics::events::Event;
use outputs_support::{jsonl_event_ids, pipeline_config, Redis};

#[test]
fn xrange_returns_every_event_in_order() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let redis_server = Redis::start();
    let client = redis::Client::open(redis_server.url()).unwrap();
    // The pub/sub mirror, read on its own connection.
    let mut sub_conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let mirrored = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let m = mirrored.clone();
    std::thread::spawn(move || {
        let mut ps = sub_conn.as_pubsub();
        ps.subscribe("framebus:events").unwrap();
        ps.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        while let Ok(msg) = ps.get_message() {
            if let Ok(p) = msg.get_payload::<String>() {
                m.lock().unwrap().push(p);
            }
        }
    });

    let dirs = Dirs::new();
    let table = format!(
        "[brokers.redis]\nurl = \"{}\"\nmaxlen = 100000\npublish_channel = \"framebus:events\"\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\n\n",
        redis_server.url()
    );
    let config = pipeline_config(&dirs, &assets, &table);
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    wait_for(Duration::from_secs(120), "10 events", || {
        (jsonl_event_ids(agent.dir.path()).len() >= 10).then_some(())
    });
    let (code, body) = agent.http("GET", "/health", None);
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["brokers"][0]["sink"], "redis", "{h}");
    assert_eq!(h["brokers"][0]["state"], "connected", "{h}");
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");

    let want = jsonl_event_ids(agent.dir.path());
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("framebus:walk:events")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    let mut ids = Vec::new();
    for (_stream_id, fields) in &entries {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no field {k} in {fields:?}"))
        };
        let e: Event = serde_json::from_str(&get("json")).unwrap();
        assert_eq!(e.id, get("id"));
        assert_eq!(e.kind.as_str(), get("type"));
        assert_eq!(e.camera, "walk");
        ids.push(e.id);
    }
    assert!(want.len() >= 10, "{} events", want.len());
    assert_eq!(ids, want, "XRANGE differs from events.jsonl");
    // The mirror saw the same events (published with each XADD, before the stop).
    let mirrored: Vec<String> = wait_for(Duration::from_secs(5), "the mirror", || {
        let m = mirrored.lock().unwrap().clone();
        (m.len() >= want.len()).then_some(m)
    });
    let mirrored_ids: Vec<String> = mirrored
        .iter()
        .map(|p| serde_json::from_str::<Event>(p).unwrap().id)
        .collect();
    assert_eq!(mirrored_ids, want);
}
