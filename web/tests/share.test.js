// Read-only share links in the browser: the owner makes a share link on an output's map page; a browser
// with no session opens it and sees the map draw its tiles with the legend; the owner revokes it, and the
// same link then shows the not-found page.
//
// The published output is seeded directly (a 64 × 64 class map written as a COG with GDAL's
// `gdal_translate`, and its rows in the database), so the test needs no pipeline run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { eventually, openPage, seedProject, signIn, startServer } from './helpers.js';

const R = 6378137;
const SIZE = 64;
const CELL = 100;

/** A published class map of `projectId` (two classes, left and right half) near (10°E, 0°); its id. */
function seedOutput(server, projectId) {
  const west = (10 * Math.PI / 180) * R;
  const south = 0;
  const east = west + SIZE * CELL;
  const north = south + SIZE * CELL;
  const rows = [];
  for (let r = 0; r < SIZE; r += 1) {
    rows.push(Array.from({ length: SIZE }, (_, c) => (c < SIZE / 2 ? 1 : 2)).join(' '));
  }
  const key = `shared-test/${randomUUID()}/class.tif`;
  const file = path.join(server.dir, 'objects', key);
  mkdirSync(path.dirname(file), { recursive: true });
  const asc = `${file}.asc`;
  writeFileSync(asc, `ncols ${SIZE}\nnrows ${SIZE}\nxllcorner ${west}\nyllcorner ${south}\ncellsize ${CELL}\nNODATA_value 255\n${rows.join('\n')}\n`);
  execFileSync('gdal_translate', ['-q', '-of', 'COG', '-ot', 'Byte', '-a_srs', 'EPSG:3857', asc, file]);
  const lon = (x) => (x / R) * 180 / Math.PI;
  const lat = (y) => Math.atan(Math.sinh(y / R)) * 180 / Math.PI;
  const runId = randomUUID();
  const outputId = randomUUID();
  const classes = JSON.stringify([
    { id: 1, name: 'Forest', color: '#1b7837' },
    { id: 2, name: 'Water', color: '#2166ac' },
  ]);
  const sql = `
    insert into pipeline_run (id, org_id, project_id, state)
      select '${runId}', org_id, id, 'succeeded' from project where id = '${projectId}';
    insert into output (id, org_id, project_id, run_id, kind, utm_key, web_key, epsg, width, height, bands,
        bbox_west, bbox_south, bbox_east, bbox_north, bounds_3857, min_zoom, max_zoom, classes, stats, lineage)
      select '${outputId}', org_id, id, '${runId}', 'class', '${key}', '${key}', 3857, ${SIZE}, ${SIZE}, 1,
        ${lon(west)}, ${lat(south)}, ${lon(east)}, ${lat(north)}, '[${west}, ${south}, ${east}, ${north}]',
        10, 16, '${classes}', '{}', '{}' from project where id = '${projectId}';`;
  execFileSync('psql', [server.databaseUrl, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
  return outputId;
}

test('a share link opens the map without an account and stops working when revoked', async (t) => {
  const server = await startServer(t, { localWorkers: 0 });
  const project = await seedProject(server, 'Shared mangroves');
  const outputId = seedOutput(server, project.id);

  // The owner makes a link on the map page: its address is shown once.
  const { page: owner, problems: ownerProblems } = await openPage(t);
  await signIn(owner, server);
  await owner.goto(`${server.url}/outputs/${outputId}`);
  const share = owner.locator('section#shares');
  assert.equal(await share.getByText('No share links yet.').count(), 1);
  await share.getByLabel('Label').fill('Workshop');
  await share.getByLabel('Expires after (days, optional)').fill('30');
  await Promise.all([
    owner.waitForURL((u) => u.pathname === `/outputs/${outputId}/shares`),
    share.getByRole('button', { name: 'Create share link' }).click(),
  ]);
  const link = await owner.getByLabel('The link').inputValue();
  assert.match(link, new RegExp(`^${server.url}/shared/gws_[0-9a-f]{64}$`));
  const secret = new URL(link).pathname.split('/').pop();
  const row = share.locator('ul[aria-label="Share links"] li');
  assert.equal(await row.count(), 1);
  assert.match(await row.textContent(), /Workshop/);
  assert.equal(await row.locator('[data-field="status"]').textContent(), 'active');

  // A browser with no session opens it: the map, its tiles, the legend and downloads under the link.
  const { page: visitor, problems } = await openPage(t);
  const tiles = [];
  visitor.on('response', (r) => {
    if (r.url().includes(`/api/v1/shared/${secret}/tiles/`)) {
      tiles.push({ status: r.status(), type: r.headers()['content-type'] ?? '', cache: r.headers()['cache-control'] ?? '' });
    }
  });
  const opened = await visitor.goto(link);
  assert.equal(opened.status(), 200);
  assert.equal(new URL(visitor.url()).pathname, `/shared/${secret}`, 'no sign-in is asked for');
  assert.match(await visitor.locator('main').textContent(), /Shared read-only view/);
  const map = visitor.locator('#output-map');
  await eventually(async () => (await map.getAttribute('data-ready')) === 'true', { what: 'the shared map to load' });
  const legend = visitor.getByRole('list', { name: 'Classes' }).locator('li');
  assert.equal(await legend.count(), 2);
  assert.deepEqual((await legend.allTextContents()).map((s) => s.trim()), ['Forest', 'Water']);
  await eventually(() => tiles.some((r) => r.status === 200 && r.type.startsWith('image/png')),
    { timeout: 30_000, what: 'a PNG tile of the shared output' });
  assert.ok(tiles.every((r) => r.status !== 200 || r.cache.startsWith('public')), JSON.stringify(tiles));
  assert.equal(await visitor.getByRole('link', { name: 'Cloud-optimised GeoTIFF (UTM)' }).getAttribute('href'),
    `/api/v1/shared/${secret}/download.tif`);
  assert.equal(await visitor.locator('#output-imagery').count(), 0, 'no imagery without an account');
  assert.equal(await visitor.getByRole('button', { name: 'Sign out' }).count(), 0);
  assert.deepEqual(problems, []);

  // The owner revokes it.
  await owner.goto(`${server.url}/outputs/${outputId}`);
  await Promise.all([
    owner.waitForURL((u) => u.pathname === `/outputs/${outputId}` && u.hash.startsWith('#share-')),
    owner.locator('section#shares').getByRole('button', { name: 'Revoke Workshop' }).click(),
  ]);
  assert.equal(await owner.locator('section#shares [data-field="status"]').textContent(), 'revoked');
  assert.equal(await owner.locator('section#shares').getByRole('button', { name: /Revoke/ }).count(), 0);
  assert.deepEqual(ownerProblems, []);

  // The visitor's next visit finds nothing.
  const gone = await visitor.goto(link);
  assert.equal(gone.status(), 404);
  assert.match(await visitor.locator('h1').textContent(), /404 Not Found/);
  assert.equal(await visitor.locator('#output-map').count(), 0);
  const tile = await visitor.request.get(`${server.url}/api/v1/shared/${secret}/tiles/12/2161/2047.png`);
  assert.equal(tile.status(), 404);
});
