//! `publish`: every COG `combine` wrote is warped to a web-mercator `GoogleMapsCompatible` COG (256²
//! tiles aligned with z/x/y, one overview per zoom) and recorded in the `output` table with its bounds,
//! zoom range, legend and lineage (model, checkpoint hash, input scenes, plus whatever the run was
//! given: label-set version, metrics, training run).

use super::combine::CombinedRaster;
use super::permanent;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use futures::future::BoxFuture;
use groundwork_imagery::footprint::data_footprint;
use groundwork_imagery::publish::warp_to_web_mercator;
use groundwork_store::outputs::NewOutput;
use groundwork_types::StepState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Arguments of `publish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishArgs {
    /// Extra lineage (label-set version, metrics, training run, …), merged into the output's.
    #[serde(default)]
    pub lineage: Value,
}

impl StepArgs for PublishArgs {
    const KIND: StepKind = StepKind::Publish;
}

#[derive(Debug, Deserialize)]
struct CombineOutput {
    epsg: u32,
    width: usize,
    height: usize,
    outputs: Vec<CombinedRaster>,
    classes: Value,
    #[serde(default)]
    stats: Value,
    #[serde(default)]
    windows: usize,
    #[serde(default)]
    scenes: Vec<String>,
    #[serde(default)]
    model: Value,
    #[serde(default)]
    resolution: f64,
    #[serde(default)]
    zones: Vec<super::combine::ZoneRaster>,
}

/// Hectares mapped per class of a class raster, keyed by the class's raster id.
fn class_areas_ha(
    path: &std::path::Path,
) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
    let counts = groundwork_imagery::assessment::count_classes(path)?;
    Ok(counts
        .pixels
        .iter()
        .map(|(class, &n)| {
            (
                class.to_string(),
                n as f64 * counts.pixel_area_m2 / 10_000.0,
            )
        })
        .collect())
}

/// The `publish` kind.
#[derive(Debug, Clone, Copy)]
pub struct Publish;

impl Step for Publish {
    type Args = PublishArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: PublishArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let objects = ctx.objects(StepKind::Publish)?;
            let project = ctx.project().await?;
            let steps = ctx.run_steps().await?;
            let combined: CombineOutput = steps
                .iter()
                .find(|s| s.kind == StepKind::Combine && s.state == StepState::Succeeded)
                .and_then(|s| s.output.clone())
                .context("the run has no finished combine step")
                .and_then(|v| serde_json::from_value(v).context("the combine step's output"))
                .map_err(permanent)?;
            let mut lineage = json!({
                "model": combined.model,
                "input_scenes": combined.scenes,
                "windows": combined.windows,
                "resolution_m": combined.resolution,
                "project": {"id": project.id, "task": project.task, "model_size": project.model_size,
                            "patch_size": project.patch_size, "window_size": project.window_size,
                            "modalities": project.modalities, "start": project.start, "end": project.end},
            });
            if let (Some(l), Value::Object(extra)) = (lineage.as_object_mut(), &args.lineage) {
                for (k, v) in extra {
                    l.insert(k.clone(), v.clone());
                }
            }
            let dir = tempfile::tempdir().map_err(|e| StepError::Retryable(e.into()))?;
            let mut rows = Vec::new();
            for (i, raster) in combined.outputs.iter().enumerate() {
                ctx.progress.set(
                    i as f32 / combined.outputs.len().max(1) as f32,
                    format!("warping the {} raster", raster.kind),
                );
                let src = dir.path().join(format!("{}-utm.tif", raster.kind));
                let dst = dir.path().join(format!("{}-3857.tif", raster.kind));
                super::combine::download(objects.as_ref(), &raster.key, &src).await?;
                let categorical = raster.kind == "class";
                let (src2, dst2) = (src.clone(), dst.clone());
                let (info, footprint, areas) = tokio::task::spawn_blocking(move || {
                    let info = warp_to_web_mercator(&src2, &dst2, categorical)?;
                    let footprint = data_footprint(&src2)?;
                    let areas = if categorical {
                        Some(class_areas_ha(&src2)?)
                    } else {
                        None
                    };
                    anyhow::Ok((info, footprint, areas))
                })
                .await
                .map_err(|e| StepError::Retryable(e.into()))?
                .map_err(permanent)?;
                let Some(footprint) = footprint else {
                    return Err(permanent(anyhow::anyhow!(
                        "the {} raster has no valid pixel: nothing to publish",
                        raster.kind
                    )));
                };
                let mut stats = match &combined.stats {
                    Value::Object(m) => m.clone(),
                    _ => serde_json::Map::new(),
                };
                if let Some(areas) = areas {
                    stats.insert("areas_ha".into(), json!(areas));
                }
                // An area across zones: each zone's own map in its own CRS, for download.
                let zones: Vec<Value> = combined
                    .zones
                    .iter()
                    .filter(|z| z.kind == raster.kind)
                    .map(|z| json!({"epsg": z.epsg, "key": z.key, "width": z.width, "height": z.height}))
                    .collect();
                if !zones.is_empty() {
                    stats.insert("zones".into(), Value::Array(zones));
                }
                let stats = Value::Object(stats);
                let web_key = format!(
                    "{}/{}-3857.tif",
                    ctx.keys()
                        .claim(ctx.run_id, StepKind::Publish, ctx.step_id, ctx.claim_id),
                    raster.kind
                );
                super::combine::upload(objects.as_ref(), &dst, &web_key).await?;
                rows.push(NewOutput {
                    org_id: project.org_id,
                    project_id: project.id,
                    run_id: ctx.run_id,
                    kind: raster.kind.clone(),
                    utm_key: raster.key.clone(),
                    web_key,
                    epsg: i32::try_from(combined.epsg).unwrap_or_default(),
                    width: i32::try_from(combined.width).unwrap_or_default(),
                    height: i32::try_from(combined.height).unwrap_or_default(),
                    bands: i32::try_from(raster.bands).unwrap_or_default(),
                    // The data's own outline and bounds, not the tile grid's extent.
                    bbox: footprint.bbox,
                    bounds_3857: info.bounds_3857,
                    min_zoom: i16::from(info.min_zoom),
                    max_zoom: i16::from(info.max_zoom),
                    classes: combined.classes.clone(),
                    stats,
                    lineage: lineage.clone(),
                    footprint: Some(footprint.geometry),
                });
            }
            // The output rows commit together, fenced by the claim: an execution that lost its lease
            // publishes nothing, and a reader never sees half of a run's outputs.
            let published = ctx.publish_outputs(rows).await?;
            ctx.progress.set(1.0, "published");
            Ok(StepOutput {
                output: json!({"outputs": published}),
                artifacts: Vec::new(),
            })
        })
    }
}
