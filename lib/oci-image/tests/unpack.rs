//! Hostile layers, each made here with the tar crate, imported as OCI layouts.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use oci_image::{Error, Image, Store, UnpackOptions};

const NAME: &str = "localhost/test/layer:latest";

/// Imports a hand-made layout of `layers` into a fresh store.
fn import(layers: &[(Vec<u8>, &str)]) -> (tempfile::TempDir, Store, Result<Image, Error>) {
    import_with(layers, UnpackOptions::default())
}

fn import_with(
    layers: &[(Vec<u8>, &str)],
    limits: UnpackOptions,
) -> (tempfile::TempDir, Store, Result<Image, Error>) {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_layout(&layout, layers);
    let mut store = Store::open(&dir.path().join("store")).unwrap();
    store.unpack = limits;
    let r = store.import(&layout, Some(NAME), None, &accept_all());
    (dir, store, r)
}

fn refused(layers: &[(Vec<u8>, &str)], what: &str) {
    if !prerequisites(&[]) {
        return;
    }
    let (_dir, store, r) = import(layers);
    match r {
        Err(Error::UnsafeLayer { problem, .. }) => {
            assert!(problem.contains(what), "{problem}")
        }
        other => panic!("expected refusal ({what}), got {other:?}"),
    }
    assert_store_empty(&store);
}

fn tar(b: LayerBuilder) -> (Vec<u8>, &'static str) {
    (b.finish(), TAR)
}

#[test]
fn absolute_path_refused() {
    refused(
        &[tar(LayerBuilder::new().file("/etc/cairn-evil", b"x"))],
        "absolute",
    );
}

#[test]
fn dotdot_refused() {
    refused(
        &[tar(LayerBuilder::new().file("a/../../cairn-evil", b"x"))],
        "'..'",
    );
    refused(
        &[tar(LayerBuilder::new().file("../cairn-evil", b"x"))],
        "'..'",
    );
}

#[test]
fn symlink_parent_stays_inside_rootfs() {
    if !prerequisites(&[]) {
        return;
    }
    let marker = format!("cairn-evil-{}", std::process::id());
    let host_etc = Path::new("/etc").join(&marker);
    let host_tmp = Path::new("/tmp").join(&marker);
    let passwd_before = fs::read("/etc/passwd").unwrap();
    let layer1 = LayerBuilder::new()
        .dir("etc")
        .dir("tmp")
        .symlink("link", "/etc")
        .symlink("rel", "../../../../../../../../tmp")
        .symlink("pw", "/etc/passwd")
        .finish();
    let layer2 = LayerBuilder::new()
        .file(&format!("link/{marker}"), b"inside")
        .file(&format!("rel/{marker}"), b"inside")
        .file("link/passwd", b"root::0:0::/:/bin/sh\n")
        // A file over a symlink replaces the link; it never writes through it.
        .file("pw", b"replaced")
        .finish();
    let (_dir, _store, r) = import(&[(layer1, TAR), (layer2, TAR)]);
    let image = r.unwrap();
    assert!(
        !host_etc.exists() && !host_tmp.exists(),
        "wrote outside the rootfs"
    );
    assert_eq!(fs::read("/etc/passwd").unwrap(), passwd_before);
    // Resolved as in a chroot: the writes land in the rootfs's own /etc and /tmp.
    assert_eq!(
        fs::read(image.rootfs.join("etc").join(&marker)).unwrap(),
        b"inside"
    );
    assert_eq!(
        fs::read(image.rootfs.join("tmp").join(&marker)).unwrap(),
        b"inside"
    );
    assert_eq!(
        fs::read(image.rootfs.join("etc/passwd")).unwrap(),
        b"root::0:0::/:/bin/sh\n"
    );
    let pw = image.rootfs.join("pw");
    assert!(fs::symlink_metadata(&pw).unwrap().is_file());
    assert_eq!(fs::read(&pw).unwrap(), b"replaced");

    // A dangling symlink parent (its target is missing in the rootfs) is an error,
    // and creates nothing on the host either.
    let l = LayerBuilder::new()
        .symlink("gone", "/cairn-no-such-dir")
        .file(&format!("gone/{marker}"), b"x")
        .finish();
    let (_dir, store, r) = import(&[(l, TAR)]);
    assert!(r.is_err());
    assert!(!Path::new("/cairn-no-such-dir").exists());
    assert_store_empty(&store);
}

#[test]
fn hardlinks() {
    if !prerequisites(&[]) {
        return;
    }
    // Outside the rootfs, through a symlink out, to a symlink, to nothing.
    refused(
        &[tar(LayerBuilder::new().hardlink("h", "../../etc/passwd"))],
        "'..'",
    );
    refused(
        &[tar(LayerBuilder::new().hardlink("h", "/etc/passwd"))],
        "absolute",
    );
    refused(
        &[tar(LayerBuilder::new()
            .symlink("link", "/etc")
            .hardlink("h", "link/passwd"))],
        "hardlink target",
    );
    refused(
        &[tar(LayerBuilder::new()
            .dir("etc")
            .symlink("link", "/etc")
            .hardlink("h", "link/passwd"))],
        "does not exist",
    );
    refused(
        &[tar(LayerBuilder::new()
            .symlink("s", "/etc/passwd")
            .hardlink("h", "s"))],
        "not a regular file",
    );
    // A good one shares the inode.
    let (_d, _s, r) = import(&[tar(LayerBuilder::new()
        .file("a", b"data")
        .hardlink("b", "a"))]);
    let image = r.unwrap();
    let a = fs::metadata(image.rootfs.join("a")).unwrap();
    let b = fs::metadata(image.rootfs.join("b")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn whiteouts_across_layers() {
    if !prerequisites(&[]) {
        return;
    }
    let l1 = LayerBuilder::new()
        .dir("a")
        .file("a/x", b"x")
        .file("a/y", b"y")
        .file("b", b"b")
        .dir("d")
        .file("d/old", b"old")
        .dir("d/sub")
        .file("d/sub/old", b"old")
        .dir("e")
        .file("e/old", b"old")
        .finish();
    let l2 = LayerBuilder::new()
        .file("a/.wh.x", b"")
        .file(".wh.b", b"")
        .file(".wh.missing", b"")
        // Opaque after this layer's own entries (order must not matter)...
        .dir("d")
        .file("d/new", b"new")
        .file("d/.wh..wh..opq", b"")
        // ...and before.
        .file("e/.wh..wh..opq", b"")
        .file("e/new", b"new")
        .finish();
    let (_d, _s, r) = import(&[(l1, TAR), (l2, TAR)]);
    let root = r.unwrap().rootfs;
    assert!(!root.join("a/x").exists());
    assert!(root.join("a/y").exists());
    assert!(!root.join("b").exists());
    assert!(!root.join("d/old").exists());
    assert!(!root.join("d/sub").exists());
    assert_eq!(fs::read(root.join("d/new")).unwrap(), b"new");
    assert!(!root.join("e/old").exists());
    assert_eq!(fs::read(root.join("e/new")).unwrap(), b"new");
    // Whiteout files themselves never appear.
    for p in ["a/.wh.x", ".wh.b", "d/.wh..wh..opq", "e/.wh..wh..opq"] {
        assert!(fs::symlink_metadata(root.join(p)).is_err(), "{p}");
    }
}

#[test]
fn devices_and_fifos_skipped() {
    if !prerequisites(&[]) {
        return;
    }
    let l = LayerBuilder::new()
        .special("dev-null", tar::EntryType::Char)
        .special("sda", tar::EntryType::Block)
        .special("fifo", tar::EntryType::Fifo)
        .file("kept", b"k")
        .finish();
    let (_d, _s, r) = import(&[(l, TAR)]);
    let root = r.unwrap().rootfs;
    for p in ["dev-null", "sda", "fifo"] {
        assert!(fs::symlink_metadata(root.join(p)).is_err(), "{p}");
    }
    assert!(root.join("kept").exists());
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

#[test]
fn xattrs_allow_listed() {
    if !prerequisites(&[]) {
        return;
    }
    // vfs_cap_data v2: cap_net_bind_service (bit 10) permitted.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&0x0200_0000u32.to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 10).to_le_bytes());
    let l = LayerBuilder::new()
        .file_xattrs(
            "f",
            b"data",
            &[
                ("user.cairn", b"yes"),
                ("trusted.cairn", b"no"),
                ("security.selinux", b"system_u:object_r:shadow_t:s0"),
                ("security.capability", &cap),
            ],
        )
        .finish();
    let (_d, _s, r) = import(&[(l, TAR)]);
    let f = r.unwrap().rootfs.join("f");
    assert_eq!(getxattr(&f, "user.cairn").as_deref(), Some(&b"yes"[..]));
    assert_eq!(getxattr(&f, "trusted.cairn"), None);
    assert_eq!(
        getxattr(&f, "security.capability").as_deref(),
        Some(&cap[..])
    );
    let selinux = getxattr(&f, "security.selinux");
    assert!(selinux.as_deref() != Some(&b"system_u:object_r:shadow_t:s0"[..]));
}

#[test]
fn modes_owners_and_times_preserved() {
    if !prerequisites(&[]) {
        return;
    }
    let l = LayerBuilder::new()
        .dir_meta("d", 0o750, 1_234_567)
        .file_meta("d/su", b"#!/bin/sh\n", 0o4755, 1234, 5678, 1_000_000)
        .file_meta("sg", b"x", 0o2711, 0, 42, 2_000_000)
        .finish();
    let (_d, _s, r) = import(&[(l, TAR)]);
    let root = r.unwrap().rootfs;
    let su = fs::metadata(root.join("d/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((su.uid(), su.gid()), (1234, 5678));
    assert_eq!(su.mtime(), 1_000_000);
    let sg = fs::metadata(root.join("sg")).unwrap();
    assert_eq!(sg.permissions().mode() & 0o7777, 0o2711);
    assert_eq!(sg.gid(), 42);
    let d = fs::metadata(root.join("d")).unwrap();
    assert_eq!(d.permissions().mode() & 0o7777, 0o750);
    assert_eq!(
        d.mtime(),
        1_234_567,
        "directory time set after its children"
    );
}

#[test]
fn gzip_zstd_and_plain_layers() {
    if !prerequisites(&[]) {
        return;
    }
    let l1 = LayerBuilder::new().file("plain", b"p").finish();
    let l2 = gzip(&LayerBuilder::new().file("gz", b"g").finish());
    let l3 = zstd(&LayerBuilder::new().file("zst", b"z").finish());
    let (_d, _s, r) = import(&[(l1, TAR), (l2, TAR_GZ), (l3, TAR_ZST)]);
    let root = r.unwrap().rootfs;
    assert_eq!(fs::read(root.join("plain")).unwrap(), b"p");
    assert_eq!(fs::read(root.join("gz")).unwrap(), b"g");
    assert_eq!(fs::read(root.join("zst")).unwrap(), b"z");
}

#[test]
fn decompressed_size_and_entry_limits() {
    if !prerequisites(&[]) {
        return;
    }
    // 64 MiB of zeros compress to almost nothing.
    let bomb = gzip(
        &LayerBuilder::new()
            .file("zeros", &vec![0u8; 64 << 20])
            .finish(),
    );
    let limits = UnpackOptions {
        max_layer_bytes: 8 << 20,
        ..UnpackOptions::default()
    };
    let (_d, store, r) = import_with(&[(bomb, TAR_GZ)], limits);
    assert!(matches!(r, Err(Error::LayerLimit { .. })), "{r:?}");
    assert_store_empty(&store);

    let mut many = LayerBuilder::new();
    for i in 0..11 {
        many = many.file(&format!("f{i}"), b"");
    }
    let limits = UnpackOptions {
        max_entries: 10,
        ..UnpackOptions::default()
    };
    let (_d, store, r) = import_with(&[tar(many)], limits);
    assert!(matches!(r, Err(Error::LayerLimit { .. })), "{r:?}");
    assert_store_empty(&store);
}

#[test]
fn tampered_and_oversized_blob_in_layout() {
    if !prerequisites(&[]) {
        return;
    }
    let layer = LayerBuilder::new().file("f", b"data").finish();
    for (how, check) in [("flip", "digest mismatch"), ("append", "size mismatch")] {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        write_layout(&layout, &[(layer.clone(), TAR)]);
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer));
        let blob = layout.join("blobs/sha256").join(hex);
        let mut data = fs::read(&blob).unwrap();
        match how {
            "flip" => data[600] ^= 1,
            _ => data.extend_from_slice(&[0u8; 512]),
        }
        fs::write(&blob, data).unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let e = store
            .import(&layout, Some(NAME), None, &accept_all())
            .unwrap_err();
        assert!(e.to_string().contains(check), "{how}: {e}");
        assert_store_empty(&store);
    }
}
