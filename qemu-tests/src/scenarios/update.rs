//! The update path end to end (DESIGN.md "Releases and updates"): a v1 image
//! whose cairn-updated finds v2 in a repository served by a real HTTP server
//! on the host's loopback (the guest reaches it as 10.0.2.2 through QEMU user
//! networking), and every way that can go wrong.
//!
//! The repository of each scenario is a copy of the empty test repository
//! (whose root.json the image trusts) with one release published into it:
//! the real v2 build, or a variant of it made here and re-signed with the
//! development key, so that only booting it can tell it is bad.
//!
//! cairn-updated logs to the journal and the console
//! (`StandardOutput=journal+console`), so its steps show up on the serial
//! console the harness reads, with no shell needed while it works.

use crate::Pattern;
use crate::prep::{self, BootFiles};
use crate::runner::{Ctx, UpdateInputs};
use crate::scenarios::V2;
use crate::scenarios::boot_chain::{
    A_FRESH, CHOSEN, CORRUPT_OFFSET, K, ONE_ATTEMPT, ROOT_PASSWORD, SHELL_CMD, TO_LOGIN,
    b_fails_three_times, expect_final_attrs, parse_chosen, say, wait_committed, write_host_config,
};
use crate::vm::{HOST_ADDR_FROM_GUEST, Vm, VmSpec};
use anyhow::{Context, Result, bail, ensure};
use cairn_updater::fixture::Server;
use disk_layout::{Part, boot_files};
use gpt_slots::Attrs;
use release_manifest::{Manifest, ReleaseWriter};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A whole update in the guest under TCG: download, write, read back and
/// verify ~90 MB, plus the boot of the old slot before it.
pub(crate) const TO_UPDATE: Duration = Duration::from_secs(600);
/// The slot a host ends on after v2 was installed and committed (re-armed).
pub(crate) const B_GOOD: Attrs = Attrs::new(2, K, true);
/// A after v2 was committed: still good, below B (the fallback, armed).
pub(crate) const A_FALLBACK: Attrs = Attrs::new(1, K, true);
/// A slot never written: the image leaves B like this, and the agent sets it
/// so again before writing.
pub(crate) const UNBOOTABLE: Attrs = Attrs::new(0, 0, false);
/// Journal line of cairn-updated once the new slot is ready (console copy).
pub(crate) const READY: &str = "ready in slot b: reboot needed";

pub(crate) fn inputs(ctx: &Ctx) -> Result<UpdateInputs> {
    ctx.images.update(ctx.arch).cloned().with_context(|| {
        format!(
            "scenario {} needs a v2 build and the test repository (cargo xtask vmtest builds them)",
            ctx.scenario
        )
    })
}

/// A repository in the scenario's folder that the image trusts, with
/// `release` published to channel "stable".
pub(crate) fn publish(ctx: &Ctx, release: &Path) -> Result<PathBuf> {
    let base = inputs(ctx)?.repo;
    let repo = ctx.artifacts.join("repo");
    std::fs::create_dir_all(repo.join("roots"))?;
    for f in ["root.json", "root.json.sig"] {
        std::fs::copy(base.join(f), repo.join(f))
            .with_context(|| format!("copying {} of {}", f, base.display()))?;
    }
    for e in std::fs::read_dir(base.join("roots"))? {
        let e = e?;
        std::fs::copy(e.path(), repo.join("roots").join(e.file_name()))?;
    }
    let key = prep::dev_key(&ctx.artifacts)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let opts = release_repo::PublishOptions {
        // Started a minute ago, everyone at once: the wave has reached every host.
        wave: release_repo::Wave::immediate(now - 60),
        expires: now + 7 * 86400,
    };
    release_repo::publish(release, &repo, "stable", &[key], opts)
        .with_context(|| format!("publishing {} into {}", release.display(), repo.display()))?;
    Ok(repo)
}

/// The host config: root's password, the repository, the reboot strategy and
/// extra TOML (health checks).
pub(crate) fn host_config(
    ctx: &Ctx,
    server: &Server,
    reboot: &str,
    extra: &str,
) -> Result<PathBuf> {
    let port = server
        .url
        .rsplit(':')
        .next()
        .context("server URL without a port")?;
    let p = write_host_config(&ctx.artifacts)?;
    let mut text = std::fs::read_to_string(&p)?;
    text += &format!(
        "\n[update]\nurl = \"http://{HOST_ADDR_FROM_GUEST}:{port}\"\nchannel = \"stable\"\n\
         reboot = \"{reboot}\"\ninterval_minutes = 1\n{extra}"
    );
    std::fs::write(&p, text)?;
    Ok(p)
}

pub(crate) fn spec(ctx: &Ctx, config: PathBuf) -> Result<VmSpec> {
    let mut s = VmSpec::new(ctx.arch, ctx.image_file("disk.raw")?);
    s.fw_cfg_config = Some(config);
    Ok(s)
}

/// Waits for the boot manager's next choice; returns the slot letter.
pub(crate) fn next_choice(vm: &mut Vm, timeout: Duration) -> Result<String> {
    let line = vm.wait_for(Pattern::regex(CHOSEN)?, timeout)?;
    Ok(parse_chosen(&line.text)?.0)
}

/// Logs in whether or not the login prompt already went by: waiting for
/// the agent's lines usually reads past it, and an empty line makes agetty
/// print it again.
pub(crate) fn login(vm: &mut Vm) -> Result<()> {
    vm.send_line("")?;
    vm.login("root", ROOT_PASSWORD, TO_LOGIN)
        .context("logging in as root")
}

/// Requests the server saw for `version`'s manifest or for chunks, from
/// index `from` of its log on.
pub(crate) fn release_requests(server: &Server, from: usize, version: &str) -> Vec<String> {
    let log = server
        .faults
        .log
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    log.into_iter()
        .skip(from)
        .filter(|r| r.contains(&format!("/{version}/")) || r.contains("/chunks/"))
        .collect()
}

pub(crate) fn log_len(server: &Server) -> usize {
    server.faults.log.lock().map(|l| l.len()).unwrap_or(0)
}

/// On the running v1 after a rollback: v2 is in the failed list with a
/// reason containing `reason`, and a fresh check (cairn-updated restarted)
/// downloads nothing of it.
/// The end of every rollback scenario: b fails three times (`evidence` on
/// each attempt), a boots, v2 is recorded as rolled back for `reason` and is
/// not fetched again, and at power-off a is fresh and b unbootable.
fn rolls_back(
    ctx: &Ctx,
    vm: &mut Vm,
    server: &Server,
    evidence: &[Pattern],
    login_fails: bool,
    reason: &str,
) -> Result<()> {
    b_fails_three_times(ctx, vm, evidence, login_fails)?;
    rolled_back_and_not_retried(ctx, vm, server, reason)?;
    power_off_expect(ctx, vm, A_FRESH, UNBOOTABLE)
}

fn rolled_back_and_not_retried(
    ctx: &Ctx,
    vm: &mut Vm,
    server: &Server,
    reason: &str,
) -> Result<()> {
    login(vm)?;
    let booted = vm.run_ok("cat /run/cairn/booted-slot", SHELL_CMD)?;
    ensure!(
        booted.trim() == "a",
        "booted slot is {:?}, not a",
        booted.trim()
    );
    // cairn-updated settles the rollback at its start, then checks.
    let hist = vm.run(
        &format!(
            "timeout 240 sh -c 'until cairnctl history --json | grep -q \"{V2}\"; do sleep 2; done'; cairnctl history"
        ),
        TO_LOGIN,
    )?;
    say(
        ctx,
        &format!("history after the rollback:\n{}", hist.1.trim()),
    );
    ensure!(
        hist.0 == 0 && hist.1.contains("rolled-back"),
        "cairnctl history does not record the rollback of {V2}:\n{}",
        hist.1
    );
    ensure!(
        hist.1.contains(reason),
        "the recorded reason does not name {reason:?}:\n{}",
        hist.1
    );
    // Two checks with v2 still offered: one at the service's start (already
    // under way), one forced by a restart. Neither may fetch v2 again.
    not_fetched_again(vm, server, V2)?;
    let status = vm.run_ok("cairnctl status", SHELL_CMD)?;
    say(ctx, &format!("status:\n{}", status.trim()));
    Ok(())
}

/// Logged in: once this boot is committed (every boot costs the booted slot
/// a try until then), powers the guest off and checks the slot attributes it
/// left.
pub(crate) fn power_off_expect(ctx: &Ctx, vm: &mut Vm, a_want: Attrs, b_want: Attrs) -> Result<()> {
    wait_committed(vm)?;
    vm.send_line("systemctl poweroff")?;
    vm.wait_exit(TO_LOGIN).context("waiting for power-off")?;
    expect_final_attrs(ctx, vm, a_want, b_want)
}

/// Publishes `release`, serves it, and boots v1 (slot a) with the update
/// config; returns once the agent reports the new slot ready.
pub(crate) fn boot_and_install(
    ctx: &mut Ctx,
    release: &Path,
    reboot: &str,
    extra: &str,
) -> Result<(Server, Vm)> {
    let repo = publish(ctx, release)?;
    let server = Server::start(&repo)?;
    let cfg = host_config(ctx, &server, reboot, extra)?;
    let mut vm = ctx.vm(spec(ctx, cfg)?)?;
    ensure!(
        next_choice(&mut vm, TO_LOGIN)? == "a",
        "the first boot is not slot a"
    );
    let l = vm.wait_for(READY, TO_UPDATE)?;
    say(
        ctx,
        &format!("{} written and verified at {:.1} s", release.display(), l.t),
    );
    Ok((server, vm))
}

/// The reboot into the slot the updater flipped to: b is chosen, verified,
/// and runs v2; logged in.
pub(crate) fn comes_up_on_b(vm: &mut Vm, timeout: Duration) -> Result<()> {
    let slot = next_choice(vm, timeout).context("waiting for the reboot into v2")?;
    ensure!(
        slot == "b",
        "after the update the boot manager chose slot {slot}"
    );
    vm.wait_for("cairn-boot: slot b boot files verified", ONE_ATTEMPT)?;
    login(vm)?;
    let facts = vm.run_ok(
        "cat /run/cairn/booted-slot; . /usr/lib/os-release; echo $IMAGE_VERSION",
        SHELL_CMD,
    )?;
    ensure!(
        facts.split_whitespace().collect::<Vec<_>>() == ["b", V2],
        "running {facts:?}, expected slot b with {V2}"
    );
    Ok(())
}

/// Logged in: a fresh check (cairn-updated restarted) finds nothing to
/// install and fetches nothing of `version`.
pub(crate) fn not_fetched_again(vm: &mut Vm, server: &Server, version: &str) -> Result<()> {
    let mark = log_len(server);
    vm.run_ok(
        "systemctl restart cairn-updated && timeout 120 sh -c \
         'until systemctl show -p StatusText --value cairn-updated | grep -q \"up to date\"; do sleep 2; done'",
        TO_LOGIN,
    )
    .context("waiting for a check to find nothing to install")?;
    let after = release_requests(server, mark, version);
    ensure!(
        after.is_empty(),
        "the agent fetched {version} again: {after:?}"
    );
    ensure!(
        log_len(server) > mark,
        "the check after the restart never reached the repository"
    );
    Ok(())
}

// ---- update ----------------------------------------------------------------

/// v1 installs v2 by itself, reboots into USR-B, commits it; A stays the
/// fallback.
pub fn update(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    let (server, mut vm) = boot_and_install(ctx, &v2.join("release"), "immediate", "")?;
    comes_up_on_b(&mut vm, TO_UPDATE)?;
    let good = vm.run(
        "timeout 240 sh -c 'until systemctl is-active -q cairn-mark-good.service; do sleep 2; done'",
        TO_LOGIN,
    )?;
    ensure!(good.0 == 0, "cairn-mark-good did not run on v2");
    let hist = vm.run_ok(
        "timeout 120 sh -c 'until cairnctl history | grep -q booted; do sleep 2; done'; cairnctl history",
        TO_LOGIN,
    )?;
    say(ctx, &format!("history:\n{}", hist.trim()));
    ensure!(
        hist.contains("booted") && hist.contains(V2),
        "the agent's history does not record {V2} as booted:\n{hist}"
    );
    let chunks = server
        .faults
        .log
        .lock()
        .map(|l| l.iter().filter(|r| r.contains("/chunks/")).count())
        .unwrap_or(0);
    ensure!(chunks > 0, "no chunk was fetched from the repository");
    power_off_expect(ctx, &mut vm, A_FALLBACK, B_GOOD)
}

// ---- rollback-bad-kernel ---------------------------------------------------

/// A copy of `release` whose boot files `edit` changed, re-signed with the
/// development key (boot.sig and the manifest): a validly signed release that
/// only fails when booted.
fn variant_release(
    ctx: &Ctx,
    release: &Path,
    edit: impl FnOnce(&mut BootFiles),
) -> Result<PathBuf> {
    variant_release_as(ctx, release, "variant-release", None, edit)
}

/// [`variant_release`] into `ctx.artifacts/<dir>`, optionally as another
/// version (the same payload offered as a newer release).
pub(crate) fn variant_release_as(
    ctx: &Ctx,
    release: &Path,
    dir: &str,
    version: Option<&str>,
    edit: impl FnOnce(&mut BootFiles),
) -> Result<PathBuf> {
    let out = ctx.artifacts.join(dir);
    let key = prep::dev_key(&ctx.artifacts)?;
    let doc = std::fs::read(release.join(release_manifest::MANIFEST_FILE))?;
    let m = Manifest::from_json(&doc)?;
    let get = |name: &str| -> Result<Vec<u8>> {
        let mut v = Vec::new();
        release_manifest::extract_image(release, &m, name, &mut v)
            .with_context(|| format!("reading {name} of {}", release.display()))?;
        Ok(v)
    };
    let mut files = BootFiles {
        kernel: get(boot_files::KERNEL)?,
        initrd: get(boot_files::INITRD)?,
        cmdline: get(boot_files::CMDLINE)?,
        sig: get(boot_files::SIGNATURE)?,
    };
    edit(&mut files);
    files.sign(key.seed());
    let mut w = ReleaseWriter::create(&out)?;
    let usr = m.image("usr")?;
    w.add_image(
        "usr",
        release_manifest::read_image(release, &m, "usr")?,
        usr.chunk_size,
        usr.verity,
    )?;
    for (name, data) in [
        (boot_files::KERNEL, &files.kernel),
        (boot_files::INITRD, &files.initrd),
        (boot_files::CMDLINE, &files.cmdline),
        (boot_files::SIGNATURE, &files.sig),
    ] {
        w.add_image(name, &data[..], release_manifest::DEFAULT_CHUNK_SIZE, None)?;
    }
    w.finish(
        release_manifest::ManifestFields {
            board: m.board.clone(),
            arch: m.arch.clone(),
            version: match version {
                Some(v) => release_manifest::Version::parse(v)?,
                None => m.version.clone(),
            },
            created: m.created,
            expires: m.expires,
            packages: m.packages.clone(),
        },
        &[key],
    )?;
    Ok(out)
}

/// v2's kernel panics (its initramfs has no /init): three attempts, back to
/// v1, v2 recorded as failed and never fetched again.
pub fn rollback_bad_kernel(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    let bad_initrd = prep::initrd_without_init()?;
    let release = variant_release(ctx, &v2.join("release"), |f| f.initrd = bad_initrd)?;
    let (server, mut vm) = boot_and_install(ctx, &release, "immediate", "")?;
    let evidence = [
        Pattern::from("cairn-boot: slot b boot files verified"),
        Pattern::regex(r"Kernel panic - not syncing")?,
    ];
    rolls_back(ctx, &mut vm, &server, &evidence, true, "without reaching")
}

// ---- rollback-health-check ---------------------------------------------------

/// The host's health check fails on v2 (it tests the running version, as a
/// check of an app that v2 broke would): v2 boots to userspace three times,
/// fails its check each time, and the host returns to v1.
pub fn rollback_health_check(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    let health = format!(
        "\n[health]\nsettle_seconds = 2\ntimeout_seconds = 10\n\
         commands = [[\"/bin/sh\", \"-c\", \"! grep -qx IMAGE_VERSION={V2} /usr/lib/os-release\"]]\n"
    );
    let (server, mut vm) = boot_and_install(ctx, &v2.join("release"), "immediate", &health)?;
    // Each attempt boots v2's userspace; the health gate reboots it.
    let evidence = [
        Pattern::from("cairn-boot: slot b boot files verified"),
        Pattern::from("cairn-health: slot b is on trial and unhealthy"),
    ];
    rolls_back(ctx, &mut vm, &server, &evidence, false, "health check")
}

// ---- rollback-verity -----------------------------------------------------------

/// USR-B is corrupted on disk after the agent verified it (one byte that
/// mounting /usr reads, see `CORRUPT_OFFSET`): dm-verity stops every attempt.
pub fn rollback_verity(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    let (server, mut vm) = boot_and_install(ctx, &v2.join("release"), "off", "")?;
    login(&mut vm)?;
    let dev = format!("/dev/disk/by-partlabel/{}", Part::UsrB.label());
    let flip = format!(
        "b=$(od -An -tu1 -j{CORRUPT_OFFSET} -N1 {dev}); \
         printf \"\\\\$(printf %o $((b ^ 255)))\" | dd of={dev} bs=1 seek={CORRUPT_OFFSET} conv=notrunc status=none && sync && \
         echo \"$b -> $(od -An -tu1 -j{CORRUPT_OFFSET} -N1 {dev})\""
    );
    let out = vm.run_ok(&flip, SHELL_CMD)?;
    say(ctx, &format!("USR-B byte {CORRUPT_OFFSET}: {}", out.trim()));
    vm.send_line("systemctl reboot")?;
    let evidence = [
        Pattern::from("cairn-boot: slot b boot files verified"),
        Pattern::regex(r"device-mapper: verity: .*data block \d+ is corrupted")?,
        Pattern::regex(r"Kernel panic - not syncing|cairn-init: FATAL")?,
    ];
    rolls_back(ctx, &mut vm, &server, &evidence, true, "dm-verity")
}

// ---- tamper ----------------------------------------------------------------------

/// The server corrupts one chunk of v2 in flight: the agent refuses it before
/// writing it, names it, and nothing becomes bootable.
pub fn tamper(ctx: &mut Ctx) -> Result<()> {
    let v2 = inputs(ctx)?.v2;
    let release = v2.join("release");
    let repo = publish(ctx, &release)?;
    let m = Manifest::from_json(&std::fs::read(
        release.join(release_manifest::MANIFEST_FILE),
    )?)?;
    let usr = m.image("usr")?;
    let victim = &usr.chunks[usr.chunks.len() / 2];
    let server = Server::start(&repo)?;
    if let Ok(mut c) = server.faults.corrupt.lock() {
        *c = Some(victim.file.clone());
    }
    say(
        ctx,
        &format!("serving chunk {} ({}) corrupted", victim.index, victim.file),
    );
    let cfg = host_config(ctx, &server, "immediate", "")?;
    let mut vm = ctx.vm(spec(ctx, cfg)?)?;
    ensure!(
        next_choice(&mut vm, TO_LOGIN)? == "a",
        "the first boot is not slot a"
    );
    login(&mut vm)?;
    let st = vm.run(
        "timeout 400 sh -c 'until systemctl show -p StatusText --value cairn-updated | grep -q \"failed\"; do sleep 2; done'; \
         systemctl show -p StatusText --value cairn-updated",
        TO_UPDATE,
    )?;
    say(ctx, &format!("agent status: {}", st.1.trim()));
    ensure!(
        st.0 == 0 && st.1.contains("chunk"),
        "the agent did not refuse the corrupted chunk by name: {:?}",
        st.1.trim()
    );
    let failed = vm.run_ok("cairnctl history", SHELL_CMD)?;
    ensure!(
        !failed.contains("installed"),
        "the agent recorded an installation from a tampered repository:\n{failed}"
    );
    power_off_expect(ctx, &mut vm, A_FRESH, UNBOOTABLE)
}

// ---- power-cut -------------------------------------------------------------------

/// Where to cut the power: after a line of cairn-updated appears on the
/// console, plus a delay. In the order an update passes them; each later one
/// is reached by the update resumed after the previous cut. Every phase is
/// cut at least once, and twice where its state changes part way (the slot
/// half written, the ESP files, the GPT flip); each cut costs a boot.
const CUTS: &[(&str, f64)] = &[
    ("marking slot b unbootable", 0.0),
    // Short delays: on a quiet host the whole write takes a few seconds.
    ("writing 2.0.0 to slot b", 0.5),
    ("writing 2.0.0 to slot b", 2.0),
    ("reading the slot back", 0.3),
    ("writing boot files", 0.0),
    ("writing boot files", 0.4),
    ("marking slot b to boot next", 0.0),
    ("marking slot b to boot next", 0.1),
    (READY, 0.3),
];

/// The VM loses power at `CUTS`, spread over download, write, boot files and
/// the GPT flip. After every cut the next boot comes up on a slot whose boot
/// files verify and reaches userspace; in the end the update completes and
/// v2 is committed.
pub fn power_cut(ctx: &mut Ctx) -> Result<()> {
    ensure!(V2 == "2.0.0", "CUTS name version 2.0.0");
    let v2 = inputs(ctx)?.v2;
    let repo = publish(ctx, &v2.join("release"))?;
    let server = Server::start(&repo)?;
    let cfg = host_config(ctx, &server, "off", "")?;
    let mut vm = ctx.vm(spec(ctx, cfg)?)?;
    let mut slot = next_choice(&mut vm, TO_LOGIN)?;
    ensure!(slot == "a", "the first boot is not slot a");
    let resumed =
        regex_lite::Regex::new(r"writing 2\.0\.0 to slot b \(\d+ chunks, resuming at (\d+)\)")?;
    let mut cuts = 0;
    for (i, (line, delay)) in CUTS.iter().enumerate() {
        if slot == "b" {
            // The flip is done and b booted: nothing left to cut.
            say(
                ctx,
                &format!("cut {}: skipped, slot b already booted", i + 1),
            );
            continue;
        }
        let l = vm
            .wait_for(*line, TO_UPDATE)
            .with_context(|| format!("cut {}: waiting for {line:?}", i + 1))?;
        std::thread::sleep(Duration::from_secs_f64(*delay));
        vm.kill()?;
        cuts += 1;
        say(
            ctx,
            &format!(
                "cut {}: {delay:.1} s after {line:?} (at {:.1} s)",
                i + 1,
                l.t
            ),
        );
        vm.restart()?;
        let before = vm.cursor();
        slot = next_choice(&mut vm, TO_LOGIN)?;
        vm.wait_for(
            format!("cairn-boot: slot {slot} boot files verified").as_str(),
            ONE_ATTEMPT,
        )?;
        // Userspace of that slot is up once systemd starts the agent.
        vm.wait_for("cairn-updated", TO_LOGIN)
            .with_context(|| format!("after cut {}: slot {slot} did not reach userspace", i + 1))?;
        say(ctx, &format!("after cut {}: slot {slot} booted", i + 1));
        // The next cut counts from what this boot's agent prints, including
        // what it printed while we waited for it.
        vm.set_cursor(before);
    }
    // The last cuts may find b already booted (a cut landed after the flip).
    ensure!(
        cuts + 2 >= CUTS.len(),
        "only {cuts} of {} cuts happened before v2 booted",
        CUTS.len()
    );
    let mut resumes = Vec::new();
    for l in vm.console_since(crate::Mark(0)).lines() {
        if let Some(k) = resumed.captures(l).and_then(|c| c.get(1)) {
            resumes.push(k.as_str().parse::<u64>()?);
        }
    }
    say(ctx, &format!("resume points after the cuts: {resumes:?}"));
    ensure!(
        resumes.iter().any(|k| *k > 0),
        "no restart resumed past chunk 0: {resumes:?}"
    );
    if slot == "a" {
        // Cut after the flip but before a reboot: the next boot must be b.
        bail!("after all cuts the host still boots slot a: the update never completed");
    }
    login(&mut vm)?;
    let facts = vm.run_ok(
        "cat /run/cairn/booted-slot; . /usr/lib/os-release; echo $IMAGE_VERSION",
        SHELL_CMD,
    )?;
    ensure!(
        facts.split_whitespace().collect::<Vec<_>>() == ["b", V2],
        "running {facts:?}, expected slot b with {V2}"
    );
    let good = vm.run(
        "timeout 240 sh -c 'until systemctl is-active -q cairn-mark-good.service; do sleep 2; done'",
        TO_LOGIN,
    )?;
    ensure!(good.0 == 0, "cairn-mark-good did not run on v2");
    power_off_expect(ctx, &mut vm, A_FALLBACK, B_GOOD)
}
