// Drives the real browser SDKs (Segment analytics-next and RudderStack v3) in
// headless Chromium against a segdb collector.
//
//   node browser.mjs --http http://127.0.0.1:PORT --key WRITE_KEY --prefix PFX \
//                    --modules "$(./setup.sh | tail -n1)"
//
// The test pages are served from a static server of our own on another port,
// so every collector request is a real cross-origin (CORS) request.  Nothing
// may go to any host other than 127.0.0.1: such requests are logged and fail
// the run.  Prints one JSON summary line; exits 0 on success, 1 on failure.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs, modulesDir, launchChromium } from './lib.mjs';

const USAGE =
  'usage: node browser.mjs --http http://127.0.0.1:PORT --key WRITE_KEY --prefix PFX --modules NODE_MODULES_DIR [--timeout SECONDS]';
const args = parseArgs(process.argv.slice(2), ['http', 'key', 'prefix'], USAGE);
const modules = modulesDir(args);
const COLLECTOR = args.http; // e.g. http://127.0.0.1:43733
const collectorUrl = new URL(COLLECTOR);
const KEY = args.key;
const PFX = args.prefix;
const TIMEOUT_MS = Number(args.timeout || 30) * 1000;
const DEBUG = !!process.env.SEGDB_JS_DEBUG;

const versions = Object.fromEntries(
  ['@segment/analytics-next', '@rudderstack/analytics-js', 'puppeteer-core', '@sparticuz/chromium'].map((n) => [
    n,
    JSON.parse(fs.readFileSync(path.join(modules, n, 'package.json'), 'utf8')).version,
  ]),
);

const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error(`browser: FAIL ${msg}`);
};
const log = (msg) => console.error(`browser: ${msg}`);

// ---------------------------------------------------------------- static server
// /segment.html, /rudderstack.html     test pages (they only load the SDK bundle)
// /vendor/analytics-next/...           @segment/analytics-next/dist/umd/
// /analytics-next/bundles/...          same files: analytics-next's lazy chunks
//                                      (window.analytics._cdn points here)
// /vendor/rudderstack/...              @rudderstack/analytics-js/dist/npm/modern/bundled/umd/
// Anything else is a 404 and fails the run (an SDK tried to lazy-load
// something we do not serve).
const SEGMENT_UMD = path.join(modules, '@segment/analytics-next/dist/umd');
const RUDDER_UMD = path.join(modules, '@rudderstack/analytics-js/dist/npm/modern/bundled/umd');
const page = (title, script, pre = '') => `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title>${pre}
<script src="${script}"></script></head>
<body><h1>${title}</h1></body></html>`;

const staticRequests = [];
const staticServer = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  staticRequests.push(`${req.method} ${url.pathname}`);
  const send = (status, type, body) => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  };
  const sendFile = (root, rel) => {
    const file = path.join(root, path.normalize(rel).replace(/^(\.\.[/\\])+/, ''));
    if (!file.startsWith(root + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      fail(`static server: 404 for ${req.method} ${req.url}`);
      return send(404, 'text/plain', 'not found');
    }
    send(200, 'application/javascript; charset=utf-8', fs.readFileSync(file));
  };
  const p = url.pathname;
  if (p === '/segment.html') {
    // `_cdn` is the snippet's documented CDN override: analytics-next loads its
    // lazy chunks from `${_cdn}/analytics-next/bundles/`, i.e. from us.
    const origin = `http://${req.headers.host}`;
    return send(
      200,
      'text/html; charset=utf-8',
      page('segment', '/vendor/analytics-next/index.js', `<script>window.analytics = { _cdn: ${JSON.stringify(origin)} };</script>`),
    );
  }
  if (p === '/rudderstack.html') return send(200, 'text/html; charset=utf-8', page('rudderstack', '/vendor/rudderstack/index.js'));
  if (p === '/favicon.ico') return send(204, 'image/x-icon', '');
  if (p.startsWith('/vendor/analytics-next/')) return sendFile(SEGMENT_UMD, p.slice('/vendor/analytics-next/'.length));
  if (p.startsWith('/analytics-next/bundles/')) return sendFile(SEGMENT_UMD, p.slice('/analytics-next/bundles/'.length));
  if (p.startsWith('/vendor/rudderstack/')) return sendFile(RUDDER_UMD, p.slice('/vendor/rudderstack/'.length));
  fail(`static server: 404 for ${req.method} ${req.url}`);
  send(404, 'text/plain', 'not found');
});
await new Promise((resolve) => staticServer.listen(0, '127.0.0.1', resolve));
const STATIC = `http://127.0.0.1:${staticServer.address().port}`;
if (STATIC === collectorUrl.origin) throw new Error('static server and collector share an origin');
log(`static server on ${STATIC}, collector ${COLLECTOR}`);

// ---------------------------------------------------------------- browser
const { browser, executablePath: exe } = await launchChromium(modules);
// Whatever goes wrong from here on, the browser must not outlive us.
const killBrowser = () => {
  try {
    browser.process()?.kill('SIGKILL');
  } catch {}
};
const bail = (why) => {
  fail(`unexpected error: ${why?.stack ?? why}`);
  killBrowser();
  staticServer.close();
  console.log(JSON.stringify({ ok: false, failures }));
  process.exit(1);
};
process.on('uncaughtException', bail);
process.on('unhandledRejection', bail);
// Overall watchdog: two pages, each bounded by TIMEOUT_MS, plus start-up slack.
setTimeout(() => bail(new Error('overall watchdog expired')), 2 * TIMEOUT_MS + 60_000).unref();
const chromiumVersion = await browser.version();
log(`browser ${chromiumVersion} (${exe})`);

const external = []; // requests to hosts other than 127.0.0.1
const collectorExchanges = []; // every collector response, for the summary

/** Event-carrying collector paths and how many events a request body carries. */
const EVENT_PATH = /^\/(v1\/(track|identify|page|screen|group|alias|batch|t|i|p|s|g|a|b)|beacon\/v1\/batch)$/;
async function eventsIn(req) {
  let body = req.postData();
  // Beacon bodies (Blobs) are not inlined in the request event; ask for them.
  if (body === undefined && req.hasPostData()) body = await req.fetchPostData().catch(() => undefined);
  if (!body) return 1;
  try {
    const j = JSON.parse(body);
    return Array.isArray(j.batch) ? j.batch.length : 1;
  } catch {
    return 1;
  }
}

async function runPage(name, file, driver, expectedEvents) {
  const context = await browser.createBrowserContext();
  const tab = await context.newPage();
  const state = { ok: 0, events: 0, responses: [], rejected: false };
  let notify = () => {};
  let giveUp = () => {};
  // Settles as soon as the collector rejected something: no need to wait for the timeout.
  const rejected = new Promise((_, reject) => {
    giveUp = () => reject(new Error('the collector rejected a request (see above)'));
  });
  rejected.catch(() => {});

  tab.on('request', (req) => {
    const u = new URL(req.url());
    if (u.protocol === 'data:' || u.protocol === 'blob:' || u.protocol === 'about:') return;
    if (u.hostname !== '127.0.0.1') {
      external.push({ page: name, method: req.method(), url: req.url() });
      fail(`${name}: request to a non-local host: ${req.method()} ${req.url()}`);
    }
    if (DEBUG) log(`${name}: -> ${req.method()} ${req.url()} headers=${JSON.stringify(req.headers())} ${req.postData() ?? ''}`);
  });
  tab.on('requestfailed', (req) => {
    const u = new URL(req.url());
    if (u.origin === collectorUrl.origin) {
      fail(`${name}: collector request failed (${req.failure()?.errorText}): ${req.method()} ${req.url()} ` +
        `headers=${JSON.stringify(req.headers())} body=${req.postData() ?? ''}`);
    } else if (u.hostname === '127.0.0.1') {
      fail(`${name}: request failed (${req.failure()?.errorText}): ${req.method()} ${req.url()}`);
    }
  });
  tab.on('response', async (res) => {
    const req = res.request();
    const u = new URL(res.url());
    if (u.origin !== collectorUrl.origin) return;
    const status = res.status();
    const entry = { page: name, method: req.method(), path: u.pathname, status };
    collectorExchanges.push(entry);
    state.responses.push(`${req.method()} ${u.pathname} ${status}`);
    if (status < 200 || status > 299) {
      let body = '';
      try { body = await res.text(); } catch {}
      fail(`${name}: collector answered ${status} to ${req.method()} ${req.url()} ` +
        `request headers=${JSON.stringify(req.headers())} request body=${req.postData() ?? ''} ` +
        `response headers=${JSON.stringify(res.headers())} response body=${body}`);
      giveUp();
    } else if (req.method() === 'POST' && EVENT_PATH.test(u.pathname)) {
      state.ok++;
      state.events += await eventsIn(req);
    }
    if (DEBUG) log(`${name}: <- ${status} ${req.method()} ${u.pathname}`);
    notify();
  });
  tab.on('console', (msg) => {
    const t = msg.type();
    if (DEBUG || t === 'error' || t === 'warn' || t === 'warning') log(`${name}: console.${t}: ${msg.text()}`);
  });
  tab.on('pageerror', (err) => fail(`${name}: page error: ${err?.message ?? err}`));

  const allDelivered = new Promise((resolve) => {
    notify = () => state.events >= expectedEvents && resolve();
  });

  await tab.goto(`${STATIC}/${file}`, { waitUntil: 'load' });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
  });
  let pageResult;
  try {
    const work = (async () => {
      const r = await driver(tab);
      await allDelivered;
      return r;
    })();
    work.catch(() => {}); // it may lose the race and reject later, when the tab closes
    pageResult = await Promise.race([work, timeout, rejected]);
  } catch (e) {
    fail(`${name}: ${e?.message ?? e} (collector responses so far: ${JSON.stringify(state.responses)})`);
  } finally {
    clearTimeout(timer);
  }
  // Give late requests (e.g. a second flush) a moment to show up in the log.
  await new Promise((r) => setTimeout(r, 500));
  await context.close();
  return { delivered_events: state.events, collector_responses: state.responses, page: pageResult };
}

// ---------------------------------------------------------------- page 1: Segment
const segment = await runPage(
  'segment',
  'segment.html',
  (tab) =>
    tab.evaluate(
      async ({ key, collectorHost, pfx, staticOrigin }) => {
        // apiKey is what Segment's CDN settings always carry for 'Segment.io';
        // analytics-next copies it into every body as `writeKey` (a browser
        // sends no Authorization header).
        const segmentio = { apiKey: key, apiHost: `${collectorHost}/v1`, protocol: 'http' };
        const [analytics] = await AnalyticsNext.AnalyticsBrowser.load(
          {
            writeKey: key,
            cdnURL: staticOrigin, // never reach cdn.segment.com for anything
            cdnSettings: { integrations: { 'Segment.io': segmentio } },
          },
          {
            // also points the SDK's own metrics (/v1/m) at the collector
            integrations: { 'Segment.io': segmentio },
          },
        );
        const ctxs = await Promise.all([
          analytics.identify(`${pfx}-web-seg-1`, { plan: 'pro' }),
          analytics.track('Product Viewed', { sku: 'sku-1', price: 12.5 }),
          analytics.page('Docs'),
        ]);
        return ctxs.map((c) => ({ type: c.event.type, failed: c.failedDelivery() ? String(c.failedDelivery().reason) : null }));
      },
      { key: KEY, collectorHost: collectorUrl.host, pfx: PFX, staticOrigin: STATIC },
    ),
  3,
);
for (const c of segment.page ?? []) if (c.failed) fail(`segment: ${c.type} delivery failed: ${c.failed}`);

// ---------------------------------------------------------------- page 2: RudderStack
const rudderstack = await runPage(
  'rudderstack',
  'rudderstack.html',
  (tab) =>
    tab.evaluate(
      async ({ key, collector, pfx, staticOrigin }) => {
        // The UMD global is the module namespace; constructing the singleton
        // replaces window.rudderanalytics with the SDK instance.
        new window.rudderanalytics.RudderAnalytics();
        const ra = window.rudderanalytics;
        await new Promise((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('rudderanalytics did not become ready')), 20000);
          ra.load(key, collector, {
            configUrl: collector, // -> GET {collector}/sourceConfig/?...
            destSDKBaseURL: `${staticOrigin}/rudderstack-integrations`,
            pluginsSDKBaseURL: `${staticOrigin}/rudderstack-plugins`,
            loadIntegration: false,
            polyfillIfRequired: false,
            sendAdblockPage: false,
            useServerSideCookies: false,
            logLevel: 'WARN',
            onLoaded: () => {
              clearTimeout(t);
              resolve();
            },
          });
        });
        ra.identify(`${pfx}-web-rud-1`, { plan: 'basic' });
        ra.track('Signed Up', { amount: 3 });
        ra.page();
        return { anonymousId: ra.getAnonymousId(), userId: ra.getUserId() };
      },
      { key: KEY, collector: COLLECTOR, pfx: PFX, staticOrigin: STATIC },
    ),
  3,
);

await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 10_000))]);
killBrowser(); // no-op when close() worked
staticServer.closeAllConnections();
await new Promise((r) => staticServer.close(r));

if (segment.delivered_events < 3) fail(`segment: only ${segment.delivered_events} of 3 events acknowledged by the collector`);
if (rudderstack.delivered_events < 3) fail(`rudderstack: only ${rudderstack.delivered_events} of 3 events acknowledged by the collector`);
if (!rudderstack.collector_responses.some((r) => r.startsWith('GET /sourceConfig/ 2'))) {
  fail('rudderstack: no successful GET /sourceConfig/ seen');
}

const ok = failures.length === 0;
console.log(
  JSON.stringify({
    ok,
    chromium: chromiumVersion,
    versions,
    static_origin: STATIC,
    collector: COLLECTOR,
    segment,
    rudderstack,
    external_requests: external,
    static_requests: staticRequests,
    failures,
  }),
);
process.exit(ok ? 0 : 1);
