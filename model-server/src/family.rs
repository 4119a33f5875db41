//! Model families: how a detector's input is prepared and its output decoded.
//!
//! Two layouts are supported, detected from the output shape and the model metadata (or
//! forced with `--family`):
//! - YOLOv8 (Ultralytics): output `[B, 4 + C, N]`, input RGB scaled to 0..1, centred
//!   letterbox.
//! - YOLOX (Megvii): output `[B, N, 5 + C]` over the stride-8/16/32 grids, input BGR 0..255,
//!   top-left letterbox.

use std::collections::BTreeMap;
use std::fmt;

/// The family asked for on the command line (`--family`), shared with core-agent's
/// `models.family`.
pub use framebus_launch::ModelFamily as FamilyChoice;

/// A supported detector family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Ultralytics YOLOv8: `[B, 4 + C, N]`, boxes `cx, cy, w, h` in input pixels, class
    /// scores already sigmoided, no objectness.
    Yolov8,
    /// Megvii YOLOX: `[B, N, 5 + C]` grid outputs to decode, objectness times class score.
    Yolox,
}

impl Family {
    /// Lower-case name used in logs and the status report.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Yolov8 => "yolov8",
            Family::Yolox => "yolox",
        }
    }

    /// How an input of `width` x `height` pixels is prepared for this family.
    pub fn input_spec(self, width: u32, height: u32) -> InputSpec {
        match self {
            Family::Yolov8 => InputSpec {
                width,
                height,
                order: ChannelOrder::Rgb,
                divisor: 255.0,
                pad_value: 114,
                placement: Placement::Centre,
            },
            Family::Yolox => InputSpec {
                width,
                height,
                order: ChannelOrder::Bgr,
                divisor: 1.0,
                pad_value: 114,
                placement: Placement::TopLeft,
            },
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Order of the three colour planes in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Plane 0 is red.
    Rgb,
    /// Plane 0 is blue.
    Bgr,
}

/// Where the resized image sits inside the square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Centred, padding split between both sides (Ultralytics `LetterBox`).
    Centre,
    /// Top-left corner, padding right and below (YOLOX `preproc`).
    TopLeft,
}

/// Everything preprocessing needs to know about the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Input width in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Colour plane order.
    pub order: ChannelOrder,
    /// Tensor value = pixel value (0..255) / `divisor` (255 for 0..1 inputs, 1 for raw).
    pub divisor: f32,
    /// Padding colour (all three channels), 0..255.
    pub pad_value: u8,
    /// Placement of the resized image.
    pub placement: Placement,
}

/// The decoded-output layout of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLayout {
    /// The family.
    pub family: Family,
    /// Number of classes `C`.
    pub num_classes: usize,
    /// Number of candidate boxes `N` per image.
    pub num_anchors: usize,
}

impl OutputLayout {
    /// Number of `f32` values one image contributes to the output.
    pub fn per_image(&self) -> usize {
        match self.family {
            Family::Yolov8 => (4 + self.num_classes) * self.num_anchors,
            Family::Yolox => (5 + self.num_classes) * self.num_anchors,
        }
    }
}

/// Why the family could not be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FamilyError {
    /// The output is not a rank-3 tensor `[B, a, b]`.
    #[error("output shape {shape:?} is not [batch, a, b]")]
    BadRank {
        /// The output shape.
        shape: Vec<i64>,
    },
    /// A non-batch output dimension is not a positive number.
    #[error("output shape {shape:?} has a dynamic or zero non-batch dimension")]
    NotStatic {
        /// The output shape.
        shape: Vec<i64>,
    },
    /// The shape does not fit the family given with `--family`.
    #[error("output shape {shape:?} does not fit the {family} layout: {reason}")]
    Mismatch {
        /// The forced family.
        family: Family,
        /// The output shape.
        shape: Vec<i64>,
        /// What does not fit.
        reason: &'static str,
    },
    /// Neither layout fits; pass `--family`.
    #[error("cannot tell the family of output shape {shape:?}; pass --family yolov8|yolox")]
    Ambiguous {
        /// The output shape.
        shape: Vec<i64>,
    },
}

/// Number of YOLOX grid cells for an input: strides 8, 16 and 32.
pub fn yolox_grid_cells(width: u32, height: u32) -> usize {
    [8u32, 16, 32]
        .iter()
        .map(|s| ((width / s) * (height / s)) as usize)
        .sum()
}

/// Whether the metadata says this is an Ultralytics export.
fn looks_ultralytics(metadata: &BTreeMap<String, String>) -> bool {
    metadata
        .get("author")
        .is_some_and(|a| a.to_ascii_lowercase().contains("ultralytics"))
        || metadata.get("task").is_some_and(|t| t == "detect")
}

/// Determines the output layout from the output shape (`[B, a, b]`, batch may be -1), the
/// input size and the metadata. `choice` forces a family; the shape must still fit it.
pub fn detect(
    choice: FamilyChoice,
    output_shape: &[i64],
    input_width: u32,
    input_height: u32,
    metadata: &BTreeMap<String, String>,
) -> Result<OutputLayout, FamilyError> {
    let shape = output_shape.to_vec();
    if output_shape.len() != 3 {
        return Err(FamilyError::BadRank { shape });
    }
    let (a, b) = (output_shape[1], output_shape[2]);
    if a <= 0 || b <= 0 {
        return Err(FamilyError::NotStatic { shape });
    }
    let (a, b) = (a as usize, b as usize);
    let v8 = |shape: Vec<i64>| {
        if a <= 4 {
            return Err(FamilyError::Mismatch {
                family: Family::Yolov8,
                shape,
                reason: "needs 4 box values plus at least one class in dimension 1",
            });
        }
        Ok(OutputLayout {
            family: Family::Yolov8,
            num_classes: a - 4,
            num_anchors: b,
        })
    };
    let yolox = |shape: Vec<i64>| {
        if b <= 5 {
            return Err(FamilyError::Mismatch {
                family: Family::Yolox,
                shape,
                reason: "needs 4 box values, objectness and at least one class in dimension 2",
            });
        }
        if a != yolox_grid_cells(input_width, input_height) {
            return Err(FamilyError::Mismatch {
                family: Family::Yolox,
                shape,
                reason: "dimension 1 is not the number of stride 8/16/32 grid cells of the input",
            });
        }
        Ok(OutputLayout {
            family: Family::Yolox,
            num_classes: b - 5,
            num_anchors: a,
        })
    };
    match choice {
        FamilyChoice::Yolov8 => v8(shape),
        FamilyChoice::Yolox => yolox(shape),
        FamilyChoice::Auto => {
            if looks_ultralytics(metadata) && a < b {
                return v8(shape);
            }
            if let Ok(layout) = yolox(shape.clone()) {
                return Ok(layout);
            }
            // Channels-first with few rows and many anchors: the Ultralytics layout.
            if a < b && a > 4 {
                return v8(shape);
            }
            Err(FamilyError::Ambiguous { shape })
        }
    }
}

/// Parses the `names` metadata entry: a Python dict literal as Ultralytics writes it
/// (`{0: 'person', 1: 'bicycle'}`), a JSON object with numeric keys, or a JSON list.
/// Returns `None` when the text is none of these.
pub fn parse_class_names(text: &str) -> Option<Vec<String>> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(text) {
        return Some(list);
    }
    let body = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut entries: BTreeMap<usize, String> = BTreeMap::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        // key: optional quotes around an integer
        let key_end = rest.find(':')?;
        let key: usize = rest[..key_end]
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .parse()
            .ok()?;
        rest = rest[key_end + 1..].trim_start();
        let quote = rest.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let mut value = String::new();
        let mut chars = rest[1..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.push(chars.next()?.1),
                c if c == quote => {
                    end = Some(i + 2);
                    break;
                }
                c => value.push(c),
            }
        }
        rest = rest[end?..].trim_start();
        entries.insert(key, value);
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return None,
        }
    }
    let len = entries.keys().next_back().map_or(0, |k| k + 1);
    if entries.len() != len {
        return None; // keys must be 0..n without gaps
    }
    Some(entries.into_values().collect())
}

/// The fallback class names for 80-class models whose file carries no `names`.
pub use proto_schema::coco::COCO80;

/// Where the class names came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamesSource {
    /// A `--labels` file.
    LabelsFile,
    /// The model's `names` metadata.
    Metadata,
    /// The built-in COCO-80 list (80-class model without names).
    Coco80,
    /// `class_<id>` placeholders.
    Generic,
}

/// Class names for `num_classes` classes: `labels` (from a file) first, then the model's
/// `names` metadata, then COCO-80 when the model has 80 classes, else `class_<id>`.
/// A list of the wrong length is ignored with a warning.
pub fn class_names(
    num_classes: usize,
    labels: Option<Vec<String>>,
    metadata: &BTreeMap<String, String>,
) -> (Vec<String>, NamesSource) {
    if let Some(labels) = labels {
        if labels.len() == num_classes {
            return (labels, NamesSource::LabelsFile);
        }
        tracing::warn!(
            labels = labels.len(),
            num_classes,
            "labels file has the wrong number of names; ignoring it"
        );
    }
    if let Some(text) = metadata.get("names") {
        match parse_class_names(text) {
            Some(names) if names.len() == num_classes => return (names, NamesSource::Metadata),
            Some(names) => tracing::warn!(
                names = names.len(),
                num_classes,
                "model metadata `names` has the wrong number of names; ignoring it"
            ),
            None => tracing::warn!("model metadata `names` is not a dict or list; ignoring it"),
        }
    }
    if num_classes == COCO80.len() {
        return (
            COCO80.iter().map(|s| s.to_string()).collect(),
            NamesSource::Coco80,
        );
    }
    (
        (0..num_classes).map(|i| format!("class_{i}")).collect(),
        NamesSource::Generic,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn detects_yolov8_from_shape_and_metadata() {
        let m = meta(&[("task", "detect"), ("author", "Ultralytics")]);
        let l = detect(FamilyChoice::Auto, &[1, 84, 8400], 640, 640, &m).unwrap();
        assert_eq!(l.family, Family::Yolov8);
        assert_eq!(l.num_classes, 80);
        assert_eq!(l.num_anchors, 8400);
        // Without metadata the channels-first shape still says YOLOv8.
        let l = detect(FamilyChoice::Auto, &[-1, 84, 8400], 640, 640, &meta(&[])).unwrap();
        assert_eq!(l.family, Family::Yolov8);
    }

    #[test]
    fn detects_yolox_from_grid_count() {
        assert_eq!(yolox_grid_cells(416, 416), 3549);
        let l = detect(FamilyChoice::Auto, &[1, 3549, 85], 416, 416, &meta(&[])).unwrap();
        assert_eq!(l.family, Family::Yolox);
        assert_eq!(l.num_classes, 80);
        assert_eq!(l.per_image(), 3549 * 85);
    }

    #[test]
    fn override_must_fit() {
        let m = meta(&[]);
        assert!(matches!(
            detect(FamilyChoice::Yolox, &[1, 84, 8400], 640, 640, &m),
            Err(FamilyError::Mismatch { .. })
        ));
        assert!(matches!(
            detect(FamilyChoice::Yolov8, &[1, 3, 8400], 640, 640, &m),
            Err(FamilyError::Mismatch { .. })
        ));
        assert!(matches!(
            detect(FamilyChoice::Auto, &[1, 8400], 640, 640, &m),
            Err(FamilyError::BadRank { .. })
        ));
        assert!(matches!(
            detect(FamilyChoice::Auto, &[1, -1, 85], 640, 640, &m),
            Err(FamilyError::NotStatic { .. })
        ));
        assert!(matches!(
            detect(FamilyChoice::Auto, &[1, 100, 85], 416, 416, &m),
            Err(FamilyError::Ambiguous { .. })
        ));
    }

    #[test]
    fn parses_ultralytics_names() {
        let names = parse_class_names("{0: 'person', 1: \"it's\", 2: 'traffic light'}").unwrap();
        assert_eq!(names, ["person", "it's", "traffic light"]);
        assert_eq!(
            parse_class_names(r#"{"0": "a", "1": "b"}"#).unwrap(),
            ["a", "b"]
        );
        assert_eq!(parse_class_names(r#"["a","b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(parse_class_names("{0: 'a', 2: 'b'}"), None);
        assert_eq!(parse_class_names("{0: a}"), None);
        assert_eq!(parse_class_names("nonsense"), None);
        assert_eq!(parse_class_names("{}").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn names_fallbacks() {
        let (n, s) = class_names(80, None, &meta(&[]));
        assert_eq!((n[0].as_str(), s), ("person", NamesSource::Coco80));
        let (n, s) = class_names(2, None, &meta(&[("names", "{0: 'x', 1: 'y'}")]));
        assert_eq!(
            (n, s),
            (vec!["x".into(), "y".into()], NamesSource::Metadata)
        );
        let (n, s) = class_names(3, Some(vec!["a".into()]), &meta(&[]));
        assert_eq!((n[2].as_str(), s), ("class_2", NamesSource::Generic));
    }
}
