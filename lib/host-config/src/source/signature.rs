//! Signed host configs.
//!
//! A signature is the release signature format of `release-manifest` (a
//! JSON list of `{"keyid": "<16 hex>", "sig": "<128 hex>"}`) over the exact
//! bytes of the config. It travels either
//! - **detached**, in a file beside the config (`config.toml.sig` on the OEM
//!   partition, `<url>.sig`, fw_cfg `opt/cairn/config.sig`), or
//! - **embedded**, as the config's last line:
//!   `# cairn-signature: [{"keyid":"…","sig":"…"}]` (the list on one line).
//!   The signed bytes are everything before that line. This is how cloud
//!   user data is signed (it has no "beside"); it works for every source.
//!   The line is a TOML comment, so a signed config parses as it is.
//!
//! The image's keys ([`board_files::CONFIG_KEYS`], `cairn-ed25519-public
//! <hex>` lines) make a signature required: a missing one, a bad one, or
//! one by an unknown key is an error and the config is not applied. Without
//! keys a signature is not checked.

use std::path::Path;

use disk_layout::board_files;
use release_manifest::{KeyPair, PublicKey, sign_document, verify_signed};

use super::{Fetched, MAX_CONFIG_BYTES};

/// The detached signature's name: the config's name plus this.
pub const DETACHED_SUFFIX: &str = ".sig";
/// The start of the embedded signature line.
pub const EMBEDDED_PREFIX: &str = "# cairn-signature: ";

/// What is known about the signature of the config in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureState {
    /// No config was found (the defaults apply).
    NoConfig,
    /// Not signed, and the image requires no signature.
    Unsigned,
    /// Signed, but the image ships no keys to check it with.
    NotChecked,
    /// Signed by the image's key with this key id.
    Verified { keyid: String },
    /// The image requires a signature and there is none (an error).
    Missing,
    /// The signature does not verify, or is malformed (an error).
    Bad(String),
}

impl SignatureState {
    /// The line of /run/cairn/config-signature and `cairn-config status`.
    pub fn to_line(&self) -> String {
        match self {
            SignatureState::NoConfig => "none (no config)".into(),
            SignatureState::Unsigned => "unsigned (this image requires no signature)".into(),
            SignatureState::NotChecked => {
                "signed, not checked (this image ships no config keys)".into()
            }
            SignatureState::Verified { keyid } => format!("verified (key {keyid})"),
            SignatureState::Missing => "MISSING (this image requires a signed config)".into(),
            SignatureState::Bad(why) => format!("BAD ({why})"),
        }
    }

    /// Whether this state keeps the config from being applied.
    pub fn is_error(&self) -> bool {
        matches!(self, SignatureState::Missing | SignatureState::Bad(_))
    }
}

/// Parses the image's config keys: one `cairn-ed25519-public <hex>` line
/// each, blank lines and `#` comments ignored. No key at all is an error: a
/// board that requires signatures but ships no key could apply nothing.
pub fn parse_keys(text: &str) -> Result<Vec<PublicKey>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = PublicKey::parse(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err("lists no key".into());
    }
    Ok(keys)
}

/// The image's config keys: `Ok(None)` when it ships none (signatures not
/// required).
pub(crate) fn read_keys(root: &Path) -> Result<Option<Vec<PublicKey>>, String> {
    let rel = board_files::CONFIG_KEYS;
    match std::fs::read_to_string(root.join(rel)) {
        Ok(text) => parse_keys(&text)
            .map(Some)
            .map_err(|e| format!("/{rel}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read /{rel}: {e}")),
    }
}

/// Splits an embedded signature off: (the signed bytes, the signature list
/// if the last line is a signature line). A signature line anywhere else is
/// an error: something was appended after the signature.
pub fn split_embedded(bytes: &[u8]) -> Result<(&[u8], Option<&[u8]>), String> {
    let prefix = EMBEDDED_PREFIX.as_bytes();
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let last_start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (signed, sig) = match body[last_start..].strip_prefix(prefix) {
        Some(sig) => (&bytes[..last_start], Some(sig.trim_ascii())),
        None => (bytes, None),
    };
    if signed.split(|&b| b == b'\n').any(|l| l.starts_with(prefix)) {
        return Err(format!(
            "a `{}` line that is not the last line (was something appended after the signature?)",
            EMBEDDED_PREFIX.trim_end()
        ));
    }
    Ok((signed, sig))
}

/// The detached signature file for `config`, signed by `key`.
pub fn sign_detached(config: &[u8], key: &KeyPair) -> Vec<u8> {
    // One key always signs: sign_document fails only without keys.
    sign_document(config, std::slice::from_ref(key)).unwrap_or_default()
}

/// `config` with its embedded signature line by `key` appended (a newline
/// is added first if `config` does not end with one).
pub fn sign_embedded(config: &[u8], key: &KeyPair) -> Vec<u8> {
    let mut signed = config.to_vec();
    if !signed.is_empty() && !signed.ends_with(b"\n") {
        signed.push(b'\n');
    }
    let entry = key.sign(&signed);
    // Both fields are hex: no escaping needed.
    let line = format!(
        "{EMBEDDED_PREFIX}[{{\"keyid\":\"{}\",\"sig\":\"{}\"}}]",
        entry.keyid, entry.sig
    );
    signed.extend_from_slice(line.as_bytes());
    signed.push(b'\n');
    signed
}

/// The config bytes to parse, or why it must not be applied.
pub(crate) struct Checked {
    pub state: SignatureState,
    pub config: Result<Vec<u8>, String>,
}

fn bad(why: String) -> Checked {
    Checked {
        state: SignatureState::Bad(why.clone()),
        config: Err(format!("signature: {why}")),
    }
}

/// Applies the signature rule to a found config.
pub(crate) fn check(found: &Fetched, keys: Option<&[PublicKey]>) -> Checked {
    let (signed, embedded) = match split_embedded(&found.bytes) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let Some(keys) = keys else {
        let state = if embedded.is_some() || found.detached_sig.is_some() {
            SignatureState::NotChecked
        } else {
            SignatureState::Unsigned
        };
        return Checked {
            state,
            config: Ok(signed.to_vec()),
        };
    };
    let sig = match (embedded, found.detached_sig.as_deref()) {
        (Some(_), Some(_)) => {
            return bad(format!(
                "both an embedded signature and a detached {DETACHED_SUFFIX}: keep one"
            ));
        }
        (Some(s), None) | (None, Some(s)) => s,
        (None, None) => {
            return Checked {
                state: SignatureState::Missing,
                config: Err(format!(
                    "not signed, and this image requires a signature by a key of /{} \
                     (a detached {DETACHED_SUFFIX} or a last line `{}…`)",
                    board_files::CONFIG_KEYS,
                    EMBEDDED_PREFIX
                )),
            };
        }
    };
    if sig.len() as u64 > MAX_CONFIG_BYTES {
        return bad("the signature is too large".into());
    }
    for key in keys {
        if verify_signed(signed, sig, std::slice::from_ref(key), 1).is_ok() {
            return Checked {
                state: SignatureState::Verified {
                    keyid: key.key_id(),
                },
                config: Ok(signed.to_vec()),
            };
        }
    }
    // Threshold 1 of a non-empty key list: the error says why none verified.
    match verify_signed(signed, sig, keys, 1) {
        Err(e) => bad(e.to_string()),
        Ok(()) => bad("no key verified it".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(bytes: &[u8], sig: Option<Vec<u8>>) -> Fetched {
        Fetched {
            origin: "/oem/config.toml".into(),
            bytes: bytes.to_vec(),
            detached_sig: sig,
        }
    }

    #[test]
    fn embedded_line_is_split_off_only_when_last() {
        let (s, sig) = split_embedded(b"a = 1\n# cairn-signature: [x]\n").unwrap();
        assert_eq!((s, sig), (&b"a = 1\n"[..], Some(&b"[x]"[..])));
        let (s, sig) = split_embedded(b"a = 1\n# cairn-signature: [x]").unwrap();
        assert_eq!((s, sig), (&b"a = 1\n"[..], Some(&b"[x]"[..])));
        let (s, sig) = split_embedded(b"a = 1\n").unwrap();
        assert_eq!((s, sig), (&b"a = 1\n"[..], None));
        let e = split_embedded(b"a = 1\n# cairn-signature: [x]\nb = 2\n").unwrap_err();
        assert!(e.contains("not the last line"), "{e}");
    }

    #[test]
    fn signature_rule() {
        let key = KeyPair::from_seed([7; 32]);
        let other = KeyPair::from_seed([8; 32]);
        let keys = [key.public()];
        let config = b"hostname = \"a\"\n";
        let detached = sign_detached(config, &key);
        let embedded = sign_embedded(config, &key);

        // Not required: accepted either way, not checked.
        let c = check(&fetched(config, None), None);
        assert_eq!(
            (c.state, c.config),
            (SignatureState::Unsigned, Ok(config.to_vec()))
        );
        let c = check(&fetched(config, Some(b"garbage".to_vec())), None);
        assert_eq!(
            (c.state, c.config),
            (SignatureState::NotChecked, Ok(config.to_vec()))
        );

        // Required and good, detached or embedded.
        let verified = SignatureState::Verified {
            keyid: key.key_id(),
        };
        let c = check(&fetched(config, Some(detached.clone())), Some(&keys));
        assert_eq!((c.state, c.config), (verified.clone(), Ok(config.to_vec())));
        let c = check(&fetched(&embedded, None), Some(&keys));
        assert_eq!((c.state, c.config), (verified, Ok(config.to_vec())));

        // Required and missing.
        let c = check(&fetched(config, None), Some(&keys));
        assert_eq!(c.state, SignatureState::Missing);
        assert!(c.config.unwrap_err().contains("requires a signature"));

        // Required and bad: modified config, unknown key, garbage, both kinds.
        let c = check(
            &fetched(b"hostname = \"b\"\n", Some(detached.clone())),
            Some(&keys),
        );
        assert!(
            matches!(&c.state, SignatureState::Bad(w) if w.contains("do not match")),
            "{:?}",
            c.state
        );
        assert!(c.config.is_err());
        let c = check(
            &fetched(config, Some(sign_detached(config, &other))),
            Some(&keys),
        );
        assert!(
            matches!(&c.state, SignatureState::Bad(w) if w.contains("no signature by a trusted key")),
            "{:?}",
            c.state
        );
        let c = check(&fetched(config, Some(b"nonsense".to_vec())), Some(&keys));
        assert!(
            matches!(&c.state, SignatureState::Bad(w) if w.contains("malformed")),
            "{:?}",
            c.state
        );
        let c = check(&fetched(&embedded, Some(detached)), Some(&keys));
        assert!(matches!(&c.state, SignatureState::Bad(w) if w.contains("both")));
        // Appended after an embedded signature.
        let mut appended = embedded.clone();
        appended.extend_from_slice(b"[update]\n");
        let c = check(&fetched(&appended, None), Some(&keys));
        assert!(matches!(&c.state, SignatureState::Bad(w) if w.contains("not the last line")));
    }

    #[test]
    fn keys_file() {
        let key = KeyPair::from_seed([7; 32]).public();
        let text = format!("# release keys\n\n{}", key.to_line());
        assert_eq!(parse_keys(&text), Ok(vec![key]));
        assert_eq!(parse_keys("# none\n"), Err("lists no key".into()));
        let e = parse_keys("cairn-ed25519-public zz\n").unwrap_err();
        assert!(e.starts_with("line 1: invalid public key"), "{e}");
    }
}
