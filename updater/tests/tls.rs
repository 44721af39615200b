//! HTTPS on purpose (issue 11, item 10): a real TLS server on loopback with a
//! CA made by the test (rcgen), in front of the fixture repository server. The
//! updater trusts `[update] ca_file` instead of the public roots, and never
//! follows a redirect from https to plain http.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cairn_updater::Agent;
use cairn_updater::config;
use cairn_updater::fixture;
use cairn_updater::http::{FetchError, Http, HttpOptions};
use disk_layout::Slot;
use gpt_slots::Attrs;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// `fixture::fast_http` with 5 s timeouts and one attempt.
fn http() -> HttpOptions {
    let timeout = Duration::from_secs(5);
    HttpOptions {
        stall_timeout: timeout,
        connect_timeout: timeout,
        attempts: 1,
        ..fixture::fast_http()
    }
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    server_key_pem: String,
}

fn make_pki(name: &str) -> Pki {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let mut leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&leaf_key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_chain: vec![cert.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        server_key_pem: leaf_key.serialize_pem(),
    }
}

/// A TLS front on 127.0.0.1 that forwards each request to the plain fixture
/// server at `backend` (which closes after one response), except
/// `/to-http/<path>` and `/to-https/<path>`, answered with a 302 to `<path>`
/// on the plain backend or on this server itself.
struct TlsFront {
    url: String,
    /// TLS handshakes completed.
    handshakes: Arc<AtomicU32>,
}

fn tls_front(pki: &Pki, backend: &str) -> TlsFront {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let handshakes = Arc::new(AtomicU32::new(0));
    let (backend, me, count) = (backend.to_string(), url.clone(), handshakes.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, backend, me, count) =
                (config.clone(), backend.clone(), me.clone(), count.clone());
            std::thread::spawn(move || {
                let _ = serve_tls(tcp, config, &backend, &me, &count);
            });
        }
    });
    TlsFront { url, handshakes }
}

fn serve_tls(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    backend: &str,
    me: &str,
    handshakes: &AtomicU32,
) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // The request head (GET: no body).
    let mut head = Vec::new();
    {
        let mut reader = BufReader::new(&mut tls);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
    }
    handshakes.fetch_add(1, Ordering::SeqCst);
    let path = head[0].split_whitespace().nth(1).unwrap_or("/").to_string();
    let redirect = |to: String| {
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    if let Some(rest) = path.strip_prefix("/to-http/") {
        let plain = backend.to_string();
        tls.write_all(redirect(format!("{plain}/{rest}")).as_bytes())?;
    } else if let Some(rest) = path.strip_prefix("/to-https/") {
        tls.write_all(redirect(format!("{me}/{rest}")).as_bytes())?;
    } else {
        let addr = backend.trim_start_matches("http://");
        let mut plain = TcpStream::connect(addr)?;
        plain.write_all(head.concat().as_bytes())?;
        let mut body = Vec::new();
        plain.read_to_end(&mut body)?;
        tls.write_all(&body)?;
    }
    tls.flush()?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// A `fixture::World` (a repository with 1.1.0, a host on 1.0.0 booted from
/// slot a) whose repository server is behind a TLS front with its own CA.
struct World {
    host: fixture::World,
    pki: Pki,
    front: TlsFront,
    ca_file: PathBuf,
}

impl std::ops::Deref for World {
    type Target = fixture::World;

    fn deref(&self) -> &fixture::World {
        &self.host
    }
}

impl World {
    fn new() -> World {
        let host = fixture::World::new(&[("1.1.0", 2)], 600_000, 64 << 10, 4 << 20);
        let pki = make_pki("cairn");
        let front = tls_front(&pki, &host.server.url);
        let ca_file = host.dir.join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        World {
            host,
            pki,
            front,
            ca_file,
        }
    }

    /// The host's agent, fetching with `http`.
    fn agent(&self, http: Http) -> Agent {
        let mut a = self.host.agent(Slot::A, "1.0.0");
        a.http = http;
        a
    }
}

fn with_ca(url: &str, ca: &Path) -> Http {
    Http::with_ca_file(url, http(), Some(ca)).unwrap()
}

#[test]
fn an_update_over_https_from_a_private_ca() {
    let w = World::new();
    // The way the service makes its client: from the host config's [update].
    let cfg = config::parse(
        &format!(
            "[update]\nurl = \"{}\"\nca_file = \"{}\"\n",
            w.front.url,
            w.ca_file.display()
        ),
        "test",
    )
    .unwrap();
    let agent = w.agent(config::http(&cfg, http()).unwrap());
    fixture::install(&agent);
    assert_eq!(w.attrs().1, Attrs::new(2, 3, false));
    assert!(w.front.handshakes.load(Ordering::SeqCst) > 5);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let w = World::new();
    // The public roots (no ca_file) do not know the test CA.
    let err = w
        .agent(Http::new(&w.front.url, http()))
        .check()
        .unwrap_err();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains(&w.front.url) && text.to_lowercase().contains("issuer"),
        "{text}"
    );
    // Nor does a bundle holding another CA: ca_file replaces, not widens.
    let other = w.dir.join("other-ca.pem");
    std::fs::write(&other, make_pki("other").ca_pem).unwrap();
    let err = w.agent(with_ca(&w.front.url, &other)).check().unwrap_err();
    assert!(err.to_string().to_lowercase().contains("issuer"), "{err}");
    // Nothing was asked of the repository behind the TLS server.
    assert_eq!(w.front.handshakes.load(Ordering::SeqCst), 0);
    assert!(w.server.log().is_empty(), "{:?}", w.server.log());
}

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let w = World::new();
    let http = with_ca(&w.front.url, &w.ca_file);
    let err = http
        .get("to-http/channels/stable.json", 1 << 20, None)
        .unwrap_err();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, FetchError::InsecureRedirect { .. }), "{text}");
    assert!(
        text.contains(&format!("{}/to-http/channels/stable.json", w.front.url))
            && text.contains(&format!("{}/channels/stable.json", w.server.url))
            && text.contains("https to plain http"),
        "{text}"
    );
    // Refused before connecting: the plain server saw no request.
    assert!(w.server.log().is_empty(), "{:?}", w.server.log());
    // A redirect that stays on https is followed.
    let body = http
        .get("to-https/channels/stable.json", 1 << 20, None)
        .unwrap();
    assert!(body.starts_with(b"{"), "{}", String::from_utf8_lossy(&body));
}

#[test]
fn a_ca_file_that_is_not_a_ca_bundle_is_refused_naming_it() {
    let w = World::new();
    let cases: [(&str, &[u8], &str); 4] = [
        ("missing.pem", b"", "cannot read"),
        ("empty.pem", b"", "no certificate"),
        ("key.pem", w.pki.server_key_pem.as_bytes(), "private key"),
        (
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "not valid PEM",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = w.dir.join(name);
        if name != "missing.pem" {
            std::fs::write(&path, bytes).unwrap();
        }
        let err = Http::with_ca_file(&w.front.url, http(), Some(&path))
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        let text = err.to_string();
        eprintln!("{text}");
        assert!(
            text.contains(&path.display().to_string()) && text.contains(expect),
            "{name}: {text}"
        );
    }
}
