//! The manifest document and its consistency rules.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CheckError, Error, MANIFEST_FILE, PublicKey, SIGNATURES_FILE, Version, verify_signed};

/// The manifest format this crate reads and writes.
pub const FORMAT: u64 = 1;
/// Chunk size bounds. The upper bound also bounds the memory an agent needs to hold
/// and decompress one chunk.
pub const MIN_CHUNK_SIZE: u64 = 4096;
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;
/// Refuse to even parse a manifest bigger than this (about 150 000 chunks).
const MAX_MANIFEST: u64 = 64 << 20;

/// A sha256 digest (or the verity salt), written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hex32(pub [u8; 32]);

impl TryFrom<String> for Hex32 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let mut out = [0u8; 32];
        // Lowercase only, so each hash has exactly one spelling in the signed bytes.
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("{s:?} is not 64 lowercase hex digits"));
        }
        hex::decode_to_slice(&s, &mut out).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Hex32(out))
    }
}

impl From<Hex32> for String {
    fn from(h: Hex32) -> String {
        hex::encode(h.0)
    }
}

impl fmt::Display for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hex32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hex32({self})")
    }
}

/// The signed description of a release. Field order here is the order in the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: u64,
    pub board: String,
    pub arch: String,
    pub version: Version,
    /// Unix seconds (the build's SOURCE_DATE_EPOCH).
    pub created: u64,
    /// Unix seconds after which agents refuse the release (freeze attacks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// `name=version` for every package in the image (the lockfile).
    pub packages: Vec<String>,
    pub images: Vec<Image>,
}

/// One image of the release ("usr", "kernel", "initrd", "cmdline", "boot.sig", ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// sha256 of the whole uncompressed image.
    pub sha256: Hex32,
    pub chunk_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verity: Option<Verity>,
    pub chunks: Vec<Chunk>,
}

/// One chunk: bytes `[offset, offset + size)` of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    pub index: u64,
    pub offset: u64,
    pub size: u64,
    /// sha256 of the uncompressed bytes.
    pub sha256: Hex32,
    /// Compressed size.
    pub zsize: u64,
    /// sha256 of the compressed bytes, checked before decompressing.
    pub zsha256: Hex32,
    /// Path relative to the release directory: `chunks/<zsha256>.zst`.
    pub file: String,
}

/// dm-verity parameters of an image whose hash tree is inside it (see `verity-tree`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verity {
    pub root_hash: Hex32,
    pub salt: Hex32,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub hash_size: u64,
}

impl From<verity_tree::VerityInfo> for Verity {
    fn from(i: verity_tree::VerityInfo) -> Self {
        Verity {
            root_hash: Hex32(i.root_hash),
            salt: Hex32(i.salt),
            data_blocks: i.data_blocks,
            hash_offset: i.hash_offset,
            hash_size: i.hash_size,
        }
    }
}

impl Verity {
    /// For `verity_tree::verify` and for rendering a dm table.
    pub fn to_info(&self) -> verity_tree::VerityInfo {
        verity_tree::VerityInfo {
            root_hash: self.root_hash.0,
            salt: self.salt.0,
            data_blocks: self.data_blocks,
            hash_offset: self.hash_offset,
            hash_size: self.hash_size,
            data_block_size: verity_tree::BLOCK_SIZE as u32,
            hash_block_size: verity_tree::BLOCK_SIZE as u32,
        }
    }
}

/// `chunks/<zsha256>.zst`: content-addressed, so identical chunks share one file and
/// the name can never point outside the release.
pub fn chunk_file_name(zsha256: &Hex32) -> String {
    format!("{}/{zsha256}.zst", crate::CHUNKS_DIR)
}

/// ZSTD_COMPRESSBOUND: the most zstd can ever emit for `size` input bytes.
pub(crate) fn zstd_bound(size: u64) -> u64 {
    let small = if size < (128 << 10) {
        ((128 << 10) - size) >> 11
    } else {
        0
    };
    size + (size >> 8) + small
}

fn check_name(field: &'static str, value: &str) -> Result<(), CheckError> {
    if value.is_empty() {
        return Err(CheckError::Empty(field));
    }
    let ok = !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(CheckError::BadName {
            field,
            value: value.to_string(),
        }),
    }
}

impl Manifest {
    /// Parses and [`check`](Self::check)s a manifest. JSON syntax errors give
    /// [`Error::MalformedJson`]; unknown fields, wrong types or a bad version give
    /// [`Error::ManifestSchema`]; another `format` gives [`Error::UnsupportedFormat`].
    /// Does not check signatures: see [`Manifest::parse_signed`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        let json_err = |e: serde_json::Error| match e.classify() {
            serde_json::error::Category::Data => Error::ManifestSchema(e.to_string()),
            _ => Error::MalformedJson(e.to_string()),
        };
        // Read the format first so a newer manifest says so instead of failing on
        // fields this version does not know.
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u64,
        }
        let f: FormatOnly = serde_json::from_slice(bytes).map_err(json_err)?;
        if f.format != FORMAT {
            return Err(Error::UnsupportedFormat(f.format));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(json_err)?;
        m.check()?;
        Ok(m)
    }

    /// Pretty JSON with a trailing newline; the field order is fixed by the structs.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain structs of strings, integers and lists with string keys: serde_json
        // only fails on non-string map keys or failing writers, neither possible here.
        let mut out = serde_json::to_vec_pretty(self).expect("a Manifest always serializes");
        out.push(b'\n');
        out
    }

    /// Verifies the signatures over `document`, then parses and checks it.
    pub fn parse_signed(
        document: &[u8],
        sigs: &[u8],
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<Self, Error> {
        verify_signed(document, sigs, trusted, threshold)?;
        Self::from_json(document)
    }

    /// [`parse_signed`](Self::parse_signed) on `dir/manifest.json` and its `.sig`.
    pub fn load(
        dir: impl AsRef<Path>,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let read = |name: &str| -> Result<Vec<u8>, Error> {
            let path = dir.join(name);
            let f = std::fs::File::open(&path).map_err(Error::io(&path))?;
            let mut buf = Vec::new();
            f.take(MAX_MANIFEST + 1)
                .read_to_end(&mut buf)
                .map_err(Error::io(&path))?;
            if buf.len() as u64 > MAX_MANIFEST {
                return Err(Error::MalformedJson(format!(
                    "{} is over {MAX_MANIFEST} bytes",
                    path.display()
                )));
            }
            Ok(buf)
        };
        let document = read(MANIFEST_FILE)?;
        let sigs = read(SIGNATURES_FILE)?;
        Self::parse_signed(&document, &sigs, trusted, threshold)
    }

    pub fn image(&self, name: &str) -> Result<&Image, Error> {
        self.images
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::UnknownImage(name.to_string()))
    }

    /// Refuses a release whose expiry is at or before `now` (unix seconds).
    pub fn check_expiry(&self, now: u64) -> Result<(), Error> {
        match self.expires {
            Some(expires) if now >= expires => Err(Error::Expired { expires, now }),
            _ => Ok(()),
        }
    }

    /// Internal consistency: names, packages, and for each image that the chunks
    /// cover `[0, size)` contiguously at `index * chunk_size`, with plausible sizes,
    /// content-addressed file names and a verity geometry that fits the image.
    pub fn check(&self) -> Result<(), CheckError> {
        check_name("board", &self.board)?;
        check_name("arch", &self.arch)?;
        if let Some(expires) = self.expires
            && expires <= self.created
        {
            return Err(CheckError::Expiry {
                created: self.created,
                expires,
            });
        }
        let mut packages = BTreeSet::new();
        for p in &self.packages {
            let (name, version) = p
                .split_once('=')
                .ok_or_else(|| CheckError::BadPackage(p.clone()))?;
            let clean =
                |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
            if !clean(name) || !clean(version) {
                return Err(CheckError::BadPackage(p.clone()));
            }
            if !packages.insert(name) {
                return Err(CheckError::DuplicatePackage(name.to_string()));
            }
        }
        if self.images.is_empty() {
            return Err(CheckError::NoImages);
        }
        let mut names = BTreeSet::new();
        for image in &self.images {
            check_name("image name", &image.name)?;
            if !names.insert(image.name.as_str()) {
                return Err(CheckError::DuplicateImage(image.name.clone()));
            }
            image.check()?;
        }
        Ok(())
    }
}

impl Image {
    /// The per-image part of [`Manifest::check`].
    pub fn check(&self) -> Result<(), CheckError> {
        let image = || self.name.clone();
        let cs = self.chunk_size;
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&cs) || !cs.is_multiple_of(4096) {
            return Err(CheckError::BadChunkSize {
                image: image(),
                chunk_size: cs,
            });
        }
        let mut expected_offset = 0u64;
        for (position, c) in self.chunks.iter().enumerate() {
            if c.index != position as u64 {
                return Err(CheckError::ChunkIndex {
                    image: image(),
                    position,
                    index: c.index,
                });
            }
            if c.offset != expected_offset {
                return Err(CheckError::ChunkOffset {
                    image: image(),
                    index: c.index,
                    offset: c.offset,
                    expected: expected_offset,
                });
            }
            let last = position + 1 == self.chunks.len();
            let size_ok = if last {
                (1..=cs).contains(&c.size)
            } else {
                c.size == cs
            };
            if !size_ok {
                return Err(CheckError::ChunkSize {
                    image: image(),
                    index: c.index,
                    size: c.size,
                });
            }
            if c.zsize == 0 || c.zsize > zstd_bound(c.size) {
                return Err(CheckError::ChunkZsize {
                    image: image(),
                    index: c.index,
                    size: c.size,
                    zsize: c.zsize,
                });
            }
            if c.file != chunk_file_name(&c.zsha256) {
                return Err(CheckError::ChunkFile {
                    image: image(),
                    index: c.index,
                    file: c.file.clone(),
                });
            }
            // Saturating: a bogus sum then fails the coverage check below.
            expected_offset = expected_offset.saturating_add(c.size);
        }
        if expected_offset != self.size {
            return Err(CheckError::Coverage {
                image: image(),
                covered: expected_offset,
                size: self.size,
            });
        }
        if let Some(v) = &self.verity {
            let problem = |p: String| CheckError::Verity {
                image: image(),
                problem: p,
            };
            let expected =
                verity_tree::hash_size(v.data_blocks).map_err(|e| problem(e.to_string()))?;
            if v.hash_size != expected {
                return Err(problem(format!(
                    "hash_size {} should be {expected} for {} data blocks",
                    v.hash_size, v.data_blocks
                )));
            }
            let data_end = v.data_blocks.checked_mul(verity_tree::BLOCK_SIZE);
            let hash_end = v.hash_offset.checked_add(v.hash_size);
            let fits = matches!((data_end, hash_end), (Some(d), Some(h)) if d <= v.hash_offset && h <= self.size);
            if !fits || !v.hash_offset.is_multiple_of(verity_tree::BLOCK_SIZE) {
                return Err(problem(format!(
                    "area (data {} blocks, hash at {} + {}) does not fit the {}-byte image",
                    v.data_blocks, v.hash_offset, v.hash_size, self.size
                )));
            }
        }
        Ok(())
    }
}
