use std::fs;
use std::path::Path;

use nix::unistd::Pid;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

/// Moves `pid` into the v1 cgroup at `cgroup_path`.
///
/// Cairn patch: writing a pid to `cgroup.procs` takes the global
/// cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period
/// (6-11 ms measured on kernel 6.18), once per container start. A thread
/// moving itself by writing "0" to `tasks` skips that lock; when the calling
/// process has a single thread that moves the whole process. libcontainer's
/// intermediate process is such a caller (it adds itself, single-threaded,
/// before forking the container init).
pub(super) fn attach(pid: Pid, cgroup_path: &Path) -> Result<(), WrappedIoError> {
    if pid == nix::unistd::getpid() && single_threaded() {
        return common::write_cgroup_file_str(cgroup_path.join(CGROUP_TASKS), "0");
    }
    common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid)
}

const CGROUP_TASKS: &str = "tasks";

/// Whether the calling process has exactly one thread (/proc/self/stat field 20).
fn single_threaded() -> bool {
    let Ok(stat) = fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    // The command name (field 2) may contain spaces; fields after it are plain.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17).map(|n| n == "1"))
        .unwrap_or(false)
}

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        attach(pid, cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}
