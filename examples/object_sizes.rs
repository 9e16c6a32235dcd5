//! Loose chunks or pack files: the same bytes written, listed, read back and removed as objects
//! of several sizes, through wqm's own backends (the measurement behind docs/performance.md's
//! "Object count": issue 20, item 6).
//!
//!     cargo run --release --example object_sizes -- DIR|s3://BUCKET/PREFIX [MIB] [PARALLEL]
//!
//! `s3://` takes the endpoint and credentials from the AWS variables, as wqm does. Every object is
//! incompressible (chunks are stored compressed). Prints one Markdown table row per object size:
//! objects, requests, and the seconds and MiB/s of each phase.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use wqm::backend::local::LocalBackend;
use wqm::backend::s3::{S3Backend, PART_SIZE};
use wqm::backend::{self, Backend, Location, Name, S3Options};

/// 64 KiB (the chunk store's average chunk), then pack sizes.
const SIZES: [usize; 5] = [64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(target) = args.first() else {
        eprintln!("usage: object_sizes DIR|s3://BUCKET/PREFIX [MIB] [PARALLEL]");
        std::process::exit(2);
    };
    let total: usize = args.get(1).map_or(Ok(256), |a| a.parse())? << 20;
    let parallel: usize = args.get(2).map_or(Ok(8), |a| a.parse())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let backend: Arc<dyn Backend> = match Location::parse(target)? {
        Location::Local(dir) => {
            std::fs::create_dir_all(&dir)?;
            Arc::new(LocalBackend::open(&dir)?)
        }
        Location::S3 { bucket, prefix } => {
            let settings = S3Options::default().resolve()?;
            let s3 = S3Backend::open(&bucket, &prefix, &settings)?;
            runtime.block_on(s3.check())?;
            Arc::new(s3)
        }
    };
    let data = pseudo_random(total);
    println!(
        "{} MiB in objects of each size, {parallel} at a time, to `{target}`:\n",
        total >> 20
    );
    println!("| object size | objects | requests (write + read) | write s | write MiB/s | list s | read s | read MiB/s | remove s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let run = format!("objects-{}", backend::random_id());
        let names: Vec<Name> = (0..total.div_ceil(size))
            .map(|i| Name::new(format!("{run}/{i:06}")))
            .collect::<Result<_, _>>()?;
        let pieces: Vec<Bytes> = (0..names.len())
            .map(|i| data.slice(i * size..((i + 1) * size).min(total)))
            .collect();
        let phase = |work: &dyn Fn() -> Result<(), Box<dyn std::error::Error>>| {
            let began = Instant::now();
            work().map(|()| began.elapsed().as_secs_f64())
        };
        let write = phase(&|| {
            runtime.block_on(
                stream::iter(names.iter().zip(&pieces))
                    .map(|(name, piece)| {
                        let backend = backend.clone();
                        async move { backend.save(name, backend::once(piece.clone())).await }
                    })
                    .buffer_unordered(parallel)
                    .try_collect::<Vec<_>>(),
            )?;
            Ok(())
        })?;
        let list = phase(&|| {
            let found = runtime.block_on(backend.list(&format!("{run}/")))?;
            assert_eq!(found.len(), names.len());
            Ok(())
        })?;
        let read = phase(&|| {
            let sizes = runtime.block_on(
                stream::iter(&names)
                    .map(|name| {
                        let backend = backend.clone();
                        async move {
                            let data = backend.load(name, None).await?;
                            Ok::<_, Box<dyn std::error::Error>>(backend::collect(data).await?)
                        }
                    })
                    .buffer_unordered(parallel)
                    .map_ok(|bytes| bytes.len())
                    .try_collect::<Vec<_>>(),
            )?;
            assert_eq!(sizes.iter().sum::<usize>(), total);
            Ok(())
        })?;
        let remove = phase(&|| {
            runtime.block_on(
                stream::iter(&names)
                    .map(|name| backend.remove(name))
                    .buffer_unordered(parallel)
                    .try_collect::<Vec<_>>(),
            )?;
            Ok(())
        })?;
        // A save larger than a part is a multipart upload: create, one request a part, complete.
        let writes: usize = pieces
            .iter()
            .map(|p| {
                if p.len() > PART_SIZE {
                    p.len().div_ceil(PART_SIZE) + 2
                } else {
                    1
                }
            })
            .sum();
        let mib = (total >> 20) as f64;
        println!(
            "| {} KiB | {} | {} | {write:.2} | {:.0} | {list:.2} | {read:.2} | {:.0} | {remove:.2} |",
            size >> 10,
            names.len(),
            writes + names.len(),
            mib / write,
            mib / read,
        );
    }
    Ok(())
}

/// `len` incompressible bytes (xorshift), the same on every run.
fn pseudo_random(len: usize) -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}
