//! Downloading released checkpoints (`config.json` + `weights.pth`) from the Hugging Face hub
//! (or a mirror with the same URL layout).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

use crate::config::ModelSize;
use crate::error::{Error, Result};

/// Default hub endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files a release consists of.
pub const RELEASE_FILES: [&str; 2] = ["config.json", "weights.pth"];

/// The local directory of a size under `root`: `<root>/OlmoEarth-v1-<Size>`.
pub fn model_dir(root: &Path, size: ModelSize) -> PathBuf {
    let repo = size.hf_repo();
    root.join(repo.rsplit('/').next().unwrap_or(repo))
}

/// URL of one release file: `{endpoint}/allenai/OlmoEarth-v1-<Size>/resolve/main/{file}`.
pub fn file_url(endpoint: &str, size: ModelSize, file: &str) -> String {
    format!(
        "{}/{}/resolve/main/{file}",
        endpoint.trim_end_matches('/'),
        size.hf_repo()
    )
}

/// Downloads `config.json` and `weights.pth` of `size` into [`model_dir`]`(root, size)` and returns that
/// directory. Each file goes to a temporary `.part` file first and is renamed when complete, so an
/// interrupted download never leaves a truncated model behind. The caller's `client` decides what
/// may be reached (the command line passes one built under the outbound-request policy).
pub async fn fetch_model(
    client: &reqwest::Client,
    size: ModelSize,
    root: &Path,
    endpoint: &str,
) -> Result<PathBuf> {
    let dir = model_dir(root, size);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
    for file in RELEASE_FILES {
        let url = file_url(endpoint, size, file);
        download(client, &url, &dir.join(file)).await?;
    }
    Ok(dir)
}

async fn download(client: &reqwest::Client, url: &str, dest: &Path) -> Result<()> {
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
    let part = dest.with_extension(format!(
        "{}.part",
        dest.extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
    ));
    let io_err = |source| Error::Io {
        path: part.clone(),
        source,
    };
    let mut f = tokio::fs::File::create(&part).await.map_err(io_err)?;
    let result: Result<()> = async {
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            f.write_all(&chunk).await.map_err(io_err)?;
        }
        f.flush().await.map_err(io_err)?;
        f.sync_all().await.map_err(io_err)?;
        Ok(())
    }
    .await;
    drop(f);
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, dest)
        .await
        .map_err(|source| Error::Io {
            path: dest.to_path_buf(),
            source,
        })?;
    Ok(())
}
