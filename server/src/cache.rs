//! The server's local file cache of output rasters (tiles and downloads are rendered from local
//! copies): a private folder (mode 0700) under the data folder, capped in size, least recently used
//! files evicted first.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Default size cap of [`FileCache`]: 2 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 2 << 30;

/// A capped folder of files named by object key.
#[derive(Debug)]
pub struct FileCache {
    dir: PathBuf,
    cap_bytes: u64,
    /// Serialises eviction passes.
    evicting: std::sync::Mutex<()>,
}

impl FileCache {
    /// A cache in `dir` (created on first use, mode 0700) holding at most `cap_bytes`.
    #[must_use]
    pub fn new(dir: PathBuf, cap_bytes: u64) -> Self {
        Self {
            dir,
            cap_bytes,
            evicting: std::sync::Mutex::new(()),
        }
    }

    /// A cache in a fresh private folder under the system's temporary directory (for a server built
    /// without a data folder, as in tests).
    #[must_use]
    pub fn private_temp() -> Self {
        Self::new(
            std::env::temp_dir().join(format!("groundwork-cache-{}", uuid::Uuid::new_v4())),
            DEFAULT_CACHE_BYTES,
        )
    }

    /// The folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `key` is kept (a flat, safe file name).
    fn path_of(&self, key: &str) -> PathBuf {
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(name)
    }

    fn ensure_dir(&self) -> io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(&self.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// The cached file of `key`, marked as just used; `None` when it is not cached.
    pub fn get(&self, key: &str) -> Option<PathBuf> {
        let path = self.path_of(key);
        let file = std::fs::File::options().write(true).open(&path).ok()?;
        // The modification time records the last use (access times are often not kept).
        let _ = file.set_modified(SystemTime::now());
        Some(path)
    }

    /// Stores `bytes` as `key` (atomically: readers never see a partial file), then evicts the least
    /// recently used other files while the folder is over its cap.
    pub fn put(&self, key: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        self.ensure_dir()?;
        let path = self.path_of(key);
        let tmp = self
            .dir
            .join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)?;
        self.evict(&path);
        Ok(path)
    }

    /// Removes the cached copies of every key under `prefix` (a deleted project's).
    pub fn remove_prefix(&self, prefix: &str) {
        let Some(flat) = self
            .path_of(prefix)
            .file_name()
            .map(std::ffi::OsStr::to_owned)
        else {
            return;
        };
        let flat = flat.to_string_lossy().into_owned() + "_";
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(&flat) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Removes the least recently used files (never `keep`) until the folder fits its cap.
    fn evict(&self, keep: &Path) {
        let Ok(_guard) = self.evicting.lock() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                m.is_file().then(|| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.cap_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }
}

impl Drop for FileCache {
    fn drop(&mut self) {
        // A temporary cache goes with its server; one under the data folder stays for the next start.
        if self
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("groundwork-cache-"))
        {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cache_is_private_capped_and_evicts_the_least_recently_used() {
        let root = tempfile::tempdir().expect("a temporary folder");
        let cache = FileCache::new(root.path().join("cache"), 10);
        let a = cache.put("orgs/a/x.tif", &[1; 4]).expect("put a");
        std::thread::sleep(Duration::from_millis(20));
        let b = cache.put("orgs/b/y.tif", &[2; 4]).expect("put b");
        std::thread::sleep(Duration::from_millis(20));
        // Using `a` makes `b` the least recently used.
        assert_eq!(cache.get("orgs/a/x.tif"), Some(a.clone()));
        std::thread::sleep(Duration::from_millis(20));
        let c = cache.put("orgs/c/z.tif", &[3; 4]).expect("put c");
        assert!(a.exists() && c.exists());
        assert!(!b.exists(), "the least recently used file stays");
        assert_eq!(cache.get("orgs/b/y.tif"), None);
        // Keys are flattened inside the folder: no key names a path outside it.
        let d = cache.put("../../etc/passwd", &[4; 1]).expect("put d");
        assert_eq!(d.parent(), Some(cache.dir()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(cache.dir())
                .expect("the folder")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        // A deleted project's copies go, and no other's.
        cache.remove_prefix("orgs/a");
        assert!(!a.exists() && c.exists());
        // A file larger than the cap is kept while it is the one just written.
        let big = cache.put("big", &[5; 64]).expect("put big");
        assert!(big.exists());
    }
}
