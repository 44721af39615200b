//! The targets: one per parser of bytes that come from outside (disk, network,
//! operator), each calling the real parser the way its caller does, and a seed
//! corpus made with the real writers.
//!
//! Where a signature guards the parser (root, channel, manifest), the target
//! signs the mutated document with the fixture keys before verifying, as an
//! attacker holding a key (or a compromised build) would: otherwise every
//! mutation stops at the signature check and the document parser is never
//! reached. Signature files themselves get their own target.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use boot_sig::KEY_SLOT_LEN;
use disk_layout::Arch;
use gpt_slots::{Attrs, BlockDevice, Gpt, choose, crc32};
use host_config::config::HostConfig;
use initrd_pack::ModuleIndex;
use initrd_pack::cpio::{Archive, read_newc};
use oci_image::manifest::{
    self, DOCKER_LIST, DOCKER_MANIFEST, Descriptor, ImageIndex, ImageManifest, OCI_INDEX,
    OCI_MANIFEST, Parsed, Platform,
};
use oci_image::{UnpackOptions, UnpackReport};
use release_manifest::{
    Hex32, KeyPair, Manifest, ManifestFields, PublicKey, ReleaseWriter, Version, sign_document,
    verify_signed,
};
use release_repo::{Channel, ReleaseEntry, Root, Wave};
use sha2::{Digest, Sha256};

use crate::mutate::Format;
use crate::outcome;
use crate::runner::Target;

/// "Now" for expiry checks: fixed, so a run is reproducible.
const NOW: u64 = 1_800_000_000;
const FAR: u64 = 4_000_000_000;

pub static TARGETS: &[Target] = &[
    Target {
        name: "gpt",
        about: "gpt-slots Gpt::read over a memory disk, then slot choice, repair and commit",
        run: gpt,
        seeds: gpt_seeds,
        format: Format::Binary,
        dict: &[b"EFI PART", &[0, 0, 1, 0], &[92, 0, 0, 0], &[128, 0, 0, 0]],
        max_len: 160 << 10,
    },
    Target {
        name: "boot-sig",
        about: "boot-sig verify: boot.sig lines against the kernel, initrd and cmdline",
        run: boot_sig,
        seeds: boot_sig_seeds,
        format: Format::Text,
        dict: &[b"ed25519 ", b" ", b"\n"],
        max_len: 8 << 10,
    },
    Target {
        name: "root",
        about: "release-repo verify_root_chain: root.json (signed by the fixture keys)",
        run: root,
        seeds: root_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "channel",
        about: "release-repo verify_channel: channels/<name>.json (signed by the fixture root)",
        run: channel,
        seeds: channel_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "manifest",
        about: "release-repo verify_manifest / release-manifest Manifest parsing (pinned and signed)",
        run: manifest,
        seeds: manifest_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "signatures",
        about: "release-manifest verify_signed: the .sig file beside every metadata file",
        run: signatures,
        seeds: signatures_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 32 << 10,
    },
    Target {
        name: "cpio",
        about: "initrd-pack read_newc: the newc reader",
        run: cpio,
        seeds: cpio_seeds,
        format: Format::Binary,
        dict: &[
            b"070701",
            b"TRAILER!!!\0",
            b"00000000",
            b"FFFFFFFF",
            b"0000000B",
        ],
        max_len: 64 << 10,
    },
    Target {
        name: "modules-dep",
        about: "initrd-pack ModuleIndex::parse (modules.dep, modules.builtin) and resolve",
        run: modules_dep,
        seeds: modules_dep_seeds,
        format: Format::Text,
        dict: &[b":", b".ko", b".ko.zst", b".ko.xz", b"#", b"\0", b"kernel/"],
        max_len: 64 << 10,
    },
    Target {
        name: "tar-unpack",
        about: "oci-image apply_layer: a layer blob (tar, gzip, zstd) unpacked into a temp rootfs",
        run: tar_unpack,
        seeds: tar_seeds,
        format: Format::Binary,
        dict: &[
            b"ustar\0",
            b"ustar  \0",
            b"././@LongLink",
            b".wh.",
            b".wh..wh..opq",
            b"../",
            b"/",
            b"SCHILY.xattr.",
            b"path=",
            b"linkpath=",
            b"size=",
            b"GNU.sparse.",
            &[0x1f, 0x8b],
            &[0x28, 0xb5, 0x2f, 0xfd],
        ],
        max_len: 256 << 10,
    },
    Target {
        name: "oci-manifest",
        about: "oci-image parse_manifest (manifests and indexes) and select_platform",
        run: oci_manifest,
        seeds: oci_manifest_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "oci-config",
        about: "oci-image parse_config: an image config blob",
        run: oci_config,
        seeds: oci_config_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 64 << 10,
    },
    Target {
        name: "oci-signature",
        about: "oci-image Signature::from_bytes and verify: image signature files",
        run: oci_signature,
        seeds: oci_signature_seeds,
        format: Format::Json,
        dict: JSON_DICT,
        max_len: 32 << 10,
    },
    Target {
        name: "registry-auth",
        about: "oci-image parse_challenge: a registry's WWW-Authenticate header",
        run: registry_auth,
        seeds: registry_auth_seeds,
        format: Format::Text,
        dict: &[
            b"Bearer ",
            b"Basic ",
            b"realm=",
            b"service=",
            b"scope=",
            b"\"",
            b",",
            b"\\",
        ],
        max_len: 4 << 10,
    },
    Target {
        name: "host-config",
        about: "host-config HostConfig::parse (config.toml), round trip and app unit rendering",
        run: host_config,
        seeds: host_config_seeds,
        format: Format::Toml,
        dict: &[
            b"[[apps]]\n",
            b"[containers]\n",
            b"[[users]]\n",
            b"[health]\n",
            b"[update]\n",
            b"[[containers.trust]]\n",
            b"name = ",
            b"image = ",
            b"\"\"\"",
            b"'''",
            b"= {",
            b"= [",
        ],
        max_len: 32 << 10,
    },
    Target {
        name: "block-index",
        about: "block-delta Index::decode (usr.blockindex), the encode round trip, locate and plan",
        run: block_index,
        seeds: block_index_seeds,
        format: Format::Binary,
        dict: &[
            b"CAIRNBD\x02",
            b"CAIRNBD\x01",
            &[0, 16, 0, 0],
            &[1, 0, 0, 0],
            &[8, 0, 0, 0],
            &[32, 0, 0, 0],
        ],
        max_len: 64 << 10,
    },
];

const JSON_DICT: &[&[u8]] = &[
    b"\"type\"",
    b"\"version\"",
    b"\"expires\"",
    b"\"keys\"",
    b"\"threshold\"",
    b"\"releases\"",
    b"\"images\"",
    b"\"chunks\"",
    b"\"verity\"",
    b"\"format\"",
    b"\"mediaType\"",
    b"\"schemaVersion\"",
    b"\"manifests\"",
    b"\"platform\"",
    b"\"digest\"",
    b"\"sha256:",
    b"\\u0000",
    b"\\ud800",
    b"[",
    b"{",
    b"}",
    b"]",
    b",",
    b":",
    b"null",
    b"1e999",
    b"-0",
];

// ------------------------------------------------------------------- fixtures

fn key(n: u8) -> KeyPair {
    KeyPair::from_seed([n; 32])
}

struct Fixture {
    /// Root keys k1, k2 (threshold 2) and k3, a key rotated in. Slices of
    /// these are the signer sets: making a key pair costs a scalar multiplication.
    k: Vec<KeyPair>,
    root: Root,
    /// The release (build) key, alone.
    release: Vec<KeyPair>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let k = vec![key(1), key(2), key(3)];
        let root = Root::new(&[k[0].public(), k[1].public()], 2, 1, FAR);
        Fixture {
            k,
            root,
            release: vec![key(9)],
        }
    })
}

fn sign(doc: &[u8], keys: &[KeyPair]) -> Vec<u8> {
    // Fails only without keys.
    sign_document(doc, keys).unwrap_or_default()
}

// ------------------------------------------------------------------------ gpt

/// A disk in memory; reads and writes outside it fail like a short device.
#[derive(Clone)]
struct MemDisk {
    data: Vec<u8>,
    ss: usize,
}

impl BlockDevice for MemDisk {
    type Error = &'static str;
    fn sector_size(&self) -> usize {
        self.ss
    }
    fn num_sectors(&self) -> u64 {
        (self.data.len() / self.ss) as u64
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let at = usize::try_from(lba)
            .ok()
            .and_then(|l| l.checked_mul(self.ss))
            .ok_or("lba out of range")?;
        let src = self
            .data
            .get(at..at.checked_add(buf.len()).ok_or("overflow")?)
            .ok_or("read past the end")?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        let at = usize::try_from(lba)
            .ok()
            .and_then(|l| l.checked_mul(self.ss))
            .ok_or("lba out of range")?;
        let dst = self
            .data
            .get_mut(at..at.checked_add(buf.len()).ok_or("overflow")?)
            .ok_or("write past the end")?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Recomputes the entry-array and header CRCs of the header at `lba` where its
/// fields allow, so mutations reach the checks behind the CRCs (what a
/// deliberate attacker or a buggy partitioning tool produces).
fn fix_crcs(disk: &mut [u8], ss: usize, lba: usize) -> Option<()> {
    let h = lba.checked_mul(ss)?;
    let size = le32(disk, h + 12)? as usize;
    if !(92..=ss).contains(&size) || disk.get(h..h + 8)? != b"EFI PART" {
        return None;
    }
    // The disk may end inside the header sector.
    disk.get(h..h + size)?;
    let entry_lba = usize::try_from(le64(disk, h + 72)?).ok()?;
    let n = le32(disk, h + 80)? as usize;
    let esize = le32(disk, h + 84)? as usize;
    let len = n.checked_mul(esize).filter(|&l| l <= 1 << 20)?;
    let at = entry_lba.checked_mul(ss)?;
    let array = disk.get(at..at.checked_add(len)?)?;
    let crc = crc32(array);
    disk[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    disk[h + 16..h + 20].fill(0);
    let crc = crc32(&disk[h..h + size]);
    disk[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    Some(())
}

fn gpt(data: &[u8]) -> u64 {
    // A second header sector at 4096 means a 4Kn disk (the seeds have both).
    let ss = if data.get(4096..4104) == Some(b"EFI PART") {
        4096
    } else {
        512
    };
    let raw = gpt_once(data.to_vec(), ss);
    let mut fixed = data.to_vec();
    let last = fixed.len() / ss;
    let _ = fix_crcs(&mut fixed, ss, 1);
    if last > 0 {
        let _ = fix_crcs(&mut fixed, ss, last - 1);
    }
    let fixed = gpt_once(fixed, ss);
    outcome::mark(raw ^ fixed.rotate_left(17), (raw | fixed) & 1 == 1)
}

fn gpt_once(data: Vec<u8>, ss: usize) -> u64 {
    let mut disk = MemDisk { data, ss };
    let mut g = match Gpt::read(&mut disk) {
        Ok(g) => g,
        Err(e) => return outcome::of_err(&e),
    };
    // What the boot manager and the updater do with a table they read.
    let _ = g.entries().count();
    let _ = g.entry(0);
    let _ = g.entry(u32::MAX);
    let _ = (g.usable_range(), g.is_healthy(), g.disk_guid(), g.source());
    let mut class = 1;
    for arch in [Arch::X86_64, Arch::Arm64] {
        let slots = g.slots(arch.usr_type());
        class = class * 3 + slots.len() as u64;
        if let Some(c) = choose(&slots) {
            class = class.wrapping_mul(7) ^ c.number as u64;
        }
    }
    let mut repaired = disk.clone();
    if g.clone().repair(&mut repaired).is_ok() {
        // A repair writes what it read: the result must read back.
        if let Err(e) = Gpt::read(&mut repaired) {
            panic!("a repaired table does not read back: {e}");
        }
    }
    let first = g.entries().next();
    if let Some(e) = first
        && g.set_slot_attrs(e.number, Attrs::new(15, 7, false)).is_ok()
        && g.commit(&mut disk).is_ok()
    {
        match Gpt::read(&mut disk) {
            Ok(back) => {
                let got = back.entry(e.number).map(|e| e.attrs());
                assert_eq!(
                    got,
                    Some(Attrs::new(15, 7, false)),
                    "a committed change is not what reads back"
                );
            }
            Err(err) => panic!("a committed table does not read back: {err}"),
        }
    }
    outcome::mark(class, true)
}

/// A GPT made by hand as sgdisk lays it out: protective MBR, header at LBA 1,
/// entries from LBA 2, backup entries and header at the end.
fn make_gpt(
    ss: usize,
    entries: usize,
    parts: &[(disk_layout::Guid, u64, u64, u64, &str)],
) -> Vec<u8> {
    let array_sectors = (entries * 128).div_ceil(ss);
    let total = 2 + array_sectors + 8 + array_sectors + 1;
    let mut d = vec![0u8; total * ss];
    // Protective MBR.
    d[446 + 4] = 0xee;
    d[510] = 0x55;
    d[511] = 0xaa;
    let mut array = vec![0u8; entries * 128];
    for (i, (ty, first, last, attrs, name)) in parts.iter().enumerate() {
        let e = &mut array[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&ty.0);
        e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[48..56].copy_from_slice(&attrs.to_le_bytes());
        for (j, u) in name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    let first_usable = 2 + array_sectors as u64;
    let last_usable = (total - 2 - array_sectors) as u64;
    let last = total as u64 - 1;
    let array_crc = crc32(&array);
    for (lba, alt, entry_lba) in [(1u64, last, 2u64), (last, 1, last - array_sectors as u64)] {
        let h = lba as usize * ss;
        let hdr = &mut d[h..h + 92];
        hdr[..8].copy_from_slice(b"EFI PART");
        hdr[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        hdr[12..16].copy_from_slice(&92u32.to_le_bytes());
        hdr[24..32].copy_from_slice(&lba.to_le_bytes());
        hdr[32..40].copy_from_slice(&alt.to_le_bytes());
        hdr[40..48].copy_from_slice(&first_usable.to_le_bytes());
        hdr[48..56].copy_from_slice(&last_usable.to_le_bytes());
        hdr[56..72].copy_from_slice(&[0xd1; 16]);
        hdr[72..80].copy_from_slice(&entry_lba.to_le_bytes());
        hdr[80..84].copy_from_slice(&(entries as u32).to_le_bytes());
        hdr[84..88].copy_from_slice(&128u32.to_le_bytes());
        hdr[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32(hdr);
        hdr[16..20].copy_from_slice(&crc.to_le_bytes());
        let a = entry_lba as usize * ss;
        d[a..a + array.len()].copy_from_slice(&array);
    }
    d
}

fn gpt_seeds() -> Vec<Vec<u8>> {
    use disk_layout::Part;
    let arch = Arch::X86_64;
    let ro = disk_layout::GPT_ATTR_READ_ONLY;
    let cairn = |ss: usize, entries: usize| {
        let array = (entries * 128).div_ceil(ss) as u64;
        let f = 2 + array;
        make_gpt(
            ss,
            entries,
            &[
                (Part::Esp.type_guid(arch), f, f + 1, 0, Part::Esp.label()),
                (
                    Part::UsrA.type_guid(arch),
                    f + 2,
                    f + 3,
                    Attrs::new(1, 0, true).to_bits(ro),
                    Part::UsrA.label(),
                ),
                (
                    Part::UsrB.type_guid(arch),
                    f + 4,
                    f + 5,
                    Attrs::new(2, 3, false).to_bits(ro),
                    Part::UsrB.label(),
                ),
                (
                    Part::Oem.type_guid(arch),
                    f + 6,
                    f + 6,
                    0,
                    Part::Oem.label(),
                ),
                (
                    Part::Root.type_guid(arch),
                    f + 7,
                    f + 7,
                    0,
                    Part::Root.label(),
                ),
            ],
        )
    };
    let mut seeds = vec![cairn(512, 8), cairn(512, 128), cairn(4096, 32)];
    // The same disk after gpt-slots' own writer committed a slot change.
    let mut disk = MemDisk {
        data: cairn(512, 8),
        ss: 512,
    };
    if let Ok(mut g) = Gpt::read(&mut disk)
        && g.set_slot_attrs(3, Attrs::new(0, 0, false)).is_ok()
        && g.commit(&mut disk).is_ok()
    {
        seeds.push(disk.data);
    }
    // Only the backup survives.
    let mut backup_only = cairn(512, 8);
    backup_only[512..1024].fill(0);
    seeds.push(backup_only);
    seeds
}

// ------------------------------------------------------------------- boot.sig

const KERNEL: &[u8] = b"MZ kernel image bytes";
const INITRD: &[u8] = b"\x28\xb5\x2f\xfd initrd";
const CMDLINE: &[u8] = b"console=ttyS0 usrhash=00";

fn boot_trusted() -> &'static [[u8; 32]] {
    static T: OnceLock<Vec<[u8; 32]>> = OnceLock::new();
    T.get_or_init(|| vec![key(1).public().to_bytes(), key(2).public().to_bytes()])
}

fn boot_sig(data: &[u8]) -> u64 {
    let r = boot_sig::verify(boot_trusted(), data, KERNEL, INITRD, CMDLINE);
    // The key slot reader takes the bytes the builder patched into the boot manager.
    if let Some(slot) = data.get(..KEY_SLOT_LEN) {
        let mut s = [0u8; KEY_SLOT_LEN];
        s.copy_from_slice(slot);
        let _ = boot_sig::slot_keys(&s);
    }
    outcome::of(&r)
}

fn boot_sig_seeds() -> Vec<Vec<u8>> {
    let line = |k: u8| boot_sig::sign_line(&[k; 32], KERNEL, INITRD, CMDLINE).to_vec();
    let mut slot = boot_sig::EMPTY_KEY_SLOT.to_vec();
    let _ = boot_sig::embed_keys(&mut slot, boot_trusted());
    vec![
        line(1),
        [line(7), line(2)].concat(),
        [line(1), line(2), line(3)].concat(),
        boot_sig::sign_line(&[1; 32], b"other", INITRD, CMDLINE).to_vec(),
        slot,
    ]
}

// ----------------------------------------------------------- root and channel

fn root(data: &[u8]) -> u64 {
    let f = fixture();
    let sig = sign(data, &f.k);
    let r = release_repo::verify_root_chain(&f.root, &[(data.to_vec(), sig)], NOW);
    if let Ok(new) = &r {
        let _ = new.public_keys();
    }
    outcome::of(&r)
}

fn root_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let p = |i: usize| f.k[i].public();
    vec![
        Root::new(&[p(0), p(1)], 2, 2, FAR).to_json(),
        Root::new(&[p(0), p(1), p(2)], 2, 2, FAR).to_json(),
        Root::new(&[p(2)], 1, 2, FAR).to_json(),
        f.root.to_json(),
    ]
}

const BOARD: &str = "qemu-x86_64";

fn channel_doc(releases: usize) -> Vec<u8> {
    let entries = (0..releases)
        .map(|i| {
            let v = format!("1.{i}.0");
            ReleaseEntry {
                board: if i % 2 == 0 { BOARD } else { "qemu-arm64" }.into(),
                arch: if i % 2 == 0 { "x86_64" } else { "arm64" }.into(),
                manifest: format!("releases/{BOARD}/{v}/manifest.json"),
                version: Version::parse(&v).expect("a valid version"),
                manifest_sha256: Hex32([i as u8; 32]),
                manifest_size: 1234 + i as u64,
                wave: Wave::linear(NOW - 10, 3600 * i as u64),
                halted: None,
            }
        })
        .collect();
    Channel {
        // release-repo's type string (private there); the seed test checks it.
        kind: "cairn-channel".into(),
        channel: "stable".into(),
        version: 3,
        expires: FAR,
        releases: entries,
    }
    .to_json()
}

fn channel(data: &[u8]) -> u64 {
    let f = fixture();
    let sig = sign(data, &f.k[..2]);
    let r = release_repo::verify_channel(data, &sig, "stable", &f.root, NOW, 2);
    if let Ok(c) = &r {
        for e in &c.releases {
            let _ = release_repo::wave_reached(e.wave, 0.5, NOW);
        }
    }
    outcome::of(&r)
}

fn channel_seeds() -> Vec<Vec<u8>> {
    vec![channel_doc(0), channel_doc(1), channel_doc(3)]
}

// ------------------------------------------------------------------- manifest

fn manifest(data: &[u8]) -> u64 {
    let f = fixture();
    let sig = sign(data, &f.release);
    // The channel pins exactly these bytes, as it would for a real release.
    let entry = ReleaseEntry {
        board: BOARD.into(),
        arch: "x86_64".into(),
        version: Version::parse("2.0.0").expect("a valid version"),
        manifest: format!("releases/{BOARD}/2.0.0/manifest.json"),
        manifest_sha256: Hex32(Sha256::digest(data).into()),
        manifest_size: data.len() as u64,
        wave: Wave::immediate(0),
        halted: None,
    };
    let r = release_repo::verify_manifest(data, &sig, &entry, &[f.release[0].public()], 1);
    if let Ok(m) = &r {
        let _ = m.check_expiry(NOW);
        for img in &m.images {
            if let Some(v) = &img.verity {
                let _ = v.to_info();
            }
        }
    }
    // Manifest::from_json is also what `cairnctl` runs on a local release.
    let direct = Manifest::from_json(data);
    outcome::mark(
        outcome::of(&r) ^ outcome::of(&direct).rotate_left(9),
        r.is_ok(),
    )
}

fn manifest_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let Ok(dir) = tempfile::tempdir() else {
        return Vec::new();
    };
    let mut seeds = Vec::new();
    for (i, images) in [1usize, 3].into_iter().enumerate() {
        let rel = dir.path().join(format!("r{i}"));
        let Ok(mut w) = ReleaseWriter::create(&rel) else {
            continue;
        };
        for n in 0..images {
            let name = ["usr", "kernel", "initrd"][n];
            let data: Vec<u8> = (0..10_000u32).map(|b| (b * (n as u32 + 3)) as u8).collect();
            let _ = w.add_image(name, &data[..], 4096, None);
        }
        let fields = ManifestFields {
            board: BOARD.into(),
            arch: "x86_64".into(),
            version: Version::parse("2.0.0").expect("a valid version"),
            created: NOW - 100,
            expires: (i == 1).then_some(FAR),
            packages: vec!["systemd=257-1".into(), "linux-image-amd64=6.12".into()],
        };
        if let Ok(path) = w.finish(fields, &f.release)
            && let Ok(bytes) = std::fs::read(path)
        {
            seeds.push(bytes);
        }
    }
    seeds
}

fn signatures(data: &[u8]) -> u64 {
    let f = fixture();
    let trusted: Vec<PublicKey> = f.k.iter().map(KeyPair::public).collect();
    outcome::of(&verify_signed(SIGNED_DOC, data, &trusted, 2))
}

const SIGNED_DOC: &[u8] = b"{\"type\": \"cairn-channel\"}\n";

fn signatures_seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    vec![
        sign(SIGNED_DOC, &f.k[..2]),
        sign(SIGNED_DOC, &[key(1), key(2), key(3), key(9)]),
        sign(SIGNED_DOC, &f.k[2..]),
        b"[]\n".to_vec(),
    ]
}

// ----------------------------------------------------------- cpio and modules

fn cpio(data: &[u8]) -> u64 {
    match read_newc(data) {
        Ok(entries) => outcome::mark(entries.len() as u64 * 2, true),
        Err(e) => outcome::of_text(&e),
    }
}

fn cpio_seeds() -> Vec<Vec<u8>> {
    let mut a = Archive::new(1_700_000_000);
    let steps = [
        a.add_file("init", 0o755, b"\x7fELF init".to_vec()),
        a.add_dir("sysroot", 0o755),
        a.add_symlink("bin", "usr/bin"),
        a.add_char_device("dev/console", 0o600, 5, 1),
        a.add_file(
            "lib/modules/6.12/modules.order",
            0o644,
            b"dm-verity\n".to_vec(),
        ),
        a.add_file(
            "lib/modules/6.12/kernel/dm-verity.ko",
            0o644,
            vec![0x5a; 300],
        ),
    ];
    let mut seeds = Vec::new();
    if steps.iter().all(Result::is_ok) {
        seeds.push(a.to_bytes());
    }
    let mut small = Archive::new(0);
    if small.add_file("a", 0o644, b"x".to_vec()).is_ok() {
        seeds.push(small.to_bytes());
    }
    seeds.push(Archive::new(0).to_bytes());
    seeds
}

fn modules_dep(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let (dep, builtin) = text.split_once('\0').unwrap_or((&text, ""));
    let index = match ModuleIndex::parse("6.12.0-test", dep, builtin) {
        Ok(i) => i,
        Err(e) => return outcome::of_err(&e),
    };
    // Ask for every module the file names, as the image builder asks for a board's list.
    let mut names: Vec<String> = dep
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.rsplit('/').next())
        .filter_map(|f| f.split('.').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    names.truncate(64);
    names.push("ext4".into());
    outcome::of(&index.resolve(&names))
}

fn modules_dep_seeds() -> Vec<Vec<u8>> {
    vec![
        b"kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/lib/crc16.ko.xz\n\
kernel/fs/jbd2/jbd2.ko.xz:\n\
kernel/lib/crc16.ko.xz:\n\
kernel/drivers/md/dm-verity.ko.zst: kernel/drivers/md/dm-bufio.ko.zst kernel/lib/reed_solomon.ko.zst\n\
kernel/drivers/md/dm-bufio.ko.zst:\n\
kernel/lib/reed_solomon.ko.zst:\n\
kernel/drivers/virtio/virtio_blk.ko:\n\
\0kernel/drivers/virtio/virtio.ko\nkernel/fs/erofs/erofs.ko\n"
            .to_vec(),
        b"# comment\na.ko: b.ko\nb.ko: c.ko\nc.ko:\n".to_vec(),
    ]
}

// ------------------------------------------------------------------ tar layers

/// A scratch directory for unpacking: in /dev/shm when there is one (a
/// million layers should not wear a disk), else the temp dir.
fn unpack_dir() -> Option<&'static Path> {
    static D: OnceLock<Option<PathBuf>> = OnceLock::new();
    D.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("parser-fuzz-unpack.")
            .tempdir_in(base)
            .ok()?;
        // Kept until `cleanup`: the OnceLock lives for the process.
        Some(dir.keep())
    })
    .as_deref()
}

/// Removes the scratch directory of `tar-unpack`.
pub fn cleanup() {
    if let Some(d) = unpack_dir() {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn tar_unpack(data: &[u8]) -> u64 {
    let (r, entries) = unpack(data);
    outcome::mark(outcome::of(&r) ^ (entries.min(8) << 1), r.is_ok())
}

/// Unpacks `data` as a layer blob into a fresh rootfs, checks nothing
/// outside it changed, removes it; returns the result and the entry count.
fn unpack(data: &[u8]) -> (Result<(), oci_image::Error>, u64) {
    let Some(dir) = unpack_dir() else {
        panic!("no scratch directory for unpacking");
    };
    let blob = dir.join("blob");
    let rootfs = dir.join("rootfs");
    let canary = dir.join("canary");
    if std::fs::write(&blob, data).is_err()
        || std::fs::create_dir(&rootfs).is_err()
        || std::fs::write(&canary, b"canary").is_err()
    {
        panic!("cannot prepare {}", dir.display());
    }
    let opts = UnpackOptions {
        max_layer_bytes: 64 << 20,
        max_entries: 10_000,
    };
    let mut report = UnpackReport::default();
    let r = oci_image::unpack::apply_layer(&rootfs, &blob, "sha256:fuzz", &opts, &mut report);
    // Nothing may appear, change or vanish beside the rootfs: that would be an escape.
    let mut beside: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    beside.sort();
    assert_eq!(
        beside,
        ["blob", "canary", "rootfs"],
        "the layer wrote outside its rootfs"
    );
    assert_eq!(
        std::fs::read(&canary).ok().as_deref(),
        Some(&b"canary"[..]),
        "the layer changed a file outside its rootfs"
    );
    let _ = std::fs::remove_dir_all(&rootfs);
    if rootfs.symlink_metadata().is_ok() {
        panic!("cannot remove {} after unpacking", rootfs.display());
    }
    (r, report.entries)
}

fn tar_seeds() -> Vec<Vec<u8>> {
    let plain = tar_layer().unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let gz = std::io::Write::write_all(&mut gz, &plain)
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    let zst = zstd::encode_all(&plain[..], 3).unwrap_or_default();
    vec![plain, gz, zst]
}

/// A layer with every kind of entry the unpacker handles.
fn tar_layer() -> std::io::Result<Vec<u8>> {
    use tar::{EntryType, Header};
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: EntryType, mode: u32, size: u64| {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(1000);
        h.set_gid(1000);
        h
    };
    b.append_data(&mut header(EntryType::Directory, 0o755, 0), "etc/", &[][..])?;
    b.append_data(
        &mut header(EntryType::Regular, 0o644, 6),
        "etc/hostname",
        &b"cairn\n"[..],
    )?;
    b.append_data(
        &mut header(EntryType::Regular, 0o4755, 4),
        "usr/bin/su",
        &b"\x7fELF"[..],
    )?;
    b.append_link(&mut header(EntryType::Symlink, 0o777, 0), "bin", "usr/bin")?;
    b.append_link(
        &mut header(EntryType::Link, 0o644, 0),
        "etc/hostname2",
        "etc/hostname",
    )?;
    b.append_data(
        &mut header(EntryType::Regular, 0o644, 0),
        "etc/.wh.old",
        &[][..],
    )?;
    b.append_data(
        &mut header(EntryType::Regular, 0o644, 0),
        "var/.wh..wh..opq",
        &[][..],
    )?;
    b.append_data(&mut header(EntryType::Char, 0o600, 0), "dev/null", &[][..])?;
    b.append_data(&mut header(EntryType::Fifo, 0o600, 0), "run/fifo", &[][..])?;
    // A long name: GNU longname entry.
    let long = format!("usr/share/{}/file", "d".repeat(120));
    b.append_data(&mut header(EntryType::Regular, 0o644, 2), &long, &b"ok"[..])?;
    // PAX extended header with an allowed and a refused xattr, then its file.
    let records: Vec<u8> = [
        ("SCHILY.xattr.user.note", "v"),
        ("SCHILY.xattr.trusted.x", "y"),
        ("mtime", "1700000000.5"),
    ]
    .iter()
    .flat_map(|(k, v)| pax_record(k, v))
    .collect();
    b.append_data(
        &mut header(EntryType::XHeader, 0o644, records.len() as u64),
        "PaxHeaders/etc/motd",
        &records[..],
    )?;
    b.append_data(
        &mut header(EntryType::Regular, 0o644, 3),
        "etc/motd",
        &b"hi\n"[..],
    )?;
    b.into_inner()
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    // "<len> key=value\n" where len counts itself.
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

// ------------------------------------------------------------- registry (OCI)

fn oci_manifest(data: &[u8]) -> u64 {
    let mut class = 0u64;
    let mut accepted = false;
    for ct in [
        None,
        Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
    ] {
        let r = manifest::parse_manifest(data, ct, "fuzz");
        class = class.rotate_left(13) ^ outcome::of(&r);
        accepted |= r.is_ok();
        if let Ok(Parsed::Index(index)) = &r {
            for p in [
                Platform::host(),
                Platform {
                    architecture: "arm".into(),
                    os: "linux".into(),
                    variant: Some("v7".into()),
                },
            ] {
                let _ = manifest::select_platform(index, &p, "fuzz");
                let _ = p.to_string();
            }
        }
    }
    outcome::mark(class, accepted)
}

fn descriptor(media_type: &str, n: u8, platform: Option<(&str, Option<&str>)>) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: format!("sha256:{}", hex_of(&[n; 32])),
        size: 1000 + n as u64,
        platform: platform.map(|(arch, variant)| Platform {
            architecture: arch.into(),
            os: if arch == "unknown" {
                "unknown"
            } else {
                "linux"
            }
            .into(),
            variant: variant.map(str::to_string),
        }),
        annotations: None,
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn oci_manifest_seeds() -> Vec<Vec<u8>> {
    let m = |mt: &str, config: &str, layer: &str| ImageManifest {
        schema_version: 2,
        media_type: Some(mt.into()),
        config: descriptor(config, 1, None),
        layers: vec![descriptor(layer, 2, None), descriptor(layer, 3, None)],
        annotations: None,
    };
    let oci = m(OCI_MANIFEST, manifest::OCI_CONFIG, manifest::OCI_LAYER_TAR);
    let docker = m(
        DOCKER_MANIFEST,
        manifest::DOCKER_CONFIG,
        manifest::DOCKER_LAYER_TAR,
    );
    let index = |mt: &str, entry: &str| ImageIndex {
        schema_version: 2,
        media_type: Some(mt.into()),
        manifests: vec![
            descriptor(entry, 4, Some(("amd64", None))),
            descriptor(entry, 5, Some(("arm64", Some("v8")))),
            descriptor(entry, 6, Some(("arm", Some("v7")))),
            descriptor(entry, 7, Some(("unknown", None))),
        ],
    };
    let mut bare = oci.clone();
    bare.media_type = None;
    [
        serde_json::to_vec(&oci),
        serde_json::to_vec_pretty(&docker),
        serde_json::to_vec(&index(OCI_INDEX, OCI_MANIFEST)),
        serde_json::to_vec(&index(DOCKER_LIST, DOCKER_MANIFEST)),
        serde_json::to_vec(&bare),
    ]
    .into_iter()
    .filter_map(Result::ok)
    .collect()
}

fn oci_config(data: &[u8]) -> u64 {
    outcome::of(&manifest::parse_config(data, "fuzz"))
}

fn oci_config_seeds() -> Vec<Vec<u8>> {
    vec![
        br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/usr/bin:/bin","A=b"],"WorkingDir":"/srv","User":"1000:1000","ExposedPorts":{"80/tcp":{},"53/udp":{}},"StopSignal":"SIGTERM","Labels":{"a":"b"}},"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]},"history":[{"created_by":"x"}]}"#.to_vec(),
        br#"{"architecture":"arm64","variant":"v8","os":"linux","config":{}}"#.to_vec(),
        b"{}".to_vec(),
    ]
}

fn oci_signature(data: &[u8]) -> u64 {
    let r = oci_image::Signature::from_bytes(data, "fuzz");
    let mut class = outcome::of(&r);
    if let Ok(sig) = &r {
        let keys = [key(1).public(), key(2).public()];
        class ^= outcome::of(&sig.verify(&sig.name, &sig.digest, &keys)).rotate_left(7);
        class ^= outcome::of(&sig.verify("docker.io/library/alpine", &sig.digest, &keys));
    }
    outcome::mark(class, r.is_ok())
}

fn oci_signature_seeds() -> Vec<Vec<u8>> {
    let digest = format!("sha256:{}", hex_of(&[0xab; 32]));
    vec![
        oci_image::sign("alpine:3", &digest, &key(1)).to_bytes(),
        oci_image::sign("ghcr.io/acme/app", &digest, &key(2)).to_bytes(),
        oci_image::sign("10.0.2.2:5000/test/web", &digest, &key(7)).to_bytes(),
    ]
}

fn registry_auth(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    match oci_image::parse_challenge(&text) {
        None => 0,
        Some(c) => outcome::mark(outcome::of_text(&format!("{c:?}")), true),
    }
}

fn registry_auth_seeds() -> Vec<Vec<u8>> {
    [
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        r#"Basic realm="registry""#,
        r#"Bearer realm="http://127.0.0.1:5000/token", error="invalid_token", scope="a:b:pull,push""#,
        r#"bearer realm="x\"y",service=unquoted"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

// ----------------------------------------------------------------- host config

fn host_config(data: &[u8]) -> u64 {
    let Ok(text) = std::str::from_utf8(data) else {
        // cairn-config reads the file as UTF-8 and refuses anything else.
        return 0;
    };
    let cfg = match HostConfig::parse(text, "fuzz.toml") {
        Ok(c) => c,
        Err(e) => return outcome::of_text(&e.to_string()),
    };
    // The effective config is written for other components and parsed again by them.
    let effective = cfg.to_toml();
    match HostConfig::parse(&effective, "effective") {
        Ok(back) => assert_eq!(
            back, cfg,
            "the effective config does not round-trip:\n{effective}"
        ),
        Err(e) => panic!("the effective config does not parse: {e}\n{effective}"),
    }
    if let Err(e) = HostConfig::parse(&cfg.apps_toml(), "apps") {
        panic!("the saved apps table does not parse: {e}");
    }
    for app in &cfg.apps {
        let _ = app_units::units::unit_text(app, cfg.containers.as_ref());
    }
    outcome::mark(
        (cfg.apps.len() as u64 * 3 + cfg.users.len() as u64) << 1,
        true,
    )
}

/// The full example of every host-config section (host-config.s own).
const HOST_CONFIG: &str = host_config::config::EXAMPLE;

fn host_config_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        HOST_CONFIG.as_bytes().to_vec(),
        b"hostname = \"a\"\n".to_vec(),
        b"[[apps]]\nname = \"a\"\nimage = \"alpine\"\nmemory = \"1GiB\"\ncpus = 2\n".to_vec(),
    ];
    // The effective config cairn-config writes: the real writer's output.
    if let Ok(c) = HostConfig::parse(HOST_CONFIG, "seed") {
        seeds.push(c.to_toml().into_bytes());
    }
    seeds
}

// ---------------------------------------------------------------- block index

/// `usr.blockindex` as the agent reads it: decode, the encode round trip, then
/// locating its frames in a blocks image that fits it and planning against a
/// small local image (what the agent does next with a decoded index).
fn block_index(data: &[u8]) -> u64 {
    let index = match block_delta::Index::decode(data) {
        Ok(i) => i,
        Err(e) => return outcome::of_err(&e),
    };
    assert_eq!(
        block_delta::Index::decode(&index.encode()).as_ref(),
        Ok(&index),
        "encoding a decoded index gives it back"
    );
    // 16 frames to a chunk file, whose zsize is the sum of its frames'.
    let frame_bytes = index.frame_blocks() as u64 * block_delta::BLOCK_SIZE;
    let per_chunk = 16usize;
    let chunks = index
        .frames()
        .chunks(per_chunk)
        .enumerate()
        .map(|(i, f)| release_manifest::Chunk {
            index: i as u64,
            offset: i as u64 * per_chunk as u64 * frame_bytes,
            size: 0,
            sha256: Hex32([0; 32]),
            zsize: f.iter().map(|f| f.zsize as u64).sum(),
            zsha256: Hex32([0; 32]),
            file: format!("chunks/{i}"),
        })
        .collect();
    let blocks = release_manifest::Image {
        name: "usr.blocks".into(),
        size: index.unique_blocks() * block_delta::BLOCK_SIZE,
        sha256: Hex32([0; 32]),
        chunk_size: per_chunk as u64 * frame_bytes,
        verity: None,
        chunks,
    };
    let frames = match block_delta::locate(&index, &blocks) {
        Ok(f) => f,
        Err(e) => return outcome::mark(outcome::of_err(&e), true),
    };
    // Local digests of the kind the index says (format 3: salted).
    let mut local = block_delta::LocalBlocks::default();
    local.extend_with(&index.digests(), &[0u8; 4 * 4096]);
    let plan = block_delta::plan(
        &index,
        &frames,
        &local,
        block_delta::DEFAULT_GAP,
        block_delta::MAX_RANGE,
        &[0..1, 3..4],
    );
    assert_eq!(plan.sources.len() as u64, index.blocks());
    assert!(plan.ranges.iter().all(|r| r.frames.end <= frames.len()));
    assert_eq!(
        plan.download,
        plan.ranges.iter().map(|r| r.len).sum::<u64>()
    );
    outcome::mark(plan.ranges.len().min(8) as u64 * 2 + 4, true)
}

fn block_index_seeds() -> Vec<Vec<u8>> {
    let block = |x: u64| -> Vec<u8> {
        (0..4096u64)
            .map(|i| (i.wrapping_mul(x + 1) >> 3) as u8 ^ x as u8)
            .collect()
    };
    let mut seeds = Vec::new();
    // (blocks, distinct contents, frame blocks, frame hash bytes, digests):
    // format 3 (dm-verity level-0 digests, the salt in the header) and 2.
    let salted = block_delta::DigestKind::Verity { salt: [7; 32] };
    let plain = block_delta::DigestKind::Sha256;
    for (n, distinct, fb, hash, kind) in [
        (40u64, 30u64, 1u32, 8usize, salted),
        (40, 7, 4, 32, plain),
        (40, 7, 4, 32, salted),
        (3, 3, 2, 0, salted),
    ] {
        let img: Vec<u8> = (0..n).flat_map(|b| block(b % distinct)).collect();
        let built = block_delta::build(
            "usr",
            kind,
            &mut std::io::Cursor::new(&img),
            img.len() as u64,
            fb,
            hash,
            fb as u64 * 4096 * 4,
            1,
            &mut |_, _| Ok(()),
        );
        if let Ok(index) = built {
            let bytes = index.encode();
            if hash == 32 && kind == plain {
                // The same index in format 1.
                let mut v1 = bytes.clone();
                v1[7] = 1;
                v1[20..24].copy_from_slice(&[0; 4]);
                seeds.push(v1);
            }
            seeds.push(bytes);
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds are valid inputs: each gets past its parser, so mutations start
    /// from the deep end, and a broken writer or fixture shows here.
    #[test]
    fn seeds_are_accepted() {
        let f = fixture();
        for s in root_seeds().iter().take(3) {
            let sig = sign(s, &f.k);
            release_repo::verify_root_chain(&f.root, &[(s.clone(), sig)], NOW).expect("root seed");
        }
        for s in channel_seeds() {
            let sig = sign(&s, &f.k[..2]);
            release_repo::verify_channel(&s, &sig, "stable", &f.root, NOW, 2)
                .expect("channel seed");
        }
        let m = manifest_seeds();
        assert_eq!(m.len(), 2);
        for s in &m {
            Manifest::from_json(s).expect("manifest seed");
        }
        for s in gpt_seeds() {
            let ss = if s.get(4096..4104) == Some(b"EFI PART") {
                4096
            } else {
                512
            };
            Gpt::read(&mut MemDisk { data: s, ss }).expect("gpt seed");
        }
        boot_sig::verify(
            boot_trusted(),
            &boot_sig_seeds()[0],
            KERNEL,
            INITRD,
            CMDLINE,
        )
        .expect("boot.sig seed");
        verify_signed(
            SIGNED_DOC,
            &signatures_seeds()[0],
            &f.k.iter().map(KeyPair::public).collect::<Vec<_>>(),
            2,
        )
        .expect("signature seed");
        assert!(read_newc(&cpio_seeds()[0]).expect("cpio seed").len() > 5);
        ModuleIndex::parse("k", "a.ko: b.ko\nb.ko:\n", "").expect("modules seed");
        for s in &oci_manifest_seeds() {
            manifest::parse_manifest(s, None, "seed").expect("oci manifest seed");
        }
        for s in &oci_config_seeds() {
            manifest::parse_config(s, "seed").expect("oci config seed");
        }
        for s in &oci_signature_seeds() {
            oci_image::Signature::from_bytes(s, "seed").expect("signature seed");
        }
        assert_eq!(host_config_seeds().len(), 4);
        for s in tar_seeds() {
            let (r, entries) = unpack(&s);
            r.expect("tar seed");
            assert!(entries > 10, "{entries} entries");
        }
        cleanup();
    }
}
