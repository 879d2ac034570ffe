//! Fine-tuning blocks: a few AdamW steps on a tiny batch lower the loss through the unfrozen encoder.

use std::collections::BTreeMap;

use crate::common::{fixture, rand};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use olmoearth::heads::{PoolingHead, PoolingHeadConfig, feature_map};
use olmoearth::train::{AdamW, AdamWConfig, ParamGroup, TrainableEncoder, cross_entropy};
use olmoearth::{EncoderConfig, EncoderInput, Modality, ModalityInput, StateDict};

fn batch() -> EncoderInput {
    let mut modalities = BTreeMap::new();
    modalities.insert(
        Modality::Sentinel2L2a,
        ModalityInput {
            data: rand(&[4, 16, 16, 1, 12], 21),
            mask: None,
        },
    );
    EncoderInput {
        modalities,
        months: Tensor::new(&[[3u32], [4], [5], [6]], &Device::Cpu).expect("months"),
    }
}

#[test]
fn optimiser_steps_lower_the_loss_through_the_unfrozen_encoder() {
    let dev = Device::Cpu;
    let cfg = EncoderConfig::from_file(&fixture("config.json")).expect("cfg");
    let sd = StateDict::load(&fixture("weights.pth")).expect("weights");
    let mut enc = TrainableEncoder::from_state_dict(&cfg, &sd, &dev).expect("encoder");
    let vm = VarMap::new();
    let head = PoolingHead::new(
        PoolingHeadConfig {
            in_channels: 128,
            out_channels: 3,
            num_conv_layers: 1,
            num_fc_layers: 1,
            conv_channels: 16,
            fc_channels: 16,
        },
        VarBuilder::from_varmap(&vm, DType::F32, &dev),
    )
    .expect("head");
    // candle's CPU initialiser cannot be seeded: give the head fixed values (uniform within
    // ±1/√fan-in, biases zero) so the test starts from the same point every time.
    let mut head_vars: Vec<_> = vm
        .data()
        .lock()
        .expect("vars")
        .clone()
        .into_iter()
        .collect();
    head_vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (_, var)) in head_vars.iter().enumerate() {
        let dims = var.as_tensor().dims().to_vec();
        let value = if dims.len() == 1 {
            Tensor::zeros(dims.as_slice(), DType::F32, &dev).expect("zeros")
        } else {
            let fan_in: usize = dims[1..].iter().product();
            (rand(&dims, 100 + i as u64) / (fan_in as f64).sqrt()).expect("scale")
        };
        var.set(&value).expect("set");
    }
    let mut groups = enc.param_groups(0.65);
    assert_eq!(groups.len(), cfg.depth + 1);
    assert!((groups[0].lr_scale - 0.65f64.powi(4)).abs() < 1e-12);
    groups.push(ParamGroup::head(vm.all_vars()));
    let mut opt = AdamW::new(
        groups,
        AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        },
    )
    .expect("adamw");

    let input = batch();
    let targets = Tensor::new(&[0i64, 1, 2, -1], &dev).expect("targets");
    let loss_of = |enc: &TrainableEncoder| -> Tensor {
        let out = enc.forward(&input, 8).expect("forward");
        let logits = head
            .forward(&feature_map(&out).expect("features"))
            .expect("head");
        cross_entropy(&logits, &targets, -1, None).expect("loss")
    };
    let probe = "encoder.blocks.0.attn.q.weight";
    let before = enc
        .vars()
        .iter()
        .find(|(k, _)| k == probe)
        .expect("var")
        .1
        .as_tensor()
        .copy()
        .expect("copy");

    // Frozen: one step moves only the head.
    enc.set_frozen(true);
    opt.set_encoder_frozen(true);
    opt.backward_step(&loss_of(&enc)).expect("step");
    let after_frozen = enc
        .vars()
        .iter()
        .find(|(k, _)| k == probe)
        .expect("var")
        .1
        .as_tensor()
        .clone();
    let moved = (&after_frozen - &before)
        .expect("sub")
        .abs()
        .expect("abs")
        .sum_all()
        .expect("sum");
    assert_eq!(moved.to_scalar::<f32>().expect("s"), 0.0);

    // Unfrozen: the loss falls and the encoder's weights change.
    enc.set_frozen(false);
    opt.set_encoder_frozen(false);
    let first = loss_of(&enc).to_scalar::<f32>().expect("loss");
    for _ in 0..6 {
        opt.backward_step(&loss_of(&enc)).expect("step");
    }
    let last = loss_of(&enc).to_scalar::<f32>().expect("loss");
    println!("loss {first} → {last} ({:.3} of the first)", last / first);
    assert!(last < first * 0.8, "loss {first} → {last}");
    let after = enc
        .vars()
        .iter()
        .find(|(k, _)| k == probe)
        .expect("var")
        .1
        .as_tensor()
        .clone();
    let moved = (&after - &before)
        .expect("sub")
        .abs()
        .expect("abs")
        .sum_all()
        .expect("sum");
    assert!(moved.to_scalar::<f32>().expect("s") > 0.0);
}

/// The cosine similarity of two tensors of the same shape.
fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a.flatten_all().expect("a").to_vec1().expect("a");
    let b: Vec<f32> = b.flatten_all().expect("b").to_vec1().expect("b");
    let dot: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(&a) * norm(&b))
}

#[test]
fn mixed_precision_trains_the_f32_parameters_through_bf16_forwards() {
    // What a GPU of compute capability 8.0 or newer does (the default there), forced on the CPU.
    let dev = Device::Cpu;
    let cfg = EncoderConfig::from_file(&fixture("config.json")).expect("cfg");
    let sd = StateDict::load(&fixture("weights.pth")).expect("weights");
    let full = TrainableEncoder::from_state_dict(&cfg, &sd, &dev).expect("encoder");
    assert_eq!(full.compute_dtype(), DType::F32, "the CPU computes in f32");
    let mut mixed = TrainableEncoder::from_state_dict(&cfg, &sd, &dev).expect("encoder");
    mixed.set_compute_dtype(DType::BF16).expect("bf16");
    assert!(mixed.set_compute_dtype(DType::U8).is_err());
    for (_, v) in mixed.vars() {
        assert_eq!(v.dtype(), DType::F32, "the master weights stay f32");
    }

    let input = batch();
    let f_full = feature_map(&full.forward(&input, 8).expect("forward")).expect("features");
    let f_mixed = feature_map(&mixed.forward(&input, 8).expect("forward")).expect("features");
    assert_eq!(f_mixed.dtype(), DType::F32, "the heads get f32 features");
    let c = cosine(&f_full, &f_mixed);
    let diff = (&f_full - &f_mixed)
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("diff");
    println!("features: cosine {c}, largest difference {diff}");
    assert!(diff > 0.0, "the forward did not compute in bf16");
    assert!(c > 0.999, "bf16 features differ from f32 ones: cosine {c}");

    // The gradients reach the f32 parameters, in f32, and agree with the full-precision ones.
    let weights = rand(f_full.dims(), 7);
    let loss = |f: &Tensor| (f * &weights).expect("mul").sum_all().expect("sum");
    let g_full = loss(&f_full).backward().expect("backward");
    let g_mixed = loss(&f_mixed).backward().expect("backward");
    let probe = "encoder.blocks.0.attn.q.weight";
    let grad = |enc: &TrainableEncoder, g: &candle_core::backprop::GradStore| -> Tensor {
        let var = &enc.vars().iter().find(|(k, _)| k == probe).expect("var").1;
        g.get(var.as_tensor()).expect("a gradient").clone()
    };
    let (a, b) = (grad(&full, &g_full), grad(&mixed, &g_mixed));
    assert_eq!(b.dtype(), DType::F32);
    let c = cosine(&a, &b);
    println!("gradients: cosine {c}");
    assert!(c > 0.99, "bf16 gradients differ from f32 ones: cosine {c}");

    // Frozen, the bf16 pass builds no graph back to the parameters.
    mixed.set_frozen(true);
    let f = feature_map(&mixed.forward(&input, 8).expect("forward")).expect("features");
    let g = loss(&f).backward().expect("backward");
    let var = &mixed
        .vars()
        .iter()
        .find(|(k, _)| k == probe)
        .expect("var")
        .1;
    assert!(g.get(var.as_tensor()).is_none());
}
