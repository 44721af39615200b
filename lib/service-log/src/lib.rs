//! Logging to stderr, with sd-daemon priority prefixes when stderr is the
//! journal (systemd sets JOURNAL_STREAM), so errors show up as errors in
//! `journalctl -p err` while an interactive run prints plain text.

use std::sync::OnceLock;

pub const ERR: u8 = 3;
pub const WARNING: u8 = 4;
pub const NOTICE: u8 = 5;
pub const INFO: u8 = 6;

fn to_journal() -> bool {
    static J: OnceLock<bool> = OnceLock::new();
    *J.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some())
}

pub fn log(level: u8, msg: &str) {
    // One record per line: a stray newline would split it and lose the prefix.
    for line in msg.lines() {
        if to_journal() {
            eprintln!("<{level}>{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

pub fn err(msg: &str) {
    log(ERR, msg);
}

pub fn warn(msg: &str) {
    log(WARNING, msg);
}

pub fn notice(msg: &str) {
    log(NOTICE, msg);
}

pub fn info(msg: &str) {
    log(INFO, msg);
}
