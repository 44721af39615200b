//! The semaphore's decisions and values (pure); `semaphore.rs` does the I/O.

use serde::{Deserialize, Serialize};

/// What a host asking for a reboot slot gets, given the holders it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It holds one already (re-entrant: the answer is yes again).
    AlreadyHeld,
    /// A slot is free: try to take it.
    Take,
    /// Every slot is taken (or `max` is 0: reboots paused).
    Full,
}

/// The decision for `id` when `holders` hold slots and there are `max`.
pub fn decide(max: u32, holders: &[String], id: &str) -> Decision {
    if holders.iter().any(|h| h == id) {
        Decision::AlreadyHeld
    } else if (holders.len() as u64) < u64::from(max) {
        Decision::Take
    } else {
        Decision::Full
    }
}

/// The value of `cairn/fleet/<group>/max`: a decimal number.
pub fn parse_max(value: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(value).map_err(|_| "a value that is not text".to_string())?;
    text.trim().parse::<u32>().map_err(|_| {
        format!(
            "{:?}, not a number of slots",
            text.chars().take(40).collect::<String>()
        )
    })
}

/// The value of `cairn/fleet/<group>/holders/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// When the slot was taken, in seconds since the Unix epoch.
    pub since: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let h = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (max, holders, id, decision)
        let table = [
            (1, h(&[]), "a", Decision::Take),
            (1, h(&["a"]), "a", Decision::AlreadyHeld),
            (1, h(&["a"]), "b", Decision::Full),
            (2, h(&["a"]), "b", Decision::Take),
            (2, h(&["a", "b"]), "c", Decision::Full),
            (2, h(&["a", "b"]), "b", Decision::AlreadyHeld),
            // max lowered below the holders: nobody new, holders keep theirs.
            (1, h(&["a", "b"]), "c", Decision::Full),
            (1, h(&["a", "b"]), "b", Decision::AlreadyHeld),
            // 0 pauses reboots, but a holder is still a holder.
            (0, h(&[]), "a", Decision::Full),
            (0, h(&["a"]), "a", Decision::AlreadyHeld),
            // ids are case-sensitive.
            (1, h(&["A"]), "a", Decision::Full),
            (u32::MAX, h(&["a"]), "b", Decision::Take),
        ];
        for (max, holders, id, want) in table {
            assert_eq!(
                decide(max, &holders, id),
                want,
                "max {max} holders {holders:?} id {id}"
            );
        }
    }

    #[test]
    fn max_values() {
        let table: &[(&[u8], Option<u32>)] = &[
            (b"1", Some(1)),
            (b"0", Some(0)),
            (b"12\n", Some(12)),
            (b"-1", None),
            (b"", None),
            (b"two", None),
            (b"4294967296", None),
            (b"\xff", None),
        ];
        for (v, want) in table {
            assert_eq!(parse_max(v).ok(), *want, "{v:?}");
        }
    }
}
