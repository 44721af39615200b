//! Finding the USR and ROOT partitions: block devices from sysfs `uevent`
//! files, partition GUIDs and names from each disk's GPT.
//!
//! The kernel's partition uevent carries PARTN and (on GPT) PARTNAME, but no
//! PARTUUID, so the unique partition GUID is read from the GPT itself, with
//! `gpt-slots` (CRCs checked, the backup copy when the primary is bad).

use std::collections::BTreeMap;

use disk_layout::{Guid, Part};
use gpt_slots::{BlockDevice, Entry, Gpt};

/// What we need from `/sys/class/block/<name>/uevent`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uevent {
    pub major: u32,
    pub minor: u32,
    pub devname: String,
    /// `disk` or `partition`.
    pub devtype: String,
    pub partn: Option<u32>,
    pub partname: Option<String>,
}

/// Parses uevent text (`KEY=VALUE` lines).
pub fn parse_uevent(text: &str) -> Option<Uevent> {
    let mut u = Uevent::default();
    let (mut major, mut minor) = (None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "MAJOR" => major = v.parse().ok(),
            "MINOR" => minor = v.parse().ok(),
            "DEVNAME" => u.devname = v.to_string(),
            "DEVTYPE" => u.devtype = v.to_string(),
            "PARTN" => u.partn = v.parse().ok(),
            "PARTNAME" => u.partname = Some(v.to_string()),
            _ => {}
        }
    }
    u.major = major?;
    u.minor = minor?;
    if u.devname.is_empty() || u.devname.contains("..") {
        return None;
    }
    Some(u)
}

/// A partition as seen in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartDev {
    /// The whole disk's devname, e.g. `vda`.
    pub disk: String,
    pub uevent: Uevent,
}

/// A disk opened read-only, seen as sectors by the GPT reader (gpt-slots'
/// file device: bounds-checked reads; writes fail on the read-only file).
pub use gpt_slots::FileDevice as Disk;

/// The used entries of a disk's GPT, read as the kernel and the boot manager
/// read it: the primary copy when its header and entry-array CRCs check out,
/// else the backup at the last LBA.
pub fn read_gpt<D: BlockDevice>(disk: &mut D) -> Result<Vec<Entry>, String>
where
    D::Error: std::fmt::Display,
{
    let gpt = Gpt::read(disk).map_err(|e| e.to_string())?;
    Ok(gpt.entries().collect())
}

/// The GPT entries of each disk, by devname. A disk that cannot be opened or
/// has no valid GPT (an MBR stick, a blank disk) is left out, its reason in
/// the second list.
pub fn read_gpts<D: BlockDevice>(
    disks: impl IntoIterator<Item = (String, Result<D, String>)>,
) -> (BTreeMap<String, Vec<Entry>>, Vec<String>)
where
    D::Error: std::fmt::Display,
{
    let mut gpts = BTreeMap::new();
    let mut problems = Vec::new();
    for (devname, disk) in disks {
        match disk.and_then(|mut d| read_gpt(&mut d)) {
            Ok(entries) => {
                gpts.insert(devname, entries);
            }
            Err(e) => problems.push(format!("{devname}: {e}")),
        }
    }
    (gpts, problems)
}

/// The partitions cairn-init mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub usr: PartDev,
    pub root: PartDev,
    /// The OEM partition on the same disk, if exactly one is named so and the
    /// kernel has added it. Optional: systemd's oem.mount is the fallback.
    pub oem: Option<PartDev>,
}

/// Picks USR (by unique GUID), ROOT (by GPT name `ROOT` on the same disk)
/// and, where there is one, OEM (by GPT name `OEM` on that disk).
/// `Ok(None)`: not (yet) visible, keep waiting. `Err`: waiting cannot help.
pub fn select(
    parts: &[PartDev],
    gpts: &BTreeMap<String, Vec<Entry>>,
    usr: Guid,
) -> Result<Option<Found>, String> {
    let hits: Vec<(&String, &Entry)> = gpts
        .iter()
        .flat_map(|(disk, entries)| entries.iter().map(move |e| (disk, e)))
        .filter(|(_, e)| e.unique_guid == usr)
        .collect();
    let (disk, usr_entry) = match hits.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => {
            // Two disks carrying the same image (e.g. an installer stick and
            // the installed disk): refuse to guess which ROOT belongs to it.
            let disks: Vec<&str> = many.iter().map(|(d, _)| d.as_str()).collect();
            return Err(format!(
                "partition {usr} found on several disks: {}",
                disks.join(", ")
            ));
        }
    };
    let roots: Vec<&Entry> = gpts[disk]
        .iter()
        .filter(|e| e.name == Part::Root.label())
        .collect();
    let root_entry = match roots.as_slice() {
        [one] => *one,
        [] => {
            return Err(format!(
                "no partition named {} on {disk}",
                Part::Root.label()
            ));
        }
        _ => {
            return Err(format!(
                "several partitions named {} on {disk}",
                Part::Root.label()
            ));
        }
    };
    let dev = |n: u32| {
        parts
            .iter()
            .find(|p| &p.disk == disk && p.uevent.partn == Some(n))
            .cloned()
    };
    let oems: Vec<&Entry> = gpts[disk]
        .iter()
        .filter(|e| e.name == Part::Oem.label())
        .collect();
    let oem = match oems.as_slice() {
        [one] => dev(one.number),
        _ => None,
    };
    // The GPT can be read before the kernel has added every partition.
    Ok(match (dev(usr_entry.number), dev(root_entry.number)) {
        (Some(usr), Some(root)) => Some(Found { usr, root, oem }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    const UEVENT: &str =
        "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=2\nPARTNAME=USR-A\n";

    #[test]
    fn uevent_parses() {
        let u = parse_uevent(UEVENT).unwrap();
        assert_eq!((u.major, u.minor), (254, 2));
        assert_eq!(u.devname, "vda2");
        assert_eq!(u.devtype, "partition");
        assert_eq!(u.partn, Some(2));
        assert_eq!(u.partname.as_deref(), Some("USR-A"));
        let disk = parse_uevent("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        assert_eq!(disk.partn, None);
        assert!(parse_uevent("DEVNAME=vda\n").is_none());
        assert!(parse_uevent("MAJOR=1\nMINOR=1\nDEVNAME=../x\n").is_none());
    }

    const USR_A: Guid = Guid::parse("11111111-2222-4333-8444-555555555555");
    const MIB: u64 = 1 << 20;

    /// A Cairn-shaped disk image written by gptman (another implementation
    /// than the reader's): ESP, USR-A (PARTUUID `USR_A`), USR-B, OEM, ROOT,
    /// partition n with PARTUUID `[n; 16]` otherwise.
    fn image(ss: u64) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(16 * MIB).unwrap();
        let mut gpt = gptman::GPT::new_from(&mut f, ss, [0xd1; 16]).unwrap();
        let mut start = MIB / ss;
        for part in Part::ALL {
            let end = match part {
                Part::Root => gpt.header.last_usable_lba,
                _ => start + 2 * MIB / ss - 1,
            };
            let unique = match part {
                Part::UsrA => USR_A,
                _ => Guid([part.number() as u8; 16]),
            };
            gpt[part.number()] = gptman::GPTPartitionEntry {
                partition_type_guid: part.type_guid(disk_layout::Arch::X86_64).0,
                unique_partition_guid: unique.0,
                starting_lba: start,
                ending_lba: end,
                attribute_bits: 0,
                partition_name: part.label().into(),
            };
            start = end + 1;
        }
        gptman::GPT::write_protective_mbr_into(&mut f, ss).unwrap();
        gpt.write_into(&mut f).unwrap();
        f
    }

    fn read(file: File, ss: u64) -> Result<Vec<Entry>, String> {
        read_gpt(&mut Disk::with_sector_size(file, ss as usize).unwrap())
    }

    fn disk_gpt() -> Vec<Entry> {
        read(image(512), 512).unwrap()
    }

    #[test]
    fn reads_gptman_images_at_512_and_4096() {
        for ss in [512, 4096] {
            let e = read(image(ss), ss).unwrap();
            assert_eq!(e.len(), 5, "{ss}");
            for (e, part) in e.iter().zip(Part::ALL) {
                assert_eq!(e.number, part.number());
                assert_eq!(e.name, part.label());
                assert_eq!(e.type_guid, part.type_guid(disk_layout::Arch::X86_64));
            }
            assert_eq!(e[1].unique_guid, USR_A);
            assert_eq!(e[4].unique_guid, Guid([5; 16]));
        }
    }

    #[test]
    fn a_corrupt_primary_gpt_falls_back_to_the_backup() {
        for ss in [512, 4096] {
            // (what, byte offset from the primary header's start, new byte)
            let damage = [
                // A flipped bit in the disk GUID: header CRC mismatch.
                ("primary header", 56, None),
                // USR-A's name in the primary array becomes "XSR-A": only the
                // array CRC tells (the header is intact).
                ("primary entry array", ss + 128 + 56, Some(b'X')),
                // No signature at all.
                ("primary signature", 0, Some(0)),
            ];
            for (what, at, byte) in damage {
                let f = image(ss);
                let off = ss + at;
                let mut b = [0u8];
                f.read_exact_at(&mut b, off).unwrap();
                f.write_all_at(&[byte.unwrap_or(b[0] ^ 1)], off).unwrap();
                let e = read(f, ss).unwrap_or_else(|e| panic!("{ss} {what}: {e}"));
                assert_eq!(e.len(), 5, "{ss} {what}");
                assert_eq!(e[1].name, "USR-A", "{ss} {what}");
                assert_eq!(e[1].unique_guid, USR_A, "{ss} {what}");
            }
            // Both copies bad: no table.
            let f = image(ss);
            f.write_all_at(&[0], ss).unwrap();
            let last = f.metadata().unwrap().len() - ss;
            f.write_all_at(&[0], last).unwrap();
            let e = read(f, ss).unwrap_err();
            assert!(e.contains("no valid GPT"), "{e}");
        }
    }

    #[test]
    fn disks_without_a_gpt_are_skipped() {
        let good = image(512);
        good.write_all_at(&[0], 512).unwrap(); // primary gone, backup intact
        let blank = tempfile::tempfile().unwrap();
        blank.set_len(16 * MIB).unwrap();
        let tiny = tempfile::tempfile().unwrap();
        tiny.set_len(4 * 512).unwrap();
        let disks = [
            (
                "sda",
                Disk::with_sector_size(blank, 512).map_err(|e| e.to_string()),
            ),
            ("sdb", Err("open: No such device".to_string())),
            (
                "sdc",
                Disk::with_sector_size(tiny, 512).map_err(|e| e.to_string()),
            ),
            (
                "vda",
                Disk::with_sector_size(good, 512).map_err(|e| e.to_string()),
            ),
        ];
        let (gpts, problems) = read_gpts(disks.map(|(n, d)| (n.to_string(), d)));
        assert_eq!(gpts.keys().collect::<Vec<_>>(), ["vda"]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("sda: no valid GPT"), "{problems:?}");
        assert!(problems[1].starts_with("sdb: open"), "{problems:?}");
        assert!(
            problems[2].starts_with("sdc: disk too small"),
            "{problems:?}"
        );
        // And the boot goes on from the backup table.
        let parts: Vec<PartDev> = [2, 5].iter().map(|&n| part("vda", n)).collect();
        let f = select(&parts, &gpts, USR_A).unwrap().unwrap();
        assert_eq!(f.usr.uevent.devname, "vda2");
        assert_eq!(f.root.uevent.devname, "vda5");
    }

    #[test]
    fn disk_reads_are_bounded() {
        let mut d = Disk::with_sector_size(image(512), 512).unwrap();
        assert_eq!(d.num_sectors(), 16 * MIB / 512);
        let mut buf = [0u8; 1024];
        assert!(d.read_sectors(d.num_sectors() - 2, &mut buf).is_ok());
        assert!(d.read_sectors(d.num_sectors() - 1, &mut buf).is_err());
        assert!(d.read_sectors(0, &mut buf[..100]).is_err());
    }

    fn part(disk: &str, n: u32) -> PartDev {
        PartDev {
            disk: disk.into(),
            uevent: Uevent {
                major: 254,
                minor: n,
                devname: format!("{disk}{n}"),
                devtype: "partition".into(),
                partn: Some(n),
                partname: None,
            },
        }
    }

    #[test]
    fn selects_usr_and_root_on_the_same_disk() {
        let mut gpts = BTreeMap::new();
        gpts.insert("vda".to_string(), disk_gpt());
        let mut other = disk_gpt();
        other[1].unique_guid = Guid([9; 16]);
        gpts.insert("sda".to_string(), other);
        let parts: Vec<PartDev> = [2, 3, 5].iter().map(|&n| part("vda", n)).collect();
        let mut all = parts.clone();
        all.push(part("sda", 5));
        let f = select(&all, &gpts, USR_A).unwrap().unwrap();
        assert_eq!(f.usr.uevent.devname, "vda2");
        assert_eq!(f.root.uevent.devname, "vda5");
        // OEM is in the GPT but the kernel has not added vda4 (yet): no OEM,
        // which does not hold the boot up.
        assert_eq!(f.oem, None);

        // Not there yet: wait.
        assert_eq!(select(&parts[..1], &gpts, USR_A), Ok(None));
        assert_eq!(select(&all, &gpts, Guid([7; 16])), Ok(None));

        // The same image on two disks: refuse.
        gpts.insert("sda".to_string(), disk_gpt());
        let e = select(&all, &gpts, USR_A).unwrap_err();
        assert!(e.contains("several disks"), "{e}");

        // No ROOT on the USR disk.
        let mut noroot = disk_gpt();
        noroot[4].name = "DATA".into();
        let gpts = BTreeMap::from([("vda".to_string(), noroot)]);
        let e = select(&all, &gpts, USR_A).unwrap_err();
        assert!(e.contains("no partition named ROOT"), "{e}");
    }

    #[test]
    fn selects_oem_on_the_usr_disk_only_when_unambiguous() {
        let vda: Vec<PartDev> = [1, 2, 3, 4, 5].iter().map(|&n| part("vda", n)).collect();
        let mut other = disk_gpt();
        other[1].unique_guid = Guid([9; 16]);
        let with = |vda_gpt: Vec<Entry>| {
            let gpts = BTreeMap::from([
                ("vda".to_string(), vda_gpt),
                ("sda".to_string(), other.clone()),
            ]);
            let mut parts = vda.clone();
            parts.push(part("sda", 4));
            select(&parts, &gpts, USR_A).unwrap().unwrap().oem
        };
        // (OEM entries on the USR disk, expected device)
        let renamed = |names: &[(usize, &str)]| {
            let mut g = disk_gpt();
            for (i, n) in names {
                g[*i].name = (*n).into();
            }
            g
        };
        let cases: Vec<(Vec<Entry>, Option<&str>)> = vec![
            (disk_gpt(), Some("vda4")),
            // None named OEM on this disk; sda's OEM must not be taken.
            (renamed(&[(3, "DATA")]), None),
            // Two named OEM: do not guess, leave it to oem.mount.
            (renamed(&[(0, "OEM")]), None),
        ];
        for (gpt, want) in cases {
            let got = with(gpt);
            assert_eq!(got.map(|p| p.uevent.devname), want.map(String::from));
        }
    }
}
