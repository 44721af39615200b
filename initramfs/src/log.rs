//! Logging to /dev/kmsg and the console, every line prefixed `cairn-init:`
//! and suffixed with the uptime.

use std::fs::OpenOptions;
use std::io::Write;

use crate::sys;

/// Syslog levels used on /dev/kmsg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Crit = 2,
    Warning = 4,
    Info = 6,
}

/// Formats one line (without the kmsg `<N>` prefix).
pub fn line(msg: &str, uptime: f64) -> String {
    format!("cairn-init: {msg} (t={uptime:.3}s)")
}

/// Whether the kernel itself echoes a kmsg record of `level` to the console:
/// `/proc/sys/kernel/printk` holds console_loglevel first, and
/// `printk_devkmsg=off` drops user records silently. Used to avoid printing
/// every line twice.
pub fn kernel_echoes(printk: &str, devkmsg: &str, level: Level) -> bool {
    let console_loglevel: Option<i32> = printk
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok());
    devkmsg.trim() != "off" && console_loglevel.is_some_and(|c| (level as i32) < c)
}

pub fn log(level: Level, msg: &str) {
    let text = line(msg, sys::uptime());
    // A fresh fd per record: /dev/kmsg rate-limits each open file to 10
    // records per 5 s by default (printk.devkmsg=ratelimit), and a boot logs
    // more than that. Before devtmpfs is mounted there is no /dev/kmsg.
    let to_kmsg = OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut k| k.write_all(format!("<{}>{text}\n", level as i32).as_bytes()))
        .is_ok();
    let echoed = to_kmsg && {
        let printk = std::fs::read_to_string("/proc/sys/kernel/printk").unwrap_or_default();
        let devkmsg =
            std::fs::read_to_string("/proc/sys/kernel/printk_devkmsg").unwrap_or_default();
        kernel_echoes(&printk, &devkmsg, level)
    };
    if !echoed {
        // fd 2 is /dev/console as the kernel opened it for /init (from the
        // initramfs's dev/console node), valid even before devtmpfs.
        let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
    }
}

pub fn info(msg: &str) {
    log(Level::Info, msg);
}

pub fn warn(msg: &str) {
    log(Level::Warning, &format!("warning: {msg}"));
}

/// The FATAL line goes to both sinks unconditionally: it must reach the
/// console whatever the log levels say, even if that prints it twice.
pub fn fatal(msg: &str) {
    let text = line(&format!("FATAL: {msg}"), sys::uptime());
    if let Ok(mut k) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = k.write_all(format!("<{}>{text}\n", Level::Crit as i32).as_bytes());
    }
    let _ = std::io::stderr().write_all(format!("{text}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_echo_rules() {
        assert_eq!(
            line("mounted /proc", 1.23456),
            "cairn-init: mounted /proc (t=1.235s)"
        );
        assert!(kernel_echoes("7 4 1 7\n", "ratelimit\n", Level::Info));
        assert!(!kernel_echoes("4 4 1 7\n", "ratelimit\n", Level::Info)); // quiet
        assert!(kernel_echoes("4 4 1 7\n", "on\n", Level::Crit));
        assert!(!kernel_echoes("7 4 1 7\n", "off\n", Level::Crit));
        assert!(!kernel_echoes("", "", Level::Crit));
    }
}
