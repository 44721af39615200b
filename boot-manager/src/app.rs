//! The UEFI side: find our disk, read the GPT, choose, count the try, load and
//! verify the slot's boot files, start the kernel. Every decision is printed
//! as one `cairn-boot:` line on ConOut (the serial console under QEMU).

use crate::cmdline::kernel_cmdline;
use crate::devpath::proper_prefix_len;
use crate::initrd::InitrdProvider;
use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use boot_sig::{KEY_SLOT_LEN, MAX_KEYS, VerifyError};
use core::fmt::{self, Write};
use core::time::Duration;
use disk_layout::{Arch, Slot, boot_files};
use gpt_slots::{
    Attrs, BlockDevice, Gpt, GptError, Refused, SlotState, after_refusal, choose, mark_failed,
    why_not,
};
use uefi::boot::{
    self, LoadImageSource, OpenProtocolAttributes, OpenProtocolParams, ScopedProtocol, SearchType,
};
use uefi::proto::ProtocolPointer;
use uefi::proto::device_path::DevicePath;
use uefi::proto::device_path::build::{self, DevicePathBuilder};
use uefi::proto::loaded_image::LoadedImage;
use uefi::proto::media::block::BlockIO;
use uefi::proto::media::file::{Directory, File, FileAttribute, FileInfo, FileMode};
use uefi::proto::media::fs::SimpleFileSystem;
use uefi::{CStr16, CString16, Handle, Identify, Status, entry};

#[cfg(target_arch = "x86_64")]
const ARCH: Arch = Arch::X86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: Arch = Arch::Arm64;

/// The trusted public keys. Built empty; the image builder writes the release
/// keys into its copy of the .efi with `boot_sig::embed_keys`, which finds the
/// slot by its magic (so the magic must occur exactly once in the binary).
#[used]
static KEY_SLOT: [u8; KEY_SLOT_LEN] = boot_sig::EMPTY_KEY_SLOT;

fn trusted_keys() -> ([[u8; 32]; MAX_KEYS], usize) {
    // Volatile: the bytes are patched after linking, so the compiler must not
    // fold the all-zero initializer into the code.
    // SAFETY: a plain read of an initialized static.
    let slot = unsafe { core::ptr::read_volatile(&raw const KEY_SLOT) };
    boot_sig::slot_keys(&slot)
}

/// Files larger than this are refused rather than allocated: a kernel or an
/// initramfs of a container host is far smaller.
const MAX_FILE: u64 = 512 << 20;
const MAX_SMALL_FILE: u64 = 64 << 10;

fn say(args: fmt::Arguments) {
    uefi::system::with_stdout(|out| {
        // Nothing useful can be done if the console fails.
        let _ = out.write_fmt(format_args!("cairn-boot: {args}\n"));
    });
}

macro_rules! say {
    ($($t:tt)*) => { say(format_args!($($t)*)) };
}

#[entry]
fn main() -> Status {
    let why = run();
    say!("{why}");
    say!("halted; fix the disk or boot another device");
    // The firmware's 5-minute watchdog would reset the machine and land here
    // again: stall instead of a reset loop. (It stays armed while booting
    // normally, so a hang there still resets and costs the slot a try.)
    let _ = boot::set_watchdog_timer(0, 0x10000, None);
    loop {
        boot::stall(Duration::from_secs(3600));
    }
}

/// Why nothing was started.
enum Halt {
    NoDisk(&'static str),
    Gpt(GptError<uefi::Error>),
    NoKeys,
    NoEsp(Status),
    NoSlot,
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Halt::NoDisk(why) => write!(f, "cannot find the boot disk: {why}"),
            Halt::Gpt(e) => write!(f, "cannot read the partition table: {e}"),
            Halt::NoKeys => f.write_str("no trusted keys are built in; refusing to start anything"),
            Halt::NoEsp(s) => write!(f, "cannot open the ESP: {s:?}"),
            Halt::NoSlot => f.write_str("no slot can boot"),
        }
    }
}

/// Why one slot was not started.
enum Refusal {
    Missing(&'static str),
    Read(&'static str, Status),
    TooLarge(&'static str),
    Signature(VerifyError),
    Cmdline(crate::cmdline::CmdlineError),
    Initrd(crate::initrd::InstallError),
    DevicePath,
    Load(Status),
    Start(Status),
    TryNotRecorded(GptError<uefi::Error>),
}

impl Refusal {
    /// Only what proves the slot bad may cost it more than one try: the files
    /// are signed, so a missing, oversized or mis-signed file stays so; an
    /// ESP read error or a firmware out of resources may not happen again.
    fn kind(&self) -> Refused {
        match self {
            Refusal::Missing(_)
            | Refusal::TooLarge(_)
            | Refusal::Signature(_)
            | Refusal::Cmdline(_) => Refused::Proven,
            Refusal::Read(..)
            | Refusal::Initrd(_)
            | Refusal::DevicePath
            | Refusal::Load(_)
            | Refusal::Start(_)
            | Refusal::TryNotRecorded(_) => Refused::Transient,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing(n) => write!(f, "{n} is missing"),
            Refusal::Read(n, s) => write!(f, "cannot read {n}: {s:?}"),
            Refusal::TooLarge(n) => write!(f, "{n} is too large"),
            Refusal::Signature(e) => write!(f, "{e}"),
            Refusal::Cmdline(e) => write!(f, "{e}"),
            Refusal::Initrd(e) => write!(f, "{e}"),
            Refusal::DevicePath => f.write_str("cannot build the kernel's device path"),
            Refusal::Load(s) => write!(f, "the firmware refused to load the kernel: {s:?}"),
            Refusal::Start(s) => write!(f, "the kernel returned: {s:?}"),
            Refusal::TryNotRecorded(e) => {
                write!(
                    f,
                    "cannot record the boot attempt ({e}); an unproven slot only starts with its try counted"
                )
            }
        }
    }
}

/// Opens a protocol without taking it over: exclusive opens would disconnect
/// the partition and FAT drivers from the disk.
fn get<P: ProtocolPointer + ?Sized>(handle: Handle) -> uefi::Result<ScopedProtocol<P>> {
    // SAFETY: GetProtocol opens are shared; we do not uninstall these
    // protocols and drop the scoped handles before starting the kernel.
    unsafe {
        boot::open_protocol::<P>(
            OpenProtocolParams {
                handle,
                agent: boot::image_handle(),
                controller: None,
            },
            OpenProtocolAttributes::GetProtocol,
        )
    }
}

/// The whole disk, as a gpt-slots block device.
struct Disk {
    bio: ScopedProtocol<BlockIO>,
    media_id: u32,
    block_size: usize,
    blocks: u64,
    align: usize,
}

/// A zeroed heap buffer with the alignment BlockIO asks for (IoAlign).
struct Bounce {
    ptr: *mut u8,
    layout: Layout,
}

impl Bounce {
    fn new(len: usize, align: usize) -> uefi::Result<Bounce> {
        let layout =
            Layout::from_size_align(len.max(1), align).map_err(|_| Status::INVALID_PARAMETER)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            Err(Status::OUT_OF_RESOURCES.into())
        } else {
            Ok(Bounce { ptr, layout })
        }
    }
    fn bytes(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: `len` never exceeds the allocation (callers pass the size
        // they allocated), and the memory is initialized (zeroed).
        unsafe { core::slice::from_raw_parts_mut(self.ptr, len.min(self.layout.size())) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

impl Disk {
    fn aligned(&self, p: *const u8) -> bool {
        (p as usize).is_multiple_of(self.align)
    }
}

impl BlockDevice for Disk {
    type Error = uefi::Error;
    fn sector_size(&self) -> usize {
        self.block_size
    }
    fn num_sectors(&self) -> u64 {
        self.blocks
    }
    fn read_sectors(&mut self, lba: u64, buf: &mut [u8]) -> uefi::Result {
        if self.aligned(buf.as_ptr()) {
            return self.bio.read_blocks(self.media_id, lba, buf);
        }
        let mut b = Bounce::new(buf.len(), self.align)?;
        self.bio
            .read_blocks(self.media_id, lba, b.bytes(buf.len()))?;
        buf.copy_from_slice(b.bytes(buf.len()));
        Ok(())
    }
    fn write_sectors(&mut self, lba: u64, buf: &[u8]) -> uefi::Result {
        if self.aligned(buf.as_ptr()) {
            return self.bio.write_blocks(self.media_id, lba, buf);
        }
        let mut b = Bounce::new(buf.len(), self.align)?;
        b.bytes(buf.len()).copy_from_slice(buf);
        self.bio
            .write_blocks(self.media_id, lba, b.bytes(buf.len()))
    }
    fn flush(&mut self) -> uefi::Result {
        self.bio.flush_blocks()
    }
}

/// The whole-disk BlockIO handle whose device path is the longest proper
/// prefix of the ESP's (…/Pci(…)/HD(1,GPT,…) → …/Pci(…)).
fn find_disk(esp_path: &[u8]) -> Result<Disk, Halt> {
    let handles = boot::locate_handle_buffer(SearchType::ByProtocol(&BlockIO::GUID))
        .map_err(|_| Halt::NoDisk("no BlockIO handles"))?;
    let mut best: Option<(usize, ScopedProtocol<BlockIO>)> = None;
    for &h in handles.iter() {
        let Ok(dp) = get::<DevicePath>(h) else {
            continue;
        };
        let Some(n) = proper_prefix_len(dp.as_bytes(), esp_path) else {
            continue;
        };
        let Ok(bio) = get::<BlockIO>(h) else { continue };
        if bio.media().is_logical_partition() || !bio.media().is_media_present() {
            continue;
        }
        if best.as_ref().is_none_or(|(m, _)| n > *m) {
            best = Some((n, bio));
        }
    }
    let (_, bio) = best.ok_or(Halt::NoDisk("no whole-disk BlockIO above the ESP"))?;
    let m = bio.media();
    let (media_id, block_size, blocks) =
        (m.media_id(), m.block_size() as usize, m.last_block() + 1);
    let align = (m.io_align() as usize).max(1);
    if !align.is_power_of_two() {
        return Err(Halt::NoDisk("BlockIO reports an invalid IoAlign"));
    }
    Ok(Disk {
        bio,
        media_id,
        block_size,
        blocks,
        align,
    })
}

struct BootFiles {
    kernel: Vec<u8>,
    initrd: Vec<u8>,
    cmdline: Vec<u8>,
}

/// `\cairn\b\vmlinuz` for the ESP.
fn esp_path(slot: Slot, name: &str) -> String {
    let mut p = String::from("\\");
    p.push_str(&slot.esp_dir().replace('/', "\\"));
    p.push('\\');
    p.push_str(name);
    p
}

fn read_file(
    root: &mut Directory,
    slot: Slot,
    name: &'static str,
    max: u64,
) -> Result<Vec<u8>, Refusal> {
    let path =
        CString16::try_from(esp_path(slot, name).as_str()).map_err(|_| Refusal::Missing(name))?;
    let handle = root
        .open(&path, FileMode::Read, FileAttribute::empty())
        .map_err(|e| match e.status() {
            Status::NOT_FOUND => Refusal::Missing(name),
            s => Refusal::Read(name, s),
        })?;
    let mut file = handle.into_regular_file().ok_or(Refusal::Missing(name))?;
    let size = file
        .get_boxed_info::<FileInfo>()
        .map_err(|e| Refusal::Read(name, e.status()))?
        .file_size();
    if size > max {
        return Err(Refusal::TooLarge(name));
    }
    let mut data = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < data.len() {
        let n = file
            .read(&mut data[filled..])
            .map_err(|e| Refusal::Read(name, e.status()))?;
        if n == 0 {
            // The file shrank under us; what we have is not what was sized.
            return Err(Refusal::Read(name, Status::END_OF_FILE));
        }
        filled += n;
    }
    Ok(data)
}

/// Loads the slot's files into memory and checks their signature; nothing is
/// handed to the firmware before this returns Ok.
fn load_verified(
    root: &mut Directory,
    slot: Slot,
    keys: &[[u8; 32]],
) -> Result<BootFiles, Refusal> {
    let kernel = read_file(root, slot, boot_files::KERNEL, MAX_FILE)?;
    let initrd = read_file(root, slot, boot_files::INITRD, MAX_FILE)?;
    let cmdline = read_file(root, slot, boot_files::CMDLINE, MAX_SMALL_FILE)?;
    let sig = read_file(root, slot, boot_files::SIGNATURE, MAX_SMALL_FILE)?;
    boot_sig::verify(keys, &sig, &kernel, &initrd, &cmdline).map_err(Refusal::Signature)?;
    Ok(BootFiles {
        kernel,
        initrd,
        cmdline,
    })
}

/// ESP device path + `\cairn\<slot>\vmlinuz`: the stub learns its device
/// and path from it, as if the firmware had loaded the file itself.
fn file_device_path<'a>(
    esp_dp: &[u8],
    file: &CStr16,
    buf: &'a mut Vec<u8>,
) -> Option<&'a DevicePath> {
    let esp = <&DevicePath>::try_from(esp_dp).ok()?;
    let mut b = DevicePathBuilder::with_vec(buf);
    for node in esp.node_iter() {
        b = b.push(&node).ok()?;
    }
    b.push(&build::media::FilePath { path_name: file })
        .ok()?
        .finalize()
        .ok()
}

/// Starts the verified kernel; returns only if that failed.
fn start(esp_dp: &[u8], slot: Slot, partuuid: disk_layout::Guid, files: BootFiles) -> Refusal {
    let cmdline = match kernel_cmdline(&files.cmdline, slot, partuuid) {
        Ok(c) => c,
        Err(e) => return Refusal::Cmdline(e),
    };
    let Ok(options) = CString16::try_from(cmdline.as_str()) else {
        return Refusal::Cmdline(crate::cmdline::CmdlineError::NotUcs2);
    };
    let Ok(kernel_file) = CString16::try_from(esp_path(slot, boot_files::KERNEL).as_str()) else {
        return Refusal::DevicePath;
    };
    let mut dp_buf = Vec::new();
    let kernel_dp = file_device_path(esp_dp, &kernel_file, &mut dp_buf);
    let Some(kernel_dp) = kernel_dp else {
        return Refusal::DevicePath;
    };

    let provider = match InitrdProvider::install(&files.initrd) {
        Ok(p) => p,
        Err(e) => return Refusal::Initrd(e),
    };
    let source = LoadImageSource::FromBuffer {
        buffer: &files.kernel,
        file_path: Some(kernel_dp),
    };
    let child = match boot::load_image(boot::image_handle(), source) {
        Ok(h) => h,
        Err(e) => return Refusal::Load(e.status()),
    };
    match boot::open_protocol_exclusive::<LoadedImage>(child) {
        // SAFETY: `options` outlives start_image below; the size is in bytes
        // including the terminating NUL, as the stub expects.
        Ok(mut li) => unsafe {
            li.set_load_options(options.as_ptr().cast(), options.num_bytes() as u32)
        },
        Err(e) => {
            let _ = boot::unload_image(child);
            return Refusal::Load(e.status());
        }
    }
    say!("starting slot {}", slot.letter());
    let status = match boot::start_image(child) {
        Ok(()) => Status::ABORTED,
        Err(e) => e.status(),
    };
    // Only reached when the kernel gave control back.
    let _ = boot::unload_image(child);
    drop(provider);
    drop(options);
    Refusal::Start(status)
}

/// The USR slots of our architecture that map to a slot letter.
fn usr_slots(gpt: &Gpt, refused: &[u32]) -> Vec<(SlotState, Slot)> {
    // Entry numbers, not labels, name the slots (disk-layout's contract).
    gpt.slots(ARCH.usr_type())
        .into_iter()
        .filter_map(|mut s| {
            let Some(slot) = Slot::from_part_number(s.number) else {
                say!(
                    "partition {} has the usr type but is not USR-A or USR-B; ignored",
                    s.number
                );
                return None;
            };
            // Refused during this boot even if the table could not be written.
            if refused.contains(&s.number) {
                s.attrs = mark_failed(s.attrs);
            }
            Some((s, slot))
        })
        .collect()
}

fn reread(gpt: &mut Gpt, disk: &mut Disk) {
    // After a failed write the in-memory table may be ahead of the disk.
    if let Ok(g) = Gpt::read(disk) {
        *gpt = g;
    }
}

/// What this boot learned and has not written yet: the slots refused so far
/// (out of the choice for the rest of this boot) and the attributes to record
/// for them, committed together with the chosen slot's try, so that a normal
/// boot writes the table once.
#[derive(Default)]
struct Refusals {
    numbers: Vec<u32>,
    pending: Vec<(u32, Attrs)>,
}

impl Refusals {
    fn add(&mut self, states: &[SlotState], s: SlotState, slot: Slot, why: &Refusal) {
        let record = after_refusal(states, &self.numbers, s.number, why.kind());
        self.numbers.push(s.number);
        match (why.kind(), record) {
            (_, Some(a)) => {
                say!(
                    "slot {} refused: {why}; recording {} -> {a}",
                    slot.letter(),
                    s.attrs
                );
                self.pending.push((s.number, a));
            }
            (Refused::Proven, None) => say!(
                "slot {} refused: {why}; not marked failed (no other slot could boot)",
                slot.letter()
            ),
            (Refused::Transient, None) => say!(
                "slot {} refused: {why}; may work next boot, not marked",
                slot.letter()
            ),
        }
    }
}

/// One crash-safe commit of every change this boot decided.
fn commit(
    gpt: &mut Gpt,
    disk: &mut Disk,
    writes: &[(u32, Attrs)],
) -> Result<(), GptError<uefi::Error>> {
    for &(n, a) in writes {
        // Every number came from this table: there is no missing entry to report.
        let _ = gpt.set_slot_attrs(n, a);
    }
    gpt.commit(disk).inspect_err(|_| reread(gpt, disk))
}

fn run() -> Halt {
    let esp_handle = match get::<LoadedImage>(boot::image_handle()).map(|li| li.device()) {
        Ok(Some(h)) => h,
        _ => return Halt::NoDisk("the loaded image has no device"),
    };
    let esp_dp: Vec<u8> = match get::<DevicePath>(esp_handle) {
        Ok(dp) => dp.as_bytes().to_vec(),
        Err(_) => return Halt::NoDisk("the ESP has no device path"),
    };
    let mut disk = match find_disk(&esp_dp) {
        Ok(d) => d,
        Err(h) => return h,
    };
    let mut gpt = match Gpt::read(&mut disk) {
        Ok(g) => g,
        Err(e) => return Halt::Gpt(e),
    };
    if !gpt.is_healthy() {
        use gpt_slots::TableCopy::{Backup, Primary};
        say!(
            "gpt damaged (primary {:?}, backup {:?}); repairing",
            gpt.status(Primary),
            gpt.status(Backup)
        );
        match gpt.repair(&mut disk) {
            Ok(r) => say!(
                "gpt repaired (primary rewritten {}, backup rewritten {})",
                r.primary,
                r.backup
            ),
            Err(e) => {
                say!("gpt repair failed: {e}");
                reread(&mut gpt, &mut disk);
            }
        }
    }
    let (keys, nkeys) = trusted_keys();
    if nkeys == 0 {
        // Not the slots' fault: do not mark anything failed.
        return Halt::NoKeys;
    }
    let keys = &keys[..nkeys];

    let mut refusals = Refusals::default();
    let mut first = true;
    loop {
        let slots = usr_slots(&gpt, &refusals.numbers);
        if first {
            for (s, slot) in &slots {
                if let Some(why) = why_not(s.attrs) {
                    say!("slot {} not bootable: {why} ({})", slot.letter(), s.attrs);
                }
            }
            first = false;
        }
        let states: Vec<SlotState> = slots.iter().map(|(s, _)| *s).collect();
        let Some(choice) = choose(&states) else {
            return Halt::NoSlot;
        };
        let Some(&(state, slot)) = slots.iter().find(|(s, _)| s.number == choice.number) else {
            return Halt::NoSlot;
        };
        say!("slot {} chosen: {choice}", slot.letter());
        let Some(partuuid) = gpt.entry(choice.number).map(|e| e.unique_guid) else {
            return Halt::NoSlot;
        };

        // Verified before anything is written: a slot whose files fail is
        // refused without spending a try first, and the fallback from an
        // exhausted slot only happens to a slot that can start.
        let files = {
            let mut fs = match get::<SimpleFileSystem>(esp_handle) {
                Ok(fs) => fs,
                Err(e) => return Halt::NoEsp(e.status()),
            };
            let mut root = match fs.open_volume() {
                Ok(r) => r,
                Err(e) => return Halt::NoEsp(e.status()),
            };
            load_verified(&mut root, slot, keys)
        };
        let files = match files {
            Ok(files) => files,
            Err(why) => {
                refusals.add(&states, state, slot, &why);
                continue;
            }
        };
        say!("slot {} boot files verified", slot.letter());

        let writes: Vec<(u32, Attrs)> = refusals
            .pending
            .iter()
            .copied()
            .chain(choice.writes())
            .collect();
        if !writes.is_empty() {
            match commit(&mut gpt, &mut disk, &writes) {
                Ok(()) => {
                    refusals.pending.clear();
                    say!(
                        "slot {} tries {} -> {} written",
                        slot.letter(),
                        choice.before.tries,
                        choice.after.tries
                    );
                    if let Some((s, a)) = choice.given_up {
                        say!("entry {} given up ({} -> {a})", s.number, s.attrs);
                    }
                }
                Err(e) if !choice.before.successful => {
                    refusals.add(&states, state, slot, &Refusal::TryNotRecorded(e));
                    continue;
                }
                Err(e) => say!(
                    "slot {} try not recorded ({e}); it is known good, starting anyway",
                    slot.letter()
                ),
            }
        }

        let why = start(&esp_dp, slot, partuuid, files);
        // The try is already counted: the firmware failing to start a
        // verified kernel costs nothing more.
        refusals.numbers.push(choice.number);
        say!("slot {} not started: {why}", slot.letter());
    }
}
