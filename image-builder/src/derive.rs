//! Identifiers that would normally be random (GUIDs, salts, volume ids) are
//! derived from the build's inputs instead, so the same inputs give the same
//! bytes and different inputs never share an id.

use disk_layout::Guid;
use sha2::{Digest, Sha256};

/// The digest every derived value starts from: the hash of all build inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl Seed {
    pub fn bytes(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"cairn-derive-v1\0");
        h.update(self.0);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// An RFC 4122 version-4-shaped GUID, so tools that check the variant accept it.
    pub fn guid(&self, purpose: &str) -> Guid {
        let b = self.bytes(purpose);
        let mut be = [0u8; 16];
        be.copy_from_slice(&b[..16]);
        be[6] = (be[6] & 0x0f) | 0x40;
        be[8] = (be[8] & 0x3f) | 0x80;
        Guid::from_be_bytes(be)
    }
}

/// The dm-verity salt of every /usr image of one board: derived from the
/// board's identity (name and architecture) only, not from the [`Seed`].
///
/// Why not from the build inputs like the other ids: dm-verity's level-0
/// entry of a block is `sha256(salt ‖ block)`, and those entries are the
/// block keys of a delta update (the format 3 block index). With one salt
/// for all releases of a board, a block that did not change has the same
/// level-0 hash in the old and the new release, so a host finds what it
/// already holds by reading its slot's small, verified hash tree instead of
/// reading and hashing the whole slot. The salt is not a secret: it is in
/// the kernel command line and the manifest; it only keeps precomputed
/// hashes from applying to other boards' trees, which this still does.
pub fn board_verity_salt(board: &str, arch: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cairn-verity-salt-v1\0");
    // Lengths first: ("ab", "c") and ("a", "bc") give different salts.
    h.update((board.len() as u64).to_le_bytes());
    h.update(board.as_bytes());
    h.update((arch.len() as u64).to_le_bytes());
    h.update(arch.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One salt per board and architecture: every release of a board shares
    /// it (nothing else goes in), other boards and arches differ.
    #[test]
    fn the_verity_salt_is_the_boards() {
        let s = board_verity_salt("qemu-x86_64", "x86_64");
        assert_eq!(s, board_verity_salt("qemu-x86_64", "x86_64"));
        // (board, arch) that must not share it.
        for (board, arch) in [
            ("qemu-x86_64", "aarch64"),
            ("qemu-x86_6", "4x86_64"),
            ("other", "x86_64"),
        ] {
            assert_ne!(s, board_verity_salt(board, arch), "{board} {arch}");
        }
        // Not the build-input-derived value of the same purpose.
        assert_ne!(s, Seed([0; 32]).bytes("verity salt"));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let s = Seed([1; 32]);
        assert_eq!(s.guid("usr-a"), s.guid("usr-a"));
        assert_ne!(s.guid("usr-a"), s.guid("usr-b"));
        assert_ne!(s.guid("usr-a"), Seed([2; 32]).guid("usr-a"));
        let text = s.guid("x").to_string();
        assert_eq!(&text[14..15], "4", "{text}");
        assert!("89ab".contains(&text[19..20]), "{text}");
    }
}
