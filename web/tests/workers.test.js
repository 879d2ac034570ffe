// Worker administration: a worker is drained from the page and its state changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, openPage, seedProject, signIn, startServer } from './helpers.js';

test('an admin drains a worker on the worker page and sees it draining', async (t) => {
  const server = await startServer(t);
  const { page, problems } = await openPage(t, { width: 768, height: 1024 });
  await signIn(page, server);

  await page.goto(`${server.url}/workers`);
  const row = page.locator('tr[data-worker-id]').filter({ hasText: 'browser-test-worker' });
  await eventually(async () => (await row.locator('[data-field="state"]').textContent()) === 'active', { what: 'an active worker' });
  assert.match(await page.locator('table').first().textContent(), /cpu/);

  // The page follows the worker without a reload: a step it takes shows up in its row.
  const project = await seedProject(server);
  const started = await api(server, 'POST', `/api/v1/projects/${project.id}/runs`,
    { steps: [{ name: 'long', kind: 'sleep', args: { seconds: 60 } }] });
  assert.equal(started.status, 201);
  await eventually(async () => (await row.locator('[data-field="steps"]').textContent()) === '1',
    { timeout: 15_000, what: 'the running step on the worker row' });

  await row.getByRole('button', { name: 'Drain browser-test-worker' }).click();
  await page.waitForURL(/\/workers#worker-/);
  const after = page.locator('tr[data-worker-id]').filter({ hasText: 'browser-test-worker' });
  assert.equal(await after.locator('[data-field="state"]').textContent(), 'draining');
  // Draining lets the running step finish: the worker still holds it.
  assert.equal(await after.locator('[data-field="steps"]').textContent(), '1');
  assert.ok(await after.getByRole('button', { name: 'Resume browser-test-worker' }).isVisible());
  assert.equal(await after.getByRole('button', { name: 'Drain browser-test-worker' }).count(), 0);

  const workers = (await api(server, 'GET', '/api/v1/workers')).body.items;
  assert.equal(workers.find((w) => w.name === 'browser-test-worker').admin_state, 'draining');
  // The pool summary counts it as draining: queues, active, draining, paused, offline.
  const pool = page.getByRole('region', { name: 'Pools' }).locator('tbody tr').filter({ hasText: 'cpu' });
  assert.deepEqual((await pool.locator('td').allTextContents()).slice(0, 5), ['cpu', '0', '1', '0', '0']);

  await after.getByRole('button', { name: 'Resume browser-test-worker' }).click();
  await page.waitForURL(/\/workers#worker-/);
  assert.equal(await page.locator('tr[data-worker-id]').filter({ hasText: 'browser-test-worker' }).locator('[data-field="state"]').textContent(), 'active');
  // Stop the step so that the server shuts down at once.
  assert.equal((await api(server, 'POST', `/api/v1/steps/${started.body.steps[0].id}/cancel`)).status, 202);
  assert.deepEqual(problems, []);
});
