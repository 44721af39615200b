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

/// The halt check's counts, and the same from every record.
fn both(r: &Rollout, version: &str, t: HaltThreshold) -> (u64, u64, u64, bool) {
    let check = r.halt_check(version, t).unwrap();
    let full = r.report(version, t).unwrap();
    let counts =
        |x: &fleet_lock::ReleaseReport| (x.installed, x.committed, x.rolled_back, x.halted);
    assert_eq!(
        counts(&check),
        counts(&full),
        "halt check and report of {version}"
    );
    assert!(check.records.is_empty(), "a halt check reads no record");
    counts(&check)
}

#[test]
fn the_halt_check_counts_each_host_once_under_its_latest_outcome() {
    let Some(etcd) = Etcd::start() else { return };
    let c = etcd.client();
    let r = Rollout::new(etcd.client(), "web").unwrap();
    let t = HaltThreshold::default();
    assert_eq!(both(&r, "2.0.0", t), (0, 0, 0, false));
    for i in 0..40 {
        r.record("2.0.0", &format!("h{i:02}"), Outcome::Installed, "")
            .unwrap();
    }
    // Recording the same outcome again changes no count.
    for i in 0..10 {
        r.record("2.0.0", &format!("h{i:02}"), Outcome::Installed, "")
            .unwrap();
    }
    assert_eq!(both(&r, "2.0.0", t), (40, 0, 0, false));
    for i in 0..30 {
        r.record("2.0.0", &format!("h{i:02}"), Outcome::Committed, "")
            .unwrap();
    }
    r.record("2.0.0", "h00", Outcome::Committed, "again")
        .unwrap();
    assert_eq!(both(&r, "2.0.0", t), (40, 30, 0, false));

    // Installed → rolled back: out of `installed`, into `rolled_back`.
    r.record("2.0.0", "h35", Outcome::RolledBack, "kernel panic")
        .unwrap();
    r.record("2.0.0", "h35", Outcome::RolledBack, "kernel panic")
        .unwrap();
    assert_eq!(both(&r, "2.0.0", t), (40, 30, 1, false), "1 of 40 is 2.5 %");
    let index = |o: &str, id: &str| {
        c.get(&format!("cairn/fleet/web/outcomes/2.0.0/{o}/{id}"))
            .unwrap()
            .is_some()
    };
    assert!(index("rolled_back", "h35") && !index("installed", "h35"));
    assert!(!index("committed", "h35"));
    // The index entry is the record.
    let kv = c
        .get("cairn/fleet/web/outcomes/2.0.0/rolled_back/h35")
        .unwrap()
        .unwrap();
    let rec: OutcomeRecord = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(
        (rec.outcome, rec.reason.as_str()),
        (Outcome::RolledBack, "kernel panic")
    );

    // Committed → rolled back (a later boot fell back): counted as a rollback only.
    r.record(
        "2.0.0",
        "h01",
        Outcome::RolledBack,
        "health gate: app web down",
    )
    .unwrap();
    assert!(index("rolled_back", "h01") && !index("committed", "h01"));
    assert_eq!(both(&r, "2.0.0", t), (40, 29, 2, true), "2 hosts halt");
    let check = r.halt_check("2.0.0", t).unwrap();
    assert_eq!(
        check.rollbacks,
        vec![
            ("h01".to_string(), "health gate: app web down".to_string()),
            ("h35".to_string(), "kernel panic".to_string())
        ],
        "the reasons, by host id"
    );
    // A threshold the counts do not reach.
    let lenient = HaltThreshold {
        hosts: 3,
        percent: 10,
    };
    assert_eq!(both(&r, "2.0.0", lenient), (40, 29, 2, false));
    assert!(r.halt_check("2.0.0", lenient).unwrap().rollbacks.is_empty());

    // Releases are separate in the index too: 2.0's, 2.0.0's, 2.0.0-rc1's.
    r.record("2.0", "h00", Outcome::RolledBack, "x").unwrap();
    r.record("2.0.0-rc1", "h00", Outcome::Committed, "")
        .unwrap();
    assert_eq!(both(&r, "2.0", t), (1, 0, 1, true));
    assert_eq!(both(&r, "2.0.0-rc1", t), (1, 1, 0, false));
    assert_eq!(both(&r, "2.0.0", t), (40, 29, 2, true));

    // Resuming forgets the index with the records.
    assert_eq!(r.clear("2.0.0").unwrap(), 40);
    assert!(
        c.get_prefix("cairn/fleet/web/outcomes/2.0.0/")
            .unwrap()
            .kvs
            .is_empty()
    );
    assert_eq!(both(&r, "2.0.0", t), (0, 0, 0, false));
    assert_eq!(both(&r, "2.0", t), (1, 0, 1, true));
    assert!(r.halt_check("2.0/x", t).is_err());
}

#[test]
fn a_halt_check_reads_a_bounded_number_of_reasons() {
    let Some(etcd) = Etcd::start() else { return };
    let r = Rollout::new(etcd.client(), "web").unwrap();
    let t = HaltThreshold::default();
    let n = fleet_lock::rollout::MAX_HALT_ROLLBACKS as u64 + 9;
    for i in 0..n {
        r.record(
            "3.0",
            &format!("h{i:02}"),
            Outcome::RolledBack,
            &format!("reason {i}"),
        )
        .unwrap();
    }
    let check = r.halt_check("3.0", t).unwrap();
    assert_eq!(
        (check.installed, check.rolled_back, check.halted),
        (n, n, true)
    );
    assert_eq!(
        check.rollbacks.len() as u32,
        fleet_lock::rollout::MAX_HALT_ROLLBACKS
    );
    assert_eq!(
        check.rollbacks[0],
        ("h00".to_string(), "reason 0".to_string())
    );
    assert_eq!(r.report("3.0", t).unwrap().rollbacks.len() as u64, n);
}

#[test]
fn counters_that_do_not_add_up_are_not_trusted() {
    let Some(etcd) = Etcd::start() else { return };
    let c = etcd.client();
    let r = Rollout::new(etcd.client(), "web").unwrap();
    let t = HaltThreshold::default();
    for i in 0..30 {
        r.record("4.0", &format!("h{i:02}"), Outcome::Installed, "")
            .unwrap();
        r.record("4.0", &format!("h{i:02}"), Outcome::Committed, "")
            .unwrap();
    }
    r.record("4.0", "h00", Outcome::RolledBack, "a").unwrap();
    r.record("4.0", "h01", Outcome::RolledBack, "b").unwrap();
    // The counters' versions, as documented.
    let version = |k: &str| {
        c.get(&format!("cairn/fleet/web/tally/4.0/{k}"))
            .unwrap()
            .map_or(0, |kv| kv.version)
    };
    let counters = [
        "installed/entered",
        "installed/left",
        "committed/entered",
        "committed/left",
        "rolled_back/entered",
        "rolled_back/left",
    ]
    .map(version);
    assert_eq!(counters, [30, 30, 30, 2, 2, 0]);
    assert_eq!(both(&r, "4.0", t), (30, 28, 2, true));
    // Deleted by hand: more hosts left `installed` than entered it. The
    // halt check reads every record rather than trust such counts.
    c.delete("cairn/fleet/web/tally/4.0/installed/entered")
        .unwrap();
    assert_eq!(both(&r, "4.0", t), (30, 28, 2, true));
    let check = r.halt_check("4.0", t).unwrap();
    assert_eq!(check.rollbacks.len(), 2);
    // A key under the counters that is not one names itself.
    c.put("cairn/fleet/web/tally/4.0/x", b"", None).unwrap();
    let e = r.halt_check("4.0", t).unwrap_err().to_string();
    assert!(e.contains("cairn/fleet/web/tally/4.0/x"), "{e}");
    // Resuming resets the counters with the records.
    assert_eq!(r.clear("4.0").unwrap(), 30);
    assert!(
        c.get_prefix("cairn/fleet/web/tally/4.0/")
            .unwrap()
            .kvs
            .is_empty()
    );
    assert_eq!(both(&r, "4.0", t), (0, 0, 0, false));
}

#[test]
fn hosts_recording_at_once_are_each_counted_once() {
    let Some(etcd) = Etcd::start() else { return };
    let threads: usize = 8;
    let per: usize = 25;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let r = Rollout::new(etcd.client(), "web").unwrap();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..per {
                    let id = format!("t{k}h{i:02}");
                    r.record("5.0", &id, Outcome::Installed, "").unwrap();
                    let last = if i % 10 == 0 {
                        Outcome::RolledBack
                    } else {
                        Outcome::Committed
                    };
                    r.record("5.0", &id, last, "").unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = Rollout::new(etcd.client(), "web").unwrap();
    let rolled = (threads * per.div_ceil(10)) as u64;
    let all = (threads * per) as u64;
    assert_eq!(
        both(&r, "5.0", HaltThreshold::default()),
        (all, all - rolled, rolled, true)
    );
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

    // Counts, and a limited read that still says how many there are.
    assert_eq!(c.count_prefix("p/").unwrap(), 2);
    assert_eq!(c.count_prefix("none/").unwrap(), 0);
    let r = c
        .txn(
            &[],
            &[
                TxnOp::Count {
                    key: "p/".into(),
                    prefix: true,
                },
                TxnOp::Count {
                    key: "q".into(),
                    prefix: false,
                },
                TxnOp::Count {
                    key: "none/".into(),
                    prefix: true,
                },
                TxnOp::First {
                    prefix: "p/".into(),
                    limit: 1,
                },
            ],
            &[],
        )
        .unwrap();
    let counts: Vec<i64> = r
        .responses
        .iter()
        .map(|o| match o {
            fleet_lock::etcd::TxnOpResult::Range(r) => r.count * 10 + r.kvs.len() as i64,
            other => panic!("{other:?}"),
        })
        .collect();
    // (count, keys read): a count reads none, a limited read what it may.
    assert_eq!(counts, [20, 10, 0, 21]);
    // Nested transactions: their compares see the keys as before the request.
    let bump = |key: &str| TxnOp::Put {
        key: key.into(),
        value: Vec::new(),
        lease: None,
    };
    let r = c
        .txn(
            &[],
            &[
                TxnOp::Delete {
                    key: "q".into(),
                    prefix: false,
                },
                TxnOp::Txn {
                    compare: vec![Compare::new("q", CmpOp::Greater, Target::Version(0))],
                    success: vec![bump("was-there")],
                    failure: vec![bump("was-not")],
                },
            ],
            &[],
        )
        .unwrap();
    assert_eq!(
        r.responses[1],
        fleet_lock::etcd::TxnOpResult::Txn { succeeded: true }
    );
    assert!(c.get("was-there").unwrap().is_some() && c.get("was-not").unwrap().is_none());
    assert!(c.get("q").unwrap().is_none());
    c.put("q", b"x", None).unwrap();

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
