//! Parity with the reference PyTorch encoder on the Nano fixture (spec §4.4): every tensor of
//! `io.safetensors`, for both checkpoint formats, at max |Δ| ≤ 1e-4.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, IndexOp, Tensor};
use olmoearth::{Encoder, EncoderConfig, EncoderInput, Modality, ModalityInput, StateDict};

use crate::common::fixture;

const TOL: f32 = 1e-4;

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("io.safetensors"), &Device::Cpu).expect("io.safetensors")
}

fn input(io: &HashMap<String, Tensor>) -> EncoderInput {
    let mut modalities = BTreeMap::new();
    for m in [Modality::Sentinel2L2a, Modality::Sentinel1] {
        let data = io[&format!("in.{m}")].clone();
        modalities.insert(m, ModalityInput { data, mask: None });
    }
    let months = io["in.timestamps"].i((.., .., 1)).expect("months");
    EncoderInput { modalities, months }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).expect("f32") - b)
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("diff")
}

fn check_all(encoder: &Encoder, label: &str) {
    let io = io();
    let inp = input(&io);
    for p in [8usize, 4, 3] {
        let pe = encoder.patch_embed(&inp, p).expect("patch embed");
        let enc = encoder
            .add_encodings(&pe, &inp.months, p)
            .expect("encodings");
        let out = encoder.forward(&inp, p).expect("forward");
        for m in [Modality::Sentinel2L2a, Modality::Sentinel1] {
            for (stage, got) in [
                ("patch_embed", &pe[&m]),
                ("with_encodings", &enc[&m]),
                ("out", &out.tokens[&m]),
            ] {
                let want = &io[&format!("ps{p}.{stage}.{m}")];
                let d = max_abs_diff(got, want);
                assert!(d <= TOL, "{label} p={p} {stage}.{m}: max|Δ| = {d}");
            }
        }
        let pooled = out.pooled().expect("pooled");
        let d = max_abs_diff(&pooled, &io[&format!("ps{p}.pooled_bhwc")]);
        assert!(d <= TOL, "{label} p={p} pooled: max|Δ| = {d}");
    }
}

fn load(weights: &str) -> Encoder {
    let cfg = EncoderConfig::from_file(&fixture("config.json")).expect("config");
    let sd = StateDict::load(&fixture(weights)).expect("weights");
    Encoder::load(&cfg, &sd, DType::F32, &Device::Cpu).expect("encoder")
}

#[test]
fn weights_pth_matches_the_reference_at_patch_sizes_8_4_3() {
    check_all(&load("weights.pth"), "weights.pth");
}

#[test]
fn encoder_safetensors_matches_the_reference_at_patch_sizes_8_4_3() {
    check_all(&load("encoder.safetensors"), "encoder.safetensors");
}
