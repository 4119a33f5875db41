//! Permanent versus transient source errors (issue 10, defect 10) and the camera URL
//! kept out of the command line and the logs (defect 8), with the real binary.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use proto_schema::exit::{KERNEL_CONFIG, KERNEL_SOURCE_UNUSABLE};

/// A loopback port with nothing listening (connections are refused).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn run_to_exit(
    source: &str,
    tag: &str,
    dir: &tempfile::TempDir,
) -> (Option<i32>, String, Duration) {
    let d = dir.path().to_str().unwrap();
    let t = Instant::now();
    let mut k = Kernel::start(
        &[
            "--camera-id",
            tag,
            "--source",
            source,
            "--realtime",
            "--loop",
            "--ring-dir",
            d,
        ],
        dir.path(),
        tag,
    );
    let status = k
        .wait(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{tag}: still running after 10 s (retried?)\n{}", k.log()));
    (status.code(), k.log(), t.elapsed())
}

#[test]
fn a_text_file_is_a_permanent_error_not_an_unreachable_camera() {
    let dir = ring_dir();
    // Like /etc/hostname: a short line of text, and a longer text with a video-ish name.
    let hostname = dir.path().join("hostname");
    std::fs::write(&hostname, "build-host-01\n").unwrap();
    let notes = dir.path().join("notes.mp4");
    std::fs::write(&notes, "just some text\n".repeat(500)).unwrap();
    for (i, file) in [hostname, notes].iter().enumerate() {
        let (code, log, took) = run_to_exit(file.to_str().unwrap(), &format!("text{i}"), &dir);
        println!("{}: exit {code:?} after {took:?}", file.display());
        assert_eq!(code, Some(KERNEL_SOURCE_UNUSABLE), "{log}");
        assert!(log.contains("source unusable (permanent"), "{log}");
        assert!(!log.contains("camera unreachable"), "{log}");
    }
}

#[test]
fn a_file_without_a_video_stream_says_so() {
    if ffmpeg_cli().is_none() {
        return;
    }
    let dir = ring_dir();
    let wav = dir.path().join("tone.wav");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
        ])
        .arg(&wav)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, log, _) = run_to_exit(wav.to_str().unwrap(), "audio", &dir);
    assert_eq!(code, Some(KERNEL_SOURCE_UNUSABLE), "{log}");
    assert!(log.contains("no video stream"), "{log}");
}

#[test]
fn a_missing_or_unreadable_file_is_a_config_error() {
    let dir = ring_dir();
    let (code, log, _) = run_to_exit("/no/such/video.mp4", "missing", &dir);
    assert_eq!(code, Some(KERNEL_CONFIG), "{log}");
    let (code, log, _) = run_to_exit(dir.path().to_str().unwrap(), "dir", &dir);
    assert_eq!(code, Some(KERNEL_CONFIG), "{log}");
}

/// A camera that refuses connections is down, not unusable: the kernel keeps trying.
#[test]
fn a_refused_camera_is_retried_not_failed() {
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let url = format!("rtsp://127.0.0.1:{}/cam", closed_port());
    let mut k = Kernel::start(
        &[
            "--camera-id",
            "down",
            "--source",
            &url,
            "--ring-dir",
            d,
            "--backoff-max-ms",
            "200",
        ],
        dir.path(),
        "down",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(k.child.try_wait().is_none(), "{}", k.log());
    assert!(k.log().contains("camera unreachable"), "{}", k.log());
    assert!(k.terminate().success(), "{}", k.log());
}

/// The URL with a password, given the way core-agent gives it (`--source-fd 0`, a pipe
/// on stdin): not in `/proc/<pid>/cmdline`, not in any log line (the kernel's, and
/// FFmpeg's at verbose level), while the kernel retries the camera.
#[test]
fn credentials_are_neither_in_argv_nor_in_the_log() {
    let dir = ring_dir();
    let d = dir.path().to_str().unwrap();
    let url = format!("rtsp://admin:secret-pw@127.0.0.1:{}/cam", closed_port());
    let log = dir.path().join("kernel-cred.log");
    let mut child = Command::new(KERNEL)
        .args([
            "--camera-id",
            "cred",
            "--source-fd",
            "0",
            "--ring-dir",
            d,
            "--backoff-max-ms",
            "100",
        ])
        .env("FRAMEBUS_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(url.as_bytes()).unwrap();
    } // closed: the kernel reads to end of file
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(2));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--source-fd 0"), "{cmdline}");
    assert!(!cmdline.contains("secret"), "password in argv: {cmdline}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("camera unreachable"),
        "the kernel did try: {text}"
    );
    assert!(text.contains("rtsp://***@127.0.0.1"), "{text}");
    assert!(!text.contains("secret"), "password in the log:\n{text}");
    assert!(!text.contains("admin"), "user name in the log:\n{text}");
}
