//! systemd generator (installed in /usr/lib/systemd/system-generators/):
//! one `cairn-app@<name>.service` per `[[apps]]` entry of the host config,
//! each wanted by cairn-apps.target.
//!
//! Generators run very early (before /oem is mounted and before
//! cairn-config), and again at every daemon-reload. They read the copy of
//! `[[apps]]`/`[containers]` that cairn-config saved on ROOT
//! (/var/lib/cairn/host-config.toml): cairn-config writes it before it asks
//! for a reload, so after the reload the units match the applied config; at
//! boot they match the last valid config. What was generated is recorded in
//! /run/cairn/apps.generated so cairn-config can tell whether a reload is due.
//!
//! `CAIRN_GENERATOR_ROOT` (tests) puts `/` elsewhere.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use app_units::units::{self, GENERATED, SAVED_CONFIG};
use host_config::HostConfig;
use service_log as log;

const USAGE: &str = "usage: cairn-app-generator NORMAL-DIR [EARLY-DIR LATE-DIR]";

/// The saved config; none saved yet (first boot) is no apps.
fn load(root: &Path) -> Result<HostConfig> {
    let path = root.join(SAVED_CONFIG);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostConfig::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    HostConfig::parse(&text, &format!("/{SAVED_CONFIG}")).map_err(Into::into)
}

fn run(root: &Path, out: &Path) -> Result<()> {
    let record_path = root.join(GENERATED);
    if let Some(dir) = record_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let cfg = match load(root) {
        Ok(c) => c,
        Err(e) => {
            // No units rather than guessed ones; the record says so, and
            // cairn-config rewrites the copy and reloads.
            let _ = durable_file::write(
                &record_path,
                b"invalid\n",
                durable_file::Options::new(0o644),
            );
            return Err(e.context("no app units generated"));
        }
    };
    let record = units::generate(&cfg, out)
        .with_context(|| format!("cannot write units into {}", out.display()))?;
    durable_file::write(
        &record_path,
        units::format_record(&record).as_bytes(),
        durable_file::Options::new(0o644),
    )
    .with_context(|| format!("cannot write {}", record_path.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [normal] | [normal, _, _] => PathBuf::from(normal),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let root =
        std::env::var_os("CAIRN_GENERATOR_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    match run(&root, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::err(&format!("cairn-app-generator: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
