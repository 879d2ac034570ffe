// The whole journey in the browser, as a person who has never seen the API makes it: create a project
// over part of the offline demo scene, see that training says what is missing, acquire imagery from
// the demo catalogue, look at it, import field points on the labelling page, answer the model's
// suggestions, split, train, predict
// and open the published map. The field points come from the demo's ground truth (sampled with GDAL),
// as a survey team's GPS points would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BIN, eventually, openPage, signIn, startServer } from './helpers.js';

// About 1.6 × 1.8 km inside the demo scene: a dozen 640 m windows.
const AREA = { type: 'Polygon', coordinates: [[[15.010, 45.120], [15.030, 45.120], [15.030, 45.136], [15.010, 45.136], [15.010, 45.120]]] };

/** Field points on a grid over AREA, with the ground truth's class name, as CSV; classes with too few points are left out. */
function fieldPoints(dir) {
  const classes = JSON.parse(readFileSync(path.join(dir, 'classes.json'), 'utf8')).classes;
  const names = new Map(classes.map((c) => [c.id, c.name]));
  const points = [];
  for (let i = 0; i < 24; i++) {
    for (let j = 0; j < 24; j++) {
      points.push([15.0105 + (i * 0.019) / 24, 45.1205 + (j * 0.015) / 24]);
    }
  }
  const values = execFileSync('gdallocationinfo', ['-valonly', '-wgs84', path.join(dir, 'ground_truth.tif')], {
    input: points.map(([x, y]) => `${x} ${y}`).join('\n'),
    encoding: 'utf8',
  }).trim().split('\n').map(Number);
  const byClass = new Map();
  points.forEach((p, k) => {
    const name = names.get(values[k]);
    if (!name) return;
    if (!byClass.has(name)) byClass.set(name, []);
    byClass.get(name).push(p);
  });
  const rows = ['lon,lat,class'];
  const kept = [];
  for (const [name, ps] of byClass) {
    if (ps.length < 8) continue;
    kept.push(name);
    for (const [x, y] of ps.slice(0, 60)) rows.push(`${x.toFixed(6)},${y.toFixed(6)},${name}`);
  }
  return { csv: rows.join('\n'), kept, classes };
}

async function newestRunState(page) {
  return page.locator('article.run').first().locator('[data-field="run-state"]').textContent();
}

async function waitForRun(page, what, timeout) {
  await eventually(async () => {
    const state = await newestRunState(page);
    if (state === 'failed' || state === 'cancelled') {
      throw new Error(`${what} ${state}: ${await page.locator('article.run').first().textContent()}`);
    }
    return state === 'succeeded';
  }, { timeout, interval: 500, what });
}

test('a new user goes from an empty project to a published map without leaving the browser', { timeout: 900_000 }, async (t) => {
  const demo = mkdtempSync(path.join(tmpdir(), 'gw-demo-data-'));
  t.after(() => rmSync(demo, { recursive: true, force: true }));
  execFileSync(BIN, ['demo-data', '--out', demo], { env: { ...process.env, RUST_LOG: 'warn' }, stdio: 'ignore' });
  const { csv, kept, classes } = fieldPoints(demo);
  assert.ok(kept.length >= 2, `the area holds ${kept.length} classes`);

  const server = await startServer(t, { demoData: demo });
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  // 1. The project, in the wizard: its area pasted as GeoJSON, the demo's classes.
  await page.goto(`${server.url}/projects/new`);
  await page.getByLabel('Name', { exact: true }).fill('Demo valley');
  await page.getByLabel('Area as GeoJSON (EPSG:4326)').fill(JSON.stringify(AREA));
  await page.getByLabel('First day').fill('2024-04-01');
  await page.getByLabel('Last day').fill('2024-07-31');
  await page.getByLabel('Class 1 name').fill(classes[0].name);
  for (let i = 1; i < classes.length; i++) {
    await page.getByRole('button', { name: 'Add class' }).click();
    await page.getByLabel(`Class ${i + 1} name`).fill(classes[i].name);
  }
  // The test server has no pretrained checkpoint: the project allows training from random weights.
  await page.getByLabel('Allow training from random weights').check();
  await Promise.all([
    page.waitForURL(/\/projects\/[0-9a-f-]{36}$/),
    page.getByRole('button', { name: 'Create project' }).click(),
  ]);
  const projectUrl = page.url();

  // 2. Training cannot start yet, and says why.
  const train = page.getByRole('button', { name: 'Train a model' });
  assert.ok(await train.isDisabled());
  assert.match(await page.locator('#train-hint').textContent(), /Acquire imagery first/);

  // 3. Acquire from the demo catalogue with the run form.
  await page.getByLabel('STAC API URL or catalog.json path').fill(`${server.url}/demo/stac`);
  await page.getByRole('button', { name: 'Start run' }).click();
  await page.waitForURL(/#run-/);
  await waitForRun(page, 'the acquisition', 300_000);
  await page.reload();
  assert.match(await page.locator('#train-hint').textContent(), /Label the imagery first/);

  // 4. The labelling page shows the imagery; the field points are imported there, then split.
  await page.getByRole('link', { name: 'Label in the browser' }).click();
  const map = page.locator('#label-map');
  await map.and(page.locator('[data-ready="true"]')).waitFor({ timeout: 30_000 });
  await eventually(async () => (await map.getAttribute('data-imagery')) !== null && (await map.getAttribute('data-imagery')) !== '', { what: 'the imagery layer' });
  assert.match(await map.getAttribute('data-imagery'), /^sentinel2_l2a\/\d+\/true_color$/);
  await page.locator('#label-file').setInputFiles({ name: 'field-points.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.getByRole('button', { name: 'Import', exact: true }).click();
  await eventually(async () => /Imported \d+ labels/.test(await page.locator('#import-result').textContent()), { what: 'the import' });
  // The model suggests where to label next; the user answers the first point with a class key and
  // skips the second.
  await page.getByRole('button', { name: 'Suggest points to label' }).click();
  await page.locator('#suggest-queue').waitFor({ state: 'visible', timeout: 120_000 });
  const first = await map.getAttribute('data-suggestion');
  assert.match(await page.locator('#suggest-current').textContent(), /what is at the marked pixel/);
  const before = Number(await map.getAttribute('data-label-count'));
  await page.keyboard.press('1');
  await eventually(async () => Number(await map.getAttribute('data-label-count')) === before + 1, { what: 'the suggested point to be labelled' });
  await eventually(async () => (await map.getAttribute('data-suggestion')) !== first, { what: 'the next suggestion' });
  await page.getByRole('button', { name: 'Skip', exact: true }).click();
  await eventually(async () => {
    const r = await fetch(`${server.url}/api/v1/projects/${projectUrl.split('/').pop()}/suggestions`, { headers: { authorization: `Bearer ${server.token}` } });
    const items = (await r.json()).latest?.items ?? [];
    return items[0]?.status === 'labelled' && items[1]?.status === 'skipped';
  }, { what: 'the answers to be recorded' });

  await page.getByLabel('Block size (windows per side)').fill('1');
  await page.getByRole('button', { name: 'Split the windows' }).click();
  await eventually(async () => /Split into \d+ training/.test(await page.locator('#split-result').textContent()), { what: 'the split' });

  // 5. Train (two epochs, under "More settings"), then map with the new model.
  await page.goto(projectUrl);
  assert.equal(await page.locator('#train-hint').count(), 0, await page.locator('#results').textContent());
  await page.getByText('More settings').click();
  await page.getByLabel('Epochs (default 30)').fill('2');
  await train.click();
  await page.waitForURL(/#run-/);
  await waitForRun(page, 'the training', 600_000);
  await page.reload();
  const predict = page.getByRole('button', { name: 'Predict with the best model' });
  assert.ok(await predict.isEnabled());
  await predict.click();
  await page.waitForURL(/#run-/);
  await waitForRun(page, 'the mapping', 300_000);
  await page.reload();

  // 6. The published map opens with its tiles.
  const tiles = [];
  page.on('response', (r) => {
    if (/\/api\/v1\/outputs\/[0-9a-f-]+\/tiles\//.test(r.url())) tiles.push(r.status());
  });
  await page.locator('ul.outputs a').first().click();
  await page.locator('#output-map').and(page.locator('[data-ready="true"]')).waitFor({ timeout: 30_000 });
  await eventually(async () => tiles.some((s) => s === 200), { what: 'a map tile' });
  // The map says where its model's weights came from, outlines the project and, for a class map,
  // gives the hectares of each class.
  assert.match(await page.locator('.provenance').textContent(), /Encoder weights:/);
  assert.equal(await page.locator('#output-map').getAttribute('data-outline-shown'), 'true');

  // 7. A second mapping can be compared with the first: a swipe between the two maps.
  await page.goto(projectUrl);
  await page.getByRole('button', { name: 'Predict with the best model' }).click();
  await page.waitForURL(/#run-/);
  await waitForRun(page, 'the second mapping', 300_000);
  await page.reload();
  const newest = await page.locator('ul.outputs a').first().getAttribute('href');
  await page.goto(new URL(newest, page.url()).href);
  await page.locator('#output-map').and(page.locator('[data-ready="true"]')).waitFor({ timeout: 30_000 });
  const compare = page.getByLabel('Compare with');
  assert.ok(await compare.count() > 0, 'the newer map offers the older one to compare with');
  const other = await compare.locator('option').nth(1).getAttribute('value');
  const otherId = other.split('/')[4];
  const otherTiles = [];
  page.on('response', (r) => {
    if (r.url().includes(`/api/v1/outputs/${otherId}/tiles/`)) otherTiles.push(r.status());
  });
  await compare.selectOption({ index: 1 });
  await page.locator('#output-map-compare[data-ready="true"]').waitFor({ timeout: 30_000 });
  await eventually(async () => otherTiles.some((s) => s === 200), { what: 'a tile of the compared map' });
  await page.getByLabel('Swipe').fill('30');
  assert.equal(await page.locator('#output-map').getAttribute('data-swipe'), '30');
  assert.match(await page.locator('#output-map-compare').getAttribute('style'), /inset\(0(px)? 0(px)? 0(px)? 30%\)/);
  await compare.selectOption({ index: 0 });
  assert.equal(await page.locator('#output-map-compare').count(), 0, 'choosing nothing removes the compared map');
  assert.deepEqual(problems, []);
});
