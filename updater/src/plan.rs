//! Which release to install: a pure function of the channel and the host.

use std::collections::BTreeMap;

use release_manifest::Version;
use release_repo::{ReleaseEntry, install_time};
use serde::{Deserialize, Serialize};

/// What the choice needs to know about the host.
#[derive(Debug, Clone)]
pub struct HostView<'a> {
    pub board: &'a str,
    pub arch: &'a str,
    pub booted_version: &'a Version,
    /// Version -> reason it failed before.
    pub failed: &'a BTreeMap<String, String>,
    pub seed: f64,
    pub now: u64,
    /// `cairnctl update --now`: ignore the rollout wave.
    pub ignore_wave: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Skip {
    OtherBoard,
    NotNewer,
    Failed {
        why: String,
    },
    /// The publisher halted its rollout (signed in the channel).
    Halted {
        why: String,
        since: u64,
    },
    WaveNotReached {
        at: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub version: String,
    #[serde(flatten)]
    pub skip: Skip,
}

impl Skip {
    /// One line for `cairnctl check`.
    pub fn describe(&self) -> String {
        use crate::state::format_utc;
        match self {
            Skip::OtherBoard => "for another board".into(),
            Skip::NotNewer => "not newer than the booted version".into(),
            Skip::Failed { why } => format!("failed on this host before ({why})"),
            Skip::Halted { why, since } => format!(
                "its rollout was halted by the publisher at {}: {why}",
                format_utc(*since)
            ),
            Skip::WaveNotReached { at } => format!(
                "this host's turn in the rollout comes at {} (`cairnctl update --now` installs it earlier)",
                format_utc(*at)
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub chosen: Option<ReleaseEntry>,
    /// Releases for this board that were passed over, and why.
    pub skipped: Vec<Skipped>,
}

/// The newest release for this board and arch that is newer than the booted
/// version, not halted by its publisher, never failed here, and whose wave
/// has reached this host.
pub fn choose(releases: &[ReleaseEntry], host: &HostView) -> Decision {
    let mut skipped = Vec::new();
    let mut chosen: Option<&ReleaseEntry> = None;
    for r in releases {
        let skip = if r.board != host.board || r.arch != host.arch {
            Some(Skip::OtherBoard)
        } else if r.version <= *host.booted_version {
            Some(Skip::NotNewer)
        } else if let Some(h) = &r.halted {
            // Not even `--now`: the publisher stopped this rollout.
            Some(Skip::Halted {
                why: h.reason.clone(),
                since: h.at,
            })
        } else if let Some(why) = crate::state::failed_reason(host.failed, &r.version) {
            Some(Skip::Failed { why: why.into() })
        } else if !host.ignore_wave && host.now < install_time(r.wave, host.seed) {
            Some(Skip::WaveNotReached {
                at: install_time(r.wave, host.seed),
            })
        } else {
            None
        };
        match skip {
            Some(Skip::OtherBoard) => {}
            Some(skip) => skipped.push(Skipped {
                version: r.version.to_string(),
                skip,
            }),
            None => {
                if chosen.is_none_or(|c| r.version > c.version) {
                    chosen = Some(r);
                }
            }
        }
    }
    Decision {
        chosen: chosen.cloned(),
        skipped,
    }
}

/// `cairnctl update --version V`: exactly `want`, if the channel offers it for
/// this board and arch and it is newer than the booted version. The operator
/// asked for it by name, so the failed list (a manual rollback, an earlier
/// failed boot) and the rollout wave do not hold it back. `Err` says why not.
pub fn choose_version(
    releases: &[ReleaseEntry],
    host: &HostView,
    want: &Version,
) -> Result<Decision, String> {
    let ours = |r: &&ReleaseEntry| r.board == host.board && r.arch == host.arch;
    let Some(entry) = releases.iter().filter(ours).find(|r| r.version == *want) else {
        let offered: Vec<String> = releases
            .iter()
            .filter(ours)
            .map(|r| r.version.to_string())
            .collect();
        return Err(format!(
            "not offered for {} {} on this channel (offered: {})",
            host.board,
            host.arch,
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(", ")
            }
        ));
    };
    if entry.version <= *host.booted_version {
        // Signed older releases stay installable by no one: a downgrade could
        // bring back a fixed vulnerability. Rolling back is `cairnctl rollback`.
        return Err(format!(
            "not newer than the booted {} (downgrades are refused; `cairnctl rollback` boots the other slot)",
            host.booted_version
        ));
    }
    if let Some(h) = &entry.halted {
        return Err(format!(
            "its rollout is halted by the publisher: {} (the publisher lifts it with `cairn-build repo resume`)",
            h.reason
        ));
    }
    let mut skipped = Vec::new();
    if let Some(why) = crate::state::failed_reason(host.failed, &entry.version) {
        // Reported, then overridden: the install clears it from the list.
        skipped.push(Skipped {
            version: entry.version.to_string(),
            skip: Skip::Failed { why: why.into() },
        });
    }
    Ok(Decision {
        chosen: Some(entry.clone()),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use release_manifest::Hex32;
    use release_repo::Wave;

    fn rel(board: &str, v: &str, start: u64, duration: u64) -> ReleaseEntry {
        ReleaseEntry {
            board: board.into(),
            arch: "x86_64".into(),
            version: Version::parse(v).unwrap(),
            manifest: format!("releases/{board}/{v}/manifest.json"),
            manifest_sha256: Hex32([0; 32]),
            manifest_size: 1,
            wave: Wave::linear(start, duration),
            halted: None,
        }
    }

    #[test]
    fn choice_table() {
        let releases = vec![
            rel("b", "1.0.0", 0, 0),
            rel("b", "1.1.0", 0, 0),
            rel("b", "1.2.0", 100, 100),
            rel("other", "9.0.0", 0, 0),
        ];
        let mut failed = BTreeMap::new();
        let v = Version::parse("1.0.0").unwrap();
        fn view<'a>(
            v: &'a Version,
            seed: f64,
            now: u64,
            ignore_wave: bool,
            failed: &'a BTreeMap<String, String>,
        ) -> HostView<'a> {
            HostView {
                board: "b",
                arch: "x86_64",
                booted_version: v,
                failed,
                seed,
                now,
                ignore_wave,
            }
        }
        let pick = |d: Decision| d.chosen.map(|c| c.version.to_string());
        // (seed, now, ignore_wave) -> chosen
        assert_eq!(
            pick(choose(&releases, &view(&v, 0.0, 99, false, &failed))),
            Some("1.1.0".into())
        );
        assert_eq!(
            pick(choose(&releases, &view(&v, 0.0, 100, false, &failed))),
            Some("1.2.0".into())
        );
        assert_eq!(
            pick(choose(&releases, &view(&v, 0.5, 149, false, &failed))),
            Some("1.1.0".into())
        );
        assert_eq!(
            pick(choose(&releases, &view(&v, 0.5, 150, false, &failed))),
            Some("1.2.0".into())
        );
        assert_eq!(
            pick(choose(&releases, &view(&v, 0.9, 0, true, &failed))),
            Some("1.2.0".into())
        );
        failed.insert("1.2.0".to_string(), "rolled back".to_string());
        let d = choose(&releases, &view(&v, 0.0, 1000, false, &failed));
        assert_eq!(pick(d.clone()), Some("1.1.0".into()));
        assert!(d.skipped.iter().any(|s| s.version == "1.2.0"
            && matches!(&s.skip, Skip::Failed { why } if why == "rolled back")));
        assert!(
            d.skipped
                .iter()
                .any(|s| s.version == "1.0.0" && s.skip == Skip::NotNewer)
        );
        assert!(!d.skipped.iter().any(|s| s.version == "9.0.0"));
        failed.insert("1.1.0".to_string(), "x".to_string());
        assert_eq!(
            pick(choose(&releases, &view(&v, 0.0, 1000, false, &failed))),
            None
        );
    }

    #[test]
    fn skips_read_back_from_json_as_one_line() {
        // cairnctl gets the decision as JSON (also over D-Bus).
        let rows = [
            (Skip::NotNewer, "not newer than the booted version"),
            (
                Skip::WaveNotReached { at: 1_795_226_400 },
                "this host's turn in the rollout comes at 2026-11-21 02:00:00 UTC",
            ),
            (
                Skip::Halted {
                    why: "breaks NFS".into(),
                    since: 0,
                },
                "halted by the publisher at 1970-01-01 00:00:00 UTC: breaks NFS",
            ),
            (
                Skip::Failed {
                    why: "rolled back".into(),
                },
                "failed on this host before (rolled back)",
            ),
        ];
        for (skip, want) in rows {
            let s = Skipped {
                version: "2.0.0".into(),
                skip,
            };
            let json = serde_json::to_value(&s).unwrap();
            let back: Skipped = serde_json::from_value(json).unwrap();
            assert_eq!(back, s);
            assert!(
                back.skip.describe().contains(want),
                "{}",
                back.skip.describe()
            );
        }
    }

    #[test]
    fn a_halted_release_is_skipped_even_when_asked_for() {
        let mut halted = rel("b", "1.2.0", 0, 0);
        halted.halted = Some(release_repo::Halt {
            reason: "breaks NFS mounts".into(),
            at: 50,
        });
        let releases = vec![rel("b", "1.1.0", 0, 0), halted];
        let v = Version::parse("1.0.0").unwrap();
        let failed = BTreeMap::new();
        for ignore_wave in [false, true] {
            let view = HostView {
                board: "b",
                arch: "x86_64",
                booted_version: &v,
                failed: &failed,
                seed: 0.0,
                now: 1000,
                ignore_wave,
            };
            let d = choose(&releases, &view);
            assert_eq!(
                d.chosen.map(|c| c.version.to_string()).as_deref(),
                Some("1.1.0")
            );
            assert!(d.skipped.iter().any(|s| s.version == "1.2.0"
                && s.skip
                    == Skip::Halted {
                        why: "breaks NFS mounts".into(),
                        since: 50
                    }));
            let e = choose_version(&releases, &view, &Version::parse("1.2.0").unwrap())
                .err()
                .unwrap_or_default();
            assert!(
                e.contains("halted by the publisher: breaks NFS mounts"),
                "{e}"
            );
        }
    }

    #[test]
    fn failed_list_compares_versions_not_spellings() {
        let releases = vec![rel("b", "1.2.0", 0, 0), rel("b", "1.3", 0, 0)];
        let v = Version::parse("1.0.0").unwrap();
        // (recorded failed key, chosen)
        let table = [
            (None, Some("1.3")),
            (Some("1.3"), Some("1.2.0")),
            (Some("1.3.0"), Some("1.2.0")),
            (Some("1.3.0.0"), Some("1.2.0")),
            (Some("1.3.1"), Some("1.3")),
            (Some("1.3.0-rc1"), Some("1.3")),
        ];
        for (key, want) in table {
            let mut failed = BTreeMap::new();
            if let Some(k) = key {
                failed.insert(k.to_string(), "rolled back".to_string());
            }
            let view = HostView {
                board: "b",
                arch: "x86_64",
                booted_version: &v,
                failed: &failed,
                seed: 0.0,
                now: 1000,
                ignore_wave: false,
            };
            let d = choose(&releases, &view);
            assert_eq!(
                d.chosen.map(|c| c.version.to_string()).as_deref(),
                want,
                "failed {key:?}"
            );
        }
    }

    #[test]
    fn an_explicit_version_table() {
        let releases = vec![
            rel("b", "1.0.0", 0, 0),
            rel("b", "1.1.0", 0, 0),
            // Its wave starts far in the future.
            rel("b", "1.2.0", 10_000, 100),
            rel("other", "9.0.0", 0, 0),
        ];
        let booted = Version::parse("1.0.0").unwrap();
        let failed = BTreeMap::from([("1.1".to_string(), "abandoned".to_string())]);
        let view = HostView {
            board: "b",
            arch: "x86_64",
            booted_version: &booted,
            failed: &failed,
            seed: 0.9,
            now: 1000,
            ignore_wave: false,
        };
        // (asked for, chosen or the refusal's text)
        let table = [
            ("1.1.0", Ok("1.1.0")),
            ("1.1", Ok("1.1.0")),
            ("1.2.0", Ok("1.2.0")),
            ("1.0.0", Err("not newer than the booted 1.0.0")),
            ("1.3.0", Err("offered: 1.0.0, 1.1.0, 1.2.0")),
            ("9.0.0", Err("not offered")),
        ];
        for (want, expect) in table {
            let got = choose_version(&releases, &view, &Version::parse(want).unwrap());
            match (got, expect) {
                (Ok(d), Ok(v)) => {
                    assert_eq!(d.chosen.unwrap().version.as_str(), v, "{want}");
                    // The failed mark is reported even though it is overridden.
                    assert_eq!(
                        d.skipped
                            .iter()
                            .any(|s| matches!(s.skip, Skip::Failed { .. })),
                        want.starts_with("1.1"),
                        "{want}"
                    );
                }
                (Err(e), Err(text)) => assert!(e.contains(text), "{want}: {e}"),
                (got, expect) => panic!("{want}: got {got:?}, expected {expect:?}"),
            }
        }
    }
}
