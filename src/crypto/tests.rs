//! Known-answer vectors for every primitive as wqm calls it, and the properties of the object
//! format: any change, truncation, extension, reordering or swap is refused.

use std::io::{Read, Write};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use proptest::prelude::*;

use super::keys::argon2id;
use super::object::{DecryptingReader, EncryptingWriter};
use super::*;
use crate::checksum::to_hex;

fn hex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn label() -> KeyLabel {
    KeyLabel {
        created: "2026-12-04T00:00:00Z".into(),
        host: "test-host".into(),
        username: Some("tester".into()),
    }
}

fn master() -> MasterKey {
    MasterKey::generate().unwrap()
}

// ---- known answers --------------------------------------------------------------------------

/// RFC 9106, section 5.3: Argon2id, version 0x13, through the same function wqm derives keys with.
#[test]
fn argon2id_matches_rfc_9106() {
    let params = KdfParams {
        memory_kib: 32,
        iterations: 3,
        parallelism: 4,
    };
    let mut tag = [0u8; 32];
    argon2id(params, &[1; 32], &[2; 16], &[3; 8], &[4; 12], &mut tag).unwrap();
    assert_eq!(
        tag.to_vec(),
        hex("0d 64 0d f5 8d 78 76 6c 08 c0 37 a3 4a 8b 53 c9 d0 1e f0 45 2d 75 b6 5e b5 25 20 e9 6b 01 e6 59")
    );
}

/// draft-irtf-cfrg-xchacha-03, appendix A.3.1: AEAD_XChaCha20_Poly1305.
#[test]
fn xchacha20_poly1305_matches_the_draft() {
    let key: Vec<u8> = (0x80..=0x9f).collect();
    let nonce: Vec<u8> = (0x40..=0x57).collect();
    let aad = hex("50 51 52 53 c0 c1 c2 c3 c4 c5 c6 c7");
    let plaintext: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected = hex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
         731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
         2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
         21f9664c97637da9768812f615c68b13b52e
         c0875924c1c7987947deafd8780acf49",
    );
    let cipher = XChaCha20Poly1305::new_from_slice(&key).unwrap();
    let nonce = XNonce::try_from(&nonce[..]).unwrap();
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(sealed, expected);
    let opened = cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(opened, plaintext);
}

/// RFC 4231, test cases 1, 2 and 6 (a key longer than the block), through `chunk_id`'s HMAC.
#[test]
fn hmac_sha256_matches_rfc_4231() {
    use hmac::{Hmac, Mac};
    let cases: [(Vec<u8>, &[u8], &str); 3] = [
        (
            vec![0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ];
    for (key, data, expected) in cases {
        let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        mac.update(data);
        assert_eq!(to_hex(&mac.finalize().into_bytes()), expected);
    }
}

/// Chunk names are keyed: the same content has another name under another key, and the name is
/// not its sha256.
#[test]
fn chunk_ids_depend_on_the_key() {
    let (a, b) = (master(), master());
    let content = b"a chunk of a snapshot";
    assert_eq!(a.chunk_id(content), a.chunk_id(content));
    assert_ne!(a.chunk_id(content), b.chunk_id(content));
    assert_ne!(a.chunk_id(content), crate::checksum::sha256(content));
    assert_ne!(a.chunk_id(content), a.chunk_id(b"another chunk"));
}

// ---- keys -----------------------------------------------------------------------------------

#[test]
fn a_key_object_round_trips_and_refuses_a_wrong_password() {
    let master = master();
    let password = Password::new("correct horse");
    let object = KeyObject::new(&master, &password, KdfParams::FOR_TESTS, label()).unwrap();
    let parsed = KeyObject::parse(&object.to_json(), "keys/x").unwrap();
    assert_eq!(parsed, object);
    let opened = parsed.unwrap_master(&password).unwrap();
    assert_eq!(opened.id(), master.id());
    assert_eq!(opened.chunk_id(b"x"), master.chunk_id(b"x"));
    let wrong = parsed.unwrap_master(&Password::new("correct horsf"));
    assert!(
        matches!(wrong, Err(CryptoError::WrongPassword)),
        "{wrong:?}"
    );
    assert_eq!(
        CryptoError::WrongPassword.to_string(),
        "wrong password or no key for this repository"
    );
    assert!(matches!(
        KeyObject::new(&master, &Password::new(""), KdfParams::FOR_TESTS, label()),
        Err(CryptoError::EmptyPassword)
    ));
}

#[test]
fn the_key_object_json_has_the_documented_fields() {
    let object = KeyObject::new(
        &master(),
        &Password::new("p"),
        KdfParams::FOR_TESTS,
        label(),
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&object.to_json()).unwrap();
    assert_eq!(json["version"], 1);
    assert_eq!(json["kdf"]["name"], "argon2id");
    assert_eq!(
        json["kdf"]["params"],
        serde_json::json!({"m_kib": 8, "t": 1, "p": 1})
    );
    assert_eq!(json["host"], "test-host");
    assert_eq!(json["username"], "tester");
    assert_eq!(json["created"], "2026-12-04T00:00:00Z");
    assert_eq!(json["key_id"].as_str().unwrap().len(), 32);
    // A 24-byte nonce, the 80-byte master key and a 16-byte tag.
    assert_eq!(json["wrapped"].as_str().unwrap().len(), 160);
}

/// The wrapping authenticates the key object's id and KDF: a wrapped key moved into another key
/// object, or parameters edited, do not open.
#[test]
fn a_wrapped_key_moved_between_key_objects_does_not_open() {
    let master = master();
    let password = Password::new("same password");
    let a = KeyObject::new(&master, &password, KdfParams::FOR_TESTS, label()).unwrap();
    let b = KeyObject::new(&master, &password, KdfParams::FOR_TESTS, label()).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
    let other: serde_json::Value = serde_json::from_slice(&b.to_json()).unwrap();
    json["key_id"] = other["key_id"].clone();
    let moved = KeyObject::parse(json.to_string().as_bytes(), "keys/moved").unwrap();
    assert!(matches!(
        moved.unwrap_master(&password),
        Err(CryptoError::WrongPassword)
    ));
    let mut json: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
    json["kdf"]["params"]["t"] = 2.into();
    let edited = KeyObject::parse(json.to_string().as_bytes(), "keys/edited").unwrap();
    assert!(matches!(
        edited.unwrap_master(&password),
        Err(CryptoError::WrongPassword)
    ));
}

#[test]
fn keys_are_added_removed_and_changed_without_touching_the_master_key() {
    let first = Password::new("first");
    let (mut ring, master) = Keyring::init(&first, KdfParams::FOR_TESTS, label()).unwrap();
    let (_, first_id) = ring.open(&first).unwrap();
    let data = encrypt(&master, &Identity::manifest("b1"), b"manifest").unwrap();

    let second = Password::new("second");
    let second_id = ring
        .add(&master, &second, KdfParams::FOR_TESTS, label())
        .unwrap()
        .key_id()
        .to_string();
    assert_eq!(ring.keys().len(), 2);
    let (opened, by) = ring.open(&second).unwrap();
    assert_eq!(
        (opened.id(), by.as_str()),
        (master.id(), second_id.as_str())
    );

    // A key cannot remove itself (so the last key never goes); another key can.
    assert!(matches!(
        ring.remove(&first_id, &first_id),
        Err(CryptoError::KeyInUse { .. })
    ));
    assert!(matches!(
        ring.remove("0123456789abcdef0123456789abcdef", &first_id),
        Err(CryptoError::NoSuchKey { .. })
    ));
    let removed = ring.remove(&first_id, &second_id).unwrap();
    assert_eq!(removed.key_id(), first_id);
    assert!(matches!(ring.open(&first), Err(CryptoError::WrongPassword)));

    // passwd: a new key object for the new password, the old one gone; the data still opens.
    let third = Password::new("third");
    let (new, old) = ring
        .change_password(&master, &second_id, &third, KdfParams::FOR_TESTS, label())
        .unwrap();
    assert_eq!(old.key_id(), second_id);
    assert_ne!(new.key_id(), second_id);
    assert_eq!(ring.keys().len(), 1);
    assert!(matches!(
        ring.open(&second),
        Err(CryptoError::WrongPassword)
    ));
    let (reopened, _) = ring.open(&third).unwrap();
    assert_eq!(
        decrypt(&reopened, &Identity::manifest("b1"), &data).unwrap(),
        b"manifest"
    );
    // The keyring survives being stored and read back.
    let stored: Vec<(String, Vec<u8>)> = ring
        .keys()
        .iter()
        .map(|k| (format!("keys/{}", k.key_id()), k.to_json()))
        .collect();
    let (parsed, refused) =
        Keyring::parse(stored.iter().map(|(n, b)| (n.as_str(), b.as_slice()))).unwrap();
    assert!(refused.is_empty());
    assert_eq!(parsed.open(&third).unwrap().0.id(), master.id());
    assert!(matches!(
        Keyring::default().open(&third),
        Err(CryptoError::WrongPassword)
    ));
}

/// No secret in any `Debug` or error text.
#[test]
fn nothing_secret_is_ever_shown() {
    let password = Password::new("hunter2-secret");
    let (ring, master) = Keyring::init(&password, KdfParams::FOR_TESTS, label()).unwrap();
    let shown = format!("{password:?} {master:?} {ring:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains(&master.id_hex()));
    let object = &ring.keys()[0];
    let json: serde_json::Value = serde_json::from_slice(&object.to_json()).unwrap();
    assert!(!shown.contains(json["wrapped"].as_str().unwrap()));
    let error = ring.open(&Password::new("hunter3-secret")).unwrap_err();
    assert!(!format!("{error} {error:?}").contains("hunter"));
}

// ---- objects --------------------------------------------------------------------------------

/// Small segments make every property cheap to test across several segments.
const SMALL: usize = 64;

fn encrypt_small(key: &MasterKey, identity: &Identity, plaintext: &[u8]) -> Vec<u8> {
    let mut writer = EncryptingWriter::with_segment(Vec::new(), key, identity, SMALL).unwrap();
    writer.write_all(plaintext).unwrap();
    writer.finish().unwrap()
}

fn decrypt_small(
    key: &MasterKey,
    identity: &Identity,
    object: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut reader = DecryptingReader::with_segment(object, key, identity, SMALL)?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| object::from_io(e, identity))?;
    Ok(out)
}

#[test]
fn objects_round_trip_at_every_segment_boundary() {
    let key = master();
    let id = Identity::file("b1", "collections/c.snapshot");
    for len in [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL, 3 * SMALL + 5] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let object = encrypt_small(&key, &id, &plaintext);
        // Header, full segments, and always a short last one.
        let segments = len / SMALL + 1;
        assert_eq!(object.len(), HEADER_LEN + len + segments * TAG_LEN, "{len}");
        assert_eq!(decrypt_small(&key, &id, &object).unwrap(), plaintext);
    }
    // The real segment size, in memory, across a boundary.
    let plaintext: Vec<u8> = (0..SEGMENT + 100).map(|i| (i % 251) as u8).collect();
    let object = encrypt(&key, &id, &plaintext).unwrap();
    assert_eq!(object.len(), HEADER_LEN + plaintext.len() + 2 * TAG_LEN);
    assert_eq!(decrypt(&key, &id, &object).unwrap(), plaintext);
    assert_eq!(
        Header::parse(&object, "x").unwrap().key_id_hex(),
        key.id_hex()
    );
}

#[test]
fn the_header_says_nothing_but_the_format_and_the_key() {
    let key = master();
    let a = encrypt(&key, &Identity::manifest("nightly-2026-12-01"), b"short").unwrap();
    let b = encrypt(&key, &Identity::manifest("x"), &vec![7u8; 5000]).unwrap();
    assert_eq!(&a[..8], b"WQMCRYPT");
    assert_eq!(a[8], 1);
    assert_eq!(a[..25], b[..25], "magic, format and key id only");
    assert_ne!(
        a[25..HEADER_LEN],
        b[25..HEADER_LEN],
        "a fresh nonce prefix each time"
    );
    // The same content encrypts differently every time.
    let again = encrypt(&key, &Identity::manifest("nightly-2026-12-01"), b"short").unwrap();
    assert_ne!(a, again);
}

#[test]
fn objects_of_another_key_or_format_are_named() {
    let (key, other) = (master(), master());
    let id = Identity::chunk(&[9; 32]);
    let object = encrypt(&key, &id, b"data").unwrap();
    assert!(matches!(
        decrypt(&other, &id, &object),
        Err(CryptoError::OtherKey { .. })
    ));
    let mut newer = object.clone();
    newer[8] = 2;
    let error = decrypt(&key, &id, &newer).unwrap_err();
    assert!(
        matches!(error, CryptoError::UnknownFormat { .. }),
        "{error:?}"
    );
    let error = decrypt(&key, &id, b"{\"plain\": \"json\"}").unwrap_err();
    assert!(
        matches!(error, CryptoError::UnknownFormat { .. }),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .contains(&format!("`chunk/{}`", to_hex(&[9; 32]))));
}

fn refused(result: Result<Vec<u8>, CryptoError>) -> bool {
    matches!(
        result,
        Err(CryptoError::Damaged { .. }
            | CryptoError::Truncated { .. }
            | CryptoError::UnknownFormat { .. }
            | CryptoError::OtherKey { .. })
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any single changed byte — header, any segment, any tag — is refused.
    #[test]
    fn any_changed_byte_is_refused(
        plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let key = master();
        let id = Identity::file("b", "f");
        let mut object = encrypt_small(&key, &id, &plaintext);
        let i = at.index(object.len());
        object[i] ^= flip;
        prop_assert!(refused(decrypt_small(&key, &id, &object)), "byte {} of {}", i, object.len());
    }

    /// Truncated at any point, or with anything appended, the object is refused.
    #[test]
    fn truncation_and_trailing_data_are_refused(
        plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        at in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..100),
    ) {
        let key = master();
        let id = Identity::file("b", "f");
        let object = encrypt_small(&key, &id, &plaintext);
        let cut = at.index(object.len());
        prop_assert!(refused(decrypt_small(&key, &id, &object[..cut])), "cut at {}", cut);
        let extended = [&object[..], &extra[..]].concat();
        prop_assert!(refused(decrypt_small(&key, &id, &extended)));
    }

    /// Two objects swapped (each stored under the other's name), or segments reordered, are
    /// refused, even when their content is the same.
    #[test]
    fn swapped_objects_and_reordered_segments_are_refused(
        plaintext in proptest::collection::vec(any::<u8>(), 2 * SMALL..6 * SMALL),
        same in any::<bool>(),
    ) {
        let key = master();
        let (a, b) = (Identity::chunk(&[1; 32]), Identity::chunk(&[2; 32]));
        let object_a = encrypt_small(&key, &a, &plaintext);
        let object_b = encrypt_small(&key, &b, if same { &plaintext } else { &plaintext[1..] });
        prop_assert!(refused(decrypt_small(&key, &b, &object_a)));
        prop_assert!(refused(decrypt_small(&key, &a, &object_b)));
        let (x, y) = (Identity::file("b1", "f"), Identity::file("b2", "f"));
        prop_assert!(refused(decrypt_small(&key, &y, &encrypt_small(&key, &x, &plaintext))));
        // Segments 0 and 1 exchanged.
        let s = SMALL + TAG_LEN;
        let mut reordered = object_a.clone();
        reordered[HEADER_LEN..HEADER_LEN + s].copy_from_slice(&object_a[HEADER_LEN + s..HEADER_LEN + 2 * s]);
        reordered[HEADER_LEN + s..HEADER_LEN + 2 * s].copy_from_slice(&object_a[HEADER_LEN..HEADER_LEN + s]);
        prop_assert!(refused(decrypt_small(&key, &a, &reordered)));
        // A segment dropped.
        let dropped = [&object_a[..HEADER_LEN], &object_a[HEADER_LEN + s..]].concat();
        prop_assert!(refused(decrypt_small(&key, &a, &dropped)));
    }
}

/// At the real segment size, a change in the header, in each segment and in each tag, and a cut
/// at a segment boundary, are refused.
#[test]
fn changes_at_the_real_segment_size_are_refused() {
    let key = master();
    let id = Identity::file("b", "snapshot");
    let plaintext = vec![0x5a; SEGMENT + 1000];
    let object = encrypt(&key, &id, &plaintext).unwrap();
    let first_tag = HEADER_LEN + SEGMENT;
    for at in [
        0,
        8,
        30,
        HEADER_LEN,
        first_tag - 1,
        first_tag,
        first_tag + TAG_LEN,
        object.len() - TAG_LEN,
        object.len() - 1,
    ] {
        let mut damaged = object.clone();
        damaged[at] ^= 0x01;
        assert!(refused(decrypt(&key, &id, &damaged)), "byte {at}");
    }
    let error = decrypt(&key, &id, &object[..first_tag + TAG_LEN]).unwrap_err();
    assert!(matches!(error, CryptoError::Truncated { .. }), "{error:?}");
    let mut damaged = object.clone();
    damaged[HEADER_LEN + 10] ^= 0x80;
    let error = decrypt(&key, &id, &damaged).unwrap_err();
    assert!(matches!(error, CryptoError::Damaged { ref what } if what == "file/b/snapshot"));
}

/// After the first failure a reader stays failed, and hands out nothing unauthenticated: the
/// segments are authenticated a batch of four at a time, so the first batch comes out whole
/// and the damaged fifth segment fails the second.
#[test]
fn a_failed_reader_stays_failed() {
    let key = master();
    let id = Identity::file("b", "f");
    let mut object = encrypt_small(&key, &id, &[1u8; 6 * SMALL]);
    object[HEADER_LEN + 4 * (SMALL + TAG_LEN) + 3] ^= 1; // the fifth segment
    let mut reader = DecryptingReader::with_segment(&object[..], &key, &id, SMALL).unwrap();
    let mut first = vec![0u8; 4 * SMALL];
    reader.read_exact(&mut first).unwrap();
    let mut buffer = [0u8; 16];
    assert!(reader.read(&mut buffer).is_err());
    assert!(reader.read(&mut buffer).is_err());
}
