//! Where the three processes of a path run. On a 2-vCPU machine, sub-100 µs round trips are
//! dominated by whether each hop wakes a process on the same CPU (a cheap switch) or on the other
//! one (an inter-processor wake-up), and with three processes on two CPUs the scheduler's choice
//! changes from run to run. So latency is measured three ways, the same for every path:
//!
//! - [`Placement::Unpinned`]: the scheduler decides (what an app gets; noisy);
//! - [`Placement::OneCpu`]: all three on one CPU: every hop is a context switch, no CPU waits
//!   for another, so the round trip is the CPU work of the path (syscalls, copies, the broker's
//!   own work): the clearest view of the software cost;
//! - [`Placement::CrossCpu`]: the middle (relay, broker daemon, dbus-daemon) on one CPU, client
//!   and server on the other: every hop is a cross-CPU wake-up, the worst case.
//!
//! Affinity is set on every thread of a process (`/proc/PID/task`); threads created later
//! inherit it from their creator.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Unpinned,
    OneCpu,
    CrossCpu,
}

impl Placement {
    pub const ALL: [Placement; 3] = [Placement::Unpinned, Placement::OneCpu, Placement::CrossCpu];

    pub fn describe(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::OneCpu => "one CPU",
            Placement::CrossCpu => "cross-CPU",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::OneCpu => "one_cpu",
            Placement::CrossCpu => "cross_cpu",
        }
    }
}

/// The CPUs this process may use, in order.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|e| format!("sched_getaffinity: {e}"))?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

fn cpu_set(cpus: &[usize]) -> Result<CpuSet, String> {
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
    }
    Ok(set)
}

/// Sets the affinity of every thread of `pid`.
fn pin(pid: u32, cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus)?;
    let tasks = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&tasks).map_err(|e| format!("{tasks}: {e}"))?;
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            // A thread that ended meanwhile needs no affinity.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(format!("sched_setaffinity of thread {tid} of {pid}: {e}")),
        }
    }
    Ok(())
}

/// Puts a path's middle process, its server and its clients where `placement` says.
pub fn apply(
    placement: Placement,
    middle: u32,
    server: u32,
    clients: &[u32],
) -> Result<(), String> {
    let all = allowed_cpus()?;
    let (first, second) = match all.as_slice() {
        [first, second, ..] => (*first, *second),
        [only] if placement != Placement::CrossCpu => (*only, *only),
        _ => return Err("the cross-CPU placement needs two CPUs".into()),
    };
    let (middle_cpus, ends_cpus) = match placement {
        Placement::Unpinned => (all.clone(), all.clone()),
        Placement::OneCpu => (vec![first], vec![first]),
        Placement::CrossCpu => (vec![second], vec![first]),
    };
    pin(middle, &middle_cpus)?;
    pin(server, &ends_cpus)?;
    for &client in clients {
        pin(client, &ends_cpus)?;
    }
    Ok(())
}
