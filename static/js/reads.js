// REST reads into the store: the live list (when the websocket is down, and after a
// reorder) and the history (which the websocket snapshot does not carry in full).

import { api, listOf } from './api.js';
import { el, setHidden, setText } from './dom.js';
import { applyList, changed, isFinished, isLive, now, snapshotSince } from './store.js';

const historyError = el('history-error');

let listInFlight = null;
/** GET /api/downloads; concurrent calls share one request. */
export function refreshList() {
  if (listInFlight) return listInFlight;
  const since = now();
  listInFlight = api('GET', 'api/downloads')
    .then((data) => {
      if (snapshotSince(since)) return;
      applyList(listOf(data), since, isLive);
      changed();
    })
    .catch(() => {})
    .finally(() => { listInFlight = null; });
  return listInFlight;
}

let historyTimer = 0;
let historyInFlight = false;
let historyAgain = false;

/** A history read soon (several finishes in a row make one read). */
export function scheduleHistory(delay = 250) {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(refreshHistory, delay);
}

export async function refreshHistory() {
  clearTimeout(historyTimer);
  if (historyInFlight) { historyAgain = true; return; }
  historyInFlight = true;
  const since = now();
  try {
    const data = await api('GET', 'api/history?limit=50');
    applyList(listOf(data), since, isFinished);
    setHidden(historyError, true);
    changed();
  } catch (e) {
    if (e.status) {
      setText(historyError, `Could not load the history: ${e.message}`);
      setHidden(historyError, false);
    }
  } finally {
    historyInFlight = false;
    if (historyAgain) { historyAgain = false; scheduleHistory(0); }
  }
}
