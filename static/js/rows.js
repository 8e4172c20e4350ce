// One download's row: built from the <template>, patched in place. Which buttons a
// row shows comes from the download's `actions` alone (the service's lifecycle
// decides them); the page keeps no table of which state allows what.

import { setAttr, setHidden, setText } from './dom.js';
import { basename, fmtBytes, fmtDuration, fmtPercent, fmtSpeed, fmtWhen } from './format.js';
import { isFinished } from './store.js';

const template = document.getElementById('row-template');

/** The contract action each row button (its `data-action`) stands for. */
export const BUTTON_ACTION = {
  pause: 'pause',
  resume: 'resume',
  cancel: 'cancel',
  retry: 'retry',
  up: 'move',
  down: 'move',
  remove: 'delete',
  'remove-file': 'delete',
};

/** The actions the service allows on `d` now (none when it sent no list). */
export const allowed = (d) => new Set(Array.isArray(d.actions) ? d.actions : []);

export function makeView(id) {
  const li = template.content.firstElementChild.cloneNode(true);
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
  return v;
}

function sourceLine(d) {
  if (d.source && d.source.kind === 'hub') {
    const rev = d.source.revision && d.source.revision !== 'main' ? `@${d.source.revision}` : '';
    return `hub · ${d.source.repo}${rev}`;
  }
  return (d.url || '').replace(/^https?:\/\//, '');
}

/** Everything of a row: after a state change, or when it is first drawn. */
export function updateRow(v, d) {
  const s = d.state;
  setAttr(v.el, 'data-id', d.id);
  setAttr(v.el, 'data-state', s);
  setText(v.name, d.file_name || basename(d.url) || d.id);
  setAttr(v.name, 'title', d.path || d.file_name || null);
  setText(v.sub, sourceLine(d));
  setAttr(v.sub, 'title', d.url || null);

  setText(v.state, s);
  const showPos = Number.isInteger(d.position); // null unless it waits in the queue
  setText(v.pos, showPos ? `#${d.position + 1}` : '');
  setHidden(v.pos, !showPos);

  setText(v.when, d.finished_at && isFinished(d) ? `${s} ${fmtWhen(d.finished_at)}` : '');
  updateNumbers(v, d);
  updateError(v, d, Date.now());
  updateButtons(v, d);
}

function updateButtons(v, d) {
  const can = allowed(d);
  for (const [name, b] of Object.entries(v.btn)) setHidden(b, !can.has(BUTTON_ACTION[name]));
  // Both remove buttons are `delete`; "+ file" only differs from the plain one when a
  // file sits under its final name, which the contract says is a completed download.
  if (d.state !== 'completed') setHidden(v.btn['remove-file'], true);
  const draggable = can.has('move');
  if (v.el.draggable !== draggable) v.el.draggable = draggable;
}

/** The numbers only: what a progress frame changes. */
export function updateNumbers(v, d) {
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

/** The error line: the kind and message, and for a retry when the next one comes. */
export function updateError(v, d, now) {
  const s = d.state;
  const show = (s === 'failed' || s === 'retrying') && (d.error || s === 'retrying');
  setHidden(v.error, !show);
  if (!show) {
    for (const n of [v.errKind, v.errSep, v.errMsg, v.errRetry]) setText(n, '');
    return;
  }
  const err = d.error || {};
  setText(v.errKind, err.kind || (s === 'retrying' ? 'retrying' : 'error'));
  setText(v.errMsg, err.message || '');
  setText(v.errSep, err.message ? ': ' : '');
  setText(v.errRetry, retryNote(d, now));
}

function retryNote(d, now) {
  if (d.state === 'failed') return d.attempt > 1 ? ` — after ${d.attempt} attempts` : '';
  const parts = [];
  if (d.attempt) parts.push(`attempt ${d.attempt}`);
  const at = Date.parse(d.next_retry_at);
  if (Number.isFinite(at)) {
    const left = Math.max(0, Math.ceil((at - now) / 1000));
    const time = new Date(at).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    parts.push(`next retry at ${time}${left > 0 ? ` (in ${fmtDuration(left)})` : ' (now)'}`);
  }
  return parts.length ? ` — ${parts.join(', ')}` : '';
}
