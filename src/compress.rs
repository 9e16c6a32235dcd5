//! zstd compression of backup files, streamed in both directions.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// zstd level 1: on vector data it compresses as well as the default level 3 at twice the
/// speed, which keeps it close to the speed of a local Qdrant download (docs/performance.md).
pub(crate) const ZSTD_LEVEL: i32 = 1;
/// Small jobs keep multi-threaded compression's memory near 15 MiB (the default job size
/// took it past 60 MiB).
const ZSTD_JOB_SIZE: u32 = 1 << 20;
/// Cores a download needs besides compression: the server's sender (on this host, often)
/// and this process's receiver and content hasher.
const CORES_FOR_THE_TRANSFER: usize = 2;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// zstd's worker threads for content read here (an export, a database): one per core, so
/// that reading and hashing go on meanwhile; none on one core.
fn workers() -> u32 {
    match cores() {
        1 => 0,
        cores => cores as u32,
    }
}

/// zstd's worker threads for content a download brings: the cores beyond
/// `CORES_FOR_THE_TRANSFER`, none on two (compressed by the writing thread). There workers
/// only fought the transfer for the cores: the benchmark snapshot downloaded in 1.44–1.60 s
/// compressed by the writing thread, 1.76–1.89 s with two workers (docs/performance.md).
pub fn workers_beside_a_transfer() -> u32 {
    cores().saturating_sub(CORES_FOR_THE_TRANSFER) as u32
}

/// A compression codec: how a plainly stored file's bytes are encoded. (A chunked file is no
/// compression: `Stored::Chunked`, read and written only through its chunk store.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
}

impl Compression {
    /// `backup.compression: true` means zstd.
    pub fn from_setting(enabled: bool) -> Self {
        if enabled {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The suffix added to a stored file's name.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
        }
    }

    /// Wraps a reader of stored bytes so it yields the original bytes (zstd reads a block's
    /// worth of them at a time: `Decoder::new`'s buffer, not 8 KiB).
    pub fn decoder<'a, R: Read + Send + 'a>(
        self,
        reader: R,
    ) -> io::Result<Box<dyn Read + Send + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Zstd => Box::new(zstd::Decoder::new(reader)?),
        })
    }

    /// Wraps a writer of stored bytes; call `finish` on the result to flush the last frame.
    pub fn encoder<W: Write>(self, writer: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::Plain(writer),
            Compression::Zstd => {
                let mut encoder = Encoder::Zstd(zstd::Encoder::new(writer, ZSTD_LEVEL)?);
                encoder.set_workers(workers())?;
                encoder
            }
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Stored::Plain(*self).fmt(f)
    }
}

/// How one file of a backup is stored (the manifest's `compression`: `"none"`, `"zstd"` or
/// `"chunks"`): plainly, with a codec, or as an index of chunks in the chunk store beside the
/// backup (an incremental backup, `store::chunks`). Only `Plain` has a decoder: a chunked file
/// cannot be decoded as a compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredName", into = "StoredName")]
pub enum Stored {
    Plain(Compression),
    Chunked,
}

impl Default for Stored {
    fn default() -> Self {
        Stored::Plain(Compression::None)
    }
}

impl From<Compression> for Stored {
    fn from(compression: Compression) -> Self {
        Stored::Plain(compression)
    }
}

impl Stored {
    /// The suffix added to a stored file's name.
    pub fn extension(self) -> &'static str {
        match self {
            Stored::Plain(compression) => compression.extension(),
            Stored::Chunked => ".chunks",
        }
    }
}

impl fmt::Display for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stored::Plain(Compression::None) => "none",
            Stored::Plain(Compression::Zstd) => "zstd",
            Stored::Chunked => "chunks",
        })
    }
}

/// `Stored`'s names in a manifest, as wqm always wrote them.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoredName {
    None,
    Zstd,
    Chunks,
}

impl From<StoredName> for Stored {
    fn from(name: StoredName) -> Self {
        match name {
            StoredName::None => Stored::Plain(Compression::None),
            StoredName::Zstd => Stored::Plain(Compression::Zstd),
            StoredName::Chunks => Stored::Chunked,
        }
    }
}

impl From<Stored> for StoredName {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Plain(Compression::None) => StoredName::None,
            Stored::Plain(Compression::Zstd) => StoredName::Zstd,
            Stored::Chunked => StoredName::Chunks,
        }
    }
}

/// A writer that compresses (or passes bytes through).
pub enum Encoder<W: Write> {
    Plain(W),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Compresses on `workers` threads (0: in the writing thread); before anything is
    /// written.
    pub fn set_workers(&mut self, workers: u32) -> io::Result<()> {
        if let Encoder::Zstd(encoder) = self {
            encoder.multithread(workers)?;
            if workers > 0 {
                encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
            }
        }
        Ok(())
    }

    /// Ends the stream and returns the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_round_trip_streams() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut encoder = Compression::Zstd.encoder(Vec::new()).unwrap();
        for chunk in data.chunks(7_001) {
            encoder.write_all(chunk).unwrap();
        }
        let stored = encoder.finish().unwrap();
        assert!(stored.len() < data.len() / 4);
        let mut decoded = Vec::new();
        Compression::Zstd
            .decoder(&stored[..])
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, data);
    }

    #[test]
    fn none_passes_bytes_through() {
        let mut encoder = Compression::None.encoder(Vec::new()).unwrap();
        encoder.write_all(b"abc").unwrap();
        assert_eq!(encoder.finish().unwrap(), b"abc");
        assert_eq!(Compression::from_setting(true).extension(), ".zst");
        assert_eq!(Compression::from_setting(false).extension(), "");
    }

    #[test]
    fn stored_keeps_the_manifests_names() {
        for (stored, name) in [
            (Stored::Plain(Compression::None), "none"),
            (Stored::Plain(Compression::Zstd), "zstd"),
            (Stored::Chunked, "chunks"),
        ] {
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&stored).unwrap(), json);
            assert_eq!(serde_json::from_str::<Stored>(&json).unwrap(), stored);
            assert_eq!(stored.to_string(), name);
        }
        assert_eq!(Stored::Chunked.extension(), ".chunks");
        assert!(serde_json::from_str::<Stored>("\"lz4\"").is_err());
    }
}
