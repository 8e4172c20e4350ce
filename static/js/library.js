// The Library tab: the models on disk (libdata.js groups them), what each file says it
// is, where it is published, a delete behind an in-page confirmation, and the disk bar.
// Kept current by `library` websocket frames (events.js) and by reads: when the tab
// opens, after a delete or a rescan, and after a download completes.

import { api, enc } from './api.js';
import { copyText } from './copy.js';
import { el, node, setAttr, setHidden, setText } from './dom.js';
import { fmtBytes, fmtContext, fmtParams } from './format.js';
import { applyFrame, applyListing, baseOf, forget, groupsOf, lib, now } from './libdata.js';

const ui = {
  list: el('library'),
  empty: el('library-empty'),
  error: el('library-error'),
  summary: el('library-summary'),
  count: el('count-library'),
  rescan: el('library-rescan'),
  check: el('library-check'),
  bar: el('disk-bar'),
  fill: el('disk-fill'),
  total: el('disk-library'),
  saved: el('disk-saved'),
  savedBox: el('disk-saved-box'),
  free: el('disk-free'),
  dialog: el('lib-confirm'),
  what: el('lib-confirm-what'),
  files: el('lib-confirm-files'),
  note: el('lib-confirm-note'),
};
const deleting = new Set(); // model keys being deleted
const updating = new Set(); // model keys whose update is being queued

function libError(message) {
  setText(ui.error, message || '');
  setHidden(ui.error, !message);
}

let inFlight = null;
let again = false;
/** GET /api/library; a call during a read makes one more read after it. */
export function refreshLibrary() {
  if (inFlight) { again = true; return inFlight; }
  const since = now();
  inFlight = api('GET', 'api/library')
    .then((data) => { applyListing(data, since); libError(''); render(); })
    .catch((e) => { if (e.status !== 401) libError(`Could not read the library: ${e.message}`); })
    .finally(() => {
      inFlight = null;
      if (again) { again = false; refreshLibrary(); }
    });
  return inFlight;
}

let timers = [];
/**
 * A download completed: the service scans its file right after, so read the library a
 * little later, and once more in case that scan took longer. (The `library` frame
 * makes this redundant; it costs two reads per completed download.)
 */
export function scheduleLibrary() {
  for (const t of timers) clearTimeout(t);
  timers = [500, 2500].map((ms) => setTimeout(refreshLibrary, ms));
}

/** A `library` websocket frame. */
export function onLibraryFrame(msg) {
  applyFrame(msg);
  render();
}

function renderDisk() {
  const total = lib.bytesTotal;
  const free = lib.bytesFree;
  setText(ui.total, fmtBytes(total));
  setAttr(ui.total, 'data-bytes', total == null ? null : String(total));
  setText(ui.free, free == null ? 'unknown' : fmtBytes(free));
  setAttr(ui.free, 'data-bytes', free == null ? null : String(free));
  setText(ui.saved, fmtBytes(lib.bytesSaved));
  setHidden(ui.savedBox, !(lib.bytesSaved > 0));
  // What the library takes on disk: hard-linked copies count once.
  const used = Math.max(0, (total || 0) - (lib.bytesSaved || 0));
  const share = free == null || used + free === 0 ? 0 : used / (used + free);
  const pct = used > 0 ? Math.max(share * 100, 0.6) : 0;
  ui.fill.style.width = `${pct.toFixed(2)}%`;
  setAttr(ui.bar, 'aria-label', free == null
    ? `The library takes ${fmtBytes(used)}; free space unknown`
    : `The library takes ${fmtBytes(used)}; ${fmtBytes(free)} free`);
  setAttr(ui.bar, 'title', ui.bar.getAttribute('aria-label'));
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function fact(label, testid, value, title) {
  if (!value) return null;
  return node('span', { class: 'fact', title },
    node('span', { class: 'k', text: label }), ' ',
    node('b', { 'data-testid': testid, text: value }));
}

function badges(m) {
  const out = [];
  if (m.hfCache.length) {
    out.push(node('span', {
      class: 'badge pub', 'data-testid': 'lib-published', 'data-runtime': 'hf_cache',
      title: `HuggingFace cache (llama.cpp -hf, transformers, huggingface_hub):\n${m.hfCache.join('\n')}`,
      text: 'HF cache',
    }));
  }
  if (m.ollama) {
    out.push(node('span', {
      class: 'badge pub', 'data-testid': 'lib-published', 'data-runtime': 'ollama',
      title: `Ollama: ollama run ${m.ollama}`, text: 'Ollama',
    }));
  }
  if (m.lmstudio.length) {
    out.push(node('span', {
      class: 'badge pub', 'data-testid': 'lib-published', 'data-runtime': 'lmstudio',
      title: `LM Studio:\n${m.lmstudio.join('\n')}`, text: 'LM Studio',
    }));
  }
  for (const [runtime, why] of Object.entries(m.notPublished)) {
    out.push(node('span', { class: 'badge off', 'data-testid': 'lib-not-published', title: why, text: `not in ${runtime}` }));
  }
  if (m.update) {
    out.push(node('span', {
      class: 'badge upd', 'data-testid': 'lib-update',
      title: `A newer file on the Hub: revision ${m.update.revision || '?'}, ${fmtBytes(m.update.size)}`,
      text: 'update',
    }));
  }
  if (m.updateError) {
    out.push(node('span', { class: 'badge off', 'data-testid': 'lib-update-error', title: m.updateError, text: 'not checked' }));
  }
  return out;
}

function subline(m) {
  const bits = [];
  if (m.gguf && m.gguf.name) bits.push(m.gguf.name);
  if (m.parts.length < m.count) bits.push(`only ${m.parts.length} of its ${m.count} parts are here`);
  if (m.hashing) bits.push('sha256 pending');
  else if (m.sha256) bits.push(`sha256 ${m.sha256.slice(0, 12)}…`);
  return bits.join(' · ');
}

/** The commands that run a model now (`run`, by runtime), each with a copy button. */
function runBox(m) {
  const entries = Object.entries(m.run).filter(([, c]) => typeof c === 'string' && c);
  if (!entries.length) return null;
  return node('div', { class: 'lib-run', 'data-testid': 'lib-run' },
    ...entries.map(([runtime, command]) => {
      const code = node('code', { class: 'run-cmd', 'data-testid': 'lib-run-cmd', text: command });
      const button = node('button', {
        class: 'btn sm', type: 'button', 'data-testid': 'lib-copy', title: `Copy the ${runtime} command`, text: 'Copy',
      });
      button.addEventListener('click', async () => {
        const how = await copyText(command, code);
        button.textContent = how === 'copied' ? 'Copied' : 'Press Ctrl+C';
        button.dataset.copied = how;
        setTimeout(() => { button.textContent = 'Copy'; delete button.dataset.copied; }, 2000);
      });
      return node('div', { class: 'run-line', 'data-testid': 'lib-run-line', 'data-runtime': runtime },
        node('span', { class: 'k', text: runtime }), code, button);
    }));
}

function modelRow(m) {
  const busy = deleting.has(m.key);
  const paths = m.parts.map((f) => f.path).join('\n');
  const del = node('button', {
    class: 'btn sm danger', type: 'button', 'data-testid': 'lib-delete',
    title: `Delete ${plural(m.parts.length, 'file')} from disk`, text: busy ? 'Deleting…' : 'Delete',
  });
  del.disabled = busy;
  del.addEventListener('click', () => askDelete(m));
  const updateLabel = (u) => (u.fetchBytes == null ? 'Update'
    : `Update: ${fmtBytes(u.fetchBytes)} of ${fmtBytes(u.size)}`);
  const upd = m.update ? node('button', {
    class: 'btn sm primary', type: 'button', 'data-testid': 'lib-update-button',
    title: 'Download the newer file; the one on disk stays until the new one is verified',
    text: updating.has(m.key) ? 'Queuing…' : updateLabel(m.update),
  }) : null;
  if (upd) {
    upd.disabled = updating.has(m.key);
    upd.addEventListener('click', () => askUpdate(m));
  }
  const g = m.gguf;
  const facts = node('div', { class: 'lib-facts' },
    fact('arch', 'lib-arch', g && g.architecture),
    fact('params', 'lib-params', fmtParams(m.parameters), m.parameters ? `${m.parameters.toLocaleString('en-US')} parameters` : null),
    fact('quant', 'lib-quant', m.quantization),
    fact('context', 'lib-ctx', g && fmtContext(g.context_length), g && g.context_length ? `${g.context_length.toLocaleString('en-US')} tokens` : null),
    fact('size', 'lib-size', fmtBytes(m.size), `${m.size.toLocaleString('en-US')} bytes`),
    m.count > 1 ? fact('parts', 'lib-parts', `${m.parts.length}/${m.count}`) : null);
  const errors = m.errors.map((e) => node('p', { class: 'dl-error', 'data-testid': 'lib-error' },
    node('b', { class: 'err-kind', text: m.errors.length > 1 ? baseOf(e.path) : 'unreadable GGUF' }),
    node('span', { text: ': ' }),
    node('span', { class: 'err-msg', text: e.error })));
  return node('li', {
    class: `lib-model${m.errors.length ? ' damaged' : ''}`, 'data-testid': 'library-model',
    'data-key': m.key, 'data-path': m.parts[0].path,
  },
  node('div', { class: 'lib-main' },
    node('div', { class: 'lib-title' },
      node('span', { class: 'lib-name', 'data-testid': 'lib-name', title: paths, text: m.name }),
      node('span', { class: 'lib-sub', 'data-testid': 'lib-sub', text: subline(m) })),
    facts,
    runBox(m)),
  node('div', { class: 'lib-side' }, ...badges(m), upd, del),
  ...errors);
}

function groupBox(g) {
  const slash = g.key.lastIndexOf('/');
  const title = slash > 0
    ? node('h3', { class: 'lib-group-name' },
      node('span', { class: 'hub-owner', text: g.key.slice(0, slash + 1) }),
      node('span', { text: g.key.slice(slash + 1) }))
    : node('h3', { class: 'lib-group-name', text: g.label });
  const rev = g.revisions.length === 1 ? g.revisions[0] : null;
  const what = g.repo
    ? (rev ? node('span', { class: 'muted mono', title: `revision ${rev}`, text: `@ ${rev.slice(0, 7)}` }) : null)
    : node('span', { class: 'muted', title: 'Not from the Hub: grouped by folder', text: g.key ? 'folder' : 'top of download_dir' });
  return node('section', { class: 'lib-group card', 'data-testid': 'library-group', 'data-group': g.key },
    node('header', { class: 'lib-group-head' }, title, what,
      node('span', { class: 'count', text: String(g.models.length) })),
    node('ul', { class: 'lib-models' }, ...g.models.map(modelRow)));
}

export function render() {
  renderDisk();
  const groups = groupsOf([...lib.files.values()]);
  const models = groups.reduce((n, g) => n + g.models.length, 0);
  ui.list.replaceChildren(...groups.map(groupBox));
  setText(ui.count, lib.loaded ? String(models) : '');
  setText(ui.summary, lib.loaded ? `${plural(models, 'model')} · ${plural(lib.files.size, 'file')}` : '');
  setText(ui.empty, lib.loaded
    ? 'No models on disk yet. Download one from the Hub tab, or put GGUF files into download_dir and rescan.'
    : 'Loading the library…');
  setHidden(ui.empty, lib.loaded && models > 0);
}

/** The in-page confirmation; resolves true when "Delete" was chosen. */
function confirmDelete(m) {
  const n = m.parts.length;
  setText(ui.what, `${m.name}: ${plural(n, 'file')}, ${fmtBytes(m.size)}.`);
  ui.files.replaceChildren(...m.parts.map((f) => node('li', { text: f.path })));
  setText(ui.note, m.hfCache.length || m.ollama || m.lmstudio.length
    ? `${n === 1 ? 'The file is' : 'The files are'} removed from disk, with every link the service made (${[
      m.hfCache.length ? 'HuggingFace cache' : null, m.ollama ? 'Ollama' : null, m.lmstudio.length ? 'LM Studio' : null,
    ].filter(Boolean).join(', ')}). Nothing else is touched.`
    : `${n === 1 ? 'The file is' : 'The files are'} removed from disk. Nothing else is touched.`);
  if (typeof ui.dialog.showModal !== 'function') {
    return Promise.resolve(window.confirm(`Delete ${m.name} (${fmtBytes(m.size)}) from disk?`));
  }
  ui.dialog.returnValue = '';
  ui.dialog.showModal();
  return new Promise((resolve) => {
    ui.dialog.addEventListener('close', () => resolve(ui.dialog.returnValue === 'delete'), { once: true });
  });
}

const pathUrl = (path) => `api/library/${path.split('/').map(enc).join('/')}`;

async function askDelete(m) {
  if (deleting.has(m.key) || !(await confirmDelete(m))) return;
  deleting.add(m.key);
  render();
  libError('');
  try {
    for (const f of m.parts) {
      try {
        await api('DELETE', pathUrl(f.path));
      } catch (e) {
        if (e.status !== 404) { // 404: already gone, which is what was asked
          libError(e.status === 409
            ? `${f.path} is being written by a download; cancel it first.`
            : `Could not delete ${f.path}: ${e.message}`);
          break;
        }
      }
      forget(f.path);
    }
  } finally {
    deleting.delete(m.key);
    render();
    refreshLibrary();
  }
}

/** Queues the newer file of every part that has one (the Downloads tab shows it). */
async function askUpdate(m) {
  if (updating.has(m.key)) return;
  updating.add(m.key);
  render();
  try {
    for (const f of m.parts.filter((p) => p.update)) await api('POST', 'api/library/update', { path: f.path });
    libError('');
  } catch (e) {
    libError(`Could not queue the update: ${e.message}`);
  } finally {
    updating.delete(m.key);
    render();
  }
}

async function checkUpdates() {
  ui.check.disabled = true;
  setText(ui.check, 'Checking…');
  try {
    await api('POST', 'api/library/check-updates', {});
    libError('');
  } catch (e) {
    libError(`The update check failed: ${e.message}`);
  } finally {
    // The result arrives as a `library` frame; the button comes back at once.
    setTimeout(() => { ui.check.disabled = false; setText(ui.check, 'Check for updates'); }, 1000);
  }
}

async function rescan() {
  ui.rescan.disabled = true;
  setText(ui.rescan, 'Rescanning…');
  try {
    await api('POST', 'api/library/rescan', {});
    libError('');
  } catch (e) {
    libError(`Rescan failed: ${e.message}`);
  } finally {
    ui.rescan.disabled = false;
    setText(ui.rescan, 'Rescan');
    refreshLibrary();
  }
}

export function initLibrary() {
  ui.rescan.addEventListener('click', rescan);
  ui.check.addEventListener('click', checkUpdates);
  // A click on the backdrop (outside the form) cancels, as Escape does.
  ui.dialog.addEventListener('click', (e) => { if (e.target === ui.dialog) ui.dialog.close('cancel'); });
  render();
}
