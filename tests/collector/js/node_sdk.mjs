// Sends a few events to a segdb collector with the real @segment/analytics-node
// SDK and fails on any SDK error or non-2xx answer.
//
//   node node_sdk.mjs --http http://127.0.0.1:PORT --key WRITE_KEY --prefix PFX \
//                     [--modules "$(./setup.sh | tail -n1)"]   (or NODE_PATH=...)
//
// Prints one JSON line: {"sent": n, ...}; exits 0 on success, 1 on failure.
import { parseArgs, modulesDir, requireFrom } from './lib.mjs';

const USAGE =
  'usage: node node_sdk.mjs --http http://127.0.0.1:PORT --key WRITE_KEY --prefix PFX [--modules NODE_MODULES_DIR]';
const args = parseArgs(process.argv.slice(2), ['http', 'key', 'prefix'], USAGE);
const require = requireFrom(modulesDir(args));
const { Analytics } = require('@segment/analytics-node');
const sdkVersion = require('@segment/analytics-node/package.json').version;

const failures = [];
const fail = (msg) => {
  failures.push(msg);
  console.error(`node_sdk: ${msg}`);
};

const analytics = new Analytics({
  writeKey: args.key,
  host: args.http, // the SDK posts to `${host}/v1/batch`
  flushAt: 1,
  maxEventsInBatch: 1,
  flushInterval: 200,
  maxRetries: 2,
  httpRequestTimeout: 10_000,
});

let requests = 0;
const statuses = [];
analytics.on('error', (err) => fail(`SDK 'error' event: ${err?.code ?? ''} ${err?.reason ?? err?.message ?? JSON.stringify(err)}`));
analytics.on('http_request', (req) => {
  requests++;
  if (process.env.SEGDB_JS_DEBUG) console.error(`node_sdk: -> ${req.method} ${req.url} ${req.body}`);
});
analytics.on('http_response', (res) => {
  statuses.push(res.status);
  if (res.status < 200 || res.status > 299) {
    fail(`non-2xx answer ${res.status} ${res.statusText} from ${res.url} for body ${res.body}`);
  }
});

// Each call's callback fires once its batch was delivered (or given up on).
const delivered = [];
const call = (method, params) =>
  new Promise((resolve) => {
    analytics[method](params, (err, ctx) => {
      if (err) fail(`${method} delivery failed: ${err?.reason?.message ?? err?.message ?? err}`);
      else delivered.push(ctx?.event?.type ?? method);
      resolve();
    });
  });

const pfx = args.prefix;
const pending = [
  call('identify', { userId: `${pfx}-node-1`, traits: { plan: 'pro', seats: 3 } }),
  call('track', {
    userId: `${pfx}-node-1`,
    event: 'Order Completed',
    properties: { productID: 7, price: 9.5 },
  }),
  call('page', { anonymousId: `${pfx}-anon-node`, name: 'Home' }),
];

const timer = setTimeout(() => {
  fail('timed out after 30 s');
  console.log(JSON.stringify({ sent: 0, ok: false, failures }));
  process.exit(1);
}, 30_000);

await analytics.closeAndFlush({ timeout: 25_000 });
await Promise.all(pending);
clearTimeout(timer);

if (delivered.length !== 3) fail(`only ${delivered.length} of 3 events were delivered`);
const ok = failures.length === 0;
console.log(
  JSON.stringify({ sent: delivered.length, ok, requests, statuses, sdk: `@segment/analytics-node@${sdkVersion}`, failures }),
);
process.exit(ok ? 0 : 1);
