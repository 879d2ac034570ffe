// The run timing line: elapsed time, and an estimate once a twentieth of the work is done.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duration, timing } from '../src/timing.js';

test('durations read as seconds, minutes or hours', () => {
  assert.equal(duration(42.4), '42 s');
  assert.equal(duration(185), '3 min 05 s');
  assert.equal(duration(7440), '2 h 04 min');
});

test('a run says how long it has queued, run or taken, and estimates what is left', () => {
  const t0 = Date.parse('2026-12-07T10:00:00Z');
  const run = { created_at: '2026-12-07T10:00:00Z', started_at: '', finished_at: '', steps: [] };
  assert.equal(timing(run, t0 + 30_000), 'queued for 30 s');
  run.started_at = '2026-12-07T10:00:00Z';
  // Two steps: one done, one a quarter through: 62.5 % in 100 s, so 60 s left.
  run.steps = [{ state: 'succeeded', progress: 1 }, { state: 'running', progress: 0.25 }];
  assert.equal(timing(run, t0 + 100_000), 'running for 1 min 40 s · about 1 min 00 s left');
  // Too little done to estimate.
  run.steps = [{ state: 'running', progress: 0.01 }];
  assert.equal(timing(run, t0 + 10_000), 'running for 10 s');
  run.finished_at = '2026-12-07T10:05:00Z';
  assert.equal(timing(run, t0 + 999_000), 'took 5 min 00 s');
});
