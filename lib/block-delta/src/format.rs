//! The block index: its binary form, its consistency rules, and where each
//! frame sits in the blocks image's chunk files.

use std::collections::HashMap;

use release_manifest::Image;

/// The dm-verity data block size: the unit the verity tree checks.
pub const BLOCK_SIZE: u64 = 4096;
/// First bytes of an index; the last byte is the index format. Format 3
/// keys blocks by their dm-verity level-0 hash (`sha256(salt ‖ block)`) and
/// carries the salt, so a host whose booted image shares the salt reads its
/// block keys from its own verified hash tree instead of hashing its data.
pub const MAGIC: [u8; 8] = *b"CAIRNBD\x03";
/// Format 2: plain sha256 digests (decoded still; [`Index::digests`] says
/// [`DigestKind::Sha256`]). It replaced format 1's reserved header field by
/// the frame hash length.
pub const MAGIC_V2: [u8; 8] = *b"CAIRNBD\x02";
/// Format 1: every frame record carries the whole sha256 (decoded still).
const MAGIC_V1: [u8; 8] = *b"CAIRNBD\x01";
pub const DEFAULT_DIGEST_LEN: usize = 8;
pub const MIN_DIGEST_LEN: usize = 8;
pub const MAX_DIGEST_LEN: usize = 32;
/// One block per frame. Measured on qemu-x86_64 + htop (1518 of 27732 blocks
/// missing, scattered EROFS metadata among them): 16-block frames fetched
/// 9.5 MB, 8: 6.6 MB, 4: 4.7 MB, 2: 3.6 MB, 1: 3.1 MB. With format 1's
/// 36-byte frame record the 1-block index was 1.2 MB (1.6 % of the payload);
/// with a [`DEFAULT_FRAME_HASH_LEN`]-byte hash it is 12 bytes a frame.
pub const DEFAULT_FRAME_BLOCKS: u32 = 1;
/// Bytes of a frame's compressed sha256 kept in the index: zstd only sees
/// fetched bytes whose hash matches this signed prefix (forging one is a
/// 2^64 second preimage), and every block written is then checked against
/// the signed chunk sha256 before it is written and the signed dm-verity root
/// before the flip, so the prefix guards the decoder, not the slot.
pub const DEFAULT_FRAME_HASH_LEN: usize = 8;
/// Fewer bytes would let the decoder see bytes no signature vouches for.
pub const MIN_FRAME_HASH_LEN: usize = 8;
/// Frames larger than this are refused: a host decodes one frame at a time.
const MAX_FRAME_BLOCKS: u32 = 1024;
const HEADER_SIZE: usize = 48;
/// Format 3 adds the 32-byte dm-verity salt after the format 2 header.
const HEADER_SIZE_V3: usize = HEADER_SIZE + SALT_SIZE;
/// The dm-verity salt length Cairn images use.
pub const SALT_SIZE: usize = 32;

/// What the block digests of an index are the prefix of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// `sha256(block)` (formats 1 and 2).
    Sha256,
    /// `sha256(salt ‖ block)`: the image's dm-verity level-0 hash (format 1
    /// of dm-verity prepends the salt), so equal to the level-0 entry of any
    /// image built with the same salt (format 3).
    Verity { salt: [u8; SALT_SIZE] },
}

impl DigestKind {
    /// The full digest of one 4 KiB block of this kind.
    pub fn digest(&self, block: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        match self {
            DigestKind::Sha256 => sha2::Sha256::digest(block).into(),
            DigestKind::Verity { salt } => verity_tree::block_hash(salt, block),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("block index: {0}; the release was built wrong or the index is corrupt: rebuild it")]
    Malformed(String),
    #[error(
        "block index does not match image {image:?}: {problem}; the release is inconsistent: rebuild it"
    )]
    Mismatch { image: String, problem: String },
}

fn malformed(s: impl Into<String>) -> FormatError {
    FormatError::Malformed(s.into())
}

/// The release image the index describes, by name: `usr` → `usr.blockindex`.
pub fn index_image_name(image: &str) -> String {
    format!("{image}.blockindex")
}

/// The image holding the distinct blocks: `usr` → `usr.blocks`.
pub fn blocks_image_name(image: &str) -> String {
    format!("{image}.blocks")
}

/// One zstd frame of the blocks image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Compressed size.
    pub zsize: u32,
    /// sha256 of the compressed bytes, checked before decoding: its first
    /// [`Index::frame_hash_len`] bytes, the rest zero.
    pub zsha256: [u8; 32],
}

/// The most zstd may emit for a frame of `plain` bytes (ZSTD_COMPRESSBOUND).
pub fn frame_bound(plain: u64) -> u64 {
    let small = if plain < (128 << 10) {
        ((128 << 10) - plain) >> 11
    } else {
        0
    };
    plain + (plain >> 8) + small
}

/// The block index of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    kind: DigestKind,
    digest_len: usize,
    frame_blocks: u32,
    frame_hash_len: usize,
    /// `digest_len` bytes per image block, in image order.
    digests: Vec<u8>,
    frames: Vec<Frame>,
    /// Derived: the distinct-block ordinal of every image block (its place in
    /// the blocks image). Not encoded: the first occurrence rule fixes it.
    ordinals: Vec<u32>,
    unique: u64,
}

impl Index {
    /// An index from the digests of every image block and the frames of its
    /// distinct blocks, keeping `frame_hash_len` bytes of each frame's
    /// sha256; checks the same rules as [`Index::decode`]. `kind` says what
    /// the digests are (and so which format [`Index::encode`] writes).
    pub fn new(
        kind: DigestKind,
        digest_len: usize,
        frame_blocks: u32,
        frame_hash_len: usize,
        digests: Vec<u8>,
        mut frames: Vec<Frame>,
    ) -> Result<Index, FormatError> {
        if !(MIN_FRAME_HASH_LEN..=32).contains(&frame_hash_len) {
            return Err(malformed(format!(
                "frame hash length {frame_hash_len} is outside {MIN_FRAME_HASH_LEN}..=32"
            )));
        }
        for f in &mut frames {
            f.zsha256[frame_hash_len..].fill(0);
        }
        if !(MIN_DIGEST_LEN..=MAX_DIGEST_LEN).contains(&digest_len) {
            return Err(malformed(format!(
                "digest length {digest_len} is outside {MIN_DIGEST_LEN}..={MAX_DIGEST_LEN}"
            )));
        }
        if !(1..=MAX_FRAME_BLOCKS).contains(&frame_blocks) {
            return Err(malformed(format!(
                "{frame_blocks} blocks per frame is outside 1..={MAX_FRAME_BLOCKS}"
            )));
        }
        if !digests.len().is_multiple_of(digest_len) {
            return Err(malformed("the digest table is not whole digests"));
        }
        let blocks = digests.len() / digest_len;
        if blocks > u32::MAX as usize {
            return Err(malformed(format!("{blocks} blocks is too many")));
        }
        let mut first: HashMap<&[u8], u32> = HashMap::new();
        let mut ordinals = Vec::with_capacity(blocks);
        for d in digests.chunks_exact(digest_len) {
            let next = first.len() as u32;
            ordinals.push(*first.entry(d).or_insert(next));
        }
        let unique = first.len() as u64;
        let want_frames = unique.div_ceil(frame_blocks as u64);
        if frames.len() as u64 != want_frames {
            return Err(malformed(format!(
                "{} frames listed, {want_frames} needed for {unique} distinct blocks",
                frames.len()
            )));
        }
        for (i, f) in frames.iter().enumerate() {
            let plain = Self::plain_blocks(frame_blocks, unique, i) * BLOCK_SIZE;
            if f.zsize == 0 || f.zsize as u64 > frame_bound(plain) {
                return Err(malformed(format!(
                    "frame {i}: {} compressed bytes for {plain} plain bytes",
                    f.zsize
                )));
            }
        }
        Ok(Index {
            kind,
            digest_len,
            frame_blocks,
            frame_hash_len,
            digests,
            frames,
            ordinals,
            unique,
        })
    }

    fn plain_blocks(frame_blocks: u32, unique: u64, frame: usize) -> u64 {
        let first = frame as u64 * frame_blocks as u64;
        (unique - first.min(unique)).min(frame_blocks as u64)
    }

    /// What the block digests are: plain sha256 (format 2) or dm-verity
    /// level-0 hashes with the image's salt (format 3).
    pub fn digests(&self) -> DigestKind {
        self.kind
    }

    pub fn digest_len(&self) -> usize {
        self.digest_len
    }

    pub fn frame_blocks(&self) -> u32 {
        self.frame_blocks
    }

    /// Bytes of each frame's compressed sha256 the index keeps.
    pub fn frame_hash_len(&self) -> usize {
        self.frame_hash_len
    }

    /// Blocks of the image.
    pub fn blocks(&self) -> u64 {
        self.ordinals.len() as u64
    }

    /// Distinct blocks: the blocks image holds each once.
    pub fn unique_blocks(&self) -> u64 {
        self.unique
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The short digest of image block `block`.
    pub fn digest(&self, block: u64) -> &[u8] {
        let at = block as usize * self.digest_len;
        &self.digests[at..at + self.digest_len]
    }

    /// The place of image block `block`'s content in the blocks image.
    pub fn ordinal(&self, block: u64) -> u64 {
        self.ordinals[block as usize] as u64
    }

    /// Blocks in frame `frame` (the last one may be short).
    pub fn frame_len(&self, frame: usize) -> u64 {
        Self::plain_blocks(self.frame_blocks, self.unique, frame)
    }

    /// Little-endian binary:
    ///
    /// ```text
    /// magic          8   "CAIRNBD\x03"
    /// block_size     u32 4096
    /// digest_len     u32 bytes of each block digest (first bytes of sha256(salt ‖ block),
    ///                    its dm-verity level-0 hash), 8..=32
    /// frame_blocks   u32 distinct blocks per zstd frame (the last frame may hold fewer)
    /// frame_hash_len u32 bytes of each frame's sha256 kept, 8..=32
    /// blocks         u64 blocks of the image (its size / 4096)
    /// unique         u64 distinct digests among them
    /// frames         u64 ceil(unique / frame_blocks)
    /// salt           32  the image's dm-verity salt
    /// digests        blocks × digest_len
    /// frame table    frames × (zsize u32, first frame_hash_len bytes of zsha256)
    /// ```
    ///
    /// Format 2 ("CAIRNBD\x02") has no salt and plain sha256 digests; it is
    /// what an index of [`DigestKind::Sha256`] encodes to. Format 1
    /// ("CAIRNBD\x01") is format 2 with 0 where frame_hash_len is and 32-byte
    /// frame hashes. [`Index::decode`] reads all three.
    pub fn encode(&self) -> Vec<u8> {
        let entry = 4 + self.frame_hash_len;
        let mut out =
            Vec::with_capacity(HEADER_SIZE_V3 + self.digests.len() + self.frames.len() * entry);
        out.extend_from_slice(match self.kind {
            DigestKind::Sha256 => &MAGIC_V2,
            DigestKind::Verity { .. } => &MAGIC,
        });
        out.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        out.extend_from_slice(&(self.digest_len as u32).to_le_bytes());
        out.extend_from_slice(&self.frame_blocks.to_le_bytes());
        out.extend_from_slice(&(self.frame_hash_len as u32).to_le_bytes());
        out.extend_from_slice(&self.blocks().to_le_bytes());
        out.extend_from_slice(&self.unique.to_le_bytes());
        out.extend_from_slice(&(self.frames.len() as u64).to_le_bytes());
        if let DigestKind::Verity { salt } = &self.kind {
            out.extend_from_slice(salt);
        }
        out.extend_from_slice(&self.digests);
        for f in &self.frames {
            out.extend_from_slice(&f.zsize.to_le_bytes());
            out.extend_from_slice(&f.zsha256[..self.frame_hash_len]);
        }
        out
    }

    /// Parses and checks an index: every count must agree with the tables, and
    /// the distinct digests with `unique`.
    pub fn decode(bytes: &[u8]) -> Result<Index, FormatError> {
        let magic = bytes.get(..8);
        let header = match magic {
            Some(m) if m == MAGIC => HEADER_SIZE_V3,
            Some(m) if m == MAGIC_V2 || m == MAGIC_V1 => HEADER_SIZE,
            _ => return Err(malformed("no CAIRNBD\\x03 (or \\x02, \\x01) header")),
        };
        if bytes.len() < header {
            return Err(malformed(format!(
                "{} bytes is shorter than the {header}-byte header",
                bytes.len()
            )));
        }
        let kind = match header == HEADER_SIZE_V3 {
            true => {
                let mut salt = [0u8; SALT_SIZE];
                salt.copy_from_slice(&bytes[HEADER_SIZE..HEADER_SIZE_V3]);
                DigestKind::Verity { salt }
            }
            false => DigestKind::Sha256,
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if u32_at(8) as u64 != BLOCK_SIZE {
            return Err(malformed(format!("block size {} is not 4096", u32_at(8))));
        }
        let digest_len = u32_at(12) as usize;
        let frame_blocks = u32_at(16);
        let frame_hash_len = match bytes[..8] == MAGIC_V1 {
            true if u32_at(20) != 0 => {
                return Err(malformed("reserved header field is not 0"));
            }
            true => 32,
            false => u32_at(20) as usize,
        };
        if !(MIN_FRAME_HASH_LEN..=32).contains(&frame_hash_len) {
            return Err(malformed(format!(
                "frame hash length {frame_hash_len} is outside {MIN_FRAME_HASH_LEN}..=32"
            )));
        }
        let entry = 4 + frame_hash_len;
        let (blocks, unique, frames) = (u64_at(24), u64_at(32), u64_at(40));
        let body = (bytes.len() - header) as u128;
        let want = blocks as u128 * digest_len as u128 + frames as u128 * entry as u128;
        if body != want {
            return Err(malformed(format!(
                "{body} bytes after the header, {want} expected for {blocks} blocks and {frames} frames"
            )));
        }
        let split = header + blocks as usize * digest_len;
        let digests = bytes[header..split].to_vec();
        let table = bytes[split..]
            .chunks_exact(entry)
            .map(|e| {
                let mut zsha256 = [0u8; 32];
                zsha256[..frame_hash_len].copy_from_slice(&e[4..]);
                let mut z = [0u8; 4];
                z.copy_from_slice(&e[..4]);
                Frame {
                    zsize: u32::from_le_bytes(z),
                    zsha256,
                }
            })
            .collect();
        let index = Index::new(
            kind,
            digest_len,
            frame_blocks,
            frame_hash_len,
            digests,
            table,
        )?;
        if index.unique != unique {
            return Err(malformed(format!(
                "header says {unique} distinct blocks, the digests have {}",
                index.unique
            )));
        }
        Ok(index)
    }

    /// The index must describe exactly `image` (its size in whole blocks).
    pub fn check_image(&self, image: &Image) -> Result<(), FormatError> {
        if image.size != self.blocks() * BLOCK_SIZE {
            return Err(FormatError::Mismatch {
                image: image.name.clone(),
                problem: format!(
                    "{} bytes, the index covers {} blocks of 4096",
                    image.size,
                    self.blocks()
                ),
            });
        }
        Ok(())
    }
}

/// Where one frame is: bytes `[offset, offset + zsize)` of a chunk file of the
/// blocks image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLoc {
    pub file: String,
    pub offset: u64,
    pub zsize: u64,
    /// The first `zsha_len` bytes are the signed prefix of the frame's sha256.
    pub zsha256: [u8; 32],
    pub zsha_len: usize,
    /// Plain size: blocks × 4096.
    pub blocks: u64,
}

/// Places every frame of `index` in the chunk files of `blocks` (the signed
/// blocks image): a chunk holds `chunk_size / (frame_blocks × 4096)` frames,
/// and their compressed sizes must add up to the chunk's signed zsize.
pub fn locate(index: &Index, blocks: &Image) -> Result<Vec<FrameLoc>, FormatError> {
    let mismatch = |problem: String| FormatError::Mismatch {
        image: blocks.name.clone(),
        problem,
    };
    let frame_bytes = index.frame_blocks as u64 * BLOCK_SIZE;
    if blocks.size != index.unique * BLOCK_SIZE {
        return Err(mismatch(format!(
            "{} bytes, the index has {} distinct blocks",
            blocks.size, index.unique
        )));
    }
    if !blocks.chunk_size.is_multiple_of(frame_bytes) {
        return Err(mismatch(format!(
            "chunk size {} is not whole frames of {frame_bytes} bytes",
            blocks.chunk_size
        )));
    }
    let per_chunk = (blocks.chunk_size / frame_bytes) as usize;
    let want_chunks = index.frames.len().div_ceil(per_chunk);
    if blocks.chunks.len() != want_chunks {
        return Err(mismatch(format!(
            "{} chunks, {want_chunks} expected for {} frames",
            blocks.chunks.len(),
            index.frames.len()
        )));
    }
    let mut out = Vec::with_capacity(index.frames.len());
    for (c, chunk) in blocks.chunks.iter().enumerate() {
        let mut offset = 0u64;
        let first = c * per_chunk;
        let last = (first + per_chunk).min(index.frames.len());
        for (f, frame) in index.frames[first..last].iter().enumerate() {
            out.push(FrameLoc {
                file: chunk.file.clone(),
                offset,
                zsize: frame.zsize as u64,
                zsha256: frame.zsha256,
                zsha_len: index.frame_hash_len,
                blocks: index.frame_len(first + f),
            });
            offset += frame.zsize as u64;
        }
        if offset != chunk.zsize {
            return Err(mismatch(format!(
                "chunk {c}: its frames add up to {offset} bytes, the chunk is {}",
                chunk.zsize
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(digests: &[u8], frame_blocks: u32) -> Result<Index, FormatError> {
        index_of(DigestKind::Sha256, digests, frame_blocks)
    }

    fn index_of(kind: DigestKind, digests: &[u8], frame_blocks: u32) -> Result<Index, FormatError> {
        let mut d = Vec::new();
        for &x in digests {
            d.extend_from_slice(&[x; 8]);
        }
        let unique = digests
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        let frames = (0..unique.div_ceil(frame_blocks as u64))
            .map(|i| Frame {
                zsize: 100 + i as u32,
                zsha256: [i as u8; 32],
            })
            .collect();
        Index::new(kind, 8, frame_blocks, 32, d, frames)
    }

    /// Format 3 carries the salt and says its digests are level-0 hashes;
    /// format 2 (plain sha256) still decodes and says so; each encodes back
    /// to its own format.
    #[test]
    fn format_3_round_trips_with_its_salt_and_format_2_still_decodes() {
        let salt = [0x5a; SALT_SIZE];
        let v3 = index_of(DigestKind::Verity { salt }, &[5, 5, 7, 5, 9, 7, 1], 2).unwrap();
        let bytes = v3.encode();
        assert_eq!(bytes[..8], *b"CAIRNBD\x03");
        assert_eq!(bytes[48..80], salt);
        assert_eq!(bytes.len(), 80 + 7 * 8 + 2 * 36);
        let back = Index::decode(&bytes).unwrap();
        assert_eq!(back, v3);
        assert_eq!(back.digests(), DigestKind::Verity { salt });

        let v2 = index(&[5, 5, 7, 5, 9, 7, 1], 2).unwrap();
        let bytes = v2.encode();
        assert_eq!(bytes[..8], *b"CAIRNBD\x02");
        let back = Index::decode(&bytes).unwrap();
        assert_eq!(back.digests(), DigestKind::Sha256);
        assert_eq!(back.encode(), bytes);
        // The same tables under the other magic do not decode: the salt
        // moves the digests by 32 bytes.
        let mut as_v3 = bytes.clone();
        as_v3[7] = 3;
        assert!(Index::decode(&as_v3).is_err());
        let mut as_v2 = v3.encode();
        as_v2[7] = 2;
        assert!(Index::decode(&as_v2).is_err());
        assert!(Index::decode(&v3.encode()[..60]).is_err());
    }

    #[test]
    fn digest_kinds_hash_as_dm_verity_level_0() {
        use sha2::{Digest, Sha256};
        let block = [9u8; 4096];
        let salt = [3u8; SALT_SIZE];
        assert_eq!(
            DigestKind::Sha256.digest(&block),
            <[u8; 32]>::from(Sha256::digest(block))
        );
        let mut salted = salt.to_vec();
        salted.extend_from_slice(&block);
        assert_eq!(
            DigestKind::Verity { salt }.digest(&block),
            <[u8; 32]>::from(Sha256::digest(&salted))
        );
    }

    #[test]
    fn encodes_and_decodes_with_first_occurrence_ordinals() {
        let i = index(&[5, 5, 7, 5, 9, 7, 1], 2).unwrap();
        assert_eq!(i.blocks(), 7);
        assert_eq!(i.unique_blocks(), 4);
        let ordinals: Vec<u64> = (0..7).map(|b| i.ordinal(b)).collect();
        assert_eq!(ordinals, [0, 0, 1, 0, 2, 1, 3]);
        assert_eq!((i.frame_len(0), i.frame_len(1)), (2, 2));
        let bytes = i.encode();
        assert_eq!(bytes.len(), 48 + 7 * 8 + 2 * 36);
        assert_eq!(Index::decode(&bytes).unwrap(), i);
    }

    #[test]
    fn frame_hashes_are_cut_to_their_length_and_format_1_still_decodes() {
        let full = index(&[5, 5, 7, 5, 9, 7, 1], 2).unwrap();
        // (frame hash length, encoded size)
        for (len, size) in [(8usize, 48 + 7 * 8 + 2 * 12), (16, 48 + 7 * 8 + 2 * 20)] {
            let frames = full.frames().to_vec();
            let cut =
                Index::new(DigestKind::Sha256, 8, 2, len, full.digests.clone(), frames).unwrap();
            assert!(
                cut.frames()
                    .iter()
                    .all(|f| f.zsha256[len..] == [0; 32][len..])
            );
            assert_eq!(
                cut.frames()[1].zsha256[..len],
                full.frames()[1].zsha256[..len]
            );
            let bytes = cut.encode();
            assert_eq!(bytes.len(), size, "hash length {len}");
            assert_eq!(Index::decode(&bytes).unwrap(), cut, "hash length {len}");
        }
        // Format 1: magic \x01, reserved 0, whole hashes.
        let mut v1 = full.encode();
        v1[7] = 1;
        v1[20..24].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Index::decode(&v1).unwrap(), full);
        assert!(Index::new(DigestKind::Sha256, 8, 2, 33, full.digests.clone(), vec![]).is_err());
    }

    #[test]
    fn refuses_inconsistent_indexes() {
        let good = index(&[1, 2, 3], 2).unwrap().encode();
        let patch = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        let mut truncated = good.clone();
        truncated.pop();
        let mut v1_reserved = patch(20, &1u32.to_le_bytes());
        v1_reserved[7] = 1;
        let table: [(&str, Vec<u8>); 10] = [
            ("bad magic", patch(0, b"X")),
            ("format 4", patch(7, &[4])),
            ("block size", patch(8, &8192u32.to_le_bytes())),
            ("short digest", patch(12, &4u32.to_le_bytes())),
            ("format 1 reserved", v1_reserved),
            ("frame hash over 32", patch(20, &33u32.to_le_bytes())),
            ("frame hash under 8", patch(20, &4u32.to_le_bytes())),
            ("unique count", patch(32, &2u64.to_le_bytes())),
            ("truncated", truncated),
            ("zero zsize", patch(48 + 24, &0u32.to_le_bytes())),
        ];
        for (what, bytes) in table {
            assert!(Index::decode(&bytes).is_err(), "{what} was accepted");
        }
        assert!(Index::new(DigestKind::Sha256, 8, 0, 32, vec![1; 8], vec![]).is_err());
        assert!(Index::new(DigestKind::Sha256, 8, 2, 32, vec![1; 7], vec![]).is_err());
    }
}
