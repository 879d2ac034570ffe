// The committed web/dist/ (embedded into the binary, so that cargo builds without Node) must be exactly
// what a fresh build of web/src/ gives. On failure: `npm run build` in web/ and commit web/dist/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('the committed dist is what a fresh build of the sources gives', (t) => {
  const out = mkdtempSync(path.join(tmpdir(), 'gw-dist-'));
  t.after(() => rmSync(out, { recursive: true, force: true }));
  execFileSync(process.execPath, [path.join(WEB, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--outDir', out, '--emptyOutDir', '--logLevel', 'error'],
    { cwd: WEB, stdio: ['ignore', 'pipe', 'pipe'] });
  const committed = readdirSync(path.join(WEB, 'dist')).sort();
  const fresh = readdirSync(out).sort();
  assert.deepEqual(committed, fresh, 'the same files');
  for (const name of fresh) {
    const a = readFileSync(path.join(WEB, 'dist', name));
    const b = readFileSync(path.join(out, name));
    assert.ok(a.equals(b), `web/dist/${name} differs from a fresh build: run \`npm run build\` in web/ and commit web/dist/`);
  }
});
