//! The O_NOFOLLOW walk used when openat2 is missing (ENOSYS, kernels < 5.6):
//! forced here, in its own test process, since the switch is process-wide.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use oci_image::{Error, Store};

#[test]
fn fallback_walk_refuses_symlinked_parents() {
    if !prerequisites(&[]) {
        return;
    }
    oci_image::unpack::force_openat2_fallback(true);
    let marker = format!("cairn-fallback-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();

    // Ordinary nested paths still unpack.
    let good = dir.path().join("good");
    write_layout(
        &good,
        &[(
            LayerBuilder::new()
                .dir("a")
                .file("a/b/c", b"c")
                .symlink("s", "/a")
                .finish(),
            TAR,
        )],
    );
    let image = store
        .import(&good, Some("localhost/fallback:good"), None, &accept_all())
        .unwrap();
    assert_eq!(fs::read(image.rootfs.join("a/b/c")).unwrap(), b"c");

    // A write through a symlinked parent is refused outright.
    let evil = dir.path().join("evil");
    write_layout(
        &evil,
        &[(
            LayerBuilder::new()
                .symlink("link", "/tmp")
                .file(&format!("link/{marker}"), b"x")
                .finish(),
            TAR,
        )],
    );
    let e = store
        .import(&evil, Some("localhost/fallback:evil"), None, &accept_all())
        .unwrap_err();
    assert!(matches!(e, Error::Layer { .. }), "{e}");
    assert!(e.to_string().contains("symlink"), "{e}");
    assert!(!Path::new("/tmp").join(&marker).exists());
}
