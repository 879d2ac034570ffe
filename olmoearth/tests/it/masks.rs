//! Masked tokens are dropped per sample: a batch equals its samples run alone, dropped tokens are zero
//! and pooled means skip them.

use std::collections::BTreeMap;

use crate::common::{max_abs_diff, nano, rand};
use candle_core::{DType, Device, IndexOp, Tensor};
use olmoearth::{EncoderInput, Modality, ModalityInput};

fn months(b: usize, t: usize) -> Tensor {
    let v: Vec<u32> = (0..b * t).map(|i| (i % 12) as u32).collect();
    Tensor::from_vec(v, (b, t), &Device::Cpu).expect("months")
}

/// S2 + S1, B=2, 16×16, T=2. Sample 0 misses S2 band set 1 at t=1 everywhere and S1 in the top-left
/// quadrant; sample 1 misses S2 at t=0 in one row of patches.
fn batch() -> EncoderInput {
    let (b, h, w, t) = (2, 16, 16, 2);
    let mut s2m = vec![0u8; b * h * w * t * 3];
    let mut s1m = vec![0u8; b * h * w * t];
    for y in 0..h {
        for x in 0..w {
            s2m[(((y * w) + x) * t + 1) * 3 + 1] = 3;
            if y < 8 && x < 8 {
                for ti in 0..t {
                    s1m[((y * w) + x) * t + ti] = 3;
                }
            }
            if y < 4 {
                for s in 0..3 {
                    s2m[((((h + y) * w) + x) * t) * 3 + s] = 3;
                }
            }
        }
    }
    let mut modalities = BTreeMap::new();
    modalities.insert(
        Modality::Sentinel2L2a,
        ModalityInput {
            data: rand(&[b, h, w, t, 12], 1),
            mask: Some(Tensor::from_vec(s2m, (b, h, w, t, 3), &Device::Cpu).expect("mask")),
        },
    );
    modalities.insert(
        Modality::Sentinel1,
        ModalityInput {
            data: rand(&[b, h, w, t, 2], 2),
            mask: Some(Tensor::from_vec(s1m, (b, h, w, t, 1), &Device::Cpu).expect("mask")),
        },
    );
    EncoderInput {
        modalities,
        months: months(b, t),
    }
}

fn sample(input: &EncoderInput, i: usize) -> EncoderInput {
    EncoderInput {
        modalities: input
            .modalities
            .iter()
            .map(|(&m, x)| {
                (
                    m,
                    ModalityInput {
                        data: x.data.narrow(0, i, 1).expect("narrow"),
                        mask: x.mask.as_ref().map(|k| k.narrow(0, i, 1).expect("narrow")),
                    },
                )
            })
            .collect(),
        months: input.months.narrow(0, i, 1).expect("narrow"),
    }
}

#[test]
fn a_masked_batch_equals_each_sample_run_alone() {
    let enc = nano();
    let input = batch();
    for p in [4usize, 8] {
        let out = enc.forward(&input, p).expect("batch");
        let pooled = out.pooled().expect("pooled");
        for i in 0..2 {
            let alone = enc.forward(&sample(&input, i), p).expect("alone");
            for m in [Modality::Sentinel2L2a, Modality::Sentinel1] {
                let d = max_abs_diff(
                    &out.tokens[&m].narrow(0, i, 1).expect("n"),
                    &alone.tokens[&m],
                );
                assert!(d < 1e-5, "p={p} sample {i} {m}: {d}");
            }
            let d = max_abs_diff(
                &pooled.narrow(0, i, 1).expect("n"),
                &alone.pooled().expect("pooled"),
            );
            assert!(d < 1e-5, "p={p} sample {i} pooled: {d}");
        }
    }
}

#[test]
fn dropped_tokens_are_zero_and_pooling_skips_them() {
    let enc = nano();
    let input = batch();
    let p = 4;
    let out = enc.forward(&input, p).expect("forward");
    let s2 = &out.tokens[&Modality::Sentinel2L2a]; // (2,4,4,2,3,128)
    let s1 = &out.tokens[&Modality::Sentinel1]; // (2,4,4,2,1,128)
    // Sample 0, t=1, band set 1 is zero everywhere; band set 0 is not.
    let dropped = s2.i((0, .., .., 1, 1)).expect("i");
    assert_eq!(
        dropped
            .abs()
            .expect("abs")
            .sum_all()
            .expect("sum")
            .to_scalar::<f32>()
            .expect("s"),
        0.0
    );
    let kept = s2.i((0, .., .., 1, 0)).expect("i");
    assert!(
        kept.abs()
            .expect("abs")
            .sum_all()
            .expect("sum")
            .to_scalar::<f32>()
            .expect("s")
            > 0.0
    );
    // S1 of sample 0 in the top-left 2×2 patches is dropped.
    let s1_tl = s1.i((0, 0..2, 0..2)).expect("i");
    assert_eq!(
        s1_tl
            .abs()
            .expect("abs")
            .sum_all()
            .expect("sum")
            .to_scalar::<f32>()
            .expect("s"),
        0.0
    );
    // Pooled at sample 0, patch (0,0): S2 mean over the 5 present (t, s) tokens only (S1 absent there).
    let pooled = out.pooled().expect("pooled");
    let present = s2.i((0, 0, 0)).expect("i").reshape((6, 128)).expect("r");
    let sum = present.sum(0).expect("sum");
    let expect = (sum / 5.0).expect("div");
    let got = pooled.i((0, 0, 0)).expect("i");
    assert!(max_abs_diff(&got, &expect) < 1e-5);
    // At patch (3,3) both modalities are present: mean of the two modality means.
    let m2 = s2
        .i((0, 3, 3))
        .expect("i")
        .reshape((6, 128))
        .expect("r")
        .sum(0)
        .expect("s");
    let m2 = (m2 / 5.0).expect("div");
    let m1 = s1
        .i((0, 3, 3))
        .expect("i")
        .reshape((2, 128))
        .expect("r")
        .mean(0)
        .expect("m");
    let expect = ((m2 + m1).expect("add") / 2.0).expect("div");
    assert!(max_abs_diff(&pooled.i((0, 3, 3)).expect("i"), &expect) < 1e-5);
    assert_eq!(out.present[&Modality::Sentinel2L2a].dtype(), DType::F32);
}

#[test]
fn chunked_attention_equals_full_attention() {
    let q = rand(&[2, 3, 37, 8], 5);
    let k = rand(&[2, 3, 37, 8], 6);
    let v = rand(&[2, 3, 37, 8], 7);
    let full = olmoearth::encoder::attention_chunked(&q, &k, &v, false, usize::MAX).expect("full");
    // 2·3·37 scores per query row: a budget of 5 rows forces 8 chunks.
    let chunked =
        olmoearth::encoder::attention_chunked(&q, &k, &v, false, 2 * 3 * 37 * 5).expect("chunked");
    assert!(max_abs_diff(&full, &chunked) < 1e-6);
}

#[test]
fn base_at_128px_t12_p4_keeps_attention_scores_far_below_8_gb() {
    // 128×128 px, T=12, p=4, S2: 32·32·12·3 tokens.
    let n = 32 * 32 * 12 * 3;
    assert_eq!(n, 36_864);
    let full = 12 * n * n * 4;
    let chunked = olmoearth::encoder::attention_peak_bytes(1, 12, n, 4);
    assert!(
        full > 60 * (1 << 30),
        "a full score matrix would be {full} bytes"
    );
    assert!(chunked <= 256 << 20, "chunked scores take {chunked} bytes");
}
