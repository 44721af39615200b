//! Verified reading of chunks and whole images.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::MAX_CHUNK_SIZE;
use crate::{Chunk, Error, Image, Manifest};

/// Checks one downloaded chunk against its signed entry and decompresses it.
pub struct ChunkVerifier<'a> {
    chunk: &'a Chunk,
}

impl<'a> ChunkVerifier<'a> {
    pub fn new(chunk: &'a Chunk) -> Self {
        ChunkVerifier { chunk }
    }

    /// Checks `compressed` against the signed `zsize` and `zsha256` *before*
    /// decompressing (so zstd never sees unauthenticated bytes), decompresses at
    /// most `size` bytes (refusing endless data), and checks the plain `sha256`.
    pub fn verify(&self, compressed: &[u8]) -> Result<Vec<u8>, Error> {
        let c = self.chunk;
        if compressed.len() as u64 != c.zsize {
            return Err(Error::ChunkZsize {
                index: c.index,
                expected: c.zsize,
                actual: compressed.len() as u64,
            });
        }
        if Sha256::digest(compressed)[..] != c.zsha256.0 {
            return Err(Error::ChunkZsha256 { index: c.index });
        }
        let corrupt = |e: io::Error| Error::ChunkCorrupt {
            index: c.index,
            reason: e.to_string(),
        };
        // Capacity is a hint only; the hard limit is the `take` below.
        let mut plain = Vec::with_capacity(c.size.min(MAX_CHUNK_SIZE) as usize);
        let decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(corrupt)?;
        // One byte more than signed tells "too large" apart from "exactly right".
        decoder
            .take(c.size.saturating_add(1))
            .read_to_end(&mut plain)
            .map_err(corrupt)?;
        let actual = plain.len() as u64;
        if actual > c.size {
            return Err(Error::ChunkTooLarge {
                index: c.index,
                size: c.size,
            });
        }
        if actual < c.size {
            return Err(Error::ChunkShort {
                index: c.index,
                expected: c.size,
                actual,
            });
        }
        if Sha256::digest(&plain)[..] != c.sha256.0 {
            return Err(Error::ChunkSha256 { index: c.index });
        }
        Ok(plain)
    }
}

/// Reads `dir/<chunk.file>`, refusing a file of another size than the signed zsize.
fn read_chunk_file(dir: &Path, chunk: &Chunk) -> Result<Vec<u8>, Error> {
    let path = dir.join(&chunk.file);
    let file = std::fs::File::open(&path).map_err(Error::io(&path))?;
    let mut buf = Vec::with_capacity(chunk.zsize.min(MAX_CHUNK_SIZE * 2) as usize);
    file.take(chunk.zsize.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(Error::io(&path))?;
    if buf.len() as u64 != chunk.zsize {
        return Err(Error::ChunkZsize {
            index: chunk.index,
            expected: chunk.zsize,
            actual: buf.len() as u64,
        });
    }
    Ok(buf)
}

/// A `Read` over an image of a local release directory. Every chunk is verified
/// before any of its bytes are returned, and the whole-image sha256 is checked before
/// the last chunk is returned. Errors come back as `io::Error`s wrapping [`Error`]
/// (`e.get_ref()` / `downcast`).
pub struct ImageReader {
    dir: PathBuf,
    image: Image,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    hasher: Sha256,
}

/// Opens `name` of `manifest` in the release directory `dir` for verified reading.
pub fn read_image(
    dir: impl AsRef<Path>,
    manifest: &Manifest,
    name: &str,
) -> Result<ImageReader, Error> {
    let image = manifest.image(name)?.clone();
    // The fields are public, so do not rely on the caller having checked them: this
    // guarantees content-addressed file names and bounded sizes.
    image.check()?;
    if image.chunks.is_empty() && Sha256::digest([])[..] != image.sha256.0 {
        return Err(Error::ImageSha256(image.name));
    }
    Ok(ImageReader {
        dir: dir.as_ref().to_path_buf(),
        image,
        next: 0,
        buf: Vec::new(),
        pos: 0,
        hasher: Sha256::new(),
    })
}

impl ImageReader {
    /// The next verified chunk, or `None` after the last one.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        let Some(chunk) = self.image.chunks.get(self.next) else {
            return Ok(None);
        };
        let compressed = read_chunk_file(&self.dir, chunk)?;
        let plain = ChunkVerifier::new(chunk).verify(&compressed)?;
        self.hasher.update(&plain);
        self.next += 1;
        if self.next == self.image.chunks.len() {
            let whole = std::mem::take(&mut self.hasher).finalize();
            if whole[..] != self.image.sha256.0 {
                return Err(Error::ImageSha256(self.image.name.clone()));
            }
        }
        Ok(Some(plain))
    }

    /// Size of the whole image in bytes.
    pub fn size(&self) -> u64 {
        self.image.size
    }
}

impl Read for ImageReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(plain) => {
                    self.buf = plain;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes the verified image `name` to `out` and returns its size. On error, `out`
/// may hold a verified prefix of the image; nothing unverified is ever written.
pub fn extract_image<W: Write>(
    dir: impl AsRef<Path>,
    manifest: &Manifest,
    name: &str,
    out: &mut W,
) -> Result<u64, Error> {
    let mut reader = read_image(dir, manifest, name)?;
    let mut written = 0u64;
    while let Some(plain) = reader.next_chunk()? {
        out.write_all(&plain).map_err(Error::Write)?;
        written += plain.len() as u64;
    }
    out.flush().map_err(Error::Write)?;
    Ok(written)
}
