//! cairn-run as a library: spec generation, the runtime trait and the
//! foreground loop, shared by the binary and the integration tests.
//!
//! Whatever calls into `runtime` must be single-threaded (no async runtime,
//! no threads) until the container is created: libcontainer clones from the
//! calling process and runs Rust code in the children. The only threads are
//! the port forwarder's (`portfwd`), spawned from [`AfterCreate`].

pub mod app;
pub mod cgroup_policy;
pub mod cli;
pub mod console;
pub mod foreground;
pub mod images;
pub mod portfwd;
pub mod runtime;
pub mod seccomp_profile;
pub mod spec;

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::runtime::{CreateOptions, OciRuntime};

pub fn report(e: &anyhow::Error) {
    if std::io::stderr().is_terminal() {
        eprintln!("cairn-run: error: {e:#}");
    } else {
        // One line per error so journald keeps it together.
        eprintln!("cairn-run: error: {}", format!("{e:#}").replace('\n', " "));
    }
}

/// Runs once the container is created (its init waits for `start`) with the
/// init's pid, after the forwarded signals are blocked and before the
/// container is started. From here on threads may be spawned: libcontainer
/// has cloned, and they inherit the blocked mask. An error stops the run
/// and the container is deleted.
pub type AfterCreate<'a> = Box<dyn FnOnce(i32) -> Result<()> + 'a>;

/// Create, start, wait and delete: the container's exit status is ours.
pub fn run_bundle(
    rt: &impl OciRuntime,
    opts: &CreateOptions,
    detach: bool,
    relay: Option<&foreground::NotifyRelay>,
) -> Result<i32> {
    run_bundle_with(rt, opts, detach, relay, None)
}

/// [`run_bundle`] with a hook between create and start (foreground only).
///
/// Order: create (single-threaded) → block the forwarded signals → hook →
/// start → wait → delete. Blocking comes after create so the init does not
/// inherit the mask, and before the hook so its threads do.
pub fn run_bundle_with(
    rt: &impl OciRuntime,
    opts: &CreateOptions,
    detach: bool,
    relay: Option<&foreground::NotifyRelay>,
    after_create: Option<AfterCreate<'_>>,
) -> Result<i32> {
    if detach && after_create.is_some() {
        anyhow::bail!("internal error: a detached run cannot have an after-create hook");
    }
    let timings = std::env::var_os("CAIRN_RUN_TIMINGS").is_some();
    let t0 = std::time::Instant::now();
    let lap = |what: &str| {
        if timings {
            eprintln!(
                "cairn-run: {what} at {:.2} ms",
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
    };
    let pid = rt.create(opts)?;
    lap("created");
    if detach {
        rt.start(&opts.id)?;
        return Ok(0);
    }
    let result = (|| {
        let signals = foreground::block_signals().context("cannot block signals for forwarding")?;
        if let Some(hook) = after_create {
            hook(pid)?;
            lap("set up");
        }
        rt.start(&opts.id)?;
        lap("started");
        foreground::wait(pid, &signals, relay)
            .with_context(|| format!("waiting for container {} (pid {pid}) failed", opts.id))
    })();
    lap("exited");
    // A failed cleanup must not hide the workload's status.
    let deleted = rt.delete(&opts.id, true);
    lap("deleted");
    if let Err(e) = deleted {
        report(&anyhow::Error::new(e).context(format!("cannot delete container {}", opts.id)));
    }
    result
}

/// Static musl builds link Debian's libseccomp.a, which was compiled against
/// glibc with _FORTIFY_SOURCE: its PFC text exporter (`seccomp_export_pfc`,
/// never called by libcontainer or us) references glibc's `__fprintf_chk`,
/// which musl lacks. This stand-in only satisfies the linker; it reports
/// failure without reading its variadic arguments.
#[cfg(target_env = "musl")]
mod musl_compat {
    use std::ffi::{c_char, c_int, c_void};

    /// # Safety
    /// Never dereferences its arguments.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __fprintf_chk(
        _stream: *mut c_void,
        _flag: c_int,
        _format: *const c_char,
    ) -> c_int {
        -1
    }
}
