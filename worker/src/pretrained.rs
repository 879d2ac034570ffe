//! Pretrained OlmoEarth checkpoints shared through the object store.
//!
//! `groundwork model import` and `groundwork model fetch` install a checkpoint into the local model
//! folder (`<GROUNDWORK_MODEL_DIR>/OlmoEarth-v1-<Size>/`) and [`upload`] it once to
//! `models/OlmoEarth-v1-<Size>/` ([`PretrainedKeys`]), `checksums.json` last. A worker whose model
//! folder lacks the checkpoint a step needs downloads it from there ([`ensure_local`]): each file to a
//! temporary `.part` file, its SHA-256 checked against the stored `checksums.json`, then renamed into
//! place, so a worker never loads a half-copied or altered checkpoint.

use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::StreamExt;
use groundwork_types::ModelSize;
use groundwork_types::keys::PretrainedKeys;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use olmoearth::fetch::{CHECKSUMS_FILE, Checksums, model_dir};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::StepError;

/// The largest checkpoint a worker copies from the object store (the Large release is 2.67 GB).
pub const MAX_CHECKPOINT_BYTES: u64 = 16 << 30;

/// Largest `checksums.json` read.
const MAX_CHECKSUMS_BYTES: usize = 64 << 10;

/// Whether the checkpoint of `size` is already in the local model folder `root`: in
/// `root/OlmoEarth-v1-<Size>/`, or `root` itself holding a checkpoint whose `config.json` is of `size`.
#[must_use]
pub fn has_local(root: &Path, size: ModelSize) -> bool {
    if olmoearth::ModelFiles::resolve(&model_dir(root, size)).is_ok() {
        return true;
    }
    olmoearth::ModelFiles::resolve(root).is_ok_and(|f| {
        f.config.is_some_and(|c| {
            olmoearth::EncoderConfig::from_file(&c).is_ok_and(|cfg| cfg.size() == Some(size))
        })
    })
}

/// Uploads the checkpoint in `dir` (the files `checksums` lists) to the shared keys of its size,
/// streaming each file and checking that it still hashes to what `checksums` records; `checksums.json`
/// goes last, so readers see a checkpoint only once all of it is there.
pub async fn upload(
    store: &dyn ObjectStore,
    dir: &Path,
    checksums: &Checksums,
) -> anyhow::Result<Vec<String>> {
    let keys = PretrainedKeys::new(checksums.size);
    let mut written = Vec::new();
    for f in &checksums.files {
        let path = dir.join(&f.name);
        let key = keys.file(&f.name);
        let mut file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let upload = store
            .put_multipart(&ObjectPath::from(key.as_str()))
            .await
            .with_context(|| format!("starting the upload of {key}"))?;
        let mut w = WriteMultipart::new(upload);
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 4 << 20];
        let read: anyhow::Result<()> = async {
            loop {
                let n = file
                    .read(&mut buf)
                    .await
                    .with_context(|| format!("reading {}", path.display()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                w.wait_for_capacity(4)
                    .await
                    .with_context(|| format!("uploading {key}"))?;
                w.write(&buf[..n]);
            }
            Ok(())
        }
        .await;
        let sha = hex(&h.finalize());
        if let Err(e) = read {
            let _ = w.abort().await;
            return Err(e);
        }
        if sha != f.sha256 {
            let _ = w.abort().await;
            anyhow::bail!(
                "{} changed while it was uploaded (SHA-256 {sha}, recorded {})",
                path.display(),
                f.sha256
            );
        }
        w.finish()
            .await
            .with_context(|| format!("uploading {key}"))?;
        written.push(key);
    }
    let key = keys.checksums();
    let body = serde_json::to_vec_pretty(checksums)?;
    store
        .put(&ObjectPath::from(key.as_str()), body.into())
        .await
        .with_context(|| format!("uploading {key}"))?;
    written.push(key);
    Ok(written)
}

/// What [`ensure_local`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// The model folder already had the checkpoint.
    Present,
    /// It was copied from the object store into this folder.
    Downloaded(PathBuf),
    /// Neither the model folder nor the object store has it (or the worker has no model folder).
    Absent,
}

/// One copy at a time per process: steps that need the same missing checkpoint wait for the first
/// one's copy instead of each downloading it.
static COPYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure the checkpoint of `size` is in the local model folder `root`, copying it from the object
/// store's shared keys when the folder lacks it and the store has it.
///
/// The store being unreachable is retryable; a stored checkpoint that does not match its own
/// `checksums.json` (or is malformed or too large) is permanent: it must be imported again.
pub async fn ensure_local(
    store: Option<&dyn ObjectStore>,
    root: Option<&Path>,
    size: ModelSize,
) -> Result<Local, StepError> {
    let (Some(store), Some(root)) = (store, root) else {
        return Ok(match root {
            Some(root) if has_local(root, size) => Local::Present,
            _ => Local::Absent,
        });
    };
    let _guard = COPYING.lock().await;
    if has_local(root, size) {
        return Ok(Local::Present);
    }
    let keys = PretrainedKeys::new(size);
    let key = keys.checksums();
    let stored = match store.get(&ObjectPath::from(key.as_str())).await {
        Ok(r) => r
            .bytes()
            .await
            .with_context(|| format!("reading {key}"))
            .map_err(StepError::Retryable)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Local::Absent),
        Err(e) => {
            return Err(StepError::Retryable(
                anyhow::Error::new(e).context(format!("reading {key}")),
            ));
        }
    };
    let corrupt = |e: anyhow::Error| {
        StepError::Permanent(e.context(format!(
            "the shared {} checkpoint in the object store is unusable; import it again with \
             `groundwork model import`",
            size.release_name()
        )))
    };
    if stored.len() > MAX_CHECKSUMS_BYTES {
        return Err(corrupt(anyhow::anyhow!("{key} is too large")));
    }
    let checksums = Checksums::from_json(&stored, Path::new(&key))
        .map_err(|e| corrupt(anyhow::Error::new(e)))?;
    if checksums.size != size {
        return Err(corrupt(anyhow::anyhow!(
            "{key} describes a {} model",
            checksums.size
        )));
    }
    let total: u64 = checksums.files.iter().map(|f| f.bytes).sum();
    if total > MAX_CHECKPOINT_BYTES {
        return Err(corrupt(anyhow::anyhow!(
            "its files hold {total} bytes, more than the {MAX_CHECKPOINT_BYTES} a worker copies"
        )));
    }
    let dir = model_dir(root, size);
    tokio::fs::create_dir_all(&dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))
        .map_err(StepError::Retryable)?;
    let mut parts = Parts(Vec::new());
    for f in &checksums.files {
        let part = dir.join(format!(".{}.{}.part", f.name, uuid::Uuid::new_v4()));
        parts.0.push((part.clone(), dir.join(&f.name)));
        copy_file(store, &keys.file(&f.name), &part, f).await?;
    }
    // The config first, the weights last: a folder with weights is a complete checkpoint.
    parts
        .0
        .sort_by_key(|(_, dest)| !dest.ends_with("config.json"));
    for (part, dest) in &parts.0 {
        tokio::fs::rename(part, dest)
            .await
            .with_context(|| format!("installing {}", dest.display()))
            .map_err(StepError::Retryable)?;
    }
    parts.0.clear();
    let written = {
        let (c, d) = (checksums.clone(), dir.clone());
        tokio::task::spawn_blocking(move || c.write(&d)).await
    };
    if let Err(e) = written
        .map_err(anyhow::Error::new)
        .and_then(|r| r.map_err(Into::into))
    {
        tracing::warn!(error = %e, "could not write {CHECKSUMS_FILE} beside the copied checkpoint");
    }
    tracing::info!(dir = %dir.display(), "copied the shared {} checkpoint from the object store", size.release_name());
    Ok(Local::Downloaded(dir))
}

/// Temporary files removed unless installed (also when the step is dropped mid-copy).
struct Parts(Vec<(PathBuf, PathBuf)>);

impl Drop for Parts {
    fn drop(&mut self) {
        for (part, _) in &self.0 {
            let _ = std::fs::remove_file(part);
        }
    }
}

/// Streams `key` into `part`, checking its length and SHA-256 against `expected`.
async fn copy_file(
    store: &dyn ObjectStore,
    key: &str,
    part: &Path,
    expected: &olmoearth::fetch::FileChecksum,
) -> Result<(), StepError> {
    let retry = |e: anyhow::Error| StepError::Retryable(e);
    let got = match store.get(&ObjectPath::from(key)).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(StepError::Permanent(anyhow::anyhow!(
                "{key} is missing although the shared checkpoint's checksums.json lists it; import \
                 the checkpoint again with `groundwork model import`"
            )));
        }
        Err(e) => {
            return Err(retry(
                anyhow::Error::new(e).context(format!("reading {key}")),
            ));
        }
    };
    let mut out = tokio::fs::File::create(part)
        .await
        .with_context(|| format!("creating {}", part.display()))
        .map_err(retry)?;
    let mut stream = got.into_stream();
    let mut h = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .with_context(|| format!("reading {key}"))
            .map_err(retry)?;
        n += chunk.len() as u64;
        if n > expected.bytes {
            break;
        }
        h.update(&chunk);
        out.write_all(&chunk)
            .await
            .with_context(|| format!("writing {}", part.display()))
            .map_err(retry)?;
    }
    out.flush()
        .await
        .and(out.sync_all().await)
        .with_context(|| format!("writing {}", part.display()))
        .map_err(retry)?;
    let sha = hex(&h.finalize());
    if n != expected.bytes || sha != expected.sha256 {
        return Err(StepError::Permanent(anyhow::anyhow!(
            "{key} does not match the shared checkpoint's checksums.json (expected {} bytes with \
             SHA-256 {}, read {n} bytes{}); import the checkpoint again with `groundwork model import`",
            expected.bytes,
            expected.sha256,
            if n == expected.bytes {
                format!(" with SHA-256 {sha}")
            } else {
                String::new()
            }
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
