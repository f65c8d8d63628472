//! A filesystem object store with SHA-256 sidecars, verified on read.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};
use synthfleet_core::codec::sha256_hex;
use synthfleet_core::ports::{ObjectInfo, ObjectStore, StoreError};

const BACKEND: &str = "local object store";
const SIDECAR: &str = ".sha256";
const TEMP_MARK: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct LocalObjectStore {
    root: PathBuf,
}

impl LocalObjectStore {
    pub fn new(root: &Path) -> LocalObjectStore {
        LocalObjectStore {
            root: root.to_owned(),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && !key.starts_with('/')
            && !key.ends_with(SIDECAR)
            && !key.contains(TEMP_MARK)
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !valid {
            return Err(StoreError::backend(
                BACKEND,
                format!("resolving key `{key}`"),
                "keys are relative paths without empty, `.` or `..` components",
            ));
        }
        Ok(self.root.join(key))
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIDECAR);
    PathBuf::from(name)
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!("{name}{TEMP_MARK}{}", ulid::Ulid::new()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn io_error(operation: &str, key: &str, e: std::io::Error) -> StoreError {
    StoreError::backend(BACKEND, format!("{operation} `{key}`"), e)
}

#[async_trait]
impl ObjectStore for LocalObjectStore {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            // The sidecar goes first: once the object exists, its checksum does too.
            write_atomic(&sidecar(&path), sha256_hex(&bytes).as_bytes())?;
            write_atomic(&path, &bytes)
        })
        .await
        .map_err(|e| StoreError::backend(BACKEND, "joining a blocking task", e))?
        .map_err(|e| io_error("writing", &key, e))
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    what: format!("object `{key}` (under {})", self.root.display()),
                });
            }
            Err(e) => return Err(io_error("reading", key, e)),
        };
        let expected = tokio::fs::read_to_string(sidecar(&path))
            .await
            .map_err(|e| StoreError::Corrupt {
                what: format!("object `{key}`"),
                detail: format!("its checksum sidecar cannot be read ({e})"),
            })?;
        let actual = sha256_hex(&bytes);
        if expected.trim() != actual {
            return Err(StoreError::Corrupt {
                what: format!("object `{key}`"),
                detail: format!("sha256 is {actual}, expected {}", expected.trim()),
            });
        }
        Ok(bytes)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        for p in [path.clone(), sidecar(&path)] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("deleting", key, e)),
            }
        }
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("listing", &dir.display().to_string(), e)),
                };
                for entry in entries {
                    let entry =
                        entry.map_err(|e| io_error("listing", &dir.display().to_string(), e))?;
                    let path = entry.path();
                    let meta = entry
                        .metadata()
                        .map_err(|e| io_error("stat", &path.display().to_string(), e))?;
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&root) else {
                        continue;
                    };
                    let key = relative.to_string_lossy().replace('\\', "/");
                    if key.ends_with(SIDECAR)
                        || key.contains(TEMP_MARK)
                        || !key.starts_with(prefix.as_str())
                    {
                        continue;
                    }
                    let modified: DateTime<Utc> = meta
                        .modified()
                        .map(DateTime::from)
                        .unwrap_or_else(|_| Utc::now());
                    out.push(ObjectInfo {
                        key,
                        size: meta.len(),
                        modified,
                    });
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::backend(BACKEND, "joining a blocking task", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalObjectStore::new(dir.path());
        store
            .put("a/b/c.json.zst", b"hello".to_vec())
            .await
            .expect("put");
        assert_eq!(store.get("a/b/c.json.zst").await.expect("get"), b"hello");
        let listed = store.list("a/").await.expect("list");
        assert_eq!(
            listed.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
            ["a/b/c.json.zst"]
        );

        std::fs::write(dir.path().join("a/b/c.json.zst"), b"hellO").expect("tamper");
        assert!(matches!(
            store.get("a/b/c.json.zst").await,
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.get("nope").await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(store.put("../escape", vec![]).await.is_err());
        store.delete("a/b/c.json.zst").await.expect("delete");
        assert!(store.list("").await.expect("list").is_empty());
    }
}
