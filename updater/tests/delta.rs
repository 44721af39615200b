//! Delta updates (issue 13) against the loopback server: releases with a
//! block index, a host whose active slot holds an older release, and the
//! server's count of the bytes it served.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use block_delta::DigestKind;
use cairn_updater::delta::{self, LocalDigests};
use cairn_updater::fixture::{self, BOARD, NOW, Server};
use cairn_updater::{Agent, Event, Target};
use disk_layout::Slot;
use gpt_slots::Attrs;
use release_manifest::{Manifest, ReleaseWriter};
use release_repo::{Root, Wave};

const CHUNK: u64 = 64 << 10;
const SLOT: u64 = 8 << 20;

/// 4 KiB block number `id`: half pseudo-random, half a pattern (about 2:1
/// compressible, like a file system image), different for every id.
fn block(id: u64) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut b = vec![0u8; 4096];
    for (i, v) in b.iter_mut().enumerate() {
        if i < 2048 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u8;
        } else {
            *v = (id as usize + i / 64) as u8;
        }
    }
    b
}

/// A usr data area from block ids.
fn data(ids: impl IntoIterator<Item = u64>) -> Vec<u8> {
    ids.into_iter().flat_map(block).collect()
}

/// Release `version` with `usr_data` (whole blocks) + its verity tree, the
/// signed boot files and the block index (format 3, keyed by the image's
/// level-0 hashes, unless `format2`). Returns (release dir, usr image).
fn release(
    out: &Path,
    version: &str,
    usr_data: &[u8],
    salt: u8,
    format2: bool,
) -> (PathBuf, Vec<u8>) {
    std::fs::create_dir_all(out).unwrap();
    let img = out.join(format!("usr-{version}.img"));
    std::fs::write(&img, usr_data).unwrap();
    let data_blocks = usr_data.len() as u64 / 4096;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let info = verity_tree::format(
        &mut f,
        &verity_tree::Params {
            data_blocks,
            hash_offset: data_blocks * 4096,
            salt: [salt; 32],
            uuid: [7; 16],
        },
    )
    .unwrap();
    drop(f);
    let dir = out.join(format!("release-{version}"));
    let mut w = ReleaseWriter::create(&dir).unwrap();
    w.add_image_file("usr", &img, CHUNK, Some(info.into()))
        .unwrap();
    let kind = match format2 {
        true => DigestKind::Sha256,
        false => DigestKind::Verity { salt: info.salt },
    };
    block_delta::add_to_release(&mut w, "usr", &img, kind, 3).unwrap();
    fixture::finish_release(w, version, &info, &fixture::build_key()).unwrap();
    let image = std::fs::read(&img).unwrap();
    (dir, image)
}

struct Delta {
    dir: tempfile::TempDir,
    root: Root,
    target: Target,
    server: Server,
    /// The usr image of each release, by version.
    images: Vec<(String, Vec<u8>)>,
}

impl Delta {
    /// Releases `(version, usr data)` published on `stable`; the host runs
    /// the first one from slot A (its image written there, as an install would).
    fn new(releases: &[(&str, Vec<u8>)]) -> Delta {
        Delta::with_index(releases, false)
    }

    /// [`Delta::new`], the block indexes in format 2 when `format2`.
    fn with_index(releases: &[(&str, Vec<u8>)], format2: bool) -> Delta {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        let mut images = Vec::new();
        for (v, d) in releases {
            // One salt, as the image builder derives it for every release
            // of a board.
            let (rd, img) = release(&dir.path().join("build"), v, d, 1, format2);
            dirs.push(rd);
            images.push((v.to_string(), img));
        }
        let repo = dir.path().join("repo");
        let root = fixture::make_repo(&repo, &[&dirs[0]]).unwrap();
        for d in &dirs[1..] {
            fixture::publish(&repo, d, Wave::immediate(NOW)).unwrap();
        }
        let target = fixture::make_target(&dir.path().join("host"), SLOT).unwrap();
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new()
                .write(true)
                .open(&target.slot_a)
                .unwrap(),
            &images[0].1,
            0,
        )
        .unwrap();
        let server = Server::start(&repo).unwrap();
        Delta {
            dir,
            root,
            target,
            server,
            images,
        }
    }

    fn agent(&self) -> Agent {
        fixture::agent(
            &self.target,
            &self.dir.path().join("state"),
            &self.server.url,
            &self.root,
            Slot::A,
            &self.images[0].0,
            fixture::fast_http(),
        )
    }

    fn image(&self, version: &str) -> &[u8] {
        &self.images.iter().find(|(v, _)| v == version).unwrap().1
    }

    fn manifest(&self, version: &str) -> Manifest {
        let d = self
            .dir
            .path()
            .join(format!("repo/releases/{BOARD}/{version}"));
        Manifest::load(&d, &[fixture::build_key().public()], 1).unwrap()
    }

    /// The compressed size of the full usr image of `version`.
    fn full(&self, version: &str) -> u64 {
        let m = self.manifest(version);
        m.image("usr").unwrap().chunks.iter().map(|c| c.zsize).sum()
    }

    fn sent(&self) -> u64 {
        self.server.faults.sent.load(Ordering::SeqCst)
    }

    /// Installs what the check chooses; returns (phases reported, body bytes
    /// the server sent for it).
    fn install(&self, agent: &Agent) -> (Vec<String>, u64) {
        let before = self.sent();
        let entry = agent.check().unwrap().decision.chosen.unwrap();
        let mut phases = Vec::new();
        agent
            .apply(&entry, &mut |e| {
                if let Event::Phase(p) = e {
                    phases.push(p);
                }
            })
            .unwrap();
        (phases, self.sent() - before)
    }

    /// Slot B holds exactly `version`'s usr image and is set to boot next.
    fn assert_installed(&self, version: &str) {
        let want = self.image(version);
        let got = std::fs::read(&self.target.slot_b).unwrap();
        assert!(
            got[..want.len()] == *want,
            "slot B does not hold the {version} image"
        );
        let a = self.target.read_attrs().unwrap();
        assert_eq!(a.get(Slot::B), Attrs::new(2, 3, false), "slot B attributes");
    }

    /// The dm-verity parameters `version`'s usr image boots with.
    fn verity(&self, version: &str) -> verity_tree::VerityInfo {
        self.manifest(version)
            .image("usr")
            .unwrap()
            .verity
            .unwrap()
            .to_info()
    }

    /// The kernel command line a host booted from `version` has.
    fn cmdline(&self, version: &str) -> String {
        let v = self.verity(version);
        format!(
            "console=ttyS0 usrhash={} cairn.verity={}:{}:{}",
            hex::encode(v.root_hash),
            v.data_blocks,
            v.hash_offset,
            hex::encode(v.salt)
        )
    }

    /// Plans `version` against slot A as a host booted with `booted`'s
    /// dm-verity parameters (`None`: not known) would.
    fn prepare(&self, version: &str, booted: Option<&str>) -> delta::Prepared {
        let m = self.manifest(version);
        let v = booted.map(|b| self.verity(b));
        delta::prepare(
            &self.agent().http,
            &m,
            m.image("usr").unwrap(),
            &self.target.slot_a,
            v.as_ref(),
            0,
        )
        .unwrap()
        .unwrap()
    }
}

/// Flips a byte of block `block` of slot A (bit rot after its tree was written).
fn rot(d: &Delta, block: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d.target.slot_a)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"rot", block * 4096 + 9).unwrap();
}

/// Boot files and metadata: what a usr delta cannot save.
fn overhead(m: &Manifest) -> u64 {
    m.images
        .iter()
        .filter(|i| !i.name.starts_with("usr"))
        .flat_map(|i| &i.chunks)
        .map(|c| c.zsize)
        .sum::<u64>()
        + (32 << 10)
}

fn has(phases: &[String], text: &str) -> bool {
    phases.iter().any(|p| p.contains(text))
}

#[test]
fn one_added_file_fetches_only_its_blocks_by_range() {
    // v2 = v1 with 12 new blocks in the middle: every later block shifts.
    let v1: Vec<u64> = (0..600).collect();
    let mut v2 = v1.clone();
    v2.splice(300..300, 10_000..10_012);
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    let (phases, sent) = d.install(&d.agent());
    d.assert_installed("1.1.0");
    assert!(has(&phases, "blocks copied"), "{phases:#?}");
    let full = d.full("1.1.0");
    let usr_sent = sent - overhead(&d.manifest("1.1.0")).min(sent);
    eprintln!("one added file: {sent} bytes served, full usr payload {full}; {phases:#?}");
    // 12 new data blocks, the verity tree, and the index.
    assert!(usr_sent * 5 < full, "{usr_sent} of {full}");
    let ranges = d
        .server
        .log()
        .iter()
        .filter(|l| l.contains("chunks/") && !l.ends_with("None"))
        .count();
    assert!(
        ranges <= 3,
        "coalesced Range requests: {:#?}",
        d.server.log()
    );
}

#[test]
fn an_identical_release_fetches_no_usr_blocks() {
    let v1 = data(0..400);
    let d = Delta::new(&[("1.0.0", v1.clone()), ("1.0.1", v1)]);
    let agent = d.agent();
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    let plan = agent.plan_download(&entry).unwrap();
    assert_eq!(plan.method, "delta");
    assert_eq!(plan.blocks_fetched, 0, "{plan:?}");
    let (phases, _) = d.install(&agent);
    d.assert_installed("1.0.1");
    assert!(has(&phases, "fetched in 0 requests"), "{phases:#?}");
    assert!(
        !d.server
            .log()
            .iter()
            .any(|l| l.contains("chunks/") && !l.ends_with("None")),
        "{:#?}",
        d.server.log()
    );
}

#[test]
fn a_host_two_releases_behind_reuses_what_it_has() {
    // v2 drops blocks 100..200 of v1; v3 brings them back and adds 5 new ones.
    let v1: Vec<u64> = (0..500).collect();
    let v2: Vec<u64> = (0..100).chain(200..500).chain(20_000..20_050).collect();
    let v3: Vec<u64> = (0..500).chain(30_000..30_005).collect();
    let d = Delta::new(&[
        ("1.0.0", data(v1)),
        ("1.1.0", data(v2)),
        ("1.2.0", data(v3)),
    ]);
    let (phases, sent) = d.install(&d.agent());
    d.assert_installed("1.2.0");
    assert!(has(&phases, "blocks copied"), "{phases:#?}");
    let full = d.full("1.2.0");
    let usr_sent = sent - overhead(&d.manifest("1.2.0")).min(sent);
    assert!(usr_sent * 4 < full, "{usr_sent} of {full}");
}

#[test]
fn a_corrupted_local_block_is_fetched_not_copied() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..300).chain(40_000..40_002).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    let agent = d.agent();
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    let clean = agent.plan_download(&entry).unwrap();
    // Bit rot in block 150 of the active slot.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&d.target.slot_a)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"rot", 150 * 4096 + 9).unwrap();
    let rotten = agent.plan_download(&entry).unwrap();
    assert_eq!(
        rotten.blocks_fetched,
        clean.blocks_fetched + 1,
        "{rotten:?}"
    );
    d.install(&agent);
    d.assert_installed("1.1.0");
}

/// A host booted with the new image's salt (every release of a board has
/// it) takes its block keys from its slot's verified level 0: the same plan
/// as hashing the slot, but the data is not read (a block rotted on disk
/// does not change it, while hashing sees it); without the booted
/// parameters, or with another salt, the data is hashed.
#[test]
fn a_same_salt_host_plans_from_its_verity_tree_without_reading_data() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..150).chain(60_000..60_003).chain(150..300).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    let tree = d.prepare("1.1.0", Some("1.0.0"));
    assert_eq!(tree.local, LocalDigests::VerityTree);
    let hashed = d.prepare("1.1.0", None);
    assert_eq!(hashed.local, LocalDigests::HashedSalted);
    assert_eq!(tree.plan, hashed.plan);
    // The 3 new blocks and the superblock (another data size).
    assert_eq!(tree.plan.fetched, 4, "{:?}", tree.plan);

    rot(&d, 10);
    let tree_rotten = d.prepare("1.1.0", Some("1.0.0"));
    assert_eq!(tree_rotten.plan, tree.plan, "the tree path read the data");
    let hashed_rotten = d.prepare("1.1.0", None);
    assert_eq!(hashed_rotten.plan.fetched, hashed.plan.fetched + 1);

    // A booted tree that does not verify: no delta.
    let m = d.manifest("1.1.0");
    let mut wrong = d.verity("1.0.0");
    wrong.root_hash[0] ^= 1;
    let usr = m.image("usr").unwrap();
    let r = delta::prepare(&d.agent().http, &m, usr, &d.target.slot_a, Some(&wrong), 0);
    assert!(
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("does not verify")),
        "{:?}",
        r.map(|p| p.map(|p| p.local))
    );
}

/// Another salt (a host booted from a release of before the board salt):
/// the data is hashed once with the new image's salt, the booted tree still
/// checks it, and the install copies what it can.
#[test]
fn another_salt_hashes_the_data_with_the_new_salt() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..300).chain(70_000..70_002).collect();
    let d = Delta::new(&[("1.0.0", data(v1.clone())), ("1.1.0", data(v2))]);
    // Slot A holds 1.0.0's data under another salt's tree.
    let dir = tempfile::tempdir().unwrap();
    let (old_dir, old) = release(dir.path(), "1.0.0", &data(v1), 2, false);
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(&d.target.slot_a)
            .unwrap(),
        &old,
        0,
    )
    .unwrap();
    let booted = Manifest::load(&old_dir, &[fixture::build_key().public()], 1)
        .unwrap()
        .image("usr")
        .unwrap()
        .verity
        .unwrap()
        .to_info();
    assert_eq!(booted.salt, [2; 32]);
    let m = d.manifest("1.1.0");
    let usr = m.image("usr").unwrap();
    let p = delta::prepare(&d.agent().http, &m, usr, &d.target.slot_a, Some(&booted), 0)
        .unwrap()
        .unwrap();
    assert_eq!(p.local, LocalDigests::HashedSalted);
    // The 2 new blocks and the superblock (another salt and size).
    assert_eq!((p.plan.copied, p.plan.fetched), (300, 3), "{:?}", p.plan);
}

/// Format 2 indexes (plain sha256) still work: the slot is hashed.
#[test]
fn a_format_2_index_still_gives_a_delta() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..150).chain(60_000..60_003).chain(150..300).collect();
    let d = Delta::with_index(&[("1.0.0", data(v1)), ("1.1.0", data(v2))], true);
    let p = d.prepare("1.1.0", Some("1.0.0"));
    assert_eq!(p.local, LocalDigests::HashedSha256);
    assert_eq!(p.index.digests(), DigestKind::Sha256);
    assert_eq!(p.plan.fetched, 4, "{:?}", p.plan);
    let (phases, _) = d.install(&d.agent());
    d.assert_installed("1.1.0");
    assert!(has(&phases, "blocks copied"), "{phases:#?}");
}

/// A data block of slot A rots after its tree was written: its level-0
/// digest still proposes it, the chunk assembled with it does not match its
/// signed sha256 and is not written (not a byte of it), and the agent falls
/// back to the full download and installs the right image.
#[test]
fn a_block_rotted_after_its_tree_was_written_is_never_written() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..300).chain(40_000..40_002).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    // Block 150: in the 64 KiB chunk 9 of the new image (blocks 144..160).
    rot(&d, 150);
    let p = d.prepare("1.1.0", Some("1.0.0"));
    assert_eq!(p.local, LocalDigests::VerityTree);
    assert_eq!(p.plan.sources[150], block_delta::Source::Local(150));

    // The delta alone: stops at chunk 9, chunks before it written.
    let m = d.manifest("1.1.0");
    let usr = m.image("usr").unwrap();
    let agent = d.agent();
    let writer = d.target.open_slot_for_write(Slot::B, Slot::A).unwrap();
    let mut durable = 0u64;
    let mut note = |n: u64| {
        durable = n;
        Ok(())
    };
    let r = delta::write(
        &agent.http,
        &p,
        usr,
        &d.target.slot_a,
        &writer,
        delta::Resume {
            start: 0,
            stop_after: None,
            durable: &mut note,
        },
        &mut |_| {},
    );
    let e = r.expect_err("a chunk with a rotted block was accepted");
    assert!(e.to_string().contains("chunk 9 assembled"), "{e}");
    assert!(durable <= 9, "{durable} chunks recorded");
    let b = std::fs::read(&d.target.slot_b).unwrap();
    let chunk9 = &b[9 * CHUNK as usize..][..CHUNK as usize];
    assert!(chunk9.iter().all(|&x| x == 0), "chunk 9 was written");
    let want = d.image("1.1.0");
    let done = 9 * CHUNK as usize;
    assert!(b[..done] == want[..done], "a chunk before it is wrong");

    // The agent, booted from 1.0.0: the delta fails the same way, then the
    // full download installs 1.1.0.
    delta::set_booted_cmdline(Some(d.cmdline("1.0.0")));
    let (phases, sent) = d.install(&agent);
    delta::set_booted_cmdline(None);
    d.assert_installed("1.1.0");
    assert!(
        has(&phases, "does not match its signed sha256"),
        "{phases:#?}"
    );
    assert!(has(&phases, "downloading the full image"), "{phases:#?}");
    assert!(sent >= d.full("1.1.0") - 9 * CHUNK, "{sent}");
}

/// The agent of a host booted from 1.0.0 (its command line names the
/// booted tree) installs by delta from its tree.
#[test]
fn a_booted_host_installs_a_delta_planned_from_its_tree() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..150).chain(60_000..60_003).chain(150..300).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    delta::set_booted_cmdline(Some(d.cmdline("1.0.0")));
    let (phases, sent) = d.install(&d.agent());
    delta::set_booted_cmdline(None);
    d.assert_installed("1.1.0");
    assert!(has(&phases, "4 fetched"), "{phases:#?}");
    let usr_sent = sent - overhead(&d.manifest("1.1.0")).min(sent);
    assert!(usr_sent * 4 < d.full("1.1.0"), "{usr_sent}");
}

#[test]
fn tampered_delta_data_falls_back_to_the_full_download() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..150).chain(50_000..50_020).chain(150..300).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    // Flip a byte in every chunk file of the blocks image on the server.
    let m = d.manifest("1.1.0");
    for c in &m.image("usr.blocks").unwrap().chunks {
        let p = d.dir.path().join("repo").join(&c.file);
        let mut b = std::fs::read(&p).unwrap();
        for i in (0..b.len()).step_by(1000) {
            b[i] ^= 0x40;
        }
        std::fs::write(&p, b).unwrap();
    }
    let (phases, sent) = d.install(&d.agent());
    d.assert_installed("1.1.0");
    assert!(has(&phases, "does not match the sha256"), "{phases:#?}");
    assert!(has(&phases, "downloading the full image"), "{phases:#?}");
    assert!(sent >= d.full("1.1.0"), "{sent}");
}

#[test]
fn full_download_when_asked() {
    let v1 = data(0..300);
    let d = Delta::new(&[("1.0.0", v1.clone()), ("1.0.1", v1)]);
    let mut agent = d.agent();
    agent.full_download = true;
    let (phases, sent) = d.install(&agent);
    d.assert_installed("1.0.1");
    assert!(!has(&phases, "delta"), "{phases:#?}");
    assert!(sent >= d.full("1.0.1"), "{sent}");
    assert!(
        !d.server.log().iter().any(|l| l.contains("blockindex")),
        "the index is not fetched for a full download"
    );
}

#[test]
fn a_dropped_range_response_resumes() {
    let v1: Vec<u64> = (0..300).collect();
    let v2: Vec<u64> = (0..100).chain(60_000..60_010).chain(100..300).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    // The connection drops in the middle of the first Range response.
    let m = d.manifest("1.1.0");
    let blocks_file = m.image("usr.blocks").unwrap().chunks[0].file.clone();
    *d.server.faults.drop_once.lock().unwrap() = Some((blocks_file, 100));
    let (phases, _) = d.install(&d.agent());
    d.assert_installed("1.1.0");
    assert!(has(&phases, "blocks copied"), "{phases:#?}");
    let ranges: Vec<String> = d
        .server
        .log()
        .into_iter()
        .filter(|l| l.contains("chunks/") && !l.ends_with("None"))
        .collect();
    assert!(
        ranges.len() >= 2,
        "the broken range was asked for again: {ranges:#?}"
    );
}

/// The Range requests for blocks-image chunks in the server's log from
/// entry `from` on.
fn ranges_since(d: &Delta, from: usize) -> Vec<String> {
    d.server.log()[from..]
        .iter()
        .filter(|l| l.contains("chunks/") && !l.ends_with("None"))
        .cloned()
        .collect()
}

#[test]
fn an_interrupted_delta_resumes_without_fetching_again() {
    // Three new blocks every 100: new frames all along the image.
    let v1: Vec<u64> = (0..600).collect();
    let v2: Vec<u64> = (0..600)
        .flat_map(|b| {
            let new = (b % 100 == 50).then(|| (80_000 + b..80_003 + b).collect::<Vec<_>>());
            std::iter::once(b).chain(new.unwrap_or_default())
        })
        .collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2.clone()))]);
    let chunks = d.manifest("1.1.0").image("usr").unwrap().chunks.len() as u64;
    // The first Range response breaks part way (retried), then the agent is
    // killed after 12 chunks, as by a power cut.
    let blocks_file = d.manifest("1.1.0").image("usr.blocks").unwrap().chunks[0]
        .file
        .clone();
    *d.server.faults.drop_once.lock().unwrap() = Some((blocks_file, 5));
    let mut agent = d.agent();
    agent.stop_after_chunks = Some(12);
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    let r = agent.apply(&entry, &mut |_| {});
    assert!(
        matches!(r, Err(cairn_updater::Error::Interrupted(12))),
        "{:?}",
        r.map(|o| o.version)
    );
    let first = ranges_since(&d, 0);
    assert!(!first.is_empty());
    let mark = d.server.log().len();

    // A new agent (the restart) resumes at chunk 12. The groups of new
    // blocks in chunks before it (each its own range: 100 old blocks apart)
    // are not fetched again; ranges the first run fetched ahead of its
    // writing (the fetch thread runs ahead) may be.
    let (phases, _) = d.install(&d.agent());
    d.assert_installed("1.1.0");
    assert!(has(&phases, "resuming at 12"), "{phases:#?}");
    assert!(has(&phases, &format!("chunks 12..{chunks}")), "{phases:#?}");
    let blocks_per_chunk = CHUNK / 4096;
    let before = v2
        .iter()
        .enumerate()
        .filter(|&(i, &id)| {
            id >= 80_000 && (id - 80_000) % 100 == 50 && (i as u64) < 12 * blocks_per_chunk
        })
        .count();
    assert_eq!(before, 2, "the data layout puts two groups before chunk 12");
    // Run 1's ranges in order, without the retry of the dropped one (it asks
    // for the rest: 5 bytes further).
    let start_of = |l: &String| -> u64 {
        l.rsplit("Some(")
            .next()
            .and_then(|n| n.trim_end_matches(')').parse().ok())
            .unwrap()
    };
    let mut groups: Vec<&String> = Vec::new();
    for r in &first {
        if groups
            .last()
            .is_some_and(|g| start_of(r) == start_of(g) + 5)
        {
            continue;
        }
        groups.push(r);
    }
    let second = ranges_since(&d, mark);
    assert!(!second.is_empty(), "{phases:#?}");
    for g in &groups[..before] {
        assert!(
            !second.contains(g),
            "{g} (before the resume point) was fetched again: {second:#?}"
        );
    }
    let again = second.iter().filter(|r| first.contains(r)).count();
    assert!(
        again <= 3,
        "more than the fetch thread's lead (3 ranges) fetched again: {second:#?}\nfirst run: {first:#?}"
    );
}

/// The hash tree is computed, not fetched: an update whose data differs in
/// one block fetches about one block, though most tree blocks change.
#[test]
fn the_verity_tree_is_computed_not_fetched() {
    let v1: Vec<u64> = (0..1000).collect();
    let mut v2 = v1.clone();
    v2[500] = 90_000;
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.0.1", data(v2))]);
    let agent = d.agent();
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    let plan = agent.plan_download(&entry).unwrap();
    // Block 500 only: the superblock is the old one (same salt, same size),
    // and the two tree blocks above block 500 are computed.
    assert_eq!(plan.blocks_fetched, 1, "{plan:?}");
    let (phases, _) = d.install(&agent);
    d.assert_installed("1.0.1");
    assert!(has(&phases, "blocks copied"), "{phases:#?}");
}

fn cairnctl(d: &Delta, args: &[&str]) -> (bool, String, String) {
    fixture::output(
        std::process::Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .args(fixture::cairnctl_args(d.dir.path(), &d.server.url))
            .args(args),
    )
}

#[test]
fn cairnctl_check_shows_the_planned_download_and_update_full_skips_the_delta() {
    let v1: Vec<u64> = (0..400).collect();
    let v2: Vec<u64> = (0..200).chain(70_000..70_004).chain(200..400).collect();
    let d = Delta::new(&[("1.0.0", data(v1)), ("1.1.0", data(v2))]);
    // Off by default: the full download is planned.
    fixture::write_host_files(d.dir.path(), &d.root, "[update]\nchannel = \"stable\"\n").unwrap();
    let (ok, out, err) = cairnctl(&d, &["check", "--now"]);
    assert!(ok, "{err}");
    assert!(out.contains("the full image (deltas are off"), "{out}");
    fixture::write_host_files(
        d.dir.path(),
        &d.root,
        "[update]\nchannel = \"stable\"\ndelta = true\n",
    )
    .unwrap();

    let (ok, out, err) = cairnctl(&d, &["check", "--now"]);
    assert!(ok, "{err}");
    assert!(out.contains("by delta"), "{out}");
    let (ok, out, err) = cairnctl(&d, &["--json", "check", "--now"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let planned = v["download"]["usr_bytes"].as_u64().unwrap();
    assert!(planned * 4 < d.full("1.1.0"), "{out}");
    assert!(
        v["download"]["blocks_fetched"].as_u64().unwrap() > 0,
        "{out}"
    );

    let before = d.sent();
    let (ok, out, err) = cairnctl(&d, &["update", "--now", "--full"]);
    assert!(ok, "{err}");
    assert!(out.contains("reboot needed"), "{out}");
    assert!(!err.contains("delta"), "{err}");
    assert!(d.sent() - before >= d.full("1.1.0"));
    d.assert_installed("1.1.0");
}

/// Range requests: any part of a file, including all of it from 0 (a
/// server may answer that with 206 or 200).
#[test]
fn get_range_returns_exactly_the_bytes_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(dir.path().join("f"), &body).unwrap();
    let server = Server::start(dir.path()).unwrap();
    let http = cairn_updater::http::Http::new(&server.url, fixture::fast_http());
    let mut buf = Vec::new();
    // (start, len)
    for (start, len) in [(0, 10_000), (0, 1), (5000, 5000), (9999, 1), (123, 4567)] {
        http.get_range("f", start, len, &mut buf).unwrap();
        assert_eq!(buf, body[start as usize..][..len as usize], "{start}+{len}");
    }
    assert!(
        http.get_range("f", 9000, 2000, &mut buf).is_err(),
        "past the end"
    );
}
