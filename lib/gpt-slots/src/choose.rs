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
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::HighestPriority => "highest priority bootable",
            Reason::TieLowerNumber => {
                "highest priority bootable, tie to the lower partition number"
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
}

impl Choice {
    /// The table must be written before the slot is started.
    pub fn needs_write(&self) -> bool {
        self.before != self.after
    }
}

impl fmt::Display for Choice {
    /// `highest priority bootable (prio 2 tries 3 ok 0 -> prio 2 tries 2 ok 0)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} -> {})", self.reason, self.before, self.after)
    }
}

/// Picks the slot to boot: the highest priority among slots with
/// `priority > 0 && (successful || tries > 0)`; a tie goes to the lower entry
/// number. `None` when no slot may boot.
pub fn choose(slots: &[SlotState]) -> Option<Choice> {
    let mut best: Option<SlotState> = None;
    for s in slots.iter().filter(|s| s.attrs.is_bootable()) {
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
    let best = best?;
    let tied = slots.iter().any(|s| {
        s.number != best.number && s.attrs.is_bootable() && s.attrs.priority == best.attrs.priority
    });
    let reason = if tied {
        Reason::TieLowerNumber
    } else {
        Reason::HighestPriority
    };
    Some(Choice {
        number: best.number,
        reason,
        before: best.attrs,
        after: boot_attempt(best.attrs),
    })
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

/// State machine step 5: health checks passed. Keeps the priority, clears
/// the tries and sets successful.
pub const fn mark_good(a: Attrs) -> Attrs {
    Attrs::new(a.priority, 0, true)
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
        // 5. health checks pass
        b = mark_good(b);
        assert_eq!(b, Attrs::new(2, 0, true));
        assert_eq!(
            choose(&slots(a, b)).map(|c| (c.number, c.needs_write())),
            Some((B, false))
        );

        // Next release goes to A: A unbootable, written, then updated.
        a = mark_unbootable();
        assert_eq!(choose(&slots(a, b)).map(|c| c.number), Some(B));
        (a, b) = mark_updated(b);
        assert_eq!((a, b), (Attrs::new(2, 3, false), Attrs::new(1, 0, true)));
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
            a = mark_good(choose(&slots(a, b)).expect("bootable").after);
            core::mem::swap(&mut a, &mut b);
            assert!(a.priority <= 2 && b.priority <= 2);
        }
    }

    #[test]
    fn transitions_keep_what_they_should() {
        assert_eq!(mark_good(Attrs::new(7, 3, false)), Attrs::new(7, 0, true));
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
