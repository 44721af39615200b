//! Round trip, reproducibility and the attacks a release must refuse.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use release_manifest::{
    CHUNKS_DIR, CheckError, Chunk, ChunkVerifier, Error, Hex32, KeyPair, MANIFEST_FILE, Manifest,
    ManifestFields, PublicKey, ReleaseWriter, SIGNATURES_FILE, Version, add_signatures,
    chunk_file_name, extract_image, read_image, sign_document, verify_signed,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn key(n: u8) -> KeyPair {
    KeyPair::from_seed([n; 32])
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 5.5 MiB: random, two identical zero chunks (deduped), random tail.
fn usr_image() -> Vec<u8> {
    let mut v = noise(1, 2 * MIB);
    v.extend(vec![0u8; 2 * MIB]);
    v.extend(noise(2, MIB + MIB / 2));
    v
}

fn fields() -> ManifestFields {
    ManifestFields {
        board: "qemu-x86_64".into(),
        arch: "x86_64".into(),
        version: Version::parse("1.2.3").expect("version"),
        created: 1_700_000_000,
        expires: Some(1_800_000_000),
        packages: vec!["systemd=252.30-1".into(), "containerd=1.7.24".into()],
    }
}

fn write_release(dir: &Path, keys: &[KeyPair], threads: usize) -> PathBuf {
    let mut w = ReleaseWriter::create(dir).expect("create");
    w.set_threads(threads);
    let usr = dir.join("../usr.img");
    fs::write(&usr, usr_image()).expect("write usr");
    w.add_image_file("usr", &usr, MIB as u64, None)
        .expect("usr");
    w.add_image("kernel", &noise(3, 5000)[..], 4096, None)
        .expect("kernel");
    w.add_image("cmdline", &b"console=ttyS0 quiet"[..], 4096, None)
        .expect("cmdline");
    w.add_image("boot.sig", &b""[..], 4096, None)
        .expect("empty");
    w.finish(fields(), keys).expect("finish")
}

fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["", CHUNKS_DIR] {
        for e in fs::read_dir(dir.join(sub)).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_file() {
                out.insert(
                    format!("{sub}/{}", p.file_name().expect("name").to_string_lossy()),
                    fs::read(&p).expect("read"),
                );
            }
        }
    }
    out
}

fn release() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("rel");
    write_release(&dir, &[key(1)], 2);
    (t, dir)
}

#[test]
fn round_trip() {
    let (_t, dir) = release();
    let m = Manifest::load(&dir, &[key(1).public()], 1).expect("load");
    assert_eq!(m.version.to_string(), "1.2.3");
    let usr = m.image("usr").expect("usr");
    assert_eq!(usr.chunks.len(), 6);
    // The two zero chunks share one file.
    assert_eq!(usr.chunks[2].file, usr.chunks[3].file);
    assert_eq!(
        fs::read_dir(dir.join(CHUNKS_DIR)).expect("dir").count(),
        5 + 2 + 1
    );

    let mut out = Vec::new();
    assert_eq!(
        extract_image(&dir, &m, "usr", &mut out).expect("extract"),
        usr.size
    );
    assert_eq!(out, usr_image());
    let mut via_read = Vec::new();
    read_image(&dir, &m, "kernel")
        .expect("open")
        .read_to_end(&mut via_read)
        .expect("read");
    assert_eq!(via_read, noise(3, 5000));
    let mut empty = Vec::new();
    extract_image(&dir, &m, "boot.sig", &mut empty).expect("empty image");
    assert!(empty.is_empty());
    assert!(matches!(
        extract_image(&dir, &m, "nope", &mut empty),
        Err(Error::UnknownImage(_))
    ));

    let text = fs::read_to_string(dir.join(MANIFEST_FILE)).expect("read");
    assert!(
        text.starts_with("{\n  \"format\": 1,\n  \"board\": \"qemu-x86_64\""),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    // Every file is published as 0644, and no temporary file is left.
    for file in [usr.chunks[0].file.as_str(), MANIFEST_FILE, SIGNATURES_FILE] {
        let mode = fs::metadata(dir.join(file))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{file}");
    }
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, [CHUNKS_DIR, MANIFEST_FILE, SIGNATURES_FILE]);
}

#[test]
fn reproducible() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write_release(&a, &[key(1), key(2)], 2);
    write_release(&b, &[key(2), key(1), key(2)], 1);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    assert!(fa == fb, "two writes differ");
    assert!(matches!(
        ReleaseWriter::create(&a),
        Err(Error::ReleaseExists { .. })
    ));
}

#[test]
fn tampered_chunk_is_refused() {
    let (_t, dir) = release();
    let m = Manifest::load(&dir, &[key(1).public()], 1).expect("load");
    let path = dir.join(&m.image("usr").expect("usr").chunks[1].file);
    let mut bytes = fs::read(&path).expect("read");
    bytes[100] ^= 1;
    fs::write(&path, &bytes).expect("write");
    let err = extract_image(&dir, &m, "usr", &mut Vec::new()).expect_err("tampered");
    assert!(matches!(err, Error::ChunkZsha256 { index: 1 }), "{err}");

    bytes.pop();
    fs::write(&path, &bytes).expect("write");
    let err = extract_image(&dir, &m, "usr", &mut Vec::new()).expect_err("truncated");
    assert!(matches!(err, Error::ChunkZsize { index: 1, .. }), "{err}");
}

#[test]
fn tampered_manifest_is_refused() {
    let (_t, dir) = release();
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).expect("read");
    fs::write(&path, text.replacen("1.2.3", "9.2.3", 1)).expect("write");
    let err = Manifest::load(&dir, &[key(1).public()], 1).expect_err("tampered");
    assert!(matches!(err, Error::BadSignature { .. }), "{err}");
}

#[test]
fn wrong_key_is_refused() {
    let (_t, dir) = release();
    let err = Manifest::load(&dir, &[key(9).public()], 1).expect_err("wrong key");
    assert!(matches!(err, Error::NoTrustedSignature { .. }), "{err}");
}

#[test]
fn threshold_needs_distinct_keys() {
    let doc = b"{\"format\": 1}\n";
    let trusted = [key(1).public(), key(2).public(), key(3).public()];
    let one = sign_document(doc, &[key(1)]).expect("sign");
    let err = verify_signed(doc, &one, &trusted, 2).expect_err("one of two");
    assert!(
        matches!(
            err,
            Error::TooFewSignatures {
                valid: 1,
                required: 2
            }
        ),
        "{err}"
    );

    // The same signature twice still counts once.
    let entry = key(1).sign(doc);
    let dup = serde_json::to_vec(&[&entry, &entry]).expect("json");
    let err = verify_signed(doc, &dup, &trusted, 2).expect_err("duplicate");
    assert!(
        matches!(
            err,
            Error::TooFewSignatures {
                valid: 1,
                required: 2
            }
        ),
        "{err}"
    );

    // A second key added later (separate signers) meets the threshold.
    let two = add_signatures(doc, &one, &[key(3)]).expect("add");
    verify_signed(doc, &two, &trusted, 2).expect("two of three");
    // An untrusted extra signature neither helps nor hurts.
    let three = add_signatures(doc, &one, &[key(7)]).expect("add");
    verify_signed(doc, &three, &trusted, 1).expect("one of three");
    assert!(matches!(
        verify_signed(doc, &three, &trusted, 2),
        Err(Error::TooFewSignatures { valid: 1, .. })
    ));
    assert!(matches!(
        verify_signed(doc, &two, &trusted, 0),
        Err(Error::InvalidThreshold { .. })
    ));
    assert!(matches!(
        verify_signed(doc, &two, &trusted, 4),
        Err(Error::InvalidThreshold { .. })
    ));
}

#[test]
fn malformed_signatures_are_refused() {
    let doc = b"x";
    let trusted = [key(1).public()];
    for bad in [
        &b"{"[..],
        b"{}",
        b"[{\"keyid\": \"00\", \"sig\": \"00\"}]",
        b"[{\"keyid\": \"0011223344556677\", \"sig\": \"zz\"}]",
        b"[{\"keyid\": \"0011223344556677\", \"sig\": \"00\", \"extra\": 1}]",
    ] {
        let err = verify_signed(doc, bad, &trusted, 1).expect_err("malformed");
        assert!(matches!(err, Error::MalformedSignatures(_)), "{err}");
    }
    let err = verify_signed(doc, b"[]", &trusted, 1).expect_err("empty");
    assert!(matches!(err, Error::NoTrustedSignature { .. }), "{err}");
}

/// Re-signs an edited manifest, as a compromised or buggy signer would.
fn resign(dir: &Path, edit: impl FnOnce(&mut Manifest)) -> Manifest {
    let mut m = Manifest::load(dir, &[key(1).public()], 1).expect("load");
    edit(&mut m);
    let doc = m.to_json();
    fs::write(dir.join(MANIFEST_FILE), &doc).expect("write");
    fs::write(
        dir.join(SIGNATURES_FILE),
        sign_document(&doc, &[key(1)]).expect("sign"),
    )
    .expect("write");
    m
}

#[test]
fn decompression_bomb_is_refused() {
    // 64 MiB of zeros compress to a few KiB; the entry claims 4096 bytes.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 * MIB], 19).expect("compress");
    let zsha256 = Hex32(Sha256::digest(&bomb).into());
    let chunk = Chunk {
        index: 0,
        offset: 0,
        size: 4096,
        sha256: Hex32(Sha256::digest([0u8; 4096]).into()),
        zsize: bomb.len() as u64,
        zsha256,
        file: chunk_file_name(&zsha256),
    };
    let err = ChunkVerifier::new(&chunk).verify(&bomb).expect_err("bomb");
    assert!(
        matches!(
            err,
            Error::ChunkTooLarge {
                index: 0,
                size: 4096
            }
        ),
        "{err}"
    );

    // The same through a signed manifest and extract_image.
    let (_t, dir) = release();
    fs::write(dir.join(&chunk.file), &bomb).expect("write");
    let m = resign(&dir, |m| {
        let img = m
            .images
            .iter_mut()
            .find(|i| i.name == "kernel")
            .expect("kernel");
        img.size = 4096;
        img.sha256 = chunk.sha256;
        img.chunks = vec![chunk.clone()];
    });
    let err = extract_image(&dir, &m, "kernel", &mut Vec::new()).expect_err("bomb");
    assert!(matches!(err, Error::ChunkTooLarge { .. }), "{err}");
}

#[test]
fn chunk_content_errors_are_distinct() {
    let plain = noise(5, 10_000);
    let z = zstd::bulk::compress(&plain, 3).expect("compress");
    let zsha256 = Hex32(Sha256::digest(&z).into());
    let mut chunk = Chunk {
        index: 7,
        offset: 0,
        size: plain.len() as u64,
        sha256: Hex32(Sha256::digest(&plain).into()),
        zsize: z.len() as u64,
        zsha256,
        file: chunk_file_name(&zsha256),
    };
    assert_eq!(ChunkVerifier::new(&chunk).verify(&z).expect("ok"), plain);
    chunk.size += 1;
    assert!(matches!(
        ChunkVerifier::new(&chunk).verify(&z),
        Err(Error::ChunkShort { index: 7, .. })
    ));
    chunk.size -= 1;
    chunk.sha256.0[0] ^= 1;
    assert!(matches!(
        ChunkVerifier::new(&chunk).verify(&z),
        Err(Error::ChunkSha256 { index: 7 })
    ));
    // Signed garbage (hash matches, but not zstd).
    let junk = vec![0x55u8; 100];
    chunk.zsize = 100;
    chunk.zsha256 = Hex32(Sha256::digest(&junk).into());
    assert!(matches!(
        ChunkVerifier::new(&chunk).verify(&junk),
        Err(Error::ChunkCorrupt { index: 7, .. })
    ));
}

#[test]
fn whole_image_hash_is_checked() {
    let (_t, dir) = release();
    let m = resign(&dir, |m| m.images[0].sha256.0[0] ^= 1);
    let err = extract_image(&dir, &m, "usr", &mut Vec::new()).expect_err("image hash");
    assert!(matches!(err, Error::ImageSha256(_)), "{err}");
}

#[test]
fn malformed_json_and_unknown_fields_are_refused() {
    let (_t, dir) = release();
    let doc = fs::read_to_string(dir.join(MANIFEST_FILE)).expect("read");
    let trusted = [key(1).public()];
    let signed = |d: &str| {
        let sigs = sign_document(d.as_bytes(), &[key(1)]).expect("sign");
        Manifest::parse_signed(d.as_bytes(), &sigs, &trusted, 1)
    };
    let err = signed(&doc[..doc.len() / 2]).expect_err("truncated");
    assert!(matches!(err, Error::MalformedJson(_)), "{err}");
    let err =
        signed(&doc.replacen("\"board\"", "\"colour\": 1, \"board\"", 1)).expect_err("unknown");
    assert!(
        matches!(&err, Error::ManifestSchema(s) if s.contains("unknown field")),
        "{err}"
    );
    let err = signed(&doc.replacen("\"zsize\"", "\"extra\": 0, \"zsize\"", 1)).expect_err("nested");
    assert!(
        matches!(&err, Error::ManifestSchema(s) if s.contains("unknown field")),
        "{err}"
    );
    let err = signed(&doc.replacen("\"format\": 1", "\"format\": 2", 1)).expect_err("format");
    assert!(matches!(err, Error::UnsupportedFormat(2)), "{err}");
    let err = signed(&doc.replacen("1.2.3", "1.2.x", 1)).expect_err("version");
    assert!(matches!(err, Error::ManifestSchema(_)), "{err}");
    let err = signed(&doc.replacen("\"chunks/", "\"chunks/../", 1)).expect_err("path");
    assert!(
        matches!(err, Error::Invalid(CheckError::ChunkFile { .. })),
        "{err}"
    );
    signed(&doc).expect("the original is fine");
}

#[test]
fn check_finds_inconsistencies() {
    let (_t, dir) = release();
    let good = Manifest::load(&dir, &[key(1).public()], 1).expect("load");
    let check = |edit: &dyn Fn(&mut Manifest)| {
        let mut m = good.clone();
        edit(&mut m);
        m.check().expect_err("must be refused")
    };
    assert!(matches!(
        check(&|m| m.images[0].chunks[1].offset += 1),
        CheckError::ChunkOffset { .. }
    ));
    assert!(matches!(
        check(&|m| {
            m.images[0].chunks.remove(1);
        }),
        CheckError::ChunkIndex { .. }
    ));
    assert!(matches!(
        check(&|m| m.images[0].size += 1),
        CheckError::Coverage { .. }
    ));
    assert!(matches!(
        check(&|m| m.images[0].chunks[0].size -= 1),
        CheckError::ChunkSize { .. }
    ));
    assert!(matches!(
        check(&|m| m.images[0].chunk_size = 1000),
        CheckError::BadChunkSize { .. }
    ));
    assert!(matches!(
        check(&|m| m.images[0].chunk_size = 1 << 30),
        CheckError::BadChunkSize { .. }
    ));
    assert!(matches!(
        check(&|m| m.images[0].chunks[0].zsize = 1 << 40),
        CheckError::ChunkZsize { .. }
    ));
    assert!(matches!(
        check(&|m| m.images[1].name = "usr".into()),
        CheckError::DuplicateImage(_)
    ));
    assert!(matches!(
        check(&|m| m.images[1].name = "../x".into()),
        CheckError::BadName { .. }
    ));
    assert!(matches!(check(&|m| m.images.clear()), CheckError::NoImages));
    assert!(matches!(
        check(&|m| m.packages.push("systemd=1".into())),
        CheckError::DuplicatePackage(_)
    ));
    assert!(matches!(
        check(&|m| m.packages.push("noversion".into())),
        CheckError::BadPackage(_)
    ));
    assert!(matches!(
        check(&|m| m.expires = Some(m.created)),
        CheckError::Expiry { .. }
    ));
    assert!(matches!(
        check(&|m| m.board.clear()),
        CheckError::Empty("board")
    ));
    good.check_expiry(1_799_999_999).expect("fresh");
    assert!(matches!(
        good.check_expiry(1_800_000_000),
        Err(Error::Expired { .. })
    ));
}

#[test]
fn verity_parameters_are_checked() {
    let t = tempfile::tempdir().expect("tempdir");
    let img = t.path().join("usr.img");
    fs::write(&img, noise(9, 300 * 4096)).expect("write");
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .open(&img)
        .expect("open");
    let params = verity_tree::Params {
        data_blocks: 300,
        hash_offset: 300 * 4096,
        salt: [4; 32],
        uuid: [5; 16],
    };
    let info = verity_tree::format(&mut f, &params).expect("verity");
    drop(f);
    let mut w = ReleaseWriter::create(t.path().join("rel")).expect("create");
    let image = w
        .add_image_file("usr", &img, 64 * 1024, Some(info.into()))
        .expect("add")
        .clone();
    assert_eq!(image.verity.expect("verity").to_info(), info);
    let mut bad = image.clone();
    if let Some(v) = bad.verity.as_mut() {
        v.hash_size += 4096;
    }
    assert!(matches!(bad.check(), Err(CheckError::Verity { .. })));
    let mut bad = image;
    if let Some(v) = bad.verity.as_mut() {
        v.hash_offset = 4096;
    }
    assert!(matches!(bad.check(), Err(CheckError::Verity { .. })));
    assert!(matches!(
        w.add_image_file("usr", &img, 64 * 1024, None),
        Err(Error::Invalid(CheckError::DuplicateImage(_)))
    ));
    let m = w.finish(fields(), &[]);
    assert!(matches!(m, Err(Error::NoSigningKeys)));
}

#[test]
fn key_files() {
    let t = tempfile::tempdir().expect("tempdir");
    let k = KeyPair::generate().expect("generate");
    assert_eq!(k.key_id().len(), 16);
    let (secret, public) = k.write(t.path(), "release-1").expect("write");
    assert_eq!(
        fs::metadata(&secret).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let text = fs::read_to_string(&secret).expect("read");
    assert!(
        text.starts_with("cairn-ed25519-secret ")
            && text.ends_with('\n')
            && text.len() == 21 + 64 + 1
    );
    assert!(matches!(
        k.write(t.path(), "release-1"),
        Err(Error::KeyExists { .. })
    ));
    assert!(matches!(k.write(t.path(), "../x"), Err(Error::KeyName(_))));

    let loaded = KeyPair::load_secret(&secret).expect("load secret");
    assert_eq!(loaded.key_id(), k.key_id());
    let pk = PublicKey::load_public(&public).expect("load public");
    assert_eq!(pk, k.public());
    assert_eq!(PublicKey::parse(&pk.to_line()).expect("parse"), pk);
    assert!(
        !format!("{k:?}").contains(&text[21..40]),
        "Debug must not print the secret"
    );

    // Mixing the files up, or a world-readable secret, says what to do.
    let err = PublicKey::load_public(&secret).expect_err("secret as public");
    assert!(err.to_string().contains("SECRET"), "{err}");
    let err = KeyPair::load_secret(&public).expect_err("public as secret");
    assert!(
        err.to_string().contains("chmod 600") || err.to_string().contains("public key"),
        "{err}"
    );
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = KeyPair::load_secret(&secret).expect_err("readable");
    assert!(err.to_string().contains("chmod 600"), "{err}");
    let garbage = t.path().join("garbage.secret");
    fs::write(&garbage, "hello\n").expect("write");
    fs::set_permissions(&garbage, fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = KeyPair::load_secret(&garbage).expect_err("garbage");
    assert!(err.to_string().contains("garbage.secret"), "{err}");
}

/// Chunks made of several concatenated zstd frames (block-delta's blocks
/// image) are ordinary chunks to every reader; a chunk that does not decode
/// to its plain bytes is refused before it is stored.
#[test]
fn precompressed_multi_frame_chunks_read_like_any_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rel = dir.path().join("release");
    let mut w = ReleaseWriter::create(&rel).expect("create");
    let plain = noise(9, 3 * 8192 + 4096);
    let frames = |p: &[u8]| -> Vec<u8> {
        p.chunks(4096)
            .flat_map(|f| zstd::bulk::compress(f, 3).expect("zstd"))
            .collect()
    };
    {
        let mut img = w.begin_precompressed("usr.blocks", 8192).expect("begin");
        let wrong = frames(&plain[8192..16384]);
        let e = img.push(&plain[..8192], &wrong).expect_err("mismatch");
        assert!(matches!(e, Error::ChunkCorrupt { .. }), "{e}");
        for c in plain.chunks(8192) {
            img.push(c, &frames(c)).expect("push");
        }
        img.finish().expect("finish");
    }
    assert!(
        w.begin_precompressed("usr.blocks", 8192).is_err(),
        "duplicate name"
    );
    w.finish(fields(), &[key(1)]).expect("finish");
    let m = Manifest::load(&rel, &[key(1).public()], 1).expect("load");
    let image = m.image("usr.blocks").expect("image");
    assert_eq!(image.chunks.len(), 4);
    let mut back = Vec::new();
    read_image(&rel, &m, "usr.blocks")
        .expect("open")
        .read_to_end(&mut back)
        .expect("read");
    assert_eq!(back, plain);
}
