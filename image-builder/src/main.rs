//! cairn-build: board config + Debian packages -> GPT disk image and signed release
fn main() {}
