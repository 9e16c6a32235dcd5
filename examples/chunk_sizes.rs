//! How much the chunk store would hold for a series of snapshots (oldest first) at several
//! average chunk sizes: the measurement behind `store::chunks::DEFAULT_AVERAGE`.
//!
//!     cargo run --release --example chunk_sizes -- night-01.snapshot night-02.snapshot ...
//!
//! Prints, per average size: the chunks stored, their compressed bytes (what the store would
//! hold) and what they take on a filesystem of 4 KiB blocks (one file per chunk), that as a
//! share of all input, and the share of the last file already in the store.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};

use wqm::store::chunks::{ChunkId, Chunker, Params};

fn main() -> io::Result<()> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: chunk_sizes FILE...");
        std::process::exit(2);
    }
    println!(
        "| average | chunks stored | stored (zstd) | on disk (4 KiB blocks) | on disk / input | last file shared |"
    );
    println!("|---|---|---|---|---|---|");
    for kib in [16, 32, 64, 128, 256] {
        let params = Params::with_average(kib * 1024);
        let mut seen = HashSet::new();
        let (mut input, mut stored, mut blocks) = (0u64, 0u64, 0u64);
        let (mut last_shared, mut last_size) = (0u64, 0u64);
        for file in &files {
            let mut chunker = Chunker::new(&params);
            let (mut shared, mut size) = (0u64, 0u64);
            let mut emit = |chunk: &[u8]| -> io::Result<()> {
                size += chunk.len() as u64;
                if seen.insert(ChunkId::of(chunk)) {
                    let size = zstd::bulk::compress(chunk, 1)?.len() as u64;
                    stored += size;
                    blocks += size.div_ceil(4096);
                } else {
                    shared += chunk.len() as u64;
                }
                Ok(())
            };
            let mut reader = File::open(file)?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                chunker.push(&buffer[..n], &mut emit)?;
            }
            chunker.finish(&mut emit)?;
            input += size;
            (last_shared, last_size) = (shared, size);
        }
        println!(
            "| {kib} KiB | {} | {:.1} MiB | {:.1} MiB | {:.3} | {:.1} % |",
            seen.len(),
            stored as f64 / (1 << 20) as f64,
            (blocks * 4096) as f64 / (1 << 20) as f64,
            (blocks * 4096) as f64 / input as f64,
            100.0 * last_shared as f64 / last_size.max(1) as f64
        );
    }
    Ok(())
}
