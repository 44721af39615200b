//! Ed25519 key files.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::sig::SignatureEntry;

const SECRET_TAG: &str = "cairn-ed25519-secret";
const PUBLIC_TAG: &str = "cairn-ed25519-public";
/// Key files are one short line; anything bigger is not a key file.
const MAX_KEY_FILE: u64 = 1024;

/// A signing key. `Debug` shows only the key id, never the secret.
#[derive(Clone)]
pub struct KeyPair {
    signing: SigningKey,
}

/// A trusted verification key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

fn key_id_of(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    // Lowercase only: one spelling per key keeps files diffable and greppable.
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Reads a small key file; refuses anything that cannot be a key line.
fn read_key_file(path: &Path) -> Result<String, Error> {
    let file = fs::File::open(path).map_err(Error::io(path))?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE)
        .read_to_string(&mut text)
        .map_err(|_| key_err(path, "is not a text key file"))?;
    Ok(text)
}

fn key_err(path: &Path, problem: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Splits `<tag> <hex>` with an optional single trailing newline.
fn key_line<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let (t, hex) = line.split_once(' ')?;
    (t == tag).then_some(hex)
}

impl KeyPair {
    /// A new key from the operating system's random generator.
    pub fn generate() -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The key for a 32-byte seed (the secret key bytes).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        KeyPair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Loads a `cairn-ed25519-secret` file, which must not be accessible to group or others.
    pub fn load_secret(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let mode = fs::metadata(path)
            .map_err(Error::io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(key_err(
                path,
                format!(
                    "secret key is accessible to other users (mode {:o}); run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
        let text = read_key_file(path)?;
        if key_line(&text, PUBLIC_TAG).is_some() {
            return Err(key_err(
                path,
                "this is a public key; signing needs the matching .secret file",
            ));
        }
        let seed = key_line(&text, SECRET_TAG)
            .and_then(parse_hex32)
            .ok_or_else(|| {
                key_err(
                    path,
                    format!(
                        "not a Cairn secret key: expected one line \"{SECRET_TAG} <64 lowercase hex digits>\"; generate a key pair with KeyPair::write"
                    ),
                )
            })?;
        Ok(Self::from_seed(seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.signing.verifying_key(),
        }
    }

    /// First 16 hex characters of sha256(public key).
    pub fn key_id(&self) -> String {
        self.public().key_id()
    }

    /// Signs `message` (deterministic, as ed25519 is).
    /// The 32-byte secret seed, for signers of other formats (the boot files'
    /// `boot.sig`, see the boot-sig crate). Never log or store it elsewhere.
    pub fn seed(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    pub fn sign(&self, message: &[u8]) -> SignatureEntry {
        SignatureEntry {
            keyid: self.key_id(),
            sig: hex::encode(self.signing.sign(message).to_bytes()),
        }
    }

    /// Writes `<dir>/<name>.secret` (mode 0600) and `<dir>/<name>.public` (0644),
    /// refusing to overwrite either. Returns (secret path, public path).
    pub fn write(&self, dir: impl AsRef<Path>, name: &str) -> Result<(PathBuf, PathBuf), Error> {
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(Error::KeyName(name.to_string()));
        }
        let dir = dir.as_ref();
        let secret = dir.join(format!("{name}.secret"));
        let public = dir.join(format!("{name}.public"));
        // Check both first so a clash on the public file leaves nothing behind.
        for p in [&secret, &public] {
            if p.symlink_metadata().is_ok() {
                return Err(Error::KeyExists { path: p.clone() });
            }
        }
        let secret_line = format!("{SECRET_TAG} {}\n", hex::encode(self.signing.to_bytes()));
        write_new(&secret, secret_line.as_bytes(), 0o600)?;
        if let Err(e) = write_new(&public, self.public().to_line().as_bytes(), 0o644) {
            let _ = fs::remove_file(&secret);
            return Err(e);
        }
        Ok((secret, public))
    }
}

/// Creates `path` (never overwriting) with `mode` and `contents`.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::KeyExists {
                path: path.to_path_buf(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    f.write_all(contents).map_err(Error::io(path))?;
    f.sync_all().map_err(Error::io(path))
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.key_id())
    }
}

impl PublicKey {
    /// Refuses points that are not valid keys and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        let key =
            VerifyingKey::from_bytes(bytes).map_err(|e| Error::BadPublicKey(e.to_string()))?;
        if key.is_weak() {
            return Err(Error::BadPublicKey("weak (small-order) key".into()));
        }
        Ok(PublicKey { key })
    }

    /// Parses a `cairn-ed25519-public <hex>` line (e.g. one embedded in the agent).
    pub fn parse(line: &str) -> Result<Self, Error> {
        let bytes = key_line(line, PUBLIC_TAG)
            .and_then(parse_hex32)
            .ok_or_else(|| {
                Error::BadPublicKey(format!(
                    "expected \"{PUBLIC_TAG} <64 lowercase hex digits>\""
                ))
            })?;
        Self::from_bytes(&bytes)
    }

    /// Loads a `cairn-ed25519-public` file.
    pub fn load_public(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = read_key_file(path)?;
        if key_line(&text, SECRET_TAG).is_some() {
            return Err(key_err(
                path,
                "this is a SECRET key: trust the matching .public file instead, and keep this one off hosts",
            ));
        }
        Self::parse(&text).map_err(|e| key_err(path, e.to_string()))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn key_id(&self) -> String {
        key_id_of(&self.to_bytes())
    }

    /// The public key file's line, newline included.
    pub fn to_line(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", hex::encode(self.to_bytes()))
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}
