//! Serial login and command execution against a real Linux guest, booted by
//! OVMF with qemu's direct kernel boot. Needs a kernel and an initramfs whose
//! /init runs a getty on ttyS0 (e.g. busybox `getty -L 115200 ttyS0 vt100`
//! in a loop, with `root` in /etc/passwd and /etc/shadow):
//!
//! `CAIRN_TEST_KERNEL=vmlinuz CAIRN_TEST_INITRD=initrd.gz [CAIRN_TEST_PASSWORD=pw]`
//!
//! Without them the test is skipped with the reason on stderr. Once Cairn
//! images boot, scenarios cover the same ground on the real thing.

use anyhow::{Result, bail, ensure};
use disk_layout::Arch;
use qemu_tests::artifacts::new_artifacts_dir;
use qemu_tests::{Vm, VmSpec, missing_requirements};
use std::io::Write;
use std::time::{Duration, Instant};

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

#[test]
fn x86_64_serial_login_run_reboot_and_power_cycle() -> Result<()> {
    let (Some(kernel), Some(initrd)) = (
        std::env::var_os("CAIRN_TEST_KERNEL"),
        std::env::var_os("CAIRN_TEST_INITRD"),
    ) else {
        say("SKIPPED serial shell test: CAIRN_TEST_KERNEL / CAIRN_TEST_INITRD not set");
        return Ok(());
    };
    if let Some(why) = missing_requirements(Arch::X86_64) {
        bail!("a kernel was given but {why}");
    }
    let password = std::env::var("CAIRN_TEST_PASSWORD").unwrap_or_default();
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-tests-artifacts");
    let dir = new_artifacts_dir(&root, "serial-shell", Arch::X86_64)?;
    let disk = dir.join("blank.raw");
    std::fs::File::create(&disk)?.set_len(16 << 20)?;
    let mut spec = VmSpec::new(Arch::X86_64, &disk);
    spec.extra_args = ["-kernel", "-initrd", "-append"]
        .iter()
        .map(|s| s.to_string())
        .zip([
            kernel.to_string_lossy().into_owned(),
            initrd.to_string_lossy().into_owned(),
            "console=ttyS0".into(),
        ])
        .flat_map(|(k, v)| [k, v])
        .collect();
    let long = Duration::from_secs(90);
    let t0 = Instant::now();
    let mut vm = Vm::start(spec, &dir)?;
    vm.login("root", &password, long)?;
    let login_t = vm.uptime();

    let t = Instant::now();
    let (rc, out) = vm.run("echo hi; false", long)?;
    ensure!((rc, out.as_str()) == (1, "hi\n"), "{rc} {out:?}");
    let run_ms = t.elapsed().as_millis();
    ensure!(vm.run_ok("printf abc", long)? == "abc");
    let many = vm.run_ok("seq 1 3000", long)?;
    ensure!(
        many.lines().count() == 3000 && many.ends_with("2999\n3000\n"),
        "{}",
        many.len()
    );
    let wide = "x".repeat(1500);
    ensure!(vm.run_ok(&format!("echo {wide} | wc -c"), long)?.trim() == "1501");
    match vm.run_ok("echo oops; exit_code() { return 3; }; exit_code", long) {
        Ok(o) => bail!("non-zero exit passed: {o:?}"),
        Err(e) => ensure!(format!("{e}").contains("exited with 3"), "{e}"),
    }

    // A guest reboot goes through the firmware again (no -no-reboot).
    vm.send_line("reboot -f")?;
    vm.wait_for("Linux version", long)?;
    vm.login("root", &password, long)?;
    ensure!(vm.run_ok("echo back", long)? == "back\n");
    ensure!(
        vm.qmp_events().iter().any(|e| e.name == "RESET"),
        "no guest RESET event"
    );

    // Power cut and power on: a new qemu on the same overlay.
    vm.kill()?;
    vm.restart()?;
    vm.login("root", &password, long)?;
    ensure!(vm.lines_since(vm.cursor()).iter().all(|l| l.spawn == 1));
    vm.quit()?;
    vm.remove_disk()?;
    say(&format!(
        "serial shell: login at {login_t:.1} s after spawn, one run() round trip {run_ms} ms, test {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}
