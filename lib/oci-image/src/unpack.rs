//! Safe layer unpacking into a rootfs directory.
//!
//! Every path is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS), so symlinks in the tree are followed as they would be
//! inside the container (a `link -> /etc` sends `link/passwd` to the rootfs's own
//! /etc, never the host's). The final component of an entry is never followed:
//! whatever is there is replaced. Without openat2 (ENOSYS, kernels < 5.6) each
//! component is opened with O_NOFOLLOW and a symlinked parent is refused.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::Error;

/// Limits that bound what a hostile layer can make us do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Decompressed bytes of one layer (tar headers included).
    pub max_layer_bytes: u64,
    /// Entries of one layer.
    pub max_entries: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_layer_bytes: 16 * 1024 * 1024 * 1024,
            max_entries: 1_000_000,
        }
    }
}

/// What unpacking skipped or dropped, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: u64,
    /// Device nodes, fifos and unknown entry types: a container gets its /dev from the runtime.
    pub skipped_special: u64,
    /// Extended attributes outside the allow-list (`user.*`, `security.capability`).
    pub dropped_xattrs: u64,
    pub whiteouts: u64,
}

/// The components of a layer path, or why it is refused. `.` and empty
/// components are dropped; an empty result means the root itself.
pub fn sanitize_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    // umoci writes the root directory itself as "/"; that one entry is not an escape.
    if raw == b"/" {
        return Ok(Vec::new());
    }
    if raw.starts_with(b"/") {
        return Err("absolute path");
    }
    if raw.len() > 4096 {
        return Err("path longer than 4096 bytes");
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("'..' component"),
            c if c.contains(&0) => return Err("NUL byte in path"),
            c if c.len() > 255 => return Err("component longer than 255 bytes"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// What a layer entry's basename means for whiteouts.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    None,
    /// `.wh..wh..opq`: hide everything lower layers put in the directory.
    Opaque,
    /// `.wh.<name>`: delete `name`.
    Remove(&'a [u8]),
    /// Other `.wh..wh.*` metadata (aufs hardlink dirs): ignored.
    Meta,
}

pub fn classify_whiteout(name: &[u8]) -> Whiteout<'_> {
    if name == b".wh..wh..opq" {
        Whiteout::Opaque
    } else if name.starts_with(b".wh..wh.") {
        Whiteout::Meta
    } else if let Some(rest) = name.strip_prefix(b".wh.") {
        Whiteout::Remove(rest)
    } else {
        Whiteout::None
    }
}

/// Only these extended attributes are kept: others (trusted.*, security.selinux,
/// system.posix_acl_*) can change what the host grants.
pub fn xattr_allowed(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

fn join(comps: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

// ---- syscalls -------------------------------------------------------------

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// 0 = unknown, 1 = openat2 works, 2 = ENOSYS (fallback).
static OPENAT2: AtomicU8 = AtomicU8::new(0);
/// Tests force the fallback walk with this.
static FORCE_FALLBACK: AtomicU8 = AtomicU8::new(0);

#[doc(hidden)]
pub fn force_openat2_fallback(on: bool) {
    FORCE_FALLBACK.store(on as u8, Ordering::SeqCst);
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn openat2(dirfd: RawFd, path: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: p is a valid C string, how a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn openat(
    dirfd: RawFd,
    name: &[u8],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = check(unsafe {
        libc::openat(
            dirfd,
            n.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: new descriptor from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dirfd: RawFd, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let n = cstr(name)?;
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    let r = unsafe { libc::fstatat(dirfd, n.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn fd_path(fd: RawFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

/// Opens the directory `comps` inside the root, following symlinks as if
/// chrooted there.
fn resolve_dir(root: RawFd, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let path = if comps.is_empty() {
        b".".to_vec()
    } else {
        comps.join(&b'/')
    };
    let state = if FORCE_FALLBACK.load(Ordering::SeqCst) == 1 {
        2
    } else {
        OPENAT2.load(Ordering::Relaxed)
    };
    if state != 2 {
        match openat2(root, &path, flags) {
            Ok(fd) => {
                OPENAT2.store(1, Ordering::Relaxed);
                return Ok(fd);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                OPENAT2.store(2, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    // Fallback: no symlink is followed at all, so nothing can lead outside.
    let mut fd = openat(root, b".", flags, 0)?;
    for c in comps {
        fd = openat(fd.as_raw_fd(), c, flags | libc::O_NOFOLLOW, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTDIR) || e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::other(format!(
                    "{} is a symlink or not a directory (symlinked parents are refused without openat2)",
                    String::from_utf8_lossy(c)
                ))
            } else {
                e
            }
        })?;
    }
    Ok(fd)
}

/// Like [`resolve_dir`], creating missing directories (0755, root-owned) on the way.
fn resolve_dir_create(root: RawFd, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
    match resolve_dir(root, comps) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !comps.is_empty() => {
            let parent = resolve_dir_create(root, &comps[..comps.len() - 1])?;
            let n = cstr(&comps[comps.len() - 1])?;
            // SAFETY: valid fd and C string.
            let r = unsafe { libc::mkdirat(parent.as_raw_fd(), n.as_ptr(), 0o755) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            resolve_dir(root, comps)
        }
        other => other,
    }
}

/// Removes `name` in `dirfd` whatever it is (a directory recursively, never
/// following symlinks).
fn remove_at(dirfd: RawFd, name: &[u8]) -> io::Result<bool> {
    match lstat_at(dirfd, name)? {
        None => Ok(false),
        Some(st) if is_dir(&st) => {
            let path = fd_path(dirfd)?.join(OsStr::from_bytes(name));
            std::fs::remove_dir_all(&path)?;
            Ok(true)
        }
        Some(_) => {
            let n = cstr(name)?;
            // SAFETY: valid fd and C string.
            check(unsafe { libc::unlinkat(dirfd, n.as_ptr(), 0) })?;
            Ok(true)
        }
    }
}

fn chown_at(dirfd: RawFd, name: &[u8], uid: u64, gid: u64) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd and C string.
    let r = unsafe {
        libc::fchownat(
            dirfd,
            n.as_ptr(),
            uid as libc::uid_t,
            gid as libc::gid_t,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    tolerate_unprivileged(r)
}

/// Ownership can only be set as root; tests that run unprivileged keep their own.
fn tolerate_unprivileged(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: geteuid has no preconditions.
        if e.raw_os_error() == Some(libc::EPERM) && unsafe { libc::geteuid() } != 0 {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

fn set_times_at(dirfd: RawFd, name: &[u8], mtime: u64) -> io::Result<()> {
    let n = cstr(name)?;
    let t = libc::timespec {
        tv_sec: mtime as _,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid fd, C string and two timespecs.
    check(unsafe {
        libc::utimensat(dirfd, n.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })?;
    Ok(())
}

/// Owner, mode (setuid included; after chown, which clears it), xattrs, mtime.
fn apply_meta(fd: &OwnedFd, meta: &Meta, set_mtime: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: valid fd.
    tolerate_unprivileged(unsafe {
        libc::fchown(raw, meta.uid as libc::uid_t, meta.gid as libc::gid_t)
    })?;
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(raw, (meta.mode & 0o7777) as libc::mode_t) })?;
    // security.capability after chown, which would drop it.
    for (name, value) in &meta.xattrs {
        let n = cstr(name.as_bytes())?;
        // SAFETY: valid fd, C string and buffer.
        check(unsafe { libc::fsetxattr(raw, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })?;
    }
    if set_mtime {
        let t = libc::timespec {
            tv_sec: meta.mtime as _,
            tv_nsec: 0,
        };
        let times = [t, t];
        // SAFETY: valid fd and two timespecs.
        check(unsafe { libc::futimens(raw, times.as_ptr()) })?;
    }
    Ok(())
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

// ---- layers ---------------------------------------------------------------

/// Counts decompressed bytes and fails past the limit.
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded.set(true);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Compression by magic bytes: media types lie (docker-archive layers are all
/// called ".tar"), content does not.
fn open_decompressed(mut file: File, layer: &str) -> Result<Box<dyn Read>, Error> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Error::Layer {
                    layer: layer.to_string(),
                    problem: format!("reading failed: {e}"),
                });
            }
        }
    }
    file.rewind().map_err(|e| Error::Layer {
        layer: layer.to_string(),
        problem: format!("seek failed: {e}"),
    })?;
    let reader = io::BufReader::new(file);
    Ok(if got >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if got == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader).map_err(|e| Error::Layer {
                layer: layer.to_string(),
                problem: format!("zstd: {e}"),
            })?,
        )
    } else {
        Box::new(reader)
    })
}

/// Applies one (already digest-verified) layer blob to `rootfs`.
pub fn apply_layer(
    rootfs: &Path,
    blob: &Path,
    layer: &str,
    opts: &UnpackOptions,
    report: &mut UnpackReport,
) -> Result<(), Error> {
    let root_file = File::open(rootfs).map_err(Error::io(rootfs))?;
    let root = root_file.as_raw_fd();
    let file = File::open(blob).map_err(Error::io(blob))?;
    let exceeded = Rc::new(Cell::new(false));
    let reader = Limited {
        inner: open_decompressed(file, layer)?,
        left: opts.max_layer_bytes,
        exceeded: exceeded.clone(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut ctx = LayerCtx {
        root,
        this_layer: HashSet::new(),
        dir_times: Vec::new(),
        report,
    };
    let limit_err = || Error::LayerLimit {
        layer: layer.to_string(),
        what: "the decompressed size".to_string(),
        limit: opts.max_layer_bytes,
    };
    let tar_err = |e: io::Error, exceeded: &Cell<bool>| {
        if exceeded.get() {
            limit_err()
        } else {
            Error::Layer {
                layer: layer.to_string(),
                problem: format!("not a valid tar stream: {e}"),
            }
        }
    };
    let entries = archive.entries().map_err(|e| tar_err(e, &exceeded))?;
    let mut count = 0u64;
    for entry in entries {
        let entry = entry.map_err(|e| tar_err(e, &exceeded))?;
        count += 1;
        if count > opts.max_entries {
            return Err(Error::LayerLimit {
                layer: layer.to_string(),
                what: "the number of entries".to_string(),
                limit: opts.max_entries,
            });
        }
        ctx.report.entries += 1;
        ctx.entry(entry).map_err(|e| match e {
            EntryError::Refused(entry, problem) => Error::UnsafeLayer {
                layer: layer.to_string(),
                entry,
                problem,
            },
            EntryError::Io(entry, e) if exceeded.get() => {
                let _ = (entry, e);
                limit_err()
            }
            EntryError::Io(entry, e) => Error::Layer {
                layer: layer.to_string(),
                problem: format!("{entry}: {e}"),
            },
        })?;
    }
    // Directory times last: creating their children changed them.
    for (comps, mtime) in ctx.dir_times.iter().rev() {
        let r = if comps.is_empty() {
            // SAFETY: valid fd and two timespecs.
            let t = libc::timespec {
                tv_sec: *mtime as _,
                tv_nsec: 0,
            };
            check(unsafe { libc::futimens(root, [t, t].as_ptr()) }).map(|_| ())
        } else {
            resolve_dir(root, &comps[..comps.len() - 1])
                .and_then(|p| set_times_at(p.as_raw_fd(), &comps[comps.len() - 1], *mtime))
        };
        if let Err(e) = r {
            return Err(Error::Layer {
                layer: layer.to_string(),
                problem: format!("{}: setting the time failed: {e}", join(comps)),
            });
        }
    }
    Ok(())
}

enum EntryError {
    Refused(String, String),
    Io(String, io::Error),
}

struct LayerCtx<'a> {
    root: RawFd,
    /// Paths this layer wrote: an opaque whiteout hides only lower layers.
    this_layer: HashSet<Vec<Vec<u8>>>,
    dir_times: Vec<(Vec<Vec<u8>>, u64)>,
    report: &'a mut UnpackReport,
}

impl LayerCtx<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), EntryError> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let refuse = |p: &str| EntryError::Refused(shown.clone(), p.to_string());
        let io_err = |e: io::Error| EntryError::Io(shown.clone(), e);
        let comps = sanitize_path(&raw_path).map_err(refuse)?;
        let kind = entry.header().entry_type();
        let header = entry.header();
        let mut meta = Meta {
            mode: header.mode().map_err(io_err)?,
            uid: header.uid().map_err(io_err)?,
            gid: header.gid().map_err(io_err)?,
            mtime: header.mtime().map_err(io_err)?,
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions().map_err(io_err)? {
            for ext in exts {
                let ext = ext.map_err(io_err)?;
                let Ok(key) = ext.key() else { continue };
                if key == "uid" || key == "gid" {
                    if let Some(v) = ext.value().ok().and_then(|v| v.parse::<u64>().ok()) {
                        if key == "uid" {
                            meta.uid = v
                        } else {
                            meta.gid = v
                        }
                    }
                } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if xattr_allowed(name) {
                        meta.xattrs
                            .push((name.to_string(), ext.value_bytes().to_vec()));
                    } else {
                        self.report.dropped_xattrs += 1;
                    }
                } else if key.starts_with("LIBARCHIVE.xattr.") {
                    self.report.dropped_xattrs += 1;
                }
            }
        }

        let Some((name, parent)) = comps.split_last() else {
            // The root directory itself.
            if kind.is_dir() {
                let fd = openat(self.root, b".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(io_err)?;
                apply_meta(&fd, &meta, false).map_err(io_err)?;
                self.dir_times.push((Vec::new(), meta.mtime));
                return Ok(());
            }
            return Err(refuse("the root of the layer must be a directory"));
        };

        match classify_whiteout(name) {
            Whiteout::Meta => return Ok(()),
            Whiteout::Opaque => {
                self.report.whiteouts += 1;
                let dir = resolve_dir_create(self.root, parent).map_err(io_err)?;
                let path = fd_path(dir.as_raw_fd()).map_err(io_err)?;
                return self.opaque(&path, parent).map_err(io_err);
            }
            Whiteout::Remove(target) => {
                self.report.whiteouts += 1;
                if target.is_empty() || target == b"." || target == b".." {
                    return Err(refuse("whiteout of an invalid name"));
                }
                match resolve_dir(self.root, parent) {
                    Ok(dir) => {
                        remove_at(dir.as_raw_fd(), target).map_err(io_err)?;
                    }
                    // Nothing below to hide.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(io_err(e)),
                }
                return Ok(());
            }
            Whiteout::None => {}
        }

        let dir = resolve_dir_create(self.root, parent).map_err(io_err)?;
        let dfd = dir.as_raw_fd();
        self.this_layer.insert(comps.clone());
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                match lstat_at(dfd, name).map_err(io_err)? {
                    Some(st) if is_dir(&st) => {}
                    Some(_) => {
                        remove_at(dfd, name).map_err(io_err)?;
                        mkdir(dfd, name).map_err(io_err)?;
                    }
                    None => mkdir(dfd, name).map_err(io_err)?,
                }
                let fd = openat(
                    dfd,
                    name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(io_err)?;
                apply_meta(&fd, &meta, false).map_err(io_err)?;
                self.dir_times.push((comps.clone(), meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                remove_at(dfd, name).map_err(io_err)?;
                let fd = openat(
                    dfd,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(io_err)?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(io_err)?;
                let fd = OwnedFd::from(file);
                apply_meta(&fd, &meta, true).map_err(io_err)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("symlink without a target"))?
                    .into_owned();
                if target.is_empty() {
                    return Err(refuse("symlink with an empty target"));
                }
                remove_at(dfd, name).map_err(io_err)?;
                let t = cstr(&target).map_err(io_err)?;
                let n = cstr(name).map_err(io_err)?;
                // SAFETY: valid C strings and fd.
                check(unsafe { libc::symlinkat(t.as_ptr(), dfd, n.as_ptr()) }).map_err(io_err)?;
                chown_at(dfd, name, meta.uid, meta.gid).map_err(io_err)?;
                self.report.dropped_xattrs += meta.xattrs.len() as u64;
                set_times_at(dfd, name, meta.mtime).map_err(io_err)?;
            }
            T::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse("hardlink without a target"))?
                    .into_owned();
                let tcomps =
                    sanitize_path(&target).map_err(|p| refuse(&format!("hardlink target: {p}")))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(refuse("hardlink to the root directory"));
                };
                let tdir = resolve_dir(self.root, tparent)
                    .map_err(|e| refuse(&format!("hardlink target's directory: {e}")))?;
                match lstat_at(tdir.as_raw_fd(), tname).map_err(io_err)? {
                    Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
                    Some(_) => return Err(refuse("hardlink target is not a regular file")),
                    None => return Err(refuse("hardlink target does not exist in the rootfs")),
                }
                if tcomps == comps {
                    return Ok(());
                }
                remove_at(dfd, name).map_err(io_err)?;
                let t = cstr(tname).map_err(io_err)?;
                let n = cstr(name).map_err(io_err)?;
                // SAFETY: valid fds and C strings; flags 0 never follows a symlink.
                check(unsafe { libc::linkat(tdir.as_raw_fd(), t.as_ptr(), dfd, n.as_ptr(), 0) })
                    .map_err(io_err)?;
            }
            _ => {
                // Char/block devices, fifos and unknown types.
                self.report.skipped_special += 1;
                self.this_layer.remove(&comps);
            }
        }
        Ok(())
    }

    /// Removes what lower layers put under `path` (= `comps`), keeping this layer's entries.
    fn opaque(&self, path: &Path, comps: &[Vec<u8>]) -> io::Result<()> {
        for child in std::fs::read_dir(path)? {
            let child = child?;
            let name: OsString = child.file_name();
            let mut c = comps.to_vec();
            c.push(name.clone().into_vec());
            let ft = child.file_type()?;
            if !self.this_layer.contains(&c) {
                if ft.is_dir() {
                    std::fs::remove_dir_all(child.path())?;
                } else {
                    std::fs::remove_file(child.path())?;
                }
            } else if ft.is_dir() {
                self.opaque(&child.path(), &c)?;
            }
        }
        Ok(())
    }
}

fn mkdir(dfd: RawFd, name: &[u8]) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid fd and C string.
    check(unsafe { libc::mkdirat(dfd, n.as_ptr(), 0o700) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let ok = |s: &str, want: &[&str]| {
            let got = sanitize_path(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"));
            let want: Vec<Vec<u8>> = want.iter().map(|w| w.as_bytes().to_vec()).collect();
            assert_eq!(got, want, "{s}");
        };
        ok("a/b", &["a", "b"]);
        ok("./a/b/", &["a", "b"]);
        ok("a//./b", &["a", "b"]);
        ok(".", &[]);
        ok("./", &[]);
        ok("/", &[]);
        ok("a/..b/c..", &["a", "..b", "c.."]);
        for bad in ["/etc/passwd", "../x", "a/../../b", "a/..", "//x"] {
            assert!(sanitize_path(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(sanitize_path(&vec![b'a'; 256]).is_err());
        assert!(sanitize_path(b"a\0b").is_err());
    }

    #[test]
    fn whiteout_table() {
        assert_eq!(classify_whiteout(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(classify_whiteout(b".wh.foo"), Whiteout::Remove(b"foo"));
        assert_eq!(classify_whiteout(b".wh..wh.plnk"), Whiteout::Meta);
        assert_eq!(classify_whiteout(b"foo.wh."), Whiteout::None);
        assert_eq!(classify_whiteout(b"wh.foo"), Whiteout::None);
    }

    #[test]
    fn xattr_table() {
        for (n, want) in [
            ("user.foo", true),
            ("security.capability", true),
            ("security.selinux", false),
            ("trusted.overlay.opaque", false),
            ("system.posix_acl_access", false),
            ("user", false),
        ] {
            assert_eq!(xattr_allowed(n), want, "{n}");
        }
    }
}
