//! Parity and throughput on any device: `cargo run --release -p olmoearth --features cuda --example gpu_check -- cuda:0`.
//!
//! 1. Parity against the Nano fixture (both checkpoint formats, p = 8, 4, 3) in f32 and in the device's
//!    compute dtype (bf16 on GPUs), printing max |Δ| for every reference tensor.
//! 2. Throughput of Nano and Base at p = 8 and 4 on S2 64×64, T = 4, batch 2, in the compute dtype.

#[path = "../benches/bench_common.rs"]
#[expect(dead_code, reason = "uses only some of the shared helpers")]
mod bench_common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bench_common::{Shape, time_forward};
use candle_core::{DType, Device, IndexOp, Tensor};
use olmoearth::device::{compute_dtype, parse_device};
use olmoearth::{
    Encoder, EncoderConfig, EncoderInput, Modality, ModalityInput, ModelSize, StateDict,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/olmoearth-nano")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_dtype(DType::F32)
        .and_then(|a| a.to_device(&Device::Cpu))
        .expect("to cpu");
    (a - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("diff")
}

fn parity(device: &Device, dtype: DType) {
    let io: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixture("io.safetensors"), &Device::Cpu).expect("io");
    let cfg = EncoderConfig::from_file(&fixture("config.json")).expect("config");
    let mut modalities = BTreeMap::new();
    for m in [Modality::Sentinel2L2a, Modality::Sentinel1] {
        modalities.insert(
            m,
            ModalityInput {
                data: io[&format!("in.{m}")].clone(),
                mask: None,
            },
        );
    }
    let input = EncoderInput {
        modalities,
        months: io["in.timestamps"].i((.., .., 1)).expect("months"),
    };
    for weights in ["weights.pth", "encoder.safetensors"] {
        let sd = StateDict::load(&fixture(weights)).expect("weights");
        let enc = Encoder::load(&cfg, &sd, dtype, device).expect("encoder");
        let mut worst = 0f32;
        for p in [8usize, 4, 3] {
            let pe = enc.patch_embed(&input, p).expect("patch embed");
            let we = enc.add_encodings(&pe, &input.months, p).expect("encodings");
            let out = enc.forward(&input, p).expect("forward");
            let mut line = format!("  {weights:<20} {dtype:?} p={p}:");
            for m in [Modality::Sentinel2L2a, Modality::Sentinel1] {
                for (stage, t) in [
                    ("patch_embed", &pe[&m]),
                    ("with_encodings", &we[&m]),
                    ("out", &out.tokens[&m]),
                ] {
                    let d = max_abs_diff(t, &io[&format!("ps{p}.{stage}.{m}")]);
                    worst = worst.max(d);
                    line += &format!(" {stage}.{m}={d:.2e}");
                }
            }
            let d = max_abs_diff(
                &out.pooled().expect("pooled"),
                &io[&format!("ps{p}.pooled_bhwc")],
            );
            worst = worst.max(d);
            println!("{line} pooled={d:.2e}");
        }
        println!("  => {weights} {dtype:?}: worst max|Δ| = {worst:.2e}");
    }
}

fn main() {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "auto".into());
    let device = parse_device(&spec).expect("device");
    let dtype = compute_dtype(&device);
    println!("device {spec} ({device:?}), compute dtype {dtype:?}");
    println!("parity vs fixtures:");
    parity(&device, DType::F32);
    if dtype != DType::F32 {
        parity(&device, dtype);
    }
    println!("throughput (S2 64x64, T=4, batch 2, {dtype:?}):");
    for (size, p) in [
        (ModelSize::Nano, 8),
        (ModelSize::Nano, 4),
        (ModelSize::Base, 8),
        (ModelSize::Base, 4),
    ] {
        let enc = bench_common::encoder(size, dtype, &device);
        let shape = Shape {
            size,
            patch_size: p,
            batch: 2,
            hw: 64,
            t: 4,
        };
        let t = time_forward(&enc, shape, &device, 5, Duration::from_secs(3), true);
        println!(
            "  {:<5} p={p}: {:>9.2} ms/forward {:>12.1} tokens/s ({} iterations)",
            size.name(),
            t.ms_per_forward,
            t.tokens_per_s,
            t.iters
        );
    }
}
