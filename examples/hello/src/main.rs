//! `hello`: the demo app. Run in an elastos jail, it reports what the jail looks like from inside:
//! who it runs as, its pid and hostname, its home, a run counter kept in `$HOME/runs` (so the
//! persistent home is visible across runs), and what the kernel answers when it tries to create a
//! process or a socket, which the jail refuses. It then prints the arguments it was given.
//!
//! It runs outside the jail too (`cargo run -p hello-example`); fork and socket then succeed, and
//! it says so. It exits 0 unless the run counter cannot be updated.

#![deny(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(home) = std::env::var_os("HOME").map(PathBuf::from) else {
        eprintln!("hello: HOME is not set; expected the jail's home (/home/app)");
        return ExitCode::FAILURE;
    };
    let counter = home.join("runs");
    let runs = match count_run(&counter) {
        Ok(runs) => runs,
        Err(err) => {
            eprintln!(
                "hello: cannot update the run counter {}: {err}; hint: HOME must be writable",
                counter.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let hostname = sys::hostname().unwrap_or_else(|err| format!("unknown ({err})"));
    let args: Vec<String> = std::env::args().skip(1).collect();

    println!("Hello from inside elastos!");
    println!("  uid       {}", sys::uid());
    println!("  pid       {}", std::process::id());
    println!("  hostname  {hostname}");
    println!("  HOME      {}", home.display());
    println!("  runs      {runs} (counted in $HOME/runs)");
    println!("  fork      {}", try_fork());
    println!("  socket    {}", try_socket());
    println!("  args      {args:?}");
    ExitCode::SUCCESS
}

/// Adds one to the counter stored in `path` (absent: no runs yet) and returns the new count.
fn count_run(path: &Path) -> io::Result<u64> {
    let previous = match fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "it holds {:?}, expected a whole number ({err})",
                    text.trim()
                ),
            )
        })?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => 0,
        Err(err) => return Err(err),
    };
    let runs = previous + 1;
    fs::write(path, format!("{runs}\n"))?;
    Ok(runs)
}

/// What the kernel answered to something the jail is meant to forbid.
enum Attempt {
    /// The call failed with this error: what the jail should make happen.
    Refused(io::Error),
    /// The call succeeded: this process is not jailed (or the jail has a hole).
    Allowed,
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attempt::Refused(err) => match err.raw_os_error() {
                Some(code) => match errno_name(code) {
                    Some(name) => write!(f, "refused ({name})"),
                    None => write!(f, "refused (errno {code})"),
                },
                None => write!(f, "refused ({err})"),
            },
            Attempt::Allowed => write!(f, "ALLOWED (not running in an elastos jail?)"),
        }
    }
}

/// The symbolic names of the errnos a refused fork or socket can plausibly answer.
fn errno_name(code: i32) -> Option<&'static str> {
    Some(match code {
        libc::ENOSYS => "ENOSYS",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        _ => return None,
    })
}

fn try_fork() -> Attempt {
    match sys::fork_and_reap() {
        Ok(()) => Attempt::Allowed,
        Err(err) => Attempt::Refused(err),
    }
}

fn try_socket() -> Attempt {
    match sys::inet_socket() {
        // Dropping the descriptor closes it.
        Ok(_socket) => Attempt::Allowed,
        Err(err) => Attempt::Refused(err),
    }
}

/// The raw libc calls of the demo: the only code of this app allowed `unsafe`.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// The real uid of this process.
    pub fn uid() -> libc::uid_t {
        // SAFETY: getuid takes no arguments, cannot fail and touches no memory of ours.
        unsafe { libc::getuid() }
    }

    /// The hostname the kernel reports (the jail's own UTS namespace inside a jail).
    pub fn hostname() -> io::Result<String> {
        let mut buf = [0u8; 256];
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which outlives the call.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
    }

    /// Creates a child process that exits at once, and waits for it.
    pub fn fork_and_reap() -> io::Result<()> {
        // SAFETY: a child, if one is ever created, calls only the async-signal-safe `_exit` and
        // so never touches locks or allocator state copied from the parent.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: _exit is async-signal-safe and ends the child at once.
                unsafe { libc::_exit(0) }
            }
            child => {
                // SAFETY: waits for our own child; a null status pointer is allowed.
                unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
                Ok(())
            }
        }
    }

    /// A new IPv4 TCP socket.
    pub fn inet_socket() -> io::Result<OwnedFd> {
        // SAFETY: constant arguments and no pointers; on success the new descriptor is ours alone.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}
