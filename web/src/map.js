// The map island: MapLibre GL with terra-draw for drawing an area of interest, the project map
// showing the area and its windows coloured by acquisition status, and an output's map (its tiles).
// Without a basemap (a server run offline) the style is a plain background with a graticule and the map
// reaches no other site; with one (OpenStreetMap's tiles by default) its tiles are drawn under the
// graticule and its attribution is shown on the map.
import * as maplibregl from 'maplibre-gl';
import 'maplibre-gl/dist/maplibre-gl.css';
// MapLibre parses tiles in a module worker; ship its file next to this one and point MapLibre at it.
import workerUrl from 'maplibre-gl/dist/maplibre-gl-worker.mjs?url';
import { TerraDraw, TerraDrawPointMode, TerraDrawPolygonMode, TerraDrawRectangleMode } from 'terra-draw';
import { TerraDrawMapLibreGLAdapter } from 'terra-draw-maplibre-gl-adapter';
import { areaKm2, boundsOf, formatKm2, geometryOf } from './geo.js';
// Bundled into this module, not imported on demand: an on-demand import would make this chunk import
// the entry script again (for Vite's preload helper) and run the page script twice.
import { mountLabel } from './label.js';
import { attachCompare } from './compare.js';
import { mountAssess } from './assess.js';

maplibregl.setWorkerUrl(workerUrl);

const EMPTY = { type: 'FeatureCollection', features: [] };
const STATUS_COLOURS = { pending: '#9aa5ad', acquired: '#1b9e77', quarantined: '#d95f02', empty: '#e6ab02' };

const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The basemap as `{ url, attribution }` (a bare tile template is taken as one without attribution), or null.
function basemapOf(basemap) {
  if (!basemap) return null;
  if (typeof basemap === 'string') return { url: basemap, attribution: '' };
  return basemap.url ? { url: basemap.url, attribution: basemap.attribution || '' } : null;
}

// MapLibre shows attributions as HTML: the configured text is escaped, and OpenStreetMap's credit links
// to its copyright page, as its tile usage policy asks.
function attributionHtml(text) {
  return escapeHtml(text).replace('OpenStreetMap contributors',
    '<a href="https://www.openstreetmap.org/copyright" target="_blank" rel="noopener">OpenStreetMap contributors</a>');
}

function baseStyle(basemap) {
  const sources = {};
  const layers = [{ id: 'background', type: 'background', paint: { 'background-color': '#e4ecf0' } }];
  if (basemap) {
    sources.basemap = { type: 'raster', tiles: [basemap.url], tileSize: 256, maxzoom: 19 };
    if (basemap.attribution) sources.basemap.attribution = attributionHtml(basemap.attribution);
    layers.push({ id: 'basemap', type: 'raster', source: 'basemap' });
  }
  sources.graticule = { type: 'geojson', data: EMPTY };
  layers.push({
    id: 'graticule', type: 'line', source: 'graticule',
    paint: { 'line-color': '#a9bcc7', 'line-width': 0.7 },
  });
  return { version: 8, sources, layers };
}

// Lines of latitude and longitude spaced to give a handful across the view, for orientation without a basemap.
function graticule(map) {
  const b = map.getBounds();
  const span = Math.max(b.getEast() - b.getWest(), 1e-6);
  const steps = [30, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001];
  const step = steps.find((s) => span / s >= 4) ?? steps[steps.length - 1];
  const west = Math.max(Math.floor(b.getWest() / step) * step, -180);
  const east = Math.min(Math.ceil(b.getEast() / step) * step, 180);
  const south = Math.max(Math.floor(b.getSouth() / step) * step, -85);
  const north = Math.min(Math.ceil(b.getNorth() / step) * step, 85);
  const features = [];
  for (let x = west; x <= east + step / 2 && features.length < 400; x += step) {
    features.push({ type: 'Feature', properties: {}, geometry: { type: 'LineString', coordinates: [[x, south], [x, north]] } });
  }
  for (let y = south; y <= north + step / 2 && features.length < 800; y += step) {
    features.push({ type: 'Feature', properties: {}, geometry: { type: 'LineString', coordinates: [[west, y], [east, y]] } });
  }
  return { type: 'FeatureCollection', features };
}

function createMap(el, option) {
  const basemap = basemapOf(option);
  const map = new maplibregl.Map({
    container: el,
    style: baseStyle(basemap),
    center: [10, 20],
    zoom: 1.5,
    hash: el.dataset.map === 'draw' ? 'map' : false,
    // The tiles' attribution stays visible (not folded behind a button).
    attributionControl: basemap?.attribution ? { compact: false } : false,
    dragRotate: false,
    pitchWithRotate: false,
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-right');
  map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-left');
  const refresh = () => map.getSource('graticule')?.setData(graticule(map));
  map.on('load', refresh);
  map.on('moveend', refresh);
  return map;
}

function addAoiLayers(map) {
  map.addSource('aoi', { type: 'geojson', data: EMPTY });
  map.addLayer({ id: 'aoi-fill', type: 'fill', source: 'aoi', paint: { 'fill-color': '#1a73e8', 'fill-opacity': 0.15 } });
  map.addLayer({ id: 'aoi-line', type: 'line', source: 'aoi', paint: { 'line-color': '#1a73e8', 'line-width': 2 } });
}

function fit(map, value) {
  const b = boundsOf(value);
  if (b) map.fitBounds(b, { padding: 40, maxZoom: 15, animate: false });
}

function mountDraw(el, opts) {
  const input = document.getElementById(el.dataset.aoiInput);
  const output = document.getElementById(el.dataset.areaOutput);
  const fileInput = document.getElementById('aoi-file');
  const buttons = [...document.querySelectorAll('[data-draw]')];
  const map = createMap(el, opts.basemap);
  el.dataset.ready = 'false';
  // The "Go to" box of the wizard (main.js) moves the map to a box, or to a point at a zoom.
  el.addEventListener('groundwork:go-to', (e) => {
    const { bounds, center, zoom } = e.detail ?? {};
    if (Array.isArray(bounds) && bounds.length === 4) {
      map.fitBounds([[bounds[0], bounds[1]], [bounds[2], bounds[3]]], { padding: 40, maxZoom: 15, animate: false });
    } else if (Array.isArray(center) && center.length === 2) {
      map.jumpTo({ center, zoom: zoom ?? 12 });
    }
  });

  const show = (text, fitView) => {
    const source = map.getSource('aoi');
    if (!text.trim()) {
      source?.setData(EMPTY);
      output.value = 'none yet';
      return;
    }
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      output.value = 'not valid GeoJSON';
      return;
    }
    const km2 = areaKm2(value);
    if (km2 === null) {
      output.value = 'not a Polygon or MultiPolygon';
      return;
    }
    output.value = `≈ ${formatKm2(km2)}`;
    source?.setData({ type: 'Feature', properties: {}, geometry: geometryOf(value) });
    if (fitView) fit(map, value);
  };

  map.on('load', () => {
    addAoiLayers(map);
    const draw = new TerraDraw({
      adapter: new TerraDrawMapLibreGLAdapter({ map }),
      modes: [new TerraDrawPolygonMode(), new TerraDrawRectangleMode()],
    });
    draw.start();
    const press = (mode) => buttons.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.draw === mode)));
    buttons.forEach((b) => b.addEventListener('click', () => {
      if (b.dataset.draw === 'clear') {
        draw.clear();
        draw.setMode('static');
        press('static');
        input.value = '';
        show('', false);
        return;
      }
      draw.setMode(b.dataset.draw);
      press(b.dataset.draw);
    }));
    draw.on('finish', (id) => {
      const feature = draw.getSnapshotFeature(id);
      if (!feature) return;
      input.value = JSON.stringify(feature.geometry);
      show(input.value, false);
      // The drawn shape now lives in the form; start the next drawing from an empty canvas.
      setTimeout(() => draw.clear(), 0);
    });
    show(input.value, true);
    el.dataset.ready = 'true';
  });

  input.addEventListener('input', () => show(input.value, false));
  input.addEventListener('change', () => show(input.value, true));
  fileInput?.addEventListener('change', async () => {
    const file = fileInput.files?.[0];
    if (!file) return;
    input.value = await file.text();
    show(input.value, true);
  });
}

async function fetchWindows(url) {
  const features = [];
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const u = new URL(url, window.location.origin);
    u.searchParams.set('limit', '1000');
    if (cursor) u.searchParams.set('cursor', cursor);
    const res = await fetch(u, { headers: { Accept: 'application/json' } });
    if (!res.ok) throw new Error(`windows: HTTP ${res.status}`);
    const body = await res.json();
    for (const w of body.items) {
      features.push({ type: 'Feature', properties: { id: w.id, status: w.status, reason: w.reason ?? '' }, geometry: w.geometry });
    }
    cursor = body.next_cursor;
    if (!cursor) return { counts: body.counts, data: { type: 'FeatureCollection', features } };
  }
  return { counts: null, data: { type: 'FeatureCollection', features } };
}

function mountProject(el, opts) {
  const map = createMap(el, opts.basemap);
  let aoi = null;
  try {
    aoi = JSON.parse(el.dataset.aoi || 'null');
  } catch {
    aoi = null;
  }
  el.dataset.ready = 'false';
  const counts = document.getElementById('window-counts');
  let loading = false;
  const load = async () => {
    if (loading) return;
    loading = true;
    try {
      const { counts: c, data } = await fetchWindows(el.dataset.windowsUrl);
      map.getSource('windows')?.setData(data);
      el.dataset.windowCount = String(data.features.length);
      if (c && counts) {
        counts.textContent = `Windows: ${c.total} (${c.acquired} acquired, ${c.pending} pending, ${c.empty ?? 0} empty, ${c.quarantined} quarantined)`;
      }
    } catch (err) {
      if (counts) counts.textContent = `Windows could not be loaded (${err.message}).`;
    } finally {
      loading = false;
    }
  };
  map.on('load', () => {
    map.addSource('windows', { type: 'geojson', data: EMPTY });
    const colour = ['match', ['get', 'status'], 'acquired', STATUS_COLOURS.acquired, 'quarantined', STATUS_COLOURS.quarantined, 'empty', STATUS_COLOURS.empty, STATUS_COLOURS.pending];
    map.addLayer({ id: 'windows-fill', type: 'fill', source: 'windows', paint: { 'fill-color': colour, 'fill-opacity': 0.45 } });
    map.addLayer({ id: 'windows-line', type: 'line', source: 'windows', paint: { 'line-color': colour, 'line-width': 0.8 } });
    addAoiLayers(map);
    const g = geometryOf(aoi);
    if (g) {
      map.getSource('aoi').setData({ type: 'Feature', properties: {}, geometry: g });
      fit(map, g);
    }
    if (el.dataset.imageryUrl) {
      attachImagery(map, el, el.dataset.imageryUrl, document.getElementById('project-imagery'), document.getElementById('project-imagery-opacity'));
    }
    el.dataset.ready = 'true';
    load();
  });
  let timer = null;
  document.addEventListener('groundwork:runs-updated', () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; load(); }, 1500);
  });
}

// The acquired imagery under the map's other layers: `select` lists every month × modality × rendering
// the project's imagery listing (`url`) offers and switches the tiles; `opacity` is a 0–100 slider.
// The first rendering is shown at once; without imagery the select is disabled and says why.
async function attachImagery(map, el, url, select, opacity, showFirst = true) {
  if (!select) return;
  let minZoom = 0;
  const show = () => {
    const value = select.value;
    if (map.getLayer('imagery')) map.removeLayer('imagery');
    if (map.getSource('imagery')) map.removeSource('imagery');
    el.dataset.imagery = value;
    if (!value) return;
    map.addSource('imagery', {
      type: 'raster',
      tiles: [`${window.location.origin}${url}/${value}/{z}/{x}/{y}.png`],
      tileSize: 256,
      // Zoomed out further, a tile would cover too many windows to draw.
      minzoom: minZoom,
    });
    // Under an output's map and the graticule, above the basemap.
    const below = map.getLayer('output') ? 'output' : 'graticule';
    map.addLayer({ id: 'imagery', type: 'raster', source: 'imagery', paint: { 'raster-opacity': Number(opacity?.value ?? 100) / 100, 'raster-resampling': 'nearest' } }, below);
  };
  select.addEventListener('change', show);
  opacity?.addEventListener('input', () => {
    if (map.getLayer('imagery')) map.setPaintProperty('imagery', 'raster-opacity', Number(opacity.value) / 100);
  });
  let listing = null;
  try {
    const res = await fetch(url, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (res.ok) listing = await res.json();
  } catch {
    listing = null;
  }
  if (!listing || !Array.isArray(listing.layers) || listing.layers.length === 0) {
    select.disabled = true;
    select.title = 'No imagery yet: acquire it first.';
    return;
  }
  minZoom = listing.min_zoom ?? 0;
  for (const layer of listing.layers) {
    for (const t of layer.times ?? []) {
      for (const rendering of layer.renderings ?? []) {
        const o = document.createElement('option');
        o.value = `${layer.modality}/${t.index}/${rendering}`;
        o.textContent = `${t.label} · ${layer.modality} · ${rendering.replace('_', ' ')}`;
        select.append(o);
      }
    }
  }
  if (showFirst && select.options.length > 1) {
    select.selectedIndex = 1;
    show();
  }
}

// An output's map: its tiles over the (optional) basemap, fitted to its bounds, with an opacity slider.
// The layer's opacity is mirrored in `data-opacity` once the map has applied it.
function mountOutput(el, opts) {
  const map = createMap(el, opts.basemap);
  el.dataset.ready = 'false';
  let bounds = null;
  try {
    bounds = JSON.parse(el.dataset.bounds || 'null');
  } catch {
    bounds = null;
  }
  const slider = document.querySelector(`input[data-opacity-for="${el.id}"]`);
  const label = slider ? document.getElementById(slider.getAttribute('aria-describedby')) : null;
  const opacity = () => (slider ? Number(slider.value) / 100 : 0.8);
  const apply = () => {
    const value = opacity();
    if (label) label.textContent = `${Math.round(value * 100)} %`;
    if (!map.getLayer('output')) return;
    map.setPaintProperty('output', 'raster-opacity', value);
    el.dataset.opacity = String(map.getPaintProperty('output', 'raster-opacity'));
  };
  map.on('load', () => {
    const source = {
      type: 'raster',
      // Tiles are fetched by MapLibre's worker: give it an absolute address.
      tiles: [`${window.location.origin}${el.dataset.tiles}`],
      tileSize: 256,
      minzoom: Number(el.dataset.minZoom) || 0,
      maxzoom: Number(el.dataset.maxZoom) || 22,
    };
    if (Array.isArray(bounds) && bounds.length === 4) source.bounds = bounds;
    map.addSource('output', source);
    map.addLayer({ id: 'output', type: 'raster', source: 'output', paint: { 'raster-opacity': opacity(), 'raster-resampling': 'nearest' } }, 'graticule');
    if (Array.isArray(bounds) && bounds.length === 4) {
      map.fitBounds([[bounds[0], bounds[1]], [bounds[2], bounds[3]]], { padding: 30, animate: false });
    }
    // The project's area as an outline over the map.
    let outline = null;
    try {
      outline = JSON.parse(el.dataset.outline || 'null');
    } catch {
      outline = null;
    }
    if (outline) {
      map.addSource('outline', { type: 'geojson', data: outline });
      map.addLayer({ id: 'outline', type: 'line', source: 'outline', paint: { 'line-color': '#1a1a1a', 'line-width': 1.5, 'line-dasharray': [3, 2] } });
      el.dataset.outlineShown = 'true';
    }
    attachCompare(map, el, { createMap, basemap: opts.basemap });
    const imagery = document.getElementById('output-imagery');
    if (imagery?.dataset.imageryUrl) {
      // Under the map: off until chosen, so the map reads on its own first.
      attachImagery(map, el, imagery.dataset.imageryUrl, imagery, null, false);
    }
    apply();
    el.dataset.ready = 'true';
  });
  slider?.addEventListener('input', apply);
  slider?.addEventListener('change', apply);
}

/** Mounts the map described by the element's `data-map` (`draw`, `project`, `output`, `label` or `assess`). */
export function mount(el, opts) {
  if (el.dataset.map === 'draw') mountDraw(el, opts);
  else if (el.dataset.map === 'project') mountProject(el, opts);
  else if (el.dataset.map === 'output') mountOutput(el, opts);
  else if (el.dataset.map === 'label') mountLabel(el, { ...opts, createMap, fetchWindows, fit, addAoiLayers, attachImagery, EMPTY, TerraDraw, TerraDrawAdapter: TerraDrawMapLibreGLAdapter, modes: { TerraDrawPointMode, TerraDrawPolygonMode, TerraDrawRectangleMode } });
  // An accuracy assessment's blind labelling page: the imagery and the unit, never the class map.
  else if (el.dataset.map === 'assess') mountAssess(el, { ...opts, createMap, attachImagery, EMPTY });
}
