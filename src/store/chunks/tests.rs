use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};

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
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let data = content(200_000, 1);
    let write = |data: &[u8]| {
        let temp = store.temp_dir().unwrap();
        let mut writer = ChunkWriter::new(store.clone(), temp.path(), Vec::new()).unwrap();
        writer.write_all(data).unwrap();
        writer.finish().unwrap()
    };
    let (index, added) = write(&data);
    assert!(added.chunks > 10 && added.bytes > 0, "{added:?}");
    let (again, added_again) = write(&data);
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
fn files_written_side_by_side_may_store_the_same_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open_for_writing(dir.path(), 4096).unwrap();
    let temp = store.temp_dir().unwrap();
    // Zeros, as Qdrant's sparse page files hold: the same chunks in every file.
    let data = vec![0u8; 300_000];
    let indexes: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut writer =
                        ChunkWriter::new(store.clone(), temp.path(), Vec::new()).unwrap();
                    for piece in data.chunks(1000) {
                        writer.write_all(piece).unwrap();
                    }
                    writer.finish().unwrap().0
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(indexes.iter().all(|index| index == &indexes[0]));
    let mut read = Vec::new();
    ChunkReader::new(store.clone(), &indexes[0][..], true)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data);
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
    let temp = store.temp_dir().unwrap();
    let mut writer = ChunkWriter::new(store.clone(), temp.path(), Vec::new()).unwrap();
    writer.write_all(&content(100_000, 3)).unwrap();
    let (index, added) = writer.finish().unwrap();
    let mut lines = IndexReader::new(&index[..]).unwrap();
    let kept = lines.next_line().unwrap().unwrap().id;
    assert!(
        ChunkStore::try_exclusive(dir.path()).unwrap().is_none(),
        "a writer holds the store"
    );
    drop(store);
    let exclusive = ChunkStore::try_exclusive(dir.path()).unwrap().unwrap();
    let referenced = HashSet::from([kept]);
    let dry = collect_garbage(&exclusive, &referenced, true).unwrap();
    assert_eq!(dry.chunks_deleted + 1, added.chunks);
    let done = collect_garbage(&exclusive, &referenced, false).unwrap();
    assert_eq!(done, dry);
    assert!(exclusive.stored_size(&kept).is_some());
    assert_eq!(
        collect_garbage(&exclusive, &referenced, false)
            .unwrap()
            .chunks_deleted,
        0
    );
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
