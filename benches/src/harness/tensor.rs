//! The fixed input tensor of the raw ONNX Runtime baseline: a real frame letterboxed the way
//! each model family expects (see the assets README), so the baseline runs the same kind of
//! data as the server.

/// Which pre-processing a model wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// RGB, 0..1, centred letterbox, pad 114/255; output `[1, 4 + C, N]`.
    Yolov8,
    /// BGR, 0..255, top-left letterbox, pad 114; output `[1, N, 5 + C]`.
    Yolox,
}

impl Family {
    /// Guesses the family from the output shape `[1, a, b]`: channels-first (`a < b`) is
    /// YOLOv8, anchors-first is YOLOX.
    pub fn from_output_shape(shape: &[i64]) -> Option<Family> {
        match shape {
            [_, a, b] if *a > 0 && *b > 0 => {
                Some(if a < b { Family::Yolov8 } else { Family::Yolox })
            }
            _ => None,
        }
    }
}

/// Letterboxes a packed RGB24 image of `w`x`h` into an NCHW float tensor of `size`x`size`
/// (bilinear sampling).
pub fn letterbox_rgb24(rgb: &[u8], w: usize, h: usize, size: usize, family: Family) -> Vec<f32> {
    assert_eq!(rgb.len(), w * h * 3, "rgb24 buffer size");
    let scale = (size as f32 / w as f32).min(size as f32 / h as f32);
    let nw = ((w as f32 * scale).round() as usize).clamp(1, size);
    let nh = ((h as f32 * scale).round() as usize).clamp(1, size);
    let (ox, oy) = match family {
        Family::Yolov8 => ((size - nw) / 2, (size - nh) / 2),
        Family::Yolox => (0, 0),
    };
    let (norm, pad) = match family {
        Family::Yolov8 => (1.0 / 255.0, 114.0 / 255.0),
        Family::Yolox => (1.0, 114.0),
    };
    // Output channel c takes source channel order[c].
    let order = match family {
        Family::Yolov8 => [0, 1, 2],
        Family::Yolox => [2, 1, 0],
    };
    let plane = size * size;
    let mut out = vec![pad; 3 * plane];
    for y in 0..nh {
        let sy = ((y as f32 + 0.5) / scale - 0.5).clamp(0.0, (h - 1) as f32);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(h - 1);
        let fy = sy - y0 as f32;
        for x in 0..nw {
            let sx = ((x as f32 + 0.5) / scale - 0.5).clamp(0.0, (w - 1) as f32);
            let x0 = sx.floor() as usize;
            let x1 = (x0 + 1).min(w - 1);
            let fx = sx - x0 as f32;
            let at = |xx: usize, yy: usize, c: usize| f32::from(rgb[(yy * w + xx) * 3 + c]);
            for (c, &src) in order.iter().enumerate() {
                let top = at(x0, y0, src) * (1.0 - fx) + at(x1, y0, src) * fx;
                let bot = at(x0, y1, src) * (1.0 - fx) + at(x1, y1, src) * fx;
                let v = top * (1.0 - fy) + bot * fy;
                out[c * plane + (oy + y) * size + ox + x] = v * norm;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_from_shapes() {
        assert_eq!(
            Family::from_output_shape(&[1, 84, 8400]),
            Some(Family::Yolov8)
        );
        assert_eq!(
            Family::from_output_shape(&[1, 3549, 85]),
            Some(Family::Yolox)
        );
        assert_eq!(Family::from_output_shape(&[1, 84]), None);
    }

    #[test]
    fn yolov8_letterbox_is_centred_rgb_unit_range() {
        // 4x2 image, red everywhere: into 8x8 -> scale 2, 8x4 content, rows 2..6.
        let rgb: Vec<u8> = [255u8, 0, 0].repeat(8);
        let t = letterbox_rgb24(&rgb, 4, 2, 8, Family::Yolov8);
        let plane = 64;
        let pad = 114.0 / 255.0;
        assert_eq!(t.len(), 3 * plane);
        assert!((t[0] - pad).abs() < 1e-6, "row 0 is padding");
        assert!((t[2 * 8] - 1.0).abs() < 1e-6, "row 2 red channel");
        assert!(t[plane + 2 * 8].abs() < 1e-6, "row 2 green channel");
        assert!((t[7 * 8] - pad).abs() < 1e-6, "row 7 is padding");
    }

    #[test]
    fn yolox_letterbox_is_top_left_bgr_raw_range() {
        let rgb: Vec<u8> = [10u8, 20, 30].repeat(8);
        let t = letterbox_rgb24(&rgb, 4, 2, 8, Family::Yolox);
        let plane = 64;
        assert_eq!(t[0], 30.0, "B first");
        assert_eq!(t[plane], 20.0);
        assert_eq!(t[2 * plane], 10.0);
        assert_eq!(t[4 * 8], 114.0, "rows below the content are padding");
    }
}
