//! Writing a release directory.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::manifest::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use crate::{
    CHUNKS_DIR, CheckError, Chunk, Error, FORMAT, Hex32, Image, KeyPair, MANIFEST_FILE, Manifest,
    SIGNATURES_FILE, Verity, Version, chunk_file_name, sign_document,
};

pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// The manifest fields that are not about images.
#[derive(Debug, Clone)]
pub struct ManifestFields {
    pub board: String,
    pub arch: String,
    pub version: Version,
    /// Unix seconds; pass SOURCE_DATE_EPOCH for reproducible output.
    pub created: u64,
    pub expires: Option<u64>,
    /// `name=version` lock entries.
    pub packages: Vec<String>,
}

/// Builds a release directory: [`create`](Self::create), [`add_image`](Self::add_image)
/// for every image, then [`finish`](Self::finish).
///
/// Output is byte-reproducible: chunks are cut at fixed offsets, compressed with
/// single-threaded zstd (whose output depends only on level and input), named by
/// their hash, and the manifest's field order is fixed. Worker threads only change
/// which thread compresses a chunk, not its bytes.
#[derive(Debug)]
pub struct ReleaseWriter {
    dir: PathBuf,
    images: Vec<Image>,
    level: i32,
    threads: usize,
}

impl ReleaseWriter {
    /// Creates `dir` and `dir/chunks` if needed. Refuses a directory that already
    /// holds a manifest; existing chunk files are reused after checking their hash,
    /// so several releases can share one chunk store.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        let manifest = dir.join(MANIFEST_FILE);
        if manifest.symlink_metadata().is_ok() {
            return Err(Error::ReleaseExists { path: manifest });
        }
        let chunks = dir.join(CHUNKS_DIR);
        fs::create_dir_all(&chunks).map_err(Error::io(&chunks))?;
        Ok(ReleaseWriter {
            dir,
            images: Vec::new(),
            level: DEFAULT_ZSTD_LEVEL,
            // Two workers: compression is the slow part, and build hosts are shared.
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        })
    }

    /// zstd level for the following images (default 3).
    pub fn set_compression_level(&mut self, level: i32) -> &mut Self {
        self.level = level;
        self
    }

    /// Compression threads (at least 1). Does not change the output.
    pub fn set_threads(&mut self, threads: usize) -> &mut Self {
        self.threads = threads.max(1);
        self
    }

    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// [`add_image`](Self::add_image) reading from a file.
    pub fn add_image_file(
        &mut self,
        name: &str,
        path: impl AsRef<Path>,
        chunk_size: u64,
        verity: Option<Verity>,
    ) -> Result<&Image, Error> {
        let path = path.as_ref();
        let file = fs::File::open(path).map_err(Error::io(path))?;
        self.add_image(
            name,
            io::BufReader::with_capacity(1 << 20, file),
            chunk_size,
            verity,
        )
    }

    /// A new image needs a name not used yet and a chunk size in range, in
    /// whole 4 KiB blocks.
    fn check_new_image(&self, name: &str, chunk_size: u64) -> Result<(), Error> {
        if self.images.iter().any(|i| i.name == name) {
            return Err(CheckError::DuplicateImage(name.to_string()).into());
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size)
            || !chunk_size.is_multiple_of(4096)
        {
            return Err(CheckError::BadChunkSize {
                image: name.to_string(),
                chunk_size,
            }
            .into());
        }
        Ok(())
    }

    /// Cuts `input` into `chunk_size` chunks (use [`DEFAULT_CHUNK_SIZE`]), writes each
    /// compressed to `chunks/<zsha256>.zst` and records the image.
    pub fn add_image<R: Read>(
        &mut self,
        name: &str,
        mut input: R,
        chunk_size: u64,
        verity: Option<Verity>,
    ) -> Result<&Image, Error> {
        self.check_new_image(name, chunk_size)?;
        let chunks_dir = self.dir.join(CHUNKS_DIR);
        let (level, threads) = (self.level, self.threads);
        let mut hasher = Sha256::new();
        let mut size = 0u64;

        let (chunks, error) = std::thread::scope(|s| {
            let (done_tx, done_rx) = mpsc::channel();
            let mut workers = Vec::new();
            let mut handles = Vec::new();
            for _ in 0..threads {
                // Depth 1 bounds memory to about three chunks per worker.
                let (tx, rx) = mpsc::sync_channel::<(u64, u64, Vec<u8>)>(1);
                workers.push(tx);
                let (done_tx, dir) = (done_tx.clone(), chunks_dir.as_path());
                handles.push(s.spawn(move || compress_worker(rx, done_tx, level, dir)));
            }
            drop(done_tx);

            let mut error = None;
            let mut index = 0u64;
            loop {
                let mut buf = vec![0u8; chunk_size as usize];
                let n = match read_full(&mut input, &mut buf) {
                    Ok(n) => n,
                    Err(source) => {
                        error = Some(Error::Read {
                            image: name.to_string(),
                            source,
                        });
                        break;
                    }
                };
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                hasher.update(&buf);
                // A closed channel means that worker failed; its error is reported below.
                if workers[index as usize % threads]
                    .send((index, size, buf))
                    .is_err()
                {
                    break;
                }
                size += n as u64;
                index += 1;
                if (n as u64) < chunk_size {
                    break;
                }
            }
            drop(workers);

            let mut chunks = Vec::new();
            for result in done_rx {
                match result {
                    Ok(chunk) => chunks.push(chunk),
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            for h in handles {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            }
            (chunks, error)
        });
        if let Some(e) = error {
            return Err(e);
        }
        let mut chunks = chunks;
        chunks.sort_by_key(|c: &Chunk| c.index);
        let image = Image {
            name: name.to_string(),
            size,
            sha256: Hex32(hasher.finalize().into()),
            chunk_size,
            verity,
            chunks,
        };
        image.check()?;
        self.images.push(image);
        Ok(&self.images[self.images.len() - 1])
    }

    /// Starts an image whose chunks the caller compresses itself, e.g. as
    /// several concatenated zstd frames that a client can fetch by Range one
    /// at a time (`block-delta`). Each chunk must still be one valid zstd
    /// stream of exactly its plain bytes: [`PrecompressedImage::push`] checks
    /// that, so publishing and every reader keep working unchanged.
    pub fn begin_precompressed(
        &mut self,
        name: &str,
        chunk_size: u64,
    ) -> Result<PrecompressedImage<'_>, Error> {
        self.check_new_image(name, chunk_size)?;
        Ok(PrecompressedImage {
            writer: self,
            name: name.to_string(),
            chunk_size,
            chunks: Vec::new(),
            size: 0,
            hasher: Sha256::new(),
        })
    }

    /// Makes every chunk durable (they are written without fsync, see
    /// [`store_chunk`]), then writes `manifest.json.sig` and `manifest.json`
    /// (pretty JSON, trailing newline), both durably (temp file, fsync, rename,
    /// fsync of the directory), and returns the manifest path. The manifest is
    /// written last: its presence marks a complete release.
    pub fn finish(self, fields: ManifestFields, keys: &[KeyPair]) -> Result<PathBuf, Error> {
        if keys.is_empty() {
            return Err(Error::NoSigningKeys);
        }
        let manifest = Manifest {
            format: FORMAT,
            board: fields.board,
            arch: fields.arch,
            version: fields.version,
            created: fields.created,
            expires: fields.expires,
            packages: fields.packages,
            images: self.images,
        };
        manifest.check()?;
        let document = manifest.to_json();
        let sigs = sign_document(&document, keys)?;
        // One fsync per chunk here, after the kernel has had the whole build to
        // write them back, instead of one in every worker's write.
        let chunks: BTreeSet<&str> = manifest
            .images
            .iter()
            .flat_map(|i| i.chunks.iter().map(|c| c.file.as_str()))
            .collect();
        for file in chunks {
            durable_file::sync_file(self.dir.join(file))?;
        }
        durable_file::sync_dir(self.dir.join(CHUNKS_DIR))?;
        durable_file::write(self.dir.join(SIGNATURES_FILE), &sigs, RELEASE_FILE)?;
        let path = self.dir.join(MANIFEST_FILE);
        durable_file::write(&path, &document, RELEASE_FILE)?;
        Ok(path)
    }
}

/// An image being added chunk by chunk from caller-compressed bytes; see
/// [`ReleaseWriter::begin_precompressed`].
pub struct PrecompressedImage<'w> {
    writer: &'w mut ReleaseWriter,
    name: String,
    chunk_size: u64,
    chunks: Vec<Chunk>,
    size: u64,
    hasher: Sha256,
}

impl PrecompressedImage<'_> {
    /// Stores the next chunk: `compressed` must decode to exactly `plain`
    /// (one or more zstd frames), and every chunk but the last must be
    /// `chunk_size` plain bytes ([`Image::check`] refuses otherwise).
    pub fn push(&mut self, plain: &[u8], compressed: &[u8]) -> Result<(), Error> {
        let index = self.chunks.len() as u64;
        let decoded = zstd::stream::decode_all(compressed).map_err(|e| Error::ChunkCorrupt {
            index,
            reason: format!("image {}: {e}", self.name),
        })?;
        if decoded != plain {
            return Err(Error::ChunkCorrupt {
                index,
                reason: format!(
                    "image {}: the compressed chunk does not decode to its plain bytes",
                    self.name
                ),
            });
        }
        let zsha256 = Hex32(Sha256::digest(compressed).into());
        let dir = self.writer.dir.join(CHUNKS_DIR);
        store_chunk(&dir.join(format!("{zsha256}.zst")), compressed)?;
        self.hasher.update(plain);
        self.chunks.push(Chunk {
            index,
            offset: self.size,
            size: plain.len() as u64,
            sha256: Hex32(Sha256::digest(plain).into()),
            zsize: compressed.len() as u64,
            zsha256,
            file: chunk_file_name(&zsha256),
        });
        self.size += plain.len() as u64;
        Ok(())
    }

    /// Checks and records the image.
    pub fn finish(self) -> Result<(), Error> {
        let image = Image {
            name: self.name,
            size: self.size,
            sha256: Hex32(self.hasher.finalize().into()),
            chunk_size: self.chunk_size,
            verity: None,
            chunks: self.chunks,
        };
        image.check()?;
        self.writer.images.push(image);
        Ok(())
    }
}

/// Fills `buf` unless the input ends first; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn compress_worker(
    rx: mpsc::Receiver<(u64, u64, Vec<u8>)>,
    done: mpsc::Sender<Result<Chunk, Error>>,
    level: i32,
    chunks_dir: &Path,
) {
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            let _ = done.send(Err(Error::Compress(e.to_string())));
            return;
        }
    };
    for (index, offset, plain) in rx {
        let result = (|| {
            let compressed = compressor
                .compress(&plain)
                .map_err(|e| Error::Compress(e.to_string()))?;
            let zsha256 = Hex32(Sha256::digest(&compressed).into());
            let file = chunk_file_name(&zsha256);
            store_chunk(&chunks_dir.join(format!("{zsha256}.zst")), &compressed)?;
            Ok(Chunk {
                index,
                offset,
                size: plain.len() as u64,
                sha256: Hex32(Sha256::digest(&plain).into()),
                zsize: compressed.len() as u64,
                zsha256,
                file,
            })
        })();
        let failed = result.is_err();
        // Stop on the first error; the reader notices the closed channel.
        if done.send(result).is_err() || failed {
            return;
        }
    }
}

/// Release files are meant to be published: mode 0644.
const RELEASE_FILE: durable_file::Options = durable_file::Options::new(0o644);

/// Writes a content-addressed chunk unless an intact copy is already there. Reused
/// files are hashed, so a leftover from a crashed run is replaced, not published.
///
/// Atomic (readers never see a partial chunk) but not fsynced: a build writes
/// hundreds of chunks, and an fsync in every write made writing them several
/// times slower. [`ReleaseWriter::finish`] fsyncs them all before the manifest
/// names them; a chunk lost to a crash before that is rewritten by the next
/// build (the comparison above) and refused by `release-repo` at publish (it
/// verifies every chunk against the manifest).
fn store_chunk(path: &Path, compressed: &[u8]) -> Result<(), Error> {
    if let Ok(existing) = fs::read(path)
        && existing == compressed
    {
        return Ok(());
    }
    let opts = durable_file::Options {
        sync: false,
        ..RELEASE_FILE
    };
    Ok(durable_file::write(path, compressed, opts)?)
}
