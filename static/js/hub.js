// The Hub tab: search the Hugging Face Hub, list a model's quantizations and files,
// and queue one with a click.

import { api, enc, listOf } from './api.js';
import { el, node, setHidden, setText } from './dom.js';
import { fmtBytes, fmtCount, fmtDate } from './format.js';
import { applyAnswer, changed, now } from './store.js';

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
      node('span', { class: 'q-title' },
        node('span', { class: 'q-name', 'data-testid': 'hub-quant-name', text: q.name || 'default' }),
        q.default ? node('span', {
          class: 'badge', 'data-testid': 'hub-quant-default',
          title: 'What `llama-server -hf` and `pull` take when no quantization is named', text: 'default',
        }) : null),
      node('span', { class: 'q-size', 'data-testid': 'hub-quant-size', text: fmtBytes(q.size) }),
      node('span', {
        class: 'q-files', 'data-testid': 'hub-quant-files',
        text: `${count} file${count === 1 ? '' : 's'}${q.mmproj ? ' + mmproj' : ''}`,
        title: [...(q.files || []), ...(q.mmproj ? [`${q.mmproj} (the projector llama.cpp fetches with it)`] : [])].join('\n'),
      }),
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
  const since = now();
  button.disabled = true;
  const label = button.textContent;
  button.textContent = 'Queuing…';
  hubError('');
  try {
    const data = await request();
    const list = data && data.id ? [data] : listOf(data);
    for (const d of list) applyAnswer(d, since);
    changed();
    // `already`: the file is here (checked against the Hub) or downloading now.
    const here = list.filter((d) => d.already).length;
    if (here && here === list.length) {
      button.textContent = 'Up to date';
      hubMessage(`${what} is already here or downloading: nothing new was queued.`);
    } else {
      button.textContent = 'Queued';
      hubMessage(`Queued ${list.length - here || 'the'} file${list.length - here === 1 ? '' : 's'} of ${what}.`);
    }
    setTimeout(() => { button.textContent = label; button.disabled = false; }, 2000);
  } catch (e) {
    button.textContent = label;
    button.disabled = false;
    hubError(`Could not queue ${what}: ${e.message}`);
  }
}

function downloadQuant(id, quantization, button) {
  return queued(button,
    () => api('POST', `api/hub/models/${repoPath(id)}/download`, quantization ? { quantization } : {}),
    quantization ? `${id} ${quantization}` : id);
}

function downloadFile(id, file, button) {
  return queued(button, () => api('POST', 'api/downloads', { hub: { repo: id, file } }), file);
}

export function initHub() {
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
}
