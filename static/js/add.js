// The form that adds a URL to the queue.

import { api } from './api.js';
import { el, setHidden, setText } from './dom.js';
import { basename } from './format.js';
import { applyAnswer, changed, now } from './store.js';

const form = el('add-form');
const url = el('add-url');
const name = el('add-file-name');
const sha = el('add-sha256');
const paused = el('add-start-paused');
const error = el('add-error');
const submit = form.querySelector('[data-testid="add-submit"]');

function showError(message) {
  setText(error, message);
  setHidden(error, !message);
}

function body() {
  const b = { url: url.value.trim() };
  const fileName = name.value.trim();
  const digest = sha.value.trim().toLowerCase();
  if (fileName) b.file_name = fileName;
  if (digest) b.sha256 = digest;
  if (paused.checked) b.start_paused = true;
  return b;
}

async function onSubmit(e) {
  e.preventDefault();
  if (!url.value.trim()) { showError('Enter the URL of a file to download.'); url.focus(); return; }
  const since = now();
  submit.disabled = true;
  showError('');
  try {
    applyAnswer(await api('POST', 'api/downloads', body()), since);
    changed();
    form.reset();
    name.placeholder = 'File name (from URL)';
    url.focus();
  } catch (err) {
    showError(err.message);
  } finally {
    submit.disabled = false;
  }
}

export function initAddForm() {
  url.addEventListener('input', () => {
    name.placeholder = basename(url.value.trim()) || 'File name (from URL)';
    if (!error.hidden) showError('');
  });
  form.addEventListener('submit', onSubmit);
}
