//! The parts of cairn-build that tests and other tools use as a library.

pub mod board;

use std::path::PathBuf;

/// Where rootfs tarballs are cached: `$CAIRN_CACHE`, else `~/.cache/cairn`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    home.join(".cache/cairn")
}
