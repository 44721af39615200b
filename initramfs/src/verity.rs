//! dm-verity: the device-mapper table for /usr, and checks of the on-disk
//! superblock and root hash made before the table is loaded. The geometry,
//! the superblock format and the root hash are `verity-tree`'s; this module
//! only applies them to the cmdline.
//!
//! Why check before loading: the table uses `panic_on_corruption`, so a root
//! hash that does not match the tree would panic the kernel on the first
//! read, and a kernel without `panic=N` then hangs instead of rebooting. A
//! mismatch found here is a clean FATAL and a reboot, which counts the slot's
//! tries down. The checks read unsigned data only to compare it with the
//! signed cmdline; the table is built from the cmdline alone.

use verity_tree::SuperblockError;

use crate::cmdline::VerityParams;

/// Data and hash block size of Cairn's /usr verity (4096).
pub const BLOCK: u64 = verity_tree::BLOCK_SIZE;

/// The `verity` target parameters (the part after `0 <len> verity`).
/// Data and hash device are the same partition: the tree follows the data.
pub fn table_params(dev: (u32, u32), p: &VerityParams, root_hash_hex: &str) -> String {
    let dev = format!("{}:{}", dev.0, dev.1);
    p.layout.table_params(
        &dev,
        &dev,
        root_hash_hex,
        &p.salt_hex,
        &["panic_on_corruption"],
    )
}

/// Checks the veritysetup superblock read from `hash_offset` against the
/// cmdline.
pub fn check_superblock(sb: &[u8], p: &VerityParams) -> Result<(), String> {
    match verity_tree::check_superblock(sb, p.layout.data_blocks(), &p.salt()) {
        Ok(_) => Ok(()),
        Err(SuperblockError::NoMagic) => Err(format!(
            "no verity superblock at byte {} (cairn.verity hash_offset wrong, or the slot is empty)",
            p.layout.hash_offset()
        )),
        Err(SuperblockError::Mismatch(m)) => {
            Err(format!("verity superblock does not match the cmdline: {m}"))
        }
        Err(e) => Err(format!("verity superblock: {e}")),
    }
}

/// The root hash, as lower-case hex, of a tree whose top block (read at
/// [`verity_tree::Layout::top_block_offset`]) is `top`.
pub fn root_hash_hex(p: &VerityParams, top: &[u8]) -> String {
    verity_tree::root_hash(&p.salt(), top)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use verity_tree::{Layout, Superblock};

    fn params() -> VerityParams {
        VerityParams {
            layout: Layout::new(300, 300 * 4096).unwrap(),
            salt_hex: "a1b2".into(),
        }
    }

    #[test]
    fn table_matches_veritysetup() {
        // `veritysetup open --hash-offset=1228800 ...` then `dmsetup table`
        // gives hash_start_block 301: one block after the superblock.
        let p = params();
        assert_eq!(p.layout.target_sectors(), 2400);
        assert_eq!(
            table_params((254, 2), &p, "ab"),
            "1 254:2 254:2 4096 4096 300 301 sha256 ab a1b2 1 panic_on_corruption"
        );
        let nosalt = VerityParams {
            salt_hex: String::new(),
            ..p
        };
        assert!(table_params((8, 2), &nosalt, "ab").contains(" sha256 ab - 1 "));
    }

    fn superblock(data_blocks: u64, salt: &[u8]) -> Vec<u8> {
        let mut block = vec![0u8; 4096];
        let sb = Superblock::new([0; 16], data_blocks, salt)
            .encode()
            .unwrap();
        block[..sb.len()].copy_from_slice(&sb);
        block
    }

    #[test]
    fn superblock_is_checked_against_the_cmdline() {
        let p = params();
        check_superblock(&superblock(300, &[0xa1, 0xb2]), &p).unwrap();
        let e = check_superblock(&superblock(299, &[0xa1, 0xb2]), &p).unwrap_err();
        assert!(
            e.contains("does not match the cmdline: data_blocks 299"),
            "{e}"
        );
        let e = check_superblock(&superblock(300, &[0xa1, 0xb3]), &p).unwrap_err();
        assert!(e.contains("salt"), "{e}");
        let e = check_superblock(&[0u8; 4096], &p).unwrap_err();
        assert!(e.contains("no verity superblock at byte 1228800"), "{e}");
        let e = check_superblock(&[0u8; 100], &p).unwrap_err();
        assert!(e.contains("needs 512 bytes"), "{e}");
    }

    #[test]
    fn root_hash_uses_the_cmdline_salt() {
        let p = params();
        // sha256(0xa1 0xb2 "abc")
        let mut salted_top = vec![0xa1, 0xb2];
        salted_top.extend_from_slice(b"abc");
        assert_eq!(
            root_hash_hex(&p, b"abc"),
            root_hash_hex(
                &VerityParams {
                    salt_hex: String::new(),
                    ..p.clone()
                },
                &salted_top
            )
        );
        assert_eq!(
            root_hash_hex(
                &VerityParams {
                    salt_hex: String::new(),
                    ..p
                },
                b"abc"
            ),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
