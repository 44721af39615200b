//! `[[files]]` of the host config: files cairn-config writes under /etc or
//! /var, and removes (or puts back as they were) when the config no longer
//! names them.
//!
//! ```toml
//! [[files]]
//! path = "/etc/chrony/conf.d/ntp.conf"
//! mode = "0644"               # octal string or integer (0o644); default 0644
//! owner = "root:root"         # names or ids; default root:root
//! contents = "server ntp.example.com iburst\n"
//! # or contents_base64 = "c2VydmVy..."
//! ```

use std::collections::BTreeSet;
use std::fmt;

use toml::{Table, Value};

use crate::check::{ConfigError, Ctx, kind};
use crate::config::check_user_name;

const KEYS: &[&str] = &["path", "mode", "owner", "contents", "contents_base64"];

pub const DEFAULT_MODE: u32 = 0o644;
/// A file's contents; a host config is not a way to ship images.
pub const MAX_SIZE: usize = 1 << 20;

/// Paths other parts of the config (or Cairn itself) own: a `[[files]]`
/// entry writing one would fight them on every boot.
pub const RESERVED: &[&str] = &[
    "/etc/hostname",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
    "/etc/machine-id",
    "/etc/localtime",
    "/etc/sysctl.d/90-cairn.conf",
    "/etc/modules-load.d/cairn.conf",
    "/etc/cairn/image-trust.json",
];
/// Prefixes of paths owned the same way (the `[network]` files, the sudo
/// rules of `[[users]]`, Cairn's state on ROOT).
pub const RESERVED_PREFIXES: &[&str] = &[
    "/etc/systemd/network/50-cairn-",
    "/etc/sudoers.d/cairn-",
    "/var/lib/cairn/",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Absolute and normalized, under /etc or /var.
    pub path: String,
    /// Permission bits (at most 0o7777).
    pub mode: u32,
    /// `None`: root:root.
    pub owner: Option<Owner>,
    pub contents: Vec<u8>,
}

/// `user:group`, each a name or a numeric id, resolved when applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub user: String,
    pub group: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.user, self.group)
    }
}

/// An absolute, normalized path under /etc or /var that is not reserved.
pub fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} must be an absolute path (\"/etc/...\")"));
    }
    if p.contains('\0') || p.contains(['\n', '\r']) || p.len() > 4096 {
        return Err(format!("{p:?} is not a usable path"));
    }
    let parts: Vec<&str> = p[1..].split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(format!(
            "{p:?} is not normalized (no \"//\", \".\", \"..\" or trailing \"/\")"
        ));
    }
    if !matches!(parts.first(), Some(&"etc" | &"var")) || parts.len() < 2 {
        return Err(format!(
            "{p:?} is outside /etc and /var, the only places [[files]] writes: /usr is read-only \
             (dm-verity) and replaced by every update; write the file under /etc (or /var) and point \
             the program at it, or add the program's files to the image with a board config"
        ));
    }
    if RESERVED.contains(&p) || RESERVED_PREFIXES.iter().any(|r| p.starts_with(r)) {
        return Err(format!(
            "{p:?} is managed by cairn-config from another part of the host config (hostname, users, \
             timezone, sysctl, kernel_modules, network, containers) or holds Cairn's state"
        ));
    }
    Ok(())
}

/// `0644`, `644` or `0o644` as a string; an integer as TOML gives it.
fn parse_mode(cx: &Ctx, key: &str, v: &Value) -> Result<u32, ConfigError> {
    let bad = || {
        cx.err(
            key,
            "must be octal permission bits, like mode = \"0644\" or mode = 0o644",
        )
    };
    let n = match v {
        Value::Integer(n) => u32::try_from(*n).map_err(|_| bad())?,
        Value::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            if digits.is_empty()
                || digits.len() > 5
                || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                return Err(bad());
            }
            u32::from_str_radix(digits, 8).map_err(|_| bad())?
        }
        other => {
            return Err(cx.err(
                key,
                format!(
                    "expected an octal string or an integer, found {}",
                    kind(other)
                ),
            ));
        }
    };
    if n > 0o7777 {
        return Err(bad());
    }
    Ok(n)
}

/// A user or group name, or a numeric id.
fn check_id_or_name(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u32>()
            .map(|_| ())
            .map_err(|_| format!("{s:?} is out of range"));
    }
    check_user_name(s)
}

fn parse_owner(cx: &Ctx, key: &str, v: &Value) -> Result<Owner, ConfigError> {
    let s = cx.string(key, v)?;
    let Some((u, g)) = s.split_once(':') else {
        return Err(cx.err(
            key,
            format!("{s:?} must be user:group (names or ids, like \"root:root\" or \"1000:1000\")"),
        ));
    };
    for part in [u, g] {
        check_id_or_name(part).map_err(|m| cx.err(key, m))?;
    }
    Ok(Owner {
        user: u.to_string(),
        group: g.to_string(),
    })
}

pub(crate) fn parse_files(cx: &Ctx, list: &[Value]) -> Result<Vec<File>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let key = format!("files[{i}]");
        let t: &Table = cx.table(&key, v)?;
        cx.unknown_keys(&key, t, KEYS)?;
        let pk = format!("{key}.path");
        let Some(pv) = t.get("path") else {
            return Err(cx.err(&pk, "missing (like path = \"/etc/motd\")"));
        };
        let path = cx.string(&pk, pv)?;
        check_path(&path).map_err(|m| cx.err(&pk, m))?;
        if !seen.insert(path.clone()) {
            return Err(cx.err(&pk, format!("{path:?} is listed twice")));
        }
        let mode = match t.get("mode") {
            Some(v) => parse_mode(cx, &format!("{key}.mode"), v)?,
            None => DEFAULT_MODE,
        };
        let owner = match t.get("owner") {
            Some(v) => Some(parse_owner(cx, &format!("{key}.owner"), v)?),
            None => None,
        };
        let contents = match (t.get("contents"), t.get("contents_base64")) {
            (Some(_), Some(_)) => {
                return Err(cx.err(
                    &format!("{key}.contents_base64"),
                    "give contents or contents_base64, not both",
                ));
            }
            (Some(v), None) => cx.string(&format!("{key}.contents"), v)?.into_bytes(),
            (None, Some(v)) => {
                let k = format!("{key}.contents_base64");
                let s = cx.string(&k, v)?;
                base64_decode(&s).map_err(|m| cx.err(&k, m))?
            }
            (None, None) => {
                return Err(cx.err(
                    &format!("{key}.contents"),
                    "missing: give contents (text) or contents_base64 (contents = \"\" for an empty file)",
                ));
            }
        };
        if contents.len() > MAX_SIZE {
            return Err(cx.err(
                &key,
                format!("{} bytes: at most {MAX_SIZE}", contents.len()),
            ));
        }
        out.push(File {
            path,
            mode,
            owner,
            contents,
        });
    }
    Ok(out)
}

impl File {
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        t.insert("path".into(), Value::String(self.path.clone()));
        t.insert("mode".into(), Value::String(format!("{:04o}", self.mode)));
        if let Some(o) = &self.owner {
            t.insert("owner".into(), Value::String(o.to_string()));
        }
        match std::str::from_utf8(&self.contents) {
            Ok(s) => t.insert("contents".into(), Value::String(s.to_string())),
            Err(_) => t.insert(
                "contents_base64".into(),
                Value::String(base64_encode(&self.contents)),
            ),
        };
        t
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Standard base64; whitespace (line breaks of `base64` output) is skipped,
/// padding is optional.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    let mut pad = false;
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_whitespace() {
            continue;
        }
        if b == b'=' {
            pad = true;
            continue;
        }
        if pad {
            return Err(format!("not base64: data after '=' padding at byte {i}"));
        }
        let v = B64
            .iter()
            .position(|&c| c == b)
            .ok_or_else(|| format!("not base64: {:?} at byte {i}", char::from(b)))?;
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits of a valid encoding are fewer than 6 and zero.
    if bits >= 6 || acc != 0 {
        return Err("not base64: truncated".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostConfig;

    fn files(text: &str) -> Vec<File> {
        match HostConfig::parse(text, "t") {
            Ok(c) => c.files,
            Err(e) => panic!("{text:?} refused: {e}"),
        }
    }

    #[test]
    fn base64_round_trips() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).as_deref(), Ok(plain.as_bytes()));
        }
        assert_eq!(base64_decode("Zm9v\nYmE").as_deref(), Ok(&b"fooba"[..]));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), Ok(all));
        for bad in ["Zm9v!", "Z", "Zm=9", "Zh=="] {
            assert!(base64_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn good_entries() {
        let f = files(
            "[[files]]\npath = \"/etc/motd\"\ncontents = \"hi\\n\"\n\
             [[files]]\npath = \"/var/lib/x/y.bin\"\nmode = \"0600\"\nowner = \"1000:ops\"\ncontents_base64 = \"AAEC/w==\"\n\
             [[files]]\npath = \"/etc/a\"\nmode = 0o755\ncontents = \"\"\n\
             [[files]]\npath = \"/etc/b\"\nmode = \"4755\"\ncontents = \"\"\n",
        );
        assert_eq!(
            (f[0].mode, f[0].owner.as_ref(), &f[0].contents[..]),
            (0o644, None, &b"hi\n"[..])
        );
        assert_eq!(f[1].mode, 0o600);
        assert_eq!(
            f[1].owner.as_ref().map(ToString::to_string).as_deref(),
            Some("1000:ops")
        );
        assert_eq!(f[1].contents, [0, 1, 2, 255]);
        assert_eq!(f[2].mode, 0o755);
        assert_eq!(f[3].mode, 0o4755);
        // Binary contents are written back as base64.
        assert!(f[1].to_table().contains_key("contents_base64"));
        assert_eq!(f[1].to_table()["mode"].as_str(), Some("0600"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &[&str])] = &[
            ("files = {}", &["files", "expected an array"]),
            ("[[files]]\ncontents = \"\"", &["files[0].path", "missing"]),
            (
                "[[files]]\npath = \"etc/x\"\ncontents = \"\"",
                &["files[0].path", "absolute"],
            ),
            (
                "[[files]]\npath = \"/usr/lib/x\"\ncontents = \"\"",
                &["files[0].path", "/usr is read-only", "under /etc"],
            ),
            (
                "[[files]]\npath = \"/opt/x\"\ncontents = \"\"",
                &["files[0].path", "outside /etc and /var"],
            ),
            (
                "[[files]]\npath = \"/etc\"\ncontents = \"\"",
                &["files[0].path", "outside"],
            ),
            (
                "[[files]]\npath = \"/etc/../usr/x\"\ncontents = \"\"",
                &["files[0].path", "not normalized"],
            ),
            (
                "[[files]]\npath = \"/etc//x\"\ncontents = \"\"",
                &["files[0].path", "not normalized"],
            ),
            (
                "[[files]]\npath = \"/etc/x/\"\ncontents = \"\"",
                &["files[0].path", "not normalized"],
            ),
            (
                "[[files]]\npath = \"/etc/hostname\"\ncontents = \"\"",
                &["files[0].path", "managed by cairn-config"],
            ),
            (
                "[[files]]\npath = \"/etc/systemd/network/50-cairn-x.network\"\ncontents = \"\"",
                &["files[0].path", "managed"],
            ),
            (
                "[[files]]\npath = \"/var/lib/cairn/host-config/owned.json\"\ncontents = \"\"",
                &["files[0].path", "Cairn's state"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\n[[files]]\npath = \"/etc/x\"\ncontents = \"\"",
                &["files[1].path", "twice"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"",
                &["files[0].contents", "missing"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"a\"\ncontents_base64 = \"YQ==\"",
                &["files[0].contents_base64", "not both"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents_base64 = \"Y!==\"",
                &["files[0].contents_base64", "not base64"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = 1",
                &["files[0].contents", "expected a string"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nmode = \"rw-r--r--\"",
                &["files[0].mode", "octal"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nmode = \"0988\"",
                &["files[0].mode", "octal"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nmode = 0o17777",
                &["files[0].mode", "octal"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nmode = -1",
                &["files[0].mode"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nmode = true",
                &["files[0].mode", "found a boolean"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nowner = \"root\"",
                &["files[0].owner", "user:group"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nowner = \"Root:root\"",
                &["files[0].owner", "not a valid user name"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nowner = \"1:99999999999\"",
                &["files[0].owner", "out of range"],
            ),
            (
                "[[files]]\npath = \"/etc/x\"\ncontents = \"\"\nuser = \"root\"",
                &["files[0].user", "unknown key"],
            ),
        ];
        crate::check::assert_refused(cases);
    }
}
