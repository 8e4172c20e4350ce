// Numbers and times for people: bytes, speeds, durations, percentages, dates.
// Pure functions, no DOM.

export function fmtBytes(n) {
  if (n == null || !Number.isFinite(n)) return '?';
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
  let v = Math.max(0, n);
  let i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  if (i === 0) return `${Math.round(v)} B`;
  const digits = v < 10 ? 2 : v < 100 ? 1 : 0;
  return `${v.toFixed(digits)} ${units[i]}`;
}

export const fmtSpeed = (bps) => `${fmtBytes(bps || 0)}/s`;

export function fmtDuration(secs) {
  if (secs == null || !Number.isFinite(secs) || secs < 0) return '—';
  const s = Math.round(secs);
  if (s < 60) return `${s}s`;
  const pad = (x) => String(x).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function fmtPercent(p) {
  if (p >= 100) return '100%';
  return `${(Math.floor(p * 10) / 10).toFixed(1)}%`;
}

const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
export const fmtCount = (n) => (Number.isFinite(n) ? compact.format(n) : '0');

export function fmtWhen(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const now = new Date();
  const time = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })}, ${time}`;
}

export function fmtDate(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const d = new Date(t);
  const sameYear = d.getFullYear() === new Date().getFullYear();
  return d.toLocaleDateString(undefined, sameYear
    ? { month: 'short', day: 'numeric' }
    : { year: 'numeric', month: 'short', day: 'numeric' });
}

/** The last path segment of a URL, decoded; '' when there is none. */
export function basename(url) {
  try {
    const p = new URL(url).pathname.split('/').filter(Boolean);
    return p.length ? decodeURIComponent(p[p.length - 1]) : '';
  } catch {
    return '';
  }
}

/** A parameter count as people say it: "1.2 B", "494 M", "15 M" (1000s, not 1024s). */
export function fmtParams(n) {
  if (n == null || !Number.isFinite(n) || n <= 0) return '';
  const units = ['', 'K', 'M', 'B', 'T'];
  let v = n;
  let i = 0;
  while (v >= 999.5 && i < units.length - 1) { v /= 1000; i++; }
  if (i === 0) return String(Math.round(v));
  const s = v < 9.95 ? v.toFixed(1).replace(/\.0$/, '') : String(Math.round(v));
  return `${s} ${units[i]}`;
}

/** A context length in tokens: "128 K" for 131072 (models use powers of two), else "100,000". */
export function fmtContext(n) {
  if (n == null || !Number.isFinite(n) || n <= 0) return '';
  if (n % 1048576 === 0) return `${n / 1048576} M`;
  if (n % 1024 === 0) return `${n / 1024} K`;
  return n.toLocaleString('en-US');
}
