//! `acquire`: a project's windows (planned on its AOI, stored in PostgreSQL) materialised from a STAC
//! catalogue into window tensors in the object store. A large AOI is split into partitions, one step
//! each, so every worker shares the work; `acquire_summary` (fan-in) checks the success threshold over
//! all of them.

use super::permanent;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use futures::future::BoxFuture;
use groundwork_imagery::{AcquireRequest, GridOptions, Profile, Source, WindowSpec, WindowStatus};
use groundwork_store::{projects, windows};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Arguments of `acquire`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireArgs {
    /// STAC API URL, or a static `catalog.json` path or URL.
    pub stac: String,
    /// `earth-search` (default), `planetary-computer`, or a custom profile.
    #[serde(default = "default_profile")]
    pub profile: Profile,
    /// Largest scene cloud cover accepted, percent.
    #[serde(default)]
    pub max_cloud: Option<f64>,
    /// This step's share: `[index, count]`; windows are dealt round-robin in id order.
    #[serde(default = "whole")]
    pub partition: [usize; 2],
    /// Fraction of windows that must succeed.
    #[serde(default = "default_threshold")]
    pub success_threshold: f64,
}

impl StepArgs for AcquireArgs {
    const KIND: StepKind = StepKind::Acquire;

    fn check(&self) -> Result<(), String> {
        let [index, count] = self.partition;
        if !(1..=256).contains(&count) || index >= count {
            return Err(
                "partition must be [index, count] with count 1–256 and index < count".into(),
            );
        }
        if self.max_cloud.is_some_and(|c| !(0.0..=100.0).contains(&c)) {
            return Err("max_cloud must be 0–100".into());
        }
        if !(0.0..=1.0).contains(&self.success_threshold) {
            return Err("success_threshold must be 0–1".into());
        }
        Ok(())
    }
}

fn default_profile() -> Profile {
    Profile::EarthSearch
}
fn whole() -> [usize; 2] {
    [0, 1]
}
fn default_threshold() -> f64 {
    0.95
}

/// Plans a project's windows (off the async runtime) and records them; returns them in id order.
pub async fn plan_windows(
    pool: &groundwork_store::PgPool,
    project: &projects::Project,
) -> anyhow::Result<Vec<WindowSpec>> {
    let aoi: geojson::Geometry = serde_json::from_value(project.aoi.clone())
        .context("the project's AOI is not a GeoJSON geometry")?;
    let opts = GridOptions {
        window_size: u32::try_from(project.window_size).unwrap_or(64),
        ..GridOptions::default()
    };
    // Cutting a large AOI is CPU work: off the async runtime.
    let mut specs = tokio::task::spawn_blocking(move || {
        groundwork_imagery::windows_for_aoi(&aoi, &opts).context("cutting the AOI into windows")
    })
    .await
    .context("cutting the AOI into windows")??;
    specs.sort_by(|a, b| a.id.cmp(&b.id));
    let rows: Vec<windows::NewWindow> = specs
        .iter()
        .map(|w| windows::NewWindow {
            id: w.id.clone(),
            epsg: i32::try_from(w.epsg).unwrap_or_default(),
            crs: w.crs.clone(),
            size: i32::try_from(w.size).unwrap_or_default(),
            resolution: w.resolution,
            column: w.column,
            row: w.row,
            geotransform: json!(w.geotransform),
            utm_bounds: json!(w.utm_bounds),
            bbox: w.wgs84_bounds,
            geometry: serde_json::to_value(&w.wgs84_polygon).unwrap_or_default(),
        })
        .collect();
    windows::upsert(pool, project.id, &rows).await?;
    let planned: Vec<String> = rows.into_iter().map(|w| w.id).collect();
    windows::retire_unplanned(pool, project.id, &planned).await?;
    Ok(specs)
}

/// The `acquire` kind.
#[derive(Debug, Clone, Copy)]
pub struct Acquire;

impl Step for Acquire {
    type Args = AcquireArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: AcquireArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let [index, count] = args.partition;
            if count == 0 || index >= count {
                return Err(permanent(anyhow::anyhow!(
                    "partition [{index}, {count}] is not a valid share"
                )));
            }
            let objects = ctx.objects(StepKind::Acquire)?;
            let project = ctx.project().await?;
            let modalities = project.modalities.clone();
            ctx.progress.set(0.0, "planning windows");
            let all = plan_windows(&ctx.pool, &project).await.map_err(permanent)?;
            let mine: Vec<WindowSpec> = all
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % count == index)
                .map(|(_, w)| w)
                .collect();
            // The catalogue the user named goes through the worker's policy before anything is
            // fetched or opened; a refusal is final.
            let source = Source::checked(&args.stac, &ctx.outbound)
                .map_err(|e| permanent(anyhow::anyhow!("catalogue {:?}: {e}", args.stac)))?;
            let mut req = AcquireRequest::new(source, modalities, project.start, project.end);
            req.profile = args.profile.clone();
            req.max_cloud = args.max_cloud;
            req.success_threshold = args.success_threshold;
            req.outbound = ctx.outbound.clone();
            // This acquisition's own folder: earlier imagery stays as it was.
            let prefix = object_store::path::Path::from(ctx.keys().acquisition(ctx.run_id));
            let progress = ctx.progress.clone();
            let report_progress = move |p: &groundwork_imagery::Progress<'_>| {
                #[expect(clippy::cast_precision_loss, reason = "a progress fraction")]
                let f = if p.total == 0 {
                    1.0
                } else {
                    p.done as f32 / p.total as f32
                };
                progress.set(
                    f,
                    format!("{} of {} windows: {}", p.done, p.total, p.message),
                );
            };
            let report = groundwork_imagery::acquire(
                &mine,
                &req,
                objects.as_ref(),
                &prefix,
                &report_progress,
                &ctx.cancel,
            )
            .await
            .map_err(|e| match e {
                groundwork_imagery::Error::Cancelled { .. } => StepError::Cancelled,
                other => StepError::Retryable(anyhow::anyhow!(other).context("acquiring imagery")),
            })?;
            let outcomes: Vec<windows::Outcome> = report
                .windows
                .iter()
                .map(|w| windows::Outcome {
                    id: w.window_id.clone(),
                    status: if w.status == WindowStatus::Succeeded {
                        "acquired"
                    } else {
                        "quarantined"
                    }
                    .into(),
                    reason: w.reason.clone(),
                    scenes: json!(w.scenes),
                    objects: w.objects.clone(),
                })
                .collect();
            // Fenced by the claim: an execution that lost its lease records nothing.
            let mut tx = ctx.fenced().await?;
            windows::record_outcomes(&mut *tx, project.id, ctx.step_id, &outcomes)
                .await
                .map_err(|e| StepError::Retryable(e.into()))?;
            tx.commit()
                .await
                .map_err(|e| StepError::Retryable(e.into()))?;
            let output = json!({
                "windows": report.total, "succeeded": report.succeeded, "quarantined": report.quarantined,
                "bytes_read": report.bytes_read, "scenes_found": report.scenes_found, "seconds": report.elapsed_s,
            });
            if count == 1 && !report.success {
                return Err(permanent(anyhow::anyhow!(
                    "only {} of {} windows were acquired (threshold {:.0} %); see the quarantined windows' reasons",
                    report.succeeded,
                    report.total,
                    args.success_threshold * 100.0
                )));
            }
            Ok(StepOutput {
                output,
                artifacts: Vec::new(),
            })
        })
    }
}

/// Arguments of `acquire_summary`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryArgs {
    /// Fraction of windows that must succeed.
    #[serde(default = "default_threshold")]
    pub success_threshold: f64,
}

impl StepArgs for SummaryArgs {
    const KIND: StepKind = StepKind::AcquireSummary;

    fn check(&self) -> Result<(), String> {
        if (0.0..=1.0).contains(&self.success_threshold) {
            Ok(())
        } else {
            Err("success_threshold must be 0–1".into())
        }
    }
}

/// The `acquire_summary` kind: the fan-in of partitioned acquisition.
#[derive(Debug, Clone, Copy)]
pub struct AcquireSummary;

impl Step for AcquireSummary {
    type Args = SummaryArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: SummaryArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let c = windows::counts(&ctx.pool, ctx.project_id)
                .await
                .map_err(|e| StepError::Retryable(e.into()))?;
            #[expect(clippy::cast_precision_loss, reason = "a fraction")]
            let fraction = if c.total == 0 {
                0.0
            } else {
                c.acquired as f64 / c.total as f64
            };
            let output = json!({"windows": c.total, "acquired": c.acquired, "quarantined": c.quarantined, "pending": c.pending});
            if fraction < args.success_threshold {
                return Err(permanent(anyhow::anyhow!(
                    "only {} of {} windows were acquired (threshold {:.0} %); {} quarantined",
                    c.acquired,
                    c.total,
                    args.success_threshold * 100.0,
                    c.quarantined
                )));
            }
            Ok(StepOutput {
                output,
                artifacts: Vec::new(),
            })
        })
    }
}
