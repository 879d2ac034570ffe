//! Fitting a task model on labelled windows (spec §5.2, rslearn's fine-tuning recipe):
//!
//! - a **frozen-encoder baseline**: embeddings of the pretrained encoder (pooled per window, or per patch
//!   token for segmentation) → k-nearest neighbours and a ridge linear probe, fitted on train and selected
//!   on validation;
//! - **fine-tuning** of [`TrainableTaskModel`]: the encoder frozen for the first epochs (the head trains on
//!   cached features), then unfrozen at a reduced learning rate; flips and 90° rotations applied alike to
//!   inputs (or cached features) and target masks; early stopping on the validation loss; a checkpoint
//!   (weights, optimiser moments, history) after every epoch through a [`FitSink`], from which
//!   [`Trainer::resume`] continues at the next epoch.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, EncoderInput};
use crate::error::{Error, Result};
use crate::heads::feature_map;
use crate::task::{
    Head, HeadKind, Task, TaskModelConfig, TrainableTaskModel, dihedral, dihedral_input,
    outputs_to_predictions, safetensors_metadata, stack_inputs, to_safetensors,
};
use crate::train::{AdamW, AdamWConfig, cross_entropy, cross_entropy_2d, mse};

/// Mask value of a pixel without a label.
pub const IGNORE: u8 = 255;

/// What a window is labelled with (class indices are 0-based).
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A class per window.
    Class(u32),
    /// A value per window.
    Value(f32),
    /// A class per pixel, row-major `H × W`, [`IGNORE`] where unlabelled.
    Mask(Vec<u8>),
}

/// One labelled window.
#[derive(Debug, Clone)]
pub struct Example {
    /// Window id.
    pub id: String,
    /// Normalised input, B = 1.
    pub input: EncoderInput,
    /// Label.
    pub target: Target,
}

/// A prediction for one window, comparable with its [`Target`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// A class per window.
    Class(u32),
    /// A value per window.
    Value(f64),
    /// A class per pixel, row-major `H × W`.
    Map(Vec<u8>),
}

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitOptions {
    /// Total epochs (frozen + unfrozen).
    pub epochs: usize,
    /// Epochs with the encoder frozen (head trained on cached features).
    pub freeze_epochs: usize,
    /// Windows per optimiser step.
    pub batch_size: usize,
    /// Head learning rate.
    pub lr: f64,
    /// Encoder learning rate after unfreezing, as a fraction of `lr` (0.1 = lr/10).
    pub unfrozen_lr_factor: f64,
    /// Layer-wise learning-rate decay of the encoder (1.0 = none).
    pub layer_decay: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Epochs without a better validation loss before stopping.
    pub patience: usize,
    /// Random flips and 90° rotations.
    pub augment: bool,
    /// Shuffling and augmentation seed.
    pub seed: u64,
    /// Windows per forward pass when embedding or validating.
    pub eval_batch_size: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            // Unfreezing is opt-in (freeze_epochs < epochs): on a 2-core CPU one unfrozen epoch of the
            // demo (48 windows of 64×64 px, T = 4) takes over ten minutes.
            epochs: 30,
            freeze_epochs: 30,
            batch_size: 8,
            lr: 3e-3,
            unfrozen_lr_factor: 0.1,
            layer_decay: 1.0,
            weight_decay: 0.01,
            patience: 8,
            augment: true,
            seed: 17,
            eval_batch_size: 8,
        }
    }
}

/// One epoch of the training curve.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// `frozen` or `unfrozen`.
    pub phase: String,
    /// Mean training loss.
    pub train_loss: f64,
    /// Validation loss (none without validation windows).
    pub val_loss: Option<f64>,
    /// Validation metric ([`metric_name`]).
    pub val_metric: Option<f64>,
    /// Wall time of the epoch.
    pub seconds: f64,
}

/// Progress of a fit, saved with every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FitState {
    /// Epochs completed.
    pub epoch: usize,
    /// The curve so far.
    pub history: Vec<EpochRecord>,
    /// Epoch of the best validation loss.
    pub best_epoch: Option<usize>,
    /// Best validation loss (training loss without validation windows).
    pub best_loss: Option<f64>,
    /// Epochs since the best one.
    pub since_best: usize,
    /// Whether early stopping ended the fit.
    pub stopped_early: bool,
    /// Regression targets are standardised with this `(mean, std)`.
    pub target_scale: Option<(f64, f64)>,
}

/// The metric tracked during training: `accuracy` (pixel accuracy for segmentation) or `rmse`.
pub fn metric_name(task: Task) -> &'static str {
    if task == Task::Regression {
        "rmse"
    } else {
        "accuracy"
    }
}

/// Where a fit reports to.
pub trait FitSink {
    /// Progress of the whole fit (0–1) with a message.
    fn progress(&mut self, fraction: f32, message: &str);
    /// Whether to stop now (checked between batches).
    fn cancelled(&self) -> bool;
    /// Called after every epoch: the state, the checkpoint ([`Trainer::checkpoint`]) and, when this epoch
    /// is the best so far, the model weights.
    fn epoch_done(
        &mut self,
        state: &FitState,
        checkpoint: &[u8],
        best: Option<&[u8]>,
    ) -> Result<()>;
}

/// A small deterministic generator (splitmix64) for shuffling and augmentation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Pooled features `(D, h, w)` of every example with `encoder`, `batch` windows per pass.
pub fn embed_examples(
    encoder: &Encoder,
    examples: &[Example],
    patch_size: usize,
    batch: usize,
    sink: &mut dyn FitSink,
    progress: (f32, f32),
) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(examples.len());
    for (ci, chunk) in examples.chunks(batch.max(1)).enumerate() {
        if sink.cancelled() {
            return Err(Error::Cancelled);
        }
        let inputs: Vec<&EncoderInput> = chunk.iter().map(|e| &e.input).collect();
        let x = stack_inputs(&inputs)?;
        let f = feature_map(&encoder.forward(&x, patch_size)?)?;
        for i in 0..chunk.len() {
            out.push(f.get(i)?);
        }
        let done = ((ci + 1) * batch.max(1)).min(examples.len());
        let frac = progress.0 + (progress.1 - progress.0) * done as f32 / examples.len() as f32;
        sink.progress(
            frac,
            &format!("embedding windows: {done} of {}", examples.len()),
        );
    }
    Ok(out)
}

/// Target tensor of a batch: `(B, H, W)` i64 (−1 ignored) for masks, `(B)` i64 for classes, `(B, 1)` f32
/// standardised values for regression.
fn target_tensor(
    targets: &[&Target],
    aug: u8,
    scale: Option<(f64, f64)>,
    hw: (usize, usize),
    device: &Device,
) -> Result<Tensor> {
    match targets.first() {
        Some(Target::Mask(_)) => {
            let mut v = Vec::with_capacity(targets.len() * hw.0 * hw.1);
            for t in targets {
                let Target::Mask(m) = t else {
                    return Err(Error::InvalidInput("mixed target kinds in a batch".into()));
                };
                if m.len() != hw.0 * hw.1 {
                    return Err(Error::InvalidInput(format!(
                        "a label mask has {} pixels, the window {}×{}",
                        m.len(),
                        hw.0,
                        hw.1
                    )));
                }
                v.extend(
                    m.iter()
                        .map(|&c| if c == IGNORE { -1i64 } else { i64::from(c) }),
                );
            }
            let t = Tensor::from_vec(v, (targets.len(), hw.0, hw.1), device)?;
            dihedral(&t, aug, 1)
        }
        Some(Target::Class(_)) => {
            let v: Vec<i64> = targets
                .iter()
                .map(|t| match t {
                    Target::Class(c) => Ok(i64::from(*c)),
                    _ => Err(Error::InvalidInput("mixed target kinds in a batch".into())),
                })
                .collect::<Result<_>>()?;
            Ok(Tensor::from_vec(v, targets.len(), device)?)
        }
        Some(Target::Value(_)) => {
            let (mean, std) = scale.unwrap_or((0.0, 1.0));
            let v: Vec<f32> = targets
                .iter()
                .map(|t| match t {
                    Target::Value(x) => Ok(((f64::from(*x) - mean) / std) as f32),
                    _ => Err(Error::InvalidInput("mixed target kinds in a batch".into())),
                })
                .collect::<Result<_>>()?;
            Ok(Tensor::from_vec(v, (targets.len(), 1), device)?)
        }
        None => Err(Error::InvalidInput("empty batch".into())),
    }
}

fn loss_of(task: Task, raw: &Tensor, target: &Tensor) -> Result<Tensor> {
    match task {
        Task::Segmentation => cross_entropy_2d(raw, target, -1),
        Task::Classification => cross_entropy(raw, target, -1),
        Task::Regression => {
            // A dense regression head's output is averaged to the window value.
            let pred = if raw.rank() == 4 {
                raw.mean_keepdim(3)?.mean_keepdim(2)?.flatten_from(1)?
            } else {
                raw.clone()
            };
            mse(&pred, target)
        }
    }
}

/// Turns raw outputs of one batch into per-window predictions.
fn predictions(
    cfg: &TaskModelConfig,
    raw: &Tensor,
    hw: (usize, usize),
    scale: Option<(f64, f64)>,
) -> Result<Vec<Prediction>> {
    let b = raw.dim(0)?;
    if cfg.task == Task::Regression {
        let (mean, std) = scale.unwrap_or((0.0, 1.0));
        let pred = if raw.rank() == 4 {
            raw.mean_keepdim(3)?.mean_keepdim(2)?.flatten_all()?
        } else {
            raw.flatten_all()?
        };
        return Ok(pred
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .into_iter()
            .map(|v| Prediction::Value(v * std + mean))
            .collect());
    }
    let probs = outputs_to_predictions(cfg, raw, hw.0, hw.1)?;
    let cls = probs.argmax(1)?.to_dtype(DType::U32)?; // (B,H,W)
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let m: Vec<u32> = cls.get(i)?.flatten_all()?.to_vec1()?;
        if cfg.task == Task::Classification {
            out.push(Prediction::Class(m.first().copied().unwrap_or(0)));
        } else {
            out.push(Prediction::Map(
                m.into_iter()
                    .map(|c| u8::try_from(c).unwrap_or(IGNORE))
                    .collect(),
            ));
        }
    }
    Ok(out)
}

/// Running metric: correct/total for classes, squared error sum for values.
#[derive(Debug, Default, Clone, Copy)]
struct MetricSum {
    correct: f64,
    total: f64,
    sq: f64,
}

impl MetricSum {
    fn add(&mut self, p: &Prediction, t: &Target) {
        match (p, t) {
            (Prediction::Class(a), Target::Class(b)) => {
                self.total += 1.0;
                if a == b {
                    self.correct += 1.0;
                }
            }
            (Prediction::Map(a), Target::Mask(b)) => {
                for (x, y) in a.iter().zip(b) {
                    if *y != IGNORE {
                        self.total += 1.0;
                        if x == y {
                            self.correct += 1.0;
                        }
                    }
                }
            }
            (Prediction::Value(a), Target::Value(b)) => {
                self.total += 1.0;
                self.sq += (a - f64::from(*b)).powi(2);
            }
            _ => {}
        }
    }

    fn value(&self, task: Task) -> Option<f64> {
        if self.total == 0.0 {
            None
        } else if task == Task::Regression {
            Some((self.sq / self.total).sqrt())
        } else {
            Some(self.correct / self.total)
        }
    }
}

/// Fine-tuning: model, optimiser, state.
#[derive(Debug)]
pub struct Trainer {
    model: TrainableTaskModel,
    opt: AdamW,
    state: FitState,
    opts: FitOptions,
    best: Option<Vec<u8>>,
}

fn adamw_config(opts: &FitOptions) -> AdamWConfig {
    AdamWConfig {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..AdamWConfig::default()
    }
}

impl Trainer {
    /// A fresh fit. Regression targets of `train` set the value standardisation.
    pub fn new(model: TrainableTaskModel, opts: FitOptions, train: &[Example]) -> Result<Self> {
        let opt = model.optimizer(opts.layer_decay, adamw_config(&opts))?;
        let mut state = FitState::default();
        if model.config().task == Task::Regression {
            let vals: Vec<f64> = train
                .iter()
                .filter_map(|e| match e.target {
                    Target::Value(v) => Some(f64::from(v)),
                    _ => None,
                })
                .collect();
            let n = vals.len().max(1) as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            state.target_scale = Some((mean, var.sqrt().max(1e-6)));
        }
        Ok(Trainer {
            model,
            opt,
            state,
            opts,
            best: None,
        })
    }

    /// Continues a fit from a [`Trainer::checkpoint`], its state and the best weights so far.
    pub fn resume(
        cfg: TaskModelConfig,
        checkpoint: &[u8],
        state: FitState,
        best: Option<Vec<u8>>,
        opts: FitOptions,
        device: &Device,
    ) -> Result<Self> {
        let model = TrainableTaskModel::from_safetensors(cfg, checkpoint, device)?;
        let mut opt = model.optimizer(opts.layer_decay, adamw_config(&opts))?;
        let meta = safetensors_metadata(checkpoint)?;
        let step: i32 = meta
            .get("optim.step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::InvalidInput("checkpoint has no optimiser step".into()))?;
        let tensors = candle_core::safetensors::load_buffer(checkpoint, device)?;
        let n: usize = meta
            .get("optim.params")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut moments = Vec::with_capacity(n);
        for i in 0..n {
            let get = |k: String| {
                tensors
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| Error::InvalidInput(format!("checkpoint lacks {k}")))
            };
            moments.push((get(format!("optim.m.{i}"))?, get(format!("optim.v.{i}"))?));
        }
        opt.set_state(step, moments)?;
        Ok(Trainer {
            model,
            opt,
            state,
            opts,
            best,
        })
    }

    /// Linear probing, then fine-tuning: a fresh fit with the light segmentation head starts its 1×1
    /// convolution from the frozen-encoder linear probe (`baseline`), scaled by the temperature of
    /// [`PROBE_TEMPERATURES`] with the lowest validation loss (training loss without validation
    /// windows). That starting point is the best model so far, so training keeps it unless an epoch
    /// beats it on validation. Returns the temperature, or `None` when it does not apply (another head,
    /// regression, a resumed fit or no cached features).
    pub fn start_from_probe(
        &mut self,
        baseline: &Baseline,
        train: &[Example],
        train_features: &[Tensor],
        val: &[Example],
        val_features: &[Tensor],
        sink: &mut dyn FitSink,
    ) -> Result<Option<f64>> {
        let cfg = self.model.config().clone();
        if self.state.epoch > 0 || !matches!(self.model.head(), Head::Light(_)) {
            return Ok(None);
        }
        let Some((weights, biases)) = baseline.linear_map() else {
            return Ok(None);
        };
        let d = cfg.encoder.embedding_size;
        let k = cfg.num_outputs;
        if weights.len() != k * d || biases.len() != k {
            return Ok(None);
        }
        let vars = self.model.head_vars();
        let find = |suffix: &str| {
            vars.iter()
                .find(|(name, _)| name.ends_with(suffix))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::InvalidInput(format!("the head has no {suffix}")))
        };
        let (w_var, b_var) = (find("conv.weight")?, find("conv.bias")?);
        let device = w_var.device().clone();
        let w = Tensor::from_vec(weights, (k, d, 1, 1), &device)?;
        let b = Tensor::from_vec(biases, k, &device)?;
        let (examples, features) = if val.is_empty() {
            (train, train_features)
        } else {
            (val, val_features)
        };
        let mut best: Option<(f64, f64)> = None;
        for &t in &PROBE_TEMPERATURES {
            w_var.set(&(&w * t)?.to_dtype(w_var.dtype())?)?;
            b_var.set(&(&b * t)?.to_dtype(b_var.dtype())?)?;
            let (loss, _) = self.evaluate(examples, Some(features), sink)?;
            if best.is_none_or(|(l, _)| loss < l) {
                best = Some((loss, t));
            }
        }
        let Some((loss, t)) = best else {
            return Ok(None);
        };
        w_var.set(&(&w * t)?.to_dtype(w_var.dtype())?)?;
        b_var.set(&(&b * t)?.to_dtype(b_var.dtype())?)?;
        self.state.best_loss = Some(loss);
        self.state.best_epoch = Some(0);
        self.best = Some(self.model.to_safetensors()?);
        Ok(Some(t))
    }

    /// The state so far.
    pub fn state(&self) -> &FitState {
        &self.state
    }

    /// The model.
    pub fn model(&self) -> &TrainableTaskModel {
        &self.model
    }

    /// Weights and optimiser moments as safetensors (`encoder.*`, `head.*`, `optim.m.i`, `optim.v.i`;
    /// metadata `optim.step`, `optim.params`).
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let mut tensors = self.model.named_tensors();
        let (step, moments) = self.opt.state();
        let n = moments.len();
        for (i, (m, v)) in moments.into_iter().enumerate() {
            tensors.push((format!("optim.m.{i}"), m));
            tensors.push((format!("optim.v.{i}"), v));
        }
        let meta = HashMap::from([
            ("optim.step".to_string(), step.to_string()),
            ("optim.params".to_string(), n.to_string()),
        ]);
        to_safetensors(tensors, Some(meta))
    }

    /// The final model's weights: the best epoch's (or the current ones), with the regression target
    /// standardisation folded into the output layer so [`crate::task::TaskModel::predict`] returns values
    /// in target units.
    pub fn final_weights(&self) -> Result<Vec<u8>> {
        let bytes = match &self.best {
            Some(b) => b.clone(),
            None => self.model.to_safetensors()?,
        };
        let Some((mean, std)) = self.state.target_scale else {
            return Ok(bytes);
        };
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let layer = if self.model.config().head == HeadKind::UNet {
            "head.final"
        } else {
            "head.out"
        };
        for (suffix, shift) in [("weight", 0.0), ("bias", mean)] {
            let key = format!("{layer}.{suffix}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| Error::InvalidInput(format!("the head has no {key}")))?;
            let scaled = ((t * std)? + shift)?;
            tensors.insert(key, scaled);
        }
        let mut v: Vec<(String, Tensor)> = tensors.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        to_safetensors(v, None)
    }

    /// Runs the remaining epochs. `train_features`/`val_features` are the frozen encoder's features of the
    /// examples ([`embed_examples`]); they are needed while the encoder is frozen.
    pub fn fit(
        &mut self,
        train: &[Example],
        val: &[Example],
        train_features: Option<&[Tensor]>,
        val_features: Option<&[Tensor]>,
        sink: &mut dyn FitSink,
    ) -> Result<()> {
        if train.is_empty() {
            return Err(Error::InvalidInput("no training windows".into()));
        }
        let cfg = self.model.config().clone();
        let device = self.model.encoder().encoder().device().clone();
        let total = self.opts.epochs.max(1);
        while self.state.epoch < self.opts.epochs && !self.state.stopped_early {
            let epoch = self.state.epoch + 1;
            let started = std::time::Instant::now();
            let frozen = epoch <= self.opts.freeze_epochs;
            if !frozen && epoch == self.opts.freeze_epochs + 1 {
                // The unfrozen phase gets its own patience.
                self.state.since_best = 0;
            }
            self.model.set_encoder_frozen(frozen);
            self.opt.set_encoder_frozen(frozen);
            self.opt.set_encoder_lr_factor(if frozen {
                1.0
            } else {
                self.opts.unfrozen_lr_factor
            });
            let feats = if frozen {
                Some(train_features.ok_or_else(|| {
                    Error::InvalidInput("frozen epochs need the cached features".into())
                })?)
            } else {
                None
            };
            let mut rng = Rng::new(self.opts.seed ^ (epoch as u64).wrapping_mul(0x2545_F491));
            let mut order: Vec<usize> = (0..train.len()).collect();
            rng.shuffle(&mut order);
            let bs = self.opts.batch_size.max(1);
            let batches = order.len().div_ceil(bs);
            let mut loss_sum = 0.0;
            for (bi, idx) in order.chunks(bs).enumerate() {
                if sink.cancelled() {
                    return Err(Error::Cancelled);
                }
                let aug = if self.opts.augment {
                    (rng.next_u64() % 8) as u8
                } else {
                    0
                };
                let targets: Vec<&Target> = idx.iter().map(|&i| &train[i].target).collect();
                // Targets are built in the windows' own orientation, then transformed like the inputs.
                let hw = input_hw(&train[idx[0]].input)?;
                let raw = if let Some(feats) = feats {
                    let f: Vec<Tensor> = idx.iter().map(|&i| feats[i].clone()).collect();
                    let f = dihedral(&Tensor::stack(&f, 0)?, aug, 2)?;
                    self.model.head().forward(&f)?
                } else {
                    let inputs: Vec<EncoderInput> = idx
                        .iter()
                        .map(|&i| dihedral_input(&train[i].input, aug))
                        .collect::<Result<_>>()?;
                    let refs: Vec<&EncoderInput> = inputs.iter().collect();
                    let x = stack_inputs(&refs)?;
                    self.model.head().forward(&self.model.features(&x)?)?
                };
                let target = target_tensor(&targets, aug, self.state.target_scale, hw, &device)?;
                let loss = loss_of(cfg.task, &raw, &target)?;
                loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                self.opt.backward_step(&loss)?;
                let frac = (epoch - 1) as f32 / total as f32
                    + (bi + 1) as f32 / (batches as f32 * total as f32);
                sink.progress(
                    0.2 + 0.75 * frac,
                    &format!(
                        "epoch {epoch} of {} ({}): batch {} of {batches}",
                        self.opts.epochs,
                        if frozen {
                            "encoder frozen"
                        } else {
                            "encoder unfrozen"
                        },
                        bi + 1
                    ),
                );
            }
            let train_loss = loss_sum / batches as f64;
            let (val_loss, val_metric) = if val.is_empty() {
                (None, None)
            } else {
                let (l, m) = self.evaluate(val, if frozen { val_features } else { None }, sink)?;
                (Some(l), m)
            };
            let record = EpochRecord {
                epoch,
                phase: if frozen { "frozen" } else { "unfrozen" }.into(),
                train_loss,
                val_loss,
                val_metric,
                seconds: started.elapsed().as_secs_f64(),
            };
            let score = val_loss.unwrap_or(train_loss);
            self.state.epoch = epoch;
            self.state.history.push(record);
            let improved = self.state.best_loss.is_none_or(|b| score < b - 1e-6);
            if improved {
                self.state.best_loss = Some(score);
                self.state.best_epoch = Some(epoch);
                self.state.since_best = 0;
                self.best = Some(self.model.to_safetensors()?);
            } else {
                self.state.since_best += 1;
                if self.state.since_best >= self.opts.patience.max(1) {
                    self.state.stopped_early = true;
                }
            }
            let ckpt = self.checkpoint()?;
            // The first checkpoint also carries a best model that predates it (the probe start).
            let best = if improved || epoch == 1 {
                self.best.as_deref()
            } else {
                None
            };
            sink.epoch_done(&self.state, &ckpt, best)?;
        }
        Ok(())
    }

    /// Mean loss and the metric over `examples` with the current weights (cached frozen features when
    /// given).
    pub fn evaluate(
        &self,
        examples: &[Example],
        features: Option<&[Tensor]>,
        sink: &mut dyn FitSink,
    ) -> Result<(f64, Option<f64>)> {
        let cfg = self.model.config();
        let device = self.model.encoder().encoder().device().clone();
        let encoder = if features.is_none() {
            Some(self.model.inference_encoder()?)
        } else {
            None
        };
        let bs = self.opts.eval_batch_size.max(1);
        let (mut loss_sum, mut n) = (0.0, 0usize);
        let mut metric = MetricSum::default();
        for (ci, chunk) in examples.chunks(bs).enumerate() {
            if sink.cancelled() {
                return Err(Error::Cancelled);
            }
            let hw = input_hw(&chunk[0].input)?;
            let f = match (features, &encoder) {
                (Some(f), _) => Tensor::stack(&f[ci * bs..ci * bs + chunk.len()], 0)?,
                (None, Some(enc)) => {
                    let refs: Vec<&EncoderInput> = chunk.iter().map(|e| &e.input).collect();
                    feature_map(&enc.forward(&stack_inputs(&refs)?, cfg.patch_size)?)?
                }
                (None, None) => return Err(Error::InvalidInput("no encoder".into())),
            };
            let raw = self.model.head().forward(&f)?.detach();
            let targets: Vec<&Target> = chunk.iter().map(|e| &e.target).collect();
            let t = target_tensor(&targets, 0, self.state.target_scale, hw, &device)?;
            let l = loss_of(cfg.task, &raw, &t)?;
            loss_sum += f64::from(l.to_dtype(DType::F32)?.to_scalar::<f32>()?) * chunk.len() as f64;
            n += chunk.len();
            for (p, e) in predictions(cfg, &raw, hw, self.state.target_scale)?
                .iter()
                .zip(chunk)
            {
                metric.add(p, &e.target);
            }
        }
        Ok((loss_sum / n.max(1) as f64, metric.value(cfg.task)))
    }
}

/// `(H, W)` of an input.
pub fn input_hw(input: &EncoderInput) -> Result<(usize, usize)> {
    let mi = input
        .modalities
        .values()
        .next()
        .ok_or_else(|| Error::InvalidInput("no modality in the input".into()))?;
    let d = mi.data.dims();
    if d.len() != 5 {
        return Err(Error::Shape {
            what: "input".into(),
            expected: "(B, H, W, T, C)".into(),
            got: d.to_vec(),
        });
    }
    Ok((d[1], d[2]))
}

/// Predictions of a [`crate::task::TaskModel`] for `examples` (batches of `batch`).
pub fn predict_examples(
    model: &crate::task::TaskModel,
    examples: &[Example],
    batch: usize,
) -> Result<Vec<Prediction>> {
    let cfg = model.config();
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&EncoderInput> = chunk.iter().map(|e| &e.input).collect();
        let x = stack_inputs(&refs)?;
        let probs = model.predict(&x)?; // (B,K,H,W)
        let (b, _, h, w) = probs.dims4()?;
        if cfg.task == Task::Regression {
            let v: Vec<f64> = probs
                .mean_keepdim(3)?
                .mean_keepdim(2)?
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1()?;
            out.extend(v.into_iter().map(Prediction::Value));
            continue;
        }
        let cls = probs.argmax(1)?.to_dtype(DType::U32)?;
        for i in 0..b {
            let m: Vec<u32> = cls.get(i)?.flatten_all()?.to_vec1()?;
            if cfg.task == Task::Classification {
                out.push(Prediction::Class(m.first().copied().unwrap_or(0)));
            } else {
                debug_assert_eq!(m.len(), h * w);
                out.push(Prediction::Map(
                    m.into_iter()
                        .map(|c| u8::try_from(c).unwrap_or(IGNORE))
                        .collect(),
                ));
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------
// Frozen-encoder baseline.

/// Which probe the baseline chose and how each did on validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BaselineSummary {
    /// `knn` or `linear`.
    pub method: String,
    /// Neighbours of the kNN probe.
    pub knn_k: usize,
    /// Ridge penalty of the linear probe.
    pub ridge_lambda: f64,
    /// Validation metric of the kNN probe.
    pub knn_val_metric: Option<f64>,
    /// Validation metric of the linear probe.
    pub linear_val_metric: Option<f64>,
    /// `accuracy` or `rmse`.
    pub metric: String,
    /// Training samples (windows, or patch tokens for segmentation).
    pub train_samples: usize,
}

/// A fitted frozen-embedding probe.
#[derive(Debug, Clone)]
pub struct Baseline {
    task: Task,
    num_classes: usize,
    patch_size: usize,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// Ridge weights `(D + 1, K)` (K = 1 for regression), row-major.
    ridge: Vec<f64>,
    /// Normalised training rows for kNN and their labels (class or value).
    bank: Tensor,
    bank_labels: Vec<f64>,
    /// The summary.
    pub summary: BaselineSummary,
}

/// Rows `(n, D)` and labels of features: patch tokens labelled by the majority of their pixels for
/// segmentation, spatial means for window targets. Patches without a labelled pixel are skipped.
fn samples(
    features: &[Tensor],
    targets: &[&Target],
    p: usize,
) -> Result<(Vec<f32>, Vec<f64>, usize)> {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut d = 0;
    for (f, t) in features.iter().zip(targets) {
        let (dd, h, w) = f.dims3()?;
        d = dd;
        match t {
            Target::Mask(m) => {
                let tokens: Vec<f32> = f.permute((1, 2, 0))?.flatten_all()?.to_vec1()?; // (h,w,D)
                let (hp, wp) = (h * p, w * p);
                if m.len() != hp * wp {
                    return Err(Error::InvalidInput(format!(
                        "a label mask has {} pixels, expected {hp}×{wp}",
                        m.len()
                    )));
                }
                for i in 0..h {
                    for j in 0..w {
                        let mut counts = [0usize; 256];
                        for y in i * p..(i + 1) * p {
                            for x in j * p..(j + 1) * p {
                                counts[usize::from(m[y * wp + x])] += 1;
                            }
                        }
                        counts[usize::from(IGNORE)] = 0;
                        let (best, n) = counts
                            .iter()
                            .enumerate()
                            .max_by_key(|&(c, n)| (*n, usize::MAX - c))
                            .unwrap_or((0, &0));
                        if *n == 0 {
                            continue;
                        }
                        let k = (i * w + j) * d;
                        rows.extend_from_slice(&tokens[k..k + d]);
                        labels.push(best as f64);
                    }
                }
            }
            Target::Class(c) => {
                rows.extend(
                    crate::task::pool_features(&f.unsqueeze(0)?)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                );
                labels.push(f64::from(*c));
            }
            Target::Value(v) => {
                rows.extend(
                    crate::task::pool_features(&f.unsqueeze(0)?)?
                        .flatten_all()?
                        .to_vec1::<f32>()?,
                );
                labels.push(f64::from(*v));
            }
        }
    }
    Ok((rows, labels, d))
}

/// Solves `A x = b` for symmetric positive-definite `A (n × n)` (Cholesky), for each column of `b (n × k)`.
fn cholesky_solve(a: &[f64], b: &[f64], n: usize, k: usize) -> Result<Vec<f64>> {
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for p in 0..j {
                s -= l[i * n + p] * l[j * n + p];
            }
            if i == j {
                if s <= 0.0 {
                    return Err(Error::InvalidInput(
                        "ridge system is not positive definite".into(),
                    ));
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut x = vec![0f64; n * k];
    for c in 0..k {
        let mut y = vec![0f64; n];
        for i in 0..n {
            let mut s = b[i * k + c];
            for p in 0..i {
                s -= l[i * n + p] * y[p];
            }
            y[i] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = y[i];
            for p in i + 1..n {
                s -= l[p * n + i] * x[p * k + c];
            }
            x[i * k + c] = s / l[i * n + i];
        }
    }
    Ok(x)
}

/// Temperatures tried when the head starts from the linear probe (its logits are one-hot regressions).
pub const PROBE_TEMPERATURES: [f64; 6] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

const KNN_KS: [usize; 4] = [1, 5, 15, 31];
const RIDGE_LAMBDAS: [f64; 6] = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0];

impl Baseline {
    /// Fits both probes on `train`, selects hyper-parameters and the better probe on `val` (by accuracy,
    /// or RMSE for regression); without validation windows, k = 5, λ = 1 and the linear probe.
    pub fn fit(
        cfg: &TaskModelConfig,
        train_features: &[Tensor],
        train: &[&Target],
        val_features: &[Tensor],
        val: &[&Target],
    ) -> Result<Self> {
        let p = cfg.patch_size;
        let (rows, labels, d) = samples(train_features, train, p)?;
        let n = labels.len();
        if n == 0 {
            return Err(Error::InvalidInput(
                "no labelled training sample for the baseline".into(),
            ));
        }
        // Standardisation.
        let mut mean = vec![0f64; d];
        for r in rows.chunks_exact(d) {
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0f64; d];
        for r in rows.chunks_exact(d) {
            for ((v, &x), m) in var.iter_mut().zip(r).zip(&mean) {
                *v += (f64::from(x) - m).powi(2);
            }
        }
        let mean_f: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let inv_std: Vec<f32> = var
            .iter()
            .map(|&v| (1.0 / (v / n as f64).sqrt().max(1e-6)) as f32)
            .collect();
        let regression = cfg.task == Task::Regression;
        let k_out = if regression { 1 } else { cfg.num_outputs };
        let mut b = Baseline {
            task: cfg.task,
            num_classes: cfg.num_outputs,
            patch_size: p,
            mean: mean_f,
            inv_std,
            ridge: Vec::new(),
            bank: Tensor::zeros((1, 1), DType::F32, &Device::Cpu)?,
            bank_labels: labels.clone(),
            summary: BaselineSummary {
                method: "linear".into(),
                knn_k: 5,
                ridge_lambda: 1.0,
                knn_val_metric: None,
                linear_val_metric: None,
                metric: metric_name(cfg.task).into(),
                train_samples: n,
            },
        };
        let x = b.standardise(&rows, d)?; // (n, D+1) with a bias column
        // Ridge normal equations.
        let xt_x: Vec<f64> = x
            .t()?
            .matmul(&x)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let mut y = vec![0f32; n * k_out];
        let label_scale = if regression {
            let m = labels.iter().sum::<f64>() / n as f64;
            let s = (labels.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64)
                .sqrt()
                .max(1e-6);
            Some((m, s))
        } else {
            None
        };
        for (i, &l) in labels.iter().enumerate() {
            match label_scale {
                Some((m, s)) => y[i] = ((l - m) / s) as f32,
                None => y[i * k_out + (l as usize).min(k_out - 1)] = 1.0,
            }
        }
        let y = Tensor::from_vec(y, (n, k_out), &Device::Cpu)?;
        let xt_y: Vec<f64> = x
            .t()?
            .matmul(&y)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()?;
        let dd = d + 1;
        let solve = |lambda: f64| -> Result<Vec<f64>> {
            let mut a = xt_x.clone();
            for i in 0..dd {
                a[i * dd + i] += lambda * n as f64 / 1000.0;
            }
            let mut w = cholesky_solve(&a, &xt_y, dd, k_out)?;
            if let Some((m, s)) = label_scale {
                // Predict in label units: y = (x·w)·s + m, the bias row holds the shift.
                w.iter_mut().for_each(|v| *v *= s);
                w[d * k_out] += m;
            }
            Ok(w)
        };
        // kNN bank: unit-norm standardised rows.
        let xs = x.narrow(1, 0, d)?;
        let norm = xs
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-6, f64::INFINITY)?;
        b.bank = xs.broadcast_div(&norm)?;

        let (val_rows, val_labels, _) = samples(val_features, val, p)?;
        if val_labels.is_empty() {
            b.ridge = solve(1.0)?;
            return Ok(b);
        }
        let better = |a: f64, bb: f64| if regression { a < bb } else { a > bb };
        // Linear probe selection.
        let mut best: Option<(f64, f64, Vec<f64>)> = None;
        for &lambda in &RIDGE_LAMBDAS {
            let w = solve(lambda)?;
            b.ridge = w.clone();
            let preds = b.predict_rows_linear(&val_rows, d)?;
            let m = score(&preds, &val_labels, regression);
            if best.as_ref().is_none_or(|(bm, _, _)| better(m, *bm)) {
                best = Some((m, lambda, w));
            }
        }
        if let Some((m, lambda, w)) = best {
            b.ridge = w;
            b.summary.ridge_lambda = lambda;
            b.summary.linear_val_metric = Some(m);
        }
        // kNN selection.
        let mut best_k: Option<(f64, usize)> = None;
        for &k in KNN_KS.iter().filter(|&&k| k <= n) {
            let preds = b.predict_rows_knn(&val_rows, d, k)?;
            let m = score(&preds, &val_labels, regression);
            if best_k.is_none_or(|(bm, _)| better(m, bm)) {
                best_k = Some((m, k));
            }
        }
        if let Some((m, k)) = best_k {
            b.summary.knn_k = k;
            b.summary.knn_val_metric = Some(m);
            if b.summary.linear_val_metric.is_none_or(|l| better(m, l)) {
                b.summary.method = "knn".into();
            }
        }
        Ok(b)
    }

    /// The linear probe as one linear map of raw (unstandardised) token features: weights `(K, D)`
    /// row-major and biases `(K)`, so that `logits = W·x + b` orders the classes as the probe does.
    /// `None` for regression or before the probe is fitted.
    #[must_use]
    pub fn linear_map(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        let d = self.mean.len();
        if self.task == Task::Regression || d == 0 || !self.ridge.len().is_multiple_of(d + 1) {
            return None;
        }
        let k = self.ridge.len() / (d + 1);
        let mut weights = vec![0f32; k * d];
        let mut biases = vec![0f32; k];
        for c in 0..k {
            let mut bias = self.ridge[d * k + c];
            for j in 0..d {
                // (x − μ)·s·w = x·(s·w) − μ·s·w
                let wj = self.ridge[j * k + c] * f64::from(self.inv_std[j]);
                weights[c * d + j] = wj as f32;
                bias -= wj * f64::from(self.mean[j]);
            }
            biases[c] = bias as f32;
        }
        Some((weights, biases))
    }

    /// `(n, D + 1)` standardised rows with a trailing bias column of ones.
    fn standardise(&self, rows: &[f32], d: usize) -> Result<Tensor> {
        let n = rows.len() / d.max(1);
        let x = Tensor::from_slice(rows, (n, d), &Device::Cpu)?;
        let mean = Tensor::from_slice(&self.mean, d, &Device::Cpu)?;
        let inv = Tensor::from_slice(&self.inv_std, d, &Device::Cpu)?;
        let x = x.broadcast_sub(&mean)?.broadcast_mul(&inv)?;
        let ones = Tensor::ones((n, 1), DType::F32, &Device::Cpu)?;
        Ok(Tensor::cat(&[&x, &ones], 1)?)
    }

    fn predict_rows_linear(&self, rows: &[f32], d: usize) -> Result<Vec<f64>> {
        let x = self.standardise(rows, d)?.to_dtype(DType::F64)?;
        let k = self.ridge.len() / (d + 1);
        let w = Tensor::from_slice(&self.ridge, (d + 1, k), &Device::Cpu)?;
        let out = x.matmul(&w)?;
        if self.task == Task::Regression {
            return Ok(out.flatten_all()?.to_vec1()?);
        }
        let cls: Vec<u32> = out.argmax(1)?.to_dtype(DType::U32)?.to_vec1()?;
        Ok(cls.into_iter().map(f64::from).collect())
    }

    fn predict_rows_knn(&self, rows: &[f32], d: usize, k: usize) -> Result<Vec<f64>> {
        let x = self.standardise(rows, d)?.narrow(1, 0, d)?;
        let norm = x
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-6, f64::INFINITY)?;
        let x = x.broadcast_div(&norm)?;
        let mut out = Vec::with_capacity(x.dim(0)?);
        let nq = x.dim(0)?;
        // Query chunks bound the similarity matrix's memory.
        for start in (0..nq).step_by(1024) {
            let len = (nq - start).min(1024);
            let sims: Vec<Vec<f32>> = x
                .narrow(0, start, len)?
                .matmul(&self.bank.t()?)?
                .to_vec2()?;
            for row in sims {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                let k = k.min(row.len()).max(1);
                idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
                let top = &idx[..k];
                if self.task == Task::Regression {
                    out.push(top.iter().map(|&i| self.bank_labels[i]).sum::<f64>() / k as f64);
                } else {
                    let mut votes = vec![0f64; self.num_classes.max(1)];
                    for &i in top {
                        let c = (self.bank_labels[i] as usize).min(votes.len() - 1);
                        votes[c] += 1.0 + f64::from(row[i]) * 1e-3;
                    }
                    let c = votes
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(c, _)| c);
                    out.push(c as f64);
                }
            }
        }
        Ok(out)
    }

    /// Predictions of the chosen probe for windows with features `(D, h, w)`.
    pub fn predict(&self, features: &[Tensor]) -> Result<Vec<Prediction>> {
        let p = self.patch_size;
        let mut out = Vec::with_capacity(features.len());
        for f in features {
            let (d, h, w) = f.dims3()?;
            let rows: Vec<f32> = if self.task == Task::Segmentation {
                f.permute((1, 2, 0))?.flatten_all()?.to_vec1()?
            } else {
                crate::task::pool_features(&f.unsqueeze(0)?)?
                    .flatten_all()?
                    .to_vec1()?
            };
            let preds = if self.summary.method == "knn" {
                self.predict_rows_knn(&rows, d, self.summary.knn_k)?
            } else {
                self.predict_rows_linear(&rows, d)?
            };
            out.push(match self.task {
                Task::Segmentation => {
                    let (hp, wp) = (h * p, w * p);
                    let mut m = vec![0u8; hp * wp];
                    for y in 0..hp {
                        for x in 0..wp {
                            m[y * wp + x] = preds[(y / p) * w + x / p] as u8;
                        }
                    }
                    Prediction::Map(m)
                }
                Task::Classification => {
                    Prediction::Class(preds.first().copied().unwrap_or(0.0) as u32)
                }
                Task::Regression => Prediction::Value(preds.first().copied().unwrap_or(0.0)),
            });
        }
        Ok(out)
    }
}

fn score(preds: &[f64], labels: &[f64], regression: bool) -> f64 {
    let n = labels.len().max(1) as f64;
    if regression {
        (preds
            .iter()
            .zip(labels)
            .map(|(p, l)| (p - l).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    } else {
        preds.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() -> Result<()> {
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        let x = cholesky_solve(&[4.0, 2.0, 2.0, 3.0], &[2.0, 1.0], 2, 1)?;
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        Ok(())
    }

    #[test]
    fn the_linear_map_scores_raw_features_as_the_probe_scores_standardised_ones() -> Result<()> {
        // Token features (D = 3, 2 × 2 tokens, p = 1) with classes set by the sign of a mix of them.
        let (d, n_win) = (3usize, 6usize);
        let mut rng = Rng::new(5);
        let mut uniform = || (rng.next_u64() % 10_000) as f32 / 1000.0 - 2.0;
        let mut feats = Vec::new();
        let mut targets = Vec::new();
        for _ in 0..n_win {
            let v: Vec<f32> = (0..d * 4).map(|_| uniform() * 3.0 + 7.0).collect();
            let mask: Vec<u8> = (0..4)
                .map(|t| u8::from(v[t] - 0.5 * v[4 + t] + v[8 + t] > 10.5))
                .collect();
            feats.push(Tensor::from_vec(v, (d, 2, 2), &Device::Cpu)?);
            targets.push(Target::Mask(mask));
        }
        let cfg = TaskModelConfig {
            format: crate::task::TASK_MODEL_FORMAT,
            encoder: crate::config::EncoderConfig::preset(crate::config::ModelSize::Nano),
            model_size: "nano".into(),
            patch_size: 1,
            task: Task::Segmentation,
            num_outputs: 2,
            head: HeadKind::LightSegmentation,
            modalities: vec![crate::Modality::Sentinel2L2a],
            window_size: 2,
            initialised_from: "test".into(),
        };
        let t: Vec<&Target> = targets.iter().collect();
        let b = Baseline::fit(&cfg, &feats, &t, &[], &[])?;
        let (w, bias) = b
            .linear_map()
            .ok_or_else(|| Error::InvalidInput("no map".into()))?;
        assert_eq!((w.len(), bias.len()), (2 * d, 2));
        let (rows, _, _) = samples(&feats, &t, 1)?;
        let x = b.standardise(&rows, d)?.to_dtype(DType::F64)?;
        let ridge = Tensor::from_slice(&b.ridge, (d + 1, 2), &Device::Cpu)?;
        let probe: Vec<Vec<f64>> = x.matmul(&ridge)?.to_vec2()?;
        for (r, scores) in rows.chunks(d).zip(&probe) {
            for c in 0..2 {
                let raw: f64 = (0..d)
                    .map(|j| f64::from(w[c * d + j]) * f64::from(r[j]))
                    .sum::<f64>()
                    + f64::from(bias[c]);
                assert!((raw - scores[c]).abs() < 1e-3, "{raw} vs {}", scores[c]);
            }
        }
        Ok(())
    }

    #[test]
    fn shuffles_are_reproducible() {
        let mut a: Vec<usize> = (0..10).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..10).collect::<Vec<_>>());
    }
}
