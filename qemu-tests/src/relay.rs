//! A server on the host's loopback under a guest address QEMU user
//! networking does not route, such as a cloud's metadata service at
//! 169.254.169.254.
//!
//! qemu's `guestfwd=tcp:IP:PORT-cmd:COMMAND` starts COMMAND for each guest
//! connection to IP:PORT, with the connection as its stdin and stdout. A
//! chardev target (`-tcp:HOST:PORT`) would instead be one stream shared by
//! every connection, which HTTP clients that open one connection per request
//! cannot use. The command is `cargo xtask guestfwd-relay HOST:PORT` (the
//! scenarios run inside xtask), which copies the connection both ways.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

use anyhow::{Context, Result};

/// The name of xtask's hidden subcommand that runs [`stdio_to_tcp`].
pub const SUBCOMMAND: &str = "guestfwd-relay";

/// The `guestfwd=` option that sends guest connections to `guest_ip:port`
/// to `to` on the host (run from inside xtask: the relay is its own binary).
pub fn guestfwd(guest_ip: &str, port: u16, to: SocketAddr) -> Result<String> {
    let exe = std::env::current_exe().context("finding the running xtask binary")?;
    let exe = exe
        .to_str()
        .context("the xtask binary's path is not UTF-8")?;
    // qemu splits netdev options at commas; the command needs none.
    anyhow::ensure!(
        !exe.contains([',', ' ']),
        "the xtask binary's path {exe:?} has a comma or space, which a guestfwd command cannot hold"
    );
    Ok(format!(
        "guestfwd=tcp:{guest_ip}:{port}-cmd:{exe} {SUBCOMMAND} {to}"
    ))
}

/// Copies stdin to a connection to `to` and the connection to stdout, until
/// both directions end.
pub fn stdio_to_tcp(to: &str) -> Result<()> {
    let conn = TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
    let mut upstream = conn.try_clone()?;
    let sender = std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut upstream);
        // The guest finished its request: pass the half-close on.
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let mut down = conn;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = down.read(&mut buf).context("reading from the server")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).context("writing to the guest")?;
        out.flush()?;
    }
    // The server closed: the guest sees the end; a still-blocked stdin
    // reader does not keep the process alive.
    drop(out);
    if sender.is_finished() {
        let _ = sender.join();
    }
    Ok(())
}
