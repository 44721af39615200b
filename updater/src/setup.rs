//! Building an [`Agent`] from the host config and command-line overrides, shared
//! by `cairn-updated` and `cairnctl`.

use std::path::PathBuf;
use std::sync::Arc;

use disk_layout::Slot;
use release_repo::Root;

use crate::config::{self, UpdateConfig};
use crate::http::HttpOptions;
use crate::state::{self, StateDir};
use crate::{Agent, Error, Host, Target, host};

/// Overrides; `None` means the host default.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub url: Option<String>,
    pub channel: Option<String>,
    pub disk: Option<PathBuf>,
    pub slot_a: Option<PathBuf>,
    pub slot_b: Option<PathBuf>,
    pub esp: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub keys: Option<PathBuf>,
    pub os_release: Option<PathBuf>,
    pub booted_slot: Option<Slot>,
    pub seed: Option<f64>,
    pub machine_id: Option<PathBuf>,
}

/// The agent and the effective settings. With a lock strategy (`reboot =
/// "etcd-lock" | "fleetlock"`) the agent is joined to its fleet group, which
/// needs the node id: an unreadable or uninitialized machine id is an error.
pub fn build(o: &Overrides) -> Result<(Agent, UpdateConfig), Error> {
    let cfg_path = o.config.clone().unwrap_or_else(config::effective_config);
    let mut cfg = config::load(&cfg_path)?;
    if let Some(u) = &o.url {
        cfg.url = Some(u.clone());
    }
    if let Some(c) = &o.channel {
        cfg.channel = c.clone();
    }
    let state_dir = o
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_STATE_DIR));
    // With a test state dir, keep the seed there too unless the config says otherwise.
    let seed_path = if o.state_dir.is_some() && cfg.wave_seed == UpdateConfig::default().wave_seed {
        state_dir.join("wave-seed")
    } else {
        cfg.wave_seed.clone()
    };
    let host = Host::detect(
        &o.os_release.clone().unwrap_or_else(host::os_release),
        &o.keys.clone().unwrap_or_else(config::default_keys),
        o.booted_slot,
    )?;
    let target = match (&o.disk, &o.slot_a, &o.slot_b) {
        (Some(d), Some(a), Some(b)) => Target {
            disk: d.clone(),
            slot_a: a.clone(),
            slot_b: b.clone(),
            esp: esp(o),
        },
        (None, None, None) => {
            let (disk, slot_a, slot_b) = host::detect_disk()?;
            Target {
                disk,
                slot_a,
                slot_b,
                esp: esp(o),
            }
        }
        _ => {
            return Err(Error::Config(
                "--disk, --slot-a and --slot-b go together (the GPT disk and both USR slots)"
                    .into(),
            ));
        }
    };
    let root_path = o.root.clone().unwrap_or_else(|| cfg.root.clone());
    let shipped_root = match std::fs::read(&root_path) {
        Ok(b) => Some(Root::from_json(&b)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", root_path.display()), e)),
    };
    let seed = match o.seed {
        Some(s) => s,
        None => state::wave_seed(&seed_path)?,
    };
    let machine_id = o
        .machine_id
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::fleet::MACHINE_ID));
    let fleet = crate::fleet::Coordinator::new(&cfg, &machine_id, &state_dir)?.map(Arc::new);
    let agent = Agent {
        host,
        target,
        state: StateDir::new(state_dir),
        http: config::http(&cfg, HttpOptions::default())?,
        channel: cfg.channel.clone(),
        shipped_root,
        seed,
        clock: None,
        ignore_wave: false,
        stop_after_chunks: None,
        full_download: !cfg.delta,
        reboot: cfg.reboot,
        fleet,
    };
    Ok((agent, cfg))
}

fn esp(o: &Overrides) -> PathBuf {
    o.esp
        .clone()
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_ESP))
}

/// The path and repository options shared by `cairnctl` and `cairn-updated`
/// (tests and the benchmark point both at fixture files with them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OverrideArgs {
    /// Host config to read the update table from (default /run/cairn/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Repository URL (overrides url in the update table).
    #[arg(long, global = true)]
    pub url: Option<String>,
    #[arg(long, global = true)]
    pub channel: Option<String>,
    /// Disk (or image) holding the GPT; needs --slot-a and --slot-b.
    #[arg(long, global = true)]
    pub disk: Option<PathBuf>,
    #[arg(long, global = true)]
    pub slot_a: Option<PathBuf>,
    #[arg(long, global = true)]
    pub slot_b: Option<PathBuf>,
    /// The mounted ESP (default /efi).
    #[arg(long, global = true)]
    pub esp: Option<PathBuf>,
    /// Agent state (default /var/lib/cairn/updater).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Trusted repository root (default /usr/lib/cairn/update-root.json).
    #[arg(long, global = true)]
    pub root: Option<PathBuf>,
    /// keys.json with the trusted release keys (default /usr/lib/cairn/keys.json).
    #[arg(long, global = true)]
    pub keys: Option<PathBuf>,
    #[arg(long, global = true)]
    pub os_release: Option<PathBuf>,
    /// The booted slot (default: what cairn-init recorded in /run/cairn).
    #[arg(long, global = true, value_parser = parse_slot)]
    pub booted_slot: Option<Slot>,
    /// The machine id the fleet node id is made from (default /etc/machine-id).
    #[arg(long, global = true)]
    pub machine_id: Option<PathBuf>,
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    Slot::from_letter(s).ok_or_else(|| format!("{s:?} is not a slot (a or b)"))
}

impl OverrideArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            url: self.url.clone(),
            channel: self.channel.clone(),
            disk: self.disk.clone(),
            slot_a: self.slot_a.clone(),
            slot_b: self.slot_b.clone(),
            esp: self.esp.clone(),
            state_dir: self.state_dir.clone(),
            root: self.root.clone(),
            keys: self.keys.clone(),
            os_release: self.os_release.clone(),
            booted_slot: self.booted_slot,
            seed: None,
            machine_id: self.machine_id.clone(),
        }
    }

    /// Whether any option points away from the host's own paths: `cairnctl`
    /// then runs the agent itself instead of asking the service.
    pub fn any(&self) -> bool {
        self.config.is_some()
            || self.url.is_some()
            || self.channel.is_some()
            || self.disk.is_some()
            || self.slot_a.is_some()
            || self.slot_b.is_some()
            || self.esp.is_some()
            || self.state_dir.is_some()
            || self.root.is_some()
            || self.keys.is_some()
            || self.os_release.is_some()
            || self.booted_slot.is_some()
            || self.machine_id.is_some()
    }
}
