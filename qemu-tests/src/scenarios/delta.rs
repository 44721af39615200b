//! `update-delta` (issue 13): v1 updates by block delta to a v2 that adds
//! one package. The server's own figures, not the agent's, show what /usr
//! cost: at most [`MAX_SHARE`] of the full compressed payload.
//!
//! The fixture server logs each request's path and Range start, and counts
//! every body byte it sends (`Faults::sent`), but not the end of a Range.
//! The whole-file requests (metadata, boot files, the block index) cost
//! their file's size, so the Range requests into `usr.blocks` cost what
//! the server sent beyond those.

use crate::runner::Ctx;
use crate::scenarios::boot_chain::{SHELL_CMD, TO_LOGIN, say};
use crate::scenarios::update::{
    A_FALLBACK, B_GOOD, TO_UPDATE, boot_and_install, comes_up_on_b, inputs, login, power_off_expect,
};
use crate::scenarios::{DELTA_PACKAGE, V2};
use anyhow::{Context, Result, bail, ensure};
use cairn_updater::fixture::Server;
use release_manifest::Manifest;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

/// The most of the full compressed /usr payload the delta may fetch
/// (index included).
const MAX_SHARE: f64 = 0.05;

/// The agent's console line after a delta write (updater/src/agent.rs,
/// `write_usr_delta`): blocks copied, fetched, requests, range bytes, index
/// bytes, full image bytes (what follows may grow).
const DELTA_DONE: &str = r"delta: (\d+) blocks copied, (\d+) fetched in (\d+) requests \((\d+) bytes \+ (\d+) of index; full image (\d+) bytes";

/// v1 (with `[update] delta = true`) installs v2 + [`DELTA_PACKAGE`] by
/// delta: the server sent at most [`MAX_SHARE`] of the full /usr payload,
/// none of the full image's chunks, and the agent says it took the delta
/// path; v2 then boots on b and is committed, a stays the fallback.
pub fn update_delta(ctx: &mut Ctx) -> Result<()> {
    let release = inputs(ctx)?
        .v2_delta
        .context("scenario update-delta needs the v2 build with one package added (cargo xtask vmtest builds it)")?
        .join("release");
    let manifest = Manifest::from_json(
        &std::fs::read(release.join(release_manifest::MANIFEST_FILE))
            .with_context(|| format!("reading the manifest of {}", release.display()))?,
    )?;
    let full: u64 = manifest.image("usr")?.chunks.iter().map(|c| c.zsize).sum();
    // reboot = "off": the install's requests end at READY, before the log is
    // read. `cairnctl check` would show the planned download too, but it
    // hashes the whole active slot again (100 s under TCG).
    let (server, mut vm) = boot_and_install(ctx, &release, "off", "delta = true\n")?;
    let served = served_for_usr(&server, &ctx.artifacts.join("repo"), &manifest)?;
    let console = vm.console_since(crate::Mark(0));
    let agent = agent_delta_line(&console)?;
    say(ctx, &format!("agent: {}", agent.line));
    say(
        ctx,
        &format!(
            "served for /usr: {} bytes ({} whole files, {} bytes in {} Range requests); \
             full compressed /usr payload: {full} bytes; ratio {:.2} %",
            served.bytes,
            served.whole_files,
            served.range_bytes,
            served.ranges,
            100.0 * served.bytes as f64 / full as f64
        ),
    );
    ensure!(
        !console.contains("no delta (") && !console.contains("downloading the full image"),
        "the agent fell back to the full download:\n{}",
        console
            .lines()
            .filter(|l| l.contains("delta"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ensure!(
        served.full_chunks == 0,
        "the server sent {} chunks of the full usr image during a delta update",
        served.full_chunks
    );
    ensure!(
        agent.full == full,
        "the agent's full image is {} bytes, the manifest's {full}",
        agent.full
    );
    ensure!(
        agent.range_bytes == served.range_bytes && agent.requests == served.ranges,
        "the agent received {} bytes in {} Range requests, the server sent {} bytes in {}",
        agent.range_bytes,
        agent.requests,
        served.range_bytes,
        served.ranges
    );
    ensure!(
        (served.bytes as f64) <= full as f64 * MAX_SHARE,
        "the delta cost {} bytes of /usr, more than {:.0} % of the full {full}",
        served.bytes,
        MAX_SHARE * 100.0
    );
    login(&mut vm)?;
    vm.send_line("systemctl reboot")?;
    comes_up_on_b(&mut vm, TO_UPDATE)?;
    let pkg = vm.run(&format!("command -v {DELTA_PACKAGE}"), SHELL_CMD)?;
    ensure!(
        pkg.0 == 0,
        "{DELTA_PACKAGE} is not on v2: the release booted is not the one with the added package"
    );
    let hist = vm.run_ok(
        "timeout 120 sh -c 'until cairnctl history | grep -q booted; do sleep 2; done'; cairnctl history",
        TO_LOGIN,
    )?;
    ensure!(
        hist.contains("booted") && hist.contains(V2),
        "the agent's history does not record {V2} as booted:\n{hist}"
    );
    power_off_expect(ctx, &mut vm, A_FALLBACK, B_GOOD)
}

/// The figures of the agent's [`DELTA_DONE`] line.
#[derive(Debug, PartialEq)]
struct AgentDelta {
    line: String,
    requests: usize,
    range_bytes: u64,
    full: u64,
}

fn agent_delta_line(console: &str) -> Result<AgentDelta> {
    let re = regex_lite::Regex::new(DELTA_DONE)?;
    for l in console.lines() {
        if let Some(c) = re.captures(l) {
            let n = |i: usize| -> Result<u64> {
                Ok(c.get(i)
                    .context("a group of DELTA_DONE")?
                    .as_str()
                    .parse()?)
            };
            return Ok(AgentDelta {
                line: l[c.get(0).map_or(0, |m| m.start())..].to_string(),
                requests: n(3)? as usize,
                range_bytes: n(4)?,
                full: n(6)?,
            });
        }
    }
    bail!("the agent never said it wrote /usr by delta (no line matching {DELTA_DONE:?})")
}

/// What a request of the server's log fetched.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// A chunk of the full usr image.
    UsrFull,
    /// A chunk of the usr image's block index or blocks.
    UsrDelta,
    /// Anything else: metadata, boot files, files the release lacks.
    Other,
}

/// One request the server logged, with its file's size (`None`: 404).
#[derive(Clone, Debug, PartialEq)]
struct Request {
    path: String,
    start: Option<u64>,
    kind: Kind,
    size: Option<u64>,
}

/// What the server sent for /usr.
#[derive(Debug, Default, PartialEq)]
struct Served {
    /// Every /usr byte: whole files and Range bodies.
    bytes: u64,
    /// Whole-file requests for /usr (the block index's chunks).
    whole_files: usize,
    /// Range requests for /usr, and their body bytes.
    ranges: usize,
    range_bytes: u64,
    /// Chunks of the full usr image (none on the delta path).
    full_chunks: usize,
}

/// `"<path> Some(<start>)"` or `"<path> None"`, as the fixture logs a request.
fn parse_logged(line: &str) -> Result<(&str, Option<u64>)> {
    let bad = || format!("unexpected line in the server's request log: {line:?}");
    let (path, range) = line.rsplit_once(' ').with_context(bad)?;
    let start = match range {
        "None" => None,
        r => Some(
            r.strip_prefix("Some(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.parse().ok())
                .with_context(bad)?,
        ),
    };
    Ok((path, start))
}

/// The /usr share of `sent`, the body bytes the server sent for `requests`.
/// The log has no Range ends, so the /usr Range requests are what is left
/// once every other request is paid for at its file's size from its start
/// (the server sends the whole file for a start past its end).
fn account(requests: &[Request], sent: u64) -> Result<Served> {
    let mut s = Served::default();
    // Bytes of every request but the /usr Range ones, and of /usr's among them.
    let (mut whole, mut usr_whole) = (0u64, 0u64);
    for r in requests {
        let size = r.size.unwrap_or(0);
        let body = match r.start {
            Some(a) if a < size => size - a,
            _ => size,
        };
        match (r.kind, r.start) {
            (Kind::UsrDelta, Some(_)) => {
                s.ranges += 1;
                continue;
            }
            (Kind::UsrDelta, None) => {
                s.whole_files += 1;
                usr_whole += body;
            }
            (Kind::UsrFull, _) => {
                s.full_chunks += 1;
                usr_whole += body;
            }
            (Kind::Other, Some(_)) => bail!(
                "{} was fetched by Range: its end is not logged, so the bytes of /usr cannot be told apart",
                r.path
            ),
            (Kind::Other, None) => {}
        }
        whole += body;
    }
    s.range_bytes = sent.checked_sub(whole).with_context(|| {
        format!("the server sent {sent} bytes, less than the {whole} its whole-file requests cost")
    })?;
    ensure!(
        s.ranges > 0 || s.range_bytes == 0,
        "the server sent {} bytes no logged request accounts for",
        s.range_bytes
    );
    s.bytes = usr_whole + s.range_bytes;
    Ok(s)
}

/// Classifies the server's log so far against `manifest` (files in `repo`)
/// and accounts its bytes (see [`account`]).
fn served_for_usr(server: &Server, repo: &Path, manifest: &Manifest) -> Result<Served> {
    // The log first: a request logged later can only add to `sent`, which
    // makes /usr look dearer, never cheaper.
    let log = server.log();
    let sent = server.faults.sent.load(Ordering::SeqCst);
    let mut kinds: BTreeMap<&str, Kind> = BTreeMap::new();
    for image in &manifest.images {
        // "usr" itself, and the images block-delta derives from it
        // (`usr.blockindex`, `usr.blocks`).
        let kind = match image.name.as_str() {
            "usr" => Kind::UsrFull,
            n if n.starts_with("usr.") => Kind::UsrDelta,
            _ => continue,
        };
        for c in &image.chunks {
            // A chunk shared with another image counts as the dearer kind.
            kinds
                .entry(c.file.as_str())
                .and_modify(|k| {
                    if kind == Kind::UsrFull {
                        *k = kind
                    }
                })
                .or_insert(kind);
        }
    }
    let mut requests = Vec::new();
    for line in &log {
        let (path, start) = parse_logged(line)?;
        let rel = path.trim_start_matches('/');
        // Chunk paths resolve against the repository's root.
        let kind = kinds.get(rel).copied().unwrap_or(Kind::Other);
        let size = std::fs::metadata(repo.join(rel)).ok().map(|m| m.len());
        requests.push(Request {
            path: path.to_string(),
            start,
            kind,
            size,
        });
    }
    account(&requests, sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A logged request's path and Range start.
    type Logged<'a> = (&'a str, Option<u64>);

    #[test]
    fn reads_the_request_log() {
        // (line, path and start, or None for an error)
        let table: &[(&str, Option<Logged>)] = &[
            ("/root.json None", Some(("/root.json", None))),
            (
                "/chunks/ab.zst Some(4096)",
                Some(("/chunks/ab.zst", Some(4096))),
            ),
            ("/chunks/ab.zst Some(0)", Some(("/chunks/ab.zst", Some(0)))),
            ("/chunks/ab.zst Some(x)", None),
            ("/chunks/ab.zst 12", None),
            ("no-range", None),
        ];
        for (line, want) in table {
            assert_eq!(parse_logged(line).ok(), *want, "{line}");
        }
    }

    fn req(path: &str, start: Option<u64>, kind: Kind, size: Option<u64>) -> Request {
        Request {
            path: path.into(),
            start,
            kind,
            size,
        }
    }

    #[test]
    fn accounts_the_bytes_of_usr() {
        let meta = req("/channels/stable.json", None, Kind::Other, Some(1000));
        let missing = req("/roots/2.json", None, Kind::Other, None);
        let index = req("/chunks/i.zst", None, Kind::UsrDelta, Some(300));
        let range = |a| req("/chunks/b.zst", Some(a), Kind::UsrDelta, Some(1 << 20));
        let full = req("/chunks/u.zst", None, Kind::UsrFull, Some(5000));
        let resumed = req("/chunks/k.zst", Some(10), Kind::Other, Some(100));
        let served = |bytes, whole_files, ranges, range_bytes, full_chunks| Served {
            bytes,
            whole_files,
            ranges,
            range_bytes,
            full_chunks,
        };
        // (requests, bytes sent, what /usr cost or None for an error)
        let table: Vec<(Vec<Request>, u64, Option<Served>)> = vec![
            // Metadata only: nothing for /usr.
            (
                vec![meta.clone(), missing.clone()],
                1000,
                Some(served(0, 0, 0, 0, 0)),
            ),
            // The index whole and two ranges: the ranges get what is left.
            (
                vec![meta.clone(), index.clone(), range(0), range(8192)],
                1000 + 300 + 700,
                Some(served(1000, 1, 2, 700, 0)),
            ),
            // A full-image chunk is /usr at its size, and is counted.
            (
                vec![meta.clone(), full.clone()],
                6000,
                Some(served(5000, 0, 0, 0, 1)),
            ),
            // Less sent than the whole files cost: the log and counter disagree.
            (vec![meta.clone(), index.clone()], 1200, None),
            // Bytes beyond the whole files with no Range request to own them.
            (vec![meta.clone()], 1500, None),
            // Another file by Range: its end is unknown.
            (vec![meta.clone(), resumed, range(0)], 2000, None),
        ];
        for (i, (requests, sent, want)) in table.into_iter().enumerate() {
            assert_eq!(account(&requests, sent).ok(), want, "case {i}");
        }
    }

    #[test]
    fn finds_the_agents_delta_line() {
        let line = "delta: 27000 blocks copied, 440 fetched in 12 requests (900000 bytes + 880000 of index; full image 60000000 bytes)";
        // The agent may say more after the full image's size.
        let longer = "delta: 26224 blocks copied, 1300 fetched in 205 requests (2654248 bytes + 548032 of index; full image 76392192 bytes; chunks 0..28)";
        let table = [
            (line, Some((12, 900000, 60000000))),
            (longer, Some((205, 2654248, 76392192))),
            ("no delta (the release has no block index)", None),
            ("delta: planning against the active slot", None),
        ];
        for (text, want) in table {
            let console = format!("boot\n[   41.2] cairn-updated[301]: {text}\nready in slot b\n");
            let got = agent_delta_line(&console).ok();
            assert_eq!(
                got,
                want.map(|(requests, range_bytes, full)| AgentDelta {
                    line: text.into(),
                    requests,
                    range_bytes,
                    full,
                }),
                "{text}"
            );
        }
    }
}
