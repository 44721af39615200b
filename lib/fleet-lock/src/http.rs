//! The HTTP agent shared by the etcd and FleetLock clients: one timeout over
//! each whole request, and TLS from a CA file and a client certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::TlsError;

/// TLS files, each PEM. All `None`: plain HTTP, or HTTPS checked against the
/// public web roots compiled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates that sign the server's certificate (instead of
    /// the public roots).
    pub ca_file: Option<PathBuf>,
    /// This host's certificate (chain), for servers that check clients
    /// (etcd's `--client-cert-auth`).
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }
}

/// An agent whose every request ends within `timeout`, connecting included.
pub(crate) fn agent(timeout: Duration, tls: &TlsFiles) -> Result<ureq::Agent, TlsError> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(concat!("cairn-fleet-lock/", env!("CARGO_PKG_VERSION")));
    let config = if tls.is_empty() {
        config
    } else {
        with_tls(config, tls)?
    };
    Ok(config.build().new_agent())
}

type Builder = ureq::config::ConfigBuilder<ureq::typestate::AgentScope>;

#[cfg(feature = "tls")]
fn with_tls(config: Builder, files: &TlsFiles) -> Result<Builder, TlsError> {
    Ok(config.tls_config(tls_config(files)?))
}

/// A PEM file of at most 4 MiB (a CA bundle is kilobytes; a wrong path such
/// as /dev/zero stays harmless).
#[cfg(feature = "tls")]
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    const MAX: u64 = 4 << 20;
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX + 1).read_to_end(&mut pem))
        .map_err(|e| bad(path, format!("cannot read it: {e}")))?;
    if pem.len() as u64 > MAX {
        return Err(bad(path, format!("over {MAX} bytes: not a PEM file")));
    }
    Ok(pem)
}

fn bad(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// The CA certificates of a PEM bundle, trusted instead of the public roots
/// (etcd's `ca_file`, the updater's `[update] ca_file`). Anything but
/// certificates in it is refused: a private key there is a mistake worth
/// stopping for.
#[cfg(feature = "tls")]
pub fn ca_certs(path: &Path) -> Result<ureq::tls::RootCerts, TlsError> {
    use ureq::tls::{PemItem, RootCerts, parse_pem};
    let pem = read_pem(path)?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {
                return Err(bad(
                    path,
                    "holds a private key or another non-certificate block: it must hold only CA certificates",
                ));
            }
            Err(e) => return Err(bad(path, format!("not valid PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(bad(
            path,
            "holds no certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)",
        ));
    }
    Ok(RootCerts::new_with_certs(&certs))
}

#[cfg(feature = "tls")]
fn tls_config(files: &TlsFiles) -> Result<ureq::tls::TlsConfig, TlsError> {
    use ureq::tls::{ClientCert, PemItem, TlsConfig, parse_pem};
    let mut builder = TlsConfig::builder();
    if let Some(path) = &files.ca_file {
        builder = builder.root_certs(ca_certs(path)?);
    }
    match (&files.cert_file, &files.key_file) {
        (None, None) => {}
        (Some(cert), None) => {
            return Err(bad(cert, "a client certificate needs its key file too"));
        }
        (None, Some(key)) => {
            return Err(bad(key, "a client key needs its certificate file too"));
        }
        (Some(cert_path), Some(key_path)) => {
            let pem = read_pem(cert_path)?;
            let mut chain = Vec::new();
            for item in parse_pem(&pem) {
                match item {
                    Ok(PemItem::Certificate(c)) => chain.push(c),
                    Ok(_) => {}
                    Err(e) => return Err(bad(cert_path, format!("not valid PEM: {e}"))),
                }
            }
            if chain.is_empty() {
                return Err(bad(cert_path, "holds no certificate"));
            }
            let pem = read_pem(key_path)?;
            let mut key = None;
            for item in parse_pem(&pem) {
                match item {
                    Ok(PemItem::PrivateKey(k)) => {
                        key = Some(k);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => return Err(bad(key_path, format!("not valid PEM: {e}"))),
                }
            }
            let key = key.ok_or_else(|| {
                bad(
                    key_path,
                    "holds no private key (PKCS#8, PKCS#1 or SEC1 PEM block)",
                )
            })?;
            builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
    }
    Ok(builder.build())
}

#[cfg(not(feature = "tls"))]
fn with_tls(_: Builder, files: &TlsFiles) -> Result<Builder, TlsError> {
    let path = files
        .ca_file
        .as_ref()
        .or(files.cert_file.as_ref())
        .or(files.key_file.as_ref())
        .cloned()
        .unwrap_or_default();
    Err(bad(
        &path,
        "this build of fleet-lock has no TLS (the `tls` feature is off)",
    ))
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    #[test]
    fn bad_tls_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let missing = dir.path().join("missing.pem");
        let table = [
            (
                TlsFiles {
                    ca_file: Some(junk.clone()),
                    ..Default::default()
                },
                "junk.pem",
                "no certificate",
            ),
            (
                TlsFiles {
                    ca_file: Some(missing.clone()),
                    ..Default::default()
                },
                "missing.pem",
                "cannot read",
            ),
            (
                TlsFiles {
                    cert_file: Some(junk.clone()),
                    ..Default::default()
                },
                "junk.pem",
                "needs its key",
            ),
            (
                TlsFiles {
                    key_file: Some(junk.clone()),
                    ..Default::default()
                },
                "junk.pem",
                "needs its certificate",
            ),
        ];
        for (files, path, problem) in table {
            let e = agent(Duration::from_secs(1), &files)
                .unwrap_err()
                .to_string();
            assert!(e.contains(path) && e.contains(problem), "{e}");
        }
        assert!(agent(Duration::from_secs(1), &TlsFiles::default()).is_ok());
    }
}
