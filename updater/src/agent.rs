//! The update flow: check, apply, reconcile after boot, manual rollback, status.

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

use crate::http::Http;
use crate::pipeline::{self, UsrJob};
use crate::plan::{self, Decision, HostView};
use crate::state::{self, History, Phase, Progress, StateDir};
use crate::target::{SlotAttrs, Target};
use crate::{Error, Host};

/// Longest root chain walked in one check (a repository rotating daily for
/// years stays far below; a malicious one cannot keep the agent busy forever).
const MAX_ROOT_CHAIN: u64 = 1024;
/// Boot files are held in memory; a signed manifest asking for more is refused.
const MAX_BOOT_FILE: u64 = 512 << 20;

/// Progress reports for a terminal or the journal.
#[derive(Debug, Clone)]
pub enum Event {
    Phase(String),
    Chunk {
        index: u64,
        total: u64,
        bytes_done: u64,
        bytes_total: u64,
    },
}

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
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sig_of(path: &str) -> String {
    format!("{path}{SIG_SUFFIX}")
}

impl Agent {
    pub fn now(&self) -> u64 {
        self.clock.unwrap_or_else(now_secs)
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
        let mut chain = Vec::new();
        for v in start.version + 1..start.version + 1 + MAX_ROOT_CHAIN {
            let path = root_path(v);
            let Some(doc) = self.http.get_optional(&path, MAX_METADATA)? else {
                break;
            };
            let sig = self.http.get(&sig_of(&path), MAX_SIGNATURES, None)?;
            chain.push((doc, sig));
        }
        let root = verify_root_chain(&start, &chain, self.now())?;
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
        let root = self.refresh_root()?;
        let path = channel_path(&self.channel);
        let doc = self.http.get(&path, MAX_METADATA, None)?;
        let sig = self.http.get(&sig_of(&path), MAX_SIGNATURES, None)?;
        let mut trust = self.state.trust()?;
        let highest = trust.channels.get(&self.channel).copied().unwrap_or(0);
        let channel = verify_channel(&doc, &sig, &self.channel, &root, self.now(), highest)?;
        if channel.version > highest {
            trust.channels.insert(self.channel.clone(), channel.version);
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
        Ok(CheckOutcome {
            root_version: root.version,
            channel: self.channel.clone(),
            channel_version: channel.version,
            booted_version: self.host.booted_version.to_string(),
            decision: plan::choose(&channel.releases, &view),
        })
    }

    /// Fetches the manifest of `entry`: pinned size and hash, build signature,
    /// same board/arch/version, not expired.
    fn fetch_manifest(&self, entry: &ReleaseEntry) -> Result<Manifest, Error> {
        // max = the pinned size: one byte more is refused as endless data.
        let doc = self.http.get(&entry.manifest, entry.manifest_size, None)?;
        let sig = self
            .http
            .get(&sig_of(&entry.manifest), MAX_SIGNATURES, None)?;
        let m = verify_manifest(&doc, &sig, entry, &self.host.release_keys, 1)?;
        m.check_expiry(self.now())
            .map_err(|source| Error::Release {
                what: entry.manifest.clone(),
                cause: source,
            })?;
        Ok(m)
    }

    /// Downloads and verifies one chunk.
    fn fetch_chunk(&self, chunk: &release_manifest::Chunk) -> Result<Vec<u8>, Error> {
        let compressed = self.http.get(&chunk.file, chunk.zsize, Some(chunk.zsize))?;
        ChunkVerifier::new(chunk)
            .verify(&compressed)
            .map_err(|source| Error::Release {
                what: chunk.file.clone(),
                cause: source,
            })
    }

    /// A whole small image (boot files), every chunk and the total verified.
    fn fetch_small_image(&self, image: &Image) -> Result<Vec<u8>, Error> {
        if image.size > MAX_BOOT_FILE {
            return Err(Error::BadRelease(format!(
                "boot file {} is {} bytes, over the {MAX_BOOT_FILE} allowed",
                image.name, image.size
            )));
        }
        let mut out = Vec::with_capacity(image.size as usize);
        for c in &image.chunks {
            out.extend_from_slice(&self.fetch_chunk(c)?);
        }
        if Sha256::digest(&out)[..] != image.sha256.0 {
            return Err(Error::Release {
                what: image.name.clone(),
                cause: release_manifest::Error::ImageSha256(image.name.clone()),
            });
        }
        Ok(out)
    }

    /// Installs `entry` into the inactive slot and makes it the next boot.
    pub fn apply(
        &self,
        entry: &ReleaseEntry,
        report: &mut dyn FnMut(Event),
    ) -> Result<ApplyOutcome, Error> {
        let started = Instant::now();
        let received0 = self.http.received();
        let booted = self.host.booted_slot;
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

        let start = match &previous {
            Some(p) if same(p) && p.phase == Phase::Writing => {
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
        // Download, write, read back and verify (dm-verity included) in one
        // pipelined pass; see `pipeline` for what is checked where.
        let job = UsrJob {
            http: &self.http,
            image: usr,
            verity: verity.to_info(),
            start,
            stop_after: self.stop_after_chunks,
            slot: slot.letter(),
        };
        let written = pipeline::write_usr(
            &job,
            &writer,
            &mut |through| {
                progress.chunks_verified = through;
                self.state.set_progress(Some(&progress))
            },
            report,
        );
        if let Err(e) = written {
            if matches!(e, Error::ReadBack(_)) {
                // Start over next time: the recorded chunks are not what is on disk.
                progress.chunks_verified = 0;
                self.state.set_progress(Some(&progress))?;
            }
            return Err(e);
        }
        drop(writer);

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
            .write_boot_files(slot, booted, &refs, &self.host.key_bytes())?;

        // Step 3: verified, now bootable with 3 tries.
        report(Event::Phase(format!(
            "marking slot {} to boot next",
            slot.letter()
        )));
        let attrs = self.target.read_attrs()?;
        let (updated, other) = mark_updated(attrs.get(booted));
        self.target.set_attrs(&[(slot, updated), (booted, other)])?;
        progress.phase = Phase::Ready;
        self.state.set_progress(Some(&progress))?;
        let mut history = self.state.history()?;
        history.push(self.event(
            "installed",
            entry.version.as_str(),
            slot,
            format!("{} chunks, reboot needed", usr.chunks.len()),
        ));
        self.state.set_history(&history)?;
        outcome.bytes_downloaded = self.http.received() - received0;
        outcome.seconds = started.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// Startup: settle a pending update against how this boot went. Returns what
    /// was recorded, for the log.
    pub fn reconcile(&self) -> Result<Vec<String>, Error> {
        let Some(p) = self.state.progress()? else {
            return Ok(Vec::new());
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
        } else if !attrs.successful && (attrs.tries == 0 || attrs.priority == 0) {
            let why = crate::diagnose::rollback_reason(
                &self.state.dir,
                slot,
                self.target.slot_path(slot),
                p.version.as_str(),
            );
            history.failed.insert(p.version.to_string(), why.clone());
            history.push(self.event("rolled-back", p.version.as_str(), slot, why.clone()));
            // Priority 0 too, so the failed slot stays out of the boot choice.
            self.target.set_attrs(&[(slot, mark_failed(attrs))])?;
            notes.push(format!(
                "{}: {why}; it will not be installed again",
                p.version
            ));
        } else {
            // Written and flipped, but this boot is still the old slot: reboot pending.
            return Ok(notes);
        }
        self.state.set_history(&history)?;
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
        let b = attrs.get(booted);
        let lowered = Attrs {
            priority: b.priority.min(UPDATE_PRIORITY - 1),
            ..b
        };
        self.target.set_attrs(&[
            (other, Attrs::new(UPDATE_PRIORITY, 0, true)),
            (booted, lowered),
        ])?;
        // A pending update for that slot no longer applies.
        self.state.set_progress(None)?;
        let mut history = self.state.history()?;
        history.push(self.event("rollback", "", other, "manual rollback".into()));
        self.state.set_history(&history)?;
        Ok(format!(
            "slot {} boots next; reboot to roll back",
            other.letter()
        ))
    }

    pub fn status(&self) -> Result<Status, Error> {
        let slots = self.target.read_attrs()?;
        let pending = self.state.progress()?;
        let reboot_needed = pending
            .as_ref()
            .is_some_and(|p| p.phase == Phase::Ready && p.slot != self.host.booted_slot.letter());
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
        })
    }

    pub fn history(&self) -> Result<History, Error> {
        self.state.history()
    }
}
