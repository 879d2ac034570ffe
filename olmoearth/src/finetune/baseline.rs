//! The frozen-encoder baseline: k-nearest neighbours and a ridge linear probe on the pretrained
//! encoder's embeddings.

use super::*;
use crate::task::Task;

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
pub(super) fn samples(
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
pub(super) fn cholesky_solve(a: &[f64], b: &[f64], n: usize, k: usize) -> Result<Vec<f64>> {
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

pub(super) const KNN_KS: [usize; 4] = [1, 5, 15, 31];
pub(super) const RIDGE_LAMBDAS: [f64; 6] = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0];

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
        self.predict_with(features, self.summary.method == "knn")
    }

    /// Predictions of the kNN probe (`knn`) or the linear probe for windows with features `(D, h, w)`.
    pub fn predict_with(&self, features: &[Tensor], knn: bool) -> Result<Vec<Prediction>> {
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
            let preds = if knn {
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

pub(super) fn score(preds: &[f64], labels: &[f64], regression: bool) -> f64 {
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
    use crate::task::HeadKind;

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
            pixel_channels: 0,
            pixel_context: Vec::new(),
            context_observed_only: true,
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
}
