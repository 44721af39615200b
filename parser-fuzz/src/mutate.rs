//! The mutator: byte-level edits, splices of corpus entries, interesting
//! integers, dictionary tokens, line edits for text formats, and value edits
//! for JSON and TOML documents (parse, change one node, print again), so
//! schema checks behind a JSON parser are reached, not just its syntax errors.

use serde_json::Value;

/// SplitMix64: tiny, fast and fully determined by its seed, so a finding is
/// reproduced by its seed and iteration alone.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// How a target's inputs are shaped, for the structure-aware mutations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Binary,
    /// Line-oriented text (modules.dep, boot.sig, HTTP headers).
    Text,
    Json,
    Toml,
}

/// Values at the edges of the integer types and the sizes parsers allocate by.
const INTERESTING: [u64; 24] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x10_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_fffe,
    0xffff_ffff_ffff_ffff,
    4096,
    512,
    128,
];

/// The same edges as decimal text, plus what JSON and TOML number parsers find hard.
const INTERESTING_NUMBERS: [&str; 18] = [
    "0",
    "-1",
    "1",
    "255",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e309",
    "-0",
    "0.5",
    "1e-400",
    "99999999999999999999999999999999",
    "0x10",
    "NaN",
];

/// Applies one to sixteen stacked mutations to `input`; never longer than `max_len`.
pub fn mutate(
    rng: &mut Rng,
    input: &[u8],
    corpus: &[Vec<u8>],
    dict: &[&[u8]],
    format: Format,
    max_len: usize,
) -> Vec<u8> {
    // Structure first: a document edited as a value is still a document, which
    // byte edits alone rarely keep.
    let mut out = match format {
        Format::Json if rng.one_in(2) => {
            json_mutation(rng, input, corpus).unwrap_or_else(|| input.to_vec())
        }
        Format::Toml if rng.one_in(2) => {
            toml_mutation(rng, input, corpus).unwrap_or_else(|| input.to_vec())
        }
        _ => input.to_vec(),
    };
    let stack = 1 << rng.below(5);
    // Structured outputs get fewer byte edits so most stay parseable.
    let stack = if out != input && rng.one_in(2) {
        0
    } else {
        stack
    };
    for _ in 0..stack {
        if format == Format::Text && rng.one_in(4) {
            line_mutation(rng, &mut out, corpus, dict);
        } else {
            byte_mutation(rng, &mut out, corpus, dict);
        }
        if out.len() > max_len {
            out.truncate(max_len);
        }
    }
    if out.len() > max_len {
        out.truncate(max_len);
    }
    out
}

fn byte_mutation(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]]) {
    let len = b.len();
    match rng.below(16) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.below(len);
            b[i] ^= 1 << rng.below(8);
        }
        // Random byte.
        1 if len > 0 => {
            let i = rng.below(len);
            b[i] = rng.next_u64() as u8;
        }
        // Small arithmetic on one byte.
        2 if len > 0 => {
            let i = rng.below(len);
            let d = rng.below(35) as u8;
            b[i] = if rng.one_in(2) {
                b[i].wrapping_add(d)
            } else {
                b[i].wrapping_sub(d)
            };
        }
        // An interesting integer, 1/2/4/8 bytes, either endianness.
        3 | 4 if len > 0 => {
            let width = 1 << rng.below(4);
            let mut v = *rng.pick(&INTERESTING);
            if rng.one_in(4) {
                v = v.wrapping_neg();
            }
            let bytes = if rng.one_in(3) {
                v.to_be_bytes()[8 - width..].to_vec()
            } else {
                v.to_le_bytes()[..width].to_vec()
            };
            let at = rng.below(len);
            let end = (at + width).min(len);
            b[at..end].copy_from_slice(&bytes[..end - at]);
        }
        // Insert random bytes.
        5 => {
            let n = 1 + rng.below(32);
            let at = rng.below(len + 1);
            let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, ins);
        }
        // Insert or overwrite with a dictionary token.
        6 | 7 if !dict.is_empty() => {
            let tok = *rng.pick(dict);
            let at = rng.below(len + 1);
            if rng.one_in(2) || at + tok.len() > len {
                b.splice(at..at, tok.iter().copied());
            } else {
                b[at..at + tok.len()].copy_from_slice(tok);
            }
        }
        // Delete a range.
        8 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            b.drain(at..at + n);
        }
        // Duplicate a range, sometimes many times (length fields vs. content).
        9 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let chunk = b[at..at + n].to_vec();
            let times = if rng.one_in(8) { 1 + rng.below(64) } else { 1 };
            let to = rng.below(len + 1);
            let ins: Vec<u8> = chunk.iter().copied().cycle().take(n * times).collect();
            b.splice(to..to, ins);
        }
        // Splice: our head with another entry's tail.
        10 if !corpus.is_empty() => {
            let other = rng.pick(corpus);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            b.truncate(cut);
            b.extend_from_slice(&other[from..]);
        }
        // Insert a piece of another entry.
        11 if !corpus.is_empty() => {
            let other = rng.pick(corpus);
            if !other.is_empty() {
                let at = rng.below(other.len());
                let n = 1 + rng.below((other.len() - at).min(512));
                let to = rng.below(len + 1);
                b.splice(to..to, other[at..at + n].iter().copied());
            }
        }
        // Truncate.
        12 if len > 0 => {
            let at = rng.below(len);
            b.truncate(at);
        }
        // Replace a run of ASCII digits by an interesting number.
        13 | 14 => replace_number(rng, b),
        // Copy a range over another place (moves fields around).
        _ if len > 1 => {
            let n = 1 + rng.below((len / 2).min(64));
            let from = rng.below(len - n + 1);
            let to = rng.below(len - n + 1);
            b.copy_within(from..from + n, to);
        }
        _ => b.push(rng.next_u64() as u8),
    }
}

fn replace_number(rng: &mut Rng, b: &mut Vec<u8>) {
    let digits: Vec<usize> = b
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    let Some(&start) = digits.get(rng.below(digits.len().max(1))) else {
        return;
    };
    let mut s = start;
    while s > 0 && b[s - 1].is_ascii_digit() {
        s -= 1;
    }
    let mut e = start;
    while e < b.len() && b[e].is_ascii_digit() {
        e += 1;
    }
    let n = *rng.pick(&INTERESTING_NUMBERS);
    b.splice(s..e, n.bytes());
}

fn line_mutation(rng: &mut Rng, b: &mut Vec<u8>, corpus: &[Vec<u8>], dict: &[&[u8]]) {
    let mut lines: Vec<Vec<u8>> = b.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    match rng.below(5) {
        0 => {
            let l = lines[rng.below(n)].clone();
            lines.insert(rng.below(n + 1), l);
        }
        1 if n > 1 => {
            lines.remove(rng.below(n));
        }
        2 => lines.swap(rng.below(n), rng.below(n)),
        3 if !dict.is_empty() => lines.insert(rng.below(n + 1), rng.pick(dict).to_vec()),
        _ if !corpus.is_empty() => {
            let other: Vec<&[u8]> = rng.pick(corpus).split(|&c| c == b'\n').collect();
            let l = other[rng.below(other.len())].to_vec();
            lines.insert(rng.below(n + 1), l);
        }
        _ => {}
    }
    *b = lines.join(&b'\n');
}

fn json_mutation(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(input).ok()?;
    let donor = corpus
        .get(rng.below(corpus.len().max(1)))
        .and_then(|d| serde_json::from_slice::<Value>(d).ok());
    mutate_value(rng, &mut v, donor.as_ref());
    if rng.one_in(2) {
        serde_json::to_vec_pretty(&v).ok()
    } else {
        serde_json::to_vec(&v).ok()
    }
}

fn toml_mutation(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(input).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let mut v = serde_json::to_value(&table).ok()?;
    let donor = corpus
        .get(rng.below(corpus.len().max(1)))
        .and_then(|d| std::str::from_utf8(d).ok()?.parse::<toml::Table>().ok())
        .and_then(|t| serde_json::to_value(&t).ok());
    mutate_value(rng, &mut v, donor.as_ref());
    // Values TOML cannot hold (null, mixed arrays in old TOML) make this fail:
    // the caller then falls back to byte edits.
    let table: toml::Table = serde_json::from_value(v).ok()?;
    toml::to_string(&table).ok().map(String::into_bytes)
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`th node in pre-order.
fn nth_node<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_node(c, n)),
        Value::Object(o) => o.values_mut().find_map(|c| nth_node(c, n)),
        _ => None,
    }
}

fn random_node<'a>(rng: &mut Rng, v: &'a mut Value) -> &'a mut Value {
    let mut n = rng.below(count_nodes(v));
    // n < the node count, so the walk always finds it.
    nth_node(v, &mut n).expect("node index within the count")
}

const KEYS: [&str; 24] = [
    "type",
    "version",
    "expires",
    "threshold",
    "keys",
    "format",
    "images",
    "chunks",
    "size",
    "offset",
    "mediaType",
    "schemaVersion",
    "digest",
    "manifests",
    "layers",
    "platform",
    "name",
    "image",
    "apps",
    "containers",
    "trust",
    "releases",
    "verity",
    "signatures",
];

fn interesting_value(rng: &mut Rng, donor: Option<&Value>) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => serde_json::json!(INTERESTING[rng.below(INTERESTING.len())]),
        3 => serde_json::json!(-(rng.below(1 << 20) as i64) - 1),
        4 => serde_json::json!(f64::from_bits(rng.next_u64()).clamp(-1e300, 1e300)),
        5 => Value::String(String::new()),
        6 => Value::String("A".repeat(1 + rng.below(4096))),
        7 => Value::String(
            [
                "../../etc/passwd",
                "/abs",
                "sha256:",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "\u{0}",
                "é\u{202e}",
                "a/./b",
                "*",
                "x86_64",
                "amd64",
                "linux",
            ][rng.below(11)]
            .to_string(),
        ),
        8 => Value::Array(Vec::new()),
        9 => Value::Object(serde_json::Map::new()),
        10 => Value::String(KEYS[rng.below(KEYS.len())].to_string()),
        _ => match donor {
            Some(d) => {
                let mut d = d.clone();
                random_node(rng, &mut d).clone()
            }
            None => Value::Null,
        },
    }
}

fn mutate_value(rng: &mut Rng, root: &mut Value, donor: Option<&Value>) {
    let copy = random_node(rng, &mut root.clone()).clone();
    let node = random_node(rng, root);
    match node {
        Value::Array(a) if rng.one_in(2) => match rng.below(4) {
            0 if !a.is_empty() => {
                let i = rng.below(a.len());
                a.remove(i);
            }
            1 if !a.is_empty() => {
                let i = rng.below(a.len());
                let e = a[i].clone();
                let times = if rng.one_in(4) { 1 + rng.below(200) } else { 1 };
                a.extend(std::iter::repeat_n(e, times));
            }
            2 => a.push(interesting_value(rng, donor)),
            _ => a.push(copy),
        },
        Value::Object(o) if rng.one_in(2) => match rng.below(3) {
            0 if !o.is_empty() => {
                let k = o.keys().nth(rng.below(o.len())).cloned();
                if let Some(k) = k {
                    o.remove(&k);
                }
            }
            1 if !o.is_empty() => {
                // Rename a key: unknown-field and missing-field paths.
                let k = o.keys().nth(rng.below(o.len())).cloned();
                if let Some(k) = k
                    && let Some(v) = o.remove(&k)
                {
                    o.insert(KEYS[rng.below(KEYS.len())].to_string(), v);
                }
            }
            _ => {
                let v = interesting_value(rng, donor);
                o.insert(KEYS[rng.below(KEYS.len())].to_string(), v);
            }
        },
        _ => match rng.below(6) {
            // Deep nesting: recursion limits of the parsers and of our own walks.
            0 => {
                let mut v = std::mem::take(node);
                for _ in 0..rng.below(200) {
                    v = Value::Array(vec![v]);
                }
                *node = v;
            }
            1 => *node = copy,
            _ => *node = interesting_value(rng, donor),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let corpus = vec![br#"{"a": [1, 2, {"b": "c"}]}"#.to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..200)
                .map(|_| mutate(&mut rng, &corpus[0], &corpus, &[b"x"], Format::Json, 300))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        assert!(a.iter().all(|m| m.len() <= 300));
        // Value edits keep most outputs JSON.
        let json = a
            .iter()
            .filter(|m| serde_json::from_slice::<Value>(m).is_ok())
            .count();
        assert!(json > 40, "{json} of 200 are JSON");
    }
}
