//! Drawing boxes, labels, lines and zones into the encoder's input buffer.
//!
//! The buffer is what the encoder reads ([`Layout`]): one plane of packed 3-byte RGB or
//! BGR pixels, or full-range (JFIF) YCbCr 4:2:0 in three planes, where a colour's
//! chroma covers each 2x2 block the primitive touches. Colours are given as RGB and
//! converted once per primitive. Every primitive clips to the frame, so a box that
//! sticks out of the picture, a degenerate box or a rule far outside it draws what is
//! visible and never indexes out of bounds. Coordinates are `i64` pixels (normalised
//! inputs are scaled with saturating casts, so NaN and infinities cannot panic).

/// How the 3 bytes of a pixel are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// R, G, B.
    Rgb,
    /// B, G, R.
    Bgr,
    /// Full-range Y, Cb, Cr (JFIF, BT.601 matrix), 4:2:0 planar: the Y plane
    /// (`width x height`), then Cb and Cr (`ceil(width / 2) x ceil(height / 2)` each),
    /// no padding.
    I420,
}

impl Layout {
    /// Bytes of a `width x height` frame in this layout; `None` on overflow.
    pub fn frame_len(self, width: usize, height: usize) -> Option<usize> {
        match self {
            Layout::Rgb | Layout::Bgr => width.checked_mul(height)?.checked_mul(3),
            Layout::I420 => {
                let chroma = width.div_ceil(2).checked_mul(height.div_ceil(2))?;
                width
                    .checked_mul(height)?
                    .checked_add(chroma.checked_mul(2)?)
            }
        }
    }
}

/// An RGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// Colour of counting lines.
pub const LINE_COLOUR: Rgb = Rgb(255, 230, 0);
/// Colour of zone outlines.
pub const ZONE_COLOUR: Rgb = Rgb(0, 200, 255);
/// Colour of label text.
pub const TEXT_COLOUR: Rgb = Rgb(0, 0, 0);

/// Box colours, by class id modulo their number: saturated, far from each other.
pub const PALETTE: [Rgb; 8] = [
    Rgb(255, 40, 40),
    Rgb(40, 220, 40),
    Rgb(60, 90, 255),
    Rgb(255, 140, 0),
    Rgb(220, 0, 220),
    Rgb(0, 220, 200),
    Rgb(160, 255, 0),
    Rgb(255, 90, 160),
];

/// The box colour of class `class_id`.
pub fn class_colour(class_id: u32) -> Rgb {
    PALETTE[class_id as usize % PALETTE.len()]
}

/// Stroke width in pixels for a frame `height` pixels high: 4 at 540p, 8 at 1080p, at
/// least 2 (thick enough to survive JPEG's 2x2 chroma subsampling).
pub fn thickness(height: usize) -> i64 {
    (height as i64 / 135).clamp(2, 8)
}

/// Scale of the 5x7 font for a frame `height` pixels high: 2 at 540p, 4 at 1080p.
pub fn text_scale(height: usize) -> i64 {
    (height as i64 / 270).clamp(1, 4)
}

impl Rgb {
    /// The 3 bytes of this colour in `layout`.
    pub fn bytes(self, layout: Layout) -> [u8; 3] {
        let Rgb(r, g, b) = self;
        match layout {
            Layout::Rgb => [r, g, b],
            Layout::Bgr => [b, g, r],
            Layout::I420 => {
                let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
                let y = 0.299 * r + 0.587 * g + 0.114 * b;
                let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
                let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
                // `as u8` saturates; the values are in range anyway.
                [y.round() as u8, cb.round() as u8, cr.round() as u8]
            }
        }
    }
}

/// A frame being drawn on: `width x height` pixels in a [`Layout`].
#[derive(Debug)]
pub struct Canvas<'a> {
    px: &'a mut [u8],
    width: usize,
    height: usize,
    layout: Layout,
}

/// Why a buffer cannot be drawn on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanvasError {
    /// The buffer is not [`Layout::frame_len`] bytes.
    #[error("buffer of {len} bytes does not hold a {width}x{height} frame in its layout")]
    Size {
        /// Buffer length.
        len: usize,
        /// Width asked.
        width: usize,
        /// Height asked.
        height: usize,
    },
}

impl<'a> Canvas<'a> {
    /// A canvas over `px`, which must hold exactly one `width x height` frame in
    /// `layout` ([`Layout::frame_len`]).
    pub fn new(
        px: &'a mut [u8],
        width: usize,
        height: usize,
        layout: Layout,
    ) -> Result<Self, CanvasError> {
        if layout.frame_len(width, height) != Some(px.len()) {
            return Err(CanvasError::Size {
                len: px.len(),
                width,
                height,
            });
        }
        Ok(Self {
            px,
            width,
            height,
            layout,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The 3 bytes of pixel (x, y), `None` outside.
    pub fn pixel(&self, x: i64, y: i64) -> Option<[u8; 3]> {
        let (x, y) = (usize::try_from(x).ok()?, usize::try_from(y).ok()?);
        if x >= self.width || y >= self.height {
            return None;
        }
        if self.layout == Layout::I420 {
            let (luma, cb, cr) = self.planes();
            let c = (y / 2) * self.width.div_ceil(2) + x / 2;
            return Some([luma[y * self.width + x], cb[c], cr[c]]);
        }
        let i = (y * self.width + x) * 3;
        Some([self.px[i], self.px[i + 1], self.px[i + 2]])
    }

    /// The Y, Cb and Cr planes of an [`Layout::I420`] canvas (the size was checked by
    /// [`Canvas::new`]).
    fn planes(&self) -> (&[u8], &[u8], &[u8]) {
        let (luma, chroma) = self.px.split_at(self.width * self.height);
        let (cb, cr) = chroma.split_at(chroma.len() / 2);
        (luma, cb, cr)
    }

    /// Fills the half-open rectangle `[x0, x1) x [y0, y1)`, clipped to the frame.
    pub fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, colour: Rgb) {
        let c = colour.bytes(self.layout);
        self.fill_raw(x0, y0, x1, y1, c);
    }

    fn fill_raw(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        let clip = |v: i64, max: usize| v.clamp(0, max as i64) as usize;
        let (x0, x1) = (clip(x0, self.width), clip(x1, self.width));
        let (y0, y1) = (clip(y0, self.height), clip(y1, self.height));
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        if self.layout == Layout::I420 {
            let w = self.width;
            let (luma, chroma) = self.px.split_at_mut(w * self.height);
            for row in luma.chunks_exact_mut(w).take(y1).skip(y0) {
                row[x0..x1].fill(c[0]);
            }
            // Every 2x2 chroma block the rectangle touches takes its colour.
            let cw = w.div_ceil(2);
            let (cb, cr) = chroma.split_at_mut(chroma.len() / 2);
            let (cx0, cx1, cy0, cy1) = (x0 / 2, x1.div_ceil(2), y0 / 2, y1.div_ceil(2));
            for (plane, v) in [(cb, c[1]), (cr, c[2])] {
                for row in plane.chunks_exact_mut(cw).take(cy1).skip(cy0) {
                    row[cx0..cx1].fill(v);
                }
            }
            return;
        }
        for y in y0..y1 {
            let row = &mut self.px[(y * self.width + x0) * 3..(y * self.width + x1) * 3];
            for p in row.chunks_exact_mut(3) {
                p.copy_from_slice(&c);
            }
        }
    }

    /// The outline of the box with corners (x0, y0) and (x1, y1) (either order), a
    /// stroke `t` pixels wide centred on each edge.
    pub fn stroke_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, t: i64, colour: Rgb) {
        let c = colour.bytes(self.layout);
        let (x0, x1) = (x0.min(x1), x0.max(x1));
        let (y0, y1) = (y0.min(y1), y0.max(y1));
        let t = t.max(1);
        let (a, b) = (t / 2, t - t / 2);
        let (ox0, ox1, oy0, oy1) = (
            x0.saturating_sub(a),
            x1.saturating_add(b),
            y0.saturating_sub(a),
            y1.saturating_add(b),
        );
        self.fill_raw(ox0, oy0, ox1, y0.saturating_add(b), c);
        self.fill_raw(ox0, y1.saturating_sub(a), ox1, oy1, c);
        self.fill_raw(ox0, oy0, x0.saturating_add(b), oy1, c);
        self.fill_raw(x1.saturating_sub(a), oy0, ox1, oy1, c);
    }

    /// A segment from `p` to `q`, `t` pixels wide (a square brush stamped along it).
    /// Only the part near the frame is walked, so a far-off segment costs nothing.
    pub fn line(&mut self, p: (i64, i64), q: (i64, i64), t: i64, colour: Rgb) {
        let c = colour.bytes(self.layout);
        let t = t.max(1);
        let m = t as f64;
        let bounds = (-m, -m, self.width as f64 + m, self.height as f64 + m);
        let Some(((x0, y0), (x1, y1))) =
            clip_segment((p.0 as f64, p.1 as f64), (q.0 as f64, q.1 as f64), bounds)
        else {
            return;
        };
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        let (a, b) = (t / 2, t - t / 2);
        for i in 0..=steps {
            let f = i as f64 / steps as f64;
            let x = (x0 + (x1 - x0) * f).round() as i64;
            let y = (y0 + (y1 - y0) * f).round() as i64;
            self.fill_raw(x - a, y - a, x + b, y + b, c);
        }
    }

    /// The closed outline of a polygon (at least 2 points; fewer draw a dot or nothing).
    pub fn polygon(&mut self, points: &[(i64, i64)], t: i64, colour: Rgb) {
        match points {
            [] => {}
            [p] => self.line(*p, *p, t, colour),
            _ => {
                for (i, p) in points.iter().enumerate() {
                    self.line(*p, points[(i + 1) % points.len()], t, colour);
                }
            }
        }
    }

    /// `text` in the 5x7 font at `scale`, top-left at (x, y), on a `bg` box with a
    /// margin of one font pixel. Characters without a glyph draw as `?`.
    pub fn label(&mut self, x: i64, y: i64, scale: i64, text: &str, fg: Rgb, bg: Rgb) {
        let s = scale.clamp(1, 64);
        let (x, y) = (x.clamp(-FAR, FAR), y.clamp(-FAR, FAR));
        // Labels are short; a longer text is cut rather than walked off the frame.
        let n = text.chars().count().min(256) as i64;
        let w = (n * 6 + 1) * s;
        let h = 9 * s;
        self.fill_rect(x, y, x + w, y + h, bg);
        let c = fg.bytes(self.layout);
        for (i, ch) in text.chars().take(256).enumerate() {
            let g = glyph(ch);
            let gx = x + (i as i64 * 6 + 1) * s;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let px = gx + col * s;
                        let py = y + (row as i64 + 1) * s;
                        self.fill_raw(px, py, px + s, py + s, c);
                    }
                }
            }
        }
    }
}

/// Liang-Barsky: the part of segment `p`-`q` inside `(xmin, ymin, xmax, ymax)`.
pub fn clip_segment(
    p: (f64, f64),
    q: (f64, f64),
    (xmin, ymin, xmax, ymax): (f64, f64, f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (pk, qk) in [
        (-dx, p.0 - xmin),
        (dx, xmax - p.0),
        (-dy, p.1 - ymin),
        (dy, ymax - p.1),
    ] {
        if pk == 0.0 {
            if qk < 0.0 {
                return None;
            }
        } else {
            let r = qk / pk;
            if pk < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    if t0 > t1 || !t0.is_finite() || !t1.is_finite() {
        return None;
    }
    Some((
        (p.0 + t0 * dx, p.1 + t0 * dy),
        (p.0 + t1 * dx, p.1 + t1 * dy),
    ))
}

/// Farthest a scaled coordinate goes from the frame: keeps every later sum in `i64`.
pub const FAR: i64 = 1 << 31;

/// A normalised coordinate (0..1) as a pixel index on an axis of `size` pixels,
/// clamped to `-FAR..=FAR` (NaN is 0).
pub fn to_px(v: f32, size: usize) -> i64 {
    ((f64::from(v) * size as f64).round() as i64).clamp(-FAR, FAR)
}

/// One detection to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxMark {
    /// `[x1, y1, x2, y2]`, normalised.
    pub bbox: [f32; 4],
    /// Class id (picks the colour).
    pub class_id: u32,
    /// Class name.
    pub class: String,
    /// Track id, when the analytics stage confirmed one.
    pub track: Option<u64>,
}

/// One counting line to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct LineMark {
    /// Rule name.
    pub name: String,
    /// First end, normalised.
    pub from: [f32; 2],
    /// Second end, normalised.
    pub to: [f32; 2],
}

/// One zone to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneMark {
    /// Rule name.
    pub name: String,
    /// Vertices, normalised.
    pub polygon: Vec<[f32; 2]>,
}

/// Everything drawn over a frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Detections of the latest result.
    pub boxes: Vec<BoxMark>,
    /// The camera's counting lines.
    pub lines: Vec<LineMark>,
    /// The camera's zones.
    pub zones: Vec<ZoneMark>,
}

impl BoxMark {
    /// `class #track`, or the class alone.
    pub fn text(&self) -> String {
        match self.track {
            Some(t) => format!("{} #{t}", self.class),
            None => self.class.clone(),
        }
    }
}

/// Draws `overlay` on `canvas`: zones, then lines (with a tick pointing to the `in`
/// side), then boxes with their labels on top.
pub fn draw_overlay(canvas: &mut Canvas<'_>, overlay: &Overlay) {
    let (w, h) = (canvas.width(), canvas.height());
    let t = thickness(h);
    let s = text_scale(h);
    let pt = |p: [f32; 2]| (to_px(p[0], w), to_px(p[1], h));
    for z in &overlay.zones {
        let pts: Vec<(i64, i64)> = z.polygon.iter().map(|p| pt(*p)).collect();
        canvas.polygon(&pts, t, ZONE_COLOUR);
        if let Some(&(x, y)) = pts.first() {
            canvas.label(x, y, s, &z.name, TEXT_COLOUR, ZONE_COLOUR);
        }
    }
    for l in &overlay.lines {
        let (a, b) = (pt(l.from), pt(l.to));
        canvas.line(a, b, t, LINE_COLOUR);
        // `in` is from the left of from->to to its right (y down): the tick points
        // right of the direction, i.e. (-dy, dx) in screen coordinates.
        let (dx, dy) = ((b.0 - a.0) as f64, (b.1 - a.1) as f64);
        let len = dx.hypot(dy);
        if len >= 1.0 {
            let k = (6 * t) as f64 / len;
            let mid = ((a.0 + b.0) / 2, (a.1 + b.1) / 2);
            let tip = (
                mid.0 + (-dy * k).round() as i64,
                mid.1 + (dx * k).round() as i64,
            );
            canvas.line(mid, tip, t, LINE_COLOUR);
        }
        canvas.label(a.0, a.1, s, &l.name, TEXT_COLOUR, LINE_COLOUR);
    }
    for b in &overlay.boxes {
        let colour = class_colour(b.class_id);
        let (x0, y0) = pt([b.bbox[0], b.bbox[1]]);
        let (x1, y1) = pt([b.bbox[2], b.bbox[3]]);
        canvas.stroke_rect(x0, y0, x1, y1, t, colour);
        // Above the box, or inside its top when there is no room above.
        let lh = 9 * s;
        let ly = if y0.min(y1) - t / 2 - lh >= 0 {
            y0.min(y1) - t / 2 - lh
        } else {
            y0.min(y1) + t
        };
        canvas.label(x0.min(x1) - t / 2, ly, s, &b.text(), TEXT_COLOUR, colour);
    }
}

/// The 5x7 glyph of `c` (rows top to bottom, bit 4 leftmost); lower case as upper.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: Rgb = Rgb(255, 0, 0);

    fn blank(w: usize, h: usize) -> Vec<u8> {
        vec![0; w * h * 3]
    }

    fn painted(c: &Canvas<'_>) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for y in 0..c.height() as i64 {
            for x in 0..c.width() as i64 {
                if c.pixel(x, y) != Some([0, 0, 0]) {
                    out.push((x, y));
                }
            }
        }
        out
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        let mut b = vec![0; 10];
        assert!(matches!(
            Canvas::new(&mut b, 2, 2, Layout::Rgb),
            Err(CanvasError::Size { len: 10, .. })
        ));
        let mut b = vec![0; 3];
        assert!(Canvas::new(&mut b, usize::MAX, 2, Layout::Rgb).is_err());
    }

    #[test]
    fn colours_follow_the_layout() {
        assert_eq!(Rgb(1, 2, 3).bytes(Layout::Rgb), [1, 2, 3]);
        assert_eq!(Rgb(1, 2, 3).bytes(Layout::Bgr), [3, 2, 1]);
        assert_eq!(Rgb(255, 255, 255).bytes(Layout::I420), [255, 128, 128]);
        assert_eq!(Rgb(0, 0, 0).bytes(Layout::I420), [0, 128, 128]);
        assert_eq!(Rgb(255, 0, 0).bytes(Layout::I420), [76, 85, 255]);
    }

    #[test]
    fn a_box_is_an_outline_centred_on_its_edges() {
        let mut b = blank(20, 20);
        let mut c = Canvas::new(&mut b, 20, 20, Layout::Rgb).unwrap();
        c.stroke_rect(5, 5, 15, 12, 2, RED);
        for (x, y) in [(5, 8), (4, 8), (15, 8), (10, 5), (10, 12), (14, 12)] {
            assert_eq!(c.pixel(x, y), Some([255, 0, 0]), "({x},{y})");
        }
        // Inside and outside stay untouched.
        for (x, y) in [(10, 8), (3, 8), (17, 8), (10, 3), (10, 14)] {
            assert_eq!(c.pixel(x, y), Some([0, 0, 0]), "({x},{y})");
        }
    }

    #[test]
    fn boxes_past_the_edges_are_clipped() {
        let mut b = blank(16, 10);
        let mut c = Canvas::new(&mut b, 16, 10, Layout::Bgr).unwrap();
        c.stroke_rect(-50, -50, 8, 5, 2, RED);
        c.stroke_rect(10, 3, 10_000, i64::MAX, 2, RED);
        c.stroke_rect(i64::MIN, i64::MIN, i64::MIN + 1, i64::MIN + 1, 3, RED);
        let p = painted(&c);
        assert!(p.contains(&(8, 0)) && p.contains(&(0, 5)) && p.contains(&(10, 9)));
        assert_eq!(c.pixel(8, 2), Some([0, 0, 255]));
        // Nothing painted off the visible edges of the clipped boxes.
        assert_eq!(c.pixel(2, 2), Some([0, 0, 0]));
        assert_eq!(c.pixel(13, 6), Some([0, 0, 0]));
    }

    #[test]
    fn thin_and_degenerate_boxes_draw_a_small_mark() {
        let mut b = blank(10, 10);
        let mut c = Canvas::new(&mut b, 10, 10, Layout::Rgb).unwrap();
        // Zero width and height: a t x t dot at the point.
        c.stroke_rect(4, 4, 4, 4, 2, RED);
        let p = painted(&c);
        assert_eq!(p, vec![(3, 3), (4, 3), (3, 4), (4, 4)]);
        // Corners given in the wrong order and a 1-pixel-wide box: a solid bar.
        let mut b = blank(10, 10);
        let mut c = Canvas::new(&mut b, 10, 10, Layout::Rgb).unwrap();
        c.stroke_rect(6, 8, 5, 1, 1, RED);
        assert_eq!(painted(&c).len(), 2 * 8);
        // NaN and infinite normalised coordinates do not panic.
        assert_eq!(to_px(f32::NAN, 10), 0);
        assert_eq!(to_px(f32::INFINITY, 10), FAR);
        let mut o = Overlay::default();
        o.boxes.push(BoxMark {
            bbox: [f32::NAN, f32::NEG_INFINITY, f32::INFINITY, 0.5],
            class_id: u32::MAX,
            class: "x".into(),
            track: Some(u64::MAX),
        });
        let mut b = vec![0; 11 * 9 + 2 * 6 * 5];
        draw_overlay(&mut Canvas::new(&mut b, 11, 9, Layout::I420).unwrap(), &o);
    }

    #[test]
    fn i420_rectangles_paint_luma_exactly_and_the_chroma_blocks_they_touch() {
        // 7x5: chroma planes are 4x3 (odd sizes round up).
        assert_eq!(Layout::I420.frame_len(7, 5), Some(35 + 2 * 12));
        let mut b = vec![0; 35 + 2 * 12];
        assert!(Canvas::new(&mut b[..58], 7, 5, Layout::I420).is_err());
        let mut c = Canvas::new(&mut b, 7, 5, Layout::I420).unwrap();
        c.fill_rect(1, 1, 3, 2, RED);
        let [y, cb, cr] = RED.bytes(Layout::I420);
        assert_eq!(c.pixel(1, 1), Some([y, cb, cr]));
        assert_eq!(c.pixel(2, 1), Some([y, cb, cr]));
        // (0, 0) shares a chroma block with (1, 1), not its luma.
        assert_eq!(c.pixel(0, 0), Some([0, cb, cr]));
        assert_eq!(c.pixel(3, 1), Some([0, cb, cr]));
        assert_eq!(c.pixel(4, 1), Some([0, 0, 0]));
        assert_eq!(c.pixel(1, 2), Some([0, 0, 0]));
        // A box at the odd right/bottom edge reaches the last, half-used chroma block.
        c.stroke_rect(6, 4, 6, 4, 1, RED);
        assert_eq!(c.pixel(6, 4), Some([y, cb, cr]));
        assert_eq!(c.pixel(7, 4), None);
        let (luma, chroma) = b.split_at(35);
        assert_eq!(luma.iter().filter(|&&v| v == y).count(), 3);
        assert_eq!(chroma[..12].iter().filter(|&&v| v == cb).count(), 3);
    }

    #[test]
    fn lines_are_clipped_and_far_segments_draw_nothing() {
        let mut b = blank(10, 10);
        let mut c = Canvas::new(&mut b, 10, 10, Layout::Rgb).unwrap();
        c.line((-100, 5), (100, 5), 1, RED);
        assert_eq!(painted(&c), (0..10).map(|x| (x, 5)).collect::<Vec<_>>());
        let mut b = blank(10, 10);
        let mut c = Canvas::new(&mut b, 10, 10, Layout::Rgb).unwrap();
        c.line((-1_000_000, -5), (1_000_000, -5), 3, RED);
        c.line((i64::MIN, i64::MIN), (i64::MAX, i64::MIN), 3, RED);
        assert!(painted(&c).is_empty());
        // A diagonal touches both corners.
        c.line((0, 0), (9, 9), 1, RED);
        let p = painted(&c);
        assert_eq!(p.len(), 10);
        assert!(p.contains(&(0, 0)) && p.contains(&(9, 9)));
        assert_eq!(
            clip_segment((5.0, 5.0), (5.0, 5.0), (0.0, 0.0, 10.0, 10.0)),
            Some(((5.0, 5.0), (5.0, 5.0)))
        );
        assert_eq!(
            clip_segment((20.0, 5.0), (20.0, 5.0), (0.0, 0.0, 10.0, 10.0)),
            None
        );
    }

    #[test]
    fn polygon_zones_are_closed_outlines() {
        let mut b = blank(20, 20);
        let mut c = Canvas::new(&mut b, 20, 20, Layout::Rgb).unwrap();
        c.polygon(&[(2, 2), (17, 2), (17, 17), (2, 17)], 1, RED);
        // The closing edge (2,17) -> (2,2) is drawn.
        for y in 2..=17 {
            assert_eq!(c.pixel(2, y), Some([255, 0, 0]), "y {y}");
            assert_eq!(c.pixel(17, y), Some([255, 0, 0]), "y {y}");
        }
        assert_eq!(painted(&c).len(), 4 * 15);
        assert_eq!(c.pixel(10, 10), Some([0, 0, 0]));
        // A concave polygon partly outside: every visible edge drawn, no panic.
        let mut b = blank(20, 20);
        let mut c = Canvas::new(&mut b, 20, 20, Layout::Rgb).unwrap();
        c.polygon(&[(-5, -5), (10, 10), (25, -5), (10, 30)], 1, RED);
        assert_eq!(c.pixel(10, 10), Some([255, 0, 0]));
        // Row 19 crosses the two lower edges near x = 5.3 and x = 14.7, nothing between.
        let row: Vec<i64> = (0..20)
            .filter(|&x| c.pixel(x, 19) == Some([255, 0, 0]))
            .collect();
        assert_eq!(row.len(), 2, "{row:?}");
        assert!(
            (4..=6).contains(&row[0]) && (14..=16).contains(&row[1]),
            "{row:?}"
        );
        // Degenerate polygons.
        c.polygon(&[], 2, RED);
        c.polygon(&[(1, 1)], 2, RED);
        assert_eq!(c.pixel(0, 0), Some([255, 0, 0]));
    }

    #[test]
    fn labels_render_glyphs_and_clip() {
        let mut b = blank(40, 12);
        let mut c = Canvas::new(&mut b, 40, 12, Layout::Rgb).unwrap();
        c.label(0, 0, 1, "1", Rgb(255, 255, 255), RED);
        // Background box 7x9, glyph '1' top row has its middle pixel set at (1+2, 1).
        assert_eq!(c.pixel(3, 1), Some([255, 255, 255]));
        assert_eq!(c.pixel(1, 1), Some([255, 0, 0]));
        assert_eq!(c.pixel(7, 0), Some([0, 0, 0]));
        c.label(35, 8, 3, "person #12 ~", Rgb(1, 1, 1), RED);
        c.label(i64::MIN / 2, -3, 4, "x", Rgb(1, 1, 1), RED);
        assert_eq!(glyph('a'), glyph('A'));
        assert_eq!(glyph('~'), glyph('?'));
    }

    #[test]
    fn overlay_draws_boxes_lines_and_zones_in_their_colours() {
        let (w, h) = (96, 54);
        let mut b = blank(w, h);
        let mut c = Canvas::new(&mut b, w, h, Layout::Rgb).unwrap();
        let o = Overlay {
            boxes: vec![BoxMark {
                bbox: [0.25, 0.5, 0.5, 0.9],
                class_id: 0,
                class: "person".into(),
                track: Some(3),
            }],
            lines: vec![LineMark {
                name: "door".into(),
                from: [0.9, 0.1],
                to: [0.9, 0.9],
            }],
            zones: vec![ZoneMark {
                name: "q".into(),
                polygon: vec![[0.6, 0.3], [0.8, 0.3], [0.8, 0.7]],
            }],
        };
        draw_overlay(&mut c, &o);
        let px = |x: f32, y: f32| c.pixel(to_px(x, w), to_px(y, h)).unwrap();
        let red = class_colour(0).bytes(Layout::Rgb);
        assert_eq!(px(0.25, 0.7), red);
        assert_eq!(px(0.5, 0.7), red);
        assert_eq!(px(0.4, 0.9), red);
        assert_eq!(px(0.9, 0.5), LINE_COLOUR.bytes(Layout::Rgb));
        assert_eq!(px(0.8, 0.6), ZONE_COLOUR.bytes(Layout::Rgb));
        // The line's tick points to its `in` side: left of a line drawn downwards.
        assert_eq!(px(0.85, 0.5), LINE_COLOUR.bytes(Layout::Rgb));
        assert_eq!(px(0.95, 0.5), [0, 0, 0]);
        assert_eq!(px(0.375, 0.7), [0, 0, 0]);
        assert_eq!(o.boxes[0].text(), "person #3");
    }
}
