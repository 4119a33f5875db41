//! The in-repo fixtures are what their README says: the model is exactly what
//! `tools/make_demo_model.py` generates, and the footage decodes to 100 frames of 640x360
//! with the three bright boxes the demo detector finds.

use std::process::Command;

use framebus_testkit::{assets, ffmpeg, fixtures, missing};

#[test]
fn demo_model_regenerates_to_the_same_bytes() {
    let Some(py) = assets::python().or_else(|| missing("FRAMEBUS_PYTHON (onnx, numpy)")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo_detector.onnx");
    let st = Command::new(&py)
        .arg(assets::workspace_root().join("tools/make_demo_model.py"))
        .arg("--output")
        .arg(&out)
        .output()
        .expect("run tools/make_demo_model.py");
    assert!(
        st.status.success(),
        "make_demo_model.py failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let fresh = std::fs::read(&out).unwrap();
    let checked_in = std::fs::read(fixtures::demo_model()).unwrap();
    assert!(
        fresh == checked_in,
        "testkit/fixtures/demo_detector.onnx is stale: run testkit/fixtures/make_fixtures.sh"
    );
}

/// Bright (luma > 200) connected regions of a gray frame, as (x0, y0, x1, y1) bounds.
fn bright_regions(gray: &[u8], w: usize, h: usize) -> Vec<(usize, usize, usize, usize)> {
    let mut seen = vec![false; gray.len()];
    let mut out = Vec::new();
    for start in 0..gray.len() {
        if seen[start] || gray[start] <= 200 {
            continue;
        }
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            let mut visit = |j: usize| {
                if !seen[j] && gray[j] > 200 {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        out.push((x0, y0, x1, y1));
    }
    out
}

#[test]
fn boxes_video_has_the_documented_frames_and_boxes() {
    let Some(()) = ffmpeg::ffmpeg_cli() else {
        return;
    };
    let (w, h) = fixtures::BOXES_SIZE;
    let (w, h) = (w as usize, h as usize);
    let mut regions_at_25 = Vec::new();
    let n = ffmpeg::frames(&fixtures::boxes_video(), "gray", w * h, None, |i, f| {
        if i == 25 {
            regions_at_25 = bright_regions(f, w, h);
        }
    });
    assert_eq!(n, fixtures::BOXES_FRAMES);
    // At t = 1 s the boxes are at x 26..70 (y 60..180), 390..430 (y 200..310) and
    // 287..335 (y 120..248): see make_fixtures.sh's overlay expressions.
    regions_at_25.sort();
    assert_eq!(regions_at_25.len(), fixtures::BOXES, "{regions_at_25:?}");
    let want = [(26, 60), (287, 120), (390, 200)];
    for ((x0, y0, _, _), (wx, wy)) in regions_at_25.iter().zip(want) {
        assert!(
            x0.abs_diff(wx) <= 2 && y0.abs_diff(wy) <= 2,
            "box at ({x0}, {y0}), expected ({wx}, {wy}): {regions_at_25:?}"
        );
    }
}
