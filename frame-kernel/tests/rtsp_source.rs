//! The real `frame-kernel` binary against the project's fake RTSP camera (GStreamer,
//! 127.0.0.1) serving the real footage: bit-exact frames, camera killed and restarted,
//! camera frozen with SIGSTOP.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use proto_schema::time::MonoNanos;
use shm_ring::{RingReader, RingState};

const W: usize = 960;
const H: usize = 540;
const NV12: usize = W * H * 3 / 2;

struct Setup {
    py: std::path::PathBuf,
    clip: std::path::PathBuf,
}

fn setup() -> Option<Setup> {
    let clip = asset(CLIP)?;
    ffmpeg_cli()?;
    let py = camera_python()?;
    Some(Setup { py, clip })
}

/// Index of every frame of the camera's served stream (its cached Annex-B file, which
/// is exactly what the camera sends), decoded by the ffmpeg CLI: hash → frame indices.
fn reference_index(cam: &Camera) -> HashMap<u64, Vec<usize>> {
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    let n = ffmpeg_frames(&cam.sources["cam"], "nv12", NV12, None, |i, f| {
        index.entry(hash(f)).or_default().push(i)
    });
    assert!(n > 400, "reference decode gave {n} frames");
    index
}

/// Over TCP the kernel is the camera's first client, so it receives the stream from its
/// first frame: kernel frame k must equal ffmpeg's frame k of the served file. A second
/// kernel over UDP joins the running stream: its frames must be frames of the stream.
#[test]
fn rtsp_frames_equal_ffmpeg_decode_of_served_stream() {
    let Some(s) = setup() else { return };
    let cam = start_camera(&s.py, 0, &[("cam", &s.clip)]);
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let url = cam.url("cam");
    let tcp = Kernel::start(
        &[
            "--camera-id",
            "tcp",
            "--source",
            &url,
            "--ring-dir",
            d,
            "--slots",
            "32",
        ],
        dir.path(),
        "tcp",
    );
    let reader = open_ring(dir.path(), "tcp", Duration::from_secs(15));
    let t0 = Instant::now();
    let frames = collect_frames(&reader, 50, Duration::from_secs(20));
    let elapsed = t0.elapsed();
    assert_eq!(frames.len(), 50, "{}", tcp.log());

    let udp = Kernel::start(
        &[
            "--camera-id",
            "udp",
            "--source",
            &url,
            "--transport",
            "udp",
            "--ring-dir",
            d,
        ],
        dir.path(),
        "udp",
    );
    let udp_reader = open_ring(dir.path(), "udp", Duration::from_secs(15));
    let udp_frames = collect_frames(&udp_reader, 25, Duration::from_secs(20));

    let index = reference_index(&cam);
    for (k, (info, bytes)) in frames.iter().enumerate() {
        assert_eq!(info.frame_id, k as u64);
        let at = index
            .get(&hash(bytes))
            .unwrap_or_else(|| panic!("TCP frame {k} is no frame of the served stream"));
        assert!(
            at.contains(&k),
            "TCP frame {k} equals served frame(s) {at:?}, expected {k}"
        );
    }
    // The first frames arrive in a burst (buffered while the stream was probed).
    let span_ms = (frames[49].0.capture_ts_ns - frames[20].0.capture_ts_ns) as f64 / 1e6;
    let fps = 29.0 * 1000.0 / span_ms;
    println!(
        "RTSP/TCP: 50 frames bit-exact, {fps:.1} fps by capture time, collected in {elapsed:?}"
    );
    assert!(
        (20.0..=30.0).contains(&fps),
        "camera sends 25 fps, kernel published {fps:.1}"
    );
    // RTP timestamps, re-based once RTCP sender reports arrive: about 40 ms a frame.
    let pts_step_ms = (frames[49].0.pts_ns - frames[0].0.pts_ns) as f64 / 49.0 / 1e6;
    assert!(
        (35.0..=45.0).contains(&pts_step_ms),
        "pts step {pts_step_ms} ms"
    );
    assert!(
        frames.windows(2).all(|w| w[1].0.pts_ns > w[0].0.pts_ns),
        "pts increase"
    );

    assert!(udp_frames.len() >= 20, "{}", udp.log());
    let matched = udp_frames
        .iter()
        .filter(|(_, b)| index.contains_key(&hash(b)))
        .count();
    println!(
        "RTSP/UDP: {matched} of {} frames equal a served frame",
        udp_frames.len()
    );
    assert!(
        matched * 10 >= udp_frames.len() * 9,
        "UDP frames must be the camera's frames"
    );
    let h = udp_reader.header();
    assert_eq!(h.state, RingState::Live);
    drop((tcp, udp));
}

fn reconnects(r: &RingReader) -> u64 {
    r.header().counters.reconnects
}

/// The camera is killed and restarted (same port) three times while the kernel runs:
/// the ring goes Reconnecting, frames resume after each restart, and the kernel's file
/// descriptors and threads are the same after the cycles as before.
#[test]
fn camera_killed_and_restarted_frames_resume_without_leaks() {
    let Some(s) = setup() else { return };
    let mut cam = start_camera(&s.py, 0, &[("cam", &s.clip)]);
    let port = cam.port;
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let url = cam.url("cam");
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "restart",
            "--source",
            &url,
            "--ring-dir",
            d,
            "--stall-timeout-ms",
            "2000",
        ],
        dir.path(),
        "restart",
    );
    let reader = open_ring(dir.path(), "restart", Duration::from_secs(15));
    wait_until(&reader, Duration::from_secs(10), "live", |r| {
        state(r) == RingState::Live && r.write_seq() > 10
    });
    std::thread::sleep(Duration::from_millis(300));
    let (fds0, threads0, rss0) = (k.fd_count(), k.thread_count(), k.rss_kib());

    let mut resumes = Vec::new();
    for cycle in 1..=3u64 {
        let killed = Instant::now();
        cam.kill();
        let noticed = wait_until(&reader, Duration::from_secs(10), "reconnecting", |r| {
            state(r) == RingState::Reconnecting
        });
        // Let some attempts hit a closed port (connection refused).
        std::thread::sleep(Duration::from_millis(800));
        // The heartbeat keeps moving while reconnecting.
        let age_ms = MonoNanos::now()
            .get()
            .saturating_sub(reader.header().heartbeat_ns)
            / 1_000_000;
        assert!(
            age_ms < 1000,
            "heartbeat {age_ms} ms old while reconnecting"
        );
        let before = reader.write_seq();
        cam = start_camera(&s.py, port, &[("cam", &s.clip)]);
        let ready = cam.ready_at;
        let resumed = wait_until(
            &reader,
            Duration::from_secs(15),
            "frames after restart",
            |r| r.write_seq() > before && state(r) == RingState::Live,
        );
        let resume = resumed - ready;
        println!(
            "cycle {cycle}: loss noticed {} ms after kill; frames resumed {} ms after the camera was ready; reconnects {}",
            (noticed - killed).as_millis(),
            resume.as_millis(),
            reconnects(&reader)
        );
        resumes.push(resume);
        assert!(
            reconnects(&reader) >= cycle,
            "each outage counts reconnects"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (fds1, threads1, rss1) = (k.fd_count(), k.thread_count(), k.rss_kib());
    println!(
        "fds {fds0} -> {fds1}, threads {threads0} -> {threads1}, RSS {rss0} -> {rss1} KiB after 3 camera restarts"
    );
    assert_eq!(fds1, fds0, "file descriptors leaked across reconnects");
    assert_eq!(threads1, threads0, "threads leaked across reconnects");
    // Allocator caches may keep a little; a leaked decoder/demuxer per reconnect would
    // show as several MiB each.
    assert!(
        rss1 < rss0 + 16 * 1024,
        "memory grew {rss0} -> {rss1} KiB across reconnects"
    );
    let max = resumes.iter().max().unwrap();
    println!(
        "time to resume: max {} ms over {} restarts",
        max.as_millis(),
        resumes.len()
    );
    assert!(k.terminate().success(), "{}", k.log());
}

/// The camera freezes (SIGSTOP: connection open, no data, no answers): the stall is
/// noticed within the stall timeout, the kernel keeps attempting to reconnect (each
/// attempt bounded by the open deadline), and frames resume after SIGCONT.
#[test]
fn frozen_camera_is_detected_and_recovered() {
    let Some(s) = setup() else { return };
    let cam = start_camera(&s.py, 0, &[("cam", &s.clip)]);
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let url = cam.url("cam");
    let stall_ms = 1500u64;
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "frozen",
            "--source",
            &url,
            "--ring-dir",
            d,
            "--stall-timeout-ms",
            &stall_ms.to_string(),
            "--open-timeout-ms",
            "1000",
        ],
        dir.path(),
        "frozen",
    );
    let reader = open_ring(dir.path(), "frozen", Duration::from_secs(15));
    wait_until(&reader, Duration::from_secs(10), "live", |r| {
        state(r) == RingState::Live && r.write_seq() > 10
    });

    let stopped = Instant::now();
    cam.signal(libc::SIGSTOP);
    let noticed = wait_until(&reader, Duration::from_secs(10), "stall noticed", |r| {
        state(r) == RingState::Reconnecting
    });
    let noticed_ns = MonoNanos::now().get();
    // Frames already in the socket buffers still arrive after the freeze, so the stall
    // clock starts at the last frame received, as the kernel's does.
    let last_frame_ns = reader.header().counters.last_frame_ns;
    let since_last_ms = noticed_ns.saturating_sub(last_frame_ns) / 1_000_000;
    println!(
        "freeze noticed {since_last_ms} ms after the last frame, {} ms after SIGSTOP (stall timeout {stall_ms} ms)",
        (noticed - stopped).as_millis()
    );
    assert!(
        since_last_ms <= stall_ms + 1000,
        "stall noticed too late: {since_last_ms} ms\n{}",
        k.log()
    );

    let r0 = reconnects(&reader);
    wait_until(
        &reader,
        Duration::from_secs(15),
        "reconnect attempts while frozen",
        |r| reconnects(r) >= r0 + 2,
    );
    let age_ms = MonoNanos::now()
        .get()
        .saturating_sub(reader.header().heartbeat_ns)
        / 1_000_000;
    assert!(
        age_ms < 1000,
        "heartbeat {age_ms} ms old while the camera is frozen"
    );
    assert_eq!(state(&reader), RingState::Reconnecting);

    let before = reader.write_seq();
    let resumed_at = Instant::now();
    cam.signal(libc::SIGCONT);
    let resumed = wait_until(
        &reader,
        Duration::from_secs(15),
        "frames after SIGCONT",
        |r| r.write_seq() > before && state(r) == RingState::Live,
    );
    println!(
        "frames resumed {} ms after SIGCONT; reconnect attempts while frozen: {}",
        (resumed - resumed_at).as_millis(),
        reconnects(&reader) - r0
    );
    assert!(k.terminate().success(), "{}", k.log());
}
