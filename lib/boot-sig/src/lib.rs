//! Signatures over a slot's boot files, shared by the builder (signs), the
//! updater (checks before it makes a slot bootable) and the boot manager
//! (checks before it starts a kernel). `no_std`, no allocation.
//!
//! The signed message binds the three files together, so a kernel cannot be
//! mixed with another release's initramfs or command line:
//!
//! ```text
//! cairn-boot-files-v1
//! kernel <size> <sha256 hex>
//! initrd <size> <sha256 hex>
//! cmdline <size> <sha256 hex>
//! ```
//!
//! `boot.sig` holds one line per signing key: `ed25519 <public key hex> <signature hex>`.
//! A slot is accepted when any line is a valid signature by a trusted key.
#![no_std]

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

pub const MESSAGE_LEN: usize = 20 + 3 * (8 + 20 + 1 + 64 + 1);
const HEADER: &[u8] = b"cairn-boot-files-v1\n";

/// Builds the signed message into `out` and returns its length.
pub fn message(kernel: &[u8], initrd: &[u8], cmdline: &[u8], out: &mut [u8; MESSAGE_LEN]) -> usize {
    let mut w = Writer { buf: out, len: 0 };
    w.put(HEADER);
    for (name, data) in [
        (&b"kernel"[..], kernel),
        (b"initrd", initrd),
        (b"cmdline", cmdline),
    ] {
        w.put(name);
        w.put(b" ");
        w.put_decimal(data.len() as u64);
        w.put(b" ");
        let digest: [u8; 32] = Sha256::digest(data).into();
        w.put_hex(&digest);
        w.put(b"\n");
    }
    w.len
}

struct Writer<'a> {
    buf: &'a mut [u8; MESSAGE_LEN],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }
    fn put_hex(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.put(&hex_pair(*b));
        }
    }
    fn put_decimal(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[19 - n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let tmp = digits;
        self.put(&tmp[20 - n..]);
    }
}

fn hex_pair(b: u8) -> [u8; 2] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    [HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]
}

/// One line of `boot.sig` for `secret` (a 32-byte ed25519 seed), newline included.
pub const SIG_LINE_LEN: usize = 8 + 64 + 1 + 128 + 1;

pub fn sign_line(
    secret: &[u8; 32],
    kernel: &[u8],
    initrd: &[u8],
    cmdline: &[u8],
) -> [u8; SIG_LINE_LEN] {
    let key = SigningKey::from_bytes(secret);
    let mut msg = [0u8; MESSAGE_LEN];
    let n = message(kernel, initrd, cmdline, &mut msg);
    let sig = key.sign(&msg[..n]).to_bytes();
    let mut line = [0u8; SIG_LINE_LEN];
    line[..8].copy_from_slice(b"ed25519 ");
    let mut o = 8;
    for b in key.verifying_key().to_bytes() {
        line[o..o + 2].copy_from_slice(&hex_pair(b));
        o += 2;
    }
    line[o] = b' ';
    o += 1;
    for b in sig {
        line[o..o + 2].copy_from_slice(&hex_pair(b));
        o += 2;
    }
    line[o] = b'\n';
    line
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// No line of the signature file names a trusted key.
    NoTrustedKey,
    /// A trusted key's signature does not match the files.
    BadSignature,
    /// The signature file is not in the expected format.
    Malformed,
    /// The boot manager was built without any key (never patched by the builder).
    NoKeys,
}

impl core::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            VerifyError::NoTrustedKey => "boot.sig is not signed by any trusted key",
            VerifyError::BadSignature => "boot.sig does not match the kernel, initrd and cmdline",
            VerifyError::Malformed => "boot.sig is malformed",
            VerifyError::NoKeys => "no trusted keys are built in",
        })
    }
}

/// Checks `sig_file` against the boot files with the trusted public keys.
pub fn verify(
    trusted: &[[u8; 32]],
    sig_file: &[u8],
    kernel: &[u8],
    initrd: &[u8],
    cmdline: &[u8],
) -> Result<(), VerifyError> {
    if trusted.is_empty() {
        return Err(VerifyError::NoKeys);
    }
    let mut msg = [0u8; MESSAGE_LEN];
    let n = message(kernel, initrd, cmdline, &mut msg);
    let mut result = Err(VerifyError::NoTrustedKey);
    for line in sig_file.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.split(|&c| c == b' ');
        let (Some(b"ed25519"), Some(pk_hex), Some(sig_hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let (Some(pk), Some(sig)) = (decode_hex::<32>(pk_hex), decode_hex::<64>(sig_hex)) else {
            return Err(VerifyError::Malformed);
        };
        if !trusted.contains(&pk) {
            continue;
        }
        let Ok(vk) = VerifyingKey::from_bytes(&pk) else {
            return Err(VerifyError::Malformed);
        };
        match vk.verify_strict(&msg[..n], &Signature::from_bytes(&sig)) {
            Ok(()) => return Ok(()),
            Err(_) => result = Err(VerifyError::BadSignature),
        }
    }
    result
}

fn decode_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks(2).enumerate() {
        let v = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        out[i] = (v(pair[0])? << 4) | v(pair[1])?;
    }
    Some(out)
}

/// The key slot: a marker followed by room for `MAX_KEYS` public keys. The
/// boot manager carries an empty one; the image builder writes the release keys
/// into its copy of the binary, so one compiled boot manager serves every key.
pub const KEY_SLOT_MAGIC: [u8; 16] = *b"CAIRN-KEYSLOT-V1";
pub const MAX_KEYS: usize = 4;
pub const KEY_SLOT_LEN: usize = 16 + 32 * MAX_KEYS;

pub const EMPTY_KEY_SLOT: [u8; KEY_SLOT_LEN] = {
    let mut s = [0u8; KEY_SLOT_LEN];
    let mut i = 0;
    while i < 16 {
        s[i] = KEY_SLOT_MAGIC[i];
        i += 1;
    }
    s
};

/// The non-zero keys of a key slot.
pub fn slot_keys(slot: &[u8; KEY_SLOT_LEN]) -> ([[u8; 32]; MAX_KEYS], usize) {
    let mut keys = [[0u8; 32]; MAX_KEYS];
    let mut n = 0;
    for chunk in slot[16..].chunks_exact(32) {
        if chunk.iter().any(|&b| b != 0) {
            keys[n].copy_from_slice(chunk);
            n += 1;
        }
    }
    (keys, n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedError {
    /// The binary has no key slot: not a Cairn boot manager.
    NoSlot,
    /// The marker appears more than once, so the slot is ambiguous.
    SeveralSlots,
    /// More keys than the slot holds, or none.
    KeyCount,
}

impl core::fmt::Display for EmbedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EmbedError::NoSlot => "no key slot found: is this a cairn-boot binary?",
            EmbedError::SeveralSlots => "the key slot marker appears more than once",
            EmbedError::KeyCount => "between 1 and 4 keys can be embedded",
        })
    }
}

/// Writes `keys` into the key slot of a boot manager binary, in place.
pub fn embed_keys(binary: &mut [u8], keys: &[[u8; 32]]) -> Result<(), EmbedError> {
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(EmbedError::KeyCount);
    }
    let mut found = None;
    for i in 0..binary.len().saturating_sub(KEY_SLOT_LEN - 1) {
        if binary[i..i + 16] == KEY_SLOT_MAGIC {
            if found.is_some() {
                return Err(EmbedError::SeveralSlots);
            }
            found = Some(i);
        }
    }
    let at = found.ok_or(EmbedError::NoSlot)? + 16;
    binary[at..at + 32 * MAX_KEYS].fill(0);
    for (i, k) in keys.iter().enumerate() {
        binary[at + 32 * i..at + 32 * (i + 1)].copy_from_slice(k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];
    const OTHER: [u8; 32] = [9; 32];

    fn public(seed: &[u8; 32]) -> [u8; 32] {
        SigningKey::from_bytes(seed).verifying_key().to_bytes()
    }

    #[test]
    fn message_is_stable() {
        let mut m = [0u8; MESSAGE_LEN];
        let n = message(b"k", b"", b"console=ttyS0", &mut m);
        let text = core::str::from_utf8(&m[..n]).unwrap();
        assert!(text.starts_with("cairn-boot-files-v1\nkernel 1 8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a\n"));
        assert!(text.contains(
            "\ninitrd 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        ));
    }

    #[test]
    fn signed_files_verify_and_every_change_is_refused() {
        let line = sign_line(&SEED, b"kernel", b"initrd", b"cmdline");
        let keys = [public(&SEED)];
        assert_eq!(
            verify(&keys, &line, b"kernel", b"initrd", b"cmdline"),
            Ok(())
        );
        let cases: [(&[u8], &[u8], &[u8]); 4] = [
            (b"kernel!", b"initrd", b"cmdline"),
            (b"kernel", b"initrX", b"cmdline"),
            (b"kernel", b"initrd", b"cmdline init=/bin/sh"),
            (b"initrd", b"kernel", b"cmdline"),
        ];
        for (k, i, c) in cases {
            assert_eq!(
                verify(&keys, &line, k, i, c),
                Err(VerifyError::BadSignature)
            );
        }
        assert_eq!(
            verify(&[public(&OTHER)], &line, b"kernel", b"initrd", b"cmdline"),
            Err(VerifyError::NoTrustedKey)
        );
        assert_eq!(
            verify(&[], &line, b"kernel", b"initrd", b"cmdline"),
            Err(VerifyError::NoKeys)
        );
    }

    #[test]
    fn any_trusted_line_is_enough_and_garbage_is_malformed() {
        let mut file = [0u8; 2 * SIG_LINE_LEN];
        file[..SIG_LINE_LEN].copy_from_slice(&sign_line(&OTHER, b"k", b"i", b"c"));
        file[SIG_LINE_LEN..].copy_from_slice(&sign_line(&SEED, b"k", b"i", b"c"));
        assert_eq!(verify(&[public(&SEED)], &file, b"k", b"i", b"c"), Ok(()));
        assert_eq!(
            verify(&[public(&SEED)], b"ed25519 zz zz\n", b"k", b"i", b"c"),
            Err(VerifyError::Malformed)
        );
        let mut flipped = sign_line(&SEED, b"k", b"i", b"c");
        flipped[100] = if flipped[100] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            verify(&[public(&SEED)], &flipped, b"k", b"i", b"c"),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn keys_are_embedded_into_the_slot_once() {
        let mut bin = [0u8; 400];
        bin[100..100 + KEY_SLOT_LEN].copy_from_slice(&EMPTY_KEY_SLOT);
        embed_keys(&mut bin, &[[1; 32], [2; 32]]).unwrap();
        let slot: [u8; KEY_SLOT_LEN] = bin[100..100 + KEY_SLOT_LEN].try_into().unwrap();
        let (keys, n) = slot_keys(&slot);
        assert_eq!((n, keys[0], keys[1]), (2, [1; 32], [2; 32]));
        assert_eq!(
            embed_keys(&mut [0u8; 400], &[[1; 32]]),
            Err(EmbedError::NoSlot)
        );
        assert_eq!(embed_keys(&mut bin, &[]), Err(EmbedError::KeyCount));
        assert_eq!(slot_keys(&EMPTY_KEY_SLOT).1, 0);
    }
}
