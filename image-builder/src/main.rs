//! cairn-build: turns a board config and a Debian package set into a Cairn disk
//! image and a signed release.

mod board;
mod build;
mod derive;
mod disk;
mod fsimage;
mod progress;
mod rootfs;
mod stage;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-build",
    version,
    about = "Build Cairn disk images and signed releases"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a disk image (raw, qcow2), a signed release, build-info.json and run.sh.
    Build {
        /// A board name from board-configs/ or a path to a board .toml.
        #[arg(long)]
        board: String,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Release version (dotted numbers, optional -suffix).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
        /// Secret key that signs the release and the boot files (from `cairn-build keygen`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Sign with the development key from the source tree (tests and the quick start only).
        #[arg(long)]
        dev_key: bool,
        /// The compiled boot manager (default: next to this binary's target folder).
        #[arg(long)]
        boot_efi: Option<PathBuf>,
        /// The compiled cairn-init (default: next to this binary's target folder).
        #[arg(long)]
        init: Option<PathBuf>,
        /// Cache folder for rootfs tarballs (default: $CAIRN_CACHE or ~/.cache/cairn).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Print a JSON summary on stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// Write a new ed25519 key pair: <name>.secret (keep it safe) and <name>.public.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "release")]
        name: String,
    },
    /// List the boards in board-configs/.
    Boards,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-build: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Build {
            board,
            out,
            version,
            key,
            dev_key,
            boot_efi,
            init,
            cache,
            json,
        } => {
            release_manifest::Version::parse(&version)
                .map_err(|e| anyhow::anyhow!("--version {version:?}: {e}"))?;
            let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(s) => Some(s.trim().parse::<u64>().map_err(|_| {
                    anyhow::anyhow!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")
                })?),
                Err(_) => None,
            };
            let opts = build::Options {
                board: board::locate(&board, &board::boards_dir())?,
                out,
                version,
                key,
                dev_key,
                boot_efi,
                init,
                cache: cache.unwrap_or_else(rootfs::cache_dir),
                epoch,
            };
            let mut progress = progress::Progress::new(json);
            let summary = build::build(&opts, &mut progress)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                eprintln!(
                    "built {} {} in {:.0}s -> {}\n  boot it: {}/run.sh -snapshot",
                    summary.board,
                    summary.version,
                    summary.seconds,
                    summary.out.display(),
                    summary.out.display()
                );
            }
            Ok(())
        }
        Cmd::Keygen { out, name } => {
            let key = release_manifest::KeyPair::generate()?;
            std::fs::create_dir_all(&out)?;
            let (secret, public) = key.write(&out, &name)?;
            println!(
                "key {}: secret {} (keep it private), public {}",
                key.key_id(),
                secret.display(),
                public.display()
            );
            Ok(())
        }
        Cmd::Boards => {
            let dir = board::boards_dir();
            for name in board::list(&dir) {
                let b = board::load(&dir.join(format!("{name}.toml")))?;
                println!("{name:16} {:7} {}", b.board.arch, b.board.description);
            }
            Ok(())
        }
    }
}
