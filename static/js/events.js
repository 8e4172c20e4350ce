// The websocket `/api/events`: connect, reconnect with backoff, and apply its frames
// (snapshot, progress, state, removed) to the store, and `library` frames to the
// Library tab. `progress` frames carry no
// `actions`: the download keeps the last ones a snapshot or state frame brought.

import { BASE, listOf, token } from './api.js';
import { hideTokenForm } from './auth.js';
import { setAttr, setText } from './dom.js';
import { onLibraryFrame, refreshLibrary, scheduleLibrary } from './library.js';
import { refreshHistory, refreshList, scheduleHistory } from './reads.js';
import {
  applySnapshot, changed, downloads, drop, isFeedLive, isFinished, progressed, setFeedLive, touch,
} from './store.js';

const PROGRESS_FIELDS = ['bytes_done', 'bytes_total', 'speed_bps', 'eta_secs', 'elapsed_secs'];
const conn = document.querySelector('[data-testid="conn-status"]');

let ws = null;
let backoff = 500;
let reconnectTimer = 0;

function wsUrl() {
  const u = new URL('api/events', BASE);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  if (token()) u.searchParams.set('token', token());
  return u.href;
}

export function setLive(live) {
  setFeedLive(live);
  setText(conn, live ? 'live' : 'reconnecting');
  setAttr(conn, 'data-live', live ? 'true' : 'false');
  setAttr(conn, 'title', live ? 'Connected: updates are live' : 'Connection lost: reconnecting');
  document.body.classList.toggle('offline', !live);
}

export function connect() {
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

export function reconnectNow() {
  backoff = 500;
  connect();
}

function onFrame(msg) {
  switch (msg.type) {
    case 'snapshot':
      applySnapshot(listOf(msg));
      hideTokenForm();
      changed();
      refreshHistory();
      refreshLibrary(); // (re)connected: what changed on disk meanwhile
      break;
    case 'progress': {
      const ids = [];
      for (const u of msg.updates || []) {
        const d = downloads.get(u.id);
        if (!d) continue;
        for (const k of PROGRESS_FIELDS) if (k in u) d[k] = u[k];
        ids.push(u.id);
      }
      progressed(ids);
      break;
    }
    case 'state': {
      const d = msg.download;
      if (!d || typeof d.id !== 'string') break;
      const before = downloads.get(d.id);
      touch(d);
      changed();
      if (isFinished(d) && (!before || !isFinished(before))) scheduleHistory();
      if (d.state === 'completed' && (!before || before.state !== 'completed')) scheduleLibrary();
      break;
    }
    case 'removed':
      if (typeof msg.id === 'string') { drop(msg.id); changed(); }
      break;
    case 'library':
      onLibraryFrame(msg);
      break;
    default:
      break; // frames added later: ignore
  }
}

window.addEventListener('online', () => { if (!isFeedLive()) reconnectNow(); });
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && !isFeedLive()) reconnectNow();
});
