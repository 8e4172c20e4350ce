// The queue and history lists: one row per download of the store, placed in order
// and patched in place; the buttons of a row, and the list-wide buttons.

import { api, enc } from './api.js';
import { el, setAttr, setHidden, setText, toast } from './dom.js';
import { refreshHistory, refreshList } from './reads.js';
import { allowed, makeView, updateError, updateNumbers, updateRow } from './rows.js';
import { setOrder, step } from './reorder.js';
import { changed, dirty, downloads, drop, isFinished, now, applyAnswer } from './store.js';

// Within equal queue positions (in practice: the ones without a position), running
// downloads come first, then queued, then paused. Order only: no button depends on it.
const RANK = { downloading: 0, retrying: 0, verifying: 0, queued: 1, paused: 2 };
const LABEL = {
  pause: 'Pause', resume: 'Resume', cancel: 'Cancel', retry: 'Retry',
  remove: 'Remove', 'remove-file': 'Remove with file',
};

const ui = {
  queue: el('queue'),
  history: el('history'),
  queueEmpty: el('queue-empty'),
  historyEmpty: el('history-empty'),
  historyFilter: el('history-filter'),
  countQueue: el('count-queue'),
  countHistory: el('count-history'),
};
const views = new Map(); // id → row view
const busy = new Set();  // ids with a request in flight

const cmpTime = (x, y) => (Date.parse(x) || 0) - (Date.parse(y) || 0);

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

/** Puts the rows of `list` into `container` in order, moving only what is out of place. */
function place(container, list) {
  let ref = container.firstElementChild;
  for (const d of list) {
    let v = views.get(d.id);
    if (!v) { v = makeView(d.id); views.set(d.id, v); dirty.add(d.id); }
    if (dirty.has(d.id)) updateRow(v, d);
    if (v.el === ref) ref = ref.nextElementSibling;
    else container.insertBefore(v.el, ref);
  }
}

export function render() {
  const live = [];
  const done = [];
  for (const d of downloads.values()) (isFinished(d) ? done : live).push(d);
  live.sort(cmpQueue);
  done.sort(cmpHistory);
  for (const [id, v] of views) {
    if (!downloads.has(id)) { v.el.remove(); views.delete(id); }
  }
  place(ui.queue, live);
  place(ui.history, done);
  dirty.clear();
  updateMoveButtons(live);

  setHidden(ui.queueEmpty, live.length > 0);
  setHidden(ui.historyEmpty, done.length > 0);
  setText(ui.countQueue, live.length ? String(live.length) : '');
  setText(ui.countHistory, done.length ? String(done.length) : '');
  const failed = done.filter((d) => d.state === 'failed').length;
  ui.countHistory.classList.toggle('alert', failed > 0);
  setAttr(ui.countHistory, 'title', failed ? `${failed} failed` : null);
}

// The first movable row cannot go up, the last cannot go down.
function updateMoveButtons(live) {
  const order = live.filter((d) => allowed(d).has('move')).map((d) => d.id);
  setOrder(order);
  order.forEach((id, i) => {
    const v = views.get(id);
    if (!v || busy.has(id)) return;
    v.btn.up.disabled = i === 0;
    v.btn.down.disabled = i === order.length - 1;
  });
}

/** A progress frame: only the numbers of the rows it names. */
export function renderProgress(ids) {
  for (const id of ids) {
    const v = views.get(id);
    const d = downloads.get(id);
    if (v && d) updateNumbers(v, d);
  }
}

async function act(id, action, button) {
  if (action === 'up' || action === 'down') { step(id, action === 'up' ? -1 : 1); return; }
  const d = downloads.get(id);
  const name = d ? (d.file_name || d.id) : id;
  if (action === 'remove-file'
    && !confirm(`Remove “${name}” from the list and delete its file from disk?`)) return;
  const since = now();
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
    changed();
  }
}

function onListClick(e) {
  const button = e.target.closest('button[data-action]');
  if (!button || button.disabled) return;
  const row = button.closest('.dl');
  if (row && row.dataset.id) act(row.dataset.id, button.dataset.action, button);
}

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

async function clearHistory(e) {
  const button = e.currentTarget;
  button.disabled = true;
  try {
    await api('DELETE', 'api/history');
    for (const [id, d] of downloads) if (isFinished(d)) drop(id);
    changed();
  } catch (err) {
    toast(`Clear history: ${err.message}`);
  } finally {
    button.disabled = false;
    refreshHistory();
  }
}

export function initLists() {
  ui.queue.addEventListener('click', onListClick);
  ui.history.addEventListener('click', onListClick);
  el('pause-all').addEventListener('click', (e) => whole('api/pause-all', e.currentTarget, 'Pause all'));
  el('resume-all').addEventListener('click', (e) => whole('api/resume-all', e.currentTarget, 'Resume all'));
  el('clear-history').addEventListener('click', clearHistory);
  ui.historyFilter.addEventListener('change', () => {
    setAttr(ui.history, 'data-filter', ui.historyFilter.value || null);
  });
}

/** Once a second: the countdown of the rows waiting out a retry. */
export function tickRetries() {
  const t = Date.now();
  for (const [id, v] of views) {
    const d = downloads.get(id);
    if (d && d.state === 'retrying') updateError(v, d, t);
  }
}
