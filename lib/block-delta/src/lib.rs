//! Block-level delta updates for a release image (the /usr slot).
//!
//! A host already holds most of a new release: measured on Cairn's own images,
//! 96 % of the 4 KiB blocks of a release with one package added exist somewhere
//! in the previous one, at shifted offsets. This crate lets it find them by
//! content and fetch only the rest, from static files, with few HTTP requests.
//!
//! # What a release carries (beside the unchanged full chunks)
//! Two extra images in the signed manifest, so an agent that does not know them
//! ignores them (it looks images up by name) and the manifest format stays 1:
//!
//! * `<image>.blocks` ([`blocks_image_name`]): every distinct 4 KiB block of the
//!   image once, in order of first occurrence, as ordinary chunks whose files are
//!   *concatenations of independent zstd frames* of [`Index::frame_blocks`]
//!   blocks each. A chunk file is still one valid zstd stream (publishing and
//!   full verification work unchanged), and every frame can be fetched with a
//!   Range request and decoded on its own.
//! * `<image>.blockindex` ([`index_image_name`]): the [`Index`], binary (see
//!   [`Index::encode`] for the layout): a short digest of every block of the
//!   image, and the compressed size and sha256 of every frame. It is signed like
//!   any image (its sha256 and chunk hashes are in the manifest).
//!
//! # Block digests are dm-verity level-0 hashes (format 3)
//! A format 3 index keys every block by the prefix of `sha256(salt ‖ block)`
//! with the image's dm-verity salt ([`DigestKind::Verity`]): the very entry
//! the image's hash tree holds for it at level 0. The image builder gives all
//! releases of a board one salt, so a host running one of them finds the keys
//! of its whole active slot in that slot's hash area (about 1/128 of the data,
//! checked up to the booted root hash) and plans without reading or hashing
//! its data. Format 2 ([`DigestKind::Sha256`], plain sha256) still decodes;
//! a host then hashes its slot as before.
//!
//! # Measured (`cargo xtask bench delta`, qemu-x86_64, 27 755 blocks, full /usr payload 76.5 MB)
//! 1-block frames, 8-byte frame hashes, the hash tree computed by the host
//! (never fetched): index 0.55 MB (0.72 %). Same inputs rebuilt: 0 blocks
//! fetched (the index only). One package added (htop): 1300 blocks, 2.65 MB
//! plus the index, 4.2 %; another kernel flavour: 1705 blocks, 5.9 %; a host
//! two releases behind (+ htop + jq): 1447 blocks, 4.8 %.
//!
//! # Why a short digest
//! The index is what a host must fetch before it can plan, and it should stay
//! under 1 % of the compressed payload. A 32-byte sha256 per 4 KiB block is
//! 0.78 % of the *uncompressed* image, more than 1 % of the compressed one;
//! the first [`DEFAULT_DIGEST_LEN`] bytes cost a quarter of that. The digest
//! only *finds* a candidate block: every block copied or fetched is checked
//! against the signed chunk sha256 before it is written and the signed
//! dm-verity root before the flip. Fetched frames must match the signed prefix
//! of their sha256 ([`DEFAULT_FRAME_HASH_LEN`] bytes) before zstd sees a byte. The builder lengthens the digest if two
//! distinct blocks of the image share a prefix ([`build`]).
//!
//! # Planning
//! [`plan`] is pure: the index, the located frames and the digests of the
//! host's active slot in, per target block "copy local block n" or "take block
//! k of frame f", plus the coalesced byte ranges to fetch and their total, out.

mod build;
mod format;
mod plan;

pub use build::{Added, BuildError, ChunkSink, add_to_release, build};
pub use format::{
    BLOCK_SIZE, DEFAULT_DIGEST_LEN, DEFAULT_FRAME_BLOCKS, DEFAULT_FRAME_HASH_LEN, DigestKind,
    FormatError, Frame, FrameLoc, Index, MAGIC, MAGIC_V2, MAX_DIGEST_LEN, MIN_DIGEST_LEN,
    SALT_SIZE, blocks_image_name, frame_bound, index_image_name, locate,
};
pub use plan::{DEFAULT_GAP, FetchRange, LocalBlocks, MAX_RANGE, Plan, Source, plan};
