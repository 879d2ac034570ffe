// Members, invitations, tokens and the organisation switcher in the browser: the owner invites a colleague
// who joins with a new account in a browser of their own; the owner makes an API token that works against
// the API until it is revoked; an owner of two organisations switches between them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OWNER, admin, eventually, openPage, seedProject, signIn, startServer } from './helpers.js';

test('an invited colleague joins with a new account; an API token from the tokens page works until revoked', async (t) => {
  const server = await startServer(t);
  const project = await seedProject(server, 'Mangroves of the team');
  const { page, problems } = await openPage(t);
  await signIn(page, server);

  // The owner invites a colleague from the members page.
  await page.getByRole('link', { name: 'Members' }).click();
  await page.waitForURL((u) => u.pathname === '/members');
  await page.getByLabel('Their email').fill('colleague@example.org');
  await page.getByLabel('Role', { exact: true }).selectOption('member');
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/members/invitations'),
    page.getByRole('button', { name: 'Create invitation link' }).click(),
  ]);
  const link = await page.getByLabel('Invitation link', { exact: true }).inputValue();
  assert.ok(link.startsWith(`${server.url}/invite/`), link);
  await page.getByRole('button', { name: 'Copy link' }).focus();
  await page.keyboard.press('Enter');
  await eventually(async () => /Copied|Selected/.test(await page.locator('#invitation-created [role="status"]').textContent()),
    { timeout: 5000, what: 'the copy button to say what it did' });
  assert.equal(await page.locator('tr[data-invitation="colleague@example.org"]').count(), 1);

  // The colleague opens the link in a browser of their own, makes the account and lands in the organisation.
  const { page: colleague, problems: theirs } = await openPage(t);
  await colleague.goto(link);
  assert.match(await colleague.locator('h1').textContent(), new RegExp(`Join ${OWNER.org}`));
  assert.equal(await colleague.locator('#invited-role').textContent(), 'member');
  assert.equal(await colleague.getByLabel('Email').inputValue(), 'colleague@example.org');
  await colleague.getByLabel(/^Choose a password/).fill('the colleague’s password');
  await Promise.all([
    colleague.waitForURL((u) => u.pathname === '/projects'),
    colleague.getByRole('button', { name: 'Create account and join' }).click(),
  ]);
  assert.match(await colleague.locator('header').textContent(), new RegExp(OWNER.org));
  assert.match(await colleague.locator('header').textContent(), /colleague@example\.org/);
  assert.match(await colleague.locator('main').textContent(), /Mangroves of the team/);
  // The link is used up, and says so.
  const again = await colleague.goto(link);
  assert.equal(again.status(), 410);
  assert.match(await colleague.getByRole('alert').textContent(), /already been used/);
  // A member reads the members page without any form.
  await colleague.goto(`${server.url}/members`);
  assert.equal(await colleague.locator('main form').count(), 0);

  // The owner sees the colleague as a member; the invitation is no longer pending.
  await page.goto(`${server.url}/members`);
  assert.equal(await page.locator('tr[data-member="colleague@example.org"] [data-field="role"]').textContent(), 'member');
  assert.equal(await page.locator('tr[data-invitation]').count(), 0);

  // An API token made on the tokens page is shown once and works against the API.
  await page.getByRole('link', { name: 'Tokens' }).click();
  await page.waitForURL((u) => u.pathname === '/tokens');
  const form = page.getByRole('form', { name: 'New API token' });
  await form.getByLabel('Name').fill('nightly script');
  await form.getByRole('radio', { name: 'read' }).check();
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/tokens'),
    form.getByRole('button', { name: 'Create API token' }).click(),
  ]);
  const token = await page.getByLabel('The token').inputValue();
  assert.match(token, /^gw_/);
  const list = (bearer) => fetch(`${server.url}/api/v1/projects`, { headers: { authorization: `Bearer ${bearer}` } });
  const ok = await list(token);
  assert.equal(ok.status, 200);
  assert.ok((await ok.json()).items.some((p) => p.id === project.id));
  await page.goto(`${server.url}/tokens`);
  assert.equal(await page.getByLabel('The token').count(), 0, 'the secret is shown once');
  const row = page.locator('tr[data-token="nightly script"]');
  assert.equal(await row.locator('[data-field="scope"]').textContent(), 'read');
  assert.notEqual(await row.locator('[data-field="last-used"]').textContent(), 'never');

  // Revoked, it is refused.
  await Promise.all([
    page.waitForURL((u) => u.hash.startsWith('#token-')),
    row.getByRole('button', { name: 'Revoke nightly script' }).click(),
  ]);
  assert.equal(await page.locator('tr[data-token="nightly script"] [data-field="status"]').textContent(), 'revoked');
  assert.equal((await list(token)).status, 401);

  assert.deepEqual(problems, []);
  assert.deepEqual(theirs.filter((p) => !p.includes('410')), []);
});

test('an owner of two organisations switches between them from the header', async (t) => {
  const server = await startServer(t);
  await seedProject(server, 'Project of the first team');
  admin(server, ['create-org', '--name', 'Second team', '--owner-email', OWNER.email]);
  const { page, problems } = await openPage(t);
  await signIn(page, server);
  await page.goto(`${server.url}/projects`);
  assert.match(await page.locator('main').textContent(), /Project of the first team/);

  // With the keyboard: choose the organisation, then press the button.
  const select = page.getByLabel('Organisation');
  assert.deepEqual(await select.locator('option').allTextContents(), [OWNER.org, 'Second team']);
  await select.selectOption({ label: 'Second team' });
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/projects'),
    page.getByRole('button', { name: 'Switch organisation' }).press('Enter'),
  ]);
  assert.doesNotMatch(await page.locator('main').textContent(), /Project of the first team/);
  assert.equal(await page.getByLabel('Organisation').locator('option:checked').textContent(), 'Second team');
  await page.goto(`${server.url}/members`);
  assert.match(await page.locator('h1').textContent(), /Members of Second team/);

  await page.getByLabel('Organisation').selectOption({ label: OWNER.org });
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/projects'),
    page.getByRole('button', { name: 'Switch organisation' }).click(),
  ]);
  assert.match(await page.locator('main').textContent(), /Project of the first team/);
  assert.deepEqual(problems, []);
});
