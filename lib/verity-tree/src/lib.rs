//! dm-verity hash tree generator, byte-compatible with `veritysetup format`.
//!
//! Only the configuration Cairn uses is supported: format version 1 (hash type 1,
//! "normal"), sha256, 4096-byte data and hash blocks, a 32-byte salt, and a
//! superblock. The hash area lives in the same file as the data, after it, which is
//! the layout of
//!
//! ```text
//! veritysetup format --salt=<hex> --uuid=<uuid> --hash-offset=<X> --data-blocks=<N> file file
//! ```
//!
//! Layout of the hash area at `hash_offset`:
//!
//! * one 4096-byte block holding the 512-byte superblock, zero-padded (veritysetup
//!   writes only the 512 bytes; we zero the rest so the output does not depend on what
//!   the file held before);
//! * the hash tree, top level first. Level 0 holds `sha256(salt ‖ data block)` for every
//!   data block, 128 digests per hash block, the last block zero-padded; each next level
//!   hashes the blocks of the level below the same way until one block remains.
//! * The root hash is `sha256(salt ‖ top block)`. With a single data block there are no
//!   levels at all and the root hash is `sha256(salt ‖ data block)`, as in veritysetup.
//!
//! The whole tree is built in memory (about 1/128 of the data size) and written with a
//! single positioned write. Nothing is fsynced: call `File::sync_all` if it matters.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// Data and hash block size, in bytes.
pub const BLOCK_SIZE: u64 = 4096;
/// Size of a sha256 digest, in bytes.
pub const DIGEST_SIZE: usize = 32;
/// Size of the on-disk superblock structure (it occupies a whole hash block).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Salt size used by Cairn (veritysetup's default).
pub const SALT_SIZE: usize = 32;

const BS: usize = BLOCK_SIZE as usize;
/// log2 of the digests per hash block (4096 / 32 = 128).
const HASH_PER_BLOCK_BITS: u32 = 7;
const MAGIC: &[u8; 8] = b"verity\0\0";
const ALGORITHM: &str = "sha256";
/// Data is read in 1 MiB pieces: big enough for sequential throughput, small enough
/// for two workers to each hold one.
const READ_CHUNK: usize = 1 << 20;
const BLOCKS_PER_CHUNK: usize = READ_CHUNK / BS;

/// Input of [`format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Number of 4096-byte data blocks, starting at offset 0 of the file.
    pub data_blocks: u64,
    /// Byte offset of the superblock; the tree follows it. Must be a multiple of 4096
    /// and at or after the end of the data.
    pub hash_offset: u64,
    pub salt: [u8; SALT_SIZE],
    /// Written to the superblock only (veritysetup `--uuid`).
    pub uuid: [u8; 16],
}

/// Result of [`format`]; everything needed to open or verify the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerityInfo {
    pub root_hash: [u8; DIGEST_SIZE],
    pub salt: [u8; SALT_SIZE],
    pub data_blocks: u64,
    /// Byte offset of the superblock.
    pub hash_offset: u64,
    /// Size of the hash area in bytes, superblock included.
    pub hash_size: u64,
    pub data_block_size: u32,
    pub hash_block_size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid verity parameters: {0}")]
    InvalidParams(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("file too short for the {what}: needs {needed} bytes, has {len}")]
    TooShort {
        what: &'static str,
        needed: u64,
        len: u64,
    },
    #[error("verity superblock: {0}")]
    BadSuperblock(String),
    #[error("root hash mismatch: expected {expected}, the hash tree gives {actual}")]
    RootHashMismatch { expected: String, actual: String },
    #[error("hash block {block} of tree level {level} does not match the level above it")]
    HashBlockMismatch { level: usize, block: u64 },
    #[error("data block {block} (byte offset {}) does not match its hash", block * BLOCK_SIZE)]
    DataBlockMismatch { block: u64 },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Position and size of the tree levels, in hash blocks relative to `hash_offset`.
#[derive(Debug)]
struct Geometry {
    /// `(first block, number of blocks)` for level 0 (bottom) upwards.
    levels: Vec<(u64, u64)>,
    /// Total hash area in blocks, superblock included.
    total_blocks: u64,
}

fn geometry(data_blocks: u64) -> Result<Geometry, Error> {
    if data_blocks == 0 {
        return Err(Error::InvalidParams(
            "data_blocks must be at least 1".into(),
        ));
    }
    if data_blocks.checked_mul(BLOCK_SIZE).is_none() {
        return Err(Error::InvalidParams(format!(
            "{data_blocks} data blocks do not fit a 64-bit byte size"
        )));
    }
    // Same rule as veritysetup's hash_levels(): the smallest L with
    // (data_blocks - 1) >> (7 L) == 0.
    let mut n = 0u32;
    while (data_blocks - 1)
        .checked_shr(HASH_PER_BLOCK_BITS * n)
        .unwrap_or(0)
        != 0
    {
        n += 1;
    }
    let mut levels = vec![(0, 0); n as usize];
    // Block 0 is the superblock; levels follow top first.
    let mut pos = 1u64;
    for i in (0..n).rev() {
        let shift = HASH_PER_BLOCK_BITS * (i + 1);
        let per_block = 1u64.checked_shl(shift).unwrap_or(u64::MAX);
        let count = data_blocks.div_ceil(per_block);
        levels[i as usize] = (pos, count);
        pos += count;
    }
    Ok(Geometry {
        levels,
        total_blocks: pos,
    })
}

/// Size in bytes of the hash area (superblock included) for `data_blocks` data blocks.
pub fn hash_size(data_blocks: u64) -> Result<u64, Error> {
    Ok(geometry(data_blocks)?.total_blocks * BLOCK_SIZE)
}

fn check_layout(data_blocks: u64, hash_offset: u64) -> Result<Geometry, Error> {
    let geo = geometry(data_blocks)?;
    if !hash_offset.is_multiple_of(BLOCK_SIZE) {
        return Err(Error::InvalidParams(format!(
            "hash_offset {hash_offset} is not a multiple of {BLOCK_SIZE}"
        )));
    }
    if hash_offset < data_blocks * BLOCK_SIZE {
        return Err(Error::InvalidParams(format!(
            "hash_offset {hash_offset} overlaps the {} bytes of data",
            data_blocks * BLOCK_SIZE
        )));
    }
    if hash_offset
        .checked_add(geo.total_blocks * BLOCK_SIZE)
        .is_none()
    {
        return Err(Error::InvalidParams("hash area ends past 2^64".into()));
    }
    Ok(geo)
}

/// Size of a file or a block device (whose metadata length is 0: only
/// seeking to the end tells).
fn file_len(dev: &File) -> Result<u64, Error> {
    let meta = dev.metadata().map_err(io_err("reading file size"))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    use std::io::{Seek, SeekFrom};
    let mut d = dev;
    let len = d
        .seek(SeekFrom::End(0))
        .map_err(io_err("seeking to the end"))?;
    d.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking to the start"))?;
    Ok(len)
}

/// Builds the superblock and hash tree for the data at the start of `dev` and writes
/// them at `params.hash_offset`, growing the file if needed.
pub fn format(dev: &mut File, params: &Params) -> Result<VerityInfo, Error> {
    let geo = check_layout(params.data_blocks, params.hash_offset)?;
    let dev: &File = dev;
    let data_len = params.data_blocks * BLOCK_SIZE;
    let len = file_len(dev)?;
    if len < data_len {
        return Err(Error::TooShort {
            what: "data blocks",
            needed: data_len,
            len,
        });
    }

    let total = usize::try_from(geo.total_blocks * BLOCK_SIZE)
        .map_err(|_| Error::InvalidParams("hash tree does not fit in memory".into()))?;
    let mut area = vec![0u8; total];
    area[..SUPERBLOCK_SIZE].copy_from_slice(&superblock(params));
    let root_hash = build_tree(dev, &geo, params.data_blocks, &params.salt, &mut area)?;

    dev.write_all_at(&area, params.hash_offset)
        .map_err(io_err("writing the verity hash area"))?;
    Ok(VerityInfo {
        root_hash,
        salt: params.salt,
        data_blocks: params.data_blocks,
        hash_offset: params.hash_offset,
        hash_size: geo.total_blocks * BLOCK_SIZE,
        data_block_size: BLOCK_SIZE as u32,
        hash_block_size: BLOCK_SIZE as u32,
    })
}

/// Fills the tree levels of `area` (laid out as on disk) and returns the root hash.
fn build_tree(
    dev: &File,
    geo: &Geometry,
    data_blocks: u64,
    salt: &[u8; SALT_SIZE],
    area: &mut [u8],
) -> Result<[u8; DIGEST_SIZE], Error> {
    let salted = Sha256::new_with_prefix(salt);
    let Some(&(l0_start, _)) = geo.levels.first() else {
        // One data block: no tree, the root hash is the block's own hash.
        let mut h = [0u8; DIGEST_SIZE];
        hash_data(dev, data_blocks, &salted, &mut h)?;
        return Ok(h);
    };
    let l0 = block_range(l0_start, data_blocks * DIGEST_SIZE as u64);
    hash_data(dev, data_blocks, &salted, &mut area[l0])?;

    for i in 1..geo.levels.len() {
        let (below_start, below_count) = geo.levels[i - 1];
        let (start, _) = geo.levels[i];
        // Levels are stored top first, so the level above sits before the one below.
        let (upper, lower) = area.split_at_mut(to_usize(below_start * BLOCK_SIZE));
        let input = &lower[..to_usize(below_count * BLOCK_SIZE)];
        let out = &mut upper[block_range(start, below_count * DIGEST_SIZE as u64)];
        hash_blocks(&salted, input, out);
    }
    let (top_start, _) = geo.levels[geo.levels.len() - 1];
    let mut root = [0u8; DIGEST_SIZE];
    hash_blocks(
        &salted,
        &area[block_range(top_start, BLOCK_SIZE)],
        &mut root,
    );
    Ok(root)
}

/// Byte range of `len` bytes starting at hash block `block` of the area.
fn block_range(block: u64, len: u64) -> std::ops::Range<usize> {
    let start = to_usize(block * BLOCK_SIZE);
    start..start + to_usize(len)
}

/// Only used for sizes already known to fit in the in-memory hash area.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Writes `sha256(salt ‖ block)` of each 4096-byte block of `input` into `out`.
fn hash_blocks(salted: &Sha256, input: &[u8], out: &mut [u8]) {
    for (block, digest) in input
        .chunks_exact(BS)
        .zip(out.chunks_exact_mut(DIGEST_SIZE))
    {
        let mut h = salted.clone();
        h.update(block);
        digest.copy_from_slice(&h.finalize());
    }
}

fn worker_count() -> usize {
    // Two workers are enough to keep up with page-cache reads; more would only
    // compete with the rest of the build on small build hosts.
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

/// Hashes the first `data_blocks` blocks of `dev` into `out` (32 bytes per block).
///
/// The output is cut into pieces of one read chunk (256 blocks) each, handed out
/// round-robin to the workers, so each worker reads 1 MiB at a time and the two
/// together still walk the file front to back.
fn hash_data(dev: &File, data_blocks: u64, salted: &Sha256, out: &mut [u8]) -> Result<(), Error> {
    debug_assert_eq!(out.len() as u64, data_blocks * DIGEST_SIZE as u64);
    let workers = worker_count();
    let mut lanes: Vec<Vec<(usize, &mut [u8])>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, piece) in out.chunks_mut(BLOCKS_PER_CHUNK * DIGEST_SIZE).enumerate() {
        lanes[i % workers].push((i, piece));
    }
    if workers == 1 {
        let lane = lanes.pop().unwrap_or_default();
        return hash_lane(dev, salted, lane);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|lane| s.spawn(move || hash_lane(dev, salted, lane)))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

fn hash_lane(dev: &File, salted: &Sha256, lane: Vec<(usize, &mut [u8])>) -> Result<(), Error> {
    let mut buf = vec![0u8; READ_CHUNK];
    for (i, digests) in lane {
        let blocks = digests.len() / DIGEST_SIZE;
        let data = &mut buf[..blocks * BS];
        let offset = (i * READ_CHUNK) as u64;
        dev.read_exact_at(data, offset)
            .map_err(io_err(format!("reading data at byte {offset}")))?;
        hash_blocks(salted, data, digests);
    }
    Ok(())
}

fn superblock(params: &Params) -> [u8; SUPERBLOCK_SIZE] {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    sb[0..8].copy_from_slice(MAGIC);
    sb[8..12].copy_from_slice(&1u32.to_le_bytes()); // version
    sb[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: normal
    sb[16..32].copy_from_slice(&params.uuid);
    sb[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
    sb[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    sb[72..80].copy_from_slice(&params.data_blocks.to_le_bytes());
    sb[80..82].copy_from_slice(&(SALT_SIZE as u16).to_le_bytes());
    sb[88..88 + SALT_SIZE].copy_from_slice(&params.salt);
    sb
}

/// A parsed verity superblock (any salt size; other fields as on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub hash_type: u32,
    pub uuid: [u8; 16],
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl Superblock {
    /// Parses the first 512 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let sb = bytes
            .get(..SUPERBLOCK_SIZE)
            .ok_or_else(|| Error::BadSuperblock(format!("needs {SUPERBLOCK_SIZE} bytes")))?;
        if &sb[0..8] != MAGIC {
            return Err(Error::BadSuperblock("no \"verity\" magic".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&sb[72..80]);
        let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
        if salt_size > 256 {
            return Err(Error::BadSuperblock(format!("salt size {salt_size} > 256")));
        }
        let alg = &sb[32..64];
        let alg_len = alg.iter().position(|&b| b == 0).unwrap_or(alg.len());
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[16..32]);
        Ok(Superblock {
            version: u32_at(8),
            hash_type: u32_at(12),
            uuid,
            algorithm: String::from_utf8_lossy(&alg[..alg_len]).into_owned(),
            data_block_size: u32_at(64),
            hash_block_size: u32_at(68),
            data_blocks: u64::from_le_bytes(blocks),
            salt: sb[88..88 + salt_size].to_vec(),
        })
    }
}

/// Reads the superblock at `hash_offset`.
pub fn read_superblock(dev: &File, hash_offset: u64) -> Result<Superblock, Error> {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    dev.read_exact_at(&mut sb, hash_offset)
        .map_err(io_err("reading the verity superblock"))?;
    Superblock::parse(&sb)
}

/// Recomputes the tree and checks it the way the kernel would: the superblock against
/// `info`, the top block against the root hash, each level against the one above, and
/// finally every data block against level 0. The first mismatch is reported.
pub fn verify(dev: &mut File, info: &VerityInfo) -> Result<(), Error> {
    if info.data_block_size as u64 != BLOCK_SIZE || info.hash_block_size as u64 != BLOCK_SIZE {
        return Err(Error::InvalidParams(
            "only 4096-byte blocks are supported".into(),
        ));
    }
    let geo = check_layout(info.data_blocks, info.hash_offset)?;
    if info.hash_size != geo.total_blocks * BLOCK_SIZE {
        return Err(Error::InvalidParams(format!(
            "hash_size {} does not match {} for {} data blocks",
            info.hash_size,
            geo.total_blocks * BLOCK_SIZE,
            info.data_blocks
        )));
    }
    let dev: &File = dev;
    let len = file_len(dev)?;
    let needed = info.hash_offset + info.hash_size;
    if len < needed {
        return Err(Error::TooShort {
            what: "verity hash area",
            needed,
            len,
        });
    }
    let mut area = vec![0u8; to_usize(info.hash_size)];
    dev.read_exact_at(&mut area, info.hash_offset)
        .map_err(io_err("reading the verity hash area"))?;

    let sb = Superblock::parse(&area)?;
    let expected = [
        ("version", sb.version == 1),
        ("hash type", sb.hash_type == 1),
        ("algorithm", sb.algorithm == ALGORITHM),
        (
            "data block size",
            u64::from(sb.data_block_size) == BLOCK_SIZE,
        ),
        (
            "hash block size",
            u64::from(sb.hash_block_size) == BLOCK_SIZE,
        ),
        ("data blocks", sb.data_blocks == info.data_blocks),
        ("salt", sb.salt == info.salt),
    ];
    if let Some((field, _)) = expected.iter().find(|(_, ok)| !ok) {
        return Err(Error::BadSuperblock(format!(
            "{field} differs from the expected value"
        )));
    }

    let salted = Sha256::new_with_prefix(info.salt);
    let mut digest = [0u8; DIGEST_SIZE];
    let Some(&(top_start, _)) = geo.levels.last() else {
        hash_data(dev, 1, &salted, &mut digest)?;
        return match digest == info.root_hash {
            true => Ok(()),
            false => Err(Error::DataBlockMismatch { block: 0 }),
        };
    };
    hash_blocks(
        &salted,
        &area[block_range(top_start, BLOCK_SIZE)],
        &mut digest,
    );
    if digest != info.root_hash {
        return Err(Error::RootHashMismatch {
            expected: hex::encode(info.root_hash),
            actual: hex::encode(digest),
        });
    }
    for level in (0..geo.levels.len() - 1).rev() {
        let (start, count) = geo.levels[level];
        let (parent_start, _) = geo.levels[level + 1];
        let blocks = &area[block_range(start, count * BLOCK_SIZE)];
        let parents = &area[block_range(parent_start, count * DIGEST_SIZE as u64)];
        for (i, (block, want)) in blocks
            .chunks_exact(BS)
            .zip(parents.chunks_exact(DIGEST_SIZE))
            .enumerate()
        {
            hash_blocks(&salted, block, &mut digest);
            if digest != want {
                return Err(Error::HashBlockMismatch {
                    level,
                    block: i as u64,
                });
            }
        }
    }
    let mut actual = vec![0u8; to_usize(info.data_blocks * DIGEST_SIZE as u64)];
    hash_data(dev, info.data_blocks, &salted, &mut actual)?;
    let stored = &area[block_range(geo.levels[0].0, actual.len() as u64)];
    match actual
        .chunks_exact(DIGEST_SIZE)
        .zip(stored.chunks_exact(DIGEST_SIZE))
        .position(|(a, s)| a != s)
    {
        Some(block) => Err(Error::DataBlockMismatch {
            block: block as u64,
        }),
        None => Ok(()),
    }
}

impl VerityInfo {
    pub fn root_hash_hex(&self) -> String {
        hex::encode(self.root_hash)
    }

    pub fn salt_hex(&self) -> String {
        hex::encode(self.salt)
    }

    /// Bytes of data covered by the tree.
    pub fn data_size(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size)
    }

    /// Hash block where the tree starts, after the superblock (dm table `hash_start_block`).
    pub fn hash_start_block(&self) -> u64 {
        self.hash_offset / u64::from(self.hash_block_size) + 1
    }

    /// Arguments for `veritysetup verify` (without the program name).
    pub fn veritysetup_verify_args(&self, data_dev: &str, hash_dev: &str) -> Vec<String> {
        vec![
            "verify".into(),
            data_dev.into(),
            hash_dev.into(),
            self.root_hash_hex(),
            format!("--hash-offset={}", self.hash_offset),
        ]
    }

    /// Arguments for `veritysetup open` (without the program name).
    pub fn veritysetup_open_args(&self, data_dev: &str, name: &str, hash_dev: &str) -> Vec<String> {
        vec![
            "open".into(),
            data_dev.into(),
            name.into(),
            hash_dev.into(),
            self.root_hash_hex(),
            format!("--hash-offset={}", self.hash_offset),
        ]
    }

    /// A device-mapper table line (`dmsetup create --table`, `dm-mod.create=`), e.g.
    /// `0 <sectors> verity 1 <data> <hash> 4096 4096 <blocks> <hash start> sha256 <root> <salt>`,
    /// followed by the optional arguments (such as `panic_on_corruption`) and their count.
    pub fn dm_table(&self, data_dev: &str, hash_dev: &str, opt_args: &[&str]) -> String {
        let mut t = format!(
            "0 {} verity 1 {data_dev} {hash_dev} {} {} {} {} {ALGORITHM} {} {}",
            self.data_size() / 512,
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block(),
            self.root_hash_hex(),
            self.salt_hex(),
        );
        if !opt_args.is_empty() {
            t.push_str(&format!(" {} {}", opt_args.len(), opt_args.join(" ")));
        }
        t
    }
}

/// Hashes `mib` MiB of pseudo-random data in a temporary file in `dir` and returns
/// the throughput of [`format`] in MB/s (10^6 bytes per second of wall time).
pub fn bench(dir: &std::path::Path, mib: u64) -> Result<f64, Error> {
    let path = dir.join(format!("verity-bench-{}", std::process::id()));
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    let result = (|| {
        // xorshift keeps the data incompressible without a random-number dependency.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; READ_CHUNK];
        for i in 0..mib {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all_at(&buf, i * READ_CHUNK as u64)
                .map_err(io_err("writing benchmark data"))?;
        }
        let params = Params {
            data_blocks: mib * BLOCKS_PER_CHUNK as u64,
            hash_offset: mib * READ_CHUNK as u64,
            salt: [7; SALT_SIZE],
            uuid: [0; 16],
        };
        let t = std::time::Instant::now();
        format(&mut f, &params)?;
        Ok((mib * READ_CHUNK as u64) as f64 / t.elapsed().as_secs_f64() / 1e6)
    })();
    let _ = std::fs::remove_file(&path);
    result
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
                geometry(n).map(|g| g.total_blocks).ok(),
                Some(blocks),
                "{n}"
            );
        }
        assert!(geometry(0).is_err());
    }

    #[test]
    fn superblock_round_trips() {
        let p = Params {
            data_blocks: 42,
            hash_offset: 42 * BLOCK_SIZE,
            salt: [3; 32],
            uuid: [9; 16],
        };
        let sb = Superblock::parse(&superblock(&p)).expect("parse");
        assert_eq!(sb.data_blocks, 42);
        assert_eq!(sb.salt, vec![3; 32]);
        assert_eq!(sb.uuid, [9; 16]);
        assert_eq!(sb.algorithm, "sha256");
    }

    #[test]
    fn rejects_bad_layout() {
        assert!(matches!(
            check_layout(10, 4096),
            Err(Error::InvalidParams(_))
        ));
        assert!(matches!(
            check_layout(1, 4097),
            Err(Error::InvalidParams(_))
        ));
    }
}
