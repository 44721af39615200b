//! Delta updates of the usr slot (issue 13): copy the blocks the active slot
//! already holds, fetch only the rest by coalesced Range requests.
//!
//! The format and the planner are `block-delta`'s; this is the I/O around
//! them. What is checked where:
//! * the block index is an image of the signed manifest: every chunk is
//!   authenticated (zsize, zsha256, sha256) and the whole index against the
//!   signed image sha256 before it is parsed;
//! * the active slot's block digests, of the kind the index says
//!   (`Index::digests`), come from one of three places ([`LocalDigests`]):
//!   - format 3 (dm-verity level-0 hashes) and the booted dm-verity
//!     parameters known (the kernel command line) with the new image's salt:
//!     the slot's own hash area (about 1/128 of the data), every level
//!     checked up to the booted `usrhash` (`verity_tree::read_level0`); the
//!     data is not read or hashed to plan;
//!   - format 3 and another salt (or no booted parameters): the slot's data
//!     hashed with the new image's salt, in one read, while the booted
//!     tree checks it (as below);
//!   - format 2 (plain sha256): the slot's data hashed with sha256, in one
//!     read, while the booted tree checks it;
//!
//!   a slot whose tree or data does not verify against its `usrhash` gives
//!   no delta (the full download). A level-0 digest vouches for what the
//!   block held when its tree was written, not for what is on disk now: a
//!   block that rotted since is caught where every copied block is, below;
//! * the index's salt (format 3) must be the usr image's signed one;
//! * a fetched frame's compressed bytes must match the prefix of their
//!   sha256 the signed index gives, before zstd sees them, and decode to
//!   exactly its size;
//! * the slot is written chunk by chunk of the usr image, in order: each
//!   chunk is assembled in memory (local blocks read from the active slot
//!   now, fetched blocks, and for the hash area the dm-verity tree the host
//!   computes from the data instead of fetching it) and must match its
//!   signed sha256 *before* it is written, so a local block that changed
//!   since its digest was taken makes the chunk fail (and the caller falls
//!   back to the full download) instead of being written; the computed
//!   tree's root must equal the signed one;
//! * progress is recorded as the full download does (chunks verified and
//!   fdatasynced, in order), so an interrupted delta resumes at the first
//!   chunk not on stable storage and plans only the chunks after it;
//! * a write thread writes each chunk, reads it back and compares it with
//!   what was checked (O_DIRECT, as the pipeline does), while the next chunk
//!   is assembled; progress counts only chunks read back and fdatasynced,
//!   so nothing is left for the full-download pipeline to check before the
//!   flip.
//!
//! Any failure here makes the caller fall back to the full download.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use block_delta::{BLOCK_SIZE, DigestKind, FrameLoc, Index, LocalBlocks, Plan, Source};
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

/// Where the digests of the active slot's blocks came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDigests {
    /// The slot's dm-verity level 0, checked up to the booted root hash:
    /// the slot's data was not read (format 3 index, same salt).
    VerityTree,
    /// The slot's data hashed with the new image's salt (format 3 index,
    /// another salt or no booted dm-verity parameters).
    HashedSalted,
    /// The slot's data hashed with plain sha256 (format 2 index).
    HashedSha256,
}

impl LocalDigests {
    /// For the progress log.
    pub fn describe(&self) -> &'static str {
        match self {
            LocalDigests::VerityTree => "from the slot's verified dm-verity tree (data not read)",
            LocalDigests::HashedSalted => "hashed from the slot's data with the new salt",
            LocalDigests::HashedSha256 => "hashed from the slot's data (sha256, format 2 index)",
        }
    }
}

/// The delta planned for one release, with what the plan needs to run.
pub struct Prepared {
    pub index: Index,
    pub frames: Vec<FrameLoc>,
    pub plan: Plan,
    /// Where the active slot's block digests came from.
    pub local: LocalDigests,
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

/// Hashes the active slot in 4 KiB blocks with `kind` (the index's digest
/// kind): its image when `verity` gives its extent (and then it must
/// verify), else the whole slot. The block digests and the dm-verity check
/// run on two threads over each buffer: the slot is read once and costs one
/// hash pass of wall time.
pub fn hash_active(
    path: &Path,
    verity: Option<&VerityInfo>,
    kind: &DigestKind,
) -> Result<LocalBlocks, Error> {
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
        let bytes = &buf[..n];
        std::thread::scope(|s| {
            if let Some(st) = &mut stream {
                s.spawn(move || st.update(bytes));
            }
            local.extend_with(kind, bytes);
        });
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

/// The digests of the active slot's blocks from its own dm-verity tree: the
/// data blocks' are its level 0 (`verity.salt` must be the index's salt),
/// read and checked up to the booted root hash without reading the data;
/// the blocks after the data (any gap, the superblock block, the tree,
/// about 1/128 of the data) are read and hashed with `kind`, so an
/// unchanged superblock is copied as the hashing path would copy it.
pub fn tree_active(
    path: &Path,
    verity: &VerityInfo,
    kind: &DigestKind,
) -> Result<LocalBlocks, Error> {
    // Level-0 digests are salted with the booted salt: they are the index's
    // keys only when that is the index's salt.
    if *kind != (DigestKind::Verity { salt: verity.salt }) {
        return Err(Error::BadRelease(
            "internal: the booted dm-verity salt is not the block index's: hash the slot instead"
                .into(),
        ));
    }
    let f = File::open(path)
        .map_err(|e| Error::io(format!("opening the active slot {}", path.display()), e))?;
    let mut digests = verity_tree::read_level0(&f, verity).map_err(|e| match e {
        verity_tree::Error::InvalidParams(_) => {
            Error::BadRelease(format!("dm-verity parameters of the booted /usr: {e}"))
        }
        verity_tree::Error::Io { .. } | verity_tree::Error::TooShort { .. } => Error::io(
            format!("reading the dm-verity tree of the active slot {}", path.display()),
            std::io::Error::other(e.to_string()),
        ),
        e => Error::ReadBack(format!(
            "the dm-verity tree of the active slot {} does not verify against its root ({e}): its blocks are not reused",
            path.display()
        )),
    })?;
    let data_end = verity.data_blocks * BLOCK_SIZE;
    let end = verity.hash_offset + verity.hash_size;
    let mut rest = vec![0u8; (end - data_end) as usize];
    f.read_exact_at(&mut rest, data_end).map_err(|e| {
        Error::io(
            format!(
                "reading the hash area of the active slot {}",
                path.display()
            ),
            e,
        )
    })?;
    digests.extend(
        rest.chunks_exact(BLOCK_SIZE as usize)
            .map(|b| kind.digest(b)),
    );
    Ok(LocalBlocks::from_digests(digests))
}

/// The active slot's block digests of the kind `index` has, from where they
/// cost least (see the module docs and [`LocalDigests`]). `new_salt`: the
/// new usr image's signed dm-verity salt.
pub fn local_digests(
    index: &Index,
    new_salt: &[u8; 32],
    active: &Path,
    verity: Option<&VerityInfo>,
) -> Result<(LocalBlocks, LocalDigests), Error> {
    let kind = index.digests();
    match kind {
        DigestKind::Sha256 => Ok((
            hash_active(active, verity, &kind)?,
            LocalDigests::HashedSha256,
        )),
        DigestKind::Verity { salt } => {
            // The index keys blocks by the new image's level 0: its salt
            // must be the signed one, or nothing it plans could verify.
            if salt != *new_salt {
                return Err(Error::BadRelease(format!(
                    "the block index's dm-verity salt {} is not the usr image's {}: the release is inconsistent",
                    hex::encode(salt),
                    hex::encode(new_salt)
                )));
            }
            match verity {
                Some(v) if v.salt == salt => {
                    Ok((tree_active(active, v, &kind)?, LocalDigests::VerityTree))
                }
                _ => Ok((
                    hash_active(active, verity, &kind)?,
                    LocalDigests::HashedSalted,
                )),
            }
        }
    }
}

/// Blocks of the new image's dm-verity hash tree (the hash area after its
/// superblock block): the host computes them from the data, so they are
/// never fetched.
pub fn tree_blocks(v: &VerityInfo) -> Range<u64> {
    let first = v.hash_offset / BLOCK_SIZE;
    (first + 1)..(v.hash_offset + v.hash_size) / BLOCK_SIZE
}

/// The first block of chunk `start` of `usr` (its end for `start` past the
/// last chunk): the blocks before it are on the slot already.
fn resume_block(usr: &Image, start: u64) -> u64 {
    usr.chunks
        .get(start as usize)
        .map_or(usr.size, |c| c.offset)
        / BLOCK_SIZE
}

/// Fetches the index (`None`: the release has none), then takes the active
/// slot's block digests (see [`local_digests`]: from its verified hash tree
/// when it can, else by hashing it) and plans the chunks from `start` on,
/// the new image's hash tree excepted.
pub fn prepare(
    http: &Http,
    manifest: &Manifest,
    usr: &Image,
    active: &Path,
    verity: Option<&VerityInfo>,
    start: u64,
) -> Result<Option<Prepared>, Error> {
    let new = usr
        .verity
        .ok_or_else(|| Error::BadRelease("the usr image has no dm-verity tree".into()))?
        .to_info();
    if usr
        .chunks
        .iter()
        .any(|c| c.offset % BLOCK_SIZE != 0 || c.size % BLOCK_SIZE != 0)
    {
        return Err(Error::BadRelease(
            "usr chunks are not whole 4096-byte blocks: no delta".into(),
        ));
    }
    // The index first: a release without one costs no read of the slot.
    let Some((index, frames, index_bytes)) = fetch_index(http, manifest, usr)? else {
        return Ok(None);
    };
    let (local, local_kind) = local_digests(&index, &new.salt, active, verity)?;
    let skip = [0..resume_block(usr, start), tree_blocks(&new)];
    let plan = block_delta::plan(
        &index,
        &frames,
        &local,
        block_delta::DEFAULT_GAP,
        block_delta::MAX_RANGE,
        &skip,
    );
    Ok(Some(Prepared {
        index,
        frames,
        plan,
        local: local_kind,
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
    /// Chunks written in this run.
    pub chunks: u64,
}

/// Where [`write`] starts and stops, and how it records what is durable.
pub struct Resume<'a> {
    /// Chunks of the usr image already written and verified by an earlier run.
    pub start: u64,
    /// Test hook: stop (as if killed) after this many chunks of this run.
    pub stop_after: Option<u64>,
    /// Records that the first `n` chunks are verified and on stable storage.
    pub durable: &'a mut dyn FnMut(u64) -> Result<(), Error>,
}

/// A fetched range: its number in the plan and its bytes.
type Body = Result<(usize, Vec<u8>), Error>;

/// Fetches the plan's ranges in order, ahead of the assembly (a network
/// round trip per range would otherwise stall it).
fn fetch_stage(http: &Http, p: &Prepared, out: SyncSender<Body>) {
    for (r, range) in p.plan.ranges.iter().enumerate() {
        let mut body = Vec::new();
        let got = http
            .get_range(&range.file, range.start, range.len, &mut body)
            .map(|()| (r, body))
            .map_err(Error::from);
        let failed = got.is_err();
        if out.send(got).is_err() || failed {
            return;
        }
    }
}

/// Fetched ranges, held until the last chunk that needs them is written.
struct Fetcher<'a> {
    incoming: Receiver<Body>,
    p: &'a Prepared,
    /// The range holding each frame, for the frames the plan needs.
    range_of: Vec<Option<usize>>,
    /// The last chunk (of the usr image) needing each range.
    last_use: Vec<u64>,
    bodies: std::collections::HashMap<usize, Vec<u8>>,
    dctx: zstd::bulk::Decompressor<'static>,
    /// The frame last decoded, and its blocks.
    decoded: Option<usize>,
    frame: Vec<u8>,
    done: Written,
}

impl<'a> Fetcher<'a> {
    fn new(
        incoming: Receiver<Body>,
        p: &'a Prepared,
        chunk_of: impl Fn(u64) -> u64,
    ) -> Result<Self, Error> {
        let mut range_of = vec![None; p.frames.len()];
        for (r, range) in p.plan.ranges.iter().enumerate() {
            for f in range.frames.clone() {
                range_of[f] = Some(r);
            }
        }
        let mut last_use = vec![0u64; p.plan.ranges.len()];
        for (t, s) in p.plan.sources.iter().enumerate() {
            if let Source::Fetch { frame, .. } = *s
                && let Some(r) = range_of[frame]
            {
                last_use[r] = last_use[r].max(chunk_of(t as u64));
            }
        }
        let max_frame = p.frames.iter().map(|f| f.blocks).max().unwrap_or(0) as usize;
        Ok(Fetcher {
            incoming,
            p,
            range_of,
            last_use,
            bodies: Default::default(),
            dctx: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::io("creating a zstd decoder", e))?,
            decoded: None,
            frame: vec![0; max_frame * BLOCK_SIZE as usize],
            done: Written::default(),
        })
    }

    /// Block `block` of frame `f`: its range fetched if it is not held, the
    /// frame's bytes checked against the signed prefix of their sha256
    /// before zstd sees them.
    fn block(&mut self, f: usize, block: u64) -> Result<&[u8], Error> {
        let bs = BLOCK_SIZE as usize;
        if self.decoded != Some(f) {
            let r = self.range_of[f].ok_or_else(|| {
                Error::BadRelease(format!("internal: frame {f} is needed but not planned"))
            })?;
            let range = &self.p.plan.ranges[r];
            // Ranges arrive in plan order; those before `r` are kept for
            // the chunks that need them.
            while !self.bodies.contains_key(&r) {
                let (got, body) = self.incoming.recv().map_err(|_| {
                    Error::BadRelease(format!("internal: range {r} was never fetched"))
                })??;
                self.done.requests += 1;
                self.done.bytes += body.len() as u64;
                self.bodies.insert(got, body);
            }
            let body = &self.bodies[&r];
            let loc = &self.p.frames[f];
            let at = (loc.offset - range.start) as usize;
            let z = &body[at..at + loc.zsize as usize];
            let n = loc.zsha_len;
            if Sha256::digest(z)[..n] != loc.zsha256[..n] {
                return Err(Error::BadRelease(format!(
                    "{} bytes {}..{}: frame {f} does not match the sha256 the signed block index gives (tampered or corrupt download)",
                    loc.file,
                    loc.offset,
                    loc.offset + loc.zsize
                )));
            }
            let size = loc.blocks as usize * bs;
            self.decoded = None;
            let got = self
                .dctx
                .decompress_to_buffer(z, &mut self.frame[..size])
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
            self.decoded = Some(f);
        }
        Ok(&self.frame[block as usize * bs..][..bs])
    }

    /// Drops the ranges no chunk after `chunk` needs.
    fn done_with(&mut self, chunk: u64) {
        let last = &self.last_use;
        self.bodies.retain(|r, _| last[*r] > chunk);
    }
}

/// Writes the new image to the slot from the plan, chunk by chunk of the
/// usr image in order from `resume.start`: each chunk is assembled in memory
/// from local blocks, fetched frames and (the hash area) the dm-verity tree
/// computed from the data, checked against its signed sha256, then written;
/// every 64 MiB (and at the end) an fdatasync, then `resume.durable`. The
/// computed tree's root must equal the signed one before its chunks are
/// written. Chunks before `resume.start` are read back from the slot and
/// checked against their signed sha256 (the tree needs their data). Every
/// chunk written is read back and compared before it counts as durable.
pub fn write(
    http: &Http,
    p: &Prepared,
    usr: &Image,
    active: &Path,
    writer: &SlotWriter,
    resume: Resume<'_>,
    report: &mut dyn FnMut(Event),
) -> Result<Written, Error> {
    let bs = BLOCK_SIZE as usize;
    let info = usr
        .verity
        .ok_or_else(|| Error::BadRelease("the usr image has no dm-verity tree".into()))?
        .to_info();
    let tree_range = tree_blocks(&info);
    let chunks = &usr.chunks;
    let start = resume.start.min(chunks.len() as u64);
    let max_chunk = chunks.iter().map(|c| c.size).max().unwrap_or(0) as usize;
    let chunk_of =
        |block: u64| chunks.partition_point(|c| c.offset + c.size <= block * BLOCK_SIZE) as u64;
    let mut tree = verity_tree::TreeBuilder::new(info.data_blocks, &info.salt)
        .map_err(|e| Error::BadRelease(format!("usr dm-verity geometry: {e}")))?;
    let mut buf = AlignedBuf::new(max_chunk);
    report(Event::Phase(format!(
        "delta: checking the {start} chunks written before"
    )));
    crate::pipeline::recheck_written(
        writer,
        &chunks[..start as usize],
        &mut buf,
        "",
        |c, bytes| tree.add_blocks(c.offset / BLOCK_SIZE, bytes),
    )?;
    let src = File::open(active)
        .map_err(|e| Error::io(format!("opening the active slot {}", active.display()), e))?;
    let read_err = |e| Error::io(format!("reading the active slot {}", active.display()), e);

    let sources = &p.plan.sources;
    let total = chunks.len() as u64;
    report(Event::Phase(format!(
        "delta: writing chunks {start}..{total} ({} ranges to fetch; local block digests {})",
        p.plan.ranges.len(),
        p.local.describe()
    )));
    let durable = resume.durable;
    let stop_after = resume.stop_after;
    // This thread assembles and checks chunks; the "write" thread writes,
    // reads back and syncs them, so the device I/O overlaps the assembly.
    let (this_run, done) = std::thread::scope(|s| -> Result<(u64, Written), Error> {
        let (to_disk, from_main) = sync_channel::<(u64, AlignedBuf)>(2);
        let (to_main, synced) = sync_channel::<Result<Synced, Error>>(total as usize + 1);
        let disk = std::thread::Builder::new()
            .name("write".into())
            .spawn_scoped(s, move || {
                disk_stage(writer, chunks, stop_after, from_main, to_main)
            })
            .map_err(|e| Error::io("starting the delta write thread", e))?;
        // Records what the write thread synced; true when it stopped.
        let mut note = |r: Result<Synced, Error>| -> Result<bool, Error> {
            let Synced { through, stop } = r?;
            durable(through)?;
            Ok(stop)
        };
        // `sha256`: of exactly the bytes of `out`, computed by the caller.
        let mut send = |index: u64, out: AlignedBuf, sha256: [u8; 32]| -> Result<bool, Error> {
            let c = &chunks[index as usize];
            if sha256 != c.sha256.0 {
                return Err(Error::BadRelease(format!(
                    "chunk {index} assembled from the delta does not match its signed sha256 (a local block changed since its digest was taken, or a bad frame): not written"
                )));
            }
            // A closed channel: the write thread failed or stopped; its
            // message says which.
            let sent = to_disk.send((index, out)).is_ok();
            while let Ok(r) = synced.try_recv() {
                if note(r)? {
                    return Ok(true);
                }
            }
            Ok(!sent)
        };
        let (fetched, incoming) = sync_channel::<Body>(2);
        std::thread::Builder::new()
            .name("fetch".into())
            .spawn_scoped(s, move || fetch_stage(http, p, fetched))
            .map_err(|e| Error::io("starting the delta fetch thread", e))?;
        let mut fetcher = Fetcher::new(incoming, p, chunk_of)?;
        // Chunks holding tree blocks wait for the whole data area, in memory.
        let mut held: Vec<(u64, AlignedBuf)> = Vec::new();
        let mut stopped = false;
        for c in &chunks[start as usize..] {
            let first = c.offset / BLOCK_SIZE;
            let blocks = c.size / BLOCK_SIZE;
            let mut out = AlignedBuf::new(c.size as usize);
            let mut has_tree = !held.is_empty();
            let mut k = 0u64;
            while k < blocks {
                let t = first + k;
                let dst = |k: u64, len: u64| (k as usize * bs)..((k + len) as usize * bs);
                match sources[t as usize] {
                    Source::Local(n0) => {
                        // A run of consecutive local blocks: one read.
                        let mut len = 1u64;
                        while k + len < blocks
                            && sources[(t + len) as usize] == Source::Local(n0 + len)
                        {
                            len += 1;
                        }
                        src.read_exact_at(&mut out.as_mut_slice()[dst(k, len)], n0 * BLOCK_SIZE)
                            .map_err(read_err)?;
                        fetcher.done.copied += len;
                        k += len;
                    }
                    Source::Fetch { frame, block } => {
                        let b = fetcher.block(frame, block)?;
                        out.as_mut_slice()[dst(k, 1)].copy_from_slice(b);
                        fetcher.done.fetched += 1;
                        k += 1;
                    }
                    Source::Skip if tree_range.contains(&t) => {
                        has_tree = true;
                        k += 1;
                    }
                    Source::Skip => {
                        return Err(Error::BadRelease(format!(
                            "internal: block {t} of chunk {} was not planned",
                            c.index
                        )));
                    }
                }
            }
            fetcher.done_with(c.index);
            if has_tree {
                tree.add_blocks(first, out.as_slice());
                held.push((c.index, out));
                continue;
            }
            // Two hash passes over the same bytes, on two threads: the
            // chunk's sha256 (checked before it is written) and the new
            // tree's level-0 digests of its blocks (checked by the root).
            let sha256 = std::thread::scope(|s| {
                let h = s.spawn(|| <[u8; 32]>::from(Sha256::digest(out.as_slice())));
                tree.add_blocks(first, out.as_slice());
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            });
            if send(c.index, out, sha256)? {
                stopped = true;
                break;
            }
        }
        if !stopped && !held.is_empty() {
            let (area, root) = tree.finish();
            if root != info.root_hash {
                return Err(Error::BadRelease(format!(
                    "the dm-verity root of the assembled data is {}, the signed one {}: the data is not this release's",
                    hex::encode(root),
                    hex::encode(info.root_hash)
                )));
            }
            let area_first = info.hash_offset / BLOCK_SIZE;
            for (index, mut out) in held {
                let c = &chunks[index as usize];
                let first = c.offset / BLOCK_SIZE;
                for k in 0..c.size / BLOCK_SIZE {
                    let t = first + k;
                    if tree_range.contains(&t) {
                        let at = ((t - area_first) * BLOCK_SIZE) as usize;
                        out.as_mut_slice()[k as usize * bs..][..bs]
                            .copy_from_slice(&area[at..at + bs]);
                    }
                }
                let sha256 = Sha256::digest(out.as_slice()).into();
                if send(index, out, sha256)? {
                    break;
                }
            }
        }
        drop(to_disk);
        for r in synced {
            note(r)?;
        }
        let written = disk
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        Ok((written, fetcher.done))
    })?;
    if stop_after == Some(this_run) && start + this_run < total {
        return Err(Error::Interrupted(this_run));
    }
    let mut done = done;
    done.chunks = this_run;
    Ok(done)
}

/// Chunks through `through` are written, read back equal and fdatasynced;
/// `stop`: the test hook fired there.
struct Synced {
    through: u64,
    stop: bool,
}

/// The write thread: writes each chunk, reads it back and compares, and
/// syncs every [`SYNC_BYTES`](crate::pipeline::SYNC_BYTES) and after the
/// last chunk (or when `stop_after` chunks are written). Returns the chunks
/// written.
fn disk_stage(
    writer: &SlotWriter,
    chunks: &[release_manifest::Chunk],
    stop_after: Option<u64>,
    input: Receiver<(u64, AlignedBuf)>,
    out: SyncSender<Result<Synced, Error>>,
) -> Result<u64, Error> {
    let total = chunks.len() as u64;
    let max = chunks.iter().map(|c| c.size).max().unwrap_or(0) as usize;
    let mut back = AlignedBuf::new(max);
    let (mut unsynced, mut this_run) = (0u64, 0u64);
    let r = (|| {
        for (index, buf) in input {
            let c = &chunks[index as usize];
            writer.write_at(c.offset, buf.as_slice())?;
            back.set_len(buf.as_slice().len());
            writer.read_back(c.offset, back.as_mut_slice())?;
            if !crate::pipeline::same_bytes(back.as_slice(), buf.as_slice()) {
                return Err(Error::ReadBack(format!(
                    "chunk {index} reads back other bytes than were written (failing device?)"
                )));
            }
            this_run += 1;
            unsynced += c.size;
            let stop = stop_after == Some(this_run);
            if unsynced >= crate::pipeline::SYNC_BYTES || index + 1 == total || stop {
                writer.sync()?;
                unsynced = 0;
                let _ = out.send(Ok(Synced {
                    through: index + 1,
                    stop,
                }));
                if stop {
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => Ok(this_run),
        Err(e) => {
            let _ = out.send(Err(e));
            Ok(this_run)
        }
    }
}

/// The kernel command line of this boot; empty when unreadable (a test).
pub fn proc_cmdline() -> String {
    #[cfg(feature = "bench")]
    if let Some(line) = BOOTED_CMDLINE.with(|c| c.borrow().clone()) {
        return line;
    }
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

#[cfg(feature = "bench")]
thread_local! {
    static BOOTED_CMDLINE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Test and benchmark hook (feature `bench`, off in the shipped binaries):
/// [`proc_cmdline`] returns `line` on this thread (`None`: /proc/cmdline
/// again), so an agent applying on this thread sees the booted dm-verity
/// parameters a Cairn boot would have. Per thread, so tests running in
/// parallel do not see each other's.
#[cfg(feature = "bench")]
pub fn set_booted_cmdline(line: Option<String>) {
    BOOTED_CMDLINE.with(|c| *c.borrow_mut() = line);
}

impl Agent {
    /// What installing `entry` would download for /usr: a delta when the
    /// release has a block index and the active slot helps, else the full
    /// image. Reads the active slot's verified hash tree (a format 3 index
    /// and the booted salt), else hashes the slot (a second or so per GiB).
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
        let prepared = prepare(&self.http, &manifest, usr, &active, verity.as_ref(), 0);
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

    /// The blocks the host computes are the hash area after its superblock
    /// block, up to the image's end.
    #[test]
    fn the_computed_blocks_are_the_tree_after_the_superblock() {
        for data_blocks in [1u64, 2, 127, 128, 129, 300, 16_385] {
            let hash_size = verity_tree::hash_size(data_blocks).unwrap();
            let info = verity_tree::VerityInfo {
                root_hash: [0; 32],
                salt: [5; 32],
                data_blocks,
                hash_offset: data_blocks * BLOCK_SIZE,
                hash_size,
                data_block_size: BLOCK_SIZE as u32,
                hash_block_size: BLOCK_SIZE as u32,
            };
            let tree_range = tree_blocks(&info);
            assert_eq!(tree_range.start, data_blocks + 1);
            assert_eq!(tree_range.end, data_blocks + hash_size / BLOCK_SIZE);
        }
    }

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
