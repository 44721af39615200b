//! Shared helpers of the integration tests: real tools (umoci, skopeo,
//! docker-registry, busybox-static), a loopback registry, crafted layouts.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_image::{Requirement, Store, TrustPolicy};
use sha2::{Digest, Sha256};

/// True if the test can run; false (after saying why) if it should skip.
/// With CAIRN_REQUIRE_IMAGE_TESTS=1 a missing prerequisite fails the test.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for t in tools {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
            .unwrap_or(false);
        if !found {
            missing.push(t.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing {} (install with `cargo xtask setup`: umoci skopeo docker-registry busybox-static)",
        missing.join(", ")
    );
    if std::env::var("CAIRN_REQUIRE_IMAGE_TESTS").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const BUSYBOX: &str = "/bin/busybox";

/// An OCI layout `<dir>/layout` with tag `latest`: busybox-static, a /bin/sh
/// symlink and /etc/hello, built with umoci.
pub struct TestImage {
    pub dir: tempfile::TempDir,
    pub layout: PathBuf,
}

pub fn build_image() -> TestImage {
    build_image_with(|_| {})
}

/// [`build_image`], with `extra` adding to the rootfs before it is packed.
pub fn build_image_with(extra: impl FnOnce(&Path)) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let bundle = dir.path().join("bundle");
    let img = format!("{}:latest", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &img]));
    // unpack + repack rather than `umoci insert`: umoci 0.4.7's insert writes
    // layers that end without the tar padding and end blocks, which we refuse.
    run(Command::new("umoci")
        .args(["unpack", "--image", &img])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("etc/hello"), "hello from cairn\n").unwrap();
    extra(&rootfs);
    run(Command::new("umoci")
        .args(["repack", "--image", &img])
        .arg(&bundle));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        "GREETING=hi",
        "--config.workingdir",
        "/etc",
    ]));
    // umoci keeps superseded manifests around; gc leaves only the tagged image.
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout));
    TestImage { dir, layout }
}

/// Checks what build_image put in the unpacked rootfs.
pub fn check_rootfs(rootfs: &Path) {
    assert_eq!(
        fs::read(rootfs.join("bin/busybox")).unwrap(),
        fs::read(BUSYBOX).unwrap(),
        "busybox in {}",
        rootfs.display()
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/hello")).unwrap(),
        "hello from cairn\n"
    );
}

pub fn accept_all() -> TrustPolicy {
    let mut p = TrustPolicy::new();
    p.add("*", Requirement::AcceptAnything).unwrap();
    p
}

pub fn sha256_file(path: &Path) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    )
}

fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A refused image must leave nothing: no name, record, rootfs, blob or staging.
pub fn assert_store_empty(store: &Store) {
    let root = store.root();
    for sub in ["blobs/sha256", "rootfs", "images", "tmp"] {
        let e = entries(&root.join(sub));
        assert!(e.is_empty(), "{sub} is not empty: {e:?}");
    }
    assert!(store.list().unwrap().is_empty());
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// Debian's docker-registry on a free loopback port, storage in a tempdir.
pub struct RegistryProc {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RegistryProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RegistryProc {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

pub fn start_registry() -> RegistryProc {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    wait_for_port(port);
    RegistryProc {
        child,
        port,
        _dir: dir,
    }
}

/// skopeo copy of the layout's `latest` to `docker://<dest>` over plain HTTP.
pub fn push(layout: &Path, dest: &str) {
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{dest}")));
}

/// The manifest digest the registry serves for `reference`, as skopeo sees it.
pub fn registry_digest(reference: &str) -> String {
    run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{reference}"),
    ]))
    .trim()
    .to_string()
}

/// What the proxy in front of the registry does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProxyMode {
    /// Demands a bearer token from its own token endpoint (/token).
    Bearer,
    /// Demands a bearer token from the token endpoint of another loopback
    /// host, `http://127.0.0.2:<port>/token` (a proxy in `Bearer` mode there).
    BearerRealmAt(u16),
    /// `Bearer`, and blob GETs are answered with a 307 to the same path on
    /// `http://127.0.0.2:<port>` (as registries send blobs to storage).
    BearerRedirectBlobs(u16),
    /// Demands Basic auth (any username and password).
    Basic,
    /// Forwards everything as it is.
    Plain,
    /// Appends bytes to every blob body (and to Content-Length).
    AppendToBlobs,
    /// Flips one byte of every blob body.
    FlipBlobByte,
}

pub const TOKEN: &str = "test-token-1234";

/// Requests the proxy saw: (request line, Authorization header).
pub type ProxyLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A loopback HTTP proxy in front of the registry at `upstream`, one request per
/// connection. It stops by itself after 500 connections.
pub fn start_proxy(upstream: u16, mode: ProxyMode) -> (u16, ProxyLog) {
    start_proxy_on("127.0.0.1", upstream, mode)
}

/// [`start_proxy`] on another loopback address (127.0.0.2 is another host
/// to a client that compares hosts).
pub fn start_proxy_on(host: &str, upstream: u16, mode: ProxyMode) -> (u16, ProxyLog) {
    let listener = TcpListener::bind((host, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: ProxyLog = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(500) {
            let Ok(conn) = conn else { continue };
            let log = log2.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, upstream, mode, &log);
            });
        }
    });
    (port, log)
}

fn read_head(s: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b)?;
        if n == 0 {
            return Ok((buf, Vec::new()));
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((buf, rest));
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn handle(
    mut client: TcpStream,
    upstream: u16,
    mode: ProxyMode,
    log: &ProxyLog,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, mut body) = read_head(&mut client)?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let request_line = head.lines().next().unwrap_or("").to_string();
    let auth = header(&head, "authorization").map(str::to_string);
    log.lock()
        .unwrap()
        .push((request_line.clone(), auth.clone()));
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let mut b = vec![0u8; len - body.len()];
        let n = client.read(&mut b)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&b[..n]);
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let is_blob_get = request_line.starts_with("GET") && path.contains("/blobs/sha256:");
    let realm = match mode {
        ProxyMode::Bearer | ProxyMode::BearerRedirectBlobs(_) => {
            Some(format!("http://{}/token", client.local_addr()?))
        }
        ProxyMode::BearerRealmAt(p) => Some(format!("http://127.0.0.2:{p}/token")),
        _ => None,
    };
    if mode == ProxyMode::Basic && auth.is_none() {
        return write!(
            client,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cairn-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    if let Some(realm) = realm {
        if path.starts_with("/token") {
            let body = format!("{{\"token\":\"{TOKEN}\"}}");
            return write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            let repo = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split("/manifests/").next())
                .and_then(|p| p.split("/blobs/").next())
                .unwrap_or("");
            let actions = if request_line.starts_with("GET") || request_line.starts_with("HEAD") {
                "pull"
            } else {
                "pull,push"
            };
            let body = "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}";
            return write!(
                client,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"cairn-test\",scope=\"repository:{repo}:{actions}\"\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    }
    if let ProxyMode::BearerRedirectBlobs(p) = mode
        && is_blob_get
    {
        return write!(
            client,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:{p}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = String::new();
    for (i, line) in head.trim_end().lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        if i > 0 && (lower.starts_with("connection:") || lower.starts_with("authorization:")) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    up.write_all(out.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if is_blob_get
        && matches!(mode, ProxyMode::AppendToBlobs | ProxyMode::FlipBlobByte)
        && let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n")
    {
        let rhead = String::from_utf8_lossy(&resp[..i]).into_owned();
        let mut rbody = resp[i + 4..].to_vec();
        match mode {
            ProxyMode::AppendToBlobs => rbody.extend_from_slice(b"EXTRA BYTES"),
            _ => {
                if let Some(b) = rbody.last_mut() {
                    *b ^= 0xff;
                }
            }
        }
        let mut h = String::new();
        for line in rhead.lines() {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                h.push_str(&format!("Content-Length: {}\r\n", rbody.len()));
            } else {
                h.push_str(line);
                h.push_str("\r\n");
            }
        }
        h.push_str("\r\n");
        resp = h.into_bytes();
        resp.extend_from_slice(&rbody);
    }
    client.write_all(&resp)
}

/// Writes an OCI layout by hand: config (for this host's architecture), the
/// given layer blobs (already compressed or not), manifest and index (tag
/// `latest`). Returns the manifest digest.
pub fn write_layout(dir: &Path, layers: &[(Vec<u8>, &str)]) -> String {
    write_layout_for(dir, layers, &oci_image::Platform::host().architecture)
}

/// [`write_layout`] with an image config for `arch` (OCI spelling).
pub fn write_layout_for(dir: &Path, layers: &[(Vec<u8>, &str)], arch: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(data));
        fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["/bin/true"]}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let (cd, cs) = put(config.as_bytes());
    let layer_descs: Vec<String> = layers
        .iter()
        .map(|(data, mt)| {
            let (d, s) = put(data);
            format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":{s}}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{}]}}"#,
        layer_descs.join(",")
    );
    let (md, ms) = put(manifest.as_bytes());
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
        ),
    )
    .unwrap();
    md
}

/// Builds tar bytes entry by entry, with raw names (no sanitising by the tar crate).
pub struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names stay short");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    fn add(&mut self, mut h: tar::Header, data: &[u8]) {
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
    }

    pub fn dir(mut self, name: &str) -> Self {
        let h = Self::header(name, tar::EntryType::Directory, 0o755, 0);
        self.add(h, &[]);
        self
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        let h = Self::header(name, tar::EntryType::Regular, 0o644, data.len() as u64);
        self.add(h, data);
        self
    }

    /// A file with explicit mode, owner and mtime.
    pub fn file_meta(
        mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.add(h, data);
        self
    }

    pub fn dir_meta(mut self, name: &str, mode: u32, mtime: u64) -> Self {
        let mut h = Self::header(name, tar::EntryType::Directory, mode, 0);
        h.set_mtime(mtime);
        self.add(h, &[]);
        self
    }

    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(name, kind, 0o777, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        self.add(h, &[]);
        self
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, name, target)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, name, target)
    }

    pub fn special(mut self, name: &str, kind: tar::EntryType) -> Self {
        let h = Self::header(name, kind, 0o644, 0);
        self.add(h, &[]);
        self
    }

    /// A file preceded by a PAX header carrying `xattrs`.
    pub fn file_xattrs(mut self, name: &str, data: &[u8], xattrs: &[(&str, &[u8])]) -> Self {
        let pax: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.builder
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(name, data)
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const TAR_ZST: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A layout whose `latest` is an index of two platform images (linux/amd64 and
/// linux/arm64), each with one layer holding `/arch` = its architecture.
/// Returns the index digest.
pub fn write_multiarch_layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(data));
        fs::write(blobs.join(&hex), data).unwrap();
        (format!("sha256:{hex}"), data.len())
    };
    let mut entries = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = gzip(&LayerBuilder::new().file("arch", arch.as_bytes()).finish());
        let (ld, ls) = put(&layer);
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Cmd":["/{arch}"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}}}}"#,
            hex::encode(Sha256::digest(
                LayerBuilder::new().file("arch", arch.as_bytes()).finish()
            ))
        );
        let (cd, cs) = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{{"mediaType":"{TAR_GZ}","digest":"{ld}","size":{ls}}}]}}"#
        );
        let (md, ms) = put(manifest.as_bytes());
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let (id, is) = put(index.as_bytes());
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{id}","size":{is},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
        ),
    )
    .unwrap();
    id
}
