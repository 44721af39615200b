//! Apps end to end: an OCI layout made by umoci, imported into a scratch
//! image store, run with `cairn-run run --name`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "cairn.test/busybox:1";

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root")
            .arg(self.p("state"))
            .arg("--image-store")
            .arg(self.p("images"))
            .arg("--trust-policy")
            .arg(self.p("trust.json"))
            .arg("--app-bundles")
            .arg(self.p("bundles"))
            .arg("--app-state")
            .arg(self.p("containers"))
            .args(args)
            .env_remove("NOTIFY_SOCKET");
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        let (o, e) = text(&out);
        assert!(out.status.success(), "{args:?}: {o}{e}");
        o
    }

    fn run(&self, name: &str, opts: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--name", name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMAGE, "--", "sh", "-c", script]);
        self.cmd(&args).output().unwrap()
    }
}

fn umoci(args: &[&str]) {
    let out = Command::new("umoci").args(args).output().unwrap();
    assert!(out.status.success(), "umoci {args:?}: {:?}", text(&out));
}

/// An OCI layout with one busybox image, built by umoci.
fn host_with_image() -> Host {
    let host = Host {
        dir: tempfile::Builder::new()
            .prefix("cairn-run-apps")
            .tempdir()
            .unwrap(),
    };
    let layout = host.p("layout");
    let l = |tag: &str| format!("{}:{tag}", layout.display());
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &l("1")]);
    let unpacked = host.p("unpacked");
    umoci(&["unpack", "--image", &l("1"), unpacked.to_str().unwrap()]);
    busybox_rootfs(&unpacked.join("rootfs"));
    umoci(&["repack", "--image", &l("1"), unpacked.to_str().unwrap()]);
    umoci(&[
        "config",
        "--image",
        &l("1"),
        "--config.cmd",
        "/bin/true",
        "--config.env",
        "FROM_IMAGE=yes",
        "--config.workingdir",
        "/tmp",
    ]);
    host.ok(&["trust", "add", "cairn.test", "--accept-anything"]);
    let out = host.ok(&["import", layout.to_str().unwrap(), "--name", IMAGE]);
    assert!(out.contains("cairn.test/busybox"), "{out}");
    host
}

#[test]
fn app_runs_with_the_default_security_settings() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();

    let images = host.ok(&["images", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&images).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|i| i["name"]
            .as_str()
            .is_some_and(|n| n.contains("cairn.test/busybox"))),
        "{images}"
    );

    // The image's cmd when no command is given.
    let out = host
        .cmd(&["run", "--name", "plain", IMAGE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    let out = host.run(
        "web",
        &["--env", "APP=1", "--memory", "64m", "--pids-limit", "50", "--hostname", "h1"],
        "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
         echo env=$FROM_IMAGE/$APP cwd=$(pwd) host=$(hostname); \
         touch /x 2>/dev/null && echo root-writable || echo root-readonly; \
         unshare -m true 2>/dev/null && echo unshare-allowed || echo unshare-denied; \
         echo kcore=$(head -c 16 /proc/kcore 2>/dev/null | wc -c); \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         exit 3",
    );
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{o}{e}");
    // Docker's 14 capabilities.
    assert!(o.contains("CapEff:\t00000000a80425fb"), "{o}");
    assert!(o.contains("CapBnd:\t00000000a80425fb"), "{o}");
    assert!(o.contains("NoNewPrivs:\t1"), "{o}");
    assert!(o.contains("Seccomp:\t2"), "{o}");
    assert!(o.contains("env=yes/1 cwd=/tmp host=h1"), "{o}");
    assert!(o.contains("root-readonly"), "{o}");
    assert!(o.contains("unshare-denied"), "{o}");
    assert!(o.contains("kcore=0"), "{o}");
    assert!(o.contains(&(64u64 << 20).to_string()), "{o}");
    // The container and its bundle are gone after the run.
    assert!(!host.p("bundles/web").exists());
    assert!(
        !host
            .cmd(&["state", "web"])
            .output()
            .unwrap()
            .status
            .success()
    );
}

#[test]
fn read_write_layer_survives_restarts_and_user_is_applied() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    let out = host.run("rw", &["--read-write"], "echo kept > /data.txt");
    assert!(out.status.success(), "{:?}", text(&out));
    let out = host.run("rw", &[], "cat /data.txt; id -u");
    assert_eq!(text(&out).0, "kept\n0\n", "{:?}", text(&out));
    let out = host.run("rw", &["--user", "nobody"], "id -u; id -g");
    assert_eq!(text(&out).0, "65534\n65534\n", "{:?}", text(&out));
    // The image's rootfs itself was not written.
    let images = host.ok(&["images", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&images).unwrap();
    let rootfs = Path::new(v[0]["rootfs"].as_str().unwrap());
    assert!(!rootfs.join("data.txt").exists());
}

#[test]
fn untrusted_image_is_refused_at_run() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    host.ok(&["trust", "rm", "cairn.test"]);
    let out = host.run("nope", &[], "true");
    let (_, e) = text(&out);
    assert!(!out.status.success());
    assert!(e.contains("not trusted"), "{e}");
}

fn wait_running(host: &Host, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = host.cmd(&["state", name]).output().unwrap();
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"running\"") {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ps_exec_and_stop() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    let mut args = vec![
        "run",
        "--name",
        "svc",
        IMAGE,
        "--",
        "sh",
        "-c",
        "echo up > /dev/shm/x; sleep 60",
    ];
    let child = host.cmd(&args).stdout(Stdio::null()).spawn().unwrap();
    args.clear();
    wait_running(&host, "svc");

    let ps: serde_json::Value = serde_json::from_str(&host.ok(&["ps", "--json"])).unwrap();
    let row = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "svc")
        .unwrap();
    assert_eq!(row["status"], "running");
    assert_eq!(
        row["annotations"]["org.cairn.image"],
        "cairn.test/busybox:1"
    );

    let out = host
        .cmd(&["exec", "svc", "--", "cat", "/dev/shm/x"])
        .output()
        .unwrap();
    assert_eq!(text(&out).0, "up\n", "{:?}", text(&out));
    let out = host
        .cmd(&["exec", "svc", "--", "sh", "-c", "exit 5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));

    // sh as pid 1 ignores SIGTERM, so stop escalates to SIGKILL.
    let t = Instant::now();
    host.ok(&["stop", "svc", "--time", "1"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137));
    assert!(t.elapsed() < Duration::from_secs(8));
}
