// A project's runs: a demo run's progress bar reaches done; a running step is cancelled from the page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, openPage, seedProject, startServer } from './helpers.js';

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
