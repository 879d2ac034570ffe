// The "Go to" box of the area wizard: what it reads as a point or a box, and what it refuses, with a
// sentence saying why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseLocation } from '../src/coords.js';

const close = (actual, expected, what) => {
  assert.equal(actual.length, expected.length, what);
  actual.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-9, `${what}: ${actual} vs ${expected}`));
};

test('two plain numbers are latitude, longitude in decimal degrees', () => {
  for (const [text, center] of [
    ['-1.2921, 36.8219', [36.8219, -1.2921]],
    ['-1.2921,36.8219', [36.8219, -1.2921]],
    ['  -1.2921  36.8219 ', [36.8219, -1.2921]],
    ['51.5; -0.12', [-0.12, 51.5]],
    ['+12 -7.5', [-7.5, 12]],
    ['\u22121.5, 30', [30, -1.5]], // a typographic minus sign
    ['0, 0', [0, 0]],
    ['90, 180', [180, 90]],
    ['.5, -.25', [-0.25, 0.5]],
  ]) {
    const got = parseLocation(text);
    assert.equal(got.error, undefined, `${text}: ${got.error}`);
    close(got.center, center, text);
  }
});

test('hemisphere letters mark latitude and longitude in either order, before or after the numbers', () => {
  for (const [text, center] of [
    ['1.2921S 36.8219E', [36.8219, -1.2921]],
    ['36.8219E 1.2921S', [36.8219, -1.2921]],
    ['36.8219 E, 1.2921 S', [36.8219, -1.2921]],
    ['S 1.2921, E 36.8219', [36.8219, -1.2921]],
    ['E36.8219 S1.2921', [36.8219, -1.2921]],
    ['51.5n 0.12w', [-0.12, 51.5]],
    ['51.5°N 0.12°W', [-0.12, 51.5]],
    ['51.5º N, 0.12º W', [-0.12, 51.5]],
  ]) {
    const got = parseLocation(text);
    assert.equal(got.error, undefined, `${text}: ${got.error}`);
    close(got.center, center, text);
  }
});

test('degrees, minutes and seconds are read too', () => {
  const got = parseLocation(`1°17'30"S 36°49'E`);
  assert.equal(got.error, undefined, got.error);
  close(got.center, [36 + 49 / 60, -(1 + 17 / 60 + 30 / 3600)], 'dms');
  const typographic = parseLocation('N 51°30′ W 0°7′30″');
  assert.equal(typographic.error, undefined, typographic.error);
  close(typographic.center, [-(7 / 60 + 30 / 3600), 51.5], 'typographic marks');
  const signed = parseLocation(`-1°30', 36°15'`);
  close(signed.center, [36.25, -1.5], 'signed degrees and minutes');
});

test('four numbers are a box: west, south, east, north', () => {
  const got = parseLocation('36.6, -1.45, 37.1, -1.15');
  assert.equal(got.error, undefined, got.error);
  close(got.bounds, [36.6, -1.45, 37.1, -1.15], 'box');
  close(parseLocation('-10 35 5 44').bounds, [-10, 35, 5, 44], 'space-separated box');
  assert.equal(parseLocation('36.6, -1.45, 37.1, -1.15').center, undefined);
});

test('what it cannot read is refused with a reason', () => {
  const cases = [
    ['', /Enter a point as latitude, longitude/],
    ['   ', /Enter a point/],
    ['Nairobi', /“Nairobi” is not a number.*cannot look up place names/],
    ['12.5', /Found 1 number\./],
    ['1, 2, 3', /Found 3 numbers/],
    ['1, 2, 3, 4, 5', /Found 5 numbers/],
    ['12.5, abc', /“abc” is not a number/],
    ['95, 10', /latitude 95 is outside −90 to 90/],
    ['10, 200', /longitude 200 is outside −180 to 180/],
    ['120, 45', /write latitude first.*letters/],
    ['1.29S 36.82', /Mark both numbers with a letter/],
    ['1.29S 36.82N', /One number needs N or S/],
    ['-1.29S 36.82E', /either a minus sign or a letter/],
    ['91N 10E', /latitude 91 is outside/],
    ['10N 181E', /longitude 181 is outside/],
    ['N S 1 2', /two letters in a row/],
    ['S 1 2 E', /letter E is followed by no number/],
    ['E 1, 2 W', /letter W is followed by no number/],
    [`1°75' 36°E`, /minutes must be less than 60/],
    [`30' 36`, /follows no degrees/],
    ['37.1, -1.45, 36.6, -1.15', /west edge \(37.1\) must be less than the east edge \(36.6\)/],
    ['36.6, -1.15, 37.1, -1.45', /south edge \(-1.15\) must be less than the north edge \(-1.45\)/],
    ['36.6, -95, 37.1, -1.45', /box.*latitude -95 is outside/],
    ['1.2.3, 4', /“.3” is not|Found 3 numbers/],
  ];
  for (const [text, pattern] of cases) {
    const got = parseLocation(text);
    assert.ok(got.error, `${JSON.stringify(text)} was read as ${JSON.stringify(got)}`);
    assert.match(got.error, pattern, JSON.stringify(text));
    assert.equal(got.center, undefined);
    assert.equal(got.bounds, undefined);
  }
});
