//! Writing the usr image to the inactive slot, pipelined over five threads:
//!
//! ```text
//! fetch ──► unzstd ──► write ──► read back ──► verify (the caller's thread)
//! HTTP,     zstd into  O_DIRECT  O_DIRECT read, dm-verity level 0,
//! zsize,    aligned    write,    compare with   progress records,
//! zsha256   buffers    fdatasync what was sent  events
//! ```
//!
//! Writing and reading back are separate threads because each waits for the
//! device most of the time: one after the other they would halve the speed.
//! The verity hash runs on the buffer that was written, after the read-back
//! proved the device holds exactly those bytes, so it equals a hash of what
//! was read back.
//!
//! Bounded channels and fixed buffer pools between the stages keep memory flat
//! (a few chunk buffers plus 32 bytes per data block for the verity tree) and
//! let the download, the decompression and the device I/O overlap.
//!
//! Security properties kept from the sequential flow:
//! * zstd only sees compressed bytes whose size and sha256 match the signed
//!   chunk entry ([`Authentic`] can only be made by [`authenticate`]), and its
//!   output is capped at the signed size;
//! * every byte written is read back from the device (O_DIRECT, or synced and
//!   dropped from the page cache) and compared with the verified bytes, and the
//!   whole image is checked against the signed dm-verity root hash before the
//!   caller may flip the slot;
//! * `progress.json` only counts chunks that were read back and compared *and*
//!   are covered by a completed fdatasync, so a restart resumes at the first
//!   chunk not known to be on stable storage; chunks from an earlier run are
//!   read back again and checked against their signed sha256.
//!
//! The per-chunk sha256 of the *decompressed* bytes is not computed for chunks
//! downloaded in this run: their compressed bytes are authenticated by the
//! signed zsha256, zstd decoding is deterministic, and the decoded size is
//! checked, so the plain bytes are determined by signed data. Hashing them
//! again would cost a full sha256 pass over the image (a third of the CPU time
//! of an update); a decoder fault is still caught by the dm-verity check, which
//! hashes every data byte read back from the slot. The plain sha256 is what
//! checks chunks written by an earlier run, whose compressed form is gone.
//! The whole-image sha256 is not checked either: the chunks tile the image
//! (checked with the manifest) and each is authenticated on its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use release_manifest::{Chunk, Image};
use sha2::{Digest, Sha256};
use verity_tree::{VerityInfo, VerityStream};

use crate::Error;
use crate::http::Http;
use crate::target::{AlignedBuf, SlotWriter};

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

/// Bytes written between two fdatasyncs (and progress records). A flush costs
/// milliseconds on SD cards and eMMC; a power cut loses at most this much work,
/// or [`SYNC_INTERVAL`] of it on a slow device.
pub const SYNC_BYTES: u64 = 64 << 20;
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Compressed buffers: one downloading, one queued, one decompressing.
const COMPRESSED_POOL: usize = 3;
/// Plain buffers: one per stage from unzstd to verify, plus one in each queue
/// between them, less one (the queues are rarely all full).
const PLAIN_POOL: usize = 6;

/// Compressed bytes of chunk `index` that match its signed zsize and zsha256.
pub struct Authentic {
    index: u64,
    bytes: Vec<u8>,
}

/// The only way to make an [`Authentic`]: the size and sha256 checks.
pub fn authenticate(chunk: &Chunk, bytes: Vec<u8>) -> Result<Authentic, release_manifest::Error> {
    if bytes.len() as u64 != chunk.zsize {
        return Err(release_manifest::Error::ChunkZsize {
            index: chunk.index,
            expected: chunk.zsize,
            actual: bytes.len() as u64,
        });
    }
    if Sha256::digest(&bytes)[..] != chunk.zsha256.0 {
        return Err(release_manifest::Error::ChunkZsha256 { index: chunk.index });
    }
    Ok(Authentic {
        index: chunk.index,
        bytes,
    })
}

/// Decompresses `a` into `out`, which must end up exactly `chunk.size` bytes.
pub fn decompress(
    dctx: &mut zstd::bulk::Decompressor<'_>,
    chunk: &Chunk,
    a: &Authentic,
    out: &mut AlignedBuf,
) -> Result<(), release_manifest::Error> {
    let size = chunk.size as usize;
    if a.index != chunk.index || size > out.capacity() {
        return Err(release_manifest::Error::ChunkCorrupt {
            index: chunk.index,
            reason: "internal: buffer or chunk mix-up".into(),
        });
    }
    out.set_len(size);
    // The destination is exactly the signed size: zstd stops with "destination
    // buffer is too small" rather than writing one byte more.
    match dctx.decompress_to_buffer(&a.bytes, out.as_mut_slice()) {
        Ok(n) if n == size => Ok(()),
        Ok(n) => Err(release_manifest::Error::ChunkShort {
            index: chunk.index,
            expected: chunk.size,
            actual: n as u64,
        }),
        Err(e) if e.to_string().to_lowercase().contains("too small") => {
            Err(release_manifest::Error::ChunkTooLarge {
                index: chunk.index,
                size: chunk.size,
            })
        }
        Err(e) => Err(release_manifest::Error::ChunkCorrupt {
            index: chunk.index,
            reason: e.to_string(),
        }),
    }
}

/// What the usr image write needs.
pub struct UsrJob<'a> {
    pub http: &'a Http,
    pub image: &'a Image,
    pub verity: VerityInfo,
    /// Chunks already written and verified by an earlier run.
    pub start: u64,
    /// Test hook: stop (as if killed) after this many chunks of this run.
    pub stop_after: Option<u64>,
    pub slot: &'static str,
}

enum Written {
    Chunk(u64, AlignedBuf),
    /// Everything up to this chunk count is on stable storage; `stop`: the
    /// test hook fired.
    Synced {
        through: u64,
        stop: bool,
    },
}

fn release_err(chunk: &Chunk) -> impl FnOnce(release_manifest::Error) -> Error {
    let what = chunk.file.clone();
    move |source| Error::Release {
        what,
        cause: source,
    }
}

/// A stage ended without saying why (its channel closed): a bug, not bad data.
fn stopped() -> Error {
    Error::io(
        "update pipeline",
        std::io::Error::other("a stage stopped without a reason"),
    )
}

fn fetch_stage(
    http: &Http,
    chunks: &[Chunk],
    free: Receiver<Vec<u8>>,
    out: SyncSender<Result<Authentic, Error>>,
    cancel: &AtomicBool,
) {
    for chunk in chunks {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut buf) = free.recv() else { return };
        let r = http
            .get_into(&chunk.file, chunk.zsize, Some(chunk.zsize), &mut buf)
            .map_err(Error::from)
            .and_then(|()| authenticate(chunk, buf).map_err(release_err(chunk)));
        let failed = r.is_err();
        if out.send(r).is_err() || failed {
            return;
        }
    }
}

fn decompress_stage(
    chunks: &[Chunk],
    input: Receiver<Result<Authentic, Error>>,
    zfree: SyncSender<Vec<u8>>,
    free: Receiver<AlignedBuf>,
    out: SyncSender<Result<(u64, AlignedBuf), Error>>,
) {
    let mut dctx = match zstd::bulk::Decompressor::new() {
        Ok(d) => d,
        Err(e) => {
            let _ = out.send(Err(Error::io("creating a zstd decoder", e)));
            return;
        }
    };
    for a in input {
        let r = a.and_then(|a| {
            let chunk = chunks
                .get(a.index as usize)
                .filter(|c| c.index == a.index)
                .ok_or_else(stopped)?;
            let mut buf = free.recv().map_err(|_| stopped())?;
            decompress(&mut dctx, chunk, &a, &mut buf).map_err(release_err(chunk))?;
            let _ = zfree.send(a.bytes);
            Ok((a.index, buf))
        });
        let failed = r.is_err();
        if out.send(r).is_err() || failed {
            return;
        }
    }
}

fn write_stage(
    job: &UsrJob<'_>,
    writer: &SlotWriter,
    input: Receiver<Result<(u64, AlignedBuf), Error>>,
    out: SyncSender<Result<Written, Error>>,
) {
    let chunks = &job.image.chunks;
    let mut unsynced = 0u64;
    let mut synced_at = std::time::Instant::now();
    let mut this_run = 0u64;
    for r in input {
        let r = r.and_then(|(index, buf)| {
            let chunk = chunks.get(index as usize).ok_or_else(stopped)?;
            writer.write_at(chunk.offset, buf.as_slice())?;
            Ok((index, buf))
        });
        let (index, buf) = match r {
            Ok(x) => x,
            Err(e) => {
                let _ = out.send(Err(e));
                return;
            }
        };
        unsynced += buf.as_slice().len() as u64;
        this_run += 1;
        if out.send(Ok(Written::Chunk(index, buf))).is_err() {
            return;
        }
        let stop = job.stop_after == Some(this_run);
        let due = unsynced >= SYNC_BYTES || synced_at.elapsed() >= SYNC_INTERVAL;
        if due || index + 1 == chunks.len() as u64 || stop {
            unsynced = 0;
            synced_at = std::time::Instant::now();
            let r = writer.sync().map(|()| Written::Synced {
                through: index + 1,
                stop,
            });
            let failed = r.is_err();
            if out.send(r).is_err() || failed || stop {
                return;
            }
        }
    }
}

/// `a == b` without libc's memcmp, which is a byte loop in musl (the shipped
/// binaries are static musl); this form is vectorised by the compiler.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks_exact(256), b.chunks_exact(256));
    for (x, y) in (&mut ca).zip(&mut cb) {
        let mut diff = 0u64;
        for (p, q) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
            let (mut u, mut v) = ([0u8; 8], [0u8; 8]);
            u.copy_from_slice(p);
            v.copy_from_slice(q);
            diff |= u64::from_ne_bytes(u) ^ u64::from_ne_bytes(v);
        }
        if diff != 0 {
            return false;
        }
    }
    ca.remainder() == cb.remainder()
}

fn read_back_stage(
    job: &UsrJob<'_>,
    writer: &SlotWriter,
    input: Receiver<Result<Written, Error>>,
    out: SyncSender<Result<Written, Error>>,
) {
    let chunks = &job.image.chunks;
    let max_chunk = chunks.iter().map(|c| c.size).max().unwrap_or(0) as usize;
    let mut back = AlignedBuf::new(max_chunk);
    for w in input {
        let r = w.and_then(|w| match w {
            Written::Chunk(index, buf) => {
                let c = chunks.get(index as usize).ok_or_else(stopped)?;
                back.set_len(c.size as usize);
                writer.read_back(c.offset, back.as_mut_slice())?;
                if !same_bytes(back.as_slice(), buf.as_slice()) {
                    return Err(Error::ReadBack(format!(
                        "slot {}: chunk {index} reads back other bytes than were written (failing device?)",
                        job.slot
                    )));
                }
                Ok(Written::Chunk(index, buf))
            }
            synced => Ok(synced),
        });
        let failed = r.is_err();
        if out.send(r).is_err() || failed {
            return;
        }
    }
}

/// Reads back the chunks an earlier run wrote and recorded as verified,
/// checks each against its signed sha256 again, and hands its bytes to
/// `each` (the verity check of a resumed write sees the whole image).
pub(crate) fn recheck_written(
    writer: &SlotWriter,
    chunks: &[Chunk],
    buf: &mut AlignedBuf,
    what: &str,
    mut each: impl FnMut(&Chunk, &[u8]),
) -> Result<(), Error> {
    for c in chunks {
        buf.set_len(c.size as usize);
        writer.read_back(c.offset, buf.as_mut_slice())?;
        if Sha256::digest(buf.as_slice())[..] != c.sha256.0 {
            return Err(Error::ReadBack(format!(
                "{what}chunk {} written by an earlier run no longer matches its signed sha256",
                c.index
            )));
        }
        each(c, buf.as_slice());
    }
    Ok(())
}

/// Writes chunks `job.start..` of the usr image, reads every chunk of the image
/// back and checks it, then checks the dm-verity tree. `durable(n)` records
/// that the first `n` chunks are verified and on stable storage.
///
/// Errors from the read-back or verity check are [`Error::ReadBack`]: what is
/// on the slot is not what was meant, so nothing of it may be trusted later.
pub fn write_usr(
    job: &UsrJob<'_>,
    writer: &SlotWriter,
    durable: &mut dyn FnMut(u64) -> Result<(), Error>,
    report: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let chunks = &job.image.chunks;
    let total = chunks.len() as u64;
    let start = job.start.min(total);
    let mut verity = VerityStream::new(&job.verity)
        .map_err(|e| Error::BadRelease(format!("usr image dm-verity parameters: {e}")))?;
    let max_chunk = chunks.iter().map(|c| c.size).max().unwrap_or(0) as usize;
    let max_zsize = chunks.iter().map(|c| c.zsize).max().unwrap_or(0) as usize;
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (z_tx, z_rx) = sync_channel(1);
        let (zfree_tx, zfree_rx) = sync_channel(COMPRESSED_POOL);
        let (p_tx, p_rx) = sync_channel(1);
        let (pfree_tx, pfree_rx) = sync_channel(PLAIN_POOL);
        let (w_tx, w_rx) = sync_channel(2);
        let (r_tx, r_rx) = sync_channel(2);
        // Untouched pages of these buffers cost no memory: a small update
        // never faults in the whole pool.
        if total > start {
            for _ in 0..COMPRESSED_POOL {
                let _ = zfree_tx.send(Vec::with_capacity(max_zsize));
            }
            for _ in 0..PLAIN_POOL {
                let _ = pfree_tx.send(AlignedBuf::new(max_chunk));
            }
        }
        let todo = &chunks[start as usize..];
        let cancel = &cancel;
        // Named threads: `top -H` and `perf report --sort comm` tell the stages apart.
        let spawned = std::thread::Builder::new()
            .name("fetch".into())
            .spawn_scoped(s, move || {
                fetch_stage(job.http, todo, zfree_rx, z_tx, cancel)
            })
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("unzstd".into())
                    .spawn_scoped(s, move || {
                        decompress_stage(chunks, z_rx, zfree_tx, pfree_rx, p_tx)
                    })
            })
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("write".into())
                    .spawn_scoped(s, move || write_stage(job, writer, p_rx, w_tx))
            })
            .and_then(|_| {
                std::thread::Builder::new()
                    .name("read-back".into())
                    .spawn_scoped(s, move || read_back_stage(job, writer, w_rx, r_tx))
            });
        if let Err(e) = spawned {
            cancel.store(true, Ordering::Relaxed);
            return Err(Error::io("starting the update threads", e));
        }
        let r = verify_stage(job, writer, &mut verity, r_rx, pfree_tx, durable, report);
        // Stop the stages if verifying failed; they end when their channels close.
        cancel.store(true, Ordering::Relaxed);
        r
    })?;
    // The phase name the sequential flow had (VM scenarios cut the power at it).
    report(Event::Phase(
        "reading the slot back: every chunk compared, checking the dm-verity root hash".into(),
    ));
    verity
        .finish()
        .map_err(|e| Error::ReadBack(format!("slot {}: dm-verity: {e}", job.slot)))
}

fn verify_stage(
    job: &UsrJob<'_>,
    writer: &SlotWriter,
    verity: &mut VerityStream,
    input: Receiver<Result<Written, Error>>,
    free: SyncSender<AlignedBuf>,
    durable: &mut dyn FnMut(u64) -> Result<(), Error>,
    report: &mut dyn FnMut(Event),
) -> Result<(), Error> {
    let chunks = &job.image.chunks;
    let total = chunks.len() as u64;
    let start = job.start.min(total);
    let max_chunk = chunks.iter().map(|c| c.size).max().unwrap_or(0) as usize;
    let mut back = AlignedBuf::new(max_chunk);
    // While the other stages already download what comes next.
    recheck_written(
        writer,
        &chunks[..start as usize],
        &mut back,
        &format!("slot {}: ", job.slot),
        |_, bytes| verity.update(bytes),
    )?;
    let mut next = start;
    while next < total {
        match input.recv().map_err(|_| stopped())?? {
            Written::Chunk(index, buf) => {
                let c = chunks
                    .get(index as usize)
                    .filter(|_| index == next)
                    .ok_or_else(stopped)?;
                // The read-back stage proved the slot holds exactly `buf`.
                verity.update(buf.as_slice());
                let _ = free.send(buf);
                next += 1;
                report(Event::Chunk {
                    index,
                    total,
                    bytes_done: c.offset + c.size,
                    bytes_total: job.image.size,
                });
            }
            Written::Synced { through, stop } => {
                durable(through)?;
                if stop {
                    return Err(Error::Interrupted(through - start));
                }
            }
        }
    }
    // The last sync follows the last chunk.
    if total > start {
        match input.recv().map_err(|_| stopped())?? {
            Written::Synced { through, stop } => {
                durable(through)?;
                if stop {
                    return Err(Error::Interrupted(through - start));
                }
            }
            Written::Chunk(..) => return Err(stopped()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use release_manifest::Hex32;

    fn chunk(plain: &[u8], compressed: &[u8]) -> Chunk {
        Chunk {
            index: 0,
            offset: 0,
            size: plain.len() as u64,
            sha256: Hex32(Sha256::digest(plain).into()),
            zsize: compressed.len() as u64,
            zsha256: Hex32(Sha256::digest(compressed).into()),
            file: "chunks/x.zst".into(),
        }
    }

    #[test]
    fn only_authentic_bytes_of_the_signed_size_come_out() {
        let plain: Vec<u8> = (0..20_000u32).map(|i| (i / 7) as u8).collect();
        let z = zstd::bulk::compress(&plain, 3).unwrap();
        let garbage = vec![0x55u8; 64];
        let mut dctx = zstd::bulk::Decompressor::new().unwrap();
        let mut out = AlignedBuf::new(32 << 10);
        let good = chunk(&plain, &z);
        let a = authenticate(&good, z.clone()).unwrap();
        decompress(&mut dctx, &good, &a, &mut out).unwrap();
        assert!(same_bytes(out.as_slice(), &plain));

        use release_manifest::Error as E;
        let mut short = z.clone();
        short.pop();
        let mut flipped = z.clone();
        flipped[5] ^= 1;
        // (what, chunk entry, bytes received, expected refusal)
        type Expect = fn(&E) -> bool;
        let mut smaller = good.clone();
        smaller.size -= 1;
        let mut larger = good.clone();
        larger.size += 1;
        let table: [(&str, Chunk, Vec<u8>, Expect); 5] = [
            ("truncated", good.clone(), short, |e| {
                matches!(e, E::ChunkZsize { .. })
            }),
            ("tampered", good.clone(), flipped, |e| {
                matches!(e, E::ChunkZsha256 { .. })
            }),
            ("signed size too small", smaller, z.clone(), |e| {
                matches!(e, E::ChunkTooLarge { .. })
            }),
            ("signed size too large", larger, z.clone(), |e| {
                matches!(e, E::ChunkShort { .. })
            }),
            (
                "signed garbage",
                chunk(&plain, &garbage),
                garbage.clone(),
                |e| matches!(e, E::ChunkCorrupt { .. }),
            ),
        ];
        for (what, c, bytes, expect) in table {
            let r = authenticate(&c, bytes).and_then(|a| decompress(&mut dctx, &c, &a, &mut out));
            let e = r.expect_err(what);
            assert!(expect(&e), "{what}: {e}");
        }
    }

    #[test]
    fn same_bytes_finds_any_difference() {
        let a: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        assert!(same_bytes(&a, &a.clone()));
        assert!(!same_bytes(&a, &a[..4999]));
        // Differences in the vectorised part and in the tail.
        for at in [0, 7, 255, 256, 4095, 4999] {
            let mut b = a.clone();
            b[at] ^= 0x80;
            assert!(!same_bytes(&a, &b), "difference at {at}");
        }
    }
}
