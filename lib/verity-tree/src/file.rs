//! [`format`] and [`verify`] on a file or block device (feature `std`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::Sha256;

use crate::geometry::{Geometry, GeometryError, Layout, hash_blocks, salted};
use crate::superblock::{Superblock, SuperblockError, check_superblock};
use crate::{BLOCK_SIZE, BS, DIGEST_SIZE, Params, SALT_SIZE, SUPERBLOCK_SIZE, VerityInfo};

/// Data is read in 1 MiB pieces: big enough for sequential throughput, small enough
/// for two workers to each hold one.
const READ_CHUNK: usize = 1 << 20;
const BLOCKS_PER_CHUNK: usize = READ_CHUNK / BS;

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

impl From<GeometryError> for Error {
    fn from(e: GeometryError) -> Self {
        Error::InvalidParams(e.to_string())
    }
}

impl From<SuperblockError> for Error {
    fn from(e: SuperblockError) -> Self {
        Error::BadSuperblock(e.to_string())
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
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
    let layout = params.layout()?;
    let geo = layout.geometry();
    let dev: &File = dev;
    let data_len = geo.data_size();
    let len = file_len(dev)?;
    if len < data_len {
        return Err(Error::TooShort {
            what: "data blocks",
            needed: data_len,
            len,
        });
    }

    let total = usize::try_from(geo.hash_size())
        .map_err(|_| Error::InvalidParams("hash tree does not fit in memory".into()))?;
    let mut area = vec![0u8; total];
    area[..SUPERBLOCK_SIZE].copy_from_slice(&params.superblock());
    let root_hash = build_tree(dev, geo, &params.salt, &mut area)?;

    dev.write_all_at(&area, params.hash_offset)
        .map_err(io_err("writing the verity hash area"))?;
    Ok(VerityInfo {
        root_hash,
        salt: params.salt,
        data_blocks: params.data_blocks,
        hash_offset: params.hash_offset,
        hash_size: geo.hash_size(),
        data_block_size: BLOCK_SIZE as u32,
        hash_block_size: BLOCK_SIZE as u32,
    })
}

/// Fills the tree levels of `area` (laid out as on disk) and returns the root hash.
fn build_tree(
    dev: &File,
    geo: &Geometry,
    salt: &[u8; SALT_SIZE],
    area: &mut [u8],
) -> Result<[u8; DIGEST_SIZE], Error> {
    let salted = salted(salt);
    let levels = geo.levels();
    let Some(l0) = levels.first() else {
        // One data block: no tree, the root hash is the block's own hash.
        let mut h = [0u8; DIGEST_SIZE];
        hash_data(dev, geo.data_blocks(), &salted, &mut h)?;
        return Ok(h);
    };
    let l0 = block_range(l0.start, geo.data_blocks() * DIGEST_SIZE as u64);
    hash_data(dev, geo.data_blocks(), &salted, &mut area[l0])?;
    Ok(crate::tree::upper_levels(geo, &salted, area))
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

/// Reads the superblock at `hash_offset`.
pub fn read_superblock(dev: &File, hash_offset: u64) -> Result<Superblock, Error> {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    dev.read_exact_at(&mut sb, hash_offset)
        .map_err(io_err("reading the verity superblock"))?;
    Ok(Superblock::parse(&sb)?)
}

/// Recomputes the tree and checks it the way the kernel would: the superblock against
/// `info`, the top block against the root hash, each level against the one above, and
/// finally every data block against level 0. The first mismatch is reported.
pub fn verify(dev: &mut File, info: &VerityInfo) -> Result<(), Error> {
    let layout = info.layout()?;
    let geo = layout.geometry();
    let dev: &File = dev;
    let area = read_hash_area(dev, &layout, info)?;

    check_superblock(&area, info.data_blocks, &info.salt)?;

    let salted = salted(&info.salt);
    let levels = geo.levels();
    if levels.is_empty() {
        let mut digest = [0u8; DIGEST_SIZE];
        hash_data(dev, 1, &salted, &mut digest)?;
        return match digest == info.root_hash {
            true => Ok(()),
            false => Err(Error::DataBlockMismatch { block: 0 }),
        };
    }
    check_levels(geo, &salted, &area, &info.root_hash)?;
    let mut actual = vec![0u8; to_usize(info.data_blocks * DIGEST_SIZE as u64)];
    hash_data(dev, info.data_blocks, &salted, &mut actual)?;
    let stored = &area[block_range(levels[0].start, actual.len() as u64)];
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

/// The hash area of `info` on `dev` (superblock block first), refused when
/// the file ends before it does.
fn read_hash_area(dev: &File, layout: &Layout, info: &VerityInfo) -> Result<Vec<u8>, Error> {
    let len = file_len(dev)?;
    let needed = layout.hash_end();
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
    Ok(area)
}

/// Checks the top block of `area` (the hash area as on disk, superblock
/// block first) against `root` and every level against the one above it.
/// The tree must have a level.
fn check_levels(
    geo: &Geometry,
    salted: &Sha256,
    area: &[u8],
    root: &[u8; DIGEST_SIZE],
) -> Result<(), Error> {
    let levels = geo.levels();
    let mut digest = [0u8; DIGEST_SIZE];
    let top = levels[levels.len() - 1];
    hash_blocks(
        salted,
        &area[block_range(top.start, BLOCK_SIZE)],
        &mut digest,
    );
    if digest != *root {
        return Err(Error::RootHashMismatch {
            expected: hex::encode(root),
            actual: hex::encode(digest),
        });
    }
    for level in (0..levels.len() - 1).rev() {
        let (l, parent) = (levels[level], levels[level + 1]);
        let blocks = &area[block_range(l.start, l.blocks * BLOCK_SIZE)];
        let parents = &area[block_range(parent.start, l.blocks * DIGEST_SIZE as u64)];
        for (i, (block, want)) in blocks
            .chunks_exact(BS)
            .zip(parents.chunks_exact(DIGEST_SIZE))
            .enumerate()
        {
            hash_blocks(salted, block, &mut digest);
            if digest != want {
                return Err(Error::HashBlockMismatch {
                    level,
                    block: i as u64,
                });
            }
        }
    }
    Ok(())
}

/// The level-0 digests of the image on `dev` (`sha256(salt ‖ data block)`,
/// one per data block, in order), read from its hash area and checked
/// without reading a byte of data: the top block against `info.root_hash`,
/// then every level against the one above it, level 0 last. About 1/128 of
/// the data size is read. A digest returned is the one the kernel checks
/// that data block against; whether the block on disk still matches it is
/// not checked here (reading the data is what this avoids).
///
/// The superblock is not read: the kernel takes the tree's parameters from
/// the table (the root hash, salt and geometry in `info`), not from it.
/// Errors: [`Error::RootHashMismatch`] or [`Error::HashBlockMismatch`] when
/// the tree on disk is not the one `info` names, [`Error::TooShort`] and
/// [`Error::Io`] when it cannot be read, [`Error::InvalidParams`].
pub fn read_level0(dev: &File, info: &VerityInfo) -> Result<Vec<[u8; DIGEST_SIZE]>, Error> {
    let layout = info.layout()?;
    let geo = layout.geometry();
    let levels = geo.levels();
    let Some(l0) = levels.first() else {
        // One data block: no tree, its level-0 digest is the root hash.
        return Ok(vec![info.root_hash]);
    };
    let area = read_hash_area(dev, &layout, info)?;
    check_levels(geo, &salted(&info.salt), &area, &info.root_hash)?;
    let l0 = &area[block_range(l0.start, geo.data_blocks() * DIGEST_SIZE as u64)];
    Ok(l0
        .chunks_exact(DIGEST_SIZE)
        .map(|d| {
            let mut out = [0u8; DIGEST_SIZE];
            out.copy_from_slice(d);
            out
        })
        .collect())
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

    /// A file of `data_blocks` patterned blocks (`mul`: the pattern) with its
    /// tree `format`ted at `hash_offset`: the folder holding it, the open
    /// file, the data, the params and what `format` returned.
    fn formatted(
        data_blocks: u64,
        hash_offset: u64,
        salt: [u8; 32],
        (mul, modulo): (u64, u64),
    ) -> (tempfile::TempDir, File, Vec<u8>, Params, VerityInfo) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..data_blocks * BLOCK_SIZE)
            .map(|i| (i / 4096 * mul + i % modulo) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let params = Params {
            data_blocks,
            hash_offset,
            salt,
            uuid: [1; 16],
        };
        let info = format(&mut f, &params).unwrap();
        (dir, f, data, params, info)
    }

    /// The tree built from level-0 digests added in pieces, as the updater's
    /// delta path adds them, equals `format`'s: root and hash area (past the
    /// superblock block, which the builder leaves zero), for 0 to 2 levels
    /// and partial hash blocks.
    #[test]
    fn the_tree_builder_matches_format() {
        for data_blocks in [1u64, 2, 127, 128, 129, 300, 16_385] {
            let (dir, _f, data, params, info) =
                formatted(data_blocks, data_blocks * BLOCK_SIZE, [5; 32], (7, 251));
            let image = std::fs::read(dir.path().join("img")).unwrap();
            let mut tree = crate::TreeBuilder::new(data_blocks, &params.salt).unwrap();
            let half = (data_blocks / 2 * BLOCK_SIZE) as usize;
            // The second half first: pieces may come in any order.
            tree.add_blocks(half as u64 / BLOCK_SIZE, &data[half..]);
            tree.add_blocks(0, &data[..half]);
            let (area, root) = tree.finish();
            assert_eq!(root, info.root_hash, "{data_blocks} blocks: root");
            let stored = &image[info.hash_offset as usize..];
            assert_eq!(area.len(), stored.len(), "{data_blocks} blocks: size");
            assert!(area[BS..] == stored[BS..], "{data_blocks} blocks: tree");
        }
    }

    /// The level-0 digests read from the hash area are the salted hashes of
    /// the data blocks; a flipped byte in a level-0 block or in an upper
    /// block, or another root hash, is refused; a flipped data byte is not
    /// seen (no data is read).
    #[test]
    fn read_level0_checks_every_level_up_to_the_root() {
        // (data blocks, levels): 0, 1, 2 and 3 levels.
        for (data_blocks, depth) in [(1u64, 0usize), (100, 1), (300, 2), (16_385, 3)] {
            // A gap of one block between the data and the hash area.
            let (_dir, f, data, params, info) = formatted(
                data_blocks,
                (data_blocks + 1) * BLOCK_SIZE,
                [9; 32],
                (13, 241),
            );
            let geo = Geometry::new(data_blocks).unwrap();
            assert_eq!(geo.levels().len(), depth, "{data_blocks} blocks");
            let got = read_level0(&f, &info).unwrap();
            let salted = salted(&params.salt);
            let want: Vec<[u8; 32]> = data
                .chunks_exact(BS)
                .map(|b| {
                    let mut d = [0u8; 32];
                    hash_blocks(&salted, b, &mut d);
                    d
                })
                .collect();
            assert_eq!(got, want, "{data_blocks} blocks");

            // Data is not read: a flipped data byte goes unseen here.
            f.write_all_at(&[!data[5]], 5).unwrap();
            assert_eq!(read_level0(&f, &info).unwrap(), want);
            let mut other = info;
            other.root_hash[0] ^= 1;
            let r = read_level0(&f, &other);
            if depth == 0 {
                // No tree: the root is the one level-0 digest there is.
                assert_eq!(r.unwrap(), vec![other.root_hash]);
                continue;
            }
            assert!(matches!(r, Err(Error::RootHashMismatch { .. })), "{r:?}");

            // (hash block to flip, counted from the start of the area, level
            // whose check refuses it): the last level-0 block, and each
            // upper level's first block (the top one is checked by the root).
            let levels = geo.levels();
            let mut flips = vec![(levels[0].start + levels[0].blocks - 1, None)];
            for (n, l) in levels.iter().enumerate().skip(1) {
                let by = if n + 1 == depth { None } else { Some(n) };
                flips.push((l.start, by));
            }
            if depth > 1 {
                flips[0].1 = Some(0);
            }
            for (block, level) in flips {
                let at = info.hash_offset + block * BLOCK_SIZE + 17;
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, at).unwrap();
                f.write_all_at(&[!b[0]], at).unwrap();
                let r = read_level0(&f, &info);
                match level {
                    Some(level) => assert!(
                        matches!(r, Err(Error::HashBlockMismatch { level: l, .. }) if l == level),
                        "{data_blocks} blocks, hash block {block}: {r:?}"
                    ),
                    None => assert!(
                        matches!(r, Err(Error::RootHashMismatch { .. })),
                        "{data_blocks} blocks, hash block {block}: {r:?}"
                    ),
                }
                f.write_all_at(&b, at).unwrap();
                assert_eq!(read_level0(&f, &info).unwrap(), want);
            }
            // A hash area cut short is refused, not read past its end.
            f.set_len(info.hash_offset + info.hash_size - 1).unwrap();
            let r = read_level0(&f, &info);
            assert!(matches!(r, Err(Error::TooShort { .. })), "{r:?}");
        }
    }

    #[test]
    fn bad_parameters_are_invalid_params() {
        let mut f = tempfile::tempfile().expect("tempfile");
        for (data_blocks, hash_offset) in [(10, 4096), (1, 4097), (0, 4096)] {
            let p = Params {
                data_blocks,
                hash_offset,
                salt: [0; 32],
                uuid: [0; 16],
            };
            assert!(
                matches!(format(&mut f, &p), Err(Error::InvalidParams(_))),
                "{data_blocks} {hash_offset}"
            );
        }
    }
}
