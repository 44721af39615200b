//! `cairn-build oem`: replaces the content of a Cairn disk's OEM partition
//! with a fresh ext4 holding the host config (`config.toml`), its detached
//! signature (`config.toml.sig`) and extra files, without root and without
//! a loop mount: the filesystem is built as a file (`fsimage::ext4`) and
//! written over the partition's range.
//!
//! Reproducible: the new filesystem keeps the UUID, directory hash seed and
//! creation time (the image's build epoch) of the ext4 the partition holds,
//! and every inode gets that time; so the same image and the same inputs
//! give the same bytes, and the filesystem keeps its identity. A partition
//! that holds no ext4 gets ids derived from its PARTUUID and time 0.
//!
//! Everything is checked before anything is written: the config with
//! cairn-config's own parser (strict, as `cairn-config check`), the
//! signature's shape, the destination paths, the image's GPT and its OEM
//! partition. The image is edited as a copy beside it (a sparse raw copy,
//! or for qcow2 a raw conversion converted back) that is renamed over the
//! original, so a failure leaves the original untouched.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use disk_layout::host_config::OEM_PATH;
use disk_layout::{Guid, Part, fs_labels};
use gpt_slots::{FileDevice, Gpt};
use host_config::HostConfig;
use host_config::source::MAX_CONFIG_BYTES;
use host_config::source::signature::{DETACHED_SUFFIX, split_embedded};

use crate::derive::Seed;
use crate::fsimage::{self, Node};
use crate::tools::run;

const MIB: u64 = 1 << 20;
/// A file in the OEM partition is read by cairn-config at boot, which caps
/// configs at this size; extra files (certificates, keys) are small too.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// One file of the new OEM filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OemFile {
    /// Relative to the partition's root, `/`-separated, checked.
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// What the user asked to place, read from disk.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// (name for messages, bytes)
    pub config: Option<(String, Vec<u8>)>,
    pub sig: Option<(String, Vec<u8>)>,
    /// (`SRC:DEST` as given, DEST, bytes, executable)
    pub files: Vec<(String, String, Vec<u8>, bool)>,
}

impl Inputs {
    /// Reads `--config`, `--sig` and every `--file SRC:DEST`.
    pub fn read(config: Option<&Path>, sig: Option<&Path>, files: &[String]) -> Result<Inputs> {
        let read = |p: &Path, what: &str| -> Result<Vec<u8>> {
            let len = std::fs::metadata(p)
                .with_context(|| format!("cannot read {what} {}", p.display()))?
                .len();
            if len > MAX_FILE_BYTES {
                bail!(
                    "{what} {} is {len} bytes; the OEM partition takes files up to {MAX_FILE_BYTES} bytes",
                    p.display()
                );
            }
            std::fs::read(p).with_context(|| format!("cannot read {what} {}", p.display()))
        };
        let mut inputs = Inputs::default();
        if let Some(c) = config {
            inputs.config = Some((c.display().to_string(), read(c, "the host config")?));
        }
        if let Some(s) = sig {
            inputs.sig = Some((s.display().to_string(), read(s, "the signature")?));
        }
        for spec in files {
            let Some((src, dest)) = spec.rsplit_once(':') else {
                bail!(
                    "--file {spec:?} is not SRC:DEST (a file and its path in the OEM partition, e.g. ca.pem:update-ca.pem)"
                );
            };
            let src = Path::new(src);
            let exec = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(src)
                    .with_context(|| format!("--file {spec}: cannot read {}", src.display()))?
                    .permissions()
                    .mode()
                    & 0o100
                    != 0
            };
            let bytes = read(src, &format!("--file {spec}:"))?;
            inputs
                .files
                .push((spec.clone(), dest.to_string(), bytes, exec));
        }
        Ok(inputs)
    }
}

/// The files of the new OEM filesystem, in path order, or the one-line
/// reason nothing may be written. Pure: the checks cairn-config would make
/// at boot, made now.
pub fn plan(inputs: &Inputs) -> Result<Vec<OemFile>, String> {
    let mut out: Vec<OemFile> = Vec::new();
    if let Some((name, bytes)) = &inputs.config {
        let (_, embedded) = split_embedded(bytes).map_err(|e| format!("{name}: {e}"))?;
        if embedded.is_some() && inputs.sig.is_some() {
            return Err(format!(
                "{name} carries an embedded signature and --sig gives a detached one: a host refuses a config signed both ways; keep one"
            ));
        }
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(format!(
                "{name} is {} bytes; hosts read configs up to {MAX_CONFIG_BYTES} bytes",
                bytes.len()
            ));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("{name}: not UTF-8; a host config is TOML text"))?;
        HostConfig::parse_strict(text, name).map_err(|e| e.to_string())?;
        // Host configs can hold password hashes: root only, as cairn-config reads it.
        out.push(OemFile {
            path: OEM_PATH.into(),
            mode: 0o600,
            data: bytes.clone(),
        });
    }
    if let Some((name, bytes)) = &inputs.sig {
        if inputs.config.is_none() {
            return Err(format!(
                "--sig {name} without --config: a signature is placed beside the config it signs"
            ));
        }
        let is_list =
            serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.is_array());
        if !is_list {
            return Err(format!(
                "{name} is not a config signature (a JSON list made by `cairn-build sign-config`)"
            ));
        }
        out.push(OemFile {
            path: format!("{OEM_PATH}{DETACHED_SUFFIX}"),
            mode: 0o644,
            data: bytes.clone(),
        });
    }
    for (spec, dest, bytes, exec) in &inputs.files {
        let path = check_dest(dest).map_err(|m| format!("--file {spec}: {m}"))?;
        if let Some(clash) = out.iter().find(|f| {
            f.path == path
                || path.starts_with(&format!("{}/", f.path))
                || f.path.starts_with(&format!("{path}/"))
        }) {
            return Err(format!(
                "--file {spec}: {path} clashes with {} (given twice, or a file where a folder is needed){}",
                clash.path,
                if [OEM_PATH.to_string(), format!("{OEM_PATH}{DETACHED_SUFFIX}")]
                    .contains(&clash.path)
                {
                    "; place the config with --config and its signature with --sig"
                } else {
                    ""
                }
            ));
        }
        out.push(OemFile {
            path,
            mode: if *exec { 0o755 } else { 0o644 },
            data: bytes.clone(),
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A destination inside the OEM partition: relative (a leading `/` is the
/// partition's root), plain names of `A-Za-z0-9._+-`.
fn check_dest(dest: &str) -> Result<String, String> {
    let rel = dest.strip_prefix('/').unwrap_or(dest);
    let ok_part = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.len() <= 255
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    if rel.is_empty() || !rel.split('/').all(ok_part) {
        return Err(format!(
            "{dest:?} is not a path in the OEM partition (names of letters, digits and ._+- separated by /, no . or ..)"
        ));
    }
    Ok(rel.to_string())
}

/// The folders `files` need, parents first.
fn dirs_of(files: &[OemFile]) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for f in files {
        let mut p = f.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent.to_string());
            p = parent;
        }
    }
    // BTreeSet order puts "a" before "a/b".
    dirs.into_iter().collect()
}

/// The ids of the new filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsIds {
    pub uuid: Guid,
    pub hash_seed: Guid,
    pub epoch: u64,
}

/// The ids of an ext4 from its superblock (the 1024 bytes at offset 1024),
/// if it is one.
pub fn ids_from_superblock(sb: &[u8]) -> Option<FsIds> {
    let magic = u16::from_le_bytes([*sb.get(0x38)?, *sb.get(0x39)?]);
    if magic != 0xef53 {
        return None;
    }
    let guid = |at: usize| -> Option<Guid> {
        let b: [u8; 16] = sb.get(at..at + 16)?.try_into().ok()?;
        Some(Guid::from_be_bytes(b))
    };
    let mkfs_time = u32::from_le_bytes(sb.get(0x108..0x10c)?.try_into().ok()?);
    Some(FsIds {
        uuid: guid(0x68)?,
        hash_seed: guid(0xec)?,
        epoch: u64::from(mkfs_time),
    })
}

/// Ids for a partition without an ext4: from its PARTUUID, time 0.
pub fn ids_from_partuuid(partuuid: Guid) -> FsIds {
    let seed = Seed(
        sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            partuuid.to_be_bytes(),
        ))
        .into(),
    );
    FsIds {
        uuid: seed.guid("oem fs"),
        hash_seed: seed.guid("oem hash"),
        epoch: 0,
    }
}

/// Where the OEM partition is on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OemPart {
    pub offset: u64,
    pub size: u64,
    pub partuuid: Guid,
    pub sector_size: u64,
}

/// Reads the GPT of `file` (512-byte sectors, then 4096, as gptman and
/// sgdisk do for an image; a block device's own sector size) through
/// gpt-slots.
pub fn read_gpt(file: &File, what: &Path) -> Result<Gpt> {
    let detected = gpt_slots::detect_sector_size(file)
        .with_context(|| format!("cannot read the sector size of {}", what.display()))?;
    let is_block = {
        use std::os::unix::fs::FileTypeExt;
        file.metadata()?.file_type().is_block_device()
    };
    let sizes: &[usize] = if is_block { &[detected] } else { &[512, 4096] };
    let mut first_err = None;
    for &ss in sizes {
        let f = file
            .try_clone()
            .with_context(|| format!("cannot open {} again", what.display()))?;
        let mut dev = FileDevice::with_sector_size(f, ss)
            .with_context(|| format!("cannot read {}", what.display()))?;
        match Gpt::read(&mut dev) {
            Ok(g) => return Ok(g),
            Err(e) => {
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    bail!(
        "{}: no GPT ({}): is it a Cairn disk image?",
        what.display(),
        first_err.unwrap_or_default()
    )
}

/// The OEM partition of `gpt`, found by its label, or the one-line refusal.
pub fn find_oem(gpt: &Gpt, what: &Path) -> Result<OemPart> {
    let label = Part::Oem.label();
    let Some(e) = gpt.entries().find(|e| e.name == label) else {
        let names: Vec<String> = gpt.entries().map(|e| e.name).collect();
        bail!(
            "{}: its GPT has no {label} partition (partitions: {}): not a Cairn disk image",
            what.display(),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let ss = gpt.sector_size() as u64;
    Ok(OemPart {
        offset: e.first_lba * ss,
        size: (e.last_lba + 1 - e.first_lba) * ss,
        partuuid: e.unique_guid,
        sector_size: ss,
    })
}

/// What was written, for the operator.
#[derive(Debug)]
pub struct Written {
    pub part: OemPart,
    pub ids: FsIds,
    /// Bytes of the partition that changed.
    pub changed: u64,
}

/// Builds the OEM filesystem for `files` and writes it over the OEM
/// partition of `target` (a raw image or a block device), then syncs and
/// reads it back. `work` is a scratch folder.
pub fn apply(target: &Path, files: &[OemFile], work: &Path) -> Result<Written> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .with_context(|| format!("cannot open {} for writing", target.display()))?;
    let gpt = read_gpt(&f, target)?;
    let part = find_oem(&gpt, target)?;
    let mut sb = vec![0u8; 1024];
    f.read_exact_at(&mut sb, part.offset + 1024)
        .with_context(|| format!("cannot read the OEM partition of {}", target.display()))?;
    let ids = ids_from_superblock(&sb).unwrap_or_else(|| ids_from_partuuid(part.partuuid));
    let img = work.join("oem.ext4");
    build_fs(files, &img, part.size / MIB, ids, work)?;
    let changed = write_range(&mut f, part.offset, part.size, &img)
        .with_context(|| format!("cannot write the OEM partition of {}", target.display()))?;
    Ok(Written { part, ids, changed })
}

/// The ext4 of `files` in `out`, `size_mib` big.
fn build_fs(files: &[OemFile], out: &Path, size_mib: u64, ids: FsIds, work: &Path) -> Result<()> {
    let src = work.join("oem-files");
    std::fs::create_dir_all(&src).with_context(|| format!("cannot create {}", src.display()))?;
    let shown = src.display().to_string();
    if shown.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        bail!(
            "the scratch folder {shown} has a space or quote in its path, which debugfs cannot take; set TMPDIR to a plain path"
        );
    }
    let mut nodes: Vec<Node> = dirs_of(files)
        .into_iter()
        .map(|path| Node::Dir { path, mode: 0o755 })
        .collect();
    for (i, file) in files.iter().enumerate() {
        let source = src.join(format!("f{i}"));
        std::fs::write(&source, &file.data)
            .with_context(|| format!("cannot write {}", source.display()))?;
        nodes.push(Node::File {
            path: file.path.clone(),
            mode: file.mode,
            source,
        });
    }
    fsimage::ext4(
        out,
        fs_labels::OEM,
        ids.uuid,
        ids.hash_seed,
        size_mib,
        &nodes,
        ids.epoch,
    )
    .context("cannot build the OEM filesystem (do the files fit the OEM partition?)")
}

/// Writes `img` at `offset` of `f` (the range is `len` long), block by
/// block, only where the bytes differ (a sparse image stays sparse), then
/// syncs and reads the range back. Returns the bytes written.
fn write_range(f: &mut File, offset: u64, len: u64, img: &Path) -> Result<u64> {
    let mut src = File::open(img).with_context(|| format!("cannot read {}", img.display()))?;
    let size = src.seek(SeekFrom::End(0))?;
    if size > len {
        bail!("the OEM filesystem is {size} bytes but the partition holds {len}: this is a bug");
    }
    src.seek(SeekFrom::Start(0))?;
    let mut new = vec![0u8; MIB as usize];
    let mut old = vec![0u8; MIB as usize];
    let mut changed = 0;
    let mut at = 0;
    while at < size {
        let n = (size - at).min(MIB) as usize;
        src.read_exact(&mut new[..n])?;
        f.read_exact_at(&mut old[..n], offset + at)?;
        if new[..n] != old[..n] {
            f.write_all_at(&new[..n], offset + at)?;
            changed += n as u64;
        }
        at += n as u64;
    }
    f.sync_all()?;
    drop_cache(f);
    // Read back what the device holds now, not what the page cache kept.
    src.seek(SeekFrom::Start(0))?;
    let mut at = 0;
    while at < size {
        let n = (size - at).min(MIB) as usize;
        src.read_exact(&mut new[..n])?;
        f.read_exact_at(&mut old[..n], offset + at)?;
        if new[..n] != old[..n] {
            bail!(
                "read back differs at byte {} of the OEM partition: the device may be failing",
                at
            );
        }
        at += n as u64;
    }
    Ok(changed)
}

/// Asks the kernel to forget the cached pages of `f`, so the next read
/// comes from the device (best effort: a failure only makes the read-back
/// weaker).
pub fn drop_cache(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor owned by `f` for the whole call.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// Whether `path` is a qcow2 image (by its magic, not its name).
pub fn is_qcow2(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"QFI\xfb"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `qemu-img convert` between raw and qcow2.
pub fn convert(src: &Path, from: &str, dst: &Path, to: &str) -> Result<()> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", from, "-O", to])
        .arg(src)
        .arg(dst);
    run(&mut cmd).with_context(|| {
        format!(
            "cannot convert {} to {to} (is qemu-img installed? apt-get install -y qemu-utils)",
            src.display()
        )
    })
}

/// `cairn-build oem`: the whole command on a raw or qcow2 image.
pub fn oem_command(image: &Path, inputs: &Inputs) -> Result<Written> {
    let files = plan(inputs).map_err(anyhow::Error::msg)?;
    if files.is_empty() {
        bail!("nothing to place: give --config host.toml and/or --file SRC:DEST");
    }
    // The filesystem is built in the system's scratch folder (it may be
    // a block device's /dev beside the image).
    let work = tempfile::Builder::new()
        .prefix("cairn-oem.")
        .tempdir()
        .context("cannot create a scratch folder for the OEM filesystem")?;
    let qcow2 = is_qcow2(image)?;
    let dir = image
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Edited as a copy beside the image, then renamed over it within one
    // filesystem: a failure or a crash leaves the original as it was. The
    // raw copy is as sparse as the image (and a reflink where the
    // filesystem has them).
    let beside = tempfile::Builder::new()
        .prefix(".cairn-oem.")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a scratch folder in {}", dir.display()))?;
    let raw = beside.path().join("disk.raw");
    if qcow2 {
        convert(image, "qcow2", &raw, "raw")?;
    } else {
        copy_sparse(image, &raw)?;
    }
    let written = apply(&raw, &files, work.path())?;
    let out = if qcow2 {
        let out = beside.path().join("disk.qcow2");
        convert(&raw, "raw", &out, "qcow2")?;
        out
    } else {
        raw
    };
    durable_file::sync_file(&out)?;
    std::fs::rename(&out, image).with_context(|| format!("cannot replace {}", image.display()))?;
    durable_file::sync_dir(dir)?;
    Ok(written)
}

/// `cp --sparse=always --reflink=auto --preserve=mode`: holes stay holes.
fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    let out = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto", "--preserve=mode"])
        .arg(src)
        .arg(dst)
        .output()
        .context("cannot run cp")?;
    if !out.status.success() {
        bail!(
            "cannot copy {} beside itself to edit it: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A line for the operator: what `files` are.
pub fn describe(files: &[OemFile]) -> String {
    files
        .iter()
        .map(|f| format!("{} ({} bytes, {:o})", f.path, f.data.len(), f.mode))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::disk;
    use std::path::PathBuf;

    /// Present, or the test fails under `cargo xtask test` (skips when bare).
    pub fn have(tools: &[(&str, &str)]) -> bool {
        host_tools::require(tools)
    }

    pub const TOOLS: &[(&str, &str)] = &[
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("sgdisk", "gdisk"),
        ("qemu-img", "qemu-utils"),
    ];

    /// A small Cairn-shaped disk made by the builder's own GPT code: every
    /// partition, an empty ext4 in OEM built as `cairn-build build` does.
    pub fn small_image(dir: &Path, name: &str) -> PathBuf {
        let d = cairn_build::board::Disk {
            sector_size: 512,
            esp_mib: 1,
            usr_mib: 2,
            oem_mib: 16,
            root_mib: 4,
        };
        let seed = Seed([7; 32]);
        let plan = disk::plan(&d, disk_layout::Arch::X86_64, &seed, 3);
        let oem = dir.join(format!("{name}.oem"));
        fsimage::ext4(
            &oem,
            fs_labels::OEM,
            seed.guid("oem fs"),
            seed.guid("oem hash"),
            16,
            &[],
            1_700_000_000,
        )
        .unwrap();
        let usr = dir.join(format!("{name}.usr"));
        std::fs::write(&usr, vec![0x5a; 1 << 20]).unwrap();
        let out = dir.join(name);
        disk::write(&plan, &[(Part::UsrA, &usr), (Part::Oem, &oem)], &out).unwrap();
        out
    }

    pub fn sh(cmd: &mut Command) -> (bool, String) {
        let o = cmd.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    /// The OEM partition of `disk` as a file of its own.
    pub fn extract_oem(disk: &Path, to: &Path) {
        let f = File::open(disk).unwrap();
        let part = find_oem(&read_gpt(&f, disk).unwrap(), disk).unwrap();
        let mut buf = vec![0u8; part.size as usize];
        f.read_exact_at(&mut buf, part.offset).unwrap();
        std::fs::write(to, buf).unwrap();
    }

    pub fn debugfs_cat(img: &Path, path: &str) -> String {
        let (ok, _) = sh(Command::new("e2fsck").arg("-fn").arg(img));
        assert!(ok, "e2fsck -fn {}", img.display());
        let o = Command::new("debugfs")
            .args(["-R", &format!("cat /{path}")])
            .arg(img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn inputs(config: &str, sig: Option<&str>, files: &[(&str, &str)]) -> Inputs {
        Inputs {
            config: Some(("host.toml".into(), config.as_bytes().to_vec())),
            sig: sig.map(|s| ("host.toml.sig".into(), s.as_bytes().to_vec())),
            files: files
                .iter()
                .map(|(d, c)| {
                    (
                        format!("x:{d}"),
                        d.to_string(),
                        c.as_bytes().to_vec(),
                        false,
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn plan_places_config_signature_and_files() {
        let got = plan(&inputs(
            "hostname = \"a\"\n",
            Some("[]"),
            &[("/certs/ca.pem", "PEM"), ("z", "1")],
        ))
        .unwrap();
        let paths: Vec<(&str, u32)> = got.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(
            paths,
            [
                ("certs/ca.pem", 0o644),
                ("config.toml", 0o600),
                ("config.toml.sig", 0o644),
                ("z", 0o644)
            ]
        );
        assert_eq!(dirs_of(&got), ["certs"]);
        let nested = plan(&inputs("", None, &[("a/b/c", "x")])).unwrap();
        assert_eq!(dirs_of(&nested), ["a", "a/b"]);
    }

    #[test]
    fn plan_refuses_what_a_host_would_refuse() {
        let cases: [(Inputs, &str); 9] = [
            (inputs("hostname = 5\n", None, &[]), "hostname"),
            (inputs("nope = 1\n", None, &[]), "nope"),
            (
                inputs("a = 1\n# cairn-signature: []\n", Some("[]"), &[]),
                "signed both ways",
            ),
            (inputs("", Some("not json"), &[]), "not a config signature"),
            (inputs("", None, &[("../x", "")]), "not a path"),
            (inputs("", None, &[("a b", "")]), "not a path"),
            (inputs("", None, &[("config.toml", "")]), "--config"),
            (inputs("", None, &[("a", ""), ("a/b", "")]), "clashes"),
            (
                Inputs {
                    sig: Some(("s".into(), b"[]".to_vec())),
                    ..Inputs::default()
                },
                "without --config",
            ),
        ];
        for (i, needle) in cases {
            let e = plan(&i).unwrap_err();
            assert!(e.contains(needle), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn superblock_ids_are_read_back() {
        let mut sb = vec![0u8; 1024];
        assert_eq!(ids_from_superblock(&sb), None);
        sb[0x38..0x3a].copy_from_slice(&0xef53u16.to_le_bytes());
        let u = Guid::parse("11111111-2222-4333-8444-555555555555");
        sb[0x68..0x78].copy_from_slice(&u.to_be_bytes());
        sb[0xec..0xfc].copy_from_slice(&u.to_be_bytes());
        sb[0x108..0x10c].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        assert_eq!(
            ids_from_superblock(&sb),
            Some(FsIds {
                uuid: u,
                hash_seed: u,
                epoch: 1_700_000_000
            })
        );
        let p = ids_from_partuuid(u);
        assert_eq!(p, ids_from_partuuid(u));
        assert_ne!(p.uuid, p.hash_seed);
        assert_eq!(p.epoch, 0);
    }

    #[test]
    fn oem_on_raw_and_qcow2_is_readable_by_e2fsprogs_and_reproducible() {
        if !have(TOOLS) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let raw = small_image(d.path(), "disk.raw");
        // mkfs under the fake clock: the built image's epoch and ids.
        let before = {
            let f = File::open(&raw).unwrap();
            let part = find_oem(&read_gpt(&f, &raw).unwrap(), &raw).unwrap();
            let mut sb = vec![0u8; 1024];
            f.read_exact_at(&mut sb, part.offset + 1024).unwrap();
            ids_from_superblock(&sb).unwrap()
        };
        assert_eq!(before.epoch, 1_700_000_000);
        let cfg = d.path().join("host.toml");
        std::fs::write(&cfg, "hostname = \"oem-test\"\n").unwrap();
        let extra = d.path().join("ca.pem");
        std::fs::write(&extra, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let inputs = Inputs::read(
            Some(&cfg),
            None,
            &[format!("{}:certs/ca.pem", extra.display())],
        )
        .unwrap();
        let w = oem_command(&raw, &inputs).unwrap();
        assert_eq!(w.ids, before, "the filesystem keeps its identity");
        let first = std::fs::read(&raw).unwrap();
        let oem = d.path().join("oem.img");
        extract_oem(&raw, &oem);
        assert_eq!(
            debugfs_cat(&oem, "config.toml"),
            "hostname = \"oem-test\"\n"
        );
        assert_eq!(
            debugfs_cat(&oem, "certs/ca.pem"),
            "-----BEGIN CERTIFICATE-----\n"
        );
        let (ok, text) = sh(Command::new("sgdisk").arg("-v").arg(&raw));
        assert!(ok && text.contains("No problems found"), "{text}");

        // Twice, a second later: the same bytes.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let w = oem_command(&raw, &inputs).unwrap();
        assert_eq!(w.changed, 0, "nothing changed the second time");
        assert!(
            std::fs::read(&raw).unwrap() == first,
            "oem is not reproducible"
        );
        // No scratch left beside the image.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".cairn-oem"))
            .collect();
        assert!(left.is_empty());

        // qcow2: the same content, read back after qemu-img convert.
        let fresh = small_image(d.path(), "fresh.raw");
        let q = d.path().join("disk.qcow2");
        convert(&fresh, "raw", &q, "qcow2").unwrap();
        oem_command(&q, &inputs).unwrap();
        assert!(is_qcow2(&q).unwrap());
        let back = d.path().join("back.raw");
        convert(&q, "qcow2", &back, "raw").unwrap();
        assert!(
            std::fs::read(&back).unwrap() == first,
            "qcow2 and raw give the same disk"
        );
        let q_bytes = std::fs::read(&q).unwrap();
        oem_command(&q, &inputs).unwrap();
        assert!(
            std::fs::read(&q).unwrap() == q_bytes,
            "qcow2 is reproducible"
        );
    }

    #[test]
    fn a_bad_config_or_a_disk_without_oem_writes_nothing() {
        if !have(TOOLS) {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let raw = small_image(d.path(), "disk.raw");
        let before = std::fs::read(&raw).unwrap();
        let bad = Inputs {
            config: Some(("host.toml".into(), b"hostname = 5\n".to_vec())),
            ..Inputs::default()
        };
        let e = oem_command(&raw, &bad).unwrap_err().to_string();
        assert!(e.contains("hostname"), "{e}");
        assert!(std::fs::read(&raw).unwrap() == before);

        // A GPT without an OEM partition (sgdisk, 2 partitions).
        let other = d.path().join("other.raw");
        File::create(&other).unwrap().set_len(16 << 20).unwrap();
        let (ok, text) = sh(Command::new("sgdisk")
            .args([
                "-n",
                "1:2048:+4M",
                "-c",
                "1:data",
                "-n",
                "2:0:+4M",
                "-c",
                "2:more",
            ])
            .arg(&other));
        assert!(ok, "{text}");
        let good = Inputs {
            config: Some(("host.toml".into(), b"hostname = \"a\"\n".to_vec())),
            ..Inputs::default()
        };
        let e = format!("{:#}", oem_command(&other, &good).unwrap_err());
        assert!(
            e.contains("no OEM partition (partitions: data, more)"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = format!(
            "{:#}",
            oem_command(&d.path().join("host.toml.none"), &good).unwrap_err()
        );
        assert!(e.contains("host.toml.none"), "{e}");
    }
}
