//! `cairn-build build`: board config -> disk image, qcow2, signed release,
//! build-info.json and run.sh. Everything is made in a work folder inside the
//! output folder and moved into place at the end, build-info.json last, so an
//! interrupted build never leaves outputs that look complete.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use disk_layout::{Arch, Part, Slot, boot_files, cmdline as keys};
use release_manifest::KeyPair;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::derive::Seed;
use crate::disk;
use crate::fsimage::{self, Node};
use crate::progress::Progress;
use crate::rootfs;
use crate::stage;
use crate::tools;
use cairn_build::board::{self, Board};

pub use disk_layout::dev_key::SECRET as DEV_KEY_SECRET;
const DEV_PUBLIC_LINE: &str = include_str!("../../keys/cairn-DEVELOPMENT-ONLY.public");

/// Cairn's own programs in /usr: (cargo binary name, path in the image);
/// disk-layout owns where each one lives.
pub const USR_BINARIES: [(&str, &str); 6] = disk_layout::programs::ALL;

pub struct Options {
    pub board: PathBuf,
    pub out: PathBuf,
    pub version: String,
    pub key: Option<PathBuf>,
    pub dev_key: bool,
    pub boot_efi: Option<PathBuf>,
    pub init: Option<PathBuf>,
    pub cache: PathBuf,
    pub epoch: Option<u64>,
    pub update_root: Option<PathBuf>,
    /// `--preload-image DIR:IMAGE`: OCI layouts shipped in /usr.
    pub preload_images: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UsrInfo {
    pub partuuid: String,
    pub root_hash: String,
    pub salt: String,
    pub data_size: u64,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub hash_size: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub board: String,
    pub arch: String,
    pub version: String,
    pub development_key: bool,
    pub rootfs_cached: bool,
    pub outputs: Vec<(String, String)>,
    pub usr_a: UsrInfo,
    pub seconds: f64,
    pub steps: Vec<(String, f64)>,
}

fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The programs a build puts into the image, found before anything is made.
struct Inputs {
    board: Board,
    arch: Arch,
    key: KeyPair,
    dev: bool,
    boot_efi: PathBuf,
    boot_efi_bytes: Vec<u8>,
    init: PathBuf,
    init_hash: String,
    usr_binaries: Vec<(PathBuf, &'static str)>,
}

/// /usr as the slot holds it (EROFS with its verity tree appended).
struct UsrImage {
    path: PathBuf,
    verity: verity_tree::VerityInfo,
}

/// What goes into a slot's ESP folder, and the boot manager with the key.
struct BootFiles {
    cmdline: String,
    slot_files: Vec<(&'static str, Vec<u8>)>,
    efi: Vec<u8>,
}

/// The steps in order: inputs, work folder, rootfs, /usr, initramfs, the
/// /usr image and its hash tree, signed boot files, the other filesystems,
/// the disk, the release, build-info.json, then everything moved into place.
pub fn build(opts: &Options, progress: &mut Progress) -> Result<Summary> {
    let inputs = gather_inputs(opts, progress)?;
    let (board, arch, key) = (&inputs.board, inputs.arch, &inputs.key);
    let out = prepare_out(&opts.out)?;
    let work = out.join(".cairn-build.tmp");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    let step = progress.step("bootstrap the Debian rootfs (mmdebstrap)");
    let rootfs = rootfs::ensure(board, &opts.cache, opts.epoch)?;
    step.done(&format!(
        "{} packages{}",
        rootfs.packages.len(),
        if rootfs.cached {
            ", from the cache"
        } else {
            ""
        }
    ));
    let epoch = opts.epoch.unwrap_or(rootfs.created);
    let seed = Seed(sha256_json(&json!({
        "board": board,
        "version": opts.version,
        "epoch": epoch,
        "rootfs": rootfs.key,
        "packages": rootfs.packages,
        "boot_manager": hex::encode(Sha256::digest(&inputs.boot_efi_bytes)),
        "init": inputs.init_hash,
        "usr_binaries": inputs.usr_binaries.iter().map(|(p, _)| sha256_file(p)).collect::<Result<Vec<_>>>()?,
        "key": key.key_id(),
    })));

    let stage_dir = work.join("stage");
    let staged = stage_usr(opts, &inputs, &rootfs, &stage_dir, progress)?;
    let initrd = pack_initrd(&inputs, &staged, &stage_dir, epoch, progress)?;
    let usr = usr_image(opts, board, &stage_dir, &work, &seed, epoch, progress)?;
    let plan = disk::plan(&board.disk, arch, &seed, board.board.boot_tries);
    let boot = boot_files(&inputs, &staged, &initrd, &usr.verity)?;
    let (esp_img, oem_img, root_img) =
        filesystems(&inputs, &boot, &staged, &work, &seed, epoch, progress)?;

    let step = progress.step("GPT disk image");
    let raw = work.join("disk.raw");
    let contents: Vec<(Part, &Path)> = vec![
        (Part::Esp, &esp_img),
        (Part::UsrA, &usr.path),
        (Part::Oem, &oem_img),
        (Part::Root, &root_img),
    ];
    disk::write(&plan, &contents, &raw)?;
    let mut produced = vec!["disk.raw".to_string()];
    if board.outputs.formats.iter().any(|f| f == "qcow2") {
        let mut cmd = Command::new("qemu-img");
        cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(work.join("disk.qcow2"));
        tools::run(&mut cmd)?;
        produced.push("disk.qcow2".into());
    }
    step.done(&format!("{} MiB", plan.total_bytes >> 20));

    write_release(opts, &inputs, &usr, &boot, &rootfs, &work, epoch, progress)?;
    produced.push("release".into());

    fs::write(work.join("run.sh"), run_script(arch, board))?;
    set_mode(&work.join("run.sh"), 0o755)?;
    produced.push("run.sh".into());

    if !board.outputs.formats.iter().any(|f| f == "raw") {
        // raw was needed to make everything else; the board did not ask to keep it.
        fs::remove_file(&raw)?;
        produced.retain(|p| p != "disk.raw");
    }
    let step = progress.step("hash outputs");
    let outputs = hash_outputs(&work, &produced)?;
    step.done("");
    let usr_a = plan.get(Part::UsrA);
    let usr_info = UsrInfo {
        partuuid: usr_a.unique_guid.to_string(),
        root_hash: usr.verity.root_hash_hex(),
        salt: usr.verity.salt_hex(),
        data_size: usr.verity.data_size(),
        data_blocks: usr.verity.data_blocks,
        hash_offset: usr.verity.hash_offset,
        hash_size: usr.verity.hash_size,
    };
    let info = json!({
        "format": 1,
        "board": board.board.name,
        "arch": arch.name(),
        "version": opts.version,
        "source_date_epoch": epoch,
        "development_key": inputs.dev,
        "key_id": key.key_id(),
        "kernel": staged.kver,
        "cmdline": boot.cmdline,
        "inputs": {
            "board": board,
            "board_file": opts.board,
            "rootfs_key": rootfs.key,
            "boot_manager_sha256": hex::encode(Sha256::digest(&inputs.boot_efi_bytes)),
            "init_sha256": inputs.init_hash,
        },
        "lockfile": rootfs.packages,
        "outputs": outputs.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "usr_a": usr_info,
        "partitions": plan.parts.iter().map(|p| json!({
            "number": p.part.number(), "label": p.part.label(), "type": p.type_guid.to_string(),
            "uuid": p.unique_guid.to_string(), "first_lba": p.first_lba, "last_lba": p.last_lba,
            "attributes": format!("{:#018x}", p.attributes),
        })).collect::<Vec<_>>(),
        "sector_size": plan.sector_size,
    });
    fs::write(
        work.join("build-info.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;

    publish(&work, &out, &produced)?;
    let step = progress.step("clean up the work folder");
    fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    step.done("");
    if inputs.dev {
        progress.warn("this image is signed with the DEVELOPMENT key from the Cairn source tree: anyone can sign updates for it. Use `cairn-build keygen` and --key for real hosts.");
    }
    Ok(Summary {
        out: out.clone(),
        board: board.board.name.clone(),
        arch: arch.name().into(),
        version: opts.version.clone(),
        development_key: inputs.dev,
        rootfs_cached: rootfs.cached,
        outputs,
        usr_a: usr_info,
        seconds: progress.total(),
        steps: progress.steps.clone(),
    })
}

/// The board, the key and every program the image ships, checked before
/// any long step starts (a missing artifact fails in seconds, not after the
/// rootfs).
fn gather_inputs(opts: &Options, progress: &Progress) -> Result<Inputs> {
    let mut board = board::load(&opts.board)?;
    board
        .add_preloads(&opts.preload_images)
        .map_err(anyhow::Error::msg)?;
    let arch = board.arch();
    tools::require(tools::BUILD_TOOLS)?;
    check_foreign_arch(arch)?;
    let key = load_key(opts, progress)?;
    let dev = is_dev_key(&key);
    let (boot_efi, boot_efi_bytes) = boot_manager(opts.boot_efi.as_deref(), arch)?;
    let init = artifact(opts.init.as_deref(), arch.musl_target(), "cairn-init", arch)?;
    let init_hash = sha256_file(&init)?;
    let usr_binaries = USR_BINARIES
        .iter()
        .map(|(name, dest)| {
            let dest = dest.trim_start_matches('/');
            Ok((artifact(None, arch.musl_target(), name, arch)?, dest))
        })
        .collect::<Result<_>>()?;
    Ok(Inputs {
        board,
        arch,
        key,
        dev,
        boot_efi,
        boot_efi_bytes,
        init,
        init_hash,
        usr_binaries,
    })
}

/// The rootfs unpacked and turned into Cairn's /usr and factory /etc.
fn stage_usr(
    opts: &Options,
    inputs: &Inputs,
    rootfs: &rootfs::Rootfs,
    stage_dir: &Path,
    progress: &mut Progress,
) -> Result<stage::Staged> {
    let step = progress.step("stage /usr and the factory /etc");
    stage::extract(&rootfs.tar, stage_dir)?;
    let key = &inputs.key;
    let key_name = format!(
        "{}{}.pub",
        if inputs.dev { "DEVELOPMENT-" } else { "" },
        key.key_id()
    );
    let keys_json = serde_json::to_string_pretty(&json!([{
        "id": key.key_id(), "public": key.public().to_line().trim(), "development": inputs.dev,
    }]))?;
    let staged = stage::customize(
        stage_dir,
        &inputs.board,
        &stage::CairnFiles {
            version: &opts.version,
            lockfile: &rootfs.packages,
            keys: &[(key_name, key.public().to_line())],
            keys_json,
            units_dir: &source_root().join("systemd-units"),
            binaries: &inputs.usr_binaries,
            update_root: opts.update_root.as_deref(),
            boot_tries: inputs.board.board.boot_tries,
        },
    )?;
    step.done(&format!(
        "kernel {}, {} modules kept, {} dropped",
        staged.kver, staged.modules_kept, staged.modules_removed
    ));
    Ok(staged)
}

fn pack_initrd(
    inputs: &Inputs,
    staged: &stage::Staged,
    stage_dir: &Path,
    epoch: u64,
    progress: &mut Progress,
) -> Result<Vec<u8>> {
    let step = progress.step("initramfs (cairn-init + modules)");
    let initrd = initrd_pack::pack(&initrd_pack::PackSpec {
        init: inputs.init.clone(),
        arch: inputs.arch,
        modules: Some(initrd_pack::ModulesSpec {
            dir: stage_dir.join("usr/lib/modules").join(&staged.kver),
            names: inputs.board.initramfs.modules.clone(),
        }),
        mtime: u32::try_from(epoch).unwrap_or(0),
    })?;
    step.done(&format!("{} KiB", initrd.len() / 1024));
    Ok(initrd)
}

/// /usr as EROFS, then its dm-verity tree appended in the same file; fails
/// when the result does not fit the board's USR partitions.
fn usr_image(
    opts: &Options,
    board: &Board,
    stage_dir: &Path,
    work: &Path,
    seed: &Seed,
    epoch: u64,
    progress: &mut Progress,
) -> Result<UsrImage> {
    let step = progress.step("/usr as EROFS (lz4hc)");
    let path = work.join("usr.img");
    fsimage::erofs(
        &stage_dir.join("usr"),
        &path,
        seed.guid("usr filesystem"),
        epoch,
    )?;
    let erofs_size = fs::metadata(&path)?.len();
    step.done(&format!("{} MiB", erofs_size >> 20));

    let step = progress.step("dm-verity hash tree");
    let hash_offset = erofs_size.div_ceil(4096) * 4096;
    // The board's salt, not one from the build inputs like the ids around
    // it: every release of the board then has the same dm-verity level-0
    // hash for the same block, and those hashes are the delta's block keys
    // (a host reads them from its slot's verified tree instead of hashing
    // the slot). See `derive::board_verity_salt`.
    let salt = crate::derive::board_verity_salt(&board.board.name, board.arch().name());
    let verity = {
        let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
        verity_tree::format(
            &mut f,
            &verity_tree::Params {
                data_blocks: hash_offset / 4096,
                hash_offset,
                salt,
                uuid: seed.guid("verity superblock").to_be_bytes(),
            },
        )?
    };
    let usr_size = fs::metadata(&path)?.len();
    if usr_size > board.disk.usr_mib << 20 {
        bail!(
            "/usr needs {} MiB with its hash tree but USR partitions hold {} MiB: raise disk.usr_mib in {}",
            usr_size.div_ceil(1 << 20),
            board.disk.usr_mib,
            opts.board.display()
        );
    }
    step.done(&format!("root hash {}", verity.root_hash_hex()));
    Ok(UsrImage { path, verity })
}

/// The signed command line and slot files, and the boot manager with the
/// release key patched into its key slot.
fn boot_files(
    inputs: &Inputs,
    staged: &stage::Staged,
    initrd: &[u8],
    verity: &verity_tree::VerityInfo,
) -> Result<BootFiles> {
    let cmdline = kernel_cmdline(&inputs.board, verity);
    let sig = boot_sig::sign_line(
        inputs.key.seed(),
        &staged.kernel,
        initrd,
        cmdline.as_bytes(),
    );
    let efi = keyed_boot_manager(
        &inputs.boot_efi,
        &inputs.boot_efi_bytes,
        &[inputs.key.public().to_bytes()],
    )?;
    let slot_files = SLOT_FILES
        .iter()
        .zip([
            staged.kernel.clone(),
            initrd.to_vec(),
            cmdline.clone().into_bytes(),
            sig.to_vec(),
        ])
        .map(|(&name, data)| (name, data))
        .collect();
    Ok(BootFiles {
        cmdline,
        slot_files,
        efi,
    })
}

/// The ESP (boot manager + slot A's files), an empty OEM and the ROOT
/// skeleton, as filesystem images.
fn filesystems(
    inputs: &Inputs,
    boot: &BootFiles,
    staged: &stage::Staged,
    work: &Path,
    seed: &Seed,
    epoch: u64,
    progress: &mut Progress,
) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let disk = &inputs.board.disk;
    let step = progress.step("ESP, OEM and ROOT filesystems");
    let esp_img = work.join("esp.img");
    esp_image(
        &esp_img,
        disk,
        inputs.arch,
        &boot.efi,
        &boot.slot_files,
        epoch,
    )?;
    let oem_img = work.join("oem.img");
    oem_image(&oem_img, disk, seed, epoch)?;
    let root_img = work.join("root.img");
    root_image(&root_img, disk, seed, epoch, &staged.top_symlinks)?;
    step.done("");
    Ok((esp_img, oem_img, root_img))
}

/// The ESP: the boot manager at the firmware's default path and slot A's
/// boot files in its folder. `install` makes it from a release the same way.
pub fn esp_image(
    out: &Path,
    disk: &board::Disk,
    arch: Arch,
    efi: &[u8],
    slot_files: &[(&'static str, Vec<u8>)],
    epoch: u64,
) -> Result<()> {
    let slot_dir = Slot::A.esp_dir();
    let mut esp_files = vec![(arch.efi_default_loader().to_string(), efi.to_vec())];
    esp_files.extend(
        slot_files
            .iter()
            .map(|(n, d)| (format!("{slot_dir}/{n}"), d.clone())),
    );
    fsimage::fat32(
        out,
        disk.esp_mib,
        disk_layout::fs_labels::ESP,
        &esp_files,
        epoch,
    )
}

/// The empty OEM filesystem, its ids derived from `seed`.
pub fn oem_image(out: &Path, disk: &board::Disk, seed: &Seed, epoch: u64) -> Result<()> {
    fsimage::ext4(
        out,
        disk_layout::fs_labels::OEM,
        seed.guid("oem fs"),
        seed.guid("oem hash"),
        disk.oem_mib,
        &[],
        epoch,
    )
}

/// The ROOT skeleton (it grows to the disk on first boot), its ids derived
/// from `seed`; `top_symlinks` are the rootfs's merged-/usr links.
pub fn root_image(
    out: &Path,
    disk: &board::Disk,
    seed: &Seed,
    epoch: u64,
    top_symlinks: &[(String, String)],
) -> Result<()> {
    fsimage::ext4(
        out,
        disk_layout::fs_labels::ROOT,
        seed.guid("root fs"),
        seed.guid("root hash"),
        disk.root_mib,
        &root_skeleton(top_symlinks),
        epoch,
    )
}

/// The signed release: /usr and the boot files as chunked payloads.
#[allow(clippy::too_many_arguments)]
fn write_release(
    opts: &Options,
    inputs: &Inputs,
    usr: &UsrImage,
    boot: &BootFiles,
    rootfs: &rootfs::Rootfs,
    work: &Path,
    epoch: u64,
    progress: &mut Progress,
) -> Result<()> {
    let step = progress.step("signed release (chunked payload)");
    let release_dir = work.join("release");
    let mut writer = release_manifest::ReleaseWriter::create(&release_dir)?;
    writer.add_image_file(
        "usr",
        &usr.path,
        release_manifest::DEFAULT_CHUNK_SIZE,
        Some(usr.verity.into()),
    )?;
    // Beside the full chunks, never instead of them: a host whose active
    // slot does not help (or an agent that predates deltas) fetches those.
    // Format 3: block digests are the image's dm-verity level-0 hashes.
    let delta = block_delta::add_to_release(
        &mut writer,
        "usr",
        &usr.path,
        block_delta::DigestKind::Verity {
            salt: usr.verity.salt,
        },
        release_manifest::DEFAULT_ZSTD_LEVEL,
    )
    .context("writing the block index of /usr for delta updates")?;
    for (name, data) in &boot.slot_files {
        writer.add_image(name, &data[..], release_manifest::DEFAULT_CHUNK_SIZE, None)?;
    }
    writer.finish(
        release_manifest::ManifestFields {
            board: inputs.board.board.name.clone(),
            arch: inputs.arch.name().to_string(),
            version: release_manifest::Version::parse(&opts.version)?,
            created: epoch,
            expires: None,
            packages: rootfs.packages.clone(),
        },
        std::slice::from_ref(&inputs.key),
    )?;
    step.done(&format!(
        "/usr block index {} KiB ({} of {} blocks distinct, {}-byte digests)",
        delta.index_bytes >> 10,
        delta.unique_blocks,
        delta.blocks,
        delta.digest_len
    ));
    Ok(())
}

/// sha256 of each output (of the manifest for the release folder).
fn hash_outputs(work: &Path, produced: &[String]) -> Result<Vec<(String, String)>> {
    let mut outputs = Vec::new();
    for name in produced {
        let p = work.join(name);
        if p.is_dir() {
            outputs.push((
                format!("{name}/{}", release_manifest::MANIFEST_FILE),
                sha256_file(&p.join(release_manifest::MANIFEST_FILE))?,
            ));
        } else {
            outputs.push((name.clone(), sha256_file(&p)?));
        }
    }
    Ok(outputs)
}

/// The signed part of the command line; the boot manager appends the slot and
/// its PARTUUID, which are not known until it picks one.
pub fn kernel_cmdline(board: &Board, v: &verity_tree::VerityInfo) -> String {
    let mut args = vec![
        format!("console={}", board.board.console),
        format!("{}={}", keys::USRHASH, v.root_hash_hex()),
        format!(
            "{}={}:{}:{}",
            keys::VERITY,
            v.data_blocks,
            v.hash_offset,
            v.salt_hex()
        ),
        // A verity error panics the kernel (panic_on_corruption); reboot so the
        // boot manager's tries can move to the other slot instead of hanging.
        "panic=5".to_string(),
        "rw".to_string(),
    ];
    args.extend(board.kernel.cmdline.iter().cloned());
    args.join(" ")
}

fn root_skeleton(symlinks: &[(String, String)]) -> Vec<Node> {
    let dir = |p: &str, mode: u32| Node::Dir {
        path: p.to_string(),
        mode,
    };
    let mut nodes = vec![
        dir("usr", 0o755),
        dir("etc", 0o755),
        dir(".cairn", 0o700),
        dir(".cairn/etc", 0o755),
        dir(".cairn/etc/upper", 0o755),
        dir(".cairn/etc/work", 0o755),
        dir("var", 0o755),
        dir("var/lib", 0o755),
        dir("var/log", 0o755),
        dir("var/cache", 0o755),
        dir("var/spool", 0o755),
        dir("var/tmp", 0o1777),
        dir("home", 0o755),
        dir("root", 0o700),
        dir("tmp", 0o1777),
        dir("srv", 0o755),
        dir("opt", 0o755),
        dir("mnt", 0o755),
        dir("media", 0o755),
        dir("proc", 0o555),
        dir("sys", 0o555),
        dir("dev", 0o755),
        dir("run", 0o755),
        dir("boot", 0o755),
    ];
    nodes.extend(symlinks.iter().map(|(p, t)| Node::Symlink {
        path: p.clone(),
        target: t.clone(),
    }));
    nodes
}

fn run_script(arch: Arch, board: &Board) -> String {
    let (qemu, machine, fw_code, fw_vars) = match arch {
        // The baseline CPU: under TCG, `max` makes the guest pick AVX2/SSE4
        // code that is emulated slowly (see qemu-tests' `vm::default_cpu`).
        Arch::X86_64 => (
            "qemu-system-x86_64",
            "-machine q35 -cpu qemu64",
            "/usr/share/OVMF/OVMF_CODE_4M.fd",
            "/usr/share/OVMF/OVMF_VARS_4M.fd",
        ),
        Arch::Arm64 => (
            "qemu-system-aarch64",
            "-machine virt -cpu cortex-a57",
            "/usr/share/AAVMF/AAVMF_CODE.fd",
            "/usr/share/AAVMF/AAVMF_VARS.fd",
        ),
    };
    format!(
        r#"#!/bin/sh
# Boots this {name} image in QEMU with UEFI firmware, serial console on this
# terminal (Ctrl-a x quits). Extra arguments go to QEMU, e.g. -snapshot to keep
# the image pristine, or -fw_cfg name={fwcfg},file=host.toml for a host config.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
vars=$(mktemp /tmp/cairn-vars.XXXXXX)
trap 'rm -f "$vars"' EXIT
cp {fw_vars} "$vars"
accel=tcg
# KVM only where it really works; CAIRN_ACCEL=kvm forces it.
[ "${{CAIRN_ACCEL:-}}" = kvm ] && accel=kvm
{qemu} -accel $accel {machine} -smp 2 -m 1024 -nodefaults -nographic \
  -serial mon:stdio \
  -drive if=pflash,format=raw,unit=0,readonly=on,file={fw_code} \
  -drive if=pflash,format=raw,unit=1,file="$vars" \
  -drive if=none,id=disk0,format=qcow2,file="$here/disk.qcow2" \
  -device virtio-blk-pci,drive=disk0 \
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
  -device virtio-rng-pci \
  "$@"
"#,
        name = board.board.name,
        fwcfg = disk_layout::host_config::FW_CFG_NAME,
    )
}

fn load_key(opts: &Options, progress: &Progress) -> Result<KeyPair> {
    match (&opts.key, opts.dev_key) {
        (Some(_), true) => bail!("give either --key or --dev-key, not both"),
        (Some(path), false) => Ok(KeyPair::load_secret(path)?),
        (None, true) => {
            progress.warn("signing with the DEVELOPMENT key: for tests and the quick start only");
            let path = source_root().join(DEV_KEY_SECRET);
            // git does not keep the 0600 the key loader insists on for secrets.
            set_mode(&path, 0o600)?;
            Ok(KeyPair::load_secret(path)?)
        }
        (None, false) => bail!(
            "a release must be signed: make a key with `cairn-build keygen --out keys/` and pass --key keys/release.secret (or --dev-key for a test image)"
        ),
    }
}

pub fn is_dev_key(key: &KeyPair) -> bool {
    key.public().to_line().trim() == DEV_PUBLIC_LINE.trim()
}

/// A cross-arch build runs the target's maintainer scripts through qemu-user.
fn check_foreign_arch(arch: Arch) -> Result<()> {
    let native = if cfg!(target_arch = "x86_64") {
        Arch::X86_64
    } else {
        Arch::Arm64
    };
    if arch == native {
        return Ok(());
    }
    let entry = match arch {
        Arch::Arm64 => "qemu-aarch64",
        Arch::X86_64 => "qemu-x86_64",
    };
    if Path::new("/proc/sys/fs/binfmt_misc").join(entry).exists() {
        return Ok(());
    }
    bail!(
        "building for {} needs {entry} registered with binfmt_misc: apt-get install -y qemu-user-static binfmt-support && (mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc) && update-binfmts --enable {entry}",
        arch.name()
    )
}

/// The release images that are a slot's boot files, by the names the ESP's
/// slot folder uses too, in the order the release lists them.
pub const SLOT_FILES: [&str; 4] = [
    boot_files::KERNEL,
    boot_files::INITRD,
    boot_files::CMDLINE,
    boot_files::SIGNATURE,
];

/// The compiled boot manager for `arch` (the given file, or the artifact
/// next to this binary), checked to be a PE for that arch: (path, bytes).
pub fn boot_manager(given: Option<&Path>, arch: Arch) -> Result<(PathBuf, Vec<u8>)> {
    let path = artifact(given, arch.uefi_target(), "cairn-boot.efi", arch)?;
    let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    check_pe(&bytes, arch).with_context(|| format!("{}", path.display()))?;
    Ok((path, bytes))
}

/// A copy of the boot manager with `keys` (the release keys boot.sig is
/// checked against) in its key slot.
pub fn keyed_boot_manager(path: &Path, bytes: &[u8], keys: &[[u8; 32]]) -> Result<Vec<u8>> {
    let mut efi = bytes.to_vec();
    boot_sig::embed_keys(&mut efi, keys).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(efi)
}

/// The compiled boot manager or init: the given path, or where `cargo xtask
/// artifacts` puts it next to this binary's target folder.
fn artifact(given: Option<&Path>, triple: &str, name: &str, arch: Arch) -> Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("{} does not exist", p.display());
    }
    let exe = std::env::current_exe().context("cannot find the cairn-build executable")?;
    let file = if name.ends_with(".efi") {
        "cairn-boot.efi"
    } else {
        name
    };
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join(triple).join("release").join(file))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "{name} for {} not found (looked in {}): build it with `cargo xtask artifacts --arch {}` or pass its path",
            arch.name(),
            candidates.first().map(|p| p.display().to_string()).unwrap_or_default(),
            arch.name()
        )
    })
}

fn check_pe(bytes: &[u8], arch: Arch) -> Result<()> {
    let pe = bytes
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let machine = pe.and_then(|o| {
        (bytes.get(o..o + 4) == Some(b"PE\0\0"))
            .then(|| bytes.get(o + 4..o + 6))
            .flatten()
    });
    let want: u16 = match arch {
        Arch::X86_64 => 0x8664,
        Arch::Arm64 => 0xaa64,
    };
    match machine {
        Some(m) if u16::from_le_bytes([m[0], m[1]]) == want => Ok(()),
        Some(_) => bail!(
            "is an EFI binary for another architecture than {}",
            arch.name()
        ),
        None => bail!("is not a PE/EFI binary"),
    }
}

fn prepare_out(out: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out)
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let probe = out.join(".cairn-write-test");
    File::create(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .with_context(|| format!("the output folder {} is not writable", out.display()))?;
    out.canonicalize()
        .with_context(|| format!("{}", out.display()))
}

/// Moves finished outputs into `out`: the old build-info.json goes first and
/// the new one comes last, so it marks a complete set.
fn publish(work: &Path, out: &Path, produced: &[String]) -> Result<()> {
    let info = out.join("build-info.json");
    if info.exists() {
        fs::remove_file(&info)?;
    }
    for name in produced {
        let dst = out.join(name);
        if dst.is_dir() {
            fs::remove_dir_all(&dst)
                .with_context(|| format!("cannot replace {}", dst.display()))?;
        } else if dst.exists() {
            fs::remove_file(&dst)?;
        }
        fs::rename(work.join(name), &dst)
            .with_context(|| format!("cannot move {name} into {}", out.display()))?;
    }
    fs::rename(work.join("build-info.json"), &info)?;
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn sha256_json(v: &serde_json::Value) -> [u8; 32] {
    Sha256::digest(v.to_string().as_bytes()).into()
}
