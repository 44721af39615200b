//! A terminal for `exec --tty` when the caller brings no console socket (an
//! operator at a shell, as with `runc exec -t`): cairn-run listens on a
//! private socket, receives the pty master that the container side creates,
//! and relays it to its own stdin and stdout.

use std::fs::File;
use std::io::{self, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};

use crate::foreground;

/// A private (0700) directory for one exec's process file and console
/// socket, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new() -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let mut last = None;
        for n in 0..100 {
            let dir = base.join(format!("cairn-run-exec.{}.{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Self(dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no scratch directory name left")))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct ConsoleSocket {
    listener: UnixListener,
    pub path: PathBuf,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> io::Result<Self> {
        Ok(Self {
            listener: UnixListener::bind(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The pty master the container side sends (SCM_RIGHTS). libcontainer
    /// connects before it clones, so the connection waits in the backlog
    /// until the exec has been started; `timeout` bounds a side that never
    /// came.
    pub fn receive_master(&self, timeout: Duration) -> io::Result<OwnedFd> {
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms)).map_err(io::Error::from)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the container sent no terminal",
            ));
        }
        let (stream, _) = self.listener.accept()?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut master = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = c {
                for fd in received {
                    // SAFETY: the kernel installed these fds for us just now;
                    // each is owned once (extra ones are closed on drop).
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    master.get_or_insert(owned);
                }
            }
        }
        master.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the console socket carried no terminal fd",
            )
        })
    }
}

/// The caller's terminal in raw mode (keys go to the container's pty as
/// typed; its line discipline does the editing and ^C), restored on drop.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// None when stdin is not a terminal: nothing to switch.
    pub fn enable() -> Option<Self> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Gives the pty the size of our terminal (stdin's, else stdout's).
pub fn copy_window_size(master: &OwnedFd) {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: a valid pointer to a live winsize.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 {
            // SAFETY: master is an open pty fd; ws was filled above.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            return;
        }
    }
}

/// Copies stdin to the master and the master to stdout, each on its own
/// thread (with the forwarded signals blocked, so they stay for the
/// signalfd of the waiting thread).
pub struct Relay {
    output_done: mpsc::Receiver<()>,
}

impl Relay {
    pub fn start(master: &OwnedFd) -> io::Result<Self> {
        let mut to_pty = File::from(master.try_clone()?);
        let mut from_pty = File::from(master.try_clone()?);
        std::thread::spawn(move || {
            let _ = foreground::block_signals_in_thread();
            let mut stdin = io::stdin().lock();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let (done, output_done) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = foreground::block_signals_in_thread();
            let mut stdout = io::stdout().lock();
            let mut buf = [0u8; 4096];
            // The read fails with EIO once the last holder of the pty's
            // other side is gone: the process and anything it left behind.
            while let Ok(n) = from_pty.read(&mut buf) {
                if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = stdout.flush();
            }
            let _ = done.send(());
        });
        Ok(Self { output_done })
    }

    /// After the process exited: lets what it wrote last reach stdout. A
    /// background child still holding the pty would keep it open, so the
    /// wait is bounded.
    pub fn finish(self, timeout: Duration) {
        let _ = self.output_done.recv_timeout(timeout);
    }
}
