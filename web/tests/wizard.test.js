// The new-project wizard: draw a polygon on the map, see its area, get a validation message for a bad
// field with every value kept, correct it and land on the new project's page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, openPage, signIn, startServer } from './helpers.js';

test('a project is created by drawing its area on the map, after a validation error is fixed', async (t) => {
  const server = await startServer(t);
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  // Zoom 11 near (10.05°E, 0.05°N): a few hundred pixels are a few km.
  await page.goto(`${server.url}/projects/new#map=11/0.05/10.05`);
  const map = page.locator('#aoi-map');
  await map.and(page.locator('[data-ready="true"]')).waitFor();

  // An uploaded GeoJSON file is shown and measured: 0.1° × 0.1° at the equator is 123.1 km².
  await page.locator('#aoi-file').setInputFiles({
    name: 'area.geojson',
    mimeType: 'application/geo+json',
    buffer: Buffer.from(JSON.stringify({ type: 'FeatureCollection', features: [{ type: 'Feature', properties: {},
      geometry: { type: 'Polygon', coordinates: [[[0, 0], [0.1, 0], [0.1, 0.1], [0, 0.1], [0, 0]]] } }] })),
  });
  await eventually(async () => (await page.locator('#aoi-area').textContent()) === '≈ 123 km²', { what: 'the uploaded area' });
  await page.getByRole('button', { name: 'Clear area' }).click();
  assert.equal(await page.locator('#aoi-area').textContent(), 'none yet');
  assert.equal(await page.getByLabel('Area as GeoJSON (EPSG:4326)').inputValue(), '');
  // Back to the view the test draws in (the upload moved the map to its area). The map writes its own view
  // into the hash a moment after it moves, so a hash set too early can be overwritten by the upload's view:
  // set it until it stays.
  await eventually(async () => {
    await page.evaluate(() => {
      if (!window.location.hash.startsWith('#map=11/0.05/10.05')) window.location.hash = 'map=11/0.05/10.05';
    });
    await page.waitForTimeout(600);
    return (await page.evaluate(() => window.location.hash)).startsWith('#map=11/0.05/10.05');
  }, { what: 'the map to move to the drawing view' });

  await page.getByRole('button', { name: 'Draw polygon' }).click();
  assert.equal(await page.getByRole('button', { name: 'Draw polygon' }).getAttribute('aria-pressed'), 'true');
  // The clicks go to the middle of the map: bring all of it into the window first.
  await map.scrollIntoViewIfNeeded();
  const box = await map.boundingBox();
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const corners = [[-120, -80], [120, -80], [120, 80], [-120, 80]];
  for (const [dx, dy] of corners) {
    await page.mouse.click(cx + dx, cy + dy);
    await page.waitForTimeout(150);
  }
  await page.mouse.click(cx + corners[0][0], cy + corners[0][1]); // closes the ring

  const area = page.locator('#aoi-area');
  await eventually(async () => /≈ [\d.]+ km²/.test(await area.textContent()), { what: 'the area to show' });
  const shown = Number((await area.textContent()).match(/([\d.]+) km²/)[1]);
  // 240 × 160 px at zoom 11 near the equator is about 9.2 × 6.1 km.
  assert.ok(shown > 30 && shown < 80, `area ${shown} km²`);
  const aoi = JSON.parse(await page.getByLabel('Area as GeoJSON (EPSG:4326)').inputValue());
  assert.equal(aoi.type, 'Polygon');
  assert.equal(aoi.coordinates[0].length, 5);

  await page.getByLabel('Name', { exact: true }).fill('Mangroves of the delta');
  await page.getByLabel('First day').fill('2024-06-01');
  await page.getByLabel('Last day').fill('2024-01-01'); // before the first day: the server refuses it
  await page.getByLabel('Class 1 name').fill('Mangrove');
  // Keyboard: Enter on "Add class" adds a row and moves the focus into it.
  await page.getByRole('button', { name: 'Add class' }).focus();
  await page.keyboard.press('Enter');
  assert.equal(await page.evaluate(() => document.activeElement.id), await page.getByLabel('Class 2 name').getAttribute('id'));
  await page.keyboard.type('Water');
  await page.getByLabel('Sentinel-1').check();
  await page.getByRole('button', { name: 'Create project' }).click();

  await page.locator('#end-error').waitFor();
  assert.match(await page.locator('#end-error').textContent(), /before start/);
  assert.equal(await page.getByLabel('Last day').getAttribute('aria-invalid'), 'true');
  assert.match(await page.getByRole('alert').first().textContent(), /not created/);
  // Everything typed or drawn is still there.
  assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'Mangroves of the delta');
  assert.equal(await page.getByLabel('Class 2 name').inputValue(), 'Water');
  assert.ok(await page.getByLabel('Sentinel-1').isChecked());
  assert.deepEqual(JSON.parse(await page.getByLabel('Area as GeoJSON (EPSG:4326)').inputValue()), aoi);
  await page.locator('#aoi-map[data-ready="true"]').waitFor();
  assert.equal(await area.textContent(), `≈ ${shown >= 1 && shown < 100 ? shown.toFixed(1) : shown} km²`);
  assert.equal((await api(server, 'GET', '/api/v1/projects')).body.items.length, 0);

  await page.getByLabel('Last day').fill('2024-12-31');
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.waitForURL(/\/projects\/[0-9a-f-]{36}$/);
  assert.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Mangroves of the delta');

  const projects = (await api(server, 'GET', '/api/v1/projects')).body.items;
  assert.equal(projects.length, 1);
  const p = projects[0];
  assert.deepEqual(p.aoi, aoi);
  assert.deepEqual(p.modalities, ['sentinel2_l2a', 'sentinel1']);
  assert.deepEqual(p.classes.map((c) => c.name), ['Mangrove', 'Water']);
  // The server's ellipsoidal area and the page's spherical estimate agree within 1 %.
  const bbox = p.bbox;
  assert.ok(bbox[0] > 9.9 && bbox[2] < 10.2, `bbox ${bbox}`);
  const details = await page.locator('.details').textContent();
  const serverKm2 = Number(details.match(/Area\s*([\d.]+) km²/)[1]);
  assert.ok(Math.abs(serverKm2 - shown) / serverKm2 < 0.01, `server ${serverKm2} vs page ${shown}`);

  await page.locator('#project-map[data-ready="true"]').waitFor();
  // The only complaint is the browser noting the 422 of the refused form.
  assert.deepEqual(problems.filter((p) => !p.includes('status of 422')), []);
  assert.equal(problems.length, 1);
});

test('the "Go to" box moves the draw map to a point or a box and says what it cannot read', async (t) => {
  const server = await startServer(t);
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  await page.goto(`${server.url}/projects/new`);
  await page.locator('#aoi-map[data-ready="true"]').waitFor();
  const place = page.getByLabel('Go to coordinates');
  const message = page.locator('#go-to-message');
  const view = async () => {
    const [zoom, lat, lon] = (await page.evaluate(() => window.location.hash)).replace('#map=', '').split('/').map(Number);
    return { zoom, lat, lon };
  };
  const near = (a, b, tolerance) => Math.abs(a - b) < tolerance;

  // A point, latitude first, with the button: zoom 12 there.
  await place.fill('-1.2921, 36.8219');
  await page.getByRole('button', { name: 'Go to these coordinates' }).click();
  await eventually(async () => {
    const v = await view();
    return v.zoom === 12 && near(v.lat, -1.2921, 1e-3) && near(v.lon, 36.8219, 1e-3);
  }, { what: 'the map at the point' });
  assert.match(await message.textContent(), /Map moved to latitude -1\.2921, longitude 36\.8219/);
  assert.equal(await place.getAttribute('aria-invalid'), null);

  // Longitude first, marked with letters; Enter moves the map and does not submit the wizard.
  await place.fill('0.12W 51.5N');
  await place.press('Enter');
  await eventually(async () => {
    const v = await view();
    return v.zoom === 12 && near(v.lat, 51.5, 1e-3) && near(v.lon, -0.12, 1e-3);
  }, { what: 'the map at the lettered point' });
  assert.equal(new URL(page.url()).pathname, '/projects/new');

  // A box (west, south, east, north) is fitted into the map.
  await place.fill('36.6, -1.45, 37.1, -1.15');
  await place.press('Enter');
  await eventually(async () => {
    const v = await view();
    return v.zoom > 8 && v.zoom < 12 && near(v.lat, -1.3, 0.02) && near(v.lon, 36.85, 0.02);
  }, { what: 'the map fitted to the box' });
  assert.match(await message.textContent(), /box from 36\.6, -1\.45 to 37\.1, -1\.15/);

  // What it cannot read is explained next to the box, and the map stays where it is.
  const before = await view();
  await place.fill('Nairobi');
  await place.press('Enter');
  assert.match(await message.textContent(), /“Nairobi” is not a number.*cannot look up place names/);
  assert.equal(await place.getAttribute('aria-invalid'), 'true');
  assert.match(await message.getAttribute('class'), /field-error/);
  assert.deepEqual(await view(), before);
  await place.fill('95, 10');
  await page.getByRole('button', { name: 'Go to these coordinates' }).click();
  assert.match(await message.textContent(), /latitude 95 is outside −90 to 90/);

  // Correcting it clears the error.
  await place.fill('10.05 E, 0.05 N');
  await place.press('Enter');
  await eventually(async () => near((await view()).lon, 10.05, 1e-3), { what: 'the map at the corrected point' });
  assert.equal(await place.getAttribute('aria-invalid'), null);
  assert.doesNotMatch(await message.getAttribute('class'), /field-error/);
  assert.equal((await api(server, 'GET', '/api/v1/projects')).body.items.length, 0, 'nothing was submitted');
  assert.deepEqual(problems, []);
});
