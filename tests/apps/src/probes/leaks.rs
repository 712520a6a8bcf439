//! What the host hands the app without meaning to: environment, file descriptors, and views of
//! the host's name, network and processes.

use crate::report::{Outcome, ProbeArgs};

/// The fds open in this process, lowest first (probed with fcntl, so no fd is opened to look).
pub fn open_fds() -> Vec<i32> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let highest = limit.rlim_cur.min(65_536) as i32;
    // SAFETY: F_GETFD takes no pointer; it fails with EBADF on a closed fd.
    (0..highest)
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .collect()
}

fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn env_canary(args: &ProbeArgs) -> Outcome {
    match args.get("env") {
        Ok(name) => match std::env::var_os(name) {
            Some(value) => Outcome::ok(1, format!("{name}={}", value.to_string_lossy())),
            None => Outcome::ok(0, format!("{name} is not set")),
        },
        Err(outcome) => outcome,
    }
}

pub fn env_names(_: &ProbeArgs) -> Outcome {
    let mut names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    names.sort();
    Outcome::ok(names.len() as i64, joined(&names))
}

pub fn fds_open(_: &ProbeArgs) -> Outcome {
    let fds = open_fds();
    Outcome::ok(fds.len() as i64, joined(&fds))
}

pub fn fd3_is_unix_socket(_: &ProbeArgs) -> Outcome {
    // SAFETY: `stat` is plain old data and a valid out-pointer.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ret = unsafe { libc::fstat(3, &mut stat) };
    if ret != 0 {
        return Outcome::of(i64::from(ret), "fstat(3)");
    }
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Outcome::ok(0, format!("fd 3 is not a socket (mode {:o})", stat.st_mode));
    }
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `domain` and `len` are valid out-pointers of the stated size.
    let ret = unsafe {
        libc::getsockopt(
            3,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut i32).cast(),
            &mut len,
        )
    };
    if ret != 0 {
        return Outcome::of(i64::from(ret), "fd 3 is a socket; getsockopt(SO_DOMAIN)");
    }
    let is_unix = domain == libc::AF_UNIX;
    Outcome::ok(
        i64::from(is_unix),
        format!("fd 3 is a socket of domain {domain}"),
    )
}

pub fn extra_fd(args: &ProbeArgs) -> Outcome {
    let fd: i32 = match args.get("fd").map(str::parse) {
        Ok(Ok(fd)) => fd,
        Ok(Err(_)) => return Outcome::setup_failed("fd= is not a number"),
        Err(outcome) => return outcome,
    };
    // SAFETY: F_GETFD takes no pointer.
    Outcome::of(
        i64::from(unsafe { libc::fcntl(fd, libc::F_GETFD) }),
        format!("fcntl({fd}, F_GETFD)"),
    )
}

pub fn hostname_is_elastos(_: &ProbeArgs) -> Outcome {
    match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) => {
            let name = name.trim();
            Outcome::ok(i64::from(name == "elastos"), format!("hostname {name}"))
        }
        Err(e) => Outcome::io_failed(&e, "read /proc/sys/kernel/hostname"),
    }
}

pub fn network_interfaces(_: &ProbeArgs) -> Outcome {
    match std::fs::read_to_string("/proc/net/dev") {
        Ok(table) => {
            // Two header lines, then "  name: counters...".
            let others: Vec<&str> = table
                .lines()
                .skip(2)
                .filter_map(|line| line.split(':').next().map(str::trim))
                .filter(|name| *name != "lo")
                .collect();
            Outcome::ok(
                others.len() as i64,
                format!("interfaces besides lo: [{}]", others.join(",")),
            )
        }
        Err(e) => Outcome::io_failed(&e, "read /proc/net/dev"),
    }
}

pub fn visible_processes(_: &ProbeArgs) -> Outcome {
    let entries = match std::fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(e) => return Outcome::io_failed(&e, "list /proc"),
    };
    let me = std::process::id();
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    // pid 1 is allowed besides ourselves: the jail's init, if it is not the app itself.
    let others = pids.iter().filter(|&&pid| pid != me && pid != 1).count();
    pids.truncate(20);
    Outcome::ok(others as i64, format!("self {me}; pids {}", joined(&pids)))
}
