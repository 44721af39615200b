//! Trust policy (name prefix → keys or accept-anything) and image signatures.
//!
//! A signature is an ed25519 signature (release-manifest's key format) over
//! [`signature_payload`], which binds the image name *without tag* and the manifest
//! digest: a signature made for one name cannot be replayed onto another.

use std::fs;
use std::io::Read;
use std::path::Path;

use release_manifest::{KeyPair, PublicKey, SignatureEntry};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::reference::is_sha256_digest;

/// Signature and policy files bigger than this are not ours.
const MAX_FILE: u64 = 1024 * 1024;
pub const SIGNATURE_FORMAT: &str = "cairn-image-signature-v1";

/// The exact bytes that are signed.
pub fn signature_payload(image_name: &str, manifest_digest: &str) -> Vec<u8> {
    format!("{SIGNATURE_FORMAT}\nname {image_name}\ndigest {manifest_digest}\n").into_bytes()
}

/// A signature file: JSON, small enough to be a registry blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub format: String,
    /// `registry/repository`, no tag.
    pub name: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    pub signatures: Vec<SignatureEntry>,
}

/// Signs `image_name` (tag and digest suffixes are stripped; `alpine` means
/// `docker.io/library/alpine`) at `manifest_digest`.
pub fn sign(image_name: &str, manifest_digest: &str, key: &KeyPair) -> Signature {
    let name = canonical_name(image_name).unwrap_or_else(|| image_name.to_string());
    let entry = key.sign(&signature_payload(&name, manifest_digest));
    Signature {
        format: SIGNATURE_FORMAT.to_string(),
        name,
        digest: manifest_digest.to_string(),
        signatures: vec![entry],
    }
}

/// `registry/repository` for any reference spelling, or None if it does not parse.
pub fn canonical_name(image_name: &str) -> Option<String> {
    crate::Reference::parse(image_name).ok().map(|r| r.name())
}

impl Signature {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Signature, Error> {
        let sig: Signature = serde_json::from_slice(bytes).map_err(|e| Error::BadSignature {
            name: what.to_string(),
            problem: format!("not a Cairn image signature file: {e}"),
        })?;
        if !is_sha256_digest(&sig.digest) {
            return Err(Error::BadSignature {
                name: what.to_string(),
                problem: format!("digest {:?} is not sha256:<64 hex>", sig.digest),
            });
        }
        if sig.format != SIGNATURE_FORMAT {
            return Err(Error::BadSignature {
                name: what.to_string(),
                problem: format!("unknown signature format {:?}", sig.format),
            });
        }
        Ok(sig)
    }

    pub fn read(path: &Path) -> Result<Signature, Error> {
        let mut bytes = Vec::new();
        fs::File::open(path)
            .map_err(Error::io(path))?
            .take(MAX_FILE)
            .read_to_end(&mut bytes)
            .map_err(Error::io(path))?;
        Signature::from_bytes(&bytes, &path.display().to_string())
    }

    /// Replaces `path` durably (temp file, fsync, rename, fsync of the
    /// directory), mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        Ok(durable_file::write(
            path,
            &self.to_bytes(),
            crate::store::FILE_OPTIONS,
        )?)
    }

    /// Checks that this signature covers `name` at `digest` and is made by one of `keys`.
    pub fn verify(&self, name: &str, digest: &str, keys: &[PublicKey]) -> Result<(), Error> {
        let bad = |problem: String| Error::BadSignature {
            name: name.to_string(),
            problem,
        };
        if self.name != name {
            return Err(bad(format!(
                "it was made for image {:?}, not this one",
                self.name
            )));
        }
        if self.digest != digest {
            return Err(bad(format!(
                "it was made for manifest {}, but the image is {digest}",
                self.digest
            )));
        }
        let list = serde_json::to_vec(&self.signatures).map_err(|e| bad(e.to_string()))?;
        release_manifest::verify_signed(&signature_payload(name, digest), &list, keys, 1)
            .map_err(|e| bad(e.to_string()))
    }
}

/// What a rule requires of the images under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Any image, signed or not.
    AcceptAnything,
    /// A valid signature by one of these keys.
    Signed(Vec<PublicKey>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRule {
    /// A name prefix (`docker.io/library/`, `ghcr.io/org`), or `*` for every image.
    pub prefix: String,
    pub requirement: Requirement,
}

/// The outcome of [`TrustPolicy::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No rule matches: refuse.
    Reject,
    AcceptAnything {
        prefix: String,
    },
    RequireSignature {
        prefix: String,
        keys: Vec<PublicKey>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    rules: Vec<TrustRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    format: u32,
    rules: Vec<RuleFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    prefix: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    accept_anything: bool,
    /// `cairn-ed25519-public <hex>` lines, as in a .public file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    keys: Vec<String>,
}

/// True if `prefix` covers `name`: equal, `*`, or a prefix ending at a path
/// boundary (`docker.io/lib` does not cover `docker.io/library/x`).
pub fn prefix_matches(prefix: &str, name: &str) -> bool {
    if prefix == "*" || prefix == name {
        return true;
    }
    match name.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn valid_prefix(prefix: &str) -> bool {
    prefix == "*"
        || (!prefix.is_empty()
            && prefix.len() <= 512
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"./_-:[]".contains(&b)))
}

impl TrustPolicy {
    pub fn new() -> TrustPolicy {
        TrustPolicy::default()
    }

    /// Loads a policy file; a missing file is an empty policy (which refuses everything).
    pub fn load(path: &Path) -> Result<TrustPolicy, Error> {
        let policy_err = |problem: String| Error::Policy {
            path: path.to_path_buf(),
            problem,
        };
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrustPolicy::new()),
            Err(e) => return Err(Error::io(path)(e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE)
            .read_to_end(&mut bytes)
            .map_err(Error::io(path))?;
        let pf: PolicyFile = serde_json::from_slice(&bytes)
            .map_err(|e| policy_err(format!("not a valid policy file: {e}")))?;
        if pf.format != 1 {
            return Err(policy_err(format!(
                "unsupported format {} (this build reads format 1)",
                pf.format
            )));
        }
        let mut policy = TrustPolicy::new();
        for r in pf.rules {
            if !valid_prefix(&r.prefix) {
                return Err(policy_err(format!("invalid prefix {:?}", r.prefix)));
            }
            let requirement = match (r.accept_anything, r.keys.is_empty()) {
                (true, true) => Requirement::AcceptAnything,
                (false, false) => {
                    let mut keys = Vec::new();
                    for k in &r.keys {
                        keys.push(
                            PublicKey::parse(k)
                                .map_err(|e| policy_err(format!("rule {:?}: {e}", r.prefix)))?,
                        );
                    }
                    Requirement::Signed(keys)
                }
                _ => {
                    return Err(policy_err(format!(
                        "rule {:?} must have either accept_anything or keys, not both or neither",
                        r.prefix
                    )));
                }
            };
            policy.rules.push(TrustRule {
                prefix: r.prefix,
                requirement,
            });
        }
        Ok(policy)
    }

    /// Writes the policy atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let pf = PolicyFile {
            format: 1,
            rules: self
                .rules
                .iter()
                .map(|r| match &r.requirement {
                    Requirement::AcceptAnything => RuleFile {
                        prefix: r.prefix.clone(),
                        accept_anything: true,
                        keys: vec![],
                    },
                    Requirement::Signed(keys) => RuleFile {
                        prefix: r.prefix.clone(),
                        accept_anything: false,
                        keys: keys
                            .iter()
                            .map(|k| k.to_line().trim_end().to_string())
                            .collect(),
                    },
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&pf).map_err(|e| Error::Policy {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        bytes.push(b'\n');
        let opts = durable_file::Options {
            create_parents: true,
            ..crate::store::FILE_OPTIONS
        };
        Ok(durable_file::write(path, &bytes, opts)?)
    }

    /// Sets the rule for `prefix`. A key requirement is merged with the keys
    /// already trusted for that prefix; accept-anything replaces the rule.
    pub fn add(&mut self, prefix: &str, requirement: Requirement) -> Result<(), Error> {
        if !valid_prefix(prefix) {
            return Err(Error::Policy {
                path: "(trust rule)".into(),
                problem: format!(
                    "invalid prefix {prefix:?}: use an image name prefix such as docker.io/library/ or * for every image"
                ),
            });
        }
        match self.rules.iter_mut().find(|r| r.prefix == prefix) {
            Some(rule) => match (&mut rule.requirement, requirement) {
                (Requirement::Signed(have), Requirement::Signed(new)) => {
                    for k in new {
                        if !have.contains(&k) {
                            have.push(k);
                        }
                    }
                }
                (req, new) => *req = new,
            },
            None => self.rules.push(TrustRule {
                prefix: prefix.to_string(),
                requirement,
            }),
        }
        self.rules.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok(())
    }

    /// Removes the rule for `prefix`; returns whether there was one.
    pub fn remove(&mut self, prefix: &str) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.prefix != prefix);
        self.rules.len() != before
    }

    pub fn list(&self) -> &[TrustRule] {
        &self.rules
    }

    /// The longest matching prefix decides; `*` is the shortest.
    pub fn decide(&self, name: &str) -> Decision {
        let best = self
            .rules
            .iter()
            .filter(|r| prefix_matches(&r.prefix, name))
            .max_by_key(|r| {
                if r.prefix == "*" {
                    0
                } else {
                    r.prefix.len() + 1
                }
            });
        match best {
            None => Decision::Reject,
            Some(r) => match &r.requirement {
                Requirement::AcceptAnything => Decision::AcceptAnything {
                    prefix: r.prefix.clone(),
                },
                Requirement::Signed(keys) => Decision::RequireSignature {
                    prefix: r.prefix.clone(),
                    keys: keys.clone(),
                },
            },
        }
    }

    /// Accepts `name` at `digest` with one of `signatures`, or says why not.
    pub fn check(&self, name: &str, digest: &str, signatures: &[Signature]) -> Result<(), Error> {
        self.check_any(name, &[digest], signatures)
    }

    /// Like [`TrustPolicy::check`], where a signature may cover any of `digests`
    /// (a platform manifest, or the index that lists it).
    pub fn check_any(
        &self,
        name: &str,
        digests: &[&str],
        signatures: &[Signature],
    ) -> Result<(), Error> {
        match self.decide(name) {
            Decision::Reject => Err(Error::Untrusted {
                name: name.to_string(),
            }),
            Decision::AcceptAnything { .. } => Ok(()),
            Decision::RequireSignature { prefix, keys } => {
                if signatures.is_empty() {
                    return Err(Error::SignatureRequired {
                        name: name.to_string(),
                        prefix,
                        problem: "none was found".to_string(),
                    });
                }
                let mut problems = Vec::new();
                for s in signatures {
                    // Judge each signature against the digest it claims, if that is ours.
                    let digest = digests
                        .iter()
                        .find(|d| **d == s.digest)
                        .unwrap_or(&digests[0]);
                    match s.verify(name, digest, &keys) {
                        Ok(()) => return Ok(()),
                        Err(e) => problems.push(e.to_string()),
                    }
                }
                Err(Error::SignatureRequired {
                    name: name.to_string(),
                    prefix,
                    problem: format!("no signature is valid ({})", problems.join("; ")),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> KeyPair {
        KeyPair::from_seed([n; 32])
    }

    #[test]
    fn prefix_table() {
        for (prefix, name, want) in [
            ("*", "docker.io/library/alpine", true),
            ("docker.io/library/", "docker.io/library/alpine", true),
            ("docker.io/library", "docker.io/library/alpine", true),
            ("docker.io/lib", "docker.io/library/alpine", false),
            ("docker.io/library/alpine", "docker.io/library/alpine", true),
            (
                "docker.io/library/alpine",
                "docker.io/library/alpine2",
                false,
            ),
            ("ghcr.io/org", "ghcr.io/organisation/x", false),
            ("127.0.0.1:5000/", "127.0.0.1:5000/a", true),
            ("127.0.0.1:5000", "127.0.0.1:50001/a", false),
        ] {
            assert_eq!(prefix_matches(prefix, name), want, "{prefix} {name}");
        }
    }

    #[test]
    fn decide_table() {
        let mut p = TrustPolicy::new();
        p.add("*", Requirement::Signed(vec![key(9).public()]))
            .unwrap();
        p.add("docker.io/library/", Requirement::AcceptAnything)
            .unwrap();
        p.add(
            "docker.io/library/secret",
            Requirement::Signed(vec![key(1).public()]),
        )
        .unwrap();
        p.add("ghcr.io/org", Requirement::Signed(vec![key(2).public()]))
            .unwrap();
        let cases = [
            ("docker.io/library/alpine", "anything", "docker.io/library/"),
            (
                "docker.io/library/secret",
                "signed",
                "docker.io/library/secret",
            ),
            (
                "docker.io/library/secret/x",
                "signed",
                "docker.io/library/secret",
            ),
            ("ghcr.io/org/app", "signed", "ghcr.io/org"),
            ("quay.io/x", "signed", "*"),
        ];
        for (name, kind, prefix) in cases {
            let got = match p.decide(name) {
                Decision::Reject => ("reject", String::new()),
                Decision::AcceptAnything { prefix } => ("anything", prefix),
                Decision::RequireSignature { prefix, .. } => ("signed", prefix),
            };
            assert_eq!(got, (kind, prefix.to_string()), "{name}");
        }
        assert!(p.remove("*"));
        assert!(!p.remove("*"));
        assert_eq!(p.decide("quay.io/x"), Decision::Reject);
    }

    #[test]
    fn check_table() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let name = "127.0.0.1:5000/cairn/app";
        let mut p = TrustPolicy::new();
        p.add(
            "127.0.0.1:5000/cairn/",
            Requirement::Signed(vec![key(1).public()]),
        )
        .unwrap();
        p.add("127.0.0.1:5000/open/", Requirement::AcceptAnything)
            .unwrap();
        let good = sign(name, &d1, &key(1));
        let other_name = sign("127.0.0.1:5000/cairn/other", &d1, &key(1));
        // A signature whose claimed name was edited no longer verifies.
        let mut renamed = other_name.clone();
        renamed.name = name.to_string();
        let other_digest = sign(name, &d2, &key(1));
        let unknown_key = sign(name, &d1, &key(3));
        let cases: Vec<(&str, Vec<Signature>, bool)> = vec![
            (name, vec![good.clone()], true),
            (name, vec![], false),
            (name, vec![other_name.clone()], false),
            (name, vec![renamed], false),
            (name, vec![other_digest], false),
            (name, vec![unknown_key.clone()], false),
            (name, vec![unknown_key, good.clone()], true),
            ("127.0.0.1:5000/open/x", vec![], true),
            ("127.0.0.1:5000/elsewhere", vec![good], false),
        ];
        for (i, (n, sigs, ok)) in cases.into_iter().enumerate() {
            let r = p.check(n, &d1, &sigs);
            assert_eq!(r.is_ok(), ok, "case {i}: {r:?}");
        }
        let e = p.check("quay.io/x/y", &d1, &[]).unwrap_err().to_string();
        assert!(e.contains("cairn-run trust add quay.io/x/y"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn sign_canonicalises_name() {
        let d = format!("sha256:{}", "1".repeat(64));
        let s = sign("alpine:3.19", &d, &key(1));
        assert_eq!(s.name, "docker.io/library/alpine");
        let back = Signature::from_bytes(&s.to_bytes(), "t").unwrap();
        assert_eq!(back, s);
        back.verify("docker.io/library/alpine", &d, &[key(1).public()])
            .unwrap();
    }

    #[test]
    fn policy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/image-trust.json");
        assert_eq!(TrustPolicy::load(&path).unwrap(), TrustPolicy::new());
        let mut p = TrustPolicy::new();
        p.add("a.io/x", Requirement::Signed(vec![key(1).public()]))
            .unwrap();
        p.add(
            "a.io/x",
            Requirement::Signed(vec![key(2).public(), key(1).public()]),
        )
        .unwrap();
        p.add("*", Requirement::AcceptAnything).unwrap();
        p.save(&path).unwrap();
        let back = TrustPolicy::load(&path).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.list().len(), 2);
        assert!(p.add("bad prefix", Requirement::AcceptAnything).is_err());
        fs::write(&path, r#"{"format":1,"rules":[{"prefix":"x"}]}"#).unwrap();
        assert!(TrustPolicy::load(&path).is_err());
    }
}
