//! Throughput figures (ignored by default):
//! `cargo test -p oci-image --test bench -- --ignored --nocapture`

mod common;

use std::time::Instant;

use common::*;
use oci_image::{Requirement, Store, TrustPolicy};

/// Incompressible-ish bytes without a random-number dependency.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
#[ignore = "benchmark"]
fn import_and_pull_throughput() {
    if !prerequisites(&["skopeo", "docker-registry"]) {
        return;
    }
    const FILES: usize = 2000;
    const FILE_SIZE: usize = 64 * 1024;
    let mut b = LayerBuilder::new();
    for i in 0..FILES {
        b = b.file(&format!("f{i}"), &noise(FILE_SIZE, i as u64 + 1));
    }
    let layer = gzip(&b.finish());
    let mb = (FILES * FILE_SIZE) as f64 / 1e6;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    write_layout(&layout, &[(layer.clone(), TAR_GZ)]);

    let store = Store::open(&dir.path().join("store")).unwrap();
    let t = Instant::now();
    store
        .import(&layout, Some("localhost/bench:v1"), None, &accept_all())
        .unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "import: {FILES} files, {mb:.0} MB unpacked, {:.0} MB gzip layer: {s:.2} s, {:.0} MB/s",
        layer.len() as f64 / 1e6,
        mb / s
    );

    let reg = start_registry();
    let reference = format!("{}/bench/app:v1", reg.host());
    run(std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{reference}")));
    let store2 = Store::open(&dir.path().join("store2")).unwrap();
    let mut trust = TrustPolicy::new();
    trust.add("*", Requirement::AcceptAnything).unwrap();
    let t = Instant::now();
    store2
        .pull(&reference, &oci_image::PullOptions::default(), &trust)
        .unwrap();
    let s = t.elapsed().as_secs_f64();
    println!(
        "pull over loopback HTTP (download, verify, unpack): {s:.2} s, {:.0} MB/s",
        mb / s
    );
}
