//! Test and benchmark fixtures (feature `bench`): releases with a real dm-verity
//! tree and signed boot files, file-backed disks with a real GPT, a loopback HTTP
//! server with Range support and fault injection, and [`bench_update`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use disk_layout::{Arch, Part, Slot, boot_files};
use gpt_slots::Attrs;
use release_manifest::{KeyPair, Manifest, ManifestFields, ReleaseWriter, Version};
use release_repo::{PublishOptions, Root, Wave};
use sha2::{Digest, Sha256};

use crate::agent::{Agent, ApplyOutcome};
use crate::http::{Http, HttpOptions};
use crate::state::StateDir;
use crate::target::Target;
use crate::{Error, Host};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub const BOARD: &str = "qemu-x86_64";
pub const NOW: u64 = 1_800_000_000;

pub fn build_key() -> KeyPair {
    KeyPair::from_seed([0x42; 32])
}

pub fn repo_keys() -> Vec<KeyPair> {
    vec![KeyPair::from_seed([1; 32]), KeyPair::from_seed([2; 32])]
}

/// Deterministic, roughly 2:1 compressible data (half of each 4 KiB block
/// pseudo-random, half a repeating pattern), like a real filesystem image.
pub fn fill(buf: &mut [u8], mut state: u64) {
    for (i, block) in buf.chunks_mut(4096).enumerate() {
        let half = block.len() / 2;
        for b in block[..half].iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        for (j, b) in block[half..].iter_mut().enumerate() {
            *b = (i + j / 64) as u8;
        }
    }
}

/// Builds a release in `out`: a usr image of `usr_bytes` data (rounded up to
/// 4 KiB) plus its verity tree, and signed boot files. Returns the release dir.
pub fn make_release(
    out: &Path,
    version: &str,
    usr_bytes: u64,
    chunk_size: u64,
    seed: u64,
) -> Result<PathBuf, BoxError> {
    make_release_with(out, version, usr_bytes, chunk_size, seed, &build_key())
}

/// [`make_release`] with `boot.sig` made by `boot_key` (the manifest is always
/// signed by [`build_key`]).
pub fn make_release_with(
    out: &Path,
    version: &str,
    usr_bytes: u64,
    chunk_size: u64,
    seed: u64,
    boot_key: &KeyPair,
) -> Result<PathBuf, BoxError> {
    let dir = out.join(format!("release-{version}"));
    std::fs::create_dir_all(out)?;
    let img_path = out.join(format!("usr-{version}.img"));
    let data_blocks = usr_bytes.div_ceil(4096).max(1);
    let hash_offset = data_blocks * 4096;
    {
        let mut f = std::fs::File::create(&img_path)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = hash_offset;
        let mut n = seed.max(1);
        while left > 0 {
            let len = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..len], n);
            n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
            f.write_all(&buf[..len])?;
            left -= len as u64;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img_path)?;
    let info = verity_tree::format(
        &mut f,
        &verity_tree::Params {
            data_blocks,
            hash_offset,
            salt: [seed as u8; 32],
            uuid: [7; 16],
        },
    )?;
    f.sync_all()?;
    drop(f);
    let mut w = ReleaseWriter::create(&dir)?;
    w.add_image_file("usr", &img_path, chunk_size, Some(info.into()))?;
    finish_release(w, version, &info, boot_key)?;
    std::fs::remove_file(&img_path)?;
    Ok(dir)
}

/// Adds the boot files of test release `version` (the command line carries
/// `info`, `boot.sig` is made by `boot_key`) to `w` and signs the manifest
/// with [`build_key`].
pub fn finish_release(
    mut w: ReleaseWriter,
    version: &str,
    info: &verity_tree::VerityInfo,
    boot_key: &KeyPair,
) -> Result<(), BoxError> {
    let kernel = format!("kernel {version}\n").repeat(3000).into_bytes();
    let initrd = format!("initrd {version}\n").repeat(2000).into_bytes();
    let cmdline = format!(
        "console=ttyS0 usrhash={} cairn.verity={}:{}:{}",
        hex::encode(info.root_hash),
        info.data_blocks,
        info.hash_offset,
        hex::encode(info.salt)
    )
    .into_bytes();
    let sig = boot_sig::sign_line(boot_key.seed(), &kernel, &initrd, &cmdline);
    for (name, bytes) in [
        (boot_files::KERNEL, &kernel[..]),
        (boot_files::INITRD, &initrd[..]),
        (boot_files::CMDLINE, &cmdline[..]),
        (boot_files::SIGNATURE, &sig[..]),
    ] {
        w.add_image(name, bytes, 4096 * 16, None)?;
    }
    w.finish(
        ManifestFields {
            board: BOARD.into(),
            arch: Arch::X86_64.name().into(),
            version: Version::parse(version)?,
            created: NOW - 86_400,
            expires: None,
            packages: vec![],
        },
        &[build_key()],
    )?;
    Ok(())
}

/// A repository at `repo` with `releases` published on `stable`.
pub fn make_repo(repo: &Path, releases: &[&Path]) -> Result<Root, BoxError> {
    let keys = repo_keys();
    let root = release_repo::init(repo, &keys, 2, NOW + 365 * 86_400)?;
    for r in releases {
        publish(repo, r, Wave::immediate(NOW - 3600))?;
    }
    Ok(root)
}

pub fn publish(repo: &Path, release: &Path, wave: Wave) -> Result<(), BoxError> {
    release_repo::publish(
        release,
        repo,
        "stable",
        &repo_keys(),
        PublishOptions {
            wave,
            expires: NOW + 30 * 86_400,
        },
    )?;
    Ok(())
}

/// The files a test host of version 1.0.0 reads from `dir`: `root.json`
/// (`root`), `keys.json` (trusting the build key), `os-release` and
/// `config.toml` (`config`). [`cairnctl_args`] points cairnctl at them.
pub fn write_host_files(dir: &Path, root: &Root, config: &str) -> Result<(), BoxError> {
    let key = build_key().public();
    let keys = serde_json::json!([{
        "id": key.key_id(),
        "public": key.to_line().trim(),
        "development": true,
    }]);
    std::fs::write(dir.join("root.json"), root.to_json())?;
    std::fs::write(dir.join("keys.json"), keys.to_string())?;
    std::fs::write(
        dir.join("os-release"),
        format!("ID=cairn\nIMAGE_ID={BOARD}\nIMAGE_VERSION=1.0.0\n"),
    )?;
    std::fs::write(dir.join("config.toml"), config)?;
    Ok(())
}

/// cairnctl's path options for the test host in `dir` (files from
/// [`write_host_files`], disk from [`make_target`] in `dir/host`, state in
/// `dir/state`), booted from slot a, with its repository at `url`.
pub fn cairnctl_args(dir: &Path, url: &str) -> Vec<String> {
    let host = dir.join("host");
    let p = |x: PathBuf| x.display().to_string();
    [
        ("--config", p(dir.join("config.toml"))),
        ("--url", url.to_string()),
        ("--disk", p(host.join("disk.img"))),
        ("--slot-a", p(host.join("usr-a.img"))),
        ("--slot-b", p(host.join("usr-b.img"))),
        ("--esp", p(host.join("esp"))),
        ("--state-dir", p(dir.join("state"))),
        ("--root", p(dir.join("root.json"))),
        ("--keys", p(dir.join("keys.json"))),
        ("--os-release", p(dir.join("os-release"))),
        ("--booted-slot", "a".to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

/// A host disk: `disk.img` with a Cairn GPT (A 1/0/1, B 0/0/0), slot files of
/// `slot_bytes` each, an ESP directory whose `cairn/a/` holds the booted files.
pub fn make_target(dir: &Path, slot_bytes: u64) -> Result<Target, BoxError> {
    std::fs::create_dir_all(dir)?;
    let disk = dir.join("disk.img");
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::create(&disk)?;
    f.set_len(16 * MIB)?;
    let mut gpt = gptman::GPT::new_from(&mut f, 512, [0xd1; 16])?;
    let spm = MIB / 512;
    let mut start = spm;
    for part in Part::ALL {
        let end = if part == Part::Root {
            gpt.header.last_usable_lba
        } else {
            start + 2 * spm - 1
        };
        let attrs = match part {
            Part::UsrA => Attrs::new(1, 0, true).to_bits(disk_layout::GPT_ATTR_READ_ONLY),
            Part::UsrB => Attrs::new(0, 0, false).to_bits(disk_layout::GPT_ATTR_READ_ONLY),
            _ => 0,
        };
        gpt[part.number()] = gptman::GPTPartitionEntry {
            partition_type_guid: part.type_guid(Arch::X86_64).0,
            unique_partition_guid: [part.number() as u8; 16],
            starting_lba: start,
            ending_lba: end,
            attribute_bits: attrs,
            partition_name: part.label().into(),
        };
        start = end + 1;
    }
    gptman::GPT::write_protective_mbr_into(&mut f, 512)?;
    gpt.write_into(&mut f)?;
    f.sync_all()?;
    let mk = |name: &str, byte: u8| -> Result<PathBuf, BoxError> {
        let p = dir.join(name);
        let f = std::fs::File::create(&p)?;
        f.set_len(slot_bytes)?;
        // Some recognizable bytes at the start: the "installed OS".
        f.write_all_at_start(&vec![byte; 64 << 10])?;
        Ok(p)
    };
    let slot_a = mk("usr-a.img", 0xaa)?;
    let slot_b = mk("usr-b.img", 0xbb)?;
    let esp = dir.join("esp");
    let a = esp.join(Slot::A.esp_dir());
    std::fs::create_dir_all(&a)?;
    let key = build_key();
    let (k, i, c) = (
        b"kernel a".to_vec(),
        b"initrd a".to_vec(),
        b"usrhash=aa".to_vec(),
    );
    std::fs::write(a.join(boot_files::KERNEL), &k)?;
    std::fs::write(a.join(boot_files::INITRD), &i)?;
    std::fs::write(a.join(boot_files::CMDLINE), &c)?;
    std::fs::write(
        a.join(boot_files::SIGNATURE),
        boot_sig::sign_line(key.seed(), &k, &i, &c),
    )?;
    Ok(Target {
        disk,
        slot_a,
        slot_b,
        esp,
    })
}

trait WriteAtStart {
    fn write_all_at_start(&self, b: &[u8]) -> std::io::Result<()>;
}

impl WriteAtStart for std::fs::File {
    fn write_all_at_start(&self, b: &[u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, b, 0)
    }
}

pub fn host(booted: Slot, version: &str) -> Host {
    Host {
        booted_slot: booted,
        booted_version: Version::parse(version).expect("fixture version"),
        board: BOARD.into(),
        arch: Arch::X86_64.name().into(),
        release_keys: vec![build_key().public()],
        development_key: true,
    }
}

/// An agent over `target`, `state_dir` and `url`, with a fixed clock.
pub fn agent(
    target: &Target,
    state_dir: &Path,
    url: &str,
    root: &Root,
    booted: Slot,
    version: &str,
    http: HttpOptions,
) -> Agent {
    Agent {
        host: host(booted, version),
        target: target.clone(),
        state: StateDir::new(state_dir),
        http: Http::new(url, http),
        channel: "stable".into(),
        shipped_root: Some(root.clone()),
        seed: 0.5,
        clock: Some(NOW),
        ignore_wave: false,
        stop_after_chunks: None,
        full_download: false,
        reboot: crate::config::RebootStrategy::Immediate,
        fleet: None,
    }
}

/// [`HttpOptions`] for tests against the loopback [`Server`]: 2 s stall and
/// connect timeouts, 3 attempts 10 ms apart.
pub fn fast_http() -> HttpOptions {
    HttpOptions {
        stall_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        attempts: 3,
        retry_pause: Duration::from_millis(10),
    }
}

/// Checks and applies the release the check chooses (panics if none is, or
/// on any error).
pub fn install(agent: &Agent) -> ApplyOutcome {
    let entry = agent.check().unwrap().decision.chosen.unwrap();
    agent.apply(&entry, &mut |_| {}).unwrap()
}

/// Runs `cmd` to its end: whether it succeeded, its stdout and its stderr.
pub fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills and reaps a child a test started when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of its own under the temporary directory (mode 0700), removed
/// with its contents when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("cairn-fixture-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(Scratch(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test host and its repository in a scratch directory `dir`, laid out as
/// [`cairnctl_args`] expects: the host files of [`write_host_files`] (channel
/// `stable`) in `dir`, the disk of [`make_target`] in `dir/host`, state in
/// `dir/state`; the repository in `dir/repo`, served by `server`. Panics on
/// any error.
pub struct World {
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub root: Root,
    pub target: Target,
    pub server: Server,
    /// What [`World::agent`] fetches with ([`fast_http`] to begin with).
    pub http: HttpOptions,
    /// The usr image size and chunk size of the releases made here.
    pub usr: u64,
    pub chunk: u64,
    _scratch: Scratch,
}

impl World {
    /// A repository offering `versions` (version and [`make_release`] seed,
    /// usr images of `usr` bytes in `chunk` chunks), published on `stable`,
    /// and a host disk with slots of `disk` bytes, booted from slot a.
    pub fn new(versions: &[(&str, u64)], usr: u64, chunk: u64, disk: u64) -> World {
        let scratch = Scratch::new().expect("scratch directory");
        let dir = scratch.0.clone();
        let releases: Vec<PathBuf> = versions
            .iter()
            .map(|&(version, seed)| {
                make_release(&dir.join("build"), version, usr, chunk, seed).unwrap()
            })
            .collect();
        let releases: Vec<&Path> = releases.iter().map(PathBuf::as_path).collect();
        let repo = dir.join("repo");
        let root = make_repo(&repo, &releases).unwrap();
        let target = make_target(&dir.join("host"), disk).unwrap();
        write_host_files(&dir, &root, "[update]\nchannel = \"stable\"\n").unwrap();
        let server = Server::start(&repo).unwrap();
        World {
            dir,
            repo,
            root,
            target,
            server,
            http: fast_http(),
            usr,
            chunk,
            _scratch: scratch,
        }
    }

    /// The agent of this host booted from `booted` running `version` (see
    /// [`agent`]).
    pub fn agent(&self, booted: Slot, version: &str) -> Agent {
        agent(
            &self.target,
            &self.dir.join("state"),
            &self.server.url,
            &self.root,
            booted,
            version,
            self.http,
        )
    }

    /// [`World::agent`], after it installed what its check chose ([`install`]).
    pub fn updated_agent(&self, booted: Slot, version: &str) -> Agent {
        let agent = self.agent(booted, version);
        install(&agent);
        agent
    }

    /// Builds release `version` (with `seed`) in `dir/build`.
    pub fn release(&self, version: &str, seed: u64) -> PathBuf {
        make_release(&self.dir.join("build"), version, self.usr, self.chunk, seed).unwrap()
    }

    /// Builds release `version` and publishes it, its wave started at [`NOW`].
    pub fn publish(&self, version: &str, seed: u64) {
        publish(
            &self.repo,
            &self.release(version, seed),
            Wave::immediate(NOW),
        )
        .unwrap();
    }

    /// The published manifest of `version`.
    pub fn manifest(&self, version: &str) -> Manifest {
        let d = self.repo.join(format!("releases/{BOARD}/{version}"));
        Manifest::load(&d, &[build_key().public()], 1).unwrap()
    }

    /// The GPT attributes of slots a and b.
    pub fn attrs(&self) -> (Attrs, Attrs) {
        let a = self.target.read_attrs().unwrap();
        (a.get(Slot::A), a.get(Slot::B))
    }

    /// Sets the GPT attributes of slots a and b.
    pub fn set_attrs(&self, a: Attrs, b: Attrs) {
        self.target
            .set_attrs(&[(Slot::A, a), (Slot::B, b)])
            .unwrap();
    }

    /// sha256 of a slot's bytes and of every file of its ESP directory.
    pub fn snapshot(&self, slot: Slot) -> Vec<(String, [u8; 32])> {
        let mut out = vec![(
            format!("slot {}", slot.letter()),
            Sha256::digest(read_all(self.target.slot_path(slot)).unwrap()).into(),
        )];
        let dir = self.target.esp_dir(slot);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        names.sort();
        for p in names {
            out.push((
                p.display().to_string(),
                Sha256::digest(std::fs::read(&p).unwrap()).into(),
            ));
        }
        out
    }
}

impl Server {
    /// The requests served so far, each as its path and Range start.
    pub fn log(&self) -> Vec<String> {
        self.faults.log.lock().unwrap().clone()
    }
}

/// Faults the server injects.
#[derive(Debug, Default)]
pub struct Faults {
    /// Close the connection after this many body bytes of the next response
    /// whose path contains the given text (once).
    pub drop_once: Mutex<Option<(String, u64)>>,
    /// Never answer (a stalled server).
    pub stall: AtomicBool,
    /// Append this many garbage bytes to every body whose path contains the text.
    pub extra: Mutex<Option<(String, u64)>>,
    /// Flip one byte in the middle of every body whose path contains the text
    /// (same size: only the hash can tell).
    pub corrupt: Mutex<Option<String>>,
    /// Drip-feed every body whose path contains the text: its first `after`
    /// bytes at full speed, then one byte every `every` (a slow-retrieval
    /// attack). The server gives up on a connection after 30 s.
    pub drip: Mutex<Option<Drip>>,
    /// Body bytes sent.
    pub sent: AtomicU64,
    /// Requests served, with their Range header.
    pub log: Mutex<Vec<String>>,
}

/// See [`Faults::drip`].
#[derive(Debug, Clone)]
pub struct Drip {
    pub needle: String,
    pub after: u64,
    pub every: Duration,
}

/// A static file server on 127.0.0.1 with Range support.
pub struct Server {
    pub url: String,
    pub faults: Arc<Faults>,
}

impl Server {
    pub fn start(root: &Path) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let faults = Arc::new(Faults::default());
        let (root, f) = (root.to_path_buf(), faults.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, f) = (root.clone(), f.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &f);
                });
            }
        });
        Ok(Server { url, faults })
    }
}

/// The status line and the byte range [start, end) that answer a request
/// for `bytes=range-range_end` (either missing) of a `total`-byte file: the
/// whole file when the range does not start inside it.
fn answer_range(
    range: Option<u64>,
    range_end: Option<u64>,
    total: u64,
) -> (&'static str, u64, u64) {
    match (range, range_end) {
        (Some(s), Some(e)) if s < total => ("206 Partial Content", s, (e + 1).min(total)),
        (Some(s), None) if s < total => ("206 Partial Content", s, total),
        _ => ("200 OK", 0, total),
    }
}

fn serve(stream: TcpStream, root: &Path, f: &Faults) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    let mut range_end = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            let spec = v
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'));
            range = spec.and_then(|(a, _)| a.parse::<u64>().ok());
            range_end = spec.and_then(|(_, b)| b.parse::<u64>().ok());
        }
    }
    if let Ok(mut log) = f.log.lock() {
        log.push(format!("{path} {range:?}"));
    }
    if f.stall.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(60));
        return Ok(());
    }
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return out.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let applies = |fault: &Mutex<Option<String>>| {
        fault
            .lock()
            .is_ok_and(|f| f.as_ref().is_some_and(|n| path.contains(n.as_str())))
    };
    let extra_applies = f
        .extra
        .lock()
        .is_ok_and(|e| e.as_ref().is_some_and(|(n, _)| path.contains(n.as_str())));
    // A Range request without a fault that changes the body reads only its
    // part, as a real server does (a whole 4 MiB chunk read per delta range
    // would dominate the delta's time on loopback).
    let (total, part, start, end, status) =
        if range.is_some() && !extra_applies && !applies(&f.corrupt) {
            let Ok(file) = std::fs::File::open(root.join(rel)) else {
                return out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            };
            let total = file.metadata()?.len();
            let (status, start, end) = answer_range(range, range_end, total);
            let mut part = vec![0u8; (end - start) as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut part, start)?;
            (total, part, start, end, status)
        } else {
            let Ok(mut body) = std::fs::read(root.join(rel)) else {
                return out.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            };
            if let Ok(extra) = f.extra.lock()
                && let Some((needle, n)) = extra.as_ref()
                && path.contains(needle.as_str())
            {
                body.extend(std::iter::repeat_n(b'x', *n as usize));
            }
            if let Ok(corrupt) = f.corrupt.lock()
                && let Some(needle) = corrupt.as_ref()
                && path.contains(needle.as_str())
                && !body.is_empty()
            {
                let mid = body.len() / 2;
                body[mid] ^= 0xff;
            }
            let total = body.len() as u64;
            let (status, start, end) = answer_range(range, range_end, total);
            body.truncate(end as usize);
            body.drain(..start as usize);
            (total, body, start, end, status)
        };
    let part = &part[..];
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\nAccept-Ranges: bytes\r\n",
        part.len()
    );
    if range.is_some_and(|s| s < total) {
        head += &format!("Content-Range: bytes {start}-{}/{total}\r\n", end - 1);
    }
    head += "\r\n";
    out.write_all(head.as_bytes())?;
    let cut = match f.drop_once.lock() {
        Ok(mut d) => match d.as_ref() {
            Some((needle, n)) if path.contains(needle.as_str()) => {
                let n = *n;
                *d = None;
                Some(n)
            }
            _ => None,
        },
        Err(_) => None,
    };
    let send = match cut {
        Some(n) => &part[..(n as usize).min(part.len())],
        None => part,
    };
    let drip = match f.drip.lock() {
        Ok(d) => d.clone().filter(|d| path.contains(d.needle.as_str())),
        Err(_) => None,
    };
    let (fast, slow) = match &drip {
        Some(d) => send.split_at((d.after as usize).min(send.len())),
        None => (send, &[][..]),
    };
    for piece in fast.chunks(64 << 10) {
        out.write_all(piece)?;
        f.sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
    }
    if let Some(d) = drip {
        out.flush()?;
        let give_up = std::time::Instant::now() + Duration::from_secs(30);
        for byte in slow.chunks(1) {
            if std::time::Instant::now() > give_up {
                break;
            }
            std::thread::sleep(d.every);
            // Fails once the client hung up: that ends this connection.
            out.write_all(byte)?;
            out.flush()?;
            f.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    out.flush()?;
    // Dropping the stream closes it; with `cut` the client sees a short body.
    Ok(())
}

/// Result of [`bench_update`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub usr_mib: u64,
    pub chunks: u64,
    pub bytes_downloaded: u64,
    pub seconds: f64,
    /// Slot bytes per second (the uncompressed image written and verified), MB/s.
    pub mb_per_s: f64,
    /// VmHWM of this process after the run.
    pub peak_rss_kib: u64,
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `cargo xtask bench update`: builds a release with a `usr_mib` MiB /usr (4 MiB
/// chunks), serves it from a loopback HTTP repository and applies it to a
/// file-backed slot: download, verify, write, fsync, read back, verity check, flip.
pub fn bench_update(work: &Path, usr_mib: u64) -> Result<BenchReport, BoxError> {
    let rel = make_release(
        &work.join("build"),
        "2.0.0",
        usr_mib << 20,
        release_manifest::DEFAULT_CHUNK_SIZE,
        99,
    )?;
    let repo = work.join("repo");
    let root = make_repo(&repo, &[&rel])?;
    std::fs::remove_dir_all(work.join("build"))?;
    let target = make_target(&work.join("host"), (usr_mib + usr_mib / 64 + 8) << 20)?;
    let server = Server::start(&repo)?;
    let agent = agent(
        &target,
        &work.join("state"),
        &server.url,
        &root,
        Slot::A,
        "1.0.0",
        HttpOptions::default(),
    );
    let check = agent.check()?;
    let entry = check
        .decision
        .chosen
        .ok_or_else(|| Error::BadRelease("bench: nothing to install".into()))?;
    let out = agent.apply(&entry, &mut |_| {})?;
    Ok(BenchReport {
        usr_mib,
        chunks: out.chunks_total,
        bytes_downloaded: out.bytes_downloaded,
        seconds: out.seconds,
        mb_per_s: out.usr_bytes as f64 / 1e6 / out.seconds,
        peak_rss_kib: peak_rss_kib(),
    })
}

/// Reads a whole file, for tests comparing slots.
pub fn read_all(p: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    std::fs::File::open(p)?.read_to_end(&mut v)?;
    Ok(v)
}
