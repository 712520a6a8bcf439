//! Taking ownership of the inherited broker socket: the SDK's only `unsafe`.
//!
//! The launcher leaves a connected unix stream socket open in the app at `ELASTOS_IPC_FD`
//! (3 unless the variable says otherwise). Nothing in the process owns it yet; this module makes
//! one `UnixStream` own it, at most once per process.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::stat::{fstat, SFlag};

use crate::error::Error;

/// The variable naming the broker socket's fd.
pub const IPC_FD_VAR: &str = "ELASTOS_IPC_FD";
/// The fd of the broker socket when [`IPC_FD_VAR`] is not set.
pub const DEFAULT_IPC_FD: RawFd = 3;

/// Set once the socket has an owner: a second owner would close it under the first.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The fd named by `ELASTOS_IPC_FD`, or [`DEFAULT_IPC_FD`].
pub(crate) fn ipc_fd_from_env() -> Result<RawFd, Error> {
    match std::env::var(IPC_FD_VAR) {
        Ok(value) => match value.parse::<RawFd>() {
            Ok(fd) if fd >= 0 => Ok(fd),
            _ => Err(Error::IpcFdVar { value }),
        },
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_IPC_FD),
        Err(std::env::VarError::NotUnicode(value)) => Err(Error::IpcFdVar {
            value: value.to_string_lossy().into_owned(),
        }),
    }
}

/// Makes a `UnixStream` the owner of the inherited socket `fd`, once per process.
pub(crate) fn take_socket(fd: RawFd) -> Result<UnixStream, Error> {
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::IpcFdTaken { fd });
    }
    if let Err(problem) = check_is_socket(fd) {
        TAKEN.store(false, Ordering::SeqCst);
        return Err(Error::NotASocket { fd, problem });
    }
    // SAFETY: `from_raw_fd` requires that `fd` is open and that nothing else owns it. It is open
    // and a socket (just checked with fstat). It was inherited from the launcher, so no Rust
    // object of this process was created for it, and `TAKEN` makes this the only `UnixStream`
    // this SDK ever creates for it; the crate docs tell apps that the fd is the SDK's.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    Ok(stream)
}

fn check_is_socket(fd: RawFd) -> Result<(), String> {
    let stat = fstat(fd).map_err(|errno| format!("fstat: {errno}"))?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFSOCK {
        Ok(())
    } else if kind == SFlag::S_IFREG {
        Err("a regular file".to_owned())
    } else if kind == SFlag::S_IFIFO {
        Err("a pipe".to_owned())
    } else if kind == SFlag::S_IFCHR {
        Err("a character device".to_owned())
    } else {
        Err(format!("file type {:#o}", kind.bits()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_fd_is_not_a_socket() {
        // Far above anything this test process opens.
        let problem = check_is_socket(4000).unwrap_err();
        assert!(problem.contains("EBADF"), "{problem}");
    }

    #[test]
    fn a_regular_file_is_not_a_socket() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        use std::os::fd::AsRawFd;
        assert_eq!(
            check_is_socket(file.as_raw_fd()).unwrap_err(),
            "a regular file"
        );
    }
}
