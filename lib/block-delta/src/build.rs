//! Building the index and the blocks image from a release image (the builder's
//! side; two sequential reads of the image).

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::format::{
    BLOCK_SIZE, DigestKind, FormatError, Frame, Index, MAX_DIGEST_LEN, MIN_DIGEST_LEN,
};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("block index of image {image:?}: reading it failed: {source}")]
    Read {
        image: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "block index of image {image:?}: {size} bytes is not whole 4096-byte blocks; pad the image"
    )]
    NotBlocks { image: String, size: u64 },
    #[error("block index of image {image:?}: zstd failed: {problem}")]
    Compress { image: String, problem: String },
    #[error(
        "block index of image {image:?}: chunk size {chunk_size} is not whole frames of {frame_bytes} bytes"
    )]
    ChunkSize {
        image: String,
        chunk_size: u64,
        frame_bytes: u64,
    },
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The sink (the release writer) refused a chunk.
    #[error("block index of image {image:?}: storing a blocks chunk failed: {problem}")]
    Sink { image: String, problem: String },
}

/// The shortest digest length (from [`MIN_DIGEST_LEN`], doubling) under which
/// distinct blocks have distinct digests: a shared prefix would make a host
/// copy the wrong block (caught before the flip, but the delta would be lost).
fn digest_len(distinct: &[[u8; 32]]) -> usize {
    let mut len = MIN_DIGEST_LEN;
    while len < MAX_DIGEST_LEN {
        let mut seen = std::collections::HashSet::with_capacity(distinct.len());
        if distinct.iter().all(|d| seen.insert(&d[..len])) {
            return len;
        }
        len = (len * 2).min(MAX_DIGEST_LEN);
    }
    MAX_DIGEST_LEN
}

/// Receives each chunk of the blocks image: `(plain, concatenated frames)`.
pub type ChunkSink<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), String> + 'a;

/// Reads the image `input` (`size` bytes, whole blocks) twice: once to hash
/// every block (`kind`: [`DigestKind::Verity`] with the image's dm-verity
/// salt for a format 3 index, whose digests are the image's level-0
/// hashes), once to compress its distinct blocks, in order of first
/// occurrence, into zstd frames of `frame_blocks` blocks. The frames are
/// handed to `sink` as chunks of `chunk_size` plain bytes: `(plain,
/// concatenated frames)`. The index keeps `frame_hash_len` bytes of each
/// frame's sha256. Returns the index. Deterministic: single-threaded zstd at
/// `level`.
#[allow(clippy::too_many_arguments)]
pub fn build<R: Read + Seek>(
    image: &str,
    kind: DigestKind,
    input: &mut R,
    size: u64,
    frame_blocks: u32,
    frame_hash_len: usize,
    chunk_size: u64,
    level: i32,
    sink: &mut ChunkSink<'_>,
) -> Result<Index, BuildError> {
    let read_err = |source| BuildError::Read {
        image: image.to_string(),
        source,
    };
    if !size.is_multiple_of(BLOCK_SIZE) {
        return Err(BuildError::NotBlocks {
            image: image.to_string(),
            size,
        });
    }
    let frame_bytes = frame_blocks as u64 * BLOCK_SIZE;
    if frame_blocks == 0 || chunk_size == 0 || !chunk_size.is_multiple_of(frame_bytes) {
        return Err(BuildError::ChunkSize {
            image: image.to_string(),
            chunk_size,
            frame_bytes,
        });
    }
    let blocks = size / BLOCK_SIZE;
    let mut piece = vec![0u8; 1 << 20];

    // Pass 1: the full digest of every block; distinct ones in first-occurrence order.
    let mut full = Vec::with_capacity(blocks as usize);
    let mut first: HashMap<[u8; 32], ()> = HashMap::new();
    let mut distinct = Vec::new();
    input.seek(SeekFrom::Start(0)).map_err(read_err)?;
    each_piece(input, size, &mut piece, |bytes| {
        for b in bytes.chunks_exact(BLOCK_SIZE as usize) {
            let d = kind.digest(b);
            if first.insert(d, ()).is_none() {
                distinct.push(d);
            }
            full.push(d);
        }
    })
    .map_err(read_err)?;
    let dl = digest_len(&distinct);
    let digests: Vec<u8> = full.iter().flat_map(|d| d[..dl].to_vec()).collect();

    // Pass 2: the distinct blocks, as they first appear, into frames and chunks.
    let compress_err = |e: io::Error| BuildError::Compress {
        image: image.to_string(),
        problem: e.to_string(),
    };
    let mut zctx = zstd::bulk::Compressor::new(level).map_err(compress_err)?;
    let mut frames = Vec::new();
    let mut written: std::collections::HashSet<[u8; 32]> = Default::default();
    let mut frame = Vec::with_capacity(frame_bytes as usize);
    let (mut plain, mut packed) = (Vec::new(), Vec::new());
    let mut at = 0usize;
    let mut failure = None;
    input.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut flush_frame = |frame: &mut Vec<u8>,
                           plain: &mut Vec<u8>,
                           packed: &mut Vec<u8>,
                           last: bool|
     -> Result<(), BuildError> {
        if !frame.is_empty() {
            let z = zctx.compress(frame).map_err(compress_err)?;
            frames.push(Frame {
                zsize: z.len() as u32,
                zsha256: Sha256::digest(&z).into(),
            });
            plain.extend_from_slice(frame);
            packed.extend_from_slice(&z);
            frame.clear();
        }
        if !plain.is_empty() && (last || plain.len() as u64 == chunk_size) {
            sink(plain, packed).map_err(|problem| BuildError::Sink {
                image: image.to_string(),
                problem,
            })?;
            plain.clear();
            packed.clear();
        }
        Ok(())
    };
    each_piece(input, size, &mut piece, |bytes| {
        for b in bytes.chunks_exact(BLOCK_SIZE as usize) {
            let d = full[at];
            at += 1;
            if failure.is_some() || !written.insert(d) {
                continue;
            }
            frame.extend_from_slice(b);
            if frame.len() as u64 == frame_bytes
                && let Err(e) = flush_frame(&mut frame, &mut plain, &mut packed, false)
            {
                failure = Some(e);
            }
        }
    })
    .map_err(read_err)?;
    if let Some(e) = failure {
        return Err(e);
    }
    // A second read that disagrees with the first (the file changed) would
    // give frames that do not match the digests.
    if at as u64 != blocks || written.len() != distinct.len() {
        return Err(read_err(io::Error::other(
            "the image changed between the two reads",
        )));
    }
    flush_frame(&mut frame, &mut plain, &mut packed, true)?;
    Ok(Index::new(
        kind,
        dl,
        frame_blocks,
        frame_hash_len,
        digests,
        frames,
    )?)
}

/// What [`add_to_release`] added, for the build log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    pub blocks: u64,
    pub unique_blocks: u64,
    pub digest_len: usize,
    /// Plain size of the index a host fetches before it can plan.
    pub index_bytes: u64,
    /// Compressed size of the blocks image.
    pub blocks_zsize: u64,
}

/// Adds `<image>.blocks` and `<image>.blockindex` for the image file at
/// `path` (already added as `image`) to a release being written, with the
/// defaults ([`DEFAULT_FRAME_BLOCKS`](crate::DEFAULT_FRAME_BLOCKS), chunks of
/// [`release_manifest::DEFAULT_CHUNK_SIZE`], zstd `level`). `kind`:
/// [`DigestKind::Verity`] with the salt of the image's dm-verity tree (a
/// format 3 index, what a host plans from its own tree), or
/// [`DigestKind::Sha256`] (format 2).
pub fn add_to_release(
    writer: &mut release_manifest::ReleaseWriter,
    image: &str,
    path: &std::path::Path,
    kind: DigestKind,
    level: i32,
) -> Result<Added, BuildError> {
    let read_err = |source| BuildError::Read {
        image: format!("{image} ({})", path.display()),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let chunk_size = release_manifest::DEFAULT_CHUNK_SIZE;
    let sink_err = |e: release_manifest::Error| e.to_string();
    let mut blocks_zsize = 0u64;
    let index = {
        let mut blocks = writer
            .begin_precompressed(&crate::blocks_image_name(image), chunk_size)
            .map_err(|e| BuildError::Sink {
                image: image.to_string(),
                problem: e.to_string(),
            })?;
        let index = build(
            image,
            kind,
            &mut io::BufReader::with_capacity(1 << 20, &mut file),
            size,
            crate::DEFAULT_FRAME_BLOCKS,
            crate::DEFAULT_FRAME_HASH_LEN,
            chunk_size,
            level,
            &mut |plain, packed| {
                blocks_zsize += packed.len() as u64;
                blocks.push(plain, packed).map_err(sink_err)
            },
        )?;
        blocks.finish().map_err(|e| BuildError::Sink {
            image: image.to_string(),
            problem: e.to_string(),
        })?;
        index
    };
    let bytes = index.encode();
    writer
        .add_image(
            &crate::index_image_name(image),
            &bytes[..],
            release_manifest::DEFAULT_CHUNK_SIZE,
            None,
        )
        .map_err(|e| BuildError::Sink {
            image: image.to_string(),
            problem: e.to_string(),
        })?;
    Ok(Added {
        blocks: index.blocks(),
        unique_blocks: index.unique_blocks(),
        digest_len: index.digest_len(),
        index_bytes: bytes.len() as u64,
        blocks_zsize,
    })
}

/// Calls `f` with consecutive pieces of the first `size` bytes of `input`.
fn each_piece<R: Read>(
    input: &mut R,
    size: u64,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        input.read_exact(&mut buf[..n])?;
        f(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{LocalBlocks, MAX_RANGE, Source, plan};

    fn block(x: u32) -> Vec<u8> {
        (0..BLOCK_SIZE as u32)
            .map(|i| (i.wrapping_mul(x) >> 3) as u8 ^ x as u8)
            .collect()
    }

    /// Builds, then rebuilds every target block from the plan against
    /// `local`: copied ones from `local`, fetched ones by decoding the frames
    /// from the chunk files as a host would (sha256 first).
    #[test]
    fn a_plan_reproduces_the_image_from_local_blocks_and_frames() {
        let contents: Vec<u32> = (0..100).map(|i| [i, 7, 3, i * 5][i as usize % 4]).collect();
        let img: Vec<u8> = contents.iter().flat_map(|&x| block(x)).collect();
        let mut chunks: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let index = build(
            "usr",
            DigestKind::Sha256,
            &mut io::Cursor::new(&img),
            img.len() as u64,
            4,
            32,
            4 * 4096 * 3,
            3,
            &mut |p, z| {
                chunks.push((p.to_vec(), z.to_vec()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(index.digest_len(), 8);
        assert_eq!(index.blocks(), 100);
        let plain: Vec<u8> = chunks.iter().flat_map(|c| c.0.clone()).collect();
        assert_eq!(plain.len() as u64, index.unique_blocks() * BLOCK_SIZE);
        // Each chunk file is one zstd stream of its frames.
        for (p, z) in &chunks {
            assert_eq!(&zstd::stream::decode_all(&z[..]).unwrap(), p);
        }
        let blocks = release_manifest::Image {
            name: "usr.blocks".into(),
            size: plain.len() as u64,
            sha256: release_manifest::Hex32([0; 32]),
            chunk_size: 4 * 4096 * 3,
            verity: None,
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(i, (p, z))| release_manifest::Chunk {
                    index: i as u64,
                    offset: 0,
                    size: p.len() as u64,
                    sha256: release_manifest::Hex32([0; 32]),
                    zsize: z.len() as u64,
                    zsha256: release_manifest::Hex32([0; 32]),
                    file: format!("{i}"),
                })
                .collect(),
        };
        let locs = crate::locate(&index, &blocks).unwrap();
        let decoded = Index::decode(&index.encode()).unwrap();
        assert_eq!(decoded, index);

        let old: Vec<u8> = (0..60)
            .flat_map(|i| block([i, 7, 3, 1000][i as usize % 4]))
            .collect();
        let local = LocalBlocks::hash(&old);
        let p = plan(&index, &locs, &local, 0, MAX_RANGE, &[]);
        assert!(p.copied > 0 && p.fetched > 0, "{p:?}");
        let bs = BLOCK_SIZE as usize;
        for (b, s) in p.sources.iter().enumerate() {
            let got = match *s {
                Source::Local(n) => old[n as usize * bs..][..bs].to_vec(),
                Source::Fetch { frame, block } => {
                    let l = &locs[frame];
                    let file: usize = l.file.parse().unwrap();
                    let z = &chunks[file].1[l.offset as usize..][..l.zsize as usize];
                    assert_eq!(<[u8; 32]>::from(Sha256::digest(z)), l.zsha256);
                    assert_eq!(l.zsha_len, 32);
                    let f = zstd::bulk::decompress(z, l.blocks as usize * bs).unwrap();
                    f[block as usize * bs..][..bs].to_vec()
                }
                Source::Skip => panic!("block {b} skipped"),
            };
            assert_eq!(got, img[b * bs..][..bs], "block {b} from {s:?}");
        }
    }

    /// The two images land in a signed release; the index read back from it
    /// locates frames that decode to the image's blocks.
    #[test]
    fn add_to_release_writes_a_signed_index_and_blocks_image() {
        let dir = tempfile::tempdir().unwrap();
        let img: Vec<u8> = (0..300u32).flat_map(|i| block(i % 250)).collect();
        let path = dir.path().join("usr.img");
        std::fs::write(&path, &img).unwrap();
        let rel = dir.path().join("release");
        let mut w = release_manifest::ReleaseWriter::create(&rel).unwrap();
        let salt = [0x11; 32];
        let kind = DigestKind::Verity { salt };
        let added = crate::add_to_release(&mut w, "usr", &path, kind, 3).unwrap();
        assert_eq!((added.blocks, added.unique_blocks), (300, 250));
        let key = release_manifest::KeyPair::from_seed([3; 32]);
        w.finish(
            release_manifest::ManifestFields {
                board: "b".into(),
                arch: "x86_64".into(),
                version: release_manifest::Version::parse("1.0.0").unwrap(),
                created: 1,
                expires: None,
                packages: vec![],
            },
            std::slice::from_ref(&key),
        )
        .unwrap();
        let m = release_manifest::Manifest::load(&rel, &[key.public()], 1).unwrap();
        let mut bytes = Vec::new();
        release_manifest::read_image(&rel, &m, "usr.blockindex")
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes.len() as u64, added.index_bytes);
        let index = Index::decode(&bytes).unwrap();
        assert_eq!(index.digests(), kind);
        let locs = crate::locate(&index, m.image("usr.blocks").unwrap()).unwrap();
        let bs = BLOCK_SIZE as usize;
        for b in [0u64, 17, 260, 299] {
            let ord = index.ordinal(b);
            let l = &locs[(ord / index.frame_blocks() as u64) as usize];
            let file = std::fs::read(rel.join(&l.file)).unwrap();
            let z = &file[l.offset as usize..][..l.zsize as usize];
            let f = zstd::bulk::decompress(z, l.blocks as usize * bs).unwrap();
            let k = (ord % index.frame_blocks() as u64) as usize;
            assert_eq!(f[k * bs..][..bs], img[b as usize * bs..][..bs], "block {b}");
            // The digest is the prefix of the block's dm-verity level-0 hash.
            let mut h = Sha256::new();
            h.update(salt);
            h.update(&img[b as usize * bs..][..bs]);
            assert_eq!(
                index.digest(b),
                &h.finalize()[..index.digest_len()],
                "block {b}"
            );
        }
    }

    #[test]
    fn digest_len_grows_on_a_shared_prefix() {
        let a = [1u8; 32];
        let mut b = [1u8; 32];
        b[20] = 2;
        let mut c = [1u8; 32];
        c[31] = 2;
        // (distinct digests, chosen length)
        let table: [(&[[u8; 32]], usize); 3] = [(&[a], 8), (&[a, b], 32), (&[a, c], 32)];
        for (d, want) in table {
            assert_eq!(digest_len(d), want);
        }
        let mut e = [1u8; 32];
        e[10] = 2;
        assert_eq!(digest_len(&[a, e]), 16);
    }

    #[test]
    fn refuses_partial_blocks() {
        let img = vec![0u8; 5000];
        let r = build(
            "usr",
            DigestKind::Sha256,
            &mut io::Cursor::new(&img),
            5000,
            4,
            8,
            4 * 4096,
            3,
            &mut |_, _| Ok(()),
        );
        assert!(matches!(r, Err(BuildError::NotBlocks { .. })), "{r:?}");
    }
}
