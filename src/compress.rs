//! zstd compression of backup files, streamed in both directions.

use std::fmt;
use std::io::{self, BufReader, Read, Write};

use serde::{Deserialize, Serialize};

/// zstd level 1: on vector data it compresses as well as the default level 3 at twice the
/// speed, which keeps it close to the speed of a local Qdrant download (docs/performance.md).
pub(crate) const ZSTD_LEVEL: i32 = 1;
/// Small jobs keep multi-threaded compression's memory near 15 MiB (the default job size
/// took it past 60 MiB).
const ZSTD_JOB_SIZE: u32 = 1 << 20;

/// How one file of a backup is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
    /// The stored file is an index of zstd-compressed chunks in the chunk store beside the
    /// backup (an incremental backup, `store::chunks`); only the store reads or writes it.
    Chunks,
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
            Compression::Chunks => ".chunks",
        }
    }

    /// Wraps a reader of stored bytes so it yields the original bytes (a chunked file is read
    /// through its store: `store::BackupDir::decode`).
    pub fn decoder<'a, R: Read + 'a>(self, reader: R) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Zstd => Box::new(zstd::Decoder::with_buffer(BufReader::new(reader))?),
            Compression::Chunks => return Err(needs_store()),
        })
    }

    /// Wraps a writer of stored bytes; call `finish` on the result to flush the last frame.
    pub fn encoder<W: Write>(self, writer: W) -> io::Result<Encoder<W>> {
        Ok(match self {
            Compression::None => Encoder::Plain(writer),
            Compression::Zstd => {
                let mut encoder = zstd::Encoder::new(writer, ZSTD_LEVEL)?;
                // Compress on worker threads so hashing and I/O keep going meanwhile.
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                if workers > 1 {
                    encoder.multithread(workers as u32)?;
                    encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                }
                Encoder::Zstd(encoder)
            }
            Compression::Chunks => return Err(needs_store()),
        })
    }
}

fn needs_store() -> io::Error {
    io::Error::other("a chunked file is read and written through its chunk store")
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Chunks => "chunks",
        })
    }
}

/// A writer that compresses (or passes bytes through).
pub enum Encoder<W: Write> {
    Plain(W),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
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
}
