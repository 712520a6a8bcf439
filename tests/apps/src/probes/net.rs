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
