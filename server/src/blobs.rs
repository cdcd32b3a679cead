//! The blob store: modules, datasets and job outputs, behind `object_store`
//! (a local directory by default; S3, GCS or Azure work the same way).
//! Uploads and downloads stream; no file is ever held whole in memory.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};

/// Blob store handle.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
}

/// A byte stream.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;

fn path(key: &str) -> anyhow::Result<Path> {
    Path::parse(key).map_err(|e| anyhow::anyhow!("invalid blob path {key:?}: {e}"))
}

impl Blobs {
    /// Blobs in a local directory.
    pub fn local(dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Blobs {
            // A write is on disk (the file and the directory entries that
            // name it) before it is acknowledged, as with a remote store.
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?.with_fsync(true)),
        })
    }

    /// Writes `key` from a stream, at most `limit` bytes; returns the size.
    /// Nothing is visible under `key` until the whole stream is in.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        mut body: S,
        limit: u64,
    ) -> anyhow::Result<Result<u64, u64>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut writer = object_store::buffered::BufWriter::new(self.store.clone(), path(key)?);
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    let _ = writer.abort().await;
                    return Err(anyhow::anyhow!(err.into()).context("reading the upload"));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                let _ = writer.abort().await;
                return Ok(Err(limit));
            }
            writer.put(chunk).await?;
        }
        tokio::io::AsyncWriteExt::shutdown(&mut writer).await?;
        Ok(Ok(size))
    }

    /// Writes `key` from memory.
    pub async fn put(&self, key: &str, bytes: Bytes) -> anyhow::Result<()> {
        self.store.put(&path(key)?, bytes.into()).await?;
        Ok(())
    }

    /// Reads `key` whole (for small blobs such as modules).
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<Bytes>> {
        match self.store.get(&path(key)?).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Size of `key`.
    pub async fn size(&self, key: &str) -> anyhow::Result<Option<u64>> {
        match self.store.head(&path(key)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Streams `key` from `start` to `end` (exclusive; `None` = the end).
    /// Returns the object size and the stream, or `None` if absent.
    pub async fn get_range(
        &self,
        key: &str,
        start: u64,
        end: Option<u64>,
    ) -> anyhow::Result<Option<(u64, ByteStream)>> {
        // No range for the whole object: a range starting at 0 of an
        // empty object is an error to object_store.
        let range = match end {
            Some(end) => Some(GetRange::Bounded(start..end)),
            None if start == 0 => None,
            None => Some(GetRange::Offset(start)),
        };
        let options = GetOptions {
            range,
            ..GetOptions::default()
        };
        match self.store.get_opts(&path(key)?, options).await {
            Ok(result) => {
                let size = result.meta.size;
                let stream = result.into_stream().map_err(std::io::Error::other).boxed();
                Ok(Some((size, stream)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes `key`; absent is fine.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes everything under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<()> {
        let prefix = path(prefix)?;
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let _ = self.store.delete(&meta.location).await;
        }
        Ok(())
    }
}
