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
