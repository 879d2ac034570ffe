//! Labelled examples, their targets as tensors, embedding them with the encoder, and the seeded
//! random numbers of a fit.

use super::*;

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
pub(super) fn target_tensor(
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
