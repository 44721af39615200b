//! The CI pass: every target for a few thousand inputs; any panic, hang or
//! allocation over the cap fails the test. `cargo xtask fuzz` runs the long ones.

use std::time::{Duration, Instant};

use parser_fuzz::{Config, CountingAlloc, TARGETS, run_target, table};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn every_parser_survives_a_short_fuzz_pass() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("parser-fuzz-findings");
    let mut cfg = Config::new(out.clone());
    cfg.verbose = true;
    let start = Instant::now();
    let mut all = Vec::new();
    for t in TARGETS {
        // Enough to reach past the seeds' first checks; the slow targets (a
        // signature per input, a directory per layer) get a time budget too.
        cfg.inputs = Some(3000);
        cfg.time = Some(Duration::from_secs(2));
        all.push(run_target(t, &cfg).expect("fuzzer runs"));
    }
    parser_fuzz::targets::cleanup();
    eprint!("{}", table(&all));
    eprintln!("total {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        all.iter().all(|s| s.alloc_checked),
        "allocations are not counted"
    );
    // Seeds are valid: a target that accepts nothing has broken fixtures and
    // only exercises its first check.
    for s in &all {
        assert!(s.accepted > 0, "{} accepted no input", s.target);
    }
    let findings: Vec<String> = all
        .iter()
        .flat_map(|s| {
            s.findings.iter().map(move |f| {
                format!(
                    "{}: {:?} x{}: {} (saved: {:?})",
                    s.target, f.kind, f.count, f.message, f.saved
                )
            })
        })
        .collect();
    assert!(
        findings.is_empty(),
        "findings (inputs under {}):\n{}",
        out.display(),
        findings.join("\n")
    );
}
