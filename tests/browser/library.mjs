// The Library tab in Debian's headless Chromium. Started by tests/browser.rs, which put
// GGUF files into download_dir by hand (library_ggufs.py) and serves one more from the
// emulated Hub. Here: a Hub download appears in the open tab by itself, published in
// the HF cache; every model shows what its header says (checked against the service's
// own answer, and against fixed texts); a delete is cancelled, then confirmed, and the
// file is gone from the page, the disk and the API, and the disk bar follows.
import { existsSync, statSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { fmtBytes } from '../../static/js/format.js';

const base = process.env.MM_BASE;
const shotDir = process.env.MM_SCREENSHOT_DIR;
const downloads = process.env.MM_DOWNLOAD_DIR;
const repo = process.env.MM_HUB_REPO;
const step = (s) => console.log(`STEP ${s}`);
const GB = 1e9;

const LLAMA = 'bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf';
const QWEN = 'Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q8_0';
const QWEN_PARTS = [`${QWEN}-00001-of-00002.gguf`, `${QWEN}-00002-of-00002.gguf`];
const BROKEN = 'old-model-Q5_K_M.gguf';
const STORIES = `${repo}/stories15M-Q8_0.gguf`;

function check(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: the page shows ${g}, expected ${w}`);
}

async function library() {
  const r = await fetch(`${base}/api/library`);
  if (!r.ok) throw new Error(`GET /api/library: ${r.status}`);
  const data = await r.json();
  data.byPath = new Map(data.files.map((f) => [f.path, f]));
  return data;
}

/** What one model's row shows, read from the DOM. */
const rowOf = (page, key) => page.evaluate((k) => {
  const row = [...document.querySelectorAll('[data-testid="library-model"]')].find((r) => r.dataset.key === k);
  if (!row) return null;
  const t = (id) => row.querySelector(`[data-testid="${id}"]`)?.textContent ?? null;
  return {
    name: t('lib-name'),
    arch: t('lib-arch'),
    params: t('lib-params'),
    quant: t('lib-quant'),
    ctx: t('lib-ctx'),
    size: t('lib-size'),
    parts: t('lib-parts'),
    errors: [...row.querySelectorAll('[data-testid="lib-error"] .err-msg')].map((e) => e.textContent),
    published: [...row.querySelectorAll('[data-testid="lib-published"]')]
      .map((b) => ({ runtime: b.dataset.runtime, title: b.title })),
  };
}, key);

const disk = (page) => page.evaluate(() => {
  const q = (id) => document.querySelector(`[data-testid="${id}"]`);
  return {
    total: q('disk-library').textContent,
    totalBytes: Number(q('disk-library').dataset.bytes),
    free: q('disk-free').textContent,
    freeBytes: Number(q('disk-free').dataset.bytes),
    fill: q('disk-fill').style.width,
  };
});

function checkDisk(what, d, api) {
  check(`${what}: library size`, d.total, fmtBytes(api.bytes_total));
  check(`${what}: library bytes`, d.totalBytes, api.bytes_total);
  // Free space moves with everything else on this disk: near the service's, and shown as it is.
  if (!(Math.abs(d.freeBytes - api.bytes_free) < 2 * GB)) {
    throw new Error(`${what}: free space ${d.freeBytes} on the page, ${api.bytes_free} from the service`);
  }
  check(`${what}: free space`, d.free, fmtBytes(d.freeBytes));
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  let loads = 0;
  page.on('load', () => { loads += 1; });
  await page.goto(`${base}/#library`);
  await page.getByTestId('conn-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });
  const models = page.getByTestId('library-model');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="library-model"]').length === 3,
    null, { timeout: 15000 });
  check('the tab count', await page.locator('#count-library').textContent(), '3');
  step('three models placed by hand');

  // A Hub download while the tab is open: it shows up by itself, published.
  const queued = await fetch(`${base}/api/hub/models/${repo}/download`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ quantization: 'Q8_0' }),
  });
  if (queued.status !== 201) throw new Error(`queuing the Hub download: ${queued.status} ${await queued.text()}`);
  const storiesRow = models.and(page.locator(`[data-key="${STORIES}"]`));
  await storiesRow.locator('[data-testid="lib-published"][data-runtime="hf_cache"]').waitFor({ timeout: 30000 });
  check('the tab count', await page.locator('#count-library').textContent(), '4');
  step('the Hub download appeared, published');

  const api = await library();
  const file = (p) => {
    const f = api.byPath.get(p);
    if (!f) throw new Error(`${p} is not in GET /api/library`);
    return f;
  };
  // The fixtures are what this test means them to be.
  check('llama parameters (API)', file(LLAMA).gguf.parameters, 1235814400);
  check('llama size (API)', file(LLAMA).size, statSync(`${downloads}/${LLAMA}`).size);
  check('qwen parameters (API)', QWEN_PARTS.reduce((s, p) => s + file(p).gguf.parameters, 0), 494032768);

  check('Llama 3.2 1B', await rowOf(page, LLAMA), {
    name: 'Llama-3.2-1B-Instruct-Q4_K_M.gguf', arch: 'llama', params: '1.2 B', quant: 'Q4_K_M', ctx: '128 K',
    size: fmtBytes(file(LLAMA).size), parts: null, errors: [], published: [],
  });
  check('Qwen2.5 0.5B, two parts', await rowOf(page, `${QWEN}.gguf`), {
    name: 'qwen2.5-0.5b-instruct-q8_0.gguf', arch: 'qwen2', params: '494 M', quant: 'Q8_0', ctx: '32 K',
    size: fmtBytes(file(QWEN_PARTS[0]).size + file(QWEN_PARTS[1]).size), parts: '2/2', errors: [], published: [],
  });
  const stories = file(STORIES);
  check('stories15M', await rowOf(page, STORIES), {
    name: 'stories15M-Q8_0.gguf', arch: 'llama', params: '15 M', quant: 'Q8_0', ctx: '4 K',
    size: fmtBytes(stories.size), parts: null, errors: [],
    published: [{ runtime: 'hf_cache', title: `HuggingFace cache (llama.cpp -hf, transformers, huggingface_hub):\n${stories.runtimes.hf_cache}` }],
  });
  if (!file(BROKEN).error) throw new Error(`the damaged file has no error: ${JSON.stringify(file(BROKEN))}`);
  check('the damaged file', await rowOf(page, BROKEN), {
    name: BROKEN, arch: null, params: null, quant: 'Q5_K_M', ctx: null, size: '16 B', parts: null,
    errors: [file(BROKEN).error], published: [],
  });
  check('the groups', await page.$$eval('[data-testid="library-group"]', (gs) => gs.map((g) => [
    g.dataset.group, g.querySelector('.lib-group-name').textContent])), [
    ['bartowski/Llama-3.2-1B-Instruct-GGUF', 'bartowski/Llama-3.2-1B-Instruct-GGUF'],
    [repo, repo],
    ['Qwen/Qwen2.5-0.5B-Instruct-GGUF', 'Qwen/Qwen2.5-0.5B-Instruct-GGUF'],
    ['', 'Other files'],
  ]);
  check('the Hub group\'s revision', await page.locator(`[data-testid="library-group"][data-group="${repo}"] .mono`).textContent(),
    `@ ${stories.revision.slice(0, 7)}`);
  const before = await disk(page);
  checkDisk('before the delete', before, api);
  step(`metadata shown; disk bar ${before.total} in the library, ${before.free} free`);
  await page.screenshot({ path: `${shotDir}/library.png`, fullPage: true });

  // The reads that follow a completed download are over (library.js: 0.5 s, 2.5 s): from
  // here, what moves the disk bar is the delete's own read (or a `library` frame).
  await page.waitForTimeout(3000);

  // A delete asks first: cancelled, nothing happens.
  const dialog = page.getByTestId('lib-confirm');
  await storiesRow.getByTestId('lib-delete').click();
  await dialog.waitFor({ state: 'visible', timeout: 5000 });
  check('the confirmation lists', await page.getByTestId('lib-confirm-files').textContent(), STORIES);
  await page.screenshot({ path: `${shotDir}/library-confirm.png` });
  await page.getByTestId('lib-confirm-cancel').click();
  await dialog.waitFor({ state: 'hidden', timeout: 5000 });
  await page.waitForTimeout(500);
  if (!(await storiesRow.count()) || !existsSync(`${downloads}/${STORIES}`)) {
    throw new Error('a cancelled delete deleted');
  }
  step('delete cancelled: still there');

  await storiesRow.getByTestId('lib-delete').click();
  await dialog.waitFor({ state: 'visible', timeout: 5000 });
  await page.getByTestId('lib-confirm-delete').click();
  await storiesRow.waitFor({ state: 'detached', timeout: 15000 });
  if (existsSync(`${downloads}/${STORIES}`)) throw new Error('the file is still on disk');
  const after = await library();
  if (after.byPath.has(STORIES)) throw new Error('GET /api/library still lists the file');
  check('bytes_total after the delete (API)', after.bytes_total, api.bytes_total - stories.size);
  await page.waitForFunction((n) => Number(document.querySelector('[data-testid="disk-library"]').dataset.bytes) === n,
    after.bytes_total, { timeout: 10000 });
  const now = await disk(page);
  checkDisk('after the delete', now, after);
  if (now.total === before.total) throw new Error(`the library size still shows ${now.total}`);
  if (now.fill === before.fill) throw new Error(`the disk bar did not move from ${before.fill}`);
  check('the tab count', await page.locator('#count-library').textContent(), '3');
  step(`deleted; disk bar ${before.total} -> ${now.total} in the library, ${now.free} free`);

  await page.setViewportSize({ width: 380, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`horizontal scroll at 380 px: ${overflow} px`);
  await page.screenshot({ path: `${shotDir}/library-narrow.png`, fullPage: true });

  if (loads !== 1) throw new Error(`the page was reloaded (${loads} loads)`);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  step('done');
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
