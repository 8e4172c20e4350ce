// The model library as the page knows it: path → file (the contract's shape) and the
// disk totals, written by `GET /api/library` and by `library` websocket frames; and
// how files make models (split parts together) and models make groups (by repo).
// Pure: no DOM, no requests.

export const lib = {
  files: new Map(), // path → file
  bytesTotal: null,
  bytesSaved: 0,
  bytesFree: null,
  loaded: false,
};

// `seq` orders frames against reads, as in store.js: a read that started before a
// frame about a path must not bring back what the frame changed or removed.
let seq = 0;
const touched = new Map(); // path → seq of the last frame (or own delete) about it
let totalsSeq = -1;

/** The current sequence number: pass it back to `applyListing`. */
export const now = () => seq;

function takeTotals(m) {
  if (Number.isFinite(m.bytes_total)) lib.bytesTotal = m.bytes_total;
  if (Number.isFinite(m.bytes_saved_by_links)) lib.bytesSaved = m.bytes_saved_by_links;
  if ('bytes_free' in m) lib.bytesFree = Number.isFinite(m.bytes_free) ? m.bytes_free : null;
}

const isFile = (f) => f && typeof f.path === 'string';

/** Merges a `GET /api/library` answer to a read that started at `since`. */
export function applyListing(data, since) {
  const files = Array.isArray(data && data.files) ? data.files : [];
  const seen = new Set();
  for (const f of files) {
    if (!isFile(f)) continue;
    seen.add(f.path);
    if ((touched.get(f.path) ?? -1) <= since) lib.files.set(f.path, f);
  }
  for (const path of [...lib.files.keys()]) {
    if (!seen.has(path) && (touched.get(path) ?? -1) <= since) lib.files.delete(path);
  }
  if (data && totalsSeq <= since) takeTotals(data);
  lib.loaded = true;
}

/** A `library` websocket frame: changed files by path, removed paths, new totals. */
export function applyFrame(msg) {
  seq++;
  for (const f of Array.isArray(msg.files) ? msg.files : []) {
    if (!isFile(f)) continue;
    lib.files.set(f.path, f);
    touched.set(f.path, seq);
  }
  for (const path of Array.isArray(msg.removed) ? msg.removed : []) {
    if (typeof path !== 'string') continue;
    lib.files.delete(path);
    touched.set(path, seq);
  }
  takeTotals(msg);
  totalsSeq = seq;
}

/** A file this page deleted (a later read or frame brings the totals). */
export function forget(path) {
  lib.files.delete(path);
  touched.set(path, ++seq);
}

// llama.cpp's llama_ftype (`general.file_type`), for files whose name says no quantization.
const FILE_TYPES = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 7: 'Q8_0', 8: 'Q5_0', 9: 'Q5_1', 10: 'Q2_K',
  11: 'Q3_K_S', 12: 'Q3_K_M', 13: 'Q3_K_L', 14: 'Q4_K_S', 15: 'Q4_K_M', 16: 'Q5_K_S',
  17: 'Q5_K_M', 18: 'Q6_K', 19: 'IQ2_XXS', 20: 'IQ2_XS', 21: 'Q2_K_S', 22: 'IQ3_XS',
  23: 'IQ3_XXS', 24: 'IQ1_S', 25: 'IQ4_NL', 26: 'IQ3_S', 27: 'IQ3_M', 28: 'IQ2_S',
  29: 'IQ2_M', 30: 'IQ4_XS', 31: 'IQ1_M', 32: 'BF16', 36: 'TQ1_0', 37: 'TQ2_0', 38: 'MXFP4',
};

// gguf-split's part names: `<model>-00001-of-00003.gguf`.
const SPLIT_NAME = /-(\d{5})-of-(\d{5})\.gguf$/i;

/** Which model a file belongs to, and which part of it it is. */
export function partOf(f) {
  const m = SPLIT_NAME.exec(f.path);
  if (m) return { key: `${f.path.slice(0, m.index)}.gguf`, no: Number(m[1]) - 1, count: Number(m[2]) };
  const s = f.gguf && f.gguf.split;
  return { key: f.path, no: s ? s.no : 0, count: s ? s.count : 1 };
}

const dirOf = (path) => (path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '');
export const baseOf = (path) => path.slice(path.lastIndexOf('/') + 1);
const byName = (a, b) => a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });

/** One model from its parts (one file, or every part of a split GGUF present). */
function modelOf(key, parts) {
  parts.sort((a, b) => partOf(a).no - partOf(b).no);
  const head = parts.find((f) => f.gguf && f.gguf.architecture) || parts.find((f) => f.gguf) || parts[0];
  const g = head.gguf || null;
  const counted = parts.filter((f) => f.gguf);
  const fileType = g && g.file_type != null ? FILE_TYPES[g.file_type] : undefined;
  return {
    key,
    name: baseOf(key),
    parts,
    count: Math.max(...parts.map((f) => partOf(f).count)),
    size: parts.reduce((s, f) => s + (f.size || 0), 0),
    gguf: g,
    parameters: counted.length ? counted.reduce((s, f) => s + (f.gguf.parameters || 0), 0) : null,
    quantization: (parts.find((f) => f.quantization) || {}).quantization || fileType || null,
    errors: parts.filter((f) => f.error).map((f) => ({ path: f.path, error: f.error })),
    hfCache: parts.map((f) => f.runtimes && f.runtimes.hf_cache).filter(Boolean),
    ollama: (parts.find((f) => f.runtimes && f.runtimes.ollama) || { runtimes: {} }).runtimes.ollama || null,
    lmstudio: parts.map((f) => f.runtimes && f.runtimes.lmstudio).filter(Boolean),
    notPublished: Object.assign({}, ...parts.map((f) => (f.runtimes && f.runtimes.not_published) || {})),
    run: (parts.find((f) => f.run && Object.keys(f.run).length) || {}).run || {},
    update: updateOf(parts),
    updateError: (parts.find((f) => f.update_error) || {}).update_error || null,
    hashing: parts.some((f) => !f.sha256),
    sha256: parts.length === 1 ? parts[0].sha256 || null : null,
  };
}

/**
 * The library as groups: by repo for Hub files, else by folder; the files at the top
 * of download_dir last, as "Other files". Each group's models sorted by name.
 */
export function groupsOf(files) {
  const groups = new Map(); // key → {key, repo, folder, revisions, byModel}
  for (const f of files) {
    const key = f.repo || dirOf(f.path);
    let g = groups.get(key);
    if (!g) {
      g = { key, repo: null, revisions: new Set(), byModel: new Map() };
      groups.set(key, g);
    }
    if (f.repo) g.repo = f.repo;
    if (f.revision) g.revisions.add(f.revision);
    const { key: mk } = partOf(f);
    if (!g.byModel.has(mk)) g.byModel.set(mk, []);
    g.byModel.get(mk).push(f);
  }
  const out = [...groups.values()].map((g) => ({
    key: g.key,
    repo: g.repo,
    label: g.key || 'Other files',
    revisions: [...g.revisions],
    models: [...g.byModel].map(([k, parts]) => modelOf(k, parts)).sort((a, b) => byName(a.name, b.name)),
  }));
  return out.sort((a, b) => (!a.key - !b.key) || byName(a.label, b.label));
}

// The update of a model's parts together: its size, and what it will fetch once every
// part's cost is known (a Xet-backed file fetches only the chunks not on disk).
function updateOf(parts) {
  const ups = parts.filter((f) => f.update).map((f) => f.update);
  if (!ups.length) return null;
  const known = ups.every((u) => u.fetch_bytes != null);
  return {
    revision: ups[0].revision,
    size: ups.reduce((s, u) => s + (u.size || 0), 0),
    fetchBytes: known ? ups.reduce((s, u) => s + u.fetch_bytes, 0) : null,
  };
}
