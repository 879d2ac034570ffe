//! Helpers shared by the integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use olmoearth::{Encoder, EncoderConfig, StateDict};

/// A file of the Nano fixture set.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/olmoearth-nano")
        .join(name)
}

/// The fixture directory.
pub fn fixture_dir() -> PathBuf {
    fixture("")
}

/// The Nano fixture encoder (f32, CPU).
pub fn nano() -> Encoder {
    let cfg = EncoderConfig::from_file(&fixture("config.json")).expect("config");
    let sd = StateDict::load(&fixture("encoder.safetensors")).expect("weights");
    Encoder::load(&cfg, &sd, DType::F32, &Device::Cpu).expect("encoder")
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A random f32 tensor.
pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).expect("tensor")
}

/// Timestamps `(B, T, 3)` with month = t.
pub fn timestamps(b: usize, t: usize) -> Tensor {
    let v: Vec<i64> = (0..b)
        .flat_map(|_| (0..t).flat_map(|ti| [1, ti as i64, 2024]))
        .collect();
    Tensor::from_vec(v, (b, t, 3), &Device::Cpu).expect("timestamps")
}

/// Writes tensors to a safetensors file.
pub fn write(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).expect("save");
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("diff")
}
