//! A streaming dm-verity check of an image fed in order.
//!
//! The updater reads a slot back chunk by chunk right behind its writer, so
//! the check must work on the image as a stream of bytes in image order
//! instead of on a file (as `verify` does, which would be a second full pass
//! over the slot). It computes the level-0 digests of the data blocks as they
//! pass, compares the stored level 0 against them when the hash area passes,
//! keeps the small upper levels and the superblock, and at the end recomputes
//! the upper levels and the root hash (which the caller has from a signed
//! source). The result equals `verify`; the tests below check it against
//! `format`.
//!
//! Memory: 32 bytes per data block (8 MiB for a 1 GiB /usr) plus the upper levels.

use alloc::vec;
use alloc::vec::Vec;

use sha2::Sha256;

use crate::geometry::{Geometry, GeometryError, hash_blocks, salted};
use crate::superblock::{SuperblockError, check_superblock};
use crate::{BLOCK_SIZE, BS, DIGEST_SIZE, VerityInfo};

/// Why the image does not match its verity parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("unsupported or inconsistent verity parameters: {0}")]
    Params(GeometryError),
    #[error("the image ends at byte {got}, before the end of its hash area at {need}")]
    Short { got: u64, need: u64 },
    #[error("verity superblock: {0}")]
    Superblock(SuperblockError),
    #[error("data block {block} does not match its level-0 hash")]
    DataBlock { block: u64 },
    #[error("hash block {block} of tree level {level} does not match the level below it")]
    HashBlock { level: usize, block: u64 },
    #[error(
        "root hash mismatch: expected {}, the image gives {}",
        hex::encode(.expected),
        hex::encode(.actual)
    )]
    Root {
        expected: [u8; DIGEST_SIZE],
        actual: [u8; DIGEST_SIZE],
    },
}

/// Feeds the image in order with [`VerityStream::update`], then [`VerityStream::finish`].
pub struct VerityStream {
    info: VerityInfo,
    geometry: Geometry,
    salted: Sha256,
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
    mismatch: Option<StreamError>,
}

impl VerityStream {
    pub fn new(info: &VerityInfo) -> Result<VerityStream, StreamError> {
        let geometry = *info.layout().map_err(StreamError::Params)?.geometry();
        let levels = geometry.levels();
        let (l0_len, head_blocks) = match levels.first() {
            Some(l0) => ((l0.blocks * BLOCK_SIZE) as usize, l0.start),
            None => (DIGEST_SIZE, 1),
        };
        Ok(VerityStream {
            info: *info,
            geometry,
            salted: salted(&info.salt),
            pos: 0,
            partial: Vec::new(),
            level0: vec![0; l0_len],
            head: Vec::with_capacity((head_blocks * BLOCK_SIZE) as usize),
            mismatch: None,
        })
    }

    fn data_blocks(&mut self, first: u64, bytes: &[u8]) {
        let at = first as usize * DIGEST_SIZE;
        let out = &mut self.level0[at..at + bytes.len() / BS * DIGEST_SIZE];
        hash_blocks(&self.salted, bytes, out);
    }

    /// The next bytes of the image, in order.
    pub fn update(&mut self, mut bytes: &[u8]) {
        // Data area.
        let data_len = self.geometry.data_size();
        if self.pos < data_len && !bytes.is_empty() {
            let take = ((data_len - self.pos) as usize).min(bytes.len());
            let (data, rest) = bytes.split_at(take);
            let mut data = data;
            let mut block = self.pos / BLOCK_SIZE;
            if !self.partial.is_empty() {
                let need = BS - self.partial.len();
                let n = need.min(data.len());
                self.partial.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.partial.len() == BS {
                    let full = core::mem::take(&mut self.partial);
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
        // of the tree (the caller checks them some other way).
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
        let head_len = self
            .geometry
            .levels()
            .first()
            .map_or(BLOCK_SIZE, |l0| l0.start * BLOCK_SIZE);
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
                self.mismatch = Some(StreamError::DataBlock {
                    block: ((off + i) / DIGEST_SIZE) as u64,
                });
            }
        }
    }

    /// Checks the superblock, every tree level and the root hash.
    pub fn finish(self) -> Result<(), StreamError> {
        let need = self.info.hash_offset + self.info.hash_size;
        if self.pos < need {
            return Err(StreamError::Short {
                got: self.pos,
                need,
            });
        }
        if let Some(e) = self.mismatch {
            return Err(e);
        }
        check_superblock(&self.head, self.info.data_blocks, &self.info.salt)
            .map_err(StreamError::Superblock)?;
        let levels = self.geometry.levels();
        let mut below = self.level0;
        for (level, l) in levels.iter().enumerate().skip(1) {
            let mut computed = vec![0u8; (l.blocks * BLOCK_SIZE) as usize];
            hash_blocks(&self.salted, &below, &mut computed);
            let s = (l.start * BLOCK_SIZE) as usize;
            let stored = &self.head[s..s + computed.len()];
            if let Some(i) = stored
                .chunks_exact(BS)
                .zip(computed.chunks_exact(BS))
                .position(|(a, b)| a != b)
            {
                return Err(StreamError::HashBlock {
                    level,
                    block: i as u64,
                });
            }
            below = computed;
        }
        let mut root = [0u8; DIGEST_SIZE];
        if levels.is_empty() {
            // The single data block's digest is the root hash.
            root.copy_from_slice(&below[..DIGEST_SIZE]);
        } else {
            // `below` is now the top level: one block.
            hash_blocks(&self.salted, &below[..BS], &mut root);
        }
        if root != self.info.root_hash {
            return Err(StreamError::Root {
                expected: self.info.root_hash,
                actual: root,
            });
        }
        Ok(())
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    /// An image of `blocks` data blocks (+ `gap` bytes) with its tree, made by
    /// `format` (the builder's code, byte-identical to veritysetup).
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
        let info = crate::format(
            &mut f,
            &crate::Params {
                data_blocks: blocks,
                hash_offset: blocks * BLOCK_SIZE + gap,
                salt: [9; 32],
                uuid: [1; 16],
            },
        )
        .unwrap();
        let mut all = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut all).unwrap();
        (all, info)
    }

    fn stream(img: &[u8], info: &VerityInfo, piece: usize) -> Result<(), StreamError> {
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
        let geometry = Geometry::new(300).unwrap();
        let levels = geometry.levels();
        let l0 = area + (levels[0].start * BLOCK_SIZE) as usize;
        let l1 = area + (levels[1].start * BLOCK_SIZE) as usize;
        type Expect = fn(&StreamError) -> bool;
        let table: [(&str, usize, Expect); 4] = [
            ("data", 4096 * 7 + 3, |e| {
                matches!(e, StreamError::DataBlock { block: 7 })
            }),
            ("level 0", l0 + 32 * 5, |e| {
                matches!(e, StreamError::DataBlock { block: 5 })
            }),
            ("level 1", l1 + 1, |e| {
                matches!(e, StreamError::HashBlock { level: 1, .. })
            }),
            ("superblock salt", area + 88, |e| {
                matches!(e, StreamError::Superblock(_))
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
        let e = stream(&img, &wrong, 4096).unwrap_err();
        assert!(matches!(e, StreamError::Root { .. }));
        assert!(
            e.to_string().contains(&wrong.root_hash_hex()),
            "the message names the expected hash: {e}"
        );
        assert!(matches!(
            stream(&img[..img.len() - 1], &info, 4096),
            Err(StreamError::Short { .. })
        ));
    }

    #[test]
    fn refuses_inconsistent_parameters() {
        let (_, info) = image(3, 0);
        let cases = [
            VerityInfo {
                data_blocks: 0,
                ..info
            },
            VerityInfo {
                hash_offset: info.hash_offset + 1,
                ..info
            },
            VerityInfo {
                hash_offset: 0,
                ..info
            },
            VerityInfo {
                hash_size: info.hash_size + 4096,
                ..info
            },
            VerityInfo {
                hash_block_size: 512,
                ..info
            },
        ];
        for bad in cases {
            assert!(
                matches!(VerityStream::new(&bad), Err(StreamError::Params(_))),
                "{bad:?}"
            );
        }
    }
}
