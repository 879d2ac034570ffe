//! Checking imported rows against a project (classes, task, AOI) and working out the windows and pixels
//! each label covers.

use super::formats::{ClassRef, RawLabel, RowError, integral};
use geo::{BoundingRect, Centroid, Intersects, MultiPolygon};
use groundwork_imagery::rasterize::{PixelGrid, Rasterizer, bitmask, parse_area};
use groundwork_store::labels::{Coverage, NewLabel, WindowGrid};
use groundwork_store::projects::Project;
use groundwork_types::Task;
use std::collections::HashMap;

/// The project's legend: name and id lookups.
pub(crate) struct Legend {
    by_id: HashMap<i64, String>,
    by_name: HashMap<String, i64>,
}

impl Legend {
    /// The legend of `project`.
    pub(crate) fn of(project: &Project) -> Self {
        let mut by_id = HashMap::new();
        let mut by_name = HashMap::new();
        for c in &project.classes {
            by_id.insert(i64::from(c.id), c.name.clone());
            by_name.insert(c.name.to_lowercase(), i64::from(c.id));
        }
        Self { by_id, by_name }
    }

    fn resolve(&self, c: &ClassRef) -> Result<i32, String> {
        // A name that is no class's name may be an id written as text ("20", "20.0").
        let id = match c {
            ClassRef::Id(i) => self.by_id.contains_key(i).then_some(*i),
            ClassRef::Name(n) => self.by_name.get(&n.to_lowercase()).copied().or_else(|| {
                n.parse::<f64>()
                    .ok()
                    .and_then(integral)
                    .filter(|i| self.by_id.contains_key(i))
            }),
        };
        let shown = match c {
            ClassRef::Id(i) => i.to_string(),
            ClassRef::Name(n) => format!("{n:?}"),
        };
        id.and_then(|i| i32::try_from(i).ok()).ok_or_else(|| {
            if self.by_id.is_empty() {
                format!("unknown class {shown}: the project has no classes")
            } else {
                format!("unknown class {shown}")
            }
        })
    }

    /// The name of class `id`.
    pub(crate) fn name(&self, id: i32) -> Option<&str> {
        self.by_id.get(&i64::from(id)).map(String::as_str)
    }
}

fn grid_of(w: &WindowGrid) -> Option<PixelGrid> {
    let geotransform: [f64; 6] = serde_json::from_value(w.geotransform.clone()).ok()?;
    Some(PixelGrid {
        epsg: u32::try_from(w.epsg).ok()?,
        geotransform,
        size: u32::try_from(w.size).ok()?,
    })
}

/// The windows (and pixels) a geometry in EPSG:4326 covers.
pub(crate) fn coverage_of(
    rasterizer: &mut Rasterizer,
    geometry: &geo::Geometry<f64>,
    windows: &[WindowGrid],
) -> Result<Vec<Coverage>, String> {
    let Some(rect) = geometry.bounding_rect() else {
        return Ok(Vec::new());
    };
    let eps = 1e-7;
    let mut out = Vec::new();
    for w in windows {
        if w.bbox_west > rect.max().x + eps
            || w.bbox_east < rect.min().x - eps
            || w.bbox_south > rect.max().y + eps
            || w.bbox_north < rect.min().y - eps
        {
            continue;
        }
        let Some(grid) = grid_of(w) else { continue };
        let pixels = rasterizer
            .rasterize(geometry, &grid)
            .map_err(|e| format!("bad geometry: {e}"))?;
        if !pixels.is_empty() {
            out.push((
                w.epsg,
                Coverage {
                    window_id: w.id.clone(),
                    pixel_count: i32::try_from(pixels.len()).unwrap_or(i32::MAX),
                    pixels: Some(bitmask(&pixels, grid.size)),
                },
            ));
        }
    }
    // Along a UTM zone boundary both zones have windows over the same ground (the zones' grids do not
    // line up). A label counts in the windows of its own zone (that of its centre) when they cover
    // it, so it is not a training example twice, nor in two splits at once.
    let own = geometry.centroid().map(|c| own_zone_epsg(c.x(), c.y()));
    if let Some(own) = own
        && out.iter().any(|(e, _)| *e == own)
    {
        out.retain(|(e, _)| *e == own);
    }
    Ok(out.into_iter().map(|(_, c)| c).collect())
}

/// EPSG code of the UTM zone (and hemisphere) a point in EPSG:4326 lies in.
fn own_zone_epsg(lon: f64, lat: f64) -> i32 {
    let zone = i32::try_from(groundwork_imagery::grid::utm_zone(lon)).unwrap_or(1);
    if lat >= 0.0 {
        32600 + zone
    } else {
        32700 + zone
    }
}

pub(crate) fn whole_window(w: &WindowGrid) -> Coverage {
    Coverage {
        window_id: w.id.clone(),
        pixels: None,
        pixel_count: w.size.saturating_mul(w.size).max(1),
    }
}

/// Checks rows against a project: classes, task, AOI and windows.
struct RowChecker<'a> {
    task: Task,
    legend: Legend,
    aoi: Option<MultiPolygon<f64>>,
    windows: &'a [WindowGrid],
    by_id: HashMap<&'a str, &'a WindowGrid>,
    rasterizer: Rasterizer,
}

impl<'a> RowChecker<'a> {
    fn new(project: &'a Project, windows: &'a [WindowGrid]) -> Self {
        Self {
            task: project.task,
            legend: Legend::of(project),
            aoi: parse_area(&project.aoi),
            windows,
            by_id: windows.iter().map(|w| (w.id.as_str(), w)).collect(),
            rasterizer: Rasterizer::new(),
        }
    }

    /// The label of a row, with its windows worked out (when the project has windows).
    fn check(&mut self, raw: &RawLabel) -> Result<NewLabel, String> {
        let (class_id, value) = if self.task == Task::Regression {
            match raw.value {
                Some(v) => (None, Some(v)),
                None => return Err("bad number: this regression project needs a `value`".into()),
            }
        } else {
            match &raw.class {
                Some(c) => (Some(self.legend.resolve(c)?), None),
                None => {
                    return Err(format!(
                        "unknown class: this {} project needs a `class`",
                        self.task
                    ));
                }
            }
        };
        if let Some((json, g)) = &raw.geometry {
            if self.aoi.as_ref().is_some_and(|a| !a.intersects(g)) {
                return Err("outside the AOI".into());
            }
            let coverage = if self.windows.is_empty() {
                None
            } else {
                let c = coverage_of(&mut self.rasterizer, g, self.windows)?;
                if c.is_empty() {
                    return Err("bad geometry: covers no pixel centre of any window".into());
                }
                Some(c)
            };
            return Ok(NewLabel {
                geometry: Some(json.clone()),
                window_id: None,
                class_id,
                value,
                coverage,
            });
        }
        let Some(id) = &raw.window_id else {
            return Err("bad geometry: give a geometry (or lon/lat) or a window_id".into());
        };
        let Some(w) = self.by_id.get(id.as_str()) else {
            return Err(format!("unknown window {id:?}"));
        };
        Ok(NewLabel {
            geometry: None,
            window_id: Some(id.clone()),
            class_id,
            value,
            coverage: Some(vec![whole_window(w)]),
        })
    }
}

/// Checks rows against the project and works out their windows; bad rows go to `errors`. Runs GDAL:
/// call it from a blocking task.
pub(crate) fn check_rows(
    project: &Project,
    windows: &[WindowGrid],
    rows: Vec<RawLabel>,
    errors: &mut Vec<RowError>,
) -> Vec<NewLabel> {
    let mut checker = RowChecker::new(project, windows);
    let mut out = Vec::with_capacity(rows.len());
    for raw in rows {
        match checker.check(&raw) {
            Ok(l) => out.push(l),
            Err(reason) => errors.push(RowError {
                row: raw.row,
                reason,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundwork_imagery::{GridOptions, windows_for_aoi};

    fn grids(aoi: &geojson::Geometry) -> Vec<WindowGrid> {
        windows_for_aoi(aoi, &GridOptions::default())
            .expect("windows")
            .into_iter()
            .map(|w| WindowGrid {
                id: w.id.clone(),
                epsg: i32::try_from(w.epsg).expect("epsg"),
                size: i32::try_from(w.size).expect("size"),
                grid_column: w.column,
                grid_row: w.row,
                geotransform: serde_json::json!(w.geotransform),
                bbox_west: w.wgs84_bounds[0],
                bbox_south: w.wgs84_bounds[1],
                bbox_east: w.wgs84_bounds[2],
                bbox_north: w.wgs84_bounds[3],
                status: "acquired".into(),
            })
            .collect()
    }

    #[test]
    fn a_label_by_a_zone_boundary_counts_in_its_own_zones_windows_only() {
        let aoi = geojson::Geometry::new_polygon(vec![vec![
            vec![11.99, 45.0],
            vec![12.01, 45.0],
            vec![12.01, 45.005],
            vec![11.99, 45.005],
            vec![11.99, 45.0],
        ]]);
        let windows = grids(&aoi);
        let mut r = Rasterizer::new();
        let by_id: HashMap<&str, i32> = windows.iter().map(|w| (w.id.as_str(), w.epsg)).collect();
        // Points a few metres either side of 12°E, where both zones' windows overlap.
        for (lon, zone) in [(11.9997, 32632), (12.0003, 32633)] {
            let p = geo::Geometry::Point(geo::Point::new(lon, 45.002));
            let c = coverage_of(&mut r, &p, &windows).expect("coverage");
            assert_eq!(
                c.len(),
                1,
                "{lon}: {:?}",
                c.iter().map(|c| &c.window_id).collect::<Vec<_>>()
            );
            assert_eq!(by_id[c[0].window_id.as_str()], zone, "{lon}");
        }
    }
}
