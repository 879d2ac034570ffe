//! `train`: fits several candidate models for a project on its labelled windows and keeps the best.
//!
//! 1. Examples of a label-set version are read ([`groundwork_store::labels::training_examples`]) and their
//!    window tensors loaded from the object store.
//! 2. The encoder starts from the OlmoEarth checkpoint of the project's size under the worker's model
//!    directory (copied there from the object store's shared `models/` keys when the folder lacks it,
//!    [`crate::pretrained`]). Without one, training fails permanently unless the project allows
//!    random initialisation (`allow_random_init`); then it starts from seeded random weights, and the
//!    output says so (`initialised_from: "random"`, `random_init_allowed_by_project`).
//! 3. Candidates ([`super::candidates`]): a raw-pixel linear model, the frozen-encoder linear and kNN
//!    probes, a linear model of tokens and pixels, and the fine-tuned head (default `hybrid`: tokens and
//!    10 m pixels), all scored on the validation split with the class-balanced metric (`macro_f1`, RMSE
//!    for regression). The best publishable one is the run's model; every candidate's test predictions
//!    and the choice go to `…/runs/{run}/model/claim-{claim}/baseline.json` for `evaluate`.
//! 4. Fine-tuning ([`olmoearth::finetune::Trainer`]) starts from the better linear model, with a
//!    class-weighted loss and early stopping on validation macro-F1; every epoch writes a checkpoint
//!    (weights, optimiser moments, curve) under `…/runs/{run}/checkpoints/{claim}/` (one folder per claim,
//!    named by `checkpoints/state.json`, which every claim reads) and a
//!    row of `training_epoch`; a retried or resumed attempt continues after the last checkpointed epoch.
//! 5. The chosen model: `…/runs/{run}/model/claim-{claim}/weights.safetensors` and `…/model.json`
//!    (config, label-set version, weights sha256, metrics with the choice and its reason). Each claim
//!    writes its own folder; the step output, committed with `succeeded` under the claim, names the
//!    winner's keys, and readers find them there ([`model_keys`]).

use super::candidates::{Candidate, FINE_TUNED, Fitted, StoredCandidate, fit_candidates};
use super::{permanent, retryable};
use crate::{Step, StepArgs, StepContext, StepError, StepKind, StepOutput};
use anyhow::Context;
use candle_core::Device;
use futures::future::BoxFuture;
use groundwork_store::labels::{LabelTarget, Split, TrainingExample};
use groundwork_store::models;
use groundwork_types::keys::{ModelKeys, ProjectKeys};
use groundwork_types::{ClassDef, HeadKind, Task};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use olmoearth::finetune::{
    EpochRecord, Example, FitOptions, FitSink, FitState, IGNORE, Target, metric_name,
};
use olmoearth::task::{TaskModelConfig, input_from_window, pixel_channels};
use olmoearth::{EncoderConfig, Modality, ModelSize};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `train`. Every training setting is optional (defaults: [`FitOptions::default`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainArgs {
    /// Label-set version (default: the latest).
    #[serde(default)]
    pub label_set_version: Option<i32>,
    /// Total epochs.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Epochs with the encoder frozen.
    #[serde(default)]
    pub freeze_epochs: Option<usize>,
    /// Windows per optimiser step.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Head learning rate.
    #[serde(default)]
    pub lr: Option<f64>,
    /// Early-stopping patience in epochs.
    #[serde(default)]
    pub patience: Option<usize>,
    /// The task head (default by task).
    #[serde(default)]
    pub head: Option<HeadKind>,
    /// Flips and rotations (default on).
    #[serde(default)]
    pub augment: Option<bool>,
    /// Shuffling seed.
    #[serde(default)]
    pub seed: Option<u64>,
    /// `cpu`, `cuda:N` or `auto` (default).
    #[serde(default)]
    pub device: Option<String>,
}

impl StepArgs for TrainArgs {
    const KIND: StepKind = StepKind::Train;

    fn check(&self) -> Result<(), String> {
        let within = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
        within(
            self.epochs.is_none_or(|e| (1..=500).contains(&e)),
            "epochs must be 1–500",
        )?;
        within(
            self.freeze_epochs
                .is_none_or(|f| f <= self.epochs.unwrap_or(500)),
            "freeze_epochs must not exceed epochs",
        )?;
        within(
            self.batch_size.is_none_or(|b| (1..=256).contains(&b)),
            "batch_size must be 1–256",
        )?;
        within(
            self.lr.is_none_or(|lr| lr > 0.0 && lr <= 1.0),
            "lr must be within (0, 1]",
        )?;
        within(
            self.patience.is_none_or(|p| (1..=500).contains(&p)),
            "patience must be 1–500",
        )?;
        within(
            self.label_set_version.is_none_or(|v| v >= 1),
            "label_set_version must be 1 or more",
        )
    }
}

impl TrainArgs {
    /// The epochs these arguments ask for (early stopping may end sooner): what an estimate counts.
    #[must_use]
    pub fn planned_epochs(&self) -> usize {
        self.fit_options().epochs
    }

    /// Whether the encoder is unfrozen for some epochs (a backward pass through it, which decides
    /// the step's memory).
    #[must_use]
    pub fn fine_tunes_encoder(&self) -> bool {
        let o = self.fit_options();
        o.freeze_epochs < o.epochs
    }

    fn fit_options(&self) -> FitOptions {
        let d = FitOptions::default();
        let epochs = self.epochs.unwrap_or(d.epochs).max(1);
        FitOptions {
            epochs,
            freeze_epochs: self.freeze_epochs.unwrap_or(d.freeze_epochs).min(epochs),
            batch_size: self.batch_size.unwrap_or(d.batch_size).max(1),
            lr: self.lr.unwrap_or(d.lr),
            patience: self.patience.unwrap_or(d.patience).max(1),
            augment: self.augment.unwrap_or(d.augment),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        }
    }
}

/// `model.json`: what predicting and publishing need to know about a trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelManifest {
    /// Rebuilds the model with [`olmoearth::task::TaskModel::load`].
    pub config: TaskModelConfig,
    /// Label-set version trained on.
    pub label_set_version: i32,
    /// Object-store key of the weights.
    pub weights_key: String,
    /// Hex sha256 of the weights file.
    pub weights_sha256: String,
    /// Class id (as labelled) of each output index; empty for regression.
    pub class_ids: Vec<i32>,
    /// Validation metrics of the chosen epoch and the baseline.
    pub metrics: Value,
    /// The training curve.
    pub history: Vec<EpochRecord>,
}

/// `checkpoints/state.json`: the commit point of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    config: TaskModelConfig,
    label_set_version: i32,
    class_ids: Vec<i32>,
    fit: FitState,
    /// File under `checkpoints/` with the latest weights and optimiser state.
    checkpoint: String,
    /// File under `checkpoints/` with the best weights so far.
    best: Option<String>,
}

/// Class index of every label value: the project's class ids when every label uses them, otherwise the
/// distinct labelled values in ascending order.
pub(crate) fn class_ids(project_classes: &[ClassDef], examples: &[TrainingExample]) -> Vec<i32> {
    let declared: Vec<i32> = project_classes.iter().map(|c| i32::from(c.id)).collect();
    let mut used = std::collections::BTreeSet::new();
    for e in examples {
        match &e.target {
            LabelTarget::Class(c) => {
                used.insert(*c);
            }
            LabelTarget::Mask { pixels, .. } => {
                let mut seen = [false; 256];
                for &p in pixels {
                    seen[usize::from(p)] = true;
                }
                for (v, s) in seen.iter().enumerate() {
                    if *s && v != usize::from(IGNORE) {
                        used.insert(i32::try_from(v).unwrap_or_default());
                    }
                }
            }
            LabelTarget::Value(_) => {}
        }
    }
    if !declared.is_empty() && used.iter().all(|u| declared.contains(u)) {
        declared
    } else {
        used.into_iter().collect()
    }
}

/// The encoder weights a model starts from.
pub(crate) struct Pretrained {
    /// `olmoearth-v1-{size}` (a released checkpoint) or `random`.
    pub from: String,
    /// The checkpoint file, when one was loaded (its SHA-256 goes into a trained model's lineage).
    pub weights: Option<PathBuf>,
    /// The encoder's configuration.
    pub cfg: EncoderConfig,
    /// Its weights.
    pub sd: olmoearth::StateDict,
    /// Why no checkpoint was used, when none was.
    pub note: Option<String>,
}

/// SHA-256 of a file, read in blocks.
fn file_sha256(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex(&h.finalize()))
}

/// Whether a step may start from random weights when no pretrained checkpoint is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RandomInit {
    /// No: the project does not allow random initialisation, so training refuses.
    Refused,
    /// Yes, because the project's settings allow it (said in the step's output).
    AllowedByProject,
    /// Yes: the step is useful without pretrained weights (suggestions also read the pixels).
    Fallback,
}

/// Why training cannot start: no checkpoint, and the project does not allow random weights.
pub(crate) fn no_checkpoint_reason(model_dir: Option<&Path>, size: ModelSize) -> String {
    let where_ = match model_dir {
        Some(root) => format!(
            "none in its model folder {} or in the object store",
            root.display()
        ),
        None => {
            "it has no model folder (GROUNDWORK_MODEL_DIR) and the object store has none".to_owned()
        }
    };
    format!(
        "no pretrained {} checkpoint is available to this worker ({where_}): run `groundwork model \
         import FILE` or `groundwork model fetch {}`, or allow random initialisation in the \
         project's settings",
        size.release_name(),
        size.name()
    )
}

/// Copies the shared checkpoint of the project's size from the object store into the worker's model
/// folder when the folder lacks it, and says whether the encoder may start from random weights: a
/// permanent failure when no checkpoint is available and the project does not allow random
/// initialisation.
pub(crate) async fn prepare_encoder(
    ctx: &StepContext,
    project: &groundwork_store::projects::Project,
) -> Result<RandomInit, StepError> {
    let local = crate::pretrained::ensure_local(
        ctx.objects.as_deref(),
        ctx.model_dir.as_deref(),
        project.model_size,
    )
    .await?;
    if project.allow_random_init {
        return Ok(RandomInit::AllowedByProject);
    }
    if local == crate::pretrained::Local::Absent {
        return Err(permanent(anyhow::anyhow!(no_checkpoint_reason(
            ctx.model_dir.as_deref(),
            project.model_size
        ))));
    }
    Ok(RandomInit::Refused)
}

/// Where the pretrained encoder comes from, and its state dict; when no checkpoint of `size` is in
/// the model folder, random weights drawn from `seed` if `random` allows them, else the reason.
pub(crate) fn pretrained(
    model_dir: Option<&Path>,
    size: ModelSize,
    seed: u64,
    device: &Device,
    random: RandomInit,
) -> Result<Pretrained, String> {
    let tried: Vec<PathBuf> = model_dir
        .map(|root| vec![olmoearth::fetch::model_dir(root, size), root.to_path_buf()])
        .unwrap_or_default();
    for dir in &tried {
        let Ok(files) = olmoearth::ModelFiles::resolve(dir) else {
            continue;
        };
        match files.load() {
            Ok((cfg, sd)) if cfg.size() == Some(size) => {
                return Ok(Pretrained {
                    from: format!("olmoearth-v1-{}", size.name()),
                    weights: Some(files.weights.clone()),
                    cfg,
                    sd,
                    note: None,
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "unreadable model directory")
            }
        }
    }
    let missing = match model_dir {
        Some(root) => format!(
            "no {} checkpoint under {} or in the object store",
            size.release_name(),
            root.display()
        ),
        None => "no model directory is configured (GROUNDWORK_MODEL_DIR)".to_string(),
    };
    let note = match random {
        RandomInit::Refused => return Err(no_checkpoint_reason(model_dir, size)),
        RandomInit::AllowedByProject => format!(
            "{missing}; the encoder starts from random weights, which the project's settings allow \
             (maps will be much less accurate than from the pretrained checkpoint)"
        ),
        RandomInit::Fallback => format!(
            "{missing} (run `groundwork model import FILE` or `groundwork model fetch {}`); the \
             encoder starts from random weights",
            size.name()
        ),
    };
    let cfg = EncoderConfig::preset(size);
    // Seeded, so that the same labels and settings train the same model.
    let sd = match olmoearth::checkpoint::seeded_state_dict(&cfg, seed, device) {
        Ok(sd) => sd,
        Err(e) => {
            tracing::warn!(error = %e, "random initialisation failed");
            olmoearth::StateDict::from_tensors(Default::default())
        }
    };
    Ok(Pretrained {
        from: "random".into(),
        weights: None,
        cfg,
        sd,
        note: Some(note),
    })
}

async fn get_bytes(
    store: &dyn ObjectStore,
    key: &ObjectPath,
) -> Result<Option<Vec<u8>>, StepError> {
    match store.get(key).await {
        Ok(r) => Ok(Some(
            r.bytes()
                .await
                .with_context(|| format!("reading {key}"))
                .map_err(retryable)?
                .to_vec(),
        )),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(retryable(
            anyhow::anyhow!(e).context(format!("reading {key}")),
        )),
    }
}

async fn put_bytes(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    store
        .put(&ObjectPath::from(key), PutPayload::from(bytes))
        .await
        .with_context(|| format!("writing {key}"))?;
    Ok(())
}

/// Loads window tensors and converts labels; windows without imagery or with a label of another size are
/// skipped and counted.
/// Where a project's window tensors are read from.
pub(crate) struct WindowSource<'a> {
    pub store: &'a dyn ObjectStore,
    pub keys: &'a ProjectKeys,
    /// The object keys each window's acquisition recorded (windows acquired before acquisitions had
    /// their own folders fall back to `keys.window`).
    pub objects: &'a std::collections::HashMap<String, (Vec<String>, Option<uuid::Uuid>)>,
    pub modalities: &'a [Modality],
    pub device: &'a Device,
}

pub(crate) async fn load_examples(
    src: &WindowSource<'_>,
    examples: &[TrainingExample],
    class_ids: &[i32],
    progress: &crate::Progress,
    split_filter: Option<Split>,
) -> Result<(Vec<(Split, Example)>, BTreeMap<String, usize>), StepError> {
    let WindowSource {
        store,
        keys,
        objects,
        modalities,
        device,
    } = *src;
    let mut out = Vec::new();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let wanted: Vec<&TrainingExample> = examples
        .iter()
        .filter(|e| split_filter.is_none_or(|s| s == e.split))
        .collect();
    for (i, e) in wanted.iter().enumerate() {
        let mut files = Vec::new();
        for &m in modalities {
            let suffix = format!("/{}.safetensors", m.name());
            let key = objects
                .get(&e.window_id)
                .and_then(|(o, _)| o.iter().find(|k| k.ends_with(&suffix)).cloned())
                .unwrap_or_else(|| keys.window(&e.window_id, m));
            if let Some(b) = get_bytes(store, &ObjectPath::from(key)).await? {
                files.push((m, b));
            }
        }
        if files.len() != modalities.len() {
            *skipped.entry("no_imagery".into()).or_default() += 1;
            continue;
        }
        let refs: Vec<(Modality, &[u8])> = files.iter().map(|(m, b)| (*m, b.as_slice())).collect();
        let input = match input_from_window(&refs, device) {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!(window = %e.window_id, error = %err, "unusable window tensors");
                *skipped.entry("bad_imagery".into()).or_default() += 1;
                continue;
            }
        };
        let (h, w) = olmoearth::finetune::input_hw(&input).map_err(permanent)?;
        let index = |c: i32| class_ids.iter().position(|&x| x == c);
        let target = match &e.target {
            LabelTarget::Class(c) => match index(*c) {
                Some(i) => Target::Class(u32::try_from(i).unwrap_or(0)),
                None => {
                    *skipped.entry("unknown_class".into()).or_default() += 1;
                    continue;
                }
            },
            #[expect(
                clippy::cast_possible_truncation,
                reason = "labels are f32 in training"
            )]
            LabelTarget::Value(v) => Target::Value(*v as f32),
            LabelTarget::Mask { size, pixels } => {
                let size = *size as usize;
                if size != h || size != w || pixels.len() != h * w {
                    *skipped.entry("label_size_mismatch".into()).or_default() += 1;
                    continue;
                }
                let lut: Vec<u8> = (0..=255u8)
                    .map(|v| {
                        if v == IGNORE {
                            IGNORE
                        } else {
                            index(i32::from(v))
                                .and_then(|i| u8::try_from(i).ok())
                                .unwrap_or(IGNORE)
                        }
                    })
                    .collect();
                Target::Mask(pixels.iter().map(|&p| lut[usize::from(p)]).collect())
            }
        };
        out.push((
            e.split,
            Example {
                id: e.window_id.clone(),
                input,
                target,
            },
        ));
        #[expect(clippy::cast_precision_loss, reason = "a progress fraction")]
        progress.set(
            0.1 * (i + 1) as f32 / wanted.len().max(1) as f32,
            format!("loading windows: {} of {}", i + 1, wanted.len()),
        );
    }
    Ok((out, skipped))
}

/// A permanent error when the project's windows hold imagery of settings it no longer has.
pub(crate) async fn refuse_stale(ctx: &StepContext) -> Result<(), StepError> {
    match ctx.stale_refusal().await? {
        Some(msg) => Err(permanent(anyhow::anyhow!(msg))),
        None => Ok(()),
    }
}

/// The `train` kind.
#[derive(Debug, Clone, Copy)]
pub struct Train;

impl Step for Train {
    type Args = TrainArgs;

    fn run(
        &self,
        ctx: StepContext,
        args: TrainArgs,
    ) -> BoxFuture<'static, Result<StepOutput, StepError>> {
        Box::pin(async move {
            refuse_stale(&ctx).await?;
            // Before any other work: no pretrained checkpoint and no permission to start from random
            // weights is a permanent failure that says what to do.
            let project = ctx.project().await?;
            prepare_encoder(&ctx, &project).await?;
            let (version, examples) = ctx.training_examples(args.label_set_version).await?;
            train_on_examples(&ctx, &args, version, examples).await
        })
    }
}

/// Sends fit progress to the step, checkpoints to the object store and epochs to `training_epoch`.
struct StepSink {
    ctx: StepContext,
    store: Arc<dyn ObjectStore>,
    handle: tokio::runtime::Handle,
    ckpt_prefix: String,
    state: CheckpointState,
    metric: &'static str,
}

impl FitSink for StepSink {
    fn progress(&mut self, fraction: f32, message: &str) {
        self.ctx.progress.set(fraction, message);
    }

    fn cancelled(&self) -> bool {
        self.ctx.cancel.is_cancelled()
    }

    fn epoch_done(
        &mut self,
        state: &FitState,
        checkpoint: &[u8],
        best: Option<&[u8]>,
    ) -> olmoearth::Result<()> {
        let epoch = state.epoch;
        // Files go under this claim's own folder, so two executions of the step (one that lost its
        // lease and does not know it yet) never overwrite or delete each other's files; state.json
        // names them relative to the checkpoint folder, so a later claim resumes from them.
        let claim = self.ctx.claim_id;
        let ckpt_name = format!("{claim}/epoch-{epoch:04}.safetensors");
        let best_name = best.map(|_| format!("{claim}/best-{epoch:04}.safetensors"));
        let old = (self.state.checkpoint.clone(), self.state.best.clone());
        self.state.fit = state.clone();
        self.state.checkpoint = ckpt_name.clone();
        if best_name.is_some() {
            self.state.best.clone_from(&best_name);
        }
        let record = state.history.last().cloned();
        let store = self.store.clone();
        let prefix = self.ckpt_prefix.clone();
        let state_json =
            serde_json::to_string_pretty(&self.state).map_err(|e| olmoearth::Error::Sink {
                what: "saving the checkpoint".into(),
                reason: e.to_string(),
            })?;
        let ckpt = checkpoint.to_vec();
        let best = best.map(<[u8]>::to_vec);
        let ctx = self.ctx.clone();
        let (step_id, metric) = (self.ctx.step_id, self.metric);
        let own = format!("{claim}/");
        let res: anyhow::Result<()> = self.handle.block_on(async move {
            // Files first, then state.json names them: a crash in between leaves the previous state valid.
            put_bytes(store.as_ref(), &format!("{prefix}/{ckpt_name}"), ckpt).await?;
            if let (Some(b), Some(name)) = (best, &best_name) {
                put_bytes(store.as_ref(), &format!("{prefix}/{name}"), b).await?;
            }
            // The epoch's row and the commit point, fenced by the claim: the step row stays locked
            // while state.json is written, so no other claim of the step exists meanwhile, and an
            // execution that lost its lease moves neither (every epoch state.json names has its row).
            let epoch = record.map(|r| models::TrainingEpoch {
                step_id,
                epoch: i32::try_from(r.epoch).unwrap_or(i32::MAX),
                phase: r.phase,
                train_loss: r.train_loss,
                val_loss: r.val_loss,
                val_metric: r.val_metric,
                metric: metric.into(),
                seconds: r.seconds,
            });
            ctx.record_epoch(epoch, format!("{prefix}/state.json"), state_json)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            // This claim's superseded files go (another claim's never); a failed delete only leaves a
            // stray file behind.
            let (old_ckpt, old_best) = old;
            if old_ckpt.starts_with(&own) && old_ckpt != ckpt_name {
                let _ = store
                    .delete(&ObjectPath::from(format!("{prefix}/{old_ckpt}")))
                    .await;
            }
            if let (Some(old_best), Some(new_best)) = (old_best, &best_name)
                && old_best.starts_with(&own)
                && &old_best != new_best
            {
                let _ = store
                    .delete(&ObjectPath::from(format!("{prefix}/{old_best}")))
                    .await;
            }
            Ok(())
        });
        res.map_err(|e| olmoearth::Error::Sink {
            what: "saving the checkpoint".into(),
            reason: format!("{e:#}"),
        })
    }
}

fn fit_error(e: olmoearth::Error) -> StepError {
    match e {
        olmoearth::Error::Cancelled => StepError::Cancelled,
        // Writing to the object store: worth another attempt, which resumes from the last checkpoint.
        e @ olmoearth::Error::Sink { .. } => retryable(e),
        e => permanent(anyhow::anyhow!(e).context("training")),
    }
}

/// The body of `train` for examples already read: loads windows, fits the baseline and the model,
/// resuming from the run's last checkpoint when one matches, and writes the model files.
pub async fn train_on_examples(
    ctx: &StepContext,
    args: &TrainArgs,
    label_set_version: i32,
    examples: Vec<TrainingExample>,
) -> Result<StepOutput, StepError> {
    let store = ctx.objects(StepKind::Train)?;
    let project = ctx.project().await?;
    let size: ModelSize = project.model_size;
    let device = olmoearth::device::parse_device(args.device.as_deref().unwrap_or("auto"))
        .map_err(permanent)?;
    // Where the encoder runs and in what: bf16 on GPUs that have it (f32 parameters), else f32.
    let device_name = olmoearth::device::kind_name(&device);
    let compute_dtype = olmoearth::device::compute_dtype(&device).as_str();
    let task = project.task;
    let class_ids = if task == Task::Regression {
        Vec::new()
    } else {
        class_ids(&project.classes, &examples)
    };
    if task != Task::Regression && class_ids.len() < 2 {
        return Err(permanent(anyhow::anyhow!(
            "training needs labels of at least two classes, found {}",
            class_ids.len()
        )));
    }
    let keys = ctx.keys();
    let ckpt_prefix = keys.checkpoints(ctx.run_id);
    let ModelKeys {
        manifest: model_key,
        weights: weights_key,
        baseline: baseline_key,
    } = keys.trained_model(ctx.run_id, ctx.claim_id);
    let opts = args.fit_options();

    ctx.progress.set(0.0, "loading the encoder");
    let random = prepare_encoder(ctx, &project).await?;
    let model_dir = ctx.model_dir.clone();
    let dev = device.clone();
    let seed = opts.seed;
    let (
        Pretrained {
            from: initialised_from,
            weights: _,
            cfg: enc_cfg,
            sd,
            note: init_note,
        },
        encoder_sha256,
    ) = tokio::task::spawn_blocking(move || {
        let p = pretrained(model_dir.as_deref(), size, seed, &dev, random)?;
        let sha = p.weights.as_deref().and_then(file_sha256);
        Ok::<_, String>((p, sha))
    })
    .await
    .map_err(retryable)?
    .map_err(|reason| permanent(anyhow::anyhow!(reason)))?;
    let modalities: Vec<Modality> = project.modalities.clone();
    let head = args.head.unwrap_or_else(|| task.default_head());
    let mut cfg = TaskModelConfig {
        format: olmoearth::task::TASK_MODEL_FORMAT,
        encoder: enc_cfg,
        model_size: size.name().into(),
        patch_size: usize::try_from(project.patch_size).unwrap_or(4),
        task,
        num_outputs: if task == Task::Regression {
            1
        } else {
            class_ids.len()
        },
        head,
        modalities: modalities.clone(),
        window_size: usize::try_from(project.window_size).unwrap_or(64),
        initialised_from: initialised_from.clone(),
        pixel_channels: 0,
        pixel_context: olmoearth::task::PIXEL_CONTEXT_RADII.to_vec(),
        context_observed_only: true,
    };

    let ids: Vec<String> = examples.iter().map(|e| e.window_id.clone()).collect();
    let objects = ctx.objects_of(&ids).await?;
    // The acquisitions whose imagery this model learns from, for its lineage.
    let acquisition_runs: std::collections::BTreeSet<uuid::Uuid> =
        objects.values().filter_map(|(_, run)| *run).collect();
    let source = WindowSource {
        store: store.as_ref(),
        keys: &keys,
        objects: &objects,
        modalities: &modalities,
        device: &device,
    };
    let (loaded, skipped) =
        load_examples(&source, &examples, &class_ids, &ctx.progress, None).await?;
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut test = Vec::new();
    for (split, e) in loaded {
        match split {
            Split::Train => train.push(e),
            Split::Val => val.push(e),
            Split::Test => test.push(e),
        }
    }
    if train.is_empty() {
        return Err(permanent(anyhow::anyhow!(
            "no training window has both a label and imagery (skipped: {skipped:?})"
        )));
    }
    // The hybrid head reads the input pixels (bands × months of every modality) and their neighbourhood
    // means.
    cfg.pixel_channels = pixel_channels(&train[0].input, &cfg.pixel_context).map_err(permanent)?;
    if let Some(e) = train
        .iter()
        .chain(&val)
        .chain(&test)
        .find(|e| pixel_channels(&e.input, &cfg.pixel_context).ok() != Some(cfg.pixel_channels))
    {
        return Err(permanent(anyhow::anyhow!(
            "window {} has another number of months or bands than the others; re-run the acquisition",
            e.id
        )));
    }
    cfg.validate().map_err(permanent)?;

    // A checkpoint of this run for the same model and labels is resumed.
    let saved: Option<CheckpointState> = get_bytes(
        store.as_ref(),
        &ObjectPath::from(format!("{ckpt_prefix}/state.json")),
    )
    .await?
    .and_then(|b| serde_json::from_slice(&b).ok())
    .filter(|s: &CheckpointState| {
        s.config == cfg && s.label_set_version == label_set_version && s.class_ids == class_ids
    });
    let mut resume: Option<(CheckpointState, Vec<u8>, Option<Vec<u8>>)> = None;
    if let Some(s) = saved {
        let ckpt = get_bytes(
            store.as_ref(),
            &ObjectPath::from(format!("{ckpt_prefix}/{}", s.checkpoint)),
        )
        .await?;
        let best = match &s.best {
            Some(b) => {
                get_bytes(
                    store.as_ref(),
                    &ObjectPath::from(format!("{ckpt_prefix}/{b}")),
                )
                .await?
            }
            None => None,
        };
        if let Some(ckpt) = ckpt {
            resume = Some((s, ckpt, best));
        }
    }
    let resumed_from = resume.as_ref().map(|r| r.0.fit.epoch);
    if let Some(epoch) = resumed_from {
        ctx.progress
            .set(0.1, format!("resuming after epoch {epoch}"));
    } else if let Some(note) = &init_note {
        ctx.progress.set(0.1, note.clone());
    }

    let handle = tokio::runtime::Handle::current();
    let sink = StepSink {
        ctx: ctx.clone(),
        store: store.clone(),
        handle: handle.clone(),
        ckpt_prefix: ckpt_prefix.clone(),
        state: CheckpointState {
            config: cfg.clone(),
            label_set_version,
            class_ids: class_ids.clone(),
            fit: FitState::default(),
            checkpoint: String::new(),
            best: None,
        },
        metric: metric_name(task),
    };
    let cfg2 = cfg.clone();
    let started = std::time::Instant::now();
    let job = tokio::task::spawn_blocking(move || -> Result<Fitted, StepError> {
        let mut sink = sink;
        let resume = resume.map(|(s, ckpt, best)| {
            sink.state.checkpoint.clone_from(&s.checkpoint);
            sink.state.best.clone_from(&s.best);
            (s.fit, ckpt, best)
        });
        fit_candidates(
            &cfg2,
            &sd,
            &device,
            opts,
            resume,
            (&train, &val, &test),
            &mut sink,
        )
        .map_err(fit_error)
    });
    let abort = job.abort_handle();
    let fitted = tokio::select! {
        r = job => r.map_err(retryable)??,
        () = ctx.cancel.cancelled() => {
            abort.abort();
            return Err(StepError::Cancelled);
        }
    };
    let Fitted {
        config: model_cfg,
        weights,
        state,
        candidates,
        choice,
        probe,
    } = fitted;

    // What evaluate scores: every candidate's test predictions, the best simpler one as `baseline`.
    let stored: Vec<StoredCandidate> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| StoredCandidate {
            name: c.name.into(),
            description: c.description.clone(),
            publishable: c.publishable(),
            chosen: i == choice.index,
            val_score: c.val_score,
            cross_validated: c.cross_validated,
            judge_score: c.judge_score,
            test_predictions: c.test.clone(),
        })
        .collect();
    let best_simple = candidates
        .iter()
        .filter(|c| c.name != FINE_TUNED && c.val_score.is_some())
        .fold(None::<&Candidate>, |best, c| match best {
            Some(b)
                if !olmoearth::finetune::metric_better(
                    task,
                    c.val_score.unwrap_or_default(),
                    b.val_score.unwrap_or_default(),
                ) =>
            {
                Some(b)
            }
            _ => Some(c),
        })
        .or_else(|| candidates.iter().find(|c| c.name != FINE_TUNED));
    let mut summary = serde_json::to_value(&probe).map_err(permanent)?;
    if let Some(b) = best_simple {
        summary["method"] = json!(b.name);
        summary["description"] = json!(b.description);
        summary["val_score"] = json!(b.val_score);
    }
    let baseline_doc = json!({
        "summary": summary,
        "test_predictions": best_simple.map(|b| &b.test),
        "candidates": stored,
        "selection": {
            "metric": metric_name(task),
            "chosen": choice.chosen,
            "reason": choice.reason,
            "fine_tuned_lost": choice.fine_tuned_lost,
        },
    });
    put_bytes(
        store.as_ref(),
        &baseline_key,
        serde_json::to_vec(&baseline_doc).map_err(permanent)?,
    )
    .await
    .map_err(retryable)?;

    let sha = hex(&sha2::Sha256::digest(&weights));
    let best = state
        .best_epoch
        .and_then(|b| state.history.iter().find(|r| r.epoch == b))
        .cloned();
    let chosen = &candidates[choice.index];
    let metrics = json!({
        "metric": metric_name(task),
        "chosen": choice.chosen,
        "chosen_description": chosen.description,
        "selection_reason": choice.reason,
        "fine_tuned_lost": choice.fine_tuned_lost,
        "val_metric": chosen.val_score,
        "candidates": candidates.iter().map(|c| json!({
            "name": c.name,
            "val_score": c.val_score,
            "cross_validated": c.cross_validated,
            "judge_score": c.judge_score,
        })).collect::<Vec<_>>(),
        "best_epoch": state.best_epoch,
        "fine_tuned_val_loss": best.as_ref().and_then(|r| r.val_loss),
        "baseline": summary,
        "stopped_early": state.stopped_early,
    });
    let cfg = model_cfg;
    let manifest = ModelManifest {
        config: cfg.clone(),
        label_set_version,
        weights_key: weights_key.clone(),
        weights_sha256: sha.clone(),
        class_ids: class_ids.clone(),
        metrics: metrics.clone(),
        history: state.history.clone(),
    };
    put_bytes(store.as_ref(), &weights_key, weights)
        .await
        .map_err(retryable)?;
    put_bytes(
        store.as_ref(),
        &model_key,
        serde_json::to_vec_pretty(&manifest).map_err(permanent)?,
    )
    .await
    .map_err(retryable)?;
    ctx.progress.set(1.0, "model written");
    let counts = json!({"train": split_len(&examples, Split::Train), "val": split_len(&examples, Split::Val), "test": split_len(&examples, Split::Test), "skipped": skipped});
    Ok(StepOutput {
        output: json!({
            "model_json": model_key,
            "weights": weights_key,
            "baseline": baseline_key,
            "weights_sha256": sha,
            "label_set_version": label_set_version,
            "initialised_from": initialised_from,
            "encoder_sha256": encoder_sha256,
            "initialisation_note": init_note,
            "random_init_allowed_by_project": project.allow_random_init,
            "resumed_after_epoch": resumed_from,
            "acquisition_runs": acquisition_runs,
            "epochs_run": state.epoch,
            "metrics": metrics,
            "history": state.history,
            "examples": counts,
            "seconds": started.elapsed().as_secs_f64(),
            "device": device_name,
            "compute_dtype": compute_dtype,
        }),
        artifacts: vec![groundwork_store::jobs::Artifact {
            name: "model".into(),
            uri: Some(model_key),
            metadata: json!({"weights": weights_key, "sha256": manifest.weights_sha256}),
        }],
    })
}

/// The files of the model run `run_id` of the project trained: the folder its succeeded `train` step
/// named, or the run's fixed folder for runs older than per-claim folders.
pub(crate) async fn model_keys(
    ctx: &StepContext,
    run_id: uuid::Uuid,
) -> Result<ModelKeys, StepError> {
    let keys = ctx.keys();
    Ok(match ctx.trained_manifest_key(run_id).await? {
        Some(manifest) if keys.owns(&manifest) => ModelKeys::beside(&manifest),
        _ => keys.model(run_id),
    })
}

fn split_len(examples: &[TrainingExample], split: Split) -> usize {
    examples.iter().filter(|e| e.split == split).count()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
