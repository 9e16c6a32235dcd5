//! The new chunks of an incremental backup on its way to S3, sent as they land in the local
//! staging store (`chunks::sending`) instead of all after the backup is made: the uploads run
//! beside the snapshot's download and chunking, at most `AT_ONCE` at a time. A chunk is sent once
//! it is complete under its name locally (renamed into place) and its bytes, read back, pass the
//! check every reader makes (decrypted, decompressed, content against name): nothing
//! unchecked leaves, as when chunks were sent after the run's verification. In a store of pack
//! files each checked chunk goes into the run's `Packer` instead of an object of its own. The
//! run that made it waits for every upload before it sends the backup's indexes and manifest
//! (`finish`, then the packer's), and a failed upload stops the run at its next chunk. What a
//! failed or killed run sent is garbage until the next night reuses it or a prune collects it,
//! as before.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::import::{object_name, save_chunk};
use super::tasks::Tasks;
use super::{ChunkId, ChunkStore, Packer};
use crate::backend::Backend;

/// Uploads at once (each a request).
const AT_ONCE: usize = 8;

pub struct Courier {
    backend: Arc<dyn Backend>,
    /// A store of pack files: the chunks go into packs (sent as they fill, the rest by the
    /// packer's `finish`), not each its own object.
    packer: Option<Arc<Packer>>,
    runtime: tokio::runtime::Handle,
    permits: Arc<Semaphore>,
    /// The uploads: each gives the chunk it sent.
    uploads: Tasks<ChunkId>,
}

impl fmt::Debug for Courier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Courier({})", self.backend.describe())
    }
}

impl Courier {
    /// Sends to `backend` the chunks landing in a staging store (into packs with `packer`),
    /// on the runtime this is called from.
    pub fn new(backend: Arc<dyn Backend>, packer: Option<Arc<Packer>>) -> Self {
        Courier {
            backend,
            packer,
            runtime: tokio::runtime::Handle::current(),
            permits: Arc::new(Semaphore::new(AT_ONCE)),
            uploads: Tasks::new(),
        }
    }

    /// Starts sending chunk `id` (`len` bytes of content), complete under its name in the
    /// staging store `store`. An upload that failed before stops the run here.
    pub(super) fn landed(
        &self,
        store: Arc<ChunkStore>,
        id: &ChunkId,
        len: usize,
    ) -> io::Result<()> {
        self.uploads.check()?;
        let (backend, permits) = (self.backend.clone(), self.permits.clone());
        let packer = self.packer.clone();
        let id = *id;
        let upload = async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            let object = object_name(&id);
            // Read and checked on a blocking thread: at most `AT_ONCE` of them, as the uploads.
            let reading = move || -> Result<Vec<u8>, String> {
                let bytes = store
                    .stored_bytes(&id)
                    .map_err(|e| format!("cannot read chunk `{id}`: {e}"))?;
                store
                    .check_stored(&id, len, &bytes)
                    .map_err(|e| e.to_string())?;
                Ok(bytes)
            };
            let bytes = tokio::task::spawn_blocking(reading)
                .await
                .map_err(|e| e.to_string())??;
            crate::failpoint::hit("create:s3-chunk-sent").map_err(|e| e.to_string())?;
            match packer {
                // Packed as the checks end: a file's chunks land about in its order, near
                // enough for a restore's runs (`read.rs`).
                Some(packer) => packer
                    .add(id, len, &bytes)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())?,
                None => save_chunk(&*backend, &id, Bytes::from(bytes))
                    .await
                    .map_err(|e| format!("cannot send `{object}`: {e}"))?,
            }
            Ok(id)
        };
        self.uploads.spawn(upload, &self.runtime);
        Ok(())
    }

    /// Waits for every upload started; the chunks sent, or the first failure.
    pub async fn finish(&self) -> Result<HashSet<ChunkId>, io::Error> {
        Ok(self.uploads.finish().await?.into_iter().collect())
    }
}
