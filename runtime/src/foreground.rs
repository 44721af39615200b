//! Waiting for a container process in the foreground: its exit status
//! becomes ours, signals sent to us are forwarded to it, and sd_notify
//! datagrams from inside are relayed to our own NOTIFY_SOCKET.
//!
//! libcontainer clones the container init with CLONE_PARENT and no exit
//! signal, so there is no SIGCHLD to wait for: a pidfd tells us when it
//! exits, and `waitid(P_PIDFD, __WALL)` reaps it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals that are forwarded to the container rather than acted on.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

pub fn forwarded_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set
}

/// Blocks the forwarded signals so they queue for the signalfd. Call it
/// after libcontainer has cloned the init (which would inherit the mask and
/// keep it across exec) and before the container is started, and before any
/// thread is spawned: threads inherit the mask, so a process-directed
/// SIGTERM stays pending for the signalfd instead of hitting a thread whose
/// default action would end us without stopping the container.
pub fn block_signals() -> io::Result<SigSet> {
    let set = forwarded_set();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(io::Error::from)?;
    Ok(set)
}

/// Blocks the forwarded signals in the calling thread only; helper threads
/// call it first so the guarantee does not rest on who spawned them.
pub fn block_signals_in_thread() -> io::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&forwarded_set()), None).map_err(io::Error::from)
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Exit status as a shell reports it: the code, or 128 + signal number.
pub fn exit_code(si_code: i32, si_status: i32) -> i32 {
    match si_code {
        libc::CLD_EXITED => si_status,
        libc::CLD_KILLED | libc::CLD_DUMPED => 128 + si_status,
        _ => 255,
    }
}

fn reap(pidfd: &OwnedFd) -> io::Result<i32> {
    // SAFETY: siginfo_t is plain data; waitid fills it in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    const P_PIDFD: libc::idtype_t = 3;
    loop {
        // SAFETY: valid fd and a pointer to a live siginfo_t.
        let r = unsafe {
            libc::waitid(
                P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::__WALL,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // SAFETY: waitid succeeded for an exited child, so si_status is set.
    let status = unsafe { info.si_status() };
    Ok(exit_code(info.si_code, status))
}

fn send_signal(pidfd: &OwnedFd, sig: i32) {
    // SAFETY: pidfd_send_signal with a valid pidfd and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// Keeps only what systemd may act on from inside a container: a pid from
/// another pid namespace (MAINPID=) would point at an unrelated host process.
pub fn filter_notify(msg: &str) -> Option<String> {
    let kept: Vec<&str> = msg
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("MAINPID="))
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("\n"))
    }
}

/// Relays sd_notify datagrams from the container to our own NOTIFY_SOCKET.
pub struct NotifyRelay {
    pub inner: UnixDatagram,
    pub outer: String,
}

impl NotifyRelay {
    pub fn bind(path: &Path, outer: String) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let inner = UnixDatagram::bind(path)?;
        inner.set_nonblocking(true)?;
        Ok(Self { inner, outer })
    }

    fn pump(&self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.inner.recv(&mut buf) {
            let Some(msg) = filter_notify(&String::from_utf8_lossy(&buf[..n])) else {
                continue;
            };
            let Ok(out) = UnixDatagram::unbound() else {
                return;
            };
            // systemd's socket may be abstract (`@name`).
            let _ = if let Some(abs) = self.outer.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
                    .and_then(|a| out.send_to_addr(msg.as_bytes(), &a))
            } else {
                out.send_to(msg.as_bytes(), &self.outer)
            };
        }
    }
}

/// Waits for `pid` to exit, forwarding signals and relaying notifications.
pub fn wait(pid: i32, signals: &SigSet, relay: Option<&NotifyRelay>) -> io::Result<i32> {
    wait_with(pid, signals, relay, None)
}

/// As [`wait`]; with `on_winch`, SIGWINCH calls it instead of being
/// forwarded (a relayed terminal resizes its pty, and the kernel tells the
/// process).
pub fn wait_with(
    pid: i32,
    signals: &SigSet,
    relay: Option<&NotifyRelay>,
    on_winch: Option<&dyn Fn()>,
) -> io::Result<i32> {
    let pidfd = pidfd_open(pid)?;
    let sfd = SignalFd::with_flags(signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(io::Error::from)?;
    loop {
        let mut fds = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(r) = relay {
            fds.push(PollFd::new(r.inner.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (exited, signalled, notified) = (ready(0), ready(1), fds.len() > 2 && ready(2));
        if notified && let Some(r) = relay {
            r.pump();
        }
        if signalled {
            while let Ok(Some(info)) = sfd.read_signal() {
                match on_winch {
                    Some(f) if info.ssi_signo as i32 == libc::SIGWINCH => f(),
                    _ => send_signal(&pidfd, info.ssi_signo as i32),
                }
            }
        }
        if exited {
            if let Some(r) = relay {
                r.pump();
            }
            return reap(&pidfd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        for (code, status, want) in [
            (libc::CLD_EXITED, 0, 0),
            (libc::CLD_EXITED, 7, 7),
            (libc::CLD_KILLED, 9, 137),
            (libc::CLD_DUMPED, 11, 139),
            (libc::CLD_STOPPED, 19, 255),
        ] {
            assert_eq!(exit_code(code, status), want);
        }
    }

    #[test]
    fn notify_filter_table() {
        for (input, want) in [
            ("READY=1", Some("READY=1")),
            ("READY=1\nMAINPID=1\nSTATUS=up", Some("READY=1\nSTATUS=up")),
            ("MAINPID=5", None),
            ("", None),
        ] {
            assert_eq!(filter_notify(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn relay_forwards_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let outer_path = dir.path().join("outer.sock");
        let outer = UnixDatagram::bind(&outer_path).unwrap();
        let relay = NotifyRelay::bind(
            &dir.path().join("inner.sock"),
            outer_path.to_string_lossy().into(),
        )
        .unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client
            .send_to(b"READY=1\nMAINPID=1", dir.path().join("inner.sock"))
            .unwrap();
        relay.pump();
        let mut buf = [0u8; 64];
        let n = outer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
