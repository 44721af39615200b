//! `--publish HOSTPORT:CONTAINERPORT[/tcp|/udp]`: port forwards into an
//! app's private network namespace by a userspace proxy inside the
//! `cairn-run run --name` process (the model of docker-proxy and podman's
//! rootlessport).
//!
//! - The host listeners are bound on `[::]:HOSTPORT` (dual-stack; `0.0.0.0`
//!   when the host has no IPv6) before the container is created, so a port
//!   in use fails the start with nothing left behind ([`Listeners::bind`]).
//! - Once the container is created, its network namespace is opened once
//!   (`/proc/<pid>/ns/net`, [`open_netns`]) and its loopback brought up
//!   ([`loopback_up`]). Each connection's thread enters the namespace with
//!   `setns` (a per-thread attribute) and connects to the app on loopback.
//! - TCP: one acceptor thread per port; per connection one thread per
//!   direction, a half-close (EOF) is passed on with `shutdown(Write)`, an
//!   error closes both sides. At most [`MAX_TCP_CONNS`] per port.
//! - UDP: one host socket per port; per client address a socket connected
//!   to the app plus a thread sending the app's replies back to that client.
//!   Flows idle for [`UDP_IDLE`] are dropped, at most [`MAX_UDP_FLOWS`] per
//!   port (the least recently active makes room for a new client).
//!
//! Known limitation (as with docker-proxy): the app sees every connection
//! and datagram coming from 127.0.0.1 (or ::1), not from the client's
//! address. An app that needs the client address must use `--net host`.
//!
//! The threads are spawned only after libcontainer has created the
//! container (it needs a single-threaded process to clone from), they block
//! the forwarded signals, and they live as long as the process: when the
//! container exits, cairn-run exits with its status and they end with it.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{
    Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream,
    UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    self as sock, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, sockopt,
};

use crate::foreground;
use crate::spec::Publish;

/// A UDP flow with no datagram either way for this long is dropped
/// (docker-proxy uses 90 s).
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// UDP flows (one thread and one 64 KiB buffer each) per published port.
pub const MAX_UDP_FLOWS: usize = 256;
/// Concurrent TCP connections (two threads each) per published port.
pub const MAX_TCP_CONNS: usize = 1024;
/// How often idle UDP flows are looked for; also how long an ended flow's
/// thread may linger.
const SWEEP: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one warning per port this often: a client retrying against an
/// app that is not listening yet must not flood the journal.
const WARN_EVERY: Duration = Duration::from_secs(10);
const THREAD_STACK: usize = 128 << 10;
const MAX_DATAGRAM: usize = 65536;

/// Whether creating or binding an IPv6 socket failed because the host has
/// no IPv6 (then IPv4 alone is used) rather than for a real reason.
pub fn ipv6_unavailable(e: Errno) -> bool {
    matches!(
        e,
        Errno::EAFNOSUPPORT | Errno::EPROTONOSUPPORT | Errno::EADDRNOTAVAIL
    )
}

/// The one-line error for a host port that cannot be bound.
pub fn bind_failure(p: &Publish, e: Errno) -> String {
    let (port, proto) = (p.host_port, p.proto());
    let flag = if p.udp { 'u' } else { 't' };
    match e {
        Errno::EADDRINUSE => format!(
            "host port {port}/{proto} (--publish {p}) is already in use: stop what listens on it \
             (`ss -{flag}lnp 'sport = :{port}'` shows it) or publish the app on another host port"
        ),
        Errno::EACCES | Errno::EPERM => format!(
            "host port {port}/{proto} (--publish {p}) cannot be bound: permission denied \
             (run cairn-run as root or use a host port above 1023)"
        ),
        e => format!(
            "cannot listen on host port {port}/{proto} (--publish {p}): {}",
            e.desc()
        ),
    }
}

/// Allows one event per interval.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl RateLimit {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    pub fn allow(&self, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// The UDP flows of one published port by client address: which to keep,
/// which are idle, which to evict for a new client. No I/O: the caller
/// passes the time and each flow's last reply (the reply threads record it).
#[derive(Debug)]
pub struct FlowTable<K, V> {
    flows: HashMap<K, (V, Instant)>,
    idle: Duration,
    cap: usize,
}

impl<K: Eq + Hash + Copy, V> FlowTable<K, V> {
    pub fn new(idle: Duration, cap: usize) -> Self {
        Self {
            flows: HashMap::new(),
            idle,
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The flow of `key`, marked active (a datagram from the client) at `now`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<&V> {
        let (v, last) = self.flows.get_mut(key)?;
        *last = (*last).max(now);
        Some(v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.flows.remove(key).map(|(v, _)| v)
    }

    /// Removes and returns the flows with no datagram either way for the
    /// idle time.
    pub fn expire(&mut self, now: Instant, reply_at: impl Fn(&V) -> Option<Instant>) -> Vec<V> {
        let idle: Vec<K> = self
            .flows
            .iter()
            .filter(|(_, (v, last))| {
                now.saturating_duration_since(active_at(*last, reply_at(v))) >= self.idle
            })
            .map(|(k, _)| *k)
            .collect();
        idle.iter().filter_map(|k| self.remove(k)).collect()
    }

    /// Adds the flow of `key` (active at `now`) and returns the flows it
    /// displaced: a previous flow of the same key, the idle ones when the
    /// table is full, then the least recently active ones if still full.
    pub fn insert(
        &mut self,
        key: K,
        value: V,
        now: Instant,
        reply_at: impl Fn(&V) -> Option<Instant>,
    ) -> Vec<V> {
        let mut out: Vec<V> = self.remove(&key).into_iter().collect();
        if self.flows.len() >= self.cap {
            out.extend(self.expire(now, &reply_at));
        }
        while self.flows.len() >= self.cap {
            let oldest = self
                .flows
                .iter()
                .min_by_key(|(_, (v, last))| active_at(*last, reply_at(v)))
                .map(|(k, _)| *k);
            match oldest.and_then(|k| self.remove(&k)) {
                Some(v) => out.push(v),
                None => break,
            }
        }
        self.flows.insert(key, (value, now));
        out
    }
}

fn active_at(last: Instant, reply: Option<Instant>) -> Instant {
    reply.map_or(last, |r| r.max(last))
}

/// Host sockets bound for the published ports, not yet forwarding.
#[derive(Debug, Default)]
pub struct Listeners {
    tcp: Vec<(Publish, TcpListener)>,
    udp: Vec<(Publish, UdpSocket)>,
}

impl Listeners {
    /// Binds every published host port, or none: dropping the partial set
    /// on error closes what was bound.
    pub fn bind(publish: &[Publish]) -> Result<Self> {
        let mut l = Self::default();
        for p in publish {
            let fd = bind_host(p).map_err(|e| anyhow!(bind_failure(p, e)))?;
            if p.udp {
                l.udp.push((*p, UdpSocket::from(fd)));
            } else {
                l.tcp.push((*p, TcpListener::from(fd)));
            }
        }
        Ok(l)
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }

    /// Starts forwarding into `netns` (from [`open_netns`]). Spawns threads:
    /// only call it once the container is created.
    pub fn start(self, netns: Arc<OwnedFd>) -> Result<()> {
        for (p, listener) in self.tcp {
            let port = Port::new(p, netns.clone());
            spawn(format!("tcp:{}", p.host_port), move || {
                tcp_accept(&port, &listener)
            })
            .with_context(|| format!("cannot start the forwarder of --publish {p}"))?;
        }
        for (p, socket) in self.udp {
            let port = Port::new(p, netns.clone());
            spawn(format!("udp:{}", p.host_port), move || {
                udp_serve(&port, socket)
            })
            .with_context(|| format!("cannot start the forwarder of --publish {p}"))?;
        }
        Ok(())
    }
}

fn bind_host(p: &Publish) -> Result<OwnedFd, Errno> {
    match bind_on(p, true) {
        Err(e) if ipv6_unavailable(e) => bind_on(p, false),
        r => r,
    }
}

fn bind_on(p: &Publish, v6: bool) -> Result<OwnedFd, Errno> {
    let (family, ty) = match (v6, p.udp) {
        (true, true) => (AddressFamily::Inet6, SockType::Datagram),
        (true, false) => (AddressFamily::Inet6, SockType::Stream),
        (false, true) => (AddressFamily::Inet, SockType::Datagram),
        (false, false) => (AddressFamily::Inet, SockType::Stream),
    };
    let fd = sock::socket(family, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if !p.udp {
        // A restart must not wait for TIME_WAIT; a live listener still
        // conflicts.
        sock::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if v6 {
        // Dual-stack whatever net.ipv6.bindv6only says.
        sock::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
        let addr = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, p.host_port, 0, 0);
        sock::bind(fd.as_raw_fd(), &SockaddrIn6::from(addr))?;
    } else {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, p.host_port);
        sock::bind(fd.as_raw_fd(), &SockaddrIn::from(addr))?;
    }
    if !p.udp {
        sock::listen(&fd, Backlog::MAXCONN)?;
    }
    Ok(fd)
}

/// The network namespace of the container whose init is `pid`, held open
/// for the connections to enter.
pub fn open_netns(pid: i32) -> Result<Arc<OwnedFd>> {
    if pid <= 0 {
        bail!("the container has no init pid ({pid}), so its network cannot be set up");
    }
    let path = format!("/proc/{pid}/ns/net");
    let f = std::fs::File::open(&path).with_context(|| {
        format!("cannot open {path}, the network namespace of the container (did it exit?)")
    })?;
    Ok(Arc::new(OwnedFd::from(f)))
}

/// Moves the calling thread (only) into `netns`; sockets it creates from
/// then on live there.
pub fn enter_netns(netns: &OwnedFd) -> io::Result<()> {
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Brings `lo` up in `netns` (a new network namespace has it down), from a
/// short-lived thread so this one stays where it is.
pub fn loopback_up(netns: &OwnedFd) -> Result<()> {
    let joined = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("lo-up".into())
            .stack_size(THREAD_STACK)
            .spawn_scoped(s, || {
                foreground::block_signals_in_thread()?;
                enter_netns(netns)?;
                set_loopback_up()
            })
            .map(|t| t.join())
    });
    let done = joined.context("cannot start a thread to bring up loopback")?;
    done.map_err(|_| anyhow!("the thread bringing up loopback panicked"))?
        .context("cannot bring up the loopback interface in the container's network namespace")
}

fn set_loopback_up() -> io::Result<()> {
    let fd = sock::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data (a name and a union of integers and
    // addresses), so all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes
    // ifru_flags of the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so ifru_flags is the member set.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = libc::IFF_UP as libc::c_short;
    if flags & up != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: SIOCSIFFLAGS reads the name and flags of the ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns a proxy thread that blocks the forwarded signals first (it
/// inherits them blocked from `run_bundle` too): a SIGTERM for the unit
/// must reach the signalfd, not a thread whose default action would end the
/// process without stopping the container.
fn spawn<F>(name: String, f: F) -> io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name)
        .stack_size(THREAD_STACK)
        .spawn(move || {
            if foreground::block_signals_in_thread().is_ok() {
                f();
            }
        })
        .map(drop)
}

/// One published port as its threads share it.
struct Port {
    p: Publish,
    netns: Arc<OwnedFd>,
    warnings: RateLimit,
}

impl Port {
    fn new(p: Publish, netns: Arc<OwnedFd>) -> Arc<Self> {
        Arc::new(Self {
            p,
            netns,
            warnings: RateLimit::new(WARN_EVERY),
        })
    }

    fn warn(&self, what: std::fmt::Arguments<'_>) {
        if self.warnings.allow(Instant::now()) {
            eprintln!("cairn-run: --publish {}: {what}", self.p);
        }
    }
}

/// Counts a live TCP connection until dropped.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tcp_accept(port: &Arc<Port>, listener: &TcpListener) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                ) {
                    // Out of fds or memory: back off rather than spin.
                    port.warn(format_args!("accept failed: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
        };
        if live.fetch_add(1, Ordering::SeqCst) >= MAX_TCP_CONNS {
            live.fetch_sub(1, Ordering::SeqCst);
            port.warn(format_args!(
                "{MAX_TCP_CONNS} connections already open: closing a new one"
            ));
            continue;
        }
        let guard = Live(live.clone());
        let conn_port = port.clone();
        if let Err(e) = spawn(format!("tcp:{}<", port.p.host_port), move || {
            let _guard = guard;
            tcp_conn(&conn_port, client);
        }) {
            port.warn(format_args!("cannot start a connection thread: {e}"));
        }
    }
}

fn tcp_conn(port: &Port, client: TcpStream) {
    let app = enter_netns(&port.netns).and_then(|()| connect_app(port.p.container_port));
    let app = match app {
        Ok(a) => a,
        Err(e) => {
            port.warn(format_args!(
                "cannot reach the app on port {} in its network ({e}); is it listening there?",
                port.p.container_port
            ));
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = app.set_nodelay(true);
    let (Ok(client2), Ok(app2)) = (client.try_clone(), app.try_clone()) else {
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let back = spawn(format!("tcp:{}>", port.p.host_port), move || {
        copy_half(app2, client2);
        let _ = tx.send(());
    });
    if back.is_ok() {
        copy_half(client, app);
        // Both sockets close once the other direction is done too.
        let _ = rx.recv();
    }
}

/// The app on loopback in the current thread's namespace: 127.0.0.1, or
/// ::1 for an app listening on IPv6 only.
fn connect_app(port: u16) -> io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| e)
        }
        r => r,
    }
}

/// Copies one direction until EOF, which is passed on as a half-close; on
/// an error both sockets are shut down so the other direction ends too.
fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    match io::copy(&mut from, &mut to) {
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
}

/// What a UDP flow's reply thread and the port's loop share.
#[derive(Default)]
struct FlowShared {
    closed: AtomicBool,
    /// Milliseconds from the port's epoch to the last reply.
    last_reply_ms: AtomicU64,
}

struct Flow {
    to_app: UdpSocket,
    shared: Arc<FlowShared>,
}

impl Drop for Flow {
    /// A flow leaving the table ends its reply thread (within [`SWEEP`]).
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }
}

fn udp_serve(port: &Arc<Port>, host: UdpSocket) {
    let host = Arc::new(host);
    if let Err(e) = host.set_read_timeout(Some(SWEEP)) {
        port.warn(format_args!(
            "cannot set a receive timeout ({e}); idle flows expire only on traffic"
        ));
    }
    let epoch = Instant::now();
    let reply_at = |f: &Flow| {
        Some(epoch + Duration::from_millis(f.shared.last_reply_ms.load(Ordering::SeqCst)))
    };
    let mut flows: FlowTable<SocketAddr, Flow> = FlowTable::new(UDP_IDLE, MAX_UDP_FLOWS);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut last_sweep = epoch;
    loop {
        let got = host.recv_from(&mut buf);
        let now = Instant::now();
        match got {
            Ok((n, client)) => {
                if flows
                    .get(&client, now)
                    .is_some_and(|f| f.shared.closed.load(Ordering::SeqCst))
                {
                    flows.remove(&client);
                }
                if flows.get(&client, now).is_none() {
                    match open_flow(port, &host, client, epoch) {
                        Ok(f) => drop(flows.insert(client, f, now, reply_at)),
                        Err(e) => {
                            port.warn(format_args!(
                                "cannot open a flow to the app on port {} in its network: {e}",
                                port.p.container_port
                            ));
                            continue;
                        }
                    }
                }
                if let Some(f) = flows.get(&client, now) {
                    // UDP is lossy: a refused or dropped datagram is the
                    // client's to retry.
                    let _ = f.to_app.send(&buf[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                port.warn(format_args!("receive failed: {e}"));
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if now.saturating_duration_since(last_sweep) >= SWEEP {
            last_sweep = now;
            drop(flows.expire(now, reply_at));
        }
    }
}

/// A socket in the app's namespace connected to it, and the thread that
/// carries its replies back to `client`.
fn open_flow(
    port: &Arc<Port>,
    host: &Arc<UdpSocket>,
    client: SocketAddr,
    epoch: Instant,
) -> io::Result<Flow> {
    let shared = Arc::new(FlowShared::default());
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<UdpSocket>>(1);
    let (flow_port, host, flow_shared) = (port.clone(), host.clone(), shared.clone());
    spawn(format!("udp:{}<", port.p.host_port), move || {
        let sock = enter_netns(&flow_port.netns)
            .and_then(|()| app_udp_socket(flow_port.p.container_port))
            .and_then(|s| s.try_clone().map(|c| (s, c)));
        match sock {
            Ok((sock, to_app)) => {
                if tx.send(Ok(to_app)).is_ok() {
                    drop(tx);
                    udp_replies(&sock, &host, client, &flow_shared, epoch);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    let to_app = rx
        .recv()
        .map_err(|_| io::Error::other("the flow's thread ended early"))??;
    Ok(Flow { to_app, shared })
}

fn app_udp_socket(port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    s.connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(SWEEP))?;
    Ok(s)
}

fn udp_replies(
    from_app: &UdpSocket,
    host: &UdpSocket,
    client: SocketAddr,
    shared: &FlowShared,
    epoch: Instant,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.closed.load(Ordering::SeqCst) {
        match from_app.recv(&mut buf) {
            Ok(n) => {
                let _ = host.send_to(&buf[..n], client);
                let ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                shared.last_reply_ms.store(ms, Ordering::SeqCst);
            }
            // Refused: the app was not listening for an earlier datagram.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(_) => break,
        }
    }
    shared.closed.store(true, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_publish;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn ipv6_fallback_table() {
        for (e, want) in [
            (Errno::EAFNOSUPPORT, true),
            (Errno::EPROTONOSUPPORT, true),
            (Errno::EADDRNOTAVAIL, true),
            (Errno::EADDRINUSE, false),
            (Errno::EACCES, false),
        ] {
            assert_eq!(ipv6_unavailable(e), want, "{e}");
        }
    }

    #[test]
    fn bind_failure_table() {
        for (publish, e, want) in [
            (
                "8080:80",
                Errno::EADDRINUSE,
                "host port 8080/tcp (--publish 8080:80/tcp) is already in use: stop what listens on it (`ss -tlnp 'sport = :8080'` shows it) or publish the app on another host port",
            ),
            (
                "53:53/udp",
                Errno::EADDRINUSE,
                "host port 53/udp (--publish 53:53/udp) is already in use: stop what listens on it (`ss -ulnp 'sport = :53'` shows it) or publish the app on another host port",
            ),
            (
                "80:80",
                Errno::EACCES,
                "host port 80/tcp (--publish 80:80/tcp) cannot be bound: permission denied (run cairn-run as root or use a host port above 1023)",
            ),
            (
                "80:80",
                Errno::ENOBUFS,
                "cannot listen on host port 80/tcp (--publish 80:80/tcp): No buffer space available",
            ),
        ] {
            let p = parse_publish(publish).unwrap();
            let got = bind_failure(&p, e);
            assert_eq!(got, want);
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn rate_limit_table() {
        let t0 = Instant::now();
        let r = RateLimit::new(s(10));
        for (at, want) in [
            (0, true),
            (1, false),
            (9, false),
            (10, true),
            (15, false),
            (30, true),
        ] {
            assert_eq!(r.allow(t0 + s(at)), want, "at {at}s");
        }
    }

    /// (key, client activity, reply activity) in seconds from t0.
    type Entry = (u8, u64, Option<u64>);

    fn table(t0: Instant, cap: usize, entries: &[Entry]) -> FlowTable<u8, Option<Instant>> {
        let mut t = FlowTable::new(s(60), cap);
        for (k, at, reply) in entries {
            let displaced = t.insert(*k, reply.map(|r| t0 + s(r)), t0 + s(*at), |v| *v);
            assert!(displaced.is_empty());
        }
        t
    }

    fn keys(t: &FlowTable<u8, Option<Instant>>) -> Vec<u8> {
        let mut k: Vec<u8> = t.flows.keys().copied().collect();
        k.sort();
        k
    }

    #[test]
    fn expiry_table() {
        let t0 = Instant::now();
        let entries: &[Entry] = &[
            (1, 0, None),
            (2, 30, None),
            (3, 0, Some(50)),
            (4, 100, None),
        ];
        for (now, want_left) in [
            (59, vec![1, 2, 3, 4]),
            (60, vec![2, 3, 4]),
            (100, vec![3, 4]),
            (110, vec![4]),
            (160, vec![]),
        ] {
            let mut t = table(t0, 10, entries);
            let gone = t.expire(t0 + s(now), |v| *v);
            assert_eq!(keys(&t), want_left, "at {now}s");
            assert_eq!(gone.len() + t.len(), entries.len());
        }
    }

    #[test]
    fn client_traffic_keeps_a_flow() {
        let t0 = Instant::now();
        let mut t = table(t0, 10, &[(1, 0, None)]);
        assert!(t.get(&1, t0 + s(50)).is_some());
        assert!(t.get(&2, t0 + s(50)).is_none());
        assert!(t.expire(t0 + s(100), |v| *v).is_empty());
        assert_eq!(t.expire(t0 + s(110), |v| *v).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn eviction_table() {
        let t0 = Instant::now();
        // A full table (cap 3) gets key 9 at `now`.
        for (entries, now, want_left) in [
            // The least recently active goes.
            (
                &[(1, 0, None), (2, 10, None), (3, 20, None)][..],
                30,
                vec![2, 3, 9],
            ),
            // Replies count as activity.
            (
                &[(1, 0, Some(25)), (2, 10, None), (3, 20, None)],
                30,
                vec![1, 3, 9],
            ),
            // Idle flows go first, all of them.
            (&[(1, 0, None), (2, 5, None), (3, 50, None)], 70, vec![3, 9]),
        ] {
            let mut t = table(t0, 3, entries);
            let displaced = t.insert(9, None, t0 + s(now), |v| *v);
            assert_eq!(keys(&t), want_left, "{entries:?}");
            assert_eq!(displaced.len(), entries.len() + 1 - want_left.len());
        }
        // Room left: nothing goes; the same key replaces its flow.
        let mut t = table(t0, 3, &[(1, 0, None)]);
        assert!(t.insert(2, None, t0 + s(200), |v| *v).is_empty());
        assert_eq!(t.insert(1, Some(t0), t0 + s(201), |v| *v).len(), 1);
        assert_eq!(keys(&t), [1, 2]);
        // A cap of 0 still holds one flow.
        let mut t = table(t0, 0, &[]);
        assert!(t.insert(1, None, t0, |v| *v).is_empty());
        assert_eq!(t.insert(2, None, t0, |v| *v).len(), 1);
        assert_eq!(keys(&t), [2]);
    }
}
