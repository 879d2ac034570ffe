//! `groundwork model …`: `info`, `embed`, `fetch` and `import`.
//!
//! `fetch` downloads a released checkpoint and `import` installs one from a file (for machines without
//! internet). Both check the weights against the published SHA-256 where there is one
//! ([`olmoearth::fetch::PUBLISHED`]) and their structure where there is none, write `checksums.json`
//! beside the files, and, when an object store is configured, upload the checkpoint once to
//! `models/OlmoEarth-v1-<Size>/` so that every worker finds it
//! ([`groundwork_worker::pretrained::ensure_local`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use groundwork_server::objects;
use olmoearth::embed::{EmbedArgs, embed_file};
use olmoearth::fetch::{
    Checksums, DEFAULT_ENDPOINT, FileChecksum, Verification, check_published, check_structure,
    fetch_model, model_dir, published_sha256, release_name, sha256_file,
};
use olmoearth::info::model_info;
use olmoearth::{EncoderConfig, ModelFiles, ModelSize};

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
    /// Download a released v1 model (config.json + weights.pth), check it against the published
    /// hashes, and share it through the object store when one is configured.
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
        /// Object store the workers use (file:///path or s3://bucket): the checkpoint is uploaded to
        /// `models/OlmoEarth-v1-<Size>/` there. Unset: installed in the model directory only.
        #[arg(long, env = "GROUNDWORK_OBJECT_STORE")]
        object_store: Option<String>,
        #[command(flatten)]
        outbound: super::outbound::OutboundOptions,
    },
    /// Install an OlmoEarth v1 checkpoint from a file, for machines without internet: its SHA-256 is
    /// checked against the published hash where there is one and its structure where there is none;
    /// it goes into the model directory and, when an object store is configured, is uploaded once to
    /// `models/OlmoEarth-v1-<Size>/` for every worker.
    Import {
        /// The weights: the release's `weights.pth` or an `encoder.safetensors`.
        file: PathBuf,
        /// The release's config.json (default: the one beside FILE; without one the size is inferred
        /// from the weights).
        #[arg(long)]
        config: Option<PathBuf>,
        /// nano, tiny, base or large: the size FILE must be (default: what its config says).
        #[arg(long)]
        size: Option<ModelSize>,
        /// Install weights whose SHA-256 differs from the published hash (recorded as such).
        #[arg(long)]
        allow_unverified: bool,
        /// Root directory for models.
        #[arg(
            long,
            env = "GROUNDWORK_MODEL_DIR",
            default_value = "./.groundwork/models"
        )]
        dir: PathBuf,
        /// Object store the workers use (file:///path or s3://bucket): the checkpoint is uploaded to
        /// `models/OlmoEarth-v1-<Size>/` there. Unset: installed in the model directory only.
        #[arg(long, env = "GROUNDWORK_OBJECT_STORE")]
        object_store: Option<String>,
    },
}

/// What `model import` is asked to install.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The weights file.
    pub file: PathBuf,
    /// Its config.json, if not beside it.
    pub config: Option<PathBuf>,
    /// The size it must be.
    pub size: Option<ModelSize>,
    /// Install weights that differ from the published hash.
    pub allow_unverified: bool,
    /// The model root.
    pub root: PathBuf,
}

/// What `model import` installed.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The model folder.
    pub dir: PathBuf,
    /// Its `checksums.json`.
    pub checksums: Checksums,
}

/// A line saying how a file was checked.
fn verification_line(size: ModelSize, f: &FileChecksum) -> String {
    let name = release_name(size);
    match f.verification {
        Verification::Published => format!(
            "{name} {} matches the published SHA-256 {}",
            f.name, f.sha256
        ),
        Verification::NoPublishedHash if f.name == "config.json" => {
            format!("{name} {}: sha256 {}", f.name, f.sha256)
        }
        Verification::NoPublishedHash => format!(
            "no published hash for {name} {}; structure checked; sha256 {}",
            f.name, f.sha256
        ),
        Verification::MismatchAllowed => format!(
            "WARNING: {name} {} has SHA-256 {}, not the published {}; installed anyway \
             (--allow-unverified); structure checked",
            f.name,
            f.sha256,
            published_sha256(size, &f.name).unwrap_or("?")
        ),
    }
}

/// Checks and installs a checkpoint file into `<root>/OlmoEarth-v1-<Size>/` (blocking: it hashes and
/// reads the whole file).
///
/// The size is `--size`, else the config's, else the one inferred from the weights. Weights of a size
/// with a published hash must match it (unless `allow_unverified`); weights that were not verified
/// against a published hash must hold every tensor the encoder needs, with its shape, and be of that
/// size. The files are copied through temporary files and renamed into place, other weights files in
/// the folder are removed (the folder holds one checkpoint), and `checksums.json` records the result.
pub fn import_checkpoint(req: &ImportRequest) -> anyhow::Result<Imported> {
    let file = &req.file;
    anyhow::ensure!(
        file.is_file(),
        "{} is not a file: name the checkpoint's weights.pth or encoder.safetensors",
        file.display()
    );
    let config = match &req.config {
        Some(c) => {
            anyhow::ensure!(c.is_file(), "the config {} is not a file", c.display());
            Some(c.clone())
        }
        None => {
            ModelFiles::resolve(file)
                .with_context(|| format!("reading {}", file.display()))?
                .config
        }
    };
    let files = ModelFiles {
        config: config.clone(),
        weights: file.clone(),
    };
    let safetensors = file.extension().is_some_and(|e| e == "safetensors");
    let weights_name = if safetensors {
        "encoder.safetensors"
    } else {
        "weights.pth"
    };
    // The size it claims: the option, else its config's; both when both are given.
    let config_size = match &config {
        Some(c) => {
            let cfg = EncoderConfig::from_file(c)?;
            Some(cfg.size().with_context(|| {
                format!("{} describes no released OlmoEarth v1 size", c.display())
            })?)
        }
        None => None,
    };
    if let (Some(want), Some(got)) = (req.size, config_size) {
        anyhow::ensure!(
            want == got,
            "--size {want} was given, but the config {} describes an OlmoEarth v1 {got} model",
            config
                .as_deref()
                .map_or_else(String::new, |c| c.display().to_string())
        );
    }
    let claimed = req.size.or(config_size);
    let (sha256, bytes) = sha256_file(file)?;
    let mut verification = None;
    if let Some(size) = claimed {
        verification = Some(match check_published(size, weights_name, &sha256) {
            Ok(v) => v,
            Err(e) if req.allow_unverified => {
                tracing::warn!(error = %e, "installing unverified weights (--allow-unverified)");
                Verification::MismatchAllowed
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "refusing to install {} (pass --allow-unverified to install it anyway)",
                    file.display()
                )));
            }
        });
    }
    // Weights the publisher's hash vouches for need no further check; others must be a complete
    // encoder of the claimed size.
    let size = if verification == Some(Verification::Published) {
        claimed.context("a verified file has a size")?
    } else {
        let cfg = check_structure(&files).with_context(|| {
            format!(
                "{} is not a usable OlmoEarth v1 checkpoint (corrupt, truncated or another model)",
                file.display()
            )
        })?;
        let size = cfg.size().context("checked: a released size")?;
        if let Some(want) = claimed {
            anyhow::ensure!(
                want == size,
                "{} holds an OlmoEarth v1 {size} encoder, not {want}",
                file.display()
            );
        }
        if verification.is_none() {
            // The size was inferred from the weights: check them against its published hash now.
            verification = Some(match check_published(size, weights_name, &sha256) {
                Ok(v) => v,
                Err(_) if req.allow_unverified => Verification::MismatchAllowed,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "refusing to install {} (pass --allow-unverified to install it anyway)",
                        file.display()
                    )));
                }
            });
        }
        size
    };
    let verification = verification.unwrap_or(Verification::NoPublishedHash);

    let dir = model_dir(&req.root, size);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entries = Vec::new();
    let mut sources: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(c) = &config {
        let (sha, n) = sha256_file(c)?;
        entries.push(FileChecksum {
            name: "config.json".into(),
            sha256: sha,
            bytes: n,
            // No hash is published for any config.json.
            verification: Verification::NoPublishedHash,
        });
        sources.push((c.clone(), "config.json"));
    }
    entries.push(FileChecksum {
        name: weights_name.into(),
        sha256: sha256.clone(),
        bytes,
        verification,
    });
    sources.push((file.clone(), weights_name));
    // Copy everything beside its destination first, then rename: the config before the weights.
    let mut parts = Vec::new();
    let copied: anyhow::Result<()> = sources.iter().try_for_each(|(src, name)| {
        let part = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4()));
        parts.push(part.clone());
        std::fs::copy(src, &part)
            .with_context(|| format!("copying {} to {}", src.display(), part.display()))?;
        Ok(())
    });
    // The copy must still be the file that was checked.
    let copied = copied.and_then(|()| {
        let (sha, _) = sha256_file(parts.last().context("a weights copy")?)?;
        anyhow::ensure!(
            sha == sha256,
            "{} changed while it was imported",
            file.display()
        );
        Ok(())
    });
    if let Err(e) = copied {
        for p in &parts {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    for (part, (_, name)) in parts.iter().zip(&sources) {
        let dest = dir.join(name);
        std::fs::rename(part, &dest).with_context(|| format!("installing {}", dest.display()))?;
    }
    // One checkpoint per folder: weights of another name, or a config that is not this one's, would
    // be read instead of (or with) the imported file.
    for other in olmoearth::fetch::WEIGHTS_FILES
        .iter()
        .chain(std::iter::once(&"config.json"))
    {
        if sources.iter().all(|(_, n)| n != other) {
            let p = dir.join(other);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("removing the replaced {}", p.display()))?;
            }
        }
    }
    let checksums = Checksums {
        model: release_name(size).to_owned(),
        size,
        source: "import".into(),
        files: entries,
    };
    checksums.write(&dir)?;
    Ok(Imported { dir, checksums })
}

/// Uploads an installed checkpoint to the object store `url` names, when one is configured.
async fn share(url: Option<&str>, dir: &Path, checksums: &Checksums) -> anyhow::Result<()> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        println!(
            "no object store is configured (GROUNDWORK_OBJECT_STORE): installed in {} only; \
             workers with another model directory will not see it",
            dir.display()
        );
        return Ok(());
    };
    let store = objects::open(url)?;
    let keys = groundwork_worker::pretrained::upload(store.as_ref(), dir, checksums)
        .await
        .context("uploading the checkpoint to the object store")?;
    let folder = groundwork_types::keys::PretrainedKeys::new(checksums.size);
    println!(
        "shared through the object store: {}/ ({} files); workers copy it from there",
        folder.folder(),
        keys.len()
    );
    Ok(())
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
            object_store,
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
            let fetched = fetch_model(&client, size, &dir, &endpoint)
                .await
                .with_context(|| format!("fetching OlmoEarth v1 {size} from {endpoint}"))?;
            for f in &fetched.checksums.files {
                println!("{}", verification_line(size, f));
            }
            println!("downloaded {} to {}", size.hf_repo(), fetched.dir.display());
            share(object_store.as_deref(), &fetched.dir, &fetched.checksums).await?;
        }
        ModelCommand::Import {
            file,
            config,
            size,
            allow_unverified,
            dir,
            object_store,
        } => {
            let req = ImportRequest {
                file,
                config,
                size,
                allow_unverified,
                root: dir,
            };
            let imported = tokio::task::spawn_blocking(move || import_checkpoint(&req))
                .await
                .context("import task")??;
            let size = imported.checksums.size;
            for f in &imported.checksums.files {
                println!("{}", verification_line(size, f));
            }
            println!(
                "installed {} in {}",
                release_name(size),
                imported.dir.display()
            );
            share(object_store.as_deref(), &imported.dir, &imported.checksums).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../olmoearth/tests/fixtures/olmoearth-nano")
            .join(name)
    }

    fn request(file: PathBuf, root: &Path) -> ImportRequest {
        ImportRequest {
            file,
            config: None,
            size: None,
            allow_unverified: false,
            root: root.to_path_buf(),
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn import_installs_the_nano_fixture_as_having_no_published_hash() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let imported = import_checkpoint(&request(fixture("weights.pth"), root.path()))?;
        let dir = model_dir(root.path(), ModelSize::Nano);
        assert_eq!(imported.dir, dir);
        assert_eq!(
            listing(&dir),
            ["checksums.json", "config.json", "weights.pth"]
        );
        let c = &imported.checksums;
        assert_eq!((c.size, c.source.as_str()), (ModelSize::Nano, "import"));
        assert!(!c.verified());
        let w = c.weights().expect("weights");
        assert_eq!(w.verification, Verification::NoPublishedHash);
        assert_eq!(w.sha256, sha256_file(&fixture("weights.pth"))?.0);
        let line = verification_line(ModelSize::Nano, w);
        assert!(
            line.starts_with(
                "no published hash for OlmoEarth-v1-Nano weights.pth; structure checked; sha256 "
            ),
            "{line}"
        );
        let stored = Checksums::from_json(&std::fs::read(dir.join("checksums.json"))?, &dir)?;
        assert_eq!(&stored, c);
        // The installed folder is a loadable checkpoint.
        assert_eq!(
            model_info(&dir)?.config.size(),
            Some(ModelSize::Nano),
            "model info"
        );

        // Importing the encoder-only safetensors replaces the weights: one checkpoint per folder.
        let imported = import_checkpoint(&ImportRequest {
            config: Some(fixture("config.json")),
            ..request(fixture("encoder.safetensors"), root.path())
        })?;
        assert_eq!(
            listing(&imported.dir),
            ["checksums.json", "config.json", "encoder.safetensors"]
        );
        Ok(())
    }

    #[test]
    fn import_refuses_a_truncated_checkpoint_and_installs_nothing() -> anyhow::Result<()> {
        let src = tempfile::tempdir()?;
        let root = tempfile::tempdir()?;
        let bytes = std::fs::read(fixture("weights.pth"))?;
        std::fs::write(src.path().join("weights.pth"), &bytes[..bytes.len() / 2])?;
        std::fs::copy(fixture("config.json"), src.path().join("config.json"))?;
        let e = import_checkpoint(&request(src.path().join("weights.pth"), root.path()))
            .expect_err("a truncated file");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("is not a usable OlmoEarth v1 checkpoint"),
            "{msg}"
        );
        let dir = model_dir(root.path(), ModelSize::Nano);
        assert!(listing(&dir).is_empty(), "left behind: {:?}", listing(&dir));
        // A file that is not a checkpoint at all, and a missing one.
        std::fs::write(src.path().join("weights.pth"), b"not a checkpoint")?;
        assert!(import_checkpoint(&request(src.path().join("weights.pth"), root.path())).is_err());
        assert!(import_checkpoint(&request(src.path().join("missing.pth"), root.path())).is_err());
        Ok(())
    }

    #[test]
    fn import_refuses_large_weights_whose_hash_differs_from_the_published_one() -> anyhow::Result<()>
    {
        let src = tempfile::tempdir()?;
        let root = tempfile::tempdir()?;
        let fake = src.path().join("weights.pth");
        std::fs::write(&fake, vec![7u8; 4096])?;
        let req = ImportRequest {
            size: Some(ModelSize::Large),
            ..request(fake.clone(), root.path())
        };
        let msg = format!("{:#}", import_checkpoint(&req).expect_err("a wrong hash"));
        assert!(
            msg.contains("OlmoEarth-v1-Large weights.pth")
                && msg.contains(published_sha256(ModelSize::Large, "weights.pth").unwrap_or("?"))
                && msg.contains("--allow-unverified"),
            "{msg}"
        );
        // Allowed, it must still be a Large encoder, which this file is not.
        let msg = format!(
            "{:#}",
            import_checkpoint(&ImportRequest {
                allow_unverified: true,
                ..req
            })
            .expect_err("not a checkpoint")
        );
        assert!(
            msg.contains("is not a usable OlmoEarth v1 checkpoint"),
            "{msg}"
        );
        // The Nano fixture claimed as Large: its config says otherwise.
        let msg = format!(
            "{:#}",
            import_checkpoint(&ImportRequest {
                size: Some(ModelSize::Large),
                ..request(fixture("weights.pth"), root.path())
            })
            .expect_err("not Large")
        );
        assert!(
            msg.contains("describes an OlmoEarth v1 nano model"),
            "{msg}"
        );
        assert!(listing(&model_dir(root.path(), ModelSize::Large)).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn an_imported_checkpoint_is_shared_through_the_object_store() -> anyhow::Result<()> {
        let root = tempfile::tempdir()?;
        let objects = tempfile::tempdir()?;
        let imported = import_checkpoint(&request(fixture("weights.pth"), root.path()))?;
        let url = format!("file://{}", objects.path().display());
        share(Some(&url), &imported.dir, &imported.checksums).await?;
        let folder = objects.path().join("models/OlmoEarth-v1-Nano");
        assert_eq!(
            listing(&folder),
            ["checksums.json", "config.json", "weights.pth"]
        );
        assert_eq!(
            std::fs::read(folder.join("weights.pth"))?,
            std::fs::read(fixture("weights.pth"))?
        );
        // A worker with an empty model folder copies it from there.
        let store = objects::open(&url)?;
        let worker_root = tempfile::tempdir()?;
        let got = groundwork_worker::pretrained::ensure_local(
            Some(store.as_ref()),
            Some(worker_root.path()),
            ModelSize::Nano,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        assert_eq!(
            got,
            groundwork_worker::pretrained::Local::Downloaded(model_dir(
                worker_root.path(),
                ModelSize::Nano
            ))
        );
        Ok(())
    }

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
