// Small DOM helpers that write only when something changed (progress frames arrive
// every ~300 ms; untouched nodes cost no layout), and the toast.

export const el = (id) => document.getElementById(id);

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function setAttr(node, name, value) {
  if (value == null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

export function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

/** `node('span', {class: 'x', text: 'y', 'data-id': 1}, child…)`. */
export function node(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') n.className = v;
    else if (k === 'text') n.textContent = v;
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'title' || k === 'type') n.setAttribute(k, v);
    else n[k] = v;
  }
  for (const c of children) if (c != null) n.append(c);
  return n;
}

const toastEl = el('toast');
let toastTimer = 0;

/** A message at the bottom of the page for six seconds (a click dismisses it). */
export function toast(message, kind = 'error') {
  setText(toastEl, message);
  toastEl.dataset.kind = kind;
  toastEl.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toastEl.hidden = true; }, 6000);
}
toastEl.addEventListener('click', () => { toastEl.hidden = true; });
