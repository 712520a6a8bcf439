//! Compiles the allow-list ([`crate::syscalls::ALLOW_LIST`]) into a seccomp-bpf program.
//!
//! The program, built from blocks of the private `bpf` module:
//! 1. the audit arch: any other than the build's kills the process (e.g. i386 `int 0x80` on
//!    x86_64);
//! 2. the syscall number: a binary search over ranges of numbers that share an outcome (a run
//!    of unconditionally allowed numbers, a gap between runs, one argument-checked call), about
//!    eight tests whatever the number. A gap answers `ENOSYS`; x32 numbers (bit 30 set) and
//!    negative ones fall in the last gap;
//! 3. for a call with an [`ArgCheck`], a block that loads the low 32 bits of the checked
//!    argument and searches its values the same way, answering allow or `ENOSYS`.
//!
//! The decision for a call without an argument check reads no argument, so the kernel caches
//! it per syscall number when the filter is installed and does not run the filter for it again.
//! The result is kept next to the human-readable rows it came from, so `elastos policy show`
//! prints what the loader installs.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use crate::bpf::BpfInstruction;
use crate::bpf::{self, Block, Field, Step};
use crate::syscalls::{allowed_syscalls, ArgCheck, CLONE_CHECKED_FLAGS, DENIED_ERRNO};

/// The compiled seccomp filter with the table it was compiled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProgram {
    /// The allow-list, one row per syscall, in table order.
    pub rows: Vec<SyscallRow>,
    /// The `ioctl` requests the `ioctl` row allows, with their reasons, in table order.
    pub ioctls: Vec<IoctlRow>,
    /// The errno of every call the rows do not allow (`ENOSYS`).
    pub default_errno: i32,
    /// The program for `seccomp(SECCOMP_SET_MODE_FILTER)`, for the build architecture.
    /// Serialized as one hex string, 16 digits per instruction (see `bpf::hex_program`): the
    /// loader reads the plan as JSON, and a list of objects would be more than twice as long.
    #[serde(with = "bpf::hex_program")]
    pub bpf: Vec<BpfInstruction>,
}

/// One allowed syscall, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallRow {
    /// Syscall name, e.g. `read`.
    pub name: String,
    /// The group it belongs to, e.g. `memory`.
    pub group: String,
    /// Which arguments are acceptable, e.g. `any arguments`.
    pub condition: String,
    /// Why it is safe to allow.
    pub reason: String,
}

/// One allowed `ioctl` request, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoctlRow {
    /// The request's C name, e.g. `TCGETS`.
    pub name: String,
    /// Its value (the low 32 bits the kernel reads).
    pub request: u32,
    /// Why it is safe to allow.
    pub reason: String,
}

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

impl SeccompProgram {
    /// Compiles the allow-list for the build architecture.
    pub fn compile() -> SeccompProgram {
        Self::compile_without(&BTreeSet::new())
    }

    /// Compiles the allow-list less the syscalls named in `removed`: a narrower filter, for a
    /// caller with its own reasons to deny more (an OCI spec's seccomp profile). Names that are
    /// not in the allow-list are denied already and change nothing; nothing can be added.
    pub fn compile_without(removed: &BTreeSet<String>) -> SeccompProgram {
        let mut rows = Vec::new();
        let mut ioctls = Vec::new();
        let mut by_number = Vec::new();
        for (group, syscall) in allowed_syscalls() {
            if removed.contains(syscall.name()) {
                continue;
            }
            if let ArgCheck::IoctlIn(requests) = syscall.check {
                ioctls.extend(requests.iter().map(|i| IoctlRow {
                    name: i.request.name.to_owned(),
                    request: i.request.value,
                    reason: i.reason.to_owned(),
                }));
            }
            let nr = u32::try_from(syscall.nr)
                .expect("syscall numbers are small and non-negative (a syscalls test pins it)");
            by_number.push((nr, arguments_block(syscall.check)));
            rows.push(SyscallRow {
                name: syscall.name().to_owned(),
                group: group.to_owned(),
                condition: syscall.check.describe(),
                reason: syscall.reason.to_owned(),
            });
        }
        let by_number = Block::after(&[Step::Load(Field::Nr)], Block::switch(by_number, deny()));
        let program = Block::after(
            &[Step::Load(Field::Arch)],
            Block::switch(
                [(AUDIT_ARCH, by_number)],
                Block::ret(libc::SECCOMP_RET_KILL_PROCESS),
            ),
        );
        SeccompProgram {
            rows,
            ioctls,
            default_errno: DENIED_ERRNO,
            bpf: program.into_instructions(),
        }
    }
}

/// The block that decides a call by its arguments (see [`ArgCheck`] for why only the low 32
/// bits of an argument are read).
fn arguments_block(check: ArgCheck) -> Block {
    let allow = || Block::ret(libc::SECCOMP_RET_ALLOW);
    let low32 = |arg| Step::Load(Field::ArgLow(arg));
    match check {
        ArgCheck::Any => allow(),
        ArgCheck::CloneThreadOnly => Block::after(
            &[low32(0), Step::And(CLONE_CHECKED_FLAGS)],
            Block::switch([(libc::CLONE_THREAD as u32, allow())], deny()),
        ),
        ArgCheck::IoctlIn(requests) => Block::after(
            &[low32(1)],
            Block::switch(
                requests.iter().map(|r| (r.request.value, allow())),
                errno(libc::ENOTTY),
            ),
        ),
        ArgCheck::PrctlIn(options) => Block::after(
            &[low32(0)],
            Block::switch(options.iter().map(|o| (o.value, allow())), deny()),
        ),
        ArgCheck::OwnProcessOnly => {
            Block::after(&[low32(0)], Block::switch([(0, allow())], deny()))
        }
        ArgCheck::BitsClear {
            arg,
            bits,
            errno: refused,
        } => {
            let mask = bits.iter().fold(0, |mask, bit| mask | bit.value);
            Block::after(
                &[low32(arg), Step::And(mask)],
                Block::switch([(0, allow())], errno(refused.value as i32)),
            )
        }
        ArgCheck::SocketOptionNot(options) => Block::after(
            &[low32(1)],
            Block::switch(
                [(
                    libc::SOL_SOCKET as u32,
                    Block::after(
                        &[low32(2)],
                        Block::switch(
                            options.iter().map(|o| (o.value, errno(libc::ENOPROTOOPT))),
                            allow(),
                        ),
                    ),
                )],
                allow(),
            ),
        ),
    }
}

/// Fail the call with [`DENIED_ERRNO`].
fn deny() -> Block {
    errno(DENIED_ERRNO)
}

/// Fail the call with `errno`.
fn errno(errno: i32) -> Block {
    Block::ret(libc::SECCOMP_RET_ERRNO | errno as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::interpreter::{check_like_the_kernel, run, Run, SeccompData};
    use std::collections::BTreeSet;
    use std::sync::OnceLock;

    /// What the kernel would do with a syscall.
    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(u32),
        KillProcess,
    }

    impl Verdict {
        fn of(action: u32) -> Verdict {
            match action & libc::SECCOMP_RET_ACTION_FULL {
                libc::SECCOMP_RET_ALLOW => Verdict::Allow,
                libc::SECCOMP_RET_ERRNO => Verdict::Errno(action & libc::SECCOMP_RET_DATA),
                libc::SECCOMP_RET_KILL_PROCESS => Verdict::KillProcess,
                other => panic!("unexpected action {other:#x}"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    const TEST_AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const TEST_AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

    fn program() -> &'static SeccompProgram {
        static PROGRAM: OnceLock<SeccompProgram> = OnceLock::new();
        PROGRAM.get_or_init(SeccompProgram::compile)
    }

    fn execute(nr: i64, args: [u64; 6]) -> Run {
        let data = SeccompData {
            nr: nr as i32,
            arch: TEST_AUDIT_ARCH,
            args,
        };
        run(&program().bpf, &data)
    }

    fn verdict(nr: i64, args: [u64; 6]) -> Verdict {
        Verdict::of(execute(nr, args).action)
    }

    fn with_arg(index: usize, value: u64) -> [u64; 6] {
        let mut args = [0; 6];
        args[index] = value;
        args
    }

    const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS as u32);
    const ENOTTY: Verdict = Verdict::Errno(libc::ENOTTY as u32);
    const EPERM: Verdict = Verdict::Errno(libc::EPERM as u32);
    const HIGH_BITS: u64 = 0xffff_ffff << 32;
    const THREAD_FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;

    /// Arguments a check must accept. The kernel reads each checked argument as a 32-bit
    /// value, so high bits change nothing and must not change the verdict either.
    fn accepted(check: ArgCheck) -> Vec<[u64; 6]> {
        match check {
            ArgCheck::Any => vec![[0; 6], [u64::MAX; 6]],
            ArgCheck::CloneThreadOnly => {
                // glibc sign-extends the int flags: CLONE_IO (bit 31) sets the high word.
                let sign_extended = (THREAD_FLAGS as u32 | libc::CLONE_IO as u32) as i32 as u64;
                assert_eq!(sign_extended >> 32, 0xffff_ffff);
                let minimal = (libc::CLONE_VM | libc::CLONE_SIGHAND | libc::CLONE_THREAD) as u64;
                [THREAD_FLAGS, THREAD_FLAGS | 1 << 32, sign_extended, minimal]
                    .map(|flags| with_arg(0, flags))
                    .to_vec()
            }
            ArgCheck::IoctlIn(requests) => requests
                .iter()
                .flat_map(|r| {
                    [
                        u64::from(r.request.value),
                        u64::from(r.request.value) | HIGH_BITS,
                    ]
                })
                .map(|request| with_arg(1, request))
                .collect(),
            ArgCheck::BitsClear { arg, bits, .. } => {
                let mask = u64::from(bits.iter().fold(0, |mask, bit| mask | bit.value));
                [0, 0o755, 0o1777, u64::from(u32::MAX), u64::MAX]
                    .map(|value| with_arg(arg, value & !mask))
                    .to_vec()
            }
            ArgCheck::SocketOptionNot(options) => {
                let listed: BTreeSet<u32> = options.iter().map(|o| o.value).collect();
                let sol_socket = u64::from(libc::SOL_SOCKET as u32);
                let other_options = [
                    libc::SO_PEERCRED as u32,
                    libc::SO_DOMAIN as u32,
                    0,
                    u32::MAX,
                ]
                .into_iter()
                .chain(listed.iter().flat_map(|v| [v - 1, v + 1]))
                .filter(|v| !listed.contains(v))
                .map(|option| (sol_socket, u64::from(option)));
                // The same option numbers at another level are other options.
                let other_levels = listed
                    .iter()
                    .map(|&option| (u64::from(libc::IPPROTO_TCP as u32), u64::from(option)));
                other_options
                    .chain(other_levels)
                    .flat_map(|(level, option)| {
                        [(level, option), (level | HIGH_BITS, option | HIGH_BITS)]
                    })
                    .map(|(level, option)| [3, level, option, 0, 0, 0])
                    .collect()
            }
            ArgCheck::PrctlIn(options) => options
                .iter()
                .flat_map(|o| [u64::from(o.value), u64::from(o.value) | HIGH_BITS])
                .map(|option| with_arg(0, option))
                .collect(),
            ArgCheck::OwnProcessOnly => vec![with_arg(0, 0), with_arg(0, 1 << 32)],
        }
    }

    /// How a check answers the arguments it refuses.
    fn refusal(check: ArgCheck) -> Verdict {
        match check {
            ArgCheck::Any
            | ArgCheck::CloneThreadOnly
            | ArgCheck::PrctlIn(_)
            | ArgCheck::OwnProcessOnly => ENOSYS,
            ArgCheck::IoctlIn(_) => ENOTTY,
            ArgCheck::BitsClear { errno, .. } => Verdict::Errno(errno.value),
            ArgCheck::SocketOptionNot(_) => Verdict::Errno(libc::ENOPROTOOPT as u32),
        }
    }

    /// `FS_IOC_ENABLE_VERITY`: `_IOW('f', 133, struct fsverity_enable_arg)` (not in libc).
    const FS_IOC_ENABLE_VERITY: u64 = 0x4080_6685;

    /// ioctl requests no app needs, each reaching beyond the fd it is made on.
    const NOT_ALLOWED_IOCTLS: &[(&str, u64)] = &[
        ("TIOCSTI", libc::TIOCSTI),
        ("TIOCLINUX", libc::TIOCLINUX),
        ("TIOCSETD", libc::TIOCSETD),
        ("TIOCCONS", libc::TIOCCONS),
        ("TIOCSWINSZ", libc::TIOCSWINSZ),
        ("SIOCGIFCONF", libc::SIOCGIFCONF),
        ("SIOCETHTOOL", libc::SIOCETHTOOL),
        ("FS_IOC_GETFLAGS", libc::FS_IOC_GETFLAGS),
        ("FS_IOC_SETFLAGS", libc::FS_IOC_SETFLAGS),
        ("FS_IOC_ENABLE_VERITY", FS_IOC_ENABLE_VERITY),
        ("FICLONE", libc::FICLONE),
    ];

    /// Arguments a check must refuse, whatever their high bits.
    fn refused(check: ArgCheck) -> Vec<[u64; 6]> {
        let with_high_bits = |index: usize, values: Vec<u64>| -> Vec<[u64; 6]> {
            values
                .into_iter()
                .flat_map(|v| [v, v | 1 << 32, v | HIGH_BITS])
                .map(|v| with_arg(index, v))
                .collect()
        };
        match check {
            ArgCheck::Any => vec![],
            ArgCheck::CloneThreadOnly => {
                let namespaces = (0..32)
                    .map(|bit| 1u32 << bit)
                    .filter(|&flag| flag & CLONE_CHECKED_FLAGS != 0)
                    .filter(|&flag| flag != libc::CLONE_THREAD as u32)
                    .map(|flag| THREAD_FLAGS | u64::from(flag));
                let processes = [
                    0,
                    libc::SIGCHLD as u64,
                    (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64,
                    THREAD_FLAGS & !(libc::CLONE_THREAD as u64),
                ];
                with_high_bits(0, processes.into_iter().chain(namespaces).collect())
            }
            ArgCheck::IoctlIn(requests) => {
                let listed: BTreeSet<u32> = requests.iter().map(|r| r.request.value).collect();
                let unlisted = [0, u32::MAX]
                    .into_iter()
                    .chain(
                        NOT_ALLOWED_IOCTLS
                            .iter()
                            .map(|&(_, request)| request as u32),
                    )
                    .chain(listed.iter().flat_map(|v| [v - 1, v + 1]))
                    .filter(|v| !listed.contains(v))
                    .map(u64::from);
                with_high_bits(1, unlisted.collect())
            }
            ArgCheck::BitsClear { arg, bits, .. } => {
                let each = bits.iter().map(|bit| u64::from(bit.value));
                let with_others = bits.iter().map(|bit| u64::from(bit.value) | 0o755);
                with_high_bits(arg, each.chain(with_others).chain([u64::MAX]).collect())
            }
            ArgCheck::SocketOptionNot(options) => options
                .iter()
                .flat_map(|o| {
                    let (level, option) = (libc::SOL_SOCKET as u64, u64::from(o.value));
                    [(level, option), (level | HIGH_BITS, option | 1 << 32)]
                })
                .map(|(level, option)| [3, level, option, 0, 0, 0])
                .collect(),
            ArgCheck::PrctlIn(options) => {
                let listed: BTreeSet<u32> = options.iter().map(|o| o.value).collect();
                let unlisted = (0..=100)
                    .chain([u32::MAX])
                    .chain(listed.iter().flat_map(|v| [v - 1, v + 1]))
                    .filter(|v| !listed.contains(v))
                    .map(u64::from);
                with_high_bits(0, unlisted.collect())
            }
            ArgCheck::OwnProcessOnly => with_high_bits(0, vec![1, 2, 0xffff_ffff]),
        }
    }

    /// Numbers of no allowed syscall, including x32 ones (bit 30) and negative ones.
    fn unlisted_numbers() -> Vec<i64> {
        let listed: BTreeSet<i64> = allowed_syscalls().map(|(_, s)| s.nr).collect();
        let x32 = listed.iter().map(|nr| nr | 0x4000_0000);
        (0..=460)
            .filter(|nr| !listed.contains(nr))
            .chain(x32)
            .chain([-1, i64::from(i32::MIN), 0x3fff_ffff, 0x7fff_ffff])
            .collect()
    }

    /// Every syscall data the tests run: each row with the arguments it accepts and refuses,
    /// and each unlisted number.
    fn every_case() -> Vec<(i64, [u64; 6])> {
        let rows = allowed_syscalls().flat_map(|(_, s)| {
            let args = accepted(s.check).into_iter().chain(refused(s.check));
            args.map(move |args| (s.nr, args))
        });
        let unlisted = unlisted_numbers().into_iter().map(|nr| (nr, [0; 6]));
        rows.chain(unlisted).collect()
    }

    #[test]
    fn plain_calls_are_allowed_and_sockets_are_not() {
        assert_eq!(verdict(libc::SYS_read, [0; 6]), Verdict::Allow);
        assert_eq!(
            verdict(libc::SYS_socket, with_arg(0, libc::AF_UNIX as u64)),
            ENOSYS
        );
        assert_eq!(verdict(libc::SYS_socketpair, [0; 6]), ENOSYS);
    }

    #[test]
    fn clone_makes_threads_only() {
        assert_eq!(
            verdict(libc::SYS_clone, with_arg(0, THREAD_FLAGS)),
            Verdict::Allow
        );
        assert_eq!(
            verdict(libc::SYS_clone, with_arg(0, libc::SIGCHLD as u64)),
            ENOSYS
        );
        let new_user = THREAD_FLAGS | libc::CLONE_NEWUSER as u64;
        assert_eq!(verdict(libc::SYS_clone, with_arg(0, new_user)), ENOSYS);
        let new_net = libc::CLONE_THREAD as u64 | libc::CLONE_NEWNET as u64;
        assert_eq!(verdict(libc::SYS_clone, with_arg(0, new_net)), ENOSYS);
        assert_eq!(verdict(libc::SYS_clone3, [0; 6]), ENOSYS);
    }

    #[test]
    fn ioctl_denies_terminal_injection_whatever_the_high_bits() {
        let tiocsti = libc::TIOCSTI;
        assert_eq!(verdict(libc::SYS_ioctl, with_arg(1, tiocsti)), ENOTTY);
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, tiocsti | 1 << 32)),
            ENOTTY
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, libc::TIOCLINUX)),
            ENOTTY
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, libc::TIOCSETD)),
            ENOTTY
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, libc::TCGETS)),
            Verdict::Allow
        );
    }

    #[test]
    fn ioctl_allows_what_libc_and_std_use_and_nothing_else() {
        for request in [
            libc::TCGETS,
            libc::TCSETS,
            libc::TCSETSW,
            libc::TCSETSF,
            libc::TIOCGWINSZ,
            libc::TIOCGPGRP,
            libc::FIONREAD,
            libc::FIONBIO,
            libc::FIOCLEX,
            libc::FIONCLEX,
        ] {
            let ioctl = |request| verdict(libc::SYS_ioctl, with_arg(1, request));
            assert_eq!(ioctl(request), Verdict::Allow, "{request:#x}");
            assert_eq!(ioctl(request | HIGH_BITS), Verdict::Allow, "{request:#x}");
        }
        for &(name, request) in NOT_ALLOWED_IOCTLS {
            for request in [request, request | 1 << 32, request | HIGH_BITS] {
                let verdict = verdict(libc::SYS_ioctl, with_arg(1, request));
                assert_eq!(verdict, ENOTTY, "{name} {request:#x}");
            }
        }
    }

    #[test]
    fn chmod_family_and_file_creation_refuse_set_id_bits() {
        #[cfg(target_arch = "x86_64")]
        let legacy = [
            (libc::SYS_chmod, 1),
            (libc::SYS_open, 2),
            (libc::SYS_creat, 1),
            (libc::SYS_mknod, 1),
        ];
        #[cfg(target_arch = "aarch64")]
        let legacy = [];
        for (nr, arg) in legacy.into_iter().chain([
            (libc::SYS_fchmod, 1),
            (libc::SYS_fchmodat, 2),
            (libc::SYS_openat, 3),
            (libc::SYS_mknodat, 2),
        ]) {
            for mode in [0o644, 0o755, 0o1777, 0o644 | 1 << 32] {
                assert_eq!(
                    verdict(nr, with_arg(arg, mode)),
                    Verdict::Allow,
                    "{nr} {mode:o}"
                );
            }
            for mode in [0o4755, 0o2755, 0o6755, 0o4000 | HIGH_BITS] {
                assert_eq!(verdict(nr, with_arg(arg, mode)), EPERM, "{nr} {mode:o}");
            }
        }
        assert_eq!(verdict(libc::SYS_fchmodat2, with_arg(2, 0o644)), ENOSYS);
        assert_eq!(verdict(libc::SYS_openat2, [0; 6]), ENOSYS);
    }

    #[test]
    fn sockets_refuse_out_of_band_data_and_peer_pidfds() {
        let oob = libc::MSG_OOB as u64;
        for (nr, arg) in [
            (libc::SYS_sendmsg, 2),
            (libc::SYS_recvmsg, 2),
            (libc::SYS_sendto, 3),
            (libc::SYS_recvfrom, 3),
        ] {
            let nonblocking = libc::MSG_DONTWAIT as u64;
            assert_eq!(verdict(nr, with_arg(arg, nonblocking)), Verdict::Allow);
            assert_eq!(verdict(nr, with_arg(arg, oob)), EPERM, "{nr}");
            assert_eq!(verdict(nr, with_arg(arg, oob | nonblocking)), EPERM, "{nr}");
            assert_eq!(verdict(nr, with_arg(arg, oob | HIGH_BITS)), EPERM, "{nr}");
        }
        assert_eq!(verdict(libc::SYS_sendmmsg, [0; 6]), ENOSYS);
        assert_eq!(verdict(libc::SYS_recvmmsg, [0; 6]), ENOSYS);
        let getsockopt = |level: i32, option: i32| {
            verdict(
                libc::SYS_getsockopt,
                [3, level as u64, option as u64, 0, 0, 0],
            )
        };
        let peer_pidfd = crate::syscalls::SO_PEERPIDFD.value as i32;
        assert_eq!(
            getsockopt(libc::SOL_SOCKET, peer_pidfd),
            Verdict::Errno(libc::ENOPROTOOPT as u32)
        );
        assert_eq!(
            getsockopt(libc::SOL_SOCKET, libc::SO_PEERCRED),
            Verdict::Allow
        );
        assert_eq!(
            getsockopt(libc::SOL_SOCKET, libc::SO_DOMAIN),
            Verdict::Allow
        );
    }

    #[test]
    fn prctl_allows_only_listed_options() {
        let prctl = |option: i32| verdict(libc::SYS_prctl, with_arg(0, option as u64));
        assert_eq!(prctl(libc::PR_SET_NAME), Verdict::Allow);
        assert_eq!(prctl(libc::PR_SET_NO_NEW_PRIVS), Verdict::Allow);
        assert_eq!(prctl(libc::PR_SET_SECCOMP), ENOSYS);
        assert_eq!(prctl(libc::PR_CAPBSET_DROP), ENOSYS);
        assert_eq!(prctl(libc::PR_SET_MM), ENOSYS);
        assert_eq!(prctl(libc::PR_SET_PTRACER), ENOSYS);
    }

    #[test]
    fn prlimit_only_on_itself() {
        assert_eq!(verdict(libc::SYS_prlimit64, with_arg(0, 0)), Verdict::Allow);
        assert_eq!(verdict(libc::SYS_prlimit64, with_arg(0, 1)), ENOSYS);
    }

    #[test]
    fn another_architecture_is_killed() {
        for arch in [3 | 0x4000_0000, TEST_AUDIT_ARCH - 1, TEST_AUDIT_ARCH + 1, 0] {
            for nr in [0, libc::SYS_read as i32, libc::SYS_exit_group as i32] {
                let data = SeccompData {
                    nr,
                    arch,
                    args: [0; 6],
                };
                let verdict = Verdict::of(run(&program().bpf, &data).action);
                assert_eq!(verdict, Verdict::KillProcess, "arch {arch:#x}, nr {nr}");
            }
        }
    }

    #[test]
    fn x32_numbers_are_denied() {
        const X32_SYSCALL_BIT: i64 = 0x4000_0000;
        assert_eq!(verdict(libc::SYS_read | X32_SYSCALL_BIT, [0; 6]), ENOSYS);
        assert_eq!(verdict(libc::SYS_write | X32_SYSCALL_BIT, [0; 6]), ENOSYS);
    }

    #[test]
    fn every_row_allows_the_arguments_it_should_and_refuses_the_others() {
        assert_eq!(program().rows.len(), allowed_syscalls().count());
        for (_, syscall) in allowed_syscalls() {
            let (accepted, refused) = (accepted(syscall.check), refused(syscall.check));
            assert!(!accepted.is_empty());
            assert_eq!(refused.is_empty(), syscall.check == ArgCheck::Any);
            for args in accepted {
                let verdict = verdict(syscall.nr, args);
                assert_eq!(verdict, Verdict::Allow, "{} {args:x?}", syscall.name());
            }
            for args in refused {
                let verdict = verdict(syscall.nr, args);
                let expected = refusal(syscall.check);
                assert_eq!(verdict, expected, "{} {args:x?}", syscall.name());
            }
        }
    }

    #[test]
    fn every_unlisted_number_is_denied() {
        assert_eq!(program().default_errno, libc::ENOSYS);
        for nr in unlisted_numbers() {
            assert_eq!(verdict(nr, [0; 6]), ENOSYS, "syscall {nr}");
            assert_eq!(verdict(nr, [u64::MAX; 6]), ENOSYS, "syscall {nr}");
        }
    }

    #[test]
    fn forbidden_calls_are_denied() {
        #[cfg(target_arch = "x86_64")]
        let legacy = [
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_iopl,
            libc::SYS_ioperm,
        ];
        #[cfg(target_arch = "aarch64")]
        let legacy = [];
        for nr in legacy.into_iter().chain([
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_bpf,
            libc::SYS_io_uring_setup,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_seccomp,
            libc::SYS_userfaultfd,
            libc::SYS_perf_event_open,
            libc::SYS_keyctl,
            libc::SYS_pidfd_getfd,
        ]) {
            assert_eq!(verdict(nr, [0; 6]), ENOSYS, "syscall {nr}");
        }
    }

    /// Regression test for the seccompiler program: 1048 instructions tested one allowed
    /// call after another, which made installing the filter a tenth of `elastos run`.
    #[test]
    fn the_program_is_short_and_every_path_through_it_is_too() {
        let length = program().bpf.len();
        let longest = every_case()
            .into_iter()
            .map(|(nr, args)| execute(nr, args).steps)
            .max()
            .unwrap();
        eprintln!("{length} instructions, at most {longest} run");
        assert!(length < 600, "{length} instructions");
        assert!(longest < 40, "{longest} instructions run");
    }

    #[test]
    fn calls_without_an_argument_check_read_no_argument() {
        let checked: BTreeSet<i64> = allowed_syscalls()
            .filter(|(_, s)| s.check != ArgCheck::Any)
            .map(|(_, s)| s.nr)
            .collect();
        for (nr, args) in every_case() {
            let read_args = execute(nr, args).read_args;
            assert_eq!(read_args, checked.contains(&nr), "syscall {nr}");
        }
    }

    #[test]
    fn the_kernel_would_load_it() {
        check_like_the_kernel(&program().bpf);
    }

    #[test]
    fn the_program_round_trips_through_json_as_hex() {
        let json = serde_json::to_value(program()).unwrap();
        let hex = json["bpf"].as_str().expect("bpf is one string");
        assert_eq!(hex.len(), 16 * program().bpf.len());
        assert!(hex.starts_with("0020000000000004"), "ld [4] (arch) first");
        let back: SeccompProgram = serde_json::from_value(json).unwrap();
        assert_eq!(&back, program());
    }

    #[test]
    fn a_narrowed_program_denies_the_removed_calls_and_keeps_the_rest() {
        let removed: BTreeSet<String> = ["getpid".to_owned(), "not_a_syscall".to_owned()].into();
        let narrowed = SeccompProgram::compile_without(&removed);
        let verdict_of = |nr: i64| {
            let data = SeccompData {
                nr: nr as i32,
                arch: TEST_AUDIT_ARCH,
                args: [0; 6],
            };
            Verdict::of(run(&narrowed.bpf, &data).action)
        };
        assert_eq!(verdict_of(libc::SYS_getpid), ENOSYS);
        assert_eq!(verdict_of(libc::SYS_read), Verdict::Allow);
        assert_eq!(verdict(libc::SYS_getpid, [0; 6]), Verdict::Allow);
        assert_eq!(narrowed.rows.len() + 1, program().rows.len());
        assert!(narrowed.rows.iter().all(|row| row.name != "getpid"));
    }
}
