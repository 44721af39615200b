//! An app declared in the host config (DESIGN.md "Containers"): pulled from
//! a real registry (Debian's docker-registry on the host's loopback, reached
//! as 10.0.2.2), run by the generated unit with a named data volume; it must
//! run after boot, survive a reboot, and survive an OS update to v2 with its
//! volume intact. A second app from the same image serves HTTP with busybox
//! httpd in its private network, published with `ports = ["8080:80/tcp"]`;
//! after the first boot it must answer on the guest's own non-loopback
//! address (the forward listens on all addresses, not loopback only).
//!
//! The image is made here from busybox-static with umoci and pushed with
//! skopeo, as a user without Docker would.

use crate::runner::Ctx;
use crate::scenarios::V2;
use crate::scenarios::boot_chain::{CHOSEN, ROOT_PASSWORD, SHELL_CMD, TO_LOGIN, parse_chosen, say};
use crate::vm::{HOST_ADDR_FROM_GUEST, Vm, VmSpec};
use crate::{Pattern, scenarios::update};
use anyhow::{Context, Result, bail, ensure};
use cairn_updater::fixture::Server;
use disk_layout::Arch;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The app's command: count boots in the volume, then stay up until
/// SIGTERM (as PID 1 of its namespace it must handle the signal itself).
const APP_SCRIPT: &str = "echo boot >> /data/boots; echo \"counter: $(wc -l < /data/boots) boots\"; trap 'exit 0' TERM; sleep 1000000 & wait";

/// The web app's command: httpd on port 80 of its private network.
const WEB_SCRIPT: &str = "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait";
/// The web app's memory limit (`memory = "64M"`), as memory.max shows it.
const WEB_MEMORY_BYTES: &str = "67108864";
/// What the image's /www/index.html holds.
const WEB_CONTENT: &str = "cairn-web-ok";

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// busybox-static for the guest's architecture: the host's own, or the
/// other architecture's Debian package, downloaded and unpacked into `dir`.
fn busybox_for(arch: Arch, dir: &Path) -> Result<PathBuf> {
    let host = if cfg!(target_arch = "aarch64") {
        Arch::Arm64
    } else {
        Arch::X86_64
    };
    if arch == host {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs)?;
    let pkg = format!("busybox-static:{}", arch.debian_arch());
    run(Command::new("apt-get")
        .args(["download", "-q", &pkg])
        .current_dir(&debs))
    .with_context(|| {
        format!("downloading {pkg} (cargo xtask setup enables the arm64 architecture)")
    })?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {pkg} left no .deb in {}", debs.display()))?;
    let root = dir.join("busybox-root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    Ok(root.join("bin/busybox"))
}

/// An OCI layout `<dir>/layout:1` for `arch` with busybox-static as /bin/*.
fn build_image(dir: &Path, arch: Arch) -> Result<std::path::PathBuf> {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let img = format!("{}:1", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &img]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &img])
        .arg(&bundle))?;
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(bundle.join("rootfs/data"))?;
    std::fs::create_dir_all(bundle.join("rootfs/www"))?;
    std::fs::write(
        bundle.join("rootfs/www/index.html"),
        format!("{WEB_CONTENT}\n"),
    )?;
    let busybox = busybox_for(arch, dir)?;
    std::fs::copy(&busybox, bin.join("busybox"))
        .with_context(|| format!("copying {} (busybox-static)", busybox.display()))?;
    for applet in ["sh", "sleep", "wc", "cat", "echo", "test", "ls", "httpd"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &img])
        .arg(&bundle))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--architecture",
        arch.debian_arch(),
        "--config.cmd",
        "/bin/sh",
    ]))?;
    Ok(layout)
}

/// Debian's docker-registry on a free port of the host's loopback.
struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Result<Registry> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting docker-registry (cargo xtask setup installs it)")?;
    let reg = Registry { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("docker-registry does not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(reg)
}

fn login(vm: &mut Vm) -> Result<()> {
    vm.send_line("")?;
    vm.login("root", ROOT_PASSWORD, TO_LOGIN)
        .context("logging in as root")
}

/// Waits for the app to run and count this boot in its volume (the count
/// must reach `want`: the file still holds the earlier boots' lines before
/// the app appends), and checks it counted exactly `want` boots.
fn app_boots(ctx: &Ctx, vm: &mut Vm, want: usize) -> Result<()> {
    let st = vm.run(
        &format!(
            "timeout 300 sh -c 'until systemctl is-active -q cairn-app@counter.service && \
             test \"$(cat /var/lib/cairn/volumes/counter/data/boots 2>/dev/null | wc -l)\" -ge {want}; do sleep 2; done'"
        ),
        // Longer than the guest's own timeout, so a failure gets its report.
        Duration::from_secs(330),
    )?;
    if st.0 != 0 {
        let why = vm.run(
            "systemctl status --no-pager -n 0 cairn-app@counter.service 2>&1 | head -n 12; \
             journalctl -b --no-pager -o cat -u cairn-app@counter.service | tail -n 25",
            SHELL_CMD,
        )?;
        bail!("the app did not come up: {}\n{}", st.1.trim(), why.1);
    }
    let boots = vm.run_ok(
        "cat /var/lib/cairn/volumes/counter/data/boots | wc -l",
        SHELL_CMD,
    )?;
    let n: usize = boots.trim().parse().context("counting boots")?;
    let slot = vm.run_ok("cat /run/cairn/booted-slot", SHELL_CMD)?;
    say(
        ctx,
        &format!(
            "app running on slot {}, its volume counts {n} boot(s)",
            slot.trim()
        ),
    );
    ensure!(n == want, "the volume counts {n} boot(s), expected {want}");
    Ok(())
}

/// The guest's first global IPv4 address, from `ip -4 -o addr show scope global`.
fn global_ipv4(ip_output: &str) -> Option<String> {
    ip_output.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        words.find(|w| *w == "inet")?;
        let addr = words.next()?.split('/').next()?;
        (!addr.starts_with("127.")).then(|| addr.to_string())
    })
}

/// The web app answers through its published port on the guest's own
/// address (bash's /dev/tcp: the guest has no curl or wget).
fn web_answers(ctx: &Ctx, vm: &mut Vm) -> Result<()> {
    let ips = vm.run_ok("ip -4 -o addr show scope global", SHELL_CMD)?;
    let addr = global_ipv4(&ips)
        .with_context(|| format!("the guest has no global IPv4 address:\n{ips}"))?;
    // A try every 2 s for about 90 s (each bounded to 5 s): the app may
    // still be starting.
    let fetch = format!(
        "ok=1; for i in $(seq 45); do r=$(timeout 5 bash -c '{{ printf \"GET /index.html HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3; }} 2>/dev/null 3<>/dev/tcp/{addr}/8080'); case \"$r\" in *{WEB_CONTENT}*) ok=0; printf '%s\\n' \"$r\"; break;; esac; sleep 2; done; test $ok = 0"
    );
    let (rc, out) = vm.run(&fetch, Duration::from_secs(330))?;
    if rc != 0 {
        let why = vm.run(
            "systemctl status --no-pager -n 0 cairn-app@web.service 2>&1 | head -n 8; \
             journalctl -b --no-pager -o cat -u cairn-app@web.service | tail -n 20; ss -ltnp",
            SHELL_CMD,
        )?;
        bail!(
            "the web app did not answer on http://{addr}:8080/index.html ({rc}): {}\n{}",
            out.trim(),
            why.1
        );
    }
    ensure!(
        out.contains(" 200 "),
        "http://{addr}:8080/index.html did not answer 200: {out}"
    );
    say(
        ctx,
        &format!("the web app answers on http://{addr}:8080/ through its published port"),
    );
    Ok(())
}

/// The web app's container lives in its unit's cgroup, with its memory
/// limit there, and dies with the unit: when cairn-run is SIGKILLed, systemd
/// stops what is left and restarts the app, which must come back in a new
/// container.
fn supervised_by_its_unit(ctx: &Ctx, vm: &mut Vm) -> Result<()> {
    const PID: &str = "cairn-run state web | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'";
    let pid = vm.run_ok(PID, SHELL_CMD)?.trim().to_string();
    ensure!(!pid.is_empty(), "cairn-run state web shows no pid");
    let cg = vm.run_ok(&format!("cat /proc/{pid}/cgroup"), SHELL_CMD)?;
    let cg = cg
        .trim()
        .strip_prefix("0::")
        .unwrap_or(cg.trim())
        .to_string();
    ensure!(
        cg.ends_with("/cairn-app@web.service/payload"),
        "the web app's init (pid {pid}) is in cgroup {cg}, not below its unit"
    );
    let max = vm.run_ok(&format!("cat '/sys/fs/cgroup{cg}/memory.max'"), SHELL_CMD)?;
    ensure!(
        max.trim() == WEB_MEMORY_BYTES,
        "memory.max of {cg} is {}, not {WEB_MEMORY_BYTES}",
        max.trim()
    );
    vm.run_ok(
        "systemctl kill --kill-who=main -s KILL cairn-app@web.service",
        SHELL_CMD,
    )?;
    let back = vm.run(
        &format!(
            "for i in $(seq 60); do kill -0 {pid} 2>/dev/null || break; sleep 1; done; \
             for i in $(seq 60); do p=$({PID}); test -n \"$p\" && test \"$p\" != {pid} && break; sleep 2; done; \
             echo old={pid} new=$p restarts=$(systemctl show -p NRestarts --value cairn-app@web.service); \
             test -n \"$p\" && test \"$p\" != {pid} && ! kill -0 {pid} 2>/dev/null"
        ),
        Duration::from_secs(200),
    )?;
    ensure!(
        back.0 == 0,
        "after cairn-run was killed the web app did not come back in a new container: {}",
        back.1.trim()
    );
    say(
        ctx,
        &format!(
            "web app in {cg} (memory.max {WEB_MEMORY_BYTES}); after SIGKILL of cairn-run: {}",
            back.1.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    );
    web_answers(ctx, vm)
}

fn reboot_to(vm: &mut Vm, want: &str) -> Result<()> {
    vm.send_line("systemctl reboot")?;
    let line = vm.wait_for(Pattern::regex(CHOSEN)?, TO_LOGIN)?;
    let (slot, _, _) = parse_chosen(&line.text)?;
    ensure!(
        slot == want,
        "the reboot chose slot {slot}, expected {want}"
    );
    login(vm)
}

pub fn app(ctx: &mut Ctx) -> Result<()> {
    let work = ctx.artifacts.join("app-image");
    std::fs::create_dir_all(&work)?;
    let layout = build_image(&work, ctx.arch)?;
    let registry = start_registry(&work)?;
    let port = registry.port;
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://127.0.0.1:{port}/test/counter:1")))?;
    say(
        ctx,
        &format!("pushed test/counter:1 to the registry on port {port}"),
    );

    // The update repository with v2, so the app also lives through an update.
    let v2 = update::inputs(ctx)?.v2;
    let repo = update::publish(ctx, &v2.join("release"))?;
    let server = Server::start(&repo)?;
    let reg = format!("{HOST_ADDR_FROM_GUEST}:{port}");
    let extra = format!(
        "\n[containers]\ninsecure_registries = [\"{reg}\"]\n\
         [[containers.trust]]\nprefix = \"{reg}/test/\"\naccept_anything = true\n\
         [[apps]]\nname = \"counter\"\nimage = \"{reg}/test/counter:1\"\n\
         command = [\"/bin/sh\", \"-c\", {script:?}]\nvolumes = [\"data:/data\"]\n\
         restart = \"always\"\nhealth = [\"/bin/test\", \"-s\", \"/data/boots\"]\nboot_health = true\n\
         [[apps]]\nname = \"web\"\nimage = \"{reg}/test/counter:1\"\n\
         command = [\"/bin/sh\", \"-c\", {web:?}]\nports = [\"8080:80/tcp\"]\nmemory = \"64M\"\n",
        script = APP_SCRIPT,
        web = WEB_SCRIPT
    );
    let cfg = update::host_config(ctx, &server, "off", &extra)?;
    let mut spec = VmSpec::new(ctx.arch, ctx.image_file("disk.raw")?);
    spec.fw_cfg_config = Some(cfg);
    let mut vm = ctx.vm(spec)?;
    login(&mut vm)?;
    app_boots(ctx, &mut vm, 1).context("first boot")?;
    let logs = vm.run_ok(
        "journalctl -b --no-pager -o cat | grep -c 'counter: 1 boots'",
        SHELL_CMD,
    )?;
    ensure!(logs.trim() != "0", "the app's output is not in the journal");
    web_answers(ctx, &mut vm)?;
    supervised_by_its_unit(ctx, &mut vm)?;

    // The agent installs v2 in the background meanwhile (reboot = "off").
    vm.run_ok(
        "timeout 400 sh -c 'until systemctl show -p StatusText --value cairn-updated | grep -q \"ready\"; do sleep 2; done'",
        Duration::from_secs(420),
    )
    .context("waiting for v2 to be ready")?;
    reboot_to(&mut vm, "b")?;
    let v = vm.run_ok(". /usr/lib/os-release; echo $IMAGE_VERSION", SHELL_CMD)?;
    ensure!(v.trim() == V2, "running {}, expected {V2}", v.trim());
    app_boots(ctx, &mut vm, 2).context("after the update")?;
    reboot_to(&mut vm, "b")?;
    app_boots(ctx, &mut vm, 3).context("after a reboot")?;
    vm.send_line("systemctl poweroff")?;
    vm.wait_exit(TO_LOGIN)?;
    drop(registry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ipv4_table() {
        for (out, want) in [
            (
                "2: enp0s2    inet 10.0.2.15/24 metric 1024 brd 10.0.2.255 scope global dynamic enp0s2\\       valid_lft 86391sec preferred_lft 86391sec\n",
                Some("10.0.2.15"),
            ),
            ("", None),
            ("1: lo    inet 127.0.0.1/8 scope host lo\n", None),
        ] {
            assert_eq!(global_ipv4(out).as_deref(), want, "{out:?}");
        }
    }
}
