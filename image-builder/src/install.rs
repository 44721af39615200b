//! `cairn-build install`: puts a Cairn disk image on a disk (or a file
//! standing for one), as `flatcar-install` does for Flatcar.
//!
//! Plan, then write: the image, its GPT and OEM partition, the host config
//! and the target are all checked, and the plan printed, before the first
//! byte is written. Then the image is streamed to the device (runs of zeros
//! as BLKZEROOUT on a block device, holes in a file), synced, and read back
//! and compared by sha256 with what was read from the image; the backup
//! GPT is moved to the end of a device larger than the image, with the last
//! usable sector, as `sgdisk -e` does (so systemd-repart finds the free
//! space and grows ROOT on first boot); the host config goes on the OEM
//! partition through `oem::apply`.
//!
//! The image is `disk.raw` or `disk.qcow2` (by content), a build folder
//! (`cairn-build build --out`), whose disk.raw (else disk.qcow2) is used, or
//! a release folder (one holding the signed `manifest.json`: a build's
//! `release/`, or `releases/<board>/<version>/` of an update repository).
//! A release is checked against the `--key` public keys and the disk is
//! assembled from it as `build` assembles one: the board's GPT with fresh
//! GUIDs, USR-A from the release's verified `usr`, the ESP with the boot
//! manager (the build's artifact, or `--boot-efi`: a release does not carry
//! it) and slot A's boot files, new OEM and ROOT filesystems (see
//! `release`). Then it is installed like an image.
//!
//! Refused: a device that is mounted, used as swap or held by another
//! device (dm, md, a partition of it likewise); a file that backs a loop
//! device; and, unless `--force`, a device holding a partition table or a
//! filesystem signature.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::oem::{self, OemFile};

mod release;

const MIB: u64 = 1 << 20;
/// `_IO(0x12, 127)` and `_IO(0x12, 95)` (linux/fs.h), the same on x86_64 and arm64.
const BLKZEROOUT: u64 = 0x127f;
const BLKRRPART: u64 = 0x125f;

/// What `install` was asked to do.
pub struct Options {
    pub image: PathBuf,
    pub device: PathBuf,
    pub inputs: oem::Inputs,
    pub force: bool,
    /// Release public keys a release folder must be signed by (any one).
    pub keys: Vec<PathBuf>,
    /// A release's board config, instead of board-configs/<its board>.toml.
    pub board: Option<PathBuf>,
    /// The boot manager for a release, instead of the build's artifact.
    pub boot_efi: Option<PathBuf>,
}

/// The target as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub is_block: bool,
    pub bytes: u64,
    pub sector_size: u64,
}

/// Everything that will be done, computed before anything is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub image_bytes: u64,
    pub sector_size: u64,
    pub target: Target,
    /// The backup GPT moves to the device's end (it is larger).
    pub relocate_gpt: bool,
    pub oem_files: Vec<OemFile>,
    /// How the disk was assembled from a release (empty for an image).
    pub assembly: Vec<String>,
}

impl Plan {
    /// Checks the image against the target (pure).
    pub fn new(
        image_bytes: u64,
        sector_size: u64,
        target: Target,
        oem_files: Vec<OemFile>,
    ) -> Result<Plan, String> {
        if target.sector_size != sector_size {
            return Err(format!(
                "{} has {}-byte sectors but the image was built for {sector_size}-byte sectors: build one with disk.sector_size = {} in the board",
                target.path.display(),
                target.sector_size,
                target.sector_size
            ));
        }
        if target.bytes < image_bytes {
            return Err(format!(
                "{} holds {} MiB but the image needs {} MiB: use a larger disk",
                target.path.display(),
                target.bytes / MIB,
                image_bytes.div_ceil(MIB)
            ));
        }
        Ok(Plan {
            image_bytes,
            sector_size,
            relocate_gpt: target.bytes > image_bytes,
            target,
            oem_files,
            assembly: Vec::new(),
        })
    }

    /// The plan for the operator, one step a line.
    pub fn describe(&self, image: &Path) -> String {
        let t = &self.target;
        let mut lines = self.assembly.clone();
        lines.push(format!(
            "write {} ({} MiB, {}-byte sectors) to {} ({} MiB{}), then read it back and compare sha256",
            image.display(),
            self.image_bytes / MIB,
            self.sector_size,
            t.path.display(),
            t.bytes / MIB,
            if t.is_block {
                ", block device"
            } else {
                ", file"
            }
        ));
        if self.relocate_gpt {
            lines.push(format!(
                "move the backup GPT to the end of {}: ROOT grows into the other {} MiB on first boot",
                t.path.display(),
                (t.bytes - self.image_bytes) / MIB
            ));
        }
        if !self.oem_files.is_empty() {
            lines.push(format!("OEM partition: {}", oem::describe(&self.oem_files)));
        }
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("  {}. {l}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What the first bytes of a device say it holds, if anything (pure).
/// `gpt`: the partition names of a GPT gpt-slots read on it.
pub fn contents(head: &[u8], gpt: Option<&[String]>) -> Option<String> {
    if let Some(names) = gpt {
        return Some(format!(
            "a GPT with {} partition{}{}",
            names.len(),
            if names.len() == 1 { "" } else { "s" },
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        ));
    }
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let signatures: [(usize, &[u8], &str); 12] = [
        (0x438, &[0x53, 0xef], "an ext2/3/4 filesystem"),
        (0, b"XFSB", "an XFS filesystem"),
        (0, b"LUKS\xba\xbe", "a LUKS volume"),
        (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
        (0x8001, b"CD001", "an ISO 9660 filesystem"),
        (4086, b"SWAPSPACE2", "swap space"),
        (512, b"LABELONE", "an LVM physical volume"),
        (0x52, b"FAT32   ", "a FAT32 filesystem"),
        (0x36, b"FAT1", "a FAT filesystem"),
        (0, b"hsqs", "a squashfs filesystem"),
        (1024, &[0xe2, 0xe1, 0xf5, 0xe0], "an EROFS filesystem"),
        (0x1000, &[0xfc, 0x4e, 0x2b, 0xa9], "an md RAID member"),
    ];
    if let Some((_, _, what)) = signatures.iter().find(|(o, m, _)| at(*o, m)) {
        return Some(what.to_string());
    }
    if at(510, &[0x55, 0xaa]) {
        let used = (0..4)
            .filter(|i| head.get(446 + 16 * i + 4).is_some_and(|&t| t != 0))
            .count();
        if used > 0 {
            return Some(format!("an MBR partition table with {used} partitions"));
        }
    }
    None
}

/// Why a device is in use (pure): `ids` are the `major:minor` of the device
/// and its partitions with their names, `mountinfo` is /proc/self/mountinfo,
/// `holders` (name, holder names) from /sys, `swaps` /proc/swaps.
pub fn in_use(
    ids: &[(String, String)],
    mountinfo: &str,
    holders: &[(String, Vec<String>)],
    swaps: &str,
) -> Option<String> {
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(majmin), Some(point)) = (f.get(2), f.get(4)) else {
            continue;
        };
        if let Some((name, _)) = ids.iter().find(|(_, id)| id == majmin) {
            return Some(format!("/dev/{name} is mounted on {point}"));
        }
    }
    for (name, by) in holders {
        if !by.is_empty() {
            return Some(format!("/dev/{name} is in use by {}", by.join(", ")));
        }
    }
    for line in swaps.lines().skip(1) {
        let Some(dev) = line.split_whitespace().next() else {
            continue;
        };
        if let Some((name, _)) = ids.iter().find(|(name, _)| dev == format!("/dev/{name}")) {
            return Some(format!("/dev/{name} is used as swap"));
        }
    }
    None
}

fn read_sys(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// (name, `major:minor`) of a device and each of its partitions.
type DevIds = Vec<(String, String)>;
/// (name, the devices holding it) likewise.
type Holders = Vec<(String, Vec<String>)>;

/// The device's and its partitions' names and `major:minor`, and their holders.
fn sys_ids(name: &str) -> (DevIds, Holders) {
    let base = Path::new("/sys/block").join(name);
    let mut names = vec![name.to_string()];
    names.extend(
        list_dir(&base)
            .into_iter()
            .filter(|p| p.starts_with(name) && base.join(p).join("partition").exists()),
    );
    let dir = |n: &str| {
        if n == name {
            base.clone()
        } else {
            base.join(n)
        }
    };
    let ids = names
        .iter()
        .map(|n| (n.clone(), read_sys(&dir(n).join("dev"))))
        .collect();
    let holders = names
        .iter()
        .map(|n| (n.clone(), list_dir(&dir(n).join("holders"))))
        .collect();
    (ids, holders)
}

/// Finds the target and refuses one that is in use (always) or holds data
/// (unless `force`).
pub fn inspect(device: &Path, force: bool) -> Result<Target> {
    let meta = std::fs::metadata(device).with_context(|| {
        format!(
            "{}: no such device or file (give a whole disk like /dev/sdb, or an existing file)",
            device.display()
        )
    })?;
    let is_block = meta.file_type().is_block_device();
    if !is_block && !meta.is_file() {
        bail!(
            "{} is neither a block device nor a regular file",
            device.display()
        );
    }
    let canonical = device
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", device.display()))?;
    if is_block {
        let name = canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if Path::new("/sys/class/block")
            .join(&name)
            .join("partition")
            .exists()
        {
            bail!(
                "{} is a partition: give the whole disk it belongs to",
                device.display()
            );
        }
        let (ids, holders) = sys_ids(&name);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("cannot read /proc/self/mountinfo")?;
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        if let Some(why) = in_use(&ids, &mountinfo, &holders, &swaps) {
            bail!(
                "refusing {}: {why}; unmount it (and stop what holds it) first",
                device.display()
            );
        }
    } else {
        for loopdev in list_dir(Path::new("/sys/block")) {
            let backing = read_sys(
                &Path::new("/sys/block")
                    .join(&loopdev)
                    .join("loop/backing_file"),
            );
            if !backing.is_empty() && Path::new(&backing) == canonical {
                bail!(
                    "refusing {}: it backs /dev/{loopdev}; detach it first (losetup -d /dev/{loopdev})",
                    device.display()
                );
            }
        }
    }
    let f = File::open(device).with_context(|| format!("cannot open {}", device.display()))?;
    let sector_size = gpt_slots::detect_sector_size(&f)
        .with_context(|| format!("cannot read the sector size of {}", device.display()))?
        as u64;
    let bytes = {
        use std::io::Seek;
        (&f).seek(std::io::SeekFrom::End(0))
            .with_context(|| format!("cannot read the size of {}", device.display()))?
    };
    if !force {
        let mut head = vec![0u8; 0x10100];
        let n = read_at_most(&f, &mut head, 0)?;
        head.truncate(n);
        let names: Option<Vec<String>> = oem::read_gpt(&f, device)
            .ok()
            .map(|g| g.entries().map(|e| e.name).collect());
        if let Some(what) = contents(&head, names.as_deref()) {
            bail!(
                "refusing {}: it holds {what}; pass --force to overwrite it",
                device.display()
            );
        }
    }
    Ok(Target {
        path: device.to_path_buf(),
        is_block,
        bytes,
        sector_size,
    })
}

fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The raw image to install and the scratch folder that holds it when it
/// was converted (kept alive by the caller).
fn resolve_image(image: &Path) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    let path = if image.is_dir() {
        let raw = image.join("disk.raw");
        let qcow2 = image.join("disk.qcow2");
        if raw.is_file() {
            raw
        } else if qcow2.is_file() {
            qcow2
        } else {
            bail!(
                "{} has no disk.raw or disk.qcow2: give a disk image or a `cairn-build build` output folder",
                image.display()
            );
        }
    } else {
        image.to_path_buf()
    };
    if !oem::is_qcow2(&path)? {
        return Ok((path, None));
    }
    let work = tempfile::Builder::new()
        .prefix("cairn-install.")
        .tempdir()
        .context("cannot create a scratch folder for the qcow2 conversion")?;
    let raw = work.path().join("disk.raw");
    oem::convert(&path, "qcow2", &raw, "raw")?;
    Ok((raw, Some(work)))
}

/// The whole command. Prints the plan, then does it.
pub fn install(opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Plan> {
    let oem_files = oem::plan(&opts.inputs).map_err(anyhow::Error::msg)?;
    if release::is_release(&opts.image) {
        return release::install(opts, oem_files, say);
    }
    if !opts.keys.is_empty() || opts.board.is_some() || opts.boot_efi.is_some() {
        bail!(
            "{} is a disk image: --key, --board and --boot-efi are for installing a release folder; leave them out",
            opts.image.display()
        );
    }
    let (raw, _scratch) = resolve_image(&opts.image)?;
    let src = File::open(&raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let gpt = oem::read_gpt(&src, &raw)?;
    oem::find_oem(&gpt, &opts.image)?;
    let image_bytes = src.metadata()?.len();
    if same_file(&raw, &opts.device) || same_file(&opts.image, &opts.device) {
        bail!(
            "{} is the image itself: give another device",
            opts.device.display()
        );
    }
    let target = inspect(&opts.device, opts.force)?;
    let plan = Plan::new(image_bytes, gpt.sector_size() as u64, target, oem_files)
        .map_err(anyhow::Error::msg)?;
    say(&format!("install plan:\n{}", plan.describe(&opts.image)));
    write_plan(&plan, &src, say)?;
    Ok(plan)
}

/// Writes the checked plan: the image `src`, read back, the backup GPT, the
/// OEM files.
fn write_plan(plan: &Plan, src: &File, say: &mut dyn FnMut(&str)) -> Result<()> {
    let image_bytes = plan.image_bytes;
    let mut dev = open_target(&plan.target)?;
    let hash = write_image(src, &mut dev, &plan.target, image_bytes)
        .with_context(|| format!("cannot write {}", plan.target.path.display()))?;
    dev.sync_all()
        .with_context(|| format!("cannot sync {}", plan.target.path.display()))?;
    oem::drop_cache(&dev);
    let back = hash_range(&dev, image_bytes)
        .with_context(|| format!("cannot read back {}", plan.target.path.display()))?;
    if back != hash {
        bail!(
            "read back from {} differs from the image (sha256 {} != {}): the device may be failing",
            plan.target.path.display(),
            hex::encode(back),
            hex::encode(hash)
        );
    }
    say(&format!(
        "wrote and verified {} MiB (sha256 {})",
        image_bytes / MIB,
        hex::encode(hash)
    ));
    if plan.relocate_gpt {
        relocate_backup_gpt(&mut dev, plan.sector_size, image_bytes).with_context(|| {
            format!(
                "cannot move the backup GPT to the end of {}",
                plan.target.path.display()
            )
        })?;
        say("moved the backup GPT to the end of the device");
    }
    drop(dev);
    if !plan.oem_files.is_empty() {
        let work = tempfile::Builder::new()
            .prefix("cairn-install-oem.")
            .tempdir()
            .context("cannot create a scratch folder for the OEM filesystem")?;
        oem::apply(&plan.target.path, &plan.oem_files, work.path())?;
        say("placed the host config on the OEM partition");
    }
    if plan.target.is_block {
        reread_partitions(&plan.target.path);
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// A block device opened exclusively (the kernel refuses while it is
/// mounted or held); a file emptied to holes at its size, so the image's
/// zeros need no writing.
fn open_target(t: &Target) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if t.is_block {
        o.custom_flags(libc::O_EXCL);
    }
    let f = o
        .open(&t.path)
        .with_context(|| format!("cannot open {} for writing (in use?)", t.path.display()))?;
    if !t.is_block {
        f.set_len(0)
            .and_then(|()| f.set_len(t.bytes))
            .with_context(|| format!("cannot clear {}", t.path.display()))?;
    }
    Ok(f)
}

/// Streams the image to the device, returning its sha256.
fn write_image(src: &File, dev: &mut File, t: &Target, len: u64) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    // A slice comparison is a memcmp, fast in a debug build too.
    let zeros = vec![0u8; buf.len()];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        // Positional reads: the GPT reader moved the shared file offset.
        src.read_exact_at(&mut buf[..want], at)?;
        h.update(&buf[..want]);
        if buf[..want] == zeros[..want] {
            // A file was emptied to holes; a disk gets the zeros written
            // (or unmapped) by the kernel.
            if t.is_block {
                zero_out(dev, at, want as u64)?;
            }
        } else {
            dev.write_all_at(&buf[..want], at)?;
        }
        at += want as u64;
    }
    Ok(h.finalize().into())
}

/// Zeros a range of a block device: unmapped where the device guarantees
/// reads of zeros after that (fallocate punch hole; thin storage and loop
/// files stay thin), else by BLKZEROOUT, else by writing zeros.
fn zero_out(dev: &File, start: u64, len: u64) -> Result<()> {
    use std::os::fd::AsRawFd;
    let fd = dev.as_raw_fd();
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
        bail!("offset {start} is beyond what this system can address");
    };
    // SAFETY: plain syscalls on a descriptor owned by `dev` for the whole
    // call; BLKZEROOUT reads two u64 through a pointer to a live local.
    let done = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        ) == 0
            || libc::ioctl(fd, BLKZEROOUT as _, [start, len].as_ptr()) == 0
    };
    if !done {
        dev.write_all_at(&vec![0u8; len as usize], start)?;
    }
    Ok(())
}

fn hash_range(dev: &File, len: u64) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 * MIB as usize];
    let mut at = 0u64;
    while at < len {
        let want = (len - at).min(buf.len() as u64) as usize;
        dev.read_exact_at(&mut buf[..want], at)?;
        h.update(&buf[..want]);
        at += want as u64;
    }
    Ok(h.finalize().into())
}

/// `sgdisk -e`: the backup header and array at the device's end, and the
/// last usable sector with them; the image's old backup header is wiped
/// so no tool finds a stale table in the middle of the disk.
pub fn relocate_backup_gpt(dev: &mut File, sector: u64, image_bytes: u64) -> Result<()> {
    let mut gpt = gptman::GPT::read_from(dev, sector).context("cannot read the GPT back")?;
    gpt.header.update_from(dev, sector)?;
    gpt.write_into(dev)?;
    gptman::GPT::write_protective_mbr_into(dev, sector)?;
    dev.sync_all()?;
    let old_backup = image_bytes / sector - 1;
    if old_backup != gpt.header.backup_lba {
        dev.write_all_at(&vec![0u8; sector as usize], old_backup * sector)?;
        dev.sync_all()?;
    }
    // The table as the boot manager and cairn-init will read it.
    let check = oem::read_gpt(dev, Path::new("the device"))?;
    if !check.is_healthy() {
        bail!("after the move gpt-slots does not read both GPT copies as valid");
    }
    Ok(())
}

/// Tells the kernel about the new partitions (best effort: udev also
/// rescans when the exclusive open is closed).
fn reread_partitions(dev: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = File::open(dev) {
        // SAFETY: BLKRRPART takes no argument; the descriptor is owned by `f`.
        unsafe {
            libc::ioctl(f.as_raw_fd(), BLKRRPART as _);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oem::tests::{TOOLS, debugfs_cat, extract_oem, have, sh, small_image};
    use std::process::Command;

    fn target(bytes: u64, ss: u64) -> Target {
        Target {
            path: "/dev/sdz".into(),
            is_block: true,
            bytes,
            sector_size: ss,
        }
    }

    #[test]
    fn plan_checks_size_and_sector_size() {
        let p = Plan::new(100 * MIB, 512, target(200 * MIB, 512), vec![]).unwrap();
        assert!(p.relocate_gpt);
        let text = p.describe(Path::new("disk.raw"));
        assert!(text.contains("1. write disk.raw (100 MiB"), "{text}");
        assert!(text.contains("2. move the backup GPT") && text.contains("100 MiB on first boot"));
        let same = Plan::new(100 * MIB, 512, target(100 * MIB, 512), vec![]).unwrap();
        assert!(!same.relocate_gpt);
        let e = Plan::new(100 * MIB, 512, target(50 * MIB, 512), vec![]).unwrap_err();
        assert!(
            e.contains("holds 50 MiB") && e.contains("needs 100 MiB"),
            "{e}"
        );
        let e = Plan::new(100 * MIB, 512, target(200 * MIB, 4096), vec![]).unwrap_err();
        assert!(e.contains("4096-byte sectors"), "{e}");
    }

    #[test]
    fn a_release_plan_says_how_the_disk_was_assembled_first() {
        let mut p = Plan::new(100 * MIB, 512, target(100 * MIB, 512), vec![]).unwrap();
        p.assembly = vec!["release x 1.0 verified".into(), "GPT as the board's".into()];
        let text = p.describe(Path::new("the disk assembled from it"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "  1. release x 1.0 verified",
                "  2. GPT as the board's",
                "  3. write the disk assembled from it (100 MiB, 512-byte sectors) to /dev/sdz (100 MiB, block device), then read it back and compare sha256",
            ]
        );
    }

    #[test]
    fn contents_name_what_is_on_a_disk() {
        let mut ext4 = vec![0u8; 0x10100];
        ext4[0x438..0x43a].copy_from_slice(&[0x53, 0xef]);
        let mut mbr = vec![0u8; 4096];
        mbr[510..512].copy_from_slice(&[0x55, 0xaa]);
        mbr[446 + 4] = 0x83;
        mbr[446 + 16 + 4] = 0x82;
        let mut luks = vec![0u8; 4096];
        luks[..6].copy_from_slice(b"LUKS\xba\xbe");
        let mut swap = vec![0u8; 4096];
        swap[4086..4096].copy_from_slice(b"SWAPSPACE2");
        let names = ["ESP".to_string(), "OEM".to_string()];
        type Case<'a> = (&'a [u8], Option<&'a [String]>, Option<&'a str>);
        let cases: [Case; 6] = [
            (&[0u8; 8192], None, None),
            (
                &[0u8; 8192],
                Some(&names),
                Some("a GPT with 2 partitions (ESP, OEM)"),
            ),
            (&ext4, None, Some("an ext2/3/4 filesystem")),
            (&mbr, None, Some("an MBR partition table with 2 partitions")),
            (&luks, None, Some("a LUKS volume")),
            (&swap, None, Some("swap space")),
        ];
        for (head, gpt, want) in cases {
            assert_eq!(contents(head, gpt).as_deref(), want);
        }
    }

    #[test]
    fn in_use_finds_mounts_holders_and_swap() {
        let ids = vec![
            ("sdb".to_string(), "8:16".to_string()),
            ("sdb1".to_string(), "8:17".to_string()),
        ];
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 8:17 / /mnt rw - ext4 /dev/sdb1 rw\n";
        assert_eq!(
            in_use(&ids, mi, &[], "").as_deref(),
            Some("/dev/sdb1 is mounted on /mnt")
        );
        let mi = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n";
        assert_eq!(in_use(&ids, mi, &[], ""), None);
        let held = vec![
            ("sdb".to_string(), vec![]),
            ("sdb1".to_string(), vec!["dm-0".to_string()]),
        ];
        assert_eq!(
            in_use(&ids, mi, &held, "").as_deref(),
            Some("/dev/sdb1 is in use by dm-0")
        );
        let swaps = "Filename Type Size Used Priority\n/dev/sdb1 partition 1 0 -2\n";
        assert_eq!(
            in_use(&ids, mi, &[], swaps).as_deref(),
            Some("/dev/sdb1 is used as swap")
        );
    }

    fn opts(image: &Path, device: &Path, config: Option<&str>, force: bool) -> Options {
        Options {
            image: image.into(),
            device: device.into(),
            inputs: oem::Inputs {
                config: config.map(|c| ("host.toml".to_string(), c.as_bytes().to_vec())),
                ..oem::Inputs::default()
            },
            force,
            keys: Vec::new(),
            board: None,
            boot_efi: None,
        }
    }

    /// sgdisk -v clean, the backup at the end, the config on OEM.
    fn check_installed(disk: &Path, bytes: u64, dir: &Path) {
        let (ok, text) = sh(Command::new("sgdisk").arg("-v").arg(disk));
        assert!(ok && text.contains("No problems found"), "{text}");
        let f = File::open(disk).unwrap();
        let gpt = oem::read_gpt(&f, disk).unwrap();
        assert!(gpt.is_healthy());
        assert_eq!(
            gpt.usable_range().1,
            bytes / 512 - 34,
            "the free space after ROOT is usable"
        );
        // systemd-repart with the image's own definitions grows ROOT into
        // the space after it, as on first boot.
        let defs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd-units/usr/lib/repart.d");
        let (_, text) = sh(Command::new("systemd-repart")
            .args(["--dry-run=yes", "--no-pager"])
            .arg(format!("--definitions={}", defs.display()))
            .arg(disk));
        assert!(
            text.lines()
                .any(|l| l.contains("50-cairn-root.conf") && l.contains("4.0M →")),
            "systemd-repart does not grow ROOT:\n{text}"
        );
        let oem_img = dir.join("oem.check");
        extract_oem(disk, &oem_img);
        assert_eq!(debugfs_cat(&oem_img, "config.toml"), "hostname = \"i\"\n");
    }

    #[test]
    fn install_onto_a_larger_file_and_refuse_it_again_without_force() {
        if !have(&[TOOLS, &[("systemd-repart", "systemd")]].concat()) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let img = small_image(d.path(), "disk.raw");
        let image_bytes = std::fs::metadata(&img).unwrap().len();
        let dev = d.path().join("device");
        let bytes = image_bytes + 64 * MIB;
        File::create(&dev).unwrap().set_len(bytes).unwrap();
        let mut lines = Vec::new();
        let plan = install(
            &opts(&img, &dev, Some("hostname = \"i\"\n"), false),
            &mut |l| lines.push(l.to_string()),
        )
        .unwrap();
        assert!(plan.relocate_gpt);
        assert!(lines[0].starts_with("install plan:"), "{lines:?}");
        check_installed(&dev, bytes, d.path());
        // The image range matches the image except the GPT and OEM changes.
        assert_eq!(std::fs::metadata(&dev).unwrap().len(), bytes);

        let e = format!(
            "{:#}",
            install(&opts(&img, &dev, None, false), &mut |_| {}).unwrap_err()
        );
        assert!(
            e.contains("refusing")
                && e.contains("a GPT with 5 partitions (ESP, USR-A, USR-B, OEM, ROOT)")
                && e.contains("--force"),
            "{e}"
        );
        install(
            &opts(&img, &dev, Some("hostname = \"i\"\n"), true),
            &mut |_| {},
        )
        .unwrap();
        check_installed(&dev, bytes, d.path());

        // A bad config writes nothing.
        let before = std::fs::read(&dev).unwrap();
        let e = format!(
            "{:#}",
            install(&opts(&img, &dev, Some("hostname = 1\n"), true), &mut |_| {}).unwrap_err()
        );
        assert!(e.contains("hostname"), "{e}");
        assert!(std::fs::read(&dev).unwrap() == before);
        // Too small.
        let small = d.path().join("small");
        File::create(&small).unwrap().set_len(MIB).unwrap();
        let e = format!(
            "{:#}",
            install(&opts(&img, &small, None, false), &mut |_| {}).unwrap_err()
        );
        assert!(e.contains("use a larger disk"), "{e}");
    }

    #[test]
    fn install_onto_a_loop_device_and_refuse_it_while_mounted() {
        if !have(
            &[
                TOOLS,
                &[("losetup", "mount"), ("systemd-repart", "systemd")],
            ]
            .concat(),
        ) {
            return;
        }
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if !is_root && !host_tools::unavailable("root (for losetup)") {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let img = small_image(d.path(), "disk.raw");
        let image_bytes = std::fs::metadata(&img).unwrap().len();
        let backing = d.path().join("backing");
        let bytes = image_bytes + 32 * MIB;
        File::create(&backing).unwrap().set_len(bytes).unwrap();
        let loop_device = host_tools::LoopDevice::attach(&backing);
        let loopdev = loop_device.path.clone();

        // The backing file is in use.
        let e = format!(
            "{:#}",
            install(&opts(&img, &backing, None, true), &mut |_| {}).unwrap_err()
        );
        assert!(e.contains("backs /dev/loop"), "{e}");

        install(
            &opts(&img, &loopdev, Some("hostname = \"i\"\n"), false),
            &mut |_| {},
        )
        .unwrap();
        check_installed(&loopdev, bytes, d.path());
        let e = format!(
            "{:#}",
            install(&opts(&img, &loopdev, None, false), &mut |_| {}).unwrap_err()
        );
        assert!(e.contains("a GPT with 5 partitions"), "{e}");

        // Mounted (the whole loop device is an ext4 here): refused even with --force.
        let (ok, text) = sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&loopdev));
        assert!(ok, "{text}");
        let mnt = d.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let (ok, text) = sh(Command::new("mount").arg(&loopdev).arg(&mnt));
        assert!(ok, "{text}");
        let e = format!(
            "{:#}",
            install(&opts(&img, &loopdev, None, true), &mut |_| {}).unwrap_err()
        );
        let _ = Command::new("umount").arg(&mnt).status();
        assert!(
            e.contains("is mounted on") && e.contains(&mnt.display().to_string()),
            "{e}"
        );
    }
}
