// Helpers shared by node_sdk.mjs, browser.mjs and console.mjs: argument parsing and
// loading packages from the node_modules directory printed by setup.sh
// (which lives outside this folder, so bare specifiers would not resolve).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

/** Parses `--name value` pairs; every name in `required` must be present. */
export function parseArgs(argv, required, usage) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h' || a === '--help') {
      console.error(usage);
      process.exit(0);
    }
    if (!a.startsWith('--') || i + 1 >= argv.length) {
      console.error(`bad argument ${JSON.stringify(a)}\n${usage}`);
      process.exit(2);
    }
    out[a.slice(2)] = argv[++i];
  }
  for (const r of required) {
    if (!out[r]) {
      console.error(`missing --${r}\n${usage}`);
      process.exit(2);
    }
  }
  if (out.http) out.http = out.http.replace(/\/+$/, '');
  return out;
}

/**
 * The node_modules directory to load packages from: --modules DIR, else the
 * first entry of NODE_PATH.
 */
export function modulesDir(args) {
  const dir = args.modules || (process.env.NODE_PATH || '').split(path.delimiter).find(Boolean);
  if (!dir) {
    console.error('no node_modules directory: pass --modules "$(./setup.sh | tail -n1)" or set NODE_PATH');
    process.exit(2);
  }
  const abs = path.resolve(dir);
  if (!fs.existsSync(abs)) {
    console.error(`node_modules directory ${abs} does not exist (run setup.sh)`);
    process.exit(2);
  }
  return abs;
}

/** A CommonJS `require` that resolves bare names inside `dir` (a node_modules). */
export function requireFrom(dir) {
  // Resolution starts in the directory of the given file, i.e. dir/.., whose
  // node_modules is dir itself.
  return createRequire(path.join(path.dirname(dir), '__segdb_resolve__.js'));
}

/**
 * ESM `import()` of a package installed in `dir`, honouring the package's
 * "exports" import condition (falls back to its CommonJS entry point).
 */
export async function importFrom(dir, name) {
  const pkgDir = path.join(dir, ...name.split('/'));
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  let entry;
  const root = pkg.exports && (typeof pkg.exports === 'string' ? pkg.exports : pkg.exports['.']);
  if (typeof root === 'string') entry = root;
  else if (root && root.import) entry = typeof root.import === 'string' ? root.import : root.import.default;
  if (!entry && pkg.type === 'module') entry = pkg.module || pkg.main;
  if (!entry) return { default: requireFrom(dir)(name), ...requireFrom(dir)(name) };
  return import(pathToFileURL(path.join(pkgDir, entry)).href);
}

/**
 * Headless Chromium from @sparticuz/chromium, driven by puppeteer-core, both loaded from
 * `modules`. Anything that is not loopback goes to a dead proxy (loopback bypasses proxies), so
 * nothing under test can reach the internet; such requests still show up to the caller's
 * request handlers and fail its run. Returns `{ browser, executablePath }`.
 */
export async function launchChromium(modules) {
  const chromium = (await importFrom(modules, '@sparticuz/chromium')).default;
  const puppeteer = (await importFrom(modules, 'puppeteer-core')).default;
  const executablePath = await chromium.executablePath();
  const browser = await puppeteer.launch({
    executablePath,
    headless: 'shell',
    args: [
      '--no-sandbox',
      '--no-zygote',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--proxy-server=http://127.0.0.1:9',
    ],
  });
  return { browser, executablePath };
}
