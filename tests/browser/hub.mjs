// The Hub tab in Debian's headless Chromium: search, open a repo, queue a split
// quantization with one click, watch both parts complete. Started by tests/browser.rs.
import { chromium } from 'playwright-core';

const base = process.env.MM_BASE;
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
  const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/`);
  await page.getByTestId('conn-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });

  await page.getByTestId('tab-hub').click();
  await page.getByTestId('hub-search').fill('tiny');
  await page.getByTestId('hub-search').press('Enter');
  const result = page.locator('[data-testid="hub-result"][data-id="TheBloke/TinyModel-GGUF"]');
  await result.waitFor({ timeout: 15000 });
  if (!(await page.getByTestId('hub-results').textContent()).includes('gated')) {
    throw new Error('the gated repo has no gated badge');
  }
  step('search');
  await result.click();
  const quant = page.locator('[data-testid="hub-quant"][data-quant="F16"]');
  await quant.waitFor({ timeout: 15000 });
  const files = (await quant.getByTestId('hub-quant-files').textContent()).trim();
  if (files !== '2 files') throw new Error(`the split quantization shows "${files}"`);
  // llama.cpp's default pick (no tag: Q4_K_M first) is marked, and only it.
  const defaults = await page.locator('[data-testid="hub-quant"]').evaluateAll((rows) => rows
    .filter((r) => r.querySelector('[data-testid="hub-quant-default"]')).map((r) => r.dataset.quant));
  if (JSON.stringify(defaults) !== '["Q4_K_M"]') throw new Error(`the default is marked on ${JSON.stringify(defaults)}`);
  step('quantizations');
  await page.screenshot({ path: `${shotDir}/hub.png` });
  await quant.getByTestId('hub-download').click();

  await page.getByTestId('tab-queue').click();
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('[data-testid="download"]')];
    return rows.filter((r) => r.dataset.state === 'completed').length === 2;
  }, null, { timeout: 60000 });
  step('both parts completed');
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  step('done');
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
