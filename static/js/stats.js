// The header: totals and a one-minute sparkline of the total speed, computed from
// the store (no polling), and the page title while bytes flow.

import { setText } from './dom.js';
import { fmtSpeed } from './format.js';
import { downloads, isFeedLive } from './store.js';

const SAMPLES = 60;
const ACTIVE = new Set(['downloading', 'retrying', 'verifying']); // a counter, not a button
const q = (t) => document.querySelector(`[data-testid="${t}"]`);
const ui = {
  speed: q('stats-speed'),
  active: q('stats-active'),
  queued: q('stats-queued'),
  paused: q('stats-paused'),
  line: document.querySelector('.spark-line'),
  area: document.querySelector('.spark-area'),
};

const samples = new Array(SAMPLES).fill(0);
let totalSpeed = 0;

export function updateStats() {
  let speed = 0;
  let active = 0;
  let queued = 0;
  let paused = 0;
  for (const d of downloads.values()) {
    if (d.state === 'downloading') speed += d.speed_bps || 0;
    if (ACTIVE.has(d.state)) active++;
    else if (d.state === 'queued') queued++;
    else if (d.state === 'paused') paused++;
  }
  totalSpeed = speed;
  setText(ui.speed, fmtSpeed(speed));
  setText(ui.active, String(active));
  setText(ui.queued, String(queued));
  setText(ui.paused, String(paused));
}

export function drawSparkline() {
  const max = Math.max(...samples, 1);
  const w = 120;
  const h = 24;
  const dx = w / (SAMPLES - 1);
  let line = '';
  samples.forEach((s, i) => {
    const x = (i * dx).toFixed(1);
    const y = (h - 1 - (s / max) * (h - 3)).toFixed(1);
    line += `${i ? 'L' : 'M'}${x} ${y}`;
  });
  ui.line.setAttribute('d', line);
  ui.area.setAttribute('d', `${line}L${w} ${h}L0 ${h}Z`);
  const peak = Math.max(...samples);
  ui.line.parentNode.setAttribute('aria-label', `peak ${fmtSpeed(peak)} over the last minute`);
}

/** Once a second: a new sample, and the title. */
export function sampleSpeed() {
  samples.push(isFeedLive() ? totalSpeed : 0);
  samples.shift();
  drawSparkline();
  document.title = totalSpeed > 0 ? `↓ ${fmtSpeed(totalSpeed)} · model-manager` : 'model-manager';
}
