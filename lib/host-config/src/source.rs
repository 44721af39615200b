//! Where the host config comes from at boot.
//!
//! # Order
//! cairn-config tries these sources in this order; the first one found wins:
//!
//! | name | where | found when |
//! |---|---|---|
//! | `fw_cfg` | QEMU fw_cfg `opt/cairn/config` | the fw_cfg blob exists |
//! | `url` | `cairn.config.url=<http(s) URL>` on the kernel command line | the key is on the command line |
//! | `ec2` | EC2 IMDSv2: `PUT /latest/api/token`, then `GET /latest/user-data` | DMI says EC2 and user-data is set (404: none) |
//! | `gce` | `GET /computeMetadata/v1/instance/attributes/user-data` (`Metadata-Flavor: Google`) | DMI says Google and the attribute is set (404: none) |
//! | `openstack` | the config drive (filesystem labelled `config-2`, `openstack/latest/user_data`), else the metadata service `GET /openstack/latest/user_data` | a `config-2` filesystem exists (any platform: Ironic bare metal has one), or DMI says OpenStack and user data is set (404: none) |
//! | `azure` | IMDS `GET /metadata/instance/compute/userData` (`Metadata: true`, base64) | DMI says Azure and userData is not empty |
//! | `oem` | `/oem/config.toml` on the OEM partition | the file exists |
//! | — | the defaults | nothing above was found |
//!
//! A board narrows or reorders the list: cairn-build writes the board's
//! `[config] sources` to `/usr/lib/cairn/config-sources`
//! ([`board_files::CONFIG_SOURCES`], one name a line); without that file
//! every source is tried in the order above.
//!
//! **A source that is present but broken is an error**, never skipped: an
//! unreadable fw_cfg blob, a URL that does not answer 200, a cloud whose
//! metadata service does not answer, user data that is not a valid config,
//! a bad signature. The error goes to /run/cairn/config-error and
//! `cairn-config status`, and the defaults apply, as for any bad config.
//!
//! # Detection
//! A cloud's metadata service is only asked when DMI
//! (`/sys/class/dmi/id`) says the machine is that cloud's ([`Platform`]), so
//! a bare-metal host never waits on 169.254.169.254. Once asked, it has
//! [`Timing::cloud_budget`] (10 s: connect timeout 1 s, each request 2 s,
//! retries with backoff) to answer before that is an error. The command-line
//! URL has [`Timing::url_budget`] (30 s).
//!
//! # Signatures
//! A config may be signed with an ed25519 key (`cairn-ed25519-public`
//! lines, as release keys): either a detached signature beside it
//! (`/oem/config.toml.sig`, `<url>.sig`, fw_cfg `opt/cairn/config.sig`), or
//! embedded as the config's last line, `# cairn-signature: <signature list>`
//! (the only way for cloud user data; a TOML comment, so the config parses
//! either way). The signature is the release signature format (a JSON list
//! of `{"keyid", "sig"}`, on one line when embedded) over the exact bytes of
//! the config (without the embedded line). See [`signature`].
//!
//! A board requires signed configs by shipping keys in
//! `/usr/lib/cairn/config-keys` ([`board_files::CONFIG_KEYS`]): then a
//! config without a valid signature by one of them is an error and is not
//! applied. Without that file a signature is not checked (there is nothing
//! to check it against) and an unsigned config is applied, over http as over
//! https.
//!
//! # Azure
//! On Azure (by DMI) cairn-config also reports the VM "Ready" to the
//! WireServer after applying the config, whatever its source, as
//! cloud-init and Afterburn do ([`Sources::report_ready_to_azure`]).
//!
//! # Network
//! The URL and the metadata services need an address and a route:
//! [`Sources::needs_network`] tells, from local facts only, whether this
//! boot asks one of them (or must report to Azure).
//!
//! The sources that talk to the network are behind the cargo feature
//! `fetch` (`tls` adds https); without it a present network source is an
//! error ("built without fetch").

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use disk_layout::board_files;
use disk_layout::host_config::{FW_CFG_DIR, FW_CFG_NAME, OEM_MOUNT, OEM_PATH};

use crate::config::{ConfigError, HostConfig};

mod cmdline;
mod configdrive;
mod dmi;
pub mod signature;

#[cfg(feature = "fetch")]
mod cloud;
#[cfg(feature = "fetch")]
mod http;
#[cfg(all(test, feature = "fetch"))]
mod tests_fetch;
#[cfg(all(test, feature = "fetch"))]
mod testserver;

pub use dmi::{Dmi, Platform};
pub use signature::SignatureState;

/// The contracts with the kernel command line, fw_cfg and /run, owned by
/// disk-layout.
pub use disk_layout::cmdline::CONFIG_URL as CMDLINE_URL;
pub use disk_layout::host_config::FW_CFG_SIG_NAME;
pub use disk_layout::run::CONFIG_SIGNATURE as RUN_CONFIG_SIGNATURE;
/// A config, user data or signature bigger than this is refused (clouds cap
/// user data at 16–256 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A config source, by its name in the board's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    FwCfg,
    Url,
    Ec2,
    Gce,
    OpenStack,
    Azure,
    Oem,
}

impl Kind {
    /// The order when the image does not ship a list.
    pub const DEFAULT_ORDER: [Kind; 7] = [
        Kind::FwCfg,
        Kind::Url,
        Kind::Ec2,
        Kind::Gce,
        Kind::OpenStack,
        Kind::Azure,
        Kind::Oem,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Kind::FwCfg => "fw_cfg",
            Kind::Url => "url",
            Kind::Ec2 => "ec2",
            Kind::Gce => "gce",
            Kind::OpenStack => "openstack",
            Kind::Azure => "azure",
            Kind::Oem => "oem",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::DEFAULT_ORDER.into_iter().find(|k| k.name() == name)
    }
}

/// Parses the board's source list ([`board_files::CONFIG_SOURCES`]): one
/// name a line, blank lines and `#` comments ignored; an unknown or repeated
/// name is an error. An empty list is allowed (the defaults always apply).
pub fn parse_order(text: &str) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let kind = Kind::parse(line).ok_or_else(|| {
            let known: Vec<&str> = Kind::DEFAULT_ORDER.iter().map(|k| k.name()).collect();
            format!("unknown source {line:?} (known: {})", known.join(", "))
        })?;
        if out.contains(&kind) {
            return Err(format!("source {line:?} is listed twice"));
        }
        out.push(kind);
    }
    Ok(out)
}

/// Base URLs of the metadata services (no trailing slash). Tests point them
/// at servers on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub ec2: String,
    pub gce: String,
    pub openstack: String,
    pub azure_imds: String,
    /// Azure's WireServer, where the provisioning "ready" report goes.
    pub azure_wireserver: String,
}

impl Endpoints {
    /// The real addresses. GCE's `metadata.google.internal` is reached by
    /// its address: no name resolution is needed this early.
    pub fn production() -> Endpoints {
        let link_local = "http://169.254.169.254".to_string();
        Endpoints {
            ec2: link_local.clone(),
            gce: link_local.clone(),
            openstack: link_local.clone(),
            azure_imds: link_local,
            azure_wireserver: "http://168.63.129.16".into(),
        }
    }
}

/// How long a fetch may take. A source that is not there must not hold the
/// boot: clouds are only asked when DMI names them, and then briefly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// TCP connect to a link-local metadata service.
    pub link_local_connect: Duration,
    /// One request to it, end to end (connect, headers, body).
    pub link_local_request: Duration,
    /// Everything one cloud may take: token, user data, retries.
    pub cloud_budget: Duration,
    /// TCP connect to the command-line URL's server.
    pub url_connect: Duration,
    /// One request to it, end to end.
    pub url_request: Duration,
    /// Everything the URL (and its `.sig`) may take, retries included.
    pub url_budget: Duration,
    /// The pause before the first retry; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Timing {
    pub fn production() -> Timing {
        Timing {
            link_local_connect: Duration::from_secs(1),
            link_local_request: Duration::from_secs(2),
            cloud_budget: Duration::from_secs(10),
            url_connect: Duration::from_secs(5),
            url_request: Duration::from_secs(20),
            url_budget: Duration::from_secs(30),
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Programs (argv prefixes) run to mount an OpenStack config drive that is
/// not mounted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tools {
    /// Called as `mount -o ro,nodev,nosuid,noexec -t iso9660,vfat DEVICE DIR`.
    pub mount: Vec<OsString>,
    /// Called as `umount DIR`.
    pub umount: Vec<OsString>,
}

impl Tools {
    pub fn system() -> Tools {
        Tools {
            mount: vec!["mount".into()],
            umount: vec!["umount".into()],
        }
    }
}

/// Everything the search reads: files under `root` (/proc/cmdline, DMI,
/// /dev/disk/by-label, the OEM partition, the board files in /usr), the
/// metadata services at `endpoints`, within `timing`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    pub root: PathBuf,
    pub endpoints: Endpoints,
    pub timing: Timing,
    pub tools: Tools,
}

/// A config found, before its signature is checked and it is parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Where it came from, for messages and /run/cairn/config-source.
    pub origin: String,
    pub bytes: Vec<u8>,
    /// The detached signature beside it, if the source has a "beside" and
    /// one is there.
    pub detached_sig: Option<Vec<u8>>,
}

/// What one source gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Not there; why (for the log).
    Absent(String),
    Found(Fetched),
    /// There but broken: the search stops with this error.
    Broken {
        origin: String,
        message: String,
    },
}

impl Probe {
    pub(crate) fn broken(origin: impl Into<String>, message: impl Into<String>) -> Probe {
        Probe::Broken {
            origin: origin.into(),
            message: message.into(),
        }
    }
}

/// The outcome of the search.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// Where the config came from (`fw_cfg opt/cairn/config`, `ec2 user-data`,
    /// `/oem/config.toml` …), or `none`: /run/cairn/config-source.
    pub source: String,
    /// Which source that was.
    pub kind: Option<Kind>,
    /// The cloud DMI names, if any (cairn-config reports ready to Azure).
    pub platform: Option<Platform>,
    pub signature: SignatureState,
    /// The config to apply, or why none is (then the defaults apply).
    pub config: Result<HostConfig, ConfigError>,
    /// One line for each source tried before and not found, and why.
    pub skipped: Vec<String>,
}

fn err(origin: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        origin: origin.to_string(),
        key: String::new(),
        message: message.into(),
    }
}

/// Reads a whole file of at most [`MAX_CONFIG_BYTES`].
pub(crate) fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    Ok(buf)
}

/// `Ok(None)` when the file does not exist.
fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match read_capped(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Sources {
    /// The running host: root `/`, the real metadata services.
    pub fn system() -> Sources {
        Sources::at(Path::new("/"))
    }

    /// A scratch root with the real endpoints and timing (tests replace them).
    pub fn at(root: &Path) -> Sources {
        Sources {
            root: root.to_path_buf(),
            endpoints: Endpoints::production(),
            timing: Timing::production(),
            tools: Tools::system(),
        }
    }

    /// The sources to try, in order: the board's list, else the default.
    pub fn order(&self) -> Result<Vec<Kind>, String> {
        let path = self.root.join(board_files::CONFIG_SOURCES);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                parse_order(&text).map_err(|e| format!("/{}: {e}", board_files::CONFIG_SOURCES))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Kind::DEFAULT_ORDER.to_vec()),
            Err(e) => Err(format!("cannot read /{}: {e}", board_files::CONFIG_SOURCES)),
        }
    }

    /// The cloud the DMI data names, if any.
    pub fn platform(&self) -> Option<Platform> {
        Dmi::read(&self.root).platform()
    }

    /// Whether this boot needs the network for its config (a source that
    /// talks to the network would be asked before a local one is found), or
    /// for Azure's ready report. Cheap and local (files and DMI only): for
    /// deciding whether cairn-config must wait for the network.
    pub fn needs_network(&self) -> bool {
        self.network_reason().is_some()
    }

    /// [`Sources::needs_network`], saying which source needs it.
    pub fn network_reason(&self) -> Option<String> {
        let platform = self.platform();
        if platform == Some(Platform::Azure) {
            return Some("Azure (DMI): its metadata service and ready report".into());
        }
        let order = self.order().ok()?;
        let on = |p: Platform| {
            (platform == Some(p)).then(|| format!("{} (DMI): its metadata service", p.name()))
        };
        for kind in order {
            let reason = match kind {
                Kind::FwCfg | Kind::Oem => match self.probe(kind, platform) {
                    Probe::Absent(_) => continue,
                    _ => return None,
                },
                Kind::Url => match cmdline::config_url(&self.root) {
                    Ok(None) => None,
                    Ok(Some(url)) => Some(format!("{} = {url}", disk_layout::cmdline::CONFIG_URL)),
                    Err(_) => Some(format!(
                        "{} on the kernel command line",
                        disk_layout::cmdline::CONFIG_URL
                    )),
                },
                Kind::Ec2 => on(Platform::Ec2),
                Kind::Gce => on(Platform::Gce),
                Kind::Azure => None,
                Kind::OpenStack => {
                    let drive = configdrive::LABELS.iter().any(|l| {
                        self.root
                            .join(configdrive::BY_LABEL)
                            .join(l)
                            .symlink_metadata()
                            .is_ok()
                    });
                    if drive { None } else { on(Platform::OpenStack) }
                }
            };
            if reason.is_some() {
                return reason;
            }
        }
        None
    }

    /// Finds the config, checks its signature and parses it.
    pub fn load(&self) -> Loaded {
        let platform = self.platform();
        let mut loaded = Loaded {
            source: "none".into(),
            kind: None,
            platform,
            signature: SignatureState::NoConfig,
            config: Ok(HostConfig::default()),
            skipped: Vec::new(),
        };
        let order = match self.order() {
            Ok(o) => o,
            Err(e) => {
                loaded.source = "board source list".into();
                loaded.config = Err(err("board source list", e));
                return loaded;
            }
        };
        // A broken key file is the image's fault: nothing can be trusted or
        // checked, so it is an error whether or not a config is found.
        let keys = signature::read_keys(&self.root);
        let mut found = None;
        for kind in order {
            match self.probe(kind, platform) {
                Probe::Absent(why) => loaded.skipped.push(format!("{}: {why}", kind.name())),
                Probe::Found(f) => {
                    found = Some((kind, f));
                    break;
                }
                Probe::Broken { origin, message } => {
                    loaded.kind = Some(kind);
                    loaded.config = Err(err(&origin, message));
                    loaded.source = origin;
                    return loaded;
                }
            }
        }
        let keys = match keys {
            Ok(k) => k,
            Err(e) => {
                let origin = found
                    .as_ref()
                    .map_or("none".to_string(), |(_, f)| f.origin.clone());
                loaded.kind = found.map(|(k, _)| k);
                loaded.config = Err(err(&origin, e));
                loaded.source = origin;
                return loaded;
            }
        };
        let Some((kind, fetched)) = found else {
            return loaded;
        };
        loaded.kind = Some(kind);
        loaded.source = fetched.origin.clone();
        let checked = signature::check(&fetched, keys.as_deref());
        loaded.signature = checked.state;
        loaded.config = match checked.config {
            Err(message) => Err(err(&fetched.origin, message)),
            Ok(bytes) => match String::from_utf8(bytes) {
                Err(_) => Err(err(&fetched.origin, "not UTF-8")),
                Ok(text) => HostConfig::parse(&text, &fetched.origin),
            },
        };
        loaded
    }

    /// Asks one source.
    pub(crate) fn probe(&self, kind: Kind, platform: Option<Platform>) -> Probe {
        match kind {
            Kind::FwCfg => self.fw_cfg(),
            Kind::Oem => self.oem(),
            Kind::Url => match cmdline::config_url(&self.root) {
                Ok(None) => Probe::Absent(format!("no {CMDLINE_URL}= on the kernel command line")),
                Ok(Some(url)) => self.url(&url),
                Err(e) => Probe::broken(CMDLINE_URL, e),
            },
            Kind::OpenStack => match configdrive::probe(self) {
                Some(p) => p,
                None if platform == Some(Platform::OpenStack) => self.cloud(Platform::OpenStack),
                None => Probe::Absent(format!(
                    "no filesystem labelled config-2, and DMI does not say OpenStack ({})",
                    Dmi::read(&self.root).summary()
                )),
            },
            Kind::Ec2 | Kind::Gce | Kind::Azure => {
                let wanted = match kind {
                    Kind::Ec2 => Platform::Ec2,
                    Kind::Gce => Platform::Gce,
                    _ => Platform::Azure,
                };
                if platform == Some(wanted) {
                    self.cloud(wanted)
                } else {
                    Probe::Absent(format!(
                        "DMI does not say {} ({})",
                        wanted.name(),
                        Dmi::read(&self.root).summary()
                    ))
                }
            }
        }
    }

    fn fw_cfg(&self) -> Probe {
        let dir = self.root.join(FW_CFG_DIR);
        let origin = format!("fw_cfg {FW_CFG_NAME}");
        let path = dir.join(FW_CFG_NAME).join("raw");
        let bytes = match read_optional(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return Probe::Absent(format!("no fw_cfg {FW_CFG_NAME}")),
            Err(e) => return Probe::broken(origin, format!("cannot read {}: {e}", path.display())),
        };
        let sig_path = dir.join(FW_CFG_SIG_NAME).join("raw");
        match read_optional(&sig_path) {
            Ok(detached_sig) => Probe::Found(Fetched {
                origin,
                bytes,
                detached_sig,
            }),
            Err(e) => Probe::broken(origin, format!("cannot read {}: {e}", sig_path.display())),
        }
    }

    fn oem(&self) -> Probe {
        let origin = format!("/{OEM_MOUNT}/{OEM_PATH}");
        let path = self.root.join(OEM_MOUNT).join(OEM_PATH);
        let bytes = match read_optional(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return Probe::Absent(format!("no {origin}")),
            Err(e) => return Probe::broken(origin, format!("cannot read it: {e}")),
        };
        let sig = format!("{origin}{}", signature::DETACHED_SUFFIX);
        let sig_path = self
            .root
            .join(OEM_MOUNT)
            .join(format!("{OEM_PATH}{}", signature::DETACHED_SUFFIX));
        match read_optional(&sig_path) {
            Ok(detached_sig) => Probe::Found(Fetched {
                origin,
                bytes,
                detached_sig,
            }),
            Err(e) => Probe::broken(origin, format!("cannot read {sig}: {e}")),
        }
    }

    #[cfg(feature = "fetch")]
    fn url(&self, url: &str) -> Probe {
        cloud::url(self, url)
    }

    #[cfg(not(feature = "fetch"))]
    fn url(&self, url: &str) -> Probe {
        Probe::broken(
            format!("{CMDLINE_URL} {url}"),
            "this cairn-config was built without the `fetch` feature",
        )
    }

    /// A cloud's metadata service (DMI named that cloud).
    #[cfg(feature = "fetch")]
    fn cloud(&self, platform: Platform) -> Probe {
        match platform {
            Platform::Ec2 => cloud::ec2(self),
            Platform::Gce => cloud::gce(self),
            Platform::Azure => cloud::azure(self),
            Platform::OpenStack => cloud::openstack(self),
        }
    }

    #[cfg(not(feature = "fetch"))]
    fn cloud(&self, platform: Platform) -> Probe {
        Probe::broken(
            format!("{} metadata", platform.name()),
            "DMI names this cloud, but this cairn-config was built without the `fetch` feature",
        )
    }

    /// Tells Azure's WireServer that the VM is provisioned ("Ready"), as
    /// cloud-init and Afterburn do; without it Azure considers provisioning
    /// failed. Returns what was reported.
    #[cfg(feature = "fetch")]
    pub fn report_ready_to_azure(&self) -> Result<String, String> {
        cloud::azure_report_ready(self)
    }
}

#[cfg(test)]
mod tests;
