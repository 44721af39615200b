//! cairn-run: Cairn's daemon-less container runtime.
//!
//! This process is single-threaded (no async runtime) until the container
//! is created: libcontainer clones from it and runs Rust code in the
//! children. Only then may the port forwarder start threads (lib.rs,
//! `AfterCreate`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cairn_run::cli::{Cli, Command};
use cairn_run::runtime::{CreateOptions, Libcontainer, OciRuntime, RuntimeError};
use cairn_run::{app, images, report, run_bundle};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            report(&e);
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<RuntimeError>())
                .map_or(1, RuntimeError::exit_code);
            ExitCode::from(code)
        }
    }
}

fn runtime(cli: &Cli) -> Result<Libcontainer> {
    Libcontainer::new(&cli.root)
        .with_context(|| format!("cannot open runtime state root {}", cli.root.display()))
}

fn dispatch(cli: Cli) -> Result<i32> {
    let rt = || runtime(&cli);
    match &cli.command {
        Command::Create(c) => {
            rt()?.create(&CreateOptions {
                id: c.id.clone(),
                bundle: c.bundle.clone(),
                pid_file: c.pid_file.clone(),
                console_socket: c.console_socket.clone(),
                systemd_cgroup: cli.systemd_cgroup,
                no_pivot: c.no_pivot,
                preserve_fds: c.preserve_fds,
            })?;
            Ok(0)
        }
        Command::Start(c) => rt()?.start(&c.id).map(|_| 0).map_err(Into::into),
        Command::State(c) => {
            let st = rt()?.state(&c.id)?;
            println!("{}", serde_json::to_string_pretty(&st)?);
            Ok(0)
        }
        Command::Kill(c) => rt()?
            .kill(&c.id, &c.signal, c.all)
            .map(|_| 0)
            .map_err(Into::into),
        Command::Delete(c) => rt()?.delete(&c.id, c.force).map(|_| 0).map_err(Into::into),
        Command::Run(r) => match (&r.bundle, &r.name) {
            (Some(bundle), _) => {
                let opts = CreateOptions {
                    id: r.target.clone(),
                    bundle: bundle.clone(),
                    pid_file: r.pid_file.clone(),
                    console_socket: r.console_socket.clone(),
                    systemd_cgroup: cli.systemd_cgroup,
                    no_pivot: r.no_pivot,
                    preserve_fds: r.preserve_fds,
                };
                run_bundle(&rt()?, &opts, r.detach, None)
            }
            (None, Some(_)) => app::run(&rt()?, r, &cli.paths, cli.systemd_cgroup),
            (None, None) => unreachable!("clap requires --bundle or --name"),
        },
        Command::Stop(s) => app::stop(&rt()?, &cli.paths, &s.name, s.time),
        Command::Ps(j) => app::ps(&rt()?, j.json),
        Command::Exec(e) => app::exec(&rt()?, e),
        Command::Pull(_)
        | Command::Import(_)
        | Command::Images(_)
        | Command::Rm(_)
        | Command::Gc
        | Command::Trust(_)
        | Command::Sign(_) => images::dispatch(&cli.paths, &cli.command),
    }
}
