// The buttons of every row follow that download's `actions`, in Debian's headless
// Chromium against the real service. Started by tests/browser.rs, which runs the
// service (one download at a time) and an upstream with throttled files.
//
// 1. Downloads in six states (completed, failed by a 404, downloading, two queued,
//    paused); each row's visible buttons, mapped to actions, equal the `actions` of
//    GET /api/downloads/{id}; clicking pause, resume, cancel, retry and move changes
//    them, and they follow again.
// 2. A second page sees the same service through a proxy that rewrites `actions`
//    (websocket frames and REST answers) to lists no state table would give: the rows
//    show those lists. A page keeping its own copy of the state machine fails here.
import { chromium } from 'playwright-core';

const base = process.env.MM_BASE;
const shotDir = process.env.MM_SCREENSHOT_DIR;
const url = (name) => process.env[`MM_URL_${name}`];
const step = (s) => console.log(`STEP ${s}`);
const FINISHED = new Set(['completed', 'failed', 'cancelled']);

async function rest(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(`${base}/${path}`, init);
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}
const get = (id) => rest('GET', `api/downloads/${id}`);

async function until(what, fn, timeout = 20000) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok) return last;
    if (Date.now() > end) throw new Error(`${what}: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 150));
  }
}
const inState = (id, state) => until(`${id} never became ${state}`, async () => {
  const d = await get(id);
  return { ok: d.state === state, state: d.state };
});

// What a row offers, read from the DOM: the actions of its visible buttons (by their
// test ids, as a user sees them), which of those are enabled, and whether it drags.
const BUTTON = {
  pause: 'pause', resume: 'resume', cancel: 'cancel', retry: 'retry',
  up: 'move', down: 'move', remove: 'delete', 'remove-file': 'delete',
};
function readRow(page, id) {
  return page.evaluate(({ id, BUTTON }) => {
    const row = document.querySelector(`[data-testid="download"][data-id="${id}"]`);
    if (!row) return null;
    const visible = [...row.querySelectorAll('button')]
      .filter((b) => b.checkVisibility({ checkVisibilityCSS: true }));
    return {
      state: row.dataset.state,
      buttons: visible.map((b) => b.dataset.testid).sort(),
      offered: [...new Set(visible.map((b) => BUTTON[b.dataset.testid] ?? `?${b.dataset.testid}`))].sort(),
      enabled: visible.filter((b) => !b.disabled).map((b) => b.dataset.testid).sort(),
      draggable: row.draggable,
    };
  }, { id, BUTTON });
}

async function showTabOf(page, state) {
  const tab = FINISHED.has(state) ? 'history' : 'queue';
  await page.getByTestId(`tab-${tab}`).click();
}

/** The row of `id` offers exactly `actions` (from the API unless given), all usable. */
async function expectRow(page, id, label, fake) {
  let d = await get(id);
  await showTabOf(page, d.state);
  const seen = await until(`${label}: the row does not follow actions`, async () => {
    d = await get(id);
    const want = [...(fake ? fake(d) : d.actions)].sort();
    const row = await readRow(page, id);
    const ok = row != null && row.state === d.state
      && JSON.stringify(row.offered) === JSON.stringify(want)
      && row.draggable === want.includes('move')
      // every offered action but a move at the end of the queue can be clicked
      && row.buttons.every((b) => b === 'up' || b === 'down' || row.enabled.includes(b));
    return { ok, api: { state: d.state, actions: want }, row };
  }, 10000);
  step(`${label} (${d.state}): [${seen.api.actions}] -> buttons ${seen.row.buttons.join(' ')}`);
  return seen.row;
}

/** Up/down: the first movable row cannot go up, the last cannot go down. */
async function expectMoveEnds(page) {
  await page.getByTestId('tab-queue').click();
  const { downloads } = await rest('GET', 'api/downloads');
  const movable = downloads.filter((d) => d.actions.includes('move'))
    .sort((a, b) => a.position - b.position);
  for (const [i, d] of movable.entries()) {
    const row = await readRow(page, d.id);
    const up = row.enabled.includes('up');
    const down = row.enabled.includes('down');
    if (up !== (i > 0) || down !== (i < movable.length - 1)) {
      throw new Error(`move buttons of ${d.file_name} (${i + 1} of ${movable.length}): ${JSON.stringify(row)}`);
    }
  }
  return movable;
}

const add = (name, extra = {}) => rest('POST', 'api/downloads', { url: url(name), ...extra }).then((d) => d.id);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  // The modules are served as JavaScript (module scripts refuse anything else).
  const mime = (await fetch(`${base}/js/main.js`)).headers.get('content-type') || '';
  if (!/javascript/.test(mime)) throw new Error(`js/main.js is served as "${mime}"`);

  const ids = {};
  ids.done = await add('SMALL');
  if (!Array.isArray((await get(ids.done)).actions)) {
    throw new Error('the service sends no actions: is target/debug/model-manager built from this tree?');
  }
  await inState(ids.done, 'completed');
  ids.missing = await add('MISSING');
  await inState(ids.missing, 'failed');
  ids.running = await add('A');
  await inState(ids.running, 'downloading');
  ids.first = await add('B');
  ids.second = await add('C');
  ids.paused = await add('P', { start_paused: true });
  ids.doomed = await add('X', { start_paused: true });
  step('seven downloads in six states');

  const page = await browser.newPage({ viewport: { width: 1100, height: 1100 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/`);
  await page.getByTestId('conn-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });
  const row = (id) => page.locator(`[data-testid="download"][data-id="${id}"]`);

  const completed = await expectRow(page, ids.done, 'completed');
  if (completed.buttons.includes('pause')) throw new Error('a completed download offers pause');
  await expectRow(page, ids.missing, 'failed (404)');
  await expectRow(page, ids.running, 'downloading');
  await expectRow(page, ids.first, 'queued first');
  await expectRow(page, ids.second, 'queued second');
  await expectRow(page, ids.paused, 'paused');
  await expectRow(page, ids.doomed, 'paused, to be cancelled');
  await expectMoveEnds(page);
  await page.getByTestId('tab-queue').click();
  await page.screenshot({ path: `${shotDir}/actions.png` });

  // Pause the running one: resume appears, pause goes; the slot goes to the next one.
  await row(ids.running).getByTestId('pause').click();
  await inState(ids.running, 'paused');
  const pausedRow = await expectRow(page, ids.running, 'after pause');
  if (!pausedRow.buttons.includes('resume') || pausedRow.buttons.includes('pause')) {
    throw new Error(`pause did not turn into resume: ${JSON.stringify(pausedRow)}`);
  }
  await inState(ids.first, 'downloading');
  await expectRow(page, ids.first, 'started when the slot freed');
  await row(ids.running).getByTestId('resume').click();
  await inState(ids.running, 'queued');
  await expectRow(page, ids.running, 'after resume');

  // Cancel a paused one (it moves to the history), then retry it (back in the queue).
  await row(ids.doomed).getByTestId('cancel').click();
  await inState(ids.doomed, 'cancelled');
  await expectRow(page, ids.doomed, 'after cancel');
  await row(ids.doomed).getByTestId('retry').click();
  await inState(ids.doomed, 'queued');
  await expectRow(page, ids.doomed, 'after retry');

  // Move: the last movable one goes up one place.
  let movable = await expectMoveEnds(page);
  const last = movable[movable.length - 1];
  await row(last.id).getByTestId('up').click();
  await until('the move did not reach the service', async () => {
    const d = await get(last.id);
    return { ok: d.position < last.position, position: d.position };
  });
  movable = await expectMoveEnds(page);
  for (const d of movable) await expectRow(page, d.id, `queued #${d.position + 1}`);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  step('buttons follow actions through pause, resume, cancel, retry and move');

  // 2. The same service with rewritten actions: the page shows what it is told.
  const fake = (d) => {
    if (d.state === 'completed') return ['retry', 'delete'];
    if (d.state === 'downloading') return ['cancel', 'delete'];
    return ['delete'];
  };
  const rewrite = (v) => {
    if (Array.isArray(v)) v.forEach(rewrite);
    else if (v && typeof v === 'object') {
      if (typeof v.id === 'string' && Array.isArray(v.actions)) v.actions = fake(v);
      Object.values(v).forEach(rewrite);
    }
    return v;
  };
  const context = await browser.newContext({ viewport: { width: 1100, height: 1100 } });
  await context.routeWebSocket(/\/api\/events/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => ws.send(typeof m === 'string' ? JSON.stringify(rewrite(JSON.parse(m))) : m));
  });
  await context.route(/\/api\/(downloads|history)/, async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    const res = await route.fetch();
    return route.fulfill({ response: res, json: rewrite(await res.json()) });
  });
  const told = await context.newPage();
  told.on('pageerror', (e) => pageErrors.push(String(e)));
  await told.goto(`${base}/`);
  await told.getByTestId('conn-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });
  const { downloads } = await rest('GET', 'api/downloads');
  const history = await rest('GET', 'api/history?limit=50');
  const all = new Map([...downloads, ...(history.downloads || history.history || [])].map((d) => [d.id, d]));
  if (all.size !== Object.keys(ids).length) throw new Error(`expected ${Object.keys(ids).length} downloads, the API lists ${all.size}`);
  for (const d of all.values()) await expectRow(told, d.id, `rewritten ${d.file_name}`, fake);
  // Progress frames carry no actions: the rewritten ones stay while bytes flow.
  const running = downloads.find((d) => d.state === 'downloading');
  if (!running) throw new Error('nothing is downloading for the progress check');
  await told.waitForTimeout(1500);
  await expectRow(told, running.id, 'rewritten, after progress frames', fake);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  step('done');
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
