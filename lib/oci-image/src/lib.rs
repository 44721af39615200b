//! OCI images for cairn-run: a content-addressed store, registry pull, import of
//! OCI layouts/archives and docker archives, safe layer unpacking, and trust by
//! image-name prefix with ed25519 signatures.
//!
//! Every blob is verified by digest and size before use; every image is built in
//! `ROOT/tmp` and renamed into place, so a crash or a refused image leaves nothing
//! half-written under a name. See [`Store`] for the layout, [`TrustPolicy`] for
//! the policy file and [`trust::signature_payload`] for what a signature covers.
//!
//! # Names
//! Images are stored under `registry/repository:tag` with Docker's defaults
//! (`alpine` = `docker.io/library/alpine:latest`). Trust rules and signatures are
//! about `registry/repository` (no tag). Plain HTTP is used for loopback
//! registries (and with [`PullOptions::insecure_http`]), HTTPS (rustls, webpki
//! roots; cargo feature `tls`, on by default) otherwise. Credentials
//! ([`PullOptions::auth`]) are sent only over HTTPS, to the registry or the
//! token service it names; an `Authorization` header never follows a
//! redirect to another host, and HTTPS is never downgraded by a redirect.
//! Over plain HTTP pulls are anonymous.
//!
//! # Trust policy file (JSON)
//! ```json
//! {"format": 1, "rules": [
//!   {"prefix": "docker.io/library/", "accept_anything": true},
//!   {"prefix": "ghcr.io/acme", "keys": ["cairn-ed25519-public <64 hex>"]},
//!   {"prefix": "*", "keys": ["cairn-ed25519-public <64 hex>"]}
//! ]}
//! ```
//! The longest matching prefix decides (`*` is the shortest); a prefix matches at
//! a path boundary (`ghcr.io/acme` covers `ghcr.io/acme/app`, not
//! `ghcr.io/acmecorp/app`). No matching rule: refused. A missing file is an empty
//! policy.
//!
//! # Signatures
//! A signature file is JSON: `{"format": "cairn-image-signature-v1", "name":
//! "<registry/repository>", "digest": "sha256:<manifest>", "signatures":
//! [{"keyid", "sig"}]}`, where `sig` is ed25519 (release-manifest's key files)
//! over [`trust::signature_payload`]. Sources: a file given to pull/import, or
//! the registry tag `sha256-<hex>.sig` (an OCI image whose one layer, media type
//! [`manifest::SIGNATURE_LAYER`], is the file; see [`push_signature`]). A
//! signature over a multi-platform index also covers the platform images it
//! lists. Signatures are kept in the image's record, so [`Store::verify_trust`]
//! works offline.

mod auth;
mod digest;
mod error;
mod import;
pub mod manifest;
mod reference;
mod registry;
mod store;
pub mod trust;
pub mod unpack;

pub use auth::{Challenge, parse_challenge};
pub use error::Error;
pub use manifest::{ImageConfig, Platform};
pub use reference::{Reference, is_loopback_host};
pub use registry::{Credentials, Registry};
/// The key types signatures use (as made by `cairn-build keygen`).
pub use release_manifest::{KeyPair, PublicKey};
pub use store::{
    DEFAULT_ROOT, GcReport, Image, PRIVATE_DIR_MODE, PullOptions, Store, private_dir,
    push_signature, signature_tag,
};
pub use trust::{Decision, Requirement, Signature, TrustPolicy, TrustRule, sign};
pub use unpack::{UnpackOptions, UnpackReport};
