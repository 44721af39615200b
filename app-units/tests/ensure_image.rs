//! `cairn-config ensure-image` (an app unit's ExecStartPre) against a real
//! oci-image store with an image made by umoci: present -> nothing runs;
//! absent and preloaded -> `cairn-run import`; absent -> `cairn-run pull`.
//! cairn-run itself is a stand-in script that records its arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use app_units::units::{self, Ensured};

fn have(tool: &str) -> bool {
    host_tools::require(&[(tool, "umoci")])
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// An OCI layout with one image (`latest`, no layers) made by umoci.
fn layout(dir: &Path) {
    run(Command::new("umoci").args(["init", "--layout"]).arg(dir));
    run(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:latest", dir.display())));
}

/// A cairn-run stand-in: records its argv (one per line), exits `code`.
fn stand_in(dir: &Path, code: i32) -> (String, std::path::PathBuf) {
    let log = dir.join("argv");
    let script = dir.join(format!("cairn-run-{code}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > '{}'\nexit {code}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), log)
}

#[test]
fn present_preloaded_or_pulled() {
    if !have("umoci") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let store_dir = d.path().join("store");
    let (ok, log) = stand_in(d.path(), 0);
    let argv = || std::fs::read_to_string(&log).unwrap_or_default();

    // Absent, not preloaded: pulled (over plain HTTP when asked).
    let got = units::ensure_image(&root, &store_dir, &ok, "10.0.2.2:5000/test/web:1", true);
    assert_eq!(
        got,
        Ok(Ensured::Fetched(vec![
            ok.clone(),
            "pull".into(),
            "--insecure".into(),
            "10.0.2.2:5000/test/web:1".into()
        ]))
    );
    assert_eq!(argv(), "pull\n--insecure\n10.0.2.2:5000/test/web:1\n");

    // Preloaded under its full name: imported from /usr.
    let pre = root.join("usr/share/cairn/images/docker.io/library/web+1");
    layout(&pre);
    let got = units::ensure_image(&root, &store_dir, &ok, "web:1", false);
    assert_eq!(
        got,
        Ok(Ensured::Fetched(vec![
            ok.clone(),
            "import".into(),
            pre.display().to_string(),
            "--name".into(),
            "web:1".into()
        ]))
    );

    // In the store: nothing runs.
    let store = oci_image::Store::open(&store_dir).unwrap();
    let mut trust = oci_image::TrustPolicy::new();
    trust
        .add("*", oci_image::Requirement::AcceptAnything)
        .unwrap();
    store.import(&pre, Some("web:1"), None, &trust).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert_eq!(
        units::ensure_image(&root, &store_dir, &ok, "web:1", false),
        Ok(Ensured::Present)
    );
    assert_eq!(
        units::ensure_image(&root, &store_dir, &ok, "docker.io/library/web:1", false),
        Ok(Ensured::Present)
    );
    assert!(!log.exists(), "cairn-run ran for an image in the store");

    // cairn-run failing fails the start, with a one-line reason.
    let (bad, _) = stand_in(d.path(), 3);
    let e = units::ensure_image(&root, &store_dir, &bad, "other:1", false).unwrap_err();
    assert!(
        e.contains("pull other:1") && e.contains("exit status: 3"),
        "{e}"
    );
    assert!(!e.contains('\n'));
    let e = units::ensure_image(
        &root,
        &store_dir,
        "/nonexistent/cairn-run",
        "other:1",
        false,
    )
    .unwrap_err();
    assert!(e.contains("cannot run /nonexistent/cairn-run"), "{e}");
}
