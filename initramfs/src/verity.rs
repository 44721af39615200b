//! dm-verity: the device-mapper table for /usr, and checks of the on-disk
//! superblock and root hash made before the table is loaded.
//!
//! Why check before loading: the table uses `panic_on_corruption`, so a root
//! hash that does not match the tree would panic the kernel on the first
//! read, and a kernel without `panic=N` then hangs instead of rebooting. A
//! mismatch found here is a clean FATAL and a reboot, which counts the slot's
//! tries down. The checks read unsigned data only to compare it with the
//! signed cmdline; the table is built from the cmdline alone.

use sha2::{Digest, Sha256};

use crate::cmdline::{VerityParams, hex_decode};

/// Data and hash block size of Cairn's /usr verity (4096).
pub const BLOCK: u64 = disk_layout::VERITY_BLOCK_SIZE as u64;

/// Length of the verity target in 512-byte sectors.
pub fn target_sectors(p: &VerityParams) -> u64 {
    p.data_blocks * (BLOCK / 512)
}

/// `<hash_start_block>` of the table: hash blocks from the start of the hash
/// device to the root block of the tree. veritysetup writes a 512-byte
/// superblock padded to one hash block at `--hash-offset`, and the tree
/// follows it, so this is `hash_offset / 4096 + 1` (libcryptsetup's
/// `VERITY_hash_offset_block`; kernel doc: device-mapper/verity.rst).
pub fn hash_start_block(p: &VerityParams) -> u64 {
    p.hash_offset / BLOCK + 1
}

/// The `verity` target parameters (the part after `0 <len> verity`).
/// Data and hash device are the same partition: the tree follows the data.
pub fn table_params(dev: (u32, u32), p: &VerityParams, root_hash_hex: &str) -> String {
    let salt = if p.salt_hex.is_empty() {
        "-"
    } else {
        &p.salt_hex
    };
    format!(
        "1 {maj}:{min} {maj}:{min} {BLOCK} {BLOCK} {} {} sha256 {root_hash_hex} {salt} 1 panic_on_corruption",
        p.data_blocks,
        hash_start_block(p),
        maj = dev.0,
        min = dev.1,
    )
}

/// Checks the veritysetup superblock (`struct verity_sb`) read from
/// `hash_offset` against the cmdline.
pub fn check_superblock(sb: &[u8], p: &VerityParams) -> Result<(), String> {
    if sb.len() < 512 {
        return Err("verity superblock truncated".into());
    }
    if &sb[0..8] != b"verity\0\0" {
        return Err(format!(
            "no verity superblock at byte {} (cairn.verity hash_offset wrong, or the slot is empty)",
            p.hash_offset
        ));
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let mut u64b = [0u8; 8];
    u64b.copy_from_slice(&sb[72..80]);
    let data_blocks = u64::from_le_bytes(u64b);
    let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
    let alg_end = sb[32..64].iter().position(|&b| b == 0).unwrap_or(32);
    let alg = &sb[32..32 + alg_end];
    let mut problems = Vec::new();
    if u32_at(8) != 1 {
        problems.push(format!("version {}", u32_at(8)));
    }
    if u32_at(12) != 1 {
        problems.push(format!("hash type {} (want 1, normal)", u32_at(12)));
    }
    if alg != b"sha256" {
        problems.push(format!("algorithm {:?}", String::from_utf8_lossy(alg)));
    }
    if u64::from(u32_at(64)) != BLOCK || u64::from(u32_at(68)) != BLOCK {
        problems.push(format!("block sizes {}/{}", u32_at(64), u32_at(68)));
    }
    if data_blocks != p.data_blocks {
        problems.push(format!(
            "data_blocks {data_blocks}, cmdline says {}",
            p.data_blocks
        ));
    }
    let salt = hex_decode(&p.salt_hex).unwrap_or_default();
    if salt_size > 256 || sb[88..88 + salt_size] != salt[..] {
        problems.push("salt differs from the cmdline".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "verity superblock does not match the cmdline: {}",
            problems.join(", ")
        ))
    }
}

/// Root hash of a tree whose top block (or, for a one-block image, the only
/// data block) is `top`: `sha256(salt || top)`.
pub fn root_hash(salt: &[u8], top: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(top);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Byte offset of the block whose salted hash is the root hash: the tree's
/// single top block, or data block 0 when there is only one data block (the
/// tree then has no levels).
pub fn top_block_offset(p: &VerityParams) -> u64 {
    if p.data_blocks == 1 {
        0
    } else {
        hash_start_block(p) * BLOCK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> VerityParams {
        VerityParams {
            data_blocks: 300,
            hash_offset: 300 * 4096,
            salt_hex: "a1b2".into(),
        }
    }

    #[test]
    fn table_matches_veritysetup() {
        // `veritysetup open --hash-offset=1228800 ...` then `dmsetup table`
        // gives hash_start_block 301: one block after the superblock.
        let p = params();
        assert_eq!(target_sectors(&p), 2400);
        assert_eq!(hash_start_block(&p), 301);
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

    fn superblock(p: &VerityParams) -> Vec<u8> {
        let mut sb = vec![0u8; 4096];
        sb[0..8].copy_from_slice(b"verity\0\0");
        sb[8..12].copy_from_slice(&1u32.to_le_bytes());
        sb[12..16].copy_from_slice(&1u32.to_le_bytes());
        sb[32..38].copy_from_slice(b"sha256");
        sb[64..68].copy_from_slice(&4096u32.to_le_bytes());
        sb[68..72].copy_from_slice(&4096u32.to_le_bytes());
        sb[72..80].copy_from_slice(&p.data_blocks.to_le_bytes());
        let salt = hex_decode(&p.salt_hex).unwrap();
        sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        sb[88..88 + salt.len()].copy_from_slice(&salt);
        sb
    }

    #[test]
    fn superblock_is_checked_against_the_cmdline() {
        let p = params();
        check_superblock(&superblock(&p), &p).unwrap();
        let mut other = p.clone();
        other.data_blocks = 299;
        let e = check_superblock(&superblock(&other), &p).unwrap_err();
        assert!(e.contains("data_blocks 299"), "{e}");
        other = p.clone();
        other.salt_hex = "a1b3".into();
        let e = check_superblock(&superblock(&other), &p).unwrap_err();
        assert!(e.contains("salt"), "{e}");
        let e = check_superblock(&[0u8; 4096], &p).unwrap_err();
        assert!(e.contains("no verity superblock"), "{e}");
    }

    #[test]
    fn root_hash_is_salted_sha256() {
        // sha256("abc") with an empty salt is the FIPS 180 test vector.
        assert_eq!(
            root_hash(b"", b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(root_hash(b"a", b"bc"), root_hash(b"", b"abc"));
        let mut p = params();
        assert_eq!(top_block_offset(&p), 301 * 4096);
        p.data_blocks = 1;
        assert_eq!(top_block_offset(&p), 0);
    }
}
