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

    #[test]
    fn model_selection_and_the_report_score_a_confusion_alike() {
        // Class 2 is absent from the reference but predicted once: it counts in neither mean.
        let counts = vec![vec![8, 1, 1], vec![2, 6, 0], vec![0, 0, 0]];
        let s = confusion_scores(&counts);
        assert_eq!(s.absent, vec![2]);
        assert_eq!(s.total, 18);
        assert!((s.accuracy - 14.0 / 18.0).abs() < 1e-12);
        let f1 = |p: f64, r: f64| 2.0 * p * r / (p + r);
        let want = (f1(0.8, 0.8) + f1(6.0 / 7.0, 0.75)) / 2.0;
        assert!((s.macro_f1 - want).abs() < 1e-12, "{}", s.macro_f1);
        assert!((s.miou - (8.0 / 12.0 + 6.0 / 9.0) / 2.0).abs() < 1e-12);
        // Model selection's running sum gives the same macro-F1.
        let sum = MetricSum::from_confusion(counts);
        assert_eq!(sum.value(crate::task::Task::Segmentation), Some(s.macro_f1));
    }

    /// A window of two classes, 10 labels each, of which `wrong` of each are mispredicted.
    fn window(wrong: u64) -> MetricSum {
        MetricSum::from_confusion(vec![vec![10 - wrong, wrong], vec![wrong, 10 - wrong]])
    }

    #[test]
    fn the_paired_standard_error_is_small_for_a_gain_every_window_shows_and_large_for_one_window() {
        let task = crate::task::Task::Classification;
        let base: Vec<MetricSum> = (0..8).map(|_| window(5)).collect();
        // Better by one label per class in every window.
        let steady: Vec<MetricSum> = (0..8).map(|_| window(4)).collect();
        // Better on the whole too, but all of it in two windows, and worse in four.
        let lumpy: Vec<MetricSum> = [0, 0, 7, 7, 7, 7, 5, 5].map(window).to_vec();
        let gain = |w: &[MetricSum]| {
            pooled_score(task, w).unwrap_or(0.0) - pooled_score(task, &base).unwrap_or(0.0)
        };
        assert!(
            gain(&steady) > 0.09 && gain(&lumpy) > 0.02,
            "{}",
            gain(&lumpy)
        );
        let se = |w: &[MetricSum]| paired_difference_se(task, w, &base, 1).unwrap_or(f64::NAN);
        assert!(se(&steady) < 1e-9, "{}", se(&steady));
        assert!(
            se(&lumpy) > gain(&lumpy),
            "{} vs {}",
            se(&lumpy),
            gain(&lumpy)
        );
        assert_eq!(paired_difference_se(task, &base[..1], &base[..1], 1), None);
        assert_eq!(paired_difference_se(task, &base, &base[..2], 1), None);
        // A confusion matrix holds what adding its predictions one by one holds.
        let mut added = MetricSum::new(2);
        for (truth, predicted, n) in [(0, 0, 6), (0, 1, 4), (1, 0, 4), (1, 1, 6)] {
            for _ in 0..n {
                added.add(&Prediction::Class(predicted), &Target::Class(truth));
            }
        }
        assert_eq!(added.value(task), window(4).value(task));
        // The pooled score of the windows is the score of all their labels.
        let mut all = MetricSum::new(2);
        steady.iter().for_each(|w| all.merge(w));
        assert_eq!(pooled_score(task, &steady), all.value(task));
        assert!((all.value(task).unwrap_or(0.0) - 0.6).abs() < 1e-12);
    }
}
