//! The tree built from level-0 digests, which may arrive in any order: the
//! one computation of the levels above level 0 and the root, used by
//! `format` (digests of a file) and by the updater's delta path (digests of
//! the blocks it assembles, so the hash area is computed, never fetched).

use alloc::vec;
use alloc::vec::Vec;

use sha2::Sha256;

use crate::geometry::{Geometry, GeometryError, hash_blocks, salted};
use crate::{BLOCK_SIZE, BS, DIGEST_SIZE};

/// Level-0 digests of a data area, filled in by [`TreeBuilder::add_blocks`].
pub struct TreeBuilder {
    geo: Geometry,
    salted: Sha256,
    /// 32 bytes per data block, in order.
    level0: Vec<u8>,
}

impl TreeBuilder {
    pub fn new(data_blocks: u64, salt: &[u8]) -> Result<TreeBuilder, GeometryError> {
        let geo = Geometry::new(data_blocks)?;
        let len = usize::try_from(data_blocks.saturating_mul(DIGEST_SIZE as u64))
            .map_err(|_| GeometryError::TooLarge { data_blocks })?;
        Ok(TreeBuilder {
            geo,
            salted: salted(salt),
            level0: vec![0; len],
        })
    }

    /// Hashes the whole blocks of `bytes`, the first being data block
    /// `first`; blocks past the data area are ignored.
    pub fn add_blocks(&mut self, first: u64, bytes: &[u8]) {
        let data_blocks = self.geo.data_blocks();
        if first >= data_blocks {
            return;
        }
        let n = ((bytes.len() / BS) as u64).min(data_blocks - first) as usize;
        let at = first as usize * DIGEST_SIZE;
        hash_blocks(
            &self.salted,
            &bytes[..n * BS],
            &mut self.level0[at..at + n * DIGEST_SIZE],
        );
    }

    /// The hash area as on disk (its first block, the superblock's, left
    /// zero) and the root hash.
    pub fn finish(self) -> (Vec<u8>, [u8; DIGEST_SIZE]) {
        let mut area = vec![0u8; self.geo.hash_size() as usize];
        let Some(l0) = self.geo.levels().first() else {
            // One data block: no tree, the root is that block's digest.
            let mut root = [0u8; DIGEST_SIZE];
            root.copy_from_slice(&self.level0[..DIGEST_SIZE]);
            return (area, root);
        };
        let at = (l0.start * BLOCK_SIZE) as usize;
        area[at..at + self.level0.len()].copy_from_slice(&self.level0);
        let root = upper_levels(&self.geo, &self.salted, &mut area);
        (area, root)
    }
}

/// Fills the levels above level 0 of `area` (laid out as on disk, level 0
/// in place) and returns the root hash. The tree must have a level.
pub(crate) fn upper_levels(geo: &Geometry, salted: &Sha256, area: &mut [u8]) -> [u8; DIGEST_SIZE] {
    let levels = geo.levels();
    let block_range = |block: u64, len: u64| {
        let start = (block * BLOCK_SIZE) as usize;
        start..start + len as usize
    };
    for pair in levels.windows(2) {
        let (below, level) = (pair[0], pair[1]);
        // Levels are stored top first, so the level above sits before the one below.
        let (upper, lower) = area.split_at_mut((below.start * BLOCK_SIZE) as usize);
        let input = &lower[..(below.blocks * BLOCK_SIZE) as usize];
        let out = &mut upper[block_range(level.start, below.blocks * DIGEST_SIZE as u64)];
        hash_blocks(salted, input, out);
    }
    let top = levels[levels.len() - 1];
    let mut root = [0u8; DIGEST_SIZE];
    hash_blocks(salted, &area[block_range(top.start, BLOCK_SIZE)], &mut root);
    root
}
