// The page script: loads the map island where a page has a map, and adds the small behaviours of the
// server-rendered pages (class rows of the project wizard, the run form, live run progress, copying a
// secret that is shown once).
import './styles.css';
import { parseLocation } from './coords.js';
import { timing } from './timing.js';

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

function mountMaps() {
  const maps = document.querySelectorAll('[data-map]');
  if (maps.length === 0) return;
  // The server's basemap (OpenStreetMap by default; none when it runs offline) and its attribution.
  const url = document.body.dataset.basemap || '';
  const basemap = url ? { url, attribution: document.body.dataset.basemapAttribution || '' } : null;
  import('./map.js')
    .then((m) => maps.forEach((el) => m.mount(el, { basemap })))
    .catch((err) => maps.forEach((el) => {
      el.textContent = `The map could not be loaded: ${err.message}`;
    }));
}

// Class rows: add and remove, keeping every input labelled and ids unique.
function initClassRows() {
  const list = document.getElementById('class-rows');
  const add = document.getElementById('add-class');
  const template = document.getElementById('class-row-template');
  if (!list || !add || !template) return;
  let next = list.children.length;
  const renumber = () => {
    [...list.children].forEach((li, i) => {
      li.querySelectorAll('label').forEach((label) => {
        const kind = label.getAttribute('for')?.startsWith('class-color') || label.dataset.for === 'color' ? 'colour' : 'name';
        label.textContent = `Class ${i + 1} ${kind}`;
      });
      const hidden = li.querySelector('.remove-class .visually-hidden');
      if (hidden) hidden.textContent = ` class ${i + 1}`;
    });
  };
  add.addEventListener('click', () => {
    const row = template.content.firstElementChild.cloneNode(true);
    const n = next++;
    const [nameLabel, colorLabel] = row.querySelectorAll('label');
    const [name, color] = row.querySelectorAll('input');
    name.id = `class-name-${n}`;
    color.id = `class-color-${n}`;
    nameLabel.htmlFor = name.id;
    colorLabel.htmlFor = color.id;
    const remove = row.querySelector('.remove-class');
    const hidden = document.createElement('span');
    hidden.className = 'visually-hidden';
    remove.append(hidden);
    list.append(row);
    renumber();
    name.focus();
  });
  list.addEventListener('click', (e) => {
    const button = e.target.closest('.remove-class');
    if (!button) return;
    button.closest('li').remove();
    renumber();
    add.focus();
  });
}

// The start-run form shows the fields of the chosen kind only.
function initRunForm() {
  const form = document.querySelector('form.start-run');
  if (!form) return;
  const sync = () => {
    const kind = form.querySelector('input[name="kind"]:checked')?.value;
    form.querySelectorAll('[data-kind]').forEach((field) => {
      field.hidden = field.dataset.kind !== kind;
    });
  };
  form.addEventListener('change', sync);
  sync();
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function updateStep(row, step) {
  const state = row.querySelector('[data-field="state"]');
  setText(state, step.state);
  state.dataset.state = step.state;
  const pct = step.state === 'succeeded' ? 100 : Math.round(Math.min(Math.max(step.progress, 0), 1) * 100);
  const progress = row.querySelector('[data-field="progress"]');
  progress.value = pct;
  progress.textContent = `${pct} %`;
  setText(row.querySelector('[data-field="percent"]'), `${pct} %`);
  setText(row.querySelector('[data-field="attempt"]'), `attempt ${step.attempt}/${step.max_attempts}`);
  setText(row.querySelector('[data-field="log"]'), step.error ? step.error : step.message);
  const cancellable = (step.state === 'queued' || step.state === 'running') && !step.cancel_requested;
  const retryable = step.state === 'failed' || step.state === 'cancelled';
  const cancel = row.querySelector('form[data-action="cancel"]');
  const retry = row.querySelector('form[data-action="retry"]');
  if (cancel) cancel.hidden = !cancellable;
  if (retry) retry.hidden = !retryable;
}

// Polls the JSON API for every run that is not finished and updates its steps in place.
function initRunPolling() {
  const runs = [...document.querySelectorAll('article.run[data-run-id]')];
  if (runs.length === 0) return;
  // Each run's timing line from what the page was rendered with; the poll below keeps active ones current.
  for (const article of runs) {
    const line = article.querySelector('[data-field="timing"]');
    if (!line) continue;
    const steps = [...article.querySelectorAll('tr[data-step-id]')].map((row) => ({
      state: row.querySelector('[data-field="state"]')?.dataset.state ?? '',
      progress: Number(row.querySelector('[data-field="progress"]')?.value ?? 0) / 100,
    }));
    setText(line, timing({ created_at: line.dataset.created, started_at: line.dataset.started, finished_at: line.dataset.finished, steps }, Date.now()));
  }
  const active = new Set(runs.filter((r) => r.dataset.active === 'true').map((r) => r.dataset.runId));
  const seen = new Map();
  const tick = async () => {
    let changed = false;
    await Promise.all([...active].map(async (id) => {
      try {
        const res = await fetch(`/api/v1/runs/${id}`, { headers: { Accept: 'application/json' } });
        if (!res.ok) return;
        const body = await res.json();
        const article = document.getElementById(`run-${id}`);
        const runState = article.querySelector('[data-field="run-state"]');
        setText(runState, body.state);
        runState.dataset.state = body.state;
        const line = article.querySelector('[data-field="timing"]');
        if (line) {
          line.dataset.started = body.started_at ?? '';
          line.dataset.finished = body.finished_at ?? '';
          setText(line, timing({ created_at: line.dataset.created, started_at: line.dataset.started, finished_at: line.dataset.finished, steps: body.steps }, Date.now()));
        }
        if (body.steps.every((s) => s.state !== 'queued')) article.querySelectorAll('[data-field="waiting"]').forEach((p) => p.remove());
        for (const step of body.steps) {
          const row = document.getElementById(`step-${step.id}`);
          if (row) updateStep(row, step);
        }
        const signature = body.steps.map((s) => `${s.state}:${s.progress}`).join(',');
        if (seen.get(id) !== signature) changed = true;
        seen.set(id, signature);
        if (TERMINAL.has(body.state)) {
          active.delete(id);
          article.dataset.active = 'false';
        }
      } catch {
        // A failed poll is retried on the next tick.
      }
    }));
    if (changed) document.dispatchEvent(new CustomEvent('groundwork:runs-updated'));
    if (active.size > 0) setTimeout(tick, 700);
  };
  if (active.size > 0) setTimeout(tick, 300);
}

function ago(iso) {
  const secs = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (secs < 120) return `${secs} s ago`;
  if (secs < 7200) return `${Math.floor(secs / 60)} min ago`;
  return `${Math.floor(secs / 3600)} h ago`;
}

// The worker page keeps each worker's state, step count and heartbeat current.
function initWorkerPolling() {
  const rows = document.querySelectorAll('tr[data-worker-id]');
  if (rows.length === 0) return;
  const tick = async () => {
    try {
      const res = await fetch('/api/v1/workers', { headers: { Accept: 'application/json' } });
      if (res.ok) {
        for (const w of (await res.json()).items) {
          const row = document.getElementById(`worker-${w.id}`);
          if (!row) continue;
          const state = row.querySelector('[data-field="state"]');
          setText(state, w.state);
          state.dataset.state = w.state;
          setText(row.querySelector('[data-field="steps"]'), String(w.running_steps.length));
          const beat = row.querySelector('[data-field="heartbeat"]');
          beat.dateTime = w.last_heartbeat_at;
          setText(beat, ago(w.last_heartbeat_at));
        }
      }
    } catch {
      // Retried on the next tick.
    }
    setTimeout(tick, 3000);
  };
  setTimeout(tick, 3000);
}

// A secret shown once (an invitation link, a new token): links become absolute, and "Copy" buttons put
// the value on the clipboard and say so to screen readers too.
function initCopyButtons() {
  document.querySelectorAll('input[data-absolute-url]').forEach((input) => {
    input.value = new URL(input.value, window.location.href).href;
  });
  document.querySelectorAll('button[data-copy]').forEach((button) => {
    const input = document.getElementById(button.dataset.copy);
    const status = button.parentElement.querySelector('.copied');
    if (!input) return;
    button.addEventListener('click', async () => {
      input.select();
      // The clipboard API needs a secure context and may wait on a permission prompt: give it a moment,
      // then fall back to copying the selection; failing both, the value stays selected for Ctrl+C.
      const viaApi = navigator.clipboard
        ? Promise.race([
          navigator.clipboard.writeText(input.value).then(() => true, () => false),
          new Promise((resolve) => { setTimeout(() => resolve(false), 1500); }),
        ])
        : Promise.resolve(false);
      let done = await viaApi;
      if (!done) {
        input.select();
        try { done = document.execCommand('copy'); } catch { done = false; }
      }
      setText(status, done ? 'Copied.' : 'Selected: press Ctrl+C to copy.');
    });
  });
}

// The area wizard's "Go to" box: reads a point or a box (coords.js) and asks the draw map to move there
// (a `groundwork:go-to` event on the map element), or says next to the box what it could not read.
function initGoTo() {
  const box = document.getElementById('go-to');
  const input = document.getElementById('go-to-place');
  const button = document.getElementById('go-to-button');
  const message = document.getElementById('go-to-message');
  const map = document.getElementById(box?.dataset.mapTarget ?? '');
  if (!box || !input || !button || !message || !map) return;
  const say = (text, isError) => {
    message.classList.toggle('field-error', isError);
    setText(message, text);
    if (isError) input.setAttribute('aria-invalid', 'true');
    else input.removeAttribute('aria-invalid');
  };
  const go = () => {
    const place = parseLocation(input.value);
    if (place.error) {
      say(place.error, true);
      return;
    }
    // The map module sets data-ready once it is mounted (false until its style has loaded).
    if (map.dataset.ready === undefined) {
      say('The map is still loading: try again in a moment.', true);
      return;
    }
    const fmt = (v) => String(Number(v.toFixed(5)));
    if (place.bounds) {
      map.dispatchEvent(new CustomEvent('groundwork:go-to', { detail: { bounds: place.bounds } }));
      const [w, s, e, n] = place.bounds.map(fmt);
      say(`Map moved to the box from ${w}, ${s} to ${e}, ${n} (west, south to east, north).`, false);
    } else {
      map.dispatchEvent(new CustomEvent('groundwork:go-to', { detail: { center: place.center, zoom: 12 } }));
      const [lon, lat] = place.center.map(fmt);
      say(`Map moved to latitude ${lat}, longitude ${lon}.`, false);
    }
  };
  button.addEventListener('click', go);
  // Enter in the box moves the map instead of submitting the wizard.
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      go();
    }
  });
}

function init() {
  initCopyButtons();
  mountMaps();
  initGoTo();
  initClassRows();
  initRunForm();
  initRunPolling();
  initWorkerPolling();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
