//! Filesystem: host files outside the jail's mounts, writes to read-only places, and links,
//! renames and device nodes that would carry data or rights across the jail's boundary.
//!
//! Targets are system paths opened read-only (or write-only without writing), canaries the harness
//! created, and uniquely named files this probe creates and removes itself.

use crate::probes::{c_string, close_fd, home_dir};
use crate::report::{Outcome, ProbeArgs};

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
