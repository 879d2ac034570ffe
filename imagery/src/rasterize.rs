//! Label geometries on a window's pixel grid.
//!
//! A polygon covers the pixels whose centre lies inside it (holes respected); a point covers the one
//! pixel that contains it (pixels are half-open, so a point on a shared edge belongs to exactly one
//! window). Geometries come in EPSG:4326 and are projected into the window's UTM zone with GDAL.

use crate::error::{Error, Result};
use crate::grid::transform;
use gdal::spatial_ref::CoordTransform;
use geo::{BoundingRect, Contains, Coord, CoordsIter, MapCoords, Validation};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// A window's pixel grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelGrid {
    /// EPSG code of the grid's CRS.
    pub epsg: u32,
    /// GDAL geotransform `[x_left, res, 0, y_top, 0, -res]` (north-up).
    pub geotransform: [f64; 6],
    /// Pixels per side.
    pub size: u32,
}

impl PixelGrid {
    /// Row and column of the pixel containing `(x, y)` (grid CRS), if inside the grid.
    fn pixel_of(&self, x: f64, y: f64) -> Option<(u32, u32)> {
        let [x0, dx, _, y0, _, dy] = self.geotransform;
        let col = ((x - x0) / dx).floor();
        let row = ((y - y0) / dy).floor();
        let n = f64::from(self.size);
        ((0.0..n).contains(&col) && (0.0..n).contains(&row)).then_some((row as u32, col as u32))
    }

    /// Centre of pixel `(row, col)` in the grid CRS.
    fn centre(&self, row: u32, col: u32) -> Coord<f64> {
        let [x0, dx, _, y0, _, dy] = self.geotransform;
        Coord {
            x: x0 + (f64::from(col) + 0.5) * dx,
            y: y0 + (f64::from(row) + 0.5) * dy,
        }
    }
}

/// Parses a label geometry (GeoJSON Point, Polygon or MultiPolygon in EPSG:4326) and checks it: finite
/// coordinates within longitude/latitude range, and valid polygons (closed rings, no self-intersection).
/// The error says what is wrong in words.
pub fn parse_label_geometry(
    value: &serde_json::Value,
) -> std::result::Result<geo::Geometry<f64>, String> {
    let g: geojson::Geometry = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let g = geo::Geometry::<f64>::try_from(g).map_err(|e| e.to_string())?;
    let bad = g.coords_iter().find(|c| {
        !(c.x.is_finite()
            && c.y.is_finite()
            && (-180.0..=180.0).contains(&c.x)
            && (-90.0..=90.0).contains(&c.y))
    });
    if let Some(c) = bad {
        return Err(format!(
            "coordinate ({}, {}) is not a longitude/latitude in EPSG:4326",
            c.x, c.y
        ));
    }
    match &g {
        geo::Geometry::Point(_) => {}
        geo::Geometry::Polygon(p) => p.check_validation().map_err(|e| e.to_string())?,
        geo::Geometry::MultiPolygon(m) => m.check_validation().map_err(|e| e.to_string())?,
        _ => return Err("expected a Point, Polygon or MultiPolygon".into()),
    }
    Ok(g)
}

/// A project's area (GeoJSON Polygon or MultiPolygon in EPSG:4326, checked as [`parse_label_geometry`]
/// checks it) as polygons; `None` when it is neither or does not parse.
#[must_use]
pub fn parse_area(value: &serde_json::Value) -> Option<geo::MultiPolygon<f64>> {
    match parse_label_geometry(value).ok()? {
        geo::Geometry::Polygon(p) => Some(geo::MultiPolygon(vec![p])),
        geo::Geometry::MultiPolygon(m) => Some(m),
        _ => None,
    }
}

/// Row-major indices of the pixels `geometry` (already in the grid's CRS) covers.
#[must_use]
pub fn rasterize_projected(geometry: &geo::Geometry<f64>, grid: &PixelGrid) -> Vec<u32> {
    match geometry {
        geo::Geometry::Point(p) => grid
            .pixel_of(p.x(), p.y())
            .map(|(r, c)| vec![r * grid.size + c])
            .unwrap_or_default(),
        geo::Geometry::Polygon(_) | geo::Geometry::MultiPolygon(_) => {
            let Some(rect) = geometry.bounding_rect() else {
                return Vec::new();
            };
            // Only the pixels under the bounding box can have their centre inside.
            let [x0, dx, _, y0, _, dy] = grid.geotransform;
            let n = f64::from(grid.size);
            let clamp = |v: f64| v.floor().clamp(0.0, n - 1.0) as u32;
            let (ca, cb) = (
                clamp((rect.min().x - x0) / dx),
                clamp((rect.max().x - x0) / dx),
            );
            let (ra, rb) = (
                clamp((rect.min().y - y0) / dy),
                clamp((rect.max().y - y0) / dy),
            );
            let (c_lo, c_hi) = (ca.min(cb), ca.max(cb));
            let (r_lo, r_hi) = (ra.min(rb), ra.max(rb));
            let mut out = Vec::new();
            for row in r_lo..=r_hi {
                for col in c_lo..=c_hi {
                    let centre = grid.centre(row, col);
                    if geometry.contains(&centre) {
                        out.push(row * grid.size + col);
                    }
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Row-major bitmask of `indices` for a `size × size` grid: bit `i % 8` of byte `i / 8`.
#[must_use]
pub fn bitmask(indices: &[u32], size: u32) -> Vec<u8> {
    let n = (size as usize) * (size as usize);
    let mut bits = vec![0_u8; n.div_ceil(8)];
    for &i in indices {
        let i = i as usize;
        if i < n {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    bits
}

/// Projects EPSG:4326 geometries into window grids and rasterises them, reusing one GDAL transform per
/// zone. Not `Send` (GDAL handles): use it within one blocking task.
#[derive(Default)]
pub struct Rasterizer {
    transforms: HashMap<u32, CoordTransform>,
}

impl std::fmt::Debug for Rasterizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rasterizer")
            .field("zones", &self.transforms.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Rasterizer {
    /// A rasteriser with no transforms yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `geometry` (EPSG:4326) in EPSG:`epsg`.
    pub fn project(
        &mut self,
        geometry: &geo::Geometry<f64>,
        epsg: u32,
    ) -> Result<geo::Geometry<f64>> {
        let ct = match self.transforms.entry(epsg) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => v.insert(transform(4326, epsg)?),
        };
        geometry.try_map_coords(|c| {
            let (mut xs, mut ys) = ([c.x], [c.y]);
            ct.transform_coords(&mut xs, &mut ys, &mut [])
                .map_err(Error::gdal(format!(
                    "projecting ({}, {}) to EPSG:{epsg}",
                    c.x, c.y
                )))?;
            Ok(Coord { x: xs[0], y: ys[0] })
        })
    }

    /// Row-major indices of the pixels of `grid` that `geometry` (EPSG:4326) covers.
    pub fn rasterize(
        &mut self,
        geometry: &geo::Geometry<f64>,
        grid: &PixelGrid,
    ) -> Result<Vec<u32>> {
        let projected = self.project(geometry, grid.epsg)?;
        Ok(rasterize_projected(&projected, grid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WindowSpec;
    use geo::{Point, polygon};

    #[test]
    fn an_area_is_a_polygon_or_multipolygon_and_anything_else_is_none() {
        let square = serde_json::json!({"type": "Polygon", "coordinates": [[
            [15.0, 45.0], [15.1, 45.0], [15.1, 45.1], [15.0, 45.1], [15.0, 45.0]
        ]]});
        assert_eq!(parse_area(&square).map(|m| m.0.len()), Some(1));
        // A point or an unreadable area gives none.
        assert!(
            parse_area(&serde_json::json!({"type": "Point", "coordinates": [15.0, 45.0]}))
                .is_none()
        );
        assert!(parse_area(&serde_json::json!({"type": "Polygon"})).is_none());
    }
    use serde_json::json;

    fn grid() -> PixelGrid {
        PixelGrid {
            epsg: 32631,
            geotransform: [500_000.0, 10.0, 0.0, 5_000_640.0, 0.0, -10.0],
            size: 64,
        }
    }

    #[test]
    fn a_polygon_over_the_left_half_covers_exactly_the_left_half() {
        let g = grid();
        // Beyond the window on three sides, the right edge halfway (x = 500 320).
        let p = geo::Geometry::Polygon(polygon![
            (x: 499_000.0, y: 4_999_000.0), (x: 500_320.0, y: 4_999_000.0),
            (x: 500_320.0, y: 5_002_000.0), (x: 499_000.0, y: 5_002_000.0),
        ]);
        let px = rasterize_projected(&p, &g);
        assert_eq!(px.len(), 64 * 32);
        assert!(px.iter().all(|i| i % 64 < 32));
    }

    #[test]
    fn a_point_covers_the_one_pixel_containing_it() {
        let g = grid();
        // 25 m east, 35 m south of the top-left corner: row 3, column 2.
        let px = rasterize_projected(
            &geo::Geometry::Point(Point::new(500_025.0, 5_000_605.0)),
            &g,
        );
        assert_eq!(px, vec![3 * 64 + 2]);
        // Outside the window.
        let px = rasterize_projected(
            &geo::Geometry::Point(Point::new(499_999.0, 5_000_605.0)),
            &g,
        );
        assert!(px.is_empty());
        // On the window's right edge: belongs to the neighbour.
        let px = rasterize_projected(
            &geo::Geometry::Point(Point::new(500_640.0, 5_000_605.0)),
            &g,
        );
        assert!(px.is_empty());
    }

    #[test]
    fn holes_are_not_covered() {
        let g = grid();
        let p = geo::Geometry::Polygon(geo::Polygon::new(
            geo::LineString::from(vec![
                (500_000.0, 5_000_000.0),
                (500_640.0, 5_000_000.0),
                (500_640.0, 5_000_640.0),
                (500_000.0, 5_000_640.0),
                (500_000.0, 5_000_000.0),
            ]),
            vec![geo::LineString::from(vec![
                (500_100.0, 5_000_100.0),
                (500_200.0, 5_000_100.0),
                (500_200.0, 5_000_200.0),
                (500_100.0, 5_000_200.0),
                (500_100.0, 5_000_100.0),
            ])],
        ));
        assert_eq!(rasterize_projected(&p, &g).len(), 64 * 64 - 100);
    }

    #[test]
    fn bitmasks_are_row_major_least_significant_bit_first() {
        assert_eq!(bitmask(&[0, 9, 15], 4), vec![0b0000_0001, 0b1000_0010]);
    }

    #[test]
    fn geometries_in_lon_lat_land_on_the_window_they_fall_in() {
        let w = WindowSpec::from_cell(32631, 700, 7800, 64, 10.0).unwrap();
        let g = PixelGrid {
            epsg: w.epsg,
            geotransform: w.geotransform,
            size: w.size,
        };
        // The lon/lat of a point 15 m east and 25 m south of the window's top-left corner.
        let back = transform(32631, 4326).unwrap();
        let (mut xs, mut ys) = ([w.geotransform[0] + 15.0], [w.geotransform[3] - 25.0]);
        back.transform_coords(&mut xs, &mut ys, &mut []).unwrap();
        let mut r = Rasterizer::new();
        let px = r
            .rasterize(&geo::Geometry::Point(Point::new(xs[0], ys[0])), &g)
            .unwrap();
        assert_eq!(px, vec![2 * 64 + 1]);
    }

    #[test]
    fn bad_geometries_are_refused_with_a_reason() {
        let bowtie =
            json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]});
        assert!(parse_label_geometry(&bowtie).is_err());
        let line = json!({"type": "LineString", "coordinates": [[0, 0], [1, 1]]});
        assert!(
            parse_label_geometry(&line)
                .unwrap_err()
                .contains("Point, Polygon or MultiPolygon")
        );
        let far = json!({"type": "Point", "coordinates": [500000.0, 10.0]});
        assert!(
            parse_label_geometry(&far)
                .unwrap_err()
                .contains("longitude")
        );
        assert!(parse_label_geometry(&json!({"type": "Point"})).is_err());
        let ok = json!({"type": "Point", "coordinates": [3.0, 45.0]});
        assert!(parse_label_geometry(&ok).is_ok());
    }
}
