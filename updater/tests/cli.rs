//! cairnctl end to end against a loopback repository and a file-backed disk.

use std::path::Path;
use std::process::Command;

use cairn_updater::fixture::{self, Server};

fn cairnctl(dir: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    fixture::output(
        Command::new(env!("CARGO_BIN_EXE_cairnctl"))
            .args(fixture::cairnctl_args(dir, url))
            .args(args),
    )
}

#[test]
fn status_check_update_history_with_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rel = fixture::make_release(&dir.join("build"), "1.1.0", 300_000, 64 << 10, 3).unwrap();
    let root = fixture::make_repo(&dir.join("repo"), &[&rel]).unwrap();
    fixture::make_target(&dir.join("host"), 1 << 20).unwrap();
    fixture::write_host_files(dir, &root, "[update]\nchannel = \"stable\"\n").unwrap();
    let server = Server::start(&dir.join("repo")).unwrap();

    let (ok, out, err) = cairnctl(dir, &server.url, &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("slot a: prio 1 tries 0 ok 1"), "{out}");
    assert!(out.contains("DEVELOPMENT key"), "{out}");

    let (ok, out, err) = cairnctl(dir, &server.url, &["--json", "check", "--now"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["chosen"]["version"], "1.1.0", "{out}");

    let (ok, out, err) = cairnctl(dir, &server.url, &["update", "--now"]);
    assert!(ok, "{err}");
    assert!(out.contains("reboot needed"), "{out}");
    assert!(
        err.contains("chunk"),
        "plain progress lines when not a terminal: {err}"
    );

    let (ok, out, err) = cairnctl(dir, &server.url, &["--json", "status"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["slots"]["b"]["priority"], 2);
    assert_eq!(v["reboot_needed"], true);

    let (ok, out, _) = cairnctl(dir, &server.url, &["--json", "history"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"][0]["kind"], "installed");

    // B has never booted successfully: no rollback to it.
    let (ok, _, err) = cairnctl(dir, &server.url, &["rollback"]);
    assert!(!ok);
    assert!(
        err.contains("does not hold an OS that booted successfully"),
        "{err}"
    );
}
