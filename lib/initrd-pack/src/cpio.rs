//! A deterministic cpio "newc" (SVR4, no CRC) writer: the only archive format
//! the kernel unpacks into the initramfs.
//!
//! Determinism: entries are kept in a `BTreeMap`, so they are written sorted by
//! path (a parent always sorts before its children, because a prefix sorts
//! first); inode numbers are assigned sequentially in that order; owner is
//! root; every entry carries the same mtime. Nothing is read from the build
//! host's file metadata, so device nodes need no root privileges.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// Errors from building an archive in memory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    #[error("invalid archive path {0:?}: must be relative, without empty, '.' or '..' components")]
    InvalidPath(String),
    #[error("archive path {0:?} added twice")]
    Duplicate(String),
    #[error("archive path {0:?} is needed as a directory but is not one")]
    NotADirectory(String),
    #[error("archive entry {0:?} is larger than the 4 GiB newc limit")]
    TooLarge(String),
}

/// What an archive entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: EntryKind,
    /// Permission bits only (0o7777); the file type comes from `kind`.
    perm: u32,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Magic of the newc format (no checksum).
const NEWC_MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

/// An in-memory cpio archive.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    mtime: u32,
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// An empty archive whose entries all get `mtime` (seconds since the
    /// epoch; 0 or SOURCE_DATE_EPOCH for reproducible output).
    pub fn new(mtime: u32) -> Archive {
        Archive {
            mtime,
            entries: BTreeMap::new(),
        }
    }

    /// Adds a directory (and any missing parents, mode 0755). Adding an
    /// existing directory again only updates its permissions.
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        let path = check_path(path)?;
        self.ensure_parents(&path)?;
        match self.entries.get_mut(&path) {
            Some(Entry {
                kind: EntryKind::Dir,
                perm: p,
            }) => {
                *p = perm & 0o7777;
                Ok(())
            }
            Some(_) => Err(CpioError::NotADirectory(path)),
            None => {
                self.entries.insert(
                    path,
                    Entry {
                        kind: EntryKind::Dir,
                        perm: perm & 0o7777,
                    },
                );
                Ok(())
            }
        }
    }

    /// Adds a regular file with the given contents.
    pub fn add_file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<(), CpioError> {
        if u32::try_from(data.len()).is_err() {
            return Err(CpioError::TooLarge(path.to_string()));
        }
        self.insert_new(path, perm, EntryKind::File(data))
    }

    /// Adds a symbolic link pointing at `target` (stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.insert_new(path, 0o777, EntryKind::Symlink(target.to_string()))
    }

    /// Adds a character device node, e.g. `dev/console` 5:1. The kernel needs
    /// `/dev/console` in the archive to give /init its stdin/stdout.
    pub fn add_char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.insert_new(path, perm, EntryKind::CharDevice { major, minor })
    }

    /// Paths in archive order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn insert_new(&mut self, path: &str, perm: u32, kind: EntryKind) -> Result<(), CpioError> {
        let path = check_path(path)?;
        self.ensure_parents(&path)?;
        if self.entries.contains_key(&path) {
            return Err(CpioError::Duplicate(path));
        }
        self.entries.insert(
            path,
            Entry {
                kind,
                perm: perm & 0o7777,
            },
        );
        Ok(())
    }

    fn ensure_parents(&mut self, path: &str) -> Result<(), CpioError> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.entries.get(parent) {
                Some(Entry {
                    kind: EntryKind::Dir,
                    ..
                }) => {}
                Some(_) => return Err(CpioError::NotADirectory(parent.to_string())),
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        Entry {
                            kind: EntryKind::Dir,
                            perm: 0o755,
                        },
                    );
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Writes the archive, including the trailer, to `w`.
    pub fn write_to<W: Write>(&self, mut w: W) -> io::Result<()> {
        let mut pos: u64 = 0;
        for (n, (path, entry)) in self.entries.iter().enumerate() {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &entry.kind {
                EntryKind::Dir => (S_IFDIR | entry.perm, 2, &[], (0, 0)),
                EntryKind::File(d) => (S_IFREG | entry.perm, 1, d, (0, 0)),
                EntryKind::Symlink(t) => (S_IFLNK | entry.perm, 1, t.as_bytes(), (0, 0)),
                EntryKind::CharDevice { major, minor } => {
                    (S_IFCHR | entry.perm, 1, &[], (*major, *minor))
                }
            };
            // Inode 0 is left to the trailer; number the rest from 1.
            let ino = u32::try_from(n + 1).map_err(|_| io::Error::other("too many entries"))?;
            let header = Header {
                ino,
                mode,
                nlink,
                mtime: self.mtime,
                rdev,
            };
            pos += write_entry(&mut w, pos, &header, path, data)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            rdev: (0, 0),
        };
        write_entry(&mut w, pos, &trailer, TRAILER, &[])?;
        Ok(())
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and entry sizes were bounded on
        // insert; only > 2^32 entries could reach the error arm.
        match self.write_to(&mut out) {
            Ok(()) => out,
            Err(_) => unreachable!("writing a cpio archive into memory failed"),
        }
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
}

/// Writes one header + name + data with newc's 4-byte padding; returns the
/// number of bytes written. `pos` is the archive offset the entry starts at.
fn write_entry<W: Write>(
    w: &mut W,
    pos: u64,
    h: &Header,
    name: &str,
    data: &[u8],
) -> io::Result<u64> {
    let namesize = name.len() + 1;
    let filesize = u32::try_from(data.len()).map_err(|_| io::Error::other("entry too large"))?;
    let fields: [u32; 13] = [
        h.ino,
        h.mode,
        0, // uid
        0, // gid
        h.nlink,
        h.mtime,
        filesize,
        0, // devmajor: the device holding the file; meaningless here
        0, // devminor
        h.rdev.0,
        h.rdev.1,
        u32::try_from(namesize).map_err(|_| io::Error::other("name too long"))?,
        0, // check: unused in newc (only "070702" carries a checksum)
    ];
    let mut buf = Vec::with_capacity(110 + namesize + 3);
    buf.extend_from_slice(NEWC_MAGIC);
    for f in fields {
        buf.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    buf.resize(buf.len() + pad4(pos + buf.len() as u64), 0);
    w.write_all(&buf)?;
    let mut written = buf.len() as u64;
    w.write_all(data)?;
    written += data.len() as u64;
    let pad = pad4(pos + written);
    w.write_all(&[0u8; 3][..pad])?;
    Ok(written + pad as u64)
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

fn check_path(path: &str) -> Result<String, CpioError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path == TRAILER
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(CpioError::InvalidPath(path.to_string()))
    } else {
        Ok(path.to_string())
    }
}

/// A parsed newc entry (test support and debugging aid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEntry {
    pub name: String,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Parses a newc archive up to (not including) its trailer. A small reader
/// so tests and tools can check what was written without external programs.
pub fn read_newc(mut buf: &[u8]) -> Result<Vec<ReadEntry>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        if buf.len() < 110 || &buf[..6] != NEWC_MAGIC {
            return Err(format!("bad newc header at offset {pos}"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&buf[6 + 8 * i..14 + 8 * i])
                .map_err(|_| format!("non-ASCII header field at offset {pos}"))?;
            *v = u32::from_str_radix(s, 16)
                .map_err(|_| format!("bad hex field {s:?} at offset {pos}"))?;
        }
        let namesize = f[11] as usize;
        let filesize = f[6] as usize;
        let name_end = 110 + namesize;
        if namesize == 0 || buf.len() < name_end || buf[name_end - 1] != 0 {
            return Err(format!("bad name at offset {pos}"));
        }
        let name = std::str::from_utf8(&buf[110..name_end - 1])
            .map_err(|_| format!("non-UTF-8 name at offset {pos}"))?
            .to_string();
        let data_start = name_end + pad4((pos + name_end) as u64);
        let data_end = data_start + filesize;
        if buf.len() < data_end {
            return Err(format!("truncated data of {name:?}"));
        }
        if name == TRAILER {
            return Ok(out);
        }
        out.push(ReadEntry {
            name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev: (f[9], f[10]),
            data: buf[data_start..data_end].to_vec(),
        });
        let next = (data_end + pad4((pos + data_end) as u64)).min(buf.len());
        buf = &buf[next..];
        pos += next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new(0);
        a.add_file("init", 0o755, b"#!init".to_vec()).unwrap();
        a.add_char_device("dev/console", 0o600, 5, 1).unwrap();
        a.add_char_device("dev/null", 0o666, 1, 3).unwrap();
        a.add_symlink("bin", "usr/bin").unwrap();
        a.add_dir("sysroot", 0o755).unwrap();
        a.add_file("lib/modules/k/a.ko", 0o644, vec![7; 5]).unwrap();
        a
    }

    #[test]
    fn round_trips_and_sorts() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes.len() % 4, 0);
        let entries = read_newc(&bytes).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "dev/console",
                "dev/null",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/k",
                "lib/modules/k/a.ko",
                "sysroot"
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.ino as usize, i + 1);
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0));
        }
        let console = &entries[2];
        assert_eq!(console.mode, 0o020_600);
        assert_eq!(console.rdev, (5, 1));
        assert_eq!(entries[0].mode, 0o120_777);
        assert_eq!(entries[0].data, b"usr/bin");
        assert_eq!(entries[4].data, b"#!init");
        assert_eq!(entries[4].mode, 0o100_755);
        assert_eq!(entries[8].data, vec![7; 5]);
        assert_eq!(entries[9].mode, 0o040_755);
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn mtime_is_applied() {
        let mut a = Archive::new(1_700_000_000);
        a.add_dir("x", 0o700).unwrap();
        let e = read_newc(&a.to_bytes()).unwrap();
        assert_eq!(e[0].mtime, 1_700_000_000);
        assert_eq!(e[0].mode, 0o040_700);
    }

    #[test]
    fn refuses_bad_paths_and_conflicts() {
        let mut a = Archive::new(0);
        for p in ["", "/abs", "a//b", "a/./b", "../x", "a/", "TRAILER!!!"] {
            assert_eq!(
                a.add_dir(p, 0o755),
                Err(CpioError::InvalidPath(p.to_string())),
                "{p}"
            );
        }
        a.add_file("f", 0o644, vec![]).unwrap();
        assert_eq!(
            a.add_file("f", 0o644, vec![]),
            Err(CpioError::Duplicate("f".into()))
        );
        assert_eq!(
            a.add_file("f/g", 0o644, vec![]),
            Err(CpioError::NotADirectory("f".into()))
        );
        assert_eq!(
            a.add_dir("f", 0o755),
            Err(CpioError::NotADirectory("f".into()))
        );
        a.add_dir("d", 0o755).unwrap();
        a.add_dir("d", 0o700).unwrap();
    }

    /// Cross-check with a real cpio implementation when one is installed.
    #[test]
    fn external_cpio_lists_it() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, sample().to_bytes()).unwrap();
        for tool in ["bsdcpio", "cpio"] {
            let Ok(out) = std::process::Command::new(tool)
                .arg("-itv")
                .stdin(std::fs::File::open(&path).unwrap())
                .output()
            else {
                continue;
            };
            assert!(out.status.success(), "{tool}: {out:?}");
            let listing = String::from_utf8_lossy(&out.stdout);
            assert!(listing.contains("dev/console"), "{listing}");
            assert!(listing.contains("lib/modules/k/a.ko"), "{listing}");
        }
    }
}
