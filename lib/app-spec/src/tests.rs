//! Table tests: each grammar's good values (with their canonical text) and
//! bad ones (with what the message must say), and the values the host
//! config and cairn-run used to disagree on.

use std::fmt::Display;
use std::str::FromStr;

use super::*;

/// Each good input parses, displays as `canonical`, and the canonical text
/// parses back to the same value.
fn good<T>(cases: &[(&str, &str)])
where
    T: FromStr<Err = Error> + Display + PartialEq + std::fmt::Debug,
{
    for (input, canonical) in cases {
        let v: T = input
            .parse()
            .unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
        assert_eq!(v.to_string(), *canonical, "{input:?}");
        assert_eq!(canonical.parse::<T>().as_ref(), Ok(&v), "{canonical:?}");
    }
}

/// Each bad input is refused with a one-line message naming the value, the
/// grammar `what`, a valid example, and every `wants` substring.
fn bad<T>(what: What, cases: &[(&str, &[&str])])
where
    T: FromStr<Err = Error> + std::fmt::Debug,
{
    for (input, wants) in cases {
        let e = match input.parse::<T>() {
            Ok(v) => panic!("{input:?} accepted as {v:?}"),
            Err(e) => e,
        };
        assert_eq!(e.what(), what, "{input:?}");
        assert_eq!(e.input(), *input);
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.starts_with(&format!("{input:?} is not a valid ")),
            "{msg}"
        );
        assert!(msg.contains(what.example()), "{msg}");
        for w in *wants {
            assert!(msg.contains(w), "message for {input:?} lacks {w:?}: {msg}");
        }
    }
}

#[test]
fn app_names() {
    good::<AppName>(&[
        ("web", "web"),
        ("a", "a"),
        ("0-x", "0-x"),
        ("web-1", "web-1"),
        ("a-", "a-"),
        (&"a".repeat(63), &"a".repeat(63)),
    ]);
    bad::<AppName>(
        What::AppName,
        &[
            ("", &["empty"]),
            ("-w", &["starts with '-'"]),
            (&"a".repeat(64), &["64 characters", "at most 63"]),
            // cairn-run took these; the host config did not.
            ("Web", &["'W' is not allowed (lowercase only)"]),
            ("web_1", &["'_'"]),
            ("web.1", &["'.'"]),
            ("a/b", &["'/'"]),
            ("..", &["'.'"]),
            ("a b", &["' '"]),
            ("é", &["'é'"]),
        ],
    );
}

#[test]
fn volume_names_and_paths() {
    good::<VolumeName>(&[("data", "data"), ("v.1_x-y", "v.1_x-y"), ("0", "0")]);
    bad::<VolumeName>(
        What::VolumeName,
        &[
            ("", &["empty"]),
            ("Data", &["'D'"]),
            (".x", &["starts with '.'"]),
            ("_x", &["starts with '_'"]),
            (&"a".repeat(65), &["65 characters"]),
        ],
    );
    good::<AbsPath>(&[
        ("/", "/"),
        ("/data", "/data"),
        ("/data/", "/data"),
        ("//srv/./x//y", "/srv/x/y"),
        ("/a b/é", "/a b/é"),
        ("/a..b/.c", "/a..b/.c"),
    ]);
    bad::<AbsPath>(
        What::Path,
        &[
            ("", &["not absolute"]),
            ("rel/x", &["not absolute"]),
            ("/a/../b", &["\"..\" component"]),
            ("/..", &["\"..\""]),
            ("/a:b", &["':'"]),
            ("/a\0", &["NUL"]),
        ],
    );
}

#[test]
fn volumes() {
    good::<Volume>(&[
        ("data:/data", "data:/data"),
        ("data:/data:rw", "data:/data"),
        ("/srv/x:/x:ro", "/srv/x:/x:ro"),
        ("v.1_x:/d:rw", "v.1_x:/d"),
        ("/srv/x/:/x/", "/srv/x:/x"),
        ("/:/host:ro", "/:/host:ro"),
    ]);
    let v: Volume = "data:/data:ro".parse().unwrap();
    assert_eq!(
        v,
        Volume {
            source: VolumeSource::Named("data".parse().unwrap()),
            target: "/data".parse().unwrap(),
            read_only: true
        }
    );
    let app: AppName = "web".parse().unwrap();
    assert_eq!(
        v.bind(&app).to_string(),
        "/var/lib/cairn/volumes/web/data:/data:ro"
    );
    let p: Volume = "/srv/x:/x".parse().unwrap();
    assert_eq!(p.bind(&app).to_string(), "/srv/x:/x");
    bad::<Volume>(
        What::Volume,
        &[
            ("data", &["no ':/path'", "NAME:/path"]),
            ("Data:/d", &["volume name", "'D'"]),
            ("d:/", &["over the container's root"]),
            ("d:rel", &["container path", "not absolute"]),
            ("/a/../b:/d", &["host path", "\"..\""]),
            ("d:/d:rx", &["unknown option \"rx\""]),
            // Docker's SELinux and propagation options are not supported.
            ("d:/d:z", &["unknown option \"z\""]),
            ("d:/d:ro,z", &["unknown option"]),
            ("d:/d:ro:x", &["too many ':'"]),
            (":/d", &["volume name", "empty"]),
        ],
    );
    good::<Bind>(&[
        ("/a:/b", "/a:/b"),
        ("/a:/b:ro", "/a:/b:ro"),
        ("/a:/b:rw", "/a:/b"),
        (
            "/var/lib/cairn/volumes/web/data:/data",
            "/var/lib/cairn/volumes/web/data:/data",
        ),
    ]);
    bad::<Bind>(
        What::Bind,
        &[
            // A named volume is the host config's: cairn-run gets its directory.
            (
                "data:/b",
                &["\"data\" is not an absolute host path", "named volumes"],
            ),
            ("/a:b", &["not absolute"]),
            ("/a:/", &["root"]),
            ("/a:/b/../c", &["\"..\""]),
            ("/a:/b:x", &["unknown option"]),
            ("/a", &["no ':/path'"]),
        ],
    );
}

#[test]
fn ports() {
    good::<Publish>(&[
        ("8080:80", "8080:80/tcp"),
        ("8080:80/tcp", "8080:80/tcp"),
        ("53:53/udp", "53:53/udp"),
        ("65535:1", "65535:1/tcp"),
        ("080:08", "80:8/tcp"),
    ]);
    let p: Publish = "53:5353/udp".parse().unwrap();
    assert_eq!(
        (p.host_port, p.container_port, p.udp, p.proto()),
        (53, 5353, true, "udp")
    );
    bad::<Publish>(
        What::Publish,
        &[
            ("80", &["no container port", "HOST:CONTAINER"]),
            ("0:80", &["host port \"0\""]),
            ("80:0", &["container port \"0\""]),
            ("70000:80", &["host port \"70000\""]),
            ("80:80/sctp", &["unknown protocol \"sctp\""]),
            ("80:80/TCP", &["unknown protocol"]),
            ("+80:80", &["host port \"+80\""]),
            ("80:80/", &["unknown protocol \"\""]),
            ("127.0.0.1:80:80", &["host address cannot be given"]),
            ("8000-8010:80", &["host port"]),
            ("a:b:c:d", &["too many ':'"]),
            ("", &["no container port"]),
        ],
    );
}

#[test]
fn keywords() {
    good::<Network>(&[("host", "host"), ("private", "private"), ("none", "none")]);
    bad::<Network>(
        What::Network,
        &[
            ("bridge", &["\"host\", \"private\" or \"none\""]),
            ("Host", &["unknown"]),
            ("", &["unknown"]),
        ],
    );
    assert_eq!(Network::default(), Network::Private);
    good::<Restart>(&[
        ("always", "always"),
        ("on-failure", "on-failure"),
        ("no", "no"),
    ]);
    bad::<Restart>(
        What::Restart,
        &[
            ("unless-stopped", &["\"always\", \"on-failure\" or \"no\""]),
            ("on-abnormal", &["unknown"]),
            ("false", &["unknown"]),
        ],
    );
    assert_eq!(Restart::default(), Restart::OnFailure);
    good::<Cgroups>(&[("separate", "separate"), ("split", "split")]);
    bad::<Cgroups>(What::Cgroups, &[("unit", &["\"separate\" or \"split\""])]);
    assert_eq!(Cgroups::default(), Cgroups::Separate);
}

#[test]
fn memory() {
    good::<Memory>(&[
        ("6291456", "6291456"),
        ("6291456b", "6291456"),
        ("64m", "67108864"),
        ("64M", "67108864"),
        ("256MB", "268435456"),
        ("256MiB", "268435456"),
        ("8192k", "8388608"),
        ("8192KiB", "8388608"),
        ("1g", "1073741824"),
        ("1gb", "1073741824"),
        // The host config took these; cairn-run's --memory did not.
        ("1GiB", "1073741824"),
        ("1gib", "1073741824"),
        ("1T", "1099511627776"),
        ("1TiB", "1099511627776"),
        (" 256M ", "268435456"),
        ("9223372036854775807", "9223372036854775807"),
    ]);
    assert_eq!("256M".parse::<Memory>().map(Memory::bytes), Ok(256 << 20));
    assert_eq!(Memory::from_bytes(6 << 20).map(Memory::bytes), Ok(6 << 20));
    assert!(Memory::from_bytes((6 << 20) - 1).is_err());
    bad::<Memory>(
        What::Memory,
        &[
            ("5M", &["below 6M", "at least 6M"]),
            ("6291455", &["below 6M"]),
            ("1m", &["below 6M"]),
            ("0", &["below 6M"]),
            ("lots", &["not a whole number"]),
            ("-5m", &["\"-5\" is not a whole number"]),
            ("+64m", &["not a whole number"]),
            ("1.5G", &["not a whole number"]),
            ("64 m", &["not a whole number"]),
            ("6291456ib", &["not a whole number"]),
            ("1P", &["not a whole number"]),
            ("M", &["\"\" is not a whole number"]),
            ("", &["not a whole number"]),
            ("99999999999g", &["too large"]),
            ("9223372036854775808", &["too large"]),
            ("99999999999999999999", &["too large"]),
        ],
    );
}

#[test]
fn cpus_and_pids() {
    good::<Cpus>(&[
        ("0.5", "0.5"),
        ("2", "2"),
        ("2.0", "2"),
        (".25", "0.25"),
        ("0.01", "0.01"),
        ("4096", "4096"),
        ("1.", "1"),
        ("0.333", "0.333"),
    ]);
    assert_eq!(Cpus::new(0.5).map(Cpus::get), Ok(0.5));
    assert_eq!(Cpus::new(2.0).unwrap().to_string(), "2");
    bad::<Cpus>(
        What::Cpus,
        &[
            ("0", &["out of range"]),
            // Both copies took it; the kernel refuses a quota below 1 ms.
            ("0.001", &["out of range", "0.01"]),
            ("4096.5", &["out of range"]),
            ("5000", &["out of range"]),
            ("-1", &["not a decimal number"]),
            ("+1", &["not a decimal number"]),
            ("1e3", &["not a decimal number"]),
            ("nan", &["not a decimal number"]),
            ("inf", &["not a decimal number"]),
            ("1.2.3", &["not a decimal number"]),
            (".", &["not a decimal number"]),
            ("", &["not a decimal number"]),
        ],
    );
    assert!(Cpus::new(f64::NAN).is_err() && Cpus::new(f64::INFINITY).is_err());
    good::<Pids>(&[
        ("1", "1"),
        ("200", "200"),
        ("4194304", "4194304"),
        ("007", "7"),
    ]);
    assert_eq!(Pids::new(200).map(Pids::get), Ok(200));
    assert!(Pids::new(0).is_err());
    bad::<Pids>(
        What::Pids,
        &[
            // cairn-run's --pids-limit took any i64.
            ("0", &["out of range"]),
            ("-1", &["not a whole number"]),
            ("4194305", &["out of range"]),
            ("99999999999999999999", &["out of range"]),
            ("1.5", &["not a whole number"]),
            ("", &["not a whole number"]),
        ],
    );
}

#[test]
fn env() {
    good::<EnvVar>(&[
        ("A=1", "A=1"),
        ("A=", "A="),
        ("A=b=c", "A=b=c"),
        ("_X=a b $HOME %h \"q\"\n", "_X=a b $HOME %h \"q\"\n"),
        ("path_2=x", "path_2=x"),
    ]);
    let e: EnvVar = "A=b=c".parse().unwrap();
    assert_eq!((e.name(), e.value()), ("A", "b=c"));
    assert_eq!(
        EnvVar::new("KEY", "value").unwrap().to_string(),
        "KEY=value"
    );
    bad::<EnvVar>(
        What::Env,
        &[
            ("=1", &["\"\" is not a valid variable name"]),
            ("A", &["no '='"]),
            // cairn-run took any name without NUL.
            ("1A=x", &["\"1A\" is not a valid variable name"]),
            ("A.B=x", &["variable name"]),
            ("A-B=x", &["variable name"]),
            ("A B=x", &["variable name"]),
            ("A=x\0", &["NUL"]),
        ],
    );
    let e = EnvVar::new("1A", "x").unwrap_err();
    assert_eq!(e.input(), "1A=x");
}

#[test]
fn users() {
    good::<User>(&[
        ("nobody", "nobody"),
        ("1000", "1000"),
        ("1000:1000", "1000:1000"),
        ("app:video", "app:video"),
        ("www-data", "www-data"),
        ("a.b_c", "a.b_c"),
        ("4294967294", "4294967294"),
    ]);
    let u: User = "1000:audio".parse().unwrap();
    assert_eq!((u.user(), u.group()), ("1000", Some("audio")));
    for (text, numeric) in [
        ("1000", true),
        ("1000:1000", true),
        ("1000:audio", false),
        ("app", false),
    ] {
        assert_eq!(
            text.parse::<User>().unwrap().is_numeric(),
            numeric,
            "{text}"
        );
    }
    bad::<User>(
        What::User,
        &[
            ("", &["empty"]),
            ("a:", &["empty"]),
            (":a", &["empty"]),
            ("a b", &["' ' is not allowed", "user[:group]"]),
            ("a:b:c", &["':' is not allowed"]),
            // cairn-run took anything, and `--user -x` is an option to clap.
            ("-x", &["starts with '-'"]),
            ("a:-x", &["starts with '-'"]),
            (&"a".repeat(33), &["longer than 32"]),
            ("4294967295", &["not a valid id"]),
            ("99999999999", &["not a valid id"]),
        ],
    );
}

fn name(n: &str) -> AppName {
    n.parse().unwrap()
}

#[test]
fn conflicts() {
    let p = |s: &str| s.parse::<Publish>().unwrap();
    for (net, list, want) in [
        (Network::Private, vec![], Ok(())),
        (Network::Host, vec![], Ok(())),
        (Network::None, vec![], Ok(())),
        (
            Network::Private,
            vec![p("8080:80"), p("8080:80/udp")],
            Ok(()),
        ),
        (Network::Private, vec![p("8080:80"), p("8081:80")], Ok(())),
        (
            Network::Private,
            vec![p("53:53/udp"), p("8080:80"), p("53:5353/udp")],
            Err(Conflict::HostPortTwice {
                index: 2,
                publish: p("53:5353/udp"),
            }),
        ),
        (
            Network::Host,
            vec![p("8080:80")],
            Err(Conflict::PublishOutsidePrivate(Network::Host)),
        ),
        (
            Network::None,
            vec![p("8080:80")],
            Err(Conflict::PublishOutsidePrivate(Network::None)),
        ),
    ] {
        assert_eq!(check_publish(net, &list), want, "{net:?} {list:?}");
    }
    let msg = |c: Conflict| c.to_string();
    assert!(
        msg(Conflict::PublishOutsidePrivate(Network::Host))
            .contains("with --net host the app binds host ports itself: remove --publish")
    );
    assert!(msg(Conflict::PublishOutsidePrivate(Network::None)).contains("use --net private"));

    let mut s = AppSettings::new(name("web"), "alpine");
    s.volumes = ["/a:/d", "/b:/e", "/c:/d/"]
        .iter()
        .map(|v| v.parse().unwrap())
        .collect();
    let e = s.check().unwrap_err();
    assert_eq!(
        e,
        Conflict::TargetTwice {
            index: 2,
            target: "/d".parse().unwrap()
        }
    );
    assert!(e.to_string().contains("/d is mounted twice"), "{e}");
    s.volumes.pop();
    assert_eq!(s.check(), Ok(()));
}

#[test]
fn run_args_write_every_setting_canonically() {
    let mut s = AppSettings::new(name("web"), "10.0.2.2:5000/test/web:1");
    assert_eq!(
        run_args(&s),
        [
            "run",
            "--name",
            "web",
            "--net",
            "private",
            "10.0.2.2:5000/test/web:1"
        ]
    );
    s.cgroups = Cgroups::Split;
    s.network = Network::Private;
    s.publish = vec!["8080:80".parse().unwrap()];
    s.env = vec!["KEY=value".parse().unwrap(), "B=-x y".parse().unwrap()];
    s.volumes = vec!["/srv/x/:/x:ro".parse().unwrap()];
    s.memory = Some("256M".parse().unwrap());
    s.cpus = Some(Cpus::new(0.5).unwrap());
    s.pids = Some(Pids::new(200).unwrap());
    s.user = Some("1000:1000".parse().unwrap());
    s.workdir = Some("/srv/".parse().unwrap());
    s.hostname = Some("h1".into());
    s.read_write = true;
    s.command = vec!["/bin/sh".into(), "-c".into(), "--x".into()];
    assert_eq!(
        run_args(&s),
        [
            "run",
            "--name",
            "web",
            "--cgroups",
            "split",
            "--net",
            "private",
            "--publish",
            "8080:80/tcp",
            "--env",
            "KEY=value",
            "--env",
            "B=-x y",
            "--volume",
            "/srv/x:/x:ro",
            "--memory",
            "268435456",
            "--cpus",
            "0.5",
            "--pids-limit",
            "200",
            "--user",
            "1000:1000",
            "--workdir",
            "/srv",
            "--hostname",
            "h1",
            "--read-write",
            "10.0.2.2:5000/test/web:1",
            "--",
            "/bin/sh",
            "-c",
            "--x"
        ]
    );
}
