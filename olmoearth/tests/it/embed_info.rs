//! What `groundwork model info` and `model embed` call: `model_info` and `embed_file` on good and bad input.

use std::path::Path;

use crate::common::{fixture, fixture_dir, max_abs_diff, rand, timestamps, write};
use candle_core::{DType, Device, Tensor};
use olmoearth::embed::{EmbedArgs, embed_file};
use olmoearth::model_info;
use olmoearth::{Error, StateDict};

fn args(dir: &Path, p: usize, batch_size: usize) -> EmbedArgs {
    EmbedArgs {
        model: fixture_dir(),
        input: dir.join("in.safetensors"),
        output: dir.join("out").join("emb.safetensors"),
        patch_size: p,
        device: "cpu".into(),
        batch_size,
    }
}

/// Writes a valid input (B=3, 16×16, T=2, S2 + S1 with an S1 mask) and then applies `edit` to the list.
fn input_file(dir: &Path, edit: impl FnOnce(&mut Vec<(&'static str, Tensor)>)) {
    let (b, h, w, t) = (3, 16, 16, 2);
    let mut mask = vec![0u8; b * h * w * t];
    mask[..h * w * t / 2].fill(3);
    let mut v = vec![
        ("sentinel2_l2a", rand(&[b, h, w, t, 12], 11)),
        ("sentinel1", rand(&[b, h, w, t, 2], 12)),
        (
            "sentinel1_mask",
            Tensor::from_vec(mask, (b, h, w, t, 1), &Device::Cpu).expect("mask"),
        ),
        ("timestamps", timestamps(b, t)),
    ];
    edit(&mut v);
    write(&dir.join("in.safetensors"), &v);
}

fn embed_err(edit: impl FnOnce(&mut Vec<(&'static str, Tensor)>), p: usize) -> Error {
    let dir = tempfile::tempdir().expect("tempdir");
    input_file(dir.path(), edit);
    embed_file(&args(dir.path(), p, 2)).expect_err("bad input must fail")
}

fn replace(v: &mut Vec<(&'static str, Tensor)>, key: &'static str, t: Tensor) {
    v.retain(|(k, _)| *k != key);
    v.push((key, t));
}

#[test]
fn embed_writes_tokens_and_pooled_and_batching_does_not_change_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    input_file(dir.path(), |_| {});
    let summary = embed_file(&args(dir.path(), 4, 2)).expect("embed");
    assert_eq!(summary.samples, 3);
    assert_eq!(
        summary.shapes["tokens.sentinel2_l2a"],
        vec![3, 4, 4, 2, 3, 128]
    );
    assert_eq!(summary.shapes["tokens.sentinel1"], vec![3, 4, 4, 2, 1, 128]);
    assert_eq!(summary.shapes["pooled"], vec![3, 4, 4, 128]);
    let a = candle_core::safetensors::load(dir.path().join("out/emb.safetensors"), &Device::Cpu)
        .expect("load");
    assert_eq!(a["pooled"].dtype(), DType::F32);
    let mut one = args(dir.path(), 4, 1);
    one.output = dir.path().join("one.safetensors");
    embed_file(&one).expect("embed");
    let b = candle_core::safetensors::load(&one.output, &Device::Cpu).expect("load");
    for k in ["pooled", "tokens.sentinel2_l2a", "tokens.sentinel1"] {
        assert!(max_abs_diff(&a[k], &b[k]) < 1e-5, "{k}");
    }
}

#[test]
fn wrong_band_count_is_refused() {
    let e = embed_err(
        |v| replace(v, "sentinel2_l2a", rand(&[3, 16, 16, 2, 10], 1)),
        4,
    );
    assert!(e.to_string().contains("sentinel2_l2a has 10 bands"), "{e}");
}

#[test]
fn size_not_divisible_by_the_patch_size_is_refused() {
    let e = embed_err(|_| {}, 3);
    assert!(
        e.to_string().contains("not divisible by the patch size 3"),
        "{e}"
    );
}

#[test]
fn patch_size_outside_1_to_8_is_refused() {
    for p in [0, 9] {
        let e = embed_err(|_| {}, p);
        assert!(
            e.to_string()
                .contains(&format!("patch size {p} is outside 1..=8")),
            "{e}"
        );
    }
}

#[test]
fn more_than_12_time_steps_are_refused() {
    let e = embed_err(
        |v| {
            v.clear();
            v.push(("sentinel1", rand(&[1, 8, 8, 13, 2], 3)));
            v.push((
                "timestamps",
                timestamps(1, 13).clamp(0i64, 11i64).expect("clamp"),
            ));
        },
        8,
    );
    assert!(
        e.to_string()
            .contains("T = 13 time steps exceeds the maximum of 12"),
        "{e}"
    );
}

#[test]
fn months_outside_0_to_11_are_refused() {
    let e = embed_err(
        |v| {
            let ts = Tensor::from_vec(vec![1i64, 12, 2024, 1, 0, 2024], (1, 2, 3), &Device::Cpu)
                .expect("ts");
            let ts = Tensor::cat(&[&ts, &ts, &ts], 0).expect("cat");
            replace(v, "timestamps", ts);
        },
        4,
    );
    assert!(e.to_string().contains("month 12 is outside 0..=11"), "{e}");
}

#[test]
fn missing_timestamps_are_refused() {
    let e = embed_err(|v| v.retain(|(k, _)| *k != "timestamps"), 4);
    assert!(e.to_string().contains("missing timestamps"), "{e}");
}

#[test]
fn unknown_modalities_are_refused() {
    let e = embed_err(|v| v.push(("worldcover", rand(&[3, 16, 16, 2, 1], 4))), 4);
    assert!(
        matches!(e, Error::UnknownModality(ref m) if m == "worldcover"),
        "{e}"
    );
}

#[test]
fn dtype_mismatches_are_refused() {
    let e = embed_err(
        |v| {
            replace(
                v,
                "sentinel1",
                rand(&[3, 16, 16, 2, 2], 5)
                    .to_dtype(DType::F64)
                    .expect("f64"),
            )
        },
        4,
    );
    assert!(
        e.to_string()
            .contains("sentinel1: expected dtype F32, got F64"),
        "{e}"
    );
    let e = embed_err(
        |v| {
            replace(
                v,
                "sentinel1_mask",
                Tensor::zeros((3, 16, 16, 2, 1), DType::F32, &Device::Cpu).expect("z"),
            )
        },
        4,
    );
    assert!(
        e.to_string()
            .contains("sentinel1_mask: expected dtype an integer type"),
        "{e}"
    );
    let e = embed_err(
        |v| {
            replace(
                v,
                "timestamps",
                timestamps(3, 2).to_dtype(DType::F32).expect("f32"),
            )
        },
        4,
    );
    assert!(
        e.to_string()
            .contains("timestamps: expected dtype an integer type"),
        "{e}"
    );
}

#[test]
fn info_reports_size_parameters_and_band_order() {
    let info = model_info(&fixture_dir()).expect("info");
    let text = info.to_string();
    assert!(text.contains("OlmoEarth v1 nano"), "{text}");
    assert!(
        text.contains("B02,B03,B04,B08,B05,B06,B07,B8A,B11,B12,B01,B09"),
        "{text}"
    );
    assert!(
        text.contains("sentinel1") && text.contains("landsat"),
        "{text}"
    );
    // Every encoder.* parameter in the file, counted from the reference key list.
    let tsv = std::fs::read_to_string(fixture("state_dict_keys.tsv")).expect("tsv");
    let expected: usize = tsv
        .lines()
        .filter(|l| l.starts_with("encoder."))
        .map(|l| {
            let shape = l.split('\t').nth(1).expect("shape");
            shape
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().parse::<usize>().expect("dim"))
                .product::<usize>()
        })
        .sum();
    assert_eq!(info.encoder_params, expected);
    assert!(text.contains(&format!("{expected} in encoder.*")), "{text}");
    // The same from the weights file alone.
    assert!(model_info(&fixture("weights.pth")).is_ok());
}

#[test]
fn missing_and_misshaped_keys_name_the_key_and_both_shapes() {
    let cfg = olmoearth::EncoderConfig::from_file(&fixture("config.json")).expect("cfg");
    let all =
        candle_core::safetensors::load(fixture("encoder.safetensors"), &Device::Cpu).expect("load");
    let key = "encoder.blocks.2.mlp.fc1.weight";
    let mut missing = all.clone();
    missing.remove(key);
    let e = StateDict::from_tensors(missing)
        .encoder_tensors(&cfg, DType::F32, &Device::Cpu)
        .expect_err("missing");
    assert_eq!(
        e.to_string(),
        format!("checkpoint is missing key {key} (expected shape [512, 128])")
    );
    let mut bad = all;
    bad.insert(
        key.to_string(),
        Tensor::zeros((512, 64), DType::F32, &Device::Cpu).expect("z"),
    );
    let e = StateDict::from_tensors(bad)
        .encoder_tensors(&cfg, DType::F32, &Device::Cpu)
        .expect_err("shape");
    assert_eq!(
        e.to_string(),
        format!("checkpoint key {key} has shape [512, 64], expected [512, 128]")
    );
}

#[test]
fn v1_1_configs_are_refused_when_loading_a_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(fixture("config.json")).expect("cfg");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("json");
    cfg["model"]["encoder_config"]["use_linear_patch_embed"] = serde_json::Value::Bool(true);
    let cfg = cfg.to_string();
    std::fs::write(dir.path().join("config.json"), cfg).expect("write");
    std::fs::copy(
        fixture("encoder.safetensors"),
        dir.path().join("encoder.safetensors"),
    )
    .expect("copy");
    let e = model_info(dir.path()).expect_err("v1.1");
    assert!(e.to_string().contains("only OlmoEarth v1"), "{e}");
}
