// The REST API: one JSON request helper and the API token it sends.
// The token lives in localStorage; the websocket reads it through `token()` too.

export const BASE = new URL('./', location.href);
export const enc = encodeURIComponent;

let saved = '';
try { saved = localStorage.getItem('mm_token') || ''; } catch { /* storage disabled */ }

export const token = () => saved;

/** Keeps the token (or forgets it, for ''), in this browser when storage allows. */
export function setToken(value) {
  saved = value;
  try {
    if (value) localStorage.setItem('mm_token', value);
    else localStorage.removeItem('mm_token');
  } catch { /* storage disabled: keep it for this page only */ }
}

export function authHeaders() {
  return saved ? { Authorization: `Bearer ${saved}` } : {};
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};
/** Called on every 401 (auth.js decides whether the token is the problem). */
export function onUnauthorized(fn) { unauthorized = fn; }

/** One JSON request. Throws ApiError carrying the contract's error message. */
export async function api(method, path, body, { signal } = {}) {
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
    if (res.status === 401) unauthorized();
    throw errorOf(res, data, text);
  }
  return data;
}

function errorOf(res, data, text) {
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
  return new ApiError(res.status, code, message);
}

/** The download list of any answer: `{downloads}`, `{history}`, `{items}` or a bare array. */
export function listOf(data) {
  if (Array.isArray(data)) return data;
  if (data && Array.isArray(data.downloads)) return data.downloads;
  if (data && Array.isArray(data.history)) return data.history;
  if (data && Array.isArray(data.items)) return data.items;
  return [];
}
