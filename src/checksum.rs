//! Checksums computed while bytes stream past: xxhash64, sha256, md5 (or none).
//!
//! Every hash in wqm is computed in the same pass that moves the data, never in a second read,
//! so `HashingReader` and `HashingWriter` wrap whatever carries the bytes.

use std::fmt;
use std::hash::Hasher as _;
use std::io::{self, Read, Write};
use std::str::FromStr;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use twox_hash::XxHash64;

/// The algorithm of `backup.verification.checksum_algorithm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Xxhash64,
    Sha256,
    Md5,
    None,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Xxhash64,
        Algorithm::Sha256,
        Algorithm::Md5,
        Algorithm::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Xxhash64 => "xxhash64",
            Algorithm::Sha256 => "sha256",
            Algorithm::Md5 => "md5",
            Algorithm::None => "none",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!("unknown checksum algorithm `{s}` (use xxhash64, sha256, md5 or none)")
            })
    }
}

/// A checksum as the manifest stores it: `{"algorithm": "sha256", "value": "<hex>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: Algorithm,
    pub value: String,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm, self.value)
    }
}

enum State {
    Xxhash64(XxHash64),
    Sha256(Box<Sha256>),
    Md5(Md5),
}

/// One running hash.
struct Hasher {
    algorithm: Algorithm,
    state: State,
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Option<Self> {
        let state = match algorithm {
            Algorithm::Xxhash64 => State::Xxhash64(XxHash64::with_seed(0)),
            Algorithm::Sha256 => State::Sha256(Box::default()),
            Algorithm::Md5 => State::Md5(Md5::new()),
            Algorithm::None => return None,
        };
        Some(Hasher { algorithm, state })
    }

    fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Xxhash64(h) => h.write(bytes),
            State::Sha256(h) => h.update(bytes),
            State::Md5(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Checksum {
        // xxhash64 is printed as `xxhsum -H64` prints it, so operators can check a file by hand.
        let value = match self.state {
            State::Xxhash64(h) => format!("{:016x}", h.finish()),
            State::Sha256(h) => to_hex(&h.finalize()),
            State::Md5(h) => to_hex(&h.finalize()),
        };
        Checksum {
            algorithm: self.algorithm,
            value,
        }
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Several hashes and a byte count fed by one stream of bytes.
pub struct Digester {
    hashers: Vec<Hasher>,
    bytes: u64,
}

impl Digester {
    /// Hashes with each distinct algorithm of `algorithms`; `none` adds nothing.
    pub fn new(algorithms: &[Algorithm]) -> Self {
        let mut hashers: Vec<Hasher> = Vec::new();
        for &algorithm in algorithms {
            if hashers.iter().all(|h| h.algorithm != algorithm) {
                hashers.extend(Hasher::new(algorithm));
            }
        }
        Digester { hashers, bytes: 0 }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        for hasher in &mut self.hashers {
            hasher.update(bytes);
        }
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> Digests {
        Digests {
            bytes: self.bytes,
            checksums: self.hashers.into_iter().map(Hasher::finish).collect(),
        }
    }
}

/// What a `Digester` computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub bytes: u64,
    checksums: Vec<Checksum>,
}

impl Digests {
    /// The checksum of `algorithm`; `None` for `Algorithm::None` or one that was not computed.
    pub fn get(&self, algorithm: Algorithm) -> Option<Checksum> {
        self.checksums
            .iter()
            .find(|c| c.algorithm == algorithm)
            .cloned()
    }
}

/// How much `HashingReader::finish` reads at a time.
const DRAIN_BUFFER: usize = 256 * 1024;

/// Hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algorithms: &[Algorithm]) -> Self {
        HashingReader {
            inner,
            digester: Digester::new(algorithms),
        }
    }

    /// Reads what is left, so the digests cover the whole stream.
    pub fn finish(mut self) -> io::Result<Digests> {
        // `io::copy` would read 8 KiB at a time: a 600 MB file took 78,000 `read` calls and
        // twice the time of these reads (`verify_before_restore` of the benchmark snapshot).
        let mut buf = vec![0; DRAIN_BUFFER];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(self.digester.finish()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    digester: Digester,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W, algorithms: &[Algorithm]) -> Self {
        HashingWriter {
            inner,
            digester: Digester::new(algorithms),
        }
    }

    pub fn into_parts(self) -> (W, Digests) {
        (self.inner, self.digester.finish())
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The sha256 of `bytes` (a chunk's name in the chunk store).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Hashes a whole byte slice at once (tests and small files).
pub fn digest(bytes: &[u8], algorithms: &[Algorithm]) -> Digests {
    let mut digester = Digester::new(algorithms);
    digester.update(bytes);
    digester.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_HASHES: [Algorithm; 3] = [Algorithm::Xxhash64, Algorithm::Sha256, Algorithm::Md5];

    #[test]
    fn known_values() {
        let d = digest(b"abc", &ALL_HASHES);
        assert_eq!(
            d.get(Algorithm::Sha256).unwrap().value,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            d.get(Algorithm::Md5).unwrap().value,
            "900150983cd24fb0d6963f7d28e17f72"
        );
        // xxhsum -H64 of "abc"
        assert_eq!(
            d.get(Algorithm::Xxhash64).unwrap().value,
            "44bc2cf5ad770999"
        );
        assert_eq!(d.bytes, 3);
        assert_eq!(d.get(Algorithm::None), None);
    }

    #[test]
    fn none_computes_nothing_and_duplicates_collapse() {
        let d = digest(
            b"x",
            &[Algorithm::None, Algorithm::Sha256, Algorithm::Sha256],
        );
        assert_eq!(d.checksums.len(), 1);
    }

    #[test]
    fn finishing_a_reader_hashes_what_was_not_read_yet() {
        let data: Vec<u8> = (0..DRAIN_BUFFER * 3 + 7).map(|i| (i % 251) as u8).collect();
        let mut reader = HashingReader::new(&data[..], &ALL_HASHES);
        let mut head = [0; 1000];
        reader.read_exact(&mut head).unwrap();
        let digests = reader.finish().unwrap();
        assert_eq!(digests.bytes, data.len() as u64);
        for algorithm in ALL_HASHES {
            assert_eq!(
                digests.get(algorithm),
                digest(&data, &[algorithm]).get(algorithm)
            );
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>().unwrap(), a);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert!("crc32".parse::<Algorithm>().is_err());
    }

    proptest! {
        #[test]
        fn streaming_in_random_chunks_equals_one_shot(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            cuts in proptest::collection::vec(0usize..20_000, 0..12),
        ) {
            let expected = digest(&data, &ALL_HASHES);

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut writer = HashingWriter::new(Vec::new(), &ALL_HASHES);
            let mut start = 0;
            for cut in cuts.into_iter().chain(std::iter::once(data.len())) {
                writer.write_all(&data[start..cut]).unwrap();
                start = cut;
            }
            let (written, streamed) = writer.into_parts();
            prop_assert_eq!(&written, &data);
            prop_assert_eq!(&streamed, &expected);

            let reader = HashingReader::new(ChunkedReader { data: &data, step: 1 + data.len() % 977 }, &ALL_HASHES);
            prop_assert_eq!(reader.finish().unwrap(), expected);
        }
    }

    /// Hands out at most `step` bytes per read, like a socket does.
    struct ChunkedReader<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for ChunkedReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }
}
