//! A camera with a detection substream and a main stream (`record_source`), through the
//! whole system: detection runs on the 480x270 substream the kernel decodes, event clips
//! are remuxed from the 960x540 main stream that nothing decodes, and the main stream's
//! URL (with its password) never reaches a command line (issue 16, "detect stream vs
//! view/record stream").

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    assets, bin_dir, children_of, cmdline, events, ffprobe, rtsp_streams, serial, wait_for, Agent,
    Dirs,
};

#[test]
fn clips_come_from_the_main_stream_while_detection_decodes_the_substream() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let video = assets.join("video/people_walk_540p.mp4");
    let sub = framebus_testkit::ffmpeg::scaled_copy(&video, (480, 270)).expect("substream");
    let cam = rtsp_streams(&[("main", &video), ("sub", &sub)]);
    // GStreamer's server asks for no credentials; the user-info only travels through
    // the system, which is what is checked.
    let main_url = cam
        .url("main")
        .replacen("rtsp://", "rtsp://rec:hunter2-main@", 1);
    let dirs = Dirs::new();
    let clips_dir = dirs.root.path().join("clips");
    let mut config = dirs.agent_table();
    config += &format!(
        "[clips]\ncameras = [\"walk\"]\ndir = \"{}\"\npre_roll_s = 3\npost_roll_s = 3\ntypes = [\"line_crossed\"]\nmax_active = 16\n\n",
        clips_dir.display()
    );
    config += &format!(
        "[[cameras]]\nid = \"walk\"\nsource = \"{}\"\nrecord_source = \"{main_url}\"\nfps = 25\n\n",
        cam.url("sub")
    );
    config += "[cameras.analytics]\n[cameras.analytics.tracker]\nmin_hits = 2\n\n";
    config += "[[cameras.analytics.lines]]\nname = \"mid\"\nfrom = [0.5, 0.0]\nto = [0.5, 1.0]\nclasses = [\"person\"]\nanchor = \"center\"\nhysteresis = 0.01\ncooldown_s = 0\n\n";
    config += &format!(
        "[[models]]\nid = \"yolox\"\npath = \"{}\"\n\n[[subscriptions]]\ncamera = \"walk\"\nmodel = \"yolox\"\nfps = 5\n\n",
        assets.join("models/yolox_nano.onnx").display()
    );
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));

    // The kernel reads both URLs from its stdin; neither is in its command line.
    let kernel = children_of(agent.pid())
        .into_iter()
        .find(|(_, name)| name.contains("frame-kernel"))
        .expect("the camera's kernel runs");
    let argv = cmdline(kernel.0);
    assert!(argv.contains("--record-source-fd 0"), "{argv}");
    assert!(
        !argv.contains("hunter2") && !argv.contains("rtsp://"),
        "{argv}"
    );
    let cameras = agent.get_json("/cameras").to_string();
    assert!(!cameras.contains("hunter2"), "{cameras}");

    // A crossing at least the pre-roll after the start, so its clip has all of it.
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ev = wait_for(
        Duration::from_secs(90),
        "a line crossing with a clip",
        || {
            events(agent.dir.path()).into_iter().find(|e| {
                e["clip"].is_string() && e["capture_unix_ms"].as_u64().unwrap() > started_ms + 5_000
            })
        },
    );
    let clip = clips_dir.join(ev["clip"].as_str().unwrap());
    wait_for(Duration::from_secs(40), "the clip file", || {
        clip.is_file().then_some(())
    });
    let size = ffprobe(
        &clip,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ],
    );
    assert_eq!(size.trim(), "960,540", "the clip is the main stream's");
    let frames: u32 = ffprobe(
        &clip,
        &[
            "-select_streams",
            "v",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ],
    )
    .trim()
    .parse()
    .unwrap();
    // Pre + post roll (6 s) at 25 fps, plus at most the footage's 10 s GOP before.
    assert!((140..=420).contains(&frames), "{frames} frames in the clip");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&clip)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "the clip decodes cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ring = shm_ring::RingReader::open(agent.rings(), "walk").expect("the camera's ring");
    let g = ring.geometry();
    assert_eq!(
        (g.width, g.height),
        (480, 270),
        "detection decodes the substream"
    );
    drop(ring);
    assert!(agent.stop(Duration::from_secs(20)).success());
}
