// The API token form. A 401 anywhere (or a websocket that never opens) asks
// /api/stats whether the token is the problem, so that an upstream "unauthorized"
// passed through by a Hub route does not pop up the token form by mistake.

import { BASE, authHeaders, onUnauthorized, setToken, token } from './api.js';
import { el, setText } from './dom.js';

const panel = el('token-panel');
const input = el('token-input');
const note = el('token-note');
let probe = null;

export function checkAuth() {
  if (probe) return probe;
  probe = fetch(new URL('api/stats', BASE), { headers: authHeaders(), cache: 'no-store' })
    .then((r) => { if (r.status === 401) showTokenForm(); else if (r.ok) hideTokenForm(); })
    .catch(() => {})
    .finally(() => { probe = null; });
  return probe;
}

function showTokenForm() {
  setText(el('token-msg'), token()
    ? 'The saved API token was refused. Enter the current one:'
    : 'This service needs an API token.');
  if (panel.hidden) {
    panel.hidden = false;
    input.focus();
  }
}

export function hideTokenForm() {
  panel.hidden = true;
}

function save(value) {
  setToken(value);
  note.hidden = !token();
}

/** Wires the form; `onSaved`/`onForgotten` run once the token changed. */
export function initAuth({ onSaved, onForgotten }) {
  onUnauthorized(checkAuth);
  el('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) { input.focus(); return; }
    save(value);
    input.value = '';
    hideTokenForm();
    onSaved();
    checkAuth();
  });
  el('forget-token').addEventListener('click', () => {
    save('');
    onForgotten();
  });
  note.hidden = !token();
}
