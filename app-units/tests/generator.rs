//! cairn-app-generator as systemd runs it: the real binary into a scratch
//! output directory, then the units it wrote checked by systemd itself
//! (`systemd-analyze verify`, and `systemd --test` to read the command lines
//! back as systemd parses them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use app_units::units;
use host_config::HostConfig;

const GENERATOR: &str = env!("CARGO_BIN_EXE_cairn-app-generator");

/// Apps whose command lines carry everything systemd treats specially.
const CONFIG: &str = r#"
[containers]
insecure_registries = ["10.0.2.2:5000"]
[[containers.trust]]
prefix = "10.0.2.2:5000/test/"
accept_anything = true
[[containers.trust]]
prefix = "docker.io/library"
accept_anything = true
[[apps]]
name = "web"
image = "10.0.2.2:5000/test/web:1"
command = ["/bin/sh", "-c", "echo \"$HOME\" ${X} 100% %n ; `id` \\ 'q' \t\u0001 é ~ * !x"]
env = { A = "x y", B = "%n$USER", C = ";" }
volumes = ["data:/data", "/srv/my files:/x:ro"]
ports = ["8080:80/tcp"]
memory = "256M"
cpus = 0.5
user = "0:0"
restart = "always"
health = ["/bin/true"]
boot_health = true
[[apps]]
name = "db"
image = "postgres:16"
network = "host"
notify = true
"#;

/// Fails under CAIRN_REQUIRE_IMAGE_TESTS=1 (CI), skips with a reason otherwise.
fn tool_missing(what: &str) -> bool {
    !host_tools::unavailable(&format!("{what} (Debian package systemd)"))
}

struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    out: PathBuf,
}

fn scratch(config: Option<&str>) -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let out = dir.path().join("out");
    std::fs::create_dir_all(root.join("var/lib/cairn")).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    if let Some(c) = config {
        std::fs::write(root.join(units::SAVED_CONFIG), c).unwrap();
    }
    Scratch {
        _dir: dir,
        root,
        out,
    }
}

fn generate(s: &Scratch, extra_dirs: bool) -> Output {
    let mut cmd = Command::new(GENERATOR);
    cmd.arg(&s.out).env("CAIRN_GENERATOR_ROOT", &s.root);
    if extra_dirs {
        cmd.arg(s.out.join("early")).arg(s.out.join("late"));
    }
    cmd.output().unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            v.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn writes_one_unit_per_app_and_records_them() {
    let s = scratch(Some(CONFIG));
    let out = generate(&s, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listing(&s.out),
        [
            "cairn-app@db.service",
            "cairn-app@web.service",
            "cairn-apps.target.wants",
            "cairn-apps.target.wants/cairn-app@db.service",
            "cairn-apps.target.wants/cairn-app@web.service",
        ]
    );
    let cfg = HostConfig::parse(CONFIG, "t").unwrap();
    let web = std::fs::read_to_string(s.out.join("cairn-app@web.service")).unwrap();
    assert_eq!(web, units::unit_text(&cfg.apps[0], cfg.containers.as_ref()));
    let record = std::fs::read_to_string(s.root.join(units::GENERATED)).unwrap();
    assert_eq!(record, units::format_record(&units::record_of(&cfg)));
    // What cairn-config would decide now: nothing, the units match.
    assert_eq!(
        units::plan(Some(&record), &units::record_of(&cfg)),
        units::Plan::default()
    );
}

#[test]
fn no_saved_config_gives_no_units() {
    let s = scratch(None);
    let out = generate(&s, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing(&s.out).is_empty());
    let record = std::fs::read_to_string(s.root.join(units::GENERATED)).unwrap();
    assert_eq!(units::parse_record(&record), Some(units::Record::new()));
}

#[test]
fn an_invalid_saved_config_gives_no_units_and_says_why() {
    let s = scratch(Some("[[apps]]\nname = \"Bad\"\nimage = \"x\"\n"));
    let out = generate(&s, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("apps[0].name") && err.contains("var/lib/cairn/host-config.toml"),
        "{err}"
    );
    assert!(listing(&s.out).is_empty());
    let record = std::fs::read_to_string(s.root.join(units::GENERATED)).unwrap();
    assert_eq!(
        units::parse_record(&record),
        None,
        "cairn-config must reload"
    );
}

#[test]
fn usage_error_without_an_output_dir() {
    let out = Command::new(GENERATOR).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `systemd-analyze verify --root`: the units load with no warning. The
/// scratch root gets the host's system units (for the dependencies) and
/// stand-ins for the two programs the units run.
#[test]
fn systemd_analyze_verify_accepts_the_units() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        tool_missing("systemd-analyze is not installed");
        return;
    }
    let host_units = Path::new("/usr/lib/systemd/system");
    if !host_units.join("multi-user.target").exists() {
        tool_missing("no systemd units in /usr/lib/systemd/system");
        return;
    }
    let s = scratch(Some(CONFIG));
    assert!(generate(&s, false).status.success());
    let sys = s.root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(sys.parent().unwrap()).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(host_units)
        .arg(&sys)
        .status()
        .unwrap();
    assert!(cp.success());
    let ours =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd-units/usr/lib/systemd/system");
    std::fs::copy(ours.join(units::TARGET), sys.join(units::TARGET)).unwrap();
    for exe in [units::CAIRN_RUN, units::CAIRN_CONFIG, "/usr/bin/chown"] {
        let p = s.root.join(exe.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy("/bin/true", &p).unwrap();
    }
    // verify runs no generators: their output goes where systemd finds
    // units without them, .wants links included.
    let unit_dir = s.root.join("etc/systemd/system");
    std::fs::create_dir_all(unit_dir.parent().unwrap()).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&s.out)
        .arg(&unit_dir)
        .status()
        .unwrap();
    assert!(cp.success());
    let mut paths = vec![sys.join(units::TARGET)];
    for e in std::fs::read_dir(&unit_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "service") {
            paths.push(p);
        }
    }
    paths.sort();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", s.root.display()))
        .args(&paths)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");

    // The check is real: a unit it cannot run is reported.
    std::fs::remove_file(s.root.join(units::CAIRN_RUN.trim_start_matches('/'))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", s.root.display()))
        .args(&paths[1..])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/usr/bin/cairn-run is not executable"),
        "{out:?}"
    );
}

/// Splits systemd's display of a command line (`systemd --test` dump:
/// words quoted like a shell, C escapes for control characters).
fn split_display(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => match chars.next() {
                Some('n') => cur.push('\n'),
                Some('t') => cur.push('\t'),
                Some('r') => cur.push('\r'),
                Some(d @ '0'..='7') => {
                    let mut v = d.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        if let Some(n) = chars.next().and_then(|c| c.to_digit(8)) {
                            v = v * 8 + n;
                        }
                    }
                    cur.push(char::from_u32(v).unwrap_or('?'));
                }
                Some(o) => cur.push(o),
                None => {}
            },
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// The exec lines, as systemd itself parses them, give back exactly the
/// argv we meant: `systemd --test` loads the unit and dumps each command
/// (before `$VAR` expansion, so a literal `$` shows as `$$`).
#[test]
fn systemd_reads_the_exec_lines_back_as_the_argv() {
    let systemd = Path::new("/lib/systemd/systemd");
    if !systemd.exists() {
        tool_missing("/lib/systemd/systemd is not installed");
        return;
    }
    let s = scratch(Some(CONFIG));
    assert!(generate(&s, false).status.success());
    // systemd refuses test mode as root; the files must be readable by nobody.
    let readable = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(s.out.parent().unwrap())
        .status()
        .unwrap();
    assert!(readable.success());
    let cfg = HostConfig::parse(CONFIG, "t").unwrap();
    for app in &cfg.apps {
        let unit = app.unit_name();
        let mut cmd = if nix_is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(systemd);
            c
        } else {
            Command::new(systemd)
        };
        let out = cmd
            .args(["--test", "--system", "--no-pager"])
            .arg(format!("--unit={unit}"))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", s.out.display()))
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || dump.is_empty() {
            tool_missing(&format!(
                "systemd --test does not run here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return;
        }
        let block: String = dump
            .split("-> Unit ")
            .find(|b| b.starts_with(&format!("{unit}:")))
            .unwrap_or_else(|| panic!("{unit} not in the dump"))
            .to_string();
        let mut got: Vec<(String, Vec<String>)> = Vec::new();
        let mut kind = String::new();
        for l in block.lines().map(str::trim) {
            if let Some(k) = l.strip_prefix("-> ").and_then(|k| k.strip_suffix(':')) {
                kind = k.to_string();
            } else if let Some(c) = l.strip_prefix("Command Line: ") {
                got.push((kind.clone(), split_display(c)));
            }
        }
        let pre_expansion = |argv: Vec<String>| -> Vec<String> {
            argv.into_iter().map(|w| w.replace('$', "$$")).collect()
        };
        let mut stop = vec![
            units::CAIRN_RUN.to_string(),
            "stop".into(),
            "--time".into(),
            units::STOP_GRACE.to_string(),
        ];
        stop.push(app.name.to_string());
        let mut want = Vec::new();
        if app.name.as_str() == "web" {
            want.push((
                "ExecStartPre".to_string(),
                ["/usr/bin/chown", "0:0", "/var/lib/cairn/volumes/web/data"]
                    .map(String::from)
                    .to_vec(),
            ));
        }
        want.extend([
            (
                "ExecStartPre".to_string(),
                pre_expansion(units::ensure_argv(app, cfg.containers.as_ref())),
            ),
            ("ExecStart".to_string(), pre_expansion(units::run_argv(app))),
            ("ExecStop".to_string(), stop),
        ]);
        assert_eq!(got, want, "{unit}");
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
