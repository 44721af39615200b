//! Tests of the whole crate: real TZif files, synthetic ones, local time
//! resolution, the window grammar and the window schedule around DST.

use std::path::Path;

use crate::*;

const ZONEINFO: &str = "/usr/share/zoneinfo";

/// A zone from this machine's tzdata; the tests need the package installed.
fn zone(name: &str) -> TimeZone {
    TimeZone::named(Path::new(ZONEINFO), name)
        .unwrap_or_else(|e| panic!("{e} (is the tzdata package installed?)"))
}

/// Unix seconds of a UTC date and time.
fn utc(y: i64, mo: u8, d: u8, h: u8, mi: u8) -> i64 {
    DateTime::new(y, mo, d, h, mi, 0).unwrap().to_unix()
}

fn local(y: i64, mo: u8, d: u8, h: u8, mi: u8) -> DateTime {
    DateTime::new(y, mo, d, h, mi, 0).unwrap()
}

/// Berlin's rules since 1996, as in its TZif footer.
const BERLIN_TZ: &str = "CET-1CEST,M3.5.0,M10.5.0/3";
const NEW_YORK_TZ: &str = "EST5EDT,M3.2.0,M11.1.0";

// ---------------------------------------------------------------- TZif files

/// `(zone, unix seconds, offset, abbreviation)`, computed once with
/// `TZ=zone date -d @t '+%::z %Z'` (tzdata 2025b) at transitions found by
/// `zdump -v`. The fat files' tables end in 2037: later rows exercise the
/// footer's POSIX TZ rule.
#[rustfmt::skip]
const OFFSETS: &[(&str, i64, i32, &str)] = &[
        ("Europe/Berlin", -5364662400, 3208, "LMT"), // 1800-01-01 00:53:28
        ("Europe/Berlin", -2422054409, 3208, "LMT"), // 1893-03-31 23:59:59
        ("Europe/Berlin", -2422054408, 3600, "CET"), // 1893-04-01 00:06:32
        ("Europe/Berlin", -781052401, 3600, "CET"), // 1945-04-02 01:59:59
        ("Europe/Berlin", -781052400, 7200, "CEST"), // 1945-04-02 03:00:00
        ("Europe/Berlin", -775872000, 10800, "CEMT"), // 1945-06-01 03:00:00
        ("Europe/Berlin", -717631201, 3600, "CET"), // 1947-04-06 02:59:59
        ("Europe/Berlin", -717631200, 7200, "CEST"), // 1947-04-06 04:00:00
        ("Europe/Berlin", 0, 3600, "CET"), // 1970-01-01 01:00:00
        ("Europe/Berlin", 1774745999, 3600, "CET"), // 2026-03-29 01:59:59
        ("Europe/Berlin", 1774746000, 7200, "CEST"), // 2026-03-29 03:00:00
        ("Europe/Berlin", 1782907200, 7200, "CEST"), // 2026-07-01 14:00:00
        ("Europe/Berlin", 1792889999, 7200, "CEST"), // 2026-10-25 02:59:59
        ("Europe/Berlin", 1792890000, 3600, "CET"), // 2026-10-25 02:00:00
        ("Europe/Berlin", 1798135200, 3600, "CET"), // 2026-12-24 19:00:00
        ("Europe/Berlin", 2121901199, 3600, "CET"), // 2037-03-29 01:59:59
        ("Europe/Berlin", 2121901200, 7200, "CEST"), // 2037-03-29 03:00:00
        ("Europe/Berlin", 2153350799, 3600, "CET"), // 2038-03-28 01:59:59
        ("Europe/Berlin", 2153350800, 7200, "CEST"), // 2038-03-28 03:00:00
        ("Europe/Berlin", 2216249999, 3600, "CET"), // 2040-03-25 01:59:59
        ("Europe/Berlin", 2216250000, 7200, "CEST"), // 2040-03-25 03:00:00
        ("Europe/Berlin", 4103654400, 3600, "CET"), // 2100-01-15 01:00:00
        ("Europe/Berlin", 4119292800, 7200, "CEST"), // 2100-07-15 02:00:00
        ("Europe/Berlin", 16738272000, 7200, "CEST"), // 2500-06-01 02:00:00
        ("Europe/Berlin", 32503680000, 3600, "CET"), // 3000-01-01 01:00:00
        ("Europe/Berlin", 253402300799, 3600, "CET"), // +10000-01-01 00:59:59
        ("America/New_York", -5364662400, -17762, "LMT"), // 1799-12-31 19:03:58
        ("America/New_York", -2717650801, -17762, "LMT"), // 1883-11-18 12:03:57
        ("America/New_York", -2717650800, -18000, "EST"), // 1883-11-18 12:00:00
        ("America/New_York", -1633280401, -18000, "EST"), // 1918-03-31 01:59:59
        ("America/New_York", -1633280400, -14400, "EDT"), // 1918-03-31 03:00:00
        ("America/New_York", -775872000, -14400, "EWT"), // 1945-05-31 20:00:00
        ("America/New_York", -769395601, -14400, "EWT"), // 1945-08-14 18:59:59
        ("America/New_York", -769395600, -14400, "EPT"), // 1945-08-14 19:00:00
        ("America/New_York", 0, -18000, "EST"), // 1969-12-31 19:00:00
        ("America/New_York", 1173596399, -18000, "EST"), // 2007-03-11 01:59:59
        ("America/New_York", 1173596400, -14400, "EDT"), // 2007-03-11 03:00:00
        ("America/New_York", 1772953199, -18000, "EST"), // 2026-03-08 01:59:59
        ("America/New_York", 1772953200, -14400, "EDT"), // 2026-03-08 03:00:00
        ("America/New_York", 1782907200, -14400, "EDT"), // 2026-07-01 08:00:00
        ("America/New_York", 1793512799, -14400, "EDT"), // 2026-11-01 01:59:59
        ("America/New_York", 1793512800, -18000, "EST"), // 2026-11-01 01:00:00
        ("America/New_York", 1798135200, -18000, "EST"), // 2026-12-24 13:00:00
        ("America/New_York", 2120108399, -18000, "EST"), // 2037-03-08 01:59:59
        ("America/New_York", 2120108400, -14400, "EDT"), // 2037-03-08 03:00:00
        ("America/New_York", 2215061999, -18000, "EST"), // 2040-03-11 01:59:59
        ("America/New_York", 2215062000, -14400, "EDT"), // 2040-03-11 03:00:00
        ("America/New_York", 4103654400, -18000, "EST"), // 2100-01-14 19:00:00
        ("America/New_York", 4119292800, -14400, "EDT"), // 2100-07-14 20:00:00
        ("America/New_York", 16738272000, -14400, "EDT"), // 2500-05-31 20:00:00
        ("America/New_York", 32503680000, -18000, "EST"), // 2999-12-31 19:00:00
        ("America/New_York", 253402300799, -18000, "EST"), // 9999-12-31 18:59:59
        ("Australia/Lord_Howe", -5364662400, 38180, "LMT"), // 1800-01-01 10:36:20
        ("Australia/Lord_Howe", -775872000, 36000, "AEST"), // 1945-06-01 10:00:00
        ("Australia/Lord_Howe", 0, 36000, "AEST"), // 1970-01-01 10:00:00
        ("Australia/Lord_Howe", 352216799, 36000, "AEST"), // 1981-02-28 23:59:59
        ("Australia/Lord_Howe", 352216800, 37800, "+1030"), // 1981-03-01 00:30:00
        ("Australia/Lord_Howe", 478621799, 41400, "+1130"), // 1985-03-03 01:59:59
        ("Australia/Lord_Howe", 478621800, 37800, "+1030"), // 1985-03-03 01:00:00
        ("Australia/Lord_Howe", 1775314799, 39600, "+11"), // 2026-04-05 01:59:59
        ("Australia/Lord_Howe", 1775314800, 37800, "+1030"), // 2026-04-05 01:30:00
        ("Australia/Lord_Howe", 1782907200, 37800, "+1030"), // 2026-07-01 22:30:00
        ("Australia/Lord_Howe", 1791041399, 37800, "+1030"), // 2026-10-04 01:59:59
        ("Australia/Lord_Howe", 1791041400, 39600, "+11"), // 2026-10-04 02:30:00
        ("Australia/Lord_Howe", 1798135200, 39600, "+11"), // 2026-12-25 05:00:00
        ("Australia/Lord_Howe", 2122469999, 39600, "+11"), // 2037-04-05 01:59:59
        ("Australia/Lord_Howe", 2122470000, 37800, "+1030"), // 2037-04-05 01:30:00
        ("Australia/Lord_Howe", 2216818799, 39600, "+11"), // 2040-04-01 01:59:59
        ("Australia/Lord_Howe", 2216818800, 37800, "+1030"), // 2040-04-01 01:30:00
        ("Australia/Lord_Howe", 4103654400, 39600, "+11"), // 2100-01-15 11:00:00
        ("Australia/Lord_Howe", 4119292800, 37800, "+1030"), // 2100-07-15 10:30:00
        ("Australia/Lord_Howe", 16738272000, 37800, "+1030"), // 2500-06-01 10:30:00
        ("Australia/Lord_Howe", 32503680000, 39600, "+11"), // 3000-01-01 11:00:00
        ("Australia/Lord_Howe", 253402300799, 39600, "+11"), // +10000-01-01 10:59:59
        ("Asia/Kolkata", -5364662400, 21208, "LMT"), // 1800-01-01 05:53:28
        ("Asia/Kolkata", -3645237209, 21208, "LMT"), // 1854-06-27 23:59:59
        ("Asia/Kolkata", -3645237208, 21200, "HMT"), // 1854-06-27 23:59:52
        ("Asia/Kolkata", -891581401, 19800, "IST"), // 1941-09-30 23:59:59
        ("Asia/Kolkata", -891581400, 23400, "+0630"), // 1941-10-01 01:00:00
        ("Asia/Kolkata", -775872000, 23400, "+0630"), // 1945-06-01 06:30:00
        ("Asia/Kolkata", -764145001, 23400, "+0630"), // 1945-10-14 23:59:59
        ("Asia/Kolkata", -764145000, 19800, "IST"), // 1945-10-14 23:00:00
        ("Asia/Kolkata", 0, 19800, "IST"), // 1970-01-01 05:30:00
        ("Asia/Kolkata", 1782907200, 19800, "IST"), // 2026-07-01 17:30:00
        ("Asia/Kolkata", 1798135200, 19800, "IST"), // 2026-12-24 23:30:00
        ("Asia/Kolkata", 4103654400, 19800, "IST"), // 2100-01-15 05:30:00
        ("Asia/Kolkata", 4119292800, 19800, "IST"), // 2100-07-15 05:30:00
        ("Asia/Kolkata", 16738272000, 19800, "IST"), // 2500-06-01 05:30:00
        ("Asia/Kolkata", 32503680000, 19800, "IST"), // 3000-01-01 05:30:00
        ("Asia/Kolkata", 253402300799, 19800, "IST"), // +10000-01-01 05:29:59
        ("UTC", -5364662400, 0, "UTC"), // 1800-01-01 00:00:00
        ("UTC", -775872000, 0, "UTC"), // 1945-06-01 00:00:00
        ("UTC", 0, 0, "UTC"), // 1970-01-01 00:00:00
        ("UTC", 1782907200, 0, "UTC"), // 2026-07-01 12:00:00
        ("UTC", 1798135200, 0, "UTC"), // 2026-12-24 18:00:00
        ("UTC", 4103654400, 0, "UTC"), // 2100-01-15 00:00:00
        ("UTC", 4119292800, 0, "UTC"), // 2100-07-15 00:00:00
        ("UTC", 16738272000, 0, "UTC"), // 2500-06-01 00:00:00
        ("UTC", 32503680000, 0, "UTC"), // 3000-01-01 00:00:00
        ("UTC", 253402300799, 0, "UTC"), // 9999-12-31 23:59:59
];

#[test]
fn offsets_of_real_zones() {
    for &(name, t, offset, abbr) in OFFSETS {
        let tz = zone(name);
        let lt = tz.to_local(t);
        assert_eq!(
            (lt.offset, lt.abbreviation.as_str()),
            (offset, abbr),
            "{name} at {t}"
        );
        assert_eq!(tz.offset_at(t), offset);
        assert_eq!(
            lt.datetime.to_unix(),
            t + i64::from(offset),
            "{name} at {t}: local time"
        );
    }
}

#[test]
fn local_time_display_and_dst_flag() {
    let berlin = zone("Europe/Berlin");
    let lt = berlin.to_local(utc(2026, 3, 29, 1, 0));
    assert_eq!(lt.to_string(), "2026-03-29 03:00:00 CEST (+02:00)");
    assert!(lt.is_dst);
    assert!(!berlin.to_local(utc(2026, 10, 25, 1, 0)).is_dst);
    let lmt = berlin.to_local(-5_364_662_400);
    assert_eq!(lmt.to_string(), "1800-01-01 00:53:28 LMT (+00:53:28)");
    let ny = zone("America/New_York");
    assert_eq!(
        ny.to_local(utc(2026, 11, 1, 6, 0)).to_string(),
        "2026-11-01 01:00:00 EST (-05:00)"
    );
    let kolkata = zone("Asia/Kolkata");
    assert_eq!(
        kolkata.to_local(0).to_string(),
        "1970-01-01 05:30:00 IST (+05:30)"
    );
    assert_eq!(
        TimeZone::utc().to_local(0).to_string(),
        "1970-01-01 00:00:00 UTC (+00:00)"
    );
}

#[test]
fn next_transition_walks_table_then_footer() {
    let berlin = zone("Europe/Berlin");
    let tr = berlin.next_transition(utc(2026, 1, 1, 0, 0)).unwrap();
    assert_eq!(
        tr,
        Transition {
            at: utc(2026, 3, 29, 1, 0),
            offset_before: 3600,
            offset_after: 7200
        }
    );
    let tr = berlin.next_transition(tr.at).unwrap();
    assert_eq!((tr.at, tr.offset_after), (utc(2026, 10, 25, 1, 0), 3600));
    // Past the table (2037), from the footer: zdump says 2400-03-26 01:00 UT.
    let tr = berlin.next_transition(utc(2400, 1, 1, 0, 0)).unwrap();
    assert_eq!((tr.at, tr.offset_after), (utc(2400, 3, 26, 1, 0), 7200));
    // Lord Howe moves by half an hour.
    let lh = zone("Australia/Lord_Howe");
    let tr = lh.next_transition(utc(2026, 6, 1, 0, 0)).unwrap();
    assert_eq!(
        tr,
        Transition {
            at: 1_791_041_400,
            offset_before: 37_800,
            offset_after: 39_600
        }
    );
    // Zones without DST never change again.
    assert_eq!(zone("Asia/Kolkata").next_transition(0), None);
    assert_eq!(zone("UTC").next_transition(i64::MIN), None);
    assert_eq!(TimeZone::utc().next_transition(0), None);
}

#[test]
fn v1_data_of_a_real_file_alone() {
    // The 32-bit block of a fat file, marked as version 1, is a valid file
    // of its own; it agrees with the 64-bit data from 1901 to 2037.
    let bytes = std::fs::read(Path::new(ZONEINFO).join("Europe/Berlin")).unwrap();
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let (isut, isstd, leap, time, typ, chr) = (be(20), be(24), be(28), be(32), be(36), be(40));
    let v1_len = 44 + time * 5 + typ * 6 + chr + leap * 8 + isstd + isut;
    assert!(time > 0, "a fat TZif file was expected");
    let mut v1 = bytes[..v1_len].to_vec();
    v1[4] = 0;
    let old = TimeZone::from_tzif(&v1).unwrap();
    let new = TimeZone::from_tzif(&bytes).unwrap();
    for &(name, t, offset, _) in OFFSETS {
        if name == "Europe/Berlin" && (-(1 << 31)..1 << 31).contains(&t) {
            assert_eq!(old.offset_at(t), offset, "{t}");
        }
    }
    for t in (-2_000_000_000..2_100_000_000).step_by(86_400 * 13 + 3599) {
        assert_eq!(old.offset_at(t), new.offset_at(t), "{t}");
    }
}

#[test]
fn truncated_or_corrupt_files_are_errors_not_panics() {
    for name in ["Europe/Berlin", "Australia/Lord_Howe", "UTC"] {
        let bytes = std::fs::read(Path::new(ZONEINFO).join(name)).unwrap();
        TimeZone::from_tzif(&bytes).unwrap();
        for n in 0..bytes.len() {
            assert!(
                TimeZone::from_tzif(&bytes[..n]).is_err(),
                "{name} cut at {n}"
            );
        }
        // Flip bytes all over the file: any outcome but a panic.
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0xa5;
            if let Ok(tz) = TimeZone::from_tzif(&b) {
                for t in [i64::MIN, -1 << 40, 0, 1 << 31, 1 << 40, i64::MAX] {
                    let _ = tz.to_local(t);
                    let _ = tz.next_transition(t);
                    let _ = tz.from_local(&DateTime::from_unix(t));
                }
            }
        }
    }
}

/// Builds a TZif file: `(transition, type index)` pairs and `(offset,
/// is_dst, abbreviation)` types; version 0 for a v1-only file.
fn tzif(version: u8, trans: &[(i64, u8)], types: &[(i32, bool, &str)], footer: &str) -> Vec<u8> {
    let mut chars = Vec::new();
    let mut ttinfo = Vec::new();
    for (off, dst, abbr) in types {
        ttinfo.extend_from_slice(&off.to_be_bytes());
        ttinfo.push(u8::from(*dst));
        ttinfo.push(chars.len() as u8);
        chars.extend_from_slice(abbr.as_bytes());
        chars.push(0);
    }
    let block = |wide: bool| {
        let mut b = b"TZif".to_vec();
        b.push(version);
        b.extend_from_slice(&[0; 15]);
        for n in [0, 0, 0, trans.len(), types.len(), chars.len()] {
            b.extend_from_slice(&(n as u32).to_be_bytes());
        }
        for (t, _) in trans {
            if wide {
                b.extend_from_slice(&t.to_be_bytes());
            } else {
                b.extend_from_slice(&(*t as i32).to_be_bytes());
            }
        }
        b.extend(trans.iter().map(|(_, i)| *i));
        b.extend_from_slice(&ttinfo);
        b.extend_from_slice(&chars);
        b
    };
    let mut out = block(false);
    if version != 0 {
        out.extend(block(true));
        out.push(b'\n');
        out.extend_from_slice(footer.as_bytes());
        out.push(b'\n');
    }
    out
}

#[test]
fn synthetic_tzif_versions() {
    let types = [(3600, false, "AAA"), (7200, true, "BBB")];
    // Version 1: after the last transition its type stays.
    let v1 = TimeZone::from_tzif(&tzif(0, &[(1000, 1), (2000, 0)], &types, "")).unwrap();
    #[rustfmt::skip]
    let rows = [
        (i64::MIN, 3600),
        (999, 3600),
        (1000, 7200),
        (1999, 7200),
        (2000, 3600),
        (i64::MAX, 3600),
    ];
    for (t, off) in rows {
        assert_eq!(v1.offset_at(t), off, "v1 at {t}");
    }
    // Version 2 uses the 64-bit times (this one is beyond 32 bits) and the
    // footer from the last transition on.
    let far = 5_000_000_000; // 2128-06-11
    let v2 = TimeZone::from_tzif(&tzif(b'2', &[(far, 1)], &types, "XXX-3")).unwrap();
    assert_eq!(v2.offset_at(far - 1), 3600);
    assert_eq!(v2.offset_at(far), 10_800);
    assert_eq!(v2.to_local(far).abbreviation, "XXX");
    // No transitions: the footer rules everything (a slim file).
    let slim = TimeZone::from_tzif(&tzif(b'2', &[], &types, BERLIN_TZ)).unwrap();
    assert_eq!(slim.offset_at(utc(1980, 7, 1, 0, 0)), 7200);
    assert_eq!(slim.offset_at(utc(1980, 1, 1, 0, 0)), 3600);
    // An empty footer: the last type stays.
    let empty = TimeZone::from_tzif(&tzif(b'2', &[(0, 1)], &types, "")).unwrap();
    assert_eq!(empty.offset_at(i64::MAX), 7200);
    // Version 3: negative rule times (America/Nuuk since 2023: DST starts
    // Saturday 22:00 local, the last Sunday of March at -1:00).
    let v3 =
        TimeZone::from_tzif(&tzif(b'3', &[], &types, "<-02>2<-01>,M3.5.0/-1,M10.5.0/0")).unwrap();
    // zdump America/Nuuk: Sun Mar 29 00:59:59 2026 UT = -02, 01:00:00 UT = -01.
    assert_eq!(v3.offset_at(utc(2026, 3, 29, 1, 0) - 1), -7200);
    assert_eq!(v3.offset_at(utc(2026, 3, 29, 1, 0)), -3600);
    assert_eq!(v3.offset_at(utc(2026, 10, 25, 1, 0) - 1), -3600);
    assert_eq!(v3.offset_at(utc(2026, 10, 25, 1, 0)), -7200);
    // Version 3: over-24h times; DST all year.
    let allyear = TimeZone::from_tzif(&tzif(b'3', &[], &types, "EST5EDT,0/0,J365/25")).unwrap();
    for t in [
        utc(2026, 1, 1, 0, 0),
        utc(2026, 12, 31, 23, 59),
        utc(2027, 1, 1, 5, 0),
    ] {
        assert_eq!(allyear.offset_at(t), -14_400);
    }
    assert_eq!(allyear.next_transition(0), None);
    // Version 4 (RFC 9636) reads like version 3.
    assert!(TimeZone::from_tzif(&tzif(b'4', &[], &types, "UTC0")).is_ok());
}

#[test]
fn synthetic_tzif_errors() {
    let types = [(3600, false, "AAA"), (7200, true, "BBB")];
    let good = tzif(b'2', &[(1000, 1)], &types, "AAA-1");
    TimeZone::from_tzif(&good).unwrap();
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("magic", {
            let mut b = good.clone();
            b[0] = b'X';
            b
        }),
        ("version", {
            let mut b = good.clone();
            b[4] = b'9';
            b
        }),
        ("no types", tzif(b'2', &[], &[], "")),
        ("type index", tzif(b'2', &[(1000, 2)], &types, "")),
        ("order", tzif(b'2', &[(2000, 0), (1000, 1)], &types, "")),
        (
            "offset range",
            tzif(b'2', &[], &[(100_000, false, "AAA")], ""),
        ),
        ("footer", tzif(b'2', &[], &types, "nonsense")),
        ("no footer", good[..good.len() - 7].to_vec()),
        ("trailing newline", good[..good.len() - 1].to_vec()),
        ("huge counts", {
            let mut b = good.clone();
            b[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
            b
        }),
    ];
    for (what, bytes) in bad {
        let e = TimeZone::from_tzif(&bytes).expect_err(what);
        assert!(
            e.to_string().starts_with("invalid TZif data"),
            "{what}: {e}"
        );
    }
}

// ------------------------------------------------------- loading and names

#[test]
fn named_zones_validate_the_name() {
    let dir = Path::new(ZONEINFO);
    for good in [
        "Europe/Berlin",
        "UTC",
        "Etc/GMT+5",
        "America/Argentina/Buenos_Aires",
        "America/Port-au-Prince",
    ] {
        let tz = TimeZone::named(dir, good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(tz.name(), Some(good));
    }
    for bad in [
        "",
        "/etc/passwd",
        "../etc/passwd",
        "Europe/../../etc/passwd",
        "Europe//Berlin",
        "Europe/Berlin/",
        "./UTC",
        "Europe/Ber lin",
        "Europe\\Berlin",
        "Europe/Berlin\0",
    ] {
        match TimeZone::named(dir, bad) {
            Err(TzError::Name { name, .. }) => assert_eq!(name, bad),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let e = TimeZone::named(dir, "Nowhere/Land").unwrap_err();
    assert!(
        matches!(e, TzError::Io { .. }) && e.to_string().contains("Nowhere/Land"),
        "{e}"
    );
    let e = TimeZone::named(dir, "Europe").unwrap_err(); // a directory
    assert!(e.to_string().contains("Europe"), "{e}");
    // Not a TZif file: the error names it.
    let e = TimeZone::named(dir, "zone.tab").unwrap_err();
    assert!(
        e.to_string().contains("zone.tab") && e.to_string().contains("TZif"),
        "{e}"
    );
}

#[test]
fn load_reads_etc_localtime_under_a_root() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // No file at all: UTC.
    assert_eq!(TimeZone::load(r).unwrap(), TimeZone::utc());
    std::fs::create_dir_all(r.join("etc")).unwrap();
    assert_eq!(TimeZone::load(r).unwrap(), TimeZone::utc());
    // An absolute link resolves under the root, not on this machine.
    let zi = r.join("usr/share/zoneinfo/Europe");
    std::fs::create_dir_all(&zi).unwrap();
    std::fs::copy(Path::new(ZONEINFO).join("Europe/Berlin"), zi.join("Berlin")).unwrap();
    symlink("/usr/share/zoneinfo/Europe/Berlin", r.join("etc/localtime")).unwrap();
    let tz = TimeZone::load(r).unwrap();
    assert_eq!(tz.name(), Some("Europe/Berlin"));
    assert_eq!(tz.offset_at(utc(2026, 7, 1, 0, 0)), 7200);
    // A relative link, through a second link.
    std::fs::remove_file(r.join("etc/localtime")).unwrap();
    symlink("Europe/Berlin", r.join("usr/share/zoneinfo/CET-link")).unwrap();
    symlink("../usr/share/zoneinfo/CET-link", r.join("etc/localtime")).unwrap();
    let tz = TimeZone::load(r).unwrap();
    assert_eq!(tz.name(), Some("CET-link"));
    assert_eq!(tz.offset_at(utc(2026, 1, 1, 0, 0)), 3600);
    // A plain copy: no name.
    std::fs::remove_file(r.join("etc/localtime")).unwrap();
    std::fs::copy(
        Path::new(ZONEINFO).join("America/New_York"),
        r.join("etc/localtime"),
    )
    .unwrap();
    let tz = TimeZone::load(r).unwrap();
    assert_eq!((tz.name(), tz.offset_at(0)), (None, -18_000));
    // A link to nowhere is an error, not UTC.
    std::fs::remove_file(r.join("etc/localtime")).unwrap();
    symlink("/usr/share/zoneinfo/Mars/Olympus", r.join("etc/localtime")).unwrap();
    let e = TimeZone::load(r).unwrap_err();
    assert!(e.to_string().contains("Mars/Olympus"), "{e}");
    // A loop.
    std::fs::remove_file(r.join("etc/localtime")).unwrap();
    symlink("localtime", r.join("etc/localtime")).unwrap();
    assert!(matches!(TimeZone::load(r), Err(TzError::Links { .. })));
    // Garbage.
    std::fs::remove_file(r.join("etc/localtime")).unwrap();
    std::fs::write(r.join("etc/localtime"), b"TZif but not really").unwrap();
    let e = TimeZone::load(r).unwrap_err();
    assert!(e.to_string().contains("etc/localtime"), "{e}");
    // This machine's own zone loads.
    TimeZone::load(Path::new("/")).unwrap();
}

// ------------------------------------------------------- local to UTC

#[test]
fn from_local_gaps_and_repeats() {
    use LocalResult::*;
    let berlin = zone("Europe/Berlin");
    let berlin_posix = TimeZone::from_posix_tz(BERLIN_TZ).unwrap();
    let ny = zone("America/New_York");
    let lh = zone("Australia/Lord_Howe");
    #[rustfmt::skip]
    let rows: Vec<(&TimeZone, DateTime, LocalResult)> = vec![
        (&berlin, local(2026, 3, 29, 1, 59), Single(utc(2026, 3, 29, 0, 59))),
        (&berlin, local(2026, 3, 29, 2, 0), Gap { transition: utc(2026, 3, 29, 1, 0) }),
        (&berlin, local(2026, 3, 29, 2, 30), Gap { transition: utc(2026, 3, 29, 1, 0) }),
        (&berlin, local(2026, 3, 29, 3, 0), Single(utc(2026, 3, 29, 1, 0))),
        (&berlin, local(2026, 10, 25, 1, 59), Single(utc(2026, 10, 24, 23, 59))),
        (&berlin, local(2026, 10, 25, 2, 0), Ambiguous { earlier: utc(2026, 10, 25, 0, 0), later: utc(2026, 10, 25, 1, 0) }),
        (&berlin, local(2026, 10, 25, 2, 30), Ambiguous { earlier: utc(2026, 10, 25, 0, 30), later: utc(2026, 10, 25, 1, 30) }),
        (&berlin, local(2026, 10, 25, 3, 0), Single(utc(2026, 10, 25, 2, 0))),
        // Past the table: the footer's rule (zdump: 2400-03-26 and 2400-10-29).
        (&berlin, local(2400, 3, 26, 2, 30), Gap { transition: utc(2400, 3, 26, 1, 0) }),
        (&berlin, local(2400, 10, 29, 2, 30), Ambiguous { earlier: utc(2400, 10, 29, 0, 30), later: utc(2400, 10, 29, 1, 30) }),
        (&berlin_posix, local(2026, 3, 29, 2, 30), Gap { transition: utc(2026, 3, 29, 1, 0) }),
        (&berlin_posix, local(2026, 10, 25, 2, 30), Ambiguous { earlier: utc(2026, 10, 25, 0, 30), later: utc(2026, 10, 25, 1, 30) }),
        (&ny, local(2026, 3, 8, 2, 30), Gap { transition: utc(2026, 3, 8, 7, 0) }),
        (&ny, local(2026, 11, 1, 1, 30), Ambiguous { earlier: utc(2026, 11, 1, 5, 30), later: utc(2026, 11, 1, 6, 30) }),
        (&ny, local(2026, 11, 1, 2, 0), Single(utc(2026, 11, 1, 7, 0))),
        // Lord Howe: 02:00 -> 02:30 in October, 02:00 -> 01:30 in April.
        (&lh, local(2026, 10, 4, 2, 15), Gap { transition: 1_791_041_400 }),
        (&lh, local(2026, 10, 4, 2, 30), Single(1_791_041_400)),
        (&lh, local(2026, 4, 5, 1, 45), Ambiguous { earlier: 1_775_313_900, later: 1_775_315_700 }),
        (&lh, local(2026, 4, 5, 1, 29), Single(1_775_314_800 - 31 * 60)),
    ];
    for (tz, dt, expect) in rows {
        assert_eq!(tz.from_local(&dt), expect, "{:?} {dt}", tz.name());
    }
}

#[test]
fn local_round_trip() {
    for name in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "UTC",
    ] {
        let tz = zone(name);
        for t in (-3_000_000_000..5_000_000_000i64).step_by(3_600 * 97 + 13) {
            let back = tz.from_local(&tz.to_local(t).datetime);
            let ok = match back {
                LocalResult::Single(u) => u == t,
                LocalResult::Ambiguous { earlier, later } => t == earlier || t == later,
                LocalResult::Gap { .. } => false,
            };
            assert!(ok, "{name} {t}: {back:?}");
        }
    }
}

/// When `zdump` is installed, every transition it lists from 1800 to 2500
/// must match; this covers the tables and far beyond them the footers.
#[test]
fn agrees_with_zdump_when_available() {
    let Ok(probe) = std::process::Command::new("zdump").arg("UTC").output() else {
        eprintln!("zdump not found: skipped (the hard-coded tables still ran)");
        return;
    };
    assert!(probe.status.success());
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    for name in [
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "UTC",
    ] {
        let tz = zone(name);
        let out = std::process::Command::new("zdump")
            .args(["-v", "-c", "1800,2500", name])
            .env("TZDIR", ZONEINFO)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut checked = 0;
        let mut last_offset = None;
        let mut expected_changes = Vec::new();
        for line in text.lines().filter(|l| l.contains(" UT = ")) {
            // "Europe/Berlin  Sun Mar 29 01:00:00 2026 UT = Sun Mar 29 03:00:00 2026 CEST isdst=1 gmtoff=7200"
            let (ut, rest) = line.split_once(" UT = ").unwrap();
            let f: Vec<&str> = ut.split_whitespace().collect();
            let n = f.len();
            let month = MONTHS.iter().position(|m| *m == f[n - 4]).unwrap() as u8 + 1;
            let hms: Vec<u8> = f[n - 2].split(':').map(|x| x.parse().unwrap()).collect();
            let t = DateTime::new(
                f[n - 1].parse().unwrap(),
                month,
                f[n - 3].parse().unwrap(),
                hms[0],
                hms[1],
                hms[2],
            )
            .unwrap()
            .to_unix();
            let r: Vec<&str> = rest.split_whitespace().collect();
            let abbr = r[r.len() - 3];
            let is_dst = r[r.len() - 2] == "isdst=1";
            let offset: i32 = r[r.len() - 1]
                .trim_start_matches("gmtoff=")
                .parse()
                .unwrap();
            let lt = tz.to_local(t);
            assert_eq!(
                (lt.offset, lt.is_dst, lt.abbreviation.as_str()),
                (offset, is_dst, abbr),
                "{line}"
            );
            if last_offset.is_some_and(|o| o != offset) {
                expected_changes.push(t);
            }
            last_offset = Some(offset);
            checked += 1;
        }
        // Walking next_transition finds exactly zdump's changes of offset.
        let mut walked = Vec::new();
        let (first, last) = (utc(1800, 1, 1, 0, 0), utc(2500, 1, 1, 0, 0));
        let mut t = first;
        while let Some(tr) = tz.next_transition(t).filter(|tr| tr.at < last) {
            assert_ne!(tr.offset_before, tr.offset_after);
            walked.push(tr.at);
            t = tr.at;
        }
        assert_eq!(walked, expected_changes, "{name}");
        eprintln!("{name}: {checked} zdump lines agree");
    }
}

// ------------------------------------------------------- window grammar

#[test]
fn parse_table_good() {
    use WindowEnd::*;
    const ALL: &str = "Mon,Tue,Wed,Thu,Fri,Sat,Sun";
    // (input, days, start minute, end, canonical form)
    #[rustfmt::skip]
    let rows: &[(&str, &str, u16, WindowEnd, &str)] = &[
        // The updater's original grammar.
        ("Mon,Tue 02:00-04:00", "Mon,Tue", 120, At(240), "Mon,Tue 02:00-04:00"),
        ("22:00-02:00", ALL, 1320, At(120), "22:00-02:00"),
        ("Sat,Sun 02:00-04:00", "Sat,Sun", 120, At(240), "Sat,Sun 02:00-04:00"),
        ("* 01:00-02:00", ALL, 60, At(120), "01:00-02:00"),
        ("  Sat, Sun   2:00-4:00 ", "Sat,Sun", 120, At(240), "Sat,Sun 02:00-04:00"),
        ("sat,SUN 23:59-00:00", "Sat,Sun", 1439, At(0), "Sat,Sun 23:59-00:00"),
        // Additions: full names, ranges, 24:00, lengths.
        ("Monday,friday 00:00-24:00", "Mon,Fri", 0, At(1440), "Mon,Fri 00:00-24:00"),
        ("Mon..Fri 03:00-05:30", "Mon,Tue,Wed,Thu,Fri", 180, At(330), "Mon,Tue,Wed,Thu,Fri 03:00-05:30"),
        ("Mon-Wed,Sun 03:00-05:30", "Mon,Tue,Wed,Sun", 180, At(330), "Mon,Tue,Wed,Sun 03:00-05:30"),
        ("Fri..Mon 22:00-02:00", "Mon,Fri,Sat,Sun", 1320, At(120), "Mon,Fri,Sat,Sun 22:00-02:00"),
        ("Thu 23:00 1h30m", "Thu", 1380, After(5400), "Thu 23:00 1h30m"),
        ("23:00 90m", ALL, 1380, After(5400), "23:00 1h30m"),
        ("Sat 00:00 168h", "Sat", 0, After(604_800), "Sat 00:00 168h"),
        ("Sun 04:00 45m30s", "Sun", 240, After(2730), "Sun 04:00 45m30s"),
        ("Sun 04:00 2h", "Sun", 240, After(7200), "Sun 04:00 2h"),
    ];
    for &(input, days, start, end, canonical) in rows {
        let w = Window::parse(input).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<&str> = w.days().map(Weekday::short_name).collect();
        assert_eq!(
            (got.join(","), w.start_minute(), w.end()),
            (days.to_string(), start, end),
            "{input}"
        );
        assert_eq!(w.to_string(), canonical, "{input}");
        assert_eq!(canonical.parse::<Window>(), Ok(w), "{canonical} round trip");
    }
    assert_eq!(
        parse_windows(&["Sat 02:00-03:00", "Sun 04:00 1h"])
            .unwrap()
            .len(),
        2
    );
    assert!(parse_windows(&["Sat 02:00-03:00", "Sun"]).is_err());
}

#[test]
fn parse_table_bad() {
    // (input, the part the error must name, words in the problem)
    #[rustfmt::skip]
    let rows = [
        ("", "", "empty window"),
        ("   ", "", "empty window"),
        ("Mon 25:00-01:00", "25:00", "hour out of range"),
        ("Mon 01:00-24:30", "24:30", "hour out of range"),
        ("Mon 24:00-01:00", "24:00", "hour out of range"),
        ("Mon 01:60-02:00", "01:60", "minute out of range"),
        ("Funday 01:00-02:00", "Funday", "unknown day"),
        ("Mon,,Tue 01:00-02:00", "Mon,,Tue", "empty day"),
        ("Sat Sun 01:00-02:00", "Sat Sun", "separate days with commas"),
        ("Mo 01:00-02:00", "Mo", "unknown day"),
        ("Mon..Funday 01:00-02:00", "Mon..Funday", "unknown day"),
        ("02:00-02:00", "02:00-02:00", "empty window"),
        ("Mon 02:00", "02:00", "expected a time range"),
        ("Mon 2am-4am", "2am", "expected a time HH:MM"),
        ("Mon 02.00-04.00", "02.00", "expected a time HH:MM"),
        ("Mon +2:00-04:00", "+2:00", "expected a time HH:MM"),
        ("Mon 002:00-04:00", "002:00", "expected a time HH:MM"),
        ("Mon 02:00 - 04:00", "04:00", "expected a time range"),
        ("Thu 23:00 1h30", "1h30", "bad length"),
        ("Thu 23:00 30m1h", "30m1h", "bad length"),
        ("Thu 23:00 1d", "1d", "bad length"),
        ("Thu 23:00 0m", "0m", "more than 0"),
        ("Thu 23:00 169h", "169h", "at most 168h"),
        ("Thu 1h30m", "1h30m", "needs a start time"),
        ("Thu 24:00 1h", "24:00", "hour out of range"),
        ("Thu xx:00 1h", "xx:00", "expected a time HH:MM"),
        ("always", "always", "expected a time range"),
    ];
    for (input, part, problem) in rows {
        let e = Window::parse(input).expect_err(input);
        assert_eq!(e.input, input);
        assert_eq!(e.part, part, "{input}: {e}");
        assert!(e.problem.contains(problem), "{input}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("Sat,Sun 02:00-04:00"), "no example in: {msg}");
        assert!(msg.contains(&format!("{input:?}")), "{msg}");
    }
    let e = Window::parse("Funday 01:00-02:00").unwrap_err();
    assert_eq!(
        e.to_string(),
        "window \"Funday 01:00-02:00\": unknown day (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, or a range Mon..Fri) \
         in \"Funday\" (valid examples: \"Sat,Sun 02:00-04:00\", \"22:00-02:00\", \"Mon..Fri 23:00 1h30m\")"
    );
}

// ------------------------------------------------------- windows in time

/// The updater's table of UTC windows, unchanged, on a UTC host.
#[test]
fn original_utc_table_still_holds() {
    // 2026-11-21 was a Saturday; 1_795_219_200 is its 00:00 UTC.
    let sat = 1_795_219_200i64;
    let at = |day: i64, h: i64, m: i64| sat + day * 86_400 + h * 3600 + m * 60;
    #[rustfmt::skip]
    let rows = [
        ("Sat,Sun 02:00-04:00", at(0, 2, 0), true),
        ("Sat,Sun 02:00-04:00", at(0, 4, 0), false),
        ("Sat,Sun 02:00-04:00", at(1, 3, 59), true),
        ("Sat,Sun 02:00-04:00", at(2, 3, 0), false), // Monday
        ("23:00-01:00", at(0, 23, 30), true),
        ("23:00-01:00", at(1, 0, 30), true),
        ("23:00-01:00", at(1, 1, 0), false),
        ("Fri 23:00-01:00", at(0, 0, 30), true), // Friday's window spills into Saturday
        ("Fri 23:00-01:00", at(1, 0, 30), false),
    ];
    for tz in [
        TimeZone::utc(),
        zone("UTC"),
        TimeZone::load(Path::new("/nonexistent-root")).unwrap(),
    ] {
        for (w, now, expect) in rows {
            let w = [Window::parse(w).unwrap()];
            assert_eq!(contains(&w, &tz, now), expect, "{} at {now}", w[0]);
        }
    }
}

/// `(window, local date it starts on, open, close)`, open and close in UTC.
type OccurrenceRow = (
    &'static str,
    (i64, u8, u8),
    (i64, u8, u8, u8, u8),
    (i64, u8, u8, u8, u8),
);

#[test]
fn occurrences_across_dst_changes() {
    let berlin = zone("Europe/Berlin");
    let berlin_posix = TimeZone::from_posix_tz(BERLIN_TZ).unwrap();
    let ny = zone("America/New_York");
    let ny_posix = TimeZone::from_posix_tz(NEW_YORK_TZ).unwrap();
    let lh = zone("Australia/Lord_Howe");
    let spring = (2026, 3, 29); // Berlin 02:00 CET -> 03:00 CEST, 01:00 UT
    let autumn = (2026, 10, 25); // Berlin 03:00 CEST -> 02:00 CET, 01:00 UT
    #[rustfmt::skip]
    let rows: &[OccurrenceRow] = &[
        // An ordinary Sunday: 02:00 CEST = 00:00 UT.
        ("Sun 02:00-04:00", (2026, 7, 5), (2026, 7, 5, 0, 0), (2026, 7, 5, 2, 0)),
        // Spring forward: starts in the gap open when it ends, at 03:00 CEST.
        ("Sun 02:00-04:00", spring, (2026, 3, 29, 1, 0), (2026, 3, 29, 2, 0)),
        ("Sun 02:30-04:00", spring, (2026, 3, 29, 1, 0), (2026, 3, 29, 2, 0)),
        ("Sun 03:00-04:00", spring, (2026, 3, 29, 1, 0), (2026, 3, 29, 2, 0)),
        // ... ends in the gap close when it ends.
        ("Sun 01:00-02:30", spring, (2026, 3, 29, 0, 0), (2026, 3, 29, 1, 0)),
        // ... wholly in the gap: open at 03:00 for the nominal 30 minutes.
        ("Sun 02:15-02:45", spring, (2026, 3, 29, 1, 0), (2026, 3, 29, 1, 30)),
        // ... a length is elapsed time.
        ("Sun 02:00 2h", spring, (2026, 3, 29, 1, 0), (2026, 3, 29, 3, 0)),
        ("Sun 01:00 2h", spring, (2026, 3, 29, 0, 0), (2026, 3, 29, 2, 0)),
        // ... wrapping midnight into the change: Saturday's window.
        ("Sat 23:00-03:30", (2026, 3, 28), (2026, 3, 28, 22, 0), (2026, 3, 29, 1, 30)),
        // Fall back: 02:00-03:00 is lived twice, both passes are open.
        ("Sun 02:00-03:00", autumn, (2026, 10, 25, 0, 0), (2026, 10, 25, 2, 0)),
        ("Sun 02:30-04:00", autumn, (2026, 10, 25, 0, 30), (2026, 10, 25, 3, 0)),
        ("Sun 01:00-02:30", autumn, (2026, 10, 24, 23, 0), (2026, 10, 25, 1, 30)),
        ("Sun 02:30 1h", autumn, (2026, 10, 25, 0, 30), (2026, 10, 25, 1, 30)),
        ("Sat 22:00-02:00", (2026, 10, 24), (2026, 10, 24, 20, 0), (2026, 10, 25, 1, 0)),
        ("Sun 03:00-04:00", autumn, (2026, 10, 25, 2, 0), (2026, 10, 25, 3, 0)),
    ];
    #[rustfmt::skip]
    let ny_rows: &[OccurrenceRow] = &[
        // New York: 02:00 EST -> 03:00 EDT at 07:00 UT on 8 March 2026.
        ("Sun 02:00-03:00", (2026, 3, 8), (2026, 3, 8, 7, 0), (2026, 3, 8, 8, 0)),
        ("Sun 01:30-02:30", (2026, 3, 8), (2026, 3, 8, 6, 30), (2026, 3, 8, 7, 0)),
        ("Sat 23:00-03:00", (2026, 3, 7), (2026, 3, 8, 4, 0), (2026, 3, 8, 7, 0)),
        // 02:00 EDT -> 01:00 EST at 06:00 UT on 1 November 2026.
        ("Sun 01:00-02:00", (2026, 11, 1), (2026, 11, 1, 5, 0), (2026, 11, 1, 7, 0)),
        ("Sat 23:00-01:30", (2026, 10, 31), (2026, 11, 1, 3, 0), (2026, 11, 1, 6, 30)),
        ("Sun 01:15 30m", (2026, 11, 1), (2026, 11, 1, 5, 15), (2026, 11, 1, 5, 45)),
    ];
    let check = |tz: &TimeZone, rows: &[OccurrenceRow]| {
        for &(w, (y, m, d), o, c) in rows {
            let win = Window::parse(w).unwrap();
            let occ = win.occurrence_on(tz, &local(y, m, d, 0, 0)).unwrap();
            let expect = Occurrence {
                open: utc(o.0, o.1, o.2, o.3, o.4),
                close: utc(c.0, c.1, c.2, c.3, c.4),
            };
            assert_eq!(occ, expect, "{w} on {y}-{m}-{d} in {:?}", tz.name());
            // contains() agrees at the edges.
            let ws = [win];
            assert!(contains(&ws, tz, occ.open), "{w}");
            assert!(contains(&ws, tz, occ.close - 1), "{w}");
            assert!(!contains(&ws, tz, occ.open - 1), "{w}");
            assert!(!contains(&ws, tz, occ.close), "{w}");
        }
    };
    check(&berlin, rows);
    check(&berlin_posix, rows);
    check(&ny, ny_rows);
    check(&ny_posix, ny_rows);
    // Not the right day of the week.
    let w = Window::parse("Mon 02:00-04:00").unwrap();
    assert_eq!(w.occurrence_on(&berlin, &local(2026, 3, 29, 0, 0)), None);
    // Lord Howe's half-hour: 02:00 +1030 -> 02:30 +11 on 4 October 2026.
    let w = Window::parse("Sun 02:00-03:00").unwrap();
    let occ = w.occurrence_on(&lh, &local(2026, 10, 4, 0, 0)).unwrap();
    assert_eq!(
        occ,
        Occurrence {
            open: 1_791_041_400,
            close: 1_791_041_400 + 1800
        }
    );
    // 02:00 +11 -> 01:30 +1030 on 5 April 2026: 01:30-02:00 twice.
    let w = Window::parse("Sun 01:30-02:00").unwrap();
    let occ = w.occurrence_on(&lh, &local(2026, 4, 5, 0, 0)).unwrap();
    assert_eq!(
        occ,
        Occurrence {
            open: 1_775_314_800 - 1800,
            close: 1_775_314_800 + 1800
        }
    );
}

#[test]
fn contains_through_the_repeated_hour() {
    // Berlin, 25 Oct 2026: the clocks show 02:00-03:00 from 00:00 to 02:00 UT.
    let berlin = zone("Europe/Berlin");
    let w = [Window::parse("Sun 02:30-04:00").unwrap()];
    #[rustfmt::skip]
    let rows = [
        (utc(2026, 10, 25, 0, 29), false), // 02:29 CEST
        (utc(2026, 10, 25, 0, 30), true),  // 02:30 CEST
        (utc(2026, 10, 25, 1, 15), true),  // 02:15 CET: the second pass, still open
        (utc(2026, 10, 25, 2, 59), true),  // 03:59 CET
        (utc(2026, 10, 25, 3, 0), false),  // 04:00 CET
    ];
    for (now, expect) in rows {
        assert_eq!(
            contains(&w, &berlin, now),
            expect,
            "{}",
            berlin.to_local(now)
        );
        assert_eq!(open_until(&w, &berlin, now).is_some(), expect);
    }
    assert_eq!(
        open_until(&w, &berlin, utc(2026, 10, 25, 1, 15)),
        Some(utc(2026, 10, 25, 3, 0))
    );
}

#[test]
fn next_open_table() {
    let berlin = zone("Europe/Berlin");
    let ny = zone("America/New_York");
    let utc_tz = TimeZone::utc();
    // (zone, windows, now, expected next_open)
    #[rustfmt::skip]
    let rows: Vec<(&TimeZone, &[&str], i64, i64)> = vec![
        // Inside: now itself.
        (&utc_tz, &["Sat,Sun 02:00-04:00"], utc(2026, 11, 21, 3, 0), utc(2026, 11, 21, 3, 0)),
        // Before, the same day.
        (&utc_tz, &["Sat,Sun 02:00-04:00"], utc(2026, 11, 21, 1, 0), utc(2026, 11, 21, 2, 0)),
        // Right at the close: the next day.
        (&utc_tz, &["Sat,Sun 02:00-04:00"], utc(2026, 11, 21, 4, 0), utc(2026, 11, 22, 2, 0)),
        // After Sunday's window: across the week end to the next Saturday.
        (&utc_tz, &["Sat,Sun 02:00-04:00"], utc(2026, 11, 22, 4, 0), utc(2026, 11, 28, 2, 0)),
        // A window wrapping midnight, inside its part on the next day.
        (&utc_tz, &["Sun 23:00-01:00"], utc(2026, 11, 23, 0, 30), utc(2026, 11, 23, 0, 30)),
        // ... just after it: a week on (Sunday to Sunday across the week end).
        (&utc_tz, &["Sun 23:00-01:00"], utc(2026, 11, 23, 1, 0), utc(2026, 11, 29, 23, 0)),
        // ... before it.
        (&utc_tz, &["Sun 23:00-01:00"], utc(2026, 11, 22, 12, 0), utc(2026, 11, 22, 23, 0)),
        // Several windows: the earliest wins.
        (&utc_tz, &["Sun 23:00-01:00", "Wed 12:00 30m", "Tue,Thu 05:00-06:00"], utc(2026, 11, 23, 1, 0), utc(2026, 11, 24, 5, 0)),
        (&utc_tz, &["Sun 23:00-01:00", "Wed 12:00 30m", "Tue,Thu 05:00-06:00"], utc(2026, 11, 24, 6, 0), utc(2026, 11, 25, 12, 0)),
        // Berlin, the Saturday before spring forward: Sunday's 02:30 opens at 03:00 CEST.
        (&berlin, &["Sun 02:30-04:00"], utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 1, 0)),
        // ... and once it closed, next Sunday 02:30 CEST.
        (&berlin, &["Sun 02:30-04:00"], utc(2026, 3, 29, 2, 0), utc(2026, 4, 5, 0, 30)),
        // Berlin fall back: inside the second pass of the repeated hour.
        (&berlin, &["Sun 02:00-03:00"], utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 1, 30)),
        // ... closed at 03:00 CET: next Sunday 02:00 CET.
        (&berlin, &["Sun 02:00-03:00"], utc(2026, 10, 25, 2, 0), utc(2026, 11, 1, 1, 0)),
        // ... from before it: the first pass, 02:00 CEST.
        (&berlin, &["Sun 02:00-03:00"], utc(2026, 10, 24, 12, 0), utc(2026, 10, 25, 0, 0)),
        // Local days of week: Monday 00:30 in Berlin is still Sunday in UTC.
        (&berlin, &["Mon 00:00-01:00"], utc(2026, 7, 5, 12, 0), utc(2026, 7, 5, 22, 0)),
        // New York, a window wrapping midnight into spring forward.
        (&ny, &["Sat 23:00-03:00"], utc(2026, 3, 7, 12, 0), utc(2026, 3, 8, 4, 0)),
        (&ny, &["Sat 23:00-03:00"], utc(2026, 3, 8, 7, 0), utc(2026, 3, 15, 3, 0)),
        // New York, fall back: 01:30-01:45 opens at 01:30 EDT and stays open
        // until 01:45 EST, through 01:00-01:30 EST between the two passes.
        (&ny, &["Sun 01:30-01:45"], utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30)),
        (&ny, &["Sun 01:30-01:45"], utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 6, 0)),
        (&ny, &["Sun 01:30-01:45"], utc(2026, 11, 1, 6, 45), utc(2026, 11, 8, 6, 30)),
        // Far future, under the footer rule: Sunday 2100-03-28 is the last of March.
        (&berlin, &["Sun 02:30-04:00"], utc(2100, 3, 27, 0, 0), utc(2100, 3, 28, 1, 0)),
    ];
    for (tz, windows, now, expect) in rows {
        let ws = parse_windows(windows).unwrap();
        let got = next_open(&ws, tz, now);
        assert_eq!(
            got,
            Some(expect),
            "{windows:?} from {}: got {:?}",
            tz.to_local(now),
            got.map(|t| tz.to_local(t).to_string())
        );
        assert_eq!(
            contains(&ws, tz, now),
            expect == now,
            "{windows:?} at {now}"
        );
    }
    // No windows: always open.
    assert!(contains(&[], &berlin, 0));
    assert_eq!(next_open(&[], &berlin, 0), None);
    assert_eq!(open_until(&[], &berlin, 0), None);
}

#[test]
fn open_until_joins_touching_windows() {
    let tz = TimeZone::utc();
    let ws = parse_windows(&["Sat 22:00-23:00", "Sat 23:00-02:00", "Sun 01:00 3h"]).unwrap();
    let sat = utc(2026, 11, 21, 22, 30);
    assert_eq!(open_until(&ws, &tz, sat), Some(utc(2026, 11, 22, 4, 0)));
    assert_eq!(open_until(&ws, &tz, utc(2026, 11, 22, 4, 0)), None);
}

/// For every few minutes of 2026 in several zones: `next_open` is `now`
/// exactly when `contains`, else a later instant where a window is open with
/// none open just before it; and away from clock changes `contains` is the
/// plain wall-clock check of the original updater.
#[test]
fn schedule_properties_over_a_year() {
    let zones = [
        TimeZone::from_posix_tz(BERLIN_TZ).unwrap(),
        TimeZone::from_posix_tz(NEW_YORK_TZ).unwrap(),
        TimeZone::from_posix_tz("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0").unwrap(),
        TimeZone::from_posix_tz("IST-5:30").unwrap(),
    ];
    let sets: [&[&str]; 4] = [
        &["Sat,Sun 02:00-04:00"],
        &["Fri..Mon 22:30-01:15", "Wed 02:10-02:50"],
        &["Sun 01:30-03:00", "Thu 23:00 1h30m"],
        &["Sun 02:00-02:01"],
    ];
    let (start, end) = (utc(2026, 1, 1, 0, 0), utc(2027, 1, 10, 0, 0));
    for tz in &zones {
        let changes: Vec<i64> =
            std::iter::successors(tz.next_transition(start - 86_400 * 3), |tr| {
                tz.next_transition(tr.at)
            })
            .take_while(|tr| tr.at < end + 86_400 * 3)
            .map(|tr| tr.at)
            .collect();
        for set in sets {
            let ws = parse_windows(set).unwrap();
            // Densely around the clock changes, sparsely the rest of the year.
            let near = changes
                .iter()
                .flat_map(|c| (c - 3 * 86_400..c + 3 * 86_400).step_by(331));
            let instants: Vec<i64> = (start..end).step_by(7_919).chain(near).collect();
            for now in instants {
                let inside = contains(&ws, tz, now);
                let next = next_open(&ws, tz, now).unwrap();
                if inside {
                    assert_eq!(next, now);
                } else {
                    assert!(
                        next > now && next - now <= 8 * 86_400,
                        "{set:?} {now} -> {next}"
                    );
                    assert!(
                        contains(&ws, tz, next),
                        "{set:?}: closed at next_open {next}"
                    );
                    assert!(!contains(&ws, tz, next - 1), "{set:?}: open before {next}");
                    let mid = now + (next - now) / 2;
                    assert!(
                        !contains(&ws, tz, mid),
                        "{set:?}: open at {mid}, before {next}"
                    );
                }
                // Far from clock changes: the original wall-clock rule.
                if changes.iter().all(|c| (c - now).abs() > 36 * 3600) {
                    let lt = tz.to_local(now).datetime;
                    let minute = u16::from(lt.hour) * 60 + u16::from(lt.minute);
                    let secs = i64::from(minute) * 60 + i64::from(lt.second);
                    let today = lt.weekday();
                    let yesterday = Weekday::ALL[(today.index() + 6) % 7];
                    let plain = ws.iter().any(|w| {
                        let s = w.start_minute();
                        match w.end() {
                            WindowEnd::At(e) if s < e => w.on(today) && (s..e).contains(&minute),
                            WindowEnd::At(e) => {
                                (w.on(today) && minute >= s) || (w.on(yesterday) && minute < e)
                            }
                            WindowEnd::After(len) => {
                                let since = |ago: i64| secs + ago * 86_400 - i64::from(s) * 60;
                                (0..2).any(|ago| {
                                    let day = Weekday::ALL[(today.index() + 7 - ago as usize) % 7];
                                    w.on(day) && (0..i64::from(len)).contains(&since(ago))
                                })
                            }
                        }
                    });
                    assert_eq!(inside, plain, "{set:?} at {}", tz.to_local(now));
                }
            }
        }
    }
}

#[test]
fn extreme_instants_do_not_panic() {
    let tzs = [
        zone("Europe/Berlin"),
        zone("Australia/Lord_Howe"),
        TimeZone::utc(),
    ];
    let ws = parse_windows(&["Sun 02:00-04:00", "Fri..Mon 23:00 168h"]).unwrap();
    for tz in &tzs {
        for t in [
            i64::MIN,
            i64::MIN + 1,
            -(1 << 60),
            1 << 60,
            i64::MAX - 1,
            i64::MAX,
        ] {
            let _ = contains(&ws, tz, t);
            let _ = next_open(&ws, tz, t);
            let _ = open_until(&ws, tz, t);
            let _ = tz.to_local(t).to_string();
        }
    }
}
