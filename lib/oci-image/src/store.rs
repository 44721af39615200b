//! The content-addressed image store.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>     manifests, configs and layers, by digest
//! ROOT/rootfs/<hex>/          the flattened rootfs of manifest <hex> (never changed after unpack)
//! ROOT/images/<hex>.json      what the store knows of manifest <hex> (config, layers, signatures)
//! ROOT/index.json             names ("registry/repo:tag") → manifest digests
//! ROOT/tmp/                   staging: everything is built here and renamed into place
//! ROOT/lock                   flock: shared while ingesting, exclusive for gc/rm
//! ```
//!
//! ROOT itself is mode 0700 (see [`private_dir`]): images carry setuid programs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::digest::{copy_verified, read_capped, sha256_digest};
use crate::manifest::{
    ACCEPT_MANIFESTS, Descriptor, ImageConfig, ImageManifest, MAX_MANIFEST_SIZE, Parsed, Platform,
    SIGNATURE_LAYER, parse_config, parse_manifest, select_platform,
};
use crate::reference::{Reference, is_sha256_digest};
use crate::registry::{Credentials, Registry};
use crate::trust::{Decision, Signature, TrustPolicy, canonical_name};
use crate::unpack::{UnpackOptions, UnpackReport, apply_layer};

pub const DEFAULT_ROOT: &str = "/var/lib/cairn/images";
/// The mode of the store's top directory and of the directories cairn-run
/// keeps container filesystems in: root only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Records, the index, trust policies and signature files: replaced durably
/// (temp file, fsync, rename, fsync of the directory), mode 0600.
pub(crate) const FILE_OPTIONS: durable_file::Options = durable_file::Options::new(0o600);
/// Signature blobs are tiny; anything bigger is refused.
const MAX_SIGNATURE_SIZE: u64 = 64 * 1024;

/// Options of [`Store::pull`].
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Plain HTTP for a non-loopback registry (loopback always uses plain HTTP).
    /// Pulls over plain HTTP are anonymous: `auth` is never sent over it.
    pub insecure_http: bool,
    /// Sent only over HTTPS (see the crate documentation).
    pub auth: Option<Credentials>,
    /// A signature file to use instead of looking for one in the registry.
    pub signature: Option<PathBuf>,
    pub timeout: Duration,
    pub platform: Platform,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure_http: false,
            auth: None,
            signature: None,
            timeout: Duration::from_secs(600),
            platform: Platform::host(),
        }
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `registry/repo:tag` (or `registry/repo@digest`); None when no name refers to it.
    pub name: Option<String>,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    pub config: ImageConfig,
    /// The unpacked, flattened rootfs: use read-only (as an overlay lower dir).
    pub rootfs: PathBuf,
    /// Bytes of config and layer blobs.
    pub size: u64,
    pub created: Option<String>,
    /// Signatures kept with the image, so [`Store::verify_trust`] works offline.
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: u64,
    pub removed_rootfs: u64,
    pub removed_images: u64,
    pub freed_bytes: u64,
}

/// `images/<hex>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    digest: String,
    config_digest: String,
    layers: Vec<Descriptor>,
    config: ImageConfig,
    created: Option<String>,
    size: u64,
    /// Set when pulled through an index: signatures over it count too.
    #[serde(default)]
    index_digest: Option<String>,
    #[serde(default)]
    signatures: Vec<Signature>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    format: u32,
    names: BTreeMap<String, String>,
}

/// Where the blobs of an image come from.
pub(crate) enum BlobSource<'a> {
    Registry(&'a Registry),
    /// A local directory of `<hex>` files (an OCI layout's blobs/sha256, or
    /// files staged from a docker archive).
    Dir(PathBuf),
}

impl BlobSource<'_> {
    fn fetch(&self, desc: &Descriptor, dst: &mut File) -> Result<(), Error> {
        match self {
            BlobSource::Registry(r) => r.get_blob(desc, dst),
            BlobSource::Dir(dir) => {
                let path = dir.join(hex_of(&desc.digest));
                let mut f = File::open(&path).map_err(Error::io(&path))?;
                copy_verified(
                    &mut f,
                    dst,
                    &desc.digest,
                    desc.size,
                    &path.display().to_string(),
                )
            }
        }
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A directory under ROOT/tmp, removed when dropped. It is flock'ed while in
/// use, so gc removes only what crashed operations left.
pub(crate) struct Staging {
    pub dir: PathBuf,
    _lock: File,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An flock held until dropped.
struct Lock {
    _file: File,
}

impl Lock {
    fn take(path: &Path, exclusive: bool) -> Result<Lock, Error> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(Error::io(path))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: valid fd.
        if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
            return Err(Error::io(path)(std::io::Error::last_os_error()));
        }
        Ok(Lock { _file: f })
    }
}

/// What an ingestion (pull or import) has gathered before blobs are fetched.
pub(crate) struct Pending<'a> {
    pub source: BlobSource<'a>,
    /// `registry/repo:tag` to record, if any.
    pub store_name: Option<String>,
    /// `registry/repo`: what trust and signatures are about.
    pub trust_name: String,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    /// The index the manifest was chosen from, when pulled through one.
    pub index_digest: Option<String>,
    pub signatures: Vec<Signature>,
    /// The platform the image must be built for.
    pub platform: Platform,
}

/// Creates `dir` (and its missing parents) with mode 0700, or tightens it to
/// 0700 when it exists with group or other bits (a store made by an older
/// cairn-run).
///
/// Why: the store holds every image's files, setuid-root programs included,
/// and ROOT is mounted with suid allowed. If any local user could walk into
/// `rootfs/<hex>/`, a setuid shell shipped in any image would be a root shell
/// on the host. (cairn-run makes its container bundle and writable-layer
/// directories private with this too.) Containers are not affected: their
/// processes see the rootfs through their mount namespace (overlayfs checks
/// the lower directories with the credentials of the root that mounted it),
/// never through this path.
/// A symlinked `dir` is followed: where the store lives is the operator's
/// choice; the directory it names is the one made private.
pub fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(dir)(e)),
    }
    let meta = fs::metadata(dir).map_err(Error::io(dir))?;
    if !meta.is_dir() {
        return Err(Error::io(dir)(std::io::Error::other(
            "exists and is not a directory; move it away",
        )));
    }
    // The umask may have taken bits from the mode given to mkdir, never
    // added any; an existing directory may have anything.
    if meta.permissions().mode() & 0o7777 != PRIVATE_DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE)).map_err(|e| {
            Error::io(dir)(std::io::Error::new(
                e.kind(),
                format!(
                    "cannot restrict it to mode 0700 (root only) so that host users cannot run setuid programs of images: {e}"
                ),
            ))
        })?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if missing) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, Error> {
        // Root only, before anything is unpacked under it: see [`private_dir`].
        private_dir(root)?;
        for sub in ["blobs/sha256", "rootfs", "images", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(Error::io(&p))?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _lock = Lock::take(&root.join("lock"), true)?;
            if !index.exists() {
                write_index(
                    &index,
                    &Index {
                        format: 1,
                        names: BTreeMap::new(),
                    },
                )?;
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            unpack: UnpackOptions::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex_of(digest))
    }

    fn rootfs_path(&self, digest: &str) -> PathBuf {
        self.root.join("rootfs").join(hex_of(digest))
    }

    fn record_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", hex_of(digest)))
    }

    fn lock(&self, exclusive: bool) -> Result<Lock, Error> {
        Lock::take(&self.root.join("lock"), exclusive)
    }

    pub(crate) fn staging(&self) -> Result<Staging, Error> {
        let tmp = self.root.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix("op-")
            .tempdir_in(&tmp)
            .map_err(Error::io(&tmp))?
            .keep();
        let lock = File::open(&dir).map_err(Error::io(&dir))?;
        // SAFETY: valid fd. A fresh directory: nobody else can hold its lock.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        Ok(Staging { dir, _lock: lock })
    }

    fn read_index(&self) -> Result<Index, Error> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(Error::io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            path,
            source: std::io::Error::other(format!("store index is corrupt: {e}")),
        })
    }

    fn read_record(&self, digest: &str) -> Result<Option<Record>, Error> {
        let path = self.record_path(digest);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Io {
                    path,
                    source: std::io::Error::other(format!("image record is corrupt: {e}")),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path)(e)),
        }
    }

    fn image_of(&self, record: Record, name: Option<String>) -> Image {
        Image {
            name,
            rootfs: self.rootfs_path(&record.digest),
            digest: record.digest,
            config: record.config,
            size: record.size,
            created: record.created,
            signatures: record.signatures,
        }
    }

    /// Pulls `reference` from its registry, checking trust before any layer is fetched.
    pub fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
        trust: &TrustPolicy,
    ) -> Result<Image, Error> {
        let r = Reference::parse(reference)?;
        let name = r.name();
        // Refuse unknown names before touching the network.
        let decision = trust.decide(&name);
        if decision == Decision::Reject {
            return Err(Error::Untrusted { name });
        }
        let registry = Registry::new(&r, opts.insecure_http, opts.auth.clone(), opts.timeout);
        let what = r.to_string();
        let fetched = registry
            .get_manifest(r.manifest_ref(), ACCEPT_MANIFESTS)?
            .ok_or_else(|| Error::Registry {
                url: what.clone(),
                status: 404,
                message: "no such image in the registry (check the name and tag)".to_string(),
            })?;
        let mut digest = sha256_digest(&fetched.bytes);
        let mut index_digest = None;
        if let Some(pinned) = &r.digest
            && &digest != pinned
        {
            return Err(Error::DigestMismatch {
                what: format!("manifest of {what}"),
                expected: pinned.clone(),
                actual: digest,
            });
        }
        let (bytes, manifest) =
            match parse_manifest(&fetched.bytes, fetched.content_type.as_deref(), &what)? {
                Parsed::Manifest(m) => (fetched.bytes, m),
                Parsed::Index(index) => {
                    let desc = select_platform(&index, &opts.platform, &what)?.clone();
                    let m = registry
                        .get_manifest(&desc.digest, ACCEPT_MANIFESTS)?
                        .ok_or_else(|| Error::Registry {
                            url: what.clone(),
                            status: 404,
                            message: format!(
                                "manifest {} listed in the index is missing",
                                desc.digest
                            ),
                        })?;
                    let mut sink = Vec::new();
                    copy_verified(&mut &m.bytes[..], &mut sink, &desc.digest, desc.size, &what)?;
                    match parse_manifest(&m.bytes, m.content_type.as_deref(), &what)? {
                        Parsed::Manifest(pm) => {
                            index_digest = Some(digest);
                            digest = desc.digest;
                            (m.bytes, pm)
                        }
                        Parsed::Index(_) => {
                            return Err(Error::Manifest {
                                what,
                                problem: "nested index for a platform".to_string(),
                            });
                        }
                    }
                }
            };
        let mut signatures = Vec::new();
        if let Some(path) = &opts.signature {
            signatures.push(Signature::read(path)?);
        } else if matches!(decision, Decision::RequireSignature { .. }) {
            signatures = fetch_registry_signatures(&registry, &digest)?;
            if let Some(d) = &index_digest {
                signatures.extend(fetch_registry_signatures(&registry, d)?);
            }
        }
        let pending = Pending {
            source: BlobSource::Registry(&registry),
            store_name: Some(r.store_name()),
            trust_name: name,
            manifest_bytes: bytes,
            manifest_digest: digest,
            manifest,
            index_digest,
            signatures,
            platform: opts.platform.clone(),
        };
        self.ingest(pending, trust)
    }

    /// Trust, blobs (verified into staging), config, unpack, then commit by renames.
    pub(crate) fn ingest(&self, p: Pending<'_>, trust: &TrustPolicy) -> Result<Image, Error> {
        let mut digests = vec![p.manifest_digest.as_str()];
        digests.extend(p.index_digest.as_deref());
        trust.check_any(&p.trust_name, &digests, &p.signatures)?;
        let _shared = self.lock(false)?;
        let staging = self.staging()?;
        let sblobs = staging.dir.join("blobs");
        fs::create_dir_all(&sblobs).map_err(Error::io(&sblobs))?;
        let what = p.store_name.clone().unwrap_or_else(|| p.trust_name.clone());

        // Returns the path of a verified copy of the blob: the store's, or a staged one.
        let get_blob = |desc: &Descriptor| -> Result<PathBuf, Error> {
            let in_store = self.blob_path(&desc.digest);
            if in_store.exists() {
                return Ok(in_store);
            }
            let staged = sblobs.join(hex_of(&desc.digest));
            if staged.exists() {
                return Ok(staged);
            }
            let part = sblobs.join(format!("{}.part", hex_of(&desc.digest)));
            let mut f = File::create(&part).map_err(Error::io(&part))?;
            p.source.fetch(desc, &mut f)?;
            f.sync_all().map_err(Error::io(&part))?;
            fs::rename(&part, &staged).map_err(Error::io(&staged))?;
            Ok(staged)
        };

        if p.manifest.config.size > MAX_MANIFEST_SIZE {
            return Err(Error::Manifest {
                what,
                problem: format!("config of {} bytes is too big", p.manifest.config.size),
            });
        }
        let config_path = get_blob(&p.manifest.config)?;
        let mut cf = File::open(&config_path).map_err(Error::io(&config_path))?;
        let config_bytes = read_capped(&mut cf, MAX_MANIFEST_SIZE, &what)?;
        let parsed = parse_config(&config_bytes, &what)?;
        // A single-platform manifest names no platform; its config does.
        // Refused here, it is a clear error instead of the container's
        // silent exec format error later.
        if let Some(got) = &parsed.platform
            && !p.platform.matches(got)
        {
            return Err(Error::WrongPlatform {
                what,
                image: got.to_string(),
                host: p.platform.to_string(),
            });
        }

        let mut layer_paths = Vec::new();
        for l in &p.manifest.layers {
            layer_paths.push(get_blob(l)?);
        }

        let final_rootfs = self.rootfs_path(&p.manifest_digest);
        let staged_rootfs = staging.dir.join("rootfs");
        let mut report = UnpackReport::default();
        if !final_rootfs.exists() {
            fs::create_dir(&staged_rootfs).map_err(Error::io(&staged_rootfs))?;
            for (l, path) in p.manifest.layers.iter().zip(&layer_paths) {
                apply_layer(&staged_rootfs, path, &l.digest, &self.unpack, &mut report)?;
            }
        }

        // Manifest bytes are a blob too (so a record can be checked against them).
        let mpath = sblobs.join(hex_of(&p.manifest_digest));
        fs::write(&mpath, &p.manifest_bytes).map_err(Error::io(&mpath))?;

        // Commit: blobs, rootfs, record, then the name (the visible step) last.
        let _excl = {
            drop(_shared);
            self.lock(true)?
        };
        let store_blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&sblobs).map_err(Error::io(&sblobs))? {
            let entry = entry.map_err(Error::io(&sblobs))?;
            let fname = entry.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            if fname.ends_with(".part") {
                continue;
            }
            let dst = store_blobs.join(fname);
            if !dst.exists() {
                durable_file::sync_file(entry.path())?;
                fs::rename(entry.path(), &dst).map_err(Error::io(&dst))?;
            }
        }
        durable_file::sync_dir(&store_blobs)?;
        if !final_rootfs.exists() && staged_rootfs.exists() {
            // syncfs: the renamed tree must be on disk before a name points at it.
            durable_file::sync_fs(&staged_rootfs)?;
            fs::rename(&staged_rootfs, &final_rootfs).map_err(Error::io(&final_rootfs))?;
            durable_file::sync_dir(self.root.join("rootfs"))?;
        }
        let mut signatures = self
            .read_record(&p.manifest_digest)?
            .map(|r| r.signatures)
            .unwrap_or_default();
        for s in p.signatures {
            // Keep only signatures about this image; others could never verify.
            let ours = s.digest == p.manifest_digest || Some(&s.digest) == p.index_digest.as_ref();
            if ours && !signatures.contains(&s) {
                signatures.push(s);
            }
        }
        let size = p.manifest.config.size + p.manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let record = Record {
            digest: p.manifest_digest.clone(),
            config_digest: p.manifest.config.digest.clone(),
            layers: p.manifest.layers.clone(),
            config: parsed.config,
            created: parsed.created,
            size,
            index_digest: p.index_digest.clone(),
            signatures,
        };
        let rbytes = serde_json::to_vec_pretty(&record).map_err(|e| Error::Io {
            path: self.record_path(&record.digest),
            source: std::io::Error::other(e),
        })?;
        durable_file::write(self.record_path(&record.digest), &rbytes, FILE_OPTIONS)?;
        if let Some(n) = &p.store_name {
            let mut index = self.read_index()?;
            index.names.insert(n.clone(), record.digest.clone());
            write_index(&self.root.join("index.json"), &index)?;
        }
        drop(staging);
        Ok(self.image_of(record, p.store_name))
    }

    /// Looks up `name:tag`, `name@sha256:..`, `sha256:<hex>` or a unique hex prefix (≥ 4).
    pub fn get(&self, name_or_digest: &str) -> Result<Image, Error> {
        let q = name_or_digest.trim();
        let index = self.read_index()?;
        if let Ok(r) = Reference::parse(q) {
            if let Some(d) = &r.digest {
                if let Some(rec) = self.read_record(d)? {
                    let name = index
                        .names
                        .iter()
                        .find(|(_, v)| *v == d)
                        .map(|(k, _)| k.clone());
                    return Ok(self.image_of(rec, name.or(Some(r.store_name()))));
                }
            } else if let Some(d) = index.names.get(&r.store_name())
                && let Some(rec) = self.read_record(d)?
            {
                return Ok(self.image_of(rec, Some(r.store_name())));
            }
        }
        let hex = q.strip_prefix("sha256:").unwrap_or(q);
        if hex.len() >= 4 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let matches: Vec<String> = self
                .record_digests()?
                .into_iter()
                .filter(|d| hex_of(d).starts_with(hex))
                .collect();
            match matches.len() {
                0 => {}
                1 => {
                    let d = &matches[0];
                    if let Some(rec) = self.read_record(d)? {
                        let name = index
                            .names
                            .iter()
                            .find(|(_, v)| *v == d)
                            .map(|(k, _)| k.clone());
                        return Ok(self.image_of(rec, name));
                    }
                }
                _ => {
                    return Err(Error::Ambiguous {
                        query: q.to_string(),
                        matches: matches.join(", "),
                    });
                }
            }
        }
        Err(Error::NotFound(q.to_string()))
    }

    fn record_digests(&self) -> Result<Vec<String>, Error> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let e = e.map_err(Error::io(&dir))?;
            let n = e.file_name();
            if let Some(hex) = n.to_str().and_then(|n| n.strip_suffix(".json")) {
                let d = format!("sha256:{hex}");
                if is_sha256_digest(&d) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every name, then every image no name refers to (name None).
    pub fn list(&self) -> Result<Vec<Image>, Error> {
        let index = self.read_index()?;
        let mut out = Vec::new();
        let mut named = BTreeSet::new();
        for (name, d) in &index.names {
            if let Some(rec) = self.read_record(d)? {
                named.insert(d.clone());
                out.push(self.image_of(rec, Some(name.clone())));
            }
        }
        for d in self.record_digests()? {
            if !named.contains(&d)
                && let Some(rec) = self.read_record(&d)?
            {
                out.push(self.image_of(rec, None));
            }
        }
        Ok(out)
    }

    /// Removes a name (and the image's rootfs and record when no other name
    /// refers to it), or by digest the image and all its names. Blobs go at gc.
    pub fn remove(&self, name_or_digest: &str) -> Result<(), Error> {
        let image = self.get(name_or_digest)?;
        let _lock = self.lock(true)?;
        let mut index = self.read_index()?;
        let by_name = Reference::parse(name_or_digest.trim())
            .ok()
            .filter(|r| r.digest.is_none())
            .map(|r| r.store_name())
            .filter(|n| index.names.contains_key(n));
        match by_name {
            Some(n) => {
                index.names.remove(&n);
            }
            None => index.names.retain(|_, d| *d != image.digest),
        }
        write_index(&self.root.join("index.json"), &index)?;
        if !index.names.values().any(|d| *d == image.digest) {
            self.drop_image(&image.digest)?;
        }
        Ok(())
    }

    /// Record first (the image disappears), then the rootfs via a rename into tmp.
    fn drop_image(&self, digest: &str) -> Result<u64, Error> {
        let rec = self.record_path(digest);
        match fs::remove_file(&rec) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(rec)(e)),
        }
        self.remove_rootfs(&self.rootfs_path(digest))
    }

    fn remove_rootfs(&self, path: &Path) -> Result<u64, Error> {
        if !path.exists() {
            return Ok(0);
        }
        // Rename away first so a crash mid-delete never leaves a half rootfs under its name.
        let doomed = self.staging()?;
        let target = doomed.dir.join("rootfs");
        fs::rename(path, &target).map_err(Error::io(path))?;
        fs::remove_dir_all(&target).map_err(Error::io(&target))?;
        Ok(1)
    }

    /// Drops images no name refers to, rootfs dirs without an image, blobs no
    /// image uses, and staging left by crashed operations.
    pub fn gc(&self) -> Result<GcReport, Error> {
        let _lock = self.lock(true)?;
        let mut report = GcReport::default();
        let index = self.read_index()?;
        let named: BTreeSet<&String> = index.names.values().collect();
        let mut keep_blobs = BTreeSet::new();
        for d in self.record_digests()? {
            if !named.contains(&d) {
                self.drop_image(&d)?;
                report.removed_images += 1;
                continue;
            }
            if let Some(rec) = self.read_record(&d)? {
                keep_blobs.insert(hex_of(&rec.digest).to_string());
                keep_blobs.insert(hex_of(&rec.config_digest).to_string());
                for l in &rec.layers {
                    keep_blobs.insert(hex_of(&l.digest).to_string());
                }
            }
        }
        let rdir = self.root.join("rootfs");
        for e in fs::read_dir(&rdir).map_err(Error::io(&rdir))? {
            let e = e.map_err(Error::io(&rdir))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if !self.record_path(&format!("sha256:{n}")).exists() {
                report.removed_rootfs += self.remove_rootfs(&e.path())?;
            }
        }
        let bdir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&bdir).map_err(Error::io(&bdir))? {
            let e = e.map_err(Error::io(&bdir))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&n) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path()).map_err(Error::io(e.path()))?;
                report.removed_blobs += 1;
                report.freed_bytes += size;
            }
        }
        durable_file::sync_dir(&bdir)?;
        // Staging of crashed operations: its flock died with them.
        let tdir = self.root.join("tmp");
        for e in fs::read_dir(&tdir).map_err(Error::io(&tdir))? {
            let e = e.map_err(Error::io(&tdir))?;
            let Ok(f) = File::open(e.path()) else {
                continue;
            };
            // SAFETY: valid fd.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        Ok(report)
    }

    /// Re-checks an image against `trust` with the signatures kept in the store
    /// (the policy may have changed since the pull).
    pub fn verify_trust(&self, image: &Image, trust: &TrustPolicy) -> Result<(), Error> {
        let name = image
            .name
            .as_deref()
            .and_then(canonical_name)
            .ok_or_else(|| Error::Untrusted {
                name: format!("{} (unnamed)", image.digest),
            })?;
        let record = self
            .read_record(&image.digest)?
            .ok_or_else(|| Error::NotFound(image.digest.clone()))?;
        let mut digests = vec![image.digest.as_str()];
        digests.extend(record.index_digest.as_deref());
        trust.check_any(&name, &digests, &record.signatures)
    }

    /// Adds a signature file to a stored image (for `cairn-run sign` on the host).
    pub fn add_signature(&self, image: &Image, signature: Signature) -> Result<(), Error> {
        let _lock = self.lock(true)?;
        let mut rec = self
            .read_record(&image.digest)?
            .ok_or_else(|| Error::NotFound(image.digest.clone()))?;
        if !rec.signatures.contains(&signature) {
            rec.signatures.push(signature);
        }
        let bytes = serde_json::to_vec_pretty(&rec).map_err(|e| Error::Io {
            path: self.record_path(&rec.digest),
            source: std::io::Error::other(e),
        })?;
        Ok(durable_file::write(
            self.record_path(&rec.digest),
            &bytes,
            FILE_OPTIONS,
        )?)
    }
}

fn write_index(path: &Path, index: &Index) -> Result<(), Error> {
    let mut bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    Ok(durable_file::write(path, &bytes, FILE_OPTIONS)?)
}

/// The cosign tag convention: `sha256-<hex>.sig` in the same repository.
pub fn signature_tag(manifest_digest: &str) -> String {
    format!("sha256-{}.sig", hex_of(manifest_digest))
}

fn fetch_registry_signatures(registry: &Registry, digest: &str) -> Result<Vec<Signature>, Error> {
    let tag = signature_tag(digest);
    let Some(fetched) = registry.get_manifest(&tag, crate::manifest::OCI_MANIFEST)? else {
        return Ok(Vec::new());
    };
    let Parsed::Manifest(m) =
        parse_manifest(&fetched.bytes, fetched.content_type.as_deref(), &tag)?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for l in m.layers.iter().filter(|l| l.media_type == SIGNATURE_LAYER) {
        if l.size > MAX_SIGNATURE_SIZE {
            continue;
        }
        let mut buf = Vec::new();
        registry.get_blob(l, &mut buf)?;
        out.push(Signature::from_bytes(&buf, &tag)?);
    }
    Ok(out)
}

/// Publishes `signature` to the registry of `reference` under the tag
/// `sha256-<hex>.sig`, as an OCI image whose single layer is the signature file.
pub fn push_signature(
    reference: &str,
    signature: &Signature,
    opts: &PullOptions,
) -> Result<String, Error> {
    let r = Reference::parse(reference)?;
    let registry = Registry::new(&r, opts.insecure_http, opts.auth.clone(), opts.timeout);
    let config =
        br#"{"architecture":"unknown","os":"unknown","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_desc = registry.put_blob(config, crate::manifest::OCI_CONFIG)?;
    let layer_desc = registry.put_blob(&signature.to_bytes(), SIGNATURE_LAYER)?;
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(crate::manifest::OCI_MANIFEST.to_string()),
        config: config_desc,
        layers: vec![layer_desc],
        annotations: None,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| Error::Manifest {
        what: reference.to_string(),
        problem: e.to_string(),
    })?;
    let tag = signature_tag(&signature.digest);
    registry.put_manifest(&tag, &bytes, crate::manifest::OCI_MANIFEST)?;
    Ok(sha256_digest(&bytes))
}

/// Store handle. Cheap; open one per command.
pub struct Store {
    root: PathBuf,
    /// Limits for unpacking layers.
    pub unpack: UnpackOptions,
}
