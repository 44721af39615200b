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
    },
    /// Boot the other slot next, if it holds an OS that booted successfully.
    /// The version left is not installed again until asked for by
    /// `update --version` (or a newer one boots).
    Rollback,
    /// What the agent did, and the versions it will not install again.
    History,
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
        Cmd::Update { now, ref version } => {
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
            show_check(&serde_json::to_value(&c)?, cli.json)
        }
        Cmd::Update { now, ref version } => {
            agent.ignore_wave = now;
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
    if s["development_key"] == Value::Bool(true) {
        outln!(
            "WARNING: this image is signed with the DEVELOPMENT key; do not use it in production"
        );
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
            outln!("  skipped {}: {}", text(&s["version"]), s["skip"]);
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
