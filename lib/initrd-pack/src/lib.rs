//! initramfs packing: a deterministic cpio newc writer, the kernel module
//! dependency closure, and [`pack`], which puts cairn-init, its modules and
//! the base directories into a zstd-compressed initramfs.
//!
//! Layout of a packed initramfs (the contract with cairn-init):
//! - `init` — the static cairn-init binary, mode 0755;
//! - `dev/console` (c 5:1) and `dev/null` (c 1:3), so the kernel can give
//!   /init a console before devtmpfs is mounted;
//! - empty `proc sys run sysroot` mount points;
//! - `lib/modules/<kver>/<path from modules.dep>` for each module, and
//!   `etc/cairn-modules`: the load order, one path per line relative to the
//!   initramfs root (`lib/modules/<kver>/kernel/...`), so /init needs neither
//!   `uname` nor modules.dep.

pub mod cpio;
pub mod modules;

use std::path::{Path, PathBuf};

use disk_layout::Arch;

pub use cpio::{Archive, CpioError};
pub use modules::{
    Compression, KernelModule, ModuleClosure, ModuleIndex, ModulesError, canonical_name,
};

/// zstd level of the initramfs: 19 is the highest non-"ultra" level, whose
/// window (8 MiB) the kernel's streaming decompressor handles.
pub const ZSTD_LEVEL: i32 = 19;

/// Path of the module load-order list inside the initramfs.
pub const MODULE_LIST_PATH: &str = disk_layout::initramfs::MODULE_LIST;

/// Empty directories every Cairn initramfs has (mount points for /init).
pub const BASE_DIRS: [&str; 6] = ["dev", "etc", "proc", "sys", "run", "sysroot"];

/// What to pack.
#[derive(Clone, Debug)]
pub struct PackSpec {
    /// The static cairn-init binary for `arch`.
    pub init: PathBuf,
    /// Checked against the ELF header of `init`.
    pub arch: Arch,
    /// Kernel modules to ship, if any.
    pub modules: Option<ModulesSpec>,
    /// mtime of every entry (0, or SOURCE_DATE_EPOCH).
    pub mtime: u32,
}

/// Modules from one kernel's tree.
#[derive(Clone, Debug)]
pub struct ModulesSpec {
    /// `<rootfs>/usr/lib/modules/<kver>`.
    pub dir: PathBuf,
    /// Module names (`-` and `_` are equal), in the order the board wants
    /// them loaded; dependencies are added before each.
    pub names: Vec<String>,
}

/// Errors from [`pack`] and friends.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable /init: {reason}")]
    BadInit { path: PathBuf, reason: String },
    #[error(transparent)]
    Modules(#[from] ModulesError),
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error("zstd compression failed: {0}")]
    Compress(std::io::Error),
}

/// Builds the uncompressed archive; also returns the module closure that went
/// into it, so callers can log or record it.
pub fn build_archive(spec: &PackSpec) -> Result<(Archive, Option<ModuleClosure>), PackError> {
    let mut a = Archive::new(spec.mtime);
    for d in BASE_DIRS {
        a.add_dir(d, 0o755)?;
    }
    a.add_char_device("dev/console", 0o600, 5, 1)?;
    a.add_char_device("dev/null", 0o666, 1, 3)?;

    let init = read(&spec.init)?;
    check_static_elf(&init, spec.arch).map_err(|reason| PackError::BadInit {
        path: spec.init.clone(),
        reason,
    })?;
    a.add_file("init", 0o755, init)?;

    let closure = match &spec.modules {
        None => None,
        Some(m) => {
            let closure = ModuleIndex::load(&m.dir)?.resolve(&m.names)?;
            let mut list = String::new();
            for module in &closure.load_order {
                let dest = format!("lib/modules/{}/{}", closure.kver, module.path);
                a.add_file(&dest, 0o644, read(&m.dir.join(&module.path))?)?;
                list.push_str(&dest);
                list.push('\n');
            }
            a.add_file(MODULE_LIST_PATH, 0o644, list.into_bytes())?;
            Some(closure)
        }
    };
    Ok((a, closure))
}

/// zstd-compresses an archive deterministically: fixed level, one thread,
/// content size and checksum in the frame (as the zstd CLI writes them).
pub fn compress(cpio: &[u8]) -> Result<Vec<u8>, PackError> {
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(PackError::Compress)?;
    c.include_checksum(true).map_err(PackError::Compress)?;
    c.include_contentsize(true).map_err(PackError::Compress)?;
    c.compress(cpio).map_err(PackError::Compress)
}

/// The compressed initramfs for `spec`. Same input, same bytes.
pub fn pack(spec: &PackSpec) -> Result<Vec<u8>, PackError> {
    let (archive, _) = build_archive(spec)?;
    compress(&archive.to_bytes())
}

/// [`pack`] into a file.
pub fn pack_to_file(spec: &PackSpec, out: &Path) -> Result<(), PackError> {
    let bytes = pack(spec)?;
    std::fs::write(out, bytes).map_err(|source| PackError::Write {
        path: out.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, PackError> {
    std::fs::read(path).map_err(|source| PackError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A dynamically linked or wrong-arch /init only fails at boot, as a kernel
/// panic ("No working init found"); refuse it here instead.
fn check_static_elf(elf: &[u8], arch: Arch) -> Result<(), String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    // Both Cairn arches are 64-bit little-endian.
    if elf.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let machine = u16_at(18).ok_or("truncated ELF header")?;
    if machine != arch.elf_machine() {
        return Err(format!(
            "ELF machine {machine}, expected {} for {}",
            arch.elf_machine(),
            arch.name()
        ));
    }
    let phoff = u64_at(32).ok_or("truncated ELF header")?;
    let phentsize = u16_at(54).ok_or("truncated ELF header")? as usize;
    let phnum = u16_at(56).ok_or("truncated ELF header")? as usize;
    let phoff = usize::try_from(phoff).map_err(|_| "bad program header offset")?;
    for i in 0..phnum {
        let p_type = u32_at(phoff + i * phentsize).ok_or("truncated program headers")?;
        if p_type == PT_INTERP {
            return Err("dynamically linked (has PT_INTERP); build it for the musl target".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal static ELF64 header for x86_64 with one PT_LOAD.
    fn fake_elf(machine: u16, p_type: u32) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        e[18..20].copy_from_slice(&machine.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        e[64..68].copy_from_slice(&p_type.to_le_bytes());
        e
    }

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/md/dm-verity.ko.xz: kernel/md/dm-bufio.ko kernel/md/dm-mod.ko
kernel/md/dm-bufio.ko: kernel/md/dm-mod.ko
kernel/md/dm-mod.ko:
";

    fn fixture() -> (tempfile::TempDir, PackSpec) {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        std::fs::write(&init, fake_elf(62, 1)).unwrap();
        let m = dir.path().join("lib/modules/6.1.0-t");
        for line in DEP.lines() {
            let path = line.split(':').next().unwrap();
            let f = m.join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, format!("module {path}")).unwrap();
        }
        std::fs::write(m.join("modules.dep"), DEP).unwrap();
        std::fs::write(
            m.join("modules.builtin"),
            "kernel/crypto/sha256_generic.ko\n",
        )
        .unwrap();
        let spec = PackSpec {
            init,
            arch: Arch::X86_64,
            modules: Some(ModulesSpec {
                dir: m,
                names: ["dm_verity", "sha256-generic", "ext4"]
                    .map(String::from)
                    .to_vec(),
            }),
            mtime: 0,
        };
        (dir, spec)
    }

    #[test]
    fn packs_are_reproducible_and_readable() {
        let (_dir, spec) = fixture();
        let a = pack(&spec).unwrap();
        let b = pack(&spec).unwrap();
        assert_eq!(a, b, "two packs of the same input differ");
        assert_eq!(&a[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd frame magic");

        let cpio = zstd::stream::decode_all(&a[..]).unwrap();
        let entries = cpio::read_newc(&cpio).unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n);
        for d in BASE_DIRS {
            assert_eq!(get(d).unwrap().mode, 0o040_755, "{d}");
        }
        assert_eq!(get("dev/console").unwrap().rdev, (5, 1));
        assert_eq!(get("dev/null").unwrap().rdev, (1, 3));
        assert_eq!(get("init").unwrap().mode, 0o100_755);
        assert_eq!(get("init").unwrap().data, fake_elf(62, 1));
        let list = String::from_utf8(get(MODULE_LIST_PATH).unwrap().data.clone()).unwrap();
        let k = "lib/modules/6.1.0-t/kernel";
        assert_eq!(
            list,
            format!(
                "{k}/md/dm-mod.ko\n{k}/md/dm-bufio.ko\n{k}/md/dm-verity.ko.xz\n\
                 {k}/lib/crc16.ko\n{k}/fs/mbcache.ko\n{k}/fs/jbd2/jbd2.ko\n{k}/fs/ext4/ext4.ko\n"
            )
        );
        for line in list.lines() {
            let e = get(line).unwrap();
            assert_eq!(e.data, format!("module {}", &line[20..]).into_bytes());
        }
        // Entries are sorted and numbered.
        let names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn mtime_changes_the_bytes() {
        let (_dir, mut spec) = fixture();
        let a = pack(&spec).unwrap();
        spec.mtime = 1_700_000_000;
        assert_ne!(a, pack(&spec).unwrap());
    }

    #[test]
    fn refuses_a_bad_init_and_unknown_modules() {
        let (dir, mut spec) = fixture();
        std::fs::write(&spec.init, fake_elf(183, 1)).unwrap();
        let e = pack(&spec).unwrap_err().to_string();
        assert!(e.contains("ELF machine 183"), "{e}");
        std::fs::write(&spec.init, fake_elf(62, 3)).unwrap();
        let e = pack(&spec).unwrap_err().to_string();
        assert!(e.contains("PT_INTERP"), "{e}");
        std::fs::write(&spec.init, b"#!/bin/sh\n").unwrap();
        assert!(matches!(pack(&spec), Err(PackError::BadInit { .. })));

        std::fs::write(&spec.init, fake_elf(62, 1)).unwrap();
        if let Some(m) = spec.modules.as_mut() {
            m.names.push("virtio-blk".into());
        }
        let e = pack(&spec).unwrap_err().to_string();
        assert!(e.contains("virtio_blk") && e.contains("6.1.0-t"), "{e}");

        // Without modules there is no list and no lib/.
        spec.modules = None;
        let out = dir.path().join("initrd");
        pack_to_file(&spec, &out).unwrap();
        let cpio = zstd::stream::decode_all(&std::fs::read(&out).unwrap()[..]).unwrap();
        let entries = cpio::read_newc(&cpio).unwrap();
        assert!(entries.iter().all(|e| !e.name.starts_with("lib")));
        assert!(entries.iter().all(|e| e.name != MODULE_LIST_PATH));
    }
}
