//! `predict`: one partition of a project's acquired windows run through a model and stitched.
//!
//! The windows are grouped into `block × block` squares of grid cells ([`plan_prediction`]); each
//! square is one `predict` step (fan-out), followed by `combine` (fan-in, the UTM COGs) and `publish`
//! (web-mercator COGs, output records). A partition step pastes its windows plus a one-window halo of
//! neighbours into one mosaic, runs the model on overlapping tiles of the window size on a lattice
//! anchored at the zone's origin, blends them with linear ramps (see `groundwork_imagery::stitch`), and
//! writes its core: `(K, H, W)` probabilities (or values) and a validity mask, as safetensors under an
//! claim-specific key.
//!
//! `model` holds the models a prediction can run, `partition` the pure stitching core and its file
//! format; this module holds the step's arguments, the run planner and the step body.

mod model;
mod partition;

pub use model::{ConstantModel, EncoderSegmentation, ModelSpec, TrainedModel, WindowModel};
pub use partition::{
    Cancelled, Lattice, ModalityPixels, PartitionPrediction, WindowTensors, decode_partition,
    encode_partition, predict_partition,
};

use super::acquire::{AcquireArgs, acquisition_steps, default_partitions, window_plan};
use super::combine::CombineArgs;
use super::permanent;
use super::publish::PublishArgs;
use crate::data::WindowSet;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use candle_core::Device;
use futures::future::BoxFuture;
use groundwork_imagery::stitch::{Cell, Rect, TileLayout, partition_cells};
use groundwork_store::jobs::NewStep;
use groundwork_store::outputs::{self, WindowFootprint};
use groundwork_store::projects;
use object_store::ObjectStoreExt;
use olmoearth::Modality;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// Arguments of `predict`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictArgs {
    /// UTM zone of the partition.
    pub epsg: u32,
    /// Side of a partition in windows.
    pub block: usize,
    /// Block column (`column.div_euclid(block)`).
    pub block_column: i64,
    /// Block row.
    pub block_row: i64,
    /// Tile overlap in pixels.
    #[serde(default = "default_overlap")]
    pub overlap: usize,
    /// Pixel bounds `[x0, y0, x1, y1]` of every window of the zone: the tile lattice is kept inside
    /// them, the same way in every partition (default: this partition's windows and halo).
    #[serde(default)]
    pub area: Option<[i64; 4]>,
    /// Tiles per model call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// The model.
    pub model: ModelSpec,
    /// The project's acquired windows, or the run's own (a monitoring prediction of another period
    /// or area, which acquired them first).
    #[serde(default)]
    pub windows: WindowSet,
}

impl StepArgs for PredictArgs {
    const KIND: StepKind = StepKind::Predict;

    fn check(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.block) {
            return Err("block must be 1–64 windows".into());
        }
        if !(1..=256).contains(&self.batch_size) {
            return Err("batch_size must be 1–256".into());
        }
        if self.overlap > 512 {
            return Err("overlap must be at most 512 px".into());
        }
        Ok(())
    }
}

/// Default overlap of neighbouring tiles in pixels: each tile is computed once, so the model runs
/// `(size / (size − overlap))²` times the area (1.22 for 64-pixel tiles).
pub const DEFAULT_OVERLAP: usize = 6;

fn default_overlap() -> usize {
    DEFAULT_OVERLAP
}
fn default_batch() -> usize {
    8
}

/// Options of a prediction run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictOptions {
    /// The model.
    pub model: ModelSpec,
    /// Partition side in windows (default 4).
    #[serde(default)]
    pub block: Option<usize>,
    /// Tile overlap in pixels (default 16, clamped below the window size).
    #[serde(default)]
    pub overlap: Option<usize>,
    /// Extra lineage recorded with the outputs (label-set version, metrics, training run, …).
    #[serde(default)]
    pub lineage: serde_json::Value,
    /// A monitoring prediction: the acquisition of another period (and area) than the project's,
    /// whose `period` is set. The run acquires its own windows first (partitions, then the summary
    /// with its success threshold), and the prediction maps those.
    #[serde(default)]
    pub acquire: Option<AcquireArgs>,
}

/// Plans a prediction run: one `predict` step per partition (on the `gpu` queue when a GPU worker is
/// registered, else `cpu`), then `combine`, then `publish`. Without `opts.acquire` it maps the
/// project's acquired windows; with it, the run first acquires the period's windows of the area
/// (`acquire-*`, `acquire-summary`) and its partitions cover every window planned there (a partition
/// whose windows all came out empty maps nothing).
pub async fn plan_prediction(
    pool: &groundwork_store::PgPool,
    project: &projects::Project,
    opts: &PredictOptions,
) -> anyhow::Result<PredictionPlan> {
    let block = opts.block.unwrap_or(4).clamp(1, 64);
    let size = usize::try_from(project.window_size).unwrap_or(64);
    let overlap = opts
        .overlap
        .unwrap_or(DEFAULT_OVERLAP)
        .min(size.saturating_sub(1));
    let mut steps = Vec::new();
    let (cells, set, after): (Vec<(u32, Cell)>, WindowSet, Vec<String>) = match &opts.acquire {
        None => {
            if let Some(msg) = groundwork_store::windows::stale_refusal(pool, project.id).await? {
                anyhow::bail!(msg);
            }
            let windows = outputs::acquired_windows(pool, project.id, None, None).await?;
            anyhow::ensure!(
                !windows.is_empty(),
                "the project has no acquired windows; acquire imagery first"
            );
            let cells = windows
                .iter()
                .map(|w| {
                    (
                        u32::try_from(w.epsg).unwrap_or_default(),
                        Cell {
                            column: w.grid_column,
                            row: w.grid_row,
                        },
                    )
                })
                .collect();
            (cells, WindowSet::Project, Vec::new())
        }
        Some(acquire) => {
            let period = acquire
                .period
                .as_ref()
                .context("a monitoring acquisition needs its period")?;
            let area = period.area.as_ref().unwrap_or(&project.aoi);
            let (specs, _) = window_plan(area, project.window_size).await?;
            anyhow::ensure!(!specs.is_empty(), "the area holds no window");
            steps = acquisition_steps(acquire, default_partitions(specs.len()));
            let cells = specs
                .iter()
                .map(|w| {
                    (
                        w.epsg,
                        Cell {
                            column: w.column,
                            row: w.row,
                        },
                    )
                })
                .collect();
            (cells, WindowSet::Run, vec!["acquire-summary".to_owned()])
        }
    };
    // The GPU queue when a GPU worker that may run the organisation's steps is live.
    let gpu = groundwork_store::models::gpu_worker_online(pool, project.org_id).await?;
    let queue = if gpu { "gpu" } else { "cpu" };
    let needs = crate::needs::of_project(project, default_batch(), false);
    let mut names = Vec::new();
    // Each zone's area, so that every partition keeps the lattice's tiles inside it the same way.
    let mut areas: BTreeMap<u32, Vec<Cell>> = BTreeMap::new();
    for (epsg, c) in &cells {
        areas.entry(*epsg).or_default().push(*c);
    }
    let areas: BTreeMap<u32, Rect> = areas
        .into_iter()
        .filter_map(|(epsg, cs)| Some((epsg, Rect::around(&cs, size, 0)?)))
        .collect();
    for (i, p) in partition_cells(&cells, block).iter().enumerate() {
        let args = PredictArgs {
            epsg: p.epsg,
            block,
            block_column: p.block_column,
            block_row: p.block_row,
            overlap,
            area: areas.get(&p.epsg).map(|r| [r.x0, r.y0, r.x1, r.y1]),
            batch_size: default_batch(),
            model: opts.model.clone(),
            windows: set,
        };
        let name = format!("predict-{i}");
        let mut step = args.to_step(&name, queue);
        step.needs = needs.clone();
        step.depends_on.clone_from(&after);
        steps.push(step);
        names.push(name);
    }
    let mut combine = CombineArgs {}.to_step("combine", "cpu");
    combine.depends_on = names;
    steps.push(combine);
    let mut publish = PublishArgs {
        lineage: opts.lineage.clone(),
    }
    .to_step("publish", "cpu");
    publish.depends_on = vec!["combine".into()];
    steps.push(publish);
    Ok(PredictionPlan {
        steps,
        windows: cells.len(),
    })
}

/// A planned prediction run.
#[derive(Debug, Clone)]
pub struct PredictionPlan {
    /// Its steps.
    pub steps: Vec<NewStep>,
    /// The windows it maps (for a monitoring run, every window of the area; some may come out
    /// empty).
    pub windows: usize,
}

/// The `predict` kind.
#[derive(Debug, Clone, Copy)]
pub struct Predict;

impl Step for Predict {
    type Args = PredictArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: PredictArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            let started = Instant::now();
            let objects = ctx.objects(StepKind::Predict)?;
            let project = ctx.project().await?;
            let size = usize::try_from(project.window_size).unwrap_or(64);
            let layout = TileLayout::new(size, args.overlap).map_err(permanent)?;
            let b = i64::try_from(args.block.max(1)).unwrap_or(1);
            let (c0, r0) = (args.block_column * b, args.block_row * b);
            let epsg = i32::try_from(args.epsg).map_err(permanent)?;
            ctx.progress.set(0.0, "loading windows");
            // The block plus a one-window halo.
            let footprints: Vec<WindowFootprint> = ctx
                .acquired_windows(
                    args.windows,
                    Some(epsg),
                    Some([c0 - 1, c0 + b, r0 - 1, r0 + b]),
                )
                .await?;
            let in_core = |w: &WindowFootprint| {
                (c0..c0 + b).contains(&w.grid_column) && (r0..r0 + b).contains(&w.grid_row)
            };
            let core: Vec<Cell> = footprints
                .iter()
                .filter(|w| in_core(w))
                .map(|w| Cell {
                    column: w.grid_column,
                    row: w.grid_row,
                })
                .collect();
            if core.is_empty() && args.windows == WindowSet::Run {
                // The period's acquisition found nothing here (no scene, or every pixel masked):
                // nothing to map, which `combine` skips; the acquisition summary counted them.
                return Ok(StepOutput {
                    output: json!({
                        "key": null, "epsg": args.epsg, "windows": 0,
                        "skipped": "no window of this partition was acquired for the period",
                        "seconds": started.elapsed().as_secs_f64(),
                    }),
                    artifacts: Vec::new(),
                });
            }
            if core.is_empty() {
                return Err(permanent(anyhow::anyhow!(
                    "partition ({}, {}) of EPSG:{} has no acquired windows",
                    args.block_column,
                    args.block_row,
                    args.epsg
                )));
            }
            let modalities: Vec<Modality> = project.modalities.clone();
            let mut windows = Vec::with_capacity(footprints.len());
            let mut scenes = BTreeSet::new();
            for w in &footprints {
                let mut files = Vec::new();
                for m in &modalities {
                    let suffix = format!("/{}.safetensors", m.name());
                    let Some(key) = w.objects.iter().find(|k| k.ends_with(&suffix)) else {
                        continue;
                    };
                    let path = object_store::path::Path::from(key.as_str());
                    let bytes = async { objects.get(&path).await?.bytes().await }
                        .await
                        .with_context(|| format!("reading {key}"))?;
                    files.push((*m, bytes.to_vec()));
                }
                if files.is_empty() {
                    continue;
                }
                if in_core(w) {
                    collect_scenes(&w.scenes, &mut scenes);
                }
                let cell = Cell {
                    column: w.grid_column,
                    row: w.grid_row,
                };
                windows.push(
                    WindowTensors::decode(cell, size, &files)
                        .with_context(|| format!("window {}", w.id))
                        .map_err(permanent)?,
                );
            }
            let area = match args.area {
                Some([x0, y0, x1, y1]) => Rect { x0, y0, x1, y1 },
                None => Rect::around(&windows.iter().map(|w| w.cell).collect::<Vec<_>>(), size, 0)
                    .unwrap_or(Rect {
                        x0: 0,
                        y0: 0,
                        x1: 0,
                        y1: 0,
                    }),
            };
            let lattice = Lattice {
                area,
                block: args.block.max(1),
            };
            ctx.progress.set(0.2, "running the model");
            let device = olmoearth::device::parse_device("auto").unwrap_or(Device::Cpu);
            let spec = args.model.clone();
            let model_dir = ctx.model_dir.clone();
            let patch_size = usize::try_from(project.patch_size).unwrap_or(4);
            let cancel = ctx.cancel.clone();
            let batch = args.batch_size;
            // A trained model: its manifest names the class of each output and its lineage.
            let trained = match &spec {
                ModelSpec::Trained { run_id } => Some(
                    ModelSpec::fetch_trained(&ctx, objects.as_ref(), *run_id)
                        .await
                        .map_err(permanent)?,
                ),
                _ => None,
            };
            // A released checkpoint this worker's model folder lacks is copied from the object store.
            if let ModelSpec::Released { size, .. } = &spec {
                crate::pretrained::ensure_local(
                    Some(objects.as_ref()),
                    ctx.model_dir.as_deref(),
                    *size,
                )
                .await?;
            }
            let mut lineage = args.model.lineage(ctx.model_dir.as_deref());
            let mut class_ids: Option<Vec<i32>> = None;
            if let Some((m, _)) = &trained {
                lineage["checkpoint_sha256"] = json!(m.weights_sha256);
                lineage["label_set_version"] = json!(m.label_set_version);
                lineage["model_size"] = json!(m.config.model_size);
                lineage["patch_size"] = json!(m.config.patch_size);
                if !m.class_ids.is_empty() {
                    class_ids = Some(m.class_ids.clone());
                }
            }
            // What the encoder computes in: bf16 on GPUs of compute capability 8.0 or newer, else f32.
            let compute_dtype = olmoearth::device::compute_dtype(&device).as_str();
            let device_name = olmoearth::device::kind_name(&device);
            let prediction = tokio::task::spawn_blocking(move || {
                let model: Arc<dyn WindowModel> = match trained {
                    Some((manifest, weights)) => {
                        Arc::new(TrainedModel::load(&manifest, &weights, &device)?)
                    }
                    None => spec.load(model_dir.as_deref(), patch_size, &device)?,
                };
                predict_partition(
                    model.as_ref(),
                    &windows,
                    &core,
                    lattice,
                    layout,
                    batch,
                    &device,
                    &cancel,
                )
                .map(|p| (p, model.is_regression()))
            })
            .await
            .map_err(|e| StepError::Retryable(e.into()))?
            .map_err(|e| {
                if e.is::<Cancelled>() {
                    StepError::Cancelled
                } else {
                    permanent(e)
                }
            })?;
            let (prediction, regression) = prediction;
            let resolution = footprints.first().map_or(10.0, |w| w.resolution);
            let bytes = encode_partition(&prediction, args.epsg, resolution).map_err(permanent)?;
            let key = format!(
                "{}.safetensors",
                ctx.keys()
                    .claim(ctx.run_id, StepKind::Predict, ctx.step_id, ctx.claim_id)
            );
            objects
                .put(&object_store::path::Path::from(key.as_str()), bytes.into())
                .await
                .map_err(|e| StepError::Retryable(e.into()))?;
            ctx.progress.set(1.0, "written");
            let r = prediction.rect;
            Ok(StepOutput {
                output: json!({
                    "key": key, "epsg": args.epsg, "resolution": resolution,
                    "rect": [r.x0, r.y0, r.x1, r.y1], "outputs": prediction.k, "regression": regression,
                    "windows": footprints.iter().filter(|w| in_core(w)).count(),
                    "tiles": prediction.tiles, "overlap": args.overlap, "model": lineage,
                    "class_ids": class_ids, "device": device_name, "compute_dtype": compute_dtype,
                    "scenes": scenes, "seconds": started.elapsed().as_secs_f64(),
                }),
                artifacts: Vec::new(),
            })
        })
    }
}

/// Scene ids from a window's `scenes` JSON (`{modality: [[id, …] per bin]}`).
fn collect_scenes(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_scenes(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_scenes(x, out)),
        _ => {}
    }
}
