//! `reboot = "fleetlock"`: the service's cycles of two hosts against a
//! FleetLock server written here from Zincati's protocol
//! (docs/development/fleetlock/protocol.md): `POST /v1/pre-reboot` takes a
//! slot of a counting semaphore, `POST /v1/steady-state` gives it back; both
//! carry `fleet-lock-protocol: true` and `{"client_params": {"id", "group"}}`.

mod fleet_common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use disk_layout::Slot;
use fleet_common::Node;

/// One request the server answered: (path, id, group).
type Seen = (String, String, String);

struct FleetLockServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    holders: Arc<Mutex<BTreeSet<String>>>,
}

impl FleetLockServer {
    fn start(slots: usize) -> FleetLockServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/fleetlock", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let holders = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, h) = (seen.clone(), holders.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, h) = (s.clone(), h.clone());
                std::thread::spawn(move || serve(conn, slots, &s, &h));
            }
        });
        FleetLockServer { url, seen, holders }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn holders(&self) -> Vec<String> {
        self.holders.lock().unwrap().iter().cloned().collect()
    }
}

fn serve(
    conn: TcpStream,
    slots: usize,
    seen: &Mutex<Vec<Seen>>,
    holders: &Mutex<BTreeSet<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let (mut length, mut protocol) = (0usize, false);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "fleet-lock-protocol" => protocol = v.trim() == "true",
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let answer = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = v["client_params"]["id"].as_str().unwrap_or("").to_string();
    let group = v["client_params"]["group"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let reply = if method != "POST" || !protocol || id.is_empty() {
        answer(
            "400 Bad Request",
            r#"{"kind":"failed_request","value":"not a FleetLock request"}"#,
        )
    } else {
        seen.lock().unwrap().push((path.clone(), id.clone(), group));
        let mut h = holders.lock().unwrap();
        match path.as_str() {
            "/fleetlock/v1/pre-reboot" if h.contains(&id) || h.len() < slots => {
                h.insert(id);
                answer("200 OK", "")
            }
            "/fleetlock/v1/pre-reboot" => answer(
                "409 Conflict",
                &format!(
                    r#"{{"kind":"failed_lock_semaphore_full","value":"all {slots} slots taken"}}"#
                ),
            ),
            "/fleetlock/v1/steady-state" => {
                h.remove(&id);
                answer("200 OK", "")
            }
            _ => answer(
                "404 Not Found",
                r#"{"kind":"not_found","value":"no such endpoint"}"#,
            ),
        }
    };
    let mut out = conn;
    let _ = out.write_all(reply.as_bytes());
}

fn update(server: &FleetLockServer) -> String {
    format!(
        "reboot = \"fleetlock\"\n[update.fleetlock]\nurl = \"{}\"\ngroup = \"workers\"\n",
        server.url
    )
}

#[test]
fn two_hosts_take_turns_through_a_fleetlock_server() {
    let server = FleetLockServer::start(1);
    let mut h1 = Node::new(21, &update(&server));
    let mut h2 = Node::new(22, &update(&server));

    // Host 1 starts: steady-state first (it may hold a slot from before it
    // lost its state; Zincati does the same at start-up), then the update,
    // the slot and the reboot.
    let (s1, mut c1) = h1.start(Slot::A, "1.0.0");
    let next = h1.run(&s1, &mut c1);
    assert_eq!(next.status, "rebooting", "{}", h1.env.log_text());
    assert_eq!(h1.env.reboots, 1);
    assert!(
        h1.env.logged(&format!(
            "took a reboot slot in group workers of FleetLock server {}",
            server.url
        )),
        "{}",
        h1.env.log_text()
    );
    let seen = server.seen();
    let paths: Vec<&str> = seen.iter().map(|(p, ..)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/fleetlock/v1/steady-state", "/fleetlock/v1/pre-reboot"]
    );
    // The id sent is the node id, never the machine id; the group is ours.
    for (_, id, group) in &seen {
        assert_eq!(id, &h1.id);
        assert_eq!(group, "workers");
        assert!(!fleet_common::machine_id_text(21).contains(id.as_str()));
    }
    assert_eq!(server.holders(), [h1.id.as_str()]);
    // FleetLock cannot be asked: the status comes from the local record.
    let st = s1.agent.status().unwrap().reboot;
    assert_eq!(
        (st.strategy.as_str(), st.holds_slot),
        ("fleetlock", Some(true))
    );

    // Host 2: staged, refused, waits.
    let (s2, mut c2) = h2.start(Slot::A, "1.0.0");
    let next = h2.run(&s2, &mut c2);
    assert!(
        next.status.starts_with(
            "waiting for a reboot slot: the FleetLock server refused (failed_lock_semaphore_full: all 1 slots taken); retry in"
        ),
        "{next:?}"
    );
    assert_eq!(h2.env.reboots, 0);
    assert!(h2.staged(&s2.agent));
    assert_eq!(s2.agent.status().unwrap().reboot.holds_slot, Some(false));

    // Host 1 reboots into b; on trial it keeps the slot (no steady-state).
    drop((s1, c1));
    h1.boot_b_on_trial();
    let (s1, mut c1) = h1.start(Slot::B, "1.1.0");
    h1.run(&s1, &mut c1);
    assert_eq!(server.holders(), [h1.id.as_str()]);
    let steady = |id: &str| {
        server
            .seen()
            .iter()
            .filter(|(p, i, _)| p.ends_with("steady-state") && i == id)
            .count()
    };
    assert_eq!(steady(&h1.id), 1, "no steady-state while on trial");
    // Committed: steady-state.
    h1.commit_b();
    h1.env.now += 30;
    h1.run(&s1, &mut c1);
    assert!(
        h1.env
            .logged("released reboot slot in group workers of FleetLock server"),
        "{}",
        h1.env.log_text()
    );
    assert!(server.holders().is_empty());
    assert_eq!(s1.agent.status().unwrap().reboot.holds_slot, Some(false));
    // Later cycles do not send steady-state again (nothing recorded as held).
    let before = server.seen().len();
    h1.env.now += 3600;
    h1.run(&s1, &mut c1);
    assert_eq!(server.seen().len(), before);

    // Host 2's retry gets the slot.
    h2.env.now += 120;
    let next = h2.run(&s2, &mut c2);
    assert_eq!(next.status, "rebooting", "{}", h2.env.log_text());
    assert_eq!(server.holders(), [h2.id.as_str()]);
}

#[test]
fn a_fleetlock_server_that_is_down_never_lets_the_host_reboot() {
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let update = format!("reboot = \"fleetlock\"\n[update.fleetlock]\nurl = \"{url}\"\n");
    let mut h = Node::new(23, &update);
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    let next = h.run(&s, &mut c);
    assert!(
        next.status
            .starts_with("cannot ask for a reboot slot: cannot reach FleetLock server"),
        "{next:?}"
    );
    assert_eq!(h.env.reboots, 0);
    assert!(h.staged(&s.agent));
    // Warned about the steady-state at start-up and the refused slot.
    assert!(
        h.env.logged("cannot give the reboot slot back"),
        "{}",
        h.env.log_text()
    );
    assert!(
        h.env
            .lines
            .iter()
            .any(|(p, l)| *p == 4 && l.starts_with("cannot ask for a reboot slot"))
    );
}

#[test]
fn steady_state_is_sent_once_the_boot_is_committed_and_manual_mode_keeps_no_slot() {
    let server = FleetLockServer::start(1);
    let mut h = Node::new(24, &update(&server));
    // cairn-updated starts before the health gate: this boot is on trial.
    h.w.set_attrs(
        gpt_slots::Attrs::new(1, 2, false),
        gpt_slots::Attrs::new(0, 0, false),
    );
    let (s, mut c) = h.start(Slot::A, "1.0.0");
    let next = h.run(&s, &mut c);
    assert_eq!(next.wake_at, h.env.now + cairn_updater::reboot::TRIAL_POLL);
    assert!(server.seen().is_empty(), "nothing while on trial");
    // Committed: steady-state once (no slot was recorded: it may have been lost).
    h.w.set_attrs(
        gpt_slots::Attrs::new(1, 3, true),
        gpt_slots::Attrs::new(0, 0, false),
    );
    h.env.now += 30;
    h.run(&s, &mut c);
    let seen = server.seen();
    assert_eq!(seen[0].0, "/fleetlock/v1/steady-state");
    assert_eq!(h.env.reboots, 1, "then the update, the slot, the reboot");
    assert_eq!(server.holders(), [h.id.as_str()]);
    // The reboot did not happen and the service now runs in manual mode
    // (it never reboots by itself): the slot goes back.
    let cfg = h.cfg.clone();
    c.settle(&s, &cfg, &mut h.env).unwrap();
    assert!(server.holders().is_empty(), "{}", h.env.log_text());
    assert!(h.env.logged("released reboot slot"));
}
