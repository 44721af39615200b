//! Shared helpers: busybox bundles, tool checks, running cairn-run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn-run");

/// Whether a test may run: root and `tools` (see `host_tools`: missing ones
/// fail under `cargo xtask test` and skip with a reason otherwise).
pub fn prerequisites(tools: &[&str]) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return host_tools::unavailable("these tests need root");
    }
    let pairs: Vec<(&str, &str)> = tools.iter().map(|t| (*t, package_of(t))).collect();
    host_tools::require(&pairs)
}

fn package_of(tool: &str) -> &str {
    match tool {
        "busybox" => "busybox-static",
        other => other,
    }
}

pub use host_tools::which;

/// A busybox-static rootfs with applet symlinks.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = which("busybox").expect("busybox");
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
}

pub fn umoci(args: &[&str]) {
    let out = Command::new("umoci").args(args).output().unwrap();
    assert!(out.status.success(), "umoci {args:?}: {:?}", text(&out));
}

/// `<dir>/layout`, an OCI layout made by umoci whose tag `1` is a busybox
/// rootfs; callers set its config with `umoci config`.
pub fn busybox_layout(dir: &Path) -> PathBuf {
    busybox_layout_with(dir, |_| {})
}

/// [`busybox_layout`], with `extra` adding to the rootfs before it is packed.
pub fn busybox_layout_with(dir: &Path, extra: impl FnOnce(&Path)) -> PathBuf {
    let layout = dir.join("layout");
    let image = format!("{}:1", layout.display());
    umoci(&["init", "--layout", layout.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    let unpacked = dir.join("unpacked");
    umoci(&["unpack", "--image", &image, unpacked.to_str().unwrap()]);
    busybox_rootfs(&unpacked.join("rootfs"));
    extra(&unpacked.join("rootfs"));
    umoci(&["repack", "--image", &image, unpacked.to_str().unwrap()]);
    layout
}

/// The config `runc spec` writes (runtime-tools' default), with `args`.
pub fn default_config(args: &[&str]) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A bundle in a fresh temp dir, plus a private state root and a unique id.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub id: String,
}

impl Bundle {
    pub fn new(config: &Value) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cairn-run-test")
            .tempdir()
            .unwrap();
        busybox_rootfs(&dir.path().join("rootfs"));
        let b = Bundle {
            root: dir.path().join("state"),
            id: format!(
                "t{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::SeqCst)
            ),
            dir,
        };
        b.write_config(config);
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write_config(&self, config: &Value) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    pub fn run(&self) -> Output {
        self.cmd(&["run", "--bundle"])
            .arg(self.path())
            .arg(&self.id)
            .output()
            .unwrap()
    }

    pub fn state(&self) -> Option<Value> {
        let out = self.cmd(&["state", &self.id]).output().unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("state JSON"))
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.cmd(&["delete", "--force", &self.id]).output();
    }
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
