//! The update benchmark as ignored tests (CAIRN_BENCH_MIB sets the /usr size,
//! default 1024):
//!
//! * `bench_update`: the agent in this process (`cargo xtask bench update` calls
//!   `cairn_updater::fixture::bench_update` the same way);
//! * `bench_cairnctl`: what `cargo xtask bench update` measures, with this
//!   build's `cairnctl`: a release served over loopback HTTP, `cairnctl update`
//!   against a file-backed slot (time and peak RSS of the process), and the
//!   baseline `zstd -d | dd oflag=direct` of the same chunks in the same run.
//!
//! `cargo test -p cairn-updater --release --test bench -- --ignored --nocapture`
//! (`CAIRN_BENCH_RUNS=<n>`: n agent/baseline pairs and their median ratio)
//! (`CAIRN_UPDATER_BIN_DIR=<dir>`: the `cairnctl` in `<dir>`, e.g. the static
//! musl build that ships, instead of this build's).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cairn_updater::fixture;

fn mib() -> u64 {
    std::env::var("CAIRN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

#[test]
#[ignore = "benchmark: writes about 3 GiB to the temp dir"]
fn bench_update() {
    let tmp = tempfile::tempdir().unwrap();
    let r = fixture::bench_update(tmp.path(), mib()).unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
}

/// Runs `cmd` and returns (seconds, peak RSS in KiB). The RSS is the largest
/// of the children waited for so far: cairnctl, as the baseline's `zstd` and
/// `dd` stay far below it.
fn timed_rss(cmd: &mut Command) -> (f64, u64) {
    let t = Instant::now();
    let st = cmd.status().expect("spawn");
    let secs = t.elapsed().as_secs_f64();
    assert!(st.success(), "{cmd:?}: {st}");
    // SAFETY: rusage is plain data that getrusage fills.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to our own struct.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    (secs, ru.ru_maxrss as u64)
}

#[test]
#[ignore = "benchmark: writes about 3 GiB to the temp dir"]
fn bench_cairnctl() {
    let mib = mib();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rel = fixture::make_release(
        &dir.join("build"),
        "2.0.0",
        mib << 20,
        release_manifest::DEFAULT_CHUNK_SIZE,
        99,
    )
    .unwrap();
    let repo = dir.join("repo");
    let root = fixture::make_repo(&repo, &[&rel]).unwrap();
    fixture::write_host_files(dir, &root, "[update]\nchannel = \"stable\"\n").unwrap();
    let server = fixture::Server::start(&repo).unwrap();
    let p = |x: &Path| x.display().to_string();
    let manifest = release_manifest::Manifest::from_json(
        &std::fs::read(rel.join(release_manifest::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let usr = manifest.image("usr").unwrap();
    let files: Vec<String> = usr.chunks.iter().map(|c| p(&repo.join(&c.file))).collect();
    let mb = usr.size as f64 / 1e6;
    println!("release: {mib} MiB /usr in {} chunks", usr.chunks.len());
    // On a shared machine one pair of runs says little: CAIRN_BENCH_RUNS pairs,
    // agent then baseline back to back, and the median ratio.
    let runs: usize = std::env::var("CAIRN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut ratios = Vec::new();
    for _ in 0..runs.max(1) {
        let host = dir.join("host");
        let _ = std::fs::remove_dir_all(&host);
        let _ = std::fs::remove_dir_all(dir.join("state"));
        fixture::make_target(&host, (mib + mib / 64 + 8) << 20).unwrap();
        let (agent_s, agent_rss) = timed_rss(
            Command::new(match std::env::var_os("CAIRN_UPDATER_BIN_DIR") {
                Some(d) => Path::new(&d).join("cairnctl"),
                None => env!("CARGO_BIN_EXE_cairnctl").into(),
            })
            .args(fixture::cairnctl_args(dir, &server.url))
            .args(["update", "--now"])
            .stdout(std::process::Stdio::null()),
        );
        let _ = std::fs::remove_file(dir.join("baseline.img"));
        let t = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat \"$@\" | zstd -dcq | dd of={} bs=4M oflag=direct iflag=fullblock status=none",
                p(&dir.join("baseline.img"))
            ))
            .arg("sh")
            .args(&files)
            .status()
            .unwrap();
        assert!(st.success());
        let base_s = t.elapsed().as_secs_f64();
        println!(
            "cairnctl update: {agent_s:.2} s, {:.0} MB/s, peak RSS {:.1} MiB; \
             baseline zstd -d | dd oflag=direct: {base_s:.2} s, {:.0} MB/s; ratio {:.2}",
            mb / agent_s,
            agent_rss as f64 / 1024.0,
            mb / base_s,
            base_s / agent_s
        );
        ratios.push(base_s / agent_s);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio agent/baseline: median {:.2} of {} runs (min {:.2}, max {:.2}; goal >= 0.9)",
        ratios[ratios.len() / 2],
        ratios.len(),
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
