// model-manager browser UI: one ES module, no build step, no dependencies.
//
// Data flow: every download the page knows lives in `store` (id → download, the
// contract's shape). The websocket (`/api/events`) and a few REST reads keep it
// current; `render()` then places one <li> per id in the queue or the history list,
// creating, moving or patching rows in place. Progress frames (every ~300 ms) skip
// `render()` entirely and patch only the numbers of the rows they name.

const LIVE = new Set(['queued', 'downloading', 'retrying', 'verifying', 'paused']);
const FINISHED = new Set(['completed', 'failed', 'cancelled']);
const PAUSABLE = new Set(['queued', 'downloading', 'retrying']);
const ACTIVE = new Set(['downloading', 'retrying', 'verifying']);
// Within equal queue positions (in practice: the ones without a position), running
// downloads come first, then queued, then paused.
const RANK = { downloading: 0, retrying: 0, verifying: 0, queued: 1, paused: 2 };

const BASE = new URL('./', location.href);
const SPARK_SAMPLES = 60;

const el = (id) => document.getElementById(id);
const enc = encodeURIComponent;

const ui = {
  conn: document.querySelector('[data-testid="conn-status"]'),
  statsSpeed: document.querySelector('[data-testid="stats-speed"]'),
  statsActive: document.querySelector('[data-testid="stats-active"]'),
  statsQueued: document.querySelector('[data-testid="stats-queued"]'),
  statsPaused: document.querySelector('[data-testid="stats-paused"]'),
  sparkLine: document.querySelector('.spark-line'),
  sparkArea: document.querySelector('.spark-area'),
  queue: el('queue'),
  history: el('history'),
  queueEmpty: el('queue-empty'),
  historyEmpty: el('history-empty'),
  historyError: el('history-error'),
  historyFilter: el('history-filter'),
  countQueue: el('count-queue'),
  countHistory: el('count-history'),
  rowTemplate: el('row-template'),
  toast: el('toast'),
};

// ---------------------------------------------------------------------------
// Formatting

function fmtBytes(n) {
  if (n == null || !Number.isFinite(n)) return '?';
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = Math.max(0, n);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  if (i === 0) return `${Math.round(v)} B`;
  const digits = v < 10 ? 2 : v < 100 ? 1 : 0;
  return `${v.toFixed(digits)} ${units[i]}`;
}

const fmtSpeed = (bps) => `${fmtBytes(bps || 0)}/s`;

function fmtDuration(secs) {
  if (secs == null || !Number.isFinite(secs) || secs < 0) return '—';
  const s = Math.round(secs);
  if (s < 60) return `${s}s`;
  const pad = (x) => String(x).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fmtPercent(p) {
  if (p >= 100) return '100%';
  return `${(Math.floor(p * 10) / 10).toFixed(1)}%`;
}

const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const fmtCount = (n) => (Number.isFinite(n) ? compact.format(n) : '0');

function fmtWhen(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })}, ${time}`;
}

function fmtDate(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const sameYear = d.getFullYear() === new Date().getFullYear();
  return d.toLocaleDateString(undefined, sameYear
    ? { month: 'short', day: 'numeric' }
    : { year: 'numeric', month: 'short', day: 'numeric' });
}

function basename(url) {
  try {
    const p = new URL(url).pathname.split('/').filter(Boolean);
    return p.length ? decodeURIComponent(p[p.length - 1]) : '';
  } catch {
    return '';
  }
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  if (value == null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

// ---------------------------------------------------------------------------
// API

let token = '';
try { token = localStorage.getItem('mm_token') || ''; } catch { /* storage disabled */ }

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** One JSON request. Throws ApiError carrying the contract's error message. */
async function api(method, path, body, { signal } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(new URL(path, BASE), init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Cannot reach the service.');
  }
  const text = res.status === 204 ? '' : await res.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { /* not JSON */ } }
  if (!res.ok) {
    const err = data && data.error;
    let code = `http_${res.status}`;
    let message = `${res.status} ${res.statusText || 'error'}`.trim();
    if (err && typeof err === 'object') {
      code = err.code || code;
      message = err.message || message;
    } else if (typeof err === 'string') {
      message = err;
    } else if (!data && text && text.length < 300 && !/^\s*</.test(text)) {
      message = text.trim();
    }
    if (res.status === 401) checkAuth();
    throw new ApiError(res.status, code, message);
  }
  return data;
}

// ---------------------------------------------------------------------------
// Auth: a 401 anywhere (or a websocket that never opens) asks /api/stats whether
// the token is the problem, so that an upstream "unauthorized" passed through by a
// Hub route does not pop up the token form by mistake.

const tokenPanel = el('token-panel');
const tokenInput = el('token-input');
let authProbe = null;

function checkAuth() {
  if (authProbe) return authProbe;
  authProbe = fetch(new URL('api/stats', BASE), { headers: authHeaders(), cache: 'no-store' })
    .then((r) => { if (r.status === 401) showTokenForm(); else if (r.ok) hideTokenForm(); })
    .catch(() => {})
    .finally(() => { authProbe = null; });
  return authProbe;
}

function showTokenForm() {
  setText(el('token-msg'), token
    ? 'The saved API token was refused. Enter the current one:'
    : 'This service needs an API token.');
  if (tokenPanel.hidden) {
    tokenPanel.hidden = false;
    tokenInput.focus();
  }
}

function hideTokenForm() {
  tokenPanel.hidden = true;
}

function saveToken(value) {
  token = value;
  try {
    if (value) localStorage.setItem('mm_token', value);
    else localStorage.removeItem('mm_token');
  } catch { /* storage disabled: keep it for this page only */ }
  el('token-note').hidden = !token;
}

el('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) { tokenInput.focus(); return; }
  saveToken(value);
  tokenInput.value = '';
  hideTokenForm();
  reconnectNow();
  refreshHistory();
  checkAuth();
});

el('forget-token').addEventListener('click', () => {
  saveToken('');
  reconnectNow();
});
el('token-note').hidden = !token;

// ---------------------------------------------------------------------------
// Store. `seq` orders websocket events against REST reads: a read that started
// before an event about the same id must not overwrite it with older data.

const store = new Map();    // id → download
const touched = new Map();  // id → seq of the last websocket/API write
const tombs = new Map();    // id → seq at which it was removed
const dirty = new Set();    // ids whose row needs a full update
let seq = 0;

function put(d) {
  if (!d || typeof d.id !== 'string') return;
  store.set(d.id, d);
  dirty.add(d.id);
}

/** A fresh, authoritative write (websocket frame, or an API answer not yet overtaken). */
function touch(d) {
  put(d);
  touched.set(d.id, ++seq);
}

function drop(id) {
  store.delete(id);
  touched.delete(id);
  tombs.set(id, ++seq);
}

/** Merges a REST list read that started at `since`; prunes entries of `scope` it lacks. */
function applyList(list, since, scope) {
  const seen = new Set();
  for (const d of list) {
    if (!d || typeof d.id !== 'string') continue;
    seen.add(d.id);
    if ((touched.get(d.id) ?? -1) > since || (tombs.get(d.id) ?? -1) > since) continue;
    put(d);
  }
  for (const [id, d] of store) {
    if (!seen.has(id) && scope(d) && (touched.get(id) ?? -1) <= since) {
      store.delete(id);
      touched.delete(id);
    }
  }
}

const isLive = (d) => !FINISHED.has(d.state);
const isFinished = (d) => FINISHED.has(d.state);

function listOf(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.downloads)) return data.downloads;
  if (data && Array.isArray(data.history)) return data.history;
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}

let listInFlight = null;
/** GET /api/downloads: used when the websocket is down, and after a reorder. */
function refreshList() {
  if (listInFlight) return listInFlight;
  const since = seq;
  listInFlight = api('GET', 'api/downloads')
    .then((data) => {
      if (wsLive && lastSnapshotSeq > since) return;
      applyList(listOf(data), since, isLive);
      render();
    })
    .catch(() => {})
    .finally(() => { listInFlight = null; });
  return listInFlight;
}

let historyTimer = 0;
let historyInFlight = false;
let historyAgain = false;
function scheduleHistory(delay = 250) {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(refreshHistory, delay);
}

async function refreshHistory() {
  clearTimeout(historyTimer);
  if (historyInFlight) { historyAgain = true; return; }
  historyInFlight = true;
  const since = seq;
  try {
    const data = await api('GET', 'api/history?limit=50');
    applyList(listOf(data), since, isFinished);
    setHidden(ui.historyError, true);
    render();
  } catch (e) {
    if (e.status) {
      setText(ui.historyError, `Could not load the history: ${e.message}`);
      setHidden(ui.historyError, false);
    }
  } finally {
    historyInFlight = false;
    if (historyAgain) { historyAgain = false; scheduleHistory(0); }
  }
}

// ---------------------------------------------------------------------------
// Rows

const views = new Map(); // id → row view

function makeView(id) {
  const li = ui.rowTemplate.content.firstElementChild.cloneNode(true);
  const q = (t) => li.querySelector(`[data-testid="${t}"]`);
  const r = (t) => li.querySelector(`[data-ref="${t}"]`);
  const v = {
    el: li,
    name: q('file-name'),
    sub: r('sub'),
    pos: q('position'),
    state: q('state'),
    progress: q('progress'),
    percent: q('percent'),
    bytes: q('bytes'),
    speed: q('speed'),
    eta: q('eta'),
    elapsed: q('elapsed'),
    when: q('finished-at'),
    error: q('error'),
    errKind: r('err-kind'),
    errSep: r('err-sep'),
    errMsg: r('err-msg'),
    errRetry: q('retry-info'),
    btn: {},
  };
  for (const b of li.querySelectorAll('button[data-action]')) v.btn[b.dataset.action] = b;
  li.dataset.id = id;
  views.set(id, v);
  return v;
}

function updateRow(v, d) {
  const s = d.state;
  setAttr(v.el, 'data-id', d.id);
  setAttr(v.el, 'data-state', s);
  setText(v.name, d.file_name || basename(d.url) || d.id);
  setAttr(v.name, 'title', d.path || d.file_name || null);

  let sub = d.url || '';
  if (d.source && d.source.kind === 'hub') {
    const rev = d.source.revision && d.source.revision !== 'main' ? `@${d.source.revision}` : '';
    sub = `hub · ${d.source.repo}${rev}`;
  } else {
    sub = sub.replace(/^https?:\/\//, '');
  }
  setText(v.sub, sub);
  setAttr(v.sub, 'title', d.url || null);

  setText(v.state, s);
  const showPos = s === 'queued' && Number.isInteger(d.position);
  setText(v.pos, showPos ? `#${d.position + 1}` : '');
  setHidden(v.pos, !showPos);

  setText(v.when, d.finished_at && FINISHED.has(s) ? `${s} ${fmtWhen(d.finished_at)}` : '');
  updateNumbers(v, d);
  updateError(v, d, Date.now());

  const b = v.btn;
  setHidden(b.pause, !PAUSABLE.has(s));
  setHidden(b.resume, s !== 'paused');
  setHidden(b.cancel, !LIVE.has(s));
  setHidden(b.retry, s !== 'failed' && s !== 'cancelled');
  setHidden(b.up, s !== 'queued');
  setHidden(b.down, s !== 'queued');
  setHidden(b['remove-file'], s !== 'completed');
  setHidden(b.remove, false);
  const draggable = s === 'queued';
  if (v.el.draggable !== draggable) v.el.draggable = draggable;
}

/** The numbers only: what a progress frame changes. */
function updateNumbers(v, d) {
  const s = d.state;
  const done = d.bytes_done || 0;
  const total = d.bytes_total;
  let pct = null;
  if (s === 'completed') pct = 100;
  else if (total > 0) pct = Math.min(100, (done / total) * 100);

  const p = v.progress;
  if (pct == null) {
    if (s === 'downloading') {
      if (p.hasAttribute('value')) p.removeAttribute('value'); // indeterminate
    } else if (p.getAttribute('value') !== '0') {
      p.value = 0;
    }
    setAttr(p, 'aria-valuenow', null);
    setText(v.percent, '—');
    setText(p, '—');
  } else {
    const shown = Math.floor(pct * 10) / 10;
    if (p.getAttribute('value') !== String(shown)) p.value = shown;
    setAttr(p, 'aria-valuenow', String(Math.floor(pct)));
    const text = fmtPercent(pct);
    setText(v.percent, text);
    setText(p, text);
  }

  if (s === 'completed') setText(v.bytes, fmtBytes(total ?? done));
  else setText(v.bytes, total != null ? `${fmtBytes(done)} / ${fmtBytes(total)}` : fmtBytes(done));
  const moving = s === 'downloading';
  setText(v.speed, moving ? fmtSpeed(d.speed_bps) : '—');
  setText(v.eta, moving && d.eta_secs != null ? fmtDuration(d.eta_secs) : '—');
  setText(v.elapsed, fmtDuration(d.elapsed_secs || 0));
}

function updateError(v, d, now) {
  const s = d.state;
  const show = (s === 'failed' || s === 'retrying') && (d.error || s === 'retrying');
  setHidden(v.error, !show);
  if (!show) {
    setText(v.errKind, '');
    setText(v.errSep, '');
    setText(v.errMsg, '');
    setText(v.errRetry, '');
    return;
  }
  const err = d.error || {};
  setText(v.errKind, err.kind || (s === 'retrying' ? 'retrying' : 'error'));
  setText(v.errMsg, err.message || '');
  setText(v.errSep, err.message ? ': ' : '');
  let retry = '';
  if (s === 'retrying') {
    const parts = [];
    if (d.attempt) parts.push(`attempt ${d.attempt}`);
    const at = Date.parse(d.next_retry_at);
    if (Number.isFinite(at)) {
      const left = Math.max(0, Math.ceil((at - now) / 1000));
      const time = new Date(at).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
      parts.push(`next retry at ${time}${left > 0 ? ` (in ${fmtDuration(left)})` : ' (now)'}`);
    }
    if (parts.length) retry = ` — ${parts.join(', ')}`;
  } else if (s === 'failed' && d.attempt > 1) {
    retry = ` — after ${d.attempt} attempts`;
  }
  setText(v.errRetry, retry);
}

// Running downloads on top (what the user watches), then the queue in its order,
// then paused ones.
function cmpQueue(a, b) {
  const ra = RANK[a.state] ?? 1;
  const rb = RANK[b.state] ?? 1;
  if (ra !== rb) return ra - rb;
  const pa = Number.isInteger(a.position) ? a.position : Infinity;
  const pb = Number.isInteger(b.position) ? b.position : Infinity;
  if (pa !== pb) return pa < pb ? -1 : 1;
  return cmpTime(a.created_at, b.created_at) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function cmpHistory(a, b) {
  return cmpTime(b.finished_at || b.created_at, a.finished_at || a.created_at)
    || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

function cmpTime(x, y) {
  const tx = Date.parse(x) || 0;
  const ty = Date.parse(y) || 0;
  return tx - ty;
}

/** Puts the rows of `list` into `container` in order, moving only what is out of place. */
function place(container, list) {
  let ref = container.firstElementChild;
  for (const d of list) {
    let v = views.get(d.id);
    if (!v) { v = makeView(d.id); dirty.add(d.id); }
    if (dirty.has(d.id)) updateRow(v, d);
    if (v.el === ref) ref = ref.nextElementSibling;
    else container.insertBefore(v.el, ref);
  }
}

let queuedOrder = []; // ids of queued downloads, in display order

function render() {
  const live = [];
  const done = [];
  for (const d of store.values()) (isFinished(d) ? done : live).push(d);
  live.sort(cmpQueue);
  done.sort(cmpHistory);
  for (const [id, v] of views) {
    if (!store.has(id)) { v.el.remove(); views.delete(id); }
  }
  place(ui.queue, live);
  place(ui.history, done);
  dirty.clear();

  // Reorder buttons: the first queued one cannot go up, the last cannot go down.
  queuedOrder = live.filter((d) => d.state === 'queued').map((d) => d.id);
  queuedOrder.forEach((id, i) => {
    const v = views.get(id);
    if (!v || busy.has(id)) return;
    v.btn.up.disabled = i === 0;
    v.btn.down.disabled = i === queuedOrder.length - 1;
  });

  setHidden(ui.queueEmpty, live.length > 0);
  setHidden(ui.historyEmpty, done.length > 0);
  setText(ui.countQueue, live.length ? String(live.length) : '');
  setText(ui.countHistory, done.length ? String(done.length) : '');
  const failed = done.filter((d) => d.state === 'failed').length;
  ui.countHistory.classList.toggle('alert', failed > 0);
  setAttr(ui.countHistory, 'title', failed ? `${failed} failed` : null);
  updateStats();
}

// ---------------------------------------------------------------------------
// Stats and sparkline (computed from the live list: no polling needed)

const samples = new Array(SPARK_SAMPLES).fill(0);
let totalSpeed = 0;

function updateStats() {
  let speed = 0;
  let active = 0;
  let queued = 0;
  let paused = 0;
  for (const d of store.values()) {
    if (d.state === 'downloading') speed += d.speed_bps || 0;
    if (ACTIVE.has(d.state)) active++;
    else if (d.state === 'queued') queued++;
    else if (d.state === 'paused') paused++;
  }
  totalSpeed = speed;
  setText(ui.statsSpeed, fmtSpeed(speed));
  setText(ui.statsActive, String(active));
  setText(ui.statsQueued, String(queued));
  setText(ui.statsPaused, String(paused));
}

function drawSparkline() {
  const max = Math.max(...samples, 1);
  const w = 120;
  const h = 24;
  const step = w / (SPARK_SAMPLES - 1);
  let line = '';
  samples.forEach((s, i) => {
    const x = (i * step).toFixed(1);
    const y = (h - 1 - (s / max) * (h - 3)).toFixed(1);
    line += `${i ? 'L' : 'M'}${x} ${y}`;
  });
  ui.sparkLine.setAttribute('d', line);
  ui.sparkArea.setAttribute('d', `${line}L${w} ${h}L0 ${h}Z`);
  const peak = Math.max(...samples);
  ui.sparkLine.parentNode.setAttribute('aria-label', `peak ${fmtSpeed(peak)} over the last minute`);
}

function tick() {
  samples.push(wsLive ? totalSpeed : 0);
  samples.shift();
  drawSparkline();
  const now = Date.now();
  for (const [id, v] of views) {
    const d = store.get(id);
    if (d && d.state === 'retrying') updateError(v, d, now);
  }
  document.title = totalSpeed > 0 ? `↓ ${fmtSpeed(totalSpeed)} · model-manager` : 'model-manager';
}

// ---------------------------------------------------------------------------
// Websocket

let ws = null;
let wsLive = false;
let backoff = 500;
let reconnectTimer = 0;
let lastSnapshotSeq = -1;

function wsUrl() {
  const u = new URL('api/events', BASE);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token) u.searchParams.set('token', token);
  return u.href;
}

function setLive(live) {
  wsLive = live;
  setText(ui.conn, live ? 'live' : 'reconnecting');
  setAttr(ui.conn, 'data-live', live ? 'true' : 'false');
  setAttr(ui.conn, 'title', live ? 'Connected: updates are live' : 'Connection lost: reconnecting');
  document.body.classList.toggle('offline', !live);
}

function connect() {
  clearTimeout(reconnectTimer);
  reconnectTimer = 0;
  if (ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(); } catch { /* already closed */ }
    ws = null;
  }
  const url = wsUrl();
  let sock;
  try {
    if (!url) throw new Error('not served over http');
    sock = new WebSocket(url);
  } catch {
    down(false);
    return;
  }
  ws = sock;
  let opened = false;
  sock.onopen = () => {
    opened = true;
    backoff = 500;
    setLive(true);
  };
  sock.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg && typeof msg === 'object') onFrame(msg);
  };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    ws = null;
    down(opened, ev.code);
  };
}

function down(wasOpen, code) {
  setLive(false);
  // A websocket that never opened hides its HTTP status; ask REST instead. That
  // finds a 401 (token form) and keeps the list fresh if only the websocket is blocked.
  if (!wasOpen || code === 1008 || code === 4401) {
    if (wsUrl()) refreshList();
  }
  const delay = backoff * (0.8 + Math.random() * 0.4);
  backoff = Math.min(backoff * 2, 5000);
  reconnectTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  backoff = 500;
  connect();
}

window.addEventListener('online', () => { if (!wsLive) reconnectNow(); });
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && !wsLive) reconnectNow();
});

function onFrame(msg) {
  switch (msg.type) {
    case 'snapshot': {
      const list = listOf(msg);
      const ids = new Set();
      seq++;
      for (const d of list) {
        if (!d || typeof d.id !== 'string') continue;
        ids.add(d.id);
        put(d);
        touched.set(d.id, seq);
      }
      for (const [id, d] of store) if (!ids.has(id) && isLive(d)) { store.delete(id); touched.delete(id); }
      lastSnapshotSeq = seq;
      hideTokenForm();
      render();
      refreshHistory();
      break;
    }
    case 'progress': {
      for (const u of msg.updates || []) {
        const d = store.get(u.id);
        if (!d) continue;
        for (const k of ['bytes_done', 'bytes_total', 'speed_bps', 'eta_secs', 'elapsed_secs']) {
          if (k in u) d[k] = u[k];
        }
        const v = views.get(u.id);
        if (v) updateNumbers(v, d);
      }
      updateStats();
      break;
    }
    case 'state': {
      const d = msg.download;
      if (!d || typeof d.id !== 'string') break;
      const before = store.get(d.id);
      touch(d);
      render();
      if (FINISHED.has(d.state) && (!before || !FINISHED.has(before.state))) scheduleHistory();
      break;
    }
    case 'removed':
      if (typeof msg.id === 'string') { drop(msg.id); render(); }
      break;
    default:
      break; // frames added later: ignore
  }
}

// ---------------------------------------------------------------------------
// Toast

let toastTimer = 0;
function toast(message, kind = 'error') {
  setText(ui.toast, message);
  ui.toast.dataset.kind = kind;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { ui.toast.hidden = true; }, 6000);
}
ui.toast.addEventListener('click', () => { ui.toast.hidden = true; });

// ---------------------------------------------------------------------------
// Actions on one download

const busy = new Set();
const LABEL = {
  pause: 'Pause', resume: 'Resume', cancel: 'Cancel', retry: 'Retry',
  remove: 'Remove', 'remove-file': 'Remove with file', up: 'Move', down: 'Move',
};

/** Applies a download returned by the API unless the websocket already said something newer. */
function applyAnswer(d, since) {
  if (!d || typeof d.id !== 'string') return;
  if ((touched.get(d.id) ?? -1) > since || (tombs.get(d.id) ?? -1) > since) return;
  touch(d);
}

async function act(id, action, button) {
  const d = store.get(id);
  const name = d ? (d.file_name || d.id) : id;
  if (action === 'remove-file'
    && !confirm(`Remove “${name}” from the list and delete its file from disk?`)) return;
  if (action === 'up' || action === 'down') {
    const i = queuedOrder.indexOf(id);
    const j = action === 'up' ? i - 1 : i + 1;
    if (i < 0 || j < 0 || j >= queuedOrder.length) return;
    moveTo(id, j);
    return;
  }
  const since = seq;
  busy.add(id);
  if (button) button.disabled = true;
  try {
    if (action === 'remove' || action === 'remove-file') {
      const q = action === 'remove-file' ? '?delete_file=true' : '';
      await api('DELETE', `api/downloads/${enc(id)}${q}`);
      drop(id);
    } else {
      applyAnswer(await api('POST', `api/downloads/${enc(id)}/${action}`), since);
    }
  } catch (e) {
    toast(`${LABEL[action] || action} “${name}”: ${e.message}`);
  } finally {
    busy.delete(id);
    if (button) button.disabled = false;
    dirty.add(id);
    render();
  }
}

/** Moves a queued download to index `j` of the queued ones (their positions are taken in order). */
async function moveTo(id, j) {
  const order = queuedOrder.slice();
  const i = order.indexOf(id);
  if (i < 0 || j === i) return;
  const queued = order.map((x) => store.get(x)).filter(Boolean);
  const positions = queued.map((d) => d.position).filter(Number.isInteger).sort((a, b) => a - b);
  const target = Number.isInteger(positions[j]) ? positions[j] : j;
  // Optimistic: show the new order at once; the list read below settles it.
  if (positions.length === queued.length) {
    order.splice(i, 1);
    order.splice(j, 0, id);
    order.forEach((x, k) => {
      const d = store.get(x);
      if (d && d.position !== positions[k]) { d.position = positions[k]; dirty.add(x); }
    });
    render();
  }
  try {
    await api('POST', `api/downloads/${enc(id)}/move`, { position: target });
  } catch (e) {
    toast(`Move: ${e.message}`);
  }
  await refreshList();
}

function onListClick(e) {
  const button = e.target.closest('button[data-action]');
  if (!button || button.disabled) return;
  const row = button.closest('.dl');
  if (row && row.dataset.id) act(row.dataset.id, button.dataset.action, button);
}
ui.queue.addEventListener('click', onListClick);
ui.history.addEventListener('click', onListClick);

// Drag and drop among queued rows: the dragged one takes the place of the row it is
// dropped on (after it when moving down, before it when moving up).
let dragId = null;

function clearDropMarks() {
  for (const n of ui.queue.querySelectorAll('.drop-before, .drop-after')) {
    n.classList.remove('drop-before', 'drop-after');
  }
}

function dropTarget(e) {
  const row = e.target.closest && e.target.closest('.dl');
  if (!row || !dragId || row.dataset.id === dragId || row.dataset.state !== 'queued') return null;
  const from = queuedOrder.indexOf(dragId);
  const to = queuedOrder.indexOf(row.dataset.id);
  if (from < 0 || to < 0) return null;
  return { row, from, to };
}

ui.queue.addEventListener('dragstart', (e) => {
  const row = e.target.closest && e.target.closest('.dl');
  if (!row || row.dataset.state !== 'queued') { e.preventDefault(); return; }
  dragId = row.dataset.id;
  e.dataTransfer.effectAllowed = 'move';
  e.dataTransfer.setData('text/plain', dragId);
  row.classList.add('dragging');
});

ui.queue.addEventListener('dragover', (e) => {
  const t = dropTarget(e);
  clearDropMarks();
  if (!t) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'move';
  t.row.classList.add(t.to > t.from ? 'drop-after' : 'drop-before');
});

ui.queue.addEventListener('dragleave', (e) => {
  if (!ui.queue.contains(e.relatedTarget)) clearDropMarks();
});

ui.queue.addEventListener('drop', (e) => {
  const t = dropTarget(e);
  clearDropMarks();
  if (!t) return;
  e.preventDefault();
  const id = dragId;
  dragId = null;
  moveTo(id, t.to);
});

ui.queue.addEventListener('dragend', () => {
  dragId = null;
  clearDropMarks();
  for (const n of ui.queue.querySelectorAll('.dragging')) n.classList.remove('dragging');
});

// Queue-wide buttons

async function whole(path, button, label) {
  button.disabled = true;
  try {
    await api('POST', path);
  } catch (e) {
    toast(`${label}: ${e.message}`);
  } finally {
    button.disabled = false;
    refreshList();
  }
}

el('pause-all').addEventListener('click', (e) => whole('api/pause-all', e.currentTarget, 'Pause all'));
el('resume-all').addEventListener('click', (e) => whole('api/resume-all', e.currentTarget, 'Resume all'));

el('clear-history').addEventListener('click', async (e) => {
  const button = e.currentTarget;
  button.disabled = true;
  try {
    await api('DELETE', 'api/history');
    for (const [id, d] of store) if (isFinished(d)) drop(id);
    render();
  } catch (err) {
    toast(`Clear history: ${err.message}`);
  } finally {
    button.disabled = false;
    refreshHistory();
  }
});

ui.historyFilter.addEventListener('change', () => {
  setAttr(ui.history, 'data-filter', ui.historyFilter.value || null);
});

// ---------------------------------------------------------------------------
// Add a URL

const addForm = el('add-form');
const addUrl = el('add-url');
const addName = el('add-file-name');
const addSha = el('add-sha256');
const addPaused = el('add-start-paused');
const addError = el('add-error');
const addSubmit = addForm.querySelector('[data-testid="add-submit"]');

function showAddError(message) {
  setText(addError, message);
  setHidden(addError, !message);
}

addUrl.addEventListener('input', () => {
  addName.placeholder = basename(addUrl.value.trim()) || 'File name (from URL)';
  if (!addError.hidden) showAddError('');
});

addForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const url = addUrl.value.trim();
  if (!url) { showAddError('Enter the URL of a file to download.'); addUrl.focus(); return; }
  const body = { url };
  const fileName = addName.value.trim();
  const sha = addSha.value.trim().toLowerCase();
  if (fileName) body.file_name = fileName;
  if (sha) body.sha256 = sha;
  if (addPaused.checked) body.start_paused = true;
  const since = seq;
  addSubmit.disabled = true;
  showAddError('');
  try {
    const d = await api('POST', 'api/downloads', body);
    applyAnswer(d, since);
    render();
    addForm.reset();
    addName.placeholder = 'File name (from URL)';
    addUrl.focus();
  } catch (err) {
    showAddError(err.message);
  } finally {
    addSubmit.disabled = false;
  }
});

// ---------------------------------------------------------------------------
// Tabs

const TABS = ['queue', 'history', 'hub'];

function showTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) name = 'queue';
  for (const t of TABS) {
    const tab = el(`tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', on ? 'true' : 'false');
    tab.tabIndex = on ? 0 : -1;
    el(`panel-${t}`).hidden = !on;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  if (name === 'history') refreshHistory();
  if (name === 'hub' && focus) el('hub-search').focus();
}

for (const t of TABS) {
  el(`tab-${t}`).addEventListener('click', () => showTab(t, { focus: true }));
}
document.querySelector('.tabs').addEventListener('keydown', (e) => {
  if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
  const i = TABS.findIndex((t) => el(`tab-${t}`).getAttribute('aria-selected') === 'true');
  const next = TABS[(i + (e.key === 'ArrowRight' ? 1 : TABS.length - 1)) % TABS.length];
  showTab(next);
  el(`tab-${next}`).focus();
});
window.addEventListener('hashchange', () => showTab(location.hash.slice(1)));

// ---------------------------------------------------------------------------
// Hub

const hub = {
  form: el('hub-form'),
  input: el('hub-search'),
  error: el('hub-error'),
  message: el('hub-message'),
  status: el('hub-status'),
  results: el('hub-results'),
  model: el('hub-model'),
  modelId: el('hub-model-id'),
  modelStatus: el('hub-model-status'),
  quants: el('hub-quants'),
  filesBox: el('hub-files-box'),
  files: el('hub-files'),
  filesCount: el('hub-files-count'),
  ctrl: null,
  modelCtrl: null,
  lastQuery: '',
  current: null,
  debounce: 0,
};

function hubError(message) {
  setText(hub.error, message || '');
  setHidden(hub.error, !message);
}

function hubMessage(message) {
  setText(hub.message, message || '');
  setHidden(hub.message, !message);
}

function node(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'text') n.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'title' || k === 'type') n.setAttribute(k, v);
    else n[k] = v;
  }
  for (const c of children) if (c != null) n.append(c);
  return n;
}

async function hubSearch(force = false) {
  const q = hub.input.value.trim();
  if (!q) {
    if (hub.ctrl) hub.ctrl.abort();
    hub.lastQuery = '';
    hub.results.replaceChildren();
    setText(hub.status, 'Search the Hugging Face Hub, then pick a model to see its quantizations.');
    setHidden(hub.status, false);
    hubError('');
    return;
  }
  if (q === hub.lastQuery && !force) return;
  hub.lastQuery = q;
  if (hub.ctrl) hub.ctrl.abort();
  const ctrl = new AbortController();
  hub.ctrl = ctrl;
  setText(hub.status, 'Searching…');
  setHidden(hub.status, false);
  try {
    const data = await api('GET', `api/hub/search?q=${enc(q)}&limit=20`, undefined, { signal: ctrl.signal });
    if (hub.ctrl !== ctrl) return;
    hubError('');
    renderResults((data && data.models) || []);
  } catch (e) {
    if (e.name === 'AbortError' || hub.ctrl !== ctrl) return;
    hub.lastQuery = '';
    hub.results.replaceChildren();
    setHidden(hub.status, true);
    hubError(`Search failed: ${e.message}`);
  }
}

function renderResults(models) {
  hub.results.replaceChildren();
  if (!models.length) {
    setText(hub.status, `No models match “${hub.lastQuery}”.`);
    setHidden(hub.status, false);
    return;
  }
  setHidden(hub.status, true);
  for (const m of models) {
    const id = String(m.id || '');
    const slash = id.indexOf('/');
    const title = node('span', { class: 'hub-id' },
      slash > 0 ? node('span', { class: 'hub-owner', text: id.slice(0, slash + 1) }) : null,
      node('span', { class: 'hub-name', text: slash > 0 ? id.slice(slash + 1) : id }));
    const meta = node('span', { class: 'hub-meta' },
      node('span', { 'data-testid': 'hub-downloads', title: 'downloads', text: `↓ ${fmtCount(m.downloads)}` }),
      node('span', { 'data-testid': 'hub-likes', title: 'likes', text: `♥ ${fmtCount(m.likes)}` }),
      m.last_modified ? node('span', { text: `updated ${fmtDate(m.last_modified)}` }) : null,
      m.gated ? node('span', { class: 'badge gated', 'data-testid': 'hub-gated', title: 'Gated: the service needs HF_TOKEN with access to it', text: 'gated' }) : null);
    const button = node('button', {
      class: 'hub-result', type: 'button', 'data-testid': 'hub-result', 'data-id': id,
      'aria-pressed': hub.current === id ? 'true' : 'false',
    }, title, meta);
    button.addEventListener('click', () => loadModel(id));
    hub.results.append(node('li', {}, button));
  }
}

function repoPath(id) {
  const [owner, ...rest] = id.split('/');
  if (!owner || !rest.length) return null;
  return `${enc(owner)}/${rest.map(enc).join('/')}`;
}

async function loadModel(id) {
  hub.current = id;
  for (const b of hub.results.querySelectorAll('.hub-result')) {
    b.setAttribute('aria-pressed', b.dataset.id === id ? 'true' : 'false');
  }
  hubMessage('');
  hubError('');
  hub.model.hidden = false;
  setText(hub.modelId, id);
  setText(hub.modelStatus, 'Loading files…');
  hub.quants.replaceChildren();
  hub.files.replaceChildren();
  hub.filesBox.hidden = true;
  const path = repoPath(id);
  if (!path) {
    setText(hub.modelStatus, '');
    hubError(`“${id}” has no owner/name form; it cannot be listed.`);
    return;
  }
  if (hub.modelCtrl) hub.modelCtrl.abort();
  const ctrl = new AbortController();
  hub.modelCtrl = ctrl;
  try {
    const data = await api('GET', `api/hub/models/${path}/files`, undefined, { signal: ctrl.signal });
    if (hub.modelCtrl !== ctrl) return;
    renderModel(id, data || {});
  } catch (e) {
    if (e.name === 'AbortError' || hub.modelCtrl !== ctrl) return;
    setText(hub.modelStatus, '');
    hubError(`Could not list the files of ${id}: ${e.message}`);
  }
}

function renderModel(id, data) {
  const quants = Array.isArray(data.quantizations) ? data.quantizations : [];
  const files = Array.isArray(data.files) ? data.files : [];
  setText(hub.modelStatus, quants.length
    ? `${quants.length} quantization${quants.length === 1 ? '' : 's'}`
    : 'No quantized GGUF files here. Single files can still be queued below.');
  for (const q of quants) {
    const count = Array.isArray(q.files) ? q.files.length : 0;
    const button = node('button', { class: 'btn sm primary', type: 'button', 'data-testid': 'hub-download', text: 'Download' });
    button.addEventListener('click', () => downloadQuant(id, q.name, button));
    hub.quants.append(node('li', { class: 'hub-quant', 'data-testid': 'hub-quant', 'data-quant': q.name },
      node('span', { class: 'q-name', 'data-testid': 'hub-quant-name', text: q.name }),
      node('span', { class: 'q-size', 'data-testid': 'hub-quant-size', text: fmtBytes(q.size) }),
      node('span', { class: 'q-files', 'data-testid': 'hub-quant-files', text: `${count} file${count === 1 ? '' : 's'}`, title: (q.files || []).join('\n') }),
      button));
  }
  if (files.length) {
    hub.filesBox.hidden = false;
    hub.filesBox.open = !quants.length;
    setText(hub.filesCount, String(files.length));
    for (const f of files) {
      const button = node('button', { class: 'btn sm', type: 'button', 'data-testid': 'hub-file-download', text: 'Download' });
      button.addEventListener('click', () => downloadFile(id, f.path, button));
      hub.files.append(node('li', { class: 'hub-file' },
        node('span', { class: 'f-path', text: f.path }),
        node('span', { class: 'f-size', text: f.size != null ? fmtBytes(f.size) : '' }),
        button));
    }
  }
}

async function queued(button, request, what) {
  const since = seq;
  button.disabled = true;
  const label = button.textContent;
  button.textContent = 'Queuing…';
  hubError('');
  try {
    const data = await request();
    const list = data && data.id ? [data] : listOf(data);
    for (const d of list) applyAnswer(d, since);
    render();
    button.textContent = 'Queued';
    hubMessage(`Queued ${list.length || 'the'} file${list.length === 1 ? '' : 's'} of ${what}.`);
    setTimeout(() => { button.textContent = label; button.disabled = false; }, 2000);
  } catch (e) {
    button.textContent = label;
    button.disabled = false;
    hubError(`Could not queue ${what}: ${e.message}`);
  }
}

function downloadQuant(id, quantization, button) {
  return queued(button,
    () => api('POST', `api/hub/models/${repoPath(id)}/download`, { quantization }),
    `${id} ${quantization}`);
}

function downloadFile(id, file, button) {
  return queued(button, () => api('POST', 'api/downloads', { hub: { repo: id, file } }), file);
}

hub.form.addEventListener('submit', (e) => {
  e.preventDefault();
  clearTimeout(hub.debounce);
  hubSearch(true);
});
hub.input.addEventListener('input', () => {
  clearTimeout(hub.debounce);
  const q = hub.input.value.trim();
  if (!q || q.length >= 2) hub.debounce = setTimeout(() => hubSearch(), 400);
});

// ---------------------------------------------------------------------------
// Start

setLive(false);
render();
drawSparkline();
showTab(location.hash.slice(1));
setInterval(tick, 1000);
connect();
