//! `bench ring`: the cost of publishing a frame into the shared-memory ring against a plain
//! memcpy of the same bytes (measured in the same run), and the latency from a publish to
//! a waiting reader's wake-up, in another thread and in another process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto_schema::pixel::{FrameGeometry, PixelFormat};
use proto_schema::time::UnixNanos;
use serde::Serialize;
use shm_ring::{RingReader, RingWriter, WaitOutcome};

use super::interrupt;
use super::report::{num, Table};
use super::stats::Summary;

/// Settings of the ring scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RingParams {
    /// Frame copies per measured variant and size.
    pub iterations: usize,
    /// Publishes per wake-up latency measurement.
    pub wake_samples: usize,
    /// Pause between two publishes in the wake-up test (the reader must be asleep).
    pub wake_interval_us: u64,
    pub slots: u32,
}

impl Default for RingParams {
    fn default() -> Self {
        RingParams {
            iterations: 400,
            wake_samples: 2000,
            wake_interval_us: 1000,
            slots: 8,
        }
    }
}

/// Publish versus memcpy for one frame size, microseconds per frame.
#[derive(Debug, Clone, Serialize)]
pub struct PublishCost {
    pub size: String,
    pub frame_bytes: usize,
    /// memcpy into one destination buffer (stays warm in cache).
    pub memcpy_one_us: Summary,
    /// memcpy into `slots` rotating buffers: the same memory footprint as the ring.
    pub memcpy_rotating_us: Summary,
    /// begin_write + copy into the slot + publish.
    pub publish_us: Summary,
    /// publish p50 / rotating memcpy p50.
    pub ratio_p50: f64,
    pub ratio_vs_single_p50: f64,
    /// publish throughput, GB/s at p50.
    pub publish_gb_s: f64,
}

/// Publish-to-wake latency, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct WakeLatency {
    pub reader: String,
    pub latency_us: Option<Summary>,
    /// Publishes the reader did not see individually (it woke late and several were new).
    pub coalesced: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RingData {
    pub publish: Vec<PublishCost>,
    pub wake: Vec<WakeLatency>,
}

/// A problem in the ring scenario.
#[derive(Debug, thiserror::Error)]
pub enum RingBenchError {
    #[error("ring {name}: {reason}")]
    Ring { name: String, reason: String },
    #[error("reader process: {0}")]
    Reader(String),
    #[error(transparent)]
    Interrupted(#[from] interrupt::Interrupted),
}

fn ring_err(name: &str, e: impl std::fmt::Display) -> RingBenchError {
    RingBenchError::Ring {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

fn geometry(w: u32, h: u32) -> Result<FrameGeometry, RingBenchError> {
    FrameGeometry::packed(w, h, PixelFormat::Nv12).map_err(|e| ring_err("geometry", e))
}

/// Measures publish against memcpy for 960x540 and 1920x1080 NV12 frames.
pub fn publish_costs(
    dir: &Path,
    p: &RingParams,
    frame540: Option<&[u8]>,
) -> Result<Vec<PublishCost>, RingBenchError> {
    let mut out = Vec::new();
    for (w, h) in [(960u32, 540u32), (1920, 1080)] {
        interrupt::check()?;
        let g = geometry(w, h)?;
        let len = g.frame_size as usize;
        // Real footage for 540p where available, a byte pattern otherwise: memcpy does not
        // care, but the frame is the one the system moves.
        let src: Vec<u8> = match frame540 {
            Some(f) if f.len() == len => f.to_vec(),
            _ => (0..len).map(|i| (i * 31 % 251) as u8).collect(),
        };
        let name = format!("bench-publish-{w}x{h}");
        let mut writer = RingWriter::builder(name.as_str())
            .dir(dir)
            .slots(p.slots)
            .geometry(g)
            .create()
            .map_err(|e| ring_err(&name, e))?;
        let mut one = vec![0u8; len];
        let mut rotating: Vec<Vec<u8>> = (0..p.slots).map(|_| vec![1u8; len]).collect();
        // Fault in every slot page before timing.
        for _ in 0..p.slots * 2 {
            let mut s = writer.begin_write();
            s.data_mut().copy_from_slice(&src);
            s.publish(0, 0);
        }
        let (mut t_one, mut t_rot, mut t_pub) = (Vec::new(), Vec::new(), Vec::new());
        // Interleave the three variants in small batches so drift and noise hit all alike.
        let batch = 10;
        for round in 0..p.iterations.div_ceil(batch) {
            for _ in 0..batch {
                let t = Instant::now();
                one.copy_from_slice(&src);
                std::hint::black_box(&one);
                t_one.push(t.elapsed().as_secs_f64() * 1e6);
            }
            for i in 0..batch {
                let buf = &mut rotating[(round * batch + i) % p.slots as usize];
                let t = Instant::now();
                buf.copy_from_slice(&src);
                std::hint::black_box(&buf);
                t_rot.push(t.elapsed().as_secs_f64() * 1e6);
            }
            for _ in 0..batch {
                let t = Instant::now();
                let mut s = writer.begin_write();
                s.data_mut().copy_from_slice(&src);
                std::hint::black_box(s.publish(0, 0));
                t_pub.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let sum = |v: &mut Vec<f64>| Summary::of(v).ok_or_else(|| ring_err(&name, "no samples"));
        let (one_s, rot_s, pub_s) = (sum(&mut t_one)?, sum(&mut t_rot)?, sum(&mut t_pub)?);
        out.push(PublishCost {
            size: format!("{w}x{h} NV12"),
            frame_bytes: len,
            ratio_p50: pub_s.p50 / rot_s.p50,
            ratio_vs_single_p50: pub_s.p50 / one_s.p50,
            publish_gb_s: len as f64 / (pub_s.p50 * 1e3),
            memcpy_one_us: one_s,
            memcpy_rotating_us: rot_s,
            publish_us: pub_s,
        });
    }
    Ok(out)
}

/// Publishes `samples` small frames, each stamped with CLOCK_MONOTONIC just before the
/// publish, `interval` apart; `read` collects the wake-up latencies.
fn publish_stamped(
    writer: &mut RingWriter,
    samples: usize,
    interval: Duration,
) -> Result<(), RingBenchError> {
    for _ in 0..samples {
        interrupt::check()?;
        std::thread::sleep(interval);
        let mut s = writer.begin_write();
        s.data_mut()[0] = 1;
        s.publish(0, UnixNanos::now().get());
    }
    Ok(())
}

/// The reader side: waits for each publish and returns (latencies in µs, coalesced count).
pub fn wake_reader(reader: &RingReader, samples: usize) -> (Vec<f64>, usize) {
    let mut last = reader.write_seq();
    let mut lat = Vec::with_capacity(samples);
    let mut coalesced = 0;
    while lat.len() + coalesced < samples {
        match reader.wait_for_publish(last, Duration::from_secs(2)) {
            WaitOutcome::Published(seq) => {
                let woke = UnixNanos::now().get();
                if seq == last + 1 {
                    let slot = ((seq - 1) % u64::from(reader.slots())) as u32;
                    if let Some(info) = reader.slot_info(slot) {
                        lat.push(woke.saturating_sub(info.capture_ts_ns) as f64 / 1e3);
                    }
                } else {
                    coalesced += (seq - last) as usize;
                }
                last = seq;
            }
            WaitOutcome::TimedOut | WaitOutcome::Closed => break,
        }
    }
    (lat, coalesced)
}

/// Wake-up latency with the reader in a thread of this process and in a child process
/// (`bench ring-reader`, the same binary).
pub fn wake_latencies(dir: &Path, p: &RingParams) -> Result<Vec<WakeLatency>, RingBenchError> {
    let g = geometry(64, 64)?;
    let interval = Duration::from_micros(p.wake_interval_us);
    let mut out = Vec::new();

    // Reader thread.
    let name = "bench-wake-thread";
    let mut writer = RingWriter::builder(name)
        .dir(dir)
        .slots(p.slots)
        .geometry(g)
        .create()
        .map_err(|e| ring_err(name, e))?;
    let reader = RingReader::open(dir, name).map_err(|e| ring_err(name, e))?;
    let samples = p.wake_samples;
    let handle = std::thread::spawn(move || wake_reader(&reader, samples));
    std::thread::sleep(Duration::from_millis(50));
    publish_stamped(&mut writer, samples, interval)?;
    let (mut lat, coalesced) = handle
        .join()
        .map_err(|_| ring_err(name, "reader thread panicked"))?;
    out.push(WakeLatency {
        reader: "thread (same process)".into(),
        latency_us: Summary::of(&mut lat),
        coalesced,
    });
    drop(writer);

    // Reader process.
    let name = "bench-wake-process";
    let mut writer = RingWriter::builder(name)
        .dir(dir)
        .slots(p.slots)
        .geometry(g)
        .create()
        .map_err(|e| ring_err(name, e))?;
    let exe = std::env::current_exe().map_err(|e| RingBenchError::Reader(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg("ring-reader")
        .arg("--dir")
        .arg(dir)
        .arg("--name")
        .arg(name)
        .arg("--samples")
        .arg(samples.to_string())
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| RingBenchError::Reader(e.to_string()))?;
    let mut stdout = BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| RingBenchError::Reader("no stdout".into()))?,
    );
    let mut line = String::new();
    // The child says "ready" once it waits on the ring.
    let _ = stdout.read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(RingBenchError::Reader(format!(
            "expected `ready`, got {line:?}"
        )));
    }
    std::thread::sleep(Duration::from_millis(50));
    let published = publish_stamped(&mut writer, samples, interval);
    drop(writer); // closes the ring: the child finishes even if it missed some.
    let mut lat = Vec::new();
    let mut coalesced = 0;
    for l in stdout.lines().map_while(Result::ok) {
        if let Some(c) = l.strip_prefix("coalesced ") {
            coalesced = c.trim().parse().unwrap_or(0);
        } else if let Ok(v) = l.trim().parse::<f64>() {
            lat.push(v);
        }
    }
    let _ = child.wait();
    published?;
    out.push(WakeLatency {
        reader: "other process".into(),
        latency_us: Summary::of(&mut lat),
        coalesced,
    });
    Ok(out)
}

/// The child side of the cross-process wake test: prints `ready`, then one latency (µs)
/// per line, then `coalesced N`.
pub fn run_reader_process(dir: &Path, name: &str, samples: usize) -> Result<(), RingBenchError> {
    let reader = RingReader::open(dir, name).map_err(|e| ring_err(name, e))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let (lat, coalesced) = wake_reader(&reader, samples);
    for v in lat {
        let _ = writeln!(out, "{v:.3}");
    }
    let _ = writeln!(out, "coalesced {coalesced}");
    Ok(())
}

/// Runs the whole scenario; `dir` is a temp dir under /dev/shm.
pub fn run(
    dir: &Path,
    p: &RingParams,
    frame540: Option<&[u8]>,
) -> Result<(RingData, Vec<Table>, Vec<String>), RingBenchError> {
    let publish = publish_costs(dir, p, frame540)?;
    let wake = wake_latencies(dir, p)?;
    let mut t1 = Table::new(
        "Publish into the ring vs memcpy of the same frame (µs per frame)",
        &[
            "frame",
            "bytes",
            "memcpy 1 buf p50",
            "memcpy 8 bufs p50",
            "publish p50",
            "publish p99",
            "publish / memcpy(8 bufs)",
            "publish / memcpy(1 buf)",
            "GB/s",
        ],
    );
    for c in &publish {
        t1.row(vec![
            c.size.clone(),
            c.frame_bytes.to_string(),
            format!("{:.1}", c.memcpy_one_us.p50),
            format!("{:.1}", c.memcpy_rotating_us.p50),
            format!("{:.1}", c.publish_us.p50),
            format!("{:.1}", c.publish_us.p99),
            format!("{:.2}x", c.ratio_p50),
            format!("{:.2}x", c.ratio_vs_single_p50),
            format!("{:.1}", c.publish_gb_s),
        ]);
    }
    let mut t2 = Table::new(
        "Publish → reader wake-up (futex), µs",
        &["reader", "samples", "p50", "p90", "p99", "max", "coalesced"],
    );
    for w in &wake {
        let s = w.latency_us.as_ref();
        t2.row(vec![
            w.reader.clone(),
            s.map_or(0, |s| s.count).to_string(),
            num(s.map(|s| s.p50), 1),
            num(s.map(|s| s.p90), 1),
            num(s.map(|s| s.p99), 1),
            num(s.map(|s| s.max), 1),
            w.coalesced.to_string(),
        ]);
    }
    let mut summary = Vec::new();
    for c in &publish {
        summary.push(format!(
            "publish {}: {:.2}x memcpy into the same footprint ({:.2}x a single warm buffer), p50 {:.1} µs",
            c.size, c.ratio_p50, c.ratio_vs_single_p50, c.publish_us.p50
        ));
    }
    for w in &wake {
        if let Some(s) = &w.latency_us {
            summary.push(format!(
                "wake-up, {}: p50 {:.1} µs, p99 {:.1} µs",
                w.reader, s.p50, s.p99
            ));
        }
    }
    Ok((RingData { publish, wake }, vec![t1, t2], summary))
}
