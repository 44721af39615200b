//! `cargo xtask fuzz [TARGET…] [--time S] [--inputs N]`: long fuzzing
//! campaigns over the parsers of untrusted input (the `parser-fuzz` crate).
//!
//! The fuzzer runs as its own release binary, not inside xtask: the parsers
//! must be optimized to reach millions of inputs, and the counting global
//! allocator that enforces the allocation cap belongs to that process alone.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Targets to run (all when none is given; `--list` names them).
    targets: Vec<String>,
    /// Seconds per target (default 60 when --inputs is not given either).
    #[arg(long)]
    time: Option<f64>,
    /// Inputs per target, seeds included (stops at whichever of --time/--inputs comes first).
    #[arg(long)]
    inputs: Option<u64>,
    /// RNG seed; a finding is reproduced by the same seed, target and input count.
    #[arg(long)]
    seed: Option<u64>,
    /// An input running longer than this many seconds is a hang (default 1).
    #[arg(long)]
    hang_secs: Option<f64>,
    /// Allocation cap in MiB, per allocation and for live growth (default 256).
    #[arg(long)]
    alloc_cap_mib: Option<usize>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Run the one target given on a saved input (reproduces a finding).
    #[arg(long)]
    replay: Option<std::path::PathBuf>,
}

pub fn fuzz(args: &Args) -> Result<()> {
    let out = crate::target_dir().join("fuzz");
    let mut cmd = crate::cargo();
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "parser-fuzz",
        "--bin",
        "parser-fuzz",
        "--",
    ])
    .arg("--out")
    .arg(&out)
    .args(&args.targets);
    let mut opt = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            cmd.arg(name).arg(v);
        }
    };
    opt("--time", args.time.map(|v| v.to_string()));
    opt("--inputs", args.inputs.map(|v| v.to_string()));
    opt("--seed", args.seed.map(|v| v.to_string()));
    opt("--hang-secs", args.hang_secs.map(|v| v.to_string()));
    opt("--alloc-cap-mib", args.alloc_cap_mib.map(|v| v.to_string()));
    if args.list {
        cmd.arg("--list");
    }
    if let Some(file) = &args.replay {
        cmd.arg("--replay").arg(file);
    }
    // A finding makes the fuzzer exit non-zero, and so this command.
    crate::sh(&mut cmd)
}
