//! Command line: the OCI runtime CLI (runc-compatible verbs and options)
//! plus the app and image commands.

use std::path::PathBuf;

use app_spec::{
    AbsPath, AppName, Bind, Cgroups, Cpus, EnvVar, Memory, Network, Pids, Publish, User,
};
use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-run",
    version,
    about = "Cairn's daemon-less container runtime"
)]
pub struct Cli {
    /// State directory of OCI containers.
    #[arg(long, global = true, default_value = "/run/cairn-run")]
    pub root: PathBuf,
    /// Accepted for runc compatibility; errors go to stderr.
    #[arg(long, global = true, hide = true)]
    pub log: Option<PathBuf>,
    #[arg(long, global = true, hide = true)]
    pub log_format: Option<String>,
    #[arg(long, global = true, hide = true)]
    pub debug: bool,
    /// Use the systemd cgroup manager (cgroupsPath "slice:prefix:name").
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    #[command(flatten)]
    pub paths: Paths,
    #[command(subcommand)]
    pub command: Command,
}

/// Where images, trust and app state live; tests point them at scratch dirs.
#[derive(Args, Debug, Clone)]
pub struct Paths {
    /// Image store root.
    #[arg(long, global = true, default_value = "/var/lib/cairn/images")]
    pub image_store: PathBuf,
    /// Image trust policy file.
    #[arg(long, global = true, default_value = "/etc/cairn/image-trust.json")]
    pub trust_policy: PathBuf,
    /// App bundles (rebuilt at every start; tmpfs).
    #[arg(long, global = true, default_value = "/run/cairn/containers")]
    pub app_bundles: PathBuf,
    /// App writable layers (persistent, on ROOT).
    #[arg(long, global = true, default_value = "/var/lib/cairn/containers")]
    pub app_state: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an OCI container from a bundle; it waits for `start`.
    Create(Create),
    /// Start a created container.
    Start(Id),
    /// Print a container's state as runtime-spec JSON.
    State(Id),
    /// Send a signal (default TERM) to a container.
    Kill(Kill),
    /// Delete a stopped container (or any, with --force).
    Delete(Delete),
    /// Run an OCI bundle (--bundle DIR ID) or an app from an image (--name APP IMAGE [-- CMD...]).
    Run(Box<Run>),
    /// Stop a running app: its stop signal, then SIGKILL after --time seconds.
    Stop(Stop),
    /// List containers.
    Ps(Json),
    /// Run a command in a running app.
    Exec(Exec),
    /// Pull an image from a registry.
    Pull(Pull),
    /// Import an OCI layout directory or archive.
    Import(Import),
    /// List stored images.
    Images(Json),
    /// Remove an image reference.
    Rm(Ref),
    /// Remove unreferenced image content.
    Gc,
    /// Manage the image trust policy.
    #[command(subcommand)]
    Trust(Trust),
    /// Sign a stored image.
    Sign(Sign),
}

#[derive(Args, Debug)]
pub struct Id {
    pub id: String,
}

#[derive(Args, Debug)]
pub struct Json {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct Ref {
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct Create {
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    #[arg(long)]
    pub no_pivot: bool,
    #[arg(long, hide = true)]
    pub no_new_keyring: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct Kill {
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    #[arg(default_value = "TERM")]
    pub signal: String,
}

#[derive(Args, Debug)]
pub struct Delete {
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

/// `run` serves both forms; exactly one of --bundle and --name is required,
/// and the app options are refused with --bundle.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["bundle", "name"])))]
pub struct Run {
    /// OCI form: the bundle directory; the positional argument is the container id.
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    /// App form: the app name; the positional argument is the image.
    #[arg(long)]
    pub name: Option<AppName>,
    /// Container id (with --bundle) or image reference (with --name).
    pub target: String,
    /// Command replacing the image's cmd (app form).
    #[arg(last = true)]
    pub command: Vec<String>,

    #[arg(long, conflicts_with = "name")]
    pub pid_file: Option<PathBuf>,
    #[arg(long, conflicts_with = "name")]
    pub console_socket: Option<PathBuf>,
    #[arg(short, long, conflicts_with = "name")]
    pub detach: bool,
    #[arg(long, conflicts_with = "name")]
    pub no_pivot: bool,
    #[arg(long, hide = true)]
    pub no_new_keyring: bool,
    #[arg(long, default_value_t = 0, conflicts_with = "name")]
    pub preserve_fds: i32,

    // The app options: their values are app-spec's types, the grammar the
    // host config's [[apps]] is checked with.
    #[arg(short, long = "env", value_name = "K=V", conflicts_with = "bundle")]
    pub env: Vec<EnvVar>,
    #[arg(
        short,
        long = "volume",
        value_name = "HOST:CTR[:ro]",
        conflicts_with = "bundle"
    )]
    pub volume: Vec<Bind>,
    #[arg(short, long, value_name = "USER[:GROUP]", conflicts_with = "bundle")]
    pub user: Option<User>,
    #[arg(short, long, conflicts_with = "bundle")]
    pub workdir: Option<AbsPath>,
    /// Bytes, or with a k, M, G or T suffix (256M, 1GiB); at least 6M.
    #[arg(short, long, value_name = "SIZE", conflicts_with = "bundle")]
    pub memory: Option<Memory>,
    #[arg(long, conflicts_with = "bundle")]
    pub cpus: Option<Cpus>,
    #[arg(long, conflicts_with = "bundle")]
    pub pids_limit: Option<Pids>,
    /// private: own network namespace, loopback only plus --publish;
    /// none: loopback only; host: the host's network.
    #[arg(long, default_value_t = Network::Private, conflicts_with = "bundle")]
    pub net: Network,
    /// Forward a host port (all addresses, IPv4 and IPv6) to the app's port
    /// on its loopback (--net private only; the app sees 127.0.0.1 as peer).
    #[arg(
        short,
        long = "publish",
        value_name = "HOST:CTR[/tcp|/udp]",
        conflicts_with = "bundle"
    )]
    pub publish: Vec<Publish>,
    #[arg(long, conflicts_with = "bundle")]
    pub read_write: bool,
    #[arg(long, conflicts_with = "bundle")]
    pub hostname: Option<String>,
    /// separate: the app gets a cgroup of its own (a systemd scope in
    /// machine.slice on cgroup v2, else /cairn/<name>); split: below the
    /// calling unit's cgroup, which must have Delegate=yes, so the unit's
    /// stop, kill and accounting cover the app (as podman --cgroups=split).
    #[arg(long, default_value_t = Cgroups::Separate, conflicts_with = "bundle")]
    pub cgroups: Cgroups,
}

#[derive(Args, Debug)]
pub struct Stop {
    pub name: String,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
}

/// `exec` serves `cairn-run exec APP -- CMD...` and runc's form, which
/// podman's conmon uses: `exec --process FILE --detach --pid-file F ID`.
#[derive(Args, Debug)]
pub struct Exec {
    #[arg(short, long = "env", value_name = "K=V", conflicts_with = "process")]
    pub env: Vec<EnvVar>,
    #[arg(short, long, visible_alias = "cwd", conflicts_with = "process")]
    pub workdir: Option<PathBuf>,
    /// runtime-spec process JSON (args, env, cwd, user, terminal, ...)
    /// instead of a command line.
    #[arg(long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Start the process and exit; it is not waited for.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Where to send the terminal's master fd (process.terminal = true).
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Run the command on a terminal: cairn-run relays it to its own
    /// stdin and stdout, or hands it to --console-socket. With --process,
    /// the file's `terminal` field decides.
    #[arg(short, long)]
    pub tty: bool,
    /// Accepted for podman and docker habits (`exec -it`): stdin is always
    /// passed to the process.
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    /// App name or container id.
    pub name: String,
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "process",
        conflicts_with = "process"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Pull {
    pub reference: String,
    #[arg(long)]
    pub signature: Option<PathBuf>,
    /// Plain HTTP to this registry (loopback registries always are): only
    /// for registries on a trusted network; signatures still apply.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Args, Debug)]
pub struct Import {
    pub path: PathBuf,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub signature: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Trust {
    /// Trust images whose name starts with PREFIX.
    Add(TrustAdd),
    /// List trust rules.
    List(Json),
    /// Remove the rule for PREFIX.
    Rm { prefix: String },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["key", "accept_anything"])))]
pub struct TrustAdd {
    pub prefix: String,
    /// Public key file whose signatures are required.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Accept unsigned images under this prefix.
    #[arg(long)]
    pub accept_anything: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("dest").args(["out", "push"])))]
pub struct Sign {
    /// Secret key file.
    #[arg(long)]
    pub key: PathBuf,
    pub reference: String,
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub push: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cairn-run").chain(args.iter().copied()))
    }

    #[test]
    fn run_forms_parse_unambiguously() {
        let ok: &[&[&str]] = &[
            &["run", "--bundle", "/b", "id1"],
            &["run", "-b", "/b", "-d", "--pid-file", "/p", "id1"],
            &["--root", "/r", "run", "--bundle", "/b", "id1"],
            &["run", "--name", "web", "img:1"],
            &[
                "run", "--name", "web", "--env", "A=1", "--memory", "64m", "img:1", "--",
                "/bin/sh", "-c", "x",
            ],
            &[
                "run", "--name", "web", "--net", "host", "-v", "/a:/b:ro", "img",
            ],
            &["run", "--name", "web", "--cgroups", "split", "img"],
            // The host config's size syntax works here too.
            &["run", "--name", "web", "--memory", "1GiB", "img"],
            &[
                "run",
                "--name",
                "web",
                "-p",
                "8080:80",
                "--publish",
                "53:53/udp",
                "img",
            ],
        ];
        for args in ok {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        let bad: &[&[&str]] = &[
            &["run", "id1"],
            &["run", "--bundle", "/b", "--name", "web", "id1"],
            &["run", "--bundle", "/b", "--env", "A=1", "id1"],
            &["run", "--name", "web", "--pid-file", "/p", "img"],
            &["run", "--bundle", "/b"],
            &["run", "--bundle", "/b", "--publish", "8080:80", "id1"],
            &["run", "--bundle", "/b", "--cgroups", "split", "id1"],
            &["run", "--name", "web", "--cgroups", "unit", "img"],
            // app-spec's grammar, as the host config's.
            &["run", "--name", "Web", "img"],
            &["run", "--name", "web_1", "img"],
            &["run", "--name", "web", "--memory", "5m", "img"],
            &["run", "--name", "web", "--env", "1A=x", "img"],
            &["run", "--name", "web", "--pids-limit", "0", "img"],
            &["run", "--name", "web", "--cpus", "0.001", "img"],
            &["run", "--name", "web", "--user", "a b", "img"],
            &["run", "--name", "web", "--workdir", "rel", "img"],
            &["run", "--name", "web", "--volume", "data:/data", "img"],
            &[
                "run",
                "--name",
                "web",
                "--publish",
                "127.0.0.1:80:80",
                "img",
            ],
            &["run", "--name", "web", "--net", "bridge", "img"],
            &["exec", "-e", "A.B=1", "web", "ls"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?} parsed");
        }
    }

    #[test]
    fn run_fields() {
        let cli = parse(&[
            "run", "--name", "web", "img:1", "--", "/bin/sh", "-c", "exit 3",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.name.as_ref().map(AppName::as_str), Some("web"));
        assert_eq!(r.target, "img:1");
        assert_eq!(r.command, ["/bin/sh", "-c", "exit 3"]);
    }

    #[test]
    fn oci_verbs_parse() {
        for args in [
            &[
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/p",
                "--console-socket",
                "/s",
                "id",
            ][..],
            &["start", "id"],
            &["state", "id"],
            &["kill", "id"],
            &["kill", "id", "KILL"],
            &["kill", "--all", "id", "9"],
            &["delete", "--force", "id"],
            &["delete", "id"],
            &[
                "--root",
                "/r",
                "--log",
                "/l",
                "--log-format",
                "json",
                "state",
                "id",
            ],
            &["trust", "add", "docker.io/library", "--accept-anything"],
            &["trust", "add", "x", "--key", "/k.pub"],
            &["sign", "--key", "/k", "img", "--out", "/o"],
            &["exec", "web", "--", "/bin/ls"],
            &["exec", "-e", "A=1", "--cwd", "/", "web", "ls", "-l"],
            &["exec", "-it", "web", "sh"],
            &[
                "exec",
                "--pid-file",
                "/p",
                "--process",
                "/proc.json",
                "--detach",
                "id",
            ],
            &[
                "exec",
                "--tty",
                "--console-socket",
                "/s",
                "--process",
                "/proc.json",
                "id",
            ],
        ] {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(parse(&["trust", "add", "x"]).is_err());
        assert!(parse(&["exec", "web"]).is_err());
        assert!(parse(&["exec", "--process", "/p", "web", "--", "ls"]).is_err());
        assert!(parse(&["exec", "--process", "/p", "-e", "A=1", "web"]).is_err());
        assert!(parse(&["sign", "--key", "/k", "img", "--out", "/o", "--push"]).is_err());
    }

    /// A refused value names the flag and says what is wrong, with an example.
    #[test]
    fn bad_values_explain_themselves() {
        let e = parse(&["run", "--name", "web", "--memory", "5m", "img"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--memory") && e.contains("below 6M") && e.contains("\"256M\""),
            "{e}"
        );
        let e = parse(&["run", "--name", "Web", "img"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--name") && e.contains("lowercase only"), "{e}");
    }
}
