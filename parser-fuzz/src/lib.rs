//! Generated-input testing of every parser of untrusted bytes, on stable Rust.
//!
//! Each [`Target`] calls a real parser on a byte slice; its seeds are valid
//! inputs made with the real writers. [`run_target`] mutates them (bytes,
//! splices, interesting integers, dictionary tokens, JSON/TOML value edits)
//! with a seeded RNG, runs every input under `catch_unwind` with a time limit
//! and, when the program installs [`CountingAlloc`], an allocation cap.
//! `cargo xtask fuzz` runs long campaigns; `tests/short_pass.rs` is the CI pass.

pub mod alloc;
pub mod mutate;
pub mod runner;
pub mod targets;

pub use alloc::CountingAlloc;
pub use runner::{Config, Finding, Kind, Stats, Target, run_target, table};
pub use targets::TARGETS;

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Outcome classes: the feedback that grows the corpus. An error's class is its
/// text with numbers and quoted parts removed, so "bad field at offset 12" and
/// "... offset 40" are one class and a new kind of refusal is a new one.
/// Bit 0 says the parser accepted the input (counted to show how deep the
/// mutations get); every other bit is free.
pub mod outcome {
    use std::fmt::Debug;

    use crate::runner::fnv;

    pub fn of<T, E: Debug>(r: &Result<T, E>) -> u64 {
        match r {
            Ok(_) => 1,
            Err(e) => of_err(e),
        }
    }

    pub fn of_err<E: Debug>(e: &E) -> u64 {
        of_text(&format!("{e:?}"))
    }

    pub fn of_text(s: &str) -> u64 {
        let mut class = Vec::with_capacity(64);
        let mut quoted = false;
        for b in s.bytes() {
            if b == b'"' {
                quoted = !quoted;
            } else if !quoted && !b.is_ascii_digit() {
                class.push(b);
                if class.len() == 64 {
                    break;
                }
            }
        }
        fnv(&class) & !1
    }

    /// `class` with bit 0 set when the input was accepted.
    pub fn mark(class: u64, accepted: bool) -> u64 {
        (class & !1) | accepted as u64
    }
}
