// Comparing two outputs on an output's map: a second map of the chosen output lies over the first,
// moves with it, and shows only to the right of a swipe line the user drags (a range input, so the
// keyboard moves it too). The second map is made when a comparison is first chosen and removed when
// "none" is chosen again.

// The comparison's controls are `#compare-with` (a select whose options carry the other output's tile
// template, zooms and bounds as data attributes) and `#compare-swipe` (0–100, the line's place in %).
export function attachCompare(map, el, { createMap, basemap }) {
  const select = document.getElementById('compare-with');
  const swipe = document.getElementById('compare-swipe');
  if (!select || !swipe) return;
  const stack = el.parentElement;
  let other = null;
  let otherEl = null;
  let line = null;
  let syncing = false;
  // MapLibre fires `load` once per map, and `loaded()` is false while tiles load: a choice made then
  // waits for `load` only before it has fired.
  let styleReady = false;
  let pending = null;
  const view = (m) => ({ center: m.getCenter(), zoom: m.getZoom(), bearing: m.getBearing(), pitch: m.getPitch() });
  // Each map follows the other while a comparison is open.
  const fromBase = () => {
    if (syncing || !other) return;
    syncing = true;
    other.jumpTo(view(map));
    syncing = false;
  };
  const fromOther = () => {
    if (syncing || !other) return;
    syncing = true;
    map.jumpTo(view(other));
    syncing = false;
  };
  map.on('move', fromBase);
  const place = () => {
    const at = Number(swipe.value);
    el.dataset.swipe = String(at);
    if (otherEl) otherEl.style.clipPath = `inset(0 0 0 ${at}%)`;
    if (line) line.style.left = `${at}%`;
  };
  const close = () => {
    other?.remove();
    otherEl?.remove();
    line?.remove();
    other = null;
    otherEl = null;
    line = null;
    styleReady = false;
    pending = null;
    swipe.disabled = true;
    el.dataset.compare = '';
  };
  const show = (option) => {
    const source = {
      type: 'raster',
      tiles: [`${window.location.origin}${option.value}`],
      tileSize: 256,
      minzoom: Number(option.dataset.minZoom) || 0,
      maxzoom: Number(option.dataset.maxZoom) || 22,
    };
    try {
      const b = JSON.parse(option.dataset.bounds || 'null');
      if (Array.isArray(b) && b.length === 4) source.bounds = b;
    } catch {
      // No bounds: MapLibre asks for tiles everywhere, and the server answers transparent ones.
    }
    if (other.getLayer('output')) other.removeLayer('output');
    if (other.getSource('output')) other.removeSource('output');
    other.addSource('output', source);
    const opacity = map.getLayer('output') ? map.getPaintProperty('output', 'raster-opacity') : 0.8;
    other.addLayer({ id: 'output', type: 'raster', source: 'output', paint: { 'raster-opacity': opacity, 'raster-resampling': 'nearest' } }, 'graticule');
    el.dataset.compare = option.value;
    otherEl.dataset.ready = 'true';
  };
  select.addEventListener('change', () => {
    const option = select.selectedOptions[0];
    if (!option || !option.value) {
      close();
      return;
    }
    if (!other) {
      otherEl = document.createElement('div');
      otherEl.className = 'map compare-map';
      otherEl.id = `${el.id}-compare`;
      otherEl.setAttribute('role', 'region');
      otherEl.setAttribute('aria-label', `Compared map: ${option.textContent}`);
      otherEl.dataset.ready = 'false';
      line = document.createElement('div');
      line.className = 'swipe-line';
      line.setAttribute('aria-hidden', 'true');
      stack.append(otherEl, line);
      other = createMap(otherEl, basemap);
      other.jumpTo(view(map));
      other.on('move', fromOther);
      other.once('load', () => {
        styleReady = true;
        if (pending) show(pending);
        pending = null;
      });
      swipe.disabled = false;
    }
    otherEl.setAttribute('aria-label', `Compared map: ${option.textContent}`);
    if (styleReady) show(option);
    else pending = option;
    place();
  });
  swipe.addEventListener('input', place);
  place();
}
