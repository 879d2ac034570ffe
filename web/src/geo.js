// Geometry helpers for display: the area of a GeoJSON (multi)polygon on the WGS84 ellipsoid, and bounds.
// The area is the spherical excess on the authalic (equal-area) sphere, with latitudes mapped to authalic
// latitudes: this matches the ellipsoidal geodesic area the server computes to well under 0.1 % for
// areas of the sizes a project allows. The server measures again and decides.

const A = 6378137;
const F = 1 / 298.257223563;
const E2 = F * (2 - F);
const E = Math.sqrt(E2);
const q = (phi) => {
  const s = Math.sin(phi);
  return (1 - E2) * (s / (1 - E2 * s * s) - (1 / (2 * E)) * Math.log((1 - E * s) / (1 + E * s)));
};
const QP = q(Math.PI / 2);
const RADIUS = A * Math.sqrt(QP / 2);
const rad = (d) => (d * Math.PI) / 180;
const authalic = (latDeg) => Math.asin(Math.max(-1, Math.min(1, q(rad(latDeg)) / QP)));

function ringArea(ring) {
  const n = ring.length;
  if (n <= 2) return 0;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const lower = ring[i];
    const middle = ring[(i + 1) % n];
    const upper = ring[(i + 2) % n];
    total += (rad(upper[0]) - rad(lower[0])) * Math.sin(authalic(middle[1]));
  }
  return Math.abs((total * RADIUS * RADIUS) / 2);
}

function polygonArea(rings) {
  if (!Array.isArray(rings) || rings.length === 0) return 0;
  let area = ringArea(rings[0]);
  for (let i = 1; i < rings.length; i++) area -= ringArea(rings[i]);
  return Math.max(area, 0);
}

/** The geometry of a GeoJSON object: a bare geometry, a Feature, or a FeatureCollection of one feature. */
export function geometryOf(value) {
  if (!value || typeof value !== 'object') return null;
  if (value.type === 'Feature') return value.geometry ?? null;
  if (value.type === 'FeatureCollection') {
    return Array.isArray(value.features) && value.features.length === 1 ? value.features[0].geometry ?? null : null;
  }
  return value;
}

/** Area in km² of a Polygon or MultiPolygon, or null when it is neither. */
export function areaKm2(value) {
  const g = geometryOf(value);
  if (!g || !Array.isArray(g.coordinates)) return null;
  if (g.type === 'Polygon') return polygonArea(g.coordinates) / 1e6;
  if (g.type === 'MultiPolygon') return g.coordinates.reduce((s, p) => s + polygonArea(p), 0) / 1e6;
  return null;
}

/** `12.3 km²`, with the precision the server's pages use. */
export function formatKm2(km2) {
  if (km2 >= 100) return `${km2.toFixed(0)} km²`;
  if (km2 >= 1) return `${km2.toFixed(1)} km²`;
  return `${km2.toFixed(3)} km²`;
}

/** `[[west, south], [east, north]]` of any GeoJSON geometry, or null. */
export function boundsOf(value) {
  const g = geometryOf(value);
  if (!g) return null;
  let w = Infinity, s = Infinity, e = -Infinity, n = -Infinity;
  const visit = (c) => {
    if (typeof c[0] === 'number') {
      w = Math.min(w, c[0]); e = Math.max(e, c[0]); s = Math.min(s, c[1]); n = Math.max(n, c[1]);
    } else c.forEach(visit);
  };
  if (Array.isArray(g.coordinates)) visit(g.coordinates);
  return Number.isFinite(w) ? [[w, s], [e, n]] : null;
}
