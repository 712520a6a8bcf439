//! Every raw syscall and `unsafe` block of the launcher lives here.
//!
//! [`spawn_jailed_child`] is the only code that runs between `clone()` and `execve()` in the
//! launcher's child. The launcher may be multi-threaded, so that code may only make
//! async-signal-safe raw syscalls: everything it touches (argv, envp, fd lists) is prepared
//! before `clone()`, it never allocates, never takes a lock, never uses a glibc wrapper that
//! talks to other threads (the set*id family), and reports failure as a fixed 8-byte record on
//! the report pipe. The loader's own syscalls live in its crate (`loader/exe`, module `sys`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The first mount source's fd in the loader (`handoff::fds::FIRST_SOURCE`).
const FIRST_SOURCE_FD: RawFd = elastos_handoff::fds::FIRST_SOURCE;

/// The lowest fd number above every fixed one (fds 3-5 and one per mount source): what the
/// child keeps waits there or above until it is moved into place.
pub const FIXED_FDS_END: RawFd = FIRST_SOURCE_FD + crate::input::MAX_MOUNT_SOURCES as RawFd;

/// Size of the child's stack between clone() and execve(); it only runs a few raw syscalls.
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Marks a failure record written by the pre-exec child on the report pipe (loader reports are
/// text lines, which never start with this byte).
pub const CHILD_FAILURE_MAGIC: u8 = 0xFF;

/// The pre-exec child's steps, as recorded in a failure record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChildStep {
    /// Waiting for the launcher to write the id maps (EOF: the launcher gave up).
    AwaitIdMaps = 1,
    /// Dropping the launcher's supplementary groups (root launcher, or ids mapped by
    /// newgidmap, which leaves setgroups allowed).
    ClearGroups = 2,
    /// Becoming uid/gid 0 of the new user namespace.
    SetIds = 3,
    /// PR_SET_PDEATHSIG, so the jail dies with the launcher.
    ParentDeathSignal = 4,
    /// Moving the jail's fds into their fixed numbers.
    ArrangeFds = 5,
    /// Opening a host path the jail mounts (the record names which one).
    OpenMountSource = 6,
    /// execveat() of the loader.
    ExecLoader = 7,
    /// unshare(CLONE_NEWNET): the child makes its network namespace itself, while the launcher
    /// verifies the bundle (creating one costs ~0.25 ms here).
    NetNamespace = 8,
    /// Reading the list of host paths to mount from the launcher.
    ReadMountSources = 9,
    /// Restoring the launcher's CPU affinity (see [`spawn_jailed_child`]).
    RestoreAffinity = 10,
    /// setsid(): the jail is a session of its own, without a controlling terminal.
    NewSession = 11,
    /// Making the app's fd 3 (a socketpair in the jail's network namespace) and sending the
    /// broker's end to the launcher.
    IpcSocket = 12,
}

impl ChildStep {
    /// Decodes a step byte from a failure record.
    pub fn from_byte(byte: u8) -> Option<Self> {
        use ChildStep::*;
        [
            AwaitIdMaps,
            ClearGroups,
            SetIds,
            ParentDeathSignal,
            ArrangeFds,
            OpenMountSource,
            ExecLoader,
            NetNamespace,
            ReadMountSources,
            RestoreAffinity,
            NewSession,
            IpcSocket,
        ]
        .into_iter()
        .find(|step| *step as u8 == byte)
    }
}

/// Everything the pre-exec child needs, prepared (allocated) before clone().
///
/// The child is created before the launcher knows the jail's mounts (it verifies the bundle
/// meanwhile), so it gets the host paths to open over a pipe once it may go on.
pub struct ChildSetup {
    /// The child's end of a unix socket pair with the launcher. The child sends the broker's
    /// end of the app's fd 3 on it (SCM_RIGHTS); the launcher sends one byte once the id maps
    /// are written. EOF instead means the launcher gave up (or died: PR_SET_PDEATHSIG cannot be
    /// set before the id change, which clears it).
    pub channel: RawFd,
    /// Read end of the pipe carrying the host paths to open (O_PATH) at `fds::FIRST_SOURCE` and
    /// up, each ending in NUL, until EOF. Opened here, in the child, because a bind mount's
    /// source must be a mount of the caller's own mount namespace, and before the id change,
    /// because the launcher's user may be able to reach paths the jail's uid cannot.
    pub sources_read: RawFd,
    /// Where a failure record goes (the launcher's copy of the report pipe's write end).
    pub report: RawFd,
    /// (current fd, fixed number) pairs; the current fds are >= every fixed number and every
    /// mount source's number.
    pub fd_moves: Vec<(RawFd, RawFd)>,
    /// Drop supplementary groups: possible when the launcher is root or the gid map was written
    /// by newgidmap (setgroups stays allowed); otherwise setgroups is denied, and the jail keeps
    /// the launcher's groups (mapped to nobody).
    pub clear_groups: bool,
    /// The loader executable, opened by the launcher.
    pub loader: RawFd,
    /// Every fd above stdio the child keeps, ascending: the ones above. The child closes every
    /// other fd first thing (see [`close_all_but`]).
    keep: Vec<RawFd>,
    /// Room for the list of mount sources (read by the child, which must not allocate).
    source_list: Vec<u8>,
    /// The launcher's CPU affinity, which the child starts without (see [`spawn_jailed_child`])
    /// and restores before it execs the loader.
    affinity: Option<libc::cpu_set_t>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// The most bytes of mount source paths the child accepts (a plan has ~15 short ones).
const SOURCE_LIST_BYTES: usize = 64 * 1024;

impl ChildSetup {
    /// Prepares the child's state; `argv`/`envp` are the loader's.
    pub fn new(
        channel: RawFd,
        sources_read: RawFd,
        report: RawFd,
        fd_moves: Vec<(RawFd, RawFd)>,
        clear_groups: bool,
        loader: RawFd,
        argv: Vec<CString>,
    ) -> Self {
        let mut keep: Vec<RawFd> = [channel, sources_read, report, loader]
            .into_iter()
            .chain(fd_moves.iter().map(|(from, _)| *from))
            .collect();
        keep.sort_unstable();
        keep.dedup();
        ChildSetup {
            channel,
            sources_read,
            report,
            fd_moves,
            clear_groups,
            loader,
            keep,
            source_list: vec![0; SOURCE_LIST_BYTES],
            affinity: None,
            argv,
            envp: Vec::new(),
        }
    }
}

/// clone()s a child into new namespaces (`flags`: CLONE_NEW*) that runs [`ChildSetup`] and execs
/// the loader. Returns the child's pid (in the launcher's pid namespace) and a pidfd for it
/// (CLONE_PIDFD), through which every signal to the jail goes: a pid can be reused once the
/// child is reaped, a pidfd always names this one process.
///
/// The child starts on another CPU than the caller's when there is one: it creates its network
/// namespace while the caller goes on (verifying the bundle), and the scheduler, left alone,
/// often queues a new child behind its running parent. The child restores the caller's affinity
/// before it execs the loader.
///
/// Once it has made its network namespace, the child drops its copy of the caller's private
/// anonymous memory, which it does not use (`release_parent_memory`): a warm jail may wait
/// for minutes with it.
///
/// With `cgroup` (an `O_PATH` fd of a cgroup v2 directory), the child is created in that cgroup
/// (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7): it never runs anywhere else. `ENOSYS` then
/// means the kernel (or a seccomp filter around us) has no `clone3`, `E2BIG` that it has no
/// `CLONE_INTO_CGROUP`; the caller may retry without a cgroup.
///
/// With `nested_in` (a user namespace of this user's: its holder's, see `crate::holder`), the
/// child's user namespace is made inside that one, by an intermediate process that joins it
/// first (`nest_and_clone`), and the child's id map files come back opened there.
pub fn spawn_jailed_child(
    flags: libc::c_int,
    setup: &mut ChildSetup,
    cgroup: Option<BorrowedFd<'_>>,
    nested_in: Option<BorrowedFd<'_>>,
) -> io::Result<ClonedChild> {
    let elsewhere = other_cpus();
    setup.affinity = elsewhere.map(|(original, _)| original);
    let source_list = setup.source_list.as_mut_ptr();
    let setup: &ChildSetup = setup;
    let argv: Vec<*const libc::c_char> = setup
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = setup
        .envp
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let mut child = ChildContext {
        setup,
        source_list,
        argv: &argv,
        envp: &envp,
        used: [0; USED_ADDRESSES],
    };
    child.used = child.used_addresses();
    if let Some(namespace) = nested_in {
        let (pid, [pidfd, uid_map, gid_map]) =
            nest_and_clone(namespace, flags, cgroup, &mut child)?;
        let mut cloned = adopt_child(pid, pidfd.into_raw_fd(), elsewhere);
        cloned.id_maps = Some([uid_map.into(), gid_map.into()]);
        return Ok(cloned);
    }
    let mut pidfd: libc::c_int = -1;
    if let Some(cgroup) = cgroup {
        let pid = clone_into_cgroup(flags, cgroup, &mut pidfd, &mut child)?;
        return Ok(adopt_child(pid, pidfd, elsewhere));
    }
    // SAFETY: the stack is a live, exclusively owned allocation; clone() without CLONE_VM gives
    // the child a copy-on-write copy of this address space, so `child` and the pointers inside it
    // stay valid in the child until it execs or exits, and the parent frees nothing the child
    // still uses. The stack grows down on every architecture we build for, so we pass its top,
    // aligned to 16 bytes as the ABIs require. With CLONE_PIDFD the kernel stores the new pidfd
    // (close-on-exec) at the parent_tid argument, a live c_int of ours. `child_main` only
    // performs async-signal-safe syscalls (see the module doc).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len());
        let top = top.sub(top as usize % 16);
        libc::clone(
            child_main,
            top.cast(),
            flags | libc::SIGCHLD | libc::CLONE_PIDFD,
            (&mut child as *mut ChildContext).cast(),
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(adopt_child(pid, pidfd, elsewhere))
}

/// A jail's first process, just cloned ([`spawn_jailed_child`]).
#[derive(Debug)]
pub struct ClonedChild {
    /// Its pid, in the launcher's pid namespace.
    pub pid: libc::pid_t,
    /// A pidfd of it.
    pub pidfd: OwnedFd,
    /// Its `uid_map` and `gid_map`, opened for writing from the user namespace its own is
    /// nested in (a nested child only): the kernel lets only a process of the parent
    /// namespace open them, and lets anyone with `CAP_SETUID`/`CAP_SETGID` over that parent
    /// (this user, its owner) write them.
    pub id_maps: Option<[std::fs::File; 2]>,
}

/// The parent's side once the child exists: its pidfd owned, and the child moved to another
/// CPU than ours when there is one.
fn adopt_child(
    pid: libc::pid_t,
    pidfd: libc::c_int,
    elsewhere: Option<(libc::cpu_set_t, libc::cpu_set_t)>,
) -> ClonedChild {
    // SAFETY: the clone succeeded, so `pidfd` is a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if let Some((_, others)) = elsewhere {
        // SAFETY: a live cpu_set_t of the size we pass. Failure only costs the parallelism.
        unsafe { libc::sched_setaffinity(pid, std::mem::size_of_val(&others), &others) };
    }
    ClonedChild {
        pid,
        pidfd,
        id_maps: None,
    }
}

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// CLONE_INTO_CGROUP (uapi/linux/sched.h; not in the libc crate for every target).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3() of the jail's first process into `cgroup`, fork-style (no new stack: the child
/// runs on its copy of ours); the child runs [`child_main`] and never returns here. Returns the
/// child's pid; the pidfd is stored in `pidfd`.
fn clone_into_cgroup(
    flags: libc::c_int,
    cgroup: BorrowedFd<'_>,
    pidfd: &mut libc::c_int,
    child: &mut ChildContext<'_>,
) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: (flags as u64) | libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
        pidfd: pidfd as *mut libc::c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // SAFETY: clone3 reads `args` (a live struct of the size we pass) and writes the pidfd to
    // the live c_int it points to. Without CLONE_VM and with no stack given, the child is a
    // fork-style copy of this process running on its copy of this very stack, so every pointer
    // in `child` stays valid there. The child runs only `child_main`, which makes
    // async-signal-safe raw syscalls (see the module doc) and ends in execve or _exit: it
    // never returns into the caller's frames, which belong to a multi-threaded parent.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        child_main((child as *mut ChildContext).cast());
        // SAFETY: _exit(2) ends this child; child_main only returns after writing its record.
        unsafe { libc::_exit(125) }
    }
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// `/proc/PID/NAME` as a NUL-terminated string in `buf`, formatted without allocating.
fn proc_path<'a>(pid: libc::pid_t, name: &[u8], buf: &'a mut [u8; 64]) -> &'a [u8] {
    let mut digits = [0u8; 10];
    let (mut n, mut count) = (pid.unsigned_abs(), 0);
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        (n, count) = (n / 10, count + 1);
        if n == 0 {
            break;
        }
    }
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    push(b"/proc/");
    for i in (0..count).rev() {
        push(&digits[i..=i]);
    }
    push(b"/");
    push(name);
    push(b"\0");
    &buf[..len]
}

/// The user-namespaced clone of [`spawn_jailed_child`]: an intermediate process (a fork-style
/// raw clone, single-threaded as `setns(CLONE_NEWUSER)` requires, which the launcher is not)
/// joins `namespace`, clones the jail's first process there with `CLONE_PARENT` (so that it is
/// the launcher's child, as an unnested one is, and its parent-death signal is the launcher's),
/// opens that process's id map files, sends them with its pid and pidfd back over a socket
/// pair, and exits. Returns (pid, [pidfd, uid_map, gid_map]).
fn nest_and_clone(
    namespace: BorrowedFd<'_>,
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    child: &mut ChildContext<'_>,
) -> io::Result<(libc::pid_t, [OwnedFd; 3])> {
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    // SAFETY: a fork-style clone (no CLONE_VM, no new stack): the intermediate runs on its copy
    // of this stack and address space, makes only raw async-signal-safe syscalls
    // (`intermediate_main`, then `child_main` in the jail's process), and ends in _exit: it never
    // returns into this function's caller.
    let intermediate = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if intermediate == 0 {
        let (payload, fds) = intermediate_main(namespace, flags, cgroup, child);
        // SAFETY: raw sendmsg of live locals, then _exit.
        unsafe {
            send_with_fds(theirs.as_raw_fd(), &payload.to_le_bytes(), &fds);
            libc::_exit(0)
        }
    }
    if intermediate < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(theirs);
    let received = receive_with_fds::<3>(ours.as_fd());
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(intermediate as libc::pid_t),
        None,
    );
    let (payload, fds) = received?;
    let said = i32::from_le_bytes(payload);
    match fds {
        Some(fds) if said > 0 => Ok((said, fds)),
        _ if said < 0 => Err(io::Error::from_raw_os_error(-said)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the intermediate process of a nested clone sent no process",
        )),
    }
}

/// What the intermediate process of [`nest_and_clone`] sends: the jail process's pid and
/// [pidfd, uid_map, gid_map], or -errno and none. Never returns in the jail's process.
fn intermediate_main(
    namespace: BorrowedFd<'_>,
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
    child: &mut ChildContext<'_>,
) -> (i32, [libc::c_int; 3]) {
    let errno = || {
        // SAFETY: errno is thread-local and readable from any context.
        -unsafe { *libc::__errno_location() }
    };
    // SAFETY: setns on a live fd; this process is a fork-style copy with one thread and its own
    // fs information (no CLONE_FS), as setns(CLONE_NEWUSER) requires.
    if unsafe { libc::syscall(libc::SYS_setns, namespace.as_raw_fd(), libc::CLONE_NEWUSER) } < 0 {
        return (errno(), [-1; 3]);
    }
    let mut pidfd: libc::c_int = -1;
    let pid = match cgroup {
        Some(cgroup) => {
            match clone_into_cgroup(flags | libc::CLONE_PARENT, cgroup, &mut pidfd, child) {
                Ok(pid) => pid,
                Err(e) => return (-e.raw_os_error().unwrap_or(libc::EIO), [-1; 3]),
            }
        }
        None => {
            // SAFETY: a fork-style clone as in `nest_and_clone`; with CLONE_PIDFD the kernel
            // stores the pidfd at the parent_tid argument, a live c_int of ours. The child runs
            // `child_main` on its copy of this stack and never returns here.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    flags | libc::CLONE_PARENT | libc::CLONE_PIDFD | libc::SIGCHLD,
                    0,
                    &mut pidfd as *mut libc::c_int,
                    0,
                    0,
                )
            };
            if pid == 0 {
                child_main((child as *mut ChildContext).cast());
                // SAFETY: _exit(2) ends this child; child_main only returns after writing its
                // record.
                unsafe { libc::_exit(125) }
            }
            if pid < 0 {
                return (errno(), [-1; 3]);
            }
            pid as libc::pid_t
        }
    };
    let mut maps = [-1; 2];
    for (map, name) in maps.iter_mut().zip([&b"uid_map"[..], b"gid_map"]) {
        let mut buf = [0u8; 64];
        let path = proc_path(pid, name, &mut buf);
        // SAFETY: `path` is a NUL-terminated string in a live local buffer.
        *map = unsafe { libc::open(path.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if *map < 0 {
            // The process is the launcher's child: its pidfd, sent, lets the launcher kill it.
            let failed = errno();
            // SAFETY: kill of the process just cloned (a pid of ours: it cannot be reused
            // before the launcher reaps it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return (failed, [-1; 3]);
        }
    }
    (pid, [pidfd, maps[0], maps[1]])
}

/// sendmsg(2) of `payload` with the fds of `fds` that are not -1 (SCM_RIGHTS): raw, without
/// allocating, so a pre-exec child may call it. Whether all of the payload went.
///
/// # Safety
/// `socket` and every fd in `fds` other than -1 must be open.
unsafe fn send_with_fds(socket: RawFd, payload: &[u8], fds: &[libc::c_int; 3]) -> bool {
    #[repr(C)]
    struct Control {
        header: libc::cmsghdr,
        fds: [libc::c_int; 3],
    }
    let count = fds.iter().take_while(|fd| **fd >= 0).count();
    // SAFETY: all-zero msghdr and cmsghdr are valid values; the message points at live locals
    // of the sizes given; CMSG_FIRSTHDR of a message with a control buffer of at least one
    // header is that buffer.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut control: Control = std::mem::zeroed();
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if count > 0 {
            let bytes = (count * std::mem::size_of::<libc::c_int>()) as u32;
            message.msg_control = (&mut control as *mut Control).cast();
            message.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let header = libc::CMSG_FIRSTHDR(&message);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(bytes) as _;
            let data = libc::CMSG_DATA(header).cast::<libc::c_int>();
            for (i, fd) in fds[..count].iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *fd);
            }
        }
        libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) == payload.len() as isize
    }
}

/// Receives a 4-byte payload and, with it, exactly `N` fds or none (close-on-exec here).
fn receive_with_fds<const N: usize>(
    channel: BorrowedFd<'_>,
) -> io::Result<([u8; 4], Option<[OwnedFd; N]>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut payload = [0u8; 4];
    let mut iov = [io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!([libc::c_int; 3]);
    let message = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_WAITALL,
    )
    .map_err(io::Error::from)?;
    let mut received = Vec::new();
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            received.extend(fds);
        }
    }
    // SAFETY: each fd came with this message (SCM_RIGHTS): new descriptors nobody else owns.
    let received: Vec<OwnedFd> = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if message.bytes != payload.len() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok((payload, received.try_into().ok()))
}

/// Runs `f` (which clones the jail's first process) with this thread's effective uid set to
/// `owner`, so that the user namespace it creates is owned by `owner` instead of root. Root
/// launcher only: its real and saved uid stay 0, and so does its filesystem uid, so the child
/// reaches the same host paths as before (it opens the mount sources).
///
/// Why: the kernel charges what a user namespace's processes hold (inotify instances and
/// watches, pending signals, namespaces) to the namespace's owner at the level above it (see
/// `elastos_handoff::kernel_counters`): owned by root, a jail used up root's counters. Only the
/// calling thread changes: raw syscalls, not glibc's wrappers, which would change every thread
/// of the process (the embedded broker's too). The change makes the process non-dumpable
/// (`commit_creds`), so its dumpable flag is restored after.
pub fn as_namespace_owner<T>(owner: libc::uid_t, f: impl FnOnce() -> T) -> io::Result<T> {
    const UNCHANGED: libc::uid_t = libc::uid_t::MAX;
    // SAFETY: prctl and setres/setfsuid on integers; they change only this thread's
    // credentials and this process's dumpable flag, which are restored below.
    unsafe {
        let dumpable = libc::prctl(libc::PR_GET_DUMPABLE);
        if libc::syscall(libc::SYS_setresuid, UNCHANGED, owner, UNCHANGED) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsuid, 0);
        let result = f();
        // Cannot fail: the real and saved uids are 0. A thread left as `owner` must not go on.
        if libc::syscall(libc::SYS_setresuid, UNCHANGED, 0, UNCHANGED) < 0 {
            std::process::abort();
        }
        if dumpable >= 0 {
            libc::prctl(libc::PR_SET_DUMPABLE, dumpable as libc::c_ulong);
        }
        Ok(result)
    }
}

/// Opens `path` (a `/proc/PID/{uid,gid}_map` of a jail whose user namespace `owner` owns) for
/// writing as the namespace's owner, with this thread's capabilities still in effect.
///
/// Why: the kernel lets an id map be written only through a file whose opener has
/// CAP_SYS_ADMIN in the target namespace and CAP_SETUID/CAP_SETGID in its parent. Root has the
/// first only by owning the namespace, or by holding CAP_SYS_ADMIN outright; a root launcher
/// whose capability bounding set leaves CAP_SYS_ADMIN out (the systemd unit's) must therefore
/// open the map as the owner. Changing the effective uid away from 0 empties the effective
/// capability set, so it is refilled from the permitted set (which is unchanged) for the open.
/// The file system uid stays 0, so the open is checked against root's access to the file.
pub fn open_as_namespace_owner(
    owner: libc::uid_t,
    path: &std::path::Path,
) -> io::Result<std::fs::File> {
    as_namespace_owner(owner, || {
        raise_permitted_capabilities()?;
        std::fs::OpenOptions::new().write(true).open(path)
    })?
}

/// Makes this thread's effective capability set its permitted set (capget/capset, version 3).
fn raise_permitted_capabilities() -> io::Result<()> {
    /// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
    const VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills the two live `Data` words for this thread (pid 0) as version 3 says.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for word in &mut data {
        word.effective = word.permitted;
    }
    // SAFETY: capset reads the same two live words; effective within permitted is always allowed.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// (this thread's affinity, the same without the CPU it runs on), when that leaves any CPU.
fn other_cpus() -> Option<(libc::cpu_set_t, libc::cpu_set_t)> {
    // SAFETY: an all-zero cpu_set_t is the empty set; the calls read or fill live sets of the
    // size given; sched_getcpu takes nothing.
    unsafe {
        let mut original: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&original), &mut original) != 0 {
            return None;
        }
        let current = libc::sched_getcpu();
        let mut others = original;
        if current >= 0 {
            libc::CPU_CLR(current as usize, &mut others);
        }
        (libc::CPU_COUNT(&others) > 0).then_some((original, others))
    }
}

struct ChildContext<'a> {
    setup: &'a ChildSetup,
    /// `setup.source_list`'s buffer, which only the child writes (in its own copy).
    source_list: *mut u8,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    /// An address in each piece of the parent's memory the child reads or writes after
    /// [`release_parent_memory`] (besides the strings `argv` and `envp` point to): every
    /// mapping holding one is kept.
    used: [usize; USED_ADDRESSES],
}

/// How many addresses [`ChildContext::used`] holds.
const USED_ADDRESSES: usize = 11;

impl ChildContext<'_> {
    /// The addresses of everything the child uses of the parent's memory: the context itself
    /// and the setup (on the parent's stack), the setup's buffers and the loader's argv and
    /// envp arrays (on its heap). The child's stack and thread-local storage, and the strings
    /// of argv and envp, are found by the child itself.
    fn used_addresses(&self) -> [usize; USED_ADDRESSES] {
        let setup = self.setup;
        [
            self as *const Self as usize,
            setup as *const ChildSetup as usize,
            setup.keep.as_ptr() as usize,
            setup.fd_moves.as_ptr() as usize,
            self.source_list as usize,
            self.source_list as usize + SOURCE_LIST_BYTES - 1,
            self.argv.as_ptr() as usize,
            self.envp.as_ptr() as usize,
            setup.argv.as_ptr() as usize,
            setup.envp.as_ptr() as usize,
            setup.source_list.as_ptr() as usize,
        ]
    }
}

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildContext` passed to clone() by `spawn_jailed_child`, valid in
    // this copy of the parent's address space.
    let child = unsafe { &*(arg as *const ChildContext) };
    let (step, index) = match run_child(child) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    // SAFETY: errno is thread-local and readable from any context.
    let errno = unsafe { *libc::__errno_location() };
    let mut record = [CHILD_FAILURE_MAGIC, step as u8, 0, 0, 0, 0, 0, 0];
    record[2..4].copy_from_slice(&index.to_le_bytes());
    record[4..8].copy_from_slice(&errno.to_le_bytes());
    // SAFETY: plain write(2)/_exit(2) of a stack buffer; both are async-signal-safe.
    unsafe {
        libc::write(child.setup.report, record.as_ptr().cast(), record.len());
        libc::_exit(125)
    }
}

enum Never {}

/// A failed pre-exec step, and the index of the mount source involved (0 otherwise).
type ChildFailure = (ChildStep, u16);

fn check(ret: libc::c_long, step: ChildStep) -> Result<(), ChildFailure> {
    if ret < 0 {
        Err((step, 0))
    } else {
        Ok(())
    }
}

fn run_child(child: &ChildContext) -> Result<Never, ChildFailure> {
    let setup = child.setup;
    // First of all: this process is a copy of a launcher that may have other threads, each of
    // which may be preparing another jail at this moment. Every fd the launcher had open at
    // clone() was copied here, including the write ends of other launches' pipes, and another
    // launch's child waiting for EOF on one of them would wait for as long as this process
    // holds it (two overlapping launches deadlocked that way). Only the fds listed in the setup
    // survive this line, so no fd of anyone else's is ever held here.
    close_all_but(&setup.keep)?;
    // SAFETY: every call below is a raw, async-signal-safe syscall on plain values or on memory
    // prepared before clone() (see the module doc); nothing allocates or locks.
    unsafe {
        // Signal state is inherited across execve: start the jail with an empty mask and default
        // dispositions (Rust ignores SIGPIPE in the launcher; the app must not inherit that).
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }

        // A session of its own: the launcher's terminal, if its stdio is one, is then not the
        // jail's controlling terminal, and a tty ioctl such as TIOCSPGRP on it (stealing the
        // user's foreground) fails. (Not a process group leader: its group is the launcher's.)
        check(libc::setsid() as libc::c_long, ChildStep::NewSession)?;
        check(
            libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNET),
            ChildStep::NetNamespace,
        )?;
        let app_socket = make_ipc_socket(setup)?;
        release_parent_memory(child);
        let mut byte = 0u8;
        let n = libc::read(setup.channel, (&mut byte as *mut u8).cast(), 1);
        if n != 1 {
            return Err((ChildStep::AwaitIdMaps, 0));
        }
        // Raw syscalls, not glibc's setgroups/setres[ug]id: those broadcast the change to every
        // thread glibc knows of (__nptl_setxid) and wait for each; in this child of a
        // multi-threaded launcher the other threads do not exist, and the wait never ends.
        if let Some(affinity) = &setup.affinity {
            check(
                libc::syscall(
                    libc::SYS_sched_setaffinity,
                    0,
                    std::mem::size_of_val(affinity),
                    affinity as *const libc::cpu_set_t,
                ),
                ChildStep::RestoreAffinity,
            )?;
        }
        if setup.clear_groups {
            check(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                ChildStep::ClearGroups,
            )?;
        }
        let mut listed = 0;
        loop {
            if listed == SOURCE_LIST_BYTES {
                *libc::__errno_location() = libc::E2BIG;
                return Err((ChildStep::ReadMountSources, 0));
            }
            let n = libc::read(
                setup.sources_read,
                child.source_list.add(listed).cast(),
                SOURCE_LIST_BYTES - listed,
            );
            match n {
                0 => break,
                n if n < 0 && *libc::__errno_location() == libc::EINTR => {}
                n if n < 0 => return Err((ChildStep::ReadMountSources, 0)),
                n => listed += n as usize,
            }
        }
        let mut highest_fd = setup
            .fd_moves
            .iter()
            .map(|(_, to)| *to)
            .fold(IPC_FD, RawFd::max);
        let (mut start, mut index) = (0, 0u16);
        for end in 0..listed {
            if *child.source_list.add(end) != 0 {
                continue;
            }
            let failed = (ChildStep::OpenMountSource, index);
            let to = FIRST_SOURCE_FD + RawFd::from(index);
            let fd = libc::open(
                child.source_list.add(start).cast(),
                libc::O_PATH | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(failed);
            }
            // open() returns the lowest free number: never one already placed, maybe `to` itself.
            let placed = if fd == to {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                let placed = libc::dup2(fd, to);
                libc::close(fd);
                placed
            };
            if placed < 0 {
                return Err(failed);
            }
            highest_fd = highest_fd.max(to);
            (start, index) = (end + 1, index + 1);
        }
        check(
            libc::syscall(libc::SYS_setresgid, 0, 0, 0),
            ChildStep::SetIds,
        )?;
        check(
            libc::syscall(libc::SYS_setresuid, 0, 0, 0),
            ChildStep::SetIds,
        )?;
        // After the id change (which would clear it) and before anything long-running.
        check(
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) as _,
            ChildStep::ParentDeathSignal,
        )?;
        for &(from, to) in setup
            .fd_moves
            .iter()
            .chain(std::iter::once(&(app_socket, IPC_FD)))
        {
            if from == to {
                check(
                    libc::fcntl(from, libc::F_SETFD, 0) as _,
                    ChildStep::ArrangeFds,
                )?;
            } else {
                check(libc::dup2(from, to) as _, ChildStep::ArrangeFds)?;
            }
        }
        // Whatever else the launcher had open (inherited without CLOEXEC, or its own fds) must not
        // reach the jail. CLOEXEC rather than close: the loader fd itself is among them.
        check(
            libc::syscall(
                libc::SYS_close_range,
                (highest_fd + 1) as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ),
            ChildStep::ArrangeFds,
        )?;
        libc::syscall(
            libc::SYS_execveat,
            setup.loader,
            c"".as_ptr(),
            child.argv.as_ptr(),
            child.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        Err((ChildStep::ExecLoader, 0))
    }
}

/// The most mappings [`release_parent_memory`] unmaps per reading of /proc/self/maps.
const RELEASED_PER_PASS: usize = 256;

/// Unmaps this child's copy of the parent's private anonymous memory (its heaps, the other
/// threads' stacks), keeping the mappings it still uses: its own stack and thread-local storage,
/// the ones holding [`ChildContext::used`] addresses, and the program's `.bss` (the anonymous
/// mapping that starts where a file mapping ends: libc's own variables).
///
/// Why: the child is a fork-style copy of the launcher, and in a daemon it may wait for its
/// plan for minutes (a warm jail, `host/src/pool.rs`). While it holds that copy every page the
/// daemon writes is copied for it (the parked jail's memory grew to ~2 MiB after a few hundred
/// starts, 8 MiB for four), and its exec of the loader has to tear the whole copy down on the
/// start's critical path. Unmapped here, the daemon's pages are its own again (a write to one
/// only makes it writable again, no copy), and the exec finds little to tear down.
///
/// Best effort: a failure to read or unmap costs only the memory, so it is ignored.
/// Async-signal-safe: raw syscalls and stack buffers only.
fn release_parent_memory(child: &ChildContext) {
    let stack_marker = 0u8;
    let stack = &stack_marker as *const u8 as usize;
    // SAFETY: errno's address is this thread's, in its thread-local storage.
    let tls = unsafe { libc::__errno_location() } as usize;
    let strings = child.argv.iter().chain(child.envp.iter());
    let keeps = |start: usize, end: usize| {
        [stack, tls]
            .iter()
            .copied()
            .chain(child.used.iter().copied())
            .chain(strings.clone().map(|string| *string as usize))
            .any(|address| (start..end).contains(&address))
    };
    loop {
        let mut ranges = [(0usize, 0usize); RELEASED_PER_PASS];
        let Some(found) = unneeded_mappings(&mut ranges, &keeps) else {
            return;
        };
        let mut unmapped = 0;
        for &(start, end) in &ranges[..found] {
            // SAFETY: nothing this child uses lies in these ranges (see `keeps`): only its copy
            // of the parent's memory goes; the parent's own mappings are untouched.
            if unsafe { libc::munmap(start as *mut libc::c_void, end - start) } == 0 {
                unmapped += 1;
            }
        }
        // A full pass may have left more; one that unmapped nothing would find the same again.
        if found < RELEASED_PER_PASS || unmapped == 0 {
            return;
        }
    }
}

/// Fills `ranges` with up to [`RELEASED_PER_PASS`] private, writable, anonymous mappings of
/// /proc/self/maps that `keeps` does not keep and that are not a `.bss`; returns how many, or
/// None when the file cannot be read. No allocation: the file is read through a stack buffer.
fn unneeded_mappings(
    ranges: &mut [(usize, usize); RELEASED_PER_PASS],
    keeps: &dyn Fn(usize, usize) -> bool,
) -> Option<usize> {
    // SAFETY: open/read/close on a NUL-terminated literal and a stack buffer.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buffer = [0u8; 4096];
    let (mut filled, mut found) = (0usize, 0usize);
    // Where the previous mapping ended, and whether it was a file's.
    let mut previous = (0usize, false);
    let complete;
    loop {
        // SAFETY: reads into the unfilled tail of a live stack buffer.
        let n = unsafe {
            libc::read(
                fd,
                buffer[filled..].as_mut_ptr().cast(),
                buffer.len() - filled,
            )
        };
        if n < 0 {
            complete = false;
            break;
        }
        let n = n as usize;
        filled += n;
        let mut consumed = 0;
        while let Some(length) = buffer[consumed..filled].iter().position(|&b| b == b'\n') {
            let line = &buffer[consumed..consumed + length];
            consumed += length + 1;
            let Some(mapping) = Mapping::parse(line) else {
                continue;
            };
            let bss = mapping.anonymous() && previous == (mapping.start, true);
            previous = (mapping.end, !mapping.anonymous());
            if found < RELEASED_PER_PASS
                && mapping.releasable()
                && !bss
                && !keeps(mapping.start, mapping.end)
            {
                ranges[found] = (mapping.start, mapping.end);
                found += 1;
            }
        }
        buffer.copy_within(consumed..filled, 0);
        filled -= consumed;
        // A line longer than the buffer (a very long path) cannot be parsed: stop there.
        if n == 0 || filled == buffer.len() {
            complete = n == 0;
            break;
        }
    }
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    (complete || found > 0).then_some(found)
}

/// One line of /proc/PID/maps: `start-end perms offset dev inode [path]`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a [u8],
    inode: &'a [u8],
    path: &'a [u8],
}

impl<'a> Mapping<'a> {
    fn parse(line: &'a [u8]) -> Option<Mapping<'a>> {
        let mut fields = line.split(|&b| b == b' ').filter(|field| !field.is_empty());
        let range = fields.next()?;
        let dash = range.iter().position(|&b| b == b'-')?;
        let start = hex(&range[..dash])?;
        let end = hex(&range[dash + 1..])?;
        let perms = fields.next()?;
        let _offset = fields.next()?;
        let _device = fields.next()?;
        let inode = fields.next()?;
        let path = fields.next().unwrap_or(&[]);
        (perms.len() == 4 && start < end).then_some(Mapping {
            start,
            end,
            perms,
            inode,
            path,
        })
    }

    /// No file behind it (inode 0; named or not).
    fn anonymous(&self) -> bool {
        self.inode == b"0"
    }

    /// Private, writable and anonymous: the heaps, `[anon:...]` and unnamed mappings (thread
    /// stacks, allocator arenas); never the main stack or the kernel's `[vdso]`, `[vvar]`.
    fn releasable(&self) -> bool {
        self.anonymous()
            && self.perms[1] == b'w'
            && self.perms[3] == b'p'
            && (self.path.is_empty() || self.path == b"[heap]" || self.path.starts_with(b"[anon:"))
    }
}

/// A hexadecimal number without prefix, as /proc/PID/maps writes addresses.
fn hex(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0usize, |value, &digit| {
        let digit = (digit as char).to_digit(16)? as usize;
        Some(value << 4 | digit)
    })
}

/// The app's fd 3 (`handoff::fds::IPC`).
const IPC_FD: RawFd = elastos_handoff::fds::IPC;

/// Makes the app's fd 3 in the child's own network namespace: a unix socket pair, whose other
/// end goes to the launcher over the channel (SCM_RIGHTS) and is closed here. Returns the app's
/// end, moved above every fixed fd number (close-on-exec until it is moved into place).
///
/// Why here: a socket belongs to the network namespace it is created in, and answers network
/// ioctls about that namespace; made by the launcher, fd 3 was a socket of the host's
/// (`SIOCGIFCONF` on it listed the host's interfaces). Async-signal-safe: raw syscalls on
/// stack buffers.
fn make_ipc_socket(setup: &ChildSetup) -> Result<RawFd, ChildFailure> {
    let failed = (ChildStep::IpcSocket, 0);
    let mut pair = [-1 as libc::c_int; 2];
    // SAFETY: socketpair fills the two-int array; fcntl, sendmsg and close act on fds this
    // process owns; the message and its control buffer are live, correctly sized locals.
    unsafe {
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        ) != 0
        {
            return Err(failed);
        }
        let [app, broker] = pair;
        let moved = libc::fcntl(app, libc::F_DUPFD_CLOEXEC, FIXED_FDS_END);
        libc::close(app);
        if moved < 0 {
            libc::close(broker);
            return Err(failed);
        }
        // One byte of payload (a stream socket carries no message of zero bytes) and one fd.
        let sent = send_with_fds(setup.channel, &[1], &[broker, -1, -1]);
        libc::close(broker);
        if !sent {
            return Err(failed);
        }
        Ok(moved)
    }
}

/// Receives the one fd the jail's first process sends on `channel` (`make_ipc_socket`):
/// close-on-exec here. EOF (the process is gone before it sent it) is `UnexpectedEof`.
pub fn receive_fd(channel: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut payload = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut payload)];
    let mut space = nix::cmsg_space!(libc::c_int);
    let message = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut received = Vec::new();
    for control in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            received.extend(fds);
        }
    }
    // SAFETY: each fd came with this message (SCM_RIGHTS): new descriptors nobody else owns.
    let mut received = received
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    match (message.bytes, received.next()) {
        (1, Some(fd)) if received.next().is_none() => Ok(fd),
        (0, None) => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected one byte and one fd from the jail's first process",
        )),
    }
}

/// Closes every fd of this process above stdio but those in `keep` (ascending), with one
/// close_range(2) per gap: async-signal-safe, and it does not allocate.
fn close_all_but(keep: &[RawFd]) -> Result<(), ChildFailure> {
    let mut first = 3;
    for &fd in keep.iter().chain(std::iter::once(&RawFd::MAX)) {
        if fd > first {
            let last = if fd == RawFd::MAX {
                libc::c_uint::MAX
            } else {
                (fd - 1) as libc::c_uint
            };
            // SAFETY: close_range on integer arguments; the fds it closes are copies this
            // process owns and nothing in it uses.
            let closed =
                unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last, 0) };
            check(closed, ChildStep::ArrangeFds)?;
        }
        first = first.max(fd.saturating_add(1));
    }
    Ok(())
}

/// Sends `signal` to the process `pidfd` refers to (pidfd_send_signal(2)). ESRCH once it has
/// exited: never another process, whatever its pid became.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: a raw syscall on a live fd and integers; a null siginfo is allowed (the kernel
    // fills it in as for kill(2)).
    let sent = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process `pidfd` refers to has exited (a pidfd polls readable from then on, zombie
/// or reaped). A failed poll counts as exited: the caller then trusts nothing of the process.
pub fn has_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    !matches!(poll(&mut fds, 0), Ok(0))
}

/// fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate of `fd` numbered at least `floor`.
pub fn dup_above(fd: RawFd, floor: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on integer arguments.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just created by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Gives the heap's free pages back to the kernel (malloc_trim(0)): a supervisor that waits for
/// hours should not keep the memory its start-up used.
pub fn release_free_heap() {
    // SAFETY: malloc_trim only walks glibc's own heap structures, under its own lock.
    unsafe { libc::malloc_trim(0) };
}

/// The Landlock ABI version the kernel supports (landlock_create_ruleset(2) with
/// LANDLOCK_CREATE_RULESET_VERSION): `Err` when it has none (ENOSYS: not built in; EOPNOTSUPP:
/// built in but not enabled at boot). Asked of the kernel, not read from securityfs, which may
/// not be mounted.
pub fn landlock_abi() -> io::Result<u32> {
    /// LANDLOCK_CREATE_RULESET_VERSION (uapi/linux/landlock.h).
    const VERSION: libc::c_uint = 1 << 0;
    // SAFETY: a raw syscall with a null attribute and size 0, which the VERSION flag requires;
    // the kernel reads and writes no memory of ours.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            VERSION,
        )
    };
    if abi < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(abi).unwrap_or(0))
}

/// Result of a raw call that returns a count or -1 with errno.
fn count(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// splice(2) of up to `len` bytes from `from` to `to` (one of them a pipe) without copying them
/// through user space; SPLICE_F_NONBLOCK: the pipe side never blocks (EAGAIN instead).
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice on integer arguments; null offsets mean "the files' own positions".
    count(unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    })
}

/// read(2) into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live, exclusively borrowed buffer of `buf.len()` bytes.
    count(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// write(2) of `bytes`.
pub fn write(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes the kernel only reads.
    count(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) })
}

/// poll(2) on raw fds (which may be fds this process does not own, such as its stdio);
/// `timeout_ms` -1 waits without limit.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()` pollfds.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    count(ready as isize)
}

/// A new pseudo-terminal: (master, slave), both close-on-exec, the master non-blocking. The slave
/// is opened through the master (TIOCGPTPEER), not by a path under /dev/pts that another
/// process could swap, and is nobody's controlling terminal (O_NOCTTY).
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open("/dev/ptmx")?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one c_int from a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER takes open flags as an integer and returns a new fd.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl just created `slave`; nothing else owns it.
    Ok((master.into(), unsafe { OwnedFd::from_raw_fd(slave) }))
}

/// The window size of the terminal `fd` (TIOCGWINSZ), if it is one.
pub fn window_size(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ fills the live local.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        (libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) == 0).then_some(size)
    }
}

/// Sets the window size of the terminal `fd` (TIOCSWINSZ); the kernel sends SIGWINCH to the
/// terminal's foreground process group when it changed.
pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from a live reference.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// This process's stdin (0), stdout (1) or stderr (2).
pub fn stdio(fd: RawFd) -> BorrowedFd<'static> {
    assert!((0..=2).contains(&fd), "stdio is fds 0 to 2, not {fd}");
    // SAFETY: fds 0-2 are open for the life of a Rust process (its runtime opens /dev/null on
    // any that was closed at start) and no code of ours closes them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// A new open file description of what the stdio fd `fd` is (a terminal), non-blocking: the
/// launcher's terminal is shared with the user's shell through its stdio's descriptions, whose
/// flags must not change, and a blocking read of a terminal may wait even after poll(2) said
/// it was readable (a mode change in between, another reader).
pub fn reopen_nonblocking(fd: RawFd) -> io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{fd}"))?;
    Ok(file.into())
}

/// Makes `command` run in the user namespace `namespace` (this user's, see `crate::holder`), as
/// its uid and gid 0 (this user, mapped there), with every capability in it and no
/// supplementary groups. `namespace` must stay open until the command is spawned.
pub fn join_user_namespace(command: &mut std::process::Command, namespace: BorrowedFd<'_>) {
    use std::os::unix::process::CommandExt;
    let fd = namespace.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec, single-threaded, and makes only
    // raw syscalls on integers (setns needs a single-threaded caller, which the child is).
    unsafe {
        command.pre_exec(move || {
            if libc::syscall(libc::SYS_setns, fd, libc::CLONE_NEWUSER) < 0
                || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// Makes this process what [`join_user_namespace`] makes a command: uid and gid 0 of the user
/// namespace `namespace`, with every capability in it and no supplementary groups. The kernel
/// refuses (EINVAL) while the process has other threads.
pub fn enter_user_namespace(namespace: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: raw syscalls on a live fd and integers. setgroups is the raw one, of this thread
    // only, which is the whole process once setns succeeded (it requires one thread).
    unsafe {
        if libc::syscall(libc::SYS_setns, namespace.as_raw_fd(), libc::CLONE_NEWUSER) < 0
            || libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes `command` start in a new user namespace of its own (unshare(CLONE_NEWUSER) before the
/// exec), whose id maps the caller writes afterwards: a holder (`crate::holder`).
pub fn unshare_user_namespace(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and makes one raw syscall.
    unsafe {
        command.pre_exec(|| {
            if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// NS_GET_OWNER_UID and NS_GET_PARENT (uapi/linux/nsfs.h: _IO(0xb7, 4) and _IO(0xb7, 2)).
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
const NS_GET_PARENT: libc::c_ulong = 0xb702;

/// The uid (in this process's user namespace) that owns the user namespace `namespace`.
pub fn namespace_owner(namespace: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the live local.
    if unsafe { libc::ioctl(namespace.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// The parent of the user namespace `namespace` (EPERM when it is not within this process's).
pub fn namespace_parent(namespace: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new fd.
    let fd = unsafe { libc::ioctl(namespace.as_raw_fd(), NS_GET_PARENT) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created `fd`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pidfd_open(2): a pidfd (close-on-exec) of the process `pid`. The caller checks afterwards
/// that the pid still names the process it means (its start time): from then on the pidfd names
/// that process whatever its pid becomes.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: a raw syscall on integers; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created `fd`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// While it lives, the calling thread's new children start in the pid namespace of the process
/// a pidfd refers to (setns(CLONE_NEWPID) changes only where children go, never the caller's
/// own pid or view); dropped, in the thread's own again.
pub struct ChildrenInPidNamespace {
    own: OwnedFd,
}

impl ChildrenInPidNamespace {
    /// Children of this thread go to the pid namespace of `process` (a pidfd).
    pub fn enter(process: BorrowedFd<'_>) -> io::Result<ChildrenInPidNamespace> {
        let own = OwnedFd::from(std::fs::File::open("/proc/thread-self/ns/pid")?);
        // SAFETY: setns on a live fd and a flag.
        if unsafe { libc::setns(process.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ChildrenInPidNamespace { own })
    }
}

impl Drop for ChildrenInPidNamespace {
    fn drop(&mut self) {
        // SAFETY: setns on a live fd and a flag. Back to the caller's own namespace, which is
        // always allowed; a failure would leave later children in the jail, so it aborts.
        if unsafe { libc::setns(self.own.as_raw_fd(), libc::CLONE_NEWPID) } < 0 {
            std::process::abort();
        }
    }
}

/// The namespaces a process added to a running jail joins through the jail's init (its pid
/// namespace is the one it is created in, see [`ChildrenInPidNamespace`]). The user namespace
/// is the jail's, which owns all the others: the loader then joins the app's, nested in it.
const JAIL_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// close_range(2)'s CLOSE_RANGE_CLOEXEC (uapi/linux/close_range.h).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Makes `command` (spawned while [`ChildrenInPidNamespace`] holds the jail's pid namespace)
/// exec the loader `loader` in `join` mode inside the running jail of `init` (a pidfd of the
/// jail's init): its fds `moves` (from, fixed number) in place, fd 3 closed and every other fd
/// above them closed at exec, no supplementary group, the jail's namespaces joined (user,
/// mount, net, IPC, UTS, cgroup), uid and gid 0 of the jail's user namespace (the app's ids are
/// mapped to them; the loader execs with the capabilities it needs there and drops them all).
///
/// Its stdio is the command's. The fds in `moves`, `init` and `loader` must stay open until
/// the command is spawned, and `init` and `loader` must be numbered above every fixed one
/// ([`FIXED_FDS_END`]): the child closes fd 3 and replaces the targets of `moves`.
pub fn exec_loader_in_jail(
    command: &mut std::process::Command,
    init: BorrowedFd<'_>,
    loader: BorrowedFd<'_>,
    moves: [(RawFd, RawFd); 3],
) {
    use std::os::unix::process::CommandExt;
    let (init, loader) = (init.as_raw_fd(), loader.as_raw_fd());
    let first_closed_at_exec = moves.iter().map(|(_, to)| *to).max().unwrap_or(2) + 1;
    // Prepared here: the child may not allocate.
    let argv: Vec<CString> = vec![c"elastos-loader".to_owned(), c"join".to_owned()];
    // As addresses: a closure for pre_exec must be Send, which raw pointers are not.
    let argv_pointers: Vec<usize> = argv
        .iter()
        .map(|a| a.as_ptr() as usize)
        .chain(std::iter::once(0))
        .collect();
    let envp: [usize; 1] = [0];
    // SAFETY: the closure runs in the forked child before exec, and makes only raw syscalls on
    // integers and on the pointer arrays prepared above (moved into it, so alive there): no
    // allocation, no lock. setns(CLONE_NEWUSER) needs a single-threaded caller, which the child
    // is.
    unsafe {
        command.pre_exec(move || {
            let _keep_alive = &argv;
            let check = |ret: libc::c_long| {
                if ret < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            for (from, to) in moves {
                check(libc::dup2(from, to).into())?;
            }
            check(libc::syscall(libc::SYS_close_range, 3u32, 3u32, 0u32))?;
            check(libc::syscall(
                libc::SYS_close_range,
                first_closed_at_exec as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ))?;
            check(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check(libc::syscall(libc::SYS_setns, init, JAIL_NAMESPACES))?;
            check(libc::syscall(libc::SYS_setresgid, 0, 0, 0))?;
            check(libc::syscall(libc::SYS_setresuid, 0, 0, 0))?;
            libc::syscall(
                libc::SYS_execveat,
                loader,
                c"".as_ptr(),
                argv_pointers.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            Err(io::Error::last_os_error())
        })
    };
}

/// ioctl(TIOCSCTTY, 0): the terminal `fd` becomes the controlling terminal of the caller's
/// session, which it leads and which has none (0: never steals one from another session).
pub fn take_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_are_parsed_and_only_private_writable_anonymous_memory_is_releasable() {
        let line = |text: &'static str| Mapping::parse(text.as_bytes());
        let heap =
            line("55d0c3a4e000-55d0c3a6f000 rw-p 00000000 00:00 0                          [heap]")
                .expect("parsed");
        assert_eq!((heap.start, heap.end), (0x55d0_c3a4_e000, 0x55d0_c3a6_f000));
        assert!(heap.releasable());
        let arena = line("7f1c2c000000-7f1c2c021000 rw-p 00000000 00:00 0 ").expect("parsed");
        assert!(arena.releasable());
        let named = line("7f1c2c000000-7f1c2c021000 rw-p 00000000 00:00 0 [anon:glibc: malloc]");
        assert!(named.expect("parsed").releasable());
        for kept in [
            // The program's own data, a file's private mapping.
            "55d0c2000000-55d0c2100000 rw-p 00a3c000 fd:01 1835          /usr/bin/elastos",
            // A guard page, the main stack, the kernel's pages, shared memory.
            "7f1c2bfff000-7f1c2c000000 ---p 00000000 00:00 0",
            "7ffd1b2a0000-7ffd1b2c1000 rw-p 00000000 00:00 0                          [stack]",
            "7ffd1b3d8000-7ffd1b3dc000 r--p 00000000 00:00 0                          [vvar]",
            "7f1c2c000000-7f1c2c021000 rw-s 00000000 00:01 4242                       /dev/zero (deleted)",
            "7f1c2c000000-7f1c2c021000 rw-s 00000000 00:00 0",
        ] {
            let mapping = Mapping::parse(kept.as_bytes()).expect(kept);
            assert!(!mapping.releasable(), "{kept}");
        }
        for bad in [
            "",
            "zz-10 rw-p 0 0 0",
            "20-10 rw-p 00000000 00:00 0",
            "10-20 rw 0 00:00 0",
        ] {
            assert_eq!(Mapping::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(hex(b"ffffffffffffffff"), Some(usize::MAX));
        assert_eq!(hex(b"10000000000000000"), None);
    }
}
