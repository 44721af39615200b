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
        other => bail!("unknown benchmark {other:?}: try `build`"),
    }
}

fn timed(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Cold (empty rootfs cache) and warm builds of qemu-x86_64, and mkosi on the
/// same Debian package set when it is installed and can run here.
fn build() -> Result<()> {
    setup::setup()?;
    artifacts(Arch::X86_64)?;
    let work = root().join("target/bench-build");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let cairn = |cache: &Path| {
        let mut c = Command::new(root().join("target/release/cairn-build"));
        c.args(["build", "--dev-key", "--board", "qemu-x86_64", "--out"]).arg(work.join("out")).env("CAIRN_CACHE", cache);
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
