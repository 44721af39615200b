//! The image builder finds the key slot in cairn-boot.efi by its magic, so
//! the magic must occur exactly once in each built binary. The UEFI builds
//! are not made by `cargo test`; this checks whichever exist.

use std::path::PathBuf;

fn target_dirs() -> Vec<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.push(manifest.join("../target"));
    dirs
}

#[test]
fn key_slot_magic_occurs_once_in_every_built_efi() {
    let mut checked = 0;
    for dir in target_dirs() {
        for triple in ["x86_64-unknown-uefi", "aarch64-unknown-uefi"] {
            for profile in ["release", "debug"] {
                let efi = dir.join(triple).join(profile).join("cairn-boot.efi");
                let Ok(mut bin) = std::fs::read(&efi) else {
                    continue;
                };
                let n = bin
                    .windows(16)
                    .filter(|w| *w == boot_sig::KEY_SLOT_MAGIC)
                    .count();
                assert_eq!(n, 1, "{}: key slot magic found {n} times", efi.display());
                boot_sig::embed_keys(&mut bin, &[[0x42; 32]]).expect("embed");
                checked += 1;
            }
        }
    }
    if checked == 0 {
        eprintln!(
            "SKIP: no cairn-boot.efi built (cargo build -p cairn-boot --target x86_64-unknown-uefi --release)"
        );
    }
}
