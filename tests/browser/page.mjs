// Drives the real page in Debian's headless Chromium. Started by tests/browser.rs,
// which runs the service and the upstream, and restarts the service when this script
// prints "STEP resumed". Every step prints a line; any failure exits non-zero.
import { chromium } from 'playwright-core';

const base = process.env.MM_BASE;
const fileUrl = process.env.MM_FILE_URL;
const shotDir = process.env.MM_SCREENSHOT_DIR;
const step = (s) => console.log(`STEP ${s}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
    '--no-first-run', '--disable-component-update', '--disable-sync'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  let loads = 0;
  page.on('load', () => { loads += 1; });

  await page.goto(`${base}/`);
  const conn = page.getByTestId('conn-status');
  await conn.filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });
  step('live');

  await page.getByTestId('add-url').fill(fileUrl);
  await page.getByTestId('add-submit').click();
  const firstRow = page.getByTestId('download').first();
  await firstRow.waitFor({ timeout: 15000 });
  const id = await firstRow.getAttribute('data-id');
  const rowSel = `[data-testid="download"][data-id="${id}"]`;
  const row = page.locator(rowSel);
  step(`added ${id}`);

  const progressOf = () => page.evaluate((sel) => {
    const p = document.querySelector(`${sel} [data-testid="progress"]`);
    if (!p) return -1;
    return Number(p.getAttribute('aria-valuenow') ?? p.value ?? -1);
  }, rowSel);
  await page.waitForFunction((sel) => {
    const p = document.querySelector(`${sel} [data-testid="progress"]`);
    return p && Number(p.getAttribute('aria-valuenow') ?? p.value) > 0;
  }, rowSel, { timeout: 20000 });
  const p1 = await progressOf();
  await page.waitForTimeout(1200);
  const p2 = await progressOf();
  if (!(p2 > p1)) throw new Error(`the progress bar did not move: ${p1} -> ${p2}`);
  await page.waitForFunction((sel) => /\d.*\/s/.test(
    document.querySelector(`${sel} [data-testid="speed"]`)?.textContent || ''), rowSel, { timeout: 10000 });
  const speed = await row.getByTestId('speed').textContent();
  step(`progress ${p1} -> ${p2}, speed ${speed.trim()}`);
  await page.screenshot({ path: `${shotDir}/downloading.png` });

  await row.getByTestId('pause').click();
  await page.locator(`${rowSel}[data-state="paused"]`).waitFor({ timeout: 10000 });
  const pausedAt = await progressOf();
  await page.waitForTimeout(700);
  if ((await progressOf()) !== pausedAt) throw new Error('progress moved while paused');
  step('paused');

  await page.locator(rowSel).getByTestId('resume').click();
  await page.locator(`${rowSel}[data-state="downloading"]`).waitFor({ timeout: 10000 });
  step('resumed');

  // The test restarts the service now: the page must notice, and come back by itself.
  await conn.filter({ hasText: /^reconnecting$/ }).waitFor({ timeout: 60000 });
  step('reconnecting');
  await conn.filter({ hasText: /^live$/ }).waitFor({ timeout: 60000 });
  step('live again');

  await page.locator(`${rowSel}[data-state="completed"]`).waitFor({ state: 'attached', timeout: 120000 });
  step('completed');
  if (loads !== 1) throw new Error(`the page was reloaded (${loads} loads)`);
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);

  await page.getByTestId('tab-history').click();
  await page.locator(`[data-testid="history"] ${rowSel}`).waitFor({ timeout: 10000 });
  await page.screenshot({ path: `${shotDir}/history.png` });
  await page.setViewportSize({ width: 380, height: 700 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`horizontal scroll at 380 px: ${overflow} px`);
  await page.screenshot({ path: `${shotDir}/narrow.png` });
  step('screenshots saved');
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
