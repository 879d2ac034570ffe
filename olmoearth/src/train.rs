//! Training blocks for fine-tuning (spec §5.2): an encoder whose parameters are trainable `Var`s initialised
//! from a checkpoint, freeze/unfreeze, AdamW with layer-wise learning-rate decay, and the losses of the
//! rslearn heads.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var, backprop::GradStore};

use crate::checkpoint::StateDict;
use crate::config::EncoderConfig;
use crate::encoder::{Encoder, EncoderInput, EncoderOutput};
use crate::error::{Error, Result};

/// The encoder with every parameter a trainable `Var` (F32), computing in mixed precision where the
/// device has it: the F32 parameters are the master weights, and each forward pass runs on their BF16
/// casts ([`compute_dtype`](Self::compute_dtype)), so gradients reach the F32 parameters through the cast
/// and the optimiser updates them in F32.
#[derive(Debug, Clone)]
pub struct TrainableEncoder {
    encoder: Encoder,
    vars: Vec<(String, Var)>,
    frozen: bool,
    compute: DType,
}

impl TrainableEncoder {
    /// Initialises the parameters from a checkpoint (shapes checked like [`Encoder::load`]).
    pub fn from_state_dict(cfg: &EncoderConfig, sd: &StateDict, device: &Device) -> Result<Self> {
        let tensors = sd.encoder_tensors(cfg, DType::F32, device)?;
        let mut vars: Vec<(String, Var)> = Vec::with_capacity(tensors.len());
        let mut live = HashMap::with_capacity(tensors.len());
        for (k, t) in tensors {
            let v = Var::from_tensor(&t)?;
            live.insert(k.clone(), v.as_tensor().clone());
            vars.push((k, v));
        }
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let encoder = Encoder::from_tensors(cfg, &live, true)?;
        Ok(TrainableEncoder {
            encoder,
            vars,
            frozen: false,
            compute: crate::device::compute_dtype(device),
        })
    }

    /// The dtype forward passes compute in: [`crate::device::compute_dtype`] of the device unless set.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Computes forward passes in `dtype` (F32, or BF16 for mixed precision; the parameters stay F32).
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        if !matches!(dtype, DType::F32 | DType::BF16) {
            return Err(Error::InvalidInput(format!(
                "an encoder computes in f32 or bf16, not {}",
                dtype.as_str()
            )));
        }
        self.compute = dtype;
        Ok(())
    }

    /// The encoder (its weights are the `Var`s, so updates show up in later forwards).
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Parameters by checkpoint key.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Freezes (`true`) or unfreezes the encoder. A frozen encoder's outputs are detached, so no gradient
    /// is computed for it, and [`AdamW`] leaves its parameters alone.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    /// Whether the encoder is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// Forward pass in the compute dtype; token outputs are F32 and are detached when frozen.
    pub fn forward(&self, input: &EncoderInput, patch_size: usize) -> Result<EncoderOutput> {
        let mut out = if self.compute == DType::F32 {
            self.encoder.forward(input, patch_size)?
        } else {
            // The casts are part of the graph: the gradient of each cast parameter flows back to its
            // F32 master as F32.
            let cast = self
                .vars
                .iter()
                .map(|(k, v)| {
                    let t = v.as_tensor();
                    let t = if self.frozen { t.detach() } else { t.clone() };
                    Ok((k.clone(), t.to_dtype(self.compute)?))
                })
                .collect::<Result<HashMap<String, Tensor>>>()?;
            let encoder = Encoder::from_tensors(self.encoder.config(), &cast, !self.frozen)?;
            let mut out = encoder.forward(input, patch_size)?;
            for t in out.tokens.values_mut() {
                *t = t.to_dtype(DType::F32)?;
            }
            out
        };
        if self.frozen {
            for t in out.tokens.values_mut() {
                *t = t.detach();
            }
        }
        Ok(out)
    }

    /// Layer index of a parameter for layer-wise decay: patch embeddings and composite encodings are
    /// layer 0, block i is layer i+1 and the final norm is layer `depth`.
    pub fn layer_of(&self, key: &str) -> usize {
        let depth = self.encoder.config().depth;
        if let Some(rest) = key.strip_prefix("encoder.blocks.") {
            let i: usize = rest
                .split('.')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (i + 1).min(depth)
        } else if key.starts_with("encoder.norm.") {
            depth
        } else {
            0
        }
    }

    /// Parameter groups with `lr_scale = decay^(depth − layer)` (rslearn `LayerDecayAdamW`).
    pub fn param_groups(&self, layer_decay: f64) -> Vec<ParamGroup> {
        let depth = self.encoder.config().depth;
        let mut by_layer: Vec<Vec<Var>> = vec![Vec::new(); depth + 1];
        for (k, v) in &self.vars {
            by_layer[self.layer_of(k)].push(v.clone());
        }
        by_layer
            .into_iter()
            .enumerate()
            .filter(|(_, vars)| !vars.is_empty())
            .map(|(layer, vars)| ParamGroup {
                vars,
                lr_scale: layer_decay.powi((depth - layer) as i32),
                encoder: true,
            })
            .collect()
    }
}

/// Parameters sharing a learning-rate scale.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The parameters.
    pub vars: Vec<Var>,
    /// Multiplier on the base learning rate.
    pub lr_scale: f64,
    /// Whether these are encoder parameters (skipped while the encoder is frozen).
    pub encoder: bool,
}

impl ParamGroup {
    /// A head group (full learning rate, never frozen).
    pub fn head(vars: Vec<Var>) -> Self {
        ParamGroup {
            vars,
            lr_scale: 1.0,
            encoder: false,
        }
    }
}

/// AdamW hyper-parameters (defaults as PyTorch, lr 1e-4 as the OlmoEarth recipes).
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// Base learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    var: Var,
    lr_scale: f64,
    encoder: bool,
    m: Tensor,
    v: Tensor,
}

/// AdamW with per-group learning-rate scales, an encoder freeze switch and an encoder lr factor
/// (the `unfreeze_lr_factor` of rslearn's `FreezeUnfreeze`).
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: i32,
    encoder_frozen: bool,
    encoder_lr_factor: f64,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("cfg", &self.cfg)
            .field("params", &self.slots.len())
            .field("step", &self.step)
            .field("encoder_frozen", &self.encoder_frozen)
            .finish()
    }
}

impl AdamW {
    /// An optimiser over `groups`.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::new();
        for g in groups {
            for var in g.vars {
                let m = var.zeros_like()?;
                let v = var.zeros_like()?;
                slots.push(Slot {
                    var,
                    lr_scale: g.lr_scale,
                    encoder: g.encoder,
                    m,
                    v,
                });
            }
        }
        Ok(AdamW {
            cfg,
            slots,
            step: 0,
            encoder_frozen: false,
            encoder_lr_factor: 1.0,
        })
    }

    /// Skips (`true`) or updates encoder groups.
    pub fn set_encoder_frozen(&mut self, frozen: bool) {
        self.encoder_frozen = frozen;
    }

    /// Multiplies the learning rate of encoder groups (e.g. 0.1 after unfreezing).
    pub fn set_encoder_lr_factor(&mut self, factor: f64) {
        self.encoder_lr_factor = factor;
    }

    /// Sets the base learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// One update from the gradients of a loss.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step);
        let bc2 = 1.0 - c.beta2.powi(self.step);
        for s in &mut self.slots {
            if s.encoder && self.encoder_frozen {
                continue;
            }
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            // A variable's gradient can still carry the graph it was computed through (candle
            // detaches the gradients of intermediate nodes, not the sums it leaves on variables):
            // moments built from it would keep every batch's activations alive, step after step.
            let g = g.detach();
            let g = &g;
            let lr = c.lr
                * s.lr_scale
                * if s.encoder {
                    self.encoder_lr_factor
                } else {
                    1.0
                };
            s.m = ((&s.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&s.m / bc1)?;
            let v_hat = (&s.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let theta = s.var.as_tensor();
            let next = ((theta * (1.0 - lr * c.weight_decay))? - (update * lr)?)?;
            s.var.set(&next.detach())?;
        }
        Ok(())
    }

    /// The optimiser state for a checkpoint: the step count and the first and second moments of every
    /// parameter, in the order the groups were given to [`AdamW::new`].
    pub fn state(&self) -> (i32, Vec<(Tensor, Tensor)>) {
        let moments = self
            .slots
            .iter()
            .map(|s| (s.m.clone(), s.v.clone()))
            .collect();
        (self.step, moments)
    }

    /// Restores a state taken with [`AdamW::state`] from an optimiser built over the same groups.
    pub fn set_state(&mut self, step: i32, moments: Vec<(Tensor, Tensor)>) -> Result<()> {
        if moments.len() != self.slots.len() {
            return Err(Error::InvalidInput(format!(
                "optimiser state has {} parameters, the optimiser {}",
                moments.len(),
                self.slots.len()
            )));
        }
        for (s, (m, v)) in self.slots.iter_mut().zip(moments) {
            if m.dims() != s.var.dims() || v.dims() != s.var.dims() {
                return Err(Error::Shape {
                    what: "optimiser moment".into(),
                    expected: format!("{:?}", s.var.dims()),
                    got: m.dims().to_vec(),
                });
            }
            s.m = m.to_device(s.var.device())?.to_dtype(s.var.dtype())?;
            s.v = v.to_device(s.var.device())?.to_dtype(s.var.dtype())?;
        }
        self.step = step;
        Ok(())
    }

    /// Computes the gradients of `loss` and applies one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// Mean cross-entropy over rows of `logits (N, K)` with integer `targets (N)`, skipping rows whose
/// target equals `ignore_index` (returns 0 when every row is ignored). With `class_weights` (one per
/// class), each row counts with its class's weight and the mean is over the weights (PyTorch's
/// `CrossEntropyLoss(weight=…)`).
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    ignore_index: i64,
    class_weights: Option<&[f32]>,
) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    if targets.dims() != [n] {
        return Err(Error::Shape {
            what: "targets".into(),
            expected: format!("[{n}]"),
            got: targets.dims().to_vec(),
        });
    }
    if let Some(w) = class_weights
        && w.len() != k
    {
        return Err(Error::InvalidInput(format!(
            "{} class weights for {k} classes",
            w.len()
        )));
    }
    let t: Vec<i64> = targets.to_dtype(DType::I64)?.to_vec1()?;
    if let Some(bad) = t
        .iter()
        .find(|&&v| v != ignore_index && !(0..k as i64).contains(&v))
    {
        return Err(Error::InvalidInput(format!(
            "target class {bad} is outside 0..{k}"
        )));
    }
    let valid: Vec<f32> = t
        .iter()
        .map(|&v| {
            if v == ignore_index {
                0.0
            } else {
                class_weights.map_or(1.0, |w| w[v as usize])
            }
        })
        .collect();
    let count: f32 = valid.iter().sum();
    let idx: Vec<u32> = t
        .iter()
        .map(|&v| if v == ignore_index { 0 } else { v as u32 })
        .collect();
    let dev = logits.device();
    let idx = Tensor::from_vec(idx, (n, 1), dev)?;
    let valid = Tensor::from_vec(valid, n, dev)?;
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = logp.gather(&idx, 1)?.squeeze(1)?;
    let denom = if count > 0.0 { f64::from(count) } else { 1.0 };
    Ok(((picked * valid)?.sum_all()? * (-1.0 / denom))?)
}

/// Per-pixel cross-entropy: `logits (B, K, H, W)`, `targets (B, H, W)`.
pub fn cross_entropy_2d(
    logits: &Tensor,
    targets: &Tensor,
    ignore_index: i64,
    class_weights: Option<&[f32]>,
) -> Result<Tensor> {
    let (b, k, h, w) = logits.dims4()?;
    let flat = logits
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((b * h * w, k))?;
    cross_entropy(&flat, &targets.flatten_all()?, ignore_index, class_weights)
}

/// Mean squared error.
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((pred - target)?.sqr()?.mean_all()?)
}

/// Mean absolute error.
pub fn l1(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    Ok((pred - target)?.abs()?.mean_all()?)
}

/// Huber loss with threshold `delta` (PyTorch `HuberLoss`, mean reduction).
pub fn huber(pred: &Tensor, target: &Tensor, delta: f64) -> Result<Tensor> {
    let a = (pred - target)?.abs()?;
    let quad = a.clamp(0.0, delta)?;
    let lin = (&a - &quad)?;
    Ok(((quad.sqr()? * 0.5)? + (lin * delta)?)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optimiser_keeps_no_batch_alive_after_its_step() -> Result<()> {
        // Two layers: the second one's gradient is computed from the first one's activations.
        let dev = Device::Cpu;
        let w1 = Var::from_tensor(&Tensor::new(&[[0.5f32, -0.2], [0.1, 0.3]], &dev)?)?;
        let w2 = Var::from_tensor(&Tensor::new(&[[0.7f32], [-0.4]], &dev)?)?;
        let mut opt = AdamW::new(
            vec![ParamGroup {
                vars: vec![w1.clone(), w2.clone()],
                lr_scale: 1.0,
                encoder: false,
            }],
            AdamWConfig::default(),
        )?;
        for step in 0..3 {
            let x = Tensor::new(&[[1.0f32, 2.0 + step as f32]], &dev)?;
            let y = x.matmul(w1.as_tensor())?.relu()?.matmul(w2.as_tensor())?;
            opt.backward_step(&y.sqr()?.sum_all()?)?;
        }
        // Moments built from a gradient that still carried its graph would hold every batch's
        // activations: memory that grows with each step of training.
        let (_, moments) = opt.state();
        for (m, v) in &moments {
            assert!(!m.track_op() && !v.track_op(), "a moment tracks its graph");
        }
        Ok(())
    }

    #[test]
    fn cross_entropy_ignores_the_ignore_index() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0], [0.0, 2.0], [5.0, -5.0]], &dev)?;
        let targets = Tensor::new(&[0i64, 1, -1], &dev)?;
        let l = cross_entropy(&logits, &targets, -1, None)?.to_scalar::<f32>()?;
        let expect = (1.0 + (-2f32).exp()).ln();
        assert!((l - expect).abs() < 1e-5, "{l} vs {expect}");
        Ok(())
    }

    #[test]
    fn class_weights_weigh_each_row_by_its_class() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, 0.0], [2.0, 0.0], [0.0, 0.0]], &dev)?;
        let targets = Tensor::new(&[0i64, 0, 1], &dev)?;
        let right = (1.0 + (-2f32).exp()).ln(); // rows of class 0
        let even = 2f32.ln(); // the row of class 1
        let plain = cross_entropy(&logits, &targets, -1, None)?.to_scalar::<f32>()?;
        assert!((plain - (2.0 * right + even) / 3.0).abs() < 1e-5);
        // Class 1 weighs 4: (1·right + 1·right + 4·even) / 6.
        let weighted =
            cross_entropy(&logits, &targets, -1, Some(&[1.0, 4.0]))?.to_scalar::<f32>()?;
        assert!((weighted - (2.0 * right + 4.0 * even) / 6.0).abs() < 1e-5);
        assert!(cross_entropy(&logits, &targets, -1, Some(&[1.0])).is_err());
        Ok(())
    }

    #[test]
    fn regression_losses() -> Result<()> {
        let dev = Device::Cpu;
        let p = Tensor::new(&[0.0f32, 3.0], &dev)?;
        let t = Tensor::new(&[0.5f32, 0.0], &dev)?;
        assert!((mse(&p, &t)?.to_scalar::<f32>()? - (0.25 + 9.0) / 2.0).abs() < 1e-6);
        assert!((l1(&p, &t)?.to_scalar::<f32>()? - 1.75).abs() < 1e-6);
        // |0.5| < 1: 0.125; |3| ≥ 1: 3 − 0.5 = 2.5.
        assert!((huber(&p, &t, 1.0)?.to_scalar::<f32>()? - (0.125 + 2.5) / 2.0).abs() < 1e-6);
        Ok(())
    }
}
