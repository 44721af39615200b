//! Rollout waves: when each host's turn to install a release comes.
//!
//! A [`Wave`] is a start time and a list of [`Step`]s, each a cumulative share
//! of the fleet reached a number of seconds after the start (Bottlerocket's
//! model): `2h:1%,24h:10%,72h:100%` lets 1 % of the hosts install within the
//! first 2 hours, 10 % by 24 hours and everyone by 72 hours. Between two steps
//! the share grows linearly, so the hosts of a step are spread evenly over it.
//! A host with the stable random seed `s` in `[0, 1)` gets its turn when the
//! share reaches `s` ([`install_time`]): seed 0 hosts are the canaries, at the
//! start. The old single ramp (`start`, `duration`) is the one-step wave
//! `[duration:100%]`; an empty wave lets everyone in at `start`.

use std::borrow::Borrow;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most steps a wave may have. The steps live in a fixed array so that [`Wave`]
/// stays `Copy` like the single-ramp wave it replaces.
pub const MAX_WAVE_STEPS: usize = 16;

/// The grammar of [`Wave::parse`], as an example for error messages.
pub const WAVE_SPEC_EXAMPLE: &str = "2h:1%,24h:10%,72h:100%";

/// One step of a wave: by `after_seconds` after the start, `percent` of the
/// fleet (cumulative) may install.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub after_seconds: u64,
    /// Cumulative share of the hosts, `0 < percent <= 100`.
    pub percent: f64,
}

impl Step {
    const UNUSED: Step = Step {
        after_seconds: 0,
        percent: 0.0,
    };
}

/// Why a list of steps is not a wave. Steps are numbered from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WaveError {
    #[error("{count} steps; a wave has at most {MAX_WAVE_STEPS}")]
    TooManySteps { count: usize },
    #[error("step {step}: {percent}% is not a share of the fleet (0 < percent <= 100)")]
    PercentOutOfRange { step: usize, percent: f64 },
    #[error(
        "step {step} ({}) is not later than step {} ({}): step times must strictly increase",
        fmt_duration(*after_seconds), step - 1, fmt_duration(*previous)
    )]
    TimeNotIncreasing {
        step: usize,
        after_seconds: u64,
        previous: u64,
    },
    #[error(
        "step {step} ({percent}%) is below step {} ({previous}%): percentages are cumulative and never go down",
        step - 1
    )]
    PercentDecreasing {
        step: usize,
        percent: f64,
        previous: f64,
    },
    #[error(
        "the last step reaches {percent}%, not 100% (the rest of the fleet would never update)"
    )]
    NotFull { percent: f64 },
}

/// What is wrong with a wave written in the `DURATION:PERCENT%,...` grammar.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WaveSpecError {
    #[error("no steps")]
    Empty,
    /// `part` is the step as written.
    #[error("step {part:?}: {problem}")]
    Step { part: String, problem: StepProblem },
    /// The steps parse but do not make a wave (`part` is the offending step as written).
    #[error("step {part:?}: {error}")]
    Plan { part: String, error: WaveError },
    #[error("{0}")]
    TooManySteps(WaveError),
}

/// A step that does not follow the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StepProblem {
    #[error("empty (a stray comma?)")]
    Empty,
    #[error("expected DURATION:PERCENT%")]
    NoColon,
    #[error("the duration must be a whole number followed by d, h, m or s (like 24h)")]
    Duration,
    #[error("the duration is too long")]
    DurationOverflow,
    #[error("the percentage must be a number followed by % (like 10% or 0.5%)")]
    Percent,
}

/// When a release may reach a host: see the module documentation.
///
/// Always valid: built by [`Wave::new`], [`Wave::linear`], [`Wave::immediate`],
/// [`Wave::parse`] or deserialized (which validates).
#[derive(Clone, Copy)]
pub struct Wave {
    start: u64,
    len: u8,
    steps: [Step; MAX_WAVE_STEPS],
}

impl Wave {
    /// Everyone, from `start` on (no steps).
    pub const fn immediate(start: u64) -> Wave {
        Wave {
            start,
            len: 0,
            steps: [Step::UNUSED; MAX_WAVE_STEPS],
        }
    }

    /// The single linear ramp: everyone by `duration` seconds after `start`
    /// (`duration` 0: [`Wave::immediate`]). What channels written before
    /// multi-step waves mean by `{"start", "duration"}`.
    pub const fn linear(start: u64, duration: u64) -> Wave {
        let mut w = Wave::immediate(start);
        if duration > 0 {
            w.len = 1;
            w.steps[0] = Step {
                after_seconds: duration,
                percent: 100.0,
            };
        }
        w
    }

    /// A wave from its steps: times strictly increasing (the first may be 0, a
    /// share released at once), percentages non-decreasing (equal ones hold the
    /// rollout), each in `(0, 100]`, the last 100. No steps: [`Wave::immediate`].
    pub fn new(start: u64, steps: &[Step]) -> Result<Wave, WaveError> {
        if steps.len() > MAX_WAVE_STEPS {
            return Err(WaveError::TooManySteps { count: steps.len() });
        }
        let mut previous: Option<&Step> = None;
        for (i, s) in steps.iter().enumerate() {
            let step = i + 1;
            // Written so that NaN fails too.
            if !(s.percent > 0.0 && s.percent <= 100.0) {
                return Err(WaveError::PercentOutOfRange {
                    step,
                    percent: s.percent,
                });
            }
            if let Some(p) = previous {
                if s.after_seconds <= p.after_seconds {
                    return Err(WaveError::TimeNotIncreasing {
                        step,
                        after_seconds: s.after_seconds,
                        previous: p.after_seconds,
                    });
                }
                if s.percent < p.percent {
                    return Err(WaveError::PercentDecreasing {
                        step,
                        percent: s.percent,
                        previous: p.percent,
                    });
                }
            }
            previous = Some(s);
        }
        if let Some(last) = previous
            && last.percent != 100.0
        {
            return Err(WaveError::NotFull {
                percent: last.percent,
            });
        }
        // `0:100%` is everyone at the start: one spelling for one meaning.
        if let [only] = steps
            && only.after_seconds == 0
        {
            return Ok(Wave::immediate(start));
        }
        let mut w = Wave::immediate(start);
        w.steps[..steps.len()].copy_from_slice(steps);
        w.len = steps.len() as u8;
        Ok(w)
    }

    /// A wave written as `DURATION:PERCENT%,...` (durations `N` followed by `d`,
    /// `h`, `m` or `s`, measured from `start`), e.g. [`WAVE_SPEC_EXAMPLE`].
    pub fn parse(start: u64, spec: &str) -> Result<Wave, WaveSpecError> {
        let parts: Vec<&str> = spec.split(',').map(str::trim).collect();
        if spec.trim().is_empty() {
            return Err(WaveSpecError::Empty);
        }
        let steps = parts
            .iter()
            .map(|part| {
                parse_step(part).map_err(|problem| WaveSpecError::Step {
                    part: part.to_string(),
                    problem,
                })
            })
            .collect::<Result<Vec<Step>, _>>()?;
        Wave::new(start, &steps).map_err(|error| {
            let at = match &error {
                WaveError::TooManySteps { .. } => return WaveSpecError::TooManySteps(error),
                WaveError::PercentOutOfRange { step, .. }
                | WaveError::TimeNotIncreasing { step, .. }
                | WaveError::PercentDecreasing { step, .. } => step - 1,
                WaveError::NotFull { .. } => parts.len() - 1,
            };
            WaveSpecError::Plan {
                part: parts[at].to_string(),
                error,
            }
        })
    }

    /// Unix seconds at which the first (seed 0) hosts may install.
    pub const fn start(&self) -> u64 {
        self.start
    }

    /// The same steps from another start.
    pub const fn with_start(mut self, start: u64) -> Wave {
        self.start = start;
        self
    }

    /// The steps; empty for [`Wave::immediate`].
    pub fn steps(&self) -> &[Step] {
        &self.steps[..usize::from(self.len)]
    }

    /// Everyone at `start`.
    pub const fn is_immediate(&self) -> bool {
        self.len == 0
    }

    /// Seconds from the start until every host may install.
    pub fn duration(&self) -> u64 {
        self.steps().last().map_or(0, |s| s.after_seconds)
    }

    /// The steps in the grammar of [`Wave::parse`] (`0h:100%` for an immediate
    /// wave); parsing it back gives the same wave.
    pub fn spec(&self) -> String {
        if self.is_immediate() {
            return "0h:100%".into();
        }
        self.steps()
            .iter()
            .map(|s| format!("{}:{}%", fmt_duration(s.after_seconds), s.percent))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The share of the fleet (percent, 0 to 100) whose turn has come at `now`.
    pub fn percent_at(&self, now: u64) -> f64 {
        if now < self.start {
            return 0.0;
        }
        let elapsed = now - self.start;
        let (mut t0, mut p0) = (0u64, 0.0f64);
        for s in self.steps() {
            if elapsed < s.after_seconds {
                let f = (elapsed - t0) as f64 / (s.after_seconds - t0) as f64;
                return p0 + (s.percent - p0) * f;
            }
            (t0, p0) = (s.after_seconds, s.percent);
        }
        100.0
    }
}

/// `N` followed by `d`, `h`, `m` or `s`, as seconds.
fn parse_duration(s: &str) -> Result<u64, StepProblem> {
    let unit = match s.as_bytes().last() {
        Some(b'd') => 86_400,
        Some(b'h') => 3600,
        Some(b'm') => 60,
        Some(b's') => 1,
        _ => return Err(StepProblem::Duration),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(StepProblem::Duration);
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or(StepProblem::DurationOverflow)
}

/// `DURATION:PERCENT%`.
fn parse_step(part: &str) -> Result<Step, StepProblem> {
    if part.is_empty() {
        return Err(StepProblem::Empty);
    }
    let (d, p) = part.split_once(':').ok_or(StepProblem::NoColon)?;
    let after_seconds = parse_duration(d.trim())?;
    let number = p
        .trim()
        .strip_suffix('%')
        .ok_or(StepProblem::Percent)?
        .trim();
    // Plain decimals only: no signs, exponents, `inf` or `nan`.
    let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return Err(StepProblem::Percent);
    }
    let percent = number.parse::<f64>().map_err(|_| StepProblem::Percent)?;
    Ok(Step {
        after_seconds,
        percent,
    })
}

/// Seconds in the largest unit of the grammar that divides them: `3d`, `36h`, `90m`, `61s`.
pub fn fmt_duration(seconds: u64) -> String {
    match seconds {
        0 => "0h".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl PartialEq for Wave {
    fn eq(&self, other: &Wave) -> bool {
        self.start == other.start && self.steps() == other.steps()
    }
}

// Every constructor refuses NaN percentages, so equality is reflexive.
impl Eq for Wave {}

impl fmt::Debug for Wave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wave")
            .field("start", &self.start)
            .field("steps", &self.steps())
            .finish()
    }
}

/// The form channels had before multi-step waves; still written for waves of
/// at most one step, so hosts with an older agent keep reading those channels.
#[derive(Serialize)]
struct Linear {
    start: u64,
    duration: u64,
}

#[derive(Serialize)]
struct Stepped<'a> {
    start: u64,
    steps: &'a [Step],
}

impl Serialize for Wave {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.len <= 1 {
            Linear {
                start: self.start,
                duration: self.duration(),
            }
            .serialize(s)
        } else {
            Stepped {
                start: self.start,
                steps: self.steps(),
            }
            .serialize(s)
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaveRepr {
    start: u64,
    duration: Option<u64>,
    steps: Option<Vec<Step>>,
}

impl<'de> Deserialize<'de> for Wave {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Wave, D::Error> {
        let r = WaveRepr::deserialize(d)?;
        match (r.duration, r.steps) {
            (Some(duration), None) => Ok(Wave::linear(r.start, duration)),
            (None, Some(steps)) => {
                Wave::new(r.start, &steps).map_err(|e| D::Error::custom(format!("wave: {e}")))
            }
            (Some(_), Some(_)) => Err(D::Error::custom(
                "wave has both `duration` and `steps`; give one",
            )),
            (None, None) => Err(D::Error::custom("wave needs `duration` or `steps`")),
        }
    }
}

/// When a host with `seed` may install: the time the wave's cumulative share
/// reaches `seed`, interpolated linearly inside the step (rounded down to the
/// second). Seed 0 gets `start`; a one-step wave gives
/// `start + floor(seed * duration)`, exactly what single-ramp waves gave. Seeds
/// outside `[0, 1)` (or NaN) are clamped so a corrupt seed file can neither make
/// a host skip the rollout nor keep it from ever updating.
///
/// Takes the wave by value or by reference.
pub fn install_time(wave: impl Borrow<Wave>, seed: f64) -> u64 {
    let wave = wave.borrow();
    let s = if seed.is_nan() {
        0.0
    } else {
        seed.clamp(0.0, 1.0)
    };
    if let [ramp] = wave.steps() {
        // The single ramp, computed exactly as single-ramp waves always were.
        let d = ramp.after_seconds;
        return wave.start.saturating_add(((s * d as f64) as u64).min(d));
    }
    // In percent: step percentages are usually whole numbers, and `s * 100`
    // rounds to the decimal a seed like 0.055 stands for, so round figures
    // interpolate to round seconds (multiplying before dividing keeps them).
    let pct = s * 100.0;
    let (mut t0, mut p0) = (0u64, 0.0f64);
    for step in wave.steps() {
        let p1 = step.percent;
        if pct < p1 {
            // p0 <= pct < p1: the step has hosts, the offset is below its span.
            let span = step.after_seconds - t0;
            // f64 holds 53 bits: exact for any realistic span.
            let offset = (((pct - p0) * span as f64 / (p1 - p0)) as u64).min(span);
            return wave.start.saturating_add(t0 + offset);
        }
        (t0, p0) = (step.after_seconds, p1);
    }
    wave.start.saturating_add(t0)
}

/// When this host's turn comes (the same as [`install_time`]), for display.
pub fn turn_at(wave: impl Borrow<Wave>, seed: f64) -> u64 {
    install_time(wave, seed)
}

/// Whether the wave has reached a host with `seed` at `now`.
pub fn wave_reached(wave: impl Borrow<Wave>, seed: f64, now: u64) -> bool {
    now >= install_time(wave, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const D: u64 = 86_400;

    fn step(after_seconds: u64, percent: f64) -> Step {
        Step {
            after_seconds,
            percent,
        }
    }

    /// 1 % within 2 h, 10 % by 24 h, 100 % by 72 h, from t = 1000.
    fn plan() -> Wave {
        Wave::new(
            1000,
            &[step(2 * H, 1.0), step(24 * H, 10.0), step(72 * H, 100.0)],
        )
        .unwrap()
    }

    #[test]
    fn multi_step_install_times() {
        let w = plan();
        // (seed, install time - start)
        let rows: &[(f64, u64)] = &[
            (0.0, 0),                       // the canary: at the start
            (0.005, H),                     // half of step 1 -> half of its 2 h
            (0.0099, 7128),                 // just below 1 %: late in step 1
            (0.01, 2 * H),                  // exactly 1 %: first second of step 2
            (0.055, 2 * H + 11 * H),        // half of step 2 (1..10 % over 2..24 h)
            (0.1, 24 * H),                  // exactly 10 %: the start of step 3
            (0.5, 24 * H + 76_800),         // 4/9 of step 3's 48 h
            (0.999_999, 72 * H - 1),        // the last host, just before the end
            (1.0, 72 * H),                  // clamped to the end
            (7.0, 72 * H),                  // clamped
            (-1.0, 0),                      // clamped
            (f64::NAN, 0),                  // a corrupt seed is a canary, not never
            (0.009_999_999_999, 2 * H - 1), // still step 1
        ];
        for &(seed, offset) in rows {
            let got = install_time(w, seed);
            assert_eq!(got, 1000 + offset, "seed {seed}: {}", got as i64 - 1000);
            assert_eq!(turn_at(w, seed), got);
            // By reference too (a caller holding `&Wave`).
            let by_ref: &Wave = &w;
            assert_eq!(install_time(by_ref, seed), got);
            assert!(wave_reached(by_ref, seed, got), "seed {seed}");
            assert!(
                got == 1000 || !wave_reached(w, seed, got - 1),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn hosts_are_spread_evenly_inside_a_step() {
        let w = plan();
        // 1000 seeds spread over [0.1, 1): install times grow monotonically,
        // and the share reached at each time matches the seeds installed.
        let mut last = 0;
        for i in 0..1000 {
            let seed = 0.1 + 0.9 * f64::from(i) / 1000.0;
            let t = install_time(w, seed);
            assert!(t >= last, "seed {seed}");
            last = t;
            let pct = w.percent_at(t);
            assert!((pct / 100.0 - seed).abs() < 1e-4, "seed {seed}: {pct}");
        }
        // Over the whole range: never earlier for a higher seed, and a seed
        // below a step's percentage never waits past that step's time.
        let mut last = 0;
        for i in 0..100_000 {
            let seed = f64::from(i) / 100_000.0;
            let t = install_time(w, seed);
            assert!(t >= last, "seed {seed}");
            last = t;
            for s in w.steps() {
                if seed * 100.0 < s.percent {
                    assert!(t <= 1000 + s.after_seconds, "seed {seed}");
                }
            }
        }
        assert_eq!(w.percent_at(999), 0.0);
        assert_eq!(w.percent_at(1000), 0.0);
        assert_eq!(w.percent_at(1000 + H), 0.5);
        assert_eq!(w.percent_at(1000 + 2 * H), 1.0);
        assert_eq!(w.percent_at(1000 + 24 * H), 10.0);
        assert_eq!(w.percent_at(1000 + 48 * H), 55.0);
        assert_eq!(w.percent_at(1000 + 72 * H), 100.0);
        assert_eq!(Wave::immediate(5).percent_at(5), 100.0);
    }

    #[test]
    fn one_step_is_the_old_single_ramp() {
        // The formula single-ramp waves used.
        fn old(start: u64, duration: u64, seed: f64) -> u64 {
            let s = if seed.is_nan() {
                0.0
            } else {
                seed.clamp(0.0, 1.0)
            };
            start.saturating_add(((s * duration as f64) as u64).min(duration))
        }
        for duration in [0, 1, 7, 100, 3600, 86_400, 30 * D, 1 << 40] {
            let w = Wave::linear(1_800_000_000, duration);
            for i in 0..=1000 {
                let seed = f64::from(i) / 1000.0;
                assert_eq!(
                    install_time(w, seed),
                    old(1_800_000_000, duration, seed),
                    "duration {duration} seed {seed}"
                );
            }
            for seed in [-1.0, 0.999_999_999, 1.0 - f64::EPSILON / 2.0, f64::NAN, 2.0] {
                assert_eq!(install_time(w, seed), old(1_800_000_000, duration, seed));
            }
        }
        assert_eq!(Wave::linear(5, 0), Wave::immediate(5));
        assert_eq!(install_time(Wave::immediate(5), 0.7), 5);
        assert_eq!(install_time(Wave::linear(u64::MAX - 1, 10), 0.9), u64::MAX);
        assert_eq!(
            install_time(
                Wave::new(u64::MAX - 1, &[step(1, 1.0), step(10, 100.0)]).unwrap(),
                0.9
            ),
            u64::MAX
        );
    }

    #[test]
    fn jumps_and_holds() {
        // 5 % at once, then a hold at 5 % until 24 h, then everyone by 48 h.
        let w = Wave::new(0, &[step(0, 5.0), step(24 * H, 5.0), step(48 * H, 100.0)]).unwrap();
        assert_eq!(install_time(w, 0.0), 0);
        assert_eq!(install_time(w, 0.049), 0);
        assert_eq!(install_time(w, 0.05), 24 * H);
        assert_eq!(install_time(w, 0.525), 36 * H);
        assert_eq!(w.percent_at(12 * H), 5.0);
        // A 100 % step at 0 is immediate, however it is written.
        assert_eq!(Wave::new(7, &[step(0, 100.0)]).unwrap(), Wave::immediate(7));
        assert_eq!(Wave::new(7, &[]).unwrap(), Wave::immediate(7));
    }

    #[test]
    fn invalid_plans_table() {
        let too_many: Vec<Step> = (1..=17).map(|i| step(i, 100.0)).collect();
        let rows: Vec<(Vec<Step>, WaveError)> = vec![
            (
                vec![step(H, 0.0), step(2 * H, 100.0)],
                WaveError::PercentOutOfRange {
                    step: 1,
                    percent: 0.0,
                },
            ),
            (
                vec![step(H, 100.5)],
                WaveError::PercentOutOfRange {
                    step: 1,
                    percent: 100.5,
                },
            ),
            (
                vec![step(H, -1.0), step(2 * H, 100.0)],
                WaveError::PercentOutOfRange {
                    step: 1,
                    percent: -1.0,
                },
            ),
            (
                vec![step(2 * H, 1.0), step(2 * H, 100.0)],
                WaveError::TimeNotIncreasing {
                    step: 2,
                    after_seconds: 2 * H,
                    previous: 2 * H,
                },
            ),
            (
                vec![step(2 * H, 1.0), step(H, 100.0)],
                WaveError::TimeNotIncreasing {
                    step: 2,
                    after_seconds: H,
                    previous: 2 * H,
                },
            ),
            (
                vec![step(H, 10.0), step(2 * H, 5.0), step(3 * H, 100.0)],
                WaveError::PercentDecreasing {
                    step: 2,
                    percent: 5.0,
                    previous: 10.0,
                },
            ),
            (
                vec![step(H, 10.0), step(2 * H, 50.0)],
                WaveError::NotFull { percent: 50.0 },
            ),
            (too_many, WaveError::TooManySteps { count: 17 }),
        ];
        for (steps, want) in rows {
            assert_eq!(Wave::new(0, &steps), Err(want), "{steps:?}");
        }
        let nan = Wave::new(0, &[step(H, f64::NAN)]).unwrap_err();
        assert!(matches!(nan, WaveError::PercentOutOfRange { step: 1, .. }));
        // The most steps allowed.
        let max: Vec<Step> = (1..=16).map(|i| step(i, 100.0)).collect();
        assert_eq!(Wave::new(0, &max).unwrap().steps().len(), MAX_WAVE_STEPS);
    }

    #[test]
    fn grammar_table() {
        // (spec, steps) for valid specs.
        let ok: &[(&str, &[(u64, f64)])] = &[
            (
                "2h:1%,24h:10%,72h:100%",
                &[(2 * H, 1.0), (24 * H, 10.0), (72 * H, 100.0)],
            ),
            (" 30m : 0.5% , 1d:100% ", &[(1800, 0.5), (D, 100.0)]),
            ("3d:100%", &[(3 * D, 100.0)]),
            ("0h:5%,90s:100%", &[(0, 5.0), (90, 100.0)]),
            ("0h:100%", &[]),
            ("1h:33.25%,2h:100%", &[(H, 33.25), (2 * H, 100.0)]),
        ];
        for &(spec, steps) in ok {
            let w = Wave::parse(9, spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            let got: Vec<(u64, f64)> = w
                .steps()
                .iter()
                .map(|s| (s.after_seconds, s.percent))
                .collect();
            assert_eq!(got, steps, "{spec}");
            assert_eq!(w.start(), 9);
            // The canonical spelling parses back to the same wave.
            assert_eq!(Wave::parse(9, &w.spec()).unwrap(), w, "{spec}");
        }
        assert_eq!(
            Wave::parse(0, "2h:1%,24h:10%,72h:100%").unwrap().spec(),
            "2h:1%,1d:10%,3d:100%"
        );
        assert_eq!(Wave::linear(0, 90).spec(), "90s:100%");
        assert_eq!(Wave::immediate(0).spec(), "0h:100%");

        // (spec, error message fragment): every message names the bad part.
        let bad: &[(&str, &str)] = &[
            ("", "no steps"),
            ("  ", "no steps"),
            ("2h", "step \"2h\": expected DURATION:PERCENT%"),
            ("2h:1%,", "step \"\": empty (a stray comma?)"),
            ("2h:1%,,3h:100%", "step \"\": empty"),
            ("2x:1%,3h:100%", "step \"2x:1%\": the duration must be"),
            ("h:1%,3h:100%", "step \"h:1%\": the duration must be"),
            ("-2h:1%,3h:100%", "step \"-2h:1%\": the duration must be"),
            ("1.5h:1%,3h:100%", "step \"1.5h:1%\": the duration must be"),
            ("99999999999999999999d:100%", "the duration is too long"),
            ("999999999999999d:100%", "the duration is too long"),
            ("2h:1,3h:100%", "step \"2h:1\": the percentage must be"),
            (
                "2h:1e1%,3h:100%",
                "step \"2h:1e1%\": the percentage must be",
            ),
            (
                "2h:nan%,3h:100%",
                "step \"2h:nan%\": the percentage must be",
            ),
            ("2h:.5%,3h:100%", "step \"2h:.5%\": the percentage must be"),
            ("2h:0%,3h:100%", "step \"2h:0%\": step 1: 0% is not a share"),
            ("2h:101%", "step \"2h:101%\": step 1: 101% is not a share"),
            (
                "2h:1%,1h:100%",
                "step \"1h:100%\": step 2 (1h) is not later than step 1 (2h)",
            ),
            (
                "2h:10%,3h:5%,4h:100%",
                "step \"3h:5%\": step 2 (5%) is below step 1 (10%)",
            ),
            (
                "2h:1%,24h:10%",
                "step \"24h:10%\": the last step reaches 10%, not 100%",
            ),
        ];
        for &(spec, want) in bad {
            let err = Wave::parse(0, spec).unwrap_err().to_string();
            assert!(err.contains(want), "{spec:?}: {err}");
            assert!(!err.contains('\n'), "{spec:?}: {err}");
        }
        let many = (1..=17)
            .map(|h| format!("{h}h:100%"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            Wave::parse(0, &many).unwrap_err().to_string(),
            "17 steps; a wave has at most 16"
        );
    }

    #[test]
    fn json_old_and_new() {
        // (JSON, wave): the old `duration` form keeps its meaning.
        let rows = [
            (r#"{"start":5,"duration":0}"#, Wave::immediate(5)),
            (r#"{"start":5,"duration":100}"#, Wave::linear(5, 100)),
            (r#"{"start":5,"steps":[]}"#, Wave::immediate(5)),
            (
                r#"{"start":5,"steps":[{"after_seconds":100,"percent":100}]}"#,
                Wave::linear(5, 100),
            ),
            (
                r#"{"start":1000,"steps":[{"after_seconds":7200,"percent":1},{"after_seconds":86400,"percent":10.0},{"after_seconds":259200,"percent":100}]}"#,
                plan(),
            ),
        ];
        for (json, want) in rows {
            let w: Wave = serde_json::from_str(json).unwrap();
            assert_eq!(w, want, "{json}");
            let again: Wave = serde_json::from_slice(&serde_json::to_vec(&w).unwrap()).unwrap();
            assert_eq!(again, w, "{json}");
        }
        // Waves of at most one step are written the old way, which hosts with
        // an older agent read.
        assert_eq!(
            serde_json::to_string(&Wave::linear(5, 100)).unwrap(),
            r#"{"start":5,"duration":100}"#
        );
        assert_eq!(
            serde_json::to_string(&Wave::immediate(5)).unwrap(),
            r#"{"start":5,"duration":0}"#
        );
        assert_eq!(
            serde_json::to_string(&plan()).unwrap(),
            r#"{"start":1000,"steps":[{"after_seconds":7200,"percent":1.0},{"after_seconds":86400,"percent":10.0},{"after_seconds":259200,"percent":100.0}]}"#
        );
        for (json, want) in [
            (r#"{"start":5}"#, "needs `duration` or `steps`"),
            (r#"{"start":5,"duration":1,"steps":[]}"#, "both"),
            (r#"{"start":5,"duration":1,"extra":1}"#, "unknown field"),
            (
                r#"{"start":5,"steps":[{"after_seconds":1,"percent":50}]}"#,
                "not 100%",
            ),
            (
                r#"{"start":5,"steps":[{"after_seconds":1,"percent":100,"x":1}]}"#,
                "unknown field",
            ),
            (
                r#"{"start":5,"steps":[{"after_seconds":9,"percent":1},{"after_seconds":9,"percent":100}]}"#,
                "strictly increase",
            ),
        ] {
            let err = serde_json::from_str::<Wave>(json).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
