//! dm-verity hash tree, byte-compatible with `veritysetup format`.
//!
//! Only the configuration Cairn uses is supported: format version 1 (hash type 1,
//! "normal"), sha256, 4096-byte data and hash blocks, a salt (32 bytes when Cairn
//! makes the tree), and a superblock. The hash area lives in the same file as the
//! data, after it, which is the layout of
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
//! # Parts
//! * The core, `no_std` + `alloc` (build with `default-features = false`): the one
//!   definition of the geometry ([`Geometry`], [`Layout`]: levels, hash area size,
//!   `hash_start_block`, the dm table), the [`Superblock`] (parse, check, build), the
//!   [`root_hash`], [`VerityInfo`], the streaming verifier [`VerityStream`], which
//!   checks an image fed in order (the updater, while it reads a slot back), and
//!   [`TreeBuilder`], the tree from level-0 digests added in any order (the
//!   updater's delta path computes the hash area instead of fetching it).
//! * Feature `std` (default): `format` and `verify` on a file or block device,
//!   and `read_level0`: the level-0 digests of an image from its hash area
//!   alone, every level checked up to the root (the updater's delta path keys
//!   the active slot's blocks by them instead of hashing its data). The
//!   whole tree is built in memory (about 1/128 of the data size) and written with a
//!   single positioned write. Nothing is fsynced: call `File::sync_all` if it matters.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

mod geometry;
mod info;
mod stream;
mod superblock;
mod tree;

#[cfg(feature = "std")]
mod file;

pub use geometry::{
    Geometry, GeometryError, Layout, Level, MAX_LEVELS, block_hash, hash_size, root_hash,
};
pub use info::{Params, VerityInfo};
pub use stream::{StreamError, VerityStream};
pub use superblock::{Mismatch, Mismatches, Superblock, SuperblockError, check_superblock};
pub use tree::TreeBuilder;

#[cfg(feature = "std")]
pub use file::{Error, bench, format, read_level0, read_superblock, verify};

/// Data and hash block size, in bytes.
pub const BLOCK_SIZE: u64 = 4096;
/// Size of a sha256 digest, in bytes.
pub const DIGEST_SIZE: usize = 32;
/// Size of the on-disk superblock structure (it occupies a whole hash block).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Salt size used by Cairn (veritysetup's default).
pub const SALT_SIZE: usize = 32;
/// Largest salt the superblock (and veritysetup) allows, in bytes.
pub const MAX_SALT_SIZE: usize = 256;
/// The hash algorithm, as named in the superblock and the dm table.
pub const ALGORITHM: &str = "sha256";

const BS: usize = BLOCK_SIZE as usize;
