//! The loader's syscalls: one safe wrapper each, around [`rt::syscall`]. Paths are `CPath`s
//! (NUL-terminated bytes); failures are the kernel's errno.

use alloc::vec::Vec;

use linux_raw_sys::errno;
use linux_raw_sys::general as k;
use linux_raw_sys::landlock as ll;
use linux_raw_sys::prctl as pr;

use crate::rt;
use elastos_handoff::SockFilter;

/// The kernel's error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// ENOENT.
    pub const NOENT: Errno = Errno(errno::ENOENT as i32);
    /// EEXIST.
    pub const EXIST: Errno = Errno(errno::EEXIST as i32);
    /// EINTR.
    pub const INTR: Errno = Errno(errno::EINTR as i32);
    /// EINVAL.
    pub const INVAL: Errno = Errno(errno::EINVAL as i32);
}

/// A syscall's result.
pub type Result<T> = core::result::Result<T, Errno>;

/// A NUL-terminated path or string for the kernel.
pub struct CPath(Vec<u8>);

impl CPath {
    /// `bytes` plus the NUL (the handoff decoder refuses NUL inside strings).
    pub fn new(bytes: &[u8]) -> CPath {
        let mut owned = Vec::with_capacity(bytes.len() + 1);
        owned.extend_from_slice(bytes);
        owned.push(0);
        CPath(owned)
    }

    fn ptr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

fn check(ret: isize) -> Result<usize> {
    if ret < 0 {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// One syscall whose arguments are integers or pointers.
///
/// # Safety
///
/// Every pointer among `args` must point to live memory of the size and kind the kernel reads
/// or writes for `nr`, valid (and, for memory the kernel writes, exclusively ours) until the
/// call returns.
unsafe fn call(nr: u32, args: &[usize]) -> Result<usize> {
    // SAFETY: the caller upholds this function's contract.
    check(unsafe { rt::syscall(nr, args) })
}

/// One syscall whose arguments are all integers (no pointer the kernel could follow).
fn call_ints(nr: u32, args: &[usize]) -> Result<usize> {
    // SAFETY: no argument is a pointer.
    unsafe { call(nr, args) }
}

/// read(2), retried on EINTR.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize> {
    loop {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of `buf.len()` bytes.
        match unsafe {
            call(
                k::__NR_read,
                &[fd as usize, buf.as_mut_ptr() as usize, buf.len()],
            )
        } {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// Fills `buf` from `fd`; EOF before that is EPIPE.
pub fn read_exact(fd: i32, mut buf: &mut [u8]) -> Result<()> {
    while !buf.is_empty() {
        match read(fd, buf)? {
            0 => return Err(Errno(errno::EPIPE as i32)),
            n => buf = &mut buf[n..],
        }
    }
    Ok(())
}

/// Reads `fd` to its end.
pub fn read_to_end(fd: i32) -> Result<Vec<u8>> {
    let mut bytes: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if bytes.len() == bytes.capacity() {
            bytes.reserve(bytes.capacity());
        }
        let len = bytes.len();
        let spare = bytes.capacity() - len;
        // SAFETY: the spare capacity is allocated; `read` fills at most `spare` bytes of it and
        // only the filled part becomes part of the Vec.
        let filled = read(fd, unsafe {
            core::slice::from_raw_parts_mut(bytes.as_mut_ptr().add(len), spare)
        })?;
        if filled == 0 {
            return Ok(bytes);
        }
        // SAFETY: `filled` bytes after `len` were just written by the kernel.
        unsafe { bytes.set_len(len + filled) };
    }
}

/// write(2) until all of `bytes` is written.
pub fn write_all(fd: i32, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live buffer of `bytes.len()` bytes the kernel only reads.
        match unsafe {
            call(
                k::__NR_write,
                &[fd as usize, bytes.as_ptr() as usize, bytes.len()],
            )
        } {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// close(2).
pub fn close(fd: i32) {
    let _ = call_ints(k::__NR_close, &[fd as usize]);
}

/// close_range(first, MAX, 0): closes every fd from `first` up.
pub fn close_from(first: i32) -> Result<()> {
    call_ints(k::__NR_close_range, &[first as usize, u32::MAX as usize, 0]).map(drop)
}

/// Sets close-on-exec on `fd`.
pub fn set_cloexec(fd: i32) -> Result<()> {
    call_ints(
        k::__NR_fcntl,
        &[fd as usize, k::F_SETFD as usize, k::FD_CLOEXEC as usize],
    )
    .map(drop)
}

/// pipe2(O_CLOEXEC): (read end, write end).
pub fn pipe() -> Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a live local array of the two ints pipe2 writes.
    unsafe {
        call(
            k::__NR_pipe2,
            &[fds.as_mut_ptr() as usize, k::O_CLOEXEC as usize],
        )
    }?;
    Ok((fds[0], fds[1]))
}

/// openat(AT_FDCWD, path, flags, mode).
pub fn open(path: &CPath, flags: u32, mode: u32) -> Result<i32> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    unsafe {
        call(
            k::__NR_openat,
            &[
                k::AT_FDCWD as usize,
                path.ptr(),
                flags as usize,
                mode as usize,
            ],
        )
    }
    .map(|fd| fd as i32)
}

/// `fstat(fd)` (works on O_PATH fds).
fn fstat(fd: i32) -> Result<k::stat> {
    // SAFETY: an all-zero `struct stat` is a valid value of it.
    let mut stat: k::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `stat` is a live local `struct stat` the kernel fills.
    unsafe {
        call(
            k::__NR_fstat,
            &[fd as usize, &mut stat as *mut k::stat as usize],
        )
    }?;
    Ok(stat)
}

/// Whether `fd` is a directory.
pub fn is_dir(fd: i32) -> Result<bool> {
    Ok(fstat(fd)?.st_mode & k::S_IFMT == k::S_IFDIR)
}

/// Of the file `fd`: (its link count, its modification time in seconds since the epoch).
pub fn links_and_mtime(fd: i32) -> Result<(u64, i64)> {
    let stat = fstat(fd)?;
    Ok((stat.st_nlink as u64, stat.st_mtime as i64))
}

/// The wall clock (CLOCK_REALTIME), in seconds since the epoch.
pub fn now() -> Result<i64> {
    let mut now = k::__kernel_timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a live local timespec the kernel fills.
    unsafe {
        call(
            k::__NR_clock_gettime,
            &[
                k::CLOCK_REALTIME as usize,
                &mut now as *mut k::__kernel_timespec as usize,
            ],
        )
    }?;
    Ok(now.tv_sec)
}

/// Sleeps `seconds` (nanosleep(2); a signal that does not kill us cuts it short).
pub fn sleep(seconds: i64) {
    let duration = k::__kernel_timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    // SAFETY: `duration` is a live local timespec the kernel only reads; no remainder is asked.
    let _ = unsafe {
        call(
            k::__NR_nanosleep,
            &[&duration as *const k::__kernel_timespec as usize, 0],
        )
    };
}

/// getpid(2).
pub fn getpid() -> i32 {
    call_ints(k::__NR_getpid, &[]).map_or(0, |pid| pid as i32)
}

/// mkdir(2).
pub fn mkdir(path: &CPath, mode: u32) -> Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    unsafe {
        call(
            k::__NR_mkdirat,
            &[k::AT_FDCWD as usize, path.ptr(), mode as usize],
        )
    }
    .map(drop)
}

/// symlink(2).
pub fn symlink(target: &CPath, link: &CPath) -> Result<()> {
    // SAFETY: `target` and `link` are NUL-terminated strings that outlive the call.
    unsafe {
        call(
            k::__NR_symlinkat,
            &[target.ptr(), k::AT_FDCWD as usize, link.ptr()],
        )
    }
    .map(drop)
}

/// chdir(2).
pub fn chdir(path: &CPath) -> Result<()> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    unsafe { call(k::__NR_chdir, &[path.ptr()]) }.map(drop)
}

/// mount(2) with optional source, fstype and data.
pub fn mount(
    source: Option<&CPath>,
    target: &CPath,
    fstype: Option<&CPath>,
    flags: u32,
    data: Option<&CPath>,
) -> Result<()> {
    let ptr = |s: Option<&CPath>| s.map_or(0, CPath::ptr);
    // SAFETY: every path and the data string are NUL-terminated and outlive the call (or null).
    unsafe {
        call(
            k::__NR_mount,
            &[
                ptr(source),
                target.ptr(),
                ptr(fstype),
                flags as usize,
                ptr(data),
            ],
        )
    }
    .map(drop)
}

/// Adds mount attributes (MOUNT_ATTR_*) to the mount at `target`, recursively if asked. Only
/// ever adds restrictions, so flags the kernel locked on the original mount are kept.
pub fn mount_setattr(target: &CPath, attr_set: u32, recursive: bool) -> Result<()> {
    let attr = k::mount_attr {
        attr_set: u64::from(attr_set),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { k::AT_RECURSIVE } else { 0 };
    // SAFETY: `target` is NUL-terminated and `attr` a live local `mount_attr` of the size passed.
    unsafe {
        call(
            k::__NR_mount_setattr,
            &[
                k::AT_FDCWD as usize,
                target.ptr(),
                flags as usize,
                &attr as *const k::mount_attr as usize,
                core::mem::size_of_val(&attr),
            ],
        )
    }
    .map(drop)
}

/// pivot_root(".", ".") then detach the old root: the bubblewrap/runc idiom that needs no
/// directory for the old root inside the new one. The caller has chdir()ed into the new root.
pub fn pivot_root_here() -> Result<()> {
    let here = CPath::new(b".");
    // SAFETY: `here` is a NUL-terminated string that outlives both calls.
    unsafe { call(k::__NR_pivot_root, &[here.ptr(), here.ptr()]) }?;
    // SAFETY: `here` is a NUL-terminated string that outlives both calls.
    unsafe { call(k::__NR_umount2, &[here.ptr(), k::MNT_DETACH as usize]) }.map(drop)
}

/// unshare(2).
pub fn unshare(flags: u32) -> Result<()> {
    call_ints(k::__NR_unshare, &[flags as usize]).map(drop)
}

/// setns(2) of the namespace `fd` refers to (`kind`: its CLONE_NEW* flag).
pub fn setns(fd: i32, kind: u32) -> Result<()> {
    call_ints(k::__NR_setns, &[fd as usize, kind as usize]).map(drop)
}

/// sethostname(2).
pub fn sethostname(name: &[u8]) -> Result<()> {
    // SAFETY: `name` is a live buffer of `name.len()` bytes the kernel only reads.
    unsafe { call(k::__NR_sethostname, &[name.as_ptr() as usize, name.len()]) }.map(drop)
}

/// Writes `contents` to the file at `path` (which must exist: /proc files).
pub fn write_file(path: &CPath, contents: &[u8]) -> Result<()> {
    let fd = open(path, k::O_WRONLY | k::O_CLOEXEC, 0)?;
    let written = write_all(fd, contents);
    close(fd);
    written
}

/// prctl(2) with integer arguments.
pub fn prctl(option: u32, arg2: usize) -> Result<usize> {
    call_ints(k::__NR_prctl, &[option as usize, arg2, 0, 0, 0])
}

/// Every capability gone: ambient set cleared, bounding set emptied, then effective, permitted
/// and inheritable zeroed (the bounding set needs CAP_SETPCAP, so it goes first).
pub fn drop_all_capabilities() -> Result<()> {
    // SAFETY: `header` and `data` are live locals of the layout capset reads.
    unsafe {
        call(
            k::__NR_prctl,
            &[
                pr::PR_CAP_AMBIENT as usize,
                pr::PR_CAP_AMBIENT_CLEAR_ALL as usize,
                0,
                0,
                0,
            ],
        )
    }?;
    // Up to the first capability the kernel does not know (EINVAL).
    for cap in 0..=63 {
        match prctl(pr::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            Err(Errno::INVAL) => break,
            Err(e) => return Err(e),
        }
    }
    let header = k::__user_cap_header_struct {
        version: k::_LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [k::__user_cap_data_struct {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: `header` and `data` are live locals of the layout capset reads.
    unsafe {
        call(
            k::__NR_capset,
            &[&header as *const _ as usize, data.as_ptr() as usize],
        )
    }
    .map(drop)
}

/// prlimit64 on ourselves: the current (soft, hard) limit, after setting `new` if given (soft
/// and hard alike).
pub fn rlimit(resource: u32, new: Option<u64>) -> Result<(u64, u64)> {
    rlimits(resource, new.map(|v| (v, v)))
}

/// prlimit64 on ourselves: the current (soft, hard) limit, after setting `new` (soft, hard) if
/// given.
pub fn rlimits(resource: u32, new: Option<(u64, u64)>) -> Result<(u64, u64)> {
    let wanted = new.map(|(soft, hard)| k::rlimit64 {
        rlim_cur: soft,
        rlim_max: hard,
    });
    let mut old = k::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `new` (if any) and `old` are live locals of type rlimit64.
    unsafe {
        call(
            k::__NR_prlimit64,
            &[
                0,
                resource as usize,
                wanted
                    .as_ref()
                    .map_or(0, |w| w as *const k::rlimit64 as usize),
                &mut old as *mut k::rlimit64 as usize,
            ],
        )
    }?;
    Ok((old.rlim_cur, old.rlim_max))
}

/// The kernel's Landlock ABI version (0: Landlock not built in or not enabled).
pub fn landlock_abi() -> u32 {
    call_ints(
        k::__NR_landlock_create_ruleset,
        &[0, 0, ll::LANDLOCK_CREATE_RULESET_VERSION as usize],
    )
    .map_or(0, |abi| abi as u32)
}

/// landlock_create_ruleset(2): the ruleset's fd.
pub fn landlock_create_ruleset(attr: &ll::landlock_ruleset_attr) -> Result<i32> {
    // SAFETY: `attr` is a live ruleset attribute of the size passed.
    unsafe {
        call(
            k::__NR_landlock_create_ruleset,
            &[attr as *const _ as usize, core::mem::size_of_val(attr), 0],
        )
    }
    .map(|fd| fd as i32)
}

/// landlock_add_rule(2) of a path-beneath rule.
pub fn landlock_add_path_rule(ruleset: i32, parent_fd: i32, allowed_access: u64) -> Result<()> {
    let rule = ll::landlock_path_beneath_attr {
        allowed_access,
        parent_fd,
    };
    // SAFETY: `rule` is a live local `landlock_path_beneath_attr`.
    unsafe {
        call(
            k::__NR_landlock_add_rule,
            &[
                ruleset as usize,
                ll::landlock_rule_type::LANDLOCK_RULE_PATH_BENEATH as usize,
                &rule as *const _ as usize,
                0,
            ],
        )
    }
    .map(drop)
}

/// landlock_restrict_self(2).
pub fn landlock_restrict_self(ruleset: i32) -> Result<()> {
    call_ints(k::__NR_landlock_restrict_self, &[ruleset as usize, 0]).map(drop)
}

/// Installs a seccomp filter (needs no_new_privs).
pub fn seccomp_filter(program: &[SockFilter]) -> Result<()> {
    /// `struct sock_fprog`.
    #[repr(C)]
    struct Program {
        len: u16,
        filter: *const SockFilter,
    }
    /// SECCOMP_SET_MODE_FILTER (linux/seccomp.h).
    const SET_MODE_FILTER: usize = 1;
    let fprog = Program {
        len: u16::try_from(program.len()).map_err(|_| Errno::INVAL)?,
        filter: program.as_ptr(),
    };
    // SAFETY: `fprog` points to `program`, a live slice of `program.len()` instructions, for the whole call.
    unsafe {
        call(
            k::__NR_seccomp,
            &[SET_MODE_FILTER, 0, &fprog as *const Program as usize],
        )
    }
    .map(drop)
}

/// execve(2); returns only on failure.
pub fn execve(path: &CPath, argv: &[CPath], envp: &[CPath]) -> Errno {
    let pointers =
        |strings: &[CPath]| -> Vec<usize> { strings.iter().map(CPath::ptr).chain([0]).collect() };
    let (argv, envp) = (pointers(argv), pointers(envp));
    // SAFETY: `path`, `argv` and `envp` are NUL-terminated strings with null-terminated pointer arrays that outlive the call (which only returns on failure).
    match unsafe {
        call(
            k::__NR_execve,
            &[path.ptr(), argv.as_ptr() as usize, envp.as_ptr() as usize],
        )
    } {
        Err(e) => e,
        Ok(_) => Errno::INVAL,
    }
}

/// fork(2) (clone with SIGCHLD). Returns `None` in the child.
pub fn fork() -> Result<Option<i32>> {
    match call_ints(k::__NR_clone, &[k::SIGCHLD as usize, 0, 0, 0, 0])? {
        0 => Ok(None),
        pid => Ok(Some(pid as i32)),
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Killed(i32),
}

/// wait4(pid, WNOHANG): how it ended, or `None` while it runs.
pub fn try_wait(pid: i32) -> Result<Option<ChildEnd>> {
    let mut status = 0i32;
    // SAFETY: `status` is a live local int the kernel writes.
    let reaped = unsafe {
        call(
            k::__NR_wait4,
            &[
                pid as usize,
                &mut status as *mut i32 as usize,
                k::WNOHANG as usize,
                0,
            ],
        )
    }?;
    if reaped == 0 {
        return Ok(None);
    }
    let signal = status & 0x7f;
    Ok(Some(if signal == 0 {
        ChildEnd::Exited((status >> 8) & 0xff)
    } else {
        ChildEnd::Killed(signal)
    }))
}

/// A set of signals (bit N-1 for signal N).
#[derive(Debug, Clone, Copy)]
pub struct SignalSet(pub u64);

impl SignalSet {
    /// The set of these signals.
    pub fn of(signals: &[u32]) -> SignalSet {
        SignalSet(signals.iter().fold(0, |set, s| set | 1 << (s - 1)))
    }
}

/// Blocks (`true`) or unblocks `set` in this process.
pub fn mask_signals(set: SignalSet, block: bool) -> Result<()> {
    let how = if block { k::SIG_BLOCK } else { k::SIG_UNBLOCK };
    // SAFETY: `set` is a live 8-byte signal mask the kernel only reads.
    unsafe {
        call(
            k::__NR_rt_sigprocmask,
            &[how as usize, &set.0 as *const u64 as usize, 0, 8],
        )
    }
    .map(drop)
}

/// Waits for one of `set` (blocked) and returns it.
pub fn wait_signal(set: SignalSet) -> Result<u32> {
    // SAFETY: an all-zero siginfo is a valid value of it.
    let mut info: k::siginfo_t = unsafe { core::mem::zeroed() };
    loop {
        // SAFETY: `set` and `info` are live locals of the sizes rt_sigtimedwait uses.
        match unsafe {
            call(
                k::__NR_rt_sigtimedwait,
                &[
                    &set.0 as *const u64 as usize,
                    &mut info as *mut _ as usize,
                    0,
                    8,
                ],
            )
        } {
            Err(Errno::INTR) => continue,
            other => return other.map(|signal| signal as u32),
        }
    }
}

/// kill(2).
pub fn kill(pid: i32, signal: u32) {
    let _ = call_ints(k::__NR_kill, &[pid as usize, signal as usize]);
}

/// setsid(2): a new session and process group, led by the caller.
pub fn setsid() -> Result<()> {
    call_ints(k::__NR_setsid, &[]).map(drop)
}

/// ioctl(TIOCSCTTY, 0): the terminal `fd` becomes the controlling terminal of the caller's
/// session (only if it is nobody's yet: 0 never steals one).
pub fn take_controlling_terminal(fd: i32) -> Result<()> {
    call_ints(
        k::__NR_ioctl,
        &[fd as usize, linux_raw_sys::ioctl::TIOCSCTTY as usize, 0],
    )
    .map(drop)
}
