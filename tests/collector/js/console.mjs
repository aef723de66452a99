// Drives segdb's web console in headless Chromium (the npm packages of setup.sh):
//
//   node console.mjs --http http://127.0.0.1:PORT --user NAME --password PW --raw-id ID \
//                    --shots DIR --modules "$(./setup.sh | tail -n1)"
//
// Logs in by keyboard, writes a segment in the editor and waits for its size, saves it, opens
// its page and checks the size chart, overlap, EXPLAIN and "why is this user in it" (typing
// --raw-id), runs SQL and downloads the CSV, and runs axe-core on every page (no serious or
// critical violation). Any console error, failed request or request off 127.0.0.1 fails the
// run. Screenshots go to --shots. Prints one JSON summary line; exits 0 on success, 1 on failure.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, modulesDir, launchChromium } from './lib.mjs';

const USAGE =
  'usage: node console.mjs --http URL --user NAME --password PW --raw-id ID --shots DIR --modules NODE_MODULES_DIR';
const args = parseArgs(process.argv.slice(2), ['http', 'user', 'password', 'raw-id', 'shots'], USAGE);
const modules = modulesDir(args);
const BASE = args.http;
const SHOTS = args.shots;
fs.mkdirSync(SHOTS, { recursive: true });

const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error(`console: FAIL ${msg}`);
};
const log = (msg) => console.error(`console: ${msg}`);
const check = (cond, msg) => {
  if (!cond) fail(msg);
};

const axeSource = fs.readFileSync(path.join(modules, 'axe-core', 'axe.min.js'), 'utf8');
const { browser } = await launchChromium(modules);
const bail = (why) => {
  fail(`unexpected error: ${why?.stack ?? why}`);
  try {
    browser.process()?.kill('SIGKILL');
  } catch {}
  console.log(JSON.stringify({ ok: false, failures }));
  process.exit(1);
};
process.on('uncaughtException', bail);
process.on('unhandledRejection', bail);
setTimeout(() => bail(new Error('watchdog expired')), 150_000).unref();

const page = await browser.newPage();
await page.setViewport({ width: 1366, height: 900 });
const downloads = path.join(SHOTS, 'downloads');
fs.mkdirSync(downloads, { recursive: true });
const cdp = await page.createCDPSession();
await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: downloads });

const origin = new URL(BASE).origin;
page.on('console', (m) => {
  // A 4xx answer also logs "Failed to load resource": the response handler judges those.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) fail(`console error: ${m.text()}`);
});
page.on('pageerror', (e) => fail(`page error: ${e.message}`));
page.on('request', (r) => {
  const u = r.url();
  if (!u.startsWith(origin) && !u.startsWith('blob:') && !u.startsWith('data:')) fail(`request off the machine: ${u}`);
});
page.on('requestfailed', (r) => fail(`request failed: ${r.url()} ${r.failure()?.errorText}`));
page.on('response', (r) => {
  // 4xx/5xx are failures, except the answers the test provokes on purpose (marked below).
  if (r.status() >= 400 && !expectedErrors.has(r.url() + ' ' + r.status())) fail(`HTTP ${r.status()} for ${r.url()}`);
});
const expectedErrors = new Set();

async function axe(name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length, help: v.help }));
  });
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  for (const v of bad) fail(`axe on ${name}: ${v.impact} ${v.id} (${v.nodes} nodes): ${v.help}`);
  log(`axe on ${name}: ${result.length} violations, ${bad.length} serious or critical ${JSON.stringify(result)}`);
  return result.length;
}

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

const text = (sel) => page.$eval(sel, (e) => e.textContent);
const t0 = Date.now();

// ---- log in by keyboard (no session yet: /api/me answers 401, which the page expects)
expectedErrors.add(`${BASE}/api/me 401`);
await page.goto(BASE + '/', { waitUntil: 'load' });
const interactiveMs = Date.now() - t0;
await page.waitForSelector('#user');
check(await page.evaluate(() => document.activeElement?.id === 'user'), 'the user field has the focus');
await axe('login');
await shot('login');
await page.keyboard.type(args.user);
await page.keyboard.press('Tab');
await page.keyboard.type(args.password);
await page.keyboard.press('Enter');
await page.waitForSelector('table[aria-label="segments"]', { timeout: 30_000 });
check((await text('#who')).includes(args.user), 'the header names the user');
const cookies = await page.cookies();
const session = cookies.find((c) => c.name === 'segdb_session');
check(session && session.httpOnly && session.sameSite === 'Strict', `session cookie HttpOnly, SameSite=Strict: ${JSON.stringify(session)}`);
check(!(await page.evaluate(() => document.cookie)).includes('segdb_session'), 'scripts cannot read the session cookie');
await axe('segments');
await shot('segments');

// ---- editor: an error marked at its position, then a size
await page.goto(BASE + '/#/editor', { waitUntil: 'load' });
await page.waitForSelector('#expr');
expectedErrors.add(`${BASE}/api/sql 400`);
await page.$eval('#expr', (e) => {
  e.value = '';
});
await page.focus('#expr');
await page.keyboard.type("DID 'purchase' IN THE LAST 14 DAYZ");
await page.waitForSelector('#expr-error', { timeout: 10_000 });
const marker = await text('#expr-marker');
check(marker.split('\n')[1].indexOf('^') === "DID 'purchase' IN THE LAST 14 ".length, `the error is marked under DAYZ: ${JSON.stringify(marker)}`);
await page.keyboard.press('Backspace');
await page.keyboard.type("S AND PROFILE country = 'DE'");
const typedAt = Date.now();
await page.waitForSelector('#expr-size', { timeout: 10_000 });
const sizeMs = Date.now() - typedAt;
const edited = Number(await text('#expr-size'));
check(edited > 0, `the editor sizes the expression: ${edited}`);
await axe('editor');
await shot('editor');
await page.type('#seg-name', 'console_de_buyers');
await page.click('#seg-mat');
await page.click('#save-form button[type=submit]');
await page.waitForSelector('#segment-size', { timeout: 30_000 });
check(Number(await text('#segment-size')) === edited, 'the saved segment has the editor size');

// ---- segment page: chart, entered/exited, EXPLAIN, overlap, breakdown, why
await page.waitForSelector('svg[aria-label^="Members of console_de_buyers by version"]', { timeout: 30_000 });
const points = await page.$$eval('svg[aria-label^="Members of console_de_buyers by version"] circle', (c) => c.length);
check(points >= 1, `the size chart has a point per version: ${points}`);
check((await text('#explain')).includes("DID 'purchase'"), 'EXPLAIN names the leaf');
await page.waitForSelector('#overlap table', { timeout: 30_000 });
const overlapCells = await page.$$eval('#overlap td', (t) => t.map((x) => x.textContent));
check(overlapCells.some((c) => /\(J /.test(c)), `the overlap matrix shows Jaccard: ${overlapCells.slice(0, 4)}`);
await page.waitForSelector('#breakdown svg', { timeout: 30_000 });
const bars = await page.$$eval('#breakdown rect', (r) => r.length);
check(bars >= 1, 'the breakdown draws bars');
await page.type('#why-id', args['raw-id']);
await page.click('#why-form button[type=submit]');
await page.waitForSelector('#why table', { timeout: 30_000 });
const why = await page.$$eval('#why tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim())));
check(why.length >= 2 && why.every((r) => r[1] === 'true' || r[1] === 'false'), `why has a row per node: ${JSON.stringify(why)}`);
await axe('segment');
await shot('segment');

// ---- holdout lift: the table and the interval chart, each figure naming its test
await page.goto(BASE + '/#/segment/promo', { waitUntil: 'load' });
await page.waitForSelector('#lift-run', { timeout: 30_000 });
const chosen = await page.select('#lift-event', 'purchase');
check(chosen.includes('purchase'), `the lift event can be chosen: ${chosen} of ${await page.$$eval('#lift-event option', (o) => o.map((x) => x.value))}`);
await page.click('#lift-run');
await page.waitForSelector('#lift svg', { timeout: 30_000 });
const liftText = await text('#lift svg');
check(liftText.includes('95 % interval') && liftText.includes('pooled two-sided z-test'), `the lift chart labels its tests: ${liftText}`);
const liftRows = await page.$$eval('#lift tbody tr', (r) => r.map((tr) => [...tr.children].map((c) => c.textContent)));
check(liftRows.length === 2, `lift has a target and a holdout row: ${liftRows.length}`);
check(liftRows.length === 2 && Number(liftRows[0][2]) > 0, `the target group converted on purchase: ${JSON.stringify(liftRows)}`);
const recRows = await page.$$eval('#recommendations tbody tr', (r) => r.length);
check(recRows >= 1, `the segment page lists what sets its members apart: ${recRows}`);
await axe('lift');
await shot('lift');

// ---- SQL page: grid and CSV download
await page.goto(BASE + '/#/sql', { waitUntil: 'load' });
await page.waitForSelector('#sql');
await page.$eval('#sql', (e) => {
  e.value = '';
});
await page.focus('#sql');
await page.keyboard.type("SELECT event, count(*) AS n FROM events GROUP BY 1 ORDER BY 1");
await page.keyboard.down('Control');
await page.keyboard.press('Enter');
await page.keyboard.up('Control');
await page.waitForSelector('#sql-out table', { timeout: 30_000 });
const grid = await page.$$eval('#sql-out tbody tr', (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
check(grid.length >= 2, `the grid has rows: ${grid.length}`);
await page.click('#csv');
let csv = null;
for (let i = 0; i < 50 && !csv; i++) {
  await new Promise((r) => setTimeout(r, 100));
  const f = path.join(downloads, 'segdb-result.csv');
  if (fs.existsSync(f)) csv = fs.readFileSync(f, 'utf8');
}
check(csv !== null, 'the CSV was downloaded');
if (csv) {
  const lines = csv.trim().split('\n');
  check(lines[0] === 'event,n', `CSV header: ${lines[0]}`);
  check(lines.length === grid.length + 1 && lines[1] === grid[0].join(','), 'the CSV has the grid rows');
}
await axe('sql');
await shot('sql');

// ---- sources: write keys and the live tail (ids pseudonymised)
await page.goto(BASE + '/#/sources', { waitUntil: 'load' });
await page.waitForSelector('table[aria-label="sources"]', { timeout: 30_000 });
await page.waitForSelector('table[aria-label="last events received"]', { timeout: 30_000 });
const tailText = await text('table[aria-label="last events received"]');
check(tailText.includes('Console Tail'), `the tail shows the collected event: ${tailText.slice(0, 200)}`);
check(!tailText.includes('@'), 'the tail shows pseudonyms, not raw ids');
await axe('sources');
await shot('sources');

// ---- log out: the session is gone
await page.click('#logout');
await page.waitForSelector('#user', { timeout: 10_000 });
const after = await page.evaluate(async () => (await fetch('/api/me')).status);
check(after === 401, `after logout /api/me is 401, not ${after}`);

await browser.close();
const summary = { ok: failures.length === 0, failures, interactive_ms: interactiveMs, editor_size_ms: sizeMs, csv_lines: csv ? csv.trim().split('\n').length : 0 };
console.log(JSON.stringify(summary));
process.exit(failures.length === 0 ? 0 : 1);
