//! What `groundwork model info` reports about a checkpoint: size, parameter counts, modalities and
//! band order.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::ModelFiles;
use crate::config::EncoderConfig;
use crate::error::Result;

/// What `model info` reports.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Weights file read.
    pub weights: PathBuf,
    /// Encoder configuration.
    pub config: EncoderConfig,
    /// Parameters of every `encoder.*` tensor in the file.
    pub encoder_params: usize,
    /// Parameters the forward pass uses.
    pub used_params: usize,
}

/// Reads a model directory or file for `model info`.
pub fn model_info(path: &Path) -> Result<ModelInfo> {
    let files = ModelFiles::resolve(path)?;
    let (config, sd) = files.load()?;
    let encoder_params = sd.param_count();
    let used_params = crate::checkpoint::expected_shapes(&config)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    // Checks every key and shape.
    sd.encoder_tensors(&config, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    Ok(ModelInfo {
        weights: files.weights,
        config,
        encoder_params,
        used_params,
    })
}

impl fmt::Display for ModelInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let size = c.size().map_or("custom", |s| s.name());
        writeln!(f, "model:       OlmoEarth v1 {size}")?;
        writeln!(f, "weights:     {}", self.weights.display())?;
        writeln!(
            f,
            "encoder:     D={} depth={} heads={} mlp={} patch kernel={} max T={}",
            c.embedding_size,
            c.depth,
            c.num_heads,
            c.mlp_hidden(),
            c.max_patch_size,
            c.max_sequence_length
        )?;
        writeln!(
            f,
            "parameters:  {} in encoder.* ({} used by the forward pass)",
            self.encoder_params, self.used_params
        )?;
        writeln!(f, "modalities:")?;
        for m in &c.modalities {
            let sets: Vec<String> = m
                .band_sets()
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|&i| m.bands()[i])
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect();
            writeln!(
                f,
                "  {:<14} bands {} | band sets [{}]",
                m.name(),
                m.bands().join(","),
                sets.join("] [")
            )?;
        }
        Ok(())
    }
}
