//! The new root's layout: the skeleton a fresh ROOT needs, the /etc overlay
//! options, and the module list format.

/// Where ROOT is mounted before the switch.
pub const SYSROOT: &str = "/sysroot";
/// The factory /etc the builder ships inside /usr (overlay lower layer).
pub const FACTORY_ETC: &str = "usr/share/factory/etc";
/// /etc overlay upper and work dirs on ROOT (relative to its top).
pub const ETC_UPPER: &str = ".cairn/etc/upper";
pub const ETC_WORK: &str = ".cairn/etc/work";
/// Module load order written by initrd-pack (paths relative to `/`).
pub const MODULE_LIST: &str = disk_layout::initramfs::MODULE_LIST;
/// Where the OEM partition is mounted (as by oem.mount in systemd-units).
pub const OEM_MOUNTPOINT: &str = "/oem";
/// Generators cairn-init masks for the booted system (see `record_boot`).
pub const MASKED_GENERATORS_DIR: &str = "/run/systemd/system-generators";
pub const MASKED_GENERATORS: &[&str] = &["systemd-veritysetup-generator"];

/// One thing a ROOT must have (paths relative to its top).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Dir(&'static str, u32),
    Symlink(&'static str, &'static str),
}

/// Directories created (if missing) before /usr is mounted. A fresh ROOT is
/// an empty ext4; an existing one keeps whatever it has.
pub const SKELETON_DIRS: &[Item] = &[
    Item::Dir("usr", 0o755),
    Item::Dir("etc", 0o755),
    Item::Dir("var", 0o755),
    Item::Dir("home", 0o755),
    Item::Dir("root", 0o700),
    Item::Dir("tmp", 0o1777),
    Item::Dir("proc", 0o555),
    Item::Dir("sys", 0o555),
    Item::Dir("dev", 0o755),
    Item::Dir("run", 0o755),
    Item::Dir("mnt", 0o755),
    Item::Dir("opt", 0o755),
    Item::Dir("srv", 0o755),
    // Only root needs to reach the overlay layers; the upper dir's own
    // mode becomes /etc's mode.
    Item::Dir(".cairn", 0o700),
    Item::Dir(".cairn/etc", 0o700),
    Item::Dir(ETC_UPPER, 0o755),
    Item::Dir(ETC_WORK, 0o700),
];

/// Merged-/usr compatibility links, made after /usr is mounted. `lib64`
/// only where /usr has one (x86_64: the ELF interpreter path is
/// /lib64/ld-linux-x86-64.so.2; arm64 uses /lib).
pub fn skeleton_links(usr_has_lib64: bool) -> Vec<Item> {
    let mut v = vec![
        Item::Symlink("bin", "usr/bin"),
        Item::Symlink("sbin", "usr/sbin"),
        Item::Symlink("lib", "usr/lib"),
    ];
    if usr_has_lib64 {
        v.push(Item::Symlink("lib64", "usr/lib64"));
    }
    v
}

/// Escapes a path for an overlayfs option value (`\`, `,` and `:` are special).
fn escape_overlay(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, '\\' | ',' | ':') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// Mount data for the /etc overlay under `sysroot`.
pub fn etc_overlay_options(sysroot: &str) -> String {
    format!(
        "lowerdir={},upperdir={},workdir={}",
        escape_overlay(&format!("{sysroot}/{FACTORY_ETC}")),
        escape_overlay(&format!("{sysroot}/{ETC_UPPER}")),
        escape_overlay(&format!("{sysroot}/{ETC_WORK}")),
    )
}

/// How a module file must be passed to `finit_module`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleFormat {
    Plain,
    /// `.ko.xz`/`.ko.zst`/`.ko.gz`: needs MODULE_INIT_COMPRESSED_FILE and a
    /// kernel with CONFIG_MODULE_DECOMPRESS.
    Compressed,
}

/// Module paths from the list file: one per line, `#` comments and blank
/// lines ignored; returns (absolute path, format) or the offending line.
pub fn parse_module_list(text: &str) -> Result<Vec<(String, ModuleFormat)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let format = if l.ends_with(".ko") {
                ModuleFormat::Plain
            } else if [".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|s| l.ends_with(s))
            {
                ModuleFormat::Compressed
            } else {
                return Err(format!("{MODULE_LIST}: {l:?} is not a module file"));
            };
            if l.split('/').any(|c| c == "..") {
                return Err(format!("{MODULE_LIST}: {l:?} leaves the initramfs"));
            }
            Ok((format!("/{}", l.trim_start_matches('/')), format))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options() {
        assert_eq!(
            etc_overlay_options("/sysroot"),
            "lowerdir=/sysroot/usr/share/factory/etc,upperdir=/sysroot/.cairn/etc/upper,\
             workdir=/sysroot/.cairn/etc/work"
        );
        assert!(etc_overlay_options("/a,b:c").starts_with(r"lowerdir=/a\,b\:c/usr"));
    }

    #[test]
    fn skeleton_is_ordered_parents_first() {
        let dirs: Vec<&str> = SKELETON_DIRS
            .iter()
            .filter_map(|i| match i {
                Item::Dir(p, _) => Some(*p),
                Item::Symlink(..) => None,
            })
            .collect();
        assert_eq!(dirs.len(), SKELETON_DIRS.len());
        for (i, p) in dirs.iter().enumerate() {
            if let Some((parent, _)) = p.rsplit_once('/') {
                assert!(dirs[..i].contains(&parent), "{p} before its parent");
            }
        }
        assert_eq!(skeleton_links(false).len(), 3);
        assert_eq!(skeleton_links(true)[3], Item::Symlink("lib64", "usr/lib64"));
    }

    #[test]
    fn module_list_parses() {
        let l = "# load order\nlib/modules/k/a.ko\n\nlib/modules/k/b.ko.zst\n";
        assert_eq!(
            parse_module_list(l).unwrap(),
            [
                ("/lib/modules/k/a.ko".to_string(), ModuleFormat::Plain),
                (
                    "/lib/modules/k/b.ko.zst".to_string(),
                    ModuleFormat::Compressed
                )
            ]
        );
        assert!(parse_module_list("lib/x.txt").is_err());
        assert!(parse_module_list("lib/../../x.ko").is_err());
    }
}
