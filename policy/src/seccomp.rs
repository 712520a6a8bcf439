//! Compiles the allow-list ([`crate::syscalls::ALLOW_LIST`]) into a seccomp-bpf program.
//!
//! seccompiler builds the BPF: first the architecture check (any other audit arch kills the
//! process), then one comparison chain per allowed syscall number (matched: allow; arguments
//! not acceptable: `ENOSYS`), then `ENOSYS` for every other number. The result is kept next to
//! the human-readable rows it came from, so `elastos policy show` prints what the loader
//! installs.

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

use crate::syscalls::{allowed_syscalls, ArgCheck, CLONE_CHECKED_FLAGS, DENIED_ERRNO};
use crate::PolicyError;

/// The compiled seccomp filter with the table it was compiled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProgram {
    /// The allow-list, one row per syscall, in table order.
    pub rows: Vec<SyscallRow>,
    /// The errno of every call the rows do not allow (`ENOSYS`).
    pub default_errno: i32,
    /// The program for `seccomp(SECCOMP_SET_MODE_FILTER)`, for the build architecture.
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

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[cfg(target_arch = "x86_64")]
const TARGET_ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET_ARCH: TargetArch = TargetArch::aarch64;

impl SeccompProgram {
    /// Compiles the allow-list for the build architecture.
    pub fn compile() -> Result<SeccompProgram, PolicyError> {
        let mut rules = BTreeMap::new();
        let mut rows = Vec::new();
        for (group, syscall) in allowed_syscalls() {
            rules.insert(syscall.nr, seccomp_rules(syscall.check)?);
            rows.push(SyscallRow {
                name: syscall.name().to_owned(),
                group: group.to_owned(),
                condition: syscall.check.describe(),
                reason: syscall.reason.to_owned(),
            });
        }
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Errno(DENIED_ERRNO as u32),
            SeccompAction::Allow,
            TARGET_ARCH,
        )?;
        let program: BpfProgram = filter.try_into()?;
        let bpf = program
            .into_iter()
            .map(|i| BpfInstruction {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        Ok(SeccompProgram {
            rows,
            default_errno: DENIED_ERRNO,
            bpf,
        })
    }
}

/// The seccompiler rules for one check: the call is allowed when any rule matches, and a rule
/// matches when all its conditions do; no rules means "allow always".
fn seccomp_rules(check: ArgCheck) -> Result<Vec<SeccompRule>, BackendError> {
    let rule = |conditions| SeccompRule::new(conditions);
    match check {
        ArgCheck::Any => Ok(vec![]),
        ArgCheck::CloneThreadOnly => {
            let flags = SeccompCmpOp::MaskedEq(u64::from(CLONE_CHECKED_FLAGS));
            Ok(vec![rule(vec![low32(
                0,
                flags,
                libc::CLONE_THREAD as u32,
            )?])?])
        }
        ArgCheck::IoctlNot(requests) => {
            let conditions = requests.iter().map(|r| low32(1, SeccompCmpOp::Ne, r.value));
            Ok(vec![rule(conditions.collect::<Result<_, _>>()?)?])
        }
        ArgCheck::PrctlIn(options) => options
            .iter()
            .map(|option| rule(vec![low32(0, SeccompCmpOp::Eq, option.value)?]))
            .collect(),
        ArgCheck::OwnProcessOnly => Ok(vec![rule(vec![low32(0, SeccompCmpOp::Eq, 0)?])?]),
    }
}

/// A condition on the low 32 bits of argument `arg` (see [`ArgCheck`] for why only those).
fn low32(arg: u8, op: SeccompCmpOp, value: u32) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, u64::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;

    /// What the kernel would do with a syscall.
    #[derive(Debug, PartialEq, Eq)]
    enum Verdict {
        Allow,
        Errno(u32),
        KillProcess,
    }

    /// `struct seccomp_data` as the kernel hands it to the filter.
    struct SeccompData {
        nr: i32,
        arch: u32,
        args: [u64; 6],
    }

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 183 | 0x8000_0000 | 0x4000_0000;

    /// A classic-BPF interpreter for the instructions seccompiler emits, reading `seccomp_data`
    /// with the little-endian layout of both supported architectures.
    fn run(bpf: &[BpfInstruction], data: &SeccompData) -> Verdict {
        let load = |offset: u32| -> u32 {
            match offset {
                0 => data.nr as u32,
                4 => data.arch,
                16..=63 => {
                    let arg = data.args[(offset as usize - 16) / 8];
                    if offset % 8 == 0 {
                        arg as u32
                    } else {
                        (arg >> 32) as u32
                    }
                }
                _ => panic!("load from offset {offset}"),
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = bpf[pc];
            pc += 1;
            let jump = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
            match insn.code {
                0x20 => acc = load(insn.k),        // BPF_LD | BPF_W | BPF_ABS
                0x54 => acc &= insn.k,             // BPF_ALU | BPF_AND | BPF_K
                0x05 => pc += insn.k as usize,     // BPF_JMP | BPF_JA
                0x15 => pc += jump(acc == insn.k), // BPF_JMP | BPF_JEQ | BPF_K
                0x25 => pc += jump(acc > insn.k),  // BPF_JMP | BPF_JGT | BPF_K
                0x35 => pc += jump(acc >= insn.k), // BPF_JMP | BPF_JGE | BPF_K
                0x06 => {
                    // BPF_RET | BPF_K
                    return match insn.k & SECCOMP_RET_ACTION_FULL {
                        libc::SECCOMP_RET_ALLOW => Verdict::Allow,
                        libc::SECCOMP_RET_ERRNO => Verdict::Errno(insn.k & 0xffff),
                        libc::SECCOMP_RET_KILL_PROCESS => Verdict::KillProcess,
                        other => panic!("unexpected action {other:#x}"),
                    };
                }
                code => panic!("unexpected instruction {code:#x}"),
            }
        }
    }

    fn program() -> &'static SeccompProgram {
        static PROGRAM: OnceLock<SeccompProgram> = OnceLock::new();
        PROGRAM.get_or_init(|| SeccompProgram::compile().expect("the table compiles"))
    }

    fn verdict(nr: i64, args: [u64; 6]) -> Verdict {
        run(
            &program().bpf,
            &SeccompData {
                nr: nr as i32,
                arch: AUDIT_ARCH,
                args,
            },
        )
    }

    fn with_arg(index: usize, value: u64) -> [u64; 6] {
        let mut args = [0; 6];
        args[index] = value;
        args
    }

    const ENOSYS: Verdict = Verdict::Errno(libc::ENOSYS as u32);
    const THREAD_FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;

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
        assert_eq!(verdict(libc::SYS_ioctl, with_arg(1, tiocsti)), ENOSYS);
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, tiocsti | 1 << 32)),
            ENOSYS
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, libc::TIOCLINUX)),
            ENOSYS
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, libc::TIOCSETD)),
            ENOSYS
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, with_arg(1, libc::TCGETS)),
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
        let i386 = SeccompData {
            nr: 0,
            arch: 3 | 0x4000_0000,
            args: [0; 6],
        };
        assert_eq!(run(&program().bpf, &i386), Verdict::KillProcess);
    }

    #[test]
    fn x32_numbers_are_denied() {
        const X32_SYSCALL_BIT: i64 = 0x4000_0000;
        assert_eq!(verdict(libc::SYS_read | X32_SYSCALL_BIT, [0; 6]), ENOSYS);
        assert_eq!(verdict(libc::SYS_write | X32_SYSCALL_BIT, [0; 6]), ENOSYS);
    }

    #[test]
    fn every_row_is_allowed_and_forbidden_calls_are_not() {
        assert_eq!(program().default_errno, libc::ENOSYS);
        assert_eq!(program().rows.len(), allowed_syscalls().count());
        for (_, syscall) in allowed_syscalls().filter(|(_, s)| s.check == ArgCheck::Any) {
            assert_eq!(
                verdict(syscall.nr, [0; 6]),
                Verdict::Allow,
                "{}",
                syscall.name()
            );
        }
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
}
