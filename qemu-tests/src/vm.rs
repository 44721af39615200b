//! One QEMU virtual machine: a copy-on-write overlay over a pristine disk,
//! UEFI firmware with its own variable store, the serial console captured
//! with host timestamps, and QMP for resets and power control.

use crate::console::{Console, Line, Mark, format_lines};
use crate::host::{ARM64_PFLASH_SIZE, Accel, Firmware, accel_for, qemu_system_binary};
use crate::pattern::Pattern;
use crate::qmp::{Qmp, QmpEvent};
use crate::shell;
use anyhow::{Context, Result, anyhow, bail};
use disk_layout::Arch;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The host's 127.0.0.1 as the guest sees it under QEMU user networking.
pub const HOST_ADDR_FROM_GUEST: &str = "10.0.2.2";

/// URL under which the guest reaches a server on the host's loopback `port`.
pub fn host_url(port: u16, path: &str) -> String {
    format!(
        "http://{HOST_ADDR_FROM_GUEST}:{port}/{}",
        path.trim_start_matches('/')
    )
}

/// Lines of console shown in failure messages.
const FAILURE_TAIL: usize = 30;

/// A host port forwarded to a guest TCP port (`hostfwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFwd {
    /// Port on the host's 127.0.0.1; 0 picks a free one at start
    /// (see `Vm::host_port`).
    pub host_port: u16,
    pub guest_port: u16,
}

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub arch: Arch,
    /// The pristine image (raw or qcow2). Never written: the VM writes to an
    /// overlay in its artifacts folder.
    pub disk: PathBuf,
    pub memory_mib: u32,
    pub smp: u32,
    /// `-cpu`; `None` takes the per-arch default (see `default_cpu`).
    pub cpu: Option<String>,
    pub firmware: Firmware,
    /// Host config handed to the guest as fw_cfg `opt/cairn/config`.
    pub fw_cfg_config: Option<PathBuf>,
    /// User-mode networking on a virtio NIC; the guest reaches the host's
    /// loopback as `HOST_ADDR_FROM_GUEST`.
    pub network: bool,
    /// More options of that user network (`net=`, `guestfwd=`), each as
    /// qemu spells it.
    pub net_options: Vec<String>,
    pub hostfwd: Vec<HostFwd>,
    /// A virtio RNG, so early boot never waits for entropy.
    pub rng: bool,
    /// What a reboot of the guest does.
    pub on_reboot: OnReboot,
    /// Appended to qemu's command line as is.
    pub extra_args: Vec<String>,
    /// A blkdebug rules file put between the guest and its disk, to make
    /// reads of chosen guest sectors fail (`event = "none"` rules apply to
    /// every request touching their `sector`).
    pub blkdebug: Option<PathBuf>,
}

impl VmSpec {
    pub fn new(arch: Arch, disk: impl Into<PathBuf>) -> VmSpec {
        VmSpec {
            arch,
            disk: disk.into(),
            memory_mib: 1024,
            smp: 2,
            cpu: None,
            firmware: Firmware::default_for(arch),
            fw_cfg_config: None,
            network: true,
            net_options: Vec::new(),
            hostfwd: Vec::new(),
            rng: true,
            on_reboot: OnReboot::PowerCycle,
            extra_args: Vec::new(),
            blkdebug: None,
        }
    }
}

/// What happens when the guest reboots (or panics into a reboot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnReboot {
    /// qemu exits (`-no-reboot`) and the harness starts a new qemu on the
    /// same overlay and varstore, like a power cycle. The default: under
    /// TCG, firmware after a warm reset of a guest whose Linux had booted
    /// runs 3-5x slower than after a cold start (OVMF reached its boot
    /// manager 5-35 s after the reset instead of 3.1 s), and once in a CI
    /// run of ~35 reboots it did not come back within 240 s. Every slot
    /// decision lives on the disk and in the varstore, which both survive.
    PowerCycle,
    /// qemu resets the machine itself (a warm reset).
    Reset,
}

/// The `-cpu` used when the spec does not say.
///
/// x86_64 under TCG: `qemu64`, the baseline CPU. With `max` the guest's
/// kernel and glibc pick AVX2 and SSE4 code, which TCG emulates instruction
/// by instruction; the baseline code translates to plain host instructions.
/// Two VMs started together on this 2-core host, one of each, reached the
/// login prompt in 94.8/105.1/125.6 s (`qemu64`) against 111.7/121.2/135.6 s
/// (`max`) with a compile running alongside; one VM alone, 32.3 s against
/// 38.6 s on average over four boots each.
///
/// arm64 under TCG: `max,pauth-impdef=on`. Plain `max` emulates the QARMA
/// pointer-authentication cipher and is about 3x slower; `cortex-a57` gets
/// the firmware to its boot manager equally fast, but a systemd boot to login
/// measured 14.0 s against 12.1 s for `max,pauth-impdef=on`.
pub fn default_cpu(arch: Arch, accel: Accel) -> &'static str {
    match (arch, accel) {
        (_, Accel::Kvm) => "host",
        (Arch::X86_64, Accel::Tcg) => "qemu64",
        (Arch::Arm64, Accel::Tcg) => "max,pauth-impdef=on",
    }
}

/// Escapes a value for qemu's `key=value,...` option syntax.
pub(crate) fn opt_escape(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Files of one VM inside its artifacts folder.
#[derive(Clone, Debug)]
pub(crate) struct Files {
    pub dir: PathBuf,
    pub overlay: PathBuf,
    pub vars: PathBuf,
    pub qmp: PathBuf,
    pub console_log: PathBuf,
    pub serial_raw: PathBuf,
    pub stderr_log: PathBuf,
    pub cmd_txt: PathBuf,
}

impl Files {
    fn new(dir: &Path) -> Files {
        let qmp = dir.join("qmp.sock");
        // sun_path holds 108 bytes; deep artifact folders do not fit.
        let qmp = if qmp.as_os_str().len() < 100 {
            qmp
        } else {
            std::env::temp_dir().join(format!(
                "cairn-qmp-{}-{}.sock",
                std::process::id(),
                unique()
            ))
        };
        Files {
            dir: dir.to_path_buf(),
            overlay: dir.join("disk.qcow2"),
            vars: dir.join("efivars.fd"),
            qmp,
            console_log: dir.join("console.log"),
            serial_raw: dir.join("serial.raw"),
            stderr_log: dir.join("qemu-stderr.log"),
            cmd_txt: dir.join("qemu-cmd.txt"),
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (N.fetch_add(1, Ordering::Relaxed) << 32) ^ t ^ ((std::process::id() as u64) << 40)
}

/// qemu's arguments (without the binary).
pub(crate) fn qemu_args(
    spec: &VmSpec,
    files: &Files,
    accel: Accel,
    fwd: &[HostFwd],
) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let machine = match (spec.arch, accel) {
        (Arch::X86_64, _) => "q35",
        (Arch::Arm64, Accel::Tcg) => "virt",
        (Arch::Arm64, Accel::Kvm) => "virt,gic-version=host",
    };
    let cpu = spec
        .cpu
        .clone()
        .unwrap_or_else(|| default_cpu(spec.arch, accel).to_string());
    push(&["-machine", machine, "-accel", accel.name(), "-cpu", &cpu]);
    push(&[
        "-smp",
        &spec.smp.to_string(),
        "-m",
        &spec.memory_mib.to_string(),
    ]);
    // No default VGA, NIC, CD-ROM or monitor: faster, and OVMF does not try
    // to boot from devices the test did not ask for.
    push(&["-nodefaults", "-nographic"]);
    // signal=off: bytes the test types (e.g. ^C) go to the guest, not qemu.
    push(&[
        "-chardev",
        "stdio,id=con0,signal=off",
        "-serial",
        "chardev:con0",
    ]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", opt_escape(&files.qmp)),
    ]);
    let code = format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        opt_escape(&spec.firmware.code)
    );
    let vars = format!(
        "if=pflash,format=raw,unit=1,file={}",
        opt_escape(&files.vars)
    );
    push(&["-drive", &code, "-drive", &vars]);
    // Default cache mode (writeback): a guest flush reaches the host file, so
    // SIGKILL behaves like a power cut of a disk with a volatile write cache.
    // cache=unsafe would also drop qcow2 metadata and corrupt the overlay.
    let drive = match &spec.blkdebug {
        None => format!(
            "if=none,id=d0,format=qcow2,file={}",
            opt_escape(&files.overlay)
        ),
        // Above the qcow2 layer, so rule sectors are guest sectors.
        Some(rules) => format!(
            "if=none,id=d0,driver=blkdebug,config={},image.driver=qcow2,image.file.driver=file,image.file.filename={}",
            opt_escape(rules),
            opt_escape(&files.overlay)
        ),
    };
    // A bootindex puts the disk ahead of network boot in OVMF's order; 1, as
    // direct kernel boot (-kernel in extra_args) takes 0.
    push(&[
        "-drive",
        &drive,
        "-device",
        "virtio-blk-pci,drive=d0,bootindex=1",
    ]);
    if spec.network {
        let mut netdev = "user,id=n0".to_string();
        for o in &spec.net_options {
            netdev.push(',');
            netdev.push_str(o);
        }
        for f in fwd {
            netdev.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{}-:{}",
                f.host_port, f.guest_port
            ));
        }
        // romfile= drops iPXE: firmware network boot is never wanted here.
        push(&[
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ]);
    }
    if spec.rng {
        push(&["-device", "virtio-rng-pci"]);
    }
    if let Some(cfg) = &spec.fw_cfg_config {
        let v = format!(
            "name={},file={}",
            disk_layout::host_config::FW_CFG_NAME,
            opt_escape(cfg)
        );
        push(&["-fw_cfg", &v]);
    }
    if spec.on_reboot == OnReboot::PowerCycle {
        push(&["-no-reboot"]);
    }
    a.extend(spec.extra_args.iter().cloned());
    a
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.,:+@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A copy-pastable command line, one option and its value per line.
fn format_cmdline(binary: &str, args: &[String]) -> String {
    let mut out = binary.to_string();
    for a in args {
        out.push_str(if a.starts_with('-') { " \\\n  " } else { " " });
        out.push_str(&shell_quote(a));
    }
    out
}

/// Waits up to `timeout` for `child` to exit.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Makes the kernel SIGKILL the child when the spawning thread's process
/// goes away, so a crashed or killed test run leaves no guests spinning.
/// (The kernel ties this to the spawning *thread*: start and drop a `Vm` on
/// the same thread, as the scenario runner and tests do.)
pub(crate) fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    let hook = move || {
        // SAFETY: plain system calls without pointers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The parent may have died before prctl took effect.
        if unsafe { libc::getppid() } != parent {
            return Err(std::io::Error::other("parent exited"));
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes
    // async-signal-safe system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(hook);
    }
}

fn detect_format(disk: &Path) -> Result<&'static str> {
    let mut f =
        File::open(disk).with_context(|| format!("opening disk image {}", disk.display()))?;
    let mut magic = [0u8; 4];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("reading {}", disk.display()))?;
    Ok(if n == 4 && &magic == b"QFI\xfb" {
        "qcow2"
    } else {
        "raw"
    })
}

fn create_overlay(disk: &Path, overlay: &Path) -> Result<()> {
    let abs =
        std::fs::canonicalize(disk).with_context(|| format!("disk image {}", disk.display()))?;
    let fmt = detect_format(&abs)?;
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", fmt, "-b"])
        .arg(&abs)
        .arg(overlay)
        .output()
        .context("running qemu-img (is qemu-utils installed?)")?;
    if !out.status.success() {
        bail!(
            "qemu-img create overlay {} over {}: {}",
            overlay.display(),
            abs.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn copy_vars(arch: Arch, fw: &Firmware, vars: &Path) -> Result<()> {
    std::fs::copy(&fw.vars_template, vars).with_context(|| {
        format!(
            "copying {} to {}",
            fw.vars_template.display(),
            vars.display()
        )
    })?;
    if arch == Arch::Arm64 {
        let code_len = std::fs::metadata(&fw.code)
            .with_context(|| format!("firmware {}", fw.code.display()))?
            .len();
        if code_len != ARM64_PFLASH_SIZE {
            bail!(
                "{} is {code_len} bytes; the virt machine needs exactly 64 MiB",
                fw.code.display()
            );
        }
        let f = OpenOptions::new()
            .write(true)
            .open(vars)
            .with_context(|| format!("{}", vars.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("{}", vars.display()))?
            .len();
        if len < ARM64_PFLASH_SIZE {
            // Some distributions ship a short varstore; the flash bank must be full size.
            f.set_len(ARM64_PFLASH_SIZE)
                .with_context(|| format!("padding {}", vars.display()))?;
        }
    }
    Ok(())
}

fn resolve_hostfwd(fwd: &[HostFwd]) -> Result<Vec<HostFwd>> {
    fwd.iter()
        .map(|f| {
            if f.host_port != 0 {
                return Ok(*f);
            }
            // Racy in principle (the port is free only when checked), fine
            // for tests on one host.
            let l =
                std::net::TcpListener::bind("127.0.0.1:0").context("picking a free host port")?;
            let port = l.local_addr().context("picking a free host port")?.port();
            Ok(HostFwd {
                host_port: port,
                guest_port: f.guest_port,
            })
        })
        .collect()
}

pub(crate) struct Shared {
    console: Mutex<Console>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Console> {
        self.console.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running (or stopped) VM. Dropping it kills qemu.
pub struct Vm {
    spec: VmSpec,
    files: Files,
    accel: Accel,
    binary: &'static str,
    args: Vec<String>,
    hostfwd: Vec<HostFwd>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    exit: Option<ExitStatus>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    qmp: Option<Qmp>,
    events: Arc<Mutex<Vec<QmpEvent>>>,
    spawn: u32,
    spawned_at: Instant,
    /// When each qemu process of this VM was spawned, by spawn number: the
    /// base of its console lines' `t`.
    spawn_times: Vec<Instant>,
    cursor: Mark,
    nonce_base: u64,
    nonce: u64,
}

impl Vm {
    /// Creates the overlay and varstore in `artifacts_dir` (created if
    /// needed), writes `qemu-cmd.txt` and starts qemu.
    pub fn start(spec: VmSpec, artifacts_dir: &Path) -> Result<Vm> {
        std::fs::create_dir_all(artifacts_dir)
            .with_context(|| format!("creating {}", artifacts_dir.display()))?;
        let dir = std::fs::canonicalize(artifacts_dir)
            .with_context(|| format!("resolving {}", artifacts_dir.display()))?;
        let files = Files::new(&dir);
        create_overlay(&spec.disk, &files.overlay)?;
        copy_vars(spec.arch, &spec.firmware, &files.vars)?;
        let (accel, why) = accel_for(spec.arch)?;
        let hostfwd = resolve_hostfwd(&spec.hostfwd)?;
        let binary = qemu_system_binary(spec.arch);
        let args = qemu_args(&spec, &files, accel, &hostfwd);
        let txt = format!(
            "# accel {} ({why})\n{}\n",
            accel.name(),
            format_cmdline(binary, &args)
        );
        std::fs::write(&files.cmd_txt, txt)
            .with_context(|| format!("writing {}", files.cmd_txt.display()))?;
        let log = File::create(&files.console_log)
            .with_context(|| format!("creating {}", files.console_log.display()))?;
        let raw = File::create(&files.serial_raw)
            .with_context(|| format!("creating {}", files.serial_raw.display()))?;
        let mut vm = Vm {
            spec,
            files,
            accel,
            binary,
            args,
            hostfwd,
            child: None,
            stdin: None,
            exit: None,
            shared: Arc::new(Shared {
                console: Mutex::new(Console::new(Some(log), Some(raw))),
                cond: Condvar::new(),
            }),
            reader: None,
            qmp: None,
            events: Arc::new(Mutex::new(Vec::new())),
            spawn: 0,
            spawned_at: Instant::now(),
            spawn_times: Vec::new(),
            cursor: Mark::default(),
            nonce_base: unique(),
            nonce: 0,
        };
        vm.spawn()?;
        Ok(vm)
    }

    fn spawn(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.files.qmp);
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.files.stderr_log)
            .with_context(|| format!("opening {}", self.files.stderr_log.display()))?;
        let mut cmd = Command::new(self.binary);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        die_with_parent(&mut cmd);
        self.shared.lock().begin_spawn(self.spawn);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.binary))?;
        self.spawned_at = Instant::now();
        self.spawn_times.truncate(self.spawn as usize);
        self.spawn_times.push(self.spawned_at);
        self.exit = None;
        let stdout = child.stdout.take().context("qemu stdout")?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        let shared = self.shared.clone();
        let t0 = self.spawned_at;
        self.reader = Some(
            std::thread::Builder::new()
                .name("serial-reader".into())
                .spawn(move || read_serial(stdout, shared, t0))
                .context("spawning the serial reader thread")?,
        );
        let (spawn, t0, events, path) = (
            self.spawn,
            self.spawned_at,
            self.events.clone(),
            self.files.qmp.clone(),
        );
        let qmp = {
            let child = self.child.as_mut().context("qemu child")?;
            let stderr_log = self.files.stderr_log.clone();
            let mut alive = || match child.try_wait() {
                Ok(Some(s)) => Err(anyhow!(
                    "qemu exited at startup ({s}): {}",
                    read_tail(&stderr_log)
                )),
                _ => Ok(()),
            };
            Qmp::connect(
                &path,
                spawn,
                t0,
                events,
                Duration::from_secs(15),
                &mut alive,
            )
        };
        match qmp {
            Ok(q) => self.qmp = Some(q),
            Err(e) => {
                let err = self.failure(&format!("{e:#}"));
                self.kill_quietly();
                return Err(err);
            }
        }
        Ok(())
    }

    pub fn arch(&self) -> Arch {
        self.spec.arch
    }

    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    /// The VM's artifacts folder (console.log, qemu-cmd.txt, the overlay).
    pub fn dir(&self) -> &Path {
        &self.files.dir
    }

    /// The qcow2 overlay holding everything the guest wrote. Inspect it only
    /// while qemu is stopped.
    pub fn overlay(&self) -> &Path {
        &self.files.overlay
    }

    /// The host port forwarded to `guest_port`.
    pub fn host_port(&self, guest_port: u16) -> Option<u16> {
        self.hostfwd
            .iter()
            .find(|f| f.guest_port == guest_port)
            .map(|f| f.host_port)
    }

    /// Seconds since the current qemu process was spawned.
    pub fn uptime(&self) -> f64 {
        self.spawned_at.elapsed().as_secs_f64()
    }

    /// The host's clock at a console line: its qemu's spawn time plus its
    /// `t`. Lines of different VMs (or spawns) compare on this clock.
    pub fn line_instant(&self, line: &Line) -> Option<Instant> {
        self.spawn_times
            .get(line.spawn as usize)
            .map(|s| *s + Duration::from_secs_f64(line.t.max(0.0)))
    }

    /// QMP events so far (all qemu processes of this VM).
    pub fn qmp_events(&self) -> Vec<QmpEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_running(&mut self) -> bool {
        self.poll_exit();
        self.child.is_some() && self.exit.is_none()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(c) = self.child.as_mut()
        {
            self.exit = c.try_wait().ok().flatten();
        }
        self.exit
    }

    // ---- console -----------------------------------------------------------

    /// Waits for `pat` in output after the cursor and moves the cursor past
    /// the match, so the next wait sees only newer output.
    pub fn wait_for(&mut self, pat: impl Into<Pattern>, timeout: Duration) -> Result<Line> {
        self.wait_for_any(&[pat.into()], timeout).map(|(_, l)| l)
    }

    /// Like `wait_for` for several patterns; returns the index of the one
    /// that matched first in the output.
    pub fn wait_for_any<P: Clone + Into<Pattern>>(
        &mut self,
        pats: &[P],
        timeout: Duration,
    ) -> Result<(usize, Line)> {
        let pats: Vec<Pattern> = pats.iter().cloned().map(Into::into).collect();
        let what = pats
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        let deadline = Instant::now() + timeout;
        let shared = self.shared.clone();
        let mut con = shared.lock();
        // Lines that are complete and did not match never will: each rescan
        // after new output starts at the last line, keeping long boots linear.
        let mut from = self.cursor;
        loop {
            if let Some((i, n, end)) = con.find(from, &pats) {
                self.cursor = end;
                return Ok((i, con.line(n)));
            }
            from = from.max(con.last_line_start());
            if con.closed {
                drop(con);
                // qemu closes the console as it exits; give the exit a moment.
                if self.power_cycle_after_guest_reset(Duration::from_secs(5))? {
                    con = shared.lock();
                    continue;
                }
                return Err(self.failure(&format!("qemu's console closed before {what} appeared")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(con);
                return Err(
                    self.failure(&format!("timed out after {timeout:?} waiting for {what}"))
                );
            }
            con = shared
                .cond
                .wait_timeout(con, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until line `n` has its newline (or output ends).
    fn wait_line_complete(&self, n: usize, deadline: Instant) {
        let mut con = self.shared.lock();
        while !con.line_complete(n) && !con.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            con = self
                .shared
                .cond
                .wait_timeout(con, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The end of the output so far.
    pub fn mark(&self) -> Mark {
        self.shared.lock().end()
    }

    /// Where the next `wait_for` starts looking.
    pub fn cursor(&self) -> Mark {
        self.cursor
    }

    pub fn set_cursor(&mut self, mark: Mark) {
        self.cursor = mark;
    }

    /// Cleaned console text since `mark`.
    pub fn console_since(&self, mark: Mark) -> String {
        self.shared.lock().text_since(mark).to_string()
    }

    pub fn lines_since(&self, mark: Mark) -> Vec<Line> {
        self.shared.lock().lines_since(mark)
    }

    /// The last `n` console lines.
    pub fn tail(&self, n: usize) -> Vec<Line> {
        self.shared.lock().tail(n)
    }

    /// For boot-time benchmarks: for each pattern, the time (seconds since the
    /// current qemu's spawn) of the first line of its output that matches.
    pub fn marker_times(&self, pats: &[Pattern]) -> Vec<Option<f64>> {
        let con = self.shared.lock();
        con.first_times(con.spawn_mark(), pats)
    }

    /// Types `text` on the serial console as is.
    pub fn send(&mut self, text: &str) -> Result<()> {
        self.power_cycle_after_guest_reset(Duration::ZERO)?;
        let stdin = self.stdin.as_mut().context("qemu is not running")?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| {
                format!(
                    "writing to the serial console of {}",
                    self.files.dir.display()
                )
            })
    }

    /// Types `line` and Enter (a carriage return, as a terminal sends it).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.send(&format!("{line}\r"))
    }

    // ---- shell -------------------------------------------------------------

    /// Logs in on the serial getty, then prepares the shell for `run`. The
    /// password is typed only if a `Password:` prompt appears.
    pub fn login(&mut self, user: &str, password: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        self.wait_for("login:", left())?;
        self.send_line(user)?;
        let pats = [
            Pattern::from("Password:"),
            Pattern::from("Login incorrect"),
            Pattern::regex(shell::PROMPT_REGEX)?,
        ];
        let (mut i, _) = self.wait_for_any(&pats, left())?;
        if i == 0 {
            self.send_line(password)?;
            i = 1 + self.wait_for_any(&pats[1..], left())?.0;
        }
        if i == 1 {
            return Err(self.failure(&format!("login as {user:?} was refused")));
        }
        self.prepare_shell(left())
    }

    /// Makes an interactive shell quiet (see `shell::SHELL_SETUP`) and checks
    /// that it answers. Use directly for shells without a login (rd.shell).
    pub fn prepare_shell(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        // The first line can be lost if the shell was still starting; retry.
        let first = timeout.min(Duration::from_secs(15));
        if self.run(shell::SHELL_SETUP, first).is_ok() {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.run(shell::SHELL_SETUP, left)
            .map(|_| ())
            .context("preparing the serial shell")
    }

    /// Runs one shell command line (no newlines, no trailing `&`) and
    /// returns its exit code and output. Moves the cursor past the output;
    /// console output from before the call is not looked at again. Kernel messages printed meanwhile
    /// can end up in the output; `prepare_shell` lowers the console log level.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String)> {
        if cmd.contains(['\n', '\r']) {
            bail!("run: command must be one line: {cmd:?}");
        }
        if cmd.len() > shell::MAX_COMMAND_LEN {
            bail!(
                "run: command is {} bytes, the tty takes at most {}",
                cmd.len(),
                shell::MAX_COMMAND_LEN
            );
        }
        let deadline = Instant::now() + timeout;
        self.nonce += 1;
        let nonce = format!("{:x}{:x}", self.nonce_base & 0xffff_ffff, self.nonce);
        // Output from before this command cannot hold the nonce; skip it.
        let start = self.mark();
        self.cursor = start;
        self.send_line(&shell::framed_command(cmd, &nonce))?;
        let rc_pat = Pattern::regex(&format!(
            "{}-?[0-9]+",
            regex_lite::escape(&shell::rc_marker(&nonce))
        ))?;
        let line = self
            .wait_for(rc_pat, timeout)
            .with_context(|| format!("running {cmd:?}"))?;
        self.wait_line_complete(line.n, deadline);
        let text = self.shared.lock().text_since(start).to_string();
        shell::parse_run_output(&text, &nonce)
            .ok_or_else(|| self.failure(&format!("could not parse the output of {cmd:?}")))
    }

    /// `run`, failing (with the output) unless the exit code is 0.
    pub fn run_ok(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run(cmd, timeout)?;
        if rc != 0 {
            bail!(
                "{cmd:?} exited with {rc} in {}; output:\n{out}",
                self.files.dir.display()
            );
        }
        Ok(out)
    }

    // ---- power -------------------------------------------------------------

    /// Sends a raw QMP command.
    pub fn qmp(&mut self, cmd: &str, args: Option<Value>) -> Result<Value> {
        self.qmp
            .as_mut()
            .context("qemu is not running")?
            .execute(cmd, args)
    }

    /// Hard reset (the reset button): the guest gets no warning. With
    /// [`OnReboot::PowerCycle`] that is a power cycle, as for guest reboots.
    pub fn reset(&mut self) -> Result<()> {
        if self.spec.on_reboot == OnReboot::PowerCycle {
            return self.restart();
        }
        self.qmp("system_reset", None).map(|_| ())
    }

    /// Power cut: SIGKILL to qemu. Writes the guest flushed are on the
    /// overlay; later ones may or may not be.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("qemu was never started")?;
        if self.exit.is_none() {
            // ESRCH-like errors mean it already exited; wait() tells.
            let _ = child.kill();
        }
        let status = child.wait().context("waiting for qemu")?;
        self.exit = Some(status);
        self.after_exit();
        Ok(status)
    }

    /// ACPI power button, then waits for the guest to power off.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.qmp("system_powerdown", None)?;
        self.wait_exit(timeout).context("after system_powerdown")
    }

    /// Stops qemu at once through QMP (no guest involvement).
    pub fn quit(&mut self) -> Result<ExitStatus> {
        self.qmp("quit", None)?;
        self.wait_exit(Duration::from_secs(10))
    }

    /// Waits for qemu to exit on its own (guest poweroff; a guest reboot
    /// power-cycles as usual and the wait goes on). On timeout qemu is killed
    /// and an error returned.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let child = self.child.as_mut().context("qemu was never started")?;
            let Some(s) = wait_timeout(child, left) else {
                let err = self.failure(&format!("qemu did not exit within {timeout:?}"));
                self.kill_quietly();
                return Err(err);
            };
            self.exit = Some(s);
            self.after_exit();
            if !self.power_cycle_after_guest_reset(Duration::ZERO)? {
                return Ok(s);
            }
        }
    }

    /// With [`OnReboot::PowerCycle`], once qemu has exited (waiting up to
    /// `grace` for that) because the guest reset the machine, starts the next
    /// qemu on the same disk and varstore. Returns whether it did. Output
    /// awaited before keeps being awaited in the new qemu's console.
    fn power_cycle_after_guest_reset(&mut self, grace: Duration) -> Result<bool> {
        if self.spec.on_reboot != OnReboot::PowerCycle || self.child.is_none() {
            return Ok(false);
        }
        if self.exit.is_none()
            && let Some(c) = self.child.as_mut()
        {
            self.exit = wait_timeout(c, grace);
        }
        if self.exit.is_none() {
            return Ok(false);
        }
        // Joins the QMP reader, so the exiting qemu's events are all in.
        self.after_exit();
        let guest_reset = self
            .qmp_events()
            .iter()
            .rev()
            .find(|e| e.spawn == self.spawn && e.name == "SHUTDOWN")
            .and_then(|e| {
                e.data
                    .get("reason")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .is_some_and(|r| r == "guest-reset");
        if !guest_reset {
            return Ok(false);
        }
        self.spawn += 1;
        self.spawn()?;
        Ok(true)
    }

    /// Starts a new qemu on the same overlay and varstore, killing the old one
    /// first if it still runs (`kill` + `restart` = power cut and power on).
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            self.kill()?;
        }
        self.after_exit();
        self.spawn += 1;
        self.spawn()?;
        // Nothing the dead qemu printed is awaited after a restart.
        self.cursor = self.shared.lock().spawn_mark();
        Ok(())
    }

    /// Kills qemu and deletes the overlay and varstore copy (which can be
    /// large), keeping the logs.
    pub fn remove_disk(&mut self) -> Result<()> {
        self.kill_quietly();
        for f in [&self.files.overlay, &self.files.vars] {
            match std::fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", f.display())),
            }
        }
        Ok(())
    }

    /// Joins the reader threads once qemu is gone.
    fn after_exit(&mut self) {
        self.stdin = None;
        // A qemu still running gets its socket shut (Qmp's Drop) instead.
        if let Some(q) = self.qmp.take()
            && self.exit.is_some()
        {
            q.close_after_exit();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_file(&self.files.qmp);
    }

    fn kill_quietly(&mut self) {
        if self.child.is_some() {
            let _ = self.kill();
        }
    }

    /// An error carrying `msg`, where to look, qemu's state and the last
    /// console lines.
    fn failure(&mut self, msg: &str) -> anyhow::Error {
        let closed = self.shared.lock().closed;
        if closed
            && self.exit.is_none()
            && let Some(c) = self.child.as_mut()
        {
            // The console closes as qemu exits; give the exit a moment.
            self.exit = wait_timeout(c, Duration::from_secs(1));
        }
        let state = match self.poll_exit() {
            None => "running".to_string(),
            Some(s) => format!(
                "exited ({s}); stderr: {}",
                read_tail(&self.files.stderr_log)
            ),
        };
        let tail = format_lines(&self.tail(FAILURE_TAIL));
        anyhow!(
            "{msg}\n  artifacts: {}\n  qemu: {state} ({:.1} s after spawn)\n  last {FAILURE_TAIL} console lines:\n{tail}",
            self.files.dir.display(),
            self.uptime()
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill_quietly();
    }
}

fn read_serial(mut stdout: impl Read, shared: Arc<Shared>, t0: Instant) {
    let mut buf = [0u8; 8192];
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let t = t0.elapsed().as_secs_f64();
                shared.lock().push(&buf[..n], t);
                shared.cond.notify_all();
            }
        }
    }
    shared.lock().close();
    shared.cond.notify_all();
}

/// The last few lines of a log file, on one line, for error messages.
fn read_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Files {
        Files::new(Path::new("/a/b,c"))
    }

    #[test]
    fn x86_command_line() {
        let mut spec = VmSpec::new(Arch::X86_64, "/img/disk.raw");
        spec.fw_cfg_config = Some("/cfg/config.toml".into());
        let fwd = [HostFwd {
            host_port: 2222,
            guest_port: 22,
        }];
        let a = qemu_args(&spec, &files(), Accel::Tcg, &fwd).join(" ");
        for want in [
            "-machine q35 -accel tcg -cpu qemu64 -smp 2 -m 1024 -nodefaults -nographic",
            "-serial chardev:con0",
            "-qmp unix:/a/b,,c/qmp.sock,server=on,wait=off",
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
            "if=pflash,format=raw,unit=1,file=/a/b,,c/efivars.fd",
            "-drive if=none,id=d0,format=qcow2,file=/a/b,,c/disk.qcow2",
            "-netdev user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22",
            "-fw_cfg name=opt/cairn/config,file=/cfg/config.toml",
        ] {
            assert!(a.contains(want), "{want:?} missing in {a}");
        }
        assert!(a.ends_with("-no-reboot"), "power cycles by default: {a}");
        spec.on_reboot = OnReboot::Reset;
        let a = qemu_args(&spec, &files(), Accel::Tcg, &fwd).join(" ");
        assert!(!a.contains("-no-reboot"), "{a}");
    }

    #[test]
    fn arm64_command_line() {
        let mut spec = VmSpec::new(Arch::Arm64, "/img/disk.raw");
        spec.network = false;
        let a = qemu_args(&spec, &files(), Accel::Tcg, &[]).join(" ");
        assert!(
            a.contains("-machine virt -accel tcg -cpu max,pauth-impdef=on"),
            "{a}"
        );
        assert!(a.contains("/usr/share/AAVMF/AAVMF_CODE.fd"), "{a}");
        assert!(!a.contains("-netdev"));
        assert!(a.ends_with("-no-reboot"), "{a}");
        let kvm = qemu_args(&spec, &files(), Accel::Kvm, &[]).join(" ");
        assert!(
            kvm.contains("-machine virt,gic-version=host -accel kvm -cpu host"),
            "{kvm}"
        );
    }

    #[test]
    fn quoting_and_urls() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
        assert_eq!(host_url(8080, "/repo/x"), "http://10.0.2.2:8080/repo/x");
        let args = ["-m".to_string(), "1024".into(), "-nographic".into()];
        assert_eq!(
            format_cmdline("qemu", &args),
            "qemu \\\n  -m 1024 \\\n  -nographic"
        );
    }
}
