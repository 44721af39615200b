//! Apps: `run --name`, `stop`, `ps`, `exec`. An app is an OCI container
//! whose bundle cairn-run builds from a stored image.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use app_spec::{AppSettings, Cgroups, Network};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::cgroup_policy;
use crate::cli::{Exec, Paths, Run};
use crate::console::{self, ConsoleSocket, RawMode, Relay, ScratchDir};
use crate::foreground::{self, NotifyRelay};
use crate::images::{self, ResolvedImage};
use crate::portfwd::{self, Listeners};
use crate::runtime::{CreateOptions, ExecOptions, Libcontainer, OciRuntime, RuntimeError};
use crate::spec::{self, HostContext};

pub const ANNOTATION_IMAGE: &str = "org.cairn.image";
pub const ANNOTATION_DIGEST: &str = "org.cairn.image.digest";
pub const ANNOTATION_STOP_SIGNAL: &str = "org.cairn.stop-signal";

/// The app form of `run` as settings: clap parsed every value with
/// app-spec's types; what is left are the rules between them.
pub fn settings_from_cli(r: &Run) -> Result<AppSettings> {
    let Some(name) = r.name.clone() else {
        bail!("internal error: the app form of run needs --name");
    };
    let settings = AppSettings {
        command: r.command.clone(),
        env: r.env.clone(),
        volumes: r.volume.clone(),
        network: r.net,
        publish: r.publish.clone(),
        memory: r.memory,
        cpus: r.cpus,
        pids: r.pids_limit,
        user: r.user.clone(),
        workdir: r.workdir.clone(),
        read_write: r.read_write,
        hostname: r.hostname.clone(),
        cgroups: r.cgroups,
        ..AppSettings::new(name, r.target.clone())
    };
    settings.check()?;
    Ok(settings)
}

/// Reads a small text file of the image (passwd, group), at most 1 MiB.
/// No symlink is followed in any component (each is opened O_NOFOLLOW from
/// the one before), so an image cannot point us at a host file through
/// `etc -> /host/etc` any more than through `etc/passwd -> /etc/shadow`;
/// and only a regular file is read (a FIFO would block the start). A
/// missing file reads as empty: the image has no such users.
fn read_image_file(rootfs: &Path, rel: &str) -> Result<String> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    let path = rootfs.join(rel);
    let refuse = |what: &str| {
        anyhow::anyhow!(
            "cannot read {} of the image: {what}; cairn-run looks up users only in regular files of the image, reached without following symlinks (they could lead to host files): make it a regular file in the image, or give --user as numeric uid:gid",
            path.display()
        )
    };
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() || comps.iter().any(|c| *c == "." || *c == "..") {
        bail!("{rel:?} is not a plain relative path in the image");
    }
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let open_err = |e: nix::errno::Errno| -> Option<anyhow::Error> {
        match e {
            nix::errno::Errno::ENOENT => None,
            // O_NOFOLLOW on a symlink: ELOOP; O_DIRECTORY on one: ENOTDIR.
            nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                Some(refuse("it is a symlink, or below a symlink or a file"))
            }
            e => Some(
                anyhow::Error::from(std::io::Error::from(e))
                    .context(format!("cannot read {} of the image", path.display())),
            ),
        }
    };
    // SAFETY (every from_raw_fd below): open/openat returned a new
    // descriptor that nothing else owns.
    let mut dir = match nix::fcntl::open(rootfs, dir_flags, Mode::empty()) {
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("cannot open the image rootfs {}", rootfs.display()));
        }
    };
    let (last, parents) = comps.split_last().unwrap_or((&"", &[]));
    for c in parents {
        match openat(
            Some(dir.as_raw_fd()),
            *c,
            dir_flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => dir = unsafe { OwnedFd::from_raw_fd(fd) },
            Err(e) => return open_err(e).map_or(Ok(String::new()), Err),
        }
    }
    let file_flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(Some(dir.as_raw_fd()), *last, file_flags, Mode::empty()) {
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => return open_err(e).map_or(Ok(String::new()), Err),
    };
    let mut f = std::fs::File::from(fd);
    let meta = f
        .metadata()
        .with_context(|| format!("cannot read {} of the image", path.display()))?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file"));
    }
    let mut s = String::new();
    f.by_ref()
        .take(1 << 20)
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read {} of the image", path.display()))?;
    Ok(s)
}

/// Where the app's cgroup goes: its cgroupsPath, and whether libcontainer
/// asks systemd for it (a transient scope) or makes it itself.
struct Placement {
    systemd: bool,
    cgroups_path: String,
}

impl Placement {
    /// Decides, and for `--cgroups split` moves this (still single-threaded)
    /// process into the unit's supervisor cgroup.
    fn choose(rt: &Libcontainer, cgroups: Cgroups, name: &str, systemd_flag: bool) -> Result<Self> {
        Ok(match cgroups {
            Cgroups::Split => {
                let own = std::fs::read_to_string("/proc/self/cgroup")
                    .context("cannot read /proc/self/cgroup")?;
                let split = cgroup_policy::split_cgroups(
                    &own,
                    rt.cgroup_mode,
                    cgroup_policy::systemd_delegated,
                )?;
                cgroup_policy::enter_supervisor(&split)?;
                Placement {
                    systemd: false,
                    cgroups_path: split.payload(),
                }
            }
            Cgroups::Separate
                if systemd_flag
                    || cgroup_policy::use_systemd(
                        rt.cgroup_mode,
                        cgroup_policy::systemd_running(),
                    ) =>
            {
                Placement {
                    systemd: true,
                    cgroups_path: format!("machine.slice:cairn:{name}"),
                }
            }
            Cgroups::Separate => Placement {
                systemd: false,
                cgroups_path: format!("/cairn/{name}"),
            },
        })
    }
}

struct Overlay(PathBuf);

impl Overlay {
    fn mount(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<Self> {
        for d in [upper, work, target] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .with_context(|| {
            format!(
                "cannot mount the overlay root at {} ({opts})",
                target.display()
            )
        })?;
        Ok(Self(target.to_path_buf()))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Bundles live on tmpfs (rebuilt at every start); the writable layer lives
/// on ROOT so --read-write changes survive restarts.
pub fn run(rt: &Libcontainer, r: &Run, paths: &Paths, systemd_flag: bool) -> Result<i32> {
    let settings = settings_from_cli(r)?;
    let name = settings.name.as_str();
    let image = images::resolve_for_run(paths, &settings.image)?;
    // Root only, before anything is made in them: the bundles hold the
    // mounted rootfs of every running app and the state its writable layer,
    // setuid programs of the image (or made by the app's root) included, and
    // ROOT allows suid. The app's processes never walk these paths: they see
    // their rootfs through their mount namespace.
    for dir in [&paths.app_bundles, &paths.app_state] {
        oci_image::private_dir(dir)
            .with_context(|| format!("cannot make {} root only", dir.display()))?;
    }

    let Some(_lock) = RunLock::acquire(&RunLock::path(paths, name))? else {
        bail!(
            "app {name} is being run by another cairn-run; stop it first with `cairn-run stop {name}`"
        );
    };
    // A previous run that crashed may have left its container behind.
    if let Ok(st) = rt.state(name) {
        if matches!(st.status.as_str(), "stopped" | "created" | "creating") {
            rt.delete(name, true)
                .with_context(|| format!("cannot remove the stale container {name}"))?;
        } else {
            bail!(
                "app {name} is already {} (pid {:?}); stop it first with `cairn-run stop {name}`",
                st.status,
                st.pid
            );
        }
    }

    // Bound before anything is set up: a port in use fails the start with
    // nothing left behind.
    let listeners = Listeners::bind(&settings.publish)?;

    let placement = Placement::choose(rt, settings.cgroups, name, systemd_flag)?;

    let bundle = paths.app_bundles.join(name);
    let state = paths.app_state.join(name);
    if bundle.join("rootfs").exists() {
        let _ = umount2(&bundle.join("rootfs"), MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(&bundle);
    std::fs::create_dir_all(&bundle)
        .with_context(|| format!("cannot create bundle {}", bundle.display()))?;
    let result = run_in_bundle(rt, &settings, &image, &bundle, &state, placement, listeners);
    let _ = std::fs::remove_dir_all(&bundle);
    result
}

fn run_in_bundle(
    rt: &Libcontainer,
    settings: &AppSettings,
    image: &ResolvedImage,
    bundle: &Path,
    state: &Path,
    placement: Placement,
    listeners: Listeners,
) -> Result<i32> {
    let rootfs = bundle.join("rootfs");
    let _overlay = Overlay::mount(
        &image.rootfs,
        &state.join("upper"),
        &state.join("work"),
        &rootfs,
    )?;

    let user_spec = settings
        .user
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| image.defaults.user.clone())
        .filter(|u| !u.is_empty());
    let user = match user_spec {
        Some(u) => spec::resolve_user(
            &u,
            &read_image_file(&image.rootfs, "etc/passwd")?,
            &read_image_file(&image.rootfs, "etc/group")?,
        )?,
        None => spec::ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        },
    };

    let relay = match std::env::var("NOTIFY_SOCKET") {
        Ok(outer) if !outer.is_empty() => {
            let dir = bundle.join("notify");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let sock = dir.join(spec::NOTIFY_SOCKET_NAME);
            let relay = NotifyRelay::bind(&sock, outer)
                .with_context(|| format!("cannot bind the notify relay {}", sock.display()))?;
            Some(relay)
        }
        _ => None,
    };

    let host = HostContext {
        rootfs: rootfs.clone(),
        notify_dir: relay.as_ref().map(|_| bundle.join("notify")),
        cgroups_path: placement.cgroups_path,
        arch: std::env::consts::ARCH.to_string(),
        device_rules_enforced: cgroup_policy::device_rules_enforced(
            rt.cgroup_mode,
            cgroup_policy::V2_DEVICES_BUILT_IN,
        ),
    };
    let mut spec = spec::app_spec(&image.defaults, settings, &user, &host)?;
    let mut ann = HashMap::new();
    ann.insert(ANNOTATION_IMAGE.to_string(), image.reference.clone());
    ann.insert(ANNOTATION_DIGEST.to_string(), image.digest.clone());
    if let Some(s) = &image.stop_signal {
        ann.insert(ANNOTATION_STOP_SIGNAL.to_string(), s.clone());
    }
    spec.set_annotations(Some(ann));
    let config = bundle.join("config.json");
    spec.save(&config)
        .with_context(|| format!("cannot write {}", config.display()))?;

    let opts = CreateOptions {
        id: settings.name.to_string(),
        bundle: bundle.to_path_buf(),
        systemd_cgroup: placement.systemd,
        ..Default::default()
    };
    let net = settings.network;
    let after_create: crate::AfterCreate = Box::new(move |pid| setup_network(net, listeners, pid));
    crate::run_bundle_with(rt, &opts, false, relay.as_ref(), Some(after_create))
}

/// Between create and start: a private (or none) network gets its loopback
/// up, and the published ports start forwarding into it.
fn setup_network(net: Network, listeners: Listeners, pid: i32) -> Result<()> {
    if net == Network::Host {
        return Ok(());
    }
    let netns = portfwd::open_netns(pid)?;
    portfwd::loopback_up(&netns)?;
    if !listeners.is_empty() {
        listeners.start(netns)?;
    }
    Ok(())
}

pub fn stop(rt: &Libcontainer, paths: &Paths, name: &str, grace: u64) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(grace);
    let lock = RunLock::path(paths, name);
    let mut st = rt.state(name)?;
    // Its `run` is between saving the state and cloning the init: no pid to
    // signal yet. A run that died there left it behind: nothing is running.
    while st.status == "creating" {
        if !RunLock::is_held(&lock)? {
            return Ok(0);
        }
        if Instant::now() >= deadline {
            bail!(
                "app {name} is still being created after {grace} s (its cairn-run holds {}); try again",
                lock.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        st = rt.state(name)?;
    }
    match st.status.as_str() {
        "stopped" => return Ok(0),
        // The app's process has not started: nothing to shut down gracefully,
        // and the waiting init (pid 1 of its namespace, no handlers) would
        // drop the stop signal.
        "created" => signal(rt, name, "KILL", true)?,
        _ => {
            let sig = st
                .annotations
                .get(ANNOTATION_STOP_SIGNAL)
                .map_or("TERM", String::as_str);
            signal(rt, name, sig, false)?;
        }
    }
    while Instant::now() < deadline {
        match rt.state(name) {
            Ok(s) if s.status != "stopped" => std::thread::sleep(Duration::from_millis(50)),
            Ok(_) | Err(RuntimeError::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
    signal(rt, name, "KILL", true)?;
    Ok(0)
}

/// Sends `sig`; a container that exited (or was deleted by its `run`) in
/// the meantime is not an error: it is what stop wanted.
fn signal(rt: &Libcontainer, name: &str, sig: &str, all: bool) -> Result<()> {
    match rt.kill(name, sig, all) {
        Ok(()) => Ok(()),
        Err(e) => match rt.state(name) {
            Ok(s) if s.status == "stopped" => Ok(()),
            Err(RuntimeError::NotFound { .. }) => Ok(()),
            _ => Err(e.into()),
        },
    }
}

/// An flock held by the foreground `run --name` from before its container
/// is created until it is deleted. It tells a container that is about to
/// start from one whose run died while creating it: libcontainer's state
/// alone cannot (both are "creating" with no pid).
struct RunLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl RunLock {
    fn path(paths: &Paths, name: &str) -> PathBuf {
        paths.app_state.join(name).join("run.lock")
    }

    /// None when another run holds it.
    fn try_acquire(path: &Path, arg: nix::fcntl::FlockArg) -> Result<Option<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Opened close-on-exec (Rust's default), so the app's process does
        // not inherit it past its exec.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match nix::fcntl::Flock::lock(file, arg) {
            Ok(f) => Ok(Some(Self { _file: f })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    fn acquire(path: &Path) -> Result<Option<Self>> {
        Self::try_acquire(path, nix::fcntl::FlockArg::LockExclusiveNonblock)
    }

    /// A shared probe: it conflicts only with a run's exclusive hold.
    fn is_held(path: &Path) -> Result<bool> {
        if !path.exists() {
            return Ok(false);
        }
        Ok(Self::try_acquire(path, nix::fcntl::FlockArg::LockSharedNonblock)?.is_none())
    }
}

pub fn ps(rt: &Libcontainer, json: bool) -> Result<i32> {
    let mut rows = Vec::new();
    for id in rt.list()? {
        if let Ok(st) = rt.state(&id) {
            rows.push(st);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<24} {:<9} {:>8}  IMAGE", "NAME", "STATUS", "PID");
        for st in rows {
            let image = st
                .annotations
                .get(ANNOTATION_IMAGE)
                .cloned()
                .unwrap_or_else(|| format!("(bundle {})", st.bundle.display()));
            let pid = st.pid.map_or("-".to_string(), |p| p.to_string());
            println!("{:<24} {:<9} {:>8}  {}", st.id, st.status, pid, image);
        }
    }
    Ok(0)
}

pub fn exec(rt: &Libcontainer, e: &Exec) -> Result<i32> {
    // Holds the made process file and console socket until the exec is done.
    let mut scratch = None;
    let mut console = None;
    let process = match &e.process {
        Some(p) => {
            // libcontainer would report a missing file only as "io error".
            std::fs::metadata(p).with_context(|| {
                format!(
                    "cannot read the process file {} (--process expects runtime-spec process JSON)",
                    p.display()
                )
            })?;
            p.clone()
        }
        None => {
            let env: Vec<String> = e.env.iter().map(ToString::to_string).collect();
            let bundle = rt.state(&e.name)?.bundle;
            let config = bundle.join("config.json");
            let container: serde_json::Value = std::fs::read(&config)
                .map_err(anyhow::Error::from)
                .and_then(|b| Ok(serde_json::from_slice(&b)?))
                .with_context(|| {
                    format!("cannot read the container's spec {}", config.display())
                })?;
            let p = spec::exec_process(
                container.get("process"),
                &e.command,
                &env,
                e.workdir.as_deref(),
                e.tty,
            )?;
            let dir: &ScratchDir = scratch
                .insert(ScratchDir::new().context("cannot create a scratch directory for exec")?);
            let file = dir.path().join("process.json");
            std::fs::write(&file, serde_json::to_vec(&p)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
            if e.tty && e.console_socket.is_none() {
                if e.detach {
                    bail!(
                        "exec --tty --detach needs --console-socket: once cairn-run exits nothing would hold the terminal"
                    );
                }
                let sock = dir.path().join("console.sock");
                console = Some(
                    ConsoleSocket::bind(&sock)
                        .with_context(|| format!("cannot listen on {}", sock.display()))?,
                );
            }
            file
        }
    };
    let console_socket = e
        .console_socket
        .clone()
        .or_else(|| console.as_ref().map(|c| c.path.clone()));
    let pid = rt.exec(
        &e.name,
        &ExecOptions {
            process,
            // libcontainer (as runc) takes a console socket only when it
            // will not wait itself; we wait, relaying the terminal.
            detach: e.detach || console.is_some(),
            pid_file: e.pid_file.clone(),
            console_socket,
            preserve_fds: e.preserve_fds,
        },
    )?;
    if e.detach {
        return Ok(0);
    }
    let signals = foreground::block_signals().context("cannot block signals for forwarding")?;
    let waited = match console {
        None => foreground::wait(pid, &signals, None),
        Some(c) => {
            let master = c
                .receive_master(Duration::from_secs(10))
                .context("no terminal came back from the container")?;
            console::copy_window_size(&master);
            let raw = RawMode::enable();
            let relay = Relay::start(&master).context("cannot relay the terminal")?;
            let code = foreground::wait_with(
                pid,
                &signals,
                None,
                Some(&|| console::copy_window_size(&master)),
            );
            relay.finish(Duration::from_secs(2));
            drop(raw);
            code
        }
    };
    waited.with_context(|| format!("waiting for the exec'd process in {} failed", e.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lock_tells_a_live_run_from_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web").join("run.lock");
        assert!(!RunLock::is_held(&path).unwrap(), "no lock file yet");
        let held = RunLock::acquire(&path)
            .unwrap()
            .expect("first run takes it");
        assert!(RunLock::is_held(&path).unwrap());
        assert!(
            RunLock::acquire(&path).unwrap().is_none(),
            "second run refused"
        );
        drop(held);
        assert!(
            !RunLock::is_held(&path).unwrap(),
            "a dead run's lock is free"
        );
        assert!(RunLock::acquire(&path).unwrap().is_some());
    }

    #[test]
    fn image_files_are_read_without_following_symlinks() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        // A host directory the image points at.
        let host = dir.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("passwd"), "host-secret\n").unwrap();
        std::fs::write(host.join("group"), "host-secret\n").unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();

        // Ordinary files, and missing ones (no such users).
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        assert_eq!(
            read_image_file(&rootfs, "etc/passwd").unwrap(),
            "root:x:0:0::/:/bin/sh\n"
        );
        assert_eq!(read_image_file(&rootfs, "etc/group").unwrap(), "");

        // The last component a symlink (absolute, and relative out).
        symlink(host.join("group"), rootfs.join("etc/group")).unwrap();
        let e = read_image_file(&rootfs, "etc/group").unwrap_err();
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        std::fs::remove_file(rootfs.join("etc/group")).unwrap();
        symlink("../../host/group", rootfs.join("etc/group")).unwrap();
        assert!(read_image_file(&rootfs, "etc/group").is_err());

        // A directory component a symlink pointing outside the rootfs.
        std::fs::remove_dir_all(rootfs.join("etc")).unwrap();
        symlink(&host, rootfs.join("etc")).unwrap();
        let e = read_image_file(&rootfs, "etc/passwd").unwrap_err();
        let msg = format!("{e:#}");
        assert!(!msg.contains("host-secret"), "{msg}");
        assert!(
            msg.contains("etc/passwd") && msg.contains("symlink"),
            "{msg}"
        );
        // Pointing inside the rootfs: refused all the same.
        std::fs::remove_file(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(rootfs.join("usr/etc")).unwrap();
        std::fs::write(rootfs.join("usr/etc/passwd"), "root:x:0:0::/:/bin/sh\n").unwrap();
        symlink("usr/etc", rootfs.join("etc")).unwrap();
        assert!(read_image_file(&rootfs, "etc/passwd").is_err());

        // Not a regular file: a FIFO would block the start.
        std::fs::remove_file(rootfs.join("etc")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        nix::unistd::mkfifo(&rootfs.join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_image_file(&rootfs, "etc/passwd").unwrap_err();
        assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");

        assert!(read_image_file(&rootfs, "../host/passwd").is_err());
    }
}
