//! Process creation: every way to start a second process, or to run code the app wrote itself.
//!
//! A child that does get created calls `_exit(0)` at once, so a broken jail costs one short-lived
//! process. Exec probes run the exec in a forked child when fork works (unjailed, so the probe run
//! goes on) and in this process when it does not (jailed). The exec'd program is then a copy of
//! this binary in its `exec-marker` mode, so a successful exec in the jail replaces the probe run
//! with a line that says so.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::ptr;

use crate::probes::{c_string, close_fd, home_dir};
use crate::report::{last_errno, Outcome, ProbeArgs};

/// Waits for a child created by a probe and reports success with its pid.
fn reap(pid: libc::pid_t, how: &str) -> Outcome {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer; pid is our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    Outcome::ok(i64::from(pid), format!("{how} created child {pid}"))
}

/// Reports a fork-like call: in the child (return 0) exit at once, in the parent reap it.
fn fork_like(ret: i64, how: &str) -> Outcome {
    if ret == 0 {
        // SAFETY: we are the new child; _exit ends it without running any parent state.
        unsafe { libc::_exit(0) };
    }
    if ret > 0 {
        return reap(ret as libc::pid_t, how);
    }
    Outcome::of(ret, how)
}

pub fn fork(_: &ProbeArgs) -> Outcome {
    // SAFETY: the child only calls _exit (see fork_like); this process is single-threaded.
    let ret = unsafe { libc::fork() };
    fork_like(i64::from(ret), "fork")
}

pub fn vfork(_: &ProbeArgs) -> Outcome {
    let ret: i64;
    // The vfork child borrows our memory and stack until it exits, so it must not run any
    // compiled code (which could clobber the stack the parent resumes on): it exits right after
    // the syscall instruction, still inside this asm block.
    // SAFETY: the child executes only `syscall` instructions (vfork's return, then exit_group);
    // the parent sees vfork's return value in rax; rcx and r11 are clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor edi, edi",
            "mov eax, {exit_group}",
            "syscall",
            "2:",
            exit_group = const libc::SYS_exit_group,
            inlateout("rax") libc::SYS_vfork => ret,
            out("rdi") _,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Outcome::failed(-ret as i32, "vfork");
    }
    reap(ret as libc::pid_t, "vfork")
}

pub fn clone_process(_: &ProbeArgs) -> Outcome {
    // SAFETY: raw clone without CLONE_VM/CLONE_THREAD is fork: the child gets a copy of our memory
    // and returns 0 here, then only calls _exit.
    let ret = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    fork_like(ret, "clone(SIGCHLD)")
}

pub fn clone_thread_newuser(_: &ProbeArgs) -> Outcome {
    // A thread in a new user namespace: the kernel itself refuses this combination (EINVAL), so an
    // unfiltered call creates nothing; the jail must refuse it before the kernel looks.
    let flags = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_NEWUSER;
    // SAFETY: the flags are rejected by the kernel before any task is created (see above); the
    // null stack is never used.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    fork_like(ret, "clone(CLONE_THREAD|CLONE_NEWUSER)")
}

/// `struct clone_args` of clone3(2), version 0 (64 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

pub fn clone3(_: &ProbeArgs) -> Outcome {
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size passed; with no flags this is fork and
    // the child only calls _exit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    fork_like(ret, "clone3")
}

pub fn posix_spawn(_: &ProbeArgs) -> Outcome {
    let path = c_string("/usr/bin/true");
    let argv = [path.as_ptr() as *mut libc::c_char, ptr::null_mut()];
    let envp: [*mut libc::c_char; 1] = [ptr::null_mut()];
    let mut pid = 0;
    // SAFETY: all pointers are valid NUL-terminated strings/arrays that outlive the call.
    let err = unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            ptr::null(),
            ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    if err != 0 {
        return Outcome::failed(err, "posix_spawn(/usr/bin/true)");
    }
    reap(pid, "posix_spawn(/usr/bin/true)")
}

pub fn system(_: &ProbeArgs) -> Outcome {
    let command = c_string("exit 0");
    // SAFETY: clearing errno is how a caller tells system()'s own failure from a stale errno.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: `command` is a valid C string.
    let status = unsafe { libc::system(command.as_ptr()) };
    let errno = last_errno();
    if status == 0 {
        return Outcome::ok(0, "system(\"exit 0\") ran a shell");
    }
    Outcome::failed(
        errno,
        format!("system(\"exit 0\") returned status {status}"),
    )
}

/// Runs `exec` so that its success is observable without ending the probe run when fork works.
///
/// In a forked child (stdout silenced, so an exec'd copy's marker stays out of the results), a
/// CLOEXEC pipe tells the parent whether the exec happened (EOF) or failed (the child writes
/// errno). When fork is denied, `exec` runs here.
fn exec_observed(how: &str, exec: &dyn Fn() -> libc::c_int) -> Outcome {
    let dev_null = c_string("/dev/null");
    // SAFETY: `dev_null` is a valid C string.
    let silent = unsafe { libc::open(dev_null.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if silent < 0 {
        return Outcome::setup_failed(format!("open /dev/null failed: errno {}", last_errno()));
    }
    let mut pipe = [0; 2];
    // SAFETY: `pipe` is a valid 2-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        close_fd(silent);
        return Outcome::setup_failed(format!("pipe2 failed: errno {}", last_errno()));
    }
    let [read_end, write_end] = pipe;
    // SAFETY: the child only execs or reports errno and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: both fds are open; dup2 gives the child a stdout without CLOEXEC.
        unsafe { libc::dup2(silent, libc::STDOUT_FILENO) };
        exec();
        let errno = last_errno();
        // SAFETY: writes 4 bytes from a live local to our own pipe, then ends the child.
        unsafe {
            libc::write(write_end, (&errno as *const i32).cast(), 4);
            libc::_exit(0);
        }
    }
    close_fd(write_end);
    close_fd(silent);
    if pid < 0 {
        close_fd(read_end);
        let ret = exec();
        return Outcome::of(
            i64::from(ret),
            format!("{how} (fork denied, exec tried in-process)"),
        );
    }
    let mut errno = 0i32;
    // SAFETY: reads at most 4 bytes into a live local.
    let got = unsafe { libc::read(read_end, (&mut errno as *mut i32).cast(), 4) };
    close_fd(read_end);
    let mut status = 0;
    // SAFETY: pid is our child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if got == 4 {
        Outcome::failed(errno, format!("{how} (in a forked child)"))
    } else {
        Outcome::ok(0, format!("{how} executed (in a forked child)"))
    }
}

/// argv for running a copy of this binary: its `exec-marker` mode, which says on stdout that it
/// ran (the only way a successful in-process exec in the jail can report itself).
fn self_copy_argv() -> [CString; 2] {
    [c_string("elastos-probe"), c_string("exec-marker")]
}

/// execve(path, argv, {}) as a closure for [`exec_observed`].
fn execve_path<'a>(path: &'a CString, argv: &[CString]) -> impl Fn() -> libc::c_int + 'a {
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect();
    move || {
        let envp: [*const libc::c_char; 1] = [ptr::null()];
        // SAFETY: path, argv and envp are NUL-terminated and outlive the call.
        unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr()) }
    }
}

pub fn exec_usr_bin_true(_: &ProbeArgs) -> Outcome {
    let path = c_string("/usr/bin/true");
    let argv = [c_string("true")];
    let exec = execve_path(&path, &argv);
    exec_observed("execve(/usr/bin/true)", &exec)
}

/// The dynamic loader run as a program on a host program: `ld.so /usr/bin/true` (which does
/// nothing). Landlock sees only the loader's execution, so whoever may execute the loader runs
/// any host program it can read; a static entry's jail gives no execute right on it.
pub fn exec_ld_so_usr_bin_true(_: &ProbeArgs) -> Outcome {
    let path = c_string(DYNAMIC_LOADER);
    let argv = [c_string("ld.so"), c_string("/usr/bin/true")];
    let exec = execve_path(&path, &argv);
    exec_observed("execve(ld.so, /usr/bin/true)", &exec)
}

/// The host's dynamic loader (`PT_INTERP` of its dynamically linked programs).
const DYNAMIC_LOADER: &str = "/lib64/ld-linux-x86-64.so.2";

/// Writes a copy of this binary to `path` with `mode`, returning the mode the file then has.
fn write_self_copy(path: &str, mode: u32) -> Result<u32, Outcome> {
    let image = std::fs::read("/proc/self/exe")
        .map_err(|e| Outcome::io_failed(&e, "read /proc/self/exe"))?;
    std::fs::write(path, image).map_err(|e| Outcome::io_failed(&e, format!("write {path}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Outcome::io_failed(&e, format!("chmod {mode:o} {path}")))?;
    let meta =
        std::fs::metadata(path).map_err(|e| Outcome::io_failed(&e, format!("stat {path}")))?;
    Ok(meta.permissions().mode())
}

/// Copies this binary into `dir` as an executable and tries to run it.
fn exec_written_file(dir: &str, mode: u32) -> Outcome {
    let path = format!("{dir}/elastos-probe-exec-{}", std::process::id());
    let outcome = match write_self_copy(&path, mode) {
        Ok(actual_mode) => {
            let c_path = c_string(&path);
            let argv = self_copy_argv();
            let mut outcome =
                exec_observed(&format!("execve({path})"), &execve_path(&c_path, &argv));
            outcome.detail = format!("{}; file mode {actual_mode:o}", outcome.detail);
            outcome
        }
        Err(outcome) => outcome,
    };
    let _ = std::fs::remove_file(&path);
    outcome
}

pub fn exec_home_file(_: &ProbeArgs) -> Outcome {
    match home_dir() {
        Ok(home) => exec_written_file(&home, 0o755),
        Err(outcome) => outcome,
    }
}

pub fn exec_tmp_file(_: &ProbeArgs) -> Outcome {
    // In the jail TMPDIR is unset and /tmp is the jail's own; unjailed, the harness points
    // TMPDIR at the test's temp dir, so the host's /tmp is never written.
    let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    exec_written_file(&tmp, 0o755)
}

/// A set-user-ID copy of this binary in the home: the bit must not take, or the exec must fail.
pub fn setuid_bit_home(_: &ProbeArgs) -> Outcome {
    match home_dir() {
        Ok(home) => exec_written_file(&home, 0o4755),
        Err(outcome) => outcome,
    }
}

/// A memfd holding a copy of this binary (no MFD_CLOEXEC, so /proc/self/fd/N stays valid).
fn memfd_with_self() -> Result<libc::c_int, Outcome> {
    let name = c_string("elastos-probe");
    // SAFETY: `name` is a valid C string.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(Outcome::of(i64::from(fd), "memfd_create"));
    }
    let image = match std::fs::read("/proc/self/exe") {
        Ok(image) => image,
        Err(e) => {
            close_fd(fd);
            return Err(Outcome::io_failed(&e, "read /proc/self/exe"));
        }
    };
    let mut written = 0;
    while written < image.len() {
        // SAFETY: writes from a live buffer within its bounds.
        let n = unsafe { libc::write(fd, image[written..].as_ptr().cast(), image.len() - written) };
        if n <= 0 {
            let outcome = Outcome::of(n as i64, "write memfd");
            close_fd(fd);
            return Err(outcome);
        }
        written += n as usize;
    }
    Ok(fd)
}

pub fn exec_memfd_proc(_: &ProbeArgs) -> Outcome {
    let fd = match memfd_with_self() {
        Ok(fd) => fd,
        Err(outcome) => return outcome,
    };
    let path = c_string(&format!("/proc/self/fd/{fd}"));
    let argv = self_copy_argv();
    let outcome = exec_observed("execve(/proc/self/fd/<memfd>)", &execve_path(&path, &argv));
    close_fd(fd);
    outcome
}

pub fn execveat_memfd(_: &ProbeArgs) -> Outcome {
    let fd = match memfd_with_self() {
        Ok(fd) => fd,
        Err(outcome) => return outcome,
    };
    let empty = c_string("");
    let argv = self_copy_argv();
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect();
    let exec = || {
        let envp: [*const libc::c_char; 1] = [ptr::null()];
        // SAFETY: all pointers are NUL-terminated and live; fd is our memfd.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                empty.as_ptr(),
                argv_ptrs.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            ) as libc::c_int
        }
    };
    let outcome = exec_observed("execveat(memfd, \"\", AT_EMPTY_PATH)", &exec);
    close_fd(fd);
    outcome
}
