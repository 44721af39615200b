//! Filesystem images, each built reproducibly as a plain file (no loop mounts):
//! EROFS for /usr (mkfs.erofs), ext4 for ROOT and OEM (mkfs.ext4 + a debugfs
//! script under a fixed clock), FAT32 for the ESP (mkfs.fat + mtools).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use disk_layout::Guid;

use crate::tools::run;

/// `/usr` as EROFS, lz4hc-compressed, every timestamp set to `epoch`.
pub fn erofs(src: &Path, out: &Path, uuid: Guid, epoch: u64) -> Result<()> {
    let mut cmd = Command::new("mkfs.erofs");
    cmd.arg("-zlz4hc")
        .arg("--quiet")
        .arg(format!("-T{epoch}"))
        .arg(format!("-U{uuid}"))
        .arg(out)
        .arg(src)
        // erofs-utils 1.5 turns SOURCE_DATE_EPOCH into a clamp that overrides -T.
        .env_remove("SOURCE_DATE_EPOCH");
    run(&mut cmd)
}

/// One entry of an ext4 skeleton.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A regular file copied from `source`, owned by root, every timestamp
    /// `epoch`. `path` has safe characters only (no spaces or quotes: it goes
    /// into a debugfs script); its directory is made by an earlier `Dir`.
    File {
        path: String,
        mode: u32,
        source: std::path::PathBuf,
    },
}

/// An ext4 image of `size_mib` holding `nodes`, identical for identical inputs:
/// mke2fs copies host ctimes with `-d`, so the tree is made by debugfs instead,
/// with e2fsprogs' fake clock pinned to `epoch`.
pub fn ext4(
    out: &Path,
    label: &str,
    uuid: Guid,
    hash_seed: Guid,
    size_mib: u64,
    nodes: &[Node],
    epoch: u64,
) -> Result<()> {
    if out.exists() {
        std::fs::remove_file(out).with_context(|| format!("cannot replace {}", out.display()))?;
    }
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-b", "4096", "-L", label, "-U"])
        .arg(uuid.to_string())
        .arg("-E")
        .arg(format!("hash_seed={hash_seed},root_owner=0:0"))
        .arg(out)
        .arg(format!("{size_mib}M"))
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .env_remove("SOURCE_DATE_EPOCH");
    run(&mut cmd)?;
    if nodes.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    for n in nodes {
        match n {
            Node::Dir { path, mode } => {
                script += &format!(
                    "mkdir {path}\nset_inode_field {path} mode 0{:o}\n",
                    0o040000 | mode
                );
            }
            Node::Symlink { path, target } => script += &format!("symlink {path} {target}\n"),
            Node::File { path, mode, source } => {
                // debugfs `write` makes its entry in the current directory
                // and stamps the host clock: cd there, then fix every field.
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
                script += &format!(
                    "cd /{dir}\nwrite {} {name}\ncd /\nset_inode_field /{path} mode 0{:o}\n\
                     set_inode_field /{path} uid 0\nset_inode_field /{path} gid 0\n",
                    source.display(),
                    0o100000 | mode
                );
                for field in ["atime", "mtime", "ctime", "crtime"] {
                    script += &format!("set_inode_field /{path} {field} @{epoch}\n");
                }
            }
        }
    }
    let mut child = Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run debugfs: install e2fsprogs")?;
    child
        .stdin
        .take()
        .context("debugfs stdin")?
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    // debugfs reports command errors on stderr but still exits 0.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !output.status.success() || !errors.is_empty() {
        bail!(
            "debugfs could not populate {}: {}",
            out.display(),
            errors.join("; ")
        );
    }
    Ok(())
}

/// A FAT32 image of `size_mib` with `files` (ESP paths with forward slashes),
/// made by mkfs.fat and mtools: no loop mount, no root needed. Every file and
/// folder gets the mtime `epoch` (mcopy -m keeps the source's), and
/// `--invariant` fixes the volume id and the other time-based fields.
pub fn fat32(
    out: &Path,
    size_mib: u64,
    label: &str,
    files: &[(String, Vec<u8>)],
    epoch: u64,
) -> Result<()> {
    let tree = out.with_extension("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    for (path, data) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap_or(&tree))?;
        std::fs::write(&p, data).with_context(|| format!("cannot stage {}", p.display()))?;
    }
    set_mtimes(&tree, epoch)?;
    if out.exists() {
        std::fs::remove_file(out)?;
    }
    let mut cmd = Command::new("mkfs.fat");
    cmd.args(["-F", "32", "-n", label, "--invariant", "-C"])
        .arg(out)
        .arg((size_mib * 1024).to_string());
    run(&mut cmd)?;
    let mut tops: Vec<_> = std::fs::read_dir(&tree)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    tops.sort();
    let mut cmd = Command::new("mcopy");
    cmd.args(["-s", "-m", "-i"])
        .arg(out)
        .args(&tops)
        .arg("::/")
        .env("MTOOLS_SKIP_CHECK", "1");
    run(&mut cmd).with_context(|| {
        format!(
            "cannot copy the boot files into {}: is esp_mib big enough?",
            out.display()
        )
    })?;
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}

fn set_mtimes(dir: &Path, epoch: u64) -> Result<()> {
    let mut cmd = Command::new("touch");
    cmd.arg("-h").arg("-d").arg(format!("@{epoch}"));
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        cmd.arg(&d);
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            } else {
                cmd.arg(e.path());
            }
        }
    }
    run(&mut cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Present, or the test fails under `cargo xtask test` (skips when bare).
    fn have(tool: &str, package: &str) -> bool {
        host_tools::require(&[(tool, package)])
    }

    #[test]
    fn fat32_is_reproducible_and_fsck_clean() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            ("EFI/BOOT/BOOTX64.EFI".to_string(), vec![1u8; 5000]),
            ("cairn/a/cmdline".to_string(), b"console=ttyS0".to_vec()),
        ];
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        fat32(&a, 64, "ESP", &files, 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fat32(&b, 64, "ESP", &files, 1_700_000_000).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        if have("fsck.fat", "dosfstools") {
            let out = Command::new("fsck.fat").arg("-n").arg(&a).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(!text.contains("FAT16") && !text.contains("FAT12"), "{text}");
        }
        if have("mtype", "mtools") {
            let out = Command::new("mtype")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(&a)
                .arg("::/cairn/a/cmdline")
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "console=ttyS0");
        }
    }

    #[test]
    fn ext4_skeleton_is_reproducible() {
        if !have("mkfs.ext4", "e2fsprogs") || !have("debugfs", "e2fsprogs") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![
            Node::Dir {
                path: "var".into(),
                mode: 0o755,
            },
            Node::Dir {
                path: "tmp".into(),
                mode: 0o1777,
            },
            Node::Symlink {
                path: "bin".into(),
                target: "usr/bin".into(),
            },
        ];
        let u = Guid::parse("11111111-2222-4333-8444-555555555555");
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        ext4(&a, "ROOT", u, u, 32, &nodes, 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        ext4(&b, "ROOT", u, u, 32, &nodes, 1_700_000_000).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "ext4 images differ"
        );
        let out = Command::new("debugfs")
            .args(["-R", "stat tmp"])
            .arg(&a)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Mode:  01777"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&a)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}
