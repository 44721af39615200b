//! The order, the board's list, "present but broken is an error" and the
//! signature rule for the local sources. The network sources are tested
//! against servers in `tests_fetch`.

use std::path::Path;

use release_manifest::KeyPair;

use super::*;

const FW: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config";

fn write(root: &Path, rel: &str, text: impl AsRef<[u8]>) -> std::io::Result<()> {
    let p = root.join(rel);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(p, text)
}

fn hostname(l: &Loaded) -> Option<String> {
    l.config.as_ref().ok().and_then(|c| c.hostname.clone())
}

fn error(l: &Loaded) -> String {
    l.config
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[test]
fn fw_cfg_wins_over_oem() -> std::io::Result<()> {
    let d = tempfile::tempdir()?;
    let s = Sources::at(d.path());
    let l = s.load();
    assert_eq!((l.source.as_str(), l.kind), ("none", None));
    assert_eq!(l.config, Ok(HostConfig::default()));
    assert_eq!(l.signature, SignatureState::NoConfig);
    assert_eq!(
        l.skipped
            .iter()
            .map(|s| s.split(':').next().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["fw_cfg", "url", "ec2", "gce", "openstack", "azure", "oem"]
    );

    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n")?;
    let l = s.load();
    assert_eq!(
        (l.source.as_str(), l.kind),
        ("/oem/config.toml", Some(Kind::Oem))
    );
    assert_eq!(hostname(&l), Some("oem".into()));
    assert_eq!(l.signature, SignatureState::Unsigned);

    write(d.path(), &format!("{FW}/raw"), "hostname = \"fw\"\n")?;
    let l = s.load();
    assert_eq!(
        (l.source.as_str(), l.kind),
        ("fw_cfg opt/cairn/config", Some(Kind::FwCfg))
    );
    assert_eq!(hostname(&l), Some("fw".into()));
    assert!(l.skipped.is_empty(), "{:?}", l.skipped);
    Ok(())
}

#[test]
fn a_present_but_broken_source_is_an_error_not_skipped() -> std::io::Result<()> {
    let d = tempfile::tempdir()?;
    let s = Sources::at(d.path());
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n")?;
    // Invalid config in fw_cfg: the error, not the OEM's config.
    write(d.path(), &format!("{FW}/raw"), "bogus = 1\n")?;
    let l = s.load();
    assert_eq!(l.kind, Some(Kind::FwCfg));
    // (The list of known keys grows with the schema.)
    assert!(
        error(&l).starts_with("fw_cfg opt/cairn/config: bogus: unknown key (known: hostname,"),
        "{}",
        error(&l)
    );
    // Unreadable (a directory where the blob should be).
    std::fs::remove_file(d.path().join(FW).join("raw"))?;
    std::fs::create_dir_all(d.path().join(FW).join("raw"))?;
    let l = s.load();
    assert_eq!(l.kind, Some(Kind::FwCfg));
    assert!(
        error(&l).starts_with("fw_cfg opt/cairn/config: cannot read"),
        "{}",
        error(&l)
    );
    // Not UTF-8.
    std::fs::remove_dir(d.path().join(FW).join("raw"))?;
    write(d.path(), &format!("{FW}/raw"), [0xff, 0xfe])?;
    assert_eq!(error(&s.load()), "fw_cfg opt/cairn/config: not UTF-8");
    // A bad command-line URL is the url source's error.
    std::fs::remove_file(d.path().join(FW).join("raw"))?;
    write(
        d.path(),
        "proc/cmdline",
        "quiet cairn.config.url=ftp://x/c.toml\n",
    )?;
    let l = s.load();
    assert_eq!(l.kind, Some(Kind::Url));
    assert!(
        error(&l).contains("is not an http:// or https:// URL"),
        "{}",
        error(&l)
    );
    Ok(())
}

#[test]
fn source_list_file() {
    assert_eq!(parse_order("oem\n"), Ok(vec![Kind::Oem]));
    assert_eq!(
        parse_order("# this board\nfw_cfg\n\n ec2 \noem\n"),
        Ok(vec![Kind::FwCfg, Kind::Ec2, Kind::Oem])
    );
    assert_eq!(parse_order(""), Ok(vec![]));
    assert!(
        parse_order("oem\nfloppy\n")
            .unwrap_err()
            .contains("unknown source \"floppy\"")
    );
    assert!(parse_order("oem\noem\n").unwrap_err().contains("twice"));
    for k in Kind::DEFAULT_ORDER {
        assert_eq!(Kind::parse(k.name()), Some(k));
    }
}

#[test]
fn the_board_narrows_and_orders_the_sources() -> std::io::Result<()> {
    let d = tempfile::tempdir()?;
    let s = Sources::at(d.path());
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n")?;
    write(d.path(), &format!("{FW}/raw"), "hostname = \"fw\"\n")?;
    // fw_cfg left out: never read, even though it is there.
    write(d.path(), board_files::CONFIG_SOURCES, "ec2\noem\n")?;
    let l = s.load();
    assert_eq!(hostname(&l), Some("oem".into()));
    assert_eq!(l.skipped.len(), 1, "{:?}", l.skipped);
    assert!(
        l.skipped[0].starts_with("ec2: DMI does not say EC2"),
        "{:?}",
        l.skipped
    );
    // The board's order.
    write(d.path(), board_files::CONFIG_SOURCES, "oem\nfw_cfg\n")?;
    assert_eq!(hostname(&s.load()), Some("oem".into()));
    // No source at all: the defaults.
    write(d.path(), board_files::CONFIG_SOURCES, "")?;
    let l = s.load();
    assert_eq!(
        (l.source.as_str(), l.config.clone()),
        ("none", Ok(HostConfig::default()))
    );
    // A broken list is an error.
    write(d.path(), board_files::CONFIG_SOURCES, "oem\ncdrom\n")?;
    let l = s.load();
    assert_eq!(l.source, "board source list");
    assert!(
        error(&l).contains("usr/lib/cairn/config-sources: unknown source \"cdrom\""),
        "{}",
        error(&l)
    );
    Ok(())
}

#[test]
fn signatures_on_the_oem_partition() -> std::io::Result<()> {
    let d = tempfile::tempdir()?;
    let s = Sources::at(d.path());
    let key = KeyPair::from_seed([3; 32]);
    let config = "hostname = \"signed\"\n";
    write(d.path(), "oem/config.toml", config)?;

    // Not required: unsigned is applied.
    assert_eq!(s.load().signature, SignatureState::Unsigned);
    assert_eq!(hostname(&s.load()), Some("signed".into()));

    // Required, missing: an error, nothing applied.
    write(d.path(), board_files::CONFIG_KEYS, key.public().to_line())?;
    let l = s.load();
    assert_eq!(l.signature, SignatureState::Missing);
    assert_eq!(l.source, "/oem/config.toml");
    assert!(
        error(&l).starts_with("/oem/config.toml: not signed, and this image requires"),
        "{}",
        error(&l)
    );

    // Required, good.
    write(
        d.path(),
        "oem/config.toml.sig",
        signature::sign_detached(config.as_bytes(), &key),
    )?;
    let l = s.load();
    assert_eq!(
        l.signature,
        SignatureState::Verified {
            keyid: key.key_id()
        }
    );
    assert_eq!(hostname(&l), Some("signed".into()));

    // Required, bad: the config was changed after signing.
    write(d.path(), "oem/config.toml", "hostname = \"evil\"\n")?;
    let l = s.load();
    assert!(
        matches!(l.signature, SignatureState::Bad(_)),
        "{:?}",
        l.signature
    );
    assert!(
        error(&l).starts_with("/oem/config.toml: signature: the signatures by trusted keys"),
        "{}",
        error(&l)
    );

    // Embedded works on the OEM partition too.
    std::fs::remove_file(d.path().join("oem/config.toml.sig"))?;
    write(
        d.path(),
        "oem/config.toml",
        signature::sign_embedded(config.as_bytes(), &key),
    )?;
    let l = s.load();
    assert_eq!(
        l.signature,
        SignatureState::Verified {
            keyid: key.key_id()
        }
    );
    assert_eq!(hostname(&l), Some("signed".into()));

    // A broken key file is an error whether or not a config is found.
    write(
        d.path(),
        board_files::CONFIG_KEYS,
        "cairn-ed25519-public nothex\n",
    )?;
    let l = s.load();
    assert!(
        error(&l).contains("usr/lib/cairn/config-keys: line 1: invalid public key"),
        "{}",
        error(&l)
    );
    std::fs::remove_file(d.path().join("oem/config.toml"))?;
    let l = s.load();
    assert_eq!(l.source, "none");
    assert!(error(&l).contains("config-keys"), "{}", error(&l));
    Ok(())
}

#[test]
fn fw_cfg_detached_signature() -> std::io::Result<()> {
    let d = tempfile::tempdir()?;
    let key = KeyPair::from_seed([4; 32]);
    let config = "hostname = \"fw\"\n";
    write(d.path(), &format!("{FW}/raw"), config)?;
    write(d.path(), board_files::CONFIG_KEYS, key.public().to_line())?;
    write(
        d.path(),
        &format!("sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_SIG_NAME}/raw"),
        signature::sign_detached(config.as_bytes(), &key),
    )?;
    let l = Sources::at(d.path()).load();
    assert_eq!(
        l.signature,
        SignatureState::Verified {
            keyid: key.key_id()
        }
    );
    assert_eq!(hostname(&l), Some("fw".into()));
    Ok(())
}

#[test]
fn whether_the_boot_needs_the_network() -> std::io::Result<()> {
    let d = tempfile::tempdir()?;
    let s = Sources::at(d.path());
    let dmi = |vendor: &str, chassis: &str| -> std::io::Result<()> {
        write(d.path(), "sys/class/dmi/id/sys_vendor", vendor)?;
        write(d.path(), "sys/class/dmi/id/chassis_asset_tag", chassis)
    };
    // Bare metal, nothing: no.
    dmi("Dell Inc.", "")?;
    assert!(!s.needs_network());
    // A URL on the command line: yes, unless fw_cfg comes first.
    write(
        d.path(),
        "proc/cmdline",
        "cairn.config.url=http://10.0.0.1/a.toml\n",
    )?;
    assert_eq!(
        s.network_reason().as_deref(),
        Some("cairn.config.url = http://10.0.0.1/a.toml")
    );
    write(d.path(), &format!("{FW}/raw"), "")?;
    assert!(!s.needs_network());
    std::fs::remove_file(d.path().join(FW).join("raw"))?;
    std::fs::remove_file(d.path().join("proc/cmdline"))?;
    // On EC2: yes, unless the board leaves EC2 out.
    dmi("Amazon EC2", "")?;
    assert!(s.needs_network());
    assert_eq!(
        s.network_reason().as_deref(),
        Some("EC2 (DMI): its metadata service")
    );
    write(d.path(), board_files::CONFIG_SOURCES, "fw_cfg\noem\n")?;
    assert!(!s.needs_network());
    std::fs::remove_file(d.path().join(board_files::CONFIG_SOURCES))?;
    // On OpenStack: only without a config drive.
    dmi("OpenStack Foundation", "")?;
    assert!(s.needs_network());
    std::fs::create_dir_all(d.path().join("dev/disk/by-label"))?;
    std::os::unix::fs::symlink("../../sr0", d.path().join("dev/disk/by-label/config-2"))?;
    assert!(!s.needs_network());
    // On Azure: always (the ready report).
    dmi("Microsoft Corporation", dmi::AZURE_CHASSIS_ASSET_TAG)?;
    write(d.path(), "oem/config.toml", "")?;
    assert!(s.needs_network());
    Ok(())
}
