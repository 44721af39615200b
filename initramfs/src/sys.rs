//! Thin wrappers over the syscalls std has no API for.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in string"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn mount(
    src: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = cstr(src)?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call,
    // or null where the kernel allows it.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    })
}

/// `mount --move src target`.
pub fn move_mount(src: &str, target: &str) -> io::Result<()> {
    mount(src, target, None, libc::MS_MOVE, None)
}

pub fn mknod_block(path: &str, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is a valid C string.
    check(unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    })
}

/// `MODULE_INIT_COMPRESSED_FILE` from uapi/linux/module.h.
pub const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

pub fn finit_module(file: &File, flags: libc::c_int) -> io::Result<()> {
    let params = c"";
    // SAFETY: the fd is open for the duration of the call and params is a
    // valid empty C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn chroot(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: p is a valid C string.
    check(unsafe { libc::chroot(p.as_ptr()) })
}

/// `f_type` of the filesystem holding `path`.
pub fn statfs_type(path: &str) -> io::Result<i64> {
    let p = cstr(path)?;
    // SAFETY: st is plain data the kernel fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: p is a valid C string, st a valid out pointer.
    check(unsafe { libc::statfs(p.as_ptr(), &mut st) })?;
    #[allow(clippy::unnecessary_cast)] // f_type's integer type differs by libc
    Ok(st.f_type as i64)
}

pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
pub const TMPFS_MAGIC: i64 = 0x0102_1994;

pub fn set_umask(mask: libc::mode_t) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) };
}

pub fn sync() {
    // SAFETY: sync cannot fail.
    unsafe { libc::sync() };
}

/// Restarts the machine; returns only on failure.
pub fn reboot() -> io::Error {
    // SAFETY: no memory is passed.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    io::Error::last_os_error()
}

/// Seconds since boot (CLOCK_BOOTTIME: needs no /proc).
pub fn uptime() -> f64 {
    // SAFETY: ts is plain data the kernel fills in.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid out pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
