// The labelling page: the project's labels over its imagery, drawn with the keyboard and the mouse.
// Every change is one call of `POST /api/v1/projects/{id}/labels/edit` with the version the page last
// saw, so two people labelling one project never overwrite each other: the second is told to reload.
// Undo and redo are edits too (the inverse of the last one). The model's suggestions are a queue of
// points: the user answers each with a class (a point label there), "skip" or "unsure".
import { boundsOf, geometryOf } from './geo.js';

// Distinct colours for classes whose own colour is missing or already taken (Tableau 10).
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/** The classes with a colour each, no two alike. */
export function classColours(classes) {
  const seen = new Set();
  return classes.map((c, i) => {
    let colour = String(c.color || '').toLowerCase();
    if (!/^#[0-9a-f]{6}$/.test(colour) || seen.has(colour)) {
      colour = PALETTE.find((p) => !seen.has(p)) ?? PALETTE[i % PALETTE.length];
    }
    seen.add(colour);
    return { ...c, colour };
  });
}

function typing(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName));
}

export function mountLabel(el, opts) {
  const page = document.getElementById('label-page');
  const projectId = page.dataset.projectId;
  const base = `/api/v1/projects/${projectId}`;
  const canEdit = page.dataset.canEdit === 'true';
  const classes = classColours(JSON.parse(page.dataset.classes || '[]'));
  const $ = (id) => document.getElementById(id);
  const status = (text) => { $('label-status').textContent = text; };
  const map = opts.createMap(el, opts.basemap);
  el.dataset.ready = 'false';

  let labels = opts.EMPTY;
  let version = 0;
  let current = 0; // index into classes
  let tool = 'select';
  let selected = null;
  let undoStack = [];
  let redoStack = [];
  let windows = [];
  let windowIndex = -1;
  let queue = [];
  let queueRun = null;
  let busy = false;
  let draw = null;

  async function api(method, url, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') headers['X-CSRF-Token'] = page.dataset.csrf;
    let payload;
    if (body instanceof Blob) {
      payload = body;
      headers['Content-Type'] = body.type || 'application/octet-stream';
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    // Labels change under the page: never a cached answer.
    const res = await fetch(url, { method, headers, body: payload, credentials: 'same-origin', cache: 'no-store' });
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    return { status: res.status, ok: res.ok, data };
  }

  // ---- labels ----
  const counts = () => {
    const n = new Map();
    for (const f of labels.features) {
      const c = f.properties?.class_id;
      n.set(c, (n.get(c) ?? 0) + 1);
    }
    return n;
  };

  function renderPalette() {
    const list = $('palette');
    const n = counts();
    list.replaceChildren(...classes.map((c, i) => {
      const li = document.createElement('li');
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.classId = String(c.id);
      b.setAttribute('aria-pressed', String(i === current));
      b.title = i < 9 ? `${c.name} (${i + 1})` : c.name;
      const sw = document.createElement('span');
      sw.className = 'swatch';
      sw.style.background = c.colour;
      const name = document.createElement('span');
      name.textContent = i < 9 ? `${i + 1} ${c.name}` : c.name;
      const count = document.createElement('span');
      count.className = 'count';
      count.dataset.count = String(n.get(c.id) ?? 0);
      count.textContent = `${n.get(c.id) ?? 0}`;
      count.setAttribute('aria-label', `${n.get(c.id) ?? 0} labels`);
      b.append(sw, name, count);
      b.addEventListener('click', () => pickClass(i));
      li.append(b);
      return li;
    }));
  }

  async function loadLabels() {
    // The summary says whether there is a version to export (a project without labels has none).
    const summary = await api('GET', `${base}/labels/summary`);
    const r = summary.ok && summary.data?.version
      ? await api('GET', `${base}/labels?format=geojson`)
      : { ok: false, data: null };
    if (!r.ok || !Array.isArray(r.data?.features)) {
      // A project without labels has nothing to export.
      labels = opts.EMPTY;
      version = 0;
    } else {
      labels = r.data;
      version = r.data.label_set_version ?? 0;
    }
    map.getSource('labels')?.setData(labels);
    el.dataset.labelCount = String(labels.features.length);
    el.dataset.version = String(version);
    $('label-version').textContent = version ? `Label set version ${version}, ${labels.features.length} labels.` : 'No labels yet.';
    renderPalette();
    select(selected && labels.features.some((f) => f.id === selected) ? selected : null);
  }

  // A copy of a feature shifted by (dx, dy) degrees.
  function translated(feature, dx, dy) {
    const shift = (c) => (typeof c[0] === 'number' ? [c[0] + dx, c[1] + dy] : c.map(shift));
    if (!feature?.geometry) return feature;
    return { ...feature, geometry: { ...feature.geometry, coordinates: shift(feature.geometry.coordinates) } };
  }

  function featureOf(id) {
    const f = labels.features.find((x) => x.id === id);
    if (!f) return null;
    const properties = { class_id: f.properties.class_id };
    if (f.properties.value !== undefined) properties.value = f.properties.value;
    if (f.properties.window_id) properties.window_id = f.properties.window_id;
    return { type: 'Feature', properties, geometry: f.geometry };
  }

  // Applies one edit; returns its inverse (to undo it), or null when it was not saved. Other edits
  // wait until the labels it made are loaded (`busy`), so none starts from a stale version.
  async function perform(op) {
    busy = true;
    try {
      return await performNow(op);
    } finally {
      busy = false;
    }
  }

  async function performNow(op) {
    const removed = op.remove.map(featureOf).filter(Boolean);
    const before = new Set(labels.features.map((f) => f.id));
    const r = await api('POST', `${base}/labels/edit`, {
      base_version: version,
      add: op.add.length ? { type: 'FeatureCollection', features: op.add } : null,
      remove: op.remove,
    });
    if (r.status === 409) {
      $('label-conflict-text').textContent = r.data?.error?.message ?? 'The labels changed meanwhile.';
      $('label-conflict').hidden = false;
      status('Not saved: somebody else changed the labels.');
      return null;
    }
    if (!r.ok) {
      const details = Array.isArray(r.data?.error?.details) ? r.data.error.details.map((d) => `feature ${d.row + 1}: ${d.reason}`).join('; ') : '';
      status(`Not saved: ${r.data?.error?.message ?? `HTTP ${r.status}`}${details ? ` (${details})` : ''}`);
      return null;
    }
    await loadLabels();
    const added = labels.features.filter((f) => !before.has(f.id)).map((f) => f.id);
    status(`Saved as version ${version}.`);
    return { add: removed, remove: added };
  }

  async function edit(op) {
    const inverse = await perform(op);
    if (!inverse) return false;
    undoStack.push(inverse);
    redoStack = [];
    updateButtons();
    return true;
  }

  async function undo() {
    if (busy) return;
    const op = undoStack.pop();
    if (!op) return;
    const inverse = await perform(op);
    if (inverse) redoStack.push(inverse);
    else undoStack.push(op);
    updateButtons();
  }

  async function redo() {
    if (busy) return;
    const op = redoStack.pop();
    if (!op) return;
    const inverse = await perform(op);
    if (inverse) undoStack.push(inverse);
    else redoStack.push(op);
    updateButtons();
  }

  function updateButtons() {
    if (!canEdit) return;
    $('label-undo').disabled = undoStack.length === 0;
    $('label-redo').disabled = redoStack.length === 0;
    $('label-delete').disabled = selected === null;
  }

  function select(id) {
    selected = id;
    el.dataset.selected = id === null ? '' : String(id);
    if (map.getLayer('labels-selected-line')) {
      const filter = ['==', ['id'], id ?? -1];
      map.setFilter('labels-selected-line', filter);
      map.setFilter('labels-selected-point', filter);
    }
    updateButtons();
  }

  async function deleteSelected() {
    if (selected === null || busy) return;
    const id = selected;
    if (await edit({ add: [], remove: [id] })) select(null);
  }

  function pickClass(i) {
    if (i < 0 || i >= classes.length) return;
    current = i;
    renderPalette();
    status(`Class: ${classes[i].name}.`);
    if (canEdit && queue.length) answerWithClass();
  }

  function setTool(name) {
    if (!canEdit) return;
    tool = name;
    document.querySelectorAll('[data-tool]').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.tool === name)));
    el.dataset.tool = name;
    if (!draw) return;
    draw.setMode(name === 'select' ? 'static' : name);
  }

  // ---- windows ----
  function labelledWindow(w) {
    const b = boundsOf(w.geometry);
    if (!b) return false;
    return labels.features.some((f) => {
      if (f.properties?.window_id) return f.properties.window_id === w.properties.id;
      const fb = boundsOf(f.geometry);
      return fb && fb[0][0] < b[1][0] && fb[1][0] > b[0][0] && fb[0][1] < b[1][1] && fb[1][1] > b[0][1];
    });
  }

  function showWindow(i) {
    if (!windows.length) {
      $('window-position').textContent = 'No acquired windows yet: acquire imagery first.';
      return;
    }
    windowIndex = (i + windows.length) % windows.length;
    const w = windows[windowIndex];
    opts.fit(map, w.geometry);
    el.dataset.window = w.properties.id;
    $('window-position').textContent = `Window ${windowIndex + 1} of ${windows.length} (${w.properties.id})${labelledWindow(w) ? ', labelled' : ''}.`;
  }

  function nextUnlabelled() {
    for (let k = 1; k <= windows.length; k++) {
      const i = (windowIndex + k + windows.length) % windows.length;
      if (!labelledWindow(windows[i])) return showWindow(i);
    }
    $('window-position').textContent = 'Every acquired window has a label.';
  }

  // ---- suggestions ----
  function showSuggestion() {
    const s = queue[0];
    const box = $('suggest-queue');
    if (!s) {
      box.hidden = true;
      map.getSource('suggestion')?.setData(opts.EMPTY);
      el.dataset.suggestion = '';
      status('No suggestion left: ask for more.');
      return;
    }
    box.hidden = false;
    el.dataset.suggestion = `${s.rank}`;
    const guess = s.predicted_class !== null && s.predicted_class !== undefined
      ? ` The model guesses ${classes.find((c) => c.id === s.predicted_class)?.name ?? s.predicted_class}.` : '';
    $('suggest-current').textContent = `Point ${s.rank}: what is at the marked pixel?${guess}`;
    map.getSource('suggestion')?.setData({ type: 'Feature', properties: {}, geometry: { type: 'Point', coordinates: [s.lon, s.lat] } });
    map.jumpTo({ center: [s.lon, s.lat], zoom: Math.max(map.getZoom(), 15) });
  }

  async function answer(statusValue) {
    const s = queue[0];
    if (!s) return;
    const r = await api('PATCH', `${base}/suggestions/${queueRun}/${s.rank}`, { status: statusValue });
    if (!r.ok) {
      status(`The answer was not saved: ${r.data?.error?.message ?? r.status}`);
      return;
    }
    queue.shift();
    showSuggestion();
  }

  async function answerWithClass() {
    const s = queue[0];
    if (!s || busy) return;
    const c = classes[current];
    const ok = await edit({ add: [{ type: 'Feature', properties: { class_id: c.id }, geometry: { type: 'Point', coordinates: [s.lon, s.lat] } }], remove: [] });
    if (ok) await answer('labelled');
  }

  async function loadSuggestions(wantRun) {
    const r = await api('GET', `${base}/suggestions`);
    if (!r.ok) return false;
    const latest = r.data.latest;
    if (wantRun && (!latest || latest.run_id !== wantRun)) return false;
    if (!latest) return true;
    queueRun = latest.run_id;
    queue = latest.items.filter((i) => i.status === 'open');
    showSuggestion();
    return true;
  }

  async function startSuggestions() {
    const button = $('suggest-start');
    button.disabled = true;
    status('Asking the model where to label next…');
    const r = await api('POST', `${base}/suggestions`, { count: 20 });
    if (!r.ok) {
      status(`No suggestions: ${r.data?.error?.message ?? r.status}`);
      button.disabled = false;
      return;
    }
    const run = r.data.id;
    const started = Date.now();
    const poll = async () => {
      if (await loadSuggestions(run)) {
        button.disabled = false;
        status(`${queue.length} points to label.`);
        return;
      }
      const rr = await api('GET', `/api/v1/runs/${run}`);
      const state = rr.data?.state;
      if (state === 'failed' || state === 'cancelled') {
        const err = rr.data.steps?.find((s) => s.error)?.error ?? state;
        status(`The suggestions failed: ${err}`);
        button.disabled = false;
        return;
      }
      status(`Asking the model where to label next… (${Math.round((Date.now() - started) / 1000)} s)`);
      setTimeout(poll, 1500);
    };
    poll();
  }

  // ---- import and split ----
  async function importFile(e) {
    e.preventDefault();
    const file = $('label-file').files?.[0];
    const out = $('import-result');
    if (!file) {
      out.textContent = 'Choose a file first.';
      return;
    }
    const csv = file.name.toLowerCase().endsWith('.csv');
    const blob = new Blob([await file.arrayBuffer()], { type: csv ? 'text/csv' : 'application/geo+json' });
    const r = await api('POST', `${base}/labels/import`, blob);
    const errors = r.ok ? r.data.errors : r.data?.error?.details;
    const list = document.createElement('ul');
    list.className = 'row-errors';
    for (const err of Array.isArray(errors) ? errors : []) {
      const li = document.createElement('li');
      // GeoJSON rows count features from 0; CSV rows are line numbers.
      li.textContent = csv ? `Line ${err.row}: ${err.reason}` : `Feature ${err.row + 1}: ${err.reason}`;
      list.append(li);
    }
    const head = document.createElement('p');
    head.textContent = r.ok
      ? `Imported ${r.data.imported} labels as version ${r.data.version}; ${r.data.errors.length} rows rejected.`
      : `Nothing imported: ${r.data?.error?.message ?? r.status}`;
    out.replaceChildren(head, list);
    if (r.ok) {
      undoStack = [];
      redoStack = [];
      await loadLabels();
      updateButtons();
    }
  }

  async function split(e) {
    e.preventDefault();
    const r = await api('POST', `${base}/labels/split`, {
      block_size: Number($('split-block').value) || 4,
      seed: Number($('split-seed').value) || 0,
    });
    const out = $('split-result');
    if (!r.ok) {
      out.textContent = `Not split: ${r.data?.error?.message ?? r.status}`;
      return;
    }
    const w = r.data.windows;
    const missing = (r.data.missing ?? []).map((m) => `Class ${m.class_name ?? m.class_id} is missing from ${m.splits.join(' and ')}.`);
    out.textContent = `Split into ${w.train} training, ${w.val} validation and ${w.test} test windows (version ${r.data.version}). ${missing.join(' ')}`;
    await loadLabels();
  }

  // ---- the map ----
  map.on('load', async () => {
    opts.addAoiLayers(map);
    const aoi = geometryOf(JSON.parse(el.dataset.aoi || 'null'));
    if (aoi) {
      map.getSource('aoi').setData({ type: 'Feature', properties: {}, geometry: aoi });
      opts.fit(map, aoi);
    }
    map.setPaintProperty('aoi-fill', 'fill-opacity', 0);
    map.addSource('windows', { type: 'geojson', data: opts.EMPTY });
    map.addLayer({ id: 'windows-line', type: 'line', source: 'windows', paint: { 'line-color': '#5f6b73', 'line-width': 0.6, 'line-dasharray': [2, 2] } });
    const colour = classes.length
      ? ['match', ['get', 'class_id'], ...classes.flatMap((c) => [c.id, c.colour]), '#444444']
      : '#444444';
    map.addSource('labels', { type: 'geojson', data: opts.EMPTY });
    map.addLayer({ id: 'labels-fill', type: 'fill', source: 'labels', filter: ['!=', ['geometry-type'], 'Point'], paint: { 'fill-color': colour, 'fill-opacity': 0.35 } });
    map.addLayer({ id: 'labels-line', type: 'line', source: 'labels', filter: ['!=', ['geometry-type'], 'Point'], paint: { 'line-color': colour, 'line-width': 2 } });
    map.addLayer({ id: 'labels-point', type: 'circle', source: 'labels', filter: ['==', ['geometry-type'], 'Point'], paint: { 'circle-color': colour, 'circle-radius': 6, 'circle-stroke-color': '#ffffff', 'circle-stroke-width': 1.5 } });
    map.addLayer({ id: 'labels-selected-line', type: 'line', source: 'labels', filter: ['==', ['id'], -1], paint: { 'line-color': '#000000', 'line-width': 4 } });
    map.addLayer({ id: 'labels-selected-point', type: 'circle', source: 'labels', filter: ['all', ['==', ['geometry-type'], 'Point'], ['==', ['id'], -1]], paint: { 'circle-radius': 9, 'circle-color': 'rgba(0,0,0,0)', 'circle-stroke-color': '#000000', 'circle-stroke-width': 3 } });
    map.addSource('suggestion', { type: 'geojson', data: opts.EMPTY });
    map.addLayer({ id: 'suggestion', type: 'circle', source: 'suggestion', paint: { 'circle-radius': 11, 'circle-color': 'rgba(255,255,0,0.25)', 'circle-stroke-color': '#ffd400', 'circle-stroke-width': 3 } });

    if (canEdit) {
      draw = new opts.TerraDraw({
        adapter: new opts.TerraDrawAdapter({ map }),
        modes: [new opts.modes.TerraDrawPointMode(), new opts.modes.TerraDrawPolygonMode(), new opts.modes.TerraDrawRectangleMode()],
      });
      draw.start();
      draw.on('finish', async (id) => {
        const feature = draw.getSnapshotFeature(id);
        setTimeout(() => draw.clear(), 0);
        if (!feature || !classes.length) return;
        await edit({ add: [{ type: 'Feature', properties: { class_id: classes[current].id }, geometry: feature.geometry }], remove: [] });
      });
    }
    map.on('click', (e) => {
      if (tool !== 'select' || dragged) return;
      const hit = map.queryRenderedFeatures(e.point, { layers: ['labels-point', 'labels-fill', 'labels-line'] });
      select(hit.length ? hit[0].id : null);
      if (hit.length) status(`Selected a ${classes.find((c) => c.id === hit[0].properties.class_id)?.name ?? 'label'} label.`);
    });
    // Move: drag the selected label; on release it is saved where it was dropped (one edit).
    let drag = null;
    let dragged = false;
    map.on('mousedown', (e) => {
      dragged = false;
      if (!canEdit || tool !== 'select' || selected === null) return;
      const hit = map.queryRenderedFeatures(e.point, { layers: ['labels-point', 'labels-fill', 'labels-line'] });
      if (!hit.some((f) => f.id === selected)) return;
      e.preventDefault();
      map.dragPan.disable();
      drag = { id: selected, start: e.lngLat, feature: featureOf(selected) };
    });
    map.on('mousemove', (e) => {
      if (!drag) return;
      const moved = translated(drag.feature, e.lngLat.lng - drag.start.lng, e.lngLat.lat - drag.start.lat);
      map.getSource('labels').setData({ ...labels, features: labels.features.map((f) => (f.id === drag.id ? { ...moved, id: f.id, properties: f.properties } : f)) });
    });
    map.on('mouseup', async (e) => {
      if (!drag) return;
      const { id, start, feature } = drag;
      drag = null;
      map.dragPan.enable();
      const dx = e.lngLat.lng - start.lng;
      const dy = e.lngLat.lat - start.lat;
      const px = map.project(e.lngLat);
      const p0 = map.project(start);
      if (Math.hypot(px.x - p0.x, px.y - p0.y) < 3 || !feature?.geometry) {
        map.getSource('labels').setData(labels);
        return;
      }
      dragged = true;
      if (await edit({ add: [translated(feature, dx, dy)], remove: [id] })) {
        // The edit's inverse removes what it added: the moved label's new id.
        select(undoStack[undoStack.length - 1]?.remove[0] ?? null);
        status('Moved.');
      } else {
        map.getSource('labels').setData(labels);
      }
    });

    await loadLabels();
    try {
      const { data } = await opts.fetchWindows(`${base}/windows?status=acquired`);
      windows = data.features.filter((f) => f.properties.status === 'acquired');
      map.getSource('windows').setData({ type: 'FeatureCollection', features: windows });
    } catch {
      windows = [];
    }
    opts.attachImagery(map, el, `${base}/imagery`, $('imagery-layer'), $('imagery-opacity'));
    if (canEdit) await loadSuggestions(null);
    el.dataset.ready = 'true';
  });

  // ---- controls ----
  document.querySelectorAll('[data-tool]').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
  $('label-delete')?.addEventListener('click', deleteSelected);
  $('label-undo')?.addEventListener('click', undo);
  $('label-redo')?.addEventListener('click', redo);
  $('label-reload').addEventListener('click', async () => {
    $('label-conflict').hidden = true;
    undoStack = [];
    redoStack = [];
    await loadLabels();
    status(`Reloaded: version ${version}.`);
  });
  $('window-prev').addEventListener('click', () => showWindow(windowIndex - 1));
  $('window-next').addEventListener('click', () => showWindow(windowIndex + 1));
  $('window-unlabelled').addEventListener('click', nextUnlabelled);
  $('suggest-start')?.addEventListener('click', startSuggestions);
  $('suggest-skip')?.addEventListener('click', () => answer('skipped'));
  $('suggest-unsure')?.addEventListener('click', () => answer('unsure'));
  $('suggest-next')?.addEventListener('click', () => { if (queue.length) { queue.push(queue.shift()); showSuggestion(); } });
  $('label-import')?.addEventListener('submit', importFile);
  $('label-split')?.addEventListener('submit', split);

  document.addEventListener('keydown', (e) => {
    if (typing(e) || e.altKey || e.metaKey) return;
    const key = e.key.toLowerCase();
    if (e.ctrlKey) {
      if (key === 'z' && !e.shiftKey) { e.preventDefault(); undo(); }
      else if ((key === 'z' && e.shiftKey) || key === 'y') { e.preventDefault(); redo(); }
      return;
    }
    if (/^[1-9]$/.test(e.key)) { pickClass(Number(e.key) - 1); return; }
    const tools = { s: 'select', p: 'point', g: 'polygon', r: 'rectangle' };
    if (tools[key]) { setTool(tools[key]); return; }
    if (e.key === 'Delete' || e.key === 'Backspace') { e.preventDefault(); deleteSelected(); return; }
    if (key === 'n') showWindow(windowIndex + 1);
    else if (key === 'b') showWindow(windowIndex - 1);
    else if (key === 'u') nextUnlabelled();
    else if (key === 'k' && queue.length) answer('skipped');
    else if (e.key === '?' && queue.length) answer('unsure');
    else if (e.key === 'Escape') select(null);
  });
}
