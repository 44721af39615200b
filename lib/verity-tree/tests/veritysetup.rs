//! Cross-checks against `veritysetup` (cryptsetup-bin). Every case compares the whole
//! file written by us with the one written by `veritysetup format` on a copy.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use verity_tree::{Error, Params, format, verify};

fn have_veritysetup() -> bool {
    match Command::new("veritysetup").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("SKIPPED: veritysetup not found (install cryptsetup-bin)");
            false
        }
    }
}

fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = vec![0u8; len];
    for w in v.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    v
}

fn uuid_str(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn run(args: &[String]) -> (bool, String) {
    let out = Command::new("veritysetup")
        .args(args)
        .output()
        .expect("run veritysetup");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn open_rw(p: &Path) -> File {
    File::options()
        .read(true)
        .write(true)
        .open(p)
        .expect("open")
}

/// `gap` = bytes between the end of the data and the superblock.
fn check_case(dir: &Path, data: &[u8], gap: u64) {
    let n = data.len() as u64 / 4096;
    let ours = dir.join(format!("ours-{n}-{gap}"));
    let theirs = dir.join(format!("theirs-{n}-{gap}"));
    fs::write(&ours, data).expect("write");
    fs::write(&theirs, data).expect("write");
    let params = Params {
        data_blocks: n,
        hash_offset: n * 4096 + gap,
        salt: fill(n + 1, 32).try_into().expect("32"),
        uuid: fill(n + 2, 16).try_into().expect("16"),
    };
    let info = format(&mut open_rw(&ours), &params).expect("format");

    let t = theirs.to_string_lossy().into_owned();
    let (ok, text) = run(&[
        "format".into(),
        format!("--salt={}", hex::encode(params.salt)),
        format!("--uuid={}", uuid_str(&params.uuid)),
        format!("--hash-offset={}", params.hash_offset),
        format!("--data-blocks={n}"),
        t.clone(),
        t.clone(),
    ]);
    assert!(ok, "veritysetup format failed: {text}");
    let root = text
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|s| s.trim().to_string())
        .expect("root hash in veritysetup output");
    assert_eq!(info.root_hash_hex(), root, "root hash, {n} blocks");
    let (a, b) = (
        fs::read(&ours).expect("read"),
        fs::read(&theirs).expect("read"),
    );
    assert_eq!(a.len(), b.len(), "file length, {n} blocks");
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{n} blocks: first differing byte at {i}");
    }
    assert_eq!(info.hash_offset + info.hash_size, a.len() as u64);

    // veritysetup accepts our tree, and so do we.
    let o = ours.to_string_lossy().into_owned();
    let (ok, text) = run(&info.veritysetup_verify_args(&o, &o));
    assert!(
        ok,
        "veritysetup verify rejected our tree ({n} blocks): {text}"
    );
    verify(&mut open_rw(&ours), &info).expect("our verify");

    // One flipped data byte: both refuse, and we name the block.
    let bad_block = n / 2;
    let f = open_rw(&ours);
    let off = bad_block * 4096 + 123;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, off).expect("read");
    f.write_all_at(&[byte[0] ^ 0x40], off).expect("write");
    drop(f);
    let (ok, _) = run(&info.veritysetup_verify_args(&o, &o));
    assert!(
        !ok,
        "veritysetup verify accepted a flipped byte ({n} blocks)"
    );
    match verify(&mut open_rw(&ours), &info) {
        Err(Error::DataBlockMismatch { block }) => assert_eq!(block, bad_block),
        other => panic!("expected DataBlockMismatch, got {other:?}"),
    }
    fs::remove_file(&ours).ok();
    fs::remove_file(&theirs).ok();
}

#[test]
fn byte_identical_to_veritysetup() {
    if !have_veritysetup() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for n in [1u64, 2, 127, 128, 129, 300, 16385] {
        check_case(dir.path(), &fill(n, n as usize * 4096), 0);
    }
    // Hash area further out, leaving a hole after the data.
    check_case(dir.path(), &fill(77, 77 * 4096), 3 * 4096);
}

#[test]
fn random_content_matches_veritysetup() {
    if !have_veritysetup() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = vec![0u8; 1000 * 4096];
    File::open("/dev/urandom")
        .expect("urandom")
        .read_exact(&mut data)
        .expect("read");
    check_case(dir.path(), &data, 0);
}

#[test]
fn tampered_tree_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("img");
    fs::write(&p, fill(5, 300 * 4096)).expect("write");
    let params = Params {
        data_blocks: 300,
        hash_offset: 300 * 4096,
        salt: [1; 32],
        uuid: [2; 16],
    };
    let info = format(&mut open_rw(&p), &params).expect("format");
    // Level 0 starts after the superblock, the top block and... layout: sb, L1 (1), L0 (3).
    let f = open_rw(&p);
    f.write_all_at(&[0xff], info.hash_offset + 2 * 4096 + 5)
        .expect("write");
    drop(f);
    assert!(matches!(
        verify(&mut open_rw(&p), &info),
        Err(Error::HashBlockMismatch { level: 0, block: 0 })
    ));
    let mut wrong = info;
    wrong.root_hash[0] ^= 1;
    assert!(matches!(
        verify(&mut open_rw(&p), &wrong),
        Err(Error::RootHashMismatch { .. })
    ));
    let mut wrong = info;
    wrong.salt[0] ^= 1;
    assert!(matches!(
        verify(&mut open_rw(&p), &wrong),
        Err(Error::BadSuperblock(_))
    ));
}

#[test]
fn short_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("img");
    fs::write(&p, vec![0u8; 4096 * 3]).expect("write");
    let params = Params {
        data_blocks: 4,
        hash_offset: 4 * 4096,
        salt: [0; 32],
        uuid: [0; 16],
    };
    assert!(matches!(
        format(&mut open_rw(&p), &params),
        Err(Error::TooShort { .. })
    ));
}

#[test]
fn dm_table_renders() {
    let info = verity_tree::VerityInfo {
        root_hash: [0xab; 32],
        salt: [0xcd; 32],
        data_blocks: 256,
        hash_offset: 1 << 20,
        hash_size: 3 * 4096,
        data_block_size: 4096,
        hash_block_size: 4096,
    };
    let t = info.dm_table("/dev/vda3", "/dev/vda3", &["panic_on_corruption"]);
    let want = format!(
        "0 2048 verity 1 /dev/vda3 /dev/vda3 4096 4096 256 257 sha256 {} {} 1 panic_on_corruption",
        "ab".repeat(32),
        "cd".repeat(32)
    );
    assert_eq!(t, want);
}

/// `cargo test --release -p verity-tree -- --ignored --nocapture bench`
#[test]
#[ignore]
fn bench_256mib() {
    let mbps = verity_tree::bench(&std::env::temp_dir(), 256).expect("bench");
    println!("verity format: {mbps:.0} MB/s over 256 MiB");
}
