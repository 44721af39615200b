//! `cargo xtask bench delta`: what a delta update downloads and how long it
//! takes to apply, against the full download, on real Cairn images.
//!
//! Builds of one board (named `bench`, so one host accepts them all): 1.0.0
//! (qemu-x86_64's package set) twice, 1.1.0 (+ htop), 1.2.0 (+ htop + jq)
//! and 1.3.0 (another kernel flavour). A host running 1.0.0 (its slot A
//! holds the 1.0.0 /usr image) installs (a) the second build of 1.0.0 (the
//! same inputs rebuilt, from a repository of its own, the host then saying
//! it runs 0.9.0), (b) 1.1.0, (c) 1.3.0 and (d) 1.2.0 (two releases behind)
//! from a loopback repository, once by delta and once with the full
//! download, with the agent's own code, the agent seeing the kernel command
//! line a host booted from 1.0.0 has (its dm-verity parameters), so a delta
//! plans from the slot's verified hash tree when the salts match. Before
//! that it prints whether the rebuild is byte-identical and where the blocks
//! (b) must fetch are.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use cairn_updater::fixture;
use cairn_updater::http::{Http, HttpOptions};
use cairn_updater::state::StateDir;
use cairn_updater::{Agent, Host, Target};
use disk_layout::{Arch, Slot};
use release_manifest::{Manifest, PublicKey, Version};
use release_repo::Root;

const BOARD: &str = "bench";
/// (output name, version, packages added to qemu-x86_64, kernel package)
type Build = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
);
const BUILDS: [Build; 5] = [
    ("1.0.0", "1.0.0", &[], None),
    ("1.0.0-rebuild", "1.0.0", &[], None),
    ("1.1.0", "1.1.0", &["htop"], None),
    ("1.2.0", "1.2.0", &["htop", "jq"], None),
    // qemu-x86_64's is linux-image-amd64.
    ("1.3.0", "1.3.0", &[], Some("linux-image-cloud-amd64")),
];

pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        anyhow::bail!("benchmark \"delta\" takes no options");
    }
    crate::setup::setup()?;
    crate::artifacts(Arch::X86_64)?;
    let work = crate::target_dir().join("bench-delta");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let boards = crate::root().join("board-configs");
    let mut releases: Vec<(&str, PathBuf)> = Vec::new();
    for (name, version, add, kernel) in BUILDS {
        let dir = work.join(format!("board-{name}"));
        std::fs::create_dir_all(&dir)?;
        for f in ["base.toml", "qemu-x86_64.toml"] {
            std::fs::copy(boards.join(f), dir.join(f))?;
        }
        let mut toml = "extends = \"qemu-x86_64\"\n".to_string();
        if !add.is_empty() || kernel.is_some() {
            toml += "[debian]\n";
        }
        if !add.is_empty() {
            let list: Vec<String> = add.iter().map(|p| format!("{p:?}")).collect();
            toml += &format!("packages_add = [{}]\n", list.join(", "));
        }
        if let Some(k) = kernel {
            toml += &format!("kernel = {k:?}\n");
        }
        let board = dir.join(format!("{BOARD}.toml"));
        std::fs::write(&board, toml)?;
        let out = work.join(format!("out-{name}"));
        let t = Instant::now();
        let built = crate::sh(
            Command::new(crate::target_dir().join("release/cairn-build"))
                .args(["build", "--dev-key", "--board"])
                .arg(&board)
                .args(["--version", version, "--out"])
                .arg(&out),
        )
        .with_context(|| format!("building {name}"));
        match built {
            Ok(()) => {}
            // Another kernel flavour may lack a module the board names:
            // say so and measure the rest.
            Err(e) if kernel.is_some() => {
                println!("case (c) not measured: {e:#}");
                continue;
            }
            Err(e) => return Err(e),
        }
        println!(
            "built {name} (+{add:?}, kernel {kernel:?}) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        releases.push((name, out.join("release")));
    }
    let release = |name: &str| -> Result<PathBuf> {
        releases
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| anyhow!("{name} was not built"))
    };
    let key = PublicKey::load_public(crate::root().join("keys/cairn-DEVELOPMENT-ONLY.public"))
        .context("loading the development key")?;
    let load = |dir: &Path| -> Result<Manifest> {
        Ok(Manifest::load(dir, std::slice::from_ref(&key), 1)?)
    };
    let first = release("1.0.0")?;
    let old = load(&first)?;
    let old_usr = read_usr(&first, &old)?;
    let rebuild = release("1.0.0-rebuild")?;
    let again = read_usr(&rebuild, &load(&rebuild)?)?;
    describe_rebuild(&old_usr, &again);
    let htop = release("1.1.0")?;
    where_blocks_change(&old_usr, &read_usr(&htop, &load(&htop)?)?, &load(&htop)?)?;

    let e = |e: Box<dyn std::error::Error + Send + Sync>| anyhow!("{e}");
    // The rebuild has the same version: a repository of its own.
    let repo_a = work.join("repo-rebuild");
    let root_a = fixture::make_repo(&repo_a, &[rebuild.as_path()]).map_err(e)?;
    let server_a = fixture::Server::start(&repo_a)?;
    let repo = work.join("repo");
    let mut main: Vec<PathBuf> = vec![first.clone()];
    for n in ["1.1.0", "1.2.0", "1.3.0"] {
        if let Ok(p) = release(n) {
            main.push(p);
        }
    }
    let refs: Vec<&Path> = main.iter().map(PathBuf::as_path).collect();
    let root = fixture::make_repo(&repo, &refs).map_err(e)?;
    let server = fixture::Server::start(&repo)?;
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>7} {:>9} {:>9}",
        "case", "downloaded", "full /usr", "ratio", "delta s", "full s"
    );
    let mut cases = vec![
        (
            "(a) same inputs rebuilt",
            "1.0.0",
            "0.9.0",
            &repo_a,
            &root_a,
            &server_a.url,
        ),
        (
            "(b) one package added (htop)",
            "1.1.0",
            "1.0.0",
            &repo,
            &root,
            &server.url,
        ),
    ];
    if release("1.3.0").is_ok() {
        cases.push((
            "(c) kernel flavour changed",
            "1.3.0",
            "1.0.0",
            &repo,
            &root,
            &server.url,
        ));
    }
    cases.push((
        "(d) two releases behind",
        "1.2.0",
        "1.0.0",
        &repo,
        &root,
        &server.url,
    ));
    // The builds left GBs of disk images to write back: flush them first, or
    // the first measured apply's fsyncs (case (a), delta) wait for them.
    crate::sh(&mut Command::new("sync")).context("sync before measuring")?;
    for (case, to, booted, repo, root, url) in cases {
        let m = load(&repo.join(format!("releases/{BOARD}/{to}")))?;
        let usr = m.image("usr")?;
        let full_usr: u64 = usr.chunks.iter().map(|c| c.zsize).sum();
        let mut runs = Vec::new();
        let mut usr_bytes = None;
        for full in [false, true] {
            let host = work.join("host");
            let state = work.join("state");
            for d in [&host, &state] {
                if d.exists() {
                    std::fs::remove_dir_all(d)?;
                }
            }
            let slot = usr.size.max(old.image("usr")?.size) + (1 << 20);
            let target = fixture::make_target(&host, slot).map_err(e)?;
            // The host runs 1.0.0: its slot A holds that /usr. Synced, as
            // a booted slot is: otherwise the first fsync of the measured
            // apply (its boot files, whichever run it is) also writes back
            // these 110 MB (ext4 commits ordered data with the journal).
            let slot_a = std::fs::OpenOptions::new()
                .write(true)
                .open(&target.slot_a)?;
            std::os::unix::fs::FileExt::write_all_at(&slot_a, &old_usr, 0)?;
            slot_a.sync_all()?;
            let agent = bench_agent(&target, &state, url, root, &key, full, booted);
            // The kernel command line a host booted from slot A has: the
            // agent plans from that slot's verified dm-verity tree when the
            // new image shares its salt (every release of a board does).
            cairn_updater::delta::set_booted_cmdline(Some(booted_cmdline(&old)?));
            let entry = agent
                .check_version(&Version::parse(to)?)?
                .decision
                .chosen
                .ok_or_else(|| anyhow!("the check did not choose {to}"))?;
            let t = Instant::now();
            let mut said = Vec::new();
            // Every phase with its start time: where the apply time goes.
            let mut timeline: Vec<(f64, String)> = Vec::new();
            let out = agent.apply(&entry, &mut |e| {
                if let cairn_updater::Event::Phase(p) = e {
                    timeline.push((t.elapsed().as_secs_f64(), p.clone()));
                    // The delta's outcome, or why the full image was downloaded.
                    if p.starts_with("delta: ") && p.contains("copied") || p.starts_with("no delta")
                    {
                        said.push(p);
                    }
                }
            })?;
            runs.push((out.bytes_downloaded, t.elapsed().as_secs_f64()));
            for p in said {
                if !full && let Some(b) = delta_usr_bytes(&p) {
                    usr_bytes = Some(b);
                }
                println!("  {to}: {p}");
            }
            let how = if full { "full" } else { "delta" };
            for (at, p) in timeline {
                let short: String = p.chars().take(90).collect();
                println!("    {how} {at:>6.2} s  {short}");
            }
        }
        let (delta, full) = (runs[0], runs[1]);
        // The agent's own count of index and range bytes; after a fallback,
        // what the delta run received beyond the full run's manifest,
        // signatures and boot files.
        let usr_delta = usr_bytes.unwrap_or(delta.0.saturating_sub(full.0 - full_usr.min(full.0)));
        println!(
            "{case:<32} {:>12} {:>12} {:>6.2}% {:>9.2} {:>9.2}",
            usr_delta,
            full_usr,
            100.0 * usr_delta as f64 / full_usr as f64,
            delta.1,
            full.1
        );
        println!(
            "{:<32} {:>12} (all bytes received: delta {}, full {})",
            "", "", delta.0, full.0
        );
    }
    let index = old.image(&block_delta::index_image_name("usr"))?;
    let full_old: u64 = old.image("usr")?.chunks.iter().map(|c| c.zsize).sum();
    println!(
        "\nblock index of 1.0.0: {} bytes = {:.2} % of its full /usr payload ({} bytes)",
        index.size,
        100.0 * index.size as f64 / full_old as f64,
        full_old
    );
    println!(
        "downloaded = the /usr part of what the host received (index + ranges for a delta): all bytes received less the manifest, signatures and boot files"
    );
    Ok(())
}

/// Range bytes + index bytes from the agent's "delta: … (X bytes + Y of
/// index; …" line.
fn delta_usr_bytes(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once(" requests (")?;
    let (ranges, rest) = rest.split_once(" bytes + ")?;
    let (index, _) = rest.split_once(" of index")?;
    Some(ranges.parse::<u64>().ok()? + index.parse::<u64>().ok()?)
}

fn read_usr(dir: &Path, m: &Manifest) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    release_manifest::extract_image(dir, m, "usr", &mut out)
        .with_context(|| format!("reading the usr image of {}", dir.display()))?;
    Ok(out)
}

/// Runs of 4 KiB blocks where `a` and `b` differ (`b`'s extra length counts).
fn differing_runs(a: &[u8], b: &[u8]) -> Vec<(u64, u64)> {
    let bs = block_delta::BLOCK_SIZE as usize;
    let n = a.len().max(b.len()).div_ceil(bs);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for i in 0..n {
        let (x, y) = (a.get(i * bs..(i + 1) * bs), b.get(i * bs..(i + 1) * bs));
        if x != y {
            match runs.last_mut() {
                Some((s, l)) if *s + *l == i as u64 => *l += 1,
                _ => runs.push((i as u64, 1)),
            }
        }
    }
    runs
}

/// Whether building the same inputs twice gave the same /usr, and if not where
/// the two differ.
fn describe_rebuild(a: &[u8], b: &[u8]) {
    if a == b {
        println!("(a) the rebuilt 1.0.0 /usr is byte-identical to the first build");
        return;
    }
    let runs = differing_runs(a, b);
    let blocks: u64 = runs.iter().map(|r| r.1).sum();
    println!(
        "(a) the rebuilt 1.0.0 /usr differs: {} vs {} bytes, {blocks} blocks in {} runs; first runs (block, count): {:?}",
        a.len(),
        b.len(),
        runs.len(),
        &runs[..runs.len().min(12)]
    );
}

/// Where the blocks of `new` that `old` does not hold anywhere sit: data area
/// (in tenths of it) or hash area; the runs of them.
fn where_blocks_change(old: &[u8], new: &[u8], m: &Manifest) -> Result<()> {
    let bs = block_delta::BLOCK_SIZE as usize;
    let have: std::collections::HashSet<&[u8]> = old.chunks_exact(bs).collect();
    let verity = m
        .image("usr")?
        .verity
        .ok_or_else(|| anyhow!("1.1.0 has no verity"))?;
    let data = verity.data_blocks;
    let mut tenths = [0u64; 10];
    let (mut hash_area, mut runs, mut last) = (0u64, Vec::<(u64, u64)>::new(), None);
    for (i, b) in new.chunks_exact(bs).enumerate() {
        let i = i as u64;
        if have.contains(b) {
            continue;
        }
        if i >= data {
            hash_area += 1;
        } else {
            tenths[(i * 10 / data) as usize] += 1;
        }
        match (runs.last_mut(), last) {
            (Some((_, l)), Some(p)) if p + 1 == i => *l += 1,
            _ => runs.push((i, 1)),
        }
        last = Some(i);
    }
    let total: u64 = tenths.iter().sum::<u64>() + hash_area;
    println!(
        "(b) 1.1.0 blocks not in 1.0.0: {total} of {} ({hash_area} in the hash area, computed by the host); data area by tenths: {tenths:?}",
        new.len() / bs
    );
    let mut longest = runs.clone();
    longest.sort_by_key(|r| std::cmp::Reverse(r.1));
    println!(
        "    {} runs; single blocks: {}; longest (block, count): {:?}",
        runs.len(),
        runs.iter().filter(|r| r.1 == 1).count(),
        &longest[..longest.len().min(10)]
    );
    Ok(())
}

/// `usrhash=… cairn.verity=…` of the release `m` (what its boot files
/// give the kernel).
fn booted_cmdline(m: &Manifest) -> Result<String> {
    let v = m
        .image("usr")?
        .verity
        .ok_or_else(|| anyhow!("the booted release's usr image has no verity"))?
        .to_info();
    Ok(format!(
        "{}={} {}={}:{}:{}",
        disk_layout::cmdline::USRHASH,
        v.root_hash_hex(),
        disk_layout::cmdline::VERITY,
        v.data_blocks,
        v.hash_offset,
        v.salt_hex()
    ))
}

fn bench_agent(
    target: &Target,
    state: &Path,
    url: &str,
    root: &Root,
    key: &PublicKey,
    full: bool,
    booted: &str,
) -> Agent {
    let mut agent = fixture::agent(
        target,
        state,
        url,
        root,
        Slot::A,
        booted,
        HttpOptions::default(),
    );
    agent.host = Host {
        booted_slot: Slot::A,
        booted_version: Version::parse(booted).expect("a valid version"),
        board: BOARD.into(),
        arch: Arch::X86_64.name().into(),
        release_keys: vec![*key],
        development_key: true,
    };
    agent.http = Http::new(url, HttpOptions::default());
    agent.state = StateDir::new(state);
    agent.ignore_wave = true;
    agent.full_download = full;
    agent
}
