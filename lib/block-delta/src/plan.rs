//! The pure planner: which blocks a host copies from its active slot, which
//! frames it fetches, in which Range requests, and what that costs.

use std::collections::HashMap;
use std::ops::Range;

use sha2::{Digest, Sha256};

use crate::format::{BLOCK_SIZE, DigestKind, FrameLoc, Index};

/// Needed frames of one file at most this many bytes apart are fetched in one
/// request: a request costs a round trip and its headers, a few KiB of
/// unneeded frames cost bytes. Measured (htop added, 4-block frames): gap 0
/// 180 requests 4.67 MB, 8 KiB 172 requests 4.72 MB, 64 KiB 98 requests 6.9 MB.
pub const DEFAULT_GAP: u64 = 8 << 10;
/// No request asks for more than this: the agent holds one response in memory.
pub const MAX_RANGE: u64 = 8 << 20;

/// The digest of every 4 KiB block the host holds (its active slot, in slot
/// order), of the index's [`DigestKind`]: computed from the bytes themselves
/// ([`LocalBlocks::hash`], [`LocalBlocks::extend_with`]), or, for format 3,
/// taken from the slot's verified dm-verity level 0 ([`LocalBlocks::from_digests`]).
/// Either way a digest only proposes a block: the caller checks every chunk
/// it assembles against its signed sha256, so a block that rotted after its
/// digest was taken makes that chunk fail instead of being written.
#[derive(Debug, Clone, Default)]
pub struct LocalBlocks {
    digests: Vec<[u8; 32]>,
}

impl LocalBlocks {
    pub fn from_digests(digests: Vec<[u8; 32]>) -> LocalBlocks {
        LocalBlocks { digests }
    }

    /// Hashes `bytes` in 4 KiB blocks; a short last block is ignored (a slot
    /// image is whole blocks).
    pub fn hash(bytes: &[u8]) -> LocalBlocks {
        let mut l = LocalBlocks::default();
        l.extend(bytes);
        l
    }

    /// Adds the sha256 of the blocks of `bytes` (whole blocks only) after
    /// those already held.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.digests.extend(
            bytes
                .chunks_exact(BLOCK_SIZE as usize)
                .map(|b| <[u8; 32]>::from(Sha256::digest(b))),
        );
    }

    /// Adds the `kind` digests of the blocks of `bytes` (whole blocks only)
    /// after those already held: what an index of that kind matches.
    pub fn extend_with(&mut self, kind: &DigestKind, bytes: &[u8]) {
        self.digests.extend(
            bytes
                .chunks_exact(BLOCK_SIZE as usize)
                .map(|b| kind.digest(b)),
        );
    }

    pub fn len(&self) -> u64 {
        self.digests.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn digest(&self, block: u64) -> &[u8; 32] {
        &self.digests[block as usize]
    }
}

/// Where the bytes of one target block come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Block `n` of the active slot.
    Local(u64),
    /// Block `block` of frame `frame` once it is fetched and decoded.
    Fetch { frame: usize, block: u64 },
    /// Not planned: the caller has it (written before an interruption) or
    /// makes it (the dm-verity hash tree, computed from the data).
    Skip,
}

/// One HTTP Range request: bytes `[start, start + len)` of `file`, holding
/// the frames `frames` (needed or between needed ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRange {
    pub file: String,
    pub start: u64,
    pub len: u64,
    pub frames: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One entry per block of the new image.
    pub sources: Vec<Source>,
    pub ranges: Vec<FetchRange>,
    /// Target blocks copied from the active slot.
    pub copied: u64,
    /// Target blocks taken from fetched frames.
    pub fetched: u64,
    /// Frames some target block needs.
    pub frames_needed: usize,
    /// Bytes the ranges ask for: the download, before retries.
    pub download: u64,
}

/// Plans writing the image `index` describes, but for the target blocks in
/// `skip` ([`Source::Skip`]: nothing fetched for them).
///
/// Rules:
/// * a target block whose digest equals the digest prefix of some local block
///   is copied from the first such local block;
/// * every other block comes from the frame holding its distinct content;
/// * needed frames are fetched in file order, and two of the same file are
///   merged into one request when the bytes between them are at most `gap`
///   (those bytes are downloaded and discarded), as long as the request stays
///   within `max_range` bytes.
pub fn plan(
    index: &Index,
    frames: &[FrameLoc],
    local: &LocalBlocks,
    gap: u64,
    max_range: u64,
    skip: &[Range<u64>],
) -> Plan {
    let dl = index.digest_len();
    let mut have: HashMap<&[u8], u64> = HashMap::with_capacity(local.digests.len());
    for (n, d) in local.digests.iter().enumerate() {
        have.entry(&d[..dl]).or_insert(n as u64);
    }
    let fb = index.frame_blocks() as u64;
    let mut needed = vec![false; frames.len()];
    let mut sources = Vec::with_capacity(index.blocks() as usize);
    let (mut copied, mut fetched) = (0u64, 0u64);
    for b in 0..index.blocks() {
        if skip.iter().any(|r| r.contains(&b)) {
            sources.push(Source::Skip);
            continue;
        }
        match have.get(index.digest(b)) {
            Some(&n) => {
                copied += 1;
                sources.push(Source::Local(n));
            }
            None => {
                let ord = index.ordinal(b);
                let frame = (ord / fb) as usize;
                needed[frame] = true;
                fetched += 1;
                sources.push(Source::Fetch {
                    frame,
                    block: ord % fb,
                });
            }
        }
    }
    let ranges = coalesce(frames, &needed, gap, max_range);
    Plan {
        download: ranges.iter().map(|r| r.len).sum(),
        frames_needed: needed.iter().filter(|&&n| n).count(),
        sources,
        ranges,
        copied,
        fetched,
    }
}

/// Merges needed frames (in order) into Range requests.
fn coalesce(frames: &[FrameLoc], needed: &[bool], gap: u64, max_range: u64) -> Vec<FetchRange> {
    let mut out: Vec<FetchRange> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        if let Some(last) = out.last_mut() {
            let end = last.start + last.len;
            let joins = last.file == f.file
                && f.offset >= end
                && f.offset - end <= gap
                && f.offset + f.zsize - last.start <= max_range;
            if joins {
                last.len = f.offset + f.zsize - last.start;
                last.frames.end = i + 1;
                continue;
            }
        }
        out.push(FetchRange {
            file: f.file.clone(),
            start: f.offset,
            len: f.zsize,
            frames: i..i + 1,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Frame;

    const FB: u32 = 2;

    /// A block whose content is the byte `x` repeated.
    fn block(x: u8) -> Vec<u8> {
        vec![x; BLOCK_SIZE as usize]
    }

    fn image(contents: &[u8]) -> Vec<u8> {
        contents.iter().flat_map(|&x| block(x)).collect()
    }

    /// Index + frame locations for an image of the given block contents:
    /// frames of `FB` blocks, each 1000 bytes compressed, `per_file` frames
    /// to a chunk file.
    fn release(contents: &[u8], per_file: usize) -> (Index, Vec<FrameLoc>) {
        let bytes = image(contents);
        let digests: Vec<u8> = LocalBlocks::hash(&bytes)
            .digests
            .iter()
            .flat_map(|d| d[..8].to_vec())
            .collect();
        let unique = contents
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64;
        let n = unique.div_ceil(FB as u64) as usize;
        let frames = vec![
            Frame {
                zsize: 1000,
                zsha256: [0; 32],
            };
            n
        ];
        let index = Index::new(DigestKind::Sha256, 8, FB, 32, digests, frames).unwrap();
        let locs = (0..n)
            .map(|i| FrameLoc {
                file: format!("chunks/{}.zst", i / per_file),
                offset: (i % per_file) as u64 * 1000,
                zsize: 1000,
                zsha256: [0; 32],
                zsha_len: 32,
                blocks: index.frame_len(i),
            })
            .collect();
        (index, locs)
    }

    fn ranges(p: &Plan) -> Vec<(String, u64, u64)> {
        p.ranges
            .iter()
            .map(|r| (r.file.clone(), r.start, r.len))
            .collect()
    }

    #[test]
    fn plans_copies_and_fetches() {
        let v1: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8];
        let mut corrupted = image(v1);
        corrupted[3 * 4096 + 17] ^= 1; // block with content 4 is damaged
        // (what, new image, local slot bytes, copied, fetched, frames needed, ranges)
        type Row<'a> = (
            &'a str,
            &'a [u8],
            Vec<u8>,
            u64,
            u64,
            usize,
            Vec<(&'a str, u64, u64)>,
        );
        let table: Vec<Row> = vec![
            ("identical release", v1, image(v1), 8, 0, 0, vec![]),
            (
                "disjoint release: everything, one request per file",
                &[11, 12, 13, 14, 15, 16, 17, 18],
                image(v1),
                0,
                8,
                4,
                vec![("chunks/0.zst", 0, 3000), ("chunks/1.zst", 0, 1000)],
            ),
            (
                "shifted: one block inserted, the rest found at other offsets",
                &[1, 2, 9, 3, 4, 5, 6, 7, 8],
                image(v1),
                8,
                1,
                1,
                vec![("chunks/0.zst", 1000, 1000)],
            ),
            (
                "two releases behind: v3 reuses v1 blocks v2 dropped",
                &[1, 2, 3, 4, 21, 22, 7, 8],
                image(&[1, 2, 3, 4, 5, 6, 7, 8]),
                6,
                2,
                1,
                vec![("chunks/0.zst", 2000, 1000)],
            ),
            (
                "a corrupted local block is fetched, not copied",
                v1,
                corrupted,
                7,
                1,
                1,
                vec![("chunks/0.zst", 1000, 1000)],
            ),
            (
                "empty active slot: full fetch",
                v1,
                Vec::new(),
                0,
                8,
                4,
                vec![("chunks/0.zst", 0, 3000), ("chunks/1.zst", 0, 1000)],
            ),
            (
                "duplicate new content is fetched once",
                &[31, 31, 31, 1, 31],
                image(v1),
                1,
                4,
                1,
                vec![("chunks/0.zst", 0, 1000)],
            ),
        ];
        for (what, new, local, copied, fetched, frames, want) in table {
            let (index, locs) = release(new, 3);
            let p = plan(&index, &locs, &LocalBlocks::hash(&local), 0, MAX_RANGE, &[]);
            assert_eq!((p.copied, p.fetched), (copied, fetched), "{what}");
            assert_eq!(p.frames_needed, frames, "{what}");
            let want: Vec<(String, u64, u64)> =
                want.into_iter().map(|(f, s, l)| (f.into(), s, l)).collect();
            assert_eq!(ranges(&p), want, "{what}");
            assert_eq!(p.download, want.iter().map(|r| r.2).sum::<u64>(), "{what}");
            assert_eq!(p.sources.len() as u64, index.blocks(), "{what}");
        }
    }

    #[test]
    fn sources_point_at_the_right_bytes() {
        let v1 = [1u8, 2, 3, 4];
        let new = [3u8, 9, 1, 9, 8];
        let (index, _) = release(&new, 4);
        let (_, locs) = release(&new, 4);
        let p = plan(
            &index,
            &locs,
            &LocalBlocks::hash(&image(&v1)),
            0,
            MAX_RANGE,
            &[],
        );
        // Distinct new contents in first-occurrence order: 3, 9, 1, 8.
        let want = [
            Source::Local(2),
            Source::Fetch { frame: 0, block: 1 },
            Source::Local(0),
            Source::Fetch { frame: 0, block: 1 },
            Source::Fetch { frame: 1, block: 1 },
        ];
        assert_eq!(p.sources, want);
    }

    #[test]
    fn skipped_blocks_cost_no_fetch() {
        let new: &[u8] = &[11, 12, 13, 14, 15, 16];
        let (index, locs) = release(new, 3);
        let local = LocalBlocks::hash(&image(&[1, 2]));
        // (skip, fetched, sources that are Skip, ranges)
        type Row = (
            &'static [Range<u64>],
            u64,
            Vec<u64>,
            Vec<(&'static str, u64, u64)>,
        );
        let table: [Row; 3] = [
            (&[], 6, vec![], vec![("chunks/0.zst", 0, 3000)]),
            // Frames are two blocks: skipping blocks 0 and 1 drops frame 0.
            (
                &[0..1, 1..2],
                4,
                vec![0, 1],
                vec![("chunks/0.zst", 1000, 2000)],
            ),
            (
                &[0..3, 5..6],
                2,
                vec![0, 1, 2, 5],
                vec![("chunks/0.zst", 1000, 2000)],
            ),
        ];
        for (skip, fetched, skipped, want) in table {
            let p = plan(&index, &locs, &local, 0, MAX_RANGE, skip);
            assert_eq!(p.fetched, fetched, "{skip:?}");
            let got: Vec<u64> = (0..p.sources.len() as u64)
                .filter(|&b| p.sources[b as usize] == Source::Skip)
                .collect();
            assert_eq!(got, skipped, "{skip:?}");
            let want: Vec<(String, u64, u64)> =
                want.into_iter().map(|(f, s, l)| (f.into(), s, l)).collect();
            assert_eq!(ranges(&p), want, "{skip:?}");
        }
    }

    #[test]
    fn coalescing_follows_the_gap_and_size_limits() {
        // Frames 0..8 in one file, 1000 bytes each; needed: 0, 2, 3, 7.
        let locs: Vec<FrameLoc> = (0..8)
            .map(|i| FrameLoc {
                file: "f".into(),
                offset: i * 1000,
                zsize: 1000,
                zsha256: [0; 32],
                zsha_len: 32,
                blocks: 2,
            })
            .collect();
        let needed = [true, false, true, true, false, false, false, true];
        // (gap, max_range, expected (start, len) requests)
        type Row = (u64, u64, &'static [(u64, u64)]);
        let table: [Row; 5] = [
            (0, MAX_RANGE, &[(0, 1000), (2000, 2000), (7000, 1000)]),
            (999, MAX_RANGE, &[(0, 1000), (2000, 2000), (7000, 1000)]),
            (1000, MAX_RANGE, &[(0, 4000), (7000, 1000)]),
            (3000, MAX_RANGE, &[(0, 8000)]),
            (3000, 3000, &[(0, 3000), (3000, 1000), (7000, 1000)]),
        ];
        for (gap, max, want) in table {
            let got: Vec<(u64, u64)> = coalesce(&locs, &needed, gap, max)
                .iter()
                .map(|r| (r.start, r.len))
                .collect();
            assert_eq!(got, want, "gap {gap}, max {max}");
        }
        let all = coalesce(&locs, &needed, 3000, MAX_RANGE);
        assert_eq!(all[0].frames, 0..8);
    }
}
