//! What the agent knows about the running host: booted slot and version, board,
//! arch, the release keys it trusts, and where its disk and slots are.

use std::path::{Path, PathBuf};

use disk_layout::Slot;
use release_manifest::{PublicKey, Version};
use serde::Deserialize;

use crate::Error;

pub const BOOTED_SLOT: &str = "/run/cairn/booted-slot";
pub const USR_PARTUUID: &str = "/run/cairn/usr-partuuid";
pub const OS_RELEASE: &str = "/usr/lib/os-release";

#[derive(Debug, Clone)]
pub struct Host {
    pub booted_slot: Slot,
    pub booted_version: Version,
    pub board: String,
    pub arch: String,
    /// The build keys of /usr/lib/cairn/keys.json: they sign manifests and boot files.
    pub release_keys: Vec<PublicKey>,
    /// The image was signed with the development key (shown as a warning).
    pub development_key: bool,
}

#[derive(Deserialize)]
struct KeyEntry {
    public: String,
    #[serde(default)]
    development: bool,
}

/// Parses keys.json as the image builder writes it:
/// `[{"id": "...", "public": "cairn-ed25519-public <hex>", "development": bool}]`.
pub fn parse_keys(bytes: &[u8]) -> Result<(Vec<PublicKey>, bool), Error> {
    let entries: Vec<KeyEntry> =
        serde_json::from_slice(bytes).map_err(|e| Error::Host(format!("keys.json: {e}")))?;
    let mut keys = Vec::new();
    let mut dev = false;
    for e in entries {
        keys.push(PublicKey::parse(&e.public).map_err(|e| Error::Host(format!("keys.json: {e}")))?);
        dev |= e.development;
    }
    if keys.is_empty() {
        return Err(Error::Host("keys.json lists no keys".into()));
    }
    Ok((keys, dev))
}

/// `KEY=value` lines of os-release, quotes removed.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

impl Host {
    /// Reads the host: os-release (IMAGE_ID = board, IMAGE_VERSION), keys.json and
    /// the booted slot recorded by cairn-init (or `slot` when given).
    pub fn detect(os_release: &Path, keys_json: &Path, slot: Option<Slot>) -> Result<Host, Error> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
        };
        let os = String::from_utf8_lossy(&read(os_release)?).into_owned();
        let field = |k: &str| {
            os_release_field(&os, k)
                .ok_or_else(|| Error::Host(format!("{}: no {k}", os_release.display())))
        };
        let booted_version =
            Version::parse(&field("IMAGE_VERSION")?).map_err(|e| Error::Host(e.to_string()))?;
        let board = field("IMAGE_ID")?;
        let (release_keys, development_key) = parse_keys(&read(keys_json)?)?;
        let booted_slot = match slot {
            Some(s) => s,
            None => {
                let text = String::from_utf8_lossy(&read(Path::new(BOOTED_SLOT))?).into_owned();
                Slot::from_letter(text.trim())
                    .ok_or_else(|| Error::Host(format!("{BOOTED_SLOT}: bad slot {text:?}")))?
            }
        };
        Ok(Host {
            booted_slot,
            booted_version,
            board,
            arch: native_arch().to_string(),
            release_keys,
            development_key,
        })
    }

    pub fn key_bytes(&self) -> Vec<[u8; 32]> {
        self.release_keys.iter().map(PublicKey::to_bytes).collect()
    }
}

/// The arch name the manifests use (disk-layout's `Arch::name`).
pub fn native_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        disk_layout::Arch::Arm64.name()
    } else {
        disk_layout::Arch::X86_64.name()
    }
}

/// The booted disk and its USR partition nodes, found from the PARTUUID cairn-init
/// recorded: /dev/disk/by-partuuid/<uuid> -> /dev/vda2 -> sysfs parent vda ->
/// /dev/vda, and the partitions numbered 2 and 3 of that disk.
pub fn detect_disk() -> Result<(PathBuf, PathBuf, PathBuf), Error> {
    let uuid = std::fs::read_to_string(USR_PARTUUID).map_err(|e| {
        Error::io(
            format!("reading {USR_PARTUUID} (not booted by cairn-init?)"),
            e,
        )
    })?;
    let link = Path::new("/dev/disk/by-partuuid").join(uuid.trim());
    let part = std::fs::canonicalize(&link)
        .map_err(|e| Error::io(format!("resolving {}", link.display()), e))?;
    let name = part
        .file_name()
        .ok_or_else(|| Error::Host(format!("{}: no device name", part.display())))?;
    let sys = std::fs::canonicalize(Path::new("/sys/class/block").join(name))
        .map_err(|e| Error::io("resolving the partition in sysfs", e))?;
    let disk_dir = sys
        .parent()
        .ok_or_else(|| Error::Host(format!("{}: no parent disk", sys.display())))?;
    let disk_name = disk_dir
        .file_name()
        .ok_or_else(|| Error::Host("no disk name".into()))?;
    let mut slots = [None, None];
    let entries =
        std::fs::read_dir(disk_dir).map_err(|e| Error::io("listing the disk in sysfs", e))?;
    for e in entries.flatten() {
        if let Ok(n) = std::fs::read_to_string(e.path().join("partition")) {
            match n.trim() {
                "2" => slots[0] = Some(Path::new("/dev").join(e.file_name())),
                "3" => slots[1] = Some(Path::new("/dev").join(e.file_name())),
                _ => {}
            }
        }
    }
    match slots {
        [Some(a), Some(b)] => Ok((Path::new("/dev").join(disk_name), a, b)),
        _ => Err(Error::Host(
            "the disk has no partitions 2 and 3 (USR-A, USR-B)".into(),
        )),
    }
}
