//! Plane geometry in normalised frame coordinates (`0.0..=1.0`, origin top-left, y
//! down): boxes, IoU, segments, polygons.

/// A point in normalised coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Point {
    /// Horizontal, `0` left, `1` right.
    pub x: f32,
    /// Vertical, `0` top, `1` bottom.
    pub y: f32,
}

impl Point {
    /// A point.
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    fn sub(self, o: Point) -> Point {
        Point::new(self.x - o.x, self.y - o.y)
    }

    /// Euclidean distance.
    pub fn dist(self, o: Point) -> f32 {
        let d = self.sub(o);
        (d.x * d.x + d.y * d.y).sqrt()
    }
}

impl From<[f32; 2]> for Point {
    fn from(p: [f32; 2]) -> Self {
        Point::new(p[0], p[1])
    }
}

/// A box `[x1, y1, x2, y2]`, normalised.
pub type BBox = [f32; 4];

/// Area of a box (0 for an inverted one).
pub fn area(b: &BBox) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union of two boxes, `0.0..=1.0`.
pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Which point of a box stands for the object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Middle of the bottom edge: where a person stands (default).
    #[default]
    BottomCenter,
    /// Centre of the box.
    Center,
    /// Middle of the top edge.
    TopCenter,
}

impl Anchor {
    /// The anchor point of `b`.
    pub fn of(self, b: &BBox) -> Point {
        let cx = (b[0] + b[2]) * 0.5;
        match self {
            Anchor::BottomCenter => Point::new(cx, b[3]),
            Anchor::Center => Point::new(cx, (b[1] + b[3]) * 0.5),
            Anchor::TopCenter => Point::new(cx, b[1]),
        }
    }
}

/// z of the cross product `(b - a) x (p - a)`: positive when `p` lies to the right of
/// `a -> b` as seen on screen (y down), negative to the left.
pub fn cross(a: Point, b: Point, p: Point) -> f32 {
    let (u, v) = (b.sub(a), p.sub(a));
    u.x * v.y - u.y * v.x
}

/// Signed distance of `p` from the infinite line through `a`, `b` (same sign as
/// [`cross`]); `0` for a degenerate line.
pub fn signed_distance(a: Point, b: Point, p: Point) -> f32 {
    let len = a.dist(b);
    if len <= f32::EPSILON {
        0.0
    } else {
        cross(a, b, p) / len
    }
}

/// Where the segment `p -> q` meets the line through `a`, `b`, as the parameter along
/// `a -> b` (`0` at `a`, `1` at `b`); `None` when parallel.
pub fn crossing_param(a: Point, b: Point, p: Point, q: Point) -> Option<f32> {
    let r = b.sub(a);
    let s = q.sub(p);
    let denom = r.x * s.y - r.y * s.x;
    if denom.abs() <= f32::EPSILON {
        return None;
    }
    let ap = p.sub(a);
    Some((ap.x * s.y - ap.y * s.x) / denom)
}

/// Whether the closed segments `p1 q1` and `p2 q2` properly intersect (cross at a
/// point interior to both, or overlap collinearly).
pub fn segments_intersect(p1: Point, q1: Point, p2: Point, q2: Point) -> bool {
    let d1 = cross(p2, q2, p1);
    let d2 = cross(p2, q2, q1);
    let d3 = cross(p1, q1, p2);
    let d4 = cross(p1, q1, q2);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0))
        && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0))
    {
        return true;
    }
    let on = |a: Point, b: Point, p: Point, d: f32| {
        d == 0.0
            && p.x >= a.x.min(b.x)
            && p.x <= a.x.max(b.x)
            && p.y >= a.y.min(b.y)
            && p.y <= a.y.max(b.y)
    };
    on(p2, q2, p1, d1) || on(p2, q2, q1, d2) || on(p1, q1, p2, d3) || on(p1, q1, q2, d4)
}

/// Whether `p` lies inside the polygon (even-odd rule; points on an edge count as
/// either side, so callers add hysteresis).
pub fn point_in_polygon(poly: &[Point], p: Point) -> bool {
    let mut inside = false;
    let n = poly.len();
    let mut j = n.wrapping_sub(1);
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a.y > p.y) != (b.y > p.y) {
            let x = (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x;
            if p.x < x {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Distance from `p` to the segment `a b`.
pub fn distance_to_segment(a: Point, b: Point, p: Point) -> f32 {
    let ab = b.sub(a);
    let len2 = ab.x * ab.x + ab.y * ab.y;
    if len2 <= f32::EPSILON {
        return p.dist(a);
    }
    let ap = p.sub(a);
    let t = ((ap.x * ab.x + ap.y * ab.y) / len2).clamp(0.0, 1.0);
    p.dist(Point::new(a.x + t * ab.x, a.y + t * ab.y))
}

/// Distance from `p` to the polygon's boundary.
pub fn distance_to_boundary(poly: &[Point], p: Point) -> f32 {
    let n = poly.len();
    (0..n)
        .map(|i| distance_to_segment(poly[i], poly[(i + 1) % n], p))
        .fold(f32::INFINITY, f32::min)
}

/// The first pair of non-adjacent edges of the (closed) polygon that intersect, as
/// edge indices; `None` for a simple polygon.
pub fn self_intersection(poly: &[Point]) -> Option<(usize, usize)> {
    let n = poly.len();
    for i in 0..n {
        for j in (i + 1)..n {
            // Adjacent edges share a vertex; skip them (and the wrap-around pair).
            if j == i + 1 || (i == 0 && j == n - 1) {
                continue;
            }
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            let (c, d) = (poly[j], poly[(j + 1) % n]);
            if segments_intersect(a, b, c, d) {
                return Some((i, j));
            }
        }
    }
    None
}

/// Twice the signed area of the polygon (0 for a degenerate one).
pub fn polygon_area2(poly: &[Point]) -> f32 {
    let n = poly.len();
    (0..n)
        .map(|i| {
            let (a, b) = (poly[i], poly[(i + 1) % n]);
            a.x * b.y - b.x * a.y
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[[f32; 2]]) -> Vec<Point> {
        v.iter().map(|&p| p.into()).collect()
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = [0.0, 0.0, 0.2, 0.2];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[0.3, 0.3, 0.4, 0.4]), 0.0);
        let b = [0.1, 0.0, 0.3, 0.2];
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-5);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn sides_follow_screen_orientation() {
        let (a, b) = (Point::new(0.0, 0.5), Point::new(1.0, 0.5));
        // Below a left-to-right line (y down) is its right side: positive.
        assert!(cross(a, b, Point::new(0.5, 0.6)) > 0.0);
        assert!(cross(a, b, Point::new(0.5, 0.4)) < 0.0);
        assert!((signed_distance(a, b, Point::new(0.5, 0.6)) - 0.1).abs() < 1e-6);
        let t = crossing_param(a, b, Point::new(0.25, 0.4), Point::new(0.25, 0.6)).unwrap();
        assert!((t - 0.25).abs() < 1e-6);
    }

    #[test]
    fn polygons_inside_and_self_intersection() {
        let square = pts(&[[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]]);
        assert!(point_in_polygon(&square, Point::new(0.5, 0.5)));
        assert!(!point_in_polygon(&square, Point::new(0.9, 0.5)));
        assert_eq!(self_intersection(&square), None);
        assert!((distance_to_boundary(&square, Point::new(0.5, 0.3)) - 0.1).abs() < 1e-6);
        let bowtie = pts(&[[0.2, 0.2], [0.8, 0.8], [0.8, 0.2], [0.2, 0.8]]);
        assert!(self_intersection(&bowtie).is_some());
        assert!(polygon_area2(&square).abs() > 0.0);
        let flat = pts(&[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]);
        assert_eq!(polygon_area2(&flat), 0.0);
    }

    #[test]
    fn anchors() {
        let b = [0.2, 0.2, 0.4, 0.6];
        assert_eq!(Anchor::BottomCenter.of(&b), Point::new(0.3, 0.6));
        assert_eq!(Anchor::Center.of(&b), Point::new(0.3, 0.4));
        assert_eq!(Anchor::TopCenter.of(&b), Point::new(0.3, 0.2));
    }
}
