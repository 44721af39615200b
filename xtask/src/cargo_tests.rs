//! The unit and integration tests of `cargo xtask test`: cargo builds every
//! test binary of the workspace once (`cargo test --no-run`), then they run
//! two at a time, the longest first, each as `cargo test` would run it (in
//! its package's folder, with `CARGO_MANIFEST_DIR` and `CARGO_PKG_NAME`).
//!
//! Why not plain `cargo test`: it runs the 90 binaries one after the other,
//! and the longest (the image builder's, which builds a real image) spends a
//! minute and a half mostly in one core-bound tool while the other core
//! idles. Each binary's output is printed whole when it ends, so two never
//! interleave.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Test binaries started first because they run longest (target names).
const LONGEST_FIRST: &[&str] = &["image", "firmware", "apps", "fleet_etcd", "oci_cli"];

/// One test binary cargo built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestBinary {
    pub package: String,
    /// The target's name (`image` for tests/image.rs, the crate's for unit tests).
    pub target: String,
    /// `lib`, `bin` or `test`.
    pub kind: String,
    pub executable: PathBuf,
    /// The package's folder: cargo runs tests from there.
    pub dir: PathBuf,
}

/// The test binaries in `cargo build --message-format=json` output (one JSON
/// object per line), in the order they were reported.
pub fn parse_artifacts(json_lines: &str) -> Result<Vec<TestBinary>> {
    let mut out = Vec::new();
    for line in json_lines.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("cargo printed a line that is not JSON: {line}"))?;
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let manifest = v["manifest_path"]
            .as_str()
            .context("a compiler-artifact message without manifest_path")?;
        let dir = Path::new(manifest)
            .parent()
            .context("manifest_path without a folder")?;
        let package = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(TestBinary {
            package: package_name(&v).unwrap_or(package),
            target: v["target"]["name"].as_str().unwrap_or_default().to_string(),
            kind: v["target"]["kind"][0]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            executable: PathBuf::from(exe),
            dir: dir.to_path_buf(),
        });
    }
    Ok(out)
}

/// The package name from a package id: `path+file:///…/dir#name@0.1.0` or
/// `path+file:///…/name#0.1.0`.
fn package_name(v: &serde_json::Value) -> Option<String> {
    let id = v["package_id"].as_str()?;
    let (path, frag) = id.rsplit_once('#')?;
    Some(match frag.split_once('@') {
        Some((name, _)) => name.to_string(),
        None => path.rsplit('/').next()?.to_string(),
    })
}

/// The order to start them in: [`LONGEST_FIRST`], then the rest as built.
pub fn schedule(mut bins: Vec<TestBinary>) -> Vec<TestBinary> {
    let rank = |b: &TestBinary| {
        LONGEST_FIRST
            .iter()
            .position(|n| b.kind == "test" && b.target == *n)
            .unwrap_or(LONGEST_FIRST.len())
    };
    // Stable: within a rank, cargo's order.
    bins.sort_by_key(|b| rank(b));
    bins
}

struct Outcome {
    label: String,
    ok: bool,
}

/// Builds the workspace's tests with `cargo` (release), then runs them
/// `parallel` at a time with `env` set; fails naming every failed binary.
pub fn run(cargo: &mut Command, env: &[(&str, &str)], parallel: usize) -> Result<()> {
    let t = Instant::now();
    cargo
        .args([
            "test",
            "--workspace",
            "--release",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let built = cargo.output().context("cannot run cargo")?;
    if !built.status.success() {
        bail!("building the tests failed ({})", built.status);
    }
    let bins = schedule(parse_artifacts(&String::from_utf8_lossy(&built.stdout))?);
    println!(
        "ci: {} test binaries built in {:.0} s; running {parallel} at a time",
        bins.len(),
        t.elapsed().as_secs_f64()
    );
    let queue = Mutex::new(bins.into_iter().collect::<VecDeque<_>>());
    let outcomes = Mutex::new(Vec::new());
    let print = Mutex::new(());
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| {
                while let Some(b) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                    let o = run_one(&b, env, &print);
                    if let Ok(mut v) = outcomes.lock() {
                        v.push(o);
                    }
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_default();
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.label.as_str())
        .collect();
    println!(
        "ci: {} test binaries passed, {} failed, in {:.0} s",
        outcomes.len() - failed.len(),
        failed.len(),
        t.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("test binaries failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The doc tests, which `--no-run` does not build.
pub fn run_doc(cargo: &mut Command, env: &[(&str, &str)]) -> Result<()> {
    let status = cargo
        .args(["test", "--workspace", "--release", "--doc"])
        .envs(env.iter().copied())
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("doc tests failed ({status})");
    }
    Ok(())
}

fn run_one(b: &TestBinary, env: &[(&str, &str)], print: &Mutex<()>) -> Outcome {
    let label = format!("{} {} {}", b.package, b.kind, b.target);
    let t = Instant::now();
    let out = Command::new(&b.executable)
        .current_dir(&b.dir)
        .env("CARGO_MANIFEST_DIR", &b.dir)
        .env("CARGO_PKG_NAME", &b.package)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output();
    let secs = t.elapsed().as_secs_f64();
    let _guard = print.lock();
    println!("     Running {label} ({})", b.executable.display());
    let ok = match out {
        Ok(o) => {
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            o.status.success()
        }
        Err(e) => {
            println!("cannot run {}: {e}", b.executable.display());
            false
        }
    };
    println!(
        "     {} {label} in {secs:.1} s",
        if ok { "Passed" } else { "FAILED" }
    );
    Outcome { label, ok }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/image-builder#cairn-build@0.1.0","manifest_path":"/w/image-builder/Cargo.toml","target":{"kind":["lib"],"name":"cairn_build"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/image-builder#cairn-build@0.1.0","manifest_path":"/w/image-builder/Cargo.toml","target":{"kind":["test"],"name":"publish"},"profile":{"test":true},"executable":"/t/publish-1"}
{"reason":"compiler-artifact","package_id":"path+file:///w/lib/gpt-slots#0.1.0","manifest_path":"/w/lib/gpt-slots/Cargo.toml","target":{"kind":["lib"],"name":"gpt_slots"},"profile":{"test":true},"executable":"/t/gpt_slots-2"}
{"reason":"compiler-artifact","package_id":"path+file:///w/image-builder#cairn-build@0.1.0","manifest_path":"/w/image-builder/Cargo.toml","target":{"kind":["test"],"name":"image"},"profile":{"test":true},"executable":"/t/image-3"}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn test_binaries_are_found_with_their_package_and_folder() {
        let bins = parse_artifacts(JSON).unwrap();
        let got: Vec<(&str, &str, &str, &str)> = bins
            .iter()
            .map(|b| {
                (
                    b.package.as_str(),
                    b.kind.as_str(),
                    b.target.as_str(),
                    b.dir.to_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("cairn-build", "test", "publish", "/w/image-builder"),
                ("gpt-slots", "lib", "gpt_slots", "/w/lib/gpt-slots"),
                ("cairn-build", "test", "image", "/w/image-builder"),
            ]
        );
    }

    #[test]
    fn the_longest_start_first_and_the_rest_keep_their_order() {
        let order: Vec<String> = schedule(parse_artifacts(JSON).unwrap())
            .into_iter()
            .map(|b| b.target)
            .collect();
        assert_eq!(order, ["image", "publish", "gpt_slots"]);
    }

    #[test]
    fn a_line_that_is_not_json_is_an_error() {
        assert!(parse_artifacts("{not json").is_err());
    }
}
