//! The host config's apps, through the generator's argv, back out of
//! cairn-run's own command line: every app of the full example (and a few
//! more) turned into `cairn-run run --name …` by cairn-app-generator's code
//! (app-units), parsed by cairn-run's clap `Cli`, gives back the settings of
//! the config, both from the argv and from the unit's ExecStart= line as
//! systemd splits it.

use app_spec::{AppSettings, Cgroups, Restart, run_args};
use cairn_run::app::settings_from_cli;
use cairn_run::cli::{Cli, Command};
use clap::Parser;
use host_config::HostConfig;
use host_config::apps::App;

/// The full example, and apps that use what it does not.
fn configs() -> Vec<(&'static str, String)> {
    let mut v = vec![("full example", host_config::config::EXAMPLE.to_string())];
    // As the qemu app scenario writes it (qemu-tests/src/scenarios/app.rs).
    v.push((
        "qemu app scenario",
        "[[apps]]\nname = \"counter\"\nimage = \"10.0.2.2:5000/test/counter:1\"\n\
         command = [\"/bin/sh\", \"-c\", \"n=$(cat /data/boots 2>/dev/null || echo 0); echo $((n+1)) > /data/boots; exec sleep 100000\"]\n\
         volumes = [\"data:/data\"]\nrestart = \"always\"\nhealth = [\"/bin/test\", \"-s\", \"/data/boots\"]\nboot_health = true\n\
         [[apps]]\nname = \"web\"\nimage = \"10.0.2.2:5000/test/counter:1\"\n\
         command = [\"/bin/sh\", \"-c\", \"httpd -f -p 80 -h /www\"]\nports = [\"8080:80/tcp\"]\nmemory = \"64M\"\n"
            .to_string(),
    ));
    v.push((
        "every other setting",
        r#"
[[apps]]
name = "0-all-"
image = "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
command = ["/bin/sh", "-c", "echo \"$HOME\" 100% ; rm -rf / \\ \n done", "--", "-x", ""]
env = { A = "x y", B = "%n$USER", _C = "", D = "-d", E = "a=b\tc\u0001é" }
volumes = ["v.1_x:/d:rw", "/srv//x/:/x/./y:ro", "/:/host:ro"]
ports = ["53:53/udp", "53:53", "65535:1/tcp"]
memory = "1GiB"
cpus = 0.01
pids = 4194304
restart = "no"
read_write = true
user = "www-data:audio"
workdir = "/d/"
[[apps]]
name = "n"
image = "alpine"
network = "none"
memory = 6291456
cpus = 4096
user = "4294967294"
[[apps]]
name = "h"
image = "localhost:5000/a/b:c"
network = "host"
cpus = 3
"#
        .to_string(),
    ));
    v
}

fn apps() -> Vec<(String, App)> {
    configs()
        .into_iter()
        .flat_map(|(what, text)| {
            let cfg = HostConfig::parse(&text, what).unwrap_or_else(|e| panic!("{e}"));
            assert!(!cfg.apps.is_empty(), "{what}");
            // The generator reads the copy cairn-config saved: the same apps.
            let saved = HostConfig::parse(&cfg.apps_toml(), what).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(saved.apps, cfg.apps, "{what}");
            cfg.apps
                .into_iter()
                .map(move |a| (format!("{what}: {}", a.name), a))
        })
        .collect()
}

/// cairn-run's command line, parsed as the binary does.
fn parse(argv: &[String]) -> AppSettings {
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Command::Run(run) = cli.command else {
        panic!("{argv:?} is not run");
    };
    assert!(run.bundle.is_none(), "{argv:?}");
    settings_from_cli(&run).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"))
}

/// The settings say what the config says, value for value.
fn assert_same(what: &str, app: &App, s: &AppSettings) {
    let name = &app.name;
    assert_eq!(s.name, app.name, "{what}");
    assert_eq!(s.image, app.image, "{what}");
    assert_eq!(s.command, app.command, "{what}");
    let env: Vec<(&str, &str)> = s.env.iter().map(|e| (e.name(), e.value())).collect();
    let want: Vec<(&str, &str)> = app.env.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(env, want, "{what}");
    let binds: Vec<_> = app.volumes.iter().map(|v| v.bind(name)).collect();
    assert_eq!(s.volumes, binds, "{what}");
    assert_eq!(s.network, app.network, "{what}");
    assert_eq!(s.publish, app.ports, "{what}");
    assert_eq!(s.memory, app.memory, "{what}");
    assert_eq!(s.cpus, app.cpus, "{what}");
    assert_eq!(s.pids, app.pids, "{what}");
    assert_eq!(s.user, app.user, "{what}");
    assert_eq!(s.workdir, app.workdir, "{what}");
    assert_eq!(s.read_write, app.read_write, "{what}");
    assert_eq!(s.hostname, None, "{what}");
    assert_eq!(s.cgroups, Cgroups::Split, "{what}: app units delegate");
}

#[test]
fn every_app_round_trips_through_cairn_runs_command_line() {
    let apps = apps();
    assert!(apps.len() >= 7, "{}", apps.len());
    for (what, app) in &apps {
        let argv = app_units::units::run_argv(app);
        assert_eq!(argv[0], "/usr/bin/cairn-run", "{what}");
        let parsed = parse(&argv);
        assert_same(what, app, &parsed);
        // The whole of it, and the generator's own view of it.
        assert_eq!(parsed, app_units::units::run_settings(app), "{what}");
        // Canonical: written again, the same argv.
        assert_eq!(&argv[1..], run_args(&parsed), "{what}");
    }
}

/// One `Exec*=` command line split into words by systemd's rules
/// (systemd.service, "Command lines"), for what `quote` writes: plain words,
/// double-quoted words with C escapes, `%%` and `$$`.
fn systemd_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return words;
        };
        let quoted = first == '"';
        if quoted {
            chars.next();
        }
        let mut w = String::new();
        loop {
            match chars.next() {
                None => {
                    assert!(!quoted, "unterminated quote in {line:?}");
                    break;
                }
                Some('"') if quoted => break,
                Some(' ') if !quoted => break,
                Some(c @ ('%' | '$')) => {
                    assert_eq!(chars.next(), Some(c), "lone {c} in {line:?}");
                    w.push(c);
                }
                Some('\\') if quoted => match chars.next() {
                    Some('n') => w.push('\n'),
                    Some('t') => w.push('\t'),
                    Some('r') => w.push('\r'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        w.push(c.unwrap_or_else(|| panic!("bad \\u{hex} in {line:?}")));
                    }
                    Some(c @ ('"' | '\\')) => w.push(c),
                    other => panic!("unexpected escape {other:?} in {line:?}"),
                },
                Some(c) => {
                    assert!(quoted || !"\"\\;".contains(c), "{c:?} unquoted in {line:?}");
                    w.push(c);
                }
            }
        }
        words.push(w);
    }
}

#[test]
fn systemd_words_undo_the_generators_quoting() {
    for word in [
        "plain",
        "a b",
        "\"q\" \\ ;",
        "100% $HOME",
        "\n\t\r\u{1}é",
        "",
    ] {
        let line = app_units::units::exec_line(&[word.to_string(), "x".into()]);
        assert_eq!(systemd_words(&line), [word, "x"], "{line}");
    }
}

/// What systemd runs: the unit's ExecStart= and Restart= lines.
#[test]
fn every_unit_runs_the_config() {
    for (what, app) in apps() {
        let text = app_units::units::unit_text(&app, None);
        let field = |key: &str| -> String {
            let mut lines = text.lines().filter_map(|l| l.strip_prefix(key));
            let v = lines
                .next()
                .unwrap_or_else(|| panic!("{what}: no {key}\n{text}"));
            assert!(lines.next().is_none(), "{what}: two {key}");
            v.to_string()
        };
        let argv = systemd_words(&field("ExecStart="));
        assert_eq!(argv, app_units::units::run_argv(&app), "{what}");
        assert_same(&what, &app, &parse(&argv));
        // Restart= is systemd's, in the same words as the config's restart.
        let restart: Restart = field("Restart=").parse().unwrap();
        assert_eq!(restart, app.restart, "{what}");
    }
}
