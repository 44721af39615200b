use std::io;
use std::path::PathBuf;

/// Everything the image store can refuse or fail at. Messages name the image,
/// file or URL concerned and, where there is one, the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid image reference {reference:?}: {problem}")]
    Reference { reference: String, problem: String },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: registry answered HTTP {status}: {message}")]
    Registry {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: authentication failed: {message}")]
    Auth { url: String, message: String },
    #[error(
        "{what}: digest mismatch: expected {expected}, got {actual}; the data was tampered with or corrupted, nothing was stored"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{what}: size mismatch: the descriptor says {expected} bytes, got {actual}; nothing was stored"
    )]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: String,
    },
    #[error("{what}: invalid manifest or config: {problem}")]
    Manifest { what: String, problem: String },
    #[error("{reference}: no image for platform {platform} (the index offers: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error(
        "{what}: the image is built for {image}, this host is {host}; pull or import the {host} image (a multi-platform image picks it by itself); nothing was stored"
    )]
    WrongPlatform {
        what: String,
        image: String,
        host: String,
    },
    #[error("no image {0:?} in the store; see the list of images with `cairn-run images`")]
    NotFound(String),
    #[error(
        "{query:?} is ambiguous: it matches {matches}; give more digest characters or the name"
    )]
    Ambiguous { query: String, matches: String },
    #[error(
        "image {name} is not trusted: no trust rule matches it; run `cairn-run trust add {name} --key <file.public>` (or `--accept-anything`)"
    )]
    Untrusted { name: String },
    #[error(
        "image {name} needs a signature by a key trusted for {prefix:?}, and {problem}; sign it with `cairn-run sign` and pass --signature, or push the signature to the registry"
    )]
    SignatureRequired {
        name: String,
        prefix: String,
        problem: String,
    },
    #[error("signature for image {name} rejected: {problem}")]
    BadSignature { name: String, problem: String },
    #[error("trust policy {}: {problem}", path.display())]
    Policy { path: PathBuf, problem: String },
    #[error("layer {layer}: refused entry {entry:?}: {problem}")]
    UnsafeLayer {
        layer: String,
        entry: String,
        problem: String,
    },
    #[error(
        "layer {layer}: {what} exceeds the limit of {limit}; raise the limit in the unpack options if the image is trusted to be that big"
    )]
    LayerLimit {
        layer: String,
        what: String,
        limit: u64,
    },
    #[error("layer {layer}: {problem}")]
    Layer { layer: String, problem: String },
    #[error("import {}: {problem}", path.display())]
    Import { path: PathBuf, problem: String },
    #[error("{0}")]
    Key(#[from] release_manifest::Error),
    /// Writing or syncing a store or policy file (the step and the path are
    /// in the message).
    #[error(transparent)]
    File(#[from] durable_file::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
