// Counts chart (SVG, drawn by hand: no library, nothing fetched) and the CSV export.

const NS = 'http://www.w3.org/2000/svg';
const W = 600, H = 200, PAD_L = 34, PAD_B = 18, PAD_T = 8, PAD_R = 6;

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// Series per (camera, rule) from /counts intervals: crossings (lines) or enters
// (zones) per interval, all classes (the `*` rows).
export function series(intervals) {
  const map = new Map();
  for (const b of intervals) {
    for (const r of b.rows) {
      if (r.class !== '*') continue;
      const key = `${r.camera} / ${r.rule}`;
      if (!map.has(key)) map.set(key, { key, kind: r.kind, points: new Map() });
      const s = map.get(key);
      s.points.set(b.start_ms, (s.points.get(b.start_ms) || 0) + r.in + r.out);
    }
  }
  return [...map.values()];
}

// Draws `list` (from `series`) over [from, to] into `svg`, legend into `legend`.
export function draw(svg, legend, list, from, to, stepMs) {
  const title = svg.querySelector('title');
  svg.replaceChildren();
  if (title) svg.append(title);
  legend.replaceChildren();
  const max = Math.max(1, ...list.flatMap((s) => [...s.points.values()]));
  const x = (t) => PAD_L + ((t - from) / Math.max(1, to - from)) * (W - PAD_L - PAD_R);
  const y = (v) => H - PAD_B - (v / max) * (H - PAD_B - PAD_T);
  svg.append(el('line', { class: 'axis', x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B }));
  svg.append(el('line', { class: 'axis', x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }));
  svg.append(el('text', { x: PAD_L - 4, y: PAD_T + 8, 'text-anchor': 'end' }, String(max)));
  svg.append(el('text', { x: PAD_L - 4, y: H - PAD_B, 'text-anchor': 'end' }, '0'));
  const hours = (to - from) / 3600000;
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    const d = new Date(t);
    const label = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
    svg.append(el('text', { x: x(t), y: H - 4, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, label));
  }
  if (list.length === 0) {
    svg.append(el('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' },
      `no counts in the last ${hours} h yet (intervals appear when they close)`));
    return;
  }
  list.forEach((s, i) => {
    const cls = `s${(i % 6) + 1}`;
    // Every step of the range, zero where no row: gaps read as zero, not as a ramp.
    const pts = [];
    for (let t = from - (from % stepMs); t <= to; t += stepMs) {
      if (t < from) continue;
      pts.push(`${x(t).toFixed(1)},${y(s.points.get(t) || 0).toFixed(1)}`);
    }
    svg.append(el('polyline', { class: cls, points: pts.join(' ') }));
    const item = document.createElement('span');
    const sw = document.createElement('span');
    sw.className = `sw ${cls}`;
    item.append(sw, `${s.key} (${s.kind === 'zone' ? 'enters' : 'crossings'} per ${stepMs / 60000} min)`);
    legend.append(item);
  });
}

const CSV_COLUMNS = ['start_utc', 'start_ms', 'interval_s', 'camera', 'model', 'rule', 'kind',
  'class', 'in', 'out', 'occupancy_peak', 'occupancy_mean', 'frames'];

function cell(v) {
  if (v === null || v === undefined) return '';
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

// The /counts intervals as CSV text (one row per camera, model, rule, class, interval).
export function csv(intervals) {
  const lines = [CSV_COLUMNS.join(',')];
  for (const b of intervals) {
    for (const r of b.rows) {
      const row = { ...r, start_utc: b.start_utc };
      lines.push(CSV_COLUMNS.map((c) => cell(row[c])).join(','));
    }
  }
  return lines.join('\n') + '\n';
}
