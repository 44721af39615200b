//! A minimal GPT reader and crash-safe writer over any [`BlockDevice`].
//!
//! Only what the slot logic needs: find a valid copy of the table (primary at
//! LBA 1, backup at the last LBA), expose its entries, change attribute bits
//! and write both copies back so that a power cut at any instant leaves at
//! least one valid copy holding either the old or the new table.

use crate::attrs::Attrs;
use crate::choose::SlotState;
use crate::crc32::crc32;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use disk_layout::Guid;

/// Sector-addressed storage: a disk image, a block device, UEFI BlockIO.
pub trait BlockDevice {
    type Error: fmt::Debug;
    /// Logical sector size in bytes (512 or 4096 in practice).
    fn sector_size(&self) -> usize;
    /// Number of logical sectors; the last LBA is one less.
    fn num_sectors(&self) -> u64;
    /// Reads `buf.len() / sector_size` whole sectors starting at `lba`.
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes whole sectors starting at `lba`.
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error>;
    /// Makes every completed write durable (fdatasync, FlushBlocks).
    fn flush(&mut self) -> Result<(), Self::Error>;
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    type Error = D::Error;
    fn sector_size(&self) -> usize {
        (**self).sector_size()
    }
    fn num_sectors(&self) -> u64 {
        (**self).num_sectors()
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        (**self).read_sectors(lba, buf)
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        (**self).write_sectors(lba, buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        (**self).flush()
    }
}

const SIGNATURE: &[u8; 8] = b"EFI PART";
const MIN_HEADER_SIZE: usize = 92;
const MIN_ENTRY_SIZE: u32 = 128;
/// A CRC-valid header could still ask for a huge allocation; real tables use
/// 16 KiB (128 entries). 1 MiB leaves room for any sane tool's choice.
const MAX_ARRAY_BYTES: usize = 1 << 20;
const NAME_OFFSET: usize = 56;
const NAME_UNITS: usize = 36;

/// Why one copy of the table was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// The device returned an error while reading it.
    Unreadable,
    /// No `EFI PART` signature.
    Signature,
    /// Not a revision 1.x header.
    Revision,
    /// Header size outside 92..=sector size.
    HeaderSize,
    /// Header CRC32 mismatch (torn or corrupted header).
    HeaderCrc,
    /// The header does not say it lives where it was found.
    WrongLba,
    /// Entry size or count out of range.
    EntryFormat,
    /// Usable range or entry array outside the disk or overlapping each other.
    Placement,
    /// Entry array CRC32 mismatch (torn array, or header and array from different writes).
    ArrayCrc,
    /// A write to it was started and did not complete.
    Interrupted,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Unreadable => "unreadable",
            Invalid::Signature => "no GPT signature",
            Invalid::Revision => "unsupported header revision",
            Invalid::HeaderSize => "bad header size",
            Invalid::HeaderCrc => "header CRC mismatch",
            Invalid::WrongLba => "header at the wrong LBA",
            Invalid::EntryFormat => "bad entry size or count",
            Invalid::Placement => "bad usable range or array location",
            Invalid::ArrayCrc => "partition array CRC mismatch",
            Invalid::Interrupted => "interrupted write",
        })
    }
}

/// State of one copy of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyStatus {
    /// Valid and consistent with the table in use.
    Valid,
    /// Valid CRCs, but it differs from the table in use or points to a
    /// misplaced other copy; it should be rewritten.
    Stale,
    Invalid(Invalid),
}

/// The two copies of a GPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableCopy {
    /// Header at LBA 1; readers prefer it.
    Primary,
    /// Header at the last LBA.
    Backup,
}

impl fmt::Display for TableCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableCopy::Primary => "primary",
            TableCopy::Backup => "backup",
        })
    }
}

/// GPT errors; `E` is the block device's error type.
#[derive(Debug)]
pub enum GptError<E> {
    Io(E),
    /// Sector size not a power of two in 512..=65536.
    SectorSize(usize),
    /// Too few sectors to hold a GPT.
    TooSmall,
    /// Neither copy is valid.
    NoValidTable {
        primary: Invalid,
        backup: Invalid,
    },
    /// The table cannot be written back on this disk (arrays would overlap
    /// partitions, or the disk shrank below the table).
    Layout,
    /// The device's sector size or size changed since the table was read.
    DeviceChanged,
    /// `repair` was called with uncommitted entry changes.
    PendingChanges,
    /// After writing, re-reading did not give back the table just written.
    VerifyFailed,
}

impl<E: fmt::Display> fmt::Display for GptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GptError::Io(e) => write!(f, "I/O error: {e}"),
            GptError::SectorSize(s) => write!(f, "unsupported sector size {s}"),
            GptError::TooSmall => f.write_str("disk too small for a GPT"),
            GptError::NoValidTable { primary, backup } => {
                write!(f, "no valid GPT (primary: {primary}, backup: {backup})")
            }
            GptError::Layout => f.write_str("the GPT does not fit this disk for writing"),
            GptError::DeviceChanged => f.write_str("the disk changed since the GPT was read"),
            GptError::PendingChanges => f.write_str("repair with uncommitted changes"),
            GptError::VerifyFailed => {
                f.write_str("re-reading the written GPT gave a different table")
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for GptError<E> {}

/// The requested entry number is not a used entry of this table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchEntry(pub u32);

impl fmt::Display for NoSuchEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no partition entry {}", self.0)
    }
}

impl core::error::Error for NoSuchEntry {}

/// One used partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// 1-based entry number (the N in /dev/vdaN).
    pub number: u32,
    pub type_guid: Guid,
    /// The PARTUUID.
    pub unique_guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    /// The label, decoded from UTF-16LE (unpaired surrogates become U+FFFD).
    pub name: String,
}

impl Entry {
    /// The slot bits of the attributes.
    pub fn attrs(&self) -> Attrs {
        Attrs::from_bits(self.attributes)
    }
}

/// Which copies [`Gpt::repair`] rewrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    pub primary: bool,
    pub backup: bool,
}

impl Repaired {
    pub fn any(&self) -> bool {
        self.primary || self.backup
    }
}

#[derive(Clone, Debug)]
struct Header {
    /// The first `header_size` bytes as found; rewritten copies start from
    /// these so fields and reserved bytes we do not know survive.
    raw: Vec<u8>,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entry_lba: u64,
    num_entries: u32,
    entry_size: u32,
}

impl Header {
    fn array_len(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }

    /// Same table contents (everything except where this copy lives).
    fn same_table(&self, other: &Header) -> bool {
        self.disk_guid == other.disk_guid
            && self.first_usable == other.first_usable
            && self.last_usable == other.last_usable
            && self.num_entries == other.num_entries
            && self.entry_size == other.entry_size
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[at..at + 16]);
    Guid(g)
}

fn sectors_for(bytes: usize, sector_size: usize) -> u64 {
    bytes.div_ceil(sector_size) as u64
}

/// Validates a header sector read at `lba`. Checks ranges before trusting any
/// size field, so a corrupt header cannot cause a large allocation.
fn parse_header(
    sector: &[u8],
    lba: u64,
    copy: TableCopy,
    disk_sectors: u64,
) -> Result<Header, Invalid> {
    let ss = sector.len();
    if &sector[..8] != SIGNATURE {
        return Err(Invalid::Signature);
    }
    if u32_at(sector, 8) >> 16 != 1 {
        return Err(Invalid::Revision);
    }
    let header_size = u32_at(sector, 12) as usize;
    if !(MIN_HEADER_SIZE..=ss).contains(&header_size) {
        return Err(Invalid::HeaderSize);
    }
    let mut raw = sector[..header_size].to_vec();
    let stored_crc = u32_at(&raw, 16);
    raw[16..20].fill(0);
    if crc32(&raw) != stored_crc {
        return Err(Invalid::HeaderCrc);
    }
    raw[16..20].copy_from_slice(&stored_crc.to_le_bytes());
    if u64_at(&raw, 24) != lba {
        return Err(Invalid::WrongLba);
    }
    let h = Header {
        alternate_lba: u64_at(&raw, 32),
        first_usable: u64_at(&raw, 40),
        last_usable: u64_at(&raw, 48),
        disk_guid: guid_at(&raw, 56),
        entry_lba: u64_at(&raw, 72),
        num_entries: u32_at(&raw, 80),
        entry_size: u32_at(&raw, 84),
        raw,
    };
    if h.entry_size < MIN_ENTRY_SIZE
        || !h.entry_size.is_power_of_two()
        || h.num_entries == 0
        || (h.num_entries as usize).saturating_mul(h.entry_size as usize) > MAX_ARRAY_BYTES
    {
        return Err(Invalid::EntryFormat);
    }
    let array_sectors = sectors_for(h.array_len(), ss);
    let array_end = h.entry_lba.saturating_add(array_sectors);
    let placed = h.first_usable <= h.last_usable
        && h.last_usable < disk_sectors
        && match copy {
            TableCopy::Primary => h.entry_lba >= 2 && array_end <= h.first_usable,
            TableCopy::Backup => h.entry_lba > h.last_usable && array_end <= lba,
        };
    if !placed {
        return Err(Invalid::Placement);
    }
    Ok(h)
}

/// A valid copy: its header and its entry array (exactly `num_entries * entry_size` bytes).
type ValidCopy = (Header, Vec<u8>);

/// Reads and validates one copy; `Err(None)` is a read error.
fn read_copy<D: BlockDevice>(
    dev: &mut D,
    lba: u64,
    copy: TableCopy,
    disk_sectors: u64,
) -> Result<ValidCopy, (Invalid, Option<D::Error>)> {
    let ss = dev.sector_size();
    let mut sector = vec![0u8; ss];
    dev.read_sectors(lba, &mut sector)
        .map_err(|e| (Invalid::Unreadable, Some(e)))?;
    let h = parse_header(&sector, lba, copy, disk_sectors).map_err(|i| (i, None))?;
    let mut array = vec![0u8; sectors_for(h.array_len(), ss) as usize * ss];
    dev.read_sectors(h.entry_lba, &mut array)
        .map_err(|e| (Invalid::Unreadable, Some(e)))?;
    array.truncate(h.array_len());
    if crc32(&array) != u32_at(&h.raw, 88) {
        return Err((Invalid::ArrayCrc, None));
    }
    Ok((h, array))
}

fn check_sector_size<E>(ss: usize) -> Result<(), GptError<E>> {
    if ss.is_power_of_two() && (512..=65536).contains(&ss) {
        Ok(())
    } else {
        Err(GptError::SectorSize(ss))
    }
}

/// A GPT as read from a disk, with pending attribute changes.
#[derive(Clone, Debug)]
pub struct Gpt {
    sector_size: usize,
    disk_sectors: u64,
    /// Header of the copy the table was taken from.
    header: Header,
    /// Where the primary array lives (LBA 2 unless the primary said otherwise).
    primary_entry_lba: u64,
    array: Vec<u8>,
    source: TableCopy,
    primary: CopyStatus,
    backup: CopyStatus,
    /// Entries were changed since the last read or commit.
    dirty: bool,
}

impl Gpt {
    /// Reads the table: the primary when valid, else the backup at the last
    /// LBA, as firmware, the kernel and libblkid do.
    pub fn read<D: BlockDevice>(dev: &mut D) -> Result<Gpt, GptError<D::Error>> {
        let ss = dev.sector_size();
        check_sector_size(ss)?;
        let n = dev.num_sectors();
        // Protective MBR, two headers and two one-sector arrays at least.
        if n < 6 {
            return Err(GptError::TooSmall);
        }
        let last = n - 1;
        let primary = read_copy(dev, 1, TableCopy::Primary, n);
        let backup = read_copy(dev, last, TableCopy::Backup, n);
        let (table, source, primary_status, backup_status, primary_entry_lba) =
            match (primary, backup) {
                (Ok((ph, pa)), Ok((bh, ba))) => {
                    let p = if ph.alternate_lba == last {
                        CopyStatus::Valid
                    } else {
                        CopyStatus::Stale
                    };
                    let b = if bh.same_table(&ph) && ba == pa && bh.alternate_lba == 1 {
                        CopyStatus::Valid
                    } else {
                        CopyStatus::Stale
                    };
                    let lba = ph.entry_lba;
                    ((ph, pa), TableCopy::Primary, p, b, lba)
                }
                (Ok((ph, pa)), Err((why, _))) => {
                    let p = if ph.alternate_lba == last {
                        CopyStatus::Valid
                    } else {
                        CopyStatus::Stale
                    };
                    let lba = ph.entry_lba;
                    (
                        (ph, pa),
                        TableCopy::Primary,
                        p,
                        CopyStatus::Invalid(why),
                        lba,
                    )
                }
                (Err((why, _)), Ok(b)) => (
                    b,
                    TableCopy::Backup,
                    CopyStatus::Invalid(why),
                    CopyStatus::Valid,
                    2,
                ),
                (Err((p, pe)), Err((b, be))) => {
                    // A device error explains more than "unreadable"; report it.
                    return Err(match pe.or(be) {
                        Some(e) => GptError::Io(e),
                        None => GptError::NoValidTable {
                            primary: p,
                            backup: b,
                        },
                    });
                }
            };
        let (header, array) = table;
        Ok(Gpt {
            sector_size: ss,
            disk_sectors: n,
            header,
            primary_entry_lba,
            array,
            source,
            primary: primary_status,
            backup: backup_status,
            dirty: false,
        })
    }

    pub fn sector_size(&self) -> usize {
        self.sector_size
    }

    pub fn disk_guid(&self) -> Guid {
        self.header.disk_guid
    }

    /// First and last LBA partitions may use.
    pub fn usable_range(&self) -> (u64, u64) {
        (self.header.first_usable, self.header.last_usable)
    }

    /// The copy the table was taken from.
    pub fn source(&self) -> TableCopy {
        self.source
    }

    pub fn status(&self, copy: TableCopy) -> CopyStatus {
        match copy {
            TableCopy::Primary => self.primary,
            TableCopy::Backup => self.backup,
        }
    }

    /// Both copies valid, identical and in their standard places.
    pub fn is_healthy(&self) -> bool {
        self.primary == CopyStatus::Valid && self.backup == CopyStatus::Valid
    }

    /// Number of slots in the entry array, used or not.
    pub fn num_entries(&self) -> u32 {
        self.header.num_entries
    }

    fn entry_bytes(&self, number: u32) -> Option<&[u8]> {
        if number == 0 || number > self.header.num_entries {
            return None;
        }
        let size = self.header.entry_size as usize;
        let at = (number as usize - 1) * size;
        let e = &self.array[at..at + size];
        // An all-zero type GUID marks an unused entry.
        if e[..16].iter().all(|&b| b == 0) {
            None
        } else {
            Some(e)
        }
    }

    /// The used entry `number` (1-based).
    pub fn entry(&self, number: u32) -> Option<Entry> {
        let e = self.entry_bytes(number)?;
        let units = e[NAME_OFFSET..NAME_OFFSET + 2 * NAME_UNITS]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0);
        let name = char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect();
        Some(Entry {
            number,
            type_guid: guid_at(e, 0),
            unique_guid: guid_at(e, 16),
            first_lba: u64_at(e, 32),
            last_lba: u64_at(e, 40),
            attributes: u64_at(e, 48),
            name,
        })
    }

    /// All used entries, in entry-number order.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        (1..=self.header.num_entries).filter_map(|n| self.entry(n))
    }

    /// Entry number and slot bits of every partition of type `type_guid`
    /// (the DPS usr type of the running architecture).
    pub fn slots(&self, type_guid: Guid) -> Vec<SlotState> {
        self.entries()
            .filter(|e| e.type_guid == type_guid)
            .map(|e| SlotState {
                number: e.number,
                attrs: e.attrs(),
            })
            .collect()
    }

    /// Sets the whole 64-bit attribute field of entry `number` (in memory;
    /// [`Gpt::commit`] writes it).
    pub fn set_attributes(&mut self, number: u32, bits: u64) -> Result<(), NoSuchEntry> {
        if self.entry_bytes(number).is_none() {
            return Err(NoSuchEntry(number));
        }
        let at = (number as usize - 1) * self.header.entry_size as usize + 48;
        if self.array[at..at + 8] != bits.to_le_bytes() {
            self.array[at..at + 8].copy_from_slice(&bits.to_le_bytes());
            self.dirty = true;
        }
        Ok(())
    }

    /// Sets the slot bits of entry `number`, keeping its other attribute bits.
    pub fn set_slot_attrs(&mut self, number: u32, attrs: Attrs) -> Result<(), NoSuchEntry> {
        let old = self.entry(number).ok_or(NoSuchEntry(number))?.attributes;
        self.set_attributes(number, attrs.to_bits(old))
    }

    /// Where the backup array and header go: the array right before the
    /// header at the last LBA. Always the end of the disk, because that is
    /// where every reader looks when the primary is bad (a disk that grew
    /// gets its backup moved there, as `sgdisk -e` would).
    fn layout<E>(&self) -> Result<(u64, u64), GptError<E>> {
        let last = self.disk_sectors - 1;
        let array_sectors = sectors_for(self.header.array_len(), self.sector_size);
        let backup_entry_lba = last.checked_sub(array_sectors).ok_or(GptError::Layout)?;
        if backup_entry_lba <= self.header.last_usable
            || self.primary_entry_lba < 2
            || self.primary_entry_lba + array_sectors > self.header.first_usable
        {
            return Err(GptError::Layout);
        }
        Ok((last, backup_entry_lba))
    }

    /// One sector holding the header of `copy` for the current array.
    fn header_sector(
        &self,
        copy: TableCopy,
        array_crc: u32,
        last: u64,
        backup_entry_lba: u64,
    ) -> Vec<u8> {
        let (my, alt, entries) = match copy {
            TableCopy::Primary => (1, last, self.primary_entry_lba),
            TableCopy::Backup => (last, 1, backup_entry_lba),
        };
        let mut raw = self.header.raw.clone();
        raw[24..32].copy_from_slice(&my.to_le_bytes());
        raw[32..40].copy_from_slice(&alt.to_le_bytes());
        raw[72..80].copy_from_slice(&entries.to_le_bytes());
        raw[88..92].copy_from_slice(&array_crc.to_le_bytes());
        // The header CRC is computed with its own field zeroed.
        raw[16..20].fill(0);
        let crc = crc32(&raw);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        let mut sector = vec![0u8; self.sector_size];
        sector[..raw.len()].copy_from_slice(&raw);
        sector
    }

    fn set_status(&mut self, copy: TableCopy, s: CopyStatus) {
        match copy {
            TableCopy::Primary => self.primary = s,
            TableCopy::Backup => self.backup = s,
        }
    }

    /// Writes the copies selected, one at a time: array, header, flush.
    ///
    /// Order: the copy the table was *not* read from goes first. In the normal
    /// case (primary valid) that is the backup, the DESIGN rule. If only the
    /// backup is valid, the primary must go first: rewriting the only valid
    /// copy first would leave no valid copy if the power fails midway.
    fn write_copies<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        primary: bool,
        backup: bool,
    ) -> Result<(), GptError<D::Error>> {
        if dev.sector_size() != self.sector_size || dev.num_sectors() < self.disk_sectors {
            return Err(GptError::DeviceChanged);
        }
        let (last, backup_entry_lba) = self.layout()?;
        let array_crc = crc32(&self.array);
        let mut array = self.array.clone();
        array.resize(
            sectors_for(self.array.len(), self.sector_size) as usize * self.sector_size,
            0,
        );
        let order = match self.source {
            TableCopy::Primary => [(TableCopy::Backup, backup), (TableCopy::Primary, primary)],
            TableCopy::Backup => [(TableCopy::Primary, primary), (TableCopy::Backup, backup)],
        };
        for (copy, wanted) in order {
            if !wanted {
                continue;
            }
            let (header_lba, entry_lba) = match copy {
                TableCopy::Primary => (1, self.primary_entry_lba),
                TableCopy::Backup => (last, backup_entry_lba),
            };
            let header = self.header_sector(copy, array_crc, last, backup_entry_lba);
            // Until the flush returns, this copy may be torn on disk.
            self.set_status(copy, CopyStatus::Invalid(Invalid::Interrupted));
            dev.write_sectors(entry_lba, &array).map_err(GptError::Io)?;
            dev.write_sectors(header_lba, &header)
                .map_err(GptError::Io)?;
            dev.flush().map_err(GptError::Io)?;
            self.set_status(copy, CopyStatus::Valid);
            // From now on this copy is a valid source for the other one.
            self.source = copy;
        }
        self.verify(dev)
    }

    /// Re-reads both copies and checks they hold exactly this table.
    fn verify<D: BlockDevice>(&mut self, dev: &mut D) -> Result<(), GptError<D::Error>> {
        let back = Gpt::read(dev)?;
        let same =
            back.is_healthy() && back.header.same_table(&self.header) && back.array == self.array;
        if !same {
            self.primary = back.primary;
            self.backup = back.backup;
            return Err(GptError::VerifyFailed);
        }
        self.source = TableCopy::Primary;
        self.dirty = false;
        Ok(())
    }

    /// Writes the table with its changed attributes to both copies,
    /// crash-safely (see `write_copies` for the order), flushing after each
    /// copy, then re-reads to confirm. After an error, read the table again
    /// before retrying.
    pub fn commit<D: BlockDevice>(&mut self, dev: &mut D) -> Result<(), GptError<D::Error>> {
        self.write_copies(dev, true, true)
    }

    /// Rewrites the copies that are invalid, stale or misplaced from the
    /// valid one, never touching the only valid copy before the other is
    /// durable. Call it on a freshly read table.
    pub fn repair<D: BlockDevice>(&mut self, dev: &mut D) -> Result<Repaired, GptError<D::Error>> {
        if self.dirty {
            return Err(GptError::PendingChanges);
        }
        let r = Repaired {
            primary: self.primary != CopyStatus::Valid,
            backup: self.backup != CopyStatus::Valid,
        };
        if r.any() {
            self.write_copies(dev, r.primary, r.backup)?;
        }
        Ok(r)
    }
}
