//! Linear candidates in closed form: class-balanced ridge models on the normalised 10 m input pixels
//! (alone, or with their neighbourhood means: [`crate::task::pixel_features`]), on the frozen encoder's
//! tokens (bilinearly upsampled to the pixels), or on all of them; each is a
//! [`LinearHead`], i.e. the linear part of the `hybrid` head, so any of them can be published as a model
//! or be the start of fine-tuning.
//!
//! Segmentation fits one row per labelled pixel (at most `max_rows`, drawn evenly across classes); window
//! targets fit one row per window (the window's mean, which is what the head's pooled output is linear in).

use super::*;
use crate::heads::{HYBRID_HIDDEN, HYBRID_TOKEN_CHANNELS, upsample_bilinear};
use crate::task::{Task, pixel_features};

/// What a linear candidate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearInputs {
    /// The normalised input pixels (bands × months), each pixel on its own.
    Pixels,
    /// The pixels and their neighbourhood means (the model's `pixel_context`; without it, the pixels).
    PixelsInContext,
    /// The encoder's tokens, upsampled.
    Tokens,
    /// The tokens, the pixels and their neighbourhood means.
    All,
}

impl LinearInputs {
    fn reads_tokens(self) -> bool {
        matches!(self, LinearInputs::Tokens | LinearInputs::All)
    }

    /// Features of a row: token channels it reads, then pixel columns.
    fn columns(self, cfg: &TaskModelConfig) -> usize {
        let d = if self.reads_tokens() {
            cfg.encoder.embedding_size
        } else {
            0
        };
        d + self.pixel_columns(cfg)
    }

    /// How many of the model's pixel channels it reads (the first ones).
    fn pixel_columns(self, cfg: &TaskModelConfig) -> usize {
        match self {
            LinearInputs::Pixels => cfg.raw_pixel_channels(),
            LinearInputs::PixelsInContext | LinearInputs::All => cfg.pixel_channels,
            LinearInputs::Tokens => 0,
        }
    }
}

/// The linear part of the `hybrid` head: `logits = up(T·f) + P·x + b`, in target units.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    /// Outputs (classes, or 1).
    pub k: usize,
    /// Token channels (D).
    pub d: usize,
    /// Pixel channels (P).
    pub p: usize,
    /// `(K, D)` row-major.
    pub tokens: Vec<f32>,
    /// `(K, P)` row-major.
    pub pixels: Vec<f32>,
    /// `(K)`.
    pub bias: Vec<f32>,
}

impl LinearHead {
    /// The head parameters of a `hybrid` head that computes exactly this linear model (the convolutional
    /// path's output layer is zero), keyed under `prefix` (e.g. `head.`).
    pub fn hybrid_tensors(&self, prefix: &str, device: &Device) -> Result<Vec<(String, Tensor)>> {
        let (k, d, p) = (self.k, self.d, self.p);
        let r = HYBRID_TOKEN_CHANNELS;
        let h = HYBRID_HIDDEN;
        let t = |v: Vec<f32>, shape: &[usize]| Tensor::from_vec(v, shape, device);
        Ok(vec![
            (
                format!("{prefix}tokens.weight"),
                t(self.tokens.clone(), &[k, d, 1, 1])?,
            ),
            (
                format!("{prefix}pixels.weight"),
                t(self.pixels.clone(), &[k, p, 1, 1])?,
            ),
            (format!("{prefix}pixels.bias"), t(self.bias.clone(), &[k])?),
            (
                format!("{prefix}reduce.weight"),
                Tensor::zeros((r, d, 1, 1), DType::F32, device)?,
            ),
            (
                format!("{prefix}reduce.bias"),
                Tensor::zeros(r, DType::F32, device)?,
            ),
            (
                format!("{prefix}hidden.weight"),
                Tensor::zeros((h, p + r, 3, 3), DType::F32, device)?,
            ),
            (
                format!("{prefix}hidden.bias"),
                Tensor::zeros(h, DType::F32, device)?,
            ),
            (
                format!("{prefix}out.weight"),
                Tensor::zeros((k, h, 1, 1), DType::F32, device)?,
            ),
            (
                format!("{prefix}out.bias"),
                Tensor::zeros(k, DType::F32, device)?,
            ),
        ])
    }

    /// Predictions of this linear model for `examples` (features of each in `features`), through the very
    /// `hybrid` head `cfg` describes, so what is scored is what would be published.
    pub fn predict(
        &self,
        cfg: &TaskModelConfig,
        examples: &[Example],
        features: &[Tensor],
    ) -> Result<Vec<Prediction>> {
        let device = features.first().map_or(Device::Cpu, |f| f.device().clone());
        let tensors: HashMap<String, Tensor> =
            self.hybrid_tensors("", &device)?.into_iter().collect();
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &device);
        let head = Head::new(cfg, vb)?;
        let mut out = Vec::with_capacity(examples.len());
        for (e, f) in examples.iter().zip(features) {
            let hw = input_hw(&e.input)?;
            let pixels = head.pixels_of(&e.input)?;
            let raw = head.forward(&f.unsqueeze(0)?, pixels.as_ref())?;
            out.extend(predictions(cfg, &raw, hw, None)?);
        }
        Ok(out)
    }
}

/// A fitted linear candidate.
#[derive(Debug, Clone)]
pub struct LinearFit {
    /// The model.
    pub head: LinearHead,
    /// The ridge penalty chosen (relative to the mean diagonal of the weighted Gram matrix).
    pub lambda: f64,
    /// Its validation [`metric_name`], when there were validation labels.
    pub val_score: Option<f64>,
    /// Training rows (labelled pixels, or windows).
    pub train_rows: usize,
}

/// Relative ridge penalties tried.
const LAMBDAS: [f64; 5] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// Rows of one split: `(n, F)` features and targets (class index or value).
#[derive(Default)]
struct Rows {
    x: Vec<f32>,
    y: Vec<f64>,
    n: usize,
}

impl Rows {
    fn append(&mut self, other: Rows) {
        self.x.extend(other.x);
        self.y.extend(other.y);
        self.n += other.n;
    }
}

/// Per-pixel feature planes `(F, H·W)` of one window, channel-major.
fn planes(
    cfg: &TaskModelConfig,
    inputs: LinearInputs,
    e: &Example,
    f: &Tensor,
) -> Result<(Vec<f32>, usize)> {
    let mut parts = Vec::new();
    if inputs.reads_tokens() {
        parts.push(upsample_bilinear(&f.unsqueeze(0)?, cfg.patch_size)?.squeeze(0)?);
    }
    let pc = inputs.pixel_columns(cfg);
    if pc > 0 {
        parts.push(
            pixel_features(&e.input, &cfg.pixel_context, cfg.context_observed_only)?
                .squeeze(0)?
                .narrow(0, 0, pc)?,
        );
    }
    let x = Tensor::cat(&parts, 0)?.to_dtype(DType::F32)?;
    let (c, h, w) = x.dims3()?;
    let v: Vec<f32> = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    debug_assert_eq!(v.len(), c * h * w);
    Ok((v, c))
}

/// Rows of `examples`: labelled pixels kept with probability `keep[class]` for masks, one mean row per
/// window otherwise.
fn rows(
    cfg: &TaskModelConfig,
    inputs: LinearInputs,
    examples: &[Example],
    features: &[Tensor],
    keep: &[f64],
    rng: &mut Rng,
) -> Result<Rows> {
    let mut out = Rows {
        x: Vec::new(),
        y: Vec::new(),
        n: 0,
    };
    for (e, f) in examples.iter().zip(features) {
        let (v, c) = planes(cfg, inputs, e, f)?;
        let hw = v.len() / c.max(1);
        match &e.target {
            Target::Mask(m) => {
                if m.len() != hw {
                    return Err(Error::InvalidInput(format!(
                        "a label mask has {} pixels, the window {hw}",
                        m.len()
                    )));
                }
                for (i, &cls) in m.iter().enumerate() {
                    if cls == IGNORE {
                        continue;
                    }
                    let prob = keep.get(usize::from(cls)).copied().unwrap_or(0.0);
                    if prob < 1.0 && (rng.next_u64() % 1_000_000) as f64 >= prob * 1e6 {
                        continue;
                    }
                    out.x.extend((0..c).map(|j| v[j * hw + i]));
                    out.y.push(f64::from(cls));
                    out.n += 1;
                }
            }
            Target::Class(_) | Target::Value(_) => {
                out.x.extend(
                    (0..c).map(|j| v[j * hw..(j + 1) * hw].iter().sum::<f32>() / hw.max(1) as f32),
                );
                out.y.push(match &e.target {
                    Target::Class(k) => f64::from(*k),
                    Target::Value(x) => f64::from(*x),
                    Target::Mask(_) => 0.0,
                });
                out.n += 1;
            }
        }
    }
    Ok(out)
}

/// Keep probabilities that cap the rows at about `max_rows`, evenly across classes (`uniform`: the same
/// probability for every class).
fn keep_probabilities(counts: &[u64], max_rows: usize, uniform: bool) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if uniform {
        let p = (max_rows as f64 / total.max(1) as f64).min(1.0);
        return vec![p; counts.len()];
    }
    let present = counts.iter().filter(|&&n| n > 0).count().max(1);
    let cap = max_rows as f64 / present as f64;
    counts
        .iter()
        .map(|&n| {
            if n == 0 {
                0.0
            } else {
                (cap / n as f64).min(1.0)
            }
        })
        .collect()
}

/// Fits the class-balanced ridge model of `inputs` on `train` and picks its penalty on `val`
/// ([`metric_name`]; without validation rows the middle penalty).
#[expect(
    clippy::too_many_arguments,
    reason = "the model, the inputs, two splits with their features, limits"
)]
pub fn fit_linear(
    cfg: &TaskModelConfig,
    inputs: LinearInputs,
    train: &[Example],
    train_features: &[Tensor],
    val: &[Example],
    val_features: &[Tensor],
    max_rows: usize,
    seed: u64,
) -> Result<LinearFit> {
    fit_linear_with(
        cfg,
        inputs,
        (train, train_features),
        (val, val_features),
        &LAMBDAS,
        (max_rows, seed),
    )
}

/// [`fit_linear`] with the penalties to try (relative to the mean diagonal of the weighted Gram matrix):
/// the one `val` scores best, or with one penalty that one (scored on `val` all the same).
pub fn fit_linear_with(
    cfg: &TaskModelConfig,
    inputs: LinearInputs,
    (train, train_features): (&[Example], &[Tensor]),
    (val, val_features): (&[Example], &[Tensor]),
    lambdas: &[f64],
    (max_rows, seed): (usize, u64),
) -> Result<LinearFit> {
    let regression = cfg.task == Task::Regression;
    let k = if regression { 1 } else { cfg.num_outputs };
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_11AE);
    let keep = keep_probabilities(
        &class_counts(train.iter().map(|e| &e.target), k),
        max_rows,
        false,
    );
    let tr = rows(cfg, inputs, train, train_features, &keep, &mut rng)?;
    if tr.n == 0 {
        return Err(Error::InvalidInput(
            "no labelled training sample for a linear model".into(),
        ));
    }
    let f = tr.x.len() / tr.n;
    let expected_f = inputs.columns(cfg);
    if f != expected_f {
        return Err(Error::InvalidInput(format!(
            "linear rows have {f} features, the model expects {expected_f}"
        )));
    }
    let design = Design::new(&[&tr], f, k, regression);
    let (gram, xty) = design.products(&tr)?;
    let system = Ridge::new(gram, xty, f, k, design.wsum);
    let to_head = |beta: &[f64]| design.head(cfg, inputs, beta);
    let keep_val = keep_probabilities(
        &class_counts(val.iter().map(|e| &e.target), k),
        max_rows,
        true,
    );
    let va = rows(cfg, inputs, val, val_features, &keep_val, &mut rng)?;
    if va.n == 0 {
        let lambda = if lambdas.len() == 1 { lambdas[0] } else { 1e-2 };
        return Ok(LinearFit {
            head: to_head(&system.solve(lambda, None)?),
            lambda,
            val_score: None,
            train_rows: tr.n,
        });
    }
    let xv = design.standardise(&va, false)?;
    let mut best: Option<(f64, f64, Vec<f64>)> = None;
    for &lambda in lambdas {
        let beta = system.solve(lambda, None)?;
        let mut m = MetricSum::new(k);
        add_rows(&mut m, regression, &xv, &beta, &va.y)?;
        let Some(score) = m.value(cfg.task) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(b, _, _)| metric_better(cfg.task, score, *b))
        {
            best = Some((score, lambda, beta));
        }
    }
    let Some((score, lambda, beta)) = best else {
        return Err(Error::InvalidInput("no validation score".into()));
    };
    Ok(LinearFit {
        head: to_head(&beta),
        lambda,
        val_score: Some(score),
        train_rows: tr.n,
    })
}

/// Folds of cross-validation ([`cross_validate_linear`]) when there are windows enough.
pub const CV_FOLDS: usize = 5;

/// What [`cross_validate_linear`] found.
#[derive(Debug, Clone)]
pub struct CrossValidation {
    /// The penalty whose held-out predictions score best.
    pub lambda: f64,
    /// Their [`metric_name`], pooled over every fold.
    pub score: f64,
    /// Folds used.
    pub folds: usize,
    /// Held-out rows scored (labelled pixels, or windows).
    pub rows: usize,
    /// The held-out predictions of each window against its target, in the order of the windows given,
    /// for paired comparisons ([`super::paired_difference_se`]).
    pub windows: Vec<MetricSum>,
}

/// Cross-validates the class-balanced ridge model of `inputs` fold by fold: `fold_of[i]` is the fold of
/// `windows[i]` (windows near each other should share a fold, so that a fold is held out as a test
/// region would be); each fold is predicted by the model fitted on the others, and the held-out
/// predictions of all folds are scored together, for every penalty; the best penalty and its score.
/// Class weights and standardisation come from all rows (no targets but class counts). `None` with
/// fewer than two folds holding labels.
pub fn cross_validate_linear(
    cfg: &TaskModelConfig,
    inputs: LinearInputs,
    windows: &[(&Example, &Tensor)],
    fold_of: &[usize],
    (max_rows, seed): (usize, u64),
) -> Result<Option<CrossValidation>> {
    if fold_of.len() != windows.len() {
        return Err(Error::InvalidInput(format!(
            "{} folds for {} windows",
            fold_of.len(),
            windows.len()
        )));
    }
    let folds = fold_of.iter().max().map_or(0, |&m| m + 1);
    if folds < 2 {
        return Ok(None);
    }
    let regression = cfg.task == Task::Regression;
    let k = if regression { 1 } else { cfg.num_outputs };
    let mut rng = Rng::new(seed ^ 0x0C0F_01D5);
    let keep = keep_probabilities(
        &class_counts(windows.iter().map(|(e, _)| &e.target), k),
        max_rows,
        false,
    );
    // Each fold's rows, and which window each run of them came from.
    let mut parts: Vec<(Rows, Vec<(usize, usize)>)> =
        (0..folds).map(|_| (Rows::default(), Vec::new())).collect();
    for (i, &(e, f)) in windows.iter().enumerate() {
        let r = rows(
            cfg,
            inputs,
            std::slice::from_ref(e),
            std::slice::from_ref(f),
            &keep,
            &mut rng,
        )?;
        let (fold, owners) = &mut parts[fold_of[i]];
        owners.push((i, r.n));
        fold.append(r);
    }
    parts.retain(|(p, _)| p.n > 0);
    if parts.len() < 2 {
        return Ok(None);
    }
    let sets: Vec<&Rows> = parts.iter().map(|(p, _)| p).collect();
    let n: usize = sets.iter().map(|p| p.n).sum();
    let f = sets[0].x.len() / sets[0].n;
    let design = Design::new(&sets, f, k, regression);
    let mut held_out = Vec::with_capacity(parts.len());
    let (mut gram, mut xty) = (vec![0f64; (f + 1) * (f + 1)], vec![0f64; (f + 1) * k]);
    for p in &sets {
        let (g, c) = design.products(p)?;
        gram.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        xty.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
        held_out.push((g, c));
    }
    let system = Ridge::new(gram, xty, f, k, design.wsum);
    // Each penalty's held-out sums, window by window; one fold's standardised rows at a time.
    let mut sums = vec![vec![MetricSum::new(k); windows.len()]; LAMBDAS.len()];
    for ((g, c), (p, owners)) in held_out.iter().zip(&parts) {
        let xv = design.standardise(p, false)?;
        for (&lambda, sums) in LAMBDAS.iter().zip(&mut sums) {
            let beta = system.solve(lambda, Some((g.as_slice(), c.as_slice())))?;
            let preds = predict_rows(regression, &xv, &beta)?;
            let mut at = 0;
            for &(window, rows) in owners {
                for (pred, &y) in preds[at..at + rows].iter().zip(&p.y[at..at + rows]) {
                    sums[window].add(pred, &row_target(regression, y));
                }
                at += rows;
            }
        }
    }
    let mut best: Option<CrossValidation> = None;
    for (&lambda, sums) in LAMBDAS.iter().zip(sums) {
        let Some(score) = pooled_score(cfg.task, &sums) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|b| metric_better(cfg.task, score, b.score))
        {
            best = Some(CrossValidation {
                lambda,
                score,
                folds: parts.len(),
                rows: n,
                windows: sums,
            });
        }
    }
    Ok(best)
}

/// The target of a row (a class index, or a value).
fn row_target(regression: bool, y: f64) -> Target {
    if regression {
        Target::Value(y as f32)
    } else {
        Target::Class(y as u32)
    }
}

/// Predictions of the linear model `beta` for standardised rows `x`: a class or a value per row.
fn predict_rows(regression: bool, x: &Tensor, beta: &[f64]) -> Result<Vec<Prediction>> {
    let (ff, k) = (x.dim(1)?, beta.len() / x.dim(1)?.max(1));
    let out = x.matmul(&Tensor::from_slice(beta, (ff, k), &Device::Cpu)?)?;
    Ok(if regression {
        let v: Vec<f64> = out.flatten_all()?.to_vec1()?;
        v.into_iter().map(Prediction::Value).collect()
    } else {
        let cls: Vec<u32> = out.argmax(1)?.to_dtype(DType::U32)?.to_vec1()?;
        cls.into_iter().map(Prediction::Class).collect()
    })
}

/// Adds the predictions of the linear model `beta` for standardised rows `x` (with their targets `y`).
fn add_rows(
    m: &mut MetricSum,
    regression: bool,
    x: &Tensor,
    beta: &[f64],
    y: &[f64],
) -> Result<()> {
    for (p, &t) in predict_rows(regression, x, beta)?.iter().zip(y) {
        m.add(p, &row_target(regression, t));
    }
    Ok(())
}

/// Row weights (balanced over the classes of the rows; 1 for values) and the weighted standardisation of
/// the features.
struct Design {
    f: usize,
    k: usize,
    regression: bool,
    /// Weight of each class (for values, one weight 1).
    class_weight: Vec<f64>,
    wsum: f64,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl Design {
    /// The design of all rows of `sets` together.
    fn new(sets: &[&Rows], f: usize, k: usize, regression: bool) -> Self {
        let n: usize = sets.iter().map(|r| r.n).sum();
        let mut class_weight = vec![1f64; if regression { 1 } else { k }];
        if !regression {
            let mut counts = vec![0f64; k];
            for &y in sets.iter().flat_map(|r| &r.y) {
                counts[y as usize] += 1.0;
            }
            let present = counts.iter().filter(|&&c| c > 0.0).count().max(1) as f64;
            for (w, &c) in class_weight.iter_mut().zip(&counts) {
                *w = if c > 0.0 {
                    n as f64 / (present * c)
                } else {
                    0.0
                };
            }
        }
        let mut d = Design {
            f,
            k,
            regression,
            class_weight,
            wsum: 0.0,
            mean: vec![0f64; f],
            inv_std: vec![0f64; f],
        };
        let weighted = || {
            sets.iter()
                .flat_map(|r| r.x.chunks_exact(f).zip(&r.y))
                .map(|(x, &y)| (x, d.weight(y)))
        };
        let (mut mean, mut var) = (vec![0f64; f], vec![0f64; f]);
        let mut wsum = 0.0;
        for (r, wi) in weighted() {
            wsum += wi;
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += wi * f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= f64::max(wsum, 1e-12));
        for (r, wi) in weighted() {
            for ((v, &x), m) in var.iter_mut().zip(r).zip(&mean) {
                *v += wi * (f64::from(x) - m).powi(2);
            }
        }
        let inv_std = var
            .into_iter()
            .map(|v| {
                let s = (v / f64::max(wsum, 1e-12)).sqrt();
                if s > 1e-6 { 1.0 / s } else { 0.0 }
            })
            .collect();
        d.wsum = wsum;
        d.mean = mean;
        d.inv_std = inv_std;
        d
    }

    fn weight(&self, y: f64) -> f64 {
        if self.regression {
            1.0
        } else {
            self.class_weight.get(y as usize).copied().unwrap_or(0.0)
        }
    }

    /// `(n, F + 1)` standardised rows with a constant column, each scaled by the square root of its
    /// weight when `weighted`.
    fn standardise(&self, rows: &Rows, weighted: bool) -> Result<Tensor> {
        let f = self.f;
        let mut z = Vec::with_capacity(rows.n * (f + 1));
        for (r, &y) in rows.x.chunks_exact(f).zip(&rows.y) {
            let s = if weighted { self.weight(y).sqrt() } else { 1.0 };
            z.extend(
                r.iter()
                    .zip(&self.mean)
                    .zip(&self.inv_std)
                    .map(|((&x, m), is)| ((f64::from(x) - m) * is * s) as f32),
            );
            z.push(s as f32);
        }
        let dtype = if weighted { DType::F32 } else { DType::F64 };
        Ok(Tensor::from_vec(z, (rows.n, f + 1), &Device::Cpu)?.to_dtype(dtype)?)
    }

    /// The weighted Gram matrix `(F + 1)²` and `Xᵀy` `(F + 1, K)` of `rows`, row-major.
    fn products(&self, rows: &Rows) -> Result<(Vec<f64>, Vec<f64>)> {
        let k = self.k;
        let xw = self.standardise(rows, true)?;
        let mut y = vec![0f32; rows.n * k];
        for (i, &t) in rows.y.iter().enumerate() {
            let s = self.weight(t).sqrt();
            if self.regression {
                y[i] = (t * s) as f32;
            } else {
                y[i * k + t as usize] = s as f32;
            }
        }
        let y = Tensor::from_vec(y, (rows.n, k), &Device::Cpu)?;
        let flat = |t: Tensor| -> Result<Vec<f64>> {
            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
        };
        Ok((flat(xw.t()?.matmul(&xw)?)?, flat(xw.t()?.matmul(&y)?)?))
    }

    /// The head of the solution `beta` (in standardised units, bias last) of a model of `inputs`.
    fn head(&self, cfg: &TaskModelConfig, inputs: LinearInputs, beta: &[f64]) -> LinearHead {
        let (f, k) = (self.f, self.k);
        let mut weights = vec![0f32; k * f];
        let mut bias = vec![0f32; k];
        for c in 0..k {
            let mut b = beta[f * k + c];
            for j in 0..f {
                let wj = beta[j * k + c] * self.inv_std[j];
                weights[c * f + j] = wj as f32;
                b -= wj * self.mean[j];
            }
            bias[c] = b as f32;
        }
        let d = if inputs.reads_tokens() {
            cfg.encoder.embedding_size
        } else {
            0
        };
        let pc = inputs.pixel_columns(cfg);
        let (dd, pp) = (cfg.encoder.embedding_size, cfg.pixel_channels);
        let mut tokens = vec![0f32; k * dd];
        let mut pixels = vec![0f32; k * pp];
        for c in 0..k {
            let row = &weights[c * f..(c + 1) * f];
            tokens[c * dd..c * dd + d].copy_from_slice(&row[..d]);
            pixels[c * pp..c * pp + pc].copy_from_slice(&row[d..d + pc]);
        }
        LinearHead {
            k,
            d: dd,
            p: pp,
            tokens,
            pixels,
            bias,
        }
    }
}

/// The ridge system of a weighted Gram matrix and `Xᵀy`.
struct Ridge {
    gram: Vec<f64>,
    xty: Vec<f64>,
    f: usize,
    k: usize,
    wsum: f64,
}

impl Ridge {
    fn new(gram: Vec<f64>, xty: Vec<f64>, f: usize, k: usize, wsum: f64) -> Self {
        Ridge {
            gram,
            xty,
            f,
            k,
            wsum,
        }
    }

    /// The solution with relative penalty `lambda`, without the rows whose products are `held_out`.
    fn solve(&self, lambda: f64, held_out: Option<(&[f64], &[f64])>) -> Result<Vec<f64>> {
        let (f, ff) = (self.f, self.f + 1);
        let mut a = self.gram.clone();
        let mut b = self.xty.clone();
        if let Some((g, c)) = held_out {
            a.iter_mut().zip(g).for_each(|(a, g)| *a -= g);
            b.iter_mut().zip(c).for_each(|(b, c)| *b -= c);
        }
        let diag_mean = (0..f).map(|i| a[i * ff + i]).sum::<f64>() / f.max(1) as f64;
        for i in 0..f {
            a[i * ff + i] += lambda * diag_mean.max(1e-9);
        }
        // The bias is not penalised, but a tiny ridge keeps the system definite.
        a[f * ff + f] += 1e-9 * self.wsum.max(1.0);
        cholesky_solve(&a, &b, ff, self.k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Modality;
    use crate::encoder::ModalityInput;
    use crate::task::HeadKind;
    use std::collections::BTreeMap;

    /// A window of `size`² pixels, T = 1, whose 12 bands are `value(y, x)` everywhere.
    fn window(size: usize, value: impl Fn(usize, usize) -> f32, target: Target) -> Example {
        let mut v = Vec::with_capacity(size * size * 12);
        for y in 0..size {
            for x in 0..size {
                v.extend(std::iter::repeat_n(value(y, x), 12));
            }
        }
        let data = Tensor::from_vec(v, (1, size, size, 1, 12), &Device::Cpu).expect("data");
        let mut modalities = BTreeMap::new();
        modalities.insert(Modality::Sentinel2L2a, ModalityInput { data, mask: None });
        Example {
            id: String::new(),
            input: EncoderInput {
                modalities,
                months: Tensor::zeros((1, 1), DType::U32, &Device::Cpu).expect("months"),
            },
            target,
        }
    }

    /// Two-class segmentation on one month of Sentinel-2 in `size`² windows, 8 token channels, with
    /// pixel context radii `context`.
    fn segmentation_config(size: usize, patch_size: usize, context: &[usize]) -> TaskModelConfig {
        let mut encoder = crate::config::EncoderConfig::preset(crate::config::ModelSize::Nano);
        encoder.embedding_size = 8;
        TaskModelConfig {
            format: crate::task::TASK_MODEL_FORMAT,
            encoder,
            model_size: "nano".into(),
            patch_size,
            task: Task::Segmentation,
            num_outputs: 2,
            head: HeadKind::Hybrid,
            modalities: vec![Modality::Sentinel2L2a],
            window_size: size,
            initialised_from: "test".into(),
            pixel_channels: 12 * (1 + context.len()),
            pixel_context: context.to_vec(),
            context_observed_only: true,
        }
    }

    /// Fits the linear model of `inputs` on the first `n_train` windows and scores it on the others.
    fn val_score(
        cfg: &TaskModelConfig,
        inputs: LinearInputs,
        (examples, features): (&[Example], &[Tensor]),
        n_train: usize,
    ) -> Result<f64> {
        let (train, val) = examples.split_at(n_train);
        let (tf, vf) = features.split_at(n_train);
        let fit = fit_linear(cfg, inputs, train, tf, val, vf, 10_000, 3)?;
        let preds = fit.head.predict(cfg, val, vf)?;
        let targets: Vec<&Target> = val.iter().map(|e| &e.target).collect();
        Ok(score_predictions(cfg.task, 2, &preds, &targets).unwrap_or(0.0))
    }

    #[test]
    fn a_pixel_model_draws_a_10_m_checkerboard_that_8_pixel_tokens_cannot() -> Result<()> {
        // Class = the pixel's square of a 1-pixel checkerboard; the bands say which (0.2 or 0.8). Tokens
        // of 8 × 8 pixels hold half of each class, so they carry nothing of it: the tokens here are noise.
        let (size, p) = (16usize, 8usize);
        let mut rng = Rng::new(1);
        let mut examples = Vec::new();
        let mut features = Vec::new();
        for _ in 0..4 {
            let cls = |y: usize, x: usize| ((y + x) % 2) as u8;
            let mask: Vec<u8> = (0..size * size).map(|i| cls(i / size, i % size)).collect();
            examples.push(window(
                size,
                |y, x| 0.2 + 0.6 * f32::from(cls(y, x)),
                Target::Mask(mask),
            ));
            let noise: Vec<f32> = (0..8 * 2 * 2)
                .map(|_| (rng.next_u64() % 1000) as f32 / 1000.0)
                .collect();
            features.push(Tensor::from_vec(noise, (8, 2, 2), &Device::Cpu)?);
        }
        let cfg = segmentation_config(size, p, &[]);
        let score = |inputs| val_score(&cfg, inputs, (&examples, &features), 3);
        let pixels = score(LinearInputs::Pixels)?;
        let both = score(LinearInputs::All)?;
        let tokens = score(LinearInputs::Tokens)?;
        assert!(pixels > 0.99, "pixels {pixels}");
        assert!(both > 0.99, "both {both}");
        assert!(tokens < 0.75, "tokens {tokens}");
        Ok(())
    }

    /// Six 24² windows of two classes in 6-pixel stripes whose bands differ by less than each pixel's
    /// noise, with zero tokens, and a config with a 5 × 5 pixel context.
    fn noisy_stripes() -> Result<(TaskModelConfig, Vec<Example>, Vec<Tensor>)> {
        let size = 24usize;
        let mut rng = Rng::new(7);
        let mut examples = Vec::new();
        let mut features = Vec::new();
        let cls = |_y: usize, x: usize| ((x / 6) % 2) as u8;
        for _ in 0..6 {
            let noise: Vec<f32> = (0..size * size)
                .map(|_| ((rng.next_u64() % 10_000) as f32 / 10_000.0 - 0.5) * 0.8)
                .collect();
            let mask: Vec<u8> = (0..size * size).map(|i| cls(i / size, i % size)).collect();
            examples.push(window(
                size,
                |y, x| 0.4 + 0.2 * f32::from(cls(y, x)) + noise[y * size + x],
                Target::Mask(mask),
            ));
            features.push(Tensor::zeros((8, 6, 6), DType::F32, &Device::Cpu)?);
        }
        let cfg = segmentation_config(size, 4, &[2]);
        cfg.validate()?;
        Ok((cfg, examples, features))
    }

    #[test]
    fn neighbourhood_means_see_through_pixel_noise_that_fools_a_per_pixel_model() -> Result<()> {
        let (cfg, examples, features) = noisy_stripes()?;
        let score = |inputs| val_score(&cfg, inputs, (&examples, &features), 4);
        let pixels = score(LinearInputs::Pixels)?;
        let context = score(LinearInputs::PixelsInContext)?;
        assert!(pixels < 0.8, "pixels {pixels}");
        assert!(context > pixels + 0.1, "context {context}, pixels {pixels}");
        Ok(())
    }

    #[test]
    fn cross_validation_scores_held_out_windows_and_ranks_models_as_a_held_out_split_does()
    -> Result<()> {
        let (cfg, examples, features) = noisy_stripes()?;
        let windows: Vec<(&Example, &Tensor)> = examples.iter().zip(&features).collect();
        let folds: Vec<usize> = (0..windows.len()).map(|i| i % CV_FOLDS).collect();
        let cv = |inputs| -> Result<CrossValidation> {
            cross_validate_linear(&cfg, inputs, &windows, &folds, (10_000, 3))?
                .ok_or_else(|| Error::InvalidInput("no cross-validation".into()))
        };
        let (pixels, context) = (
            cv(LinearInputs::Pixels)?,
            cv(LinearInputs::PixelsInContext)?,
        );
        assert_eq!((pixels.folds, pixels.rows), (5, 6 * 24 * 24));
        assert!(LAMBDAS.contains(&pixels.lambda));
        // Every row is scored by a model that never saw it, so the scores match a held-out split.
        let held_out = val_score(&cfg, LinearInputs::Pixels, (&examples, &features), 4)?;
        assert!(
            (pixels.score - held_out).abs() < 0.05,
            "cv {} held out {held_out}",
            pixels.score
        );
        assert!(
            context.score > pixels.score + 0.1,
            "context {context:?}, pixels {pixels:?}"
        );
        // One window cannot be cross-validated.
        assert!(
            cross_validate_linear(&cfg, LinearInputs::Pixels, &windows[..1], &[0], (10_000, 3))?
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn rare_classes_get_as_many_rows_as_common_ones() {
        let keep = keep_probabilities(&[100_000, 1_000, 0], 20_000, false);
        assert!((keep[0] * 100_000.0 - 10_000.0).abs() < 1.0);
        assert_eq!(keep[1], 1.0);
        assert_eq!(keep[2], 0.0);
    }
}
