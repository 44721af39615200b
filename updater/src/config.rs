//! The `[update]` table of the effective host config (typed and validated
//! by `host-config`, the one owner of the host config's schema) and reboot
//! windows in the host's time zone (`reboot-window`).

use std::path::{Path, PathBuf};

use disk_layout::{board_files, run};
use reboot_window::{TimeZone, Window};

pub use host_config::update::{
    DEFAULT_ROOT, DEFAULT_STATE_DIR, EtcdSettings, FleetLockSettings, HaltThreshold,
    RebootStrategy, UpdateConfig,
};

use crate::Error;

/// Mount point of the ESP on a host.
pub const DEFAULT_ESP: &str = "/efi";

/// Where cairn-config writes the effective host config.
pub fn effective_config() -> PathBuf {
    Path::new("/").join(run::EFFECTIVE_CONFIG)
}

/// The release keys the image ships.
pub fn default_keys() -> PathBuf {
    Path::new("/").join(board_files::KEYS_JSON)
}

/// Parses the `[update]` table of a whole host config (validating all of it:
/// cairn-config wrote it, so anything else is a bug worth seeing).
pub fn parse(text: &str, origin: &str) -> Result<UpdateConfig, Error> {
    host_config::HostConfig::parse(text, origin)
        .map(|c| c.update)
        .map_err(|e| Error::Config(e.to_string()))
}

/// Reads `path`; a missing file means defaults (no repository, idle).
pub fn load(path: &Path) -> Result<UpdateConfig, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateConfig::default()),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The HTTP client for the repository: `url` (empty when none), trusting
/// `ca_file` instead of the public roots when it is set. Fails naming the
/// file when it cannot be read or holds no certificate.
pub fn http(
    cfg: &UpdateConfig,
    opts: crate::http::HttpOptions,
) -> Result<crate::http::Http, Error> {
    Ok(crate::http::Http::with_ca_file(
        cfg.url.as_deref().unwrap_or(""),
        opts,
        cfg.ca_file.as_deref(),
    )?)
}

/// The windows of `cfg` (validated by host-config, so none is dropped).
pub fn windows(cfg: &UpdateConfig) -> Vec<Window> {
    cfg.windows
        .iter()
        .filter_map(|w| Window::parse(w).ok())
        .collect()
}

/// Is `now` (unix seconds) inside the reboot windows, in `tz`? No windows
/// means always, except for `reboot = "window"` (which needs some) and
/// `"off"`. The lock strategies also need their lock; this is only the
/// time condition.
pub fn in_window(cfg: &UpdateConfig, tz: &TimeZone, now: i64) -> bool {
    match cfg.reboot {
        RebootStrategy::Off => false,
        RebootStrategy::Immediate => true,
        RebootStrategy::Window | RebootStrategy::EtcdLock | RebootStrategy::FleetLock => {
            let w = windows(cfg);
            reboot_window::contains(&w, tz, now)
        }
    }
}

/// When the next window opens (`now` if one is open; `None` for never, i.e.
/// `reboot = "off"`).
pub fn next_window(cfg: &UpdateConfig, tz: &TimeZone, now: i64) -> Option<i64> {
    match cfg.reboot {
        RebootStrategy::Off => None,
        RebootStrategy::Immediate => Some(now),
        _ => {
            let w = windows(cfg);
            reboot_window::next_open(&w, tz, now).or(Some(now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_table_or_file() {
        let c = parse("hostname = \"x\"\n[health]\nunits = []\n", "t").unwrap();
        assert_eq!(c, UpdateConfig::default());
        assert!(c.url.is_none());
        let missing = load(Path::new("/nonexistent/config.toml")).unwrap();
        assert_eq!(missing, UpdateConfig::default());
        let err = parse("[update]\nurll = \"x\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("update.urll"), "{err}");
    }

    #[test]
    fn ca_file() {
        // A missing bundle is refused when the client is made, naming the file.
        let c = parse("[update]\nca_file = \"/nonexistent/ca.pem\"\n", "t").unwrap();
        let err = http(&c, crate::http::HttpOptions::default()).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn windows_by_strategy() {
        // 2026-11-21 was a Saturday; 1_795_219_200 is its 00:00 UTC.
        let sat = 1_795_219_200i64;
        let at = |h: i64| sat + h * 3600;
        let utc = TimeZone::utc();
        let cfg = |reboot: &str, windows: &str| {
            parse(
                &format!(
                    "[update]\nreboot = \"{reboot}\"\nwindows = [{windows}]\n\
                     [update.etcd]\nendpoints = [\"http://e:2379\"]\n\
                     [update.fleetlock]\nurl = \"http://f\"\n"
                ),
                "t",
            )
            .unwrap()
        };
        let rows = [
            ("immediate", "", at(1), true, Some(at(1))),
            ("off", "", at(1), false, None),
            ("window", "\"Sat 02:00-04:00\"", at(1), false, Some(at(2))),
            ("window", "\"Sat 02:00-04:00\"", at(3), true, Some(at(3))),
            ("etcd-lock", "", at(1), true, Some(at(1))),
            (
                "etcd-lock",
                "\"Sat 02:00-04:00\"",
                at(1),
                false,
                Some(at(2)),
            ),
            ("fleetlock", "\"Sat 02:00-04:00\"", at(3), true, Some(at(3))),
        ];
        for (reboot, w, now, inside, next) in rows {
            let c = cfg(reboot, w);
            assert_eq!(in_window(&c, &utc, now), inside, "{reboot} [{w}] at {now}");
            assert_eq!(next_window(&c, &utc, now), next, "{reboot} [{w}] at {now}");
        }
        // In the host's zone: 02:00 in Berlin (CET, UTC+1) is 01:00 UTC.
        let berlin = TimeZone::from_posix_tz("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let c = cfg("window", "\"Sat 02:00-04:00\"");
        assert!(in_window(&c, &berlin, at(1)));
        assert!(!in_window(&c, &berlin, at(3)));
    }
}
