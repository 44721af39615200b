//! The staging tree: the rootfs tarball unpacked, trimmed and configured into
//! what goes into /usr (with the factory /etc inside it) and the ROOT skeleton.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools::run;
use cairn_build::board::{Board, ConfigSection, PRELOAD_DIR, Preload, preload_name};
use disk_layout::board_files::{CONFIG_KEYS, CONFIG_SOURCES};

pub struct Staged {
    pub kver: String,
    pub kernel: Vec<u8>,
    /// Top-level symlinks of the rootfs (`bin -> usr/bin`, …), recreated on ROOT.
    pub top_symlinks: Vec<(String, String)>,
    pub modules_kept: usize,
    pub modules_removed: usize,
}

/// Cairn's own files for /usr/lib/cairn.
pub struct CairnFiles<'a> {
    pub version: &'a str,
    pub lockfile: &'a [String],
    /// (file name, contents) of the release public keys.
    pub keys: &'a [(String, String)],
    pub keys_json: String,
    pub units_dir: &'a Path,
    /// (compiled binary, destination relative to the image root)
    pub binaries: &'a [(PathBuf, &'a str)],
    /// The update repository root that hosts trust.
    pub update_root: Option<&'a Path>,
    /// The board's K (see `disk_layout::board_files::BOOT_TRIES`).
    pub boot_tries: u8,
}

pub fn extract(tar: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Command::new("tar");
    cmd.args([
        "-x",
        "-p",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "-f",
    ])
    .arg(tar)
    .arg("-C")
    .arg(dir);
    run(&mut cmd).with_context(|| {
        format!(
            "cannot unpack {} (the builder must run as root to keep file owners)",
            tar.display()
        )
    })
}

pub fn customize(root: &Path, board: &Board, files: &CairnFiles) -> Result<Staged> {
    let (kver, kernel) = take_kernel(root)?;
    let (modules_kept, modules_removed) = prune_modules(root, &kver, board)?;
    configure_etc(root, board, files)?;
    install_cairn_files(root, files)?;
    config_files(root, &board.config)
        .with_context(|| format!("board {}: [config]", board.board.name))?;
    let preloads = board
        .preloads()
        .map_err(|m| anyhow::anyhow!("board {}: {m}", board.board.name))?;
    preload_images(root, &preloads)?;
    let top_symlinks = top_symlinks(root)?;
    // /var and everything else outside /usr is rebuilt on ROOT from a skeleton:
    // the dpkg database has no use on a host without a package manager (the
    // lockfile in /usr/lib/cairn says what is installed).
    let etc = root.join("etc");
    let factory = root.join("usr/share/factory/etc");
    if factory.exists() {
        std::fs::remove_dir_all(&factory)
            .with_context(|| format!("cannot replace {}", factory.display()))?;
    }
    std::fs::create_dir_all(root.join("usr/share/factory"))?;
    std::fs::rename(&etc, &factory)
        .with_context(|| format!("cannot move /etc to {}", factory.display()))?;
    Ok(Staged {
        kver,
        kernel,
        top_symlinks,
        modules_kept,
        modules_removed,
    })
}

fn take_kernel(root: &Path) -> Result<(String, Vec<u8>)> {
    let boot = root.join("boot");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&boot)
        .with_context(|| format!("{}: the rootfs has no /boot", boot.display()))?
    {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-") {
            found.push(v.to_string());
        }
    }
    let [kver] = found.as_slice() else {
        bail!(
            "expected one kernel in {}, found {:?}: check debian.kernel in the board config",
            boot.display(),
            found
        );
    };
    let path = boot.join(format!("vmlinuz-{kver}"));
    let kernel = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((kver.clone(), kernel))
}

/// Keeps the board's modules (with their dependencies) and drops the rest of
/// the ~400 MB module tree, then re-runs depmod for what is left.
fn prune_modules(root: &Path, kver: &str, board: &Board) -> Result<(usize, usize)> {
    let dir = root.join("usr/lib/modules").join(kver);
    let mut names = board.kernel.modules.clone();
    names.extend(board.initramfs.modules.iter().cloned());
    let closure = initrd_pack::ModuleIndex::load(&dir)
        .and_then(|ix| ix.resolve(&names))
        .with_context(|| format!("kernel modules of the board for kernel {kver}"))?;
    let keep: BTreeSet<PathBuf> = closure
        .load_order
        .iter()
        .map(|m| dir.join(&m.path))
        .collect();
    let mut removed = 0;
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                stack.push(p);
            } else if !keep.contains(&p) {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
                removed += 1;
            }
        }
    }
    let mut cmd = Command::new("depmod");
    cmd.arg("-b").arg(root).arg(kver);
    run(&mut cmd)?;
    Ok((keep.len(), removed))
}

fn configure_etc(root: &Path, board: &Board, files: &CairnFiles) -> Result<()> {
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = root.join(rel);
        if p.is_symlink() || p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("cannot replace {}", p.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    write("etc/hostname", "cairn\n")?;
    write(
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tcairn\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write(
        "etc/fstab",
        "# / and /usr are mounted by cairn-init; see /usr/lib/cairn.\n",
    )?;
    // Empty: systemd makes a per-host id on first boot (into the /etc overlay).
    write("etc/machine-id", "")?;
    // Host keys made at build time would be shared by every host.
    for e in std::fs::read_dir(root.join("etc/ssh"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(e.path())?;
        }
    }
    for rel in [
        "boot",
        "var/lib/dpkg",
        "var/lib/apt",
        "var/cache",
        "var/log",
    ] {
        let p = root.join(rel);
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    let os_release = format!(
        "NAME=\"Cairn\"\nPRETTY_NAME=\"Cairn {v} ({b})\"\nID=cairn\nID_LIKE=debian\nVERSION_ID={v}\nVERSION=\"{v}\"\n\
         IMAGE_ID={b}\nIMAGE_VERSION={v}\nDEBIAN_SUITE={s}\nHOME_URL=\"https://cairn.invalid/\"\n",
        v = files.version,
        b = board.board.name,
        s = board.debian.suite
    );
    write("usr/lib/os-release", &os_release)?;
    let default_target = root.join("etc/systemd/system/default.target");
    let _ = std::fs::remove_file(&default_target);
    std::os::unix::fs::symlink("/usr/lib/systemd/system/multi-user.target", &default_target)
        .with_context(|| format!("cannot link {}", default_target.display()))?;
    Ok(())
}

fn install_cairn_files(root: &Path, files: &CairnFiles) -> Result<()> {
    copy_tree(&files.units_dir.join("usr"), &root.join("usr"))?;
    let dir = root.join("usr/lib/cairn");
    std::fs::create_dir_all(dir.join("keys"))?;
    for (name, text) in files.keys {
        std::fs::write(dir.join("keys").join(name), text)?;
    }
    std::fs::write(dir.join("keys.json"), &files.keys_json)?;
    std::fs::write(dir.join("packages.lock"), files.lockfile.join("\n") + "\n")?;
    std::fs::write(
        root.join(disk_layout::board_files::BOOT_TRIES),
        format!("{}\n", files.boot_tries),
    )?;
    if let Some(root_json) = files.update_root {
        std::fs::copy(root_json, dir.join("update-root.json"))
            .with_context(|| format!("cannot ship {} as the update root", root_json.display()))?;
    }
    for (src, dest) in files.binaries {
        let dst = root.join(dest);
        std::fs::create_dir_all(dst.parent().unwrap_or(root))?;
        std::fs::copy(src, &dst)
            .with_context(|| format!("cannot install {} as /{dest}", src.display()))?;
    }
    apply_presets(
        root,
        &files
            .units_dir
            .join("usr/lib/systemd/system-preset/10-cairn.preset"),
    )?;
    apply_masks(root, &files.units_dir.join("usr/share/cairn/masked-units"))
}

/// The board's `[config]` as cairn-config reads it from /usr: the source
/// list and the keys that must sign host configs. Nothing is written for
/// what the board leaves out (cairn-config's defaults apply).
pub fn config_files(root: &Path, config: &ConfigSection) -> Result<()> {
    let keys = config.keys_file().map_err(anyhow::Error::msg)?;
    for (rel, text) in [(CONFIG_SOURCES, config.sources_file()), (CONFIG_KEYS, keys)] {
        let Some(text) = text else { continue };
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(root))
            .with_context(|| format!("cannot create the folder of {}", p.display()))?;
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// Copies each preloaded OCI layout to /usr/share/cairn/images/<image>/
/// (`:` written as `+`),
/// inside the verity-protected /usr: an app's first start imports it from
/// there with `cairn-run import` instead of pulling.
pub fn preload_images(root: &Path, preloads: &[Preload]) -> Result<()> {
    for p in preloads {
        let dst = root.join(PRELOAD_DIR).join(preload_name(&p.image));
        if dst.exists() {
            bail!(
                "image {} is preloaded twice (second copy from {})",
                p.image,
                p.layout.display()
            );
        }
        std::fs::create_dir_all(&dst)
            .with_context(|| format!("cannot create {}", dst.display()))?;
        copy_tree(&p.layout, &dst)
            .with_context(|| format!("cannot preload {} from {}", p.image, p.layout.display()))?;
    }
    Ok(())
}

/// `systemctl --root` enable/disable for each line of our preset file:
/// explicit, so Debian's own preset defaults cannot change what a host runs.
fn apply_presets(root: &Path, preset: &Path) -> Result<()> {
    let text = std::fs::read_to_string(preset)
        .with_context(|| format!("cannot read {}", preset.display()))?;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (verb, unit) = line
            .split_once(' ')
            .with_context(|| format!("{}: bad line {line:?}", preset.display()))?;
        if !["enable", "disable"].contains(&verb) {
            bail!("{}: unknown verb in {line:?}", preset.display());
        }
        // A unit the package set lacks is not an error for disable.
        let unit_exists = ["usr/lib/systemd/system", "etc/systemd/system"]
            .iter()
            .any(|d| root.join(d).join(unit).exists());
        if verb == "enable" && !unit_exists {
            bail!(
                "{}: {unit} is not in the image; add its package to the board",
                preset.display()
            );
        }
        let mut cmd = Command::new("systemctl");
        cmd.arg(format!("--root={}", root.display()))
            .arg("--quiet")
            .arg(verb)
            .arg(unit);
        run(&mut cmd)?;
    }
    Ok(())
}

/// `systemctl --root mask` for each unit listed (one per line) in `list`.
fn apply_masks(root: &Path, list: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("cannot read {}", list.display()))?;
    for unit in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if unit.contains(char::is_whitespace) {
            bail!("{}: {unit:?} is not one unit name", list.display());
        }
        run(Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .args(["--quiet", "mask", unit]))?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for e in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        if e.file_type()?.is_dir() {
            std::fs::create_dir_all(&d)?;
            copy_tree(&s, &d)?;
        } else {
            std::fs::copy(&s, &d)
                .with_context(|| format!("cannot copy {} to {}", s.display(), d.display()))?;
        }
    }
    Ok(())
}

fn top_symlinks(root: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root)? {
        let e = e?;
        if e.file_type()?.is_symlink() {
            let target = std::fs::read_link(e.path())?.to_string_lossy().into_owned();
            if target.starts_with("usr/") {
                out.push((e.file_name().to_string_lossy().into_owned(), target));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_section_lands_where_cairn_config_reads_it() -> Result<()> {
        let d = tempfile::tempdir()?;
        let key = release_manifest::KeyPair::from_seed([9; 32]);
        let (_, public) = key.write(d.path(), "config")?;
        let config = ConfigSection {
            sources: Some(vec!["oem".into(), "ec2".into()]),
            require_signature: true,
            keys: vec![public.to_string_lossy().into_owned()],
        };
        let root = d.path().join("root");
        config_files(&root, &config)?;
        // Read back through host_config's own readers of these files.
        let sources = host_config::source::Sources::at(&root);
        assert_eq!(
            sources.order().map_err(anyhow::Error::msg)?,
            [
                host_config::source::Kind::Oem,
                host_config::source::Kind::Ec2
            ]
        );
        let keys = std::fs::read_to_string(root.join(CONFIG_KEYS))?;
        assert_eq!(
            host_config::source::signature::parse_keys(&keys),
            Ok(vec![key.public()])
        );

        // A board without the section writes nothing: every source, no signature.
        let bare = d.path().join("bare");
        config_files(&bare, &ConfigSection::default())?;
        assert!(!bare.join(CONFIG_SOURCES).exists() && !bare.join(CONFIG_KEYS).exists());
        assert_eq!(
            host_config::source::Sources::at(&bare)
                .order()
                .map_err(anyhow::Error::msg)?,
            host_config::source::Kind::DEFAULT_ORDER
        );
        Ok(())
    }

    #[test]
    fn preloads_land_under_their_image_name_in_usr() -> Result<()> {
        let d = tempfile::tempdir()?;
        let layout = d.path().join("web-oci");
        std::fs::create_dir_all(layout.join("blobs/sha256"))?;
        std::fs::write(
            layout.join("oci-layout"),
            "{\"imageLayoutVersion\":\"1.0.0\"}",
        )?;
        std::fs::write(layout.join("index.json"), "{}")?;
        std::fs::write(layout.join("blobs/sha256/ab"), "blob")?;
        let root = d.path().join("root");
        let p = Preload {
            layout: layout.clone(),
            image: "10.0.2.2:5000/test/web:1".into(),
        };
        preload_images(&root, std::slice::from_ref(&p))?;
        let dst = root.join("usr/share/cairn/images/10.0.2.2+5000/test/web+1");
        assert_eq!(
            std::fs::read_to_string(dst.join("blobs/sha256/ab"))?,
            "blob"
        );
        assert!(dst.join("oci-layout").is_file() && dst.join("index.json").is_file());
        let e = preload_images(&root, &[p]).unwrap_err().to_string();
        assert!(e.contains("preloaded twice"), "{e}");
        Ok(())
    }
}
