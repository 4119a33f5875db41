//! The Python peer of `bench live` really detects: run `benches/peer/peer.py` on the real
//! footage for a few seconds and check its records (the results.jsonl fields the harness
//! reads), its FPS gate and its detections. Speed is the harness's business, not this test's.

use std::path::PathBuf;
use std::process::Command;

use benches::harness::results::{parse_lines, Record};

/// The assets, or `None` (SKIP) when absent outside CI.
fn assets() -> Option<PathBuf> {
    use framebus_testkit::assets::{assets_with, PEOPLE_WALK, YOLOX};
    assets_with(&[PEOPLE_WALK, YOLOX])
}

#[test]
fn peer_detects_people_at_the_asked_rate() {
    let Some(assets) = assets() else { return };
    let python = std::env::var_os("FRAMEBUS_PYTHON").unwrap_or_else(|| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.jsonl");
    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/peer/peer.py"))
        .arg("--video")
        .arg(assets.join("video/people_walk_540p.mp4"))
        .arg("--model")
        .arg(assets.join("models/yolox_nano.onnx"))
        .args(["--model-id", "yolox", "--cameras", "2", "--duration", "4"])
        .arg("--results")
        .arg(&results)
        .output()
        .expect("starting the peer's python (FRAMEBUS_PYTHON)");
    assert!(
        out.status.success(),
        "peer failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));
    let mut buf = std::fs::read(&results).unwrap();
    let (records, bad) = parse_lines(&mut buf);
    assert_eq!(bad, 0, "every line is a result record");
    for cam in ["cam0", "cam1"] {
        let mine: Vec<&Record> = records.iter().filter(|r| r.camera == cam).collect();
        // 4 s at 5 fps; a loaded CI box may deliver fewer, but every camera delivers.
        assert!(mine.len() >= 3, "{cam}: only {} results", mine.len());
        for w in mine.windows(2) {
            let gap = w[1].capture_unix_ms - w[0].capture_unix_ms;
            assert!(gap >= 160, "{cam}: two results {gap} ms apart at 5 fps");
        }
        for r in &mine {
            assert_eq!(r.model, "yolox");
            assert!(r.result_unix_ms >= r.capture_unix_ms);
        }
        // The footage is people walking: most frames have several people.
        let with_people = mine
            .iter()
            .filter(|r| {
                r.detections
                    .iter()
                    .filter(|d| d.class_name == "person")
                    .count()
                    >= 2
            })
            .count();
        assert!(
            with_people * 2 >= mine.len(),
            "{cam}: people found in {with_people} of {} frames",
            mine.len()
        );
    }
}
