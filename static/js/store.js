// Every download the page knows: id → download, in the contract's shape (with its
// `actions`). The websocket and a few REST reads write it; whoever writes calls
// `changed()`, and the subscribers (the lists, the stats) redraw.
//
// `seq` orders websocket events against REST reads: a read that started before an
// event about the same id must not overwrite it with older data.

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

/** Finished downloads make up the history; the rest is the queue. */
export const isFinished = (d) => FINISHED.has(d.state);
export const isLive = (d) => !isFinished(d);

export const downloads = new Map(); // id → download
const touched = new Map();  // id → seq of the last websocket/API write
const tombs = new Map();    // id → seq at which it was removed
/** Ids whose row needs a full update (not only its numbers). */
export const dirty = new Set();
let seq = 0;
let snapshotSeq = -1;
let feedLive = false;

/** The current sequence number: pass it back to `applyList`/`applyAnswer`. */
export const now = () => seq;

function put(d) {
  if (!d || typeof d.id !== 'string') return;
  downloads.set(d.id, d);
  dirty.add(d.id);
}

/** A fresh, authoritative write (websocket frame, or an API answer not yet overtaken). */
export function touch(d) {
  put(d);
  touched.set(d.id, ++seq);
}

export function drop(id) {
  downloads.delete(id);
  touched.delete(id);
  tombs.set(id, ++seq);
}

const newerThan = (id, since) => (touched.get(id) ?? -1) > since || (tombs.get(id) ?? -1) > since;

/** Applies a download returned by the API unless the websocket already said something newer. */
export function applyAnswer(d, since) {
  if (!d || typeof d.id !== 'string' || newerThan(d.id, since)) return;
  touch(d);
}

/** Merges a REST list read that started at `since`; prunes entries of `scope` it lacks. */
export function applyList(list, since, scope) {
  const seen = new Set();
  for (const d of list) {
    if (!d || typeof d.id !== 'string') continue;
    seen.add(d.id);
    if (!newerThan(d.id, since)) put(d);
  }
  for (const [id, d] of downloads) {
    if (!seen.has(id) && scope(d) && (touched.get(id) ?? -1) <= since) {
      downloads.delete(id);
      touched.delete(id);
    }
  }
}

/** The websocket's full list: replaces every live download at once. */
export function applySnapshot(list) {
  const ids = new Set();
  seq++;
  for (const d of list) {
    if (!d || typeof d.id !== 'string') continue;
    ids.add(d.id);
    put(d);
    touched.set(d.id, seq);
  }
  for (const [id, d] of downloads) {
    if (!ids.has(id) && isLive(d)) { downloads.delete(id); touched.delete(id); }
  }
  snapshotSeq = seq;
}

/** Whether the websocket is up (set by events.js). */
export const isFeedLive = () => feedLive;
export function setFeedLive(live) { feedLive = live; }

/** A live websocket sent a whole snapshot after `since`: a list read from then is stale. */
export const snapshotSince = (since) => feedLive && snapshotSeq > since;

const subscribers = [];
export function subscribe(fn) { subscribers.push(fn); }
/** Something in the store changed: redraw. */
export function changed() { for (const fn of subscribers) fn(); }

const progressSubscribers = [];
export function subscribeProgress(fn) { progressSubscribers.push(fn); }
/** Only the numbers of these ids changed (a progress frame): no full redraw. */
export function progressed(ids) { for (const fn of progressSubscribers) fn(ids); }
