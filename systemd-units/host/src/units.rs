//! Apps as systemd units: the unit text `cairn-app-generator` writes for each
//! `[[apps]]` entry, the record of what it generated, and the decision
//! cairn-config takes from that record (reload, restart, stop).
//!
//! Units are full files named `cairn-app@<name>.service` (as podman's quadlet
//! does), so `systemctl cat` shows everything in one place, while drop-ins in
//! /etc/systemd/system/cairn-app@.service.d/ still apply to every app.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::apps::{App, Containers, Network, Restart, VOLUMES_DIR, VolumeSource};
use crate::config::HostConfig;

/// cairn-run, as the builder installs it.
pub const CAIRN_RUN: &str = "/usr/bin/cairn-run";
/// cairn-config (its `ensure-image` verb prepares an app's image).
pub const CAIRN_CONFIG: &str = "/usr/lib/cairn/cairn-config";
/// Wanted by multi-user.target; wants every app.
pub const TARGET: &str = "cairn-apps.target";
/// `[[apps]]` and `[containers]` of the last valid host config, saved on ROOT
/// by cairn-config: the generator runs before /oem is mounted and before
/// cairn-config, so this is what it reads (relative to `/`).
pub const SAVED_CONFIG: &str = "var/lib/cairn/host-config.toml";
/// What the generator produced: one `<app> <sha256 of its unit>` line each.
pub const GENERATED: &str = "run/cairn/apps.generated";
/// Images the builder preloaded: `<dir>/<preload_name(image)>/` is an OCI
/// layout.
pub const PRELOAD_DIR: &str = "usr/share/cairn/images";

/// The directory name of a preloaded image: the reference with `:` as `+`
/// (tools such as umoci and skopeo read `path:tag`, so paths avoid `:`; `+`
/// never occurs in a reference, so the mapping is one to one). The builder
/// (image-builder/src/board.rs `preload_name`) uses the same rule.
pub fn preload_name(image: &str) -> String {
    image.replace(':', "+")
}
/// cairn-run's image store.
pub const STORE_DIR: &str = "/var/lib/cairn/images";
/// Seconds cairn-run waits after the stop signal before SIGKILL.
pub const STOP_GRACE: u64 = 10;

/// One word of an `Exec*=` line, quoted by systemd's rules (systemd.service
/// "Command lines"): `%` and `$` are doubled everywhere (specifiers and
/// variable expansion apply inside quotes too); words with anything outside
/// a plain set go in double quotes with C escapes, which also keeps a lone
/// `;` from being read as a command separator.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,".contains(&b));
    if plain {
        return word.to_string();
    }
    let mut s = String::with_capacity(word.len() + 2);
    s.push('"');
    for c in word.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

pub fn exec_line(argv: &[String]) -> String {
    argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn fmt_cpus(c: f64) -> String {
    // `0.5`, `2`: what cairn-run's --cpus parses.
    let s = format!("{c}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// `cairn-run run --name <app> [flags] <image> [-- command…]`.
pub fn run_argv(app: &App) -> Vec<String> {
    let mut a: Vec<String> = vec![
        CAIRN_RUN.into(),
        "run".into(),
        "--name".into(),
        app.name.clone(),
        // The container lives below the unit (which has Delegate=yes).
        "--cgroups".into(),
        "split".into(),
    ];
    let mut flag = |f: &str, v: String| {
        a.push(f.to_string());
        a.push(v);
    };
    flag("--net", app.network.as_str().to_string());
    for p in &app.ports {
        flag("--publish", p.to_string());
    }
    for (k, v) in &app.env {
        flag("--env", format!("{k}={v}"));
    }
    for v in &app.volumes {
        flag("--volume", v.to_flag(&app.name));
    }
    if let Some(m) = app.memory {
        flag("--memory", m.to_string());
    }
    if let Some(c) = app.cpus {
        flag("--cpus", fmt_cpus(c));
    }
    if let Some(p) = app.pids {
        flag("--pids-limit", p.to_string());
    }
    if let Some(u) = &app.user {
        flag("--user", u.clone());
    }
    if let Some(w) = &app.workdir {
        flag("--workdir", w.clone());
    }
    if app.read_write {
        a.push("--read-write".into());
    }
    a.push(app.image.clone());
    if !app.command.is_empty() {
        a.push("--".into());
        a.extend(app.command.iter().cloned());
    }
    a
}

/// The ExecStartPre that makes sure the image is in the store.
pub fn ensure_argv(app: &App, containers: Option<&Containers>) -> Vec<String> {
    let mut a = vec![CAIRN_CONFIG.to_string(), "ensure-image".to_string()];
    if containers.is_some_and(|c| c.is_insecure(&app.image)) {
        a.push("--insecure".into());
    }
    a.push(app.image.clone());
    a
}

/// `uid` or `uid:gid`, digits only.
fn numeric_owner(u: &str) -> bool {
    let num = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match u.split_once(':') {
        Some((a, b)) => num(a) && num(b),
        None => num(u),
    }
}

/// The full unit file of one app.
pub fn unit_text(app: &App, containers: Option<&Containers>) -> String {
    let mut u = String::new();
    let mut line = |s: &str| {
        u.push_str(s);
        u.push('\n');
    };
    line(&format!(
        "# Generated by cairn-app-generator from [[apps]] {:?} of the host config.",
        app.name
    ));
    line("# Change the host config, not this file.");
    line("[Unit]");
    line(&format!(
        "Description=Cairn app {} ({})",
        app.name, app.image
    ));
    line("Documentation=man:systemd.service(5)");
    line("Wants=network-online.target");
    // cairn-config writes the image trust policy the pull checks.
    line("After=network-online.target cairn-config.service");
    line(&format!("PartOf={TARGET}"));
    line("RequiresMountsFor=/var/lib/cairn");
    line("");
    line("[Service]");
    if app.notify {
        line("Type=notify");
        // The notification comes from inside the container, not from
        // cairn-run (the main process).
        line("NotifyAccess=all");
    } else {
        line("Type=exec");
    }
    line(&format!("SyslogIdentifier={}", app.name));
    let mut named: Vec<&str> = app
        .volumes
        .iter()
        .filter_map(|v| match &v.source {
            VolumeSource::Named(n) => Some(n.as_str()),
            VolumeSource::Path(_) => None,
        })
        .collect();
    named.sort_unstable();
    named.dedup();
    for n in &named {
        // systemd creates it (0755, root) before the start.
        line(&format!("StateDirectory=cairn/volumes/{}/{n}", app.name));
    }
    if let Some(owner) = app.user.as_deref().filter(|u| numeric_owner(u)) {
        // A named volume belongs to the app, as Docker's take the owner of
        // the image's mount point: a numeric user can write to it. (A user
        // name means nothing on the host: it is resolved in the image.)
        for n in &named {
            line(&format!(
                "ExecStartPre=/usr/bin/chown {owner} {VOLUMES_DIR}/{}/{n}",
                app.name
            ));
        }
    }
    line(&format!(
        "ExecStartPre={}",
        exec_line(&ensure_argv(app, containers))
    ));
    line(&format!("ExecStart={}", exec_line(&run_argv(app))));
    // `-`: after the app exited on its own there is nothing to stop.
    line(&format!(
        "ExecStop=-{} stop --time {STOP_GRACE} {}",
        CAIRN_RUN, app.name
    ));
    // The stop signal goes to the container by cairn-run stop, then SIGTERM
    // to cairn-run alone; SIGKILL to everything only after the timeout.
    // Everything includes the container: cairn-run puts it in a sub-cgroup
    // of the unit (`--cgroups split`), so systemd's stop, kill and
    // accounting cover it even when cairn-run itself died. (ExecStop runs
    // in systemd's `.control` sub-cgroup then.)
    line("Delegate=yes");
    line("KillMode=mixed");
    line(&format!("TimeoutStopSec={}", STOP_GRACE + 20));
    // A first pull of a large image can take minutes.
    line("TimeoutStartSec=15min");
    // cairn-run exits 128+n when the app dies of signal n: a stop by
    // SIGTERM, SIGINT or SIGQUIT is a clean stop.
    line("SuccessExitStatus=130 131 143");
    line(&format!("Restart={}", app.restart.as_str()));
    if app.restart != Restart::No {
        line("RestartSec=5");
    }
    if app.network == Network::Host {
        line("# network = \"host\": the app shares the host's network stack.");
    }
    u
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// App name -> sha256 of its unit text.
pub type Record = BTreeMap<String, String>;

/// What the generator writes for `cfg` (as a [`Record`]).
pub fn record_of(cfg: &HostConfig) -> Record {
    cfg.apps
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                sha256_hex(&unit_text(a, cfg.containers.as_ref())),
            )
        })
        .collect()
}

pub fn format_record(r: &Record) -> String {
    let mut s = String::from("# cairn-app-generator: <app> <sha256 of its unit>\n");
    for (name, hash) in r {
        let _ = writeln!(s, "{name} {hash}");
    }
    s
}

/// `None` if the text is not a record (the generator could not read the
/// config, or an older format).
pub fn parse_record(text: &str) -> Option<Record> {
    let mut r = Record::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (name, hash) = l.split_once(' ')?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        r.insert(name.to_string(), hash.to_string());
    }
    Some(r)
}

/// What cairn-config does after applying the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `systemctl daemon-reload` (re-runs the generator).
    pub reload: bool,
    /// Units of apps that were removed: stop them (a reload alone leaves a
    /// running unit running).
    pub stop: Vec<String>,
    /// Units whose definition changed: restart them if running.
    pub restart: Vec<String>,
    /// `systemctl start --no-block cairn-apps.target`.
    pub start_target: bool,
}

/// Compares what the generator recorded (`None`: no record) with what the
/// saved config gives now.
pub fn plan(recorded: Option<&str>, wanted: &Record) -> Plan {
    let old = recorded.and_then(parse_record);
    let unit = |n: &String| crate::apps::unit_name(n);
    match old {
        Some(old) if &old == wanted => Plan::default(),
        Some(old) => Plan {
            reload: true,
            stop: old
                .keys()
                .filter(|n| !wanted.contains_key(*n))
                .map(unit)
                .collect(),
            restart: old
                .iter()
                .filter(|(n, h)| wanted.get(*n).is_some_and(|w| w != *h))
                .map(|(n, _)| unit(n))
                .collect(),
            start_target: !wanted.is_empty(),
        },
        None => Plan {
            reload: true,
            stop: Vec::new(),
            restart: Vec::new(),
            start_target: !wanted.is_empty(),
        },
    }
}

/// Writes `text` via a temporary file and rename.
pub fn write_atomic(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.cairn-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes one unit per app into the generator output `dir` and a
/// `cairn-apps.target.wants/` link to each. Returns the record.
pub fn generate(cfg: &HostConfig, dir: &Path) -> std::io::Result<Record> {
    let wants = dir.join(format!("{TARGET}.wants"));
    if !cfg.apps.is_empty() {
        std::fs::create_dir_all(&wants)?;
    }
    let mut record = Record::new();
    for app in &cfg.apps {
        let text = unit_text(app, cfg.containers.as_ref());
        let name = app.unit_name();
        std::fs::write(dir.join(&name), &text)?;
        let link = wants.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(PathBuf::from("..").join(&name), &link)?;
        record.insert(app.name.clone(), sha256_hex(&text));
    }
    Ok(record)
}

/// The image an app needs, and how to get it when the store lacks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// `cairn-run import <dir> --name <image>`: preloaded in /usr.
    Import(PathBuf),
    /// `cairn-run pull <image>`.
    Pull,
}

/// Where a preloaded layout of `image` would be: under its name as written,
/// then under its full name (`alpine:3` = `docker.io/library/alpine:3`).
pub fn preload_candidates(root: &Path, image: &str) -> Vec<PathBuf> {
    let base = root.join(PRELOAD_DIR);
    let mut names = vec![image.to_string()];
    if let Ok(r) = oci_image::Reference::parse(image) {
        let full = r.store_name();
        if full != image {
            names.push(full);
        }
    }
    names
        .into_iter()
        // Validated references have no `..` component; keep it that way.
        .filter(|n| !n.split('/').any(|c| c == ".." || c == "." || c.is_empty()))
        .map(|n| base.join(preload_name(&n)))
        .collect()
}

pub fn choose_fetch(candidates: &[PathBuf]) -> Fetch {
    candidates
        .iter()
        .find(|d| d.join("index.json").is_file() && d.join("oci-layout").is_file())
        .map_or(Fetch::Pull, |d| Fetch::Import(d.clone()))
}

/// The cairn-run command for `fetch`.
pub fn fetch_argv(fetch: &Fetch, image: &str, insecure: bool) -> Vec<String> {
    fetch_argv_with(CAIRN_RUN, fetch, image, insecure)
}

fn fetch_argv_with(cairn_run: &str, fetch: &Fetch, image: &str, insecure: bool) -> Vec<String> {
    match fetch {
        Fetch::Import(dir) => vec![
            cairn_run.into(),
            "import".into(),
            dir.to_string_lossy().into_owned(),
            "--name".into(),
            image.into(),
        ],
        Fetch::Pull => {
            let mut a = vec![cairn_run.to_string(), "pull".into()];
            if insecure {
                a.push("--insecure".into());
            }
            a.push(image.into());
            a
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> HostConfig {
        HostConfig::parse(text, "t").expect("valid")
    }

    #[test]
    fn quoting_follows_systemd_rules() {
        for (word, quoted) in [
            ("/usr/bin/cairn-run", "/usr/bin/cairn-run"),
            ("--env", "--env"),
            ("A=1", "A=1"),
            ("10.0.2.2:5000/test/web:1", "10.0.2.2:5000/test/web:1"),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("it's", "\"it's\""),
            ("100%", "\"100%%\""),
            ("$HOME", "\"$$HOME\""),
            ("${X}", "\"$${X}\""),
            ("C:\\dir", "\"C:\\\\dir\""),
            (";", "\";\""),
            ("a\nb\tc", "\"a\\nb\\tc\""),
            ("\u{1}", "\"\\u0001\""),
            ("é", "\"é\""),
        ] {
            assert_eq!(quote(word), quoted, "{word:?}");
        }
    }

    #[test]
    fn unit_of_a_full_app() {
        let c = cfg(crate::apps::tests::FULL);
        let text = unit_text(&c.apps[0], c.containers.as_ref());
        let want = r#"# Generated by cairn-app-generator from [[apps]] "web" of the host config.
# Change the host config, not this file.
[Unit]
Description=Cairn app web (10.0.2.2:5000/test/web:1)
Documentation=man:systemd.service(5)
Wants=network-online.target
After=network-online.target cairn-config.service
PartOf=cairn-apps.target
RequiresMountsFor=/var/lib/cairn

[Service]
Type=exec
SyslogIdentifier=web
StateDirectory=cairn/volumes/web/data
ExecStartPre=/usr/bin/chown 1000:1000 /var/lib/cairn/volumes/web/data
ExecStartPre=/usr/lib/cairn/cairn-config ensure-image --insecure 10.0.2.2:5000/test/web:1
ExecStart=/usr/bin/cairn-run run --name web --cgroups split --net private --publish 8080:80/tcp --env KEY=value --volume /var/lib/cairn/volumes/web/data:/data --volume /srv/x:/x:ro --memory 268435456 --cpus 0.5 --pids-limit 200 --user 1000:1000 10.0.2.2:5000/test/web:1 -- /bin/httpd -f
ExecStop=-/usr/bin/cairn-run stop --time 10 web
Delegate=yes
KillMode=mixed
TimeoutStopSec=30
TimeoutStartSec=15min
SuccessExitStatus=130 131 143
Restart=always
RestartSec=5
"#;
        assert_eq!(text, want);
        let db = unit_text(&c.apps[1], c.containers.as_ref());
        for l in [
            "Type=notify\nNotifyAccess=all\n",
            "ExecStartPre=/usr/lib/cairn/cairn-config ensure-image ghcr.io/acme/db@sha256:",
            "ExecStart=/usr/bin/cairn-run run --name db --cgroups split --net host ghcr.io/acme/db@sha256:0123",
            "Restart=on-failure\n",
        ] {
            assert!(db.contains(l), "{l:?} not in\n{db}");
        }
        assert!(!db.contains("StateDirectory") && !db.contains("--insecure"));
    }

    #[test]
    fn hostile_values_stay_one_argument() {
        let c = cfg(r#"
[[apps]]
name = "x"
image = "alpine"
command = ["/bin/sh", "-c", "echo \"$HOME\" 100% ; rm -rf / \\ \n done"]
env = { A = "x y", B = "%n$USER" }
read_write = true
restart = "no"
cpus = 2
"#);
        let text = unit_text(&c.apps[0], None);
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap_or_default();
        assert_eq!(
            exec,
            r#"ExecStart=/usr/bin/cairn-run run --name x --cgroups split --net private --env "A=x y" --env "B=%%n$$USER" --cpus 2 --read-write alpine -- /bin/sh -c "echo \"$$HOME\" 100%% ; rm -rf / \\ \n done""#
        );
        assert!(!text.contains("RestartSec"), "{text}");
        assert_eq!(exec.lines().count(), 1);
    }

    #[test]
    fn record_round_trips_and_rejects_junk() {
        let c = cfg(crate::apps::tests::FULL);
        let r = record_of(&c);
        assert_eq!(r.keys().collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(parse_record(&format_record(&r)), Some(r));
        assert_eq!(
            parse_record(&format_record(&Record::new())),
            Some(Record::new())
        );
        assert_eq!(parse_record("invalid\n"), None);
        assert_eq!(parse_record("web abc\n"), None);
    }

    #[test]
    fn plan_decisions() {
        let h = |c: char| c.to_string().repeat(64);
        let rec = |items: &[(&str, char)]| -> Record {
            items.iter().map(|(n, c)| (n.to_string(), h(*c))).collect()
        };
        let text = |items: &[(&str, char)]| format_record(&rec(items));
        let u = |n: &str| format!("cairn-app@{n}.service");
        struct Case {
            what: &'static str,
            recorded: Option<String>,
            wanted: Record,
            plan: Plan,
        }
        let cases = [
            Case {
                what: "no apps, generator recorded none",
                recorded: Some(text(&[])),
                wanted: rec(&[]),
                plan: Plan::default(),
            },
            Case {
                what: "unchanged apps: nothing to do",
                recorded: Some(text(&[("web", 'a'), ("db", 'b')])),
                wanted: rec(&[("web", 'a'), ("db", 'b')]),
                plan: Plan::default(),
            },
            Case {
                what: "first boot: generator saw no saved config",
                recorded: Some(text(&[])),
                wanted: rec(&[("web", 'a')]),
                plan: Plan {
                    reload: true,
                    start_target: true,
                    ..Plan::default()
                },
            },
            Case {
                what: "no record (generator did not run)",
                recorded: None,
                wanted: rec(&[("web", 'a')]),
                plan: Plan {
                    reload: true,
                    start_target: true,
                    ..Plan::default()
                },
            },
            Case {
                what: "no record, no apps: reload anyway, nothing to start",
                recorded: None,
                wanted: rec(&[]),
                plan: Plan {
                    reload: true,
                    ..Plan::default()
                },
            },
            Case {
                what: "generator could not read the config",
                recorded: Some("invalid\n".into()),
                wanted: rec(&[("web", 'a')]),
                plan: Plan {
                    reload: true,
                    start_target: true,
                    ..Plan::default()
                },
            },
            Case {
                what: "one changed, one removed, one added",
                recorded: Some(text(&[("web", 'a'), ("db", 'b'), ("old", 'c')])),
                wanted: rec(&[("web", 'a'), ("db", 'x'), ("new", 'd')]),
                plan: Plan {
                    reload: true,
                    stop: vec![u("old")],
                    restart: vec![u("db")],
                    start_target: true,
                },
            },
            Case {
                what: "all apps removed",
                recorded: Some(text(&[("web", 'a')])),
                wanted: rec(&[]),
                plan: Plan {
                    reload: true,
                    stop: vec![u("web")],
                    ..Plan::default()
                },
            },
        ];
        for c in cases {
            assert_eq!(plan(c.recorded.as_deref(), &c.wanted), c.plan, "{}", c.what);
        }
    }

    #[test]
    fn preload_names() {
        for (image, dir) in [
            ("alpine", "alpine"),
            ("10.0.2.2:5000/test/web:1", "10.0.2.2+5000/test/web+1"),
            ("x@sha256:00ff", "x@sha256+00ff"),
        ] {
            assert_eq!(preload_name(image), dir);
        }
    }

    #[test]
    fn preloaded_layout_or_pull() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        let cands = preload_candidates(d.path(), "alpine:3");
        assert_eq!(
            cands,
            [
                d.path().join("usr/share/cairn/images/alpine+3"),
                d.path()
                    .join("usr/share/cairn/images/docker.io/library/alpine+3"),
            ]
        );
        assert_eq!(choose_fetch(&cands), Fetch::Pull);
        assert_eq!(
            fetch_argv(&Fetch::Pull, "alpine:3", true),
            ["/usr/bin/cairn-run", "pull", "--insecure", "alpine:3"]
        );
        // A directory without a layout in it is not a preload.
        std::fs::create_dir_all(&cands[1])?;
        std::fs::write(cands[1].join("index.json"), "{}")?;
        assert_eq!(choose_fetch(&cands), Fetch::Pull);
        std::fs::write(
            cands[1].join("oci-layout"),
            "{\"imageLayoutVersion\":\"1.0.0\"}",
        )?;
        assert_eq!(choose_fetch(&cands), Fetch::Import(cands[1].clone()));
        assert_eq!(
            fetch_argv(&Fetch::Import(cands[1].clone()), "alpine:3", true),
            [
                "/usr/bin/cairn-run".to_string(),
                "import".into(),
                cands[1].display().to_string(),
                "--name".into(),
                "alpine:3".into()
            ]
        );
        Ok(())
    }

    #[test]
    fn generate_writes_units_and_links() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        let c = cfg(crate::apps::tests::FULL);
        let r = generate(&c, d.path())?;
        assert_eq!(r, record_of(&c));
        for n in ["web", "db"] {
            let unit = format!("cairn-app@{n}.service");
            let link = d.path().join("cairn-apps.target.wants").join(&unit);
            assert_eq!(std::fs::read_link(&link)?, Path::new("..").join(&unit));
            assert_eq!(
                std::fs::read_to_string(&link)?,
                std::fs::read_to_string(d.path().join(&unit))?
            );
        }
        // Nothing at all without apps (no empty .wants).
        let e = tempfile::tempdir()?;
        assert!(generate(&HostConfig::default(), e.path())?.is_empty());
        assert_eq!(std::fs::read_dir(e.path())?.count(), 0);
        Ok(())
    }
}

/// What `cairn-config ensure-image` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// Already in the store: nothing run.
    Present,
    /// Ran this command, which succeeded.
    Fetched(Vec<String>),
}

/// The image is in the store at `store_dir`, or `cairn_run` imports it from
/// a preloaded layout under `root`, or pulls it. Errors are one line.
pub fn ensure_image(
    root: &Path,
    store_dir: &Path,
    cairn_run: &str,
    image: &str,
    insecure: bool,
) -> Result<Ensured, String> {
    let store = oci_image::Store::open(store_dir)
        .map_err(|e| format!("cannot open the image store {}: {e}", store_dir.display()))?;
    if store.get(image).is_ok() {
        return Ok(Ensured::Present);
    }
    let fetch = choose_fetch(&preload_candidates(root, image));
    let argv = fetch_argv_with(cairn_run, &fetch, image, insecure);
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    match std::process::Command::new(prog).args(args).status() {
        Ok(s) if s.success() => Ok(Ensured::Fetched(argv)),
        Ok(s) => Err(format!("`{}` failed ({s})", argv.join(" "))),
        Err(e) => Err(format!("cannot run {prog}: {e}")),
    }
}
