//! What the jail shares with the host's kernel, seen from the host (issue #14).
//!
//! Per-user kernel counters (part 2): `hold-counters` takes as much as the app can of what the
//! kernel counts per user (inotify instances and watches, pending signals, pipe pages) and holds
//! it; `counters-check`, run unjailed as the launching user meanwhile, says whether that user
//! still gets each. Both are bounded: by the limits under test, or by a cap of their own, and
//! `hold-counters` gives everything back when it exits (at most [`HOLD_LIMIT`]).
//!
//! The network namespace of fd 3 (part 4): `socket-netns`, unjailed as root, names the network
//! namespace of a jailed app's socket.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::modes::ModeResult;

/// The longest `hold-counters` holds, whatever the harness does.
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// At most this many inotify instances, watches, signals and pipes are tried (far above any
/// limit the jail sets, far below what would trouble the machine).
const INSTANCES_CAP: usize = 512;
const WATCHES_CAP: usize = 32_768;
const PIPES_CAP: usize = 4096;

/// The real-time signal queued (blocked, so it stays pending).
fn queued_signal() -> i32 {
    libc::SIGRTMIN()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Creates inotify instances until the kernel refuses one: (held fds, the refusal's errno).
fn inotify_instances() -> (Vec<i32>, i32) {
    let mut fds = Vec::new();
    while fds.len() < INSTANCES_CAP {
        // SAFETY: inotify_init1 takes flags only.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return (fds, errno());
        }
        fds.push(fd);
    }
    (fds, 0)
}

/// Adds watches on the files under /usr to `fd` until the kernel refuses one: (watches made,
/// errno of the refusal, 0 if files or the cap ran out first). Paths reaching an inode already
/// watched (links) get its watch again, so watches are counted by descriptor.
fn inotify_watches(fd: i32) -> (usize, i32) {
    let mut watches = std::collections::HashSet::new();
    let mut dirs = vec![Path::new("/usr").to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if watches.len() == WATCHES_CAP {
                return (watches.len(), 0);
            }
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path.clone());
            }
            let Ok(name) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a live fd and a NUL-terminated path; IN_OPEN only observes.
            let wd = unsafe { libc::inotify_add_watch(fd, name.as_ptr(), libc::IN_OPEN) };
            match wd {
                wd if wd >= 0 => {
                    watches.insert(wd);
                }
                _ if errno() == libc::ENOSPC => return (watches.len(), libc::ENOSPC),
                _ => {}
            }
        }
    }
    (watches.len(), 0)
}

/// The pending-signal count and limit of this process's user (`SigQ:` of /proc/self/status).
fn pending_signals() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("SigQ:"))
        .ok_or("no SigQ line in /proc/self/status")?;
    let (queued, limit) = line.trim().split_once('/').ok_or("malformed SigQ")?;
    Ok((
        queued.parse().map_err(|_| "malformed SigQ")?,
        limit.parse().map_err(|_| "malformed SigQ")?,
    ))
}

/// Blocks the queued signal in this thread, so what is queued stays pending.
fn block_queued_signal() {
    // SAFETY: a local sigset_t, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, queued_signal());
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Queues the blocked real-time signal to itself until the queue is full: the number it holds.
/// `kill` is the jail's way (`rt_sigqueueinfo` is denied): each real-time `kill` queues one
/// entry while there is room, and past it is delivered without one, so the count is read back.
fn fill_signal_queue() -> Result<u64, String> {
    block_queued_signal();
    let (before, limit) = pending_signals()?;
    for _ in 0..=limit.min(1 << 20) {
        // SAFETY: a signal to itself, blocked in this thread (and every other thread of this
        // single-threaded mode), so it only stays pending.
        unsafe { libc::kill(libc::getpid(), queued_signal()) };
    }
    Ok(pending_signals()?.0 - before)
}

/// Creates pipes and grows each as far as the kernel allows, until it refuses: (pipes held, pipe
/// pages they hold).
fn fill_pipes() -> (Vec<i32>, u64) {
    let mut kept = Vec::new();
    let mut pages = 0;
    while kept.len() < PIPES_CAP {
        let mut ends = [0i32; 2];
        // SAFETY: pipe2 fills the two-int array; F_SETPIPE_SZ/F_GETPIPE_SZ act on our own pipe.
        let size = unsafe {
            if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                break;
            }
            libc::close(ends[1]);
            libc::fcntl(ends[0], libc::F_SETPIPE_SZ, 1 << 20);
            libc::fcntl(ends[0], libc::F_GETPIPE_SZ)
        };
        kept.push(ends[0]);
        pages += (size.max(0) as u64) / 4096;
    }
    (kept, pages)
}

/// `hold-counters`: takes every inotify instance, watch, pending signal and pipe page it can,
/// prints `instances=N instances_errno=E watches=N watches_errno=E signals=N pipes=N
/// pipe_pages=N`, writes the same to `$HOME/held`, and holds them until `$HOME/release` exists
/// (or [`HOLD_LIMIT`]).
pub fn hold_counters() -> ModeResult {
    let home = std::env::var("HOME").map_err(|_| "HOME is not set".to_owned())?;
    let (instances, instances_errno) = inotify_instances();
    let (watches, watches_errno) = match instances.first() {
        Some(fd) => inotify_watches(*fd),
        None => (0, instances_errno),
    };
    let signals = fill_signal_queue()?;
    let (pipes, pipe_pages) = fill_pipes();
    let held = format!(
        "instances={} instances_errno={instances_errno} watches={watches} \
         watches_errno={watches_errno} signals={signals} pipes={} pipe_pages={pipe_pages}",
        instances.len(),
        pipes.len(),
    );
    println!("{held}");
    let home = Path::new(&home);
    std::fs::write(home.join("held"), &held).map_err(|e| format!("writing held: {e}"))?;
    let start = Instant::now();
    while !home.join("release").exists() && start.elapsed() < HOLD_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(0)
}

/// `counters-check`: whether this process (of the launching user, unjailed) still gets an
/// inotify instance and a watch, can queue a signal to itself with `sigqueue`, and what size a
/// new pipe gets. Prints `inotify=E watch=E sigqueue=E pipe_size=N user_pending_signals=N`
/// (errno, 0 on success; the signals pending for its user, its own included).
pub fn counters_check() -> ModeResult {
    // SAFETY: inotify_init1 takes flags; the watch is on the current directory, IN_OPEN only.
    let (inotify, watch) = unsafe {
        let fd = libc::inotify_init1(libc::IN_CLOEXEC);
        if fd < 0 {
            (errno(), errno())
        } else {
            let wd = libc::inotify_add_watch(fd, c".".as_ptr(), libc::IN_OPEN);
            let watch = if wd < 0 { errno() } else { 0 };
            libc::close(fd);
            (0, watch)
        }
    };
    block_queued_signal();
    // SAFETY: a blocked real-time signal to itself with a zero value; it stays pending until
    // this process exits.
    let sigqueue = unsafe {
        let value = libc::sigval {
            sival_ptr: std::ptr::null_mut(),
        };
        if libc::sigqueue(libc::getpid(), queued_signal(), value) == 0 {
            0
        } else {
            errno()
        }
    };
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 fills the two-int array; F_GETPIPE_SZ reads our own pipe.
    let pipe_size = unsafe {
        if libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(format!("pipe2: errno {}", errno()));
        }
        libc::fcntl(ends[0], libc::F_GETPIPE_SZ)
    };
    // Pending signals counted for this user now, this one included.
    let (queued, _) = pending_signals()?;
    println!(
        "inotify={inotify} watch={watch} sigqueue={sigqueue} pipe_size={pipe_size} \
         user_pending_signals={queued}"
    );
    Ok(0)
}

/// `socket-netns PID FD`, unjailed as root: takes a copy of fd FD of process PID (pidfd_getfd)
/// and prints `socket_netns=INODE interfaces=NAMES`: the inode of the network namespace the
/// socket belongs to (SIOCGSKNS) and the interfaces SIOCGIFCONF lists on it. Only reads.
pub fn socket_netns(args: &[String]) -> ModeResult {
    let number = |index: usize, what: &str| -> Result<i32, String> {
        args.get(index)
            .and_then(|word| word.parse().ok())
            .ok_or_else(|| format!("missing or invalid {what}"))
    };
    let (pid, target) = (number(0, "pid")?, number(1, "fd")?);
    /// SIOCGSKNS: a new fd of the socket's network namespace.
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: pidfd_open, pidfd_getfd and ioctl on integers; fstat fills a live local; every
    // fd made here is closed here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if pidfd < 0 {
            return Err(format!("pidfd_open({pid}): errno {}", errno()));
        }
        let socket = libc::syscall(libc::SYS_pidfd_getfd, pidfd, target, 0) as i32;
        libc::close(pidfd);
        if socket < 0 {
            return Err(format!("pidfd_getfd({pid}, {target}): errno {}", errno()));
        }
        let netns = libc::ioctl(socket, SIOCGSKNS);
        let interfaces = crate::probes::interface_names(socket);
        libc::close(socket);
        if netns < 0 {
            return Err(format!("SIOCGSKNS: errno {}", errno()));
        }
        let mut stat: libc::stat = std::mem::zeroed();
        let statted = libc::fstat(netns, &mut stat);
        libc::close(netns);
        if statted != 0 {
            return Err(format!("fstat of the namespace: errno {}", errno()));
        }
        let interfaces = interfaces.map_err(|ret| format!("SIOCGIFCONF: {ret}"))?;
        println!(
            "socket_netns={} interfaces={}",
            stat.st_ino,
            interfaces.join(",")
        );
    }
    Ok(0)
}
