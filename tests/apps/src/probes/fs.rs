//! Filesystem: host files outside the jail's mounts, writes to read-only places, and links,
//! renames and device nodes that would carry data or rights across the jail's boundary.
//!
//! Targets are system paths opened read-only (or write-only without writing), canaries the harness
//! created, and uniquely named files this probe creates and removes itself.

use crate::probes::{c_string, close_fd, home_dir};
use crate::report::{last_errno, Outcome, ProbeArgs};

/// open(path, flags) and close; the outcome is open's.
fn open_and_close(path: &str, flags: i32) -> Outcome {
    let c_path = c_string(path);
    // SAFETY: `c_path` is a valid C string.
    let fd = unsafe { libc::open(c_path.as_ptr(), flags | libc::O_CLOEXEC) };
    let outcome = Outcome::of(i64::from(fd), format!("open({path})"));
    if fd >= 0 {
        close_fd(fd);
    }
    outcome
}

fn read(path: &str) -> Outcome {
    open_and_close(path, libc::O_RDONLY)
}

fn list(path: &str) -> Outcome {
    open_and_close(path, libc::O_RDONLY | libc::O_DIRECTORY)
}

fn read_arg(args: &ProbeArgs, key: &str) -> Outcome {
    match args.get(key) {
        Ok(path) => read(path),
        Err(outcome) => outcome,
    }
}

pub fn read_etc_passwd(_: &ProbeArgs) -> Outcome {
    read("/etc/passwd")
}

pub fn read_etc_shadow(_: &ProbeArgs) -> Outcome {
    read("/etc/shadow")
}

pub fn read_etc_hosts(_: &ProbeArgs) -> Outcome {
    read("/etc/hosts")
}

pub fn read_host_canary(args: &ProbeArgs) -> Outcome {
    read_arg(args, "canary")
}

pub fn read_host_home_canary(args: &ProbeArgs) -> Outcome {
    read_arg(args, "home_canary")
}

pub fn read_host_proc_environ(args: &ProbeArgs) -> Outcome {
    match args.get("pid") {
        Ok(pid) => read(&format!("/proc/{pid}/environ")),
        Err(outcome) => outcome,
    }
}

pub fn open_dev_kmsg(_: &ProbeArgs) -> Outcome {
    read("/dev/kmsg")
}

pub fn list_root_home(_: &ProbeArgs) -> Outcome {
    list("/root")
}

pub fn list_run(_: &ProbeArgs) -> Outcome {
    list("/run")
}

pub fn list_sys(_: &ProbeArgs) -> Outcome {
    list("/sys/kernel")
}

pub fn list_var(_: &ProbeArgs) -> Outcome {
    list("/var")
}

/// Asks the kernel whether `dir` is writable (faccessat with AT_EACCESS), without writing:
/// a read-only mount answers EROFS. Nothing is created, so the probe changes nothing on the host
/// even unjailed as root, or with a broken jail.
fn write_access(dir: &str) -> Outcome {
    let c_path = c_string(dir);
    // SAFETY: `c_path` is a valid C string; faccessat only reads it.
    let ret = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::W_OK,
            libc::AT_EACCESS,
        )
    };
    Outcome::of(i64::from(ret), format!("write access to {dir}"))
}

pub fn write_usr(_: &ProbeArgs) -> Outcome {
    write_access("/usr")
}

pub fn write_etc(_: &ProbeArgs) -> Outcome {
    write_access("/etc")
}

pub fn write_root_dir(_: &ProbeArgs) -> Outcome {
    write_access("/")
}

pub fn write_app(args: &ProbeArgs) -> Outcome {
    write_access(args.app_dir())
}

pub fn open_sysrq_trigger(_: &ProbeArgs) -> Outcome {
    // Opened only, never written.
    open_and_close("/proc/sysrq-trigger", libc::O_WRONLY)
}

pub fn open_proc_hostname(_: &ProbeArgs) -> Outcome {
    // Opened only, never written.
    open_and_close("/proc/sys/kernel/hostname", libc::O_WRONLY)
}

pub fn home_symlink_to_canary(args: &ProbeArgs) -> Outcome {
    let (canary, home) = match (args.get("canary"), home_dir()) {
        (Ok(canary), Ok(home)) => (canary, home),
        (Err(outcome), _) | (_, Err(outcome)) => return outcome,
    };
    let link = format!("{home}/elastos-probe-link-{}", std::process::id());
    if let Err(e) = std::os::unix::fs::symlink(canary, &link) {
        return Outcome::io_failed(&e, format!("symlink {link} -> {canary}"));
    }
    let mut outcome = read(&link);
    outcome.detail = format!("{} (symlink to {canary})", outcome.detail);
    let _ = std::fs::remove_file(&link);
    outcome
}

/// The entry file of the bundle, which the probes try to move or link out of it.
fn app_entry(args: &ProbeArgs) -> String {
    format!("{}/elastos-probe", args.app_dir())
}

pub fn hardlink_app_into_home(args: &ProbeArgs) -> Outcome {
    let home = match home_dir() {
        Ok(home) => home,
        Err(outcome) => return outcome,
    };
    let source = app_entry(args);
    let link = format!("{home}/elastos-probe-hardlink-{}", std::process::id());
    let (c_source, c_link) = (c_string(&source), c_string(&link));
    // SAFETY: both are valid C strings.
    let ret = unsafe { libc::link(c_source.as_ptr(), c_link.as_ptr()) };
    let outcome = Outcome::of(i64::from(ret), format!("link({source}, {link})"));
    if ret == 0 {
        let _ = std::fs::remove_file(&link);
    }
    outcome
}

pub fn rename_app_into_home(args: &ProbeArgs) -> Outcome {
    let home = match home_dir() {
        Ok(home) => home,
        Err(outcome) => return outcome,
    };
    let source = app_entry(args);
    let target = format!("{home}/elastos-probe-renamed-{}", std::process::id());
    let (c_source, c_target) = (c_string(&source), c_string(&target));
    // SAFETY: both are valid C strings.
    let ret = unsafe { libc::rename(c_source.as_ptr(), c_target.as_ptr()) };
    let outcome = Outcome::of(i64::from(ret), format!("rename({source}, {target})"));
    if ret == 0 {
        // Put the bundle back the way it was.
        let _ = std::fs::rename(&target, &source);
    }
    outcome
}

pub fn mknod_home_chardev(_: &ProbeArgs) -> Outcome {
    let home = match home_dir() {
        Ok(home) => home,
        Err(outcome) => return outcome,
    };
    let node = format!("{home}/elastos-probe-null-{}", std::process::id());
    let c_node = c_string(&node);
    // makedev(1, 3) is /dev/null's number: a device node in a writable home would bypass nodev
    // mounts elsewhere if the jail let the app create one.
    // SAFETY: `c_node` is a valid C string.
    let ret = unsafe { libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    let outcome = Outcome::of(i64::from(ret), format!("mknod({node}, S_IFCHR, 1:3)"));
    if ret == 0 {
        let _ = std::fs::remove_file(&node);
    }
    outcome
}

/// A canary file this probe creates in `dir` and removes when dropped: the probe's chmod target.
struct Canary {
    path: String,
    fd: i32,
}

impl Canary {
    fn create(dir: &str, name: &str) -> Result<Canary, Outcome> {
        let path = format!("{dir}/elastos-probe-{name}-{}", std::process::id());
        let c_path = c_string(&path);
        // SAFETY: `c_path` is a valid C string.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            return Err(Outcome::setup_failed(format!("create {path}: {err}")));
        }
        Ok(Canary { path, fd })
    }

    /// The outcome of `chmod`, with the canary's mode afterwards.
    fn outcome(&self, ret: libc::c_int, how: &str) -> Outcome {
        let mut outcome = Outcome::of(i64::from(ret), how);
        if let Ok(meta) = std::fs::metadata(&self.path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            outcome.detail = format!("{how}; canary mode now {mode:o}");
        }
        outcome
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        close_fd(self.fd);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The attack is `fchmod(1, 04755)` on a file of the user's handed to the app as stdout: a
/// setuid program of the user's, left on the host, where no_new_privs does not apply. The probe
/// does the same to a canary it creates in its home (unjailed: the test's temp dir), and removes
/// it at once.
pub fn fchmod_setuid_home(_: &ProbeArgs) -> Outcome {
    let canary = match home_dir().and_then(|home| Canary::create(&home, "setuid")) {
        Ok(canary) => canary,
        Err(outcome) => return outcome,
    };
    // SAFETY: fchmod takes no pointers.
    let ret = unsafe { libc::fchmod(canary.fd, 0o4755) };
    canary.outcome(ret, "fchmod(canary, 04755)")
}

/// As `fchmod-setuid-home`, with the set-group-ID bit, by path through `/proc/self/fd/N`.
pub fn fchmodat_setgid_proc_fd(_: &ProbeArgs) -> Outcome {
    let canary = match home_dir().and_then(|home| Canary::create(&home, "setgid")) {
        Ok(canary) => canary,
        Err(outcome) => return outcome,
    };
    let path = c_string(&format!("/proc/self/fd/{}", canary.fd));
    // SAFETY: `path` is a valid C string.
    let ret = unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), 0o2755, 0) };
    canary.outcome(ret, "fchmodat(/proc/self/fd/N, 02755)")
}

/// As `fchmod-setuid-home`, at creation: `open(O_CREAT)` with mode 04755, which the kernel keeps
/// (only the umask applies). The file, if made, is removed at once.
pub fn open_creat_setuid_home(_: &ProbeArgs) -> Outcome {
    let home = match home_dir() {
        Ok(home) => home,
        Err(outcome) => return outcome,
    };
    let path = format!("{home}/elastos-probe-creat-setuid-{}", std::process::id());
    let c_path = c_string(&path);
    // SAFETY: `c_path` is a valid C string.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
            0o4755,
        )
    };
    let mut outcome = Outcome::of(i64::from(fd), "open(home file, O_CREAT, 04755)");
    if fd >= 0 {
        if let Ok(meta) = std::fs::metadata(&path) {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o7777;
            outcome.detail = format!("open(home file, O_CREAT, 04755): created with mode {mode:o}");
        }
        close_fd(fd);
        let _ = std::fs::remove_file(&path);
    }
    outcome
}

/// Files the inode probe creates in the jail's /tmp before giving up: far more than the inode
/// limit of any /tmp of the jail (at most 65,536), so reaching it means there is no limit.
const JAILED_MAX_FILES: usize = 200_000;
/// Unjailed (the harness sets TMPDIR to the test's temp dir), only this many, so the probe
/// never fills the host's disk; without the jail's limit they are all created.
const UNJAILED_MAX_FILES: usize = 2_000;

/// Creates empty files in /tmp until that fails: each costs an inode and a dentry of kernel
/// memory but no page of the tmpfs's size, so only the jail's inode limit (`nr_inodes`) stops
/// them short of the cap, with ENOSPC. Every file is removed again before the probe returns.
pub fn tmp_inode_limit(_: &ProbeArgs) -> Outcome {
    let (tmp, cap) = match std::env::var("TMPDIR") {
        Ok(tmp) => (tmp, UNJAILED_MAX_FILES),
        Err(_) => ("/tmp".to_owned(), JAILED_MAX_FILES),
    };
    let dir = format!("{tmp}/elastos-probe-inodes-{}", std::process::id());
    if let Err(err) = std::fs::create_dir(&dir) {
        return Outcome::io_failed(&err, format!("mkdir {dir}"));
    }
    let mut failed = None;
    for i in 0..cap {
        let path = c_string(&format!("{dir}/{i}"));
        // SAFETY: `path` is a valid C string.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            let errno = last_errno();
            let how = format!("creating empty file {} of at most {cap} in {dir}", i + 1);
            failed = Some(Outcome::failed(errno, how));
            break;
        }
        close_fd(fd);
    }
    let _ = std::fs::remove_dir_all(&dir);
    failed.unwrap_or_else(|| {
        Outcome::ok(
            cap as i64,
            format!("created {cap} empty files in {dir} without running out of inodes"),
        )
    })
}
