//! The object store: `file:///path` (default `./.groundwork/objects`) or `s3://bucket` with the
//! endpoint and credentials from the standard `AWS_*` environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`).

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use std::path::Path;
use std::sync::Arc;

/// Opens the store named by `url`.
pub fn open(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the object store folder {path}"))?;
        let fs = LocalFileSystem::new_with_prefix(Path::new(path))
            .with_context(|| format!("opening the object store folder {path}"))?;
        return Ok(Arc::new(fs));
    }
    if let Some(bucket) = url.strip_prefix("s3://") {
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            bail!("an S3 object store URL is s3://BUCKET (no path)");
        }
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .context("configuring the S3 object store (check the AWS_* environment variables)")?;
        return Ok(Arc::new(s3));
    }
    bail!("unsupported object store URL: use file:///path or s3://bucket")
}

/// `file://` URL of a folder relative to the working directory.
pub fn default_url() -> String {
    let dir = std::env::current_dir()
        .unwrap_or_default()
        .join(".groundwork/objects");
    format!("file://{}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::path::Path as ObjPath;

    #[tokio::test]
    async fn file_store_round_trips_and_bad_urls_are_refused() {
        let dir = tempfile_dir();
        let store = open(&format!("file://{}", dir.display())).unwrap();
        let key = ObjPath::from("orgs/o/projects/p/x.bin");
        store.put(&key, vec![1u8, 2, 3].into()).await.unwrap();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), &[1, 2, 3]);
        assert!(dir.join("orgs/o/projects/p/x.bin").exists());
        assert!(open("ftp://x").is_err());
        assert!(open("s3://bucket/with/path").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("gw-objects-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
