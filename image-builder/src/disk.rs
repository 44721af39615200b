//! The GPT disk: `plan` computes every partition's place and attributes (pure,
//! tested with tables), `write` puts the partition contents and the table into
//! a file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use disk_layout::{ALIGN_BYTES, Arch, GPT_ATTR_NO_AUTO, GPT_ATTR_READ_ONLY, Guid, Part};
use gpt_slots::Attrs;

use crate::derive::Seed;
use cairn_build::board;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPlan {
    pub part: Part,
    pub first_lba: u64,
    pub last_lba: u64,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub attributes: u64,
}

impl PartPlan {
    pub fn offset(&self, sector: u64) -> u64 {
        self.first_lba * sector
    }
    pub fn size(&self, sector: u64) -> u64 {
        (self.last_lba - self.first_lba + 1) * sector
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    pub sector_size: u64,
    pub total_bytes: u64,
    pub disk_guid: Guid,
    pub parts: Vec<PartPlan>,
}

impl DiskPlan {
    pub fn get(&self, part: Part) -> &PartPlan {
        // plan() always creates every Part.
        &self.parts[part.number() as usize - 1]
    }
}

/// The design's fresh-image state: A is the good, booted slot, armed with
/// the board's `boot_tries` (every boot is counted; cairn-mark-good re-arms);
/// B is empty and never bootable until the updater has written and verified it.
pub fn initial_attrs(part: Part, boot_tries: u8) -> u64 {
    match part {
        Part::UsrA => Attrs {
            priority: 1,
            tries: boot_tries,
            successful: true,
        }
        .to_bits(GPT_ATTR_READ_ONLY),
        Part::UsrB => Attrs {
            priority: 0,
            tries: 0,
            successful: false,
        }
        .to_bits(GPT_ATTR_READ_ONLY | GPT_ATTR_NO_AUTO),
        _ => 0,
    }
}

pub fn plan(disk: &board::Disk, arch: Arch, seed: &Seed, boot_tries: u8) -> DiskPlan {
    let sector = u64::from(disk.sector_size);
    let sizes = |p: Part| match p {
        Part::Esp => disk.esp_mib,
        Part::UsrA | Part::UsrB => disk.usr_mib,
        Part::Oem => disk.oem_mib,
        Part::Root => disk.root_mib,
    };
    let mut offset = ALIGN_BYTES;
    let parts = Part::ALL
        .iter()
        .map(|&part| {
            let bytes = sizes(part) * MIB;
            let p = PartPlan {
                part,
                first_lba: offset / sector,
                last_lba: (offset + bytes) / sector - 1,
                type_guid: part.type_guid(arch),
                unique_guid: seed.guid(&format!("partition {}", part.label())),
                attributes: initial_attrs(part, boot_tries),
            };
            offset += bytes;
            p
        })
        .collect();
    // One aligned MiB at the end holds the backup table (33 sectors at 512 B).
    DiskPlan {
        sector_size: sector,
        total_bytes: offset + ALIGN_BYTES,
        disk_guid: seed.guid("disk"),
        parts,
    }
}

/// Writes `contents` into their partitions and the GPT around them. `out` is
/// created (or truncated); holes stay sparse.
pub fn write(plan: &DiskPlan, contents: &[(Part, &Path)], out: &Path) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    f.set_len(plan.total_bytes)
        .with_context(|| format!("cannot size {}", out.display()))?;
    for (part, src) in contents {
        let p = plan.get(*part);
        let len = std::fs::metadata(src)
            .with_context(|| format!("cannot read {}", src.display()))?
            .len();
        if len > p.size(plan.sector_size) {
            bail!(
                "{} is {} MiB but partition {} holds {} MiB: raise its size in the board config",
                src.display(),
                len.div_ceil(MIB),
                part.label(),
                p.size(plan.sector_size) / MIB
            );
        }
        copy_sparse(src, &mut f, p.offset(plan.sector_size))
            .with_context(|| format!("cannot copy {} into {}", src.display(), out.display()))?;
    }
    write_gpt(plan, &mut f)
        .with_context(|| format!("cannot write the partition table of {}", out.display()))?;
    f.sync_all()
        .with_context(|| format!("cannot sync {}", out.display()))?;
    Ok(())
}

fn write_gpt(plan: &DiskPlan, f: &mut File) -> Result<()> {
    let mut gpt = gptman::GPT::new_from(f, plan.sector_size, plan.disk_guid.0)?;
    for p in &plan.parts {
        gpt[p.part.number()] = gptman::GPTPartitionEntry {
            partition_type_guid: p.type_guid.0,
            unique_partition_guid: p.unique_guid.0,
            starting_lba: p.first_lba,
            ending_lba: p.last_lba,
            attribute_bits: p.attributes,
            partition_name: p.part.label().into(),
        };
    }
    gpt.write_into(f)?;
    gptman::GPT::write_protective_mbr_into(f, plan.sector_size)?;
    Ok(())
}

/// Copies `src` to `dst` at `offset`, seeking over all-zero blocks so the disk
/// file stays sparse (the target range is known to be zero: the file is new).
pub fn copy_sparse(src: &Path, dst: &mut File, offset: u64) -> std::io::Result<()> {
    let mut input = File::open(src)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(sector_size: u32) -> board::Disk {
        board::Disk {
            sector_size,
            esp_mib: 256,
            usr_mib: 1536,
            oem_mib: 128,
            root_mib: 1024,
        }
    }

    #[test]
    fn layout_follows_the_design() {
        for sector in [512u32, 4096] {
            let p = plan(&disk(sector), Arch::X86_64, &Seed([0; 32]), 3);
            let s = u64::from(sector);
            let expect = [
                (Part::Esp, 1, 256),
                (Part::UsrA, 257, 1536),
                (Part::UsrB, 1793, 1536),
                (Part::Oem, 3329, 128),
                (Part::Root, 3457, 1024),
            ];
            for (part, start_mib, size_mib) in expect {
                let pp = p.get(part);
                assert_eq!(pp.part, part);
                assert_eq!(pp.offset(s), start_mib * MIB, "{part:?} at {sector}");
                assert_eq!(pp.size(s), size_mib * MIB, "{part:?} at {sector}");
                assert_eq!(pp.offset(s) % ALIGN_BYTES, 0);
            }
            assert_eq!(p.total_bytes, (3457 + 1024 + 1) * MIB);
        }
    }

    #[test]
    fn fresh_image_slot_attributes() {
        let a = Attrs::from_bits(initial_attrs(Part::UsrA, 3));
        let b = Attrs::from_bits(initial_attrs(Part::UsrB, 3));
        assert_eq!((a.priority, a.tries, a.successful), (1, 3, true));
        assert_eq!((b.priority, b.tries, b.successful), (0, 0, false));
        assert_ne!(initial_attrs(Part::UsrA, 3) & GPT_ATTR_READ_ONLY, 0);
        assert_eq!(initial_attrs(Part::UsrA, 3) & GPT_ATTR_NO_AUTO, 0);
        assert_ne!(initial_attrs(Part::UsrB, 3) & GPT_ATTR_NO_AUTO, 0);
        assert_eq!(initial_attrs(Part::Root, 3), 0);
    }

    #[test]
    fn guids_differ_per_partition_and_arch_types_are_right() {
        let p = plan(&disk(512), Arch::Arm64, &Seed([3; 32]), 3);
        let mut ids: Vec<_> = p.parts.iter().map(|x| x.unique_guid).collect();
        ids.push(p.disk_guid);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 6);
        assert_eq!(p.get(Part::UsrB).type_guid, disk_layout::types::USR_ARM64);
        assert_eq!(p.get(Part::Root).type_guid, disk_layout::types::ROOT_ARM64);
    }

    #[test]
    fn too_big_content_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = disk(512);
        d.oem_mib = 16;
        let p = plan(&d, Arch::X86_64, &Seed([0; 32]), 3);
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(17 * MIB).unwrap();
        let err = write(&p, &[(Part::Oem, &big)], &dir.path().join("disk"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("OEM") && err.contains("board config"), "{err}");
    }
}
