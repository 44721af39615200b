//! GPT slot attributes (priority, tries, successful), the boot slot choice
//! and crash-safe GPT updates. `no_std` + `alloc`: the boot manager uses it;
//! the `std` feature adds [`FileDevice`] for images and block devices.
#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod attrs;
#[cfg(feature = "std")]
pub mod booted;
mod choose;
mod crc32;
#[cfg(feature = "std")]
mod file;
mod gpt;

pub use attrs::{Attrs, FIELD_MAX, SLOT_BITS_MASK};
pub use choose::{
    Choice, DEFAULT_COMMITTED_TRIES, NotBootable, Reason, Refused, SlotState, UPDATE_PRIORITY,
    UPDATE_TRIES, after_refusal, arm_fallback, boot_attempt, choose, is_exhausted, mark_failed,
    mark_good, mark_unbootable, mark_updated, why_not,
};
pub use crc32::crc32;
#[cfg(feature = "std")]
pub use file::{FileDevice, committed_tries, detect_sector_size};
pub use gpt::{
    BlockDevice, CopyStatus, Entry, Gpt, GptError, Invalid, NoSuchEntry, Repaired, TableCopy,
};
