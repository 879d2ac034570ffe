//! Shared by the encoder benchmark and the GPU check example: random-weight models and timed forwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use olmoearth::checkpoint::random_state_dict;
use olmoearth::{Encoder, EncoderConfig, EncoderInput, Modality, ModalityInput, ModelSize};

/// One benchmark shape.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub size: ModelSize,
    pub patch_size: usize,
    pub batch: usize,
    pub hw: usize,
    pub t: usize,
}

/// Result of timing one shape.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ms_per_forward: f64,
    pub tokens_per_s: f64,
    pub tokens: usize,
    pub iters: usize,
}

pub fn encoder(size: ModelSize, dtype: DType, device: &Device) -> Encoder {
    let cfg = EncoderConfig::preset(size);
    let sd = random_state_dict(&cfg, &Device::Cpu).expect("random weights");
    Encoder::load(&cfg, &sd, dtype, device).expect("encoder")
}

pub fn s2_input(shape: Shape, device: &Device) -> EncoderInput {
    let dims = (shape.batch, shape.hw, shape.hw, shape.t, 12);
    let data = Tensor::randn(0f32, 1.0, dims, device).expect("data");
    let months: Vec<u32> = (0..shape.batch * shape.t)
        .map(|i| (i % shape.t) as u32)
        .collect();
    let months = Tensor::from_vec(months, (shape.batch, shape.t), device).expect("months");
    let mut modalities = BTreeMap::new();
    modalities.insert(Modality::Sentinel2L2a, ModalityInput { data, mask: None });
    EncoderInput { modalities, months }
}

/// Times forwards after one warm-up (unless `warm_up` is false): at least `min_iters`, until `budget` has
/// passed.
pub fn time_forward(
    enc: &Encoder,
    shape: Shape,
    device: &Device,
    min_iters: usize,
    budget: Duration,
    warm_up: bool,
) -> Timing {
    let input = s2_input(shape, device);
    let h = shape.hw / shape.patch_size;
    let tokens = shape.batch * h * h * shape.t * 3;
    let sync = |o: &olmoearth::EncoderOutput| {
        // Reading a value forces the (possibly asynchronous) device work to finish.
        let v = o.tokens[&Modality::Sentinel2L2a]
            .flatten_all()
            .and_then(|t| t.get(0))
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.to_scalar::<f32>())
            .expect("sync");
        std::hint::black_box(v);
    };
    if warm_up {
        sync(&enc.forward(&input, shape.patch_size).expect("warm-up"));
    }
    let start = Instant::now();
    let mut iters = 0;
    while iters < min_iters || start.elapsed() < budget {
        sync(&enc.forward(&input, shape.patch_size).expect("forward"));
        iters += 1;
    }
    let secs = start.elapsed().as_secs_f64() / iters as f64;
    Timing {
        ms_per_forward: secs * 1e3,
        tokens_per_s: tokens as f64 / secs,
        tokens,
        iters,
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
