//! The window grammar and the instants a window is open.

use std::fmt;
use std::str::FromStr;

use crate::civil::{DateTime, SECS_PER_DAY, Weekday};
use crate::tz::TimeZone;

/// Shown in every parse error.
pub const EXAMPLES: &str = "\"Sat,Sun 02:00-04:00\", \"22:00-02:00\", \"Mon..Fri 23:00 1h30m\"";

/// Longest length of the `HH:MM <length>` form.
pub const MAX_LENGTH_SECS: u32 = 7 * 86_400;

/// A maintenance window in local time: the days it opens on, the local time
/// it opens at, and when it closes. See the crate documentation for the
/// grammar and for what happens around DST changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Bit 0 = Monday .. bit 6 = Sunday; never zero.
    days: u8,
    /// Minutes after local midnight, 0..1440.
    start: u16,
    end: WindowEnd,
}

/// When a window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowEnd {
    /// At this local time (minutes after midnight, 1..=1440), on the day the
    /// window opens if later than the start, else on the next day.
    At(u16),
    /// After this many seconds of real (elapsed) time from the opening.
    After(u32),
}

/// One opening of a window: open from `open` (inclusive) to `close`
/// (exclusive), unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Occurrence {
    pub open: i64,
    pub close: i64,
}

impl Occurrence {
    pub fn contains(&self, t: i64) -> bool {
        self.open <= t && t < self.close
    }
}

/// A window string that does not parse: the whole string, the part at fault
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowError {
    pub input: String,
    pub part: String,
    pub problem: String,
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "window {:?}: {}", self.input, self.problem)?;
        if !self.part.is_empty() && self.part != self.input.trim() {
            write!(f, " in {:?}", self.part)?;
        }
        write!(f, " (valid examples: {EXAMPLES})")
    }
}

impl std::error::Error for WindowError {}

const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Splits off the last whitespace-separated token.
fn split_last(s: &str) -> (&str, &str) {
    match s.rsplit_once(char::is_whitespace) {
        Some((head, last)) => (head.trim_end(), last),
        None => ("", s),
    }
}

impl Window {
    /// Parses `[DAYS ]HH:MM-HH:MM` or `[DAYS ]HH:MM LENGTH`; see the crate
    /// documentation.
    pub fn parse(input: &str) -> Result<Window, WindowError> {
        let err = |part: &str, problem: &str| WindowError {
            input: input.into(),
            part: part.into(),
            problem: problem.into(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("", "empty window"));
        }
        let (head, last) = split_last(s);
        let (days, start, end) = if let Some((a, b)) = last.split_once('-') {
            let start = parse_hm(a, false).map_err(|p| err(a, p))?;
            let end = parse_hm(b, true).map_err(|p| err(b, p))?;
            if start == end {
                return Err(err(last, "empty window: the end equals the start"));
            }
            (head, start, WindowEnd::At(end))
        } else if last.starts_with(|c: char| c.is_ascii_digit()) && !last.contains(':') {
            let (days, start_tok) = split_last(head);
            if !start_tok.contains(':') {
                return Err(err(last, "a length needs a start time HH:MM before it"));
            }
            let start = parse_hm(start_tok, false).map_err(|p| err(start_tok, p))?;
            let len = parse_length(last).map_err(|p| err(last, p))?;
            (days, start, WindowEnd::After(len))
        } else {
            return Err(err(
                last,
                "expected a time range HH:MM-HH:MM, or a start HH:MM and a length such as 1h30m",
            ));
        };
        let days = parse_days(days).map_err(|(part, p)| err(part, p))?;
        Ok(Window { days, start, end })
    }

    /// Is the window on `day` (of the local date it opens)?
    pub fn on(&self, day: Weekday) -> bool {
        self.days & (1 << day.index()) != 0
    }

    /// The days it opens on, Monday first.
    pub fn days(&self) -> impl Iterator<Item = Weekday> + '_ {
        Weekday::ALL.into_iter().filter(|d| self.on(*d))
    }

    /// Minutes after local midnight at which it opens.
    pub fn start_minute(&self) -> u16 {
        self.start
    }

    pub fn end(&self) -> WindowEnd {
        self.end
    }

    /// How long the window is on a day without a clock change, in seconds.
    pub fn nominal_secs(&self) -> i64 {
        match self.end {
            WindowEnd::At(end) if end > self.start => i64::from(end - self.start) * 60,
            WindowEnd::At(end) => i64::from(end + 1440 - self.start) * 60,
            WindowEnd::After(secs) => i64::from(secs),
        }
    }

    /// The opening of this window that starts on the local date of `date`
    /// (its time of day is ignored) in `tz`, or `None` when the window is not
    /// on that day of the week.
    pub fn occurrence_on(&self, tz: &TimeZone, date: &DateTime) -> Option<Occurrence> {
        self.occurrence(tz, date.day_number())
    }

    /// `day` counts local dates from 1970-01-01.
    pub(crate) fn occurrence(&self, tz: &TimeZone, day: i64) -> Option<Occurrence> {
        if !self.on(Weekday::of_day(day)) {
            return None;
        }
        let open = tz.resolve(day, i64::from(self.start) * 60).earliest();
        let close = match self.end {
            WindowEnd::At(end) => {
                let end_day = if end > self.start { day } else { day + 1 };
                tz.resolve(end_day, i64::from(end) * 60).latest()
            }
            WindowEnd::After(secs) => open.saturating_add(i64::from(secs)),
        };
        // Both ends in one spring-forward gap (or a zone skipping a day):
        // open for the nominal length from the end of the gap.
        let close = if close > open {
            close
        } else {
            open.saturating_add(self.nominal_secs())
        };
        Some(Occurrence { open, close })
    }

    fn local_day(tz: &TimeZone, t: i64) -> i64 {
        t.saturating_add(i64::from(tz.offset_at(t)))
            .div_euclid(SECS_PER_DAY)
    }

    /// The opening of this window that contains `now`, if any (the one
    /// closing last, should two overlap).
    pub fn current(&self, tz: &TimeZone, now: i64) -> Option<Occurrence> {
        // Openings last at most 7 days (plus a clock change) and never start
        // before their local date's midnight minus a day.
        let today = Self::local_day(tz, now);
        (today - 8..=today + 1)
            .filter_map(|d| self.occurrence(tz, d))
            .filter(|o| o.contains(now))
            .max_by_key(|o| o.close)
    }

    /// Is the window open at `now` (unix seconds)?
    pub fn contains(&self, tz: &TimeZone, now: i64) -> bool {
        self.current(tz, now).is_some()
    }

    /// `now` when the window is open, else the first instant after `now`
    /// when it opens. `None` only past the year 292 billion, where instants
    /// run out.
    pub fn next_open(&self, tz: &TimeZone, now: i64) -> Option<i64> {
        if self.contains(tz, now) {
            return Some(now);
        }
        let today = Self::local_day(tz, now);
        // Every weekday occurs twice in these 24 days.
        (today - 8..=today + 15)
            .filter_map(|d| self.occurrence(tz, d))
            .map(|o| o.open)
            .filter(|&open| open > now)
            .min()
    }
}

impl FromStr for Window {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Window, WindowError> {
        Window::parse(s)
    }
}

impl fmt::Display for Window {
    /// The canonical form, which parses back to the same window:
    /// `Sat,Sun 02:00-04:00`, `22:00-02:00`, `Thu 23:00 1h30m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.days != 0x7f {
            let days: Vec<&str> = self.days().map(Weekday::short_name).collect();
            write!(f, "{} ", days.join(","))?;
        }
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        match self.end {
            WindowEnd::At(end) => write!(f, "{}-{}", hm(self.start), hm(end)),
            WindowEnd::After(secs) => {
                write!(f, "{} ", hm(self.start))?;
                let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
                if h > 0 {
                    write!(f, "{h}h")?;
                }
                if m > 0 {
                    write!(f, "{m}m")?;
                }
                if s > 0 {
                    write!(f, "{s}s")?;
                }
                Ok(())
            }
        }
    }
}

/// `H:MM` or `HH:MM` in minutes; `24:00` only as an end.
fn parse_hm(t: &str, end: bool) -> Result<u16, &'static str> {
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|c| c.is_ascii_digit());
    let (h, m) = t
        .split_once(':')
        .filter(|(h, m)| digits(h) && digits(m))
        .ok_or("expected a time HH:MM")?;
    let (h, m): (u16, u16) = (
        h.parse().map_err(|_| "bad hour")?,
        m.parse().map_err(|_| "bad minute")?,
    );
    if m > 59 {
        return Err("minute out of range (00 to 59)");
    }
    if end && h == 24 && m == 0 {
        return Ok(1440);
    }
    if h > 23 {
        return Err(if end {
            "hour out of range (00 to 23, or 24:00 as an end)"
        } else {
            "hour out of range (00 to 23)"
        });
    }
    Ok(h * 60 + m)
}

/// `1h30m`, `90m`, `2h`, `45m30s`: units h, m, s in that order, each once.
fn parse_length(s: &str) -> Result<u32, &'static str> {
    const BAD: &str = "bad length (use hours, minutes and seconds such as 1h30m, 90m or 2h)";
    let mut total: u64 = 0;
    let mut rest = s;
    let mut last_unit = 0;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !c.is_ascii_digit()).ok_or(BAD)?;
        if n_end == 0 || n_end > 6 {
            return Err(BAD);
        }
        let n: u64 = rest[..n_end].parse().map_err(|_| BAD)?;
        let (unit, secs) = match rest.as_bytes()[n_end] {
            b'h' => (1, 3600),
            b'm' => (2, 60),
            b's' => (3, 1),
            _ => return Err(BAD),
        };
        if unit <= last_unit {
            return Err(BAD);
        }
        last_unit = unit;
        total += n * secs;
        rest = &rest[n_end + 1..];
    }
    if total == 0 || total > u64::from(MAX_LENGTH_SECS) {
        return Err("length must be more than 0 and at most 168h");
    }
    Ok(total as u32)
}

fn parse_day(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|full| lower.len() >= 3 && (*full == lower || full[..3] == lower))
}

/// `*`, nothing, or a comma-separated list of days and ranges (`Mon..Fri`,
/// `Mon-Fri`, `Fri..Mon` wraps the week end). The error names the bad part.
fn parse_days(s: &str) -> Result<u8, (&str, &'static str)> {
    let s = s.trim();
    if s.is_empty() || s == "*" {
        return Ok(0x7f);
    }
    let mut bits = 0u8;
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err((s, "empty day in the list"));
        }
        if item.contains(char::is_whitespace) {
            return Err((item, "separate days with commas, as in Sat,Sun"));
        }
        let range = item.split_once("..").or_else(|| item.split_once('-'));
        let (a, b) = range.unwrap_or((item, item));
        let unknown = "unknown day (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, or a range Mon..Fri)";
        let a = parse_day(a).ok_or((item, unknown))?;
        let b = parse_day(b).ok_or((item, unknown))?;
        let mut d = a;
        loop {
            bits |= 1 << d;
            if d == b {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(bits)
}
