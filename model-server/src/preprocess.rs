//! Letterboxing: one pass from the frame bytes (as they lie in the read-only ring mapping)
//! to the planar `f32` input tensor.
//!
//! The arithmetic is exact and fully specified, so an independent implementation of the
//! same steps gives a bit-identical tensor (the test reference does; quantised models such
//! as `yolov8n_int8` react to last-bit differences of the input):
//! 1. Source pixel to 8-bit RGB. Packed formats: the bytes. NV12/I420: BT.601 limited
//!    range in the common integer form `R = clip((298 C + 409 E + 128) >> 8)`,
//!    `G = clip((298 C - 100 D - 208 E + 128) >> 8)`, `B = clip((298 C + 516 D + 128) >> 8)`
//!    with `C = Y - 16`, `D = U - 128`, `E = V - 128`; each chroma sample covers its 2x2
//!    luma block (FFmpeg's default upsampling).
//! 2. Bilinear resize with OpenCV's `INTER_LINEAR` geometry (pixel centres, edges
//!    clamped) and 11-bit fixed-point weights: `w1 = floor(frac * 2048 + 0.5)`,
//!    `w0 = 2048 - w1`, result `(wy0 (wx0 p00 + wx1 p01) + wy1 (wx0 p10 + wx1 p11) + 2^21) >> 22`,
//!    an 8-bit value as OpenCV's 8-bit resize produces.
//! 3. Tensor value `v as f32 / divisor` (255 for YOLOv8, 1 for YOLOX), padding 114.
//!
//! It runs separably and exactly (integer sums): for each output row the two source rows
//! are blended vertically over the full width (contiguous, vectorised), then the
//! horizontal taps are applied and normalised straight into the three output planes. YUV
//! rows are converted once into a two-row cache; no full-size RGB copy is made.

use proto_schema::pixel::{FrameGeometry, PixelFormat};

use crate::family::{ChannelOrder, InputSpec, Placement};

/// Geometry of one letterbox: how the source frame sits inside the model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Source frame width in pixels.
    pub src_width: u32,
    /// Source frame height in pixels.
    pub src_height: u32,
    /// Scale factor from source pixels to model-input pixels.
    pub gain: f32,
    /// Width of the resized image inside the input.
    pub new_width: u32,
    /// Height of the resized image inside the input.
    pub new_height: u32,
    /// Padding columns left of the image.
    pub pad_left: u32,
    /// Padding rows above the image.
    pub pad_top: u32,
}

impl Letterbox {
    /// The letterbox of a `src_width` x `src_height` frame for `spec`.
    ///
    /// Centred placement follows Ultralytics (`round` of the scaled size, padding
    /// `round(d - 0.1)` before the image); top-left placement follows YOLOX (`int` of the
    /// scaled size).
    pub fn new(src_width: u32, src_height: u32, spec: &InputSpec) -> Self {
        let (sw, sh) = (f64::from(src_width.max(1)), f64::from(src_height.max(1)));
        let (dw, dh) = (f64::from(spec.width), f64::from(spec.height));
        let gain = (dw / sw).min(dh / sh);
        let fit = |v: f64, max: u32| (v as u32).clamp(1, max);
        match spec.placement {
            Placement::Centre => {
                let new_width = fit((sw * gain).round_ties_even(), spec.width);
                let new_height = fit((sh * gain).round_ties_even(), spec.height);
                let pad = |total: u32, used: u32| {
                    let d = f64::from(total - used) / 2.0;
                    (d - 0.1).round_ties_even().max(0.0) as u32
                };
                Letterbox {
                    src_width,
                    src_height,
                    gain: gain as f32,
                    new_width,
                    new_height,
                    pad_left: pad(spec.width, new_width),
                    pad_top: pad(spec.height, new_height),
                }
            }
            Placement::TopLeft => Letterbox {
                src_width,
                src_height,
                gain: gain as f32,
                new_width: fit((sw * gain).floor(), spec.width),
                new_height: fit((sh * gain).floor(), spec.height),
                pad_left: 0,
                pad_top: 0,
            },
        }
    }

    /// Maps a point in model-input pixels back to source-frame pixels.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.pad_left as f32) / self.gain,
            (y - self.pad_top as f32) / self.gain,
        )
    }
}

/// Why a frame could not be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    /// The frame geometry is not valid (strides, offsets, dimensions).
    #[error("invalid frame geometry: {0}")]
    Geometry(#[from] proto_schema::pixel::GeometryError),
    /// The frame buffer is shorter than the geometry says.
    #[error("frame buffer holds {len} bytes, geometry needs {need}")]
    FrameTooShort {
        /// Bytes available.
        len: usize,
        /// Bytes the geometry needs.
        need: usize,
    },
    /// The output slice does not hold exactly one `3 x H x W` image.
    #[error("output holds {len} floats, the input needs {need}")]
    OutputSize {
        /// Floats available.
        len: usize,
        /// Floats needed.
        need: usize,
    },
}

/// BT.601 limited-range YUV to 8-bit RGB, integer form (see the module docs).
#[inline(always)]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16) + 128;
    let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
    chroma_terms(d, e).map(|t| clip8((c + t) >> 8))
}

/// The chroma parts of R, G, B (before adding the luma term and shifting).
#[inline(always)]
fn chroma_terms(d: i32, e: i32) -> [i32; 3] {
    [409 * e, -100 * d - 208 * e, 516 * d]
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Fixed-point weight bits of the bilinear resize.
const WEIGHT_BITS: u32 = 11;
const WEIGHT_ONE: u32 = 1 << WEIGHT_BITS;
/// Rounding constant and shift of the two-dimensional blend.
const BLEND_ROUND: u32 = 1 << (2 * WEIGHT_BITS - 1);
const BLEND_SHIFT: u32 = 2 * WEIGHT_BITS;

/// Bilinear taps along one axis: for each output position the two source indices and
/// their fixed-point weights (summing to 2048), OpenCV `INTER_LINEAR` geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tap {
    i0: usize,
    i1: usize,
    w0: u32,
    w1: u32,
}

fn axis_taps(src: u32, dst: u32) -> Vec<Tap> {
    let scale = f64::from(src) / f64::from(dst);
    let last = src as usize - 1;
    (0..dst)
        .map(|d| {
            let s = (f64::from(d) + 0.5) * scale - 0.5;
            let floor = s.floor();
            let (i0, frac) = if floor < 0.0 {
                (0, 0.0)
            } else if floor as usize >= last {
                (last, 0.0)
            } else {
                (floor as usize, s - floor)
            };
            let w1 = (frac * f64::from(WEIGHT_ONE) + 0.5).floor() as u32;
            Tap {
                i0,
                i1: (i0 + 1).min(last),
                w0: WEIGHT_ONE - w1,
                w1,
            }
        })
        .collect()
}

/// Letterboxes one frame into `out`, a `3 x spec.height x spec.width` planar tensor.
///
/// `frame` is the whole frame buffer laid out as `geometry` says (it may be longer). Any
/// byte content is accepted (the ring may be overwritten while this runs; the caller
/// discards the result then). Allocates its working rows; a worker that letterboxes many
/// frames keeps a [`Scratch`] instead.
pub fn letterbox_into(
    frame: &[u8],
    geometry: &FrameGeometry,
    spec: &InputSpec,
    out: &mut [f32],
) -> Result<Letterbox, PreprocessError> {
    Scratch::default().letterbox_into(frame, geometry, spec, out)
}

/// Working memory of the letterbox, kept by each model instance so that preprocessing a
/// frame allocates nothing once the first frame of a given size was seen: the resize taps
/// (cached per source size and input size), the vertical-sum row and the converted YUV
/// rows. Results are identical to [`letterbox_into`].
#[derive(Debug, Default)]
pub struct Scratch {
    /// `(src w, src h, new w, new h)` the taps were computed for.
    taps_for: Option<(u32, u32, u32, u32)>,
    cols: Vec<Tap>,
    rows: Vec<Tap>,
    vsum: Vec<u32>,
    converted: ConvertedRows,
}

impl Scratch {
    /// [`letterbox_into`] with reused buffers.
    pub fn letterbox_into(
        &mut self,
        frame: &[u8],
        geometry: &FrameGeometry,
        spec: &InputSpec,
        out: &mut [f32],
    ) -> Result<Letterbox, PreprocessError> {
        geometry.validate()?;
        if frame.len() < geometry.frame_size as usize {
            return Err(PreprocessError::FrameTooShort {
                len: frame.len(),
                need: geometry.frame_size as usize,
            });
        }
        let (w, h) = (spec.width as usize, spec.height as usize);
        let plane = w * h;
        if out.len() != 3 * plane {
            return Err(PreprocessError::OutputSize {
                len: out.len(),
                need: 3 * plane,
            });
        }
        let lb = Letterbox::new(geometry.width, geometry.height, spec);
        let divisor = spec.divisor;
        let (c0, rest) = out.split_at_mut(plane);
        let (c1, c2) = rest.split_at_mut(plane);
        // Output planes in tensor order; the kernels write (r, g, b).
        let [r_out, g_out, b_out]: [&mut [f32]; 3] = match spec.order {
            ChannelOrder::Rgb => [c0, c1, c2],
            ChannelOrder::Bgr => [c2, c1, c0],
        };
        let pad = f32::from(spec.pad_value) / divisor;
        for p in [&mut *r_out, &mut *g_out, &mut *b_out] {
            fill_padding(p, &lb, w, h, pad);
        }

        let key = (geometry.width, geometry.height, lb.new_width, lb.new_height);
        if self.taps_for != Some(key) {
            self.cols = axis_taps(geometry.width, lb.new_width);
            self.rows = axis_taps(geometry.height, lb.new_height);
            self.taps_for = Some(key);
        }
        let width = geometry.width as usize;
        self.vsum.resize(3 * width, 0);
        self.converted.reset(width);
        let job = Resample {
            source: Source::new(frame, geometry, &mut self.converted),
            cols: &self.cols,
            rows: &self.rows,
            vsum: &mut self.vsum,
            divisor,
            row_start: lb.pad_top as usize * w + lb.pad_left as usize,
            row_pitch: w,
        };
        job.run([r_out, g_out, b_out]);
        Ok(lb)
    }
}

/// The resampling of one frame into the image rectangle of the three planes.
struct Resample<'a> {
    source: Source<'a>,
    cols: &'a [Tap],
    rows: &'a [Tap],
    /// The vertical sums of one output row (3 x source width).
    vsum: &'a mut [u32],
    divisor: f32,
    /// Index of the rectangle's first pixel in a plane.
    row_start: usize,
    /// Plane width.
    row_pitch: usize,
}

impl Resample<'_> {
    /// Runs the kernel, compiled for AVX2 when the CPU has it (same results: the
    /// arithmetic is exact integer math and one IEEE division).
    fn run(self, planes: [&mut [f32]; 3]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above; that is the only
            // requirement of calling a `#[target_feature(enable = "avx2")]` function.
            unsafe { self.run_avx2(planes) };
            return;
        }
        self.run_generic(planes);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(self, planes: [&mut [f32]; 3]) {
        self.body(planes);
    }

    fn run_generic(self, planes: [&mut [f32]; 3]) {
        self.body(planes);
    }

    #[inline(always)]
    fn body(mut self, planes: [&mut [f32]; 3]) {
        let n = self.cols.len();
        // `v as f32 / divisor` for every 8-bit value: a table lookup instead of a division.
        let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / self.divisor);
        let vsum = &mut self.vsum[..self.source.width() * 3];
        let [r_out, g_out, b_out] = planes;
        for (dy, t) in self.rows.iter().enumerate() {
            // Vertical first (contiguous, vectorises), then the horizontal taps.
            let layout = self.source.blend_rows(t, vsum);
            let o = self.row_start + dy * self.row_pitch;
            for (c, plane) in [&mut *r_out, &mut *g_out, &mut *b_out]
                .into_iter()
                .enumerate()
            {
                let (base, step) = layout.channel(c);
                horizontal(vsum, base, step, self.cols, &lut, &mut plane[o..o + n]);
            }
        }
    }
}

/// The horizontal half of the blend for one channel, rounded and normalised.
#[inline(always)]
fn horizontal(
    vsum: &[u32],
    base: usize,
    step: usize,
    cols: &[Tap],
    lut: &[f32; 256],
    out: &mut [f32],
) {
    for (v, tap) in out.iter_mut().zip(cols) {
        let a = vsum[base + tap.i0 * step];
        let b = vsum[base + tap.i1 * step];
        // At most 2048 * (2048 * 255) + 2^21 < 2^32; the result is 0..=255.
        let px = (tap.w0 * a + tap.w1 * b + BLEND_ROUND) >> BLEND_SHIFT;
        *v = lut[px as usize & 255];
    }
}

/// Writes the padding value everywhere outside the image rectangle of one plane.
fn fill_padding(plane: &mut [f32], lb: &Letterbox, w: usize, h: usize, pad: f32) {
    let top = lb.pad_top as usize;
    let bottom = (top + lb.new_height as usize).min(h);
    let left = lb.pad_left as usize;
    let right = (left + lb.new_width as usize).min(w);
    plane[..top * w].fill(pad);
    plane[bottom * w..].fill(pad);
    for row in plane[top * w..bottom * w].chunks_exact_mut(w) {
        row[..left].fill(pad);
        row[right..].fill(pad);
    }
}

/// Where channel `c` (R, G, B order) of pixel `x` lies in a vertical-sum row:
/// `base(c) + x * step`.
#[derive(Debug, Clone, Copy)]
enum SumLayout {
    /// Interleaved as in the packed source: `order[c] + 3 x`.
    Packed([usize; 3]),
    /// Planar R, G, B blocks of `width`.
    Planar(usize),
}

impl SumLayout {
    fn channel(self, c: usize) -> (usize, usize) {
        match self {
            SumLayout::Packed(order) => (order[c], 3),
            SumLayout::Planar(width) => (c * width, 1),
        }
    }
}

/// `out[k] = w0 a[k] + w1 b[k]`: the vertical half of the bilinear blend.
#[inline(always)]
fn vertical(a: &[u8], b: &[u8], t: &Tap, out: &mut [u32]) {
    // Operands known to fit 16 bits (weights <= 2048) let the compiler use 16x16->32
    // multiplies, which baseline x86-64 (SSE2) has; it lacks 32-bit vector multiplies.
    let (w0, w1) = (u32::from(t.w0 as u16), u32::from(t.w1 as u16));
    for ((o, &pa), &pb) in out.iter_mut().zip(a).zip(b) {
        *o = w0 * u32::from(pa) + w1 * u32::from(pb);
    }
}

/// Source rows converted to planar 8-bit RGB; the two most recent are kept because
/// consecutive output rows share source rows.
#[derive(Debug, Default)]
struct ConvertedRows {
    rows: [usize; 2],
    rgb: [Vec<u8>; 2],
    terms: ChromaTerms,
}

impl ConvertedRows {
    /// Empties the cache for a frame `width` pixels wide (keeping the allocations).
    fn reset(&mut self, width: usize) {
        self.rows = [usize::MAX; 2];
        for v in &mut self.rgb {
            v.resize(3 * width, 0);
        }
        self.terms.reset(width);
    }

    /// Rows `ya` and `yb` as planar RGB, converting those not cached from `planes`.
    #[inline(always)]
    fn pair(&mut self, ya: usize, yb: usize, planes: &YuvPlanes<'_>) -> (&[u8], &[u8]) {
        let sa = match self.rows.iter().position(|&r| r == ya) {
            Some(s) => s,
            None => {
                // Keep the slot that holds `yb` if any.
                let s = usize::from(self.rows[0] == yb);
                planes.convert(ya, &mut self.terms, &mut self.rgb[s]);
                self.rows[s] = ya;
                s
            }
        };
        let sb = match self.rows.iter().position(|&r| r == yb) {
            Some(s) => s,
            None => {
                let s = 1 - sa;
                planes.convert(yb, &mut self.terms, &mut self.rgb[s]);
                self.rows[s] = yb;
                s
            }
        };
        (&self.rgb[sa], &self.rgb[sb])
    }
}

/// The planes of a 4:2:0 frame: I420 (`c_step` 1, separate U and V) or NV12 (`c_step`
/// 2, `v` is `u` shifted by one byte).
struct YuvPlanes<'a> {
    y: &'a [u8],
    y_stride: usize,
    u: &'a [u8],
    v: &'a [u8],
    c_stride: usize,
    c_step: usize,
    width: usize,
}

impl YuvPlanes<'_> {
    /// Converts source row `row` into planar RGB.
    #[inline(always)]
    fn convert(&self, row: usize, terms: &mut ChromaTerms, out: &mut [u8]) {
        let chroma_row = row >> 1;
        if terms.row != chroma_row {
            let c = chroma_row * self.c_stride;
            terms.fill(&self.u[c..], &self.v[c..], self.c_step, self.width);
            terms.row = chroma_row;
        }
        let yrow = &self.y[row * self.y_stride..][..self.width];
        convert_yuv_row(yrow, &terms.full, out);
    }
}

/// The chroma terms of one chroma row, spread to full width (R, G, B blocks of `width`),
/// kept for the next luma row: with 4:2:0 two luma rows share each chroma row.
#[derive(Debug, Default)]
struct ChromaTerms {
    /// The chroma row they are for (`usize::MAX`: none).
    row: usize,
    /// One term per chroma sample (R, G, B blocks of `width / 2` rounded up).
    half: Vec<i32>,
    /// Spread to one per pixel (R, G, B blocks of `width`).
    full: Vec<i32>,
}

impl ChromaTerms {
    fn reset(&mut self, width: usize) {
        self.row = usize::MAX;
        self.half.resize(3 * width.div_ceil(2), 0);
        self.full.resize(3 * width, 0);
    }

    /// Computes the terms of the chroma row whose samples start at `u[0]` and `v[0]`,
    /// `step` bytes apart. Two plain passes (terms per sample, then each sample's term
    /// written to its two pixels) that the compiler vectorises.
    #[inline(always)]
    fn fill(&mut self, u: &[u8], v: &[u8], step: usize, width: usize) {
        let cw = width.div_ceil(2);
        let (hr, rest) = self.half.split_at_mut(cw);
        let (hg, hb) = rest.split_at_mut(cw);
        let u = u.iter().step_by(step).take(cw);
        let v = v.iter().step_by(step).take(cw);
        for ((((r, g), b), &u), &v) in hr
            .iter_mut()
            .zip(hg.iter_mut())
            .zip(hb.iter_mut())
            .zip(u)
            .zip(v)
        {
            let [rc, gc, bc] = chroma_terms(i32::from(u) - 128, i32::from(v) - 128);
            *r = rc;
            *g = gc;
            *b = bc;
        }
        let half = [&*hr, &*hg, &*hb];
        for (plane, h) in self.full.chunks_exact_mut(width).zip(half) {
            let mut pairs = plane.chunks_exact_mut(2);
            for (pair, &t) in (&mut pairs).zip(h) {
                pair[0] = t;
                pair[1] = t;
            }
            // An odd width's last pixel has a chroma sample of its own.
            if let ([last], Some(&t)) = (pairs.into_remainder(), h.last()) {
                *last = t;
            }
        }
    }
}

/// Where the source pixels are.
enum Source<'a> {
    /// Packed 24-bit: byte positions of R, G, B within a pixel.
    Packed {
        data: &'a [u8],
        stride: usize,
        order: [usize; 3],
        width: usize,
    },
    /// 4:2:0 YUV with its converted-row cache.
    Yuv {
        planes: YuvPlanes<'a>,
        converted: &'a mut ConvertedRows,
    },
}

impl<'a> Source<'a> {
    /// `converted` must have been reset for this frame's width.
    fn new(frame: &'a [u8], g: &FrameGeometry, converted: &'a mut ConvertedRows) -> Self {
        let off = |i: usize| g.offsets[i] as usize;
        let width = g.width as usize;
        match g.format {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Source::Packed {
                data: &frame[off(0)..],
                stride: g.strides[0] as usize,
                order: if g.format == PixelFormat::Rgb24 {
                    [0, 1, 2]
                } else {
                    [2, 1, 0]
                },
                width,
            },
            PixelFormat::Nv12 | PixelFormat::I420 => {
                let nv12 = g.format == PixelFormat::Nv12;
                Source::Yuv {
                    planes: YuvPlanes {
                        y: &frame[off(0)..],
                        y_stride: g.strides[0] as usize,
                        u: &frame[off(1)..],
                        v: if nv12 {
                            &frame[off(1) + 1..]
                        } else {
                            &frame[off(2)..]
                        },
                        c_stride: g.strides[1] as usize,
                        c_step: if nv12 { 2 } else { 1 },
                        width,
                    },
                    converted,
                }
            }
        }
    }

    fn width(&self) -> usize {
        match self {
            Source::Packed { width, .. } => *width,
            Source::Yuv { planes, .. } => planes.width,
        }
    }

    /// Vertical blend of the two source rows of tap `t` into `out` (3 x width sums);
    /// returns how the channels are laid out in it.
    #[inline(always)]
    fn blend_rows(&mut self, t: &Tap, out: &mut [u32]) -> SumLayout {
        match self {
            Source::Packed {
                data,
                stride,
                order,
                width,
            } => {
                let len = 3 * *width;
                let a = &data[t.i0 * *stride..][..len];
                let b = &data[t.i1 * *stride..][..len];
                vertical(a, b, t, &mut out[..len]);
                SumLayout::Packed(*order)
            }
            Source::Yuv { planes, converted } => {
                let (a, b) = converted.pair(t.i0, t.i1, planes);
                vertical(a, b, t, &mut out[..3 * planes.width]);
                SumLayout::Planar(planes.width)
            }
        }
    }
}

/// Converts one row of 4:2:0 YUV (`yrow`) to planar 8-bit R, G, B rows (`out`: three
/// blocks of the row width), given the row's chroma terms spread to full width (`terms`,
/// see [`ChromaTerms`]): a plain element-wise loop the compiler vectorises.
#[inline(always)]
fn convert_yuv_row(yrow: &[u8], terms: &[i32], out: &mut [u8]) {
    let width = yrow.len();
    for (plane, t) in out.chunks_exact_mut(width).zip(terms.chunks_exact(width)) {
        for ((o, &y), &t) in plane.iter_mut().zip(yrow).zip(t) {
            let c = 298 * (i32::from(y) - 16) + 128;
            *o = ((c + t) >> 8).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::family::Family;
    use proptest::prelude::*;

    fn spec(family: Family, w: u32, h: u32) -> InputSpec {
        family.input_spec(w, h)
    }

    fn raw_spec(w: u32, h: u32, placement: Placement) -> InputSpec {
        InputSpec {
            width: w,
            height: h,
            order: ChannelOrder::Rgb,
            divisor: 1.0,
            pad_value: 114,
            placement,
        }
    }

    #[test]
    fn centred_letterbox_of_540p() {
        let lb = Letterbox::new(960, 540, &spec(Family::Yolov8, 640, 640));
        assert_eq!((lb.new_width, lb.new_height), (640, 360));
        assert_eq!((lb.pad_left, lb.pad_top), (0, 140));
        assert!((lb.gain - 2.0 / 3.0).abs() < 1e-6);
        let (x, y) = lb.to_source(320.0, 140.0);
        assert!((x - 480.0).abs() < 1e-3 && y.abs() < 1e-3);
        // Portrait: padding left and right.
        let lb = Letterbox::new(540, 960, &spec(Family::Yolov8, 640, 640));
        assert_eq!(
            (lb.new_width, lb.new_height, lb.pad_left, lb.pad_top),
            (360, 640, 140, 0)
        );
        // Odd padding: Ultralytics puts the smaller half first.
        let lb = Letterbox::new(100, 33, &spec(Family::Yolov8, 64, 64));
        assert_eq!((lb.new_width, lb.new_height), (64, 21));
        assert_eq!(lb.pad_top, 21); // (64-21)/2 = 21.5 -> round(21.4) = 21
    }

    #[test]
    fn top_left_letterbox_of_540p() {
        let lb = Letterbox::new(960, 540, &spec(Family::Yolox, 416, 416));
        assert_eq!((lb.new_width, lb.new_height), (416, 234));
        assert_eq!((lb.pad_left, lb.pad_top), (0, 0));
        let (x, y) = lb.to_source(416.0, 234.0);
        assert!((x - 960.0).abs() < 1e-2 && (y - 540.0).abs() < 1e-2);
    }

    fn tap(i0: usize, i1: usize, w1: u32) -> Tap {
        Tap {
            i0,
            i1,
            w0: 2048 - w1,
            w1,
        }
    }

    #[test]
    fn taps_match_opencv_convention() {
        // 2x downscale: centres fall exactly between two source pixels.
        assert_eq!(axis_taps(4, 2), [tap(0, 1, 1024), tap(2, 3, 1024)]);
        // 2x upscale: the ends clamp at the edge.
        assert_eq!(
            axis_taps(2, 4),
            [tap(0, 1, 0), tap(0, 1, 512), tap(0, 1, 1536), tap(1, 1, 0)]
        );
        // 1.5x downscale as for 960 -> 640: fractions 0.25 and 0.75.
        let t = axis_taps(960, 640);
        assert_eq!(&t[..3], [tap(0, 1, 512), tap(1, 2, 1536), tap(3, 4, 512)]);
        assert_eq!(t[639], tap(958, 959, 1536));
        // Identity.
        assert!(axis_taps(5, 5)
            .iter()
            .enumerate()
            .all(|(i, t)| *t == tap(i, (i + 1).min(4), 0)));
    }

    #[test]
    fn bt601_known_values() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(126, 128, 128), [128, 128, 128]);
        // 100% colour bars (BT.601 limited range), within one level.
        let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 1);
        assert!(near(yuv_to_rgb(81, 90, 240), [255, 0, 0]));
        assert!(near(yuv_to_rgb(145, 54, 34), [0, 255, 0]));
        assert!(near(yuv_to_rgb(41, 240, 110), [0, 0, 255]));
        assert!(near(yuv_to_rgb(210, 16, 146), [255, 255, 0]));
        // Out-of-gamut input clips instead of wrapping.
        assert_eq!(yuv_to_rgb(255, 255, 255)[0], 255);
        assert_eq!(yuv_to_rgb(0, 0, 0)[0], 0);
    }

    /// A 4x2 NV12 frame of two colour blocks, letterboxed at scale 1 into a 4x4 input:
    /// exact pixel values, padding above and below.
    #[test]
    fn nv12_identity_letterbox() {
        let g = FrameGeometry::packed(4, 2, PixelFormat::Nv12).unwrap();
        // Left 2x2 block red (81, 90, 240), right block white (235, neutral chroma).
        let frame = [81, 81, 235, 235, 81, 81, 235, 235, 90, 240, 128, 128];
        let s = raw_spec(4, 4, Placement::Centre);
        let mut out = vec![0.0; 48];
        let lb = letterbox_into(&frame, &g, &s, &mut out).unwrap();
        assert_eq!((lb.new_width, lb.new_height, lb.pad_top), (4, 2, 1));
        let px = |c: usize, y: usize, x: usize| out[c * 16 + y * 4 + x];
        for c in 0..3 {
            for x in 0..4 {
                assert_eq!(px(c, 0, x), 114.0);
                assert_eq!(px(c, 3, x), 114.0);
            }
        }
        let red = yuv_to_rgb(81, 90, 240).map(f32::from);
        for y in 1..3 {
            for (c, &v) in red.iter().enumerate() {
                assert_eq!(px(c, y, 0), v);
                assert_eq!(px(c, y, 1), v);
                assert_eq!(px(c, y, 3), 255.0);
            }
        }
    }

    #[test]
    fn blend_is_rounded_fixed_point() {
        // One row 0, 255 resized to 4 columns: weights 0, 512/2048, 1536/2048, 0.
        let g = FrameGeometry::packed(2, 1, PixelFormat::Rgb24).unwrap();
        let frame = [0, 0, 0, 255, 255, 255];
        let s = raw_spec(4, 2, Placement::TopLeft);
        let mut out = vec![0.0; 24];
        let lb = letterbox_into(&frame, &g, &s, &mut out).unwrap();
        assert_eq!((lb.new_width, lb.new_height), (4, 2));
        // 255 * 512 / 2048 = 63.75 -> 64; 255 * 1536 / 2048 = 191.25 -> 191.
        assert_eq!(&out[..4], [0.0, 64.0, 191.0, 255.0]);
    }

    /// The same picture as NV12, I420, RGB24 and BGR24.
    struct Picture {
        nv12: Vec<u8>,
        i420: Vec<u8>,
        rgb: Vec<u8>,
        bgr: Vec<u8>,
    }

    fn yuv_picture(w: u32, h: u32, seed: u32) -> Picture {
        let n = (w * h) as usize;
        let yp: Vec<u8> = (0..w * h).map(|i| ((i * 37 + seed) % 256) as u8).collect();
        let up: Vec<u8> = (0..w * h / 4)
            .map(|i| ((i * 53 + seed * 7) % 256) as u8)
            .collect();
        let vp: Vec<u8> = (0..w * h / 4)
            .map(|i| ((i * 29 + seed * 3) % 256) as u8)
            .collect();
        let mut i420 = yp.clone();
        i420.extend(&up);
        i420.extend(&vp);
        let mut nv12 = yp.clone();
        for (u, v) in up.iter().zip(&vp) {
            nv12.extend([*u, *v]);
        }
        let (mut rgb, mut bgr) = (Vec::with_capacity(3 * n), Vec::with_capacity(3 * n));
        for y in 0..h as usize {
            for x in 0..w as usize {
                let c = (y / 2) * (w as usize / 2) + x / 2;
                let p = yuv_to_rgb(yp[y * w as usize + x], up[c], vp[c]);
                rgb.extend(p);
                bgr.extend([p[2], p[1], p[0]]);
            }
        }
        Picture {
            nv12,
            i420,
            rgb,
            bgr,
        }
    }

    /// Every format of the same picture gives exactly the same tensor, resized or not:
    /// YUV is converted per source pixel before resampling.
    #[test]
    fn formats_agree_exactly() {
        for (w, h, iw, ih) in [(8, 6, 8, 8), (16, 10, 12, 12), (6, 4, 13, 9)] {
            let Picture {
                nv12,
                i420,
                rgb,
                bgr,
            } = yuv_picture(w, h, w + h);
            for family in [Family::Yolov8, Family::Yolox] {
                let s = spec(family, iw, ih);
                let run = |bytes: &[u8], f: PixelFormat| {
                    let g = FrameGeometry::packed(w, h, f).unwrap();
                    let mut out = vec![0.0; (3 * iw * ih) as usize];
                    letterbox_into(bytes, &g, &s, &mut out).unwrap();
                    out
                };
                let a = run(&nv12, PixelFormat::Nv12);
                assert_eq!(a, run(&i420, PixelFormat::I420));
                assert_eq!(a, run(&rgb, PixelFormat::Rgb24));
                assert_eq!(a, run(&bgr, PixelFormat::Bgr24));
            }
        }
    }

    /// One reused scratch, fed frames of changing size, format and input size in turn,
    /// gives exactly what a fresh one gives each time (no state leaks between frames).
    #[test]
    fn reused_scratch_equals_fresh() {
        let mut scratch = Scratch::default();
        let cases = [
            (16, 10, 12, 12),
            (8, 6, 8, 8),
            (16, 10, 12, 12),
            (6, 4, 13, 9),
        ];
        for (i, (w, h, iw, ih)) in cases.into_iter().enumerate() {
            let pic = yuv_picture(w, h, i as u32);
            for (bytes, f) in [
                (&pic.nv12, PixelFormat::Nv12),
                (&pic.rgb, PixelFormat::Rgb24),
                (&pic.i420, PixelFormat::I420),
            ] {
                let g = FrameGeometry::packed(w, h, f).unwrap();
                let s = spec(Family::Yolov8, iw, ih);
                let mut fresh = vec![0.0; (3 * iw * ih) as usize];
                let mut reused = vec![1.0; (3 * iw * ih) as usize];
                let a = letterbox_into(bytes, &g, &s, &mut fresh).unwrap();
                let b = scratch.letterbox_into(bytes, &g, &s, &mut reused).unwrap();
                assert_eq!((a, &fresh), (b, &reused), "case {i} {f}");
            }
        }
    }

    /// The separable row-cached kernel equals the direct per-pixel definition.
    #[test]
    fn separable_equals_direct_definition() {
        let (w, h) = (30u32, 22u32);
        let Picture { nv12, rgb, .. } = yuv_picture(w, h, 5);
        let g = FrameGeometry::packed(w, h, PixelFormat::Nv12).unwrap();
        assert_eq!(direct_mismatch(&nv12, &g, &rgb, 17, 17), None);
    }

    /// The first tensor value (`(x, y, channel)`, got, want) where the letterbox of
    /// `frame` into an `iw` x `ih` input differs from the module's definition applied
    /// pixel by pixel to `rgb` (the frame converted per source pixel), or None.
    fn direct_mismatch(
        frame: &[u8],
        g: &FrameGeometry,
        rgb: &[u8],
        iw: u32,
        ih: u32,
    ) -> Option<((usize, usize, usize), f32, f32)> {
        let s = raw_spec(iw, ih, Placement::Centre);
        let mut out = vec![0.0; (3 * iw * ih) as usize];
        let lb = letterbox_into(frame, g, &s, &mut out).unwrap();
        let cols = axis_taps(g.width, lb.new_width);
        let rows = axis_taps(g.height, lb.new_height);
        let (w, plane) = (g.width as usize, (iw * ih) as usize);
        for (dy, ty) in rows.iter().enumerate() {
            for (dx, tx) in cols.iter().enumerate() {
                for c in 0..3 {
                    let p = |y: usize, x: usize| rgb[(y * w + x) * 3 + c] as u32;
                    let top = tx.w0 * p(ty.i0, tx.i0) + tx.w1 * p(ty.i0, tx.i1);
                    let bot = tx.w0 * p(ty.i1, tx.i0) + tx.w1 * p(ty.i1, tx.i1);
                    let want = ((ty.w0 * top + ty.w1 * bot + (1 << 21)) >> 22) as f32;
                    let (oy, ox) = (dy + lb.pad_top as usize, dx + lb.pad_left as usize);
                    let got = out[c * plane + oy * iw as usize + ox];
                    if got != want {
                        return Some(((dx, dy, c), got, want));
                    }
                }
            }
        }
        None
    }

    #[test]
    fn normalisation_divides() {
        let g = FrameGeometry::packed(2, 2, PixelFormat::Rgb24).unwrap();
        let frame = [7u8; 12];
        let s = spec(Family::Yolov8, 2, 2);
        let mut out = vec![0.0; 12];
        letterbox_into(&frame, &g, &s, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 7.0f32 / 255.0f32));
    }

    #[test]
    fn padded_strides_are_honoured() {
        let mut g = FrameGeometry::packed(4, 2, PixelFormat::Rgb24).unwrap();
        g.strides[0] = 16;
        g.frame_size = 16 * 2;
        let mut frame = vec![255u8; 32]; // padding bytes are 255, pixels 10
        for y in 0..2 {
            frame[y * 16..y * 16 + 12].fill(10);
        }
        let s = raw_spec(4, 2, Placement::TopLeft);
        let mut out = vec![0.0; 24];
        letterbox_into(&frame, &g, &s, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 10.0), "{out:?}");
    }

    #[test]
    fn rejects_short_frames_and_outputs() {
        let g = FrameGeometry::packed(4, 2, PixelFormat::Nv12).unwrap();
        let s = spec(Family::Yolov8, 4, 4);
        let mut out = vec![0.0; 48];
        assert_eq!(
            letterbox_into(&[0; 11], &g, &s, &mut out),
            Err(PreprocessError::FrameTooShort { len: 11, need: 12 })
        );
        assert!(matches!(
            letterbox_into(&[0; 12], &g, &s, &mut out[..47]),
            Err(PreprocessError::OutputSize { .. })
        ));
    }

    proptest! {
        /// Any valid geometry and input size: no panic, padding and image cover the
        /// input, values stay in range.
        #[test]
        fn any_geometry_is_safe(w in 1u32..64, h in 1u32..64, iw in 1u32..48, ih in 1u32..48,
                                fmt in 0usize..4, yolox in any::<bool>(), seed in any::<u8>()) {
            let format = PixelFormat::ALL[fmt];
            let (w, h) = if format.needs_even_dimensions() { (w * 2, h * 2) } else { (w, h) };
            let g = FrameGeometry::packed(w, h, format).unwrap();
            let frame: Vec<u8> = (0..g.frame_size).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let family = if yolox { Family::Yolox } else { Family::Yolov8 };
            let s = spec(family, iw, ih);
            let mut out = vec![f32::NAN; (3 * iw * ih) as usize];
            let lb = letterbox_into(&frame, &g, &s, &mut out).unwrap();
            prop_assert!(lb.new_width <= iw && lb.new_height <= ih);
            prop_assert!(lb.pad_left + lb.new_width <= iw && lb.pad_top + lb.new_height <= ih);
            let max = 255.0 / s.divisor;
            prop_assert!(out.iter().all(|v| (0.0..=max).contains(v)));
        }

        /// Any 4:2:0 size, scaled up or down: NV12 and I420 give exactly the definition
        /// applied pixel by pixel (so the per-chroma-row caching changes nothing).
        #[test]
        fn yuv_letterbox_is_the_definition(hw in 1u32..40, hh in 1u32..40, iw in 1u32..48,
                                           ih in 1u32..48, seed in 0u32..256) {
            let (w, h) = (hw * 2, hh * 2);
            let Picture { nv12, i420, rgb, .. } = yuv_picture(w, h, seed);
            for (frame, format) in [(&nv12, PixelFormat::Nv12), (&i420, PixelFormat::I420)] {
                let g = FrameGeometry::packed(w, h, format).unwrap();
                prop_assert_eq!(direct_mismatch(frame, &g, &rgb, iw, ih), None, "{:?}", format);
            }
        }
    }
}
