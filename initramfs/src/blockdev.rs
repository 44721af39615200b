//! Finding the USR and ROOT partitions: block devices from sysfs `uevent`
//! files, partition GUIDs and names from each disk's GPT.
//!
//! The kernel's partition uevent carries PARTN and (on GPT) PARTNAME, but no
//! PARTUUID, so the unique partition GUID is read from the GPT itself.

use std::collections::BTreeMap;

use disk_layout::{Guid, Part};

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

/// One used GPT entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptEntry {
    /// 1-based entry number (the kernel's PARTN).
    pub number: u32,
    pub type_guid: Guid,
    pub unique: Guid,
    pub name: String,
}

/// Where the entry array is, from a GPT header block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GptHeader {
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
}

pub fn parse_gpt_header(block: &[u8]) -> Result<GptHeader, String> {
    if block.len() < 92 || &block[0..8] != b"EFI PART" {
        return Err("no GPT header".into());
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([block[o], block[o + 1], block[o + 2], block[o + 3]]);
    let mut a = [0u8; 8];
    a.copy_from_slice(&block[72..80]);
    let h = GptHeader {
        entries_lba: u64::from_le_bytes(a),
        num_entries: u32_at(80),
        entry_size: u32_at(84),
    };
    // The spec requires 128 * 2^n byte entries; bound the array to 1 MiB so a
    // corrupt header cannot make us allocate wildly.
    if h.entry_size < 128
        || !h.entry_size.is_power_of_two()
        || u64::from(h.num_entries) * u64::from(h.entry_size) > 1 << 20
    {
        return Err(format!(
            "implausible GPT entry array ({} x {} bytes)",
            h.num_entries, h.entry_size
        ));
    }
    Ok(h)
}

/// Parses the entry array; unused entries (zero type GUID) are skipped.
pub fn parse_gpt_entries(buf: &[u8], h: &GptHeader) -> Vec<GptEntry> {
    let size = h.entry_size as usize;
    buf.chunks_exact(size)
        .take(h.num_entries as usize)
        .enumerate()
        .filter_map(|(i, e)| {
            let mut t = [0u8; 16];
            t.copy_from_slice(&e[0..16]);
            let type_guid = Guid(t);
            if type_guid == Guid::ZERO {
                return None;
            }
            let mut u = [0u8; 16];
            u.copy_from_slice(&e[16..32]);
            let units: Vec<u16> = e[56..128]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            Some(GptEntry {
                number: u32::try_from(i + 1).ok()?,
                type_guid,
                unique: Guid(u),
                name: String::from_utf16_lossy(&units),
            })
        })
        .collect()
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
    gpts: &BTreeMap<String, Vec<GptEntry>>,
    usr: Guid,
) -> Result<Option<Found>, String> {
    let hits: Vec<(&String, &GptEntry)> = gpts
        .iter()
        .flat_map(|(disk, entries)| entries.iter().map(move |e| (disk, e)))
        .filter(|(_, e)| e.unique == usr)
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
    let roots: Vec<&GptEntry> = gpts[disk]
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
    let oems: Vec<&GptEntry> = gpts[disk]
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

    fn entry(buf: &mut [u8], i: usize, ty: Guid, uniq: Guid, name: &str) {
        let e = &mut buf[i * 128..(i + 1) * 128];
        e[0..16].copy_from_slice(&ty.0);
        e[16..32].copy_from_slice(&uniq.0);
        for (j, c) in name.encode_utf16().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h
    }

    const USR_A: Guid = Guid::parse("11111111-2222-4333-8444-555555555555");

    fn disk_gpt() -> Vec<GptEntry> {
        let h = parse_gpt_header(&header()).unwrap();
        assert_eq!(h.entries_lba, 2);
        let mut buf = vec![0u8; 128 * 128];
        let usr = disk_layout::types::USR_X86_64;
        entry(&mut buf, 0, disk_layout::types::ESP, Guid([1; 16]), "ESP");
        entry(&mut buf, 1, usr, USR_A, "USR-A");
        entry(&mut buf, 2, usr, Guid([3; 16]), "USR-B");
        entry(
            &mut buf,
            3,
            disk_layout::types::LINUX_DATA,
            Guid([4; 16]),
            "OEM",
        );
        entry(
            &mut buf,
            4,
            disk_layout::types::ROOT_X86_64,
            Guid([5; 16]),
            "ROOT",
        );
        parse_gpt_entries(&buf, &h)
    }

    #[test]
    fn gpt_entries_parse() {
        let e = disk_gpt();
        assert_eq!(e.len(), 5);
        assert_eq!(e[1].number, 2);
        assert_eq!(e[1].unique, USR_A);
        assert_eq!(e[1].name, "USR-A");
        assert_eq!(e[3].number, 4);
        assert_eq!(e[3].name, "OEM");
        assert_eq!(e[4].number, 5);
        assert_eq!(e[4].name, "ROOT");
        let mut bad = header();
        bad[84..88].copy_from_slice(&100u32.to_le_bytes());
        assert!(parse_gpt_header(&bad).is_err());
        assert!(parse_gpt_header(&[0u8; 512]).is_err());
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
        other[1].unique = Guid([9; 16]);
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
        other[1].unique = Guid([9; 16]);
        let with = |vda_gpt: Vec<GptEntry>| {
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
        let cases: Vec<(Vec<GptEntry>, Option<&str>)> = vec![
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
