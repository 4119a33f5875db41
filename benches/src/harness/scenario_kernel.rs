//! `bench kernel`: frame-kernel benchmarks, reported as ratios against baselines measured
//! in the same run.
//!
//! 1. CPU time per frame (user + sys of the child, from `wait4`) of `frame-kernel --fast`
//!    (decode + swscale to NV12 + publish into the ring) versus `ffmpeg -i SAME -f null -`
//!    (decode only) and `ffmpeg -i SAME -pix_fmt nv12 -f null -` (decode + the same
//!    conversion), on the 540p footage and a synthetic 1080p H.264 stream, single-threaded
//!    decoding on both sides (`--decoder-threads 1` / `-threads 1`), median of `--runs`.
//! 2. Decode options (`--decode-options` runs only this): CPU time per *source* frame of
//!    `frame-kernel --fast` on the 540p footage with each `--skip-frames` /
//!    `--skip-loop-filter` setting, against the `ffmpeg` CLI with the same decoder
//!    options (`-skip_frame`, `-skip_loop_filter`, `-pix_fmt nv12`), as ratios to the
//!    full decode of the same run.
//! 3. Live capacity: how many realtime cameras (file sources looped at 25 fps, one
//!    kernel process each) this box sustains for `--window-s`, where sustaining means no
//!    camera ever fell more than 0.5 s behind its 25 fps clock (sampled every 250 ms),
//!    none is behind at the end of the window, and every decoded frame was published.
//!
//! Build both binaries in release mode, then run:
//! `cargo build --release -p frame-kernel -p benches && target/release/bench kernel`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use shm_ring::RingReader;

/// `bench kernel`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct KernelArgs {
    /// The frame-kernel binary (default: next to this one).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Asset folder (default $FRAMEBUS_ASSETS or `<workspace>/../shared/assets`).
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Repetitions of each CPU measurement, interleaved (minimum and median reported;
    /// ratios use the minimum, the least disturbed by other load on the box).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Passes over each clip per CPU measurement (amortises process start-up).
    #[arg(long, default_value_t = 2)]
    passes: u32,
    /// Seconds of the synthetic 1080p clip.
    #[arg(long, default_value_t = 10)]
    synthetic_s: u32,
    /// Measurement window of each live-capacity step, seconds.
    #[arg(long, default_value_t = 10)]
    window_s: u64,
    /// Skip the live-capacity search.
    #[arg(long)]
    no_live: bool,
    /// Only run one live step with this many 540p cameras (diagnostics), then exit.
    #[arg(long)]
    cameras: Option<usize>,
    /// Largest camera count tried per resolution.
    #[arg(long, default_value_t = 64)]
    max_cameras: usize,
    /// Only compare the decode options (skip frames, skip loop filter), then exit.
    #[arg(long)]
    decode_options: bool,
    /// Scheduling niceness for this process and every child (e.g. -10 on a shared
    /// machine, so unrelated load disturbs the measurement less; needs privileges).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    nice: i32,
}

#[derive(Debug, Clone, Copy)]
struct Cpu {
    user_s: f64,
    sys_s: f64,
    wall_s: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// Runs `cmd` to completion and returns its own CPU time (wait4 rusage).
fn run_cpu(cmd: &mut Command) -> Result<Cpu> {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr;
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = std::io::Read::read_to_string(e, &mut s);
        }
        s
    });
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; the out-parameters are live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall_s = start.elapsed().as_secs_f64();
    let err = err_reader.join().unwrap_or_default();
    ensure!(
        r == pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (status {status}):\n{err}"
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Cpu {
        user_s: tv(ru.ru_utime),
        sys_s: tv(ru.ru_stime),
        wall_s,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

/// CPU ms per frame: (minimum, median) over the runs.
#[derive(Debug, Clone, Copy)]
struct PerFrame {
    min_ms: f64,
    median_ms: f64,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn frame_count(clip: &Path) -> Result<u64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets"])
        .args(["-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"])
        .arg(clip)
        .output()?;
    ensure!(out.status.success(), "ffprobe {}", clip.display());
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

struct CpuResult {
    name: String,
    frames: u64,
    ffmpeg_null: PerFrame,
    ffmpeg_nv12: PerFrame,
    kernel: PerFrame,
    kernel_wall_fps: f64,
}

fn cpu_per_frame(
    kernel: &Path,
    clip: &Path,
    name: &str,
    cli: &KernelArgs,
    ring_dir: &Path,
) -> Result<CpuResult> {
    let per_pass = frame_count(clip)?;
    let frames = per_pass * u64::from(cli.passes);
    let loops = (cli.passes - 1).to_string();
    let (mut null, mut nv12, mut kern, mut kern_wall) = (vec![], vec![], vec![], vec![]);
    for run in 0..cli.runs {
        let ffmpeg = |extra: &[&str]| {
            let mut c = Command::new("ffmpeg");
            c.args([
                "-v",
                "error",
                "-nostdin",
                "-threads",
                "1",
                "-stream_loop",
                &loops,
                "-i",
            ])
            .arg(clip)
            .args(extra)
            .args(["-f", "null", "-"]);
            c
        };
        null.push(run_cpu(&mut ffmpeg(&[]))?.total());
        nv12.push(run_cpu(&mut ffmpeg(&["-pix_fmt", "nv12"]))?.total());
        let ring = format!("bench{run}");
        let k = run_cpu(
            Command::new(kernel)
                .args(["--camera-id", &ring, "--source"])
                .arg(clip)
                .arg("--ring-dir")
                .arg(ring_dir)
                .args(["--fast", "--loop", "--decoder-threads", "1", "--keep-ring"])
                .args(["--max-frames", &frames.to_string()])
                .env("FRAMEBUS_LOG", "warn"),
        )?;
        let reader = RingReader::open(ring_dir, &ring)?;
        let c = reader.header().counters;
        ensure!(
            c.frames_published == frames && c.frames_decoded >= frames,
            "kernel published {} of {frames} frames",
            c.frames_published
        );
        drop(reader);
        std::fs::remove_file(shm_ring::ring_path(ring_dir, &ring))?;
        kern.push(k.total());
        kern_wall.push(frames as f64 / k.wall_s);
    }
    let per_frame = |v: Vec<f64>| PerFrame {
        min_ms: min(&v) * 1000.0 / frames as f64,
        median_ms: median(v) * 1000.0 / frames as f64,
    };
    Ok(CpuResult {
        name: name.to_owned(),
        frames,
        ffmpeg_null: per_frame(null),
        ffmpeg_nv12: per_frame(nv12),
        kernel: per_frame(kern),
        kernel_wall_fps: median(kern_wall),
    })
}

/// One decode option: the kernel's flags and the ffmpeg CLI's decoder options.
const DECODE_OPTIONS: [(&str, &[&str], &[&str]); 6] = [
    ("full decode", &["--skip-frames", "none"], &[]),
    (
        "skip B-frames (bidir)",
        &["--skip-frames", "bidir"],
        &["-skip_frame", "bidir"],
    ),
    (
        "skip non-ref (noref)",
        &["--skip-frames", "noref"],
        &["-skip_frame", "noref"],
    ),
    (
        "skip loop filter",
        &["--skip-frames", "none", "--skip-loop-filter", "all"],
        &["-skip_loop_filter", "all"],
    ),
    (
        "noref + loop filter",
        &["--skip-frames", "noref", "--skip-loop-filter", "all"],
        &["-skip_frame", "noref", "-skip_loop_filter", "all"],
    ),
    (
        "bidir + loop filter",
        &["--skip-frames", "bidir", "--skip-loop-filter", "all"],
        &["-skip_frame", "bidir", "-skip_loop_filter", "all"],
    ),
];

/// CPU ms per source frame of the kernel and of the ffmpeg CLI for each of
/// [`DECODE_OPTIONS`] (one pass over `clip` per run, runs interleaved), and the frames
/// the kernel published.
fn decode_options(kernel: &Path, clip: &Path, cli: &KernelArgs, ring_dir: &Path) -> Result<()> {
    let frames = frame_count(clip)?;
    let n = DECODE_OPTIONS.len();
    let (mut kern, mut ff) = (vec![vec![]; n], vec![vec![]; n]);
    let mut published = vec![0u64; n];
    for run in 0..cli.runs {
        for (i, (_, kflags, fflags)) in DECODE_OPTIONS.iter().enumerate() {
            let f = run_cpu(
                Command::new("ffmpeg")
                    .args(["-v", "error", "-nostdin", "-threads", "1"])
                    .args(*fflags)
                    .arg("-i")
                    .arg(clip)
                    .args(["-pix_fmt", "nv12", "-f", "null", "-"]),
            )?;
            ff[i].push(f.total());
            let ring = format!("opt{run}-{i}");
            let k = run_cpu(
                Command::new(kernel)
                    .args(["--camera-id", &ring, "--source"])
                    .arg(clip)
                    .arg("--ring-dir")
                    .arg(ring_dir)
                    .args(["--fast", "--decoder-threads", "1", "--keep-ring"])
                    .args(*kflags)
                    .env("FRAMEBUS_LOG", "warn"),
            )?;
            let reader = RingReader::open(ring_dir, &ring)?;
            let c = reader.header().counters;
            ensure!(
                c.decode_errors == 0,
                "{ring}: {} decode errors",
                c.decode_errors
            );
            published[i] = c.frames_published;
            drop(reader);
            std::fs::remove_file(shm_ring::ring_path(ring_dir, &ring))?;
            kern[i].push(k.total());
        }
    }
    let ms = |v: &[f64]| min(v) * 1000.0 / frames as f64;
    let (k0, f0) = (ms(&kern[0]), ms(&ff[0]));
    println!(
        "540p footage, {frames} source frames, CPU ms per source frame (minimum of {} runs), load average {}:",
        cli.runs,
        load_average()
    );
    println!(
        "  {:<24} {:>9} {:>12} {:>10} {:>12} {:>10} {:>14}",
        "option", "published", "kernel ms", "vs full", "ffmpeg ms", "vs full", "kernel/ffmpeg"
    );
    for (i, (name, _, _)) in DECODE_OPTIONS.iter().enumerate() {
        let (k, f) = (ms(&kern[i]), ms(&ff[i]));
        println!(
            "  {name:<24} {:>9} {k:>12.3} {:>9.2}x {f:>12.3} {:>9.2}x {:>13.2}x",
            published[i],
            k / k0,
            f / f0,
            k / f
        );
    }
    Ok(())
}

/// Total and idle jiffies from /proc/stat (for the box's CPU use during a window).
fn cpu_jiffies() -> Result<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat")?;
    let line = s.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    ensure!(v.len() >= 5, "bad /proc/stat");
    Ok((v.iter().sum(), v[3] + v[4]))
}

struct LiveStep {
    cameras: usize,
    min_ratio: f64,
    dropped: u64,
    cpu_busy: f64,
    /// Mean CPU use of one kernel process, in cores.
    per_camera_cores: f64,
    /// Worst camera's frames behind its 25 fps clock at the end of the window.
    final_deficit: f64,
    /// Worst lag seen during the window, frames.
    max_deficit: f64,
    ok: bool,
}

/// utime + stime of `pid`, in seconds.
fn proc_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    // Token 0 is field 3 (state); tpgid may be -1, so parse every token as i64.
    let f: Vec<i64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) as f64 / hz)
}

/// Starts `n` realtime looping kernels on `clip`; after a warm-up, measures each ring's
/// publishes over the window against 25 fps.
fn live_step(
    kernel: &Path,
    clip: &Path,
    n: usize,
    window: Duration,
    ring_dir: &Path,
) -> Result<LiveStep> {
    struct Guard(Vec<std::process::Child>);
    impl Drop for Guard {
        fn drop(&mut self) {
            for c in &mut self.0 {
                // SAFETY: signalling our own children.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
            for c in &mut self.0 {
                let _ = c.wait();
            }
        }
    }
    let mut guard = Guard(Vec::new());
    for i in 0..n {
        guard.0.push(
            Command::new(kernel)
                .args(["--camera-id", &format!("live{i}"), "--source"])
                .arg(clip)
                .arg("--ring-dir")
                .arg(ring_dir)
                .args(["--realtime", "--loop", "--decoder-threads", "1"])
                .env("FRAMEBUS_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut readers = Vec::new();
    for i in 0..n {
        loop {
            match RingReader::open(ring_dir, &format!("live{i}")) {
                Ok(r) if r.write_seq() > 0 => {
                    readers.push(r);
                    break;
                }
                _ if Instant::now() > deadline => bail!("camera {i} of {n} never started"),
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let start = Instant::now();
    let j0 = cpu_jiffies()?;
    let p0: f64 = guard.0.iter().map(|c| proc_cpu_s(c.id())).sum();
    let c0: Vec<_> = readers.iter().map(|r| r.header().counters).collect();
    // Sample every 250 ms: a camera's deficit is the frames its 25 fps clock asked for
    // since the window began minus the frames it published.
    let mut max_deficit = 0.0f64;
    let mut final_deficit = 0.0f64;
    let mut c1 = c0.clone();
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_millis(250));
        let t = start.elapsed().as_secs_f64();
        c1 = readers.iter().map(|r| r.header().counters).collect();
        final_deficit = c0
            .iter()
            .zip(&c1)
            .map(|(a, b)| 25.0 * t - (b.frames_published - a.frames_published) as f64)
            .fold(f64::MIN, f64::max);
        max_deficit = max_deficit.max(final_deficit);
    }
    let p1: f64 = guard.0.iter().map(|c| proc_cpu_s(c.id())).sum();
    let j1 = cpu_jiffies()?;
    let secs = start.elapsed().as_secs_f64();
    let expected = 25.0 * secs;
    let mut min_ratio = f64::MAX;
    let mut dropped = 0;
    for (a, b) in c0.iter().zip(&c1) {
        let published = (b.frames_published - a.frames_published) as f64;
        min_ratio = min_ratio.min(published / expected);
        // Decoded but not published in the window. A realtime kernel holds at most one
        // decoded frame until it is due, so a gap of one is in flight, not dropped.
        let decoded = b.frames_decoded - a.frames_decoded;
        let published = b.frames_published - a.frames_published;
        dropped += decoded.saturating_sub(published).saturating_sub(1);
    }
    let cpu_busy = 1.0 - (j1.1 - j0.1) as f64 / (j1.0 - j0.0).max(1) as f64;
    drop(readers);
    drop(guard);
    Ok(LiveStep {
        cameras: n,
        min_ratio,
        dropped,
        cpu_busy,
        per_camera_cores: (p1 - p0) / secs / n as f64,
        final_deficit,
        max_deficit,
        // Keeping up: no camera ever lagged its clock by more than 0.5 s, at the end of
        // the window none is more than 2 frames (80 ms, sampling phase included) behind,
        // and nothing decoded was lost.
        ok: max_deficit <= 12.5 && final_deficit <= 2.0 && dropped == 0,
    })
}

fn live_capacity(
    kernel: &Path,
    clip: &Path,
    predicted: f64,
    cli: &KernelArgs,
    ring_dir: &Path,
) -> Result<(usize, Vec<LiveStep>)> {
    let window = Duration::from_secs(cli.window_s);
    let mut steps = Vec::new();
    let mut n = ((predicted * 0.6).floor() as usize).clamp(1, cli.max_cameras);
    let stride = ((predicted / 8.0).round() as usize).max(1);
    let mut best = 0;
    loop {
        let step = live_step(kernel, clip, n, window, ring_dir)?;
        println!(
            "  {:>3} cameras: worst camera {:>6.2} % of 25 fps, behind by {:.1} frames at end (max {:.1}), {} decoded frames unpublished, {:.3} cores per camera, box CPU busy {:>5.1} % -> {}",
            step.cameras,
            step.min_ratio * 100.0,
            step.final_deficit,
            step.max_deficit,
            step.dropped,
            step.per_camera_cores,
            step.cpu_busy * 100.0,
            if step.ok { "sustained" } else { "NOT sustained" }
        );
        let ok = step.ok;
        steps.push(step);
        if !ok {
            if best == 0 && n > 1 {
                n = (n / 2).max(1);
                continue;
            }
            break;
        }
        best = best.max(n);
        if n >= cli.max_cameras {
            break;
        }
        n = (n + stride).min(cli.max_cameras);
    }
    Ok((best, steps))
}

/// Runs `bench kernel`: prints the tables.
pub fn run(cli: &KernelArgs) -> Result<()> {
    if cli.nice != 0 {
        // SAFETY: plain syscall on this process; children inherit the niceness.
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, cli.nice) };
        ensure!(
            r == 0,
            "setpriority({}): {}",
            cli.nice,
            std::io::Error::last_os_error()
        );
    }
    let kernel = match &cli.kernel {
        Some(k) => k.clone(),
        None => super::system::default_bin_dir().join("frame-kernel"),
    };
    ensure!(
        kernel.is_file(),
        "no frame-kernel at {} (build it or pass --kernel)",
        kernel.display()
    );
    let assets = super::assets::assets_dir(cli.assets.as_deref());
    let clip540 = assets.join("video/people_walk_540p.mp4");
    ensure!(clip540.is_file(), "missing {}", clip540.display());
    let tmp = tempfile::tempdir()?;
    let ring_dir = tempfile::Builder::new()
        .prefix("kbench-")
        // An owned 0700 ring dir: frame-kernel and model-server refuse looser ones.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())?;

    if cli.decode_options {
        println!(
            "\n== Decode options: CPU per source frame, kernel vs ffmpeg CLI (same decoder options) =="
        );
        return decode_options(&kernel, &clip540, cli, ring_dir.path());
    }
    if let Some(n) = cli.cameras {
        let s = live_step(
            &kernel,
            &clip540,
            n,
            Duration::from_secs(cli.window_s),
            ring_dir.path(),
        )?;
        println!(
            "{n} cameras: worst {:.2} % of 25 fps, behind {:.1} frames at end (max {:.1}), {} unpublished, {:.3} cores/camera -> {}",
            s.min_ratio * 100.0,
            s.final_deficit,
            s.max_deficit,
            s.dropped,
            s.per_camera_cores,
            if s.ok { "sustained" } else { "NOT sustained" }
        );
        return Ok(());
    }
    let clip1080 = tmp.path().join("synthetic_1080p.mp4");
    let t = Instant::now();
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1920x1080:rate=25",
        ])
        .args([
            "-t",
            &cli.synthetic_s.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args(["-pix_fmt", "yuv420p", "-g", "50"])
        .arg(&clip1080)
        .status()?
        .success();
    ensure!(ok, "could not generate the 1080p clip");
    println!(
        "generated {} s 1080p25 H.264 (testsrc2, x264 veryfast) in {:.1} s",
        cli.synthetic_s,
        t.elapsed().as_secs_f64()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cores} cores, load average {}, niceness {}; kernel {}",
        load_average(),
        cli.nice,
        kernel.display()
    );

    println!(
        "\n== CPU time per frame (single-threaded decode, median of {} runs, {} passes each) ==",
        cli.runs, cli.passes
    );
    let mut results = Vec::new();
    for (clip, name) in [(&clip540, "540p footage"), (&clip1080, "1080p synthetic")] {
        let r = cpu_per_frame(&kernel, clip, name, cli, ring_dir.path())?;
        let (k, n, c) = (r.kernel, r.ffmpeg_null, r.ffmpeg_nv12);
        println!(
            "{} ({} frames), CPU ms/frame min (median):",
            r.name, r.frames
        );
        println!(
            "  ffmpeg -threads 1 -i clip -f null -                {:.3} ({:.3})",
            n.min_ms, n.median_ms
        );
        println!(
            "  ffmpeg -threads 1 -i clip -pix_fmt nv12 -f null -  {:.3} ({:.3})",
            c.min_ms, c.median_ms
        );
        println!(
            "  frame-kernel --fast --decoder-threads 1 (NV12)     {:.3} ({:.3})",
            k.min_ms, k.median_ms
        );
        println!(
            "  ratio kernel / ffmpeg-null {:.3}x (median {:.3}x); kernel / ffmpeg-nv12 {:.3}x (median {:.3}x); kernel fast {:.0} fps wall",
            k.min_ms / n.min_ms,
            k.median_ms / n.median_ms,
            k.min_ms / c.min_ms,
            k.median_ms / c.median_ms,
            r.kernel_wall_fps
        );
        results.push((clip.clone(), r));
    }

    println!(
        "\n== Decode options: CPU per source frame, kernel vs ffmpeg CLI (same decoder options) =="
    );
    decode_options(&kernel, &clip540, cli, ring_dir.path())?;

    if !cli.no_live {
        println!(
            "\n== Live capacity: realtime 25 fps cameras (one kernel each), {} s window ==",
            cli.window_s
        );
        for (clip, r) in &results {
            let predicted = cores as f64 / (r.kernel.min_ms / 1000.0 * 25.0);
            println!("{} (CPU model predicts {:.1} cameras):", r.name, predicted);
            let (best, _) = live_capacity(&kernel, clip, predicted, cli, ring_dir.path())?;
            println!(
                "{}: {best} cameras sustained on {cores} cores (load average now {})",
                r.name,
                load_average()
            );
        }
    }
    Ok(())
}
