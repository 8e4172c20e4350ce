// The update watch in the Library tab, in Debian's headless Chromium. Started by
// tests/browser.rs after the emulated Hub moved main to a new commit whose file changed:
// "Check for updates" marks the model with an update badge and an Update button; the
// button queues the newer file, which replaces the old one, and the badge goes.
import { chromium } from 'playwright-core';

const base = process.env.MM_BASE;
const path = process.env.MM_PATH;
const newSha = process.env.MM_NEW_SHA;
const newCommit = process.env.MM_NEW_COMMIT;
const step = (s) => console.log(`STEP ${s}`);

async function file() {
  const r = await fetch(`${base}/api/library`);
  if (!r.ok) throw new Error(`GET /api/library: ${r.status}`);
  return (await r.json()).files.find((f) => f.path === path);
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
  await page.goto(`${base}/#library`);
  await page.getByTestId('conn-status').filter({ hasText: /^live$/ }).waitFor({ timeout: 15000 });
  const row = page.locator(`[data-testid="library-model"][data-key="${path}"]`);
  await row.waitFor({ timeout: 15000 });
  if (await row.getByTestId('lib-update').count()) throw new Error('an update badge before any check');
  step('the model is listed, no update');

  await page.getByTestId('library-check').click();
  const badge = row.getByTestId('lib-update');
  await badge.waitFor({ timeout: 20000 });
  const title = await badge.getAttribute('title');
  if (!title.includes(newCommit)) throw new Error(`the badge does not name ${newCommit}: ${title}`);
  const f = await file();
  if (!f.update || f.update.sha256 !== newSha) throw new Error(`the API's update: ${JSON.stringify(f.update)}`);
  step('checked: the badge names the new revision');

  // What the update will fetch, told before it starts: this file is not Xet-backed, so
  // all of it ("Update: 1.05 MB of 1.05 MB"); a Xet one says its changed chunks only.
  const button = row.getByTestId('lib-update-button');
  const labelled = Date.now() + 20000;
  let label = await button.textContent();
  while (!/^Update: \S+ \S+ of \S+ \S+$/.test(label) && Date.now() < labelled) {
    await page.waitForTimeout(200);
    label = await button.textContent();
  }
  const told = (await file()).update.fetch_bytes;
  if (!/^Update: \S+ \S+ of \S+ \S+$/.test(label) || told !== (await file()).update.size) {
    throw new Error(`the Update button says ${JSON.stringify(label)}; fetch_bytes ${told}`);
  }
  const [fetchText, sizeText] = label.slice('Update: '.length).split(' of ');
  if (fetchText !== sizeText) throw new Error(`a plain file fetches all of itself: ${label}`);
  step(`the button tells the cost: ${label}`);

  await row.getByTestId('lib-update-button').click();
  // The newer file replaces the old one: the row's badge and button go, the API says so.
  await badge.waitFor({ state: 'detached', timeout: 30000 });
  await row.getByTestId('lib-update-button').waitFor({ state: 'detached', timeout: 5000 });
  const deadline = Date.now() + 30000;
  let now = await file();
  while (!(now && now.sha256 === newSha && now.revision === newCommit) && Date.now() < deadline) {
    await page.waitForTimeout(200);
    now = await file();
  }
  if (!(now && now.sha256 === newSha && now.revision === newCommit && now.update === null)) {
    throw new Error(`after the update: ${JSON.stringify(now)}`);
  }
  step('updated: the file is the new revision');
  if (pageErrors.length) throw new Error(`page errors: ${pageErrors.join('; ')}`);
  step('done');
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
