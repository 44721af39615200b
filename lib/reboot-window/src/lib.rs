//! Maintenance windows in the host's local time: when may the host reboot?
//!
//! # Time zones
//!
//! [`TimeZone`] reads TZif files (RFC 8536, versions 1 to 4; the 64-bit data
//! of version 2+ files, and the footer's POSIX TZ string for instants from
//! the last transition on, including the version 3 rule times of -167 to
//! 167 hours). [`TimeZone::load`] reads the host's `/etc/localtime` under a
//! root directory and falls back to UTC only when that file does not exist;
//! [`TimeZone::named`] reads an IANA zone such as `Europe/Berlin` from a
//! zoneinfo directory. Reading files happens there only: everything else is
//! pure, and instants are `i64` unix seconds (UTC).
//!
//! # Window grammar
//!
//! ```text
//! window = [days SP] HH:MM "-" HH:MM     ; "Sat,Sun 02:00-04:00", "22:00-02:00"
//!        | [days SP] HH:MM SP length     ; "Thu 23:00 1h30m", "Mon..Fri 01:00 90m"
//! days   = "*" | item *("," item)        ; no days or "*" = every day
//! item   = day | day ".." day | day "-" day   ; ranges may wrap: "Fri..Mon"
//! day    = Mon | Tue | ... | Sun | Monday | ... (any case)
//! length = [N "h"][N "m"][N "s"]         ; more than 0, at most 168h
//! ```
//!
//! Times are local wall-clock times in the host's zone. An end before the
//! start wraps midnight; `24:00` is allowed as an end. This accepts every
//! string of the updater's original UTC grammar (`[Mon,Tue,... ]HH:MM-HH:MM`)
//! with the same meaning, now read in local time (identical on a UTC host).
//!
//! # Meaning
//!
//! A window opens on each local date whose weekday is listed, at the start
//! time; a window that wraps midnight belongs to the day it starts on
//! (`Fri 23:00-01:00` is open early on Saturday, not early on Friday). It
//! closes at the end time (on the next date when it wrapped), or after the
//! length in elapsed time (`Sun 02:00 2h` is open two real hours even when
//! the clocks change meanwhile).
//!
//! Clock changes, with Europe/Berlin's 2026 changes as examples:
//!
//! - A local time that does not exist (spring forward, 29 March 02:00 → 03:00):
//!   a start or end inside the gap means the first instant after it, 03:00
//!   CEST. So `Sun 02:30-04:00` opens at 03:00 and `Sun 01:00-02:30` closes
//!   at 03:00 (after one hour). A window lying wholly in the gap
//!   (`Sun 02:15-02:45`) opens at 03:00 for its nominal length, 30 minutes,
//!   so no week is skipped.
//! - A local time that occurs twice (fall back, 25 October 03:00 → 02:00):
//!   one opening runs from the *first* time the clocks show the start to the
//!   *last* time they show the end. `Sun 02:00-03:00` is open during both
//!   passes through 02:00-03:00 (two real hours), and `Sun 02:30-04:00`
//!   opens at 02:30 CEST and stays open through the repeated hour until
//!   04:00 CET; an opening never closes and reopens.
//!
//! # Example
//!
//! ```
//! use reboot_window::{TimeZone, contains, next_open, parse_windows};
//!
//! // On a host: TimeZone::load(Path::new("/")); here Berlin's rule.
//! let tz = TimeZone::from_posix_tz("CET-1CEST,M3.5.0,M10.5.0/3")?;
//! let windows = parse_windows(&["Sun 02:30-04:00"])?;
//! // Saturday 2026-03-28 12:00 UTC. Sunday's 02:30 does not exist: the
//! // window opens at 03:00 CEST, 01:00 UTC, and closes at 04:00 CEST.
//! let now = 1_774_699_200;
//! assert!(!contains(&windows, &tz, now));
//! assert_eq!(next_open(&windows, &tz, now), Some(1_774_746_000));
//! assert!(contains(&windows, &tz, 1_774_746_000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # No windows
//!
//! An empty list restricts nothing: [`contains`] is `true` and
//! [`next_open`] is `None` ("always open"). A caller wanting "never" should
//! not ask (the updater's `reboot = "off"`).

mod civil;
mod posix;
mod tz;
mod window;

pub use civil::{DateTime, Weekday};
pub use tz::{LOCALTIME, LocalResult, LocalTime, TimeZone, Transition, TzError, ZONEINFO_DIR};
pub use window::{EXAMPLES, MAX_LENGTH_SECS, Occurrence, Window, WindowEnd, WindowError};

/// Parses every string of a config's `windows`; the first bad one is the error.
pub fn parse_windows<S: AsRef<str>>(windows: &[S]) -> Result<Vec<Window>, WindowError> {
    windows.iter().map(|w| Window::parse(w.as_ref())).collect()
}

/// May the host reboot at `now` (unix seconds): is it inside one of
/// `windows` in `tz`? `true` when `windows` is empty (no restriction).
pub fn contains(windows: &[Window], tz: &TimeZone, now: i64) -> bool {
    windows.is_empty() || windows.iter().any(|w| w.contains(tz, now))
}

/// The first instant at or after `now` when the host may reboot: `now`
/// itself when a window is open, else the earliest opening of any window
/// after `now`. `None` when `windows` is empty, which means always open
/// (and, moot, when `now` is within a week of the end of `i64` seconds).
/// Whenever this is `Some(t)`, `contains(windows, tz, t)` holds and no
/// window is open between `now` and `t`, so a caller may sleep until `t`.
pub fn next_open(windows: &[Window], tz: &TimeZone, now: i64) -> Option<i64> {
    windows.iter().filter_map(|w| w.next_open(tz, now)).min()
}

/// The end of the opening that contains `now`, following any windows that
/// overlap or touch it; `None` when no window is open at `now` or when
/// `windows` is empty. Useful to log "open until ...".
pub fn open_until(windows: &[Window], tz: &TimeZone, now: i64) -> Option<i64> {
    let mut end = windows
        .iter()
        .filter_map(|w| w.current(tz, now))
        .map(|o| o.close)
        .max()?;
    // Overlapping or back-to-back windows extend the opening; a week's worth
    // of hops is plenty.
    for _ in 0..64 {
        match windows
            .iter()
            .filter_map(|w| w.current(tz, end))
            .map(|o| o.close)
            .max()
        {
            Some(next) if next > end => end = next,
            _ => break,
        }
    }
    Some(end)
}

#[cfg(test)]
mod tests;
