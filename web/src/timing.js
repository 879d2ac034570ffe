// A run's elapsed time and, while it runs, an estimate of what is left, from its steps' progress.

const DONE = new Set(['succeeded', 'failed', 'cancelled']);

/** "45 s", "3 min 05 s", "2 h 04 min". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/**
 * The timing line of a run: `run` has `created_at`, `started_at`, `finished_at` (ISO strings or empty)
 * and `steps` with `state` and `progress` (0–1); `now` in milliseconds.
 */
export function timing(run, now) {
  const start = Date.parse(run.started_at || run.created_at);
  if (!Number.isFinite(start)) return '';
  if (!run.started_at) return `queued for ${duration((now - start) / 1000)}`;
  const end = run.finished_at ? Date.parse(run.finished_at) : now;
  const elapsed = (end - start) / 1000;
  if (run.finished_at) return `took ${duration(elapsed)}`;
  const steps = run.steps ?? [];
  const done = steps.length
    ? steps.reduce((sum, s) => sum + (DONE.has(s.state) ? 1 : Math.min(Math.max(Number(s.progress) || 0, 0), 1)), 0) / steps.length
    : 0;
  // Too early to say until a twentieth is done.
  if (done < 0.05 || done >= 1) return `running for ${duration(elapsed)}`;
  return `running for ${duration(elapsed)} · about ${duration((elapsed * (1 - done)) / done)} left`;
}
