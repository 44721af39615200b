//! Where the host config comes from: QEMU fw_cfg first (a test or a cloud
//! can override the disk), then the OEM partition, else nothing (defaults).

use std::path::{Path, PathBuf};

use disk_layout::host_config::{FW_CFG_NAME, OEM_PATH};

use crate::config::{ConfigError, HostConfig};
use crate::paths;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    FwCfg(PathBuf),
    Oem(PathBuf),
    None,
}

impl Source {
    /// Finds the first source present under `root`.
    pub fn find(root: &Path) -> Source {
        let fw = root.join(paths::FW_CFG_DIR).join(FW_CFG_NAME).join("raw");
        if fw.exists() {
            return Source::FwCfg(fw);
        }
        let oem = root.join(paths::OEM_MOUNT).join(OEM_PATH);
        if oem.exists() {
            return Source::Oem(oem);
        }
        Source::None
    }

    /// The name used in messages and /run/cairn/config-source.
    pub fn describe(&self) -> String {
        match self {
            Source::FwCfg(_) => format!("fw_cfg {FW_CFG_NAME}"),
            Source::Oem(_) => format!("/{}/{OEM_PATH}", paths::OEM_MOUNT),
            Source::None => "none".to_string(),
        }
    }

    /// Reads and validates the config; `Source::None` gives the defaults.
    pub fn load(&self) -> Result<HostConfig, ConfigError> {
        let path = match self {
            Source::FwCfg(p) | Source::Oem(p) => p,
            Source::None => return Ok(HostConfig::default()),
        };
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            origin: self.describe(),
            key: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ConfigError {
            origin: self.describe(),
            key: String::new(),
            message: "not UTF-8".into(),
        })?;
        HostConfig::parse(&text, &self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fw_cfg_wins_over_oem() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        assert_eq!(Source::find(d.path()), Source::None);
        assert_eq!(Source::None.load(), Ok(HostConfig::default()));
        std::fs::create_dir_all(d.path().join("oem"))?;
        std::fs::write(d.path().join("oem/config.toml"), "hostname = \"oem\"\n")?;
        let s = Source::find(d.path());
        assert_eq!(s.describe(), "/oem/config.toml");
        assert_eq!(s.load().ok().and_then(|c| c.hostname), Some("oem".into()));
        let fw = d
            .path()
            .join("sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config");
        std::fs::create_dir_all(&fw)?;
        std::fs::write(fw.join("raw"), "bogus = 1\n")?;
        let s = Source::find(d.path());
        assert_eq!(s.describe(), "fw_cfg opt/cairn/config");
        let e = s.load().err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            e,
            "fw_cfg opt/cairn/config: bogus: unknown key (known: hostname, users, health, update, containers, apps)"
        );
        Ok(())
    }
}
