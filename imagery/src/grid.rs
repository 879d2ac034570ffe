//! Windows: the AOI cut into square windows on a UTM grid.
//!
//! The grid of each UTM zone is anchored at easting/northing 0, so a window's id (zone, column, row, size,
//! resolution) is stable: the same AOI, or an overlapping one, always yields the same ids for the same
//! ground. A window belongs to the hemisphere that contains its centre (both hemispheres' grids line up).
//! The grids of neighbouring zones do not line up, so along a zone boundary each zone keeps every
//! window that reaches into it: both sides of the boundary are covered by their own zone's windows,
//! and the windows that straddle it exist in both zones (the map takes each pixel from its own zone).

use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use geo::{Intersects, MultiPolygon, Polygon};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the AOI is cut into windows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GridOptions {
    /// Window side in pixels (default 64).
    pub window_size: u32,
    /// Pixel size in metres (default 10, what OlmoEarth expects).
    pub resolution: f64,
    /// Refuse AOIs that would produce more windows than this (default 250 000).
    pub max_windows: usize,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            window_size: 64,
            resolution: 10.0,
            max_windows: 250_000,
        }
    }
}

/// One window: a square of `size × size` pixels in a UTM zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Stable id, `{epsg}_{resolution}m_{size}px_{column}_{row}`.
    pub id: String,
    /// EPSG code of the UTM zone (326xx north, 327xx south).
    pub epsg: u32,
    /// `EPSG:{epsg}`.
    pub crs: String,
    /// Side in pixels.
    pub size: u32,
    /// Pixel size in metres.
    pub resolution: f64,
    /// Grid column (easting of the left edge / window side in metres).
    pub column: i64,
    /// Grid row (northing of the bottom edge / window side in metres).
    pub row: i64,
    /// GDAL geotransform `[x_left, res, 0, y_top, 0, -res]`.
    pub geotransform: [f64; 6],
    /// UTM bounds `[xmin, ymin, xmax, ymax]`.
    pub utm_bounds: [f64; 4],
    /// EPSG:4326 bounds `[west, south, east, north]`.
    pub wgs84_bounds: [f64; 4],
    /// The window outline in EPSG:4326 (densified UTM square).
    pub wgs84_polygon: geojson::Geometry,
}

/// The UTM zone (EPSG code), grid column and row a window id names: the inverse of [`WindowSpec::id`]'s
/// format. `None` for a string of another form.
#[must_use]
pub fn window_cell(id: &str) -> Option<(u32, i64, i64)> {
    let mut parts = id.rsplitn(3, '_');
    let row = parts.next()?.parse().ok()?;
    let column = parts.next()?.parse().ok()?;
    let epsg = parts.next()?.split('_').next()?.parse().ok()?;
    Some((epsg, column, row))
}

impl WindowSpec {
    /// Builds the window of a grid cell.
    pub fn from_cell(
        epsg: u32,
        column: i64,
        row: i64,
        size: u32,
        resolution: f64,
    ) -> Result<WindowSpec> {
        Self::from_cell_with(&transform(epsg, 4326)?, epsg, column, row, size, resolution)
    }

    /// [`WindowSpec::from_cell`] with a ready UTM → EPSG:4326 transform.
    fn from_cell_with(
        ct: &CoordTransform,
        epsg: u32,
        column: i64,
        row: i64,
        size: u32,
        resolution: f64,
    ) -> Result<WindowSpec> {
        let side = f64::from(size) * resolution;
        let (xmin, ymin) = (column as f64 * side, row as f64 * side);
        let (xmax, ymax) = (xmin + side, ymin + side);
        let ring = densified_ring([xmin, ymin, xmax, ymax], 4);
        let mut xs: Vec<f64> = ring.iter().map(|p| p.0).collect();
        let mut ys: Vec<f64> = ring.iter().map(|p| p.1).collect();
        ct.transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(Error::gdal(format!(
                "projecting window {column},{row} of EPSG:{epsg}"
            )))?;
        let coords: Vec<Vec<f64>> = xs.iter().zip(&ys).map(|(x, y)| vec![*x, *y]).collect();
        let bounds = [
            xs.iter().copied().fold(f64::INFINITY, f64::min),
            ys.iter().copied().fold(f64::INFINITY, f64::min),
            xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        ];
        let res_label = if resolution.fract() == 0.0 {
            format!("{resolution:.0}")
        } else {
            format!("{resolution}")
        };
        Ok(WindowSpec {
            id: format!("{epsg}_{res_label}m_{size}px_{column}_{row}"),
            epsg,
            crs: format!("EPSG:{epsg}"),
            size,
            resolution,
            column,
            row,
            geotransform: [xmin, resolution, 0.0, ymax, 0.0, -resolution],
            utm_bounds: [xmin, ymin, xmax, ymax],
            wgs84_bounds: bounds,
            wgs84_polygon: geojson::Geometry::new_polygon(vec![coords]),
        })
    }

    /// The window outline as a `geo` polygon in EPSG:4326.
    pub fn polygon(&self) -> Result<Polygon<f64>> {
        Polygon::try_from(&self.wgs84_polygon)
            .map_err(|e| Error::InvalidRequest(format!("window {} outline: {e}", self.id)))
    }
}

/// Cuts the AOI (a GeoJSON Polygon or MultiPolygon in EPSG:4326; holes respected) into windows.
///
/// Windows that overlap the AOI at all are kept; ones entirely outside it (or inside a hole) are not created.
/// The result is sorted by id.
pub fn windows_for_aoi(aoi: &geojson::Geometry, opts: &GridOptions) -> Result<Vec<WindowSpec>> {
    if opts.window_size == 0 || opts.resolution.is_nan() || opts.resolution <= 0.0 {
        return Err(Error::InvalidRequest(
            "window size and resolution must be positive".into(),
        ));
    }
    let aoi = aoi_multipolygon(aoi)?;
    let bbox = geo::BoundingRect::bounding_rect(&aoi)
        .ok_or_else(|| Error::InvalidAoi("empty geometry".into()))?;
    let (west, south, east, north) = (bbox.min().x, bbox.min().y, bbox.max().x, bbox.max().y);
    if !(-180.0..=180.0).contains(&west)
        || !(-180.0..=180.0).contains(&east)
        || !(-90.0..=90.0).contains(&south)
        || !(-90.0..=90.0).contains(&north)
    {
        return Err(Error::InvalidAoi(format!(
            "coordinates outside EPSG:4326 range: [{west}, {south}, {east}, {north}]"
        )));
    }
    if south < -80.0 || north > 84.0 {
        return Err(Error::InvalidAoi(
            "UTM covers latitudes -80..84 only".into(),
        ));
    }
    let side = f64::from(opts.window_size) * opts.resolution;
    let mut out = Vec::new();
    for zone in utm_zone(west)..=utm_zone(east) {
        for north_hemi in [false, true] {
            if (north_hemi && north < 0.0) || (!north_hemi && south >= 0.0) {
                continue;
            }
            let epsg = if north_hemi {
                32600 + zone
            } else {
                32700 + zone
            };
            // Clip the AOI box to the zone (with a margin: windows are assigned by centre).
            let zw = -180.0 + f64::from(zone - 1) * 6.0;
            let clip = [
                west.max(zw - 1.0),
                if north_hemi {
                    south.max(0.0) - 0.5
                } else {
                    south
                },
                east.min(zw + 7.0),
                if north_hemi {
                    north
                } else {
                    north.min(0.0) + 0.5
                },
            ];
            if clip[0] > clip[2] {
                continue;
            }
            let to_utm = transform(4326, epsg)?;
            let b = to_utm
                .transform_bounds(&clip, 21)
                .map_err(Error::gdal(format!("projecting AOI bounds to EPSG:{epsg}")))?;
            let (c0, c1) = ((b[0] / side).floor() as i64, (b[2] / side).floor() as i64);
            let (r0, r1) = ((b[1] / side).floor() as i64, (b[3] / side).floor() as i64);
            let cells = (c1 - c0 + 1).max(0) as usize * (r1 - r0 + 1).max(0) as usize;
            if cells > opts.max_windows.saturating_mul(4) + 1024 {
                return Err(Error::InvalidAoi(format!(
                    "AOI needs about {cells} windows in EPSG:{epsg}, more than the limit of {}",
                    opts.max_windows
                )));
            }
            // Window centres to lon/lat, to assign each window to the zone of its centre.
            let mut cells_v = Vec::with_capacity(cells);
            let (mut xs, mut ys) = (Vec::with_capacity(cells), Vec::with_capacity(cells));
            for c in c0..=c1 {
                for r in r0..=r1 {
                    cells_v.push((c, r));
                    xs.push((c as f64 + 0.5) * side);
                    ys.push((r as f64 + 0.5) * side);
                }
            }
            if cells_v.is_empty() {
                continue;
            }
            let to_wgs = transform(epsg, 4326)?;
            to_wgs
                .transform_coords(&mut xs, &mut ys, &mut [])
                .map_err(Error::gdal(format!(
                    "projecting window centres of EPSG:{epsg}"
                )))?;
            for (i, (c, r)) in cells_v.into_iter().enumerate() {
                let (lon, lat) = (xs[i], ys[i]);
                // Hemispheres share the window grid exactly (10,000 km is a whole number of
                // windows), so the centre decides. Across a zone boundary the two grids do not
                // line up: a zone keeps every window that reaches into it, so each side of the
                // boundary is covered by its own zone's windows.
                if (lat >= 0.0) != north_hemi {
                    continue;
                }
                let centre_zone = utm_zone(lon);
                if centre_zone != zone && (lon < zw - 0.5 || lon > zw + 6.5) {
                    continue;
                }
                // Cheap reject before building the exact outline.
                let margin = side / 50_000.0 + 0.01;
                if lon < west - margin
                    || lon > east + margin
                    || lat < south - margin
                    || lat > north + margin
                {
                    continue;
                }
                let w = WindowSpec::from_cell_with(
                    &to_wgs,
                    epsg,
                    c,
                    r,
                    opts.window_size,
                    opts.resolution,
                )?;
                if centre_zone != zone && (w.wgs84_bounds[2] <= zw || w.wgs84_bounds[0] >= zw + 6.0)
                {
                    continue;
                }
                if w.polygon()?.intersects(&aoi) {
                    out.push(w);
                    if out.len() > opts.max_windows {
                        return Err(Error::InvalidAoi(format!(
                            "AOI needs more than {} windows",
                            opts.max_windows
                        )));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The AOI as a multipolygon; accepts Polygon and MultiPolygon geometries.
pub fn aoi_multipolygon(aoi: &geojson::Geometry) -> Result<MultiPolygon<f64>> {
    let g = geo::Geometry::<f64>::try_from(aoi).map_err(|e| Error::InvalidAoi(e.to_string()))?;
    match g {
        geo::Geometry::Polygon(p) => Ok(MultiPolygon(vec![p])),
        geo::Geometry::MultiPolygon(m) => Ok(m),
        other => Err(Error::InvalidAoi(format!(
            "expected Polygon or MultiPolygon, got {}",
            geometry_kind(&other)
        ))),
    }
}

fn geometry_kind(g: &geo::Geometry<f64>) -> &'static str {
    match g {
        geo::Geometry::Point(_) => "Point",
        geo::Geometry::Line(_) => "Line",
        geo::Geometry::LineString(_) => "LineString",
        geo::Geometry::MultiPoint(_) => "MultiPoint",
        geo::Geometry::MultiLineString(_) => "MultiLineString",
        geo::Geometry::GeometryCollection(_) => "GeometryCollection",
        _ => "another geometry type",
    }
}

/// UTM zone number (1..=60) of a longitude.
pub fn utm_zone(lon: f64) -> u32 {
    (((lon + 180.0) / 6.0).floor() as i64 + 1).clamp(1, 60) as u32
}

/// A spatial reference from an EPSG code, with x = easting/longitude axis order.
pub(crate) fn srs(epsg: u32) -> Result<SpatialRef> {
    let mut s = SpatialRef::from_epsg(epsg).map_err(Error::gdal(format!("loading EPSG:{epsg}")))?;
    s.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    Ok(s)
}

/// A coordinate transform between two EPSG codes (x = easting/longitude).
pub(crate) fn transform(from: u32, to: u32) -> Result<CoordTransform> {
    CoordTransform::new(&srs(from)?, &srs(to)?)
        .map_err(Error::gdal(format!("transform EPSG:{from} -> EPSG:{to}")))
}

/// Longitude and latitude (EPSG:4326) of points `(x, y)` in `epsg`.
pub fn to_lonlat(epsg: u32, points: &[(f64, f64)]) -> Result<Vec<(f64, f64)>> {
    if points.is_empty() {
        return Ok(Vec::new());
    }
    let (mut xs, mut ys): (Vec<f64>, Vec<f64>) = points.iter().copied().unzip();
    transform(epsg, 4326)?
        .transform_coords(&mut xs, &mut ys, &mut [])
        .map_err(Error::gdal(format!(
            "transforming points of EPSG:{epsg} to EPSG:4326"
        )))?;
    Ok(xs.into_iter().zip(ys).collect())
}

/// A closed ring around a box with `per_edge` points per edge, counter-clockwise.
fn densified_ring(b: [f64; 4], per_edge: usize) -> Vec<(f64, f64)> {
    let corners = [(b[0], b[1]), (b[2], b[1]), (b[2], b[3]), (b[0], b[3])];
    let mut ring = Vec::with_capacity(per_edge * 4 + 1);
    for k in 0..4 {
        let (a, z) = (corners[k], corners[(k + 1) % 4]);
        for s in 0..per_edge {
            let t = s as f64 / per_edge as f64;
            ring.push((a.0 + (z.0 - a.0) * t, a.1 + (z.1 - a.1) * t));
        }
    }
    ring.push(corners[0]);
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(w: f64, s: f64, e: f64, n: f64) -> Vec<Vec<f64>> {
        vec![vec![w, s], vec![e, s], vec![e, n], vec![w, n], vec![w, s]]
    }

    #[test]
    fn windows_cover_a_small_aoi_with_stable_ids() {
        let aoi = geojson::Geometry::new_polygon(vec![square(15.0, 45.0, 15.02, 45.02)]);
        let opts = GridOptions::default();
        let a = windows_for_aoi(&aoi, &opts).unwrap();
        let b = windows_for_aoi(&aoi, &opts).unwrap();
        assert_eq!(a, b);
        // ~1.6 km x 2.2 km at 640 m windows: 3-4 columns x 4-5 rows.
        assert!((9..=25).contains(&a.len()), "{}", a.len());
        assert!(
            a.iter()
                .all(|w| w.epsg == 32633 && w.id.starts_with("32633_10m_64px_"))
        );
        // Every id names its own cell.
        assert!(
            a.iter()
                .all(|w| window_cell(&w.id) == Some((w.epsg, w.column, w.row)))
        );
        let south_west = WindowSpec::from_cell(32733, -3, -7, 64, 10.0).unwrap();
        assert_eq!(window_cell(&south_west.id), Some((32733, -3, -7)));
        assert_eq!(window_cell("a_b_c"), None);
        let w = &a[0];
        assert_eq!(w.geotransform[1], 10.0);
        assert_eq!(w.utm_bounds[2] - w.utm_bounds[0], 640.0);
        assert_eq!(w.utm_bounds[0] % 640.0, 0.0);
    }

    #[test]
    fn windows_in_a_hole_are_not_created() {
        let outer = square(15.0, 45.0, 15.1, 45.1);
        let hole = square(15.03, 45.03, 15.07, 45.07);
        let with_hole = geojson::Geometry::new_polygon(vec![outer.clone(), hole]);
        let full = geojson::Geometry::new_polygon(vec![outer]);
        let opts = GridOptions::default();
        let a = windows_for_aoi(&with_hole, &opts).unwrap();
        let b = windows_for_aoi(&full, &opts).unwrap();
        assert!(a.len() < b.len());
        // The centre of the hole is in no window.
        let centre = geo::Point::new(15.05, 45.05);
        assert!(!a.iter().any(|w| w.polygon().unwrap().intersects(&centre)));
        assert!(b.iter().any(|w| w.polygon().unwrap().intersects(&centre)));
    }

    #[test]
    fn both_sides_of_a_zone_boundary_are_covered_by_their_own_zones_windows() {
        let aoi = geojson::Geometry::new_polygon(vec![square(11.98, 45.0, 12.02, 45.01)]);
        let ws = windows_for_aoi(&aoi, &GridOptions::default()).unwrap();
        let zones: std::collections::BTreeSet<u32> = ws.iter().map(|w| w.epsg).collect();
        assert_eq!(zones.into_iter().collect::<Vec<_>>(), vec![32632, 32633]);
        // Every window reaches into its zone.
        for w in &ws {
            let zw = -180.0 + f64::from(w.epsg - 32601) * 6.0;
            assert!(
                w.wgs84_bounds[2] > zw && w.wgs84_bounds[0] < zw + 6.0,
                "{}",
                w.id
            );
        }
        // Every point of the AOI lies in a window of the zone it belongs to, right up to the
        // boundary (12°E) on both sides.
        let polys: Vec<(u32, geo::Polygon<f64>)> =
            ws.iter().map(|w| (w.epsg, w.polygon().unwrap())).collect();
        for i in 0..=80 {
            for j in 0..=20 {
                let p =
                    geo::Point::new(11.98 + 0.0005 * f64::from(i), 45.0 + 0.0005 * f64::from(j));
                let zone = 32600 + utm_zone(p.x());
                assert!(
                    polys
                        .iter()
                        .any(|(e, poly)| *e == zone && poly.intersects(&p)),
                    "{p:?} is in no window of EPSG:{zone}"
                );
            }
        }
        // Away from the boundary nothing is duplicated.
        let far = geojson::Geometry::new_polygon(vec![square(12.5, 45.0, 12.52, 45.01)]);
        let ws = windows_for_aoi(&far, &GridOptions::default()).unwrap();
        assert!(ws.iter().all(|w| w.epsg == 32633));
    }

    #[test]
    fn a_half_degree_aoi_is_cut_quickly() {
        let aoi = geojson::Geometry::new_polygon(vec![square(15.0, 45.0, 15.5, 45.5)]);
        let t = std::time::Instant::now();
        let ws = windows_for_aoi(&aoi, &GridOptions::default()).unwrap();
        assert!(ws.len() > 5_000, "{}", ws.len());
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }

    #[test]
    fn points_are_rejected() {
        let aoi = geojson::Geometry::new_point([1.0, 2.0]);
        assert!(matches!(
            windows_for_aoi(&aoi, &GridOptions::default()),
            Err(Error::InvalidAoi(_))
        ));
    }
}
