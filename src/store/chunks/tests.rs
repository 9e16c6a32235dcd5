use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;

use super::*;

fn content(len: usize, seed: u64) -> Vec<u8> {
    // Not compressible to nothing, not random either: a little like a snapshot.
    let mut state = seed;
    (0..len)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i % 7 == 0 {
                0
            } else {
                (state >> 56) as u8
            }
        })
        .collect()
}

/// `data` written as one file of a run of its own: its index and what the run added.
fn write_once(store: &Arc<ChunkStore>, data: &[u8]) -> (Vec<u8>, Added) {
    write_in(store, &Arc::new(Run::default()), data)
}

/// `data` written as one file of `run`, made durable as before a manifest.
fn write_in(store: &Arc<ChunkStore>, run: &Arc<Run>, data: &[u8]) -> (Vec<u8>, Added) {
    let temp = store.temp_dir().unwrap();
    let mut writer = ChunkWriter::new(store.clone(), run.clone(), &temp, Vec::new()).unwrap();
    writer.write_all(data).unwrap();
    let index = writer.finish().unwrap();
    run.make_durable(store).unwrap();
    (index, run.added())
}

/// The store of `dir` as a wqm before pack files made it (a file per chunk), opened to write:
/// such a store is still written loose.
fn loose_store(dir: &std::path::Path, avg_size: usize) -> Arc<ChunkStore> {
    runs::make_store(dir, &Params::with_average(avg_size).loose()).unwrap();
    ChunkStore::open_for_writing(dir, avg_size).unwrap()
}

fn index_lines(index: &[u8]) -> Vec<IndexLine> {
    let mut reader = IndexReader::new(index).unwrap();
    std::iter::from_fn(|| reader.next_line().unwrap()).collect()
}

fn cut(params: &Params, data: &[u8], pieces: usize) -> Vec<usize> {
    let mut chunker = Chunker::new(params);
    let mut lens = Vec::new();
    for piece in data.chunks(pieces) {
        chunker
            .push(piece, &mut |c| {
                lens.push(c.len());
                Ok(())
            })
            .unwrap();
    }
    chunker
        .finish(&mut |c| {
            lens.push(c.len());
            Ok(())
        })
        .unwrap();
    lens
}

#[test]
fn pushed_pieces_cut_as_the_whole_content_does() {
    let params = Params::with_average(4096);
    let data = content(300_000, 7);
    let whole: Vec<usize> =
        fastcdc::v2020::FastCDC::new(&data, params.min_size, params.avg_size, params.max_size)
            .map(|c| c.length)
            .collect();
    assert!(whole.len() > 20, "{}", whole.len());
    for pieces in [1, 1000, 4096, 65_536, 300_000] {
        assert_eq!(cut(&params, &data, pieces), whole, "pieces of {pieces}");
    }
    assert!(cut(&params, &[], 10).is_empty());
}

#[test]
fn chunks_round_trip_and_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = loose_store(dir.path(), 4096);
    let data = content(200_000, 1);
    let (index, added) = write_once(&store, &data);
    assert!(added.chunks > 10 && added.bytes > 0, "{added:?}");
    let (again, added_again) = write_once(&store, &data);
    assert_eq!(again, index);
    assert_eq!(added_again, Added::default(), "nothing stored twice");
    let mut read = Vec::new();
    ChunkReader::new(store.clone(), &index[..], true)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data);

    // A damaged chunk is found by its name.
    let mut lines = IndexReader::new(&index[..]).unwrap();
    let first = lines.next_line().unwrap().unwrap();
    let path = store.root.join(first.id.rel());
    let mut other = Vec::new();
    zstd::stream::copy_encode(&b"something else"[..], &mut other, 1).unwrap();
    fs::write(&path, other).unwrap();
    let err = ChunkReader::new(store.clone(), &index[..], true)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains(&first.id.to_string()), "{err}");
    fs::remove_file(&path).unwrap();
    let err = ChunkReader::new(store.clone(), &index[..], true)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("is missing"), "{err}");
}

#[test]
fn a_new_store_packs_its_chunks_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let data = content(200_000, 1);
    let (index, added) = write_once(&store, &data);
    assert!(added.chunks > 10 && added.bytes > 0, "{added:?}");
    let root = dir.path().join(STORE_DIR);
    assert!(!root.join(CHUNKS_DIR).exists(), "no chunk loose");
    let listed = |dir: &str| -> Vec<std::path::PathBuf> { walk(&root.join(dir)) };
    let packs = listed("packs");
    assert_eq!(
        (packs.len(), listed("index").len()),
        (1, 1),
        "one pack, its index"
    );
    let (again, added_again) = write_once(&store, &data);
    assert_eq!(again, index);
    assert_eq!(added_again, Added::default(), "nothing stored twice");
    // Opened afresh (its indexes read from the disk), it reads every chunk back.
    let read = |index: &[u8]| {
        pack::Packs::forget(&store.repository);
        let reader = ChunkStore::open_for_reading(dir.path()).unwrap();
        let mut read = Vec::new();
        ChunkReader::new(reader, index, true)
            .unwrap()
            .read_to_end(&mut read)
            .map(|_| read)
    };
    assert_eq!(read(&index).unwrap(), data);
    // A byte of the first chunk altered in its pack: the reader names it.
    let first = index_lines(&index)[0].id;
    let mut bytes = fs::read(&packs[0]).unwrap();
    bytes[3] ^= 1;
    fs::write(&packs[0], bytes).unwrap();
    let err = read(&index).unwrap_err();
    assert!(err.to_string().contains(&first.to_string()), "{err}");
}

/// Every file under `dir`, sorted.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => found.extend(walk(&path)),
            false => found.push(path),
        }
    }
    found.sort();
    found
}

#[test]
fn files_written_side_by_side_may_store_the_same_chunks() {
    for packed in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = match packed {
            true => ChunkStore::open_for_writing(dir.path(), 4096).unwrap(),
            false => loose_store(dir.path(), 4096),
        };
        assert_eq!(store.is_packed(), packed);
        let added = side_by_side(&store);
        if packed {
            // One copy of each chunk, in the run's pack.
            assert_eq!(added.chunks, 2, "{added:?}");
            assert!(!dir.path().join(STORE_DIR).join(CHUNKS_DIR).exists());
        }
    }
}

/// Four files of zeros written into `store` at once by one run, then read back: what the run
/// added.
fn side_by_side(store: &Arc<ChunkStore>) -> Added {
    let temp = store.temp_dir().unwrap();
    // Zeros, as Qdrant's sparse page files hold: the same chunks in every file.
    let data = vec![0u8; 300_000];
    let run = Arc::new(Run::default());
    let indexes: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut writer =
                        ChunkWriter::new(store.clone(), run.clone(), &temp, Vec::new()).unwrap();
                    for piece in data.chunks(1000) {
                        writer.write_all(piece).unwrap();
                    }
                    writer.finish().unwrap()
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    run.make_durable(store).unwrap();
    assert!(indexes.iter().all(|index| index == &indexes[0]));
    let mut read = Vec::new();
    ChunkReader::new(store.clone(), &indexes[0][..], true)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data);
    run.added()
}

#[test]
fn hostile_indexes_are_refused() {
    let id = ChunkId::of(b"x").to_string();
    for bad in [
        "",
        "wqm-chunk-index 2\n",
        &format!("wqm-chunk-index 1\n{id} 1\n"),
        &format!("wqm-chunk-index 1\n{id} 0 1\n"),
        &format!("wqm-chunk-index 1\n{id} 99999999999 1\n"),
        &format!("wqm-chunk-index 1\n{id} 262145 1\n"),
        "wqm-chunk-index 1\n../../etc/passwd 1 1\n",
        &format!("wqm-chunk-index 1\n{} 1 1\n", id.to_uppercase()),
        &format!("wqm-chunk-index 1\n{id} 1 1"),
        &format!("wqm-chunk-index 1\n{id} 1 1 {}\n", "9".repeat(200)),
    ] {
        let result = IndexReader::new(bad.as_bytes()).and_then(|mut r| {
            while r.next_line()?.is_some() {}
            Ok(())
        });
        assert!(result.is_err(), "{bad:?}");
    }
}

#[test]
fn a_collection_keeps_referenced_chunks_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let (index, added) = write_once(&store, &content(100_000, 3));
    let mut lines = IndexReader::new(&index[..]).unwrap();
    let kept = lines.next_line().unwrap().unwrap().id;
    // (Writers and the collection exclude each other by the directory's lock, `store::lock`.)
    drop(store);
    let exclusive = ChunkStore::try_exclusive(dir.path()).unwrap().unwrap();
    let referenced = Refs::of(&[kept]);
    let collect = |dry_run| {
        let found = find_unreferenced(dir.path(), &referenced).unwrap();
        collect_garbage(&exclusive, found, &referenced, dry_run, None).unwrap()
    };
    let dry = collect(true);
    assert_eq!(dry.chunks_deleted + 1, added.chunks);
    let done = collect(false);
    assert_eq!(done, dry);
    assert!(exclusive.stored_size(&kept).is_some());
    assert_eq!(collect(false).chunks_deleted, 0);
}

#[test]
fn a_repack_budget_takes_the_packs_with_the_most_garbage_first_and_defers_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let packs_dir = dir.path().join(STORE_DIR).join("packs");
    // Two packs, a run each: `a` keeps 3 of every 5 chunks, `b` 1 of every 3.
    let (a_index, _) = write_once(&store, &content(120_000, 11));
    let a = walk(&packs_dir);
    let (b_index, _) = write_once(&store, &content(120_000, 12));
    let b: Vec<_> = walk(&packs_dir)
        .into_iter()
        .filter(|p| !a.contains(p))
        .collect();
    let (a, b) = (a[0].clone(), b[0].clone());
    let every = |index: &[u8], n: usize, of: usize| -> Vec<ChunkId> {
        let lines = index_lines(index);
        lines
            .iter()
            .enumerate()
            .filter(|(i, _)| i % of < n)
            .map(|(_, l)| l.id)
            .collect()
    };
    let kept: Vec<ChunkId> = [every(&a_index, 3, 5), every(&b_index, 1, 3)].concat();
    drop(store);
    let exclusive = ChunkStore::try_exclusive(dir.path()).unwrap().unwrap();
    let referenced = Refs::of(&kept);
    let collect = |dry_run, budget| {
        let found = find_unreferenced(dir.path(), &referenced).unwrap();
        collect_garbage(&exclusive, found, &referenced, dry_run, budget).unwrap()
    };
    let size = |p: &std::path::Path| fs::metadata(p).unwrap().len();
    let (a_size, b_size) = (size(&a), size(&b));
    let counts = |c: &Collected| (c.packs_repacked, c.packs_deferred, c.bytes_repacked);
    assert_eq!(counts(&collect(true, None)), (2, 0, a_size + b_size));
    assert_eq!(counts(&collect(true, Some(0))), (0, 2, 0));
    // Room for either pack, not both: `b`, two thirds garbage, goes first.
    let one = Some(a_size.max(b_size));
    assert_eq!(counts(&collect(true, one)), (1, 1, b_size));
    assert_eq!(counts(&collect(false, one)), (1, 1, b_size));
    assert!(a.exists() && !b.exists());
    let deferred = collect(false, None);
    assert_eq!(counts(&deferred), (1, 0, a_size), "{deferred:?}");
    assert!(!a.exists());
    assert!(kept.iter().all(|id| exclusive.stored_size(id).is_some()));
    assert_eq!(counts(&collect(false, Some(0))), (0, 0, 0));
}

#[test]
fn a_store_that_is_not_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        ChunkStore::open_for_reading(dir.path()),
        Err(ChunkError::NoStore { .. })
    ));
    fs::create_dir(dir.path().join(STORE_DIR)).unwrap();
    fs::write(
        dir.path().join(STORE_DIR).join(PARAMS_FILE),
        r#"{"format":1,"chunker":"fastcdc-2020","min_size":0,"avg_size":1,"max_size":2,"hash":"sha256","compression":"zstd"}"#,
    )
    .unwrap();
    let err = ChunkStore::open_for_reading(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("outside FastCDC's bounds"),
        "{err}"
    );
}

/// xorshift64*: a fixed, simple generator, so the input below never changes.
fn golden_input(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Where the store cuts a fixed input, computed once with `fastcdc` 5.0.0 and written down: a
/// crate or code change that moves a cut point would stop every new backup sharing chunks with
/// the old ones, so it fails here instead.
#[test]
fn cut_points_are_the_golden_ones() {
    let data = golden_input(1 << 20);
    let lens = cut(&Params::with_average(DEFAULT_AVERAGE), &data, 10_000);
    assert_eq!(lens, GOLDEN_DEFAULT);
    let lens = cut(&Params::with_average(4096), &data[..64 * 1024], 999);
    assert_eq!(lens, GOLDEN_SMALL);
    let first = ChunkId::of(&data[..GOLDEN_DEFAULT[0]]);
    assert_eq!(first.to_string(), GOLDEN_FIRST_ID);
}

#[test]
fn store_json_evolves_by_features() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join(STORE_DIR);
    ChunkStore::open_for_writing(dir.path(), DEFAULT_AVERAGE).unwrap();
    // What this wqm writes: format 2, needing lock objects (a wqm that only knows the store's
    // `flock` refuses it) and pack files.
    let written = fs::read_to_string(store_dir.join(PARAMS_FILE)).unwrap();
    let made = r#"{
  "format": 2,
  "chunker": "fastcdc-2020",
  "min_size": 16384,
  "avg_size": 65536,
  "max_size": 262144,
  "hash": "sha256",
  "compression": "zstd",
  "required_features": [
    "lock-objects",
    "packs"
  ]
}"#;
    assert_eq!(written, made);
    // A store made before lock objects (format 1, no feature) still reads.
    let today = r#"{
  "format": 1,
  "chunker": "fastcdc-2020",
  "min_size": 16384,
  "avg_size": 65536,
  "max_size": 262144,
  "hash": "sha256",
  "compression": "zstd"
}"#;
    let with = |extra: &str, format: u32| {
        let text = today
            .replace("\"format\": 1", &format!("\"format\": {format}"))
            .replace("\"zstd\"", &format!("\"zstd\"{extra}"));
        fs::write(store_dir.join(PARAMS_FILE), text).unwrap();
        ChunkStore::open_for_reading(dir.path()).map(|s| s.params().clone())
    };
    assert!(with("", 1).is_ok());
    let optional = with(r#", "optional_features": ["pack-index-cache"]"#, 1).unwrap();
    assert_eq!(optional.optional_features, ["pack-index-cache"]);
    let err = with(r#", "required_features": ["pack-files"]"#, 2).unwrap_err();
    assert!(matches!(err, ChunkError::NewerStore { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("needs features this wqm does not know: `pack-files`"),
        "{err}"
    );
    assert!(with("", 3)
        .unwrap_err()
        .to_string()
        .contains("store format 3"));
    // Chunks larger than the store's maximum are refused in the parameters and in an index.
    let err = with("", 1)
        .and_then(|_| {
            fs::write(
                store_dir.join(PARAMS_FILE),
                today.replace("262144", "524288"),
            )
            .unwrap();
            ChunkStore::open_for_reading(dir.path()).map(drop)
        })
        .unwrap_err();
    assert!(err.to_string().contains("at most 262144 bytes"), "{err}");
}

fn store_again(dir: &std::path::Path) -> Arc<ChunkStore> {
    ChunkStore::open_for_writing(dir, 4096).unwrap()
}

#[test]
fn no_part_of_the_store_may_be_a_link_and_garbage_collection_follows_none() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("ab")).unwrap();
    fs::write(outside.path().join("precious"), "keep").unwrap();
    fs::write(outside.path().join("ab/precious"), "keep").unwrap();
    let store = loose_store(dir.path(), 4096);
    write_once(&store, &content(50_000, 9));
    drop(store);
    let root = dir.path().join(STORE_DIR);
    // The store itself a link: a create refuses it rather than making one through it.
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(&root, elsewhere.path().join(STORE_DIR)).unwrap();
    let err = ChunkStore::open_for_writing(elsewhere.path(), 4096).unwrap_err();
    assert!(matches!(err, ChunkError::Link { .. }), "{err}");
    for part in ["tmp", "chunks"] {
        let aside = root.join(format!("{part}.real"));
        fs::rename(root.join(part), &aside).unwrap();
        symlink(outside.path(), root.join(part)).unwrap();
        let err = ChunkStore::try_exclusive(dir.path()).unwrap_err();
        assert!(matches!(err, ChunkError::Link { .. }), "{part}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("{part}` is a symbolic link")),
            "{err}"
        );
        fs::remove_file(root.join(part)).unwrap();
        fs::rename(&aside, root.join(part)).unwrap();
    }
    // A fan-out directory replaced by a link: a create writes nothing through it.
    let data = content(20_000, 11);
    let (index, _) = write_once(&store_again(dir.path()), &data);
    let fan = root
        .join("chunks")
        .join(&index_lines(&index)[0].id.to_string()[..2]);
    fs::rename(&fan, root.join("fan.real")).unwrap();
    let elsewhere_fan = tempfile::tempdir().unwrap();
    symlink(elsewhere_fan.path(), &fan).unwrap();
    let store = store_again(dir.path());
    let temp = store.temp_dir().unwrap();
    let mut writer = ChunkWriter::new(store.clone(), Arc::default(), &temp, Vec::new()).unwrap();
    writer.write_all(&data).unwrap();
    let err = writer.finish().unwrap_err();
    assert!(err.to_string().contains("never follows links"), "{err}");
    assert_eq!(fs::read_dir(elsewhere_fan.path()).unwrap().count(), 0);
    drop((temp, store));
    fs::remove_file(&fan).unwrap();
    fs::rename(root.join("fan.real"), &fan).unwrap();
    // A link as a fan-out directory, stray files and directories: reported, left alone.
    symlink(outside.path(), root.join("chunks/cd")).unwrap();
    fs::write(root.join("chunks/notes.txt"), "x").unwrap();
    fs::create_dir_all(root.join("tmp/someone-elses")).unwrap();
    fs::write(root.join("tmp/stray"), "x").unwrap();
    fs::create_dir_all(root.join("tmp/run-dead/file-1")).unwrap();
    fs::write(root.join("tmp/run-dead/file-1/x"), "x").unwrap();
    symlink(outside.path(), root.join("tmp/run-dead/link")).unwrap();
    let exclusive = ChunkStore::try_exclusive(dir.path()).unwrap().unwrap();
    let none = Refs::default();
    let collect = || {
        let found = find_unreferenced(dir.path(), &none).unwrap();
        collect_garbage(&exclusive, found, &none, false, None).unwrap()
    };
    let collected = collect();
    assert!(collected.chunks_deleted > 3, "{collected:?}");
    assert_eq!(
        collected.strays,
        [
            "chunks/cd",
            "chunks/notes.txt",
            "tmp/someone-elses",
            "tmp/stray"
        ]
    );
    assert!(!root.join("tmp/run-dead").exists());
    assert_eq!(
        fs::read_to_string(outside.path().join("precious")).unwrap(),
        "keep"
    );
    assert_eq!(
        fs::read_to_string(outside.path().join("ab/precious")).unwrap(),
        "keep"
    );
    // The strays do not stop the next collection.
    let again = collect();
    assert_eq!((again.chunks_deleted, again.strays.len()), (0, 4));
}

#[test]
fn a_run_compares_only_its_share_of_the_chunks_it_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let store = loose_store(dir.path(), 4096);
    let data = content(300_000, 11);
    let (index, _) = write_once(&store, &data);
    let distinct: HashSet<ChunkId> = index_lines(&index).iter().map(|l| l.id).collect();
    assert!(distinct.len() > 20, "{}", distinct.len());
    // Damage every chunk: a run compares (and so repairs) exactly the ones its share picks,
    // and only looks the others up.
    for id in &distinct {
        let path = store.root.join(id.rel());
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 1;
        fs::write(&path, &bytes).unwrap();
    }
    let mut compared = HashSet::new();
    for n in 1..=3 {
        let share = Selection::new(Subset::Group { n, t: 3 }, 0);
        let picked: HashSet<ChunkId> = distinct
            .iter()
            .filter(|id| share.reads(id))
            .copied()
            .collect();
        let run = Arc::new(Run::comparing(share));
        let (again, added) = write_in(&store, &run, &data);
        assert_eq!(again, index, "the same index");
        assert_eq!(run.compared(), picked.len() as u64, "group {n}");
        assert_eq!(
            added.repaired.iter().copied().collect::<HashSet<_>>(),
            picked
        );
        assert_eq!(run.written(), picked, "what it stored: the repaired ones");
        compared.extend(picked);
    }
    assert_eq!(compared, distinct, "a cycle compares every chunk");
    let mut read = Vec::new();
    ChunkReader::new(store.clone(), &index[..], true)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data, "every chunk whole again");
}

#[test]
fn a_damaged_chunk_is_quarantined_and_stored_again_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = loose_store(dir.path(), 4096);
    let data = content(100_000, 5);
    let (index, _) = write_once(&store, &data);
    let lines = index_lines(&index);
    let damaged = lines[2].id;
    let path = store.root.join(damaged.rel());
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(store
        .read_chunk(&damaged, lines[2].len, true, &mut ChunkBuffer::default())
        .is_err());

    let run = Arc::new(Run::default());
    let (again, added) = write_in(&store, &run, &data);
    assert_eq!(again, index, "the same index");
    assert_eq!(added.repaired, [damaged]);
    // It compared every chunk it found; its verification reads back only what it stored.
    let distinct: HashSet<ChunkId> = lines.iter().map(|l| l.id).collect();
    assert_eq!(run.compared(), distinct.len() as u64);
    assert_eq!(run.written(), HashSet::from([damaged]));
    assert_eq!((added.chunks, added.bytes), (1, lines[2].stored));
    assert_eq!(
        fs::read(store.root.join(QUARANTINE_DIR).join(damaged.to_string())).unwrap(),
        bytes,
        "the damaged file is kept aside"
    );
    let mut read = Vec::new();
    ChunkReader::new(store.clone(), &index[..], true)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data);
    // Sound now: the next run reads it and stores nothing.
    let (_, added) = write_once(&store, &data);
    assert_eq!(added, Added::default());
}

#[test]
fn a_chunked_config_is_read_no_further_than_its_manifest_says() {
    use crate::format::manifest::{FileEntry, FileKind, Manifest};
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let (index, _) = write_once(&store, &[b'a'; 3000]);
    let line = index_lines(&index)[0];
    // A hostile index naming its one chunk a thousand times.
    let mut hostile = String::from("wqm-chunk-index 1\n");
    for _ in 0..1000 {
        hostile.push_str(&format!("{} {} {}\n", line.id, line.len, line.stored));
    }
    let backup_path = dir.path().join("b");
    fs::create_dir_all(backup_path.join("config")).unwrap();
    fs::write(backup_path.join("config/config.yaml.chunks"), &hostile).unwrap();
    let entry = |content_size| FileEntry {
        path: "config/config.yaml.chunks".into(),
        kind: FileKind::Config,
        size: hostile.len() as u64,
        compression: crate::compress::Stored::Chunked,
        checksum: None,
        content_size,
        content_sha256: String::new(),
    };
    let backup = crate::store::BackupDir::local(backup_path, Manifest::new("0.3.0", 1.0));
    drop(store);
    let err = backup
        .read_small_content(&entry(3000), 1 << 20)
        .unwrap_err();
    assert!(
        err.to_string().contains("longer than the 3000 bytes"),
        "{err}"
    );
    let err = backup
        .read_small_content(&entry(3_000_000), 1 << 20)
        .unwrap_err();
    assert!(err.to_string().contains("more than the 1048576"), "{err}");
    let mut reader = backup.open_checked(&entry(6000)).unwrap();
    let err = std::io::copy(&mut reader, &mut std::io::sink()).unwrap_err();
    assert!(err.to_string().contains("longer than the"), "{err}");
}

#[test]
fn open_checked_reads_a_chunked_entry_in_order() {
    use crate::checksum::{digest, Algorithm};
    use crate::format::manifest::{FileEntry, FileKind, Manifest};
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let content: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let (index, _) = write_once(&store, &content);
    assert!(index_lines(&index).len() > 1, "more than one chunk");
    let backup_path = dir.path().join("b");
    fs::create_dir_all(backup_path.join("collections")).unwrap();
    fs::write(backup_path.join("collections/a.snapshot.chunks"), &index).unwrap();
    let sha256 = |bytes: &[u8]| {
        digest(bytes, &[Algorithm::Sha256])
            .get(Algorithm::Sha256)
            .unwrap()
            .value
    };
    let entry = FileEntry {
        path: "collections/a.snapshot.chunks".into(),
        kind: FileKind::CollectionSnapshot,
        size: index.len() as u64,
        compression: crate::compress::Stored::Chunked,
        checksum: None,
        content_size: content.len() as u64,
        content_sha256: sha256(&content),
    };
    let backup = crate::store::BackupDir::local(backup_path, Manifest::new("0.3.0", 1.0));
    drop(store);
    let mut read = Vec::new();
    backup
        .open_checked(&entry)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert!(read == content, "the chunks, in order");
    // The same chunks under a manifest that describes other content: damage, at the end.
    let mut other = content.clone();
    other[123_456] ^= 1;
    let wrong = FileEntry {
        content_sha256: sha256(&other),
        ..entry
    };
    let err = backup
        .open_checked(&wrong)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    let damaged = crate::store::Damaged::from_read(&wrong.path, err);
    assert!(
        damaged.problem.starts_with("content sha256 mismatch"),
        "{damaged}"
    );
    // Compared by the index's checksum (an upload Qdrant checks): the content's sha256 is not
    // looked at, the index is, to its end.
    use crate::store::Compare;
    let compared = |entry: &FileEntry| {
        let mut read = Vec::new();
        backup
            .open_compared(entry, Compare::Stored)
            .unwrap()
            .read_to_end(&mut read)
            .map(|_| read)
            .map_err(|e| crate::store::Damaged::from_read(&entry.path, e))
    };
    let indexed = FileEntry {
        checksum: digest(&index, &[Algorithm::Xxhash64]).get(Algorithm::Xxhash64),
        ..wrong
    };
    assert_eq!(Compare::stored_for(&indexed), Compare::Stored);
    assert!(
        compared(&indexed).unwrap() == content,
        "the chunks, in order"
    );
    let mut other_index = indexed.clone();
    other_index.checksum =
        digest(b"another index", &[Algorithm::Xxhash64]).get(Algorithm::Xxhash64);
    let damaged = compared(&other_index).unwrap_err();
    assert!(
        damaged.problem.starts_with("checksum mismatch (xxhash64)"),
        "{damaged}"
    );
}

const GOLDEN_DEFAULT: [usize; 14] = [
    92783, 30828, 85001, 143402, 32738, 105704, 91723, 62302, 82529, 93835, 65974, 81609, 70489,
    9659,
];
const GOLDEN_SMALL: [usize; 15] = [
    2791, 5120, 1808, 2517, 7759, 2583, 5472, 1450, 2889, 1474, 9559, 5365, 5308, 7824, 3617,
];
const GOLDEN_FIRST_ID: &str = "2a5a20f687cb3b0208688ecf51135641e1b24c4a9ea814cad4fd489f339f06bd";
