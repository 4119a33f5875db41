//! Claims: which events get a clip, extension by the same track, refusal, ids.

use super::*;
use crate::analytics::events::EventKind;

const S: u64 = 1_000_000_000;
const T0: u64 = 1_800_000_000 * S;

fn clips(dir: &Path, max_active: usize) -> Arc<Clips> {
    Clips::with_clock(
        ClipsSettings {
            cameras: vec!["door".into()],
            dir: dir.join("clips"),
            max_active,
            max_clip_s: 30.0,
            ..Default::default()
        },
        || T0,
    )
    .unwrap()
    .unwrap()
}

fn event(id: &str, camera: &str, kind: EventKind, track: u64, at: u64) -> Event {
    Event {
        id: id.into(),
        kind,
        camera: camera.into(),
        model: "m".into(),
        rule: "r".into(),
        track,
        class: "person".into(),
        score: 0.9,
        bbox: [0.0; 4],
        direction: None,
        dwell_ms: None,
        capture_ts_ns: at,
        capture_unix_ms: at / 1_000_000,
        frame_id: 0,
        frame: None,
        suppressed: 0,
        clip: None,
    }
}

#[test]
fn off_when_no_camera_records_and_folders_are_0750() {
    let d = tempfile::tempdir().unwrap();
    assert!(Clips::new(
        ClipsSettings::default(),
        &crate::sinks::SinkHealth::default()
    )
    .unwrap()
    .is_none());
    let _c = clips(d.path(), 4);
    use std::os::unix::fs::PermissionsExt;
    for p in [d.path().join("clips"), d.path().join("clips/.buffer")] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, DIR_MODE, "{}", p.display());
    }
}

#[test]
fn claims_filter_extend_and_refuse() {
    let d = tempfile::tempdir().unwrap();
    let c = clips(d.path(), 2);
    // Another camera, another type: no clip.
    let mut e = event("a-1", "yard", EventKind::LineCrossed, 1, T0);
    c.claim(&mut e);
    assert_eq!(e.clip, None);
    let mut e = event("a-2", "door", EventKind::ObjectLeft, 1, T0);
    c.claim(&mut e);
    assert_eq!(e.clip, None);

    let mut first = event("a-3", "door", EventKind::LineCrossed, 7, T0);
    c.claim(&mut first);
    // 1_800_000_000 s is 2027-01-15.
    assert_eq!(first.clip.as_deref(), Some("door/2027-01-15/a-3.mp4"));
    // The same track 3 s later (before the clip's end, T0 + 5 s): joins and extends.
    let mut again = event("a-4", "door", EventKind::ZoneEnter, 7, T0 + 3 * S);
    c.claim(&mut again);
    assert_eq!(again.clip, first.clip);
    {
        let st = lock(&c.state);
        let a = &st.active["a-3"];
        assert_eq!(a.start_ns, T0 - 5 * S);
        assert_eq!(a.end_ns, T0 + 8 * S);
    }
    // Extension stops at max_clip_s (30 s from the start).
    let mut late = event("a-5", "door", EventKind::LineCrossed, 7, T0 + 8 * S);
    c.claim(&mut late);
    let mut later = event("a-6", "door", EventKind::LineCrossed, 7, T0 + 13 * S);
    c.claim(&mut later);
    let mut last = event("a-7", "door", EventKind::LineCrossed, 7, T0 + 18 * S);
    c.claim(&mut last);
    assert_eq!(lock(&c.state).active["a-3"].end_ns, T0 + 23 * S);
    let mut last = event("a-10", "door", EventKind::LineCrossed, 7, T0 + 22 * S);
    c.claim(&mut last);
    assert_eq!(last.clip, first.clip);
    assert_eq!(lock(&c.state).active["a-3"].end_ns, T0 + 25 * S);
    assert_eq!(c.state_of("a-10"), ClipState::Recording);

    // Another track: a clip of its own; a third at once is refused (max_active 2).
    let mut other = event("a-8", "door", EventKind::LineCrossed, 8, T0);
    c.claim(&mut other);
    assert_eq!(other.clip.as_deref(), Some("door/2027-01-15/a-8.mp4"));
    let mut third = event("a-9", "door", EventKind::LineCrossed, 9, T0);
    c.claim(&mut third);
    assert_eq!(third.clip, None);
    assert_eq!(c.health().refused, 1);
    assert_eq!(c.health().recording, 2);
}

#[test]
fn ids_with_path_characters_are_refused() {
    for bad in ["", "../x", "a/b", "a.b", "a b", "%2e%2e", &"a".repeat(65)] {
        assert!(!valid_id(bad), "{bad:?}");
    }
    assert!(valid_id("19abc3f2e10-42"));
    let d = tempfile::tempdir().unwrap();
    let c = clips(d.path(), 2);
    assert_eq!(c.state_of("../../etc/passwd"), ClipState::Missing);
    assert_eq!(c.state_of("ab-1"), ClipState::Missing);
}

/// A finished clip is found by the id of every event it carries; one from before a
/// restart is found on disk; a failure is counted per camera with its reason.
#[test]
fn finished_clips_are_found_and_failures_counted() {
    let d = tempfile::tempdir().unwrap();
    let c = clips(d.path(), 4);
    let mut e = event("b-1", "door", EventKind::LineCrossed, 1, T0);
    c.claim(&mut e);
    let mut j = event("b-2", "door", EventKind::LineCrossed, 1, T0 + S);
    c.claim(&mut j);
    let path = d.path().join("clips").join(e.clip.as_ref().unwrap());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"mp4").unwrap();
    c.finished(&["b-1".into()], &Ok(path.clone()), "b-1");
    assert_eq!(c.state_of("b-1"), ClipState::Ready(path.clone()));
    assert_eq!(c.state_of("b-2"), ClipState::Ready(path.clone()));
    let fresh = clips(d.path(), 4);
    assert_eq!(fresh.state_of("b-1"), ClipState::Ready(path));

    let mut f = event("b-3", "door", EventKind::LineCrossed, 2, T0);
    c.claim(&mut f);
    c.finished(
        &["b-3".into()],
        &Err(ClipError::NoFootage {
            camera: "door".into(),
            id: "b-3".into(),
        }),
        "b-3",
    );
    let h = c.health();
    assert_eq!(h.errors.get("door"), Some(&1));
    assert!(h.last_error.unwrap().contains("no footage"));
    let mut m = String::new();
    c.prometheus(&mut m);
    assert!(
        m.contains("framebus_clip_errors_total{camera=\"door\"} 1"),
        "{m}"
    );
    assert!(m.contains("framebus_clips_written_total 1"), "{m}");
}

/// A kernel restart mid-clip: the new run's first keyframe is stamped inside the old
/// run's reordered frames; it and what follows move to one frame after the latest
/// presentation time, so no two frames share one.
#[test]
fn a_keyframe_behind_the_written_frames_starts_a_new_run_after_them() {
    let mut shift = 0;
    // Normal packets pass unchanged.
    assert_eq!(
        super::next_stamps(80, 160, false, 40, &mut shift, Some(120)),
        (80, 160)
    );
    assert_eq!(
        super::next_stamps(200, 200, true, 40, &mut shift, Some(160)),
        (200, 200)
    );
    assert_eq!(shift, 0);
    // The restart: a keyframe at 400 while 400 was already shown.
    assert_eq!(
        super::next_stamps(400, 400, true, 40, &mut shift, Some(400)),
        (440, 440)
    );
    assert_eq!(shift, 40);
    // Its successors keep their spacing after the shift.
    assert_eq!(
        super::next_stamps(440, 520, false, 40, &mut shift, Some(440)),
        (480, 560)
    );
}

/// After a keyframe, a non-key packet presented at or before the last time written before
/// that keyframe is a restarted run's leading frame and is left out; an ordinary open-GOP
/// leading frame (between the previous run's last time and the keyframe's) is kept.
#[test]
fn leading_frames_of_a_restart_are_left_out() {
    // The restart above: 400 was written before the keyframe (shifted to 440); its
    // leading B-frame at 360 shifts to 400, a time already shown.
    assert!(super::leading_of_earlier_time(400, Some(400)));
    assert!(super::leading_of_earlier_time(380, Some(400)));
    // An ordinary stream: frames up to 300 written, keyframe at 360, leading B at 320.
    assert!(!super::leading_of_earlier_time(320, Some(300)));
    // The clip's first keyframe has nothing before it.
    assert!(!super::leading_of_earlier_time(0, None));
}

#[test]
fn a_clip_that_cannot_be_written_degrades_the_sink_until_one_is() {
    let d = tempfile::tempdir().unwrap();
    let health = crate::sinks::SinkHealth::default();
    let c = Clips::new(
        ClipsSettings {
            cameras: vec!["door".into()],
            dir: d.path().join("clips"),
            ..Default::default()
        },
        &health,
    )
    .unwrap()
    .unwrap();
    let mut e = event("a1", "door", EventKind::LineCrossed, 1, T0);
    c.claim(&mut e);
    // No footage is not the output's failure: counted as a clip error only.
    let none = ClipError::NoFootage {
        camera: "door".into(),
        id: "a1".into(),
    };
    assert_eq!(none.write_failure(), None);
    c.finished(&["a1".into()], &Err(none), "a1");
    assert!(!health.any_degraded());
    // The muxer's ENOSPC (FFmpeg's AVERROR(ENOSPC)) degrades, naming the sink.
    let full = ClipError::Mux {
        camera: "door".into(),
        source: MuxError::Write {
            path: d.path().join("clips/door/x.mp4"),
            error: ffmpeg_next::Error::from(-libc::ENOSPC),
        },
    };
    assert_eq!(full.write_failure(), Some(LossReason::NoSpace));
    c.finished(&["b2".into()], &Err(full), "b2");
    let r = &health.reports()[0];
    assert_eq!((r.kind, r.state, r.lost), (SinkKind::Clips, "degraded", 1));
    assert!(r.sink.starts_with("clips:"), "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("No space left on device"),
        "{r:?}"
    );
    let gone = ClipError::Create {
        camera: "door".into(),
        path: d.path().join("clips/door"),
        source: std::io::Error::from_raw_os_error(libc::EIO),
    };
    assert_eq!(gone.write_failure(), Some(LossReason::Io));
    // The next clip written clears it.
    c.finished(&["c3".into()], &Ok(d.path().join("c3.mp4")), "c3");
    assert!(!health.any_degraded());
}
