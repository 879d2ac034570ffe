// A phone (390 × 844 CSS px): the header, the tables and the training chart fit the screen, so the page
// never scrolls sideways (wide tables scroll inside their own wrapper).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { api, eventually, openPage, seedProject, signIn, startServer } from './helpers.js';

const PHONE = { width: 390, height: 844 };

// The page's width against the window's, and the elements that stick out past the window's right edge
// (for the failure message).
async function overflow(page) {
  return page.evaluate(() => {
    const width = window.innerWidth;
    const sticking = [];
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.right <= width + 0.5) continue;
      // Content inside a scrolling wrapper does not widen the page; a positioned element (a visually
      // hidden label) is clipped only by wrappers from its containing block up.
      const positioned = ['absolute', 'fixed'].includes(getComputedStyle(el).position);
      let clipped = false;
      for (let p = positioned ? el.offsetParent : el.parentElement; p && p !== document.body; p = p.parentElement) {
        const style = getComputedStyle(p);
        if (['auto', 'scroll', 'hidden', 'clip'].includes(style.overflowX) && p.getBoundingClientRect().right <= width + 0.5) {
          clipped = true;
          break;
        }
      }
      if (!clipped) sticking.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.trim().split(/\s+/).join('.')}` : ''} → ${Math.round(r.right)}`);
    }
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: width, sticking: sticking.slice(0, 10) };
  });
}

async function assertFits(page, what) {
  const o = await overflow(page);
  assert.ok(o.scrollWidth <= o.innerWidth, `${what}: the page is ${o.scrollWidth} px wide in a ${o.innerWidth} px window; sticking out: ${o.sticking.join(', ')}`);
}

test('the projects list, a project with a run, the wizard and the members page fit a 390 px phone', async (t) => {
  const server = await startServer(t);
  const project = await seedProject(server, 'Mangrove and wetland mapping of the northern delta region');
  const { page, problems } = await openPage(t, PHONE);
  await signIn(page, server);

  await page.goto(`${server.url}/projects`);
  await page.getByRole('link', { name: /Mangrove and wetland/ }).waitFor();
  await assertFits(page, 'the projects list');
  // The header's navigation is all on screen.
  for (const name of ['Projects', 'Workers', 'Members', 'Tokens']) {
    const box = await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name }).boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `${name} link at ${JSON.stringify(box)}`);
  }
  const signOut = await page.getByRole('button', { name: 'Sign out' }).boundingBox();
  assert.ok(signOut.x + signOut.width <= PHONE.width, `Sign out at ${JSON.stringify(signOut)}`);

  // A project page with a run: its steps table scrolls inside its wrapper, if at all.
  const started = await api(server, 'POST', `/api/v1/projects/${project.id}/runs`,
    { steps: [{ name: 'sleep-on-a-phone', kind: 'sleep', args: { seconds: 60 } }] });
  assert.equal(started.status, 201, JSON.stringify(started.body));
  await page.goto(`${server.url}/projects/${project.id}`);
  const row = page.locator('tr[data-step-id]').first();
  await eventually(async () => (await row.locator('[data-field="state"]').textContent()) === 'running',
    { timeout: 15_000, what: 'the step to run' });
  await page.locator('#project-map[data-ready="true"]').waitFor();
  await assertFits(page, 'the project page');
  // The actions cell is a table cell in its row, and the row keeps one line of cells.
  const cell = row.locator('td.actions');
  assert.equal(await cell.evaluate((td) => getComputedStyle(td).display), 'table-cell');
  const rowBox = await row.boundingBox();
  const cellBox = await cell.boundingBox();
  assert.ok(Math.abs(cellBox.y - rowBox.y) < 1 && Math.abs(cellBox.height - rowBox.height) < 1,
    `the actions cell spans its row: ${JSON.stringify(cellBox)} in ${JSON.stringify(rowBox)}`);
  assert.equal((await api(server, 'POST', `/api/v1/steps/${started.body.steps[0].id}/cancel`)).status, 202);

  // The new-project wizard, with its map and "Go to" box.
  await page.goto(`${server.url}/projects/new`);
  await page.locator('#aoi-map[data-ready="true"]').waitFor();
  await assertFits(page, 'the new-project wizard');

  // The members page, with a pending invitation (a table with an actions cell) for a long address.
  await page.goto(`${server.url}/members`);
  await page.getByLabel('Their email').waitFor();
  await assertFits(page, 'the members page');
  await page.getByLabel('Their email').fill('field.coordinator.northern-delta@example.org');
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/members/invitations'),
    page.getByRole('button', { name: 'Create invitation link' }).click(),
  ]);
  await assertFits(page, 'the members page with a new invitation link');
  await page.goto(`${server.url}/members`);
  const invitation = page.locator('tr[data-invitation="field.coordinator.northern-delta@example.org"]');
  await invitation.waitFor();
  assert.equal(await invitation.locator('td.actions').evaluate((td) => getComputedStyle(td).display), 'table-cell');
  await assertFits(page, 'the members page with a pending invitation');
  assert.deepEqual(problems, []);
});
