//! Import of an OCI layout, an OCI archive and a docker-archive made with umoci
//! and skopeo; store operations (get, list, remove, gc); trust on import.

mod common;

use std::fs;
use std::process::Command;

use common::*;
use oci_image::{Error, KeyPair, Requirement, Store, TrustPolicy, sign};

const TOOLS: &[&str] = &["umoci", "skopeo", "tar", "busybox"];

#[test]
fn import_layout_archive_and_docker_archive() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let trust = accept_all();

    // OCI layout directory.
    let a = store
        .import(&img.layout, Some("localhost/test/app:v1"), None, &trust)
        .unwrap();
    assert_eq!(a.name.as_deref(), Some("localhost/test/app:v1"));
    check_rootfs(&a.rootfs);
    assert_eq!(a.config.cmd, ["/bin/sh"]);
    assert!(
        a.config.env.contains(&"GREETING=hi".to_string()),
        "{:?}",
        a.config.env
    );
    assert_eq!(a.config.working_dir.as_deref(), Some("/etc"));
    // The digest is the layout's own manifest digest.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(img.layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(a.digest, index["manifests"][0]["digest"].as_str().unwrap());
    assert!(a.size > fs::metadata(BUSYBOX).unwrap().len() / 3);

    // OCI archive: a tar of the layout.
    let archive = img.dir.path().join("oci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&img.layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."));
    let b = store
        .import(&archive, Some("localhost/test/app:archive"), None, &trust)
        .unwrap();
    assert_eq!(b.digest, a.digest, "same manifest, same image");
    check_rootfs(&b.rootfs);

    // docker-archive (docker save format) from skopeo; the name comes from RepoTags.
    let docker = img.dir.path().join("docker.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:latest", img.layout.display()))
        .arg(format!(
            "docker-archive:{}:localhost/test/docker:v2",
            docker.display()
        )));
    let c = store.import(&docker, None, None, &trust).unwrap();
    assert_eq!(c.name.as_deref(), Some("localhost/test/docker:v2"));
    check_rootfs(&c.rootfs);
    assert_eq!(c.config.cmd, ["/bin/sh"]);

    // Lookups: by name, by digest, by prefix; listing.
    assert_eq!(store.get("localhost/test/app:v1").unwrap().digest, a.digest);
    assert_eq!(store.get(&a.digest).unwrap().digest, a.digest);
    assert_eq!(store.get(&a.digest[7..19]).unwrap().digest, a.digest);
    assert_eq!(
        store
            .get(&format!("localhost/test/app@{}", a.digest))
            .unwrap()
            .digest,
        a.digest
    );
    assert!(matches!(
        store.get("localhost/nope:1"),
        Err(Error::NotFound(_))
    ));
    let names: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .filter_map(|i| i.name)
        .collect();
    assert_eq!(
        names,
        [
            "localhost/test/app:archive",
            "localhost/test/app:v1",
            "localhost/test/docker:v2"
        ]
    );

    // Removing one of two names keeps the image; removing the last drops it.
    store.remove("localhost/test/app:v1").unwrap();
    assert!(a.rootfs.exists());
    store.remove("localhost/test/app:archive").unwrap();
    assert!(!a.rootfs.exists());
    let report = store.gc().unwrap();
    assert!(report.removed_blobs >= 2, "{report:?}");
    // The docker image still works after gc.
    check_rootfs(&store.get("localhost/test/docker:v2").unwrap().rootfs);
    store.remove(&c.digest).unwrap();
    store.gc().unwrap();
    assert_store_empty(&store);
}

#[test]
fn import_trust() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let key = KeyPair::from_seed([7; 32]);
    let stranger = KeyPair::from_seed([8; 32]);
    let mut trust = TrustPolicy::new();
    trust
        .add("localhost/signed/", Requirement::Signed(vec![key.public()]))
        .unwrap();
    trust
        .add("localhost/open", Requirement::AcceptAnything)
        .unwrap();
    let name = "localhost/signed/app:v1";
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(img.layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let sig_path = |n: &str, s: &oci_image::Signature| {
        let p = img.dir.path().join(format!("{n}.sig"));
        s.write(&p).unwrap();
        p
    };

    // No rule: refused with the command to run.
    let e = store
        .import(&img.layout, Some("localhost/other/app:v1"), None, &trust)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cairn-run trust add localhost/other/app"), "{e}");
    // Key-protected prefix without a signature.
    let e = store
        .import(&img.layout, Some(name), None, &trust)
        .unwrap_err();
    assert!(matches!(e, Error::SignatureRequired { .. }), "{e}");
    // Signed for another name, another digest, or by an unknown key.
    let bad = [
        ("other-name", sign("localhost/signed/other", &digest, &key)),
        (
            "other-digest",
            sign(name, &format!("sha256:{}", "0".repeat(64)), &key),
        ),
        ("unknown-key", sign(name, &digest, &stranger)),
    ];
    for (n, s) in &bad {
        let p = sig_path(n, s);
        let e = store
            .import(&img.layout, Some(name), Some(&p), &trust)
            .unwrap_err();
        assert!(matches!(e, Error::SignatureRequired { .. }), "{n}: {e}");
        assert_store_empty(&store);
    }
    // A valid signature (made for the name with any tag).
    let good = sig_path(
        "good",
        &sign("localhost/signed/app:other-tag", &digest, &key),
    );
    let image = store
        .import(&img.layout, Some(name), Some(&good), &trust)
        .unwrap();
    check_rootfs(&image.rootfs);
    // Kept in the store: verify_trust works offline, and sees policy changes.
    store
        .verify_trust(&store.get(name).unwrap(), &trust)
        .unwrap();
    let mut rotated = TrustPolicy::new();
    rotated
        .add(
            "localhost/signed",
            Requirement::Signed(vec![stranger.public()]),
        )
        .unwrap();
    assert!(store.verify_trust(&image, &rotated).is_err());
    assert!(store.verify_trust(&image, &TrustPolicy::new()).is_err());
    // Accept-anything prefix.
    let open = store
        .import(&img.layout, Some("localhost/open/app:v1"), None, &trust)
        .unwrap();
    store.verify_trust(&open, &trust).unwrap();
}

#[test]
fn gc_removes_crashed_staging_only() {
    if !prerequisites(&[]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let crashed = root.path().join("tmp/op-crashed");
    fs::create_dir_all(crashed.join("rootfs/bin")).unwrap();
    // One held by a live operation (its flock).
    let live = root.path().join("tmp/op-live");
    fs::create_dir(&live).unwrap();
    let f = fs::File::open(&live).unwrap();
    // SAFETY: valid fd.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) },
        0
    );
    // An orphan blob and rootfs (no image refers to them).
    fs::write(root.path().join("blobs/sha256").join("ab".repeat(32)), b"x").unwrap();
    fs::create_dir(root.path().join("rootfs").join("cd".repeat(32))).unwrap();
    let report = store.gc().unwrap();
    assert_eq!((report.removed_blobs, report.removed_rootfs), (1, 1));
    assert!(!crashed.exists());
    assert!(live.exists());
    drop(f);
    store.gc().unwrap();
    assert_store_empty(&store);
}

/// An image built for another architecture (its config says so; a single
/// manifest has no platform of its own) is refused with the reason, and
/// nothing is stored: running it would end in an exec format error.
#[test]
fn image_for_another_architecture_is_refused() {
    if !prerequisites(&[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = if oci_image::Platform::host().architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let layout = dir.path().join("layout");
    write_layout_for(&layout, &[(LayerBuilder::new().finish(), TAR)], other);
    let store = Store::open(&dir.path().join("store")).unwrap();
    match store.import(&layout, Some("localhost/test/other:1"), None, &accept_all()) {
        Err(e @ Error::WrongPlatform { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("linux/{other}")), "{msg}");
        }
        r => panic!("expected WrongPlatform, got {r:?}"),
    }
    assert_store_empty(&store);
    // The host's own architecture imports.
    let mine = dir.path().join("mine");
    write_layout(&mine, &[(LayerBuilder::new().finish(), TAR)]);
    store
        .import(&mine, Some("localhost/test/mine:1"), None, &accept_all())
        .unwrap();
}
