//! Preparing disk images on the host before a VM boots them: the A/B
//! scenarios need a slot B that is a (damaged) copy of A, which no image
//! build produces.
//!
//! Everything works on a raw image file: the partition table is read with
//! gpt-slots (the same code the boot manager uses, so the offsets are the
//! ones it sees), the FAT ESP is edited with mtools at its byte offset
//! (no loop devices or root needed), and copies keep the file sparse, as a
//! test image is 4+ GiB of mostly nothing.

use anyhow::{Context, Result, bail, ensure};
use disk_layout::{Slot, boot_files};
use gpt_slots::{Attrs, FileDevice, Gpt};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The development signing key, relative to the workspace root.
pub use disk_layout::dev_key::SECRET as DEV_KEY_SECRET;

/// Runs `cmd`, failing with its stderr unless it exits 0; returns stdout.
fn run_tool(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .with_context(|| format!("running {what} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Copies `src` to `dst` keeping holes, so a 4.4 GiB image with ~200 MiB of
/// data costs ~200 MiB (std::fs::copy would write every zero).
pub fn sparse_copy(src: &Path, dst: &Path) -> Result<()> {
    run_tool(
        Command::new("cp").arg("--sparse=always").arg(src).arg(dst),
        &format!("cp --sparse=always {} {}", src.display(), dst.display()),
    )?;
    Ok(())
}

/// Flattens a qcow2 overlay (with its backing chain) into a sparse raw file,
/// so the guest's writes can be inspected with plain file I/O.
pub fn qcow2_to_raw(qcow2: &Path, raw: &Path) -> Result<()> {
    run_tool(
        Command::new("qemu-img")
            .args(["convert", "-q", "-O", "raw"])
            .arg(qcow2)
            .arg(raw),
        &format!("qemu-img convert {}", qcow2.display()),
    )?;
    Ok(())
}

/// One partition as the GPT describes it, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub label: String,
    pub offset: u64,
    pub len: u64,
}

/// A raw disk image and its partition table.
#[derive(Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub sector_size: u64,
    pub parts: Vec<Part>,
}

impl Disk {
    /// Reads the GPT of the image at `path` (512-byte sectors, as for any
    /// image file).
    pub fn open(path: &Path) -> Result<Disk> {
        let mut dev = FileDevice::open(path, false)
            .with_context(|| format!("opening disk image {}", path.display()))?;
        let gpt = Gpt::read(&mut dev)
            .with_context(|| format!("reading the GPT of {}", path.display()))?;
        let ss = gpt.sector_size() as u64;
        let parts = gpt
            .entries()
            .map(|e| Part {
                number: e.number,
                label: e.name.clone(),
                offset: e.first_lba * ss,
                len: (e.last_lba + 1 - e.first_lba) * ss,
            })
            .collect();
        Ok(Disk {
            path: path.to_path_buf(),
            sector_size: ss,
            parts,
        })
    }

    pub fn part(&self, number: u32) -> Result<&Part> {
        self.parts
            .iter()
            .find(|p| p.number == number)
            .with_context(|| format!("{} has no partition {number}", self.path.display()))
    }

    fn open_rw(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .with_context(|| format!("opening {} for writing", self.path.display()))
    }

    /// Copies partition `from` byte for byte onto partition `to` (which must
    /// be at least as large); the rest of `to` reads as zeros afterwards.
    /// Holes and all-zero chunks of the source stay holes, so copying a
    /// 1.5 GiB slot holding 90 MiB writes about 90 MiB. Returns the bytes
    /// written.
    pub fn copy_partition(&self, from: u32, to: u32) -> Result<u64> {
        let (src, dst) = (self.part(from)?.clone(), self.part(to)?.clone());
        if dst.len < src.len {
            bail!(
                "partition {to} ({} bytes) is smaller than partition {from} ({} bytes)",
                dst.len,
                src.len
            );
        }
        let f = self.open_rw()?;
        // Old content of the target must not show through the holes we skip.
        punch_hole(&f, dst.offset, dst.len)
            .with_context(|| format!("clearing partition {to} of {}", self.path.display()))?;
        const CHUNK: usize = 1 << 20;
        let mut buf = vec![0u8; CHUNK];
        let mut written = 0u64;
        let end = src.offset + src.len;
        let mut pos = src.offset;
        while pos < end {
            // Jump over holes: reading them would only produce zeros.
            let Some(data) = next_data(&f, pos)? else {
                break;
            };
            if data >= end {
                break;
            }
            let n = ((end - data) as usize).min(CHUNK);
            let chunk = &mut buf[..n];
            f.read_exact_at(chunk, data)
                .with_context(|| format!("reading {} at {data}", self.path.display()))?;
            if chunk.iter().any(|&b| b != 0) {
                let at = dst.offset + (data - src.offset);
                f.write_all_at(chunk, at)
                    .with_context(|| format!("writing {} at {at}", self.path.display()))?;
                written += n as u64;
            }
            pos = data + n as u64;
        }
        f.sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        Ok(written)
    }

    /// Inverts the byte at `offset` inside partition `number`; returns the
    /// old and the new value.
    pub fn flip_byte(&self, number: u32, offset: u64) -> Result<(u8, u8)> {
        let p = self.part(number)?;
        if offset >= p.len {
            bail!("offset {offset} is outside partition {number}");
        }
        let f = self.open_rw()?;
        let at = p.offset + offset;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at)
            .with_context(|| format!("reading {} at {at}", self.path.display()))?;
        let new = [!b[0]];
        f.write_all_at(&new, at)
            .with_context(|| format!("writing {} at {at}", self.path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        Ok((b[0], new[0]))
    }

    /// The slot attributes (priority, tries, successful) of partition `number`.
    pub fn slot_attrs(&self, number: u32) -> Result<Attrs> {
        read_slot_attrs(&self.path, number)
    }

    /// Sets the slot attributes of partition `number`, keeping its other
    /// attribute bits, through gpt-slots' crash-safe commit (both copies).
    pub fn set_slot_attrs(&self, number: u32, attrs: Attrs) -> Result<()> {
        let mut dev = FileDevice::open(&self.path, true)
            .with_context(|| format!("opening {} for writing", self.path.display()))?;
        let mut gpt = Gpt::read(&mut dev)
            .with_context(|| format!("reading the GPT of {}", self.path.display()))?;
        gpt.set_slot_attrs(number, attrs)
            .with_context(|| format!("setting attributes of partition {number}"))?;
        gpt.commit(&mut dev)
            .with_context(|| format!("writing the GPT of {}", self.path.display()))?;
        Ok(())
    }

    /// The FAT filesystem of partition `number` (the ESP is 1).
    pub fn fat(&self, number: u32) -> Result<Fat> {
        Ok(Fat {
            image: self.path.clone(),
            offset: self.part(number)?.offset,
        })
    }
}

/// Reads the slot attributes of partition `number` from an image file.
pub fn read_slot_attrs(image: &Path, number: u32) -> Result<Attrs> {
    let mut dev =
        FileDevice::open(image, false).with_context(|| format!("opening {}", image.display()))?;
    let gpt =
        Gpt::read(&mut dev).with_context(|| format!("reading the GPT of {}", image.display()))?;
    let e = gpt
        .entry(number)
        .with_context(|| format!("{} has no partition {number}", image.display()))?;
    Ok(e.attrs())
}

/// The first offset at or after `pos` that holds data (SEEK_DATA), or
/// `None` if only a hole follows.
fn next_data(f: &File, pos: u64) -> Result<Option<u64>> {
    let off = libc::off_t::try_from(pos).context("offset too large")?;
    // SAFETY: lseek on a descriptor `f` owns; no pointers.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, libc::SEEK_DATA) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            // ENXIO: no data after pos.
            Some(libc::ENXIO) => Ok(None),
            // A filesystem without SEEK_DATA: treat everything as data.
            Some(libc::EINVAL) => Ok(Some(pos)),
            _ => Err(e).context("lseek(SEEK_DATA)"),
        };
    }
    Ok(Some(r as u64))
}

/// Deallocates `len` bytes at `offset` (they read as zeros afterwards);
/// writes zeros where the filesystem cannot punch holes.
fn punch_hole(f: &File, offset: u64, len: u64) -> Result<()> {
    let (o, l) = (
        libc::off_t::try_from(offset).context("offset too large")?,
        libc::off_t::try_from(len).context("length too large")?,
    );
    // SAFETY: fallocate on a descriptor `f` owns; no pointers.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            o,
            l,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(e).context("fallocate(PUNCH_HOLE)");
    }
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], offset + done)
            .context("zeroing")?;
        done += n as u64;
    }
    Ok(())
}

/// A FAT filesystem inside an image file, edited with mtools.
#[derive(Clone, Debug)]
pub struct Fat {
    image: PathBuf,
    offset: u64,
}

impl Fat {
    /// mtools' `-i image@@offset` (a partition inside a disk image).
    fn target(&self) -> String {
        format!("{}@@{}", self.image.display(), self.offset)
    }

    fn mtool(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<Vec<u8>> {
        let mut cmd = Command::new(tool);
        // mtools refuses images whose geometry looks odd to it; ours are
        // made by mkfs.fat and fine.
        cmd.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(self.target())
            .args(args);
        run_tool(&mut cmd, &format!("{tool} on {}", self.target()))
    }

    /// The contents of `path` (`cairn/a/vmlinuz`).
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        // `mcopy ::file -` writes the file to stdout.
        self.mtool(
            "mcopy",
            &[
                std::ffi::OsStr::new(&format!("::/{path}")),
                std::ffi::OsStr::new("-"),
            ],
        )
        .with_context(|| format!("reading {path} from the FAT at {}", self.target()))
    }

    /// Writes `data` to `path`, replacing it; `scratch` is a folder for the
    /// temporary host file mcopy copies from.
    pub fn write(&self, path: &str, data: &[u8], scratch: &Path) -> Result<()> {
        let tmp = scratch.join(format!(".fat-upload-{}", std::process::id()));
        std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
        let r = self.mtool(
            "mcopy",
            &[
                std::ffi::OsStr::new("-o"),
                tmp.as_os_str(),
                std::ffi::OsStr::new(&format!("::/{path}")),
            ],
        );
        let _ = std::fs::remove_file(&tmp);
        r.map(|_| ())
            .with_context(|| format!("writing {path} to the FAT at {}", self.target()))
    }

    /// Creates folder `path` and its parents; existing ones are fine.
    pub fn mkdir_all(&self, path: &str) -> Result<()> {
        let mut cur = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            cur.push('/');
            cur.push_str(comp);
            if !self.exists(&cur)? {
                self.mtool("mmd", &[std::ffi::OsStr::new(&format!("::{cur}"))])?;
            }
        }
        Ok(())
    }

    /// The byte offset, in the disk image, of the cluster holding byte
    /// `at` of file `path`: where a test can make the disk fail a read that
    /// only that file's contents need. From mtools' cluster list
    /// (`mshowfat`) and the geometry in the FAT boot sector.
    pub fn file_byte_offset(&self, path: &str, at: u64) -> Result<u64> {
        let out = self.mtool("mshowfat", &[std::ffi::OsStr::new(&format!("::/{path}"))])?;
        let text = String::from_utf8_lossy(&out);
        // `::/cairn/b/vmlinuz <3-1902> <1910-1950>`: runs of clusters in order.
        let mut runs = Vec::new();
        for run in text.split('<').skip(1) {
            let run = run.split('>').next().unwrap_or("");
            let (a, b) = run.split_once('-').unwrap_or((run, run));
            runs.push((a.trim().parse::<u64>()?, b.trim().parse::<u64>()?));
        }
        let bs = read_at(&self.image, self.offset, 512)?;
        let u16le = |i: usize| u64::from(u16::from_le_bytes([bs[i], bs[i + 1]]));
        let bytes_per_sector = u16le(11);
        let per_cluster = u64::from(bs[13]);
        let reserved = u16le(14);
        let fats = u64::from(bs[16]);
        let root_entries = u16le(17);
        let fat_sectors = match u16le(22) {
            0 => u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]])),
            n => n,
        };
        ensure!(
            bytes_per_sector >= 512 && per_cluster > 0,
            "{}: not a FAT boot sector",
            self.target()
        );
        let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let data = (reserved + fats * fat_sectors + root_sectors) * bytes_per_sector;
        let cluster_bytes = per_cluster * bytes_per_sector;
        let mut skip = at / cluster_bytes;
        for (first, last) in runs {
            let n = last - first + 1;
            if skip < n {
                return Ok(self.offset + data + (first + skip - 2) * cluster_bytes);
            }
            skip -= n;
        }
        bail!("{path} has no byte {at} (clusters: {})", text.trim())
    }

    /// Whether `path` exists (file or folder).
    pub fn exists(&self, path: &str) -> Result<bool> {
        let out = Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(self.target())
            .arg("-b")
            .arg(format!("::/{}", path.trim_start_matches('/')))
            .output()
            .context("running mdir (is mtools installed?)")?;
        Ok(out.status.success())
    }
}

/// A slot's four boot files, as the boot manager reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
    pub cmdline: Vec<u8>,
    pub sig: Vec<u8>,
}

impl BootFiles {
    /// Reads `cairn/<slot>/` from the ESP.
    pub fn read(esp: &Fat, slot: Slot) -> Result<BootFiles> {
        let f = |name: &str| esp.read(&format!("{}/{name}", slot.esp_dir()));
        Ok(BootFiles {
            kernel: f(boot_files::KERNEL)?,
            initrd: f(boot_files::INITRD)?,
            cmdline: f(boot_files::CMDLINE)?,
            sig: f(boot_files::SIGNATURE)?,
        })
    }

    /// Writes them to `cairn/<slot>/`, creating the folder.
    pub fn write(&self, esp: &Fat, slot: Slot, scratch: &Path) -> Result<()> {
        let dir = slot.esp_dir();
        esp.mkdir_all(dir)?;
        for (name, data) in [
            (boot_files::KERNEL, &self.kernel),
            (boot_files::INITRD, &self.initrd),
            (boot_files::CMDLINE, &self.cmdline),
            (boot_files::SIGNATURE, &self.sig),
        ] {
            esp.write(&format!("{dir}/{name}"), data, scratch)?;
        }
        Ok(())
    }

    /// Replaces `sig` with a signature by `seed` over the current files.
    pub fn sign(&mut self, seed: &[u8; 32]) {
        self.sig = boot_sig::sign_line(seed, &self.kernel, &self.initrd, &self.cmdline).to_vec();
    }

    /// Checks `sig` against the files with `public` (what the boot manager does).
    pub fn verify(&self, public: &[u8; 32]) -> Result<()> {
        boot_sig::verify(
            std::slice::from_ref(public),
            &self.sig,
            &self.kernel,
            &self.initrd,
            &self.cmdline,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// The workspace root (the dev key lives there).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cairn-build <args>`: the binary built beside xtask, which runs the
/// scenarios (`cargo xtask` builds both); fails with its stderr.
pub fn cairn_build(args: &[&std::ffi::OsStr]) -> Result<()> {
    let exe = std::env::current_exe().context("finding the running xtask binary")?;
    let tool = exe.with_file_name("cairn-build");
    let out = std::process::Command::new(&tool)
        .args(args)
        .output()
        .with_context(|| format!("running {} (cargo xtask builds it)", tool.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "cairn-build {} failed: {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The development key pair. The key file is copied to a private (0600)
/// file in `scratch` first: load_secret refuses group/other-readable keys,
/// and a fresh checkout may well give the repo's copy mode 0644.
pub fn dev_key(scratch: &Path) -> Result<release_manifest::KeyPair> {
    let src = workspace_root().join(DEV_KEY_SECRET);
    let text = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    let copy = scratch.join(".dev-key.secret");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&copy)
            .with_context(|| format!("creating {}", copy.display()))?;
        // The mode of an existing file is not changed by open(); set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", copy.display()))?;
        f.write_all(&text)
            .with_context(|| format!("writing {}", copy.display()))?;
    }
    let key = release_manifest::KeyPair::load_secret(&copy);
    let _ = std::fs::remove_file(&copy);
    key.with_context(|| format!("loading the development key {}", src.display()))
}

/// An initramfs without `/init`: the kernel then looks for a root device,
/// finds none (the cmdline names no root=) and panics with "VFS: Unable to
/// mount root fs". With panic=5 that is a failed boot that reboots.
pub fn initrd_without_init() -> Result<Vec<u8>> {
    let mut a = initrd_pack::Archive::new(0);
    // Not empty: a valid archive, so the panic is about the missing init and
    // not about a broken initramfs.
    a.add_dir("etc", 0o755).context("building the initramfs")?;
    a.add_file("etc/cairn-test", 0o644, b"no init here\n".to_vec())
        .context("building the initramfs")?;
    Ok(a.to_bytes())
}

/// Reads `len` bytes at `offset` of a file (for tests and checks).
pub fn read_at(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))
        .with_context(|| format!("seeking {}", path.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .with_context(|| format!("reading {} at {offset}", path.display()))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const MIB: u64 = 1 << 20;

    /// Present, or the test fails under `cargo xtask test` (skips when bare).
    fn have(tool: &str) -> bool {
        let package = match tool {
            "sgdisk" => "gdisk",
            "mkfs.fat" => "dosfstools",
            "qemu-img" => "qemu-utils",
            other => other,
        };
        host_tools::require(&[(tool, package)])
    }

    /// Runs a test body on a fresh folder, unless a tool it needs is missing.
    fn with_dir(name: &str, tools: &[&str], f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        if !tools.iter().all(|t| have(t)) {
            return Ok(());
        }
        let dir =
            std::env::temp_dir().join(format!("qemu-tests-prep-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        f(&dir)?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    /// A 40 MiB sparse image laid out like a Cairn disk in miniature: a FAT
    /// ESP, USR-A/USR-B (x86-64 DPS usr type, A prio 1 ok 1), ROOT.
    fn small_disk(dir: &Path) -> Result<PathBuf> {
        let p = dir.join("disk.raw");
        File::create(&p)?.set_len(40 * MIB)?;
        let usr = "8484680C-9521-48C6-9C11-B0720656F69E";
        run_tool(
            Command::new("sgdisk")
                .args(["-n", "1:1M:+8M", "-t", "1:EF00", "-c", "1:ESP"])
                .args(["-n", "2:0:+8M", "-t", &format!("2:{usr}"), "-c", "2:USR-A"])
                .args(["-n", "3:0:+8M", "-t", &format!("3:{usr}"), "-c", "3:USR-B"])
                .args(["-n", "4:0:0", "-c", "4:ROOT"])
                // prio 1 (bit 48), successful (bit 56), read-only (bit 60)
                .args(["-A", "2:set:48", "-A", "2:set:56", "-A", "2:set:60"])
                .arg(&p),
            "sgdisk",
        )?;
        // The ESP starts at sector 2048; 8 MiB of FAT there.
        run_tool(
            Command::new("mkfs.fat")
                .args(["--offset", "2048", "-n", "ESP"])
                .arg(&p)
                .arg("8192"),
            "mkfs.fat",
        )?;
        Ok(p)
    }

    #[test]
    fn reads_the_partition_table() -> Result<()> {
        with_dir("table", &["sgdisk", "mkfs.fat"], |dir| {
            let d = Disk::open(&small_disk(dir)?)?;
            let labels: Vec<_> = d.parts.iter().map(|p| p.label.as_str()).collect();
            assert_eq!(labels, ["ESP", "USR-A", "USR-B", "ROOT"]);
            assert_eq!(d.sector_size, 512);
            assert_eq!((d.part(1)?.offset, d.part(1)?.len), (MIB, 8 * MIB));
            assert_eq!((d.part(3)?.offset, d.part(3)?.len), (17 * MIB, 8 * MIB));
            assert!(d.part(9).is_err());
            Ok(())
        })
    }

    #[test]
    fn copies_partitions_sparsely_and_flips_bytes() -> Result<()> {
        with_dir("copy", &["sgdisk", "mkfs.fat"], |dir| {
            let d = Disk::open(&small_disk(dir)?)?;
            let (a, b) = (d.part(2)?.clone(), d.part(3)?.clone());
            let f = OpenOptions::new().read(true).write(true).open(&d.path)?;
            // Data at the start and the end of A, a hole between; junk in B
            // that must not survive the copy.
            f.write_all_at(&[0xa5; 4096], a.offset)?;
            f.write_all_at(b"end of A", a.offset + a.len - 8)?;
            f.write_all_at(&[0xee; 8192], b.offset + 3 * MIB)?;
            f.sync_all()?;
            let before = std::fs::metadata(&d.path)?.blocks();
            let written = d.copy_partition(2, 3)?;
            assert!(written <= 2 * MIB, "copied {written} bytes of mostly holes");
            assert_eq!(
                read_at(&d.path, a.offset, a.len as usize)?,
                read_at(&d.path, b.offset, b.len as usize)?
            );
            // Sparse: the copy allocated about as much as A holds, not 8 MiB.
            let after = std::fs::metadata(&d.path)?.blocks();
            assert!((after as i64 - before as i64) * 512 < 3 * MIB as i64);
            assert_eq!(d.flip_byte(3, 10)?, (0xa5, 0x5a));
            assert_eq!(read_at(&d.path, b.offset + 10, 1)?, [0x5a]);
            assert_eq!(read_at(&d.path, a.offset + 10, 1)?, [0xa5]);
            assert!(d.flip_byte(3, b.len).is_err());
            // A target smaller than the source is refused.
            assert!(d.copy_partition(4, 3).is_err());
            Ok(())
        })
    }

    #[test]
    fn slot_attributes_round_trip_and_agree_with_cgpt() -> Result<()> {
        with_dir("attrs", &["sgdisk", "mkfs.fat"], |dir| {
            let d = Disk::open(&small_disk(dir)?)?;
            assert_eq!(d.slot_attrs(2)?, Attrs::new(1, 0, true));
            assert_eq!(d.slot_attrs(3)?, Attrs::default());
            d.set_slot_attrs(3, Attrs::new(2, 3, false))?;
            assert_eq!(d.slot_attrs(3)?, Attrs::new(2, 3, false));
            // The other bits (read-only, bit 60) are kept.
            d.set_slot_attrs(2, Attrs::new(1, 0, true))?;
            let out = run_tool(
                Command::new("sgdisk").args(["-A", "2:get:60"]).arg(&d.path),
                "sgdisk",
            )?;
            assert!(String::from_utf8_lossy(&out).contains("2:60:1"));
            if have("cgpt") {
                // An independent reader of the same bits (ChromeOS' tool).
                let get = |flag: &str| -> Result<String> {
                    let o = run_tool(
                        Command::new("cgpt")
                            .args(["show", "-i", "3", flag])
                            .arg(&d.path),
                        "cgpt",
                    )?;
                    Ok(String::from_utf8_lossy(&o).trim().to_string())
                };
                assert_eq!(
                    (get("-P")?, get("-T")?, get("-S")?),
                    ("2".into(), "3".into(), "0".into())
                );
            }
            // The backup copy was written too: sgdisk -v finds no problems.
            let v = run_tool(Command::new("sgdisk").arg("-v").arg(&d.path), "sgdisk")?;
            assert!(String::from_utf8_lossy(&v).contains("No problems found"));
            Ok(())
        })
    }

    #[test]
    fn fat_files_and_boot_files() -> Result<()> {
        with_dir(
            "fat",
            &["sgdisk", "mkfs.fat", "mcopy", "mmd", "mdir"],
            |dir| {
                let d = Disk::open(&small_disk(dir)?)?;
                let esp = d.fat(1)?;
                assert!(!esp.exists("cairn/a")?);
                let mut files = BootFiles {
                    kernel: (0..200_000u32).map(|i| (i % 251) as u8).collect(),
                    initrd: initrd_without_init()?,
                    cmdline: b"console=ttyS0 panic=5".to_vec(),
                    sig: Vec::new(),
                };
                let key = release_manifest::KeyPair::from_seed([7; 32]);
                files.sign(key.seed());
                files.verify(&key.public().to_bytes())?;
                files.write(&esp, Slot::A, dir)?;
                assert!(esp.exists("cairn/a/boot.sig")?);
                let back = BootFiles::read(&esp, Slot::A)?;
                assert_eq!(back, files);
                // Overwrite in place with a changed kernel: the signature no longer matches.
                let mut bad = back.clone();
                bad.kernel[100_000] ^= 1;
                esp.write("cairn/a/vmlinuz", &bad.kernel, dir)?;
                let read = BootFiles::read(&esp, Slot::A)?;
                assert_eq!(read.kernel, bad.kernel);
                assert!(read.verify(&key.public().to_bytes()).is_err());
                // Another slot's folder is created on demand, existing folders are fine.
                esp.mkdir_all("cairn/b")?;
                esp.mkdir_all("cairn/b")?;
                assert!(esp.exists("cairn/b")?);
                assert!(esp.read("cairn/b/vmlinuz").is_err());
                Ok(())
            },
        )
    }

    #[test]
    fn dev_key_matches_the_public_key() -> Result<()> {
        with_dir("key", &[], |dir| {
            let key = dev_key(dir)?;
            let public = release_manifest::PublicKey::load_public(
                workspace_root().join(disk_layout::dev_key::PUBLIC),
            )?;
            assert_eq!(key.public().to_bytes(), public.to_bytes());
            // The private copy is gone again.
            assert!(!dir.join(".dev-key.secret").exists());
            Ok(())
        })
    }

    #[test]
    fn initrd_has_no_init() -> Result<()> {
        let entries = initrd_pack::cpio::read_newc(&initrd_without_init()?)
            .map_err(|e| anyhow::anyhow!(e))?;
        let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
        assert!(names.iter().any(|n| n == "etc/cairn-test"), "{names:?}");
        assert!(!names.iter().any(|n| n == "init"), "{names:?}");
        Ok(())
    }

    #[test]
    fn sparse_copy_and_qcow2_round_trip() -> Result<()> {
        with_dir("qcow2", &["sgdisk", "mkfs.fat", "qemu-img"], |dir| {
            let src = small_disk(dir)?;
            let copy = dir.join("copy.raw");
            sparse_copy(&src, &copy)?;
            assert_eq!(std::fs::read(&src)?, std::fs::read(&copy)?);
            assert!(std::fs::metadata(&copy)?.blocks() * 512 < 20 * MIB);
            let q = dir.join("disk.qcow2");
            run_tool(
                Command::new("qemu-img")
                    .args(["convert", "-O", "qcow2"])
                    .arg(&src)
                    .arg(&q),
                "qemu-img",
            )?;
            let back = dir.join("back.raw");
            qcow2_to_raw(&q, &back)?;
            assert_eq!(std::fs::read(&src)?, std::fs::read(&back)?);
            assert_eq!(read_slot_attrs(&back, 2)?, Attrs::new(1, 0, true));
            Ok(())
        })
    }
}
