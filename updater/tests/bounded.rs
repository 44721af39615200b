//! Bounded resources (issue 11, item 7): the root chain is walked one verified
//! link at a time under a byte cap, a drip-feeding server fails in bounded
//! time (TUF's slow-retrieval attack), and the service pings the systemd
//! watchdog by time while a check waits on the network.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cairn_updater::fixture::{self, Drip, NOW, Reaped, World};
use cairn_updater::http::{FetchError, Http, HttpOptions, MinRate};
use disk_layout::Slot;
use gpt_slots::Attrs;
use release_manifest::KeyPair;
use release_repo::Root;

const USR: u64 = 1_200_000;
const CHUNK: u64 = 64 << 10;

/// `fixture::fast_http` with two attempts.
fn http() -> HttpOptions {
    HttpOptions {
        attempts: 2,
        ..fixture::fast_http()
    }
}

/// A short window so the tests take a second, not minutes; the same code path
/// as the default (1 KiB/s over 60 s).
fn fast_min_rate() -> MinRate {
    MinRate {
        bytes_per_sec: 2000,
        window: Duration::from_millis(300),
    }
}

/// A repository with 1.1.0; a host on 1.0.0 booted from slot A.
fn world() -> World {
    let mut w = World::new(&[("1.1.0", 2)], USR, CHUNK, 4 << 20);
    w.http = http();
    w
}

/// Writes root version `version` over `keys` (threshold 2), padded with
/// `padding` bytes of JSON whitespace, signed by `keys` (old and new alike).
fn write_root(repo: &Path, version: u64, keys: &[KeyPair], padding: usize) {
    let publics: Vec<_> = keys.iter().map(KeyPair::public).collect();
    let mut doc = Root::new(&publics, 2, version, NOW + 365 * 86_400).to_json();
    doc.extend(std::iter::repeat_n(b' ', padding));
    let sig = release_manifest::sign_document(&doc, keys).unwrap();
    let path = repo.join(release_repo::root_path(version));
    std::fs::write(path.with_extension("json.sig"), sig).unwrap();
    std::fs::write(path, doc).unwrap();
}

fn requested(log: &[String], version: u64) -> bool {
    let p = format!("/roots/{version}.json ");
    log.iter().any(|l| l.starts_with(&p))
}

#[test]
fn a_long_root_chain_is_followed_link_by_link() {
    let w = world();
    for v in 2..=6 {
        write_root(&w.repo, v, &fixture::repo_keys(), 0);
    }
    let c = w.agent(Slot::A, "1.0.0").check().unwrap();
    assert_eq!(c.root_version, 6);
    assert!(
        requested(&w.server.log(), 7),
        "the walk looks for the next link"
    );
}

#[test]
fn a_bad_root_link_stops_the_walk_before_later_links_are_fetched() {
    let w = world();
    for v in 2..=6 {
        write_root(&w.repo, v, &fixture::repo_keys(), 0);
    }
    // Link 3 signed by one old key and a stranger: below the old threshold.
    let stranger = KeyPair::from_seed([77; 32]);
    let doc = std::fs::read(w.repo.join("roots/3.json")).unwrap();
    let sig =
        release_manifest::sign_document(&doc, &[fixture::repo_keys()[0].clone(), stranger.clone()])
            .unwrap();
    std::fs::write(w.repo.join("roots/3.json.sig"), sig).unwrap();

    let err = w.agent(Slot::A, "1.0.0").check().unwrap_err().to_string();
    assert!(err.contains("root version 3"), "{err}");
    let log = w.server.log();
    assert!(requested(&log, 3), "{log:?}");
    for later in 4..=7 {
        assert!(
            !requested(&log, later),
            "root {later} fetched after a bad link 3: {log:?}"
        );
    }
    // Nothing of the bad chain became trusted.
    let trusted = w.agent(Slot::A, "1.0.0").state.trust().unwrap().root;
    assert!(
        trusted.as_ref().is_none_or(|r| r.version == 1),
        "{trusted:?}"
    );
}

#[test]
fn a_huge_root_chain_is_refused_at_the_byte_cap() {
    let w = world();
    // Nine valid links of 3 MiB each (under the 4 MiB per-file cap), 27 MiB in
    // all: the walk's 16 MiB total is reached at the sixth.
    const PAD: usize = 3 << 20;
    for v in 2..=10 {
        write_root(&w.repo, v, &fixture::repo_keys(), PAD);
    }
    let started = Instant::now();
    let err = w.agent(Slot::A, "1.0.0").check().unwrap_err();
    assert!(
        matches!(
            err,
            cairn_updater::Error::Fetch(FetchError::OverBudget { .. })
        ),
        "{err}"
    );
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("root chain") && text.contains("16777216") && text.contains("roots/7.json"),
        "{text}"
    );
    let log = w.server.log();
    for later in 8..=11 {
        assert!(!requested(&log, later), "root {later} fetched: {log:?}");
    }
    // The client stopped reading at the cap (plus what sockets had buffered).
    let sent = w.server.faults.sent.load(Ordering::SeqCst);
    assert!(sent < (16 << 20) + (4 << 20), "{sent} bytes sent");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A server that answers every request with headers announcing `len` bytes,
/// then drips one byte every `every`; returns its URL and request count.
fn drip_server(len: u64, every: Duration, drip_headers: bool) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU32::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut out = stream;
                let mut line = String::new();
                while reader.read_line(&mut line)? > 2 {
                    line.clear();
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                let (fast, slow): (&[u8], u64) = if drip_headers {
                    (b"HTTP/1.1 200 OK\r\n", 1000)
                } else {
                    (head.as_bytes(), len)
                };
                out.write_all(fast)?;
                out.flush()?;
                // Ends when the client hangs up (the write fails) or after 30 s.
                let give_up = Instant::now() + Duration::from_secs(30);
                for _ in 0..slow {
                    if Instant::now() > give_up {
                        break;
                    }
                    std::thread::sleep(every);
                    out.write_all(if drip_headers { b"X" } else { b"x" })?;
                    out.flush()?;
                }
                Ok(())
            });
        }
    });
    (url, requests)
}

#[test]
fn a_drip_feeding_server_fails_in_bounded_time() {
    // One byte every 30 ms: each read gets a byte long before the 2 s stall
    // timeout, so only the rate can stop it.
    let (url, requests) = drip_server(10_000, Duration::from_millis(30), false);
    let http = Http::new(&url, http()).with_min_rate(fast_min_rate());
    let started = Instant::now();
    let err = http.get("chunks/x.zst", 10_000, Some(10_000)).unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, FetchError::TooSlow { .. }), "{text}");
    assert!(text.contains(&format!("{url}/chunks/x.zst")), "{text}");
    assert!(text.contains("bytes/s") && text.contains("2000"), "{text}");
    assert!(text.contains("2 attempts"), "{text}");
    // Two attempts of one 300 ms window each, plus at most one read each.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
}

#[test]
fn drip_fed_response_headers_time_out() {
    let (url, _) = drip_server(1000, Duration::from_millis(50), true);
    let mut opts = http();
    opts.stall_timeout = Duration::from_millis(500);
    let http = Http::new(&url, opts).with_min_rate(fast_min_rate());
    let started = Instant::now();
    let err = http.get("channels/stable.json", 1000, None).unwrap_err();
    assert!(matches!(err, FetchError::Stalled { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn a_slow_but_steady_server_is_not_cut() {
    // 100 bytes every 25 ms is 4000 bytes/s, twice the minimum, for 1.5 s.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || -> std::io::Result<()> {
        let (stream, _) = listener.accept()?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut out = stream;
        let mut line = String::new();
        while reader.read_line(&mut line)? > 2 {
            line.clear();
        }
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n")?;
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(25));
            out.write_all(&[b'y'; 100])?;
            out.flush()?;
        }
        Ok(())
    });
    let http = Http::new(&url, http()).with_min_rate(fast_min_rate());
    let body = http.get("f", 6000, Some(6000)).unwrap();
    assert_eq!(body, vec![b'y'; 6000]);
}

#[test]
fn a_drip_fed_update_fails_like_a_network_error_and_resumes_later() {
    let w = world();
    let chunk = w.manifest("1.1.0").image("usr").unwrap().chunks[6]
        .file
        .clone();
    *w.server.faults.drip.lock().unwrap() = Some(Drip {
        needle: chunk.clone(),
        after: 100,
        every: Duration::from_millis(30),
    });
    let mut agent = w.agent(Slot::A, "1.0.0");
    agent.http = Http::new(&w.server.url, http()).with_min_rate(fast_min_rate());
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    let started = Instant::now();
    let err = agent.apply(&entry, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains(&chunk) && err.contains("bytes/s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // As after any network error: B never bootable, the write pending.
    assert_eq!(w.attrs().1, Attrs::new(0, 0, false));
    let p = agent.state.progress().unwrap().unwrap();
    assert_eq!(p.phase, cairn_updater::state::Phase::Writing);
    // The second attempt resumed the chunk with a Range request.
    let log = w.server.log();
    let tries: Vec<_> = log.iter().filter(|l| l.contains(&chunk)).collect();
    assert_eq!(tries.len(), 2, "{log:?}");
    assert!(tries[1].contains("Some("), "{tries:?}");

    // The server recovers; the next check completes the update.
    *w.server.faults.drip.lock().unwrap() = None;
    let _agent = w.updated_agent(Slot::A, "1.0.0");
    assert_eq!(w.attrs().1, Attrs::new(2, 3, false));
}

#[test]
fn the_watchdog_is_pinged_by_time_while_a_check_waits_on_the_network() {
    let w = world();
    // Never answers: the check sits in one request for its 30 s stall timeout,
    // with no progress to report.
    w.server.faults.stall.store(true, Ordering::SeqCst);
    let config = format!(
        "[update]\nurl = \"{}\"\ninterval_minutes = 60\n",
        w.server.url
    );
    fixture::write_host_files(&w.dir, &w.root, &config).unwrap();
    let notify_path = w.dir.join("notify");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(w.dir.join("updated.log")).unwrap();
    let _daemon = Reaped(
        Command::new(env!("CARGO_BIN_EXE_cairn-updated"))
            .args(fixture::cairnctl_args(&w.dir, &w.server.url))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            // No bus here: the timer still runs (the service says so and goes on).
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
            .stderr(log)
            .spawn()
            .expect("start cairn-updated"),
    );
    let daemon_log = || std::fs::read_to_string(w.dir.join("updated.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    // Wait for READY, then for the check to be waiting on the stalled server.
    loop {
        assert!(Instant::now() < deadline, "no READY=1: {}", daemon_log());
        if let Ok(n) = sock.recv(&mut buf)
            && &buf[..n] == b"READY=1"
        {
            break;
        }
    }
    while !w.server.log().iter().any(|l| l.contains("roots/2.json")) {
        assert!(Instant::now() < deadline, "no request: {}", daemon_log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // 1.5 s with a 200 ms watchdog: about 15 pings, none from progress.
    let window = Instant::now() + Duration::from_millis(1500);
    let mut pings = 0;
    let mut seen = Vec::new();
    while Instant::now() < window {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            pings += u32::from(m == "WATCHDOG=1");
            seen.push(m);
        }
    }
    assert!(
        pings >= 5,
        "{pings} watchdog pings in 1.5 s while the check waited: {seen:?}\n{}",
        daemon_log()
    );
    // Still in that first request: the pings did not come from the idle loop.
    assert_eq!(w.server.log().len(), 1, "{:?}", w.server.log());
}
