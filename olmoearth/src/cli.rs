//! The `groundwork model …` subcommands, mounted by the `groundwork` binary:
//! `info`, `embed` and `fetch`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::checkpoint::ModelFiles;
use crate::config::{EncoderConfig, ModelSize};
use crate::embed::{EmbedArgs, embed_file};
use crate::error::Result;
use crate::fetch::{DEFAULT_ENDPOINT, fetch_model};

/// `groundwork model` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelCommand {
    /// Show a model's size, parameter count, modalities and band order.
    Info {
        /// Model directory (config.json + weights.pth or encoder.safetensors) or weights file.
        dir: PathBuf,
    },
    /// Embed a safetensors file of normalised inputs.
    Embed {
        /// Model directory or weights file.
        #[arg(long)]
        model: PathBuf,
        /// Input safetensors: `<modality>` (B,H,W,T,C) f32, optional `<modality>_mask`, `timestamps` (B,T,3).
        #[arg(long)]
        input: PathBuf,
        /// Patch size, 1–8.
        #[arg(long)]
        patch_size: usize,
        /// Output safetensors: `tokens.<modality>` (B,h,w,T,S,D) and `pooled` (B,h,w,D).
        #[arg(long)]
        output: PathBuf,
        /// cpu, cuda:N or auto.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Samples per forward pass.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
    },
    /// Download a released v1 model (config.json + weights.pth).
    Fetch {
        /// nano, tiny, base or large.
        size: ModelSize,
        /// Root directory for models.
        #[arg(
            long,
            env = "GROUNDWORK_MODEL_DIR",
            default_value = "./.groundwork/models"
        )]
        dir: PathBuf,
        /// Hugging Face endpoint (or a mirror).
        #[arg(long, env = "GROUNDWORK_HF_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
        endpoint: String,
    },
}

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

/// Runs a `model` subcommand. Call it inside a tokio runtime; the heavy work runs on the blocking pool.
pub async fn run(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::Info { dir } => {
            let info = tokio::task::spawn_blocking(move || model_info(&dir))
                .await
                .context("model info task")??;
            print!("{info}");
        }
        ModelCommand::Embed {
            model,
            input,
            patch_size,
            output,
            device,
            batch_size,
        } => {
            let args = EmbedArgs {
                model,
                input,
                output,
                patch_size,
                device,
                batch_size,
            };
            let out_path = args.output.clone();
            let summary = tokio::task::spawn_blocking(move || embed_file(&args))
                .await
                .context("embed task")??;
            println!(
                "embedded {} samples into {}",
                summary.samples,
                out_path.display()
            );
            for (k, s) in &summary.shapes {
                println!("  {k} {s:?}");
            }
        }
        ModelCommand::Fetch {
            size,
            dir,
            endpoint,
        } => {
            let path = fetch_model(size, &dir, &endpoint)
                .await
                .with_context(|| format!("fetching OlmoEarth v1 {size} from {endpoint}"))?;
            println!("downloaded {} to {}", size.hf_repo(), path.display());
        }
    }
    Ok(())
}
