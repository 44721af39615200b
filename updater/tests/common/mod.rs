//! The D-Bus tests' harness: a private `dbus-daemon` with the system bus's
//! default policy and the shipped policy file, and cairn-updated on it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use cairn_updater::fixture::Reaped;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../systemd-units/usr/share/dbus-1/system.d/dev.cairn.Updater1.conf"
);

/// Whether all of `tools` are installed (see `host_tools`: missing ones fail
/// under `cargo xtask test` and skip with a reason otherwise); `packages`
/// names the Debian packages that have them.
pub fn have_tools(tools: &[&str], packages: &str) -> bool {
    let pairs: Vec<(&str, &str)> = tools.iter().map(|t| (*t, packages)).collect();
    host_tools::require(&pairs)
}

/// The default context of Debian's /usr/share/dbus-1/system.conf (connect,
/// no names, no method calls unless a policy file allows them) plus the
/// shipped policy for dev.cairn.Updater1; with `monitor`, root may also
/// eavesdrop and monitor (dbus-monitor).
fn bus_config(socket: &Path, monitor: bool) -> String {
    let root = if monitor {
        r#"
  <policy user="root">
    <allow eavesdrop="true"/>
    <allow eavesdrop="true" send_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>"#
    } else {
        ""
    };
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>{root}
  <include>{POLICY}</include>
</busconfig>
"#,
        socket.display()
    )
}

/// A running private bus; the daemon is stopped when this is dropped.
pub struct Bus {
    /// For DBUS_SYSTEM_BUS_ADDRESS.
    pub address: String,
    _daemon: Reaped,
}

/// Starts `dbus-daemon` with its config in `dir/bus.conf`, listening on
/// `dir/bus` (see [`bus_config`] for `monitor`).
pub fn start_bus(dir: &Path, monitor: bool) -> Bus {
    let conf = dir.join("bus.conf");
    std::fs::write(&conf, bus_config(&dir.join("bus"), monitor)).unwrap();
    let mut bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dbus-daemon");
    let mut line = String::new();
    BufReader::new(bus.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let daemon = Reaped(bus);
    let address = line.trim().to_string();
    assert!(address.starts_with("unix:"), "dbus-daemon printed {line:?}");
    Bus {
        address,
        _daemon: daemon,
    }
}

/// Starts `cairn-updated --manual <args>` (the binary `bin`) on `bus`, its
/// stderr to `stderr`.
pub fn start_service(
    bin: impl AsRef<OsStr>,
    bus: &Bus,
    args: &[String],
    stderr: impl Into<Stdio>,
) -> Reaped {
    Reaped(
        Command::new(bin)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .arg("--manual")
            .args(args)
            .stderr(stderr)
            .spawn()
            .expect("start cairn-updated"),
    )
}
