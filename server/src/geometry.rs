//! The area of interest: a GeoJSON Polygon or MultiPolygon in EPSG:4326, checked (type, closed rings,
//! coordinate ranges, no self-intersection, area limit) and measured.
//!
//! RFC 7946 asks writers for counter-clockwise exterior rings and clockwise holes but tells parsers not
//! to reject the other orientation, and real tools write both. Rings are therefore reoriented (exterior
//! counter-clockwise, holes clockwise) before the geometry is checked and measured, and the reoriented
//! geometry is what the project stores: measured as written, a clockwise exterior would be the rest of
//! the sphere.

use crate::api::error::FieldError;
use geo::orient::{Direction, Orient};
use geo::{Coord, GeodesicArea, LineString, MultiPolygon, Polygon, Validation};
use serde_json::Value;
use serde_json::json;

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Most vertices (positions, over all rings and polygons) an AOI may have; checked before any other
/// work on the geometry.
pub const MAX_AOI_VERTICES: usize = 20_000;

/// The positions in a GeoJSON `coordinates` value (arrays whose first item is a number), counting no
/// further than `cap + 1`.
#[must_use]
pub fn count_positions(coords: &Value, cap: usize) -> usize {
    fn walk(v: &Value, cap: usize, n: &mut usize) {
        let Some(items) = v.as_array() else { return };
        if items.first().is_some_and(Value::is_number) {
            *n += 1;
            return;
        }
        for item in items {
            if *n > cap {
                return;
            }
            walk(item, cap, n);
        }
    }
    let mut n = 0;
    walk(coords, cap, &mut n);
    n
}

/// A parsed, valid AOI.
#[derive(Debug, Clone)]
pub struct Aoi {
    /// `[west, south, east, north]`.
    pub bbox: [f64; 4],
    /// Geodesic area in km².
    pub area_km2: f64,
    /// The geometry as a bare GeoJSON Polygon or MultiPolygon (as given), rings reoriented: exterior
    /// counter-clockwise, holes clockwise. Positions keep longitude and latitude only.
    pub geometry: Value,
}

fn ring_json(ring: &LineString<f64>) -> Value {
    Value::Array(ring.coords().map(|c| json!([c.x, c.y])).collect())
}

fn polygon_json(p: &Polygon<f64>) -> Value {
    Value::Array(
        std::iter::once(p.exterior())
            .chain(p.interiors())
            .map(ring_json)
            .collect(),
    )
}

fn ring(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<LineString<f64>> {
    let Some(points) = value.as_array() else {
        errors.push(err(path, "a ring must be an array of positions"));
        return None;
    };
    let mut coords = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let pos = p.as_array().filter(|a| (2..=3).contains(&a.len()));
        let xy = pos.and_then(|a| Some((a[0].as_f64()?, a[1].as_f64()?)));
        let Some((x, y)) = xy else {
            errors.push(err(
                format!("{path}[{i}]"),
                "a position must be [longitude, latitude]",
            ));
            return None;
        };
        if !(-180.0..=180.0).contains(&x) || !(-90.0..=90.0).contains(&y) {
            errors.push(err(
                format!("{path}[{i}]"),
                format!("[{x}, {y}] is outside EPSG:4326 longitude/latitude bounds"),
            ));
            return None;
        }
        coords.push(Coord { x, y });
    }
    if coords.len() < 4 {
        errors.push(err(
            path,
            format!("a ring needs at least 4 positions, got {}", coords.len()),
        ));
        return None;
    }
    if coords.first() != coords.last() {
        errors.push(err(
            path,
            "the ring is not closed: its first and last positions differ",
        ));
        return None;
    }
    Some(LineString::new(coords))
}

fn polygon(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<Polygon<f64>> {
    let Some(rings) = value.as_array().filter(|r| !r.is_empty()) else {
        errors.push(err(path, "a polygon must be a non-empty array of rings"));
        return None;
    };
    let mut parsed = Vec::new();
    for (i, r) in rings.iter().enumerate() {
        parsed.push(ring(r, &format!("{path}[{i}]"), errors)?);
    }
    let exterior = parsed.remove(0);
    Some(Polygon::new(exterior, parsed))
}

/// Validates a GeoJSON Polygon/MultiPolygon (a bare geometry, a Feature, or a FeatureCollection of one
/// feature are accepted) and returns its bbox and area.
pub fn aoi(value: &Value, max_km2: f64, errors: &mut Vec<FieldError>) -> Option<Aoi> {
    let geometry = match value.get("type").and_then(Value::as_str) {
        Some("Feature") => value.get("geometry").unwrap_or(&Value::Null),
        Some("FeatureCollection") => match value
            .get("features")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            Some([one]) => one.get("geometry").unwrap_or(&Value::Null),
            _ => {
                errors.push(err(
                    "aoi",
                    "a FeatureCollection AOI must hold exactly one feature",
                ));
                return None;
            }
        },
        _ => value,
    };
    let coords = geometry.get("coordinates").unwrap_or(&Value::Null);
    if count_positions(coords, MAX_AOI_VERTICES) > MAX_AOI_VERTICES {
        errors.push(err(
            "aoi.coordinates",
            format!("the AOI has more than {MAX_AOI_VERTICES} vertices; simplify it"),
        ));
        return None;
    }
    let is_polygon = geometry.get("type").and_then(Value::as_str) == Some("Polygon");
    let multi = match geometry.get("type").and_then(Value::as_str) {
        Some("Polygon") => MultiPolygon::new(vec![polygon(coords, "aoi.coordinates", errors)?]),
        Some("MultiPolygon") => {
            let Some(polys) = coords.as_array().filter(|p| !p.is_empty()) else {
                errors.push(err(
                    "aoi.coordinates",
                    "a MultiPolygon must be a non-empty array of polygons",
                ));
                return None;
            };
            let mut out = Vec::new();
            for (i, p) in polys.iter().enumerate() {
                out.push(polygon(p, &format!("aoi.coordinates[{i}]"), errors)?);
            }
            MultiPolygon::new(out)
        }
        Some(other) => {
            errors.push(err(
                "aoi.type",
                format!("the AOI must be a Polygon or MultiPolygon, not {other}"),
            ));
            return None;
        }
        None => {
            errors.push(err(
                "aoi",
                "the AOI must be a GeoJSON Polygon or MultiPolygon in EPSG:4326",
            ));
            return None;
        }
    };
    let multi = multi.orient(Direction::Default);
    if let Err(problem) = multi.check_validation() {
        errors.push(err("aoi", format!("invalid geometry: {problem}")));
        return None;
    }
    let area_km2 = multi.geodesic_area_unsigned() / 1e6;
    if area_km2 <= 0.0 {
        errors.push(err("aoi", "the AOI has no area"));
        return None;
    }
    if area_km2 > max_km2 {
        errors.push(err(
            "aoi",
            format!("the AOI covers {area_km2:.0} km², more than the limit of {max_km2:.0} km²"),
        ));
        return None;
    }
    let (mut w, mut s, mut e, mut n) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in &multi.0 {
        for c in p.exterior().coords() {
            w = w.min(c.x);
            s = s.min(c.y);
            e = e.max(c.x);
            n = n.max(c.y);
        }
    }
    let geometry = match multi.0.as_slice() {
        [one] if is_polygon => json!({"type": "Polygon", "coordinates": polygon_json(one)}),
        polys => json!({"type": "MultiPolygon",
            "coordinates": Value::Array(polys.iter().map(polygon_json).collect())}),
    };
    Some(Aoi {
        bbox: [w, s, e, n],
        area_km2,
        geometry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Aoi, Vec<FieldError>> {
        let mut errors = Vec::new();
        aoi(&v, 10_000.0, &mut errors).ok_or(errors)
    }

    #[test]
    fn a_small_square_is_valid_and_measured() {
        let a = check(json!({"type": "Polygon", "coordinates": [[[0, 0], [0.1, 0], [0.1, 0.1], [0, 0.1], [0, 0]]]})).unwrap();
        // ~11.1 km × 11.1 km at the equator.
        assert!((a.area_km2 - 123.6).abs() < 1.0, "{}", a.area_km2);
        assert_eq!(a.bbox, [0.0, 0.0, 0.1, 0.1]);
    }

    #[test]
    fn bad_geometries_are_refused_with_reasons() {
        let unclosed =
            check(json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}))
                .unwrap_err();
        assert!(unclosed[0].message.contains("not closed"));
        let bowtie = check(json!({"type": "Polygon", "coordinates": [[[0, 0], [0.1, 0.1], [0.1, 0], [0, 0.1], [0, 0]]]})).unwrap_err();
        assert!(bowtie[0].message.contains("invalid geometry"), "{bowtie:?}");
        let point = check(json!({"type": "Point", "coordinates": [0, 0]})).unwrap_err();
        assert_eq!(point[0].field, "aoi.type");
        let huge = check(
            json!({"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 5], [0, 5], [0, 0]]]}),
        )
        .unwrap_err();
        assert!(huge[0].message.contains("limit"));
        let ring: Vec<Value> = (0..=MAX_AOI_VERTICES)
            .map(|i| {
                let t = i as f64 / MAX_AOI_VERTICES as f64 * std::f64::consts::TAU;
                json!([0.05 * t.cos(), 0.05 * t.sin()])
            })
            .chain([json!([0.05, 0.0])])
            .collect();
        let many = check(json!({"type": "Polygon", "coordinates": [ring]})).unwrap_err();
        assert_eq!(many[0].field, "aoi.coordinates", "{many:?}");
        assert!(many[0].message.contains("20000 vertices"), "{many:?}");
        let outside =
            check(json!({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]}))
                .unwrap_err();
        assert!(outside[0].message.contains("outside"));
    }

    fn square(w: f64, s: f64, e: f64, n: f64) -> Vec<Value> {
        vec![
            json!([w, s]),
            json!([e, s]),
            json!([e, n]),
            json!([w, n]),
            json!([w, s]),
        ]
    }

    fn reversed(mut ring: Vec<Value>) -> Vec<Value> {
        ring.reverse();
        ring
    }

    #[test]
    fn a_clockwise_exterior_ring_measures_the_same_as_a_counter_clockwise_one() {
        let ccw = square(0.0, 0.0, 0.1, 0.1);
        let a = check(json!({"type": "Polygon", "coordinates": [ccw.clone()]})).unwrap();
        let b = check(json!({"type": "Polygon", "coordinates": [reversed(ccw.clone())]})).unwrap();
        assert!((a.area_km2 - 123.6).abs() < 1.0, "{}", a.area_km2);
        assert!(
            (a.area_km2 - b.area_km2).abs() < 1e-9,
            "{} vs {}",
            a.area_km2,
            b.area_km2
        );
        assert_eq!(a.bbox, b.bbox);
        // Both are stored counter-clockwise: the clockwise one reversed, the other as given.
        assert_eq!(a.geometry, json!({"type": "Polygon", "coordinates": [ccw]}));
        assert_eq!(b.geometry, a.geometry);
        let m = check(json!({"type": "MultiPolygon", "coordinates": [
            [reversed(square(0.0, 0.0, 0.1, 0.1))], [square(1.0, 0.0, 1.1, 0.1)]]}))
        .unwrap();
        assert!(
            (m.area_km2 - 2.0 * a.area_km2).abs() < 0.01,
            "{}",
            m.area_km2
        );
        assert_eq!(
            m.geometry["coordinates"][0],
            json!([square(0.0, 0.0, 0.1, 0.1)])
        );
    }

    #[test]
    fn a_hole_is_subtracted_in_either_orientation_and_stored_clockwise() {
        let outer = check(json!({"type": "Polygon", "coordinates": [square(0.0, 0.0, 0.1, 0.1)]}))
            .unwrap()
            .area_km2;
        let hole =
            check(json!({"type": "Polygon", "coordinates": [square(0.02, 0.02, 0.06, 0.06)]}))
                .unwrap()
                .area_km2;
        for (exterior, interior) in [
            (
                square(0.0, 0.0, 0.1, 0.1),
                reversed(square(0.02, 0.02, 0.06, 0.06)),
            ),
            (square(0.0, 0.0, 0.1, 0.1), square(0.02, 0.02, 0.06, 0.06)),
            (
                reversed(square(0.0, 0.0, 0.1, 0.1)),
                square(0.02, 0.02, 0.06, 0.06),
            ),
            (
                reversed(square(0.0, 0.0, 0.1, 0.1)),
                reversed(square(0.02, 0.02, 0.06, 0.06)),
            ),
        ] {
            let a = check(json!({"type": "Polygon", "coordinates": [exterior, interior]})).unwrap();
            assert!(
                (a.area_km2 - (outer - hole)).abs() < 1e-6,
                "{} vs {}",
                a.area_km2,
                outer - hole
            );
            assert_eq!(
                a.geometry["coordinates"],
                json!([
                    square(0.0, 0.0, 0.1, 0.1),
                    reversed(square(0.02, 0.02, 0.06, 0.06))
                ])
            );
        }
    }
}
