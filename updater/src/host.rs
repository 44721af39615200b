//! What the agent knows about the running host: booted slot and version, board,
//! arch, the release keys it trusts, and where its disk and slots are.

use std::path::{Path, PathBuf};

use disk_layout::Slot;
use release_manifest::{PublicKey, Version};
use serde::Deserialize;

use crate::Error;

/// os-release of the running /usr.
pub fn os_release() -> PathBuf {
    Path::new("/").join(disk_layout::board_files::OS_RELEASE)
}

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
                gpt_slots::booted::Booted::read(Path::new("/"))
                    .map_err(|e| Error::Host(e.to_string()))?
                    .slot
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

/// The booted disk and its USR partition nodes, found from the PARTUUID
/// cairn-init recorded (gpt-slots' one lookup, shared with cairn-mark-good).
pub fn detect_disk() -> Result<(PathBuf, PathBuf, PathBuf), Error> {
    let root = Path::new("/");
    let d = gpt_slots::booted::Booted::read(root)
        .and_then(|b| b.disk_and_slots(root))
        .map_err(|e| Error::Host(e.to_string()))?;
    Ok((d.disk, d.usr_a, d.usr_b))
}
