//! Reading core-agent's results JSON Lines file while it grows.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Deserialize;

/// The fields of one result record the harness uses: an outside reader's view of
/// core-agent's `ResultRecord` as `docs/events.md` documents it, and of the Python peer's
/// records (the harness drives both only through their files and HTTP API, like any
/// client, so it reads only the fields both write).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    pub camera: String,
    pub model: String,
    pub frame_id: u64,
    pub capture_unix_ms: u64,
    pub result_unix_ms: u64,
    pub latency_ms: Latencies,
    #[serde(default)]
    pub detections: Vec<Detection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Latencies {
    pub capture_to_result: f64,
    #[serde(default)]
    pub request_to_result: f64,
    #[serde(default)]
    pub server_total: f64,
    #[serde(default)]
    pub inference: f64,
}

/// A detection as the harness reads it: only its class (the peer's records carry no
/// more that the harness needs).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Detection {
    pub class_name: String,
}

/// Splits `buf` into complete lines, parses them, and leaves a trailing partial line in
/// `buf`. Returns the records and the number of lines that did not parse.
pub fn parse_lines(buf: &mut Vec<u8>) -> (Vec<Record>, usize) {
    let Some(last_nl) = buf.iter().rposition(|b| *b == b'\n') else {
        return (Vec::new(), 0);
    };
    let complete: Vec<u8> = buf.drain(..=last_nl).collect();
    let mut out = Vec::new();
    let mut bad = 0;
    for line in complete.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => out.push(r),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

#[derive(Debug, Default)]
struct Shared {
    records: Vec<Record>,
    bad_lines: usize,
}

/// Follows a results file on a background thread (polling; the file may not exist yet).
#[derive(Debug)]
pub struct ResultsTail {
    path: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ResultsTail {
    pub fn start(path: &Path, poll: Duration) -> ResultsTail {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop, path) = (shared.clone(), stop.clone(), path.to_path_buf());
            std::thread::Builder::new()
                .name("results-tail".into())
                .spawn(move || {
                    let mut pos = 0u64;
                    let mut buf = Vec::new();
                    loop {
                        let stopping = stop.load(Ordering::Relaxed);
                        if let Ok(mut f) = std::fs::File::open(&path) {
                            if f.seek(SeekFrom::Start(pos)).is_ok() {
                                let mut chunk = Vec::new();
                                if let Ok(n) = f.read_to_end(&mut chunk) {
                                    pos += n as u64;
                                    buf.extend_from_slice(&chunk);
                                }
                            }
                        }
                        let (recs, bad) = parse_lines(&mut buf);
                        if !recs.is_empty() || bad > 0 {
                            let mut s = shared.lock().unwrap_or_else(|e| e.into_inner());
                            s.records.extend(recs);
                            s.bad_lines += bad;
                        }
                        if stopping {
                            return;
                        }
                        std::thread::sleep(poll);
                    }
                })
                .ok()
        };
        ResultsTail {
            path: path.to_path_buf(),
            shared,
            stop,
            thread,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record read so far.
    pub fn records(&self) -> Vec<Record> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .clone()
    }

    /// Records whose result arrived in `[from_ms, to_ms)` (Unix ms).
    pub fn between(&self, from_ms: u64, to_ms: u64) -> Vec<Record> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .iter()
            .filter(|r| r.result_unix_ms >= from_ms && r.result_unix_ms < to_ms)
            .cloned()
            .collect()
    }

    pub fn count(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .len()
    }

    /// Lines that were not valid result records.
    pub fn bad_lines(&self) -> usize {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bad_lines
    }
}

impl Drop for ResultsTail {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (the clock of `result_unix_ms`).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LINE: &str = r#"{"camera":"cam0","model":"yolov8","frame_id":7,"capture_ts_ns":1,"capture_unix_ms":1000,"result_unix_ms":1042,"latency_ms":{"capture_to_result":42.5,"request_to_result":30.0,"server_total":29.0,"inference":25.0},"detections":[{"class_id":0,"class_name":"person","confidence":0.9,"bbox":[0,0,1,1]}]}"#;

    #[test]
    fn parses_complete_lines_and_keeps_the_rest() {
        let mut buf = format!("{LINE}\nnot json\n{}", &LINE[..20]).into_bytes();
        let (recs, bad) = parse_lines(&mut buf);
        assert_eq!(recs.len(), 1);
        assert_eq!(bad, 1);
        assert_eq!(buf, &LINE.as_bytes()[..20]);
        let r = &recs[0];
        assert_eq!(
            (r.camera.as_str(), r.model.as_str(), r.frame_id),
            ("cam0", "yolov8", 7)
        );
        assert_eq!(r.latency_ms.capture_to_result, 42.5);
        assert_eq!(r.detections[0].class_name, "person");
        buf.extend_from_slice(&LINE.as_bytes()[20..]);
        buf.push(b'\n');
        assert_eq!(parse_lines(&mut buf).0.len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn tails_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.jsonl");
        let tail = ResultsTail::start(&path, Duration::from_millis(5));
        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "{LINE}\n{}", &LINE[..10]).unwrap();
        f.flush().unwrap();
        while tail.count() < 1 {
            std::thread::sleep(Duration::from_millis(5));
        }
        writeln!(f, "{}", &LINE[10..]).unwrap();
        while tail.count() < 2 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(tail.between(1042, 1043).len(), 2);
        assert_eq!(tail.between(0, 1042).len(), 0);
        assert_eq!(tail.bad_lines(), 0);
    }
}
