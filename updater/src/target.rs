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

    fn open_gpt(&self, writable: bool) -> Result<(FileDevice, Gpt), Error> {
        let mut dev = FileDevice::open(&self.disk, writable)
            .map_err(|e| Error::io(format!("opening {}", self.disk.display()), e))?;
        let gpt = Gpt::read(&mut dev).map_err(|e| gpt_err(&self.disk.display().to_string(), e))?;
        Ok((dev, gpt))
    }

    /// The slot bits of USR-A and USR-B (entries 2 and 3, checked by label).
    pub fn read_attrs(&self) -> Result<SlotAttrs, Error> {
        let (_, gpt) = self.open_gpt(false)?;
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
        let (mut dev, mut gpt) = self.open_gpt(true)?;
        for (s, a) in changes {
            gpt.set_slot_attrs(s.part().number(), *a)
                .map_err(|e| gpt_err("setting attributes", e))?;
        }
        gpt.commit(&mut dev)
            .map_err(|e| gpt_err(&format!("committing {}", self.disk.display()), e))
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
        Ok(SlotWriter {
            file,
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
            crate::state::sync_dir(&dir)
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

/// Positioned, bounded writes to the inactive slot.
pub struct SlotWriter {
    file: File,
    path: PathBuf,
    capacity: u64,
}

impl SlotWriter {
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Writes `data` at `offset` and makes it durable before returning: the
    /// progress file may only record chunks that are on stable storage.
    pub fn write_durable(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let end = offset.saturating_add(data.len() as u64);
        if end > self.capacity {
            return Err(Error::SlotTooSmall {
                slot: "inactive",
                need: end,
                have: self.capacity,
            });
        }
        self.file
            .write_all_at(data, offset)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        drop_cache(&self.file, offset, data.len() as u64);
        Ok(())
    }

    /// The file, for the verity check (which reads from offset 0).
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }
}
