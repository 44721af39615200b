//! `cargo xtask bench delta`: what a delta update downloads and how long it
//! takes to apply, against the full download, on real Cairn images.
//!
//! Four builds of one board (named `bench`, so one host accepts them all):
//! 1.0.0 (qemu-x86_64's package set), 1.0.1 (the same inputs rebuilt),
//! 1.1.0 (+ htop), 1.2.0 (+ htop + jq). A host running 1.0.0 (its slot A
//! holds the 1.0.0 /usr image) installs (a) 1.0.1, (b) 1.1.0 and (d) 1.2.0
//! (two releases behind) from a loopback repository, once by delta and once
//! with the full download, with the agent's own code.

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
/// (version, packages added to qemu-x86_64)
const RELEASES: [(&str, &[&str]); 4] = [
    ("1.0.0", &[]),
    ("1.0.1", &[]),
    ("1.1.0", &["htop"]),
    ("1.2.0", &["htop", "jq"]),
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
    let mut releases = Vec::new();
    for (version, add) in RELEASES {
        let dir = work.join(format!("board-{version}"));
        std::fs::create_dir_all(&dir)?;
        for f in ["base.toml", "qemu-x86_64.toml"] {
            std::fs::copy(boards.join(f), dir.join(f))?;
        }
        let list: Vec<String> = add.iter().map(|p| format!("{p:?}")).collect();
        let toml = match add.is_empty() {
            true => "extends = \"qemu-x86_64\"\n".to_string(),
            false => format!(
                "extends = \"qemu-x86_64\"\n[debian]\npackages_add = [{}]\n",
                list.join(", ")
            ),
        };
        let board = dir.join(format!("{BOARD}.toml"));
        std::fs::write(&board, toml)?;
        let out = work.join(format!("out-{version}"));
        let t = Instant::now();
        crate::sh(
            Command::new(crate::target_dir().join("release/cairn-build"))
                .args(["build", "--dev-key", "--board"])
                .arg(&board)
                .args(["--version", version, "--out"])
                .arg(&out),
        )
        .with_context(|| format!("building {version}"))?;
        println!(
            "built {version} (+{add:?}) in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        releases.push(out.join("release"));
    }
    let key = PublicKey::load_public(crate::root().join("keys/cairn-DEVELOPMENT-ONLY.public"))
        .context("loading the development key")?;
    let repo = work.join("repo");
    let e = |e: Box<dyn std::error::Error + Send + Sync>| anyhow!("{e}");
    let refs: Vec<&Path> = releases.iter().map(PathBuf::as_path).collect();
    let root = fixture::make_repo(&repo, &refs).map_err(e)?;
    let server = fixture::Server::start(&repo)?;
    let manifest = |v: &str| -> Result<Manifest> {
        let d = repo.join(format!("releases/{BOARD}/{v}"));
        Ok(Manifest::load(&d, std::slice::from_ref(&key), 1)?)
    };
    let old = manifest("1.0.0")?;
    println!();
    println!(
        "{:<32} {:>12} {:>12} {:>7} {:>9} {:>9}",
        "case", "downloaded", "full /usr", "ratio", "delta s", "full s"
    );
    for (case, to) in [
        ("(a) same inputs rebuilt", "1.0.1"),
        ("(b) one package added (htop)", "1.1.0"),
        ("(d) two releases behind", "1.2.0"),
    ] {
        let m = manifest(to)?;
        let usr = m.image("usr")?;
        let full_usr: u64 = usr.chunks.iter().map(|c| c.zsize).sum();
        let mut runs = Vec::new();
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
            // The host runs 1.0.0: its slot A holds that /usr.
            let mut a = std::fs::OpenOptions::new()
                .write(true)
                .open(&target.slot_a)?;
            release_manifest::extract_image(&releases[0], &old, "usr", &mut a)?;
            drop(a);
            let agent = bench_agent(&target, &state, &server.url, &root, &key, full);
            let entry = agent
                .check_version(&Version::parse(to)?)?
                .decision
                .chosen
                .ok_or_else(|| anyhow!("the check did not choose {to}"))?;
            let t = Instant::now();
            let mut said = Vec::new();
            let out = agent.apply(&entry, &mut |e| {
                // The delta's outcome, or why the full image was downloaded.
                if let cairn_updater::Event::Phase(p) = e
                    && (p.starts_with("delta: ") && p.contains("copied")
                        || p.starts_with("no delta"))
                {
                    said.push(p);
                }
            })?;
            runs.push((out.bytes_downloaded, t.elapsed().as_secs_f64()));
            for p in said {
                println!("  {to}: {p}");
            }
        }
        let (delta, full) = (runs[0], runs[1]);
        println!(
            "{case:<32} {:>12} {:>12} {:>6.2}% {:>9.2} {:>9.2}",
            delta.0,
            full_usr,
            100.0 * delta.0 as f64 / full_usr as f64,
            delta.1,
            full.1
        );
        println!("{:<32} {:>12} (full download: {} bytes)", "", "", full.0);
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
        "downloaded = every body byte the host received: manifest, boot files, index, /usr ranges"
    );
    Ok(())
}

fn bench_agent(
    target: &Target,
    state: &Path,
    url: &str,
    root: &Root,
    key: &PublicKey,
    full: bool,
) -> Agent {
    let mut agent = fixture::agent(
        target,
        state,
        url,
        root,
        Slot::A,
        "1.0.0",
        HttpOptions::default(),
    );
    agent.host = Host {
        booted_slot: Slot::A,
        booted_version: Version::parse("1.0.0").expect("a valid version"),
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
