//! Applies the host config at boot (`cairn-config` / `cairn-config apply`,
//! run by cairn-config.service), shows the host's boot state
//! (`cairn-config status [--json]`) and validates a file
//! (`cairn-config check FILE`).
//!
//! A bad config never fails the boot: the error is logged, written to
//! /run/cairn/config-error and the defaults apply; the unit still succeeds
//! so the host comes up and can be reached to fix it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use cairn_host::apply::System;
use cairn_host::config::HostConfig;
use cairn_host::source::Source;
use cairn_host::status::Status;
use cairn_host::{log, paths, units};

const USAGE: &str =
    "usage: cairn-config [apply] | status [--json] | check FILE | ensure-image [--insecure] IMAGE";

fn write_run(rel: &str, text: &str, mode: u32) -> std::io::Result<()> {
    let p = Path::new("/").join(rel);
    let _ = std::fs::remove_file(&p);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&p)?;
    f.write_all(text.as_bytes())
}

fn apply() -> ExitCode {
    let root = Path::new("/");
    if let Err(e) = std::fs::create_dir_all(root.join("run/cairn")) {
        log::err(&format!("cairn-config: cannot create /run/cairn: {e}"));
    }
    // A re-run must not show the previous run's error.
    let _ = std::fs::remove_file(root.join(paths::CONFIG_ERROR));
    let source = Source::find(root);
    let mut errors = Vec::new();
    let (cfg, valid) = match source.load() {
        Ok(c) => {
            log::info(&format!(
                "cairn-config: using the host config from {}",
                source.describe()
            ));
            (c, true)
        }
        Err(e) => {
            log::err(&format!(
                "cairn-config: {e}; using the defaults (apps: the last valid [[apps]] stay)"
            ));
            errors.push(e.to_string());
            (HostConfig::default(), false)
        }
    };
    for (rel, text, mode) in [
        (
            paths::CONFIG_SOURCE,
            format!("{}\n", source.describe()),
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
    let (mut done, mut apply_errors) = sys.apply(&cfg);
    // After the trust policy: the app units pull with it.
    match sys.apps(valid.then_some(&cfg)) {
        Ok(d) => done.extend(d),
        Err(e) => apply_errors.push(format!("apps: {e:#}")),
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
    match HostConfig::parse(&text, file) {
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
        [] | ["apply"] => apply(),
        ["status"] => {
            print!("{}", Status::gather(Path::new("/")).to_text());
            ExitCode::SUCCESS
        }
        ["status", "--json"] => {
            println!("{:#}", Status::gather(Path::new("/")).to_json());
            ExitCode::SUCCESS
        }
        ["check", file] => check(file),
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
