//! The network sources against servers on loopback that speak each
//! provider's documented API, and what the search does when they are
//! absent, slow or broken.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use release_manifest::KeyPair;

use super::testserver::{Req, Resp, Server, closed_port};
use super::*;

const CONFIG: &str = "hostname = \"cloud\"\n";

fn fast() -> Timing {
    Timing {
        link_local_connect: Duration::from_millis(500),
        link_local_request: Duration::from_millis(800),
        cloud_budget: Duration::from_millis(2000),
        url_connect: Duration::from_millis(500),
        url_request: Duration::from_millis(800),
        url_budget: Duration::from_millis(2000),
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

fn write(root: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap_or(root)).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// A scratch root on `platform` (DMI strings as that cloud sets them), with
/// every endpoint at `base`.
fn root_on(platform: Option<Platform>, base: &str) -> (tempfile::TempDir, Sources) {
    let d = tempfile::tempdir().expect("tempdir");
    let (vendor, product, chassis) = match platform {
        Some(Platform::Ec2) => ("Amazon EC2", "m6i.large", "Amazon EC2"),
        Some(Platform::Gce) => ("Google", "Google Compute Engine", ""),
        Some(Platform::Azure) => (
            "Microsoft Corporation",
            "Virtual Machine",
            dmi::AZURE_CHASSIS_ASSET_TAG,
        ),
        Some(Platform::OpenStack) => ("OpenStack Foundation", "OpenStack Nova", ""),
        None => ("QEMU", "Standard PC (Q35 + ICH9, 2009)", ""),
    };
    for (f, v) in [
        ("sys_vendor", vendor),
        ("product_name", product),
        ("chassis_asset_tag", chassis),
    ] {
        write(d.path(), &format!("{}/{f}", dmi::DMI_DIR), format!("{v}\n"));
    }
    let mut s = Sources::at(d.path());
    s.timing = fast();
    s.endpoints = Endpoints {
        ec2: base.into(),
        gce: base.into(),
        openstack: base.into(),
        azure_imds: base.into(),
        azure_wireserver: base.into(),
    };
    (d, s)
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

/// EC2's IMDSv2 as documented: a token from PUT, required on GET.
fn ec2_server(user_data: Option<Vec<u8>>) -> Server {
    Server::start(move |r: &Req| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token") => match r.header("x-aws-ec2-metadata-token-ttl-seconds") {
            Some(ttl) if ttl.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) => {
                Resp::new(200, "AQAEAtoken==")
            }
            _ => Resp::new(400, "missing ttl"),
        },
        ("GET", "/latest/user-data") => match r.header("x-aws-ec2-metadata-token") {
            Some("AQAEAtoken==") => match &user_data {
                Some(u) => Resp::new(200, u.clone()),
                None => Resp::new(404, "not found"),
            },
            _ => Resp::new(401, "unauthorized"),
        },
        _ => Resp::new(404, ""),
    })
}

#[test]
fn ec2_token_flow() {
    let srv = ec2_server(Some(CONFIG.into()));
    let (_d, s) = root_on(Some(Platform::Ec2), &srv.base);
    let l = s.load();
    assert_eq!(
        (l.source.as_str(), l.kind),
        ("ec2 user-data", Some(Kind::Ec2))
    );
    assert_eq!(l.platform, Some(Platform::Ec2));
    assert_eq!(hostname(&l), Some("cloud".into()));
    let reqs = srv.requests();
    let seen: Vec<(&str, &str)> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [("PUT", "/latest/api/token"), ("GET", "/latest/user-data")]
    );
}

#[test]
fn ec2_without_user_data_falls_through_to_oem() {
    let srv = ec2_server(None);
    let (d, s) = root_on(Some(Platform::Ec2), &srv.base);
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n");
    let l = s.load();
    assert_eq!(l.source, "/oem/config.toml");
    assert_eq!(hostname(&l), Some("oem".into()));
    assert!(
        l.skipped
            .contains(&"ec2: the EC2 instance has no user-data".to_string()),
        "{:?}",
        l.skipped
    );
}

#[test]
fn ec2_broken_user_data_is_an_error_not_skipped() {
    let srv = ec2_server(Some(b"hostname = 5\n".to_vec()));
    let (d, s) = root_on(Some(Platform::Ec2), &srv.base);
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n");
    let l = s.load();
    assert_eq!(l.kind, Some(Kind::Ec2));
    assert!(
        error(&l).starts_with("ec2 user-data: hostname:"),
        "{}",
        error(&l)
    );
}

#[test]
fn a_cloud_that_does_not_answer_is_an_error_within_the_budget() {
    let (d, s) = root_on(Some(Platform::Ec2), &closed_port());
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n");
    let t = Instant::now();
    let l = s.load();
    let took = t.elapsed();
    assert_eq!(l.kind, Some(Kind::Ec2));
    assert!(
        error(&l).starts_with("ec2 user-data: IMDSv2 token: http://127.0.0.1:"),
        "{}",
        error(&l)
    );
    assert!(error(&l).contains("attempts in"), "{}", error(&l));
    assert!(took < Duration::from_millis(3500), "{took:?}");
}

#[test]
fn a_slow_metadata_service_times_out() {
    let srv = Server::start(|_: &Req| Resp::new(200, "late").delay(Duration::from_secs(5)));
    let (_d, s) = root_on(Some(Platform::Gce), &srv.base);
    let t = Instant::now();
    let l = s.load();
    let took = t.elapsed();
    assert_eq!(l.kind, Some(Kind::Gce));
    assert!(error(&l).contains("timed out"), "{}", error(&l));
    // Each attempt is cut at the request timeout; all of them at the budget.
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert!(
        srv.requests().len() >= 2,
        "retried: {}",
        srv.requests().len()
    );
}

#[test]
fn transient_server_errors_are_retried() {
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    let srv = Server::start(move |r: &Req| {
        if r.path == "/openstack/latest/user_data" && count.fetch_add(1, Ordering::SeqCst) < 2 {
            Resp::new(503, "busy")
        } else {
            Resp::new(200, CONFIG)
        }
    });
    let (_d, s) = root_on(Some(Platform::OpenStack), &srv.base);
    let l = s.load();
    assert_eq!(l.source, "openstack metadata user_data");
    assert_eq!(hostname(&l), Some("cloud".into()));
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[test]
fn a_host_on_no_cloud_never_asks_a_metadata_service() {
    let srv = Server::start(|_: &Req| Resp::new(200, CONFIG));
    let (d, s) = root_on(None, &srv.base);
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n");
    let t = Instant::now();
    let l = s.load();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(hostname(&l), Some("oem".into()));
    assert!(srv.requests().is_empty(), "{:?}", srv.requests());
    for (name, why) in [
        ("ec2", "DMI does not say EC2"),
        ("gce", "DMI does not say GCE"),
        ("azure", "DMI does not say Azure"),
        (
            "openstack",
            "no filesystem labelled config-2, and DMI does not say OpenStack",
        ),
    ] {
        let line = format!("{name}: {why}");
        assert!(
            l.skipped.iter().any(|s| s.starts_with(&line)),
            "{line} in {:?}",
            l.skipped
        );
    }
}

#[test]
fn fw_cfg_comes_before_the_cloud() {
    let srv = ec2_server(Some(CONFIG.into()));
    let (d, s) = root_on(Some(Platform::Ec2), &srv.base);
    write(
        d.path(),
        "sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config/raw",
        "hostname = \"fw\"\n",
    );
    assert_eq!(hostname(&s.load()), Some("fw".into()));
    assert!(srv.requests().is_empty());
}

#[test]
fn gce_metadata_server() {
    let srv = Server::start(|r: &Req| {
        if r.header("metadata-flavor") != Some("Google") {
            return Resp::new(403, "missing Metadata-Flavor").header("Metadata-Flavor", "Google");
        }
        match r.path.as_str() {
            "/computeMetadata/v1/instance/attributes/user-data" => {
                Resp::new(200, CONFIG).header("Metadata-Flavor", "Google")
            }
            _ => Resp::new(404, "").header("Metadata-Flavor", "Google"),
        }
    });
    let (_d, s) = root_on(Some(Platform::Gce), &srv.base);
    let l = s.load();
    assert_eq!(l.source, "gce user-data");
    assert_eq!(hostname(&l), Some("cloud".into()));

    // No user-data attribute: 404, absent.
    let srv = Server::start(|_: &Req| Resp::new(404, "").header("Metadata-Flavor", "Google"));
    let (_d, s) = root_on(Some(Platform::Gce), &srv.base);
    let l = s.load();
    assert_eq!(l.source, "none");
    assert!(
        l.skipped
            .contains(&"gce: the GCE instance has no user-data attribute".into()),
        "{:?}",
        l.skipped
    );

    // Something else answering on the address.
    let srv = Server::start(|_: &Req| Resp::new(200, CONFIG));
    let (_d, s) = root_on(Some(Platform::Gce), &srv.base);
    assert!(error(&s.load()).contains("not GCE's metadata server"));
}

#[test]
fn openstack_config_drive_comes_before_the_metadata_service() {
    let srv = Server::start(|_: &Req| Resp::new(200, "hostname = \"metadata\"\n"));
    let (d, s) = root_on(Some(Platform::OpenStack), &srv.base);
    write(d.path(), "dev/sr0/openstack/latest/user_data", CONFIG);
    std::fs::create_dir_all(d.path().join(configdrive::BY_LABEL)).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../sr0",
        d.path().join(configdrive::BY_LABEL).join("config-2"),
    )
    .expect("symlink");
    write(
        d.path(),
        configdrive::PROC_MOUNTS,
        "/dev/sr0 /dev/sr0 iso9660 ro 0 0\n",
    );
    let l = s.load();
    assert_eq!(l.source, "openstack config drive /dev/sr0");
    assert_eq!(hostname(&l), Some("cloud".into()));
    assert!(srv.requests().is_empty());

    // A drive without user data: none, and the service is not asked.
    std::fs::remove_file(d.path().join("dev/sr0/openstack/latest/user_data")).expect("rm");
    let l = s.load();
    assert_eq!(l.source, "none");
    assert!(srv.requests().is_empty());

    // The metadata service without user data: 404.
    let srv = Server::start(|_: &Req| Resp::new(404, ""));
    let (_d, s) = root_on(Some(Platform::OpenStack), &srv.base);
    let l = s.load();
    assert_eq!(l.source, "none");
    assert_eq!(srv.requests()[0].path, "/openstack/latest/user_data");
}

fn azure_imds(user_data: &'static str) -> Server {
    Server::start(move |r: &Req| {
        if r.header("metadata") != Some("true") {
            return Resp::new(
                400,
                "{\"error\":\"Bad request. Required metadata header not specified\"}",
            );
        }
        if r.path == "/metadata/instance/compute/userData?api-version=2021-01-01&format=text" {
            Resp::new(200, user_data)
        } else {
            Resp::new(404, "")
        }
    })
}

#[test]
fn azure_user_data() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(CONFIG);
    let encoded: &'static str = Box::leak(encoded.into_boxed_str());
    let srv = azure_imds(encoded);
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    let l = s.load();
    assert_eq!(l.source, "azure userData");
    assert_eq!(hostname(&l), Some("cloud".into()));

    // None set: an empty answer.
    let srv = azure_imds("");
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    let l = s.load();
    assert_eq!(l.source, "none");
    assert!(
        l.skipped
            .contains(&"azure: the Azure VM has no userData".into()),
        "{:?}",
        l.skipped
    );

    let srv = azure_imds("not base64!");
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    assert!(error(&s.load()).starts_with("azure userData: userData is not base64"));
}

const GOAL_STATE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2012-11-30</Version>
  <Incarnation>3</Incarnation>
  <Machine>
    <ExpectedState>Started</ExpectedState>
    <StopRolesDeadlineHint>300000</StopRolesDeadlineHint>
    <ExpectHealthReport>FALSE</ExpectHealthReport>
  </Machine>
  <Container>
    <ContainerId>f5940043-dbed-419c-9122-d77a4ac854b7</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>79247837105c4470b89352eda4b10942._cairn</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/x?comp=config&amp;type=hostingEnvironmentConfig&amp;incarnation=3</HostingEnvironmentConfig>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>
"#;

#[test]
fn azure_ready_report() {
    let srv = Server::start(|r: &Req| {
        let versioned = r.header("x-ms-version") == Some("2012-11-30")
            && r.header("x-ms-agent-name").is_some_and(|a| !a.is_empty());
        if !versioned {
            return Resp::new(400, "no x-ms-version");
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/machine/?comp=goalstate") => Resp::new(200, GOAL_STATE),
            ("POST", "/machine?comp=health") => Resp::new(200, ""),
            _ => Resp::new(404, ""),
        }
    });
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    let done = s.report_ready_to_azure();
    assert_eq!(
        done,
        Ok(
            "reported Ready to Azure (container f5940043-dbed-419c-9122-d77a4ac854b7, \
            instance 79247837105c4470b89352eda4b10942._cairn, incarnation 3)"
                .into()
        )
    );
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let post = &reqs[1];
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/machine?comp=health")
    );
    assert_eq!(post.header("content-type"), Some("text/xml; charset=utf-8"));
    let body = String::from_utf8(post.body.clone()).expect("UTF-8");
    assert!(
        body.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?><Health "),
        "{body}"
    );
    for part in [
        "<GoalStateIncarnation>3</GoalStateIncarnation>",
        "<ContainerId>f5940043-dbed-419c-9122-d77a4ac854b7</ContainerId>",
        "<RoleInstanceList><Role><InstanceId>79247837105c4470b89352eda4b10942._cairn</InstanceId>",
        "<Health><State>Ready</State></Health>",
    ] {
        assert!(body.contains(part), "{part} in {body}");
    }
}

#[test]
fn azure_ready_report_failures() {
    // The WireServer refuses the report.
    let srv = Server::start(|r: &Req| match r.method.as_str() {
        "GET" => Resp::new(200, GOAL_STATE),
        _ => Resp::new(400, "bad health document"),
    });
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    let e = s.report_ready_to_azure().unwrap_err();
    assert!(e.ends_with("/machine?comp=health: HTTP status 400"), "{e}");
    // A goal state without a role instance.
    let srv = Server::start(|_: &Req| {
        Resp::new(
            200,
            "<GoalState><Incarnation>1</Incarnation><Container><ContainerId>c</ContainerId><RoleInstanceList></RoleInstanceList></Container></GoalState>",
        )
    });
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    assert!(
        s.report_ready_to_azure()
            .unwrap_err()
            .contains("no <InstanceId>")
    );
    // An identifier that would inject XML.
    let evil = GOAL_STATE.replace("<ContainerId>f5940043", "<ContainerId>&lt;x");
    let evil: &'static str = Box::leak(evil.into_boxed_str());
    let srv = Server::start(move |_: &Req| Resp::new(200, evil));
    let (_d, s) = root_on(Some(Platform::Azure), &srv.base);
    assert!(
        s.report_ready_to_azure()
            .unwrap_err()
            .contains("not an identifier")
    );
    // Nobody there.
    let (_d, s) = root_on(Some(Platform::Azure), &closed_port());
    let t = Instant::now();
    assert!(s.report_ready_to_azure().is_err());
    assert!(t.elapsed() < Duration::from_millis(3500));
}

fn url_server(config: &'static str, sig: Option<Vec<u8>>) -> Server {
    Server::start(move |r: &Req| match r.path.as_str() {
        "/hosts/a.toml" => Resp::new(200, config),
        "/hosts/a.toml.sig" => match &sig {
            Some(s) => Resp::new(200, s.clone()),
            None => Resp::new(404, ""),
        },
        _ => Resp::new(404, ""),
    })
}

#[test]
fn command_line_url() {
    let srv = url_server(CONFIG, None);
    let (d, s) = root_on(None, &closed_port());
    let url = format!("{}/hosts/a.toml", srv.base);
    write(
        d.path(),
        "proc/cmdline",
        format!("quiet cairn.config.url={url}\n"),
    );
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n");
    let l = s.load();
    assert_eq!(l.source, format!("cairn.config.url {url}"));
    assert_eq!(
        (l.kind, hostname(&l)),
        (Some(Kind::Url), Some("cloud".into()))
    );
    assert_eq!(l.signature, SignatureState::Unsigned);
    let paths: Vec<String> = srv.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/hosts/a.toml", "/hosts/a.toml.sig"]);

    // Signature required: the .sig beside it.
    let key = KeyPair::from_seed([9; 32]);
    write(
        d.path(),
        disk_layout::board_files::CONFIG_KEYS,
        key.public().to_line(),
    );
    let l = s.load();
    assert_eq!(l.signature, SignatureState::Missing);
    assert!(l.config.is_err());
    let srv = url_server(
        CONFIG,
        Some(signature::sign_detached(CONFIG.as_bytes(), &key)),
    );
    let url = format!("{}/hosts/a.toml", srv.base);
    write(
        d.path(),
        "proc/cmdline",
        format!("cairn.config.url={url}\n"),
    );
    let l = s.load();
    assert_eq!(
        l.signature,
        SignatureState::Verified {
            keyid: key.key_id()
        }
    );
    assert_eq!(hostname(&l), Some("cloud".into()));
    let srv = url_server(CONFIG, Some(signature::sign_detached(b"other", &key)));
    write(
        d.path(),
        "proc/cmdline",
        format!("cairn.config.url={}/hosts/a.toml\n", srv.base),
    );
    assert!(matches!(s.load().signature, SignatureState::Bad(_)));
}

#[test]
fn command_line_url_errors_are_not_skipped() {
    let srv = url_server(CONFIG, None);
    let (d, s) = root_on(None, &closed_port());
    write(d.path(), "oem/config.toml", "hostname = \"oem\"\n");
    // 404: the operator asked for this URL.
    write(
        d.path(),
        "proc/cmdline",
        format!("cairn.config.url={}/hosts/b.toml\n", srv.base),
    );
    let l = s.load();
    assert_eq!(l.kind, Some(Kind::Url));
    assert!(
        error(&l).ends_with("/hosts/b.toml: HTTP status 404"),
        "{}",
        error(&l)
    );
    // Nobody listening.
    write(
        d.path(),
        "proc/cmdline",
        format!("cairn.config.url={}/c.toml\n", closed_port()),
    );
    let t = Instant::now();
    let l = s.load();
    assert_eq!(l.kind, Some(Kind::Url));
    assert!(t.elapsed() < Duration::from_millis(3500));
    // A broken .sig (not 404) is an error too.
    let srv = Server::start(|r: &Req| match r.path.as_str() {
        "/a.toml" => Resp::new(200, CONFIG),
        _ => Resp::new(403, ""),
    });
    write(
        d.path(),
        "proc/cmdline",
        format!("cairn.config.url={}/a.toml\n", srv.base),
    );
    let e = error(&s.load());
    assert!(e.ends_with("/a.toml.sig: HTTP status 403"), "{e}");
}

#[test]
fn signed_cloud_user_data() {
    let key = KeyPair::from_seed([5; 32]);
    let srv = ec2_server(Some(signature::sign_embedded(CONFIG.as_bytes(), &key)));
    let (d, s) = root_on(Some(Platform::Ec2), &srv.base);
    write(
        d.path(),
        disk_layout::board_files::CONFIG_KEYS,
        key.public().to_line(),
    );
    let l = s.load();
    assert_eq!(
        l.signature,
        SignatureState::Verified {
            keyid: key.key_id()
        }
    );
    assert_eq!(hostname(&l), Some("cloud".into()));
    // Unsigned user data on an image that requires signatures.
    let srv = ec2_server(Some(CONFIG.into()));
    let mut s = s;
    s.endpoints.ec2 = srv.base.clone();
    let l = s.load();
    assert_eq!(l.signature, SignatureState::Missing);
    assert!(
        error(&l).starts_with("ec2 user-data: not signed"),
        "{}",
        error(&l)
    );
}

#[test]
fn oversized_answers_are_refused() {
    let big = vec![b'#'; MAX_CONFIG_BYTES as usize + 10];
    let srv = Server::start(move |_: &Req| Resp::new(200, big.clone()));
    let (_d, s) = root_on(Some(Platform::OpenStack), &srv.base);
    let l = s.load();
    assert!(error(&l).contains("larger than"), "{}", error(&l));
    // Not retried: it would be as large again.
    assert_eq!(srv.requests().len(), 1);
}
