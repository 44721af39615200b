//! Image files are not host programs: a setuid-root binary shipped in an
//! image cannot be reached, let alone run, by an unprivileged host user.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use oci_image::{PRIVATE_DIR_MODE, Store};

const TOOLS: &[&str] = &["umoci", "busybox", "setpriv"];

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn setuid_files_of_images_are_out_of_reach_of_host_users() {
    if !prerequisites(TOOLS) {
        return;
    }
    // bin/busybox.suid: busybox, setuid root (named busybox* so that it
    // runs the applet named by its first argument).
    let img = build_image_with(|rootfs| {
        let su = rootfs.join("bin/busybox.suid");
        fs::copy(BUSYBOX, &su).unwrap();
        fs::set_permissions(&su, fs::Permissions::from_mode(0o4755)).unwrap();
    });
    // A world-traversable parent, as /var/lib/cairn is on a host.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("images");
    let store = Store::open(&root).unwrap();
    assert_eq!(mode(&root), PRIVATE_DIR_MODE, "a new store is root only");
    let image = store
        .import(&img.layout, Some("localhost/suid:1"), None, &accept_all())
        .unwrap();
    let su = image.rootfs.join("bin/busybox.suid");
    // The image is unpacked as it was built: the setuid bit is there.
    assert_eq!(mode(&su), 0o4755);
    assert!(
        !host_tools::nobody_can_run(&su),
        "nobody ran the image's setuid file"
    );
    let stat = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "stat"])
        .arg(&su)
        .output()
        .unwrap();
    assert!(!stat.status.success(), "nobody could stat it");
    assert!(
        String::from_utf8_lossy(&stat.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&stat.stderr)
    );

    // A store made before (world-traversable) is tightened when opened.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        host_tools::nobody_can_run(&su),
        "the control: the hole, reopened"
    );
    let store = Store::open(&root).unwrap();
    assert_eq!(mode(&root), PRIVATE_DIR_MODE);
    assert!(!host_tools::nobody_can_run(&su));
    assert!(store.get("localhost/suid:1").is_ok());
}
