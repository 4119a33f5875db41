//! Output decoding (YOLOv8, YOLOX), class-aware non-maximum suppression, and mapping boxes
//! back to the source frame.

use crate::family::{Family, OutputLayout};
use crate::preprocess::Letterbox;

/// Thresholds applied after decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    /// Minimum score (YOLOv8: class score; YOLOX: objectness x class score).
    pub score_threshold: f32,
    /// Boxes of the same class overlapping a better one by more than this IoU are dropped.
    pub iou_threshold: f32,
    /// Most detections returned per image (best scores first).
    pub max_detections: usize,
}

/// Candidates kept before NMS, best first (Ultralytics' `max_nms`): bounds NMS time when
/// a model fires everywhere.
pub const MAX_NMS_CANDIDATES: usize = 30_000;

/// One decoded box in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Class index.
    pub class_id: u32,
    /// Score.
    pub score: f32,
    /// `x1, y1, x2, y2` in model-input pixels.
    pub bbox: [f32; 4],
}

/// One final detection on the source frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameDetection {
    /// Class index.
    pub class_id: u32,
    /// Score.
    pub score: f32,
    /// `x1, y1, x2, y2` normalised to the source frame (0..1), clipped.
    pub bbox: [f32; 4],
}

/// Why an output could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostprocessError {
    /// The output holds fewer values than the layout needs for one image.
    #[error("model output holds {len} values, one image needs {need}")]
    OutputTooShort {
        /// Values available.
        len: usize,
        /// Values needed.
        need: usize,
    },
}

/// Decodes one image's output (`layout.per_image()` values) into candidates above the
/// score threshold. `input` is the model input size `(width, height)` (YOLOX grids).
pub fn decode(
    output: &[f32],
    layout: &OutputLayout,
    input: (u32, u32),
    score_threshold: f32,
) -> Result<Vec<Candidate>, PostprocessError> {
    let need = layout.per_image();
    if output.len() < need {
        return Err(PostprocessError::OutputTooShort {
            len: output.len(),
            need,
        });
    }
    let output = &output[..need];
    Ok(match layout.family {
        Family::Yolov8 => decode_yolov8(
            output,
            layout.num_classes,
            layout.num_anchors,
            score_threshold,
        ),
        Family::Yolox => decode_yolox(output, layout.num_classes, input, score_threshold),
    })
}

/// `[4 + C, N]` channels-first: rows are `cx, cy, w, h, class scores...`.
fn decode_yolov8(out: &[f32], classes: usize, anchors: usize, thr: f32) -> Vec<Candidate> {
    // Best class per anchor, walking each class row contiguously (vectorises).
    let mut best = out[4 * anchors..5 * anchors].to_vec();
    let mut best_class = vec![0u32; anchors];
    for c in 1..classes {
        let row = &out[(4 + c) * anchors..(5 + c) * anchors];
        for ((b, bc), &s) in best.iter_mut().zip(best_class.iter_mut()).zip(row) {
            if s > *b {
                *b = s;
                *bc = c as u32;
            }
        }
    }
    let mut cands = Vec::new();
    for (a, (&score, &class_id)) in best.iter().zip(&best_class).enumerate() {
        if score >= thr {
            let (cx, cy) = (out[a], out[anchors + a]);
            let (w, h) = (out[2 * anchors + a], out[3 * anchors + a]);
            cands.push(Candidate {
                class_id,
                score,
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            });
        }
    }
    cands
}

/// `[N, 5 + C]` over the stride 8, 16, 32 grids, row-major within each.
fn decode_yolox(out: &[f32], classes: usize, input: (u32, u32), thr: f32) -> Vec<Candidate> {
    let row_len = 5 + classes;
    let mut rows = out.chunks_exact(row_len);
    let mut cands = Vec::new();
    for stride in [8u32, 16, 32] {
        let (gw, gh) = (input.0 / stride, input.1 / stride);
        let s = stride as f32;
        for gy in 0..gh {
            for gx in 0..gw {
                let Some(r) = rows.next() else {
                    return cands;
                };
                let obj = r[4];
                if obj < thr {
                    continue; // class scores are <= 1, so the product cannot pass
                }
                let (mut best, mut class_id) = (r[5], 0u32);
                for (c, &v) in r[6..].iter().enumerate() {
                    if v > best {
                        best = v;
                        class_id = c as u32 + 1;
                    }
                }
                let score = obj * best;
                if score < thr {
                    continue;
                }
                let cx = (r[0] + gx as f32) * s;
                let cy = (r[1] + gy as f32) * s;
                let w = r[2].exp() * s;
                let h = r[3].exp() * s;
                cands.push(Candidate {
                    class_id,
                    score,
                    bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                });
            }
        }
    }
    cands
}

/// Intersection over union of two `x1, y1, x2, y2` boxes (0 for empty boxes).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Class-aware greedy NMS: best score first, a box is dropped when it overlaps a kept box
/// of the same class by more than `iou_threshold`. Returns at most `max` boxes, best first.
pub fn nms(mut cands: Vec<Candidate>, iou_threshold: f32, max: usize) -> Vec<Candidate> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    cands.truncate(MAX_NMS_CANDIDATES);
    let mut kept: Vec<Candidate> = Vec::new();
    for c in cands {
        if kept.len() >= max {
            break;
        }
        if kept
            .iter()
            .all(|k| k.class_id != c.class_id || iou(&k.bbox, &c.bbox) <= iou_threshold)
        {
            kept.push(c);
        }
    }
    kept
}

/// Maps boxes from model-input pixels to the source frame, normalised to 0..1 and clipped.
pub fn to_frame(cands: &[Candidate], lb: &Letterbox) -> Vec<FrameDetection> {
    let (w, h) = (lb.src_width as f32, lb.src_height as f32);
    cands
        .iter()
        .filter(|c| c.bbox.iter().all(|v| v.is_finite()) && c.score.is_finite())
        .map(|c| {
            let (x1, y1) = lb.to_source(c.bbox[0], c.bbox[1]);
            let (x2, y2) = lb.to_source(c.bbox[2], c.bbox[3]);
            FrameDetection {
                class_id: c.class_id,
                score: c.score,
                bbox: [
                    (x1 / w).clamp(0.0, 1.0),
                    (y1 / h).clamp(0.0, 1.0),
                    (x2 / w).clamp(0.0, 1.0),
                    (y2 / h).clamp(0.0, 1.0),
                ],
            }
        })
        .collect()
}

/// Decode, NMS and map back: the whole postprocessing of one image.
pub fn postprocess(
    output: &[f32],
    layout: &OutputLayout,
    input: (u32, u32),
    lb: &Letterbox,
    cfg: &PostprocessConfig,
) -> Result<Vec<FrameDetection>, PostprocessError> {
    let cands = decode(output, layout, input, cfg.score_threshold)?;
    let kept = nms(cands, cfg.iou_threshold, cfg.max_detections);
    Ok(to_frame(&kept, lb))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;
    use proptest::prelude::*;

    fn cand(class_id: u32, score: f32, bbox: [f32; 4]) -> Candidate {
        Candidate {
            class_id,
            score,
            bbox,
        }
    }

    #[test]
    fn iou_values() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 10.0, 20.0, 20.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn nms_is_class_aware_and_bounded() {
        let boxes = vec![
            cand(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
            cand(0, 0.9, [1.0, 0.0, 11.0, 10.0]), // overlaps the first: keeps the better
            cand(1, 0.7, [0.0, 0.0, 10.0, 10.0]), // other class: kept
            cand(0, 0.6, [50.0, 50.0, 60.0, 60.0]),
        ];
        let kept = nms(boxes.clone(), 0.45, 10);
        let scores: Vec<f32> = kept.iter().map(|c| c.score).collect();
        assert_eq!(scores, [0.9, 0.7, 0.6]);
        assert_eq!(nms(boxes.clone(), 0.45, 2).len(), 2);
        // A threshold above the overlap keeps everything.
        assert_eq!(nms(boxes, 0.95, 10).len(), 4);
    }

    #[test]
    fn decodes_yolov8_layout() {
        let (classes, anchors) = (3, 4);
        let mut out = vec![0.0f32; (4 + classes) * anchors];
        // anchor 2: box at (100, 50) size 20x10, class 1 score 0.8, class 2 score 0.3
        let set = |out: &mut Vec<f32>, row: usize, a: usize, v: f32| out[row * anchors + a] = v;
        set(&mut out, 0, 2, 100.0);
        set(&mut out, 1, 2, 50.0);
        set(&mut out, 2, 2, 20.0);
        set(&mut out, 3, 2, 10.0);
        set(&mut out, 5, 2, 0.8);
        set(&mut out, 6, 2, 0.3);
        set(&mut out, 4, 0, 0.1); // below threshold
        let layout = OutputLayout {
            family: Family::Yolov8,
            num_classes: classes,
            num_anchors: anchors,
        };
        let c = decode(&out, &layout, (640, 640), 0.25).unwrap();
        assert_eq!(c, [cand(1, 0.8, [90.0, 45.0, 110.0, 55.0])]);
        assert!(decode(&out[1..], &layout, (640, 640), 0.25).is_err());
    }

    #[test]
    fn decodes_yolox_grids() {
        let (w, h, classes) = (64u32, 32u32, 2usize);
        let cells = crate::family::yolox_grid_cells(w, h); // 8*4 + 4*2 + 2*1 = 42
        assert_eq!(cells, 42);
        let mut out = vec![0.0f32; cells * (5 + classes)];
        // Stride 16 grid (4x2) starts after the 32 stride-8 cells; cell (row 1, col 2).
        let idx = 32 + 4 + 2;
        let r = &mut out[idx * 7..idx * 7 + 7];
        r.copy_from_slice(&[0.5, 0.25, 0.0, (2.0f32).ln(), 0.9, 0.2, 0.8]);
        let layout = OutputLayout {
            family: Family::Yolox,
            num_classes: classes,
            num_anchors: cells,
        };
        let c = decode(&out, &layout, (w, h), 0.5).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 1);
        assert!((c[0].score - 0.72).abs() < 1e-6);
        // cx = (0.5 + 2) * 16 = 40, cy = (0.25 + 1) * 16 = 20, w = 16, h = 32
        let want = [32.0, 4.0, 48.0, 36.0];
        for (a, b) in c[0].bbox.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{:?}", c[0].bbox);
        }
        // Objectness below threshold prunes the cell.
        assert!(decode(&out, &layout, (w, h), 0.95).unwrap().is_empty());
    }

    #[test]
    fn maps_back_to_normalised_frame() {
        let spec = Family::Yolov8.input_spec(640, 640);
        let lb = Letterbox::new(960, 540, &spec);
        let d = to_frame(&[cand(0, 0.9, [0.0, 140.0, 320.0, 500.0 + 50.0])], &lb);
        let b = d[0].bbox;
        assert!(b[0].abs() < 1e-6 && b[1].abs() < 1e-6);
        assert!((b[2] - 0.5).abs() < 1e-6);
        assert_eq!(b[3], 1.0); // clipped
    }

    proptest! {
        /// NMS output: sorted, bounded, and no two kept boxes of one class overlap too much.
        #[test]
        fn nms_invariants(raw in proptest::collection::vec(
            (0u32..3, 0.0f32..1.0, 0.0f32..100.0, 0.0f32..100.0, 1.0f32..50.0, 1.0f32..50.0), 0..200),
            max in 1usize..50)
        {
            let cands: Vec<Candidate> = raw.iter()
                .map(|&(c, s, x, y, w, h)| cand(c, s, [x, y, x + w, y + h]))
                .collect();
            let kept = nms(cands.clone(), 0.45, max);
            prop_assert!(kept.len() <= max.min(cands.len()));
            prop_assert!(kept.windows(2).all(|w| w[0].score >= w[1].score));
            for (i, a) in kept.iter().enumerate() {
                for b in &kept[i + 1..] {
                    prop_assert!(a.class_id != b.class_id || iou(&a.bbox, &b.bbox) <= 0.45);
                }
            }
            if !cands.is_empty() {
                let top = cands.iter().map(|c| c.score).fold(f32::MIN, f32::max);
                prop_assert_eq!(kept[0].score, top);
            }
        }
    }
}
