//! The update flow: check, apply, reconcile after boot, manual rollback, status.

use std::sync::Arc;
use std::time::Instant;

use disk_layout::{Slot, boot_files};
use gpt_slots::{Attrs, UPDATE_PRIORITY, mark_failed, mark_unbootable, mark_updated};
use release_manifest::{ChunkVerifier, Hex32, Image, Manifest};
use release_repo::{
    MAX_METADATA, MAX_SIGNATURES, ReleaseEntry, Root, SIG_SUFFIX, channel_path, root_path,
    verify_channel, verify_manifest, verify_root_chain,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::RebootStrategy;
use crate::fleet::{Coordinator, RebootStatus};
use crate::host::os_release_field;
use crate::http::Http;
pub use crate::pipeline::Event;
use crate::pipeline::{self, UsrJob};
use crate::plan::{self, Decision, HostView};
use crate::state::{self, History, Phase, Progress, StateDir, format_utc};
use crate::target::{SlotAttrs, Target};
use crate::{Error, Host};

/// Longest root chain walked in one check (a repository rotating daily for
/// years stays far below; a malicious one cannot keep the agent busy forever).
const MAX_ROOT_CHAIN: u64 = 1024;
/// Boot files are held in memory; a signed manifest asking for more is refused.
const MAX_BOOT_FILE: u64 = 512 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    pub root_version: u64,
    pub channel: String,
    pub channel_version: u64,
    pub booted_version: String,
    #[serde(flatten)]
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApplyOutcome {
    pub version: String,
    pub slot: String,
    pub chunks_total: u64,
    /// Chunks already verified by an earlier, interrupted run.
    pub chunks_resumed: u64,
    pub usr_bytes: u64,
    /// Body bytes received over HTTP in this run, including retried bytes.
    pub bytes_downloaded: u64,
    pub seconds: f64,
    pub reboot_needed: bool,
    pub already_installed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub booted_slot: String,
    pub booted_version: String,
    pub board: String,
    pub arch: String,
    pub slots: SlotAttrs,
    pub pending: Option<Progress>,
    pub reboot_needed: bool,
    pub failed_versions: std::collections::BTreeMap<String, String>,
    pub development_key: bool,
    /// The reboot strategy and, with a fleet lock, this host's slot.
    pub reboot: RebootStatus,
}

/// The agent over one host, disk, state directory and repository.
pub struct Agent {
    pub host: Host,
    pub target: Target,
    pub state: StateDir,
    pub http: Http,
    pub channel: String,
    /// The root shipped with the image; a newer verified one is kept in trust.json.
    pub shipped_root: Option<Root>,
    pub seed: f64,
    /// Unix seconds; a fixed value in tests, `None` for the system clock.
    pub clock: Option<u64>,
    pub ignore_wave: bool,
    /// Test hook: stop (as if killed) after writing this many chunks in one run.
    pub stop_after_chunks: Option<u64>,
    /// Never a delta: download the whole usr image (`cairnctl update --full`).
    pub full_download: bool,
    /// `[update] reboot`.
    pub reboot: RebootStrategy,
    /// This host in its fleet group, with `reboot = "etcd-lock"` or
    /// `"fleetlock"`. With etcd, what becomes of each release here is
    /// queued for the group's rollout outcomes (`fleet-outbox.json`).
    pub fleet: Option<Arc<Coordinator>>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sig_of(path: &str) -> String {
    format!("{path}{SIG_SUFFIX}")
}

/// The booted release's build time: every inode of Cairn's EROFS /usr carries
/// the build's SOURCE_DATE_EPOCH (`mkfs.erofs -T`), which is also the `created`
/// of its signed manifest, so the mtime of /usr/lib/os-release is it. Only
/// when that os-release is Cairn's and names the booted version (not a build
/// machine's own /usr, or a host described by other files).
pub fn booted_build_time(
    os_release: &[u8],
    mtime: u64,
    booted: &release_manifest::Version,
) -> Option<u64> {
    let text = String::from_utf8_lossy(os_release);
    let id = os_release_field(&text, "ID")?;
    let version = os_release_field(&text, "IMAGE_VERSION")?;
    let same = release_manifest::Version::parse(&version).is_ok_and(|v| v == *booted);
    (id == "cairn" && same).then_some(mtime)
}

/// The error text for metadata whose expiry is at or before the effective
/// time max(clock, floor). Whether the clock or the floor made it expire
/// decides the advice: a clock set far ahead must not look like an attack the
/// operator can do nothing about.
pub fn expired_message(what: &str, expires: u64, clock: u64, floor: u64) -> String {
    let exp = format_utc(expires);
    if clock >= expires {
        format!(
            "{what} expired at {exp}, and the system clock says {}: if the clock is wrong, fix it (timedatectl status; timedatectl set-ntp true, or timedatectl set-time) and retry; if it is right, the repository serves stale metadata (a freeze attack, or the publisher stopped re-signing it)",
            format_utc(clock)
        )
    } else {
        format!(
            "{what} expired at {exp}: the system clock says {}, but this host has already seen signed data from {} (its release's build time or a newer manifest), so the metadata is stale (a freeze attack or a stale mirror) and refused; the clock is behind too: fix it (timedatectl set-ntp true)",
            format_utc(clock),
            format_utc(floor)
        )
    }
}

/// A whole image of at most `max` bytes (`what` names it in the error):
/// every chunk checked against its signed hashes, then the total.
pub(crate) fn fetch_image(
    http: &Http,
    image: &Image,
    max: u64,
    what: &str,
) -> Result<Vec<u8>, Error> {
    if image.size > max {
        return Err(Error::BadRelease(format!(
            "{what} {} is {} bytes, over the {max} allowed",
            image.name, image.size
        )));
    }
    let mut out = Vec::with_capacity(image.size as usize);
    for c in &image.chunks {
        let compressed = http.get(&c.file, c.zsize, Some(c.zsize))?;
        let plain = ChunkVerifier::new(c)
            .verify(&compressed)
            .map_err(|cause| Error::Release {
                what: c.file.clone(),
                cause,
            })?;
        out.extend_from_slice(&plain);
    }
    if Sha256::digest(&out)[..] != image.sha256.0 {
        return Err(Error::Release {
            what: image.name.clone(),
            cause: release_manifest::Error::ImageSha256(image.name.clone()),
        });
    }
    Ok(out)
}

impl Agent {
    /// The time expiry is judged by: the clock, never below the trusted floor
    /// ([`Agent::time_floor`]), so a clock set back cannot revive expired
    /// (frozen) metadata. Also the time of rollout waves and history events.
    pub fn now(&self) -> u64 {
        self.clock_now().max(self.time_floor())
    }

    /// The system clock (or the fixed test clock), without the floor.
    pub fn clock_now(&self) -> u64 {
        self.clock.unwrap_or_else(now_secs)
    }

    /// max(the booted release's build time, the newest signed time seen),
    /// neither taken from the clock, so a clock set far ahead never raises it
    /// and fixing the clock always recovers. Best effort: an unreadable
    /// trust.json counts 0 here (reading it in `check` reports the error).
    pub fn time_floor(&self) -> u64 {
        let seen = self.state.trust().map_or(0, |t| t.signed_time);
        let os = crate::host::os_release();
        let built = std::fs::read(&os).ok().and_then(|bytes| {
            let mtime = std::fs::metadata(os)
                .ok()?
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            booted_build_time(&bytes, mtime, &self.host.booted_version)
        });
        seen.max(built.unwrap_or(0))
    }

    /// Raises the stored signed time to `t` (a verified manifest's `created`).
    fn note_signed_time(&self, t: u64) -> Result<(), Error> {
        let mut trust = self.state.trust()?;
        if t > trust.signed_time {
            trust.signed_time = t;
            self.state.set_trust(&trust)?;
        }
        Ok(())
    }

    /// Turns an expiry refusal into one that says whether the clock or the
    /// floor made it, and what to do.
    fn explain_expiry(&self, e: Error) -> Error {
        let (what, expires) = match e {
            Error::Repo(release_repo::Error::Expired { what, expires, .. }) => (what, expires),
            Error::Release {
                what,
                cause: release_manifest::Error::Expired { expires, .. },
            } => (format!("release manifest {what}"), expires),
            e => return e,
        };
        Error::Expired {
            what,
            expires,
            clock: self.clock_now(),
            floor: self.time_floor(),
        }
    }

    /// `Err(OnTrial)` while the booted slot is not marked successful: then the
    /// other slot is the only proven fallback, and nothing may write it.
    /// `Err(RollbackPending)` while the other slot is committed and set to
    /// boot next (`cairnctl rollback` before its reboot): writing it would
    /// undo the rollback.
    pub fn refuse_if_on_trial(&self) -> Result<(), Error> {
        let booted = self.host.booted_slot;
        let attrs = self.target.read_attrs()?;
        let (b, o) = (attrs.get(booted), attrs.get(booted.other()));
        if !b.successful {
            return Err(Error::OnTrial {
                slot: booted.letter(),
            });
        }
        if o.successful && o.priority > b.priority {
            return Err(Error::RollbackPending {
                slot: booted.other().letter(),
            });
        }
        Ok(())
    }

    /// Queues what became of `version` here for the fleet's rollout
    /// outcomes (etcd-lock only; cairn-updated sends the queue to etcd).
    fn note_outcome(
        &self,
        version: &str,
        outcome: fleet_lock::Outcome,
        reason: &str,
    ) -> Result<(), Error> {
        match &self.fleet {
            Some(f) if f.records_outcomes() => {
                crate::fleet::queue_outcome(&self.state, version, outcome, reason, self.now())
            }
            _ => Ok(()),
        }
    }

    /// Whether the fleet lets this host install `version` (etcd-lock: not
    /// when the group's rollout outcomes halt it). `cairnctl update
    /// --version` does not ask.
    pub fn halt_gate(&self, version: &release_manifest::Version) -> Result<(), Error> {
        match &self.fleet {
            Some(f) => f.halt_gate(version),
            None => Ok(()),
        }
    }

    /// An update is written, verified and set to boot next: a reboot starts it.
    pub fn reboot_needed(&self) -> Result<bool, Error> {
        Ok(self
            .state
            .progress()?
            .is_some_and(|p| p.phase == Phase::Ready && p.slot != self.host.booted_slot.letter()))
    }

    /// Why the staged update must not be booted, if its rollout was halted
    /// after it was installed: by the fleet's outcomes (etcd-lock) or by
    /// the publisher (signed in the channel). `Ok(None)` also when neither
    /// can be asked now (etcd or the repository down): the staged release
    /// was chosen and verified, and a halt is honoured at the next look.
    pub fn staged_halt(&self) -> Result<Option<(String, String)>, Error> {
        let Some(p) = self.state.progress()? else {
            return Ok(None);
        };
        if p.phase != Phase::Ready || p.slot == self.host.booted_slot.letter() {
            return Ok(None);
        }
        let version = p.version.to_string();
        if let Err(Error::Halted { detail, .. }) = self.halt_gate(&p.version) {
            return Ok(Some((version, detail)));
        }
        let Ok(check) = self.check_with(true) else {
            return Ok(None);
        };
        Ok(check
            .decision
            .skipped
            .into_iter()
            .find_map(|s| match s.skip {
                plan::Skip::Halted { .. } if s.version == version => {
                    Some((version.clone(), s.skip.describe()))
                }
                _ => None,
            }))
    }

    /// Takes back a staged update whose rollout was halted: its slot goes
    /// back to (0,0,0), so no reboot (planned or not) boots it, and the
    /// pending update is forgotten. Not marked failed: once the release is
    /// resumed the next check installs it again.
    pub fn unstage(&self, version: &str, why: &str) -> Result<String, Error> {
        let slot = self.inactive();
        self.target
            .update_attrs(|_| Ok(vec![(slot, Attrs::new(0, 0, false))]))?;
        self.state.set_progress(None)?;
        let line = format!(
            "not rebooting into {version}: {why}; slot {} no longer boots next",
            slot.letter()
        );
        let mut history = self.state.history()?;
        history.push(self.event("unstaged", version, slot, line.clone()));
        self.state.set_history(&history)?;
        Ok(line)
    }

    /// K, the boots a committed slot may die in a row before the boot
    /// manager falls back (the board's, shipped in /usr).
    fn boot_tries(&self) -> u8 {
        gpt_slots::committed_tries(std::path::Path::new("/"))
    }

    /// Records a committed slot the boot manager gave up (its boots kept
    /// dying before the health gate, so it fell back to this one): the
    /// version it ran is marked failed with the reason, once. Found by the
    /// slot's state, successful with priority 0, which only the boot
    /// manager's fallback (or its refusal of a committed slot's files) leaves.
    fn settle_fallback(&self) -> Result<Option<String>, Error> {
        let booted = self.host.booted_slot;
        let left = booted.other();
        let o = self.target.read_attrs()?.get(left);
        if !(o.successful && o.priority == 0) {
            return Ok(None);
        }
        let mut history = self.state.history()?;
        // The last thing the history says of that slot: only a boot of it
        // that was then left by the fallback is news.
        let Some(last) = history
            .events
            .iter()
            .rev()
            .find(|e| e.slot == left.letter())
            .cloned()
        else {
            return Ok(None);
        };
        // "installed": it passed its gate (successful) before the agent
        // got to record the boot.
        if last.kind != "booted" && last.kind != "installed" {
            return Ok(None);
        }
        let why = format!(
            "slot {} stopped booting after it was committed: its last boots died before the health checks (or its boot files no longer verify); the boot manager fell back to slot {} with {}",
            left.letter(),
            booted.letter(),
            self.host.booted_version
        );
        if let Ok(v) = release_manifest::Version::parse(&last.version) {
            history.mark_failed(&v, why.clone());
        }
        history.push(self.event("fell-back", &last.version, left, why.clone()));
        self.state.set_history(&history)?;
        self.note_outcome(&last.version, fleet_lock::Outcome::RolledBack, &why)?;
        // An update of that slot still marked ready would read as a pending
        // reboot and hold every later update back.
        if self
            .state
            .progress()?
            .is_some_and(|p| p.slot == left.letter())
        {
            self.state.set_progress(None)?;
            crate::diagnose::forget(&self.state.dir);
        }
        Ok(Some(format!(
            "{}: {why}; it will not be installed again",
            last.version
        )))
    }

    fn inactive(&self) -> Slot {
        self.host.booted_slot.other()
    }

    fn event(&self, kind: &str, version: &str, slot: Slot, detail: String) -> state::Event {
        state::Event {
            time: self.now(),
            kind: kind.into(),
            version: version.into(),
            slot: slot.letter().into(),
            detail,
        }
    }

    /// Walks the root chain from the newest root trusted so far and persists the result.
    fn refresh_root(&self) -> Result<Root, Error> {
        let mut trust = self.state.trust()?;
        let start = match (&trust.root, &self.shipped_root) {
            (Some(t), Some(s)) if t.version < s.version => s.clone(),
            (Some(t), _) => t.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => {
                return Err(Error::Config(
                    "no trusted repository root: the image ships /usr/lib/cairn/update-root.json, or pass --root"
                        .into(),
                ));
            }
        };
        /// Bytes one walk may fetch, documents and signatures together. A root
        /// with a few keys and its rotation signatures is a few KiB, so 1024
        /// links stay below 8 MiB; without a total a hostile repository could
        /// send 1024 links of 4 MiB each (4 GiB) per check.
        const MAX_ROOT_CHAIN_BYTES: u64 = 16 << 20;
        // One link at a time: each root is verified against the one before it
        // before the next is fetched, so a bad link ends the walk at once and at
        // most one link (4 MiB + signatures) is held in memory. The whole walk
        // may fetch at most MAX_ROOT_CHAIN_BYTES.
        let mut current = start.clone();
        let mut left = MAX_ROOT_CHAIN_BYTES;
        // Each file may take what is left of the walk's budget; one byte more
        // than that is the walk exceeding it, not the file its own cap.
        let fetch = |path: &str, cap: u64, left: &mut u64| -> Result<Option<Vec<u8>>, Error> {
            let max = cap.min(*left);
            match self.http.get_optional(path, max) {
                Ok(Some(b)) => {
                    *left -= b.len() as u64;
                    Ok(Some(b))
                }
                Ok(None) => Ok(None),
                Err(crate::http::FetchError::TooLarge { url, .. }) if max < cap => {
                    Err(crate::http::FetchError::OverBudget {
                        url,
                        what: "the root chain walk",
                        max: MAX_ROOT_CHAIN_BYTES,
                    }
                    .into())
                }
                Err(e) => Err(e.into()),
            }
        };
        for v in start.version + 1..start.version + 1 + MAX_ROOT_CHAIN {
            let path = root_path(v);
            let Some(doc) = fetch(&path, MAX_METADATA, &mut left)? else {
                break;
            };
            let sig_path = sig_of(&path);
            let sig = fetch(&sig_path, MAX_SIGNATURES, &mut left)?.ok_or_else(|| {
                crate::http::FetchError::NotFound {
                    url: self.http.url(&sig_path),
                }
            })?;
            current = release_repo::verify_root_step(&current, &doc, &sig)?;
        }
        // No links left to walk: only the expiry of the newest root to check.
        let root = verify_root_chain(&current, &[], self.now())?;
        if trust.root.as_ref() != Some(&root) {
            trust.root = Some(root.clone());
            self.state.set_trust(&trust)?;
        }
        Ok(root)
    }

    /// Fetches and verifies the metadata and decides what to install.
    pub fn check(&self) -> Result<CheckOutcome, Error> {
        self.check_with(self.ignore_wave)
    }

    /// [`Agent::check`], ignoring the rollout wave for this call only (the
    /// service shares one agent between D-Bus callers).
    pub fn check_with(&self, ignore_wave: bool) -> Result<CheckOutcome, Error> {
        self.check_inner(ignore_wave, None)
    }

    /// `cairnctl update --version V`: the check, choosing exactly `want` (see
    /// [`plan::choose_version`]); refused with the reason if it cannot be.
    pub fn check_version(&self, want: &release_manifest::Version) -> Result<CheckOutcome, Error> {
        self.check_inner(true, Some(want))
    }

    fn check_inner(
        &self,
        ignore_wave: bool,
        want: Option<&release_manifest::Version>,
    ) -> Result<CheckOutcome, Error> {
        self.keep_legacy_channel_marks()?;
        let root = self.refresh_root().map_err(|e| self.explain_expiry(e))?;
        let path = channel_path(&self.channel);
        let doc = self.http.get(&path, MAX_METADATA, None)?;
        let sig = self.http.get(&sig_of(&path), MAX_SIGNATURES, None)?;
        let mut trust = self.state.trust()?;
        // After a rotation the marks recorded under the old keys no longer
        // bind (fast-forward recovery); persisted with the first mark below.
        let mut dirty = trust.adopt_signers(&root);
        let highest = trust.channels.get(&self.channel).copied().unwrap_or(0);
        let channel = verify_channel(&doc, &sig, &self.channel, &root, self.now(), highest)
            .map_err(|e| self.explain_expiry(e.into()))?;
        if channel.version > highest {
            trust.channels.insert(self.channel.clone(), channel.version);
            dirty = true;
        }
        if dirty {
            self.state.set_trust(&trust)?;
        }
        let history = self.state.history()?;
        let view = HostView {
            board: &self.host.board,
            arch: &self.host.arch,
            booted_version: &self.host.booted_version,
            failed: &history.failed,
            seed: self.seed,
            now: self.now(),
            ignore_wave,
        };
        let decision = match want {
            None => plan::choose(&channel.releases, &view),
            Some(v) => plan::choose_version(&channel.releases, &view, v).map_err(|why| {
                Error::VersionRefused {
                    version: v.to_string(),
                    why,
                }
            })?,
        };
        Ok(CheckOutcome {
            root_version: root.version,
            channel: self.channel.clone(),
            channel_version: channel.version,
            booted_version: self.host.booted_version.to_string(),
            decision,
        })
    }

    /// A trust.json from before the signers were kept has channel marks but
    /// not who verified them: they were verified by the root trusted before
    /// this check's walk. Recorded (durably) before the walk can replace that
    /// root, so a crash in between cannot make the marks look current.
    fn keep_legacy_channel_marks(&self) -> Result<(), Error> {
        let mut trust = self.state.trust()?;
        if trust.channel_signers.is_some() || trust.channels.is_empty() {
            return Ok(());
        }
        let before = match (&trust.root, &self.shipped_root) {
            (Some(t), Some(s)) if t.version < s.version => Some(s.clone()),
            (Some(t), _) => Some(t.clone()),
            (None, s) => s.clone(),
        };
        if let Some(root) = before {
            trust.channel_signers = Some(state::Signers::of(&root));
            self.state.set_trust(&trust)?;
        }
        Ok(())
    }

    /// Fetches the manifest of `entry`: pinned size and hash, build signature,
    /// same board/arch/version, not expired.
    pub(crate) fn fetch_manifest(&self, entry: &ReleaseEntry) -> Result<Manifest, Error> {
        // max = the pinned size: one byte more is refused as endless data.
        let doc = self.http.get(&entry.manifest, entry.manifest_size, None)?;
        let sig = self
            .http
            .get(&sig_of(&entry.manifest), MAX_SIGNATURES, None)?;
        let m = verify_manifest(&doc, &sig, entry, &self.host.release_keys, 1)?;
        m.check_expiry(self.now()).map_err(|source| {
            self.explain_expiry(Error::Release {
                what: entry.manifest.clone(),
                cause: source,
            })
        })?;
        // Signed by the build keys: a time the host has provably reached.
        self.note_signed_time(m.created)?;
        Ok(m)
    }

    /// A whole small image (boot files), every chunk and the total verified.
    fn fetch_small_image(&self, image: &Image) -> Result<Vec<u8>, Error> {
        fetch_image(&self.http, image, MAX_BOOT_FILE, "boot file")
    }

    /// Installs `entry` into the inactive slot and makes it the next boot.
    pub fn apply(
        &self,
        entry: &ReleaseEntry,
        report: &mut dyn FnMut(Event),
    ) -> Result<ApplyOutcome, Error> {
        // Before anything is fetched or written: while this boot is on trial
        // the other slot is the fallback (issue 11: never strand a host).
        self.refuse_if_on_trial()?;
        let started = Instant::now();
        let received0 = self.http.received();
        let slot = self.inactive();
        report(Event::Phase(format!(
            "fetching manifest of {}",
            entry.version
        )));
        let manifest = self.fetch_manifest(entry)?;
        let manifest_sha256 = Hex32(entry.manifest_sha256.0);
        let usr = manifest.image("usr").map_err(|source| Error::Release {
            what: entry.manifest.clone(),
            cause: source,
        })?;
        let verity = usr.verity.ok_or_else(|| {
            Error::BadRelease("the usr image has no dm-verity tree; refusing it".into())
        })?;
        // Kept so that a rollback can later tell on-disk corruption apart.
        crate::diagnose::remember(&self.state.dir, &verity)?;
        let mut outcome = ApplyOutcome {
            version: entry.version.to_string(),
            slot: slot.letter().into(),
            chunks_total: usr.chunks.len() as u64,
            chunks_resumed: 0,
            usr_bytes: usr.size,
            bytes_downloaded: 0,
            seconds: 0.0,
            reboot_needed: true,
            already_installed: false,
        };
        let previous = self.state.progress()?;
        let same = |p: &Progress| {
            p.slot == slot.letter()
                && p.version == entry.version
                && p.manifest_sha256 == manifest_sha256
        };
        if let Some(p) = &previous
            && same(p)
            && p.phase == Phase::Ready
        {
            outcome.already_installed = true;
            return Ok(outcome);
        }
        let progress = self.write_usr_slot(
            entry,
            &manifest,
            &verity,
            previous.as_ref(),
            &mut outcome,
            report,
        )?;
        self.install_boot_files(entry, &manifest, &verity, slot, report)?;
        self.flip_and_record(entry, progress, usr.chunks.len(), report)?;
        outcome.bytes_downloaded = self.http.received() - received0;
        outcome.seconds = started.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// DESIGN steps 1–2 of a slot write: the slot is made unbootable first,
    /// then /usr is downloaded, written, read back and verified (dm-verity
    /// included) in one pipelined pass, resuming after the last verified
    /// chunk of an interrupted run of the same release.
    fn write_usr_slot(
        &self,
        entry: &ReleaseEntry,
        manifest: &Manifest,
        verity: &release_manifest::Verity,
        previous: Option<&Progress>,
        outcome: &mut ApplyOutcome,
        report: &mut dyn FnMut(Event),
    ) -> Result<Progress, Error> {
        let usr = manifest.image("usr").map_err(|source| Error::Release {
            what: entry.manifest.clone(),
            cause: source,
        })?;
        let (slot, booted) = (self.inactive(), self.host.booted_slot);
        let manifest_sha256 = Hex32(entry.manifest_sha256.0);
        let writer = self.target.open_slot_for_write(slot, booted)?;
        if writer.capacity() < usr.size {
            return Err(Error::SlotTooSmall {
                slot: slot.letter(),
                need: usr.size,
                have: writer.capacity(),
            });
        }
        // DESIGN state machine step 2: never bootable while being written.
        report(Event::Phase(format!(
            "marking slot {} unbootable",
            slot.letter()
        )));
        self.target.set_attrs(&[(slot, mark_unbootable())])?;

        let start = match previous {
            Some(p)
                if p.slot == slot.letter()
                    && p.version == entry.version
                    && p.manifest_sha256 == manifest_sha256
                    && p.phase == Phase::Writing =>
            {
                p.chunks_verified.min(outcome.chunks_total)
            }
            _ => 0,
        };
        outcome.chunks_resumed = start;
        let mut progress = Progress {
            slot: slot.letter().into(),
            version: entry.version.clone(),
            manifest_sha256,
            chunks_verified: start,
            phase: Phase::Writing,
        };
        self.state.set_progress(Some(&progress))?;

        report(Event::Phase(format!(
            "writing {} to slot {} ({} chunks, resuming at {start})",
            entry.version,
            slot.letter(),
            usr.chunks.len()
        )));
        // A delta writes chunks in order and records them as the full
        // download does, so either resumes the other: the delta plans only
        // the chunks after `start`. A delta checks each chunk against its
        // signed sha256 before writing it, reads it back and compares, and
        // checks the dm-verity root of the data against the signed one
        // (`delta::write`): the pipeline has nothing left to do after it. A
        // delta that fails part way leaves its verified chunks for the full
        // download to resume at.
        let total = usr.chunks.len() as u64;
        let verified = std::cell::Cell::new(start);
        let mut durable = |through| {
            progress.chunks_verified = through;
            verified.set(through);
            self.state.set_progress(Some(&progress))
        };
        let delta = start < total
            && !self.full_download
            && self.write_usr_delta(manifest, usr, &writer, start, &mut durable, report)?;
        let written = match delta {
            true => Ok(()),
            // See `pipeline` for what is checked where.
            false => {
                let job = UsrJob {
                    http: &self.http,
                    image: usr,
                    verity: verity.to_info(),
                    start: verified.get(),
                    stop_after: self.stop_after_chunks,
                    slot: slot.letter(),
                };
                pipeline::write_usr(&job, &writer, &mut durable, report)
            }
        };
        if let Err(e) = written {
            if matches!(e, Error::ReadBack(_)) {
                // Start over next time: the recorded chunks are not what is on disk.
                progress.chunks_verified = 0;
                self.state.set_progress(Some(&progress))?;
            }
            return Err(e);
        }
        Ok(progress)
    }

    /// Writes /usr to the slot as a delta from chunk `start` on (see
    /// `delta::write`) when the release has a block index, the active slot
    /// verifies and the plan is worth it: `Ok(true)`. `Ok(false)`: not
    /// attempted or failed (the chunks it recorded through `durable` are
    /// verified and on stable storage, nothing else is promised). `Err` only
    /// when it was interrupted (the test hook).
    fn write_usr_delta(
        &self,
        manifest: &Manifest,
        usr: &release_manifest::Image,
        writer: &crate::target::SlotWriter,
        start: u64,
        durable: &mut dyn FnMut(u64) -> Result<(), Error>,
        report: &mut dyn FnMut(Event),
    ) -> Result<bool, Error> {
        use crate::delta;
        let active = self.target.slot_path(self.host.booted_slot).to_path_buf();
        // Ok(Ok(done)): written; Ok(Err(why)): not attempted.
        let mut run = |report: &mut dyn FnMut(Event)| -> Result<Result<String, String>, Error> {
            let verity = delta::booted_verity(&delta::proc_cmdline()).map_err(Error::Host)?;
            report(Event::Phase(
                "delta: planning against the active slot".into(),
            ));
            let Some(p) =
                delta::prepare(&self.http, manifest, usr, &active, verity.as_ref(), start)?
            else {
                return Ok(Err("the release has no block index".into()));
            };
            if !p.worth_it() {
                return Ok(Err(format!(
                    "a delta would fetch {} of the {} bytes",
                    p.plan.download, p.full_bytes
                )));
            }
            let resume = delta::Resume {
                start,
                stop_after: self.stop_after_chunks,
                durable: &mut *durable,
            };
            let w = delta::write(&self.http, &p, usr, &active, writer, resume, report)?;
            Ok(Ok(format!(
                "{} blocks copied, {} fetched in {} requests ({} bytes + {} of index; full image {} bytes; chunks {start}..{})",
                w.copied,
                w.fetched,
                w.requests,
                w.bytes,
                p.index_bytes,
                p.full_bytes,
                start + w.chunks
            )))
        };
        let why = match run(report) {
            Ok(Ok(done)) => {
                report(Event::Phase(format!("delta: {done}")));
                return Ok(true);
            }
            Ok(Err(why)) => why,
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e) => e.to_string(),
        };
        report(Event::Phase(format!(
            "no delta ({why}); downloading the full image"
        )));
        Ok(false)
    }

    /// The slot's kernel, initrd, command line and signature: fetched,
    /// checked against this release's verity root, verified and written to
    /// the ESP.
    fn install_boot_files(
        &self,
        entry: &ReleaseEntry,
        manifest: &release_manifest::Manifest,
        verity: &release_manifest::Verity,
        slot: Slot,
        report: &mut dyn FnMut(Event),
    ) -> Result<(), Error> {
        report(Event::Phase("writing boot files".into()));
        let mut files = Vec::new();
        for name in [
            boot_files::KERNEL,
            boot_files::INITRD,
            boot_files::CMDLINE,
            boot_files::SIGNATURE,
        ] {
            let image = manifest.image(name).map_err(|source| Error::Release {
                what: entry.manifest.clone(),
                cause: source,
            })?;
            files.push((name, self.fetch_small_image(image)?));
        }
        // The command line carries the verity root hash the kernel will enforce;
        // it must be this release's, or the slot would not boot (or boot another /usr).
        let cmdline = String::from_utf8_lossy(&files[2].1).into_owned();
        let want = format!("{}={}", disk_layout::cmdline::USRHASH, verity.root_hash);
        if !cmdline.split_whitespace().any(|w| w == want) {
            return Err(Error::BadRelease(format!(
                "the command line does not carry {want} of the usr image"
            )));
        }
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        self.target
            .write_boot_files(slot, self.host.booted_slot, &refs, &self.host.key_bytes())
    }

    /// DESIGN step 3: verified, now bootable with its tries; the install is
    /// recorded (progress, history, the fleet's outcome).
    fn flip_and_record(
        &self,
        entry: &ReleaseEntry,
        mut progress: Progress,
        chunks: usize,
        report: &mut dyn FnMut(Event),
    ) -> Result<(), Error> {
        let (slot, booted) = (self.inactive(), self.host.booted_slot);
        report(Event::Phase(format!(
            "marking slot {} to boot next",
            slot.letter()
        )));
        // Decided under the disk's lock from the table as it is now:
        // cairn-mark-good may have re-armed the booted slot since any read.
        self.target.update_attrs(|now| {
            let (updated, other) = mark_updated(now.get(booted));
            Ok(vec![(slot, updated), (booted, other)])
        })?;
        progress.phase = Phase::Ready;
        self.state.set_progress(Some(&progress))?;
        let mut history = self.state.history()?;
        // Installed on purpose (`cairnctl update --version`): no longer barred.
        history.clear_failed(&entry.version);
        history.push(self.event(
            "installed",
            entry.version.as_str(),
            slot,
            format!("{chunks} chunks, reboot needed"),
        ));
        self.state.set_history(&history)?;
        self.note_outcome(
            entry.version.as_str(),
            fleet_lock::Outcome::Installed,
            &format!("written to slot {} and verified", slot.letter()),
        )
    }

    /// Startup: settle a pending update against how this boot went. Returns what
    /// was recorded, for the log.
    pub fn reconcile(&self) -> Result<Vec<String>, Error> {
        let fell_back = self.settle_fallback()?;
        let Some(p) = self.state.progress()? else {
            return Ok(fell_back.into_iter().collect());
        };
        let slot = Slot::from_letter(&p.slot)
            .ok_or_else(|| Error::State(format!("progress.json: bad slot {:?}", p.slot)))?;
        // A crash between the GPT flip and the progress write leaves "writing" for
        // a slot that then booted the new version: that is the "ready" case.
        let flipped_then_crashed = p.phase == Phase::Writing
            && self.host.booted_slot == slot
            && self.host.booted_version == p.version;
        if p.phase != Phase::Ready && !flipped_then_crashed {
            return Ok(Vec::new());
        }
        let attrs = self.target.read_attrs()?.get(slot);
        let mut history = self.state.history()?;
        let mut notes = Vec::new();
        let outcome;
        if self.host.booted_slot == slot {
            if !attrs.successful {
                // Booted, health checks still running: cairn-mark-good decides.
                return Ok(notes);
            }
            history.push(self.event(
                "booted",
                p.version.as_str(),
                slot,
                "marked successful".into(),
            ));
            history.clear_failed_below(&p.version);
            notes.push(format!(
                "{} booted from slot {} and is good",
                p.version,
                slot.letter()
            ));
            outcome = (
                fleet_lock::Outcome::Committed,
                format!("booted from slot {} and marked good", slot.letter()),
            );
        } else if !attrs.successful && (attrs.tries == 0 || attrs.priority == 0) {
            let why = crate::diagnose::rollback_reason(
                &self.state.dir,
                slot,
                self.target.slot_path(slot),
                p.version.as_str(),
            );
            history.mark_failed(&p.version, why.clone());
            history.push(self.event("rolled-back", p.version.as_str(), slot, why.clone()));
            // Priority 0 too, so the failed slot stays out of the boot choice.
            self.target.set_attrs(&[(slot, mark_failed(attrs))])?;
            notes.push(format!(
                "{}: {why}; it will not be installed again",
                p.version
            ));
            outcome = (fleet_lock::Outcome::RolledBack, why);
        } else {
            // Written and flipped, but this boot is still the old slot: reboot pending.
            return Ok(notes);
        }
        self.state.set_history(&history)?;
        self.note_outcome(p.version.as_str(), outcome.0, &outcome.1)?;
        self.state.set_progress(None)?;
        crate::diagnose::forget(&self.state.dir);
        Ok(notes)
    }

    /// Boots the other slot next, only if it holds an OS that booted successfully
    /// before and whose boot files still pass their signature check.
    pub fn rollback(&self) -> Result<String, Error> {
        let booted = self.host.booted_slot;
        let other = booted.other();
        let attrs = self.target.read_attrs()?;
        let o = attrs.get(other);
        if !o.successful || o.priority == 0 {
            return Err(Error::Rollback(format!(
                "slot {} ({o}) does not hold an OS that booted successfully",
                other.letter()
            )));
        }
        let dir = self.target.esp_dir(other);
        let read = |n: &str| {
            let p = dir.join(n);
            std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
        };
        boot_sig::verify(
            &self.host.key_bytes(),
            &read(boot_files::SIGNATURE)?,
            &read(boot_files::KERNEL)?,
            &read(boot_files::INITRD)?,
            &read(boot_files::CMDLINE)?,
        )
        .map_err(|e| Error::Rollback(format!("slot {} boot files: {e}", other.letter())))?;
        // The target is committed, so it is armed with K like any committed
        // slot (tries 0 would read as exhausted and lose to this one).
        let tries = self.boot_tries();
        self.target.update_attrs(|now| {
            let b = now.get(booted);
            let lowered = Attrs {
                priority: b.priority.min(UPDATE_PRIORITY - 1),
                ..b
            };
            Ok(vec![
                (other, Attrs::new(UPDATE_PRIORITY, tries, true)),
                (booted, lowered),
            ])
        })?;
        // A pending update for that slot no longer applies.
        self.state.set_progress(None)?;
        // The operator left this version: the next check must not install it
        // again (until a newer one boots, or `cairnctl update --version`).
        let left = &self.host.booted_version;
        let mut history = self.state.history()?;
        history.mark_failed(
            left,
            format!(
                "abandoned by manual rollback from slot {}; `cairnctl update --version {left}` installs it again",
                booted.letter()
            ),
        );
        history.push(self.event(
            "rollback",
            left.as_str(),
            other,
            format!(
                "manual rollback from {left} in slot {}; {left} will not be installed again",
                booted.letter()
            ),
        ));
        self.state.set_history(&history)?;
        // A fleet counts an operator's rollback like the health gate's.
        self.note_outcome(
            left.as_str(),
            fleet_lock::Outcome::RolledBack,
            &format!(
                "rolled back by an operator (cairnctl rollback) from slot {}",
                booted.letter()
            ),
        )?;
        Ok(format!(
            "slot {} boots next; reboot to roll back",
            other.letter()
        ))
    }

    /// The host's update state. With etcd-lock this asks etcd for the
    /// group's slots (bounded by the client's timeouts).
    pub fn status(&self) -> Result<Status, Error> {
        let slots = self.target.read_attrs()?;
        let pending = self.state.progress()?;
        let reboot_needed = self.reboot_needed()?;
        Ok(Status {
            booted_slot: self.host.booted_slot.letter().into(),
            booted_version: self.host.booted_version.to_string(),
            board: self.host.board.clone(),
            arch: self.host.arch.clone(),
            slots,
            pending,
            reboot_needed,
            failed_versions: self.state.history()?.failed,
            development_key: self.host.development_key,
            reboot: RebootStatus::of(self.reboot, self.fleet.as_deref()),
        })
    }

    pub fn history(&self) -> Result<History, Error> {
        self.state.history()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use release_manifest::Version;

    #[test]
    fn build_time_only_from_cairns_own_os_release() {
        let v = Version::parse("1.2.0").unwrap();
        // (os-release, counted)
        let table = [
            ("ID=cairn\nIMAGE_VERSION=1.2.0\n", true),
            ("ID=\"cairn\"\nIMAGE_VERSION=1.2\n", true),
            ("ID=cairn\nIMAGE_VERSION=1.1.0\n", false),
            ("ID=debian\nIMAGE_VERSION=1.2.0\n", false),
            ("ID=cairn\n", false),
            ("", false),
        ];
        for (text, counted) in table {
            assert_eq!(
                booted_build_time(text.as_bytes(), 42, &v),
                counted.then_some(42),
                "{text:?}"
            );
        }
    }

    #[test]
    fn expiry_advice_names_the_clock_or_the_floor() {
        // (expires, clock, floor, must contain)
        let table = [
            // The clock is past the expiry: fix the clock (or stale metadata).
            (
                100,
                3_881_605_445,
                0,
                "the system clock says 2092-12-31 23:44:05 UTC",
            ),
            (100, 3_881_605_445, 0, "fix it (timedatectl"),
            // The clock is before the expiry, the floor after it.
            (
                1_000,
                10,
                2_000,
                "already seen signed data from 1970-01-01 00:33:20 UTC",
            ),
            (1_000, 10, 2_000, "stale"),
        ];
        for (expires, clock, floor, text) in table {
            let m = expired_message("channels/x.json", expires, clock, floor);
            assert!(
                m.starts_with("channels/x.json expired at 1970-01-01"),
                "{m}"
            );
            assert!(m.contains(text), "{m}");
            assert!(!m.contains('\n'));
        }
    }
}
