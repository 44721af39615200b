//! The veritysetup superblock (`struct verity_sb` of libcryptsetup): 512
//! bytes at the start of the hash area.
//!
//! ```text
//!  0  signature "verity\0\0"     64  data_block_size u32
//!  8  version u32 (1)            68  hash_block_size u32
//! 12  hash_type u32 (1, normal)  72  data_blocks u64
//! 16  uuid [16]                  80  salt_size u16
//! 32  algorithm [32], NUL-padded 88  salt [256]
//! ```

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::{ALGORITHM, BLOCK_SIZE, MAX_SALT_SIZE, SUPERBLOCK_SIZE};

const MAGIC: &[u8; 8] = b"verity\0\0";
const ALGORITHM_FIELD: usize = 32;

/// A superblock that cannot be read, or does not describe the tree expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuperblockError {
    #[error("needs {SUPERBLOCK_SIZE} bytes, has {len}")]
    Truncated { len: usize },
    #[error("no \"verity\" magic")]
    NoMagic,
    #[error("salt size {0} > {MAX_SALT_SIZE}")]
    SaltSize(usize),
    #[error("algorithm name longer than {ALGORITHM_FIELD} bytes")]
    AlgorithmName,
    #[error("does not match the expected parameters: {0}")]
    Mismatch(Mismatches),
}

/// One field of a superblock that is not what Cairn's trees have or what
/// the caller expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Version(u32),
    HashType(u32),
    Algorithm(String),
    BlockSizes { data: u32, hash: u32 },
    DataBlocks { found: u64, expected: u64 },
    Salt,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Version(v) => write!(f, "version {v}"),
            Mismatch::HashType(t) => write!(f, "hash type {t} (want 1, normal)"),
            Mismatch::Algorithm(a) => write!(f, "algorithm {a:?}"),
            Mismatch::BlockSizes { data, hash } => write!(f, "block sizes {data}/{hash}"),
            Mismatch::DataBlocks { found, expected } => {
                write!(f, "data_blocks {found}, expected {expected}")
            }
            Mismatch::Salt => f.write_str("salt differs"),
        }
    }
}

/// Every field that differs, in superblock order (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatches(pub Vec<Mismatch>);

impl fmt::Display for Mismatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
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

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Superblock {
    /// The superblock of a Cairn tree (version 1, normal hashes, sha256,
    /// 4096-byte blocks).
    pub fn new(uuid: [u8; 16], data_blocks: u64, salt: &[u8]) -> Superblock {
        Superblock {
            version: 1,
            hash_type: 1,
            uuid,
            algorithm: ALGORITHM.into(),
            data_block_size: BLOCK_SIZE as u32,
            hash_block_size: BLOCK_SIZE as u32,
            data_blocks,
            salt: salt.to_vec(),
        }
    }

    /// Parses the first 512 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SuperblockError> {
        let sb = bytes
            .get(..SUPERBLOCK_SIZE)
            .ok_or(SuperblockError::Truncated { len: bytes.len() })?;
        if &sb[0..8] != MAGIC {
            return Err(SuperblockError::NoMagic);
        }
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&sb[72..80]);
        let salt_size = usize::from(u16::from_le_bytes([sb[80], sb[81]]));
        if salt_size > MAX_SALT_SIZE {
            return Err(SuperblockError::SaltSize(salt_size));
        }
        let alg = &sb[32..32 + ALGORITHM_FIELD];
        let alg_len = alg.iter().position(|&b| b == 0).unwrap_or(alg.len());
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[16..32]);
        Ok(Superblock {
            version: u32_at(sb, 8),
            hash_type: u32_at(sb, 12),
            uuid,
            algorithm: String::from_utf8_lossy(&alg[..alg_len]).into_owned(),
            data_block_size: u32_at(sb, 64),
            hash_block_size: u32_at(sb, 68),
            data_blocks: u64::from_le_bytes(blocks),
            salt: sb[88..88 + salt_size].to_vec(),
        })
    }

    /// The 512 on-disk bytes.
    pub fn encode(&self) -> Result<[u8; SUPERBLOCK_SIZE], SuperblockError> {
        if self.salt.len() > MAX_SALT_SIZE {
            return Err(SuperblockError::SaltSize(self.salt.len()));
        }
        if self.algorithm.len() > ALGORITHM_FIELD {
            return Err(SuperblockError::AlgorithmName);
        }
        Ok(self.encode_unchecked())
    }

    /// [`Superblock::encode`] for fields known to fit (longer ones are cut).
    pub(crate) fn encode_unchecked(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut sb = [0u8; SUPERBLOCK_SIZE];
        let alg = &self.algorithm.as_bytes()[..self.algorithm.len().min(ALGORITHM_FIELD)];
        let salt = &self.salt[..self.salt.len().min(MAX_SALT_SIZE)];
        sb[0..8].copy_from_slice(MAGIC);
        sb[8..12].copy_from_slice(&self.version.to_le_bytes());
        sb[12..16].copy_from_slice(&self.hash_type.to_le_bytes());
        sb[16..32].copy_from_slice(&self.uuid);
        sb[32..32 + alg.len()].copy_from_slice(alg);
        sb[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        sb[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        sb[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        sb[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        sb[88..88 + salt.len()].copy_from_slice(salt);
        sb
    }

    /// Checks that this is the superblock of a Cairn tree (version 1, normal
    /// hashes, sha256, 4096-byte blocks) over `data_blocks` with `salt`, and
    /// names every field that is not.
    pub fn check(&self, data_blocks: u64, salt: &[u8]) -> Result<(), SuperblockError> {
        let mut problems = Vec::new();
        if self.version != 1 {
            problems.push(Mismatch::Version(self.version));
        }
        if self.hash_type != 1 {
            problems.push(Mismatch::HashType(self.hash_type));
        }
        if self.algorithm != ALGORITHM {
            problems.push(Mismatch::Algorithm(self.algorithm.clone()));
        }
        if u64::from(self.data_block_size) != BLOCK_SIZE
            || u64::from(self.hash_block_size) != BLOCK_SIZE
        {
            problems.push(Mismatch::BlockSizes {
                data: self.data_block_size,
                hash: self.hash_block_size,
            });
        }
        if self.data_blocks != data_blocks {
            problems.push(Mismatch::DataBlocks {
                found: self.data_blocks,
                expected: data_blocks,
            });
        }
        if self.salt != salt {
            problems.push(Mismatch::Salt);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SuperblockError::Mismatch(Mismatches(problems)))
        }
    }
}

/// Parses the superblock at the start of `bytes` and [checks](Superblock::check) it.
pub fn check_superblock(
    bytes: &[u8],
    data_blocks: u64,
    salt: &[u8],
) -> Result<Superblock, SuperblockError> {
    let sb = Superblock::parse(bytes)?;
    sb.check(data_blocks, salt)?;
    Ok(sb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Params;
    use alloc::vec;

    #[test]
    fn superblock_round_trips() {
        let p = Params {
            data_blocks: 42,
            hash_offset: 42 * BLOCK_SIZE,
            salt: [3; 32],
            uuid: [9; 16],
        };
        let sb = Superblock::parse(&p.superblock()).expect("parse");
        assert_eq!(sb.data_blocks, 42);
        assert_eq!(sb.salt, vec![3; 32]);
        assert_eq!(sb.uuid, [9; 16]);
        assert_eq!(sb.algorithm, "sha256");
        assert_eq!(sb, Superblock::new([9; 16], 42, &[3; 32]));
        assert_eq!(sb.encode(), Ok(p.superblock()));
    }

    #[test]
    fn superblock_is_checked_against_the_expected_parameters() {
        let salt = [0xa1, 0xb2];
        let bytes = |sb: Superblock| sb.encode().expect("encode");
        let good = Superblock::new([0; 16], 300, &salt);
        assert_eq!(check_superblock(&bytes(good.clone()), 300, &salt), Ok(good));

        let e = check_superblock(&bytes(Superblock::new([0; 16], 299, &salt)), 300, &salt)
            .expect_err("data blocks");
        assert_eq!(
            alloc::format!("{e}"),
            "does not match the expected parameters: data_blocks 299, expected 300"
        );
        let e = check_superblock(
            &bytes(Superblock::new([0; 16], 300, &[0xa1, 0xb3])),
            300,
            &salt,
        )
        .expect_err("salt");
        assert_eq!(
            e,
            SuperblockError::Mismatch(Mismatches(vec![Mismatch::Salt]))
        );
        // Everything else Cairn fixes, all reported at once.
        let mut odd = Superblock::new([0; 16], 300, &salt);
        odd.version = 2;
        odd.hash_type = 0;
        odd.algorithm = "sha1".into();
        odd.hash_block_size = 512;
        let e = check_superblock(&bytes(odd), 300, &salt).expect_err("odd");
        assert_eq!(
            alloc::format!("{e}"),
            "does not match the expected parameters: version 2, hash type 0 (want 1, normal), \
             algorithm \"sha1\", block sizes 4096/512"
        );

        assert_eq!(
            check_superblock(&[0u8; 4096], 300, &salt),
            Err(SuperblockError::NoMagic)
        );
        assert_eq!(
            check_superblock(&[0u8; 100], 300, &salt),
            Err(SuperblockError::Truncated { len: 100 })
        );
        let mut big = bytes(Superblock::new([0; 16], 300, &salt));
        big[80..82].copy_from_slice(&257u16.to_le_bytes());
        assert_eq!(
            check_superblock(&big, 300, &salt),
            Err(SuperblockError::SaltSize(257))
        );
        assert_eq!(
            Superblock::new([0; 16], 1, &[0; 257]).encode(),
            Err(SuperblockError::SaltSize(257))
        );
    }
}
