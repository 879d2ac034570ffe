//! Fitting task models on labelled windows (spec §5.2, rslearn's fine-tuning recipe), several of them, so
//! that the caller can keep the best on validation:
//!
//! - a **frozen-encoder baseline**: embeddings of the pretrained encoder (pooled per window, or per patch
//!   token for segmentation) → k-nearest neighbours and a ridge linear probe, fitted on train and selected
//!   on validation (`baseline.rs`);
//! - **linear candidates** in closed form: class-balanced ridge models on the raw 10 m input pixels (alone
//!   or with their neighbourhood means), on the upsampled tokens, or on all of them, each the linear part
//!   of the `hybrid` head (`linear.rs`);
//! - **fine-tuning** of [`TrainableTaskModel`], starting from a linear candidate: the encoder frozen for the
//!   first epochs (the head trains on cached features), then unfrozen at a reduced learning rate; a
//!   class-weighted loss; flips and 90° rotations applied alike to inputs (or cached features) and target
//!   masks; early stopping on the validation macro-F1 (loss for regression); a checkpoint (weights,
//!   optimiser moments, history) after every epoch through a [`FitSink`], from which [`Trainer::resume`]
//!   continues at the next epoch (`trainer.rs`).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::encoder::{Encoder, EncoderInput};
use crate::error::{Error, Result};
use crate::heads::feature_map;
use crate::task::{
    Head, TaskModelConfig, TrainableTaskModel, dihedral, dihedral_input, outputs_to_predictions,
    safetensors_metadata, stack_inputs, to_safetensors,
};
use crate::train::{AdamW, AdamWConfig, cross_entropy, cross_entropy_2d, mse};

mod baseline;
mod data;
mod linear;
mod trainer;

pub use baseline::*;
pub use data::*;
pub use linear::*;
pub use trainer::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffles_are_reproducible() {
        let mut a: Vec<usize> = (0..10).collect();
        let mut b = a.clone();
        Rng::new(3).shuffle(&mut a);
        Rng::new(3).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..10).collect::<Vec<_>>());
    }
}
