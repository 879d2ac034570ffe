//! The footprint of a raster's data: the outline of its valid pixels in EPSG:4326, for a STAC Item's
//! `geometry` and `bbox` (the data itself, not the extent of the tile grid it was warped onto).
//!
//! The valid-pixel mask is reduced to a grid of at most [`MAX_CELLS`] cells a side (a cell is valid
//! when any of its pixels is), polygonised by GDAL, simplified by half a cell (so the outline strays at
//! most half a cell from the cells' edges), densified so that long edges keep their shape when
//! reprojected, and transformed. The bbox is that of the cells before simplification: it holds every
//! valid pixel.

use std::path::Path;

use gdal::vector::LayerAccess;
use gdal::{Dataset, DriverManager};
use geo::orient::{Direction, Orient};
use geo::{BoundingRect, Simplify};

use crate::error::{Error, Result};

/// Cells a side of the grid the mask is reduced to.
pub const MAX_CELLS: usize = 512;

/// Longest edge, in the raster's CRS units, before it is reprojected.
const DENSIFY_M: f64 = 500.0;

/// The outline of a raster's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// A GeoJSON Polygon or MultiPolygon in EPSG:4326, rings oriented as RFC 7946 asks.
    pub geometry: serde_json::Value,
    /// `[west, south, east, north]` of the outline.
    pub bbox: [f64; 4],
}

/// The outline of the valid pixels of `path`'s first band (its nodata or mask band), or `None` when no
/// pixel is valid.
pub fn data_footprint(path: &Path) -> Result<Option<Footprint>> {
    let ds = Dataset::open(path).map_err(Error::gdal(format!("opening {}", path.display())))?;
    let (w, h) = ds.raster_size();
    let gt = ds
        .geo_transform()
        .map_err(Error::gdal("reading the geotransform"))?;
    let epsg = ds
        .spatial_ref()
        .ok()
        .and_then(|s| s.auth_code().ok())
        .and_then(|c| u32::try_from(c).ok())
        .ok_or_else(|| Error::InvalidRequest(format!("{} has no EPSG CRS", path.display())))?;
    let band = ds
        .rasterband(1)
        .map_err(Error::gdal("opening the first band"))?;
    let mask = band
        .open_mask_band()
        .map_err(Error::gdal("opening the mask band"))?;
    let cell = w.max(h).div_ceil(MAX_CELLS).max(1);
    let (gw, gh) = (w.div_ceil(cell), h.div_ceil(cell));
    let mut grid = vec![0u8; gw * gh];
    let mut row = 0;
    while row < h {
        let rows = cell.min(h - row);
        let buf = mask
            .read_as::<u8>(
                (0, isize::try_from(row).unwrap_or(isize::MAX)),
                (w, rows),
                (w, rows),
                None,
            )
            .map_err(Error::gdal("reading the mask"))?;
        let g = row / cell;
        for (i, &v) in buf.data().iter().enumerate() {
            if v != 0 {
                grid[g * gw + (i % w) / cell] = 1;
            }
        }
        row += rows;
    }
    if !grid.contains(&1) {
        return Ok(None);
    }
    let cells = polygonize_grid(&grid, gw, gh)?;
    // Grid cells → pixels (the last row and column of cells may reach past the raster) → the CRS.
    let to_crs = |x: f64, y: f64| -> (f64, f64) {
        let (px, py) = (
            (x * cell as f64).min(w as f64),
            (y * cell as f64).min(h as f64),
        );
        (
            gt[0] + px * gt[1] + py * gt[2],
            gt[3] + px * gt[4] + py * gt[5],
        )
    };
    let ct = crate::grid::transform(epsg, 4326)?;
    let mut polygons = Vec::new();
    let mut corners: Vec<(f64, f64)> = Vec::new();
    for p in cells {
        if let Some(r) = p.bounding_rect() {
            for (x, y) in [
                (r.min().x, r.min().y),
                (r.max().x, r.min().y),
                (r.max().x, r.max().y),
                (r.min().x, r.max().y),
            ] {
                corners.push(to_crs(x, y));
            }
        }
        let p = p.simplify(0.5);
        let ring = |r: &geo::LineString<f64>| -> Result<geo::LineString<f64>> {
            let pts: Vec<(f64, f64)> = r.coords().map(|c| to_crs(c.x, c.y)).collect();
            let dense = densify(&pts, DENSIFY_M);
            let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = dense.into_iter().unzip();
            ct.transform_coords(&mut xs, &mut ys, &mut [])
                .map_err(Error::gdal("transforming the footprint to EPSG:4326"))?;
            Ok(xs.into_iter().zip(ys).collect::<Vec<_>>().into())
        };
        let exterior = ring(p.exterior())?;
        let holes = p.interiors().iter().map(ring).collect::<Result<Vec<_>>>()?;
        polygons.push(geo::Polygon::new(exterior, holes));
    }
    let multi = geo::MultiPolygon::new(polygons).orient(Direction::Default);
    // The bbox of the cells themselves (their rectangles' edges densified and reprojected), so that
    // simplification never moves it inside the data.
    let mut bbox = [
        f64::INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NEG_INFINITY,
    ];
    for quad in corners.chunks(4) {
        let mut ring = quad.to_vec();
        ring.push(quad[0]);
        let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = densify(&ring, DENSIFY_M).into_iter().unzip();
        ct.transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(Error::gdal(
                "transforming the footprint's bounds to EPSG:4326",
            ))?;
        for (x, y) in xs.into_iter().zip(ys) {
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
        }
    }
    if !bbox.iter().all(|v| v.is_finite()) {
        return Err(Error::InvalidRequest("the footprint is empty".into()));
    }
    let geometry = if multi.0.len() == 1 {
        geo::Geometry::Polygon(multi.0[0].clone())
    } else {
        geo::Geometry::MultiPolygon(multi)
    };
    let geometry =
        serde_json::to_value(geojson::Geometry::from(&geometry)).map_err(|e| Error::Encode {
            what: "footprint GeoJSON".into(),
            reason: e.to_string(),
        })?;
    Ok(Some(Footprint { geometry, bbox }))
}

/// Points along a closed ring with no edge longer than `max` (the ring's first point repeats last).
fn densify(pts: &[(f64, f64)], max: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pts.len());
    for pair in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let n = ((x1 - x0).hypot(y1 - y0) / max).ceil().clamp(1.0, 10_000.0) as usize;
        for k in 0..n {
            let t = k as f64 / n as f64;
            out.push((x0 + (x1 - x0) * t, y0 + (y1 - y0) * t));
        }
    }
    if let Some(&last) = pts.last() {
        out.push(last);
    }
    out
}

/// The valid cells of a `gw × gh` grid as polygons in cell coordinates (x right, y down).
fn polygonize_grid(grid: &[u8], gw: usize, gh: usize) -> Result<Vec<geo::Polygon<f64>>> {
    let mem = DriverManager::get_driver_by_name("MEM").map_err(Error::gdal("loading MEM"))?;
    let mut ds = mem
        .create_with_band_type::<u8, _>("", gw, gh, 1)
        .map_err(Error::gdal("creating the mask grid"))?;
    ds.set_geo_transform(&[0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
        .map_err(Error::gdal("setting the mask grid's transform"))?;
    let mut band = ds.rasterband(1).map_err(Error::gdal("the mask grid"))?;
    let mut buffer = gdal::raster::Buffer::new((gw, gh), grid.to_vec());
    band.write((0, 0), (gw, gh), &mut buffer)
        .map_err(Error::gdal("writing the mask grid"))?;
    let vmem = DriverManager::get_driver_by_name("Memory")
        .map_err(Error::gdal("loading the Memory vector driver"))?;
    let mut vds = vmem
        .create_vector_only("")
        .map_err(Error::gdal("creating an in-memory vector dataset"))?;
    let mut layer = vds
        .create_layer(gdal::vector::LayerOptions {
            name: "footprint",
            srs: None,
            ty: gdal_sys::OGRwkbGeometryType::wkbPolygon,
            options: None,
        })
        .map_err(Error::gdal("creating the footprint layer"))?;
    gdal::vector::FieldDefn::new("valid", gdal_sys::OGRFieldType::OFTInteger)
        .and_then(|f| f.add_to_layer(&layer))
        .map_err(Error::gdal("adding the footprint field"))?;
    // The band is its own mask: zero cells are left out.
    crate::publish::polygonize(&band, &band, &layer)
        .map_err(|()| Error::InvalidRequest("GDAL could not outline the data".into()))?;
    let mut out = Vec::new();
    for feature in layer.features() {
        let Some(geom) = feature.geometry() else {
            continue;
        };
        let json = geom
            .json()
            .map_err(Error::gdal("writing the footprint as GeoJSON"))?;
        let g: geojson::Geometry = serde_json::from_str(&json).map_err(|e| Error::Encode {
            what: "footprint GeoJSON".into(),
            reason: e.to_string(),
        })?;
        match geo::Geometry::<f64>::try_from(g) {
            Ok(geo::Geometry::Polygon(p)) => out.push(p),
            Ok(geo::Geometry::MultiPolygon(m)) => out.extend(m.0),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::NODATA_U8;
    use geo::{Area, Contains};

    fn class_cog(dir: &Path, n: usize, valid: impl Fn(usize, usize) -> bool) -> std::path::PathBuf {
        let path = dir.join("class.tif");
        let data: Vec<u8> = (0..n * n)
            .map(|i| if valid(i / n, i % n) { 1 } else { NODATA_U8 })
            .collect();
        crate::demo::write_cog::<u8>(
            &path,
            &data,
            n,
            n,
            [500_000.0, 10.0, 0.0, 5_000_000.0, 0.0, -10.0],
            32633,
            Some(f64::from(NODATA_U8)),
        )
        .expect("a COG");
        path
    }

    fn polygon(v: &serde_json::Value) -> geo::Geometry<f64> {
        let g: geojson::Geometry = serde_json::from_value(v.clone()).expect("GeoJSON");
        geo::Geometry::try_from(g).expect("a geometry")
    }

    #[test]
    fn the_footprint_follows_the_valid_pixels_not_the_raster_extent() {
        let dir = tempfile::tempdir().expect("a folder");
        // A 600 × 600 raster (6 km) whose data is a triangle: the lower-left half.
        let path = class_cog(dir.path(), 600, |r, c| c <= r);
        let f = data_footprint(&path).expect("a footprint").expect("data");
        let g = polygon(&f.geometry);
        // The triangle's area in degrees² is about half the raster's (a cell of slack on the diagonal).
        let [w, s, e, n] = f.bbox;
        let full = (e - w) * (n - s);
        let ratio = g.unsigned_area() / full;
        assert!((0.49..0.53).contains(&ratio), "area ratio {ratio}");
        // A point well inside the data is inside; one well inside the empty half is not.
        let lonlat = |x: f64, y: f64| {
            let p = crate::grid::to_lonlat(32633, &[(x, y)]).expect("lon/lat")[0];
            geo::Point::new(p.0, p.1)
        };
        assert!(g.contains(&lonlat(500_000.0 + 1_000.0, 5_000_000.0 - 5_000.0)));
        assert!(!g.contains(&lonlat(500_000.0 + 5_000.0, 5_000_000.0 - 1_000.0)));
        // Rings are RFC 7946's: exterior counter-clockwise.
        if let geo::Geometry::Polygon(p) = &g {
            use geo::Winding;
            assert!(p.exterior().is_ccw());
        } else {
            panic!("one polygon expected, got {g:?}");
        }
    }

    #[test]
    fn separate_blocks_of_data_give_a_multipolygon_whose_bbox_is_the_data_s() {
        let dir = tempfile::tempdir().expect("a folder");
        // Two 100-pixel squares in opposite corners of a 1000 × 1000 raster (cells of 2 pixels).
        let path = class_cog(dir.path(), 1000, |r, c| {
            (r < 100 && c < 100) || ((500..600).contains(&r) && (500..600).contains(&c))
        });
        let f = data_footprint(&path).expect("a footprint").expect("data");
        assert_eq!(f.geometry["type"], "MultiPolygon");
        let corners =
            crate::grid::to_lonlat(32633, &[(500_000.0, 5_000_000.0), (506_000.0, 4_994_000.0)])
                .expect("lon/lat");
        let [w, s, e, n] = f.bbox;
        assert!(
            (w - corners[0].0).abs() < 1e-4,
            "west {w} vs {}",
            corners[0].0
        );
        assert!(
            (n - corners[0].1).abs() < 1e-4,
            "north {n} vs {}",
            corners[0].1
        );
        assert!(
            (e - corners[1].0).abs() < 1e-3,
            "east {e} vs {}",
            corners[1].0
        );
        assert!(
            (s - corners[1].1).abs() < 1e-3,
            "south {s} vs {}",
            corners[1].1
        );
    }

    #[test]
    fn a_raster_without_valid_pixels_has_no_footprint() {
        let dir = tempfile::tempdir().expect("a folder");
        let path = class_cog(dir.path(), 16, |_, _| false);
        assert_eq!(data_footprint(&path).expect("read"), None);
    }
}
