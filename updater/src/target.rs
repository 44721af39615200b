//! What the agent writes to: the GPT of the disk, the slot devices (block devices
//! on a host, plain files in tests and the benchmark) and the ESP directory.
//!
//! Every write method takes the booted slot and refuses to touch it: the active
//! slot and its boot files are never written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use disk_layout::{Slot, boot_files};
use gpt_slots::{Attrs, FileDevice, Gpt};
use sha2::{Digest, Sha256};

use crate::Error;

#[derive(Debug, Clone)]
pub struct Target {
    /// The whole disk (or its image) holding the GPT.
    pub disk: PathBuf,
    /// USR-A and USR-B: partition block devices or files.
    pub slot_a: PathBuf,
    pub slot_b: PathBuf,
    /// The mounted ESP; boot files go to `cairn/<slot>/`.
    pub esp: PathBuf,
}

/// Both slots' attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SlotAttrs {
    pub a: AttrsJson,
    pub b: AttrsJson,
}

/// [`Attrs`] with a JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AttrsJson {
    pub priority: u8,
    pub tries: u8,
    pub successful: bool,
}

impl From<Attrs> for AttrsJson {
    fn from(a: Attrs) -> Self {
        AttrsJson {
            priority: a.priority,
            tries: a.tries,
            successful: a.successful,
        }
    }
}

impl From<AttrsJson> for Attrs {
    fn from(a: AttrsJson) -> Self {
        Attrs::new(a.priority, a.tries, a.successful)
    }
}

impl SlotAttrs {
    pub fn get(&self, s: Slot) -> Attrs {
        match s {
            Slot::A => self.a.into(),
            Slot::B => self.b.into(),
        }
    }
}

/// How long a GPT writer waits for another (cairn-mark-good, a second cairnctl).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

fn gpt_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Gpt(format!("{what}: {e}"))
}

impl Target {
    pub fn slot_path(&self, s: Slot) -> &Path {
        match s {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    pub fn esp_dir(&self, s: Slot) -> PathBuf {
        self.esp.join(s.esp_dir())
    }

    /// Opens the table; a writable open holds the disk's lock (shared with
    /// cairn-mark-good and cairn-health) until the device is dropped.
    fn open_gpt(&self, writable: bool) -> Result<(FileDevice, Gpt), Error> {
        let dev = if writable {
            FileDevice::open_locked(&self.disk, true, LOCK_WAIT)
        } else {
            FileDevice::open(&self.disk, false)
        };
        let mut dev = dev.map_err(|e| Error::io(format!("opening {}", self.disk.display()), e))?;
        let gpt = Gpt::read(&mut dev).map_err(|e| gpt_err(&self.disk.display().to_string(), e))?;
        Ok((dev, gpt))
    }

    /// The slot bits of USR-A and USR-B (entries 2 and 3, checked by label).
    pub fn read_attrs(&self) -> Result<SlotAttrs, Error> {
        let (_, gpt) = self.open_gpt(false)?;
        Self::attrs_of(&gpt)
    }

    fn attrs_of(gpt: &Gpt) -> Result<SlotAttrs, Error> {
        let get = |s: Slot| -> Result<Attrs, Error> {
            let n = s.part().number();
            let e = gpt
                .entry(n)
                .ok_or_else(|| Error::Gpt(format!("no partition {n} ({})", s.part().label())))?;
            if e.name != s.part().label() {
                return Err(Error::Gpt(format!(
                    "partition {n} is labelled {:?}, expected {:?}",
                    e.name,
                    s.part().label()
                )));
            }
            Ok(e.attrs())
        };
        Ok(SlotAttrs {
            a: get(Slot::A)?.into(),
            b: get(Slot::B)?.into(),
        })
    }

    /// Sets slot bits and commits crash-safely (backup first, fsync after each
    /// copy, re-read to confirm). `active` may only keep its state or have its
    /// priority lowered/raised by the caller's explicit choice (`allow_active`).
    pub fn set_attrs(&self, changes: &[(Slot, Attrs)]) -> Result<(), Error> {
        self.update_attrs(|_| Ok(changes.to_vec())).map(|_| ())
    }

    /// One read-modify-write of the slot bits under the disk's lock:
    /// `decide` sees the attributes as they are now (not as read earlier, which
    /// cairn-mark-good may have changed since) and returns the changes.
    /// Returns the attributes `decide` saw.
    pub fn update_attrs(
        &self,
        decide: impl FnOnce(&SlotAttrs) -> Result<Vec<(Slot, Attrs)>, Error>,
    ) -> Result<SlotAttrs, Error> {
        let (mut dev, mut gpt) = self.open_gpt(true)?;
        let now = Self::attrs_of(&gpt)?;
        let changes = decide(&now)?;
        if changes.is_empty() {
            return Ok(now);
        }
        for (s, a) in &changes {
            gpt.set_slot_attrs(s.part().number(), *a)
                .map_err(|e| gpt_err("setting attributes", e))?;
        }
        gpt.commit(&mut dev)
            .map_err(|e| gpt_err(&format!("committing {}", self.disk.display()), e))?;
        Ok(now)
    }

    /// Opens the inactive slot for writing; refuses the booted one (also through
    /// another path to the same file or device).
    pub fn open_slot_for_write(&self, slot: Slot, booted: Slot) -> Result<SlotWriter, Error> {
        if slot == booted {
            return Err(Error::ActiveSlot(slot.letter()));
        }
        let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        };
        if same(self.slot_path(slot), self.slot_path(booted)) {
            return Err(Error::ActiveSlot(booted.letter()));
        }
        let path = self.slot_path(slot).to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // Seeking works for block devices, whose metadata length is 0.
        let capacity = file
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        use std::os::unix::fs::OpenOptionsExt;
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .ok();
        Ok(SlotWriter {
            file,
            direct,
            path,
            capacity,
        })
    }

    /// Writes the boot files of `slot`: `<name>.tmp`, fsync, read back and check
    /// `boot.sig` against `trusted`, then rename into place and fsync the folder.
    /// `files` are (file name, bytes) for vmlinuz, initrd, cmdline, boot.sig.
    pub fn write_boot_files(
        &self,
        slot: Slot,
        booted: Slot,
        files: &[(&str, &[u8])],
        trusted: &[[u8; 32]],
    ) -> Result<(), Error> {
        if slot == booted {
            return Err(Error::ActiveSlot(slot.letter()));
        }
        let dir = self.esp_dir(slot);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // Fixed temporary names, not durable_file::AtomicFile's unique ones: a
        // power cut mid-write leaves `<name>.tmp`, which the next attempt
        // overwrites, instead of a new kernel-sized leftover on the small ESP
        // every time. The four are renamed only after the signature check.
        let tmp = |name: &str| dir.join(format!("{name}.tmp"));
        let cleanup = || {
            for (name, _) in files {
                let _ = std::fs::remove_file(tmp(name));
            }
        };
        let result = (|| {
            for (name, bytes) in files {
                let p = tmp(name);
                let mut f = File::create(&p)
                    .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io(format!("writing {}", p.display()), e))?;
            }
            // Check what is on the ESP, not what is in memory: FAT writes can fail
            // silently on a dying medium.
            let read = |name: &str| -> Result<Vec<u8>, Error> {
                let p = tmp(name);
                std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
            };
            let kernel = read(boot_files::KERNEL)?;
            let initrd = read(boot_files::INITRD)?;
            let cmdline = read(boot_files::CMDLINE)?;
            let sig = read(boot_files::SIGNATURE)?;
            boot_sig::verify(trusted, &sig, &kernel, &initrd, &cmdline).map_err(Error::BootSig)?;
            for (name, _) in files {
                let to = dir.join(name);
                std::fs::rename(tmp(name), &to)
                    .map_err(|e| Error::io(format!("renaming to {}", to.display()), e))?;
            }
            durable_file::sync_dir(&dir)?;
            // fsync of a vfat directory does not make the renames durable (a
            // power cut right after the GPT flip left cairn/b/ without its
            // kernel in the power-cut VM test): flush the whole ESP.
            Ok(durable_file::sync_fs(&dir)?)
        })();
        if result.is_err() {
            cleanup();
        }
        result
    }

    /// Reads the first `size` bytes of `slot` from the device (not the page cache)
    /// and returns their sha256.
    pub fn slot_sha256(&self, slot: Slot, size: u64) -> Result<[u8; 32], Error> {
        let path = self.slot_path(slot);
        let file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        drop_cache(&file, 0, size);
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        let mut r = file.take(size);
        while left > 0 {
            let n = r
                .read(&mut buf)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if n == 0 {
                return Err(Error::SlotTooSmall {
                    slot: slot.letter(),
                    need: size,
                    have: size - left,
                });
            }
            h.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(h.finalize().into())
    }
}

/// Asks the kernel to drop cached pages of `file` so the next read comes from the
/// device: a read-back check must see what was written, not what was meant.
fn drop_cache(file: &File, offset: u64, len: u64) {
    // SAFETY: plain advisory syscall on a valid descriptor; no memory is passed.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}

/// Alignment of O_DIRECT buffers, offsets and lengths: the largest logical
/// block size of the devices Cairn runs on.
pub const DIRECT_ALIGN: usize = 4096;

/// A heap buffer whose usable part starts at a [`DIRECT_ALIGN`] boundary, as
/// O_DIRECT needs. Over-allocating a plain `Vec` keeps this free of unsafe code.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        AlignedBuf { raw, start, len }
    }

    pub fn capacity(&self) -> usize {
        self.raw.len() - DIRECT_ALIGN
    }

    /// Sets the length of the usable part (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

fn is_direct_ok(offset: u64, buf: &[u8]) -> bool {
    let a = DIRECT_ALIGN as u64;
    offset.is_multiple_of(a)
        && (buf.len() as u64).is_multiple_of(a)
        && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
}

/// Positioned, bounded writes to the inactive slot, and reads back from the
/// device. Writes and reads go through O_DIRECT when the file system or device
/// supports it and the request is aligned (the page cache is neither filled
/// with a gigabyte nobody reads again nor able to answer the read-back);
/// otherwise through the page cache, synced and dropped before reading back.
pub struct SlotWriter {
    file: File,
    /// The same slot opened with O_DIRECT, if supported (tmpfs, for one, may not).
    direct: Option<File>,
    path: PathBuf,
    capacity: u64,
}

impl SlotWriter {
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether aligned writes bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> Error {
        let what = format!("{what} {}", self.path.display());
        move |e| Error::io(what, e)
    }

    /// Writes `data` at `offset`; durable only after [`SlotWriter::sync`].
    /// Takes `&self`: the pipeline writes on one thread and reads back on another.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.capacity {
            return Err(Error::SlotTooSmall {
                slot: "inactive",
                need: end,
                have: self.capacity,
            });
        }
        match &self.direct {
            Some(d) if is_direct_ok(offset, data) => d
                .write_all_at(data, offset)
                .map_err(self.io("writing (O_DIRECT)")),
            _ => self
                .file
                .write_all_at(data, offset)
                .map_err(self.io("writing")),
        }
    }

    /// fdatasync: everything written so far is on stable storage (O_DIRECT
    /// alone does not flush a device's volatile cache or the file's extents).
    pub fn sync(&self) -> Result<(), Error> {
        self.file.sync_data().map_err(self.io("syncing"))
    }

    /// Reads `buf.len()` bytes at `offset` from the device, not from the page
    /// cache: a read-back check must see what was written, not what was meant.
    pub fn read_back(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if let Some(d) = &self.direct
            && is_direct_ok(offset, buf)
        {
            return d
                .read_exact_at(buf, offset)
                .map_err(self.io("reading back (O_DIRECT)"));
        }
        // Dirty pages cannot be dropped: sync first (slow, but only the fallback).
        self.sync()?;
        drop_cache(&self.file, offset, buf.len() as u64);
        self.file
            .read_exact_at(buf, offset)
            .map_err(self.io("reading back"))
    }

    /// Writes `data` at `offset` and makes it durable before returning.
    pub fn write_durable(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.write_at(offset, data)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aligned requests take O_DIRECT where the file system has it, others the
    /// page cache; both read back what was written.
    #[test]
    fn writes_and_reads_back_aligned_and_unaligned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("slot");
        File::create(&p).unwrap().set_len(1 << 20).unwrap();
        let target = Target {
            disk: dir.path().join("disk"),
            slot_a: dir.path().join("other"),
            slot_b: p.clone(),
            esp: dir.path().join("esp"),
        };
        let w = target.open_slot_for_write(Slot::B, Slot::A).unwrap();
        assert_eq!(w.capacity(), 1 << 20);
        let mut buf = AlignedBuf::new(3 * DIRECT_ALIGN);
        assert_eq!(buf.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
        for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // (offset, length): aligned, unaligned offset, unaligned length.
        for (offset, len) in [(8192, 3 * DIRECT_ALIGN), (100, 5000), (65536, 4097)] {
            let data = &buf.as_slice()[..len];
            w.write_at(offset, data).unwrap();
            w.sync().unwrap();
            let mut back = AlignedBuf::new(len);
            w.read_back(offset, back.as_mut_slice()).unwrap();
            assert_eq!(back.as_slice(), data, "at {offset}, {len} bytes");
        }
        let err = w.write_at((1 << 20) - 10, &[0; 20]).unwrap_err();
        assert!(matches!(err, Error::SlotTooSmall { .. }), "{err}");
    }
}
