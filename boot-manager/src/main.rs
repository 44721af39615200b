//! cairn-boot.efi: the gptprio UEFI boot manager.
//!
//! Built for `x86_64-unknown-uefi` and `aarch64-unknown-uefi`. On the host
//! it is an empty program, so `cargo test --workspace` builds it and runs the
//! unit tests of its pure parts (command line, device paths). The decisions
//! themselves live in the host-tested `gpt-slots` crate; this app only does
//! the firmware I/O around them.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(target_os = "uefi")]
extern crate alloc;

#[cfg(target_os = "uefi")]
mod app;
mod cmdline;
mod devpath;
#[cfg(target_os = "uefi")]
mod initrd;

#[cfg(not(target_os = "uefi"))]
fn main() {}
