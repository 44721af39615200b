//! cairn-init: the initramfs /init (PID 1 until systemd takes over).
//!
//! Mounts the kernel filesystems, loads the board's modules, finds the
//! booted slot's USR partition by the PARTUUID the boot manager put on the
//! command line, opens it through dm-verity with the signed root hash, mounts
//! ROOT and /usr, lays /etc as an overlay, mounts OEM on /oem, records the booted slot in /run
//! and switches root to systemd. Any failure reboots (after 5 s) so that the
//! boot manager's tries count down; `cairn.debug` waits instead.
//!
//! Pure logic lives in the modules below and is unit-tested on the host;
//! this file is the sequence of side effects.

mod blockdev;
mod cmdline;
mod dm;
mod log;
mod rootfs;
mod sys;
mod verity;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blockdev::{Disk, Found, PartDev};
use cmdline::BootParams;
use gpt_slots::Entry;
use log::{info, warn};
use rootfs::{Item, SYSROOT};

/// How long to wait for the USR and ROOT partitions to appear.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Pause before rebooting on failure, so the message can be read.
const FATAL_DELAY: Duration = Duration::from_secs(5);
/// Name of the verity device (/dev/mapper/usr).
const DM_NAME: &str = "usr";
const DM_UUID: &str = "CAIRN-VERITY-usr";

type Result<T> = std::result::Result<T, String>;

fn main() {
    let mut debug = false;
    let reason = match run(&mut debug) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    fatal(&reason, debug)
}

/// PID 1 must never exit (the kernel would panic): every path ends in an
/// exec, a reboot or an endless wait.
fn fatal(reason: &str, debug: bool) -> ! {
    log::fatal(reason);
    if debug {
        if Path::new("/bin/sh").exists() {
            log::fatal("cairn.debug: starting /bin/sh; the boot stops when it exits");
            if let Err(e) = Command::new("/bin/sh").status() {
                log::fatal(&format!("cairn.debug: /bin/sh: {e}"));
            }
        }
        log::fatal("cairn.debug: not rebooting; waiting forever");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    log::fatal(&format!(
        "rebooting in {} s (cairn.debug on the cmdline stops here instead)",
        FATAL_DELAY.as_secs()
    ));
    std::thread::sleep(FATAL_DELAY);
    sys::sync();
    let e = sys::reboot();
    log::fatal(&format!("reboot failed: {e}"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn run(debug: &mut bool) -> Result<Infallible> {
    sys::set_umask(0o022);
    mount_kernel_filesystems()?;
    info(concat!(
        "cairn-init ",
        env!("CARGO_PKG_VERSION"),
        " started"
    ));

    let cmdline = fs::read_to_string("/proc/cmdline").map_err(|e| format!("/proc/cmdline: {e}"))?;
    *debug = cmdline::debug_requested(&cmdline);
    let params = cmdline::parse(&cmdline)?;
    info(&format!(
        "slot {}, usr partition {}, usrhash {}, verity {}:{}:{}{}",
        params.slot.letter(),
        params.usr_partuuid,
        params.usrhash,
        params.verity.layout.data_blocks(),
        params.verity.layout.hash_offset(),
        if params.verity.salt_hex.is_empty() {
            "-"
        } else {
            &params.verity.salt_hex
        },
        if params.debug { ", debug" } else { "" },
    ));
    if !cmdline::split(&cmdline).iter().any(|(k, _)| k == "panic") {
        warn(
            "no panic= on the kernel command line: a dm-verity corruption panic would hang instead of rebooting",
        );
    }

    let module_failures = load_modules()?;
    let found = wait_for_partitions(&params, &module_failures)?;
    let usr_dev = setup_verity(&params, &found.usr)?;
    mount_sysroot(&found.root, &usr_dev)?;
    mount_oem(found.oem.as_ref());
    record_boot(&params)?;
    switch_root(&params.init)
}

fn mount_kernel_filesystems() -> Result<()> {
    use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID};
    let mounts: [(&str, &str, libc::c_ulong, Option<&str>); 4] = [
        ("/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
        ("/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
        ("/dev", "devtmpfs", MS_NOSUID, Some("mode=0755")),
        ("/run", "tmpfs", MS_NOSUID | MS_NODEV, Some("mode=0755")),
    ];
    for (target, fstype, flags, data) in mounts {
        fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
        match sys::mount(fstype, target, Some(fstype), flags, data) {
            Ok(()) => {}
            // Already mounted (e.g. a kernel with CONFIG_DEVTMPFS_MOUNT).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("mounting {fstype} on {target}: {e}")),
        }
    }
    // Logged afterwards: /dev/kmsg exists only once devtmpfs is mounted.
    info("mounted /proc, /sys, /dev (devtmpfs), /run (tmpfs)");
    Ok(())
}

/// Loads the modules listed by initrd-pack. A module that fails is logged
/// and boot goes on: hardware-specific modules may fail legitimately (e.g.
/// crc32c-intel without SSE4.2: ENODEV), and a missing driver surfaces
/// later as a partition timeout or mount error whose message lists these
/// failures.
fn load_modules() -> Result<Vec<String>> {
    let text = match fs::read_to_string(Path::new("/").join(rootfs::MODULE_LIST)) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            info(&format!("no {}: loading no modules", rootfs::MODULE_LIST));
            return Ok(Vec::new());
        }
        Err(e) => return Err(format!("{}: {e}", rootfs::MODULE_LIST)),
    };
    let list = rootfs::parse_module_list(&text)?;
    let mut failures = Vec::new();
    let (mut loaded, mut present) = (0, 0);
    for (path, format) in &list {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let flags = match format {
            rootfs::ModuleFormat::Plain => 0,
            rootfs::ModuleFormat::Compressed => sys::MODULE_INIT_COMPRESSED_FILE,
        };
        let result = File::open(path).and_then(|f| sys::finit_module(&f, flags));
        match result {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => present += 1,
            Err(e) => {
                // In-kernel decompression needs CONFIG_MODULE_DECOMPRESS;
                // decompressing in cairn-init is not done (ship .ko instead).
                let hint = if *format == rootfs::ModuleFormat::Compressed
                    && e.raw_os_error() == Some(libc::EOPNOTSUPP)
                {
                    " (kernel lacks CONFIG_MODULE_DECOMPRESS: ship uncompressed .ko)"
                } else {
                    ""
                };
                warn(&format!("module {name}: {e}{hint}"));
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    info(&format!(
        "modules: {loaded} loaded, {present} already present, {} failed",
        failures.len()
    ));
    Ok(failures)
}

/// One scan of sysfs: partitions, and the GPTs of their disks.
fn scan_block_devices() -> (Vec<PartDev>, BTreeMap<String, Vec<Entry>>, Vec<String>) {
    let mut parts = Vec::new();
    let mut disks: BTreeMap<String, PathBuf> = BTreeMap::new(); // devname -> sysfs dir
    let Ok(dir) = fs::read_dir("/sys/class/block") else {
        return (
            parts,
            BTreeMap::new(),
            vec!["/sys/class/block unreadable".into()],
        );
    };
    for entry in dir.flatten() {
        let sysdir = entry.path();
        let Some(u) = fs::read_to_string(sysdir.join("uevent"))
            .ok()
            .and_then(|t| blockdev::parse_uevent(&t))
        else {
            continue;
        };
        if u.devtype != "partition" {
            continue;
        }
        // A partition's sysfs dir sits inside its disk's.
        let Some(disk_dir) = fs::canonicalize(&sysdir)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        else {
            continue;
        };
        let Some(disk) = fs::read_to_string(disk_dir.join("uevent"))
            .ok()
            .and_then(|t| blockdev::parse_uevent(&t))
        else {
            continue;
        };
        disks.insert(disk.devname.clone(), disk_dir);
        parts.push(PartDev {
            disk: disk.devname,
            uevent: u,
        });
    }
    let (gpts, problems) = blockdev::read_gpts(disks.into_iter().map(|(devname, sysdir)| {
        let disk = open_disk(&devname, &sysdir);
        (devname, disk)
    }));
    (parts, gpts, problems)
}

/// Opens a disk read-only as sectors of its logical block size.
fn open_disk(devname: &str, sysdir: &Path) -> Result<Disk> {
    let lbs: usize = fs::read_to_string(sysdir.join("queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n: &usize| n >= 512)
        .unwrap_or(512);
    let file = File::open(format!("/dev/{devname}")).map_err(|e| format!("open: {e}"))?;
    Disk::with_sector_size(file, lbs).map_err(|e| format!("size: {e}"))
}

fn wait_for_partitions(params: &BootParams, module_failures: &[String]) -> Result<Found> {
    info(&format!(
        "waiting up to {} s for partition {}",
        PARTITION_TIMEOUT.as_secs(),
        params.usr_partuuid
    ));
    let start = Instant::now();
    let mut next_note = Duration::from_secs(5);
    let found = loop {
        let (parts, gpts, problems) = scan_block_devices();
        if let Some(f) = blockdev::select(&parts, &gpts, params.usr_partuuid)? {
            break f;
        }
        let waited = start.elapsed();
        if waited >= PARTITION_TIMEOUT {
            let seen: Vec<String> = parts.iter().map(|p| p.uevent.devname.clone()).collect();
            let guids: Vec<String> = gpts
                .iter()
                .flat_map(|(d, es)| {
                    es.iter()
                        .map(move |e| format!("{d}#{}={}", e.number, e.unique_guid))
                })
                .collect();
            return Err(format!(
                "partition {} (USR-{}) not found within {} s; partitions seen: [{}]; GPT entries: [{}]; \
                 GPT read errors: [{}]; failed modules: [{}]",
                params.usr_partuuid,
                params.slot.letter().to_ascii_uppercase(),
                PARTITION_TIMEOUT.as_secs(),
                seen.join(" "),
                guids.join(" "),
                problems.join("; "),
                module_failures.join("; "),
            ));
        }
        if waited >= next_note {
            info(&format!(
                "still waiting for {} ({} s)",
                params.usr_partuuid,
                waited.as_secs()
            ));
            next_note += Duration::from_secs(5);
        }
        std::thread::sleep(POLL);
    };
    let want = params.slot.part().number();
    if found.usr.uevent.partn != Some(want) {
        return Err(format!(
            "cairn.usr={} is partition {} on {}, but cairn.slot={} is partition {want}",
            params.usr_partuuid,
            found
                .usr
                .uevent
                .partn
                .map_or("?".to_string(), |n| n.to_string()),
            found.usr.disk,
            params.slot.letter()
        ));
    }
    info(&format!(
        "found USR-{} at /dev/{} and ROOT at /dev/{} after {} ms",
        params.slot.letter().to_ascii_uppercase(),
        found.usr.uevent.devname,
        found.root.uevent.devname,
        start.elapsed().as_millis()
    ));
    Ok(found)
}

/// Checks the tree against the cmdline, creates /dev/mapper/usr, and
/// returns the path to mount.
fn setup_verity(params: &BootParams, usr: &PartDev) -> Result<String> {
    let dev = format!("/dev/{}", usr.uevent.devname);
    let file = File::open(&dev).map_err(|e| format!("open {dev}: {e}"))?;
    let block = |off: u64| -> Result<Vec<u8>> {
        let mut b = vec![0u8; verity::BLOCK as usize];
        file.read_exact_at(&mut b, off)
            .map_err(|e| format!("reading {dev} at byte {off}: {e}"))?;
        Ok(b)
    };
    let p = &params.verity;
    verity::check_superblock(&block(p.layout.hash_offset())?, p)?;
    let actual = verity::root_hash_hex(p, &block(p.layout.top_block_offset())?);
    if actual != params.usrhash {
        return Err(format!(
            "root hash mismatch on {dev}: usrhash={} but the tree's top block hashes to {actual}",
            params.usrhash
        ));
    }
    drop(file);

    let table = verity::table_params((usr.uevent.major, usr.uevent.minor), p, &params.usrhash);
    let sectors = p.layout.target_sectors();
    info(&format!("dm-verity table: 0 {sectors} verity {table}"));
    let (major, minor) = dm::create_readonly(DM_NAME, DM_UUID, sectors, "verity", &table)?;

    // devtmpfs names device-mapper disks dm-<minor>; udev (not here) would
    // add /dev/mapper/<name>, so make that link ourselves, and the node too
    // if devtmpfs has not.
    let node = format!("/dev/dm-{minor}");
    if !Path::new(&node).exists() {
        match sys::mknod_block(&node, major, minor) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("mknod {node}: {e}")),
        }
    }
    fs::create_dir_all("/dev/mapper").map_err(|e| format!("mkdir /dev/mapper: {e}"))?;
    let link = format!("/dev/mapper/{DM_NAME}");
    match std::os::unix::fs::symlink(format!("../dm-{minor}"), &link) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("symlink {link}: {e}")),
    }
    info(&format!(
        "dm-verity device {link} -> {node} ({major}:{minor}) is live"
    ));
    Ok(link)
}

fn mount_sysroot(root: &PartDev, usr_dev: &str) -> Result<()> {
    let root_dev = format!("/dev/{}", root.uevent.devname);
    fs::create_dir_all(SYSROOT).map_err(|e| format!("mkdir {SYSROOT}: {e}"))?;
    sys::mount(&root_dev, SYSROOT, Some("ext4"), 0, None)
        .map_err(|e| format!("mounting {root_dev} (ext4) on {SYSROOT}: {e}"))?;
    info(&format!("mounted {root_dev} (ext4, rw) on {SYSROOT}"));
    // Growing ROOT to the end of the disk is left to systemd (systemd-repart
    // and systemd-growfs units): it is not needed to boot, and doing it here
    // would put a slow, failure-prone step before the boot is marked good.

    let created = apply(rootfs::SKELETON_DIRS)?;
    sys::mount(
        usr_dev,
        &format!("{SYSROOT}/usr"),
        Some("erofs"),
        libc::MS_RDONLY,
        None,
    )
    .map_err(|e| format!("mounting {usr_dev} (erofs) on {SYSROOT}/usr: {e}"))?;
    info(&format!("mounted {usr_dev} (erofs, ro) on {SYSROOT}/usr"));

    let has_lib64 = fs::symlink_metadata(format!("{SYSROOT}/usr/lib64")).is_ok();
    let created = created + apply(&rootfs::skeleton_links(has_lib64))?;
    if created > 0 {
        info(&format!(
            "created {created} missing skeleton entries on ROOT (first boot?)"
        ));
    }

    let factory = format!("{SYSROOT}/{}", rootfs::FACTORY_ETC);
    if !Path::new(&factory).is_dir() {
        return Err(format!("{factory} is missing: /usr has no factory /etc"));
    }
    let opts = rootfs::etc_overlay_options(SYSROOT);
    sys::mount(
        "overlay",
        &format!("{SYSROOT}/etc"),
        Some("overlay"),
        0,
        Some(&opts),
    )
    .map_err(|e| format!("mounting the /etc overlay ({opts}): {e}"))?;
    info(&format!("mounted overlay on {SYSROOT}/etc ({opts})"));
    Ok(())
}

/// Mounts OEM read-only on /oem, as oem.mount would. Done here because
/// systemd can only mount it once udev has announced the device, late in a
/// boot, and cairn-config (and so every login) waits for /oem. systemd takes
/// the mount over as oem.mount. Not fatal: oem.mount still mounts it then.
fn mount_oem(oem: Option<&PartDev>) {
    let Some(oem) = oem else {
        warn("no OEM partition on the boot disk yet; leaving /oem to oem.mount");
        return;
    };
    let dev = format!("/dev/{}", oem.uevent.devname);
    let target = format!("{SYSROOT}{}", rootfs::OEM_MOUNTPOINT);
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let result = fs::create_dir_all(&target)
        .map_err(|e| format!("mkdir {target}: {e}"))
        .and_then(|()| {
            sys::mount(&dev, &target, Some("ext4"), flags, None)
                .map_err(|e| format!("mounting {dev} (ext4, ro) on {target}: {e}"))
        });
    match result {
        Ok(()) => info(&format!("mounted {dev} (OEM, ext4, ro) on {target}")),
        Err(e) => warn(&format!("{e}; leaving /oem to oem.mount")),
    }
}

/// Creates the missing items under SYSROOT; existing paths are left alone.
fn apply(items: &[Item]) -> Result<usize> {
    let mut created = 0;
    for item in items {
        let (rel, is_dir) = match item {
            Item::Dir(p, _) => (*p, true),
            Item::Symlink(p, _) => (*p, false),
        };
        let path = format!("{SYSROOT}/{rel}");
        match fs::symlink_metadata(&path) {
            Ok(m) => {
                if is_dir && !m.is_dir() {
                    warn(&format!("{path} exists but is not a directory; left alone"));
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{path}: {e}")),
        }
        let r = match item {
            Item::Dir(_, mode) => fs::create_dir(&path)
                // Explicit chmod: the umask would strip e.g. /tmp's 1777.
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(*mode))),
            Item::Symlink(_, target) => std::os::unix::fs::symlink(target, &path),
        };
        r.map_err(|e| format!("creating {path}: {e}"))?;
        created += 1;
    }
    Ok(created)
}

/// Files for the booted system's units (the updater, mark-good): which slot
/// and which partition this boot uses. /run is moved into the new root, and
/// systemd accepts a /run that is already mounted.
fn record_boot(params: &BootParams) -> Result<()> {
    use disk_layout::run;
    let at = |rel: &str| format!("/{rel}");
    let write = |rel: &str, text: String| {
        fs::write(at(rel), text).map_err(|e| format!("writing {}: {e}", at(rel)))
    };
    fs::create_dir_all(at(run::DIR)).map_err(|e| format!("mkdir {}: {e}", at(run::DIR)))?;
    write(run::BOOTED_SLOT, format!("{}\n", params.slot.letter()))?;
    write(run::USR_PARTUUID, format!("{}\n", params.usr_partuuid))?;
    // `usrhash=` on the cmdline also makes systemd-veritysetup-generator
    // (in the booted system, not only in an initrd) wait 90 s for DPS-style
    // partitions named after the hash, then fail "Verity Protection Setup
    // for usr", leaving the system degraded. /usr is already verity-backed,
    // so mask it for this boot; /run outranks /usr/lib for generators.
    fs::create_dir_all(rootfs::MASKED_GENERATORS_DIR)
        .map_err(|e| format!("mkdir {}: {e}", rootfs::MASKED_GENERATORS_DIR))?;
    for g in rootfs::MASKED_GENERATORS {
        let link = format!("{}/{g}", rootfs::MASKED_GENERATORS_DIR);
        match std::os::unix::fs::symlink("/dev/null", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("masking {link}: {e}")),
        }
    }
    info(&format!(
        "wrote {} ({}) and {}",
        at(run::BOOTED_SLOT),
        params.slot.letter(),
        at(run::USR_PARTUUID)
    ));
    Ok(())
}

fn switch_root(init: &str) -> Result<Infallible> {
    let target = format!("{SYSROOT}{init}");
    // Checked before anything is moved, while failing is still clean.
    if !Path::new(&target).exists() {
        return Err(format!("init {init} does not exist in the new root"));
    }
    info(&format!("switching root to {SYSROOT}, exec {init}"));
    for m in ["/dev", "/proc", "/sys", "/run"] {
        sys::move_mount(m, &format!("{SYSROOT}{m}"))
            .map_err(|e| format!("moving {m} to {SYSROOT}{m}: {e}"))?;
    }
    std::env::set_current_dir(SYSROOT).map_err(|e| format!("chdir {SYSROOT}: {e}"))?;
    // Free the initramfs's memory, as switch_root(8) does; only after the
    // mounts have moved, and never crossing into another filesystem.
    let freed = delete_initramfs();
    sys::move_mount(".", "/").map_err(|e| format!("moving {SYSROOT} to /: {e}"))?;
    sys::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    match freed {
        Ok(n) => info(&format!("freed the initramfs ({n} entries); exec {init}")),
        Err(e) => warn(&format!("initramfs not freed: {e}")),
    }
    // The kernel hands init's argv (e.g. `single`) to us; pass it on.
    let err = Command::new(init).args(std::env::args_os().skip(1)).exec();
    Err(format!("exec {init}: {err}"))
}

fn delete_initramfs() -> Result<usize> {
    let magic = sys::statfs_type("/").map_err(|e| format!("statfs /: {e}"))?;
    if magic != sys::RAMFS_MAGIC && magic != sys::TMPFS_MAGIC {
        return Err("/ is not a ramfs or tmpfs".into());
    }
    let dev = fs::symlink_metadata("/")
        .map_err(|e| format!("stat /: {e}"))?
        .dev();
    let mut n = 0;
    let entries = fs::read_dir("/").map_err(|e| format!("reading /: {e}"))?;
    for e in entries.flatten() {
        remove_tree(&e.path(), dev, &mut n);
    }
    Ok(n)
}

/// Best effort: skips (and keeps) anything on another filesystem.
fn remove_tree(path: &Path, dev: u64, n: &mut usize) {
    let Ok(m) = fs::symlink_metadata(path) else {
        return;
    };
    if m.dev() != dev {
        return;
    }
    if m.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                remove_tree(&e.path(), dev, n);
            }
        }
        if fs::remove_dir(path).is_ok() {
            *n += 1;
        }
    } else if fs::remove_file(path).is_ok() {
        *n += 1;
    }
}
