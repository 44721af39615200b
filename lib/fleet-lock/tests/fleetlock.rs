//! The FleetLock client against a small FleetLock server written here from
//! the protocol (coreos/zincati docs/development/fleetlock/protocol.md).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_lock::{FleetLockClient, FleetLockConfig, FleetLockError};

/// How the server behaves.
#[derive(Clone, Copy)]
enum Mode {
    /// A counting semaphore of this many slots, as the protocol says.
    Semaphore(usize),
    /// Answers 500 with an HTML page.
    Garbage,
    /// Answers only after this long.
    Slow(Duration),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let holders = Arc::new(Mutex::new(BTreeSet::<String>::new()));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (seen, holders) = (seen2.clone(), holders.clone());
                std::thread::spawn(move || serve(conn, mode, &seen, &holders));
            }
        });
        Server {
            url: format!("http://{addr}/fleetlock"),
            seen,
            stop,
            addr,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self, id: &str) -> FleetLockClient {
        FleetLockClient::new(&FleetLockConfig {
            timeout: Duration::from_secs(2),
            ..FleetLockConfig::new(&self.url, id)
        })
        .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// Reads one HTTP/1.1 request (headers, then Content-Length bytes).
fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(conn: &mut TcpStream, status: u16, body: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Internal Server Error",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn error_body(kind: &str, value: &str) -> String {
    serde_json::json!({ "kind": kind, "value": value }).to_string()
}

fn serve(
    mut conn: TcpStream,
    mode: Mode,
    seen: &Mutex<Vec<Seen>>,
    holders: &Mutex<BTreeSet<String>>,
) {
    let Some(req) = read_request(&mut conn) else {
        return;
    };
    seen.lock().unwrap().push(req.clone());
    let slots = match mode {
        Mode::Garbage => {
            return respond(&mut conn, 500, "<html><body>proxy error</body></html>");
        }
        Mode::Slow(d) => {
            std::thread::sleep(d);
            return respond(&mut conn, 200, "");
        }
        Mode::Semaphore(n) => n,
    };
    if req.method != "POST" {
        return respond(&mut conn, 404, &error_body("not_found", "POST only"));
    }
    if req.header("fleet-lock-protocol") != Some("true") {
        return respond(
            &mut conn,
            400,
            &error_body(
                "missing_fleet_lock_header",
                "missing 'fleet-lock-protocol: true'",
            ),
        );
    }
    let parsed: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| {
            let p = v.get("client_params")?;
            Some((
                p.get("id")?.as_str()?.to_string(),
                p.get("group")?.as_str()?.to_string(),
            ))
        });
    let Some((id, group)) = parsed.filter(|(id, _)| !id.is_empty()) else {
        return respond(
            &mut conn,
            400,
            &error_body("failed_parsing_body", "bad client_params"),
        );
    };
    let group_ok = !group.is_empty()
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !group_ok {
        return respond(&mut conn, 400, &error_body("invalid_group", &group));
    }
    let mut h = holders.lock().unwrap();
    match req.path.as_str() {
        "/fleetlock/v1/pre-reboot" => {
            if h.contains(&id) || h.len() < slots {
                h.insert(id);
                respond(&mut conn, 200, "");
            } else {
                let value = format!("all {slots} reboot slots of group {group} are taken");
                respond(
                    &mut conn,
                    409,
                    &error_body("failed_lock_semaphore_full", &value),
                );
            }
        }
        "/fleetlock/v1/steady-state" => {
            h.remove(&id);
            respond(&mut conn, 200, "");
        }
        _ => respond(&mut conn, 404, &error_body("not_found", &req.path)),
    }
}

#[test]
fn pre_reboot_and_steady_state() {
    let server = Server::start(Mode::Semaphore(1));
    let a = server.client("a1b2");
    a.pre_reboot().unwrap();
    a.pre_reboot().unwrap(); // re-entrant
    a.steady_state().unwrap();
    a.steady_state().unwrap(); // holding nothing is fine

    let seen = server.seen();
    assert_eq!(seen.len(), 4);
    let r = &seen[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/fleetlock/v1/pre-reboot")
    );
    assert_eq!(seen[2].path, "/fleetlock/v1/steady-state");
    assert_eq!(r.header("fleet-lock-protocol"), Some("true"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"client_params": {"id": "a1b2", "group": "default"}})
    );
}

#[test]
fn a_full_semaphore_is_an_error_with_kind_and_value() {
    let server = Server::start(Mode::Semaphore(1));
    let (a, b) = (server.client("a"), server.client("b"));
    a.pre_reboot().unwrap();
    let e = b.pre_reboot().unwrap_err();
    match &e {
        FleetLockError::Refused {
            status,
            kind,
            value,
            url,
        } => {
            assert_eq!(*status, 409);
            assert_eq!(kind, "failed_lock_semaphore_full");
            assert_eq!(value, "all 1 reboot slots of group default are taken");
            assert!(url.ends_with("/fleetlock/v1/pre-reboot"), "{url}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.kind(), Some("failed_lock_semaphore_full"));
    let text = e.to_string();
    assert!(
        text.contains("failed_lock_semaphore_full") && text.contains("are taken"),
        "{text}"
    );
    a.steady_state().unwrap();
    b.pre_reboot().unwrap();
}

#[test]
fn a_malformed_answer_is_an_error_with_its_status() {
    let server = Server::start(Mode::Garbage);
    let e = server.client("a").pre_reboot().unwrap_err();
    assert!(
        matches!(e, FleetLockError::Status { status: 500, .. }),
        "{e:?}"
    );
    assert!(e.kind().is_none());
    let text = e.to_string();
    assert!(
        text.contains("proxy error") && text.contains("500"),
        "{text}"
    );

    // A wrong base URL: 404 with the server's own error body.
    let server = Server::start(Mode::Semaphore(1));
    let wrong = FleetLockClient::new(&FleetLockConfig::new(
        &format!("http://{}/elsewhere", server.addr),
        "a",
    ))
    .unwrap();
    let e = wrong.steady_state().unwrap_err();
    assert_eq!(e.kind(), Some("not_found"));
}

#[test]
fn the_server_rejects_malformed_requests() {
    // What the server does with requests the client never sends: the same
    // server accepts the client's requests, so the client sends the header
    // and a well-formed body.
    let server = Server::start(Mode::Semaphore(1));
    let raw = |headers: &str, body: &str| {
        let mut c = TcpStream::connect(server.addr).unwrap();
        write!(
            c,
            "POST /fleetlock/v1/pre-reboot HTTP/1.1\r\nhost: x\r\n{headers}content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    };
    let good = r#"{"client_params":{"id":"a","group":"default"}}"#;
    let a = raw("", good);
    assert!(
        a.starts_with("HTTP/1.1 400") && a.contains("missing_fleet_lock_header"),
        "{a}"
    );
    let a = raw("fleet-lock-protocol: true\r\n", "{not json");
    assert!(a.contains("failed_parsing_body"), "{a}");
    let a = raw(
        "fleet-lock-protocol: true\r\n",
        r#"{"client_params":{"id":"a","group":"no/slash"}}"#,
    );
    assert!(a.contains("invalid_group"), "{a}");
    let a = raw("fleet-lock-protocol: true\r\n", good);
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");

    server.client("a").pre_reboot().unwrap();
    // The client refuses a group the protocol does not allow, before sending.
    let bad = FleetLockConfig {
        group: "no/slash".into(),
        ..FleetLockConfig::new(&server.url, "a")
    };
    let e = FleetLockClient::new(&bad).unwrap_err();
    assert!(matches!(e, FleetLockError::InvalidName(_)), "{e:?}");
}

#[test]
fn a_server_that_is_down() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let c = FleetLockClient::new(&FleetLockConfig::new(&url, "a")).unwrap();
    let e = c.pre_reboot().unwrap_err();
    assert!(matches!(e, FleetLockError::Unreachable { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("{url}/v1/pre-reboot")), "{text}");
}

#[test]
fn a_slow_server_times_out() {
    let server = Server::start(Mode::Slow(Duration::from_secs(4)));
    let c = FleetLockClient::new(&FleetLockConfig {
        timeout: Duration::from_millis(700),
        ..FleetLockConfig::new(&server.url, "a")
    })
    .unwrap();
    let start = Instant::now();
    let e = c.pre_reboot().unwrap_err();
    let took = start.elapsed();
    assert!(matches!(e, FleetLockError::Timeout { .. }), "{e:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(e.to_string().contains("did not answer"), "{e}");
}
