//! The kernel command line: the slot's signed `cmdline` file plus the keys
//! that tell cairn-init which slot was started.
#![cfg_attr(not(target_os = "uefi"), allow(dead_code))]

extern crate alloc;

use alloc::string::String;
use core::fmt;
use disk_layout::{Guid, Slot, cmdline};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineError {
    NotUtf8,
    /// UEFI load options are UCS-2: no NUL, nothing beyond U+FFFF.
    NotUcs2,
    /// `initrd=` would make the EFI stub read a file from the ESP that
    /// nobody verified; the initramfs is served from memory instead.
    InitrdOption,
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmdlineError::NotUtf8 => "cmdline is not UTF-8",
            CmdlineError::NotUcs2 => {
                "cmdline has characters UEFI cannot pass (NUL or beyond U+FFFF)"
            }
            CmdlineError::InitrdOption => {
                "cmdline has initrd=, which would load an unverified file"
            }
        })
    }
}

/// `<signed cmdline> cairn.slot=<a|b> cairn.usr=<partuuid>`. Trailing
/// whitespace and newlines of the file are dropped.
pub fn kernel_cmdline(signed: &[u8], slot: Slot, partuuid: Guid) -> Result<String, CmdlineError> {
    let text = core::str::from_utf8(signed)
        .map_err(|_| CmdlineError::NotUtf8)?
        .trim();
    if text.chars().any(|c| c == '\0' || u32::from(c) > 0xffff) {
        return Err(CmdlineError::NotUcs2);
    }
    if text
        .split_ascii_whitespace()
        .any(|w| w.starts_with("initrd="))
    {
        return Err(CmdlineError::InitrdOption);
    }
    let mut out = String::with_capacity(text.len() + 80);
    out.push_str(text);
    if !out.is_empty() {
        out.push(' ');
    }
    // Appended last so they win over any copy in the file: the kernel and
    // cairn-init take the last occurrence.
    out.push_str(cmdline::SLOT);
    out.push('=');
    out.push_str(slot.letter());
    out.push(' ');
    out.push_str(cmdline::USR_PARTUUID);
    out.push('=');
    let mut buf = [0u8; 36];
    out.push_str(partuuid.format(&mut buf));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: Guid = Guid::parse("0AB1C2D3-0000-4000-8000-00000000000F");

    #[test]
    fn appends_slot_and_lowercase_partuuid() {
        assert_eq!(
            kernel_cmdline(b"console=ttyS0 usrhash=ab\n", Slot::B, UUID),
            Ok("console=ttyS0 usrhash=ab cairn.slot=b cairn.usr=0ab1c2d3-0000-4000-8000-00000000000f".into())
        );
        assert_eq!(
            kernel_cmdline(b"", Slot::A, UUID),
            Ok("cairn.slot=a cairn.usr=0ab1c2d3-0000-4000-8000-00000000000f".into())
        );
    }

    #[test]
    fn refuses_what_cannot_be_passed_safely() {
        assert_eq!(
            kernel_cmdline(b"quiet initrd=\\x.img", Slot::A, UUID),
            Err(CmdlineError::InitrdOption)
        );
        assert_eq!(
            kernel_cmdline(b"a\xffb", Slot::A, UUID),
            Err(CmdlineError::NotUtf8)
        );
        assert_eq!(
            kernel_cmdline("x=\u{1F600}".as_bytes(), Slot::A, UUID),
            Err(CmdlineError::NotUcs2)
        );
        assert_eq!(
            kernel_cmdline(b"a\0b", Slot::A, UUID),
            Err(CmdlineError::NotUcs2)
        );
        // Only a whole word counts.
        assert!(kernel_cmdline(b"rd.initrd=1", Slot::A, UUID).is_ok());
    }
}
