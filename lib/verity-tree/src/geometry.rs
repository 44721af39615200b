//! The one definition of the tree's geometry: how many levels a data size
//! needs, where each level sits in the hash area, where the hash area sits on
//! the partition, the root hash, and the device-mapper table built from them.

use alloc::format;
use alloc::string::String;

use sha2::{Digest, Sha256};

use crate::{ALGORITHM, BLOCK_SIZE, BS, DIGEST_SIZE};

/// log2 of the digests per hash block (4096 / 32 = 128).
const HASH_PER_BLOCK_BITS: u32 = 7;

/// Most levels a tree can have: data sizes fit 64 bits, so there are fewer
/// than 2^52 data blocks, and 8 levels of 128-way fan-out cover 2^56.
pub const MAX_LEVELS: usize = 8;

/// Why a data size or hash area placement cannot hold a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    #[error("data_blocks must be at least 1")]
    NoData,
    #[error("{data_blocks} data blocks do not fit a 64-bit byte size")]
    TooLarge { data_blocks: u64 },
    #[error("hash_offset {hash_offset} is not a multiple of {BLOCK_SIZE}")]
    Unaligned { hash_offset: u64 },
    #[error("hash_offset {hash_offset} overlaps the {data_size} bytes of data")]
    Overlap { hash_offset: u64, data_size: u64 },
    #[error("hash area ends past 2^64")]
    HashAreaOverflow,
    #[error("only 4096-byte blocks are supported (got {data}/{hash})")]
    BlockSize { data: u32, hash: u32 },
    #[error("hash_size {hash_size} does not match {expected} for {data_blocks} data blocks")]
    HashSize {
        hash_size: u64,
        expected: u64,
        data_blocks: u64,
    },
}

/// One level of the tree, in hash blocks from the start of the hash area
/// (block 0 is the superblock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub start: u64,
    pub blocks: u64,
}

/// The tree for a number of data blocks: its levels and the size of the hash
/// area. Levels are numbered from the bottom (level 0 hashes the data) but
/// stored top first, right after the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    data_blocks: u64,
    depth: usize,
    levels: [Level; MAX_LEVELS],
    /// Hash area in blocks, superblock included.
    hash_blocks: u64,
}

impl Geometry {
    pub fn new(data_blocks: u64) -> Result<Geometry, GeometryError> {
        if data_blocks == 0 {
            return Err(GeometryError::NoData);
        }
        if data_blocks.checked_mul(BLOCK_SIZE).is_none() {
            return Err(GeometryError::TooLarge { data_blocks });
        }
        // Same rule as veritysetup's hash_levels(): the smallest L with
        // (data_blocks - 1) >> (7 L) == 0. At most 8, as data_blocks < 2^52.
        let mut depth = 0usize;
        while (data_blocks - 1)
            .checked_shr(HASH_PER_BLOCK_BITS * depth as u32)
            .unwrap_or(0)
            != 0
        {
            depth += 1;
        }
        let mut levels = [Level {
            start: 0,
            blocks: 0,
        }; MAX_LEVELS];
        // Block 0 is the superblock; levels follow top first.
        let mut pos = 1u64;
        for i in (0..depth).rev() {
            let shift = HASH_PER_BLOCK_BITS * (i as u32 + 1);
            let per_block = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
            let blocks = data_blocks.div_ceil(per_block);
            levels[i] = Level { start: pos, blocks };
            pos += blocks;
        }
        Ok(Geometry {
            data_blocks,
            depth,
            levels,
            hash_blocks: pos,
        })
    }

    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// Bytes of data covered by the tree.
    pub fn data_size(&self) -> u64 {
        self.data_blocks * BLOCK_SIZE
    }

    /// The levels, level 0 (the one hashing the data) first. Empty for a
    /// single data block.
    pub fn levels(&self) -> &[Level] {
        &self.levels[..self.depth]
    }

    /// Size of the hash area in blocks, superblock included.
    pub fn hash_blocks(&self) -> u64 {
        self.hash_blocks
    }

    /// Size of the hash area in bytes, superblock included.
    pub fn hash_size(&self) -> u64 {
        self.hash_blocks * BLOCK_SIZE
    }
}

/// Size in bytes of the hash area (superblock included) for `data_blocks` data blocks.
pub fn hash_size(data_blocks: u64) -> Result<u64, GeometryError> {
    Ok(Geometry::new(data_blocks)?.hash_size())
}

/// A tree placed on a partition: data from byte 0, the hash area (superblock,
/// then the tree) at `hash_offset` on the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    geometry: Geometry,
    hash_offset: u64,
}

impl Layout {
    /// Checks that the hash area is block-aligned, after the data, and ends
    /// below 2^64.
    pub fn new(data_blocks: u64, hash_offset: u64) -> Result<Layout, GeometryError> {
        let geometry = Geometry::new(data_blocks)?;
        if !hash_offset.is_multiple_of(BLOCK_SIZE) {
            return Err(GeometryError::Unaligned { hash_offset });
        }
        if hash_offset < geometry.data_size() {
            return Err(GeometryError::Overlap {
                hash_offset,
                data_size: geometry.data_size(),
            });
        }
        if hash_offset.checked_add(geometry.hash_size()).is_none() {
            return Err(GeometryError::HashAreaOverflow);
        }
        Ok(Layout {
            geometry,
            hash_offset,
        })
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn data_blocks(&self) -> u64 {
        self.geometry.data_blocks
    }

    /// Byte offset of the superblock.
    pub fn hash_offset(&self) -> u64 {
        self.hash_offset
    }

    /// Byte offset of the end of the hash area.
    pub fn hash_end(&self) -> u64 {
        self.hash_offset + self.geometry.hash_size()
    }

    /// Length of the verity target in 512-byte sectors.
    pub fn target_sectors(&self) -> u64 {
        self.geometry.data_size() / 512
    }

    /// `<hash_start_block>` of the table: hash blocks from the start of the
    /// hash device to the root block of the tree. veritysetup writes a
    /// 512-byte superblock padded to one hash block at `--hash-offset`, and
    /// the tree follows it, so this is `hash_offset / 4096 + 1`
    /// (libcryptsetup's `VERITY_hash_offset_block`; kernel doc:
    /// device-mapper/verity.rst).
    pub fn hash_start_block(&self) -> u64 {
        hash_start_block(self.hash_offset)
    }

    /// Byte offset of the block whose salted hash is the root hash: the
    /// tree's single top block, or data block 0 when there is only one data
    /// block (the tree then has no levels).
    pub fn top_block_offset(&self) -> u64 {
        match self.geometry.levels().last() {
            Some(top) => self.hash_offset + top.start * BLOCK_SIZE,
            None => 0,
        }
    }

    /// The `verity` target parameters (the part after `0 <sectors> verity`):
    /// `1 <data_dev> <hash_dev> 4096 4096 <blocks> <hash start> sha256 <root> <salt>`,
    /// then the optional arguments (such as `panic_on_corruption`) after their
    /// count. An empty salt is written `-`.
    pub fn table_params(
        &self,
        data_dev: &str,
        hash_dev: &str,
        root_hash_hex: &str,
        salt_hex: &str,
        opt_args: &[&str],
    ) -> String {
        table_params(
            self.data_blocks(),
            self.hash_start_block(),
            data_dev,
            hash_dev,
            root_hash_hex,
            salt_hex,
            opt_args,
        )
    }

    /// A whole table line: `0 <sectors> verity <params>`.
    pub fn dm_table(
        &self,
        data_dev: &str,
        hash_dev: &str,
        root_hash_hex: &str,
        salt_hex: &str,
        opt_args: &[&str],
    ) -> String {
        format!(
            "0 {} verity {}",
            self.target_sectors(),
            self.table_params(data_dev, hash_dev, root_hash_hex, salt_hex, opt_args)
        )
    }
}

/// See [`Layout::hash_start_block`].
pub(crate) fn hash_start_block(hash_offset: u64) -> u64 {
    hash_offset / BLOCK_SIZE + 1
}

/// See [`Layout::table_params`].
pub(crate) fn table_params(
    data_blocks: u64,
    hash_start_block: u64,
    data_dev: &str,
    hash_dev: &str,
    root_hash_hex: &str,
    salt_hex: &str,
    opt_args: &[&str],
) -> String {
    let salt = if salt_hex.is_empty() { "-" } else { salt_hex };
    let mut t = format!(
        "1 {data_dev} {hash_dev} {BLOCK_SIZE} {BLOCK_SIZE} {data_blocks} {hash_start_block} {ALGORITHM} {root_hash_hex} {salt}"
    );
    if !opt_args.is_empty() {
        t.push_str(&format!(" {} {}", opt_args.len(), opt_args.join(" ")));
    }
    t
}

/// `sha256(salt ‖ …)` ready to take a block.
pub(crate) fn salted(salt: &[u8]) -> Sha256 {
    Sha256::new_with_prefix(salt)
}

/// Writes `sha256(salt ‖ block)` of each 4096-byte block of `input` into `out`.
pub(crate) fn hash_blocks(salted: &Sha256, input: &[u8], out: &mut [u8]) {
    for (block, digest) in input
        .chunks_exact(BS)
        .zip(out.chunks_exact_mut(DIGEST_SIZE))
    {
        let mut h = salted.clone();
        h.update(block);
        digest.copy_from_slice(&h.finalize());
    }
}

/// The hash of one block in the tree above it: `sha256(salt ‖ block)`. Of a
/// data block, its level-0 entry (the delta index's block key); of the top
/// block, the root hash.
pub fn block_hash(salt: &[u8], block: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut h = salted(salt);
    h.update(block);
    h.finalize().into()
}

/// Root hash of a tree whose top block (or, for a one-block image, the only
/// data block) is `top`.
pub fn root_hash(salt: &[u8], top: &[u8]) -> [u8; DIGEST_SIZE] {
    block_hash(salt, top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_known_sizes() {
        // (data blocks, hash area blocks incl. superblock)
        for (n, blocks) in [
            (1, 1),
            (2, 2),
            (128, 2),
            (129, 4),
            (300, 5),
            (16384, 130),
            (16385, 133),
        ] {
            assert_eq!(
                Geometry::new(n).map(|g| g.hash_blocks()).ok(),
                Some(blocks),
                "{n}"
            );
        }
        assert_eq!(Geometry::new(0), Err(GeometryError::NoData));
        assert!(matches!(
            Geometry::new(1 << 52),
            Err(GeometryError::TooLarge { .. })
        ));
        // The largest data size still has a tree within MAX_LEVELS.
        let g = Geometry::new((1 << 52) - 1).expect("largest");
        assert_eq!(g.levels().len(), MAX_LEVELS);
        assert_eq!(g.levels().last().map(|l| l.blocks), Some(1));
    }

    #[test]
    fn levels_are_stored_top_first() {
        // 300 blocks: sb, L1 (1 block), L0 (3 blocks).
        let g = Geometry::new(300).expect("geometry");
        assert_eq!(
            g.levels(),
            [
                Level {
                    start: 2,
                    blocks: 3
                },
                Level {
                    start: 1,
                    blocks: 1
                }
            ]
        );
        assert!(Geometry::new(1).expect("one").levels().is_empty());
    }

    #[test]
    fn rejects_bad_layout() {
        assert_eq!(
            Layout::new(10, 4096),
            Err(GeometryError::Overlap {
                hash_offset: 4096,
                data_size: 40960
            })
        );
        assert_eq!(
            Layout::new(1, 4097),
            Err(GeometryError::Unaligned { hash_offset: 4097 })
        );
        assert_eq!(
            Layout::new(1, u64::MAX / 4096 * 4096),
            Err(GeometryError::HashAreaOverflow)
        );
    }

    fn layout() -> Layout {
        Layout::new(300, 300 * 4096).expect("layout")
    }

    #[test]
    fn table_matches_veritysetup() {
        // `veritysetup open --hash-offset=1228800 ...` then `dmsetup table`
        // gives hash_start_block 301: one block after the superblock.
        let l = layout();
        assert_eq!(l.target_sectors(), 2400);
        assert_eq!(l.hash_start_block(), 301);
        assert_eq!(l.hash_end(), 305 * 4096);
        assert_eq!(
            l.table_params("254:2", "254:2", "ab", "a1b2", &["panic_on_corruption"]),
            "1 254:2 254:2 4096 4096 300 301 sha256 ab a1b2 1 panic_on_corruption"
        );
        assert!(
            l.table_params("8:2", "8:2", "ab", "", &["panic_on_corruption"])
                .contains(" sha256 ab - 1 ")
        );
        assert_eq!(
            l.dm_table("/dev/vda3", "/dev/vda3", "ab", "cd", &[]),
            "0 2400 verity 1 /dev/vda3 /dev/vda3 4096 4096 300 301 sha256 ab cd"
        );
    }

    #[test]
    fn root_hash_is_salted_sha256() {
        // sha256("abc") with an empty salt is the FIPS 180 test vector.
        assert_eq!(
            hex::encode(root_hash(b"", b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(root_hash(b"a", b"bc"), root_hash(b"", b"abc"));
        assert_eq!(layout().top_block_offset(), 301 * 4096);
        let one = Layout::new(1, 4096).expect("one block");
        assert_eq!(one.top_block_offset(), 0);
    }
}
