//! Kernel attack surface: calls no app needs. Each passes arguments the kernel rejects (wrong
//! magic, bad fd, null or unmapped pointer, unknown command), so even an unfiltered call fails
//! with EINVAL/EFAULT/EBADF and changes nothing; the jail must answer before the kernel looks.
//!
//! Every `unsafe` block here is a raw syscall whose pointer arguments are null, the unmapped
//! address 1, or valid locals: the kernel checks them; nothing is dereferenced on our side.

use crate::probes::c_string;
use crate::report::{Outcome, ProbeArgs};

/// An address that is never mapped: the kernel's copy_from_user on it fails with EFAULT.
const BAD_POINTER: usize = 1;

fn raw(ret: libc::c_long, how: &str) -> Outcome {
    Outcome::of(ret, how)
}

pub fn reboot(_: &ProbeArgs) -> Outcome {
    // Wrong magic: the kernel answers EINVAL before reading the command.
    raw(
        unsafe { libc::syscall(libc::SYS_reboot, 0xdead_beef_u32, 0, 0, 0) },
        "reboot(bad magic)",
    )
}

pub fn kexec_load(_: &ProbeArgs) -> Outcome {
    // Too many segments and an unknown architecture in flags: EINVAL.
    raw(
        unsafe { libc::syscall(libc::SYS_kexec_load, 0, 1000, 0, 0xdead_0000_u32) },
        "kexec_load(bad flags)",
    )
}

pub fn init_module(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_init_module, 0, 0, 0) },
        "init_module(NULL, 0)",
    )
}

pub fn finit_module(_: &ProbeArgs) -> Outcome {
    let empty = c_string("");
    raw(
        unsafe { libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0) },
        "finit_module(-1)",
    )
}

pub fn delete_module(_: &ProbeArgs) -> Outcome {
    let name = c_string("elastos_probe_no_such_module");
    raw(
        unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) },
        "delete_module(nonexistent)",
    )
}

pub fn swapon(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_swapon, 0, 0) },
        "swapon(NULL)",
    )
}

pub fn swapoff(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_swapoff, 0) },
        "swapoff(NULL)",
    )
}

pub fn acct(_: &ProbeArgs) -> Outcome {
    // Never acct(NULL): that would switch accounting off. An unmapped name fails with EFAULT.
    raw(
        unsafe { libc::syscall(libc::SYS_acct, BAD_POINTER) },
        "acct(bad pointer)",
    )
}

pub fn syslog(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_syslog, 9999, 0, 0) },
        "syslog(invalid type)",
    )
}

pub fn settimeofday(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_settimeofday, BAD_POINTER, 0) },
        "settimeofday(bad pointer)",
    )
}

pub fn clock_settime(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_clock_settime, libc::CLOCK_REALTIME, BAD_POINTER) },
        "clock_settime(CLOCK_REALTIME, bad pointer)",
    )
}

pub fn adjtimex(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_adjtimex, BAD_POINTER) },
        "adjtimex(bad pointer)",
    )
}

pub fn iopl(_: &ProbeArgs) -> Outcome {
    raw(unsafe { libc::syscall(libc::SYS_iopl, 99) }, "iopl(99)")
}

pub fn ioperm(_: &ProbeArgs) -> Outcome {
    // from + num beyond the 65536-port bitmap: EINVAL.
    raw(
        unsafe { libc::syscall(libc::SYS_ioperm, 65536, 1, 1) },
        "ioperm(65536, 1, on)",
    )
}

pub fn mount(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0) },
        "mount(NULL, NULL, NULL)",
    )
}

pub fn umount2(_: &ProbeArgs) -> Outcome {
    let target = c_string("/nonexistent-elastos-probe-mountpoint");
    raw(
        unsafe { libc::syscall(libc::SYS_umount2, target.as_ptr(), 0) },
        "umount2(nonexistent)",
    )
}

pub fn pivot_root(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_pivot_root, 0, 0) },
        "pivot_root(NULL, NULL)",
    )
}

pub fn chroot(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_chroot, 0) },
        "chroot(NULL)",
    )
}

pub fn unshare(_: &ProbeArgs) -> Outcome {
    // unshare(0) changes nothing even when allowed: it shows whether the call is reachable at all.
    raw(unsafe { libc::syscall(libc::SYS_unshare, 0) }, "unshare(0)")
}

pub fn setns(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_setns, -1, 0) },
        "setns(-1, 0)",
    )
}

pub fn open_by_handle_at(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0) },
        "open_by_handle_at(-1, NULL, 0)",
    )
}

pub fn name_to_handle_at(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_name_to_handle_at, -1, 0, 0, 0, 0) },
        "name_to_handle_at(-1, NULL)",
    )
}

pub fn bpf(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_bpf, 9999, 0, 0) },
        "bpf(invalid command)",
    )
}

pub fn perf_event_open(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_perf_event_open, 0, 0, -1, -1, 0) },
        "perf_event_open(NULL)",
    )
}

pub fn userfaultfd(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_userfaultfd, 0xffff) },
        "userfaultfd(bad flags)",
    )
}

pub fn keyctl(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_keyctl, 9999, 0, 0, 0, 0) },
        "keyctl(invalid command)",
    )
}

pub fn add_key(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_add_key, 0, 0, 0, 0, 0) },
        "add_key(NULL, ...)",
    )
}

pub fn request_key(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_request_key, 0, 0, 0, 0) },
        "request_key(NULL, ...)",
    )
}

pub fn ptrace(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_ptrace, 9999, 0, 0, 0) },
        "ptrace(invalid request, pid 0)",
    )
}

pub fn process_vm_readv(_: &ProbeArgs) -> Outcome {
    // Reading zero iovecs of ourselves transfers nothing even when allowed.
    raw(
        unsafe { libc::syscall(libc::SYS_process_vm_readv, libc::getpid(), 0, 0, 0, 0, 0) },
        "process_vm_readv(self, NULL, 0)",
    )
}

pub fn io_uring_setup(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_io_uring_setup, 0, 0) },
        "io_uring_setup(0, NULL)",
    )
}

pub fn fsopen(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_fsopen, 0, 0) },
        "fsopen(NULL, 0)",
    )
}

pub fn open_tree(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_open_tree, -1, 0, 0) },
        "open_tree(-1, NULL, 0)",
    )
}

pub fn move_mount(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_move_mount, -1, 0, -1, 0, 0) },
        "move_mount(-1, NULL, -1, NULL)",
    )
}

pub fn quotactl(_: &ProbeArgs) -> Outcome {
    // An unknown sub-command on no device: ENODEV/EINVAL, never Q_SYNC.
    raw(
        unsafe { libc::syscall(libc::SYS_quotactl, 0x7777_u32 << 8, 0, 0, 0) },
        "quotactl(unknown command, NULL)",
    )
}

pub fn sethostname(_: &ProbeArgs) -> Outcome {
    // A length beyond the 64-byte limit: EINVAL before anything is copied.
    let name = [b'x'; 128];
    raw(
        unsafe { libc::syscall(libc::SYS_sethostname, name.as_ptr(), name.len()) },
        "sethostname(too long)",
    )
}

pub fn modify_ldt(_: &ProbeArgs) -> Outcome {
    // Writing an LDT entry of the wrong size: EINVAL.
    let how = "modify_ldt(write, NULL, 0)";
    let ret = unsafe { libc::syscall(libc::SYS_modify_ldt, 1, 0, 0) };
    // The kernel declares modify_ldt as returning int, so its own errors come back
    // zero-extended (4294967274, not -22) and libc sets no errno for them; a seccomp denial
    // is a proper -1 with errno.
    match ret as i32 {
        kernel_error if ret > 0 && kernel_error < 0 => Outcome::failed(-kernel_error, how),
        _ => raw(ret, how),
    }
}

pub fn fanotify_init(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_fanotify_init, 0xffff_ffff_u32, 0) },
        "fanotify_init(bad flags)",
    )
}

pub fn ioctl_tiocsti(_: &ProbeArgs) -> Outcome {
    // Typing into the caller's terminal; the null character pointer makes even an allowed call
    // fail with EFAULT (or ENOTTY when fd 0 is no terminal).
    raw(
        unsafe { libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSTI, 0) },
        "ioctl(0, TIOCSTI, NULL)",
    )
}

pub fn ioctl_tiocsti_high_bits(_: &ProbeArgs) -> Outcome {
    // The kernel truncates the command to 32 bits, so this is TIOCSTI to it; a filter comparing
    // only the low half of the register, or the whole register against an allow-list, must not
    // let it through.
    let cmd: libc::c_ulong = libc::TIOCSTI | (1 << 32);
    raw(
        unsafe { libc::syscall(libc::SYS_ioctl, 0, cmd, 0) },
        "ioctl(0, TIOCSTI | 1<<32, NULL)",
    )
}

pub fn ioctl_tioclinux(_: &ProbeArgs) -> Outcome {
    raw(
        unsafe { libc::syscall(libc::SYS_ioctl, 0, libc::TIOCLINUX, 0) },
        "ioctl(0, TIOCLINUX, NULL)",
    )
}

/// `struct ifconf` (the buffer half of its union).
#[repr(C)]
struct IfConf {
    len: libc::c_int,
    buf: *mut libc::c_char,
}

/// `struct ifreq`: 16 bytes of name, then a 24-byte union (here the `ifr_data` pointer).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: usize,
    _rest: [u8; 16],
}

/// SIOCGIFCONF on fd 3: a socket answers network-device requests for the network namespace it
/// was created in, and the broker socket was created in the host's, so an unfiltered request
/// lists the host's interfaces, although the jail's own namespace has only `lo`. Read-only.
pub fn ioctl_siocgifconf_fd3(_: &ProbeArgs) -> Outcome {
    super::net::with_fd3_or_own_socket(|fd| match interface_names(fd) {
        Err(ret) => Outcome::of(ret, "ioctl(fd 3, SIOCGIFCONF)"),
        Ok(names) => Outcome::ok(names.len() as i64, names.join(",")),
    })
}

/// The interfaces (with an IPv4 address) that SIOCGIFCONF on socket `fd` lists: those of the
/// socket's network namespace. Err: the ioctl's return value.
pub fn interface_names(fd: i32) -> Result<Vec<String>, i64> {
    let mut buf = [0u8; 40 * 64];
    let mut conf = IfConf {
        len: buf.len() as libc::c_int,
        buf: buf.as_mut_ptr().cast(),
    };
    // SAFETY: `conf` points at `buf`, both valid for the stated length.
    let ret = unsafe { libc::ioctl(fd, libc::SIOCGIFCONF, &mut conf) };
    if ret < 0 {
        return Err(i64::from(ret));
    }
    Ok(buf[..conf.len as usize]
        .chunks(40)
        .map(|req| {
            let name = &req[..libc::IFNAMSIZ];
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            String::from_utf8_lossy(&name[..end]).into_owned()
        })
        .collect())
}

/// SIOCETHTOOL (the ethtool interface of a network device) on fd 3, for `lo`. The command
/// pointer is unmapped, so an unfiltered call fails with EFAULT before it reads a command.
pub fn ioctl_siocethtool(_: &ProbeArgs) -> Outcome {
    super::net::with_fd3_or_own_socket(|fd| {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: BAD_POINTER,
            _rest: [0; 16],
        };
        req.name[..2].copy_from_slice(b"lo");
        // SAFETY: `req` is a valid ifreq; its data pointer is unmapped on purpose.
        let ret = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
        Outcome::of(i64::from(ret), "ioctl(fd 3, SIOCETHTOOL, lo, unmapped)")
    })
}

/// FS_IOC_GETFLAGS (the attributes chattr sets) on a file the probe creates in its home:
/// read-only, but a filesystem request, of which no app needs any.
pub fn ioctl_fs_getflags(_: &ProbeArgs) -> Outcome {
    let home = match crate::probes::home_dir() {
        Ok(home) => home,
        Err(outcome) => return outcome,
    };
    let path = format!("{home}/elastos-probe-getflags-{}", std::process::id());
    let file = match std::fs::File::create(&path) {
        Ok(file) => file,
        Err(err) => return Outcome::setup_failed(format!("create {path}: {err}")),
    };
    let mut flags: libc::c_long = 0;
    // SAFETY: `flags` is a valid out-pointer of the size the kernel writes (an int).
    let ret = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::FS_IOC_GETFLAGS,
            &mut flags,
        )
    };
    let mut outcome = Outcome::of(i64::from(ret), "ioctl(file, FS_IOC_GETFLAGS)");
    if ret == 0 {
        outcome.detail = format!("ioctl(file, FS_IOC_GETFLAGS): flags {flags:#x}");
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    outcome
}
