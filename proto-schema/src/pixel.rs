//! Pixel formats and frame geometry: how the bytes of one decoded frame are laid out.
//!
//! A frame is one contiguous buffer of `frame_size` bytes holding up to three planes.
//! Plane `i` starts at `offsets[i]` and its rows are `strides[i]` bytes apart; unused
//! planes have stride and offset 0. [`FrameGeometry::packed`] gives the tight layout
//! (no row padding, planes back to back) that the ring writer and the model servers use
//! by default.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Smallest accepted width or height, in pixels.
pub const MIN_DIMENSION: u32 = 1;
/// Largest accepted width or height, in pixels (8K).
pub const MAX_DIMENSION: u32 = 8192;

/// Pixel format of a frame. Serialized as `"NV12"`, `"I420"`, `"BGR24"`, `"RGB24"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PixelFormat {
    /// 8-bit Y plane, then one interleaved U/V plane at half width and half height.
    Nv12,
    /// 8-bit Y plane, then U and V planes, each at half width and half height.
    I420,
    /// One plane of packed 8-bit B, G, R triplets.
    Bgr24,
    /// One plane of packed 8-bit R, G, B triplets.
    Rgb24,
}

impl PixelFormat {
    /// All formats, in their numeric-code order.
    pub const ALL: [PixelFormat; 4] = [
        PixelFormat::Nv12,
        PixelFormat::I420,
        PixelFormat::Bgr24,
        PixelFormat::Rgb24,
    ];

    /// The wire/spec name (`"NV12"`, ...), identical to the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Nv12 => "NV12",
            PixelFormat::I420 => "I420",
            PixelFormat::Bgr24 => "BGR24",
            PixelFormat::Rgb24 => "RGB24",
        }
    }

    /// Numeric code stored in the ring header (`docs/ring-format.md`): 1 NV12, 2 I420,
    /// 3 BGR24, 4 RGB24. 0 is never a valid format, so a zeroed header is rejected.
    pub fn code(self) -> u32 {
        match self {
            PixelFormat::Nv12 => 1,
            PixelFormat::I420 => 2,
            PixelFormat::Bgr24 => 3,
            PixelFormat::Rgb24 => 4,
        }
    }

    /// Inverse of [`PixelFormat::code`]; `None` for an unknown code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(PixelFormat::Nv12),
            2 => Some(PixelFormat::I420),
            3 => Some(PixelFormat::Bgr24),
            4 => Some(PixelFormat::Rgb24),
            _ => None,
        }
    }

    /// Number of planes the format uses (1..=3).
    pub fn planes(self) -> usize {
        match self {
            PixelFormat::Nv12 => 2,
            PixelFormat::I420 => 3,
            PixelFormat::Bgr24 | PixelFormat::Rgb24 => 1,
        }
    }

    /// Whether width and height must be even (chroma subsampled 2x2).
    pub fn needs_even_dimensions(self) -> bool {
        matches!(self, PixelFormat::Nv12 | PixelFormat::I420)
    }

    /// `(bytes per row, rows)` of plane `plane` in a `width` x `height` frame, without
    /// padding; `None` if the format has no such plane. Dimensions are assumed even where
    /// the format needs it.
    pub fn plane_extent(self, plane: usize, width: u32, height: u32) -> Option<(u32, u32)> {
        match (self, plane) {
            (PixelFormat::Nv12 | PixelFormat::I420, 0) => Some((width, height)),
            (PixelFormat::Nv12, 1) => Some((width, height / 2)),
            (PixelFormat::I420, 1 | 2) => Some((width / 2, height / 2)),
            (PixelFormat::Bgr24 | PixelFormat::Rgb24, 0) => Some((width * 3, height)),
            _ => None,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame geometry was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Width or height outside `MIN_DIMENSION..=MAX_DIMENSION`.
    #[error("frame size {width}x{height} out of range (each side must be 1..=8192)")]
    DimensionOutOfRange {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
    },
    /// A chroma-subsampled format (NV12, I420) with an odd width or height.
    #[error("{format} needs even width and height, got {width}x{height}")]
    OddDimension {
        /// The format that needs even dimensions.
        format: PixelFormat,
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
    },
    /// A plane's stride is shorter than one row of pixels.
    #[error("plane {plane} stride {stride} is shorter than its row of {row_bytes} bytes")]
    StrideTooSmall {
        /// Plane index (0..3).
        plane: usize,
        /// Declared stride in bytes.
        stride: u32,
        /// Minimum row length in bytes.
        row_bytes: u32,
    },
    /// A plane extends past `frame_size`, overlaps the previous plane, or an unused plane
    /// has a non-zero stride/offset.
    #[error("plane {plane} layout invalid: {reason}")]
    PlaneLayout {
        /// Plane index (0..3).
        plane: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The frame does not fit in 32 bits of bytes.
    #[error("frame of {width}x{height} {format} exceeds u32 bytes")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Pixel format.
        format: PixelFormat,
    },
}

/// Byte layout of one frame: dimensions, format and where each plane lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrameGeometry {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel format.
    pub format: PixelFormat,
    /// Bytes between the starts of consecutive rows, per plane (0 for unused planes).
    pub strides: [u32; 3],
    /// Byte offset of each plane from the start of the frame (0 for unused planes).
    pub offsets: [u32; 3],
    /// Total bytes of one frame.
    pub frame_size: u32,
}

impl FrameGeometry {
    /// The tight layout of a `width` x `height` frame: strides equal the row length and
    /// planes follow each other without gaps.
    ///
    /// NV12: Y (`w*h`) then interleaved UV (`w*h/2`), strides `[w, w, 0]`.
    /// I420: Y, U (`w/2*h/2`), V, strides `[w, w/2, w/2]`.
    /// BGR24/RGB24: one plane, stride `3*w`.
    pub fn packed(width: u32, height: u32, format: PixelFormat) -> Result<Self, GeometryError> {
        check_dimensions(width, height, format)?;
        let mut strides = [0u32; 3];
        let mut offsets = [0u32; 3];
        let mut offset: u64 = 0;
        for plane in 0..format.planes() {
            let (row_bytes, rows) = format
                .plane_extent(plane, width, height)
                .expect("plane index below format.planes()");
            strides[plane] = row_bytes;
            offsets[plane] = u32::try_from(offset).map_err(|_| GeometryError::TooLarge {
                width,
                height,
                format,
            })?;
            offset += u64::from(row_bytes) * u64::from(rows);
        }
        let frame_size = u32::try_from(offset).map_err(|_| GeometryError::TooLarge {
            width,
            height,
            format,
        })?;
        Ok(FrameGeometry {
            width,
            height,
            format,
            strides,
            offsets,
            frame_size,
        })
    }

    /// Checks a geometry that came from outside (a ring header, a message): dimensions in
    /// range, every used plane's stride at least one row, planes in order, non-overlapping
    /// and inside `frame_size`, unused planes zeroed. Padded layouts are accepted.
    pub fn validate(&self) -> Result<(), GeometryError> {
        check_dimensions(self.width, self.height, self.format)?;
        let planes = self.format.planes();
        let mut prev_end: u64 = 0;
        for plane in 0..3 {
            let stride = self.strides[plane];
            let offset = self.offsets[plane];
            if plane >= planes {
                if stride != 0 || offset != 0 {
                    return Err(GeometryError::PlaneLayout {
                        plane,
                        reason: "unused plane must have stride and offset 0",
                    });
                }
                continue;
            }
            let (row_bytes, rows) = self
                .format
                .plane_extent(plane, self.width, self.height)
                .expect("plane index below format.planes()");
            if stride < row_bytes {
                return Err(GeometryError::StrideTooSmall {
                    plane,
                    stride,
                    row_bytes,
                });
            }
            if u64::from(offset) < prev_end {
                return Err(GeometryError::PlaneLayout {
                    plane,
                    reason: "overlaps the previous plane",
                });
            }
            let end =
                u64::from(offset) + u64::from(stride) * u64::from(rows - 1) + u64::from(row_bytes);
            if end > u64::from(self.frame_size) {
                return Err(GeometryError::PlaneLayout {
                    plane,
                    reason: "extends past frame_size",
                });
            }
            prev_end = end;
        }
        Ok(())
    }

    /// Whether this is exactly the tight layout of [`FrameGeometry::packed`].
    pub fn is_packed(&self) -> bool {
        FrameGeometry::packed(self.width, self.height, self.format).is_ok_and(|p| p == *self)
    }
}

fn check_dimensions(width: u32, height: u32, format: PixelFormat) -> Result<(), GeometryError> {
    let range = MIN_DIMENSION..=MAX_DIMENSION;
    if !range.contains(&width) || !range.contains(&height) {
        return Err(GeometryError::DimensionOutOfRange { width, height });
    }
    if format.needs_even_dimensions() && (!width.is_multiple_of(2) || !height.is_multiple_of(2)) {
        return Err(GeometryError::OddDimension {
            format,
            width,
            height,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nv12_packed_layout() {
        let g = FrameGeometry::packed(960, 540, PixelFormat::Nv12).unwrap();
        assert_eq!(g.strides, [960, 960, 0]);
        assert_eq!(g.offsets, [0, 960 * 540, 0]);
        assert_eq!(g.frame_size, 960 * 540 * 3 / 2);
        assert!(g.is_packed());
        g.validate().unwrap();
    }

    #[test]
    fn i420_packed_layout() {
        let g = FrameGeometry::packed(1920, 1080, PixelFormat::I420).unwrap();
        let y = 1920 * 1080;
        assert_eq!(g.strides, [1920, 960, 960]);
        assert_eq!(g.offsets, [0, y, y + y / 4]);
        assert_eq!(g.frame_size, y * 3 / 2);
        g.validate().unwrap();
    }

    #[test]
    fn rgb_packed_layout_allows_odd_sizes() {
        for format in [PixelFormat::Bgr24, PixelFormat::Rgb24] {
            let g = FrameGeometry::packed(641, 3, format).unwrap();
            assert_eq!(g.strides, [641 * 3, 0, 0]);
            assert_eq!(g.offsets, [0, 0, 0]);
            assert_eq!(g.frame_size, 641 * 3 * 3);
            g.validate().unwrap();
        }
    }

    #[test]
    fn rejects_out_of_range_and_odd() {
        assert_eq!(
            FrameGeometry::packed(0, 10, PixelFormat::Rgb24),
            Err(GeometryError::DimensionOutOfRange {
                width: 0,
                height: 10
            })
        );
        assert!(matches!(
            FrameGeometry::packed(8193, 2, PixelFormat::Nv12),
            Err(GeometryError::DimensionOutOfRange { .. })
        ));
        assert!(matches!(
            FrameGeometry::packed(641, 480, PixelFormat::Nv12),
            Err(GeometryError::OddDimension { .. })
        ));
        assert!(matches!(
            FrameGeometry::packed(640, 481, PixelFormat::I420),
            Err(GeometryError::OddDimension { .. })
        ));
    }

    #[test]
    fn largest_frame_fits_u32() {
        let g = FrameGeometry::packed(8192, 8192, PixelFormat::Bgr24).unwrap();
        assert_eq!(g.frame_size, 8192 * 8192 * 3);
    }

    #[test]
    fn validate_accepts_padding_and_rejects_bad_layouts() {
        let mut g = FrameGeometry::packed(100, 100, PixelFormat::Nv12).unwrap();
        g.strides = [128, 128, 0];
        g.offsets = [0, 128 * 100, 0];
        g.frame_size = 128 * 150;
        g.validate().unwrap();
        assert!(!g.is_packed());

        let mut short = g;
        short.strides[0] = 99;
        assert!(matches!(
            short.validate(),
            Err(GeometryError::StrideTooSmall { plane: 0, .. })
        ));

        let mut overlap = g;
        overlap.offsets[1] = 128 * 99;
        assert!(matches!(
            overlap.validate(),
            Err(GeometryError::PlaneLayout { plane: 1, .. })
        ));

        let mut past_end = g;
        // The last row needs only its 100 pixel bytes, not the whole stride.
        past_end.frame_size = 128 * 100 + 128 * 49 + 99;
        assert!(matches!(
            past_end.validate(),
            Err(GeometryError::PlaneLayout { plane: 1, .. })
        ));

        let mut unused = g;
        unused.strides[2] = 4;
        assert!(matches!(
            unused.validate(),
            Err(GeometryError::PlaneLayout { plane: 2, .. })
        ));
    }

    #[test]
    fn format_codes_round_trip() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_code(f.code()), Some(f));
        }
        assert_eq!(PixelFormat::from_code(0), None);
        assert_eq!(PixelFormat::from_code(5), None);
    }

    #[test]
    fn serde_names() {
        for (f, name) in [
            (PixelFormat::Nv12, "\"NV12\""),
            (PixelFormat::I420, "\"I420\""),
            (PixelFormat::Bgr24, "\"BGR24\""),
            (PixelFormat::Rgb24, "\"RGB24\""),
        ] {
            assert_eq!(serde_json::to_string(&f).unwrap(), name);
            assert_eq!(serde_json::from_str::<PixelFormat>(name).unwrap(), f);
            assert_eq!(format!("\"{f}\""), name);
        }
        assert!(serde_json::from_str::<PixelFormat>("\"nv12\"").is_err());
        let g = FrameGeometry::packed(4, 2, PixelFormat::I420).unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<FrameGeometry>(&json).unwrap(), g);
    }
}
