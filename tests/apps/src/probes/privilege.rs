//! Privilege: the app runs as uid 1000 with no capabilities, no_new_privs and a seccomp filter,
//! and cannot gain anything back.
//!
//! Unjailed as root the "gain" calls change only this probe process, and only to what it already
//! has (uid 0, its own permitted capabilities, an empty group list), or drop a capability no
//! probe uses.

use crate::report::{Outcome, ProbeArgs};

pub fn setuid_root(_: &ProbeArgs) -> Outcome {
    // SAFETY: no pointers.
    Outcome::of(i64::from(unsafe { libc::setuid(0) }), "setuid(0)")
}

pub fn setgid_root(_: &ProbeArgs) -> Outcome {
    // SAFETY: no pointers.
    Outcome::of(i64::from(unsafe { libc::setgid(0) }), "setgid(0)")
}

pub fn setgroups_empty(_: &ProbeArgs) -> Outcome {
    // SAFETY: a null list of length 0 is valid.
    Outcome::of(
        i64::from(unsafe { libc::setgroups(0, std::ptr::null()) }),
        "setgroups(0, NULL)",
    )
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SYS_ADMIN: u32 = 21;
/// A capability no probe needs, so dropping it from the bounding set unjailed harms nothing.
const CAP_WAKE_ALARM: u64 = 35;

pub fn capset_sys_admin(_: &ProbeArgs) -> Outcome {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a 2-element data array, as version 3 requires.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return Outcome::of(ret, "capget");
    }
    // Ask for CAP_SYS_ADMIN in the effective set: a no-op for root, a gain for anyone else.
    data[0].effective = data[0].permitted | (1 << CAP_SYS_ADMIN);
    data[1].effective = data[1].permitted;
    // SAFETY: as above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    Outcome::of(ret, "capset(effective += CAP_SYS_ADMIN)")
}

pub fn capbset_drop(_: &ProbeArgs) -> Outcome {
    // SAFETY: no pointers.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_WAKE_ALARM, 0, 0, 0) };
    Outcome::of(i64::from(ret), "prctl(PR_CAPBSET_DROP, CAP_WAKE_ALARM)")
}

pub fn uid(_: &ProbeArgs) -> Outcome {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    // SAFETY: getgid cannot fail.
    let gid = unsafe { libc::getgid() };
    Outcome::ok(i64::from(uid), format!("uid {uid} gid {gid}"))
}

/// A field of /proc/self/status, parsed with `radix`, as the probe's return value.
fn status_field(field: &str, radix: u32) -> Outcome {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(status) => status,
        Err(e) => return Outcome::io_failed(&e, "read /proc/self/status"),
    };
    let prefix = format!("{field}:");
    let Some(value) = status.lines().find_map(|line| line.strip_prefix(&prefix)) else {
        return Outcome::setup_failed(format!("/proc/self/status has no {field} line"));
    };
    match i64::from_str_radix(value.trim(), radix) {
        Ok(parsed) => Outcome::ok(parsed, format!("{field}: {}", value.trim())),
        Err(_) => Outcome::setup_failed(format!("{field} value {value:?} is not a number")),
    }
}

pub fn cap_eff(_: &ProbeArgs) -> Outcome {
    status_field("CapEff", 16)
}

pub fn cap_prm(_: &ProbeArgs) -> Outcome {
    status_field("CapPrm", 16)
}

pub fn cap_bnd(_: &ProbeArgs) -> Outcome {
    status_field("CapBnd", 16)
}

pub fn no_new_privs(_: &ProbeArgs) -> Outcome {
    status_field("NoNewPrivs", 10)
}

pub fn seccomp_mode(_: &ProbeArgs) -> Outcome {
    status_field("Seccomp", 10)
}
