//! Scenarios and the runner that the xtask calls.

use crate::artifacts::{new_artifacts_dir, remove_disposable};
use crate::host::eprintln_always;
use crate::vm::{Vm, VmSpec};
use anyhow::{Context, Result, anyhow, bail};
use disk_layout::Arch;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// VMs run at once by default: the test hosts have two cores, and TCG
/// guests use a core each.
pub const DEFAULT_PARALLEL: usize = 2;

/// Build output folders per arch (each holds disk.raw, build-info.json,
/// keys and a release repo, as the image builder writes them).
#[derive(Clone, Debug, Default)]
pub struct ImageSet {
    pub x86_64: Option<PathBuf>,
    pub arm64: Option<PathBuf>,
    /// What the update scenarios need, per arch.
    pub updates: Vec<(Arch, UpdateInputs)>,
}

/// The inputs of the update scenarios: a second build of the same board (its
/// `release/` is what they publish) and the empty repository whose root.json
/// the first image trusts.
#[derive(Clone, Debug)]
pub struct UpdateInputs {
    pub v2: PathBuf,
    pub repo: PathBuf,
    /// v2 with one package added (`update-delta`); built only when that
    /// scenario runs.
    pub v2_delta: Option<PathBuf>,
}

impl ImageSet {
    pub fn dir(&self, arch: Arch) -> Option<&Path> {
        match arch {
            Arch::X86_64 => self.x86_64.as_deref(),
            Arch::Arm64 => self.arm64.as_deref(),
        }
    }

    pub fn update(&self, arch: Arch) -> Option<&UpdateInputs> {
        self.updates
            .iter()
            .find(|(a, _)| *a == arch)
            .map(|(_, u)| u)
    }

    pub fn set_update(&mut self, arch: Arch, inputs: UpdateInputs) {
        self.updates.retain(|(a, _)| *a != arch);
        self.updates.push((arch, inputs));
    }
}

/// What a scenario gets: its arch, the images, and its artifacts folder.
#[derive(Debug)]
pub struct Ctx {
    pub scenario: String,
    pub arch: Arch,
    pub images: ImageSet,
    /// This scenario's artifacts folder.
    pub artifacts: PathBuf,
    /// Keep disk overlays of failed scenarios for debugging.
    pub keep_on_failure: bool,
    /// The most vCPUs a VM of this scenario gets (the runner lowers it when
    /// scenarios share the host's cores).
    pub max_vcpus: u32,
    vm_dirs: Vec<PathBuf>,
}

impl Ctx {
    /// Creates `<artifacts_root>/<scenario>-<arch>-<timestamp>/`.
    pub fn new(artifacts_root: &Path, scenario: &str, arch: Arch, images: ImageSet) -> Result<Ctx> {
        Ok(Ctx {
            scenario: scenario.to_string(),
            arch,
            images,
            artifacts: new_artifacts_dir(artifacts_root, scenario, arch)?,
            keep_on_failure: true,
            max_vcpus: u32::MAX,
            vm_dirs: Vec::new(),
        })
    }

    /// The build output folder for this arch.
    pub fn image_dir(&self) -> Result<&Path> {
        self.images.dir(self.arch).ok_or_else(|| {
            anyhow!(
                "no {} image was given to scenario {}",
                self.arch.name(),
                self.scenario
            )
        })
    }

    /// A file of the build output, which must exist.
    pub fn image_file(&self, name: &str) -> Result<PathBuf> {
        let p = self.image_dir()?.join(name);
        if !p.exists() {
            bail!(
                "{} not found (was the {} image built?)",
                p.display(),
                self.arch.name()
            );
        }
        Ok(p)
    }

    /// A default spec booting this arch's `disk.raw`.
    pub fn spec(&self) -> Result<VmSpec> {
        Ok(VmSpec::new(self.arch, self.image_file("disk.raw")?))
    }

    /// Starts a VM with its files in the scenario's folder (the first VM) or
    /// in `vmN/` below it (later ones).
    pub fn vm(&mut self, mut spec: VmSpec) -> Result<Vm> {
        spec.smp = spec.smp.clamp(1, self.max_vcpus.max(1));
        let dir = match self.vm_dirs.len() {
            0 => self.artifacts.clone(),
            n => self.artifacts.join(format!("vm{}", n + 1)),
        };
        self.vm_dirs.push(dir.clone());
        Vm::start(spec, &dir)
    }

    /// Applies the keep-on-failure policy once the scenario's VMs are gone:
    /// disk overlays are deleted unless the scenario failed and they are kept.
    pub fn finish(&mut self, passed: bool) {
        if passed || !self.keep_on_failure {
            for d in &self.vm_dirs {
                if let Err(e) = remove_disposable(d) {
                    eprintln_always(&format!("qemu-tests: {e:#}"));
                }
            }
        }
    }
}

/// Makes the `Ctx` of one scenario run.
pub type CtxFactory<'a> = dyn Fn(&Scenario, Arch) -> Result<Ctx> + Sync + 'a;

/// The usual factory: every scenario gets a fresh folder under one root.
#[derive(Clone, Debug)]
pub struct CtxTemplate {
    pub artifacts_root: PathBuf,
    pub images: ImageSet,
    pub keep_on_failure: bool,
}

impl CtxTemplate {
    pub fn make(&self, s: &Scenario, arch: Arch) -> Result<Ctx> {
        let mut ctx = Ctx::new(&self.artifacts_root, s.name, arch, self.images.clone())?;
        ctx.keep_on_failure = self.keep_on_failure;
        Ok(ctx)
    }
}

/// One end-to-end test.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub arches: &'static [Arch],
    pub run: fn(&mut Ctx) -> Result<()>,
    /// About how long it runs on x86_64 under TCG, in seconds: the runner
    /// starts the longest first, so parallel workers finish close together
    /// (a long scenario started last would run alone at the end).
    pub seconds: u32,
}

#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub name: String,
    pub arch: Arch,
    pub passed: bool,
    pub seconds: f64,
    pub artifacts: Option<PathBuf>,
    /// The error, with its context chain and console tail.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub results: Vec<ScenarioResult>,
    /// Named scenarios that do not run on the arch.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// The closing line, exactly `N passed, N failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs scenarios with at most `parallel` at once, printing one line per
/// scenario as it ends (details of a failure follow, indented) and
/// `N passed, N failed` last. Unknown names count as failures.
pub fn run_scenarios_in<S: AsRef<str>>(
    registry: &[Scenario],
    names: &[S],
    arch: Arch,
    ctx_factory: &CtxFactory<'_>,
    parallel: usize,
) -> Report {
    let mut report = Report::default();
    let mut todo: Vec<&Scenario> = Vec::new();
    if names.is_empty() {
        todo.extend(registry.iter().filter(|s| s.arches.contains(&arch)));
    }
    for name in names.iter().map(AsRef::as_ref) {
        match registry.iter().find(|s| s.name == name) {
            Some(s) if s.arches.contains(&arch) => todo.push(s),
            Some(_) => {
                print_line(&format!(
                    "SKIP {name} [{}] (not for this arch)",
                    arch.name()
                ));
                report.skipped.push(name.to_string());
            }
            None => {
                let r = ScenarioResult {
                    name: name.to_string(),
                    arch,
                    passed: false,
                    seconds: 0.0,
                    artifacts: None,
                    error: Some("unknown scenario".into()),
                };
                print_result(&r);
                report.results.push(r);
            }
        }
    }
    let mut order: Vec<usize> = (0..todo.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(todo[i].seconds));
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let workers = parallel.max(1).min(todo.len());
    let vcpus = vcpus_per_vm(host_cores(), workers);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = order.get(n) else { break };
                    let s = todo[i];
                    let r = run_one(s, arch, ctx_factory, vcpus);
                    print_result(&r);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, r));
                }
            });
        }
    });
    let mut done = results.into_inner().unwrap_or_else(|e| e.into_inner());
    // Report in registry/argument order, whatever order they finished in.
    done.sort_by_key(|(i, _)| *i);
    report.results.extend(done.into_iter().map(|(_, r)| r));
    print_line(&report.summary());
    report
}

fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// vCPUs per VM when `workers` scenarios run at once on `cores`: the host's
/// cores shared out, at least one. A TCG vCPU is a host thread that keeps a
/// core busy; two 2-vCPU guests on two cores reached the login prompt in 36 s
/// where two 1-vCPU guests took 30 s (one guest alone: 21 s with 2 vCPUs).
pub fn vcpus_per_vm(cores: usize, workers: usize) -> u32 {
    u32::try_from((cores / workers.max(1)).max(1)).unwrap_or(1)
}

fn run_one(
    s: &Scenario,
    arch: Arch,
    ctx_factory: &CtxFactory<'_>,
    max_vcpus: u32,
) -> ScenarioResult {
    let start = Instant::now();
    let mut artifacts = None;
    let outcome = ctx_factory(s, arch)
        .with_context(|| format!("setting up scenario {}", s.name))
        .and_then(|mut ctx| {
            ctx.max_vcpus = max_vcpus;
            artifacts = Some(ctx.artifacts.clone());
            // A panicking scenario is a failed scenario, not a dead runner.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (s.run)(&mut ctx)))
                .unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "non-string panic".into());
                    Err(anyhow!("panicked: {msg}"))
                });
            // The scenario's VMs were dropped (killed) when `run` returned.
            ctx.finish(r.is_ok());
            r
        });
    ScenarioResult {
        name: s.name.to_string(),
        arch,
        passed: outcome.is_ok(),
        seconds: start.elapsed().as_secs_f64(),
        artifacts,
        error: outcome.err().map(|e| format!("{e:#}")),
    }
}

fn print_line(s: &str) {
    // println! (not a raw stdout write) so `cargo test` captures the runner's
    // own unit tests, whose summary lines would otherwise read like results.
    println!("{s}");
    let _ = std::io::stdout().flush();
}

fn print_result(r: &ScenarioResult) {
    let mut line = format!(
        "{} {} [{}] {:.1} s",
        if r.passed { "PASS" } else { "FAIL" },
        r.name,
        r.arch.name(),
        r.seconds
    );
    if !r.passed {
        if let Some(a) = &r.artifacts {
            line.push_str(&format!("  artifacts: {}", a.display()));
        }
        if let Some(e) = &r.error {
            for l in e.lines() {
                line.push_str("\n    ");
                line.push_str(l);
            }
        }
    }
    print_line(&line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn vcpus_share_the_host_cores() {
        for (cores, workers, want) in [
            (2, 1, 2),
            (2, 2, 1),
            (2, 3, 1),
            (1, 1, 1),
            (8, 2, 4),
            (2, 0, 2),
        ] {
            assert_eq!(
                vcpus_per_vm(cores, workers),
                want,
                "{cores} cores, {workers} workers"
            );
        }
    }

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    fn busy(_: &mut Ctx) -> Result<()> {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    fn fails(ctx: &mut Ctx) -> Result<()> {
        std::fs::write(ctx.artifacts.join("disk.qcow2"), b"kept")?;
        ctx.vm_dirs.push(ctx.artifacts.clone());
        bail!("boom")
    }

    fn panics(_: &mut Ctx) -> Result<()> {
        panic!("oops")
    }

    const BOTH: &[Arch] = &[Arch::X86_64, Arch::Arm64];
    const REG: &[Scenario] = &[
        Scenario {
            name: "a",
            arches: BOTH,
            run: busy,
            seconds: 1,
        },
        Scenario {
            name: "b",
            arches: BOTH,
            run: busy,
            seconds: 1,
        },
        Scenario {
            name: "c",
            arches: BOTH,
            run: busy,
            seconds: 1,
        },
        Scenario {
            name: "d",
            arches: BOTH,
            run: busy,
            seconds: 1,
        },
        Scenario {
            name: "fails",
            arches: BOTH,
            run: fails,
            seconds: 1,
        },
        Scenario {
            name: "panics",
            arches: BOTH,
            run: panics,
            seconds: 1,
        },
        Scenario {
            name: "x86-only",
            arches: &[Arch::X86_64],
            run: busy,
            seconds: 1,
        },
    ];

    #[test]
    fn runner_counts_limits_and_keeps_failures() -> Result<()> {
        let root = std::env::temp_dir().join(format!("qemu-tests-runner-{}", std::process::id()));
        let tpl = CtxTemplate {
            artifacts_root: root.clone(),
            images: ImageSet::default(),
            keep_on_failure: true,
        };
        let factory = |s: &Scenario, a: Arch| tpl.make(s, a);
        let names = ["a", "b", "c", "d", "fails", "panics", "x86-only", "nope"];
        let report = run_scenarios_in(REG, &names, Arch::Arm64, &factory, 2);
        assert_eq!(report.summary(), "4 passed, 3 failed");
        assert_eq!(report.skipped, ["x86-only"]);
        assert!(PEAK.load(Ordering::SeqCst) <= 2);
        let failed = report
            .results
            .iter()
            .find(|r| r.name == "fails")
            .context("fails result")?;
        let dir = failed.artifacts.clone().context("artifacts")?;
        assert!(
            dir.join("disk.qcow2").exists(),
            "overlay of a failed scenario is kept"
        );
        let panicked = report
            .results
            .iter()
            .find(|r| r.name == "panics")
            .context("panics result")?;
        assert!(panicked.error.as_deref().unwrap_or("").contains("oops"));
        // Empty names: everything for the arch.
        let all = run_scenarios_in(REG, &[] as &[&str], Arch::X86_64, &factory, 1);
        assert_eq!(all.results.len(), REG.len());
        std::fs::remove_dir_all(&root)?;
        Ok(())
    }
}
