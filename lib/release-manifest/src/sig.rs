//! Detached signatures over the exact bytes of a document, with a threshold.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::{Error, KeyPair, PublicKey};

/// A signature file bigger than this is not ours (about 1000 signatures); refusing
/// it early bounds the work an attacker can cause.
const MAX_SIG_FILE: usize = 160 * 1024;

/// One element of the signature file's JSON list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// Key id (16 hex) of the signing key; a hint for finding the key, not trusted.
    pub keyid: String,
    /// 64-byte ed25519 signature, lowercase hex.
    pub sig: String,
}

/// The signature file for `document`, signed by every key of `keys` (duplicates
/// removed), sorted by key id so the output is reproducible.
pub fn sign_document(document: &[u8], keys: &[KeyPair]) -> Result<Vec<u8>, Error> {
    add_signatures(document, b"[]", keys)
}

/// Adds signatures by `keys` to an existing signature file (for keys held by
/// different people). An existing signature by the same key is replaced.
pub fn add_signatures(
    document: &[u8],
    existing: &[u8],
    keys: &[KeyPair],
) -> Result<Vec<u8>, Error> {
    if keys.is_empty() {
        return Err(Error::NoSigningKeys);
    }
    let mut by_id: BTreeMap<String, SignatureEntry> = parse(existing)?
        .into_iter()
        .map(|e| (e.keyid.clone(), e))
        .collect();
    for key in keys {
        let entry = key.sign(document);
        by_id.insert(entry.keyid.clone(), entry);
    }
    let list: Vec<&SignatureEntry> = by_id.values().collect();
    let mut out =
        serde_json::to_vec_pretty(&list).map_err(|e| Error::MalformedSignatures(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

fn parse(sigs: &[u8]) -> Result<Vec<SignatureEntry>, Error> {
    if sigs.len() > MAX_SIG_FILE {
        return Err(Error::MalformedSignatures(format!(
            "{} bytes is larger than the {MAX_SIG_FILE} allowed",
            sigs.len()
        )));
    }
    let list: Vec<SignatureEntry> =
        serde_json::from_slice(sigs).map_err(|e| Error::MalformedSignatures(e.to_string()))?;
    for e in &list {
        let id_ok = e.keyid.len() == 16
            && e.keyid
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let sig_ok = e.sig.len() == 128
            && e.sig
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !id_ok || !sig_ok {
            return Err(Error::MalformedSignatures(format!(
                "entry for key {:?}: keyid must be 16 and sig 128 lowercase hex digits",
                e.keyid
            )));
        }
    }
    Ok(list)
}

/// Accepts `document` if at least `threshold` distinct keys of `trusted` made a valid
/// (`verify_strict`) signature in `sigs`. Signatures by unknown keys are ignored, so
/// a release can be signed by old and new keys during a rotation; a key that signs
/// twice counts once.
///
/// Errors: [`Error::MalformedSignatures`], [`Error::InvalidThreshold`],
/// [`Error::NoTrustedSignature`] (only unknown keys signed),
/// [`Error::BadSignature`] (trusted keys signed, but not these bytes),
/// [`Error::TooFewSignatures`] (some but not enough valid signatures).
pub fn verify_signed(
    document: &[u8],
    sigs: &[u8],
    trusted: &[PublicKey],
    threshold: usize,
) -> Result<(), Error> {
    // Threshold 0 would accept unsigned documents; above the key count it can never pass.
    if threshold == 0 || threshold > trusted.len() {
        return Err(Error::InvalidThreshold {
            threshold,
            trusted: trusted.len(),
        });
    }
    let list = parse(sigs)?;
    let mut valid = BTreeSet::new();
    let mut bad = BTreeSet::new();
    for entry in &list {
        let mut sig_bytes = [0u8; 64];
        hex::decode_to_slice(&entry.sig, &mut sig_bytes)
            .map_err(|e| Error::MalformedSignatures(e.to_string()))?;
        let sig = Signature::from_bytes(&sig_bytes);
        // Key ids are not authenticated: try every trusted key carrying that id.
        for key in trusted.iter().filter(|k| k.key_id() == entry.keyid) {
            if key.verifying_key().verify_strict(document, &sig).is_ok() {
                valid.insert(key.to_bytes());
            } else {
                bad.insert(entry.keyid.clone());
            }
        }
    }
    match valid.len() {
        n if n >= threshold => Ok(()),
        0 if !bad.is_empty() => Err(Error::BadSignature {
            keyids: bad.into_iter().collect(),
        }),
        0 => Err(Error::NoTrustedSignature {
            signed_by: list.into_iter().map(|e| e.keyid).collect(),
            trusted: trusted.iter().map(PublicKey::key_id).collect(),
        }),
        n => Err(Error::TooFewSignatures {
            valid: n,
            required: threshold,
        }),
    }
}
