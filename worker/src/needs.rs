//! What a step needs of the worker that runs it: the memory of its model device (GPU memory on a
//! worker that computes on CUDA, RAM otherwise), estimated from the encoder's size and the shape of a
//! batch. A claim goes only to a worker whose model device has at least that much
//! (`step.needs.memory_mib`); see `docs/state_machine.md`.

use groundwork_store::projects::Project;
use groundwork_types::ModelSize;
use serde_json::{Value, json};

/// Encoder parameters of each size (docs/olmoearth-v1.md §1).
fn parameters(size: ModelSize) -> f64 {
    match size {
        ModelSize::Nano => 1.4e6,
        ModelSize::Tiny => 6.2e6,
        ModelSize::Base => 89e6,
        ModelSize::Large => 308e6,
    }
}

/// The shapes a step feeds the encoder.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Encoder size.
    pub size: ModelSize,
    /// Window side in pixels.
    pub window: u32,
    /// Patch side in pixels.
    pub patch: u32,
    /// Time steps.
    pub timesteps: usize,
    /// Band sets over all modalities (tokens per patch and time step).
    pub band_sets: usize,
    /// Samples per forward pass.
    pub batch: usize,
}

impl Shape {
    /// The shapes of `project`'s windows in batches of `batch`.
    #[must_use]
    pub fn of(project: &Project, batch: usize) -> Self {
        // The acquisition's monthly time steps (a range past the model's limit cannot be acquired;
        // it counts as the limit).
        let months = groundwork_imagery::composite::time_bins(
            project.start,
            project.end,
            groundwork_imagery::TimeBinning::Monthly,
        )
        .map_or(groundwork_imagery::composite::MAX_BINS, |bins| bins.len());
        Self {
            size: project.model_size,
            window: u32::try_from(project.window_size).unwrap_or(64),
            patch: u32::try_from(project.patch_size).unwrap_or(4).max(1),
            timesteps: months.clamp(1, groundwork_imagery::composite::MAX_BINS),
            band_sets: project
                .modalities
                .iter()
                .map(|m| m.num_band_sets())
                .sum::<usize>()
                .max(1),
            batch: batch.max(1),
        }
    }

    /// Estimated peak memory in MiB: the weights (with their gradients and two Adam moments when the
    /// encoder is fine-tuned), the activations a backward pass keeps (about 16 values per token,
    /// channel and layer) or one layer's when the encoder only runs forward (inference, or training
    /// a head on a frozen encoder), the attention scores, and 512 MiB for the runtime.
    ///
    /// Forward only, attention is computed in chunks of 1,024 queries, so one chunk's scores are
    /// held. A backward pass through the encoder keeps every layer's scores whole, three times over
    /// (scores, exponentials, probabilities): `batch × heads × tokens² × depth × 12` bytes, which
    /// dominates at small patches and many months (Nano at p = 4, 4 months, batch 8: about 29 GiB).
    /// A planning figure, not a measurement: it decides which workers may claim the step.
    #[must_use]
    pub fn memory_mib(&self, fine_tuning: bool) -> u64 {
        let (dim, depth, heads) = self.size.dims();
        let side = f64::from(self.window / self.patch.max(1)).max(1.0);
        let tokens = side * side * self.timesteps as f64 * self.band_sets as f64;
        let batch = self.batch as f64;
        let weights = parameters(self.size) * 4.0 * if fine_tuning { 4.0 } else { 1.0 };
        let per_layer = batch * tokens * dim as f64 * 4.0 * 16.0;
        let activations = per_layer * if fine_tuning { depth as f64 } else { 2.0 };
        let scores = if fine_tuning {
            batch * heads as f64 * tokens * tokens * 4.0 * depth as f64 * 3.0
        } else {
            batch * heads as f64 * tokens.min(1024.0) * tokens * 4.0
        };
        let bytes = weights + activations + scores;
        (bytes / 1_048_576.0).ceil() as u64 + 512
    }
}

/// The `needs` of a step of `project` that runs the encoder on batches of `batch`, fine-tuning it
/// (a backward pass through the encoder) or not: `memory_mib` (what claims are matched on), the
/// `model_size` it loads, and the `dtype` the memory figure assumes (`f32`: an upper bound on GPUs that
/// compute in bf16).
#[must_use]
pub fn of_project(project: &Project, batch: usize, fine_tuning: bool) -> Value {
    json!({
        "memory_mib": Shape::of(project, batch).memory_mib(fine_tuning),
        "model_size": project.model_size.name(),
        "dtype": "f32",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(size: ModelSize, window: u32, patch: u32, batch: usize) -> Shape {
        Shape {
            size,
            window,
            patch,
            timesteps: 12,
            band_sets: 3,
            batch,
        }
    }

    #[test]
    fn memory_grows_with_the_model_the_batch_and_training() {
        let nano = shape(ModelSize::Nano, 64, 4, 8);
        let large = shape(ModelSize::Large, 64, 4, 8);
        assert!(nano.memory_mib(false) < large.memory_mib(false));
        assert!(nano.memory_mib(false) < nano.memory_mib(true));
        assert!(
            shape(ModelSize::Base, 64, 4, 4).memory_mib(true)
                < shape(ModelSize::Base, 64, 4, 16).memory_mib(true)
        );
        assert!(
            shape(ModelSize::Base, 64, 8, 8).memory_mib(true)
                < shape(ModelSize::Base, 64, 4, 8).memory_mib(true)
        );
        // Nano inference on small windows fits a laptop; Large training at p = 4 needs a large GPU.
        assert!(shape(ModelSize::Nano, 64, 8, 8).memory_mib(false) < 2048);
        assert!(shape(ModelSize::Large, 64, 4, 8).memory_mib(true) > 16_384);
    }

    #[test]
    fn fine_tuning_keeps_every_layer_s_attention_scores() {
        // Nano at p = 4 over 4 months of Sentinel-2 (3 band sets), batch 8: a fine-tuning run like
        // this grew past 23 GB on a CPU worker and was killed; forward only it needs little.
        let four_months = Shape {
            timesteps: 4,
            ..shape(ModelSize::Nano, 64, 4, 8)
        };
        assert!(
            four_months.memory_mib(true) > 24_576,
            "{}",
            four_months.memory_mib(true)
        );
        assert!(
            four_months.memory_mib(false) < 2048,
            "{}",
            four_months.memory_mib(false)
        );
        // Coarser patches cut the scores by the square of the token count.
        let coarse = Shape {
            patch: 8,
            ..four_months
        };
        assert!(coarse.memory_mib(true) < four_months.memory_mib(true) / 8);
    }
}
