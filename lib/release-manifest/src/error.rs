use std::io;
use std::path::PathBuf;

/// Everything this crate can refuse. Each attack on a release maps to its own variant
/// so the agent can log precisely what happened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // Keys.
    #[error("{}: {problem}", path.display())]
    KeyFile { path: PathBuf, problem: String },
    #[error("{} already exists; refusing to overwrite a key (move it away or choose another name)", path.display())]
    KeyExists { path: PathBuf },
    #[error("invalid key name {0:?}: use letters, digits, '.', '_' and '-'")]
    KeyName(String),
    #[error("invalid public key: {0}")]
    BadPublicKey(String),
    #[error("could not get random bytes from the operating system: {0}")]
    Random(String),

    // Signatures.
    #[error("malformed signature file: {0}")]
    MalformedSignatures(String),
    #[error(
        "threshold {threshold} is impossible with {trusted} trusted keys (it must be 1..={trusted})"
    )]
    InvalidThreshold { threshold: usize, trusted: usize },
    #[error("no signature by a trusted key: signed by {signed_by:?}, trusted keys are {trusted:?}")]
    NoTrustedSignature {
        signed_by: Vec<String>,
        trusted: Vec<String>,
    },
    #[error(
        "the signatures by trusted keys {keyids:?} do not match the document: it was modified or the signatures are corrupt"
    )]
    BadSignature { keyids: Vec<String> },
    #[error(
        "only {valid} of the {required} required signatures by distinct trusted keys are valid"
    )]
    TooFewSignatures { valid: usize, required: usize },
    #[error("no signing keys given: a release must be signed")]
    NoSigningKeys,

    // Manifest.
    #[error("manifest is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("manifest does not match the format: {0}")]
    ManifestSchema(String),
    #[error("unsupported manifest format {0}: this build reads format 1 (update the agent)")]
    UnsupportedFormat(u64),
    #[error("invalid manifest: {0}")]
    Invalid(#[from] CheckError),
    #[error(
        "invalid version {0:?}: expected dotted numbers with an optional -suffix, e.g. 1.2.3 or 1.2.3-rc1"
    )]
    BadVersion(String),
    #[error("release expired at {expires} (now {now}): refusing a possibly frozen update")]
    Expired { expires: u64, now: u64 },
    #[error("the release has no image named {0:?}")]
    UnknownImage(String),

    // Payload.
    #[error("chunk {index}: {actual} compressed bytes, the manifest signs {expected}")]
    ChunkZsize {
        index: u64,
        expected: u64,
        actual: u64,
    },
    #[error(
        "chunk {index}: compressed bytes do not match the signed zsha256 (tampered or corrupt download)"
    )]
    ChunkZsha256 { index: u64 },
    #[error(
        "chunk {index}: decompresses to more than the signed {size} bytes (refusing endless data)"
    )]
    ChunkTooLarge { index: u64, size: u64 },
    #[error("chunk {index}: decompresses to {actual} bytes, the manifest signs {expected}")]
    ChunkShort {
        index: u64,
        expected: u64,
        actual: u64,
    },
    #[error("chunk {index}: not valid zstd data: {reason}")]
    ChunkCorrupt { index: u64, reason: String },
    #[error("chunk {index}: decompressed bytes do not match the signed sha256")]
    ChunkSha256 { index: u64 },
    #[error("image {0:?}: the whole image does not match the signed sha256")]
    ImageSha256(String),
    #[error("writing the image: {0}")]
    Write(#[source] io::Error),

    // Writer.
    #[error("{} already exists: write the release into a new directory", path.display())]
    ReleaseExists { path: PathBuf },
    #[error("reading the input of image {image:?}: {source}")]
    Read {
        image: String,
        #[source]
        source: io::Error,
    },
    #[error("zstd compression failed: {0}")]
    Compress(String),
    /// Writing an output file (the step and the path are in the message).
    #[error(transparent)]
    File(#[from] durable_file::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Internal inconsistencies found by [`crate::Manifest::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("field {0} is empty")]
    Empty(&'static str),
    #[error("{field} {value:?} has characters other than letters, digits, '.', '_', '-', '+'")]
    BadName { field: &'static str, value: String },
    #[error("expires ({expires}) is not after created ({created})")]
    Expiry { created: u64, expires: u64 },
    #[error("package entry {0:?} is not name=version")]
    BadPackage(String),
    #[error("package {0:?} is listed twice")]
    DuplicatePackage(String),
    #[error("the release has no images")]
    NoImages,
    #[error("image {0:?} is listed twice")]
    DuplicateImage(String),
    #[error("image {image:?}: chunk_size {chunk_size} must be a multiple of 4096 between {min} and {max}", min = crate::MIN_CHUNK_SIZE, max = crate::MAX_CHUNK_SIZE)]
    BadChunkSize { image: String, chunk_size: u64 },
    #[error("image {image:?}: chunk at position {position} has index {index}")]
    ChunkIndex {
        image: String,
        position: usize,
        index: u64,
    },
    #[error(
        "image {image:?}: chunk {index} starts at {offset}, expected {expected} (chunks must cover the image contiguously)"
    )]
    ChunkOffset {
        image: String,
        index: u64,
        offset: u64,
        expected: u64,
    },
    #[error(
        "image {image:?}: chunk {index} has size {size}; every chunk but the last must be chunk_size, the last 1..=chunk_size"
    )]
    ChunkSize {
        image: String,
        index: u64,
        size: u64,
    },
    #[error(
        "image {image:?}: chunk {index} has zsize {zsize}, impossible for {size} bytes of zstd"
    )]
    ChunkZsize {
        image: String,
        index: u64,
        size: u64,
        zsize: u64,
    },
    #[error("image {image:?}: chunk {index} file {file:?} must be \"chunks/<zsha256>.zst\"")]
    ChunkFile {
        image: String,
        index: u64,
        file: String,
    },
    #[error("image {image:?}: chunks cover {covered} bytes, the image has {size}")]
    Coverage {
        image: String,
        covered: u64,
        size: u64,
    },
    #[error("image {image:?}: verity {problem}")]
    Verity { image: String, problem: String },
}
