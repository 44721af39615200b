//! Applies the host config at boot (`cairn-config` / `cairn-config apply`,
//! run by cairn-config.service before the network; `apply --network`, run by
//! cairn-config-network.service once it is up, when the config comes from
//! the network), shows the host's boot state
//! (`cairn-config status [--json]`) and validates a file
//! (`cairn-config check FILE`).
//!
//! A bad config never fails the boot: the error is logged, written to
//! /run/cairn/config-error and nothing of it is applied (what the last valid
//! config set stays, apps included); the unit still succeeds so the host
//! comes up and can be reached to fix it. The same holds for a config source
//! that is present but broken (a metadata service that does not answer, a
//! bad signature): see `host_config::source` for the order of the sources
//! and the signature rule. A bad `[network]` section alone is set aside by
//! the parser: the rest applies, and the network falls back to the image's
//! default (DHCP on the wired interfaces), removing the networkd files an
//! earlier config made.

use std::path::Path;
use std::process::ExitCode;

use app_units::units;
use disk_layout::run as paths;
use host_config::HostConfig;
use host_config::source::{self, Platform, Sources};
use service_log as log;

mod apply;
mod converge;
mod convert;
mod managed;
mod render;
mod status;

use apply::System;
use status::Status;

const USAGE: &str = "usage: cairn-config [apply [--network]] | status [--json] | check FILE | convert [--out FILE] IGNITION.json|- | ensure-image [--insecure] IMAGE";

fn write_run(rel: &str, text: &str, mode: u32) -> Result<(), durable_file::Error> {
    let p = Path::new("/").join(rel);
    // /run is a tmpfs: atomic for readers, nothing to make durable.
    let opts = durable_file::Options {
        sync: false,
        ..durable_file::Options::new(mode)
    };
    durable_file::write(&p, text.as_bytes(), opts)
}

/// Which run of the boot this is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// cairn-config.service: before the network, so logins, SSH and the
    /// host name see the config. Hands over to the network pass when a
    /// source that talks to the network would be asked.
    Early,
    /// cairn-config-network.service (`apply --network`): once the network
    /// is up, only on boots the early pass handed over.
    Network,
}

fn apply(pass: Pass) -> ExitCode {
    let root = Path::new("/");
    if let Err(e) = std::fs::create_dir_all(root.join(paths::DIR)) {
        log::err(&format!("cairn-config: cannot create /run/cairn: {e}"));
    }
    // A re-run must not show the previous run's error.
    let _ = std::fs::remove_file(root.join(paths::CONFIG_ERROR));
    let sources = Sources::system();
    if pass == Pass::Early
        && let Some(why) = sources.network_reason()
    {
        return hand_over(&why);
    }
    let loaded = sources.load();
    for skipped in &loaded.skipped {
        log::info(&format!("cairn-config: source {skipped}"));
    }
    let mut errors = Vec::new();
    let (cfg, valid) = match loaded.config {
        Ok(c) => {
            log::info(&format!(
                "cairn-config: using the host config from {} (signature: {})",
                loaded.source,
                loaded.signature.to_line()
            ));
            (c, true)
        }
        Err(e) => {
            log::err(&format!(
                "cairn-config: {e}; nothing of it is applied (what the last valid config set stays)"
            ));
            errors.push(e.to_string());
            (HostConfig::default(), false)
        }
    };
    for (rel, text, mode) in [
        (paths::CONFIG_SOURCE, format!("{}\n", loaded.source), 0o644),
        (
            source::RUN_CONFIG_SIGNATURE,
            format!("{}\n", loaded.signature.to_line()),
            0o644,
        ),
        // It holds password hashes: root only.
        (paths::EFFECTIVE_CONFIG, cfg.to_toml(), 0o600),
    ] {
        if let Err(e) = write_run(rel, &text, mode) {
            log::err(&format!("cairn-config: cannot write /{rel}: {e}"));
        }
    }
    let sys = System {
        root: root.to_path_buf(),
        live: true,
    };
    if let Some(e) = &cfg.network_error.0 {
        let line = format!(
            "{e}; [network] not applied: the network falls back to the image default (DHCP on the wired interfaces)"
        );
        log::err(&format!("cairn-config: {line}"));
        errors.push(line);
    }
    let (mut done, mut apply_errors) = if valid {
        sys.apply(&cfg)
    } else {
        (Vec::new(), Vec::new())
    };
    // After the trust policy: the app units pull with it.
    match sys.apps(valid.then_some(&cfg)) {
        Ok(d) => done.extend(d),
        Err(e) => apply_errors.push(format!("apps: {e:#}")),
    }
    // Azure counts a VM as provisioned once it reports ready, whatever the
    // config's source (or error): after the config is applied, so a login
    // with it works by then.
    if loaded.platform == Some(Platform::Azure) {
        match sources.report_ready_to_azure() {
            Ok(d) => done.push(d),
            Err(e) => apply_errors.push(format!("Azure ready report: {e}")),
        }
    }
    for d in &done {
        log::info(&format!("cairn-config: {d}"));
    }
    for e in &apply_errors {
        log::err(&format!("cairn-config: {e}"));
    }
    errors.extend(apply_errors);
    if errors.is_empty() {
        if done.is_empty() {
            log::info("cairn-config: host config already applied, nothing changed");
        }
    } else {
        // One line, whatever the errors contained.
        let line = errors.join("; ").replace(['\n', '\r'], " ");
        if let Err(e) = write_run(paths::CONFIG_ERROR, &format!("{line}\n"), 0o644) {
            log::err(&format!(
                "cairn-config: cannot write /{}: {e}",
                paths::CONFIG_ERROR
            ));
        }
    }
    ExitCode::SUCCESS
}

/// The early pass leaves the config to cairn-config-network.service: the
/// source is asked once the network is up. Until then what the last valid
/// config set stays (the first boot: the image's defaults).
fn hand_over(why: &str) -> ExitCode {
    let line = format!(
        "the host config comes from the network on this boot ({why}): cairn-config-network.service applies it once the network is up"
    );
    log::info(&format!("cairn-config: {line}"));
    for (rel, text) in [
        (paths::CONFIG_NEEDS_NETWORK, format!("{why}\n")),
        (
            paths::CONFIG_SOURCE,
            format!("waiting for the network ({why})\n"),
        ),
    ] {
        if let Err(e) = write_run(rel, &text, 0o644) {
            log::err(&format!("cairn-config: cannot write /{rel}: {e}"));
        }
    }
    ExitCode::SUCCESS
}

/// ExecStartPre of an app unit: the image is in cairn-run's store, or is
/// imported from the OCI layout the builder preloaded into /usr, or pulled.
/// Pulling or importing is left to cairn-run, so trust is checked where it
/// always is.
fn ensure_image(image: &str, insecure: bool) -> ExitCode {
    match units::ensure_image(
        Path::new("/"),
        Path::new(units::STORE_DIR),
        units::CAIRN_RUN,
        image,
        insecure,
    ) {
        Ok(units::Ensured::Present) => {
            log::info(&format!("cairn-config: image {image} is in the store"));
            ExitCode::SUCCESS
        }
        Ok(units::Ensured::Fetched(argv)) => {
            log::info(&format!("cairn-config: image {image}: {}", argv.join(" ")));
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::err(&format!("cairn-config: image {image}: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn check(file: &str) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Strict: a [network] error the boot would set aside is refused here.
    match HostConfig::parse_strict(&text, file) {
        Ok(c) => {
            print!("{}", c.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] | ["apply"] => apply(Pass::Early),
        ["apply", "--network"] => apply(Pass::Network),
        ["status"] => {
            print!("{}", Status::gather(Path::new("/")).to_text());
            ExitCode::SUCCESS
        }
        ["status", "--json"] => {
            println!("{:#}", Status::gather(Path::new("/")).to_json());
            ExitCode::SUCCESS
        }
        ["check", file] => check(file),
        ["convert", rest @ ..] => convert::main(rest),
        ["ensure-image", image] => ensure_image(image, false),
        ["ensure-image", "--insecure", image] => ensure_image(image, true),
        ["-h" | "--help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
