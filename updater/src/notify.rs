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
}
