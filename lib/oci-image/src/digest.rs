//! Reading blobs with their descriptor's digest and size enforced while streaming.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::Error;

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Copies `src` to `dst`, refusing more than `size` bytes (never trusting a length
/// the server announces), and checks size and digest at the end.
pub fn copy_verified(
    src: &mut dyn Read,
    dst: &mut dyn Write,
    digest: &str,
    size: u64,
    what: &str,
) -> Result<(), Error> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Http {
                    url: what.to_string(),
                    message: format!("reading failed after {total} bytes: {e}"),
                });
            }
        };
        total += n as u64;
        if total > size {
            return Err(Error::SizeMismatch {
                what: what.to_string(),
                expected: size,
                actual: format!("more than {size}"),
            });
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(|e| Error::Http {
            url: what.to_string(),
            message: format!("writing failed: {e}"),
        })?;
    }
    if total != size {
        return Err(Error::SizeMismatch {
            what: what.to_string(),
            expected: size,
            actual: total.to_string(),
        });
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Reads at most `limit` bytes into memory; more is an error (manifests, configs, signatures).
pub fn read_capped(src: &mut dyn Read, limit: u64, what: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    src.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Http {
            url: what.to_string(),
            message: format!("reading failed: {e}"),
        })?;
    if out.len() as u64 > limit {
        return Err(Error::SizeMismatch {
            what: what.to_string(),
            expected: limit,
            actual: format!("more than {limit}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_table() {
        let data = b"hello blob";
        let good = sha256_digest(data);
        let other = sha256_digest(b"other");
        let len = data.len() as u64;
        let cases: &[(&str, u64, bool)] = &[
            (&good, len, true),
            (&good, len - 1, false), // more bytes than the descriptor
            (&good, len + 1, false), // fewer
            (&other, len, false),
        ];
        for (digest, size, ok) in cases {
            let mut out = Vec::new();
            let r = copy_verified(&mut &data[..], &mut out, digest, *size, "t");
            assert_eq!(r.is_ok(), *ok, "{digest} {size}: {r:?}");
            // Never more than the descriptor's size reaches the destination.
            assert!(out.len() as u64 <= *size);
        }
    }

    #[test]
    fn capped() {
        assert_eq!(read_capped(&mut &b"abc"[..], 3, "t").unwrap(), b"abc");
        assert!(read_capped(&mut &b"abcd"[..], 3, "t").is_err());
    }
}
