//! Time zones: TZif files (RFC 8536, versions 1 to 4) and POSIX TZ strings.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::civil::{self, DateTime, SECS_PER_DAY};
use crate::posix::PosixTz;

/// Where the host's zone is configured, relative to the root file system.
pub const LOCALTIME: &str = "etc/localtime";
/// Where the IANA zone files are installed.
pub const ZONEINFO_DIR: &str = "/usr/share/zoneinfo";

/// UTC offsets beyond RFC 8536's recommended range (-25:59:59 to +25:59:59)
/// are refused, which bounds every search in local time.
const MAX_OFFSET: i32 = 93_599;
const MIN_OFFSET: i32 = -89_999;

/// Symbolic links followed when resolving `/etc/localtime` under a root.
const MAX_LINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum TzError {
    #[error("invalid TZif data: {0}")]
    Tzif(String),
    #[error("invalid POSIX TZ string {tz:?}: {reason}")]
    PosixTz { tz: String, reason: String },
    #[error(
        "invalid time zone name {name:?}: {reason} (expected an IANA name such as \"Europe/Berlin\")"
    )]
    Name { name: String, reason: String },
    #[error("reading time zone {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("time zone {}: too many levels of symbolic links", path.display())]
    Links { path: PathBuf },
    #[error("time zone {}: {source}", path.display())]
    File { path: PathBuf, source: Box<TzError> },
}

/// One kind of local time: its offset east of UTC, DST flag and abbreviation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalType {
    pub(crate) offset: i32,
    pub(crate) is_dst: bool,
    pub(crate) abbr: String,
}

/// An instant as seen in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    pub datetime: DateTime,
    /// Seconds east of UTC.
    pub offset: i32,
    pub is_dst: bool,
    /// Such as `CEST`, or `+0530` when the zone has no letters for it.
    pub abbreviation: String,
}

impl fmt::Display for LocalTime {
    /// `2026-03-29 03:00:00 CEST (+02:00)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let o = self.offset.unsigned_abs();
        write!(
            f,
            "{} {} ({sign}{:02}:{:02}",
            self.datetime,
            self.abbreviation,
            o / 3600,
            o / 60 % 60
        )?;
        if !o.is_multiple_of(60) {
            write!(f, ":{:02}", o % 60)?;
        }
        f.write_str(")")
    }
}

/// The instants (unix seconds) at which a zone's clocks show a local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalResult {
    /// The usual case: exactly one.
    Single(i64),
    /// The clocks were set back and show this time twice (fall back).
    Ambiguous { earlier: i64, later: i64 },
    /// The clocks jumped over this time (spring forward); `transition` is the
    /// instant of the jump, the first valid instant after the gap.
    Gap { transition: i64 },
}

impl LocalResult {
    /// The first instant the clocks show this time, or the end of the gap.
    pub fn earliest(self) -> i64 {
        match self {
            LocalResult::Single(t) | LocalResult::Ambiguous { earlier: t, .. } => t,
            LocalResult::Gap { transition } => transition,
        }
    }

    /// The last instant the clocks show this time, or the end of the gap.
    pub fn latest(self) -> i64 {
        match self {
            LocalResult::Single(t) | LocalResult::Ambiguous { later: t, .. } => t,
            LocalResult::Gap { transition } => transition,
        }
    }
}

/// A change of UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Unix seconds of the first instant with the new offset.
    pub at: i64,
    pub offset_before: i32,
    pub offset_after: i32,
}

/// A time zone: UTC, a TZif file, or a POSIX TZ string.
///
/// Instants are unix seconds (`i64`, leap seconds not counted); every method
/// accepts any `i64` and none panics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZone {
    name: Option<String>,
    /// Strictly ascending.
    transitions: Vec<i64>,
    /// Index into `types` of the local time from each transition on.
    transition_types: Vec<usize>,
    /// Never empty; `types[0]` applies before the first transition.
    types: Vec<LocalType>,
    /// Applies from the last transition on (or always, without transitions).
    footer: Option<PosixTz>,
    /// The footer's changes of offset `(instant, is_dst after)` from
    /// [`CACHE_FROM`] (or the last transition) to [`CACHE_UNTIL`], so that
    /// the years that matter are a binary search; computed on construction.
    footer_changes: Vec<(i64, bool)>,
    /// Where `footer_changes` starts: every footer change after this instant
    /// and before the last entry is listed.
    footer_changes_from: i64,
}

/// 1900-01-01T00:00:00Z and 2200-01-01T00:00:00Z.
const CACHE_FROM: i64 = -2_208_988_800;
const CACHE_UNTIL: i64 = 7_258_118_400;

impl TimeZone {
    /// Coordinated Universal Time.
    pub fn utc() -> TimeZone {
        TimeZone {
            name: Some("UTC".into()),
            transitions: Vec::new(),
            transition_types: Vec::new(),
            types: vec![LocalType {
                offset: 0,
                is_dst: false,
                abbr: "UTC".into(),
            }],
            footer: None,
            footer_changes: Vec::new(),
            footer_changes_from: 0,
        }
    }

    /// A zone from a POSIX TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3`
    /// (no leading `:`; offsets are west of UTC, as in POSIX).
    pub fn from_posix_tz(tz: &str) -> Result<TimeZone, TzError> {
        let posix = PosixTz::parse(tz).map_err(|reason| TzError::PosixTz {
            tz: tz.into(),
            reason,
        })?;
        Ok(TimeZone::new(
            Vec::new(),
            Vec::new(),
            vec![posix.std.clone()],
            Some(posix),
        ))
    }

    fn new(
        transitions: Vec<i64>,
        transition_types: Vec<usize>,
        types: Vec<LocalType>,
        footer: Option<PosixTz>,
    ) -> TimeZone {
        let from = transitions
            .last()
            .map_or(CACHE_FROM, |&l| l.max(CACHE_FROM));
        let footer_changes = match &footer {
            Some(f) if f.dst.is_some() => {
                std::iter::successors(f.next_change(from), |&(at, _)| f.next_change(at))
                    .take_while(|&(at, _)| at < CACHE_UNTIL)
                    .map(|(at, offset)| (at, offset != f.std.offset))
                    .collect()
            }
            _ => Vec::new(),
        };
        TimeZone {
            name: None,
            transitions,
            transition_types,
            types,
            footer,
            footer_changes,
            footer_changes_from: from,
        }
    }

    fn footer_type_at<'a>(&self, f: &'a PosixTz, t: i64) -> &'a LocalType {
        let c = &self.footer_changes;
        if let (Some(first), Some(last), Some(dst)) = (c.first(), c.last(), &f.dst)
            && first.0 <= t
            && t < last.0
        {
            let i = c.partition_point(|e| e.0 <= t);
            return if c[i - 1].1 { &dst.ty } else { &f.std };
        }
        f.local_type_at(t)
    }

    fn footer_next_change(&self, f: &PosixTz, t: i64) -> Option<(i64, i32)> {
        let c = &self.footer_changes;
        if let (Some(last), Some(dst)) = (c.last(), &f.dst)
            && self.footer_changes_from <= t
            && t < last.0
        {
            let (at, is_dst) = c[c.partition_point(|e| e.0 <= t)];
            return Some((at, if is_dst { dst.ty.offset } else { f.std.offset }));
        }
        f.next_change(t)
    }

    /// Parses the contents of a TZif file (RFC 8536). The 64-bit data of
    /// version 2 and later files is used when present, and the footer's TZ
    /// string for instants from the last transition on. Leap-second records
    /// are skipped: the `right/` zones count leap seconds in their instants
    /// and come out up to 27 seconds off.
    pub fn from_tzif(bytes: &[u8]) -> Result<TimeZone, TzError> {
        tzif::parse(bytes).map_err(TzError::Tzif)
    }

    /// The host's zone: `<root>/etc/localtime`, a TZif file or a symbolic
    /// link to one. Absolute link targets are resolved under `root`, so
    /// `root` may be an image being built as well as `/`.
    ///
    /// When there is no `<root>/etc/localtime` at all the host runs on UTC
    /// (as glibc and systemd assume) and so does this. A link that leads
    /// nowhere, or a file that is no TZif file, is an error: guessing UTC
    /// there would silently move every window by hours.
    ///
    /// The zone's [`name`](Self::name) is taken from the link target's part
    /// after `zoneinfo/`, when there is one.
    pub fn load(root: &Path) -> Result<TimeZone, TzError> {
        let first = root.join(LOCALTIME);
        let mut path = first.clone();
        let mut name = None;
        for hop in 0.. {
            if hop > MAX_LINKS {
                return Err(TzError::Links { path: first });
            }
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if hop == 0 && e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(TimeZone::utc());
                }
                Err(source) => return Err(TzError::Io { path, source }),
            };
            if !meta.file_type().is_symlink() {
                break;
            }
            let target = std::fs::read_link(&path).map_err(|source| TzError::Io {
                path: path.clone(),
                source,
            })?;
            if hop == 0 {
                name = zone_name_of(&target);
            }
            path = match target.strip_prefix("/") {
                Ok(rest) => root.join(rest),
                Err(_) => path
                    .parent()
                    .map_or_else(|| target.clone(), |dir| dir.join(&target)),
            };
        }
        let mut tz = Self::read(&path)?;
        tz.name = name;
        Ok(tz)
    }

    /// An IANA zone such as `Europe/Berlin` from `zoneinfo_dir` (normally
    /// [`ZONEINFO_DIR`]). The name must be relative, made of letters, digits
    /// and `_ + - .`, with no empty, `.` or `..` component.
    pub fn named(zoneinfo_dir: &Path, name: &str) -> Result<TimeZone, TzError> {
        let bad = |reason: &str| TzError::Name {
            name: name.into(),
            reason: reason.into(),
        };
        if name.is_empty() || name.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        if name.starts_with('/') {
            return Err(bad("must not be an absolute path"));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+-.".contains(*c)))
        {
            return Err(bad(&format!("character {c:?} is not allowed")));
        }
        if name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad("empty, \".\" and \"..\" components are not allowed"));
        }
        let mut tz = Self::read(&zoneinfo_dir.join(name))?;
        tz.name = Some(name.into());
        Ok(tz)
    }

    fn read(path: &Path) -> Result<TimeZone, TzError> {
        let bytes = std::fs::read(path).map_err(|source| TzError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_tzif(&bytes).map_err(|e| TzError::File {
            path: path.into(),
            source: Box::new(e),
        })
    }

    /// The IANA name, when known (`UTC` for [`TimeZone::utc`]).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn local_type_at(&self, t: i64) -> &LocalType {
        let n = self.transitions.partition_point(|&x| x <= t);
        if n == self.transitions.len()
            && let Some(footer) = &self.footer
        {
            return self.footer_type_at(footer, t);
        }
        match n.checked_sub(1) {
            Some(i) => &self.types[self.transition_types[i]],
            None => &self.types[0],
        }
    }

    /// Seconds east of UTC at unix instant `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        self.local_type_at(t).offset
    }

    /// The local date, time, offset and abbreviation at unix instant `t`.
    pub fn to_local(&self, t: i64) -> LocalTime {
        let ty = self.local_type_at(t);
        LocalTime {
            datetime: DateTime::from_unix(t.saturating_add(i64::from(ty.offset))),
            offset: ty.offset,
            is_dst: ty.is_dst,
            abbreviation: ty.abbr.clone(),
        }
    }

    /// The next change of UTC offset strictly after `t` (changes of only the
    /// abbreviation or DST flag are skipped), or `None` when the offset
    /// never changes again.
    pub fn next_transition(&self, t: i64) -> Option<Transition> {
        let before = self.offset_at(t);
        let found = self.next_change(t, before);
        found.map(|(at, offset_after)| Transition {
            at,
            offset_before: self.offset_at(at.saturating_sub(1)),
            offset_after,
        })
    }

    fn next_change(&self, t: i64, current: i32) -> Option<(i64, i32)> {
        let n = self.transitions.partition_point(|&x| x <= t);
        for i in n..self.transitions.len() {
            let offset = self.types[self.transition_types[i]].offset;
            // From the last transition on, the footer decides.
            let offset = match (&self.footer, i + 1 == self.transitions.len()) {
                (Some(f), true) => self.footer_type_at(f, self.transitions[i]).offset,
                _ => offset,
            };
            if offset != current {
                return Some((self.transitions[i], offset));
            }
        }
        let footer = self.footer.as_ref()?;
        let from = self.transitions.last().map_or(t, |&last| t.max(last));
        self.footer_next_change(footer, from)
    }

    /// The instants at which this zone's clocks show `local`.
    pub fn from_local(&self, local: &DateTime) -> LocalResult {
        self.resolve(local.day_number(), local.second_of_day())
    }

    /// Like [`from_local`](Self::from_local), for local seconds
    /// `day * 86400 + secs`.
    pub(crate) fn resolve(&self, day: i64, secs: i64) -> LocalResult {
        let l = civil::at(day, secs);
        // Any answer u has |u - l| <= 26 h: look at every offset in effect
        // within two days of l.
        let from = l.saturating_sub(2 * SECS_PER_DAY);
        let to = l.saturating_add(2 * SECS_PER_DAY);
        let mut seg_start = from;
        let mut offset = self.offset_at(from);
        let mut found: (Option<i64>, Option<i64>) = (None, None);
        let mut gap = None;
        loop {
            let next = self.next_change(seg_start, offset).filter(|n| n.0 <= to);
            let seg_end = next.map_or(i64::MAX, |n| n.0);
            let u = l.saturating_sub(i64::from(offset));
            if seg_start <= u && u < seg_end {
                found.0.get_or_insert(u);
                found.1 = Some(u);
            }
            let Some((at, new)) = next else { break };
            // Clocks jump from at-1+offset to at+new: is l skipped?
            if new > offset
                && at.saturating_add(i64::from(offset)) <= l
                && l < at.saturating_add(i64::from(new))
            {
                gap.get_or_insert(at);
            }
            seg_start = at;
            offset = new;
        }
        match (found.0, found.1, gap) {
            (Some(a), Some(b), _) if a != b => LocalResult::Ambiguous {
                earlier: a,
                later: b,
            },
            (Some(a), _, _) => LocalResult::Single(a),
            (None, _, Some(transition)) => LocalResult::Gap { transition },
            // Unreachable for offsets within +-26 h; keep a sane answer.
            (None, _, None) => LocalResult::Single(l.saturating_sub(i64::from(offset))),
        }
    }
}

/// `Europe/Berlin` from `../usr/share/zoneinfo/Europe/Berlin`.
fn zone_name_of(target: &Path) -> Option<String> {
    let s = target.to_str()?;
    let (_, name) = s.rsplit_once("zoneinfo/")?;
    let name = name.strip_prefix("posix/").unwrap_or(name);
    (!name.is_empty()).then(|| name.to_owned())
}

mod tzif {
    use super::{LocalType, MAX_OFFSET, MIN_OFFSET, TimeZone};
    use crate::posix::PosixTz;

    struct Header {
        version: u8,
        isutcnt: usize,
        isstdcnt: usize,
        leapcnt: usize,
        timecnt: usize,
        typecnt: usize,
        charcnt: usize,
    }

    impl Header {
        fn read(b: &[u8]) -> Result<Header, String> {
            if b.len() < 44 {
                return Err("truncated header".into());
            }
            if &b[..4] != b"TZif" {
                return Err("not a TZif file (no \"TZif\" magic)".into());
            }
            let version = match b[4] {
                0 => 1,
                v @ b'2'..=b'4' => v - b'0',
                v => return Err(format!("unknown version byte {v:#04x}")),
            };
            let count = |i: usize| {
                let n = u32::from_be_bytes([
                    b[20 + 4 * i],
                    b[21 + 4 * i],
                    b[22 + 4 * i],
                    b[23 + 4 * i],
                ]);
                n as usize
            };
            let h = Header {
                version,
                isutcnt: count(0),
                isstdcnt: count(1),
                leapcnt: count(2),
                timecnt: count(3),
                typecnt: count(4),
                charcnt: count(5),
            };
            if h.typecnt == 0 || h.charcnt == 0 {
                return Err("typecnt and charcnt must not be zero".into());
            }
            if (h.isutcnt != 0 && h.isutcnt != h.typecnt)
                || (h.isstdcnt != 0 && h.isstdcnt != h.typecnt)
            {
                return Err("isutcnt and isstdcnt must be zero or typecnt".into());
            }
            Ok(h)
        }

        /// Bytes of the data block after this header, with `time` bytes per
        /// transition time.
        fn data_len(&self, time: usize) -> Option<usize> {
            let parts = [
                self.timecnt.checked_mul(time)?,
                self.timecnt,
                self.typecnt.checked_mul(6)?,
                self.charcnt,
                self.leapcnt.checked_mul(time + 4)?,
                self.isstdcnt,
                self.isutcnt,
            ];
            parts.iter().try_fold(0usize, |a, &p| a.checked_add(p))
        }
    }

    pub(super) fn parse(b: &[u8]) -> Result<TimeZone, String> {
        let v1 = Header::read(b)?;
        let v1_len = v1.data_len(4).ok_or("counts overflow")?;
        let v1_end = 44usize.checked_add(v1_len).ok_or("counts overflow")?;
        if v1.version == 1 {
            let data = b.get(44..v1_end).ok_or("truncated version 1 data")?;
            return block(&v1, data, 4, None);
        }
        let rest = b.get(v1_end..).ok_or("truncated version 1 data")?;
        let h = Header::read(rest)?;
        let len = h.data_len(8).ok_or("counts overflow")?;
        let end = len.checked_add(44).ok_or("counts overflow")?;
        let data = rest.get(44..end).ok_or("truncated version 2+ data")?;
        let footer = &rest[end..];
        let footer = footer
            .strip_prefix(b"\n")
            .and_then(|f| f.iter().position(|&c| c == b'\n').map(|end| &f[..end]))
            .ok_or("missing footer (a TZ string between newlines)")?;
        let footer = std::str::from_utf8(footer).map_err(|_| "footer is not UTF-8")?;
        let footer = if footer.is_empty() {
            None
        } else {
            Some(PosixTz::parse(footer).map_err(|e| format!("footer {footer:?}: {e}"))?)
        };
        block(&h, data, 8, footer)
    }

    fn block(
        h: &Header,
        data: &[u8],
        time: usize,
        footer: Option<PosixTz>,
    ) -> Result<TimeZone, String> {
        let (times, rest) = data.split_at(h.timecnt * time);
        let (idxs, rest) = rest.split_at(h.timecnt);
        let (ttinfos, rest) = rest.split_at(h.typecnt * 6);
        let chars = &rest[..h.charcnt];
        let transitions: Vec<i64> = times
            .chunks_exact(time)
            .map(|c| match *c {
                [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
                _ => 0,
            })
            .collect();
        if transitions.windows(2).any(|w| w[0] >= w[1]) {
            return Err("transition times are not ascending".into());
        }
        let transition_types: Vec<usize> = idxs.iter().map(|&i| usize::from(i)).collect();
        if transition_types.iter().any(|&i| i >= h.typecnt) {
            return Err("transition names a local time type that does not exist".into());
        }
        let mut types = Vec::with_capacity(h.typecnt);
        for t in ttinfos.chunks_exact(6) {
            let offset = i32::from_be_bytes([t[0], t[1], t[2], t[3]]);
            if !(MIN_OFFSET..=MAX_OFFSET).contains(&offset) {
                return Err(format!("UT offset {offset} s is out of range"));
            }
            let is_dst = match t[4] {
                0 => false,
                1 => true,
                v => return Err(format!("isdst byte {v} is neither 0 nor 1")),
            };
            let start = usize::from(t[5]);
            let abbr = chars
                .get(start..)
                .and_then(|s| s.iter().position(|&c| c == 0).map(|end| &s[..end]))
                .ok_or("time zone abbreviation outside the designations")?;
            types.push(LocalType {
                offset,
                is_dst,
                abbr: String::from_utf8_lossy(abbr).into_owned(),
            });
        }
        if let Some(f) = &footer {
            let dst = f.dst.as_ref().map(|d| d.ty.offset);
            for o in [Some(f.std.offset), dst].into_iter().flatten() {
                if !(MIN_OFFSET..=MAX_OFFSET).contains(&o) {
                    return Err(format!("footer offset {o} s is out of range"));
                }
            }
        }
        Ok(TimeZone::new(transitions, transition_types, types, footer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precomputed footer changes agree with evaluating the rule.
    #[test]
    fn footer_cache_agrees_with_the_rule() {
        for tz in [
            "CET-1CEST,M3.5.0,M10.5.0/3",
            "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
            "<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
            "EST5EDT,0/0,J365/25",
            "IST-5:30",
        ] {
            let zone = TimeZone::from_posix_tz(tz).unwrap();
            let f = zone.footer.as_ref().unwrap();
            if f.dst.is_some() && !tz.contains("J365/25") {
                assert!(zone.footer_changes.len() > 500, "{tz}");
            }
            for t in
                (CACHE_FROM - 86_400 * 400..CACHE_UNTIL + 86_400 * 400).step_by(86_400 * 5 + 3_607)
            {
                assert_eq!(zone.local_type_at(t), f.local_type_at(t), "{tz} at {t}");
                assert_eq!(
                    zone.footer_next_change(f, t),
                    f.next_change(t),
                    "{tz} at {t}"
                );
            }
            for &(at, _) in &zone.footer_changes {
                for t in [at - 1, at, at + 1] {
                    assert_eq!(zone.local_type_at(t), f.local_type_at(t), "{tz} at {t}");
                    assert_eq!(
                        zone.footer_next_change(f, t),
                        f.next_change(t),
                        "{tz} at {t}"
                    );
                }
            }
        }
    }
}
