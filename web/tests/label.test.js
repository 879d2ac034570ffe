// The labelling page: points, rectangles and polygons drawn with the keyboard and the mouse are saved as
// label-set versions and are there after a reload; an edit made elsewhere meanwhile is a conflict the
// page shows and resolves by reloading; undo, redo, select and delete; a file with bad rows imports the
// good ones and lists the bad; the page fits a tablet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, openPage, signIn, startServer } from './helpers.js';

const CLASSES = [
  { id: 10, name: 'Tree cover', color: '#006400' },
  { id: 40, name: 'Cropland', color: '#ffcc00' },
  // The same colour as the one before: the page must still tell them apart.
  { id: 80, name: 'Water', color: '#ffcc00' },
];

async function labelsOf(server, pid) {
  const r = await api(server, 'GET', `/api/v1/projects/${pid}/labels?format=geojson`);
  return r.status === 200 ? r.body : { label_set_version: 0, features: [] };
}

test('labels drawn on the labelling page are saved as versions, survive a reload and resolve a concurrent edit', async (t) => {
  const server = await startServer(t);
  const { status, body: project } = await api(server, 'POST', '/api/v1/projects', {
    name: 'Delta',
    aoi: { type: 'Polygon', coordinates: [[[10, 0], [10.05, 0], [10.05, 0.05], [10, 0.05], [10, 0]]] },
    start: '2024-01-01',
    end: '2024-12-31',
    task: 'segmentation',
    classes: CLASSES,
  });
  assert.equal(status, 201, JSON.stringify(project));
  const pid = project.id;
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  // The project page leads to the labelling page.
  await page.goto(`${server.url}/projects/${pid}`);
  await page.getByRole('link', { name: 'Label in the browser' }).click();
  await page.waitForURL(`${server.url}/projects/${pid}/label`);
  const map = page.locator('#label-map');
  await map.and(page.locator('[data-ready="true"]')).waitFor({ timeout: 30_000 });

  // Every class has its own colour and a number key; every control has a name.
  const swatches = await page.locator('#palette .swatch').evaluateAll((els) => els.map((e) => getComputedStyle(e).backgroundColor));
  assert.equal(new Set(swatches).size, 3, `colours ${swatches}`);
  for (const name of ['Select', 'Point', 'Polygon', 'Rectangle', 'Delete selected', 'Undo', 'Redo', 'Next unlabelled', 'Suggest points to label', 'Import', 'Split the windows']) {
    assert.equal(await page.getByRole('button', { name, exact: true }).count(), 1, name);
  }
  assert.equal(await page.getByLabel('Imagery', { exact: true }).count(), 1);

  const box = await map.boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const count = async () => Number(await map.getAttribute('data-label-count'));

  // Key 2 picks "Cropland", key P the point tool; a click saves a point of that class.
  await page.keyboard.press('2');
  await page.keyboard.press('p');
  assert.equal(await page.getByRole('button', { name: 'Point', exact: true }).getAttribute('aria-pressed'), 'true');
  await page.mouse.click(cx - 100, cy - 60);
  await eventually(async () => (await count()) === 1, { what: 'the point to be saved' });

  // Key 3 and R: a rectangle of "Water" from two clicks.
  await page.keyboard.press('3');
  await page.keyboard.press('r');
  await page.mouse.click(cx + 40, cy + 20);
  await page.waitForTimeout(200);
  await page.mouse.click(cx + 120, cy + 90);
  await eventually(async () => (await count()) === 2, { what: 'the rectangle to be saved' });

  // Key 1 and G: a polygon of "Tree cover", closed on its first corner.
  await page.keyboard.press('1');
  await page.keyboard.press('g');
  const ring = [[-140, 40], [-60, 40], [-60, 120], [-140, 120]];
  for (const [dx, dy] of ring) {
    await page.mouse.click(cx + dx, cy + dy);
    await page.waitForTimeout(150);
  }
  await page.mouse.click(cx + ring[0][0], cy + ring[0][1]);
  await eventually(async () => (await count()) === 3, { what: 'the polygon to be saved' });

  let saved = await labelsOf(server, pid);
  assert.equal(saved.label_set_version, 3);
  const byClass = Object.fromEntries(saved.features.map((f) => [f.properties.class_id, f.geometry.type]));
  assert.deepEqual(byClass, { 10: 'Polygon', 40: 'Point', 80: 'Polygon' });

  // A reload shows the same labels and counts.
  await page.reload();
  await map.and(page.locator('[data-ready="true"]')).waitFor({ timeout: 30_000 });
  assert.equal(await count(), 3);
  assert.equal(await page.locator('#palette [data-class-id="40"] .count').getAttribute('data-count'), '1');

  // Somebody else adds a label meanwhile: the page's next edit is refused and says so; reloading fixes it.
  const other = await api(server, 'POST', `/api/v1/projects/${pid}/labels/edit`, {
    base_version: 3,
    add: { type: 'FeatureCollection', features: [{ type: 'Feature', properties: { class_id: 40 }, geometry: { type: 'Point', coordinates: [10.001, 0.001] } }] },
  });
  assert.equal(other.status, 201, JSON.stringify(other.body));
  await page.keyboard.press('2');
  await page.keyboard.press('p');
  await page.mouse.click(cx + 150, cy - 100);
  const conflict = page.locator('#label-conflict');
  await conflict.waitFor({ state: 'visible' });
  assert.match(await conflict.textContent(), /changed since version 3/);
  await page.getByRole('button', { name: 'Reload the labels' }).click();
  await eventually(async () => (await count()) === 4, { what: 'the other label after the reload' });
  // Clicking the button below the map scrolled the page: back to where the map was measured.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.mouse.click(cx + 150, cy - 100);
  await eventually(async () => (await count()) === 5, { what: 'the point after the reload' });

  // Undo removes it again, redo brings it back: both are versions.
  await page.keyboard.press('Control+z');
  await eventually(async () => (await count()) === 4, { what: 'undo' });
  await page.keyboard.press('Control+Shift+z');
  await eventually(async () => (await count()) === 5, { what: 'redo' });
  saved = await labelsOf(server, pid);
  assert.equal(saved.label_set_version, 7);

  // Select the first point with S and a click; Delete removes it.
  await page.keyboard.press('s');
  await page.mouse.click(cx - 100, cy - 60);
  await eventually(async () => (await map.getAttribute('data-selected')) !== '', { what: 'the point to be selected' });
  // Dragging the selected point moves it: one edit, the same number of labels, a new position.
  const beforeMove = (await labelsOf(server, pid)).features.filter((f) => f.geometry.type === 'Point').map((f) => f.geometry.coordinates[0]);
  await page.mouse.move(cx - 100, cy - 60);
  await page.mouse.down();
  await page.mouse.move(cx - 80, cy - 60, { steps: 5 });
  await page.mouse.move(cx - 60, cy - 60, { steps: 5 });
  await page.mouse.up();
  await eventually(async () => (await map.getAttribute('data-version')) === '8', { what: 'the move to be saved and shown' });
  const afterMove = (await labelsOf(server, pid)).features.filter((f) => f.geometry.type === 'Point').map((f) => f.geometry.coordinates[0]);
  assert.equal(afterMove.length, beforeMove.length);
  assert.equal(afterMove.filter((x) => !beforeMove.includes(x)).length, 1, `${beforeMove} → ${afterMove}`);
  assert.equal(await count(), 5);
  await eventually(async () => (await map.getAttribute('data-selected')) !== '', { what: 'the moved point to stay selected' });
  await page.keyboard.press('Delete');
  await eventually(async () => (await count()) === 4, { what: 'the deletion' });
  saved = await labelsOf(server, pid);
  assert.equal(saved.features.filter((f) => f.geometry.type === 'Point').length, 2, JSON.stringify(saved));

  // An import with a bad row imports the good one and lists the bad one by row.
  await page.locator('#label-file').setInputFiles({
    name: 'more.geojson',
    mimeType: 'application/geo+json',
    buffer: Buffer.from(JSON.stringify({ type: 'FeatureCollection', features: [
      { type: 'Feature', properties: { class: 'Water' }, geometry: { type: 'Point', coordinates: [10.02, 0.02] } },
      { type: 'Feature', properties: { class: 'Glacier' }, geometry: { type: 'Point', coordinates: [10.03, 0.03] } },
    ] })),
  });
  await page.getByRole('button', { name: 'Import', exact: true }).click();
  const result = page.locator('#import-result');
  await eventually(async () => /Imported 1 labels/.test(await result.textContent()), { what: 'the import report' });
  assert.match(await result.textContent(), /Feature 2: .*Glacier/);
  await eventually(async () => (await count()) === 5, { what: 'the imported label on the map' });
  // One import, one version.
  assert.equal((await labelsOf(server, pid)).label_set_version, 10);

  // At tablet width nothing scrolls sideways.
  await page.setViewportSize({ width: 800, height: 1000 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px too wide`);

  // The refused edit answered 409, which the browser logs; nothing else went wrong.
  assert.deepEqual(problems.filter((p) => !/status of 409 \(Conflict\)/.test(p)), []);
});
