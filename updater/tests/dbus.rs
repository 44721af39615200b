//! cairn-updated on a private bus (a real `dbus-daemon` with the system bus's
//! default policy and the shipped policy file), driven by `cairnctl --bus`
//! against a loopback repository and a file-backed disk.
//!
//! Needs `dbus-daemon` and `dbus-monitor` (Debian: dbus) and `setpriv`
//! (util-linux). Without them the test fails under CAIRN_REQUIRE_IMAGE_TESTS=1
//! and is skipped otherwise.
//!
//! `CAIRN_UPDATER_BIN_DIR=<dir>` runs the `cairn-updated` and `cairnctl` found
//! there instead of this build's, e.g. the shipped static musl binaries (their
//! idle RSS is what the 8 MiB budget is about). `CAIRN_DBUS_TEST_MIB=<n>`
//! makes the release's /usr `n` MiB in 4 MiB chunks (RSS after a big update).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_updater::fixture::{self, Reaped, Server};
use common::Bus;

mod common;

/// This build's binary, or the one in CAIRN_UPDATER_BIN_DIR.
fn bin(name: &str, built: &str) -> PathBuf {
    match std::env::var_os("CAIRN_UPDATER_BIN_DIR") {
        Some(d) => Path::new(&d).join(name),
        None => PathBuf::from(built),
    }
}

fn cairnctl_bin() -> PathBuf {
    bin("cairnctl", env!("CARGO_BIN_EXE_cairnctl"))
}

struct World {
    _tmp: tempfile::TempDir,
    /// Chunks and bytes of the release's usr image.
    chunks: usize,
    usr_size: u64,
    dir: PathBuf,
    _server: Server,
    bus: Bus,
}

impl World {
    fn paths(&self) -> Vec<String> {
        fixture::cairnctl_args(&self.dir, &self._server.url)
    }

    /// `cairnctl --bus <args>` on the test bus, optionally as another user.
    fn cairnctl(&self, as_nobody: bool, args: &[&str]) -> (bool, String, String) {
        let mut cmd = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(self.dir.join("cairnctl"));
            c
        } else {
            Command::new(cairnctl_bin())
        };
        fixture::output(
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
                .arg("--bus")
                .args(args),
        )
    }
}

fn world() -> Option<World> {
    let tools = ["dbus-daemon", "dbus-monitor", "setpriv"];
    if !common::have_tools(&tools, "packages dbus, util-linux") {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // The unprivileged caller must reach the bus socket and its cairnctl copy.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(cairnctl_bin(), dir.join("cairnctl")).unwrap();

    let (usr, chunk) = match std::env::var("CAIRN_DBUS_TEST_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(mib) => (mib << 20, release_manifest::DEFAULT_CHUNK_SIZE),
        None => (2_000_000, 64 << 10),
    };
    let rel = fixture::make_release(&dir.join("build"), "1.1.0", usr, chunk, 3).unwrap();
    let m = release_manifest::Manifest::from_json(
        &std::fs::read(rel.join(release_manifest::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let image = m.image("usr").unwrap();
    let (chunks, usr_size) = (image.chunks.len(), image.size);
    let root = fixture::make_repo(&dir.join("repo"), &[&rel]).unwrap();
    std::fs::remove_dir_all(dir.join("build")).unwrap();
    fixture::make_target(&dir.join("host"), (usr_size + (1 << 20)).max(4 << 20)).unwrap();
    fixture::write_host_files(
        &dir,
        &root,
        "[update]\nchannel = \"stable\"\nreboot = \"off\"\n",
    )
    .unwrap();
    let server = Server::start(&dir.join("repo")).unwrap();

    let bus = common::start_bus(&dir, true);
    Some(World {
        _tmp: tmp,
        chunks,
        usr_size,
        dir,
        _server: server,
        bus,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn cairnctl_drives_the_service_over_dbus() {
    let Some(w) = world() else { return };
    let log = std::fs::File::create(w.dir.join("updated.log")).unwrap();
    let daemon = common::start_service(
        bin("cairn-updated", env!("CARGO_BIN_EXE_cairn-updated")),
        &w.bus,
        &w.paths(),
        log,
    );
    let daemon_log = || std::fs::read_to_string(w.dir.join("updated.log")).unwrap_or_default();

    // The service takes its name once it is set up.
    let started = Instant::now();
    let (out, err) = loop {
        let (ok, out, err) = w.cairnctl(false, &["status"]);
        if ok {
            break (out, err);
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "cairn-updated never answered: {err}\n{}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(out.contains("slot a: prio 1 tries 0 ok 1"), "{out}{err}");
    assert!(out.contains("DEVELOPMENT key"), "{out}");
    let idle = rss_kib(daemon.0.id());
    eprintln!("cairn-updated idle RSS: {idle} KiB");
    assert!(idle <= 8 << 10, "idle RSS {idle} KiB is over 8 MiB");

    let (ok, out, err) = w.cairnctl(false, &["--json", "check", "--now"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["chosen"]["version"], "1.1.0", "{out}");

    // An independent listener sees the signals on the bus.
    let monitor_out = std::fs::File::create(w.dir.join("monitor.log")).unwrap();
    let monitor = Reaped(
        Command::new("dbus-monitor")
            .args(["--address", &w.bus.address])
            .arg("type='signal',interface='dev.cairn.Updater1'")
            .stdout(monitor_out)
            .spawn()
            .expect("start dbus-monitor"),
    );
    std::thread::sleep(Duration::from_millis(300));

    let (ok, out, err) = w.cairnctl(false, &["update", "--now"]);
    assert!(ok, "{err}\n{}", daemon_log());
    assert!(out.contains("written to slot b and verified"), "{out}");
    assert!(out.contains("reboot needed"), "{out}");
    // Plain progress lines (no terminal), made from the Progress signals.
    assert!(
        daemon_log().contains("ready in slot b: reboot needed"),
        "{}",
        daemon_log()
    );
    let last = format!("chunk {n}/{n}: {s}/{s} bytes", n = w.chunks, s = w.usr_size);
    assert!(err.contains(&last), "{last:?} not in {err}");
    std::thread::sleep(Duration::from_millis(300));
    drop(monitor);
    let signals = std::fs::read_to_string(w.dir.join("monitor.log")).unwrap();
    let progress = signals.matches("member=Progress").count();
    assert!(
        progress >= w.chunks,
        "{progress} Progress signals for {} chunks:\n{signals}",
        w.chunks
    );
    for state in ["checking", "writing", "ready"] {
        assert!(
            signals.contains(&format!("string \"{state}\"")),
            "no StateChanged {state}:\n{signals}"
        );
    }

    let (ok, out, err) = w.cairnctl(false, &["--json", "status"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["slots"]["b"]["priority"], 2);
    assert_eq!(v["reboot_needed"], true);

    let (ok, out, err) = w.cairnctl(false, &["--json", "update", "--now"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["already_installed"], true, "{out}");

    let (ok, out, _) = w.cairnctl(false, &["--json", "history"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"][0]["kind"], "installed");

    // B never booted: the service refuses the rollback with the agent's reason.
    let (ok, _, err) = w.cairnctl(false, &["rollback"]);
    assert!(!ok);
    assert!(
        err.contains("does not hold an OS that booted successfully"),
        "{err}"
    );

    // Others may read, not change (the bus policy).
    let (ok, out, err) = w.cairnctl(true, &["status"]);
    assert!(ok, "status as nobody: {err}");
    assert!(out.contains("reboot needed"), "{out}");
    let (ok, _, _) = w.cairnctl(true, &["history"]);
    assert!(ok);
    for cmd in [&["check"][..], &["update", "--now"], &["rollback"]] {
        let (ok, _, err) = w.cairnctl(true, cmd);
        assert!(!ok, "{cmd:?} as nobody was allowed");
        assert!(err.contains("AccessDenied"), "{cmd:?}: {err}");
    }

    let after = rss_kib(daemon.0.id());
    let peak = std::fs::read_to_string(format!("/proc/{}/status", daemon.0.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(str::to_string)
        .unwrap_or_default();
    eprintln!("cairn-updated RSS after an update: {after} KiB ({peak})");
    drop(daemon);
}
