//! The semaphore, the rollout outcomes and the client against a real etcd
//! (one per test, on loopback: `host_tools::etcd::EtcdServer`).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fleet_lock::etcd::{CmpOp, Compare, Target, TxnOp};
use fleet_lock::{
    Acquire, EtcdClient, EtcdConfig, EtcdError, HaltThreshold, KeepAliveState, Outcome,
    OutcomeRecord, Rollout, Semaphore, SemaphoreOptions, TlsFiles,
};
use host_tools::etcd::{EtcdServer as Etcd, ServerTls, free_port};

/// This crate's clients of a test etcd.
trait Clients {
    fn config(&self) -> EtcdConfig;
    fn client(&self) -> EtcdClient;
    fn client_with(&self, tls: &TlsFiles) -> EtcdClient;
}

impl Clients for Etcd {
    fn config(&self) -> EtcdConfig {
        EtcdConfig {
            timeout: Duration::from_secs(3),
            ..EtcdConfig::new([self.url.clone()])
        }
    }

    fn client(&self) -> EtcdClient {
        EtcdClient::new(&self.config()).expect("an etcd client")
    }

    fn client_with(&self, tls: &TlsFiles) -> EtcdClient {
        EtcdClient::new(&EtcdConfig {
            tls: tls.clone(),
            ..self.config()
        })
        .expect("an etcd client")
    }
}

/// Polls `f` every 100 ms until it returns true or `limit` passes; returns
/// the time it took, or `None`.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn semaphore(etcd: &Etcd, group: &str, max: u32, ttl: Duration) -> Semaphore {
    Semaphore::new(
        etcd.client(),
        group,
        SemaphoreOptions {
            max_rebooting: max,
            lease_ttl: ttl,
        },
    )
    .unwrap()
}

fn full(max: u32, holders: &[&str]) -> Acquire {
    Acquire::Full {
        max,
        holders: holders.iter().map(|s| s.to_string()).collect(),
    }
}

fn holder_ids(s: &Semaphore) -> Vec<String> {
    s.status()
        .unwrap()
        .holders
        .into_iter()
        .map(|h| h.id)
        .collect()
}

#[test]
fn one_slot_is_taken_in_turn_and_is_reentrant() {
    let Some(etcd) = Etcd::start() else { return };
    let s = semaphore(&etcd, "default", 1, Duration::from_secs(60));
    assert_eq!(s.acquire("a").unwrap(), Acquire::Taken);
    assert_eq!(s.acquire("b").unwrap(), full(1, &["a"]));
    // Re-entrant: the holder asking again gets its slot again.
    assert_eq!(s.acquire("a").unwrap(), Acquire::AlreadyHeld);
    assert_eq!(s.acquire("b").unwrap(), full(1, &["a"]));

    let st = s.status().unwrap();
    assert_eq!(st.max, Some(1), "the first taker writes max");
    assert_eq!(st.holders.len(), 1);
    let h = &st.holders[0];
    assert_eq!(h.id, "a");
    assert!(h.lease != 0 && h.since > 0);
    let ttl = h.ttl.unwrap();
    assert!(
        ttl > Duration::from_secs(50) && ttl <= Duration::from_secs(60),
        "{ttl:?}"
    );

    // Release frees it (and only the holder's release counts).
    assert!(!s.release("b").unwrap(), "b held nothing");
    assert!(s.release("a").unwrap());
    assert!(!s.release("a").unwrap(), "releasing twice is fine");
    assert_eq!(s.acquire("b").unwrap(), Acquire::Taken);
    assert_eq!(s.acquire("a").unwrap(), full(1, &["b"]));
    // The released holder's lease went with it.
    let c = etcd.client();
    assert_eq!(c.lease_time_to_live(h.lease).unwrap(), None);

    // Groups are separate.
    let other = semaphore(&etcd, "other", 1, Duration::from_secs(60));
    assert_eq!(other.acquire("a").unwrap(), Acquire::Taken);
    assert_eq!(holder_ids(&s), ["b"]);
}

#[test]
fn two_slots_across_several_hosts() {
    let Some(etcd) = Etcd::start() else { return };
    let s = semaphore(&etcd, "web", 2, Duration::from_secs(60));
    assert_eq!(s.acquire("a").unwrap(), Acquire::Taken);
    assert_eq!(s.acquire("b").unwrap(), Acquire::Taken);
    assert_eq!(s.acquire("c").unwrap(), full(2, &["a", "b"]));
    assert_eq!(s.acquire("d").unwrap(), full(2, &["a", "b"]));
    assert_eq!(s.acquire("b").unwrap(), Acquire::AlreadyHeld);
    assert!(s.release("a").unwrap());
    assert_eq!(s.acquire("d").unwrap(), Acquire::Taken);
    assert_eq!(s.acquire("c").unwrap(), full(2, &["b", "d"]));
    assert_eq!(holder_ids(&s), ["b", "d"]);
    // A host configured with more slots follows the group's max key.
    let greedy = semaphore(&etcd, "web", 5, Duration::from_secs(60));
    assert_eq!(greedy.acquire("c").unwrap(), full(2, &["b", "d"]));
}

#[test]
fn concurrent_hosts_never_exceed_max() {
    let Some(etcd) = Etcd::start() else { return };
    let s = semaphore(&etcd, "race", 2, Duration::from_secs(60));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                s.acquire(&format!("host-{i}")).unwrap()
            })
        })
        .collect();
    let results: Vec<Acquire> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let taken = results.iter().filter(|r| **r == Acquire::Taken).count();
    assert_eq!(taken, 2, "{results:?}");
    assert_eq!(s.status().unwrap().holders.len(), 2);
}

#[test]
fn a_holder_that_stops_renewing_frees_its_slot() {
    let Some(etcd) = Etcd::start() else { return };
    let ttl = Duration::from_secs(2);
    let s = semaphore(&etcd, "default", 1, ttl);
    assert_eq!(s.acquire("a").unwrap(), Acquire::Taken);

    // Renewed: the slot outlives its TTL.
    let keep = s.spawn_keep_alive("a", Duration::from_millis(400)).unwrap();
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(keep.state(), KeepAliveState::Running);
    assert_eq!(s.acquire("b").unwrap(), full(1, &["a"]));

    // The agent restarts (the reboot): a new client finds the slot and its
    // lease from etcd alone and renews it.
    let after_boot = semaphore(&etcd, "default", 1, ttl);
    let left = after_boot.keep_alive("a").unwrap().unwrap();
    assert!(left >= Duration::from_secs(1), "{left:?}");

    // The host dies: nobody renews, the slot frees itself after the TTL.
    drop(keep);
    let stopped = Instant::now();
    let freed = within(Duration::from_secs(6), || {
        s.acquire("b").unwrap() == Acquire::Taken
    })
    .expect("the dead holder's slot is freed");
    let waited = stopped.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "freed after {waited:?} ({freed:?})"
    );
    assert_eq!(holder_ids(&s), ["b"]);
    assert_eq!(
        after_boot.keep_alive("a").unwrap(),
        None,
        "a holds nothing now"
    );
}

#[test]
fn a_keep_alive_thread_stops_when_its_slot_is_unlocked() {
    let Some(etcd) = Etcd::start() else { return };
    let s = semaphore(&etcd, "default", 1, Duration::from_secs(30));
    assert_eq!(s.acquire("a").unwrap(), Acquire::Taken);
    let keep = s.spawn_keep_alive("a", Duration::from_millis(100)).unwrap();
    assert!(s.unlock("a").unwrap());
    within(Duration::from_secs(3), || {
        keep.state() == KeepAliveState::SlotGone
    })
    .expect("the thread sees the slot gone");
}

#[test]
fn set_max_and_unlock() {
    let Some(etcd) = Etcd::start() else { return };
    let s = semaphore(&etcd, "db", 1, Duration::from_secs(60));
    assert_eq!(s.status().unwrap().max, None);
    // 0 pauses reboots.
    assert_eq!(s.set_max(0).unwrap(), None);
    assert_eq!(s.acquire("a").unwrap(), full(0, &[]));
    assert_eq!(s.set_max(2).unwrap(), Some(0));
    assert_eq!(s.acquire("a").unwrap(), Acquire::Taken);
    assert_eq!(s.acquire("b").unwrap(), Acquire::Taken);
    // Lowering max frees nobody; newcomers wait, holders stay holders.
    assert_eq!(s.set_max(1).unwrap(), Some(2));
    assert_eq!(s.acquire("c").unwrap(), full(1, &["a", "b"]));
    assert_eq!(s.acquire("a").unwrap(), Acquire::AlreadyHeld);
    assert!(s.release("a").unwrap());
    assert_eq!(s.acquire("c").unwrap(), full(1, &["b"]));
    // The operator frees a host known to be dead.
    assert!(s.unlock("b").unwrap());
    assert!(!s.unlock("b").unwrap());
    assert_eq!(s.acquire("c").unwrap(), Acquire::Taken);
    assert_eq!(s.status().unwrap().max, Some(1));

    // A max key someone wrote by hand that is not a number.
    etcd.client()
        .put("cairn/fleet/db/max", b"lots", None)
        .unwrap();
    let e = s.acquire("d").unwrap_err().to_string();
    assert!(
        e.contains("cairn/fleet/db/max") && e.contains("set_max"),
        "{e}"
    );
    // Names are checked before they reach a key.
    assert!(matches!(s.acquire("../x"), Err(EtcdError::InvalidName(_))));
    assert!(Semaphore::new(etcd.client(), "a/b", SemaphoreOptions::default()).is_err());
}

#[test]
fn outcomes_and_the_halt() {
    let Some(etcd) = Etcd::start() else { return };
    let r = Rollout::new(etcd.client(), "web").unwrap();
    let t = HaltThreshold::default();
    for i in 0..30 {
        r.record("1.4.0", &format!("h{i:02}"), Outcome::Installed, "")
            .unwrap();
    }
    for i in 0..20 {
        r.record("1.4.0", &format!("h{i:02}"), Outcome::Committed, "")
            .unwrap();
    }
    let rep = r.report("1.4.0", t).unwrap();
    assert_eq!((rep.installed, rep.committed, rep.rolled_back), (30, 20, 0));
    assert!(!rep.halted);

    // One rollback of 30 hosts: 3.3 %, under 2 hosts and 5 %.
    r.record(
        "1.4.0",
        "h25",
        Outcome::RolledBack,
        "health gate: app web failed",
    )
    .unwrap();
    let rep = r.report("1.4.0", t).unwrap();
    assert_eq!((rep.installed, rep.rolled_back), (30, 1));
    assert!(!rep.halted);
    // A second one: 2 hosts.
    r.record("1.4.0", "h26", Outcome::RolledBack, "no network after boot")
        .unwrap();
    let rep = r.report("1.4.0", t).unwrap();
    assert!(rep.halted);
    assert_eq!(
        rep.rollbacks,
        vec![
            ("h25".to_string(), "health gate: app web failed".to_string()),
            ("h26".to_string(), "no network after boot".to_string())
        ]
    );
    assert!(
        !r.report(
            "1.4.0",
            HaltThreshold {
                hosts: 3,
                percent: 10
            }
        )
        .unwrap()
        .halted
    );

    // Releases are separate: 1.4.0's rollbacks are not 1.4.1's, nor 1.4's.
    let rep = r.report("1.4.1", t).unwrap();
    assert_eq!((rep.installed, rep.halted), (0, false));
    r.record("1.4", "h00", Outcome::Installed, "").unwrap();
    assert_eq!(r.report("1.4", t).unwrap().installed, 1);
    assert_eq!(r.report("1.4.0", t).unwrap().installed, 30);

    // The stored value, as documented.
    let kv = etcd
        .client()
        .get("cairn/fleet/web/releases/1.4.0/h26")
        .unwrap()
        .unwrap();
    let rec: OutcomeRecord = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(rec.outcome, Outcome::RolledBack);
    assert!(rec.time > 1_700_000_000);
    let text = String::from_utf8(kv.value).unwrap();
    assert!(text.contains(r#""outcome":"rolled_back""#), "{text}");

    // An operator resumes the release.
    assert_eq!(r.clear("1.4.0").unwrap(), 30);
    assert!(!r.report("1.4.0", t).unwrap().halted);
    assert_eq!(r.report("1.4", t).unwrap().installed, 1);

    // A record this crate did not write is an error that names its key.
    etcd.client()
        .put("cairn/fleet/web/releases/2.0/h1", b"{oops", None)
        .unwrap();
    let e = r.report("2.0", t).unwrap_err().to_string();
    assert!(e.contains("cairn/fleet/web/releases/2.0/h1"), "{e}");
    assert!(r.record("2.0/x", "h1", Outcome::Installed, "").is_err());
    assert!(r.record("2.0", "h/1", Outcome::Installed, "").is_err());
    // Long reasons are cut.
    r.record("3.0", "h1", Outcome::RolledBack, &"é".repeat(2000))
        .unwrap();
    let rep = r.report("3.0", t).unwrap();
    assert!(rep.rollbacks[0].1.len() <= fleet_lock::rollout::MAX_REASON);
}

#[test]
fn client_calls_and_etcd_errors() {
    let Some(etcd) = Etcd::start() else { return };
    let c = etcd.client();
    assert_eq!(c.put("k", b"1", None).unwrap(), None);
    assert_eq!(c.put("k", b"2", None).unwrap().unwrap().value, b"1");
    let kv = c.get("k").unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"2"[..], 2));
    assert_eq!(c.get("missing").unwrap(), None);
    c.put("p/a", b"", None).unwrap();
    c.put("p/b", b"x", None).unwrap();
    c.put("q", b"x", None).unwrap();
    let keys: Vec<String> = c
        .get_prefix("p/")
        .unwrap()
        .kvs
        .iter()
        .map(|k| k.key_str())
        .collect();
    assert_eq!(keys, ["p/a", "p/b"]);

    // A transaction guarded by a mod revision.
    let put = TxnOp::Put {
        key: "k".into(),
        value: b"3".to_vec(),
        lease: None,
    };
    let stale = Compare::new("k", CmpOp::Equal, Target::Mod(kv.mod_revision - 1));
    assert!(
        !c.txn(&[stale], std::slice::from_ref(&put), &[])
            .unwrap()
            .succeeded
    );
    let fresh = Compare::new("k", CmpOp::Equal, Target::Mod(kv.mod_revision));
    assert!(c.txn(&[fresh], &[put], &[]).unwrap().succeeded);
    assert_eq!(c.get("k").unwrap().unwrap().value, b"3");
    let absent = Compare::new("nope", CmpOp::Equal, Target::Version(0));
    assert!(c.txn(&[absent], &[], &[]).unwrap().succeeded);

    // Leases.
    let lease = c.lease_grant(Duration::from_secs(30)).unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(30));
    c.put("leased", b"", Some(lease.id)).unwrap();
    assert!(c.lease_keep_alive(lease.id).unwrap().is_some());
    assert!(c.lease_time_to_live(lease.id).unwrap().is_some());
    assert!(c.lease_revoke(lease.id).unwrap());
    assert_eq!(c.get("leased").unwrap(), None, "revoking deletes the keys");
    assert!(!c.lease_revoke(lease.id).unwrap());
    assert_eq!(c.lease_keep_alive(lease.id).unwrap(), None);
    assert_eq!(c.lease_time_to_live(lease.id).unwrap(), None);
    // etcd refuses a put on a lease it does not know: the message is etcd's.
    let e = c.put("x", b"", Some(lease.id)).unwrap_err();
    assert!(matches!(e, EtcdError::Refused { code: 5, .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&etcd.url) && text.contains("lease not found"),
        "{text}"
    );

    assert_eq!(c.delete_prefix("p/").unwrap(), 2);
    assert_eq!(c.delete("q").unwrap(), 1);
}

#[test]
fn endpoints_are_tried_in_turn_with_timeouts() {
    let Some(etcd) = Etcd::start() else { return };
    let dead = format!("http://127.0.0.1:{}", free_port());
    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let config = |eps: Vec<String>| EtcdConfig {
        timeout: Duration::from_millis(800),
        ..EtcdConfig::new(eps)
    };

    let c = EtcdClient::new(&config(vec![
        dead.clone(),
        silent_url.clone(),
        etcd.url.clone(),
    ]))
    .unwrap();
    let start = Instant::now();
    c.put("k", b"v", None).unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    // The endpoint that answered is asked first from now on: no new wait.
    let start = Instant::now();
    assert!(c.get("k").unwrap().is_some());
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );

    let c = EtcdClient::new(&config(vec![dead.clone(), silent_url.clone()])).unwrap();
    let start = Instant::now();
    let e = c.get("k").unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let text = e.to_string();
    eprintln!("{text}");
    assert!(matches!(e, EtcdError::Unreachable { .. }));
    assert!(
        text.contains(&dead) && text.contains(&silent_url) && text.contains("no answer within"),
        "{text}"
    );
    drop(silent);
}

#[cfg(feature = "tls")]
fn pki(dir: &std::path::Path) -> (ServerTls, fleet_lock::TlsFiles, fleet_lock::TlsFiles) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fleet test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>, eku: Vec<ExtendedKeyUsagePurpose>, name: &str| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = eku;
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    // etcd 3.4's JSON gateway dials etcd's own gRPC port with the server's
    // certificate as its client certificate: it needs clientAuth as well.
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into()],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        "server",
    );
    let (client_cert, client_key) =
        leaf(vec![], vec![ExtendedKeyUsagePurpose::ClientAuth], "host-1");
    let server = ServerTls {
        ca: ca_file.clone(),
        cert: server_cert,
        key: server_key,
    };
    let client = TlsFiles {
        ca_file: Some(ca_file.clone()),
        cert_file: Some(client_cert),
        key_file: Some(client_key),
    };
    let anonymous = TlsFiles {
        ca_file: Some(ca_file),
        ..Default::default()
    };
    (server, client, anonymous)
}

#[cfg(feature = "tls")]
#[test]
fn tls_with_a_client_certificate() {
    if !host_tools::etcd::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (server, client, anonymous) = pki(dir.path());
    let Some(etcd) = Etcd::start_tls(&server) else {
        return;
    };
    assert!(etcd.url.starts_with("https://"));
    // The harness saw /health; the JSON gateway on https answers soon after.
    within(Duration::from_secs(10), || {
        etcd.client_with(&client).get("ready").is_ok()
    })
    .expect("etcd over https answers with the client certificate");

    let s = Semaphore::new(
        etcd.client_with(&client),
        "default",
        SemaphoreOptions::default(),
    )
    .unwrap();
    assert_eq!(s.acquire("a").unwrap(), Acquire::Taken);

    // Without a client certificate etcd refuses the handshake.
    let e = etcd.client_with(&anonymous).get("k").unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e:?}");
    // Without the CA, the server's certificate is not trusted.
    let no_ca = TlsFiles {
        ca_file: None,
        ..client.clone()
    };
    let e = etcd.client_with(&no_ca).get("k").unwrap_err().to_string();
    eprintln!("{e}");
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("issuer"),
        "{e}"
    );
    // TLS files with a plain-http endpoint are a configuration error.
    let plain = EtcdConfig {
        tls: client,
        ..EtcdConfig::new(["http://127.0.0.1:2379"])
    };
    assert!(matches!(EtcdClient::new(&plain), Err(EtcdError::Config(_))));
}
