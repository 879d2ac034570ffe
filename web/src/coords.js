// Reading a place typed by hand for the area wizard's "Go to" box: a point as latitude, longitude in
// decimal degrees (`-1.29, 36.82`), the same marked with hemisphere letters in either order
// (`1.29S 36.82E`, `E 36.82 S 1.29`, `36°49'E 1°17'S`), or a box as west, south, east, north
// (`36.6, -1.45, 37.1, -1.15`). Pure: no DOM, no map, so it is tested with `node --test`.

const EXAMPLES = 'a point as latitude, longitude (e.g. -1.29, 36.82 or 1.29S 36.82E), or a box as west, south, east, north (e.g. 36.6, -1.45, 37.1, -1.15)';

/** What the box expects, for hints and error messages. */
export const LOCATION_FORMATS = EXAMPLES;

const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;

// Splits the text into numbers (with the unit mark that follows them: degrees, minutes or seconds) and
// hemisphere letters. Returns null and the piece it could not read.
function tokenize(text) {
  const tokens = [];
  const src = text
    .replace(/[\u2212\u2013\u2014]/g, '-') // minus signs and dashes typed or pasted as a minus
    .replace(/[\u2032\u2019]/g, "'")
    .replace(/[\u2033\u201d]|''/g, '"')
    .replace(/º/g, '°');
  const re = /\s*(?:([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([°'"])?|([NSEWnsew])(?![A-Za-z])|([,;]))/y;
  let at = 0;
  while (at < src.length) {
    if (/^\s*$/.test(src.slice(at))) break;
    re.lastIndex = at;
    const m = re.exec(src);
    if (!m) {
      const rest = src.slice(at).trim();
      return { error: rest.split(/[\s,;]+/)[0] || rest };
    }
    at = re.lastIndex;
    if (m[1] !== undefined) {
      if (!NUMBER.test(m[1])) return { error: m[1] };
      tokens.push({ kind: 'number', value: Number(m[1]), sign: /^-/.test(m[1]), unit: m[2] ?? '' });
    } else if (m[3] !== undefined) {
      tokens.push({ kind: 'letter', value: m[3].toUpperCase() });
    } else {
      tokens.push({ kind: 'separator' });
    }
  }
  return { tokens };
}

// Groups the tokens into coordinates: degrees with optional minutes and seconds, and a hemisphere letter
// before them (when the text starts with a letter) or after them.
function group(tokens) {
  const prefix = tokens.find((t) => t.kind !== 'separator')?.kind === 'letter';
  const coords = [];
  let current = null; // the coordinate that minutes, seconds or a trailing letter still join
  let pendingLetter = null;
  for (const t of tokens) {
    if (t.kind === 'separator') {
      current = null;
    } else if (t.kind === 'letter') {
      if (prefix) {
        if (pendingLetter) return { error: `two letters in a row (${pendingLetter} ${t.value})` };
        pendingLetter = t.value;
      } else {
        if (!current || current.letter) return { error: `the letter ${t.value} follows no number` };
        current.letter = t.value;
      }
      current = null;
    } else if (t.unit === "'" || t.unit === '"') {
      const part = t.unit === "'" ? 'minutes' : 'seconds';
      if (!current || current[part] !== undefined || (part === 'minutes' && current.seconds !== undefined)) {
        return { error: `${t.value}${t.unit} follows no degrees` };
      }
      if (t.sign) return { error: `${part} cannot be negative` };
      if (t.value >= 60) return { error: `${part} must be less than 60 (got ${t.value})` };
      current[part] = t.value;
    } else {
      current = { degrees: t.value, sign: t.sign };
      if (prefix) {
        current.letter = pendingLetter;
        pendingLetter = null;
      }
      coords.push(current);
    }
  }
  if (pendingLetter) return { error: `the letter ${pendingLetter} is followed by no number` };
  return { coords };
}

function decimal(c) {
  const magnitude = Math.abs(c.degrees) + (c.minutes ?? 0) / 60 + (c.seconds ?? 0) / 3600;
  return c.sign ? -magnitude : magnitude;
}

const fmt = (v) => String(Number(v.toFixed(6)));

function checkLat(lat) {
  return Math.abs(lat) <= 90 ? null : `latitude ${fmt(lat)} is outside −90 to 90`;
}

function checkLon(lon) {
  return Math.abs(lon) <= 180 ? null : `longitude ${fmt(lon)} is outside −180 to 180`;
}

/**
 * Reads a place typed by hand. Returns `{ center: [lon, lat] }` for a point, `{ bounds: [west, south,
 * east, north] }` for a box, or `{ error }` with a sentence saying what is wrong.
 */
export function parseLocation(text) {
  const input = String(text ?? '').trim();
  if (!input) return { error: `Enter ${EXAMPLES}.` };
  const t = tokenize(input);
  if (t.error !== undefined) {
    const word = /[A-Za-z]{2}/.test(t.error) ? ' (this box reads coordinates; it cannot look up place names)' : '';
    return { error: `“${t.error}” is not a number or one of the letters N, S, E, W${word}. Enter ${EXAMPLES}.` };
  }
  const g = group(t.tokens);
  if (g.error) return { error: `Could not read this: ${g.error}. Enter ${EXAMPLES}.` };
  const coords = g.coords;
  const lettered = coords.filter((c) => c.letter);
  if (lettered.length > 0) {
    if (coords.length !== 2 || lettered.length !== 2) {
      return { error: `Mark both numbers with a letter (N or S for latitude, E or W for longitude), e.g. 1.29S 36.82E.` };
    }
    if (coords.some((c) => c.sign)) return { error: 'Use either a minus sign or a letter N, S, E or W, not both.' };
    const lat = coords.find((c) => c.letter === 'N' || c.letter === 'S');
    const lon = coords.find((c) => c.letter === 'E' || c.letter === 'W');
    if (!lat || !lon) return { error: 'One number needs N or S (latitude) and the other E or W (longitude).' };
    const latitude = decimal(lat) * (lat.letter === 'S' ? -1 : 1);
    const longitude = decimal(lon) * (lon.letter === 'W' ? -1 : 1);
    const problem = checkLat(latitude) ?? checkLon(longitude);
    if (problem) return { error: `The ${problem}.` };
    return { center: [longitude, latitude] };
  }
  if (coords.length === 2) {
    const [latitude, longitude] = coords.map(decimal);
    if (Math.abs(latitude) > 90 && Math.abs(longitude) <= 90) {
      return { error: `The latitude ${fmt(latitude)} is outside −90 to 90: write latitude first (e.g. -1.29, 36.82), or mark the numbers with letters (e.g. 36.82E 1.29S).` };
    }
    const problem = checkLat(latitude) ?? checkLon(longitude);
    if (problem) return { error: `The ${problem}.` };
    return { center: [longitude, latitude] };
  }
  if (coords.length === 4) {
    const [west, south, east, north] = coords.map(decimal);
    const problem = checkLon(west) ?? checkLon(east) ?? checkLat(south) ?? checkLat(north);
    if (problem) return { error: `In the box west, south, east, north the ${problem}.` };
    if (!(west < east)) return { error: `In the box west, south, east, north the west edge (${fmt(west)}) must be less than the east edge (${fmt(east)}).` };
    if (!(south < north)) return { error: `In the box west, south, east, north the south edge (${fmt(south)}) must be less than the north edge (${fmt(north)}).` };
    return { bounds: [west, south, east, north] };
  }
  return { error: `Found ${coords.length} number${coords.length === 1 ? '' : 's'}. Enter ${EXAMPLES}.` };
}
