//! Benchmarks: commands that print figures (not timed tests).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::{artifacts, root, setup};
use disk_layout::Arch;

pub fn run(name: &str) -> Result<()> {
    match name {
        "build" => build(),
        "boot" => boot(&[]),
        "update" => update(),
        other => bail!(
            "unknown benchmark {other:?}: try `build`, `boot`, `update`, `runtime` or `fleet`"
        ),
    }
}

fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Cold (empty rootfs cache) and warm builds of qemu-x86_64, and mkosi on the
/// same Debian package set when it is installed and can run here.
fn build() -> Result<()> {
    setup::setup()?;
    artifacts(Arch::X86_64)?;
    let work = crate::target_dir().join("bench-build");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let cairn = |cache: &Path| {
        let mut c = Command::new(crate::target_dir().join("release/cairn-build"));
        c.args(["build", "--dev-key", "--board", "qemu-x86_64", "--out"])
            .arg(work.join("out"))
            .env("CAIRN_CACHE", cache);
        c
    };
    let cache = work.join("cache");
    let cold = timed(&mut cairn(&cache))?;
    let warm = timed(&mut cairn(&cache))?;
    println!("cairn-build qemu-x86_64: cold {cold:.1} s, warm {warm:.1} s");
    match mkosi(&work) {
        Ok((mcold, mwarm)) => {
            println!("mkosi 14 (same packages, tar): cold {mcold:.1} s, warm {mwarm:.1} s");
            println!("warm ratio cairn/mkosi: {:.2} (goal <= 0.30)", warm / mwarm);
        }
        Err(e) => println!("mkosi: not measured: {e:#}"),
    }
    Ok(())
}

fn mkosi(work: &Path) -> Result<(f64, f64)> {
    if !setup::have("mkosi") {
        bail!("mkosi is not installed (apt-get install mkosi)");
    }
    let dir = work.join("mkosi");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("mkosi.conf"),
        "[Distribution]\nDistribution=debian\nRelease=bookworm\n\n[Output]\nFormat=tar\n\n[Content]\nPackages=systemd,systemd-sysv,udev,dbus,libpam-systemd,systemd-timesyncd,systemd-resolved,openssh-server,kmod,iproute2,ca-certificates,login,passwd,e2fsprogs,linux-image-amd64\n",
    )?;
    let run = || {
        let mut c = Command::new("mkosi");
        c.args(["--incremental", "-f", "build"]).current_dir(&dir);
        timed(&mut c)
    };
    Ok((run()?, run()?))
}

/// Markers on the serial console, as host seconds since QEMU started.
struct BootTimes {
    kernel: Option<f64>,
    switch_root: Option<f64>,
    multi_user: Option<f64>,
}

fn boot_once(spec: qemu_tests::VmSpec, artifacts: &Path, switch_marker: &str) -> Result<BootTimes> {
    use std::time::Duration;
    let mut vm = qemu_tests::Vm::start(spec, artifacts)?;
    vm.wait_for("login:", Duration::from_secs(300))?;
    let t = vm.marker_times(&[
        "Linux version".into(),
        switch_marker.into(),
        "login:".into(),
    ]);
    vm.kill()?;
    Ok(BootTimes {
        kernel: t[0],
        switch_root: t[1],
        multi_user: t[2],
    })
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:6.2}"))
        .unwrap_or_else(|| "   n/a".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Boot timing of the qemu-x86_64 image: the full UEFI chain, direct kernel
/// boots of the same kernel and disk with cairn-init and with Debian's
/// initramfs-tools initrd (erofs added; /usr from ROOT's fstab, no verity),
/// and the host config's sources. Options: `--rounds N` (5: medians, as TCG
/// boot times swing by seconds on a shared host), `--sources-only`.
pub fn boot(args: &[String]) -> Result<()> {
    use qemu_tests::{Vm, VmSpec};
    let mut rounds = 5;
    let mut sources_only = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--sources-only" => sources_only = true,
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow::anyhow!("--rounds needs a number above 0"))?;
            }
            other => {
                bail!("unknown option {other:?} of bench boot: use --rounds N, --sources-only")
            }
        }
    }
    setup::setup()?;
    // Its own image: the VM scenarios may be booting out/test-* meanwhile.
    let image = crate::build_image("qemu-x86_64", &root().join("out/bench-qemu-x86_64"))?;
    let work = crate::target_dir().join("bench-boot");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    if sources_only {
        return config_sources(&image.join("disk.raw"), &work, rounds);
    }
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("build-info.json"))?)?;

    // 1. The real chain: OVMF -> cairn-boot -> kernel -> cairn-init -> systemd.
    let mut uefi = Vec::new();
    for i in 0..rounds {
        let spec = VmSpec::new(Arch::X86_64, image.join("disk.raw"));
        let art = work.join(format!("uefi-{i}"));
        std::fs::create_dir_all(&art)?;
        let mut vm = Vm::start(spec, &art)?;
        vm.wait_for("login:", std::time::Duration::from_secs(300))?;
        let t = vm.marker_times(&[
            "cairn-boot:".into(),
            "cairn-boot: starting slot".into(),
            "cairn-init: switching root".into(),
            "login:".into(),
        ]);
        vm.kill()?;
        uefi.push(t);
    }
    println!(
        "UEFI chain (s from QEMU start): boot manager | kernel handoff | switch_root | login prompt"
    );
    for t in &uefi {
        println!(
            "  {} | {} | {} | {}",
            fmt(t[0]),
            fmt(t[1]),
            fmt(t[2]),
            fmt(t[3])
        );
    }

    // 2. Direct kernel boots of the same kernel: boot files from the release.
    let release = image.join("release");
    let key = release_key()?;
    let manifest = release_manifest_load(&release, &key)?;
    let file = |name: &str| -> Result<std::path::PathBuf> {
        let p = work.join(name);
        let mut f = std::fs::File::create(&p)?;
        release_manifest::extract_image(&release, &manifest, name, &mut f)?;
        Ok(p)
    };
    let (kernel, initrd) = (file("vmlinuz")?, file("initrd")?);
    let cmdline = String::from_utf8(std::fs::read(file("cmdline")?)?)?;
    let partuuid = info["usr_a"]["partuuid"].as_str().unwrap_or_default();
    let verbose = |c: &str| {
        c.split(' ')
            .filter(|a| *a != "quiet")
            .collect::<Vec<_>>()
            .join(" ")
    };
    let cairn_append = format!("{} cairn.slot=a cairn.usr={partuuid}", verbose(&cmdline));

    let (debian_initrd, debian_disk) = debian_variant(&image, &info, &work)?;
    let debian_append =
        "console=ttyS0 root=PARTLABEL=ROOT rootfstype=ext4 rw panic=5 systemd.show_status=auto"
            .to_string();

    let direct = |disk: &Path,
                  initrd: &Path,
                  append: &str,
                  tag: &str,
                  marker: &str|
     -> Result<Vec<BootTimes>> {
        let mut out = Vec::new();
        for i in 0..rounds {
            let mut spec = VmSpec::new(Arch::X86_64, disk);
            spec.extra_args = vec![
                "-kernel".into(),
                kernel.display().to_string(),
                "-initrd".into(),
                initrd.display().to_string(),
                "-append".into(),
                append.to_string(),
            ];
            let art = work.join(format!("{tag}-{i}"));
            std::fs::create_dir_all(&art)?;
            out.push(boot_once(spec, &art, marker)?);
        }
        Ok(out)
    };
    // The first line the real systemd prints marks the switch for both.
    let cairn = direct(
        &image.join("disk.raw"),
        &initrd,
        &cairn_append,
        "cairn-init",
        "systemd 252",
    )?;
    let debian = direct(
        &debian_disk,
        &debian_initrd,
        &debian_append,
        "initramfs-tools",
        "systemd 252",
    )?;
    println!("direct kernel boot (s from QEMU start): kernel | switch_root | login prompt");
    for (name, runs) in [("cairn-init", &cairn), ("initramfs-tools", &debian)] {
        for t in runs.iter() {
            println!(
                "  {name:16} {} | {} | {}",
                fmt(t.kernel),
                fmt(t.switch_root),
                fmt(t.multi_user)
            );
        }
    }
    let span = |runs: &[BootTimes]| {
        median(
            runs.iter()
                .filter_map(|t| Some(t.switch_root? - t.kernel?))
                .collect(),
        )
    };
    let total = |runs: &[BootTimes]| median(runs.iter().filter_map(|t| t.multi_user).collect());
    let (c_span, d_span) = (span(&cairn), span(&debian));
    let (c_total, d_total) = (total(&cairn), total(&debian));
    println!(
        "kernel start -> switch_root: cairn-init {c_span:.2} s, initramfs-tools {d_span:.2} s, ratio {:.2} (goal <= 0.5)",
        c_span / d_span
    );
    println!(
        "QEMU start -> login prompt: cairn-init {c_total:.2} s, initramfs-tools {d_total:.2} s, ratio {:.2} (goal <= 0.8)",
        c_total / d_total
    );
    config_sources(&image.join("disk.raw"), &work, rounds)
}

/// Kernel start (the boot manager's hand-off) -> the host config applied,
/// by where it comes from: fw_cfg
/// (found first), no source at all (every source probed and absent), and
/// EC2 user data from a metadata service (the early pass hands over to
/// cairn-config-network.service once DHCP is up).
fn config_sources(disk: &Path, work: &Path, rounds: usize) -> Result<()> {
    use qemu_tests::scenarios::boot_chain::write_host_config;
    use qemu_tests::scenarios::provision::{FakeEc2, user_data};
    use qemu_tests::{Vm, VmSpec};
    use std::time::Duration;
    let applied = "cairn-config: using the host config from";
    let ec2 = FakeEc2::start(user_data(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench bench",
    ))?;
    let cfg = write_host_config(work)?;
    let mut rows = Vec::new();
    for case in ["fw_cfg", "none", "ec2"] {
        let mut spans = Vec::new();
        for i in 0..rounds {
            let mut spec = VmSpec::new(Arch::X86_64, disk);
            match case {
                "fw_cfg" => spec.fw_cfg_config = Some(cfg.clone()),
                "ec2" => ec2.attach(&mut spec)?,
                _ => {}
            }
            let art = work.join(format!("source-{case}-{i}"));
            std::fs::create_dir_all(&art)?;
            let mut vm = Vm::start(spec, &art)?;
            vm.wait_for(applied, Duration::from_secs(300))?;
            // `quiet`: the kernel prints nothing; the boot manager's hand-off
            // is the kernel's start.
            let t = vm.marker_times(&["cairn-boot: starting slot".into(), applied.into()]);
            vm.kill()?;
            if let (Some(k), Some(a)) = (t[0], t[1]) {
                spans.push(a - k);
            }
        }
        println!(
            "  {case:7} kernel start -> config applied: {}",
            spans
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        rows.push((case, median(spans)));
    }
    let m = |name: &str| rows.iter().find(|r| r.0 == name).map_or(f64::NAN, |r| r.1);
    println!(
        "config source (median, s from kernel start): fw_cfg {:.2}, none {:.2}, ec2 {:.2}; no source adds {:+.2} s over fw_cfg (goal <= 1 s)",
        m("fw_cfg"),
        m("none"),
        m("ec2"),
        m("none") - m("fw_cfg")
    );
    Ok(())
}

fn release_key() -> Result<release_manifest::PublicKey> {
    Ok(release_manifest::PublicKey::load_public(
        root().join(disk_layout::dev_key::PUBLIC),
    )?)
}

fn release_manifest_load(
    dir: &Path,
    key: &release_manifest::PublicKey,
) -> Result<release_manifest::Manifest> {
    let doc = std::fs::read(dir.join(release_manifest::MANIFEST_FILE))?;
    let sigs = std::fs::read(dir.join(release_manifest::SIGNATURES_FILE))?;
    Ok(release_manifest::Manifest::parse_signed(
        &doc,
        &sigs,
        std::slice::from_ref(key),
        1,
    )?)
}

/// A mkinitramfs initrd (with erofs) made inside the image's own rootfs, and a
/// copy of the disk whose ROOT carries a plain /etc with /usr in its fstab,
/// which is how initramfs-tools mounts a separate /usr.
fn debian_variant(
    image: &Path,
    info: &serde_json::Value,
    work: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let key = info["inputs"]["rootfs_key"].as_str().unwrap_or_default();
    let cache = cairn_build::cache_dir();
    let tar = cache.join("rootfs").join(format!("{key}.tar"));
    let chroot = work.join("debian-root");
    std::fs::create_dir_all(&chroot)?;
    crate::sh(
        Command::new("tar")
            .args(["-x", "-p", "--numeric-owner", "-f"])
            .arg(&tar)
            .arg("-C")
            .arg(&chroot),
    )?;
    let kver = info["kernel"].as_str().unwrap_or_default();
    let modules = chroot.join("etc/initramfs-tools/modules");
    let mut m = std::fs::read_to_string(&modules).unwrap_or_default();
    m.push_str("erofs\nvirtio_pci\nvirtio_blk\next4\n");
    std::fs::write(&modules, m)?;
    // MODULES=dep looks at the running system; "most" is what Debian ships.
    std::fs::write(
        chroot.join("etc/initramfs-tools/conf.d/cairn-bench"),
        "MODULES=most\n",
    )?;
    crate::sh(Command::new("chroot").arg(&chroot).args([
        "mkinitramfs",
        "-o",
        "/boot/bench-initrd.img",
        kver,
    ]))?;
    let initrd = work.join("debian-initrd.img");
    std::fs::copy(chroot.join("boot/bench-initrd.img"), &initrd)?;

    std::fs::write(
        chroot.join("etc/fstab"),
        "PARTLABEL=USR-A /usr erofs ro 0 0\n",
    )?;
    let rootdir = work.join("debian-rootfs-tree");
    std::fs::create_dir_all(&rootdir)?;
    crate::sh(
        Command::new("cp")
            .arg("-a")
            .arg(chroot.join("etc"))
            .arg(&rootdir),
    )?;
    for d in [
        "usr", "var", "tmp", "root", "proc", "sys", "dev", "run", "home",
    ] {
        std::fs::create_dir_all(rootdir.join(d))?;
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(t, rootdir.join(l))?;
    }
    let root_img = work.join("debian-root.img");
    crate::sh(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "ROOT", "-d"])
            .arg(&rootdir)
            .arg(&root_img)
            .arg("1024M"),
    )?;
    let disk = work.join("debian-disk.raw");
    crate::sh(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(image.join("disk.raw"))
            .arg(&disk),
    )?;
    let part = info["partitions"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["label"] == "ROOT"))
        .cloned()
        .unwrap_or_default();
    let sector = info["sector_size"].as_u64().unwrap_or(512);
    let first = part["first_lba"].as_u64().unwrap_or(0);
    crate::sh(
        Command::new("dd")
            .arg(format!("if={}", root_img.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=1M",
                "conv=notrunc,sparse",
                "status=none",
                "oflag=seek_bytes",
            ])
            .arg(format!("seek={}", first * sector)),
    )?;
    Ok((initrd, disk))
}

/// Runs `cmd` to completion; returns (seconds, peak RSS in KiB) of that child
/// alone (wait4 on its pid, not RUSAGE_CHILDREN, which includes cargo's).
fn timed_rss(cmd: &mut Command) -> Result<(f64, i64)> {
    let t = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall on our own child; rusage is a plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let secs = t.elapsed().as_secs_f64();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{:?} failed (wait status {status})", cmd.get_program());
    }
    Ok((secs, ru.ru_maxrss))
}

/// Applies a release with a 1 GiB /usr (CAIRN_BENCH_MIB overrides) from a
/// loopback HTTP repository to a file-backed slot with the real cairnctl, and
/// decompresses the same chunks with `zstd -d | dd oflag=direct` as the baseline.
pub fn update() -> Result<()> {
    use cairn_updater::fixture;
    setup::setup()?;
    let native = if cfg!(target_arch = "aarch64") {
        Arch::Arm64
    } else {
        Arch::X86_64
    };
    artifacts(native)?;
    let bin = crate::target_dir()
        .join(native.musl_target())
        .join("release");
    let mib: u64 = std::env::var("CAIRN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = crate::target_dir().join("bench-update");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let e = |e: Box<dyn std::error::Error + Send + Sync>| anyhow::anyhow!("{e}");
    let rel = fixture::make_release(
        &dir.join("build"),
        "2.0.0",
        mib << 20,
        release_manifest::DEFAULT_CHUNK_SIZE,
        99,
    )
    .map_err(e)?;
    let repo = dir.join("repo");
    let root_meta = fixture::make_repo(&repo, &[&rel]).map_err(e)?;
    std::fs::write(dir.join("root.json"), root_meta.to_json())?;
    let key = fixture::build_key().public();
    std::fs::write(
        dir.join("keys.json"),
        serde_json::json!([{"id": key.key_id(), "public": key.to_line().trim(), "development": true}]).to_string(),
    )?;
    std::fs::write(
        dir.join("os-release"),
        format!(
            "ID=cairn\nIMAGE_ID={}\nIMAGE_VERSION=1.0.0\n",
            fixture::BOARD
        ),
    )?;
    std::fs::write(dir.join("config.toml"), "[update]\nchannel = \"stable\"\n")?;
    let server = fixture::Server::start(&repo)?;
    let p = |x: &Path| x.display().to_string();
    let manifest = release_manifest::Manifest::from_json(&std::fs::read(
        rel.join(release_manifest::MANIFEST_FILE),
    )?)?;
    let usr = manifest.image("usr")?;
    let files: Vec<String> = usr.chunks.iter().map(|c| p(&repo.join(&c.file))).collect();
    let bytes = usr.size as f64;
    // Pairs of runs, alternating, so load from elsewhere hits both alike; the
    // medians are compared (CAIRN_BENCH_RUNS pairs, default 3).
    let runs: usize = std::env::var("CAIRN_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let (mut agent_t, mut base_t, mut rss) = (Vec::new(), Vec::new(), 0i64);
    for _ in 0..runs {
        let host = dir.join("host");
        let state = dir.join("state");
        for d in [&host, &state] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
        }
        fixture::make_target(&host, (mib + mib / 64 + 8) << 20).map_err(e)?;
        let (agent_s, agent_rss) = timed_rss(
            Command::new(bin.join("cairnctl"))
                .args([
                    "--direct",
                    "--config",
                    &p(&dir.join("config.toml")),
                    "--url",
                    &server.url,
                ])
                .args([
                    "--disk",
                    &p(&host.join("disk.img")),
                    "--slot-a",
                    &p(&host.join("usr-a.img")),
                ])
                .args([
                    "--slot-b",
                    &p(&host.join("usr-b.img")),
                    "--esp",
                    &p(&host.join("esp")),
                ])
                .args([
                    "--state-dir",
                    &p(&state),
                    "--root",
                    &p(&dir.join("root.json")),
                ])
                .args([
                    "--keys",
                    &p(&dir.join("keys.json")),
                    "--os-release",
                    &p(&dir.join("os-release")),
                ])
                .args(["--booted-slot", "a", "update", "--now"])
                .stdout(std::process::Stdio::null()),
        )?;
        // Baseline: the same compressed bytes, in image order, decompressed
        // and written with O_DIRECT.
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!(
                "cat \"$@\" | zstd -dcq | dd of={} bs=4M oflag=direct iflag=fullblock status=none",
                p(&dir.join("baseline.img"))
            ))
            .arg("sh")
            .args(&files);
        let base_s = timed(&mut sh)?;
        println!(
            "  run: agent {:.0} MB/s, baseline {:.0} MB/s",
            bytes / 1e6 / agent_s,
            bytes / 1e6 / base_s
        );
        agent_t.push(agent_s);
        base_t.push(base_s);
        rss = rss.max(agent_rss);
    }
    let (agent_s, base_s) = (median(agent_t), median(base_t));
    let agent_mbs = bytes / 1e6 / agent_s;
    let base_mbs = bytes / 1e6 / base_s;
    println!(
        "release: {mib} MiB /usr in {} chunks, {runs} run(s) each, medians:",
        usr.chunks.len()
    );
    println!(
        "cairnctl update (download, verify, write, read back, verity, flip): {agent_s:.2} s, {agent_mbs:.0} MB/s, peak RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
    println!("baseline zstd -d | dd oflag=direct: {base_s:.2} s, {base_mbs:.0} MB/s");
    println!(
        "ratio agent/baseline: {:.2} (goal >= 0.9)",
        agent_mbs / base_mbs
    );
    // cairn-updated's idle RSS: `cargo test -p cairn-updater --release --test dbus`
    // runs it on a private bus and checks VmRSS <= 8 MiB.
    Ok(())
}
