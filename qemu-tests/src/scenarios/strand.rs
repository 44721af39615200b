//! Never strand a host: the paths where a host could be left without a slot
//! that boots, each driven in a VM.
//!
//! - `update-during-trial`: a newer release published while the booted slot
//!   is still on trial must not touch the other slot (the proven fallback)
//!   until this boot is committed.
//! - `rollback-after-commit`: a committed slot whose /usr rots on disk stops
//!   booting; the boot manager falls back to the other slot by itself within
//!   K+1 boots, and the agent says why.

use crate::Pattern;
use crate::runner::Ctx;
use crate::scenarios::boot_chain::{
    A_FRESH, CHOSEN, CORRUPT_OFFSET, K, ONE_ATTEMPT, SHELL_CMD, TO_LOGIN, line_text, parse_chosen,
    say, wait_committed,
};
use crate::scenarios::update::{
    B_GOOD, TO_UPDATE, boot_and_install, comes_up_on_b, inputs, log_len, login, not_fetched_again,
    power_off_expect, publish, release_requests, variant_release_as,
};
use crate::scenarios::{V2, V3};
use crate::vm::Vm;
use anyhow::{Context, Result, ensure};
use disk_layout::Part;
use gpt_slots::Attrs;

/// v2's health check passes once this file exists: the scenario ends the
/// trial itself when its checks are done, whatever the speed of the guest.
const TRIAL_OVER: &str = "/run/cairn-test-trial-over";
/// Samples of slot A, 10 s apart, while v2 is on trial: over a minute, so
/// the check at cairn-updated's restart and one timer cycle (interval 1
/// minute) both happen inside the trial.
const TRIAL_SAMPLES: u32 = 8;

/// Reboots the logged-in guest into the slot the updater flipped to, and
/// logs in there.
fn reboot_into_b(ctx: &Ctx, vm: &mut Vm) -> Result<()> {
    vm.send_line("systemctl reboot")?;
    comes_up_on_b(vm, TO_LOGIN)?;
    say(ctx, "v2 runs from slot b");
    Ok(())
}

/// Slot `slot`'s attributes as `cairnctl status --json` reports them.
fn slot_attrs(vm: &mut Vm, slot: &str) -> Result<Attrs> {
    let out = vm.run_ok("cairnctl status --json", SHELL_CMD)?;
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("cairnctl status --json printed {out:?}"))?;
    let a = &v["slots"][slot];
    let field = |k: &str| {
        a[k].as_u64()
            .with_context(|| format!("no slots.{slot}.{k} in {out}"))
    };
    Ok(Attrs::new(
        u8::try_from(field("priority")?)?,
        u8::try_from(field("tries")?)?,
        a["successful"].as_bool().context("no successful")?,
    ))
}

// ---- update-during-trial ---------------------------------------------------

/// v2 boots on trial with a slow health check; v3 is published during the
/// trial. The timer's check, a restart of cairn-updated and `cairnctl update`
/// all leave slot A (v1, the fallback) as it is; once v2 is committed, v3
/// installs into A.
pub fn update_during_trial(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    // Held only on v2: v1's gate passes at once.
    let health = format!(
        "\n[health]\nsettle_seconds = 2\ntimeout_seconds = 1800\n\
         commands = [[\"/bin/sh\", \"-c\", \"! grep -qx IMAGE_VERSION={V2} /usr/lib/os-release || test -e {TRIAL_OVER}\"]]\n"
    );
    let (server, mut vm) = boot_and_install(ctx, &v2.join("release"), "off", &health)?;
    login(&mut vm)?;
    reboot_into_b(ctx, &mut vm)?;
    let b = slot_attrs(&mut vm, "b")?;
    ensure!(!b.successful, "slot b is {b} before its health gate passed");

    // v3 appears while v2 is on trial.
    let v3 = variant_release_as(ctx, &v2.join("release"), "v3-release", Some(V3), |_| {})?;
    publish(ctx, &v3)?;
    let mark = log_len(&server);
    say(ctx, &format!("{V3} published during the trial"));

    let direct = vm.run("cairnctl update 2>&1", TO_LOGIN)?;
    say(
        ctx,
        &format!("cairnctl update on trial: {}", direct.1.trim()),
    );
    ensure!(
        direct.0 != 0 && direct.1.contains("on trial"),
        "cairnctl update on a slot on trial did not refuse with the reason: {direct:?}"
    );
    // A check at the service's start, and the timer's (interval 1 minute).
    vm.run_ok("systemctl restart cairn-updated", SHELL_CMD)?;
    for _ in 0..TRIAL_SAMPLES {
        let a = slot_attrs(&mut vm, "a")?;
        ensure!(
            a == A_FRESH,
            "slot a changed to {a} while slot b was on trial (expected {A_FRESH})"
        );
        let b = slot_attrs(&mut vm, "b")?;
        ensure!(!b.successful, "slot b is {b}: the trial ended early");
        vm.run_ok("sleep 10", SHELL_CMD)?;
    }
    let waiting = vm.run_ok(
        "systemctl show -p StatusText --value cairn-updated",
        SHELL_CMD,
    )?;
    ensure!(
        waiting.contains("marked good before updating"),
        "cairn-updated does not say it waits for the trial: {waiting:?}"
    );
    // The trial ends: the gate passes, cairn-mark-good commits v2.
    vm.run_ok(&format!("touch {TRIAL_OVER}"), SHELL_CMD)?;
    wait_committed(&mut vm)?;
    let b = slot_attrs(&mut vm, "b")?;
    ensure!(b.successful, "slot b is {b} after its gate passed");
    let samples = TRIAL_SAMPLES;
    let during = release_requests(&server, mark, V3);
    ensure!(
        during.iter().all(|r| !r.contains("/chunks/")),
        "chunks were fetched while slot b was on trial: {during:?}"
    );
    say(
        ctx,
        &format!("slot a stayed {A_FRESH} over {samples} samples of the trial; v2 committed"),
    );

    // Committed: the next check installs v3 into A.
    vm.wait_for("ready in slot a: reboot needed", TO_UPDATE)
        .context("waiting for v3 to be installed into slot a after the commit")?;
    let hist = vm.run_ok("cairnctl history", SHELL_CMD)?;
    say(ctx, &format!("history:\n{}", hist.trim()));
    ensure!(
        hist.contains(V3),
        "the history does not record {V3}:\n{hist}"
    );
    power_off_expect(
        ctx,
        &mut vm,
        Attrs::new(2, 3, false),
        Attrs {
            priority: 1,
            ..B_GOOD
        },
    )
}

// ---- rollback-after-commit -------------------------------------------------

/// v2 is installed and committed on B, then USR-B rots on disk (one byte
/// only dm-verity notices). B's next K boots die in early boot; the boot
/// manager then falls back to A and gives B up, without any help; the agent
/// records why and does not reinstall v2.
pub fn rollback_after_commit(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    let (server, mut vm) = boot_and_install(ctx, &v2.join("release"), "off", "")?;
    login(&mut vm)?;
    reboot_into_b(ctx, &mut vm)?;
    wait_committed(&mut vm)?;
    let b = slot_attrs(&mut vm, "b")?;
    ensure!(
        b == B_GOOD,
        "slot b is {b} after its commit, expected {B_GOOD}"
    );
    vm.run_ok(
        "timeout 120 sh -c 'until cairnctl history | grep -q booted; do sleep 2; done'",
        TO_LOGIN,
    )
    .context("waiting for the agent to record the boot of v2")?;

    let dev = format!("/dev/disk/by-partlabel/{}", Part::UsrB.label());
    // Sent without waiting for an answer: the running v2 may trip over the
    // rotten block itself (dm-verity panics, panic=5 reboots), or reboots.
    vm.send_line(&format!(
        "b=$(od -An -tu1 -j{CORRUPT_OFFSET} -N1 {dev}); \
         printf \"\\\\$(printf %o $((b ^ 255)))\" | dd of={dev} bs=1 seek={CORRUPT_OFFSET} conv=notrunc status=none; \
         sync; systemctl reboot"
    ))?;
    say(
        ctx,
        &format!("USR-B byte {CORRUPT_OFFSET} flipped under the running v2; rebooting"),
    );

    let chosen = Pattern::regex(CHOSEN)?;
    let evidence = Pattern::regex(r"device-mapper: verity: .*data block \d+ is corrupted")?;
    let mut boots = 0;
    let fallback = loop {
        let line = vm
            .wait_for(chosen.clone(), ONE_ATTEMPT)
            .with_context(|| format!("waiting for boot {} after the corruption", boots + 1))?;
        boots += 1;
        let (slot, before, after) = parse_chosen(&line.text)?;
        say(
            ctx,
            &format!(
                "boot {boots}: slot {slot} (tries {before} -> {after}) at {:.1} s",
                line.t
            ),
        );
        if slot == "a" {
            break line;
        }
        ensure!(
            boots <= usize::from(K),
            "slot b chosen {boots} times after it stopped booting (K = {K})"
        );
        let (i, l) = vm
            .wait_for_any(&[evidence.clone(), chosen.clone()], ONE_ATTEMPT)
            .with_context(|| format!("waiting for dm-verity to stop boot {boots}"))?;
        ensure!(
            i == 0,
            "boot {boots} of b did not fail on dm-verity: {:?}",
            l.text
        );
    };
    ensure!(
        boots == usize::from(K) + 1,
        "back on a after {boots} boots, expected K+1 = {}",
        K + 1
    );
    vm.wait_for("cairn-boot: slot a boot files verified", ONE_ATTEMPT)?;
    let full = line_text(&vm, fallback.n);
    ensure!(
        full.contains("fallback") && full.contains("given up"),
        "the choice of a does not say it falls back and gives b up: {full:?}"
    );
    vm.wait_for("cairn login:", TO_LOGIN)?;
    login(&mut vm)?;
    let hist = vm.run(
        "timeout 240 sh -c 'until cairnctl history --json | grep -q \"fell-back\"; do sleep 2; done'; cairnctl history",
        TO_LOGIN,
    )?;
    say(
        ctx,
        &format!("history after the fallback:\n{}", hist.1.trim()),
    );
    ensure!(
        hist.0 == 0 && hist.1.contains(V2) && hist.1.contains("after it was committed"),
        "cairnctl history does not say why {V2} was left:\n{}",
        hist.1
    );
    not_fetched_again(&mut vm, &server, V2)?;
    power_off_expect(ctx, &mut vm, A_FRESH, Attrs::new(0, 0, true))
}
