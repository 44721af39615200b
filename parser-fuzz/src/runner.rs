//! Runs one target: seeds first, then mutations of the corpus, each input under
//! `catch_unwind`, a watchdog for hangs and the counting allocator's figures.
//!
//! Feedback without coverage instrumentation (stable has none we can use
//! here): an input whose outcome class (Ok, or which error) was never seen
//! joins the corpus, so inputs that got past one check seed the next round.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::alloc;
use crate::mutate::{Format, Rng, mutate};

/// One parser under test.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    /// Calls the real parser; returns a class of its outcome (see [`crate::outcome`]).
    pub run: fn(&[u8]) -> u64,
    /// Valid inputs made with the real writers.
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub format: Format,
    /// Tokens the mutator inserts (magic numbers, keys).
    pub dict: &'static [&'static [u8]],
    pub max_len: usize,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Stop after this many inputs (seeds included)...
    pub inputs: Option<u64>,
    /// ...or after this long, whichever comes first.
    pub time: Option<Duration>,
    pub seed: u64,
    /// Where inputs of findings are saved.
    pub out_dir: PathBuf,
    /// An input running longer than this is a hang.
    pub hang_limit: Duration,
    /// A single allocation, or growth of the live total, above this is a finding.
    pub alloc_cap: usize,
    /// Print a progress line every 10 s and each finding as it happens.
    pub verbose: bool,
}

impl Config {
    pub fn new(out_dir: PathBuf) -> Config {
        Config {
            inputs: None,
            time: None,
            seed: 1,
            out_dir,
            hang_limit: Duration::from_secs(1),
            alloc_cap: 256 << 20,
            verbose: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Panic,
    Hang,
    Alloc,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Panic => "panic",
            Kind::Hang => "hang",
            Kind::Alloc => "alloc",
        }
    }
}

/// One distinct finding (same kind and place), with how often it happened.
#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: Kind,
    pub message: String,
    pub first_iteration: u64,
    pub count: u64,
    pub saved: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Stats {
    pub target: &'static str,
    pub seed: u64,
    pub inputs: u64,
    /// Inputs the parser accepted (outcome class with bit 0 set).
    pub accepted: u64,
    pub elapsed: Duration,
    pub panics: u64,
    pub hangs: u64,
    pub allocs_over_cap: u64,
    pub findings: Vec<Finding>,
    pub corpus: usize,
    /// Inputs over the time limit once but not when run again (machine load).
    pub slow_once: u64,
    pub slowest: Duration,
    pub largest_alloc: usize,
    pub peak_growth: usize,
    /// False when the process does not run on [`alloc::CountingAlloc`].
    pub alloc_checked: bool,
}

impl Stats {
    pub fn total_findings(&self) -> u64 {
        self.panics + self.hangs + self.allocs_over_cap
    }

    pub fn rate(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The input running now, for the watchdog and for the allocator's last words.
struct Current {
    input: *const u8,
    len: usize,
    started: Option<Instant>,
    iteration: u64,
    target: &'static str,
    seed: u64,
    /// The watchdog saw this input run past the limit (and saved it).
    slow_noted: bool,
    /// Where the allocator writes the input if the process is about to abort.
    abort_path: Option<CString>,
}

// SAFETY: `input` is only dereferenced under the mutex while `started` is set,
// and the fuzz loop clears it (under the mutex) before the input is dropped.
unsafe impl Send for Current {}

static CURRENT: Mutex<Current> = Mutex::new(Current {
    input: std::ptr::null(),
    len: 0,
    started: None,
    iteration: 0,
    target: "",
    seed: 0,
    slow_noted: false,
    abort_path: None,
});

/// Location and message of the last panic, recorded by our hook.
static PANIC: Mutex<Option<(String, String)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks is in our own code; the data is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Called by the allocator when the system refused a request: Rust aborts
/// right after, so print what was running and save the input. No allocation
/// here: stack buffer, raw `write(2)`.
pub(crate) fn dump_on_abort(size: usize) {
    struct Buf {
        b: [u8; 1024],
        n: usize,
    }
    impl std::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let take = s.len().min(self.b.len() - self.n);
            self.b[self.n..self.n + take].copy_from_slice(&s.as_bytes()[..take]);
            self.n += take;
            Ok(())
        }
    }
    let mut msg = Buf { b: [0; 1024], n: 0 };
    // try_lock: this thread may hold it already (the watchdog copying an input).
    if let Ok(c) = CURRENT.try_lock() {
        let _ = write!(
            msg,
            "parser-fuzz: FINDING alloc: allocation of {size} bytes failed in target {} (seed {}, iteration {}); aborting",
            c.target, c.seed, c.iteration
        );
        if let (Some(path), true) = (&c.abort_path, c.started.is_some()) {
            // SAFETY: a valid C string; the input is alive while `started` is set.
            unsafe {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    let _ = libc::write(fd, c.input.cast(), c.len);
                    libc::close(fd);
                    let _ = write!(msg, "; input saved to ");
                    let p = path.as_bytes();
                    let take = p.len().min(msg.b.len() - msg.n);
                    msg.b[msg.n..msg.n + take].copy_from_slice(&p[..take]);
                    msg.n += take;
                }
            }
        }
    } else {
        let _ = write!(
            msg,
            "parser-fuzz: FINDING alloc: allocation of {size} bytes failed; aborting"
        );
    }
    let _ = msg.write_str("\n");
    // SAFETY: writing our own buffer to stderr.
    unsafe {
        libc::write(2, msg.b.as_ptr().cast(), msg.n);
    }
}

/// A stable hash (FNV-1a) for names, keys and file names.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn save(dir: &Path, name: &str, input: &[u8]) -> Option<PathBuf> {
    let path = dir.join(name);
    match std::fs::write(&path, input) {
        Ok(()) => Some(path),
        Err(e) => {
            eprintln!("parser-fuzz: cannot save {}: {e}", path.display());
            None
        }
    }
}

/// Corpus growth stops here: enough variety, and picking stays cheap.
const MAX_CORPUS: usize = 1024;

/// Runs `target` per `cfg` on a thread of its own with an 8 MiB stack (the
/// main-thread stack of the programs these parsers live in).
pub fn run_target(target: &'static Target, cfg: &Config) -> Result<Stats> {
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let cfg = cfg.clone();
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "unknown location".into());
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into());
        *lock(&PANIC) = Some((loc, msg));
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let stop = stop.clone();
        let cfg = cfg.clone();
        std::thread::spawn(move || watchdog(&stop, &cfg))
    };
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .stack_size(8 << 20)
        .spawn(move || fuzz_loop(target, &cfg))
        .context("starting the fuzz thread")?;
    let result = worker.join();
    stop.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    std::panic::set_hook(prev_hook);
    match result {
        Ok(stats) => Ok(stats),
        Err(_) => anyhow::bail!(
            "the fuzzer itself panicked in target {} (not a target finding): {:?}",
            target.name,
            lock(&PANIC).take()
        ),
    }
}

fn running_long_path(cfg: &Config, target: &str) -> PathBuf {
    cfg.out_dir.join(format!("{target}-running-long.bin"))
}

/// Saves an input that runs past the limit while it still runs (it may never
/// return), and ends the process if it is clearly stuck. Whether it is a hang
/// is decided by the fuzz loop, which runs it again.
fn watchdog(stop: &AtomicBool, cfg: &Config) {
    // A thread stuck in a loop cannot be stopped from outside: past this,
    // report and give up the process.
    let fatal = (cfg.hang_limit * 30).max(Duration::from_secs(30));
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let mut c = lock(&CURRENT);
        let Some(started) = c.started else { continue };
        let running = started.elapsed();
        if running > cfg.hang_limit && !c.slow_noted {
            // SAFETY: see `Current`: set and alive while `started` is Some.
            let input = unsafe { std::slice::from_raw_parts(c.input, c.len) };
            let path = running_long_path(cfg, c.target);
            let _ = std::fs::write(&path, input);
            eprintln!(
                "parser-fuzz: {} (seed {}, iteration {}) running for {:.1} s; input saved to {}",
                c.target,
                c.seed,
                c.iteration,
                running.as_secs_f64(),
                path.display()
            );
            c.slow_noted = true;
        }
        if running > fatal {
            eprintln!(
                "parser-fuzz: FINDING hang: target {} still running after {} s (seed {}, iteration {}); input in {}; exiting",
                c.target,
                fatal.as_secs(),
                c.seed,
                c.iteration,
                running_long_path(cfg, c.target).display()
            );
            std::process::exit(3);
        }
    }
}

/// Runs `input` with it published to the watchdog and the allocator;
/// returns the result, the time taken and the allocations.
fn run_one(target: &Target, input: &[u8], i: u64) -> (Result<u64, ()>, Duration, alloc::Usage) {
    {
        let mut c = lock(&CURRENT);
        c.input = input.as_ptr();
        c.len = input.len();
        c.iteration = i;
        c.slow_noted = false;
        c.started = Some(Instant::now());
    }
    let base = alloc::reset();
    let t0 = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|_| ());
    let took = t0.elapsed();
    let usage = alloc::usage(base);
    let mut c = lock(&CURRENT);
    c.started = None;
    c.input = std::ptr::null();
    c.len = 0;
    (result, took, usage)
}

fn fuzz_loop(target: &'static Target, cfg: &Config) -> Stats {
    let seeds = (target.seeds)();
    let mut corpus: Vec<Vec<u8>> = seeds.clone();
    let mut outcomes = HashSet::new();
    let seed = cfg.seed;
    let mut rng = Rng::new(seed ^ fnv(target.name.as_bytes()));
    let mut stats = Stats {
        target: target.name,
        seed,
        inputs: 0,
        accepted: 0,
        elapsed: Duration::ZERO,
        panics: 0,
        hangs: 0,
        allocs_over_cap: 0,
        findings: Vec::new(),
        corpus: 0,
        slow_once: 0,
        slowest: Duration::ZERO,
        largest_alloc: 0,
        peak_growth: 0,
        alloc_checked: alloc::installed(),
    };
    let mut found: BTreeMap<(Kind, u64), usize> = BTreeMap::new();
    let abort_path = cfg.out_dir.join(format!("{}-alloc-abort.bin", target.name));
    {
        let mut c = lock(&CURRENT);
        c.target = target.name;
        c.seed = seed;
        c.abort_path = CString::new(abort_path.as_os_str().as_bytes()).ok();
    }
    let start = Instant::now();
    let mut last_progress = start;
    let mut i = 0u64;
    loop {
        if cfg.inputs.is_some_and(|n| i >= n) || cfg.time.is_some_and(|t| start.elapsed() >= t) {
            break;
        }
        let input = match seeds.get(i as usize) {
            Some(s) => s.clone(),
            None => {
                let base = &corpus[rng.below(corpus.len())];
                mutate(
                    &mut rng,
                    base,
                    &corpus,
                    target.dict,
                    target.format,
                    target.max_len,
                )
            }
        };
        let (result, took, usage) = run_one(target, &input, i);
        // A slow input on a busy machine is not a hang: one is only when it is
        // slow again (the parsers are deterministic).
        let rerun = if took > cfg.hang_limit {
            let (_, again, _) = run_one(target, &input, i);
            let _ = std::fs::remove_file(running_long_path(cfg, target.name));
            if again <= cfg.hang_limit {
                stats.slow_once += 1;
                eprintln!(
                    "parser-fuzz: {} iteration {i} took {:.2} s once and {:.3} s again: machine load, not a hang",
                    target.name,
                    took.as_secs_f64(),
                    again.as_secs_f64()
                );
            }
            Some(again)
        } else {
            None
        };
        stats.inputs += 1;
        stats.slowest = stats.slowest.max(took);
        stats.largest_alloc = stats.largest_alloc.max(usage.largest);
        stats.peak_growth = stats.peak_growth.max(usage.peak_growth());

        let mut record = |kind: Kind, key: &str, message: String, saved: Option<PathBuf>| {
            match kind {
                Kind::Panic => stats.panics += 1,
                Kind::Hang => stats.hangs += 1,
                Kind::Alloc => stats.allocs_over_cap += 1,
            }
            let k = (kind, fnv(key.as_bytes()));
            if let Some(&at) = found.get(&k) {
                stats.findings[at].count += 1;
                return;
            }
            let saved = saved.or_else(|| {
                save(
                    &cfg.out_dir,
                    &format!("{}-{}-{:016x}.bin", target.name, kind.name(), k.1),
                    &input,
                )
            });
            if cfg.verbose {
                eprintln!(
                    "parser-fuzz: FINDING {} in {} (seed {seed}, iteration {i}): {message}; input saved to {}",
                    kind.name(),
                    target.name,
                    saved
                        .as_deref()
                        .map_or("(not saved)".into(), |p| p.display().to_string())
                );
            }
            found.insert(k, stats.findings.len());
            stats.findings.push(Finding {
                kind,
                message,
                first_iteration: i,
                count: 1,
                saved,
            });
        };
        match result {
            Ok(outcome) => {
                stats.accepted += outcome & 1;
                if outcomes.insert(outcome) && corpus.len() < MAX_CORPUS && !input.is_empty() {
                    corpus.push(input.clone());
                }
            }
            Err(_) => {
                let (loc, msg) = lock(&PANIC)
                    .take()
                    .unwrap_or_else(|| ("unknown location".into(), "unknown panic".into()));
                record(Kind::Panic, &loc, format!("panicked at {loc}: {msg}"), None);
            }
        }
        if let Some(again) = rerun.filter(|&a| a > cfg.hang_limit) {
            record(
                Kind::Hang,
                "hang",
                format!(
                    "took {:.2} s, and {:.2} s again (limit {:.2} s)",
                    took.as_secs_f64(),
                    again.as_secs_f64(),
                    cfg.hang_limit.as_secs_f64()
                ),
                None,
            );
        }
        if usage.largest > cfg.alloc_cap || usage.peak_growth() > cfg.alloc_cap {
            let key = if usage.largest > cfg.alloc_cap {
                "single"
            } else {
                "live"
            };
            record(
                Kind::Alloc,
                key,
                format!(
                    "largest allocation {} bytes, live total grew by {} bytes (cap {})",
                    usage.largest,
                    usage.peak_growth(),
                    cfg.alloc_cap
                ),
                None,
            );
        }
        i += 1;
        if cfg.verbose && last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "  {}: {} inputs in {:.0} s ({:.0}/s), corpus {}, findings {}",
                target.name,
                i,
                secs,
                i as f64 / secs,
                corpus.len(),
                stats.total_findings()
            );
        }
    }
    stats.elapsed = start.elapsed();
    stats.corpus = corpus.len();
    lock(&CURRENT).abort_path = None;
    stats
}

/// One line per target, as `cargo xtask fuzz` and the CI test print it.
pub fn table(stats: &[Stats]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>10} {:>9} {:>8} {:>9} {:>6} {:>5} {:>5} {:>6} {:>7} {:>9} {:>10}",
        "target",
        "inputs",
        "accepted",
        "seconds",
        "inputs/s",
        "panics",
        "hangs",
        "alloc",
        "unique",
        "corpus",
        "slowest",
        "max alloc"
    );
    for st in stats {
        let _ = writeln!(
            s,
            "{:<16} {:>10} {:>9} {:>8.1} {:>9.0} {:>6} {:>5} {:>5} {:>6} {:>7} {:>7.0}ms {:>8}Ki",
            st.target,
            st.inputs,
            st.accepted,
            st.elapsed.as_secs_f64(),
            st.rate(),
            st.panics,
            st.hangs,
            st.allocs_over_cap,
            st.findings.iter().filter(|f| f.saved.is_some()).count(),
            st.corpus,
            st.slowest.as_secs_f64() * 1000.0,
            st.largest_alloc >> 10
        );
    }
    s
}
