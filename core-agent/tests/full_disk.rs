//! A full output filesystem (issue 25, item 3) with the real system: the agent writes
//! `results.jsonl`, `events.jsonl` and the counts CSV onto a small tmpfs; the tmpfs is
//! filled while results flow. `/health` must say `degraded` naming each sink and the
//! full disk, `/metrics` must count what was lost; after space comes back `/health`
//! is `ok` again and every line of every file is whole (no partial record glued to a
//! later one).
//!
//! Mounting needs root (the tests and CI run as root); elsewhere the test prints SKIP,
//! and fails under `CI=true`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{assets, bin_dir, serial, wait_for, Agent, Dirs};
use core_agent::analytics::counts::CSV_HEADER;
use core_agent::results::ResultRecord;
use serde_json::Value;

/// A tmpfs mounted for the test, unmounted when dropped (lazily if still busy).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path`; `None` (SKIP printed) where that is not
    /// allowed, a failure under `CI=true`.
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "cannot mount a tmpfs (the test needs root): {why}"
                );
                eprintln!("SKIP: cannot mount a tmpfs (needs root): {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Fills the filesystem of `dir` with one file until it is full (ENOSPC).
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    path
}

/// The value of the first metric line starting with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `/health`'s sink entry whose name ends with `suffix`.
fn sink<'a>(health: &'a Value, suffix: &str) -> Option<&'a Value> {
    health["sinks"]
        .as_array()?
        .iter()
        .find(|s| s["sink"].as_str().is_some_and(|n| n.ends_with(suffix)))
}

/// Every line of `path`; asserts the file ends with a newline (no partial last line).
fn whole_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line: {:?}",
        path.display(),
        &text[text.len().saturating_sub(200)..]
    );
    text.lines().map(str::to_owned).collect()
}

#[test]
fn a_full_disk_degrades_health_counts_losses_and_leaves_whole_lines() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let dirs = Dirs::new();
    // Outside the agent's temp dir, so the mount is gone before that is removed (drop
    // order: the agent, the mount, this folder).
    let out_root = tempfile::tempdir().unwrap();
    let out = out_root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let Some(tmpfs) = Tmpfs::mount(&out, "4m") else {
        return;
    };
    let results = out.join("results.jsonl");
    let video = assets.join("video/people_walk_540p.mp4");
    let mut config = dirs.agent_table().replace(
        &dirs.results().display().to_string(),
        &results.display().to_string(),
    );
    // Counts close every second: the counts CSV gets a row per second and rule.
    config += "[analytics]\ninterval_s = 1\n\n";
    config += &format!(
        "[[cameras]]\nid = \"walk\"\nsource = \"{}\"\nfps = 25\nring_slots = 32\nloop = true\n\n",
        video.display()
    );
    config += "[cameras.analytics]\n\n[[cameras.analytics.lines]]\nname = \"mid\"\nfrom = [0.5, 0.0]\nto = [0.5, 1.0]\nclasses = [\"person\"]\ncooldown_s = 0\n\n";
    config += &format!(
        "[[models]]\nid = \"yolox\"\npath = \"{}\"\n\n[[subscriptions]]\ncamera = \"walk\"\nmodel = \"yolox\"\nfps = 5\n\n",
        assets.join("models/yolox_nano.onnx").display()
    );
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    let events = out.join("events.jsonl");
    // Results, an event and a counts row on disk before the disk fills.
    wait_for(
        Duration::from_secs(120),
        "results, events and counts",
        || {
            let counts = std::fs::read_dir(&out)
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("counts-"));
            let n_events = std::fs::read_to_string(&events).ok()?.lines().count();
            let n_results = std::fs::read_to_string(&results).ok()?.lines().count();
            (counts && n_events > 0 && n_results > 10).then_some(())
        },
    );
    let health = agent.get_json("/health");
    assert_eq!(health["status"], "ok", "{health:#}");

    let filler = fill(&out);
    let full_at = Instant::now();
    println!("filled {} bytes", std::fs::metadata(&filler).unwrap().len());
    // Degraded, naming each sink and the full disk. Results come 5 times a second and
    // counts rows every second; people come and go all along the footage (events).
    let degraded = wait_for(Duration::from_secs(60), "every sink degraded", || {
        let h = agent.get_json("/health");
        let all = ["results.jsonl", "events.jsonl", "/out"]
            .iter()
            .all(|s| sink(&h, s).is_some_and(|s| s["state"] == "degraded"));
        (h["status"] == "degraded" && all).then_some(h)
    });
    println!("degraded after {:?}: {degraded:#}", full_at.elapsed());
    for (suffix, kind) in [
        ("results.jsonl", "results"),
        ("events.jsonl", "events"),
        ("/out", "counts"),
    ] {
        let s = sink(&degraded, suffix).unwrap();
        assert_eq!(s["kind"], kind, "{s}");
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("No space left on device") && reason.contains("out/"),
            "{kind}: {reason}"
        );
        assert!(s["since_unix_ms"].as_u64().is_some(), "{s}");
    }
    // Kept full while results flow: the losses are counted.
    let metrics = wait_for(Duration::from_secs(30), "10 results lost", || {
        let (_, m) = agent.http("GET", "/metrics", None);
        (metric(&m, "framebus_results_dropped_total ")? >= 10.0).then_some(m)
    });
    let prefix = format!(
        "framebus_sink_dropped_total{{sink=\"jsonl:{}\",kind=\"results\",reason=\"no_space\"}}",
        results.display()
    );
    assert!(metric(&metrics, &prefix).unwrap() >= 10.0, "{metrics}");
    let events_lost = format!(
        "framebus_sink_dropped_total{{sink=\"events:{}\",kind=\"events\",reason=\"no_space\"}}",
        events.display()
    );
    assert!(metric(&metrics, &events_lost).unwrap() >= 1.0, "{metrics}");
    let counts_lost = format!(
        "framebus_sink_dropped_total{{sink=\"counts:{}\",kind=\"counts\",reason=\"no_space\"}}",
        out.display()
    );
    assert!(metric(&metrics, &counts_lost).unwrap() >= 1.0, "{metrics}");
    assert!(metrics.contains(&format!(
        "framebus_sink_degraded{{sink=\"jsonl:{}\",kind=\"results\"}} 1",
        results.display()
    )));
    println!("full for {:?}", full_at.elapsed());

    // Space again: every sink is ok once it writes (or, quiet, finds room).
    std::fs::remove_file(&filler).unwrap();
    let freed_ms = core_agent::clock::UnixNanos::now().get() / 1_000_000;
    let freed = Instant::now();
    let health = wait_for(Duration::from_secs(30), "/health ok again", || {
        let h = agent.get_json("/health");
        (h["status"] == "ok").then_some(h)
    });
    println!("ok again after {:?}", freed.elapsed());
    for s in health["sinks"].as_array().unwrap() {
        assert_eq!(s["state"], "ok", "{s}");
        assert!(s["reason"].is_null(), "{s}");
    }
    // Results written after the space came back, then a clean stop.
    wait_for(
        Duration::from_secs(30),
        "a result after the disk had room",
        || {
            std::fs::read_to_string(&results)
                .ok()?
                .lines()
                .filter_map(|l| serde_json::from_str::<ResultRecord>(l).ok())
                .any(|r| r.result_unix_ms > freed_ms + 500)
                .then_some(())
        },
    );
    let status = agent.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}");

    // Whole lines only, in every file.
    let lines = whole_lines(&results);
    let records: Vec<ResultRecord> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("results.jsonl: {e}: {l}")))
        .collect();
    assert!(
        records.windows(2).all(|w| w[0].frame_id < w[1].frame_id),
        "frame ids go up line by line"
    );
    for l in whole_lines(&events) {
        let e: Value =
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("events.jsonl: {e}: {l}"));
        assert!(e["id"].is_string() && e["type"].is_string(), "{l}");
    }
    let mut rows = 0;
    for entry in std::fs::read_dir(&out).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("counts-") {
            continue;
        }
        let lines = whole_lines(&entry.path());
        assert_eq!(lines[0], CSV_HEADER, "{name}");
        let fields = CSV_HEADER.split(',').count();
        for l in &lines[1..] {
            assert_eq!(l.split(',').count(), fields, "{name}: {l:?}");
            assert!(l.split(',').next().unwrap().parse::<u64>().is_ok(), "{l:?}");
            rows += 1;
        }
    }
    assert!(rows > 0, "counts rows written");
    // The full disk is reported once per sink, not once per failed write.
    let warnings = agent
        .stderr
        .all()
        .iter()
        .filter(|l| l.contains("No space left on device"))
        .count();
    assert!(warnings <= 12, "{warnings} warnings about the full disk");
    drop(agent);
    drop(tmpfs);
}
