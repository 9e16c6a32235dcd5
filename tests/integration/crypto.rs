//! The cryptographic core through the library's public API: streaming a large object with
//! bounded memory, and hostile key objects refused before any key derivation.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use wqm::crypto::{
    CryptoError, DecryptingReader, EncryptingWriter, Identity, KdfParams, KeyLabel, KeyObject,
    Keyring, MasterKey, Password, BATCH, HEADER_LEN, KEY_OBJECT_LIMIT, SEGMENT, TAG_LEN,
};

/// Bytes of a fixed pattern (a period of 251, prime to the segment size), made as they are read:
/// never all in memory.
struct Generated {
    left: usize,
    at: usize,
    pattern: Vec<u8>,
}

impl Generated {
    fn new(len: usize) -> Self {
        let pattern: Vec<u8> = (0..251u32).map(|i| (i * 97 % 251) as u8).collect();
        Generated {
            left: len,
            at: 0,
            pattern: pattern.repeat(2),
        }
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.left).min(251);
        out[..n].copy_from_slice(&self.pattern[self.at..self.at + n]);
        self.at = (self.at + n) % 251;
        self.left -= n;
        Ok(n)
    }
}

/// A sink that keeps only how much it received, sharing the count.
struct Counted {
    bytes: std::rc::Rc<std::cell::Cell<usize>>,
    kept: Vec<u8>,
}

impl Write for Counted {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.bytes.set(self.bytes.get() + data.len());
        self.kept.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A source that counts what was taken from it.
struct Taken<'a> {
    inner: &'a [u8],
    taken: std::rc::Rc<std::cell::Cell<usize>>,
}

impl Read for Taken<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.taken.set(self.taken.get() + n);
        Ok(n)
    }
}

/// 20 MiB streamed through both adapters: neither holds more than one segment at any moment
/// (what went in minus what came out stays under a segment and its tag), and the content comes
/// back whole.
#[test]
fn a_20_mib_object_streams_with_bounded_memory() {
    const LEN: usize = 20 << 20;
    let key = MasterKey::generate().unwrap();
    let id = Identity::file("nightly", "collections/docs.snapshot");
    let emitted = std::rc::Rc::new(std::cell::Cell::new(0));
    let sink = Counted {
        bytes: emitted.clone(),
        kept: Vec::with_capacity(LEN + 1024),
    };
    let mut writer = EncryptingWriter::new(sink, &key, &id).unwrap();
    let mut source = Generated::new(LEN);
    let mut accepted = 0usize;
    let mut piece = vec![0u8; 300_007];
    loop {
        let n = read_up_to(&mut source, &mut piece);
        if n == 0 {
            break;
        }
        writer.write_all(&piece[..n]).unwrap();
        accepted += n;
        let sealed_plaintext = emitted.get()
            - HEADER_LEN
            - (emitted.get() - HEADER_LEN) / (SEGMENT + TAG_LEN) * TAG_LEN;
        assert!(
            accepted - sealed_plaintext <= SEGMENT,
            "the writer holds {} bytes",
            accepted - sealed_plaintext
        );
    }
    let object = writer.finish().unwrap().kept;
    assert_eq!(
        object.len(),
        HEADER_LEN + LEN + (LEN / SEGMENT + 1) * TAG_LEN
    );

    let taken = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut reader = DecryptingReader::new(
        Taken {
            inner: &object,
            taken: taken.clone(),
        },
        &key,
        &id,
    )
    .unwrap();
    let mut expected = Generated::new(LEN);
    let (mut delivered, mut most_ahead) = (0usize, 0usize);
    let mut out = vec![0u8; 65_536];
    let mut want = vec![0u8; 65_536];
    loop {
        let n = reader.read(&mut out).unwrap();
        if n == 0 {
            break;
        }
        expected.read_exact(&mut want[..n]).unwrap();
        assert!(out[..n] == want[..n], "content differs at {delivered}");
        delivered += n;
        most_ahead = most_ahead.max(taken.get() - delivered);
    }
    assert_eq!(delivered, LEN);
    // A batch of segments at a time, authenticated side by side.
    assert!(
        most_ahead <= HEADER_LEN + BATCH * (SEGMENT + TAG_LEN) + LEN / SEGMENT * TAG_LEN,
        "the reader ran {most_ahead} bytes ahead"
    );
}

/// Fills `piece` as far as the source goes.
fn read_up_to(source: &mut impl Read, piece: &mut [u8]) -> usize {
    let mut got = 0;
    while got < piece.len() {
        match source.read(&mut piece[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    got
}

fn label() -> KeyLabel {
    KeyLabel {
        created: "2026-12-04T00:00:00Z".into(),
        host: "h".into(),
        username: None,
    }
}

/// A genuine key object, as JSON to edit.
fn genuine() -> (serde_json::Value, MasterKey) {
    let master = MasterKey::generate().unwrap();
    let object =
        KeyObject::new(&master, &Password::new("pw"), KdfParams::FOR_TESTS, label()).unwrap();
    (serde_json::from_slice(&object.to_json()).unwrap(), master)
}

/// Hostile key objects — absurd KDF parameters, bad base64, huge fields, not JSON — are each
/// refused at once, naming the object, before any key derivation.
#[test]
fn hostile_key_objects_are_refused_quickly() {
    let (good, _) = genuine();
    let edit = |path: &[&str], value: serde_json::Value| {
        let mut json = good.clone();
        let mut at = &mut json;
        for step in &path[..path.len() - 1] {
            at = &mut at[*step];
        }
        at[path[path.len() - 1]] = value;
        serde_json::to_vec(&json).unwrap()
    };
    let params = |m: u64, t: u64, p: u64| {
        edit(
            &["kdf", "params"],
            serde_json::json!({"m_kib": m, "t": t, "p": p}),
        )
    };
    let kdf_out_of_bounds: Vec<Vec<u8>> = vec![
        params(4 << 20, 3, 1), // 4 GiB
        params(u32::MAX as u64, u32::MAX as u64, 1),
        params(256 << 10, 1000, 1), // 256 MiB × 1000 passes
        params(32 << 10, 0, 1),
        params(64, 1, 0),
        params(64, 1, 255),
        params(4, 1, 1), // less than Argon2id's minimum
    ];
    let unreadable: Vec<Vec<u8>> = vec![
        edit(&["wrapped"], "not base64!!".into()),
        edit(&["wrapped"], "QUJD".into()), // 3 bytes
        edit(&["wrapped"], "A".repeat(60_000).into()),
        edit(&["kdf", "salt"], "@@@@".into()),
        edit(&["kdf", "salt"], "QUJD".into()),
        edit(&["kdf", "name"], "scrypt".into()),
        edit(&["version"], 2.into()),
        edit(&["key_id"], "../../etc/passwd".into()),
        edit(&["host"], "h".repeat(10_000).into()),
        edit(&["username"], "u".repeat(10_000).into()),
        edit(&["host"], "h".repeat(KEY_OBJECT_LIMIT).into()),
        edit(&["kdf", "params", "m_kib"], "many".into()),
        b"not json".to_vec(),
        vec![b'['; 1 << 20],
        b"{}".to_vec(),
        Vec::new(),
    ];
    let started = Instant::now();
    for (i, bytes) in kdf_out_of_bounds.iter().enumerate() {
        let begun = Instant::now();
        let error = KeyObject::parse(bytes, "keys/hostile").unwrap_err();
        assert!(
            matches!(error, CryptoError::KdfParams { ref what, .. } if what == "keys/hostile"),
            "case {i}: {error:?}"
        );
        assert!(begun.elapsed() < Duration::from_millis(200), "case {i}");
    }
    for (i, bytes) in unreadable.iter().enumerate() {
        let begun = Instant::now();
        let error = KeyObject::parse(bytes, "keys/hostile").unwrap_err();
        assert!(
            matches!(error, CryptoError::BadKeyObject { ref what, .. } if what == "keys/hostile"),
            "case {i}: {error:?}"
        );
        assert!(begun.elapsed() < Duration::from_millis(200), "case {i}");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A keyring with one hostile key object among good ones still opens, reporting the hostile
/// one; made only of hostile ones, it is refused with the first's error.
#[test]
fn a_hostile_key_object_beside_good_ones_is_reported_not_fatal() {
    let (good, master) = genuine();
    let good = serde_json::to_vec(&good).unwrap();
    let hostile = br#"{"version":1,"kdf":{"name":"argon2id","params":{"m_kib":4294967295,"t":4294967295,"p":1},"salt":"AAAAAAAAAAAAAAAAAAAAAA=="},"created":"x","host":"h","key_id":"00000000000000000000000000000000","wrapped":""}"#;
    let (ring, refused) =
        Keyring::parse([("keys/hostile", &hostile[..]), ("keys/good", &good[..])]).unwrap();
    assert_eq!(refused.len(), 1);
    assert!(matches!(refused[0], CryptoError::KdfParams { .. }));
    let (opened, _) = ring.open(&Password::new("pw")).unwrap();
    assert_eq!(opened.id(), master.id());
    let alone = Keyring::parse([("keys/hostile", &hostile[..])]).unwrap_err();
    assert!(alone.to_string().contains("`keys/hostile`"), "{alone}");
}

/// The default KDF is within the bounds a stored key object may ask for, with room to spare.
#[test]
fn the_default_kdf_is_accepted_with_room_to_spare() {
    KdfParams::DEFAULT.check().unwrap();
    let doubled = KdfParams {
        iterations: 2 * KdfParams::DEFAULT.iterations,
        ..KdfParams::DEFAULT
    };
    doubled.check().unwrap();
}
