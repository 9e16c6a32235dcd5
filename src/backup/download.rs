//! One snapshot: made on the server, streamed into the backup by a writer thread, checked against
//! what Qdrant announced, and deleted from the server.

use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::writing::Writing;
use super::SnapshotTimes;
use crate::format::manifest::{FileEntry, FileKind};
use crate::progress::Meter;
use crate::qdrant::{self, AsyncSink, Client, Scope, SnapshotDescription};
use crate::store::FileSink;
use crate::transfer::{place_of, Lanes, OtherFailed, Turn};
use crate::workdir::Record;

impl Writing<'_> {
    /// Creates a snapshot of `scope` on `client`'s node (its turn to make one: `turn`), streams
    /// it into the backup at `rel` and deletes it from the node, also when anything failed or
    /// another transfer stopped this one. Returns the stored file, when the server copy could
    /// not be deleted a warning with the command that deletes it, and the times it took.
    pub(super) async fn snapshot(
        &self,
        client: &Client,
        scope: Scope<'_>,
        rel: &str,
        kind: FileKind,
        turn: &mut Turn<'_>,
        lanes: &Lanes,
    ) -> Result<(FileEntry, Option<String>, SnapshotTimes)> {
        let progress = self.progress;
        progress.step(&format!(
            "creating a snapshot of {scope} on {}",
            client.display_url()
        ));
        let journal = self.staging.journal();
        let place = place_of(client, scope);
        journal.record(&Record::SnapshotRequested {
            place: place.clone(),
            at: crate::now(),
        })?;
        // Even after Ctrl-C (or another failure) this waits for Qdrant: the snapshot it is
        // making must be deleted.
        let made = client.create_snapshot(scope).await;
        // The node may make the next one while this one downloads.
        turn.release_node();
        let making = turn.since.elapsed().as_secs_f64();
        let snapshot = match made {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // An error answer means no snapshot; a lost connection or a timeout may not.
                if e.is_answer() {
                    journal.record(&Record::SnapshotRefused {
                        place: place.clone(),
                    })?;
                }
                return Err(e.into());
            }
        };
        journal.record(&Record::SnapshotMade {
            place: place.clone(),
            name: snapshot.name.clone(),
        })?;
        crate::failpoint::hit("create:snapshot-made")?;
        progress.step(&format!("downloading `{}`", snapshot.name));
        let downloading = Instant::now();
        // Fires (or is dropped) when the download is over, done or failed.
        let (download_over, when_download_over) = tokio::sync::oneshot::channel::<()>();
        let transfer = self.download(client, scope, &snapshot, rel, kind, download_over, lanes);
        // The server's copy is deleted while the writer syncs the file to disk.
        let delete_after_transfer = async {
            let _ = when_download_over.await;
            crate::failpoint::hit("create:downloaded")?;
            client.delete_snapshot(scope, &snapshot.name).await?;
            journal.record(&Record::SnapshotDeleted {
                place: place.clone(),
                name: snapshot.name.clone(),
            })?;
            Ok::<_, anyhow::Error>(())
        };
        let (stored, deleted) = tokio::join!(transfer, delete_after_transfer);
        let leftover = deleted.err().map(|e| {
            format!(
                "could not delete snapshot `{}` of {scope} from Qdrant ({}); the next wqm run on this directory (or `wqm backup cleanup`) deletes it, or delete it with: {}",
                snapshot.name,
                crate::exit::said(&e),
                client.delete_command(scope, &snapshot.name)
            )
        });
        let times = SnapshotTimes {
            started: 0.0,
            waiting: 0.0,
            making,
            downloading: downloading.elapsed().as_secs_f64(),
        };
        Ok((stored?, leftover, times))
    }

    /// Streams snapshot `snapshot` of `scope` from `client`'s node into the backup at `rel`
    /// (see `ChannelSink`), says when the download is over on `download_over`, and checks the
    /// file against what Qdrant announced. Stops when another transfer failed.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        client: &Client,
        scope: Scope<'_>,
        snapshot: &SnapshotDescription,
        rel: &str,
        kind: FileKind,
        download_over: tokio::sync::oneshot::Sender<()>,
        lanes: &Lanes,
    ) -> Result<FileEntry> {
        let progress = self.progress;
        let sink = self
            .staging
            .create_file(rel, kind, self.compression, self.algorithm)?;
        let (sender, receiver) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let writer = spawn_writer(sink, receiver);
        let downloading = client.download_snapshot(
            scope,
            &snapshot.name,
            ChannelSink {
                sender,
                meter: progress.transfer(&scope.to_string(), snapshot.size),
                delivered: 0,
            },
        );
        let downloaded = tokio::select! {
            downloaded = downloading => downloaded,
            () = lanes.until_stopped() => Err(OtherFailed.into()),
        };
        let _ = download_over.send(());
        let written = writer
            .await
            .map_err(|e| anyhow!("the file writer panicked: {e}"))?;
        let bytes = match downloaded {
            Err(e) if e.is::<OtherFailed>() => return Err(e),
            downloaded => downloaded,
        };
        // The writer's own error (a full disk, say) explains a stopped download better.
        let entry = written?;
        let bytes = bytes?;
        check_download(snapshot, bytes, &entry)?;
        Ok(entry)
    }
}

/// Hands downloaded chunks to the thread that hashes, compresses and writes them, so the
/// network and the disk work at the same time. Memory is bounded by the channel.
struct ChannelSink {
    sender: mpsc::Sender<Bytes>,
    /// This download's progress; its bar ends with the download.
    meter: Meter,
    delivered: u64,
}

impl AsyncSink for ChannelSink {
    async fn deliver(&mut self, chunk: Bytes) -> Result<()> {
        if self.delivered == 0 {
            crate::failpoint::hit("create:downloading")?;
        }
        self.delivered += chunk.len() as u64;
        self.meter.inc(chunk.len() as u64);
        self.sender
            .send(chunk)
            .await
            .map_err(|_| anyhow!("the file writer stopped"))
    }
}

/// Chunks in flight between the network and the file writer (hyper hands out up to ~400 KiB each).
const CHANNEL_CHUNKS: usize = 8;

fn spawn_writer(
    mut sink: FileSink,
    mut receiver: mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<Result<FileEntry>> {
    tokio::task::spawn_blocking(move || -> Result<FileEntry> {
        sink.from_a_transfer()
            .with_context(|| format!("cannot write `{}`", sink.path().display()))?;
        while let Some(chunk) = receiver.blocking_recv() {
            sink.write_piece(chunk)
                .with_context(|| format!("cannot write `{}`", sink.path().display()))?;
        }
        Ok(sink.finish()?)
    })
}

/// The download matches what Qdrant announced: its size and its sha256.
fn check_download(snapshot: &SnapshotDescription, bytes: u64, entry: &FileEntry) -> Result<()> {
    if let Some(size) = snapshot.size.filter(|&size| size != bytes) {
        return Err(qdrant::QdrantError::Transfer {
            name: snapshot.name.clone(),
            attempts: 1,
            reason: format!("received {bytes} bytes, Qdrant announced {size}"),
        }
        .into());
    }
    if let Some(expected) = &snapshot.checksum {
        if !expected.trim().eq_ignore_ascii_case(&entry.content_sha256) {
            return Err(qdrant::QdrantError::ChecksumMismatch {
                name: snapshot.name.clone(),
                expected: expected.clone(),
                actual: entry.content_sha256.clone(),
            }
            .into());
        }
    }
    Ok(())
}
