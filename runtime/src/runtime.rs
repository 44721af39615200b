//! The OCI runtime behind a small trait; the implementation is youki's
//! libcontainer. Callers must be single-threaded: libcontainer clones from
//! this process and runs Rust code in the child before exec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus, State};
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal as NixSignal;
use serde::Serialize;

use crate::cgroup_policy;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {id:?} does not exist under {root}")]
    NotFound { id: String, root: PathBuf },
    // The cause is part of the message and deliberately not a `source`:
    // printed as a chain it would appear twice.
    #[error("container {id:?}: {op} failed: {cause}")]
    Libcontainer {
        id: String,
        op: &'static str,
        cause: Box<libcontainer::error::LibcontainerError>,
    },
    // "no such file or directory" and "permission denied" are what runc
    // says; podman maps them to exit 127 and 126.
    #[error(
        "container {id:?}: exec: {command:?}: no such file or directory in the container \
         (not found on its PATH): check the command and the image"
    )]
    CommandNotFound { id: String, command: String },
    #[error(
        "container {id:?}: exec: {command:?}: permission denied (not an executable file in \
         the container)"
    )]
    CommandNotExecutable { id: String, command: String },
    #[error("cannot read {path}: {cause}")]
    Spec {
        path: PathBuf,
        cause: libcontainer::oci_spec::OciSpecError,
    },
    #[error(transparent)]
    Policy(#[from] cgroup_policy::PolicyError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid signal {0:?}: use a name such as TERM or SIGKILL, or a number")]
    Signal(String),
    #[error("cannot create the state root {} (mode 0700): {source}", path.display())]
    StateRoot {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub systemd_cgroup: bool,
    pub no_pivot: bool,
    pub preserve_fds: i32,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// The runtime-spec process file: given by the caller (`--process`) or
    /// made by app::exec from a command line.
    pub process: PathBuf,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
}

/// The runtime-spec `state` object.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

pub trait OciRuntime {
    /// Creates the container; its init waits for `start`. Returns the init pid.
    fn create(&self, opts: &CreateOptions) -> Result<i32, RuntimeError>;
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    fn state(&self, id: &str) -> Result<OciState, RuntimeError>;
    fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError>;
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
    /// Starts a process in a running container; returns its pid (a child of
    /// the calling process unless detached).
    fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32, RuntimeError>;
    /// Ids of the containers under this runtime's state root.
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
}

pub struct Libcontainer {
    pub root: PathBuf,
    pub cgroup_mode: cgroup_policy::CgroupMode,
}

impl Libcontainer {
    pub fn new(root: &Path) -> Result<Self, RuntimeError> {
        Ok(Self {
            root: root.to_path_buf(),
            cgroup_mode: cgroup_policy::detect()?,
        })
    }

    fn load(&self, id: &str) -> Result<Container, RuntimeError> {
        let dir = self.root.join(id);
        if !valid_id(id) || !dir.join("state.json").exists() {
            return Err(RuntimeError::NotFound {
                id: id.to_string(),
                root: self.root.clone(),
            });
        }
        // libcontainer rewrites state.json in place (truncate, then write):
        // a reader racing another cairn-run (a `stop` against the
        // foreground `run` saving "running") can find it empty or cut
        // short. A complete file follows within microseconds.
        let mut tries = 0;
        let state = loop {
            match State::load(&dir) {
                Ok(s) => break s,
                // Deleted meanwhile (its `run` cleaned up after the exit).
                Err(_) if !dir.join("state.json").exists() => {
                    return Err(RuntimeError::NotFound {
                        id: id.to_string(),
                        root: self.root.clone(),
                    });
                }
                Err(_) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(lc(id, "load state", e.into())),
            }
        };
        let mut c = Container { state, root: dir };
        // Saved before its init is cloned: libcontainer's refresh would call
        // it stopped (no pid), and a `stop` would then do nothing while the
        // app starts. Whether its creator is still alive is the caller's
        // question (see app::RunLock).
        if c.status() == ContainerStatus::Creating && c.pid().is_none() {
            return Ok(c);
        }
        // The refresh reads /proc/<pid>/stat after finding /proc/<pid>: an
        // init exiting in between fails it. Asked again, it is gone.
        if c.refresh_status().is_err() {
            c.refresh_status()
                .map_err(|e| lc(id, "refresh status", e))?;
        }
        Ok(c)
    }
}

impl RuntimeError {
    /// The exit status a shell (and podman) gives for this failure: 127
    /// for a command that is not there, 126 for one that cannot run.
    pub fn exit_code(&self) -> u8 {
        match self {
            RuntimeError::CommandNotFound { .. } => 127,
            RuntimeError::CommandNotExecutable { .. } => 126,
            _ => 1,
        }
    }
}

/// An id that names a directory directly under the state root.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains('/')
}

fn lc(id: &str, op: &'static str, cause: libcontainer::error::LibcontainerError) -> RuntimeError {
    let text = cause.to_string();
    let id = id.to_string();
    match launch_failure(&text) {
        Some(LaunchFailure::NotFound(command)) => RuntimeError::CommandNotFound { id, command },
        Some(LaunchFailure::NotExecutable(command)) => {
            RuntimeError::CommandNotExecutable { id, command }
        }
        None => RuntimeError::Libcontainer {
            id,
            op,
            cause: Box::new(cause),
        },
    }
}

#[derive(Debug, PartialEq)]
enum LaunchFailure {
    NotFound(String),
    NotExecutable(String),
}

/// libcontainer reports a missing or non-executable command only as text
/// (its executor's validation, passed through the init's channel).
fn launch_failure(text: &str) -> Option<LaunchFailure> {
    let (_, rest) = text.split_once("executable '")?;
    let (command, tail) = rest.split_once('\'')?;
    if tail.starts_with(" not found in $PATH") {
        Some(LaunchFailure::NotFound(command.to_string()))
    } else if tail.contains("does not have correct permissions") {
        Some(LaunchFailure::NotExecutable(command.to_string()))
    } else {
        None
    }
}

pub fn status_name(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

/// Signal names as the OCI CLI accepts them: `TERM`, `SIGTERM`, `15`.
pub fn parse_signal(s: &str) -> Result<NixSignal, RuntimeError> {
    let bad = || RuntimeError::Signal(s.to_string());
    if let Ok(n) = s.parse::<i32>() {
        return NixSignal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<NixSignal>().map_err(|_| bad())
}

impl OciRuntime for Libcontainer {
    fn create(&self, opts: &CreateOptions) -> Result<i32, RuntimeError> {
        let config = opts.bundle.join("config.json");
        let spec = Spec::load(&config).map_err(|cause| RuntimeError::Spec {
            path: config.clone(),
            cause,
        })?;
        cgroup_policy::check_device_rules(
            cgroup_policy::device_rule_count(&spec),
            self.cgroup_mode,
            cgroup_policy::V2_DEVICES_BUILT_IN,
        )?;
        // Root only, as runc makes it: it holds the containers' state and
        // the socket their init waits on for `start`. libcontainer would
        // create it with the umask's mode. One that exists is left as its
        // owner (podman, the operator) made it.
        if !self.root.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.root)
                .map_err(|source| RuntimeError::StateRoot {
                    path: self.root.clone(),
                    source,
                })?;
        }
        let id = &opts.id;
        let container = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&self.root)
            .map_err(|e| lc(id, "set state root", e))?
            .with_pid_file(opts.pid_file.as_ref())
            .map_err(|e| lc(id, "set pid file", e))?
            .with_console_socket(opts.console_socket.as_ref())
            .with_preserved_fds(opts.preserve_fds)
            .validate_id()
            .map_err(|e| lc(id, "validate id", e))?
            .as_init(&opts.bundle)
            .with_systemd(opts.systemd_cgroup)
            .with_detach(true)
            .with_no_pivot(opts.no_pivot)
            .build()
            .map_err(|e| lc(id, "create", e))?;
        Ok(container.pid().map_or(0, |p| p.as_raw()))
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.load(id)?.start().map_err(|e| lc(id, "start", e))
    }

    fn state(&self, id: &str) -> Result<OciState, RuntimeError> {
        let c = self.load(id)?;
        let st = &c.state;
        Ok(OciState {
            oci_version: st.oci_version.clone(),
            id: st.id.clone(),
            status: status_name(st.status).to_string(),
            pid: st.pid.filter(|_| st.status != ContainerStatus::Stopped),
            bundle: st.bundle.clone(),
            annotations: st.annotations.clone().unwrap_or_default(),
        })
    }

    fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError> {
        let sig = parse_signal(signal)?;
        self.load(id)?
            .kill(Signal::from(sig), all)
            .map_err(|e| lc(id, "kill", e))
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        match self.load(id) {
            Ok(mut c) => c.delete(force).map_err(|e| lc(id, "delete", e)),
            // As runc: --force succeeds on a container that is gone, and
            // clears what a create that failed before writing its state
            // left behind (podman cleans up failed creates this way).
            Err(RuntimeError::NotFound { .. }) if force && valid_id(id) => {
                match std::fs::remove_dir_all(self.root.join(id)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn exec(&self, id: &str, opts: &ExecOptions) -> Result<i32, RuntimeError> {
        let pid = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.root)
            .map_err(|e| lc(id, "set state root", e))?
            .validate_id()
            .map_err(|e| lc(id, "validate id", e))?
            .with_pid_file(opts.pid_file.as_ref())
            .map_err(|e| lc(id, "set pid file", e))?
            .with_console_socket(opts.console_socket.as_ref())
            .with_preserved_fds(opts.preserve_fds)
            .as_tenant()
            .with_process(Some(&opts.process))
            .with_detach(opts.detach)
            .build()
            .map_err(|e| lc(id, "exec", e))?;
        Ok(pid.as_raw())
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let mut ids = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            if entry.path().join("state.json").exists() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_failure_table() {
        use LaunchFailure::*;
        for (text, want) in [
            (
                "failed to create container: exec process failed with error error in executing \
                 process : executable '/nonexist' not found in $PATH",
                Some(NotFound("/nonexist".into())),
            ),
            (
                "error in executing process : executable 'app' not found in $PATH",
                Some(NotFound("app".into())),
            ),
            (
                "executable 'x' at path '\"/bin/x\"' does not have correct permissions",
                Some(NotExecutable("x".into())),
            ),
            (
                "failed to check permissions for executable 'x' at path: EIO",
                None,
            ),
            ("executable 'x", None),
            ("cgroup: permission denied", None),
        ] {
            assert_eq!(launch_failure(text), want, "{text}");
        }
    }

    #[test]
    fn signal_table() {
        for (input, want) in [
            ("TERM", Some(15)),
            ("SIGTERM", Some(15)),
            ("term", Some(15)),
            ("9", Some(9)),
            ("KILL", Some(9)),
            ("SIGUSR1", Some(10)),
            ("NOPE", None),
            ("999", None),
        ] {
            let got = parse_signal(input).ok().map(|s| s as i32);
            assert_eq!(got, want, "{input}");
        }
    }
}
