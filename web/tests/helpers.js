// Shared set-up of the browser tests: each test starts its own `groundwork serve` (the debug binary cargo
// built) on a free port with its own data folder and database, and drives Debian's Chromium through
// playwright-core. Nothing is downloaded and no page reaches the internet.
import { spawn, execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.GROUNDWORK_BIN ?? path.join(ROOT, 'target', 'debug', 'groundwork');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

let adminUrl = null;
// The PostgreSQL server the tests make their databases on: DATABASE_URL, else a private cluster started
// (or found running) by `groundwork dev-db` in the system temp folder.
function serverUrl() {
  if (adminUrl) return adminUrl;
  if (process.env.DATABASE_URL) {
    adminUrl = process.env.DATABASE_URL;
  } else {
    const dir = path.join(tmpdir(), 'groundwork-web-tests');
    adminUrl = execFileSync(BIN, ['dev-db', '--data-dir', dir], { encoding: 'utf8', env: { ...process.env, RUST_LOG: 'warn' } })
      .trim().split('\n').pop();
  }
  return adminUrl;
}

function psql(url, sql) {
  execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
}

const cleanups = new WeakMap();
// Registers `fn` to run after the test, in reverse order of registration (the browser closes before the
// server it talks to stops).
function defer(t, fn) {
  let fns = cleanups.get(t);
  if (!fns) {
    fns = [];
    cleanups.set(t, fns);
    t.after(async () => {
      for (const f of fns.reverse()) await f();
    });
  }
  fns.push(fn);
}

/**
 * Starts `groundwork serve` with `localWorkers` in-process workers (default one) and (unless `bare`) its
 * first owner; it is stopped and its database dropped after the test. `server.dir` is its data folder
 * (objects under `objects/`).
 */
export async function startServer(t, { bare = false, localWorkers = 1, demoData = null } = {}) {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`cargo build -p groundwork-server\` first`);
  const dir = mkdtempSync(path.join(tmpdir(), 'gw-web-'));
  const port = await freePort();
  const admin = serverUrl();
  const db = `gw_web_${randomBytes(6).toString('hex')}`;
  psql(admin, `create database ${db}`);
  const env = {
    ...process.env,
    DATABASE_URL: withDatabase(admin, db),
    RUST_LOG: process.env.RUST_LOG ?? 'warn',
    GROUNDWORK_HEARTBEAT_MS: '300',
    GROUNDWORK_WORKER_NAME: 'browser-test-worker',
    GROUNDWORK_POOL: 'cpu',
    GROUNDWORK_QUEUES: 'cpu',
    // The administrator lets catalogues on 127.0.0.1:9 be read (nothing listens there).
    GROUNDWORK_ALLOW_HOSTS: '127.0.0.1:9',
  };
  delete env.GROUNDWORK_CATALOG_ROOTS;
  delete env.GROUNDWORK_BASEMAP_URL;
  delete env.GROUNDWORK_BASEMAP_ATTRIBUTION;
  // Offline: no basemap (OpenStreetMap's tiles by default), so no page asks another site for anything.
  const child = spawn(BIN, [
    'serve', '--bind', `127.0.0.1:${port}`, '--data-dir', dir, '--local-workers', String(localWorkers),
    '--object-store', `file://${dir}/objects`, '--offline',
    // The offline demo catalogue as a STAC API under /demo/stac, which its workers may read.
    ...(demoData ? ['--demo-data', demoData] : []),
  ], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    try { psql(admin, `drop database if exists ${db} with (force)`); } catch { /* best effort */ }
    rmSync(dir, { recursive: true, force: true });
  };
  defer(t, stop);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`groundwork serve exited with ${child.exitCode}:\n${log}`);
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`groundwork serve did not become ready:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const server = { url, dir, log: () => log, databaseUrl: env.DATABASE_URL, token: null };
  if (!bare) await setUpOwner(server);
  return server;
}

/** The first owner every test signs in as (made by `setUpOwner`). */
export const OWNER = { email: 'owner@example.org', password: 'correct horse battery', org: 'Field team' };

/**
 * Creates the first owner through `POST /api/v1/setup` and an API token of theirs for `api()` calls
 * (the setup page itself is exercised by the accounts test).
 */
async function setUpOwner(server) {
  const res = await fetch(`${server.url}/api/v1/setup`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: OWNER.email, password: OWNER.password, org_name: OWNER.org }),
  });
  if (res.status !== 201) throw new Error(`setup: HTTP ${res.status} ${await res.text()}`);
  const session = await res.json();
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0];
  const tok = await fetch(`${server.url}/api/v1/tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie, 'x-csrf-token': session.csrf_token },
    body: JSON.stringify({ name: 'browser tests', scope: 'write' }),
  });
  if (tok.status !== 201) throw new Error(`token: HTTP ${tok.status} ${await tok.text()}`);
  server.token = (await tok.json()).token;
}

/** Runs `groundwork admin …` against the server's database; `input` goes to standard input. */
export function admin(server, args, input) {
  return execFileSync(BIN, ['admin', ...args], {
    input: input ?? '',
    encoding: 'utf8',
    env: { ...process.env, DATABASE_URL: server.databaseUrl, RUST_LOG: 'off' },
  }).trim();
}

/** Signs `page` in through the sign-in page. */
export async function signIn(page, server, who = OWNER) {
  await page.goto(`${server.url}/login`);
  await page.getByLabel('Email').fill(who.email);
  await page.getByLabel('Password').fill(who.password);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.startsWith('/login')),
    page.getByRole('button', { name: 'Sign in' }).click(),
  ]);
}

/** A headless Chromium page; closed after the test. Console errors and failed requests are collected. */
export async function openPage(t, { width = 1280, height = 900 } = {}) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--enable-unsafe-swiftshader', '--use-angle=swiftshader', '--ignore-gpu-blocklist'],
  });
  defer(t, () => browser.close());
  const context = await browser.newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  // A request the page itself abandoned by navigating away is not a failure.
  page.on('requestfailed', (r) => {
    if (!(r.failure()?.errorText ?? '').includes('ERR_ABORTED')) problems.push(`request failed: ${r.url()}`);
  });
  // Nothing may leave the machine: every request that is not to the test server fails the test.
  await context.route((u) => !['127.0.0.1', 'localhost'].includes(u.hostname) && u.protocol !== 'data:' && u.protocol !== 'blob:', (route) => {
    problems.push(`outside request: ${route.request().url()}`);
    return route.abort();
  });
  return { page, problems };
}

/** Calls the JSON API. */
export async function api(server, method, path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...(server.token ? { authorization: `Bearer ${server.token}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** Creates a project through the API: a 0.05° square near (10°E, 0°). */
export async function seedProject(server, name = 'Seeded project') {
  const { status, body } = await api(server, 'POST', '/api/v1/projects', {
    name,
    aoi: { type: 'Polygon', coordinates: [[[10, 0], [10.05, 0], [10.05, 0.05], [10, 0.05], [10, 0]]] },
    start: '2024-01-01',
    end: '2024-12-31',
    task: 'classification',
    classes: [{ id: 0, name: 'Water', color: '#0000ff' }],
  });
  if (status !== 201) throw new Error(`seeding a project: HTTP ${status} ${JSON.stringify(body)}`);
  return body;
}

/** Polls `fn` until it returns a truthy value. */
export async function eventually(fn, { timeout = 15_000, interval = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

/**
 * Runs `groundwork demo --exit` (reduced: a 256 px scene, `epochs` epochs) on the server's database
 * and objects, without a model folder (random encoder weights); resolves to its JSON summary.
 */
export function runDemo(server, { epochs = 2 } = {}) {
  const models = mkdtempSync(path.join(tmpdir(), 'gw-no-models-'));
  const env = {
    ...process.env,
    DATABASE_URL: server.databaseUrl,
    GROUNDWORK_DEMO_DIR: server.dir,
    GROUNDWORK_MODEL_DIR: models,
    RUST_LOG: 'warn',
  };
  delete env.GROUNDWORK_BASEMAP_URL;
  const args = ['demo', '--exit', '--bind', '127.0.0.1:0', '--scene-px', '256', '--epochs', String(epochs),
    '--labels-per-class', '60', '--patch-size', '8', '--offline'];
  return new Promise((resolve, reject) => {
    execFile(BIN, args, { env, maxBuffer: 64 * 1024 * 1024, timeout: 20 * 60_000 }, (err, stdout, stderr) => {
      rmSync(models, { recursive: true, force: true });
      if (err) {
        reject(new Error(`groundwork demo failed: ${err.message}\n${stderr}`));
        return;
      }
      const last = stdout.trim().split('\n').pop();
      try {
        resolve(JSON.parse(last));
      } catch (e) {
        reject(new Error(`the demo's last line is not JSON (${e.message}): ${last}\n${stderr}`));
      }
    });
  });
}
