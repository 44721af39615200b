//! One operation on the slots at a time in cairn-updated: `Rollback`, `Update`
//! (`UpdateVersion`) and the periodic update hold one claim for their whole
//! run. A rollback is held mid-way by making the other slot's `boot.sig` a
//! FIFO: the agent blocks reading it until the test writes the signature.
//!
//! The bus test needs `dbus-daemon` (Debian: dbus); without it it fails under
//! CAIRN_REQUIRE_IMAGE_TESTS=1 and is skipped otherwise.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_updater::dbus::Service;
use cairn_updater::fixture::{self, Reaped, Server};
use cairn_updater::http::HttpOptions;
use disk_layout::{Slot, boot_files};
use gpt_slots::Attrs;

mod common;

/// A host in `dir` (the layout of `fixture::cairnctl_args`) whose slot B holds
/// an OS that booted before, with `cairn/b/boot.sig` a FIFO; the repository
/// offers 1.1.0. Returns the signature to feed the FIFO.
fn host(dir: &Path) -> (Server, Vec<u8>) {
    let rel = fixture::make_release(&dir.join("build"), "1.1.0", 300_000, 64 << 10, 3).unwrap();
    let root = fixture::make_repo(&dir.join("repo"), &[&rel]).unwrap();
    let target = fixture::make_target(&dir.join("host"), 1 << 20).unwrap();
    fixture::write_host_files(
        dir,
        &root,
        "[update]\nchannel = \"stable\"\nreboot = \"off\"\n",
    )
    .unwrap();
    target
        .set_attrs(&[(Slot::B, Attrs::new(1, 0, true))])
        .unwrap();
    let b = target.esp_dir(Slot::B);
    std::fs::create_dir_all(&b).unwrap();
    let (k, i, c) = (&b"kernel b"[..], &b"initrd b"[..], &b"usrhash=bb"[..]);
    std::fs::write(b.join(boot_files::KERNEL), k).unwrap();
    std::fs::write(b.join(boot_files::INITRD), i).unwrap();
    std::fs::write(b.join(boot_files::CMDLINE), c).unwrap();
    let fifo = b.join(boot_files::SIGNATURE);
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let sig = boot_sig::sign_line(fixture::build_key().seed(), k, i, c);
    (Server::start(&dir.join("repo")).unwrap(), sig.to_vec())
}

fn fifo(dir: &Path) -> PathBuf {
    dir.join("host/esp")
        .join(Slot::B.esp_dir())
        .join(boot_files::SIGNATURE)
}

/// Opens the FIFO for writing once a reader (the rollback) has it open.
fn wait_for_reader(path: &Path) -> std::fs::File {
    let started = Instant::now();
    loop {
        // Without a reader, a non-blocking open for writing fails (ENXIO).
        if let Ok(f) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            return f;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the rollback never read {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn feed(mut f: std::fs::File, sig: &[u8]) {
    f.write_all(sig).unwrap();
}

#[test]
fn rollback_and_update_exclude_each_other_in_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, sig) = host(dir);
    let root = release_repo::load_root(&dir.join("repo")).unwrap();
    let target = cairn_updater::Target {
        disk: dir.join("host/disk.img"),
        slot_a: dir.join("host/usr-a.img"),
        slot_b: dir.join("host/usr-b.img"),
        esp: dir.join("host/esp"),
    };
    let opts = HttpOptions {
        attempts: 1,
        ..fixture::fast_http()
    };
    let agent = fixture::agent(
        &target,
        &dir.join("state"),
        &server.url,
        &root,
        Slot::A,
        "1.0.0",
        opts,
    );
    let service = Service::new(agent);

    // An update in progress (stalled in its check): no rollback meanwhile.
    server
        .faults
        .stall
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let s = service.clone();
    let update = std::thread::spawn(move || s.run_update(true, &mut |_| {}).is_some());
    let started = Instant::now();
    while service.state().0 != "checking" {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(service.run_rollback().unwrap_err(), "an update");
    assert!(update.join().unwrap(), "the update did not run");
    server
        .faults
        .stall
        .store(false, std::sync::atomic::Ordering::SeqCst);

    // A rollback in progress: no update (D-Bus or periodic) meanwhile.
    let s: Arc<Service> = service.clone();
    let rollback =
        std::thread::spawn(move || s.run_rollback().map(|r| r.map_err(|e| e.to_string())));
    let w = wait_for_reader(&fifo(dir));
    assert!(service.run_update(true, &mut |_| {}).is_none());
    assert_eq!(service.claim("a test").err(), Some("a rollback"));
    feed(w, &sig);
    let msg = rollback.join().unwrap().unwrap().unwrap();
    assert!(msg.contains("slot b boots next"), "{msg}");
    // Released: the next operation runs.
    assert!(service.claim("a test").is_ok());
}

/// `cairnctl --bus <args>`, killed (and reported as such) after `limit`.
fn cairnctl(address: &str, args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", address)
            .arg("--bus")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cairnctl"),
    );
    let started = Instant::now();
    loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            let mut out = String::new();
            for s in [
                child
                    .0
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
                child
                    .0
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut s = s;
                let _ = s.read_to_string(&mut out);
            }
            return (st.success(), out);
        }
        if started.elapsed() > limit {
            return (false, format!("cairnctl {args:?}: no answer in {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

use std::io::Read;

/// Over the bus: while a Rollback runs, the service still answers Status, and
/// refuses Update at once; the rollback then completes.
#[test]
fn dbus_update_is_refused_while_a_rollback_runs() {
    if !common::have_tools(&["dbus-daemon"], "package dbus") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, sig) = host(dir);
    let bus = common::start_bus(dir, false);
    let address = bus.address.clone();
    let _daemon = common::start_service(
        env!("CARGO_BIN_EXE_cairn-updated"),
        &bus,
        &fixture::cairnctl_args(dir, &server.url),
        Stdio::null(),
    );
    let started = Instant::now();
    while !cairnctl(&address, &["status"], Duration::from_secs(5)).0 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "cairn-updated never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (addr, long) = (address.clone(), Duration::from_secs(60));
    let rollback = std::thread::spawn(move || cairnctl(&addr, &["rollback"], long));
    let w = wait_for_reader(&fifo(dir));
    let quick = Duration::from_secs(10);
    let (ok, out) = cairnctl(&address, &["status"], quick);
    assert!(ok, "Status during a rollback: {out}");
    let (ok, out) = cairnctl(&address, &["update", "--now"], quick);
    assert!(!ok, "an update started during a rollback: {out}");
    assert!(out.contains("a rollback is running"), "{out}");
    feed(w, &sig);
    let (ok, out) = rollback.join().unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("slot b boots next"), "{out}");
    // The claim is released: an update may run now (B is the next boot, so
    // it is written over: that is the operator's call).
    let (ok, out) = cairnctl(&address, &["--json", "status"], quick);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["slots"]["b"]["priority"], 2, "{out}");

    // A boot on trial: Update over the bus is refused in one line, and the
    // other slot's bits are left alone.
    let target = cairn_updater::Target {
        disk: dir.join("host/disk.img"),
        slot_a: dir.join("host/usr-a.img"),
        slot_b: dir.join("host/usr-b.img"),
        esp: dir.join("host/esp"),
    };
    target
        .set_attrs(&[(Slot::A, Attrs::new(1, 2, false))])
        .unwrap();
    let before = target.read_attrs().unwrap();
    let (ok, out) = cairnctl(&address, &["update", "--now"], quick);
    assert!(!ok, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("cairnctl: slot a is on trial"), "{out}");
    assert_eq!(target.read_attrs().unwrap(), before);
}
