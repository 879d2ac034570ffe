//! `groundwork model …`: `info`, `embed` and `fetch`.

use std::path::PathBuf;

use anyhow::Context;
use olmoearth::ModelSize;
use olmoearth::embed::{EmbedArgs, embed_file};
use olmoearth::fetch::{DEFAULT_ENDPOINT, fetch_model};
use olmoearth::info::model_info;

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
        #[command(flatten)]
        outbound: super::outbound::OutboundOptions,
    },
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
            outbound,
        } => {
            // Downloads follow the outbound-request policy like every other fetch: the endpoint and
            // each redirect must reach a public address or an allowed host.
            let policy = outbound.policy()?;
            policy
                .check_url(&endpoint)
                .await
                .with_context(|| format!("model endpoint {endpoint}"))?;
            let client = policy
                .client_builder()
                .connect_timeout(std::time::Duration::from_secs(30))
                .build()
                .context("building the HTTP client")?;
            let path = fetch_model(&client, size, &dir, &endpoint)
                .await
                .with_context(|| format!("fetching OlmoEarth v1 {size} from {endpoint}"))?;
            println!("downloaded {} to {}", size.hf_repo(), path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: ModelCommand,
    }

    #[test]
    fn command_line_flags_parse() {
        let cli = Cli::try_parse_from([
            "model",
            "embed",
            "--model",
            "m",
            "--input",
            "i.safetensors",
            "--patch-size",
            "4",
            "--output",
            "o.safetensors",
            "--device",
            "auto",
            "--batch-size",
            "3",
        ])
        .expect("parse");
        match cli.cmd {
            ModelCommand::Embed {
                patch_size,
                batch_size,
                device,
                ..
            } => {
                assert_eq!((patch_size, batch_size, device.as_str()), (4, 3, "auto"));
            }
            other => panic!("parsed {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "model",
            "fetch",
            "base",
            "--dir",
            "/tmp/x",
            "--endpoint",
            "http://h",
        ])
        .expect("parse");
        assert!(matches!(
            cli.cmd,
            ModelCommand::Fetch {
                size: olmoearth::ModelSize::Base,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["model", "fetch", "huge"]).is_err());
        assert!(Cli::try_parse_from(["model", "info", "dir"]).is_ok());
    }
}
