//! The ChromeOS / CoreOS slot bits in a GPT entry's 64-bit attribute field.
//!
//! Layout (the same as `cgpt`): bits 48–51 priority, 52–55 tries left,
//! 56 successful. Every other bit (for example DPS bit 60, read-only) belongs
//! to someone else and is carried through unchanged.

use core::fmt;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_SHIFT: u32 = 56;

/// Largest value the 4-bit priority and tries fields hold.
pub const FIELD_MAX: u8 = 15;

/// The attribute bits this codec owns; all others are preserved by [`Attrs::to_bits`].
pub const SLOT_BITS_MASK: u64 = 0x1ff << PRIORITY_SHIFT;

/// Priority, tries left and the successful flag of one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// 0 = never boot; higher wins.
    pub priority: u8,
    /// Boot attempts left before the slot is given up.
    pub tries: u8,
    /// The slot has booted and passed its health checks.
    pub successful: bool,
}

impl Attrs {
    pub const fn new(priority: u8, tries: u8, successful: bool) -> Attrs {
        Attrs {
            priority,
            tries,
            successful,
        }
    }

    /// Decodes the slot fields of a GPT attribute value.
    pub const fn from_bits(bits: u64) -> Attrs {
        Attrs {
            priority: ((bits >> PRIORITY_SHIFT) & 0xf) as u8,
            tries: ((bits >> TRIES_SHIFT) & 0xf) as u8,
            successful: (bits >> SUCCESSFUL_SHIFT) & 1 == 1,
        }
    }

    /// Encodes into `old`, keeping every bit outside the slot fields.
    /// Values above 15 saturate: masking would silently turn priority 16
    /// into 0 ("never boot"), which is the worse failure.
    pub const fn to_bits(self, old: u64) -> u64 {
        let p = if self.priority > FIELD_MAX {
            FIELD_MAX
        } else {
            self.priority
        };
        let t = if self.tries > FIELD_MAX {
            FIELD_MAX
        } else {
            self.tries
        };
        (old & !SLOT_BITS_MASK)
            | ((p as u64) << PRIORITY_SHIFT)
            | ((t as u64) << TRIES_SHIFT)
            | ((self.successful as u64) << SUCCESSFUL_SHIFT)
    }

    /// May the boot manager start this slot?
    pub const fn is_bootable(self) -> bool {
        self.priority > 0 && (self.successful || self.tries > 0)
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prio {} tries {} ok {}",
            self.priority,
            self.tries,
            u8::from(self.successful)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_cgpt_layout() {
        // cgpt add -P 15 -T 0 -S 1 writes 0x010f << 48.
        assert_eq!(
            Attrs::from_bits(0x010f_0000_0000_0000),
            Attrs::new(15, 0, true)
        );
        assert_eq!(
            Attrs::from_bits(0x0032_0000_0000_0000),
            Attrs::new(2, 3, false)
        );
        assert_eq!(Attrs::from_bits(0), Attrs::default());
    }

    #[test]
    fn encoding_keeps_foreign_bits() {
        let read_only = 1u64 << 60;
        let legacy_boot = 1u64 << 2;
        let old = read_only | legacy_boot | (0x1ff << 48);
        let bits = Attrs::new(2, 3, false).to_bits(old);
        assert_eq!(bits, read_only | legacy_boot | 0x0032_0000_0000_0000);
        for p in 0..=15 {
            for t in 0..=15 {
                for s in [false, true] {
                    let a = Attrs::new(p, t, s);
                    assert_eq!(Attrs::from_bits(a.to_bits(old)), a);
                    assert_eq!(a.to_bits(old) & !SLOT_BITS_MASK, old & !SLOT_BITS_MASK);
                }
            }
        }
    }

    #[test]
    fn out_of_range_values_saturate() {
        assert_eq!(
            Attrs::from_bits(Attrs::new(16, 200, false).to_bits(0)),
            Attrs::new(15, 15, false)
        );
    }

    #[test]
    fn renders_for_the_console() {
        extern crate alloc;
        assert_eq!(
            alloc::format!("{}", Attrs::new(2, 3, false)),
            "prio 2 tries 3 ok 0"
        );
    }
}
