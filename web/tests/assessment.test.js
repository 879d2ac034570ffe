// Accuracy assessment in the browser, on a real class map: the reduced demo publishes one, an editor
// draws a small stratified sample from the map's page, a reviewer with the viewer role labels every unit
// blind on the labelling page (no map class in the page or in what it loads, no class-map layer; one
// unit "unsure"; keys and buttons), and the report page then shows overall accuracy and the areas with
// their 95 % intervals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { admin, eventually, openPage, runDemo, signIn, startServer } from './helpers.js';


test('an editor draws a sample, a viewer labels it blind, and the report shows areas with intervals', async (t) => {
  // No worker of the test server competes with the demo's own for its steps.
  const server = await startServer(t, { localWorkers: 0 });
  const summary = await runDemo(server);
  const outputId = new URL(summary.map_url).pathname.split('/').pop();
  assert.match(outputId, /^[0-9a-f-]{36}$/);
  const editor = { email: 'editor@example.org', password: 'an editor password' };
  const reviewer = { email: 'reviewer@example.org', password: 'a reviewer password' };
  for (const [who, role] of [[editor, 'member'], [reviewer, 'viewer']]) {
    admin(server, ['create-user', '--email', who.email, '--password-stdin'], `${who.password}\n`);
    admin(server, ['add-member', '--org', 'Groundwork demo', '--email', who.email, '--role', role]);
  }

  // The editor draws a small sample from the map's page ("More settings": a large target standard
  // error and a small minimum per class).
  const { page, problems } = await openPage(t);
  await signIn(page, server, editor);
  await page.goto(`${server.url}/outputs/${outputId}`);
  const section = page.locator('section#accuracy');
  assert.match(await section.locator('h2').textContent(), /Accuracy assessment/);
  assert.match(await section.textContent(), /No assessment yet/);
  await section.getByText('More settings').click();
  await section.getByLabel(/Target standard error/).fill('0.1');
  await section.getByLabel(/Minimum units per class/).fill('3');
  await Promise.all([
    page.waitForURL(/\/assessments\/[0-9a-f-]{36}$/),
    section.getByRole('button', { name: 'Draw a sample' }).click(),
  ]);
  const assessmentUrl = page.url();
  const id = new URL(assessmentUrl).pathname.split('/').pop();
  const progress = await page.locator('[data-section="progress"] [data-field="progress"]').textContent();
  const [, total] = progress.match(/^0 of (\d+) units labelled/) ?? [];
  const n = Number(total);
  assert.ok(n >= 4 && n <= 20, `a small sample: ${progress}`);
  // A row per mapped class (the demo's map may leave out one of its four classes).
  const strata = await page.locator('table[data-table="strata"] tbody tr').count();
  assert.ok(strata >= 2 && strata <= 4, `${strata} mapped classes`);
  assert.match(await page.locator('[data-section="report"]').textContent(), /No unit is labelled yet/);
  // The map's page lists it.
  await page.goto(`${server.url}/outputs/${outputId}`);
  assert.equal(await page.locator(`section#accuracy a[href="/assessments/${id}"]`).count(), 1);

  // A reviewer with the viewer role opens it from the assessment's page and labels blind.
  const { page: rp, problems: theirs } = await openPage(t);
  const outputRequests = [];
  const imageryTiles = [];
  const sampleLists = [];
  rp.on('request', (r) => {
    if (r.url().includes('/api/v1/outputs/')) outputRequests.push(r.url());
  });
  rp.on('response', async (r) => {
    const u = new URL(r.url());
    if (/\/api\/v1\/projects\/[^/]+\/imagery\/.+\.png$/.test(u.pathname)) imageryTiles.push(r.status());
    if (u.pathname === `/api/v1/assessments/${id}/samples` && r.request().method() === 'GET') {
      sampleLists.push({ query: u.search, body: await r.text() });
    }
  });
  await signIn(rp, server, reviewer);
  await rp.goto(assessmentUrl);
  await Promise.all([
    rp.waitForURL(`${server.url}/assessments/${id}/label`),
    rp.getByRole('link', { name: 'Label the sample' }).click(),
  ]);
  const map = rp.locator('#assess-map');
  await map.and(rp.locator('[data-ready="true"]')).waitFor({ timeout: 30_000 });

  // Blind: neither the page nor the sample list it loads holds a unit's map class, and no class-map
  // layer (no request for the output's tiles or anything else of it).
  const html = await rp.content();
  for (const leak of ['map_class', 'stratum', 'inclusion_probability', `/outputs/${outputId}`]) {
    assert.ok(!html.includes(leak), `the labelling page holds ${leak}`);
  }
  assert.doesNotMatch(await rp.locator('main').innerText(), /map class:|mapped as/i);
  assert.equal(sampleLists.length, 1);
  assert.equal(sampleLists[0].query, '', 'the blind list');
  const listed = JSON.parse(sampleLists[0].body);
  assert.equal(listed.length, n);
  assert.ok(listed.every((u) => !('map_class' in u) && !('inclusion_probability' in u)), sampleLists[0].body);
  // The unit is shown on the imagery.
  await eventually(() => imageryTiles.some((s) => s === 200), { timeout: 30_000, what: 'an imagery tile' });

  // Four classes and "Unsure" to answer with; the arrow keys move between units.
  const classes = rp.locator('#assess-classes button[data-class-id]');
  assert.equal(await classes.count(), 4);
  const first = await map.getAttribute('data-unit');
  await rp.keyboard.press('ArrowRight');
  await eventually(async () => (await map.getAttribute('data-unit')) !== first, { what: 'the next unit' });
  await rp.keyboard.press('ArrowLeft');
  await eventually(async () => (await map.getAttribute('data-unit')) === first, { what: 'the previous unit' });

  // The first unit "unsure" with its button, the rest with the number keys (a reviewer's guesses),
  // every other one by clicking the class instead.
  const done = async () => Number(await map.getAttribute('data-done'));
  await rp.getByRole('button', { name: /Unsure/ }).click();
  await eventually(async () => (await done()) === 1, { what: 'the unsure answer to be saved' });
  for (let k = 1; k < n; k++) {
    const unit = await map.getAttribute('data-unit');
    if (k % 2) await rp.keyboard.press(String((k % 4) + 1));
    else await classes.nth(k % 4).click();
    await eventually(async () => (await done()) === k + 1, { what: `answer ${k + 1} to be saved` });
    if (k + 1 < n) assert.notEqual(await map.getAttribute('data-unit'), unit, 'the next unanswered unit is shown');
  }
  await rp.locator('#assess-done').waitFor({ state: 'visible' });
  assert.match(await rp.locator('#assess-progress-text').textContent(), new RegExp(`^${n} of ${n} units labelled \\(1 unsure\\)`));
  assert.deepEqual(outputRequests, [], 'no request for the class map');

  // The report: overall accuracy and each class's area with its 95 % interval, next to the mapped area.
  await Promise.all([
    rp.waitForURL((u) => u.pathname === `/assessments/${id}`),
    rp.getByRole('link', { name: 'See the report' }).click(),
  ]);
  assert.match(await rp.locator('[data-field="overall-accuracy"]').textContent(), /^\d{1,3}\.\d ± \d{1,3}\.\d %$/);
  assert.match(await rp.locator('[data-field="unsure-count"]').textContent(), /^1: left out/);
  const rows = rp.locator('table[data-table="areas"] tbody tr');
  assert.equal(await rows.count(), 4);
  for (const row of await rows.all()) {
    const cells = await row.locator('td').allTextContents();
    assert.match(cells[0], /^[\d,]+(\.\d+)?$/, `mapped area ${cells}`);
    assert.match(cells[1], /^-?[\d,]+(\.\d+)? ± [\d,]+(\.\d+)?$/, `error-adjusted area ${cells}`);
  }
  assert.equal(await rp.locator('table[data-matrix="proportions"] tbody tr').count(), 4);
  const csv = await rp.request.get(`${server.url}/api/v1/assessments/${id}/report.csv`);
  assert.equal(csv.status(), 200);
  assert.match(await csv.text(), /^class_id,class,mapped_ha,area_ha,area_ci95_ha/);

  // The editor's map page shows the assessment as done.
  await page.goto(`${server.url}/outputs/${outputId}`);
  assert.match(await page.locator(`section#accuracy li[data-assessment="/assessments/${id}"]`).textContent(), new RegExp(`${n} of ${n} units labelled`));
  assert.deepEqual(problems, []);
  assert.deepEqual(theirs, []);
});
