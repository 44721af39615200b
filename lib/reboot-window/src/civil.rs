//! Proleptic Gregorian calendar arithmetic on unix seconds (no time zones).
//!
//! The day algorithms are Howard Hinnant's `days_from_civil` and
//! `civil_from_days`; every conversion saturates instead of overflowing, so
//! any `i64` input is accepted.

use std::fmt;

pub(crate) const SECS_PER_DAY: i64 = 86_400;

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// All days, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// 0 for Monday .. 6 for Sunday.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The weekday of a day counted from 1970-01-01 (a Thursday).
    pub(crate) fn of_day(day: i64) -> Weekday {
        Weekday::ALL[(day + 3).rem_euclid(7) as usize]
    }

    /// The three-letter English name, `Mon` .. `Sun`.
    pub fn short_name(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self.index()]
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

pub(crate) fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

pub(crate) fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to `year-month-day` (month 1..=12, day 1..=31).
pub(crate) fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day counted from 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `days * 86400 + secs`, saturating at the ends of `i64`.
pub(crate) fn at(days: i64, secs: i64) -> i64 {
    days.saturating_mul(SECS_PER_DAY).saturating_add(secs)
}

/// A calendar date and wall-clock time, with no time zone attached.
///
/// `TimeZone::to_local` makes one from an instant and
/// `TimeZone::from_local` maps one back; [`DateTime::from_unix`] and
/// [`DateTime::to_unix`] read it as UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=59
    pub second: u8,
}

impl DateTime {
    /// A date and time; `None` unless every field is in range for that month.
    pub fn new(
        year: i64,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Option<DateTime> {
        let ok = (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second < 60;
        ok.then_some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// The UTC date and time of unix instant `t`.
    pub fn from_unix(t: i64) -> DateTime {
        Self::from_parts(t.div_euclid(SECS_PER_DAY), t.rem_euclid(SECS_PER_DAY))
    }

    /// Reads this date and time as UTC: seconds since 1970-01-01T00:00:00Z.
    pub fn to_unix(&self) -> i64 {
        at(self.day_number(), self.second_of_day())
    }

    /// The day of the week of this date.
    pub fn weekday(&self) -> Weekday {
        Weekday::of_day(self.day_number())
    }

    pub(crate) fn from_parts(day: i64, secs: i64) -> DateTime {
        let (year, month, d) = civil_from_days(day);
        DateTime {
            year,
            month,
            day: d,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }

    /// Days from 1970-01-01 to this date.
    pub(crate) fn day_number(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    pub(crate) fn second_of_day(&self) -> i64 {
        i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips() {
        // (unix seconds, date) pairs checked with `date -u -d @t`.
        let rows = [
            (0, (1970, 1, 1, 0, 0, 0), Weekday::Thu),
            (951_782_400, (2000, 2, 29, 0, 0, 0), Weekday::Tue),
            (1_774_746_000, (2026, 3, 29, 1, 0, 0), Weekday::Sun),
            (1_795_219_200, (2026, 11, 21, 0, 0, 0), Weekday::Sat),
            (-1, (1969, 12, 31, 23, 59, 59), Weekday::Wed),
            (-2_208_988_800, (1900, 1, 1, 0, 0, 0), Weekday::Mon),
            (4_102_444_800, (2100, 1, 1, 0, 0, 0), Weekday::Fri),
            (253_402_300_799, (9999, 12, 31, 23, 59, 59), Weekday::Fri),
        ];
        for (t, (y, mo, d, h, mi, s), wd) in rows {
            let dt = DateTime::from_unix(t);
            assert_eq!(dt, DateTime::new(y, mo, d, h, mi, s).unwrap(), "{t}");
            assert_eq!(dt.to_unix(), t);
            assert_eq!(dt.weekday(), wd, "{dt}");
        }
        // Every day over four centuries, both ways.
        for day in -146_097..146_097 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert!(d >= 1 && d <= days_in_month(y, m));
        }
    }

    #[test]
    fn extremes_do_not_panic() {
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let dt = DateTime::from_unix(t);
            let _ = dt.to_unix();
            let _ = dt.weekday();
        }
        assert!(DateTime::new(2026, 2, 29, 0, 0, 0).is_none());
        assert!(DateTime::new(2028, 2, 29, 0, 0, 0).is_some());
        assert!(DateTime::new(2026, 13, 1, 0, 0, 0).is_none());
        assert!(DateTime::new(2026, 1, 1, 24, 0, 0).is_none());
    }
}
