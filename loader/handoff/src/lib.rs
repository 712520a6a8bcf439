//! What the launcher hands the loader across `execve`, and what the loader reports back.
//!
//! The loader starts with a fixed fd layout (see [`fds`]); it reads one [`LoaderInput`] from
//! [`fds::INPUT`] until EOF and writes [`Report`] lines to [`fds::REPORT`]: `ready` once the entry
//! runs (or `failed`/`exec-failed` instead), later `exited`/`killed` when it ends.
//!
//! Both sides link this crate: the launcher (`elastos-loader`) and the loader binary
//! (`elastos-loader-exe`), which links neither libc nor std. So it is `no_std`, uses only `core`
//! and `alloc`, and encodes by hand, without serde: the input is a small binary record
//! ([`LoaderInput::encode`]), a report is one line of text ([`Report::to_line`]) that reads well
//! in an strace. Decoding is strict: the loader trusts the launcher, but a stale loader next to a
//! newer launcher must fail clearly, never misread.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The loader's file descriptors at start.
pub mod fds {
    /// The app's IPC socket; stays open in the app as `ELASTOS_IPC_FD=3`.
    pub const IPC: i32 = 3;
    /// Read end of the pipe carrying the [`super::LoaderInput`]; closed after reading.
    pub const INPUT: i32 = 4;
    /// Write end of the report pipe; close-on-exec.
    pub const REPORT: i32 = 5;
    /// The first of the host mount sources (`O_PATH`), in [`super::LoaderInput::mounts`] order;
    /// closed as soon as the jail's filesystem is built.
    pub const FIRST_SOURCE: i32 = 6;
    /// In a process added to a running jail (the loader's `join` mode, which mounts nothing):
    /// the running app's user namespace, joined and closed before the app's steps.
    pub const APP_USER_NAMESPACE: i32 = 6;
}

/// Version of the input record; the loader refuses any other (launcher and loader come from the
/// same build, so a mismatch means a stale `elastos-loader` next to `elastos`).
///
/// 2: a [`ResolvedMount::Tmpfs`] also bounds its inodes ([`tmpfs_inodes`]); a version-1 loader
/// would mount it without that bound, so it must refuse the record.
const INPUT_VERSION: u32 = 2;

/// The fewest inodes a tmpfs of the jail gets, whatever its size: the root tmpfs holds a few
/// dozen mount points and symlinks, `/dev` a dozen.
pub const TMPFS_MIN_INODES: u64 = 1024;

/// Bytes of a tmpfs's size per inode it may hold: one page.
pub const TMPFS_BYTES_PER_INODE: u64 = 4096;

/// The inode limit (`nr_inodes`) of a tmpfs of `size_bytes`: one per 4 KiB page of its size, at
/// least [`TMPFS_MIN_INODES`].
///
/// `size` bounds only the pages of file contents. An empty file, a directory or a symlink costs
/// no page but an inode and a dentry of kernel slab (~1 KiB), which no tmpfs size and, on some
/// hosts, no memory limit of the app counts: 300,000 empty files in an unbounded `/tmp` grew the
/// slab by 299 MiB while the app stayed under its 64 MiB limit. With one inode per page, files
/// can be no more numerous than if each held data, so the slab a tmpfs can pin is about a
/// quarter of its size.
pub const fn tmpfs_inodes(size_bytes: u64) -> u64 {
    let inodes = size_bytes / TMPFS_BYTES_PER_INODE;
    if inodes < TMPFS_MIN_INODES {
        TMPFS_MIN_INODES
    } else {
        inodes
    }
}

/// Kernel counters the app is held to, whoever launched it, so that it cannot use up what the
/// kernel counts per user: the loader sets them for every app (same values for every manifest).
///
/// Why: the kernel charges an inotify instance, a watch, a pending signal or a namespace to
/// every level of the user-namespace tree, each level to the uid that owns the namespace below
/// (`inc_ucount`, `inc_rlimit_ucounts`). Without these limits an app launched by root took all
/// of root's 128 inotify instances (every root daemon's `inotify_init1` then failed with
/// `EMFILE`) and all 96,370 of root's pending signals (root's `sigqueue` failed with `EAGAIN`),
/// and one launched by a user took that user's. Each `user.max_*` limit of the jail's outer user
/// namespace bounds what the app, whose own namespace is nested in it, can take at that level;
/// the rlimits bound what is counted per real uid.
pub mod kernel_counters {
    /// One `/proc/sys/user/max_*` limit of the jail's outer user namespace, written by the
    /// loader (uid 0 there, with `CAP_SYS_RESOURCE` over it) before it nests the app's own.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct UserNamespaceLimit {
        /// The file under `/proc/sys/user/`.
        pub name: &'static str,
        /// The limit.
        pub value: u64,
        /// Why this value, printed by `elastos policy show`.
        pub reason: &'static str,
    }

    const fn limit(name: &'static str, value: u64, reason: &'static str) -> UserNamespaceLimit {
        UserNamespaceLimit {
            name,
            value,
            reason,
        }
    }

    /// The limits, in the order they are written. A file the kernel lacks (an older kernel) is
    /// skipped: the namespace or object it counts does not exist there either.
    pub const USER_NAMESPACE_LIMITS: &[UserNamespaceLimit] = &[
        limit(
            "max_inotify_instances",
            16,
            "file watchers need one or a few; the host's default for a whole user is 128",
        ),
        limit(
            "max_inotify_watches",
            8192,
            "~1 KiB of kernel memory each; enough for a large source tree",
        ),
        limit(
            "max_user_namespaces",
            1,
            "the app's own, nested one, made by the loader; the app can make none (seccomp)",
        ),
        limit("max_mnt_namespaces", 0, "the app can make none (seccomp)"),
        limit("max_pid_namespaces", 0, "the app can make none (seccomp)"),
        limit("max_net_namespaces", 0, "the app can make none (seccomp)"),
        limit("max_ipc_namespaces", 0, "the app can make none (seccomp)"),
        limit("max_uts_namespaces", 0, "the app can make none (seccomp)"),
        limit(
            "max_cgroup_namespaces",
            0,
            "the loader made the jail's before; the app can make none (seccomp)",
        ),
        limit("max_time_namespaces", 0, "the app can make none (seccomp)"),
        limit(
            "max_fanotify_groups",
            0,
            "fanotify_init is denied (seccomp)",
        ),
        limit("max_fanotify_marks", 0, "fanotify_init is denied (seccomp)"),
    ];

    /// RLIMIT_SIGPENDING of the app: signals queued to it (real-time signals queue one entry per
    /// `kill`, POSIX timers hold one each). Counted for the app's user namespace and every one
    /// above it, so this bounds what it takes from its launcher's count too.
    pub const PENDING_SIGNALS: u64 = 1024;

    /// RLIMIT_MSGQUEUE of the app, in bytes: none. `mq_open` is denied by seccomp; the rlimit
    /// holds should the filter ever allow it.
    pub const MESSAGE_QUEUE_BYTES: u64 = 0;
}

/// The loader's whole input: the jail to build, flattened from `elastos_policy::JailPlan` by the
/// launcher. Strings are bytes without NUL (paths need not be UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderInput {
    /// The jail's filesystem, built in this order on an empty tmpfs root; every host source is
    /// already open at `fds::FIRST_SOURCE + index`.
    pub mounts: Vec<ResolvedMount>,
    /// Host paths of cgroup v1 `tasks` files the loader writes "0" to, to join the app's
    /// cgroups once the launcher has made them (EOF on the input pipe); empty otherwise.
    pub cgroup_tasks: Vec<Vec<u8>>,
    /// Hostname of the jail's UTS namespace.
    pub hostname: Vec<u8>,
    /// The app's home (jail path): the entry starts there.
    pub home: Vec<u8>,
    /// The app's uid inside its own user namespace.
    pub jail_uid: u32,
    /// The app's gid inside its own user namespace.
    pub jail_gid: u32,
    /// Landlock path rules, in jail paths.
    pub landlock: Vec<LandlockRule>,
    /// Deny TCP bind and connect with Landlock (ABI >= 4).
    pub landlock_net_deny_tcp: bool,
    /// Scope abstract unix sockets and signals with Landlock (ABI >= 6).
    pub landlock_scoped: bool,
    /// The compiled seccomp program.
    pub seccomp: Vec<SockFilter>,
    /// The entry's environment, `NAME=value`.
    pub env: Vec<Vec<u8>>,
    /// Jail path of the entry.
    pub entry: Vec<u8>,
    /// argv of the entry.
    pub argv: Vec<Vec<u8>>,
    /// RLIMIT_NPROC: threads of the app.
    pub threads: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// Memory for the app, in bytes.
    pub memory_bytes: u64,
    /// Set RLIMIT_AS to `memory_bytes` (no cgroup could be used).
    pub memory_rlimit: bool,
    /// Run even where the kernel has no Landlock or seccomp (the CLI's loudly named override).
    pub allow_without_kernel_sandbox: bool,
    /// More rlimits (an OCI spec's `process.rlimits`), applied after the jail's own and only
    /// where they are lower.
    pub extra_rlimits: Vec<Rlimit>,
}

/// One rlimit: resource (`RLIMIT_*`, Linux's numbers), soft and hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// RLIMIT_CPU (0) to RLIMIT_RTTIME (15).
    pub resource: u32,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// A mount step whose host source, if any, the launcher's child has already opened (as the
/// launcher's user, which may be able to reach paths the jail's uid cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvedMount {
    /// Bind the source fd (`fds::FIRST_SOURCE + source`) onto `jail`.
    Bind {
        /// Index of the source fd.
        source: u32,
        /// Jail path.
        jail: Vec<u8>,
        /// The source is a directory.
        is_dir: bool,
        /// Writable (and then noexec); read-only otherwise.
        writable: bool,
        /// A device node: writable, noexec, keeps nodev off.
        device: bool,
    },
    /// Create a symlink.
    Symlink {
        /// What it points to.
        target: Vec<u8>,
        /// Jail path of the link.
        jail: Vec<u8>,
    },
    /// A fresh tmpfs (nosuid, nodev, noexec) of at most [`tmpfs_inodes`]`(size_bytes)` inodes.
    Tmpfs {
        /// Jail path.
        jail: Vec<u8>,
        /// Size limit; it also sets the inode limit.
        size_bytes: u64,
        /// Mode of its root.
        mode: u32,
    },
    /// An empty directory.
    Dir {
        /// Jail path.
        jail: Vec<u8>,
        /// Its mode.
        mode: u32,
    },
    /// procfs of the jail's pid namespace.
    Proc {
        /// Jail path.
        jail: Vec<u8>,
    },
    /// A kernel filesystem of the jail's own namespaces that an OCI spec asks for.
    Kernel {
        /// Which, and how it is mounted.
        fs: KernelFs,
        /// The mount's source name (what mountinfo shows; the spec's).
        source: Vec<u8>,
        /// Jail path.
        jail: Vec<u8>,
    },
}

/// The kernel filesystems of [`ResolvedMount::Kernel`]: every one nosuid, nodev and noexec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFs {
    /// A tmpfs of at most [`tmpfs_inodes`]`(size_bytes)` inodes.
    Tmpfs {
        /// Size limit; it also sets the inode limit.
        size_bytes: u64,
        /// Mode of its root.
        mode: u32,
    },
    /// A new devpts instance of at most `max` terminals.
    Devpts {
        /// Its `max=`.
        max: u32,
    },
    /// The POSIX message queues of the jail's IPC namespace.
    Mqueue,
    /// sysfs of the jail's network namespace, read-only.
    Sysfs,
}

/// One Landlock rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockRule {
    /// Jail path.
    pub path: Vec<u8>,
    /// The rights beneath it.
    pub access: RuleAccess,
    /// Skip silently when the path does not exist in the jail.
    pub optional: bool,
}

/// Landlock rights of a rule (the loader maps them to the kernel's bits for its ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the names of elastos_policy::PathAccess, one to one
pub enum RuleAccess {
    /// Read files and list directories.
    ReadOnly = 0,
    /// Read, list, and execute files.
    ReadExecute = 1,
    /// Every filesystem right except execute and making device nodes.
    ReadWrite = 2,
    /// Read and write existing files only.
    ReadWriteFiles = 3,
}

/// Landlock's filesystem access bits (linux/landlock.h), for the loader's rules: defined here
/// rather than taken from a -sys crate so that this file stays `core`-only; the tests check them
/// against the `landlock` crate.
pub mod landlock_fs {
    /// The Landlock ABI whose features the jail asks for; newer kernels enforce all of them,
    /// older ones as many as they know (best effort, reported as not fully enforced).
    pub const ABI_WANTED: u32 = 6;
    /// LANDLOCK_ACCESS_FS_EXECUTE.
    pub const EXECUTE: u64 = 1 << 0;
    /// LANDLOCK_ACCESS_FS_WRITE_FILE.
    pub const WRITE_FILE: u64 = 1 << 1;
    /// LANDLOCK_ACCESS_FS_READ_FILE.
    pub const READ_FILE: u64 = 1 << 2;
    /// LANDLOCK_ACCESS_FS_READ_DIR.
    pub const READ_DIR: u64 = 1 << 3;
    /// LANDLOCK_ACCESS_FS_MAKE_CHAR.
    pub const MAKE_CHAR: u64 = 1 << 6;
    /// LANDLOCK_ACCESS_FS_MAKE_BLOCK.
    pub const MAKE_BLOCK: u64 = 1 << 11;
    /// LANDLOCK_ACCESS_FS_MAKE_SYM, the last right of ABI 1.
    pub const MAKE_SYM: u64 = 1 << 12;
    /// LANDLOCK_ACCESS_FS_REFER (ABI 2).
    pub const REFER: u64 = 1 << 13;
    /// LANDLOCK_ACCESS_FS_TRUNCATE (ABI 3).
    pub const TRUNCATE: u64 = 1 << 14;
    /// LANDLOCK_ACCESS_FS_IOCTL_DEV (ABI 5).
    pub const IOCTL_DEV: u64 = 1 << 15;
    /// The rights that apply to files (the others only to directories).
    pub const FILE_RIGHTS: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

    /// Every filesystem right Landlock knows at `abi`.
    pub fn all_at(abi: u32) -> u64 {
        let mut rights = MAKE_SYM * 2 - 1;
        if abi >= 2 {
            rights |= REFER;
        }
        if abi >= 3 {
            rights |= TRUNCATE;
        }
        if abi >= 5 {
            rights |= IOCTL_DEV;
        }
        rights
    }
}

impl RuleAccess {
    /// The Landlock rights this grants, within `handled` (the ruleset's); only those that apply
    /// to files when the path is not a directory.
    pub fn landlock_rights(self, handled: u64, is_dir: bool) -> u64 {
        use landlock_fs::*;
        let read = READ_FILE | READ_DIR;
        let rights = match self {
            RuleAccess::ReadOnly => read,
            RuleAccess::ReadExecute => read | EXECUTE,
            // Device nodes cannot be made here anyway (no CAP_MKNOD, nodev), but say so twice.
            RuleAccess::ReadWrite => handled & !(EXECUTE | MAKE_CHAR | MAKE_BLOCK),
            RuleAccess::ReadWriteFiles => read | WRITE_FILE | TRUNCATE | IOCTL_DEV,
        } & handled;
        if is_dir {
            rights
        } else {
            rights & FILE_RIGHTS
        }
    }
}

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// An input record or report line that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong.
    pub what: &'static str,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.what)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.u32(items.len() as u32);
        for item in items {
            each(self, item);
        }
    }
}

struct Reader<'a>(&'a [u8]);

const TRUNCATED: DecodeError = DecodeError {
    what: "the input record ends early",
};

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(TRUNCATED);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError {
                what: "a flag is neither 0 nor 1",
            }),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// A string for a C API: no NUL inside.
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        if bytes.contains(&0) {
            return Err(DecodeError {
                what: "a string holds a NUL byte",
            });
        }
        Ok(bytes.to_vec())
    }
    fn list<T>(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let len = self.u32()? as usize;
        // Every element takes at least one byte: a lying length cannot make us allocate more
        // than the record's size.
        if len > self.0.len() {
            return Err(TRUNCATED);
        }
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(each(self)?);
        }
        Ok(items)
    }
}

impl LoaderInput {
    /// The record the loader reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(4096));
        w.u32(INPUT_VERSION);
        w.list(&self.mounts, |w, m| match m {
            ResolvedMount::Bind {
                source,
                jail,
                is_dir,
                writable,
                device,
            } => {
                w.u8(1);
                w.u32(*source);
                w.bytes(jail);
                w.bool(*is_dir);
                w.bool(*writable);
                w.bool(*device);
            }
            ResolvedMount::Symlink { target, jail } => {
                w.u8(2);
                w.bytes(target);
                w.bytes(jail);
            }
            ResolvedMount::Tmpfs {
                jail,
                size_bytes,
                mode,
            } => {
                w.u8(3);
                w.bytes(jail);
                w.u64(*size_bytes);
                w.u32(*mode);
            }
            ResolvedMount::Dir { jail, mode } => {
                w.u8(4);
                w.bytes(jail);
                w.u32(*mode);
            }
            ResolvedMount::Proc { jail } => {
                w.u8(5);
                w.bytes(jail);
            }
            ResolvedMount::Kernel { fs, source, jail } => {
                w.u8(6);
                match fs {
                    KernelFs::Tmpfs { size_bytes, mode } => {
                        w.u8(0);
                        w.u64(*size_bytes);
                        w.u32(*mode);
                    }
                    KernelFs::Devpts { max } => {
                        w.u8(1);
                        w.u32(*max);
                    }
                    KernelFs::Mqueue => w.u8(2),
                    KernelFs::Sysfs => w.u8(3),
                }
                w.bytes(source);
                w.bytes(jail);
            }
        });
        w.list(&self.cgroup_tasks, |w, v| w.bytes(v));
        w.bytes(&self.hostname);
        w.bytes(&self.home);
        w.u32(self.jail_uid);
        w.u32(self.jail_gid);
        w.list(&self.landlock, |w, rule| {
            w.bytes(&rule.path);
            w.u8(rule.access as u8);
            w.bool(rule.optional);
        });
        w.bool(self.landlock_net_deny_tcp);
        w.bool(self.landlock_scoped);
        w.list(&self.seccomp, |w, insn| {
            w.0.extend_from_slice(&insn.code.to_le_bytes());
            w.u8(insn.jt);
            w.u8(insn.jf);
            w.u32(insn.k);
        });
        w.list(&self.env, |w, v| w.bytes(v));
        w.bytes(&self.entry);
        w.list(&self.argv, |w, v| w.bytes(v));
        w.u64(self.threads);
        w.u64(self.open_files);
        w.u64(self.memory_bytes);
        w.bool(self.memory_rlimit);
        w.bool(self.allow_without_kernel_sandbox);
        w.list(&self.extra_rlimits, |w, limit| {
            w.u32(limit.resource);
            w.u64(limit.soft);
            w.u64(limit.hard);
        });
        w.0
    }

    /// Decodes what [`LoaderInput::encode`] wrote; refuses anything else.
    pub fn decode(record: &[u8]) -> Result<LoaderInput, DecodeError> {
        let mut r = Reader(record);
        if r.u32()? != INPUT_VERSION {
            return Err(DecodeError {
                what: "the input record has another version (is elastos-loader from the same \
                       build as elastos?)",
            });
        }
        let mounts = r.list(|r| {
            Ok(match r.u8()? {
                1 => ResolvedMount::Bind {
                    source: r.u32()?,
                    jail: r.bytes()?,
                    is_dir: r.bool()?,
                    writable: r.bool()?,
                    device: r.bool()?,
                },
                2 => ResolvedMount::Symlink {
                    target: r.bytes()?,
                    jail: r.bytes()?,
                },
                3 => ResolvedMount::Tmpfs {
                    jail: r.bytes()?,
                    size_bytes: r.u64()?,
                    mode: r.u32()?,
                },
                4 => ResolvedMount::Dir {
                    jail: r.bytes()?,
                    mode: r.u32()?,
                },
                5 => ResolvedMount::Proc { jail: r.bytes()? },
                6 => ResolvedMount::Kernel {
                    fs: match r.u8()? {
                        0 => KernelFs::Tmpfs {
                            size_bytes: r.u64()?,
                            mode: r.u32()?,
                        },
                        1 => KernelFs::Devpts { max: r.u32()? },
                        2 => KernelFs::Mqueue,
                        3 => KernelFs::Sysfs,
                        _ => {
                            return Err(DecodeError {
                                what: "unknown kernel filesystem",
                            })
                        }
                    },
                    source: r.bytes()?,
                    jail: r.bytes()?,
                },
                _ => {
                    return Err(DecodeError {
                        what: "unknown mount kind",
                    })
                }
            })
        })?;
        let cgroup_tasks = r.list(Reader::bytes)?;
        let hostname = r.bytes()?;
        let home = r.bytes()?;
        let jail_uid = r.u32()?;
        let jail_gid = r.u32()?;
        let landlock = r.list(|r| {
            Ok(LandlockRule {
                path: r.bytes()?,
                access: match r.u8()? {
                    0 => RuleAccess::ReadOnly,
                    1 => RuleAccess::ReadExecute,
                    2 => RuleAccess::ReadWrite,
                    3 => RuleAccess::ReadWriteFiles,
                    _ => {
                        return Err(DecodeError {
                            what: "unknown Landlock access",
                        })
                    }
                },
                optional: r.bool()?,
            })
        })?;
        let landlock_net_deny_tcp = r.bool()?;
        let landlock_scoped = r.bool()?;
        let seccomp = r.list(|r| {
            let code = r.take(2)?;
            Ok(SockFilter {
                code: u16::from_le_bytes([code[0], code[1]]),
                jt: r.u8()?,
                jf: r.u8()?,
                k: r.u32()?,
            })
        })?;
        let input = LoaderInput {
            mounts,
            cgroup_tasks,
            hostname,
            home,
            jail_uid,
            jail_gid,
            landlock,
            landlock_net_deny_tcp,
            landlock_scoped,
            seccomp,
            env: r.list(Reader::bytes)?,
            entry: r.bytes()?,
            argv: r.list(Reader::bytes)?,
            threads: r.u64()?,
            open_files: r.u64()?,
            memory_bytes: r.u64()?,
            memory_rlimit: r.bool()?,
            allow_without_kernel_sandbox: r.bool()?,
            extra_rlimits: r.list(|r| {
                Ok(Rlimit {
                    resource: r.u32()?,
                    soft: r.u64()?,
                    hard: r.u64()?,
                })
            })?,
        };
        if !r.0.is_empty() {
            return Err(DecodeError {
                what: "the input record has trailing bytes",
            });
        }
        Ok(input)
    }
}

/// One line on the report pipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The jail is complete and the entry is running (the app side sends it to init just before
    /// execve; init passes it on only once the exec succeeded).
    Ready {
        /// The Landlock ABI that was enforced (0: none).
        landlock_abi: u32,
        /// Whether every requested Landlock restriction was enforced.
        landlock_fully_enforced: bool,
    },
    /// A jail step failed; the app never ran.
    Failed {
        /// The step (see the loader's `Step::name`).
        step: String,
        /// What went wrong.
        message: String,
        /// The errno, when the failure came from the kernel.
        errno: Option<i32>,
    },
    /// execve of the entry failed (everything else had succeeded).
    ExecFailed {
        /// Jail path of the entry.
        entry: String,
        /// The kernel's answer.
        errno: i32,
    },
    /// The app exited with this code (sent by the jail's init when the app is gone).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The app was killed by this signal.
    Killed {
        /// The signal.
        signal: i32,
    },
}

impl Report {
    /// The report as one line, newline included: `ready ABI 0|1`, `failed STEP ERRNO MESSAGE`
    /// (errno 0: none), `exec-failed ERRNO ENTRY`, `exited CODE`, `killed SIGNAL`.
    pub fn to_line(&self) -> String {
        let one_line = |text: &str| text.replace('\n', " ");
        let mut line = match self {
            Report::Ready {
                landlock_abi,
                landlock_fully_enforced,
            } => format!(
                "ready {landlock_abi} {}",
                u8::from(*landlock_fully_enforced)
            ),
            Report::Failed {
                step,
                message,
                errno,
            } => format!(
                "failed {} {} {}",
                one_line(step).replace(' ', "-"),
                errno.unwrap_or(0),
                one_line(message)
            ),
            Report::ExecFailed { entry, errno } => {
                format!("exec-failed {errno} {}", one_line(entry))
            }
            Report::Exited { code } => format!("exited {code}"),
            Report::Killed { signal } => format!("killed {signal}"),
        };
        line.push('\n');
        line
    }

    /// Parses one line written by [`Report::to_line`] (with or without its newline).
    pub fn from_line(line: &str) -> Result<Report, DecodeError> {
        let bad = DecodeError {
            what: "not a loader report",
        };
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (kind, rest) = line.split_once(' ').ok_or(bad)?;
        let int = |text: &str| text.parse::<i32>().map_err(|_| bad);
        let (first, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        Ok(match kind {
            "ready" => Report::Ready {
                landlock_abi: first.parse().map_err(|_| bad)?,
                landlock_fully_enforced: match tail {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad),
                },
            },
            "failed" => {
                let (errno, message) = tail.split_once(' ').unwrap_or((tail, ""));
                let errno = int(errno)?;
                Report::Failed {
                    step: first.into(),
                    message: message.into(),
                    errno: (errno != 0).then_some(errno),
                }
            }
            "exec-failed" => Report::ExecFailed {
                errno: int(first)?,
                entry: tail.into(),
            },
            "exited" if tail.is_empty() => Report::Exited { code: int(first)? },
            "killed" if tail.is_empty() => Report::Killed {
                signal: int(first)?,
            },
            _ => return Err(bad),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample() -> LoaderInput {
        LoaderInput {
            mounts: vec![
                ResolvedMount::Bind {
                    source: 2,
                    jail: b"/usr".to_vec(),
                    is_dir: true,
                    writable: false,
                    device: false,
                },
                ResolvedMount::Symlink {
                    target: b"usr/lib".to_vec(),
                    jail: b"/lib".to_vec(),
                },
                ResolvedMount::Tmpfs {
                    jail: b"/tmp".to_vec(),
                    size_bytes: 1 << 20,
                    mode: 0o1777,
                },
                ResolvedMount::Dir {
                    jail: b"/home".to_vec(),
                    mode: 0o755,
                },
                ResolvedMount::Proc {
                    jail: b"/proc".to_vec(),
                },
                ResolvedMount::Kernel {
                    fs: KernelFs::Tmpfs {
                        size_bytes: 1 << 16,
                        mode: 0o1777,
                    },
                    source: b"shm".to_vec(),
                    jail: b"/dev/shm".to_vec(),
                },
                ResolvedMount::Kernel {
                    fs: KernelFs::Devpts { max: 16 },
                    source: b"devpts".to_vec(),
                    jail: b"/dev/pts".to_vec(),
                },
                ResolvedMount::Kernel {
                    fs: KernelFs::Mqueue,
                    source: b"mqueue".to_vec(),
                    jail: b"/dev/mqueue".to_vec(),
                },
                ResolvedMount::Kernel {
                    fs: KernelFs::Sysfs,
                    source: b"sysfs".to_vec(),
                    jail: b"/sys".to_vec(),
                },
            ],
            cgroup_tasks: vec![b"/sys/fs/cgroup/pids/elastos/x/tasks".to_vec()],
            hostname: b"elastos".to_vec(),
            home: b"/home/app".to_vec(),
            jail_uid: 1000,
            jail_gid: 1001,
            landlock: vec![LandlockRule {
                path: b"/app".to_vec(),
                access: RuleAccess::ReadExecute,
                optional: true,
            }],
            landlock_net_deny_tcp: true,
            landlock_scoped: false,
            seccomp: vec![SockFilter {
                code: 0x15,
                jt: 1,
                jf: 2,
                k: 0xdead_beef,
            }],
            env: vec![b"HOME=/home/app".to_vec()],
            entry: b"/app/bin/x".to_vec(),
            argv: vec![b"x".to_vec(), b"\xff arg".to_vec()],
            threads: 16,
            open_files: 1024,
            memory_bytes: 64 << 20,
            memory_rlimit: true,
            allow_without_kernel_sandbox: false,
            extra_rlimits: vec![Rlimit {
                resource: 0,
                soft: 60,
                hard: 120,
            }],
        }
    }

    #[test]
    fn landlock_bits_are_the_landlock_crates() {
        use landlock::{Access, AccessFs, ABI};
        let abis = [ABI::V1, ABI::V2, ABI::V3, ABI::V4, ABI::V5, ABI::V6];
        for (number, abi) in (1..).zip(abis) {
            assert_eq!(
                landlock_fs::all_at(number),
                AccessFs::from_all(abi).bits(),
                "ABI {number}"
            );
        }
        assert_eq!(
            landlock_fs::FILE_RIGHTS,
            AccessFs::from_file(ABI::V6).bits()
        );
        let named = [
            (landlock_fs::EXECUTE, AccessFs::Execute),
            (landlock_fs::WRITE_FILE, AccessFs::WriteFile),
            (landlock_fs::READ_FILE, AccessFs::ReadFile),
            (landlock_fs::READ_DIR, AccessFs::ReadDir),
            (landlock_fs::MAKE_CHAR, AccessFs::MakeChar),
            (landlock_fs::MAKE_BLOCK, AccessFs::MakeBlock),
            (landlock_fs::MAKE_SYM, AccessFs::MakeSym),
            (landlock_fs::REFER, AccessFs::Refer),
            (landlock_fs::TRUNCATE, AccessFs::Truncate),
            (landlock_fs::IOCTL_DEV, AccessFs::IoctlDev),
        ];
        for (ours, theirs) in named {
            assert_eq!(ours, theirs as u64, "{theirs:?}");
        }
    }

    #[test]
    fn rule_rights_stay_within_what_the_ruleset_handles() {
        use landlock_fs::*;
        let v6 = all_at(6);
        // The home: everything but execute and device nodes.
        let home = RuleAccess::ReadWrite.landlock_rights(v6, true);
        assert_eq!(home & (EXECUTE | MAKE_CHAR | MAKE_BLOCK), 0);
        assert_ne!(home & REFER, 0);
        // A file gets file rights only.
        assert_eq!(
            RuleAccess::ReadWrite.landlock_rights(v6, false),
            (WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV)
        );
        assert_eq!(
            RuleAccess::ReadExecute.landlock_rights(v6, true),
            READ_FILE | READ_DIR | EXECUTE
        );
        // On an ABI 1 kernel, nothing the kernel does not know is asked for.
        let v1 = all_at(1);
        for access in [
            RuleAccess::ReadOnly,
            RuleAccess::ReadExecute,
            RuleAccess::ReadWrite,
            RuleAccess::ReadWriteFiles,
        ] {
            assert_eq!(access.landlock_rights(v1, true) & !v1, 0, "{access:?}");
        }
    }

    #[test]
    fn input_round_trips() {
        let input = sample();
        assert_eq!(LoaderInput::decode(&input.encode()), Ok(input));
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let record = sample().encode();
        for len in 0..record.len() {
            assert!(LoaderInput::decode(&record[..len]).is_err(), "length {len}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert_eq!(
            LoaderInput::decode(&longer).unwrap_err().what,
            "the input record has trailing bytes"
        );
    }

    #[test]
    fn tmpfs_inodes_are_one_per_page_with_a_floor() {
        assert_eq!(tmpfs_inodes(256 << 20), 65536);
        assert_eq!(tmpfs_inodes(64 << 20), 16384);
        assert_eq!(tmpfs_inodes(1 << 20), TMPFS_MIN_INODES);
        assert_eq!(tmpfs_inodes(0), TMPFS_MIN_INODES);
        assert_eq!(tmpfs_inodes(u64::MAX), u64::MAX / 4096);
    }

    #[test]
    fn nul_in_a_string_and_other_versions_are_refused() {
        let mut input = sample();
        input.entry = b"/app/a\0b".to_vec();
        assert_eq!(
            LoaderInput::decode(&input.encode()).unwrap_err().what,
            "a string holds a NUL byte"
        );
        let mut record = sample().encode();
        record[0] = 9;
        assert!(LoaderInput::decode(&record)
            .unwrap_err()
            .what
            .contains("another version"));
    }

    #[test]
    fn reports_round_trip_as_single_lines() {
        let reports = [
            Report::Ready {
                landlock_abi: 6,
                landlock_fully_enforced: true,
            },
            Report::Failed {
                step: "filesystem".into(),
                message: "bind mount on /home/app: x y".into(),
                errno: Some(2),
            },
            Report::Failed {
                step: "landlock".into(),
                message: "no Landlock".into(),
                errno: None,
            },
            Report::ExecFailed {
                entry: "/app/bin/with space".into(),
                errno: 13,
            },
            Report::Exited { code: -1 },
            Report::Killed { signal: 9 },
        ];
        for report in reports {
            let line = report.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert_eq!(Report::from_line(&line), Ok(report));
        }
        let multi = Report::Failed {
            step: "filesystem".into(),
            message: "two\nlines".into(),
            errno: None,
        };
        assert_eq!(multi.to_line(), "failed filesystem 0 two lines\n");
        for garbage in [
            "",
            "ready",
            "ready x 1",
            "ready 6 2",
            "exited 1 2",
            "what 1",
            "{\"report\":1}",
        ] {
            assert!(Report::from_line(garbage).is_err(), "{garbage:?}");
        }
    }
}
