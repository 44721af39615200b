//! A host provisioned the way a cloud provides its config: the guest's DMI
//! says EC2 (`-smbios type=1,manufacturer=Amazon EC2`), and the EC2 metadata
//! service at 169.254.169.254 is a server on the host's loopback written
//! here from AWS's IMDSv2 documentation (a `PUT /latest/api/token` with a
//! TTL header gives a token; `GET /latest/user-data` needs it). QEMU user
//! networking puts the guest in 169.254.0.0/16 so that `guestfwd` can claim
//! the metadata address (qemu refuses forwards outside the guest's network),
//! and [`crate::relay`] carries each connection to the server.
//!
//! The user data is a Cairn host config: host name, root's password for the
//! serial console, a user with an SSH key, a file, a unit, and a static
//! address on a second NIC matched by its MAC. The early cairn-config pass
//! hands over to cairn-config-network.service, which fetches it once DHCP on
//! the first NIC is up. Each setting is checked in the guest, and an SSH
//! login with the key works through a port forwarded to the host's loopback.
//!
//! The disk is not the built disk.raw: it is assembled from the build's
//! signed release by `cairn-build install --image <release> --key …` onto an
//! empty file, as an operator installs a machine from a release, so this
//! boot is also the proof that such a disk boots.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::prep;
use crate::runner::Ctx;
use crate::scenarios::boot_chain::{ROOT_PASSWORD, ROOT_PASSWORD_HASH, SHELL_CMD, TO_LOGIN, say};
use crate::vm::{HostFwd, VmSpec};

const METADATA_IP: &str = "169.254.169.254";
/// The token the fake IMDS hands out (any opaque string will do).
const TOKEN: &str = "cairn-imds-token-AQAEAFk";
const HOSTNAME: &str = "cloud-1";
const SECOND_MAC: &str = "52:54:00:c4:11:02";
const SECOND_ADDR: &str = "10.0.3.50/24";
const FILE_PATH: &str = "/etc/cairn-provisioned";
const FILE_TEXT: &str = "provisioned from EC2 user data";
const UNIT: &str = "provisioned.service";
/// What the unit leaves behind once it ran.
const UNIT_MARK: &str = "/run/provisioned-unit";

/// The requests the metadata service saw: method, path, whether it came
/// with a valid token, and the answer.
pub type Seen = Arc<Mutex<Vec<String>>>;

/// Root's password for the console, and everything else the scenario checks.
pub fn user_data(ssh_key: &str) -> String {
    format!(
        r#"hostname = "{HOSTNAME}"
[[users]]
name = "root"
password_hash = "{ROOT_PASSWORD_HASH}"
[[users]]
name = "ops"
ssh_authorized_keys = ["{ssh_key}"]
sudo = true
[[files]]
path = "{FILE_PATH}"
contents = "{FILE_TEXT}\n"
[[units]]
name = "{UNIT}"
enabled = true
contents = """
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo ran > {UNIT_MARK}'
[Install]
WantedBy=multi-user.target
"""
[[network.interfaces]]
mac = "{SECOND_MAC}"
addresses = ["{SECOND_ADDR}"]
"#
    )
}

/// An EC2 metadata service (IMDSv2) on the host's loopback, serving
/// `user_data` until the process ends: token flow, user data, 404 for
/// anything else, 401 for a missing or wrong token.
pub struct FakeEc2 {
    pub addr: SocketAddr,
    /// What it was asked, in order.
    pub seen: Seen,
}

impl FakeEc2 {
    pub fn start(user_data: String) -> Result<FakeEc2> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the metadata service")?;
        let addr = listener.local_addr()?;
        let seen: Seen = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &user_data, &log);
            }
        });
        Ok(FakeEc2 { addr, seen })
    }

    /// Makes `spec`'s guest an EC2 instance that reaches this service at
    /// 169.254.169.254 (its user network becomes 169.254.0.0/16).
    pub fn attach(&self, spec: &mut VmSpec) -> Result<()> {
        spec.net_options = vec![
            "net=169.254.0.0/16".into(),
            crate::relay::guestfwd(METADATA_IP, 80, self.addr)?,
        ];
        spec.extra_args.extend(
            ["-smbios", "type=1,manufacturer=Amazon EC2,product=t3.micro"].map(String::from),
        );
        Ok(())
    }
}

fn answer(conn: TcpStream, user_data: &str, seen: &Seen) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(4096)];
    reader.read_exact(&mut body)?;
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let token_ok = header("x-aws-ec2-metadata-token") == Some(TOKEN);
    let (status, text) = match (method, path) {
        ("PUT", "/latest/api/token") => match header("x-aws-ec2-metadata-token-ttl-seconds") {
            Some(ttl) if ttl.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) => {
                ("200 OK", TOKEN.to_string())
            }
            _ => ("400 Bad Request", String::new()),
        },
        ("GET", "/latest/user-data") if token_ok => ("200 OK", user_data.to_string()),
        ("GET", _) if !token_ok => ("401 Unauthorized", String::new()),
        _ => ("404 Not Found", String::new()),
    };
    if let Ok(mut s) = seen.lock() {
        s.push(format!("{method} {path} token={token_ok} -> {status}"));
    }
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

fn ssh_keygen(dir: &Path) -> Result<String> {
    let key = dir.join("id_ed25519");
    let _ = std::fs::remove_file(&key);
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "cairn-provision-test",
            "-f",
        ])
        .arg(&key)
        .output()
        .context("running ssh-keygen (apt-get install openssh-client)")?;
    ensure!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(dir.join("id_ed25519.pub"))?;
    Ok(public.trim().to_string())
}

/// `ssh ops@127.0.0.1 -p port COMMAND` with the scenario's key; retried
/// while sshd is still starting.
fn ssh(dir: &Path, port: u16, command: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=20",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(dir.join("id_ed25519"))
            .args(["-p", &port.to_string(), "ops@127.0.0.1", command])
            .output()
            .context("running ssh (apt-get install openssh-client)")?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            bail!(
                "ssh ops@127.0.0.1 -p {port} with the key from the user data failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// An empty file of the built disk's size with the build's signed release
/// installed on it by `cairn-build install` (built beside xtask, which runs
/// the scenarios), checked against the development key.
fn installed_from_release(ctx: &Ctx) -> Result<PathBuf> {
    let built = ctx.image_file("disk.raw")?;
    let release = ctx.image_file("release")?;
    let disk = ctx.artifacts.join("installed.raw");
    let size = std::fs::metadata(&built)
        .with_context(|| format!("reading the size of {}", built.display()))?
        .len();
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("creating {}", disk.display()))?;
    let key = prep::workspace_root().join(disk_layout::dev_key::PUBLIC);
    let t = Instant::now();
    prep::cairn_build(&[
        "install".as_ref(),
        "--image".as_ref(),
        release.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--device".as_ref(),
        disk.as_os_str(),
    ])?;
    say(
        ctx,
        &format!(
            "installed {} onto {} in {:.1} s",
            release.display(),
            disk.display(),
            t.elapsed().as_secs_f64()
        ),
    );
    Ok(disk)
}

pub fn provision_cloud(ctx: &mut Ctx) -> Result<()> {
    let disk = installed_from_release(ctx)?;
    let public_key = ssh_keygen(&ctx.artifacts)?;
    let ec2 = FakeEc2::start(user_data(&public_key))?;
    // No fw_cfg config: it would come first and win over the cloud.
    let mut spec = VmSpec::new(ctx.arch, &disk);
    ec2.attach(&mut spec)?;
    spec.hostfwd = vec![HostFwd {
        host_port: 0,
        guest_port: 22,
    }];
    spec.extra_args.extend(
        [
            "-netdev",
            "user,id=n1,net=10.0.3.0/24,restrict=on",
            "-device",
            &format!("virtio-net-pci,netdev=n1,mac={SECOND_MAC},romfile="),
        ]
        .map(String::from),
    );
    let mut vm = ctx.vm(spec)?;
    let ssh_port = vm
        .host_port(22)
        .context("the SSH port forward has no host port")?;

    // The early pass hands over; the network pass applies the user data.
    vm.wait_for(
        "the host config comes from the network on this boot (EC2 (DMI)",
        TO_LOGIN,
    )?;
    let applied = vm.wait_for("cairn-config: using the host config from ec2", TO_LOGIN)?;
    say(ctx, &format!("user data applied at {:.1} s", applied.t));
    // A fresh prompt: the one printed before the network pass is stale.
    vm.send_line("")?;
    vm.login("root", ROOT_PASSWORD, TO_LOGIN)
        .context("logging in as root with the password from the EC2 user data")?;

    let mut problems = Vec::new();
    let mut check = |what: &str, cmd: &str, want: &str, vm: &mut crate::vm::Vm| -> Result<()> {
        let (rc, out) = vm.run(cmd, SHELL_CMD)?;
        if rc != 0 || !out.contains(want) {
            problems.push(format!(
                "{what}: `{cmd}` gave (exit {rc}) {:?}, wanted {want:?}",
                out.trim()
            ));
        }
        Ok(())
    };
    check(
        "source",
        "/usr/lib/cairn/cairn-config status",
        "ec2",
        &mut vm,
    )?;
    check("host name", "hostname", HOSTNAME, &mut vm)?;
    check("file", &format!("cat {FILE_PATH}"), FILE_TEXT, &mut vm)?;
    check(
        "unit",
        &format!(
            "timeout 60 sh -c 'until test -f {UNIT_MARK}; do sleep 1; done'; systemctl is-enabled {UNIT}; cat {UNIT_MARK}"
        ),
        "ran",
        &mut vm,
    )?;
    check(
        "static address on the second NIC",
        &format!(
            "timeout 60 sh -c 'until ip -o -4 addr show | grep -q {SECOND_ADDR}; do sleep 1; done'; ip -o -4 addr show"
        ),
        SECOND_ADDR,
        &mut vm,
    )?;
    let (_, err) = vm.run("cat /run/cairn/config-error 2>/dev/null", SHELL_CMD)?;
    if !err.trim().is_empty() {
        problems.push(format!("cairn-config reported: {}", err.trim()));
    }
    let who = ssh(
        &ctx.artifacts,
        ssh_port,
        "id -un; hostname; sudo -n true && echo sudo-ok",
    )?;
    for want in ["ops", HOSTNAME, "sudo-ok"] {
        if !who.contains(want) {
            problems.push(format!(
                "over SSH as ops: wanted {want:?} in {:?}",
                who.trim()
            ));
        }
    }
    let seen = ec2.seen.lock().map(|s| s.clone()).unwrap_or_default();
    say(ctx, &format!("metadata service saw: {seen:?}"));
    let token_first = seen
        .first()
        .is_some_and(|s| s.starts_with("PUT /latest/api/token"));
    let data_with_token = seen
        .iter()
        .any(|s| s.starts_with("GET /latest/user-data token=true -> 200"));
    if !(token_first && data_with_token) {
        problems.push(format!(
            "the metadata service did not see the IMDSv2 token flow (PUT token, then GET user-data with it): {seen:?}"
        ));
    }
    vm.kill()?;
    if problems.is_empty() {
        // Kept when the scenario fails, like the VM's overlay.
        std::fs::remove_file(&disk).with_context(|| format!("removing {}", disk.display()))?;
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}
