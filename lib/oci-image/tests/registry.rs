//! Pull from Debian's docker-registry on loopback (pushed to with skopeo),
//! the bearer-token flow, where credentials and tokens may go, signatures in
//! the registry, and tampered blobs.

mod common;

use common::*;
use oci_image::{
    Credentials, Error, KeyPair, PullOptions, Requirement, Store, TrustPolicy, push_signature, sign,
};

fn alice() -> PullOptions {
    PullOptions {
        auth: Some(Credentials {
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        ..PullOptions::default()
    }
}

/// No request in `log` carried the password (as Basic auth, or anywhere).
fn no_password(log: &ProxyLog) {
    for (line, auth) in log.lock().unwrap().iter() {
        let a = auth.as_deref().unwrap_or("");
        assert!(!a.starts_with("Basic"), "{line}: {a}");
        assert!(!line.contains("s3cret"), "{line}");
    }
}

const TOOLS: &[&str] = &["umoci", "skopeo", "docker-registry", "busybox"];

fn http_opts() -> PullOptions {
    PullOptions::default()
}

#[test]
fn pull_from_registry() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let reg = start_registry();
    let reference = format!("{}/cairn/hello:v1", reg.host());
    push(&img.layout, &reference);
    let want = registry_digest(&reference);

    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mut trust = TrustPolicy::new();
    trust
        .add(
            &format!("{}/cairn/", reg.host()),
            Requirement::AcceptAnything,
        )
        .unwrap();
    let image = store.pull(&reference, &http_opts(), &trust).unwrap();
    assert_eq!(image.digest, want);
    assert_eq!(image.name.as_deref(), Some(reference.as_str()));
    check_rootfs(&image.rootfs);
    assert_eq!(image.config.cmd, ["/bin/sh"]);
    // Every stored blob is named by its content.
    for e in std::fs::read_dir(root.path().join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(
            sha256_file(&p),
            format!("sha256:{}", p.file_name().unwrap().to_string_lossy())
        );
    }
    // By digest: same image, no new blobs needed.
    let pinned = format!("{}/cairn/hello@{want}", reg.host());
    assert_eq!(
        store.pull(&pinned, &http_opts(), &trust).unwrap().digest,
        want
    );
    // A pinned digest the registry does not match is refused.
    let wrong = format!("{}/cairn/hello@sha256:{}", reg.host(), "0".repeat(64));
    assert!(store.pull(&wrong, &http_opts(), &trust).is_err());
    // Unknown names are refused before any request.
    let e = store
        .pull(
            &format!("{}/elsewhere/x:1", reg.host()),
            &http_opts(),
            &TrustPolicy::new(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Untrusted { .. }), "{e}");
}

#[test]
fn registry_signatures() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let reg = start_registry();
    let host = reg.host();
    let key = KeyPair::from_seed([1; 32]);
    let stranger = KeyPair::from_seed([2; 32]);
    let app = format!("{host}/signed/app:v1");
    let other = format!("{host}/signed/other:v1");
    let unknown = format!("{host}/signed/unknown:v1");
    for r in [&app, &other, &unknown] {
        push(&img.layout, r);
    }
    let digest = registry_digest(&app);
    let mut trust = TrustPolicy::new();
    trust
        .add(
            &format!("{host}/signed"),
            Requirement::Signed(vec![key.public()]),
        )
        .unwrap();

    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    // No signature anywhere.
    let e = store.pull(&app, &http_opts(), &trust).unwrap_err();
    assert!(matches!(e, Error::SignatureRequired { .. }), "{e}");
    assert_store_empty(&store);

    // Signature pushed to the sha256-<hex>.sig tag.
    let sig = sign(&app, &digest, &key);
    push_signature(&app, &sig, &http_opts()).unwrap();
    let image = store.pull(&app, &http_opts(), &trust).unwrap();
    check_rootfs(&image.rootfs);
    assert_eq!(image.signatures, std::slice::from_ref(&sig));
    store.verify_trust(&image, &trust).unwrap();

    // The same (valid) signature replayed onto another repository of the same digest.
    push_signature(&other, &sig, &http_opts()).unwrap();
    let e = store.pull(&other, &http_opts(), &trust).unwrap_err();
    assert!(matches!(e, Error::SignatureRequired { .. }), "{e}");
    // A signature by a key the policy does not trust.
    push_signature(&unknown, &sign(&unknown, &digest, &stranger), &http_opts()).unwrap();
    let e = store.pull(&unknown, &http_opts(), &trust).unwrap_err();
    assert!(matches!(e, Error::SignatureRequired { .. }), "{e}");

    // --signature file: valid for `other`, and one for the wrong digest.
    let dir = tempfile::tempdir().unwrap();
    let wrong_digest = dir.path().join("wrong.sig");
    sign(&other, &format!("sha256:{}", "1".repeat(64)), &key)
        .write(&wrong_digest)
        .unwrap();
    let mut opts = http_opts();
    opts.signature = Some(wrong_digest);
    assert!(store.pull(&other, &opts, &trust).is_err());
    let good = dir.path().join("good.sig");
    sign(&other, &digest, &key).write(&good).unwrap();
    opts.signature = Some(good);
    store.pull(&other, &opts, &trust).unwrap();
}

#[test]
fn bearer_token_flow() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let reg = start_registry();
    push(&img.layout, &format!("{}/cairn/hello:v1", reg.host()));
    let (port, log) = start_proxy(reg.port, ProxyMode::Bearer);
    let reference = format!("127.0.0.1:{port}/cairn/hello:v1");
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let image = store.pull(&reference, &alice(), &accept_all()).unwrap();
    check_rootfs(&image.rootfs);

    let log = log.lock().unwrap().clone();
    let token_req = log
        .iter()
        .find(|(line, _)| line.starts_with("GET /token"))
        .expect("the token endpoint was asked");
    assert!(
        token_req.0.contains("service=cairn-test"),
        "{}",
        token_req.0
    );
    assert!(
        token_req
            .0
            .contains("scope=repository%3Acairn%2Fhello%3Apull"),
        "{}",
        token_req.0
    );
    // The registry is plain HTTP: the credentials stay home and the token
    // is an anonymous one (enough for this public image).
    assert_eq!(token_req.1, None, "credentials went over plain HTTP");
    let with_token = log
        .iter()
        .filter(|(_, a)| a.as_deref() == Some(&format!("Bearer {TOKEN}")))
        .count();
    // Manifest, config and the layer at least, all with the token.
    assert!(with_token >= 3, "{log:#?}");
    // Only the first request went without it (no token fetched per request).
    let unauthenticated = log
        .iter()
        .filter(|(line, a)| a.is_none() && line.contains("/v2/"))
        .count();
    assert_eq!(unauthenticated, 1, "{log:#?}");
}

#[test]
fn credentials_never_go_over_plain_http() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let reg = start_registry();
    push(&img.layout, &format!("{}/cairn/hello:v1", reg.host()));

    // A registry asking for Basic auth over HTTP: refused before sending it.
    let (port, log) = start_proxy(reg.port, ProxyMode::Basic);
    let reference = format!("127.0.0.1:{port}/cairn/hello:v1");
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let e = store.pull(&reference, &alice(), &accept_all()).unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(e.to_string().contains("HTTPS"), "{e}");
    no_password(&log);
    assert!(log.lock().unwrap().iter().all(|(_, a)| a.is_none()));
    assert_store_empty(&store);

    // A token realm on another host (and port), plain HTTP: asked for an
    // anonymous token, which pulls the public image.
    let (realm_port, realm_log) = start_proxy_on("127.0.0.2", reg.port, ProxyMode::Bearer);
    let (port, log) = start_proxy(reg.port, ProxyMode::BearerRealmAt(realm_port));
    let reference = format!("127.0.0.1:{port}/cairn/hello:v1");
    let image = store.pull(&reference, &alice(), &accept_all()).unwrap();
    check_rootfs(&image.rootfs);
    let realm_log = realm_log.lock().unwrap().clone();
    assert!(
        realm_log.iter().any(|(l, _)| l.starts_with("GET /token")),
        "{realm_log:#?}"
    );
    assert!(realm_log.iter().all(|(_, a)| a.is_none()), "{realm_log:#?}");
    no_password(&log);
}

#[test]
fn redirects_away_from_the_registry_carry_no_authorization() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let reg = start_registry();
    push(&img.layout, &format!("{}/cairn/hello:v1", reg.host()));

    // Blobs redirected to "storage" on another host: fetched there without
    // the registry's token.
    let (storage_port, storage_log) = start_proxy_on("127.0.0.2", reg.port, ProxyMode::Plain);
    let (port, log) = start_proxy(reg.port, ProxyMode::BearerRedirectBlobs(storage_port));
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let image = store
        .pull(
            &format!("127.0.0.1:{port}/cairn/hello:v1"),
            &alice(),
            &accept_all(),
        )
        .unwrap();
    check_rootfs(&image.rootfs);
    let storage_log = storage_log.lock().unwrap().clone();
    assert!(
        storage_log
            .iter()
            .any(|(l, _)| l.contains("/blobs/sha256:")),
        "{storage_log:#?}"
    );
    assert!(
        storage_log.iter().all(|(_, a)| a.is_none()),
        "the token followed the redirect: {storage_log:#?}"
    );
    // The registry itself got the token for the blob requests it redirected.
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().any(|(l, a)| l.contains("/blobs/sha256:")
            && a.as_deref() == Some(&format!("Bearer {TOKEN}"))),
        "{log:#?}"
    );

    // Storage that answers 401 with its own challenge: not answered, no
    // token is asked for on its say-so.
    let (storage_port, storage_log) = start_proxy_on("127.0.0.2", reg.port, ProxyMode::Bearer);
    let (port, _log) = start_proxy(reg.port, ProxyMode::BearerRedirectBlobs(storage_port));
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let e = store
        .pull(
            &format!("127.0.0.1:{port}/cairn/hello:v1"),
            &alice(),
            &accept_all(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e}");
    assert!(e.to_string().contains("redirect away"), "{e}");
    let storage_log = storage_log.lock().unwrap().clone();
    assert!(
        storage_log
            .iter()
            .all(|(l, a)| a.is_none() && !l.starts_with("GET /token")),
        "{storage_log:#?}"
    );
    assert_store_empty(&store);
}

#[test]
fn tampered_and_oversized_blobs_from_registry() {
    if !prerequisites(TOOLS) {
        return;
    }
    let img = build_image();
    let reg = start_registry();
    push(&img.layout, &format!("{}/cairn/hello:v1", reg.host()));
    for (mode, check) in [
        (ProxyMode::FlipBlobByte, "digest mismatch"),
        (ProxyMode::AppendToBlobs, "size mismatch"),
    ] {
        let (port, _log) = start_proxy(reg.port, mode);
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let e = store
            .pull(
                &format!("127.0.0.1:{port}/cairn/hello:v1"),
                &http_opts(),
                &accept_all(),
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(check), "{mode:?}: {msg}");
        assert_store_empty(&store);
    }
}

#[test]
fn multi_platform_index() {
    if !prerequisites(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let index_digest = write_multiarch_layout(&layout);
    let reg = start_registry();
    let reference = format!("{}/multi/app:v1", reg.host());
    run(std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{reference}")));
    assert_eq!(registry_digest(&reference), index_digest);

    let key = KeyPair::from_seed([3; 32]);
    let mut trust = TrustPolicy::new();
    trust
        .add(
            &format!("{}/multi/", reg.host()),
            Requirement::Signed(vec![key.public()]),
        )
        .unwrap();
    // One signature over the index covers every platform image it lists.
    push_signature(
        &reference,
        &sign(&reference, &index_digest, &key),
        &http_opts(),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    for arch in ["amd64", "arm64"] {
        let opts = PullOptions {
            platform: oci_image::Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: None,
            },
            ..http_opts()
        };
        let image = store.pull(&reference, &opts, &trust).unwrap();
        assert_ne!(
            image.digest, index_digest,
            "the platform manifest is stored"
        );
        assert_eq!(
            std::fs::read(image.rootfs.join("arch")).unwrap(),
            arch.as_bytes()
        );
        assert_eq!(image.config.cmd, [format!("/{arch}")]);
        store.verify_trust(&image, &trust).unwrap();
    }
    // The host's own platform is the default.
    let host = store.pull(&reference, &http_opts(), &trust).unwrap();
    let want = oci_image::Platform::host().architecture;
    assert_eq!(
        std::fs::read(host.rootfs.join("arch")).unwrap(),
        want.as_bytes()
    );
    let none = PullOptions {
        platform: oci_image::Platform {
            architecture: "s390x".into(),
            os: "linux".into(),
            variant: None,
        },
        ..http_opts()
    };
    assert!(matches!(
        store.pull(&reference, &none, &trust),
        Err(Error::NoPlatform { .. })
    ));
}
