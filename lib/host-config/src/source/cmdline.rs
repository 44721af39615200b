//! `cairn.config.url=` on the kernel command line.
//!
//! With cairn-boot the command line is signed, so the URL belongs in the
//! board's `[kernel] cmdline`; a netboot loader passes its own.

use std::path::Path;

use super::CMDLINE_URL;

/// Where the kernel shows its command line (relative to `/`).
pub const PROC_CMDLINE: &str = "proc/cmdline";

/// Splits a command line like the kernel's `next_arg`: whitespace separates,
/// double quotes group, `--` ends the kernel's part.
fn split(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                have = true;
            }
            c if c.is_whitespace() && !quoted => {
                if have {
                    if cur == "--" {
                        return out;
                    }
                    out.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            c => {
                cur.push(c);
                have = true;
            }
        }
    }
    if have && cur != "--" {
        out.push(cur);
    }
    out
}

/// The URL in `cmdline`, checked to be http or https. Like every cairn key
/// it may appear once: a second copy must not silently win.
pub fn parse_config_url(cmdline: &str) -> Result<Option<String>, String> {
    let prefix = format!("{CMDLINE_URL}=");
    let urls: Vec<String> = split(cmdline)
        .into_iter()
        .filter_map(|a| a.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let url = match urls.as_slice() {
        [] => return Ok(None),
        [url] => url.clone(),
        _ => return Err(format!("{CMDLINE_URL}= is given {} times", urls.len())),
    };
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url:?} has no host"));
    }
    Ok(Some(url))
}

/// The URL on this boot's command line.
pub fn config_url(root: &Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(root.join(PROC_CMDLINE)) {
        Ok(text) => parse_config_url(&text),
        // No /proc/cmdline (a scratch root): no URL.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read /{PROC_CMDLINE}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_url() {
        let ok = |s: &str| parse_config_url(s).ok().flatten();
        assert_eq!(ok("quiet console=ttyS0\n"), None);
        assert_eq!(
            ok("quiet cairn.config.url=http://10.0.0.1:8080/h/a.toml console=ttyS0\n"),
            Some("http://10.0.0.1:8080/h/a.toml".into())
        );
        assert_eq!(
            ok("cairn.config.url=\"https://cfg.example/a b\""),
            Some("https://cfg.example/a b".into())
        );
        // After `--` it belongs to init.
        assert_eq!(ok("quiet -- cairn.config.url=http://x/"), None);
        for bad in [
            "cairn.config.url=ftp://x/c.toml",
            "cairn.config.url=",
            "cairn.config.url=http://",
            "cairn.config.url=http://a/ cairn.config.url=http://b/",
        ] {
            assert!(parse_config_url(bad).is_err(), "{bad}");
        }
    }
}
