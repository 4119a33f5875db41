//! Publishing an NV12 frame into the shared-memory ring (copy into the slot + publish,
//! which includes the futex wake) against a plain memcpy of the same bytes, same run.
//! Goal: ring publish ≤ 1.2x memcpy.
//!
//! `cargo bench -p benches --bench ring_publish -- --warm-up-time 1 --measurement-time 3`
//!
//! Baselines: `memcpy` copies into one buffer of the frame's size (stays warm in cache as
//! far as it fits); `memcpy_8_buffers` rotates over 8 such buffers, the same memory
//! footprint as the 8-slot ring. The ratios printed at the end are medians of the
//! per-iteration times of the measurement samples.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use shm_ring::{RingReader, RingWriter, WaitOutcome};

const SLOTS: u32 = 8;
const SAMPLE_SIZE: usize = 50;

/// Per-iteration nanoseconds of every sample, per benchmark.
static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(key: &str, iters: u64, elapsed: Duration) {
    let mut samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    samples
        .entry(key.to_owned())
        .or_default()
        .push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
}

/// Median of the last `SAMPLE_SIZE` samples (the measurement phase; earlier entries are
/// warm-up calls).
fn median_ns(key: &str) -> Option<f64> {
    let samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let all = samples.get(key)?;
    if all.len() < SAMPLE_SIZE {
        return None;
    }
    let mut last: Vec<f64> = all[all.len() - SAMPLE_SIZE..].to_vec();
    last.sort_by(f64::total_cmp);
    Some(last[last.len() / 2])
}

/// Paired ratios per frame size: (publish / memcpy, publish / memcpy_8_buffers).
static PAIRED: Mutex<BTreeMap<String, (f64, f64)>> = Mutex::new(BTreeMap::new());

/// Median over rounds of `time(test) / time(base)`, each timing `block` iterations, the
/// order alternating per round; runs for about 1.5 s.
fn paired(block: u64, test: &mut dyn FnMut(u64), base: &mut dyn FnMut(u64)) -> f64 {
    let timed = |f: &mut dyn FnMut(u64)| {
        let start = Instant::now();
        f(block);
        start.elapsed().as_secs_f64()
    };
    let mut ratios = Vec::new();
    let start = Instant::now();
    while (start.elapsed() < Duration::from_millis(1500) || ratios.len() < 20)
        && ratios.len() < 2000
    {
        let (t, b) = if ratios.len() % 2 == 0 {
            let t = timed(test);
            (t, timed(base))
        } else {
            let b = timed(base);
            (timed(test), b)
        };
        ratios.push(t / b);
    }
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn ring_dir() -> tempfile::TempDir {
    // The ring's real home is tmpfs; fall back to the default temp dir elsewhere.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("ring-bench")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

fn touched(len: usize) -> Vec<u8> {
    // vec![0; n] may be lazily mapped zero pages; write them so no page fault is timed.
    let mut v = vec![0u8; len];
    v.fill(1);
    v
}

fn bench_size(c: &mut Criterion, label: &str, width: u32, height: u32) {
    let geometry = FrameGeometry::packed(width, height, PixelFormat::Nv12).expect("geometry");
    let size = geometry.frame_size as usize;
    let src: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    let dir = ring_dir();
    let mut writer = RingWriter::builder(format!("bench-{label}"))
        .dir(dir.path())
        .slots(SLOTS)
        .geometry(geometry)
        .create()
        .expect("create ring");
    // Touch every slot once so the timed loop starts from a steady state.
    for _ in 0..SLOTS {
        let mut slot = writer.begin_write();
        slot.data_mut().copy_from_slice(&src);
        slot.publish(0, 0);
    }
    let mut dst = touched(size);
    let mut rotating: Vec<Vec<u8>> = (0..SLOTS).map(|_| touched(size)).collect();

    let group_name = format!("ring_publish/{label}");
    let mut group = c.benchmark_group(&group_name);
    group.throughput(Throughput::Bytes(size as u64));
    group.sample_size(SAMPLE_SIZE);

    let key = format!("{group_name}/memcpy");
    group.bench_function("memcpy", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            }
            let elapsed = start.elapsed();
            record(&key, iters, elapsed);
            elapsed
        })
    });

    let key = format!("{group_name}/memcpy_8_buffers");
    group.bench_function("memcpy_8_buffers", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let buf = &mut rotating[(i % u64::from(SLOTS)) as usize];
                buf.copy_from_slice(black_box(&src));
                black_box(buf);
            }
            let elapsed = start.elapsed();
            record(&key, iters, elapsed);
            elapsed
        })
    });

    let key = format!("{group_name}/ring_publish");
    group.bench_function("ring_publish", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let mut slot = writer.begin_write();
                slot.data_mut().copy_from_slice(black_box(&src));
                black_box(slot.publish(i as i64, i));
            }
            let elapsed = start.elapsed();
            record(&key, iters, elapsed);
            elapsed
        })
    });

    // The protocol's fixed cost alone: claim a slot and publish it, no bytes copied.
    let key = format!("{group_name}/publish_no_copy");
    group.bench_function("publish_no_copy", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                black_box(writer.begin_write().publish(i as i64, i));
            }
            let elapsed = start.elapsed();
            record(&key, iters, elapsed);
            elapsed
        })
    });

    // A 2-slot ring: the smallest footprint a ring can have (2 frames).
    let mut small = RingWriter::builder(format!("bench2-{label}"))
        .dir(dir.path())
        .slots(2)
        .geometry(geometry)
        .create()
        .expect("create 2-slot ring");
    let key = format!("{group_name}/ring_publish_2_slots");
    group.bench_function("ring_publish_2_slots", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let mut slot = small.begin_write();
                slot.data_mut().copy_from_slice(black_box(&src));
                black_box(slot.publish(i as i64, i));
            }
            let elapsed = start.elapsed();
            record(&key, iters, elapsed);
            elapsed
        })
    });
    drop(small);

    // Same as ring_publish, with a reader asleep in wait_for_publish, so every FUTEX_WAKE wakes a thread.
    let reader = RingReader::open(dir.path(), &format!("bench-{label}")).expect("open ring");
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut last = reader.write_seq();
            while !stop.load(Ordering::Relaxed) {
                match reader.wait_for_publish(last, Duration::from_millis(100)) {
                    WaitOutcome::Published(n) => last = n,
                    WaitOutcome::TimedOut => {}
                    WaitOutcome::Closed => return,
                }
            }
        })
    };
    let key = format!("{group_name}/ring_publish_reader_waiting");
    group.bench_function("ring_publish_reader_waiting", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for i in 0..iters {
                let mut slot = writer.begin_write();
                slot.data_mut().copy_from_slice(black_box(&src));
                black_box(slot.publish(i as i64, i));
            }
            let elapsed = start.elapsed();
            record(&key, iters, elapsed);
            elapsed
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = follower.join();

    // Paired, interleaved measurement: blocks of publishes and memcpys alternate, so load
    // from other processes hits both sides alike. Skipped in `cargo test` smoke runs.
    if std::env::args().any(|a| a == "--bench") {
        let block = u64::from(SLOTS);
        let mut i = 0u64;
        let mut publish = |n: u64| {
            for _ in 0..n {
                let mut slot = writer.begin_write();
                slot.data_mut().copy_from_slice(black_box(&src));
                black_box(slot.publish(i as i64, i));
                i += 1;
            }
        };
        let single = paired(block, &mut publish, &mut |n| {
            for _ in 0..n {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            }
        });
        let rotated = paired(block, &mut publish, &mut |n| {
            for k in 0..n {
                let buf = &mut rotating[(k % u64::from(SLOTS)) as usize];
                buf.copy_from_slice(black_box(&src));
                black_box(buf);
            }
        });
        PAIRED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.to_owned(), (single, rotated));
    }
}

fn print_ratios(labels: &[&str]) {
    for label in labels {
        let group = format!("ring_publish/{label}");
        let get = |name: &str| median_ns(&format!("{group}/{name}"));
        let (Some(memcpy), Some(memcpy8)) = (get("memcpy"), get("memcpy_8_buffers")) else {
            continue;
        };
        println!(
            "{group}: memcpy {:.1} us, memcpy_8_buffers {:.1} us",
            memcpy / 1e3,
            memcpy8 / 1e3
        );
        if let Some(t) = get("publish_no_copy") {
            println!("  publish_no_copy (protocol overhead): {:.2} us", t / 1e3);
        }
        if let Some((single, rotated)) =
            PAIRED.lock().unwrap_or_else(|e| e.into_inner()).get(*label)
        {
            println!(
                "  paired interleaved: ring_publish = {single:.2}x memcpy, \
                 {rotated:.2}x memcpy_8_buffers (goal <= 1.2x)"
            );
        }
        for name in [
            "ring_publish",
            "ring_publish_2_slots",
            "ring_publish_reader_waiting",
        ] {
            if let Some(t) = get(name) {
                println!(
                    "  {name}: {:.1} us = {:.2}x memcpy, {:.2}x memcpy_8_buffers (goal <= 1.2x)",
                    t / 1e3,
                    t / memcpy,
                    t / memcpy8
                );
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let sizes = [("960x540", 960, 540), ("1920x1080", 1920, 1080)];
    for (label, w, h) in sizes {
        bench_size(&mut c, label, w, h);
    }
    c.final_summary();
    print_ratios(&sizes.map(|(label, _, _)| label));
}
