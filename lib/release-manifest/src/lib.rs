//! Release manifests, chunked payloads, signing keys and threshold signatures.
//!
//! A Cairn release is a directory of static files that any HTTP server or CDN can
//! serve:
//!
//! ```text
//! manifest.json          the signed document (exact bytes are what is signed)
//! manifest.json.sig      [{"keyid": "<16 hex>", "sig": "<128 hex>"}, ...]
//! chunks/<zsha256>.zst   zstd-compressed chunks, named by the hash of their bytes
//! ```
//!
//! # Keys
//! Ed25519. The secret key file is one line `cairn-ed25519-secret <64 hex of the
//! 32-byte seed>` (mode 0600; files readable by group or others are refused), the
//! public one `cairn-ed25519-public <64 hex>`. A key id is the first 16 hex
//! characters of sha256(public key bytes). See [`KeyPair`] and [`PublicKey`].
//!
//! # Signatures
//! Signatures are over the exact bytes of `manifest.json`, so there is no
//! canonicalization step to get wrong. [`verify_signed`] counts *distinct* trusted
//! keys with a valid `verify_strict` signature and requires at least `threshold`.
//! Key rotation: sign with old and new keys during the overlap; agents trust a set.
//!
//! # Manifest
//! [`Manifest`] (`format: 1`, unknown fields refused) names board, arch, version,
//! creation and optional expiry time, the package lock list and, for every image, its
//! size, sha256 and chunks. One manifest covers every image of a release, so images
//! of different releases cannot be mixed. Each chunk lists the plain and compressed
//! size and sha256; the compressed hash is checked before decompressing and the
//! decompressed output is capped at the signed size ([`ChunkVerifier`]).
//! Chunks are cut at fixed offsets (`index * chunk_size`), so a download can resume
//! at the first chunk not yet verified and a delta only fetches chunks whose hash
//! the host lacks.
//!
//! What the agent still has to do itself with the data here: refuse a version lower
//! than the highest it has seen ([`Version`] ordering, rollback) and a manifest past
//! its expiry ([`Manifest::check_expiry`], freeze).
//!
//! # Writing
//! [`ReleaseWriter`] cuts images into chunks (default 4 MiB), compresses each with
//! single-threaded zstd (level 3 by default) so the output is byte-reproducible,
//! writes every file via a temporary name and a rename, and finally writes and signs
//! the manifest. [`ReleaseWriter::begin_precompressed`] adds an image whose
//! chunks the caller compressed (several zstd frames a client can fetch by
//! Range, for `block-delta`); each chunk is still one valid zstd stream.
//!
//! # Example
//! ```no_run
//! use release_manifest::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Image builder.
//! let key = KeyPair::load_secret("keys/release.secret")?;
//! let mut w = ReleaseWriter::create("out/release")?;
//! w.add_image_file("usr", "out/usr.img", DEFAULT_CHUNK_SIZE, None)?;
//! let fields = ManifestFields {
//!     board: "qemu-x86_64".into(),
//!     arch: "x86_64".into(),
//!     version: Version::parse("1.2.0")?,
//!     created: 1_700_000_000,
//!     expires: None,
//!     packages: vec!["systemd=252.30-1".into()],
//! };
//! w.finish(fields, &[key])?;
//!
//! // Update agent: signature first, then freshness and rollback, then every byte.
//! let trusted = [PublicKey::load_public("/usr/share/cairn/release.public")?];
//! let m = Manifest::load("out/release", &trusted, 1)?;
//! m.check_expiry(1_700_000_100)?;
//! assert!(m.version > Version::parse("1.1.9")?);
//! let mut slot = std::fs::File::create("/tmp/usr-b")?;
//! extract_image("out/release", &m, "usr", &mut slot)?;
//! # Ok(())
//! # }
//! ```

mod error;
mod keys;
mod manifest;
mod reader;
mod sig;
mod version;
mod writer;

pub use error::{CheckError, Error};
pub use keys::{KeyPair, PublicKey};
pub use manifest::{
    Chunk, FORMAT, Hex32, Image, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, Manifest, Verity, chunk_file_name,
};
pub use reader::{ChunkVerifier, ImageReader, extract_image, read_image};
pub use sig::{SignatureEntry, add_signatures, sign_document, verify_signed};
pub use version::Version;
pub use writer::{
    DEFAULT_CHUNK_SIZE, DEFAULT_ZSTD_LEVEL, ManifestFields, PrecompressedImage, ReleaseWriter,
};

/// File name of the signed document inside a release directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of its signatures.
pub const SIGNATURES_FILE: &str = "manifest.json.sig";
/// Folder of the chunk files.
pub const CHUNKS_DIR: &str = "chunks";
