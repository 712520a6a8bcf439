//! The escape probes: each tries one thing a jailed app must not be able to do.
//!
//! [`PROBES`] is the list `elastos-probe list` prints and `all` runs, in this order: read-only
//! observations first (so no earlier probe can disturb them, e.g. by leaking an fd), exec
//! probes last (a successful in-process exec ends the run).

mod fs;
mod kernel;
mod leaks;
mod net;
mod privilege;
mod process;
mod signals;

use std::ffi::CString;

use crate::report::{Outcome, ProbeArgs};

pub use kernel::interface_names;
pub use leaks::open_fds;

/// One probe: a name (stable; harnesses key their expectations on it) and what it runs.
pub struct Probe {
    pub name: &'static str,
    pub run: fn(&ProbeArgs) -> Outcome,
}

const fn probe(name: &'static str, run: fn(&ProbeArgs) -> Outcome) -> Probe {
    Probe { name, run }
}

/// Every probe, in the order `all` runs them.
pub const PROBES: &[Probe] = &[
    // Host environment and leaks.
    probe("fds-open", leaks::fds_open),
    probe("fd3-is-unix-socket", leaks::fd3_is_unix_socket),
    probe("extra-fd", leaks::extra_fd),
    probe("env-canary", leaks::env_canary),
    probe("env-names", leaks::env_names),
    probe("hostname-is-elastos", leaks::hostname_is_elastos),
    probe("network-interfaces", leaks::network_interfaces),
    probe("visible-processes", leaks::visible_processes),
    // Privilege, as the kernel reports it.
    probe("uid", privilege::uid),
    probe("cap-eff", privilege::cap_eff),
    probe("cap-prm", privilege::cap_prm),
    probe("cap-bnd", privilege::cap_bnd),
    probe("no-new-privs", privilege::no_new_privs),
    probe("seccomp-mode", privilege::seccomp_mode),
    // Filesystem.
    probe("read-etc-passwd", fs::read_etc_passwd),
    probe("read-etc-shadow", fs::read_etc_shadow),
    probe("read-etc-hosts", fs::read_etc_hosts),
    probe("read-host-canary", fs::read_host_canary),
    probe("read-host-home-canary", fs::read_host_home_canary),
    probe("read-host-proc-environ", fs::read_host_proc_environ),
    probe("open-dev-kmsg", fs::open_dev_kmsg),
    probe("list-root-home", fs::list_root_home),
    probe("list-run", fs::list_run),
    probe("list-sys", fs::list_sys),
    probe("list-var", fs::list_var),
    probe("write-usr", fs::write_usr),
    probe("write-etc", fs::write_etc),
    probe("write-root-dir", fs::write_root_dir),
    probe("write-app", fs::write_app),
    probe("open-sysrq-trigger", fs::open_sysrq_trigger),
    probe("open-proc-hostname", fs::open_proc_hostname),
    probe("home-symlink-to-canary", fs::home_symlink_to_canary),
    probe("hardlink-app-into-home", fs::hardlink_app_into_home),
    probe("rename-app-into-home", fs::rename_app_into_home),
    probe("mknod-home-chardev", fs::mknod_home_chardev),
    probe("fchmod-setuid-home", fs::fchmod_setuid_home),
    probe("fchmodat-setgid-proc-fd", fs::fchmodat_setgid_proc_fd),
    probe("open-creat-setuid-home", fs::open_creat_setuid_home),
    probe("tmp-inode-limit", fs::tmp_inode_limit),
    // Sockets.
    probe("inet-tcp-connect", net::inet_tcp_connect),
    probe("inet-udp", net::inet_udp),
    probe("inet6-tcp", net::inet6_tcp),
    probe("unix-stream-connect", net::unix_stream_connect),
    probe("unix-dgram", net::unix_dgram),
    probe("netlink-route", net::netlink_route),
    probe("packet-raw", net::packet_raw),
    probe("socketpair-unix", net::socketpair_unix),
    probe("send-msg-oob-fd3", net::send_msg_oob_fd3),
    probe("recv-msg-oob-fd3", net::recv_msg_oob_fd3),
    probe(
        "getsockopt-so-peerpidfd-fd3",
        net::getsockopt_so_peerpidfd_fd3,
    ),
    // Kernel attack surface.
    probe("reboot", kernel::reboot),
    probe("kexec-load", kernel::kexec_load),
    probe("init-module", kernel::init_module),
    probe("finit-module", kernel::finit_module),
    probe("delete-module", kernel::delete_module),
    probe("swapon", kernel::swapon),
    probe("swapoff", kernel::swapoff),
    probe("acct", kernel::acct),
    probe("syslog", kernel::syslog),
    probe("settimeofday", kernel::settimeofday),
    probe("clock-settime", kernel::clock_settime),
    probe("adjtimex", kernel::adjtimex),
    probe("iopl", kernel::iopl),
    probe("ioperm", kernel::ioperm),
    probe("mount", kernel::mount),
    probe("umount2", kernel::umount2),
    probe("pivot-root", kernel::pivot_root),
    probe("chroot", kernel::chroot),
    probe("unshare", kernel::unshare),
    probe("setns", kernel::setns),
    probe("open-by-handle-at", kernel::open_by_handle_at),
    probe("name-to-handle-at", kernel::name_to_handle_at),
    probe("bpf", kernel::bpf),
    probe("perf-event-open", kernel::perf_event_open),
    probe("userfaultfd", kernel::userfaultfd),
    probe("keyctl", kernel::keyctl),
    probe("add-key", kernel::add_key),
    probe("request-key", kernel::request_key),
    probe("ptrace", kernel::ptrace),
    probe("process-vm-readv", kernel::process_vm_readv),
    probe("io-uring-setup", kernel::io_uring_setup),
    probe("fsopen", kernel::fsopen),
    probe("open-tree", kernel::open_tree),
    probe("move-mount", kernel::move_mount),
    probe("quotactl", kernel::quotactl),
    probe("sethostname", kernel::sethostname),
    probe("modify-ldt", kernel::modify_ldt),
    probe("fanotify-init", kernel::fanotify_init),
    probe("ioctl-tiocsti", kernel::ioctl_tiocsti),
    probe("ioctl-tiocsti-high-bits", kernel::ioctl_tiocsti_high_bits),
    probe("ioctl-tioclinux", kernel::ioctl_tioclinux),
    probe("ioctl-siocgifconf-fd3", kernel::ioctl_siocgifconf_fd3),
    probe("ioctl-siocethtool", kernel::ioctl_siocethtool),
    probe("ioctl-fs-getflags", kernel::ioctl_fs_getflags),
    // Host processes.
    probe("kill-host-pid", signals::kill_host_pid),
    probe("kill-everyone", signals::kill_everyone),
    probe("getpriority-host-pid", signals::getpriority_host_pid),
    probe("prlimit-host-pid", signals::prlimit_host_pid),
    probe("pidfd-open-host-pid", signals::pidfd_open_host_pid),
    // Privilege gains (unjailed they only touch this process; see privilege.rs).
    probe("setuid-root", privilege::setuid_root),
    probe("setgid-root", privilege::setgid_root),
    probe("setgroups-empty", privilege::setgroups_empty),
    probe("capset-sys-admin", privilege::capset_sys_admin),
    probe("capbset-drop", privilege::capbset_drop),
    // Process creation, exec last.
    probe("fork", process::fork),
    probe("vfork", process::vfork),
    probe("clone-process", process::clone_process),
    probe("clone-thread-newuser", process::clone_thread_newuser),
    probe("clone3", process::clone3),
    probe("posix-spawn", process::posix_spawn),
    probe("system", process::system),
    probe("exec-usr-bin-true", process::exec_usr_bin_true),
    probe("exec-ld-so-usr-bin-true", process::exec_ld_so_usr_bin_true),
    probe("exec-home-file", process::exec_home_file),
    probe("exec-tmp-file", process::exec_tmp_file),
    probe("setuid-bit-home", process::setuid_bit_home),
    probe("exec-memfd-proc", process::exec_memfd_proc),
    probe("execveat-memfd", process::execveat_memfd),
];

/// The probe called `name`.
pub fn find(name: &str) -> Option<&'static Probe> {
    PROBES.iter().find(|probe| probe.name == name)
}

/// A C string for a literal or path that has no NUL byte (all of ours).
fn c_string(s: &str) -> CString {
    CString::new(s).expect("probe strings contain no NUL byte")
}

fn close_fd(fd: i32) {
    // SAFETY: closes an fd this probe opened and no longer uses.
    unsafe { libc::close(fd) };
}

/// `$HOME`, where the app may write.
fn home_dir() -> Result<String, Outcome> {
    std::env::var("HOME").map_err(|_| Outcome::setup_failed("HOME is not set"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_are_unique() {
        let mut names: Vec<&str> = PROBES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROBES.len());
    }
}
