// Result pages on a real result: the reduced demo (acquire, labels, split, train + evaluate, predict →
// combine → publish) runs against the test server's database and object store, then a viewer of the
// demo organisation opens the output's map, the project's training curve and the evaluation report.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admin, eventually, openPage, runDemo, signIn, startServer } from './helpers.js';

const EPOCHS = 2;


test('a viewer sees the map with legend, tiles and opacity, the training curve and the confusion matrix', async (t) => {
  // No worker of the test server competes with the demo's own for its steps.
  const server = await startServer(t, { localWorkers: 0 });
  const summary = await runDemo(server, { epochs: EPOCHS });
  const outputId = new URL(summary.map_url).pathname.split('/').pop();
  assert.match(outputId, /^[0-9a-f-]{36}$/);

  const viewer = { email: 'viewer@example.org', password: 'a viewer password' };
  admin(server, ['create-user', '--email', viewer.email, '--password-stdin'], `${viewer.password}\n`);
  admin(server, ['add-member', '--org', 'Groundwork demo', '--email', viewer.email, '--role', 'viewer']);

  const { page, problems } = await openPage(t);
  const tiles = [];
  page.on('response', (r) => {
    if (r.url().includes(`/api/v1/outputs/${outputId}/tiles/`)) {
      tiles.push({ status: r.status(), type: r.headers()['content-type'] ?? '' });
    }
  });
  await signIn(page, server, viewer);

  // The map: four classes in the legend, PNG tiles, an opacity slider that changes the layer.
  await page.goto(`${server.url}/outputs/${outputId}`);
  const map = page.locator('#output-map');
  await eventually(async () => (await map.getAttribute('data-ready')) === 'true', { what: 'the map to load' });
  const legend = page.getByRole('list', { name: 'Classes' }).locator('li');
  assert.equal(await legend.count(), 4);
  for (const li of await legend.all()) assert.ok((await li.textContent()).trim().length > 0);
  await eventually(() => tiles.some((r) => r.status === 200 && r.type.startsWith('image/png')),
    { timeout: 30_000, what: 'a PNG tile of the output' });
  assert.equal(await map.getAttribute('data-opacity'), '0.8');
  const slider = page.getByLabel('Layer opacity');
  await slider.focus();
  await slider.fill('30');
  await eventually(async () => (await map.getAttribute('data-opacity')) === '0.3', { what: 'the opacity to change' });
  assert.equal(await page.locator('#opacity-value').textContent(), '30 %');
  await slider.press('ArrowRight');
  await eventually(async () => (await map.getAttribute('data-opacity')) === '0.35', { what: 'the keyboard to move the slider' });
  assert.equal(await page.getByRole('link', { name: 'Cloud-optimised GeoTIFF (UTM)' }).getAttribute('href'),
    `/api/v1/outputs/${outputId}/download.tif`);
  assert.equal(await page.getByRole('link', { name: 'GeoJSON polygons' }).count(), 1);
  assert.equal(await page.getByRole('link', { name: 'STAC item' }).count(), 1);
  const lineage = await page.locator('dl[aria-labelledby="lineage-heading"]').textContent();
  assert.match(lineage, /Training run/);
  assert.match(lineage, /Label-set version/);

  // The project page: a curve per training run, a row per epoch in its table; no buttons for a viewer.
  await Promise.all([page.waitForURL(/\/projects\//), page.locator('h1 a').click()]);
  const training = page.locator('article.training').first();
  assert.equal(await training.locator('svg[data-chart="training"]').count(), 1);
  assert.equal(await training.locator('table.curve-table tbody tr').count(), EPOCHS);
  assert.equal(await page.getByRole('button', { name: 'Train a model' }).count(), 0);
  assert.equal(await page.getByRole('button', { name: 'Predict with the best model' }).count(), 0);
  assert.equal(await page.locator(`ul.outputs a[href="/outputs/${outputId}"]`).count(), 1);

  // The evaluation report: a 4×4 confusion matrix of counts for the model and for the baseline.
  await Promise.all([page.waitForURL(/\/evaluation$/), page.locator('ul.evaluations a').first().click()]);
  const matrix = page.locator('table[data-matrix="model"]');
  assert.equal(await matrix.locator('tbody tr').count(), 4);
  assert.equal(await matrix.locator('tbody td').count(), 16);
  for (const cell of await matrix.locator('tbody td').all()) assert.match(await cell.textContent(), /^\d+$/);
  assert.equal(await page.locator('table[data-matrix="baseline"] tbody td').count(), 16);
  assert.notEqual(await page.locator('[data-field="test-windows"]').textContent(), '–');
  assert.deepEqual(problems, []);
});
