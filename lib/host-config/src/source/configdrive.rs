//! The OpenStack config drive: a filesystem (iso9660 or vfat) labelled
//! `config-2` with the user data at `openstack/latest/user_data`. It is
//! local, so it is looked for on every platform (Ironic gives bare metal
//! one); a drive without user data means "no user data", and the metadata
//! service is not asked then.
//!
//! Found by its udev link `/dev/disk/by-label/config-2`; read where it is
//! mounted if it is, else mounted read-only on /run/cairn/config-drive for
//! the read and unmounted after.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Fetched, Probe, Sources, read_capped};

/// The labels Nova gives the drive (vfat labels may be upper-cased).
pub const LABELS: [&str; 2] = ["config-2", "CONFIG-2"];
/// udev's links by filesystem label (relative to `/`).
pub const BY_LABEL: &str = "dev/disk/by-label";
/// The user data inside the drive.
pub const USER_DATA: &str = "openstack/latest/user_data";
/// Where cairn-config mounts the drive when nothing has (relative to `/`).
pub const MOUNT_DIR: &str = "run/cairn/config-drive";
/// The mount table (relative to `/`).
pub const PROC_MOUNTS: &str = "proc/self/mounts";

/// Undoes the octal escapes of /proc/self/mounts (`\040` for a space …).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where `device` (as the system names it, `/dev/sr0`) is mounted, if it is.
pub fn mounted_at(mounts: &str, device: &str) -> Option<String> {
    mounts.lines().find_map(|line| {
        let mut f = line.split(' ');
        let (dev, dir) = (f.next()?, f.next()?);
        (unescape(dev) == device).then(|| unescape(dir))
    })
}

fn run(argv: &[OsString], extra: &[&Path]) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("no program configured".into());
    };
    let out = Command::new(prog)
        .args(args)
        .args(extra)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", prog.to_string_lossy()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {} failed ({}): {}",
            prog.to_string_lossy(),
            extra
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn read_user_data(dir: &Path, origin: &str, device: &str) -> Probe {
    let path = dir.join(USER_DATA);
    match read_capped(&path) {
        Ok(bytes) => Probe::Found(Fetched {
            origin: origin.to_string(),
            bytes,
            detached_sig: None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Probe::Absent(format!("config drive {device} has no {USER_DATA}"))
        }
        Err(e) => Probe::broken(origin, format!("cannot read {USER_DATA}: {e}")),
    }
}

/// `None` when there is no config drive; else what it holds.
pub(crate) fn probe(s: &Sources) -> Option<Probe> {
    let root = &s.root;
    let link = LABELS
        .iter()
        .map(|l| root.join(BY_LABEL).join(l))
        .find(|p| p.symlink_metadata().is_ok())?;
    Some(probe_drive(s, &link))
}

fn probe_drive(s: &Sources, link: &Path) -> Probe {
    let root = &s.root;
    let origin_of = |dev: &str| format!("openstack config drive {dev}");
    let dev: PathBuf = match std::fs::canonicalize(link) {
        Ok(d) => d,
        Err(e) => {
            return Probe::broken(
                origin_of(&link.display().to_string()),
                format!("cannot resolve {}: {e}", link.display()),
            );
        }
    };
    // The device as the system names it (tests run under a scratch root).
    let device = match dev.strip_prefix(root) {
        Ok(rel) if root != Path::new("/") => format!("/{}", rel.display()),
        _ => dev.display().to_string(),
    };
    let origin = origin_of(&device);
    let mounts = std::fs::read_to_string(root.join(PROC_MOUNTS)).unwrap_or_default();
    if let Some(dir) = mounted_at(&mounts, &device) {
        let dir = root.join(dir.trim_start_matches('/'));
        return read_user_data(&dir, &origin, &device);
    }
    let dir = root.join(MOUNT_DIR);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Probe::broken(origin, format!("cannot create {}: {e}", dir.display()));
    }
    let opts: [OsString; 4] = [
        "-o".into(),
        "ro,nodev,nosuid,noexec".into(),
        "-t".into(),
        "iso9660,vfat".into(),
    ];
    let mut argv = s.tools.mount.clone();
    argv.extend(opts);
    if let Err(e) = run(&argv, &[&dev, &dir]) {
        return Probe::broken(origin, format!("cannot mount it: {e}"));
    }
    let found = read_user_data(&dir, &origin, &device);
    // A drive left mounted on /run/cairn/config-drive harms nothing; what
    // was read stands.
    let _ = run(&s.tools.umount, &[&dir]);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table() {
        let mounts = "/dev/vda6 / ext4 rw 0 0\n/dev/sr0 /mnt/config\\0402 iso9660 ro 0 0\n";
        assert_eq!(mounted_at(mounts, "/dev/sr0"), Some("/mnt/config 2".into()));
        assert_eq!(mounted_at(mounts, "/dev/sr1"), None);
    }

    fn setup(d: &Path, user_data: Option<&str>) -> std::io::Result<()> {
        // The "device" is a directory holding the drive's files; udev's
        // relative link points at it.
        let drive = d.join("dev/sr0");
        std::fs::create_dir_all(drive.join("openstack/latest"))?;
        if let Some(u) = user_data {
            std::fs::write(drive.join(USER_DATA), u)?;
        }
        std::fs::create_dir_all(d.join(BY_LABEL))?;
        std::os::unix::fs::symlink("../../sr0", d.join(BY_LABEL).join("config-2"))?;
        Ok(())
    }

    fn sources(d: &Path) -> Sources {
        let mut s = Sources::at(d);
        // `mount DEV DIR` copies DEV's files into DIR; umount logs its call.
        let log = d.join("umount.log");
        s.tools.mount = vec![
            "sh".into(),
            "-c".into(),
            "cp -r \"$5\"/. \"$6\"/".into(),
            "mount".into(),
        ];
        s.tools.umount = vec![
            "sh".into(),
            "-c".into(),
            format!("echo \"$1\" >> {}", log.display()).into(),
            "umount".into(),
        ];
        s
    }

    #[test]
    fn absent_without_the_label() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        assert_eq!(probe(&sources(d.path())), None);
        Ok(())
    }

    #[test]
    fn reads_a_mounted_drive() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        setup(d.path(), Some("hostname = \"os\"\n"))?;
        std::fs::create_dir_all(d.path().join("proc/self"))?;
        std::fs::write(
            d.path().join(PROC_MOUNTS),
            "/dev/sr0 /dev/sr0 iso9660 ro 0 0\n",
        )?;
        let mut s = sources(d.path());
        // Mounting would be wrong here.
        s.tools.mount = vec!["false".into()];
        match probe(&s).unwrap_or(Probe::Absent(String::new())) {
            Probe::Found(f) => {
                assert_eq!(f.origin, "openstack config drive /dev/sr0");
                assert_eq!(f.bytes, b"hostname = \"os\"\n");
            }
            p => panic!("{p:?}"),
        }
        Ok(())
    }

    #[test]
    fn mounts_reads_and_unmounts() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        setup(d.path(), Some("hostname = \"os\"\n"))?;
        let s = sources(d.path());
        match probe(&s).unwrap_or(Probe::Absent(String::new())) {
            Probe::Found(f) => assert_eq!(f.bytes, b"hostname = \"os\"\n"),
            p => panic!("{p:?}"),
        }
        let log = std::fs::read_to_string(d.path().join("umount.log"))?;
        assert_eq!(log.trim(), d.path().join(MOUNT_DIR).display().to_string());
        Ok(())
    }

    #[test]
    fn a_drive_without_user_data_is_absent() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        setup(d.path(), None)?;
        assert_eq!(
            probe(&sources(d.path())),
            Some(Probe::Absent(format!(
                "config drive /dev/sr0 has no {USER_DATA}"
            )))
        );
        Ok(())
    }

    #[test]
    fn a_drive_that_cannot_be_mounted_is_an_error() -> std::io::Result<()> {
        let d = tempfile::tempdir()?;
        setup(d.path(), Some("x = 1\n"))?;
        let mut s = sources(d.path());
        s.tools.mount = vec![
            "sh".into(),
            "-c".into(),
            "echo 'wrong fs type' >&2; exit 32".into(),
            "mount".into(),
        ];
        match probe(&s).unwrap_or(Probe::Absent(String::new())) {
            Probe::Broken { origin, message } => {
                assert_eq!(origin, "openstack config drive /dev/sr0");
                assert!(
                    message.contains("cannot mount it") && message.contains("wrong fs type"),
                    "{message}"
                );
            }
            p => panic!("{p:?}"),
        }
        Ok(())
    }
}
