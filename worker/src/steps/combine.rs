//! `combine`: the fan-in of a prediction run. It pastes every partition's core into one mosaic in the
//! UTM zone of most windows and writes COGs in that CRS: the class map (`u8` class ids, 255 nodata,
//! a colour table from the project's classes) and the per-class probabilities (`u8`, `p · 254`, 255
//! nodata), or the values (`f32`, NaN nodata) for regression.
//!
//! An AOI that straddles a zone boundary is predicted zone by zone (each window in its own zone's
//! CRS, as its imagery was read). The other zones' mosaics are reprojected onto the main zone's grid
//! (bilinear on the probabilities or values; classes are taken after) and fill every pixel the main
//! zone's windows do not reach, so the map is one seamless raster (`reprojected_zones` in the output).
//! Each zone's own map (its windows on its own grid, nothing resampled) is written too, for download
//! (`zones` in the output; `publish` keeps them in the output's `stats.zones`).

use super::permanent;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use futures::future::BoxFuture;
use groundwork_imagery::mosaic::DiskMosaic;
use groundwork_imagery::publish::LegendClass;
use groundwork_imagery::stitch::Rect;
use groundwork_store::projects;
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

/// One zone's own map of an area across zones (its windows, on its own grid), for download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneRaster {
    /// EPSG code of the zone.
    pub epsg: u32,
    /// `class | value`.
    pub kind: String,
    /// Object key of its COG.
    pub key: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// A mosaic read into memory: `K` planes over a rectangle (small areas: tests and inspection).
#[derive(Debug, Clone)]
pub struct Combined {
    /// The rectangle (global pixel coordinates).
    pub rect: Rect,
    /// Outputs per pixel.
    pub k: usize,
    /// `(K, H, W)`, NaN where no partition holds data.
    pub values: Vec<f32>,
}

/// Loads partition `i`: `(rect, K, weighted sums (K + 1, H, W))`.
pub type LoadPart<'a> = dyn Fn(usize) -> anyhow::Result<(Rect, usize, Vec<f32>)> + 'a;

/// Mosaics a run's partitions on disk in `dir`, in bounded memory (one partition at a time), on the
/// grid of zone `main`. `parts[i]` is partition `i`'s zone and rectangle; `load(i)` reads its
/// weighted sums (`K + 1` planes). The main zone's partitions are added up and blended on its grid;
/// every other zone is mosaicked on its own grid,
/// reprojected onto the main grid (bilinear on probabilities or values) and fills the pixels the
/// main zone's windows do not reach. The mosaic's rectangle holds them all.
pub fn mosaic_on_disk(
    dir: &std::path::Path,
    parts: &[(u32, Rect)],
    k: usize,
    main: u32,
    resolution: f64,
    load: &LoadPart<'_>,
) -> anyhow::Result<DiskMosaic> {
    mosaic_on_disk_by_zone(dir, parts, k, main, resolution, load, &mut |_| Ok(()))
}

/// [`mosaic_on_disk`], handing each zone's own mosaic (its windows only, on its own grid, nothing
/// resampled) to `on_zone` before the zones are merged, when the partitions span more than one zone.
pub fn mosaic_on_disk_by_zone(
    dir: &std::path::Path,
    parts: &[(u32, Rect)],
    k: usize,
    main: u32,
    resolution: f64,
    load: &LoadPart<'_>,
    on_zone: &mut dyn FnMut(&DiskMosaic) -> anyhow::Result<()>,
) -> anyhow::Result<DiskMosaic> {
    let union = |rects: &mut dyn Iterator<Item = Rect>| {
        rects.reduce(|a, b| Rect {
            x0: a.x0.min(b.x0),
            y0: a.y0.min(b.y0),
            x1: a.x1.max(b.x1),
            y1: a.y1.max(b.y1),
        })
    };
    let zones: BTreeSet<u32> = parts.iter().map(|(e, _)| *e).collect();
    // A zone's partitions add their weighted sums into one mosaic of sums (the tiles each computed
    // once), which is then divided into `m`.
    let paste_zone = |m: &mut DiskMosaic, zone: u32| -> anyhow::Result<()> {
        let rect = union(&mut parts.iter().filter(|(e, _)| *e == zone).map(|(_, r)| *r))
            .context("a zone without partitions")?;
        let mut sums = DiskMosaic::create(
            &dir.join(format!("sums-{zone}.tif")),
            rect,
            k + 1,
            resolution,
            zone,
        )?;
        for (i, _) in parts.iter().enumerate().filter(|(_, (e, _))| *e == zone) {
            let (r, pk, values) = load(i)?;
            anyhow::ensure!(pk == k, "partitions have different numbers of outputs");
            sums.add(r, &values)?;
        }
        sums.blend_into(m)?;
        let path = sums.path.clone();
        drop(sums);
        let _ = std::fs::remove_file(path);
        Ok(())
    };
    let mut others = Vec::new();
    // Across zones, each zone is first mosaicked on its own grid (for `on_zone`; the other zones
    // are then resampled into the main one).
    let across = zones.len() > 1;
    for &zone in zones.iter().filter(|_| across) {
        let rect = union(&mut parts.iter().filter(|(e, _)| *e == zone).map(|(_, r)| *r))
            .context("a zone without partitions")?;
        let mut m = DiskMosaic::create(
            &dir.join(format!("zone-{zone}.tif")),
            rect,
            k,
            resolution,
            zone,
        )?;
        paste_zone(&mut m, zone)?;
        on_zone(&m)?;
        if zone == main {
            // The main zone's own map was only for `on_zone`: the merged mosaic holds it.
            let path = m.path.clone();
            drop(m);
            let _ = std::fs::remove_file(path);
        } else {
            others.push(m);
        }
    }
    let mut rect = union(&mut parts.iter().filter(|(e, _)| *e == main).map(|(_, r)| *r))
        .context("no partition in the main zone")?;
    for o in &others {
        let b = o.bounds_in(main)?;
        // Global pixel coordinates of the main grid: x = easting / res, y = −northing / res.
        rect.x0 = rect.x0.min((b[0] / resolution).floor() as i64);
        rect.y0 = rect.y0.min((-b[3] / resolution).floor() as i64);
        rect.x1 = rect.x1.max((b[2] / resolution).ceil() as i64);
        rect.y1 = rect.y1.max((-b[1] / resolution).ceil() as i64);
    }
    let mut mosaic = DiskMosaic::create(&dir.join("mosaic.tif"), rect, k, resolution, main)?;
    paste_zone(&mut mosaic, main)?;
    for o in &others {
        mosaic.fill_from(o, &dir.join(format!("zone-{}-warped.tif", o.epsg)))?;
    }
    for o in others {
        let path = o.path.clone();
        drop(o);
        let _ = std::fs::remove_file(path);
    }
    Ok(mosaic)
}

/// Streams an object into a file.
pub(crate) async fn download(
    objects: &dyn object_store::ObjectStore,
    key: &str,
    file: &std::path::Path,
) -> Result<(), StepError> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let path = object_store::path::Path::from(key);
    let mut stream = objects
        .get(&path)
        .await
        .with_context(|| format!("reading {key}"))
        .map_err(StepError::Retryable)?
        .into_stream();
    let mut f = tokio::fs::File::create(file)
        .await
        .map_err(|e| StepError::Retryable(e.into()))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .with_context(|| format!("reading {key}"))
            .map_err(StepError::Retryable)?;
        f.write_all(&chunk)
            .await
            .map_err(|e| StepError::Retryable(e.into()))?;
    }
    f.flush()
        .await
        .map_err(|e| StepError::Retryable(e.into()))?;
    Ok(())
}

/// Streams a file into an object, in parts.
pub(crate) async fn upload(
    objects: &dyn object_store::ObjectStore,
    file: &std::path::Path,
    key: &str,
) -> Result<(), StepError> {
    use tokio::io::AsyncReadExt;
    /// The size of each part (object stores take parts of 5 MiB or more).
    const PART: usize = 8 << 20;
    let path = object_store::path::Path::from(key);
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| StepError::Retryable(e.into()))?;
    let mut upload = objects
        .put_multipart(&path)
        .await
        .map_err(|e| StepError::Retryable(e.into()))?;
    let result: anyhow::Result<()> = async {
        loop {
            let mut buf = Vec::with_capacity(PART);
            (&mut f).take(PART as u64).read_to_end(&mut buf).await?;
            if buf.is_empty() {
                break;
            }
            upload.put_part(buf.into()).await?;
        }
        upload.complete().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = upload.abort().await;
        return Err(StepError::Retryable(e.context(format!("writing {key}"))));
    }
    Ok(())
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
            let steps = ctx.run_steps().await?;
            let parts: Vec<PartOutput> = steps
                .iter()
                .filter(|s| s.kind == StepKind::Predict && s.state == StepState::Succeeded)
                .filter_map(|s| s.output.clone())
                // A monitoring run's partition whose windows all came out empty mapped nothing.
                .filter(|o| o.get("key").is_some_and(Value::is_string))
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(permanent)?;
            if parts.is_empty() {
                return Err(permanent(anyhow::anyhow!(
                    "the run has no finished predict step with a map to combine"
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
            // Each partition goes to a file (streamed), and is read from it one at a time.
            let dir = tempfile::tempdir().map_err(|e| StepError::Retryable(e.into()))?;
            let dir_path = dir.path().to_path_buf();
            let mut files = Vec::with_capacity(mine.len());
            let mut placed = Vec::with_capacity(mine.len());
            for (i, p) in mine.iter().enumerate() {
                let file = dir_path.join(format!("part-{i}.safetensors"));
                download(objects.as_ref(), &p.key, &file).await?;
                let (file2, epsg2) = (file.clone(), p.epsg);
                let rect = tokio::task::spawn_blocking(move || -> anyhow::Result<Rect> {
                    let bytes = std::fs::read(&file2)?;
                    let (rect, pk, _) = super::predict::decode_partition(&bytes)?;
                    anyhow::ensure!(
                        pk == k,
                        "partition of EPSG:{epsg2} has {pk} outputs, not {k}"
                    );
                    Ok(rect)
                })
                .await
                .map_err(|e| StepError::Retryable(e.into()))?
                .map_err(permanent)?;
                placed.push((p.epsg, rect));
                files.push(file);
            }
            ctx.progress.set(0.4, "writing COGs");
            let legend2 = legend.clone();
            let (files, geotransform, size, stats, zone_files) =
                tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let load = |i: usize| -> anyhow::Result<(Rect, usize, Vec<f32>)> {
                        let bytes = std::fs::read(&files[i])?;
                        super::predict::decode_partition(&bytes)
                    };
                    // An area across zones: each zone's map in its own CRS too, for download.
                    let mut zone_files = Vec::new();
                    let mut on_zone = |z: &DiskMosaic| -> anyhow::Result<()> {
                        let (w, h) = (z.rect.width(), z.rect.height());
                        let folder = dir_path.join(format!("zone-{}", z.epsg));
                        std::fs::create_dir_all(&folder)?;
                        if regression {
                            let path = folder.join("value.tif");
                            z.write_value_cog(&path)?;
                            zone_files.push((z.epsg, "value", path, [w, h]));
                        } else {
                            let (class, probability) =
                                (folder.join("class.tif"), folder.join("probability.tif"));
                            z.write_class_cogs(&legend2, &class, &probability)?;
                            let _ = std::fs::remove_file(&probability);
                            zone_files.push((z.epsg, "class", class, [w, h]));
                        }
                        Ok(())
                    };
                    let m = mosaic_on_disk_by_zone(
                        &dir_path,
                        &placed,
                        k,
                        epsg,
                        resolution,
                        &load,
                        &mut on_zone,
                    )?;
                    for f in &files {
                        let _ = std::fs::remove_file(f);
                    }
                    let (w, h) = (m.rect.width(), m.rect.height());
                    let gt = m.rect.geotransform(resolution);
                    let mut out = Vec::new();
                    let mut stats = json!({});
                    if regression {
                        let path = dir_path.join("value.tif");
                        if let Some((lo, hi)) = m.write_value_cog(&path)? {
                            stats = json!({"min": lo, "max": hi});
                        }
                        out.push(("value", path, m.k));
                    } else {
                        let class = dir_path.join("class.tif");
                        let probability = dir_path.join("probability.tif");
                        m.write_class_cogs(&legend2, &class, &probability)?;
                        out.push(("class", class, 1));
                        out.push(("probability", probability, m.k));
                    }
                    let path = m.path.clone();
                    drop(m);
                    let _ = std::fs::remove_file(path);
                    Ok((out, gt, [w, h], stats, zone_files))
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
                upload(objects.as_ref(), &path, &key).await?;
                rasters.push(CombinedRaster {
                    kind: kind.into(),
                    key,
                    bands,
                });
            }
            let mut zones = Vec::new();
            for (zone, kind, path, [w, h]) in zone_files {
                let key = format!("{folder}/zones/{zone}/{kind}.tif");
                upload(objects.as_ref(), &path, &key).await?;
                zones.push(ZoneRaster {
                    epsg: zone,
                    kind: kind.into(),
                    key,
                    width: w,
                    height: h,
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
                    "reprojected_zones": reprojected, "zones": zones,
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
    ) -> (u32, Combined) {
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
        (epsg, Combined { rect, k: 2, values })
    }

    /// Blended values as the weighted sums a partition writes: weight 1 where there is data.
    fn as_sums(c: &Combined) -> Vec<f32> {
        let plane = c.rect.width() * c.rect.height();
        let mut sums: Vec<f32> = c
            .values
            .iter()
            .map(|v| if v.is_nan() { 0.0 } else { *v })
            .collect();
        sums.extend((0..plane).map(|p| if c.values[p].is_nan() { 0.0 } else { 1.0 }));
        sums
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
        // One partition per zone, the smaller zone first.
        let zones = [
            zone_mosaic(32632, &zone32, (west, east)),
            zone_mosaic(32633, &zone33, (west, east)),
        ];
        let placed: Vec<(u32, Rect)> = zones.iter().map(|(e, c)| (*e, c.rect)).collect();
        let load = |i: usize| -> anyhow::Result<(Rect, usize, Vec<f32>)> {
            let c = &zones[i].1;
            Ok((c.rect, c.k, as_sums(c)))
        };
        let dir = tempfile::tempdir()?;
        // Each zone's own map as well, on its own grid, before the merge.
        let mut own: Vec<(u32, Combined)> = Vec::new();
        let m = mosaic_on_disk_by_zone(dir.path(), &placed, 2, 32633, 10.0, &load, &mut |z| {
            own.push((
                z.epsg,
                Combined {
                    rect: z.rect,
                    k: 2,
                    values: z.rows(0, z.rect.height())?,
                },
            ));
            Ok(())
        })?;
        assert_eq!(
            own.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            [32632, 32633]
        );
        for ((epsg, got), (_, want)) in own.iter().zip(&zones) {
            // Exactly the zone's partition: same grid, same values, nothing of the other zone.
            assert_eq!(got.rect, want.rect, "EPSG:{epsg}");
            assert!(
                got.values
                    .iter()
                    .zip(&want.values)
                    .all(|(a, b)| (a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-4),
                "EPSG:{epsg}"
            );
        }
        let merged = Combined {
            rect: m.rect,
            k: 2,
            values: m.rows(0, m.rect.height())?,
        };
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
        assert_eq!(
            groundwork_imagery::mosaic::class_ids(&c.values, c.k, &out),
            vec![5, 1]
        );
        // A class the project does not have is an error that names it.
        let err = legend_for_outputs(&legend, Some(&[1, 9])).unwrap_err();
        assert!(err.to_string().contains("class 9"), "{err}");
        Ok(())
    }
}
