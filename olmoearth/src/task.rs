//! The fine-tunable task model: the OlmoEarth encoder plus a task head (`heads.rs`), its self-contained
//! configuration, safetensors persistence (`encoder.*` and `head.*` keys), and the conversion of acquired
//! window tensors into a normalised [`EncoderInput`].
//!
//! Heads by task: every task takes the [`HybridHead`] (`hybrid`, the default: tokens and 10 m input pixels,
//! see [`pixel_features`]); segmentation also [`LightSegmentationHead`] (`light_segmentation`) or
//! [`UNetHead`] (`unet`); classification [`PoolingHead`] with K outputs (`pooling`); regression
//! [`PoolingHead`] with one output or [`UNetHead`].

use std::collections::{BTreeMap, HashMap};

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::checkpoint::StateDict;
use crate::config::EncoderConfig;
use crate::encoder::{Encoder, EncoderInput, ModalityInput};
use crate::error::{Error, Result};
use crate::heads::{
    HybridHead, LightSegmentationHead, PoolingHead, PoolingHeadConfig, UNetHead, feature_map,
};
use crate::modality::Modality;
use crate::train::{AdamW, ParamGroup, TrainableEncoder};
pub use groundwork_types::{HeadKind, Task};

/// Version of the [`TaskModelConfig`] layout.
pub const TASK_MODEL_FORMAT: u32 = 1;

/// Width of the hidden convolutions of the `unet` head.
pub const UNET_CHANNELS: usize = 64;

/// Conv and hidden Linear widths of the `pooling` head (one layer of each).
pub const POOLING_CHANNELS: (usize, usize) = (128, 256);

/// Prefix of head parameters in a task-model safetensors file.
pub const HEAD_PREFIX: &str = "head.";

/// Everything needed to rebuild a task model from its weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TaskModelConfig {
    /// Layout version ([`TASK_MODEL_FORMAT`]).
    pub format: u32,
    /// Encoder dimensions and modalities.
    #[serde(with = "encoder_config_serde")]
    pub encoder: EncoderConfig,
    /// `nano | tiny | base | large` (or `custom`).
    pub model_size: String,
    /// Encoder patch size.
    pub patch_size: usize,
    /// What the model predicts.
    pub task: Task,
    /// Classes (K) or 1.
    pub num_outputs: usize,
    /// The head on top of the encoder.
    pub head: HeadKind,
    /// Input modalities, in the order windows provide them.
    pub modalities: Vec<Modality>,
    /// Window side in pixels.
    pub window_size: usize,
    /// Where the encoder weights came from (e.g. `olmoearth-v1-nano`, `random`).
    pub initialised_from: String,
    /// Channels of the input pixels the `hybrid` head reads ([`pixel_features`]: bands × months of every
    /// modality, then their neighbourhood means at each radius of `pixel_context`); 0 for heads that read
    /// tokens only.
    #[serde(default)]
    pub pixel_channels: usize,
    /// Radii in pixels of the neighbourhood means [`pixel_features`] adds to every pixel channel, one set
    /// of channels per radius (empty: none). Models saved with a single radius (a number) read it as a
    /// list of one; models saved before it existed read none.
    #[serde(default, deserialize_with = "context_radii")]
    pub pixel_context: Vec<usize>,
    /// Whether the neighbourhood means average the observed values only ([`pixel_features`]); models
    /// saved before it averaged missing values in as [`MISSING_PIXEL`] and keep doing so.
    #[serde(default)]
    pub context_observed_only: bool,
}

/// Neighbourhood radii of the `hybrid` head's context channels in new models: the means of the 3 × 3,
/// 5 × 5 and 9 × 9 windows (30, 50 and 90 m) around each pixel. Narrow fields keep a pure 30 m mean;
/// wide ones average more of their noise away; the model weighs them.
pub const PIXEL_CONTEXT_RADII: [usize; 3] = [1, 2, 4];

/// Reads `pixel_context` as a list of radii, or as the single radius (0: none) earlier models saved.
fn context_radii<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Radii {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(match Radii::deserialize(d)? {
        Radii::One(0) => Vec::new(),
        Radii::One(r) => vec![r],
        Radii::Many(v) => v,
    })
}

impl TaskModelConfig {
    /// Pixel channels without the context channels: bands × months of every modality.
    #[must_use]
    pub fn raw_pixel_channels(&self) -> usize {
        self.pixel_channels / (1 + self.pixel_context.len())
    }

    /// Checks that task, head and sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidInput(m));
        if self.format != TASK_MODEL_FORMAT {
            return bad(format!(
                "task model format {} is not supported (expected {TASK_MODEL_FORMAT})",
                self.format
            ));
        }
        if self.num_outputs == 0 {
            return bad("num_outputs must be at least 1".into());
        }
        if !(1..=self.encoder.max_patch_size).contains(&self.patch_size) {
            return bad(format!("patch size {} is out of range", self.patch_size));
        }
        if !self.head.fits(self.task, self.num_outputs) {
            return bad(format!(
                "head {:?} does not fit task {:?} with {} outputs",
                self.head.name(),
                self.task.name(),
                self.num_outputs
            ));
        }
        if self.modalities.is_empty() {
            return bad("no input modality".into());
        }
        if self.head == HeadKind::Hybrid && self.pixel_channels == 0 {
            return bad("the hybrid head needs pixel_channels".into());
        }
        if self.pixel_context.contains(&0) {
            return bad("pixel context radii must be at least 1".into());
        }
        if !self
            .pixel_channels
            .is_multiple_of(1 + self.pixel_context.len())
        {
            return bad(format!(
                "pixel_channels ({}) must be a multiple of {} (the pixels and their means at {} radii)",
                self.pixel_channels,
                1 + self.pixel_context.len(),
                self.pixel_context.len()
            ));
        }
        if let Some(m) = self
            .modalities
            .iter()
            .find(|m| !self.encoder.modalities.contains(m))
        {
            return bad(format!("the encoder has no weights for modality {m}"));
        }
        Ok(())
    }
}

mod encoder_config_serde {
    use super::{EncoderConfig, Modality};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Dto {
        embedding_size: usize,
        depth: usize,
        num_heads: usize,
        mlp_ratio: f64,
        max_patch_size: usize,
        max_sequence_length: usize,
        modalities: Vec<String>,
    }

    pub fn serialize<S: Serializer>(c: &EncoderConfig, s: S) -> Result<S::Ok, S::Error> {
        Dto {
            embedding_size: c.embedding_size,
            depth: c.depth,
            num_heads: c.num_heads,
            mlp_ratio: c.mlp_ratio,
            max_patch_size: c.max_patch_size,
            max_sequence_length: c.max_sequence_length,
            modalities: c.modalities.iter().map(|m| m.name().to_string()).collect(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<EncoderConfig, De::Error> {
        let dto = Dto::deserialize(d)?;
        let modalities = dto
            .modalities
            .iter()
            .map(|m| m.parse::<Modality>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        // D must split into heads and into the four encoding quarters.
        if dto.num_heads == 0
            || dto.embedding_size % 4 != 0
            || dto.embedding_size % dto.num_heads != 0
        {
            return Err(serde::de::Error::custom(format!(
                "embedding_size {} and num_heads {} do not fit",
                dto.embedding_size, dto.num_heads
            )));
        }
        Ok(EncoderConfig {
            embedding_size: dto.embedding_size,
            depth: dto.depth,
            num_heads: dto.num_heads,
            mlp_ratio: dto.mlp_ratio,
            max_patch_size: dto.max_patch_size,
            max_sequence_length: dto.max_sequence_length,
            modalities,
        })
    }
}

/// A task head.
#[derive(Debug, Clone)]
pub enum Head {
    /// Tokens and input pixels at full resolution (boxed: it is the largest head).
    Hybrid(Box<HybridHead>),
    /// Bilinear upsampling + 1×1 conv.
    Light(LightSegmentationHead),
    /// Conv decoder with ×2 upsamplings.
    UNet(UNetHead),
    /// Conv + global max pool + MLP.
    Pooling(PoolingHead),
}

impl Head {
    /// Builds the head of `cfg` under `vb` (fresh parameters from a `VarMap`, or loaded ones).
    pub fn new(cfg: &TaskModelConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.encoder.embedding_size;
        Ok(match cfg.head {
            HeadKind::Hybrid => Head::Hybrid(Box::new(
                HybridHead::new(
                    d,
                    (cfg.pixel_channels, &cfg.pixel_context),
                    cfg.num_outputs,
                    cfg.patch_size,
                    cfg.task == Task::Classification,
                    vb,
                )?
                .with_observed_context(cfg.context_observed_only),
            )),
            HeadKind::LightSegmentation => Head::Light(LightSegmentationHead::new(
                d,
                cfg.num_outputs,
                cfg.patch_size,
                vb,
            )?),
            HeadKind::UNet => Head::UNet(UNetHead::new(
                d,
                UNET_CHANNELS,
                cfg.num_outputs,
                cfg.patch_size,
                vb,
            )?),
            HeadKind::Pooling => Head::Pooling(PoolingHead::new(
                PoolingHeadConfig {
                    in_channels: d,
                    out_channels: cfg.num_outputs,
                    num_conv_layers: 1,
                    num_fc_layers: 1,
                    conv_channels: POOLING_CHANNELS.0,
                    fc_channels: POOLING_CHANNELS.1,
                },
                vb,
            )?),
        })
    }

    /// Features `(B, D, h, w)` (and, for the hybrid head, the input pixels `(B, P, H, W)`) → raw
    /// outputs: `(B, K, H, W)` for dense heads, `(B, K)` for window-level ones.
    pub fn forward(&self, features: &Tensor, pixels: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Head::Hybrid(h) => h.forward(
                features,
                pixels.ok_or_else(|| {
                    Error::InvalidInput("the hybrid head needs the input pixels".into())
                })?,
            ),
            Head::Light(h) => h.forward(features),
            Head::UNet(h) => h.forward(features),
            Head::Pooling(h) => h.forward(features),
        }
    }

    /// Whether the head reads the input pixels as well as the tokens.
    pub fn needs_pixels(&self) -> bool {
        matches!(self, Head::Hybrid(_))
    }

    /// The input pixels of `input` (with the neighbourhood means the head reads) when this head reads
    /// them.
    pub fn pixels_of(&self, input: &EncoderInput) -> Result<Option<Tensor>> {
        match self {
            Head::Hybrid(h) => Ok(Some(pixel_features(
                input,
                h.context(),
                h.observed_context(),
            )?)),
            _ => Ok(None),
        }
    }

    /// Whether the outputs depend on the encoder's tokens (only a hybrid head with zero token
    /// weights, a model of the pixels alone, does not).
    pub fn uses_tokens(&self) -> Result<bool> {
        match self {
            Head::Hybrid(h) => h.uses_tokens(),
            _ => Ok(true),
        }
    }

    /// Whether the head needs all of its layers (only a hybrid head whose convolutional path's
    /// output is zero, a linear model, does not).
    pub fn uses_conv_path(&self) -> Result<bool> {
        match self {
            Head::Hybrid(h) => h.uses_conv_path(),
            _ => Ok(true),
        }
    }
}

/// Turns raw head outputs into predictions `(B, K, H, W)`: softmax probabilities for class tasks, values
/// for regression; window-level outputs are broadcast over `H × W`.
pub fn outputs_to_predictions(
    cfg: &TaskModelConfig,
    raw: &Tensor,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    let raw = raw.to_dtype(DType::F32)?;
    let probs = if cfg.task == Task::Regression {
        raw
    } else {
        candle_nn::ops::softmax(&raw, 1)?
    };
    match probs.rank() {
        2 => {
            let (b, k) = probs.dims2()?;
            Ok(probs
                .reshape((b, k, 1, 1))?
                .broadcast_as((b, k, h, w))?
                .contiguous()?)
        }
        4 => Ok(probs),
        _ => Err(Error::Shape {
            what: "head output".into(),
            expected: "(B, K) or (B, K, H, W)".into(),
            got: probs.dims().to_vec(),
        }),
    }
}

/// A task model for inference.
#[derive(Debug, Clone)]
pub struct TaskModel {
    cfg: TaskModelConfig,
    encoder: Encoder,
    head: Head,
    /// The head reads the tokens; when it does not (a linear model of the pixels), prediction skips
    /// the encoder.
    uses_tokens: bool,
    /// The hybrid head's convolutional path contributes; when it does not (a linear model),
    /// prediction skips it.
    uses_conv_path: bool,
}

fn split_weights(
    weights_safetensors: &[u8],
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let all = candle_core::safetensors::load_buffer(weights_safetensors, device)?;
    let mut enc = HashMap::new();
    let mut head = HashMap::new();
    for (k, t) in all {
        if k.starts_with(crate::checkpoint::ENCODER_PREFIX) {
            enc.insert(k, t.to_dtype(DType::F32)?);
        } else if k.starts_with(HEAD_PREFIX) {
            head.insert(k, t.to_dtype(DType::F32)?);
        }
    }
    Ok((enc, head))
}

impl TaskModel {
    /// Loads a model from its config and weights (`encoder.*` + `head.*` safetensors).
    pub fn load(cfg: TaskModelConfig, weights_safetensors: &[u8], device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (enc, head) = split_weights(weights_safetensors, device)?;
        // Inference only: the encoder computes in bf16 on GPUs that support it (f32 elsewhere); the
        // head stays f32 and gets f32 features.
        let encoder = Encoder::load(
            &cfg.encoder,
            &StateDict::from_tensors(enc),
            crate::device::compute_dtype(device),
            device,
        )?;
        let vb = VarBuilder::from_tensors(head, DType::F32, device);
        let head = Head::new(&cfg, vb.pp("head")).map_err(|e| {
            Error::InvalidInput(format!(
                "the weights do not hold the {} head: {e}",
                cfg.head
            ))
        })?;
        let uses_tokens = head.uses_tokens()?;
        let uses_conv_path = head.uses_conv_path()?;
        Ok(TaskModel {
            cfg,
            encoder,
            head,
            uses_tokens,
            uses_conv_path,
        })
    }

    /// Whether [`Self::predict`] runs the encoder: not for a head that ignores the tokens (a linear
    /// model of the pixels alone, which training publishes when it wins the validation).
    #[must_use]
    pub fn runs_encoder(&self) -> bool {
        self.uses_tokens
    }

    /// The configuration.
    pub fn config(&self) -> &TaskModelConfig {
        &self.cfg
    }

    /// Pooled encoder features `(B, D, h, w)`, f32 whatever the encoder computes in.
    pub fn features(&self, input: &EncoderInput) -> Result<Tensor> {
        let out = self.encoder.forward(input, self.cfg.patch_size)?;
        feature_map(&out)
    }

    /// Input: normalised `EncoderInput` (B windows). Output `(B, K, H, W)` f32: softmax class probabilities
    /// (classification: the per-window probabilities broadcast over H×W) or `(B, 1, H, W)` values.
    pub fn predict(&self, input: &EncoderInput) -> Result<Tensor> {
        let dims = input.validate(&self.cfg.encoder, self.cfg.patch_size)?;
        input.check_divisible(self.cfg.patch_size)?;
        let pixels = self.head.pixels_of(input)?;
        let features = if self.uses_tokens {
            self.features(input)?
        } else {
            // The head multiplies the tokens by zero: zeros of their shape give the same outputs.
            let p = self.cfg.patch_size;
            Tensor::zeros(
                (
                    dims.b,
                    self.cfg.encoder.embedding_size,
                    dims.h / p,
                    dims.w / p,
                ),
                DType::F32,
                input.months.device(),
            )?
        };
        let raw = match (&self.head, &pixels, self.uses_conv_path) {
            (Head::Hybrid(h), Some(px), false) => h.forward_linear(&features, px)?,
            _ => self.head.forward(&features, pixels.as_ref())?,
        };
        outputs_to_predictions(&self.cfg, &raw, dims.h, dims.w)
    }
}

/// A task model whose encoder and head are trainable `Var`s.
pub struct TrainableTaskModel {
    cfg: TaskModelConfig,
    encoder: TrainableEncoder,
    head: Head,
    head_vars: VarMap,
}

impl std::fmt::Debug for TrainableTaskModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableTaskModel")
            .field("cfg", &self.cfg)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl TrainableTaskModel {
    /// A model with the encoder from `sd` (a checkpoint or [`crate::checkpoint::random_state_dict`]) and
    /// a freshly initialised head.
    pub fn new(cfg: TaskModelConfig, sd: &StateDict, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let encoder = TrainableEncoder::from_state_dict(&cfg.encoder, sd, device)?;
        let head_vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&head_vars, DType::F32, device);
        let head = Head::new(&cfg, vb.pp("head"))?;
        Ok(TrainableTaskModel {
            cfg,
            encoder,
            head,
            head_vars,
        })
    }

    /// A model from task-model weights (`encoder.*` + `head.*`), e.g. a checkpoint.
    pub fn from_safetensors(cfg: TaskModelConfig, bytes: &[u8], device: &Device) -> Result<Self> {
        let (enc, head) = split_weights(bytes, device)?;
        let model = Self::new(cfg, &StateDict::from_tensors(enc), device)?;
        let vars = model.head_vars.data().lock().map_err(|_| {
            Error::InvalidInput("head parameters are poisoned by an earlier panic".into())
        })?;
        for (k, v) in vars.iter() {
            let t = head.get(k).ok_or_else(|| Error::MissingKey {
                key: k.clone(),
                expected: v.dims().to_vec(),
            })?;
            if t.dims() != v.dims() {
                return Err(Error::KeyShape {
                    key: k.clone(),
                    expected: v.dims().to_vec(),
                    got: t.dims().to_vec(),
                });
            }
            v.set(t)?;
        }
        drop(vars);
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &TaskModelConfig {
        &self.cfg
    }

    /// The head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The trainable encoder.
    pub fn encoder(&self) -> &TrainableEncoder {
        &self.encoder
    }

    /// Freezes or unfreezes the encoder (its outputs are detached while frozen).
    pub fn set_encoder_frozen(&mut self, frozen: bool) {
        self.encoder.set_frozen(frozen);
    }

    /// Head parameters sorted by name (a stable order for optimiser state).
    pub fn head_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self
            .head_vars
            .data()
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// An AdamW over the encoder (layer decay `layer_decay`, 1.0 for none) and the head, in a stable order.
    pub fn optimizer(&self, layer_decay: f64, cfg: crate::train::AdamWConfig) -> Result<AdamW> {
        let mut groups = self.encoder.param_groups(layer_decay);
        groups.push(ParamGroup::head(
            self.head_vars().into_iter().map(|(_, v)| v).collect(),
        ));
        AdamW::new(groups, cfg)
    }

    /// Pooled features through the trainable (differentiable) encoder.
    pub fn features(&self, input: &EncoderInput) -> Result<Tensor> {
        let out = self.encoder.forward(input, self.cfg.patch_size)?;
        feature_map(&out)
    }

    /// The current encoder weights as a fast inference encoder (no gradients) in the encoder's compute
    /// dtype ([`TrainableEncoder::compute_dtype`]), for cached features and validation passes.
    pub fn inference_encoder(&self) -> Result<Encoder> {
        let dtype = self.encoder.compute_dtype();
        let tensors = self
            .encoder
            .vars()
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().to_dtype(dtype)?)))
            .collect::<Result<HashMap<String, Tensor>>>()?;
        Encoder::from_tensors(&self.cfg.encoder, &tensors, false)
    }

    /// Sets the dtype the encoder computes in (see [`TrainableEncoder::set_compute_dtype`]).
    pub fn set_compute_dtype(&mut self, dtype: DType) -> Result<()> {
        self.encoder.set_compute_dtype(dtype)
    }

    /// Every parameter keyed as in a task-model file: `encoder.*` then `head.*`.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .encoder
            .vars()
            .iter()
            .map(|(k, var)| (k.clone(), var.as_tensor().detach()))
            .collect();
        v.extend(
            self.head_vars()
                .into_iter()
                .map(|(k, var)| (k, var.as_tensor().detach())),
        );
        v
    }

    /// The weights as safetensors bytes (`encoder.*` + `head.*`), loadable by [`TaskModel::load`].
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        to_safetensors(self.named_tensors(), None)
    }

    /// The inference model with the current weights.
    pub fn to_task_model(&self) -> Result<TaskModel> {
        let device = self.encoder.encoder().device().clone();
        TaskModel::load(self.cfg.clone(), &self.to_safetensors()?, &device)
    }
}

/// Serialises named tensors (F32 on the CPU) with optional string metadata.
pub fn to_safetensors(
    tensors: Vec<(String, Tensor)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let cpu: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(cpu, metadata)
        .map_err(|e| Error::InvalidInput(format!("serialising weights: {e}")))
}

/// The string metadata of safetensors bytes.
pub fn safetensors_metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::InvalidInput(format!("safetensors header: {e}")))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// One acquired window (per-modality safetensors bytes as written by acquisition: `m` f32 `(H,W,T,C)` in
/// physical units, `m_mask` u8 `(H,W,T,S)`, `timestamps` i32 `(T,3)`) as a normalised single-window
/// [`EncoderInput`] (B = 1) on `device`. Missing bands are filled and values normalised with the
/// pretraining statistics ([`crate::normalize::prepare`]).
pub fn input_from_window(files: &[(Modality, &[u8])], device: &Device) -> Result<EncoderInput> {
    if files.is_empty() {
        return Err(Error::InvalidInput(
            "a window needs at least one modality".into(),
        ));
    }
    let mut modalities = BTreeMap::new();
    let mut months: Option<Vec<u32>> = None;
    let mut hwt: Option<(usize, usize, usize)> = None;
    for &(m, bytes) in files {
        let mut ts = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| Error::InvalidInput(format!("{m} window tensors: {e}")))?;
        let take = |ts: &mut HashMap<String, Tensor>, key: &str| {
            ts.remove(key)
                .ok_or_else(|| Error::InvalidInput(format!("{m} window tensors have no `{key}`")))
        };
        let data = take(&mut ts, m.name())?;
        let mask = take(&mut ts, &format!("{m}_mask"))?;
        let stamps = take(&mut ts, "timestamps")?;
        let (h, w, t, c) = data.dims4().map_err(|_| Error::Shape {
            what: m.name().into(),
            expected: "(H, W, T, C)".into(),
            got: data.dims().to_vec(),
        })?;
        if c != m.num_bands() {
            return Err(Error::InvalidInput(format!(
                "{m} has {c} bands, expected {}",
                m.num_bands()
            )));
        }
        if mask.dims() != [h, w, t, m.num_band_sets()] {
            return Err(Error::Shape {
                what: format!("{m}_mask"),
                expected: format!("[{h}, {w}, {t}, {}]", m.num_band_sets()),
                got: mask.dims().to_vec(),
            });
        }
        if stamps.dims() != [t, 3] {
            return Err(Error::Shape {
                what: "timestamps".into(),
                expected: format!("[{t}, 3]"),
                got: stamps.dims().to_vec(),
            });
        }
        if let Some(prev) = hwt.filter(|p| *p != (h, w, t)) {
            return Err(Error::InvalidInput(format!(
                "{m} is {h}×{w}×{t} but another modality of the window is {}×{}×{}",
                prev.0, prev.1, prev.2
            )));
        }
        hwt = Some((h, w, t));
        let month: Vec<u32> = stamps
            .to_dtype(DType::I64)?
            .narrow(1, 1, 1)?
            .flatten_all()?
            .to_vec1::<i64>()?
            .into_iter()
            .map(|v| u32::try_from(v.clamp(0, 11)).unwrap_or(0))
            .collect();
        months.get_or_insert(month);
        let raw: Vec<f32> = data.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let data = crate::normalize::prepare(m, raw, &[1, h, w, t, c], device)?;
        let mask = mask
            .to_dtype(DType::U8)?
            .reshape((1, h, w, t, m.num_band_sets()))?
            .to_device(device)?;
        modalities.insert(
            m,
            ModalityInput {
                data,
                mask: Some(mask),
            },
        );
    }
    let months = months.unwrap_or_default();
    let t = months.len();
    Ok(EncoderInput {
        modalities,
        months: Tensor::from_vec(months, (1, t), device)?,
    })
}

/// Concatenates inputs along the batch axis (they must share modalities and sizes).
pub fn stack_inputs(inputs: &[&EncoderInput]) -> Result<EncoderInput> {
    let Some(first) = inputs.first() else {
        return Err(Error::InvalidInput("no input to stack".into()));
    };
    let mut modalities = BTreeMap::new();
    for &m in first.modalities.keys() {
        let mut data = Vec::with_capacity(inputs.len());
        let mut masks = Vec::with_capacity(inputs.len());
        for i in inputs {
            let mi = i
                .modalities
                .get(&m)
                .ok_or_else(|| Error::InvalidInput(format!("an input of the batch lacks {m}")))?;
            data.push(mi.data.clone());
            masks.push(mi.mask.clone());
        }
        let mask = if masks.iter().all(Option::is_some) {
            let ms: Vec<Tensor> = masks.into_iter().flatten().collect();
            Some(Tensor::cat(&ms, 0)?)
        } else {
            None
        };
        modalities.insert(
            m,
            ModalityInput {
                data: Tensor::cat(&data, 0)?,
                mask,
            },
        );
    }
    let months: Vec<Tensor> = inputs.iter().map(|i| i.months.clone()).collect();
    Ok(EncoderInput {
        modalities,
        months: Tensor::cat(&months, 0)?,
    })
}

/// One of the eight symmetries of the square (flips and 90° rotations) applied to the two axes
/// `(axis, axis + 1)` of `t`: bit 2 transposes, bit 0 flips the first axis, bit 1 the second.
pub fn dihedral(t: &Tensor, k: u8, axis: usize) -> Result<Tensor> {
    let mut x = t.clone();
    if k & 4 != 0 {
        x = x.transpose(axis, axis + 1)?.contiguous()?;
    }
    for (bit, ax) in [(1u8, axis), (2u8, axis + 1)] {
        if k & bit != 0 {
            let n = x.dim(ax)?;
            let idx: Vec<u32> = (0..n)
                .rev()
                .map(|i| u32::try_from(i).unwrap_or(0))
                .collect();
            let idx = Tensor::from_vec(idx, n, x.device())?;
            x = x.index_select(&idx, ax)?;
        }
    }
    Ok(x)
}

/// [`dihedral`] over H and W (axes 1, 2) of every modality's data and mask.
pub fn dihedral_input(input: &EncoderInput, k: u8) -> Result<EncoderInput> {
    if k == 0 {
        return Ok(input.clone());
    }
    let mut modalities = BTreeMap::new();
    for (&m, mi) in &input.modalities {
        modalities.insert(
            m,
            ModalityInput {
                data: dihedral(&mi.data, k, 1)?,
                mask: mi.mask.as_ref().map(|x| dihedral(x, k, 1)).transpose()?,
            },
        );
    }
    Ok(EncoderInput {
        modalities,
        months: input.months.clone(),
    })
}

/// Normalised value given to an observation the mask marks missing (the band mean normalises to 0.5).
pub const MISSING_PIXEL: f32 = 0.5;

/// The normalised input pixels of every modality as channels: `(B, P, H, W)` with `P = Σ T·C` in
/// modality order, channel `t·C + c`. Observations the mask marks missing, and values that are not finite,
/// become [`MISSING_PIXEL`]; values are clipped to `[-2, 3]` (normalisation maps mean ± 2 std to 0 and 1).
///
/// For each radius `r` of `context`, the mean of each channel over the `(2r + 1)²` pixels around each
/// pixel (those inside the window) follows as `P` more channels: `(B, (1 + n)·P, H, W)` for `n` radii.
/// A per-pixel model of these sees the field around a pixel as well as the pixel, which averages out the
/// pixel's own noise. With `observed_only` the means are of the observed values only (a pixel with none
/// around it gets [`MISSING_PIXEL`]); without it, as in models saved before, a missing value counts as
/// [`MISSING_PIXEL`], which pulls the means of a cloud's neighbours towards it.
pub fn pixel_features(
    input: &EncoderInput,
    context: &[usize],
    observed_only: bool,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(input.modalities.len());
    let mut context_parts = vec![Vec::new(); context.len()];
    for mi in input.modalities.values() {
        let (b, h, w, t, c) = mi.data.dims5()?;
        let device = mi.data.device().clone();
        let mut v: Vec<f32> = mi
            .data
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        if let Some(mask) = &mi.mask {
            let s = mask.dim(4)?;
            let m: Vec<u8> = mask
                .to_dtype(DType::U8)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1()?;
            for (cell, obs) in m.chunks_exact(s).enumerate() {
                if obs.iter().any(|&x| x != 0) {
                    v[cell * c..(cell + 1) * c].fill(f32::NAN);
                }
            }
        }
        // 1 where a value counts in the means: an observed one (or any, without `observed_only`).
        let valid: Vec<f32> = v
            .iter()
            .map(|x| f32::from(u8::from(x.is_finite() || !observed_only)))
            .collect();
        for x in &mut v {
            *x = if x.is_finite() {
                x.clamp(-2.0, 3.0)
            } else {
                MISSING_PIXEL
            };
        }
        let to_channels = |v: Vec<f32>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (b, h, w, t * c), &Device::Cpu)?
                .permute((0, 3, 1, 2))?
                .contiguous()?
                .to_device(&device)?)
        };
        for (&r, part) in context.iter().zip(&mut context_parts) {
            part.push(to_channels(box_mean(&v, &valid, (b, h, w, t * c), r))?);
        }
        parts.push(to_channels(v)?);
    }
    if parts.is_empty() {
        return Err(Error::InvalidInput("no modality in the input".into()));
    }
    parts.extend(context_parts.into_iter().flatten());
    Ok(Tensor::cat(&parts, 1)?)
}

/// Mean of every channel of `(B, H, W, C)` values over the observed ones (`valid` 1) of the
/// `(2r + 1)²` window around each pixel, clipped to the image: sums along W, then along H. A pixel with
/// no observed neighbour gets [`MISSING_PIXEL`].
fn box_mean(
    v: &[f32],
    valid: &[f32],
    (_, h, w, c): (usize, usize, usize, usize),
    r: usize,
) -> Vec<f32> {
    let observed: Vec<f32> = v.iter().zip(valid).map(|(x, ok)| x * ok).collect();
    let sum = sum_along(&sum_along(&observed, w, c, r), h, w * c, r);
    let count = sum_along(&sum_along(valid, w, c, r), h, w * c, r);
    sum.iter()
        .zip(&count)
        .map(|(s, n)| if *n > 0.5 { s / n } else { MISSING_PIXEL })
        .collect()
}

/// Sum of each value and its neighbours within `r` along one axis of `len` elements `stride` apart,
/// clipped to the axis.
fn sum_along(v: &[f32], len: usize, stride: usize, r: usize) -> Vec<f32> {
    (0..v.len())
        .map(|i| {
            let at = (i / stride) % len;
            let start = i - at * stride;
            let (lo, hi) = (at.saturating_sub(r), (at + r).min(len - 1));
            (lo..=hi).map(|q| v[start + q * stride]).sum()
        })
        .collect()
}

/// `P` of [`pixel_features`] for an input and context radii: bands × months of every modality, once
/// more for every radius.
pub fn pixel_channels(input: &EncoderInput, context: &[usize]) -> Result<usize> {
    let raw: usize = input
        .modalities
        .values()
        .map(|mi| {
            let (_, _, _, t, c) = mi.data.dims5()?;
            Ok::<_, Error>(t * c)
        })
        .sum::<Result<usize>>()?;
    Ok(raw * (1 + context.len()))
}

/// Arg-max over the class axis of `(B, K, H, W)` probabilities: `(B, H, W)` class indices.
pub fn argmax_classes(probs: &Tensor) -> Result<Tensor> {
    Ok(probs.argmax(1)?)
}

/// Mean over the spatial axes of `(B, D, h, w)` features: `(B, D)`.
pub fn pool_features(features: &Tensor) -> Result<Tensor> {
    Ok(features.mean(D::Minus1)?.mean(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_channels_are_the_means_of_each_pixels_neighbourhood_inside_the_window() -> Result<()>
    {
        // One modality, one month, two bands on a 3 × 4 window: band 0 = x + 4·y, band 1 = 1.
        let (h, w) = (3usize, 4usize);
        let mut v = Vec::new();
        for y in 0..h {
            for x in 0..w {
                v.extend([(x + 4 * y) as f32 / 10.0, 1.0]);
            }
        }
        let data = Tensor::from_vec(v, (1, h, w, 1, 2), &Device::Cpu)?;
        let mut modalities = BTreeMap::new();
        modalities.insert(Modality::Sentinel2L2a, ModalityInput { data, mask: None });
        let input = EncoderInput {
            modalities,
            months: Tensor::zeros((1, 1), DType::U32, &Device::Cpu)?,
        };
        assert_eq!(pixel_features(&input, &[], true)?.dims(), &[1, 2, h, w]);
        assert_eq!(pixel_channels(&input, &[1, 2])?, 6);
        let x = pixel_features(&input, &[1, 2], true)?;
        assert_eq!(x.dims(), &[1, 6, h, w]);
        let at = |c: usize, y: usize, xx: usize| -> Result<f32> {
            Ok(x.get(0)?.get(c)?.get(y)?.get(xx)?.to_scalar::<f32>()?)
        };
        // The pixels come first, unchanged.
        assert!((at(0, 2, 3)? - 1.1).abs() < 1e-6);
        // Interior: the 3 × 3 mean is the centre value; corner: the mean of the 2 × 2 inside.
        assert!((at(2, 1, 1)? - 0.5).abs() < 1e-6);
        assert!((at(2, 0, 0)? - (0.0 + 0.1 + 0.4 + 0.5) / 4.0).abs() < 1e-6);
        assert!((at(3, 0, 0)? - 1.0).abs() < 1e-6);
        // The second radius follows: at (1, 1), radius 2 covers the whole 3 × 4 window (mean x 1.5, y 1).
        assert!((at(4, 1, 1)? - 0.55).abs() < 1e-6);
        assert!((at(5, 1, 1)? - 1.0).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn context_means_leave_out_missing_pixels_except_in_models_saved_before() -> Result<()> {
        // One band on a 1 × 3 row: 0.2, a masked pixel (whatever its value), 0.4.
        let data = Tensor::from_vec(vec![0.2f32, 9.0, 0.4], (1, 1, 3, 1, 1), &Device::Cpu)?;
        let mask = Tensor::from_vec(vec![0u8, 3, 0], (1, 1, 3, 1, 1), &Device::Cpu)?;
        let mut modalities = BTreeMap::new();
        modalities.insert(
            Modality::Sentinel2L2a,
            ModalityInput {
                data,
                mask: Some(mask),
            },
        );
        let input = EncoderInput {
            modalities,
            months: Tensor::zeros((1, 1), DType::U32, &Device::Cpu)?,
        };
        let row = |observed_only| -> Result<Vec<f32>> {
            let x = pixel_features(&input, &[1], observed_only)?;
            Ok(x.flatten_all()?.to_vec1()?)
        };
        // Pixels, then the 3 × 3 means clipped to the row.
        let observed = row(true)?;
        assert!((observed[1] - MISSING_PIXEL).abs() < 1e-6, "{observed:?}");
        for (got, want) in observed[3..].iter().zip([0.2, 0.3, 0.4]) {
            assert!((got - want).abs() < 1e-6, "{observed:?}");
        }
        let before = row(false)?;
        for (got, want) in before[3..].iter().zip([0.35, 0.366_666_7, 0.45]) {
            assert!((got - want).abs() < 1e-6, "{before:?}");
        }
        // A model saved before the setting existed keeps the old means; new ones say theirs.
        let cfg = TaskModelConfig {
            format: TASK_MODEL_FORMAT,
            encoder: crate::EncoderConfig::nano(),
            model_size: "nano".into(),
            patch_size: 4,
            task: Task::Segmentation,
            num_outputs: 2,
            head: HeadKind::Hybrid,
            modalities: vec![Modality::Sentinel2L2a],
            window_size: 64,
            initialised_from: "random".into(),
            pixel_channels: 0,
            pixel_context: vec![1],
            context_observed_only: true,
        };
        let err = |e: serde_json::Error| Error::InvalidInput(e.to_string());
        let mut saved = serde_json::to_value(&cfg).map_err(err)?;
        assert_eq!(
            serde_json::from_value::<TaskModelConfig>(saved.clone()).map_err(err)?,
            cfg
        );
        if let Some(o) = saved.as_object_mut() {
            o.remove("context_observed_only");
        }
        let old: TaskModelConfig = serde_json::from_value(saved).map_err(err)?;
        assert!(!old.context_observed_only);
        Ok(())
    }

    #[test]
    fn dihedral_transforms_are_the_eight_symmetries() -> Result<()> {
        let x = Tensor::arange(0u32, 6, &Device::Cpu)?.reshape((1, 2, 3))?;
        let mut seen = std::collections::HashSet::new();
        for k in 0..8u8 {
            let y = dihedral(&x, k, 1)?;
            seen.insert((y.dims().to_vec(), y.flatten_all()?.to_vec1::<u32>()?));
        }
        assert_eq!(seen.len(), 8);
        // Flip of the first axis.
        let y: Vec<Vec<u32>> = dihedral(&x, 1, 1)?.squeeze(0)?.to_vec2()?;
        assert_eq!(y, vec![vec![3, 4, 5], vec![0, 1, 2]]);
        Ok(())
    }
}
