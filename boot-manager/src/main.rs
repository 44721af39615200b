//! cairn-boot.efi: the gptprio UEFI boot manager
fn main() {}
