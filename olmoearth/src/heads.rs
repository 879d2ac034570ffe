//! Task heads on the encoder's pooled feature map `(B, D, h, w)` (spec §5.2), as in rslearn:
//! classification / scalar regression (pooling head), light and UNet segmentation, per-pixel regression
//! and plain embeddings.

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

use crate::encoder::EncoderOutput;
use crate::error::{Error, Result};

/// The encoder's pooled features as a channels-first map `(B, D, h, w)` in F32: the input of every
/// head (an encoder computing in BF16 hands the heads F32 features; the cast is differentiable).
pub fn feature_map(out: &EncoderOutput) -> Result<Tensor> {
    Ok(out
        .pooled()?
        .permute((0, 3, 1, 2))?
        .contiguous()?
        .to_dtype(candle_core::DType::F32)?)
}

fn conv3x3(cin: usize, cout: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    Ok(candle_nn::conv2d(cin, cout, 3, cfg, vb)?)
}

/// Classification or scalar regression: `[Conv3×3 + ReLU]×c → global max pool → [Linear + ReLU]×f → Linear`
/// (rslearn `PoolingDecoder`). Output `(B, K)` logits (or values for K = 1).
#[derive(Debug, Clone)]
pub struct PoolingHead {
    convs: Vec<Conv2d>,
    fcs: Vec<Linear>,
    out: Linear,
}

/// Sizes of a [`PoolingHead`].
#[derive(Debug, Clone, Copy)]
pub struct PoolingHeadConfig {
    /// Input channels (D).
    pub in_channels: usize,
    /// Output classes (1 for scalar regression).
    pub out_channels: usize,
    /// Number of 3×3 conv layers.
    pub num_conv_layers: usize,
    /// Number of hidden Linear layers.
    pub num_fc_layers: usize,
    /// Conv width (rslearn default 128).
    pub conv_channels: usize,
    /// FC width (rslearn default 512).
    pub fc_channels: usize,
}

impl PoolingHead {
    /// Builds the head with fresh parameters under `vb`.
    pub fn new(cfg: PoolingHeadConfig, vb: VarBuilder) -> Result<Self> {
        let mut c = cfg.in_channels;
        let mut convs = Vec::new();
        for i in 0..cfg.num_conv_layers {
            convs.push(conv3x3(c, cfg.conv_channels, vb.pp(format!("conv{i}")))?);
            c = cfg.conv_channels;
        }
        let mut fcs = Vec::new();
        for i in 0..cfg.num_fc_layers {
            fcs.push(candle_nn::linear(
                c,
                cfg.fc_channels,
                vb.pp(format!("fc{i}")),
            )?);
            c = cfg.fc_channels;
        }
        let out = candle_nn::linear(c, cfg.out_channels, vb.pp("out"))?;
        Ok(PoolingHead { convs, fcs, out })
    }

    /// `(B, D, h, w)` → `(B, K)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for c in &self.convs {
            x = c.forward(&x)?.relu()?;
        }
        let mut x = x.max(3)?.max(2)?;
        for fc in &self.fcs {
            x = fc.forward(&x)?.relu()?;
        }
        Ok(self.out.forward(&x)?)
    }
}

/// `(out, inp)` weights of a bilinear resize with `align_corners=False` (PyTorch's `Upsample(mode="bilinear")`).
fn bilinear_matrix(inp: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0f32; out * inp];
    let scale = inp as f64 / out as f64;
    for i in 0..out {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(inp - 1);
        let i1 = (i0 + 1).min(inp - 1);
        let frac = src - i0 as f64;
        m[i * inp + i0] += (1.0 - frac) as f32;
        m[i * inp + i1] += frac as f32;
    }
    m
}

/// Bilinear upsampling of `(B, C, h, w)` by an integer factor, as two matmuls (differentiable).
pub fn upsample_bilinear(x: &Tensor, factor: usize) -> Result<Tensor> {
    if factor == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = (h * factor, w * factor);
    let mk = |inp: usize, out: usize| -> Result<Tensor> {
        Ok(
            Tensor::from_vec(bilinear_matrix(inp, out), (out, inp), x.device())?
                .to_dtype(x.dtype())?,
        )
    };
    let rw = mk(w, ow)?;
    let rh = mk(h, oh)?;
    let y = x.reshape((b * c * h, w))?.matmul(&rw.t()?)?; // (B·C·h, ow)
    let y = y.reshape((b * c, h, ow))?.transpose(1, 2)?.contiguous()?; // (B·C, ow, h)
    let y = y.reshape((b * c * ow, h))?.matmul(&rh.t()?)?; // (B·C·ow, oh)
    Ok(y.reshape((b, c, ow, oh))?.transpose(2, 3)?.contiguous()?)
}

/// Light segmentation: bilinear upsample ×p, then a 1×1 conv to K classes. Output `(B, K, H, W)`.
#[derive(Debug, Clone)]
pub struct LightSegmentationHead {
    patch_size: usize,
    conv: Conv2d,
}

impl LightSegmentationHead {
    /// Builds the head.
    pub fn new(
        in_channels: usize,
        num_classes: usize,
        patch_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let conv = candle_nn::conv2d(
            in_channels,
            num_classes,
            1,
            Conv2dConfig::default(),
            vb.pp("conv"),
        )?;
        Ok(LightSegmentationHead { patch_size, conv })
    }

    /// `(B, D, h, w)` → `(B, K, h·p, w·p)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.conv.forward(&upsample_bilinear(x, self.patch_size)?)?)
    }
}

/// UNet-style decoder (rslearn `UNetDecoder` with one input resolution): Conv3×3+ReLU, then log2(p)×
/// (nearest upsample ×2 → Conv3×3+ReLU), then a final Conv3×3 to K channels. Output `(B, K, H, W)`.
/// With K = 1 it is the per-pixel regression head.
#[derive(Debug, Clone)]
pub struct UNetHead {
    convs: Vec<Conv2d>,
    final_conv: Conv2d,
    upsamples: usize,
}

impl UNetHead {
    /// Builds the decoder; `patch_size` must be a power of two (1, 2, 4 or 8). `channels` is the width of
    /// the hidden convs.
    pub fn new(
        in_channels: usize,
        channels: usize,
        out_channels: usize,
        patch_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if !patch_size.is_power_of_two() {
            return Err(Error::InvalidInput(format!(
                "the UNet head needs a power-of-two patch size, got {patch_size}"
            )));
        }
        let upsamples = patch_size.trailing_zeros() as usize;
        let mut convs = vec![conv3x3(in_channels, channels, vb.pp("conv0"))?];
        for i in 0..upsamples {
            convs.push(conv3x3(channels, channels, vb.pp(format!("up{i}")))?);
        }
        let final_conv = conv3x3(channels, out_channels, vb.pp("final"))?;
        Ok(UNetHead {
            convs,
            final_conv,
            upsamples,
        })
    }

    /// `(B, D, h, w)` → `(B, K, h·p, w·p)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            if i > 0 {
                let (_, _, h, w) = x.dims4()?;
                x = x.upsample_nearest2d(h * 2, w * 2)?;
            }
            x = c.forward(&x)?.relu()?;
        }
        debug_assert_eq!(self.convs.len(), self.upsamples + 1);
        Ok(self.final_conv.forward(&x)?)
    }
}

/// Hidden width of the [`HybridHead`]'s convolutional path.
pub const HYBRID_HIDDEN: usize = 32;
/// Token channels the [`HybridHead`]'s convolutional path sees (a 1×1 reduction of the D features).
pub const HYBRID_TOKEN_CHANNELS: usize = 16;

/// Full-resolution head over tokens and pixels: logits at every 10 m pixel are
///
/// ```text
/// up(T·f) + P·x + b  +  O·relu(C3×3([x, up(R·f)]))
/// ```
///
/// with `f` the encoder's tokens `(B, D, h, w)`, `up` bilinear upsampling ×p, `x` the normalised input
/// pixels `(B, P, H, W)` ([`crate::task::pixel_features`]), `T`, `P`, `R`, `O` 1×1 convolutions and `C3×3`
/// a 3×3 convolution. The first part is linear, so the frozen-encoder linear probe (`P = 0`), a raw-pixel
/// linear model (`T = 0`) and a linear model of both are all this head with other weights; `O` starts at
/// zero, so fine-tuning starts from whichever linear solution it is given. Class boundaries come from the
/// pixels, so they are 10 m wide at any patch size. With `pooled`, the logits are averaged over the window
/// (classification).
#[derive(Debug, Clone)]
pub struct HybridHead {
    patch_size: usize,
    pooled: bool,
    context: Vec<usize>,
    observed_context: bool,
    tokens: Conv2d,
    pixels: Conv2d,
    reduce: Conv2d,
    hidden: Conv2d,
    out: Conv2d,
}

/// Whether any element of `t` is not zero.
fn nonzero(t: &Tensor) -> Result<bool> {
    Ok(t.abs()?
        .max_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar::<f32>()?
        != 0.0)
}

/// A 1×1 convolution whose parameters start at zero (or are loaded).
fn zero_conv1x1(cin: usize, cout: usize, bias: bool, vb: VarBuilder) -> Result<Conv2d> {
    let w = vb.get_with_hints((cout, cin, 1, 1), "weight", candle_nn::Init::Const(0.0))?;
    let b = if bias {
        Some(vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Conv2d::new(w, b, Conv2dConfig::default()))
}

impl HybridHead {
    /// Builds the head: `in_channels` = D, `pixel_channels` = P (with the context channels),
    /// `out_channels` = K, `context` the radii of the pixels' neighbourhood means
    /// ([`crate::task::pixel_features`]).
    pub fn new(
        in_channels: usize,
        (pixel_channels, context): (usize, &[usize]),
        out_channels: usize,
        patch_size: usize,
        pooled: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        if pixel_channels == 0 {
            return Err(Error::InvalidInput(
                "the hybrid head needs the input pixels (pixel_channels = 0)".into(),
            ));
        }
        Ok(HybridHead {
            patch_size,
            pooled,
            context: context.to_vec(),
            observed_context: false,
            tokens: zero_conv1x1(in_channels, out_channels, false, vb.pp("tokens"))?,
            pixels: zero_conv1x1(pixel_channels, out_channels, true, vb.pp("pixels"))?,
            reduce: candle_nn::conv2d(
                in_channels,
                HYBRID_TOKEN_CHANNELS,
                1,
                Conv2dConfig::default(),
                vb.pp("reduce"),
            )?,
            hidden: conv3x3(
                pixel_channels + HYBRID_TOKEN_CHANNELS,
                HYBRID_HIDDEN,
                vb.pp("hidden"),
            )?,
            out: zero_conv1x1(HYBRID_HIDDEN, out_channels, true, vb.pp("out"))?,
        })
    }

    /// Radii of the neighbourhood means among the pixels it reads (empty: none).
    #[must_use]
    pub fn context(&self) -> &[usize] {
        &self.context
    }

    /// Sets whether its neighbourhood means average observed values only
    /// ([`crate::task::pixel_features`]).
    #[must_use]
    pub fn with_observed_context(mut self, observed_only: bool) -> Self {
        self.observed_context = observed_only;
        self
    }

    /// Whether its neighbourhood means average observed values only.
    #[must_use]
    pub fn observed_context(&self) -> bool {
        self.observed_context
    }

    /// Whether the outputs depend on the encoder's tokens: not when the token projection `T` and the
    /// convolutional path's output `O` are both zero (a linear model of the pixels alone), whatever
    /// the tokens are.
    pub fn uses_tokens(&self) -> Result<bool> {
        Ok(nonzero(self.tokens.weight())? || self.uses_conv_path()?)
    }

    /// `pixels` in the tokens' dtype, once their size is checked against the tokens'.
    fn pixels_for(&self, features: &Tensor, pixels: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = features.dims4()?;
        let (_, _, ph, pw) = pixels.dims4()?;
        if (ph, pw) != (h * self.patch_size, w * self.patch_size) {
            return Err(Error::Shape {
                what: "hybrid head pixels".into(),
                expected: format!("(B, P, {}, {})", h * self.patch_size, w * self.patch_size),
                got: pixels.dims().to_vec(),
            });
        }
        Ok(pixels.to_dtype(features.dtype())?)
    }

    /// Whether the convolutional path contributes: its output projection `O` is not zero. When it is
    /// zero, [`Self::forward_linear`] gives the same outputs without computing the path.
    pub fn uses_conv_path(&self) -> Result<bool> {
        nonzero(self.out.weight())
    }

    /// [`Self::forward`] without the convolutional path, `up(T·f) + P·x + b + b_O`: the same outputs
    /// when `O` is zero (a linear model, as training publishes its ridge candidates).
    pub fn forward_linear(&self, features: &Tensor, pixels: &Tensor) -> Result<Tensor> {
        let pixels = self.pixels_for(features, pixels)?;
        let mut logits = (upsample_bilinear(&self.tokens.forward(features)?, self.patch_size)?
            + self.pixels.forward(&pixels)?)?;
        if let Some(b) = self.out.bias() {
            let k = b.dims1()?;
            logits = logits.broadcast_add(&b.reshape((1, k, 1, 1))?)?;
        }
        if self.pooled {
            Ok(logits.mean(3)?.mean(2)?)
        } else {
            Ok(logits)
        }
    }

    /// `(B, D, h, w)` tokens and `(B, P, h·p, w·p)` pixels → `(B, K, h·p, w·p)` (or `(B, K)` pooled).
    pub fn forward(&self, features: &Tensor, pixels: &Tensor) -> Result<Tensor> {
        let pixels = self.pixels_for(features, pixels)?;
        // 1×1 convolutions commute with bilinear upsampling: project first, upsample K channels.
        let linear = (upsample_bilinear(&self.tokens.forward(features)?, self.patch_size)?
            + self.pixels.forward(&pixels)?)?;
        let reduced = upsample_bilinear(&self.reduce.forward(features)?, self.patch_size)?;
        let hidden = self
            .hidden
            .forward(&Tensor::cat(&[&pixels, &reduced], 1)?)?
            .relu()?;
        let logits = (linear + self.out.forward(&hidden)?)?;
        if self.pooled {
            Ok(logits.mean(3)?.mean(2)?)
        } else {
            Ok(logits)
        }
    }
}

/// The embeddings "head": the pooled features themselves, `(B, D, h, w)`.
pub fn embeddings(out: &EncoderOutput) -> Result<Tensor> {
    feature_map(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn heads_produce_the_documented_shapes() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let x = Tensor::randn(0f32, 1.0, (2, 16, 4, 4), &dev)?;
        let cls = PoolingHead::new(
            PoolingHeadConfig {
                in_channels: 16,
                out_channels: 5,
                num_conv_layers: 1,
                num_fc_layers: 2,
                conv_channels: 8,
                fc_channels: 12,
            },
            vb.pp("cls"),
        )?;
        assert_eq!(cls.forward(&x)?.dims(), &[2, 5]);
        let light = LightSegmentationHead::new(16, 3, 4, vb.pp("light"))?;
        assert_eq!(light.forward(&x)?.dims(), &[2, 3, 16, 16]);
        let unet = UNetHead::new(16, 8, 1, 4, vb.pp("unet"))?;
        assert_eq!(unet.forward(&x)?.dims(), &[2, 1, 16, 16]);
        assert!(UNetHead::new(16, 8, 1, 3, vb.pp("bad")).is_err());
        let px = Tensor::randn(0f32, 1.0, (2, 6, 16, 16), &dev)?;
        let hybrid = HybridHead::new(16, (6, &[]), 3, 4, false, vb.pp("hybrid"))?;
        assert_eq!(hybrid.forward(&x, &px)?.dims(), &[2, 3, 16, 16]);
        let pooled = HybridHead::new(16, (6, &[]), 3, 4, true, vb.pp("pooled"))?;
        assert_eq!(pooled.forward(&x, &px)?.dims(), &[2, 3]);
        assert!(hybrid.forward(&x, &px.narrow(2, 0, 8)?).is_err());
        Ok(())
    }

    #[test]
    fn bilinear_upsampling_matches_pytorch_on_a_ramp() -> Result<()> {
        // torch: F.interpolate(tensor([[[[0., 1.]]]]), scale_factor=2, mode="bilinear") rows = [0, .25, .75, 1].
        let x = Tensor::new(&[[[[0f32, 1.0]]]], &Device::Cpu)?;
        let y: Vec<f32> = upsample_bilinear(&x, 2)?
            .get(0)?
            .get(0)?
            .get(0)?
            .to_vec1()?;
        assert_eq!(y, vec![0.0, 0.25, 0.75, 1.0]);
        Ok(())
    }
}
