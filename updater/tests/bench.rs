//! The update benchmark as an ignored test: `cargo test -p cairn-updater --test bench
//! -- --ignored --nocapture` (CAIRN_BENCH_MIB sets the /usr size, default 1024).
//! `cargo xtask bench update` calls `cairn_updater::fixture::bench_update` directly.

#[test]
#[ignore = "benchmark: writes about 3 GiB to the temp dir"]
fn bench_update() {
    let mib = std::env::var("CAIRN_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let tmp = tempfile::tempdir().unwrap();
    let r = cairn_updater::fixture::bench_update(tmp.path(), mib).unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
}
