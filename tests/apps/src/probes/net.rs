//! Sockets: the app may not create any, of any family; connect targets are listeners the harness
//! opened itself on 127.0.0.1 or in its own temp dir.

use std::mem;

use crate::probes::close_fd;
use crate::report::{Outcome, ProbeArgs};

/// Creates a socket, runs `then` on it (when it was created), and closes it.
fn with_socket(
    domain: i32,
    kind: i32,
    protocol: i32,
    how: &str,
    then: impl FnOnce(i32) -> Outcome,
) -> Outcome {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Outcome::of(i64::from(fd), format!("socket({how})"));
    }
    let outcome = then(fd);
    close_fd(fd);
    outcome
}

fn created(fd: i32, how: &str) -> Outcome {
    Outcome::ok(i64::from(fd), format!("socket({how}) created"))
}

pub fn inet_tcp_connect(args: &ProbeArgs) -> Outcome {
    let port: u16 = match args.get("port").map(str::parse) {
        Ok(Ok(port)) => port,
        Ok(Err(_)) => return Outcome::setup_failed("port= is not a port number"),
        Err(outcome) => return outcome,
    };
    with_socket(
        libc::AF_INET,
        libc::SOCK_STREAM,
        0,
        "AF_INET, SOCK_STREAM",
        |fd| {
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `addr` is a valid sockaddr_in of the length passed.
            let ret = unsafe {
                libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_in).cast(),
                    mem::size_of_val(&addr) as u32,
                )
            };
            Outcome::of(i64::from(ret), format!("connect(127.0.0.1:{port})"))
        },
    )
}

pub fn inet_udp(_: &ProbeArgs) -> Outcome {
    let how = "AF_INET, SOCK_DGRAM";
    with_socket(libc::AF_INET, libc::SOCK_DGRAM, 0, how, |fd| {
        created(fd, how)
    })
}

pub fn inet6_tcp(_: &ProbeArgs) -> Outcome {
    let how = "AF_INET6, SOCK_STREAM";
    with_socket(libc::AF_INET6, libc::SOCK_STREAM, 0, how, |fd| {
        created(fd, how)
    })
}

pub fn unix_stream_connect(args: &ProbeArgs) -> Outcome {
    let path = match args.get("unix") {
        Ok(path) => path.to_owned(),
        Err(outcome) => return outcome,
    };
    with_socket(
        libc::AF_UNIX,
        libc::SOCK_STREAM,
        0,
        "AF_UNIX, SOCK_STREAM",
        |fd| {
            // SAFETY: sockaddr_un is plain old data; all-zero is a valid value.
            let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            if path.len() >= addr.sun_path.len() {
                return Outcome::setup_failed(format!("unix socket path {path} is too long"));
            }
            for (dst, src) in addr.sun_path.iter_mut().zip(path.bytes()) {
                *dst = src as libc::c_char;
            }
            // SAFETY: `addr` is a valid, NUL-terminated sockaddr_un of the length passed.
            let ret = unsafe {
                libc::connect(
                    fd,
                    (&addr as *const libc::sockaddr_un).cast(),
                    mem::size_of_val(&addr) as u32,
                )
            };
            Outcome::of(i64::from(ret), format!("connect({path})"))
        },
    )
}

pub fn unix_dgram(_: &ProbeArgs) -> Outcome {
    let how = "AF_UNIX, SOCK_DGRAM";
    with_socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0, how, |fd| {
        created(fd, how)
    })
}

pub fn netlink_route(_: &ProbeArgs) -> Outcome {
    let how = "AF_NETLINK, NETLINK_ROUTE";
    with_socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW,
        libc::NETLINK_ROUTE,
        how,
        |fd| created(fd, how),
    )
}

pub fn packet_raw(_: &ProbeArgs) -> Outcome {
    let how = "AF_PACKET, SOCK_RAW";
    let all = i32::from((libc::ETH_P_ALL as u16).to_be());
    with_socket(libc::AF_PACKET, libc::SOCK_RAW, all, how, |fd| {
        created(fd, how)
    })
}

pub fn socketpair_unix(_: &ProbeArgs) -> Outcome {
    let mut pair = [0; 2];
    // SAFETY: `pair` is a valid 2-element array.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    let outcome = Outcome::of(i64::from(ret), "socketpair(AF_UNIX, SOCK_STREAM)");
    if ret == 0 {
        close_fd(pair[0]);
        close_fd(pair[1]);
    }
    outcome
}

/// Runs `then` on fd 3 when it is a socket (in the jail: the broker socket, which was created in
/// the host's network namespace), else on one end of a unix stream socketpair of our own
/// (unjailed, where fd 3 is not open), so that both runs make the call on the same kind of socket.
pub(super) fn with_fd3_or_own_socket(then: impl FnOnce(i32) -> Outcome) -> Outcome {
    // SAFETY: `stat` is plain old data and a valid out-pointer.
    let mut stat: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(3, &mut stat) } == 0 && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK {
        return then(3);
    }
    let mut pair = [-1; 2];
    // SAFETY: `pair` is a valid out-pointer for two fds.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if ret != 0 {
        let err = std::io::Error::last_os_error();
        return Outcome::setup_failed(format!("fd 3 is no socket and socketpair failed: {err}"));
    }
    let outcome = then(pair[0]);
    pair.into_iter().for_each(close_fd);
    outcome
}

/// An address that is never mapped, so even a call the jail let through copies nothing.
const BAD_POINTER: usize = 1;

/// Out-of-band data on the broker socket. The buffer is unmapped, so a send the jail let through
/// fails with EFAULT (or EOPNOTSUPP without AF_UNIX OOB support) before anything is queued.
pub fn send_msg_oob_fd3(_: &ProbeArgs) -> Outcome {
    with_fd3_or_own_socket(|fd| {
        let flags = libc::MSG_OOB | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        // SAFETY: the kernel checks the unmapped buffer; nothing is read on our side.
        let ret = unsafe { libc::send(fd, BAD_POINTER as *const libc::c_void, 1, flags) };
        Outcome::of(ret as i64, "send(fd 3, unmapped, 1, MSG_OOB)")
    })
}

/// Receiving out-of-band data: none is pending, so an allowed call fails with EINVAL (and its
/// buffer is unmapped); nothing of the ordinary stream is consumed.
pub fn recv_msg_oob_fd3(_: &ProbeArgs) -> Outcome {
    with_fd3_or_own_socket(|fd| {
        let flags = libc::MSG_OOB | libc::MSG_DONTWAIT;
        // SAFETY: as in send_msg_oob_fd3.
        let ret = unsafe { libc::recv(fd, BAD_POINTER as *mut libc::c_void, 1, flags) };
        Outcome::of(ret as i64, "recv(fd 3, unmapped, 1, MSG_OOB)")
    })
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the peer, which in the jail is the broker, a host
/// process. The option value is unmapped: an allowed call fails with EFAULT, and the kernel then
/// releases the pidfd it prepared instead of installing it.
pub fn getsockopt_so_peerpidfd_fd3(_: &ProbeArgs) -> Outcome {
    const SO_PEERPIDFD: libc::c_int = 77;
    with_fd3_or_own_socket(|fd| {
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `len` is a valid in/out pointer; the value pointer is unmapped on purpose.
        let ret = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERPIDFD,
                BAD_POINTER as *mut libc::c_void,
                &mut len,
            )
        };
        Outcome::of(i64::from(ret), "getsockopt(fd 3, SO_PEERPIDFD, unmapped)")
    })
}
