//! Hosts of a fleet for the fleet tests: each a fixture [`World`] (its own
//! repository offering 1.1.0, its own disk booted from slot a at 1.0.0) with
//! a machine id, a reboot strategy, and cycles of the service driven by a
//! test [`Env`] (the clock, the windows, the reboots and the log lines).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use cairn_updater::config::{self, UpdateConfig};
use cairn_updater::daemon::{Cycle, Env, Next};
use cairn_updater::dbus::Service;
use cairn_updater::fixture::World;
use cairn_updater::fleet::Coordinator;
use cairn_updater::reboot::WindowState;
use cairn_updater::{Agent, Error};
use disk_layout::Slot;
use fleet_lock::BackoffPolicy;
use gpt_slots::Attrs;

pub const USR: u64 = 600_000;
pub const CHUNK: u64 = 64 << 10;
/// The tests' wall clock (the agents' fixed clock is `fixture::NOW`).
pub const T0: i64 = 1_800_000_000;

/// What a test host's cycles did.
pub struct TestEnv {
    pub now: i64,
    pub window: WindowState,
    pub reboots: usize,
    pub lines: Vec<(u8, String)>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        TestEnv {
            now: T0,
            window: WindowState::ALWAYS,
            reboots: 0,
            lines: Vec::new(),
        }
    }

    /// Whether a line containing `text` was logged.
    pub fn logged(&self, text: &str) -> bool {
        self.lines.iter().any(|(_, l)| l.contains(text))
    }

    pub fn log_text(&self) -> String {
        self.lines
            .iter()
            .map(|(p, l)| format!("<{p}>{l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Env for TestEnv {
    fn now(&self) -> i64 {
        self.now
    }

    fn window(&mut self, _cfg: &UpdateConfig, _now: i64) -> WindowState {
        self.window
    }

    fn reboot(&mut self) -> Result<(), String> {
        self.reboots += 1;
        Ok(())
    }

    fn log(&mut self, level: u8, msg: &str) {
        self.lines.push((level, msg.to_string()));
    }

    fn status(&mut self, _msg: &str) {}
}

/// One host of the fleet.
pub struct Node {
    pub w: World,
    pub machine_id: PathBuf,
    pub cfg: UpdateConfig,
    /// `fleet_lock::node_id` of its machine id.
    pub id: String,
    pub env: TestEnv,
}

/// The machine id of test host `n`.
pub fn machine_id_text(n: u8) -> String {
    format!("{:02x}{}\n", n, "5eed".repeat(7) + "5e")
}

impl Node {
    /// Host `n` with `[update]` table `update` (TOML after `[update]`).
    pub fn new(n: u8, update: &str) -> Node {
        let w = World::new(&[("1.1.0", 2)], USR, CHUNK, 2 << 20);
        let machine_id = w.dir.join("machine-id");
        std::fs::write(&machine_id, machine_id_text(n)).unwrap();
        let text = format!("[update]\n{update}\n");
        std::fs::write(w.dir.join("config.toml"), &text).unwrap();
        let cfg = config::parse(&text, "test").unwrap();
        let id = fleet_lock::node_id(&machine_id_text(n)).unwrap();
        Node {
            w,
            machine_id,
            cfg,
            id,
            env: TestEnv::new(),
        }
    }

    /// The agent of this host booted from `booted` at `version`, joined to
    /// its fleet as cairn-updated's setup does.
    pub fn agent(&self, booted: Slot, version: &str) -> Agent {
        let mut a = self.w.agent(booted, version);
        a.reboot = self.cfg.reboot;
        a.fleet = Coordinator::new(&self.cfg, &self.machine_id, &self.w.dir.join("state"))
            .unwrap()
            .map(Arc::new);
        a
    }

    /// A started service (no bus) and its cycle, booted from `booted` at
    /// `version`. The back-off is short: retries are driven by the test.
    pub fn start(&self, booted: Slot, version: &str) -> (Arc<Service>, Cycle) {
        let service = Service::new(self.agent(booted, version));
        let cycle = Cycle::with_backoff(
            &service,
            BackoffPolicy {
                base: std::time::Duration::from_secs(60),
                cap: std::time::Duration::from_secs(600),
            },
        );
        (service, cycle)
    }

    /// One cycle of the timer.
    pub fn run(&mut self, service: &Service, cycle: &mut Cycle) -> Next {
        let cfg = self.cfg.clone();
        cycle
            .run(service, &cfg, &mut self.env)
            .unwrap_or_else(|e| panic!("cycle: {e:#}\n{}", self.env.log_text()))
    }

    /// The reboot into slot b, as far as the disk is concerned: the boot
    /// manager tried b (on trial, one try spent).
    pub fn boot_b_on_trial(&self) {
        self.w
            .target
            .set_attrs(&[(Slot::B, Attrs::new(2, 2, false))])
            .unwrap();
    }

    /// cairn-mark-good committed slot b.
    pub fn commit_b(&self) {
        self.w
            .target
            .set_attrs(&[(Slot::B, Attrs::new(2, 3, true))])
            .unwrap();
    }

    /// Slot b used up its tries: the boot manager went back to a.
    pub fn fail_b(&self) {
        self.w
            .target
            .set_attrs(&[(Slot::B, Attrs::new(2, 0, false))])
            .unwrap();
    }

    /// Whether an update waits for its reboot here.
    pub fn staged(&self, agent: &Agent) -> bool {
        agent.reboot_needed().unwrap()
    }
}

/// The error text of a result expected to fail.
pub fn err_text<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.unwrap_err().to_string()
}
