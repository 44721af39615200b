//! cairnctl: status, check, update, rollback and history of the update agent.
//!
//! Two modes, the same output:
//! * over D-Bus (default when `cairn-updated` is on the system bus; `--bus`
//!   insists on it): the service does the work, `update` follows its Progress
//!   and StateChanged signals;
//! * direct (`--direct`, any path option such as `--disk`, or no service on the
//!   bus): the agent library runs in this process, as tests and the benchmark
//!   use it with fixture paths.
//!
//! Every subcommand has `--json` (the documents of the D-Bus API); `update`
//! shows a progress bar on a terminal and plain lines otherwise.
//!
//! `cairnctl fleet` talks to the group's etcd itself (`reboot = "etcd-lock"`,
//! `[update.etcd]` of the host config): the reboot slots and their holders,
//! a release's rollout outcomes and whether it is halted, `set-max`,
//! `unlock`.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use cairn_updater::dbus::{self, Client};
use cairn_updater::setup::{self, OverrideArgs};
use cairn_updater::{Agent, Event};
use clap::{Parser, Subcommand};
use release_manifest::Version;
use serde_json::Value;

#[derive(Parser)]
#[command(name = "cairnctl", about = "Control Cairn OS updates", version)]
struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Run the agent in this process instead of asking cairn-updated.
    #[arg(long, global = true)]
    direct: bool,
    /// Ask cairn-updated over D-Bus; fail if it is not on the bus.
    #[arg(long, global = true, conflicts_with = "direct")]
    bus: bool,
    #[command(flatten)]
    paths: OverrideArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Booted slot and version, slot attributes, pending update, failed versions.
    Status,
    /// Ask the repository what would be installed.
    Check {
        /// Ignore the rollout wave.
        #[arg(long)]
        now: bool,
    },
    /// Download, verify and write the update; the next boot starts it.
    /// Refused while the booted slot is on trial (not yet marked good).
    Update {
        /// Ignore the rollout wave.
        #[arg(long)]
        now: bool,
        /// Install exactly this version, if the channel offers it and it is
        /// newer than the booted one, even if it failed or was rolled back
        /// here before (that mark is cleared) and whatever its wave.
        #[arg(long, value_name = "V", conflicts_with = "now")]
        version: Option<String>,
        /// Download the whole /usr image even when the release offers a
        /// delta against the active slot.
        #[arg(long)]
        full: bool,
    },
    /// Boot the other slot next, if it holds an OS that booted successfully.
    /// The version left is not installed again until asked for by
    /// `update --version` (or a newer one boots).
    Rollback,
    /// What the agent did, and the versions it will not install again.
    History,
    /// The fleet's reboot semaphore and rollout outcomes in etcd (needs
    /// `reboot = "etcd-lock"` and `[update.etcd]` in the host config).
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
}

#[derive(Subcommand)]
enum FleetCmd {
    /// The group's reboot slots and their holders (with the time left on
    /// their leases), and a release's outcomes: installed, committed, rolled
    /// back, halted.
    Status {
        /// The release to report (default: the newest with outcomes).
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Sets the group's number of reboot slots (0 pauses reboots; holders
    /// keep their slots).
    SetMax {
        #[arg(value_name = "N")]
        max: u32,
    },
    /// Frees a host's reboot slot at once (a host known to be gone), instead
    /// of waiting for its lease to run out.
    Unlock {
        /// The host's node id, as `cairnctl fleet status` lists it.
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// `println!` that ends cairnctl quietly when the reader went away
/// (`cairnctl history | head -1`) instead of panicking. SIGPIPE stays
/// ignored: in --direct mode a dead HTTP peer must be an error, not a kill.
macro_rules! outln {
    ($($arg:tt)*) => {
        write_stdout(format_args!($($arg)*))
    };
}

fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cairnctl: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cairnctl: {e:#}");
        std::process::exit(1);
    }
}

fn print_json(v: &Value) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn parse(doc: &str) -> Result<Value> {
    serde_json::from_str(doc).context("cairn-updated answered with invalid JSON")
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::Fleet { cmd } = &cli.cmd {
        return fleet(&cli, cmd);
    }
    let direct = cli.direct || cli.paths.any();
    if cli.bus && cli.paths.any() {
        bail!("--bus talks to the running service: path options only apply with --direct");
    }
    if !direct {
        match Client::connect() {
            Ok(Some(client)) => return over_bus(&cli, &client),
            Ok(None) if cli.bus => bail!(
                "cairn-updated is not on the bus as {} (systemctl status cairn-updated)",
                dbus::NAME
            ),
            Err(e) if cli.bus => return Err(e).context("connecting to the system bus"),
            // No service: do the work here, as before the service existed.
            _ => {}
        }
    }
    in_process(&cli)
}

fn over_bus(cli: &Cli, client: &Client) -> Result<()> {
    let call = |what: &str, r: zbus::Result<String>| -> Result<Value> {
        parse(&r.with_context(|| format!("{what} over D-Bus"))?)
    };
    match cli.cmd {
        Cmd::Status => show_status(&call("Status", client.status())?, cli.json),
        Cmd::Check { now } => show_check(&call("Check", client.check(now))?, cli.json),
        Cmd::History => show_history(&call("History", client.history())?, cli.json),
        Cmd::Rollback => show_rollback(&call("Rollback", client.rollback())?, cli.json),
        Cmd::Fleet { .. } => unreachable!("handled before choosing the transport"),
        Cmd::Update { full: true, .. } => bail!(
            "update --full runs the agent in this process: add --direct (cairn-updated's D-Bus API has no full-download option)"
        ),
        Cmd::Update {
            now, ref version, ..
        } => {
            let mut ui = ProgressUi::new(cli.json);
            let mut watch = |u: &dbus::Update| match u {
                dbus::Update::Progress(p) if p.chunks > 0 => {
                    ui.chunk(p.chunk - 1, p.chunks, p.bytes_done, p.bytes_total)
                }
                dbus::Update::Progress(p) => ui.phase(&p.phase),
                dbus::Update::State(s, d) if s == "writing" => ui.phase(&format!("installing {d}")),
                dbus::Update::State(..) => {}
            };
            let (state, detail) = match version {
                Some(v) => client.update_version(v, &mut watch),
                None => client.update(now, &mut watch),
            }
            .context("updating over D-Bus")?;
            ui.finish();
            match state.as_str() {
                "ready" => show_applied(&parse(&detail)?, cli.json),
                "up-to-date" => show_check(&parse(&detail)?, cli.json),
                _ => bail!("{detail}"),
            }
        }
    }
}

fn in_process(cli: &Cli) -> Result<()> {
    let (mut agent, cfg) = setup::build(&cli.paths.overrides()).context("setting up the agent")?;
    let needs_repo = matches!(cli.cmd, Cmd::Check { .. } | Cmd::Update { .. });
    if needs_repo && cfg.url.is_none() {
        bail!("no update repository configured: set [update] url in the host config or pass --url");
    }
    // Settle a finished or rolled-back update first, as the service does at start.
    let notes = agent.reconcile().context("checking the last update")?;
    if !cli.json {
        for n in &notes {
            outln!("{n}");
        }
    }
    match cli.cmd {
        Cmd::Status => show_status(&serde_json::to_value(agent.status()?)?, cli.json),
        Cmd::Check { now } => {
            agent.ignore_wave = now;
            let c = agent.check().context("checking for updates")?;
            let mut v = serde_json::to_value(&c)?;
            // What installing it would download: reads the active slot, so
            // only here, not in the service's periodic check.
            if let Some(entry) = &c.decision.chosen {
                let plan = agent
                    .plan_download(entry)
                    .context("planning the download")?;
                v["download"] = serde_json::to_value(&plan)?;
            }
            show_check(&v, cli.json)
        }
        Cmd::Update {
            now,
            ref version,
            full,
        } => {
            agent.ignore_wave = now;
            agent.full_download |= full;
            let version = version
                .as_deref()
                .map(|v| Version::parse(v).with_context(|| format!("--version {v:?}")))
                .transpose()?;
            update(&agent, version.as_ref(), cli.json)
        }
        Cmd::Rollback => {
            let msg = agent.rollback()?;
            show_rollback(&serde_json::json!({ "result": msg }), cli.json)
        }
        Cmd::History => show_history(&serde_json::to_value(agent.history()?)?, cli.json),
        Cmd::Fleet { .. } => unreachable!("handled before choosing the transport"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => (*b as u8).to_string(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn show_status(s: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(s);
    }
    outln!(
        "booted: slot {} version {} ({} {})",
        text(&s["booted_slot"]),
        text(&s["booted_version"]),
        text(&s["board"]),
        text(&s["arch"])
    );
    for slot in ["a", "b"] {
        let a = &s["slots"][slot];
        outln!(
            "slot {slot}: prio {} tries {} ok {}",
            text(&a["priority"]),
            text(&a["tries"]),
            text(&a["successful"])
        );
    }
    match &s["pending"] {
        Value::Null => outln!("pending: none"),
        p => outln!(
            "pending: {} in slot {} ({}, {} chunks verified){}",
            text(&p["version"]),
            text(&p["slot"]),
            text(&p["phase"]),
            text(&p["chunks_verified"]),
            if s["reboot_needed"] == Value::Bool(true) {
                ", reboot needed"
            } else {
                ""
            }
        ),
    }
    if let Some(failed) = s["failed_versions"].as_object() {
        for (v, why) in failed {
            outln!("failed: {v}: {}", text(why));
        }
    }
    show_reboot(&s["reboot"]);
    if s["development_key"] == Value::Bool(true) {
        outln!(
            "WARNING: this image is signed with the DEVELOPMENT key; do not use it in production"
        );
    }
    Ok(())
}

/// `reboot: etcd-lock, group workers: this host holds a reboot slot since …,
/// lease 840 s left (1/2 slots held)`, the node id, unsent outcomes, a halt.
fn show_reboot(r: &Value) {
    let strategy = text(&r["strategy"]);
    if strategy == "-" {
        return;
    }
    let Some(group) = r["group"].as_str() else {
        outln!("reboot: {strategy}");
        return;
    };
    let mut place = format!("group {group}");
    if let Some(url) = r["url"].as_str() {
        place += &format!(" of FleetLock server {url}");
    }
    let slots = match (r["held"].as_u64(), r["max"].as_u64()) {
        (Some(n), Some(max)) => format!(" ({n}/{max} slots held)"),
        _ => String::new(),
    };
    let state = match (&r["holds_slot"], r["error"].as_str()) {
        (_, Some(e)) => format!("cannot tell whether this host holds a reboot slot: {e}"),
        (Value::Bool(true), _) => {
            let mut t = "this host holds a reboot slot".to_string();
            if let Some(since) = r["since"].as_u64().filter(|s| *s > 0) {
                t += &format!(" since {}", cairn_updater::state::format_utc(since));
            }
            if let Some(left) = r["lease_seconds_left"].as_u64() {
                t += &format!(", lease {left} s left");
            }
            t
        }
        (Value::Bool(false), _) => "this host holds no reboot slot".into(),
        _ => "unknown whether this host holds a reboot slot".into(),
    };
    outln!("reboot: {strategy}, {place}: {state}{slots}");
    if let Some(id) = r["node_id"].as_str() {
        outln!("node id: {id}");
    }
    if let Some(n) = r["outcomes_unsent"].as_u64().filter(|n| *n > 0) {
        outln!("rollout outcomes not yet in etcd: {n}");
    }
    if r["halted"].is_object() {
        let h = &r["halted"];
        outln!(
            "halted: {} not installed: {}",
            text(&h["version"]),
            text(&h["detail"])
        );
    }
}

/// `cairnctl fleet …`: against the group's etcd, from the host config.
fn fleet(cli: &Cli, cmd: &FleetCmd) -> Result<()> {
    let path = cli
        .paths
        .config
        .clone()
        .unwrap_or_else(cairn_updater::config::effective_config);
    let cfg = cairn_updater::config::load(&path)?;
    let machine_id = cli
        .paths
        .machine_id
        .clone()
        .unwrap_or_else(|| cairn_updater::fleet::MACHINE_ID.into());
    let admin = cairn_updater::fleet::Admin::new(&cfg, &machine_id)?;
    match cmd {
        FleetCmd::Status { version } => {
            let version = version
                .as_deref()
                .map(|v| Version::parse(v).with_context(|| format!("--version {v:?}")))
                .transpose()?;
            let view = serde_json::to_value(admin.status(version.as_ref())?)?;
            show_fleet(&view, cli.json)
        }
        FleetCmd::SetMax { max } => {
            let previous = admin.set_max(*max)?;
            let doc = serde_json::json!({ "group": admin.group, "previous": previous, "max": max });
            if cli.json {
                return print_json(&doc);
            }
            let was = previous.map_or("unset".to_string(), |p| p.to_string());
            outln!(
                "group {}: reboot slots {was} → {max}{}",
                admin.group,
                if *max == 0 { " (reboots paused)" } else { "" }
            );
            Ok(())
        }
        FleetCmd::Unlock { id } => {
            let released = admin.unlock(id)?;
            let doc = serde_json::json!({ "group": admin.group, "id": id, "released": released });
            if cli.json {
                return print_json(&doc);
            }
            if released {
                outln!("freed the reboot slot of {id} in group {}", admin.group);
            } else {
                outln!("{id} held no reboot slot in group {}", admin.group);
            }
            Ok(())
        }
    }
}

fn show_fleet(v: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(v);
    }
    let holders = v["holders"].as_array().cloned().unwrap_or_default();
    let (group, held) = (text(&v["group"]), holders.len());
    match v["max"].as_u64() {
        Some(0) => outln!("group {group}: {held} of 0 reboot slots held (reboots paused)"),
        Some(max) => outln!("group {group}: {held} of {max} reboot slots held"),
        None => outln!(
            "group {group}: {held} reboot slots held; the number of slots is not set yet (the first host to take one sets it; this host's max_rebooting is {})",
            text(&v["configured_max"])
        ),
    }
    for h in &holders {
        let since = h["since"]
            .as_u64()
            .filter(|s| *s > 0)
            .map_or("-".to_string(), cairn_updater::state::format_utc);
        let lease = h["lease_seconds_left"]
            .as_u64()
            .map_or("lease expired or none".to_string(), |s| {
                format!("lease {s} s left")
            });
        let me = if h["this_host"] == Value::Bool(true) {
            " (this host)"
        } else {
            ""
        };
        outln!("  {}{me}  since {since}, {lease}", text(&h["id"]));
    }
    match &v["release"] {
        Value::Null => outln!("no release has rollout outcomes in this group yet"),
        r => {
            outln!(
                "release {}: {} installed, {} committed, {} rolled back: {} (halts at {} hosts or {} %)",
                text(&r["version"]),
                text(&r["installed"]),
                text(&r["committed"]),
                text(&r["rolled_back"]),
                if r["halted"] == Value::Bool(true) {
                    "HALTED"
                } else {
                    "not halted"
                },
                text(&r["threshold"]["hosts"]),
                text(&r["threshold"]["percent"])
            );
            for b in r["rollbacks"].as_array().into_iter().flatten() {
                outln!(
                    "  rolled back on {}: {}",
                    text(&b["id"]),
                    text(&b["reason"])
                );
            }
        }
    }
    Ok(())
}

fn show_check(c: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(c);
    }
    match &c["chosen"] {
        Value::Null => outln!("no update for {}", text(&c["booted_version"])),
        e => outln!(
            "update available: {} (booted {})",
            text(&e["version"]),
            text(&c["booted_version"])
        ),
    }
    if let Some(skipped) = c["skipped"].as_array() {
        for s in skipped {
            let why = serde_json::from_value::<cairn_updater::plan::Skipped>(s.clone())
                .map_or_else(|_| s.to_string(), |k| k.skip.describe());
            outln!("  skipped {}: {why}", text(&s["version"]));
        }
    }
    let d = &c["download"];
    if !d.is_null() {
        let mb = |k: &str| d[k].as_u64().unwrap_or(0) as f64 / 1e6;
        let full = mb("full_bytes");
        let usr = mb("usr_bytes");
        match d["method"].as_str() {
            Some("delta") => outln!(
                "  download: {usr:.2} MB of /usr by delta ({:.1} % of the full {full:.2} MB; {} blocks copied from the active slot, {} fetched in {} requests)",
                100.0 * usr / full.max(f64::MIN_POSITIVE),
                text(&d["blocks_copied"]),
                text(&d["blocks_fetched"]),
                text(&d["requests"])
            ),
            _ => outln!(
                "  download: {full:.2} MB of /usr, the full image ({})",
                text(&d["reason"])
            ),
        }
    }
    Ok(())
}

fn show_history(h: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(h);
    }
    for e in h["events"].as_array().into_iter().flatten() {
        outln!(
            "{} {:<12} {:<10} slot {} {}",
            text(&e["time"]),
            text(&e["kind"]),
            text(&e["version"]),
            text(&e["slot"]),
            text(&e["detail"])
        );
    }
    if let Some(failed) = h["failed"].as_object() {
        for (v, why) in failed {
            outln!("never again: {v}: {}", text(why));
        }
    }
    Ok(())
}

fn show_rollback(r: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(r);
    }
    outln!("{}", text(&r["result"]));
    Ok(())
}

fn show_applied(out: &Value, json: bool) -> Result<()> {
    if json {
        return print_json(out);
    }
    if out["already_installed"] == Value::Bool(true) {
        outln!(
            "{} is already installed in slot {}: reboot needed",
            text(&out["version"]),
            text(&out["slot"])
        );
    } else {
        outln!(
            "{} written to slot {} and verified ({} MB in {:.1} s, {} chunks resumed): reboot needed",
            text(&out["version"]),
            text(&out["slot"]),
            out["usr_bytes"].as_u64().unwrap_or(0) / 1_000_000,
            out["seconds"].as_f64().unwrap_or(0.0),
            text(&out["chunks_resumed"])
        );
    }
    Ok(())
}

/// A progress bar on a terminal, a line per tenth otherwise, nothing for --json.
struct ProgressUi {
    bar: Option<indicatif::ProgressBar>,
    quiet: bool,
    last_decile: u64,
}

impl ProgressUi {
    fn new(json: bool) -> ProgressUi {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        ProgressUi {
            bar,
            quiet: json,
            last_decile: 0,
        }
    }

    fn phase(&mut self, p: &str) {
        match &self.bar {
            Some(b) => b.set_message(p.to_string()),
            None if !self.quiet => eprintln!("{p}"),
            None => {}
        }
    }

    fn chunk(&mut self, index: u64, total: u64, bytes_done: u64, bytes_total: u64) {
        match &self.bar {
            Some(b) => {
                b.set_length(bytes_total);
                b.set_position(bytes_done);
            }
            None if !self.quiet => {
                let decile = bytes_done * 10 / bytes_total.max(1);
                if decile != self.last_decile || index + 1 == total {
                    self.last_decile = decile;
                    eprintln!(
                        "chunk {}/{total}: {bytes_done}/{bytes_total} bytes",
                        index + 1
                    );
                }
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn update(agent: &Agent, version: Option<&Version>, json: bool) -> Result<()> {
    // One line, before any network access (the error says what to wait for).
    agent.refuse_if_on_trial()?;
    let c = match version {
        Some(v) => agent.check_version(v)?,
        None => agent.check().context("checking for updates")?,
    };
    let Some(entry) = c.decision.chosen.clone() else {
        return show_check(&serde_json::to_value(&c)?, json);
    };
    // The fleet's word (etcd-lock), unless a version was asked for by name.
    if version.is_none() {
        agent.halt_gate(&entry.version)?;
    }
    let mut ui = ProgressUi::new(json);
    let out = agent.apply(&entry, &mut |e| match e {
        Event::Phase(p) => ui.phase(&p),
        Event::Chunk {
            index,
            total,
            bytes_done,
            bytes_total,
        } => ui.chunk(index, total, bytes_done, bytes_total),
    });
    ui.finish();
    let out = out.context("applying the update")?;
    show_applied(&serde_json::to_value(&out)?, json)
}
