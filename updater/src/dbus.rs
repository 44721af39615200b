//! The D-Bus API of `cairn-updated` on the system bus, and its client side for
//! `cairnctl`.
//!
//! * Bus name and interface [`NAME`] (`dev.cairn.Updater1`), object [`PATH`]
//!   (`/dev/cairn/Updater1`). The `1` is the API version: an incompatible
//!   change gets `Updater2` next to it.
//! * Methods return JSON text, the same documents `cairnctl --json` prints in
//!   direct mode, so the CLI output does not depend on the transport:
//!   - `Status() → s` and `History() → s`: anyone;
//!   - `Check(b ignore_wave) → s`: root;
//!   - `Update(b ignore_wave) → s`: root. Starts a check and, if a release is
//!     chosen, writes it, in the background; returns `{"started": true}` at
//!     once (an update takes minutes, beyond any method-call timeout). What
//!     happens is told by the signals;
//!   - `UpdateVersion(s version) → s`: root. As `Update`, for exactly that
//!     version (`cairnctl update --version`: past the failed list and the wave);
//!   - `Rollback() → s`: root.
//!
//!   `Update`, `UpdateVersion`, `Rollback` and the service's periodic update
//!   exclude each other for their whole run (one claim, taken before the
//!   first GPT read and released after the last write): a rollback must not
//!   flip the slots an update is writing, nor an update overwrite the slot a
//!   rollback just chose. A call that finds the claim taken is refused.
//! * Signals:
//!   - `Progress(s phase, t bytes_done, t bytes_total, t chunk, t chunks)`:
//!     per chunk while writing (`phase` = "writing"), and on each step;
//!   - `StateChanged(s state, s detail)`: `checking`, `writing` (detail: the
//!     version), then one of the final states `up-to-date` (detail: the check
//!     JSON), `ready` (the apply JSON; a reboot starts it), `halted` (the
//!     chosen release's rollout is halted in the fleet group: not installed;
//!     detail: why) or `failed` (the error).
//!
//! Who may call what is set twice: by the bus policy
//! (`/usr/share/dbus-1/system.d/dev.cairn.Updater1.conf`: only root owns the
//! name and calls everything, others only `Status`, `History`, introspection)
//! and by the service itself, which asks the bus for the caller's uid before a
//! mutating method, in case a local policy file opens the bus up.
//!
//! The bus address comes from `DBUS_SYSTEM_BUS_ADDRESS` when set (tests run a
//! private `dbus-daemon`), else the system bus socket.

use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zbus::fdo;

use crate::Error;
use crate::agent::{Agent, ApplyOutcome, Event};
use release_manifest::Version;

pub const NAME: &str = "dev.cairn.Updater1";
pub const PATH: &str = "/dev/cairn/Updater1";
pub const INTERFACE: &str = "dev.cairn.Updater1";

/// Final states of an update started over D-Bus.
pub const FINAL_STATES: [&str; 4] = ["up-to-date", "ready", "halted", "failed"];

/// A `Progress` signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub chunk: u64,
    pub chunks: u64,
}

/// What the service shares between the bus, its update worker and its timer.
pub struct Service {
    pub agent: Agent,
    /// What holds the claim on the slots ("an update", "a rollback"), if anything.
    busy: Mutex<Option<&'static str>>,
    state: Mutex<(String, String)>,
    conn: OnceLock<zbus::blocking::Connection>,
}

/// The claim on the slots; released when the operation ends, however it ends.
pub struct Claim<'a>(&'a Mutex<Option<&'static str>>);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // Released even if a holder panicked (a poisoned lock still holds the flag).
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// What an update installs.
#[derive(Debug, Clone)]
pub enum Want {
    /// The plan's choice (`ignore_wave`: `cairnctl update --now`).
    Newest { ignore_wave: bool },
    /// Exactly this version (`cairnctl update --version`).
    Exactly(Version),
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

impl Service {
    pub fn new(agent: Agent) -> Arc<Service> {
        Arc::new(Service {
            agent,
            busy: Mutex::new(None),
            state: Mutex::new(("idle".into(), String::new())),
            conn: OnceLock::new(),
        })
    }

    /// Connects to the bus, serves [`PATH`] and takes [`NAME`].
    pub fn serve(self: &Arc<Self>) -> zbus::Result<()> {
        let conn = zbus::blocking::connection::Builder::system()?
            .serve_at(PATH, Api(self.clone()))?
            .name(NAME)?
            .build()?;
        let _ = self.conn.set(conn);
        Ok(())
    }

    /// The last state and its detail.
    pub fn state(&self) -> (String, String) {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn emit<B>(&self, member: &str, body: &B)
    where
        B: Serialize + zbus::zvariant::DynamicType,
    {
        if let Some(c) = self.conn.get()
            && let Err(e) = c.emit_signal(None::<&str>, PATH, INTERFACE, member, body)
        {
            eprintln!("<4>emitting {member} on D-Bus: {e}");
        }
    }

    pub fn set_state(&self, state: &str, detail: &str) {
        if let Ok(mut s) = self.state.lock() {
            *s = (state.into(), detail.into());
        }
        self.emit("StateChanged", &(state, detail));
    }

    pub fn progress(&self, p: &Progress) {
        self.emit(
            "Progress",
            &(
                p.phase.as_str(),
                p.bytes_done,
                p.bytes_total,
                p.chunk,
                p.chunks,
            ),
        );
    }

    /// Takes the claim on the slots for `what`; `Err` names what holds it.
    pub fn claim(&self, what: &'static str) -> Result<Claim<'_>, &'static str> {
        // A poisoned lock only means a holder panicked; the flag is still right.
        let mut b = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        match *b {
            Some(holder) => Err(holder),
            None => {
                *b = Some(what);
                Ok(Claim(&self.busy))
            }
        }
    }

    /// Check and, if something is chosen, apply, with signals. `on_event` also
    /// sees every event (the service logs and pings the watchdog with it).
    /// `None`: another update or a rollback is running.
    pub fn run_update(
        &self,
        ignore_wave: bool,
        on_event: &mut dyn FnMut(&Event),
    ) -> Option<Result<Option<ApplyOutcome>, Error>> {
        let claim = self.claim("an update").ok()?;
        Some(self.update_claimed(&claim, &Want::Newest { ignore_wave }, on_event))
    }

    /// The manual rollback, under the claim. `Err(holder)`: something else runs.
    pub fn run_rollback(&self) -> Result<Result<String, Error>, &'static str> {
        let _claim = self.claim("a rollback")?;
        Ok(self.agent.rollback())
    }

    /// [`Service::run_update`] for a caller that already holds the claim (the
    /// D-Bus method takes it before answering, so a refusal is its reply).
    pub fn update_claimed(
        &self,
        _claim: &Claim<'_>,
        want: &Want,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<Option<ApplyOutcome>, Error> {
        // Said at once and in one line, before any network access: nothing is
        // written while this boot is on trial.
        if let Err(e) = self.agent.refuse_if_on_trial() {
            self.set_state("failed", &e.to_string());
            return Err(e);
        }
        self.set_state("checking", "");
        let checked = match want {
            Want::Newest { ignore_wave } => self.agent.check_with(*ignore_wave),
            Want::Exactly(v) => self.agent.check_version(v),
        };
        let check = match checked {
            Ok(c) => c,
            Err(e) => {
                self.set_state("failed", &format!("checking for updates: {e}"));
                return Err(e);
            }
        };
        let Some(entry) = check.decision.chosen.clone() else {
            if let Some(f) = &self.agent.fleet {
                // Nothing to install: no halted release is waiting either.
                let _ = f.clear_halt();
            }
            self.set_state("up-to-date", &to_json(&check));
            return Ok(None);
        };
        // The fleet's word (etcd-lock): a release its group halted is not
        // installed, unless asked for by version.
        if let Want::Newest { .. } = want
            && let Err(e) = self.agent.halt_gate(&entry.version)
        {
            let state = if matches!(e, Error::Halted { .. }) {
                "halted"
            } else {
                "failed"
            };
            self.set_state(state, &e.to_string());
            return Err(e);
        }
        self.set_state("writing", entry.version.as_str());
        on_event(&Event::Phase(format!("installing {}", entry.version)));
        let mut phase = String::new();
        let r = self.agent.apply(&entry, &mut |e| {
            on_event(&e);
            let p = match e {
                Event::Phase(p) => {
                    phase = p;
                    Progress {
                        phase: phase.clone(),
                        bytes_done: 0,
                        bytes_total: 0,
                        chunk: 0,
                        chunks: 0,
                    }
                }
                Event::Chunk {
                    index,
                    total,
                    bytes_done,
                    bytes_total,
                } => Progress {
                    phase: "writing".into(),
                    bytes_done,
                    bytes_total,
                    chunk: index + 1,
                    chunks: total,
                },
            };
            self.progress(&p);
        });
        match &r {
            Ok(out) => {
                if let Some(f) = &self.agent.fleet {
                    // Installed: no halted release is waiting any more.
                    let _ = f.clear_halt();
                }
                self.set_state("ready", &to_json(out))
            }
            Err(e) if e.waits_for_boot() => self.set_state("failed", &e.to_string()),
            Err(e) => self.set_state("failed", &format!("applying {}: {e}", entry.version)),
        }
        r.map(Some)
    }
}

/// Runs `f` on a thread of its own and awaits its result: the connection has
/// one executor thread, and a blocking agent call on it would stall every
/// other call (Status, and the claim's refusal of a concurrent Update).
async fn off_executor<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> fdo::Result<T> {
    type Slot<T> = Arc<Mutex<(Option<T>, Option<Waker>)>>;
    let slot: Slot<T> = Arc::new(Mutex::new((None, None)));
    let theirs = slot.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let out = f();
            let mut s = theirs.lock().unwrap_or_else(|p| p.into_inner());
            s.0 = Some(out);
            if let Some(w) = s.1.take() {
                w.wake();
            }
        })
        .map_err(failed)?;
    Ok(std::future::poll_fn(|cx| {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.0.take() {
            Some(out) => Poll::Ready(out),
            None => {
                s.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    })
    .await)
}

/// The reply to a call that found the claim taken.
fn busy(holder: &str) -> fdo::Error {
    fdo::Error::Failed(format!(
        "{holder} is running: try again after it ends (cairnctl status)"
    ))
}

/// Starts an update in the background under the claim taken here, so that the
/// caller learns at once if something else holds it.
fn start_update(service: &Arc<Service>, want: Want) -> fdo::Result<String> {
    let claim = service.claim("an update").map_err(busy)?;
    // The claim moves to the worker: forget this guard, adopt it there.
    std::mem::forget(claim);
    let worker = service.clone();
    let spawned = std::thread::Builder::new()
        .name("update".into())
        .spawn(move || {
            let claim = Claim(&worker.busy);
            // Journal lines as the timer's updates write them.
            match worker.update_claimed(&claim, &want, &mut |e| {
                if let Event::Phase(p) = e {
                    eprintln!("<6>{p}");
                }
            }) {
                Ok(Some(out)) => eprintln!(
                    "<5>{} ready in slot {}: reboot needed",
                    out.version, out.slot
                ),
                Err(e) => eprintln!("<3>update requested over D-Bus: {e}"),
                Ok(None) => {}
            }
        });
    if let Err(e) = spawned {
        drop(Claim(&service.busy));
        return Err(failed(e));
    }
    Ok(serde_json::json!({ "started": true }).to_string())
}

/// The object on the bus.
struct Api(Arc<Service>);

fn failed(e: impl std::fmt::Display) -> fdo::Error {
    fdo::Error::Failed(e.to_string())
}

/// Refuses callers other than root (and the service's own user, so the tests
/// can run it unprivileged).
async fn require_root(conn: &zbus::Connection, hdr: &zbus::message::Header<'_>) -> fdo::Result<()> {
    let sender = hdr
        .sender()
        .ok_or_else(|| fdo::Error::AccessDenied("a call without a sender".into()))?;
    let uid = fdo::DBusProxy::new(conn)
        .await?
        .get_connection_unix_user(sender.clone().into())
        .await?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if uid != 0 && uid != own {
        return Err(fdo::Error::AccessDenied(format!(
            "uid {uid} may not change updates: run cairnctl as root"
        )));
    }
    Ok(())
}

#[zbus::interface(name = "dev.cairn.Updater1")]
impl Api {
    async fn status(&self) -> fdo::Result<String> {
        // Off the executor: with etcd-lock the status asks etcd.
        let service = self.0.clone();
        off_executor("status", move || service.agent.status())
            .await?
            .map(|s| to_json(&s))
            .map_err(failed)
    }

    async fn history(&self) -> fdo::Result<String> {
        self.0.agent.history().map(|h| to_json(&h)).map_err(failed)
    }

    async fn check(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        ignore_wave: bool,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        self.0
            .agent
            .check_with(ignore_wave)
            .map(|c| to_json(&c))
            .map_err(failed)
    }

    async fn update(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        ignore_wave: bool,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        start_update(&self.0, Want::Newest { ignore_wave })
    }

    async fn update_version(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        version: String,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        let v = Version::parse(&version)
            .map_err(|e| fdo::Error::InvalidArgs(format!("version {version:?}: {e}")))?;
        start_update(&self.0, Want::Exactly(v))
    }

    async fn rollback(
        &self,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        let service = self.0.clone();
        off_executor("rollback", move || service.run_rollback())
            .await?
            .map_err(busy)?
            .map(|m| serde_json::json!({ "result": m }).to_string())
            .map_err(failed)
    }

    #[zbus(signal)]
    async fn progress(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        phase: &str,
        bytes_done: u64,
        bytes_total: u64,
        chunk: u64,
        chunks: u64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn state_changed(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        state: &str,
        detail: &str,
    ) -> zbus::Result<()>;
}

/// `cairnctl`'s side.
pub struct Client {
    conn: zbus::blocking::Connection,
}

/// What an update over D-Bus told its watcher.
pub enum Update {
    Progress(Progress),
    State(String, String),
}

impl Client {
    /// Connects to the bus; `Ok(None)` when the service is not on it.
    pub fn connect() -> zbus::Result<Option<Client>> {
        let conn = zbus::blocking::connection::Builder::system()?
            // Check walks a repository with retries: allow it minutes.
            .method_timeout(Duration::from_secs(600))
            .build()?;
        let dbus = zbus::blocking::fdo::DBusProxy::new(&conn)?;
        let name = zbus::names::BusName::try_from(NAME)?;
        if !dbus.name_has_owner(name)? {
            return Ok(None);
        }
        Ok(Some(Client { conn }))
    }

    fn call<B>(&self, method: &str, body: &B) -> zbus::Result<String>
    where
        B: Serialize + zbus::zvariant::DynamicType,
    {
        let reply = self
            .conn
            .call_method(Some(NAME), PATH, Some(INTERFACE), method, body)?;
        reply.body().deserialize::<String>()
    }

    pub fn status(&self) -> zbus::Result<String> {
        self.call("Status", &())
    }

    pub fn history(&self) -> zbus::Result<String> {
        self.call("History", &())
    }

    pub fn check(&self, ignore_wave: bool) -> zbus::Result<String> {
        self.call("Check", &(ignore_wave,))
    }

    pub fn rollback(&self) -> zbus::Result<String> {
        self.call("Rollback", &())
    }

    /// Starts an update and feeds its signals to `watch` until a final state,
    /// which it returns as (state, detail).
    pub fn update(
        &self,
        ignore_wave: bool,
        watch: &mut dyn FnMut(&Update),
    ) -> zbus::Result<(String, String)> {
        self.start_and_watch("Update", &(ignore_wave,), watch)
    }

    /// [`Client::update`] for exactly `version` (`UpdateVersion`).
    pub fn update_version(
        &self,
        version: &str,
        watch: &mut dyn FnMut(&Update),
    ) -> zbus::Result<(String, String)> {
        self.start_and_watch("UpdateVersion", &(version,), watch)
    }

    fn start_and_watch<B>(
        &self,
        method: &str,
        body: &B,
        watch: &mut dyn FnMut(&Update),
    ) -> zbus::Result<(String, String)>
    where
        B: Serialize + zbus::zvariant::DynamicType,
    {
        // Subscribe before starting, so no signal is missed.
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(NAME)?
            .path(PATH)?
            .interface(INTERFACE)?
            .build();
        let signals = zbus::blocking::MessageIterator::for_match_rule(rule, &self.conn, Some(256))?;
        self.call(method, body)?;
        for msg in signals {
            let msg = msg?;
            let hdr = msg.header();
            let Some(member) = hdr.member() else { continue };
            match member.as_str() {
                "Progress" => {
                    let (phase, bytes_done, bytes_total, chunk, chunks): (
                        String,
                        u64,
                        u64,
                        u64,
                        u64,
                    ) = msg.body().deserialize()?;
                    watch(&Update::Progress(Progress {
                        phase,
                        bytes_done,
                        bytes_total,
                        chunk,
                        chunks,
                    }));
                }
                "StateChanged" => {
                    let (state, detail): (String, String) = msg.body().deserialize()?;
                    watch(&Update::State(state.clone(), detail.clone()));
                    if FINAL_STATES.contains(&state.as_str()) {
                        return Ok((state, detail));
                    }
                }
                _ => {}
            }
        }
        Err(zbus::Error::Failure(
            "the bus connection closed before the update ended".into(),
        ))
    }
}
