//! The running host's boot: the slot cairn-init booted, the disk it lives on,
//! both slots' attributes, and committing the booted slot. One reader for
//! cairn-mark-good, cairn-config status and cairn-updated, so they cannot
//! disagree on which disk or entry is "booted".
//!
//! Everything takes a root directory (`/` on a host) so tests run on a
//! scratch tree with a fake /dev and /sys.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};

use disk_layout::{GPT_ATTR_NO_AUTO, Guid, Slot, run};

use crate::{Attrs, BlockDevice, FileDevice, Gpt, arm_fallback, mark_good};

/// What went wrong finding or reading the booted slot.
#[derive(Debug)]
pub enum BootedError {
    /// A file or link could not be read or resolved.
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The host's boot facts or disk do not look like a Cairn boot.
    Invalid(String),
    /// The GPT could not be read, was missing an entry, or could not be written.
    Gpt { disk: PathBuf, message: String },
}

impl fmt::Display for BootedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootedError::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())
            }
            BootedError::Invalid(m) => f.write_str(m),
            BootedError::Gpt { disk, message } => write!(f, "{}: {message}", disk.display()),
        }
    }
}

impl std::error::Error for BootedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BootedError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> BootedError {
    let (what, path) = (what.to_string(), path.to_path_buf());
    move |source| BootedError::Io { what, path, source }
}

/// What cairn-init recorded about this boot (under /run/cairn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booted {
    pub slot: Slot,
    pub usr_partuuid: Guid,
}

/// The booted disk and its two slot partitions' device nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootedDisk {
    pub disk: PathBuf,
    pub usr_a: PathBuf,
    pub usr_b: PathBuf,
}

impl Booted {
    /// Reads /run/cairn/booted-slot and /run/cairn/usr-partuuid.
    pub fn read(root: &Path) -> Result<Booted, BootedError> {
        let read = |rel: &str| -> Result<String, BootedError> {
            let p = root.join(rel);
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_string())
                .map_err(io_err("read (not booted by cairn-init?)", &p))
        };
        let s = read(run::BOOTED_SLOT)?;
        let slot = Slot::from_letter(&s).ok_or_else(|| {
            BootedError::Invalid(std::format!("/{}: bad slot {s:?}", run::BOOTED_SLOT))
        })?;
        let g = read(run::USR_PARTUUID)?;
        let usr_partuuid = Guid::try_parse(&g).ok_or_else(|| {
            BootedError::Invalid(std::format!("/{}: bad GUID {g:?}", run::USR_PARTUUID))
        })?;
        Ok(Booted { slot, usr_partuuid })
    }

    /// The booted USR partition's directory in sysfs, found from its
    /// PARTUUID: /dev/disk/by-partuuid/<uuid> -> /dev/vda2 ->
    /// /sys/class/block/vda2 (resolved into /sys/devices/…/vda/vda2).
    fn sys_partition(&self, root: &Path) -> Result<PathBuf, BootedError> {
        let link = root
            .join("dev/disk/by-partuuid")
            .join(self.usr_partuuid.to_string());
        let part = std::fs::canonicalize(&link).map_err(io_err("resolve", &link))?;
        let name = part.file_name().ok_or_else(|| {
            BootedError::Invalid(std::format!("{}: no device name", part.display()))
        })?;
        let sys = root.join("sys/class/block").join(name);
        if !sys.join("partition").exists() {
            return Err(BootedError::Invalid(std::format!(
                "{} is not a partition",
                part.display()
            )));
        }
        std::fs::canonicalize(&sys).map_err(io_err("resolve", &sys))
    }

    /// The whole disk holding the booted USR partition (its parent in sysfs).
    pub fn disk(&self, root: &Path) -> Result<PathBuf, BootedError> {
        Ok(self.booted_disk(root, false)?.disk)
    }

    /// The booted disk and the device nodes of its partitions 2 and 3
    /// (USR-A, USR-B).
    pub fn disk_and_slots(&self, root: &Path) -> Result<BootedDisk, BootedError> {
        self.booted_disk(root, true)
    }

    fn booted_disk(&self, root: &Path, with_slots: bool) -> Result<BootedDisk, BootedError> {
        let sys = self.sys_partition(root)?;
        let disk_dir = sys.parent().ok_or_else(|| {
            BootedError::Invalid(std::format!("{}: no parent disk", sys.display()))
        })?;
        let disk_name = disk_dir.file_name().ok_or_else(|| {
            BootedError::Invalid(std::format!("{}: no disk name", disk_dir.display()))
        })?;
        let dev = root.join("dev");
        let disk = dev.join(disk_name);
        if !with_slots {
            return Ok(BootedDisk {
                disk,
                usr_a: PathBuf::new(),
                usr_b: PathBuf::new(),
            });
        }
        let mut slots = [None, None];
        let entries = std::fs::read_dir(disk_dir).map_err(io_err("list", disk_dir))?;
        for e in entries.flatten() {
            if let Ok(n) = std::fs::read_to_string(e.path().join("partition")) {
                for s in Slot::ALL {
                    if n.trim() == s.part().number().to_string() {
                        slots[s as usize] = Some(dev.join(e.file_name()));
                    }
                }
            }
        }
        match slots {
            [Some(usr_a), Some(usr_b)] => Ok(BootedDisk { disk, usr_a, usr_b }),
            _ => Err(BootedError::Invalid(std::format!(
                "{} has no partitions {} and {} (USR-A, USR-B)",
                disk.display(),
                Slot::A.part().number(),
                Slot::B.part().number()
            ))),
        }
    }
}

/// Both slots' attributes as found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotAttrs {
    pub a: Attrs,
    pub b: Attrs,
}

impl SlotAttrs {
    pub fn get(&self, s: Slot) -> Attrs {
        match s {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }
}

fn gpt_err<E: fmt::Display>(disk: &Path, what: &str) -> impl FnOnce(E) -> BootedError {
    let (disk, what) = (disk.to_path_buf(), what.to_string());
    move |e| BootedError::Gpt {
        disk,
        message: std::format!("{what}: {e}"),
    }
}

fn no_entry(disk: &Path, s: Slot) -> BootedError {
    BootedError::Gpt {
        disk: disk.to_path_buf(),
        message: std::format!("the GPT has no {} entry", s.part().label()),
    }
}

/// Reads both slots' attributes from `dev` (`disk` names it in errors).
pub fn read_attrs<D: BlockDevice>(dev: &mut D, disk: &Path) -> Result<SlotAttrs, BootedError>
where
    D::Error: fmt::Display,
{
    let gpt = Gpt::read(dev).map_err(gpt_err(disk, "cannot read the GPT"))?;
    let get = |s: Slot| -> Result<Attrs, BootedError> {
        gpt.entry(s.part().number())
            .map(|e| e.attrs())
            .ok_or_else(|| no_entry(disk, s))
    };
    Ok(SlotAttrs {
        a: get(Slot::A)?,
        b: get(Slot::B)?,
    })
}

/// Opens the booted disk read-only and reads both slots' attributes.
pub fn read_booted_disk(root: &Path, booted: &Booted) -> Result<(PathBuf, SlotAttrs), BootedError> {
    let disk = booted.disk(root)?;
    let mut dev = FileDevice::open(&disk, false).map_err(io_err("open", &disk))?;
    let attrs = read_attrs(&mut dev, &disk)?;
    Ok((disk, attrs))
}

/// What [`commit_booted`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marked {
    Changed { before: Attrs, after: Attrs },
    Already(Attrs),
}

impl Marked {
    /// One journal line (cairn-mark-good prefixes its name; tests look for
    /// this wording).
    pub fn message(&self, slot: Slot) -> String {
        match self {
            Marked::Changed { before, after } if before.successful => std::format!(
                "slot {} reached its health gate, tries re-armed ({before} -> {after})",
                slot.letter()
            ),
            Marked::Changed { before, after } => std::format!(
                "slot {} marked successful ({before} -> {after})",
                slot.letter()
            ),
            Marked::Already(a) => {
                std::format!("slot {} already successful ({a})", slot.letter())
            }
        }
    }
}

/// Sets `slot` successful and re-arms its tries to `tries` (K: every boot is
/// counted by the boot manager, so a committed slot that dies K times in a
/// row before its health gate falls back), with a crash-safe commit. The
/// other slot, if committed but left at tries 0 by an older Cairn, is armed
/// too so it can serve as that fallback. The entry must carry `partuuid`, so
/// a confused /run never marks the wrong slot. Writes nothing when the bits
/// are already right: every write is a (small) risk and wears flash.
pub fn commit_booted<D: BlockDevice>(
    dev: &mut D,
    disk: &Path,
    slot: Slot,
    partuuid: Guid,
    tries: u8,
) -> Result<Marked, BootedError>
where
    D::Error: fmt::Display,
{
    let mut gpt = Gpt::read(dev).map_err(gpt_err(disk, "cannot read the GPT"))?;
    let n = slot.part().number();
    let entry = gpt.entry(n).ok_or_else(|| no_entry(disk, slot))?;
    if entry.unique_guid != partuuid {
        return Err(BootedError::Gpt {
            disk: disk.to_path_buf(),
            message: std::format!(
                "GPT entry {n} has PARTUUID {}, but the booted /usr is {partuuid}: not marking",
                entry.unique_guid
            ),
        });
    }
    let before = entry.attrs();
    let after = mark_good(before, tries);
    // The committed slot is the current OS: it loses the DPS no-auto flag and
    // the other slot gets it, so systemd-dissect and gpt-auto (which prefer
    // the highest label) see the /usr that runs. Same commit, same crash safety.
    let other = slot.other().part().number();
    let other_bits = gpt
        .entry(other)
        .ok_or_else(|| no_entry(disk, slot.other()))?
        .attributes;
    let new_bits = after.to_bits(entry.attributes) & !GPT_ATTR_NO_AUTO;
    let new_other =
        arm_fallback(Attrs::from_bits(other_bits), tries).to_bits(other_bits) | GPT_ATTR_NO_AUTO;
    if new_bits == entry.attributes && new_other == other_bits {
        return Ok(Marked::Already(before));
    }
    let set = gpt_err(disk, "cannot set the attributes");
    gpt.set_attributes(n, new_bits).map_err(set)?;
    gpt.set_attributes(other, new_other)
        .map_err(gpt_err(disk, "cannot set the attributes"))?;
    gpt.commit(dev)
        .map_err(gpt_err(disk, "cannot write the GPT"))?;
    Ok(if after == before {
        Marked::Already(before)
    } else {
        Marked::Changed { before, after }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    use std::boxed::Box;
    use std::format;
    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    /// A 64 MiB sparse disk with the Cairn partition order made by sgdisk,
    /// slot bits set by cgpt (another implementation than ours).
    fn make_disk(dir: &Path, a: &str, b: &str) -> Option<PathBuf> {
        if !host_tools::require(&[("sgdisk", "gdisk"), ("cgpt", "cgpt")]) {
            return None;
        }
        let img = dir.join("disk.img");
        let f = std::fs::File::create(&img).ok()?;
        f.set_len(64 << 20).ok()?;
        let ok = Command::new("sgdisk")
            .arg("-n1:2048:+8M")
            .arg("-t1:EF00")
            .arg("-c1:ESP")
            .arg("-n2:0:+16M")
            .arg("-t2:8484680c-9521-48c6-9c11-b0720656f69e")
            .arg("-c2:USR-A")
            .arg("-n3:0:+16M")
            .arg("-t3:8484680c-9521-48c6-9c11-b0720656f69e")
            .arg("-c3:USR-B")
            .arg("-n4:0:+4M")
            .arg("-c4:OEM")
            .arg("-n5:0:0")
            .arg("-c5:ROOT")
            .arg(&img)
            .output()
            .ok()?
            .status
            .success();
        if !ok {
            return None;
        }
        for (n, bits) in [(2, a), (3, b)] {
            let mut c = Command::new("cgpt");
            c.arg("add").arg("-i").arg(n.to_string());
            for (flag, v) in ["-P", "-T", "-S"].iter().zip(bits.split(',')) {
                c.arg(flag).arg(v);
            }
            if !c.arg(&img).output().ok()?.status.success() {
                return None;
            }
        }
        Some(img)
    }

    fn cgpt_show(img: &Path, n: u32) -> String {
        let out = Command::new("cgpt")
            .args(["show", "-i", &n.to_string(), "-A"])
            .arg(img)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        out.unwrap_or_default()
    }

    fn partuuid(img: &Path, n: u32) -> Guid {
        let out = Command::new("cgpt")
            .args(["show", "-i", &n.to_string(), "-u"])
            .arg(img)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Guid::try_parse(&out).unwrap_or(Guid::ZERO)
    }

    #[test]
    fn marks_a_trial_slot_good_once() -> Result<()> {
        let d = tempfile::tempdir()?;
        let Some(img) = make_disk(d.path(), "1,0,1", "2,2,0") else {
            return Ok(());
        };
        let uuid_b = partuuid(&img, 3);
        let mut dev = FileDevice::open(&img, true)?;
        let attrs = read_attrs(&mut dev, &img)?;
        assert_eq!(attrs.a, Attrs::new(1, 0, true));
        assert_eq!(attrs.b, Attrs::new(2, 2, false));
        let m = commit_booted(&mut dev, &img, Slot::B, uuid_b, 3)?;
        assert_eq!(
            m.message(Slot::B),
            "slot b marked successful (prio 2 tries 2 ok 0 -> prio 2 tries 3 ok 1)"
        );
        drop(dev);
        // cgpt -A prints attribute bits 48-63: prio 2, tries 3 (re-armed),
        // successful; the other slot, A, committed by an older Cairn with
        // tries 0, is armed as the fallback and now carries no-auto (bit 63).
        assert_eq!(cgpt_show(&img, 3), "0x132");
        assert_eq!(cgpt_show(&img, 2), "0x8131");
        let verify = Command::new("cgpt").arg("show").arg(&img).output()?;
        assert!(verify.status.success());
        let text = String::from_utf8_lossy(&verify.stdout);
        assert!(!text.contains("INVALID"), "{text}");

        // Second run: no write at all (the file is unchanged byte for byte).
        let before = std::fs::read(&img)?;
        let mut dev = FileDevice::open(&img, true)?;
        let m = commit_booted(&mut dev, &img, Slot::B, uuid_b, 3)?;
        assert_eq!(m, Marked::Already(Attrs::new(2, 3, true)));
        assert_eq!(
            m.message(Slot::B),
            "slot b already successful (prio 2 tries 3 ok 1)"
        );
        drop(dev);
        assert!(std::fs::read(&img)? == before);
        Ok(())
    }

    #[test]
    fn refuses_a_partuuid_mismatch() -> Result<()> {
        let d = tempfile::tempdir()?;
        let Some(img) = make_disk(d.path(), "1,0,1", "2,3,0") else {
            return Ok(());
        };
        let uuid_a = partuuid(&img, 2);
        let mut dev = FileDevice::open(&img, true)?;
        let e = commit_booted(&mut dev, &img, Slot::B, uuid_a, 3)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("not marking")));
        drop(dev);
        assert_eq!(cgpt_show(&img, 3), "0x32");
        Ok(())
    }

    #[test]
    fn booted_files_and_disk_lookup() -> Result<()> {
        let d = tempfile::tempdir()?;
        let r = d.path();
        std::fs::create_dir_all(r.join(run::DIR))?;
        std::fs::write(r.join(run::BOOTED_SLOT), "b\n")?;
        let g = "0b6b2bd2-2d0f-4e3b-9e9d-7a6b1c1e9f00";
        std::fs::write(r.join(run::USR_PARTUUID), format!("{g}\n"))?;
        let b = Booted::read(r)?;
        assert_eq!(b.slot, Slot::B);
        assert_eq!(b.usr_partuuid.to_string(), g);
        // A fake /dev and /sys as udev and the kernel lay them out.
        std::fs::create_dir_all(r.join("dev/disk/by-partuuid"))?;
        std::fs::write(r.join("dev/vda3"), "")?;
        std::os::unix::fs::symlink("../../vda3", r.join("dev/disk/by-partuuid").join(g))?;
        let sys = r.join("sys/devices/pci0/virtio1/block/vda/vda3");
        std::fs::create_dir_all(&sys)?;
        std::fs::write(sys.join("partition"), "3\n")?;
        std::fs::create_dir_all(r.join("sys/class/block"))?;
        std::os::unix::fs::symlink(
            "../../devices/pci0/virtio1/block/vda/vda3",
            r.join("sys/class/block/vda3"),
        )?;
        assert_eq!(b.disk(r)?, r.join("dev/vda"));
        std::fs::write(r.join(run::BOOTED_SLOT), "c\n")?;
        assert!(Booted::read(r).is_err());
        Ok(())
    }
}
