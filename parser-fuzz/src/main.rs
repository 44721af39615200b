//! `parser-fuzz [TARGET…] [--time S] [--inputs N]`: long fuzzing campaigns
//! (run through `cargo xtask fuzz`, which builds this in release mode).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use parser_fuzz::{Config, CountingAlloc, TARGETS, run_target, table, target};

// The allocation cap is checked only in processes that count allocations.
#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Parser)]
#[command(name = "parser-fuzz")]
struct Args {
    /// Targets to run (all when none is given; `--list` names them).
    targets: Vec<String>,
    /// Seconds per target (default 60 when --inputs is not given either).
    #[arg(long)]
    time: Option<f64>,
    /// Inputs per target, seeds included.
    #[arg(long)]
    inputs: Option<u64>,
    /// RNG seed; a finding is reproduced by the same seed, target and input count.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where inputs of findings are saved.
    #[arg(long, default_value = "target/fuzz")]
    out: PathBuf,
    /// An input running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 1.0)]
    hang_secs: f64,
    /// Allocation cap in MiB (single allocation or live growth).
    #[arg(long, default_value_t = 256)]
    alloc_cap_mib: usize,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Run the one target given on this saved input and report (reproduces a finding).
    #[arg(long)]
    replay: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("parser-fuzz: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Ok(false) when something was found.
fn run(args: Args) -> Result<bool> {
    if args.list {
        for t in TARGETS {
            println!("{:<16} {}", t.name, t.about);
        }
        return Ok(true);
    }
    if let Some(path) = &args.replay {
        return replay(&args.targets, path);
    }
    let chosen = if args.targets.is_empty() {
        TARGETS.iter().collect::<Vec<_>>()
    } else {
        let mut v = Vec::new();
        for name in &args.targets {
            match target(name) {
                Some(t) => v.push(t),
                None => bail!(
                    "no target {name:?}; targets: {}",
                    TARGETS
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        v
    };
    let mut cfg = Config::new(args.out.clone());
    cfg.seed = args.seed;
    cfg.inputs = args.inputs;
    cfg.time = args.time.map(Duration::from_secs_f64);
    if cfg.inputs.is_none() && cfg.time.is_none() {
        cfg.time = Some(Duration::from_secs(60));
    }
    cfg.hang_limit = Duration::from_secs_f64(args.hang_secs);
    cfg.alloc_cap = args.alloc_cap_mib << 20;
    let mut all = Vec::new();
    for t in chosen {
        eprintln!("==> {}: {}", t.name, t.about);
        let stats = run_target(t, &cfg)?;
        if !stats.alloc_checked {
            eprintln!("warning: allocations are not counted in this process");
        }
        eprint!("{}", table(std::slice::from_ref(&stats)));
        all.push(stats);
    }
    parser_fuzz::targets::cleanup();
    println!(
        "\nseed {}, hang limit {:.1} s, allocation cap {} MiB, findings saved under {}",
        cfg.seed,
        cfg.hang_limit.as_secs_f64(),
        cfg.alloc_cap >> 20,
        cfg.out_dir.display()
    );
    print!("{}", table(&all));
    let mut clean = true;
    for st in &all {
        if st.slow_once > 0 {
            println!(
                "{}: {} input(s) over the time limit once, fast when run again (machine load; not findings)",
                st.target, st.slow_once
            );
        }
        for f in &st.findings {
            clean = false;
            println!(
                "{} {:?} x{}: {} (first at iteration {}){}",
                st.target,
                f.kind,
                f.count,
                f.message,
                f.first_iteration,
                f.saved
                    .as_ref()
                    .map(|p| format!(", input {}", p.display()))
                    .unwrap_or_default()
            );
        }
    }
    Ok(clean)
}

fn replay(targets: &[String], path: &std::path::Path) -> Result<bool> {
    let [name] = targets else {
        bail!("--replay needs exactly one target");
    };
    let Some(t) = target(name) else {
        bail!("no target {name:?}");
    };
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let base = parser_fuzz::alloc::reset();
    let start = Instant::now();
    // The default panic hook stays: it prints the message and location.
    let result = std::panic::catch_unwind(|| (t.run)(&data));
    let took = start.elapsed();
    let usage = parser_fuzz::alloc::usage(base);
    println!(
        "{name}: {} in {:.3} ms; largest allocation {} bytes, live growth {} bytes",
        match &result {
            Ok(class) => format!("returned (outcome class {class:#x})"),
            Err(_) => "PANICKED".to_string(),
        },
        took.as_secs_f64() * 1000.0,
        usage.largest,
        usage.peak_growth()
    );
    parser_fuzz::targets::cleanup();
    Ok(result.is_ok())
}
