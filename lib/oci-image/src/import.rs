//! `import`: an OCI layout directory, an OCI archive (tar of a layout) or a
//! docker-archive (`docker save`).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::digest::{copy_verified, read_capped, sha256_digest};
use crate::manifest::{
    DOCKER_CONFIG, DOCKER_LAYER_TAR, DOCKER_MANIFEST, Descriptor, ImageIndex, ImageManifest,
    MAX_MANIFEST_SIZE, OCI_INDEX, Parsed, Platform, parse_manifest, select_platform,
};
use crate::reference::Reference;
use crate::store::{BlobSource, Image, Pending, Store};
use crate::trust::{Signature, TrustPolicy};
use crate::unpack::sanitize_path;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn import_err(path: &Path, problem: impl Into<String>) -> Error {
    Error::Import {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

impl Store {
    /// Imports an OCI layout directory, an OCI archive or a docker-archive tar.
    /// `name` (`repo:tag`) picks the image when the source holds several and names
    /// it; without it the name recorded in the source is used.
    pub fn import(
        &self,
        source: &Path,
        name: Option<&str>,
        signature: Option<&Path>,
        trust: &TrustPolicy,
    ) -> Result<Image, Error> {
        let wanted = name.map(Reference::parse).transpose()?;
        let signatures = match signature {
            Some(p) => vec![Signature::read(p)?],
            None => Vec::new(),
        };
        let meta = fs::metadata(source).map_err(Error::io(source))?;
        // Extracted archives live in staging and go when we return.
        let staging = self.staging()?;
        let dir = if meta.is_dir() {
            source.to_path_buf()
        } else {
            let dir = staging.dir.join("src");
            extract_archive(source, &dir)?;
            dir
        };
        let pending = if dir.join("oci-layout").is_file() || dir.join("index.json").is_file() {
            layout_pending(source, &dir, wanted.as_ref(), signatures)?
        } else if dir.join("manifest.json").is_file() {
            let blobs = staging.dir.join("docker-blobs");
            docker_pending(source, &dir, &blobs, wanted.as_ref(), signatures)?
        } else {
            return Err(import_err(
                source,
                "not an OCI layout (no oci-layout/index.json) nor a docker archive (no manifest.json)",
            ));
        };
        self.ingest(pending, trust)
    }
}

/// Extracts regular files and directories only (a layout or docker archive has
/// nothing else), with sanitised paths, into a fresh `dest`.
fn extract_archive(archive: &Path, dest: &Path) -> Result<(), Error> {
    let f = File::open(archive).map_err(Error::io(archive))?;
    fs::create_dir(dest).map_err(Error::io(dest))?;
    let mut ar = tar::Archive::new(io::BufReader::new(f));
    let err = |e: io::Error| import_err(archive, format!("not a valid tar archive: {e}"));
    let mut links = Vec::new();
    for entry in ar.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let raw = entry.path_bytes().into_owned();
        let comps = sanitize_path(&raw).map_err(|p| {
            import_err(
                archive,
                format!("entry {:?}: {p}", String::from_utf8_lossy(&raw)),
            )
        })?;
        if comps.is_empty() {
            continue;
        }
        let path = to_path(dest, &comps);
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&path).map_err(Error::io(&path))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(Error::io(parent))?;
                }
                // We create no symlinks, so nothing under dest can lead elsewhere.
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(Error::io(&path))?;
                io::copy(&mut entry, &mut out).map_err(Error::io(&path))?;
            }
            // Docker archives link a layer.tar to a file of the same archive:
            // copied once every file is out (the target may come later).
            tar::EntryType::Link | tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let base = if entry.header().entry_type() == tar::EntryType::Link {
                    &[][..]
                } else {
                    &comps[..comps.len() - 1]
                };
                let tcomps = lexical_join(base, &target).ok_or_else(|| {
                    import_err(
                        archive,
                        format!(
                            "link {:?} points outside the archive",
                            String::from_utf8_lossy(&raw)
                        ),
                    )
                })?;
                links.push((path, to_path(dest, &tcomps)));
            }
            _ => {}
        }
    }
    for (path, target) in links {
        // Only links to regular files we extracted; anything else is not ours to follow.
        let is_file = fs::symlink_metadata(&target).is_ok_and(|m| m.is_file());
        if is_file {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(Error::io(parent))?;
            }
            fs::copy(&target, &path).map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

/// `base/target` with `..` applied, None if it leaves the root or is absolute.
fn lexical_join(base: &[Vec<u8>], target: &[u8]) -> Option<Vec<Vec<u8>>> {
    if target.starts_with(b"/") {
        return None;
    }
    let mut out = base.to_vec();
    for c in target.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c.to_vec()),
        }
    }
    Some(out)
}

fn to_path(dest: &Path, comps: &[Vec<u8>]) -> std::path::PathBuf {
    let mut p = dest.to_path_buf();
    for c in comps {
        p.push(std::ffi::OsStr::from_bytes(c));
    }
    p
}

fn read_small(path: &Path) -> Result<Vec<u8>, Error> {
    let mut f = File::open(path).map_err(Error::io(path))?;
    read_capped(&mut f, MAX_MANIFEST_SIZE, &path.display().to_string())
}

fn read_blob(dir: &Path, desc: &Descriptor) -> Result<Vec<u8>, Error> {
    if desc.size > MAX_MANIFEST_SIZE {
        return Err(import_err(
            dir,
            format!("manifest {} is too big", desc.digest),
        ));
    }
    let path = dir
        .join("blobs/sha256")
        .join(desc.digest.trim_start_matches("sha256:"));
    let mut f = File::open(&path).map_err(Error::io(&path))?;
    let mut out = Vec::new();
    copy_verified(
        &mut f,
        &mut out,
        &desc.digest,
        desc.size,
        &path.display().to_string(),
    )?;
    Ok(out)
}

fn layout_pending<'a>(
    source: &Path,
    dir: &Path,
    wanted: Option<&Reference>,
    signatures: Vec<Signature>,
) -> Result<Pending<'a>, Error> {
    let index_bytes = read_small(&dir.join("index.json"))?;
    let index = match parse_manifest(&index_bytes, Some(OCI_INDEX), &source.display().to_string())?
    {
        Parsed::Index(i) => i,
        Parsed::Manifest(_) => return Err(import_err(source, "index.json is not an index")),
    };
    let ref_name =
        |d: &Descriptor, key: &str| d.annotations.as_ref().and_then(|a| a.get(key)).cloned();
    let matches_wanted = |d: &Descriptor, w: &Reference| {
        let tag = w.tag.as_deref().unwrap_or("latest");
        ref_name(d, REF_NAME)
            .is_some_and(|n| n == tag || Reference::parse(&n).is_ok_and(|r| r == *w))
            || ref_name(d, CONTAINERD_NAME)
                .is_some_and(|n| Reference::parse(&n).is_ok_and(|r| r == *w))
    };
    let chosen: Descriptor = match wanted
        .and_then(|w| index.manifests.iter().find(|d| matches_wanted(d, w)))
    {
        Some(d) => d.clone(),
        None if index.manifests.len() == 1 => index.manifests[0].clone(),
        None => {
            let names: Vec<String> = index
                .manifests
                .iter()
                .map(|d| ref_name(d, REF_NAME).unwrap_or_else(|| d.digest.clone()))
                .collect();
            return Err(import_err(
                source,
                format!(
                    "holds {} images ({}); choose one with a name whose tag matches its ref name",
                    index.manifests.len(),
                    names.join(", ")
                ),
            ));
        }
    };
    let name = match wanted {
        Some(w) => w.clone(),
        None => ref_name(&chosen, CONTAINERD_NAME)
            .or_else(|| ref_name(&chosen, REF_NAME).filter(|n| n.contains('/')))
            .and_then(|n| Reference::parse(&n).ok())
            .ok_or_else(|| {
                import_err(
                    source,
                    "the layout does not record a full image name; give one with --name (e.g. localhost/app:1)",
                )
            })?,
    };
    let what = name.to_string();
    let mut desc = chosen;
    let mut bytes = read_blob(dir, &desc)?;
    let mut manifest = None;
    // An index inside the layout: pick the host platform (one level deep).
    for _ in 0..2 {
        match parse_manifest(
            &bytes,
            Some(desc.media_type.as_str()).filter(|t| !t.is_empty()),
            &what,
        )? {
            Parsed::Manifest(m) => {
                manifest = Some(m);
                break;
            }
            Parsed::Index(i) => {
                let i: ImageIndex = i;
                desc = select_platform(&i, &Platform::host(), &what)?.clone();
                bytes = read_blob(dir, &desc)?;
            }
        }
    }
    let manifest =
        manifest.ok_or_else(|| import_err(source, "nested indexes are not supported"))?;
    Ok(Pending {
        source: BlobSource::Dir(dir.join("blobs/sha256")),
        store_name: Some(name.store_name()),
        trust_name: name.name(),
        manifest_digest: desc.digest,
        manifest_bytes: bytes,
        manifest,
        index_digest: None,
        signatures,
        platform: Platform::host(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_join_table() {
        let b = |s: &str| -> Vec<Vec<u8>> {
            s.split('/')
                .filter(|c| !c.is_empty())
                .map(|c| c.as_bytes().to_vec())
                .collect()
        };
        assert_eq!(lexical_join(&b("a"), b"../x.tar"), Some(b("x.tar")));
        assert_eq!(lexical_join(&b("a/b"), b"./c"), Some(b("a/b/c")));
        assert_eq!(lexical_join(&b("a"), b"../../x"), None);
        assert_eq!(lexical_join(&b(""), b"/etc/passwd"), None);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Copies `path` into `blobs/<hex>` and describes it.
fn stage_file(
    source: &Path,
    dir: &Path,
    rel: &str,
    blobs: &Path,
    media_type: &str,
) -> Result<Descriptor, Error> {
    let comps = sanitize_path(rel.as_bytes())
        .map_err(|p| import_err(source, format!("manifest.json names {rel:?}: {p}")))?;
    let path = to_path(dir, &comps);
    let mut f = File::open(&path).map_err(Error::io(&path))?;
    fs::create_dir_all(blobs).map_err(Error::io(blobs))?;
    let part = blobs.join("incoming.part");
    let mut out = File::create(&part).map_err(Error::io(&part))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(&path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(Error::io(&part))?;
        size += n as u64;
    }
    let hex = hex::encode(hasher.finalize());
    let dst = blobs.join(&hex);
    fs::rename(&part, &dst).map_err(Error::io(&dst))?;
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest: format!("sha256:{hex}"),
        size,
        platform: None,
        annotations: None,
    })
}

fn docker_pending<'a>(
    source: &Path,
    dir: &Path,
    blobs: &Path,
    wanted: Option<&Reference>,
    signatures: Vec<Signature>,
) -> Result<Pending<'a>, Error> {
    let bytes = read_small(&dir.join("manifest.json"))?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&bytes).map_err(|e| {
        import_err(
            source,
            format!("manifest.json is not a docker archive manifest: {e}"),
        )
    })?;
    let tags_of = |e: &DockerEntry| -> Vec<Reference> {
        e.repo_tags
            .iter()
            .flatten()
            .filter_map(|t| Reference::parse(t).ok())
            .collect()
    };
    let entry = match wanted.and_then(|w| entries.iter().find(|e| tags_of(e).contains(w))) {
        Some(e) => e,
        None if entries.len() == 1 => &entries[0],
        None => {
            return Err(import_err(
                source,
                format!(
                    "holds {} images; name the one to import by one of its tags",
                    entries.len()
                ),
            ));
        }
    };
    let name = match wanted {
        Some(w) => w.clone(),
        None => tags_of(entry).into_iter().next().ok_or_else(|| {
            import_err(source, "the archive names no image; give one with --name")
        })?,
    };
    let config = stage_file(source, dir, &entry.config, blobs, DOCKER_CONFIG)?;
    let mut layers = Vec::new();
    for l in &entry.layers {
        layers.push(stage_file(source, dir, l, blobs, DOCKER_LAYER_TAR)?);
    }
    // docker save has no manifest: we make the schema2 manifest it stands for;
    // its digest is what names and signatures refer to.
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(DOCKER_MANIFEST.to_string()),
        config,
        layers,
        annotations: None,
    };
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| import_err(source, e.to_string()))?;
    Ok(Pending {
        source: BlobSource::Dir(blobs.to_path_buf()),
        store_name: Some(name.store_name()),
        trust_name: name.name(),
        manifest_digest: sha256_digest(&manifest_bytes),
        manifest_bytes,
        manifest,
        index_digest: None,
        signatures,
        platform: Platform::host(),
    })
}
