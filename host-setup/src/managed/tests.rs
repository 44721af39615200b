//! Scratch-root tests of the managed sections: config A applied, then B,
//! then nothing; idempotence measured by inode and mtime of every file.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::*;
use crate::converge::tests::{mode_of, snapshot};

struct Scratch {
    _dir: tempfile::TempDir,
    sys: System,
    uid: u32,
    gid: u32,
}

impl Scratch {
    fn p(&self, abs: &str) -> PathBuf {
        self.sys.path(abs)
    }

    fn read(&self, abs: &str) -> String {
        std::fs::read_to_string(self.p(abs)).unwrap_or_else(|e| panic!("{abs}: {e}"))
    }

    fn link(&self, abs: &str) -> Option<String> {
        std::fs::read_link(self.p(abs))
            .ok()
            .map(|t| t.to_string_lossy().into_owned())
    }

    fn exists(&self, abs: &str) -> bool {
        std::fs::symlink_metadata(self.p(abs)).is_ok()
    }

    /// Applies `text` as cairn-config would (not live), with the record on
    /// the scratch root.
    fn apply(&self, text: &str) -> (Vec<String>, Vec<String>) {
        let cfg = HostConfig::parse(text, "t").unwrap_or_else(|e| panic!("{e}"));
        let mut owned = Owned::load(&self.sys.root).expect("record").0;
        self.sys.managed(&cfg, &mut owned)
    }
}

fn write(root: &Path, rel: &str, text: &str) -> Result<()> {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent"))?;
    std::fs::write(p, text)?;
    Ok(())
}

/// A root like the image's: users, groups, units in /usr, one factory-
/// enabled unit, a factory /etc/issue, zoneinfo, /etc/sudoers.d.
fn scratch() -> Result<Scratch> {
    let d = tempfile::tempdir()?;
    let root = d.path().to_path_buf();
    let m = std::fs::metadata(&root)?;
    let (uid, gid) = (m.uid(), m.gid());
    // "root" is our own uid here, so the chown works without privileges.
    write(
        &root,
        "etc/passwd",
        &format!("root:x:{uid}:{gid}:root:/root:/bin/bash\nme:x:{uid}:{gid}::/home/me:/bin/bash\n"),
    )?;
    write(
        &root,
        "etc/group",
        &format!("root:x:{gid}:\nme:x:{gid}:\nadm:x:4:\n"),
    )?;
    write(&root, "etc/issue", "factory issue\n")?;
    std::fs::create_dir_all(root.join("etc/sudoers.d"))?;
    write(&root, "usr/share/zoneinfo/Europe/Berlin", "TZif2")?;
    write(
        &root,
        "usr/lib/systemd/system/image.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nAlias=img.service\n",
    )?;
    write(
        &root,
        "usr/lib/systemd/system/timesync.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=sysinit.target\n",
    )?;
    write(
        &root,
        "usr/lib/systemd/system/getty@.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
    )?;
    std::fs::create_dir_all(root.join("etc/systemd/system/sysinit.target.wants"))?;
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/timesync.service",
        root.join("etc/systemd/system/sysinit.target.wants/timesync.service"),
    )?;
    Ok(Scratch {
        _dir: d,
        sys: System { root, live: false },
        uid,
        gid,
    })
}

const A: &str = r#"timezone = "Europe/Berlin"
kernel_modules = ["br_netfilter"]
[[users]]
name = "me"
sudo = true
[[network.interfaces]]
name = "eth0"
addresses = ["10.0.0.5/24"]
gateway = "10.0.0.1"
[[network.vlans]]
name = "vlan10"
id = 10
parent = "eth0"
[[files]]
path = "/etc/issue"
contents = "cairn\n"
[[files]]
path = "/var/lib/app/key"
mode = "0600"
owner = "me:me"
contents_base64 = "AAEC"
[[units]]
name = "hello.service"
enabled = true
contents = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
[[units]]
name = "image.service"
enabled = true
dropins = [{ name = "10-x.conf", contents = "[Service]\nNice=5\n" }]
[[units]]
name = "timesync.service"
enabled = false
[[units]]
name = "getty@.service"
enabled = true
[[units]]
name = "getty@ttyS1.service"
enabled = true
[[units]]
name = "bad.service"
mask = true
[sysctl]
"net.ipv4.ip_forward" = 1
"#;

const B: &str = r#"[[network.interfaces]]
name = "eth0"
[[units]]
name = "image.service"
enabled = true
"#;

const SD: &str = "/etc/systemd/system";

#[test]
fn config_a_then_b_then_nothing() -> Result<()> {
    let s = scratch()?;
    let initial: Vec<PathBuf> = snapshot(&s.sys.root)
        .into_iter()
        .map(|e| e.0)
        .filter(|p| !p.is_dir())
        .collect();

    let (done, errors) = s.apply(A);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        done.iter().all(|d| d.starts_with("wrote ")
            || d.starts_with("linked ")
            || d.starts_with("removed ")),
        "{done:?}"
    );
    // [network]
    assert!(
        s.read("/etc/systemd/network/50-cairn-3-00-eth0.network")
            .contains("\nAddress=10.0.0.5/24\nGateway=10.0.0.1\nVLAN=vlan10\n")
    );
    assert!(
        s.read("/etc/systemd/network/50-cairn-1-vlan10.netdev")
            .contains("\nKind=vlan\n\n[VLAN]\nId=10\n")
    );
    assert!(s.exists("/etc/systemd/network/50-cairn-1-vlan10.network"));
    // [[files]]: the factory file is replaced, a new one made with its mode and owner.
    assert_eq!(s.read("/etc/issue"), "cairn\n");
    assert_eq!(std::fs::read(s.p("/var/lib/app/key"))?, [0, 1, 2]);
    assert_eq!(mode_of(&s.p("/var/lib/app/key")), Some(0o600));
    let m = std::fs::metadata(s.p("/var/lib/app/key"))?;
    assert_eq!((m.uid(), m.gid()), (s.uid, s.gid));
    // [[units]]: as `systemctl enable/disable/mask` would leave them.
    assert!(
        s.read(&format!("{SD}/hello.service"))
            .starts_with("[Service]")
    );
    assert_eq!(
        s.link(&format!("{SD}/multi-user.target.wants/hello.service"))
            .as_deref(),
        Some("/etc/systemd/system/hello.service")
    );
    assert_eq!(
        s.read(&format!("{SD}/image.service.d/10-x.conf")),
        "[Service]\nNice=5\n"
    );
    assert_eq!(
        s.link(&format!("{SD}/multi-user.target.wants/image.service"))
            .as_deref(),
        Some("/usr/lib/systemd/system/image.service")
    );
    assert_eq!(
        s.link(&format!("{SD}/img.service")).as_deref(),
        Some("/usr/lib/systemd/system/image.service")
    );
    assert!(!s.exists(&format!("{SD}/sysinit.target.wants/timesync.service")));
    for i in ["tty1", "ttyS1"] {
        assert_eq!(
            s.link(&format!("{SD}/getty.target.wants/getty@{i}.service"))
                .as_deref(),
            Some("/usr/lib/systemd/system/getty@.service")
        );
    }
    assert_eq!(
        s.link(&format!("{SD}/bad.service")).as_deref(),
        Some("/dev/null")
    );
    // sysctl, modules, timezone, sudo.
    assert!(
        s.read("/etc/sysctl.d/90-cairn.conf")
            .ends_with("\nnet.ipv4.ip_forward = 1\n")
    );
    assert!(
        s.read("/etc/modules-load.d/cairn.conf")
            .ends_with("\nbr_netfilter\n")
    );
    assert_eq!(
        s.link("/etc/localtime").as_deref(),
        Some("../usr/share/zoneinfo/Europe/Berlin")
    );
    assert!(
        s.read("/etc/sudoers.d/cairn-me")
            .ends_with("\nme ALL=(ALL) NOPASSWD: ALL\n")
    );
    assert_eq!(mode_of(&s.p("/etc/sudoers.d/cairn-me")), Some(0o440));

    // The same config again: nothing changes, nothing is written.
    let snap = snapshot(&s.sys.root);
    assert_eq!(s.apply(A), (Vec::new(), Vec::new()));
    assert_eq!(snapshot(&s.sys.root), snap);

    // B: what A made and B does not name is gone or put back.
    let (done, errors) = s.apply(B);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        done.contains(&"restored /etc/issue".to_string()),
        "{done:?}"
    );
    assert_eq!(s.read("/etc/issue"), "factory issue\n");
    assert_eq!(mode_of(&s.p("/etc/issue")), Some(0o644));
    assert!(
        s.read("/etc/systemd/network/50-cairn-3-00-eth0.network")
            .ends_with("[Network]\nDHCP=yes\n")
    );
    for gone in [
        "/etc/systemd/network/50-cairn-1-vlan10.netdev",
        "/etc/systemd/network/50-cairn-1-vlan10.network",
        "/var/lib/app/key",
        "/etc/systemd/system/hello.service",
        "/etc/systemd/system/multi-user.target.wants/hello.service",
        "/etc/systemd/system/image.service.d/10-x.conf",
        "/etc/systemd/system/getty.target.wants/getty@tty1.service",
        "/etc/systemd/system/getty.target.wants/getty@ttyS1.service",
        "/etc/systemd/system/bad.service",
        "/etc/sysctl.d/90-cairn.conf",
        "/etc/modules-load.d/cairn.conf",
        "/etc/localtime",
        "/etc/sudoers.d/cairn-me",
    ] {
        assert!(!s.exists(gone), "{gone} is still there");
    }
    assert!(s.exists(&format!("{SD}/multi-user.target.wants/image.service")));
    assert_eq!(
        s.link(&format!("{SD}/sysinit.target.wants/timesync.service"))
            .as_deref(),
        Some("/usr/lib/systemd/system/timesync.service"),
        "the factory link is put back"
    );
    let snap = snapshot(&s.sys.root);
    assert_eq!(s.apply(B), (Vec::new(), Vec::new()));
    assert_eq!(snapshot(&s.sys.root), snap);

    // A bad [network] section: the parser sets it aside, Cairn's network
    // files go (the image's DHCP default applies), the rest stays.
    let bad = format!("{B}[[network.interfaces]]\nname = \"eth1\"\naddresses = [\"10.0.0.6\"]\n");
    let cfg = HostConfig::parse(&bad, "t")?;
    assert!(cfg.network_error.0.is_some());
    let mut owned = Owned::load(&s.sys.root).expect("record").0;
    let (done, errors) = s.sys.managed(&cfg, &mut owned);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        done,
        ["removed /etc/systemd/network/50-cairn-3-00-eth0.network"]
    );
    assert!(s.exists(&format!("{SD}/multi-user.target.wants/image.service")));

    // Nothing: the root is as it was, but for the (empty) record.
    let (_, errors) = s.apply("");
    assert!(errors.is_empty(), "{errors:?}");
    let now: Vec<PathBuf> = snapshot(&s.sys.root)
        .into_iter()
        .map(|e| e.0)
        .filter(|p| !p.is_dir() && !p.ends_with(crate::converge::OWNED))
        .collect();
    assert_eq!(now, initial);
    assert_eq!(Owned::load(&s.sys.root), Ok((Owned::default(), None)));
    assert_eq!(s.read("/etc/issue"), "factory issue\n");
    Ok(())
}

#[test]
fn a_part_that_cannot_apply_keeps_what_it_had() -> Result<()> {
    let s = scratch()?;
    let (_, errors) = s.apply(A);
    assert!(errors.is_empty(), "{errors:?}");
    // An unknown zone, an unknown owner, a unit that is not there: each an
    // error naming the key; what they set before stays.
    let c = A
        .replace("Europe/Berlin", "Europe/Nowhere")
        .replace("me:me", "ghost:me")
        .replace(
            "name = \"image.service\"\nenabled = true\n",
            "name = \"nosuch.service\"\nenabled = true\n",
        );
    let (done, errors) = s.apply(&c);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("files[1] /var/lib/app/key: owner ghost:me: no user \"ghost\"")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("units nosuch.service: no such unit")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("\"Europe/Nowhere\" is not a zone of this image")),
        "{errors:?}"
    );
    assert!(s.exists("/var/lib/app/key"));
    assert_eq!(
        s.link("/etc/localtime").as_deref(),
        Some("../usr/share/zoneinfo/Europe/Berlin")
    );
    // image.service is no longer named: its drop-in and links go.
    assert!(
        !s.exists(&format!("{SD}/image.service.d/10-x.conf")),
        "{done:?}"
    );
    // No tzdata, no sudo in the image: errors naming the package.
    std::fs::remove_dir_all(s.p("/usr/share/zoneinfo"))?;
    std::fs::remove_dir_all(s.p("/etc/sudoers.d"))?;
    let (_, errors) = s.apply(A);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("timezone: the image has no time zones")
                && e.contains("\"tzdata\"")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(
            |e| e.starts_with("user me: sudo = true, but the image has no sudo")
                && e.contains("\"sudo\"")
        ),
        "{errors:?}"
    );
    // UTC needs no zoneinfo: no /etc/localtime is UTC.
    let (_, errors) = s.apply("timezone = \"UTC\"");
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!s.exists("/etc/localtime"));
    Ok(())
}

#[test]
fn conflicting_and_template_units() -> Result<()> {
    let s = scratch()?;
    // A template without DefaultInstance cannot be enabled; its instance can.
    write(
        &s.sys.root,
        "usr/lib/systemd/system/t@.service",
        "[Install]\nWantedBy=multi-user.target\n",
    )?;
    let (_, errors) = s.apply("[[units]]\nname = \"t@.service\"\nenabled = true\n[[units]]\nname = \"t@a.service\"\nenabled = true\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("DefaultInstance"), "{errors:?}");
    assert_eq!(
        s.link(&format!("{SD}/multi-user.target.wants/t@a.service"))
            .as_deref(),
        Some("/usr/lib/systemd/system/t@.service")
    );
    // A masked image unit cannot be enabled.
    std::os::unix::fs::symlink("/dev/null", s.p(&format!("{SD}/image.service")))?;
    let (_, errors) = s.apply("[[units]]\nname = \"image.service\"\nenabled = true\n");
    assert!(errors.iter().any(|e| e.contains("masked")), "{errors:?}");
    Ok(())
}

#[test]
fn unit_actions_follow_the_changes() {
    let u =
        |unit: &str, own: &[&str], links: &[&str], enabled: Option<bool>, mask: bool| UnitPaths {
            unit: unit.into(),
            own: own.iter().map(|s| s.to_string()).collect(),
            links: links.iter().map(|s| s.to_string()).collect(),
            enabled,
            mask,
        };
    let ch = |p: &str, action: Action| Change {
        path: p.into(),
        action,
    };
    let units = [
        u(
            "new.service",
            &["/etc/systemd/system/new.service"],
            &["/etc/systemd/system/m.target.wants/new.service"],
            Some(true),
            false,
        ),
        u(
            "edited.service",
            &["/etc/systemd/system/edited.service.d/x.conf"],
            &[],
            None,
            false,
        ),
        u(
            "masked.service",
            &["/etc/systemd/system/masked.service"],
            &[],
            None,
            true,
        ),
        u(
            "off.service",
            &[],
            &["/etc/systemd/system/m.target.wants/off.service"],
            Some(false),
            false,
        ),
        u(
            "linked.service",
            &[],
            &["/etc/systemd/system/m.target.wants/linked.service"],
            Some(true),
            false,
        ),
        u(
            "cairn-config.service",
            &["/etc/systemd/system/cairn-config.service.d/x.conf"],
            &[],
            None,
            false,
        ),
    ];
    let changes = [
        ch("/etc/systemd/system/new.service", Action::Wrote),
        ch(
            "/etc/systemd/system/m.target.wants/new.service",
            Action::Linked,
        ),
        ch("/etc/systemd/system/edited.service.d/x.conf", Action::Wrote),
        ch("/etc/systemd/system/masked.service", Action::Linked),
        ch(
            "/etc/systemd/system/m.target.wants/off.service",
            Action::Removed,
        ),
        ch(
            "/etc/systemd/system/m.target.wants/linked.service",
            Action::Linked,
        ),
        ch(
            "/etc/systemd/system/cairn-config.service.d/x.conf",
            Action::Wrote,
        ),
        // Entries no longer in the config.
        ch("/etc/systemd/system/gone.service", Action::Removed),
        ch(
            "/etc/systemd/system/m.target.wants/gone.service",
            Action::Removed,
        ),
        ch(
            "/etc/systemd/system/other.service.d/y.conf",
            Action::Removed,
        ),
        ch(
            "/etc/systemd/network/50-cairn-3-00-x.network",
            Action::Removed,
        ),
    ];
    assert_eq!(
        unit_actions(&units, &changes),
        UnitActions {
            stop: vec![
                "masked.service".into(),
                "off.service".into(),
                "gone.service".into()
            ],
            restart: vec!["new.service".into()],
            try_restart: vec!["edited.service".into(), "other.service".into()],
            start: vec!["linked.service".into()],
        }
    );
    assert_eq!(unit_actions(&units, &[]), UnitActions::default());
}

/// Our links are the ones `systemctl --root enable` makes.
#[test]
fn enabling_matches_systemctl() -> Result<()> {
    if !host_tools::require(&[("systemctl", "systemd")]) {
        return Ok(());
    }
    let text = "[[units]]\nname = \"image.service\"\nenabled = true\n\
                [[units]]\nname = \"getty@.service\"\nenabled = true\n\
                [[units]]\nname = \"getty@ttyS1.service\"\nenabled = true\n\
                [[units]]\nname = \"hello.service\"\nenabled = true\ncontents = \"[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\nRequiredBy=x.target\\n\"\n";
    let ours = scratch()?;
    let (_, errors) = ours.apply(text);
    assert!(errors.is_empty(), "{errors:?}");
    let theirs = scratch()?;
    write(
        &theirs.sys.root,
        "etc/systemd/system/hello.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nRequiredBy=x.target\n",
    )?;
    let out = std::process::Command::new(host_tools::path_of("systemctl"))
        .arg(format!("--root={}", theirs.sys.root.display()))
        .args([
            "enable",
            "image.service",
            "getty@.service",
            "getty@ttyS1.service",
            "hello.service",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links = |s: &Scratch| -> Vec<(PathBuf, String)> {
        snapshot(&s.sys.root.join("etc/systemd/system"))
            .into_iter()
            .filter_map(|e| {
                let t = std::fs::read_link(&e.0).ok()?;
                Some((
                    e.0.strip_prefix(&s.sys.root).ok()?.to_path_buf(),
                    t.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    };
    assert_eq!(links(&ours), links(&theirs));
    // And disabling removes what `systemctl disable` removes.
    let (_, errors) = ours.apply("[[units]]\nname = \"timesync.service\"\nenabled = false\n");
    assert!(errors.is_empty(), "{errors:?}");
    let out = std::process::Command::new(host_tools::path_of("systemctl"))
        .arg(format!("--root={}", theirs.sys.root.display()))
        .args([
            "disable",
            "timesync.service",
            "image.service",
            "getty@.service",
            "getty@ttyS1.service",
            "hello.service",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(theirs.p(&format!("{SD}/hello.service")))?;
    assert_eq!(links(&ours), links(&theirs));
    Ok(())
}

/// The real systemd-networkd parses every file we render without a
/// complaint: it runs in its own network, mount and (unless root) user
/// namespace, sees only our files, and logs each bad line as
/// `<file>:<line>: ...`.
#[test]
fn networkd_accepts_the_rendered_files() -> Result<()> {
    let networkd = Path::new("/usr/lib/systemd/systemd-networkd");
    if !networkd.exists() {
        host_tools::unavailable("no /usr/lib/systemd/systemd-networkd (Debian package systemd)");
        return Ok(());
    }
    if !host_tools::require(&[("unshare", "util-linux"), ("timeout", "coreutils")]) {
        return Ok(());
    }
    let configs = [
        host_config::config::EXAMPLE.to_string(),
        A.to_string(),
        "[[network.interfaces]]\nname = \"en*\"\nmac = \"52:54:00:12:34:56\"\ndhcp = \"ipv6\"\naddresses = [\"10.0.0.5/24\", \"fd00::5/64\"]\ngateway = [\"10.0.0.1\", \"fe80::1\"]\ndns = [\"10.0.0.1\", \"fd00::53\"]\nmtu = 9000\nroutes = [{ destination = \"0.0.0.0/0\", gateway = \"10.0.0.254\", metric = 50 }, { destination = \"fd01::/48\" }]\n\
         [[network.bonds]]\nname = \"bond1\"\nmode = \"balance-alb\"\nmembers = [\"eth[23]\"]\nmtu = 1400\n".to_string(),
    ];
    let dir = tempfile::tempdir()?;
    let mut names = Vec::new();
    // One networkd run per config: they reuse device names.
    for (i, text) in configs.iter().enumerate() {
        let cfg = HostConfig::parse_strict(text, "t").unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir(&sub)?;
        for (name, body) in render::network_files(&cfg.network) {
            std::fs::write(sub.join(&name), body)?;
            names.push(sub.join(name));
        }
    }
    let script = format!(
        "set -e\n\
         mount -t tmpfs -o mode=755 tmpfs /run\n\
         for d in /etc/systemd/network /usr/lib/systemd/network /usr/local/lib/systemd/network; do if [ -d $d ]; then mount -t tmpfs tmpfs $d; fi; done\n\
         mkdir -p /run/systemd/network\n\
         for c in \"$1\"/*; do\n\
           rm -f /run/systemd/network/*\n\
           cp \"$c\"/* /run/systemd/network/\n\
           SYSTEMD_LOG_LEVEL=debug SYSTEMD_LOG_TARGET=console timeout -s INT 2 {} 2>&1 || true\n\
         done\n",
        networkd.display()
    );
    let mut cmd = std::process::Command::new(host_tools::path_of("unshare"));
    // Root owns /proc/self when we run as root.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        cmd.arg("--map-root-user");
    }
    cmd.args([
        "--net",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(dir.path());
    let out = cmd.output()?;
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !log.contains("Enumeration completed") {
        host_tools::unavailable(&format!(
            "cannot run systemd-networkd in namespaces: {}",
            log.trim()
        ));
        return Ok(());
    }
    let complaints: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("/run/systemd/network/"))
        .collect();
    assert!(
        complaints.is_empty(),
        "networkd complained:\n{}",
        complaints.join("\n")
    );
    // It did read them: every netdev was loaded.
    for n in names
        .iter()
        .filter(|n| n.extension().is_some_and(|e| e == "netdev"))
    {
        let body = std::fs::read_to_string(n)?;
        let dev = body
            .lines()
            .find_map(|l| l.strip_prefix("Name="))
            .unwrap_or_default();
        let kind = body
            .lines()
            .find_map(|l| l.strip_prefix("Kind="))
            .unwrap_or_default();
        assert!(
            log.contains(&format!("{dev}: loaded \"{kind}\"")),
            "{}:\n{log}",
            n.display()
        );
    }
    Ok(())
}
