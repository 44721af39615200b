//! `cairn-build sign-config`: signs a host config with an ed25519 key so
//! that hosts of a board with `[config] require_signature` apply it.
//!
//! The signature is made by `host_config::source::signature`, the module
//! cairn-config verifies with, so the two cannot disagree on the format:
//! detached (`host.toml.sig`, placed beside the config as
//! `config.toml.sig` on the OEM partition, or `<url>.sig`) or embedded as
//! the config's last line (`host.toml.signed`, for cloud user data, which
//! has no "beside").

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use host_config::HostConfig;
use host_config::source::signature::{
    DETACHED_SUFFIX, sign_detached, sign_embedded, split_embedded,
};
use release_manifest::KeyPair;

/// The suffix of the embedded-signature output.
pub const EMBEDDED_SUFFIX: &str = ".signed";

/// Which signature to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Detached,
    Embedded,
}

/// The bytes to write for `config` (named `name` in messages) signed by
/// `key`: the signature file, or the config with its signature line. A
/// config cairn-config would refuse is refused here, before anything is
/// signed.
pub fn sign(name: &str, config: &[u8], key: &KeyPair, form: Form) -> Result<Vec<u8>> {
    let (_, embedded) = split_embedded(config).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    if embedded.is_some() {
        bail!(
            "{name} already ends with a `# cairn-signature:` line: sign the config without it (a host refuses a config signed both ways)"
        );
    }
    let text = std::str::from_utf8(config)
        .map_err(|_| anyhow::anyhow!("{name}: not UTF-8; a host config is TOML text"))?;
    HostConfig::parse_strict(text, name).map_err(|e| {
        anyhow::anyhow!(
            "{e}; fix the config before signing it (`cairn-config check` says the same)"
        )
    })?;
    Ok(match form {
        Form::Detached => sign_detached(config, key),
        Form::Embedded => sign_embedded(config, key),
    })
}

/// The development key of the source tree, for `--dev-key` (tests).
pub fn dev_key() -> Result<KeyPair> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate::build::DEV_KEY_SECRET);
    // git does not keep the 0600 the key loader insists on for secrets.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(KeyPair::load_secret(path)?)
}

/// Where the output of `form` for `config` goes.
pub fn output_path(config: &Path, form: Form) -> PathBuf {
    let suffix = match form {
        Form::Detached => DETACHED_SUFFIX,
        Form::Embedded => EMBEDDED_SUFFIX,
    };
    let mut name = config.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// Reads, signs and durably writes; returns the output path.
pub fn sign_file(config: &Path, key: &KeyPair, form: Form) -> Result<PathBuf> {
    let bytes = std::fs::read(config)
        .with_context(|| format!("cannot read the host config {}", config.display()))?;
    let out = sign(&config.display().to_string(), &bytes, key, form)?;
    let path = output_path(config, form);
    durable_file::write(&path, &out, durable_file::Options::new(0o644))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use disk_layout::board_files::{CONFIG_KEYS, CONFIG_SOURCES};
    use disk_layout::host_config::{OEM_MOUNT, OEM_PATH};
    use host_config::source::{Kind, SignatureState, Sources};

    /// A scratch root as a host sees it: the board's keys in /usr, the
    /// config (and its detached signature) on /oem.
    fn load_as_host(
        config: &[u8],
        sig: Option<&[u8]>,
        key: &KeyPair,
    ) -> host_config::source::Loaded {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for (rel, bytes) in [
            (CONFIG_KEYS.to_string(), key.public().to_line().into_bytes()),
            (CONFIG_SOURCES.to_string(), b"oem\n".to_vec()),
            (format!("{OEM_MOUNT}/{OEM_PATH}"), config.to_vec()),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        if let Some(sig) = sig {
            std::fs::write(
                root.join(format!("{OEM_MOUNT}/{OEM_PATH}{DETACHED_SUFFIX}")),
                sig,
            )
            .unwrap();
        }
        Sources::at(root).load()
    }

    #[test]
    fn signatures_are_accepted_by_cairn_configs_verifier() {
        let key = KeyPair::from_seed([3; 32]);
        let config = b"hostname = \"node-1\"\n";
        let verified = SignatureState::Verified {
            keyid: key.key_id(),
        };

        let sig = sign("host.toml", config, &key, Form::Detached).unwrap();
        let l = load_as_host(config, Some(&sig), &key);
        assert_eq!((l.kind, &l.signature), (Some(Kind::Oem), &verified));
        assert_eq!(
            l.config.unwrap().hostname.as_deref(),
            Some("node-1"),
            "applied"
        );

        let signed = sign("host.toml", config, &key, Form::Embedded).unwrap();
        let l = load_as_host(&signed, None, &key);
        assert_eq!(l.signature, verified);
        assert!(l.config.is_ok());

        // By another key: the host refuses it.
        let other = KeyPair::from_seed([4; 32]);
        let sig = sign("host.toml", config, &other, Form::Detached).unwrap();
        let l = load_as_host(config, Some(&sig), &key);
        assert!(l.signature.is_error(), "{:?}", l.signature);
    }

    #[test]
    fn bad_configs_are_not_signed() {
        let key = KeyPair::from_seed([3; 32]);
        let cases: [(&[u8], &str); 3] = [
            (b"hostname = 5\n", "hostname"),
            (b"colour = \"red\"\n", "colour"),
            (b"a = 1\n# cairn-signature: []\n", "already ends with"),
        ];
        for (config, needle) in cases {
            let e = sign("host.toml", config, &key, Form::Detached)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains("host.toml"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn output_names_are_what_the_host_looks_for() {
        let p = Path::new("/x/host.toml");
        assert_eq!(
            output_path(p, Form::Detached),
            Path::new("/x/host.toml.sig")
        );
        assert_eq!(
            output_path(p, Form::Embedded),
            Path::new("/x/host.toml.signed")
        );
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("host.toml");
        std::fs::write(&cfg, "hostname = \"a\"\n").unwrap();
        let key = KeyPair::from_seed([3; 32]);
        let out = sign_file(&cfg, &key, Form::Detached).unwrap();
        let sig = std::fs::read(&out).unwrap();
        assert_eq!(sig, sign_detached(b"hostname = \"a\"\n", &key));
    }
}
