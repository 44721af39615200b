//! Device path bytes: which BlockIO handle is the whole disk holding the ESP.
//! A node is `type u8, subtype u8, length u16 LE` (length includes the header).
#![cfg_attr(not(target_os = "uefi"), allow(dead_code))]

const END_TYPE: u8 = 0x7f;

/// The nodes of the first instance, without the end node. Stops early on a
/// malformed length rather than reading past the data.
fn nodes(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = path;
    core::iter::from_fn(move || {
        if rest.len() < 4 || rest[0] == END_TYPE {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
        if len < 4 || len > rest.len() {
            return None;
        }
        let (node, tail) = rest.split_at(len);
        rest = tail;
        Some(node)
    })
}

/// Number of nodes of `prefix` when it is a proper, non-empty prefix of
/// `path` node by node (the disk of a partition's path), else `None`.
pub fn proper_prefix_len(prefix: &[u8], path: &[u8]) -> Option<usize> {
    let mut full = nodes(path);
    let mut n = 0;
    for node in nodes(prefix) {
        if full.next() != Some(node) {
            return None;
        }
        n += 1;
    }
    (n > 0 && full.next().is_some()).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(t: u8, s: u8, data: &[u8]) -> Vec<u8> {
        let mut v = vec![t, s];
        v.extend_from_slice(&((4 + data.len()) as u16).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    fn path(nodes: &[Vec<u8>]) -> Vec<u8> {
        let mut v: Vec<u8> = nodes.concat();
        v.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        v
    }

    #[test]
    fn finds_the_disk_of_a_partition() {
        let pci = node(1, 1, &[0, 3]);
        let acpi = node(2, 1, &[0xd0, 0x41, 3, 0x0a, 0, 0, 0, 0]);
        let hd = node(4, 1, &[1; 38]);
        let disk = path(&[acpi.clone(), pci.clone()]);
        let esp = path(&[acpi.clone(), pci.clone(), hd.clone()]);
        assert_eq!(proper_prefix_len(&disk, &esp), Some(2));
        // Not a proper prefix: the ESP itself, another PCI slot, nothing.
        assert_eq!(proper_prefix_len(&esp, &esp), None);
        let other = path(&[acpi.clone(), node(1, 1, &[0, 4])]);
        assert_eq!(proper_prefix_len(&other, &esp), None);
        assert_eq!(proper_prefix_len(&path(&[]), &esp), None);
        // Truncated or malformed data is not a match and does not panic.
        assert_eq!(proper_prefix_len(&disk[..5], &esp), None);
        assert_eq!(proper_prefix_len(&[1, 1, 2, 0, 9, 9], &esp), None);
    }
}
