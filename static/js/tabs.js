// The four views (queue, history, hub, library) as tabs, kept in the URL's hash.

import { el } from './dom.js';
import { refreshLibrary } from './library.js';
import { refreshHistory } from './reads.js';

const TABS = ['queue', 'history', 'hub', 'library'];

export function showTab(name, { focus = false } = {}) {
  if (!TABS.includes(name)) name = 'queue';
  for (const t of TABS) {
    const tab = el(`tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', on ? 'true' : 'false');
    tab.tabIndex = on ? 0 : -1;
    el(`panel-${t}`).hidden = !on;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  if (name === 'history') refreshHistory();
  if (name === 'library') refreshLibrary();
  if (name === 'hub' && focus) el('hub-search').focus();
}

export function initTabs() {
  for (const t of TABS) {
    el(`tab-${t}`).addEventListener('click', () => showTab(t, { focus: true }));
  }
  document.querySelector('.tabs').addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowRight' && e.key !== 'ArrowLeft') return;
    const i = TABS.findIndex((t) => el(`tab-${t}`).getAttribute('aria-selected') === 'true');
    const next = TABS[(i + (e.key === 'ArrowRight' ? 1 : TABS.length - 1)) % TABS.length];
    showTab(next);
    el(`tab-${next}`).focus();
  });
  window.addEventListener('hashchange', () => showTab(location.hash.slice(1)));
}
