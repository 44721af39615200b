//! Cairn's on-disk contract: partition order, labels, type GUIDs, ESP paths and
//! kernel command-line keys. Everything that two components must agree on about
//! the disk lives here and nowhere else. `no_std`: the boot manager uses it.
#![no_std]

extern crate alloc;

/// A GUID as stored on disk (the first three fields little-endian, as GPT and
/// UEFI store them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
    /// at compile time; panics (a compile error in const context) on bad input.
    pub const fn parse(s: &str) -> Guid {
        match Guid::try_parse(s) {
            Some(g) => g,
            None => panic!("malformed GUID"),
        }
    }

    pub const fn try_parse(s: &str) -> Option<Guid> {
        let b = s.as_bytes();
        if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
            return None;
        }
        // Big-endian byte order of the text form, then swapped into on-disk order.
        let mut be = [0u8; 16];
        let mut i = 0;
        let mut o = 0;
        while i < 36 {
            if b[i] == b'-' {
                i += 1;
                continue;
            }
            let hi = match hex_val(b[i]) {
                Some(v) => v,
                None => return None,
            };
            let lo = match hex_val(b[i + 1]) {
                Some(v) => v,
                None => return None,
            };
            be[o] = (hi << 4) | lo;
            o += 1;
            i += 2;
        }
        Some(Guid::from_be_bytes(be))
    }

    /// From the byte order of the text form (RFC 4122 order).
    pub const fn from_be_bytes(be: [u8; 16]) -> Guid {
        Guid([
            be[3], be[2], be[1], be[0], be[5], be[4], be[7], be[6], be[8], be[9], be[10], be[11],
            be[12], be[13], be[14], be[15],
        ])
    }

    /// Bytes in the text form's (RFC 4122) order.
    pub const fn to_be_bytes(&self) -> [u8; 16] {
        let d = self.0;
        [
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13],
            d[14], d[15],
        ]
    }

    /// Writes the lower-case text form into `out` and returns it as a str.
    pub fn format<'a>(&self, out: &'a mut [u8; 36]) -> &'a str {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let be = self.to_be_bytes();
        let mut o = 0;
        for (i, byte) in be.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out[o] = b'-';
                o += 1;
            }
            out[o] = HEX[(byte >> 4) as usize];
            out[o + 1] = HEX[(byte & 15) as usize];
            o += 2;
        }
        // Only ASCII hex digits and dashes were written.
        core::str::from_utf8(out).unwrap_or("")
    }
}

const fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl core::fmt::Display for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut buf = [0u8; 36];
        f.write_str(self.format(&mut buf))
    }
}

impl core::fmt::Debug for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

/// Partition type GUIDs (UEFI spec and the Discoverable Partitions Specification).
pub mod types {
    use super::Guid;
    pub const ESP: Guid = Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    pub const LINUX_DATA: Guid = Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4");
    pub const USR_X86_64: Guid = Guid::parse("8484680c-9521-48c6-9c11-b0720656f69e");
    pub const USR_ARM64: Guid = Guid::parse("b0e01050-ee5f-4390-949a-9101b17104e9");
    pub const ROOT_X86_64: Guid = Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    pub const ROOT_ARM64: Guid = Guid::parse("b921b045-1df0-41c3-af44-4c6f280d3fae");
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The name used in board configs and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn from_name(s: &str) -> Option<Arch> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Some(Arch::X86_64),
            "arm64" | "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    pub const fn debian_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub const fn usr_type(self) -> Guid {
        match self {
            Arch::X86_64 => types::USR_X86_64,
            Arch::Arm64 => types::USR_ARM64,
        }
    }

    pub const fn root_type(self) -> Guid {
        match self {
            Arch::X86_64 => types::ROOT_X86_64,
            Arch::Arm64 => types::ROOT_ARM64,
        }
    }

    /// The removable-media default loader path on the ESP.
    pub const fn efi_default_loader(self) -> &'static str {
        match self {
            Arch::X86_64 => "EFI/BOOT/BOOTX64.EFI",
            Arch::Arm64 => "EFI/BOOT/BOOTAA64.EFI",
        }
    }

    pub const fn uefi_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-uefi",
            Arch::Arm64 => "aarch64-unknown-uefi",
        }
    }

    pub const fn musl_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The GNU triplet's CPU part (Debian's multiarch library folder is
    /// `/usr/lib/<gnu_arch>-linux-gnu`).
    pub const fn gnu_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "aarch64",
        }
    }

    /// ELF e_machine of binaries built for this arch.
    pub const fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }
}

/// The partitions of a Cairn disk, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Esp,
    UsrA,
    UsrB,
    Oem,
    Root,
}

impl Part {
    pub const ALL: [Part; 5] = [Part::Esp, Part::UsrA, Part::UsrB, Part::Oem, Part::Root];

    /// 1-based GPT entry number (the N in /dev/vdaN).
    pub const fn number(self) -> u32 {
        match self {
            Part::Esp => 1,
            Part::UsrA => 2,
            Part::UsrB => 3,
            Part::Oem => 4,
            Part::Root => 5,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Part::Esp => "ESP",
            Part::UsrA => "USR-A",
            Part::UsrB => "USR-B",
            Part::Oem => "OEM",
            Part::Root => "ROOT",
        }
    }

    pub const fn type_guid(self, arch: Arch) -> Guid {
        match self {
            Part::Esp => types::ESP,
            Part::UsrA | Part::UsrB => arch.usr_type(),
            Part::Oem => types::LINUX_DATA,
            Part::Root => arch.root_type(),
        }
    }

    /// Default size in MiB; `None` for ROOT, which takes the rest of the disk.
    pub const fn default_size_mib(self) -> Option<u64> {
        match self {
            Part::Esp => Some(256),
            Part::UsrA | Part::UsrB => Some(1536),
            Part::Oem => Some(128),
            Part::Root => None,
        }
    }
}

/// DPS partition flag: mount read-only. Set on the USR partitions.
pub const GPT_ATTR_READ_ONLY: u64 = 1 << 60;
/// DPS partition flag: not for automatic discovery. Carried by the slot that is
/// not the current OS, so systemd-dissect and gpt-auto (which otherwise prefer
/// the highest label, USR-B) see the slot that holds the running release.
pub const GPT_ATTR_NO_AUTO: u64 = 1 << 63;

/// Partition alignment and the first usable offset.
pub const ALIGN_BYTES: u64 = 1 << 20;

/// An A/B slot for /usr and its boot files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub const fn part(self) -> Part {
        match self {
            Slot::A => Part::UsrA,
            Slot::B => Part::UsrB,
        }
    }

    pub const fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    pub fn from_letter(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    pub const fn from_part_number(n: u32) -> Option<Slot> {
        match n {
            2 => Some(Slot::A),
            3 => Some(Slot::B),
            _ => None,
        }
    }

    pub const fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Folder of this slot's boot files on the ESP (forward slashes).
    pub const fn esp_dir(self) -> &'static str {
        match self {
            Slot::A => "cairn/a",
            Slot::B => "cairn/b",
        }
    }
}

/// File names inside a slot's ESP folder.
pub mod boot_files {
    /// The kernel (an EFI stub image).
    pub const KERNEL: &str = "vmlinuz";
    /// The initramfs (cpio newc, compressed).
    pub const INITRD: &str = "initrd";
    /// The kernel command line, one line of UTF-8 with no trailing newline.
    pub const CMDLINE: &str = "cmdline";
    /// The ed25519 signature over the three files above (see the `boot-sig` crate).
    pub const SIGNATURE: &str = "boot.sig";
    pub const ALL: [&str; 4] = [KERNEL, INITRD, CMDLINE, SIGNATURE];
}

/// Kernel command-line keys shared by the builder, the boot manager and cairn-init.
pub mod cmdline {
    /// Root hash of the slot's /usr dm-verity tree (systemd's name for it).
    pub const USRHASH: &str = "usrhash";
    /// `<data blocks>:<hash offset in bytes>:<salt hex>`; block sizes are 4096.
    pub const VERITY: &str = "cairn.verity";
    /// Appended by the boot manager: which slot it started (`a` or `b`).
    pub const SLOT: &str = "cairn.slot";
    /// Appended by the boot manager: the PARTUUID of the slot's USR partition.
    pub const USR_PARTUUID: &str = "cairn.usr";
    /// Allows an emergency shell in cairn-init on failure.
    pub const DEBUG: &str = "cairn.debug";
    /// The host config's URL (`cairn.config.url=`, for PXE and labs).
    pub const CONFIG_URL: &str = "cairn.config.url";
}

/// dm-verity geometry used for /usr (data and hash blocks).
pub const VERITY_BLOCK_SIZE: u32 = 4096;

/// Where the host config is found at boot.
pub mod host_config {
    /// Path inside the OEM partition.
    pub const OEM_PATH: &str = "config.toml";
    /// QEMU fw_cfg name (`-fw_cfg name=opt/cairn/config,file=…`).
    pub const FW_CFG_NAME: &str = "opt/cairn/config";
    /// The fw_cfg name of a detached signature of the fw_cfg config.
    pub const FW_CFG_SIG_NAME: &str = "opt/cairn/config.sig";
    /// Where the kernel shows fw_cfg blobs by name (relative to `/`).
    pub const FW_CFG_DIR: &str = "sys/firmware/qemu_fw_cfg/by_name";
    /// Where oem.mount puts the OEM partition (relative to `/`).
    pub const OEM_MOUNT: &str = "oem";
}

/// Facts about the running boot under /run/cairn, written by one component and
/// read by others (paths relative to `/`, so tests can use a scratch root).
pub mod run {
    /// The /run/cairn directory itself.
    pub const DIR: &str = "run/cairn";
    /// Written by cairn-init: `a\n` or `b\n`.
    pub const BOOTED_SLOT: &str = "run/cairn/booted-slot";
    /// Written by cairn-init: the PARTUUID of the booted USR partition.
    pub const USR_PARTUUID: &str = "run/cairn/usr-partuuid";
    /// Written by cairn-config: the effective host config (defaults filled
    /// in), read by cairn-updated and cairn-mark-good.
    pub const EFFECTIVE_CONFIG: &str = "run/cairn/config.toml";
    /// Written by cairn-config: one line, where the config came from (`none`).
    pub const CONFIG_SOURCE: &str = "run/cairn/config-source";
    /// Written by cairn-config: one line, only when the config could not be
    /// (fully) applied.
    pub const CONFIG_ERROR: &str = "run/cairn/config-error";
    /// Written by cairn-config: one line, the signature state of the config,
    /// read by `cairn-config status`.
    pub const CONFIG_SIGNATURE: &str = "run/cairn/config-signature";
    /// Written by cairn-config's early pass when this boot's config comes
    /// from the network (the command-line URL, a cloud's metadata service,
    /// Azure's ready report): one line, why. Its presence starts
    /// cairn-config-network.service, which applies the config once the
    /// network is up.
    pub const CONFIG_NEEDS_NETWORK: &str = "run/cairn/config-needs-network";
    /// Written by cairn-mark-good health: one line, the last gate result.
    pub const HEALTH_RESULT: &str = "run/cairn/health";
    /// Written by cairn-app-generator: what it generated, for cairn-config's
    /// reload decision.
    pub const APPS_GENERATED: &str = "run/cairn/apps.generated";
}

/// Cairn's own programs as installed in /usr (absolute: units, generators and
/// other programs call them by these paths; cairn-build installs each binary
/// there).
pub mod programs {
    pub const CAIRN_CONFIG: &str = "/usr/lib/cairn/cairn-config";
    pub const CAIRN_MARK_GOOD: &str = "/usr/lib/cairn/cairn-mark-good";
    pub const CAIRN_APP_GENERATOR: &str = "/usr/lib/systemd/system-generators/cairn-app-generator";
    pub const CAIRN_UPDATED: &str = "/usr/lib/cairn/cairn-updated";
    pub const CAIRNCTL: &str = "/usr/bin/cairnctl";
    pub const CAIRN_RUN: &str = "/usr/bin/cairn-run";
    /// (cargo binary name, path in the image), for the builder.
    pub const ALL: [(&str, &str); 6] = [
        ("cairn-config", CAIRN_CONFIG),
        ("cairn-mark-good", CAIRN_MARK_GOOD),
        ("cairn-app-generator", CAIRN_APP_GENERATOR),
        ("cairn-updated", CAIRN_UPDATED),
        ("cairnctl", CAIRNCTL),
        ("cairn-run", CAIRN_RUN),
    ];
}

/// The initramfs that cairn-build packs and cairn-init reads.
pub mod initramfs {
    /// Module load order, one path per line relative to the initramfs root.
    pub const MODULE_LIST: &str = "etc/cairn-modules";
}

/// Facts about the board the builder ships in /usr, read by host components.
pub mod board_files {
    /// K, the boots in a row a committed slot may die before its health gate
    /// before the boot manager falls back (one decimal number). Written by
    /// cairn-build from the board's `boot_tries`; cairn-mark-good re-arms a
    /// committed slot to it, cairnctl rollback arms the slot it rolls back to.
    pub const BOOT_TRIES: &str = "usr/lib/cairn/boot-tries";
    /// The release keys the image trusts (JSON list, see the updater's
    /// `parse_keys`).
    pub const KEYS_JSON: &str = "usr/lib/cairn/keys.json";
    /// The update repository's root of trust shipped with the image.
    pub const UPDATE_ROOT: &str = "usr/lib/cairn/update-root.json";
    /// os-release (IMAGE_ID is the board, IMAGE_VERSION the release).
    pub const OS_RELEASE: &str = "usr/lib/os-release";
    /// The host config sources cairn-config tries, in this order, first found
    /// wins: one name a line (`fw_cfg`, `url`, `ec2`, `gce`, `openstack`,
    /// `azure`, `oem`). Written by cairn-build from the board's
    /// `[config] sources`; absent: every source in the default order
    /// (`host_config::source`).
    pub const CONFIG_SOURCES: &str = "usr/lib/cairn/config-sources";
    /// The keys that sign host configs, one `cairn-ed25519-public <hex>` line
    /// each. Written by cairn-build when the board sets
    /// `[config] require_signature`; present: cairn-config applies only a
    /// config signed by one of them (`host_config::source`).
    pub const CONFIG_KEYS: &str = "usr/lib/cairn/config-keys";
    /// Images preloaded by cairn-build, one OCI layout per image, named by
    /// the preload naming rule (cairn-build and cairn-config agree on it).
    pub const PRELOAD_DIR: &str = "usr/share/cairn/images";

    /// The directory name of a preloaded image under [`PRELOAD_DIR`]: the
    /// reference with `:` as `+` (tools such as umoci and skopeo read
    /// `path:tag`, so paths avoid `:`; `+` never occurs in a reference, so
    /// the mapping is one to one).
    pub fn preload_name(image: &str) -> alloc::string::String {
        image.replace(':', "+")
    }
}

/// Host state on ROOT shared between components.
pub mod state {
    /// Agent state of cairn-updated (progress, history, trust).
    pub const UPDATER_DIR: &str = "var/lib/cairn/updater";
    /// Health-check failures by slot: `failed-<a|b>` holds `version=<v>` and
    /// one reason per line, written by cairn-health, read by the updater to
    /// say why a release rolled back, removed when the slot is committed.
    pub const HEALTH_DIR: &str = "var/lib/cairn/health";
    /// The `[[apps]]`/`[containers]` part of the last applied host config,
    /// saved by cairn-config for cairn-app-generator (which runs before the
    /// config sources are reachable).
    pub const SAVED_APPS_CONFIG: &str = "var/lib/cairn/host-config.toml";
    /// Named app volumes (mode 0700, created by tmpfiles).
    pub const VOLUMES_DIR: &str = "var/lib/cairn/volumes";
}

/// Host config written by cairn-config for other components.
pub mod etc {
    /// The image trust policy cairn-run enforces, written from `[containers]`.
    pub const IMAGE_TRUST: &str = "etc/cairn/image-trust.json";
}

/// The development signing key in the source tree (tests and the quick
/// start only; images signed with it say so).
pub mod dev_key {
    pub const SECRET: &str = "keys/cairn-DEVELOPMENT-ONLY.secret";
    pub const PUBLIC: &str = "keys/cairn-DEVELOPMENT-ONLY.public";
}

/// Filesystem labels of the partitions that carry one.
pub mod fs_labels {
    pub const ESP: &str = "ESP";
    pub const OEM: &str = "OEM";
    pub const ROOT: &str = "ROOT";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trips_through_text() {
        let g = types::ESP;
        // On-disk order of the ESP type GUID, as found at LBA 2 of any GPT disk.
        assert_eq!(
            g.0,
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        let mut buf = [0u8; 36];
        assert_eq!(g.format(&mut buf), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            Guid::try_parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            Some(g)
        );
    }

    #[test]
    fn bad_guids_are_refused() {
        for s in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93g",
        ] {
            assert_eq!(Guid::try_parse(s), None, "{s}");
        }
    }

    #[test]
    fn slots_map_to_partitions() {
        for s in Slot::ALL {
            assert_eq!(Slot::from_part_number(s.part().number()), Some(s));
            assert_eq!(Slot::from_letter(s.letter()), Some(s));
            assert_eq!(s.other().other(), s);
        }
        assert_eq!(Part::UsrA.type_guid(Arch::Arm64), types::USR_ARM64);
    }
}
