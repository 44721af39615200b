//! Delta updates of the usr slot (issue 13): copy the blocks the active slot
//! already holds, fetch only the rest by coalesced Range requests.
//!
//! The format and the planner are `block-delta`'s; this is the I/O around
//! them. What is checked where:
//! * the block index is an image of the signed manifest: every chunk is
//!   authenticated (zsize, zsha256, sha256) and the whole index against the
//!   signed image sha256 before it is parsed;
//! * the active slot, when the kernel command line names its dm-verity
//!   parameters (a booted Cairn host), must verify against its `usrhash`
//!   while it is hashed; otherwise no delta (the full download);
//! * a fetched frame's compressed bytes must match the sha256 the signed
//!   index gives, before zstd sees them, and decode to exactly its size;
//! * a copied block is hashed again when it is read and must match the
//!   signed digest of the target block;
//! * afterwards the caller reads the whole slot back through the unchanged
//!   pipeline: every chunk against its signed sha256 and the streamed
//!   dm-verity root against the signed one, before any flip.
//!
//! Any failure here makes the caller fall back to the full download.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use block_delta::{BLOCK_SIZE, FrameLoc, Index, LocalBlocks, Plan, Source};
use release_manifest::{Image, Manifest};
use sha2::{Digest, Sha256};
use verity_tree::{VerityInfo, VerityStream};

use crate::Error;
use crate::agent::{Agent, Event};
use crate::http::Http;
use crate::target::{AlignedBuf, SlotWriter};

/// A delta that would fetch more than this share of the full compressed
/// payload is not worth its extra requests: download the full image.
const WORTH_IT: f64 = 0.8;
/// Local blocks copied per read and write.
const COPY_RUN: u64 = 256;

/// The delta planned for one release, with what the plan needs to run.
pub struct Prepared {
    pub index: Index,
    pub frames: Vec<FrameLoc>,
    pub plan: Plan,
    /// Bytes of the block index fetched to plan.
    pub index_bytes: u64,
    /// Compressed size of the full usr image (its chunks).
    pub full_bytes: u64,
}

impl Prepared {
    /// Whether the delta is worth running instead of the full download.
    pub fn worth_it(&self) -> bool {
        (self.plan.download as f64) < self.full_bytes as f64 * WORTH_IT
    }
}

/// The planned download, as `cairnctl check` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadPlan {
    /// "delta" or "full".
    pub method: String,
    /// Bytes the usr image costs to fetch (index included for a delta).
    pub usr_bytes: u64,
    /// The full compressed usr image.
    pub full_bytes: u64,
    pub requests: u64,
    pub blocks_copied: u64,
    pub blocks_fetched: u64,
    /// Why not a delta, when it is "full".
    pub reason: Option<String>,
}

/// The dm-verity parameters of the booted /usr from a kernel command line
/// (`usrhash=<hex> cairn.verity=<data blocks>:<hash offset>:<salt hex>`),
/// `None` when it has none (not a Cairn boot: a development machine or test).
pub fn booted_verity(cmdline: &str) -> Result<Option<VerityInfo>, String> {
    let value = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let (Some(root), Some(params)) = (
        value(disk_layout::cmdline::USRHASH),
        value(disk_layout::cmdline::VERITY),
    ) else {
        return Ok(None);
    };
    let bad = |what: &str| format!("kernel command line: {what}");
    let mut parts = params.split(':');
    let (Some(d), Some(h), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            "cairn.verity is not <data blocks>:<hash offset>:<salt>",
        ));
    };
    let data_blocks: u64 = d.parse().map_err(|_| bad("cairn.verity data blocks"))?;
    let hash_offset: u64 = h.parse().map_err(|_| bad("cairn.verity hash offset"))?;
    let (mut root_hash, mut salt) = ([0u8; 32], [0u8; 32]);
    hex::decode_to_slice(root, &mut root_hash).map_err(|_| bad("usrhash is not 64 hex digits"))?;
    hex::decode_to_slice(s, &mut salt)
        .map_err(|_| bad("cairn.verity salt is not 64 hex digits"))?;
    let hash_size = verity_tree::hash_size(data_blocks).map_err(|e| bad(&e.to_string()))?;
    Ok(Some(VerityInfo {
        root_hash,
        salt,
        data_blocks,
        hash_offset,
        hash_size,
        data_block_size: BLOCK_SIZE as u32,
        hash_block_size: BLOCK_SIZE as u32,
    }))
}

/// Fetches and checks the block index of the usr image; `None` when the
/// release has none (built before deltas).
pub fn fetch_index(
    http: &Http,
    manifest: &Manifest,
    usr: &Image,
) -> Result<Option<(Index, Vec<FrameLoc>, u64)>, Error> {
    let index_name = block_delta::index_image_name(&usr.name);
    let blocks_name = block_delta::blocks_image_name(&usr.name);
    let (Ok(image), Ok(blocks)) = (manifest.image(&index_name), manifest.image(&blocks_name))
    else {
        return Ok(None);
    };
    // 32-byte digests are 0.8 % of the image: anything much bigger is not an index.
    let cap = usr.size / 100 + (1 << 20);
    let bytes = crate::agent::fetch_image(http, image, cap, "block index")?;
    let index = Index::decode(&bytes).map_err(|e| Error::BadRelease(e.to_string()))?;
    index
        .check_image(usr)
        .map_err(|e| Error::BadRelease(e.to_string()))?;
    let frames =
        block_delta::locate(&index, blocks).map_err(|e| Error::BadRelease(e.to_string()))?;
    Ok(Some((index, frames, bytes.len() as u64)))
}

/// Hashes the active slot in 4 KiB blocks: its image when `verity` gives
/// its extent (and then it must verify), else the whole slot.
pub fn hash_active(path: &Path, verity: Option<&VerityInfo>) -> Result<LocalBlocks, Error> {
    let io = |what: &str| {
        let what = format!("{what} the active slot {}", path.display());
        move |e| Error::io(what, e)
    };
    let mut f = File::open(path).map_err(io("opening"))?;
    let len = match verity {
        Some(v) => v.hash_offset + v.hash_size,
        None => f.seek(SeekFrom::End(0)).map_err(io("sizing"))?,
    };
    f.seek(SeekFrom::Start(0)).map_err(io("reading"))?;
    let mut stream = match verity {
        Some(v) => Some(VerityStream::new(v).map_err(|e| {
            Error::BadRelease(format!("dm-verity parameters of the booted /usr: {e}"))
        })?),
        None => None,
    };
    let mut local = LocalBlocks::default();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len / BLOCK_SIZE * BLOCK_SIZE;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).map_err(io("reading"))?;
        if let Some(s) = &mut stream {
            s.update(&buf[..n]);
        }
        local.extend(&buf[..n]);
        left -= n as u64;
    }
    if let Some(s) = stream {
        s.finish().map_err(|e| {
            Error::ReadBack(format!(
                "the active slot {} does not verify against its dm-verity root ({e}): its blocks are not reused",
                path.display()
            ))
        })?;
    }
    Ok(local)
}

/// Fetches the index (`None`: the release has none), then hashes the active
/// slot (see [`hash_active`]) and plans.
pub fn prepare(
    http: &Http,
    manifest: &Manifest,
    usr: &Image,
    active: &Path,
    verity: Option<&VerityInfo>,
) -> Result<Option<Prepared>, Error> {
    // The index first: a release without one costs no read of the slot.
    let Some((index, frames, index_bytes)) = fetch_index(http, manifest, usr)? else {
        return Ok(None);
    };
    let local = hash_active(active, verity)?;
    let plan = block_delta::plan(
        &index,
        &frames,
        &local,
        block_delta::DEFAULT_GAP,
        block_delta::MAX_RANGE,
    );
    Ok(Some(Prepared {
        index,
        frames,
        plan,
        index_bytes,
        full_bytes: usr.chunks.iter().map(|c| c.zsize).sum(),
    }))
}

/// What [`write`] did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Written {
    pub copied: u64,
    pub fetched: u64,
    pub requests: u64,
    pub bytes: u64,
}

/// Writes the new image to the slot from the plan: fetched frames first,
/// then the local copies, then one fdatasync. Reading back and verifying is
/// the caller's (the usual pipeline).
pub fn write(
    http: &Http,
    p: &Prepared,
    active: &Path,
    writer: &SlotWriter,
    report: &mut dyn FnMut(Event),
) -> Result<Written, Error> {
    let bs = BLOCK_SIZE as usize;
    // Target blocks per needed frame, in target order.
    let mut by_frame: Vec<Vec<(u64, u64)>> = vec![Vec::new(); p.frames.len()];
    for (t, s) in p.plan.sources.iter().enumerate() {
        if let Source::Fetch { frame, block } = *s {
            by_frame[frame].push((t as u64, block));
        }
    }
    let mut done = Written::default();
    let mut dctx =
        zstd::bulk::Decompressor::new().map_err(|e| Error::io("creating a zstd decoder", e))?;
    let max_frame = p.frames.iter().map(|f| f.blocks).max().unwrap_or(0) as usize * bs;
    let mut frame = vec![0u8; max_frame];
    let mut out = AlignedBuf::new(COPY_RUN as usize * bs);
    let mut body = Vec::new();
    for (n, r) in p.plan.ranges.iter().enumerate() {
        report(Event::Phase(format!(
            "delta: fetching range {} of {} ({} bytes of {})",
            n + 1,
            p.plan.ranges.len(),
            r.len,
            r.file
        )));
        http.get_range(&r.file, r.start, r.len, &mut body)?;
        done.requests += 1;
        done.bytes += body.len() as u64;
        for f in r.frames.clone() {
            if by_frame[f].is_empty() {
                continue;
            }
            let loc = &p.frames[f];
            let at = (loc.offset - r.start) as usize;
            let z = &body[at..at + loc.zsize as usize];
            if Sha256::digest(z)[..] != loc.zsha256 {
                return Err(Error::BadRelease(format!(
                    "{} bytes {}..{}: frame {f} does not match the sha256 the signed block index gives (tampered or corrupt download)",
                    loc.file,
                    loc.offset,
                    loc.offset + loc.zsize
                )));
            }
            let size = loc.blocks as usize * bs;
            let got = dctx
                .decompress_to_buffer(z, &mut frame[..size])
                .map_err(|e| {
                    Error::BadRelease(format!(
                        "{}: frame {f} does not decode to its {size} bytes: {e}",
                        loc.file
                    ))
                })?;
            if got != size {
                return Err(Error::BadRelease(format!(
                    "{}: frame {f} decodes to {got} bytes, the index says {size}",
                    loc.file
                )));
            }
            // Runs of consecutive target blocks from consecutive frame blocks
            // (a new file) go out in one write.
            let targets = &by_frame[f];
            let mut i = 0;
            while i < targets.len() {
                let (t0, k0) = targets[i];
                let mut len = 1;
                while i + len < targets.len()
                    && len < COPY_RUN as usize
                    && targets[i + len] == (t0 + len as u64, k0 + len as u64)
                {
                    len += 1;
                }
                out.set_len(len * bs);
                out.as_mut_slice()
                    .copy_from_slice(&frame[k0 as usize * bs..(k0 as usize + len) * bs]);
                writer.write_at(t0 * BLOCK_SIZE, out.as_slice())?;
                done.fetched += len as u64;
                i += len;
            }
        }
    }
    report(Event::Phase(format!(
        "delta: copying {} blocks from the active slot",
        p.plan.copied
    )));
    let src = File::open(active)
        .map_err(|e| Error::io(format!("opening the active slot {}", active.display()), e))?;
    let sources = &p.plan.sources;
    let mut t = 0usize;
    while t < sources.len() {
        let Source::Local(n0) = sources[t] else {
            t += 1;
            continue;
        };
        let mut len = 1usize;
        while t + len < sources.len()
            && len < COPY_RUN as usize
            && sources[t + len] == Source::Local(n0 + len as u64)
        {
            len += 1;
        }
        out.set_len(len * bs);
        src.read_exact_at(out.as_mut_slice(), n0 * BLOCK_SIZE)
            .map_err(|e| Error::io(format!("reading the active slot {}", active.display()), e))?;
        for (j, b) in out.as_slice().chunks_exact(bs).enumerate() {
            let want = p.index.digest((t + j) as u64);
            if Sha256::digest(b)[..want.len()] != *want {
                return Err(Error::ReadBack(format!(
                    "block {} of the active slot {} changed since it was hashed: not copied",
                    n0 + j as u64,
                    active.display()
                )));
            }
        }
        writer.write_at(t as u64 * BLOCK_SIZE, out.as_slice())?;
        done.copied += len as u64;
        t += len;
    }
    writer.sync()?;
    Ok(done)
}

/// The kernel command line of this boot; empty when unreadable (a test).
pub fn proc_cmdline() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

impl Agent {
    /// What installing `entry` would download for /usr: a delta when the
    /// release has a block index and the active slot helps, else the full
    /// image. Reads the active slot (a second or so per GiB).
    pub fn plan_download(&self, entry: &release_repo::ReleaseEntry) -> Result<DownloadPlan, Error> {
        let manifest = self.fetch_manifest(entry)?;
        let usr = manifest.image("usr").map_err(|cause| Error::Release {
            what: entry.manifest.clone(),
            cause,
        })?;
        let full_bytes: u64 = usr.chunks.iter().map(|c| c.zsize).sum();
        let full = |reason: String| DownloadPlan {
            method: "full".into(),
            usr_bytes: full_bytes,
            full_bytes,
            requests: usr.chunks.len() as u64,
            blocks_copied: 0,
            blocks_fetched: usr.size / BLOCK_SIZE,
            reason: Some(reason),
        };
        if self.full_download {
            return Ok(full(
                "deltas are off ([update] delta = false, or --full)".into(),
            ));
        }
        let verity = booted_verity(&proc_cmdline()).map_err(Error::Host)?;
        let active = self.target.slot_path(self.host.booted_slot).to_path_buf();
        let prepared = prepare(&self.http, &manifest, usr, &active, verity.as_ref());
        Ok(match prepared {
            Ok(Some(p)) if p.worth_it() => DownloadPlan {
                method: "delta".into(),
                usr_bytes: p.index_bytes + p.plan.download,
                full_bytes,
                requests: p.plan.ranges.len() as u64,
                blocks_copied: p.plan.copied,
                blocks_fetched: p.plan.fetched,
                reason: None,
            },
            Ok(Some(p)) => full(format!(
                "a delta would fetch {} of the {full_bytes} bytes",
                p.plan.download
            )),
            Ok(None) => full("the release has no block index".into()),
            Err(e) => full(e.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_booted_verity_from_the_command_line() {
        let root = "ab".repeat(32);
        let salt = "cd".repeat(32);
        let good = format!("console=ttyS0 usrhash={root} cairn.verity=100:409600:{salt} rw");
        let v = booted_verity(&good).unwrap().unwrap();
        assert_eq!((v.data_blocks, v.hash_offset), (100, 409600));
        assert_eq!(v.root_hash, [0xab; 32]);
        assert_eq!(v.hash_size, verity_tree::hash_size(100).unwrap());
        // (command line, Ok(Some)/Ok(None)/Err as 1/0/-1)
        let table = [
            ("console=ttyS0 rw".to_string(), 0),
            (format!("usrhash={root}"), 0),
            (format!("usrhash={root} cairn.verity=100:409600"), -1),
            (format!("usrhash=xyz cairn.verity=100:409600:{salt}"), -1),
            (format!("usrhash={root} cairn.verity=x:409600:{salt}"), -1),
            (good.clone(), 1),
        ];
        for (line, want) in table {
            let got = match booted_verity(&line) {
                Ok(Some(_)) => 1,
                Ok(None) => 0,
                Err(_) => -1,
            };
            assert_eq!(got, want, "{line}");
        }
    }
}
