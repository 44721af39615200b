//! What a tree is made from ([`Params`]) and what opening or checking it
//! needs ([`VerityInfo`]).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::geometry::{self, GeometryError, Layout};
use crate::superblock::Superblock;
use crate::{BLOCK_SIZE, DIGEST_SIZE, SALT_SIZE, SUPERBLOCK_SIZE};

/// Input of `format`.
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

impl Params {
    pub fn layout(&self) -> Result<Layout, GeometryError> {
        Layout::new(self.data_blocks, self.hash_offset)
    }

    /// The superblock veritysetup writes for these parameters.
    pub fn superblock(&self) -> [u8; SUPERBLOCK_SIZE] {
        Superblock::new(self.uuid, self.data_blocks, &self.salt).encode_unchecked()
    }
}

/// Result of `format`; everything needed to open or verify the device.
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

impl VerityInfo {
    /// The placement of the tree, after checking that these parameters
    /// describe one: 4096-byte blocks, a valid [`Layout`], and the hash size
    /// that layout has.
    pub fn layout(&self) -> Result<Layout, GeometryError> {
        if u64::from(self.data_block_size) != BLOCK_SIZE
            || u64::from(self.hash_block_size) != BLOCK_SIZE
        {
            return Err(GeometryError::BlockSize {
                data: self.data_block_size,
                hash: self.hash_block_size,
            });
        }
        let layout = Layout::new(self.data_blocks, self.hash_offset)?;
        let expected = layout.geometry().hash_size();
        if self.hash_size != expected {
            return Err(GeometryError::HashSize {
                hash_size: self.hash_size,
                expected,
                data_blocks: self.data_blocks,
            });
        }
        Ok(layout)
    }

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
        geometry::hash_start_block(self.hash_offset)
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
    /// The same text as [`Layout::dm_table`].
    pub fn dm_table(&self, data_dev: &str, hash_dev: &str, opt_args: &[&str]) -> String {
        format!(
            "0 {} verity {}",
            self.data_size() / 512,
            geometry::table_params(
                self.data_blocks,
                self.hash_start_block(),
                data_dev,
                hash_dev,
                &self.root_hash_hex(),
                &self.salt_hex(),
                opt_args,
            )
        )
    }
}
