//! A streaming dm-verity check of the usr image while it is read back.
//!
//! The slot is read back chunk by chunk right behind the writer, so the check
//! must work on the image as a stream of bytes in image order instead of on a
//! file (as `verity_tree::verify` does, which would be a second full pass over
//! the slot). It computes the level-0 digests of the data blocks as they pass,
//! compares the stored level 0 against them when the hash area passes, keeps
//! the small upper levels and the superblock, and at the end recomputes the
//! upper levels and the root hash, which is signed in the manifest. The result
//! equals `verity_tree::verify` (same geometry as veritysetup format 1, sha256,
//! 4096-byte blocks); the tests below check it against `verity_tree::format`.
//!
//! Memory: 32 bytes per data block (8 MiB for a 1 GiB /usr) plus the upper levels.

use sha2::{Digest, Sha256};
use verity_tree::{BLOCK_SIZE, DIGEST_SIZE, VerityInfo};

const BS: usize = BLOCK_SIZE as usize;
/// 4096 / 32 digests per hash block.
const PER_BLOCK_BITS: u32 = 7;

/// Why the image does not match its verity parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerityError {
    #[error("unsupported or inconsistent verity parameters: {0}")]
    Params(String),
    #[error("the image ends at byte {got}, before the end of its hash area at {need}")]
    Short { got: u64, need: u64 },
    #[error("verity superblock: {0}")]
    Superblock(String),
    #[error("data block {block} does not match its level-0 hash")]
    DataBlock { block: u64 },
    #[error("hash block {block} of tree level {level} does not match the level below it")]
    HashBlock { level: usize, block: u64 },
    #[error("root hash mismatch: expected {expected}, the image gives {actual}")]
    Root { expected: String, actual: String },
}

/// Tree levels, bottom first: `(first block in the hash area, block count)`.
/// Block 0 of the hash area is the superblock; levels follow top first.
fn levels(data_blocks: u64) -> Vec<(u64, u64)> {
    let mut n = 0u32;
    while (data_blocks - 1)
        .checked_shr(PER_BLOCK_BITS * n)
        .unwrap_or(0)
        != 0
    {
        n += 1;
    }
    let mut out = vec![(0, 0); n as usize];
    let mut pos = 1;
    for i in (0..n).rev() {
        let per = 1u64
            .checked_shl(PER_BLOCK_BITS * (i + 1))
            .unwrap_or(u64::MAX);
        let count = data_blocks.div_ceil(per);
        out[i as usize] = (pos, count);
        pos += count;
    }
    out
}

/// Feeds the image in order with [`VerityStream::update`], then [`VerityStream::finish`].
pub struct VerityStream {
    info: VerityInfo,
    salted: Sha256,
    levels: Vec<(u64, u64)>,
    data_len: u64,
    /// Bytes of the image consumed so far.
    pos: u64,
    /// A data block split across two `update` calls.
    partial: Vec<u8>,
    /// Computed level 0, zero-padded to whole hash blocks (with no tree: the
    /// single data block's digest).
    level0: Vec<u8>,
    /// The stored superblock and upper levels (the hash area before level 0).
    head: Vec<u8>,
    /// First stored level-0 mismatch, reported by `finish` (the stream goes on
    /// so one code path handles every outcome).
    mismatch: Option<VerityError>,
}

impl VerityStream {
    pub fn new(info: &VerityInfo) -> Result<VerityStream, VerityError> {
        if u64::from(info.data_block_size) != BLOCK_SIZE
            || u64::from(info.hash_block_size) != BLOCK_SIZE
        {
            return Err(VerityError::Params("only 4096-byte blocks".into()));
        }
        let data_len = info
            .data_blocks
            .checked_mul(BLOCK_SIZE)
            .filter(|_| info.data_blocks > 0)
            .ok_or_else(|| VerityError::Params(format!("{} data blocks", info.data_blocks)))?;
        if !info.hash_offset.is_multiple_of(BLOCK_SIZE) || info.hash_offset < data_len {
            return Err(VerityError::Params(format!(
                "hash offset {} overlaps the data or is unaligned",
                info.hash_offset
            )));
        }
        let expected = verity_tree::hash_size(info.data_blocks)
            .map_err(|e| VerityError::Params(e.to_string()))?;
        if info.hash_size != expected {
            return Err(VerityError::Params(format!(
                "hash size {} instead of {expected}",
                info.hash_size
            )));
        }
        let levels = levels(info.data_blocks);
        let (l0_blocks, head_blocks) = match levels.first() {
            Some(&(start, count)) => (count, start),
            None => (0, 1),
        };
        let l0_len = if levels.is_empty() {
            DIGEST_SIZE
        } else {
            (l0_blocks * BLOCK_SIZE) as usize
        };
        Ok(VerityStream {
            info: *info,
            salted: Sha256::new_with_prefix(info.salt),
            levels,
            data_len,
            pos: 0,
            partial: Vec::new(),
            level0: vec![0; l0_len],
            head: Vec::with_capacity((head_blocks * BLOCK_SIZE) as usize),
            mismatch: None,
        })
    }

    fn hash_block(&self, block: &[u8], out: &mut [u8]) {
        let mut h = self.salted.clone();
        h.update(block);
        out.copy_from_slice(&h.finalize());
    }

    fn data_blocks(&mut self, first: u64, bytes: &[u8]) {
        for (i, block) in bytes.chunks_exact(BS).enumerate() {
            let at = (first as usize + i) * DIGEST_SIZE;
            let mut d = [0u8; DIGEST_SIZE];
            self.hash_block(block, &mut d);
            self.level0[at..at + DIGEST_SIZE].copy_from_slice(&d);
        }
    }

    /// The next bytes of the image, in order.
    pub fn update(&mut self, mut bytes: &[u8]) {
        // Data area.
        if self.pos < self.data_len && !bytes.is_empty() {
            let take = ((self.data_len - self.pos) as usize).min(bytes.len());
            let (data, rest) = bytes.split_at(take);
            let mut data = data;
            let mut block = self.pos / BLOCK_SIZE;
            if !self.partial.is_empty() {
                let need = BS - self.partial.len();
                let n = need.min(data.len());
                self.partial.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.partial.len() == BS {
                    let full = std::mem::take(&mut self.partial);
                    self.data_blocks(block, &full);
                    block += 1;
                }
            }
            let whole = data.len() / BS * BS;
            self.data_blocks(block, &data[..whole]);
            self.partial.extend_from_slice(&data[whole..]);
            self.pos += take as u64;
            bytes = rest;
        }
        // The gap between data and hash area, and bytes after it, are not part
        // of the tree (the caller checks them against the signed chunks).
        let area_start = self.info.hash_offset;
        let area_end = area_start + self.info.hash_size;
        let start = self.pos;
        let end = start + bytes.len() as u64;
        self.pos = end;
        let (lo, hi) = (start.max(area_start), end.min(area_end));
        if lo >= hi {
            return;
        }
        let piece = &bytes[(lo - start) as usize..(hi - start) as usize];
        let head_len = self.levels.first().map_or(BLOCK_SIZE, |l| l.0 * BLOCK_SIZE);
        let rel = lo - area_start;
        // Superblock and upper levels: kept for `finish`.
        let in_head = (head_len.saturating_sub(rel) as usize).min(piece.len());
        self.head.extend_from_slice(&piece[..in_head]);
        // Level 0: compared right away against the computed digests.
        let l0 = &piece[in_head..];
        if !l0.is_empty() && self.mismatch.is_none() {
            let off = (rel + in_head as u64 - head_len) as usize;
            let want = &self.level0[off..off + l0.len()];
            if let Some(i) = l0.iter().zip(want).position(|(a, b)| a != b) {
                self.mismatch = Some(VerityError::DataBlock {
                    block: ((off + i) / DIGEST_SIZE) as u64,
                });
            }
        }
    }

    /// Checks the superblock, every tree level and the root hash.
    pub fn finish(self) -> Result<(), VerityError> {
        let need = self.info.hash_offset + self.info.hash_size;
        if self.pos < need {
            return Err(VerityError::Short {
                got: self.pos,
                need,
            });
        }
        if let Some(e) = self.mismatch {
            return Err(e);
        }
        let sb = verity_tree::Superblock::parse(&self.head)
            .map_err(|e| VerityError::Superblock(e.to_string()))?;
        let checks = [
            ("version", sb.version == 1),
            ("hash type", sb.hash_type == 1),
            ("algorithm", sb.algorithm == "sha256"),
            (
                "data block size",
                u64::from(sb.data_block_size) == BLOCK_SIZE,
            ),
            (
                "hash block size",
                u64::from(sb.hash_block_size) == BLOCK_SIZE,
            ),
            ("data blocks", sb.data_blocks == self.info.data_blocks),
            ("salt", sb.salt == self.info.salt),
        ];
        if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(VerityError::Superblock(format!(
                "{field} differs from the signed parameters"
            )));
        }
        let mut below = self.level0;
        for level in 1..self.levels.len() {
            let (start, count) = self.levels[level];
            let mut computed = vec![0u8; (count * BLOCK_SIZE) as usize];
            for (block, out) in below
                .chunks_exact(BS)
                .zip(computed.chunks_exact_mut(DIGEST_SIZE))
            {
                let mut h = self.salted.clone();
                h.update(block);
                out.copy_from_slice(&h.finalize());
            }
            let s = (start * BLOCK_SIZE) as usize;
            let stored = &self.head[s..s + computed.len()];
            if let Some(i) = stored
                .chunks_exact(BS)
                .zip(computed.chunks_exact(BS))
                .position(|(a, b)| a != b)
            {
                return Err(VerityError::HashBlock {
                    level,
                    block: i as u64,
                });
            }
            below = computed;
        }
        let root: [u8; DIGEST_SIZE] = if self.levels.is_empty() {
            let mut r = [0u8; DIGEST_SIZE];
            r.copy_from_slice(&below[..DIGEST_SIZE]);
            r
        } else {
            // `below` is now the top level: one block.
            let mut h = self.salted.clone();
            h.update(&below[..BS]);
            h.finalize().into()
        };
        if root != self.info.root_hash {
            return Err(VerityError::Root {
                expected: hex::encode(self.info.root_hash),
                actual: hex::encode(root),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An image of `blocks` data blocks (+ `gap` bytes) with its tree, made by
    /// `verity_tree::format` (the builder's code, byte-identical to veritysetup).
    fn image(blocks: u64, gap: u64) -> (Vec<u8>, VerityInfo) {
        let mut f = tempfile::tempfile().unwrap();
        let mut data = vec![0u8; (blocks * BLOCK_SIZE) as usize];
        let mut s = blocks | 1;
        for b in data.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *b = s as u8;
        }
        f.write_all(&data).unwrap();
        f.write_all(&vec![0x5a; gap as usize]).unwrap();
        let info = verity_tree::format(
            &mut f,
            &verity_tree::Params {
                data_blocks: blocks,
                hash_offset: blocks * BLOCK_SIZE + gap,
                salt: [9; 32],
                uuid: [1; 16],
            },
        )
        .unwrap();
        let mut all = Vec::new();
        use std::io::{Read, Seek};
        f.rewind().unwrap();
        f.read_to_end(&mut all).unwrap();
        (all, info)
    }

    fn stream(img: &[u8], info: &VerityInfo, piece: usize) -> Result<(), VerityError> {
        let mut v = VerityStream::new(info)?;
        for p in img.chunks(piece) {
            v.update(p);
        }
        v.finish()
    }

    #[test]
    fn accepts_what_verity_tree_formats() {
        // (data blocks, gap before the hash area, piece size fed at a time)
        let table = [
            (1, 0, 4096),
            (1, 4096, 1000),
            (2, 0, 5000),
            (128, 0, 65536),
            (129, 8192, 4096 * 3 + 17),
            (128 * 128 + 1, 0, 1 << 20),
        ];
        for (blocks, gap, piece) in table {
            let (img, info) = image(blocks, gap);
            assert_eq!(stream(&img, &info, piece), Ok(()), "{blocks} blocks");
        }
    }

    #[test]
    fn refuses_every_kind_of_damage() {
        let (img, info) = image(300, 0);
        let area = info.hash_offset as usize;
        let levels = levels(300);
        let l0 = area + (levels[0].0 * BLOCK_SIZE) as usize;
        let l1 = area + (levels[1].0 * BLOCK_SIZE) as usize;
        type Expect = fn(&VerityError) -> bool;
        let table: [(&str, usize, Expect); 4] = [
            ("data", 4096 * 7 + 3, |e| {
                matches!(e, VerityError::DataBlock { block: 7 })
            }),
            ("level 0", l0 + 32 * 5, |e| {
                matches!(e, VerityError::DataBlock { block: 5 })
            }),
            ("level 1", l1 + 1, |e| {
                matches!(e, VerityError::HashBlock { level: 1, .. })
            }),
            ("superblock salt", area + 88, |e| {
                matches!(e, VerityError::Superblock(_))
            }),
        ];
        for (what, at, ok) in table {
            let mut bad = img.clone();
            bad[at] ^= 1;
            let e = stream(&bad, &info, 65536).unwrap_err();
            assert!(ok(&e), "{what}: {e}");
        }
        let mut wrong = info;
        wrong.root_hash[0] ^= 1;
        assert!(matches!(
            stream(&img, &wrong, 4096),
            Err(VerityError::Root { .. })
        ));
        assert!(matches!(
            stream(&img[..img.len() - 1], &info, 4096),
            Err(VerityError::Short { .. })
        ));
    }
}
