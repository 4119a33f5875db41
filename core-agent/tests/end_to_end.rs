//! End to end with the real processes: two fake RTSP cameras serving
//! `people_walk_540p.mp4`, both real models, subscriptions at 5 fps.

mod common;

use std::time::{Duration, Instant};

use common::{assets, bin_dir, of, rate, serial, wait_for, Agent, Dirs, FakeCamera};

const MODELS: [&str; 2] = ["yolov8n", "yolox"];
const CAMERAS: [&str; 2] = ["cam-a", "cam-b"];

#[test]
fn two_cameras_two_models_results_at_the_requested_rate() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let video = assets.join("video/people_walk_540p.mp4");
    let cam_a = FakeCamera::start("a", &video, 0);
    let cam_b = FakeCamera::start("b", &video, 0);
    let dirs = Dirs::new();
    let mut config = dirs.agent_table();
    for (id, cam) in CAMERAS.iter().zip([&cam_a, &cam_b]) {
        config += &format!(
            "[[cameras]]\nid = \"{id}\"\nsource = \"{}\"\nfps = 25\nring_slots = 32\n\n",
            cam.url()
        );
    }
    config += &format!(
        "[[models]]\nid = \"yolov8n\"\npath = \"{}\"\n\n[[models]]\nid = \"yolox\"\npath = \"{}\"\n\n",
        assets.join("models/yolov8n_int8.onnx").display(),
        assets.join("models/yolox_nano.onnx").display()
    );
    for cam in CAMERAS {
        for model in MODELS {
            config +=
                &format!("[[subscriptions]]\ncamera = \"{cam}\"\nmodel = \"{model}\"\nfps = 5\n\n");
        }
    }
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));

    // Wait for the first result of every pair, then measure over 12 s.
    wait_for(
        Duration::from_secs(60),
        "a result for every (camera, model)",
        || {
            let r = agent.results();
            CAMERAS
                .iter()
                .all(|c| MODELS.iter().all(|m| !of(&r, c, m).is_empty()))
                .then_some(())
        },
    );
    let start_ms = core_agent::clock::UnixNanos::now().get() / 1_000_000;
    let before = agent.get_json("/cameras");
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let after = agent.get_json("/cameras");
    let secs = t.elapsed().as_secs_f64();
    let records = agent.results();
    let counter = |snap: &serde_json::Value, cam: &str, model: &str, key: &str| -> f64 {
        let c = snap
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == cam)
            .unwrap();
        let s = c["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["model"] == model)
            .unwrap();
        s[key].as_f64().unwrap()
    };
    for cam in CAMERAS {
        for model in MODELS {
            let delta = |key| counter(&after, cam, model, key) - counter(&before, cam, model, key);
            // Every 200 ms slot that saw frames is either served (a request went out)
            // or missed (the model was still busy: freshest-frame policy, no queue).
            let slots = (delta("sent") + delta("missed")) / secs;
            let results = delta("results") / secs;
            let pair: Vec<_> = of(&records, cam, model)
                .into_iter()
                .filter(|r| r.capture_unix_ms >= start_ms)
                .collect();
            let people = pair.iter().filter(|r| r.count_of("person") > 0).count();
            let mut lat: Vec<f64> = pair
                .iter()
                .map(|r| r.latency_ms.capture_to_result)
                .collect();
            lat.sort_by(f64::total_cmp);
            let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0.0);
            println!(
                "{cam} -> {model}: gate {slots:.2} slots/s, {results:.2} results/s ({} missed), \
                 {people}/{} results with persons, capture->result p50 {p50:.1} ms, records {:.2}/s",
                delta("missed"),
                pair.len(),
                rate(&pair)
            );
            assert!(
                (4.5..=5.5).contains(&slots),
                "{cam} -> {model}: gate ran at {slots:.2} slots/s, wanted 5"
            );
            if delta("missed") == 0.0 {
                // The model kept up: every slot became a result.
                assert!(
                    (4.5..=5.5).contains(&results),
                    "{cam} -> {model}: {results:.2} results/s, wanted 5"
                );
            } else {
                // A slower machine: fewer results, the rest counted as missed, never queued.
                assert!(results > 0.5, "{cam} -> {model}: {results:.2} results/s");
                println!("  (the model could not keep up on this machine; slots were skipped, not queued)");
            }
            assert!(
                people * 2 >= pair.len(),
                "{cam} -> {model}: persons in only {people} of {}",
                pair.len()
            );
            assert!(
                pair.windows(2).all(|w| w[1].frame_id > w[0].frame_id),
                "frames out of order"
            );
            assert!(
                lat.iter().all(|&l| l > 0.0 && l < 10_000.0),
                "latencies {lat:?}"
            );
        }
    }

    // The status API agrees.
    let cameras = agent.get_json("/cameras");
    for c in cameras.as_array().unwrap() {
        assert_eq!(c["state"], "live", "{c}");
        assert!(c["fps_decoded"].as_f64().unwrap() > 15.0, "{c}");
        for s in c["subscriptions"].as_array().unwrap() {
            assert!(s["results"].as_u64().unwrap() > 5, "{s}");
            assert!(s["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{s}");
        }
    }
    for m in MODELS {
        let model = agent.model(m);
        assert_eq!(model["state"], "ready", "{model}");
        assert_eq!(model["server"]["restarts"], 0, "{model}");
    }
    let (code, metrics) = agent.http("GET", "/metrics", None);
    assert_eq!(code, 200);
    for line in [
        "# TYPE framebus_results_total counter",
        "framebus_model_up{model=\"yolox\"} 1",
        "framebus_camera_up{camera=\"cam-b\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?}");
    }
    let results_line = metrics
        .lines()
        .find(|l| l.starts_with("framebus_results_total{camera=\"cam-a\",model=\"yolov8n\"}"))
        .expect("results counter");
    assert!(
        results_line
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 5,
        "{results_line}"
    );

    // Ordered shutdown: clean exit, rings and sockets gone.
    let rings = agent.rings();
    let sockets = agent.sockets();
    let t = Instant::now();
    let status = agent.stop(Duration::from_secs(30));
    println!("shutdown took {:?}", t.elapsed());
    assert!(status.success(), "{status}");
    let left: Vec<_> = std::fs::read_dir(&rings)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "rings left: {left:?}");
    // The model servers' calibration caches stay, by design (a restart reuses them).
    let left: Vec<_> = std::fs::read_dir(&sockets)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(".calibration.json"))
        .collect();
    assert!(left.is_empty(), "sockets left: {left:?}");
    assert!(agent.stdout.find("results written").is_some());
    let stderr = agent.stderr.all();
    let order: Vec<usize> = [
        "stopping stream agents",
        "stopping model servers",
        "stopping frame kernels",
    ]
    .iter()
    .map(|n| {
        stderr
            .iter()
            .position(|l| l.contains(n))
            .unwrap_or_else(|| panic!("no {n:?} in the log"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "shutdown order {order:?}"
    );
}

#[test]
fn cameras_are_added_started_stopped_and_removed_at_run_time() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let video = assets.join("video/people_walk_540p.mp4");
    let dirs = Dirs::new();
    // File sources through the API must be under agent.media_dirs.
    let config = format!(
        "{}[[models]]\nid = \"yolov8n\"\npath = \"{}\"\n",
        dirs.agent_table().replacen(
            "[agent]\n",
            &format!(
                "[agent]\nmedia_dirs = [\"{}\"]\n",
                assets.join("video").display()
            ),
            1
        ),
        assets.join("models/yolov8n_int8.onnx").display()
    );
    let agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));

    // Validated like the config file: every problem in one answer.
    let bad = format!(
        r#"{{"camera": {{"id": "bad id", "source": "{}", "fps": 10}},
             "subscriptions": [{{"model": "nope", "fps": 20}}]}}"#,
        assets.join("video/no-such.mp4").display()
    );
    let (code, body) = agent.http("POST", "/cameras", Some(&bad));
    assert_eq!(code, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.to_string())
        .collect();
    println!("{problems:#?}");
    assert_eq!(problems.len(), 4, "{problems:?}");
    for needle in [
        "not a valid name",
        "does not exist",
        "unknown model",
        "above the camera's 10 fps",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle} missing in {problems:?}"
        );
    }
    let (code, body) = agent.http(
        "POST",
        "/cameras",
        Some(r#"{"camera": {"id": "x", "source": "a", "zoom": 2}}"#),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("zoom"), "{body}");

    // A good one starts at once.
    let good = format!(
        r#"{{"camera": {{"id": "replay", "source": "{}", "fps": 25}},
            "subscriptions": [{{"model": "yolov8n", "fps": 2, "classes": ["person"]}}]}}"#,
        video.display()
    );
    let (code, body) = agent.http("POST", "/cameras", Some(&good));
    assert_eq!(code, 201, "{body}");
    let (code, _) = agent.http("POST", "/cameras", Some(&good));
    assert_eq!(code, 409);
    wait_for(
        Duration::from_secs(60),
        "results of the added camera",
        || (common::of(&agent.results(), "replay", "yolov8n").len() >= 3).then_some(()),
    );
    let recs = agent.results();
    assert!(
        recs.iter()
            .all(|r| r.detections.iter().all(|d| d.class_name == "person")),
        "class filter"
    );
    assert!(recs.iter().any(|r| r.count_of("person") > 0));

    // Stop: kernel gone, ring removed, no new results.
    let (code, body) = agent.http("POST", "/cameras/replay/stop", None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(agent.camera("replay")["state"], "stopped");
    assert!(!agent.rings().join("replay.ring").exists());
    let n = agent.results().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.results().len(), n, "results after stop");

    // Start again.
    let (code, _) = agent.http("POST", "/cameras/replay/start", None);
    assert_eq!(code, 200);
    wait_for(Duration::from_secs(60), "results after start", || {
        (agent.results().len() > n + 2).then_some(())
    });

    // Editing the config file applies only what changed: a new camera and its
    // subscription start, the model server keeps running.
    let server_pid = agent.model("yolov8n")["server"]["pid"].as_u64();
    let path = agent.dir.path().join("agent.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text += &format!(
        "\n[[cameras]]\nid = \"edited\"\nsource = \"{}\"\n\n[[subscriptions]]\ncamera = \"edited\"\nmodel = \"yolov8n\"\nfps = 1\n",
        video.display()
    );
    std::fs::write(&path, text).unwrap();
    wait_for(
        Duration::from_secs(60),
        "results of the camera added by editing the config",
        || (!common::of(&agent.results(), "edited", "yolov8n").is_empty()).then_some(()),
    );
    assert_eq!(
        agent.model("yolov8n")["server"]["pid"].as_u64(),
        server_pid,
        "model server restarted"
    );
    assert_eq!(
        agent.camera("replay")["state"],
        "live",
        "the API camera survives the reload"
    );

    // Remove.
    let (code, _) = agent.http("DELETE", "/cameras/replay", None);
    assert_eq!(code, 204);
    assert_eq!(agent.http("GET", "/cameras/replay", None).0, 404);
    assert_eq!(agent.http("POST", "/cameras/replay/start", None).0, 404);
    assert!(!agent.rings().join("replay.ring").exists());
}
