// The blind labelling page of an accuracy assessment: one sample unit (a pixel of the class map) at a
// time, marked on the project's imagery. Neither the unit's map class nor the class map is shown: the
// units come from the blind sample list (`GET /api/v1/assessments/{id}/samples`, which leaves the map
// class out) and no layer of the output is added. The reviewer answers with a class or "unsure"; each
// answer is saved at once with `PUT /api/v1/assessments/{id}/samples/{n}` and the next unanswered unit
// is shown. Keys: 1–9 pick a class, U unsure, ← and → move between units.

/** Whether a key press is meant for a form field rather than the page. */
function typing(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || ['INPUT', 'SELECT', 'TEXTAREA'].includes(t.tagName));
}

/** The outline of a pixel of `sideM` metres centred on (lon, lat), as a GeoJSON polygon. */
export function pixelSquare(lon, lat, sideM) {
  const half = (Number(sideM) > 0 ? Number(sideM) : 10) / 2;
  const dLat = half / 111_320;
  const dLon = half / (111_320 * Math.max(Math.cos((lat * Math.PI) / 180), 1e-6));
  return {
    type: 'Polygon',
    coordinates: [[[lon - dLon, lat - dLat], [lon + dLon, lat - dLat], [lon + dLon, lat + dLat], [lon - dLon, lat + dLat], [lon - dLon, lat - dLat]]],
  };
}

/** Whether a unit has an answer: a reference class or "unsure". */
export const answered = (u) => u.unsure || (u.reference !== null && u.reference !== undefined);

export function mountAssess(el, opts) {
  const page = document.getElementById('assess-page');
  if (!page) return;
  const id = page.dataset.assessmentId;
  const base = `/api/v1/assessments/${id}`;
  const $ = (name) => document.getElementById(name);
  const status = (text) => { $('assess-status').textContent = text; };
  const classButtons = [...document.querySelectorAll('#assess-classes button[data-class-id]')];
  const unsureButton = $('assess-unsure');
  const names = new Map(classButtons.map((b) => [Number(b.dataset.classId), b.dataset.className]));
  const map = opts.createMap(el, opts.basemap);
  // The arrow keys move between units, not the map.
  map.keyboard?.disable();
  el.dataset.ready = 'false';

  let units = [];
  let index = -1;
  let busy = false;

  async function api(method, url, body) {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') headers['X-CSRF-Token'] = page.dataset.csrf;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-store',
    });
    let data = null;
    try {
      data = await res.json();
    } catch {
      data = null;
    }
    return { ok: res.ok, status: res.status, data };
  }

  function answerText(u) {
    if (u.unsure) return 'Your answer: unsure.';
    if (answered(u)) return `Your answer: ${names.get(u.reference) ?? `class ${u.reference}`}.`;
    return 'Not answered yet.';
  }

  function renderProgress() {
    const done = units.filter(answered).length;
    const unsure = units.filter((u) => u.unsure).length;
    const bar = $('assess-progress');
    bar.max = units.length;
    bar.value = done;
    bar.textContent = `${done} of ${units.length}`;
    $('assess-progress-text').textContent = `${done} of ${units.length} units labelled${unsure ? ` (${unsure} unsure)` : ''}.`;
    el.dataset.done = String(done);
    $('assess-done').hidden = units.length === 0 || done < units.length;
  }

  function show(i) {
    if (!units.length) {
      $('assess-position').textContent = 'This sample has no units.';
      return;
    }
    index = (i + units.length) % units.length;
    const u = units[index];
    el.dataset.unit = String(u.id);
    $('assess-position').textContent = `Unit ${index + 1} of ${units.length}.`;
    $('assess-coordinates').textContent = `Latitude ${u.lat.toFixed(6)}, longitude ${u.lon.toFixed(6)}.`;
    $('assess-answer').textContent = answerText(u);
    for (const b of classButtons) {
      b.disabled = false;
      b.setAttribute('aria-pressed', String(!u.unsure && Number(b.dataset.classId) === u.reference));
    }
    unsureButton.disabled = false;
    unsureButton.setAttribute('aria-pressed', String(Boolean(u.unsure)));
    const point = { type: 'Feature', properties: {}, geometry: { type: 'Point', coordinates: [u.lon, u.lat] } };
    map.getSource('unit')?.setData({ type: 'FeatureCollection', features: [point] });
    map.getSource('unit-pixel')?.setData({ type: 'Feature', properties: {}, geometry: pixelSquare(u.lon, u.lat, page.dataset.pixelM) });
    map.jumpTo({ center: [u.lon, u.lat], zoom: Math.max(map.getZoom(), 16) });
  }

  /** The next unit after the current one without an answer, or -1. */
  function nextOpen() {
    for (let k = 1; k <= units.length; k++) {
      const i = (index + k) % units.length;
      if (!answered(units[i])) return i;
    }
    return -1;
  }

  async function answer(body) {
    const u = units[index];
    if (!u || busy) return;
    busy = true;
    try {
      const r = await api('PUT', `${base}/samples/${u.id}`, body);
      if (!r.ok) {
        status(`Not saved: ${r.data?.error?.message ?? `HTTP ${r.status}`}`);
        return;
      }
      u.reference = body.unsure ? null : body.reference;
      u.unsure = Boolean(body.unsure);
      renderProgress();
      status(`Unit ${index + 1} saved as ${u.unsure ? 'unsure' : names.get(u.reference) ?? `class ${u.reference}`}.`);
      const next = nextOpen();
      if (next >= 0) show(next);
      else {
        show(index);
        status('Every unit is labelled: the report is ready.');
      }
    } finally {
      busy = false;
    }
  }

  map.on('load', async () => {
    map.addSource('unit-pixel', { type: 'geojson', data: opts.EMPTY });
    map.addLayer({ id: 'unit-pixel', type: 'line', source: 'unit-pixel', paint: { 'line-color': '#ffd400', 'line-width': 3 } });
    map.addSource('unit', { type: 'geojson', data: opts.EMPTY });
    map.addLayer({ id: 'unit', type: 'circle', source: 'unit', paint: { 'circle-radius': 16, 'circle-color': 'rgba(0,0,0,0)', 'circle-stroke-color': '#ffd400', 'circle-stroke-width': 2 } });
    let bounds = null;
    try {
      bounds = JSON.parse(page.dataset.bounds || 'null');
    } catch {
      bounds = null;
    }
    if (Array.isArray(bounds) && bounds.length === 4) {
      map.fitBounds([[bounds[0], bounds[1]], [bounds[2], bounds[3]]], { padding: 30, animate: false });
    }
    const imagery = $('assess-imagery');
    opts.attachImagery(map, el, imagery.dataset.imageryUrl, imagery, $('assess-imagery-opacity'));
    // Blind: the list without map classes (the API's default).
    const r = await api('GET', `${base}/samples`);
    if (!r.ok || !Array.isArray(r.data)) {
      $('assess-position').textContent = `The sample could not be loaded: ${r.data?.error?.message ?? `HTTP ${r.status}`}`;
      el.dataset.ready = 'true';
      return;
    }
    units = r.data.map((u) => ({ id: u.id, lon: u.lon, lat: u.lat, reference: u.reference ?? null, unsure: Boolean(u.unsure) }));
    renderProgress();
    index = -1;
    const first = nextOpen();
    show(first >= 0 ? first : 0);
    el.dataset.ready = 'true';
  });

  classButtons.forEach((b) => b.addEventListener('click', () => answer({ reference: Number(b.dataset.classId) })));
  unsureButton.addEventListener('click', () => answer({ unsure: true }));
  $('assess-prev').addEventListener('click', () => show(index - 1));
  $('assess-next').addEventListener('click', () => show(index + 1));
  $('assess-next-open').addEventListener('click', () => {
    const next = nextOpen();
    if (next >= 0) show(next);
    else status('Every unit has an answer.');
  });

  document.addEventListener('keydown', (e) => {
    if (typing(e) || e.altKey || e.metaKey || e.ctrlKey || !units.length) return;
    if (/^[1-9]$/.test(e.key)) {
      const b = classButtons[Number(e.key) - 1];
      if (b) answer({ reference: Number(b.dataset.classId) });
    } else if (e.key.toLowerCase() === 'u') {
      answer({ unsure: true });
    } else if (e.key === 'ArrowRight') {
      e.preventDefault();
      show(index + 1);
    } else if (e.key === 'ArrowLeft') {
      e.preventDefault();
      show(index - 1);
    }
  });
}
