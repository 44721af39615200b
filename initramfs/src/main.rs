//! cairn-init: the initramfs /init
fn main() {}
