// Accounts in the browser: the first owner is set up on the one-time setup page, signs out and in again,
// and a user of another organisation cannot see the first organisation's project.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OWNER, admin, openPage, seedProject, signIn, startServer } from './helpers.js';

test('the first owner sets up on the setup page; another organisation cannot see their project', async (t) => {
  const server = await startServer(t, { bare: true });
  const { page, problems } = await openPage(t);

  // A fresh installation sends every page to the one-time setup.
  await page.goto(`${server.url}/projects`);
  assert.equal(new URL(page.url()).pathname, '/setup');
  await page.getByLabel('Your email').fill(OWNER.email);
  await page.getByLabel(/^Password/).fill('short');
  await page.getByLabel('Organisation name').fill(OWNER.org);
  await page.getByRole('button', { name: 'Create the owner account' }).click();
  // The browser's own check refuses a short password before anything is sent.
  assert.equal(new URL(page.url()).pathname, '/setup');
  await page.getByLabel(/^Password/).fill(OWNER.password);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/projects'),
    page.getByRole('button', { name: 'Create the owner account' }).click(),
  ]);
  assert.match(await page.locator('header').textContent(), new RegExp(OWNER.org));

  // Setup happens once: afterwards it leads to sign-in.
  await page.goto(`${server.url}/setup`);
  assert.equal(new URL(page.url()).pathname, '/login');

  // The owner's project, made through the API with a token from the command line.
  server.token = admin(server, ['create-token', '--org', OWNER.org, '--email', OWNER.email, '--scope', 'write']);
  const project = await seedProject(server, 'Mangroves of the owner');
  await page.goto(`${server.url}/projects`);
  assert.match(await page.locator('main').textContent(), /Mangroves of the owner/);

  // Sign out: pages ask for sign-in again, and come back afterwards.
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/login'),
    page.getByRole('button', { name: 'Sign out' }).click(),
  ]);
  await page.goto(`${server.url}/projects/${project.id}`);
  assert.equal(new URL(page.url()).pathname, '/login');
  await page.getByLabel('Email').fill(OWNER.email);
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  assert.match(await page.getByRole('alert').textContent(), /do not match/);

  // A user of another organisation sees neither the project in the list nor its page.
  const other = { email: 'someone@other.example', password: 'another long password' };
  admin(server, ['create-user', '--email', other.email, '--password-stdin'], `${other.password}\n`);
  admin(server, ['create-org', '--name', 'Other NGO', '--owner-email', other.email]);
  await signIn(page, server, other);
  await page.goto(`${server.url}/projects`);
  assert.match(await page.locator('header').textContent(), /Other NGO/);
  assert.doesNotMatch(await page.locator('main').textContent(), /Mangroves of the owner/);
  const theirs = await page.goto(`${server.url}/projects/${project.id}`);
  assert.equal(theirs.status(), 404);

  // The owner signs back in and sees it again.
  await page.goto(`${server.url}/projects`);
  await Promise.all([
    page.waitForURL((u) => u.pathname === '/login'),
    page.getByRole('button', { name: 'Sign out' }).click(),
  ]);
  await signIn(page, server);
  const mine = await page.goto(`${server.url}/projects/${project.id}`);
  assert.equal(mine.status(), 200);
  assert.deepEqual(problems.filter((p) => !p.includes('404') && !p.includes('401')), []);
});
