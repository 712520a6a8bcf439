//! THE syscall allow-list: one table, grouped by why each call is safe, in the spirit of
//! Sandstorm's seccomp policy. [`crate::seccomp`] compiles it to BPF and `elastos policy show`
//! prints it, so what is reviewed here is exactly what runs.
//!
//! Everything not in [`ALLOW_LIST`] fails with `ENOSYS` ([`DENIED_ERRNO`]). `ENOSYS` is the
//! sentinel for "elastos's filter said no" (the kernel itself rarely answers it for a syscall it
//! has), and it is what a libc expects from a kernel too old for a call, so libcs fall back
//! gracefully: `clone3` -> `clone`, `fchmodat2` -> `fchmodat`, `faccessat2` -> `faccessat`. An
//! allowed call whose arguments its row refuses fails with the errno of that row's check
//! (`EPERM`, `ENOTTY`, `ENOPROTOOPT`), never with `ENOSYS`.
//!
//! Notable denials, by absence from the table:
//! - **processes**: `fork`, `vfork`, `clone3` (its flags live in memory, which BPF cannot read, so
//!   it cannot be limited to threads) and `clone` without `CLONE_THREAD`. The app is one process.
//! - **network**: `socket`, `socketpair`, `bind`, `listen`, `connect`, `accept*`. The app only
//!   uses sockets it was given (fd 3).
//! - **privilege and other processes**: every `set*id`/`setgroups`, `capset`, `ptrace`,
//!   `process_vm_*`, `pidfd_*`, `kcmp`, `seccomp` (see [`ArgCheck::PrctlIn`] for `prctl`).
//! - **kernel attack surface**: `bpf`, `io_uring_*`, `perf_event_open`, `userfaultfd`, keyrings,
//!   the mount API, namespaces (`unshare`, `setns`), modules, `kexec`, `reboot`, `swapon`,
//!   clock setting, `iopl`/`ioperm`, `personality`, `execveat`, `open_by_handle_at`.
//!
//! Architectures: the filter is compiled for the build architecture (x86_64 or aarch64) and
//! kills a process that enters the kernel under any other audit arch (e.g. i386 `int 0x80` on
//! x86_64). x32 syscalls arrive with the x86_64 audit arch but with bit 30 set in the number
//! (`nr | 0x4000_0000`); no entry of this table has that bit, so they are all denied.

/// The errno of every syscall the table does not allow.
pub const DENIED_ERRNO: i32 = libc::ENOSYS;

/// One allowed syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedSyscall {
    /// The libc constant, e.g. `SYS_read`; see [`AllowedSyscall::name`].
    constant: &'static str,
    /// The syscall number on the build architecture.
    pub nr: i64,
    /// Which arguments are acceptable.
    pub check: ArgCheck,
    /// Why allowing it cannot hurt anything outside the jail.
    pub reason: &'static str,
}

impl AllowedSyscall {
    /// The syscall's name, e.g. `read`.
    pub fn name(&self) -> &'static str {
        self.constant.trim_start_matches("SYS_")
    }
}

/// A named constant that appears in an argument check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    /// The constant's C name, e.g. `TIOCSTI`.
    pub name: &'static str,
    /// Its value (every checked argument is a 32-bit value in the kernel).
    pub value: u32,
}

/// One `ioctl` request the app may make, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedIoctl {
    /// The request.
    pub request: Named,
    /// Why it cannot reach beyond the fd, or what reaches beyond and why that is acceptable.
    pub reason: &'static str,
}

/// Which arguments an allowed syscall may have.
///
/// Every check compares the low 32 bits of an argument only, because each checked argument is a
/// 32-bit type in the kernel (`int` or `unsigned int`), which truncates the 64-bit register: a
/// 64-bit compare could be bypassed by setting the high bits.
///
/// A call whose arguments are refused fails with the errno of its check, which is never
/// [`DENIED_ERRNO`]: the call exists and the app may make it, only not with these arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgCheck {
    /// Any arguments.
    Any,
    /// `clone`: `flags & (CLONE_THREAD | CLONE_NEW*) == CLONE_THREAD`, i.e. a new thread of this
    /// process and no new namespace. `CLONE_THREAD` needs `CLONE_SIGHAND`, which needs
    /// `CLONE_VM`, so the result always shares this address space. (`CLONE_NEWTIME` is not in
    /// the mask: its bit is part of the exit-signal byte for `clone`, so only `clone3` can ask
    /// for it, and `clone3` is denied.)
    CloneThreadOnly,
    /// `ioctl`: only these requests (argument 1); any other fails with `ENOTTY`, what the
    /// kernel answers for a request the fd does not support, so programs take their fallback.
    IoctlIn(&'static [AllowedIoctl]),
    /// `prctl`: only these options.
    PrctlIn(&'static [Named]),
    /// Argument 0 (a pid) is 0: the call acts on the caller itself.
    OwnProcessOnly,
    /// None of `bits` is set in argument `arg`; a call with any of them fails with `errno`.
    BitsClear {
        /// The 0-based index of the argument.
        arg: usize,
        /// The refused bits.
        bits: &'static [Named],
        /// The errno of a refused call.
        errno: Named,
    },
    /// `getsockopt`: at level `SOL_SOCKET` (argument 1), any option (argument 2) but these,
    /// which fail with `ENOPROTOOPT`, what kernels answer for an option they do not have.
    SocketOptionNot(&'static [Named]),
}

/// The `clone` flags whose masked value must equal `CLONE_THREAD` ([`ArgCheck::CloneThreadOnly`]).
pub const CLONE_CHECKED_FLAGS: u32 = (libc::CLONE_THREAD
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

impl ArgCheck {
    /// A one-line description for people, e.g. `option in {PR_SET_NAME, PR_GET_NAME}`.
    pub fn describe(&self) -> String {
        let names = |list: &[Named]| {
            let names: Vec<&str> = list.iter().map(|n| n.name).collect();
            names.join(", ")
        };
        match self {
            ArgCheck::Any => "any arguments".to_owned(),
            ArgCheck::CloneThreadOnly => {
                "flags & (CLONE_THREAD | CLONE_NEW*) == CLONE_THREAD: threads only".to_owned()
            }
            ArgCheck::IoctlIn(list) => {
                let requests: Vec<Named> = list.iter().map(|i| i.request).collect();
                format!(
                    "request (low 32 bits) in {{{}}}; any other fails with ENOTTY",
                    names(&requests)
                )
            }
            ArgCheck::PrctlIn(list) => format!("option in {{{}}}", names(list)),
            ArgCheck::OwnProcessOnly => "pid == 0: the caller itself".to_owned(),
            ArgCheck::BitsClear { arg, bits, errno } => format!(
                "argument {arg} has none of {{{}}}; else fails with {}",
                names(bits),
                errno.name
            ),
            ArgCheck::SocketOptionNot(list) => format!(
                "option not SOL_SOCKET/{{{}}}; those fail with ENOPROTOOPT",
                names(list)
            ),
        }
    }
}

/// Allowed syscalls that share one reason for being safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallGroup {
    /// What the group is about, e.g. `memory`.
    pub name: &'static str,
    pub syscalls: &'static [AllowedSyscall],
}

macro_rules! allow {
    ($constant:ident, $reason:literal) => {
        allow!($constant if ArgCheck::Any, $reason)
    };
    ($constant:ident if $check:expr, $reason:literal) => {
        AllowedSyscall {
            constant: stringify!($constant),
            nr: libc::$constant,
            check: $check,
            reason: $reason,
        }
    };
}

macro_rules! named {
    ($constant:ident) => {
        Named {
            name: stringify!($constant),
            value: libc::$constant as u32,
        }
    };
}

macro_rules! ioctl {
    ($constant:ident, $reason:literal) => {
        AllowedIoctl {
            request: named!($constant),
            reason: $reason,
        }
    };
}

/// The `ioctl` requests the app may make; every other one fails with `ENOTTY`. An ioctl is a
/// syscall of its own per driver and per filesystem, so the filter names the few that glibc,
/// Rust std, Python and terminal programs use on the fds they hold, and nothing else: not the
/// network-device requests a socket reaches (`SIOCGIFCONF` lists the host's interfaces through
/// fd 3, a socket of the host's network namespace; `SIOCETHTOOL`), nor filesystem ones
/// (`FS_IOC_*`, `FICLONE`), nor the terminal requests that act beyond the app's own output:
/// `TIOCSTI` (types into the user's shell), `TIOCLINUX`, `TIOCCONS`, `TIOCSETD` (line
/// disciplines, kernel code with a CVE history), `TIOCSWINSZ` and `TIOCSPGRP` (the terminal's
/// size and foreground group belong to the user's shell).
static IOCTL_ALLOWED: &[AllowedIoctl] = &[
    ioctl!(
        TCGETS,
        "reads a terminal's settings: isatty() in glibc, Rust std and Python is this request"
    ),
    ioctl!(
        TCGETS2,
        "as TCGETS with arbitrary speeds (newer glibc's tcgetattr)"
    ),
    ioctl!(
        TCSETS,
        "sets the settings of a terminal it was handed (raw mode, no echo for a password), as \
        any program run in that terminal may"
    ),
    ioctl!(TCSETSW, "as TCSETS, after output drains"),
    ioctl!(
        TCSETSF,
        "as TCSETS, after output drains and pending input is dropped"
    ),
    ioctl!(TCSETS2, "as TCSETS (newer glibc's tcsetattr)"),
    ioctl!(TCSETSW2, "as TCSETSW (newer glibc's tcsetattr)"),
    ioctl!(TCSETSF2, "as TCSETSF (newer glibc's tcsetattr)"),
    ioctl!(
        TIOCGWINSZ,
        "reads the terminal's size (get_terminal_size, line editors)"
    ),
    ioctl!(
        TIOCGPGRP,
        "reads the terminal's foreground group (tcgetpgrp); the app sees 0 for a group of \
        another pid namespace"
    ),
    ioctl!(
        FIONREAD,
        "bytes ready to read on an fd it holds (also SIOCINQ on sockets)"
    ),
    ioctl!(
        FIONBIO,
        "sets O_NONBLOCK on its own fd (Rust std's set_nonblocking), as fcntl does"
    ),
    ioctl!(
        FIOASYNC,
        "sets O_ASYNC on its own fd, as fcntl does; the signal goes to its own pid namespace"
    ),
    ioctl!(
        FIOCLEX,
        "sets close-on-exec on its own fd (Rust std), as fcntl does"
    ),
    ioctl!(
        FIONCLEX,
        "clears close-on-exec on its own fd, as fcntl does"
    ),
];

/// The mode bits that make an executable run as its owner or group.
const SET_ID_BITS: &[Named] = &[named!(S_ISUID), named!(S_ISGID)];

/// The `chmod`-family check: the mode (argument `arg`, a `umode_t`) has no set-id bit.
const fn no_set_id_mode(arg: usize) -> ArgCheck {
    ArgCheck::BitsClear {
        arg,
        bits: SET_ID_BITS,
        errno: named!(EPERM),
    }
}

/// Out-of-band data on a socket.
const OOB: &[Named] = &[named!(MSG_OOB)];

/// The socket send and receive check: the flags (argument `arg`) have no `MSG_OOB`.
const fn no_oob(arg: usize) -> ArgCheck {
    ArgCheck::BitsClear {
        arg,
        bits: OOB,
        errno: named!(EPERM),
    }
}

/// `SO_PEERPIDFD` (Linux 6.5, `include/uapi/asm-generic/socket.h`; not in the libc crate yet).
pub const SO_PEERPIDFD: Named = Named {
    name: "SO_PEERPIDFD",
    value: 77,
};

/// `SOL_SOCKET` options `getsockopt` refuses.
const SOCKET_OPTIONS_DENIED: &[Named] = &[SO_PEERPIDFD];

/// `prctl` options that only read or tune the calling process.
const PRCTL_ALLOWED: &[Named] = &[
    named!(PR_SET_NAME),
    named!(PR_GET_NAME),
    named!(PR_SET_PDEATHSIG),
    named!(PR_GET_PDEATHSIG),
    named!(PR_GET_DUMPABLE),
    named!(PR_SET_DUMPABLE),
    named!(PR_SET_VMA),
    named!(PR_GET_NO_NEW_PRIVS),
    named!(PR_SET_NO_NEW_PRIVS),
    named!(PR_CAPBSET_READ),
    named!(PR_GET_SECCOMP),
    named!(PR_SET_TIMERSLACK),
    named!(PR_GET_TIMERSLACK),
    named!(PR_SET_THP_DISABLE),
    named!(PR_GET_THP_DISABLE),
];

/// Every syscall the app may make, grouped. Order within the table has no effect on the filter.
pub static ALLOW_LIST: &[SyscallGroup] = &[
    SyscallGroup {
        name: "memory",
        syscalls: &[
            allow!(SYS_brk, "moves the end of the caller's own heap"),
            allow!(
                SYS_mmap,
                "maps memory, or a file it already holds open, into its own address space"
            ),
            allow!(SYS_munmap, "unmaps its own memory"),
            allow!(
                SYS_mprotect,
                "changes protection of its own memory (JITs need PROT_EXEC)"
            ),
            allow!(SYS_mremap, "resizes its own mappings"),
            allow!(
                SYS_madvise,
                "advice about its own pages; the dangerous advice values need CAP_SYS_ADMIN"
            ),
            allow!(SYS_msync, "flushes its own file mappings"),
            allow!(SYS_mincore, "reports residency of its own pages"),
            allow!(SYS_mlock, "pins its own pages, bounded by RLIMIT_MEMLOCK"),
            allow!(SYS_mlock2, "pins its own pages, bounded by RLIMIT_MEMLOCK"),
            allow!(SYS_munlock, "unpins its own pages"),
            allow!(SYS_membarrier, "memory barrier across its own threads"),
        ],
    },
    SyscallGroup {
        name: "files (paths are Landlock's job)",
        syscalls: &[
            allow!(SYS_close, "closes its own fd"),
            allow!(SYS_close_range, "closes its own fds"),
            allow!(
                SYS_newfstatat,
                "metadata of paths in its own mount namespace"
            ),
            allow!(SYS_fstat, "metadata of an fd it holds"),
            allow!(SYS_statx, "metadata of paths in its own mount namespace"),
            allow!(SYS_statfs, "filesystem metadata in its own mount namespace"),
            allow!(SYS_fstatfs, "filesystem metadata of an fd it holds"),
            allow!(
                SYS_getdents64,
                "lists a directory it opened (Landlock: read_dir)"
            ),
            allow!(SYS_readlinkat, "reads symlinks in its own mount namespace"),
            allow!(
                SYS_faccessat,
                "permission check only; opening is still up to Landlock"
            ),
            allow!(
                SYS_faccessat2,
                "permission check only; opening is still up to Landlock"
            ),
            allow!(SYS_mkdirat, "Landlock: make_dir"),
            allow!(SYS_unlinkat, "Landlock: remove_file / remove_dir"),
            allow!(
                SYS_renameat2,
                "Landlock: remove, make and refer rights on both sides"
            ),
            allow!(SYS_linkat, "Landlock: make and refer rights"),
            allow!(SYS_symlinkat, "Landlock: make_sym"),
            allow!(SYS_truncate, "Landlock: truncate"),
            allow!(SYS_ftruncate, "truncates a file it opened for writing"),
            allow!(
                SYS_fallocate,
                "allocates space in a file it opened for writing"
            ),
            allow!(
                SYS_utimensat,
                "timestamps; DAC allows only owners and writers"
            ),
            allow!(SYS_umask, "its own file creation mask"),
            allow!(SYS_getcwd, "its own working directory"),
            allow!(SYS_chdir, "moves within its own mount namespace"),
            allow!(SYS_fchdir, "moves within its own mount namespace"),
            allow!(SYS_fsync, "flushes a file it holds"),
            allow!(SYS_fdatasync, "flushes a file it holds"),
            allow!(SYS_flock, "advisory lock on a file it holds"),
            allow!(SYS_fadvise64, "caching advice for a file it holds"),
            allow!(SYS_inotify_init1, "file events in its own mount namespace"),
            allow!(
                SYS_inotify_add_watch,
                "file events in its own mount namespace"
            ),
            allow!(
                SYS_inotify_rm_watch,
                "file events in its own mount namespace"
            ),
            allow!(
                SYS_getxattr,
                "reads extended attributes (writing them is denied: Landlock does not cover it)"
            ),
            allow!(SYS_lgetxattr, "reads extended attributes"),
            allow!(SYS_fgetxattr, "reads extended attributes"),
            allow!(SYS_listxattr, "lists extended attributes"),
            allow!(SYS_llistxattr, "lists extended attributes"),
            allow!(SYS_flistxattr, "lists extended attributes"),
        ],
    },
    SyscallGroup {
        name: "fds and I/O",
        syscalls: &[
            allow!(SYS_read, "I/O on an fd it holds"),
            allow!(SYS_write, "I/O on an fd it holds"),
            allow!(SYS_pread64, "I/O on an fd it holds"),
            allow!(SYS_pwrite64, "I/O on an fd it holds"),
            allow!(SYS_readv, "I/O on an fd it holds"),
            allow!(SYS_writev, "I/O on an fd it holds"),
            allow!(SYS_preadv, "I/O on an fd it holds"),
            allow!(SYS_pwritev, "I/O on an fd it holds"),
            allow!(SYS_preadv2, "I/O on an fd it holds"),
            allow!(SYS_pwritev2, "I/O on an fd it holds"),
            allow!(SYS_lseek, "file offset of an fd it holds"),
            allow!(SYS_sendfile, "copies between fds it holds"),
            allow!(SYS_splice, "copies between fds it holds"),
            allow!(SYS_tee, "copies between fds it holds"),
            allow!(SYS_copy_file_range, "copies between fds it holds"),
            allow!(
                SYS_dup,
                "duplicates its own fd (RLIMIT_NOFILE bounds the count)"
            ),
            allow!(
                SYS_dup3,
                "duplicates its own fd (RLIMIT_NOFILE bounds the count)"
            ),
            allow!(
                SYS_fcntl,
                "fd flags and locks; F_SETOWN can only name processes of its own \
                pid namespace (and Landlock ABI 6 scopes SIGIO like kill)"
            ),
            allow!(SYS_pipe2, "a pipe between its own fds"),
            allow!(SYS_eventfd2, "a counter fd of its own"),
            allow!(SYS_epoll_create1, "waits on its own fds"),
            allow!(SYS_epoll_ctl, "waits on its own fds"),
            allow!(SYS_epoll_pwait, "waits on its own fds"),
            allow!(SYS_epoll_pwait2, "waits on its own fds"),
            allow!(SYS_ppoll, "waits on its own fds"),
            allow!(SYS_pselect6, "waits on its own fds"),
        ],
    },
    SyscallGroup {
        name: "sockets it was given (fd 3; it can create none)",
        syscalls: &[
            allow!(SYS_shutdown, "closes one direction of a socket it holds"),
            allow!(SYS_getsockname, "address of a socket it holds"),
            allow!(SYS_getpeername, "peer address of a socket it holds"),
        ],
    },
    SyscallGroup {
        name: "time",
        syscalls: &[
            allow!(SYS_clock_gettime, "reads clocks (setting them is denied)"),
            allow!(SYS_clock_getres, "reads clock resolution"),
            allow!(SYS_gettimeofday, "reads the clock"),
            allow!(SYS_nanosleep, "sleeps"),
            allow!(SYS_clock_nanosleep, "sleeps"),
            allow!(SYS_getitimer, "its own interval timers"),
            allow!(SYS_setitimer, "its own interval timers"),
            allow!(SYS_timer_create, "POSIX timers that signal itself"),
            allow!(SYS_timer_settime, "its own POSIX timers"),
            allow!(SYS_timer_gettime, "its own POSIX timers"),
            allow!(SYS_timer_getoverrun, "its own POSIX timers"),
            allow!(SYS_timer_delete, "its own POSIX timers"),
            allow!(SYS_timerfd_create, "a timer fd of its own"),
            allow!(SYS_timerfd_settime, "a timer fd of its own"),
            allow!(SYS_timerfd_gettime, "a timer fd of its own"),
        ],
    },
    SyscallGroup {
        name: "threads and synchronisation",
        syscalls: &[
            allow!(SYS_futex, "waits and wakes on its own memory"),
            allow!(SYS_futex_waitv, "waits on its own memory"),
            allow!(SYS_set_robust_list, "futex cleanup list of its own thread"),
            allow!(SYS_set_tid_address, "its own thread's exit futex"),
            allow!(SYS_rseq, "restartable sequences of its own thread"),
            #[cfg(target_arch = "x86_64")]
            allow!(SYS_arch_prctl, "its own thread's TLS base and CPU features"),
        ],
    },
    SyscallGroup {
        name: "signals",
        syscalls: &[
            allow!(SYS_rt_sigaction, "its own handlers"),
            allow!(SYS_rt_sigprocmask, "its own mask"),
            allow!(SYS_rt_sigreturn, "returns from its own handler"),
            allow!(SYS_rt_sigsuspend, "waits for a signal"),
            allow!(SYS_rt_sigpending, "its own pending signals"),
            allow!(SYS_rt_sigtimedwait, "waits for a signal"),
            allow!(SYS_sigaltstack, "its own signal stack"),
            allow!(SYS_signalfd4, "receives its own signals on an fd"),
            allow!(SYS_restart_syscall, "resumes an interrupted call"),
            allow!(
                SYS_kill,
                "reaches only its own pid namespace, and with Landlock ABI 6 only the jail"
            ),
            allow!(SYS_tgkill, "as kill"),
            allow!(SYS_tkill, "as kill"),
        ],
    },
    SyscallGroup {
        name: "process identity and system information (read-only)",
        syscalls: &[
            allow!(SYS_getpid, "reads its own ids"),
            allow!(SYS_gettid, "reads its own ids"),
            allow!(SYS_getppid, "reads its own ids"),
            allow!(SYS_getuid, "reads its own ids"),
            allow!(SYS_geteuid, "reads its own ids"),
            allow!(SYS_getgid, "reads its own ids"),
            allow!(SYS_getegid, "reads its own ids"),
            allow!(SYS_getresuid, "reads its own ids"),
            allow!(SYS_getresgid, "reads its own ids"),
            allow!(SYS_getgroups, "reads its own ids"),
            allow!(SYS_getpgid, "reads its own ids"),
            allow!(SYS_getsid, "reads its own ids"),
            allow!(SYS_uname, "names from its own UTS namespace"),
            allow!(
                SYS_sysinfo,
                "memory and load totals (libc's get_phys_pages)"
            ),
            allow!(SYS_getrusage, "its own resource usage"),
            allow!(SYS_times, "its own CPU times"),
            allow!(SYS_getrandom, "reads the kernel's random pool"),
        ],
    },
    SyscallGroup {
        name: "scheduling",
        syscalls: &[
            allow!(SYS_sched_yield, "gives up its own time slice"),
            allow!(
                SYS_sched_getaffinity,
                "reads CPU affinity (thread pools size themselves by it)"
            ),
            allow!(SYS_sched_getparam, "reads scheduling parameters"),
            allow!(SYS_sched_getscheduler, "reads the scheduling policy"),
            allow!(SYS_sched_get_priority_max, "constant per policy"),
            allow!(SYS_sched_get_priority_min, "constant per policy"),
            allow!(SYS_getcpu, "which CPU it runs on"),
        ],
    },
    SyscallGroup {
        name: "exec, exit and wait (Landlock decides what runs)",
        syscalls: &[
            allow!(
                SYS_execve,
                "Landlock allows execute only on /app and the dynamic loader; the \
                new program keeps this filter, the Landlock domain and no_new_privs (set-id bits \
                and file capabilities are ignored). execveat is denied"
            ),
            allow!(SYS_exit, "ends its own thread"),
            allow!(SYS_exit_group, "ends its own process"),
            allow!(
                SYS_wait4,
                "waits for its own children (it cannot create any)"
            ),
            allow!(
                SYS_waitid,
                "waits for its own children (it cannot create any)"
            ),
        ],
    },
    SyscallGroup {
        name: "self-restriction",
        syscalls: &[
            allow!(
                SYS_landlock_create_ruleset,
                "Landlock domains only ever narrow access"
            ),
            allow!(
                SYS_landlock_add_rule,
                "Landlock domains only ever narrow access"
            ),
            allow!(
                SYS_landlock_restrict_self,
                "Landlock domains only ever narrow access"
            ),
        ],
    },
    SyscallGroup {
        name: "examine the arguments",
        syscalls: &[
            allow!(SYS_clone if ArgCheck::CloneThreadOnly, "threads of its own process; no new \
                process, no namespace"),
            allow!(SYS_ioctl if ArgCheck::IoctlIn(IOCTL_ALLOWED), "the requests listed below, on \
                fds it holds; each driver and filesystem has requests of its own, so any other \
                fails with ENOTTY"),
            allow!(SYS_prctl if ArgCheck::PrctlIn(PRCTL_ALLOWED), "options that read or tune \
                only the caller; PR_SET_DUMPABLE only switches between the post-exec default and \
                \"not dumpable\" (ptrace is denied and the loader disables core dumps anyway)"),
            allow!(SYS_openat if no_set_id_mode(3), "Landlock decides which paths open, for \
                what; a file it creates gets no set-id bit (EPERM), as in fchmod. The mode is \
                checked whatever the flags (libcs pass 0 or 0666 when not creating). openat2 is \
                denied: its mode lies in memory, out of the filter's sight (libcs use openat)"),
            allow!(SYS_mknodat if no_set_id_mode(2), "Landlock: make_fifo and friends; device \
                nodes need CAP_MKNOD; no set-id bit, as in openat"),
            allow!(SYS_fchmod if no_set_id_mode(1), "Landlock does not cover modes; DAC does: \
                only files the app owns (its home, /tmp, or a file of the user's handed to it as \
                stdout when the app runs as that user). Set-id bits are refused (EPERM), like \
                systemd's RestrictSUIDSGID: no_new_privs makes execve ignore them in the jail, \
                but not on the host, where fchmod(1, 04755) on a stdout file of the user's would \
                leave a setuid program of the user's behind"),
            allow!(SYS_fchmodat if no_set_id_mode(2), "as fchmod"),
            allow!(SYS_sendmsg if no_oob(2), "sends on a socket it holds, e.g. fds to the broker; \
                MSG_OOB refused (see recvmsg)"),
            allow!(SYS_recvmsg if no_oob(2), "receives on a socket it holds; MSG_OOB is refused \
                (EPERM): AF_UNIX out-of-band data is rarely used kernel code with a use-after-free \
                in 2025 (Chromium's sandbox refuses it too), and the broker never sends it"),
            allow!(SYS_sendto if no_oob(3), "as sendmsg"),
            allow!(SYS_recvfrom if no_oob(3), "as recvmsg"),
            allow!(SYS_getsockopt if ArgCheck::SocketOptionNot(SOCKET_OPTIONS_DENIED), "reads \
                options of a socket it holds (setsockopt is denied: it reaches socket filters), \
                except SO_PEERPIDFD: a pidfd of the peer, the broker, a host process"),
            allow!(SYS_prlimit64 if ArgCheck::OwnProcessOnly, "its own limits: lowering is \
                harmless, raising stops at the hard limit, which needs CAP_SYS_RESOURCE to \
                raise; other processes (the loader) are out of reach"),
        ],
    },
    #[cfg(target_arch = "x86_64")]
    SyscallGroup {
        name: "legacy x86_64 forms of the calls above (same meaning, same checks)",
        syscalls: &[
            allow!(SYS_open if no_set_id_mode(2), "as openat"),
            allow!(SYS_creat if no_set_id_mode(1), "as openat"),
            allow!(SYS_stat, "as newfstatat"),
            allow!(SYS_lstat, "as newfstatat"),
            allow!(SYS_access, "as faccessat"),
            allow!(SYS_readlink, "as readlinkat"),
            allow!(SYS_getdents, "as getdents64"),
            allow!(SYS_mkdir, "as mkdirat"),
            allow!(SYS_mknod if no_set_id_mode(1), "as mknodat"),
            allow!(SYS_rmdir, "as unlinkat"),
            allow!(SYS_unlink, "as unlinkat"),
            allow!(SYS_rename, "as renameat2"),
            allow!(SYS_renameat, "as renameat2"),
            allow!(SYS_link, "as linkat"),
            allow!(SYS_symlink, "as symlinkat"),
            allow!(SYS_chmod if no_set_id_mode(1), "as fchmodat"),
            allow!(SYS_utime, "as utimensat"),
            allow!(SYS_utimes, "as utimensat"),
            allow!(SYS_futimesat, "as utimensat"),
            allow!(SYS_pipe, "as pipe2"),
            allow!(SYS_dup2, "as dup3"),
            allow!(SYS_poll, "as ppoll"),
            allow!(SYS_select, "as pselect6"),
            allow!(SYS_epoll_create, "as epoll_create1"),
            allow!(SYS_epoll_wait, "as epoll_pwait"),
            allow!(SYS_eventfd, "as eventfd2"),
            allow!(SYS_signalfd, "as signalfd4"),
            allow!(SYS_inotify_init, "as inotify_init1"),
            allow!(SYS_time, "as clock_gettime"),
            allow!(SYS_alarm, "as setitimer"),
            allow!(SYS_pause, "as rt_sigsuspend"),
            allow!(SYS_getpgrp, "as getpgid"),
            allow!(SYS_getrlimit, "as prlimit64 reading its own limits"),
            allow!(SYS_setrlimit, "as prlimit64 on itself"),
        ],
    },
];

/// Every allowed syscall with the name of its group, in table order.
pub fn allowed_syscalls() -> impl Iterator<Item = (&'static str, &'static AllowedSyscall)> {
    ALLOW_LIST
        .iter()
        .flat_map(|group| group.syscalls.iter().map(move |s| (group.name, s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn no_syscall_is_listed_twice() {
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for (_, syscall) in allowed_syscalls() {
            assert!(
                names.insert(syscall.name()),
                "{} listed twice",
                syscall.name()
            );
            assert!(
                numbers.insert(syscall.nr),
                "number of {} listed twice",
                syscall.name()
            );
        }
    }

    #[test]
    fn every_row_has_a_name_a_reason_and_a_plain_number() {
        for (group, syscall) in allowed_syscalls() {
            assert!(!group.is_empty());
            assert!(!syscall.name().is_empty() && !syscall.name().starts_with("SYS_"));
            assert!(
                !syscall.reason.trim().is_empty(),
                "{} has no reason",
                syscall.name()
            );
            // No x32 (bit 30) or negative numbers: the filter compares the number exactly.
            assert!((0..0x4000_0000).contains(&syscall.nr), "{}", syscall.name());
        }
    }

    /// The calls the design forbids outright. Each must be absent from the table.
    const FORBIDDEN: &[&str] = &[
        "fork",
        "vfork",
        "clone3",
        "socket",
        "socketpair",
        "bind",
        "listen",
        "connect",
        "accept",
        "accept4",
        "setsockopt",
        "execveat",
        "memfd_create",
        "memfd_secret",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "keyctl",
        "add_key",
        "request_key",
        "mount",
        "umount2",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "pivot_root",
        "chroot",
        "unshare",
        "setns",
        "open_by_handle_at",
        "name_to_handle_at",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "syslog",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
        "personality",
        "quotactl",
        "lookup_dcookie",
        "vhangup",
        "pidfd_getfd",
        "pidfd_open",
        "pidfd_send_signal",
        "process_madvise",
        "kcmp",
        "setuid",
        "setgid",
        "setreuid",
        "setregid",
        "setresuid",
        "setresgid",
        "setfsuid",
        "setfsgid",
        "setgroups",
        "capset",
        "seccomp",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "modify_ldt",
        "uselib",
        "mbind",
        "migrate_pages",
        "move_pages",
        "setpriority",
        "sched_setscheduler",
        "sched_setaffinity",
        "sync",
        "syncfs",
        // Their mode or flags would need the checks of fchmodat and sendmsg/recvmsg; libcs
        // fall back to those on ENOSYS.
        "fchmodat2",
        "openat2",
        "sendmmsg",
        "recvmmsg",
    ];

    #[test]
    fn forbidden_syscalls_are_absent() {
        for (_, syscall) in allowed_syscalls() {
            assert!(
                !FORBIDDEN.contains(&syscall.name()),
                "{} must not be allowed",
                syscall.name()
            );
        }
    }

    #[test]
    fn the_syscalls_that_need_arguments_checked_are_checked() {
        let check = |name: &str| {
            allowed_syscalls()
                .find(|(_, s)| s.name() == name)
                .map(|(_, s)| s.check)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(check("clone"), ArgCheck::CloneThreadOnly);
        assert_eq!(check("ioctl"), ArgCheck::IoctlIn(IOCTL_ALLOWED));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(check("chmod"), no_set_id_mode(1));
        assert_eq!(check("fchmod"), no_set_id_mode(1));
        assert_eq!(check("fchmodat"), no_set_id_mode(2));
        assert_eq!(check("openat"), no_set_id_mode(3));
        assert_eq!(check("mknodat"), no_set_id_mode(2));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(check("open"), no_set_id_mode(2));
            assert_eq!(check("creat"), no_set_id_mode(1));
            assert_eq!(check("mknod"), no_set_id_mode(1));
        }
        assert_eq!(check("sendmsg"), no_oob(2));
        assert_eq!(check("recvmsg"), no_oob(2));
        assert_eq!(check("sendto"), no_oob(3));
        assert_eq!(check("recvfrom"), no_oob(3));
        assert_eq!(
            check("getsockopt"),
            ArgCheck::SocketOptionNot(SOCKET_OPTIONS_DENIED)
        );
        assert_eq!(check("prctl"), ArgCheck::PrctlIn(PRCTL_ALLOWED));
        assert_eq!(check("prlimit64"), ArgCheck::OwnProcessOnly);
    }

    #[test]
    fn prctl_never_allows_changing_privileges_or_filters() {
        let allowed: Vec<u32> = PRCTL_ALLOWED.iter().map(|n| n.value).collect();
        for forbidden in [
            libc::PR_SET_SECCOMP,
            libc::PR_CAPBSET_DROP,
            libc::PR_SET_KEEPCAPS,
            libc::PR_SET_SECUREBITS,
            libc::PR_CAP_AMBIENT,
            libc::PR_SET_MM,
            libc::PR_SET_PTRACER,
            libc::PR_SET_CHILD_SUBREAPER,
        ] {
            assert!(
                !allowed.contains(&(forbidden as u32)),
                "prctl option {forbidden}"
            );
        }
    }

    #[test]
    fn ioctl_allows_no_request_that_reaches_beyond_the_fd() {
        let allowed: Vec<u32> = IOCTL_ALLOWED.iter().map(|i| i.request.value).collect();
        for forbidden in [
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::TIOCSETD,
            libc::TIOCCONS,
            libc::TIOCSWINSZ,
            libc::TIOCSPGRP,
            libc::TIOCSCTTY,
            libc::SIOCGIFCONF,
            libc::SIOCETHTOOL,
            libc::FS_IOC_GETFLAGS,
            libc::FS_IOC_SETFLAGS,
            libc::FICLONE,
        ] {
            assert!(
                !allowed.contains(&(forbidden as u32)),
                "ioctl {forbidden:#x}"
            );
        }
        let mut unique = allowed.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            allowed.len(),
            "an ioctl request is listed twice"
        );
        assert!(IOCTL_ALLOWED.iter().all(|i| !i.reason.trim().is_empty()));
    }

    #[test]
    fn clone_mask_covers_every_namespace_flag_clone_accepts() {
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            assert_ne!(CLONE_CHECKED_FLAGS & flag as u32, 0, "{flag:#x}");
        }
    }

    #[test]
    fn descriptions_name_every_constant() {
        let ioctl = ArgCheck::IoctlIn(IOCTL_ALLOWED).describe();
        assert!(
            IOCTL_ALLOWED.iter().all(|i| ioctl.contains(i.request.name)),
            "{ioctl}"
        );
        assert_eq!(
            no_set_id_mode(1).describe(),
            "argument 1 has none of {S_ISUID, S_ISGID}; else fails with EPERM"
        );
        let prctl = ArgCheck::PrctlIn(PRCTL_ALLOWED).describe();
        assert!(
            PRCTL_ALLOWED.iter().all(|n| prctl.contains(n.name)),
            "{prctl}"
        );
    }
}
