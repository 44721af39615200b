//! The kernel command-line contract of cairn-init (keys from `disk_layout::cmdline`).
//!
//! | key | value | source |
//! |---|---|---|
//! | `usrhash` | 64 hex digits: sha256 root hash of the slot's /usr verity tree | signed cmdline file |
//! | `cairn.verity` | `<data_blocks>:<hash_offset_bytes>:<salt_hex>` (4096-byte blocks; salt may be empty or `-`) | signed cmdline file |
//! | `cairn.slot` | `a` or `b` | appended by the boot manager |
//! | `cairn.usr` | PARTUUID of that slot's USR partition | appended by the boot manager |
//! | `cairn.debug` | flag (`cairn.debug=0` turns it off) | optional |
//! | `init` | absolute path of the real init (default `/usr/lib/systemd/systemd`) | optional |
//!
//! Each cairn key must appear exactly once: the cmdline is signed, and a
//! second copy appended later must not silently win over the signed one.

use disk_layout::{Guid, Slot, cmdline as keys};
use verity_tree::{GeometryError, Layout, MAX_SALT_SIZE};

/// The init started in the new root when the cmdline has no `init=`.
pub const DEFAULT_INIT: &str = "/usr/lib/systemd/systemd";

/// dm-verity geometry of the /usr image, from `cairn.verity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityParams {
    /// Number of 4096-byte data blocks (the filesystem image, padded) and
    /// the byte offset of the verity superblock on the same partition
    /// (`veritysetup format --hash-offset`); the tree follows it.
    pub layout: Layout,
    /// Salt as lower-case hex; empty for no salt.
    pub salt_hex: String,
}

impl VerityParams {
    /// The salt's bytes (checked to be hex by [`parse`]).
    pub fn salt(&self) -> Vec<u8> {
        hex_decode(&self.salt_hex).unwrap_or_default()
    }
}

/// Everything cairn-init takes from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    /// Lower-case hex sha256 root hash.
    pub usrhash: String,
    pub verity: VerityParams,
    pub slot: Slot,
    pub usr_partuuid: Guid,
    pub debug: bool,
    pub init: String,
}

/// Splits a command line into `(key, value)` pairs like the kernel's
/// `next_arg`: whitespace separates, double quotes group (`k="a b"`), and
/// `--` ends the kernel's part (the rest belongs to init's argv).
pub fn split(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut have = false;
    let mut push = |cur: &mut String, have: &mut bool| {
        if *have {
            let tok = std::mem::take(cur);
            *have = false;
            match tok.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                None => out.push((tok, None)),
            }
        }
    };
    for c in cmdline.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                have = true;
            }
            c if c.is_whitespace() && !in_quote => push(&mut cur, &mut have),
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    push(&mut cur, &mut have);
    if let Some(end) = out.iter().position(|(k, v)| k == "--" && v.is_none()) {
        out.truncate(end)
    }
    out
}

/// Whether `cairn.debug` is on. Parsed on its own and leniently, so that a
/// malformed cmdline still gets the debug behaviour it asked for.
pub fn debug_requested(cmdline: &str) -> bool {
    split(cmdline)
        .into_iter()
        .filter(|(k, _)| k == keys::DEBUG)
        .map(|(_, v)| !matches!(v.as_deref(), Some("0" | "no" | "false" | "off")))
        .next_back()
        .unwrap_or(false)
}

/// Parses and checks every key cairn-init needs.
pub fn parse(cmdline: &str) -> Result<BootParams, String> {
    let args = split(cmdline);
    let one = |key: &str| -> Result<String, String> {
        let mut vals = args.iter().filter(|(k, _)| k == key);
        match (vals.next(), vals.next()) {
            (None, _) => Err(format!("{key}= missing from the kernel command line")),
            (Some(_), Some(_)) => Err(format!("{key}= given more than once")),
            (Some((_, None)), None) => Err(format!("{key} has no value")),
            (Some((_, Some(v))), None) => Ok(v.clone()),
        }
    };

    let usrhash = one(keys::USRHASH)?.to_ascii_lowercase();
    if usrhash.len() != 64 || !is_hex(&usrhash) {
        return Err(format!(
            "{}={usrhash:?} is not a sha256 hash (64 hex digits)",
            keys::USRHASH
        ));
    }
    let verity = parse_verity(&one(keys::VERITY)?)?;
    let slot_s = one(keys::SLOT)?;
    let slot = Slot::from_letter(&slot_s)
        .ok_or_else(|| format!("{}={slot_s:?} is neither a nor b", keys::SLOT))?;
    let usr_s = one(keys::USR_PARTUUID)?;
    let usr_partuuid = Guid::try_parse(&usr_s)
        .ok_or_else(|| format!("{}={usr_s:?} is not a GUID", keys::USR_PARTUUID))?;
    if usr_partuuid == Guid::ZERO {
        return Err(format!("{} is the zero GUID", keys::USR_PARTUUID));
    }
    let init = match args.iter().rfind(|(k, _)| k == "init") {
        None => DEFAULT_INIT.to_string(),
        Some((_, Some(v))) if v.starts_with('/') => v.clone(),
        Some((_, v)) => return Err(format!("init={v:?} is not an absolute path")),
    };
    Ok(BootParams {
        usrhash,
        verity,
        slot,
        usr_partuuid,
        debug: debug_requested(cmdline),
        init,
    })
}

fn parse_verity(v: &str) -> Result<VerityParams, String> {
    let bad = |why: &str| format!("{}={v:?}: {why}", keys::VERITY);
    let mut parts = v.split(':');
    let (Some(blocks), Some(offset), Some(salt), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected <data_blocks>:<hash_offset_bytes>:<salt_hex>"));
    };
    let data_blocks: u64 = blocks
        .parse()
        .map_err(|_| bad("data_blocks is not a number"))?;
    let hash_offset: u64 = offset
        .parse()
        .map_err(|_| bad("hash_offset is not a number"))?;
    // The tree lives after the data on the same partition; overlapping it
    // would make the data verify itself.
    let layout = Layout::new(data_blocks, hash_offset).map_err(|e| match e {
        GeometryError::NoData => bad("data_blocks is 0"),
        GeometryError::Unaligned { .. } => bad("hash_offset is not a multiple of 4096"),
        GeometryError::TooLarge { .. } | GeometryError::Overlap { .. } => {
            bad("hash_offset lies inside the data area")
        }
        e => bad(&e.to_string()),
    })?;
    let salt_hex = if salt == "-" {
        String::new()
    } else {
        salt.to_ascii_lowercase()
    };
    if salt_hex.len() % 2 != 0 || !is_hex(&salt_hex) || salt_hex.len() > 2 * MAX_SALT_SIZE {
        return Err(bad("salt is not hex of at most 256 bytes"));
    }
    Ok(VerityParams { layout, salt_hex })
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Decodes hex checked by [`parse`]; `None` on anything else.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "4e2ab7b2f1c24b7bd34b5e0a33d5e4a6fe4a2ad1e9d94a69a6ea25e0ef9f9b1c";
    const UUID: &str = "6e5a9b1c-0f0e-4d1b-9e44-5a1c2f3e4d5a";

    fn good() -> String {
        format!(
            "console=ttyS0 quiet usrhash={HASH} cairn.verity=1000:4096000:00ff \
             panic=5 cairn.slot=b cairn.usr={UUID}"
        )
    }

    #[test]
    fn parses_the_contract() {
        let p = parse(&good()).unwrap();
        assert_eq!(p.usrhash, HASH);
        assert_eq!(
            p.verity,
            VerityParams {
                layout: Layout::new(1000, 4_096_000).unwrap(),
                salt_hex: "00ff".into()
            }
        );
        assert_eq!(p.slot, Slot::B);
        assert_eq!(p.usr_partuuid.to_string(), UUID);
        assert!(!p.debug);
        assert_eq!(p.init, DEFAULT_INIT);
    }

    #[test]
    fn optional_keys() {
        let c = format!("{} cairn.debug init=/sbin/init -- single", good());
        let p = parse(&c).unwrap();
        assert!(p.debug);
        assert_eq!(p.init, "/sbin/init");
        assert!(!debug_requested(&format!("{} cairn.debug=0", good())));
        assert!(debug_requested("cairn.debug=1 usrhash=zz"));
        assert!(parse(&format!("{} init=sbin/init", good())).is_err());
        // After "--" nothing counts.
        assert!(!debug_requested("a -- cairn.debug"));
        let p = parse(&format!(
            "{} cairn.verity=7:28672:-",
            good().replace("cairn.verity=1000:4096000:00ff", "")
        ))
        .unwrap();
        assert_eq!(p.verity.salt_hex, "");
    }

    #[test]
    fn quotes_group_like_the_kernel() {
        let s = split(r#"a="x y" "b=c d" e"#);
        assert_eq!(
            s,
            [
                ("a".into(), Some("x y".into())),
                ("b".into(), Some("c d".into())),
                ("e".into(), None)
            ]
        );
    }

    #[test]
    fn missing_duplicate_and_malformed_keys_fail() {
        let g = good();
        let cases = [
            (g.replace("cairn.slot=b", ""), "cairn.slot= missing"),
            (format!("{g} cairn.slot=a"), "more than once"),
            (g.replace("cairn.slot=b", "cairn.slot=c"), "neither a nor b"),
            (g.replace(HASH, &HASH[1..]), "not a sha256"),
            (g.replace(HASH, &HASH.replace('4', "g")), "not a sha256"),
            (g.replace(UUID, "nope"), "not a GUID"),
            (
                g.replace(UUID, "00000000-0000-0000-0000-000000000000"),
                "zero GUID",
            ),
            (g.replace("1000:4096000:00ff", "1000:4096000"), "expected"),
            (
                g.replace("1000:4096000:00ff", "x:4096000:00"),
                "data_blocks",
            ),
            (g.replace("1000:4096000:00ff", "0:4096000:00"), "is 0"),
            (
                g.replace("1000:4096000:00ff", "1000:4096001:00"),
                "multiple",
            ),
            (g.replace("1000:4096000:00ff", "1001:4096000:00"), "inside"),
            (g.replace("1000:4096000:00ff", "1000:4096000:0f0"), "salt"),
            (g.replace("usrhash=", "usrhash "), "no value"),
        ];
        for (c, want) in cases {
            let e = parse(&c).unwrap_err();
            assert!(e.contains(want), "{c}: {e}");
        }
    }

    #[test]
    fn hex_decodes() {
        assert_eq!(hex_decode("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(hex_decode(""), Some(vec![]));
        assert_eq!(hex_decode("0"), None);
    }
}
