//! Packs an initramfs from the command line (for manual and VM tests; the
//! image builder calls the library directly).
//!
//! usage: mkinitrd ARCH INIT OUT [MODULES_DIR MODULE...]
//! e.g.   mkinitrd x86_64 target/.../cairn-init initrd /tmp/rootfs/usr/lib/modules/6.1.0-50-amd64 \
//!            crc32c_generic virtio_pci virtio_blk dm_verity erofs ext4 overlay

use std::path::PathBuf;
use std::process::ExitCode;

use disk_layout::Arch;
use initrd_pack::{ModulesSpec, PackSpec, build_archive, compress};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() == 4 {
        eprintln!("usage: mkinitrd ARCH INIT OUT [MODULES_DIR MODULE...]");
        return ExitCode::from(2);
    }
    let Some(arch) = Arch::from_name(&args[0]) else {
        eprintln!("unknown arch {:?}", args[0]);
        return ExitCode::from(2);
    };
    let mtime = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let spec = PackSpec {
        init: PathBuf::from(&args[1]),
        arch,
        modules: (args.len() > 4).then(|| ModulesSpec {
            dir: PathBuf::from(&args[3]),
            names: args[4..].to_vec(),
        }),
        mtime,
    };
    let result = build_archive(&spec).and_then(|(archive, closure)| {
        if let Some(c) = &closure {
            for m in &c.load_order {
                eprintln!("module {} ({:?}): {}", m.name, m.compression, m.path);
            }
            for b in &c.builtin {
                eprintln!("module {b}: built in");
            }
        }
        let bytes = compress(&archive.to_bytes())?;
        std::fs::write(&args[2], &bytes).map_err(|source| initrd_pack::PackError::Write {
            path: PathBuf::from(&args[2]),
            source,
        })?;
        eprintln!("wrote {} ({} bytes)", args[2], bytes.len());
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkinitrd: {e}");
            ExitCode::FAILURE
        }
    }
}
