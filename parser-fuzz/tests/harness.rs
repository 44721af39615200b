//! The harness finds what it claims to find: planted panics, hangs and huge
//! allocations are reported and their inputs saved.

use std::time::Duration;

use parser_fuzz::mutate::Format;
use parser_fuzz::{Config, CountingAlloc, Kind, Target, run_target};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Panics on "BUG", sleeps on "ZZ", asks for 300 MiB on "BIG" (exact
/// inputs, so mutants rarely trigger them and the test stays quick).
fn planted(data: &[u8]) -> u64 {
    match data {
        b"BUG" => panic!("planted bug"),
        b"ZZ" => std::thread::sleep(Duration::from_millis(400)),
        // Untouched capacity: counted by the allocator, no page is faulted in.
        b"BIG" => {
            return std::hint::black_box(Vec::<u8>::with_capacity(300 << 20)).capacity() as u64;
        }
        _ => {}
    }
    data.len() as u64 % 3
}

static PLANTED: Target = Target {
    name: "planted",
    about: "a parser with planted bugs",
    run: planted,
    seeds: || {
        vec![
            b"hello".to_vec(),
            b"BUG".to_vec(),
            b"ZZ".to_vec(),
            b"BIG".to_vec(),
        ]
    },
    format: Format::Binary,
    dict: &[b"BUG", b"ZZ", b"BIG"],
    max_len: 64,
};

#[test]
fn planted_findings_are_reported_and_saved() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::new(out.path().to_path_buf());
    cfg.inputs = Some(500);
    cfg.hang_limit = Duration::from_millis(250);
    cfg.verbose = false;
    let st = run_target(&PLANTED, &cfg).expect("runs");
    assert!(st.alloc_checked);
    assert_eq!(st.inputs, 500);
    for kind in [Kind::Panic, Kind::Hang, Kind::Alloc] {
        let f = st
            .findings
            .iter()
            .find(|f| f.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} found: {:?}", st.findings));
        let saved = std::fs::read(f.saved.as_ref().expect("saved")).expect("readable");
        let pat: &[u8] = match kind {
            Kind::Panic => b"BUG",
            Kind::Hang => b"ZZ",
            Kind::Alloc => b"BIG",
        };
        assert!(
            saved.windows(pat.len()).any(|w| w == pat),
            "{kind:?}: {saved:?}"
        );
    }
    assert!(st.panics > 0 && st.hangs > 0 && st.allocs_over_cap > 0);
    // One file per distinct finding, not per occurrence.
    assert_eq!(std::fs::read_dir(out.path()).expect("dir").count(), 3);
    assert!(
        st.findings
            .iter()
            .any(|f| f.message.contains("planted bug") && f.message.contains("harness.rs"))
    );
}
