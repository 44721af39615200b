//! POSIX TZ strings, `std offset [dst [offset] [,rule,rule]]`, as found in
//! the footer of TZif files (RFC 8536 section 3.3), with the version 3
//! extensions: rule times from -167 to 167 hours.

use crate::civil::{self, SECS_PER_DAY};
use crate::tz::LocalType;

/// A parsed TZ string; offsets are seconds east of UTC (the opposite sign of
/// the string's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PosixTz {
    pub(crate) std: LocalType,
    pub(crate) dst: Option<Dst>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dst {
    pub(crate) ty: LocalType,
    /// DST starts at `start` in standard time ...
    pub(crate) start: Rule,
    /// ... and ends at `end` in daylight time.
    pub(crate) end: Rule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) date: RuleDate,
    /// Local seconds after midnight of `date`: -167h..=167h.
    pub(crate) time: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleDate {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(u16),
    /// `n`: day 0..=365, February 29 counted in leap years.
    Julian0(u16),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    MonthWeekDay { month: u8, week: u8, day: u8 },
}

impl RuleDate {
    /// The day (counted from 1970-01-01) this rule names in `year`.
    fn day_in(self, year: i64) -> i64 {
        let jan1 = || civil::days_from_civil(year, 1, 1);
        match self {
            RuleDate::Julian1(n) => {
                let n = i64::from(n);
                jan1() + n - 1 + i64::from(civil::is_leap(year) && n >= 60)
            }
            RuleDate::Julian0(n) => jan1() + i64::from(n),
            RuleDate::MonthWeekDay { month, week, day } => {
                let first = civil::days_from_civil(year, month, 1);
                // 1970-01-01 was a Thursday: day 4 with Sunday = 0.
                let first_wd = (first + 4).rem_euclid(7);
                let mut d =
                    first + (i64::from(day) - first_wd).rem_euclid(7) + 7 * (i64::from(week) - 1);
                if d - first >= i64::from(civil::days_in_month(year, month)) {
                    d -= 7;
                }
                d
            }
        }
    }
}

impl PosixTz {
    pub(crate) fn parse(s: &str) -> Result<PosixTz, String> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
        };
        let std_name = p.name().ok_or("expected a standard time name")?;
        let std_off = -p
            .hms(24, true)
            .ok_or("expected a standard time offset after the name")?;
        let std = LocalType {
            offset: std_off,
            is_dst: false,
            abbr: std_name,
        };
        if p.done() {
            return Ok(PosixTz { std, dst: None });
        }
        let dst_name = p.name().ok_or("expected a daylight time name")?;
        let dst_off = if p.peek().is_some_and(|c| c != b',') {
            -p.hms(24, true).ok_or("bad daylight time offset")?
        } else {
            std_off + 3600
        };
        let (start, end) = if p.done() {
            // POSIX leaves the rules to the implementation; glibc and tzcode
            // use the US rules.
            let us = |month, week| Rule {
                date: RuleDate::MonthWeekDay {
                    month,
                    week,
                    day: 0,
                },
                time: 7200,
            };
            (us(3, 2), us(11, 1))
        } else {
            p.expect(b',')
                .ok_or("expected ',' before the DST start rule")?;
            let start = p.rule().ok_or("bad DST start rule")?;
            p.expect(b',')
                .ok_or("expected ',' before the DST end rule")?;
            let end = p.rule().ok_or("bad DST end rule")?;
            (start, end)
        };
        if !p.done() {
            return Err(format!("unexpected text at byte {}", p.i));
        }
        Ok(PosixTz {
            std,
            dst: Some(Dst {
                ty: LocalType {
                    offset: dst_off,
                    is_dst: true,
                    abbr: dst_name,
                },
                start,
                end,
            }),
        })
    }

    /// DST start and end instants (UTC) of `year`, as `(instant, is_start)`.
    fn events(dst: &Dst, std: &LocalType, year: i64) -> [(i64, bool); 2] {
        let when = |r: Rule, before: i32| {
            civil::at(r.date.day_in(year), i64::from(r.time) - i64::from(before))
        };
        [
            (when(dst.end, dst.ty.offset), false),
            (when(dst.start, std.offset), true),
        ]
    }

    /// Events of the years `year_of(t) - 1 ..= year_of(t) + N - 2`, sorted;
    /// at equal instants an end sorts before a start, so "DST all year"
    /// rules stay in DST.
    fn events_around<const N: usize>(dst: &Dst, std: &LocalType, t: i64) -> [(i64, bool); N] {
        let year = civil::civil_from_days(t.div_euclid(SECS_PER_DAY)).0 - 1;
        let mut ev = [(0, false); N];
        for (i, pair) in ev.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&Self::events(dst, std, year + i as i64));
        }
        ev.sort_unstable();
        ev
    }

    pub(crate) fn local_type_at(&self, t: i64) -> &LocalType {
        let Some(dst) = &self.dst else {
            return &self.std;
        };
        let ev = Self::events_around::<6>(dst, &self.std, t);
        match ev.iter().rev().find(|e| e.0 <= t) {
            Some((_, true)) => &dst.ty,
            _ => &self.std,
        }
    }

    /// The first instant after `t` where the UTC offset changes, and the new
    /// offset; `None` when it never changes.
    pub(crate) fn next_change(&self, t: i64) -> Option<(i64, i32)> {
        let dst = self.dst.as_ref()?;
        let offset_of = |is_start: bool| {
            if is_start {
                dst.ty.offset
            } else {
                self.std.offset
            }
        };
        // Five years of events from the year before `t`'s; only those before
        // the fifth year's count, as its events may coincide with the sixth's.
        let ev = Self::events_around::<10>(dst, &self.std, t);
        let year = civil::civil_from_days(t.div_euclid(SECS_PER_DAY)).0;
        let [a, b] = Self::events(dst, &self.std, year + 3);
        let horizon = a.0.min(b.0);
        let mut i = ev.partition_point(|e| e.0 <= t);
        let current = offset_of(i.checked_sub(1).is_some_and(|j| ev[j].1));
        while i < ev.len() && ev[i].0 < horizon {
            let when = ev[i].0;
            // The state after every event at this instant.
            while i + 1 < ev.len() && ev[i + 1].0 == when {
                i += 1;
            }
            let offset = offset_of(ev[i].1);
            if offset != current {
                return Some((when, offset));
            }
            i += 1;
        }
        None
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i == self.s.len()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    /// `[A-Za-z]{3,}` or `<[A-Za-z0-9+-]{3,}>`.
    fn name(&mut self) -> Option<String> {
        let (quoted, ok): (bool, fn(u8) -> bool) = if self.expect(b'<').is_some() {
            (true, |c| {
                c.is_ascii_alphanumeric() || c == b'+' || c == b'-'
            })
        } else {
            (false, |c| c.is_ascii_alphabetic())
        };
        let start = self.i;
        while self.peek().is_some_and(ok) {
            self.i += 1;
        }
        let name = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_owned();
        if quoted {
            self.expect(b'>')?;
        }
        (name.len() >= 3).then_some(name)
    }

    /// Up to `max_digits` decimal digits.
    fn number(&mut self, max_digits: usize) -> Option<u32> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) && self.i - start < max_digits {
            self.i += 1;
        }
        if self.i == start {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    /// `[+-]hh[:mm[:ss]]` with `hh <= max_hours`, in seconds.
    fn hms(&mut self, max_hours: u32, signed: bool) -> Option<i32> {
        let mut sign = 1;
        if signed {
            match self.peek() {
                Some(b'+') => self.i += 1,
                Some(b'-') => {
                    sign = -1;
                    self.i += 1;
                }
                _ => {}
            }
        }
        let h = self.number(3)?;
        let mut secs = h * 3600;
        if h > max_hours {
            return None;
        }
        for unit in [60, 1] {
            if self.expect(b':').is_none() {
                break;
            }
            let n = self.number(2)?;
            if n > 59 {
                return None;
            }
            secs += n * unit;
        }
        Some(sign * secs as i32)
    }

    /// `date[/time]`.
    fn rule(&mut self) -> Option<Rule> {
        let date = match self.peek()? {
            b'J' => {
                self.i += 1;
                let n = self.number(3)?;
                if !(1..=365).contains(&n) {
                    return None;
                }
                RuleDate::Julian1(n as u16)
            }
            b'M' => {
                self.i += 1;
                let month = self.number(2)?;
                self.expect(b'.')?;
                let week = self.number(1)?;
                self.expect(b'.')?;
                let day = self.number(1)?;
                if !(1..=12).contains(&month) || !(1..=5).contains(&week) || day > 6 {
                    return None;
                }
                RuleDate::MonthWeekDay {
                    month: month as u8,
                    week: week as u8,
                    day: day as u8,
                }
            }
            c if c.is_ascii_digit() => {
                let n = self.number(3)?;
                if n > 365 {
                    return None;
                }
                RuleDate::Julian0(n as u16)
            }
            _ => return None,
        };
        let time = if self.expect(b'/').is_some() {
            self.hms(167, true)?
        } else {
            7200
        };
        Some(Rule { date, time })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("UTC0", 0, None),
            ("EST5", -18_000, None),
            ("<+0530>-5:30", 19_800, None),
            ("IST-5:30", 19_800, None),
            ("<-03>3", -10_800, None),
            ("CET-1CEST,M3.5.0,M10.5.0/3", 3600, Some(7200)),
            ("EST5EDT,M3.2.0,M11.1.0", -18_000, Some(-14_400)),
            ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37_800, Some(39_600)),
            ("EST5EDT", -18_000, Some(-14_400)),
            ("AAA3BBB,J60/2:30:15,300/-1", -10_800, Some(-7200)),
            // v3: negative and over-24h rule times (America/Godthab, "DST all year").
            ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200, Some(-3600)),
            ("EST5EDT,0/0,J365/25", -18_000, Some(-14_400)),
            ("XXX-1YYY,M3.5.0/167,M10.5.0/-167", 3600, Some(7200)),
        ];
        for (s, std, dst) in ok {
            let tz = PosixTz::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(tz.std.offset, std, "{s}");
            assert_eq!(tz.dst.map(|d| d.ty.offset), dst, "{s}");
        }
        let bad = [
            "",
            ":Europe/Berlin",
            "UT0",
            "UTC",
            "UTC+25",
            "UTC0 ",
            "<+05",
            "CET-1CEST,M3.5.0",
            "CET-1CEST,M13.5.0,M10.5.0",
            "CET-1CEST,M3.6.0,M10.5.0",
            "CET-1CEST,M3.5.7,M10.5.0",
            "CET-1CEST,J0,J365",
            "CET-1CEST,366,J365",
            "CET-1CEST,M3.5.0/168,M10.5.0",
            "CET-1CEST,M3.5.0/1:60,M10.5.0",
            "CET-1CEST,M3.5.0,M10.5.0/3x",
        ];
        for s in bad {
            assert!(PosixTz::parse(s).is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn rule_dates() {
        let day = |y, m, d| civil::days_from_civil(y, m, d);
        let mwd = |month, week, day| RuleDate::MonthWeekDay { month, week, day };
        let rows = [
            (mwd(3, 5, 0), 2026, day(2026, 3, 29)),
            (mwd(10, 5, 0), 2026, day(2026, 10, 25)),
            (mwd(3, 2, 0), 2026, day(2026, 3, 8)),
            (mwd(11, 1, 0), 2026, day(2026, 11, 1)),
            (mwd(2, 5, 0), 2026, day(2026, 2, 22)), // last Sunday of a 28-day February
            (mwd(2, 5, 0), 2032, day(2032, 2, 29)), // leap year, Feb 29 is a Sunday
            (RuleDate::Julian1(60), 2028, day(2028, 3, 1)),
            (RuleDate::Julian1(59), 2028, day(2028, 2, 28)),
            (RuleDate::Julian1(365), 2028, day(2028, 12, 31)),
            (RuleDate::Julian0(59), 2028, day(2028, 2, 29)),
            (RuleDate::Julian0(365), 2028, day(2028, 12, 31)),
            (RuleDate::Julian0(0), 2026, day(2026, 1, 1)),
        ];
        for (rule, year, expect) in rows {
            assert_eq!(rule.day_in(year), expect, "{rule:?} {year}");
        }
    }

    #[test]
    fn dst_all_year_never_changes() {
        let tz = PosixTz::parse("EST5EDT,0/0,J365/25").unwrap();
        for t in [
            0,
            1_767_225_600,
            1_798_761_599,
            1_798_761_600,
            4_102_444_800,
        ] {
            assert_eq!(tz.local_type_at(t).offset, -14_400, "{t}");
            assert_eq!(tz.next_change(t), None, "{t}");
        }
    }
}
