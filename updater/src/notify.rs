//! sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`, `WATCHDOG=1`, `STATUS=...`). Not running under
/// systemd is not an error; failing to reach its socket is logged by the caller.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        // Abstract namespace socket.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(())
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if it is for us.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(std::time::Duration::from_micros(usec))
}

/// Pings the systemd watchdog by time while it lives: every half of
/// `WATCHDOG_USEC`, from its own thread, whatever the work holding it does.
///
/// An update's progress is no heartbeat: fetching the metadata, a chunk that
/// is retried or resumed, or a slow but legal link can go longer than the
/// watchdog interval without a byte (and a drip-feeding server used to keep it
/// there for ever). What bounds a network step now is the HTTP client (stall
/// timeout, minimum rate, attempts), not the watchdog; the watchdog still
/// catches a service whose main loop stops running between updates.
pub struct Keepalive {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keepalive {
    /// Pings `WATCHDOG=1` while the result lives; does nothing when systemd
    /// asked for no watchdog.
    pub fn watchdog() -> Keepalive {
        match watchdog_interval() {
            Some(w) => Keepalive::every(w / 2, || {
                if let Err(e) = notify("WATCHDOG=1") {
                    eprintln!("<4>sd_notify WATCHDOG=1: {e}");
                }
            }),
            None => Keepalive {
                stop: None,
                thread: None,
            },
        }
    }

    /// Calls `ping` at once and then every `period` until dropped.
    pub fn every(period: std::time::Duration, ping: impl Fn() + Send + 'static) -> Keepalive {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let period = period.max(std::time::Duration::from_millis(1));
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                loop {
                    ping();
                    // A message or a hang-up (the guard dropped) both end it.
                    match stopped.recv_timeout(period) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            });
        match thread {
            Ok(t) => Keepalive {
                stop: Some(stop),
                thread: Some(t),
            },
            Err(e) => {
                // Without the thread the service still works; systemd may
                // restart it during a long update, which then resumes.
                eprintln!("<4>starting the watchdog thread: {e}");
                Keepalive {
                    stop: None,
                    thread: None,
                }
            }
        }
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sends_a_datagram() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("notify");
        let server = std::os::unix::net::UnixDatagram::bind(&p).unwrap();
        // SAFETY (edition 2024 requires unsafe): the test sets the variable before
        // any other thread of this test reads it; other tests do not use it.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &p) };
        super::notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn keepalive_pings_by_time_until_dropped() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let n = Arc::new(AtomicU32::new(0));
        let c = n.clone();
        let k = super::Keepalive::every(std::time::Duration::from_millis(20), move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        // Nothing "progresses" here: the pings come from the clock alone.
        std::thread::sleep(std::time::Duration::from_millis(250));
        drop(k);
        let pinged = n.load(Ordering::SeqCst);
        assert!(pinged >= 5, "only {pinged} pings in 250 ms at 20 ms");
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(n.load(Ordering::SeqCst), pinged, "pinged after drop");
    }
}
