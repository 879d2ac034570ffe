//! Fine-tuning: fit options, the per-epoch record and checkpoint state, and the [`Trainer`].

use super::*;
use crate::task::{HeadKind, Task};

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
    /// Class tasks: weight the loss by inverse class frequency (labelled pixels or windows of the
    /// training split), so a rare class counts as much as a common one.
    #[serde(default = "yes")]
    pub balanced: bool,
}

fn yes() -> bool {
    true
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
            balanced: true,
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
    /// Epoch of the best model (0: the linear start, before any epoch).
    pub best_epoch: Option<usize>,
    /// Validation loss of the best model (training loss without validation windows).
    pub best_loss: Option<f64>,
    /// Class tasks with validation windows: the best validation macro-F1, which decides (the loss only
    /// breaks ties).
    #[serde(default)]
    pub best_score: Option<f64>,
    /// Epochs since the best one.
    pub since_best: usize,
    /// Whether early stopping ended the fit.
    pub stopped_early: bool,
    /// Regression targets are standardised with this `(mean, std)`.
    pub target_scale: Option<(f64, f64)>,
}

/// The metric tracked during training and used to choose among models: `macro_f1` (class tasks: the mean
/// F1 over the classes present in the reference, per labelled pixel for segmentation) or `rmse`.
pub fn metric_name(task: Task) -> &'static str {
    if task == Task::Regression {
        "rmse"
    } else {
        "macro_f1"
    }
}

/// Whether `a` is a better value of [`metric_name`] than `b`.
pub fn metric_better(task: Task, a: f64, b: f64) -> bool {
    if task == Task::Regression {
        a < b - 1e-12
    } else {
        a > b + 1e-12
    }
}

/// Labelled pixels (masks) or windows (classes) per class index below `k`; value targets count nothing.
pub fn class_counts<'a>(targets: impl IntoIterator<Item = &'a Target>, k: usize) -> Vec<u64> {
    let mut counts = vec![0u64; k];
    let mut add = |c: usize| {
        if let Some(n) = counts.get_mut(c) {
            *n += 1;
        }
    };
    for t in targets {
        match t {
            Target::Mask(m) => m.iter().for_each(|&c| add(usize::from(c))),
            Target::Class(c) => add(*c as usize),
            Target::Value(_) => {}
        }
    }
    counts
}

/// Balanced class weights `n / (K_present · n_c)` of the targets (0 for absent classes), clipped to
/// `[0.05, 20]`; `None` for value targets.
pub fn class_weights(targets: &[&Target], k: usize) -> Option<Vec<f32>> {
    if targets.iter().any(|t| matches!(t, Target::Value(_))) {
        return None;
    }
    let counts = class_counts(targets.iter().copied(), k);
    let total: u64 = counts.iter().sum();
    let present = counts.iter().filter(|&&n| n > 0).count();
    if total == 0 || present == 0 {
        return None;
    }
    Some(
        counts
            .iter()
            .map(|&n| {
                if n == 0 {
                    0.0
                } else {
                    (total as f64 / (present as f64 * n as f64)).clamp(0.05, 20.0) as f32
                }
            })
            .collect(),
    )
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

pub(super) fn loss_of(
    task: Task,
    raw: &Tensor,
    target: &Tensor,
    weights: Option<&[f32]>,
) -> Result<Tensor> {
    match task {
        Task::Segmentation => cross_entropy_2d(raw, target, -1, weights),
        Task::Classification => cross_entropy(raw, target, -1, weights),
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
pub(super) fn predictions(
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

/// One class's scores in a confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    /// Of the pixels (or windows) predicted as the class, the share that are.
    pub precision: f64,
    /// Of those that are the class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Intersection over union.
    pub iou: f64,
    /// How many the reference has.
    pub support: u64,
}

/// The scores of a confusion matrix, under the one convention model selection and the evaluation
/// report share: an undefined ratio (nothing predicted, or no support) is 0, and macro-F1 and mIoU
/// average over the classes present in the reference (support > 0) only; the others are `absent`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionScores {
    /// Per class, in index order.
    pub per_class: Vec<ClassScore>,
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Mean F1 of the classes in the reference.
    pub macro_f1: f64,
    /// Mean IoU of the classes in the reference.
    pub miou: f64,
    /// Everything counted.
    pub total: u64,
    /// Indices of the classes the reference lacks.
    pub absent: Vec<usize>,
}

/// [`ConfusionScores`] of `counts[truth][predicted]` (K × K).
#[must_use]
pub fn confusion_scores(counts: &[Vec<u64>]) -> ConfusionScores {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let k = counts.len();
    let total: u64 = counts.iter().flatten().sum();
    let correct: u64 = (0..k).map(|i| counts[i].get(i).copied().unwrap_or(0)).sum();
    let (mut f1_sum, mut iou_sum, mut present) = (0.0, 0.0, 0usize);
    let mut per_class = Vec::with_capacity(k);
    let mut absent = Vec::new();
    for i in 0..k {
        let tp = counts[i].get(i).copied().unwrap_or(0);
        let support: u64 = counts[i].iter().sum();
        let predicted: u64 = (0..k).map(|r| counts[r].get(i).copied().unwrap_or(0)).sum();
        let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let iou = ratio(tp, support + predicted - tp);
        if support > 0 {
            f1_sum += f1;
            iou_sum += iou;
            present += 1;
        } else {
            absent.push(i);
        }
        per_class.push(ClassScore {
            precision,
            recall,
            f1,
            iou,
            support,
        });
    }
    let mean = |sum: f64| {
        if present == 0 {
            0.0
        } else {
            sum / present as f64
        }
    };
    ConfusionScores {
        per_class,
        accuracy: ratio(correct, total),
        macro_f1: mean(f1_sum),
        miou: mean(iou_sum),
        total,
        absent,
    }
}

/// Running metric: a confusion matrix for classes (macro-F1 over the classes in the reference), the
/// squared error sum for values (RMSE).
#[derive(Debug, Default, Clone)]
pub struct MetricSum {
    counts: Vec<Vec<u64>>,
    total: f64,
    sq: f64,
}

impl MetricSum {
    /// An empty sum for `k` classes (any `k` for values).
    pub fn new(k: usize) -> Self {
        MetricSum {
            counts: vec![vec![0; k]; k],
            total: 0.0,
            sq: 0.0,
        }
    }

    /// A sum holding the confusion matrix `counts` (`counts[truth][predicted]`, K × K).
    #[must_use]
    pub fn from_confusion(counts: Vec<Vec<u64>>) -> Self {
        let total = counts.iter().flatten().sum::<u64>() as f64;
        MetricSum {
            counts,
            total,
            sq: 0.0,
        }
    }

    fn pair(&mut self, truth: usize, pred: usize) {
        let k = self.counts.len();
        if truth < k && pred < k {
            self.counts[truth][pred] += 1;
            self.total += 1.0;
        }
    }

    /// Adds a prediction and its target.
    pub fn add(&mut self, p: &Prediction, t: &Target) {
        match (p, t) {
            (Prediction::Class(a), Target::Class(b)) => self.pair(*b as usize, *a as usize),
            (Prediction::Map(a), Target::Mask(b)) => {
                for (x, y) in a.iter().zip(b) {
                    if *y != IGNORE {
                        self.pair(usize::from(*y), usize::from(*x));
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

    /// Adds everything `other` holds (of the same number of classes).
    pub fn merge(&mut self, other: &MetricSum) {
        for (row, o) in self.counts.iter_mut().zip(&other.counts) {
            row.iter_mut().zip(o).for_each(|(a, b)| *a += b);
        }
        self.total += other.total;
        self.sq += other.sq;
    }

    /// [`metric_name`] of what was added; `None` when nothing was.
    pub fn value(&self, task: Task) -> Option<f64> {
        if self.total == 0.0 {
            return None;
        }
        if task == Task::Regression {
            return Some((self.sq / self.total).sqrt());
        }
        Some(confusion_scores(&self.counts).macro_f1)
    }
}

/// [`metric_name`] of everything in `windows` together.
pub fn pooled_score(task: Task, windows: &[MetricSum]) -> Option<f64> {
    let mut all = MetricSum::new(windows.first().map_or(0, |m| m.counts.len()));
    windows.iter().for_each(|w| all.merge(w));
    all.value(task)
}

/// Resamples of [`paired_difference_se`].
pub const BOOTSTRAP_RESAMPLES: usize = 400;

/// Standard error of `score(a) − score(b)` for two models scored on the same windows (`a[i]` and
/// `b[i]` are the sums of window `i`): the spread of the difference over bootstrap resamples of the
/// windows (drawn with replacement, the same windows for both). Labels within a window are not
/// independent, so windows, not pixels, are resampled. `None` with fewer than two windows or unequal
/// lists.
pub fn paired_difference_se(
    task: Task,
    a: &[MetricSum],
    b: &[MetricSum],
    seed: u64,
) -> Option<f64> {
    let n = a.len();
    if n < 2 || b.len() != n {
        return None;
    }
    let k = |w: &[MetricSum]| w.first().map_or(0, |m| m.counts.len());
    let mut rng = Rng::new(seed ^ 0xB007_5742);
    let mut diffs = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        let (mut sa, mut sb) = (MetricSum::new(k(a)), MetricSum::new(k(b)));
        for _ in 0..n {
            let i = (rng.next_u64() % n as u64) as usize;
            sa.merge(&a[i]);
            sb.merge(&b[i]);
        }
        if let (Some(x), Some(y)) = (sa.value(task), sb.value(task)) {
            diffs.push(x - y);
        }
    }
    if diffs.len() < 2 {
        return None;
    }
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (diffs.len() - 1) as f64;
    Some(var.sqrt())
}

/// The sum of each window's predictions against its target.
pub fn window_sums(k: usize, preds: &[Prediction], targets: &[&Target]) -> Vec<MetricSum> {
    preds
        .iter()
        .zip(targets)
        .map(|(p, t)| {
            let mut m = MetricSum::new(k);
            m.add(p, t);
            m
        })
        .collect()
}

/// [`metric_name`] of predictions against targets.
pub fn score_predictions(
    task: Task,
    k: usize,
    preds: &[Prediction],
    targets: &[&Target],
) -> Option<f64> {
    let mut m = MetricSum::new(k);
    for (p, t) in preds.iter().zip(targets) {
        m.add(p, t);
    }
    m.value(task)
}

/// Fine-tuning: model, optimiser, state.
#[derive(Debug)]
pub struct Trainer {
    model: TrainableTaskModel,
    opt: AdamW,
    state: FitState,
    opts: FitOptions,
    best: Option<Vec<u8>>,
    class_weights: Option<Vec<f32>>,
}

pub(super) fn adamw_config(opts: &FitOptions) -> AdamWConfig {
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
            class_weights: None,
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
            class_weights: None,
        })
    }

    /// Linear start, then fine-tuning: a fresh fit of the `hybrid` head (or the light segmentation head,
    /// from the token part alone) starts from the linear model `linear` ([`super::LinearHead`], in
    /// target units), its class logits scaled by the temperature of [`PROBE_TEMPERATURES`] with the lowest
    /// validation loss (training loss without validation windows). That start is the best model so far
    /// (epoch 0), so training keeps it unless an epoch beats it on validation. Returns the temperature (1
    /// for regression), or `None` when it does not apply (another head, a resumed fit).
    pub fn start_from_linear(
        &mut self,
        linear: &LinearHead,
        data: &FitData<'_>,
        sink: &mut dyn FitSink,
    ) -> Result<Option<f64>> {
        let cfg = self.model.config().clone();
        if self.state.epoch > 0 {
            return Ok(None);
        }
        let (k, d) = (cfg.num_outputs, cfg.encoder.embedding_size);
        if linear.k != k || linear.d != d {
            return Ok(None);
        }
        let vars = self.model.head_vars();
        let find = |suffix: &str| {
            vars.iter()
                .find(|(name, _)| name.ends_with(suffix))
                .map(|(_, v)| v.clone())
                .ok_or_else(|| Error::InvalidInput(format!("the head has no {suffix}")))
        };
        // (variable, values, shape) of the linear part.
        let params: Vec<(candle_core::Var, Vec<f32>, Vec<usize>)> = match self.model.head() {
            Head::Hybrid(_) => {
                if linear.p != cfg.pixel_channels {
                    return Ok(None);
                }
                vec![
                    (
                        find("tokens.weight")?,
                        linear.tokens.clone(),
                        vec![k, d, 1, 1],
                    ),
                    (
                        find("pixels.weight")?,
                        linear.pixels.clone(),
                        vec![k, linear.p, 1, 1],
                    ),
                    (find("pixels.bias")?, linear.bias.clone(), vec![k]),
                ]
            }
            Head::Light(_) if linear.pixels.iter().all(|&w| w == 0.0) => vec![
                (
                    find("conv.weight")?,
                    linear.tokens.clone(),
                    vec![k, d, 1, 1],
                ),
                (find("conv.bias")?, linear.bias.clone(), vec![k]),
            ],
            _ => return Ok(None),
        };
        // Regression trains on standardised targets: z = (y − mean) / std.
        let (shift, scale) = match self.state.target_scale {
            Some((mean, std)) => (mean, 1.0 / std),
            None => (0.0, 1.0),
        };
        let set = |t: f64| -> Result<()> {
            for (var, values, shape) in &params {
                let is_bias = shape.len() == 1;
                let x = Tensor::from_vec(values.clone(), shape.as_slice(), var.device())?;
                let x = if is_bias && shift != 0.0 {
                    ((x - shift)? * scale)?
                } else {
                    (x * scale)?
                };
                var.set(&(x * t)?.to_dtype(var.dtype())?)?;
            }
            Ok(())
        };
        let use_val = !data.val.is_empty();
        let temperatures: &[f64] = if cfg.task == Task::Regression {
            &[1.0]
        } else {
            &PROBE_TEMPERATURES
        };
        let mut best: Option<(f64, f64, Option<f64>)> = None;
        for &t in temperatures {
            set(t)?;
            let (loss, metric) = if use_val {
                self.evaluate(data.val, data.val_features, sink)?
            } else {
                self.evaluate(data.train, data.train_features, sink)?
            };
            if best.is_none_or(|(l, _, _)| loss < l) {
                best = Some((loss, t, metric));
            }
        }
        let Some((loss, t, metric)) = best else {
            return Ok(None);
        };
        set(t)?;
        self.state.best_loss = Some(loss);
        self.state.best_score = if use_val && cfg.task != Task::Regression {
            metric
        } else {
            None
        };
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
        // y = std·z + mean: every term of the output is scaled, one bias takes the mean.
        let (scaled, shifted): (&[&str], &str) = match self.model.config().head {
            HeadKind::UNet => (&["head.final.weight", "head.final.bias"], "head.final.bias"),
            HeadKind::Hybrid => (
                &[
                    "head.tokens.weight",
                    "head.pixels.weight",
                    "head.pixels.bias",
                    "head.out.weight",
                    "head.out.bias",
                ],
                "head.pixels.bias",
            ),
            _ => (&["head.out.weight", "head.out.bias"], "head.out.bias"),
        };
        for key in scaled {
            let t = tensors
                .get(*key)
                .ok_or_else(|| Error::InvalidInput(format!("the head has no {key}")))?;
            let shift = if *key == shifted { mean } else { 0.0 };
            let v = ((t * std)? + shift)?;
            tensors.insert((*key).to_string(), v);
        }
        let mut v: Vec<(String, Tensor)> = tensors.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        to_safetensors(v, None)
    }

    /// Runs the remaining epochs. The frozen encoder's features of the examples ([`embed_examples`]) are
    /// needed while the encoder is frozen. With validation windows, a class task keeps the epoch with the
    /// best validation macro-F1 (the loss breaks ties) and stops after `patience` epochs without a better
    /// one; regression, or a fit without validation windows, goes by the loss.
    pub fn fit(&mut self, data: &FitData<'_>, sink: &mut dyn FitSink) -> Result<()> {
        let FitData {
            train,
            val,
            train_features,
            val_features,
        } = *data;
        if train.is_empty() {
            return Err(Error::InvalidInput("no training windows".into()));
        }
        let cfg = self.model.config().clone();
        let device = self.model.encoder().encoder().device().clone();
        if self.opts.balanced {
            let targets: Vec<&Target> = train.iter().map(|e| &e.target).collect();
            self.class_weights = class_weights(&targets, cfg.num_outputs);
        }
        let by_score = !val.is_empty() && cfg.task != Task::Regression;
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
                let inputs: Vec<EncoderInput> = idx
                    .iter()
                    .map(|&i| dihedral_input(&train[i].input, aug))
                    .collect::<Result<_>>()?;
                let refs: Vec<&EncoderInput> = inputs.iter().collect();
                let x = stack_inputs(&refs)?;
                let pixels = self.model.head().pixels_of(&x)?;
                let raw = if let Some(feats) = feats {
                    let f: Vec<Tensor> = idx.iter().map(|&i| feats[i].clone()).collect();
                    let f = dihedral(&Tensor::stack(&f, 0)?, aug, 2)?;
                    self.model.head().forward(&f, pixels.as_ref())?
                } else {
                    self.model
                        .head()
                        .forward(&self.model.features(&x)?, pixels.as_ref())?
                };
                let target = target_tensor(&targets, aug, self.state.target_scale, hw, &device)?;
                let loss = loss_of(cfg.task, &raw, &target, self.class_weights.as_deref())?;
                loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                self.opt.backward_step(&loss)?;
                let frac = (epoch - 1) as f32 / total as f32
                    + (bi + 1) as f32 / (batches as f32 * total as f32);
                sink.progress(
                    0.3 + 0.6 * frac,
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
            let loss = val_loss.unwrap_or(train_loss);
            self.state.epoch = epoch;
            self.state.history.push(record);
            let improved = match (by_score, val_metric, self.state.best_score) {
                (true, Some(m), Some(b)) => {
                    m > b + 1e-9
                        || (m > b - 1e-9 && self.state.best_loss.is_none_or(|bl| loss < bl - 1e-6))
                }
                (true, Some(_), None) => true,
                _ => self.state.best_loss.is_none_or(|b| loss < b - 1e-6),
            };
            if improved {
                self.state.best_loss = Some(loss);
                if by_score {
                    self.state.best_score = val_metric;
                }
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
            // The first checkpoint also carries a best model that predates it (the linear start).
            let best = if improved || epoch == 1 {
                self.best.as_deref()
            } else {
                None
            };
            sink.epoch_done(&self.state, &ckpt, best)?;
        }
        Ok(())
    }

    /// Mean loss and [`metric_name`] over `examples` with the current weights (cached frozen features
    /// when given).
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
        let mut metric = MetricSum::new(cfg.num_outputs);
        for (ci, chunk) in examples.chunks(bs).enumerate() {
            if sink.cancelled() {
                return Err(Error::Cancelled);
            }
            let hw = input_hw(&chunk[0].input)?;
            let refs: Vec<&EncoderInput> = chunk.iter().map(|e| &e.input).collect();
            let x = stack_inputs(&refs)?;
            let f = match (features, &encoder) {
                (Some(f), _) => Tensor::stack(&f[ci * bs..ci * bs + chunk.len()], 0)?,
                (None, Some(enc)) => feature_map(&enc.forward(&x, cfg.patch_size)?)?,
                (None, None) => return Err(Error::InvalidInput("no encoder".into())),
            };
            let pixels = self.model.head().pixels_of(&x)?;
            let raw = self.model.head().forward(&f, pixels.as_ref())?.detach();
            let targets: Vec<&Target> = chunk.iter().map(|e| &e.target).collect();
            let t = target_tensor(&targets, 0, self.state.target_scale, hw, &device)?;
            let l = loss_of(cfg.task, &raw, &t, self.class_weights.as_deref())?;
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

/// The examples of a fit and the frozen encoder's features of each (when cached).
#[derive(Debug, Clone, Copy)]
pub struct FitData<'a> {
    /// Training windows.
    pub train: &'a [Example],
    /// Validation windows (may be empty).
    pub val: &'a [Example],
    /// Features of `train`, in order.
    pub train_features: Option<&'a [Tensor]>,
    /// Features of `val`, in order.
    pub val_features: Option<&'a [Tensor]>,
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
