//! `predict`: one partition of a project's acquired windows run through a model and stitched.
//!
//! The windows are grouped into `block × block` squares of grid cells ([`plan_prediction`]); each
//! square is one `predict` step (fan-out), followed by `combine` (fan-in, the UTM COGs) and `publish`
//! (web-mercator COGs, output records). A partition step pastes its windows plus a one-window halo of
//! neighbours into one mosaic, runs the model on overlapping tiles of the window size on a lattice
//! anchored at the zone's origin, blends them with linear ramps (see `groundwork_imagery::stitch`), and
//! writes its core: `(K, H, W)` probabilities (or values) and a validity mask, as safetensors under an
//! attempt-specific key.

use groundwork_types::keys::ProjectKeys;
use super::combine::CombineArgs;
use super::publish::PublishArgs;
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use futures::future::BoxFuture;
use groundwork_imagery::stitch::{Blender, Cell, Mosaic, Rect, TileLayout, partition_cells};
use groundwork_store::jobs::NewStep;
use groundwork_store::outputs::{self, WindowFootprint};
use groundwork_store::{projects, workers};
use object_store::ObjectStoreExt;
use olmoearth::{EncoderInput, Modality, ModalityInput};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A model that maps a batch of normalised windows to per-pixel outputs.
pub trait WindowModel: Send + Sync {
    /// K: classes (probabilities) or values per pixel.
    fn num_outputs(&self) -> usize;
    /// Whether the outputs are values (regression) rather than class probabilities.
    fn is_regression(&self) -> bool;
    /// normalised input (B windows) -> (B, K, H, W) f32 probabilities or values
    fn predict(&self, input: &olmoearth::EncoderInput) -> olmoearth::Result<candle_core::Tensor>;
}

/// Predicts the same outputs at every pixel.
#[derive(Debug, Clone)]
pub struct ConstantModel {
    /// One value per output.
    pub values: Vec<f32>,
    /// Values rather than probabilities.
    pub regression: bool,
}

fn input_dims(input: &EncoderInput) -> olmoearth::Result<(usize, usize, usize, Device)> {
    let first = input
        .modalities
        .values()
        .next()
        .ok_or_else(|| olmoearth::Error::InvalidInput("no modality in the input".into()))?;
    let (b, h, w, _, _) = first.data.dims5()?;
    Ok((b, h, w, first.data.device().clone()))
}

impl WindowModel for ConstantModel {
    fn num_outputs(&self) -> usize {
        self.values.len()
    }

    fn is_regression(&self) -> bool {
        self.regression
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        let (b, h, w, device) = input_dims(input)?;
        let k = self.values.len();
        let plane = Tensor::from_vec(self.values.clone(), (1, k, 1, 1), &device)?;
        Ok(plane.broadcast_as((b, k, h, w))?.contiguous()?)
    }
}

/// The OlmoEarth encoder with a light segmentation head (bilinear upsampling and a 1×1 convolution)
/// and a softmax over classes, or raw values for regression.
#[derive(Debug)]
pub struct EncoderSegmentation {
    encoder: olmoearth::Encoder,
    head: olmoearth::heads::LightSegmentationHead,
    patch_size: usize,
    outputs: usize,
    regression: bool,
}

impl EncoderSegmentation {
    /// Loads the encoder from a checkpoint (a model directory or weights file) and initialises a fresh
    /// head for `outputs` outputs.
    pub fn from_checkpoint(
        path: &std::path::Path,
        outputs: usize,
        patch_size: usize,
        regression: bool,
        device: &Device,
    ) -> olmoearth::Result<Self> {
        let (cfg, sd) = olmoearth::ModelFiles::resolve(path)?.load()?;
        let encoder = olmoearth::Encoder::load(&cfg, &sd, DType::F32, device)?;
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, device);
        let head = olmoearth::heads::LightSegmentationHead::new(
            cfg.embedding_size,
            outputs,
            patch_size,
            vb.pp("head"),
        )?;
        Ok(Self {
            encoder,
            head,
            patch_size,
            outputs,
            regression,
        })
    }

    /// The encoder alone (for comparisons).
    #[must_use]
    pub fn encoder(&self) -> &olmoearth::Encoder {
        &self.encoder
    }

    /// Patch size the model runs at.
    #[must_use]
    pub fn patch_size(&self) -> usize {
        self.patch_size
    }
}

impl WindowModel for EncoderSegmentation {
    fn num_outputs(&self) -> usize {
        self.outputs
    }

    fn is_regression(&self) -> bool {
        self.regression
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        let out = self.encoder.forward(input, self.patch_size)?;
        let features = olmoearth::heads::feature_map(&out)?;
        let y = self.head.forward(&features)?;
        if self.regression {
            Ok(y)
        } else {
            Ok(candle_nn::ops::softmax(&y, 1)?)
        }
    }
}

/// A task model trained by a `train` step, with the class id of each of its outputs.
pub struct TrainedModel {
    model: olmoearth::task::TaskModel,
}

impl TrainedModel {
    /// Rebuilds the model from its manifest (`model.json`) and weights.
    pub fn load(
        manifest: &super::train::ModelManifest,
        weights: &[u8],
        device: &Device,
    ) -> anyhow::Result<Self> {
        use sha2::Digest;
        let sha = hex_of(&sha2::Sha256::digest(weights));
        anyhow::ensure!(
            sha == manifest.weights_sha256,
            "the model weights do not match their manifest (sha256 {sha}, expected {})",
            manifest.weights_sha256
        );
        let model = olmoearth::task::TaskModel::load(manifest.config.clone(), weights, device)?;
        Ok(Self { model })
    }
}

impl WindowModel for TrainedModel {
    fn num_outputs(&self) -> usize {
        self.model.config().num_outputs
    }

    fn is_regression(&self) -> bool {
        self.model.config().task == olmoearth::task::Task::Regression
    }

    fn predict(&self, input: &EncoderInput) -> olmoearth::Result<Tensor> {
        self.model.predict(input)
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which model a prediction runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// The same outputs everywhere.
    Constant {
        /// One value per output.
        values: Vec<f32>,
        /// Values rather than probabilities.
        #[serde(default)]
        regression: bool,
    },
    /// An OlmoEarth checkpoint on the worker's disk with a freshly initialised segmentation head.
    Checkpoint {
        /// Model directory or weights file.
        path: PathBuf,
        /// Outputs of the head.
        outputs: usize,
        /// Values rather than probabilities.
        #[serde(default)]
        regression: bool,
    },
    /// The model a training run of the project wrote (`runs/{run_id}/model/` in the object store).
    Trained {
        /// The training run.
        run_id: Uuid,
    },
}

impl ModelSpec {
    /// Builds the model; a trained model comes from [`ModelSpec::fetch_trained`] instead.
    pub fn load(&self, patch_size: usize, device: &Device) -> anyhow::Result<Arc<dyn WindowModel>> {
        Ok(match self {
            ModelSpec::Trained { run_id } => {
                anyhow::bail!("the model of run {run_id} must be fetched from the object store")
            }
            ModelSpec::Constant { values, regression } => {
                anyhow::ensure!(
                    !values.is_empty(),
                    "a constant model needs at least one value"
                );
                Arc::new(ConstantModel {
                    values: values.clone(),
                    regression: *regression,
                })
            }
            ModelSpec::Checkpoint {
                path,
                outputs,
                regression,
            } => {
                anyhow::ensure!(*outputs > 0, "a model needs at least one output");
                Arc::new(
                    EncoderSegmentation::from_checkpoint(
                        path,
                        *outputs,
                        patch_size,
                        *regression,
                        device,
                    )
                    .with_context(|| format!("loading the model at {}", path.display()))?,
                )
            }
        })
    }

    /// Reads the manifest and weights of a trained model of `project` from the object store.
    pub async fn fetch_trained(
        objects: &dyn object_store::ObjectStore,
        project: &projects::Project,
        run_id: Uuid,
    ) -> anyhow::Result<(super::train::ModelManifest, Vec<u8>)> {
        let manifest_key = groundwork_types::keys::ProjectKeys::new(project.org_id, project.id)
            .model(run_id)
            .manifest;
        let path = object_store::path::Path::from(manifest_key.as_str());
        let bytes = async { objects.get(&path).await?.bytes().await }
            .await
            .with_context(|| format!("run {run_id} has no trained model ({manifest_key})"))?;
        let manifest: super::train::ModelManifest =
            serde_json::from_slice(&bytes).context("the model manifest is not readable")?;
        let path = object_store::path::Path::from(manifest.weights_key.as_str());
        let weights = async { objects.get(&path).await?.bytes().await }
            .await
            .with_context(|| format!("reading the model weights {}", manifest.weights_key))?;
        Ok((manifest, weights.to_vec()))
    }

    /// What lineage records about the model.
    #[must_use]
    pub fn lineage(&self) -> serde_json::Value {
        match self {
            ModelSpec::Trained { run_id } => json!({"kind": "trained", "run_id": run_id}),
            ModelSpec::Constant { values, regression } => {
                json!({"kind": "constant", "outputs": values.len(), "regression": regression})
            }
            ModelSpec::Checkpoint {
                path,
                outputs,
                regression,
            } => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                json!({"kind": "checkpoint", "name": name, "outputs": outputs, "regression": regression,
                       "checkpoint_sha256": checkpoint_hash(path)})
            }
        }
    }
}

/// SHA-256 of the checkpoint's weights file, hex; `None` when it cannot be read.
fn checkpoint_hash(path: &std::path::Path) -> Option<String> {
    use sha2::Digest;
    let files = olmoearth::ModelFiles::resolve(path).ok()?;
    let bytes = std::fs::read(&files.weights).ok()?;
    let digest = sha2::Sha256::digest(&bytes);
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Arguments of `predict`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictArgs {
    /// The project.
    pub project_id: Uuid,
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
    /// Tiles per model call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// The model.
    pub model: ModelSpec,
}

impl StepArgs for PredictArgs {
    const KIND: StepKind = StepKind::Predict;
}

fn default_overlap() -> usize {
    16
}
fn default_batch() -> usize {
    8
}

/// One modality of a window: `(H, W, T, C)` data, `(H, W, T, S)` mask and `(T, C, S)`.
pub type ModalityPixels = (Vec<f32>, Vec<u8>, (usize, usize, usize));

/// One window's decoded tensors.
#[derive(Debug, Clone)]
pub struct WindowTensors {
    /// Its grid cell.
    pub cell: Cell,
    /// Per modality: `(H, W, T, C)` data, `(H, W, T, S)` mask, `(T, C, S)`.
    pub modalities: BTreeMap<String, ModalityPixels>,
    /// Month of each time step.
    pub months: Vec<i64>,
}

impl WindowTensors {
    /// Decodes the safetensors files of one window (one file per modality, or one with all).
    pub fn decode(cell: Cell, size: usize, files: &[(Modality, Vec<u8>)]) -> anyhow::Result<Self> {
        let mut modalities = BTreeMap::new();
        let mut months = Vec::new();
        for (m, bytes) in files {
            let name = m.name();
            let data = groundwork_imagery::output::read_f32(bytes, name)?;
            let mask = groundwork_imagery::output::read_u8(bytes, &format!("{name}_mask"))?;
            let ts = groundwork_imagery::output::read_i32(bytes, "timestamps")?;
            anyhow::ensure!(
                data.shape.len() == 4 && data.shape[0] == size && data.shape[1] == size,
                "{name} tensor of shape {:?} is not ({size}, {size}, T, C)",
                data.shape
            );
            anyhow::ensure!(
                mask.shape.len() == 4 && mask.shape[..3] == data.shape[..3],
                "{name} mask of shape {:?} does not match the data {:?}",
                mask.shape,
                data.shape
            );
            let t = data.shape[2];
            anyhow::ensure!(
                ts.shape == [t, 3],
                "timestamps of shape {:?} do not match {t} time steps",
                ts.shape
            );
            months = ts.data.chunks(3).map(|c| i64::from(c[1])).collect();
            modalities.insert(
                name.to_string(),
                (data.data, mask.data, (t, data.shape[3], mask.shape[3])),
            );
        }
        Ok(Self {
            cell,
            modalities,
            months,
        })
    }
}

/// A partition's stitched prediction.
#[derive(Debug, Clone)]
pub struct PartitionPrediction {
    /// Its core rectangle (global pixel coordinates).
    pub rect: Rect,
    /// Outputs per pixel.
    pub k: usize,
    /// `(K, H, W)`; NaN where no window holds data.
    pub values: Vec<f32>,
    /// 1 where a window holds data.
    pub valid: Vec<u8>,
    /// Model calls made.
    pub tiles: usize,
}

/// Pastes windows into a mosaic over `core` plus a one-window halo, runs `model` on overlapping tiles
/// and blends them; the pure core of the `predict` step.
pub fn predict_partition(
    model: &dyn WindowModel,
    windows: &[WindowTensors],
    core: &[Cell],
    layout: TileLayout,
    batch_size: usize,
    device: &Device,
    cancel: &CancellationToken,
) -> anyhow::Result<PartitionPrediction> {
    let n = layout.size;
    let core_rect =
        Rect::around(core, n, 0).context("a prediction partition needs at least one window")?;
    let outer = Rect::around(core, n, n as i64).context("empty partition")?;
    let mut mosaic = Mosaic::new(outer, olmoearth::encoder::MASK_MISSING as u8);
    for w in windows {
        for (name, (data, mask, shape)) in &w.modalities {
            mosaic.paste(name, w.cell.origin(n), n, *shape, data, mask, &w.months)?;
        }
    }
    let mut names: Vec<(Modality, String)> = Vec::new();
    for (name, band) in &mut mosaic.bands {
        let m: Modality = name.parse()?;
        olmoearth::normalize::fill_missing_bands(m, &mut band.data)?;
        names.push((m, name.clone()));
    }
    anyhow::ensure!(!names.is_empty(), "no window of the partition has tensors");
    let k = model.num_outputs();
    let mut blender = Blender::new(core_rect, k, layout);
    // Tiles that reach past the data (the edge of the area, where no window exists) move inside it,
    // so that the model never sees a border of missing tokens: it was trained on whole windows, and a
    // tile half outside the area predicts its valid half poorly. Every partition sees the same edge
    // (its halo holds the neighbouring windows), so shared tiles stay identical across partitions.
    let bounds = mosaic.valid_bounds();
    let clamp = |v: i64, lo: i64, hi: i64| {
        if hi - lo >= n as i64 {
            v.clamp(lo, hi - n as i64)
        } else {
            v
        }
    };
    let mut seen = BTreeSet::new();
    let tiles: Vec<(i64, i64)> = layout
        .tiles_over(core_rect)
        .into_iter()
        .map(|(x, y)| match bounds {
            Some(b) => (clamp(x, b.x0, b.x1), clamp(y, b.y0, b.y1)),
            None => (x, y),
        })
        .filter(|t| seen.insert(*t))
        .filter(|&(x, y)| {
            let tile = Rect {
                x0: x,
                y0: y,
                x1: x + n as i64,
                y1: y + n as i64,
            };
            let inner = Rect {
                x0: tile.x0.max(core_rect.x0),
                y0: tile.y0.max(core_rect.y0),
                x1: tile.x1.min(core_rect.x1),
                y1: tile.y1.min(core_rect.y1),
            };
            mosaic.any_valid(inner)
        })
        .collect();
    let t = mosaic.months.len();
    for batch in tiles.chunks(batch_size.max(1)) {
        anyhow::ensure!(!cancel.is_cancelled(), "cancelled");
        let b = batch.len();
        let mut modalities = BTreeMap::new();
        for (m, name) in &names {
            let band = &mosaic.bands[name];
            let mut data = Vec::with_capacity(b * n * n * band.t * band.c);
            let mut mask = Vec::with_capacity(b * n * n * band.t * band.s);
            for &origin in batch {
                mosaic.chip_into(name, origin, n, &mut data, &mut mask)?;
            }
            let raw = Tensor::from_vec(data, (b, n, n, band.t, band.c), &Device::Cpu)?;
            let normalised = olmoearth::normalize::normalize(*m, &raw)?.to_device(device)?;
            let mask = Tensor::from_vec(mask, (b, n, n, band.t, band.s), &Device::Cpu)?
                .to_device(device)?;
            modalities.insert(
                *m,
                ModalityInput {
                    data: normalised,
                    mask: Some(mask),
                },
            );
        }
        let months: Vec<i64> = (0..b).flat_map(|_| mosaic.months.iter().copied()).collect();
        let input = EncoderInput {
            modalities,
            months: Tensor::from_vec(months, (b, t), device)?,
        };
        let pred = model.predict(&input)?;
        let dims = pred.dims().to_vec();
        anyhow::ensure!(
            dims == [b, k, n, n],
            "the model returned shape {dims:?}, expected ({b}, {k}, {n}, {n})"
        );
        let flat: Vec<f32> = pred
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        for (i, &origin) in batch.iter().enumerate() {
            blender.add(origin, &flat[i * k * n * n..(i + 1) * k * n * n])?;
        }
    }
    let mut values = blender.finish();
    let (w, h) = (core_rect.width(), core_rect.height());
    let plane = w * h;
    let mut valid = vec![0u8; plane];
    let ow = outer.width();
    for y in 0..h {
        for x in 0..w {
            let p = y * w + x;
            let q = (y + n) * ow + (x + n);
            valid[p] = mosaic.valid[q];
            if valid[p] == 0 {
                for c in 0..k {
                    values[c * plane + p] = f32::NAN;
                }
            }
        }
    }
    Ok(PartitionPrediction {
        rect: core_rect,
        k,
        values,
        valid,
        tiles: tiles.len(),
    })
}

/// Encodes a partition prediction: `values` f32 `(K, H, W)`, `valid` u8 `(H, W)`, metadata `rect`,
/// `epsg`, `resolution`.
pub fn encode_partition(
    p: &PartitionPrediction,
    epsg: u32,
    resolution: f64,
) -> anyhow::Result<Vec<u8>> {
    use safetensors::tensor::{Dtype, TensorView};
    let (w, h) = (p.rect.width(), p.rect.height());
    let values: Vec<u8> = p.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "values".to_string(),
            TensorView::new(Dtype::F32, vec![p.k, h, w], &values)?,
        ),
        (
            "valid".to_string(),
            TensorView::new(Dtype::U8, vec![h, w], &p.valid)?,
        ),
    ];
    let mut meta = HashMap::new();
    meta.insert(
        "rect".to_string(),
        serde_json::to_string(&[p.rect.x0, p.rect.y0, p.rect.x1, p.rect.y1])?,
    );
    meta.insert("epsg".to_string(), epsg.to_string());
    meta.insert("resolution".to_string(), resolution.to_string());
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Decodes [`encode_partition`]'s bytes: `(rect, K, values, valid)`.
pub fn decode_partition(bytes: &[u8]) -> anyhow::Result<(Rect, usize, Vec<f32>, Vec<u8>)> {
    let meta = groundwork_imagery::output::read_metadata(bytes)?;
    let r: [i64; 4] =
        serde_json::from_str(meta.get("rect").context("no rect in a partition file")?)?;
    let rect = Rect {
        x0: r[0],
        y0: r[1],
        x1: r[2],
        y1: r[3],
    };
    let values = groundwork_imagery::output::read_f32(bytes, "values")?;
    let valid = groundwork_imagery::output::read_u8(bytes, "valid")?;
    let k = values.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(
        values.shape == [k, rect.height(), rect.width()]
            && valid.data.len() == rect.width() * rect.height(),
        "a partition file's shapes do not match its rectangle"
    );
    Ok((rect, k, values.data, valid.data))
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
}

/// Plans a prediction run over the project's acquired windows: one `predict` step per partition (on
/// the `gpu` queue when a GPU worker is registered, else `cpu`), then `combine`, then `publish`.
pub async fn plan_prediction(
    pool: &groundwork_store::PgPool,
    project: &projects::Project,
    opts: &PredictOptions,
) -> anyhow::Result<Vec<NewStep>> {
    let windows = outputs::acquired_windows(pool, project.id, None, None).await?;
    anyhow::ensure!(
        !windows.is_empty(),
        "the project has no acquired windows; acquire imagery first"
    );
    let block = opts.block.unwrap_or(4).clamp(1, 64);
    let size = usize::try_from(project.window_size).unwrap_or(64);
    let overlap = opts.overlap.unwrap_or(16).min(size.saturating_sub(1));
    let cells: Vec<(u32, Cell)> = windows
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
    let gpu = workers::list(pool)
        .await?
        .iter()
        .any(|w| w.queues.iter().any(|q| q == "gpu") && w.state == "active");
    let queue = if gpu { "gpu" } else { "cpu" };
    let mut steps = Vec::new();
    let mut names = Vec::new();
    for (i, p) in partition_cells(&cells, block).iter().enumerate() {
        let args = PredictArgs {
            project_id: project.id,
            epsg: p.epsg,
            block,
            block_column: p.block_column,
            block_row: p.block_row,
            overlap,
            batch_size: default_batch(),
            model: opts.model.clone(),
        };
        let name = format!("predict-{i}");
        steps.push(args.into_step(&name, queue));
        names.push(name);
    }
    let mut combine = CombineArgs {
        project_id: project.id,
    }
    .into_step("combine", "cpu");
    combine.depends_on = names;
    steps.push(combine);
    let mut publish = PublishArgs {
        project_id: project.id,
        lineage: opts.lineage.clone(),
    }
    .into_step("publish", "cpu");
    publish.depends_on = vec!["combine".into()];
    steps.push(publish);
    Ok(steps)
}

fn permanent(e: impl Into<anyhow::Error>) -> StepError {
    StepError::Permanent(e.into())
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
            let project = projects::get_any(&ctx.pool, args.project_id)
                .await
                .map_err(permanent)?;
            let size = usize::try_from(project.window_size).unwrap_or(64);
            let layout = TileLayout::new(size, args.overlap).map_err(permanent)?;
            let b = i64::try_from(args.block.max(1)).unwrap_or(1);
            let (c0, r0) = (args.block_column * b, args.block_row * b);
            let epsg = i32::try_from(args.epsg).map_err(permanent)?;
            ctx.progress.set(0.0, "loading windows");
            // The block plus a one-window halo.
            let footprints: Vec<WindowFootprint> = outputs::acquired_windows(
                &ctx.pool,
                project.id,
                Some(epsg),
                Some([c0 - 1, c0 + b, r0 - 1, r0 + b]),
            )
            .await
            .map_err(|e| StepError::Retryable(e.into()))?;
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
            ctx.progress.set(0.2, "running the model");
            let device = olmoearth::device::parse_device("auto").unwrap_or(Device::Cpu);
            let spec = args.model.clone();
            let patch_size = usize::try_from(project.patch_size).unwrap_or(4);
            let cancel = ctx.cancel.clone();
            let batch = args.batch_size;
            // A trained model: its manifest names the class of each output and its lineage.
            let trained = match &spec {
                ModelSpec::Trained { run_id } => Some(
                    ModelSpec::fetch_trained(objects.as_ref(), &project, *run_id)
                        .await
                        .map_err(permanent)?,
                ),
                _ => None,
            };
            let mut lineage = args.model.lineage();
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
            let prediction = tokio::task::spawn_blocking(move || {
                let model: Arc<dyn WindowModel> = match trained {
                    Some((manifest, weights)) => {
                        Arc::new(TrainedModel::load(&manifest, &weights, &device)?)
                    }
                    None => spec.load(patch_size, &device)?,
                };
                predict_partition(
                    model.as_ref(),
                    &windows,
                    &core,
                    layout,
                    batch,
                    &device,
                    &cancel,
                )
                .map(|p| (p, model.is_regression()))
            })
            .await
            .map_err(|e| StepError::Retryable(e.into()))?
            .map_err(permanent)?;
            let (prediction, regression) = prediction;
            let resolution = footprints.first().map_or(10.0, |w| w.resolution);
            let bytes = encode_partition(&prediction, args.epsg, resolution).map_err(permanent)?;
            let key = format!(
                "{}.safetensors",
                ProjectKeys::new(project.org_id, project.id).attempt(
                    ctx.run_id,
                    StepKind::Predict,
                    ctx.step_id,
                    ctx.attempt
                )
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
                    "class_ids": class_ids,
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
