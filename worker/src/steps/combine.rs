//! `combine`: the fan-in of a prediction run. It pastes every partition's core into one mosaic in the
//! UTM zone of most windows and writes COGs in that CRS: the class map (`u8` class ids, 255 nodata,
//! a colour table from the project's classes) and the per-class probabilities (`u8`, `p · 254`, 255
//! nodata), or the values (`f32`, NaN nodata) for regression.
//!
//! An AOI that straddles a zone boundary is predicted zone by zone (each window in its own zone's
//! CRS, as its imagery was read). The other zones' mosaics are reprojected onto the main zone's grid
//! (bilinear on the probabilities or values; classes are taken after) and fill every pixel the main
//! zone's windows do not reach, so the map is one seamless raster (`reprojected_zones` in the output).

use super::permanent;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use futures::future::BoxFuture;
use groundwork_imagery::publish::{
    LegendClass, NODATA_U8, PROBABILITY_SCALE, write_class_cog, write_f32_cog, write_u8_cog,
};
use groundwork_imagery::stitch::{Rect, argmax};
use groundwork_store::{jobs, projects};
use groundwork_types::StepState;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Arguments of `combine`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CombineArgs {}

impl StepArgs for CombineArgs {
    const KIND: StepKind = StepKind::Combine;
}

/// What a `predict` step reports.
#[derive(Debug, Clone, Deserialize)]
struct PartOutput {
    key: String,
    epsg: u32,
    resolution: f64,
    outputs: usize,
    regression: bool,
    windows: usize,
    #[serde(default)]
    scenes: Vec<String>,
    #[serde(default)]
    model: Value,
    /// Class id of each output (trained models); `None`: the project's classes in order.
    #[serde(default)]
    class_ids: Option<Vec<i32>>,
}

/// One raster `combine` wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CombinedRaster {
    /// `class | probability | value`.
    pub kind: String,
    /// Object key of the UTM COG.
    pub key: String,
    /// Bands.
    pub bands: usize,
}

/// The mosaic of a run's partitions in one zone.
#[derive(Debug, Clone)]
pub struct Combined {
    /// The rectangle (global pixel coordinates).
    pub rect: Rect,
    /// Outputs per pixel.
    pub k: usize,
    /// `(K, H, W)`, NaN where no partition holds data.
    pub values: Vec<f32>,
}

/// Pastes partition predictions `(rect, K, values)` of one zone into one mosaic.
pub fn mosaic_partitions(parts: &[(Rect, usize, Vec<f32>)]) -> anyhow::Result<Combined> {
    let first = parts.first().context("no partition to combine")?;
    let k = first.1;
    let mut rect = first.0;
    for (r, pk, _) in parts {
        anyhow::ensure!(*pk == k, "partitions have different numbers of outputs");
        rect.x0 = rect.x0.min(r.x0);
        rect.y0 = rect.y0.min(r.y0);
        rect.x1 = rect.x1.max(r.x1);
        rect.y1 = rect.y1.max(r.y1);
    }
    let (w, h) = (rect.width(), rect.height());
    let plane = w * h;
    let mut values = vec![f32::NAN; k * plane];
    for (r, _, v) in parts {
        let (pw, ph) = (r.width(), r.height());
        let pplane = pw * ph;
        for c in 0..k {
            for y in 0..ph {
                let dst = c * plane
                    + (usize::try_from(r.y0 - rect.y0)? + y) * w
                    + usize::try_from(r.x0 - rect.x0)?;
                let src = c * pplane + y * pw;
                for x in 0..pw {
                    let s = v[src + x];
                    if !s.is_nan() {
                        values[dst + x] = s;
                    }
                }
            }
        }
    }
    Ok(Combined { rect, k, values })
}

/// One zone's mosaic.
pub struct ZoneMosaic {
    /// EPSG code of the zone.
    pub epsg: u32,
    /// Its mosaic on its own grid.
    pub combined: Combined,
}

/// The zones' mosaics on the grid of `main` (metres per pixel `resolution`): the main zone's pixels as
/// they are; every other zone reprojected onto the main grid and pasted where the main zone has no
/// data. The rectangle grows to hold them all.
pub fn merge_zones(
    main: ZoneMosaic,
    others: &[ZoneMosaic],
    resolution: f64,
) -> anyhow::Result<Combined> {
    use groundwork_imagery::stitch::{Planes, bounds_in, reproject_planes};
    if others.is_empty() {
        return Ok(main.combined);
    }
    let k = main.combined.k;
    let mut rect = main.combined.rect;
    let mut targets = Vec::with_capacity(others.len());
    for z in others {
        anyhow::ensure!(z.combined.k == k, "zones have different numbers of outputs");
        let planes = Planes {
            values: &z.combined.values,
            k,
            size: (z.combined.rect.width(), z.combined.rect.height()),
            geotransform: z.combined.rect.geotransform(resolution),
            epsg: z.epsg,
        };
        let b = bounds_in(&planes, main.epsg)?;
        // Global pixel coordinates of the main grid: x = easting / res, y = −northing / res.
        let r = Rect {
            x0: (b[0] / resolution).floor() as i64,
            y0: (-b[3] / resolution).floor() as i64,
            x1: (b[2] / resolution).ceil() as i64,
            y1: (-b[1] / resolution).ceil() as i64,
        };
        rect.x0 = rect.x0.min(r.x0);
        rect.y0 = rect.y0.min(r.y0);
        rect.x1 = rect.x1.max(r.x1);
        rect.y1 = rect.y1.max(r.y1);
        let values = reproject_planes(
            &planes,
            (r.width(), r.height()),
            r.geotransform(resolution),
            main.epsg,
        )?;
        targets.push((r, values));
    }
    // The main zone first; the others only where it left a gap.
    let mut merged = mosaic_partitions(&[(main.combined.rect, k, main.combined.values)])?;
    merged = grow(merged, rect);
    for (r, values) in targets {
        paste_missing(&mut merged, r, &values);
    }
    Ok(merged)
}

/// `c` on the larger rectangle `rect` (NaN where it had no pixel).
fn grow(c: Combined, rect: Rect) -> Combined {
    if c.rect == rect {
        return c;
    }
    let (w, h) = (rect.width(), rect.height());
    let mut values = vec![f32::NAN; c.k * w * h];
    let (cw, ch) = (c.rect.width(), c.rect.height());
    let (dx, dy) = (
        (c.rect.x0 - rect.x0) as usize,
        (c.rect.y0 - rect.y0) as usize,
    );
    for b in 0..c.k {
        for y in 0..ch {
            let src = b * cw * ch + y * cw;
            let dst = b * w * h + (y + dy) * w + dx;
            values[dst..dst + cw].copy_from_slice(&c.values[src..src + cw]);
        }
    }
    Combined {
        rect,
        k: c.k,
        values,
    }
}

/// Pastes `(K, r)` values into `c` where `c` has no data (its first plane is NaN) and they have.
fn paste_missing(c: &mut Combined, r: Rect, values: &[f32]) {
    let (w, h) = (c.rect.width(), c.rect.height());
    let (rw, rh) = (r.width(), r.height());
    for y in 0..rh {
        let gy = r.y0 + y as i64;
        if gy < c.rect.y0 || gy >= c.rect.y1 {
            continue;
        }
        for x in 0..rw {
            let gx = r.x0 + x as i64;
            if gx < c.rect.x0 || gx >= c.rect.x1 {
                continue;
            }
            let p = (gy - c.rect.y0) as usize * w + (gx - c.rect.x0) as usize;
            let q = y * rw + x;
            if !c.values[p].is_nan() || values[q].is_nan() {
                continue;
            }
            for b in 0..c.k {
                c.values[b * w * h + p] = values[b * rw * rh + q];
            }
        }
    }
}

/// Class ids per pixel (`legend[argmax].id`, 255 where there is no data).
#[must_use]
pub fn class_raster(c: &Combined, legend: &[LegendClass]) -> Vec<u8> {
    argmax(&c.values, c.k)
        .into_iter()
        .map(|i| i.and_then(|i| legend.get(i)).map_or(NODATA_U8, |l| l.id))
        .collect()
}

/// Probability bands as `u8` (`round(p · 254)`, 255 where there is no data).
#[must_use]
pub fn probability_bands(c: &Combined) -> Vec<Vec<u8>> {
    let plane = c.rect.width() * c.rect.height();
    (0..c.k)
        .map(|k| {
            c.values[k * plane..(k + 1) * plane]
                .iter()
                .map(|&p| {
                    if p.is_nan() {
                        NODATA_U8
                    } else {
                        (p.clamp(0.0, 1.0) * PROBABILITY_SCALE).round() as u8
                    }
                })
                .collect()
        })
        .collect()
}

/// The project's legend from its `classes` JSON.
pub fn legend_of(project: &projects::Project) -> anyhow::Result<Vec<LegendClass>> {
    Ok(project
        .classes
        .iter()
        .map(|c| LegendClass {
            id: c.id,
            name: c.name.clone(),
            color: c.color.clone(),
        })
        .collect())
}

/// The legend in the model's output order: output `i` is class `class_ids[i]`; without class ids the
/// outputs follow the project's classes in order.
pub fn legend_for_outputs(
    legend: &[LegendClass],
    class_ids: Option<&[i32]>,
) -> anyhow::Result<Vec<LegendClass>> {
    let Some(ids) = class_ids else {
        return Ok(legend.to_vec());
    };
    ids.iter()
        .map(|&id| {
            legend
                .iter()
                .find(|l| i32::from(l.id) == id)
                .cloned()
                .with_context(|| {
                    format!("the model predicts class {id}, which the project does not have")
                })
        })
        .collect()
}

/// The `combine` kind.
#[derive(Debug, Clone, Copy)]
pub struct Combine;

impl Step for Combine {
    type Args = CombineArgs;

    fn run(
        &self,
        ctx: StepContext,
        _args: CombineArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let objects = ctx.objects(StepKind::Combine)?;
            let project = ctx.project().await?;
            let run = jobs::get_run(&ctx.pool, project.org_id, ctx.run_id)
                .await
                .map_err(|e| StepError::Retryable(e.into()))?;
            let parts: Vec<PartOutput> = run
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Predict && s.state == StepState::Succeeded)
                .filter_map(|s| s.output.clone())
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(permanent)?;
            if parts.is_empty() {
                return Err(permanent(anyhow::anyhow!(
                    "the run has no finished predict step to combine"
                )));
            }
            let mut per_zone: BTreeMap<u32, usize> = BTreeMap::new();
            for p in &parts {
                *per_zone.entry(p.epsg).or_default() += p.windows;
            }
            let epsg = per_zone
                .iter()
                .max_by_key(|(e, n)| (**n, std::cmp::Reverse(**e)))
                .map(|(e, _)| *e)
                .unwrap_or_default();
            let reprojected: Vec<u32> = per_zone.keys().copied().filter(|e| *e != epsg).collect();
            let mine: Vec<&PartOutput> = parts.iter().collect();
            if mine.iter().any(|p| p.outputs != mine[0].outputs) {
                return Err(permanent(anyhow::anyhow!(
                    "the partitions predicted different numbers of outputs"
                )));
            }
            let regression = mine.iter().any(|p| p.regression);
            let k = mine.first().map_or(0, |p| p.outputs);
            let resolution = mine.first().map_or(10.0, |p| p.resolution);
            let legend = legend_for_outputs(
                &legend_of(&project).map_err(permanent)?,
                mine.first().and_then(|p| p.class_ids.as_deref()),
            )
            .map_err(permanent)?;
            if !regression && legend.len() != k {
                return Err(permanent(anyhow::anyhow!(
                    "the model predicts {k} classes but the project has {}",
                    legend.len()
                )));
            }
            ctx.progress.set(0.1, "reading partitions");
            let mut decoded = Vec::with_capacity(mine.len());
            for p in &mine {
                let path = object_store::path::Path::from(p.key.as_str());
                let bytes = async { objects.get(&path).await?.bytes().await }
                    .await
                    .with_context(|| format!("reading {}", p.key))?;
                let (rect, pk, values, _) =
                    super::predict::decode_partition(&bytes).map_err(permanent)?;
                decoded.push((p.epsg, (rect, pk, values)));
            }
            ctx.progress.set(0.4, "writing COGs");
            let legend2 = legend.clone();
            let dir = tempfile::tempdir().map_err(|e| StepError::Retryable(e.into()))?;
            let dir_path = dir.path().to_path_buf();
            let (files, geotransform, size, stats) =
                tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let mut zones: BTreeMap<u32, Vec<(Rect, usize, Vec<f32>)>> = BTreeMap::new();
                    for (e, part) in decoded {
                        zones.entry(e).or_default().push(part);
                    }
                    let main_parts = zones
                        .remove(&epsg)
                        .context("no partition in the main zone")?;
                    let main = ZoneMosaic {
                        epsg,
                        combined: mosaic_partitions(&main_parts)?,
                    };
                    drop(main_parts);
                    let others = zones
                        .into_iter()
                        .map(|(e, parts)| {
                            Ok(ZoneMosaic {
                                epsg: e,
                                combined: mosaic_partitions(&parts)?,
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let c = merge_zones(main, &others, resolution)?;
                    let (w, h) = (c.rect.width(), c.rect.height());
                    let gt = c.rect.geotransform(resolution);
                    let mut files = Vec::new();
                    let mut stats = json!({});
                    if regression {
                        let plane = w * h;
                        let bands: Vec<Vec<f32>> = (0..c.k)
                            .map(|b| c.values[b * plane..(b + 1) * plane].to_vec())
                            .collect();
                        let finite = c.values.iter().copied().filter(|v| v.is_finite());
                        let (lo, hi) = finite
                            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
                                (a.min(v), b.max(v))
                            });
                        if lo.is_finite() {
                            stats = json!({"min": lo, "max": hi});
                        }
                        let path = dir_path.join("value.tif");
                        write_f32_cog(&path, &bands, w, h, gt, epsg)?;
                        files.push(("value", path, c.k));
                    } else {
                        let classes = class_raster(&c, &legend2);
                        let path = dir_path.join("class.tif");
                        write_class_cog(&path, &classes, w, h, gt, epsg, &legend2)?;
                        files.push(("class", path, 1));
                        let probs = probability_bands(&c);
                        let path = dir_path.join("probability.tif");
                        write_u8_cog(&path, &probs, w, h, gt, epsg)?;
                        files.push(("probability", path, c.k));
                    }
                    Ok((files, gt, [w, h], stats))
                })
                .await
                .map_err(|e| StepError::Retryable(e.into()))?
                .map_err(permanent)?;
            let mut rasters = Vec::new();
            let folder = ctx
                .keys()
                .claim(ctx.run_id, StepKind::Combine, ctx.step_id, ctx.claim_id);
            for (kind, path, bands) in files {
                let key = format!("{folder}/{kind}.tif");
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| StepError::Retryable(e.into()))?;
                objects
                    .put(&object_store::path::Path::from(key.as_str()), bytes.into())
                    .await
                    .map_err(|e| StepError::Retryable(e.into()))?;
                rasters.push(CombinedRaster {
                    kind: kind.into(),
                    key,
                    bands,
                });
            }
            drop(dir);
            let scenes: BTreeSet<&String> = mine.iter().flat_map(|p| p.scenes.iter()).collect();
            let windows: usize = mine.iter().map(|p| p.windows).sum();
            ctx.progress.set(1.0, "written");
            Ok(StepOutput {
                output: json!({
                    "epsg": epsg, "width": size[0], "height": size[1], "geotransform": geotransform,
                    "resolution": resolution, "outputs": rasters, "classes": legend, "stats": stats,
                    "regression": regression, "windows": windows, "partitions": mine.len(),
                    "scenes": scenes, "model": mine.first().map(|p| p.model.clone()),
                    "reprojected_zones": reprojected,
                }),
                artifacts: Vec::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zone's mosaic over its windows, with probabilities that follow longitude: plane 0 rises
    /// from 0 at `lon0` to 1 at `lon1`, plane 1 is its complement; NaN outside the windows.
    fn zone_mosaic(
        epsg: u32,
        windows: &[&groundwork_imagery::WindowSpec],
        (lon0, lon1): (f64, f64),
    ) -> ZoneMosaic {
        use groundwork_imagery::stitch::Cell;
        let size = windows[0].size as usize;
        let cells: Vec<Cell> = windows
            .iter()
            .map(|w| Cell {
                column: w.column,
                row: w.row,
            })
            .collect();
        let rect = Rect::around(&cells, size, 0).expect("windows");
        let (w, h) = (rect.width(), rect.height());
        let mut centres = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let gx = rect.x0 + x as i64;
                let gy = rect.y0 + y as i64;
                centres.push(((gx as f64 + 0.5) * 10.0, -(gy as f64 + 0.5) * 10.0));
            }
        }
        let lonlat = groundwork_imagery::grid::to_lonlat(epsg, &centres).expect("projected");
        let mut values = vec![f32::NAN; 2 * w * h];
        for (p, (lon, _)) in lonlat.iter().enumerate() {
            let (gx, gy) = (rect.x0 + (p % w) as i64, rect.y0 + (p / w) as i64);
            let inside = cells.iter().any(|c| {
                let (ox, oy) = c.origin(size);
                gx >= ox && gx < ox + size as i64 && gy >= oy && gy < oy + size as i64
            });
            if inside {
                let f = ((lon - lon0) / (lon1 - lon0)) as f32;
                values[p] = f;
                values[w * h + p] = 1.0 - f;
            }
        }
        ZoneMosaic {
            epsg,
            combined: Combined { rect, k: 2, values },
        }
    }

    #[test]
    fn a_map_across_a_zone_boundary_is_seamless_and_follows_the_ground() -> anyhow::Result<()> {
        // An AOI across 12°E (zones 32 and 33), mostly east of it.
        let (west, east, south, north) = (11.985, 12.03, 45.0, 45.01);
        let aoi = geojson::Geometry::new_polygon(vec![vec![
            vec![west, south],
            vec![east, south],
            vec![east, north],
            vec![west, north],
            vec![west, south],
        ]]);
        let ws = groundwork_imagery::windows_for_aoi(&aoi, &Default::default())?;
        let of = |e: u32| ws.iter().filter(|w| w.epsg == e).collect::<Vec<_>>();
        let (zone32, zone33) = (of(32632), of(32633));
        assert!(!zone32.is_empty() && zone33.len() > zone32.len());
        let main = zone_mosaic(32633, &zone33, (west, east));
        let other = zone_mosaic(32632, &zone32, (west, east));
        let merged = merge_zones(main, &[other], 10.0)?;
        // Every pixel of the AOI (but a 20 m rim) holds a value, on both sides of the boundary,
        // and it is the value of its place on the ground.
        let (w, h) = (merged.rect.width(), merged.rect.height());
        let mut centres = Vec::with_capacity(w * h);
        for p in 0..w * h {
            let (gx, gy) = (
                merged.rect.x0 + (p % w) as i64,
                merged.rect.y0 + (p / w) as i64,
            );
            centres.push(((gx as f64 + 0.5) * 10.0, -(gy as f64 + 0.5) * 10.0));
        }
        let lonlat = groundwork_imagery::grid::to_lonlat(32633, &centres)?;
        let (mut checked, mut west_of_boundary) = (0, 0);
        for (p, (lon, lat)) in lonlat.iter().enumerate() {
            let rim = 0.0003;
            if *lon < west + rim || *lon > east - rim || *lat < south + rim || *lat > north - rim {
                continue;
            }
            let v = merged.values[p];
            assert!(!v.is_nan(), "no value at ({lon}, {lat})");
            let expected = ((lon - west) / (east - west)) as f32;
            assert!(
                (v - expected).abs() < 0.01,
                "({lon}, {lat}): {v} instead of {expected}"
            );
            assert!((merged.values[w * h + p] + v - 1.0).abs() < 1e-3);
            checked += 1;
            if *lon < 12.0 {
                west_of_boundary += 1;
            }
        }
        assert!(
            checked > 10_000 && west_of_boundary > 1_000,
            "{checked} {west_of_boundary}"
        );
        Ok(())
    }

    fn class(id: u8, name: &str) -> LegendClass {
        LegendClass {
            id,
            name: name.into(),
            color: "#000000".into(),
        }
    }

    #[test]
    fn a_trained_models_outputs_are_named_by_its_class_ids() -> anyhow::Result<()> {
        let legend = vec![class(1, "water"), class(2, "forest"), class(5, "crops")];
        // Without class ids the outputs follow the project's classes.
        assert_eq!(legend_for_outputs(&legend, None)?, legend);
        // A model trained on labels that used classes 5 and 1 (in that output order).
        let out = legend_for_outputs(&legend, Some(&[5, 1]))?;
        assert_eq!(out, vec![class(5, "crops"), class(1, "water")]);
        let c = Combined {
            rect: Rect {
                x0: 0,
                y0: 0,
                x1: 2,
                y1: 1,
            },
            k: 2,
            // pixel 0 → output 0 (class 5), pixel 1 → output 1 (class 1)
            values: vec![0.9, 0.2, 0.1, 0.8],
        };
        assert_eq!(class_raster(&c, &out), vec![5, 1]);
        // A class the project does not have is an error that names it.
        let err = legend_for_outputs(&legend, Some(&[1, 9])).unwrap_err();
        assert!(err.to_string().contains("class 9"), "{err}");
        Ok(())
    }
}
