//! A stand-in /init for the smoke test: proves the kernel ran the initramfs
//! the boot manager served. Exiting pid 1 panics the kernel; with `panic=-1`
//! it reboots, and QEMU `-no-reboot` exits.
fn main() {
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    println!("cairn-test-init: pid {} env {env:?}", std::process::id());
}
