//! The booted slot, the disk it lives on and its GPT attributes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use disk_layout::{GPT_ATTR_NO_AUTO, Guid, Slot};
use gpt_slots::{Attrs, BlockDevice, FileDevice, Gpt};

use crate::paths;

/// What cairn-init recorded about this boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Booted {
    pub slot: Slot,
    pub usr_partuuid: Guid,
}

impl Booted {
    pub fn read(root: &Path) -> Result<Booted> {
        let read = |rel: &str| -> Result<String> {
            let p = root.join(rel);
            let s = std::fs::read_to_string(&p).with_context(|| {
                format!("cannot read {} (not booted by cairn-init?)", p.display())
            })?;
            Ok(s.trim().to_string())
        };
        let s = read(paths::BOOTED_SLOT)?;
        let slot = Slot::from_letter(&s)
            .with_context(|| format!("/{}: bad slot {s:?}", paths::BOOTED_SLOT))?;
        let g = read(paths::USR_PARTUUID)?;
        let usr_partuuid = Guid::try_parse(&g)
            .with_context(|| format!("/{}: bad GUID {g:?}", paths::USR_PARTUUID))?;
        Ok(Booted { slot, usr_partuuid })
    }

    /// The whole disk holding the booted USR partition:
    /// /dev/disk/by-partuuid/<uuid> -> /dev/vda2 -> /sys/class/block/vda2
    /// -> its parent in sysfs (vda) -> /dev/vda.
    pub fn disk(&self, root: &Path) -> Result<PathBuf> {
        let link = root
            .join("dev/disk/by-partuuid")
            .join(self.usr_partuuid.to_string());
        let part = std::fs::canonicalize(&link)
            .with_context(|| format!("cannot resolve {}", link.display()))?;
        let name = part
            .file_name()
            .with_context(|| format!("{}: no device name", part.display()))?;
        let sys = root.join("sys/class/block").join(name);
        if !sys.join("partition").exists() {
            bail!("{} is not a partition", part.display());
        }
        let sys_real = std::fs::canonicalize(&sys)
            .with_context(|| format!("cannot resolve {}", sys.display()))?;
        let disk_name = sys_real
            .parent()
            .and_then(Path::file_name)
            .with_context(|| format!("{}: no parent disk", sys_real.display()))?;
        Ok(root.join("dev").join(disk_name))
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

fn io_err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what}: {e}")
}

pub fn read_attrs<D: BlockDevice>(dev: &mut D) -> Result<SlotAttrs>
where
    D::Error: std::fmt::Display,
{
    let gpt = Gpt::read(dev).map_err(io_err("cannot read the GPT"))?;
    let get = |s: Slot| -> Result<Attrs> {
        gpt.entry(s.part().number())
            .map(|e| e.attrs())
            .with_context(|| format!("the GPT has no {} entry", s.part().label()))
    };
    Ok(SlotAttrs {
        a: get(Slot::A)?,
        b: get(Slot::B)?,
    })
}

/// What [`mark_good`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marked {
    Changed { before: Attrs, after: Attrs },
    Already(Attrs),
}

impl Marked {
    /// The journal line (the wording tests look for).
    pub fn message(&self, slot: Slot) -> String {
        match self {
            Marked::Changed { before, after } if before.successful => format!(
                "cairn-mark-good: slot {} reached its health gate, tries re-armed ({before} -> {after})",
                slot.letter()
            ),
            Marked::Changed { before, after } => format!(
                "cairn-mark-good: slot {} marked successful ({before} -> {after})",
                slot.letter()
            ),
            Marked::Already(a) => format!(
                "cairn-mark-good: slot {} already successful ({a})",
                slot.letter()
            ),
        }
    }
}

/// Sets `slot` successful and re-arms its tries to `tries` (K: every boot is
/// counted by the boot manager, so a committed slot that dies K times in a
/// row before this point falls back), with a crash-safe commit. The other
/// slot, if committed but left at tries 0 by an older Cairn, is armed too so
/// it can serve as that fallback. The entry must carry `partuuid`, so a
/// confused /run never marks the wrong slot. Writes nothing when the bits are
/// already right: every write is a (small) risk and wears flash.
pub fn mark_good<D: BlockDevice>(
    dev: &mut D,
    slot: Slot,
    partuuid: Guid,
    tries: u8,
) -> Result<Marked>
where
    D::Error: std::fmt::Display,
{
    let mut gpt = Gpt::read(dev).map_err(io_err("cannot read the GPT"))?;
    let n = slot.part().number();
    let entry = gpt
        .entry(n)
        .with_context(|| format!("the GPT has no {} entry", slot.part().label()))?;
    if entry.unique_guid != partuuid {
        bail!(
            "GPT entry {n} has PARTUUID {}, but the booted /usr is {partuuid}: not marking",
            entry.unique_guid
        );
    }
    let before = entry.attrs();
    let after = gpt_slots::mark_good(before, tries);
    // The committed slot is the current OS: it loses the DPS no-auto flag and
    // the other slot gets it, so systemd-dissect and gpt-auto (which prefer
    // the highest label) see the /usr that runs. Same commit, same crash safety.
    let other = slot.other().part().number();
    let other_bits = gpt
        .entry(other)
        .with_context(|| format!("the GPT has no {} entry", slot.other().part().label()))?
        .attributes;
    let new_bits = after.to_bits(entry.attributes) & !GPT_ATTR_NO_AUTO;
    let new_other = gpt_slots::arm_fallback(Attrs::from_bits(other_bits), tries)
        .to_bits(other_bits)
        | GPT_ATTR_NO_AUTO;
    if new_bits == entry.attributes && new_other == other_bits {
        return Ok(Marked::Already(before));
    }
    gpt.set_attributes(n, new_bits)
        .map_err(io_err("cannot set the attributes"))?;
    gpt.set_attributes(other, new_other)
        .map_err(io_err("cannot set the attributes"))?;
    gpt.commit(dev).map_err(io_err("cannot write the GPT"))?;
    Ok(if after == before {
        Marked::Already(before)
    } else {
        Marked::Changed { before, after }
    })
}

/// Opens the booted disk and reads both slots' attributes.
pub fn read_booted_disk(root: &Path, booted: &Booted) -> Result<(PathBuf, SlotAttrs)> {
    let disk = booted.disk(root)?;
    let mut dev = FileDevice::open(&disk, false)
        .with_context(|| format!("cannot open {}", disk.display()))?;
    let attrs = read_attrs(&mut dev).with_context(|| disk.display().to_string())?;
    Ok((disk, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

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
        let attrs = read_attrs(&mut dev)?;
        assert_eq!(attrs.a, Attrs::new(1, 0, true));
        assert_eq!(attrs.b, Attrs::new(2, 2, false));
        let m = mark_good(&mut dev, Slot::B, uuid_b, 3)?;
        assert_eq!(
            m.message(Slot::B),
            "cairn-mark-good: slot b marked successful (prio 2 tries 2 ok 0 -> prio 2 tries 3 ok 1)"
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
        let m = mark_good(&mut dev, Slot::B, uuid_b, 3)?;
        assert_eq!(m, Marked::Already(Attrs::new(2, 3, true)));
        assert_eq!(
            m.message(Slot::B),
            "cairn-mark-good: slot b already successful (prio 2 tries 3 ok 1)"
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
        let e = mark_good(&mut dev, Slot::B, uuid_a, 3)
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
        std::fs::create_dir_all(r.join("run/cairn"))?;
        std::fs::write(r.join("run/cairn/booted-slot"), "b\n")?;
        let g = "0b6b2bd2-2d0f-4e3b-9e9d-7a6b1c1e9f00";
        std::fs::write(r.join("run/cairn/usr-partuuid"), format!("{g}\n"))?;
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
        std::fs::write(r.join("run/cairn/booted-slot"), "c\n")?;
        assert!(Booted::read(r).is_err());
        Ok(())
    }
}
