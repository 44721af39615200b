//! [`BlockDevice`] over a `std::fs::File`: disk images and block devices.

use crate::gpt::BlockDevice;
use crate::{DEFAULT_COMMITTED_TRIES, FIELD_MAX};
use std::format;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// A file or block device seen as sectors.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    sector_size: usize,
    sectors: u64,
}

/// The logical sector size of a block device (BLKSSZGET); 512 for anything
/// else, since a disk image has no sector size of its own and 512 is what
/// sgdisk, cgpt and QEMU assume for a raw file.
pub fn detect_sector_size(file: &File) -> io::Result<usize> {
    if !file.metadata()?.file_type().is_block_device() {
        return Ok(512);
    }
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one c_int through the pointer, which points to
    // a live local; the descriptor is owned by `file` for the whole call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(file),
            libc::BLKSSZGET,
            &mut size,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    usize::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative sector size"))
}

impl FileDevice {
    /// Opens `path` (read-write when `writable`) with its detected sector size.
    pub fn open(path: &Path, writable: bool) -> io::Result<FileDevice> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let ss = detect_sector_size(&file)?;
        FileDevice::with_sector_size(file, ss)
    }

    /// [`FileDevice::open`], holding an exclusive `flock` on the device for as
    /// long as the value lives. Every read-modify-write of the table
    /// (cairn-updated, cairnctl, cairn-mark-good, cairn-health) goes through
    /// this, so one writer never commits a table read before another's commit
    /// and undoes it. It is the lock systemd's block device locking convention
    /// names: udev holds it shared while probing, so it also keeps udev from
    /// reading a half-written table. Waits up to `wait` for another holder.
    pub fn open_locked(path: &Path, writable: bool, wait: Duration) -> io::Result<FileDevice> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        lock_exclusive(&file, wait).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: another program holds the disk's lock (an update or a slot change in progress?); retry when it is done: {e}",
                    path.display()
                ),
            )
        })?;
        let ss = detect_sector_size(&file)?;
        FileDevice::with_sector_size(file, ss)
    }

    /// Uses `sector_size`, for images made for 4Kn disks.
    pub fn with_sector_size(file: File, sector_size: usize) -> io::Result<FileDevice> {
        if sector_size == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "sector size 0"));
        }
        // Seeking works for block devices too, whose metadata length is 0.
        let bytes = (&file).seek(SeekFrom::End(0))?;
        Ok(FileDevice {
            file,
            sector_size,
            sectors: bytes / sector_size as u64,
        })
    }

    pub fn into_inner(self) -> File {
        self.file
    }

    fn offset(&self, lba: u64, len: usize) -> io::Result<u64> {
        if !len.is_multiple_of(self.sector_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "partial sector",
            ));
        }
        let end = lba.checked_add((len / self.sector_size) as u64);
        if end.is_none_or(|e| e > self.sectors) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "beyond the end of the device",
            ));
        }
        Ok(lba * self.sector_size as u64)
    }
}

/// K for this host: the board's `boot_tries` shipped in /usr under `root`,
/// or [`DEFAULT_COMMITTED_TRIES`] for an image that does not say (built
/// before boards could); clamped to what the 4-bit field holds.
pub fn committed_tries(root: &Path) -> u8 {
    std::fs::read_to_string(root.join(disk_layout::board_files::BOOT_TRIES))
        .ok()
        .and_then(|t| t.trim().parse::<u8>().ok())
        .map_or(DEFAULT_COMMITTED_TRIES, |k| k.clamp(1, FIELD_MAX))
}

/// `flock(LOCK_EX)`, polled so that a stuck holder costs `wait`, not forever.
fn lock_exclusive(file: &File, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor `file` owns for the whole call.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => return Err(e),
        }
    }
}

impl BlockDevice for FileDevice {
    type Error = io::Error;

    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn num_sectors(&self) -> u64 {
        self.sectors
    }

    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> io::Result<()> {
        let at = self.offset(lba, buf.len())?;
        self.file.read_exact_at(buf, at)
    }

    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> io::Result<()> {
        let at = self.offset(lba, buf.len())?;
        self.file.write_all_at(buf, at)
    }

    fn flush(&mut self) -> io::Result<()> {
        // fdatasync: the data must be on stable storage before the other copy
        // is touched; metadata (mtime) does not matter.
        self.file.sync_data()
    }
}
