//! Board configs: one TOML per board, optionally `extends` another. Each file is
//! checked on its own first (so an unknown key or a bad type names its file),
//! then the chain is merged and checked as a whole.
//!
//! # `[config]`: where hosts take their host config from
//! - `sources = ["ec2", "oem"]`: the config sources cairn-config tries, in
//!   order (the names of `host_config::source::Kind`; checked by its own
//!   parser). Written to `/usr/lib/cairn/config-sources`; left out, every
//!   source is tried in the default order and no file is written.
//! - `require_signature = true` with `keys = ["keys/config.public", …]`:
//!   hosts apply only configs signed by one of these keys (made with
//!   `cairn-build keygen`, signed with `cairn-build sign-config`). The keys
//!   are public key files, a relative path taken from the board file that
//!   names it (as `[apps] preload`); they are written to
//!   `/usr/lib/cairn/config-keys`. `require_signature = true` without keys,
//!   and keys without `require_signature = true`, are errors: the key file
//!   alone is what makes hosts require a signature, so the board says both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use disk_layout::Arch;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error(
        "unknown board `{name}`: no {path} (boards: {known}); pass a board name or a path to a .toml"
    )]
    Unknown {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error("cannot read board config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: `extends` forms a cycle through {chain}")]
    Cycle { path: PathBuf, chain: String },
}

/// A fully resolved board: every field present and checked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub board: BoardSection,
    pub debian: Debian,
    pub kernel: Kernel,
    pub initramfs: Initramfs,
    pub disk: Disk,
    pub outputs: Outputs,
    /// Left out of the serialized board when empty, so boards without
    /// preloads keep the seed (and so the image bytes) they had.
    #[serde(default, skip_serializing_if = "Apps::is_empty")]
    pub apps: Apps,
    /// Left out when empty, for the same reason as `apps`.
    #[serde(default, skip_serializing_if = "ConfigSection::is_empty")]
    pub config: ConfigSection,
}

/// Where hosts of this board take their host config from (see the module
/// docs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigSection {
    /// Source names in order; `None`: the default order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signature: bool,
    /// Public key files. After [`load`] the paths are absolute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

impl ConfigSection {
    pub fn is_empty(&self) -> bool {
        self == &ConfigSection::default()
    }

    /// The text of `/usr/lib/cairn/config-sources`, when the board lists sources.
    pub fn sources_file(&self) -> Option<String> {
        self.sources
            .as_ref()
            .map(|s| s.iter().map(|n| format!("{n}\n")).collect())
    }

    /// The text of `/usr/lib/cairn/config-keys` (one public key line each),
    /// when the board requires signed configs.
    pub fn keys_file(&self) -> Result<Option<String>, String> {
        if !self.require_signature {
            return Ok(None);
        }
        let mut text = String::new();
        for (i, k) in self.keys.iter().enumerate() {
            let key = release_manifest::PublicKey::load_public(k)
                .map_err(|e| format!("config.keys[{i}] {k}: {e}"))?;
            let line = key.to_line();
            if !text.contains(&line) {
                text += &line;
            }
        }
        Ok(Some(text))
    }

    /// Checks the section as a whole (after the merge).
    fn validate(&self) -> Result<(), String> {
        if let Some(sources) = &self.sources {
            if let Some(bad) = sources
                .iter()
                .find(|n| n.trim() != n.as_str() || n.is_empty() || n.contains(['\n', '#']))
            {
                return Err(format!("config.sources: {bad:?} is not a source name"));
            }
            host_config::source::parse_order(&sources.join("\n"))
                .map_err(|e| format!("config.sources: {e}"))?;
        }
        match (self.require_signature, self.keys.is_empty()) {
            (true, true) => Err(
                "config.require_signature = true but config.keys is empty: list the public key files that sign host configs (e.g. keys = [\"keys/config.public\"], made by `cairn-build keygen`)".into(),
            ),
            (false, false) => Err(
                "config.keys is set but config.require_signature is not true: set require_signature = true (the keys make hosts require a signature) or remove the keys".into(),
            ),
            _ => self.keys_file().map(|_| ()),
        }
    }
}

/// App images built into /usr (the base image ships none).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Apps {
    /// `<OCI layout dir>:<image reference>`. After [`load`] the directory is
    /// absolute: a relative one is taken from the board file that names it.
    #[serde(default)]
    pub preload: Vec<String>,
}

impl Apps {
    pub fn is_empty(&self) -> bool {
        self.preload.is_empty()
    }
}

/// One image to preload: an OCI image layout and the name it is imported
/// under on the host (the `image` of an app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preload {
    pub layout: PathBuf,
    pub image: String,
}

/// Where preloaded layouts go in the image, and their directory names (where
/// cairn-config's `ensure-image` looks them up): disk-layout owns the rule.
pub use disk_layout::board_files::{PRELOAD_DIR, preload_name};

/// Parses `<dir>:<image>` (split at the first `:`; a relative dir is taken
/// from `base`) and checks the layout. Errors are one line.
pub fn parse_preload(spec: &str, base: &Path) -> Result<Preload, String> {
    let Some((dir, image)) = spec.split_once(':') else {
        return Err(format!("{spec:?} is not <OCI layout dir>:<image name:tag>"));
    };
    if dir.is_empty() {
        return Err(format!("{spec:?}: the OCI layout directory is empty"));
    }
    check_image_name(image).map_err(|m| format!("{spec:?}: {m}"))?;
    let layout = base.join(dir);
    for f in ["oci-layout", "index.json"] {
        if !layout.join(f).is_file() {
            return Err(format!(
                "{spec:?}: {} is not an OCI image layout (no {f}); make one with `skopeo copy docker://<image> oci:<dir>` or `cairn-run`'s registry",
                layout.display()
            ));
        }
    }
    Ok(Preload {
        layout,
        image: image.to_string(),
    })
}

/// A reference the host's store accepts as a path under [`PRELOAD_DIR`]:
/// `[registry[:port]/]path[:tag|@sha256:hex]`, no empty, `.` or `..` parts.
fn check_image_name(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
        && !image
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{image:?} is not an image reference like \"registry:5000/app:1\""
        ))
    }
}

impl Board {
    /// The preloads (checked by [`load`]).
    pub fn preloads(&self) -> Result<Vec<Preload>, String> {
        self.apps
            .preload
            .iter()
            .enumerate()
            .map(|(i, s)| {
                parse_preload(s, Path::new("/")).map_err(|m| format!("apps.preload[{i}] {m}"))
            })
            .collect()
    }

    /// Adds preloads given on the command line (`--preload-image DIR:IMAGE`,
    /// a relative DIR taken from the current directory).
    pub fn add_preloads(&mut self, specs: &[String]) -> Result<(), String> {
        let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
        for s in specs {
            let p = parse_preload(s, &cwd).map_err(|m| format!("--preload-image {m}"))?;
            self.apps.preload.push(preload_spec(&p)?);
        }
        self.check_preloads()
    }

    fn check_preloads(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for (i, p) in self.preloads()?.iter().enumerate() {
            if !seen.insert(p.image.clone()) {
                return Err(format!(
                    "apps.preload[{i}]: image {:?} is preloaded twice",
                    p.image
                ));
            }
        }
        Ok(())
    }
}

fn preload_spec(p: &Preload) -> Result<String, String> {
    let dir = p
        .layout
        .to_str()
        .filter(|d| !d.contains(':'))
        .ok_or_else(|| {
            format!(
                "{}: the layout directory name must be UTF-8 without ':'",
                p.layout.display()
            )
        })?;
    Ok(format!("{dir}:{}", p.image))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoardSection {
    /// Defaults to the file name of the leaf config.
    #[serde(default)]
    pub name: String,
    pub arch: String,
    pub firmware: String,
    #[serde(default)]
    pub description: String,
    /// The serial console device (`ttyS0`, `ttyAMA0`).
    pub console: String,
    /// K: boots in a row a committed slot may die before its health gate
    /// before the boot manager falls back to the other slot (1-15).
    #[serde(default = "default_boot_tries")]
    pub boot_tries: u8,
}

fn default_boot_tries() -> u8 {
    gpt_slots::DEFAULT_COMMITTED_TRIES
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Debian {
    pub suite: String,
    pub mirror: String,
    pub kernel: String,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    pub modules: Vec<String>,
    #[serde(default)]
    pub cmdline: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Initramfs {
    pub modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub sector_size: u32,
    pub esp_mib: u64,
    pub usr_mib: u64,
    pub oem_mib: u64,
    pub root_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    pub formats: Vec<String>,
}

/// The same shape with everything optional and `<key>_add` lists allowed: what
/// a single file in an `extends` chain may contain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // parsed only to reject unknown keys and wrong types per file
struct PartialFile {
    extends: Option<String>,
    board: Option<PartialBoard>,
    debian: Option<PartialDebian>,
    kernel: Option<PartialKernel>,
    initramfs: Option<PartialInitramfs>,
    disk: Option<PartialDisk>,
    outputs: Option<PartialOutputs>,
    apps: Option<PartialApps>,
    config: Option<PartialConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialConfig {
    sources: Option<Vec<String>>,
    require_signature: Option<bool>,
    keys: Option<Vec<String>>,
    keys_add: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialApps {
    preload: Option<Vec<String>>,
    preload_add: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialBoard {
    name: Option<String>,
    arch: Option<String>,
    firmware: Option<String>,
    description: Option<String>,
    console: Option<String>,
    boot_tries: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialDebian {
    suite: Option<String>,
    mirror: Option<String>,
    kernel: Option<String>,
    packages: Option<Vec<String>>,
    packages_add: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialKernel {
    modules: Option<Vec<String>>,
    modules_add: Option<Vec<String>>,
    cmdline: Option<Vec<String>>,
    cmdline_add: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialInitramfs {
    modules: Option<Vec<String>>,
    modules_add: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialDisk {
    sector_size: Option<u32>,
    esp_mib: Option<u64>,
    usr_mib: Option<u64>,
    oem_mib: Option<u64>,
    root_mib: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct PartialOutputs {
    formats: Option<Vec<String>>,
    formats_add: Option<Vec<String>>,
}

/// Where named boards live: `$CAIRN_BOARDS`, else `board-configs/` of this source tree.
pub fn boards_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CAIRN_BOARDS") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs")
}

/// Resolves `name_or_path` (a board name, or a path to a .toml) to a file.
pub fn locate(name_or_path: &str, dir: &Path) -> Result<PathBuf, BoardError> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        return Ok(as_path.to_path_buf());
    }
    let path = dir.join(format!("{name_or_path}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    Err(BoardError::Unknown {
        name: name_or_path.to_string(),
        path,
        known: list(dir).join(", "),
    })
}

/// Board names in `dir` (files that set an arch somewhere in their chain).
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let stem = p.file_stem()?.to_str()?.to_string();
            (p.extension()? == "toml" && load(&p).is_ok()).then_some(stem)
        })
        .collect();
    names.sort();
    names
}

/// Loads a board config and its `extends` chain, merges and validates it.
pub fn load(path: &Path) -> Result<Board, BoardError> {
    let mut chain: Vec<(PathBuf, Table)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next = Some(path.to_path_buf());
    while let Some(p) = next.take() {
        let canonical = p.canonicalize().map_err(|source| BoardError::Read {
            path: p.clone(),
            source,
        })?;
        if !seen.insert(canonical.clone()) {
            let names: Vec<String> = chain.iter().map(|(p, _)| p.display().to_string()).collect();
            return Err(BoardError::Cycle {
                path: path.to_path_buf(),
                chain: names.join(" -> "),
            });
        }
        let text = std::fs::read_to_string(&p).map_err(|source| BoardError::Read {
            path: p.clone(),
            source,
        })?;
        let mut table = parse_file(&p, &text)?;
        resolve_preloads(&p, &mut table)?;
        resolve_config_keys(&p, &mut table)?;
        if let Some(parent) = table.get("extends").and_then(Value::as_str) {
            let dir = p.parent().unwrap_or(Path::new("."));
            next = Some(if parent.ends_with(".toml") {
                dir.join(parent)
            } else {
                dir.join(format!("{parent}.toml"))
            });
        }
        chain.push((p, table));
    }
    let mut merged = Table::new();
    for (_, table) in chain.iter().rev() {
        merge(&mut merged, table.clone());
    }
    merged.remove("extends");
    let invalid = |message: String| BoardError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let mut board: Board = Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| {
            invalid(format!("incomplete board after `extends`: {}", e.message()))
        })?;
    if board.board.name.is_empty() {
        board.board.name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("board")
            .to_string();
    }
    board.validate().map_err(invalid)?;
    Ok(board)
}

/// Makes the preload directories of one file absolute (relative to that
/// file), before the merge forgets which file named them, and checks them.
fn resolve_preloads(path: &Path, table: &mut Table) -> Result<(), BoardError> {
    let Some(Value::Table(apps)) = table.get_mut("apps") else {
        return Ok(());
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = base.canonicalize().unwrap_or(base);
    for key in ["preload", "preload_add"] {
        let Some(Value::Array(list)) = apps.get_mut(key) else {
            continue;
        };
        for (i, v) in list.iter_mut().enumerate() {
            let invalid = |message: String| BoardError::Invalid {
                path: path.to_path_buf(),
                message: format!("apps.{key}[{i}] {message}"),
            };
            let Value::String(s) = v else {
                return Err(invalid("must be a string".into()));
            };
            let p = parse_preload(s, &base).map_err(invalid)?;
            *s = preload_spec(&p).map_err(invalid)?;
        }
    }
    Ok(())
}

/// Makes the `[config] keys` of one file absolute (relative to that file),
/// before the merge forgets which file named them.
fn resolve_config_keys(path: &Path, table: &mut Table) -> Result<(), BoardError> {
    let Some(Value::Table(config)) = table.get_mut("config") else {
        return Ok(());
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = base.canonicalize().unwrap_or(base);
    for key in ["keys", "keys_add"] {
        let Some(Value::Array(list)) = config.get_mut(key) else {
            continue;
        };
        for (i, v) in list.iter_mut().enumerate() {
            let Value::String(s) = v else {
                return Err(BoardError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("config.{key}[{i}] must be a string"),
                });
            };
            let abs = base.join(s.as_str());
            *s = abs.to_string_lossy().into_owned();
        }
    }
    Ok(())
}

fn parse_file(path: &Path, text: &str) -> Result<Table, BoardError> {
    let invalid = |message: String| BoardError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    toml::from_str::<PartialFile>(text).map_err(|e| invalid(one_line(&e, text)))?;
    toml::from_str::<Table>(text).map_err(|e| invalid(one_line(&e, text)))
}

/// toml's messages span several lines with a source excerpt; keep the
/// message plus the offending line, so the error is one line that shows the key.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else {
        return e.message().to_string();
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no}: {} (`{line}`)", e.message())
}

/// Child values replace parent values; tables merge recursively; `<key>_add`
/// lists append to `<key>`.
fn merge(base: &mut Table, child: Table) {
    for (key, value) in child {
        if let (Some(target), Value::Array(extra)) = (key.strip_suffix("_add"), &value) {
            match base.get_mut(target) {
                Some(Value::Array(list)) => list.extend(extra.iter().cloned()),
                _ => {
                    base.insert(target.to_string(), value.clone());
                }
            }
            continue;
        }
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(c)) => merge(b, c),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

impl Board {
    pub fn arch(&self) -> Arch {
        // validate() has checked the name.
        Arch::from_name(&self.board.arch).unwrap_or(Arch::X86_64)
    }

    fn validate(&mut self) -> Result<(), String> {
        if Arch::from_name(&self.board.arch).is_none() {
            return Err(format!(
                "board.arch = {:?}: use \"x86_64\" or \"arm64\"",
                self.board.arch
            ));
        }
        self.board.arch = self.arch().name().to_string();
        if self.board.firmware != "uefi" {
            return Err(format!(
                "board.firmware = {:?}: only \"uefi\" is supported",
                self.board.firmware
            ));
        }
        if !(1..=gpt_slots::FIELD_MAX).contains(&self.board.boot_tries) {
            return Err(format!(
                "board.boot_tries = {}: use 1 to {}",
                self.board.boot_tries,
                gpt_slots::FIELD_MAX
            ));
        }
        if !is_word(&self.board.console) {
            return Err(format!(
                "board.console = {:?}: give a device name like ttyS0",
                self.board.console
            ));
        }
        if !is_word(&self.debian.suite) {
            return Err(format!(
                "debian.suite = {:?}: give a Debian suite like bookworm",
                self.debian.suite
            ));
        }
        if !(self.debian.mirror.starts_with("http://")
            || self.debian.mirror.starts_with("https://"))
        {
            return Err(format!(
                "debian.mirror = {:?}: give an http(s) URL",
                self.debian.mirror
            ));
        }
        for p in std::iter::once(&self.debian.kernel).chain(&self.debian.packages) {
            if !is_package(p) {
                return Err(format!(
                    "debian package {p:?} is not a valid Debian package name"
                ));
            }
        }
        for (key, list) in [
            ("kernel.modules", &mut self.kernel.modules),
            ("initramfs.modules", &mut self.initramfs.modules),
        ] {
            if let Some(m) = list.iter().find(|m| !is_word(m)) {
                return Err(format!("{key}: {m:?} is not a kernel module name"));
            }
            dedup(list);
        }
        dedup(&mut self.debian.packages);
        if let Some(arg) = self
            .kernel
            .cmdline
            .iter()
            .find(|a| a.is_empty() || a.contains(char::is_whitespace))
        {
            return Err(format!(
                "kernel.cmdline: {arg:?} must be one argument without spaces"
            ));
        }
        let d = &self.disk;
        if d.sector_size != 512 && d.sector_size != 4096 {
            return Err(format!(
                "disk.sector_size = {}: use 512 or 4096",
                d.sector_size
            ));
        }
        for (key, value, min) in [
            ("disk.esp_mib", d.esp_mib, 64),
            ("disk.usr_mib", d.usr_mib, 256),
            ("disk.oem_mib", d.oem_mib, 16),
            ("disk.root_mib", d.root_mib, 128),
        ] {
            if !(min..=1 << 20).contains(&value) {
                return Err(format!(
                    "{key} = {value}: must be between {min} and 1048576"
                ));
            }
        }
        self.check_preloads()?;
        self.config.validate()?;
        if self.outputs.formats.is_empty() {
            return Err("outputs.formats is empty: list \"raw\" and/or \"qcow2\"".into());
        }
        if let Some(f) = self
            .outputs
            .formats
            .iter()
            .find(|f| !["raw", "qcow2"].contains(&f.as_str()))
        {
            return Err(format!(
                "outputs.formats: {f:?} is not one of \"raw\", \"qcow2\""
            ));
        }
        Ok(())
    }
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    list.retain(|x| seen.insert(x.clone()));
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn is_package(s: &str) -> bool {
    s.len() >= 2
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Board {
        load(&boards_dir().join(format!("{name}.toml"))).unwrap()
    }

    #[test]
    fn shipped_boards_load() {
        for name in [
            "qemu-x86_64",
            "qemu-arm64",
            "generic-x86_64",
            "generic-arm64",
        ] {
            let b = shipped(name);
            assert_eq!(b.board.name, name);
            assert!(
                b.initramfs.modules.contains(&"dm_verity".to_string()),
                "{name}"
            );
        }
        assert_eq!(shipped("qemu-arm64").arch(), Arch::Arm64);
        let generic = shipped("generic-x86_64");
        assert!(generic.kernel.modules.contains(&"nvme".to_string()));
        assert!(
            generic.kernel.modules.contains(&"virtio_blk".to_string()),
            "inherited through two levels"
        );
        assert!(
            generic
                .debian
                .packages
                .contains(&"firmware-linux-free".to_string())
        );
        assert_eq!(
            list(&boards_dir()),
            [
                "generic-arm64",
                "generic-x86_64",
                "qemu-arm64",
                "qemu-x86_64"
            ]
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn error_of(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(boards_dir().join("base.toml"), dir.path().join("base.toml")).unwrap();
        std::fs::copy(
            boards_dir().join("qemu-x86_64.toml"),
            dir.path().join("qemu-x86_64.toml"),
        )
        .unwrap();
        let p = write(dir.path(), "custom.toml", text);
        load(&p).unwrap_err().to_string()
    }

    #[test]
    fn a_variant_extends_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["base.toml", "qemu-x86_64.toml"] {
            std::fs::copy(boards_dir().join(f), dir.path().join(f)).unwrap();
        }
        let p = write(
            dir.path(),
            "big.toml",
            "extends = \"qemu-x86_64\"\n[disk]\nusr_mib = 4096\n[debian]\npackages_add = [\"htop\"]\n",
        );
        let b = load(&p).unwrap();
        assert_eq!(
            (b.board.name.as_str(), b.disk.usr_mib, b.disk.esp_mib),
            ("big", 4096, 256)
        );
        assert_eq!(b.debian.packages.last().map(String::as_str), Some("htop"));
    }

    #[test]
    fn bad_input_names_the_key_and_the_file() {
        let cases = [
            ("extends = \"qemu-x86_64\"\n[disk]\nusr_mb = 1\n", "usr_mb"),
            ("extends = \"qemu-x86_64\"\ncolour = 1\n", "colour"),
            (
                "extends = \"qemu-x86_64\"\n[disk]\nusr_mib = \"big\"\n",
                "usr_mib",
            ),
            (
                "extends = \"qemu-x86_64\"\n[disk]\nusr_mib = 10\n",
                "disk.usr_mib = 10",
            ),
            (
                "extends = \"qemu-x86_64\"\n[board]\narch = \"riscv\"\n",
                "board.arch",
            ),
            (
                "extends = \"qemu-x86_64\"\n[disk]\nsector_size = 1024\n",
                "disk.sector_size",
            ),
            (
                "extends = \"qemu-x86_64\"\n[outputs]\nformats = [\"vmdk\"]\n",
                "vmdk",
            ),
            (
                "extends = \"qemu-x86_64\"\n[debian]\npackages_add = [\"Bad Name\"]\n",
                "Bad Name",
            ),
            ("extends = \"base\"\n", "incomplete board"),
            ("extends = \"nope\"\n", "nope.toml"),
        ];
        for (text, needle) in cases {
            let e = error_of(text);
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
            assert!(e.contains(".toml"), "{e:?} should name the file");
            assert!(!e.contains('\n'), "{e:?} should be one line");
        }
    }

    fn layout(dir: &Path) {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
        std::fs::write(
            dir.join("index.json"),
            "{\"schemaVersion\":2,\"manifests\":[]}",
        )
        .unwrap();
    }

    fn variant(dir: &Path, text: &str) -> PathBuf {
        for f in ["base.toml", "qemu-x86_64.toml"] {
            std::fs::copy(boards_dir().join(f), dir.join(f)).unwrap();
        }
        write(
            dir,
            "apps.toml",
            &format!("extends = \"qemu-x86_64\"\n{text}"),
        )
    }

    #[test]
    fn a_board_with_preloads_parses() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        layout(&d.join("web-oci"));
        layout(&d.join("abs"));
        let p = variant(
            &d,
            &format!(
                "[apps]\npreload = [\"web-oci:10.0.2.2:5000/test/web:1\", \"{}:alpine:3\"]\n",
                d.join("abs").display()
            ),
        );
        let b = load(&p).unwrap();
        assert_eq!(
            b.preloads().unwrap(),
            [
                Preload {
                    layout: d.join("web-oci"),
                    image: "10.0.2.2:5000/test/web:1".into()
                },
                Preload {
                    layout: d.join("abs"),
                    image: "alpine:3".into()
                },
            ]
        );
        // Boards without preloads serialize as before (the build seed).
        let plain = shipped("qemu-x86_64");
        assert!(plain.apps.is_empty());
        assert!(!serde_json::to_string(&plain).unwrap().contains("apps"));
        // The build flag adds to them.
        let mut b = b;
        layout(&d.join("more"));
        b.add_preloads(&[format!("{}:db:2", d.join("more").display())])
            .unwrap();
        assert_eq!(b.preloads().unwrap().len(), 3);
        let e = b
            .add_preloads(&[format!("{}:db:2", d.join("more").display())])
            .unwrap_err();
        assert!(e.contains("preloaded twice"), "{e}");
        let e = b.add_preloads(&["/nonexistent:db:3".into()]).unwrap_err();
        assert!(
            e.starts_with("--preload-image") && e.contains("/nonexistent"),
            "{e}"
        );
    }

    #[test]
    fn bad_preloads_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        layout(&dir.path().join("ok"));
        let cases = [
            (
                "[apps]\npreload = [\"missing:web:1\"]\n",
                "apps.preload[0]",
                "not an OCI image layout",
            ),
            (
                "[apps]\npreload = [\"ok\"]\n",
                "apps.preload[0]",
                "<OCI layout dir>:<image",
            ),
            (
                "[apps]\npreload = [\":web:1\"]\n",
                "apps.preload[0]",
                "directory is empty",
            ),
            (
                "[apps]\npreload = [\"ok:bad name\"]\n",
                "apps.preload[0]",
                "not an image reference",
            ),
            (
                "[apps]\npreload = [\"ok:../x\"]\n",
                "apps.preload[0]",
                "not an image reference",
            ),
            (
                "[apps]\npreload_add = [\"ok:a:1\", \"nope:b:1\"]\n",
                "apps.preload_add[1]",
                "nope",
            ),
            (
                "[apps]\npreload = [\"ok:a:1\", \"ok:a:1\"]\n",
                "apps.preload[1]",
                "preloaded twice",
            ),
            (
                "[apps]\npreload = \"ok:a:1\"\n",
                "preload",
                "expected a sequence",
            ),
            ("[apps]\nimages = []\n", "images", "unknown field"),
        ];
        for (text, key, needle) in cases {
            let p = variant(dir.path(), text);
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("apps.toml"), "{e:?} should name the file");
            assert!(!e.contains('\n'), "{e:?} should be one line");
        }
    }

    fn config_board(dir: &Path, text: &str) -> PathBuf {
        for f in ["base.toml", "qemu-x86_64.toml"] {
            std::fs::copy(boards_dir().join(f), dir.join(f)).unwrap();
        }
        write(
            dir,
            "signed.toml",
            &format!("extends = \"qemu-x86_64\"\n{text}"),
        )
    }

    #[test]
    fn config_section_parses_and_renders_the_board_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::create_dir(d.join("keys")).unwrap();
        let key = release_manifest::KeyPair::from_seed([5; 32]);
        let (_, public) = key.write(d.join("keys"), "config").unwrap();
        let p = config_board(
            &d,
            "[config]\nsources = [\"ec2\", \"oem\"]\nrequire_signature = true\nkeys = [\"keys/config.public\"]\n",
        );
        let b = load(&p).unwrap();
        assert_eq!(b.config.keys, [public.to_string_lossy().into_owned()]);
        assert_eq!(b.config.sources_file().as_deref(), Some("ec2\noem\n"));
        assert_eq!(
            b.config.keys_file().unwrap(),
            Some(key.public().to_line()),
            "one cairn-ed25519-public line, as host_config::source::signature::parse_keys reads"
        );
        let parsed =
            host_config::source::signature::parse_keys(&b.config.keys_file().unwrap().unwrap());
        assert_eq!(parsed, Ok(vec![key.public()]));
        // An empty list: only the defaults, and the file says so.
        let p = config_board(&d, "[config]\nsources = []\n");
        assert_eq!(load(&p).unwrap().config.sources_file().as_deref(), Some(""));
        // Without the section nothing is written and the seed is unchanged.
        let plain = shipped("qemu-x86_64");
        assert!(plain.config.is_empty());
        assert_eq!(plain.config.sources_file(), None);
        assert_eq!(plain.config.keys_file(), Ok(None));
        assert!(!serde_json::to_string(&plain).unwrap().contains("config"));
    }

    #[test]
    fn bad_config_sections_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = release_manifest::KeyPair::from_seed([6; 32]);
        key.write(d, "k").unwrap();
        let cases = [
            (
                "[config]\nsources = [\"ec3\"]\n",
                "config.sources",
                "unknown source \"ec3\"",
            ),
            (
                "[config]\nsources = [\"oem\", \"oem\"]\n",
                "config.sources",
                "listed twice",
            ),
            (
                "[config]\nsources = [\"oem\\nec2\"]\n",
                "config.sources",
                "not a source name",
            ),
            (
                "[config]\nrequire_signature = true\n",
                "config.require_signature",
                "config.keys is empty",
            ),
            (
                "[config]\nkeys = [\"k.public\"]\n",
                "config.keys",
                "require_signature is not true",
            ),
            (
                "[config]\nrequire_signature = true\nkeys = [\"missing.public\"]\n",
                "config.keys[0]",
                "missing.public",
            ),
            (
                "[config]\nrequire_signature = true\nkeys = [\"k.secret\"]\n",
                "config.keys[0]",
                "SECRET",
            ),
            (
                "[config]\nrequire_signature = \"yes\"\n",
                "require_signature",
                "invalid type",
            ),
            ("[config]\nsource = []\n", "source", "unknown field"),
        ];
        for (text, key, needle) in cases {
            let p = config_board(d, text);
            let e = load(&p).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("signed.toml"), "{e:?} should name the file");
            assert!(!e.contains('\n'), "{e:?} should be one line");
        }
    }

    #[test]
    fn cycles_and_unknown_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "extends = \"b\"\n");
        let p = write(dir.path(), "b.toml", "extends = \"a\"\n");
        assert!(load(&p).unwrap_err().to_string().contains("cycle"));
        let e = locate("nosuch", &boards_dir()).unwrap_err().to_string();
        assert!(e.contains("qemu-x86_64") && e.contains("nosuch"), "{e}");
    }
}
