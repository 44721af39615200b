//! The OCI runtime CLI on a real busybox bundle, as root.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn sh(script: &str) -> serde_json::Value {
    default_config(&["sh", "-c", script])
}

#[test]
fn exit_codes_propagate() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    for (args, want) in [
        (vec!["true"], 0),
        (vec!["false"], 1),
        (vec!["sh", "-c", "exit 7"], 7),
    ] {
        let b = Bundle::new(&default_config(&args));
        let out = b.run();
        assert_eq!(out.status.code(), Some(want), "{args:?}: {:?}", text(&out));
        assert!(b.state().is_none(), "container not deleted after run");
    }
}

#[test]
fn stdout_and_stderr_arrive() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let b = Bundle::new(&sh("echo to-out; echo to-err >&2"));
    let out = b.run();
    let (o, e) = text(&out);
    assert!(out.status.success(), "{e}");
    assert_eq!(o, "to-out\n");
    assert!(e.contains("to-err"), "{e}");
}

fn wait_status(b: &Bundle, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The foreground `run` may not have created the container yet.
        let st = b.state();
        if let Some(st) = &st
            && st["status"] == want
        {
            return st.clone();
        }
        assert!(Instant::now() < deadline, "never reached {want}: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_by_signal_gives_128_plus_n() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let b = Bundle::new(&sh("sleep 30"));
    let child = b
        .cmd(&["run", "--bundle"])
        .arg(b.path())
        .arg(&b.id)
        .spawn()
        .unwrap();
    wait_status(&b, "running");
    let k = b.cmd(&["kill", &b.id, "KILL"]).output().unwrap();
    assert!(k.status.success(), "{:?}", text(&k));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
}

#[test]
fn sigterm_to_cairn_run_is_forwarded() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    // pid 1 of a pid namespace only gets signals it handles: the trap proves
    // the signal reached the container process.
    let b = Bundle::new(&sh("trap 'exit 42' TERM; while :; do sleep 0.05; done"));
    let child = b
        .cmd(&["run", "--bundle"])
        .arg(b.path())
        .arg(&b.id)
        .spawn()
        .unwrap();
    wait_status(&b, "running");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn lifecycle_create_start_state_kill_delete() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let b = Bundle::new(&sh("sleep 30"));
    let pid_file = b.path().join("pid");
    // The container keeps stdout/stderr open, so capture into files, not pipes.
    let log = std::fs::File::create(b.path().join("create.log")).unwrap();
    let status = b
        .cmd(&["create", "--bundle"])
        .arg(b.path())
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&b.id)
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(b.path().join("create.log")).unwrap()
    );
    let st = b.state().unwrap();
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], json!(b.id));
    assert!(st["ociVersion"].is_string());
    assert_eq!(st["bundle"], json!(b.path()));
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );

    assert!(b.cmd(&["start", &b.id]).status().unwrap().success());
    assert_eq!(wait_status(&b, "running")["pid"], pid);
    // delete without --force refuses a running container
    assert!(!b.cmd(&["delete", &b.id]).status().unwrap().success());

    assert!(
        b.cmd(&["kill", &b.id, "SIGKILL"])
            .status()
            .unwrap()
            .success()
    );
    wait_status(&b, "stopped");
    assert!(b.cmd(&["delete", &b.id]).status().unwrap().success());
    assert!(b.state().is_none());
    let missing = b.cmd(&["state", &b.id]).output().unwrap();
    assert!(
        text(&missing).1.contains("does not exist"),
        "{:?}",
        text(&missing)
    );
}

/// runc's `exec` form, as podman's conmon calls it: a command line, a
/// process file, `--detach` with a pid file; a missing command is 127.
#[test]
fn exec_into_a_running_container() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let b = Bundle::new(&sh("sleep 30"));
    let created = b
        .cmd(&["create", "--bundle"])
        .arg(b.path())
        .arg(&b.id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(created.success());
    assert!(b.cmd(&["start", &b.id]).status().unwrap().success());
    let init = wait_status(&b, "running")["pid"].as_i64().unwrap();
    let pid_ns = |pid: i64| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();

    let out = b
        .cmd(&["exec", &b.id, "sh", "-c", "echo in $(hostname); exit 5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{:?}", text(&out));
    assert_eq!(text(&out).0, "in runc\n");

    let process = b.path().join("process.json");
    std::fs::write(
        &process,
        json!({
            "args": ["sh", "-c", "echo $X from $(pwd)"],
            "env": ["PATH=/bin", "X=process-file"],
            "cwd": "/bin",
            "user": {"uid": 0, "gid": 0},
            "terminal": false
        })
        .to_string(),
    )
    .unwrap();
    let out = b
        .cmd(&["exec", "--process"])
        .arg(&process)
        .arg(&b.id)
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, "process-file from /bin\n");

    std::fs::write(
        &process,
        json!({"args": ["sleep", "30"], "env": ["PATH=/bin"], "cwd": "/",
               "user": {"uid": 0, "gid": 0}})
        .to_string(),
    )
    .unwrap();
    let pid_file = b.path().join("exec.pid");
    let started = Instant::now();
    // The detached process keeps the stdio it is given: no pipes here.
    let status = b
        .cmd(&["exec", "--detach", "--pid-file"])
        .arg(&pid_file)
        .arg("--process")
        .arg(&process)
        .arg(&b.id)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "--detach waited"
    );
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        pid_ns(pid),
        pid_ns(init),
        "exec'd process outside the container"
    );

    let out = b.cmd(&["exec", &b.id, "/no/such/cmd"]).output().unwrap();
    assert_eq!(out.status.code(), Some(127), "{:?}", text(&out));
    assert!(
        text(&out)
            .1
            .contains("\"/no/such/cmd\": no such file or directory"),
        "{:?}",
        text(&out)
    );
    let missing = b
        .cmd(&["exec", "--process", "/no/such.json", &b.id])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).1.contains("/no/such.json"),
        "{:?}",
        text(&missing)
    );
}

/// As runc: `delete --force` of a container that is not there succeeds
/// (podman cleans up failed creates with it); without --force it is an error.
#[test]
fn forced_delete_of_a_missing_container_succeeds() {
    let b = Bundle::new(&sh("true"));
    let out = b
        .cmd(&["delete", "--force", "never-created"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let out = b.cmd(&["delete", "never-created"]).output().unwrap();
    assert!(text(&out).1.contains("does not exist"), "{:?}", text(&out));
    assert!(!out.status.success());
}

#[test]
fn security_settings_visible_inside() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let b = Bundle::new(&sh(
        "grep -E '^(NoNewPrivs|CapBnd|CapEff)' /proc/self/status; \
         touch /newfile 2>/dev/null && echo root-writable || echo root-readonly; \
         echo kcore=$(head -c 16 /proc/kcore 2>/dev/null | wc -c) keys=$(head -c 16 /proc/keys 2>/dev/null | wc -c) firmware=$(ls /sys/firmware | wc -l); \
         echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo procsys-writable || echo procsys-readonly",
    ));
    let out = b.run();
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(o.contains("NoNewPrivs:\t1"), "{o}");
    // AUDIT_WRITE(29) KILL(5) NET_BIND_SERVICE(10)
    assert!(o.contains("CapBnd:\t0000000020000420"), "{o}");
    assert!(o.contains("CapEff:\t0000000020000420"), "{o}");
    assert!(o.contains("root-readonly"), "{o}");
    assert!(o.contains("kcore=0 keys=0 firmware=0"), "{o}");
    assert!(o.contains("procsys-readonly"), "{o}");
}

fn with_resources(script: &str, resources: serde_json::Value) -> serde_json::Value {
    let mut c = sh(script);
    c["linux"]["resources"] = resources;
    c
}

#[test]
fn memory_limit_applied() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let limit = 32u64 << 20;
    // The container's own memory cgroup is its /sys/fs/cgroup/memory root on
    // v1; allocation beyond the limit must end in the OOM killer. The
    // allocating pipeline volunteers to be its victim (oom_score_adj 1000,
    // inherited by head and tail): once in a CI run the killer chose the
    // container's shell, whose exit then hid the result.
    let c = with_resources(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         (echo 1000 > /proc/self/oom_score_adj; head -c 200m /dev/zero | tail > /dev/null); echo tail=$?",
        json!({"memory": {"limit": limit, "swap": limit}, "devices": [{"allow": false, "access": "rwm"}]}),
    );
    let b = Bundle::new(&c);
    let out = b.run();
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(
        o.lines().next() == Some(&limit.to_string()),
        "limit not visible: {o}"
    );
    assert!(
        o.contains("tail=137"),
        "allocation beyond the limit not OOM-killed: {o}"
    );
}

#[test]
fn pids_limit_bounds_a_fork_bomb() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let c = with_resources(
        // Counting with a glob needs no fork, which would fail at the limit.
        "sh -c 'for i in $(seq 1 60); do sleep 5 & done' 2>/dev/null; set -- /proc/[0-9]*; echo procs=$#; exit 0",
        json!({"pids": {"limit": 20}}),
    );
    let b = Bundle::new(&c);
    let out = b.run();
    let (o, e) = text(&out);
    let n: usize = o
        .trim()
        .strip_prefix("procs=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{o}{e}"));
    assert!((15..=20).contains(&n), "{n} processes with pids.max=20");
}

#[test]
fn device_rules_enforced_or_refused() {
    if !prerequisites(&["busybox"]) {
        return;
    }
    let mut c = with_resources(
        "mknod /tmp/disk b 7 0 && (head -c 1 /tmp/disk > /dev/null 2>&1 && echo opened || echo denied)",
        json!({"devices": [{"allow": false, "access": "rwm"}]}),
    );
    c["process"]["capabilities"]["bounding"] = json!(["CAP_MKNOD"]);
    c["process"]["capabilities"]["effective"] = json!(["CAP_MKNOD"]);
    c["process"]["capabilities"]["permitted"] = json!(["CAP_MKNOD"]);
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    let b = Bundle::new(&c);
    let out = b.run();
    let (o, e) = text(&out);
    let unified = std::fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    if unified {
        assert!(
            !out.status.success(),
            "device rules on cgroup v2 were not refused: {o}"
        );
        assert!(e.contains("device cgroup rule"), "{e}");
    } else {
        assert!(out.status.success(), "{e}");
        assert!(o.contains("denied"), "device rule not enforced: {o}");
    }
}

/// Differential check: Debian's runc on the same bundle.
#[test]
fn exit_codes_match_runc() {
    if !prerequisites(&["busybox", "runc"]) {
        return;
    }
    for args in [
        vec!["true"],
        vec!["false"],
        vec!["sh", "-c", "exit 7"],
        vec!["sh", "-c", "exit 255"],
        vec!["/nonexistent"],
    ] {
        let b = Bundle::new(&default_config(&args));
        let ours = b.run();
        let runc_root = b.path().join("runc-state");
        let theirs = Command::new(which("runc").unwrap())
            .arg("--root")
            .arg(&runc_root)
            .args(["run", "--bundle"])
            .arg(b.path())
            .arg(&b.id)
            .output()
            .unwrap();
        let ours_code = ours.status.code();
        let theirs_code = theirs.status.code();
        if args == ["/nonexistent"] {
            // Both fail to start the process; the exact code is runtime-specific.
            assert_ne!(ours_code, Some(0));
            assert_ne!(theirs_code, Some(0));
        } else {
            assert_eq!(
                ours_code,
                theirs_code,
                "{args:?}: ours {:?} runc {:?}",
                text(&ours),
                text(&theirs)
            );
        }
    }
}
