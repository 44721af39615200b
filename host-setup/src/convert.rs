//! `cairn-config convert [--out FILE] IGNITION.json|-`: an Ignition v3
//! config (Flatcar, Fedora CoreOS) turned into a host config.
//!
//! The conversion itself is `host_config::ignition` (pure); this is the
//! glue: read the file (or stdin for `-`), print one line per thing that was
//! left out to stderr, write the host config to stdout or, with `--out`,
//! durably to FILE (mode 0600: it may hold password hashes).

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use host_config::ignition;

pub const USAGE: &str = "usage: cairn-config convert [--out FILE] IGNITION.json (- reads stdin)";

#[derive(Debug, PartialEq, Eq)]
struct Args<'a> {
    input: &'a str,
    out: Option<&'a str>,
}

fn parse_args<'a>(args: &[&'a str]) -> Result<Args<'a>, String> {
    let mut input = None;
    let mut out = None;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        match a {
            "--out" | "-o" => match it.next() {
                Some(&f) if out.is_none() => out = Some(f),
                Some(_) => return Err("--out is given twice".into()),
                None => return Err("--out needs a file name".into()),
            },
            // "-" alone is stdin, not an option.
            _ if a.starts_with('-') && a != "-" => return Err(format!("unknown option {a}")),
            _ if input.is_some() => {
                return Err(format!("one Ignition config at a time ({a} is a second)"));
            }
            _ => input = Some(a),
        }
    }
    let input = input.ok_or("no Ignition config given (a file, or - for stdin)")?;
    Ok(Args { input, out })
}

fn read_input(input: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    if input == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the Ignition config from stdin")?;
    } else {
        text = std::fs::read_to_string(input)
            .with_context(|| format!("cannot read the Ignition config {input}"))?;
    }
    Ok(text)
}

/// Converts `text` (named `origin` in errors), the notes to `notes`, the
/// host config to `out` or `stdout`.
fn run(
    text: &str,
    origin: &str,
    out: Option<&Path>,
    stdout: &mut dyn Write,
    notes: &mut dyn Write,
) -> anyhow::Result<()> {
    let c = ignition::convert(text, origin)?;
    for n in &c.notes {
        writeln!(notes, "{n}").context("cannot write to stderr")?;
    }
    match out {
        Some(p) => {
            durable_file::write(p, c.toml.as_bytes(), durable_file::Options::new(0o600))
                .with_context(|| format!("cannot write the host config to {}", p.display()))?;
            writeln!(
                notes,
                "wrote {} ({} notes above); check it with cairn-config check {}",
                p.display(),
                c.notes.len(),
                p.display()
            )
            .context("cannot write to stderr")?;
        }
        None => stdout
            .write_all(c.toml.as_bytes())
            .context("cannot write the host config to stdout")?,
    }
    Ok(())
}

pub fn main(args: &[&str]) -> ExitCode {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(m) => {
            eprintln!("cairn-config convert: {m}; {USAGE}");
            return ExitCode::from(2);
        }
    };
    let origin = if a.input == "-" { "stdin" } else { a.input };
    let result = read_input(a.input).and_then(|text| {
        run(
            &text,
            origin,
            a.out.map(Path::new),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-config convert: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use host_config::HostConfig;

    #[test]
    fn arguments() {
        let ok: &[(&[&str], Args)] = &[
            (
                &["a.ign"],
                Args {
                    input: "a.ign",
                    out: None,
                },
            ),
            (
                &["-"],
                Args {
                    input: "-",
                    out: None,
                },
            ),
            (
                &["--out", "h.toml", "a.ign"],
                Args {
                    input: "a.ign",
                    out: Some("h.toml"),
                },
            ),
            (
                &["a.ign", "-o", "h.toml"],
                Args {
                    input: "a.ign",
                    out: Some("h.toml"),
                },
            ),
        ];
        for (args, want) in ok {
            assert_eq!(parse_args(args).as_ref(), Ok(want), "{args:?}");
        }
        let bad: &[(&[&str], &str)] = &[
            (&[], "no Ignition config"),
            (&["a", "b"], "one Ignition config at a time"),
            (&["--out"], "needs a file name"),
            (&["--out", "x", "--out", "y", "a"], "twice"),
            (&["--force", "a"], "unknown option --force"),
        ];
        for (args, want) in bad {
            match parse_args(args) {
                Err(e) => assert!(e.contains(want), "{args:?}: {e}"),
                Ok(a) => panic!("{args:?} accepted: {a:?}"),
            }
        }
    }

    const IGN: &str = r#"{"ignition": {"version": "3.4.0"},
        "storage": {"disks": [{"device": "/dev/sdb"}],
                    "files": [{"path": "/etc/hostname", "contents": {"source": "data:,n1"}}]}}"#;

    #[test]
    fn writes_stdout_and_notes() {
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        run(IGN, "a.ign", None, &mut out, &mut notes).expect("converts");
        let text = String::from_utf8(out).expect("utf-8");
        let cfg = HostConfig::parse(&text, "out").expect("valid");
        assert_eq!(cfg.hostname.as_deref(), Some("n1"));
        let notes = String::from_utf8(notes).expect("utf-8");
        assert!(
            notes.contains("left out storage.disks[0] (/dev/sdb): Cairn does not partition disks"),
            "{notes}"
        );
    }

    #[test]
    fn writes_out_file_0600() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("host.toml");
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        run(IGN, "a.ign", Some(&p), &mut out, &mut notes).expect("converts");
        assert!(out.is_empty());
        let text = std::fs::read_to_string(&p).expect("written");
        assert!(HostConfig::parse(&text, "out").is_ok());
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert!(String::from_utf8_lossy(&notes).contains("wrote "));
    }

    #[test]
    fn errors_are_one_line_and_name_the_input() {
        let d = tempfile::tempdir().expect("tempdir");
        for (text, out, want) in [
            ("{", None, "a.ign: not JSON"),
            (
                r#"{"ignition": {"version": "2.2.0"}}"#,
                None,
                "ign-converter",
            ),
            (
                IGN,
                Some(d.path().join("no/such/dir/h.toml")),
                "cannot write the host config to",
            ),
        ] {
            let (mut o, mut n) = (Vec::new(), Vec::new());
            let e = run(text, "a.ign", out.as_deref(), &mut o, &mut n).expect_err(text);
            let e = format!("{e:#}");
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = read_input("/nonexistent/x.ign").expect_err("missing");
        assert!(format!("{e:#}").contains("cannot read the Ignition config /nonexistent/x.ign"));
    }
}
