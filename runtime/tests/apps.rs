//! Apps end to end: an OCI layout made by umoci, imported into a scratch
//! image store, run with `cairn-run run --name`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_run::portfwd::{self, Listeners};
use cairn_run::spec::Publish;

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

/// An OCI layout with one busybox image, built by umoci.
fn host_with_image() -> Host {
    host_with_image_with(|_| {})
}

/// [`host_with_image`], with `extra` adding to the image's rootfs.
fn host_with_image_with(extra: impl FnOnce(&Path)) -> Host {
    let host = Host {
        dir: tempfile::Builder::new()
            .prefix("cairn-run-apps")
            .tempdir()
            .unwrap(),
    };
    let layout = busybox_layout_with(host.dir.path(), extra);
    let l = |tag: &str| format!("{}:{tag}", layout.display());
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
         ip link show lo | head -n 1; \
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
    // The private network's loopback is up.
    assert!(o.contains("<LOOPBACK,UP"), "{o}");
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

/// Outside a delegated systemd unit (this test process, or a cgroup v1
/// host) `--cgroups split` is refused in one line that says what to do,
/// before anything is created.
#[test]
fn split_cgroups_outside_a_delegated_unit_is_refused() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    let out = host.run("split", &["--cgroups", "split"], "true");
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("--cgroups split needs") || e.contains("Delegate=yes"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    let ps = host.ok(&["ps", "--json"]);
    assert!(!ps.contains("\"split\""), "{ps}");
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

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Setuid programs of an image, and ones the app's root makes in its
/// writable layer, are out of reach of host users while the app runs; the
/// app itself (as a non-root user too) runs as before.
#[test]
fn app_files_are_out_of_reach_of_host_users() {
    if !prerequisites(&["busybox", "umoci", "setpriv"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let host = host_with_image_with(|rootfs| {
        // Named busybox* so that it runs the applet its argument names.
        let su = rootfs.join("bin/busybox.suid");
        std::fs::copy(rootfs.join("bin/busybox"), &su).unwrap();
        std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o4755)).unwrap();
    });
    let images: serde_json::Value = serde_json::from_str(&host.ok(&["images", "--json"])).unwrap();
    let image_su = Path::new(images[0]["rootfs"].as_str().unwrap()).join("bin/busybox.suid");
    assert_eq!(mode(&image_su), 0o4755);
    let p755 = || std::fs::Permissions::from_mode(0o755);
    // World-traversable, as /var/lib/cairn and /run/cairn are on a host; the
    // three directories as an older cairn-run left them.
    std::fs::set_permissions(host.dir.path(), p755()).unwrap();
    for d in ["images", "bundles", "containers"] {
        std::fs::create_dir_all(host.p(d)).unwrap();
        std::fs::set_permissions(host.p(d), p755()).unwrap();
    }
    assert!(
        host_tools::nobody_can_run(&image_su),
        "the control: the hole as it was"
    );

    // The app's root makes a setuid copy in its writable layer.
    let out = host.run(
        "suid",
        &["--read-write"],
        "cp /bin/busybox /busybox.made-suid && chmod 4755 /busybox.made-suid",
    );
    assert!(out.status.success(), "{:?}", text(&out));
    for d in ["images", "bundles", "containers"] {
        assert_eq!(mode(&host.p(d)), 0o700, "{d}");
    }
    assert!(!host_tools::nobody_can_run(&image_su));
    let upper_su = host.p("containers/suid/upper/busybox.made-suid");
    assert_eq!(mode(&upper_su), 0o4755);
    assert!(!host_tools::nobody_can_run(&upper_su));

    // Running, as a non-root user: the app reaches its files, the host's
    // users do not reach them through the mounted rootfs.
    let child = host
        .cmd(&[
            "run",
            "--name",
            "suid",
            "--user",
            "nobody",
            IMAGE,
            "--",
            "sh",
            "-c",
            "(/bin/busybox.suid true && /busybox.made-suid true && id -u) > /dev/shm/out 2>&1; mv /dev/shm/out /dev/shm/ok; sleep 60",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_running(&host, "suid");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = host
            .cmd(&["exec", "suid", "--", "cat", "/dev/shm/ok"])
            .output()
            .unwrap();
        if out.status.success() {
            assert_eq!(text(&out).0, "65534\n");
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", text(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mounted = host.p("bundles/suid/rootfs");
    assert!(
        mounted.join("busybox.made-suid").exists(),
        "the bundle is mounted"
    );
    for p in [
        mounted.join("busybox.made-suid"),
        mounted.join("bin/busybox.suid"),
    ] {
        assert!(!host_tools::nobody_can_run(&p), "{}", p.display());
    }
    host.ok(&["stop", "suid", "--time", "1"]);
    child.wait_with_output().unwrap();
}

/// io_uring is not in the default seccomp profile: `io_uring_setup` fails
/// with EPERM in an app (ENOSYS where the kernel has no io_uring).
#[test]
fn io_uring_is_refused_to_apps() {
    if !prerequisites(&["busybox", "umoci", "cc"]) {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let c = src.path().join("iou.c");
    std::fs::write(
        &c,
        r#"#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    unsigned char params[120]; /* struct io_uring_params */
    memset(params, 0, sizeof params);
    long r = syscall(SYS_io_uring_setup, 1, params);
    printf("io_uring_setup=%s errno=%d\n", r < 0 ? "failed" : "ok", r < 0 ? errno : 0);
    return 0;
}
"#,
    )
    .unwrap();
    let bin = src.path().join("iou");
    let out = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&c)
        .output()
        .unwrap();
    assert!(out.status.success(), "cc: {:?}", text(&out));
    // The control: what the host's kernel does outside the profile.
    let host_out = Command::new(&bin).output().unwrap();
    let host_says = text(&host_out).0;

    let host = host_with_image_with(|rootfs| {
        std::fs::copy(&bin, rootfs.join("bin/iou")).unwrap();
    });
    let out = host.run("iou", &[], "/bin/iou");
    let (o, e) = text(&out);
    assert!(out.status.success(), "{o}{e}");
    assert!(
        o.contains("io_uring_setup=failed errno=1\n")
            || o.contains("io_uring_setup=failed errno=38\n"),
        "in the app: {o} (on the host: {host_says})"
    );
}

/// A host port that was free a moment ago.
fn free_tcp_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET; the whole response.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn published_tcp_port_reaches_the_app_and_is_released() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    let port = free_tcp_port();
    let publish = format!("{port}:8080");
    let mut child = host
        .cmd(&[
            "run",
            "--name",
            "web",
            "--net",
            "private",
            "--publish",
            &publish,
            IMAGE,
            "--",
            "sh",
            "-c",
            "mkdir -p /dev/shm/www && echo hello-from-the-app > /dev/shm/www/index.html && \
             trap 'exit 0' TERM; httpd -f -p 8080 -h /dev/shm/www & wait",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Until httpd listens, the proxy accepts and closes at once.
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match http_get(v4, "/index.html") {
            Ok(r) if !r.is_empty() => break r,
            _ => {}
        }
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("the app exited ({st}) before answering: {e}");
        }
        assert!(Instant::now() < deadline, "port {port} never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        response.starts_with("HTTP/1.") && response.contains(" 200 "),
        "{response}"
    );
    assert!(response.ends_with("hello-from-the-app\n"), "{response}");
    // Dual-stack: the same listener serves IPv6 clients.
    if ipv6_loopback() {
        let r = http_get(
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            "/index.html",
        )
        .unwrap();
        assert!(r.ends_with("hello-from-the-app\n"), "{r}");
    }

    host.ok(&["stop", "web", "--time", "5"]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // The listener went with the process.
    TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .unwrap_or_else(|e| panic!("port {port} is still taken after stop: {e}"));
}

#[test]
fn published_port_in_use_fails_the_start_cleanly() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    let taken = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = host.run("busy", &["--publish", &format!("{port}:80")], "true");
    let (_, e) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains(&format!("host port {port}/tcp")) && e.contains("already in use"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    // Nothing left behind.
    let ps: serde_json::Value = serde_json::from_str(&host.ok(&["ps", "--json"])).unwrap();
    assert!(
        !ps.as_array().unwrap().iter().any(|r| r["id"] == "busy"),
        "{ps}"
    );
    assert!(!host.p("bundles/busy").exists());
    drop(taken);

    // Forwards only go into a private network.
    for (net, hint) in [("host", "remove --publish"), ("none", "use --net private")] {
        let out = host.run("n", &["--net", net, "--publish", "18080:80"], "true");
        let (_, e) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{e}");
        assert!(
            e.contains(&format!("--net {net}")) && e.contains(hint),
            "{e}"
        );
    }
}

/// The proxy on its own against servers in a network namespace made with
/// `unshare`: UDP (busybox has no UDP server) with two clients, and a TCP
/// half-close.
#[test]
fn proxy_forwards_udp_flows_and_tcp_half_close_into_a_netns() {
    if !prerequisites(&["unshare"]) {
        return;
    }
    let mut holder = Command::new(which("unshare").unwrap())
        .args(["--net", "sleep", "120"])
        .spawn()
        .unwrap();
    let pid = holder.id() as i32;
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&ours)
    {
        assert!(
            Instant::now() < deadline,
            "unshare never entered a new netns"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let netns = portfwd::open_netns(pid).unwrap();
    portfwd::loopback_up(&netns).unwrap();

    // The "app": a UDP echo naming the sender, and a TCP server that reads
    // to EOF before it answers.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let app_ns = netns.clone();
    std::thread::spawn(move || {
        portfwd::enter_netns(&app_ns).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:5353").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:7000").unwrap();
        ready_tx.send(()).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let reply = format!("{}:{}", from.ip(), String::from_utf8_lossy(&buf[..n]));
                let _ = udp.send_to(reply.as_bytes(), from);
            }
        });
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut got = Vec::new();
            if conn.read_to_end(&mut got).is_ok() {
                let _ = write!(conn, "got {} bytes", got.len());
            }
        }
    });
    ready_rx.recv().unwrap();

    let (uport, tport) = (free_udp_port(), free_tcp_port());
    let publish = [
        Publish {
            host_port: uport,
            container_port: 5353,
            udp: true,
        },
        Publish {
            host_port: tport,
            container_port: 7000,
            udp: false,
        },
    ];
    let listeners = Listeners::bind(&publish).unwrap();
    listeners.start(netns.clone()).unwrap();

    // Each client gets its own replies; the app sees loopback (the known
    // limitation).
    let mut clients = vec![
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    if ipv6_loopback() {
        clients.push(UdpSocket::bind("[::1]:0").unwrap());
    }
    for round in 0..3 {
        for (i, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let to: SocketAddr = if c.local_addr().unwrap().is_ipv6() {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, uport))
            } else {
                SocketAddr::from((Ipv4Addr::LOCALHOST, uport))
            };
            let msg = format!("client {i} round {round}");
            c.send_to(msg.as_bytes(), to).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = c.recv_from(&mut buf).expect("a UDP reply");
            assert_eq!(from.port(), uport);
            assert_eq!(
                String::from_utf8_lossy(&buf[..n]),
                format!("127.0.0.1:{msg}")
            );
        }
    }

    // TCP: the request's end is passed on as a half-close, then the answer
    // comes back on the same connection.
    let mut s = TcpStream::connect(("127.0.0.1", tport)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&vec![7u8; 300_000]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 300000 bytes");

    // A bound port cannot be published again.
    let e = Listeners::bind(&publish[1..]).unwrap_err().to_string();
    assert!(
        e.contains(&format!("host port {tport}/tcp")) && e.contains("in use"),
        "{e}"
    );

    let _ = holder.kill();
    let _ = holder.wait();
}

/// `stop` racing the foreground `run` (a unit stopped while it starts): the
/// state is still "creating" or "created", or is being rewritten. Each round
/// must end with stop exiting 0 and the app gone, never with a stop that
/// succeeded while the app kept running.
#[test]
fn stop_right_after_start_stops_the_app() {
    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    for round in 0..15 {
        let name = format!("race{round}");
        let mut child = host
            .cmd(&["run", "--name", &name, IMAGE, "--", "sleep", "60"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let state = host.p("state").join(&name).join("state.json");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.exists() {
            assert!(Instant::now() < deadline, "round {round}: no state.json");
            std::thread::sleep(Duration::from_millis(1));
        }
        let out_stop = host.cmd(&["stop", &name, "--time", "2"]).output().unwrap();
        assert!(
            out_stop.status.success(),
            "round {round}: {:?}",
            text(&out_stop)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let ps = text(&host.cmd(&["ps", "--json"]).output().unwrap()).0;
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "round {round}: stop returned 0 but the app still runs: {ps}\nstop: {:?}\nrun: {}",
                    text(&out_stop),
                    text(&out).1
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "round {round}: {status:?}");
    }
}

/// `exec -t` at a shell, as `runc exec -t` or `podman exec -it`: the command
/// gets a pty of the caller's size, runs as the app's user, sees keystrokes,
/// its exit status comes back, and the caller's terminal is restored.
#[test]
fn exec_with_a_terminal_as_the_apps_user() {
    use nix::pty::{Winsize, openpty};
    use nix::sys::termios::{LocalFlags, tcgetattr};
    use std::sync::{Arc, Mutex};

    if !prerequisites(&["busybox", "umoci"]) {
        return;
    }
    let host = host_with_image();
    let child = host
        .cmd(&[
            "run",
            "--name",
            "sh",
            "--user",
            "1000:1000",
            IMAGE,
            "--",
            "sleep",
            "60",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_running(&host, "sh");

    let size = Winsize {
        ws_row: 30,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    let before = tcgetattr(&pty.slave).unwrap().local_flags;
    let slave = std::fs::File::from(pty.slave);
    let script = "id -u; tty; stty size; read l; echo \"got $l\"; exit 3";
    let mut exec = host
        .cmd(&["exec", "-it", "sh", "--", "sh", "-c", script])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave.try_clone().unwrap())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let seen = |s: &str| String::from_utf8_lossy(&output.lock().unwrap()).contains(s);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen("30 100") {
        assert!(
            Instant::now() < deadline,
            "no stty output: {:?}",
            String::from_utf8_lossy(&output.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    master.write_all(b"hello\r").unwrap();
    let status = loop {
        if let Some(s) = exec.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "exec -t did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert_eq!(status.code(), Some(3), "{out}");
    for want in ["1000", "/dev/pts/", "30 100", "got hello"] {
        assert!(out.contains(want), "{want:?} not in {out:?}");
    }
    let after = tcgetattr(&slave).unwrap().local_flags;
    assert_eq!(after, before, "caller's terminal not restored");
    assert!(after.contains(LocalFlags::ECHO | LocalFlags::ICANON));

    host.ok(&["stop", "sh", "--time", "1"]);
    child.wait_with_output().unwrap();
}
