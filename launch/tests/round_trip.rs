//! The launch contract holds both ways: any valid launch struct, written with `to_argv`
//! and parsed as the child parses it, comes back equal; and every flag `--help` lists is
//! one `to_argv` writes for some struct.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use framebus_launch::{
    Device, KernelLaunch, LogFormat, ModelFamily, ServerLaunch, Setting, Transport,
};
use proptest::prelude::*;

/// Printable text, including leading dashes, `=` and spaces.
fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,12}"
}

/// Paths: clap refuses an empty one.
fn path() -> impl Strategy<Value = PathBuf> {
    "[ -~]{1,12}".prop_map(PathBuf::from)
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        Just(0.5),
        -1e6..1e6f64,
        any::<f64>().prop_filter("finite", |f| f.is_finite())
    ]
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![Just(Transport::Tcp), Just(Transport::Udp)]
}

fn log_format() -> impl Strategy<Value = LogFormat> {
    prop_oneof![Just(LogFormat::Text), Just(LogFormat::Json)]
}

fn setting() -> impl Strategy<Value = Setting> {
    prop_oneof![Just(Setting::Auto), any::<usize>().prop_map(Setting::Fixed)]
}

/// Valid kernel launches: exactly one of `--source`/`--source-fd`, never both
/// `--realtime` and `--fast`, no `--speed` with `--fast` (clap refuses those pairs).
fn kernel() -> impl Strategy<Value = KernelLaunch> {
    let ids = (
        text(),
        proptest::option::of(text()),
        prop_oneof![
            text().prop_map(|s| (Some(s), None)),
            any::<i32>().prop_map(|fd| (None, Some(fd)))
        ],
        path(),
        any::<u32>(),
        text(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(any::<u32>()),
        transport(),
    );
    let pacing = (
        prop_oneof![
            Just((false, false)),
            Just((true, false)),
            Just((false, true))
        ],
        finite(),
        any::<bool>(),
        proptest::option::of(any::<u64>()),
        any::<u32>(),
        any::<[u64; 5]>(),
        proptest::option::of(any::<u64>()),
        proptest::collection::vec(text(), 0..3),
    );
    let decode = (
        text(),
        proptest::option::of(finite()),
        any::<bool>(),
        text(),
        text(),
        any::<bool>(),
        log_format(),
        proptest::option::of(path()),
        any::<u64>(),
        any::<u64>(),
        prop_oneof![
            Just((None, None)),
            text().prop_map(|s| (Some(s), None)),
            any::<i32>().prop_map(|fd| (None, Some(fd)))
        ],
    );
    (ids, pacing, decode).prop_map(|(ids, pacing, decode)| {
        let (
            camera_id,
            ring,
            (source, source_fd),
            ring_dir,
            slots,
            format,
            width,
            height,
            transport,
        ) = ids;
        let ((realtime, fast), speed, loop_file, max_frames, decoder_threads, t, io, av_options) =
            pacing;
        let (
            skip_frames,
            consumer_fps,
            all_frames,
            skip_loop_filter,
            hwaccel,
            keep_ring,
            log_format,
            clip_dir,
            clip_keep_ms,
            clip_max_bytes,
            (record_source, record_source_fd),
        ) = decode;
        let mut l = KernelLaunch::new(camera_id, 0);
        l.ring = ring;
        l.source = source;
        l.source_fd = source_fd;
        l.ring_dir = ring_dir;
        l.slots = slots;
        l.format = format;
        l.width = width;
        l.height = height;
        l.transport = transport;
        l.realtime = realtime;
        l.fast = fast;
        l.speed = if fast { 1.0 } else { speed };
        l.loop_file = loop_file;
        l.max_frames = max_frames;
        l.decoder_threads = decoder_threads;
        [
            l.stall_timeout_ms,
            l.first_frame_timeout_ms,
            l.open_timeout_ms,
            l.backoff_initial_ms,
            l.backoff_max_ms,
        ] = t;
        l.io_timeout_ms = io;
        l.av_options = av_options;
        l.skip_frames = skip_frames;
        l.consumer_fps = consumer_fps;
        l.all_frames = all_frames;
        l.skip_loop_filter = skip_loop_filter;
        l.hwaccel = hwaccel;
        l.keep_ring = keep_ring;
        l.log_format = log_format;
        l.clip_dir = clip_dir;
        l.clip_keep_ms = clip_keep_ms;
        l.clip_max_bytes = clip_max_bytes;
        // The record stream requires `--clip-dir`.
        if l.clip_dir.is_some() {
            (l.record_source, l.record_source_fd) = (record_source, record_source_fd);
        }
        l
    })
}

/// Valid server launches (`ort_dylib` set: an empty one means "from the environment").
fn server() -> impl Strategy<Value = ServerLaunch> {
    let a = (
        path(),
        proptest::option::of(text()),
        path(),
        path(),
        prop_oneof![
            Just(ModelFamily::Auto),
            Just(ModelFamily::Yolov8),
            Just(ModelFamily::Yolox)
        ],
        prop_oneof![Just(Device::Cpu), Just(Device::Cuda)],
        [setting(), setting(), setting(), setting()],
        any::<u64>(),
        proptest::option::of(path()),
    );
    let b = (
        any::<[usize; 6]>(),
        any::<[u64; 5]>(),
        (-1e3..1e3f32, -1e3..1e3f32),
        0..=0o777u32,
        proptest::option::of(path()),
        any::<bool>(),
        proptest::option::of(path()),
        path(),
        any::<bool>(),
    );
    let c = (
        proptest::collection::vec(any::<u32>(), 0..3),
        proptest::collection::vec(any::<u32>(), 0..3),
    );
    (a, b, c).prop_map(|(a, b, c)| {
        let (model, model_id, socket, ring_dir, family, device, s, calibration_ms, cache) = a;
        let (n, t, (score, iou), mode, control, spin, labels, ort, log_json) = b;
        let (trust_uids, trust_gids) = c;
        let mut l = ServerLaunch::new(model, socket);
        l.model_id = model_id;
        l.ring_dir = ring_dir;
        l.trust_ring_uids = trust_uids;
        l.trust_ring_gids = trust_gids;
        l.family = family;
        l.device = device;
        [l.threads, l.instances, l.max_batch, l.max_queue_wait_ms] = s;
        l.calibration_ms = calibration_ms;
        l.calibration_cache = cache;
        [
            l.max_queue_per_source,
            l.max_detections,
            l.max_connections,
            l.max_inflight,
            l.max_frame,
            l.io_threads,
        ] = n;
        [
            l.batch_delay_us,
            l.read_timeout_ms,
            l.idle_timeout_ms,
            l.drain_timeout_s,
            _,
        ] = t;
        l.score_threshold = score;
        l.iou_threshold = iou;
        l.socket_mode = mode;
        l.control_socket = control;
        l.spin = spin;
        l.labels = labels;
        l.ort_dylib = ort;
        l.log_json = log_json;
        l
    })
}

fn with_program(name: &str, argv: Vec<OsString>) -> Vec<OsString> {
    std::iter::once(OsString::from(name)).chain(argv).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kernel_launch_round_trips(l in kernel()) {
        let argv = l.to_argv();
        let parsed = KernelLaunch::try_parse_from(with_program("frame-kernel", argv.clone()));
        prop_assert!(parsed.is_ok(), "{argv:?}: {}", parsed.unwrap_err());
        prop_assert_eq!(parsed.unwrap(), l);
    }

    #[test]
    fn server_launch_round_trips(l in server()) {
        let argv = l.to_argv();
        let parsed = ServerLaunch::try_parse_from(with_program("model-server", argv.clone()));
        prop_assert!(parsed.is_ok(), "{argv:?}: {}", parsed.unwrap_err());
        prop_assert_eq!(parsed.unwrap(), l);
    }
}

/// The long flags `--help` documents (each entry line's first `--flag`), less help and
/// version.
fn help_flags(mut cmd: clap::Command) -> BTreeSet<String> {
    let help = cmd.render_long_help().to_string();
    let flags: BTreeSet<String> = help
        .lines()
        .filter_map(|line| {
            let t = line.trim_start();
            let t = t
                .strip_prefix("-V, ")
                .or(t.strip_prefix("-h, "))
                .unwrap_or(t);
            let rest = t.strip_prefix("--")?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            // Entry lines are indented by at most 6; their help text by more.
            let indent = line.len() - line.trim_start().len();
            (indent <= 6).then_some(name)
        })
        .filter(|f| f != "help" && f != "version")
        .collect();
    // The help text and clap's own list of arguments agree.
    let declared: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|f| f != "help" && f != "version")
        .collect();
    assert_eq!(flags, declared, "help lists exactly the declared flags");
    flags
}

fn written_flags(argvs: &[Vec<OsString>]) -> BTreeSet<String> {
    argvs
        .iter()
        .flatten()
        .filter_map(|a| {
            a.to_str()?
                .strip_prefix("--")
                .map(|f| f.split('=').next().unwrap_or(f).to_owned())
        })
        .collect()
}

#[test]
fn every_kernel_flag_in_help_is_written_by_to_argv() {
    // Two launches between them set every flag (`--source`/`--source-fd`,
    // `--record-source`/`--record-source-fd` and `--realtime`/`--fast` exclude each
    // other).
    let mut a = KernelLaunch::new("cam", 0);
    a.ring = Some("r".into());
    a.slots = 16;
    a.format = "BGR24".into();
    (a.width, a.height) = (Some(64), Some(48));
    a.transport = Transport::Udp;
    a.realtime = true;
    a.speed = 2.0;
    a.loop_file = true;
    a.max_frames = Some(5);
    a.decoder_threads = 2;
    a.stall_timeout_ms = 1;
    a.first_frame_timeout_ms = 1;
    a.open_timeout_ms = 1;
    a.io_timeout_ms = Some(1);
    a.backoff_initial_ms = 1;
    a.backoff_max_ms = 1;
    a.av_options = vec!["k=v".into()];
    a.consumer_fps = Some(5.0);
    a.all_frames = true;
    a.skip_loop_filter = "all".into();
    a.hwaccel = "auto".into();
    a.keep_ring = true;
    a.clip_dir = Some("/c".into());
    a.record_source_fd = Some(0);
    let mut b = KernelLaunch::new("cam", 0);
    b.source = Some("x.mp4".into());
    b.source_fd = None;
    b.fast = true;
    b.clip_dir = Some("/c".into());
    b.record_source = Some("rtsp://h/main".into());
    let help = help_flags(KernelLaunch::command());
    assert_eq!(help, written_flags(&[a.to_argv(), b.to_argv()]));
    assert!(help.len() >= 35, "{help:?}");
}

#[test]
fn every_server_flag_in_help_is_written_by_to_argv() {
    let mut a = ServerLaunch::new("m.onnx", "s.sock");
    a.model_id = Some("m".into());
    a.family = ModelFamily::Yolox;
    a.device = Device::Cuda;
    a.max_batch = Setting::Fixed(4);
    a.calibration_ms = 1;
    a.calibration_cache = Some("c.json".into());
    a.max_queue_per_source = 1;
    a.batch_delay_us = 1;
    a.score_threshold = 0.5;
    a.iou_threshold = 0.5;
    a.max_detections = 1;
    a.max_connections = 1;
    a.max_inflight = 1;
    a.socket_mode = 0o600;
    a.max_frame = 4096;
    a.read_timeout_ms = 1;
    a.idle_timeout_ms = 1;
    a.control_socket = Some("c.sock".into());
    a.trust_ring_uids = vec![2000];
    a.trust_ring_gids = vec![10001];
    a.drain_timeout_s = 1;
    a.io_threads = 2;
    a.labels = Some("l.txt".into());
    a.ort_dylib = "/lib/libonnxruntime.so".into();
    a.log_json = true;
    let help = help_flags(ServerLaunch::command());
    assert_eq!(help, written_flags(&[a.to_argv()]));
    assert!(help.len() >= 30, "{help:?}");
}

#[test]
fn clap_definitions_are_consistent() {
    KernelLaunch::command().debug_assert();
    ServerLaunch::command().debug_assert();
}
