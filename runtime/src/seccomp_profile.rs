//! The default seccomp profile: the Docker/Podman default allow-list as a
//! built-in table, specialised for the default capability set.
//!
//! The table is Docker's `profiles/seccomp/default.json` with the rules for
//! capabilities outside the default set dropped (`CAP_SYS_ADMIN`,
//! `CAP_SYS_PTRACE`, ... are never granted to apps), so the rule list stays
//! short and the filter libseccomp compiles at start is smaller.
//!
//! `io_uring_setup`, `io_uring_enter` and `io_uring_register` are left out,
//! as Docker (25.0) and containerd (1.7) did: io_uring has been the source of
//! many kernel privilege escalations, and the operations it submits are not
//! seen by seccomp (a queued request does what a filtered syscall would).
//! Apps get EPERM from `io_uring_setup`; programs that use io_uring
//! optionally fall back to ordinary syscalls.

use serde_json::{Value, json};

/// EPERM, as Docker returns for syscalls outside the list.
const DEFAULT_ERRNO: u32 = 1;
/// ENOSYS for clone3, so libcs fall back to clone (whose flags can be checked).
const ENOSYS: u32 = 38;
/// All CLONE_NEW* flags: clone is allowed only when none of them is set.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;
/// AF_VSOCK: Docker refuses vsock sockets to containers.
const AF_VSOCK: u64 = 40;

/// Allowed unconditionally on every architecture (Docker's first group plus
/// the minKernel 4.8 ptrace group and the CAP_SYS_CHROOT group, since
/// SYS_CHROOT is in the default capability set).
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // minKernel 4.8 group (the kernel checks ptrace scope since then)
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    // CAP_SYS_CHROOT is a default capability
    "chroot",
];

/// Architecture-specific allowed syscalls, by Rust `target_arch`.
pub fn arch_allowed(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["arch_prctl", "modify_ldt"],
        "aarch64" | "arm" => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        _ => &[],
    }
}

/// The seccomp architectures of a Rust `target_arch` (native plus compat).
pub fn seccomp_arches(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        _ => &[],
    }
}

/// The `linux.seccomp` object of the runtime spec for `arch`.
pub fn default_profile(arch: &str) -> Value {
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    allowed.extend_from_slice(arch_allowed(arch));
    let personality: Vec<Value> = [0u64, 8, 0x20000, 0x20008, 0xffff_ffff]
        .iter()
        .map(|v| {
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let mut syscalls = vec![
        json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}),
        json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE"}]}),
        json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0,
                         "op": "SCMP_CMP_MASKED_EQ"}]}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}),
    ];
    syscalls.extend(personality);
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": DEFAULT_ERRNO,
        "architectures": seccomp_arches(arch),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::LinuxSeccomp;

    #[test]
    fn profile_parses_as_oci_seccomp_for_each_arch() {
        for arch in ["x86_64", "aarch64"] {
            let parsed: LinuxSeccomp = serde_json::from_value(default_profile(arch))
                .unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert!(
                !parsed.architectures().as_ref().unwrap().is_empty(),
                "{arch}"
            );
        }
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        // Each of these needs a capability apps never get; allowing one would
        // be a container escape or host-wide effect.
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "bpf",
            "reboot",
            "init_module",
            "kexec_load",
            "open_by_handle_at",
            "pivot_root",
            "keyctl",
            "add_key",
            "swapon",
            "perf_event_open",
            "userfaultfd",
            "clock_settime",
            // Kernel attack surface whose operations seccomp cannot see.
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ] {
            for arch in ["x86_64", "aarch64"] {
                let p = default_profile(arch);
                let listed = p["syscalls"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
                    .any(|r| r["names"].as_array().unwrap().iter().any(|n| n == name));
                assert!(!listed, "{name} allowed on {arch}");
            }
        }
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for n in ALLOWED.iter().chain(arch_allowed("x86_64")) {
            assert!(seen.insert(n), "duplicate {n}");
        }
    }
}
