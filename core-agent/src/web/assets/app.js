// framebus dashboard: one Server-Sent Events connection (/events/stream) for
// everything live; plain fetches for actions, the event backlog and the counts chart.
// All data is inserted with textContent (never as HTML).
import { series, draw, csv } from '/assets/chart.js';

// Errors seen by the page, for the browser tests (and anyone debugging): script
// errors, failed resource loads, CSP violations, unhandled promise rejections.
window.__fbErrors = [];
window.addEventListener('error', (e) => {
  const t = e.target;
  window.__fbErrors.push(t && t !== window && (t.src || t.href)
    ? `load failed: ${t.src || t.href}` : `${e.message} at ${e.filename}:${e.lineno}`);
}, true);
window.addEventListener('unhandledrejection', (e) => window.__fbErrors.push(`rejection: ${e.reason}`));
document.addEventListener('securitypolicyviolation', (e) => window.__fbErrors.push(`csp: ${e.violatedDirective} ${e.blockedURI}`));

const $ = (id) => document.getElementById(id);
const MAX_EVENTS = 200;
const state = { es: null, cameras: new Map(), events: [], eventIds: new Set(), models: [], hiddenTimer: null, snapshot: null };

function h(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const fmt = (v, d = 1) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '–');
const bytes = (b) => (b == null ? '–' : b > 1 << 30 ? `${(b / (1 << 30)).toFixed(2)} GiB` : `${(b / (1 << 20)).toFixed(1)} MiB`);
const enc = encodeURIComponent;

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  let data = null;
  const text = await r.text();
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  return { ok: r.ok, status: r.status, data };
}

// ---- login -------------------------------------------------------------------

async function login(token) {
  const r = await api('POST', '/login', { token });
  if (!r.ok) throw new Error((r.data && r.data.error) || `HTTP ${r.status}`);
}

function showLogin(message) {
  stopStream();
  $('app').hidden = true;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function boot() {
  // A token in the fragment (never sent to the server) logs in once and is removed.
  const m = location.hash.match(/^#token=(.+)$/);
  if (m) {
    history.replaceState(null, '', location.pathname);
    try { await login(decodeURIComponent(m[1])); } catch (e) { showLogin(e.message); return; }
  }
  const r = await api('GET', '/session');
  if (r.ok && r.data.logged_in) start(); else showLogin('');
}

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    await login($('token').value);
    $('token').value = '';
    start();
  } catch (e) {
    $('login-error').textContent = e.message;
  }
});

$('logout').addEventListener('click', async () => {
  await api('POST', '/logout');
  showLogin('Logged out.');
});

// ---- the live stream -----------------------------------------------------------

function setConn(text, cls) {
  const c = $('conn');
  c.textContent = text;
  c.className = `conn ${cls || ''}`;
}

function stopStream() {
  if (state.es) state.es.close();
  state.es = null;
}

function openStream() {
  stopStream();
  const es = new EventSource('/events/stream');
  state.es = es;
  es.addEventListener('open', () => setConn('live', 'on'));
  es.addEventListener('status', (e) => renderStatus(JSON.parse(e.data)));
  es.addEventListener('event', (e) => addEvent(JSON.parse(e.data), true));
  es.addEventListener('lagged', () => loadEvents());
  es.addEventListener('error', async () => {
    if (es.readyState !== EventSource.CLOSED) { setConn('reconnecting…', 'off'); return; }
    // Refused (logged out, or too many pages open): find out which, retry later.
    setConn('disconnected', 'off');
    const r = await api('GET', '/session');
    if (r.ok && !r.data.logged_in) { showLogin('Session ended: log in again.'); return; }
    setTimeout(() => { if (state.es === es) openStream(); }, 5000);
  });
}

// Closed while the tab is hidden for a minute (the slot goes back to the pool).
document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    state.hiddenTimer = setTimeout(() => { stopStream(); setConn('paused', ''); }, 60000);
  } else {
    clearTimeout(state.hiddenTimer);
    if (!state.es && !$('app').hidden) openStream();
  }
});

let started = false;
function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('nav').hidden = false;
  $('logout').hidden = false;
  openStream();
  loadEvents();
  loadCounts();
  if (!started) {
    started = true;
    setInterval(loadCounts, 60000);
  }
}

// ---- cameras -------------------------------------------------------------------

// A browser keeps at most 6 HTTP/1.1 connections per host: the event stream takes
// one, MJPEG streams take one each, so only the first few cameras stream MJPEG and the
// others show a snapshot refreshed every second.
const MAX_MJPEG = 3;

function liveView(id) {
  const streaming = [...document.querySelectorAll('.view img[data-mode="mjpeg"]')].length;
  const img = h('img', { alt: `Live view of camera ${id}` });
  if (streaming < MAX_MJPEG) {
    img.dataset.mode = 'mjpeg';
    img.src = `/cameras/${enc(id)}/stream.mjpeg`;
  } else {
    img.dataset.mode = 'snapshot';
    loadSnapshot(id, img);
  }
  // A stream that ends or fails (camera stopped, viewer cap reached, agent restarting)
  // keeps its last frame; a camera still live goes on with snapshots.
  img.addEventListener('error', () => {
    if (img.dataset.mode === 'mjpeg') img.dataset.mode = 'snapshot';
  });
  return img;
}

// A snapshot replaces the shown frame only once it has loaded: a camera that stops
// between two refreshes (503) keeps its last frame instead of a broken image.
async function loadSnapshot(id, img) {
  if (img.dataset.loading) return;
  img.dataset.loading = '1';
  try {
    const r = await fetch(`/cameras/${enc(id)}/snapshot.jpg`, { credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok) return;
    const url = URL.createObjectURL(await r.blob());
    const old = img.dataset.blob;
    img.src = url;
    img.dataset.blob = url;
    if (old) URL.revokeObjectURL(old);
  } catch {
    // Network hiccup: the next refresh tries again.
  } finally {
    delete img.dataset.loading;
  }
}

function refreshSnapshots() {
  for (const [id, c] of state.cameras) {
    const img = c.view.querySelector('img');
    if (img && img.dataset.mode === 'snapshot' && c.live) loadSnapshot(id, img);
  }
}
setInterval(refreshSnapshots, 1000);

async function act(id, what, card) {
  const msg = card.querySelector('.msg');
  msg.textContent = '';
  const r = what === 'remove'
    ? await api('DELETE', `/cameras/${enc(id)}`)
    : await api('POST', `/cameras/${enc(id)}/${what}`);
  if (!r.ok) msg.textContent = (r.data && r.data.error) || `HTTP ${r.status}`;
}

function cameraCard(id) {
  const view = h('div', { class: 'view' });
  const badge = h('span', { class: 'badge' });
  const card = h('article', { class: 'cam', 'aria-label': `Camera ${id}`, dataset: { camera: id } },
    view,
    h('div', { class: 'head' }, h('h3', {}, id), badge),
    h('p', { class: 'src' }),
    h('p', { class: 'reason', role: 'status' }),
    h('dl', { class: 'stats' }),
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'start', onclick: () => act(id, 'start', card) }, 'Start'),
      h('button', { type: 'button', class: 'stop', onclick: () => act(id, 'stop', card) }, 'Stop'),
      h('button', { type: 'button', class: 'remove danger', onclick: (e) => confirmRemove(e.target, id, card) }, 'Remove')),
    h('p', { class: 'msg error', role: 'alert' }));
  return { card, view, badge, live: false };
}

function confirmRemove(btn, id, card) {
  // Two presses (no modal dialog): the first arms it for 5 s.
  if (btn.dataset.armed) { act(id, 'remove', card); return; }
  btn.dataset.armed = '1';
  btn.textContent = 'Confirm remove';
  setTimeout(() => { delete btn.dataset.armed; btn.textContent = 'Remove'; }, 5000);
}

function stat(dl, label, value) {
  dl.append(h('dt', {}, label), h('dd', {}, value));
}

function renderCameras(cameras) {
  const grid = $('camera-grid');
  const seen = new Set();
  for (const c of cameras) {
    seen.add(c.id);
    let entry = state.cameras.get(c.id);
    if (!entry) {
      entry = cameraCard(c.id);
      state.cameras.set(c.id, entry);
      grid.append(entry.card);
    }
    const { card, view, badge } = entry;
    card.dataset.state = c.state;
    badge.textContent = c.state;
    badge.className = `badge ${c.state}`;
    // Sources come redacted from the API (credentials as ***).
    card.querySelector('.src').textContent = c.source;
    const bad = c.state !== 'live' && c.state !== 'stopped';
    // Why it is not live: the kernel's own last warning ("Connection refused", "404 Not
    // Found"), then the supervisor's reason when it says something else.
    const reasons = [];
    if (bad && c.last_error) reasons.push(c.last_error);
    const sup = c.kernel && c.kernel.last_error;
    if (bad && sup && !reasons.some((r) => sup.includes(r))) reasons.push(sup);
    card.querySelector('.reason').textContent = reasons.join(' · ');
    const subs = c.subscriptions || [];
    const dl = card.querySelector('.stats');
    dl.replaceChildren();
    stat(dl, 'decoded fps', fmt(c.fps_decoded));
    stat(dl, 'inferences/s', fmt(subs.reduce((a, s) => a + (s.fps_inferred || 0), 0)));
    stat(dl, 'missed slots', String(subs.reduce((a, s) => a + (s.missed || 0), 0)));
    const lat = subs.find((s) => s.latency_ms && s.latency_ms.count > 0);
    stat(dl, 'latency p50', lat ? `${fmt(lat.latency_ms.p50, 0)} ms` : '–');
    stat(dl, 'latency p99', lat ? `${fmt(lat.latency_ms.p99, 0)} ms` : '–');
    stat(dl, 'models', subs.map((s) => `${s.model}@${s.target_fps}`).join(', ') || 'none');
    card.querySelector('.start').disabled = c.running;
    card.querySelector('.stop').disabled = !c.running;
    const live = c.state === 'live';
    if (entry.live !== live) {
      entry.live = live;
      if (live) {
        // Live (again): a fresh connection to the live view.
        view.replaceChildren(liveView(c.id));
      } else if (!view.querySelector('img')) {
        view.replaceChildren(h('div', { class: 'novideo' }, c.state));
      }
      // Not live with an image: it keeps its last frame (frozen) until live again.
    }
  }
  for (const [id, entry] of state.cameras) {
    if (!seen.has(id)) { entry.card.remove(); state.cameras.delete(id); }
  }
  // The event filter's camera list.
  const sel = $('ev-camera');
  const have = new Set([...sel.options].map((o) => o.value));
  for (const c of cameras) if (!have.has(c.id)) sel.append(h('option', { value: c.id }, c.id));
}

$('add-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const errs = $('add-errors');
  errs.replaceChildren();
  const model = $('add-model').value;
  const body = {
    camera: { id: $('add-id').value.trim(), source: $('add-source').value.trim() },
    subscriptions: model ? [{ model, fps: Number($('add-fps').value) }] : [],
  };
  const r = await api('POST', '/cameras', body);
  if (r.ok) { ev.target.reset(); return; }
  const problems = (r.data && r.data.problems) || [(r.data && r.data.error) || `HTTP ${r.status}`];
  for (const p of problems) errs.append(h('li', {}, p));
});

// ---- counts --------------------------------------------------------------------

let lastCounts = [];

function renderCounts(snap) {
  const rows = new Map();
  const row = (camera, rule) => {
    const k = `${camera}\u0000${rule}`;
    if (!rows.has(k)) rows.set(k, { camera, rule, in: null, out: null, occ: null });
    return rows.get(k);
  };
  for (const c of snap.counts.crossings) {
    const r = row(c.camera, c.rule);
    r[c.direction] = (r[c.direction] || 0) + c.n;
  }
  for (const o of snap.counts.occupancy) row(o.camera, o.rule).occ = o.n;
  // Zones: enters/exits from the closed intervals.
  for (const b of lastCounts) {
    for (const r of b.rows) {
      if (r.kind !== 'zone' || r.class !== '*') continue;
      const z = row(r.camera, r.rule);
      z.in = (z.in || 0) + r.in;
      z.out = (z.out || 0) + r.out;
    }
  }
  const tbody = $('counts-table').querySelector('tbody');
  tbody.replaceChildren();
  for (const r of [...rows.values()].sort((a, b) => `${a.camera}${a.rule}`.localeCompare(`${b.camera}${b.rule}`))) {
    tbody.append(h('tr', { dataset: { camera: r.camera, rule: r.rule } },
      h('td', {}, r.camera), h('td', {}, r.rule),
      h('td', { class: 'num in' }, r.in === null ? '0' : String(r.in)),
      h('td', { class: 'num out' }, r.out === null ? '0' : String(r.out)),
      h('td', { class: 'num occ' }, r.occ === null ? '–' : String(r.occ))));
  }
  if (rows.size === 0) tbody.append(h('tr', {}, h('td', { colspan: '5', class: 'muted' }, 'no lines or zones configured')));
}

async function loadCounts() {
  const hours = Number($('range').value);
  const to = Date.now();
  const from = to - hours * 3600000;
  const step = hours > 6 ? 600 : 60;
  const r = await api('GET', `/counts?from=${from}&to=${to}&interval=${step}`);
  if (!r.ok) return;
  lastCounts = r.data.intervals;
  draw($('chart'), $('chart-legend'), series(lastCounts), from, to, step * 1000);
}
$('range').addEventListener('change', loadCounts);

$('csv').addEventListener('click', async () => {
  const hours = Number($('range').value);
  const to = Date.now();
  const r = await api('GET', `/counts?from=${to - hours * 3600000}&to=${to}`);
  if (!r.ok) return;
  const url = URL.createObjectURL(new Blob([csv(r.data.intervals)], { type: 'text/csv' }));
  const a = h('a', { href: url, download: `framebus-counts-${new Date(to).toISOString().slice(0, 16)}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

// ---- events --------------------------------------------------------------------

function passes(e) {
  const cam = $('ev-camera').value, type = $('ev-type').value;
  return (!cam || e.camera === cam) && (!type || e.type === type);
}

function eventItem(e, fresh) {
  const t = new Date(e.capture_unix_ms);
  const what = e.type === 'line_crossed' ? `${e.class} crossed ${e.rule} (${e.direction})`
    : e.type === 'zone_enter' ? `${e.class} entered ${e.rule}`
    : e.type === 'zone_exit' ? `${e.class} left ${e.rule} after ${fmt((e.dwell_ms || 0) / 1000)} s`
    : e.type === 'loitering' ? `${e.class} loitering in ${e.rule} (${fmt((e.dwell_ms || 0) / 1000)} s)`
    : e.type === 'object_appeared' ? `${e.class} appeared` : `${e.class} left`;
  const media = h('div', { class: 'media' });
  if (e.snapshot) media.append(h('img', { src: e.snapshot, alt: `Snapshot of event ${e.id}`, width: '240' }));
  if (e.clip) {
    const v = h('video', { controls: true, preload: 'metadata', muted: true, playsinline: true,
      src: `/events/${enc(e.id)}/clip.mp4`, 'aria-label': `Clip of event ${e.id}` });
    // A clip is written after its post-roll: retry a few times until it exists.
    let tries = 0;
    v.addEventListener('error', () => {
      if (tries++ < 10) setTimeout(() => { v.src = `/events/${enc(e.id)}/clip.mp4?try=${tries}`; }, 3000);
    });
    media.append(v);
  }
  return h('li', { class: fresh ? 'new' : '', dataset: { id: e.id, camera: e.camera, type: e.type } },
    h('div', {}, h('span', { class: 'what' }, what)),
    media,
    h('div', { class: 'meta' },
      `${t.toLocaleTimeString()} · ${e.camera} · ${e.type} · track ${e.track} · score ${fmt(e.score, 2)}`
      + (e.suppressed ? ` · ${e.suppressed} suppressed` : '')));
}

function addEvent(e, fresh) {
  if (state.eventIds.has(e.id)) return;
  state.eventIds.add(e.id);
  state.events.unshift(e);
  if (state.events.length > MAX_EVENTS) state.eventIds.delete(state.events.pop().id);
  if (!passes(e)) return;
  const list = $('event-list');
  list.prepend(eventItem(e, fresh));
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

async function loadEvents() {
  const cam = $('ev-camera').value, type = $('ev-type').value;
  const r = await api('GET', `/events?limit=${MAX_EVENTS}&camera=${enc(cam)}&type=${enc(type)}`);
  if (!r.ok) return;
  const list = $('event-list');
  list.replaceChildren();
  state.events = [];
  state.eventIds = new Set();
  // Newest first from the server: add oldest first so the newest ends on top.
  for (const e of r.data.slice().reverse()) addEvent(e, false);
  if (!list.children.length) list.append(h('li', { class: 'muted empty' }, 'no events yet'));
}
$('ev-camera').addEventListener('change', loadEvents);
$('ev-type').addEventListener('change', loadEvents);

// ---- system --------------------------------------------------------------------

function cells(tr, values) {
  for (const v of values) tr.append(h('td', {}, v === undefined || v === null ? '–' : String(v)));
  return tr;
}

function renderSystem(snap) {
  const servers = snap.servers || {};
  let tb = $('models-table').querySelector('tbody');
  tb.replaceChildren();
  for (const m of snap.models) {
    const s = servers[m.id] || {};
    const cal = m.server.calibration;
    const inf = m.stats.inference_ms;
    tb.append(cells(h('tr', { dataset: { model: m.id } }), [
      m.id, m.state, s.provider || s.device, s.instances ?? (cal ? cal.instances : null),
      s.queue_depth !== undefined ? `${s.queue_depth}/${s.queue_capacity}` : '–',
      m.server.restarts, inf && inf.count ? `${fmt(inf.p50)} / ${fmt(inf.p99)}` : '–',
    ]));
  }
  tb = $('kernels-table').querySelector('tbody');
  tb.replaceChildren();
  for (const c of snap.cameras) {
    tb.append(cells(h('tr'), [c.id, c.state, c.kernel ? c.kernel.pid : null,
      c.kernel ? c.kernel.restarts : 0, c.ring.reconnects, c.ring.decode_errors]));
  }
  tb = $('procs-table').querySelector('tbody');
  tb.replaceChildren();
  for (const p of snap.processes) {
    tb.append(cells(h('tr'), [p.name, p.pid, p.cpu_percent == null ? '–' : fmt(p.cpu_percent), bytes(p.rss_bytes)]));
  }
  const errs = [];
  for (const c of snap.cameras) if (c.kernel && c.kernel.last_error) errs.push(`camera ${c.id}: ${c.kernel.last_error}`);
  for (const m of snap.models) if (m.server.last_error) errs.push(`model ${m.id}: ${m.server.last_error}`);
  for (const f of snap.failed) {
    const when = f.next_retry_unix_ms ? `, retry at ${new Date(f.next_retry_unix_ms).toLocaleTimeString()}` : '';
    errs.push(`${f.process} failed${when}: ${f.last_error || ''}`);
  }
  const ul = $('errors');
  ul.replaceChildren(...(errs.length ? errs.map((e) => h('li', {}, e)) : [h('li', { class: 'muted' }, 'none')]));
  const a = snap.analytics;
  $('totals').textContent = `up ${Math.round(snap.uptime_s)} s · results queued ${snap.results.queued}, dropped ${snap.results.dropped}`
    + ` · events ${a.events} (suppressed ${a.suppressed}, dropped ${a.dropped}, write errors ${a.write_errors})`;
  // The add-camera form's model list.
  const sel = $('add-model');
  const have = new Set([...sel.options].map((o) => o.value));
  for (const m of snap.models) if (!have.has(m.id)) sel.append(h('option', { value: m.id }, m.id));
}

function renderStatus(snap) {
  state.snapshot = snap;
  renderCameras(snap.cameras);
  renderCounts(snap);
  renderSystem(snap);
  if (snap.stopping) setConn('agent stopping', 'off');
}

boot();
