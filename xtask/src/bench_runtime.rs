//! `cargo xtask bench runtime`: start-to-exit latency of `/bin/true` in a
//! busybox bundle, cairn-run against Debian's runc in the same run, plus a
//! hang count over many cairn-run runs.
//!
//! Options: `--runs N` (timed runs per runtime, default 200, at least 200
//! for reported figures) and `--hang-runs N` (default 1000).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A run taking longer than this is a hang.
const HANG_AFTER: Duration = Duration::from_secs(10);

pub fn run(args: &[String]) -> Result<()> {
    let runs = flag(args, "--runs")?.unwrap_or(200);
    let hang_runs = flag(args, "--hang-runs")?.unwrap_or(1000);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent dir")?
        .to_path_buf();
    let target = crate::target_dir();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "cairn-run"])
        .current_dir(&root)
        .status()
        .context("cannot run cargo build for cairn-run")?;
    if !status.success() {
        bail!("cargo build --release -p cairn-run failed");
    }
    let cairn = target.join("release/cairn-run");
    let runc = which("runc")
        .context("runc not found: install Debian's runc package (cargo xtask setup)")?;
    let busybox =
        which("busybox").context("busybox not found: install Debian's busybox-static package")?;

    let work = tempdir()?;
    let bundle = work.join("bundle");
    make_bundle(&bundle, &busybox)?;
    let cairn_root = work.join("cairn-state");
    let runc_root = work.join("runc-state");

    println!("bundle: busybox-static, /bin/true, pid/net/ipc/uts/mount namespaces, no seccomp");
    println!("timed runs: {runs} per runtime, alternating which runtime goes first");
    let mut ours = Vec::with_capacity(runs);
    let mut theirs = Vec::with_capacity(runs);
    // A few untimed runs warm the page cache and the cgroup hierarchy.
    for i in 0..5 {
        one(&cairn, &cairn_root, &bundle, &format!("w{i}"))?;
        one(&runc, &runc_root, &bundle, &format!("w{i}"))?;
    }
    for i in 0..runs {
        let id = format!("b{i}");
        let mut pair = [
            (&cairn, &cairn_root, &mut ours),
            (&runc, &runc_root, &mut theirs),
        ];
        if i % 2 == 1 {
            pair.reverse();
        }
        for (bin, state, out) in pair {
            match one(bin, state, &bundle, &id)? {
                Some(d) => out.push(d),
                None => bail!(
                    "{} run {i} hung for more than {HANG_AFTER:?}",
                    bin.display()
                ),
            }
        }
    }
    let (om, o90) = (percentile(&mut ours, 50.0), percentile(&mut ours, 90.0));
    let (tm, t90) = (percentile(&mut theirs, 50.0), percentile(&mut theirs, 90.0));
    println!(
        "cairn-run run: median {:.1} ms, p90 {:.1} ms",
        om * 1e3,
        o90 * 1e3
    );
    println!(
        "runc run:      median {:.1} ms, p90 {:.1} ms",
        tm * 1e3,
        t90 * 1e3
    );
    println!(
        "ratio cairn-run/runc: median {:.2}x, p90 {:.2}x (goal: median <= 0.5x)",
        om / tm,
        o90 / t90
    );

    let mut hangs = 0;
    let mut failures = 0;
    let t = Instant::now();
    for i in 0..hang_runs {
        match one(&cairn, &cairn_root, &bundle, &format!("h{i}")) {
            Ok(Some(_)) => {}
            Ok(None) => hangs += 1,
            Err(e) => {
                failures += 1;
                eprintln!("run h{i}: {e:#}");
            }
        }
    }
    println!(
        "hangs: {hangs} of {hang_runs} cairn-run runs (> {}s each; goal 0), failures {failures}, {:.1} s total",
        HANG_AFTER.as_secs(),
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&work);
    if hangs > 0 || failures > 0 {
        bail!("{hangs} hang(s) and {failures} failure(s) in {hang_runs} runs");
    }
    Ok(())
}

fn flag(args: &[String], name: &str) -> Result<Option<usize>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a number"))?;
            Ok(Some(v.parse().with_context(|| {
                format!("{name} {v:?} is not a number")
            })?))
        }
    }
}

/// Times `BIN --root STATE run --bundle B ID` to its exit, then deletes the
/// container. `None` is a hang: the run was killed after HANG_AFTER.
fn one(bin: &Path, state: &Path, bundle: &Path, id: &str) -> Result<Option<f64>> {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .arg("--root")
        .arg(state)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let result = wait_bounded(&mut child, start)?;
    let elapsed = start.elapsed().as_secs_f64();
    // Both runtimes delete after a foreground run; this cleans up after a hang.
    let _ = Command::new(bin)
        .arg("--root")
        .arg(state)
        .args(["delete", "--force", id])
        .stderr(Stdio::null())
        .status();
    match result {
        None => Ok(None),
        Some(true) => Ok(Some(elapsed)),
        Some(false) => {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            bail!("{} run {id} failed: {}", bin.display(), err.trim())
        }
    }
}

/// Some(success) once the child exits, None after HANG_AFTER (killed).
/// Polls with a short sleep so a hang cannot block the benchmark.
fn wait_bounded(child: &mut Child, start: Instant) -> Result<Option<bool>> {
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st.success()));
        }
        if start.elapsed() > HANG_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cairn-bench-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The busybox bundle with the config `runc spec` writes, running /bin/true.
fn make_bundle(bundle: &Path, busybox: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("cannot copy {}", busybox.display()))?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    let status = Command::new(which("runc").context("runc not found")?)
        .arg("spec")
        .current_dir(bundle)
        .status()?;
    if !status.success() {
        bail!("runc spec failed in {}", bundle.display());
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = serde_json::json!(false);
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}
