//! `cargo xtask …`: the project's chores in one place (see README.md).

mod bench;
mod bench_delta;
mod bench_fleet;
mod bench_runtime;
mod cargo_tests;
#[cfg(test)]
mod dep_tree;
mod fuzz;
mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use disk_layout::Arch;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the host packages and Rust targets that builds and tests need.
    Setup,
    /// Build cairn-boot.efi and cairn-init for an architecture, and cairn-build.
    Artifacts {
        #[arg(long, default_value = "x86_64")]
        arch: String,
    },
    /// Build an image with the development key, then boot it in QEMU.
    Image {
        #[arg(long, default_value = "qemu-x86_64")]
        board: String,
        /// Output folder (default: out/<board>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Build and check only; do not start QEMU.
        #[arg(long)]
        no_boot: bool,
    },
    /// Everything CI runs: unit and integration tests, image builds, VM scenarios.
    Test {
        /// Skip the VM scenarios.
        #[arg(long)]
        no_vm: bool,
    },
    /// Run VM scenarios by name (all when none is given).
    Vmtest {
        scenarios: Vec<String>,
        #[arg(long, default_value = "x86_64")]
        arch: String,
        /// Reuse the image in out/test-<board> instead of rebuilding it.
        #[arg(long)]
        no_build: bool,
    },
    /// Run a benchmark and print its figures.
    Bench {
        name: String,
        /// Options of the benchmark (`runtime`: --runs N --hang-runs N; `fleet`:
        /// --hosts N --max-rebooting N and more, see xtask/src/bench_fleet.rs).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the parsers of untrusted input (parser-fuzz) and print the counts.
    Fuzz(fuzz::Args),
    /// qemu's guestfwd command of the VM scenarios (see qemu_tests::relay).
    #[command(name = "guestfwd-relay", hide = true)]
    GuestfwdRelay { to: String },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (the binaries
/// run from there must be the ones just built), else `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn arch(name: &str) -> Result<Arch> {
    Arch::from_name(name).with_context(|| format!("unknown arch {name:?}: use x86_64 or arm64"))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::GuestfwdRelay { to } => qemu_tests::relay::stdio_to_tcp(&to),
        Cmd::Artifacts { arch: a } => artifacts(arch(&a)?),
        Cmd::Image {
            board,
            out,
            no_boot,
        } => {
            setup::setup()?;
            let out = out.unwrap_or_else(|| root().join("out").join(&board));
            let dir = build_image(&board, &out)?;
            if no_boot {
                return Ok(());
            }
            eprintln!(
                "==> booting {} (serial console; Ctrl-a x quits)",
                dir.display()
            );
            sh(Command::new(dir.join("run.sh")).arg("-snapshot"))
        }
        Cmd::Test { no_vm } => test(no_vm),
        Cmd::Vmtest {
            scenarios,
            arch: a,
            no_build,
        } => vmtest(&scenarios, arch(&a)?, !no_build),
        Cmd::Bench { name, args } => bench(&name, &args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
    }
}

/// Runs a command, failing with its exit status.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    // `cargo run` gave this process xtask's package variables. Cargo checks
    // a build script's `rerun-if-env-changed` against its own environment,
    // and ring's names CARGO_PKG_NAME and others: inherited, they made every
    // build from here rebuild ring and all above it (76 s of a CI run).
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            c.env_remove(&*k);
        }
    }
    c
}

fn artifacts(arch: Arch) -> Result<()> {
    sh(cargo().args([
        "build",
        "--release",
        "-p",
        "cairn-boot",
        "--target",
        arch.uefi_target(),
    ]))?;
    // Everything that runs on the host OS is a static musl binary.
    sh(cargo()
        .args(["build", "--release", "--target", arch.musl_target()])
        .args([
            "-p",
            "cairn-init",
            "-p",
            "cairn-config",
            "-p",
            "cairn-mark-good",
            "-p",
            "app-units",
            "-p",
            "cairn-updater",
            "-p",
            "cairn-run",
        ])
        // libcontainer's seccomp is libseccomp (C): linked statically from
        // Debian's libseccomp-dev of the target arch (see runtime/src/lib.rs).
        .env("LIBSECCOMP_LINK_TYPE", "static")
        .env("LIBSECCOMP_LIB_PATH", seccomp_lib_dir(arch)?))?;
    // With xtask, so that cargo turns on the dependencies' features of
    // xtask's build (a superset): alone, cairn-build rebuilt part of the
    // tree. xtask itself is fresh here (`cargo` above says why); were it
    // rebuilt, the running binary would be replaced, and the VM scenarios
    // start it again by its path (the guestfwd relay).
    sh(cargo().args(["build", "--release", "-p", "cairn-build", "-p", "xtask"]))
}

/// A folder holding only Debian's libseccomp.a for `arch`: pointing the
/// linker at /usr/lib/<triplet> itself would make it take glibc's libc.a
/// instead of musl's.
fn seccomp_lib_dir(arch: Arch) -> Result<PathBuf> {
    let src = PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/libseccomp.a",
        arch.gnu_arch()
    ));
    if !src.is_file() {
        bail!("{} is missing: run `cargo xtask setup`", src.display());
    }
    let dir = target_dir().join("libseccomp").join(arch.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dst = dir.join("libseccomp.a");
    std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
    Ok(dir)
}

fn board_arch(board: &str) -> Arch {
    if board.contains("arm64") {
        Arch::Arm64
    } else {
        Arch::X86_64
    }
}

/// Builds `board` into `out` with the development key; returns `out`.
pub fn build_image(board: &str, out: &Path) -> Result<PathBuf> {
    build_image_with(board, out, &[])
}

/// [`build_image`] with extra `cairn-build build` arguments.
fn build_image_with(board: &str, out: &Path, extra: &[&str]) -> Result<PathBuf> {
    let arch = board_arch(board);
    if arch == Arch::Arm64 {
        setup::binfmt_arm64()?;
    }
    artifacts(arch)?;
    sh(Command::new(target_dir().join("release/cairn-build"))
        .args(["build", "--dev-key", "--board", board, "--out"])
        .arg(out)
        .args(extra))?;
    Ok(out.to_path_buf())
}

fn test(no_vm: bool) -> Result<()> {
    let mut phases = Phases::default();
    let _ = phases.time("setup", || {
        setup::setup()?;
        setup::binfmt_arm64()
    }) && Arch::ALL.iter().all(|&a| {
        // Image-level tests build through cairn-build: have its artifacts ready.
        phases.time(&format!("compile: artifacts {}", a.name()), || artifacts(a))
    }) && phases.time("cargo tests (release, two binaries at a time)", || {
        // The image and firmware tests skip politely when run bare; here they must run.
        let env = [
            ("CAIRN_REQUIRE_IMAGE_TESTS", "1"),
            ("CAIRN_REQUIRE_QEMU", "1"),
        ];
        cargo_tests::run(&mut cargo(), &env, 2)?;
        cargo_tests::run_doc(&mut cargo(), &env)
    }) && (no_vm
        || phases.time("VM scenarios x86_64 (images + runs)", || {
            vmtest(&[], Arch::X86_64, true)
        }) && phases.time("VM scenarios arm64 (image + boot)", || {
            vmtest(&["boot".to_string()], Arch::Arm64, true)
        }));
    phases.print();
    phases.result()
}

/// Wall time of each step of `cargo xtask test`, printed as a table at the
/// end (per-scenario times are in the VM runner's PASS/FAIL lines).
#[derive(Default)]
struct Phases {
    rows: Vec<(String, f64, bool)>,
    error: Option<anyhow::Error>,
}

impl Phases {
    /// Runs `f` and records its time; false (and the error kept) if it failed.
    fn time(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
        let t = std::time::Instant::now();
        let r = f();
        let ok = r.is_ok();
        self.rows
            .push((name.to_string(), t.elapsed().as_secs_f64(), ok));
        if let Err(e) = r
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        ok
    }

    fn print(&self) {
        let total: f64 = self.rows.iter().map(|r| r.1).sum();
        println!("\n| phase | seconds | result |\n|---|---:|---|");
        for (name, secs, ok) in &self.rows {
            println!(
                "| {name} | {secs:.0} | {} |",
                if *ok { "ok" } else { "FAILED" }
            );
        }
        println!("| total | {total:.0} | |");
    }

    fn result(self) -> Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

fn test_board(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-x86_64",
        Arch::Arm64 => "qemu-arm64",
    }
}

/// The image VM scenarios boot, built with the development key: version
/// [`qemu_tests::scenarios::V1`], trusting the test update repository.
pub fn test_image(arch: Arch, build: bool) -> Result<PathBuf> {
    test_repo(arch, build)?;
    test_build(arch, "", qemu_tests::scenarios::V1, build)
}

/// `out/test-<board><suffix>` at `version`, trusting the test repository.
fn test_build(arch: Arch, suffix: &str, version: &str, build: bool) -> Result<PathBuf> {
    test_build_of(arch, test_board(arch), suffix, version, build)
}

/// [`test_build`] from `board_file` (a board name or a path to its TOML).
fn test_build_of(
    arch: Arch,
    board_file: &str,
    suffix: &str,
    version: &str,
    build: bool,
) -> Result<PathBuf> {
    let board = test_board(arch);
    let out = root().join("out").join(format!("test-{board}{suffix}"));
    if build || !out.join("build-info.json").is_file() {
        let root_json = root()
            .join("out")
            .join(format!("test-repo-{board}"))
            .join("root.json");
        let root_json = root_json.to_str().context("non-UTF-8 path")?;
        build_image_with(
            board_file,
            &out,
            &["--version", version, "--update-root", root_json],
        )?;
    }
    Ok(out)
}

/// The update repository the test images trust: created empty with the
/// development key; the update scenarios publish into copies of it.
fn test_repo(arch: Arch, build: bool) -> Result<PathBuf> {
    let repo = root()
        .join("out")
        .join(format!("test-repo-{}", test_board(arch)));
    if repo.join("root.json").is_file() && !build {
        return Ok(repo);
    }
    if repo.exists() {
        std::fs::remove_dir_all(&repo).with_context(|| format!("removing {}", repo.display()))?;
    }
    artifacts(arch)?;
    // git checks the key out as 0644 and the key loader refuses that for a
    // secret; `cairn-build --dev-key` fixes the mode but may not have run yet.
    let key = root().join(disk_layout::dev_key::SECRET);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", key.display()))?;
    sh(Command::new(target_dir().join("release/cairn-build"))
        .args(["repo", "init", "--repo"])
        .arg(&repo)
        .arg("--key")
        .arg(&key))?;
    Ok(repo)
}

/// The release the update scenarios offer: the same board at version
/// [`qemu_tests::scenarios::V2`].
fn test_update_release(arch: Arch, build: bool) -> Result<PathBuf> {
    test_build(arch, "-v2", qemu_tests::scenarios::V2, build)
}

/// The release `update-delta` offers: v2 with one package added, so that
/// it differs from the test image by a little, as a real update does.
fn test_delta_release(arch: Arch, build: bool) -> Result<PathBuf> {
    let board = test_board(arch);
    // A variant of the test board under its name: the image accepts only
    // releases of its own board. Absolute `extends`: the variant lives
    // outside board-configs/.
    let base = root().join("board-configs").join(format!("{board}.toml"));
    let dir = target_dir().join("test-boards");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let variant = dir.join(format!("{board}-delta.toml"));
    let toml = format!(
        "extends = {:?}\n[board]\nname = {board:?}\n[debian]\npackages_add = [{:?}]\n",
        base.to_str().context("non-UTF-8 path")?,
        qemu_tests::scenarios::DELTA_PACKAGE
    );
    std::fs::write(&variant, toml).with_context(|| format!("writing {}", variant.display()))?;
    test_build_of(
        arch,
        variant.to_str().context("non-UTF-8 path")?,
        "-v2-delta",
        qemu_tests::scenarios::V2,
        build,
    )
}

fn vmtest(scenarios: &[String], arch: Arch, build: bool) -> Result<()> {
    setup::setup()?;
    let dir = test_image(arch, build)?;
    let mut images = qemu_tests::ImageSet::default();
    match arch {
        Arch::X86_64 => images.x86_64 = Some(dir),
        Arch::Arm64 => images.arm64 = Some(dir),
    }
    if qemu_tests::scenarios::need_update_release(scenarios, arch) {
        let v2 = test_update_release(arch, build)?;
        let repo = root()
            .join("out")
            .join(format!("test-repo-{}", test_board(arch)));
        let v2_delta = if qemu_tests::scenarios::need_delta_release(scenarios, arch) {
            Some(test_delta_release(arch, build)?)
        } else {
            None
        };
        images.set_update(arch, qemu_tests::UpdateInputs { v2, repo, v2_delta });
    }
    let template = qemu_tests::CtxTemplate {
        artifacts_root: target_dir().join("vm-artifacts"),
        images,
        keep_on_failure: true,
    };
    let factory = |s: &qemu_tests::Scenario, a: Arch| template.make(s, a);
    let report = qemu_tests::run_scenarios(scenarios, arch, &factory, qemu_tests::DEFAULT_PARALLEL);
    if !report.success() {
        bail!(
            "{} VM scenario(s) failed on {}",
            report.failed(),
            arch.name()
        );
    }
    Ok(())
}

fn bench(name: &str, args: &[String]) -> Result<()> {
    if name == "runtime" {
        setup::setup()?;
        return bench_runtime::run(args);
    }
    if name == "fleet" {
        return bench_fleet::run(args);
    }
    if name == "delta" {
        return bench_delta::run(args);
    }
    if name == "boot" {
        return bench::boot(args);
    }
    if !args.is_empty() {
        bail!("benchmark {name:?} takes no options");
    }
    bench::run(name)
}
