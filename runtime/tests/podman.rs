//! Another tool drives cairn-run as its OCI runtime the way it drives runc:
//! Debian's podman (through conmon) runs, execs into, stops, kills and
//! removes containers with `--runtime cairn-run`, as root, with a private
//! store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// podman with its own store and state under `dir`, cairn-run as runtime.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        // podman names an `oci:` image after its path, and image names must
        // be lowercase: no random letters in this one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Podman {
            dir: tempfile::Builder::new()
                .prefix(&format!("cairn-run-podman-{}-{nanos}", std::process::id()))
                .rand_bytes(0)
                .tempdir()
                .unwrap(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.p("store"))
            .arg("--runroot")
            .arg(self.p("run"))
            .arg("--tmpdir")
            .arg(self.p("tmp"))
            .arg("--runtime")
            .arg(BIN)
            // No systemd here to ask for scopes, and no journal.
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .env("CONTAINERS_CONF", self.p("containers.conf"));
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        let (o, e) = text(&out);
        assert!(out.status.success(), "podman {args:?}: {e}");
        o
    }

    /// `podman run` with what every container here needs: no network
    /// (podman's network backends are not what is tested), and rlimits the
    /// host allows (podman asks for 1048576 open files by default, above
    /// the test machines' hard limit, which runc refuses too).
    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "run",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        all.extend_from_slice(args);
        self.cmd(&all).output().unwrap()
    }

    fn inspect(&self, name: &str) -> (String, String) {
        let out = self.ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            name,
        ]);
        let mut w = out.split_whitespace();
        (
            w.next().unwrap_or_default().to_string(),
            w.next().unwrap_or_default().to_string(),
        )
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "--all", "--force"]).output();
    }
}

fn image(dir: &Path) -> String {
    let layout = busybox_layout(dir);
    umoci(&[
        "config",
        "--image",
        &format!("{}:1", layout.display()),
        "--config.cmd",
        "/bin/sh",
    ]);
    format!("oci:{}:1", layout.display())
}

#[test]
fn podman_runs_stops_and_kills_containers_through_cairn_run() {
    if !prerequisites(&["busybox", "umoci", "podman", "conmon"]) {
        return;
    }
    let pm = Podman::new();
    std::fs::write(pm.p("containers.conf"), "").unwrap();
    let src = image(pm.dir.path());
    let id = pm.ok(&["pull", "--quiet", &src]);
    let img = id.trim();

    // Foreground: output and exit status come through conmon.
    let out = pm.run(&["--rm", img, "sh", "-c", "echo hello from cairn-run; exit 3"]);
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{o}\n{e}");
    assert_eq!(o, "hello from cairn-run\n", "{e}");

    // Detached, then `podman stop`: SIGTERM reaches the container's init.
    let script = "trap 'exit 7' TERM; while :; do sleep 1; done";
    let out = pm.run(&["-d", "--name", "stopme", img, "sh", "-c", script]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(pm.inspect("stopme").0, "running");
    let ps = pm.ok(&["ps", "--format", "{{.Names}}"]);
    assert!(ps.lines().any(|l| l == "stopme"), "{ps}");
    // `podman exec` (conmon calls `exec --process F --detach --pid-file P`):
    // output, exit status, env and workdir, a detached exec, and 127 for a
    // command that is not in the image, as with runc.
    let out = pm
        .cmd(&[
            "exec",
            "-e",
            "X=1",
            "-w",
            "/bin",
            "stopme",
            "sh",
            "-c",
            "echo $X $(pwd); exit 4",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{:?}", text(&out));
    assert_eq!(text(&out).0, "1 /bin\n");
    pm.ok(&["exec", "-d", "stopme", "sleep", "1000"]);
    let top = pm.ok(&["top", "stopme", "args"]);
    assert!(top.lines().any(|l| l.trim() == "sleep 1000"), "{top}");
    let out = pm
        .cmd(&["exec", "stopme", "/no/such/cmd"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{:?}", text(&out));

    pm.ok(&["stop", "--time", "10", "stopme"]);
    assert_eq!(pm.inspect("stopme"), ("exited".into(), "7".into()));

    // `podman kill`: SIGKILL, 128 + 9.
    let out = pm.run(&["-d", "--name", "killme", img, "sleep", "1000"]);
    assert!(out.status.success(), "{:?}", text(&out));
    pm.ok(&["kill", "killme"]);
    pm.ok(&["wait", "killme"]);
    assert_eq!(pm.inspect("killme"), ("exited".into(), "137".into()));

    pm.ok(&["rm", "stopme", "killme"]);
    let left = pm.ok(&["ps", "--all", "--quiet"]);
    assert!(left.trim().is_empty(), "containers left: {left}");
}
