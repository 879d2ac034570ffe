//! Released checkpoints: downloading them (`config.json` + `weights.pth`) from the Hugging Face hub (or
//! a mirror with the same URL layout), the SHA-256 hashes the publisher gives for them, and the
//! `checksums.json` that records, beside an installed model, what each file hashes to and whether that
//! was checked against a published hash.
//!
//! Only one hash is published so far: OlmoEarth-v1-Large's `weights.pth`. For the other files there is
//! none to check against; the files are then only checked for structure (every tensor the encoder needs,
//! with its shape), and `checksums.json` says so.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::checkpoint::ModelFiles;
use crate::config::{EncoderConfig, ModelSize};
use crate::error::{Error, Result};

/// Default hub endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files a release consists of.
pub const RELEASE_FILES: [&str; 2] = ["config.json", "weights.pth"];

/// Names a weights file of an installed model may have ([`ModelFiles::resolve`] looks for them).
pub const WEIGHTS_FILES: [&str; 3] = ["weights.pth", "encoder.safetensors", "model.safetensors"];

/// The record of an installed model's files, beside them.
pub const CHECKSUMS_FILE: &str = "checksums.json";

/// A release file whose SHA-256 its publisher gives.
#[derive(Debug, Clone, Copy)]
pub struct PublishedFile {
    /// The model.
    pub size: ModelSize,
    /// The file in the release.
    pub file: &'static str,
    /// Its SHA-256, lower-case hex.
    pub sha256: &'static str,
    /// About how large it is, for messages.
    pub approx_size: &'static str,
}

/// Every release file with a published SHA-256. Sizes and files not listed have none: they are
/// checked for structure only (never against a hash made up here).
pub const PUBLISHED: &[PublishedFile] = &[PublishedFile {
    size: ModelSize::Large,
    file: "weights.pth",
    sha256: "1adb5026bd520c54bc415a1282386954927623bab81d01be2f5b6379cc039035",
    approx_size: "2.67 GB",
}];

/// The published SHA-256 of `file` of the release of `size`, when there is one.
pub fn published_sha256(size: ModelSize, file: &str) -> Option<&'static str> {
    PUBLISHED
        .iter()
        .find(|p| p.size == size && p.file == file)
        .map(|p| p.sha256)
}

/// How a file's SHA-256 was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// It equals the hash the publisher gives for this file.
    Published,
    /// No hash is published for this file: only its structure was checked.
    NoPublishedHash,
    /// It differs from the published hash, and whoever installed it said to accept that
    /// (`groundwork model import --allow-unverified`).
    MismatchAllowed,
}

impl Verification {
    /// In words, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Verification::Published => "matches the published hash",
            Verification::NoPublishedHash => "no published hash; structure checked",
            Verification::MismatchAllowed => {
                "DIFFERS from the published hash (accepted with --allow-unverified)"
            }
        }
    }
}

/// Checks `sha256` of `file` of `size` against the published hash: [`Verification::Published`] when it
/// matches, [`Verification::NoPublishedHash`] when none is published, [`Error::HashMismatch`] when it
/// differs.
pub fn check_published(size: ModelSize, file: &str, sha256: &str) -> Result<Verification> {
    match published_sha256(size, file) {
        None => Ok(Verification::NoPublishedHash),
        Some(expected) if expected.eq_ignore_ascii_case(sha256) => Ok(Verification::Published),
        Some(expected) => Err(Error::HashMismatch {
            what: format!("{} {file}", release_name(size)),
            expected: expected.to_owned(),
            got: sha256.to_owned(),
        }),
    }
}

/// `OlmoEarth-v1-<Size>`: the release's name, its folder under a model root and in the object store.
pub fn release_name(size: ModelSize) -> &'static str {
    size.release_name()
}

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChecksum {
    /// File name in the model folder (`config.json`, `weights.pth`, `encoder.safetensors`, …).
    pub name: String,
    /// SHA-256, lower-case hex.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
    /// How the hash was checked.
    pub verification: Verification,
}

/// `checksums.json`: what an installed model's files hash to and how that was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    /// `OlmoEarth-v1-<Size>`.
    pub model: String,
    /// Its size.
    pub size: ModelSize,
    /// How it was installed: `fetch` (downloaded from the hub) or `import` (from a file).
    pub source: String,
    /// Every file of the model.
    pub files: Vec<FileChecksum>,
}

impl Checksums {
    /// The weights file's entry.
    pub fn weights(&self) -> Option<&FileChecksum> {
        self.files
            .iter()
            .find(|f| WEIGHTS_FILES.contains(&f.name.as_str()))
    }

    /// Whether the weights were checked against a published hash and matched it.
    pub fn verified(&self) -> bool {
        self.weights()
            .is_some_and(|f| f.verification == Verification::Published)
    }

    /// Reads a `checksums.json`, checking that it names only files a model folder holds (so its names
    /// are safe to join to a folder) and has one weights file.
    pub fn from_json(bytes: &[u8], what: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::ConfigInvalid {
            path: what.to_path_buf(),
            reason,
        };
        let c: Checksums = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        for f in &c.files {
            if f.name != "config.json" && !WEIGHTS_FILES.contains(&f.name.as_str()) {
                return Err(invalid(format!("names an unexpected file {:?}", f.name)));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "the hash of {} is not SHA-256 hex",
                    f.name
                )));
            }
        }
        if c.files.iter().filter(|f| f.name != "config.json").count() != 1 {
            return Err(invalid("must list exactly one weights file".into()));
        }
        if c.model != release_name(c.size) {
            return Err(invalid(format!(
                "model {:?} does not match size {}",
                c.model, c.size
            )));
        }
        Ok(c)
    }

    /// Writes it to `dir/checksums.json` (through a temporary file and a rename).
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(CHECKSUMS_FILE);
        let part = dir.join(format!("{CHECKSUMS_FILE}.part"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::ConfigInvalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::write(&part, text).map_err(io)?;
        std::fs::rename(&part, &path).map_err(io)?;
        Ok(path)
    }
}

/// SHA-256 (lower-case hex) and length of a file, read in blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Checks that `files` is a usable OlmoEarth v1 checkpoint: the config reads (or is inferred from the
/// weights), names a released size, and the weights hold every tensor the encoder needs with its shape.
/// Returns the configuration.
pub fn check_structure(files: &ModelFiles) -> Result<EncoderConfig> {
    let (cfg, sd) = files.load()?;
    if cfg.size().is_none() {
        return Err(Error::CheckpointRead {
            path: files.weights.clone(),
            reason: format!(
                "D={}, depth={}, heads={} is no released OlmoEarth v1 size",
                cfg.embedding_size, cfg.depth, cfg.num_heads
            ),
        });
    }
    sd.encoder_tensors(&cfg, candle_core::DType::F32, &candle_core::Device::Cpu)?;
    Ok(cfg)
}

/// The local directory of a size under `root`: `<root>/OlmoEarth-v1-<Size>`.
pub fn model_dir(root: &Path, size: ModelSize) -> PathBuf {
    root.join(release_name(size))
}

/// URL of one release file: `{endpoint}/allenai/OlmoEarth-v1-<Size>/resolve/main/{file}`.
pub fn file_url(endpoint: &str, size: ModelSize, file: &str) -> String {
    format!(
        "{}/{}/resolve/main/{file}",
        endpoint.trim_end_matches('/'),
        size.hf_repo()
    )
}

/// What [`fetch_model`] installed.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The model folder, [`model_dir`]`(root, size)`.
    pub dir: PathBuf,
    /// What was written to its `checksums.json`.
    pub checksums: Checksums,
}

/// Downloads `config.json` and `weights.pth` of `size` into [`model_dir`]`(root, size)`, hashing each
/// file as it arrives, and writes `checksums.json` beside them.
///
/// A file whose SHA-256 differs from its published hash is refused ([`Error::HashMismatch`]); a file
/// without a published hash is accepted only when the model's structure checks out
/// ([`check_structure`]). Every file goes to a temporary `.part` file first, and the files are renamed
/// into place only when all of them have arrived and passed, so an interrupted or refused download
/// never leaves a truncated or unverified model behind. The caller's `client` decides what may be
/// reached (the command line passes one built under the outbound-request policy).
pub async fn fetch_model(
    client: &reqwest::Client,
    size: ModelSize,
    root: &Path,
    endpoint: &str,
) -> Result<Fetched> {
    let dir = model_dir(root, size);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    let mut parts: Vec<(PathBuf, PathBuf)> = Vec::new();
    let result = fetch_parts(client, size, &dir, endpoint, &mut parts).await;
    if result.is_err() {
        for (part, _) in &parts {
            let _ = tokio::fs::remove_file(part).await;
        }
    }
    let files = result?;
    for (part, dest) in &parts {
        tokio::fs::rename(part, dest)
            .await
            .map_err(|source| Error::Io {
                path: dest.clone(),
                source,
            })?;
    }
    let checksums = Checksums {
        model: release_name(size).to_owned(),
        size,
        source: "fetch".into(),
        files,
    };
    let c = checksums.clone();
    let d = dir.clone();
    tokio::task::spawn_blocking(move || c.write(&d))
        .await
        .map_err(|e| Error::InvalidInput(format!("writing checksums: {e}")))??;
    Ok(Fetched { dir, checksums })
}

/// Downloads every release file to its `.part` (listed in `parts` as it is created) and checks them.
async fn fetch_parts(
    client: &reqwest::Client,
    size: ModelSize,
    dir: &Path,
    endpoint: &str,
    parts: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<Vec<FileChecksum>> {
    let mut files = Vec::new();
    let mut structure_needed = false;
    for file in RELEASE_FILES {
        let url = file_url(endpoint, size, file);
        let dest = dir.join(file);
        let part = dir.join(format!("{file}.part"));
        parts.push((part.clone(), dest));
        let (sha256, bytes) = download(client, &url, &part).await?;
        let verification = check_published(size, file, &sha256)?;
        structure_needed |= file != "config.json" && verification != Verification::Published;
        files.push(FileChecksum {
            name: file.to_owned(),
            sha256,
            bytes,
            verification,
        });
    }
    if structure_needed {
        let files = ModelFiles {
            config: Some(dir.join("config.json.part")),
            weights: dir.join("weights.pth.part"),
        };
        let cfg = tokio::task::spawn_blocking(move || check_structure(&files))
            .await
            .map_err(|e| Error::InvalidInput(format!("checking the checkpoint: {e}")))??;
        if cfg.size() != Some(size) {
            return Err(Error::InvalidInput(format!(
                "the downloaded {} is an OlmoEarth v1 {} model",
                release_name(size),
                cfg.size().map_or("custom", ModelSize::name)
            )));
        }
    }
    Ok(files)
}

/// Streams `url` into `part`, returning its SHA-256 and length.
async fn download(client: &reqwest::Client, url: &str, part: &Path) -> Result<(String, u64)> {
    let fail = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let io_err = |source| Error::Io {
        path: part.to_path_buf(),
        source,
    };
    let mut f = tokio::fs::File::create(part).await.map_err(io_err)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        h.update(&chunk);
        n += chunk.len() as u64;
        f.write_all(&chunk).await.map_err(io_err)?;
    }
    f.flush().await.map_err(io_err)?;
    f.sync_all().await.map_err(io_err)?;
    Ok((hex::encode(h.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_large_weights_have_a_published_hash_and_a_wrong_one_is_refused() {
        let large = "1adb5026bd520c54bc415a1282386954927623bab81d01be2f5b6379cc039035";
        assert_eq!(
            published_sha256(ModelSize::Large, "weights.pth"),
            Some(large)
        );
        for size in [ModelSize::Nano, ModelSize::Tiny, ModelSize::Base] {
            assert_eq!(published_sha256(size, "weights.pth"), None, "{size}");
        }
        assert_eq!(published_sha256(ModelSize::Large, "config.json"), None);
        assert_eq!(
            check_published(ModelSize::Large, "weights.pth", large).ok(),
            Some(Verification::Published)
        );
        assert_eq!(
            check_published(ModelSize::Large, "weights.pth", &large.to_uppercase()).ok(),
            Some(Verification::Published)
        );
        assert_eq!(
            check_published(ModelSize::Nano, "weights.pth", &"0".repeat(64)).ok(),
            Some(Verification::NoPublishedHash)
        );
        let e = check_published(ModelSize::Large, "weights.pth", &"0".repeat(64))
            .expect_err("a wrong hash");
        let msg = e.to_string();
        assert!(
            msg.contains("OlmoEarth-v1-Large weights.pth") && msg.contains(large),
            "{msg}"
        );
    }

    #[test]
    fn a_checksums_file_naming_a_path_or_two_weights_files_is_refused() {
        let ok = Checksums {
            model: "OlmoEarth-v1-Nano".into(),
            size: ModelSize::Nano,
            source: "import".into(),
            files: vec![
                FileChecksum {
                    name: "config.json".into(),
                    sha256: "a".repeat(64),
                    bytes: 1,
                    verification: Verification::NoPublishedHash,
                },
                FileChecksum {
                    name: "weights.pth".into(),
                    sha256: "b".repeat(64),
                    bytes: 2,
                    verification: Verification::NoPublishedHash,
                },
            ],
        };
        let path = Path::new("checksums.json");
        let bytes = serde_json::to_vec(&ok).expect("json");
        let back = Checksums::from_json(&bytes, path).expect("valid");
        assert_eq!(back, ok);
        assert!(!back.verified());
        assert_eq!(back.weights().map(|f| f.name.as_str()), Some("weights.pth"));
        let mut bad = ok.clone();
        bad.files[1].name = "../../etc/passwd".into();
        let bytes = serde_json::to_vec(&bad).expect("json");
        assert!(Checksums::from_json(&bytes, path).is_err());
        let mut bad = ok.clone();
        bad.files.push(FileChecksum {
            name: "encoder.safetensors".into(),
            ..ok.files[1].clone()
        });
        let bytes = serde_json::to_vec(&bad).expect("json");
        assert!(Checksums::from_json(&bytes, path).is_err());
        let mut bad = ok;
        bad.model = "OlmoEarth-v1-Large".into();
        let bytes = serde_json::to_vec(&bad).expect("json");
        assert!(Checksums::from_json(&bytes, path).is_err());
    }
}
