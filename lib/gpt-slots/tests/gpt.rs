//! The GPT reader/writer against images made by another implementation
//! (gptman), against the real tools (sgdisk, cgpt), and under power cuts at
//! every write of a commit.

use disk_layout::{Arch, Guid, Part};
use gpt_slots::{
    Attrs, BlockDevice, CopyStatus, Entry, FileDevice, Gpt, GptError, Invalid, TableCopy,
    boot_attempt, choose, mark_failed, mark_good, mark_unbootable, mark_updated,
};
use std::io::{Cursor, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;
const A: u32 = 2;
const B: u32 = 3;
const READ_ONLY: u64 = disk_layout::GPT_ATTR_READ_ONLY;

#[derive(Debug)]
struct DevError(#[expect(dead_code, reason = "only shown through Debug in failures")] &'static str);

/// A disk in memory.
#[derive(Clone)]
struct MemDevice {
    data: Vec<u8>,
    ss: usize,
}

impl BlockDevice for MemDevice {
    type Error = DevError;
    fn sector_size(&self) -> usize {
        self.ss
    }
    fn num_sectors(&self) -> u64 {
        (self.data.len() / self.ss) as u64
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DevError> {
        let at = lba as usize * self.ss;
        let src = self
            .data
            .get(at..at + buf.len())
            .ok_or(DevError("read beyond the end"))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), DevError> {
        let at = lba as usize * self.ss;
        let dst = self
            .data
            .get_mut(at..at + buf.len())
            .ok_or(DevError("write beyond the end"))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DevError> {
        Ok(())
    }
}

/// The power fails after `budget` sector writes. With `torn`, the next sector
/// write lands only its first half (the rest keeps the old bytes). Everything
/// after the cut fails, as a dead disk would.
struct CutDevice<'a> {
    inner: &'a mut MemDevice,
    budget: usize,
    torn: bool,
    dead: bool,
    writes: usize,
}

impl<'a> CutDevice<'a> {
    fn new(inner: &'a mut MemDevice, budget: usize, torn: bool) -> Self {
        CutDevice {
            inner,
            budget,
            torn,
            dead: false,
            writes: 0,
        }
    }
}

impl BlockDevice for CutDevice<'_> {
    type Error = DevError;
    fn sector_size(&self) -> usize {
        self.inner.ss
    }
    fn num_sectors(&self) -> u64 {
        self.inner.num_sectors()
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DevError> {
        if self.dead {
            return Err(DevError("power lost"));
        }
        self.inner.read_sectors(lba, buf)
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), DevError> {
        let ss = self.inner.ss;
        for (i, sector) in buf.chunks(ss).enumerate() {
            if self.dead {
                return Err(DevError("power lost"));
            }
            let at = lba + i as u64;
            if self.budget == 0 {
                if self.torn {
                    let start = at as usize * ss;
                    self.inner.data[start..start + ss / 2].copy_from_slice(&sector[..ss / 2]);
                }
                self.dead = true;
                return Err(DevError("power lost"));
            }
            self.inner.write_sectors(at, sector)?;
            self.budget -= 1;
            self.writes += 1;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DevError> {
        if self.dead {
            Err(DevError("power lost"))
        } else {
            Ok(())
        }
    }
}

/// Records every sector write and flush, passing them through.
struct LogDevice<'a> {
    inner: &'a mut MemDevice,
    log: Vec<Event>,
}

#[derive(Clone)]
enum Event {
    Write(u64, Vec<u8>),
    Flush,
}

impl BlockDevice for LogDevice<'_> {
    type Error = DevError;
    fn sector_size(&self) -> usize {
        self.inner.ss
    }
    fn num_sectors(&self) -> u64 {
        self.inner.num_sectors()
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DevError> {
        self.inner.read_sectors(lba, buf)
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), DevError> {
        for (i, s) in buf.chunks(self.inner.ss).enumerate() {
            self.log.push(Event::Write(lba + i as u64, s.to_vec()));
        }
        self.inner.write_sectors(lba, buf)
    }
    fn flush(&mut self) -> Result<(), DevError> {
        self.log.push(Event::Flush);
        Ok(())
    }
}

fn guid(n: u8) -> [u8; 16] {
    // Fixed GUIDs: the tests compare images byte for byte.
    [
        n, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, n,
    ]
}

/// A Cairn-shaped disk made with gptman: ESP, USR-A, USR-B, OEM, ROOT,
/// fresh-image attributes (A 1/0/1, B 0/0/0, both read-only bit 60).
fn make_image(ss: u64, disk_mib: u64) -> MemDevice {
    let arch = Arch::X86_64;
    let mut cur = Cursor::new(vec![0u8; (disk_mib * MIB) as usize]);
    let mut gpt = gptman::GPT::new_from(&mut cur, ss, guid(0xd1)).expect("new gpt");
    let spm = MIB / ss; // sectors per MiB
    let sizes = [
        (Part::Esp, 2),
        (Part::UsrA, 3),
        (Part::UsrB, 3),
        (Part::Oem, 1),
    ];
    let mut start = spm;
    for (part, mib) in sizes.iter().copied().chain([(Part::Root, 0)]) {
        let end = if mib == 0 {
            gpt.header.last_usable_lba
        } else {
            start + mib * spm - 1
        };
        let attrs = match part {
            Part::UsrA => Attrs::new(1, 0, true).to_bits(READ_ONLY),
            Part::UsrB => Attrs::new(0, 0, false).to_bits(READ_ONLY),
            _ => 0,
        };
        gpt[part.number()] = gptman::GPTPartitionEntry {
            partition_type_guid: part.type_guid(arch).0,
            unique_partition_guid: guid(part.number() as u8),
            starting_lba: start,
            ending_lba: end,
            attribute_bits: attrs,
            partition_name: part.label().into(),
        };
        start = end + 1;
    }
    gptman::GPT::write_protective_mbr_into(&mut cur, ss).expect("pmbr");
    gpt.write_into(&mut cur).expect("write gpt");
    MemDevice {
        data: cur.into_inner(),
        ss: ss as usize,
    }
}

fn entries(gpt: &Gpt) -> Vec<Entry> {
    gpt.entries().collect()
}

fn usr_type() -> Guid {
    Arch::X86_64.usr_type()
}

fn slot_attrs(gpt: &Gpt) -> (Attrs, Attrs) {
    let e = |n| gpt.entry(n).expect("usr entry").attrs();
    (e(A), e(B))
}

/// Checks each copy on its own with gptman (header CRC, array CRC) and that
/// both hold the same entries.
fn gptman_check_both_copies(dev: &MemDevice) -> Vec<gptman::GPTPartitionEntry> {
    let ss = dev.ss as u64;
    let mut cur = Cursor::new(dev.data.clone());
    let mut read_at = |lba: u64| {
        cur.seek(SeekFrom::Start(lba * ss)).expect("seek");
        let h = gptman::GPTHeader::read_from(&mut cur).expect("valid header");
        h.read_partitions(&mut cur, ss).expect("valid array")
    };
    let primary = read_at(1);
    let backup = read_at(dev.num_sectors() - 1);
    assert!(primary == backup, "primary and backup arrays differ");
    primary
}

#[test]
fn reads_gptman_images_at_512_and_4096() {
    for ss in [512u64, 4096] {
        let mut dev = make_image(ss, 16);
        let gpt = Gpt::read(&mut dev).expect("read");
        assert!(gpt.is_healthy(), "{ss}");
        assert_eq!(gpt.sector_size(), ss as usize);
        assert_eq!(gpt.disk_guid(), Guid(guid(0xd1)));
        let es = entries(&gpt);
        assert_eq!(es.len(), 5);
        for (e, part) in es.iter().zip(Part::ALL) {
            assert_eq!(e.number, part.number());
            assert_eq!(e.name, part.label());
            assert_eq!(e.type_guid, part.type_guid(Arch::X86_64));
            assert_eq!(e.unique_guid, Guid(guid(part.number() as u8)));
        }
        assert_eq!(es[0].first_lba, MIB / ss);
        assert_eq!(es[1].first_lba, 3 * MIB / ss);
        let slots = gpt.slots(usr_type());
        assert_eq!(slots.iter().map(|s| s.number).collect::<Vec<_>>(), [A, B]);
        assert_eq!(
            slot_attrs(&gpt),
            (Attrs::new(1, 0, true), Attrs::new(0, 0, false))
        );
        assert!(gpt.slots(Arch::Arm64.usr_type()).is_empty());
        assert_eq!(choose(&slots).map(|c| c.number), Some(A));
    }
}

#[test]
fn commit_round_trips_attributes_at_512_and_4096() {
    for ss in [512u64, 4096] {
        let mut dev = make_image(ss, 16);
        let mut gpt = Gpt::read(&mut dev).expect("read");
        gpt.set_slot_attrs(B, Attrs::new(2, 3, false)).expect("B");
        gpt.set_slot_attrs(A, Attrs::new(1, 0, true)).expect("A");
        gpt.commit(&mut dev).expect("commit");
        let again = Gpt::read(&mut dev).expect("re-read");
        assert!(again.is_healthy());
        assert_eq!(
            slot_attrs(&again),
            (Attrs::new(1, 0, true), Attrs::new(2, 3, false))
        );
        // Other attribute bits survive.
        assert_eq!(
            again.entry(B).expect("B").attributes,
            Attrs::new(2, 3, false).to_bits(READ_ONLY)
        );
        // gptman agrees about both copies.
        let parts = gptman_check_both_copies(&dev);
        assert_eq!(
            Attrs::from_bits(parts[2].attribute_bits),
            Attrs::new(2, 3, false)
        );
        // Everything but the USR-B entry is unchanged.
        let before = make_image(ss, 16);
        let reference = Gpt::read(&mut before.clone()).expect("read");
        for (x, y) in entries(&reference).iter().zip(entries(&again)) {
            if x.number != B {
                assert_eq!(*x, y);
            }
        }
        assert_eq!(
            gpt.set_slot_attrs(9, Attrs::default()),
            Err(gpt_slots::NoSuchEntry(9))
        );
        assert_eq!(
            gpt.set_slot_attrs(0, Attrs::default()),
            Err(gpt_slots::NoSuchEntry(0))
        );
    }
}

/// What is broken, how, and the reason the reader must give.
type Damage = (&'static str, fn(&mut MemDevice), Invalid);

#[test]
fn falls_back_to_the_backup_and_repairs() {
    for ss in [512usize, 4096] {
        let pristine = make_image(ss as u64, 16);
        // Damage: torn primary header, torn primary array, both gone.
        let cases: [Damage; 3] = [
            ("header", |d| d.data[d.ss + 40] ^= 0xff, Invalid::HeaderCrc),
            ("array", |d| d.data[2 * d.ss + 5] ^= 0xff, Invalid::ArrayCrc),
            (
                "signature",
                |d| d.data[d.ss..d.ss + 8].fill(0),
                Invalid::Signature,
            ),
        ];
        for (what, damage, why) in cases {
            let mut dev = pristine.clone();
            damage(&mut dev);
            let mut gpt = Gpt::read(&mut dev).expect("backup");
            assert_eq!(gpt.source(), TableCopy::Backup, "{what}");
            assert_eq!(
                gpt.status(TableCopy::Primary),
                CopyStatus::Invalid(why),
                "{what}"
            );
            assert_eq!(
                entries(&gpt),
                entries(&Gpt::read(&mut pristine.clone()).expect("read"))
            );
            let r = gpt.repair(&mut dev).expect("repair");
            assert!(r.primary && !r.backup, "{what}");
            assert!(Gpt::read(&mut dev).expect("read").is_healthy());
            assert_eq!(
                dev.data, pristine.data,
                "{what}: repair restores the image byte for byte"
            );
        }
        // Backup damaged: the primary is used and the backup rewritten.
        let mut dev = pristine.clone();
        let last = dev.data.len() - ss;
        dev.data[last + 30] ^= 1;
        let mut gpt = Gpt::read(&mut dev).expect("primary");
        assert_eq!(gpt.source(), TableCopy::Primary);
        let r = gpt.repair(&mut dev).expect("repair");
        assert!(r.backup && !r.primary);
        assert_eq!(dev.data, pristine.data);
        // Both gone.
        let mut dev = pristine.clone();
        dev.data[ss] ^= 1;
        dev.data[last] ^= 1;
        assert!(matches!(
            Gpt::read(&mut dev),
            Err(GptError::NoValidTable {
                primary: Invalid::Signature,
                backup: Invalid::Signature
            })
        ));
        // Repair refuses to write half-made changes into one copy only.
        let mut dev = pristine.clone();
        let mut gpt = Gpt::read(&mut dev).expect("read");
        gpt.set_slot_attrs(B, Attrs::new(5, 5, false)).expect("B");
        assert!(matches!(
            gpt.repair(&mut dev),
            Err(GptError::PendingChanges)
        ));
    }
}

#[test]
fn stale_backup_is_detected_and_rewritten() {
    // Both copies valid but different (a crash after the backup was flushed
    // but before the primary was written): the primary wins.
    let mut dev = make_image(512, 16);
    let pristine = dev.clone();
    let mut gpt = Gpt::read(&mut dev).expect("read");
    gpt.set_slot_attrs(B, Attrs::new(2, 3, false)).expect("B");
    gpt.commit(&mut dev).expect("commit");
    let half = dev.data.len() / 2;
    dev.data[..half].copy_from_slice(&pristine.data[..half]);
    let mut gpt = Gpt::read(&mut dev).expect("read");
    assert_eq!(
        (gpt.source(), gpt.status(TableCopy::Backup)),
        (TableCopy::Primary, CopyStatus::Stale)
    );
    assert_eq!(slot_attrs(&gpt).1, Attrs::new(0, 0, false));
    assert!(gpt.repair(&mut dev).expect("repair").backup);
    assert_eq!(dev.data, pristine.data);
}

#[test]
fn grown_disk_gets_its_backup_moved_to_the_end() {
    let mut dev = make_image(512, 16);
    dev.data.resize(24 * MIB as usize, 0);
    let mut gpt = Gpt::read(&mut dev).expect("read");
    assert_eq!(gpt.status(TableCopy::Primary), CopyStatus::Stale);
    assert_eq!(
        gpt.status(TableCopy::Backup),
        CopyStatus::Invalid(Invalid::Signature)
    );
    gpt.repair(&mut dev).expect("repair");
    assert!(Gpt::read(&mut dev).expect("read").is_healthy());
    gptman_check_both_copies(&dev);
}

/// The state machine as a list of table changes: (what, change, slots
/// holding a complete OS while the change is being written).
type Step = (
    &'static str,
    fn(Attrs, Attrs) -> (Attrs, Attrs),
    &'static [u32],
);

const STEPS: &[Step] = &[
    (
        "2: B unbootable before writing",
        |a, _| (a, mark_unbootable()),
        &[A],
    ),
    (
        "3: B written and verified",
        |a, _| swap(mark_updated(a)),
        &[A, B],
    ),
    ("4: boot attempt of B", |a, b| (a, boot_attempt(b)), &[A, B]),
    ("5: B marked good", |a, b| (a, mark_good(b, 3)), &[A, B]),
    (
        "2: A unbootable before writing",
        |_, b| (mark_unbootable(), b),
        &[B],
    ),
    ("3: A written and verified", |_, b| mark_updated(b), &[A, B]),
    ("4: boot attempt of A", |a, b| (boot_attempt(a), b), &[A, B]),
    (
        "boot manager refuses A (bad boot files)",
        |a, b| (mark_failed(a), b),
        &[A, B],
    ),
];

fn swap((x, y): (Attrs, Attrs)) -> (Attrs, Attrs) {
    (y, x)
}

/// After a power cut: the table read back is the old or the new one, the
/// boot choice picks a slot holding a complete OS, and repair makes both
/// copies valid without changing the table.
fn check_after_cut(
    mut disk: MemDevice,
    old: &[Entry],
    new: &[Entry],
    complete: &[u32],
    what: &str,
) {
    let mut gpt =
        Gpt::read(&mut disk).unwrap_or_else(|e| panic!("{what}: no table after the cut: {e:?}"));
    let got = entries(&gpt);
    assert!(
        got == old || got == new,
        "{what}: table is neither the old nor the new one"
    );
    let c = choose(&gpt.slots(usr_type())).unwrap_or_else(|| panic!("{what}: no slot chosen"));
    assert!(
        complete.contains(&c.number),
        "{what}: chose slot {} which is incomplete",
        c.number
    );
    gpt.repair(&mut disk)
        .unwrap_or_else(|e| panic!("{what}: repair failed: {e:?}"));
    let fixed = Gpt::read(&mut disk).expect("read after repair");
    assert!(fixed.is_healthy(), "{what}: not healthy after repair");
    assert_eq!(entries(&fixed), got, "{what}: repair changed the table");
    // The next commit from this state (the boot manager's decrement, say) works.
    let mut next = fixed.clone();
    let (a, b) = slot_attrs(&next);
    next.set_slot_attrs(
        A,
        Attrs {
            tries: (a.tries + 1) % 16,
            ..a
        },
    )
    .expect("A");
    next.set_slot_attrs(B, b).expect("B");
    next.commit(&mut disk)
        .unwrap_or_else(|e| panic!("{what}: commit after the cut failed: {e:?}"));
}

/// Required acceptance test: a block-device wrapper cuts the write at every
/// step of the GPT flip, torn sectors included; after each cut the slot
/// choice picks a slot that holds a complete OS.
#[test]
fn power_cut_at_every_sector_of_every_commit() {
    let mut cut_points = 0;
    for ss in [512u64, 4096] {
        let mut disk = make_image(ss, 16);
        for (what, change, complete) in STEPS {
            let old_gpt = Gpt::read(&mut disk).expect("read");
            let old = entries(&old_gpt);
            let (a, b) = slot_attrs(&old_gpt);
            let (na, nb) = change(a, b);
            let mut new_gpt = old_gpt.clone();
            new_gpt.set_slot_attrs(A, na).expect("A");
            new_gpt.set_slot_attrs(B, nb).expect("B");
            // How many sector writes a whole commit takes.
            let mut probe = disk.clone();
            let mut counter = CutDevice::new(&mut probe, usize::MAX, false);
            new_gpt.clone().commit(&mut counter).expect("uncut commit");
            let total = counter.writes;
            assert_eq!(
                total,
                2 * (1 + (16384 / ss as usize)),
                "array + header, twice"
            );
            let new = entries(&Gpt::read(&mut probe).expect("read"));
            for budget in 0..=total {
                for torn in [false, true] {
                    if torn && budget == total {
                        continue;
                    }
                    let mut crashed = disk.clone();
                    let mut cut = CutDevice::new(&mut crashed, budget, torn);
                    let result = new_gpt.clone().commit(&mut cut);
                    assert_eq!(
                        result.is_ok(),
                        budget == total && !torn,
                        "{what} at {budget}"
                    );
                    let label = format!(
                        "{ss}-byte sectors, {what}, cut after {budget} writes, torn {torn}"
                    );
                    check_after_cut(crashed, &old, &new, complete, &label);
                    cut_points += 1;
                }
            }
            // Only then does the step really happen.
            let mut g = new_gpt.clone();
            g.commit(&mut disk).expect("commit");
            // While a slot is being written, it must not be chosen.
            let c = choose(&g.slots(usr_type())).expect("bootable");
            assert!(complete.contains(&c.number), "{what}");
        }
    }
    eprintln!("{cut_points} cut points checked");
    assert!(cut_points >= 200, "only {cut_points} cut points");
}

/// A commit that starts while only the backup is valid (a cut in the middle
/// of the previous primary write) must not touch the backup first: that
/// would leave no valid copy during the write.
#[test]
fn power_cut_when_only_the_backup_is_valid() {
    let mut cut_points = 0;
    for ss in [512u64, 4096] {
        let mut disk = make_image(ss, 16);
        disk.data[ss as usize + 8] ^= 1; // primary header CRC broken
        let old_gpt = Gpt::read(&mut disk).expect("read");
        assert_eq!(old_gpt.source(), TableCopy::Backup);
        let old = entries(&old_gpt);
        let mut new_gpt = old_gpt.clone();
        let (na, nb) = mark_updated(Attrs::new(1, 0, true));
        new_gpt.set_slot_attrs(A, nb).expect("A");
        new_gpt.set_slot_attrs(B, na).expect("B");
        let mut probe = disk.clone();
        new_gpt.clone().commit(&mut probe).expect("commit");
        let new = entries(&Gpt::read(&mut probe).expect("read"));
        let total = 2 * (1 + 16384 / ss as usize);
        for budget in 0..total {
            for torn in [false, true] {
                let mut crashed = disk.clone();
                let result =
                    new_gpt
                        .clone()
                        .commit(&mut CutDevice::new(&mut crashed, budget, torn));
                assert!(result.is_err());
                check_after_cut(
                    crashed,
                    &old,
                    &new,
                    &[A, B],
                    &format!("{ss}: backup-only, cut {budget} torn {torn}"),
                );
                cut_points += 1;
            }
        }
    }
    assert!(cut_points >= 100);
}

/// Same property when the disk reorders writes between flushes (a volatile
/// write cache): after a cut, any subset of the writes since the last flush
/// may have landed, one of them torn.
#[test]
fn power_cut_with_reordered_writes() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for ss in [512u64, 4096] {
        let mut disk = make_image(ss, 16);
        for (what, change, complete) in STEPS {
            let old_gpt = Gpt::read(&mut disk).expect("read");
            let old = entries(&old_gpt);
            let (a, b) = slot_attrs(&old_gpt);
            let (na, nb) = change(a, b);
            let mut new_gpt = old_gpt.clone();
            new_gpt.set_slot_attrs(A, na).expect("A");
            new_gpt.set_slot_attrs(B, nb).expect("B");
            let mut after = disk.clone();
            let mut log = LogDevice {
                inner: &mut after,
                log: Vec::new(),
            };
            new_gpt.commit(&mut log).expect("commit");
            let events = log.log;
            let new = entries(&Gpt::read(&mut after).expect("read"));
            for trial in 0..150 {
                let cut = (next() % (events.len() as u64 + 1)) as usize;
                let mut crashed = disk.clone();
                // Everything before the last flush before the cut is durable.
                let durable = events[..cut]
                    .iter()
                    .rposition(|e| matches!(e, Event::Flush))
                    .map_or(0, |i| i + 1);
                for e in &events[..durable] {
                    if let Event::Write(lba, s) = e {
                        crashed.write_sectors(*lba, s).expect("write");
                    }
                }
                for e in &events[durable..cut] {
                    if let Event::Write(lba, s) = e {
                        match next() % 4 {
                            0 => {}
                            1 => {
                                let at = *lba as usize * crashed.ss;
                                let half = (next() as usize % crashed.ss) & !7;
                                crashed.data[at..at + half].copy_from_slice(&s[..half]);
                            }
                            _ => crashed.write_sectors(*lba, s).expect("write"),
                        }
                    }
                }
                let label = format!("{ss}-byte sectors, {what}, reordered trial {trial} cut {cut}");
                check_after_cut(crashed, &old, &new, complete, &label);
            }
            disk = after;
        }
    }
}

fn run(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().expect("run tool");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {text}",
        tool.display()
    );
    text
}

fn write_image(dev: &MemDevice, dir: &Path) -> PathBuf {
    let p = dir.join("disk.img");
    std::fs::write(&p, &dev.data).expect("write image");
    p
}

#[test]
fn sgdisk_and_cgpt_agree_with_our_bits() {
    if !host_tools::require(&[("sgdisk", "gdisk"), ("cgpt", "cgpt")]) {
        return;
    }
    let (sgdisk, cgpt) = (host_tools::path_of("sgdisk"), host_tools::path_of("cgpt"));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = make_image(512, 16);
    let img = write_image(&dev, dir.path());
    let s = img.to_str().expect("utf-8 path");
    assert!(run(&sgdisk, &["-v", s]).contains("No problems found"));

    // Our commit, read by cgpt.
    let mut gpt = Gpt::read(&mut dev).expect("read");
    gpt.set_slot_attrs(B, Attrs::new(2, 3, false)).expect("B");
    gpt.commit(&mut dev).expect("commit");
    let img = write_image(&dev, dir.path());
    assert!(run(&sgdisk, &["-v", s]).contains("No problems found"));
    let show = |i: &str, f: &str| run(&cgpt, &["show", "-i", i, f, s]).trim().to_owned();
    assert_eq!(
        (show("3", "-P"), show("3", "-T"), show("3", "-S")),
        ("2".into(), "3".into(), "0".into())
    );
    assert_eq!(
        (show("2", "-P"), show("2", "-T"), show("2", "-S")),
        ("1".into(), "0".into(), "1".into())
    );

    // cgpt's writes, read by us (through the std file backend).
    run(
        &cgpt,
        &["add", "-i", "3", "-P", "5", "-T", "7", "-S", "1", s],
    );
    let mut file = FileDevice::open(&img, true).expect("open");
    assert_eq!(file.sector_size(), 512);
    let mut gpt = Gpt::read(&mut file).expect("read");
    assert!(gpt.is_healthy());
    assert_eq!(slot_attrs(&gpt).1, Attrs::new(5, 7, true));
    assert_eq!(
        gpt.entry(B).expect("B").attributes & READ_ONLY,
        READ_ONLY,
        "cgpt kept bit 60"
    );

    // Our commit through the file backend, then a torn primary: sgdisk
    // complains, we fall back, repair, and sgdisk is clean again.
    gpt.set_slot_attrs(A, Attrs::new(0, 0, false)).expect("A");
    gpt.commit(&mut file).expect("commit");
    assert!(run(&sgdisk, &["-v", s]).contains("No problems found"));
    assert_eq!(show("2", "-P"), "0");
    let mut bytes = std::fs::read(&img).expect("read image");
    bytes[512 + 100] ^= 0xff; // inside the header sector, past the 92 bytes: CRC still fine
    bytes[2 * 512 + 200] ^= 0xff; // inside the array: array CRC breaks
    std::fs::write(&img, &bytes).expect("write");
    let mut file = FileDevice::open(&img, true).expect("open");
    let mut gpt = Gpt::read(&mut file).expect("read backup");
    assert_eq!(gpt.source(), TableCopy::Backup);
    gpt.repair(&mut file).expect("repair");
    assert!(run(&sgdisk, &["-v", s]).contains("No problems found"));
    assert_eq!(show("3", "-P"), "5");
}

#[test]
fn file_device_at_4096_and_sector_size_detection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = make_image(4096, 16);
    let img = write_image(&dev, dir.path());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .expect("open");
    assert_eq!(
        gpt_slots::detect_sector_size(&f).expect("detect"),
        512,
        "regular files default to 512"
    );
    let mut file = FileDevice::with_sector_size(f, 4096).expect("4k");
    assert_eq!(file.num_sectors(), 16 * MIB / 4096);
    let mut gpt = Gpt::read(&mut file).expect("read");
    gpt.set_slot_attrs(B, Attrs::new(2, 3, false)).expect("B");
    gpt.commit(&mut file).expect("commit");
    let back = MemDevice {
        data: std::fs::read(&img).expect("read"),
        ss: 4096,
    };
    let parts = gptman_check_both_copies(&back);
    assert_eq!(
        Attrs::from_bits(parts[2].attribute_bits),
        Attrs::new(2, 3, false)
    );
    // Reading a 4K image as 512 finds no table.
    let mut as512 = FileDevice::open(&img, false).expect("open");
    assert!(Gpt::read(&mut as512).is_err());
    // Out-of-range I/O is an error, not a panic.
    let mut buf = vec![0u8; 4096];
    assert!(file.read_sectors(file.num_sectors(), &mut buf).is_err());
    assert!(file.read_sectors(0, &mut buf[..100]).is_err());
}

/// Writers that each read, modify and commit the table under
/// `FileDevice::open_locked` never undo each other: every increment of a
/// counter kept in entry 4's foreign attribute bits survives, across threads
/// with their own open file descriptions (as separate processes have).
#[test]
fn locked_writers_keep_every_commit() {
    const WRITERS: u64 = 4;
    const ROUNDS: u64 = 60;
    let dir = tempfile::tempdir().expect("tempdir");
    let img = write_image(&make_image(512, 16), dir.path());
    let wait = std::time::Duration::from_secs(30);
    let threads: Vec<_> = (0..WRITERS)
        .map(|_| {
            let img = img.clone();
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let mut dev = FileDevice::open_locked(&img, true, wait).expect("lock");
                    let mut gpt = Gpt::read(&mut dev).expect("read");
                    let bits = gpt.entry(4).expect("OEM").attributes;
                    // Give the other writers a chance to interleave.
                    std::thread::yield_now();
                    gpt.set_attributes(4, bits + 1).expect("set");
                    gpt.commit(&mut dev).expect("commit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let mut dev = FileDevice::open(&img, false).expect("open");
    let gpt = Gpt::read(&mut dev).expect("read");
    assert!(gpt.is_healthy());
    assert_eq!(gpt.entry(4).expect("OEM").attributes, WRITERS * ROUNDS);

    // A holder that does not let go costs the waiter `wait`, then a clear error.
    let _held = FileDevice::open_locked(&img, false, wait).expect("lock");
    let e = FileDevice::open_locked(&img, true, std::time::Duration::from_millis(50))
        .expect_err("held elsewhere");
    assert!(e.to_string().contains("holds the disk's lock"), "{e}");
}
