//! The node id a host uses towards the fleet (pure): an app-specific hash of
//! `/etc/machine-id`, never the machine id itself.
//!
//! machine-id(5) asks that the machine id not be shown to the network; the
//! way systemd offers (`sd_id128_get_machine_app_specific`, `systemd-id128
//! machine-id --app-specific=…`) is HMAC-SHA256 keyed with the machine id over
//! an application id, cut to 128 bits and marked as a v4 UUID. Zincati does
//! the same with its own application id; Cairn has its own, so the two ids of
//! one machine cannot be linked. The result is 32 lowercase hex digits, stable
//! for the life of the machine id.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::NodeIdError;

/// Cairn's application id for the node id (made once with `systemd-id128 new`).
pub const CAIRN_APP_ID: [u8; 16] = [
    0x3f, 0x25, 0x4a, 0x0c, 0x91, 0x70, 0x47, 0x03, 0xb9, 0x7e, 0x94, 0x10, 0xfc, 0x9d, 0xc1, 0x22,
];

/// The node id for the contents of `/etc/machine-id`.
pub fn node_id(machine_id_text: &str) -> Result<String, NodeIdError> {
    node_id_for_app(machine_id_text, &CAIRN_APP_ID)
}

/// [`node_id`] with another application id: equal to `systemd-id128
/// machine-id --app-specific=<app_id>` on that machine.
pub fn node_id_for_app(machine_id_text: &str, app_id: &[u8; 16]) -> Result<String, NodeIdError> {
    let machine_id = parse_machine_id(machine_id_text)?;
    let mac = hmac_sha256(&machine_id, app_id);
    let mut id = [0u8; 16];
    id.copy_from_slice(&mac[..16]);
    // A random (v4) UUID, RFC 4122 variant: as systemd marks it.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(hex::encode(id))
}

/// Reads `path` (normally `/etc/machine-id`) and returns its [`node_id`].
pub fn node_id_from_file(path: &Path) -> Result<String, NodeIdError> {
    let file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let mut text = String::new();
    // The file is 33 bytes; a cap keeps a wrong path (/dev/zero) harmless.
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| read_error(path, e))?;
    node_id(&text)
}

fn read_error(path: &Path, e: std::io::Error) -> NodeIdError {
    NodeIdError::Read {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// The 16 bytes of a machine id file: 32 hex digits and an optional newline.
fn parse_machine_id(text: &str) -> Result<[u8; 16], NodeIdError> {
    let t = text.strip_suffix('\n').unwrap_or(text);
    let shown = || t.chars().take(64).collect::<String>();
    if t.is_empty() || t == "uninitialized" {
        return Err(NodeIdError::Uninitialized(shown()));
    }
    let mut id = [0u8; 16];
    if t.len() != 32 || hex::decode_to_slice(t, &mut id).is_err() {
        return Err(NodeIdError::Malformed(shown()));
    }
    if id == [0; 16] {
        return Err(NodeIdError::Uninitialized(shown()));
    }
    Ok(id)
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zincati's application id, to check the algorithm against systemd's.
    const ZINCATI_APP_ID: [u8; 16] = [
        0xde, 0x35, 0x10, 0x6b, 0x6e, 0xc2, 0x46, 0x88, 0xb6, 0x3a, 0xfd, 0xda, 0xa1, 0x56, 0x67,
        0x9b,
    ];

    #[test]
    fn hmac_matches_rfc_4231() {
        let table: &[(&[u8], &[u8], &str)] = &[
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, mac) in table {
            assert_eq!(hex::encode(hmac_sha256(key, msg)), *mac);
        }
    }

    #[test]
    fn node_ids() {
        // (machine-id file, Cairn id, id with Zincati's app id as
        // `systemd-id128 machine-id --app-specific=de35106b…` prints it)
        let table = [
            (
                "0123456789abcdef0123456789abcdef\n",
                "1001ca318bd7491ea216a805e84ee0ee",
                "583627a932274834a8ebd99f4ed41c0d",
            ),
            (
                "b08dfa6083e7567a1921a715000001fb",
                "b0cc45454f7e4ca384cc81e90f295559",
                "94c92cab203b4f87b2d8216ef72bea06",
            ),
            (
                "B08DFA6083E7567A1921A715000001FB\n",
                "b0cc45454f7e4ca384cc81e90f295559",
                "94c92cab203b4f87b2d8216ef72bea06",
            ),
            (
                "ffffffffffffffffffffffffffffffff\n",
                "3df26217b0654f819b78d3d6a6ffdccd",
                "01e17ff8056e4c079b0bac70864eb9b5",
            ),
        ];
        for (text, cairn, zincati) in table {
            assert_eq!(node_id(text).unwrap(), cairn, "{text:?}");
            assert_eq!(
                node_id_for_app(text, &ZINCATI_APP_ID).unwrap(),
                zincati,
                "{text:?}"
            );
            // Never the machine id itself.
            assert_ne!(node_id(text).unwrap(), text.trim().to_lowercase());
        }
    }

    #[test]
    fn bad_machine_ids() {
        let table = [
            ("", true),
            ("\n", true),
            ("uninitialized\n", true),
            ("00000000000000000000000000000000\n", true),
            ("0123456789abcdef0123456789abcde\n", false),
            ("0123456789abcdef0123456789abcdef0\n", false),
            ("0123456789abcdef-123456789abcdef\n", false),
            ("0123456789abcdef0123456789abcdeg", false),
            ("0123456789abcdef0123456789abcdef\n\n", false),
            (" 0123456789abcdef0123456789abcdef", false),
        ];
        for (text, uninit) in table {
            match node_id(text) {
                Err(NodeIdError::Uninitialized(_)) if uninit => {}
                Err(NodeIdError::Malformed(_)) if !uninit => {}
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("machine-id");
        std::fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            node_id_from_file(&p).unwrap(),
            "1001ca318bd7491ea216a805e84ee0ee"
        );
        let e = node_id_from_file(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
