// A project's runs: a demo run's progress bar reaches done; a running step is cancelled from the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, openPage, seedProject, signIn, startServer } from './helpers.js';

async function startSleep(page, server, project, seconds) {
  await page.goto(`${server.url}/projects/${project.id}`);
  await page.getByLabel('Demo run (sleep)').check();
  await page.getByLabel('Seconds').fill(String(seconds));
  await page.getByRole('button', { name: 'Start run' }).click();
  await page.waitForURL(/#run-/);
  return page.locator('tr[data-step-id]').first();
}

test('a demo run shows live progress until its bar reaches done', async (t) => {
  const server = await startServer(t);
  const project = await seedProject(server);
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  const row = await startSleep(page, server, project, 4);
  const progress = row.locator('progress');
  const seen = new Set();
  await eventually(async () => {
    seen.add(Number(await progress.getAttribute('value')));
    return (await row.locator('[data-field="state"]').textContent()) === 'succeeded';
  }, { timeout: 30_000, interval: 50, what: 'the step to succeed' });
  assert.equal(await progress.getAttribute('value'), '100');
  assert.equal(await row.locator('[data-field="percent"]').textContent(), '100 %');
  assert.ok([...seen].some((v) => v > 0 && v < 100), `the bar moved through ${[...seen].sort((a, b) => a - b)}`);
  assert.match(await row.locator('[data-field="log"]').textContent(), /slept/);
  await eventually(async () => (await page.locator('[data-field="run-state"]').first().textContent()) === 'succeeded',
    { what: 'the run to succeed' });
  assert.ok(await row.locator('form[data-action="cancel"]').isHidden());
  assert.deepEqual(problems, []);
});

test('a running step is cancelled from the project page and marked cancelled', async (t) => {
  const server = await startServer(t);
  const project = await seedProject(server);
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  const row = await startSleep(page, server, project, 120);
  await eventually(async () => (await row.locator('[data-field="state"]').textContent()) === 'running',
    { what: 'the step to run' });
  await row.getByRole('button', { name: 'Cancel sleep' }).click();
  await page.waitForURL(/#step-/);

  const state = page.locator('tr[data-step-id]').first().locator('[data-field="state"]');
  await eventually(async () => (await state.textContent()) === 'cancelled', { timeout: 15_000, what: 'the step to be cancelled' });
  const stepId = await page.locator('tr[data-step-id]').first().getAttribute('data-step-id');
  assert.equal((await api(server, 'GET', `/api/v1/steps/${stepId}`)).body.state, 'cancelled');
  await page.getByRole('button', { name: 'Retry sleep' }).waitFor();
  assert.ok(await page.getByRole('button', { name: 'Cancel sleep' }).isHidden());
  assert.deepEqual(problems, []);
});

test('an acquisition plans the windows, which the map shows by status', async (t) => {
  const server = await startServer(t);
  const project = await seedProject(server);
  const { page, problems } = await openPage(t, { width: 768, height: 1024 });
  await signIn(page, server);

  await page.goto(`${server.url}/projects/${project.id}`);
  assert.match(await page.locator('#window-counts').textContent(), /Windows: 0/);
  // Nothing listens on port 9: the steps fail, but the windows are planned when the run starts.
  await page.getByLabel('Acquire imagery').check();
  assert.ok(await page.getByLabel('Seconds').isHidden());
  // Addresses the administrator did not allow, and local files, are refused next to the field.
  for (const refused of ['http://169.254.169.254/latest/meta-data', '/etc/passwd']) {
    await page.getByLabel('STAC API URL or catalog.json path').fill(refused);
    await page.getByRole('button', { name: 'Start run' }).click();
    await eventually(async () => /refused by the outbound-request policy/.test(await page.content()),
      { what: `the refusal of ${refused}` });
    await page.getByLabel('Acquire imagery').check();
  }
  assert.equal((await api(server, 'GET', `/api/v1/projects/${project.id}/runs`)).body.items.length, 0);
  await page.getByLabel('STAC API URL or catalog.json path').fill('http://127.0.0.1:9/stac');
  await page.getByRole('button', { name: 'Start run' }).click();
  await page.waitForURL(/#run-/);

  const { body } = await api(server, 'GET', `/api/v1/projects/${project.id}/windows?limit=1000`);
  assert.ok(body.counts.total > 0);
  const map = page.locator('#project-map');
  await eventually(async () => (await map.getAttribute('data-window-count')) === String(body.counts.total),
    { what: 'the windows on the map' });
  assert.match(await page.locator('#window-counts').textContent(), new RegExp(`Windows: ${body.counts.total} `));
  assert.ok(await page.locator('tr[data-step-id]').count() >= 2, 'the partition steps and their summary');
  // Nothing overflows the tablet width.
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
  // The two refused forms were answered 422; nothing else went wrong.
  assert.deepEqual(problems.filter((p) => !p.includes('status of 422')), []);
  assert.equal(problems.length, 2);
});
