//! The OlmoEarth v1 encoder forward pass (spec §3).
//!
//! Per modality and band set: optional antialiased bicubic resize of the input (p ≠ 8), an 8×8/8 conv
//! written as a matmul, then the composite encodings. Tokens flattened in (h, w, t, s) order are
//! concatenated over modalities and run through `depth` pre-norm blocks and a final LayerNorm.
//! Tokens whose mask is non-zero are dropped per sample, which equals running each sample alone;
//! their outputs are zero.

use std::collections::BTreeMap;

use candle_core::{CpuStorage, D, DType, Device, IndexOp, Storage, Tensor};

use crate::checkpoint::{StateDict, patch_embed_key};
use crate::config::EncoderConfig;
use crate::encodings::{BASE_GSD, spatial_encoding, time_encoding};
use crate::error::{Error, Result};
use crate::modality::Modality;
use crate::resize::Resize;

/// LayerNorm epsilon of every norm in the model.
pub const LN_EPS: f64 = 1e-5;

/// Number of attention-score elements one query chunk may hold (128 MiB in f32). Bounds attention memory
/// to O(N) instead of O(N²).
pub const ATTN_CHUNK_ELEMS: usize = 1 << 25;

/// Mask value of a present token.
pub const MASK_PRESENT: i64 = 0;
/// Mask value of a missing token.
pub const MASK_MISSING: i64 = 3;

/// One modality's input.
#[derive(Debug, Clone)]
pub struct ModalityInput {
    /// Normalised data `(B, H, W, T, C)`, bands in [`Modality::bands`] order.
    pub data: Tensor,
    /// Optional integer mask `(B, H, W, T, S)`: 0 present, 3 missing.
    pub mask: Option<Tensor>,
}

/// A batch for the encoder.
#[derive(Debug, Clone)]
pub struct EncoderInput {
    /// Per-modality inputs; all share B, H, W and T.
    pub modalities: BTreeMap<Modality, ModalityInput>,
    /// Month of each time step, 0–11, shape `(B, T)`, any integer dtype.
    pub months: Tensor,
}

/// Sizes shared by every modality of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputDims {
    /// Batch size.
    pub b: usize,
    /// Height in pixels.
    pub h: usize,
    /// Width in pixels.
    pub w: usize,
    /// Time steps.
    pub t: usize,
}

fn shape_err(what: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Error {
    Error::Shape {
        what: what.into(),
        expected: expected.into(),
        got: got.to_vec(),
    }
}

fn is_integer(dt: DType) -> bool {
    matches!(
        dt,
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64
    )
}

impl EncoderInput {
    /// Checks the input against the model and the patch size; returns the shared sizes.
    ///
    /// H and W must be multiples of the patch size when a mask is given; see [`Self::check_divisible`].
    pub fn validate(&self, cfg: &EncoderConfig, patch_size: usize) -> Result<InputDims> {
        if !(1..=cfg.max_patch_size).contains(&patch_size) {
            return Err(Error::InvalidInput(format!(
                "patch size {patch_size} is outside 1..={}",
                cfg.max_patch_size
            )));
        }
        if self.modalities.is_empty() {
            return Err(Error::InvalidInput("no modality in the input".into()));
        }
        let mut dims: Option<InputDims> = None;
        for (&m, inp) in &self.modalities {
            if !cfg.modalities.contains(&m) {
                return Err(Error::InvalidInput(format!(
                    "the model has no weights for modality {m}"
                )));
            }
            let what = m.name();
            if inp.data.dtype() != DType::F32 && inp.data.dtype() != DType::BF16 {
                return Err(Error::DType {
                    what: what.into(),
                    expected: "F32".into(),
                    got: format!("{:?}", inp.data.dtype()),
                });
            }
            let s = inp.data.dims();
            if s.len() != 5 {
                return Err(shape_err(
                    what,
                    format!("(B, H, W, T, {})", m.num_bands()),
                    s,
                ));
            }
            if s[4] != m.num_bands() {
                return Err(Error::InvalidInput(format!(
                    "{m} has {} bands in the last axis, expected {} ({})",
                    s[4],
                    m.num_bands(),
                    m.bands().join(",")
                )));
            }
            let d = InputDims {
                b: s[0],
                h: s[1],
                w: s[2],
                t: s[3],
            };
            if let Some(prev) = dims.filter(|prev| *prev != d) {
                return Err(shape_err(
                    what,
                    format!(
                        "(B, H, W, T) = ({}, {}, {}, {}) like the other modalities",
                        prev.b, prev.h, prev.w, prev.t
                    ),
                    s,
                ));
            }
            dims = Some(d);
            if let Some(mask) = &inp.mask {
                let what = format!("{m}_mask");
                if !is_integer(mask.dtype()) {
                    return Err(Error::DType {
                        what,
                        expected: "an integer type (U8, U32, I64)".into(),
                        got: format!("{:?}", mask.dtype()),
                    });
                }
                let want = [d.b, d.h, d.w, d.t, m.num_band_sets()];
                if mask.dims() != want {
                    return Err(shape_err(what, format!("{want:?}"), mask.dims()));
                }
            }
        }
        let Some(d) = dims else {
            return Err(Error::InvalidInput("no modality in the input".into()));
        };
        if d.b == 0 || d.t == 0 || d.h == 0 || d.w == 0 {
            return Err(Error::InvalidInput(format!("empty input dimensions {d:?}")));
        }
        // Like the reference, unmasked inputs may have sizes that are not multiples of p (the whole image
        // is resampled onto ⌊H/p⌋·8 pixels); masks are sampled at patch corners and need exact multiples.
        let masked = self.modalities.values().any(|i| i.mask.is_some());
        if masked && (d.h % patch_size != 0 || d.w % patch_size != 0) {
            return Err(Error::InvalidInput(format!(
                "H×W = {}×{} is not divisible by the patch size {patch_size}",
                d.h, d.w
            )));
        }
        if d.t > cfg.max_sequence_length {
            return Err(Error::InvalidInput(format!(
                "T = {} time steps exceeds the maximum of {}",
                d.t, cfg.max_sequence_length
            )));
        }
        if !is_integer(self.months.dtype()) {
            return Err(Error::DType {
                what: "timestamps".into(),
                expected: "an integer type".into(),
                got: format!("{:?}", self.months.dtype()),
            });
        }
        if self.months.dims() != [d.b, d.t] {
            return Err(shape_err(
                "months",
                format!("[{}, {}]", d.b, d.t),
                self.months.dims(),
            ));
        }
        let months: Vec<i64> = self.months.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
        if let Some(bad) = months.iter().find(|&&m| !(0..12).contains(&m)) {
            return Err(Error::InvalidInput(format!(
                "month {bad} is outside 0..=11"
            )));
        }
        Ok(d)
    }
}

impl EncoderInput {
    /// Errors unless H and W are multiples of the patch size (required by `model embed` for every input).
    pub fn check_divisible(&self, patch_size: usize) -> Result<()> {
        for (m, i) in &self.modalities {
            let d = i.data.dims();
            if d.len() == 5 && patch_size > 0 && (d[1] % patch_size != 0 || d[2] % patch_size != 0)
            {
                return Err(Error::InvalidInput(format!(
                    "{m}: H×W = {}×{} is not divisible by the patch size {patch_size}",
                    d[1], d[2]
                )));
            }
        }
        Ok(())
    }
}

/// Encoder output tokens and their presence masks.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Per modality `(B, h, w, T, S, D)`; dropped tokens are zero.
    pub tokens: BTreeMap<Modality, Tensor>,
    /// Per modality `(B, h, w, T, S)` in F32: 1 for tokens that were encoded, 0 for dropped ones.
    pub present: BTreeMap<Modality, Tensor>,
}

impl EncoderOutput {
    /// Mean over (T, S) of the present tokens per modality, then mean over the modalities with at least one
    /// present token at that location: `(B, h, w, D)`. Locations with no present token are zero.
    pub fn pooled(&self) -> Result<Tensor> {
        let mut num: Option<Tensor> = None;
        let mut den: Option<Tensor> = None;
        for (m, tok) in &self.tokens {
            let pres = self
                .present
                .get(m)
                .ok_or_else(|| Error::InvalidInput(format!("no mask for {m}")))?;
            let pres = pres.to_dtype(DType::F32)?;
            let count = pres.sum(4)?.sum(3)?; // (B,h,w)
            let sum = tok.to_dtype(DType::F32)?.sum(4)?.sum(3)?; // dropped tokens are zero
            let mean = sum.broadcast_div(&count.clamp(1.0, f64::INFINITY)?.unsqueeze(3)?)?;
            let has = count.gt(0.0)?.to_dtype(DType::F32)?.unsqueeze(3)?; // (B,h,w,1)
            let part = mean.broadcast_mul(&has)?;
            num = Some(match num {
                Some(n) => (n + part)?,
                None => part,
            });
            den = Some(match den {
                Some(d) => (d + has)?,
                None => has,
            });
        }
        let (Some(num), Some(den)) = (num, den) else {
            return Err(Error::InvalidInput("no modality in the output".into()));
        };
        let dtype = self
            .tokens
            .values()
            .next()
            .map_or(DType::F32, Tensor::dtype);
        Ok(num
            .broadcast_div(&den.clamp(1.0, f64::INFINITY)?)?
            .to_dtype(dtype)?)
    }
}

/// A LayerNorm's affine parameters.
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

/// A Linear layer in the PyTorch layout (`weight (out, in)`).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `x (M, in) → (M, out)`.
    fn forward2(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    norm1: Norm,
    q: Linear,
    k: Linear,
    v: Linear,
    /// q, k and v stacked `(3D, D)` for inference; recomputed in the forward when training.
    qkv: Option<Linear>,
    proj: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
}

/// A block of the f32 CPU inference path ([`crate::kernels::stack`]): q, k and v packed, and every
/// Linear weight stored transposed, `(in, out)` row-major, the layout gemm reads fastest.
#[derive(Debug, Clone)]
struct CpuBlock {
    norm1: Norm,
    qkv_t: Linear,
    proj_t: Linear,
    norm2: Norm,
    fc1_t: Linear,
    fc2_t: Linear,
}

/// The transformer blocks, in the form the forward path needs.
#[derive(Debug, Clone)]
enum Blocks {
    /// candle ops: training, other devices and dtypes.
    Candle(Vec<Block>),
    /// f32 inference on the CPU.
    Cpu(Vec<CpuBlock>),
}

#[derive(Debug, Clone)]
struct PatchProj {
    /// `(D, c, 8, 8)`.
    weight: Tensor,
    bias: Tensor,
}

/// The OlmoEarth v1 encoder.
#[derive(Debug, Clone)]
pub struct Encoder {
    cfg: EncoderConfig,
    patch: BTreeMap<Modality, Vec<PatchProj>>,
    channel: BTreeMap<Modality, Tensor>,
    month_embed: Tensor,
    blocks: Blocks,
    norm: Norm,
    /// Use ops with a backward pass (training); the fused inference kernels have none.
    differentiable: bool,
    device: Device,
    dtype: DType,
}

impl Encoder {
    /// Builds the encoder from a state dict, checking every key and shape, with weights in `dtype` on `device`.
    pub fn load(
        cfg: &EncoderConfig,
        sd: &StateDict,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let tensors = sd.encoder_tensors(cfg, dtype, device)?;
        Self::from_tensors(cfg, &tensors, false)
    }

    /// Builds the encoder from tensors keyed like the checkpoint. With `differentiable`, the forward uses
    /// only ops with gradients (slower), for fine-tuning with tensors that are `Var`s.
    pub fn from_tensors(
        cfg: &EncoderConfig,
        t: &std::collections::HashMap<String, Tensor>,
        differentiable: bool,
    ) -> Result<Self> {
        let sd = StateDict::from_tensors(t.clone());
        let shapes: std::collections::HashMap<String, Vec<usize>> =
            crate::checkpoint::expected_shapes(cfg)
                .into_iter()
                .collect();
        let get = |key: &str| -> Result<Tensor> {
            let shape = shapes.get(key).cloned().unwrap_or_default();
            Ok(sd.get(key, &shape)?.clone())
        };
        let lin = |p: &str| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
            })
        };
        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
            })
        };
        let month_embed = get("encoder.composite_encodings.month_embed.weight")?;
        let device = month_embed.device().clone();
        let dtype = month_embed.dtype();
        let mut patch = BTreeMap::new();
        let mut channel = BTreeMap::new();
        for &m in &cfg.modalities {
            let mut sets = Vec::new();
            for s in 0..m.num_band_sets() {
                let key = patch_embed_key(m, s);
                sets.push(PatchProj {
                    weight: get(&format!("{key}.weight"))?,
                    bias: get(&format!("{key}.bias"))?,
                });
            }
            patch.insert(m, sets);
            channel.insert(
                m,
                get(&format!(
                    "encoder.composite_encodings.per_modality_channel_embeddings.{m}"
                ))?,
            );
        }
        let cpu = !differentiable && device.is_cpu() && dtype == DType::F32;
        let transposed = |l: Linear| -> Result<Linear> {
            Ok(Linear {
                weight: l.weight.t()?.contiguous()?,
                bias: l.bias,
            })
        };
        let mut blocks = Vec::new();
        let mut cpu_blocks = Vec::new();
        for i in 0..cfg.depth {
            let b = format!("encoder.blocks.{i}");
            let (q, k, v) = (
                lin(&format!("{b}.attn.q"))?,
                lin(&format!("{b}.attn.k"))?,
                lin(&format!("{b}.attn.v"))?,
            );
            let qkv = if differentiable {
                None
            } else {
                Some(Linear {
                    weight: Tensor::cat(&[&q.weight, &k.weight, &v.weight], 0)?,
                    bias: Tensor::cat(&[&q.bias, &k.bias, &v.bias], 0)?,
                })
            };
            if let (true, Some(qkv)) = (cpu, qkv.clone()) {
                cpu_blocks.push(CpuBlock {
                    norm1: norm(&format!("{b}.norm1"))?,
                    qkv_t: transposed(qkv)?,
                    proj_t: transposed(lin(&format!("{b}.attn.proj"))?)?,
                    norm2: norm(&format!("{b}.norm2"))?,
                    fc1_t: transposed(lin(&format!("{b}.mlp.fc1"))?)?,
                    fc2_t: transposed(lin(&format!("{b}.mlp.fc2"))?)?,
                });
                continue;
            }
            blocks.push(Block {
                norm1: norm(&format!("{b}.norm1"))?,
                q,
                k,
                v,
                qkv,
                proj: lin(&format!("{b}.attn.proj"))?,
                norm2: norm(&format!("{b}.norm2"))?,
                fc1: lin(&format!("{b}.mlp.fc1"))?,
                fc2: lin(&format!("{b}.mlp.fc2"))?,
            });
        }
        Ok(Encoder {
            cfg: cfg.clone(),
            patch,
            channel,
            month_embed,
            blocks: if cpu {
                Blocks::Cpu(cpu_blocks)
            } else {
                Blocks::Candle(blocks)
            },
            norm: norm("encoder.norm")?,
            differentiable,
            device,
            dtype,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Dtype of the weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Patch embedding per modality: `(B, h, w, T, S, D)` (spec §3.1).
    pub fn patch_embed(
        &self,
        input: &EncoderInput,
        patch_size: usize,
    ) -> Result<BTreeMap<Modality, Tensor>> {
        let dims = input.validate(&self.cfg, patch_size)?;
        self.patch_embed_unchecked(input, patch_size, dims)
    }

    fn patch_embed_unchecked(
        &self,
        input: &EncoderInput,
        p: usize,
        dims: InputDims,
    ) -> Result<BTreeMap<Modality, Tensor>> {
        let k = self.cfg.max_patch_size;
        let d = self.cfg.embedding_size;
        let (b, t) = (dims.b, dims.t);
        let (gh, gw) = (dims.h / p, dims.w / p);
        let resize = if p != k {
            Some(Resize::new(
                (dims.h, dims.w),
                (gh * k, gw * k),
                self.dtype,
                &self.device,
            )?)
        } else {
            None
        };
        let mut out = BTreeMap::new();
        for (&m, inp) in &input.modalities {
            let data = inp.data.to_device(&self.device)?.to_dtype(self.dtype)?;
            let projs = self.patch.get(&m).ok_or_else(|| {
                Error::InvalidInput(format!("the model has no weights for modality {m}"))
            })?;
            let mut sets = Vec::with_capacity(projs.len());
            for (bands, proj) in m.band_sets().iter().zip(projs) {
                let c = bands.len();
                let start = bands.first().copied().unwrap_or(0);
                // (B,H,W,T,c) → (B,T,c,H,W)
                let x = data
                    .narrow(4, start, c)?
                    .permute((0, 3, 4, 1, 2))?
                    .contiguous()?;
                let x = x.reshape((b * t * c, dims.h, dims.w))?;
                let x = match &resize {
                    Some(r) => r.apply(&x)?,
                    None => x,
                };
                // (B,T,c,h,8,w,8) → (B,h,w,T,c,8,8): patches flattened in (c, ky, kx) order like the conv.
                let x = x
                    .reshape(vec![b, t, c, gh, k, gw, k])?
                    .permute([0, 3, 5, 1, 2, 4, 6])?
                    .contiguous()?
                    .reshape((b * gh * gw * t, c * k * k))?;
                let w = proj.weight.reshape((d, c * k * k))?;
                let y = x.matmul(&w.t()?)?.broadcast_add(&proj.bias)?;
                sets.push(y.reshape((b, gh, gw, t, d))?);
            }
            out.insert(m, Tensor::stack(&sets, 4)?);
        }
        Ok(out)
    }

    /// Adds the composite encodings (spec §3.3) to patch embeddings: the input of block 0.
    pub fn add_encodings(
        &self,
        embedded: &BTreeMap<Modality, Tensor>,
        months: &Tensor,
        patch_size: usize,
    ) -> Result<BTreeMap<Modality, Tensor>> {
        let n = self.cfg.embedding_size / 4;
        let months = months.to_dtype(DType::U32)?.to_device(&self.device)?;
        let mut out = BTreeMap::new();
        for (&m, x) in embedded {
            let &[b, h, w, t, s, _] = x.dims() else {
                return Err(shape_err(
                    format!("{m} patch embedding"),
                    "(B, h, w, T, S, D)",
                    x.dims(),
                ));
            };
            let full = (b, h, w, t, s, n);
            let chan = self
                .channel
                .get(&m)
                .ok_or_else(|| {
                    Error::InvalidInput(format!("the model has no weights for modality {m}"))
                })?
                .reshape((1, 1, 1, 1, s, n))?
                .broadcast_as(full)?;
            let time = time_encoding(t, n, self.dtype, &self.device)?
                .reshape((1, 1, 1, t, 1, n))?
                .broadcast_as(full)?;
            let month = self
                .month_embed
                .index_select(&months.flatten_all()?, 0)?
                .reshape((b, 1, 1, t, 1, n))?
                .broadcast_as(full)?;
            let gsd_ratio = BASE_GSD * patch_size as f32 / BASE_GSD;
            let space = spatial_encoding(h, w, n, gsd_ratio, self.dtype, &self.device)?
                .reshape((1, h, w, 1, 1, n))?
                .broadcast_as(full)?;
            let enc = Tensor::cat(&[&chan, &time, &month, &space], 5)?;
            out.insert(m, (x + enc)?);
        }
        Ok(out)
    }

    /// The full forward pass.
    pub fn forward(&self, input: &EncoderInput, patch_size: usize) -> Result<EncoderOutput> {
        let dims = input.validate(&self.cfg, patch_size)?;
        let embedded = self.patch_embed_unchecked(input, patch_size, dims)?;
        let with_enc = self.add_encodings(&embedded, &input.months, patch_size)?;
        self.forward_encoded(input, &with_enc, patch_size, dims)
    }

    fn forward_encoded(
        &self,
        input: &EncoderInput,
        with_enc: &BTreeMap<Modality, Tensor>,
        p: usize,
        dims: InputDims,
    ) -> Result<EncoderOutput> {
        let d = self.cfg.embedding_size;
        let b = dims.b;
        let (gh, gw) = (dims.h / p, dims.w / p);
        // Token presence per sample, in sequence order.
        let mut keep: Vec<Vec<bool>> = vec![Vec::new(); b];
        let mut seq = Vec::new();
        let mut layout = Vec::new();
        let mut present = BTreeMap::new();
        for (&m, x) in with_enc {
            let s = m.num_band_sets();
            let len = gh * gw * dims.t * s;
            seq.push(x.reshape((b, len, d))?);
            layout.push((m, len, s));
            let flags = token_presence(
                input.modalities.get(&m).and_then(|i| i.mask.as_ref()),
                p,
                (b, gh, gw, dims.t, s),
            )?;
            for (bi, k) in keep.iter_mut().enumerate() {
                k.extend_from_slice(&flags[bi * len..(bi + 1) * len]);
            }
            let pres: Vec<f32> = flags.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
            present.insert(
                m,
                Tensor::from_vec(pres, (b, gh, gw, dims.t, s), &Device::Cpu)?
                    .to_device(&self.device)?,
            );
        }
        let x = Tensor::cat(&seq, 1)?;
        let n_tok = x.dim(1)?;
        let y = if keep.iter().all(|k| k.iter().all(|&f| f)) {
            self.transform(&x)?
        } else {
            self.transform_dropping(&x, &keep)?
        };
        let mut tokens = BTreeMap::new();
        let mut off = 0;
        for (m, len, s) in layout {
            let part = y.narrow(1, off, len)?.reshape((b, gh, gw, dims.t, s, d))?;
            tokens.insert(m, part);
            off += len;
        }
        debug_assert_eq!(off, n_tok);
        Ok(EncoderOutput { tokens, present })
    }

    /// Drops the absent tokens of each sample, runs samples with equal kept counts together, and puts the
    /// results back with zeros at the dropped positions.
    fn transform_dropping(&self, x: &Tensor, keep: &[Vec<bool>]) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (bi, k) in keep.iter().enumerate() {
            groups
                .entry(k.iter().filter(|&&f| f).count())
                .or_default()
                .push(bi);
        }
        let mut outs: Vec<Option<Tensor>> = vec![None; b];
        for (count, members) in groups {
            if count == 0 {
                for &bi in &members {
                    outs[bi] = Some(Tensor::zeros((n, d), x.dtype(), x.device())?);
                }
                continue;
            }
            let mut gathered = Vec::with_capacity(members.len());
            for &bi in &members {
                let idx: Vec<u32> = (0..n as u32).filter(|&j| keep[bi][j as usize]).collect();
                let idx = Tensor::from_vec(idx, count, x.device())?;
                gathered.push(x.get(bi)?.index_select(&idx, 0)?);
            }
            let y = self.transform(&Tensor::stack(&gathered, 0)?)?;
            let zero = Tensor::zeros((1, d), y.dtype(), y.device())?;
            for (gi, &bi) in members.iter().enumerate() {
                let mut pos = 0u32;
                let map: Vec<u32> = keep[bi]
                    .iter()
                    .map(|&f| {
                        if f {
                            pos += 1;
                            pos - 1
                        } else {
                            count as u32
                        }
                    })
                    .collect();
                let map = Tensor::from_vec(map, n, y.device())?;
                let padded = Tensor::cat(&[&y.i(gi)?, &zero], 0)?;
                outs[bi] = Some(padded.index_select(&map, 0)?);
            }
        }
        let outs: Vec<Tensor> = outs
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::InvalidInput("sample without output".into())))
            .collect::<Result<_>>()?;
        Ok(Tensor::stack(&outs, 0)?)
    }

    /// Blocks and final norm on `(B, N, D)`.
    pub fn transform(&self, x: &Tensor) -> Result<Tensor> {
        let blocks = match &self.blocks {
            Blocks::Cpu(blocks) => return self.transform_cpu(blocks, x),
            Blocks::Candle(blocks) => blocks,
        };
        let (b, n, d) = x.dims3()?;
        let mut x = x.reshape((b * n, d))?;
        for blk in blocks {
            x = self.block(blk, &x, b, n)?;
        }
        Ok(self.layer_norm(&x, &self.norm)?.reshape((b, n, d))?)
    }

    /// [`Self::transform`] for f32 inference on the CPU: the whole stack in [`crate::kernels::stack`], on
    /// slices borrowed from the weight tensors.
    fn transform_cpu(&self, cpu_blocks: &[CpuBlock], x: &Tensor) -> Result<Tensor> {
        use crate::kernels::stack::{BlockParams, Params, StackDims};
        let (b, n, d) = x.dims3()?;
        let xs: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut tensors: Vec<&Tensor> = Vec::with_capacity(12 * cpu_blocks.len() + 2);
        for blk in cpu_blocks {
            tensors.extend([&blk.norm1.weight, &blk.norm1.bias]);
            for l in [&blk.qkv_t, &blk.proj_t, &blk.fc1_t, &blk.fc2_t] {
                tensors.extend([&l.weight, &l.bias]);
            }
            tensors.extend([&blk.norm2.weight, &blk.norm2.bias]);
        }
        tensors.push(&self.norm.weight);
        tensors.push(&self.norm.bias);
        let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
        let slices = guards
            .iter()
            .map(
                |(storage, layout)| match (&**storage, layout.contiguous_offsets()) {
                    (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => Ok(&v[start..end]),
                    _ => Err(Error::InvalidInput(
                        "the CPU encoder needs contiguous f32 weights".into(),
                    )),
                },
            )
            .collect::<Result<Vec<&[f32]>>>()?;
        let p = |i: usize| Params {
            weight: slices[i],
            bias: slices[i + 1],
        };
        let blocks: Vec<BlockParams<'_>> = (0..cpu_blocks.len())
            .map(|i| {
                let o = 12 * i;
                BlockParams {
                    norm1: p(o),
                    qkv: p(o + 2),
                    proj: p(o + 4),
                    fc1: p(o + 6),
                    fc2: p(o + 8),
                    norm2: p(o + 10),
                }
            })
            .collect();
        let dims = StackDims {
            b,
            n,
            d,
            heads: self.cfg.num_heads,
        };
        let y = crate::kernels::stack::run(xs, dims, &blocks, p(12 * cpu_blocks.len()))
            .map_err(Error::InvalidInput)?;
        Ok(Tensor::from_vec(y, (b, n, d), &Device::Cpu)?)
    }

    fn layer_norm(&self, x: &Tensor, norm: &Norm) -> Result<Tensor> {
        if self.differentiable {
            Ok(candle_nn::ops::layer_norm_slow(
                x,
                &norm.weight,
                &norm.bias,
                LN_EPS as f32,
            )?)
        } else {
            Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &norm.weight,
                &norm.bias,
                LN_EPS as f32,
            )?)
        }
    }

    /// One pre-norm block on `x (B·N, D)`.
    fn block(&self, blk: &Block, x: &Tensor, b: usize, n: usize) -> Result<Tensor> {
        let d = self.cfg.embedding_size;
        let heads = self.cfg.num_heads;
        let hd = d / heads;
        let y = self.layer_norm(x, &blk.norm1)?;
        let (q, k, v) = match &blk.qkv {
            Some(qkv) => {
                let all = qkv.forward2(&y)?.reshape((b, n, 3, heads, hd))?;
                // (B,N,3,H,hd) → (3,B,H,N,hd)
                let all = all.permute((2, 0, 3, 1, 4))?.contiguous()?;
                (all.get(0)?, all.get(1)?, all.get(2)?)
            }
            None => {
                let split = |l: &Linear| -> Result<Tensor> {
                    Ok(l.forward2(&y)?
                        .reshape((b, n, heads, hd))?
                        .transpose(1, 2)?
                        .contiguous()?)
                };
                (split(&blk.q)?, split(&blk.k)?, split(&blk.v)?)
            }
        };
        let a = attention(&q, &k, &v, self.differentiable)?; // (B,H,N,hd)
        let a = a.transpose(1, 2)?.contiguous()?.reshape((b * n, d))?;
        let x = (x + blk.proj.forward2(&a)?)?;
        let y = self.layer_norm(&x, &blk.norm2)?;
        let y = blk.fc2.forward2(&blk.fc1.forward2(&y)?.gelu_erf()?)?;
        Ok((x + y)?)
    }
}

/// Softmax attention `softmax(q kᵀ/√d) v` for `(B, H, N, hd)` inputs, in query chunks so that at most
/// [`ATTN_CHUNK_ELEMS`] scores exist at once; each chunk holds complete rows, so the result is exact.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, differentiable: bool) -> Result<Tensor> {
    attention_chunked(q, k, v, differentiable, ATTN_CHUNK_ELEMS)
}

/// [`attention`] with an explicit score budget (elements per chunk).
pub fn attention_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    differentiable: bool,
    budget: usize,
) -> Result<Tensor> {
    let (b, h, n, hd) = q.dims4()?;
    let nk = k.dim(2)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let q = (q * scale)?;
    let kt = k.t()?;
    let chunk = (budget / (b * h * nk).max(1)).clamp(1, n.max(1));
    let softmax = |s: &Tensor| -> Result<Tensor> {
        if differentiable {
            Ok(candle_nn::ops::softmax(s, D::Minus1)?)
        } else {
            Ok(candle_nn::ops::softmax_last_dim(s)?)
        }
    };
    if chunk >= n {
        return Ok(softmax(&q.matmul(&kt)?)?.matmul(v)?);
    }
    let mut outs = Vec::with_capacity(n.div_ceil(chunk));
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let qc = q.narrow(2, start, len)?;
        outs.push(softmax(&qc.matmul(&kt)?)?.matmul(v)?);
        start += len;
    }
    Ok(Tensor::cat(&outs, 2)?)
}

/// Per-token presence `(B·h·w·T·S)` in (b, h, w, t, s) order: the mask at each patch's top-left pixel is 0.
fn token_presence(
    mask: Option<&Tensor>,
    p: usize,
    (b, gh, gw, t, s): (usize, usize, usize, usize, usize),
) -> Result<Vec<bool>> {
    let Some(mask) = mask else {
        return Ok(vec![true; b * gh * gw * t * s]);
    };
    let (_, h, w, _, _) = mask.dims5()?;
    let vals: Vec<i64> = mask
        .to_device(&Device::Cpu)?
        .to_dtype(DType::I64)?
        .flatten_all()?
        .to_vec1()?;
    let mut out = Vec::with_capacity(b * gh * gw * t * s);
    for bi in 0..b {
        for i in 0..gh {
            for j in 0..gw {
                let base = (((bi * h + i * p) * w) + j * p) * t * s;
                out.extend(vals[base..base + t * s].iter().map(|&v| v == MASK_PRESENT));
            }
        }
    }
    Ok(out)
}

/// Bytes of the largest attention-score buffer for a sequence of `n` tokens with `heads` heads and
/// batch `b` at `bytes_per_elem` (the dominant activation for long sequences).
pub fn attention_peak_bytes(b: usize, heads: usize, n: usize, bytes_per_elem: usize) -> usize {
    let chunk = (ATTN_CHUNK_ELEMS / (b * heads * n).max(1)).clamp(1, n.max(1));
    b * heads * chunk * n * bytes_per_elem
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::random_state_dict;
    use crate::config::ModelSize;

    /// The f32 CPU stack ([`Encoder::transform_cpu`]) against candle's differentiable ops, for both head
    /// widths the presets use (Nano 16, the others 64), with a sample whose tokens are partly dropped.
    #[test]
    fn the_cpu_stack_matches_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        for size in [ModelSize::Nano, ModelSize::Tiny] {
            let cfg = EncoderConfig::preset(size);
            let tensors = random_state_dict(&cfg, &dev)?.encoder_tensors(&cfg, DType::F32, &dev)?;
            let fast = Encoder::from_tensors(&cfg, &tensors, false)?;
            let reference = Encoder::from_tensors(&cfg, &tensors, true)?;
            let (b, hw, t, p) = (2, 16, 3, 4);
            let data = Tensor::randn(0f32, 1.0, (b, hw, hw, t, 12), &dev)?;
            // Sample 1 misses its first time step in every band set.
            let mut mask = vec![0u8; b * hw * hw * t * 3];
            for (i, m) in mask.iter_mut().enumerate() {
                let (sample, step) = (i / (hw * hw * t * 3), (i / 3) % t);
                if sample == 1 && step == 0 {
                    *m = 3;
                }
            }
            let mask = Tensor::from_vec(mask, (b, hw, hw, t, 3), &dev)?;
            let months = Tensor::from_vec(vec![0u32, 5, 11, 2, 3, 4], (b, t), &dev)?;
            let input = EncoderInput {
                modalities: BTreeMap::from([(
                    Modality::Sentinel2L2a,
                    ModalityInput {
                        data,
                        mask: Some(mask),
                    },
                )]),
                months,
            };
            let got = fast.forward(&input, p)?.tokens[&Modality::Sentinel2L2a].clone();
            let want = reference.forward(&input, p)?.tokens[&Modality::Sentinel2L2a].clone();
            let diff = (got - &want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(scale > 0.1, "{size}: degenerate output");
            assert!(diff < 1e-4, "{size}: max |Δ| {diff}");
        }
        Ok(())
    }
}
