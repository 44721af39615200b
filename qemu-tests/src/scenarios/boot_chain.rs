//! The boot chain (DESIGN.md "Boot chain", "Slot attributes"): a normal
//! boot of slot A, and three ways slot B can fail (a kernel that panics, a
//! bad signature, a corrupted /usr), each of which must end in slot A
//! booting with B's tries used up.
//!
//! The failing slots are made on the host from the built image (see
//! `crate::prep`): the build never produces a B slot, and making it here
//! keeps the damage exactly as small as each scenario needs.

use crate::Pattern;
use crate::prep::{self, BootFiles, Disk};
use crate::runner::Ctx;
use crate::vm::{Vm, VmSpec};
use anyhow::{Context, Result, bail, ensure};
use disk_layout::{Part, Slot};
use gpt_slots::Attrs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `openssl passwd -6 -salt cairntest cairn`: root's password in test VMs.
/// A fixed salt keeps the config (and so the test) reproducible.
pub const ROOT_PASSWORD: &str = "cairn";
pub const ROOT_PASSWORD_HASH: &str = "$6$cairntest$BtkR0RKRsmkvPZinS9/NkOWlh20hPS316GT2Bh.GT/Mv6I2XTWGl7RXtITk6v7293vKd7oDU1.8YcRmtOmBmA.";

/// From qemu's start to the login prompt: ~25-40 s under TCG on a loaded
/// two-core host; arm64 TCG and a busy host can take several times that.
pub(crate) const TO_LOGIN: Duration = Duration::from_secs(300);
/// One failed boot attempt, firmware to reboot: ~10-20 s measured, plus the
/// 5 s of panic=5 or of cairn-init's FATAL delay.
pub(crate) const ONE_ATTEMPT: Duration = Duration::from_secs(240);
pub(crate) const SHELL_CMD: Duration = Duration::from_secs(60);
/// Slot B's attributes after an update wrote it (state 3 of DESIGN.md).
const B_UPDATED: Attrs = Attrs::new(2, 3, false);
/// K of the test boards (`boot_tries`, the default): every boot of a
/// committed slot costs a try until cairn-mark-good re-arms it.
pub(crate) const K: u8 = gpt_slots::DEFAULT_COMMITTED_TRIES;
/// A fresh image, and A after any boot of it that reached its health gate:
/// the known-good fallback, armed.
pub(crate) const A_FRESH: Attrs = Attrs::new(1, K, true);

/// Files this module leaves in the artifacts folder that are big and only
/// useful to debug a failure.
const BIG_FILES: [&str; 3] = ["disk.raw", "after.raw", OEM_DISK];
/// The image with its host config placed by `cairn-build oem`.
const OEM_DISK: &str = "disk-oem.qcow2";

/// The host config that gives root a password (the `[[users]]` schema of
/// cairn-config), written next to the VM's other files.
pub fn write_host_config(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("host-config.toml");
    let text = format!(
        "# qemu-tests: lets the scenarios log in on the serial console\n\
         [[users]]\nname = \"root\"\npassword_hash = \"{ROOT_PASSWORD_HASH}\"\n"
    );
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p)
}

fn spec(ctx: &Ctx, disk: &Path) -> Result<VmSpec> {
    let mut s = VmSpec::new(ctx.arch, disk);
    s.fw_cfg_config = Some(write_host_config(&ctx.artifacts)?);
    Ok(s)
}

/// Runs `body`, then deletes the big prepared images unless the scenario
/// failed and its files are to be kept.
fn with_cleanup(ctx: &mut Ctx, body: fn(&mut Ctx) -> Result<()>) -> Result<()> {
    let r = body(ctx);
    if r.is_ok() || !ctx.keep_on_failure {
        for f in BIG_FILES {
            let _ = std::fs::remove_file(ctx.artifacts.join(f));
        }
    }
    r
}

pub(crate) fn say(ctx: &Ctx, msg: &str) {
    // One line per step, so a long TCG run shows where it is.
    eprintln!("  [{} {}] {msg}", ctx.scenario, ctx.arch.name());
}

/// A sparse private copy of the built disk, to damage.
fn private_disk(ctx: &Ctx) -> Result<Disk> {
    let src = ctx.image_file("disk.raw")?;
    let dst = ctx.artifacts.join("disk.raw");
    prep::sparse_copy(&src, &dst)?;
    Disk::open(&dst)
}

/// Stops qemu (a clean exit flushes qemu's own caches to the overlay) and
/// reads the slot attributes the guest left in the GPT.
pub(crate) fn final_attrs(ctx: &Ctx, vm: &mut Vm) -> Result<(Attrs, Attrs)> {
    if vm.is_running() {
        vm.quit().context("stopping qemu")?;
    }
    let raw = ctx.artifacts.join("after.raw");
    prep::qcow2_to_raw(vm.overlay(), &raw)?;
    let a = prep::read_slot_attrs(&raw, Slot::A.part().number())?;
    let b = prep::read_slot_attrs(&raw, Slot::B.part().number())?;
    let _ = std::fs::remove_file(&raw);
    Ok((a, b))
}

/// Stops the VM (if running) and checks both slots' attributes on its disk.
pub(crate) fn expect_final_attrs(
    ctx: &Ctx,
    vm: &mut Vm,
    a_want: Attrs,
    b_want: Attrs,
) -> Result<()> {
    let (a, b) = final_attrs(ctx, vm)?;
    ensure!(a == a_want, "slot A is {a}, expected {a_want}");
    ensure!(b == b_want, "slot B is {b}, expected {b_want}");
    Ok(())
}

// ---- boot ------------------------------------------------------------------

/// A normal boot of the built image: slot A, /usr on dm-verity, / on ROOT,
/// no failed units, and A still marked good after a clean shutdown.
/// The harness's command channel on the real guest: exit codes, long output
/// and lines wider than the terminal come back whole.
fn check_console_round_trips(vm: &mut Vm) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let (rc, out) = vm.run("echo hi; false", SHELL_CMD)?;
    if (rc, out.as_str()) != (1, "hi\n") {
        problems.push(format!(
            "`echo hi; false` gave {rc} {out:?}, not 1 \"hi\\n\""
        ));
    }
    let many = vm.run_ok("seq 1 3000", SHELL_CMD)?;
    if many.lines().count() != 3000 || !many.ends_with("2999\n3000\n") {
        problems.push(format!("`seq 1 3000` came back as {} bytes", many.len()));
    }
    let wide = "x".repeat(1500);
    let n = vm.run_ok(&format!("echo {wide} | wc -c"), SHELL_CMD)?;
    if n.trim() != "1501" {
        problems.push(format!(
            "a 1500-character command line arrived as {n:?} bytes"
        ));
    }
    Ok(problems)
}

pub fn boot(ctx: &mut Ctx) -> Result<()> {
    with_cleanup(ctx, boot_body)
}

/// The built qcow2 personalised as an operator would: the host config on
/// its OEM partition by `cairn-build oem` (built beside xtask, which runs
/// the scenarios), so no fw_cfg is needed.
fn oem_disk(ctx: &Ctx) -> Result<PathBuf> {
    let src = ctx.image_file("disk.qcow2")?;
    let dst = ctx.artifacts.join(OEM_DISK);
    std::fs::copy(&src, &dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    let cfg = write_host_config(&ctx.artifacts)?;
    crate::prep::cairn_build(&[
        "oem".as_ref(),
        "--image".as_ref(),
        dst.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ])?;
    Ok(dst)
}

fn boot_body(ctx: &mut Ctx) -> Result<()> {
    let root_part = Part::Root.number();
    let spec = VmSpec::new(ctx.arch, oem_disk(ctx)?);
    let t0 = Instant::now();
    let mut vm = ctx.vm(spec)?;
    let chosen = vm.wait_for(Pattern::regex(CHOSEN)?, TO_LOGIN)?;
    let (slot, _, _) = parse_chosen(&chosen.text)?;
    ensure!(slot == "a", "the boot manager chose slot {slot}, not a");
    vm.wait_for("cairn-boot: slot a boot files verified", ONE_ATTEMPT)?;
    // login() waits for the prompt itself: look for it without moving the
    // cursor past it, only to report when it came.
    let before = vm.cursor();
    let prompt = vm.wait_for("cairn login:", TO_LOGIN)?;
    vm.set_cursor(before);
    say(ctx, &format!("login prompt at {:.1} s", prompt.t));
    vm.login("root", ROOT_PASSWORD, TO_LOGIN)
        .context("logging in as root (does the image apply [[users]] from the host config?)")?;

    // Startup must be over before "no failed units" means anything.
    let state = vm.run("timeout 200 systemctl is-system-running --wait", TO_LOGIN)?;
    // Where the boot's time went, for `cargo xtask bench boot` follow-ups.
    let (_, analysis) = vm.run(
        "systemd-analyze time; systemd-analyze critical-chain serial-getty@ttyS0.service multi-user.target; systemd-analyze blame | head -n 12",
        SHELL_CMD,
    )?;
    say(ctx, &format!("systemd-analyze:\n{}", analysis.trim_end()));
    let mut problems = Vec::new();
    // The root daemon that parses network input runs sandboxed (issue 11).
    let security = vm.run_ok(
        "systemd-analyze security --no-pager cairn-updated.service | tail -n 1",
        SHELL_CMD,
    )?;
    say(ctx, &format!("cairn-updated: {}", security.trim()));
    if !(security.contains(" OK") || security.contains(" SAFE")) {
        problems.push(format!(
            "cairn-updated.service is not sandboxed enough: {}",
            security.trim()
        ));
    }
    let failed = vm.run_ok("systemctl --failed --no-legend --plain", SHELL_CMD)?;
    if !failed.trim().is_empty() {
        problems.push(format!(
            "failed units (system state {:?}):\n{failed}",
            state.1.trim()
        ));
    }
    // The health checks gate the successful bit (DESIGN.md, Boot chain 4):
    // cairn-health.service runs them, cairn-mark-good.service acts on the
    // result. Both are oneshots that stay active once done.
    let health = vm.run(
        "timeout 240 sh -c 'until systemctl is-active -q cairn-mark-good.service; do sleep 2; done'; \
         systemctl is-active cairn-health.service cairn-mark-good.service",
        TO_LOGIN,
    )?;
    if health.0 != 0 {
        problems.push(format!(
            "the health checks did not complete: cairn-health, cairn-mark-good are {:?}",
            health.1.split_whitespace().collect::<Vec<_>>()
        ));
    }
    let mu = vm.run("systemctl is-active multi-user.target", SHELL_CMD)?;
    if mu.1.trim() != "active" {
        problems.push(format!("multi-user.target is {:?}", mu.1.trim()));
    }

    // /usr: erofs, read-only, from the device-mapper device "usr" (verity).
    let usr = vm.run_ok("findmnt -no SOURCE,FSTYPE,OPTIONS /usr", SHELL_CMD)?;
    problems.extend(check_usr_mount(&usr));
    let table = vm.run_ok("dmsetup table usr", SHELL_CMD)?;
    if !table.split_whitespace().any(|w| w == "verity") {
        problems.push(format!("dm device usr is not a verity target: {table:?}"));
    }
    let dm_ro = vm.run_ok("cat /sys/block/dm-0/ro /sys/block/dm-0/dm/name", SHELL_CMD)?;
    if dm_ro.split_whitespace().collect::<Vec<_>>() != ["1", "usr"] {
        problems.push(format!("dm-0 is not the read-only usr device: {dm_ro:?}"));
    }

    // /: ext4, read-write, on the ROOT partition.
    let root = vm.run_ok("findmnt -no SOURCE,FSTYPE,OPTIONS /", SHELL_CMD)?;
    problems.extend(check_root_mount(&root));
    let src = root.split_whitespace().next().unwrap_or("");
    let name = src.rsplit('/').next().unwrap_or("");
    let partno = vm.run(&format!("cat /sys/class/block/{name}/partition"), SHELL_CMD)?;
    if partno.1.trim() != root_part.to_string() {
        problems.push(format!(
            "/ is on {src}, partition {:?}, not ROOT (partition {root_part})",
            partno.1.trim()
        ));
    }

    // The config came from the OEM partition `cairn-build oem` wrote.
    let source = vm.run_ok("cat /run/cairn/config-source", SHELL_CMD)?;
    if !source.contains("oem") {
        problems.push(format!(
            "the host config came from {:?}, not the OEM partition cairn-build oem wrote",
            source.trim()
        ));
    }
    let booted = vm.run_ok("cat /run/cairn/booted-slot", SHELL_CMD)?;
    if booted.trim() != "a" {
        problems.push(format!(
            "/run/cairn/booted-slot is {:?}, not a",
            booted.trim()
        ));
    }
    problems.extend(check_console_round_trips(&mut vm)?);
    if !problems.is_empty() {
        bail!("boot checks failed:\n  {}", problems.join("\n  "));
    }

    // A clean power-off, then the GPT: booting A must not cost it anything.
    // Through systemctl, not the ACPI button: the image has no handler for
    // the button (system_powerdown is ignored), and the shell dies with the
    // guest, so no `run` here.
    vm.send_line("systemctl poweroff")?;
    vm.wait_exit(TO_LOGIN)
        .context("waiting for the guest to power off")?;
    let (a, b) = final_attrs(ctx, &mut vm)?;
    ensure!(
        a == A_FRESH,
        "slot A is {a} after a good boot, expected {A_FRESH}"
    );
    ensure!(
        b == Attrs::default(),
        "slot B is {b} after booting A, expected it untouched"
    );
    say(
        ctx,
        &format!("done after {:.1} s", t0.elapsed().as_secs_f64()),
    );
    Ok(())
}

/// Problems with `findmnt -no SOURCE,FSTYPE,OPTIONS /usr` output.
pub fn check_usr_mount(findmnt: &str) -> Vec<String> {
    let f: Vec<&str> = findmnt.split_whitespace().collect();
    let mut p = Vec::new();
    let [src, fstype, opts] = f[..] else {
        return vec![format!("unexpected findmnt output for /usr: {findmnt:?}")];
    };
    if !matches!(src, "/dev/mapper/usr" | "/dev/dm-0") {
        p.push(format!("/usr comes from {src}, not the verity device"));
    }
    if fstype != "erofs" {
        p.push(format!("/usr is {fstype}, not erofs"));
    }
    if opts.split(',').next() != Some("ro") {
        p.push(format!("/usr is mounted {opts}, not ro"));
    }
    p
}

/// Problems with `findmnt -no SOURCE,FSTYPE,OPTIONS /` output.
pub fn check_root_mount(findmnt: &str) -> Vec<String> {
    let f: Vec<&str> = findmnt.split_whitespace().collect();
    let [_, fstype, opts] = f[..] else {
        return vec![format!("unexpected findmnt output for /: {findmnt:?}")];
    };
    let mut p = Vec::new();
    if fstype != "ext4" {
        p.push(format!("/ is {fstype}, not ext4"));
    }
    if opts.split(',').next() != Some("rw") {
        p.push(format!("/ is mounted {opts}, not rw"));
    }
    p
}

// ---- following boot attempts -------------------------------------------------

/// The boot manager's choice line, e.g. `cairn-boot: slot b chosen: highest
/// priority bootable (prio 2 tries 3 ok 0 -> prio 2 tries 2 ok 0)`. Matched
/// up to its closing parenthesis: `wait_for` sees lines while they are still
/// arriving, and the tries are at the end.
pub(crate) const CHOSEN: &str = r"cairn-boot: slot [ab] chosen: .* ok [01]\)";

/// (slot letter, tries before, tries after) from a choice line.
pub fn parse_chosen(line: &str) -> Result<(String, u8, u8)> {
    let re = regex_lite::Regex::new(
        r"cairn-boot: slot ([ab]) chosen: .*?tries (\d+) ok \d+ -> .*?tries (\d+) ok \d+",
    )?;
    let c = re
        .captures(line)
        .with_context(|| format!("cannot parse the boot manager's choice {line:?}"))?;
    let num = |i: usize| -> Result<u8> { Ok(c[i].parse()?) };
    Ok((c[1].to_string(), num(2)?, num(3)?))
}

/// Slot b fails three times, each attempt showing `evidence` (see
/// [`follow_b_attempts`]), using up its tries 3->2->1->0; then slot a boots
/// to the login prompt.
pub(crate) fn b_fails_three_times(
    ctx: &Ctx,
    vm: &mut Vm,
    evidence: &[Pattern],
    login_fails: bool,
) -> Result<()> {
    let tries = follow_b_attempts(ctx, vm, evidence, login_fails)?;
    ensure!(
        tries == [(3, 2), (2, 1), (1, 0)],
        "slot b attempts used tries {tries:?}, expected 3->2, 2->1, 1->0"
    );
    a_reaches_login(ctx, vm)
}

/// Follows the console from the first boot until the boot manager chooses
/// slot a. Every attempt of slot b must show each of `evidence`, in order
/// (how it failed), before the next choice; with `login_fails` it must not
/// reach the login prompt (a slot that fails its health checks gets that
/// far). Returns the (before, after) tries of each attempt of b.
fn follow_b_attempts(
    ctx: &Ctx,
    vm: &mut Vm,
    evidence: &[Pattern],
    login_fails: bool,
) -> Result<Vec<(u8, u8)>> {
    let mut tries = Vec::new();
    let chosen = Pattern::regex(CHOSEN)?;
    loop {
        let line = vm
            .wait_for(chosen.clone(), ONE_ATTEMPT)
            .with_context(|| format!("waiting for boot attempt {}", tries.len() + 1))?;
        let (slot, before, after) = parse_chosen(&line.text)?;
        if slot == "a" {
            return Ok(tries);
        }
        tries.push((before, after));
        say(
            ctx,
            &format!(
                "attempt {} of slot b (tries {before} -> {after}) at {:.1} s",
                tries.len(),
                line.t
            ),
        );
        if tries.len() > 3 {
            bail!("slot b was chosen a 4th time: tries {before} -> {after}");
        }
        for e in evidence {
            // Whatever comes first: the expected sign of failure, or proof
            // that the attempt went elsewhere.
            let mut pats = vec![e.clone(), chosen.clone()];
            if login_fails {
                pats.push(Pattern::from("login:"));
            }
            let (i, l) = vm
                .wait_for_any(&pats, ONE_ATTEMPT)
                .with_context(|| format!("waiting for {e} in attempt {} of slot b", tries.len()))?;
            if i != 0 {
                bail!(
                    "attempt {} of slot b did not show {e} before {:?}",
                    tries.len(),
                    l.text
                );
            }
        }
    }
}

/// After slot a was chosen: it boots to the login prompt.
fn a_reaches_login(ctx: &Ctx, vm: &mut Vm) -> Result<()> {
    vm.wait_for("cairn-boot: slot a boot files verified", ONE_ATTEMPT)?;
    let l = vm.wait_for("cairn login:", TO_LOGIN)?;
    say(ctx, &format!("slot a at the login prompt at {:.1} s", l.t));
    Ok(())
}

/// At a's login prompt: logs in and waits until cairn-mark-good has re-armed
/// a (every boot costs a committed slot a try until then).
pub(crate) fn a_committed(vm: &mut Vm) -> Result<()> {
    // The prompt already went by: an empty line makes agetty print it again.
    vm.send_line("")?;
    vm.login("root", ROOT_PASSWORD, TO_LOGIN)
        .context("logging in as root on slot a")?;
    wait_committed(vm)
}

/// Logged in: waits for cairn-mark-good.service of this boot.
pub(crate) fn wait_committed(vm: &mut Vm) -> Result<()> {
    let good = vm.run(
        "timeout 240 sh -c 'until systemctl is-active -q cairn-mark-good.service; do sleep 2; done'",
        TO_LOGIN,
    )?;
    ensure!(good.0 == 0, "cairn-mark-good did not run on this boot");
    Ok(())
}

/// The whole text of console line `n` (a line `wait_for` returned may
/// still have been arriving).
pub(crate) fn line_text(vm: &Vm, n: usize) -> String {
    vm.lines_since(crate::Mark(0))
        .into_iter()
        .find(|l| l.n == n)
        .map(|l| l.text)
        .unwrap_or_default()
}

/// After slot b was chosen: b is refused and a chosen in the same firmware
/// run. Returns the whole refusal line and a's choice.
fn b_refused_then_a(vm: &mut Vm) -> Result<(String, crate::Line)> {
    let refused = vm.wait_for("cairn-boot: slot b refused: ", ONE_ATTEMPT)?;
    let a = vm.wait_for(Pattern::regex(CHOSEN)?, ONE_ATTEMPT)?;
    ensure!(
        parse_chosen(&a.text)?.0 == "a",
        "after refusing b the boot manager chose {:?}",
        a.text
    );
    // The refusal line is complete now that a later line arrived.
    Ok((line_text(vm, refused.n), a))
}

/// Sets B to what an update leaves (prio 2, tries 3, not yet good) and
/// checks A is the fresh fallback.
fn arm_slot_b(disk: &Disk) -> Result<()> {
    let a = disk.slot_attrs(Slot::A.part().number())?;
    ensure!(
        a == A_FRESH,
        "the built image has slot A {a}, expected {A_FRESH}"
    );
    disk.set_slot_attrs(Slot::B.part().number(), B_UPDATED)?;
    let b = disk.slot_attrs(Slot::B.part().number())?;
    ensure!(b == B_UPDATED, "slot B reads back as {b}");
    Ok(())
}

/// Slot B as an exact copy of A: /usr bytes and boot files. The boot files
/// need no re-signing: the cmdline names no slot (the boot manager appends
/// cairn.slot and cairn.usr).
fn copy_a_to_b(ctx: &Ctx, disk: &Disk) -> Result<BootFiles> {
    let copied = disk.copy_partition(Slot::A.part().number(), Slot::B.part().number())?;
    say(ctx, &format!("copied USR-A to USR-B ({copied} bytes)"));
    let esp = disk.fat(Part::Esp.number())?;
    let files = BootFiles::read(&esp, Slot::A)?;
    files.write(&esp, Slot::B, &ctx.artifacts)?;
    ensure!(
        BootFiles::read(&esp, Slot::B)? == files,
        "cairn/b/ does not read back as written"
    );
    Ok(files)
}

// ---- fallback-bad-kernel ---------------------------------------------------

/// B's boot files are properly signed but the kernel panics (its initramfs
/// has no /init): three attempts, then A.
pub fn fallback_bad_kernel(ctx: &mut Ctx) -> Result<()> {
    with_cleanup(ctx, fallback_bad_kernel_body)
}

fn fallback_bad_kernel_body(ctx: &mut Ctx) -> Result<()> {
    let t0 = Instant::now();
    let disk = private_disk(ctx)?;
    let esp = disk.fat(Part::Esp.number())?;
    let key = prep::dev_key(&ctx.artifacts)?;
    let mut files = BootFiles::read(&esp, Slot::A)?;
    files.initrd = prep::initrd_without_init()?;
    files.sign(key.seed());
    files.verify(&key.public().to_bytes())?;
    files.write(&esp, Slot::B, &ctx.artifacts)?;
    arm_slot_b(&disk)?;
    say(
        ctx,
        &format!("image prepared in {:.1} s", t0.elapsed().as_secs_f64()),
    );

    let spec = spec(ctx, &disk.path)?;
    let mut vm = ctx.vm(spec)?;
    let evidence = [
        // Signed properly: the boot manager starts it...
        Pattern::from("cairn-boot: slot b boot files verified"),
        // ...and the kernel finds no init and no root device.
        Pattern::from("Kernel panic - not syncing: VFS: Unable to mount root fs"),
    ];
    b_fails_three_times(ctx, &mut vm, &evidence, true)?;
    a_committed(&mut vm)?;
    expect_final_attrs(ctx, &mut vm, A_FRESH, Attrs::new(2, 0, false))
}

// ---- bad-signature ---------------------------------------------------------

/// B is a full copy of A but one byte of its kernel changed after signing:
/// the boot manager refuses B without starting it, marks it failed and
/// boots A in the same run.
pub fn bad_signature(ctx: &mut Ctx) -> Result<()> {
    with_cleanup(ctx, bad_signature_body)
}

fn bad_signature_body(ctx: &mut Ctx) -> Result<()> {
    let disk = private_disk(ctx)?;
    let mut files = copy_a_to_b(ctx, &disk)?;
    let key = prep::dev_key(&ctx.artifacts)?;
    files.verify(&key.public().to_bytes())?;
    // Past the PE headers: only the signature can notice it.
    let at = files.kernel.len() / 2;
    files.kernel[at] ^= 0x01;
    ensure!(
        files.verify(&key.public().to_bytes()).is_err(),
        "the altered kernel still verifies"
    );
    let esp = disk.fat(Part::Esp.number())?;
    esp.write("cairn/b/vmlinuz", &files.kernel, &ctx.artifacts)?;
    arm_slot_b(&disk)?;

    let spec = spec(ctx, &disk.path)?;
    let mut vm = ctx.vm(spec)?;
    let start = vm.mark();
    let b = vm.wait_for(Pattern::regex(CHOSEN)?, TO_LOGIN)?;
    let (slot, before, after) = parse_chosen(&b.text)?;
    ensure!(
        (slot.as_str(), before, after) == ("b", 3, 2),
        "first choice was {:?}, expected slot b with tries 3 -> 2",
        b.text
    );
    let (reason, a) = b_refused_then_a(&mut vm)?;
    ensure!(
        reason.contains("boot.sig does not match")
            && reason.contains("recording prio 2 tries 3 ok 0 -> prio 0 tries 0 ok 0"),
        "slot b was refused for another reason, or not marked failed: {reason:?}"
    );
    // Same firmware run, and b's kernel never got control.
    let between: Vec<_> = vm
        .lines_since(start)
        .into_iter()
        .filter(|l| l.n > b.n && l.n < a.n)
        .collect();
    for l in &between {
        ensure!(
            l.spawn == b.spawn
                && !l.text.contains("slot b boot files verified")
                && !l.text.contains("Linux version")
                && !l.text.contains("BdsDxe"),
            "slot b was started or the machine restarted before a was chosen: {:?}",
            l.text
        );
    }
    a_reaches_login(ctx, &mut vm)?;
    a_committed(&mut vm)?;
    expect_final_attrs(ctx, &mut vm, A_FRESH, Attrs::new(0, 0, false))
}

// ---- esp-read-error --------------------------------------------------------

/// B is a valid copy of A, armed as a fresh update, but the disk fails every
/// read of one sector of B's kernel on the ESP (qemu's blkdebug). The boot
/// manager refuses B for this boot, charges it one try only (a read error
/// proves nothing about the slot), and boots A in the same run.
pub fn esp_read_error(ctx: &mut Ctx) -> Result<()> {
    with_cleanup(ctx, esp_read_error_body)
}

fn esp_read_error_body(ctx: &mut Ctx) -> Result<()> {
    let disk = private_disk(ctx)?;
    let files = copy_a_to_b(ctx, &disk)?;
    arm_slot_b(&disk)?;
    let esp = disk.fat(Part::Esp.number())?;
    let path = format!("{}/{}", Slot::B.esp_dir(), disk_layout::boot_files::KERNEL);
    let at = esp.file_byte_offset(&path, files.kernel.len() as u64 / 2)?;
    let sector = at / 512;
    let rules = ctx.artifacts.join("blkdebug.conf");
    std::fs::write(
        &rules,
        format!(
            "[inject-error]\nevent = \"none\"\nerrno = \"5\"\nsector = \"{sector}\"\nonce = \"off\"\n"
        ),
    )?;
    say(
        ctx,
        &format!("reads of guest sector {sector} ({path}) fail with EIO"),
    );

    let mut spec = spec(ctx, &disk.path)?;
    spec.blkdebug = Some(rules);
    let mut vm = ctx.vm(spec)?;
    let b = vm.wait_for(Pattern::regex(CHOSEN)?, TO_LOGIN)?;
    ensure!(
        parse_chosen(&b.text)?.0 == "b",
        "first choice was {:?}, expected slot b",
        b.text
    );
    let (reason, _) = b_refused_then_a(&mut vm)?;
    say(ctx, &format!("refusal: {reason}"));
    ensure!(
        reason.contains("cannot read")
            && reason.contains("prio 2 tries 3 ok 0 -> prio 2 tries 2 ok 0"),
        "slot b was not refused for the read error at the cost of one try: {reason:?}"
    );
    a_reaches_login(ctx, &mut vm)?;
    a_committed(&mut vm)?;
    expect_final_attrs(ctx, &mut vm, A_FRESH, Attrs::new(2, 2, false))
}

// ---- verity-corruption -----------------------------------------------------

/// Where in USR-B's data area a byte is flipped: inside data block 0, which
/// mounting /usr must read (the erofs superblock is at byte 1024), but in
/// the 1 KiB before the superblock that erofs never looks at. So only
/// dm-verity can notice the change; without it B would boot fine.
pub const CORRUPT_OFFSET: u64 = 512;

/// B is a valid copy of A except one byte of /usr: its boots fail on the
/// verity check (panic or FATAL, then reboot) until the tries run out.
pub fn verity_corruption(ctx: &mut Ctx) -> Result<()> {
    with_cleanup(ctx, verity_corruption_body)
}

fn verity_corruption_body(ctx: &mut Ctx) -> Result<()> {
    let disk = private_disk(ctx)?;
    copy_a_to_b(ctx, &disk)?;
    let (old, new) = disk.flip_byte(Slot::B.part().number(), CORRUPT_OFFSET)?;
    say(
        ctx,
        &format!("USR-B byte {CORRUPT_OFFSET}: {old:#04x} -> {new:#04x}"),
    );
    arm_slot_b(&disk)?;

    let spec = spec(ctx, &disk.path)?;
    let mut vm = ctx.vm(spec)?;
    let evidence = [
        Pattern::from("cairn-boot: slot b boot files verified"),
        // The kernel's own report (KERN_ERR, which `quiet` keeps), e.g.
        // "device-mapper: verity: 253:3: data block 0 is corrupted"...
        Pattern::regex(r"device-mapper: verity: .*data block \d+ is corrupted")?,
        // ...then the reboot path: panic_on_corruption, or cairn-init
        // giving up if it saw the error first.
        Pattern::regex(r"Kernel panic - not syncing|cairn-init: FATAL")?,
    ];
    b_fails_three_times(ctx, &mut vm, &evidence, true)?;
    a_committed(&mut vm)?;
    expect_final_attrs(ctx, &mut vm, A_FRESH, Attrs::new(2, 0, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choice_lines() -> Result<()> {
        let l = "cairn-boot: slot b chosen: highest priority bootable (prio 2 tries 3 ok 0 -> prio 2 tries 2 ok 0)";
        assert_eq!(parse_chosen(l)?, ("b".to_string(), 3, 2));
        let l = "cairn-boot: slot a chosen: highest priority bootable (prio 1 tries 3 ok 1 -> prio 1 tries 2 ok 1)";
        assert_eq!(parse_chosen(l)?, ("a".to_string(), 3, 2));
        let l = "cairn-boot: slot a chosen: fallback: the committed slot above it failed its last boots in a row (prio 1 tries 3 ok 1 -> prio 1 tries 2 ok 1); entry 3 given up (prio 2 tries 0 ok 1 -> prio 0 tries 0 ok 1)";
        assert_eq!(parse_chosen(l)?, ("a".to_string(), 3, 2));
        assert!(parse_chosen("cairn-boot: slot c chosen").is_err());
        Ok(())
    }

    #[test]
    fn mount_checks() {
        assert!(check_usr_mount("/dev/mapper/usr erofs ro,relatime,user_xattr\n").is_empty());
        assert!(check_usr_mount("/dev/dm-0 erofs ro").is_empty());
        assert_eq!(check_usr_mount("/dev/vda2 erofs rw").len(), 2);
        assert_eq!(check_usr_mount("").len(), 1);
        assert!(check_root_mount("/dev/vda5 ext4 rw,relatime").is_empty());
        assert_eq!(check_root_mount("/dev/vda5 xfs ro").len(), 2);
    }

    #[test]
    fn host_config_names_root() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("qemu-tests-hostcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let text = std::fs::read_to_string(write_host_config(&dir)?)?;
        assert!(text.contains("[[users]]\nname = \"root\"\n"));
        assert!(text.contains(ROOT_PASSWORD_HASH));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
