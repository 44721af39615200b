//! The boot decision and the updater's attribute transitions, as pure
//! functions so that both sides agree and every row is host-tested.

use crate::attrs::{Attrs, FIELD_MAX};
use core::fmt;

/// One USR slot as found in the partition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// 1-based GPT entry number.
    pub number: u32,
    pub attrs: Attrs,
}

/// Why the chosen slot won. Both render starting with "highest priority
/// bootable", the phrase console tests look for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Strictly higher priority than every other bootable slot (or the only one).
    HighestPriority,
    /// Another bootable slot has the same priority; the lower entry number wins.
    TieLowerNumber,
    /// The committed slot that would win used up its tries without reaching
    /// its health gate ([`is_exhausted`]); this slot booted successfully before.
    Fallback,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::HighestPriority => "highest priority bootable",
            Reason::TieLowerNumber => {
                "highest priority bootable, tie to the lower partition number"
            }
            Reason::Fallback => {
                "fallback: the committed slot above it failed its last boots in a row"
            }
        })
    }
}

/// Why a slot is not a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotBootable {
    /// Priority 0: written, being written, or given up.
    PriorityZero,
    /// Every try is used up and it never passed its health checks.
    NoTriesLeft,
}

impl fmt::Display for NotBootable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotBootable::PriorityZero => "priority 0",
            NotBootable::NoTriesLeft => "no tries left and never marked successful",
        })
    }
}

/// `None` when the slot may boot, else why not.
pub const fn why_not(a: Attrs) -> Option<NotBootable> {
    if a.priority == 0 {
        Some(NotBootable::PriorityZero)
    } else if !a.successful && a.tries == 0 {
        Some(NotBootable::NoTriesLeft)
    } else {
        None
    }
}

/// A committed slot that used up its tries: every boot is a trial, so the
/// boot manager counts attempts on committed slots too and cairn-mark-good
/// re-arms them ([`mark_good`]) once the health gate is reached. Tries 0 on a
/// committed slot therefore means its last boots all died before the gate
/// (dm-verity tripping on bit rot, a cairn-init FATAL, a kernel panic).
pub const fn is_exhausted(a: Attrs) -> bool {
    a.priority > 0 && a.successful && a.tries == 0
}

/// The boot decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    /// 1-based GPT entry number of the chosen slot.
    pub number: u32,
    pub reason: Reason,
    /// Attributes as found.
    pub before: Attrs,
    /// Attributes to commit before starting the slot (one try used up).
    pub after: Attrs,
    /// With [`Reason::Fallback`]: the exhausted slot given up, and the
    /// attributes it gets in the same commit (priority 0), so the next boots
    /// do not go back to it.
    pub given_up: Option<(SlotState, Attrs)>,
}

impl Choice {
    /// The table must be written before the slot is started.
    pub fn needs_write(&self) -> bool {
        self.before != self.after || self.given_up.is_some()
    }

    /// Every entry this choice changes, in one commit.
    pub fn writes(&self) -> impl Iterator<Item = (u32, Attrs)> + '_ {
        core::iter::once((self.number, self.after))
            .filter(|(_, a)| *a != self.before)
            .chain(self.given_up.map(|(s, a)| (s.number, a)))
    }
}

impl fmt::Display for Choice {
    /// `highest priority bootable (prio 2 tries 3 ok 0 -> prio 2 tries 2 ok 0)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} -> {})", self.reason, self.before, self.after)?;
        if let Some((s, a)) = self.given_up {
            write!(f, "; entry {} given up ({} -> {a})", s.number, s.attrs)?;
        }
        Ok(())
    }
}

/// The highest priority slot among those that pass `keep`; a tie goes to
/// the lower entry number.
fn best(slots: &[SlotState], keep: impl Fn(Attrs) -> bool) -> Option<SlotState> {
    let mut best: Option<SlotState> = None;
    for s in slots.iter().filter(|s| keep(s.attrs)) {
        best = match best {
            Some(b)
                if b.attrs.priority > s.attrs.priority
                    || (b.attrs.priority == s.attrs.priority && b.number < s.number) =>
            {
                Some(b)
            }
            _ => Some(*s),
        };
    }
    best
}

/// Picks the slot to boot: the highest priority among slots with
/// `priority > 0 && (successful || tries > 0)`; a tie goes to the lower entry
/// number. When that slot is [`is_exhausted`] and another bootable slot holds
/// an OS that booted successfully before, that one boots instead and the
/// exhausted slot is given up in the same commit; with no such slot the
/// exhausted one keeps being tried (it is all the host has). `None` when no
/// slot may boot.
pub fn choose(slots: &[SlotState]) -> Option<Choice> {
    let top = best(slots, Attrs::is_bootable)?;
    let fallback = if is_exhausted(top.attrs) {
        best(slots, |a| {
            a.is_bootable() && a.successful && !is_exhausted(a)
        })
    } else {
        None
    };
    let (chosen, reason, given_up) = match fallback {
        Some(f) => (f, Reason::Fallback, Some((top, mark_failed(top.attrs)))),
        None => {
            let tied = slots.iter().any(|s| {
                s.number != top.number
                    && s.attrs.is_bootable()
                    && s.attrs.priority == top.attrs.priority
            });
            let reason = if tied {
                Reason::TieLowerNumber
            } else {
                Reason::HighestPriority
            };
            (top, reason, None)
        }
    };
    Some(Choice {
        number: chosen.number,
        reason,
        before: chosen.attrs,
        after: boot_attempt(chosen.attrs),
        given_up,
    })
}

/// Why the boot manager did not start a slot it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The slot is proven bad: a boot file is missing, too large, or fails its
    /// signature or hash check. Trying again cannot help.
    Proven,
    /// Something that may work next time: an ESP read error, the firmware out
    /// of resources, a table write that failed.
    Transient,
}

/// What to record for a slot refused during this boot: a proven-bad slot is
/// marked failed, a transient failure costs one try. `None` when nothing may
/// be written: the change would leave no other bootable slot (the last one
/// is never made unbootable by the boot manager; `refused` lists the entries
/// already refused this boot, which do not count as bootable).
pub fn after_refusal(
    slots: &[SlotState],
    refused: &[u32],
    number: u32,
    why: Refused,
) -> Option<Attrs> {
    let s = slots.iter().find(|s| s.number == number)?;
    let after = match why {
        Refused::Proven => mark_failed(s.attrs),
        Refused::Transient => boot_attempt(s.attrs),
    };
    let others_bootable = slots
        .iter()
        .any(|o| o.number != number && !refused.contains(&o.number) && o.attrs.is_bootable());
    if after == s.attrs || (!after.is_bootable() && !others_bootable) {
        return None;
    }
    Some(after)
}

/// One boot attempt: if the slot has tries left, one is used up (DESIGN:
/// "if the chosen slot has tries left, decrement"), successful or not.
pub const fn boot_attempt(a: Attrs) -> Attrs {
    Attrs {
        tries: a.tries.saturating_sub(1),
        ..a
    }
}

/// State machine step 2: the inactive slot, before it is written. It must
/// never be bootable while its contents are incomplete.
pub const fn mark_unbootable() -> Attrs {
    Attrs::new(0, 0, false)
}

/// Tries a freshly written slot gets (state machine step 3).
pub const UPDATE_TRIES: u8 = 3;
/// Priority of a freshly written slot; the other slot is kept below it.
pub const UPDATE_PRIORITY: u8 = 2;

/// State machine step 3: the inactive slot has been written, read back and
/// verified. Returns `(updated, other)`: the updated slot gets (2, 3, 0) and
/// the other slot keeps its state, but a priority that is not below 2 is
/// lowered to 1, so the new slot wins without priorities climbing by one per
/// release until they hit the 4-bit ceiling. A priority 0 stays 0.
pub const fn mark_updated(other: Attrs) -> (Attrs, Attrs) {
    let updated = Attrs::new(UPDATE_PRIORITY, UPDATE_TRIES, false);
    let other = if other.priority >= UPDATE_PRIORITY {
        Attrs {
            priority: 1,
            ..other
        }
    } else {
        other
    };
    (updated, other)
}

/// Boots in a row a committed slot may die before its health gate before the
/// boot manager falls back to the other slot, when the board does not say.
pub const DEFAULT_COMMITTED_TRIES: u8 = 3;

/// State machine step 5, and every later boot that reaches the health gate:
/// keeps the priority, sets successful and re-arms the tries to `tries`
/// (the board's K), so the next boots are counted again ([`is_exhausted`]).
pub const fn mark_good(a: Attrs, tries: u8) -> Attrs {
    Attrs::new(a.priority, if tries == 0 { 1 } else { tries }, true)
}

/// The other slot when the booted one reaches its gate: a committed slot
/// (successful, priority above 0) is the fallback and gets its tries
/// re-armed, so boots of it that were cut short before its own gate (or an
/// older Cairn that left committed slots at tries 0) do not leave it looking
/// exhausted. A slot the boot manager gave up has priority 0 and stays so.
pub const fn arm_fallback(other: Attrs, tries: u8) -> Attrs {
    if other.successful && other.priority > 0 {
        mark_good(other, tries)
    } else {
        other
    }
}

/// A slot that failed for good (its boot files fail their check, or the
/// updater gives it up): priority 0 and no tries. The successful bit is kept
/// as a record that it once booted; with priority 0 it is never chosen.
pub const fn mark_failed(a: Attrs) -> Attrs {
    Attrs {
        priority: 0,
        tries: 0,
        ..a
    }
}

const _: () = assert!(UPDATE_PRIORITY < FIELD_MAX && UPDATE_TRIES <= FIELD_MAX);

#[cfg(test)]
mod tests {
    use super::*;
    extern crate alloc;
    use alloc::format;

    const A: u32 = 2;
    const B: u32 = 3;
    const K: u8 = DEFAULT_COMMITTED_TRIES;

    fn st(a: (u8, u8, u8), b: (u8, u8, u8)) -> [SlotState; 2] {
        let at = |(p, t, s): (u8, u8, u8)| Attrs::new(p, t, s == 1);
        [
            SlotState {
                number: A,
                attrs: at(a),
            },
            SlotState {
                number: B,
                attrs: at(b),
            },
        ]
    }

    /// Every row of the DESIGN state machine plus ties and dead ends:
    /// (A attrs, B attrs) -> (chosen, reason, attrs written before boot).
    #[test]
    fn boot_choice_table() {
        use Reason::*;
        type Row = (
            (u8, u8, u8),
            (u8, u8, u8),
            Option<(u32, Reason, (u8, u8, u8))>,
        );
        let rows: &[Row] = &[
            // 1. fresh image
            ((1, 0, 1), (0, 0, 0), Some((A, HighestPriority, (1, 0, 1)))),
            // 2. B being written
            ((1, 0, 1), (0, 0, 0), Some((A, HighestPriority, (1, 0, 1)))),
            // 3./4. B written: each boot costs one try
            ((1, 0, 1), (2, 3, 0), Some((B, HighestPriority, (2, 2, 0)))),
            ((1, 0, 1), (2, 2, 0), Some((B, HighestPriority, (2, 1, 0)))),
            ((1, 0, 1), (2, 1, 0), Some((B, HighestPriority, (2, 0, 0)))),
            // 4. tries used up: A wins again (rollback)
            ((1, 0, 1), (2, 0, 0), Some((A, HighestPriority, (1, 0, 1)))),
            // 5. B marked good
            ((1, 0, 1), (2, 0, 1), Some((B, HighestPriority, (2, 0, 1)))),
            // next update, A being rewritten / written
            ((0, 0, 0), (2, 0, 1), Some((B, HighestPriority, (2, 0, 1)))),
            ((2, 3, 0), (1, 0, 1), Some((A, HighestPriority, (2, 2, 0)))),
            // ties go to the lower partition number, whichever way round
            ((1, 0, 1), (1, 0, 1), Some((A, TieLowerNumber, (1, 0, 1)))),
            ((2, 3, 0), (2, 3, 0), Some((A, TieLowerNumber, (2, 2, 0)))),
            // a tie with a non-bootable slot is no tie
            ((2, 0, 0), (2, 1, 0), Some((B, HighestPriority, (2, 0, 0)))),
            // successful with tries left: the try is still counted (DESIGN rule)
            ((3, 2, 1), (2, 0, 1), Some((A, HighestPriority, (3, 1, 1)))),
            // nothing bootable
            ((0, 0, 0), (0, 0, 0), None),
            ((0, 5, 1), (2, 0, 0), None),
            ((15, 0, 0), (0, 15, 1), None),
        ];
        for (i, &(a, b, want)) in rows.iter().enumerate() {
            let got = choose(&st(a, b));
            let want = want.map(|(n, r, (p, t, s))| (n, r, Attrs::new(p, t, s == 1)));
            assert_eq!(
                got.map(|c| (c.number, c.reason, c.after)),
                want,
                "row {i}: A{a:?} B{b:?}"
            );
            if let Some(c) = got {
                let before = if c.number == A { a } else { b };
                assert_eq!(c.before, Attrs::new(before.0, before.1, before.2 == 1));
                assert_eq!(c.needs_write(), c.before != c.after);
            }
        }
    }

    #[test]
    fn tie_goes_to_lower_number_regardless_of_order() {
        let mut s = st((4, 1, 0), (4, 1, 0));
        s.reverse();
        assert_eq!(choose(&s).map(|c| c.number), Some(A));
        // And with more than two slots.
        let three = [
            SlotState {
                number: 7,
                attrs: Attrs::new(5, 0, true),
            },
            SlotState {
                number: 4,
                attrs: Attrs::new(5, 1, false),
            },
            SlotState {
                number: 9,
                attrs: Attrs::new(6, 0, false),
            },
        ];
        assert_eq!(
            choose(&three).map(|c| (c.number, c.reason)),
            Some((4, Reason::TieLowerNumber))
        );
        assert_eq!(choose(&[]), None);
    }

    /// The updater's transitions walk the state machine from a fresh image
    /// through two updates, a rollback and a failure, checking the choice at
    /// every step.
    #[test]
    fn updater_transitions_table() {
        // 1. fresh image, 2. before writing B
        let mut a = Attrs::new(1, 0, true);
        let mut b = mark_unbootable();
        assert_eq!(b, Attrs::new(0, 0, false));
        assert_eq!(choose(&slots(a, b)).map(|c| c.number), Some(A));
        // 3. B written and verified
        (b, a) = mark_updated(a);
        assert_eq!((a, b), (Attrs::new(1, 0, true), Attrs::new(2, 3, false)));
        // 4. one boot attempt
        let c = choose(&slots(a, b)).expect("bootable");
        assert_eq!((c.number, c.after), (B, Attrs::new(2, 2, false)));
        b = c.after;
        // 5. health checks pass: committed, and its next boots counted too
        b = mark_good(b, K);
        assert_eq!(b, Attrs::new(2, K, true));
        assert_eq!(
            choose(&slots(a, b)).map(|c| (c.number, c.after)),
            Some((B, Attrs::new(2, K - 1, true)))
        );

        // Next release goes to A: A unbootable, written, then updated.
        a = mark_unbootable();
        assert_eq!(choose(&slots(a, b)).map(|c| c.number), Some(B));
        (a, b) = mark_updated(b);
        assert_eq!((a, b), (Attrs::new(2, 3, false), Attrs::new(1, K, true)));
        // 4./6. A never comes up healthy: three attempts, then B again.
        for tries_left in [2, 1, 0] {
            let c = choose(&slots(a, b)).expect("bootable");
            assert_eq!((c.number, c.after.tries), (A, tries_left));
            a = c.after;
        }
        let c = choose(&slots(a, b)).expect("bootable");
        assert_eq!((c.number, c.reason), (B, Reason::HighestPriority));
        assert_eq!(why_not(a), Some(NotBootable::NoTriesLeft));

        // The updater gives A up; priorities stay bounded over many releases.
        a = mark_failed(a);
        assert_eq!(a, Attrs::new(0, 0, false));
        assert_eq!(why_not(a), Some(NotBootable::PriorityZero));
        for _ in 0..40 {
            (a, b) = mark_updated(b);
            a = mark_good(choose(&slots(a, b)).expect("bootable").after, K);
            core::mem::swap(&mut a, &mut b);
            assert!(a.priority <= 2 && b.priority <= 2);
        }
    }

    #[test]
    fn transitions_keep_what_they_should() {
        assert_eq!(
            mark_good(Attrs::new(7, 1, false), 3),
            Attrs::new(7, 3, true)
        );
        assert_eq!(mark_good(Attrs::new(7, 0, true), 0), Attrs::new(7, 1, true));
        assert_eq!(
            arm_fallback(Attrs::new(1, 0, true), 3),
            Attrs::new(1, 3, true)
        );
        assert_eq!(
            arm_fallback(Attrs::new(1, 2, true), 3),
            Attrs::new(1, 3, true)
        );
        for keep in [(0, 0, true), (2, 0, false), (2, 3, false), (0, 0, false)] {
            let a = Attrs::new(keep.0, keep.1, keep.2);
            assert_eq!(arm_fallback(a, 3), a);
        }
        assert_eq!(mark_failed(Attrs::new(2, 0, true)), Attrs::new(0, 0, true));
        assert_eq!(
            mark_updated(Attrs::new(0, 0, false)).1,
            Attrs::new(0, 0, false)
        );
        assert_eq!(
            mark_updated(Attrs::new(15, 0, true)).1,
            Attrs::new(1, 0, true)
        );
        assert_eq!(boot_attempt(Attrs::new(2, 0, true)), Attrs::new(2, 0, true));
    }

    #[test]
    fn renders_one_line_reasons() {
        let c = choose(&st((1, 0, 1), (0, 0, 0))).expect("bootable");
        assert_eq!(
            format!("{c}"),
            "highest priority bootable (prio 1 tries 0 ok 1 -> prio 1 tries 0 ok 1)"
        );
        let c = choose(&st((1, 0, 1), (2, 3, 0))).expect("bootable");
        assert_eq!(
            format!("{c}"),
            "highest priority bootable (prio 2 tries 3 ok 0 -> prio 2 tries 2 ok 0)"
        );
        assert_eq!(
            format!("{}", NotBootable::NoTriesLeft),
            "no tries left and never marked successful"
        );
    }

    /// A committed slot that stops booting: K counted boots, then the other
    /// committed slot, and the exhausted one given up in the same commit.
    #[test]
    fn committed_slot_that_stops_booting_falls_back() {
        use Reason::*;
        type Row = (
            (u8, u8, u8),
            (u8, u8, u8),
            Option<(u32, Reason, (u8, u8, u8), Option<(u32, (u8, u8, u8))>)>,
        );
        let rows: &[Row] = &[
            // B committed and armed: each boot counts
            (
                (1, 3, 1),
                (2, 3, 1),
                Some((B, HighestPriority, (2, 2, 1), None)),
            ),
            (
                (1, 3, 1),
                (2, 1, 1),
                Some((B, HighestPriority, (2, 0, 1), None)),
            ),
            // B died K times before its gate: A, and B given up
            (
                (1, 3, 1),
                (2, 0, 1),
                Some((A, Fallback, (1, 2, 1), Some((B, (0, 0, 1))))),
            ),
            // the same the other way round, and with equal priorities
            (
                (2, 0, 1),
                (1, 1, 1),
                Some((B, Fallback, (1, 0, 1), Some((A, (0, 0, 1))))),
            ),
            (
                (2, 0, 1),
                (2, 2, 1),
                Some((B, Fallback, (2, 1, 1), Some((A, (0, 0, 1))))),
            ),
            // nothing to fall back to: keep trying the only OS there is
            (
                (1, 0, 1),
                (0, 0, 0),
                Some((A, HighestPriority, (1, 0, 1), None)),
            ),
            (
                (2, 0, 1),
                (0, 0, 1),
                Some((A, HighestPriority, (2, 0, 1), None)),
            ),
            // a slot that never booted successfully is no fallback
            (
                (2, 0, 1),
                (1, 3, 0),
                Some((A, HighestPriority, (2, 0, 1), None)),
            ),
            // both exhausted: the higher priority, nothing given up
            (
                (1, 0, 1),
                (2, 0, 1),
                Some((B, HighestPriority, (2, 0, 1), None)),
            ),
            // an exhausted slot below the running one changes nothing
            (
                (1, 0, 1),
                (2, 3, 1),
                Some((B, HighestPriority, (2, 2, 1), None)),
            ),
            // a trial slot still wins over an exhausted committed one below it
            (
                (1, 0, 1),
                (2, 3, 0),
                Some((B, HighestPriority, (2, 2, 0), None)),
            ),
        ];
        for (i, &(a, b, want)) in rows.iter().enumerate() {
            let got = choose(&st(a, b));
            let at = |(p, t, s): (u8, u8, u8)| Attrs::new(p, t, s == 1);
            let want = want.map(|(n, r, after, g)| (n, r, at(after), g.map(|(n, x)| (n, at(x)))));
            assert_eq!(
                got.map(|c| (
                    c.number,
                    c.reason,
                    c.after,
                    c.given_up.map(|(s, x)| (s.number, x))
                )),
                want,
                "row {i}: A{a:?} B{b:?}"
            );
            if let Some(c) = got {
                // One commit carries every change, and only changes.
                let writes: alloc::vec::Vec<_> = c.writes().collect();
                assert_eq!(writes.is_empty(), !c.needs_write(), "row {i}");
                assert!(writes.iter().all(|&(n, x)| {
                    let before = if n == A { at(a) } else { at(b) };
                    x != before
                }));
            }
        }
    }

    /// The whole story of `rollback-after-commit`: v2 committed on B, then
    /// B's /usr rots; the host is back on A within K+1 boots and stays there.
    #[test]
    fn rot_after_commit_is_back_on_the_old_slot_within_k_plus_one_boots() {
        let mut a = Attrs::new(1, K, true);
        let mut b = mark_updated(a).0;
        a = mark_updated(a).1;
        let c = choose(&slots(a, b)).expect("bootable");
        b = mark_good(c.after, K);
        let mut boots = 0;
        let landed = loop {
            boots += 1;
            assert!(boots <= K + 1, "still not back on A after {boots} boots");
            let c = choose(&slots(a, b)).expect("bootable");
            for (n, x) in c.writes() {
                if n == A { a = x } else { b = x }
            }
            if c.number == A {
                break c;
            }
            // B dies in early boot: nothing re-arms it.
        };
        assert_eq!(landed.reason, Reason::Fallback);
        assert_eq!(b, Attrs::new(0, 0, true));
        // A reaches its gate and is re-armed; B is never chosen again.
        a = mark_good(a, K);
        for _ in 0..5 {
            let c = choose(&slots(a, b)).expect("bootable");
            assert_eq!(c.number, A);
            a = mark_good(c.after, K);
        }
    }

    #[test]
    fn refusals_cost_what_they_prove_and_never_the_last_slot() {
        use Refused::*;
        let at = |(p, t, s): (u8, u8, u8)| Attrs::new(p, t, s == 1);
        type Row = (
            (u8, u8, u8),
            (u8, u8, u8),
            &'static [u32],
            u32,
            Refused,
            Option<(u8, u8, u8)>,
        );
        let rows: &[Row] = &[
            // proven bad, another slot can boot: marked failed
            ((1, 3, 1), (2, 2, 0), &[], B, Proven, Some((0, 0, 0))),
            ((1, 3, 1), (2, 2, 1), &[], B, Proven, Some((0, 0, 1))),
            // transient: one try
            ((1, 3, 1), (2, 2, 0), &[], B, Transient, Some((2, 1, 0))),
            ((1, 3, 1), (2, 2, 1), &[], B, Transient, Some((2, 1, 1))),
            // transient on a committed slot with no tries left: nothing to write
            ((1, 3, 1), (2, 0, 1), &[], B, Transient, None),
            // the last bootable slot: never made unbootable
            ((1, 3, 1), (0, 0, 0), &[], A, Proven, None),
            ((0, 0, 0), (2, 1, 0), &[], B, Transient, None),
            ((1, 3, 1), (2, 1, 0), &[A], B, Transient, None),
            ((1, 3, 1), (2, 1, 0), &[A], B, Proven, None),
            // ... but a try it can spare is still counted
            ((0, 0, 0), (2, 2, 0), &[], B, Transient, Some((2, 1, 0))),
        ];
        for (i, &(a, b, refused, n, why, want)) in rows.iter().enumerate() {
            assert_eq!(
                after_refusal(&st(a, b), refused, n, why),
                want.map(at),
                "row {i}"
            );
        }
    }

    fn slots(a: Attrs, b: Attrs) -> [SlotState; 2] {
        [
            SlotState {
                number: A,
                attrs: a,
            },
            SlotState {
                number: B,
                attrs: b,
            },
        ]
    }
}
