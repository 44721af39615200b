//! Kernel module closure from `modules.dep`, the way `modprobe --show-depends`
//! would resolve it, but without running kmod (the build host's kmod may not
//! match, and the tree may belong to another architecture).
//!
//! Only hard dependencies (`modules.dep`) are followed. Soft dependencies
//! (`modules.softdep`, e.g. `ext4 pre: crypto-crc32c`) name aliases with more
//! than one provider, so the board config must list the provider it wants
//! (e.g. `crc32c_generic`) explicitly and before its users: without modprobe
//! in the initramfs the kernel cannot load it on demand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Errors while reading a modules tree or resolving names in it.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {name:?} is not in modules.dep or modules.builtin of kernel {kver}")]
    Unknown { name: String, kver: String },
    #[error("{file} line {line}: {reason}")]
    Malformed {
        file: &'static str,
        line: usize,
        reason: String,
    },
    #[error("dependency cycle through module {0:?}")]
    Cycle(String),
    #[error("modules directory {0} has no usable kernel version name")]
    BadDir(PathBuf),
}

/// How a module file is compressed, from its file name. cairn-init passes
/// `MODULE_INIT_COMPRESSED_FILE` to `finit_module` for anything but `None`,
/// which needs `CONFIG_MODULE_DECOMPRESS` in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// Splits `foo.ko[.xz|.zst|.gz]` into the module file stem and compression.
    fn of_file_name(file: &str) -> Option<(&str, Compression)> {
        [
            (".ko", Compression::None),
            (".ko.xz", Compression::Xz),
            (".ko.zst", Compression::Zstd),
            (".ko.gz", Compression::Gzip),
        ]
        .into_iter()
        .find_map(|(ext, c)| file.strip_suffix(ext).map(|stem| (stem, c)))
    }
}

/// One loadable module of a closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModule {
    /// Canonical name (dashes turned into underscores), e.g. `dm_mod`.
    pub name: String,
    /// Path relative to the modules directory, as in modules.dep.
    pub path: String,
    pub compression: Compression,
}

/// The modules to ship, in load order (every module after its dependencies).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleClosure {
    pub kver: String,
    pub load_order: Vec<KernelModule>,
    /// Requested names that are built into the kernel: nothing to ship.
    pub builtin: Vec<String>,
}

/// `modules.dep` and `modules.builtin` of one kernel.
#[derive(Clone, Debug)]
pub struct ModuleIndex {
    kver: String,
    /// Relative path -> its dependencies (relative paths, as listed).
    deps: BTreeMap<String, Vec<String>>,
    /// Canonical name -> relative path.
    by_name: HashMap<String, String>,
    builtin: BTreeSet<String>,
}

/// Module names are equal up to `-`/`_` (kmod's rule).
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

fn name_of_path(path: &str) -> Option<(String, Compression)> {
    let file = path.rsplit('/').next()?;
    let (stem, c) = Compression::of_file_name(file)?;
    Some((canonical_name(stem), c))
}

impl ModuleIndex {
    /// Reads `<dir>/modules.dep` and (if present) `<dir>/modules.builtin`;
    /// the kernel version is the directory's name.
    pub fn load(dir: &Path) -> Result<ModuleIndex, ModulesError> {
        let kver = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ModulesError::BadDir(dir.to_path_buf()))?
            .to_string();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModulesError::Io { path, source })
        };
        let dep = read("modules.dep")?;
        // Kernels built without any built-in modules may lack the file.
        let builtin = match read("modules.builtin") {
            Ok(s) => s,
            Err(ModulesError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                String::new()
            }
            Err(e) => return Err(e),
        };
        ModuleIndex::parse(&kver, &dep, &builtin)
    }

    /// Parses the text of `modules.dep` (`path: dep dep…`) and
    /// `modules.builtin` (one path per line).
    pub fn parse(kver: &str, dep: &str, builtin: &str) -> Result<ModuleIndex, ModulesError> {
        let mut deps = BTreeMap::new();
        let mut by_name = HashMap::new();
        for (i, line) in dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |reason: String| ModulesError::Malformed {
                file: "modules.dep",
                line: i + 1,
                reason,
            };
            let (path, rest) = line
                .split_once(':')
                .ok_or_else(|| malformed("no ':'".into()))?;
            let (name, _) = name_of_path(path)
                .ok_or_else(|| malformed(format!("{path:?} is not a .ko[.xz|.zst|.gz] file")))?;
            let list: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
            if deps.insert(path.to_string(), list).is_some() {
                return Err(malformed(format!("{path:?} listed twice")));
            }
            by_name.insert(name, path.to_string());
        }
        // Every dependency must itself be listed: a tree where it is not was
        // not made by depmod, and the module would fail to load at boot.
        for (path, list) in &deps {
            if let Some(missing) = list.iter().find(|d| !deps.contains_key(*d)) {
                return Err(ModulesError::Malformed {
                    file: "modules.dep",
                    line: 0,
                    reason: format!("{path:?} depends on unlisted {missing:?}"),
                });
            }
        }
        let builtin = builtin
            .lines()
            .filter_map(|l| name_of_path(l.trim()).map(|(n, _)| n))
            .collect();
        Ok(ModuleIndex {
            kver: kver.to_string(),
            deps,
            by_name,
            builtin,
        })
    }

    pub fn kver(&self) -> &str {
        &self.kver
    }

    /// Resolves `names` to a load order: for each name in the given order,
    /// its dependencies (depth first) then itself; each module once.
    /// Built-in names are reported, not shipped.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<ModuleClosure, ModulesError> {
        let mut done: HashMap<&str, bool> = HashMap::new(); // path -> finished?
        let mut order = Vec::new();
        let mut builtin = Vec::new();
        for name in names {
            let name = canonical_name(name.as_ref());
            match self.by_name.get(&name) {
                Some(path) => self.visit(path, &mut done, &mut order)?,
                None if self.builtin.contains(&name) => {
                    if !builtin.contains(&name) {
                        builtin.push(name);
                    }
                }
                None => {
                    return Err(ModulesError::Unknown {
                        name,
                        kver: self.kver.clone(),
                    });
                }
            }
        }
        let load_order = order
            .into_iter()
            .map(|path: &str| {
                // Every key of `deps` was accepted by name_of_path in parse().
                let (name, compression) = name_of_path(path).unwrap_or_default();
                KernelModule {
                    name,
                    path: path.to_string(),
                    compression,
                }
            })
            .collect();
        Ok(ModuleClosure {
            kver: self.kver.clone(),
            load_order,
            builtin,
        })
    }

    fn visit<'a>(
        &'a self,
        path: &'a str,
        done: &mut HashMap<&'a str, bool>,
        order: &mut Vec<&'a str>,
    ) -> Result<(), ModulesError> {
        match done.get(path) {
            Some(true) => return Ok(()),
            Some(false) => {
                let name = name_of_path(path).map(|(n, _)| n).unwrap_or_default();
                return Err(ModulesError::Cycle(name));
            }
            None => {}
        }
        done.insert(path, false);
        // modules.dep lists the whole transitive closure with the deepest
        // dependency last (modprobe loads it from the end); walk it in that
        // order so the output matches what modprobe would do.
        if let Some(list) = self.deps.get(path) {
            for dep in list.iter().rev() {
                self.visit(dep, done, order)?;
            }
        }
        done.insert(path, true);
        order.push(path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A chain (ext4 -> jbd2 -> crc16-like base) and a diamond
    // (top -> left, right; left, right -> base), mixed compressions.
    const DEP: &str = "\
kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc-x.ko.xz
kernel/fs/jbd2/jbd2.ko: kernel/lib/crc-x.ko.xz
kernel/fs/mbcache.ko:
kernel/lib/crc-x.ko.xz:
kernel/d/top.ko: kernel/d/left.ko kernel/d/right.ko kernel/d/base.ko
kernel/d/left.ko: kernel/d/base.ko
kernel/d/right.ko: kernel/d/base.ko
kernel/d/base.ko:
";
    const BUILTIN: &str = "kernel/drivers/virtio/virtio.ko\nkernel/lib/libcrc32c.ko\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse("6.1.0-test", DEP, BUILTIN).unwrap()
    }

    fn paths(c: &ModuleClosure) -> Vec<&str> {
        c.load_order.iter().map(|m| m.path.as_str()).collect()
    }

    #[test]
    fn chain_loads_dependencies_first() {
        let c = index().resolve(&["ext4"]).unwrap();
        assert_eq!(
            paths(&c),
            [
                "kernel/lib/crc-x.ko.xz",
                "kernel/fs/mbcache.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/ext4/ext4.ko.zst"
            ]
        );
        assert_eq!(c.load_order[0].compression, Compression::Xz);
        assert_eq!(c.load_order[0].name, "crc_x");
        assert_eq!(c.load_order[3].compression, Compression::Zstd);
        assert_eq!(c.load_order[1].compression, Compression::None);
    }

    #[test]
    fn diamond_is_loaded_once_in_a_valid_order() {
        let c = index().resolve(&["top", "left", "base"]).unwrap();
        let p = paths(&c);
        assert_eq!(p.len(), 4);
        let at = |s: &str| p.iter().position(|x| x.ends_with(s)).unwrap();
        assert_eq!(at("base.ko"), 0);
        assert!(at("left.ko") < at("top.ko"));
        assert!(at("right.ko") < at("top.ko"));
    }

    #[test]
    fn dash_and_underscore_are_equal() {
        let c = index().resolve(&["crc_x", "crc-x"]).unwrap();
        assert_eq!(paths(&c), ["kernel/lib/crc-x.ko.xz"]);
    }

    #[test]
    fn builtins_need_no_file_and_unknowns_fail() {
        let c = index()
            .resolve(&["virtio", "libcrc32c", "mbcache"])
            .unwrap();
        assert_eq!(c.builtin, ["virtio", "libcrc32c"]);
        assert_eq!(paths(&c), ["kernel/fs/mbcache.ko"]);
        let e = index().resolve(&["nope-mod"]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("nope_mod") && msg.contains("6.1.0-test"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_and_cyclic_trees_are_refused() {
        assert!(ModuleIndex::parse("k", "a.ko b.ko\n", "").is_err());
        assert!(ModuleIndex::parse("k", "a.ko: b.ko\n", "").is_err());
        assert!(ModuleIndex::parse("k", "a.txt:\n", "").is_err());
        let idx = ModuleIndex::parse("k", "a.ko: b.ko\nb.ko: a.ko\n", "").unwrap();
        assert!(matches!(idx.resolve(&["a"]), Err(ModulesError::Cycle(_))));
    }

    #[test]
    fn loads_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("6.1.0-x");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("modules.dep"), DEP).unwrap();
        let idx = ModuleIndex::load(&m).unwrap();
        assert_eq!(idx.kver(), "6.1.0-x");
        // No modules.builtin: nothing is built in.
        assert!(matches!(
            idx.resolve(&["virtio"]),
            Err(ModulesError::Unknown { .. })
        ));
    }
}
