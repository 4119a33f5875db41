//! The README's demo on a machine without camera or model: `core-agent --demo
//! --synthetic` generates a video (ffmpeg) and a detector (tools/make_demo_model.py),
//! runs the whole system, prints the live table and writes results.jsonl.

mod common;

use std::process::Command;

use common::{agent_bin, bin_dir, ort_dylib, serial};
use core_agent::results::ResultRecord;

#[test]
fn synthetic_demo_runs_the_whole_system() {
    let _serial = serial();
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let rings = dir.path().join("rings");
    let results = dir.path().join("results.jsonl");
    let mut cmd = Command::new(agent_bin());
    cmd.args([
        "--demo",
        "--synthetic",
        "--table",
        "--duration",
        "20",
        "--api",
        "127.0.0.1:0",
    ])
    .arg("--bin-dir")
    .arg(&bins)
    .arg("--work-dir")
    .arg(dir.path().join("work"))
    .arg("--results")
    .arg(&results)
    .env("FRAMEBUS_RING_DIR", &rings)
    .env_remove("FRAMEBUS_SOCKET_DIR");
    if let Some(ort) = ort_dylib() {
        cmd.env("ORT_DYLIB_PATH", ort);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(stderr.contains("generated video and model"), "{stderr}");
    // The live table was printed with both cameras.
    assert!(
        stdout.contains("CAMERA") && stdout.contains("PEOPLE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("lobby") && stdout.contains("entrance"),
        "{stdout}"
    );
    let records: Vec<ResultRecord> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for cam in ["lobby", "entrance"] {
        let mine: Vec<_> = records.iter().filter(|r| r.camera == cam).collect();
        let people: usize = mine.iter().map(|r| r.count_of("person")).sum();
        println!("{cam}: {} results, {people} persons", mine.len());
        assert!(mine.len() >= 20, "{cam}: only {} results", mine.len());
        // The generated model finds the moving boxes in the generated video.
        assert!(
            mine.iter().filter(|r| r.count_of("person") > 0).count() * 2 > mine.len(),
            "{cam}: too few detections"
        );
        assert!(mine.iter().all(|r| r.model == "demo-detector"));
    }
    assert_eq!(
        std::fs::read_dir(&rings).unwrap().count(),
        0,
        "rings left behind"
    );
}
