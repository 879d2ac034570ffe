//! `combine`: the fan-in of a prediction run. It pastes every partition's core into one mosaic in the
//! UTM zone of most windows and writes COGs in that CRS: the class map (`u8` class ids, 255 nodata,
//! a colour table from the project's classes) and the per-class probabilities (`u8`, `p · 254`, 255
//! nodata), or the values (`f32`, NaN nodata) for regression.
//!
//! Partitions in other UTM zones are not reprojected into the main zone: they are left out of the
//! mosaic and reported in the step output (`skipped_zones`), so an AOI that straddles a zone border
//! yields a map of its larger part.

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
            let skipped: Vec<u32> = per_zone.keys().copied().filter(|e| *e != epsg).collect();
            let mine: Vec<&PartOutput> = parts.iter().filter(|p| p.epsg == epsg).collect();
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
                decoded.push((rect, pk, values));
            }
            ctx.progress.set(0.4, "writing COGs");
            let legend2 = legend.clone();
            let dir = tempfile::tempdir().map_err(|e| StepError::Retryable(e.into()))?;
            let dir_path = dir.path().to_path_buf();
            let (files, geotransform, size, stats) =
                tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let c = mosaic_partitions(&decoded)?;
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
                    "skipped_zones": skipped,
                }),
                artifacts: Vec::new(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
