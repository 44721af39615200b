//! cairnctl: status, check, update, rollback and history of the update agent.
//!
//! Runs the agent library in-process (the D-Bus API of cairn-updated is not there
//! yet). Every subcommand has `--json`; the path options point it at a disk image,
//! slot files, an ESP directory and a state directory for tests.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cairn_updater::setup::{self, Overrides};
use cairn_updater::{Agent, Event};
use clap::{Parser, Subcommand};
use disk_layout::Slot;

#[derive(Parser)]
#[command(name = "cairnctl", about = "Control Cairn OS updates", version)]
struct Cli {
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Host config to read [update] from (default /run/cairn/config.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Repository URL (overrides [update] url).
    #[arg(long, global = true)]
    url: Option<String>,
    #[arg(long, global = true)]
    channel: Option<String>,
    /// Disk (or image) holding the GPT; needs --slot-a and --slot-b.
    #[arg(long, global = true)]
    disk: Option<PathBuf>,
    #[arg(long, global = true)]
    slot_a: Option<PathBuf>,
    #[arg(long, global = true)]
    slot_b: Option<PathBuf>,
    /// The mounted ESP (default /efi).
    #[arg(long, global = true)]
    esp: Option<PathBuf>,
    /// Agent state (default /var/lib/cairn/updater).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Trusted repository root (default /usr/lib/cairn/update-root.json).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// keys.json with the trusted release keys (default /usr/lib/cairn/keys.json).
    #[arg(long, global = true)]
    keys: Option<PathBuf>,
    #[arg(long, global = true)]
    os_release: Option<PathBuf>,
    /// The booted slot (default: what cairn-init recorded in /run/cairn).
    #[arg(long, global = true, value_parser = parse_slot)]
    booted_slot: Option<Slot>,
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
    Update {
        /// Ignore the rollout wave.
        #[arg(long)]
        now: bool,
    },
    /// Boot the other slot next, if it holds an OS that booted successfully.
    Rollback,
    /// What the agent did, and the versions it will not install again.
    History,
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    Slot::from_letter(s).ok_or_else(|| format!("{s:?} is not a slot (a or b)"))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cairnctl: {e:#}");
        std::process::exit(1);
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let o = Overrides {
        config: cli.config.clone(),
        url: cli.url.clone(),
        channel: cli.channel.clone(),
        disk: cli.disk.clone(),
        slot_a: cli.slot_a.clone(),
        slot_b: cli.slot_b.clone(),
        esp: cli.esp.clone(),
        state_dir: cli.state_dir.clone(),
        root: cli.root.clone(),
        keys: cli.keys.clone(),
        os_release: cli.os_release.clone(),
        booted_slot: cli.booted_slot,
        seed: None,
    };
    let (mut agent, cfg) = setup::build(&o).context("setting up the agent")?;
    let needs_repo = matches!(cli.cmd, Cmd::Check { .. } | Cmd::Update { .. });
    if needs_repo && cfg.url.is_none() {
        bail!("no update repository configured: set [update] url in the host config or pass --url");
    }
    // Settle a finished or rolled-back update first, as the service does at start.
    let notes = agent.reconcile().context("checking the last update")?;
    if !cli.json {
        for n in &notes {
            println!("{n}");
        }
    }
    match cli.cmd {
        Cmd::Status => status(&agent, cli.json),
        Cmd::Check { now } => {
            agent.ignore_wave = now;
            let c = agent.check().context("checking for updates")?;
            if cli.json {
                return print_json(&c);
            }
            match &c.decision.chosen {
                Some(e) => println!(
                    "update available: {} (booted {})",
                    e.version, c.booted_version
                ),
                None => println!("no update for {} {}", agent.host.board, c.booted_version),
            }
            for s in &c.decision.skipped {
                println!(
                    "  skipped {}: {}",
                    s.version,
                    serde_json::to_string(&s.skip)?
                );
            }
            Ok(())
        }
        Cmd::Update { now } => {
            agent.ignore_wave = now;
            update(&agent, cli.json)
        }
        Cmd::Rollback => {
            let msg = agent.rollback()?;
            if cli.json {
                print_json(&serde_json::json!({ "result": msg }))
            } else {
                println!("{msg}");
                Ok(())
            }
        }
        Cmd::History => {
            let h = agent.history()?;
            if cli.json {
                return print_json(&h);
            }
            for e in &h.events {
                println!(
                    "{} {:<12} {:<10} slot {} {}",
                    e.time, e.kind, e.version, e.slot, e.detail
                );
            }
            for (v, why) in &h.failed {
                println!("never again: {v}: {why}");
            }
            Ok(())
        }
    }
}

fn status(agent: &Agent, json: bool) -> Result<()> {
    let s = agent.status()?;
    if json {
        return print_json(&s);
    }
    println!(
        "booted: slot {} version {} ({} {})",
        s.booted_slot, s.booted_version, s.board, s.arch
    );
    println!(
        "slot a: prio {} tries {} ok {}",
        s.slots.a.priority, s.slots.a.tries, s.slots.a.successful as u8
    );
    println!(
        "slot b: prio {} tries {} ok {}",
        s.slots.b.priority, s.slots.b.tries, s.slots.b.successful as u8
    );
    match &s.pending {
        Some(p) => println!(
            "pending: {} in slot {} ({:?}, {} chunks verified){}",
            p.version,
            p.slot,
            p.phase,
            p.chunks_verified,
            if s.reboot_needed {
                ", reboot needed"
            } else {
                ""
            }
        ),
        None => println!("pending: none"),
    }
    for (v, why) in &s.failed_versions {
        println!("failed: {v}: {why}");
    }
    if s.development_key {
        println!(
            "WARNING: this image is signed with the DEVELOPMENT key; do not use it in production"
        );
    }
    Ok(())
}

fn update(agent: &Agent, json: bool) -> Result<()> {
    let c = agent.check().context("checking for updates")?;
    let Some(entry) = c.decision.chosen.clone() else {
        if json {
            return print_json(&c);
        }
        println!("no update for {} {}", agent.host.board, c.booted_version);
        return Ok(());
    };
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b
    });
    let mut last_decile = 0;
    let out = agent.apply(&entry, &mut |e| match (&bar, e) {
        (Some(b), Event::Phase(p)) => b.set_message(p),
        (
            Some(b),
            Event::Chunk {
                bytes_done,
                bytes_total,
                ..
            },
        ) => {
            b.set_length(bytes_total);
            b.set_position(bytes_done);
        }
        (None, Event::Phase(p)) if !json => eprintln!("{p}"),
        (
            None,
            Event::Chunk {
                index,
                total,
                bytes_done,
                bytes_total,
            },
        ) if !json => {
            let decile = bytes_done * 10 / bytes_total.max(1);
            if decile != last_decile || index + 1 == total {
                last_decile = decile;
                eprintln!(
                    "chunk {}/{total}: {bytes_done}/{bytes_total} bytes",
                    index + 1
                );
            }
        }
        _ => {}
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let out = out.context("applying the update")?;
    if json {
        return print_json(&out);
    }
    if out.already_installed {
        println!(
            "{} is already installed in slot {}: reboot needed",
            out.version, out.slot
        );
    } else {
        println!(
            "{} written to slot {} and verified ({} MB in {:.1} s, {} chunks resumed): reboot needed",
            out.version,
            out.slot,
            out.usr_bytes / 1_000_000,
            out.seconds,
            out.chunks_resumed
        );
    }
    Ok(())
}
