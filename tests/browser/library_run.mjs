// The Library tab's run commands in Debian's headless Chromium. Started by
// tests/browser.rs once the library holds a Hub file (with an `-hf` command) and a
// file placed by hand (with a `-m` command). Here: each model shows the commands of
// its `run`, exactly as the API gives them; "Copy" puts one on the clipboard, through
// `navigator.clipboard`, and through the fallback when the page has no clipboard API
// (plain http on a LAN address is no secure context: `navigator.clipboard` is
// undefined there), and selects the text when even that copy is refused.
import { chromium } from 'playwright-core';

const base = process.env.MM_BASE;
const step = (s) => console.log(`STEP ${s}`);

function check(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: the page shows ${g}, expected ${w}`);
}

async function runs() {
  const r = await fetch(`${base}/api/library`);
  if (!r.ok) throw new Error(`GET /api/library: ${r.status}`);
  const data = await r.json();
  return new Map(data.files.map((f) => [f.path, f.run]));
}

/** The run lines of the model whose first part is `path`: [[runtime, command]]. */
const shown = (page, path) => page.evaluate((p) => {
  const row = [...document.querySelectorAll('[data-testid="library-model"]')].find((r) => r.dataset.path === p);
  if (!row) return null;
  return [...row.querySelectorAll('[data-testid="lib-run-line"]')]
    .map((l) => [l.dataset.runtime, l.querySelector('[data-testid="lib-run-cmd"]').textContent]);
}, path);

const copyButton = (page, path, runtime) => page
  .locator(`[data-testid="library-model"][data-path="${path}"] [data-testid="lib-run-line"][data-runtime="${runtime}"]`)
  .getByTestId('lib-copy');

/** Polls what `read` (evaluated in the page) finds on the clipboard until it is `want`. */
async function clipboardHolds(page, read, want, what) {
  let got = null;
  for (let i = 0; i < 50; i += 1) {
    got = await page.evaluate(read);
    if (got === want) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: the clipboard holds ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
}

async function open(context, what) {
  const page = await context.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${base}/#library`);
  await page.getByTestId('conn-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });
  await page.waitForFunction(() => document.querySelectorAll('[data-testid="lib-run-line"]').length >= 2,
    null, { timeout: 15000 });
  page.errors = errors;
  step(`opened (${what})`);
  return page;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const want = await runs();
  const hubPath = process.env.MM_HUB_PATH;
  const localPath = process.env.MM_LOCAL_PATH;
  for (const p of [hubPath, localPath]) {
    if (!want.get(p) || !want.get(p)['llama.cpp']) throw new Error(`the API gives ${p} no llama.cpp command`);
  }

  // 1. The clipboard API (http://127.0.0.1 is a secure context), permission granted.
  const granted = await browser.newContext({ permissions: ['clipboard-read', 'clipboard-write'] });
  const page = await open(granted, 'secure context');
  for (const p of [hubPath, localPath]) {
    check(`run commands of ${p}`, await shown(page, p), Object.entries(want.get(p)));
  }
  step('commands shown as the API gives them');
  const hubCommand = want.get(hubPath)['llama.cpp'];
  await page.evaluate(() => navigator.clipboard.writeText('something else'));
  await copyButton(page, hubPath, 'llama.cpp').click();
  await clipboardHolds(page, () => navigator.clipboard.readText(), hubCommand, 'navigator.clipboard');
  check('the copy button says', await copyButton(page, hubPath, 'llama.cpp').getAttribute('data-copied'), 'copied');
  step('copied through navigator.clipboard');

  // 2. No clipboard API, as on plain http from a LAN address: the fallback copies. The
  //    real clipboard is kept aside (before the page's scripts run) only to read it back.
  const insecure = await browser.newContext({ permissions: ['clipboard-read', 'clipboard-write'] });
  await insecure.addInitScript(() => {
    window.__clip = navigator.clipboard;
    Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined, configurable: true });
  });
  const lan = await open(insecure, 'no clipboard API');
  check('navigator.clipboard', await lan.evaluate(() => typeof navigator.clipboard), 'undefined');
  const localCommand = want.get(localPath)['llama.cpp'];
  await lan.evaluate(() => window.__clip.writeText('something else'));
  await copyButton(lan, localPath, 'llama.cpp').click();
  await clipboardHolds(lan, () => window.__clip.readText(), localCommand, 'the execCommand fallback');
  check('the copy button says', await copyButton(lan, localPath, 'llama.cpp').getAttribute('data-copied'), 'copied');
  step('copied through the execCommand fallback');

  // 3. Even execCommand refused: the command's text is selected for Ctrl+C.
  await lan.evaluate(() => { document.execCommand = () => false; });
  await copyButton(lan, localPath, 'llama.cpp').click();
  await lan.waitForFunction(() => document.querySelector('[data-copied="selected"]'), null, { timeout: 5000 });
  check('the selection', await lan.evaluate(() => String(window.getSelection())), localCommand);
  step('selected when no copy works');

  for (const p of [page, lan]) {
    if (p.errors.length) throw new Error(`page errors: ${p.errors.join('; ')}`);
  }
  step('done');
} catch (e) {
  failed = true;
  console.log(`FAIL ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
