//! Real-QEMU checks of the harness: boot the UEFI firmware with an empty
//! disk, wait for its boot manager and shell on the serial console, type into
//! the shell, reset from the guest and through QMP (each a power cycle: the
//! banner appears again from a new qemu) and kill.
//!
//! Skipped, with the reason on stderr, where qemu or the firmware is missing;
//! `CAIRN_REQUIRE_QEMU=1` turns that into a failure.

use anyhow::{Context, Result, bail, ensure};
use disk_layout::Arch;
use qemu_tests::artifacts::new_artifacts_dir;
use qemu_tests::{Pattern, Vm, VmSpec, missing_requirements};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One VM at a time: the test hosts have two cores shared with other work.
static ONE_VM: Mutex<()> = Mutex::new(());

fn say(msg: &str) {
    // Past libtest's capture, so skips and timings are always visible.
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn firmware_boots(arch: Arch) -> Result<()> {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(why) = missing_requirements(arch) {
        if std::env::var_os("CAIRN_REQUIRE_QEMU").is_some_and(|v| v == "1") {
            bail!("CAIRN_REQUIRE_QEMU=1 but {why}");
        }
        say(&format!("SKIPPED firmware test for {}: {why}", arch.name()));
        return Ok(());
    }
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-tests-artifacts");
    let dir = new_artifacts_dir(&root, "firmware", arch)?;
    // A blank disk: the firmware finds nothing to boot and starts its shell.
    let disk = dir.join("blank.raw");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .with_context(|| format!("creating {}", disk.display()))?;

    let t0 = Instant::now();
    let mut vm = Vm::start(VmSpec::new(arch, &disk), &dir)?;
    let bds = vm.wait_for("BdsDxe", secs(45))?;
    let shell = vm.wait_for("UEFI Interactive Shell", secs(30))?;

    // Input: skip the startup.nsh countdown with a key, then run a command.
    vm.wait_for("any other key", secs(15))?;
    vm.send("\r")?;
    vm.wait_for("Shell>", secs(15))?;
    vm.send_line("echo cairn-probe-42")?;
    vm.wait_for(Pattern::regex("^cairn-probe-42$")?, secs(15))?;

    // A failed wait names the artifacts and shows the console tail.
    let err = match vm.wait_for("never printed", Duration::from_millis(200)) {
        Ok(l) => bail!("matched {l:?}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains(&dir.display().to_string()) && err.contains("cairn-probe-42"),
        "{err}"
    );

    // A reset the guest asks for (the shell's `reset`) power-cycles: qemu
    // exits with the QMP reason guest-reset and the harness starts the next
    // one, while the test keeps waiting on the same console.
    vm.send_line("reset")?;
    let bds2 = vm.wait_for("BdsDxe", secs(45))?;
    let shell2 = vm.wait_for("UEFI Interactive Shell", secs(30))?;
    ensure!(
        bds2.n > shell.n && bds2.spawn == 1 && shell2.spawn == 1,
        "the banner after the guest's reset comes from a second qemu: {bds2:?}"
    );
    let events = vm.qmp_events();
    ensure!(
        events
            .iter()
            .any(|e| e.spawn == 0 && e.name == "SHUTDOWN" && e.data["reason"] == "guest-reset"),
        "no guest-reset SHUTDOWN event from the first qemu in {events:?}"
    );
    // The reset button (QMP) power-cycles too.
    vm.reset()?;
    let bds3 = vm.wait_for("BdsDxe", secs(45))?;
    vm.wait_for("UEFI Interactive Shell", secs(30))?;
    ensure!(bds3.spawn == 2, "{bds3:?}");
    let times = vm.marker_times(&["BdsDxe".into(), "UEFI Interactive Shell".into()]);
    ensure!(times[0] == Some(bds3.t), "{times:?}");

    let status = vm.kill()?;
    ensure!(!vm.is_running(), "still running after kill ({status})");
    let log = std::fs::read_to_string(dir.join("console.log")).context("console.log")?;
    ensure!(
        log.matches("UEFI Interactive Shell").count() == 3,
        "console.log:\n{log}"
    );
    ensure!(dir.join("qemu-cmd.txt").is_file(), "qemu-cmd.txt missing");
    vm.remove_disk()?;
    ensure!(!vm.overlay().exists(), "overlay not removed");
    std::fs::remove_file(&disk).context("removing the blank disk")?;

    say(&format!(
        "{} firmware ({} accel): qemu start -> BdsDxe {:.1} s, shell {:.1} s; after the guest's reset BdsDxe {:.1} s into the next qemu; test {:.1} s",
        arch.name(),
        vm.accel().name(),
        bds.t,
        shell.t,
        bds2.t,
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[test]
fn x86_64_firmware_boots_resets_and_dies() -> Result<()> {
    firmware_boots(Arch::X86_64)
}

#[test]
fn arm64_firmware_boots_resets_and_dies() -> Result<()> {
    firmware_boots(Arch::Arm64)
}
