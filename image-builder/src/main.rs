//! cairn-build: turns a board config and a Debian package set into a Cairn disk
//! image and a signed release.

mod build;
mod derive;
mod disk;
mod fsimage;
mod install;
mod oem;
mod progress;
mod rootfs;
mod sign;
mod stage;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use cairn_build::board;
use clap::{Parser, Subcommand};
use release_repo::{WAVE_SPEC_EXAMPLE, Wave};

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
        /// The update repository's root.json that hosts trust (shipped as
        /// /usr/lib/cairn/update-root.json); without it the updater stays idle.
        #[arg(long)]
        update_root: Option<PathBuf>,
        /// Ship an app image in /usr: an OCI layout directory and the image
        /// name apps use (`DIR:NAME:TAG`); repeatable. Adds to the board's
        /// `[apps] preload`.
        #[arg(long = "preload-image", value_name = "DIR:IMAGE")]
        preload_image: Vec<String>,
        /// Print a JSON summary on stdout at the end.
        #[arg(long)]
        json: bool,
    },
    /// Add a built release to a repository channel (signs the channel).
    Publish {
        /// The build's release/ folder.
        #[arg(long)]
        release: PathBuf,
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        channel: String,
        /// Repository keys (as many as the root's threshold).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// When the rollout starts (unix seconds; default now).
        #[arg(long)]
        wave_start: Option<u64>,
        /// Rollout steps: cumulative share of hosts by a time after the start,
        /// e.g. "2h:1%,24h:10%,72h:100%" (units d, h, m, s; the last step is
        /// 100%). Default: every host at once.
        #[arg(long, value_name = "STEPS")]
        wave: Option<String>,
        /// Hours over which the rollout reaches every host, evenly (the same as
        /// --wave "<N>h:100%"; 0 = all at once).
        #[arg(long)]
        wave_hours: Option<u64>,
        /// Days until the channel metadata expires (hosts refuse it after that).
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
    },
    /// Create or re-key a release repository.
    Repo {
        #[command(subcommand)]
        command: RepoCmd,
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
    /// Sign a host config for boards with `[config] require_signature`:
    /// writes FILE.sig (detached; placed beside the config) or, with
    /// --embedded, FILE.signed (the config with a last `# cairn-signature:`
    /// line, for cloud user data).
    SignConfig {
        /// The host config (TOML); it is checked before it is signed.
        config: PathBuf,
        /// Secret key (from `cairn-build keygen`) whose public key the board lists.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Sign with the development key from the source tree (tests only).
        #[arg(long)]
        dev_key: bool,
        /// Write the config with its signature as the last line instead.
        #[arg(long)]
        embedded: bool,
    },
    /// Put the host config and files on the OEM partition of a disk image
    /// (raw or qcow2), in place, without root or a loop mount.
    Oem {
        /// disk.raw or disk.qcow2 (told apart by content).
        #[arg(long)]
        image: PathBuf,
        #[command(flatten)]
        content: OemArgs,
    },
    /// Write a disk image, or a disk assembled from a signed release, to a
    /// disk, verify it, and place the host config.
    Install {
        /// disk.raw, disk.qcow2, a `build` output folder, or a release folder
        /// (a build's release/, or releases/<board>/<version>/ of a repository).
        #[arg(long)]
        image: PathBuf,
        /// The whole disk (/dev/sdX, /dev/nvme0n1) or a file.
        #[arg(long)]
        device: PathBuf,
        #[command(flatten)]
        content: OemArgs,
        /// Overwrite a device that holds a partition table or a filesystem.
        #[arg(long)]
        force: bool,
        /// A release's public key (`keygen`'s .public): a release folder is
        /// installed only when one of these signed it; repeatable.
        #[arg(long = "key", value_name = "PUBLIC_KEY")]
        keys: Vec<PathBuf>,
        /// A release's board (name or .toml; default: the board its manifest names).
        #[arg(long)]
        board: Option<String>,
        /// The compiled boot manager for a release (default: next to this
        /// binary's target folder; a release does not carry it).
        #[arg(long)]
        boot_efi: Option<PathBuf>,
    },
}

/// What goes on the OEM partition.
#[derive(clap::Args)]
struct OemArgs {
    /// The host config, placed as config.toml (checked first: a bad one writes nothing).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Its detached signature (from `sign-config`), placed as config.toml.sig;
    /// default: CONFIG.sig when that file exists.
    #[arg(long)]
    sig: Option<PathBuf>,
    /// Another file: SRC:DEST, DEST a path inside the OEM partition
    /// (/oem/DEST on the host); repeatable.
    #[arg(long = "file", value_name = "SRC:DEST")]
    files: Vec<String>,
}

impl OemArgs {
    fn read(&self) -> Result<oem::Inputs> {
        let sig = self.sig.clone().or_else(|| {
            let beside = sign::output_path(self.config.as_deref()?, sign::Form::Detached);
            beside.is_file().then_some(beside)
        });
        oem::Inputs::read(self.config.as_deref(), sig.as_deref(), &self.files)
    }
}

#[derive(Subcommand)]
enum RepoCmd {
    /// Make an empty repository trusting these keys.
    Init {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Signatures needed on repository metadata.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
    },
    /// Move the repository to new keys; signed by the old threshold, so hosts follow without reimaging.
    RotateKeys {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long = "old-key", required = true)]
        old_keys: Vec<PathBuf>,
        #[arg(long = "new-key", required = true)]
        new_keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
    },
    /// Stop a release's rollout: re-sign the channel with the release marked
    /// halted. Hosts stop installing it; hosts already running it keep it.
    Halt {
        /// The release version.
        version: String,
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        channel: String,
        /// Why (one line; hosts show it).
        #[arg(long)]
        reason: String,
        /// Only this board's release (default: the version on every board).
        #[arg(long)]
        board: Option<String>,
        /// Repository keys (as many as the root's threshold).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Days until the channel metadata expires (hosts refuse it after that).
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
    },
    /// Restart a halted release's rollout: re-sign the channel without the mark.
    Resume {
        /// The release version.
        version: String,
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        channel: String,
        /// Only this board's release (default: the version on every board).
        #[arg(long)]
        board: Option<String>,
        /// Start the wave over from now (default: it keeps its start, so hosts
        /// whose turn came during the halt may install at once).
        #[arg(long)]
        restart_wave: bool,
        /// Repository keys (as many as the root's threshold).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Days until the channel metadata expires (hosts refuse it after that).
        #[arg(long, default_value_t = 30)]
        expires_days: u64,
    },
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<release_manifest::KeyPair>> {
    paths
        .iter()
        .map(|p| Ok(release_manifest::KeyPair::load_secret(p)?))
        .collect()
}

/// The wave of `publish`: `--wave STEPS`, or the single ramp of `--wave-hours`,
/// or everyone at once.
fn publish_wave(start: u64, steps: Option<&str>, hours: Option<u64>) -> Result<Wave> {
    let example = format!("a valid example: --wave \"{WAVE_SPEC_EXAMPLE}\"");
    match (steps, hours) {
        (Some(_), Some(_)) => anyhow::bail!(
            "give --wave or --wave-hours, not both (--wave-hours N is --wave \"Nh:100%\"); {example}"
        ),
        (Some(spec), None) => {
            Wave::parse(start, spec).map_err(|e| anyhow::anyhow!("--wave {spec:?}: {e}; {example}"))
        }
        (None, Some(h)) => h
            .checked_mul(3600)
            .map(|d| Wave::linear(start, d))
            .ok_or_else(|| anyhow::anyhow!("--wave-hours {h}: too long; {example}")),
        (None, None) => Ok(Wave::immediate(start)),
    }
}

fn parse_version(version: &str) -> Result<release_manifest::Version> {
    release_manifest::Version::parse(version)
        .map_err(|e| anyhow::anyhow!("version {version:?}: {e}"))
}

fn days(n: u64) -> u64 {
    now().saturating_add(n.saturating_mul(86400))
}

/// How far the waves of `version`'s entries have got, for the operator.
fn rollout_note(
    ch: &release_repo::Channel,
    version: &release_manifest::Version,
    at: u64,
) -> String {
    ch.releases
        .iter()
        .filter(|r| r.version == *version)
        .map(|r| {
            format!(
                "{} wave {} from {}: {:.1}% of hosts reached",
                r.board,
                r.wave.spec(),
                r.wave.start(),
                r.wave.percent_at(at)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-build: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Library errors often already quote
/// their cause in their own message; a cause printed there is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
    }
    out
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
            update_root,
            preload_image,
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
                cache: cache.unwrap_or_else(cairn_build::cache_dir),
                epoch,
                update_root,
                preload_images: preload_image,
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
        Cmd::Publish {
            release,
            repo,
            channel,
            keys,
            wave_start,
            wave,
            wave_hours,
            expires_days,
        } => {
            // Checked before the keys are read: a typo costs nothing.
            let start = wave_start.unwrap_or_else(now);
            let wave = publish_wave(start, wave.as_deref(), wave_hours)?;
            let keys = load_keys(&keys)?;
            let opts = release_repo::PublishOptions {
                wave,
                expires: days(expires_days),
            };
            let ch = release_repo::publish(&release, &repo, &channel, &keys, opts)?;
            println!(
                "published to channel {channel} of {} (channel version {}); wave {} from {start}",
                repo.display(),
                ch.version,
                wave.spec()
            );
            Ok(())
        }
        Cmd::Repo {
            command:
                RepoCmd::Init {
                    repo,
                    keys,
                    threshold,
                    expires_days,
                },
        } => {
            let keys = load_keys(&keys)?;
            release_repo::init(&repo, &keys, threshold, now() + expires_days * 86400)?;
            println!(
                "repository {} trusts {} key(s), threshold {threshold}; ship {}/root.json in images with --update-root",
                repo.display(),
                keys.len(),
                repo.display()
            );
            Ok(())
        }
        Cmd::Repo {
            command:
                RepoCmd::RotateKeys {
                    repo,
                    old_keys,
                    new_keys,
                    threshold,
                    expires_days,
                },
        } => {
            let (old, new) = (load_keys(&old_keys)?, load_keys(&new_keys)?);
            let root = release_repo::rotate_keys(
                &repo,
                &old,
                &new,
                threshold,
                now() + expires_days * 86400,
            )?;
            println!(
                "repository {} now at root version {}",
                repo.display(),
                root.version
            );
            Ok(())
        }
        Cmd::Repo {
            command:
                RepoCmd::Halt {
                    version,
                    repo,
                    channel,
                    reason,
                    board,
                    keys,
                    expires_days,
                },
        } => {
            let version = parse_version(&version)?;
            release_repo::check_halt_reason(&reason)?;
            let keys = load_keys(&keys)?;
            let at = now();
            let opts = release_repo::HaltOptions {
                board: board.as_deref(),
                now: at,
                expires: days(expires_days),
            };
            let ch = release_repo::halt(&repo, &channel, &version, &reason, &keys, opts)?;
            println!(
                "halted {version} on channel {channel} (channel version {}); {}",
                ch.version,
                rollout_note(&ch, &version, at)
            );
            Ok(())
        }
        Cmd::Repo {
            command:
                RepoCmd::Resume {
                    version,
                    repo,
                    channel,
                    board,
                    restart_wave,
                    keys,
                    expires_days,
                },
        } => {
            let version = parse_version(&version)?;
            let keys = load_keys(&keys)?;
            let at = now();
            let opts = release_repo::ResumeOptions {
                board: board.as_deref(),
                restart_wave_at: restart_wave.then_some(at),
                expires: days(expires_days),
            };
            let ch = release_repo::resume(&repo, &channel, &version, &keys, opts)?;
            println!(
                "resumed {version} on channel {channel} (channel version {}); {}",
                ch.version,
                rollout_note(&ch, &version, at)
            );
            Ok(())
        }
        Cmd::SignConfig {
            config,
            key,
            dev_key,
            embedded,
        } => {
            let key = match (key, dev_key) {
                (Some(_), true) => anyhow::bail!("give either --key or --dev-key, not both"),
                (Some(path), false) => release_manifest::KeyPair::load_secret(path)?,
                (None, true) => sign::dev_key()?,
                (None, false) => anyhow::bail!(
                    "sign-config needs --key SECRET: the secret key whose public key the board's [config] keys lists (make one with `cairn-build keygen --out keys/ --name config`)"
                ),
            };
            let form = if embedded {
                sign::Form::Embedded
            } else {
                sign::Form::Detached
            };
            let out = sign::sign_file(&config, &key, form)?;
            println!(
                "signed {} with key {} -> {}",
                config.display(),
                key.key_id(),
                out.display()
            );
            Ok(())
        }
        Cmd::Oem { image, content } => {
            let inputs = content.read()?;
            let w = oem::oem_command(&image, &inputs)?;
            println!(
                "{}: OEM partition ({} MiB at byte {}, filesystem {}) now holds {} ({} bytes changed)",
                image.display(),
                w.part.size >> 20,
                w.part.offset,
                w.ids.uuid,
                oem::describe(&oem::plan(&inputs).map_err(anyhow::Error::msg)?),
                w.changed
            );
            Ok(())
        }
        Cmd::Install {
            image,
            device,
            content,
            force,
            keys,
            board,
            boot_efi,
        } => {
            let opts = install::Options {
                image,
                device,
                inputs: content.read()?,
                force,
                keys,
                board: board
                    .map(|b| board::locate(&b, &board::boards_dir()))
                    .transpose()?,
                boot_efi,
            };
            let plan = install::install(&opts, &mut |line| eprintln!("{line}"))?;
            println!(
                "installed {} on {}",
                opts.image.display(),
                plan.target.path.display()
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
