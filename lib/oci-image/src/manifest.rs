//! OCI and Docker v2 schema2 manifests, indexes and image configs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::reference::is_sha256_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Media type of the layer that carries a Cairn image signature.
pub const SIGNATURE_LAYER: &str = "application/vnd.cairn.image.signature.v1+json";
/// Everything `pull` understands, for the Accept header.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and configs bigger than this are not images we want.
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    fn check(&self, what: &str) -> Result<(), Error> {
        if !is_sha256_digest(&self.digest) {
            return Err(Error::Manifest {
                what: what.to_string(),
                problem: format!(
                    "descriptor digest {:?} is not sha256:<64 hex> (other algorithms are not supported)",
                    self.digest
                ),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

impl Platform {
    /// linux/<the architecture this binary runs on>, in OCI's (GOARCH) spelling.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }

    pub(crate) fn matches(&self, other: &Platform) -> bool {
        // arm64 images often omit the variant; v8 is the only one there is.
        let variant_ok = match (&self.variant, &other.variant) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.os == other.os && self.architecture == other.architecture && variant_ok
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform::host()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI or Docker schema2: same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", skip_serializing_if = "Option::is_none", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Manifest(ImageManifest),
    Index(ImageIndex),
}

/// Parses manifest bytes, using the HTTP Content-Type when given and the
/// document's own mediaType (or shape) otherwise.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<Parsed, Error> {
    let err = |problem: String| Error::Manifest {
        what: what.to_string(),
        problem,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| err(format!("not JSON: {e}")))?;
    let declared = value.get("mediaType").and_then(|v| v.as_str());
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let kind = match ct.or(declared) {
        Some(t) => t.to_string(),
        None if value.get("manifests").is_some() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    };
    if value.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err(err(
            "schemaVersion is not 2 (schema 1 manifests are not supported)".to_string(),
        ));
    }
    match kind.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let index: ImageIndex =
                serde_json::from_value(value).map_err(|e| err(format!("bad index: {e}")))?;
            for d in &index.manifests {
                d.check(what)?;
            }
            Ok(Parsed::Index(index))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_value(value).map_err(|e| err(format!("bad manifest: {e}")))?;
            m.config.check(what)?;
            for d in &m.layers {
                d.check(what)?;
            }
            Ok(Parsed::Manifest(m))
        }
        other => Err(err(format!("unsupported media type {other:?}"))),
    }
}

/// Picks the entry of an index for `platform`. Attestation manifests
/// (platform unknown/unknown) never match.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    platform: &Platform,
    reference: &str,
) -> Result<&'a Descriptor, Error> {
    let candidates = index
        .manifests
        .iter()
        .filter(|d| d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST);
    let mut best: Option<&Descriptor> = None;
    for d in candidates {
        if let Some(p) = &d.platform
            && platform.matches(p)
        {
            // Prefer the exact variant over an entry that omits it.
            let exact = p.variant == platform.variant;
            if best.is_none() || exact {
                best = Some(d);
                if exact {
                    break;
                }
            }
        }
    }
    best.ok_or_else(|| Error::NoPlatform {
        reference: reference.to_string(),
        platform: platform.to_string(),
        available: index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// What Cairn keeps of an image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub stop_signal: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct RawConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    config: Option<RawConfig>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The parts of a config blob the store uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConfig {
    pub config: ImageConfig,
    pub created: Option<String>,
    pub platform: Option<Platform>,
}

pub fn parse_config(bytes: &[u8], what: &str) -> Result<ParsedConfig, Error> {
    let raw: RawConfigFile = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
        what: what.to_string(),
        problem: format!("image config is not valid: {e}"),
    })?;
    let c = raw.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ParsedConfig {
        config: ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            working_dir: non_empty(c.working_dir),
            user: non_empty(c.user),
            exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
            stop_signal: non_empty(c.stop_signal),
            labels: c.labels.unwrap_or_default(),
        },
        created: raw.created,
        platform: match (raw.os, raw.architecture) {
            (Some(os), Some(architecture)) => Some(Platform {
                os,
                architecture,
                variant: None,
            }),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, os: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", hex::encode([n; 32])),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
            annotations: None,
        }
    }

    #[test]
    fn platform_selection_table() {
        let index = ImageIndex {
            schema_version: 2,
            media_type: Some(OCI_INDEX.into()),
            manifests: vec![
                desc("unknown", "unknown", None, 9),
                desc("amd64", "linux", None, 1),
                desc("arm", "linux", Some("v6"), 2),
                desc("arm", "linux", Some("v7"), 3),
                desc("arm64", "linux", None, 4),
                desc("amd64", "windows", None, 5),
            ],
        };
        let p = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(Into::into),
        };
        let cases = [
            (p("amd64", None), Some(1u8)),
            (p("arm", Some("v7")), Some(3)),
            (p("arm", Some("v6")), Some(2)),
            (p("arm64", Some("v8")), Some(4)),
            (p("s390x", None), None),
        ];
        for (plat, want) in cases {
            let got = select_platform(&index, &plat, "x")
                .ok()
                .map(|d| d.digest.clone());
            let want = want.map(|n| format!("sha256:{}", hex::encode([n; 32])));
            assert_eq!(got, want, "{plat}");
        }
    }

    #[test]
    fn parse_kinds() {
        let d = format!("sha256:{}", "a".repeat(64));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{d}","size":3}},"layers":[]}}"#
        );
        let index = r#"{"schemaVersion":2,"manifests":[]}"#.to_string();
        assert!(matches!(
            parse_manifest(manifest.as_bytes(), Some(DOCKER_MANIFEST), "m").unwrap(),
            Parsed::Manifest(_)
        ));
        assert!(matches!(
            parse_manifest(manifest.as_bytes(), None, "m").unwrap(),
            Parsed::Manifest(_)
        ));
        assert!(matches!(
            parse_manifest(index.as_bytes(), None, "m").unwrap(),
            Parsed::Index(_)
        ));
        assert!(matches!(
            parse_manifest(index.as_bytes(), Some(DOCKER_LIST), "m").unwrap(),
            Parsed::Index(_)
        ));
        // Schema 1, other digests, unknown types.
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, None, "m").is_err());
        let md5 = manifest.replace(&d, "md5:abc");
        assert!(parse_manifest(md5.as_bytes(), None, "m").is_err());
        assert!(parse_manifest(manifest.as_bytes(), Some("text/html"), "m").is_err());
    }

    #[test]
    fn config_fields() {
        let c = br#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Entrypoint":["/bin/sh"],"Cmd":["-c","true"],"Env":["A=1"],"WorkingDir":"/app",
            "User":"1000:1000","ExposedPorts":{"80/tcp":{}},"StopSignal":"SIGINT","Labels":{"a":"b"}}}"#;
        let p = parse_config(c, "c").unwrap();
        assert_eq!(p.config.entrypoint, ["/bin/sh"]);
        assert_eq!(p.config.cmd, ["-c", "true"]);
        assert_eq!(p.config.working_dir.as_deref(), Some("/app"));
        assert_eq!(p.config.exposed_ports, ["80/tcp"]);
        assert_eq!(p.config.labels["a"], "b");
        assert_eq!(p.created.as_deref(), Some("2024-01-01T00:00:00Z"));
        let empty = parse_config(br#"{"config":{"WorkingDir":"","Cmd":null}}"#, "c").unwrap();
        assert_eq!(empty.config, ImageConfig::default());
    }
}
