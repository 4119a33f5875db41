//! Live view end to end on the real footage: `people_walk_540p.mp4` looped as a live
//! camera, the real `yolox_nano` at 5 fps with tracking, a counting line and a zone.
//! The snapshot and MJPEG answers are decoded and compared with the raw frame read
//! from the ring and with the result record of the frame whose boxes were drawn.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{assets, bin_dir, serial, wait_for, Agent, Dirs, TEST_TOKEN};
use core_agent::live::draw::{class_colour, Rgb, LINE_COLOUR, ZONE_COLOUR};
use core_agent::live::frame::copy_frame;
use core_agent::results::ResultRecord;
use shm_ring::RingReader;

const LINE: &str = "[[cameras.analytics.lines]]\nname = \"mid\"\nfrom = [0.5, 0.25]\nto = [0.5, 0.75]\nclasses = [\"person\"]\nanchor = \"center\"\n\n";
const ZONE: &str = "[[cameras.analytics.zones]]\nname = \"box\"\npolygon = [[0.6, 0.3], [0.9, 0.3], [0.9, 0.7], [0.6, 0.7]]\nclasses = [\"person\"]\nanchor = \"center\"\n\n";

/// An HTTP answer with a binary body (de-chunked).
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        header_of(&self.head, name)
    }
}

fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// De-chunks a chunked body; a cut-off last chunk is kept as far as it came.
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(s, b"\r\n") {
        let len = std::str::from_utf8(&s[..i]).unwrap_or("0").trim();
        let n = usize::from_str_radix(len, 16).unwrap_or(0);
        let rest = &s[i + 2..];
        if n == 0 {
            break;
        }
        out.extend_from_slice(&rest[..n.min(rest.len())]);
        if rest.len() < n + 2 {
            break;
        }
        s = &rest[n + 2..];
    }
    out
}

fn send(agent: &Agent, path: &str, token: bool) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&agent.api, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = if token {
        format!("Authorization: Bearer {TEST_TOKEN}\r\n")
    } else {
        String::new()
    };
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
        agent.api
    )
    .unwrap();
    s
}

fn split(raw: &[u8]) -> Raw {
    let end = find(raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let rest = raw.get(end + 4..).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if header_of(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Raw { status, head, body }
}

/// A whole request (the answer read to its end).
fn get(agent: &Agent, path: &str) -> Raw {
    let mut s = send(agent, path, true);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    split(&raw)
}

/// Reads an MJPEG stream for `dur`, then hangs up.
fn watch(agent: &Agent, path: &str, dur: Duration) -> Raw {
    let mut s = send(agent, path, true);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    while start.elapsed() < dur {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("stream: {e}"),
        }
    }
    split(&raw)
}

/// `(width, height, RGB pixels)` of a JPEG.
fn decode(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    let px = d.decode().expect("a valid JPEG");
    let info = d.info().unwrap();
    assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24);
    (usize::from(info.width), usize::from(info.height), px)
}

fn rgb_at(px: &[u8], w: usize, x: usize, y: usize) -> Rgb {
    let i = (y * w + x) * 3;
    Rgb(px[i], px[i + 1], px[i + 2])
}

/// Full-range YCbCr (JFIF) to RGB.
fn ycc_to_rgb(p: &[u8]) -> Rgb {
    let (y, cb, cr) = (
        f32::from(p[0]),
        f32::from(p[1]) - 128.0,
        f32::from(p[2]) - 128.0,
    );
    let c = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    Rgb(
        c(y + 1.402 * cr),
        c(y - 0.344_136 * cb - 0.714_136 * cr),
        c(y + 1.772 * cb),
    )
}

fn dist(a: Rgb, b: Rgb) -> u32 {
    a.0.abs_diff(b.0) as u32 + a.1.abs_diff(b.1) as u32 + a.2.abs_diff(b.2) as u32
}

/// Close enough to be the colour after JPEG (quality 80, 4:2:0).
const NEAR: u32 = 90;

fn metric(agent: &Agent, name: &str) -> u64 {
    let (_, text) = agent.http("GET", "/metrics", None);
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The raw frame `frame_id` of `generation` from the ring, as RGB per pixel, if it
/// is still there.
fn raw_frame(agent: &Agent, generation: u64, frame_id: u64) -> Option<(usize, usize, Vec<u8>)> {
    let r = RingReader::open(agent.rings(), "walk").ok()?;
    if r.generation() != generation {
        return None;
    }
    let g = r.geometry();
    for slot in 0..r.slots() {
        let Some(info) = r.slot_info(slot) else {
            continue;
        };
        if info.frame_id != frame_id {
            continue;
        }
        let mut ycc = Vec::new();
        if r.read(slot, info.seq, |b| copy_frame(&g, b, &mut ycc))
            .ok()?
        {
            // Full-range YCbCr 4:2:0 planes (what the encoder gets), to RGB per pixel.
            let (w, h) = (g.width as usize, g.height as usize);
            let (luma, chroma) = ycc.split_at(w * h);
            let (cb, cr) = chroma.split_at(chroma.len() / 2);
            let rgb = (0..w * h).flat_map(|i| {
                let c = (i / w / 2) * (w / 2) + (i % w) / 2;
                let Rgb(a, b, c) = ycc_to_rgb(&[luma[i], cb[c], cr[c]]);
                [a, b, c]
            });
            return Some((w, h, rgb.collect()));
        }
    }
    None
}

/// Fraction of points that pass `f`.
fn share(points: &[(usize, usize)], f: impl Fn(usize, usize) -> bool) -> f64 {
    points.iter().filter(|(x, y)| f(*x, *y)).count() as f64 / points.len() as f64
}

/// The `(X-Frame-Id, JPEG)` parts of an MJPEG answer (a part cut off by the hang-up
/// dropped), each checked for its framing and decoded.
fn parts(a: &Raw) -> Vec<(String, Vec<u8>)> {
    let mut rest = &a.body[..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        assert!(
            rest.starts_with(b"--framebus-frame\r\n"),
            "part starts with the boundary"
        );
        let Some(end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        assert_eq!(
            header_of(&head, "content-type").as_deref(),
            Some("image/jpeg")
        );
        let len: usize = header_of(&head, "content-length").unwrap().parse().unwrap();
        let body = &rest[end + 4..];
        if body.len() < len + 2 {
            break; // cut off by the hang-up
        }
        assert_eq!(&body[len..len + 2], b"\r\n");
        let (fw, fh, _) = decode(&body[..len]);
        assert_eq!((fw, fh), (960, 540));
        frames.push((
            header_of(&head, "x-frame-id").unwrap(),
            body[..len].to_vec(),
        ));
        rest = &body[len + 2..];
    }
    frames
}

#[test]
fn snapshot_and_mjpeg_draw_boxes_lines_and_zones_on_the_ring_frames() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let video = assets.join("video/people_walk_540p.mp4");
    let dirs = Dirs::new();
    let mut config = dirs.agent_table();
    config += "[live]\nfps = 5\nmax_viewers = 2\n\n";
    config += &format!(
        "[[cameras]]\nid = \"walk\"\nsource = \"{}\"\nfps = 25\nring_slots = 64\n\n",
        video.display()
    );
    config += "[cameras.analytics]\n[cameras.analytics.tracker]\nmin_hits = 2\n\n";
    config += LINE;
    config += ZONE;
    config += &format!(
        "[[models]]\nid = \"yolox\"\npath = \"{}\"\n\n[[subscriptions]]\ncamera = \"walk\"\nmodel = \"yolox\"\nfps = 5\n\n",
        assets.join("models/yolox_nano.onnx").display()
    );
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    wait_for(Duration::from_secs(60), "tracked detections", || {
        agent
            .results()
            .iter()
            .any(|r| r.track_ids.iter().any(Option::is_some))
            .then_some(())
    });

    // No viewer: nothing encoded while results flow.
    let n = agent.results().len();
    wait_for(Duration::from_secs(30), "more results", || {
        (agent.results().len() >= n + 5).then_some(())
    });
    assert_eq!(metric(&agent, "framebus_live_frames_encoded_total"), 0);

    // Errors: token, unknown camera, bad query.
    let mut s = send(&agent, "/cameras/walk/snapshot.jpg", false);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert_eq!(split(&raw).status, 401);
    for p in ["/cameras/nope/snapshot.jpg", "/cameras/nope/stream.mjpeg"] {
        let a = get(&agent, p);
        assert_eq!(a.status, 404, "{p}");
        assert!(String::from_utf8_lossy(&a.body).contains("no camera"));
    }
    assert_eq!(get(&agent, "/cameras/walk/stream.mjpeg?fsp=3").status, 400);

    // A snapshot whose frame is still in the ring, with a result that has a person box.
    let (jpeg, frame, record, raw) =
        wait_for(Duration::from_secs(60), "a checkable snapshot", || {
            let a = get(&agent, "/cameras/walk/snapshot.jpg");
            assert_eq!(a.status, 200, "{}", a.head);
            assert_eq!(a.header("content-type").as_deref(), Some("image/jpeg"));
            let frame: u64 = a.header("x-frame-id")?.parse().ok()?;
            let generation: u64 = a.header("x-ring-generation")?.parse().ok()?;
            let result: u64 = a.header("x-result-frame-id")?.parse().ok()?;
            let raw = raw_frame(&agent, generation, frame)?;
            let record: ResultRecord = agent.results().into_iter().find(|r| {
                r.frame_id == result && r.frame.as_ref().is_some_and(|f| f.generation == generation)
            })?;
            // A tall enough person box well inside the frame.
            record
                .detections
                .iter()
                .any(|d| {
                    d.class_name == "person" && d.bbox[3] - d.bbox[1] > 0.15 && d.bbox[0] > 0.02
                })
                .then_some((a.body, frame, record, raw))
        });
    let (w, h, px) = decode(&jpeg);
    let (rw, rh, raw_px) = raw;
    assert_eq!((w, h), (rw, rh), "the JPEG has the ring's size");
    assert_eq!((w, h), (960, 540));
    eprintln!(
        "snapshot of frame {frame}, boxes of frame {}",
        record.frame_id
    );

    // The box edges: the left edge of each tall person box, sampled along its middle.
    let mut checked = 0;
    for d in record
        .detections
        .iter()
        .filter(|d| d.class_name == "person" && d.bbox[3] - d.bbox[1] > 0.15 && d.bbox[0] > 0.02)
    {
        let x = (d.bbox[0] * w as f32).round() as usize;
        let (y0, y1) = (d.bbox[1] * h as f32, d.bbox[3] * h as f32);
        let pts: Vec<(usize, usize)> = (3..=7)
            .map(|k| (x, (y0 + (y1 - y0) * k as f32 / 10.0) as usize))
            .collect();
        let colour = class_colour(d.class_id);
        let drawn = share(&pts, |x, y| dist(rgb_at(&px, w, x, y), colour) < NEAR);
        let changed = share(&pts, |x, y| {
            dist(rgb_at(&px, w, x, y), rgb_at(&raw_px, w, x, y)) > NEAR
        });
        eprintln!(
            "box {:?}: drawn {drawn}, changed from the ring frame {changed}",
            d.bbox
        );
        assert!(drawn >= 0.6, "box {:?} edge not in its colour", d.bbox);
        assert!(
            changed >= 0.6,
            "box {:?} edge not changed from the ring",
            d.bbox
        );
        checked += 1;
    }
    assert!(checked >= 1);

    // The line (x = 0.5, y 0.25..0.75) and the zone's right edge (x = 0.9, y 0.3..0.7).
    let along = |x: f32, ya: f32, yb: f32| -> Vec<(usize, usize)> {
        (0..=10)
            .map(|k| {
                (
                    (x * w as f32).round() as usize,
                    ((ya + (yb - ya) * k as f32 / 10.0) * h as f32) as usize,
                )
            })
            .collect()
    };
    let line = along(0.5, 0.3, 0.7);
    assert!(share(&line, |x, y| dist(rgb_at(&px, w, x, y), LINE_COLOUR) < NEAR) >= 0.6);
    let zone = along(0.9, 0.35, 0.65);
    assert!(share(&zone, |x, y| dist(rgb_at(&px, w, x, y), ZONE_COLOUR) < NEAR) >= 0.6);

    // MJPEG: multipart framing, several distinct frames over ~2.5 s.
    let before = metric(&agent, "framebus_live_frames_encoded_total");
    let a = watch(
        &agent,
        "/cameras/walk/stream.mjpeg?fps=5",
        Duration::from_millis(2500),
    );
    assert_eq!(a.status, 200, "{}", a.head);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("multipart/x-mixed-replace; boundary=framebus-frame")
    );
    let frames = parts(&a);
    let ids: std::collections::BTreeSet<&String> = frames.iter().map(|(id, _)| id).collect();
    assert!(ids.len() >= 2, "distinct frames: {ids:?}");
    assert!(frames.windows(2).all(|p| p[0] != p[1]));
    assert!(metric(&agent, "framebus_live_frames_encoded_total") > before);

    // The viewer cap: two viewers, the third gets 503. One encoder serves both: the
    // frames encoded while they watch are about what one of them got, not the sum.
    let before = metric(&agent, "framebus_live_frames_encoded_total");
    let (v1, v2, third) = std::thread::scope(|s| {
        let path = "/cameras/walk/stream.mjpeg?fps=5";
        let v1 = s.spawn(|| watch(&agent, path, Duration::from_secs(4)));
        let v2 = s.spawn(|| watch(&agent, path, Duration::from_secs(4)));
        wait_for(Duration::from_secs(3), "two viewers", || {
            (metric(&agent, "framebus_live_viewers") == 2).then_some(())
        });
        let third = get(&agent, "/cameras/walk/stream.mjpeg");
        (v1.join().unwrap(), v2.join().unwrap(), third)
    });
    assert_eq!(third.status, 503);
    assert!(String::from_utf8_lossy(&third.body).contains("max_viewers"));
    // Everyone gone: the encoder stops and the count stays flat.
    wait_for(Duration::from_secs(20), "the viewers to leave", || {
        (metric(&agent, "framebus_live_viewers") == 0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let idle = metric(&agent, "framebus_live_frames_encoded_total");
    let (p1, p2) = (parts(&v1), parts(&v2));
    let (n1, n2) = (p1.len() as u64, p2.len() as u64);
    eprintln!(
        "two viewers got {n1} and {n2} frames; {} encoded",
        idle - before
    );
    assert!(n1 >= 3 && n2 >= 3, "both viewers got frames: {n1}, {n2}");
    // Both were sent the frames of the one encoder (the same ring frames).
    let common = p1.iter().filter(|p| p2.contains(p)).count();
    assert!(common >= 1, "the viewers saw common frames");
    // Per-viewer encoding would give n1 + n2 (and more); a shared one about max(n1, n2),
    // plus a frame or two at the edges of the window.
    assert!(
        idle - before + 2 < n1 + n2,
        "{} encoded for {n1} + {n2} frames sent",
        idle - before
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&agent, "framebus_live_frames_encoded_total"), idle);

    // A stopped camera: 503.
    let (code, body) = agent.http("POST", "/cameras/walk/stop", None);
    assert_eq!(code, 200, "{body}");
    let a = get(&agent, "/cameras/walk/snapshot.jpg");
    assert_eq!(a.status, 503);
    assert!(String::from_utf8_lossy(&a.body).contains("not running"));
    assert_eq!(get(&agent, "/cameras/walk/stream.mjpeg").status, 503);
    let status = agent.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}
