//! The `[update]` table of the effective host config, and reboot windows.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// Where cairn-config writes the effective host config.
pub const EFFECTIVE_CONFIG: &str = "/run/cairn/config.toml";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cairn/updater";
/// The repository root the image ships (the first link of the key-rotation chain).
pub const DEFAULT_ROOT: &str = "/usr/lib/cairn/update-root.json";
pub const DEFAULT_KEYS: &str = "/usr/lib/cairn/keys.json";
/// Mount point of the ESP on a host.
pub const DEFAULT_ESP: &str = "/efi";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootStrategy {
    Immediate,
    Window,
    Off,
}

/// Settings of the `[update]` table; every field has a default, and no `url`
/// means there is no repository: the agent stays idle.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    pub url: Option<String>,
    pub channel: String,
    pub interval_minutes: u64,
    pub reboot: RebootStrategy,
    /// `"[Mon,Tue,... ]HH:MM-HH:MM"` in UTC; an end before the start wraps midnight.
    pub windows: Vec<String>,
    pub wave_seed: PathBuf,
    /// The trusted repository root shipped with the image.
    pub root: PathBuf,
    /// A PEM bundle of CA certificates for an `https://` repository behind a
    /// private CA. When set, these CAs are trusted *instead of* the public
    /// web PKI compiled into the updater (Mozilla's roots): a host pointed at
    /// a private mirror has no reason to accept a certificate for it from any
    /// public CA. Updates stay authenticated by their signatures either way.
    pub ca_file: Option<PathBuf>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            url: None,
            channel: "stable".into(),
            interval_minutes: 60,
            reboot: RebootStrategy::Immediate,
            windows: Vec::new(),
            wave_seed: Path::new(DEFAULT_STATE_DIR).join("wave-seed"),
            root: PathBuf::from(DEFAULT_ROOT),
            ca_file: None,
        }
    }
}

impl UpdateConfig {
    /// Parses the `[update]` table of a whole host config; other tables belong to
    /// other components and are ignored.
    pub fn parse(text: &str) -> Result<UpdateConfig, Error> {
        #[derive(Deserialize)]
        struct Whole {
            update: Option<toml::Value>,
        }
        let bad = |e: String| Error::Config(e);
        let whole: Whole = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let cfg: UpdateConfig = match whole.update {
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("[update]: {e}")))?,
            None => UpdateConfig::default(),
        };
        if cfg.interval_minutes == 0 {
            return Err(bad("[update] interval_minutes must be at least 1".into()));
        }
        for w in &cfg.windows {
            Window::parse(w).map_err(|e| bad(format!("[update] windows: {e}")))?;
        }
        if let Some(p) = &cfg.ca_file
            && !p.is_absolute()
        {
            return Err(bad(format!(
                "[update] ca_file {:?} must be an absolute path (a PEM bundle of CA certificates)",
                p.display().to_string()
            )));
        }
        if cfg.reboot == RebootStrategy::Window && cfg.windows.is_empty() {
            return Err(bad(
                "[update] reboot = \"window\" needs at least one entry in windows".into(),
            ));
        }
        Ok(cfg)
    }

    /// The HTTP client for the repository: `url` (empty when none), trusting
    /// `ca_file` instead of the public roots when it is set. Fails naming the
    /// file when it cannot be read or holds no certificate.
    pub fn http(&self, opts: crate::http::HttpOptions) -> Result<crate::http::Http, Error> {
        Ok(crate::http::Http::with_ca_file(
            self.url.as_deref().unwrap_or(""),
            opts,
            self.ca_file.as_deref(),
        )?)
    }

    /// Reads `path`; a missing file means defaults (no repository, idle).
    pub fn load(path: &Path) -> Result<UpdateConfig, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateConfig::default()),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// May the host reboot at `now` (unix seconds, UTC)?
    pub fn may_reboot(&self, now: u64) -> bool {
        match self.reboot {
            RebootStrategy::Immediate => true,
            RebootStrategy::Off => false,
            RebootStrategy::Window => self
                .windows
                .iter()
                .filter_map(|w| Window::parse(w).ok())
                .any(|w| w.contains(now)),
        }
    }
}

/// A maintenance window: weekdays (bit 0 = Monday) and a UTC time range in minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: u8,
    pub start: u32,
    pub end: u32,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl Window {
    pub fn parse(s: &str) -> Result<Window, String> {
        let (days, range) = match s.trim().rsplit_once(' ') {
            Some((d, r)) => (Some(d.trim()), r),
            None => (None, s.trim()),
        };
        let days = match days {
            None | Some("*") => 0x7f,
            Some(list) => {
                let mut bits = 0u8;
                for d in list.split(',') {
                    let i = DAYS
                        .iter()
                        .position(|x| x.eq_ignore_ascii_case(d.trim()))
                        .ok_or_else(|| format!("{s:?}: unknown day {d:?} (use Mon..Sun)"))?;
                    bits |= 1 << i;
                }
                bits
            }
        };
        let (a, b) = range
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: expected HH:MM-HH:MM"))?;
        let hm = |t: &str| -> Result<u32, String> {
            let (h, m) = t
                .split_once(':')
                .ok_or_else(|| format!("{s:?}: {t:?} is not HH:MM"))?;
            let h: u32 = h.parse().map_err(|_| format!("{s:?}: bad hour {h:?}"))?;
            let m: u32 = m.parse().map_err(|_| format!("{s:?}: bad minute {m:?}"))?;
            if h > 23 || m > 59 {
                return Err(format!("{s:?}: {t:?} is out of range"));
            }
            Ok(h * 60 + m)
        };
        let (start, end) = (hm(a)?, hm(b)?);
        if start == end {
            return Err(format!("{s:?}: empty window"));
        }
        Ok(Window { days, start, end })
    }

    /// A window that wraps midnight belongs to the day it starts on.
    pub fn contains(&self, now: u64) -> bool {
        let day = now / 86_400;
        let minute = ((now % 86_400) / 60) as u32;
        // 1970-01-01 was a Thursday (index 3 with Monday = 0).
        let weekday = |d: u64| ((d + 3) % 7) as u8;
        let on = |d: u64| self.days & (1 << weekday(d)) != 0;
        if self.start < self.end {
            on(day) && (self.start..self.end).contains(&minute)
        } else {
            (on(day) && minute >= self.start) || (day > 0 && on(day - 1) && minute < self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_a_table_or_file() {
        let c = UpdateConfig::parse("hostname = \"x\"\n[health]\nunits = []\n").unwrap();
        assert_eq!(c, UpdateConfig::default());
        assert!(c.url.is_none());
        let missing = UpdateConfig::load(Path::new("/nonexistent/config.toml")).unwrap();
        assert_eq!(missing, UpdateConfig::default());
    }

    #[test]
    fn parses_the_update_table() {
        let c = UpdateConfig::parse(
            "[update]\nurl = \"http://10.0.2.2:8080/repo\"\nchannel = \"beta\"\ninterval_minutes = 5\n\
             reboot = \"window\"\nwindows = [\"Sat,Sun 02:00-04:00\", \"23:00-01:00\"]\n",
        )
        .unwrap();
        assert_eq!(c.channel, "beta");
        assert_eq!(c.reboot, RebootStrategy::Window);
        assert_eq!(c.interval_minutes, 5);
        let err = UpdateConfig::parse("[update]\nreboot = \"sometimes\"\n").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
        let err = UpdateConfig::parse("[update]\nurll = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
        let err = UpdateConfig::parse("[update]\nreboot = \"window\"\n").unwrap_err();
        assert!(err.to_string().contains("windows"), "{err}");
    }

    #[test]
    fn ca_file() {
        let c = UpdateConfig::parse(
            "[update]\nurl = \"https://mirror.internal/cairn\"\nca_file = \"/etc/cairn/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/etc/cairn/ca.pem")));
        assert_eq!(UpdateConfig::default().ca_file, None);
        let err = UpdateConfig::parse("[update]\nca_file = \"ca.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        // A missing bundle is refused when the client is made, naming the file.
        let c = UpdateConfig::parse("[update]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap();
        let err = c.http(crate::http::HttpOptions::default()).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn window_table() {
        // 2026-11-21 was a Saturday; 1_795_219_200 is its 00:00 UTC.
        let sat = 1_795_219_200u64;
        let at = |day: u64, h: u64, m: u64| sat + day * 86_400 + h * 3600 + m * 60;
        let rows = [
            ("Sat,Sun 02:00-04:00", at(0, 2, 0), true),
            ("Sat,Sun 02:00-04:00", at(0, 4, 0), false),
            ("Sat,Sun 02:00-04:00", at(1, 3, 59), true),
            ("Sat,Sun 02:00-04:00", at(2, 3, 0), false), // Monday
            ("23:00-01:00", at(0, 23, 30), true),
            ("23:00-01:00", at(1, 0, 30), true),
            ("23:00-01:00", at(1, 1, 0), false),
            ("Fri 23:00-01:00", at(0, 0, 30), true), // Friday's window spills into Saturday
            ("Fri 23:00-01:00", at(1, 0, 30), false),
        ];
        for (w, now, expect) in rows {
            assert_eq!(
                Window::parse(w).unwrap().contains(now),
                expect,
                "{w} at {now}"
            );
        }
        assert!(Window::parse("Mon 25:00-01:00").is_err());
        assert!(Window::parse("Funday 01:00-02:00").is_err());
    }
}
