//! What the host offers: qemu binaries, firmware, and whether KVM works.

use anyhow::{Context, Result, bail};
use disk_layout::Arch;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// UEFI firmware: the read-only code image and the template of the variable
/// store (each VM writes to its own copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware {
    pub code: PathBuf,
    pub vars_template: PathBuf,
}

impl Firmware {
    /// Debian's `ovmf` and `qemu-efi-aarch64` packages.
    pub fn default_for(arch: Arch) -> Firmware {
        match arch {
            Arch::X86_64 => Firmware {
                code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                vars_template: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
            },
            Arch::Arm64 => Firmware {
                code: "/usr/share/AAVMF/AAVMF_CODE.fd".into(),
                vars_template: "/usr/share/AAVMF/AAVMF_VARS.fd".into(),
            },
        }
    }
}

/// The virt machine's two flash banks are 64 MiB each, and qemu refuses
/// pflash images of any other size there.
pub const ARM64_PFLASH_SIZE: u64 = 64 << 20;

pub fn qemu_system_binary(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-system-x86_64",
        Arch::Arm64 => "qemu-system-aarch64",
    }
}

pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Why VMs of `arch` cannot run here (a missing binary or firmware file),
/// or `None` if everything is in place.
pub fn missing_requirements(arch: Arch) -> Option<String> {
    let mut missing = Vec::new();
    for bin in [qemu_system_binary(arch), "qemu-img"] {
        if find_in_path(bin).is_none() {
            missing.push(format!("{bin} not in PATH"));
        }
    }
    let fw = Firmware::default_for(arch);
    for f in [&fw.code, &fw.vars_template] {
        if !f.is_file() {
            missing.push(format!("{} missing", f.display()));
        }
    }
    if missing.is_empty() {
        None
    } else {
        Some(missing.join(", "))
    }
}

/// How qemu executes guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    /// Software emulation; works everywhere.
    Tcg,
    /// Hardware virtualization; only used when a probe showed it works.
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// The accelerator for `arch` guests, with the reason it was chosen.
///
/// `CAIRN_ACCEL=tcg|kvm` decides outright. Otherwise KVM is used only if the
/// guest has the host's architecture, /dev/kvm opens, and a probe VM under
/// KVM gets its firmware to the boot manager within 5 s. Some hosts expose a
/// /dev/kvm whose guests crash or hang (a PVM-flavoured KVM, for one), so its
/// presence proves nothing. The verdict is computed once per process.
pub fn accel_for(arch: Arch) -> Result<(Accel, String)> {
    match std::env::var("CAIRN_ACCEL").ok().as_deref() {
        Some("tcg") => return Ok((Accel::Tcg, "CAIRN_ACCEL=tcg".into())),
        Some("kvm") => return Ok((Accel::Kvm, "CAIRN_ACCEL=kvm".into())),
        Some("") | None => {}
        Some(other) => bail!("CAIRN_ACCEL={other:?}: expected tcg or kvm"),
    }
    static CACHE: OnceLock<Mutex<HashMap<Arch, (Accel, String)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // Holding the lock through the probe keeps concurrent VM starts from
    // probing twice.
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = map.get(&arch) {
        return Ok(v.clone());
    }
    let verdict = probe(arch);
    eprintln_always(&format!(
        "qemu-tests: {} guests use {} ({})",
        arch.name(),
        verdict.0.name(),
        verdict.1
    ));
    map.insert(arch, verdict.clone());
    Ok(verdict)
}

/// Writes to the real stderr even inside `cargo test`, whose capture only
/// covers the print macros: skips and accelerator choices must be visible.
pub(crate) fn eprintln_always(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn host_arch() -> Option<Arch> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Arch::X86_64),
        "aarch64" => Some(Arch::Arm64),
        _ => None,
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn probe(arch: Arch) -> (Accel, String) {
    if host_arch() != Some(arch) {
        return (Accel::Tcg, format!("host is {}", std::env::consts::ARCH));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return (Accel::Tcg, format!("/dev/kvm: {e}"));
    }
    match probe_kvm_boot(arch) {
        Ok(t) => (
            Accel::Kvm,
            format!("KVM probe reached the boot manager in {t:.1} s"),
        ),
        Err(e) => (Accel::Tcg, format!("KVM probe failed: {e:#}")),
    }
}

/// Boots the firmware alone under KVM and waits for `BdsDxe` on the serial
/// console; returns the seconds it took.
fn probe_kvm_boot(arch: Arch) -> Result<f64> {
    let fw = Firmware::default_for(arch);
    let vars = std::env::temp_dir().join(format!("cairn-kvm-probe-{}.fd", std::process::id()));
    std::fs::copy(&fw.vars_template, &vars)
        .with_context(|| format!("copying {}", fw.vars_template.display()))?;
    let result = run_probe(arch, &fw.code, &vars);
    let _ = std::fs::remove_file(&vars);
    result
}

fn run_probe(arch: Arch, code: &Path, vars: &Path) -> Result<f64> {
    let mut cmd = Command::new(qemu_system_binary(arch));
    match arch {
        Arch::X86_64 => cmd.args(["-machine", "q35"]),
        Arch::Arm64 => cmd.args(["-machine", "virt,gic-version=host"]),
    };
    cmd.args([
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        "1",
        "-m",
        "512",
        "-nodefaults",
    ])
    .args([
        "-display",
        "none",
        "-chardev",
        "stdio,id=con0,signal=off",
        "-serial",
        "chardev:con0",
    ])
    .arg("-drive")
    .arg(format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        crate::vm::opt_escape(code)
    ))
    .arg("-drive")
    .arg(format!(
        "if=pflash,format=raw,unit=1,file={}",
        crate::vm::opt_escape(vars)
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    crate::vm::die_with_parent(&mut cmd);
    let start = Instant::now();
    let mut child = cmd.spawn().context("spawning the probe qemu")?;
    let stdout = child.stdout.take().context("probe stdout")?;
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if String::from_utf8_lossy(&line).contains("BdsDxe") {
                let _ = tx.send(());
                break;
            }
        }
    });
    let seen = rx.recv_timeout(PROBE_TIMEOUT);
    let elapsed = start.elapsed().as_secs_f64();
    // If stdout closed early, qemu is exiting: give it a moment to be reaped
    // so that the error can say how it ended.
    let status = match seen {
        Err(RecvTimeoutError::Disconnected) => {
            crate::vm::wait_timeout(&mut child, Duration::from_secs(2))
        }
        _ => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    if seen.is_ok() {
        return Ok(elapsed);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let err = err.lines().next().unwrap_or("").to_string();
    match status {
        Some(s) => bail!("qemu exited ({s}) after {elapsed:.2} s: {err}"),
        None => bail!(
            "no firmware output in {PROBE_TIMEOUT:?} (hung){}",
            if err.is_empty() {
                String::new()
            } else {
                format!(": {err}")
            }
        ),
    }
}
