// Reordering the queue: the up/down buttons and drag and drop. What can move is
// what the service says can (`move` in a download's `actions`); `setOrder` is told
// those ids in display order by every render.

import { api, enc } from './api.js';
import { el, toast } from './dom.js';
import { refreshList } from './reads.js';
import { changed, dirty, downloads } from './store.js';

const queue = el('queue');
let movable = []; // ids of the downloads that may move, in display order

export function setOrder(ids) { movable = ids; }

/** One step up or down among the movable downloads. */
export function step(id, by) {
  const i = movable.indexOf(id);
  const j = i + by;
  if (i < 0 || j < 0 || j >= movable.length) return;
  moveTo(id, j);
}

/** Moves a download to index `j` of the movable ones (their positions are taken in order). */
async function moveTo(id, j) {
  const order = movable.slice();
  const i = order.indexOf(id);
  if (i < 0 || j === i) return;
  const rows = order.map((x) => downloads.get(x)).filter(Boolean);
  const positions = rows.map((d) => d.position).filter(Number.isInteger).sort((a, b) => a - b);
  const target = Number.isInteger(positions[j]) ? positions[j] : j;
  // Optimistic: show the new order at once; the list read below settles it.
  if (positions.length === rows.length) {
    order.splice(i, 1);
    order.splice(j, 0, id);
    order.forEach((x, k) => {
      const d = downloads.get(x);
      if (d && d.position !== positions[k]) { d.position = positions[k]; dirty.add(x); }
    });
    changed();
  }
  try {
    await api('POST', `api/downloads/${enc(id)}/move`, { position: target });
  } catch (e) {
    toast(`Move: ${e.message}`);
  }
  await refreshList();
}

// Drag and drop among movable rows: the dragged one takes the place of the row it is
// dropped on (after it when moving down, before it when moving up).
let dragId = null;

function clearDropMarks() {
  for (const n of queue.querySelectorAll('.drop-before, .drop-after')) {
    n.classList.remove('drop-before', 'drop-after');
  }
}

function dropTarget(e) {
  const row = e.target.closest && e.target.closest('.dl');
  if (!row || !dragId || row.dataset.id === dragId) return null;
  const from = movable.indexOf(dragId);
  const to = movable.indexOf(row.dataset.id);
  if (from < 0 || to < 0) return null;
  return { row, from, to };
}

queue.addEventListener('dragstart', (e) => {
  const row = e.target.closest && e.target.closest('.dl');
  if (!row || !movable.includes(row.dataset.id)) { e.preventDefault(); return; }
  dragId = row.dataset.id;
  e.dataTransfer.effectAllowed = 'move';
  e.dataTransfer.setData('text/plain', dragId);
  row.classList.add('dragging');
});

queue.addEventListener('dragover', (e) => {
  const t = dropTarget(e);
  clearDropMarks();
  if (!t) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'move';
  t.row.classList.add(t.to > t.from ? 'drop-after' : 'drop-before');
});

queue.addEventListener('dragleave', (e) => {
  if (!queue.contains(e.relatedTarget)) clearDropMarks();
});

queue.addEventListener('drop', (e) => {
  const t = dropTarget(e);
  clearDropMarks();
  if (!t) return;
  e.preventDefault();
  const id = dragId;
  dragId = null;
  moveTo(id, t.to);
});

queue.addEventListener('dragend', () => {
  dragId = null;
  clearDropMarks();
  for (const n of queue.querySelectorAll('.dragging')) n.classList.remove('dragging');
});
